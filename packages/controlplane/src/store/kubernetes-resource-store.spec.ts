import assert from "node:assert/strict";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ApiException } from "@kubernetes/client-node";
import {
  AlreadyExistsError,
  ConflictError,
  ExpiredError,
  FsbError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
  ValidationError,
  type Sandbox,
  type SandboxPool,
  type SandboxPoolSpec,
} from "@fast-sandbox/api";
import { pino } from "pino";
import { Informer } from "../controller/informer.js";
import { testKubeConfig } from "./kube-config.fixture.js";
import { openKubernetesResourceStore, translateKubernetesError } from "./kubernetes-resource-store.js";
import type { AnyResource } from "./resource-store.js";
import { updateWithRetry } from "./retry-on-conflict.js";

const context = { kind: "Sandbox" as const, key: { namespace: "team", name: "web" }, action: "update" };

/** An error as the generated client throws it: the HTTP code and the Status body as text. */
function apiError(code: number, status: Record<string, unknown>): ApiException<string> {
  return new ApiException(code, "Unknown API Status Code!", JSON.stringify({ kind: "Status", apiVersion: "v1", status: "Failure", code, ...status }), {});
}

describe("translateKubernetesError", () => {
  test("422 is ValidationError naming the field of the causes", () => {
    const error = translateKubernetesError(
      apiError(422, {
        reason: "Invalid",
        message: 'Sandbox.sandbox.fast.io "web" is invalid: [spec.exposedPorts[0]: Invalid value: 70000: …, metadata.labels: …]',
        details: {
          causes: [
            {
              reason: "FieldValueInvalid",
              message: "Invalid value: 70000: spec.exposedPorts[0] in body should be less than or equal to 65535",
              field: "spec.exposedPorts[0]",
            },
            {
              reason: "FieldValueInvalid",
              message: "Invalid value: 70000: spec.exposedPorts[0] in body should be less than or equal to 65535",
              field: "spec.exposedPorts[0]",
            },
            { reason: "FieldValueInvalid", message: 'Invalid value: "b c": a valid label must be …', field: "metadata.labels" },
          ],
        },
      }),
      context,
    );
    assert.ok(error instanceof ValidationError);
    assert.equal(error.field, "spec.exposedPorts[0]");
    assert.equal(error.message, "spec.exposedPorts[0]: Invalid value: 70000: spec.exposedPorts[0] in body should be less than or equal to 65535");
    assert.equal(error.code, "invalid_argument");
  });

  test("422 and 400 without causes are ValidationError with the server's message", () => {
    const error = translateKubernetesError(
      apiError(422, { reason: "Invalid", message: "the server rejected our request due to an error in our request" }),
      context,
    );
    assert.ok(error instanceof ValidationError);
    assert.equal(error.field, "");
    assert.match(error.message, /rejected our request/);
    assert.ok(translateKubernetesError(apiError(400, { reason: "BadRequest", message: "bad" }), context) instanceof ValidationError);
  });

  test("404, 409 and 410 become the errors of the embedded store, naming the object", () => {
    const notFound = translateKubernetesError(apiError(404, { reason: "NotFound", message: 'sandboxes.sandbox.fast.io "web" not found' }), context);
    assert.ok(notFound instanceof NotFoundError);
    assert.equal(notFound.message, "sandbox team/web not found");

    const exists = translateKubernetesError(apiError(409, { reason: "AlreadyExists", message: "already exists" }), context);
    assert.ok(exists instanceof AlreadyExistsError);
    assert.equal(exists.message, "sandbox team/web already exists; choose another name or delete it first");

    const conflict = translateKubernetesError(
      apiError(409, { reason: "Conflict", message: "the object has been modified; please apply your changes to the latest version and try again" }),
      { ...context, sentVersion: "41" },
    );
    assert.ok(conflict instanceof ConflictError);
    assert.match(conflict.message, /sandbox team\/web was modified \(resourceVersion \?, you sent 41\); read it again and retry/);

    const expired = translateKubernetesError(apiError(410, { reason: "Expired", message: "too old resource version: 1 (277)" }), {
      kind: "Sandbox",
      action: "watch",
    });
    assert.ok(expired instanceof ExpiredError);
    assert.equal(expired.message, "too old resource version: 1 (277); list again and watch from the list's resourceVersion");
  });

  test("401, 403, 429, 503, 504 and 500", () => {
    assert.ok(translateKubernetesError(apiError(401, { reason: "Unauthorized", message: "Unauthorized" }), context) instanceof UnauthenticatedError);
    const forbidden = translateKubernetesError(
      apiError(403, {
        reason: "Forbidden",
        message: 'sandboxes.sandbox.fast.io is forbidden: User "system:serviceaccount:team:x" cannot list resource "sandboxes"',
      }),
      context,
    );
    assert.ok(forbidden instanceof PermissionDeniedError);
    assert.match(forbidden.message, /cannot list resource "sandboxes"/);
    assert.ok(translateKubernetesError(apiError(429, { reason: "TooManyRequests", message: "slow down" }), context) instanceof UnavailableError);
    assert.ok(translateKubernetesError(apiError(503, { reason: "ServiceUnavailable", message: "etcd" }), context) instanceof UnavailableError);
    assert.equal(translateKubernetesError(apiError(504, { reason: "Timeout", message: "Too large resource version" }), context).code, "deadline_exceeded");
    assert.equal(translateKubernetesError(apiError(500, { reason: "InternalError", message: "boom" }), context).code, "internal");
  });

  test("a non-JSON body, a watch's HTTP status and connection failures", () => {
    const text = translateKubernetesError(new ApiException(404, "Not Found", "404 page not found", {}), { action: "get" });
    assert.ok(text instanceof NotFoundError);
    assert.equal(text.message, "404 page not found");
    const watchStatus = Object.assign(new Error("Gone"), { statusCode: 410 });
    assert.ok(translateKubernetesError(watchStatus, { kind: "Sandbox", action: "watch" }) instanceof ExpiredError);
    const refused = Object.assign(new Error("request to https://127.0.0.1:1/apis failed, reason: connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" });
    const unavailable = translateKubernetesError(refused, { kind: "Sandbox", action: "list" });
    assert.ok(unavailable instanceof UnavailableError);
    assert.match(unavailable.message, /cannot list sandboxes: the Kubernetes API server is unreachable \(.*ECONNREFUSED/);
    const already = new ConflictError("x");
    assert.equal(translateKubernetesError(already, context), already);
    assert.ok(translateKubernetesError("weird", context) instanceof FsbError);
  });
});

describe("KubernetesResourceStore without a reachable API server", () => {
  function unreachable() {
    return openKubernetesResourceStore({ kubeConfig: testKubeConfig("https://127.0.0.1:1"), logger: { warn: () => undefined } });
  }

  test("calls fail with UnavailableError and watches end with it", async () => {
    const store = unreachable();
    await assert.rejects(store.get("Sandbox", { namespace: "team", name: "web" }), UnavailableError);
    await assert.rejects(store.list("Sandbox"), UnavailableError);
    const watch = store.watch("Sandbox", { resourceVersion: "10" }, () => assert.fail("no event expected"));
    await assert.rejects(watch.done, (error: unknown) => error instanceof UnavailableError && /^cannot watch sandboxes: /.test(error.message));
    await store.close();
    await assert.rejects(store.get("Sandbox", { namespace: "team", name: "web" }), /closed/);
  });

  test("arguments are checked before anything is sent", async () => {
    const store = unreachable();
    assert.throws(() => store.watch("Sandbox", { resourceVersion: "0" }, () => undefined), ValidationError);
    assert.throws(() => store.watch("Nope" as "Sandbox", { resourceVersion: "5" }, () => undefined), ValidationError);
    const invalid = {
      apiVersion: "sandbox.fast.io/v1alpha1" as const,
      kind: "Sandbox" as const,
      metadata: { name: "a", namespace: "t" },
      spec: { image: "", poolRef: "p" },
    };
    await assert.rejects(store.create("Sandbox", invalid), (error: unknown) => error instanceof ValidationError && error.field === "spec.image");
    await assert.rejects(
      store.update("Sandbox", { ...invalid, spec: { image: "x", poolRef: "p" } }),
      (error: unknown) => error instanceof ValidationError && error.field === "metadata.resourceVersion",
    );
    await store.close();
  });
});

describe("KubernetesResourceStore watches on a connection that goes silent", () => {
  /** An "API server" on loopback that answers every watch with 200 and its headers (and what `afterHeaders` writes), then never a byte more nor closes. */
  async function silentServer(afterHeaders?: (response: ServerResponse) => void) {
    const queries: URLSearchParams[] = [];
    const closed: Promise<void>[] = [];
    const server = createServer((request, response) => {
      queries.push(new URL(request.url ?? "/", "http://x").searchParams);
      closed.push(new Promise((resolve) => response.on("close", () => resolve())));
      response.writeHead(200, { "content-type": "application/json" });
      response.flushHeaders();
      afterHeaders?.(response);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const kubeConfig = testKubeConfig(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return { kubeConfig, queries, closed, server };
  }

  test("a watch asks the server to close it after timeoutSeconds, and ends itself cleanly when the server never does", async () => {
    const { kubeConfig, queries, closed, server } = await silentServer();
    const store = openKubernetesResourceStore({ kubeConfig, watchTimeoutSeconds: 1, watchGraceMs: 100, logger: { warn: () => undefined } });
    try {
      const watch = store.watch("Sandbox", { resourceVersion: "10" }, () => assert.fail("no event expected"));
      const outcome = await Promise.race([watch.done.then(() => "ended cleanly"), sleep(15_000).then(() => "still open after 15 s")]);
      assert.equal(outcome, "ended cleanly");
      assert.equal(queries.length, 1);
      assert.equal(queries[0]!.get("timeoutSeconds"), "1");
      assert.equal(queries[0]!.get("resourceVersion"), "10");
      const released = await Promise.race([closed[0]!.then(() => "closed"), sleep(5_000).then(() => "open")]);
      assert.equal(released, "closed", "the watch request is let go, not left open");
    } finally {
      await store.close();
      server.closeAllConnections();
      server.close();
    }
  });

  test("a bookmark is passed to onProgress with its version, not delivered as an event", async () => {
    const { kubeConfig, server } = await silentServer((response) =>
      response.write(
        `${JSON.stringify({ type: "BOOKMARK", object: { kind: "Sandbox", apiVersion: "sandbox.fast.io/v1alpha1", metadata: { resourceVersion: "4242" } } })}\n`,
      ),
    );
    const store = openKubernetesResourceStore({ kubeConfig, logger: { warn: () => undefined } });
    try {
      const progress: string[] = [];
      store.watch("Sandbox", { resourceVersion: "10", onProgress: (version) => progress.push(version) }, () => assert.fail("no event expected"));
      for (let attempt = 0; progress.length === 0; attempt++) {
        assert.ok(attempt < 1000, "the bookmark reaches onProgress");
        await sleep(10);
      }
      assert.deepEqual(progress, ["4242"]);
    } finally {
      await store.close();
      server.closeAllConnections();
      server.close();
    }
  });

  test("by default each watch asks for between 5 and 10 minutes, as client-go does", async () => {
    const { kubeConfig, queries, server } = await silentServer();
    const store = openKubernetesResourceStore({ kubeConfig, logger: { warn: () => undefined } });
    try {
      for (let i = 0; i < 5; i++) store.watch("Sandbox", { resourceVersion: "10" }, () => undefined);
      for (let attempt = 0; queries.length < 5; attempt++) {
        assert.ok(attempt < 1000, `5 watches reach the server (${queries.length} did)`);
        await sleep(10);
      }
      for (const query of queries) {
        const seconds = Number(query.get("timeoutSeconds"));
        assert.ok(Number.isInteger(seconds) && seconds >= 300 && seconds < 600, `timeoutSeconds=${query.get("timeoutSeconds")}`);
      }
    } finally {
      await store.close();
      server.closeAllConnections();
      server.close();
    }
  });

  test("bad watch timeouts are refused with what is allowed", () => {
    const kubeConfig = testKubeConfig("https://127.0.0.1:1");
    assert.throws(() => openKubernetesResourceStore({ kubeConfig, watchTimeoutSeconds: 0.5 }), /0\.5 is not a whole number of seconds >= 1/);
    assert.throws(() => openKubernetesResourceStore({ kubeConfig, watchGraceMs: -1 }), /-1 is not a number of milliseconds >= 0/);
  });
});

describe("KubernetesResourceStore calls to an API server that takes a request and never answers", () => {
  /** `promise`, or a failure saying it is still pending after `ms` (a call without a time limit never settles). */
  function within<T>(promise: Promise<T>, ms: number): Promise<T> {
    return Promise.race([promise, sleep(ms).then(() => assert.fail(`still pending after ${ms} ms`))]);
  }

  /**
   * An "API server" on loopback that reads each request and never answers (nor closes): a server that
   * died after taking it. `answerFrom` (1-based) makes that request and the later ones a list of no
   * objects instead. `closed` resolves when the client lets a request go.
   */
  async function mute(answerFrom = Number.POSITIVE_INFINITY) {
    const requests: string[] = [];
    const closed: Promise<void>[] = [];
    const server = createServer((request, response) => {
      requests.push(`${request.method} ${request.url?.split("?")[0]}`);
      closed.push(new Promise((resolve) => response.on("close", () => resolve())));
      if (requests.length < answerFrom) return;
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ apiVersion: "sandbox.fast.io/v1alpha1", kind: "SandboxList", metadata: { resourceVersion: "42" }, items: [] }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const kubeConfig = testKubeConfig(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    const close = () => {
      server.closeAllConnections();
      server.close();
    };
    return { kubeConfig, requests, closed, close };
  }

  const web: Sandbox = {
    apiVersion: "sandbox.fast.io/v1alpha1",
    kind: "Sandbox",
    metadata: { name: "web", namespace: "team", resourceVersion: "20" },
    spec: { image: "python:3.12", poolRef: "p" },
  };

  test("each call fails with UnavailableError naming it once its time is up, and lets its request go", async () => {
    const { kubeConfig, requests, closed, close } = await mute();
    const store = openKubernetesResourceStore({ kubeConfig, requestTimeoutMs: 200, listTimeoutMs: 400, logger: { warn: () => undefined } });
    const timedOut = (what: string, ms: number) => (error: unknown) =>
      error instanceof UnavailableError && error.message === `cannot ${what}: the Kubernetes API server did not answer within ${ms} ms`;
    try {
      const key = { namespace: "team", name: "web" };
      const calls: [string, number, () => Promise<unknown>][] = [
        ["get sandbox team/web", 200, () => store.get("Sandbox", key)],
        ["list sandboxes", 400, () => store.list("Sandbox")],
        ["list sandboxes", 400, () => store.list("Sandbox", { namespace: "team" })],
        ["create sandbox team/web", 200, () => store.create("Sandbox", web)],
        ["update sandbox team/web", 200, () => store.update("Sandbox", web)],
        ["update the status of sandbox team/web", 200, () => store.updateStatus("Sandbox", { ...web, status: { phase: "Pending" } })],
        ["delete sandbox team/web", 200, () => store.delete("Sandbox", key)],
      ];
      for (const [what, ms, call] of calls) {
        const startedAt = Date.now();
        await assert.rejects(within(call(), ms + 3_000), timedOut(what, ms));
        const tookMs = Date.now() - startedAt;
        // Not before its time (within() above fails a call that never gives up).
        assert.ok(tookMs >= ms - 20, `${what} gave up after ${tookMs} ms`);
      }
      assert.equal(requests.length, calls.length, "every call reached the server");
      const released = await Promise.race([Promise.all(closed).then(() => "closed"), sleep(5_000).then(() => "still open")]);
      assert.equal(released, "closed", "no request is left open");
    } finally {
      await store.close();
      close();
    }
  });

  test("an informer on it lists again after a list the server never answered, and syncs", async () => {
    const { kubeConfig, requests, close } = await mute(2);
    const store = openKubernetesResourceStore({ kubeConfig, listTimeoutMs: 200, watchTimeoutSeconds: 60, logger: { warn: () => undefined } });
    const informer = new Informer({ store, kind: "Sandbox", logger: pino({ level: "silent" }), relistInitialDelayMs: 10 });
    try {
      informer.start();
      const synced = await Promise.race([informer.waitForSync().then(() => "synced"), sleep(10_000).then(() => "not synced after 10 s")]);
      assert.equal(synced, "synced");
      assert.deepEqual(requests.slice(0, 2), ["GET /apis/sandbox.fast.io/v1alpha1/sandboxes", "GET /apis/sandbox.fast.io/v1alpha1/sandboxes"]);
    } finally {
      informer.stop();
      await store.close();
      close();
    }
  });

  test("bad time limits are refused with what is allowed", () => {
    const kubeConfig = testKubeConfig("https://127.0.0.1:1");
    assert.throws(() => openKubernetesResourceStore({ kubeConfig, requestTimeoutMs: 0 }), /requestTimeoutMs: 0 is not a number of milliseconds > 0/);
    assert.throws(() => openKubernetesResourceStore({ kubeConfig, listTimeoutMs: Number.NaN }), /listTimeoutMs: NaN is not a number of milliseconds > 0/);
  });
});

describe("KubernetesResourceStore writes to an object the CRD accepted and the checks refuse (written with kubectl)", () => {
  /**
   * An "API server" on loopback holding one object: GET answers it; a JSON patch applies its ops
   * (409 at another resourceVersion); a PUT of the status replaces the status. Each write bumps the
   * resourceVersion. `requests` records the method and path of every request.
   */
  async function fakeApiServer(object: AnyResource) {
    const stored = structuredClone(object) as Record<string, any>;
    const requests: string[] = [];
    const server = createServer((request, response) => {
      let text = "";
      request.on("data", (chunk: Buffer) => (text += chunk.toString()));
      request.on("end", () => {
        requests.push(`${request.method} ${request.url?.split("?")[0]}`);
        const answer = (code: number, body: unknown) => {
          response.writeHead(code, { "content-type": "application/json" });
          response.end(JSON.stringify(body));
        };
        const conflict = () => answer(409, { kind: "Status", code: 409, reason: "Conflict", message: "the object has been modified" });
        if (request.method === "PATCH") {
          const ops = JSON.parse(text) as { op: string; path: string; value: unknown }[];
          const sent = ops.find((op) => op.path === "/metadata/resourceVersion")?.value;
          if (sent !== stored.metadata.resourceVersion) return conflict();
          for (const { path, value } of ops) {
            const [part, field] = path.slice(1).split("/") as [string, string | undefined];
            if (field === undefined) stored[part] = value;
            else stored[part][field] = value;
          }
        } else if (request.method === "PUT") {
          const body = JSON.parse(text) as Record<string, any>;
          if (body.metadata.resourceVersion !== stored.metadata.resourceVersion) return conflict();
          stored.status = body.status;
        }
        if (request.method !== "GET") stored.metadata.resourceVersion = String(Number(stored.metadata.resourceVersion) + 1);
        answer(200, stored);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const store = openKubernetesResourceStore({
      kubeConfig: testKubeConfig(`http://127.0.0.1:${(server.address() as AddressInfo).port}`),
      logger: { warn: () => undefined },
    });
    const close = async () => {
      await store.close();
      server.close();
    };
    return { store, requests, stored, close };
  }

  function pool(spec: Partial<SandboxPoolSpec>): SandboxPool {
    return {
      apiVersion: "sandbox.fast.io/v1alpha1",
      kind: "SandboxPool",
      metadata: {
        name: "p",
        namespace: "team",
        uid: "u1",
        resourceVersion: "10",
        deletionTimestamp: "2026-01-01T00:00:00Z",
        finalizers: ["sandbox.fast.io/pool-cleanup"],
      },
      spec: { capacity: { poolMin: 0, poolMax: 1 }, maxSandboxesPerPod: 2, ...spec },
    };
  }

  function sandbox(image: string): Sandbox {
    return {
      apiVersion: "sandbox.fast.io/v1alpha1",
      kind: "Sandbox",
      metadata: { name: "web", namespace: "team", uid: "u2", resourceVersion: "20" },
      spec: { image, poolRef: "p" },
    };
  }

  const key = { namespace: "team", name: "p" };
  const withoutFinalizers = <T extends AnyResource>(current: T): T => ({ ...current, metadata: { ...current.metadata, finalizers: [] } });

  test("a pool's finalizer is removed though its spec's image is upper case or a prewarm image has a space", async () => {
    for (const spec of [{ image: "registry.example.com/Team/app:1" }, { prewarmImages: ["python:3.12 "] }]) {
      const { store, requests, stored, close } = await fakeApiServer(pool(spec));
      try {
        await updateWithRetry(store, "SandboxPool", key, withoutFinalizers, { uid: "u1" });
        assert.deepEqual(stored.metadata.finalizers, [], JSON.stringify(spec));
        assert.deepEqual(requests, [
          "GET /apis/sandbox.fast.io/v1alpha1/namespaces/team/sandboxpools/p",
          // The read of the stored spec, which the write leaves as it is.
          "GET /apis/sandbox.fast.io/v1alpha1/namespaces/team/sandboxpools/p",
          "PATCH /apis/sandbox.fast.io/v1alpha1/namespaces/team/sandboxpools/p",
        ]);
      } finally {
        await close();
      }
    }
  });

  test("an unconditional update that leaves such a spec as it is is written", async () => {
    const { store, stored, close } = await fakeApiServer(pool({ image: "registry.example.com/Team/app:1" }));
    try {
      const given = pool({ image: "registry.example.com/Team/app:1" });
      delete given.metadata.resourceVersion;
      given.metadata.labels = { team: "a" };
      await store.update("SandboxPool", given, { unconditional: true });
      assert.deepEqual(stored.metadata.labels, { team: "a" });
    } finally {
      await close();
    }
  });

  test("an update that changes the spec is refused for what the checks refuse, before anything is written", async () => {
    // The stored spec is refused too: the write changes it (to another refused one), so it is refused.
    for (const storedSpec of [{ image: "python:3.12" }, { image: "registry.example.com/Team/app:1" }]) {
      const { store, requests, close } = await fakeApiServer(pool(storedSpec));
      try {
        const given = pool({ image: "registry.example.com/Team/app:2" });
        await assert.rejects(
          store.update("SandboxPool", given),
          (error: unknown) => error instanceof ValidationError && error.field === "spec.image" && /must be lower-case/.test(error.message),
        );
        delete given.metadata.resourceVersion;
        await assert.rejects(store.update("SandboxPool", given, { unconditional: true }), ValidationError);
        assert.ok(!requests.some((request) => request.startsWith("PATCH")), requests.join(", "));
      } finally {
        await close();
      }
    }
  });

  test("a malformed agentTemplate left as stored does not block the finalizer's removal; changed, it is refused", async () => {
    const agentTemplate = { spec: { containers: [{ name: "agent", env: { FOO: "1" } }] } };
    const { store, stored, close } = await fakeApiServer(pool({ agentTemplate }));
    try {
      await updateWithRetry(store, "SandboxPool", key, withoutFinalizers);
      assert.deepEqual(stored.metadata.finalizers, []);
      await assert.rejects(
        updateWithRetry(store, "SandboxPool", key, (current) => ({ ...current, spec: { ...current.spec, agentTemplate: { spec: { volumes: {} } } } })),
        (error: unknown) => error instanceof ValidationError && error.field === "spec.agentTemplate.spec.volumes",
      );
    } finally {
      await close();
    }
  });

  test("labels are checked whatever the spec, before anything is sent", async () => {
    const { store, requests, close } = await fakeApiServer(pool({ image: "registry.example.com/Team/app:1" }));
    try {
      const given = pool({ image: "registry.example.com/Team/app:1" });
      given.metadata.labels = { "Bad Key!": "x" };
      await assert.rejects(
        store.update("SandboxPool", given),
        (error: unknown) => error instanceof ValidationError && error.field === 'metadata.labels["Bad Key!"]',
      );
      assert.deepEqual(requests, []);
    } finally {
      await close();
    }
  });

  test("an update of such an object at a stale resourceVersion is a conflict, so a retry reads it again", async () => {
    const { store, requests, close } = await fakeApiServer(pool({ image: "registry.example.com/Team/app:1" }));
    try {
      const given = pool({ image: "registry.example.com/Team/app:1" });
      given.metadata.resourceVersion = "9";
      given.metadata.finalizers = [];
      await assert.rejects(store.update("SandboxPool", given), ConflictError);
      assert.ok(!requests.some((request) => request.startsWith("PATCH")));
    } finally {
      await close();
    }
  });

  test("a status write checks the status only: it is written for a sandbox whose image is refused, and a bad status is refused", async () => {
    const { store, requests, stored, close } = await fakeApiServer(sandbox("Not A Valid Image"));
    try {
      const written = await updateWithRetry(
        store,
        "Sandbox",
        { namespace: "team", name: "web" },
        (current) => ({ ...current, status: { phase: "Failed", conditions: [{ type: "Ready", status: "False", reason: "InvalidImage" }] } }),
        { status: true },
      );
      assert.equal(written?.status?.phase, "Failed");
      assert.equal(stored.status.phase, "Failed");
      const bad = { ...stored, status: { phase: "Zombie" } } as unknown as Sandbox;
      await assert.rejects(store.updateStatus("Sandbox", bad), (error: unknown) => error instanceof ValidationError && error.field === "status.phase");
      assert.equal(requests.filter((request) => request.startsWith("PUT")).length, 1);
    } finally {
      await close();
    }
  });
});
