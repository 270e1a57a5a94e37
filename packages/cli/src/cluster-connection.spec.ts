import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { PassThrough } from "node:stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ApiException, FetchError, KubeConfig } from "@kubernetes/client-node";
import { FsbError, NotFoundError, PermissionDeniedError, TimeoutError, UnauthenticatedError, UnavailableError } from "@fast-sandbox/api";
import { kubernetesClusterReader, resolveClusterEndpoint, tcpReachable, translateKubernetesError } from "./cluster-connection.js";
import type { ClusterReader } from "./controller-discovery.js";
import { startFakeKubeApi } from "./fake-kube-api.fixture.js";
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

  it("calls as the kubeconfig's user, with their own bearer token, when the Secret may not be read; without one the refusal says what to do", async () => {
    const forbidden = () => Promise.reject(new PermissionDeniedError('secrets "fast-sandbox-api-token" is forbidden'));
    const found = await resolveClusterEndpoint({
      kubeconfig: KUBECONFIG,
      environment: nowhere,
      makeReader: () => fakeCluster({ secretData: forbidden, ownBearerToken: () => Promise.resolve("alice-own-token") }),
      reachable: () => Promise.resolve(true),
    });
    assert.equal(found.token, "alice-own-token");
    assert.equal(found.ownCredential, true);
    assert.match(found.tokenSource, /^your own Kubernetes credential \(context dev; you may not read Secret fast-sandbox-system\/fast-sandbox-api-token\)$/);
    await assert.rejects(
      resolveClusterEndpoint({
        kubeconfig: KUBECONFIG,
        environment: nowhere,
        makeReader: () => fakeCluster({ secretData: forbidden, ownBearerToken: () => Promise.resolve(undefined) }),
        reachable: () => Promise.resolve(true),
      }),
      (error: unknown) =>
        error instanceof PermissionDeniedError && /set FSB_TOKEN to the token, .* or use a kubeconfig user with a token or token file/.test(error.message),
    );
    // A Secret that is missing (not forbidden) is not passed over.
    await assert.rejects(
      resolveClusterEndpoint({
        kubeconfig: KUBECONFIG,
        environment: nowhere,
        makeReader: () => fakeCluster({ secretData: () => Promise.resolve(undefined), ownBearerToken: () => Promise.resolve("alice-own-token") }),
        reachable: () => Promise.resolve(true),
      }),
      NotFoundError,
    );
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
    const reader = kubernetesClusterReader(
      { kubeConfig, context: "dev", server: "https://127.0.0.1:1" },
      { credentialPlugin: { stderr: new PassThrough(), stdinIsTerminal: false } },
    );
    await assert.rejects(reader.endpointSlices("fast-sandbox-system", "fast-sandbox-controller"), (error: unknown) => {
      assert.ok(error instanceof UnauthenticatedError);
      assert.equal(error.message, "the credential plugin of user eks-admin failed: error: the SSO session has expired; run 'aws sso login'");
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

/** A kubeconfig of one context, dev, whose cluster is `server` and whose user is `user` (YAML flow style). */
function kubeConfigOf(server: string, user = "{token: kube-token}"): KubeConfig {
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromString(
    [
      "apiVersion: v1",
      "kind: Config",
      "current-context: dev",
      `clusters: [{name: dev, cluster: {server: '${server}'}}]`,
      `users: [{name: dev, user: ${user}}]`,
      "contexts: [{name: dev, context: {cluster: dev, user: dev}}]",
    ].join("\n"),
  );
  return kubeConfig;
}

/** A credential plugin (a shell script in `dir`) that logs each run to `<name>.runs` and its KUBERNETES_EXEC_INFO to `<name>.info`. */
function credentialPlugin(name: string, body: string): { path: string; runs: () => number; info: () => unknown } {
  const path = join(dir, `${name}.sh`);
  writeFileSync(path, `#!/bin/sh\necho run >> '${path}.runs'\nprintf '%s' "$KUBERNETES_EXEC_INFO" > '${path}.info'\n${body}\n`, { mode: 0o755 });
  return {
    path,
    runs: () => (existsSync(`${path}.runs`) ? readFileSync(`${path}.runs`, "utf8").split("\n").filter(Boolean).length : 0),
    info: () => JSON.parse(readFileSync(`${path}.info`, "utf8")) as unknown,
  };
}

const PRINT_CREDENTIAL = `echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"plugin-token"}}'`;

describe("kubernetesClusterReader", () => {
  it("gives up on an API server that accepts and never answers after timeoutMs, naming the server and the read", { timeout: 10_000 }, async () => {
    const api = await startFakeKubeApi({ hang: true });
    // Without a deadline of its own the read would wait forever: the server goes after 5 s, failing the test (and ending the file).
    const closing = setTimeout(() => void api.close(), 5_000);
    try {
      const reader = kubernetesClusterReader({ kubeConfig: kubeConfigOf(api.url), context: "dev", server: api.url }, { timeoutMs: 300 });
      await assert.rejects(reader.endpointSlices("fast-sandbox-system", "fast-sandbox-controller"), (error: unknown) => {
        assert.ok(error instanceof TimeoutError, String(error));
        assert.equal(
          error.message,
          `cannot list EndpointSlices in namespace fast-sandbox-system: the Kubernetes API server ${api.url} of context dev did not answer within 300ms ` +
            "(--request-timeout); pass a larger --request-timeout (or FSB_REQUEST_TIMEOUT), or 0 for no limit",
        );
        return true;
      });
      assert.equal(api.requests.length, 1);
    } finally {
      clearTimeout(closing);
      await api.close();
    }
  });

  it("speaks to an http:// API server in cleartext, as kubectl does (kubectl proxy), without insecure-skip-tls-verify", async () => {
    const api = await startFakeKubeApi({ token: "the-token-0123456789" });
    try {
      const reader = kubernetesClusterReader({ kubeConfig: kubeConfigOf(api.url), context: "dev", server: api.url });
      assert.deepEqual(await reader.secretData("fast-sandbox-system", "fast-sandbox-api-token"), { token: "the-token-0123456789" });
      assert.deepEqual(api.requests, ["GET /api/v1/namespaces/fast-sandbox-system/secrets/fast-sandbox-api-token auth=Bearer kube-token"]);
    } finally {
      await api.close();
    }
  });

  it("runs the credential plugin once for the reads made at once, each read using its credential; its stderr is the user's; KUBERNETES_EXEC_INFO", async () => {
    const api = await startFakeKubeApi();
    const plugin = credentialPlugin("once", `echo 'open https://login.example/device' >&2\nsleep 0.2\n${PRINT_CREDENTIAL}`);
    try {
      const kubeConfig = kubeConfigOf(
        api.url,
        `{exec: {apiVersion: client.authentication.k8s.io/v1, command: '${plugin.path}', interactiveMode: IfAvailable, provideClusterInfo: true}}`,
      );
      const stderr = new PassThrough();
      let said = "";
      stderr.on("data", (chunk: Buffer) => (said += chunk.toString()));
      const reader = kubernetesClusterReader({ kubeConfig, context: "dev", server: api.url }, { credentialPlugin: { stderr, stdinIsTerminal: false } });
      await Promise.all([
        reader.endpointSlices("fast-sandbox-system", "fast-sandbox-controller"),
        reader.secretData("fast-sandbox-system", "fast-sandbox-api-token"),
        reader.service("fast-sandbox-system", "fast-sandbox-controller"),
      ]);
      await reader.pods("fast-sandbox-system", { app: "x" });
      assert.equal(plugin.runs(), 1);
      assert.equal(api.requests.length, 4);
      for (const request of api.requests) assert.match(request, / auth=Bearer plugin-token$/);
      assert.equal(said, "open https://login.example/device\n");
      assert.deepEqual(plugin.info(), {
        apiVersion: "client.authentication.k8s.io/v1",
        kind: "ExecCredential",
        spec: { interactive: false, cluster: { server: api.url } },
      });
    } finally {
      await api.close();
    }
  });

  it("gives the user's own bearer token: the kubeconfig's, a Pod's token file; none with client certificates, nor a credential plugin's", async () => {
    const api = await startFakeKubeApi();
    try {
      assert.equal(await kubernetesClusterReader({ kubeConfig: kubeConfigOf(api.url), context: "dev", server: api.url }).ownBearerToken?.(), "kube-token");
      const plugin = credentialPlugin("own", PRINT_CREDENTIAL);
      const reader = kubernetesClusterReader(
        {
          kubeConfig: kubeConfigOf(api.url, `{exec: {apiVersion: client.authentication.k8s.io/v1, command: '${plugin.path}', interactiveMode: Never}}`),
          context: "dev",
          server: api.url,
        },
        { credentialPlugin: { stderr: new PassThrough(), stdinIsTerminal: false } },
      );
      await reader.secretData("fast-sandbox-system", "fast-sandbox-api-token");
      // Its token reached the API server, but is not the controller's to see (maybe a cloud credential).
      assert.deepEqual(api.requests.at(-1)?.endsWith("auth=Bearer plugin-token"), true);
      assert.equal(await reader.ownBearerToken?.(), undefined);
      assert.equal(plugin.runs(), 1);
      const tokenFile = join(dir, "pod-token");
      writeFileSync(tokenFile, "pod-sa-token\n");
      const inPod = kubeConfigOf(api.url, `{auth-provider: {name: tokenFile, config: {tokenFile: '${tokenFile}'}}}`);
      assert.equal(await kubernetesClusterReader({ kubeConfig: inPod, context: "dev", server: api.url }).ownBearerToken?.(), "pod-sa-token");
      const certs = kubeConfigOf(api.url, "{client-certificate-data: Y2VydA==, client-key-data: a2V5}");
      assert.equal(await kubernetesClusterReader({ kubeConfig: certs, context: "dev", server: api.url }).ownBearerToken?.(), undefined);
    } finally {
      await api.close();
    }
  });

  it(
    "stops a credential plugin that prints no credential within timeoutMs; one that talks to the user gets humanTimeoutMs, and says so",
    { timeout: 10_000 },
    async () => {
      const api = await startFakeKubeApi();
      try {
        const readWith = (name: string, body: string) => {
          const plugin = credentialPlugin(name, body);
          const kubeConfig = kubeConfigOf(api.url, `{exec: {apiVersion: client.authentication.k8s.io/v1, command: '${plugin.path}', interactiveMode: Never}}`);
          const reader = kubernetesClusterReader(
            { kubeConfig, context: "dev", server: api.url },
            { timeoutMs: 300, credentialPlugin: { stderr: new PassThrough(), humanTimeoutMs: 1_000, stdinIsTerminal: false } },
          );
          return reader.secretData("fast-sandbox-system", "fast-sandbox-api-token");
        };
        await assert.rejects(readWith("silent", "sleep 5"), (error: unknown) => {
          assert.ok(error instanceof TimeoutError, String(error));
          assert.match(error.message, /^the credential plugin of user dev \(.*silent\.sh\) printed no credential within 300ms \(--request-timeout\)/);
          return true;
        });
        const started = Date.now();
        await assert.rejects(readWith("device-code", "echo 'enter the code ABCD-EFGH' >&2\nsleep 5"), (error: unknown) => {
          assert.ok(error instanceof TimeoutError, String(error));
          assert.match(error.message, /printed no credential within 1s: it may be waiting for you \(to log in, or to enter a code; its messages are above\)/);
          return true;
        });
        assert.ok(Date.now() - started >= 950, `${Date.now() - started} ms`);
        assert.deepEqual(api.requests, []);
      } finally {
        await api.close();
      }
    },
  );
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
