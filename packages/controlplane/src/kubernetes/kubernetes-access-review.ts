/**
 * `AccessReview` through the Kubernetes API server: a TokenReview says who a bearer token is, a
 * SubjectAccessReview whether that user may do what a fast-path call does — the API server's own
 * authenticators (ServiceAccount tokens, OIDC, webhooks) and authorizers (RBAC, webhooks) decide,
 * as they would for `kubectl`. The controller's ServiceAccount needs `system:auth-delegator`
 * (config/rbac/controller-auth-delegator-binding.yaml), as every aggregated API server does.
 */
import { AuthenticationV1Api, AuthorizationV1Api, type KubeConfig } from "@kubernetes/client-node";
import type { AccessDecision, AccessReview, KubernetesUser } from "../fastpath/access-review.js";
import { SANDBOX_API_GROUP, type ResourceAccess } from "../fastpath/call-access.js";
import { translateKubernetesError } from "../store/kubernetes-resource-store.js";

export interface KubernetesAccessReviewOptions {
  kubeConfig: KubeConfig;
  /**
   * The audiences a token must be for (TokenReview's spec.audiences). @default none: the API
   * server's own, as for a token sent to it
   */
  audiences?: string[];
}

export class KubernetesAccessReview implements AccessReview {
  readonly #authentication: AuthenticationV1Api;
  readonly #authorization: AuthorizationV1Api;
  readonly #audiences: string[] | undefined;

  constructor(options: KubernetesAccessReviewOptions) {
    this.#authentication = options.kubeConfig.makeApiClient(AuthenticationV1Api);
    this.#authorization = options.kubeConfig.makeApiClient(AuthorizationV1Api);
    this.#audiences = options.audiences;
  }

  async authenticate(token: string): Promise<KubernetesUser | undefined> {
    let review;
    try {
      review = await this.#authentication.createTokenReview({
        body: {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenReview",
          spec: { token, ...(this.#audiences ? { audiences: this.#audiences } : {}) },
        },
      });
    } catch (error) {
      throw translateKubernetesError(error, { action: "create a TokenReview" });
    }
    const status = review.status;
    const user = status?.user;
    if (!status?.authenticated || !user?.username) return undefined;
    return {
      username: user.username,
      ...(user.uid ? { uid: user.uid } : {}),
      groups: user.groups ?? [],
      ...(user.extra ? { extra: user.extra } : {}),
    };
  }

  async authorize(user: KubernetesUser, access: ResourceAccess): Promise<AccessDecision> {
    let review;
    try {
      review = await this.#authorization.createSubjectAccessReview({
        body: {
          apiVersion: "authorization.k8s.io/v1",
          kind: "SubjectAccessReview",
          spec: {
            user: user.username,
            ...(user.uid ? { uid: user.uid } : {}),
            groups: user.groups,
            ...(user.extra ? { extra: user.extra } : {}),
            resourceAttributes: {
              group: SANDBOX_API_GROUP,
              resource: access.resource,
              verb: access.verb,
              ...(access.subresource ? { subresource: access.subresource } : {}),
              ...(access.namespace ? { namespace: access.namespace } : {}),
              ...(access.name ? { name: access.name } : {}),
            },
          },
        },
      });
    } catch (error) {
      throw translateKubernetesError(error, { action: "create a SubjectAccessReview" });
    }
    const status = review.status;
    const allowed = status?.allowed === true && status.denied !== true;
    const reason = status?.reason || status?.evaluationError;
    return { allowed, ...(reason ? { reason } : {}) };
  }
}
