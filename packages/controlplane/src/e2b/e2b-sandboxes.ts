/**
 * E2B's sandbox operations over Fast Sandbox's own: create, list, get, kill, set the timeout,
 * connect. An E2B template is a pool of the namespace (`base`, E2B's default, is the embedded default
 * pool unless a pool is called `base`); an E2B sandbox is a Sandbox of that pool that runs the pool's
 * image with no command of its own (the image's, kept alive by the in-sandbox helper, which also
 * starts the daemon E2B's SDKs talk to); its end time is the sandbox's `spec.expireTime`, which the
 * sandbox reconciler enforces (E2B's reaper); its id is the instance id `status.sandboxID`.
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
  networkModeOf,
  type Sandbox,
  type SandboxPool,
  type SandboxSpec,
} from "@fast-sandbox/api";
import type { Logger } from "pino";
import { systemClock, type Clock } from "../controller/clock.js";
import type { SandboxManager } from "../fastpath/sandbox-manager.js";
import { accessTokenMatches, hashAccessToken } from "../proxy/access-token.js";
import type { ResourceStore } from "../store/resource-store.js";
import type { ListSandboxesQuery, NewSandboxRequest } from "./e2b-requests.js";
import {
  METADATA_ANNOTATION,
  TEMPLATE_ANNOTATION,
  TOKEN_NONCE_ANNOTATION,
  e2bSandboxOf,
  endAtOf,
  isE2bSandbox,
  isVisible,
  listedSandboxOf,
  metadataOf,
  resourcesOf,
  sandboxDetailOf,
  type E2bListedSandbox,
  type E2bSandbox,
  type E2bSandboxDetail,
} from "./e2b-sandbox-view.js";
import { envdAccessToken, newTokenNonce } from "./envd-access-token.js";
import type { EnvdReadiness } from "./envd-readiness.js";
import { readEnvdVersion } from "./envd-version.js";
import type { HostResources } from "./host-resources.js";
import { metadataMatches } from "./metadata-filter.js";
import { pageOf, type ListPage } from "./sandbox-list-page.js";

/** E2B's default template, which its SDKs create when they are given none. */
export const DEFAULT_TEMPLATE = "base";
/** Tries of a timeout change whose sandbox changed in between (another change, a status write). */
const UPDATE_ATTEMPTS = 5;

export interface E2bSandboxesOptions {
  manager: Pick<SandboxManager, "create" | "get" | "list" | "update" | "delete">;
  /** Where the pools (templates) are read. */
  store: Pick<ResourceStore, "get" | "list">;
  /** The sandbox whose current instance has this id (the sandbox proxy's directory). */
  lookup(sandboxID: string): Promise<Sandbox | undefined>;
  /** Resolves once a new sandbox's daemon answers. */
  envdReady: EnvdReadiness;
  /** The secret sandboxes' access tokens are derived from (envd-access-token.ts). */
  tokenSecret: Buffer;
  /** What a sandbox of a pool without `sandboxResources` may use. */
  host: HostResources;
  logger: Logger;
  /** @default systemClock */
  clock?: Clock;
  /** The namespace of the E2B API's sandboxes and templates. @default "default" */
  namespace?: string;
  /** The pool of the template `base` when no pool is called `base`. @default "default" */
  defaultPool?: string;
  /** @default the daemon's (packages/envd/version.json) */
  envdVersion?: string;
}

export interface ListedSandboxes {
  page: ListPage<E2bListedSandbox>;
  /** Sandboxes running in all (E2B's `X-Total-Running`). */
  totalRunning: number;
}

/** The error of a create whose sandbox was deleted again: the same kind, saying so. */
function deletedAfter(error: unknown): FsbError {
  const failure = FsbError.from(error);
  const message = `${failure.message}; the sandbox was deleted, nothing of it is left: retry the create`;
  if (failure instanceof TimeoutError) return new TimeoutError(message, { cause: error });
  if (failure instanceof UnavailableError) return new UnavailableError(message, { cause: error });
  return new FsbError(failure.code, message, { cause: error });
}

function notFound(sandboxID: string): NotFoundError {
  return new NotFoundError(`sandbox ${sandboxID} not found: it was killed, its timeout passed, or it never existed (GET /v2/sandboxes lists the running ones)`);
}

export class E2bSandboxes {
  private readonly options: E2bSandboxesOptions;
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
   */
  async create(request: NewSandboxRequest, signal?: AbortSignal): Promise<E2bSandbox> {
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
      },
      accessTokenHash: hashAccessToken(accessToken),
    });
    const sandboxID = sandbox.status?.sandboxID ?? "";
    try {
      signal?.throwIfAborted();
      const address = sandbox.status?.sandboxIP;
      if (!address) throw new UnavailableError(`sandbox ${sandboxID} got no network address of its own from its agent`);
      await this.options.envdReady({ sandboxID, address }, signal);
      signal?.throwIfAborted();
    } catch (error) {
      await this.options.manager.delete(this.namespace, sandbox.metadata.name, 0).catch((cleanup: unknown) => {
        this.options.logger.error(
          { err: cleanup, sandbox: `${this.namespace}/${sandbox.metadata.name}` },
          "could not delete an E2B sandbox whose create failed",
        );
      });
      throw deletedAfter(signal?.aborted ? new UnavailableError(`the client went away during the create: ${String(signal.reason)}`) : error);
    }
    return e2bSandboxOf(sandbox, this.envdVersion, accessToken);
  }

  /** The running sandboxes that match the query, one page of them. */
  async list(query: ListSandboxesQuery): Promise<ListedSandboxes> {
    const running = (await this.options.manager.list(this.namespace)).filter(isVisible);
    const pools = await this.pools();
    const startedAfter = query.startedAfter?.getTime();
    // Every sandbox E2B clients see runs: none is paused.
    const matching = (!query.states || query.states.has("running") ? running : [])
      .filter((sandbox) => query.template === undefined || sandbox.metadata.annotations?.[TEMPLATE_ANNOTATION] === query.template)
      .filter((sandbox) => metadataMatches(metadataOf(sandbox), query.metadata))
      .map((sandbox) => listedSandboxOf(sandbox, this.envdVersion, resourcesOf(pools.get(sandbox.spec.poolRef), this.options.host)))
      .filter((listed) => startedAfter === undefined || Date.parse(listed.startedAt) >= startedAfter);
    return { page: pageOf(matching, query), totalRunning: running.length };
  }

  async get(sandboxID: string): Promise<E2bSandboxDetail> {
    const sandbox = await this.find(sandboxID);
    const pool = (await this.pools()).get(sandbox.spec.poolRef);
    return sandboxDetailOf(sandbox, this.envdVersion, resourcesOf(pool, this.options.host), this.accessTokenOf(sandbox));
  }

  /** Deletes the sandbox at once (no grace period: E2B kills); NotFoundError when there is none to kill. */
  async kill(sandboxID: string): Promise<void> {
    const found = await this.options.lookup(sandboxID);
    if (!found || !isE2bSandbox(found) || found.status?.sandboxID !== sandboxID) throw notFound(sandboxID);
    try {
      await this.options.manager.delete(this.namespace, found.metadata.name, 0);
    } catch (error) {
      throw error instanceof NotFoundError ? notFound(sandboxID) : error;
    }
  }

  /** Ends the sandbox `timeoutSeconds` from now, sooner or later than it would have. */
  async setTimeout(sandboxID: string, timeoutSeconds: number): Promise<void> {
    await this.changeEnd(sandboxID, () => this.clock.now().getTime() + timeoutSeconds * 1000);
  }

  /**
   * The sandbox for another client: its end moves to `timeoutSeconds` from now when that is later
   * (never sooner), and the answer carries its access token.
   */
  async connect(sandboxID: string, timeoutSeconds: number): Promise<E2bSandbox> {
    const sandbox = await this.changeEnd(sandboxID, (endMs) => Math.max(endMs, this.clock.now().getTime() + timeoutSeconds * 1000));
    const accessToken = this.accessTokenOf(sandbox);
    if (!accessToken) {
      throw new FailedPreconditionError(
        `the access token of sandbox ${sandboxID} was replaced ('fsb token'), and E2B clients can be given only the one it was created with; kill it and create another`,
      );
    }
    return e2bSandboxOf(sandbox, this.envdVersion, accessToken);
  }

  /** Sets the sandbox's end to `endOf(current end)` (ms), unless that is its end already. */
  private async changeEnd(sandboxID: string, endOf: (endMs: number) => number): Promise<Sandbox> {
    for (let attempt = 1; ; attempt++) {
      const current = await this.find(sandboxID);
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

  /** The running E2B sandbox with this instance id, as stored now (the directory is a cache). */
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
