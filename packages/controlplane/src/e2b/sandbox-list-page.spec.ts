import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { pageOf, type Listed } from "./sandbox-list-page.js";

/** A small seeded generator (mulberry32), so a failure can be replayed from its seed. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function items(next: () => number, count: number): Listed[] {
  // Few distinct start times, so ties (broken by sandbox id) are common.
  return Array.from({ length: count }, (_, index) => ({
    startedAt: new Date(Date.UTC(2026, 0, 1) + Math.floor(next() * 5) * 1000).toISOString(),
    sandboxID: `sb${index.toString().padStart(3, "0")}${Math.floor(next() * 1e6)}`,
  }));
}

/** The naive model: every item, sorted by start time then id, reversed for desc. */
function modelOrder(all: readonly Listed[], order: "asc" | "desc"): string[] {
  const sorted = [...all].sort((a, b) => Date.parse(a.startedAt) - Date.parse(b.startedAt) || (a.sandboxID < b.sandboxID ? -1 : 1));
  return (order === "asc" ? sorted : sorted.reverse()).map((item) => item.sandboxID);
}

describe("the pages of GET /v2/sandboxes", () => {
  it("walked with the cursor, give every sandbox exactly once, in the model's order (randomized, both orders, any limit)", () => {
    for (let seed = 1; seed <= 300; seed++) {
      const next = random(seed);
      const all = items(next, Math.floor(next() * 40));
      const order = next() < 0.5 ? "asc" : "desc";
      const limit = 1 + Math.floor(next() * 12);
      const seen: string[] = [];
      let nextToken: string | undefined;
      let pages = 0;
      do {
        const page = pageOf(all, { order, limit, nextToken });
        assert.ok(page.items.length <= limit, `seed ${seed}: a page holds at most limit`);
        assert.ok(page.items.length > 0 || all.length === 0, `seed ${seed}: no empty page before the end`);
        seen.push(...page.items.map((item) => item.sandboxID));
        nextToken = page.nextToken;
        assert.ok(++pages <= all.length + 1, `seed ${seed}: the walk ends`);
      } while (nextToken);
      assert.deepEqual(seen, modelOrder(all, order), `seed ${seed}`);
    }
  });

  it("a sandbox created or deleted between two pages shifts nothing: the next page starts after the last one seen", () => {
    const base = items(random(7), 10);
    const first = pageOf(base, { order: "desc", limit: 4 });
    const removed = first.items[1]?.sandboxID;
    const changed = [...base.filter((item) => item.sandboxID !== removed), { startedAt: new Date(Date.UTC(2030, 0, 1)).toISOString(), sandboxID: "newest" }];
    const rest: string[] = [];
    let nextToken = first.nextToken;
    while (nextToken) {
      const page = pageOf(changed, { order: "desc", limit: 4, nextToken });
      rest.push(...page.items.map((item) => item.sandboxID));
      nextToken = page.nextToken;
    }
    assert.deepEqual(rest, modelOrder(base, "desc").slice(4), "neither the deleted nor the new sandbox moved the rest");
  });

  it("has no cursor on the last page, also when the last page is exactly full", () => {
    const all = items(random(3), 6);
    assert.equal(pageOf(all, { order: "asc", limit: 6 }).nextToken, undefined);
    assert.ok(pageOf(all, { order: "asc", limit: 5 }).nextToken);
    assert.deepEqual(pageOf([], { order: "asc", limit: 5 }), { items: [], nextToken: undefined });
  });

  it("refuses a cursor it did not issue", () => {
    for (const nextToken of ["garbage", Buffer.from("[1]").toString("base64url"), Buffer.from('["x","y"]').toString("base64url")]) {
      assert.throws(
        () => pageOf([], { order: "asc", limit: 5, nextToken }),
        (error: unknown) => error instanceof ValidationError && error.field === "nextToken" && /X-Next-Token header of the previous page/.test(error.message),
      );
    }
  });
});
