import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { V1ContainerState, V1Pod } from "@kubernetes/client-node";
import { podMayRunSince } from "./kubernetes-replica-liveness.js";

const AT = new Date("2026-12-06T12:00:05.300Z");

function pod(states: V1ContainerState[], phase = "Running"): V1Pod {
  return {
    metadata: { name: "controller-abc" },
    status: { phase, containerStatuses: states.map((state, index) => ({ name: `c${index}`, image: "i", imageID: "", ready: true, restartCount: 0, state })) },
  };
}

const running = (startedAt: string): V1ContainerState => ({ running: { startedAt: new Date(startedAt) } });

describe("podMayRunSince", () => {
  it("a container running since before the time, or within its second (times are whole seconds), may run a process of then", () => {
    assert.equal(podMayRunSince(pod([running("2026-12-06T11:59:00Z")]), AT), true);
    assert.equal(podMayRunSince(pod([running("2026-12-06T12:00:05Z")]), AT), true, "started in the same second: maybe before");
  });

  it("a container started in a later second runs a process of its own: nothing of then", () => {
    assert.equal(podMayRunSince(pod([running("2026-12-06T12:00:06Z")]), AT), false);
  });

  it("a container that does not run (crash-loop back-off, terminated, never started) has no process", () => {
    assert.equal(podMayRunSince(pod([{ waiting: { reason: "CrashLoopBackOff" } }]), AT), false);
    assert.equal(
      podMayRunSince(pod([{ terminated: { exitCode: 137, startedAt: new Date("2026-12-06T11:00:00Z"), finishedAt: new Date("2026-12-06T12:00:10Z") } }]), AT),
      false,
    );
    assert.equal(podMayRunSince(pod([{ waiting: { reason: "ContainerCreating" } }], "Pending"), AT), false);
    assert.equal(podMayRunSince({ metadata: { name: "unscheduled" }, status: { phase: "Pending" } }, AT), false);
  });

  it("one container of the Pod running since before is enough", () => {
    assert.equal(podMayRunSince(pod([running("2026-12-06T12:30:00Z"), running("2026-12-06T11:00:00Z")]), AT), true);
  });

  it("a Pod that ended has no process, whatever its last statuses say", () => {
    assert.equal(podMayRunSince(pod([running("2026-12-06T11:00:00Z")], "Failed"), AT), false);
    assert.equal(podMayRunSince(pod([running("2026-12-06T11:00:00Z")], "Succeeded"), AT), false);
  });

  it("a running container whose start time is unknown may run a process of then", () => {
    assert.equal(podMayRunSince(pod([{ running: {} }]), AT), true);
  });
});
