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
} from "@fast-sandbox/api";
import { testKubeConfig } from "./kube-config.fixture.js";
import { openKubernetesResourceStore, translateKubernetesError } from "./kubernetes-resource-store.js";

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
