import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decideLease, leaseExpiresAt, releasedLease } from "./lease-decision.js";

const t0 = new Date("2026-01-01T00:00:00.000Z");
const at = (seconds: number) => new Date(t0.getTime() + seconds * 1000);
const me = { identity: "replica-a", leaseDurationSeconds: 15 };

describe("decideLease", () => {
  it("creates an absent lease held by the candidate, with no transition yet", () => {
    assert.deepEqual(decideLease(undefined, { ...me, now: t0 }), {
      action: "acquire",
      spec: { holderIdentity: "replica-a", leaseDurationSeconds: 15, acquireTime: t0, renewTime: t0, leaseTransitions: 0 },
    });
  });

  it("renews its own lease: a new renewTime, the acquireTime and transitions kept", () => {
    const held = { holderIdentity: "replica-a", leaseDurationSeconds: 15, acquireTime: t0, renewTime: at(2), leaseTransitions: 3 };
    assert.deepEqual(decideLease(held, { ...me, now: at(4) }), { action: "renew", spec: { ...held, renewTime: at(4) } });
  });

  it("waits while another holder's renewTime + duration lies ahead, until the last millisecond", () => {
    const held = { holderIdentity: "replica-b", leaseDurationSeconds: 15, acquireTime: t0, renewTime: at(10) };
    assert.deepEqual(decideLease(held, { ...me, now: at(24.999) }), { action: "wait", holderIdentity: "replica-b", expiresAt: at(25) });
  });

  it("judges another holder's lease from how long ago it was first seen as it is, on the candidate's own monotonic clock (not the holder's renewTime)", () => {
    // The holder's clock runs 30 s behind: its renewTime is long past on ours, yet it renewed just now.
    const held = { holderIdentity: "replica-b", leaseDurationSeconds: 15, acquireTime: t0, renewTime: t0 };
    assert.deepEqual(decideLease(held, { ...me, now: at(30), observedForMs: 1_000 }), { action: "wait", holderIdentity: "replica-b", expiresAt: at(44) });
    assert.equal(decideLease(held, { ...me, now: at(44), observedForMs: 15_000 }).action, "acquire");
    // Its clock running ahead does not make it last longer either.
    const ahead = { ...held, renewTime: at(600) };
    assert.equal(decideLease(ahead, { ...me, now: at(45), observedForMs: 15_000 }).action, "acquire");
    // Nor does this candidate's wall clock jumping ahead make it expire: only the time elapsed since it was seen counts.
    assert.equal(decideLease(held, { ...me, now: at(3_600), observedForMs: 1_000 }).action, "wait");
  });

  it("takes an expired lease and counts the transition", () => {
    const held = { holderIdentity: "replica-b", leaseDurationSeconds: 15, acquireTime: t0, renewTime: at(10), leaseTransitions: 2 };
    assert.deepEqual(decideLease(held, { ...me, now: at(25) }), {
      action: "acquire",
      spec: { holderIdentity: "replica-a", leaseDurationSeconds: 15, acquireTime: at(25), renewTime: at(25), leaseTransitions: 3 },
    });
  });

  it("takes a released lease at once, however recent its renewTime", () => {
    const released = releasedLease({ holderIdentity: "replica-b", leaseDurationSeconds: 15, renewTime: at(10), leaseTransitions: 1 }, at(11));
    const decision = decideLease(released, { ...me, now: at(11) });
    assert.equal(decision.action, "acquire");
    assert.equal(decision.action === "acquire" && decision.spec.leaseTransitions, 2);
  });

  it("treats a holder that never renewed (no times) as expired rather than blocking forever", () => {
    assert.equal(decideLease({ holderIdentity: "replica-b" }, { ...me, now: t0 }).action, "acquire");
  });
});

describe("releasedLease and leaseExpiresAt", () => {
  it("a released lease has no holder and keeps the transition count", () => {
    assert.deepEqual(releasedLease({ holderIdentity: "replica-a", leaseDurationSeconds: 15, renewTime: t0, leaseTransitions: 4 }, at(1)), {
      leaseDurationSeconds: 1,
      acquireTime: at(1),
      renewTime: at(1),
      leaseTransitions: 4,
    });
  });

  it("expiry runs from the renewTime, else the acquireTime; unknown without a duration", () => {
    assert.deepEqual(leaseExpiresAt({ leaseDurationSeconds: 5, acquireTime: t0, renewTime: at(3) }), at(8));
    assert.deepEqual(leaseExpiresAt({ leaseDurationSeconds: 5, acquireTime: t0 }), at(5));
    assert.equal(leaseExpiresAt({ renewTime: t0 }), undefined);
  });
});
