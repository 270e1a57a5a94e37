/**
 * The agent API tokens of Kubernetes mode. The deployment has one secret token (the controller's
 * and the proxy's FSB_AGENT_TOKEN); each pool's agents get a token of their own derived from it
 * (HMAC-SHA256 over the pool's namespace and name), written by the controller into a Secret of the
 * pool's namespace (pool-token-secret.ts) that their Pods' environment refers to (agent-pod.ts): not
 * in the Pods' spec, which the namespace's `view` role reads. What one namespace can read of its
 * agents — their Secrets, their processes — then opens the agents of its own pools only, never
 * another namespace's; and a Pod made to look like an agent (a pool's label and owner) is sent only
 * its own pool's token.
 *
 * Agent Pods made before pools had tokens of their own (no AGENT_TOKEN_LABEL) hold the deployment's
 * token from the Secret of their namespace. They are called with it only when the installation says
 * so (`oldPods`: FSB_AGENT_TOKEN_FOR_OLD_PODS=true, while upgrading), until the pools replace them:
 * otherwise a Pod made without the label — by anyone who may create Pods — would be sent the key to
 * every namespace's agents.
 */
import { createHmac } from "node:crypto";

/** The label of an agent Pod whose token is its pool's (`POOL_TOKEN_SCHEME`). */
export const AGENT_TOKEN_LABEL = "fast-sandbox.io/agent-token";
/** AGENT_TOKEN_LABEL's value: the Pod's FSB_AGENT_TOKEN is poolAgentToken's. */
export const POOL_TOKEN_SCHEME = "pool-v1";

/** The token of the agents of pool `namespace/pool`, derived from the deployment's agent token. */
export function poolAgentToken(deploymentToken: string, namespace: string, pool: string): string {
  return createHmac("sha256", deploymentToken).update(`fast-sandbox.io/agent-token/${POOL_TOKEN_SCHEME}\0${namespace}\0${pool}`).digest("base64url");
}

/** The key of the token in a pool's token Secret (pool-token-secret.ts). */
export const POOL_TOKEN_SECRET_KEY = "token";

/** The Secret of pool `pool`'s agent token, in the pool's namespace (pool names are at most 63 characters). */
export function poolTokenSecretName(pool: string): string {
  return `${pool}-agent-token`;
}

/**
 * The token an agent is called with: its pool's, or the deployment's for a Pod made before pools had
 * their own (no `tokenScheme`) when `oldPods` allows it.
 */
export function agentTokenOf(deploymentToken: string, agent: { namespace: string; pool: string; tokenScheme?: string }, oldPods = false): string {
  if (agent.tokenScheme === undefined && oldPods) return deploymentToken;
  return poolAgentToken(deploymentToken, agent.namespace, agent.pool);
}
