import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { API_VERSION, type Sandbox } from "@fast-sandbox/api";
import type { AgentSandbox, AgentStatus } from "../agent-client/agent-client.js";
import { FakeClock } from "../controller/clock.js";
import type { ResourceStore } from "../store/resource-store.js";
import { openSqliteResourceStore, type SqliteResourceStore } from "../store/sqlite-resource-store.js";
import { CONDITION_COMMAND_EXITED, CONDITION_OOM_KILLED, newSandboxFacts, recordSandboxFacts } from "./sandbox-facts.js";

const AGENT = "default-0";
const EARLIER = new Date("2026-01-01T00:00:00Z");
const NOW = new Date("2026-01-01T00:01:00Z");
/** Options with a clock that reads `date`. */
const at = (date: Date) => ({ clock: new FakeClock(date) });

/** What an agent reports about a sandbox: by default the one named after its id (`sb-hog` is `default/hog`). */
function reported(fields: Partial<AgentSandbox> & { sandboxId: string }): AgentSandbox {
  return { namespace: "default", name: fields.sandboxId.replace(/^sb-/, ""), image: "", state: "running", oomKilled: false, ...fields };
}

function status(...sandboxes: AgentSandbox[]): AgentStatus {
  return { name: AGENT, namespace: "default", pool: "default", nodeName: "", images: [], sandboxes, pid: 0 };
}

let store: SqliteResourceStore;

beforeEach(() => {
  store = openSqliteResourceStore({ path: ":memory:" });
});

afterEach(async () => {
  await store.close();
});

async function stored(name: string, sandboxId: string, extra: Partial<NonNullable<Sandbox["status"]>> = {}, assignedPod = AGENT): Promise<Sandbox> {
  const created = await store.create("Sandbox", {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name, namespace: "default" },
    spec: { image: "img", poolRef: "default" },
  });
  return store.updateStatus("Sandbox", {
    ...created,
    status: {
      phase: "Running",
      assignedPod,
      sandboxID: sandboxId,
      conditions: [{ type: "Ready", status: "True", reason: "Started", lastTransitionTime: EARLIER.toISOString() }],
      ...extra,
    },
  });
}

async function conditionsOf(name: string) {
  const sandbox = await store.get("Sandbox", { namespace: "default", name });
  return (sandbox?.status?.conditions ?? []).map((c) => [c.type, c.status, c.reason, c.lastTransitionTime]);
}

describe("newSandboxFacts", () => {
  const base: Sandbox = {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name: "a", namespace: "default" },
    spec: { image: "img", poolRef: "default" },
    status: { phase: "Running", conditions: [] },
  };

  it("turns an OOM kill into an OOMKilled condition that says what to change", () => {
    const [condition, ...rest] = newSandboxFacts(base, reported({ sandboxId: "x", oomKilled: true }));
    assert.deepEqual(rest, []);
    assert.equal(condition?.type, "OOMKilled");
    assert.equal(condition?.status, "True");
    assert.equal(condition?.reason, "OOMKilled");
    assert.match(condition?.message ?? "", /OOM killer killed a process of the sandbox.*memory limit.*sandboxResources\.memory/);
  });

  it("turns an exit code into CommandExited, Succeeded for 0 and Failed otherwise", () => {
    assert.deepEqual(
      newSandboxFacts(base, reported({ sandboxId: "x", exitCode: 0 })).map((c) => [c.type, c.reason, c.message]),
      [["CommandExited", "Succeeded", "the command exited with code 0; exec still works"]],
    );
    assert.deepEqual(
      newSandboxFacts(base, reported({ sandboxId: "x", exitCode: 137, oomKilled: true })).map((c) => [c.type, c.reason]),
      [
        ["OOMKilled", "OOMKilled"],
        ["CommandExited", "Failed"],
      ],
    );
  });

  it("gives nothing for a fact the sandbox already shows, or for a sandbox with nothing to report", () => {
    const shown: Sandbox = {
      ...base,
      status: {
        conditions: [
          { type: CONDITION_OOM_KILLED, status: "True", reason: "OOMKilled" },
          { type: CONDITION_COMMAND_EXITED, status: "True", reason: "Failed" },
        ],
      },
    };
    assert.deepEqual(newSandboxFacts(shown, reported({ sandboxId: "x", exitCode: 1, oomKilled: true })), []);
    assert.deepEqual(newSandboxFacts(base, reported({ sandboxId: "x" })), []);
  });
});

describe("recordSandboxFacts", () => {
  it("records an OOM kill once, keeping the other conditions", async () => {
    await stored("hog", "sb-hog");
    await recordSandboxFacts(store, AGENT, status(reported({ sandboxId: "sb-hog", oomKilled: true })), at(NOW));
    assert.deepEqual(await conditionsOf("hog"), [
      ["Ready", "True", "Started", EARLIER.toISOString()],
      ["OOMKilled", "True", "OOMKilled", NOW.toISOString()],
    ]);
    const version = (await store.get("Sandbox", { namespace: "default", name: "hog" }))?.metadata.resourceVersion;
    // Every later heartbeat reports it again: nothing is written.
    await recordSandboxFacts(store, AGENT, status(reported({ sandboxId: "sb-hog", oomKilled: true })), at(new Date("2026-01-01T00:05:00Z")));
    assert.equal((await store.get("Sandbox", { namespace: "default", name: "hog" }))?.metadata.resourceVersion, version);
  });

  it("records an OOM kill and the exit it caused in one write", async () => {
    await stored("hog", "sb-hog");
    const before = Number((await store.get("Sandbox", { namespace: "default", name: "hog" }))?.metadata.resourceVersion);
    await recordSandboxFacts(store, AGENT, status(reported({ sandboxId: "sb-hog", oomKilled: true, exitCode: 137 })), at(NOW));
    const after = await store.get("Sandbox", { namespace: "default", name: "hog" });
    assert.deepEqual(
      after?.status?.conditions?.map((c) => c.type),
      ["Ready", "OOMKilled", "CommandExited"],
    );
    assert.ok(Number(after?.metadata.resourceVersion) > before);
    const { items } = await store.list("Sandbox");
    assert.equal(items.length, 1);
  });

  it("records an exit that comes after an OOM kill already recorded", async () => {
    await stored("hog", "sb-hog");
    await recordSandboxFacts(store, AGENT, status(reported({ sandboxId: "sb-hog", oomKilled: true })), at(EARLIER));
    await recordSandboxFacts(store, AGENT, status(reported({ sandboxId: "sb-hog", oomKilled: true, exitCode: 137 })), at(NOW));
    assert.deepEqual(await conditionsOf("hog"), [
      ["Ready", "True", "Started", EARLIER.toISOString()],
      ["OOMKilled", "True", "OOMKilled", EARLIER.toISOString()],
      ["CommandExited", "True", "Failed", NOW.toISOString()],
    ]);
  });

  it("ignores sandboxes of another agent, sandboxes being deleted and facts nobody's record matches", async () => {
    await stored("elsewhere", "sb-1", {}, "default-1");
    const leaving = await stored("leaving", "sb-2");
    await store.update("Sandbox", { ...leaving, metadata: { ...leaving.metadata, finalizers: ["keep"] } });
    await store.delete("Sandbox", { namespace: "default", name: "leaving" });
    await stored("quiet", "sb-3");
    await recordSandboxFacts(
      store,
      AGENT,
      status(
        reported({ sandboxId: "sb-1", name: "elsewhere", oomKilled: true }),
        reported({ sandboxId: "sb-2", name: "leaving", oomKilled: true }),
        // An earlier instance of the name (replaced since), and one the agent's create alone knows.
        reported({ sandboxId: "sb-9", name: "quiet", exitCode: 1 }),
        reported({ sandboxId: "sb-3", namespace: "", name: "", exitCode: 1 }),
      ),
      at(NOW),
    );
    for (const name of ["elsewhere", "leaving", "quiet"])
      assert.deepEqual(
        (await conditionsOf(name)).map(([type]) => type),
        ["Ready"],
        name,
      );
  });

  it("with the agent's namespace, ignores facts about a sandbox of another namespace (a Pod of another namespace holding the name)", async () => {
    await stored("hog", "sb-hog");
    const facts = status(reported({ sandboxId: "sb-hog", oomKilled: true, exitCode: 137 }));
    await recordSandboxFacts(store, AGENT, facts, { ...at(NOW), agentNamespace: "team-b" });
    assert.deepEqual(
      (await conditionsOf("hog")).map(([type]) => type),
      ["Ready"],
    );
    await recordSandboxFacts(store, AGENT, facts, { ...at(NOW), agentNamespace: "default" });
    assert.deepEqual(
      (await conditionsOf("hog")).map(([type]) => type),
      ["Ready", "OOMKilled", "CommandExited"],
    );
  });

  it("reads only the records of the sandboxes reported with facts, never a list of every sandbox", async () => {
    for (let i = 0; i < 20; i++) await stored(`idle-${i}`, `sb-idle-${i}`);
    await stored("hog", "sb-hog");
    const reads = countingReads(store);
    await recordSandboxFacts(
      reads.store,
      AGENT,
      status(reported({ sandboxId: "sb-idle-0" }), reported({ sandboxId: "sb-hog", exitCode: 1 }), reported({ sandboxId: "sb-idle-1" })),
      at(NOW),
    );
    assert.deepEqual(reads.calls, ["get default/hog"]);
    assert.deepEqual(
      (await conditionsOf("hog")).map(([type]) => type),
      ["Ready", "CommandExited"],
    );
  });

  it("with the cache, reads nothing for facts the cached records show, and skips what the cache does not hold yet", async () => {
    const hog = await stored("hog", "sb-hog");
    const cache = new Map<string, Sandbox>([["default/hog", hog]]);
    const reads = countingReads(store);
    const heartbeat = status(reported({ sandboxId: "sb-hog", exitCode: 1 }), reported({ sandboxId: "sb-new", exitCode: 0 }));
    await recordSandboxFacts(reads.store, AGENT, heartbeat, { ...at(NOW), cached: (key) => cache.get(key) });
    assert.deepEqual(reads.calls, ["get default/hog"], "the fact is new for the cached hog; sb-new is not cached yet");
    const recorded = (await store.get("Sandbox", { namespace: "default", name: "hog" })) ?? assert.fail("hog is gone");
    assert.deepEqual(
      recorded.status?.conditions?.map((c) => c.type),
      ["Ready", "CommandExited"],
    );

    // The cache caught up: later heartbeats report the same fact again and cost no read.
    cache.set("default/hog", recorded);
    reads.calls.length = 0;
    await recordSandboxFacts(reads.store, AGENT, status(reported({ sandboxId: "sb-hog", exitCode: 1 })), { ...at(NOW), cached: (key) => cache.get(key) });
    assert.deepEqual(reads.calls, []);
  });
});

/** The store, with the reads made through it (`get namespace/name`, `list`). */
function countingReads(target: SqliteResourceStore): { store: ResourceStore; calls: string[] } {
  const calls: string[] = [];
  const counted = new Proxy(target, {
    get(store, property) {
      if (property === "get") {
        return ((kind, key) => {
          calls.push(`get ${key.namespace}/${key.name}`);
          return store.get(kind, key);
        }) as ResourceStore["get"];
      }
      if (property === "list") {
        return ((kind, options) => {
          calls.push("list");
          return store.list(kind, options);
        }) as ResourceStore["list"];
      }
      const value: unknown = Reflect.get(store, property, store);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(store) : value;
    },
  });
  return { store: counted, calls };
}
