import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { POOL_TOKEN_SCHEME, agentTokenOf, poolAgentToken } from "./agent-token.js";

describe("agent tokens of Kubernetes mode", () => {
  const deployment = "the-deployment's-agent-token";

  it("gives each pool its own token, the same at every call, neither the deployment's nor another namespace's", () => {
    const tokens = [
      poolAgentToken(deployment, "team-a", "python"),
      poolAgentToken(deployment, "team-b", "python"),
      poolAgentToken(deployment, "team-a", "node"),
    ];
    assert.equal(new Set(tokens).size, 3);
    assert.equal(poolAgentToken(deployment, "team-a", "python"), tokens[0]);
    assert.ok(!tokens.includes(deployment));
    // Names are joined unambiguously: ("a-b", "c") and ("a", "b-c") differ.
    assert.notEqual(poolAgentToken(deployment, "a-b", "c"), poolAgentToken(deployment, "a", "b-c"));
    assert.notEqual(poolAgentToken("another-deployment", "team-a", "python"), tokens[0]);
    assert.match(tokens[0] ?? "", /^[A-Za-z0-9_-]{43}$/, "32 bytes, base64url: a valid bearer token");
  });

  it("calls an agent with its pool's token, a Pod without the label too unless old Pods are allowed the deployment's (upgrades)", () => {
    const poolToken = poolAgentToken(deployment, "team-a", "python");
    assert.equal(agentTokenOf(deployment, { namespace: "team-a", pool: "python", tokenScheme: POOL_TOKEN_SCHEME }), poolToken);
    // A Pod made to look like an agent (no label) is never sent the deployment's token by default.
    assert.equal(agentTokenOf(deployment, { namespace: "team-a", pool: "python" }), poolToken);
    assert.equal(agentTokenOf(deployment, { namespace: "team-a", pool: "python" }, true), deployment);
    assert.equal(agentTokenOf(deployment, { namespace: "team-a", pool: "python", tokenScheme: POOL_TOKEN_SCHEME }, true), poolToken);
  });
});
