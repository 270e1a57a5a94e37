/**
 * What each write does to an object, by the port's Kubernetes rules, for the stores that keep the
 * objects themselves (memory, SQLite; the API server applies these rules itself): the identity
 * fields the store owns, how `update` and `updateStatus` split spec and metadata from status, when
 * `generation` bumps, what `delete` does while finalizers remain, when removing the last finalizer
 * deletes, and when a write changes nothing. A plan is computed from the current object (read under
 * the store's write lock, its preconditions checked: see checkPreconditions) and what the caller
 * sent; the store then gives it the next resourceVersion, persists it and publishes its event.
 * Internal to store/.
 */
import { randomUUID } from "node:crypto";
import type { Clock } from "../controller/clock.js";
import type { AnyResource, ResourceKind, WatchEventType } from "./resource-store.js";
import { VALIDATORS, checkNoFinalizerAdded, dropEmptyFinalizers, jsonEqual, normalize, timestamp } from "./store-rules.js";

/** A write that changes nothing: nothing is stored, the resourceVersion stays, no event. */
export interface NoChange {
  event: undefined;
  /** The current object, which the write returns. */
  object: AnyResource;
}

export interface Change {
  /** ADDED: a new object; MODIFIED: it replaces the stored one; DELETED: it goes, `object` being its final state. */
  event: WatchEventType;
  /** What to store, without its new resourceVersion. */
  object: AnyResource;
  /**
   * The labels as stored before a MODIFIED or DELETED change (undefined for ADDED), so filtered
   * watches see the object enter or leave their selector, and get the DELETED of an object they
   * matched even when the write that deletes it also changed its labels.
   */
  previousLabels: Record<string, string> | undefined;
}

export type WritePlan = NoChange | Change;

/**
 * Like a Kubernetes resource with a status subresource: create ignores status, and the store sets
 * the identity fields (uid, generation 1, creationTimestamp, no deletionTimestamp) whatever was sent.
 * ValidationError when the object is invalid.
 */
export function planCreate(kind: ResourceKind, given: AnyResource, clock: Clock): Change {
  const { status: _ignored, ...rest } = given;
  const object = normalize<AnyResource>({
    ...rest,
    metadata: {
      ...given.metadata,
      uid: randomUUID(),
      resourceVersion: "0",
      generation: 1,
      creationTimestamp: timestamp(clock.now()),
      deletionTimestamp: undefined,
    },
  });
  dropEmptyFinalizers(object.metadata);
  VALIDATORS[kind](object);
  return { event: "ADDED", object, previousLabels: undefined };
}

/**
 * `update`: spec, labels, annotations and finalizers from `given`; status and the identity fields
 * stay. Generation bumps when the spec changed; an object being deleted accepts no new finalizer,
 * and goes (DELETED) when its last finalizer is removed.
 */
export function planUpdate(kind: ResourceKind, current: AnyResource, given: AnyResource): WritePlan {
  const currentMeta = current.metadata;
  const object = normalize<AnyResource>({
    ...given,
    metadata: {
      ...given.metadata,
      uid: currentMeta.uid,
      resourceVersion: currentMeta.resourceVersion,
      generation: currentMeta.generation,
      creationTimestamp: currentMeta.creationTimestamp,
      deletionTimestamp: currentMeta.deletionTimestamp,
    },
    status: current.status,
  });
  dropEmptyFinalizers(object.metadata);
  const specChanged = !jsonEqual(object.spec, current.spec);
  // What the write changes is checked: a spec left as stored (even one today's rules refuse, stored
  // before them) does not keep its metadata — the removal of a finalizer — from being written.
  VALIDATORS[kind](object, { parts: specChanged ? ["metadata", "spec"] : ["metadata"] });
  const meta = object.metadata;
  checkNoFinalizerAdded(kind, currentMeta, meta);
  const metadataChanged =
    !jsonEqual(meta.labels, currentMeta.labels) || !jsonEqual(meta.annotations, currentMeta.annotations) || !jsonEqual(meta.finalizers, currentMeta.finalizers);
  if (!specChanged && !metadataChanged) return { event: undefined, object: current };
  if (specChanged) meta.generation = (currentMeta.generation ?? 0) + 1;
  // Gone with its last finalizer: the API server deletes the object as stored, so the watches that
  // get the DELETED are those its stored labels matched, not those the labels sent would.
  if (meta.deletionTimestamp !== undefined && meta.finalizers === undefined) return { event: "DELETED", object, previousLabels: currentMeta.labels };
  return { event: "MODIFIED", object, previousLabels: currentMeta.labels };
}

/** `updateStatus`: the status from `given` (replacing the stored one), nothing else. */
export function planStatusUpdate(kind: ResourceKind, current: AnyResource, given: AnyResource): WritePlan {
  const object = normalize<AnyResource>({ ...current, status: given.status });
  VALIDATORS[kind](object, { parts: ["status"] });
  if (jsonEqual(object.status, current.status)) return { event: undefined, object: current };
  return { event: "MODIFIED", object, previousLabels: current.metadata.labels };
}

/**
 * `delete`: without finalizers the object goes (DELETED, carrying its last state); with finalizers
 * deletion starts — deletionTimestamp set and generation bumped, once: deleting again changes nothing.
 */
export function planDelete(current: AnyResource, clock: Clock): WritePlan {
  const meta = current.metadata;
  if (meta.finalizers === undefined || meta.finalizers.length === 0) return { event: "DELETED", object: current, previousLabels: meta.labels };
  if (meta.deletionTimestamp !== undefined) return { event: undefined, object: current };
  const object = normalize(current);
  object.metadata.deletionTimestamp = timestamp(clock.now());
  object.metadata.generation = (meta.generation ?? 0) + 1;
  return { event: "MODIFIED", object, previousLabels: meta.labels };
}

/** The object as stored by a write: with the resourceVersion the store gave it. */
export function withResourceVersion<T extends AnyResource>(object: T, resourceVersion: number): T {
  return { ...object, metadata: { ...object.metadata, resourceVersion: String(resourceVersion) } };
}
