import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FailedPreconditionError, NotFoundError, PermissionDeniedError, UnavailableError } from "@fast-sandbox/api";
import {
  endpointsFromPods,
  endpointsFromSlices,
  findController,
  readApiToken,
  urlOf,
  type ClusterReader,
  type EndpointSliceView,
  type PodView,
  type ServiceView,
} from "./controller-discovery.js";

/** An in-memory cluster: what a reader returns, or the error it throws, per call; records the calls. */
class FakeCluster implements ClusterReader {
  slices: EndpointSliceView[] | Error = [];
  serviceView: ServiceView | undefined | Error = undefined;
  podViews: PodView[] | Error = [];
  secret: Record<string, string> | undefined | Error = undefined;
  readonly calls: string[] = [];

  endpointSlices(namespace: string, service: string): Promise<EndpointSliceView[]> {
    this.calls.push(`endpointSlices ${namespace}/${service}`);
    return this.slices instanceof Error ? Promise.reject(this.slices) : Promise.resolve(this.slices);
  }
  service(namespace: string, name: string): Promise<ServiceView | undefined> {
    this.calls.push(`service ${namespace}/${name}`);
    return this.serviceView instanceof Error ? Promise.reject(this.serviceView) : Promise.resolve(this.serviceView);
  }
  pods(namespace: string, selector: Record<string, string>): Promise<PodView[]> {
    this.calls.push(`pods ${namespace} ${JSON.stringify(selector)}`);
    return this.podViews instanceof Error ? Promise.reject(this.podViews) : Promise.resolve(this.podViews);
  }
  secretData(namespace: string, name: string): Promise<Record<string, string> | undefined> {
    this.calls.push(`secret ${namespace}/${name}`);
    return this.secret instanceof Error ? Promise.reject(this.secret) : Promise.resolve(this.secret);
  }
}

const slice = (endpoints: EndpointSliceView["endpoints"], port = 7070, portName = "fast-path"): EndpointSliceView => ({
  addressType: "IPv4",
  endpoints,
  ports: [{ name: portName, port }],
});
const pod = (name: string, podIP: string, ready = true): PodView => ({
  name,
  podIP,
  ready,
  terminating: false,
  containerPorts: [{ name: "fast-path", containerPort: 7070 }],
});
const controllerService: ServiceView = {
  selector: { "app.kubernetes.io/name": "fast-sandbox", "app.kubernetes.io/component": "controller" },
  ports: [{ name: "fast-path", port: 7070, targetPort: "fast-path" }],
};
const everythingReachable = () => Promise.resolve(true);

describe("endpointsFromSlices", () => {
  it("takes every address on the fast-path port, with the endpoint's readiness (unset means ready) and target", () => {
    const endpoints = endpointsFromSlices([
      slice([
        { addresses: ["10.0.0.1"], ready: true, targetRef: { kind: "Pod", name: "controller-a" } },
        { addresses: ["10.0.0.2"], ready: false, targetRef: { kind: "Pod", name: "controller-b" } },
        { addresses: ["10.0.0.3"] },
      ]),
    ]);
    assert.deepEqual(endpoints, [
      { address: "10.0.0.1", port: 7070, ready: true, name: "Pod controller-a" },
      { address: "10.0.0.2", port: 7070, ready: false, name: "Pod controller-b" },
      { address: "10.0.0.3", port: 7070, ready: true },
    ]);
  });

  it("uses the port named fast-path, else a slice's only port, and skips slices without either", () => {
    const named: EndpointSliceView = {
      addressType: "IPv4",
      endpoints: [{ addresses: ["10.0.0.1"] }],
      ports: [
        { name: "metrics", port: 9090 },
        { name: "fast-path", port: 17070 },
      ],
    };
    const only = slice([{ addresses: ["10.0.0.2"] }], 8080, "");
    const ambiguous: EndpointSliceView = {
      addressType: "IPv4",
      endpoints: [{ addresses: ["10.0.0.3"] }],
      ports: [
        { name: "a", port: 1 },
        { name: "b", port: 2 },
      ],
    };
    const none: EndpointSliceView = { addressType: "IPv4", endpoints: [{ addresses: ["10.0.0.4"] }], ports: [] };
    assert.deepEqual(
      endpointsFromSlices([named, only, ambiguous, none]).map((e) => `${e.address}:${e.port}`),
      ["10.0.0.1:17070", "10.0.0.2:8080"],
    );
  });
});

describe("endpointsFromPods", () => {
  it("resolves a named target port to each Pod's container port, a numbered one as is; skips Pods without an IP", () => {
    const other: PodView = { ...pod("controller-b", "10.0.0.2"), containerPorts: [{ name: "fast-path", containerPort: 9000 }] };
    const noIP: PodView = { ...pod("controller-c", ""), podIP: undefined };
    assert.deepEqual(
      endpointsFromPods(controllerService, [pod("controller-a", "10.0.0.1"), other, noIP]).map((e) => `${e.address}:${e.port}`),
      ["10.0.0.1:7070", "10.0.0.2:9000"],
    );
    const numbered: ServiceView = { ...controllerService, ports: [{ name: "fast-path", port: 80, targetPort: 7171 }] };
    assert.deepEqual(
      endpointsFromPods(numbered, [pod("controller-a", "10.0.0.1")]).map((e) => e.port),
      [7171],
    );
  });

  it("counts a Pod as ready only when its Ready condition is True and it is not being deleted", () => {
    const terminating: PodView = { ...pod("controller-c", "10.0.0.3"), terminating: true };
    assert.deepEqual(
      endpointsFromPods(controllerService, [pod("controller-a", "10.0.0.1"), pod("controller-b", "10.0.0.2", false), terminating]).map((e) => e.ready),
      [true, false, false],
    );
  });
});

describe("urlOf", () => {
  it("brackets IPv6 addresses", () => {
    assert.equal(urlOf({ address: "10.0.0.1", port: 7070 }), "http://10.0.0.1:7070");
    assert.equal(urlOf({ address: "fd00::1", port: 7070 }), "http://[fd00::1]:7070");
  });
});

describe("findController", () => {
  it("picks a ready, reachable endpoint of the Service's EndpointSlices in fast-sandbox-system, without reading the Service", async () => {
    const cluster = new FakeCluster();
    cluster.slices = [
      slice([
        { addresses: ["10.0.0.1"], ready: false },
        { addresses: ["10.0.0.2"], ready: true, targetRef: { kind: "Pod", name: "controller-b" } },
      ]),
    ];
    const found = await findController({ reader: cluster, reachable: everythingReachable });
    assert.equal(found.url, "http://10.0.0.2:7070");
    assert.equal(found.endpoint.name, "Pod controller-b");
    assert.equal(found.via, "EndpointSlice");
    assert.deepEqual(cluster.calls, ["endpointSlices fast-sandbox-system/fast-sandbox-controller"]);
  });

  it("spreads clients over the ready endpoints at random", async () => {
    const cluster = new FakeCluster();
    cluster.slices = [slice([{ addresses: ["10.0.0.1"] }, { addresses: ["10.0.0.2"] }, { addresses: ["10.0.0.3"] }])];
    const urls = new Set<string>();
    for (const random of [0, 0.4, 0.99]) urls.add((await findController({ reader: cluster, reachable: everythingReachable, random: () => random })).url);
    assert.ok(urls.size > 1, `always ${[...urls].join()}`);
  });

  it("skips endpoints it cannot connect to", async () => {
    const cluster = new FakeCluster();
    cluster.slices = [slice([{ addresses: ["10.0.0.1"] }, { addresses: ["10.0.0.2"] }])];
    const tried: string[] = [];
    const found = await findController({
      reader: cluster,
      reachable: (address, port, timeoutMs) => {
        tried.push(`${address}:${port} ${timeoutMs}`);
        return Promise.resolve(address === "10.0.0.2");
      },
      connectTimeoutMs: 500,
    });
    assert.equal(found.url, "http://10.0.0.2:7070");
    assert.deepEqual(tried.sort(), ["10.0.0.1:7070 500", "10.0.0.2:7070 500"]);
  });

  it("says how to port-forward when no ready endpoint can be reached (Pod IPs from outside the cluster)", async () => {
    const cluster = new FakeCluster();
    cluster.slices = [slice([{ addresses: ["10.0.0.1"], targetRef: { kind: "Pod", name: "controller-a" } }])];
    await assert.rejects(
      findController({ reader: cluster, reachable: () => Promise.resolve(false), connectTimeoutMs: 100 }),
      (error: unknown) =>
        error instanceof UnavailableError &&
        error.message.includes("cannot reach the controller at 10.0.0.1:7070 (Pod controller-a) within 100 ms") &&
        error.message.includes("kubectl -n fast-sandbox-system port-forward svc/fast-sandbox-controller 7070:7070' and pass --url http://127.0.0.1:7070"),
    );
  });

  it("falls back to the ready Pods of the Service's selector when there are no EndpointSlices", async () => {
    const cluster = new FakeCluster();
    cluster.serviceView = controllerService;
    cluster.podViews = [pod("controller-a", "10.0.0.1", false), pod("controller-b", "10.0.0.2")];
    const found = await findController({ reader: cluster, reachable: everythingReachable, namespace: "fsb" });
    assert.equal(found.url, "http://10.0.0.2:7070");
    assert.equal(found.via, "Pod");
    assert.deepEqual(cluster.calls, [
      "endpointSlices fsb/fast-sandbox-controller",
      "service fsb/fast-sandbox-controller",
      `pods fsb ${JSON.stringify(controllerService.selector)}`,
    ]);
  });

  it("falls back to the Pods when it may not list EndpointSlices", async () => {
    const cluster = new FakeCluster();
    cluster.slices = new PermissionDeniedError("endpointslices is forbidden");
    cluster.serviceView = controllerService;
    cluster.podViews = [pod("controller-a", "10.0.0.1")];
    assert.equal((await findController({ reader: cluster, reachable: everythingReachable })).url, "http://10.0.0.1:7070");
  });

  it("says which permissions are missing when it may read neither EndpointSlices nor the Service", async () => {
    const cluster = new FakeCluster();
    cluster.slices = new PermissionDeniedError("endpointslices is forbidden");
    cluster.serviceView = new PermissionDeniedError("services is forbidden");
    await assert.rejects(
      findController({ reader: cluster, reachable: everythingReachable }),
      (error: unknown) =>
        error instanceof PermissionDeniedError &&
        /may not list EndpointSlices nor get Services in namespace fast-sandbox-system/.test(error.message) &&
        /port-forward/.test(error.message),
    );
  });

  it("says Fast Sandbox is not installed when there is no Service", async () => {
    const cluster = new FakeCluster();
    await assert.rejects(
      findController({ reader: cluster, reachable: everythingReachable }),
      (error: unknown) =>
        error instanceof NotFoundError &&
        /there is no Service fast-sandbox-system\/fast-sandbox-controller: install Fast Sandbox .*--fsb-namespace/.test(error.message),
    );
  });

  it("says no controller is ready, counting the endpoints, when none is", async () => {
    const cluster = new FakeCluster();
    cluster.slices = [
      slice([
        { addresses: ["10.0.0.1"], ready: false },
        { addresses: ["10.0.0.2"], ready: false },
      ]),
    ];
    await assert.rejects(
      findController({ reader: cluster, reachable: everythingReachable }),
      (error: unknown) => error instanceof UnavailableError && /no ready controller behind Service .* \(2 endpoints, none ready\)/.test(error.message),
    );
    const empty = new FakeCluster();
    empty.serviceView = controllerService;
    await assert.rejects(
      findController({ reader: empty, reachable: everythingReachable }),
      (error: unknown) => error instanceof UnavailableError && /\(no endpoints\): is the controller running\?/.test(error.message),
    );
  });

  it("says a Service without selector and without slices has nothing behind it", async () => {
    const cluster = new FakeCluster();
    cluster.serviceView = { ports: [{ name: "fast-path", port: 7070 }] };
    await assert.rejects(
      findController({ reader: cluster, reachable: everythingReachable }),
      (error: unknown) => error instanceof UnavailableError && /has no selector and no EndpointSlices/.test(error.message),
    );
  });

  it("passes other errors of the API on unchanged", async () => {
    const cluster = new FakeCluster();
    const unreachable = new UnavailableError("the Kubernetes API server is unreachable");
    cluster.slices = unreachable;
    await assert.rejects(findController({ reader: cluster, reachable: everythingReachable }), (error: unknown) => error === unreachable);
  });
});

describe("readApiToken", () => {
  it("reads key token of Secret fast-sandbox-api-token, trimmed", async () => {
    const cluster = new FakeCluster();
    cluster.secret = { token: "s3cret-token-0123456789\n" };
    assert.equal(await readApiToken({ reader: cluster }), "s3cret-token-0123456789");
    assert.deepEqual(cluster.calls, ["secret fast-sandbox-system/fast-sandbox-api-token"]);
  });

  it("says to set FSB_TOKEN, ask for the permission or call with one's own token when the Secret may not be read", async () => {
    const cluster = new FakeCluster();
    cluster.secret = new PermissionDeniedError('secrets "fast-sandbox-api-token" is forbidden');
    await assert.rejects(
      readApiToken({ reader: cluster, namespace: "fsb" }),
      (error: unknown) =>
        error instanceof PermissionDeniedError &&
        error.message ===
          "you may not read Secret fsb/fast-sandbox-api-token, which holds the fast-path API's token: set FSB_TOKEN to the token, ask for get on secrets/fast-sandbox-api-token in namespace fsb, " +
            "or use a kubeconfig user with a token or token file (a ServiceAccount's, an OIDC id token; a credential plugin's is not sent): the controller then lets you do what your RBAC allows",
    );
  });

  it("says how to create a missing Secret, and names a missing key", async () => {
    const cluster = new FakeCluster();
    await assert.rejects(
      readApiToken({ reader: cluster }),
      (error: unknown) =>
        error instanceof NotFoundError && /create secret generic fast-sandbox-api-token --from-literal=token=.*or set FSB_TOKEN/.test(error.message),
    );
    cluster.secret = { other: "x" };
    await assert.rejects(
      readApiToken({ reader: cluster }),
      (error: unknown) => error instanceof FailedPreconditionError && /has no key "token"/.test(error.message),
    );
  });
});
