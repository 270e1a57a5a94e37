/**
 * Images from registries, on the real containerd, real agent processes and a real registry (Debian's
 * docker-registry, the CNCF distribution server, on loopback with htpasswd auth): creates pull what
 * is missing after `fsb login`, refused credentials, unknown tags and broken registries give clear
 * errors and leave nothing behind in containerd, concurrent creates share one pull (counted in the
 * registry's own access log), prewarmImages are on an agent before its pool reports it ready, and
 * `fsb pull` streams progress through the real API.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { NotFoundError, UnauthenticatedError, type PullProgress } from "@fast-sandbox/sdk";
import { REPO_ROOT } from "../../support/containerd.js";
import { isPreparedInstance } from "../../support/containerd-contents.js";
import { containerdLeftovers, ctr, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";
import { startTestRegistry, type PushedImage, type TestRegistry } from "../../support/registry.js";

const CLI = join(REPO_ROOT, "packages/cli/src/main.ts");

/** Runs the real `fsb` (from source) with `stdin` as its input. */
function fsb(args: string[], options: { stdin?: string; env?: Record<string, string> } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, ...options.env };
    for (const name of ["FSB_DATA_DIR", "NODE_TEST_CONTEXT"]) delete env[name];
    const child = spawn(process.execPath, ["--conditions=development", "--import", "tsx", CLI, ...args], { cwd: REPO_ROOT, env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(options.stdin ?? "");
  });
}

const lines = (text: string) =>
  text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);

describe("images are pulled from registries", { timeout: 600_000 }, () => {
  let registry: TestRegistry;
  let embedded: EmbeddedCase;
  const sleeper = (image: string, name?: string) => ({ pool: "default", image, command: ["sleep", "3600"], ...(name ? { name } : {}) });

  before(async () => {
    registry = await startTestRegistry();
    // Pulls and concurrent creates keep containerd busy: an agent's status may take longer than the
    // tests' usual 0.5 s, and three missed heartbeats would replace the agent mid-test.
    embedded = await startEmbedded({ name: "images", heartbeatIntervalMs: 2_000, pools: [pool("default", { maxSandboxesPerPod: 12 })] });
  });

  after(async () => {
    try {
      await embedded?.stop();
    } finally {
      await registry?.stop();
    }
  });

  const namespace = () => embedded.containerdNamespace;
  const images = () => lines(ctr(namespace(), "images", "ls", "-q"));
  /**
   * Snapshot keys, but the prepared instances' (`fsb-prepared-…`): the pool keeps 2 by default and
   * makes them in the background, whatever a pull does (containerdLeftovers tells a leftover one
   * from the stock). Creates here name other images than the pool's, so none claims one.
   */
  const snapshots = () =>
    lines(ctr(namespace(), "snapshots", "ls"))
      .slice(1)
      .map((line) => line.split(/\s+/)[0] ?? "")
      .filter((key) => !isPreparedInstance(key));
  const content = () => lines(ctr(namespace(), "content", "ls", "-q"));

  /** Paths the agents fetched from a repository, in order (the registry logs each request with the client's user agent). */
  const agentRequests = (repository: string) =>
    registry
      .requests()
      .filter((r) => r.userAgent === "fast-sandbox-agent" && r.method === "GET" && r.status === 200 && r.path.startsWith(`/v2/${repository}/`))
      .map((r) => r.path);

  const login = (password: string) =>
    fsb(["--data-dir", embedded.dataDir, "login", registry.host, "-u", registry.username, "--password-stdin"], { stdin: `${password}\n` });

  /** What a pull could leave behind: the containerd state a failing create must not change. */
  function containerdState() {
    return { images: images(), snapshots: snapshots().sort(), content: content().sort() };
  }

  /** Nothing of the failed create: no sandbox record, container, task, snapshot, image, lease, ingest or blob. */
  async function assertNothingLeft(before: ReturnType<typeof containerdState>, pushed?: PushedImage): Promise<void> {
    assert.deepEqual(await embedded.client.sandboxes.list({ namespace: "*" }), []);
    assert.deepEqual(containerdLeftovers(namespace()), { containers: [], tasks: [], snapshots: [] });
    assert.deepEqual(lines(ctr(namespace(), "leases", "ls", "-q")), [], "no pull lease is left");
    assert.deepEqual(lines(ctr(namespace(), "content", "active")).slice(1), [], "no ingest is left");
    assert.deepEqual(containerdState(), before);
    if (pushed) {
      for (const digest of [pushed.configDigest, ...pushed.layerDigests.slice(1)]) assert.ok(!content().includes(digest), `blob ${digest} is gone`);
    }
  }

  it("refuses an image of a registry that wants credentials, saying which login to run", async () => {
    const app = await registry.pushVariant("team/app", "v1", "app-v1");
    const before = containerdState();
    await assert.rejects(embedded.client.sandboxes.create(sleeper(app.reference)), (error: unknown) => {
      assert.ok(error instanceof UnauthenticatedError, String(error));
      assert.match(
        error.message,
        new RegExp(`registry ${registry.host} requires credentials for team/app .*run 'fsb login ${registry.host} -u USER --password-stdin'`),
      );
      return true;
    });
    await assertNothingLeft(before, app);
  });

  it("creates a sandbox of an image only in the registry after fsb login, by tag and by digest", async () => {
    const result = await login(registry.password);
    assert.equal(result.code, 0, result.stderr);
    const app = await registry.pushVariant("team/app", "v1", "app-v1");
    const sandbox = await embedded.client.sandboxes.create(sleeper(app.reference, "from-tag"));
    assert.equal(sandbox.status?.phase, "Running");
    assert.equal((await embedded.client.sandboxes.exec("from-tag", ["cat", "/fsb-image"])).stdout, "app-v1\n");
    assert.ok(images().includes(app.reference), `containerd lists ${app.reference}`);

    const pinned = await registry.pushVariant("team/pinned", "v1", "pinned-by-digest");
    const byDigest = `${registry.host}/team/pinned@${pinned.manifestDigest}`;
    await embedded.client.sandboxes.create(sleeper(byDigest, "from-digest"));
    assert.equal((await embedded.client.sandboxes.exec("from-digest", ["cat", "/fsb-image"])).stdout, "pinned-by-digest\n");
    assert.ok(images().includes(byDigest));

    for (const name of ["from-tag", "from-digest"]) await embedded.client.sandboxes.delete(name, { gracePeriodMs: 0 });
    assert.deepEqual(containerdLeftovers(namespace()), { containers: [], tasks: [], snapshots: [] });
  });

  it("picks the linux/amd64 manifest of a multi-platform index", async () => {
    const base = await registry.pushBaseImage("team/multi", "base");
    const amd64 = await registry.pushVariant("team/multi", "amd64", "the-amd64-variant");
    await registry.pushIndex("team/multi", "multi", [
      { manifestDigest: base.manifestDigest, architecture: "arm64" },
      { manifestDigest: amd64.manifestDigest, architecture: "amd64" },
    ]);
    await embedded.client.sandboxes.create(sleeper(`${registry.host}/team/multi:multi`, "multi"));
    assert.equal((await embedded.client.sandboxes.exec("multi", ["cat", "/fsb-image"])).stdout, "the-amd64-variant\n");
    await embedded.client.sandboxes.delete("multi", { gracePeriodMs: 0 });
  });

  it("gives a clear error for a wrong password and leaves nothing in containerd", async () => {
    const secret = await registry.pushVariant("team/private", "v1", "private");
    const wrong = await login("not-the-password");
    assert.equal(wrong.code, 0, wrong.stderr);
    const before = containerdState();
    try {
      await assert.rejects(embedded.client.sandboxes.create(sleeper(secret.reference)), (error: unknown) => {
        assert.ok(error instanceof UnauthenticatedError, String(error));
        assert.match(
          error.message,
          new RegExp(
            `registry ${registry.host} refused the credentials of user "${registry.username}" for team/private: run 'fsb login ${registry.host} -u USER --password-stdin'`,
          ),
        );
        return true;
      });
      await assertNothingLeft(before, secret);
    } finally {
      assert.equal((await login(registry.password)).code, 0);
    }
  });

  it("gives a clear error for an unknown tag and leaves nothing in containerd", async () => {
    await registry.pushVariant("team/app", "v1", "app-v1");
    const before = containerdState();
    await assert.rejects(embedded.client.sandboxes.create(sleeper(`${registry.host}/team/app:nope`)), (error: unknown) => {
      assert.ok(error instanceof NotFoundError, String(error));
      assert.match(error.message, new RegExp(`image ${registry.host}/team/app:nope not found: the registry has no tag "nope" in repository team/app`));
      return true;
    });
    await assertNothingLeft(before);
  });

  it("leaves nothing behind when a pull fails halfway (a layer the registry lost)", async () => {
    const broken = await registry.pushVariant("team/broken", "v1", "broken");
    const lost = broken.layerDigests.at(-1) ?? "";
    await registry.deleteBlob("team/broken", lost);
    const before = containerdState();
    await assert.rejects(embedded.client.sandboxes.create(sleeper(broken.reference)), (error: unknown) => {
      assert.ok(error instanceof NotFoundError, String(error));
      assert.match(error.message, new RegExp(`registry ${registry.host} has no blob ${lost} in repository team/broken`));
      return true;
    });
    // The manifest and config were fetched and stored before the layer failed: all of it is gone again.
    await waitFor(
      () => agentRequests("team/broken").includes(`/v2/team/broken/blobs/${broken.configDigest}`),
      5_000,
      "the registry to log that the agent fetched the config before the layer failed",
    );
    await assertNothingLeft(before, broken);
  });

  it("pulls an image once for 10 concurrent creates of it (the registry's access log says so)", async () => {
    const burst = await registry.pushVariant("team/burst", "v1", "burst");
    const created = await Promise.all(Array.from({ length: 10 }, (_, i) => embedded.client.sandboxes.create(sleeper(burst.reference, `burst-${i}`))));
    assert.equal(created.length, 10);
    assert.ok(created.every((s) => s.status?.phase === "Running"));

    const fetched = () => agentRequests("team/burst").sort();
    const newLayer = burst.layerDigests.at(-1) ?? "";
    // The base layer is in containerd already (the base image); the rest is fetched exactly once.
    const once = [`/v2/team/burst/blobs/${burst.configDigest}`, `/v2/team/burst/blobs/${newLayer}`, "/v2/team/burst/manifests/v1"].sort();
    // The registry writes its access log after each answer: wait (bounded) for the lines to arrive.
    await waitFor(() => fetched().length >= once.length, 30_000, "the registry's access log");
    assert.deepEqual(fetched(), once);
    // The agent's own log agrees: one pull of that image.
    const agentLog = readFileSync(join(embedded.dataDir, "agents", "default-0", "agent.log"), "utf8");
    const pulls = lines(agentLog).filter((line) => line.includes('"msg":"pulling image"') && line.includes(`"image":"${burst.reference}"`));
    assert.equal(pulls.length, 1);

    assert.equal((await embedded.client.sandboxes.exec("burst-7", ["cat", "/fsb-image"])).stdout, "burst\n");
    await Promise.all(created.map((s) => embedded.client.sandboxes.delete(s.metadata.name, { gracePeriodMs: 0 })));
    assert.deepEqual(containerdLeftovers(namespace()), { containers: [], tasks: [], snapshots: [] });
  });

  it("has a pool's prewarmImages on its agent before the pool reports the agent ready", async () => {
    const tools = await registry.pushVariant("team/tools", "v1", "prewarmed");
    assert.ok(!images().includes(tools.reference));
    await embedded.client.pools.apply(pool("warm", { maxSandboxesPerPod: 2, prewarmImages: [tools.reference] }));
    try {
      let readyWithout: string[] | undefined;
      await waitFor(
        async () => {
          const ready = (await embedded.client.pools.agents({ pool: "warm" })).some((agent) => agent.ready);
          // Sampled right after each readiness check: once ready, the image must already be there.
          const present = images();
          if (ready && !present.includes(tools.reference)) readyWithout = present;
          return ready;
        },
        60_000,
        "the warm pool's agent to be ready",
      );
      assert.equal(readyWithout, undefined, "the agent was ready before its prewarm image was pulled");
      assert.ok(images().includes(tools.reference));
      await waitFor(async () => (await embedded.client.pools.get("warm")).status?.readyAgents === 1, 10_000, "the pool status to count the agent ready");
      // The first create there finds it warm: no pull, straight to the sandbox.
      const pulledBefore = agentRequests("team/tools");
      assert.ok(pulledBefore.includes("/v2/team/tools/manifests/v1"));
      await embedded.client.sandboxes.create({ pool: "warm", image: tools.reference, command: ["sleep", "3600"], name: "warm-one" });
      assert.equal((await embedded.client.sandboxes.exec("warm-one", ["cat", "/fsb-image"])).stdout, "prewarmed\n");
      assert.deepEqual(agentRequests("team/tools"), pulledBefore);
      await embedded.client.sandboxes.delete("warm-one", { gracePeriodMs: 0 });
    } finally {
      await embedded.client.pools.delete("warm");
    }
  });

  it("streams pull progress through the real API to fsb pull and the SDK", async () => {
    const cli = await registry.pushVariant("team/cli", "v1", "cli");
    const result = await fsb(["--url", embedded.controlPlane.url, "pull", cli.reference, "--pool", "default"], { env: { FSB_TOKEN: embedded.token } });
    assert.equal(result.code, 0, result.stderr);
    // Not a terminal: a line per agent and phase on stderr.
    assert.match(result.stderr, new RegExp(`^default-0: resolving ${cli.reference}$`, "m"));
    assert.match(result.stderr, /^default-0: downloading \d\/2 layers, [\d.]+ (B|kB|MB)\/1\.1 MB$/m);
    assert.match(result.stderr, /^default-0: unpacking \d\/2 layers$/m);
    // One line per agent at the end.
    const table = lines(result.stdout);
    assert.equal(table.length, 2, result.stdout);
    assert.match(table[0] ?? "", /^AGENT\s+IMAGE\s+DIGEST\s+LAYERS\s+SIZE$/);
    assert.match(table[1] ?? "", new RegExp(`^default-0\\s+${cli.reference}\\s+${cli.manifestDigest}\\s+2\\s+1\\.1 MB$`));
    assert.ok(images().includes(cli.reference));

    const sdk = await registry.pushVariant("team/sdk", "v1", "sdk");
    const seen: PullProgress[] = [];
    const final = await embedded.client.pools.pullImage(sdk.reference, { pool: "default", onProgress: (progress) => seen.push(progress) });
    const phases = seen.map((p) => p.phase).filter((phase, i, all) => phase !== all[i - 1]);
    assert.deepEqual(phases, ["resolving", "downloading", "unpacking", "done"]);
    assert.deepEqual(
      final.map((p) => [p.agent, p.image, p.phase, p.layersDone, p.layersTotal, p.digest, p.bytesDone === p.bytesTotal]),
      [["default-0", sdk.reference, "done", 2, 2, sdk.manifestDigest, true]],
    );

    const unknown = await fsb(["--url", embedded.controlPlane.url, "pull", `${registry.host}/team/sdk:nope`], { env: { FSB_TOKEN: embedded.token } });
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, new RegExp(`error: agent default-0: image ${registry.host}/team/sdk:nope not found: the registry has no tag "nope"`));
  });
});
