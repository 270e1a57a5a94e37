import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, type Sandbox } from "@fast-sandbox/api";
import { hashAccessToken } from "./access-token.js";
import { resolveProxyTarget, type ProxyTargetSources } from "./proxy-target.js";
import { SignedFileLookup } from "./signed-file-lookup.js";
import { fileSignature, parseSignedFileRequest, signatureExpired, signedBy, signedFileTarget } from "./signed-file-url.js";

// Vectors computed with E2B's Python SDK 2.63.0 (e2b.sandbox.signature.get_signature).
const TOKEN = "tok-123";
const READ_VECTOR = "v1_/32C5Ge725pBBORGKiZhOX5L2fnIcYhdMwp4m52HxYw";
const WRITE_VECTOR = "v1_qdkbGXwc0GnQjvQacfa+GUC0nBSOb0zxADyMejFFNV0";

function fileUrl(query: Record<string, string>): string {
  return `/files?${new URLSearchParams(query).toString()}`;
}

describe("E2B's presigned file URLs", () => {
  it("signs as E2B's SDK does", () => {
    assert.equal(fileSignature({ path: "/tmp/a.txt", operation: "read", username: "" }, TOKEN), READ_VECTOR);
    assert.equal(fileSignature({ path: "/home/user/x y.txt", operation: "write", username: "user" }, TOKEN), WRITE_VECTOR);
  });

  it("parses GET (read) and POST (write) /files with a signature, and nothing else", () => {
    const read = parseSignedFileRequest("GET", fileUrl({ path: "/tmp/a.txt", signature: READ_VECTOR }));
    assert.deepEqual(read, { path: "/tmp/a.txt", operation: "read", username: "", signature: READ_VECTOR });
    assert.ok(read && !("malformed" in read) && signedBy(read, TOKEN));
    assert.ok(read && !("malformed" in read) && !signedBy(read, "another-token"));
    const write = parseSignedFileRequest(
      "POST",
      fileUrl({ path: "/home/user/x y.txt", username: "user", signature: WRITE_VECTOR, signature_expiration: "1900000000" }),
    );
    assert.ok(write && !("malformed" in write));
    assert.equal(write.operation, "write");
    assert.equal(write.expiration, 1900000000);
    assert.equal(parseSignedFileRequest("GET", fileUrl({ path: "/tmp/a.txt" })), undefined);
    assert.equal(parseSignedFileRequest("PUT", fileUrl({ path: "/tmp/a.txt", signature: READ_VECTOR })), undefined);
    assert.equal(parseSignedFileRequest("GET", `/other?${new URLSearchParams({ path: "/a", signature: READ_VECTOR }).toString()}`), undefined);
    assert.equal(parseSignedFileRequest("GET", fileUrl({ path: "/a", signature: "v1_short" })), undefined);
    assert.equal(parseSignedFileRequest("GET", fileUrl({ path: "/a", signature: READ_VECTOR, signature_expiration: "soon" })), undefined);
  });

  it("refuses a signed query the daemon could read otherwise: '#', ';', a bad %-escape, a repeated signed parameter", () => {
    const signed = fileUrl({ path: "/tmp/a.txt", signature: READ_VECTOR });
    for (const [url, why] of [
      [`${signed}#/../../etc/shadow`, "'#'"],
      [`/files?path=/tmp/a.txt%23/../../etc/shadow&signature=${encodeURIComponent(READ_VECTOR)}#x`, "'#'"],
      [`/files?path=/x;y&path=/etc/shadow&signature=${encodeURIComponent(READ_VECTOR)}`, "';'"],
      [`/files?path=%zz&path=/etc/shadow&signature=${encodeURIComponent(READ_VECTOR)}`, "%-escape"],
      [`${signed}&path=/etc/shadow`, "repeats the path"],
      [`${fileUrl({ path: "/tmp/a.txt", username: "", signature: READ_VECTOR })}&username=root`, "repeats the username"],
      [`${signed}&signature=${encodeURIComponent(READ_VECTOR)}`, "repeats the signature"],
    ] as const) {
      const parsed = parseSignedFileRequest("GET", url);
      assert.ok(parsed && "malformed" in parsed && parsed.malformed.includes(why), `${url}: ${JSON.stringify(parsed)}`);
    }
    // An encoded '#' or ';' in the path is the path's own character: signed as such, forwarded as such.
    const encoded = parseSignedFileRequest("GET", fileUrl({ path: "/tmp/a#b;c.txt", signature: READ_VECTOR }));
    assert.ok(encoded && !("malformed" in encoded) && encoded.path === "/tmp/a#b;c.txt");
  });

  it("calls a request target that is no URL (Node's parser takes `http://[`) malformed: a 400, not the proxy's failure", () => {
    for (const url of ["http://[", "http://[::1", "http://a:b/", "http://:99999/"]) {
      const parsed = parseSignedFileRequest("GET", url);
      assert.ok(parsed && "malformed" in parsed && /is not a URL/.test(parsed.malformed), url);
    }
  });

  it("the daemon is sent a target rebuilt from what the signature covers, nothing else of the caller's query", () => {
    const parsed = parseSignedFileRequest(
      "POST",
      `${fileUrl({ path: "/home/user/x y+z.txt", username: "user", signature: WRITE_VECTOR, signature_expiration: "1900000000" })}&extra=1`,
    );
    assert.ok(parsed && !("malformed" in parsed));
    const target = signedFileTarget(parsed);
    const query = new URL(target, "http://x").searchParams;
    assert.deepEqual([...query.keys()], ["path", "username", "signature", "signature_expiration"]);
    assert.equal(query.get("path"), "/home/user/x y+z.txt");
    assert.equal(query.get("username"), "user");
    assert.equal(query.get("signature"), WRITE_VECTOR);
    assert.ok(!/[#;]/.test(target));
  });

  it("expires at its expiration, never without one", () => {
    const base = { path: "/a", operation: "read" as const, username: "", signature: READ_VECTOR };
    assert.equal(signatureExpired({ ...base, expiration: 100 }, 101), true);
    assert.equal(signatureExpired({ ...base, expiration: 100 }, 100), false);
    assert.equal(signatureExpired(base, 10 ** 12), false);
  });

  describe("routing by the proxy", () => {
    const sandbox = (name: string, sandboxID: string, token: string): Sandbox => ({
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: { name, namespace: "default" },
      spec: { image: "busybox", poolRef: "default" },
      status: { phase: "Running", assignedPod: "agent-0", sandboxID, sandboxIP: "10.213.0.9", accessTokenHash: hashAccessToken(token) },
    });
    const mine = sandbox("mine", "aaaaaaaaaaaaaaaaaaaa", TOKEN);
    const other = sandbox("other", "bbbbbbbbbbbbbbbbbbbb", "other-token");
    const sources = (signing: { sandbox: Sandbox; token: string }[]): ProxyTargetSources => ({
      lookup: () => Promise.resolve(undefined),
      agentAddress: () => "127.0.0.1",
      domain: "localhost",
      signedFiles: new SignedFileLookup({
        signers: { list: () => signing, tokenOf: (sandbox) => signing.find((s) => s.sandbox === sandbox)?.token },
        lookup: (id) => Promise.resolve(signing.find((s) => s.sandbox.status?.sandboxID === id)?.sandbox),
      }),
    });

    it("sends a URL without a route to the daemon of the sandbox whose token signed it, without X-Access-Token", async () => {
      const target = await resolveProxyTarget(
        { host: "127.0.0.1:7072" },
        sources([
          { sandbox: other, token: "other-token" },
          { sandbox: mine, token: TOKEN },
        ]),
        {
          method: "GET",
          url: fileUrl({ path: "/tmp/a.txt", signature: READ_VECTOR }),
        },
      );
      assert.deepEqual(target, {
        sandboxId: "aaaaaaaaaaaaaaaaaaaa",
        namespace: "default",
        name: "mine",
        host: "10.213.0.9",
        port: 49983,
        path: `/files?${new URLSearchParams({ path: "/tmp/a.txt", username: "", signature: READ_VECTOR }).toString()}`,
        accessTokenHash: hashAccessToken(TOKEN),
      });
    });

    it("refuses a signed URL whose query could be read two ways (400), before any lookup", async () => {
      const refused = await resolveProxyTarget({ host: "127.0.0.1:7072" }, sources([{ sandbox: mine, token: TOKEN }]), {
        method: "GET",
        url: `${fileUrl({ path: "/tmp/a.txt", signature: READ_VECTOR })}#/../../etc/shadow`,
      });
      assert.ok("body" in refused && refused.status === 400 && /one way only/.test(refused.body.message), JSON.stringify(refused));
    });

    it("refuses a signature no sandbox made, one whose token was rotated, and an expired one (401)", async () => {
      const line = { method: "GET", url: fileUrl({ path: "/tmp/other.txt", signature: READ_VECTOR }) };
      const forged = await resolveProxyTarget({ host: "127.0.0.1:7072" }, sources([{ sandbox: mine, token: TOKEN }]), line);
      assert.equal("status" in forged && forged.status, 401);
      const rotated = { ...mine, status: { ...mine.status, accessTokenHash: hashAccessToken("rotated") } };
      const stale = await resolveProxyTarget({ host: "127.0.0.1:7072" }, sources([{ sandbox: rotated, token: TOKEN }]), {
        method: "GET",
        url: fileUrl({ path: "/tmp/a.txt", signature: READ_VECTOR }),
      });
      assert.equal("body" in stale && stale.status, 401);
      const expiration = Math.floor(Date.now() / 1000) - 10;
      const signature = fileSignature({ path: "/tmp/a.txt", operation: "read", username: "", expiration }, TOKEN);
      const expired = await resolveProxyTarget({ host: "127.0.0.1:7072" }, sources([{ sandbox: mine, token: TOKEN }]), {
        method: "GET",
        url: fileUrl({ path: "/tmp/a.txt", signature, signature_expiration: String(expiration) }),
      });
      assert.ok("body" in expired && expired.status === 401 && /expired/.test(expired.body.message));
    });

    it("answers 429 without a scan once the caller's lookups used up their budget", async () => {
      const from = sources([{ sandbox: mine, token: TOKEN }]);
      from.signedFiles = new SignedFileLookup({
        signers: { list: () => [{ sandbox: mine, token: TOKEN }], tokenOf: () => TOKEN },
        lookup: () => Promise.resolve(mine),
        perClient: { msPerSecond: 0, burstMs: 0 },
      });
      const forged = await resolveProxyTarget({ host: "127.0.0.1:7072" }, from, {
        method: "GET",
        url: fileUrl({ path: "/tmp/other.txt", signature: READ_VECTOR }),
      });
      assert.ok("body" in forged && forged.status === 429 && /retry in a few seconds/.test(forged.body.message));
    });

    describe("on a sandbox's own host name (E2B's SDKs without E2B_SANDBOX_URL: 49983-<id>.<domain>)", () => {
      const signers = [
        { sandbox: mine, token: TOKEN },
        { sandbox: other, token: "other-token" },
      ];
      /** Routes find their sandbox by id; `list` is never scanned (a routed URL names its sandbox). */
      const routed = (records = signers): ProxyTargetSources => ({
        lookup: (id) => Promise.resolve(records.find((s) => s.sandbox.status?.sandboxID === id)?.sandbox),
        agentAddress: () => "127.0.0.1",
        domain: "localhost",
        signedFiles: new SignedFileLookup({
          signers: {
            list: () => assert.fail("a URL on a sandbox's own host name is checked against that sandbox alone"),
            tokenOf: (sandbox) => records.find((s) => s.sandbox === sandbox)?.token,
          },
          lookup: () => assert.fail("no remembered URL is looked up"),
        }),
      });
      const host = (sandboxId: string, port = 49983) => ({ host: `${port}-${sandboxId}.localhost:7072` });
      const read = { method: "GET", url: fileUrl({ path: "/tmp/a.txt", signature: READ_VECTOR }) };

      it("lets a URL its sandbox signed in without X-Access-Token, with the signed target, as on the bare proxy host", async () => {
        const target = await resolveProxyTarget(host("aaaaaaaaaaaaaaaaaaaa"), routed(), read);
        assert.deepEqual(target, {
          sandboxId: "aaaaaaaaaaaaaaaaaaaa",
          namespace: "default",
          name: "mine",
          host: "10.213.0.9",
          port: 49983,
          path: `/files?${new URLSearchParams({ path: "/tmp/a.txt", username: "", signature: READ_VECTOR }).toString()}`,
          accessTokenHash: hashAccessToken(TOKEN),
        });
        // An upload (POST, write) too, and by the E2B headers' route alike.
        const signature = fileSignature({ path: "/tmp/up.txt", operation: "write", username: "user" }, TOKEN);
        const upload = await resolveProxyTarget({ host: "127.0.0.1:7072", "e2b-sandbox-id": "aaaaaaaaaaaaaaaaaaaa", "e2b-sandbox-port": "49983" }, routed(), {
          method: "POST",
          url: fileUrl({ path: "/tmp/up.txt", username: "user", signature }),
        });
        assert.ok(!("status" in upload) && upload.name === "mine" && upload.path?.startsWith("/files?"), JSON.stringify(upload));
      });

      it("never opens another sandbox's route with a sandbox's signature, nor a port other than the daemon's (401)", async () => {
        const foreign = await resolveProxyTarget(host("bbbbbbbbbbbbbbbbbbbb"), routed(), read);
        assert.ok("body" in foreign && foreign.status === 401 && /not this sandbox's/.test(foreign.body.message), JSON.stringify(foreign));
        const otherPort = await resolveProxyTarget(host("aaaaaaaaaaaaaaaaaaaa", 8080), routed(), read);
        assert.equal("body" in otherPort && otherPort.status, 401);
        // A sandbox whose token the proxy cannot derive (not the E2B-compatible API's) signs nothing.
        const underived = routed();
        underived.signedFiles = new SignedFileLookup({ signers: { list: () => [], tokenOf: () => undefined }, lookup: () => Promise.resolve(undefined) });
        const none = await resolveProxyTarget(host("aaaaaaaaaaaaaaaaaaaa"), underived, read);
        assert.equal("body" in none && none.status, 401);
      });

      it("refuses one whose token was rotated or that expired (401), and one that reads two ways (400)", async () => {
        const rotated = { ...mine, status: { ...mine.status, accessTokenHash: hashAccessToken("rotated") } };
        const stale = await resolveProxyTarget(host("aaaaaaaaaaaaaaaaaaaa"), routed([{ sandbox: rotated, token: TOKEN }]), read);
        assert.equal("body" in stale && stale.status, 401);
        const expiration = Math.floor(Date.now() / 1000) - 10;
        const signature = fileSignature({ path: "/tmp/a.txt", operation: "read", username: "", expiration }, TOKEN);
        const expired = await resolveProxyTarget(host("aaaaaaaaaaaaaaaaaaaa"), routed(), {
          method: "GET",
          url: fileUrl({ path: "/tmp/a.txt", signature, signature_expiration: String(expiration) }),
        });
        assert.ok("body" in expired && expired.status === 401 && /expired/.test(expired.body.message));
        const twoWays = await resolveProxyTarget(host("aaaaaaaaaaaaaaaaaaaa"), routed(), { method: "GET", url: `${read.url}&path=/etc/shadow` });
        assert.equal("body" in twoWays && twoWays.status, 400);
      });

      it("forwards a request that shows the access token as it always did (the caller's own target)", async () => {
        const target = await resolveProxyTarget({ ...host("aaaaaaaaaaaaaaaaaaaa"), "x-access-token": TOKEN }, routed(), read);
        assert.ok(!("status" in target) && target.path === undefined, JSON.stringify(target));
      });
    });

    it("still answers 400 for a request with no route and no signature", async () => {
      const refused = await resolveProxyTarget({ host: "127.0.0.1:7072" }, sources([{ sandbox: mine, token: TOKEN }]), {
        method: "GET",
        url: "/files?path=/tmp/a.txt",
      });
      assert.ok("body" in refused && refused.status === 400);
    });
  });
});
