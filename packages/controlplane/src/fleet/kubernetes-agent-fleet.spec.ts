import assert from "node:assert/strict";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { KubeConfig } from "@kubernetes/client-node";
import { FakeClock } from "../controller/clock.js";
import { testKubeConfig } from "../store/kube-config.fixture.js";
import { FsbError, PermissionDeniedError, UnavailableError, type SandboxPool } from "@fast-sandbox/api";
import { AgentsNotStoppedError, type AgentFleetEvent } from "./agent-fleet.js";
import { AGENT_POD_DEFAULTS } from "./agent-pod.js";
import { AgentTemplateNotAllowedError } from "./agent-template-policy.js";
import { KubernetesAgentFleet } from "./kubernetes-agent-fleet.js";

/** The owner reference of the agent Pods of the pool `python` (agent-pod.ts). */
const POOL_OWNER = {
  apiVersion: "sandbox.fast.io/v1alpha1",
  kind: "SandboxPool",
  name: "python",
  uid: "uid-python",
  controller: true,
  blockOwnerDeletion: true,
};

/** A Pod of a pool, as the API server lists it. */
function agentPod(name: string, podIP: string): { metadata: Record<string, unknown> } & Record<string, unknown> {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      namespace: "default",
      uid: `uid-${name}`,
      resourceVersion: "5",
      labels: { "fast-sandbox.io/pool": "python" },
      ownerReferences: [POOL_OWNER],
    },
    spec: { containers: [{ name: "agent", image: "agent" }] },
    status: { phase: "Running", podIP, conditions: [{ type: "Ready", status: "True" }] },
  };
}

interface ApiServerOptions {
  firstWatchUnanswered?: boolean;
  /** The Pods a list answers. @default one agent Pod, python-agent-0 */
  pods?: unknown[];
  /** How many lists fail (500) before one succeeds. @default 0 */
  failedLists?: number;
  /** The Pods whose deletion fails (500). @default none */
  undeletable?: string[];
  /** How many lists are taken and never answered (a server that died) before one is. @default 0 */
  unansweredLists?: number;
  /** Creations and deletions of Pods are taken and never answered. @default false */
  unansweredWrites?: boolean;
  /** The HTTP status the n-th watch (from 1) fails with; undefined: it is answered. @default none fails */
  watchFailure?: (n: number) => number | undefined;
}

/** A Kubernetes `Status` answer. */
function sendStatus(response: ServerResponse, code: number, message: string): void {
  response.writeHead(code, { "content-type": "application/json" });
  response.end(JSON.stringify({ apiVersion: "v1", kind: "Status", status: "Failure", code, message }));
}

/**
 * An "API server" on loopback: a list of Pods answers one agent Pod at resourceVersion 7; a watch is
 * answered with 200 and its headers (and what `onWatch` writes), then never a byte more nor closed.
 * A Pod's deletion succeeds unless `undeletable` names it.
 */
async function silentApiServer(onWatch?: (response: ServerResponse) => void, options: ApiServerOptions = {}) {
  const lists: URLSearchParams[] = [];
  const watches: URLSearchParams[] = [];
  const deletes: string[] = [];
  /** The paths Pods were created at (answered with a 500). */
  const creates: string[] = [];
  /** Resolves when the response of each watch closes (the client let it go). */
  const closed: Promise<void>[] = [];
  const server = createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://x");
    const query = url.searchParams;
    if (options.unansweredWrites && (request.method === "DELETE" || request.method === "POST")) {
      deletes.push(`${request.method} ${url.pathname}`);
      return;
    }
    if (request.method === "POST") {
      creates.push(url.pathname);
      return sendStatus(response, 500, "creations are counted, not made, here");
    }
    if (request.method === "DELETE") {
      const name = url.pathname.split("/").at(-1) ?? "";
      deletes.push(name);
      if (options.undeletable?.includes(name)) return sendStatus(response, 500, "etcdserver: request timed out");
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ apiVersion: "v1", kind: "Pod", metadata: { name, namespace: "default" } }));
      return;
    }
    if (query.get("watch") !== "true") {
      lists.push(query);
      if (lists.length <= (options.unansweredLists ?? 0)) return;
      if (lists.length <= (options.failedLists ?? 0)) return sendStatus(response, 500, "etcdserver: request timed out");
      const items = options.pods ?? [agentPod("python-agent-0", "10.1.0.4")];
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ apiVersion: "v1", kind: "PodList", metadata: { resourceVersion: "7" }, items }));
      return;
    }
    watches.push(query);
    closed.push(new Promise((resolve) => response.on("close", () => resolve())));
    const failure = options.watchFailure?.(watches.length);
    if (failure !== undefined) return sendStatus(response, failure, "the watch failed");
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
  return { kubeConfig, lists, watches, deletes, creates, closed, close };
}

async function until(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `${what} within ${timeoutMs} ms`);
    await sleep(10);
  }
}

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

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

describe("KubernetesAgentFleet's Pod watch failing", () => {
  test("is tried again ever later (up to maxRestartDelayMs), and from the first delay again after a watch that worked", async () => {
    let working: ServerResponse | undefined;
    // Watches 1–4 fail, the 5th works (until the server ends it), the 6th fails.
    const { kubeConfig, watches, close } = await silentApiServer((response) => (working = response), {
      watchFailure: (n) => (n === 5 ? undefined : 500),
    });
    const clock = new FakeClock();
    const fleet = new KubernetesAgentFleet({
      kubeConfig,
      logger: quiet as never,
      clock,
      restartDelayMs: 1000,
      maxRestartDelayMs: 4000,
      watchTimeoutSeconds: 60,
    });
    try {
      await fleet.start();
      const delays: number[] = [];
      const nextDelay = async (watch: number) => {
        await until(`watch ${watch} and the wait after it`, () => watches.length === watch && clock.pendingTimers === 1);
        const delayMs = (clock.nextTimerAt()?.getTime() ?? Number.NaN) - clock.now().getTime();
        delays.push(delayMs);
        return delayMs;
      };
      for (let watch = 1; watch <= 4; watch++) clock.advance(await nextDelay(watch));
      await until("watch 5, which works", () => watches.length === 5 && working !== undefined);
      clock.advance(4000);
      // The server ends the watch (no error: the informer watches again at once); the next one fails.
      working?.end();
      await nextDelay(6);
      assert.deepEqual(delays, [1000, 2000, 4000, 4000, 1000]);
      assert.equal(fleet.listAgents().length, 1, "the agents stay known meanwhile");
    } finally {
      await fleet.stop();
      close();
    }
  });
});

describe("KubernetesAgentFleet's calls to an API server that takes them and never answers", () => {
  test("a first list never answered is given up after listTimeoutMs and tried again", async () => {
    const { kubeConfig, lists, close } = await silentApiServer(undefined, { unansweredLists: 1 });
    const warnings: unknown[][] = [];
    const logger = { ...quiet, warn: (...args: unknown[]) => warnings.push(args) };
    const fleet = new KubernetesAgentFleet({ kubeConfig, logger: logger as never, restartDelayMs: 10, listTimeoutMs: 200, watchTimeoutSeconds: 60 });
    try {
      const started = await Promise.race([fleet.start().then(() => "started"), sleep(10_000).then(() => "still listing after 10 s")]);
      assert.equal(started, "started");
      assert.equal(lists.length, 2);
      assert.deepEqual(
        fleet.listAgents().map((agent) => agent.name),
        ["python-agent-0"],
      );
      const err = (warnings[0]?.[0] as { err?: unknown } | undefined)?.err;
      assert.ok(err instanceof UnavailableError, `the warning carries an UnavailableError, not ${String(err)}`);
      assert.equal(err.message, "cannot list the agent Pods: the Kubernetes API server did not answer within 200 ms");
    } finally {
      await fleet.stop();
      close();
    }
  });

  test("a Pod's creation or deletion never answered fails with UnavailableError after requestTimeoutMs", async () => {
    const { kubeConfig, deletes, close } = await silentApiServer(undefined, { unansweredWrites: true });
    const fleet = new KubernetesAgentFleet({ kubeConfig, logger: quiet as never, requestTimeoutMs: 200 });
    const pool = {
      apiVersion: "sandbox.fast.io/v1alpha1",
      kind: "SandboxPool",
      metadata: { name: "python", namespace: "default", uid: "uid-python" },
      spec: { capacity: { poolMin: 0, poolMax: 1 }, maxSandboxesPerPod: 1, image: "python:3.12" },
    } as SandboxPool;
    try {
      const failed = (what: string) => () => assert.fail(`${what} still pending after 3 s`);
      await assert.rejects(
        Promise.race([fleet.startAgents(pool, 1), sleep(3_000).then(failed("the creation"))]),
        (error: unknown) =>
          error instanceof UnavailableError &&
          error.message === "cannot create an agent Pod in namespace default: the Kubernetes API server did not answer within 200 ms",
      );
      const stopping = fleet.stopAgents({ namespace: "default", pool: "python" }, ["python-agent-0"]);
      const error = await Promise.race([stopping, sleep(3_000).then(failed("the deletion"))]).then(
        () => undefined,
        (error: unknown) => error,
      );
      assert.ok(error instanceof AgentsNotStoppedError, `an AgentsNotStoppedError, not ${String(error)}`);
      assert.match(error.message, /python-agent-0.*did not answer within 200 ms/);
      assert.equal(deletes.length, 2, "both requests reached the server");
    } finally {
      close();
    }
  });
});

describe("KubernetesAgentFleet.start()", () => {
  test("resolves only once a list of the agent Pods succeeded: a failed first list is tried again", async () => {
    const { kubeConfig, lists, close } = await silentApiServer(undefined, { failedLists: 2 });
    const warnings: unknown[] = [];
    const logger = { ...quiet, warn: (...args: unknown[]) => warnings.push(args) };
    const fleet = new KubernetesAgentFleet({ kubeConfig, logger: logger as never, restartDelayMs: 20, watchTimeoutSeconds: 60 });
    try {
      await fleet.start();
      assert.equal(lists.length, 3);
      assert.deepEqual(
        fleet.listAgents().map((agent) => agent.name),
        ["python-agent-0"],
        "the Pods are known when start() resolves",
      );
      assert.equal(warnings.length, 2, "each failed list is logged");
    } finally {
      await fleet.stop();
      close();
    }
  });

  test("waits ever longer between failed first lists (up to maxRestartDelayMs), and stop() ends the wait with a rejection", async () => {
    const { kubeConfig, lists, close } = await silentApiServer(undefined, { failedLists: Number.POSITIVE_INFINITY });
    const clock = new FakeClock();
    const fleet = new KubernetesAgentFleet({ kubeConfig, logger: quiet as never, clock, restartDelayMs: 1000, maxRestartDelayMs: 4000 });
    let outcome: string | undefined;
    const started = fleet.start().then(
      () => (outcome = "resolved"),
      (error: unknown) => (outcome = `rejected: ${String(error)}`),
    );
    try {
      const waits: number[] = [];
      for (let attempt = 1; attempt <= 4; attempt++) {
        await until(`list ${attempt} and the wait after it`, () => lists.length === attempt && clock.pendingTimers === 1);
        assert.equal(outcome, undefined, "start() waits for a list that succeeds");
        const next = clock.nextTimerAt();
        assert.ok(next);
        waits.push(next.getTime() - clock.now().getTime());
        if (attempt < 4) clock.advance(waits.at(-1) ?? 0);
      }
      assert.deepEqual(waits, [1000, 2000, 4000, 4000]);
      await fleet.stop();
      await started;
      assert.match(outcome ?? "", /^rejected: .*stopped before it could list the agent Pods/);
      assert.equal(lists.length, 4, "no list after stop()");
      assert.deepEqual(fleet.listAgents(), []);
    } finally {
      await fleet.stop();
      close();
    }
  });
});

describe("KubernetesAgentFleet's agents", () => {
  test("are the Pods a SandboxPool controls: one that only carries the pool label is neither reported nor its agent", async () => {
    const labelledOnly = agentPod("python-lookalike", "10.1.0.5");
    delete labelledOnly.metadata.ownerReferences;
    const ownedByAReplicaSet = agentPod("python-replicaset-pod", "10.1.0.6");
    ownedByAReplicaSet.metadata.ownerReferences = [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: "python", uid: "uid-rs", controller: true }];
    const { kubeConfig, close } = await silentApiServer(undefined, { pods: [agentPod("python-agent-0", "10.1.0.4"), labelledOnly, ownedByAReplicaSet] });
    const fleet = new KubernetesAgentFleet({ kubeConfig, logger: quiet as never, watchTimeoutSeconds: 60 });
    try {
      await fleet.start();
      assert.deepEqual(
        fleet.listAgents().map((agent) => [agent.name, agent.pool, agent.poolUid]),
        [["python-agent-0", "python", "uid-python"]],
      );
    } finally {
      await fleet.stop();
      close();
    }
  });

  test("an agent whose Pod loses its pool owner reference is removed", async () => {
    const orphaned = agentPod("python-agent-0", "10.1.0.4");
    orphaned.metadata = { ...orphaned.metadata, resourceVersion: "8", ownerReferences: [] };
    let watch: ServerResponse | undefined;
    const { kubeConfig, close } = await silentApiServer((response) => (watch ??= response));
    const fleet = new KubernetesAgentFleet({ kubeConfig, logger: quiet as never, watchTimeoutSeconds: 60 });
    const events: string[] = [];
    fleet.subscribe((event: AgentFleetEvent) => events.push(`${event.type} ${event.agent.name}`));
    try {
      await fleet.start();
      await until("the watch", () => watch !== undefined);
      watch?.write(`${JSON.stringify({ type: "MODIFIED", object: orphaned })}\n`);
      await until("the agent removed", () => fleet.listAgents().length === 0);
      await until("its events", () => events.includes("removed python-agent-0"));
      assert.deepEqual(events, ["ready python-agent-0", "lost python-agent-0", "removed python-agent-0"]);
    } finally {
      await fleet.stop();
      close();
    }
  });
});

describe("KubernetesAgentFleet.fetchAgents", () => {
  test("lists the pool's Pods from the API server by its label, without the watch: those a SandboxPool controls", async () => {
    const labelledOnly = agentPod("python-lookalike", "10.1.0.5");
    delete labelledOnly.metadata.ownerReferences;
    const { kubeConfig, lists, close } = await silentApiServer(undefined, { pods: [agentPod("python-agent-0", "10.1.0.4"), labelledOnly] });
    const fleet = new KubernetesAgentFleet({ kubeConfig, logger: quiet as never });
    try {
      const agents = await fleet.fetchAgents({ namespace: "default", pool: "python" });
      assert.deepEqual(
        agents.map((agent) => [agent.name, agent.pool, agent.poolUid, agent.ready]),
        [["python-agent-0", "python", "uid-python", true]],
      );
      assert.equal(lists.at(-1)?.get("labelSelector"), "fast-sandbox.io/pool=python");
      assert.deepEqual(fleet.listAgents(), [], "what the watch observed is left as it is");
    } finally {
      close();
    }
  });

  test("marks a Pod another namespace's Pod holds the name of (nameTakenBy): the fleet leaves it out, and its pool is told so", async () => {
    /** Pod python-agent-0 of pool python in `namespace`, created at `created`. */
    const podOf = (namespace: string, created: string) => {
      const pod = agentPod("python-agent-0", "10.1.0.4");
      return { ...pod, metadata: { ...pod.metadata, namespace, uid: `uid-${namespace}`, creationTimestamp: created } };
    };
    // Two pools named python in two namespaces drew the same Pod name; team-a's is the older.
    const { kubeConfig, close } = await silentApiServer(undefined, {
      pods: [podOf("team-b", "2026-01-02T00:00:00Z"), podOf("team-a", "2026-01-01T00:00:00Z")],
    });
    const fleet = new KubernetesAgentFleet({ kubeConfig, logger: quiet as never, watchTimeoutSeconds: 60 });
    try {
      await fleet.start();
      assert.deepEqual(
        fleet.listAgents().map((agent) => `${agent.namespace}/${agent.name}`),
        ["team-a/python-agent-0"],
      );
      const [shadowed] = await fleet.fetchAgents({ namespace: "team-b", pool: "python" });
      assert.equal(shadowed?.name, "python-agent-0");
      assert.equal(shadowed?.nameTakenBy, "team-a/python-agent-0");
      const [holder] = await fleet.fetchAgents({ namespace: "team-a", pool: "python" });
      assert.equal(holder?.namespace, "team-a");
      assert.equal(holder?.nameTakenBy, undefined, "the Pod that holds the name is reported");
    } finally {
      await fleet.stop();
      close();
    }
  });

  test("fails with the API server's answer when it cannot list", async () => {
    const { kubeConfig, close } = await silentApiServer(undefined, { failedLists: 1 });
    const fleet = new KubernetesAgentFleet({ kubeConfig, logger: quiet as never });
    try {
      await assert.rejects(fleet.fetchAgents({ namespace: "default", pool: "python" }), (error: unknown) => {
        assert.ok(error instanceof FsbError);
        assert.match(error.message, /500.*request timed out/);
        return true;
      });
    } finally {
      close();
    }
  });
});

describe("KubernetesAgentFleet.stopAgents", () => {
  test("deletes every Pod it can; when some deletions fail, names those alone", async () => {
    const { kubeConfig, deletes, close } = await silentApiServer(undefined, { undeletable: ["python-agent-1"] });
    const fleet = new KubernetesAgentFleet({ kubeConfig, logger: quiet as never });
    try {
      const error = await fleet.stopAgents({ namespace: "default", pool: "python" }, ["python-agent-0", "python-agent-1", "python-agent-2"]).then(
        () => undefined,
        (error: unknown) => error,
      );
      assert.deepEqual(deletes.sort(), ["python-agent-0", "python-agent-1", "python-agent-2"], "every deletion is tried");
      assert.ok(error instanceof AgentsNotStoppedError, `an AgentsNotStoppedError, not ${String(error)}`);
      assert.deepEqual(error.notStopped, ["python-agent-1"]);
      assert.match(error.message, /python-agent-1.*request timed out/);
    } finally {
      close();
    }
  });
});

describe("KubernetesAgentFleet with poolNamespaces (FSB_POOL_NAMESPACES)", () => {
  /** The agent Pod `name` of pool python in `namespace`. */
  const podIn = (namespace: string, name: string, podIP: string) => {
    const pod = agentPod(name, podIP);
    pod.metadata = { ...pod.metadata, namespace };
    return pod;
  };
  const poolIn = (namespace: string): SandboxPool => ({
    apiVersion: "sandbox.fast.io/v1alpha1",
    kind: "SandboxPool",
    metadata: { name: "python", namespace, uid: "uid-python" },
    spec: { capacity: { poolMin: 0, poolMax: 1 }, maxSandboxesPerPod: 1 },
  });

  test("takes for agents only the Pods of the namespaces it lists, listed or watched: one elsewhere is neither reported nor connected to", async () => {
    let watch: ServerResponse | undefined;
    const { kubeConfig, close } = await silentApiServer((response) => (watch ??= response), {
      pods: [podIn("sandboxes", "python-agent-0", "10.1.0.4"), podIn("team-b", "python-agent-1", "10.1.0.5")],
    });
    const warnings: unknown[][] = [];
    const logger = { ...quiet, warn: (...args: unknown[]) => warnings.push(args) };
    const fleet = new KubernetesAgentFleet({ kubeConfig, logger: logger as never, watchTimeoutSeconds: 60, poolNamespaces: ["sandboxes", "ci"] });
    const events: string[] = [];
    fleet.subscribe((event: AgentFleetEvent) => events.push(`${event.type} ${event.agent.namespace}/${event.agent.name}`));
    try {
      await fleet.start();
      assert.deepEqual(
        fleet.listAgents().map((agent) => `${agent.namespace}/${agent.name}`),
        ["sandboxes/python-agent-0"],
      );
      await until("the watch", () => watch !== undefined);
      // Another Pod made to look like an agent there, then the first one changed: still no agent.
      const lookalike = {
        ...podIn("team-b", "python-agent-2", "10.1.0.6"),
        metadata: { ...podIn("team-b", "python-agent-2", "10.1.0.6").metadata, resourceVersion: "8" },
      };
      watch?.write(`${JSON.stringify({ type: "ADDED", object: lookalike })}\n`);
      const changed = podIn("team-b", "python-agent-1", "10.1.0.7");
      changed.metadata = { ...changed.metadata, resourceVersion: "9" };
      watch?.write(`${JSON.stringify({ type: "MODIFIED", object: changed })}\n`);
      const marker = podIn("ci", "python-agent-3", "10.1.0.8");
      marker.metadata = { ...marker.metadata, resourceVersion: "10" };
      watch?.write(`${JSON.stringify({ type: "ADDED", object: marker })}\n`);
      await until("the Pod of a listed namespace", () => fleet.listAgents().length === 2);
      await sleep(20);
      assert.deepEqual(
        fleet
          .listAgents()
          .map((agent) => `${agent.namespace}/${agent.name}`)
          .sort(),
        ["ci/python-agent-3", "sandboxes/python-agent-0"],
      );
      assert.deepEqual(events.sort(), ["ready ci/python-agent-3", "ready sandboxes/python-agent-0"], "no event of another namespace's Pod");
      assert.deepEqual(
        warnings.map((args) => (args[0] as { pod: string }).pod),
        ["team-b/python-agent-1", "team-b/python-agent-2"],
        "each logged once",
      );
    } finally {
      await fleet.stop();
      close();
    }
  });

  test("creates no Pod for a pool elsewhere, and fetches none there", async () => {
    const { kubeConfig, lists, creates, close } = await silentApiServer(undefined, { pods: [podIn("team-b", "python-agent-1", "10.1.0.5")] });
    const fleet = new KubernetesAgentFleet({ kubeConfig, logger: quiet as never, poolNamespaces: ["sandboxes"] });
    try {
      await assert.rejects(fleet.startAgents(poolIn("team-b"), 1), (error: unknown) => {
        assert.ok(error instanceof PermissionDeniedError, `a PermissionDeniedError, not ${String(error)}`);
        assert.match(error.message, /^namespace team-b runs no pools: the controller's FSB_POOL_NAMESPACES allows pools only in sandboxes;/);
        return true;
      });
      assert.deepEqual(await fleet.fetchAgents({ namespace: "team-b", pool: "python" }), []);
      assert.deepEqual(creates, [], "nothing reached the API server");
      assert.equal(lists.length, 0);
      // A listed namespace's pool is created there as ever (this server refuses it).
      await assert.rejects(fleet.startAgents(poolIn("sandboxes"), 1), /creations are counted/);
      assert.deepEqual(creates, ["/api/v1/namespaces/sandboxes/pods"]);
    } finally {
      close();
    }
  });
});

describe("KubernetesAgentFleet's agent template policy (FSB_AGENT_TEMPLATE_POLICY)", () => {
  const pool = (agentTemplate: Record<string, unknown>): SandboxPool => ({
    apiVersion: "sandbox.fast.io/v1alpha1",
    kind: "SandboxPool",
    metadata: { name: "python", namespace: "default", uid: "uid-python" },
    spec: { capacity: { poolMin: 0, poolMax: 1 }, maxSandboxesPerPod: 1, agentTemplate },
  });
  const hostPID = pool({ spec: { hostPID: true } });

  test("is restricted by default: a refused template has no hash and makes no Pod", async () => {
    const { kubeConfig, creates, close } = await silentApiServer();
    const fleet = new KubernetesAgentFleet({ kubeConfig, logger: quiet as never });
    const refused = (error: unknown) => error instanceof AgentTemplateNotAllowedError && error.field === "spec.agentTemplate.spec.hostPID";
    try {
      assert.throws(() => fleet.templateHash(hostPID), refused);
      await assert.rejects(fleet.startAgents(hostPID, 1), refused);
      assert.deepEqual(creates, [], "nothing reached the API server");
      // What it allows has a hash, and a Pod is asked for.
      assert.match(fleet.templateHash(pool({ spec: { nodeSelector: { pool: "sandboxes" } } })), /^[0-9a-f]{16}$/);
    } finally {
      close();
    }
  });

  test("judges only the pool's template, never the deployment's base template", async () => {
    const { kubeConfig, close } = await silentApiServer();
    const fleet = new KubernetesAgentFleet({
      kubeConfig,
      logger: quiet as never,
      pod: { baseTemplate: { spec: { hostPID: true, containers: [{ name: "agent", securityContext: { privileged: true } }] } } },
    });
    try {
      assert.match(fleet.templateHash(pool({})), /^[0-9a-f]{16}$/);
    } finally {
      close();
    }
  });

  test("unrestricted takes the template as written; a listed image passes under restricted", async () => {
    const { kubeConfig, creates, close } = await silentApiServer();
    const mirror = "mirror.example/fsb/agent:1";
    const unrestricted = new KubernetesAgentFleet({ kubeConfig, logger: quiet as never, templatePolicy: { mode: "unrestricted" } });
    const restricted = new KubernetesAgentFleet({ kubeConfig, logger: quiet as never, templatePolicy: { mode: "restricted", allowedImages: [mirror] } });
    try {
      assert.match(unrestricted.templateHash(hostPID), /^[0-9a-f]{16}$/);
      await assert.rejects(unrestricted.startAgents(hostPID, 1), /creations are counted/);
      assert.equal(creates.length, 1, "the Pod was asked for");
      assert.match(restricted.templateHash(pool({ spec: { containers: [{ name: "agent", image: mirror }] } })), /^[0-9a-f]{16}$/);
      assert.throws(() => restricted.templateHash(pool({ spec: { containers: [{ name: "agent", image: "other/agent:1" }] } })), AgentTemplateNotAllowedError);
    } finally {
      close();
    }
  });
});
