import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setImmediate as settle } from "node:timers/promises";
import { ConflictError, UnavailableError } from "@fast-sandbox/api";
import { FakeClock, sleep, type Clock } from "../controller/clock.js";
import type { LeaseSpecRecord } from "./lease-decision.js";
import { LeaseLeaderElector, type LeaseClient, type ObservedLease } from "./lease-leader-elector.js";

/** One Lease with the API server's optimistic concurrency: every write bumps the resourceVersion. */
class FakeLeaseStore {
  version = 0;
  spec: LeaseSpecRecord | undefined;
  writes = 0;

  /**
   * A client of this lease whose requests fail while `partitioned` (network cut, process frozen).
   * With `slowFirstGet`, its first read is answered that late on `clock`, with the lease as it is then
   * (an API server slow to answer reads the lease just before it does).
   */
  client(slowFirstGet?: { clock: Clock; ms: number }): LeaseClient & { partitioned: boolean; hanging: boolean } {
    const copy = (): ObservedLease | undefined => (this.spec ? { resourceVersion: String(this.version), spec: { ...this.spec } } : undefined);
    let gets = 0;
    const client = {
      partitioned: false,
      hanging: false,
      get: async () => {
        await settle();
        if (gets++ === 0 && slowFirstGet) await sleep(slowFirstGet.clock, slowFirstGet.ms);
        if (client.hanging) await new Promise(() => undefined);
        if (client.partitioned) throw new UnavailableError("partitioned");
        return copy();
      },
      create: async (spec: LeaseSpecRecord) => {
        await settle();
        if (client.partitioned) throw new UnavailableError("partitioned");
        if (this.spec) throw new ConflictError("exists");
        this.spec = { ...spec };
        this.version++;
        this.writes++;
        return copy() as ObservedLease;
      },
      replace: async (resourceVersion: string, spec: LeaseSpecRecord) => {
        await settle();
        if (client.partitioned) throw new UnavailableError("partitioned");
        if (!this.spec || resourceVersion !== String(this.version)) throw new ConflictError("stale");
        this.spec = { ...spec };
        this.version++;
        this.writes++;
        return copy() as ObservedLease;
      },
    };
    return client;
  }
}

interface Candidate {
  elector: LeaseLeaderElector;
  client: ReturnType<FakeLeaseStore["client"]>;
  events: string[];
  signals: AbortSignal[];
}

function candidate(
  store: FakeLeaseStore,
  clock: Clock,
  identity: string,
  options: { retryPeriodMs?: number; client?: ReturnType<FakeLeaseStore["client"]> } = {},
): Candidate {
  const client = options.client ?? store.client();
  const events: string[] = [];
  const signals: AbortSignal[] = [];
  const elector = new LeaseLeaderElector({
    lease: client,
    identity,
    clock,
    leaseDurationSeconds: 4,
    renewDeadlineMs: 3_000,
    retryPeriodMs: options.retryPeriodMs ?? 500,
  });
  elector.run({
    onStartedLeading: (signal) => {
      events.push("started");
      signals.push(signal);
    },
    onStoppedLeading: () => void events.push("stopped"),
  });
  return { elector, client, events, signals };
}

/** Moves fake time in small steps, letting the fake API's promises settle; checks no two lead at once. */
async function advance(clock: FakeClock, ms: number, candidates: Candidate[], stepMs = 50): Promise<void> {
  for (let elapsed = 0; elapsed < ms; elapsed += stepMs) {
    clock.advance(stepMs);
    for (let i = 0; i < 5; i++) await settle();
    const leaders = candidates.filter((c) => c.elector.isLeader()).map((c) => c.elector.identity);
    assert.ok(leaders.length <= 1, `two leaders at ${clock.now().toISOString()}: ${leaders.join(", ")}`);
  }
}

describe("LeaseLeaderElector on a fake Lease API", () => {
  it("of two candidates exactly one leads, and keeps leading while it renews", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    const all = [candidate(store, clock, "a"), candidate(store, clock, "b")];
    await advance(clock, 10_000, all);
    const leaders = all.filter((c) => c.elector.isLeader());
    assert.equal(leaders.length, 1);
    assert.deepEqual(leaders[0]?.events, ["started"]);
    assert.equal(store.spec?.holderIdentity, leaders[0]?.elector.identity);
    assert.equal(store.spec?.leaseTransitions, 0);
    assert.ok(store.writes >= 10, `renewed every retry period (${store.writes} writes)`);
    for (const c of all) await c.elector.stop();
  });

  it("stop() steps down, then releases: the successor leads within one retry period", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    const all = [candidate(store, clock, "a"), candidate(store, clock, "b")];
    await advance(clock, 1_000, all);
    const [leader, follower] = all[0]?.elector.isLeader() ? [all[0], all[1]] : [all[1], all[0]];
    assert.ok(leader && follower);
    const stopping = leader.elector.stop();
    await advance(clock, 100, all);
    await stopping;
    assert.equal(leader.elector.isLeader(), false);
    assert.deepEqual(leader.events, ["started", "stopped"]);
    assert.equal(leader.signals[0]?.aborted, true);
    assert.equal(store.spec?.holderIdentity === leader.elector.identity, false, "the lease was released");
    await advance(clock, 600, all);
    assert.equal(follower.elector.isLeader(), true, "took over within one retry period, not after the 4 s lease");
    assert.equal(store.spec?.leaseTransitions, 1);
    await follower.elector.stop();
  });

  it("a leader that cannot renew steps down by its renew deadline; the other leads only after the lease expires", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    const all = [candidate(store, clock, "a"), candidate(store, clock, "b")];
    await advance(clock, 1_000, all);
    const [leader, follower] = all[0]?.elector.isLeader() ? [all[0], all[1]] : [all[1], all[0]];
    assert.ok(leader && follower);
    const lastRenewMs = store.spec?.renewTime?.getTime() ?? 0;
    leader.client.partitioned = true;
    await advance(clock, lastRenewMs + 2_850 - clock.now().getTime(), all);
    assert.equal(leader.elector.isLeader(), true, "still within its renew deadline");
    await advance(clock, lastRenewMs + 3_100 - clock.now().getTime(), all);
    assert.equal(leader.elector.isLeader(), false, "stepped down past the renew deadline");
    assert.equal(leader.signals[0]?.aborted, true);
    assert.ok(clock.now().getTime() - lastRenewMs < 4_000, "the lease has not expired yet");
    assert.equal(follower.elector.isLeader(), false, "no one leads until the lease expires");
    await advance(clock, 1_500, all);
    assert.equal(follower.elector.isLeader(), true);
    assert.equal(store.spec?.holderIdentity, follower.elector.identity);
    // The partition heals: the old leader reads the new holder and stays a follower.
    leader.client.partitioned = false;
    await advance(clock, 2_000, all);
    assert.equal(leader.elector.isLeader(), false);
    assert.equal(follower.elector.isLeader(), true);
    for (const c of all) await c.elector.stop();
  });

  it("replicas whose clocks disagree by more than the lease's margin never lead at once: expiry is judged on the follower's clock", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    const a = candidate(store, clock, "a");
    await advance(clock, 1_000, [a]);
    assert.equal(a.elector.isLeader(), true);
    // b's clock runs 2 s ahead: more than leaseDurationSeconds - renewDeadlineMs (1 s).
    const ahead: Clock = { now: () => new Date(clock.now().getTime() + 2_000), setTimeout: (callback, delayMs) => clock.setTimeout(callback, delayMs) };
    const b = candidate(store, ahead, "b");
    await advance(clock, 2_000, [a, b]);
    assert.equal(b.elector.isLeader(), false, "a renews: b waits");
    a.client.partitioned = true;
    // advance() fails at the first moment both lead.
    await advance(clock, 8_000, [a, b]);
    assert.equal(a.elector.isLeader(), false);
    assert.equal(b.elector.isLeader(), true, "b took over once the lease it last saw renewed had expired on its own clock");
    a.client.partitioned = false;
    for (const c of [a, b]) await c.elector.stop();
  });

  it("times its first read of a lease from the answer, not the request: a slow API server does not make a held lease expire early", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    const leader = candidate(store, clock, "a");
    await advance(clock, 2_000, [leader]);
    assert.equal(leader.elector.isLeader(), true);
    // b's first read is answered 1.6 s late, with the lease a renewed meanwhile; a is cut off right after.
    const follower = candidate(store, clock, "b", { client: store.client({ clock, ms: 1_600 }) });
    await advance(clock, 1_650, [leader, follower]);
    leader.client.partitioned = true;
    // advance() fails at the first moment both lead: b must wait a lease duration from the answer.
    await advance(clock, 6_000, [leader, follower]);
    assert.equal(leader.elector.isLeader(), false, "stepped down by its renew deadline");
    assert.equal(follower.elector.isLeader(), true, "took over once the lease it saw had expired");
    leader.client.partitioned = false;
    for (const c of [leader, follower]) await c.elector.stop();
  });

  it("measures the lease's expiry and the renew deadline on the monotonic clock: a wall-clock step changes nothing", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    const leader = candidate(store, clock, "a");
    await advance(clock, 1_000, [leader]);
    // The follower reads more often than the leader renews: it reads the same version several times.
    const follower = candidate(store, clock, "b", { retryPeriodMs: 100 });
    await advance(clock, 1_000, [leader, follower]);
    assert.equal(follower.elector.isLeader(), false);
    // NTP (or an operator) sets the clock 20 s forward (5 lease durations), a few times, at different
    // moments of the renewal period; then 100 s back.
    for (let step = 0; step < 5; step++) {
      clock.stepWallClock(20_000);
      await advance(clock, 700, [leader, follower]);
    }
    clock.stepWallClock(-100_000);
    await advance(clock, 3_000, [leader, follower]);
    assert.deepEqual(follower.events, [], "the follower never took the lease its leader renews");
    assert.deepEqual(leader.events, ["started"], "the leader never stepped down");
    assert.equal(store.spec?.holderIdentity, "a");
    // Cut off, the leader still steps down by its renew deadline, and the follower takes over after the lease's duration.
    leader.client.partitioned = true;
    await advance(clock, 3_100, [leader, follower]);
    assert.equal(leader.elector.isLeader(), false);
    await advance(clock, 2_000, [leader, follower]);
    assert.equal(follower.elector.isLeader(), true);
    leader.client.partitioned = false;
    for (const c of [leader, follower]) await c.elector.stop();
  });

  it("stop() releases the lease only once the work onStoppedLeading returned is over", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    let finish: () => void = () => undefined;
    const work = new Promise<void>((resolve) => (finish = resolve));
    const elector = new LeaseLeaderElector({
      lease: store.client(),
      identity: "a",
      clock,
      leaseDurationSeconds: 4,
      renewDeadlineMs: 3_000,
      retryPeriodMs: 500,
    });
    elector.run({ onStartedLeading: () => undefined, onStoppedLeading: () => work });
    for (let i = 0; i < 10 && !elector.isLeader(); i++) {
      clock.advance(50);
      for (let j = 0; j < 5; j++) await settle();
    }
    assert.equal(elector.isLeader(), true);
    let stopped = false;
    const stopping = elector.stop().then(() => (stopped = true));
    for (let j = 0; j < 20; j++) await settle();
    assert.equal(elector.isLeader(), false);
    assert.equal(store.spec?.holderIdentity, "a", "still held while the leader's work winds down");
    assert.equal(stopped, false);
    finish();
    await stopping;
    assert.equal(store.spec?.holderIdentity, undefined, "released once it is over");
  });

  it("a leader that reads another holder (its write lost a race) steps down at once", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    const only = candidate(store, clock, "a");
    await advance(clock, 600, [only]);
    assert.equal(only.elector.isLeader(), true);
    // Someone else wrote the lease as its holder (as if it had expired for them).
    store.spec = { holderIdentity: "intruder", leaseDurationSeconds: 4, renewTime: clock.now(), acquireTime: clock.now(), leaseTransitions: 1 };
    store.version++;
    await advance(clock, 600, [only]);
    assert.equal(only.elector.isLeader(), false);
    assert.deepEqual(only.events, ["started", "stopped"]);
    await only.elector.stop();
    assert.equal(store.spec.holderIdentity, "intruder", "stop() releases only a lease it holds");
  });

  it("a request that never answers does not stall the campaign: the leader steps down, and tries again", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    const only = candidate(store, clock, "a");
    await advance(clock, 600, [only]);
    assert.equal(only.elector.isLeader(), true);
    only.client.hanging = true;
    await advance(clock, 3_600, [only]);
    assert.equal(only.elector.isLeader(), false, "stepped down by its renew deadline");
    only.client.hanging = false;
    await advance(clock, 3_600, [only]);
    assert.equal(only.elector.isLeader(), true, "a later try renewed its own lease");
    assert.deepEqual(only.events, ["started", "stopped", "started"]);
    await only.elector.stop();
  });

  it("takes its renew deadline (2/3) and retry period (2/15) from a lease duration given alone", async () => {
    const lease = new FakeLeaseStore().client();
    // A fixed 10 s renew deadline refused every lease of 10 s or less (the controller crashed at start).
    for (const leaseDurationSeconds of [1, 5, 6, 10, 11, 15, 60]) new LeaseLeaderElector({ lease, identity: "a", leaseDurationSeconds });

    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    const client = store.client();
    const elector = new LeaseLeaderElector({ lease: client, identity: "a", clock, leaseDurationSeconds: 6 });
    const t0 = clock.now().getTime();
    const events: string[] = [];
    const at = (what: string) => () => void events.push(`${what} ${clock.now().getTime() - t0}`);
    elector.run({ onStartedLeading: at("started"), onStoppedLeading: at("stopped") });
    const only: Candidate = { elector, client, events, signals: [] };
    await advance(clock, 100, [only]);
    assert.deepEqual(events, ["started 50"]);
    const writes = store.writes;
    await advance(clock, 4_000, [only]);
    assert.equal(store.writes - writes, 5, "renewed every 800 ms");
    client.hanging = true;
    const hungAt = clock.now().getTime() - t0;
    await advance(clock, 5_000, [only]);
    const stoppedAt = Number(events[1]?.split(" ")[1]);
    assert.ok(stoppedAt - hungAt <= 4_000, `stepped down within the 4 s renew deadline (after ${stoppedAt - hungAt} ms)`);
    client.hanging = false;
    await elector.stop();
  });

  it("rejects timings that could let two replicas lead at once", () => {
    const lease = new FakeLeaseStore().client();
    assert.throws(() => new LeaseLeaderElector({ lease, identity: "a", leaseDurationSeconds: 2, renewDeadlineMs: 2_000 }), /below the lease duration/);
    assert.throws(
      () => new LeaseLeaderElector({ lease, identity: "a", leaseDurationSeconds: 2, renewDeadlineMs: 1_000, retryPeriodMs: 1_000 }),
      /retryPeriodMs/,
    );
  });
});
