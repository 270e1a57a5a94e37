import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { API_VERSION, type Sandbox } from "@fast-sandbox/api";
import type { AgentSandbox, AgentStatus } from "../agent-client/agent-client.js";
import { FakeClock } from "../controller/clock.js";
import { openSqliteResourceStore, type SqliteResourceStore } from "../store/sqlite-resource-store.js";
import { CONDITION_COMMAND_EXITED, CONDITION_OOM_KILLED, newSandboxFacts, recordSandboxFacts } from "./sandbox-facts.js";

const AGENT = "default-0";
const EARLIER = new Date("2026-01-01T00:00:00Z");
const NOW = new Date("2026-01-01T00:01:00Z");
/** A clock that reads `date`. */
const at = (date: Date) => new FakeClock(date);

function reported(fields: Partial<AgentSandbox> & { sandboxId: string }): AgentSandbox {
  return { namespace: "", name: "", image: "", state: "running", oomKilled: false, ...fields };
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
      status(reported({ sandboxId: "sb-1", oomKilled: true }), reported({ sandboxId: "sb-2", oomKilled: true }), reported({ sandboxId: "sb-9", exitCode: 1 })),
      at(NOW),
    );
    for (const name of ["elsewhere", "leaving", "quiet"])
      assert.deepEqual(
        (await conditionsOf(name)).map(([type]) => type),
        ["Ready"],
        name,
      );
  });
});
