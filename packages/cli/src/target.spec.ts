import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { chooseTarget, programNameOf, type TargetFlags, type TargetSurroundings } from "./target.js";

function surroundings(overrides: Partial<Omit<TargetSurroundings, "embeddedUrlKnown">> & { embeddedRunning?: boolean } = {}): TargetSurroundings {
  return {
    programName: overrides.programName ?? "fsb",
    env: overrides.env ?? {},
    embeddedUrlKnown: () => overrides.embeddedRunning ?? false,
  };
}

const mode = (flags: TargetFlags, around: TargetSurroundings) => chooseTarget(flags, around).mode;

describe("chooseTarget: explicit beats implicit", () => {
  it("targets the cluster when --kubeconfig, --context or --fsb-namespace is given, whatever else is set", () => {
    const everythingEmbedded = surroundings({ env: { FSB_URL: "http://127.0.0.1:7070" }, embeddedRunning: true });
    assert.equal(mode({ kubeconfig: "/k" }, everythingEmbedded), "cluster");
    assert.equal(mode({ context: "dev" }, everythingEmbedded), "cluster");
    assert.equal(mode({ fsbNamespace: "fsb" }, everythingEmbedded), "cluster");
    assert.equal(mode({ context: "dev", url: "http://127.0.0.1:7070" }, everythingEmbedded), "cluster", "--url only replaces discovery in a cluster");
  });

  it("refuses a cluster flag together with --data-dir as bad usage, naming both", () => {
    assert.throws(
      () => chooseTarget({ context: "dev", dataDir: "/d" }, surroundings()),
      (error: unknown) =>
        error instanceof ValidationError && error.field === "--data-dir" && /--context names a Kubernetes cluster and --data-dir/.test(error.message),
    );
  });

  it("targets the embedded instance of --data-dir, even as kubectl fs and with KUBECONFIG set", () => {
    assert.equal(mode({ dataDir: "/d" }, surroundings({ programName: "kubectl-fs", env: { KUBECONFIG: "/k" } })), "embedded");
  });

  it("targets the cluster as kubectl-fs, even when fsb up runs, FSB_URL is set or --url is given", () => {
    const around = surroundings({ programName: "kubectl-fs", env: { FSB_URL: "http://127.0.0.1:7070" }, embeddedRunning: true });
    assert.equal(mode({}, around), "cluster");
    assert.equal(mode({ url: "http://127.0.0.1:7070" }, around), "cluster");
  });

  it("as fsb, --url or FSB_URL beat KUBECONFIG", () => {
    assert.equal(mode({ url: "http://127.0.0.1:7070" }, surroundings({ env: { KUBECONFIG: "/k" } })), "embedded");
    assert.equal(mode({}, surroundings({ env: { KUBECONFIG: "/k", FSB_URL: "http://127.0.0.1:7070" } })), "embedded");
  });

  it("as fsb, a running fsb up beats KUBECONFIG, which beats the default", () => {
    assert.equal(mode({}, surroundings({ env: { KUBECONFIG: "/k" }, embeddedRunning: true })), "embedded");
    assert.equal(mode({}, surroundings({ env: { KUBECONFIG: "/k" } })), "cluster");
    assert.equal(mode({}, surroundings({ env: { KUBECONFIG: "" } })), "embedded", "an empty KUBECONFIG is unset");
    assert.equal(mode({}, surroundings()), "embedded");
  });

  it("does not look at the data directory when a flag or the program name already decided", () => {
    const around: TargetSurroundings = {
      programName: "kubectl-fs",
      env: {},
      embeddedUrlKnown: () => assert.fail("the data directory was read"),
    };
    assert.equal(mode({}, around), "cluster");
    assert.equal(mode({ context: "dev" }, { ...around, programName: "fsb" }), "cluster");
  });

  it("says why it chose the target", () => {
    assert.equal(chooseTarget({}, surroundings({ programName: "kubectl-fs" })).reason, "it runs as kubectl fs");
    assert.equal(chooseTarget({}, surroundings({ env: { KUBECONFIG: "/k" } })).reason, "KUBECONFIG is set and 'fsb up' does not run");
  });
});

describe("programNameOf", () => {
  it("is the script's file name without a JavaScript or TypeScript extension", () => {
    assert.equal(programNameOf("/usr/local/bin/kubectl-fs"), "kubectl-fs");
    assert.equal(programNameOf("/repo/node_modules/.bin/fsb"), "fsb");
    assert.equal(programNameOf("/repo/packages/cli/bin/fsb.js"), "fsb");
    assert.equal(programNameOf("/repo/packages/cli/src/main.ts"), "main");
    assert.equal(programNameOf(undefined), "");
  });
});
