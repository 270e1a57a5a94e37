import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseAuthChallenges } from "./auth-challenge.js";

describe("parseAuthChallenges", () => {
  it("reads Docker Hub's bearer challenge", () => {
    assert.deepEqual(parseAuthChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"'), [
      {
        scheme: "bearer",
        params: { realm: "https://auth.docker.io/token", service: "registry.docker.io", scope: "repository:library/busybox:pull" },
      },
    ]);
  });

  it("reads the distribution server's htpasswd challenge", () => {
    assert.deepEqual(parseAuthChallenges('Basic realm="basic-realm"'), [{ scheme: "basic", params: { realm: "basic-realm" } }]);
  });

  it("splits several challenges and lower-cases schemes and parameter names", () => {
    assert.deepEqual(parseAuthChallenges('Basic realm="a", BEARER Realm="https://t/x", Service=reg , error="insufficient_scope"'), [
      { scheme: "basic", params: { realm: "a" } },
      { scheme: "bearer", params: { realm: "https://t/x", service: "reg", error: "insufficient_scope" } },
    ]);
  });

  it("keeps commas, spaces and escaped quotes inside quoted values", () => {
    assert.deepEqual(parseAuthChallenges('Bearer realm="https://t/token",scope="repository:a:pull,push repository:b:pull",note="say \\"hi\\""'), [
      { scheme: "bearer", params: { realm: "https://t/token", scope: "repository:a:pull,push repository:b:pull", note: 'say "hi"' } },
    ]);
  });

  it("accepts a scheme without parameters and ignores an empty header", () => {
    assert.deepEqual(parseAuthChallenges("Basic"), [{ scheme: "basic", params: {} }]);
    assert.deepEqual(parseAuthChallenges(""), []);
    assert.deepEqual(parseAuthChallenges("   "), []);
  });
});
