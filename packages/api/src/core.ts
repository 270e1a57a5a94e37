/**
 * `@fast-sandbox/api/core`: the API without the resource schemas and the CRD renderer — errors, the
 * wire messages, their conversion to and from the resource types, and their Connect plumbing, the
 * cleartext server and its probes, image references, sandbox ids, quantities. Processes that never
 * validate a Sandbox or a SandboxPool (the agent, the janitor, the SDK's users) import this entry
 * instead of the package's, and so never load TypeBox and the schemas built with it, nor yaml (up
 * to 10 MiB of an agent's memory at start, 3–5 MiB once idle: docs/PERFORMANCE.md, "Footprint at
 * scale"). Everything here is also exported by the package's main entry, as the same objects.
 */
export * from "./errors.js";
export * from "./schema/image-reference.js";
export { SANDBOX_ID_MAX_LENGTH, isSandboxId } from "./schema/sandbox-id.js";
export { isNumericExecUser, parseExecUser } from "./schema/exec-user.js";
export { checkProcess, type ProcessFields } from "./schema/process-rules.js";
export { MAX_TAIL_LINES, checkTailLines } from "./schema/log-tail.js";
export { CODE_INTERPRETER_PORT, CODE_RUNNING_PORTS, SANDBOX_DAEMON_PORT } from "./schema/sandbox-daemon-port.js";
export { ERROR_CODE_HEADER, fromConnectError, toConnectError } from "./wire/connect-errors.js";
export { equalTokens, requireBearerToken, sendBearerToken } from "./wire/bearer-auth.js";
export { guardSessionErrors, type Http2Sessions } from "./wire/http2-session-guard.js";
export { ACCESS_TOKEN_HEADER, ACCESS_TOKEN_RESPONSE_HEADER, RELAY_SANDBOX_HEADER, TRAFFIC_ACCESS_TOKEN_HEADER } from "./wire/access-token-headers.js";
/** Generated wire messages and services (protobuf-es), namespaced to keep them apart from the resource types. */
export * as pb from "./wire/messages.js";
export { AsyncQueue } from "./util/async-queue.js";
export { listenCleartext, type CleartextServer, type CleartextServerOptions } from "./server/cleartext-server.js";
export { withProbeRoutes, PROBE_PATHS, type HttpHandler, type Probes } from "./server/probe-routes.js";
export { GROUP, VERSION, API_VERSION } from "./schema/api-version.js";
export { parseMemoryBytes, parseCpuMillis, parseDurationMs } from "./schema/quantity.js";
export {
  sandboxToMessage,
  sandboxFromMessage,
  sandboxSpecToMessage,
  sandboxSpecFromMessage,
  sandboxPoolToMessage,
  sandboxPoolFromMessage,
} from "./wire/convert.js";
export { sandboxStatsToMessage, sandboxStatsFromMessage, type SandboxStats } from "./wire/sandbox-stats.js";
/** The resource types (types only: their schemas stay in the main entry). */
export type { Condition, ObjectMeta, OwnerReference } from "./schema/object-meta.js";
export type { Sandbox, SandboxSpec, SandboxStatus, SandboxPhase, EnvVar } from "./schema/sandbox.js";
export type { SandboxPool, SandboxPoolSpec, SandboxPoolStatus } from "./schema/sandbox-pool.js";
export type { EgressPolicy, EgressRule, NetworkMode, PoolNetwork } from "./schema/network.js";
