import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { ConflictError } from "@fast-sandbox/api";
import type { LeaseSpecRecord } from "../leader/lease-decision.js";
import { LeaseLeaderElector, type LeaseClient, type ObservedLease } from "../leader/lease-leader-elector.js";
import type { AgentStatus } from "../agent-client/agent-client.js";
import { SandboxManagerFixture } from "../fastpath/sandbox-manager.fixture.js";
import { AgentAdoption } from "../reconcile/agent-adoption.js";
import { AgentOnboarding } from "../reconcile/agent-onboarding.js";
import { adoptConnectedAgents, runLeadership } from "./kubernetes-control-plane.js";

/** One Lease with the API server's optimistic concurrency: every write bumps the resourceVersion. */
class FakeLease implements LeaseClient {
  version = 0;
  spec: LeaseSpecRecord | undefined;

  private copy(): ObservedLease | undefined {
    return this.spec ? { resourceVersion: String(this.version), spec: { ...this.spec } } : undefined;
  }
  get(): Promise<ObservedLease | undefined> {
    return Promise.resolve(this.copy());
  }
  create(spec: LeaseSpecRecord): Promise<ObservedLease> {
    if (this.spec) return Promise.reject(new ConflictError("exists"));
    this.spec = { ...spec };
    this.version++;
    return Promise.resolve(this.copy()!);
  }
  replace(resourceVersion: string, spec: LeaseSpecRecord): Promise<ObservedLease> {
    if (!this.spec || resourceVersion !== String(this.version)) return Promise.reject(new ConflictError("stale"));
    this.spec = { ...spec };
    this.version++;
    return Promise.resolve(this.copy()!);
  }
}

/** A replica's elector; the lease outlasts the test, so only a release lets another replica lead. */
function elector(lease: FakeLease, identity: string): LeaseLeaderElector {
  return new LeaseLeaderElector({ lease, identity, leaseDurationSeconds: 30, renewDeadlineMs: 2_000, retryPeriodMs: 50 });
}

async function until(condition: () => boolean, what: string, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const logger = pino({ level: "silent" });

describe("runLeadership", () => {
  it("gives the leadership up when the leader's work cannot start: what started stops, the Lease is released and another replica leads", async () => {
    const lease = new FakeLease();
    const events: string[] = [];
    const first = elector(lease, "a");
    const a = runLeadership({
      elector: first,
      start: () => {
        events.push("a started");
        return Promise.reject(new Error("the sandboxes' first list was refused"));
      },
      stop: () => {
        events.push("a stopped");
        return Promise.resolve();
      },
      logger,
      onStoppedLeading: () => events.push("a stopped leading"),
    });
    await until(() => events.includes("a started"), "a to lead");
    const second = elector(lease, "b");
    const b = runLeadership({ elector: second, start: () => Promise.resolve(), stop: () => Promise.resolve(), logger });
    try {
      await until(() => second.isLeader(), "b to take the released lease");
      assert.equal(first.isLeader(), false);
      assert.equal(lease.spec?.holderIdentity, "b");
      assert.deepEqual(events, ["a started", "a stopped leading", "a stopped"]);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it("keeps leading when the work started, and stops it before the Lease is released", async () => {
    const lease = new FakeLease();
    const events: string[] = [];
    const only = elector(lease, "a");
    const running = runLeadership({
      elector: only,
      start: () => {
        events.push("started");
        return Promise.resolve();
      },
      stop: async () => {
        await sleep(20);
        events.push(`stopped, lease held by ${lease.spec?.holderIdentity ?? "nobody"}`);
      },
      logger,
    });
    await until(() => events.includes("started"), "a to lead");
    await sleep(200);
    assert.equal(only.isLeader(), true, "renewed, still leading");
    await running.stop();
    assert.deepEqual(events, ["started", "stopped, lease held by a"]);
    assert.equal(lease.spec?.holderIdentity, undefined, "released on stop");
  });
});

describe("adoptConnectedAgents", () => {
  it("adopts every connected agent on one list of the Sandboxes, not one list per agent", async () => {
    const fixture = new SandboxManagerFixture();
    try {
      const names = Array.from({ length: 5 }, (_, i) => `agent-${i}`);
      const statuses = new Map<string, AgentStatus>();
      for (const name of names) {
        fixture.addAgent(name);
        await fixture.storeRecord(`sb-${name}`, { phase: "Running", assignedPod: name, sandboxID: `id-${name}` });
        statuses.set(name, {
          ...(await fixture.client(name).status()),
          sandboxes: [{ sandboxId: `id-${name}`, namespace: "default", name: `sb-${name}`, image: "img", state: "running", pid: 10, oomKilled: false }],
        });
      }
      const list = fixture.store.list.bind(fixture.store);
      let lists = 0;
      fixture.store.list = ((...args: Parameters<typeof list>) => {
        lists++;
        return list(...args);
      }) as typeof fixture.store.list;
      const adoption = new AgentAdoption({
        store: fixture.store,
        registry: fixture.registry,
        manager: fixture.manager,
        agents: fixture.agents,
        logger,
        clock: fixture.clock,
      });
      const onboarding = new AgentOnboarding({
        adoption,
        registry: fixture.registry,
        agents: fixture.agents,
        logger,
        clock: fixture.clock,
        poolOf: () => undefined,
      });
      const connections = {
        connectedAgents: () => names,
        observedStatus: (name: string) => {
          const status = statuses.get(name);
          return status ? { status, at: fixture.clock.now(), askedAt: fixture.clock.now() } : undefined;
        },
      };

      await adoptConnectedAgents(connections, onboarding);

      assert.equal(lists, 1);
      assert.equal(fixture.allocated(), names.length, "every agent's sandbox holds its slot");
      onboarding.stop();
    } finally {
      await fixture.close();
    }
  });
});
