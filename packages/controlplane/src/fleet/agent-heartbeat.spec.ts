import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BusyError, UnavailableError } from "@fast-sandbox/api";
import type { AgentClient, AgentStatus } from "../agent-client/agent-client.js";
import { FakeClock } from "../controller/clock.js";
import { AgentHeartbeat, heartbeatDeadlineMs, MIN_HEARTBEAT_DEADLINE_MS } from "./agent-heartbeat.js";

/** A client whose Status calls the test answers one by one. */
class HeldClient {
  readonly calls: { deadlineMs: number | undefined; resolve(status: AgentStatus): void; reject(error: unknown): void }[] = [];
  status(deadlineMs?: number): Promise<AgentStatus> {
    return new Promise((resolve, reject) => this.calls.push({ deadlineMs, resolve, reject }));
  }
  asClient(): AgentClient {
    return this as unknown as AgentClient;
  }
}

const STATUS = { nodeName: "host-1", images: [] } as unknown as AgentStatus;
const settle = () => new Promise((resolve) => setImmediate(resolve));

function heartbeat(clock: FakeClock, client: () => HeldClient | undefined, intervalMs = 300) {
  const seen: string[] = [];
  const beat = new AgentHeartbeat({
    clock,
    intervalMs,
    client: () => client()?.asClient(),
    onAnswer: () => seen.push("answer"),
    onBusy: () => seen.push("busy"),
    onMissed: (consecutive) => seen.push(`missed ${consecutive}`),
  });
  return { beat, seen };
}

describe("AgentHeartbeat", () => {
  it("gives each call at least a second, however short the interval", () => {
    assert.equal(heartbeatDeadlineMs(300), MIN_HEARTBEAT_DEADLINE_MS);
    assert.equal(heartbeatDeadlineMs(2_000), 2_000);
    const clock = new FakeClock();
    const client = new HeldClient();
    const { beat } = heartbeat(clock, () => client, 300);
    beat.start();
    clock.advance(300);
    assert.equal(client.calls.length, 1);
    assert.equal(client.calls[0]?.deadlineMs, 1_000);
    beat.stop();
  });

  it("beats first one interval after start, or at once with beatNow", () => {
    const clock = new FakeClock();
    const client = new HeldClient();
    const { beat } = heartbeat(clock, () => client);
    beat.start();
    assert.equal(client.calls.length, 0, "no beat at start");
    clock.advance(300);
    assert.equal(client.calls.length, 1, "the first beat after one interval");
    const eager = new HeldClient();
    const { beat: beatNow } = heartbeat(clock, () => eager);
    beatNow.start({ beatNow: true });
    assert.equal(eager.calls.length, 1, "a beat at start");
    clock.advance(300);
    assert.equal(eager.calls.length, 1, "none beside the one in flight");
    beat.stop();
    beatNow.stop();
  });

  it("sends no second call while one is in flight: a slow answer is one beat, not three misses", async () => {
    const clock = new FakeClock();
    const client = new HeldClient();
    const { beat, seen } = heartbeat(clock, () => client);
    beat.start();
    clock.advance(300);
    clock.advance(300);
    clock.advance(300);
    assert.equal(client.calls.length, 1, "one call for three intervals");
    client.calls[0]?.resolve(STATUS);
    await settle();
    clock.advance(300);
    assert.equal(client.calls.length, 2, "the next beat once it answered");
    assert.deepEqual(seen, ["answer"]);
    beat.stop();
  });

  it("counts consecutive misses; an answer or a busy answer starts the count over", async () => {
    const clock = new FakeClock();
    const client = new HeldClient();
    const { beat, seen } = heartbeat(clock, () => client);
    beat.start();
    const next = async (answer: (call: HeldClient["calls"][number]) => void) => {
      clock.advance(300);
      const call = client.calls.at(-1);
      assert.ok(call);
      answer(call);
      await settle();
    };
    const down = new UnavailableError("connect ECONNREFUSED");
    await next((call) => call.reject(down));
    await next((call) => call.reject(down));
    await next((call) => call.reject(new BusyError("containerd is slow")));
    await next((call) => call.reject(down));
    await next((call) => call.resolve(STATUS));
    await next((call) => call.reject(down));
    await next((call) => call.reject(down));
    await next((call) => call.reject(down));
    assert.deepEqual(seen, ["missed 1", "missed 2", "busy", "missed 1", "answer", "missed 1", "missed 2", "missed 3"]);
    beat.stop();
  });

  it("ignores what a replaced client or a stopped heartbeat answers", async () => {
    const clock = new FakeClock();
    const first = new HeldClient();
    let current: HeldClient | undefined = first;
    const { beat, seen } = heartbeat(clock, () => current);
    beat.start();
    clock.advance(300);
    // The agent restarts: a new client, the heartbeat started again for it.
    const second = new HeldClient();
    current = second;
    beat.start();
    first.calls[0]?.reject(new UnavailableError("the old process is gone"));
    await settle();
    assert.deepEqual(seen, [], "the old process's failure is not the new one's miss");
    clock.advance(300);
    assert.equal(second.calls.length, 1);
    beat.stop();
    second.calls[0]?.resolve(STATUS);
    await settle();
    assert.deepEqual(seen, [], "nothing after stop()");
    clock.advance(3_000);
    assert.equal(second.calls.length, 1, "no beat after stop()");
  });
});
