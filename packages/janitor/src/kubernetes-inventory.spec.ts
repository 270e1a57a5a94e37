import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { UnavailableError } from "@fast-sandbox/api/core";
import { kubernetesInventory } from "./kubernetes-inventory.js";

/**
 * The inventory's reading of API answers, against a local HTTP server speaking the API's list
 * answers (the real kube-apiserver is test/e2e/kubernetes/janitor-inventory-from-the-api): what
 * a refused list of SandboxPools means, as opposed to a refused list of anything else.
 */
describe("the Kubernetes inventory's answers", () => {
  let server: Server;
  let kubeConfig: KubeConfig;
  /** What the fake API server answers for SandboxPools and Sandboxes. */
  let poolsStatus = 200;
  let sandboxesStatus = 200;

  const list = (kind: string, items: unknown[]) => JSON.stringify({ apiVersion: "v1", kind, metadata: {}, items });
  const forbidden = (what: string) =>
    JSON.stringify({ apiVersion: "v1", kind: "Status", status: "Failure", reason: "Forbidden", code: 403, message: `${what} is forbidden` });

  before(async () => {
    server = createServer((request, response) => {
      const path = new URL(request.url ?? "/", "http://x").pathname;
      const answer = (status: number, body: string) => response.writeHead(status, { "content-type": "application/json" }).end(body);
      if (path === "/api/v1/pods") return answer(200, list("PodList", [{ metadata: { name: "web-agent-a", uid: "u1" }, status: { phase: "Running" } }]));
      if (path === "/apis/sandbox.fast.io/v1alpha1/sandboxes") {
        if (sandboxesStatus !== 200) return answer(sandboxesStatus, forbidden("sandboxes"));
        return answer(200, list("SandboxList", [{ metadata: { name: "s", namespace: "team" }, spec: { poolRef: "web" }, status: { sandboxID: "id-1" } }]));
      }
      if (path === "/apis/sandbox.fast.io/v1alpha1/sandboxpools") {
        if (poolsStatus !== 200) return answer(poolsStatus, forbidden("sandboxpools"));
        return answer(200, list("SandboxPoolList", [{ metadata: { name: "web", namespace: "team" } }]));
      }
      answer(404, JSON.stringify({ kind: "Status", code: 404 }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    kubeConfig = new KubeConfig();
    kubeConfig.loadFromOptions({
      clusters: [{ name: "fake", server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
      users: [{ name: "janitor", token: "t" }],
      contexts: [{ name: "fake", cluster: "fake", user: "janitor" }],
      currentContext: "fake",
    });
  });

  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it("lists agents, sandbox ids, pools and the pools Sandboxes name", async () => {
    poolsStatus = 200;
    sandboxesStatus = 200;
    const snapshot = await kubernetesInventory({ kubeConfig, nodeName: "n" }).read();
    assert.deepEqual([...snapshot.agents], ["web-agent-a"]);
    assert.deepEqual([...snapshot.sandboxIds], ["id-1"]);
    assert.deepEqual([...(snapshot.pools ?? [])], ["team/web"]);
    assert.deepEqual([...(snapshot.poolsNamedBySandboxes ?? [])], ["team/web"]);
  });

  it("leaves the pools unknown when its role may not list them (an older ClusterRole), and reads the rest", async () => {
    poolsStatus = 403;
    sandboxesStatus = 200;
    const snapshot = await kubernetesInventory({ kubeConfig, nodeName: "n" }).read();
    assert.equal(snapshot.pools, undefined, "unknown, not none: no checkpoint directory is judged gone");
    assert.equal(snapshot.poolsNamedBySandboxes, undefined);
    assert.deepEqual([...snapshot.sandboxIds], ["id-1"], "the rest of the inventory is read as before");
  });

  it("fails the whole read on any other refusal, and on a refused pool list that is not a 403", async () => {
    for (const [pools, sandboxes] of [
      [200, 403],
      [500, 200],
    ] as const) {
      poolsStatus = pools;
      sandboxesStatus = sandboxes;
      await assert.rejects(kubernetesInventory({ kubeConfig, nodeName: "n" }).read(), UnavailableError, `pools ${pools}, sandboxes ${sandboxes}`);
    }
  });
});
