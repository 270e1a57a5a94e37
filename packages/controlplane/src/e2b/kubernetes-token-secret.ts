/**
 * The Kubernetes mode's secret for E2B sandboxes' access tokens (envd-access-token.ts): one Secret
 * in the controller's namespace, `fast-sandbox-e2b-token-secret`, key `secret` (64 hex digits). Every
 * controller replica derives the same token for a sandbox from it (a `connect` through any replica
 * hands out the token the create did), and the sandbox proxy reads it to route E2B's presigned file
 * URLs. The first controller replica to start makes it (a random one; a replica that loses the race
 * reads the winner's); replace it by deleting it and restarting the controllers (E2B clients then need
 * to connect again).
 */
import { randomBytes } from "node:crypto";
import { ApiException, CoreV1Api, type KubeConfig, type V1Secret } from "@kubernetes/client-node";
import { FailedPreconditionError } from "@fast-sandbox/api";
import { translateKubernetesError } from "../store/kubernetes-resource-store.js";

export const TOKEN_SECRET_NAME = "fast-sandbox-e2b-token-secret";
const KEY = "secret";
const SECRET_BYTES = 32;

export interface KubernetesTokenSecretOptions {
  kubeConfig: KubeConfig;
  /** The controller's namespace. */
  namespace: string;
}

/** The secret, or undefined while its Secret does not exist (the proxy waits for the controller to make it). */
export async function readKubernetesTokenSecret(options: KubernetesTokenSecretOptions): Promise<Buffer | undefined> {
  const core = options.kubeConfig.makeApiClient(CoreV1Api);
  try {
    return secretOf(await core.readNamespacedSecret({ namespace: options.namespace, name: TOKEN_SECRET_NAME }), options.namespace);
  } catch (error) {
    if (error instanceof ApiException && error.code === 404) return undefined;
    throw translateKubernetesError(error, { action: `read the E2B token secret ${options.namespace}/${TOKEN_SECRET_NAME}` });
  }
}

/** The secret, made (random) when its Secret does not exist yet. */
export async function loadOrCreateKubernetesTokenSecret(options: KubernetesTokenSecretOptions): Promise<Buffer> {
  const existing = await readKubernetesTokenSecret(options);
  if (existing) return existing;
  const core = options.kubeConfig.makeApiClient(CoreV1Api);
  const body: V1Secret = {
    apiVersion: "v1",
    kind: "Secret",
    type: "Opaque",
    metadata: { name: TOKEN_SECRET_NAME, namespace: options.namespace, labels: { "app.kubernetes.io/part-of": "fast-sandbox" } },
    stringData: { [KEY]: randomBytes(SECRET_BYTES).toString("hex") },
  };
  try {
    return secretOf(await core.createNamespacedSecret({ namespace: options.namespace, body }), options.namespace);
  } catch (error) {
    if (!(error instanceof ApiException && error.code === 409)) {
      throw translateKubernetesError(error, { action: `create the E2B token secret ${options.namespace}/${TOKEN_SECRET_NAME}` });
    }
  }
  // Another replica made it first: its secret is the one.
  const made = await readKubernetesTokenSecret(options);
  if (!made) throw new FailedPreconditionError(`the E2B token secret ${options.namespace}/${TOKEN_SECRET_NAME} was created and is gone again; retry`);
  return made;
}

function secretOf(secret: V1Secret, namespace: string): Buffer {
  const encoded = secret.data?.[KEY];
  const text = encoded ? Buffer.from(encoded, "base64").toString("utf8").trim() : "";
  if (!/^[0-9a-f]{64}$/.test(text)) {
    throw new FailedPreconditionError(
      `the Secret ${namespace}/${TOKEN_SECRET_NAME} does not hold a key "${KEY}" of 64 hex digits; delete it and restart the controllers to make a new one (E2B clients then need to connect again)`,
    );
  }
  return Buffer.from(text, "hex");
}
