/**
 * What each call of the fast-path API does, in Kubernetes' terms: the verb, resource (of API group
 * `sandbox.fast.io`), subresource, namespace and name a SubjectAccessReview asks about when the
 * caller is a Kubernetes user (kubernetes-access-review.ts) rather than the holder of the API token.
 *
 * Sandboxes and pools are the CRDs' resources, so one RBAC rule covers `kubectl` and the fast path
 * alike; what the fast path does beyond them follows Kubernetes' own subresources: `sandboxes/exec`
 * is created (as `pods/exec`), `sandboxes/log` and `sandboxes/stats` read (as `pods/log`),
 * `sandboxes/token` created (as `serviceaccounts/token`), `sandboxes/checkpoint`, `sandboxes/fork`,
 * `sandboxes/pause` and `sandboxes/resume` created on the sandbox (a fork also creates sandboxes; a
 * restore also reads its checkpoint). Checkpoints (`sandboxcheckpoints`), a pool's agents
 * (`sandboxpools/agents`, read) and image pulls (`sandboxpools/pull`, created) name resources of
 * their own; the E2B API's keys are `e2bapikeys`, cluster-wide (a key reaches every sandbox of the
 * E2B API). config/rbac/sandbox-user-cluster-role.yaml grants every call in a namespace; the E2B
 * API's keys need a ClusterRole with `e2bapikeys` bound by a ClusterRoleBinding.
 *
 * The tables are typed by the services' generated descriptors: a method added to a service without
 * its line here does not compile.
 */
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { pb } from "@fast-sandbox/api";
import { DEFAULT_NAMESPACE } from "./sandbox-manager.js";

export const SANDBOX_API_GROUP = "sandbox.fast.io";

/** One question for the authorizer: may the caller `verb` the `resource` (in `namespace`; "" is every namespace)? */
export interface ResourceAccess {
  verb: "get" | "list" | "create" | "update" | "patch" | "delete";
  resource: string;
  subresource?: string;
  /** "" for a cluster-wide resource or a call across every namespace. */
  namespace: string;
  name?: string;
  /** The resource belongs to no namespace (the E2B API's keys). */
  clusterWide?: true;
}

/** A call any authenticated caller may make (it reveals nothing of any namespace). */
export const ANY_CALLER = "any-caller";

/** What a call needs: every access listed (a restore also reads its checkpoint), or nothing but a caller. */
export type CallAccess = ResourceAccess[] | typeof ANY_CALLER;

/** What a table's line gives: one access, several, or ANY_CALLER. */
type Needs = ResourceAccess | ResourceAccess[] | typeof ANY_CALLER;

type InputOf<M> = M extends { input: infer I extends DescMessage } ? MessageShape<I> : never;
/** One entry per method of the service `S` (a generated descriptor), given the method's request. */
type AccessTable<S extends { method: object }> = { [K in keyof S["method"]]: (request: InputOf<S["method"][K]>) => Needs };

/** The namespace a call names: empty is the default namespace. */
const namespaceOf = (namespace: string) => namespace || DEFAULT_NAMESPACE;
/** A list's namespace: empty is the default namespace, "*" every namespace. */
const listNamespaceOf = (namespace: string) => (namespace === "*" ? "" : namespaceOf(namespace));

const sandbox = (verb: ResourceAccess["verb"], request: { namespace: string; name: string }, subresource?: string): ResourceAccess => ({
  verb,
  resource: "sandboxes",
  ...(subresource ? { subresource } : {}),
  namespace: namespaceOf(request.namespace),
  ...(request.name ? { name: request.name } : {}),
});

const SANDBOX_SERVICE: AccessTable<typeof pb.SandboxService> = {
  // A sandbox is created under its name: RBAC's resourceNames cannot limit creates, as for kubectl.
  // A restore also reads the checkpoint it comes from (its memory and files become the caller's).
  createSandbox: (request) => [
    { verb: "create", resource: "sandboxes", namespace: namespaceOf(request.namespace) },
    ...(request.fromCheckpoint
      ? [{ verb: "get" as const, resource: "sandboxcheckpoints", namespace: namespaceOf(request.namespace), name: request.fromCheckpoint }]
      : []),
  ],
  getSandbox: (request) => sandbox("get", request),
  getSandboxStats: (request) => sandbox("get", request, "stats"),
  getSandboxStatsHistory: (request) => sandbox("get", request, "stats"),
  listSandboxes: (request) => ({ verb: "list", resource: "sandboxes", namespace: listNamespaceOf(request.namespace) }),
  // UpdateSandbox replaces the mutable fields it is given, as a PATCH of the object would.
  updateSandbox: (request) => sandbox("patch", request),
  deleteSandbox: (request) => sandbox("delete", request),
  logs: (request) => sandbox("get", request, "log"),
  exec: (request) => sandbox("create", request, "exec"),
  rotateAccessToken: (request) => sandbox("create", request, "token"),
  getSandboxProxy: () => ANY_CALLER,
  checkpointSandbox: (request) => sandbox("create", request, "checkpoint"),
  listCheckpoints: (request) => ({ verb: "list", resource: "sandboxcheckpoints", namespace: listNamespaceOf(request.namespace) }),
  deleteCheckpoint: (request) => ({
    verb: "delete",
    resource: "sandboxcheckpoints",
    namespace: namespaceOf(request.namespace),
    ...(request.name ? { name: request.name } : {}),
  }),
  // Copies the sandbox into new ones: a fork of it, and creates.
  forkSandbox: (request) => [sandbox("create", request, "fork"), { verb: "create", resource: "sandboxes", namespace: namespaceOf(request.namespace) }],
  pauseSandbox: (request) => sandbox("create", request, "pause"),
  resumeSandbox: (request) => sandbox("create", request, "resume"),
};

const pool = (verb: ResourceAccess["verb"], namespace: string, name: string, subresource?: string): ResourceAccess => ({
  verb,
  resource: "sandboxpools",
  ...(subresource ? { subresource } : {}),
  namespace: namespaceOf(namespace),
  ...(name ? { name } : {}),
});

const POOL_SERVICE: AccessTable<typeof pb.PoolService> = {
  // Creates the pool or replaces its spec: what kubectl apply needs for either (create, patch).
  applySandboxPool: (request) => {
    const [namespace, name] = [request.pool?.metadata?.namespace ?? "", request.pool?.metadata?.name ?? ""];
    return [pool("create", namespace, name), pool("patch", namespace, name)];
  },
  getSandboxPool: (request) => pool("get", request.namespace, request.name),
  listSandboxPools: (request) => ({ verb: "list", resource: "sandboxpools", namespace: listNamespaceOf(request.namespace) }),
  deleteSandboxPool: (request) => pool("delete", request.namespace, request.name),
  // Empty lists every namespace's agents (as "*").
  listAgents: (request) => ({
    verb: "get",
    resource: "sandboxpools",
    subresource: "agents",
    namespace: request.namespace === "*" ? "" : request.namespace,
    ...(request.pool ? { name: request.pool } : {}),
  }),
  // Empty is the pool `default` (pool-service.ts).
  pullImage: (request) => pool("create", request.namespace, request.pool || "default", "pull"),
};

const E2B_SERVICE: AccessTable<typeof pb.E2bService> = {
  createApiKey: () => ({ verb: "create", resource: "e2bapikeys", namespace: "", clusterWide: true }),
  revokeApiKey: () => ({ verb: "delete", resource: "e2bapikeys", namespace: "", clusterWide: true }),
};

const TABLES = new Map<string, Record<string, (request: never) => Needs>>([
  [pb.SandboxService.typeName, SANDBOX_SERVICE],
  [pb.PoolService.typeName, POOL_SERVICE],
  [pb.E2bService.typeName, E2B_SERVICE],
]);

/**
 * What the call `method` (its local name, e.g. `createSandbox`) of `service` (its type name) with
 * `request` does; undefined for a call of no table (refused to every Kubernetes user).
 */
export function callAccess(service: string, method: string, request: unknown): CallAccess | undefined {
  const table = TABLES.get(service);
  const needs = table && Object.hasOwn(table, method) ? table[method]?.(request as never) : undefined;
  if (needs === undefined || needs === ANY_CALLER) return needs;
  return Array.isArray(needs) ? needs : [needs];
}

/** The access for a message: `create sandboxes/exec in namespace "team"`, `list sandboxes in every namespace`. */
export function describeAccess(access: ResourceAccess): string {
  const what = `${access.resource}${access.subresource ? `/${access.subresource}` : ""}${access.name ? ` ${JSON.stringify(access.name)}` : ""}`;
  const where = access.clusterWide ? "(cluster-wide)" : access.namespace ? `in namespace ${JSON.stringify(access.namespace)}` : "in every namespace";
  return `${access.verb} ${SANDBOX_API_GROUP} ${what} ${where}`;
}
