import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, type Sandbox } from "@fast-sandbox/api";
import { hashAccessToken } from "./access-token.js";
import { isProxyRefusal, resolveProxyTarget, type ProxyTargetSources } from "./proxy-target.js";

const ID = "k3x9q0m2zt7c1w8r5bn4";
const TOKEN = "token-of-web";

function sandbox(status: Partial<NonNullable<Sandbox["status"]>> = {}, deleting = false): Sandbox {
  return {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name: "web", namespace: "team", ...(deleting ? { deletionTimestamp: "2026-01-01T00:00:00Z" } : {}) },
    spec: { image: "busybox", poolRef: "default", exposedPorts: [8080, 8081] },
    status: { phase: "Running", assignedPod: "agent-0", sandboxID: ID, accessTokenHash: hashAccessToken(TOKEN), ...status },
  };
}

function sources(found: Sandbox | undefined, agents: Record<string, string> = { "agent-0": "10.0.0.7" }): ProxyTargetSources {
  return { lookup: (id) => Promise.resolve(id === found?.status?.sandboxID ? found : undefined), agentAddress: (name) => agents[name], domain: "localhost" };
}

const headers = (extra: Record<string, string> = {}) => ({ host: `8080-${ID}.localhost:7072`, "x-access-token": TOKEN, ...extra });

async function status(headerValues: Record<string, string>, from: ProxyTargetSources): Promise<number> {
  const result = await resolveProxyTarget(headerValues, from);
  return isProxyRefusal(result) ? result.status : 200;
}

describe("resolveProxyTarget", () => {
  it("sends a Shared sandbox's traffic to its agent's address, and an Isolated one's to its own", async () => {
    assert.deepEqual(await resolveProxyTarget(headers(), sources(sandbox())), {
      sandboxId: ID,
      namespace: "team",
      name: "web",
      host: "10.0.0.7",
      port: 8080,
      accessTokenHash: hashAccessToken(TOKEN),
    });
    const isolated = await resolveProxyTarget(headers(), sources(sandbox({ sandboxIP: "10.88.0.5" })));
    assert.equal(isProxyRefusal(isolated) ? undefined : isolated.host, "10.88.0.5");
  });

  it("asks for the address and the relay of the sandbox's agent with the sandbox's namespace: an agent of another namespace of that name is none of its own", async () => {
    // Agents known by name, unique only within a namespace: agent-0 of namespace "team" (the sandbox's) and of "other".
    const byNamespace: Record<string, { address: string; relay: string }> = { team: { address: "10.0.0.7", relay: "10.0.0.7:7071" } };
    const from = (found: Sandbox): ProxyTargetSources => ({
      ...sources(found),
      agentAddress: (name, namespace) => (name === "agent-0" ? byNamespace[namespace]?.address : undefined),
      agentRelay: (name, namespace) => (name === "agent-0" ? byNamespace[namespace]?.relay : undefined),
    });
    const shared = await resolveProxyTarget(headers(), from(sandbox()));
    assert.equal(isProxyRefusal(shared) ? shared.body.message : shared.host, "10.0.0.7");
    const isolated = await resolveProxyTarget(headers(), from(sandbox({ sandboxIP: "10.88.0.5" })));
    assert.equal(isProxyRefusal(isolated) ? isolated.body.message : isolated.relay, "10.0.0.7:7071");

    byNamespace.other = byNamespace.team!;
    delete byNamespace.team;
    assert.equal(await status(headers(), from(sandbox())), 503, "not the other namespace's agent's address");
    assert.equal(await status(headers(), from(sandbox({ sandboxIP: "10.88.0.5" }))), 503, "nor its relay");
  });

  it("answers an unknown sandbox with E2B's 502 body, token or not", async () => {
    for (const extra of [{}, { "x-access-token": "" }] as Record<string, string>[]) {
      assert.deepEqual(await resolveProxyTarget(headers(extra), sources(undefined)), {
        status: 502,
        body: { sandboxId: ID, message: "The sandbox was not found", code: 502 },
        errorCode: "not_found",
      });
    }
  });

  it("answers 401 to a missing or wrong token, and tells nothing else about the sandbox", async () => {
    const { "x-access-token": _, ...without } = headers();
    for (const [request, why] of [
      [without, /missing/],
      [headers({ "x-access-token": "wrong" }), /does not hold/],
    ] as const) {
      const result = await resolveProxyTarget(request, sources(sandbox({ phase: "Lost" })));
      assert.ok(isProxyRefusal(result));
      assert.equal(result.status, 401);
      assert.match(result.body.message, why);
      assert.doesNotMatch(result.body.message, /Lost|team|8081/);
    }
    // A sandbox without a token yet (before placement) lets nobody in.
    assert.equal(await status(headers(), sources(sandbox({ accessTokenHash: undefined }))), 401);
  });

  it("names both headers when no token came to a sandbox's own port (E2B's SDKs hold the traffic token), the access token alone for its daemon", async () => {
    const { "x-access-token": _, ...without } = headers();
    const own = await resolveProxyTarget(without, sources(sandbox()));
    assert.ok(isProxyRefusal(own));
    assert.match(
      own.body.message,
      /X-Access-Token header is missing: .*or its traffic access token in E2B-Traffic-Access-Token \(E2B's SDKs: sandbox\.trafficAccessToken\)/,
    );
    const daemon = await resolveProxyTarget({ ...without, host: `49983-${ID}.localhost:7072` }, sources(sandbox()));
    assert.ok(isProxyRefusal(daemon));
    assert.match(daemon.body.message, /X-Access-Token header is missing/);
    assert.doesNotMatch(daemon.body.message, /Traffic/);
  });

  it("checks in order: route, sandbox, token, phase, port, address", async () => {
    assert.equal(await status({ host: "localhost" }, sources(sandbox())), 400);
    assert.equal(await status(headers(), sources(undefined)), 502);
    assert.equal(await status(headers({ "x-access-token": "wrong" }), sources(sandbox({ phase: "Pending" }))), 401);
    assert.equal(await status(headers({ host: `9999-${ID}.localhost` }), sources(sandbox({ phase: "Pending" }))), 503);
    assert.equal(await status(headers({ host: `9999-${ID}.localhost` }), sources(sandbox(), {})), 403);
    assert.equal(await status(headers(), sources(sandbox(), {})), 503);
    assert.equal(await status(headers(), sources(sandbox())), 200);
  });

  it("serves Bound sandboxes (a fast create answers before Running is stored) and refuses the other phases and deletions", async () => {
    const withMode = (found: Sandbox, mode: "Shared" | "Isolated" | undefined): ProxyTargetSources => ({ ...sources(found), networkModeOf: () => mode });
    assert.equal(await status(headers(), withMode(sandbox({ phase: "Bound" }), "Shared")), 200);
    assert.equal(await status(headers(), withMode(sandbox({ phase: "Bound", sandboxIP: "10.88.0.5" }), "Isolated")), 200);
    // An Isolated sandbox has no address until it runs, and never listens at its agent's: not routed there.
    for (const mode of ["Isolated", undefined] as const) {
      const starting = await resolveProxyTarget(headers(), withMode(sandbox({ phase: "Bound" }), mode));
      assert.ok(isProxyRefusal(starting), `Bound, pool mode ${String(mode)}: ${JSON.stringify(starting)}`);
      assert.equal(starting.status, 503);
      assert.match(starting.body.message, /team\/web is starting \(Bound\), not running yet; retry shortly/);
    }
    assert.equal(await status(headers(), sources(sandbox({ phase: "Bound" }))), 503, "no pool mode known here (the Kubernetes proxy)");
    // 503 while the instance may still serve; 502 (E2B's "gone") once it never will.
    for (const [phase, code] of [
      ["Pending", 503],
      ["Lost", 503],
      ["Failed", 502],
      ["Expired", 502],
      ["Terminating", 502],
    ] as const) {
      const result = await resolveProxyTarget(headers(), sources(sandbox({ phase })));
      assert.ok(isProxyRefusal(result));
      assert.equal(result.status, code, phase);
      assert.match(result.body.message, new RegExp(`team/web is ${phase}`));
    }
    // Paused: E2B's answer, which its SDKs know.
    const paused = await resolveProxyTarget(headers(), sources(sandbox({ phase: "Paused" })));
    assert.ok(isProxyRefusal(paused));
    assert.deepEqual(paused.body, { sandboxId: ID, message: "The sandbox is paused", code: 409 });
    assert.equal(paused.errorCode, "failed_precondition");
    const deleting = await resolveProxyTarget(headers(), sources(sandbox({}, true)));
    assert.ok(isProxyRefusal(deleting));
    assert.equal(deleting.status, 502);
    assert.match(deleting.body.message, /being deleted/);
  });

  it("names the exposed ports when a port is not one of them", async () => {
    const result = await resolveProxyTarget(headers({ host: `9999-${ID}.localhost` }), sources(sandbox()));
    assert.ok(isProxyRefusal(result));
    assert.deepEqual(result.body.port, 9999);
    assert.match(result.body.message, /port 9999 of sandbox team\/web is not exposed \(exposed: 8080, 8081\)/);
  });

  it("opens the daemon's port of an Isolated sandbox, and every port of one whose source says so (E2B's)", async () => {
    const isolated = sandbox({ sandboxIP: "10.88.0.5" });
    assert.equal(await status(headers({ host: `49983-${ID}.localhost` }), sources(isolated)), 200);
    assert.equal(await status(headers({ host: `49983-${ID}.localhost` }), sources(sandbox())), 403, "a Shared sandbox has no daemon port of its own");
    assert.equal(await status(headers({ host: `9999-${ID}.localhost` }), sources(isolated)), 403);
    const everyPort = { ...sources(isolated), exposesEveryPort: (candidate: Sandbox) => candidate.metadata.name === "web" };
    assert.equal(await status(headers({ host: `9999-${ID}.localhost` }), everyPort), 200);
    assert.equal(await status(headers({ host: `9999-${ID}.localhost` }), { ...sources(sandbox()), exposesEveryPort: () => true }), 403, "only Isolated ones");
  });

  it("routes by the E2B headers too", async () => {
    const result = await resolveProxyTarget(
      { host: "127.0.0.1:7072", "e2b-sandbox-id": ID, "e2b-sandbox-port": "8081", "x-access-token": TOKEN },
      sources(sandbox()),
    );
    assert.ok(!isProxyRefusal(result));
    assert.equal(result.port, 8081);
  });
});
