import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { pino } from "pino";
import type { AgentSandbox, AgentStatus } from "../agent-client/agent-client.js";
import { SandboxManagerFixture } from "../fastpath/sandbox-manager.fixture.js";
import { AgentAdoption } from "./agent-adoption.js";

/** What an agent reports at (re)connection: its sandboxes by id. */
function report(agent: string, sandboxes: Partial<AgentSandbox>[]): AgentStatus {
  return {
    name: agent,
    namespace: "default",
    pool: "default",
    nodeName: "node-1",
    images: [],
    pid: 1,
    sandboxes: sandboxes.map((s) => ({
      sandboxId: "",
      namespace: "default",
      name: "",
      image: "python:3.12",
      state: "running",
      pid: 10,
      oomKilled: false,
      ...s,
    })),
  };
}

describe("AgentAdoption", () => {
  let fixture: SandboxManagerFixture;
  let adoption: AgentAdoption;

  beforeEach(() => {
    fixture = new SandboxManagerFixture();
    fixture.addAgent("agent-a");
    adoption = new AgentAdoption({
      store: fixture.store,
      registry: fixture.registry,
      manager: fixture.manager,
      agents: fixture.agents,
      logger: pino({ level: "silent" }),
      clock: fixture.clock,
    });
  });

  afterEach(() => fixture.close());

  it("restores the slots and ports of the sandboxes the agent still runs", async () => {
    await fixture.storeRecord("web", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-web" }, { exposedPorts: [8080] });
    await fixture.storeRecord("job", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-job" });
    assert.equal(fixture.allocated(), 0, "a fresh registry holds nothing");

    await adoption.adopt(
      "agent-a",
      report("agent-a", [
        { sandboxId: "id-web", name: "web" },
        { sandboxId: "id-job", name: "job" },
      ]),
    );

    assert.equal(fixture.allocated(), 2);
    assert.equal(fixture.registry.placementOf("default/web")?.agent.name, "agent-a");
    assert.deepEqual(fixture.registry.getAgent("agent-a")?.usedPorts, [8080]);
    assert.deepEqual(fixture.client("agent-a").calls, [], "nothing it runs is removed");
  });

  it("leaves alone the records of another namespace than the agent's (they name a gone Pod of their namespace whose name the agent's Pod has)", async () => {
    const ofOther = new AgentAdoption({
      store: fixture.store,
      registry: fixture.registry,
      manager: fixture.manager,
      // As AgentConnections answers when agent-a is a Pod of namespace "other".
      agents: { ...fixture.agents, exists: (_name, namespace) => namespace === undefined || namespace === "other" },
      logger: pino({ level: "silent" }),
      clock: fixture.clock,
    });
    await fixture.storeRecord("web", { phase: "Lost", assignedPod: "agent-a", sandboxID: "id-web" });
    await fixture.storeRecord("job", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-job" });

    await ofOther.adopt("agent-a", report("agent-a", [{ sandboxId: "id-web", name: "web", address: "10.88.0.66" }]));

    const web = await fixture.stored("web");
    assert.deepEqual([web?.status?.phase, web?.status?.sandboxIP], ["Lost", undefined], "not Running again at the address that agent says");
    assert.equal((await fixture.stored("job"))?.status?.phase, "Running", "not made Lost by what that agent lacks");
    assert.equal(fixture.allocated(), 0, "no slot on that agent");
  });

  it("records the address the agent reports for an Isolated sandbox, which holds no port on the agent's address", async () => {
    await fixture.storeRecord("iso", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-iso" }, { exposedPorts: [8080] });

    await adoption.adopt("agent-a", report("agent-a", [{ sandboxId: "id-iso", name: "iso", address: "10.88.0.5" }]));

    assert.equal((await fixture.stored("iso"))?.status?.sandboxIP, "10.88.0.5");
    assert.equal(fixture.allocated(), 1);
    assert.deepEqual(fixture.registry.getAgent("agent-a")?.usedPorts, []);
  });

  it("clears an address the agent no longer reports: the sandbox is in the agent's network and holds its ports", async () => {
    await fixture.storeRecord("web", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-web", sandboxIP: "10.88.0.5" }, { exposedPorts: [8080] });

    await adoption.adopt("agent-a", report("agent-a", [{ sandboxId: "id-web", name: "web" }]));

    assert.equal("sandboxIP" in ((await fixture.stored("web"))?.status ?? {}), false);
    assert.deepEqual(fixture.registry.getAgent("agent-a")?.usedPorts, [8080]);
  });

  it("marks a Running sandbox whose container vanished Lost, and gives it no slot", async () => {
    await fixture.storeRecord("gone", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-gone" });

    await adoption.adopt("agent-a", report("agent-a", []));

    const stored = await fixture.stored("gone");
    assert.equal(stored?.status?.phase, "Lost");
    assert.equal(stored?.status?.conditions?.find((c) => c.type === "Ready")?.reason, "SandboxMissing");
    assert.equal(fixture.allocated(), 0);
  });

  it("marks a Running sandbox the agent holds with its process 1 gone (a host restart) Lost, gives it no slot, and removes the stopped instance", async () => {
    await fixture.storeRecord("stopped", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-stopped", sandboxIP: "10.88.0.5" });
    await fixture.storeRecord("busy", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-busy" });
    const agent = fixture.client("agent-a");
    const held = report("agent-a", [
      { sandboxId: "id-stopped", name: "stopped", state: "stopped", exitCode: 0 },
      // Stopped by a checkpoint in flight: still its agent's, running on after it.
      { sandboxId: "id-busy", name: "busy", state: "stopped", checkpointing: true },
    ]).sandboxes;
    for (const sandbox of held) agent.sandboxes.set(sandbox.sandboxId, sandbox);

    await adoption.adopt("agent-a", report("agent-a", held));

    const stored = await fixture.stored("stopped");
    assert.equal(stored?.status?.phase, "Lost");
    assert.equal(stored?.status?.sandboxIP, undefined);
    assert.equal(stored?.status?.conditions?.find((c) => c.type === "Ready")?.reason, "SandboxStopped");
    assert.equal((await fixture.stored("busy"))?.status?.phase, "Running");
    assert.equal(fixture.registry.placementOf("default/stopped"), undefined);
    assert.equal(fixture.registry.placementOf("default/busy")?.agent.name, "agent-a");
    assert.deepEqual(agent.calls, ["delete id-stopped 0"], "the stopped instance goes: it held its slot and ports on the agent");
  });

  it("decides nothing from a status that predates the record's instance: a fresh one, asked for after the list, says it runs", async () => {
    // A leftover of a pause, stopped, in the status; a resume then ran the same sandbox id again.
    await fixture.storeRecord("resumed", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-resumed" });
    fixture.client("agent-a").sandboxes.set("id-resumed", report("agent-a", [{ sandboxId: "id-resumed", name: "resumed" }]).sandboxes[0]!);

    await adoption.adopt("agent-a", report("agent-a", [{ sandboxId: "id-resumed", name: "resumed", state: "stopped" }]));

    assert.equal((await fixture.stored("resumed"))?.status?.phase, "Running");
    assert.equal(fixture.registry.placementOf("default/resumed")?.agent.name, "agent-a");
    assert.deepEqual(fixture.client("agent-a").calls, []);
  });

  it("leaves a Lost sandbox Lost, without a slot, when the returning agent holds it with its process 1 gone, and removes that instance", async () => {
    const lost = await fixture.storeRecord("back", { phase: "Lost", assignedPod: "agent-a", sandboxID: "id-back" });
    const held = report("agent-a", [{ sandboxId: "id-back", name: "back", state: "stopped" }]).sandboxes;
    for (const sandbox of held) fixture.client("agent-a").sandboxes.set(sandbox.sandboxId, sandbox);

    await adoption.adopt("agent-a", report("agent-a", held));

    const stored = await fixture.stored("back");
    assert.equal(stored?.status?.phase, "Lost");
    assert.equal(stored?.metadata.resourceVersion, lost.metadata.resourceVersion, "nothing written");
    assert.equal(fixture.allocated(), 0);
    assert.deepEqual(fixture.client("agent-a").calls, ["delete id-back 0"]);
  });

  it("takes the address of a vanished instance away with it", async () => {
    await fixture.storeRecord("gone", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-gone", sandboxIP: "10.88.0.5" });

    await adoption.adopt("agent-a", report("agent-a", []));

    assert.equal((await fixture.stored("gone"))?.status?.sandboxIP, undefined);
  });

  it("gives a Running sandbox the endpoints of this control plane's proxy (fsb up started again on another proxy port), and leaves current ones unwritten", async () => {
    const stale = ["http://8080-id-web.localhost:7192/"];
    await fixture.storeRecord("web", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-web", endpoints: stale }, { exposedPorts: [8080] });
    await fixture.storeRecord("api", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-api" }, { exposedPorts: [9090] });
    const api = await fixture.stored("api");
    assert.ok(api);
    const current = fixture.manager.endpointsOf(api);
    await fixture.store.updateStatus("Sandbox", { ...api, status: { ...api.status, endpoints: current } });
    const apiVersion = (await fixture.stored("api"))?.metadata.resourceVersion;

    await adoption.adopt(
      "agent-a",
      report("agent-a", [
        { sandboxId: "id-web", name: "web" },
        { sandboxId: "id-api", name: "api" },
      ]),
    );

    const web = await fixture.stored("web");
    assert.ok(web);
    assert.deepEqual(web.status?.endpoints, fixture.manager.endpointsOf(web));
    assert.notDeepEqual(web.status?.endpoints, stale);
    assert.equal((await fixture.stored("api"))?.metadata.resourceVersion, apiVersion, "current endpoints: nothing written");
  });

  it("brings a Lost sandbox the returning agent still runs back to Running, with its slot", async () => {
    await fixture.storeRecord("back", { phase: "Lost", assignedPod: "agent-a", sandboxID: "id-back" });

    await adoption.adopt("agent-a", report("agent-a", [{ sandboxId: "id-back", name: "back" }]));

    const stored = await fixture.stored("back");
    assert.equal(stored?.status?.phase, "Running");
    assert.equal(stored?.status?.conditions?.find((c) => c.type === "Ready")?.reason, "AgentReturned");
    assert.equal(fixture.allocated(), 1);
  });

  it("gives a Lost sandbox that is back the address its agent reports", async () => {
    await fixture.storeRecord("back", { phase: "Lost", assignedPod: "agent-a", sandboxID: "id-back" }, { exposedPorts: [8080] });

    await adoption.adopt("agent-a", report("agent-a", [{ sandboxId: "id-back", name: "back", address: "10.88.0.9" }]));

    const stored = await fixture.stored("back");
    assert.equal(stored?.status?.phase, "Running");
    assert.equal(stored?.status?.sandboxIP, "10.88.0.9");
    assert.deepEqual(fixture.registry.getAgent("agent-a")?.usedPorts, []);
  });

  it("removes containers no record owns, but leaves creates still in flight on the agent alone", async () => {
    await fixture.storeRecord("mine", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-mine" });
    const client = fixture.client("agent-a");

    await adoption.adopt(
      "agent-a",
      report("agent-a", [
        { sandboxId: "id-mine", name: "mine" },
        { sandboxId: "id-orphan", name: "orphan" },
        { sandboxId: "id-in-flight", name: "new", state: "creating" },
      ]),
    );

    assert.deepEqual(client.calls, ["delete id-orphan 0"]);
  });

  it("gives a sandbox being deleted no slot back (its cleanup is about to release it)", async () => {
    const record = await fixture.storeRecord("leaving", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-leaving" });
    await fixture.store.delete("Sandbox", { namespace: "default", name: record.metadata.name });
    assert.ok((await fixture.stored("leaving"))?.metadata.deletionTimestamp, "held by its cleanup finalizer");

    await adoption.adopt("agent-a", report("agent-a", [{ sandboxId: "id-leaving", name: "leaving" }]));

    assert.equal(fixture.allocated(), 0);
    assert.deepEqual(fixture.client("agent-a").calls, [], "its container is the cleanup's to remove, not an orphan");
  });

  it("adopts every sandbox it can, then fails saying how many it could not, so the caller adopts again", async () => {
    await fixture.storeRecord("flaky", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-flaky" });
    await fixture.storeRecord("fine", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-fine" });
    const get = fixture.store.get.bind(fixture.store);
    fixture.store.get = (kind, key) => (key.name === "flaky" ? Promise.reject(new Error("store unavailable")) : get(kind, key));

    await assert.rejects(
      adoption.adopt(
        "agent-a",
        report("agent-a", [
          { sandboxId: "id-flaky", name: "flaky" },
          { sandboxId: "id-fine", name: "fine" },
        ]),
      ),
      /could not adopt 1 sandbox\(es\) of agent agent-a \(first: store unavailable\); adopt again/,
    );
    assert.equal(fixture.allocated(), 1, "the other sandbox was adopted");

    fixture.store.get = get;
    await adoption.adopt(
      "agent-a",
      report("agent-a", [
        { sandboxId: "id-flaky", name: "flaky" },
        { sandboxId: "id-fine", name: "fine" },
      ]),
    );
    assert.equal(fixture.allocated(), 2, "adopted again: both hold their slot, once");
  });

  it("does not take a create that finished after the status was asked for as vanished: a status asked for after the list decides", async () => {
    await fixture.storeRecord("late", { phase: "Running", assignedPod: "agent-a", sandboxID: "id-late" });
    // The agent runs it now; the status adoption was given predates its create (another replica's).
    fixture.client("agent-a").sandboxes.set("id-late", {
      sandboxId: "id-late",
      namespace: "default",
      name: "late",
      image: "python:3.12",
      state: "running",
      pid: 10,
      oomKilled: false,
    });
    await adoption.adopt("agent-a", report("agent-a", []));
    assert.equal((await fixture.stored("late"))?.status?.phase, "Running");
    assert.equal(fixture.allocated(), 1, "its slot is restored");
  });

  it("leaves the records of other agents alone", async () => {
    fixture.addAgent("agent-b");
    await fixture.storeRecord("elsewhere", { phase: "Running", assignedPod: "agent-b", sandboxID: "id-elsewhere" });

    await adoption.adopt("agent-a", report("agent-a", []));

    assert.equal((await fixture.stored("elsewhere"))?.status?.phase, "Running");
    assert.equal(fixture.allocated(), 0);
  });

  describe("adoptions that arrive together", () => {
    /** Counts the store's lists of Sandboxes; each waits for `gate` (when set) after it read the store. */
    function countLists(): { count: () => number; gate?: Promise<void> } {
      const list = fixture.store.list.bind(fixture.store);
      const counter: { count: () => number; gate?: Promise<void> } = { count: () => lists };
      let lists = 0;
      fixture.store.list = (async (...args: Parameters<typeof list>) => {
        lists++;
        const result = await list(...args);
        await counter.gate;
        return result;
      }) as typeof fixture.store.list;
      return counter;
    }

    async function agentsWithOneSandboxEach(count: number): Promise<string[]> {
      const names = Array.from({ length: count }, (_, i) => `agent-${i}`);
      for (const name of names) {
        fixture.addAgent(name);
        await fixture.storeRecord(`sb-${name}`, { phase: "Running", assignedPod: name, sandboxID: `id-${name}` });
      }
      return names;
    }

    it("share one list of the Sandboxes (a new leader adopting every agent), each acting on its own agent's records", async () => {
      const names = await agentsWithOneSandboxEach(6);
      const lists = countLists();

      await Promise.all(names.map((name) => adoption.adopt(name, report(name, [{ sandboxId: `id-${name}`, name: `sb-${name}` }]))));

      assert.equal(lists.count(), 1, "one list, not one per agent");
      assert.equal(fixture.allocated(), names.length, "every agent's sandbox holds its slot");
      for (const name of names) assert.equal(fixture.registry.placementOf(`default/sb-${name}`)?.agent.name, name);
    });

    it("an adoption asked for while the list is read waits for the next one, taken after its status: a container made since is not an orphan", async () => {
      fixture.addAgent("agent-b");
      const lists = countLists();
      let open!: () => void;
      lists.gate = new Promise<void>((resolve) => (open = resolve));
      const first = adoption.adopt("agent-a", report("agent-a", []));
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(lists.count(), 1);
      // Meanwhile another replica places a sandbox on agent-b (record, then container), and agent-b
      // reconnects with a status that holds it.
      await fixture.storeRecord("fresh", { phase: "Running", assignedPod: "agent-b", sandboxID: "id-fresh" });
      const second = adoption.adopt("agent-b", report("agent-b", [{ sandboxId: "id-fresh", name: "fresh" }]));
      const third = adoption.adopt("agent-a", report("agent-a", []));
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(lists.count(), 1, "no second list while the first is read");
      lists.gate = undefined;
      open();
      await Promise.all([first, second, third]);

      assert.equal(lists.count(), 2, "the two that arrived meanwhile shared the next list");
      assert.deepEqual(fixture.client("agent-b").calls, [], "its sandbox is not taken for an orphan");
      assert.equal(fixture.registry.placementOf("default/fresh")?.agent.name, "agent-b");
    });

    it("act on the list `concurrency` at a time", async () => {
      const names = await agentsWithOneSandboxEach(6);
      adoption = new AgentAdoption({
        store: fixture.store,
        registry: fixture.registry,
        manager: fixture.manager,
        agents: fixture.agents,
        logger: pino({ level: "silent" }),
        clock: fixture.clock,
        concurrency: 2,
      });
      const get = fixture.store.get.bind(fixture.store);
      let reading = 0;
      let most = 0;
      fixture.store.get = (async (...args: Parameters<typeof get>) => {
        most = Math.max(most, ++reading);
        await new Promise((resolve) => setImmediate(resolve));
        reading--;
        return get(...args);
      }) as typeof fixture.store.get;

      await Promise.all(names.map((name) => adoption.adopt(name, report(name, [{ sandboxId: `id-${name}`, name: `sb-${name}` }]))));

      assert.equal(most, 2, "two agents' records read at once, never more");
      assert.equal(fixture.allocated(), names.length);
    });

    it("all fail when their list does, and the next adoption lists again", async () => {
      const names = await agentsWithOneSandboxEach(3);
      const list = fixture.store.list.bind(fixture.store);
      let lists = 0;
      fixture.store.list = ((...args: Parameters<typeof list>) =>
        ++lists === 1 ? Promise.reject(new Error("store unavailable")) : list(...args)) as typeof fixture.store.list;

      const results = await Promise.allSettled(names.map((name) => adoption.adopt(name, report(name, [{ sandboxId: `id-${name}`, name: `sb-${name}` }]))));
      assert.deepEqual(
        results.map((r) => r.status),
        ["rejected", "rejected", "rejected"],
      );
      await adoption.adopt("agent-0", report("agent-0", [{ sandboxId: "id-agent-0", name: "sb-agent-0" }]));
      assert.equal(lists, 2);
      assert.equal(fixture.allocated(), 1);
    });
  });
});
