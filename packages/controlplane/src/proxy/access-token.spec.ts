import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { accessTokenMatches, hashAccessToken, newAccessToken } from "./access-token.js";

describe("access tokens", () => {
  it("are 43 base64url characters, different every time", () => {
    const tokens = new Set(Array.from({ length: 100 }, () => newAccessToken()));
    assert.equal(tokens.size, 100);
    for (const token of tokens) assert.match(token, /^[A-Za-z0-9_-]{43}$/);
  });

  it("are kept as sha256:<hex>, which does not contain the token", () => {
    const token = newAccessToken();
    const hash = hashAccessToken(token);
    assert.match(hash, /^sha256:[0-9a-f]{64}$/);
    assert.ok(!hash.includes(token));
    assert.equal(hashAccessToken("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });

  it("match only the token they were made from", () => {
    const token = newAccessToken();
    const hash = hashAccessToken(token);
    assert.equal(accessTokenMatches(token, hash), true);
    assert.equal(accessTokenMatches(newAccessToken(), hash), false);
    assert.equal(accessTokenMatches(`${token} `, hash), false);
    assert.equal(accessTokenMatches(token.slice(1), hash), false);
  });

  it("never match when the token or the hash is missing or malformed", () => {
    const token = newAccessToken();
    assert.equal(accessTokenMatches(undefined, hashAccessToken(token)), false);
    assert.equal(accessTokenMatches("", hashAccessToken("")), false);
    assert.equal(accessTokenMatches(token, undefined), false);
    assert.equal(accessTokenMatches(token, hashAccessToken(token).replace("sha256:", "md5:")), false);
    assert.equal(accessTokenMatches(token, "sha256:abcd"), false);
  });
});
