export * from "./errors.js";
export * from "./schema/object-meta.js";
export * from "./schema/sandbox.js";
export * from "./schema/sandbox-pool.js";
export * from "./schema/quantity.js";
export * from "./schema/image-reference.js";
export { SANDBOX_ID_MAX_LENGTH, isSandboxId } from "./schema/sandbox-id.js";
export { assertValid, fieldPath, validateSandbox, validateSandboxPool } from "./schema/validation.js";
export { renderCrds, toStructuralSchema } from "./schema/crd.js";
export * from "./wire/convert.js";
export { fromConnectError, toConnectError } from "./wire/connect-errors.js";
export { requireBearerToken, sendBearerToken } from "./wire/bearer-auth.js";
/** Generated wire messages and services (protobuf-es), namespaced to keep them apart from the resource types. */
export * as pb from "./wire/messages.js";
export { AsyncQueue } from "./util/async-queue.js";
export { listenCleartext, type CleartextServer } from "./server/cleartext-server.js";
export { withProbeRoutes, PROBE_PATHS, type HttpHandler, type Probes } from "./server/probe-routes.js";
