import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { TimeoutError, UnavailableError } from "@fast-sandbox/api";
import { envdHealthUrl, pollEnvdHealth } from "./envd-readiness.js";

describe("the wait for a new sandbox's daemon (GET /health on its address)", () => {
  let server: http.Server;
  let port: number;
  /** What /health answers next, in order; the last one repeats. */
  let answers: number[] = [];
  let requests: string[] = [];

  before(async () => {
    server = http.createServer((request, response) => {
      requests.push(`${request.method ?? ""} ${request.url ?? ""}`);
      const status = answers.length > 1 ? (answers.shift() ?? 204) : (answers[0] ?? 204);
      if (status === 0) return; // never answers
      response.writeHead(status).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const sandbox = { sandboxID: "k3x9q0m2zt7c1w8r5bn4", address: "127.0.0.1" };

  it("resolves once the daemon answers 204, polling past answers that are not 204", async () => {
    answers = [503, 503, 204];
    requests = [];
    await pollEnvdHealth({ port, intervalMs: 5, timeoutMs: 5000 })(sandbox);
    assert.deepEqual(requests, ["GET /health", "GET /health", "GET /health"]);
  });

  it("fails with a TimeoutError (deadline_exceeded) at its deadline, saying what the daemon last answered", async () => {
    answers = [500];
    const started = Date.now();
    await assert.rejects(pollEnvdHealth({ port, intervalMs: 10, timeoutMs: 1000 })(sandbox), (error: unknown) => {
      assert.ok(error instanceof TimeoutError);
      assert.equal(error.code, "deadline_exceeded");
      assert.match(error.message, new RegExp(`did not answer GET http://127.0.0.1:${port}/health with 204 within 1s \\(last: it answered 500\\)`));
      return true;
    });
    assert.ok(Date.now() - started < 3000, "the deadline bounds the wait");
  });

  it("bounds each try, so a daemon that accepts and never answers does not hold the create", async () => {
    answers = [0];
    const started = Date.now();
    await assert.rejects(pollEnvdHealth({ port, intervalMs: 10, timeoutMs: 400, requestTimeoutMs: 100 })(sandbox), /deadline|did not answer/);
    assert.ok(Date.now() - started < 3000);
  });

  it("reports a refused connection (no daemon listening yet)", async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const free = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    await assert.rejects(pollEnvdHealth({ port: free, intervalMs: 10, timeoutMs: 200 })(sandbox), /ECONNREFUSED/);
  });

  it("stops when the caller aborts", async () => {
    answers = [503];
    const controller = new AbortController();
    const waiting = pollEnvdHealth({ port, intervalMs: 10, timeoutMs: 10_000 })(sandbox, controller.signal);
    setTimeout(() => controller.abort(new Error("client gone")), 50);
    await assert.rejects(waiting, (error: unknown) => error instanceof UnavailableError && /client gone/.test(error.message));
  });

  it("addresses IPv6 sandboxes in brackets, on the daemon's port 49983 by default", () => {
    assert.equal(envdHealthUrl("10.213.0.5"), "http://10.213.0.5:49983/health");
    assert.equal(envdHealthUrl("fd00::5"), "http://[fd00::5]:49983/health");
  });
});
