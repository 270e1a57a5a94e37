import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";
import { FakeClock } from "../controller/clock.js";
import { RecentImageUsage } from "./recent-image-usage.js";

const MINUTE = 60_000;

describe("RecentImageUsage", () => {
  let clock: FakeClock;
  let usage: RecentImageUsage;
  const at = (offsetMs: number) => new Date(clock.now().getTime() + offsetMs);
  const create = (image: string, times = 1, pool = "default") => {
    for (let i = 0; i < times; i++) usage.record("default", pool, image);
  };

  beforeEach(() => {
    clock = new FakeClock(new Date("2026-11-30T10:00:00Z"));
    usage = new RecentImageUsage({ clock });
  });

  it("needs an image to be created at least twice to be hot", () => {
    create("python:3.12");
    assert.deepEqual(usage.hotImages("default", "default"), []);
    create("python:3.12");
    assert.deepEqual(usage.hotImages("default", "default"), ["docker.io/library/python:3.12"]);
  });

  it("keeps the three most used images, most used first", () => {
    create("a", 5);
    create("b", 2);
    create("c", 4);
    create("d", 3);
    assert.deepEqual(usage.hotImages("default", "default"), ["docker.io/library/a:latest", "docker.io/library/c:latest", "docker.io/library/d:latest"]);
  });

  it("counts the forms of one reference as one image", () => {
    create("busybox");
    create("docker.io/library/busybox:latest");
    create("library/busybox:latest");
    assert.deepEqual(usage.hotImages("default", "default"), ["docker.io/library/busybox:latest"]);
  });

  it("breaks ties in favour of the image used most recently", () => {
    create("old", 2);
    clock.advance(MINUTE);
    create("new", 2);
    assert.deepEqual(usage.hotImages("default", "default"), ["docker.io/library/new:latest", "docker.io/library/old:latest"]);
  });

  it("forgets creates older than ten minutes", () => {
    create("a", 2);
    clock.advance(9 * MINUTE);
    create("b");
    assert.deepEqual(usage.hotImages("default", "default"), ["docker.io/library/a:latest"]);
    clock.advance(MINUTE + 1);
    // a's creates left the window; b has a single one in it.
    assert.deepEqual(usage.hotImages("default", "default"), []);
    create("b");
    assert.deepEqual(usage.hotImages("default", "default"), ["docker.io/library/b:latest"]);
  });

  it("ignores creates recorded with a time already outside the window (start-up replay)", () => {
    usage.record("default", "default", "a", at(-11 * MINUTE));
    usage.record("default", "default", "a", at(-10 * MINUTE));
    assert.deepEqual(usage.hotImages("default", "default"), []);
    usage.record("default", "default", "b", at(-3 * MINUTE));
    usage.record("default", "default", "b", at(-5 * MINUTE));
    assert.deepEqual(usage.hotImages("default", "default"), ["docker.io/library/b:latest"]);
    clock.advance(5 * MINUTE + 1);
    // The earlier create (recorded second, out of order) left the window first.
    assert.deepEqual(usage.hotImages("default", "default"), []);
  });

  it("keeps pools and namespaces apart, and forgets a deleted pool", () => {
    create("a", 2, "web");
    create("b", 2, "jobs");
    usage.record("team", "web", "c", at(0));
    usage.record("team", "web", "c", at(0));
    assert.deepEqual(usage.hotImages("default", "web"), ["docker.io/library/a:latest"]);
    assert.deepEqual(usage.hotImages("default", "jobs"), ["docker.io/library/b:latest"]);
    assert.deepEqual(usage.hotImages("team", "web"), ["docker.io/library/c:latest"]);
    usage.forgetPool("default", "web");
    assert.deepEqual(usage.hotImages("default", "web"), []);
  });

  it("honours its options", () => {
    usage = new RecentImageUsage({ clock, windowMs: MINUTE, maxHotImages: 1, minUses: 3 });
    create("a", 3);
    create("b", 4);
    assert.deepEqual(usage.hotImages("default", "default"), ["docker.io/library/b:latest"]);
    clock.advance(MINUTE);
    assert.deepEqual(usage.hotImages("default", "default"), []);
  });
});
