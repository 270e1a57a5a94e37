/**
 * What every ResourceStore adapter checks the same way: kinds, keys, schema validation, the
 * resourceVersion and uid preconditions, label selectors, and the end of a watch. Internal to store/.
 */
import {
  AlreadyExistsError,
  ConflictError,
  FsbError,
  NotFoundError,
  ValidationError,
  validateSandbox,
  validateSandboxPool,
  type ObjectMeta,
  type ValidationOptions,
} from "@fast-sandbox/api";
import type { AnyResource, ObjectKey, PageOptions, ResourceKind, Watch, WatchEventType, WriteOptions } from "./resource-store.js";

/** Where a store reports failures it swallows (watch listeners that throw). A pino logger fits. */
export interface StoreLogger {
  warn(bindings: Record<string, unknown>, message: string): void;
}

export const consoleLogger: StoreLogger = {
  warn: (bindings, message) => console.warn(message, bindings),
};

/** The checks of each kind; a write limits them to the parts of the object it changes (ValidationOptions). */
export const VALIDATORS: Record<ResourceKind, (value: unknown, options?: ValidationOptions) => void> = {
  Sandbox: validateSandbox,
  SandboxPool: validateSandboxPool,
};

const KIND_NOUNS: Record<ResourceKind, string> = {
  Sandbox: "sandbox",
  SandboxPool: "sandbox pool",
};

export function describe(kind: ResourceKind, key: { namespace?: string | undefined; name: string }): string {
  return `${KIND_NOUNS[kind]} ${key.namespace ?? ""}/${key.name}`;
}

export function checkKind(kind: string): asserts kind is ResourceKind {
  if (!Object.hasOwn(VALIDATORS, kind)) {
    throw new ValidationError("kind", `${JSON.stringify(kind)} is not a resource kind; allowed: ${Object.keys(VALIDATORS).join(", ")}`);
  }
}

export function checkKey(key: ObjectKey): void {
  if (typeof key?.namespace !== "string" || key.namespace === "") throw new ValidationError("namespace", "is required");
  if (typeof key.name !== "string" || key.name === "") throw new ValidationError("name", "is required");
}

/** Enough shape to find the object; the schema validation afterwards checks everything. */
export function requireShape(object: unknown): AnyResource {
  if (typeof object !== "object" || object === null) throw new ValidationError("", "the object must be a JSON object");
  const metadata = (object as { metadata?: unknown }).metadata;
  if (typeof metadata !== "object" || metadata === null) throw new ValidationError("metadata", "is required");
  return object as AnyResource;
}

export function keyOfObject(object: AnyResource): ObjectKey {
  const { name, namespace } = object.metadata;
  if (typeof name !== "string" || name === "") throw new ValidationError("metadata.name", "is required");
  if (typeof namespace !== "string" || namespace === "") {
    throw new ValidationError("metadata.namespace", "is required: the store keeps every object in a namespace");
  }
  return { namespace, name };
}

/**
 * The resourceVersion an update is conditional on, or undefined for an unconditional write.
 * ValidationError when neither is given: a write without a version is the classic lost update.
 */
export function preconditionVersion(kind: ResourceKind, object: AnyResource, options: WriteOptions | undefined): string | undefined {
  if (options?.unconditional === true) return undefined;
  const version = object.metadata.resourceVersion;
  if (typeof version !== "string" || version === "") {
    throw new ValidationError(
      "metadata.resourceVersion",
      `is required to update ${describe(kind, object.metadata)}: send the resourceVersion you read ` +
        "(or write with { unconditional: true } when you own what you write)",
    );
  }
  return version;
}

export function notFoundError(kind: ResourceKind, key: ObjectKey, options?: { cause?: unknown }): NotFoundError {
  return new NotFoundError(`${describe(kind, key)} not found`, options);
}

export function alreadyExistsError(kind: ResourceKind, key: ObjectKey): AlreadyExistsError {
  return new AlreadyExistsError(`${describe(kind, key)} already exists; choose another name or delete it first`);
}

/**
 * The preconditions of a write to `current`, the stored object: the resourceVersion it is
 * conditional on (undefined: unconditional, see preconditionVersion), and the uid sent (see checkUid).
 */
export function checkPreconditions(kind: ResourceKind, key: ObjectKey, current: AnyResource, version: string | undefined, sentUid: string | undefined): void {
  if (version !== undefined && version !== current.metadata.resourceVersion) {
    throw new ConflictError(conflictMessage(kind, key, current.metadata.resourceVersion, version));
  }
  checkUid(kind, key, current.metadata.uid, sentUid);
}

/** A uid sent (not "") must be the stored object's, even for an unconditional write: else the name was deleted and created again. */
export function checkUid(kind: ResourceKind, key: ObjectKey, currentUid: string | undefined, sentUid: string | undefined): void {
  if (sentUid !== undefined && sentUid !== "" && sentUid !== currentUid) {
    throw new ConflictError(uidConflictMessage(kind, key, currentUid, sentUid));
  }
}

export function conflictMessage(kind: ResourceKind, key: ObjectKey, current: string | undefined, sent: string): string {
  return `${describe(kind, key)} was modified (resourceVersion ${current ?? "?"}, you sent ${sent}); read it again and retry`;
}

function uidConflictMessage(kind: ResourceKind, key: ObjectKey, current: string | undefined, sent: string): string {
  return `${describe(kind, key)} was deleted and created again (uid ${current ?? "?"}, you sent ${sent}); read it again and retry`;
}

/** The finalizers `next` adds to `current`'s: forbidden once deletion started. */
export function checkNoFinalizerAdded(kind: ResourceKind, current: ObjectMeta, next: ObjectMeta): void {
  if (current.deletionTimestamp === undefined) return;
  const added = (next.finalizers ?? []).filter((f) => !(current.finalizers ?? []).includes(f));
  if (added.length > 0) {
    throw new ValidationError(
      "metadata.finalizers",
      `cannot add finalizer ${JSON.stringify(added[0])}: ${describe(kind, current)} is being deleted ` +
        `(deletionTimestamp ${current.deletionTimestamp}); only removing finalizers is allowed`,
    );
  }
}

/** A JSON deep copy: detaches the caller's object and drops `undefined` fields. */
export function normalize<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

/** An empty finalizer list and no list mean the same; store one form so comparisons and deletion see them alike. */
export function dropEmptyFinalizers(metadata: ObjectMeta): void {
  if (Array.isArray(metadata.finalizers) && metadata.finalizers.length === 0) delete metadata.finalizers;
}

/** Structural equality of JSON values, ignoring key order. */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((item, index) => jsonEqual(item, b[index]));
  }
  const left = a as Record<string, unknown>;
  const right = b as Record<string, unknown>;
  const leftKeys = Object.keys(left).filter((k) => left[k] !== undefined);
  const rightKeys = Object.keys(right).filter((k) => right[k] !== undefined);
  if (leftKeys.length !== rightKeys.length) return false;
  return leftKeys.every((k) => Object.hasOwn(right, k) && jsonEqual(left[k], right[k]));
}

export function matchesLabels(labels: Record<string, string> | undefined, selector: Record<string, string> | undefined): boolean {
  if (selector === undefined) return true;
  for (const [key, value] of Object.entries(selector)) {
    if (labels === undefined || !Object.hasOwn(labels, key) || labels[key] !== value) return false;
  }
  return true;
}

/**
 * The event a watch with `selector` sees for a change, as the API server reports it: an object whose
 * labels start (stop) matching arrives as ADDED (DELETED); undefined when the watch sees nothing.
 * `labels` are the object's after the change, `previousLabels` as stored before it (MODIFIED,
 * DELETED). A DELETED goes to the watches the stored object matched, as the API server filters it
 * on the object it deletes: when removing the last finalizer also changed the labels, a watch of the
 * old labels must still learn that the object is gone.
 */
export function eventTypeForSelector(
  type: WatchEventType,
  labels: Record<string, string> | undefined,
  previousLabels: Record<string, string> | undefined,
  selector: Record<string, string> | undefined,
): WatchEventType | undefined {
  if (selector === undefined) return type;
  if (type === "ADDED") return matchesLabels(labels, selector) ? type : undefined;
  const matchedBefore = matchesLabels(previousLabels, selector);
  if (type === "DELETED") return matchedBefore ? type : undefined;
  const matchesNow = matchesLabels(labels, selector);
  if (matchesNow) return matchedBefore ? "MODIFIED" : "ADDED";
  return matchedBefore ? "DELETED" : undefined;
}

/** Sorts by key (compareKeys), as every store lists: not by namespace, then name (`team-b/…` comes before `team/…`). */
export function byNamespaceAndName(a: AnyResource, b: AnyResource): number {
  return compareKeys({ namespace: a.metadata.namespace ?? "", name: a.metadata.name }, { namespace: b.metadata.namespace ?? "", name: b.metadata.name });
}

/** The order of byNamespaceAndName, on keys (`namespace/name` as one string, as the API server's keys sort). */
export function compareKeys(a: ObjectKey, b: ObjectKey): number {
  const left = `${a.namespace}/${a.name}`;
  const right = `${b.namespace}/${b.name}`;
  return left < right ? -1 : left > right ? 1 : 0;
}

/** A list's `limit`, checked: undefined (every object) or a whole number > 0. */
export function pageLimit(options: PageOptions): number | undefined {
  const { limit } = options;
  if (limit === undefined) return undefined;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new ValidationError("limit", `${String(limit)} is not a whole number of objects > 0`);
  return limit;
}

/**
 * The `continue` token of the stores that page by key (SQLite, memory): the key of the page's last
 * object, so the next page starts after it whatever was created or deleted meanwhile.
 */
export function continueToken(key: ObjectKey): string {
  return Buffer.from(JSON.stringify([key.namespace, key.name])).toString("base64url");
}

/** The key a `continue` token (continueToken) ends at; undefined for none; ValidationError for one this store did not make. */
export function continueAfter(options: PageOptions): ObjectKey | undefined {
  const token = options.continue;
  if (token === undefined || token === "") return undefined;
  let key: unknown;
  try {
    key = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    key = undefined;
  }
  if (!Array.isArray(key) || key.length !== 2 || typeof key[0] !== "string" || typeof key[1] !== "string") {
    throw new ValidationError("continue", "is not a token of this list: pass the one the previous page returned, unchanged");
  }
  return { namespace: key[0], name: key[1] };
}

/** Seconds, like Kubernetes' metav1.Time, so every store produces the same shape. */
export function timestamp(date: Date): string {
  return date.toISOString().replace(/\.\d+Z$/, "Z");
}

export function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof value === "object" && value !== null && typeof (value as { then?: unknown }).then === "function";
}

/** Calls a watch listener, logging (not propagating) what it throws or rejects with. */
export function callListener(logger: StoreLogger, bindings: Record<string, unknown>, call: () => unknown): void {
  const report = (error: unknown): void => {
    logger.warn({ err: error, ...bindings }, "a resource store watch listener failed; the event was dropped for that listener");
  };
  try {
    const result = call();
    if (isPromiseLike(result)) result.then(undefined, report);
  } catch (error) {
    report(error);
  }
}

/**
 * The end of one watch: `done` settles once (the first `end` wins), its rejection is marked handled,
 * and `ended` tells the delivery code to drop further events.
 */
export class WatchEnd implements Watch {
  readonly done: Promise<void>;
  #ended = false;
  #resolve!: () => void;
  #reject!: (error: FsbError) => void;
  readonly #onStop: () => void;

  constructor(onStop: () => void) {
    this.#onStop = onStop;
    this.done = new Promise<void>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.done.catch(() => undefined);
  }

  get ended(): boolean {
    return this.#ended;
  }

  stop(): void {
    this.end();
  }

  /** Ends the watch: cleanly without an error, failed with it. Later calls change nothing. */
  end(error?: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#onStop();
    if (error === undefined) this.#resolve();
    else this.#reject(FsbError.from(error));
  }
}
