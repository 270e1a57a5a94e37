/**
 * The agent's image pull on the real containerd and a real registry, below the API: what two agents
 * sharing one containerd namespace do when they pull the same image at once, what garbage
 * collection keeps afterwards, and how an image whose layers are not unpacked gets unpacked again.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { chainId } from "../../../packages/agent/src/containerd/chain-id.js";
import { createContainerdRuntime, type ContainerdRuntime } from "../../../packages/agent/src/containerd/containerd-runtime.js";
import { DEFAULT_HELPER_PATH } from "../../../packages/agent/src/agent-config.js";
import type { ImagePullProgress } from "../../../packages/agent/src/runtime/runtime.js";
import { ctr, importBaseImage, removeCgroupTree, removeNamespace } from "../../support/containerd.js";
import { startTestRegistry, type TestRegistry } from "../../support/registry.js";

const NAMESPACE = `fsb-test-pull-${process.pid}`;
const CGROUP_PARENT = `/${NAMESPACE}`;

const lines = (text: string) =>
  text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);

describe("pulling images into containerd", { timeout: 300_000 }, () => {
  let registry: TestRegistry;
  let workDir: string;
  let agents: ContainerdRuntime[] = [];

  const runtime = (agentName: string) =>
    createContainerdRuntime({
      namespace: NAMESPACE,
      agentName,
      stateDir: join(workDir, agentName),
      cgroupParent: CGROUP_PARENT,
      helperPath: DEFAULT_HELPER_PATH,
      registryConfigPath: join(workDir, "config.json"),
      logger: pino({ level: "warn" }),
    });

  before(async () => {
    registry = await startTestRegistry();
    workDir = mkdtempSync(join(tmpdir(), "fsb-pull-"));
    writeFileSync(
      join(workDir, "config.json"),
      JSON.stringify({ auths: { [registry.host]: { auth: Buffer.from(`${registry.username}:${registry.password}`).toString("base64") } } }),
    );
    // The base image's layer is then in the namespace: pulls of variants skip it and unpack only their own layer.
    importBaseImage(NAMESPACE);
    agents = [runtime("agent-a"), runtime("agent-b")];
  });

  after(async () => {
    for (const agent of agents) agent.close();
    try {
      removeNamespace(NAMESPACE);
      removeCgroupTree(CGROUP_PARENT);
    } finally {
      rmSync(workDir, { recursive: true, force: true });
      await registry?.stop();
    }
  });

  const images = () => lines(ctr(NAMESPACE, "images", "ls", "-q"));
  const snapshots = () =>
    lines(ctr(NAMESPACE, "snapshots", "ls"))
      .slice(1)
      .map((line) => line.split(/\s+/)[0] ?? "");
  const content = () => lines(ctr(NAMESPACE, "content", "ls", "-q"));
  const configOf = (digest: string) => JSON.parse(ctr(NAMESPACE, "content", "get", digest)) as { rootfs: { diff_ids: string[] } };

  it("lets two agents of one namespace pull the same image at once; both succeed, one copy stays", async () => {
    const image = await registry.pushVariant("team/shared", "v1", "shared");
    const progress: ImagePullProgress[][] = [[], []];
    const [a, b] = await Promise.all(agents.map((agent, i) => agent.pullImage(image.reference, { onProgress: (p) => progress[i]?.push(p) })));
    assert.deepEqual(a, { image: image.reference, digest: image.manifestDigest });
    assert.deepEqual(b, a);
    for (const steps of progress) assert.equal(steps.at(-1)?.phase, "done");
    assert.ok(images().includes(image.reference));
    const diffIds = configOf(image.configDigest).rootfs.diff_ids;
    assert.ok(snapshots().includes(chainId(diffIds)), "the image's top layer is unpacked under its chain ID");
    assert.deepEqual(
      snapshots().filter((key) => !key.startsWith("sha256:")),
      [],
      "no extraction snapshot is left",
    );
    assert.deepEqual(lines(ctr(NAMESPACE, "leases", "ls", "-q")), []);
    assert.deepEqual(lines(ctr(NAMESPACE, "content", "active")).slice(1), []);
  });

  it("removes at an agent's start the pull leases its killed process left, and no other agent's or other lease", async () => {
    const leases = () => lines(ctr(NAMESPACE, "leases", "ls", "-q"));
    // A pull cut short by a kill keeps its lease (and what it downloaded) for a day.
    ctr(NAMESPACE, "leases", "create", "--id", "fsb-pull-0000000000000c01", "fast-sandbox.io/agent=agent-c");
    ctr(NAMESPACE, "leases", "create", "--id", "fsb-pull-0000000000000b01", "fast-sandbox.io/agent=agent-b");
    ctr(NAMESPACE, "leases", "create", "--id", "not-a-pull-c", "fast-sandbox.io/agent=agent-c");
    const restarted = runtime("agent-c");
    try {
      await restarted.prepare();
      const left = leases();
      assert.ok(!left.includes("fsb-pull-0000000000000c01"), "its own pull's lease is removed");
      assert.ok(left.includes("fsb-pull-0000000000000b01"), "another agent's pull (it may still run) is left alone");
      assert.ok(left.includes("not-a-pull-c"), "a lease that is not a pull's is left alone");
    } finally {
      await restarted.unprepare();
      restarted.close();
      ctr(NAMESPACE, "leases", "rm", "fsb-pull-0000000000000b01", "not-a-pull-c");
    }
  });

  it("keeps through garbage collection exactly what the image references, and drops it with the image", async () => {
    const image = await registry.pushVariant("team/collected", "v1", "collected");
    await agents[0]?.pullImage(image.reference);
    const diffIds = configOf(image.configDigest).rootfs.diff_ids;
    const top = chainId(diffIds);
    // A synchronous collection (the removal of another image) keeps all of it: the labels lead from the record to every blob and the snapshot.
    const other = await registry.pushVariant("team/other", "v1", "other");
    await agents[0]?.pullImage(other.reference);
    ctr(NAMESPACE, "images", "rm", "--sync", other.reference);
    for (const digest of [image.manifestDigest, image.configDigest, ...image.layerDigests]) assert.ok(content().includes(digest), `${digest} is kept`);
    assert.ok(snapshots().includes(top));
    assert.ok(!content().includes(other.configDigest), "the removed image's own blobs are collected");

    ctr(NAMESPACE, "images", "rm", "--sync", image.reference);
    assert.ok(!content().includes(image.configDigest));
    assert.ok(!content().includes(image.layerDigests.at(-1) ?? ""));
    assert.ok(!snapshots().includes(top), "its own layer's snapshot is collected with it");
    // The base layer belongs to the base image too and stays.
    assert.ok(content().includes(image.layerDigests[0] ?? ""));
  });

  it("unpacks again an image whose record and blobs are there but whose snapshot is gone, without the registry", async () => {
    const image = await registry.pushVariant("team/unpacked", "v1", "unpack-me");
    await agents[0]?.pullImage(image.reference);
    const top = chainId(configOf(image.configDigest).rootfs.diff_ids);
    ctr(NAMESPACE, "snapshots", "rm", top);
    assert.ok(!snapshots().includes(top));
    const requestsBefore = registry.requests().filter((r) => r.userAgent === "fast-sandbox-agent").length;
    // A fresh agent (no cached resolution) creating a sandbox of it: the resolver finds the record, then the missing snapshot.
    const fresh = runtime("agent-c");
    agents.push(fresh);
    const sandboxId = `sb-unpack-${process.pid}`;
    await fresh.create({
      sandboxId,
      namespace: "default",
      name: "unpacked",
      pool: "default",
      image: image.reference,
      command: ["sleep", "600"],
      args: [],
      env: [],
      runtimeType: "container",
      logPath: join(workDir, `${sandboxId}.log`),
    });
    try {
      assert.ok(snapshots().includes(top));
      let output = "";
      const exitCode = await fresh.exec(
        sandboxId,
        { command: ["cat", "/fsb-image"] },
        { onStdout: (chunk) => void (output += Buffer.from(chunk).toString()), onStderr: () => undefined },
      );
      assert.equal(exitCode, 0);
      assert.equal(output, "unpack-me\n");
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(registry.requests().filter((r) => r.userAgent === "fast-sandbox-agent").length, requestsBefore, "the registry was not asked");
    } finally {
      await fresh.delete(sandboxId, { gracePeriodMs: 0 });
    }
  });

  it("retires the prepared instances of an image whose tag a pull moved: a claim runs what the tag names now", async () => {
    const first = await registry.pushVariant("team/moving", "v1", "first");
    const stateDir = join(workDir, "agent-prepared");
    const prepared = createContainerdRuntime({
      namespace: NAMESPACE,
      agentName: "agent-prepared",
      stateDir,
      cgroupParent: CGROUP_PARENT,
      helperPath: DEFAULT_HELPER_PATH,
      registryConfigPath: join(workDir, "config.json"),
      preparedInstances: { count: 1, template: { namespace: "default", pool: "default", image: first.reference, runtimeType: "container" } },
      onCreateTimings: (timings) => claimed.push(timings.prepared === true),
      logger: pino({ level: "warn" }),
    });
    const claimed: boolean[] = [];
    const sandboxIds: string[] = [];
    const create = async () => {
      const sandboxId = `sb-moved-${process.pid}-${sandboxIds.length}`;
      sandboxIds.push(sandboxId);
      await prepared.create({
        sandboxId,
        namespace: "default",
        name: `moved-${sandboxIds.length}`,
        pool: "default",
        image: first.reference,
        command: ["sleep", "600"],
        args: [],
        env: [],
        runtimeType: "container",
        logPath: join(workDir, `${sandboxId}.log`),
      });
      let output = "";
      const exitCode = await prepared.exec(
        sandboxId,
        { command: ["cat", "/fsb-image"] },
        { onStdout: (chunk) => void (output += Buffer.from(chunk).toString()), onStderr: () => undefined },
      );
      assert.equal(exitCode, 0);
      return output.trim();
    };
    try {
      await prepared.pullImage(first.reference);
      await prepared.prepare();
      await prepared.preparedInstancesReady();
      assert.equal(await create(), "first", "a claim of the stock made of the first image");
      await prepared.preparedInstancesReady();
      // The tag moves: the same reference now names another image, and the agent pulls it.
      const second = await registry.pushVariant("team/moving", "v1", "second");
      assert.equal(second.reference, first.reference);
      await prepared.pullImage(second.reference);
      assert.equal(await create(), "second", "no claim of an instance made of the image the tag named before");
      await prepared.preparedInstancesReady();
      assert.equal(await create(), "second", "the stock is made of the new image again");
      assert.deepEqual(claimed, [true, false, true], "claimed, cold (the stale instance retired), claimed");
    } finally {
      for (const sandboxId of sandboxIds) await prepared.delete(sandboxId, { gracePeriodMs: 0 }).catch(() => undefined);
      await prepared.removePreparedInstances();
      await prepared.unprepare();
      prepared.close();
    }
  });
});
