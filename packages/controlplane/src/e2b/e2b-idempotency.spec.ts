import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { idempotencyRequestId, parseIdempotencyKey, requestFingerprint } from "./e2b-idempotency.js";
import { parseNewSandbox } from "./e2b-requests.js";

describe("E2B's Idempotency-Key", () => {
  it("takes what E2B's SDKs send (1 to 255 lower-case letters, digits, hyphens), none without the header", () => {
    assert.equal(parseIdempotencyKey(undefined), undefined);
    for (const key of ["a", "0", "-", "3f0c2a6e-5b1d-4c8e-9a7f-0e1d2c3b4a59", "z".repeat(255)]) assert.equal(parseIdempotencyKey(key), key);
  });

  it("refuses any other key as a ValidationError of the header, and a header sent twice", () => {
    for (const value of ["", "A", "a_b", "a b", "a.b", "ä", "a".repeat(256), ["a", "b"]]) {
      assert.throws(
        () => parseIdempotencyKey(value),
        (error: unknown) => error instanceof ValidationError && error.field === "Idempotency-Key",
        JSON.stringify(value),
      );
    }
  });

  it("maps a key onto a request id of its own (never a fast-path client's plain id), hashed when it would be too long", () => {
    assert.equal(idempotencyRequestId("abc"), "e2b:abc");
    assert.equal(idempotencyRequestId("a".repeat(249)), `e2b:${"a".repeat(249)}`);
    const long = idempotencyRequestId("a".repeat(250));
    assert.match(long, /^e2b:sha256:[0-9a-f]{64}$/);
    assert.notEqual(long, idempotencyRequestId(`${"a".repeat(249)}b`));
    assert.ok(idempotencyRequestId("z".repeat(255)).length <= 253, "within what the fast path keeps");
  });

  it("fingerprints a create by what it asks for, the order of metadata and envs aside", () => {
    const base = { templateID: "base", timeout: 300, metadata: { a: "1", b: "2" }, envVars: { X: "1" } };
    const fingerprint = (body: Record<string, unknown>, defaultTimeout?: number) => requestFingerprint(parseNewSandbox({ ...base, ...body }, defaultTimeout));
    const same = fingerprint({});
    assert.match(same, /^[0-9a-f]{64}$/);
    assert.equal(fingerprint({ metadata: { b: "2", a: "1" } }), same);
    assert.equal(fingerprint({ secure: true }), same, "what changes nothing of the sandbox is not part of it");
    for (const body of [
      { templateID: "python" },
      { timeout: 301 },
      { metadata: { a: "1" } },
      { metadata: { a: "1", b: "3" } },
      { envVars: {} },
      { envVars: { X: "2" } },
      { allow_internet_access: false },
      { allow_internet_access: true },
    ]) {
      assert.notEqual(fingerprint(body), same, JSON.stringify(body));
    }
    // A timeout not sent is the route's default: the same as sending it.
    assert.equal(fingerprint({ timeout: undefined }, 300), same);
    assert.notEqual(fingerprint({ timeout: undefined }, 15), same);
  });
});
