/**
 * E2B's sandbox operations over Fast Sandbox's own: create, list, get, kill, set the timeout,
 * connect, pause, resume and fork. An E2B template is a pool of the namespace (`base`, E2B's default,
 * is the pool `default` — the embedded mode's default pool — unless a pool is called `base`); an E2B sandbox is a Sandbox of that
 * pool that runs the pool's image with no command of its own (the image's, kept alive by the
 * in-sandbox helper, which also starts the daemon E2B's SDKs talk to); its end time is the sandbox's
 * `spec.expireTime`, which the sandbox reconciler enforces (E2B's reaper); its id is the instance id
 * `status.sandboxID`.
 *
 * Pausing maps onto checkpoints (sandboxes of gVisor pools only): `pause` is SandboxPauses' pause (the
 * sandbox saved as a checkpoint on its node, no instance left running, phase Paused: E2B's `paused`,
 * with no end); `connect` (and E2B's legacy `resume`) of a paused sandbox restores it under the same
 * sandbox id and access token, with its end at now + timeout, and answers once its daemon does;
 * `fork` checkpoints a running sandbox in place and restores `count` copies of it, each an E2B
 * sandbox of its own (new id, token, address, hostname), reported one by one as E2B does.
 * Independent of HTTP: e2b-api-server.ts is the edge.
 */
import {
  ConflictError,
  FailedPreconditionError,
  FsbError,
  NAME_PATTERN,
  NotFoundError,
  TimeoutError,
  UnavailableError,
  ValidationError,
  networkModeOf,
  type AgentLimits,
  type Sandbox,
  type SandboxPool,
  type SandboxSpec,
} from "@fast-sandbox/api";
import type { Logger } from "pino";
import { sleep, systemClock, type Clock } from "../controller/clock.js";
import { forkCheckpointName, type Checkpoint, type CheckpointManager } from "../fastpath/checkpoint-manager.js";
import { isPaused, type SandboxPauses } from "../fastpath/checkpoint-pauses.js";
import type { SandboxManager } from "../fastpath/sandbox-manager.js";
import { agentPodLimits } from "../fleet/agent-pod.js";
import { accessTokenMatches, hashAccessToken } from "../proxy/access-token.js";
import type { ResourceStore } from "../store/resource-store.js";
import { e2bSandboxMetricOf, type E2bSandboxMetric } from "./e2b-sandbox-metric.js";
import { e2bErrorOf, newRequestId, type E2bErrorBody } from "./e2b-errors.js";
import { CREATE_REQUEST_ANNOTATION, IdempotencyMismatchError, idempotencyRequestId, requestFingerprint } from "./e2b-idempotency.js";
import { MAX_TIMEOUT_SECONDS, type ForkRequest, type ListSandboxesQuery, type MetricsRange, type NewSandboxRequest } from "./e2b-requests.js";
import {
  METADATA_ANNOTATION,
  TEMPLATE_ANNOTATION,
  TOKEN_NONCE_ANNOTATION,
  INTERNET_ACCESS_ANNOTATION,
  e2bSandboxOf,
  endAtOf,
  isE2bSandbox,
  isVisible,
  listedSandboxOf,
  metadataOf,
  resourcesOf,
  sandboxDetailOf,
  stateOf,
  templateOf,
  type E2bListedSandbox,
  type E2bSandbox,
  type E2bSandboxDetail,
  type SandboxResources,
} from "./e2b-sandbox-view.js";
import { e2bTrafficAccessToken, envdAccessToken, newTokenNonce } from "./envd-access-token.js";
import type { EnvdReadiness } from "./envd-readiness.js";
import { readEnvdVersion } from "./envd-version.js";
import type { HostResources } from "./host-resources.js";
import { metadataMatches } from "./metadata-filter.js";
import { listKeyOf, pageOf, type ListPage } from "./sandbox-list-page.js";

/** E2B's default template, which its SDKs create when they are given none. */
export const DEFAULT_TEMPLATE = "base";
/** Tries of a timeout change whose sandbox changed in between (another change, a status write). */
const UPDATE_ATTEMPTS = 5;
/** How long a resume waits for the sandbox proxy's directory to route to the resumed instance. */
const ROUTED_TIMEOUT_MS = 5_000;

export interface E2bSandboxesOptions {
  manager: Pick<SandboxManager, "create" | "get" | "list" | "update" | "delete" | "stats" | "statsHistory">;
  /** Where the pools (templates) are read. */
  store: Pick<ResourceStore, "get" | "list">;
  /** The sandbox whose current instance has this id (the sandbox proxy's directory). */
  lookup(sandboxID: string): Promise<Sandbox | undefined>;
  /** Resolves once a new sandbox's daemon answers. */
  envdReady: EnvdReadiness;
  /** The secret sandboxes' access tokens are derived from (envd-access-token.ts). */
  tokenSecret: Buffer;
  /** What a sandbox of a pool without `sandboxResources` nor agent limits may use. */
  host: HostResources;
  /** The limits of a pool's agents (all their sandboxes together). @default its agentTemplate's (agent-pod.ts agentPodLimits) */
  agentLimits?: (pool: SandboxPool) => AgentLimits;
  logger: Logger;
  /** @default systemClock */
  clock?: Clock;
  /** The namespace of the E2B API's sandboxes and templates. @default "default" */
  namespace?: string;
  /** The pool of the template `base` when no pool is called `base`. @default "default" */
  defaultPool?: string;
  /** @default the daemon's (packages/envd/version.json) */
  envdVersion?: string;
  /** Pause and resume (gVisor pools). @default none: pausing is refused */
  pauses?: SandboxPauses;
  /** Forks (gVisor pools). @default none: forking is refused */
  checkpoints?: CheckpointManager;
  /**
   * The sandbox proxy's domain with its port as clients reach it (`localhost:7072`), which E2B's SDKs
   * name a sandbox's ports under: `getHost(port)` is `<port>-<sandboxID>.<domain>`. @default none (null)
   */
  domain?: string;
}

/** The outcome of one copy of a fork (E2B's `SandboxForkResult`): the sandbox, or why it did not start. */
export type E2bForkResult = { sandbox: E2bSandbox } | { error: E2bErrorBody };

/** A connect's answer: the sandbox, and whether it was resumed (E2B answers 201 then, else 200). */
export interface ConnectedSandbox {
  sandbox: E2bSandbox;
  resumed: boolean;
}

export interface ListedSandboxes {
  page: ListPage<E2bListedSandbox>;
  /**
   * E2B's `X-Total-Running`: the running sandboxes that match every filter of the query, before
   * its cursor and limit; undefined when the query's states leave running out (E2B sends no header).
   */
  totalRunning: number | undefined;
}

/** The error of a create whose sandbox was deleted again: the same kind, saying so. */
function deletedAfter(error: unknown): FsbError {
  const failure = FsbError.from(error);
  const message = `${failure.message}; the sandbox was deleted, nothing of it is left: retry the create`;
  if (failure instanceof TimeoutError) return new TimeoutError(message, { cause: error });
  if (failure instanceof UnavailableError) return new UnavailableError(message, { cause: error });
  return new FsbError(failure.code, message, { cause: error });
}

/** How often a sandbox whose daemon is awaited is checked for having ended meanwhile. */
const ENDED_CHECK_INTERVAL_MS = 500;

/** Phases of a sandbox that will not run again (or not without its agent): E2B's kill finds nothing to kill. */
const ENDED_PHASES: ReadonlySet<string> = new Set(["Terminating", "Expired", "Failed", "Lost"]);

function notFound(sandboxID: string): NotFoundError {
  return new NotFoundError(`sandbox ${sandboxID} not found: it was killed, its timeout passed, or it never existed (GET /v2/sandboxes lists the running ones)`);
}

/** A create with an Idempotency-Key running here, which repeats of it share. */
interface KeyedCreate {
  /** requestFingerprint of its request: a repeat with another is refused. */
  fingerprint: string;
  attempt: Promise<E2bSandbox>;
  /** Aborted when the last caller goes away: the create then deletes its sandbox, as one without a key does for its client. */
  abandoned: AbortController;
  /** The calls waiting for it (the first and its repeats). */
  callers: number;
}

export class E2bSandboxes {
  private readonly options: E2bSandboxesOptions;
  /** Keyed creates in flight here, by request id; settled, a repeat finds the sandbox by its record. */
  private readonly keyedCreates = new Map<string, KeyedCreate>();
  private readonly clock: Clock;
  private readonly namespace: string;
  private readonly envdVersion: string;

  constructor(options: E2bSandboxesOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.namespace = options.namespace ?? "default";
    this.envdVersion = options.envdVersion ?? readEnvdVersion();
  }

  /**
   * Creates the sandbox and answers once its daemon does. When the daemon does not answer in time,
   * or `signal` aborts (the client went away), the sandbox is deleted before the error is thrown.
   *
   * With an `idempotencyKey` (E2B's `Idempotency-Key`, e2b-idempotency.ts) a repeat of the create
   * gets the sandbox the first one made, with the same access tokens: while that create still runs
   * here the repeat shares it (its sandbox is deleted only once every caller has gone away), and after
   * it, or when it ran on another replica, the repeat finds its record by the key. A repeat with
   * another request is refused (IdempotencyMismatchError, 409), and so is one whose sandbox is paused
   * or no longer runs (ConflictError).
   */
  async create(request: NewSandboxRequest, signal?: AbortSignal, idempotencyKey?: string): Promise<E2bSandbox> {
    if (idempotencyKey === undefined) return this.createOnce(request, signal, undefined);
    const requestId = idempotencyRequestId(idempotencyKey);
    const fingerprint = requestFingerprint(request);
    for (;;) {
      const running = this.keyedCreates.get(requestId);
      if (!running) break;
      if (running.fingerprint !== fingerprint) throw new IdempotencyMismatchError("that create is still running");
      if (!running.abandoned.signal.aborted) return this.join(running, signal);
      // Every caller of that create went away: it deletes its sandbox, and this call then creates anew.
      await running.attempt.catch(() => undefined);
    }
    const abandoned = new AbortController();
    const keyed: KeyedCreate = { fingerprint, abandoned, callers: 0, attempt: this.createOnce(request, abandoned.signal, { requestId, fingerprint }) };
    this.keyedCreates.set(requestId, keyed);
    const forget = () => {
      if (this.keyedCreates.get(requestId) === keyed) this.keyedCreates.delete(requestId);
    };
    keyed.attempt.then(forget, forget);
    return this.join(keyed, signal);
  }

  /** Waits for a keyed create as one of its callers: when the last of them goes away, the create is abandoned. */
  private async join(keyed: KeyedCreate, signal?: AbortSignal): Promise<E2bSandbox> {
    keyed.callers += 1;
    const leave = () => {
      keyed.callers -= 1;
      if (keyed.callers === 0) keyed.abandoned.abort(signal?.reason);
    };
    if (signal?.aborted) leave();
    else signal?.addEventListener("abort", leave, { once: true });
    try {
      return await keyed.attempt;
    } finally {
      signal?.removeEventListener("abort", leave);
    }
  }

  private async createOnce(
    request: NewSandboxRequest,
    signal: AbortSignal | undefined,
    keyed: { requestId: string; fingerprint: string } | undefined,
  ): Promise<E2bSandbox> {
    const pool = await this.poolOfTemplate(request.templateID);
    const poolKey = `${this.namespace}/${pool.metadata.name}`;
    if (networkModeOf(pool.spec) !== "Isolated") {
      throw new FailedPreconditionError(
        `template ${JSON.stringify(request.templateID)} is pool ${poolKey}, whose network mode is Shared: its sandboxes have no network address of their own, ` +
          "which an E2B sandbox needs (its daemon listens there); use a template whose pool has network.mode Isolated",
      );
    }
    if (!pool.spec.image) throw new FailedPreconditionError(`pool ${poolKey} names no image (spec.image), which its E2B sandboxes would run`);
    const nonce = newTokenNonce();
    const accessToken = envdAccessToken(this.options.tokenSecret, nonce);
    const envs = Object.entries(request.envVars).map(([name, value]) => ({ name, value }));
    const spec: SandboxSpec = {
      image: pool.spec.image,
      poolRef: pool.metadata.name,
      // No command: the image's own runs, and the in-sandbox helper (process 1) keeps the sandbox up
      // after it exits, as an E2B sandbox stays up with nothing of the user's running.
      ...(envs.length > 0 ? { envs } : {}),
      expireTime: new Date(this.clock.now().getTime() + request.timeoutSeconds * 1000).toISOString(),
      ...(request.allowInternetAccess === false ? { egress: { policy: "denyAll" as const } } : {}),
    };
    const sandbox = await this.options.manager.create({
      namespace: this.namespace,
      spec,
      annotations: {
        [TEMPLATE_ANNOTATION]: request.templateID,
        [METADATA_ANNOTATION]: JSON.stringify(request.metadata),
        [TOKEN_NONCE_ANNOTATION]: nonce,
        ...(request.allowInternetAccess !== undefined ? { [INTERNET_ACCESS_ANNOTATION]: String(request.allowInternetAccess) } : {}),
        ...(keyed ? { [CREATE_REQUEST_ANNOTATION]: keyed.fingerprint } : {}),
      },
      accessTokenHash: hashAccessToken(accessToken),
      ...(keyed ? { requestId: keyed.requestId } : {}),
    });
    // Another nonce: the key's sandbox was made by an earlier create (the manager found its record).
    if (keyed && sandbox.metadata.annotations?.[TOKEN_NONCE_ANNOTATION] !== nonce) return this.repeated(sandbox, keyed.fingerprint, signal);
    await this.untilDaemonAnswers(sandbox, signal);
    return this.viewOf(sandbox, accessToken);
  }

  /**
   * The sandbox an earlier create with the same key made (answered already, or running on another
   * replica, whose manager this one waited for), for a repeat of it: the same sandbox and access
   * tokens (derived again from its nonce), once its daemon answers. Never deleted here, whatever
   * befalls this call: it is that create's sandbox.
   */
  private async repeated(sandbox: Sandbox, fingerprint: string, signal?: AbortSignal): Promise<E2bSandbox> {
    const sandboxID = sandbox.status?.sandboxID ?? "";
    if (!isE2bSandbox(sandbox)) {
      throw new IdempotencyMismatchError(`it named sandbox ${this.namespace}/${sandbox.metadata.name}, which was not created through the E2B API`);
    }
    if (sandbox.metadata.annotations?.[CREATE_REQUEST_ANNOTATION] !== fingerprint) throw new IdempotencyMismatchError(`that request made sandbox ${sandboxID}`);
    if (!isVisible(sandbox)) {
      throw new ConflictError(
        `the create with this Idempotency-Key made sandbox ${sandboxID}, which no longer runs (${sandbox.status?.phase ?? "Pending"}); use a new key for a new sandbox`,
      );
    }
    if (isPaused(sandbox)) {
      throw new ConflictError(`the create with this Idempotency-Key made sandbox ${sandboxID}, which is paused now; connect resumes it`);
    }
    const accessToken = this.requireAccessToken(sandbox);
    await this.daemonAnswers(sandbox, signal);
    return this.viewOf(sandbox, accessToken);
  }

  /** The running and paused sandboxes that match the query, one page of them, and how many of them run. */
  async list(query: ListSandboxesQuery): Promise<ListedSandboxes> {
    const visible = (await this.options.manager.list(this.namespace)).filter(isVisible);
    const pools = await this.pools();
    const startedAfter = query.startedAfter?.getTime();
    const matching = visible
      .filter((sandbox) => !query.states || query.states.has(stateOf(sandbox)))
      .filter((sandbox) => query.template === undefined || sandbox.metadata.annotations?.[TEMPLATE_ANNOTATION] === query.template)
      .filter((sandbox) => metadataMatches(metadataOf(sandbox), query.metadata))
      // Paged by what stays while the sandbox lives (sandbox-list-page.ts): its startedAt and sandboxID change with a resume, reset or recreation.
      .map((sandbox) => ({ item: listedSandboxOf(sandbox, this.envdVersion, this.resourcesOf(pools.get(sandbox.spec.poolRef))), key: listKeyOf(sandbox) }))
      .filter(({ item }) => startedAfter === undefined || Date.parse(item.startedAt) >= startedAfter);
    const countsRunning = !query.states || query.states.has("running");
    return { page: pageOf(matching, query), totalRunning: countsRunning ? matching.filter(({ item }) => item.state === "running").length : undefined };
  }

  async get(sandboxID: string): Promise<E2bSandboxDetail> {
    const sandbox = await this.find(sandboxID);
    const pool = (await this.pools()).get(sandbox.spec.poolRef);
    return sandboxDetailOf(sandbox, this.envdVersion, this.resourcesOf(pool), this.accessTokenOf(sandbox), this.options.domain);
  }

  /**
   * The sandbox's resource use as E2B's metrics: the samples its agent took while it ran (every
   * 5 s by default, the last hour's kept) within `start`..`end` (Unix seconds, both ends included,
   * each optional), oldest first; when none is, yet the range takes in now (a sandbox younger than
   * the interval), one reading now. None for a paused sandbox, which runs nowhere.
   */
  async metrics(sandboxID: string, range: MetricsRange = {}): Promise<E2bSandboxMetric[]> {
    const sandbox = await this.find(sandboxID);
    if (isPaused(sandbox)) return [];
    const name = sandbox.metadata.name;
    const sinceMs = range.start !== undefined ? range.start * 1000 : 0;
    const untilMs = range.end !== undefined ? range.end * 1000 + 999 : 0;
    const samples = await this.options.manager.statsHistory(this.namespace, name, sinceMs, untilMs);
    if (samples.length > 0) return samples.map(e2bSandboxMetricOf);
    const now = this.clock.now().getTime();
    if (now < sinceMs || (untilMs > 0 && now > untilMs)) return [];
    return [e2bSandboxMetricOf(await this.options.manager.stats(this.namespace, name))];
  }

  private resourcesOf(pool: SandboxPool | undefined): SandboxResources {
    return resourcesOf(pool, this.options.host, pool ? (this.options.agentLimits ?? agentPodLimits)(pool) : {});
  }

  /**
   * Deletes the sandbox at once (no grace period: E2B kills), a paused one with its checkpoint;
   * NotFoundError when there is none to kill. A sandbox that no longer runs (Expired, Failed, Lost,
   * or being deleted: none of them E2B's get or list shows) is not found either, as on E2B, where it
   * would be gone (the SDKs' `kill()` answers false); its deletion is carried out all the same,
   * since its owner asked, and its failure is the answer.
   */
  async kill(sandboxID: string): Promise<void> {
    const found = await this.options.lookup(sandboxID);
    if (!found || !isE2bSandbox(found) || found.status?.sandboxID !== sandboxID) throw notFound(sandboxID);
    const current = await this.options.manager.get(this.namespace, found.metadata.name).catch((error: unknown) => {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    });
    if (!current || current.status?.sandboxID !== sandboxID) throw notFound(sandboxID);
    const phase = current.status.phase;
    const gone = current.metadata.deletionTimestamp ? "being deleted" : phase && ENDED_PHASES.has(phase) ? phase : undefined;
    try {
      await this.options.manager.delete(this.namespace, current.metadata.name, 0);
    } catch (error) {
      if (error instanceof NotFoundError) throw notFound(sandboxID);
      // Marked for deletion, its cleanup waiting for an agent (a paused sandbox's checkpoint on a
      // node with none ready, an agent away): to E2B it is killed — gone from get and list — and the
      // reconciler finishes the cleanup. A 503 would make E2B's SDKs retry and then fail a kill that stands.
      if (!(error instanceof UnavailableError) || !(await this.markedForDeletion(current))) throw error;
    }
    if (gone) throw new NotFoundError(`sandbox ${sandboxID} not found: it no longer ran (${gone}); what was left of it is removed now`);
  }

  /** Whether `sandbox`'s record is marked for deletion now (or already gone). */
  private async markedForDeletion(sandbox: Sandbox): Promise<boolean> {
    const now = await this.options.manager.get(this.namespace, sandbox.metadata.name).catch((error: unknown) => {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    });
    return !now || (now.metadata.uid === sandbox.metadata.uid && now.metadata.deletionTimestamp !== undefined);
  }

  /** Ends the sandbox `timeoutSeconds` from now, sooner or later than it would have. NotFoundError for a paused one (it has no end). */
  async setTimeout(sandboxID: string, timeoutSeconds: number): Promise<void> {
    await this.changeEnd(sandboxID, () => this.clock.now().getTime() + timeoutSeconds * 1000);
  }

  /** E2B's legacy refresh: a running sandbox ends `seconds` from now when that is later (never sooner). NotFoundError for a paused one, as setTimeout. */
  async refresh(sandboxID: string, seconds: number): Promise<void> {
    await this.changeEnd(sandboxID, (endMs) => Math.max(endMs, this.clock.now().getTime() + seconds * 1000));
  }

  /**
   * The sandbox for another client, resumed first when it is paused (its end then `timeoutSeconds`
   * from now, which must be 1 or more); a running one's end moves to `timeoutSeconds` from now when
   * that is later (never sooner; 0 changes nothing). The answer carries its access token.
   */
  async connect(sandboxID: string, timeoutSeconds: number, signal?: AbortSignal): Promise<ConnectedSandbox> {
    // A pause that lands between the read and the write of the end makes the write conflict; the
    // next read then finds the sandbox paused, and this connect resumes it. A sandbox whose token
    // was replaced is refused before its end moves: a refused connect changes nothing.
    const sandbox = await this.changeEnd(sandboxID, (endMs) => Math.max(endMs, this.clock.now().getTime() + timeoutSeconds * 1000), {
      whenPaused: "resume",
      check: (current) => {
        this.requireAccessToken(current);
      },
    });
    if (isPaused(sandbox)) return this.resumePaused(sandbox, timeoutSeconds, signal);
    return { sandbox: this.viewOf(sandbox, this.requireAccessToken(sandbox)), resumed: false };
  }

  /** E2B's legacy resume: a paused sandbox runs again, ending `timeoutSeconds` from now; ConflictError for one that runs. */
  async resume(sandboxID: string, timeoutSeconds: number, signal?: AbortSignal): Promise<E2bSandbox> {
    const found = await this.find(sandboxID);
    if (!isPaused(found)) throw new ConflictError(`sandbox ${sandboxID} is already running; connect to it instead`);
    return (await this.resumePaused(found, timeoutSeconds, signal)).sandbox;
  }

  /**
   * Pauses a running sandbox of a gVisor template: its memory and files are saved as a checkpoint and
   * nothing of it runs until a connect resumes it. ConflictError when it is paused already.
   */
  async pause(sandboxID: string): Promise<void> {
    const sandbox = await this.find(sandboxID);
    if (isPaused(sandbox)) throw new ConflictError(`sandbox ${sandboxID} is already paused`);
    await this.requireGvisor(sandbox, "paused");
    const pauses = this.options.pauses;
    if (!pauses) throw new FailedPreconditionError("this server does not offer pausing");
    try {
      await pauses.pause(this.namespace, sandbox.metadata.name);
    } catch (error) {
      if (error instanceof ConflictError) throw new ConflictError(`sandbox ${sandboxID} is already paused`);
      throw error;
    }
  }

  /**
   * `count` new sandboxes from one checkpoint of a running sandbox of a gVisor template, which runs on
   * (E2B's fork): each its own E2B sandbox (id, access token, address, hostname; the source's template
   * and metadata) ending `timeoutSeconds` from now. Each copy succeeds or fails on its own, as E2B
   * reports them; the checkpoint is deleted once they are made. ConflictError for a paused source.
   */
  async fork(sandboxID: string, request: ForkRequest, signal?: AbortSignal): Promise<E2bForkResult[]> {
    const source = await this.find(sandboxID);
    if (isPaused(source)) throw new ConflictError(`sandbox ${sandboxID} is paused and cannot be forked; resume it first (connect)`);
    await this.requireGvisor(source, "forked");
    const checkpoints = this.options.checkpoints;
    if (!checkpoints) throw new FailedPreconditionError("this server does not offer forks");
    const name = source.metadata.name;
    // A fork's own name: the checkpoint collector removes it should this process stop before it does.
    const checkpointName = forkCheckpointName(name);
    let checkpoint: Checkpoint;
    try {
      checkpoint = await checkpoints.checkpoint({ namespace: this.namespace, sandbox: name, checkpoint: checkpointName });
    } catch (error) {
      await checkpoints.discardFailed(this.namespace, checkpointName, error);
      throw error;
    }
    try {
      return await Promise.all(
        Array.from({ length: request.count }, () =>
          this.forkCopy(source, checkpoint, checkpoints, request.timeoutSeconds, signal).then(
            (sandbox): E2bForkResult => ({ sandbox }),
            (error: unknown): E2bForkResult => ({ error: this.forkCopyFailure(error, sandboxID) }),
          ),
        ),
      );
    } finally {
      await checkpoints
        .delete(this.namespace, checkpoint.name)
        .catch((error: unknown) =>
          this.options.logger.warn({ err: error, checkpoint: checkpoint.name }, "could not delete a fork's checkpoint; 'fsb checkpoint rm' removes it"),
        );
    }
  }

  /**
   * What a fork tells of a copy that failed. An internal error is told only as such (e2bErrorOf),
   * so it is logged here whole, under the request id its answer names.
   */
  private forkCopyFailure(error: unknown, sandboxID: string): E2bErrorBody {
    const requestId = newRequestId();
    const failure = e2bErrorOf(error, requestId);
    if (failure.status === 500) this.options.logger.error({ err: error, sandboxID, requestId }, "a copy of an E2B fork failed");
    return failure.body;
  }

  /** One copy of a fork: a sandbox restored from the checkpoint with an E2B identity of its own, once its daemon answers. */
  private async forkCopy(
    source: Sandbox,
    checkpoint: Checkpoint,
    checkpoints: CheckpointManager,
    timeoutSeconds: number,
    signal?: AbortSignal,
  ): Promise<E2bSandbox> {
    const nonce = newTokenNonce();
    const accessToken = envdAccessToken(this.options.tokenSecret, nonce);
    // What the source was created with (allow_internet_access), as its egress policy is copied:
    // without it, the copy's getInfo would show allowInternetAccess null.
    const internetAccess = source.metadata.annotations?.[INTERNET_ACCESS_ANNOTATION];
    const copy = await checkpoints.createFrom({
      namespace: this.namespace,
      fromCheckpoint: checkpoint.name,
      spec: {
        expireTime: new Date(this.clock.now().getTime() + timeoutSeconds * 1000).toISOString(),
        ...(source.spec.egress ? { egress: source.spec.egress } : {}),
      },
      annotations: {
        [TEMPLATE_ANNOTATION]: source.metadata.annotations?.[TEMPLATE_ANNOTATION] ?? "",
        [METADATA_ANNOTATION]: JSON.stringify(metadataOf(source)),
        [TOKEN_NONCE_ANNOTATION]: nonce,
        ...(internetAccess !== undefined ? { [INTERNET_ACCESS_ANNOTATION]: internetAccess } : {}),
      },
      accessTokenHash: hashAccessToken(accessToken),
    });
    await this.untilDaemonAnswers(copy, signal);
    return this.viewOf(copy, accessToken);
  }

  /**
   * Resumes a paused sandbox, ending `timeoutSeconds` from now, and answers once its daemon does and
   * the proxy routes to it. `resumed` is false when a concurrent call resumed it first: this call's
   * end then applies as to a running sandbox (when later than the end that call gave it).
   */
  private async resumePaused(paused: Sandbox, timeoutSeconds: number, signal?: AbortSignal): Promise<ConnectedSandbox> {
    // Ended at once, the resumed sandbox would be reaped, and the resume has deleted its checkpoint:
    // its paused state would be lost. A connect to a running sandbox may say 0 (its end moves only later).
    if (timeoutSeconds < 1) {
      throw new ValidationError(
        "timeout",
        `must be a whole number of seconds from 1 to ${MAX_TIMEOUT_SECONDS} to resume paused sandbox ${paused.status?.sandboxID ?? ""}: ` +
          `a resumed sandbox ending now would be removed at once, and its paused state with it; got ${timeoutSeconds}`,
      );
    }
    const pauses = this.options.pauses;
    if (!pauses) throw new FailedPreconditionError("this server does not offer resuming paused sandboxes");
    const accessToken = this.requireAccessToken(paused);
    const endMs = this.clock.now().getTime() + timeoutSeconds * 1000;
    const outcome = await pauses.resume(this.namespace, paused.metadata.name, { expireTime: new Date(endMs).toISOString() });
    const sandbox = outcome.resumed ? outcome.sandbox : await this.changeEnd(outcome.sandbox.status?.sandboxID ?? "", (current) => Math.max(current, endMs));
    const sandboxID = sandbox.status?.sandboxID ?? "";
    const address = sandbox.status?.sandboxIP;
    if (!address) throw new UnavailableError(`sandbox ${sandboxID} was resumed without a network address of its own`);
    await this.options.envdReady({ sandboxID, address, ...(sandbox.status?.assignedPod ? { agent: sandbox.status.assignedPod } : {}) }, signal);
    // E2B's SDKs go on through the sandbox proxy at once: its directory must route to the new instance.
    const deadline = this.clock.now().getTime() + ROUTED_TIMEOUT_MS;
    for (;;) {
      const routed = await this.options.lookup(sandboxID);
      if ((routed?.status?.phase === "Running" && routed.status.sandboxIP === address) || this.clock.now().getTime() >= deadline) break;
      await sleep(this.clock, 20);
    }
    return { sandbox: this.viewOf(sandbox, accessToken), resumed: outcome.resumed };
  }

  /** Resolves once the sandbox's daemon answers (at its own address); throws when `signal` aborts first. */
  private async daemonAnswers(sandbox: Sandbox, signal?: AbortSignal): Promise<void> {
    const sandboxID = sandbox.status?.sandboxID ?? "";
    signal?.throwIfAborted();
    const address = sandbox.status?.sandboxIP;
    if (!address) throw new UnavailableError(`sandbox ${sandboxID} got no network address of its own from its agent`);
    // A sandbox that ends meanwhile (killed, expired, failed) is not waited for to the deadline: its
    // daemon will not answer (and its address may soon be another sandbox's).
    const ended = new AbortController();
    const watch = setInterval(() => {
      void this.endOf(sandbox).then((end) => {
        if (end && !ended.signal.aborted) ended.abort(new ConflictError(`sandbox ${sandboxID} ${end} while the call waited for its in-sandbox daemon`));
      });
    }, ENDED_CHECK_INTERVAL_MS);
    try {
      const both = signal ? AbortSignal.any([signal, ended.signal]) : ended.signal;
      await this.options.envdReady({ sandboxID, address, ...(sandbox.status?.assignedPod ? { agent: sandbox.status.assignedPod } : {}) }, both);
    } catch (error) {
      if (ended.signal.aborted && !signal?.aborted) throw ended.signal.reason;
      throw error;
    } finally {
      clearInterval(watch);
    }
    signal?.throwIfAborted();
  }

  /** How a sandbox ended ("was killed", "expired", …), undefined while it runs (or cannot be read now). */
  private async endOf(sandbox: Sandbox): Promise<string | undefined> {
    let now: Sandbox;
    try {
      now = await this.options.manager.get(this.namespace, sandbox.metadata.name);
    } catch (error) {
      return error instanceof NotFoundError ? "was deleted" : undefined;
    }
    if (now.metadata.uid !== sandbox.metadata.uid || now.metadata.deletionTimestamp !== undefined) return "was deleted";
    const phase = now.status?.phase ?? "";
    if (phase === "Expired") return "reached its timeout";
    return ENDED_PHASES.has(phase) ? `ended (its phase is ${phase})` : undefined;
  }

  /** Waits for a new sandbox's daemon; a sandbox whose daemon does not answer is deleted before the error is thrown. */
  private async untilDaemonAnswers(sandbox: Sandbox, signal?: AbortSignal): Promise<void> {
    try {
      await this.daemonAnswers(sandbox, signal);
    } catch (error) {
      await this.options.manager.delete(this.namespace, sandbox.metadata.name, 0).catch((cleanup: unknown) => {
        this.options.logger.error(
          { err: cleanup, sandbox: `${this.namespace}/${sandbox.metadata.name}` },
          "could not delete an E2B sandbox whose create failed",
        );
      });
      if (error instanceof ConflictError) throw error; // it ended meanwhile: nothing to retry
      throw deletedAfter(signal?.aborted ? new UnavailableError(`the client went away during the create: ${String(signal.reason)}`) : error);
    }
  }

  /** Refuses to pause or fork a sandbox whose pool does not run gVisor, saying what is allowed. */
  private async requireGvisor(sandbox: Sandbox, what: "paused" | "forked"): Promise<void> {
    const pool = (await this.pools()).get(sandbox.spec.poolRef);
    const runtimeType = pool?.spec.runtimeType ?? "container";
    if (runtimeType === "gvisor") return;
    throw new FailedPreconditionError(
      `sandbox ${sandbox.status?.sandboxID ?? ""} cannot be ${what}: its template ${JSON.stringify(templateOf(sandbox))} is pool ${this.namespace}/${sandbox.spec.poolRef}, ` +
        `whose runtimeType is ${runtimeType}, and pausing, resuming and forking save a sandbox as a gVisor checkpoint; ` +
        "they work for sandboxes of a template whose pool has runtimeType gvisor",
    );
  }

  /** The sandbox's access token, which E2B clients can be given only while it is the one the sandbox was created with. */
  private requireAccessToken(sandbox: Sandbox): string {
    const accessToken = this.accessTokenOf(sandbox);
    if (!accessToken) {
      throw new FailedPreconditionError(
        `the access token of sandbox ${sandbox.status?.sandboxID ?? ""} was replaced ('fsb token'), and E2B clients can be given only the one it was created with; kill it and create another`,
      );
    }
    return accessToken;
  }

  /**
   * Sets the sandbox's end to `endOf(current end)` (ms), unless that is its end already. A paused
   * sandbox has no end: NotFoundError (E2B's own answer: its timeout route finds running sandboxes
   * only, and SDKs before 2.6 resume on that answer), or with `whenPaused` "resume" its record,
   * unchanged, for the caller to resume. `check` may refuse the sandbox (throw) as read, before
   * anything of it changes.
   */
  private async changeEnd(
    sandboxID: string,
    endOf: (endMs: number) => number,
    options: { whenPaused?: "refuse" | "resume"; check?: (current: Sandbox) => void } = {},
  ): Promise<Sandbox> {
    for (let attempt = 1; ; attempt++) {
      const current = await this.find(sandboxID);
      options.check?.(current);
      if (isPaused(current)) {
        if (options.whenPaused === "resume") return current;
        throw new NotFoundError(`sandbox ${sandboxID} is paused, not running: it has no end while paused; connect resumes it with a timeout`);
      }
      const endMs = endOf(Date.parse(endAtOf(current)));
      if (current.spec.expireTime && endMs === Date.parse(current.spec.expireTime)) return current;
      try {
        return await this.options.manager.update({
          namespace: this.namespace,
          name: current.metadata.name,
          spec: { ...current.spec, expireTime: new Date(endMs).toISOString() },
          ...(current.metadata.resourceVersion ? { resourceVersion: current.metadata.resourceVersion } : {}),
        });
      } catch (error) {
        if (error instanceof ConflictError && attempt < UPDATE_ATTEMPTS) continue;
        if (error instanceof NotFoundError) throw notFound(sandboxID);
        throw error;
      }
    }
  }

  /** The running or paused E2B sandbox with this instance id, as stored now (the directory is a cache). */
  private async find(sandboxID: string): Promise<Sandbox> {
    const found = await this.options.lookup(sandboxID);
    if (!found || !isE2bSandbox(found)) throw notFound(sandboxID);
    const current = await this.options.manager.get(this.namespace, found.metadata.name).catch((error: unknown) => {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    });
    if (!current || current.status?.sandboxID !== sandboxID || !isVisible(current)) throw notFound(sandboxID);
    return current;
  }

  /** E2B's view of a sandbox this API made, with its access token. */
  private viewOf(sandbox: Sandbox, accessToken: string): E2bSandbox {
    return e2bSandboxOf(sandbox, this.envdVersion, accessToken, this.trafficTokenOf(sandbox, accessToken), this.options.domain);
  }

  /** The sandbox's traffic token (envd-access-token.ts), for its access token. */
  private trafficTokenOf(sandbox: Sandbox, accessToken: string): string {
    return e2bTrafficAccessToken(this.options.tokenSecret, sandbox.metadata.annotations?.[TOKEN_NONCE_ANNOTATION] ?? "", hashAccessToken(accessToken));
  }

  /** The sandbox's access token, derived again; undefined when another one replaced it. */
  private accessTokenOf(sandbox: Sandbox): string | undefined {
    const nonce = sandbox.metadata.annotations?.[TOKEN_NONCE_ANNOTATION];
    if (!nonce) return undefined;
    const token = envdAccessToken(this.options.tokenSecret, nonce);
    return accessTokenMatches(token, sandbox.status?.accessTokenHash) ? token : undefined;
  }

  private async pools(): Promise<Map<string, SandboxPool>> {
    const { items } = await this.options.store.list("SandboxPool", { namespace: this.namespace });
    return new Map(items.map((pool) => [pool.metadata.name, pool]));
  }

  /**
   * E2B's template alias lookup (`GET /templates/aliases/{alias}`, the SDKs' `Template.exists`):
   * the name when it is a template here (a pool of the namespace, or `base`), else NotFoundError.
   */
  async templateAlias(alias: string): Promise<{ templateID: string; public: boolean }> {
    await this.poolOfTemplate(alias);
    return { templateID: alias, public: false };
  }

  /** The pool a template names: the pool of that name, else for `base` the default pool. */
  private async poolOfTemplate(templateID: string): Promise<SandboxPool> {
    const get = (name: string) => this.options.store.get("SandboxPool", { namespace: this.namespace, name });
    const named = new RegExp(NAME_PATTERN).test(templateID) ? await get(templateID) : undefined;
    if (named) return named;
    const defaultPool = this.options.defaultPool ?? "default";
    if (templateID === DEFAULT_TEMPLATE) {
      const pool = await get(defaultPool);
      if (pool) return pool;
    }
    const names = [...(await this.pools()).keys()].sort();
    throw new NotFoundError(
      `template ${JSON.stringify(templateID)} not found: a template is a pool of namespace ${this.namespace} (${DEFAULT_TEMPLATE} means pool ${defaultPool}); ` +
        (names.length > 0 ? `templates here: ${names.join(", ")}` : "there is no pool; create one with 'fsb apply -f pool.yaml'"),
    );
  }
}
