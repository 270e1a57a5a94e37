/**
 * The informer of Sandboxes that a control plane's controllers share (SandboxReconciler,
 * AllocationSync, SandboxDirectory, the facts of heartbeats): one cache of every sandbox and one
 * watch, where each user used to keep its own copy (docs/PERFORMANCE.md, "Footprint at scale").
 * Each user adds the indexes it needs; an index two users need is one, made by the same function.
 */
import type { Sandbox } from "@fast-sandbox/api";
import type { Logger } from "pino";
import type { Clock } from "../controller/clock.js";
import { Informer, type IndexFunction } from "../controller/informer.js";
import type { ResourceStore } from "../store/resource-store.js";

/** The index of sandboxes by the agent they are assigned to (`status.assignedPod`). */
export const SANDBOXES_BY_AGENT = "agent";
export const sandboxesByAgent: IndexFunction<Sandbox> = (sandbox) => (sandbox.status?.assignedPod ? [sandbox.status.assignedPod] : []);

export interface SandboxInformerOptions {
  store: ResourceStore;
  logger: Logger;
  /** @default systemClock */
  clock?: Clock;
  /** Only this namespace. @default all namespaces */
  namespace?: string;
}

export function sandboxInformer(options: SandboxInformerOptions): Informer<"Sandbox"> {
  return new Informer({
    store: options.store,
    kind: "Sandbox",
    logger: options.logger,
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.namespace !== undefined ? { namespace: options.namespace } : {}),
  });
}
