import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { UnavailableError } from "@fast-sandbox/api";
import { testKubeConfig } from "../store/kube-config.fixture.js";
import { kubernetesLeaseClient } from "./kubernetes-lease-client.js";

/** `promise`, or a failure saying it is still pending after 3 s (a request without a time limit never settles). */
function within<T>(promise: Promise<T>): Promise<T> {
  return Promise.race([promise, sleep(3_000).then(() => assert.fail("still pending after 3 s"))]);
}

describe("kubernetesLeaseClient on an API server that takes a request and never answers", () => {
  test("each request fails with UnavailableError naming it after requestTimeoutMs, not left open for good", async () => {
    const requests: string[] = [];
    let open = 0;
    const server = createServer((request, response) => {
      requests.push(`${request.method} ${request.url}`);
      open += 1;
      response.on("close", () => (open -= 1));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const kubeConfig = testKubeConfig(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    const lease = kubernetesLeaseClient({ kubeConfig, namespace: "fsb", name: "leader", requestTimeoutMs: 200 });
    const timedOut = (action: string) => (error: unknown) =>
      error instanceof UnavailableError && error.message === `cannot ${action} lease fsb/leader: the Kubernetes API server did not answer within 200 ms`;
    try {
      await assert.rejects(within(lease.get()), timedOut("read"));
      await assert.rejects(within(lease.create({ holderIdentity: "a", leaseDurationSeconds: 15 })), timedOut("create"));
      await assert.rejects(within(lease.replace("7", { holderIdentity: "a", leaseDurationSeconds: 15 })), timedOut("replace"));
      assert.deepEqual(
        requests.map((request) => request.split("?")[0]),
        [
          "GET /apis/coordination.k8s.io/v1/namespaces/fsb/leases/leader",
          "POST /apis/coordination.k8s.io/v1/namespaces/fsb/leases",
          "PUT /apis/coordination.k8s.io/v1/namespaces/fsb/leases/leader",
        ],
      );
      for (let attempt = 0; open > 0; attempt++) {
        assert.ok(attempt < 500, `the requests are let go (${open} still open)`);
        await sleep(10);
      }
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
