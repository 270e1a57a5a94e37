import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, describe, it } from "node:test";
import { FailedPreconditionError } from "@fast-sandbox/api";
import { testKubeConfig } from "../store/kube-config.fixture.js";
import { hashApiKey, newApiKey } from "./api-key.js";
import { RateLimitedError } from "./e2b-errors.js";
import { KubernetesApiKeyStore, apiKeySecretName, type KubernetesApiKeyStoreOptions } from "./kubernetes-api-key-store.js";

/**
 * An "API server" on loopback that keeps the Secrets created through it (and forgets those deleted)
 * and counts the GETs of one; `holdGets` holds the answer to each GET (what it found when the GET
 * arrived) until the returned function is called.
 */
function fakeApiServer() {
  const secrets = new Map<string, unknown>();
  const gets: string[] = [];
  /** The controller's RBAC as shipped: no delete of Secrets. */
  const rbac = { deleteForbidden: false };
  let held: (() => void)[] | undefined;
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const name = new URL(request.url ?? "/", "http://x").pathname.split("/").at(-1) ?? "";
    const send = (code: number, body: unknown) => {
      response.writeHead(code, { "content-type": "application/json" });
      response.end(JSON.stringify(body));
    };
    const notFound = () =>
      send(404, { apiVersion: "v1", kind: "Status", status: "Failure", reason: "NotFound", code: 404, message: `secrets "${name}" not found` });
    if (request.method === "DELETE") {
      request.resume();
      if (rbac.deleteForbidden) {
        send(403, { apiVersion: "v1", kind: "Status", status: "Failure", reason: "Forbidden", code: 403, message: `secrets "${name}" is forbidden` });
        return;
      }
      if (secrets.delete(name)) send(200, { apiVersion: "v1", kind: "Status", status: "Success" });
      else notFound();
      return;
    }
    if (request.method === "POST") {
      let text = "";
      request.on("data", (chunk: Buffer) => (text += chunk.toString()));
      request.on("end", () => {
        const secret = JSON.parse(text) as { metadata: { name: string } };
        secrets.set(secret.metadata.name, secret);
        send(201, secret);
      });
      return;
    }
    gets.push(name);
    const secret = secrets.get(name);
    const answer = () => {
      if (secret) send(200, secret);
      else notFound();
    };
    if (held) held.push(answer);
    else answer();
  });
  return {
    server,
    secrets,
    gets,
    rbac,
    holdGets(): () => void {
      held = [];
      return () => {
        const answers = held ?? [];
        held = undefined;
        for (const answer of answers) answer();
      };
    },
  };
}

describe("KubernetesApiKeyStore remembers missing keys briefly, limits look-ups of unknown ones and removes keys", () => {
  const api = fakeApiServer();
  let url = "";
  let nowMs = 0;
  const now = () => nowMs;
  before(async () => {
    await new Promise<void>((resolve) => api.server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(api.server.address() as AddressInfo).port}`;
  });
  after(() => {
    api.server.closeAllConnections();
    api.server.close();
  });
  beforeEach(() => {
    api.gets.length = 0;
    api.secrets.clear();
    nowMs = 1_000_000;
  });
  const open = (
    options: Partial<Pick<KubernetesApiKeyStoreOptions, "maxMissCacheEntries" | "cacheMs" | "unknownKeyLookupsPerSecond" | "unknownKeyLookupBurst">> = {},
  ) => new KubernetesApiKeyStore({ kubeConfig: testKubeConfig(url), namespace: "fast-sandbox", now, ...options });

  it("asks the API server about an unknown key once per 5 s, not once per request", async () => {
    const store = open();
    const hash = hashApiKey(newApiKey());
    for (let i = 0; i < 5; i++) assert.equal(await store.has(hash), false);
    assert.equal(api.gets.length, 1);
    nowMs += 4_999;
    assert.equal(await store.has(hash), false);
    assert.equal(api.gets.length, 1);
    nowMs += 1;
    assert.equal(await store.has(hash), false);
    assert.equal(api.gets.length, 2, "asked again once the 5 s passed");
    // A Secret of that name that is not ours is missing too.
    const foreign = hashApiKey(newApiKey());
    api.secrets.set(apiKeySecretName(foreign), { apiVersion: "v1", kind: "Secret", metadata: { name: apiKeySecretName(foreign) } });
    assert.equal(await store.has(foreign), false);
    assert.equal(await store.has(foreign), false);
    assert.equal(api.gets.length, 3);
    await store.close();
  });

  it("accepts a key it issues at once, and one another replica issued once the 5 s passed", async () => {
    const store = open();
    const hash = hashApiKey(newApiKey());
    assert.equal(await store.has(hash), false);
    await store.add(hash, new Date());
    assert.equal(await store.has(hash), true);

    const other = hashApiKey(newApiKey());
    assert.equal(await store.has(other), false);
    await open().add(other, new Date()); // another replica
    assert.ok(api.secrets.has(apiKeySecretName(other)));
    assert.equal(await store.has(other), false, "still remembered missing within the 5 s");
    nowMs += 5_000;
    assert.equal(await store.has(other), true);
    await store.close();
  });

  it("does not remember missing a key issued while it was looking it up", async () => {
    const store = open();
    const hash = hashApiKey(newApiKey());
    const release = api.holdGets();
    const lookup = store.has(hash);
    while (api.gets.length === 0) await new Promise((resolve) => setImmediate(resolve));
    // The GET found nothing (its answer is held): the key is issued meanwhile.
    await store.add(hash, new Date());
    release();
    assert.equal(await lookup, false);
    assert.equal(await store.has(hash), true, "the key it issued is accepted at once");
    await store.close();
  });

  it("remembers at most maxMissCacheEntries missing keys, forgetting the oldest", async () => {
    const store = open({ maxMissCacheEntries: 2 });
    const first = hashApiKey(newApiKey());
    const second = hashApiKey(newApiKey());
    const third = hashApiKey(newApiKey());
    for (const hash of [first, second, third]) assert.equal(await store.has(hash), false);
    assert.equal(api.gets.length, 3);
    assert.equal(await store.has(third), false);
    assert.equal(await store.has(second), false);
    assert.equal(api.gets.length, 3, "the two latest are remembered");
    assert.equal(await store.has(first), false);
    assert.equal(api.gets.length, 4, "the oldest was forgotten");
    await store.close();
  });

  /** Asserts that `lookup` is refused with 429's RateLimitedError, retry after `seconds`. */
  async function refused(lookup: Promise<boolean>, seconds: number): Promise<void> {
    await assert.rejects(lookup, (error: unknown) => {
      assert.ok(error instanceof RateLimitedError, String(error));
      assert.equal(error.code, "no_capacity");
      assert.equal(error.retryAfterSeconds, seconds);
      assert.match(error.message, /too many requests with API keys this server does not know: .* at most 20 a second \(50 at once\); retry in 1 s/);
      return true;
    });
  }

  it("looks up unknown keys at most 20 a second (50 at once), refusing more with 429 without asking the API server; keys it knows are not limited", async () => {
    const store = open();
    const known = hashApiKey(newApiKey());
    await store.add(known, new Date());
    for (let i = 0; i < 50; i++) assert.equal(await store.has(hashApiKey(newApiKey())), false);
    assert.equal(api.gets.length, 50, "the burst");
    await refused(store.has(hashApiKey(newApiKey())), 1);
    assert.equal(api.gets.length, 50, "refused without a GET");
    assert.equal(await store.has(known), true, "a known key is not limited");
    nowMs += 50; // one look-up's worth at 20 a second
    assert.equal(await store.has(hashApiKey(newApiKey())), false);
    assert.equal(api.gets.length, 51);
    await refused(store.has(hashApiKey(newApiKey())), 1);
    nowMs += 60_000; // refilled, to the burst and no more
    for (let i = 0; i < 50; i++) assert.equal(await store.has(hashApiKey(newApiKey())), false);
    await refused(store.has(hashApiKey(newApiKey())), 1);
    assert.equal(api.gets.length, 101);
    await store.close();
  });

  it("looks up a key it found before, once its entry is stale, even while unknown keys are refused", async () => {
    const store = open({ cacheMs: 10 });
    const known = hashApiKey(newApiKey());
    await store.add(known, new Date());
    for (let i = 0; i < 50; i++) await store.has(hashApiKey(newApiKey()));
    await refused(store.has(hashApiKey(newApiKey())), 1);
    nowMs += 10;
    const gets = api.gets.length;
    assert.equal(await store.has(known), true);
    assert.equal(api.gets.length, gets + 1, "asked the API server again, unlimited");
    await store.close();
  });

  it("removes a key: its Secret deleted, refused at once here; a key it never issued, or a Secret not of a key, is not removed", async () => {
    const store = open();
    const hash = hashApiKey(newApiKey());
    await store.add(hash, new Date());
    assert.equal(await store.has(hash), true);
    assert.equal(await store.remove(hash), true);
    assert.equal(api.secrets.has(apiKeySecretName(hash)), false);
    assert.equal(await store.has(hash), false, "refused at once, though it was accepted within the cache's minute");
    assert.equal(await store.remove(hash), false, "nothing left to remove");
    const foreign = hashApiKey(newApiKey());
    api.secrets.set(apiKeySecretName(foreign), { apiVersion: "v1", kind: "Secret", metadata: { name: apiKeySecretName(foreign) } });
    assert.equal(await store.remove(foreign), false);
    assert.ok(api.secrets.has(apiKeySecretName(foreign)), "a Secret without the key label is left alone");
    await store.close();
  });

  it("says how to revoke a key with kubectl where its RBAC lets the controller delete no Secret, and keeps the key", async () => {
    const store = open();
    const hash = hashApiKey(newApiKey());
    await store.add(hash, new Date());
    api.rbac.deleteForbidden = true;
    try {
      await assert.rejects(store.remove(hash), (error: unknown) => {
        assert.ok(error instanceof FailedPreconditionError, String(error));
        assert.match(error.message, new RegExp(`kubectl -n \\S+ delete secret ${apiKeySecretName(hash)}`));
        return true;
      });
      assert.ok(api.secrets.has(apiKeySecretName(hash)));
    } finally {
      api.rbac.deleteForbidden = false;
      await store.close();
    }
  });
});
