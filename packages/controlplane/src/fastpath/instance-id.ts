/**
 * The id of a new instance of a sandbox (`status.sandboxID`). The control plane chooses it before it
 * asks an agent for the sandbox, and records it first: the record names the instance before it
 * exists, so crash recovery can match an agent's sandboxes to records. The id follows the agent
 * API's rule (`isSandboxId`) and nothing else: which ids a runtime accepts is the agent's business
 * (containerd's rule lives in the agent's container-id.ts).
 */
import { randomBytes } from "node:crypto";
import { SANDBOX_ID_MAX_LENGTH, isSandboxId } from "@fast-sandbox/api";

/** Random hex digits that end an id whose namespace and name fit whole. */
const SHORT_SUFFIX_BYTES = 3;
/** Random hex digits that end an id whose namespace and name were cut: they alone keep it unique. */
const LONG_SUFFIX_BYTES = 8;

/**
 * `<namespace>.<name>.<6 hex>`: readable, and unique among the instances of one sandbox. When that
 * is longer than the API allows (names of up to 253 characters come through Kubernetes), the
 * readable part is cut and 16 hex digits end the id instead.
 */
export function newInstanceId(namespace: string, name: string): string {
  const readable = `${namespace}.${name}`;
  const short = `${readable}.${randomBytes(SHORT_SUFFIX_BYTES).toString("hex")}`;
  if (short.length <= SANDBOX_ID_MAX_LENGTH && isSandboxId(short)) return short;
  const suffix = randomBytes(LONG_SUFFIX_BYTES).toString("hex");
  const cut = `${readable.slice(0, SANDBOX_ID_MAX_LENGTH - suffix.length - 1).replace(/[._-]+$/, "")}.${suffix}`;
  // Only names no API or Kubernetes validation lets through fail here; they still get an id.
  return isSandboxId(cut) ? cut : `sb-${suffix}`;
}
