/**
 * Who may call the fast-path API. The API token (`FSB_TOKEN`, the data directory's, the Secret's)
 * may make every call. With an `AccessReview` (Kubernetes mode, unless FSB_KUBERNETES_USERS=off)
 * a Kubernetes user's own bearer token is accepted too — a ServiceAccount's, an OIDC id token, any
 * token the API server authenticates — and each call is then allowed only as far as that user's
 * RBAC allows what the call does (call-access.ts), in the namespace it names: one set of Roles
 * governs `kubectl` on the CRDs and the fast path alike.
 *
 * As `requireBearerToken`: an interceptor, and a guard in front of the Connect adapter that refuses
 * a caller who is nobody before the request's body is read. The guard authenticates; the
 * interceptor, which has the request's message, authenticates again (from the cache) and authorizes.
 */
import { createHash } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  answerConnectError,
  equalTokens,
  FsbError,
  pb,
  PermissionDeniedError,
  REVISION_MAX_LENGTH,
  toConnectError,
  UnauthenticatedError,
  UnavailableError,
  type BearerTokenCheck,
} from "@fast-sandbox/api";
import type { AccessReview, KubernetesUser } from "./access-review.js";
import { ANY_CALLER, callAccess, describeAccess } from "./call-access.js";
import { KUBERNETES_CALLER } from "./kubernetes-caller.js";

export interface ApiCallerCheckOptions {
  /** The API token: every call. */
  token: string;
  /** Kubernetes users' tokens, authorized call by call. @default none: the API token only */
  review?: AccessReview;
}

const MISSING = "missing bearer token: send 'authorization: Bearer <token>' (fsb reads it from its data directory)";

export function requireApiCaller(options: ApiCallerCheckOptions): BearerTokenCheck {
  if (options.token.length < 16) throw new Error("refusing to serve with a bearer token shorter than 16 characters");
  const { review } = options;
  const invalid = review
    ? "invalid bearer token: it is neither the fast-path API's token nor a Kubernetes token the API server accepts"
    : "invalid bearer token: use the token in the data directory of the running 'fsb up'";

  const bearerOf = (header: string | undefined) => (header ? /^Bearer (.+)$/.exec(header)?.[1] : undefined);
  const isAdmin = (header: string | undefined) => {
    const token = bearerOf(header);
    return token !== undefined && equalTokens(token, options.token);
  };
  /** The Kubernetes user a request that does not hold the API token (isAdmin, checked first) comes from. */
  const userOf = async (header: string | undefined): Promise<KubernetesUser> => {
    if (!header) throw new UnauthenticatedError(MISSING);
    const token = bearerOf(header);
    if (!token || !review) throw new UnauthenticatedError(invalid);
    let user: KubernetesUser | undefined;
    try {
      user = await review.authenticate(token);
    } catch (error) {
      throw reviewFailure("cannot tell who the bearer token is", "TokenReview", error);
    }
    if (!user) throw new UnauthenticatedError(invalid);
    return user;
  };

  const interceptor: Interceptor = (next) => async (request) => {
    // The API token's holder: no review, and not one await more on the create's path.
    if (isAdmin(request.header.get("authorization") ?? undefined)) return next(request);
    let user: KubernetesUser;
    try {
      user = await userOf(request.header.get("authorization") ?? undefined);
    } catch (error) {
      throw connectErrorOf(error);
    }
    // userOf refuses every token without a review; said again for the type, failing closed.
    if (!review) throw connectErrorOf(new UnauthenticatedError(invalid));
    // A server-streaming call's one request message comes as a stream: read it, and hand it on.
    let message: unknown;
    if (request.stream) {
      const iterator = request.message[Symbol.asyncIterator]();
      const first = await iterator.next();
      message = first.done ? undefined : first.value;
      const rest = { [Symbol.asyncIterator]: () => iterator };
      request = {
        ...request,
        message: (async function* () {
          if (!first.done) yield first.value;
          yield* rest;
        })(),
      };
    } else {
      message = request.message;
    }
    if (message === undefined) throw new ConnectError("the call has no request message", Code.InvalidArgument);
    const who = JSON.stringify(user.username);
    const needs = callAccess(request.service.typeName, request.method.localName, message);
    if (needs === undefined) {
      throw toConnectError(
        new PermissionDeniedError(`${who} may not call ${request.service.typeName}/${request.method.name}: only the fast-path API's token may`),
      );
    }
    if (needs !== ANY_CALLER) {
      const decisions = await Promise.all(
        needs.map((access) =>
          review.authorize(user, access).then(
            (decision) => ({ access, decision }),
            (error: unknown) => {
              throw toConnectError(reviewFailure(`cannot tell whether ${who} may ${describeAccess(access)}`, "SubjectAccessReview", error));
            },
          ),
        ),
      );
      const refused = decisions.find(({ decision }) => !decision.allowed);
      if (refused) {
        throw toConnectError(
          new PermissionDeniedError(
            `${who} may not ${describeAccess(refused.access)}${refused.decision.reason ? ` (${refused.decision.reason})` : ""}: ` +
              "a Role or ClusterRole bound to the user must grant it (config/rbac/sandbox-user-cluster-role.yaml grants every call in a namespace)",
          ),
        );
      }
    }
    request.contextValues.set(KUBERNETES_CALLER, user);
    // A create's request id is the caller's own: another user who learns it (it is in the Sandbox's
    // annotations) and sends it again gets a sandbox of their own, never the first one and a new
    // access token to it. The same user's retries still find their create.
    if (!request.stream && request.service.typeName === pb.SandboxService.typeName && request.method.localName === "createSandbox") {
      const create = request.message as pb.CreateSandboxRequest;
      // An id too long (the API takes REVISION_MAX_LENGTH) is left for the service to refuse, saying so.
      if (create.requestId.trim() && create.requestId.length <= REVISION_MAX_LENGTH) {
        const scoped: pb.CreateSandboxRequest = { ...create, requestId: callerRequestId(user, create.requestId.trim()) };
        request = { ...request, message: scoped };
      }
    }
    return next(request);
  };

  return Object.assign(interceptor, {
    guard:
      (handler: Parameters<BearerTokenCheck["guard"]>[0]): ReturnType<BearerTokenCheck["guard"]> =>
      (request, response) => {
        // The API token's holder goes on at once, as with requireBearerToken.
        if (isAdmin(request.headers.authorization)) {
          handler(request, response);
          return;
        }
        userOf(request.headers.authorization).then(
          () => handler(request, response),
          (error: unknown) => answerConnectError(request, response, connectErrorOf(error)),
        );
      },
  });
}

/** A review that did not answer: the controller's missing permission named, else a retry suggested. */
function reviewFailure(what: string, review: "TokenReview" | "SubjectAccessReview", error: unknown): FsbError {
  if (error instanceof PermissionDeniedError) {
    return new UnavailableError(
      `${what}: the controller may not create ${review}s (${messageOf(error)}); bind its ServiceAccount to ClusterRole system:auth-delegator ` +
        "(config/rbac/controller-auth-delegator-binding.yaml), or run it with FSB_KUBERNETES_USERS=off",
      { cause: error },
    );
  }
  return new UnavailableError(`${what}: the Kubernetes API server's ${review} failed (${messageOf(error)}); try again`, { cause: error });
}

/** `requestId` as `user`'s own: a digest of both (64 hex digits, within the id's 253 characters). */
export function callerRequestId(user: KubernetesUser, requestId: string): string {
  return createHash("sha256")
    .update(JSON.stringify([user.username, user.uid ?? "", requestId]))
    .digest("hex");
}

function connectErrorOf(error: unknown): ConnectError {
  if (error instanceof FsbError) return toConnectError(error);
  return error instanceof ConnectError ? error : new ConnectError(messageOf(error), Code.Internal);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
