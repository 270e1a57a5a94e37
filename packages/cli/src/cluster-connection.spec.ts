import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ApiException, FetchError, KubeConfig } from "@kubernetes/client-node";
import { FsbError, NotFoundError, PermissionDeniedError, UnauthenticatedError, UnavailableError } from "@fast-sandbox/api";
import { kubernetesClusterReader, resolveClusterEndpoint, tcpReachable, translateKubernetesError } from "./cluster-connection.js";
import type { ClusterReader } from "./controller-discovery.js";
import { NoKubeConfigError } from "./kubeconfig.js";

const dir = mkdtempSync(join(tmpdir(), "fsb-cluster-connection-spec-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const KUBECONFIG = join(dir, "kubeconfig");
writeFileSync(
  KUBECONFIG,
  [
    "apiVersion: v1",
    "kind: Config",
    "current-context: dev",
    "clusters: [{name: dev, cluster: {server: 'https://127.0.0.1:6443'}}]",
    "users: [{name: dev, user: {token: t}}]",
    "contexts: [{name: dev, context: {cluster: dev, user: dev, namespace: team-a}}]",
  ].join("\n"),
);
const nowhere = { env: {}, home: join(dir, "no-home"), rootDir: join(dir, "no-root") };

/** A cluster with one ready controller endpoint and the token Secret; records the reads. */
function fakeCluster(overrides: Partial<ClusterReader> = {}): ClusterReader & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    endpointSlices: (namespace, service) => {
      calls.push(`endpointSlices ${namespace}/${service}`);
      return Promise.resolve([
        {
          addressType: "IPv4",
          endpoints: [{ addresses: ["127.0.0.9"], ready: true, targetRef: { kind: "Pod", name: "controller-a" } }],
          ports: [{ name: "fast-path", port: 7070 }],
        },
      ]);
    },
    service: () => Promise.resolve(undefined),
    pods: () => Promise.resolve([]),
    secretData: (namespace, name) => {
      calls.push(`secret ${namespace}/${name}`);
      return Promise.resolve({ token: "the-token-0123456789" });
    },
    ...overrides,
  };
}

describe("resolveClusterEndpoint", () => {
  it("finds the controller and reads the token in the cluster of the kubeconfig; the namespace is the context's", async () => {
    const cluster = fakeCluster();
    const found = await resolveClusterEndpoint({
      kubeconfig: KUBECONFIG,
      environment: nowhere,
      makeReader: () => cluster,
      reachable: () => Promise.resolve(true),
    });
    assert.equal(found.url, "http://127.0.0.9:7070");
    assert.equal(found.token, "the-token-0123456789");
    assert.equal(found.namespace, "team-a");
    assert.equal(found.tokenSource, "Secret fast-sandbox-system/fast-sandbox-api-token");
    assert.equal(
      found.endpointDescription,
      "the controller at 127.0.0.9:7070 (Pod controller-a), found through Service fast-sandbox-system/fast-sandbox-controller of context dev",
    );
    assert.deepEqual(cluster.calls.sort(), ["endpointSlices fast-sandbox-system/fast-sandbox-controller", "secret fast-sandbox-system/fast-sandbox-api-token"]);
  });

  it("looks in --fsb-namespace, and -n replaces the context's namespace", async () => {
    const cluster = fakeCluster();
    const found = await resolveClusterEndpoint({
      kubeconfig: KUBECONFIG,
      fsbNamespace: "fsb",
      namespace: "team-b",
      environment: nowhere,
      makeReader: () => cluster,
      reachable: () => Promise.resolve(true),
    });
    assert.equal(found.namespace, "team-b");
    assert.deepEqual(cluster.calls.sort(), ["endpointSlices fsb/fast-sandbox-controller", "secret fsb/fast-sandbox-api-token"]);
  });

  it("with --url does not look for the controller, but still reads the token from the Secret", async () => {
    const cluster = fakeCluster();
    const found = await resolveClusterEndpoint({ kubeconfig: KUBECONFIG, url: "http://127.0.0.1:17070", environment: nowhere, makeReader: () => cluster });
    assert.equal(found.url, "http://127.0.0.1:17070");
    assert.equal(found.token, "the-token-0123456789");
    assert.deepEqual(cluster.calls, ["secret fast-sandbox-system/fast-sandbox-api-token"]);
    assert.equal(found.endpointDescription, "the controller at http://127.0.0.1:17070");
  });

  it("with FSB_TOKEN does not read the Secret", async () => {
    const cluster = fakeCluster();
    const found = await resolveClusterEndpoint({
      kubeconfig: KUBECONFIG,
      token: "from-env",
      environment: nowhere,
      makeReader: () => cluster,
      reachable: () => Promise.resolve(true),
    });
    assert.equal(found.token, "from-env");
    assert.equal(found.tokenSource, "FSB_TOKEN");
    assert.deepEqual(cluster.calls, ["endpointSlices fast-sandbox-system/fast-sandbox-controller"]);
  });

  it("with --url and FSB_TOKEN needs no kubeconfig at all: the namespace is then default", async () => {
    const found = await resolveClusterEndpoint({
      url: "http://127.0.0.1:17070",
      token: "from-env",
      environment: nowhere,
      makeReader: () => assert.fail("no Kubernetes API is needed"),
    });
    assert.deepEqual([found.url, found.token, found.namespace], ["http://127.0.0.1:17070", "from-env", "default"]);
  });

  it("without --url or FSB_TOKEN fails without a kubeconfig", async () => {
    await assert.rejects(resolveClusterEndpoint({ url: "http://127.0.0.1:17070", environment: nowhere }), NoKubeConfigError);
  });

  it("reports the controller's absence before a missing Secret", async () => {
    const cluster = fakeCluster({
      endpointSlices: () => Promise.resolve([]),
      secretData: () => Promise.resolve(undefined),
    });
    await assert.rejects(
      resolveClusterEndpoint({ kubeconfig: KUBECONFIG, environment: nowhere, makeReader: () => cluster }),
      (error: unknown) => error instanceof NotFoundError && /there is no Service/.test(error.message),
    );
  });
});

describe("translateKubernetesError", () => {
  const cluster = { context: "dev", server: "https://127.0.0.1:6443" };
  const apiError = (code: number, message: string) =>
    new ApiException(code, "Unknown API Status Code!", JSON.stringify({ kind: "Status", status: "Failure", code, message }), {});

  it("401: the kubeconfig's credentials were refused", () => {
    const error = translateKubernetesError(apiError(401, "Unauthorized"), "get Secret a/b", cluster);
    assert.ok(error instanceof UnauthenticatedError);
    assert.equal(error.message, "the Kubernetes API server https://127.0.0.1:6443 did not accept the credentials of context dev: Unauthorized");
  });

  it("403: what may not be done, with the API server's reason", () => {
    const error = translateKubernetesError(apiError(403, 'secrets "b" is forbidden: User "alice" cannot get resource "secrets"'), "get Secret a/b", cluster);
    assert.ok(error instanceof PermissionDeniedError);
    assert.match(error.message, /^cannot get Secret a\/b: secrets "b" is forbidden: User "alice"/);
  });

  it("no HTTP answer: the API server is unreachable", () => {
    const error = translateKubernetesError(new Error("connect ECONNREFUSED 127.0.0.1:6443"), "list EndpointSlices in namespace x", cluster);
    assert.ok(error instanceof UnavailableError);
    assert.equal(
      error.message,
      "cannot list EndpointSlices in namespace x: the Kubernetes API server https://127.0.0.1:6443 of context dev is unreachable (connect ECONNREFUSED 127.0.0.1:6443)",
    );
  });

  it("a failing credential plugin (kubeconfig exec) is the plugin's failure, with its message trimmed, not an unreachable API server", async () => {
    const plugin = join(dir, "expired-plugin.sh");
    writeFileSync(plugin, "#!/bin/sh\necho \"error: the SSO session has expired; run 'aws sso login'\" >&2\necho >&2\nexit 1\n", { mode: 0o755 });
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromString(
      [
        "apiVersion: v1",
        "kind: Config",
        "current-context: dev",
        "clusters: [{name: dev, cluster: {server: 'https://127.0.0.1:1'}}]",
        `users: [{name: eks-admin, user: {exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: '${plugin}'}}}]`,
        "contexts: [{name: dev, context: {cluster: dev, user: eks-admin}}]",
      ].join("\n"),
    );
    const reader = kubernetesClusterReader({ kubeConfig, context: "dev", server: "https://127.0.0.1:1" });
    await assert.rejects(reader.endpointSlices("fast-sandbox-system", "fast-sandbox-controller"), (error: unknown) => {
      assert.ok(error instanceof UnauthenticatedError);
      assert.equal(
        error.message,
        "cannot list EndpointSlices in namespace fast-sandbox-system: the credential plugin of user eks-admin failed: error: the SSO session has expired; run 'aws sso login'",
      );
      return true;
    });
    const withPlugin = { ...cluster, credentialPluginUser: "eks-admin" };
    const missing = Object.assign(new Error("spawn kubelogin ENOENT"), { code: "ENOENT", syscall: "spawn kubelogin" });
    assert.match(
      translateKubernetesError(missing, "get Secret a/b", withPlugin).message,
      /the credential plugin of user eks-admin failed: spawn kubelogin ENOENT$/,
    );
    // A connection's failure is still the API server's, also with a plugin.
    const refused = new FetchError("request to https://127.0.0.1:6443/api failed, reason: connect ECONNREFUSED", "system");
    assert.ok(translateKubernetesError(refused, "get Secret a/b", withPlugin) instanceof UnavailableError);
  });

  it("keeps Fast Sandbox errors, and a body that is not a Status as text", () => {
    const own = new NotFoundError("x");
    assert.equal(translateKubernetesError(own, "get", cluster), own);
    const error = translateKubernetesError(new ApiException(500, "", "boom", {}), "get Service a/b", cluster);
    assert.ok(error instanceof FsbError);
    assert.equal(error.code, "internal");
    assert.equal(error.message, "cannot get Service a/b: the Kubernetes API server answered 500: boom");
  });
});

describe("tcpReachable", () => {
  it("is true when something accepts connections there and false when nothing does", async () => {
    const server = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    assert.equal(await tcpReachable("127.0.0.1", port, 1_000), true);
    await new Promise((resolve) => server.close(resolve));
    assert.equal(await tcpReachable("127.0.0.1", port, 1_000), false);
  });
});
