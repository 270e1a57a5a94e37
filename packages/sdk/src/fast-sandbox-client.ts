import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { Http2SessionManager, createConnectTransport } from "@connectrpc/connect-node";
import { checkString, checkStringList, checkStringMap, shown } from "./arguments.js";
import { callError, type CallContext } from "./errors.js";
import { EmbeddedInstance, defaultDataDir, fromEnv, requireControlPlaneAddress } from "./embedded-instance.js";
import { Checkpoints } from "./checkpoints.js";
import { createError, createRequestIdentity, createSandboxWithRequestId, undoAbandonedCreate } from "./create-request.js";
import { StreamStart, checkDuration, duration } from "./request-options.js";
import {
  API_VERSION,
  FsbError,
  TimeoutError,
  ValidationError,
  checkTailLines,
  pb,
  sandboxFromMessage,
  sandboxPoolFromMessage,
  sandboxPoolToMessage,
  sandboxSpecToMessage,
  sandboxStatsFromMessage,
  guardSessionErrors,
  sendBearerToken,
  type EgressPolicy,
  type EnvVar,
  type Sandbox,
  type SandboxPool,
  type SandboxSpec,
  type SandboxStats,
} from "@fast-sandbox/api/core";

export interface FastSandboxClientOptions {
  /** Base URL of the control plane, e.g. `http://127.0.0.1:7070`. @default FSB_URL, else the URL the running `fsb up` of `dataDir` wrote */
  url?: string;
  /**
   * Bearer token. @default `tokenFile`'s, else FSB_TOKEN, else FSB_TOKEN_FILE's, else the token of
   * `dataDir` — only for that data directory's own URL or one on this host's loopback (another
   * host's URL needs its own token)
   */
  token?: string;
  /**
   * A file that holds the bearer token and is renewed by something else: on Kubernetes, the Pod's
   * ServiceAccount token (`/var/run/secrets/kubernetes.io/serviceaccount/token`), which the
   * controller takes as that user's (their RBAC decides each call). Read now, and again once a
   * minute as calls need it. `token`, when given too, wins. @default FSB_TOKEN_FILE, when FSB_TOKEN is not set
   */
  tokenFile?: string;
  /**
   * The data directory of the embedded Fast Sandbox (`fsb up`): where its URL and token are found
   * when not given, as `FastSandbox` and the CLI find them.
   * @default FSB_DATA_DIR, else /var/lib/fast-sandbox as root, else ~/.local/share/fast-sandbox
   */
  dataDir?: string;
  /** Deadline of unary calls (each call may pass its own `requestTimeoutMs`). @default 60000 */
  requestTimeoutMs?: number;
  /** HTTP version of the connection. @default "2" */
  httpVersion?: "1.1" | "2";
  /**
   * While calls are open on the HTTP/2 connection, a PING is sent after this long without a byte
   * from the control plane; one unanswered within `pingTimeoutMs` closes the connection and fails its
   * calls with UnavailableError. Without it, a stream (`exec`, `logs` with `follow`, `pullImage`, a
   * create without a deadline) would wait for ever on a control plane whose host vanished without a
   * FIN or RST (a host gone behind a NAT, a cable pulled). 0: no PINGs. Not used with `httpVersion` "1.1".
   * @default 30000
   */
  pingIntervalMs?: number;
  /** How long a PING may go unanswered before the connection is taken for dead (see `pingIntervalMs`); 0: the default. @default 15000 */
  pingTimeoutMs?: number;
  /**
   * The transport of the fast-path API, instead of one to `url` with `token`: e.g. Connect's
   * `createRouterTransport` in tests. `url` and `token` are then not needed.
   * @default a Connect transport to `url` with the bearer token
   */
  transport?: Transport;
}

/** Quiet time on an HTTP/2 connection with open calls before a PING asks whether the control plane is still there. */
const DEFAULT_PING_INTERVAL_MS = 30_000;
/** How long that PING may go unanswered: then the connection is dead and its calls fail with UnavailableError. */
const DEFAULT_PING_TIMEOUT_MS = 15_000;

/** Sandboxes a call of `sandboxes.list()` asks for at a time. */
const DEFAULT_LIST_PAGE_SIZE = 500;

export interface ListSandboxesOptions extends ClientCallOptions {
  /** `"*"`: every namespace. @default "default" */
  namespace?: string;
  /** Only the sandboxes of this pool. @default every pool */
  pool?: string;
  /** Sandboxes per call (the server caps it at 1000). @default 500 */
  pageSize?: number;
}

/** What every call of the client accepts besides its own options. */
export interface ClientCallOptions {
  /** Stops the call; it then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Deadline of this call in milliseconds; 0 for none. @default the client's `requestTimeoutMs` */
  requestTimeoutMs?: number;
}

export interface CreateSandboxOptions {
  name?: string;
  /** @default "default" */
  namespace?: string;
  pool: string;
  image: string;
  command?: string[];
  args?: string[];
  envs?: EnvVar[] | Record<string, string>;
  workingDir?: string;
  exposedPorts?: number[];
  /** Absolute time or a time-to-live in milliseconds from now. */
  expireTime?: Date | string;
  ttlMs?: number;
  failurePolicy?: SandboxSpec["failurePolicy"];
  /** How long the agent may be unreachable before the failure policy acts. */
  recoveryTimeoutSeconds?: number;
  resetRevision?: string;
  consistencyMode?: SandboxSpec["consistencyMode"];
  /**
   * Where the sandbox may connect to, within its pool's egress policy (a pool with an Isolated
   * network): `{ policy: "denyAll" }`, or `{ policy: "allowList", allow: [{ cidr: "10.0.0.0/8", ports: [443], protocol: "tcp" }] }`.
   * @default the pool's
   */
  egress?: EgressPolicy;
  labels?: Record<string, string>;
  /**
   * Makes retries idempotent: the same id returns the sandbox the first attempt created. The SDK
   * retries once itself, with the same id, when an attempt's answer was lost (deadline, connection).
   * @default a new id for each call of create
   */
  requestId?: string;
  signal?: AbortSignal;
}

/**
 * A sandbox as CreateSandbox answers it, with its access token: the `X-Access-Token` of every request
 * through the sandbox proxy (its `status.endpoints`). It is told only here (and by
 * `rotateAccessToken`): the control plane keeps its hash alone. Drop `accessToken` before using the
 * object as a Sandbox manifest (`const { accessToken, ...sandbox } = created`).
 */
export type CreatedSandbox = Sandbox & { accessToken: string };

export interface ExecOptions {
  namespace?: string;
  envs?: EnvVar[];
  workingDir?: string;
  /** `USER[:GROUP]`, names of the sandbox's accounts or numbers, as `docker exec -u`. @default the image's USER */
  user?: string;
  onStdout?: (chunk: Uint8Array) => void;
  onStderr?: (chunk: Uint8Array) => void;
  signal?: AbortSignal;
}

export interface ExecResult {
  exitCode: number;
  /** The collected output; empty for a stream that went to its `onStdout`/`onStderr` callback. */
  stdout: string;
  stderr: string;
}

export interface AgentSummary {
  name: string;
  namespace: string;
  pool: string;
  endpoint: string;
  capacity: number;
  allocated: number;
  images: string[];
  pid?: number;
  ready: boolean;
  usedPorts: number[];
  nodeName?: string;
}

/** Progress of an image pull on one agent. */
export interface PullProgress {
  /** The agent reporting it. */
  agent: string;
  /** The normalized reference, e.g. `docker.io/library/busybox:latest`. */
  image: string;
  phase: "resolving" | "downloading" | "unpacking" | "done";
  layersTotal: number;
  /** Layers downloaded (phase downloading) or unpacked (unpacking, done). */
  layersDone: number;
  bytesTotal: number;
  bytesDone: number;
  /** Digest of the image's index or manifest, once resolved. */
  digest: string;
}

export interface PullImageOptions {
  /** @default "default" */
  namespace?: string;
  /** The pool whose ready agents pull the image. @default "default" */
  pool?: string;
  /** Called with every progress report of every agent. */
  onProgress?: (progress: PullProgress) => void;
  /** Stops waiting (the agents finish the pull anyway, for the creates that need it). */
  signal?: AbortSignal;
}

/**
 * The fields of a create that go out as strings, checked before anything is sent: a value of another
 * type would fail the request's encoding (an "internal" error) instead of naming the field.
 */
export function checkCreateArguments(
  options: Partial<Pick<CreateSandboxOptions, "name" | "namespace" | "pool" | "image" | "command" | "args" | "envs" | "workingDir" | "labels" | "requestId">>,
): void {
  for (const field of ["name", "namespace", "pool", "image", "workingDir", "requestId"] as const) checkString(options[field], field);
  checkStringList(options.command, "command");
  checkStringList(options.args, "args");
  if (Array.isArray(options.envs)) {
    for (const [index, env] of (options.envs as unknown[]).entries()) {
      if (env === null || typeof env !== "object")
        throw new ValidationError(`envs[${index}]`, `${shown(env)} is not a variable; give { name, value }, both strings`);
      checkString((env as EnvVar).name ?? 0, `envs[${index}].name`);
      checkString((env as EnvVar).value ?? 0, `envs[${index}].value`);
    }
  } else {
    checkStringMap(options.envs, "envs");
  }
  checkStringMap(options.labels, "labels");
}

function envList(envs: CreateSandboxOptions["envs"]): EnvVar[] | undefined {
  if (!envs) return undefined;
  return Array.isArray(envs) ? envs : Object.entries(envs).map(([name, value]) => ({ name, value }));
}

/** Runs a call, translating what it throws (`callError`: the caller's abort stays an abort, deadlines become TimeoutError). */
async function translate<T>(fn: () => Promise<T>, context: CallContext = { what: "the call" }): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw callError(error, context);
  }
}

/** Runs the caller's callbacks of a stream, keeping what one threw: that is the caller's error, rethrown as it is, not a failed call. */
class CallbackFailure {
  failed = false;
  error: unknown;

  call<T>(callback: (value: T) => void, value: T): void {
    try {
      callback(value);
    } catch (error) {
      this.failed = true;
      this.error = error;
      throw error;
    }
  }
}

/** Connect's call options (deadline and signal) and the matching error context for `translate`. */
function callOptions(
  what: string,
  defaultTimeoutMs: number,
  options: ClientCallOptions,
): { call: { timeoutMs?: number; signal?: AbortSignal }; context: CallContext } {
  const timeoutMs = duration(options.requestTimeoutMs ?? defaultTimeoutMs, "requestTimeoutMs");
  return {
    call: { ...(timeoutMs > 0 ? { timeoutMs } : {}), ...(options.signal ? { signal: options.signal } : {}) },
    context: { what, signal: options.signal, timeoutMs },
  };
}

/** Sandboxes: create, inspect, run commands in, delete. */
export class Sandboxes {
  constructor(
    private readonly client: Client<typeof pb.SandboxService>,
    private readonly timeoutMs: number,
  ) {}

  async create(options: CreateSandboxOptions & { requestTimeoutMs?: number }): Promise<CreatedSandbox> {
    checkCreateArguments(options);
    const expireTime =
      options.ttlMs !== undefined
        ? new Date(Date.now() + options.ttlMs).toISOString()
        : options.expireTime instanceof Date
          ? options.expireTime.toISOString()
          : options.expireTime;
    const envs = envList(options.envs);
    const spec: SandboxSpec = {
      image: options.image,
      poolRef: options.pool,
      ...(options.command ? { command: options.command } : {}),
      ...(options.args ? { args: options.args } : {}),
      ...(envs ? { envs } : {}),
      ...(options.workingDir ? { workingDir: options.workingDir } : {}),
      ...(options.exposedPorts ? { exposedPorts: options.exposedPorts } : {}),
      ...(expireTime ? { expireTime } : {}),
      ...(options.failurePolicy ? { failurePolicy: options.failurePolicy } : {}),
      ...(options.recoveryTimeoutSeconds !== undefined ? { recoveryTimeoutSeconds: options.recoveryTimeoutSeconds } : {}),
      ...(options.resetRevision ? { resetRevision: options.resetRevision } : {}),
      ...(options.consistencyMode ? { consistencyMode: options.consistencyMode } : {}),
      ...(options.egress ? { egress: options.egress } : {}),
    };
    for (const [index, port] of (spec.exposedPorts ?? []).entries()) {
      // int32 on the wire: catch what would otherwise be mangled before it is sent. Same field path as the server's check.
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        throw new ValidationError(`spec.exposedPorts[${index}]`, `${port} is out of range; allowed: 1..65535`);
    }
    const { call, context } = callOptions(`CreateSandbox ${options.name ?? ""}`.trim(), this.timeoutMs, options);
    const namespace = options.namespace ?? "";
    const { requestId, name } = createRequestIdentity(namespace, options.name ?? "", options.requestId);
    try {
      const { message, accessToken } = await createSandboxWithRequestId(
        this.client,
        { namespace, name: options.name ?? "", spec: sandboxSpecToMessage(spec), labels: options.labels ?? {}, requestId },
        call,
      );
      return { ...sandboxFromMessage(message), accessToken };
    } catch (error) {
      // Aborted by its caller, who could not name what it may still make: that is undone.
      if (context.signal?.aborted && !options.name && !options.requestId) void undoAbandonedCreate((sandbox) => this.delete(sandbox, { namespace }), name);
      throw createError(error, context, { namespace, name, requestId });
    }
  }

  /**
   * Gives the sandbox a new access token and returns it (the only time it is told); the previous
   * token stops working at once.
   */
  async rotateAccessToken(name: string, options: { namespace?: string } & ClientCallOptions = {}): Promise<{ accessToken: string; sandbox: Sandbox }> {
    const { call, context } = callOptions(`RotateAccessToken ${name}`, this.timeoutMs, options);
    const response = await translate(() => this.client.rotateAccessToken({ name, namespace: options.namespace ?? "" }, call), context);
    if (!response.sandbox) throw new FsbError("internal", "RotateAccessToken answered without the sandbox");
    return { accessToken: response.accessToken, sandbox: sandboxFromMessage(response.sandbox) };
  }

  async get(name: string, options: { namespace?: string } & ClientCallOptions = {}): Promise<Sandbox> {
    const { call, context } = callOptions(`GetSandbox ${name}`, this.timeoutMs, options);
    return sandboxFromMessage(await translate(() => this.client.getSandbox({ name, namespace: options.namespace ?? "" }, call), context));
  }

  /** A running sandbox's resource use now, read by its agent: CPU (over 100 ms), memory, processes, disk written. */
  async stats(name: string, options: { namespace?: string } & ClientCallOptions = {}): Promise<SandboxStats> {
    const { call, context } = callOptions(`GetSandboxStats ${name}`, this.timeoutMs, options);
    return sandboxStatsFromMessage(await translate(() => this.client.getSandboxStats({ name, namespace: options.namespace ?? "" }, call), context));
  }

  /**
   * A running sandbox's resource use as its agent sampled it (every 5 s by default, the last hour's
   * kept), oldest first, taken within `since`..`until` (each optional, both included); each
   * sample's `cpuUsedMillis` is over the time since the one before.
   */
  async statsHistory(name: string, options: { namespace?: string; since?: Date; until?: Date } & ClientCallOptions = {}): Promise<SandboxStats[]> {
    const { call, context } = callOptions(`GetSandboxStatsHistory ${name}`, this.timeoutMs, options);
    const response = await translate(
      () =>
        this.client.getSandboxStatsHistory(
          {
            name,
            namespace: options.namespace ?? "",
            sinceMs: BigInt(options.since ? Math.max(0, options.since.getTime()) : 0),
            untilMs: BigInt(options.until ? Math.max(0, options.until.getTime()) : 0),
          },
          call,
        ),
      context,
    );
    return response.samples.map(sandboxStatsFromMessage);
  }

  /**
   * Every sandbox (of the namespace; `namespace: "*"`: of every namespace), read page by page
   * (`pageSize` at a time, each page a call of its own with its own `requestTimeoutMs`), so the
   * server never holds thousands at once; a server from before pages answers with all of them at once.
   */
  async list(options: ListSandboxesOptions = {}): Promise<Sandbox[]> {
    const { call, context } = callOptions("ListSandboxes", this.timeoutMs, options);
    const pageSize = options.pageSize ?? DEFAULT_LIST_PAGE_SIZE;
    if (!Number.isSafeInteger(pageSize) || pageSize < 1) throw new ValidationError("pageSize", `${String(pageSize)} is not a whole number of sandboxes > 0`);
    const sandboxes: Sandbox[] = [];
    let pageToken = "";
    do {
      const request = { namespace: options.namespace ?? "", pool: options.pool ?? "", pageSize, pageToken };
      const response = await translate(() => this.client.listSandboxes(request, call), context);
      for (const message of response.sandboxes) sandboxes.push(sandboxFromMessage(message));
      if (response.nextPageToken !== "" && response.nextPageToken === pageToken) {
        throw new FsbError("internal", "ListSandboxes answered the page it was asked for as the next one");
      }
      pageToken = response.nextPageToken;
    } while (pageToken !== "");
    return sandboxes;
  }

  async update(
    name: string,
    spec: SandboxSpec,
    options: { namespace?: string; labels?: Record<string, string>; resourceVersion?: string } & ClientCallOptions = {},
  ): Promise<Sandbox> {
    const { call, context } = callOptions(`UpdateSandbox ${name}`, this.timeoutMs, options);
    const message = await translate(
      () =>
        this.client.updateSandbox(
          {
            name,
            namespace: options.namespace ?? "",
            spec: sandboxSpecToMessage(spec),
            labels: options.labels ?? {},
            // Given, the labels are the sandbox's from now on: {} removes them all.
            replaceLabels: options.labels !== undefined,
            resourceVersion: options.resourceVersion ?? "",
          },
          call,
        ),
      context,
    );
    return sandboxFromMessage(message);
  }

  /** Resolves when the sandbox's container, task and snapshot are gone. */
  async delete(name: string, options: { namespace?: string; gracePeriodMs?: number } & ClientCallOptions = {}): Promise<void> {
    const { call, context } = callOptions(`DeleteSandbox ${name}`, this.timeoutMs, options);
    await translate(
      () =>
        this.client.deleteSandbox(
          { name, namespace: options.namespace ?? "", ...(options.gracePeriodMs !== undefined ? { gracePeriodMs: options.gracePeriodMs } : {}) },
          call,
        ),
      context,
    );
  }

  /**
   * Pauses a running sandbox of a gVisor pool: its memory, processes and files are saved as a
   * checkpoint on its node and nothing of it runs — no slot, no address, no end — until `resume`.
   * Returns its record (phase `Paused`). ConflictError when it is paused already;
   * FailedPreconditionError for a sandbox of a runc pool or one that is not Running.
   */
  async pause(name: string, options: { namespace?: string } & ClientCallOptions = {}): Promise<Sandbox> {
    const { call, context } = callOptions(`PauseSandbox ${name}`, this.timeoutMs, options);
    return sandboxFromMessage(await translate(() => this.client.pauseSandbox({ name, namespace: options.namespace ?? "" }, call), context));
  }

  /**
   * Resumes a paused sandbox where it was — same name, sandbox id, hostname and access token, its
   * processes and files as they were, a new address — and returns its Running record; a sandbox that
   * runs is returned as it is. `expireTime` (RFC 3339): when it ends; @default never
   */
  async resume(name: string, options: { namespace?: string; expireTime?: string } & ClientCallOptions = {}): Promise<Sandbox> {
    const { call, context } = callOptions(`ResumeSandbox ${name}`, this.timeoutMs, options);
    return sandboxFromMessage(
      await translate(() => this.client.resumeSandbox({ name, namespace: options.namespace ?? "", expireTime: options.expireTime ?? "" }, call), context),
    );
  }

  /**
   * Where clients reach the sandboxes: the sandbox proxy's base URL (e.g. `http://localhost:7072`),
   * as the control plane knows it.
   */
  async proxyUrl(options: ClientCallOptions = {}): Promise<string> {
    const { call, context } = callOptions("GetSandboxProxy", this.timeoutMs, options);
    return (await translate(() => this.client.getSandboxProxy({}, call), context)).url;
  }

  /**
   * The output of the sandbox's command up to now, or (`follow`) until it exits. `tail`: only the
   * last that many lines of what its log keeps (a whole number ≥ 0, as `kubectl logs --tail`), then
   * (`follow`) what comes; @default all of it. `requestTimeoutMs` bounds the whole read (@default
   * the client's); following, only the wait for the first output — the stream's start — and only
   * when given: a follow then lasts as long as the command runs.
   */
  async *logs(name: string, options: { namespace?: string; follow?: boolean; tail?: number } & ClientCallOptions = {}): AsyncGenerator<Uint8Array> {
    const tail = options.tail === undefined ? {} : { tailLines: checkTailLines(options.tail, "tail") };
    const request = { name, namespace: options.namespace ?? "", follow: options.follow ?? false, ...tail };
    if (!request.follow) {
      const { call, context } = callOptions(`Logs ${name}`, this.timeoutMs, options);
      // A signal of the call's own (see `exec`): a caller that stops reading early ends the stream.
      const own = new StreamStart(options.signal, 0);
      try {
        for await (const chunk of this.client.logs(request, { ...call, signal: own.signal })) yield chunk.data;
      } catch (error) {
        throw callError(error, context);
      } finally {
        own.stop();
      }
      return;
    }
    const timeoutMs = duration(options.requestTimeoutMs ?? 0, "requestTimeoutMs");
    const start = new StreamStart(options.signal, timeoutMs);
    try {
      for await (const chunk of this.client.logs(request, { signal: start.signal })) {
        start.started();
        yield chunk.data;
      }
    } catch (error) {
      if (start.startTimedOut && !options.signal?.aborted) {
        throw new TimeoutError(`Logs ${name} sent nothing within ${timeoutMs} ms (requestTimeoutMs); pass a larger requestTimeoutMs, or 0 for no limit`, {
          cause: error,
        });
      }
      throw callError(error, { what: `Logs ${name}`, signal: options.signal });
    } finally {
      // Ended, or left by the caller: the call is over and the caller's signal let go of (StreamStart).
      start.stop();
    }
  }

  /**
   * Runs a command in the sandbox; resolves with its exit code and collected output. An `onStdout`
   * or `onStderr` that throws ends the call (and the stream) with its own error.
   */
  async exec(name: string, command: string[], options: ExecOptions = {}): Promise<ExecResult> {
    const stdout: Uint8Array[] = [];
    const stderr: Uint8Array[] = [];
    let exitCode: number | undefined;
    // The call's own signal, aborted however the call ends: Connect's server-stream iterable has no
    // return(), so leaving the loop early (a callback's error) would keep the HTTP/2 stream — and the
    // command — until the command ends.
    const own = new StreamStart(options.signal, 0);
    const callback = new CallbackFailure();
    try {
      for await (const event of this.client.exec(
        { name, namespace: options.namespace ?? "", command, envs: options.envs ?? [], workingDir: options.workingDir ?? "", user: options.user ?? "" },
        { signal: own.signal },
      )) {
        switch (event.event.case) {
          // A stream with a callback is handed over, not also kept: output can be larger than memory.
          case "stdout":
            if (options.onStdout) callback.call(options.onStdout, event.event.value);
            else stdout.push(event.event.value);
            break;
          case "stderr":
            if (options.onStderr) callback.call(options.onStderr, event.event.value);
            else stderr.push(event.event.value);
            break;
          case "exitCode":
            exitCode = event.event.value;
            break;
          default:
            break;
        }
      }
    } catch (error) {
      throw callback.failed ? callback.error : callError(error, { what: `Exec in ${name}`, signal: options.signal });
    } finally {
      own.stop();
    }
    if (exitCode === undefined) throw new FsbError("internal", "the exec stream ended without an exit code");
    return { exitCode, stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString() };
  }
}

/** Pools and their agents. */
export class Pools {
  constructor(
    private readonly client: Client<typeof pb.PoolService>,
    private readonly timeoutMs: number,
  ) {}

  async apply(pool: SandboxPool): Promise<SandboxPool> {
    // Through callOptions: a client without a deadline (0) sends none — Connect takes a timeoutMs of 0 as one passed already.
    const { call, context } = callOptions(`ApplySandboxPool ${pool.metadata.name}`, this.timeoutMs, {});
    const message = await translate(
      () => this.client.applySandboxPool({ pool: sandboxPoolToMessage({ ...pool, apiVersion: pool.apiVersion || API_VERSION }) }, call),
      context,
    );
    return sandboxPoolFromMessage(message);
  }

  async get(name: string, options: { namespace?: string } & ClientCallOptions = {}): Promise<SandboxPool> {
    const { call, context } = callOptions(`GetSandboxPool ${name}`, this.timeoutMs, options);
    return sandboxPoolFromMessage(await translate(() => this.client.getSandboxPool({ name, namespace: options.namespace ?? "" }, call), context));
  }

  async list(options: { namespace?: string } = {}): Promise<SandboxPool[]> {
    const { call, context } = callOptions("ListSandboxPools", this.timeoutMs, {});
    const response = await translate(() => this.client.listSandboxPools({ namespace: options.namespace ?? "" }, call), context);
    return response.pools.map(sandboxPoolFromMessage);
  }

  async delete(name: string, options: { namespace?: string } = {}): Promise<void> {
    const { call, context } = callOptions(`DeleteSandboxPool ${name}`, this.timeoutMs, {});
    await translate(() => this.client.deleteSandboxPool({ name, namespace: options.namespace ?? "" }, call), context);
  }

  /**
   * Pulls an image on every ready agent of a pool (no deadline: large images take a while) and
   * resolves with each agent's final report, or fails with the first agent's error after all finished.
   */
  async pullImage(image: string, options: PullImageOptions = {}): Promise<PullProgress[]> {
    const last = new Map<string, PullProgress>();
    // The call's own signal, aborted however it ends (see `Sandboxes.exec`).
    const own = new StreamStart(options.signal, 0);
    const callback = new CallbackFailure();
    try {
      for await (const message of this.client.pullImage({ image, namespace: options.namespace ?? "", pool: options.pool ?? "" }, { signal: own.signal })) {
        const progress: PullProgress = {
          agent: message.agent,
          image: message.image,
          phase: message.phase as PullProgress["phase"],
          layersTotal: message.layersTotal,
          layersDone: message.layersDone,
          bytesTotal: Number(message.bytesTotal),
          bytesDone: Number(message.bytesDone),
          digest: message.digest,
        };
        last.set(progress.agent, progress);
        if (options.onProgress) callback.call(options.onProgress, progress);
      }
    } catch (error) {
      throw callback.failed ? callback.error : callError(error, { what: `PullImage ${image}`, signal: options.signal });
    } finally {
      own.stop();
    }
    return [...last.values()].sort((a, b) => a.agent.localeCompare(b.agent));
  }

  async agents(options: { namespace?: string; pool?: string } = {}): Promise<AgentSummary[]> {
    const { call, context } = callOptions("ListAgents", this.timeoutMs, {});
    const response = await translate(() => this.client.listAgents({ namespace: options.namespace ?? "", pool: options.pool ?? "" }, call), context);
    return response.agents.map((a) => ({
      name: a.name,
      namespace: a.namespace,
      pool: a.pool,
      endpoint: a.endpoint,
      capacity: a.capacity,
      allocated: a.allocated,
      images: a.images,
      ...(a.pid ? { pid: a.pid } : {}),
      ready: a.ready,
      usedPorts: a.usedPorts,
      ...(a.nodeName ? { nodeName: a.nodeName } : {}),
    }));
  }
}

/** A new E2B API key and where E2B's SDKs use it: the values of E2B_API_KEY, E2B_API_URL and E2B_SANDBOX_URL. */
export interface E2bApiKey {
  /** `e2b_` and 40 lower-case hex digits; told only here (the control plane keeps its hash). */
  apiKey: string;
  /** The E2B-compatible control API, e.g. `http://127.0.0.1:7073`. */
  apiUrl: string;
  /** The sandbox proxy, where E2B's SDKs send in-sandbox traffic, e.g. `http://127.0.0.1:7072`. */
  sandboxUrl: string;
}

/** The E2B-compatible API: keys for E2B's own SDKs. */
export class E2b {
  constructor(
    private readonly client: Client<typeof pb.E2bService>,
    private readonly timeoutMs: number,
  ) {}

  /** Issues a new API key (the only time it is told) with the URLs E2B's SDKs need. */
  async createApiKey(options: ClientCallOptions = {}): Promise<E2bApiKey> {
    const { call, context } = callOptions("CreateApiKey", this.timeoutMs, options);
    const response = await translate(() => this.client.createApiKey({}, call), context);
    return { apiKey: response.apiKey, apiUrl: response.apiUrl, sandboxUrl: response.sandboxUrl };
  }

  /** Revokes an API key `createApiKey` issued: whether there was such a key (false: none, or revoked already). */
  async revokeApiKey(apiKey: string, options: ClientCallOptions = {}): Promise<boolean> {
    const { call, context } = callOptions("RevokeApiKey", this.timeoutMs, options);
    const response = await translate(() => this.client.revokeApiKey({ apiKey }, call), context);
    return response.revoked;
  }
}

/** One connection to a Fast Sandbox control plane, with sub-clients `sandboxes`, `checkpoints`, `pools` and `e2b`. */
export class FastSandboxClient {
  readonly sandboxes: Sandboxes;
  /** Checkpoints, restores and forks of sandboxes in gVisor pools. */
  readonly checkpoints: Checkpoints;
  readonly pools: Pools;
  readonly e2b: E2b;
  readonly url: string;
  private sessions: Http2SessionManager | undefined;

  constructor(options: FastSandboxClientOptions = {}) {
    let transport: Transport;
    if (options.transport) {
      this.url = options.url ?? fromEnv("FSB_URL") ?? "in-memory:";
      transport = options.transport;
    } else {
      const { url, token, tokenFile } = requireControlPlaneAddress(options, new EmbeddedInstance(options.dataDir ?? defaultDataDir()));
      this.url = url;
      transport = this.connectTransport(url, tokenFile ? () => tokenFile.current() : token, options);
    }
    const timeoutMs = duration(options.requestTimeoutMs ?? 60_000, "requestTimeoutMs");
    this.sandboxes = new Sandboxes(createClient(pb.SandboxService, transport), timeoutMs);
    this.checkpoints = new Checkpoints(createClient(pb.SandboxService, transport), timeoutMs);
    this.pools = new Pools(createClient(pb.PoolService, transport), timeoutMs);
    this.e2b = new E2b(createClient(pb.E2bService, transport), timeoutMs);
  }

  private connectTransport(url: string, token: string | (() => string), options: FastSandboxClientOptions): Transport {
    const interceptors = [sendBearerToken(token)];
    let transport: Transport;
    if ((options.httpVersion ?? "2") === "2") {
      checkDuration(options.pingIntervalMs, "pingIntervalMs");
      checkDuration(options.pingTimeoutMs, "pingTimeoutMs");
      // connect-node pings only with pingIntervalMs, and only while streams are open: enough to find a
      // dead peer under a call, without keeping an idle connection (or the process) busy.
      const pingIntervalMs = options.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS;
      this.sessions = new Http2SessionManager(url, {
        idleConnectionTimeoutMs: 30_000,
        ...(pingIntervalMs > 0 ? { pingIntervalMs, pingTimeoutMs: options.pingTimeoutMs || DEFAULT_PING_TIMEOUT_MS } : {}),
      });
      transport = createConnectTransport({ baseUrl: url, httpVersion: "2", interceptors, sessionManager: guardSessionErrors(this.sessions) });
    } else {
      transport = createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors });
    }
    return transport;
  }

  /** Closes the connection (calls in flight fail); the process may then exit. */
  close(): void {
    this.sessions?.abort();
  }
}
