/**
 * `FastSandbox`: a handle on one sandbox. `FastSandbox.create()` makes a sandbox and
 * `FastSandbox.connect()` finds one; the handle runs commands in it (`commands`), reads and writes
 * its files (`files`), opens terminals (`pty`) — all through its in-sandbox daemon, via the sandbox
 * proxy — and manages its life through the control plane (`setTimeout`, `kill`, `logs`).
 */
import {
  ConflictError,
  FailedPreconditionError,
  FsbError,
  UnavailableError,
  NotFoundError,
  ValidationError,
  isSandboxId,
  type EgressPolicy,
  type Sandbox,
  type SandboxSpec,
  type SandboxStats,
} from "@fast-sandbox/api/core";
import { checkStringMap, shown } from "./arguments.js";
import { Commands } from "./commands.js";
import { sharedConnection, type Connection, type ConnectionOptions } from "./connection.js";
import { checkCreateArguments } from "./fast-sandbox-client.js";
import { fetchError, httpError, replacedError } from "./errors.js";
import type { DaemonChannel } from "./daemon-channel.js";
import { Filesystem } from "./filesystem.js";
import { Pty } from "./pty.js";
import { StreamStart, checkDuration, duration, untilAborted, type RequestOptions } from "./request-options.js";
import { SandboxDaemon } from "./sandbox-daemon.js";

/** How a call finds its connection: one given, or (from these options and the environment) the shared one. */
export interface SandboxConnectionOptions extends ConnectionOptions {
  /** The connection to use; the other connection options are then ignored. @default a shared one for the options (FSB_URL, FSB_TOKEN) */
  connection?: Connection;
}

export interface SandboxCreateOptions extends SandboxConnectionOptions, RequestOptions {
  /** @default generated (`sb-` and 10 hex digits) */
  name?: string;
  /** @default "default" */
  namespace?: string;
  /** @default "default" */
  pool?: string;
  /** Image reference. @default the pool's image */
  image?: string;
  /** Replaces the image's entrypoint. */
  command?: string[];
  /** Replaces the image's cmd. */
  args?: string[];
  /** Environment of the sandbox's command, and of every command run in it. */
  envs?: Record<string, string>;
  workingDir?: string;
  /** Ports reachable through the sandbox proxy (the daemon's 49983 always is). */
  exposedPorts?: number[];
  /**
   * How long the sandbox lives, in milliseconds from now; `setTimeout` changes it. 0 or unset: until
   * it is killed.
   * @default no limit
   */
  timeoutMs?: number;
  /** Where the sandbox may connect to, within its pool's egress policy. @default the pool's */
  egress?: EgressPolicy;
  labels?: Record<string, string>;
  failurePolicy?: SandboxSpec["failurePolicy"];
  /**
   * Makes retries idempotent: the same id returns the sandbox the first attempt created. The SDK
   * retries once itself, with the same id, when an attempt's answer was lost (deadline, connection).
   * @default a new id for each call of create
   */
  requestId?: string;
  /**
   * How long `create` waits for the sandbox's in-sandbox daemon to answer (what `commands`, `files`
   * and `pty` need); a sandbox whose daemon does not answer in time is deleted and `create` fails.
   * 0: do not wait (e.g. a pool with a Shared network, whose sandboxes have no daemon).
   * @default 20000
   */
  daemonReadyTimeoutMs?: number;
}

export interface SandboxConnectOptions extends SandboxConnectionOptions, RequestOptions {
  /** @default "default" */
  namespace?: string;
  /**
   * The sandbox's access token (what `create` returned, `fsb run` printed, or `rotateAccessToken`
   * made): needed for everything that goes to the sandbox (commands, files, terminals). Without
   * one, those calls fail until `rotateAccessToken()` makes a new one.
   * @default the one kept in the embedded instance's data directory (by `fsb run`, `fsb token` or this SDK), when the connection is to it
   */
  accessToken?: string;
}

export interface SandboxListOptions extends SandboxConnectionOptions, RequestOptions {
  /** `*` for every namespace. @default "default" */
  namespace?: string;
  pool?: string;
  /** Only the sandboxes that have all of these labels, with these values. @default any labels */
  labels?: Record<string, string>;
}

/**
 * `requestTimeoutMs` bounds the whole read (the connection's by default); with `follow`, only when
 * given, the wait for the first output: a follow of a quiet sandbox is not cut short otherwise.
 */
export interface LogsOptions extends RequestOptions {
  /** Keep receiving until the sandbox's command exits. @default false */
  follow?: boolean;
  /**
   * Only the last that many lines of what the sandbox's log keeps (a whole number ≥ 0, as
   * `kubectl logs --tail`), then (`follow`) what comes after them. @default all of it
   */
  tail?: number;
  /** Called with the output as it arrives; the returned string is then empty (output can be larger than memory). */
  onData?: (data: Uint8Array) => void;
}

/** The longest lifetime `setTimeout` and `create` take (~100 years, as the Python SDK): a Date holds it, with room. */
const MAX_LIFETIME_MS = 100 * 365 * 24 * 3600 * 1000;
/** Tries of a timeout change whose sandbox changed in between (a status write, another change). */
const UPDATE_ATTEMPTS = 5;
/** How long a new sandbox's daemon has to answer: it starts beside the sandbox's command. */
const DAEMON_READY_TIMEOUT_MS = 20_000;
/** Pause between two `GET /health` of a daemon that is starting. */
const DAEMON_POLL_INTERVAL_MS = 50;

export class FastSandbox {
  /** Runs commands in the sandbox. */
  readonly commands: Commands;
  /** Its filesystem. */
  readonly files: Filesystem;
  /** Interactive terminals. */
  readonly pty: Pty;
  readonly connection: Connection;
  private record: Sandbox;
  private token: string;
  private channelOf: Promise<DaemonChannel> | undefined;

  private constructor(connection: Connection, record: Sandbox, accessToken: string) {
    this.connection = connection;
    this.record = record;
    this.token = accessToken;
    const daemon = new SandboxDaemon({
      label: this.label,
      requestTimeoutMs: connection.requestTimeoutMs,
      channel: (options) => this.channel(options),
      gone: (error, what, signal) => this.gone(error, what, signal),
    });
    this.commands = new Commands(daemon);
    this.files = new Filesystem(daemon);
    this.pty = new Pty(daemon);
  }

  /** Creates a sandbox and resolves, once it runs, with its handle. */
  static async create(options: SandboxCreateOptions = {}): Promise<FastSandbox> {
    checkDuration(options.timeoutMs, "timeoutMs");
    if (options.timeoutMs !== undefined && options.timeoutMs > MAX_LIFETIME_MS) {
      throw new ValidationError("timeoutMs", `${options.timeoutMs} is longer than a sandbox may live; give at most ${MAX_LIFETIME_MS} ms, or 0 for no end`);
    }
    checkDuration(options.daemonReadyTimeoutMs, "daemonReadyTimeoutMs");
    checkCreateArguments(options);
    const connection = options.connection ?? sharedConnection(options);
    const namespace = options.namespace ?? "default";
    const pool = options.pool ?? "default";
    const call = {
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.requestTimeoutMs !== undefined ? { requestTimeoutMs: options.requestTimeoutMs } : {}),
    };
    let image = options.image;
    if (!image) {
      image = (await connection.client.pools.get(pool, { namespace, ...call })).spec.image;
      if (!image) throw new ValidationError("image", `pool ${namespace}/${pool} has no default image; pass image`);
    }
    const created = await connection.client.sandboxes.create({
      namespace,
      pool,
      image,
      ...(options.name ? { name: options.name } : {}),
      ...(options.command ? { command: options.command } : {}),
      ...(options.args ? { args: options.args } : {}),
      ...(options.envs ? { envs: options.envs } : {}),
      ...(options.workingDir ? { workingDir: options.workingDir } : {}),
      ...(options.exposedPorts ? { exposedPorts: options.exposedPorts } : {}),
      ...(options.timeoutMs ? { ttlMs: options.timeoutMs } : {}),
      ...(options.egress ? { egress: options.egress } : {}),
      ...(options.labels ? { labels: options.labels } : {}),
      ...(options.failurePolicy ? { failurePolicy: options.failurePolicy } : {}),
      ...(options.requestId ? { requestId: options.requestId } : {}),
      ...call,
    });
    const { accessToken, ...record } = created;
    connection.accessTokens?.saveAccessToken(namespace, record.metadata.name, accessToken);
    const sandbox = new FastSandbox(connection, record, accessToken);
    const daemonReadyTimeoutMs = options.daemonReadyTimeoutMs ?? DAEMON_READY_TIMEOUT_MS;
    if (daemonReadyTimeoutMs > 0) {
      try {
        await sandbox.waitForDaemon({ timeoutMs: daemonReadyTimeoutMs, ...call }, "daemonReadyTimeoutMs");
      } catch (error) {
        // A sandbox whose daemon cannot be used is neither handed out nor left behind; the error says so.
        const outcome = await sandbox.kill({ gracePeriodMs: 0 }).then(
          (deleted) => (deleted ? "the sandbox was deleted" : "the sandbox is gone"),
          (killError: unknown) =>
            `deleting the sandbox failed too (${killError instanceof Error ? killError.message : String(killError)}): delete ${sandbox.label} yourself`,
        );
        if (error instanceof FsbError) error.message += `; ${outcome}`;
        throw error;
      }
    }
    return sandbox;
  }

  /**
   * A handle on an existing sandbox, by name or by instance id (`status.sandboxID`). Pass its
   * `accessToken` to use its daemon (commands, files, terminals).
   */
  static async connect(nameOrId: string, options: SandboxConnectOptions = {}): Promise<FastSandbox> {
    if (!nameOrId) throw new ValidationError("nameOrId", "is empty; give the sandbox's name or its id (status.sandboxID)");
    const connection = options.connection ?? sharedConnection(options);
    const namespace = options.namespace ?? "default";
    const call = {
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.requestTimeoutMs !== undefined ? { requestTimeoutMs: options.requestTimeoutMs } : {}),
    };
    let record: Sandbox | undefined;
    try {
      record = await connection.client.sandboxes.get(nameOrId, { namespace, ...call });
    } catch (error) {
      if (!(error instanceof NotFoundError) || !isSandboxId(nameOrId)) throw error;
      const all = await connection.client.sandboxes.list({ namespace, ...call });
      record = all.find((sandbox) => sandbox.status?.sandboxID === nameOrId);
      if (!record) throw new NotFoundError(`no sandbox in namespace ${namespace} is named ${nameOrId} or has that id`, { cause: error });
    }
    const accessToken = options.accessToken ?? connection.accessTokens?.savedAccessToken(namespace, record.metadata.name) ?? "";
    return new FastSandbox(connection, record, accessToken);
  }

  /** The sandboxes (as records), e.g. to connect to one. */
  static async list(options: SandboxListOptions = {}): Promise<Sandbox[]> {
    checkStringMap(options.labels, "labels");
    const connection = options.connection ?? sharedConnection(options);
    const sandboxes = await connection.client.sandboxes.list({
      namespace: options.namespace ?? "default",
      ...(options.pool ? { pool: options.pool } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.requestTimeoutMs !== undefined ? { requestTimeoutMs: options.requestTimeoutMs } : {}),
    });
    // ListSandboxes selects by namespace and pool only: the labels are matched here, as the Python SDK does.
    const wanted = Object.entries(options.labels ?? {});
    return sandboxes.filter((sandbox) => wanted.every(([name, value]) => sandbox.metadata.labels?.[name] === value));
  }

  get name(): string {
    return this.record.metadata.name;
  }

  get namespace(): string {
    return this.record.metadata.namespace ?? "default";
  }

  /** The id of the instance this handle talks to (`status.sandboxID`). */
  get sandboxId(): string {
    return this.record.status?.sandboxID ?? "";
  }

  /** The token the sandbox proxy checks ("" when the handle was connected without one). */
  get accessToken(): string {
    return this.token;
  }

  /** The sandbox as last read (by create, connect, getInfo or setTimeout). */
  get info(): Sandbox {
    return this.record;
  }

  /** The sandbox as it is now. */
  async getInfo(options: RequestOptions = {}): Promise<Sandbox> {
    this.remember(await this.connection.client.sandboxes.get(this.name, { namespace: this.namespace, ...options }));
    return this.record;
  }

  /** Its resource use now, read by its agent: CPU (over 100 ms), memory, processes, disk written. */
  async stats(options: RequestOptions = {}): Promise<SandboxStats> {
    return this.connection.client.sandboxes.stats(this.name, { namespace: this.namespace, ...options });
  }

  /** Its resource use as its agent sampled it while it ran (every 5 s by default), oldest first, within `since`..`until`. */
  async statsHistory(options: RequestOptions & { since?: Date; until?: Date } = {}): Promise<SandboxStats[]> {
    return this.connection.client.sandboxes.statsHistory(this.name, { namespace: this.namespace, ...options });
  }

  /** Whether its daemon answers (false once it is gone or not running). */
  async isRunning(options: RequestOptions = {}): Promise<boolean> {
    const timeoutMs = duration(options.requestTimeoutMs, "requestTimeoutMs") ?? this.connection.requestTimeoutMs;
    const start = new StreamStart(options.signal, timeoutMs);
    const what = `GET /health of sandbox ${this.label}`;
    try {
      const channel = await this.channel({ ...options, signal: start.signal });
      const response = await channel.fetch("/health", { method: "GET", signal: start.signal });
      // The sandbox proxy's answers for a sandbox that is gone (502) or not running (503) mean no.
      if (response.ok || response.status === 502 || response.status === 503) {
        await response.body?.cancel();
        return response.ok;
      }
      throw await httpError(response, { what, sandbox: this.label });
    } catch (error) {
      throw fetchError(error, { what, signal: options.signal, timedOut: start.startTimedOut, timeoutMs });
    } finally {
      start.stop();
    }
  }

  /**
   * Resolves once the sandbox's daemon answers (`GET /health` through the sandbox proxy): it starts
   * beside the sandbox's command, a few milliseconds after the sandbox runs. A poll that gets no
   * answer in time or no answer at all (a connection reset, a sandbox proxy restarting) is tried
   * again. Fails with an UnavailableError after `timeoutMs`, saying what the last poll got, or at
   * once when the sandbox is gone.
   */
  async waitUntilReady(options: RequestOptions & { timeoutMs?: number } = {}): Promise<void> {
    await this.waitForDaemon(options, "timeoutMs");
  }

  /** `waitUntilReady`, whose wait was set by `timeoutOption` (for its message). */
  private async waitForDaemon(options: RequestOptions & { timeoutMs?: number }, timeoutOption: string): Promise<void> {
    const timeoutMs = options.timeoutMs ?? DAEMON_READY_TIMEOUT_MS;
    checkDuration(timeoutMs, "timeoutMs");
    const deadline = Date.now() + timeoutMs;
    const what = `waiting for the daemon of sandbox ${this.label}`;
    let last = "no answer yet";
    let lastFailure: Error | undefined;
    const perRequestMs = duration(options.requestTimeoutMs, "requestTimeoutMs") ?? this.connection.requestTimeoutMs;
    for (;;) {
      // Each poll gets its own deadline, capped by what is left of the wait (requestTimeoutMs 0: only that).
      const leftMs = deadline - Date.now();
      const requestTimeoutMs = Math.max(1, perRequestMs > 0 ? Math.min(perRequestMs, leftMs) : leftMs);
      const start = new StreamStart(options.signal, requestTimeoutMs);
      let refused: FsbError | undefined;
      try {
        const channel = await this.channel({ ...options, signal: start.signal });
        const response = await channel.fetch("/health", { method: "GET", signal: start.signal });
        const body = await response.text();
        if (response.ok) return;
        // 502: nothing listens on the daemon's port yet; 503: the sandbox does not run yet. A sandbox the proxy does not know is gone.
        if ((response.status !== 502 && response.status !== 503) || /sandbox was not found/i.test(body)) {
          // With the answer's headers: the proxy's fsb-error-code says the sandbox is gone (NotFoundError).
          refused = await httpError(new Response(body, { status: response.status, headers: response.headers }), { what, sandbox: this.label });
        } else {
          last = `HTTP ${response.status} ${body.slice(0, 200)}`.trim();
          lastFailure = undefined;
        }
      } catch (error) {
        if (start.startTimedOut && !options.signal?.aborted) {
          last = `no answer within ${requestTimeoutMs} ms`;
          lastFailure = undefined;
        } else {
          // A poll that got no answer (a connection reset, a sandbox proxy restarting, the control
          // plane's GetSandboxProxy unavailable for a moment) is waited past as a timed-out one: the
          // wait fails only at its deadline, saying what the last poll got. Everything else (the
          // caller's abort, a refused token, a sandbox that is gone) fails it at once.
          const failure = fetchError(error, { what, signal: options.signal, timedOut: false, timeoutMs: requestTimeoutMs });
          if (!(failure instanceof UnavailableError)) throw failure;
          last = failure.message.startsWith(`${what}: `) ? failure.message.slice(what.length + 2) : failure.message;
          lastFailure = failure;
        }
      } finally {
        start.stop();
      }
      if (refused) throw refused;
      if (Date.now() + DAEMON_POLL_INTERVAL_MS >= deadline) {
        // Not what the pool is: a daemon that is slow to start (a busy host, a short wait) looks the same as none.
        const zero = timeoutOption === "daemonReadyTimeoutMs" ? ", or 0 not to wait" : "";
        throw new UnavailableError(
          `the daemon of sandbox ${this.label} did not answer within ${timeoutMs} ms (${timeoutOption}; last: ${last}): pass a larger ${timeoutOption}${zero} (the sandboxes of a pool with network mode Shared run no daemon: commands, files and terminals need Isolated)`,
          lastFailure ? { cause: lastFailure } : undefined,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, DAEMON_POLL_INTERVAL_MS));
    }
  }

  /**
   * Sets when the sandbox ends: `timeoutMs` from now (sooner or later than it would have), or with
   * `null` never (until it is killed; the Python SDK's `set_timeout(None)`). The control plane
   * deletes it then (`spec.expireTime`).
   */
  async setTimeout(timeoutMs: number | null, options: RequestOptions = {}): Promise<void> {
    if (timeoutMs !== null && !(typeof timeoutMs === "number" && timeoutMs > 0 && timeoutMs <= MAX_LIFETIME_MS)) {
      throw new ValidationError(
        "timeoutMs",
        `${shown(timeoutMs)} is not a lifetime; give the milliseconds from now the sandbox may live (more than 0, at most ${MAX_LIFETIME_MS}), or null for no end`,
      );
    }
    for (let attempt = 1; ; attempt++) {
      const current = await this.connection.client.sandboxes.get(this.name, { namespace: this.namespace, ...options });
      const { expireTime: _ended, ...spec } = current.spec;
      try {
        const updated = await this.connection.client.sandboxes.update(
          this.name,
          timeoutMs === null ? spec : { ...spec, expireTime: new Date(Date.now() + timeoutMs).toISOString() },
          { namespace: this.namespace, ...(current.metadata.resourceVersion ? { resourceVersion: current.metadata.resourceVersion } : {}), ...options },
        );
        this.remember(updated);
        return;
      } catch (error) {
        if (error instanceof ConflictError && attempt < UPDATE_ATTEMPTS) continue;
        throw error;
      }
    }
  }

  /** Deletes the sandbox; resolves true once it is gone, false when it was gone already. */
  async kill(options: RequestOptions & { gracePeriodMs?: number } = {}): Promise<boolean> {
    let deleted: boolean;
    try {
      await this.connection.client.sandboxes.delete(this.name, { namespace: this.namespace, ...options });
      deleted = true;
    } catch (error) {
      if (!(error instanceof NotFoundError)) throw error;
      deleted = false;
    }
    this.connection.accessTokens?.forgetAccessToken(this.namespace, this.name);
    return deleted;
  }

  /**
   * The output of the sandbox's own command (its stdout and stderr), up to now or (`follow`) until it
   * exits. Without `onData` all of it is kept in memory and returned (up to the 10–20 MiB its log
   * keeps, and all a follow receives): pass `tail` for only its last lines, or `onData` to take it as
   * it comes.
   */
  async logs(options: LogsOptions = {}): Promise<string> {
    const chunks: Uint8Array[] = [];
    for await (const chunk of this.connection.client.sandboxes.logs(this.name, {
      namespace: this.namespace,
      follow: options.follow ?? false,
      ...(options.tail !== undefined ? { tail: options.tail } : {}),
      ...(options.requestTimeoutMs !== undefined || !options.follow ? { requestTimeoutMs: options.requestTimeoutMs ?? this.connection.requestTimeoutMs } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    })) {
      if (options.onData) options.onData(chunk);
      else chunks.push(chunk);
    }
    return Buffer.concat(chunks).toString();
  }

  /** Gives the sandbox a new access token (the old one stops working) and uses it from now on. */
  async rotateAccessToken(options: RequestOptions = {}): Promise<string> {
    const { accessToken, sandbox } = await this.connection.client.sandboxes.rotateAccessToken(this.name, { namespace: this.namespace, ...options });
    this.record = sandbox;
    this.token = accessToken;
    this.channelOf = undefined;
    this.connection.accessTokens?.saveAccessToken(this.namespace, this.name, accessToken);
    return accessToken;
  }

  /**
   * Keeps the sandbox's record as last read. A new instance (a reset, an AutoRecreate after its agent
   * was lost) has a new sandbox id: daemon calls go to it from then on, not to the one gone.
   */
  private remember(record: Sandbox): void {
    if (record.status?.sandboxID !== this.record.status?.sandboxID) this.channelOf = undefined;
    this.record = record;
  }

  /**
   * The proxy's "gone" for this handle's instance: the sandbox is looked up once by name, and one that
   * lives on as another instance (`fsb reset`, an AutoRecreate) gets an error that says so and how to
   * follow it. The handle does not follow by itself: what was asked is not done on the new instance,
   * where nothing of the old one (its files, its processes) is.
   */
  private async gone(error: Error, what: string, signal: AbortSignal | undefined): Promise<Error> {
    const oldId = this.sandboxId;
    let newId: string | undefined;
    try {
      newId = (await this.connection.client.sandboxes.get(this.name, { namespace: this.namespace, ...(signal ? { signal } : {}) })).status?.sandboxID;
    } catch {
      // Deleted (or not to be told now): gone it is.
      return error;
    }
    if (!oldId || !newId || newId === oldId) return error;
    const connectOptions = this.namespace === "default" ? "" : `, { namespace: ${JSON.stringify(this.namespace)} }`;
    return replacedError(
      what,
      { sandbox: this.label, oldId, newId, refresh: "await sandbox.getInfo()", connect: `FastSandbox.connect(${JSON.stringify(this.name)}${connectOptions})` },
      error,
    );
  }

  private get label(): string {
    return this.namespace === "default" ? this.name : `${this.namespace}/${this.name}`;
  }

  /** The channel to the daemon, made once per access token. */
  private channel(options: RequestOptions): Promise<DaemonChannel> {
    if (!this.token) {
      return Promise.reject(
        new FailedPreconditionError(
          `no access token for sandbox ${this.label}: pass accessToken to FastSandbox.connect (create returned it; 'fsb run' printed it), or call rotateAccessToken() to make a new one`,
        ),
      );
    }
    if (!this.sandboxId) {
      return Promise.reject(
        new FailedPreconditionError(`sandbox ${this.label} has no instance yet (phase ${this.record.status?.phase ?? "Pending"}); connect again once it runs`),
      );
    }
    if (!this.channelOf) {
      // Shared by the handle's calls meanwhile: made without this caller's signal, which it races below.
      const made = this.connection.daemonChannel({ namespace: this.namespace, name: this.name, sandboxId: this.sandboxId, accessToken: this.token });
      this.channelOf = made;
      void made.catch(() => {
        if (this.channelOf === made) this.channelOf = undefined;
      });
    }
    return untilAborted(this.channelOf, options.signal);
  }
}
