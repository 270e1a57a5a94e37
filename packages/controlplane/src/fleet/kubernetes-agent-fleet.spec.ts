import assert from "node:assert/strict";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { KubeConfig } from "@kubernetes/client-node";
import { testKubeConfig } from "../store/kube-config.fixture.js";
import { AGENT_POD_DEFAULTS } from "./agent-pod.js";
import { KubernetesAgentFleet } from "./kubernetes-agent-fleet.js";

/** A Pod of a pool, as the API server lists it. */
function agentPod(name: string, podIP: string) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: "default", uid: `uid-${name}`, resourceVersion: "5", labels: { "fast-sandbox.io/pool": "python" } },
    spec: { containers: [{ name: "agent", image: "agent" }] },
    status: { phase: "Running", podIP, conditions: [{ type: "Ready", status: "True" }] },
  };
}

/**
 * An "API server" on loopback: a list of Pods answers one agent Pod at resourceVersion 7; a watch is
 * answered with 200 and its headers (and what `onWatch` writes), then never a byte more nor closed.
 */
async function silentApiServer(onWatch?: (response: ServerResponse) => void, options: { firstWatchUnanswered?: boolean } = {}) {
  const lists: URLSearchParams[] = [];
  const watches: URLSearchParams[] = [];
  /** Resolves when the response of each watch closes (the client let it go). */
  const closed: Promise<void>[] = [];
  const server = createServer((request, response) => {
    const query = new URL(request.url ?? "/", "http://x").searchParams;
    if (query.get("watch") !== "true") {
      lists.push(query);
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ apiVersion: "v1", kind: "PodList", metadata: { resourceVersion: "7" }, items: [agentPod("python-agent-0", "10.1.0.4")] }));
      return;
    }
    watches.push(query);
    closed.push(new Promise((resolve) => response.on("close", () => resolve())));
    // Accepted, never answered: not even the headers.
    if (options.firstWatchUnanswered && watches.length === 1) return;
    response.writeHead(200, { "content-type": "application/json" });
    response.flushHeaders();
    onWatch?.(response);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const kubeConfig = testKubeConfig(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  const close = () => {
    server.closeAllConnections();
    server.close();
  };
  return { kubeConfig, lists, watches, closed, close };
}

async function until(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `${what} within ${timeoutMs} ms`);
    await sleep(10);
  }
}

/** A fleet whose Pod watches last a second (and 100 ms of grace), logging nothing. */
function quickWatchFleet(kubeConfig: KubeConfig): KubernetesAgentFleet {
  const logger = { info: () => undefined, warn: () => undefined, error: () => undefined };
  return new KubernetesAgentFleet({ kubeConfig, logger: logger as never, watchTimeoutSeconds: 1, watchGraceMs: 100 });
}

describe("KubernetesAgentFleet's Pod watch", () => {
  test("on a connection gone silent, ends the watch at its deadline and watches again from the version it had, without a relist or an error", async () => {
    const { kubeConfig, lists, watches, close } = await silentApiServer();
    const warnings: unknown[] = [];
    const logger = { info: () => undefined, warn: (...args: unknown[]) => warnings.push(args), error: (...args: unknown[]) => warnings.push(args) };
    const fleet = new KubernetesAgentFleet({ kubeConfig, logger: logger as never, watchTimeoutSeconds: 1, watchGraceMs: 100 });
    try {
      await fleet.start();
      assert.deepEqual(
        fleet.listAgents().map((agent) => [agent.name, agent.endpoint]),
        [["python-agent-0", `10.1.0.4:${AGENT_POD_DEFAULTS.port}`]],
      );
      // The server never closes the first watch: without a deadline of ours, no second one would come.
      await until("a second watch", () => watches.length >= 2);
      assert.equal(lists.length, 1, "no relist");
      for (const query of watches) {
        assert.equal(query.get("resourceVersion"), "7");
        assert.equal(query.get("timeoutSeconds"), "1");
        assert.equal(query.get("allowWatchBookmarks"), "true");
        assert.equal(query.get("labelSelector"), "fast-sandbox.io/pool");
      }
      assert.deepEqual(warnings, []);
      assert.equal(fleet.listAgents().length, 1);
    } finally {
      await fleet.stop();
      close();
    }
  });

  test("a watch the server never answered is given up at its deadline, and stop() ends the watch that followed", async () => {
    const { kubeConfig, lists, watches, closed, close } = await silentApiServer(undefined, { firstWatchUnanswered: true });
    const fleet = quickWatchFleet(kubeConfig);
    try {
      await fleet.start();
      await until("a second watch", () => watches.length >= 2);
      assert.equal(lists.length, 1);
      assert.equal(watches[1]!.get("resourceVersion"), "7");
      await fleet.stop();
      // The informer's request is the second watch's, not the first's come late: stopping lets it go.
      const released = await Promise.race([closed[1]!.then(() => "closed"), sleep(5_000).then(() => "still open")]);
      assert.equal(released, "closed");
    } finally {
      await fleet.stop();
      close();
    }
  });

  test("a bookmark moves the version the next watch starts from", async () => {
    const bookmark = { type: "BOOKMARK", object: { apiVersion: "v1", kind: "Pod", metadata: { resourceVersion: "4242" } } };
    const { kubeConfig, lists, watches, close } = await silentApiServer((response) => response.write(`${JSON.stringify(bookmark)}\n`));
    const fleet = quickWatchFleet(kubeConfig);
    try {
      await fleet.start();
      await until("a second watch", () => watches.length >= 2);
      assert.equal(lists.length, 1);
      assert.equal(watches[0]!.get("resourceVersion"), "7");
      assert.equal(watches[1]!.get("resourceVersion"), "4242");
      assert.equal(fleet.listAgents().length, 1, "a bookmark is no event: the Pod stays");
    } finally {
      await fleet.stop();
      close();
    }
  });
});
