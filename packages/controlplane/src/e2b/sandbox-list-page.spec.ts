import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, ValidationError, type Sandbox } from "@fast-sandbox/api";
import { METADATA_ANNOTATION, TEMPLATE_ANNOTATION, listedSandboxOf, type E2bListedSandbox } from "./e2b-sandbox-view.js";
import { listKeyOf, pageOf, type Keyed } from "./sandbox-list-page.js";

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

interface Item {
  startedAt: string;
  sandboxID: string;
}

function items(next: () => number, count: number): Keyed<Item>[] {
  // Few distinct creation times, so ties (broken by name) are common; the start (of the current
  // instance) is any time since, which the order does not follow.
  return Array.from({ length: count }, (_, index) => {
    const createdAtMs = Date.UTC(2026, 0, 1) + Math.floor(next() * 5) * 1000;
    const item = {
      startedAt: new Date(createdAtMs + Math.floor(next() * 10) * 1000).toISOString(),
      sandboxID: `sb${index.toString().padStart(3, "0")}${Math.floor(next() * 1e6)}`,
    };
    return { item, key: { createdAt: new Date(createdAtMs).toISOString(), name: `sb-${Math.floor(next() * 1e6)}-${index}` } };
  });
}

/** The naive model: every item, sorted by creation then name, reversed for desc. */
function modelOrder(all: readonly Keyed<Item>[], order: "asc" | "desc"): string[] {
  const sorted = [...all].sort((a, b) => Date.parse(a.key.createdAt) - Date.parse(b.key.createdAt) || (a.key.name < b.key.name ? -1 : 1));
  return (order === "asc" ? sorted : sorted.reverse()).map((entry) => entry.item.sandboxID);
}

/** An E2B sandbox created `minute` minutes into the day and started (its current instance) at `startTime`; its E2B metadata names it. */
function e2bSandbox(name: string, minute: number, startTime: string, sandboxID = `${name}instance`): Sandbox {
  const created = new Date(Date.UTC(2026, 0, 2, 0, minute)).toISOString();
  return {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: {
      name,
      namespace: "default",
      creationTimestamp: created,
      annotations: { [TEMPLATE_ANNOTATION]: "base", [METADATA_ANNOTATION]: JSON.stringify({ name }) },
    },
    spec: { image: "busybox", poolRef: "default" },
    status: { phase: "Running", sandboxID, startTime },
  };
}

const RESOURCES = { cpuCount: 1, memoryMB: 512, diskSizeMB: 1024 };

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
    const newest = new Date(Date.UTC(2030, 0, 1)).toISOString();
    const changed = [
      ...base.filter((entry) => entry.item.sandboxID !== removed),
      { item: { startedAt: newest, sandboxID: "newest" }, key: { createdAt: newest, name: "newest" } },
    ];
    const rest: string[] = [];
    let nextToken = first.nextToken;
    while (nextToken) {
      const page = pageOf(changed, { order: "desc", limit: 4, nextToken });
      rest.push(...page.items.map((item) => item.sandboxID));
      nextToken = page.nextToken;
    }
    assert.deepEqual(rest, modelOrder(base, "desc").slice(4), "neither the deleted nor the new sandbox moved the rest");
  });

  it("a sandbox whose instance starts anew between two pages (a resume, reset or recreation) is listed exactly once, as is every other", () => {
    const names = ["s0", "s1", "s2", "s3", "s4"];
    const at = (minute: number) => new Date(Date.UTC(2026, 0, 2, 0, minute, 30)).toISOString();
    const before = names.map((name, minute) => e2bSandbox(name, minute, at(minute)));
    const list = (sandboxes: readonly Sandbox[]) =>
      sandboxes.map((sandbox) => ({ item: listedSandboxOf(sandbox, "0.4.0", RESOURCES), key: listKeyOf(sandbox) }));
    const nameOf = (item: E2bListedSandbox) => item.metadata.name;
    for (const [order, restarted] of [
      // Newest first: s1, not listed yet, starts anew and becomes the newest start of all.
      ["desc", "s1"],
      // Oldest first: s0, listed on the first page, starts anew and becomes the newest start of all.
      ["asc", "s0"],
    ] as const) {
      const first = pageOf(list(before), { order, limit: 2 });
      const seen = first.items.map(nameOf);
      const after = before.map((sandbox) =>
        sandbox.metadata.name === restarted ? e2bSandbox(restarted, names.indexOf(restarted), at(60), `${restarted}recreated`) : sandbox,
      );
      let nextToken = first.nextToken;
      while (nextToken) {
        const page = pageOf(list(after), { order, limit: 2, nextToken });
        seen.push(...page.items.map(nameOf));
        nextToken = page.nextToken;
      }
      assert.deepEqual(seen, order === "desc" ? [...names].reverse() : names, `${order}: each once, in order of creation`);
    }
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
