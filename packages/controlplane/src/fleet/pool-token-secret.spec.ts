import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, type SandboxPool } from "@fast-sandbox/api";
import { POOL_LABEL, buildAgentPod } from "./agent-pod.js";
import { poolAgentToken } from "./agent-token.js";
import { buildPoolTokenSecret, poolTokenSecretPatch } from "./pool-token-secret.js";

function pool(namespace = "team-a", name = "python", uid = "uid-python"): SandboxPool {
  return { apiVersion: API_VERSION, kind: "SandboxPool", metadata: { name, namespace, uid }, spec: { image: "python:3.12" } } as SandboxPool;
}

const decoded = (data: Record<string, string> | undefined, key: string) => Buffer.from(data?.[key] ?? "", "base64").toString();

describe("a pool's token Secret", () => {
  it("holds the pool's own token, in the pool's namespace, owned by the pool and labelled with it", () => {
    const secret = buildPoolTokenSecret(pool(), "deployment-token");
    assert.equal(secret.metadata?.name, "python-agent-token");
    assert.equal(secret.metadata?.namespace, "team-a");
    assert.equal(secret.metadata?.labels?.[POOL_LABEL], "python");
    assert.deepEqual(secret.metadata?.ownerReferences, [
      { apiVersion: API_VERSION, kind: "SandboxPool", name: "python", uid: "uid-python", controller: true, blockOwnerDeletion: true },
    ]);
    assert.equal(decoded(secret.data, "token"), poolAgentToken("deployment-token", "team-a", "python"));
    assert.notEqual(
      decoded(secret.data, "token"),
      poolAgentToken("deployment-token", "team-b", "python"),
      "another namespace's pool of that name has another token",
    );
  });

  it("is the Secret the pool's agent Pods read their token from", () => {
    const secret = buildPoolTokenSecret(pool(), "deployment-token");
    const agent = buildAgentPod(pool(), { deploymentToken: "deployment-token" }).spec?.containers[0];
    const ref = agent?.env?.find((variable) => variable.name === "FSB_AGENT_TOKEN")?.valueFrom?.secretKeyRef;
    assert.equal(ref?.name, secret.metadata?.name);
    assert.ok(ref?.key && secret.data?.[ref.key], "the key the Pod reads is the Secret's");
  });

  it("is patched only after testing its pool label and its owner (a Secret of that name that is not the pool's is never overwritten)", () => {
    const patch = poolTokenSecretPatch(pool(), "deployment-token");
    assert.deepEqual(
      patch.slice(0, 2),
      [
        { op: "test", path: "/metadata/labels/fast-sandbox.io~1pool", value: "python" },
        { op: "test", path: "/metadata/ownerReferences/0/uid", value: "uid-python" },
      ],
      "the tests come first: the API server applies nothing when one fails",
    );
    assert.deepEqual(patch.slice(2), [{ op: "add", path: "/data", value: buildPoolTokenSecret(pool(), "deployment-token").data }]);
  });

  it("refuses a pool not read from the API server (no uid to own the Secret)", () => {
    assert.throws(() => buildPoolTokenSecret(pool("team-a", "python", ""), "deployment-token"), /has no uid/);
  });
});
