import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import {
  AlreadyExistsError,
  BusyError,
  UpstreamUnavailableError,
  ConflictError,
  ExpiredError,
  FailedPreconditionError,
  FsbError,
  NoCapacityError,
  NotFoundError,
  PermissionDeniedError,
  TimeoutError,
  UnauthenticatedError,
  UnavailableError,
  ValidationError,
} from "../errors.js";
import { PoolService } from "../gen/fastsandbox/v1alpha1/sandbox_service_pb.js";
import { fromConnectError, toConnectError } from "./connect-errors.js";

/** One of each FsbError subclass (and the base class with codes that have no subclass). */
const errors: [string, () => FsbError, Code][] = [
  ["ValidationError", () => new ValidationError("spec.exposedPorts[0]", "0 is out of range; allowed: 1..65535"), Code.InvalidArgument],
  ["ValidationError without a field", () => new ValidationError("", "no objects in the file"), Code.InvalidArgument],
  ["NotFoundError", () => new NotFoundError("sandbox default/a not found"), Code.NotFound],
  ["AlreadyExistsError", () => new AlreadyExistsError("sandbox default/a already exists"), Code.AlreadyExists],
  ["ConflictError", () => new ConflictError("resourceVersion 3 is stale"), Code.Aborted],
  ["NoCapacityError", () => new NoCapacityError("no agent of pool default has a free slot"), Code.ResourceExhausted],
  ["UnauthenticatedError", () => new UnauthenticatedError("missing bearer token"), Code.Unauthenticated],
  ["UnavailableError", () => new UnavailableError("agent-0 is not reachable"), Code.Unavailable],
  ["BusyError", () => new BusyError("containerd did not list the sandboxes within 1750 ms"), Code.Unavailable],
  ["UpstreamUnavailableError", () => new UpstreamUnavailableError("registry r.io is unreachable at https://r.io (ENOTFOUND)"), Code.Unavailable],
  ["FailedPreconditionError", () => new FailedPreconditionError("the pool is being deleted"), Code.FailedPrecondition],
  ["ExpiredError", () => new ExpiredError("resourceVersion 1 is too old; list again"), Code.FailedPrecondition],
  ["PermissionDeniedError", () => new PermissionDeniedError("registry r.io denied access to team/app"), Code.PermissionDenied],
  ["TimeoutError", () => new TimeoutError("too slow"), Code.DeadlineExceeded],
  ["FsbError internal", () => new FsbError("internal", "boom"), Code.Internal],
];

function assertSameError(actual: FsbError, expected: FsbError): void {
  assert.equal(actual.constructor, expected.constructor);
  assert.equal(actual.name, expected.name);
  assert.equal(actual.code, expected.code);
  assert.equal(actual.message, expected.message);
  if (expected instanceof ValidationError) {
    assert.ok(actual instanceof ValidationError);
    assert.equal(actual.field, expected.field);
  }
}

/** A client whose one call throws `error` on the server side, translated as a real service does. */
function clientThrowing(error: unknown) {
  const transport = createRouterTransport(({ service }) => {
    service(PoolService, {
      getSandboxPool() {
        throw toConnectError(error);
      },
    });
  });
  return createClient(PoolService, transport);
}

async function overTheWire(error: unknown): Promise<FsbError> {
  try {
    await clientThrowing(error).getSandboxPool({
      name: "p",
      namespace: "default",
    });
  } catch (thrown) {
    return fromConnectError(thrown);
  }
  assert.fail("the call should have failed");
}

describe("toConnectError / fromConnectError", () => {
  for (const [name, make, connectCode] of errors) {
    it(`${name} becomes Connect code ${Code[connectCode]} and comes back the same`, () => {
      const original = make();
      const connect = toConnectError(original);
      assert.ok(connect instanceof ConnectError);
      assert.equal(connect.code, connectCode);
      assert.equal(connect.rawMessage, original.message);
      assertSameError(fromConnectError(connect), original);
    });

    it(`${name} comes back the same across a Connect call`, async () => {
      const original = make();
      assertSameError(await overTheWire(original), original);
    });
  }

  it("keeps a validation field with characters headers cannot carry and a colon, without doubling it in the message", async () => {
    const original = new ValidationError("metadata.labels.日本:x", "expected string: got 1");
    const back = await overTheWire(original);
    assert.ok(back instanceof ValidationError);
    assert.equal(back.field, "metadata.labels.日本:x");
    assert.equal(back.message, "metadata.labels.日本:x: expected string: got 1");
  });

  it("turns anything else thrown into internal, keeping the message", async () => {
    const connect = toConnectError(new TypeError("cannot read x of undefined"));
    assert.equal(connect.code, Code.Internal);
    const back = fromConnectError(connect);
    assert.equal(back.constructor, FsbError);
    assert.equal(back.code, "internal");
    assert.equal(back.message, "cannot read x of undefined");
    const overWire = await overTheWire("a thrown string");
    assert.equal(overWire.code, "internal");
    assert.equal(overWire.message, "a thrown string");
  });

  it("maps a plain ConnectError without Fast Sandbox metadata by its Connect code", () => {
    const notFound = fromConnectError(new ConnectError("no such route", Code.NotFound));
    assert.ok(notFound instanceof NotFoundError);
    assert.equal(notFound.message, "no such route");
    const unknown = fromConnectError(new ConnectError("strange", Code.DataLoss));
    assert.equal(unknown.code, "internal");
  });

  it("maps a deadline the client itself enforced (no metadata) to TimeoutError", () => {
    const error = fromConnectError(new ConnectError("the operation timed out", Code.DeadlineExceeded));
    assert.ok(error instanceof TimeoutError);
    assert.equal(error.code, "deadline_exceeded");
  });

  it("maps a network failure to unavailable", () => {
    const error = fromConnectError(new ConnectError("connect ECONNREFUSED", Code.Unavailable));
    assert.ok(error instanceof UnavailableError);
  });

  it("maps a connection reset (Aborted without Fast Sandbox metadata) to unavailable, not to a conflict", () => {
    const error = fromConnectError(new ConnectError("read ECONNRESET", Code.Aborted));
    assert.ok(error instanceof UnavailableError);
    assert.ok(!(error instanceof ConflictError));
    assert.match(error.message, /connection was lost: read ECONNRESET/);
    assert.ok(fromConnectError(toConnectError(new ConflictError("stale"))) instanceof ConflictError, "a server's conflict stays one");
  });

  it("passes FsbErrors and ConnectErrors through unchanged", () => {
    const fsb = new NotFoundError("x");
    assert.equal(fromConnectError(fsb), fsb);
    const connect = new ConnectError("y", Code.Canceled);
    assert.equal(toConnectError(connect), connect);
  });
});
