import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import type { PullProgress } from "@fast-sandbox/sdk";
import { describeProgress, registryHost, withCredentials } from "./images.js";

const MAIN = join(import.meta.dirname, "..", "main.ts");
const REPO_ROOT = join(import.meta.dirname, "..", "..", "..", "..");

describe("describeProgress", () => {
  const progress = (phase: PullProgress["phase"], layersDone: number, bytesDone: number): PullProgress => ({
    agent: "default-0",
    image: "docker.io/library/busybox:latest",
    phase,
    layersTotal: 2,
    layersDone,
    bytesTotal: 3_400_000,
    bytesDone,
    digest: "sha256:abc",
  });

  it("shows layers and bytes as the pull goes", () => {
    assert.equal(describeProgress(progress("resolving", 0, 0)), "default-0: resolving docker.io/library/busybox:latest");
    assert.equal(describeProgress(progress("downloading", 1, 1_200_000)), "default-0: downloading 1/2 layers, 1.2 MB/3.4 MB");
    assert.equal(describeProgress(progress("unpacking", 1, 3_400_000)), "default-0: unpacking 1/2 layers");
    assert.equal(describeProgress(progress("done", 2, 3_400_000)), "default-0: done, 2 layers, 3.4 MB");
  });
});

describe("registryHost", () => {
  it("normalizes what Docker accepts for a registry", () => {
    assert.equal(registryHost("127.0.0.1:5000"), "127.0.0.1:5000");
    assert.equal(registryHost("https://index.docker.io/v1/"), "docker.io");
    assert.equal(registryHost("GHCR.io"), "ghcr.io");
    assert.equal(registryHost("[::1]:5000"), "[::1]:5000");
  });

  it("refuses what is no host, as a usage error", () => {
    for (const argument of ["", "a b", "ghcr.io org", "-x.io", "host:99x"]) {
      assert.throws(
        () => registryHost(argument),
        (error: unknown) => error instanceof ValidationError && error.field === "REGISTRY",
        argument,
      );
    }
  });
});

describe("withCredentials", () => {
  it("adds the registry's auth, keeps other registries and other settings", () => {
    const config = { auths: { "ghcr.io": { auth: "Zm9vOmJhcg==" } }, credsStore: "desktop" };
    assert.deepEqual(withCredentials(config, "127.0.0.1:5000", "alice", "p:w"), {
      auths: { "ghcr.io": { auth: "Zm9vOmJhcg==" }, "127.0.0.1:5000": { auth: Buffer.from("alice:p:w").toString("base64") } },
      credsStore: "desktop",
    });
  });

  it("replaces the registry's entry under any of its spellings", () => {
    const config = { auths: { "https://index.docker.io/v1/": { auth: "b2xkOm9sZA==" } } };
    assert.deepEqual(withCredentials(config, "docker.io", "new", "pw"), { auths: { "docker.io": { auth: Buffer.from("new:pw").toString("base64") } } });
  });
});

describe("fsb login", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "fsb-login-spec-"));
  after(() => rmSync(dataDir, { recursive: true, force: true }));
  const configPath = join(dataDir, "registry", "config.json");

  function login(stdin: string, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      const env = { ...process.env };
      for (const name of ["FSB_URL", "FSB_TOKEN", "FSB_DATA_DIR", "NODE_TEST_CONTEXT"]) delete env[name];
      const child = spawn(process.execPath, ["--conditions=development", "--import", "tsx", MAIN, "--data-dir", dataDir, "login", ...args], {
        cwd: REPO_ROOT,
        env,
        stdio: ["pipe", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, stdout, stderr }));
      child.stdin.end(stdin);
    });
  }

  it("writes Docker's config.json with mode 0600, merging with what is there", async () => {
    mkdirSync(join(dataDir, "registry"), { recursive: true });
    writeFileSync(configPath, JSON.stringify({ auths: { "ghcr.io": { auth: "Zm9vOmJhcg==" } } }));
    const result = await login("s3cret\n", "127.0.0.1:5000", "-u", "alice", "--password-stdin");
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, `credentials for 127.0.0.1:5000 saved in ${configPath}; pulls from it use them\n`);
    assert.equal(statSync(configPath).mode & 0o777, 0o600);
    assert.deepEqual(JSON.parse(readFileSync(configPath, "utf8")), {
      auths: { "ghcr.io": { auth: "Zm9vOmJhcg==" }, "127.0.0.1:5000": { auth: Buffer.from("alice:s3cret").toString("base64") } },
    });
  });

  it("is a usage error without --password-stdin or a user, and changes nothing", async () => {
    const before = readFileSync(configPath, "utf8");
    const noStdin = await login("x\n", "127.0.0.1:5000", "-u", "alice");
    assert.equal(noStdin.code, 2);
    assert.match(noStdin.stderr, /--password-stdin: pass the password on stdin/);
    const noUser = await login("x\n", "127.0.0.1:5000", "--password-stdin");
    assert.equal(noUser.code, 2);
    assert.match(noUser.stderr, /--username: name the user/);
    assert.equal(readFileSync(configPath, "utf8"), before);
  });
});
