import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { FailedPreconditionError, ValidationError } from "@fast-sandbox/api";
import { NoKubeConfigError, loadKubeConfig, prepareKubeConfig } from "./kubeconfig.js";

const dir = mkdtempSync(join(tmpdir(), "fsb-kubeconfig-spec-"));
after(() => rmSync(dir, { recursive: true, force: true }));

interface ContextSpec {
  name: string;
  namespace?: string;
  server?: string;
}

/** Writes a kubeconfig with one cluster and user per context (named after it). */
function kubeconfig(file: string, contexts: ContextSpec[], currentContext?: string): string {
  const path = join(dir, file);
  const lines = ["apiVersion: v1", "kind: Config", ...(currentContext ? [`current-context: ${currentContext}`] : []), "clusters:"];
  for (const c of contexts) lines.push(`- name: ${c.name}`, "  cluster:", `    server: ${c.server ?? `https://${c.name}.example:6443`}`);
  lines.push("users:");
  for (const c of contexts) lines.push(`- name: ${c.name}`, "  user:", "    token: t");
  lines.push("contexts:");
  for (const c of contexts) {
    lines.push(`- name: ${c.name}`, "  context:", `    cluster: ${c.name}`, `    user: ${c.name}`, ...(c.namespace ? [`    namespace: ${c.namespace}`] : []));
  }
  writeFileSync(path, `${lines.join("\n")}\n`);
  return path;
}

const nowhere = { env: {}, home: join(dir, "no-home"), rootDir: join(dir, "no-root") };

describe("loadKubeConfig", () => {
  const devAndProd = kubeconfig("dev-and-prod", [{ name: "dev", namespace: "team-a" }, { name: "prod" }], "dev");

  it("uses --kubeconfig and its current context; the command namespace is the context's", () => {
    const loaded = loadKubeConfig({ kubeconfig: devAndProd }, { ...nowhere, env: { KUBECONFIG: "/elsewhere" } });
    assert.equal(loaded.context, "dev");
    assert.equal(loaded.namespace, "team-a");
    assert.equal(loaded.server, "https://dev.example:6443");
    assert.equal(loaded.source, devAndProd);
  });

  it("switches to --context; a context without a namespace means default", () => {
    const loaded = loadKubeConfig({ kubeconfig: devAndProd, context: "prod" }, nowhere);
    assert.equal(loaded.context, "prod");
    assert.equal(loaded.namespace, "default");
    assert.equal(loaded.server, "https://prod.example:6443");
  });

  it("refuses an unknown --context as bad usage, listing the contexts there are", () => {
    assert.throws(
      () => loadKubeConfig({ kubeconfig: devAndProd, context: "staging" }, nowhere),
      (error: unknown) =>
        error instanceof ValidationError && error.field === "--context" && /no context "staging" in .*; it has: dev, prod$/.test(error.message),
    );
  });

  it("refuses a --kubeconfig that does not exist as bad usage", () => {
    assert.throws(
      () => loadKubeConfig({ kubeconfig: join(dir, "missing") }, nowhere),
      (error: unknown) => error instanceof ValidationError && error.field === "--kubeconfig" && /no such file/.test(error.message),
    );
  });

  it("merges the files of KUBECONFIG like kubectl: missing files skipped, the first definition and current context win", () => {
    const first = kubeconfig("first", [{ name: "shared", namespace: "from-first" }], "shared");
    const second = kubeconfig(
      "second",
      [
        { name: "shared", namespace: "from-second" },
        { name: "only-second", namespace: "two" },
      ],
      "only-second",
    );
    const env = { KUBECONFIG: [join(dir, "missing"), first, second].join(":") };
    const loaded = loadKubeConfig({}, { ...nowhere, env });
    assert.equal(loaded.context, "shared");
    assert.equal(loaded.namespace, "from-first");
    assert.equal(loadKubeConfig({ context: "only-second" }, { ...nowhere, env }).namespace, "two");
    const noCurrent = kubeconfig("no-current", [{ name: "x" }]);
    assert.equal(loadKubeConfig({}, { ...nowhere, env: { KUBECONFIG: `${noCurrent}:${second}` } }).context, "only-second");
  });

  it("says so when KUBECONFIG names no existing file", () => {
    assert.throws(
      () => loadKubeConfig({}, { ...nowhere, env: { KUBECONFIG: join(dir, "missing") } }),
      (error: unknown) => error instanceof FailedPreconditionError && /KUBECONFIG=.* names no existing file/.test(error.message),
    );
  });

  it("falls back to ~/.kube/config", () => {
    const home = join(dir, "home");
    mkdirSync(join(home, ".kube"), { recursive: true });
    kubeconfig("home/.kube/config", [{ name: "home", namespace: "mine" }], "home");
    const loaded = loadKubeConfig({}, { ...nowhere, home });
    assert.equal(loaded.context, "home");
    assert.equal(loaded.namespace, "mine");
  });

  it("uses a Pod's service account inside a cluster, with the Pod's namespace", () => {
    const rootDir = join(dir, "pod-root");
    const serviceAccount = join(rootDir, "var/run/secrets/kubernetes.io/serviceaccount");
    mkdirSync(serviceAccount, { recursive: true });
    writeFileSync(join(serviceAccount, "token"), "t");
    writeFileSync(join(serviceAccount, "namespace"), "in-pod");
    const loaded = loadKubeConfig({}, { env: { KUBERNETES_SERVICE_HOST: "10.96.0.1" }, home: nowhere.home, rootDir });
    assert.equal(loaded.namespace, "in-pod");
    assert.equal(loaded.source, "the Pod's service account");
  });

  it("says where a kubeconfig can come from when there is none", () => {
    assert.throws(
      () => loadKubeConfig({}, nowhere),
      (error: unknown) =>
        error instanceof NoKubeConfigError && /^no kubeconfig: pass --kubeconfig FILE, set KUBECONFIG, or create ~\/\.kube\/config/.test(error.message),
    );
  });

  it("says how to pick a context when the kubeconfig has no current one", () => {
    const noCurrent = kubeconfig("without-current", [{ name: "a" }]);
    assert.throws(
      () => loadKubeConfig({ kubeconfig: noCurrent }, nowhere),
      (error: unknown) =>
        error instanceof FailedPreconditionError && /has no current context: pass --context NAME, or run 'kubectl config use-context NAME'/.test(error.message),
    );
  });

  it("skips empty files (also only whitespace) in KUBECONFIG and an empty ~/.kube/config, as kubectl does", () => {
    const full = kubeconfig("full", [{ name: "dev", namespace: "team-a" }], "dev");
    const empty = join(dir, "empty");
    writeFileSync(empty, "");
    const blank = join(dir, "blank");
    writeFileSync(blank, "\n  \n");
    const loaded = loadKubeConfig({}, { ...nowhere, env: { KUBECONFIG: `${empty}:${blank}:${full}` } });
    assert.equal(loaded.context, "dev");
    assert.equal(loaded.namespace, "team-a");
    assert.throws(
      () => loadKubeConfig({}, { ...nowhere, env: { KUBECONFIG: `${empty}:${blank}` } }),
      (error: unknown) => error instanceof FailedPreconditionError && /names no existing file that is not empty/.test(error.message),
    );
    const home = join(dir, "home-with-empty-config");
    mkdirSync(join(home, ".kube"), { recursive: true });
    writeFileSync(join(home, ".kube", "config"), "");
    assert.throws(() => loadKubeConfig({}, { ...nowhere, home }), NoKubeConfigError);
    assert.throws(
      () => loadKubeConfig({ kubeconfig: empty }, nowhere),
      (error: unknown) => error instanceof ValidationError && error.field === "--kubeconfig" && / is empty: give a kubeconfig$/.test(error.message),
    );
  });

  it("resolves a plugin command with a path separator against its own file's directory, as kubectl does; a bare name stays for PATH", async () => {
    const write = (sub: string, user: string, command: string) => {
      mkdirSync(join(dir, sub, "bin"), { recursive: true });
      const file = join(dir, sub, "config");
      writeFileSync(
        file,
        [
          "apiVersion: v1",
          "kind: Config",
          `current-context: ${user}`,
          `clusters: [{name: ${user}, cluster: {server: 'https://127.0.0.1:6443'}}]`,
          `users: [{name: ${user}, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: '${command}', interactiveMode: Never}}}]`,
          `contexts: [{name: ${user}, context: {cluster: ${user}, user: ${user}}}]`,
        ].join("\n"),
      );
      const credential = { apiVersion: "client.authentication.k8s.io/v1", kind: "ExecCredential", status: { token: `token-of-${sub}` } };
      writeFileSync(join(dir, sub, "bin", "plugin"), `#!/bin/sh\necho '${JSON.stringify(credential)}'\n`, { mode: 0o755 });
      return file;
    };
    const first = write("relative-a", "alice", "./bin/plugin");
    const second = write("relative-b", "bob", "bin/plugin");
    const bare = write("relative-c", "carol", "kubelogin");
    const loaded = loadKubeConfig({}, { ...nowhere, env: { KUBECONFIG: [first, second, bare].join(":") } });
    const command = (user: string) => (loaded.kubeConfig.getUser(user)?.exec as { command?: string } | undefined)?.command;
    assert.equal(command("alice"), join(dir, "relative-a", "bin", "plugin"));
    assert.equal(command("bob"), join(dir, "relative-b", "bin", "plugin"), "also a merged file's user, against that file's directory");
    assert.equal(command("carol"), "kubelogin");
    // The resolved command is the one that runs, whatever the working directory.
    const prepared = await prepareKubeConfig({ ...loaded }, { stdinIsTerminal: false });
    assert.equal(prepared.getCurrentUser()?.token, "token-of-relative-a");
    const fromSecond = loadKubeConfig({ context: "bob" }, { ...nowhere, env: { KUBECONFIG: [first, second].join(":") } });
    assert.equal((await prepareKubeConfig({ ...fromSecond }, { stdinIsTerminal: false })).getCurrentUser()?.token, "token-of-relative-b");
  });

  it("names the context a current-context names that the kubeconfig does not define", () => {
    const dangling = kubeconfig("dangling", [{ name: "dev" }], "gone");
    assert.throws(
      () => loadKubeConfig({ kubeconfig: dangling }, nowhere),
      (error: unknown) =>
        error instanceof FailedPreconditionError &&
        error.message ===
          `the current-context of ${dangling}, "gone", is a context it does not define (it has: dev): pass --context NAME, or run 'kubectl config use-context NAME'`,
    );
  });
});

describe("prepareKubeConfig", () => {
  const load = (lines: string[]) => {
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromString(["apiVersion: v1", "kind: Config", "current-context: dev", ...lines].join("\n"));
    return { kubeConfig, context: "dev", server: "https://127.0.0.1:6443", source: "/home/me/.kube/config" };
  };

  it("refuses a client certificate, key or certificate authority it cannot read as the kubeconfig's error, naming the file", async () => {
    const missing = join(dir, "nope.crt");
    await assert.rejects(
      prepareKubeConfig(
        load([
          "clusters: [{name: dev, cluster: {server: 'https://127.0.0.1:6443'}}]",
          `users: [{name: alice, user: {client-certificate: '${missing}', client-key: '${missing}'}}]`,
          "contexts: [{name: dev, context: {cluster: dev, user: alice}}]",
        ]),
      ),
      (error: unknown) =>
        error instanceof FailedPreconditionError &&
        error.message === `the client-certificate of user alice (context dev of kubeconfig /home/me/.kube/config), ${missing}, cannot be read: no such file`,
    );
    await assert.rejects(
      prepareKubeConfig(
        load([
          `clusters: [{name: dev, cluster: {server: 'https://127.0.0.1:6443', certificate-authority: '${missing}'}}]`,
          "users: [{name: alice, user: {token: t}}]",
          "contexts: [{name: dev, context: {cluster: dev, user: alice}}]",
        ]),
      ),
      (error: unknown) => error instanceof FailedPreconditionError && /^the certificate-authority of cluster dev \(context dev of/.test(error.message),
    );
  });

  it("refuses a credential plugin that needs a terminal (interactiveMode: Always) when stdin is none, without running it", async () => {
    const ran = join(dir, "always-ran");
    const plugin = join(dir, "always.sh");
    writeFileSync(plugin, `#!/bin/sh\ntouch '${ran}'\n`, { mode: 0o755 });
    await assert.rejects(
      prepareKubeConfig(
        load([
          "clusters: [{name: dev, cluster: {server: 'https://127.0.0.1:6443'}}]",
          `users: [{name: alice, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: '${plugin}', interactiveMode: Always}}}]`,
          "contexts: [{name: dev, context: {cluster: dev, user: alice}}]",
        ]),
        { stdinIsTerminal: false },
      ),
      (error: unknown) => error instanceof FailedPreconditionError && /needs a terminal .*interactiveMode: Always.*stdin is not one/.test(error.message),
    );
    assert.equal(existsSync(ran), false);
  });
});
