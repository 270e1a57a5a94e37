/**
 * The Kubernetes-mode `ResourceStore`: Sandbox and SandboxPool custom resources
 * (`sandbox.fast.io/v1alpha1`, CRDs in config/crd/) through the API server, with
 * `@kubernetes/client-node`.
 *
 * - Reads and writes go to the API server (no cache here: an informer on top caches).
 * - `create` sends labels, annotations, finalizers and ownerReferences. `update` is a JSON patch
 *   of spec, labels, annotations and finalizers, conditional on the resourceVersion sent (the patch
 *   sets it, so a stale one is 409 Conflict), so the other metadata (ownerReferences, managedFields…) survives; `updateStatus` is a PUT of the status
 *   subresource with the resourceVersion. An unconditional write reads the object and writes it
 *   conditionally, repeating on conflict.
 * - Objects are validated here with the same schemas as the embedded mode before they are sent,
 *   so a write through the port fails with the same messages in both modes; the API server's own
 *   validation (the CRD schema, label syntax, finalizer rules) stays authoritative. A write is
 *   refused only for what it changes: `updateStatus` checks the status, `update` the metadata, and
 *   the spec unless it is the stored one (read for that only when the spec fails the checks). An
 *   object the CRD accepts but these rules refuse (written with kubectl: an upper-case image, a
 *   malformed agentTemplate) thus still takes its status and the removal of its finalizers.
 * - Watches use the client's Watch with the resourceVersion; a 410 Gone (an ERROR event or the HTTP
 *   status) ends the watch with ExpiredError, the server closing it ends it cleanly. Each watch asks
 *   the server to close it after `timeoutSeconds` (5–10 min, spread as client-go spreads them), and
 *   ends itself cleanly if it is still open a while later: a connection that died without a word
 *   (a partition, a proxy dropping it) would otherwise hold a watch that never delivers again. A
 *   watch's owner (the informer) watches again from the last version it saw.
 * - Every other call has a time limit (kubernetes-request-timeout.ts: 30 s, a list 90 s): one the
 *   API server took and never answered fails with UnavailableError instead of hanging for good.
 * - Errors of the API server and of the connection are translated into the Fast Sandbox error
 *   hierarchy here and nowhere else (`translateKubernetesError`).
 */
import { ApiException, CustomObjectsApi, Watch as KubernetesWatch, type ConfigurationOptions, type KubeConfig } from "@kubernetes/client-node";
import {
  API_VERSION,
  AlreadyExistsError,
  ConflictError,
  ExpiredError,
  FsbError,
  GROUP,
  NotFoundError,
  ObjectMeta,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
  VERSION,
  ValidationError,
} from "@fast-sandbox/api";
import type {
  AnyResource,
  ListOptions,
  ListResult,
  ObjectKey,
  PageOptions,
  ResourceByKind,
  ResourceKind,
  ResourceStore,
  Watch,
  WatchEvent,
  WatchOptions,
  WriteOptions,
} from "./resource-store.js";
import {
  VALIDATORS,
  WatchEnd,
  alreadyExistsError,
  byNamespaceAndName,
  callListener,
  checkKey,
  checkKind,
  checkPreconditions,
  checkUid,
  conflictMessage,
  consoleLogger,
  describe,
  dropEmptyFinalizers,
  jsonEqual,
  pageLimit,
  keyOfObject,
  normalize,
  notFoundError,
  preconditionVersion,
  requireShape,
  type StoreLogger,
} from "./store-rules.js";
import { DEFAULT_WATCH_GRACE_MS, drawWatchTimeoutSeconds } from "./watch-timeout.js";
import { requestTimeouts, withRequestTimeout, type KubernetesRequestTimeouts } from "./kubernetes-request-timeout.js";

/** `requestTimeoutMs` (default 30 s) limits every call but lists and watches, `listTimeoutMs` (default 90 s) lists. */
export interface KubernetesResourceStoreOptions extends KubernetesRequestTimeouts {
  /** Where the API server is and how to authenticate (e.g. `kubeConfig.loadFromDefault()`). */
  kubeConfig: KubeConfig;
  /**
   * Recorded in managedFields as the writer of what this store writes.
   * @default "fast-sandbox"
   */
  fieldManager?: string;
  /**
   * How often an unconditional write reads and writes again when another writer came in between.
   * @default 10
   */
  unconditionalAttempts?: number;
  /**
   * Receives errors thrown by watch listeners.
   * @default console
   */
  logger?: StoreLogger;
  /**
   * The `timeoutSeconds` each watch asks for: the API server closes it then (cleanly).
   * @default a whole number of seconds drawn for each watch between 300 and 599
   */
  watchTimeoutSeconds?: number;
  /**
   * How long past its `timeoutSeconds` a watch the server has not closed is ended by this side.
   * @default 30000
   */
  watchGraceMs?: number;
}

/** The plural resource names of the CRDs (`<plural>.sandbox.fast.io`). */
export const KUBERNETES_PLURALS: Record<ResourceKind, string> = {
  Sandbox: "sandboxes",
  SandboxPool: "sandboxpools",
};

const META_FIELDS = Object.keys(ObjectMeta.properties);

/** The fields of a Kubernetes `Status` this adapter reads. */
interface KubernetesStatus {
  kind?: string;
  code?: number;
  reason?: string;
  message?: string;
  details?: { causes?: { reason?: string; message?: string; field?: string }[] };
}

/** What an error is about, for messages that name the object like the embedded stores do. */
export interface KubernetesErrorContext {
  kind?: ResourceKind;
  key?: ObjectKey;
  /** What was being done, e.g. "watch" (the message adds the kind's plural, or the object with a key). */
  action: string;
  /** The resourceVersion a conditional write sent. */
  sentVersion?: string;
}

type JsonPatch = { op: "add" | "replace"; path: string; value: unknown }[];

export function openKubernetesResourceStore(options: KubernetesResourceStoreOptions): KubernetesResourceStore {
  return new KubernetesResourceStore(options);
}

export class KubernetesResourceStore implements ResourceStore {
  readonly #api: CustomObjectsApi;
  readonly #watcher: KubernetesWatch;
  readonly #fieldManager: string;
  readonly #attempts: number;
  readonly #logger: StoreLogger;
  readonly #watches = new Set<WatchEnd>();
  readonly #watchTimeoutSeconds: number | undefined;
  readonly #watchGraceMs: number;
  readonly #timeouts: Required<KubernetesRequestTimeouts>;
  #closed = false;

  constructor(options: KubernetesResourceStoreOptions) {
    this.#api = options.kubeConfig.makeApiClient(CustomObjectsApi);
    this.#watcher = new KubernetesWatch(options.kubeConfig);
    this.#fieldManager = options.fieldManager ?? "fast-sandbox";
    this.#attempts = options.unconditionalAttempts ?? 10;
    this.#logger = options.logger ?? consoleLogger;
    this.#watchTimeoutSeconds = options.watchTimeoutSeconds;
    this.#watchGraceMs = options.watchGraceMs ?? DEFAULT_WATCH_GRACE_MS;
    this.#timeouts = requestTimeouts(options);
    if (this.#watchTimeoutSeconds !== undefined && (!Number.isSafeInteger(this.#watchTimeoutSeconds) || this.#watchTimeoutSeconds < 1)) {
      throw new ValidationError("watchTimeoutSeconds", `${String(options.watchTimeoutSeconds)} is not a whole number of seconds >= 1`);
    }
    if (!Number.isFinite(this.#watchGraceMs) || this.#watchGraceMs < 0) {
      throw new ValidationError("watchGraceMs", `${String(options.watchGraceMs)} is not a number of milliseconds >= 0`);
    }
    if (!Number.isSafeInteger(this.#attempts) || this.#attempts < 1) {
      throw new ValidationError("unconditionalAttempts", `${String(options.unconditionalAttempts)} is not a whole number >= 1`);
    }
  }

  async get<K extends ResourceKind>(kind: K, key: ObjectKey): Promise<ResourceByKind[K] | undefined> {
    this.#assertOpen();
    checkKind(kind);
    checkKey(key);
    try {
      const raw: unknown = await this.#call({ kind, key, action: "get" }, (call) =>
        this.#api.getNamespacedCustomObject({ ...this.#resource(kind), namespace: key.namespace, name: key.name }, call),
      );
      return fromKubernetes(raw) as ResourceByKind[K];
    } catch (error) {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    }
  }

  async list<K extends ResourceKind>(kind: K, options: ListOptions & PageOptions = {}): Promise<ListResult<ResourceByKind[K]>> {
    this.#assertOpen();
    checkKind(kind);
    const labelSelector = formatLabelSelector(options.labelSelector);
    // Pages are the API server's own (limit and continue: one consistent snapshot across the pages).
    const limit = pageLimit(options);
    const page = { ...(limit !== undefined ? { limit } : {}), ...(options.continue ? { _continue: options.continue } : {}) };
    const namespace = options.namespace;
    const list = (call: ConfigurationOptions): Promise<unknown> =>
      namespace === undefined
        ? this.#api.listClusterCustomObject({ ...this.#resource(kind), labelSelector, ...page }, call)
        : this.#api.listNamespacedCustomObject({ ...this.#resource(kind), namespace, labelSelector, ...page }, call);
    const raw = await this.#call({ kind, action: "list" }, list, this.#timeouts.listTimeoutMs);
    const answer = raw as { items?: unknown[]; metadata?: { resourceVersion?: string; continue?: string } };
    const items = (answer.items ?? []).map(fromKubernetes).sort(byNamespaceAndName);
    const next = answer.metadata?.continue;
    return { items: items as ResourceByKind[K][], resourceVersion: answer.metadata?.resourceVersion ?? "", ...(next ? { continue: next } : {}) };
  }

  async create<K extends ResourceKind>(kind: K, object: ResourceByKind[K]): Promise<ResourceByKind[K]> {
    this.#assertOpen();
    checkKind(kind);
    const given = requireShape(object);
    const key = keyOfObject(given);
    const { labels, annotations, finalizers, ownerReferences } = given.metadata;
    const body = normalize({
      apiVersion: API_VERSION,
      kind,
      metadata: { name: key.name, namespace: key.namespace, labels, annotations, finalizers, ownerReferences },
      spec: given.spec,
    });
    dropEmptyFinalizers(body.metadata);
    VALIDATORS[kind](body);
    const created: unknown = await this.#call({ kind, key, action: "create" }, (call) =>
      this.#api.createNamespacedCustomObject({ ...this.#resource(kind), namespace: key.namespace, body, fieldManager: this.#fieldManager }, call),
    );
    return fromKubernetes(created) as ResourceByKind[K];
  }

  async update<K extends ResourceKind>(kind: K, object: ResourceByKind[K], options?: WriteOptions): Promise<ResourceByKind[K]> {
    this.#assertOpen();
    checkKind(kind);
    const given = requireShape(object);
    const version = preconditionVersion(kind, given, options);
    const key = keyOfObject(given);
    const { status: _ignored, ...withoutStatus } = given;
    const candidate = normalize(withoutStatus) as AnyResource;
    dropEmptyFinalizers(candidate.metadata);
    const specProblem = specProblemOf(kind, candidate);
    // A spec the checks refuse is written only as the stored one: then this write does not change it.
    const checkSpec = (current: AnyResource): void => {
      if (specProblem !== undefined && !jsonEqual(current.spec, candidate.spec)) throw specProblem;
    };
    const patch = (resourceVersion: string): JsonPatch => [
      // Setting the version read makes the write conditional: the API server refuses a stale one (409).
      { op: "replace", path: "/metadata/resourceVersion", value: resourceVersion },
      { op: "add", path: "/spec", value: candidate.spec },
      { op: "add", path: "/metadata/labels", value: candidate.metadata.labels ?? {} },
      { op: "add", path: "/metadata/annotations", value: candidate.metadata.annotations ?? {} },
      { op: "add", path: "/metadata/finalizers", value: candidate.metadata.finalizers ?? [] },
    ];
    const write = async (resourceVersion: string): Promise<AnyResource> => {
      const body = patch(resourceVersion);
      const context = { kind, key, action: "update", sentVersion: resourceVersion };
      return fromKubernetes(
        await this.#call(context, (call) =>
          this.#api.patchNamespacedCustomObject({ ...this.#resource(kind), ...key, body, fieldManager: this.#fieldManager }, call),
        ),
      );
    };
    if (version === undefined) return (await this.#unconditionally(kind, key, given.metadata.uid, write, checkSpec)) as ResourceByKind[K];
    if (specProblem !== undefined) {
      // The version read is the one the patch is conditional on: at any other the write is refused anyway.
      const current = await this.get(kind, key);
      if (current === undefined) throw notFoundError(kind, key);
      checkPreconditions(kind, key, current, version, given.metadata.uid);
      checkSpec(current);
    }
    return (await write(version)) as ResourceByKind[K];
  }

  async updateStatus<K extends ResourceKind>(kind: K, object: ResourceByKind[K], options?: WriteOptions): Promise<ResourceByKind[K]> {
    this.#assertOpen();
    checkKind(kind);
    const given = requireShape(object);
    const version = preconditionVersion(kind, given, options);
    const key = keyOfObject(given);
    const candidate = normalize(given);
    // The status subresource takes the status only: the spec sent with it is not written.
    VALIDATORS[kind](candidate, { parts: ["status"] });
    const write = async (resourceVersion: string, uid: string | undefined): Promise<AnyResource> => {
      const metadata = { name: key.name, namespace: key.namespace, resourceVersion, ...(uid ? { uid } : {}) };
      const body = { apiVersion: API_VERSION, kind, metadata, spec: candidate.spec, ...(candidate.status === undefined ? {} : { status: candidate.status }) };
      const context = { kind, key, action: "update the status of", sentVersion: resourceVersion };
      return fromKubernetes(
        await this.#call(context, (call) =>
          this.#api.replaceNamespacedCustomObjectStatus({ ...this.#resource(kind), ...key, body, fieldManager: this.#fieldManager }, call),
        ),
      );
    };
    if (version !== undefined) return (await write(version, given.metadata.uid || undefined)) as ResourceByKind[K];
    return (await this.#unconditionally(kind, key, given.metadata.uid, (resourceVersion, uid) => write(resourceVersion, uid))) as ResourceByKind[K];
  }

  async delete<K extends ResourceKind>(kind: K, key: ObjectKey): Promise<ResourceByKind[K] | undefined> {
    this.#assertOpen();
    checkKind(kind);
    checkKey(key);
    const raw: unknown = await this.#call({ kind, key, action: "delete" }, (call) =>
      this.#api.deleteNamespacedCustomObject({ ...this.#resource(kind), namespace: key.namespace, name: key.name }, call),
    );
    // The API server answers with the object: still there (being deleted) while finalizers remain,
    // or its last state when it is gone; or with a Status when it is gone.
    if ((raw as KubernetesStatus | undefined)?.kind === "Status") return undefined;
    const object = fromKubernetes(raw);
    const remaining = object.metadata.finalizers ?? [];
    return object.metadata.deletionTimestamp !== undefined && remaining.length > 0 ? (object as ResourceByKind[K]) : undefined;
  }

  /**
   * A watch through the API server. Bookmarks are asked for and passed to `onProgress` (a watch
   * started again after its timeout resumes from them). "0" and "" are refused: on Kubernetes they mean "any version", which
   * would replay the current objects as ADDED instead of the changes after a version.
   */
  watch<K extends ResourceKind>(kind: K, options: WatchOptions, onEvent: (event: WatchEvent<ResourceByKind[K]>) => void): Watch {
    this.#assertOpen();
    checkKind(kind);
    const resourceVersion = options.resourceVersion;
    if (typeof resourceVersion !== "string" || resourceVersion === "" || resourceVersion === "0") {
      throw new ValidationError(
        "resourceVersion",
        `${JSON.stringify(resourceVersion)} is not a resourceVersion to watch from; watch from the resourceVersion of a list`,
      );
    }
    const plural = KUBERNETES_PLURALS[kind];
    const path =
      options.namespace === undefined
        ? `/apis/${GROUP}/${VERSION}/${plural}`
        : `/apis/${GROUP}/${VERSION}/namespaces/${encodeURIComponent(options.namespace)}/${plural}`;
    const context: KubernetesErrorContext = { kind, action: "watch" };
    let controller: AbortController | undefined;
    const timeoutSeconds = this.#watchTimeoutSeconds ?? drawWatchTimeoutSeconds();
    // The server closes the watch at timeoutSeconds; if it has not (a dead connection), this side does, cleanly.
    const deadline = setTimeout(() => end.end(), timeoutSeconds * 1000 + this.#watchGraceMs);
    deadline.unref();
    const end = new WatchEnd(() => {
      clearTimeout(deadline);
      this.#watches.delete(end);
      controller?.abort();
    });
    this.#watches.add(end);
    const query = { resourceVersion, allowWatchBookmarks: true, timeoutSeconds, labelSelector: formatLabelSelector(options.labelSelector) };
    const onLine = (type: string, raw: unknown): void => {
      if (end.ended) return;
      switch (type) {
        case "ADDED":
        case "MODIFIED":
        case "DELETED": {
          const object = fromKubernetes(raw);
          const bindings = { kind, type, resourceVersion: object.metadata.resourceVersion };
          callListener(this.#logger, bindings, () => onEvent({ type, object: object as ResourceByKind[K] }));
          return;
        }
        case "ERROR":
          end.end(statusError(raw as KubernetesStatus, context));
          return;
        case "BOOKMARK": {
          // Only the version is meaningful: the watch's owner starts again from it.
          const version = (raw as { metadata?: { resourceVersion?: unknown } } | undefined)?.metadata?.resourceVersion;
          if (typeof version === "string" && version !== "") options.onProgress?.(version);
          return;
        }
        default:
          // Whatever later API servers add.
          return;
      }
    };
    const onDone = (error: unknown): void => {
      end.end(error === null || error === undefined ? undefined : translateKubernetesError(error, context));
    };
    this.#watcher.watch(path, query, onLine, onDone).then(
      (started) => {
        controller = started;
        if (end.ended) started.abort();
      },
      (error: unknown) => end.end(translateKubernetesError(error, context)),
    );
    return end;
  }

  close(): Promise<void> {
    this.#closed = true;
    for (const watch of [...this.#watches]) watch.end();
    return Promise.resolve();
  }

  #assertOpen(): void {
    if (this.#closed) throw new UnavailableError("the Kubernetes resource store is closed");
  }

  /** One call to the API server within its time limit (a list passes its own), its errors translated. */
  async #call<T>(
    context: KubernetesErrorContext,
    call: (options: ConfigurationOptions) => Promise<T>,
    timeoutMs = this.#timeouts.requestTimeoutMs,
  ): Promise<T> {
    try {
      return await withRequestTimeout(describeAction(context), timeoutMs, call);
    } catch (error) {
      throw translateKubernetesError(error, context);
    }
  }

  #resource(kind: ResourceKind): { group: string; version: string; plural: string } {
    return { group: GROUP, version: VERSION, plural: KUBERNETES_PLURALS[kind] };
  }

  /**
   * Reads the object and writes it conditionally on what was read, again while others write in
   * between; `check` may refuse the write for what was read.
   */
  async #unconditionally(
    kind: ResourceKind,
    key: ObjectKey,
    expectedUid: string | undefined,
    write: (resourceVersion: string, uid: string | undefined) => Promise<AnyResource>,
    check?: (current: AnyResource) => void,
  ): Promise<AnyResource> {
    for (let attempt = 1; ; attempt++) {
      const current = await this.get(kind, key);
      if (current === undefined) throw notFoundError(kind, key);
      checkUid(kind, key, current.metadata.uid, expectedUid);
      check?.(current);
      try {
        return await write(current.metadata.resourceVersion ?? "", current.metadata.uid);
      } catch (error) {
        if (!(error instanceof ConflictError) || attempt >= this.#attempts) throw error;
      }
    }
  }
}

/**
 * Checks what an update sends but its spec (ValidationError), and returns what is wrong with its
 * spec, if anything: refused only when the spec is not the stored one.
 */
function specProblemOf(kind: ResourceKind, candidate: AnyResource): ValidationError | undefined {
  try {
    VALIDATORS[kind](candidate, { parts: ["metadata", "spec"] });
    return undefined;
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    // What is wrong outside the spec is refused whatever the spec; what remains is the spec's.
    VALIDATORS[kind](candidate, { parts: ["metadata"] });
    return error;
  }
}

/** A Kubernetes object as this port's resource: only the metadata fields the schema knows. */
function fromKubernetes(raw: unknown): AnyResource {
  const object = (raw ?? {}) as Record<string, unknown>;
  const source = (object.metadata ?? {}) as Record<string, unknown>;
  const metadata: Record<string, unknown> = {};
  for (const field of META_FIELDS) if (source[field] !== undefined) metadata[field] = source[field];
  const result: Record<string, unknown> = { apiVersion: object.apiVersion, kind: object.kind, metadata, spec: object.spec };
  if (object.status !== undefined) result.status = object.status;
  return result as unknown as AnyResource;
}

function formatLabelSelector(selector: Record<string, string> | undefined): string | undefined {
  if (selector === undefined) return undefined;
  const terms = Object.entries(selector).map(([key, value]) => `${key}=${value}`);
  return terms.length === 0 ? undefined : terms.join(",");
}

function parseStatus(body: unknown): KubernetesStatus | undefined {
  let value = body;
  if (typeof body === "string") {
    try {
      value = JSON.parse(body) as unknown;
    } catch {
      return body === "" ? undefined : { message: body };
    }
  }
  if (typeof value !== "object" || value === null) return undefined;
  return value;
}

/**
 * The one place errors of the Kubernetes API and of the connection to it become Fast Sandbox errors:
 * 400/422 ValidationError (naming the field of the first cause), 401 Unauthenticated,
 * 403 PermissionDenied, 404 NotFound, 409 AlreadyExists or Conflict, 410 Expired, 429/503 and
 * connection failures Unavailable, 504 deadline_exceeded.
 */
export function translateKubernetesError(error: unknown, context: KubernetesErrorContext): FsbError {
  if (error instanceof FsbError) return error;
  if (error instanceof ApiException) {
    const code = typeof error.code === "number" ? error.code : 0;
    return statusError({ ...parseStatus(error.body), code }, context, error);
  }
  const statusCode = (error as { statusCode?: unknown } | undefined)?.statusCode;
  if (typeof statusCode === "number") {
    return statusError({ code: statusCode, message: error instanceof Error ? error.message : undefined }, context, error);
  }
  const message = error instanceof Error ? error.message : String(error);
  return new UnavailableError(`cannot ${describeAction(context)}: the Kubernetes API server is unreachable (${message})`, { cause: error });
}

/** What was being done, for a message: "list sandboxes", "update Sandbox team/web". */
function describeAction(context: KubernetesErrorContext): string {
  return [context.action, subject(context)].filter((part) => part !== "").join(" ");
}

/** What the action was done to: the object (with a key), the kind's plural (a list or a watch). */
function subject(context: KubernetesErrorContext): string {
  if (context.kind === undefined) return "";
  return context.key === undefined ? KUBERNETES_PLURALS[context.kind] : describe(context.kind, context.key);
}

function statusError(status: KubernetesStatus, context: KubernetesErrorContext, cause?: unknown): FsbError {
  const code = status.code ?? 0;
  const serverMessage = status.message ?? `HTTP ${code}`;
  const { kind, key } = context;
  const options = cause === undefined ? undefined : { cause };
  switch (code) {
    case 400:
    case 422: {
      const causes = status.details?.causes ?? [];
      const field = causes.find((c) => c.field)?.field ?? "";
      if (field === "") return new ValidationError("", serverMessage);
      const messages = [...new Set(causes.filter((c) => c.field === field).map((c) => c.message ?? c.reason ?? ""))].filter((m) => m !== "");
      return new ValidationError(field, messages.length > 0 ? messages.join("; ") : serverMessage);
    }
    case 401:
      return new UnauthenticatedError(`the Kubernetes API server did not accept the credentials: ${serverMessage}`);
    case 403:
      return new PermissionDeniedError(serverMessage, options);
    case 404:
      return kind !== undefined && key !== undefined ? notFoundError(kind, key, options) : new NotFoundError(serverMessage, options);
    case 409:
      if (status.reason === "AlreadyExists" && kind !== undefined && key !== undefined) return alreadyExistsError(kind, key);
      if (status.reason === "AlreadyExists") return new AlreadyExistsError(serverMessage);
      if (kind !== undefined && key !== undefined) {
        const sent = context.sentVersion;
        return new ConflictError(sent === undefined ? `${describe(kind, key)}: ${serverMessage}` : conflictMessage(kind, key, undefined, sent));
      }
      return new ConflictError(serverMessage);
    case 410:
      return new ExpiredError(`${serverMessage}; list again and watch from the list's resourceVersion`);
    case 429:
    case 503:
      return new UnavailableError(`the Kubernetes API server is busy or unavailable (${code}): ${serverMessage}; retry later`, options);
    case 504:
      return new FsbError("deadline_exceeded", serverMessage, options);
    default:
      return new FsbError(code >= 500 ? "internal" : "failed_precondition", `the Kubernetes API server answered ${code}: ${serverMessage}`, options);
  }
}
