/**
 * `@fast-sandbox/api/core`: the API without the resource schemas and the CRD renderer — errors, the
 * wire messages and their Connect plumbing, the cleartext server and its probes, image references,
 * sandbox ids. Processes that never validate a Sandbox or a SandboxPool (the agent) import this
 * entry instead of the package's, and so never load TypeBox and the schemas built with it (up to
 * 10 MiB of an agent's memory at start, 3–5 MiB once idle: docs/PERFORMANCE.md, "Footprint at
 * scale"). Everything here is also exported by the package's main entry, as the same objects.
 */
export * from "./errors.js";
export * from "./schema/image-reference.js";
export { SANDBOX_ID_MAX_LENGTH, isSandboxId } from "./schema/sandbox-id.js";
export { SANDBOX_DAEMON_PORT } from "./schema/sandbox-daemon-port.js";
export { fromConnectError, toConnectError } from "./wire/connect-errors.js";
export { equalTokens, requireBearerToken, sendBearerToken } from "./wire/bearer-auth.js";
export { ACCESS_TOKEN_HEADER, ACCESS_TOKEN_RESPONSE_HEADER } from "./wire/access-token-headers.js";
/** Generated wire messages and services (protobuf-es), namespaced to keep them apart from the resource types. */
export * as pb from "./wire/messages.js";
export { AsyncQueue } from "./util/async-queue.js";
export { listenCleartext, type CleartextServer, type CleartextServerOptions } from "./server/cleartext-server.js";
export { withProbeRoutes, PROBE_PATHS, type HttpHandler, type Probes } from "./server/probe-routes.js";
