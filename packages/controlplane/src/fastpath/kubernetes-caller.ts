/**
 * The Kubernetes user a fast-path call is made by, as api-caller-check.ts found it, for the call's
 * handler: creates record it (CREATED_BY_ANNOTATION). A call made with the API token has none.
 */
import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { KubernetesUser } from "./access-review.js";
import { CREATED_BY_ANNOTATION } from "./sandbox-manager.js";

/** The Kubernetes user making a call (in its handler's context values); undefined for the API token's holder. */
export const KUBERNETES_CALLER = createContextKey<KubernetesUser | undefined>(undefined, { description: "the Kubernetes user making the call" });

/** Who a call's creates are recorded as made by: CREATED_BY_ANNOTATION for a Kubernetes user, nothing for the API token. */
export function creatorAnnotations(context: HandlerContext): Record<string, string> | undefined {
  const caller = context.values.get(KUBERNETES_CALLER);
  return caller ? { [CREATED_BY_ANNOTATION]: caller.username } : undefined;
}
