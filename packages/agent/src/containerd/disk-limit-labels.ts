/**
 * A sandbox's disk limit and its eviction, as labels of its container: both outlive the agent, so an
 * agent that restarts keeps guarding its sandboxes' disks, and keeps reporting why it stopped one.
 */
import type { SandboxResources } from "../runtime/runtime.js";

/** The sandbox's disk limit in bytes (resources.ephemeralStorageBytes). */
export const LABEL_EPHEMERAL_STORAGE = "fast-sandbox.io/ephemeral-storage-bytes";
/** Why the agent stopped the sandbox (Runtime.evict), set just before it did. */
export const LABEL_EVICTED = "fast-sandbox.io/evicted";
/** containerd refuses a label of more than 4096 bytes, key and value together. */
const EVICTED_MAX_LENGTH = 1024;

/** The labels that record a sandbox's disk limit (none without one). */
export function diskLimitLabels(resources: SandboxResources | undefined): Record<string, string> {
  const bytes = resources?.ephemeralStorageBytes;
  return bytes !== undefined && bytes > 0 ? { [LABEL_EPHEMERAL_STORAGE]: String(bytes) } : {};
}

/** The disk limit its labels record, in bytes; undefined: none (or a value no agent wrote). */
export function diskLimitOf(labels: Record<string, string>): number | undefined {
  const text = labels[LABEL_EPHEMERAL_STORAGE];
  if (text === undefined || !/^[1-9][0-9]*$/.test(text)) return undefined;
  const bytes = Number(text);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** The label that records an eviction's reason (cut to a length containerd takes). */
export function evictedLabel(reason: string): Record<string, string> {
  return { [LABEL_EVICTED]: reason.length > EVICTED_MAX_LENGTH ? `${reason.slice(0, EVICTED_MAX_LENGTH - 1)}…` : reason };
}
