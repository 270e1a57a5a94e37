/**
 * The namespaces a deployment runs pools in (Kubernetes mode; the controller's FSB_POOL_NAMESPACES),
 * for an operator who lets other teams write SandboxPools in their own namespaces but runs the
 * privileged agents only for some: a pool elsewhere gets no agent Pod (the pool controller says why
 * in its status), and a Pod elsewhere is no agent whatever its labels and owner say (the Kubernetes
 * fleet neither reports it nor creates one there), so it is never registered nor sent a token. None
 * listed: every namespace (the default). Pure: no I/O.
 */

/** Why a pool of `namespace` gets no agent under `allowed` (undefined or empty: every namespace runs pools); undefined when it runs them. */
export function poolNamespaceRefusal(allowed: readonly string[] | undefined, namespace: string): string | undefined {
  if (poolNamespaceAllowed(allowed, namespace)) return undefined;
  return (
    `namespace ${namespace} runs no pools: the controller's FSB_POOL_NAMESPACES allows pools only in ${(allowed ?? []).join(", ")}; ` +
    `no agent starts for this pool until ${namespace} is added there`
  );
}

/** Whether pools of `namespace` get agents under `allowed` (undefined or empty: every namespace's do). */
export function poolNamespaceAllowed(allowed: readonly string[] | undefined, namespace: string): boolean {
  return !allowed || allowed.length === 0 || allowed.includes(namespace);
}
