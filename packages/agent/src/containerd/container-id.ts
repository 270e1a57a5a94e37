/**
 * containerd's names for a sandbox, decided here and nowhere else. Sandbox ids follow the agent
 * API's rule (`isSandboxId` in @fast-sandbox/api), which containerd's identifier rule is stricter
 * than: `a--b` and ids over 76 characters are valid sandbox ids but not containerd ids. Each sandbox
 * id maps to one container id — also its task id, snapshot key and cgroup name — and the container
 * keeps the sandbox id in its `fast-sandbox.io/sandbox-id` label, so everything the agent reports
 * speaks the sandbox id.
 */
import { createHash } from "node:crypto";
import { LABEL_SANDBOX_ID } from "../runtime/runtime.js";

/** containerd's identifier rule (`identifiers.Validate`): alphanumeric runs joined by single `.`, `_` or `-`, at most 76 characters. */
export const CONTAINERD_ID_MAX_LENGTH = 76;
const CONTAINERD_ID = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;

/** Prefix of a container id derived from a digest of its sandbox id. */
const DIGEST_PREFIX = "sb-";
/** Hex digits of the SHA-256 kept (128 bits: no two sandbox ids share one in practice). */
const DIGEST_HEX_DIGITS = 32;

export function isContainerdId(value: string): boolean {
  return value.length <= CONTAINERD_ID_MAX_LENGTH && CONTAINERD_ID.test(value);
}

/**
 * The containerd container id of a sandbox: the sandbox id itself when containerd accepts it (so
 * sandboxes stay recognisable in `ctr`, and containers created before this mapping existed — always
 * under their sandbox id — are found again), otherwise `sb-` and 32 hex digits of the sandbox id's
 * SHA-256. Deterministic: an agent that restarts finds its containers again with no table to keep.
 */
export function containerIdOf(sandboxId: string): string {
  if (isContainerdId(sandboxId)) return sandboxId;
  return DIGEST_PREFIX + createHash("sha256").update(sandboxId).digest("hex").slice(0, DIGEST_HEX_DIGITS);
}

/** The sandbox id a container belongs to: its label, or — without one — its own id. */
export function sandboxIdOfContainer(container: { id: string; labels: Readonly<Record<string, string>> }): string {
  return container.labels[LABEL_SANDBOX_ID] || container.id;
}
