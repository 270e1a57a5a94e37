import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  FailedPreconditionError,
  FsbError,
  NotFoundError,
  PermissionDeniedError,
  TimeoutError,
  UnauthenticatedError,
  UnavailableError,
  ValidationError,
  toConnectError,
} from "@fast-sandbox/api";
import { CommandExitError, callError, daemonCallError, httpError } from "./errors.js";

const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status });

describe("CommandExitError", () => {
  it("is an FsbError carrying the result, whose message says how it ended and the last line of stderr", () => {
    const error = new CommandExitError({ exitCode: 2, stdout: "out", stderr: "warning\nls: /x: No such file\n" }, 'command "ls /x"');
    assert.ok(error instanceof FsbError);
    assert.equal(error.name, "CommandExitError");
    assert.deepEqual([error.exitCode, error.stdout, error.stderr], [2, "out", "warning\nls: /x: No such file\n"]);
    assert.equal(error.message, 'command "ls /x" exited with code 2: ls: /x: No such file');
    const killed = new CommandExitError({ exitCode: -1, stdout: "", stderr: "", error: "signal: killed" });
    assert.equal(killed.message, "the command was stopped (signal: killed)");
  });
});

describe("callError: the one translation of failed Connect calls", () => {
  it("keeps the caller's abort as its reason", () => {
    const controller = new AbortController();
    const reason = new Error("stop");
    controller.abort(reason);
    assert.equal(callError(new ConnectError("canceled", Code.Canceled), { what: "x", signal: controller.signal }), reason);
  });

  it("names the deadline and the option of a timeout Connect enforced", () => {
    const error = callError(new ConnectError("the operation timed out", Code.DeadlineExceeded), { what: "GetSandbox a", timeoutMs: 50 });
    assert.ok(error instanceof TimeoutError);
    assert.equal(error.message, "GetSandbox a did not finish within 50 ms (requestTimeoutMs); pass a larger requestTimeoutMs, or 0 for no limit");
  });

  it("keeps a server's own timeout message, and maps everything else by its code", () => {
    const server = callError(toConnectError(new TimeoutError("the agent did not answer")), { what: "x", timeoutMs: 50 });
    assert.ok(server instanceof TimeoutError);
    assert.equal(server.message, "the agent did not answer");
    assert.ok(callError(new ConnectError("gone", Code.NotFound), { what: "x" }) instanceof NotFoundError);
  });

  it("for the daemon: prefixes what was asked, keeping the class, and explains the proxy's refusals", () => {
    const notFound = daemonCallError(new ConnectError("stat /x: no such file or directory", Code.NotFound), {
      what: "looking up /x in sandbox web",
      sandbox: "web",
    });
    assert.ok(notFound instanceof NotFoundError);
    assert.equal(notFound.message, "looking up /x in sandbox web: stat /x: no such file or directory");
    const unavailable = daemonCallError(new ConnectError("HTTP 502", Code.Unavailable), { what: "listing / in sandbox web", sandbox: "web" });
    assert.ok(unavailable instanceof UnavailableError);
    assert.match(unavailable.message, /sandbox web is not reachable through the sandbox proxy/);
  });
});

describe("httpError: the daemon's and the proxy's HTTP answers", () => {
  const context = { what: "reading /x in sandbox web", sandbox: "web" };
  for (const [status, type] of [
    [400, ValidationError],
    [401, UnauthenticatedError],
    [403, PermissionDeniedError],
    [404, NotFoundError],
    [502, UnavailableError],
    [503, UnavailableError],
  ] as const) {
    it(`${status} becomes ${type.name}, with the body's message`, async () => {
      const error = await httpError(json(status, { message: "the reason", code: status }), context);
      assert.ok(error instanceof type);
      assert.match(error.message, /reading \/x in sandbox web: the reason/);
    });
  }

  it("409, the proxy's answer for a paused sandbox, is a FailedPreconditionError that says to resume it, over plain HTTP and Connect alike", async () => {
    const plain = await httpError(json(409, { sandboxId: "x", message: "The sandbox is paused", code: 409 }), context);
    assert.ok(plain instanceof FailedPreconditionError);
    assert.match(plain.message, /The sandbox is paused \(sandbox web is paused: resume it first/);
    const rpc = daemonCallError(new ConnectError("HTTP 409", Code.Unknown), { what: "listing / in sandbox web", sandbox: "web" });
    assert.ok(rpc instanceof FailedPreconditionError);
    assert.match(rpc.message, /sandbox web is paused: resume it first/);
  });

  it("the proxy's 502 for an unknown instance (fsb-error-code: not_found) is a NotFoundError saying the sandbox is gone, over plain HTTP and a Connect stream alike", async () => {
    const body = { sandboxId: "x", message: "The sandbox was not found", code: 502 };
    const plain = await httpError(new Response(JSON.stringify(body), { status: 502, headers: { "fsb-error-code": "not_found" } }), context);
    assert.ok(plain instanceof NotFoundError);
    assert.match(plain.message, /The sandbox was not found \(sandbox web is gone: deleted or expired\)/);
    // A stream's failure: Connect read no body, only the headers.
    const stream = daemonCallError(new ConnectError("HTTP 502", Code.Unavailable, new Headers({ "fsb-error-code": "not_found" })), {
      what: "running ls in sandbox web",
      sandbox: "web",
    });
    assert.ok(stream instanceof NotFoundError);
    assert.match(stream.message, /^running ls in sandbox web: .*sandbox web is gone/);
    // A 502 without the code (a port that does not answer) stays a retryable Unavailable.
    assert.ok((await httpError(json(502, { message: "The sandbox is running but port 8080 is not open", code: 502 }), context)) instanceof UnavailableError);
  });

  it("takes a body that is not JSON as the message, and an empty one as the status", async () => {
    assert.match((await httpError(new Response("plain words", { status: 500 }), context)).message, /: plain words \(HTTP 500\)$/);
    assert.match((await httpError(new Response(null, { status: 500 }), context)).message, /: HTTP 500$/);
    assert.equal((await httpError(json(507, { message: "disk full" }), context)).code, "no_capacity");
  });
});
