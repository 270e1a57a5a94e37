import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { UnavailableError } from "@fast-sandbox/api";
import { CachedAccessReview, type AccessDecision, type AccessReview, type KubernetesUser } from "./access-review.js";
import type { ResourceAccess } from "./call-access.js";

const ALICE: KubernetesUser = { username: "alice", groups: ["team", "system:authenticated"] };
const LIST_TEAM: ResourceAccess = { verb: "list", resource: "sandboxes", namespace: "team" };

/** Counts the reviews it answers; `fail` makes the next ones throw. */
class CountingReview implements AccessReview {
  tokens = 0;
  decisions = 0;
  fail = false;
  users = new Map<string, KubernetesUser>([["alice-token", ALICE]]);
  allowed = new Set<string>(["team"]);

  async authenticate(token: string): Promise<KubernetesUser | undefined> {
    this.tokens++;
    await Promise.resolve();
    if (this.fail) throw new Error("API server unreachable");
    return this.users.get(token);
  }

  async authorize(_user: KubernetesUser, access: ResourceAccess): Promise<AccessDecision> {
    this.decisions++;
    await Promise.resolve();
    if (this.fail) throw new Error("API server unreachable");
    return { allowed: this.allowed.has(access.namespace) };
  }
}

describe("CachedAccessReview", () => {
  it("keeps an accepted token's user and an allowed access for allowedTtlMs, then asks again", async () => {
    let now = 0;
    const inner = new CountingReview();
    const review = new CachedAccessReview(inner, { allowedTtlMs: 1000, deniedTtlMs: 100, now: () => now });
    assert.deepEqual(await review.authenticate("alice-token"), ALICE);
    assert.deepEqual(await review.authorize(ALICE, LIST_TEAM), { allowed: true });
    now = 999;
    await review.authenticate("alice-token");
    await review.authorize(ALICE, LIST_TEAM);
    assert.deepEqual([inner.tokens, inner.decisions], [1, 1]);
    now = 1001;
    await review.authenticate("alice-token");
    await review.authorize(ALICE, LIST_TEAM);
    assert.deepEqual([inner.tokens, inner.decisions], [2, 2]);
  });

  it("keeps a refused token and a denied access for the shorter deniedTtlMs: a new binding counts soon", async () => {
    let now = 0;
    const inner = new CountingReview();
    const review = new CachedAccessReview(inner, { allowedTtlMs: 1000, deniedTtlMs: 100, now: () => now });
    const other: ResourceAccess = { ...LIST_TEAM, namespace: "other" };
    assert.equal(await review.authenticate("bob-token"), undefined);
    assert.deepEqual(await review.authorize(ALICE, other), { allowed: false });
    inner.users.set("bob-token", { username: "bob", groups: [] });
    inner.allowed.add("other");
    now = 50;
    assert.equal(await review.authenticate("bob-token"), undefined);
    assert.deepEqual(await review.authorize(ALICE, other), { allowed: false });
    now = 101;
    assert.equal((await review.authenticate("bob-token"))?.username, "bob");
    assert.deepEqual(await review.authorize(ALICE, other), { allowed: true });
  });

  it("asks once for concurrent questions, keeps no failure, and tells users, groups and accesses apart", async () => {
    const inner = new CountingReview();
    const review = new CachedAccessReview(inner);
    await Promise.all([review.authenticate("alice-token"), review.authenticate("alice-token"), review.authenticate("alice-token")]);
    assert.equal(inner.tokens, 1);

    inner.fail = true;
    await assert.rejects(review.authorize(ALICE, LIST_TEAM), /unreachable/);
    inner.fail = false;
    assert.deepEqual(await review.authorize(ALICE, LIST_TEAM), { allowed: true });
    assert.equal(inner.decisions, 2);

    await review.authorize({ ...ALICE, groups: [...ALICE.groups].reverse() }, LIST_TEAM);
    assert.equal(inner.decisions, 2, "the same groups in another order are the same user");
    await review.authorize({ ...ALICE, groups: ["system:authenticated"] }, LIST_TEAM);
    await review.authorize({ ...ALICE, username: "mallory" }, LIST_TEAM);
    await review.authorize(ALICE, { ...LIST_TEAM, verb: "create" });
    await review.authorize(ALICE, { ...LIST_TEAM, subresource: "exec" });
    assert.equal(inner.decisions, 6);
  });

  it("keeps at most maxEntries, dropping the oldest", async () => {
    const inner = new CountingReview();
    for (const token of ["a", "b", "c"]) inner.users.set(token, { username: token, groups: [] });
    const review = new CachedAccessReview(inner, { maxEntries: 2 });
    for (const token of ["a", "b", "c"]) await review.authenticate(token);
    await review.authenticate("c");
    await review.authenticate("b");
    assert.equal(inner.tokens, 3);
    await review.authenticate("a");
    assert.equal(inner.tokens, 4);
  });

  it("keeps refused tokens apart, a tenth as many: a flood of strangers never pushes out the users", async () => {
    const inner = new CountingReview();
    const review = new CachedAccessReview(inner, { maxEntries: 20 });
    await review.authenticate("alice-token");
    for (let i = 0; i < 100; i++) assert.equal(await review.authenticate(`stranger-${i}`), undefined);
    assert.equal(inner.tokens, 101);
    assert.deepEqual(await review.authenticate("alice-token"), ALICE);
    assert.equal(inner.tokens, 101, "alice's entry stayed");
    // The last two strangers are still known; older ones were dropped (2 = 20 / 10).
    await review.authenticate("stranger-99");
    await review.authenticate("stranger-98");
    assert.equal(inner.tokens, 101);
    await review.authenticate("stranger-0");
    assert.equal(inner.tokens, 102);
  });

  it("reviews at most maxTokenReviewsInFlight new tokens at once, refusing more at once; known users still pass", async () => {
    const inner = new CountingReview();
    const authenticate = inner.authenticate.bind(inner);
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    inner.authenticate = async (token) => {
      if (token.startsWith("slow")) await gate;
      return authenticate(token);
    };
    const review = new CachedAccessReview(inner, { maxTokenReviewsInFlight: 2 });
    await review.authenticate("alice-token");
    const slow = [review.authenticate("slow-1"), review.authenticate("slow-2")];
    await assert.rejects(review.authenticate("slow-3"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.match(error.message, /2 reviews of new tokens are in flight already/);
      return true;
    });
    assert.deepEqual(await review.authenticate("alice-token"), ALICE);
    release();
    assert.deepEqual(await Promise.all(slow), [undefined, undefined]);
    assert.equal(await review.authenticate("slow-3"), undefined, "a slot is free again");
  });

  it("gives up on a review that does not answer within reviewTimeoutMs, and keeps nothing of it", async () => {
    let hang = true;
    const inner = new CountingReview();
    const authenticate = inner.authenticate.bind(inner);
    inner.authenticate = (token) => (hang ? new Promise(() => undefined) : authenticate(token));
    const review = new CachedAccessReview(inner, { reviewTimeoutMs: 50 });
    await assert.rejects(review.authenticate("alice-token"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.match(error.message, /did not answer the review within 50 ms/);
      return true;
    });
    hang = false;
    assert.deepEqual(await review.authenticate("alice-token"), ALICE);
  });
});
