import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, type Sandbox } from "@fast-sandbox/api";
import { pino } from "pino";
import { FakeClock } from "../controller/clock.js";
import { Informer } from "../controller/informer.js";
import { MemoryResourceStore } from "../store/memory-resource-store.js";
import { AgentStartTimes, CreateRates, DEFAULT_AGENT_START_SECONDS, flowBuffer } from "./create-rate.js";

describe("flowBuffer", () => {
  it("is the creates expected while an agent starts, rounded up", () => {
    assert.equal(flowBuffer(0, 5), 0);
    assert.equal(flowBuffer(1 / 60, 1), 1, "any create in the window asks for a slot");
    assert.equal(flowBuffer(0.5, 4), 2, "exactly 2 stays 2");
    assert.equal(flowBuffer(0.5, 4.2), 3);
    assert.equal(flowBuffer(10, 0.25), 3);
  });
});

describe("CreateRates", () => {
  it("counts a pool's creates over the sliding window, per pool, and forgets them as the window passes", () => {
    const clock = new FakeClock();
    const rates = new CreateRates({ clock, windowMs: 10_000 });
    const now = () => clock.now().getTime();
    rates.record("team", "py", now());
    rates.record("team", "py", now() - 4_000);
    rates.record("team", "go", now());
    rates.record("team", "py", now() - 10_000); // already out of the window
    assert.equal(rates.perSecond("team", "py"), 0.2);
    assert.equal(rates.perSecond("team", "go"), 0.1);
    assert.equal(rates.perSecond("other", "py"), 0);
    clock.advance(6_000);
    assert.equal(rates.perSecond("team", "py"), 0.1, "the create from 10 s ago left the window");
    clock.advance(4_000);
    assert.equal(rates.perSecond("team", "py"), 0);
  });

  it("counts the sandboxes a Sandbox informer adds, by their creation time and pool", async () => {
    const clock = new FakeClock(new Date());
    const store = new MemoryResourceStore({ clock });
    const informer = new Informer({ store, kind: "Sandbox", logger: pino({ level: "silent" }), clock });
    const rates = new CreateRates({ clock, windowMs: 60_000 });
    const sandbox = (name: string, poolRef: string): Sandbox => ({
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: { name, namespace: "team" },
      spec: { image: "busybox", poolRef },
    });
    await store.create("Sandbox", sandbox("before", "py"));
    rates.follow(informer);
    informer.start();
    try {
      await informer.waitForSync();
      await store.create("Sandbox", sandbox("a", "py"));
      await store.create("Sandbox", sandbox("b", "go"));
      // The store's watch delivers on a later macrotask.
      for (let i = 0; i < 200 && rates.perSecond("team", "py") * 60 < 2; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(rates.perSecond("team", "py") * 60, 2, "the one listed at the start (created just now) and the one added");
      assert.equal(rates.perSecond("team", "go") * 60, 1);
    } finally {
      informer.stop();
      await store.close();
    }
  });
});

describe("AgentStartTimes", () => {
  it("takes the default until a start is measured, then a moving average per pool", () => {
    const times = new AgentStartTimes();
    assert.equal(times.of("team/py"), DEFAULT_AGENT_START_SECONDS);
    times.sample("team/py", 2_000);
    assert.equal(times.of("team/py"), 2);
    times.sample("team/py", 4_000);
    assert.equal(times.of("team/py"), 3);
    assert.equal(times.of("team/go"), DEFAULT_AGENT_START_SECONDS);
    times.forget("team/py");
    assert.equal(times.of("team/py"), DEFAULT_AGENT_START_SECONDS);
  });
});
