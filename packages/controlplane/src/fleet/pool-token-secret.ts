/**
 * The Secret that holds a pool's agent token (agent-token.ts) in the pool's namespace, named
 * `<pool>-agent-token`, owned by the pool (deleting the pool deletes it through the garbage
 * collector) and labelled with it. The pool's agent Pods read their FSB_AGENT_TOKEN from it through a
 * secretKeyRef (agent-pod.ts), so the token is not in their spec, which whoever may `view` the
 * namespace reads (the `view` role reads no Secret).
 *
 * The controller writes it without reading it (it may create and patch Secrets, never get, list or
 * watch them): a JSON patch that first tests the Secret's pool label and owner, so that a Secret of
 * that name that is not the pool's — a user's own, or a deleted pool's the garbage collector has not
 * yet removed — is never overwritten (the API server refuses the patch, 422). Pure: no I/O.
 */
import type { V1Secret } from "@kubernetes/client-node";
import { API_VERSION, type SandboxPool } from "@fast-sandbox/api";
import { POOL_LABEL } from "./agent-pod.js";
import { POOL_TOKEN_SECRET_KEY, poolAgentToken, poolTokenSecretName } from "./agent-token.js";

/** One operation of a JSON patch (RFC 6902) as the API server takes it. */
export type JsonPatchOperation = { op: "test" | "add"; path: string; value: unknown };

function poolParts(pool: SandboxPool): { name: string; namespace: string; uid: string } {
  const name = pool.metadata.name;
  const namespace = pool.metadata.namespace ?? "default";
  const uid = pool.metadata.uid;
  if (!uid) throw new Error(`SandboxPool ${namespace}/${name} has no uid: read it from the API server before writing its token Secret`);
  return { name, namespace, uid };
}

/** The pool's token Secret as created. */
export function buildPoolTokenSecret(pool: SandboxPool, deploymentToken: string): V1Secret {
  const { name, namespace, uid } = poolParts(pool);
  return {
    apiVersion: "v1",
    kind: "Secret",
    type: "Opaque",
    metadata: {
      name: poolTokenSecretName(name),
      namespace,
      labels: { "app.kubernetes.io/name": "fast-sandbox", "app.kubernetes.io/component": "agent-token", [POOL_LABEL]: name },
      ownerReferences: [{ apiVersion: API_VERSION, kind: "SandboxPool", name, uid, controller: true, blockOwnerDeletion: true }],
    },
    data: { [POOL_TOKEN_SECRET_KEY]: Buffer.from(poolAgentToken(deploymentToken, namespace, name)).toString("base64") },
  };
}

/**
 * The patch that puts the token back into an existing Secret of the pool (one a user emptied or
 * edited), applied only if the Secret is the pool's: its pool label and its first owner's uid.
 */
export function poolTokenSecretPatch(pool: SandboxPool, deploymentToken: string): JsonPatchOperation[] {
  const { name, uid } = poolParts(pool);
  const secret = buildPoolTokenSecret(pool, deploymentToken);
  return [
    { op: "test", path: `/metadata/labels/${POOL_LABEL.replace(/~/g, "~0").replace(/\//g, "~1")}`, value: name },
    { op: "test", path: "/metadata/ownerReferences/0/uid", value: uid },
    { op: "add", path: "/data", value: secret.data },
  ];
}
