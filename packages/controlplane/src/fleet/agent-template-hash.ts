/**
 * What an agent was started with, as a short hash: a fleet records it on each agent it starts
 * (a Pod label in the Kubernetes mode, the process's settings in the embedded one), and the pool
 * controller replaces the idle agents whose hash is not the one the pool's spec gives now — a
 * change of agentTemplate, agent limits or prepared instances reaches the agents already running.
 *
 * The hash is of the value's canonical JSON (keys sorted), so two templates that differ only in
 * the order of their keys are the same template.
 */
import { createHash } from "node:crypto";
import { stringify } from "safe-stable-stringify";

/** The label of an agent Pod that holds the hash of its template. */
export const TEMPLATE_HASH_LABEL = "fast-sandbox.io/template-hash";

/** 16 hex digits: short enough for a label value, long enough that two templates never collide in practice. */
export function agentTemplateHash(value: unknown): string {
  return createHash("sha256")
    .update(stringify(value) ?? "")
    .digest("hex")
    .slice(0, 16);
}
