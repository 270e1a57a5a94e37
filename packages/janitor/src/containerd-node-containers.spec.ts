import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FsbError, NotFoundError } from "@fast-sandbox/api/core";
import { LABEL_MANAGED, LABEL_RESTORED_FROM, type ContainerdClient } from "@fast-sandbox/agent";
import { createContainerdNodeContainers } from "./containerd-node-containers.js";

interface FakeTask {
  /** What a SIGKILL to every process of the container reaches: none for a restored gVisor copy. */
  endsOnKillAll: boolean;
  exited: boolean;
}

/**
 * The few containerd calls removeTask makes, on tasks in memory. Tasks.Wait answers at once: a task
 * that has not exited times out as a real wait would after `taskExitTimeoutMs`.
 */
function fakeClient(containers: Record<string, Record<string, string>>, tasks: Record<string, FakeTask>) {
  const kills: { containerId: string; signal: number; all: boolean }[] = [];
  const task = (containerId: string): FakeTask => {
    const found = tasks[containerId];
    if (!found) throw new NotFoundError(`task ${containerId} not found`);
    return found;
  };
  const client = {
    containers: {
      get: ({ id }: { id: string }) => {
        const labels = containers[id];
        if (!labels) return Promise.reject(new NotFoundError(`container ${id} not found`));
        return Promise.resolve({ container: { id, labels } });
      },
    },
    tasks: {
      get: ({ containerId }: { containerId: string }) => Promise.resolve({ process: task(containerId) }),
      kill: ({ containerId, signal, all }: { containerId: string; signal: number; all: boolean }) => {
        kills.push({ containerId, signal, all });
        const killed = task(containerId);
        if (!all || killed.endsOnKillAll) killed.exited = true;
        return Promise.resolve({});
      },
      wait: ({ containerId }: { containerId: string }) =>
        task(containerId).exited ? Promise.resolve({}) : Promise.reject(new FsbError("deadline_exceeded", "deadline exceeded")),
      delete: ({ containerId }: { containerId: string }) => {
        task(containerId);
        delete tasks[containerId];
        return Promise.resolve({});
      },
    },
    close: () => undefined,
  };
  return { client: client as unknown as ContainerdClient, kills };
}

describe("ContainerdNodeContainers.removeTask", () => {
  const managed = { [LABEL_MANAGED]: "true" };

  it("SIGKILLs every process of an ordinary sandbox's task, then deletes the task", async () => {
    const tasks = { box: { endsOnKillAll: true, exited: false } };
    const { client, kills } = fakeClient({ box: managed }, tasks);
    const node = createContainerdNodeContainers({ containerdNamespace: "ns", client });
    assert.equal(await node.removeTask("box"), true);
    assert.deepEqual(kills, [{ containerId: "box", signal: 9, all: true }]);
    assert.deepEqual(Object.keys(tasks), []);
  });

  it("SIGKILLs only process 1 of a gVisor copy restored from a checkpoint, which a signal to all its processes never reaches", async () => {
    const tasks = { copy: { endsOnKillAll: false, exited: false } };
    const { client, kills } = fakeClient({ copy: { ...managed, [LABEL_RESTORED_FROM]: "cp-1" } }, tasks);
    const node = createContainerdNodeContainers({ containerdNamespace: "ns", client });
    assert.equal(await node.removeTask("copy"), true);
    assert.deepEqual(kills, [{ containerId: "copy", signal: 9, all: false }]);
    assert.deepEqual(Object.keys(tasks), []);
  });

  it("says when the task outlives its SIGKILL, and leaves it", async () => {
    const tasks = { stuck: { endsOnKillAll: false, exited: false } };
    const { client } = fakeClient({ stuck: managed }, tasks);
    const node = createContainerdNodeContainers({ containerdNamespace: "ns", client, taskExitTimeoutMs: 5 });
    await assert.rejects(node.removeTask("stuck"), (error: unknown) => error instanceof FsbError && error.code === "deadline_exceeded");
    assert.deepEqual(Object.keys(tasks), ["stuck"]);
  });

  it("answers false for a container without a task", async () => {
    const { client, kills } = fakeClient({ box: managed }, {});
    const node = createContainerdNodeContainers({ containerdNamespace: "ns", client });
    assert.equal(await node.removeTask("box"), false);
    assert.deepEqual(kills, []);
  });
});

describe("ContainerdNodeContainers.get", () => {
  it("answers the managed container as it is now, and undefined for one gone or not managed", async () => {
    const { client } = fakeClient({ box: { [LABEL_MANAGED]: "true", a: "b" }, other: { a: "b" } }, {});
    const node = createContainerdNodeContainers({ containerdNamespace: "ns", client });
    assert.deepEqual((await node.get("box"))?.labels, { [LABEL_MANAGED]: "true", a: "b" });
    assert.equal((await node.get("box"))?.id, "box");
    assert.equal(await node.get("other"), undefined);
    assert.equal(await node.get("gone"), undefined);
  });
});
