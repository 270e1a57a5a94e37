/**
 * E2B's official JS SDK (npm `e2b`, pinned in the root package.json) drives a real embedded Fast
 * Sandbox through its control-plane operations with nothing but the three variables `fsb e2b env`
 * prints (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY; E2B_DEBUG and E2B_DOMAIN unset, the key
 * validated by the SDK as it ships): Sandbox.create, getInfo, Sandbox.list (metadata and state
 * filters, pages), setTimeout (shorter), Sandbox.connect (same sandbox, end only extended),
 * isRunning (the daemon's /health through the sandbox proxy), kill (true, then false), the expiry
 * reaper, and a wrong key refused with the SDK's AuthenticationError.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AuthenticationError, Sandbox, SandboxNotFoundError, Secret, SecretError, Template, type SandboxInfo } from "e2b";
import { REPO_ROOT } from "../../support/containerd.js";
import { useFsbE2bEnv } from "../../support/e2b-env.js";
import { containerdLeftovers, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

const ENVD_VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, "packages/envd/version.json"), "utf8")) as { envdVersion: string }).envdVersion;

/**
 * `actual` is `timeoutMs` after the server's clock read while the call that set it ran: between `fromMs`
 * (just before the call) and `byMs` (just after it). The server writes the end in milliseconds, on
 * this machine's clock, so no slack.
 */
function endsAfter(actual: Date, timeoutMs: number, fromMs: number, byMs: number, what: string): void {
  const lowest = new Date(fromMs + timeoutMs).toISOString();
  const highest = new Date(byMs + timeoutMs).toISOString();
  assert.ok(fromMs + timeoutMs <= actual.getTime() && actual.getTime() <= byMs + timeoutMs, `${what}: ${actual.toISOString()} in ${lowest}..${highest}`);
}

describe("E2B's official JS SDK against the E2B-compatible API", () => {
  let embedded: EmbeddedCase;
  let restore: () => void = () => undefined;
  const run = Math.random().toString(36).slice(2, 10);

  before(async () => {
    // The agents (child processes) sample their sandboxes every half second instead of every 5 s: getMetrics' history fills fast.
    process.env.FSB_STATS_INTERVAL_MS = "500";
    embedded = await startEmbedded({ name: "e2b-js-sdk", pools: [pool("default", { maxSandboxesPerPod: 8 })] });
    // Only the three variables: nothing else of E2B's is set in this process.
    restore = await useFsbE2bEnv(embedded);
  });

  after(async () => {
    restore();
    await embedded.stop();
  });

  it("creates, inspects, lists, re-times, connects to and kills a sandbox", async () => {
    const createdFrom = Date.now();
    const sandbox = await Sandbox.create({ metadata: { run, step: "lifecycle" }, envs: { GREETING: "hi" }, timeoutMs: 120_000 });
    const createdBy = Date.now();
    assert.match(sandbox.sandboxId, /^[a-z0-9]{20}$/);
    assert.equal(await sandbox.isRunning(), true, "the daemon answers through the sandbox proxy");

    const info: SandboxInfo = await sandbox.getInfo();
    assert.equal(info.sandboxId, sandbox.sandboxId);
    assert.equal(info.templateId, "base");
    assert.deepEqual(info.metadata, { run, step: "lifecycle" });
    assert.equal(info.state, "running");
    assert.equal(info.envdVersion, ENVD_VERSION);
    assert.ok(info.cpuCount >= 1 && info.memoryMB >= 128);
    endsAfter(info.endAt, 120_000, createdFrom, createdBy, "endAt after create");
    assert.ok(info.startedAt.getTime() <= Date.now());

    const listed = await Sandbox.list({ query: { metadata: { run } } }).nextItems();
    assert.deepEqual(
      listed.map((item) => item.sandboxId),
      [sandbox.sandboxId],
    );
    assert.deepEqual(await Sandbox.list({ query: { metadata: { run }, state: ["paused"] } }).nextItems(), []);

    const setFrom = Date.now();
    await sandbox.setTimeout(30_000);
    const setBy = Date.now();
    const shorterEnd = (await sandbox.getInfo()).endAt;
    endsAfter(shorterEnd, 30_000, setFrom, setBy, "endAt after setTimeout (shorter)");

    const connectFrom = Date.now();
    const connected = await Sandbox.connect(sandbox.sandboxId, { timeoutMs: 10_000 });
    const connectBy = Date.now();
    assert.equal(connected.sandboxId, sandbox.sandboxId);
    // Never shortens: the end setTimeout set stays, unless connect's own (10 s on) is later, as it
    // is when the connect came more than 20 s after the setTimeout.
    const endAfterConnect = (await connected.getInfo()).endAt;
    if (endAfterConnect.getTime() !== shorterEnd.getTime()) {
      assert.ok(endAfterConnect > shorterEnd, `connect never shortens: ${endAfterConnect.toISOString()} < ${shorterEnd.toISOString()}`);
      endsAfter(endAfterConnect, 10_000, connectFrom, connectBy, "connect extends to its own timeout only");
    }
    const extendFrom = Date.now();
    await Sandbox.connect(sandbox.sandboxId, { timeoutMs: 600_000 });
    const extendBy = Date.now();
    endsAfter((await Sandbox.getInfo(sandbox.sandboxId)).endAt, 600_000, extendFrom, extendBy, "connect extends");
    assert.equal(await connected.isRunning(), true, "the connected handle carries the same access token");

    assert.equal(await sandbox.kill(), true);
    assert.equal(await Sandbox.kill(sandbox.sandboxId), false, "a second kill finds nothing");
    await assert.rejects(sandbox.getInfo(), SandboxNotFoundError);
    assert.equal(await sandbox.isRunning(), false, "the proxy's 502 for a sandbox that is gone");
    assert.ok(!containerdLeftovers(embedded.containerdNamespace).containers.includes(sandbox.sandboxId));
  });

  it("getMetrics: the samples of the sandbox's CPU, memory and disk its agent took while it ran, within start and end", async () => {
    const createdFrom = Date.now();
    const sandbox = await Sandbox.create({ metadata: { run, step: "metrics" }, timeoutMs: 120_000 });
    await sandbox.commands.run("dd if=/dev/zero of=/tmp/written bs=1M count=2");
    const busy = await sandbox.commands.run("while :; do :; done", { background: true });
    let metrics: Awaited<ReturnType<typeof sandbox.getMetrics>> = [];
    const deadline = Date.now() + 30_000;
    // Until the history holds samples from before and after the busy loop started, the disk walked since the write.
    let metricsBy: number;
    do {
      metrics = await sandbox.getMetrics();
      metricsBy = Date.now();
    } while (!(metrics.length >= 4 && metrics.at(-1)!.cpuUsedPct > 10 && metrics.at(-1)!.diskUsed >= 2 * 2 ** 20) && Date.now() < deadline);
    const sample = metrics.at(-1);
    assert.ok(sample, "a sample");
    assert.ok(metrics.length >= 4, `${metrics.length} samples`);
    const times = metrics.map((metric) => metric.timestamp.getTime());
    assert.ok(
      times.every((time, index) => index === 0 || time > times[index - 1]!),
      `oldest first, one per sampling: ${times.join(", ")}`,
    );
    // Taken (by the agent, on this machine's clock) after the create began and before the answer came.
    assert.ok(
      sample.timestamp instanceof Date && createdFrom <= sample.timestamp.getTime() && sample.timestamp.getTime() <= metricsBy,
      `${String(sample.timestamp)} in ${new Date(createdFrom).toISOString()}..${new Date(metricsBy).toISOString()}`,
    );
    assert.ok(sample.cpuCount >= 1);
    assert.ok(sample.cpuUsedPct > 10 && sample.cpuUsedPct <= 100, `cpuUsedPct ${sample.cpuUsedPct}`);
    assert.ok(sample.memUsed > 0 && sample.memUsed <= sample.memTotal, `memUsed ${sample.memUsed} of ${sample.memTotal}`);
    // The page cache holds the file just written: part of the memory used.
    assert.ok(sample.memCache > 0 && sample.memCache <= sample.memUsed, `memCache ${sample.memCache} of ${sample.memUsed}`);
    assert.ok(sample.diskUsed >= 2 * 2 ** 20, `diskUsed ${sample.diskUsed}`);
    // A range of whole seconds: the samples of the second of the latest one, and none of a range before the sandbox.
    const second = new Date(Math.floor(sample.timestamp.getTime() / 1000) * 1000);
    const ranged = await sandbox.getMetrics({ start: second, end: second });
    assert.ok(ranged.length >= 1, "the latest sample's second has it");
    assert.ok(
      ranged.every((metric) => Math.floor(metric.timestamp.getTime() / 1000) === second.getTime() / 1000),
      ranged.map((metric) => metric.timestamp.toISOString()).join(", "),
    );
    assert.deepEqual(await sandbox.getMetrics({ start: new Date(Date.now() - 3_600_000), end: new Date(Date.now() - 3_000_000) }), []);
    await busy.kill();
    await sandbox.kill();
    await assert.rejects(sandbox.getMetrics(), (error: Error) => /not found/i.test(`${error.name} ${error.message}`));
  });

  it("pages through Sandbox.list with the SDK's paginator", async () => {
    const sandboxes = [];
    for (let i = 0; i < 3; i++) sandboxes.push(await Sandbox.create({ metadata: { run, step: "pages" }, timeoutMs: 120_000 }));
    const paginator = Sandbox.list({ query: { metadata: { run, step: "pages" } }, limit: 2 });
    const seen: string[] = [];
    while (paginator.hasNext) seen.push(...(await paginator.nextItems()).map((item) => item.sandboxId));
    assert.deepEqual(seen.sort(), sandboxes.map((sandbox) => sandbox.sandboxId).sort());
    for (const sandbox of sandboxes) assert.equal(await sandbox.kill(), true);
  });

  it("loses a sandbox whose timeout passed (E2B's reaper semantics)", async () => {
    const sandbox = await Sandbox.create({ metadata: { run, step: "reaper" }, timeoutMs: 5000 });
    await waitFor(
      () =>
        Sandbox.getInfo(sandbox.sandboxId).then(
          () => false,
          (error: unknown) => error instanceof SandboxNotFoundError,
        ),
      20_000,
      "the sandbox reaped after its timeout",
    );
    // Once the reaper's delete has finished (the record is gone), the proxy answers E2B's 502.
    const recordGone = async () => !(await embedded.client.sandboxes.list()).some((record) => record.status?.sandboxID === sandbox.sandboxId);
    await waitFor(recordGone, 20_000, "the reaped sandbox's record gone");
    assert.equal(await sandbox.isRunning(), false);
    assert.ok(!containerdLeftovers(embedded.containerdNamespace).containers.includes(sandbox.sandboxId));
  });

  it("answers Template.exists for its templates (pools, and base) and refuses secrets instead of reading them as missing", async () => {
    assert.equal(await Template.exists("base"), true);
    assert.equal(await Template.exists("no-such-template"), false);
    // A 404 made exists() false and a Secret.fill() placeholder reach the sandbox as its value.
    await assert.rejects(Secret.exists("openai"), (error: Error) => error instanceof SecretError && /secrets are not supported/.test(error.message));
    await assert.rejects(Sandbox.create({ envs: { OPENAI_API_KEY: Secret.fill("openai") } }), /secret placeholder .*not supported/);
  });

  it("is refused a key this server did not issue, with the SDK's AuthenticationError", async () => {
    await assert.rejects(Sandbox.list({ apiKey: `e2b_${"0".repeat(40)}` }).nextItems(), AuthenticationError);
    await assert.rejects(Sandbox.create({ apiKey: `e2b_${"f".repeat(40)}` }), AuthenticationError);
  });
});
