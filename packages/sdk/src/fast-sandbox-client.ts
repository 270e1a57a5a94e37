import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { Http2SessionManager, createConnectTransport } from "@connectrpc/connect-node";
import {
  ACCESS_TOKEN_RESPONSE_HEADER,
  API_VERSION,
  FsbError,
  ValidationError,
  fromConnectError,
  pb,
  sandboxFromMessage,
  sandboxPoolFromMessage,
  sandboxPoolToMessage,
  sandboxSpecToMessage,
  sendBearerToken,
  type EgressPolicy,
  type EnvVar,
  type Sandbox,
  type SandboxPool,
  type SandboxSpec,
} from "@fast-sandbox/api";

export interface FastSandboxClientOptions {
  /** Base URL of the control plane, e.g. `http://127.0.0.1:7070`. Falls back to `FSB_URL`. */
  url?: string;
  /** Bearer token. Falls back to `FSB_TOKEN`. */
  token?: string;
  /** Deadline of unary calls. @default 60000 */
  requestTimeoutMs?: number;
  /** HTTP version of the connection. @default "2" */
  httpVersion?: "1.1" | "2";
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
  /** Makes retries idempotent: the same id returns the sandbox the first attempt created. */
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

function envList(envs: CreateSandboxOptions["envs"]): EnvVar[] | undefined {
  if (!envs) return undefined;
  return Array.isArray(envs) ? envs : Object.entries(envs).map(([name, value]) => ({ name, value }));
}

async function translate<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw fromConnectError(error);
  }
}

/** Sandboxes: create, inspect, run commands in, delete. */
export class Sandboxes {
  constructor(
    private readonly client: Client<typeof pb.SandboxService>,
    private readonly timeoutMs: number,
  ) {}

  async create(options: CreateSandboxOptions): Promise<CreatedSandbox> {
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
    let accessToken = "";
    const message = await translate(() =>
      this.client.createSandbox(
        {
          namespace: options.namespace ?? "",
          name: options.name ?? "",
          spec: sandboxSpecToMessage(spec),
          labels: options.labels ?? {},
          requestId: options.requestId ?? "",
        },
        {
          timeoutMs: this.timeoutMs,
          ...(options.signal ? { signal: options.signal } : {}),
          onHeader: (headers) => (accessToken = headers.get(ACCESS_TOKEN_RESPONSE_HEADER) ?? ""),
        },
      ),
    );
    return { ...sandboxFromMessage(message), accessToken };
  }

  /**
   * Gives the sandbox a new access token and returns it (the only time it is told); the previous
   * token stops working at once.
   */
  async rotateAccessToken(name: string, options: { namespace?: string } = {}): Promise<{ accessToken: string; sandbox: Sandbox }> {
    const response = await translate(() => this.client.rotateAccessToken({ name, namespace: options.namespace ?? "" }, { timeoutMs: this.timeoutMs }));
    if (!response.sandbox) throw new FsbError("internal", "RotateAccessToken answered without the sandbox");
    return { accessToken: response.accessToken, sandbox: sandboxFromMessage(response.sandbox) };
  }

  async get(name: string, options: { namespace?: string } = {}): Promise<Sandbox> {
    return sandboxFromMessage(await translate(() => this.client.getSandbox({ name, namespace: options.namespace ?? "" }, { timeoutMs: this.timeoutMs })));
  }

  /** `namespace: "*"` lists every namespace. */
  async list(options: { namespace?: string; pool?: string } = {}): Promise<Sandbox[]> {
    const response = await translate(() =>
      this.client.listSandboxes({ namespace: options.namespace ?? "", pool: options.pool ?? "" }, { timeoutMs: this.timeoutMs }),
    );
    return response.sandboxes.map(sandboxFromMessage);
  }

  async update(
    name: string,
    spec: SandboxSpec,
    options: { namespace?: string; labels?: Record<string, string>; resourceVersion?: string } = {},
  ): Promise<Sandbox> {
    const message = await translate(() =>
      this.client.updateSandbox(
        {
          name,
          namespace: options.namespace ?? "",
          spec: sandboxSpecToMessage(spec),
          labels: options.labels ?? {},
          resourceVersion: options.resourceVersion ?? "",
        },
        { timeoutMs: this.timeoutMs },
      ),
    );
    return sandboxFromMessage(message);
  }

  /** Resolves when the sandbox's container, task and snapshot are gone. */
  async delete(name: string, options: { namespace?: string; gracePeriodMs?: number } = {}): Promise<void> {
    await translate(() =>
      this.client.deleteSandbox(
        { name, namespace: options.namespace ?? "", ...(options.gracePeriodMs !== undefined ? { gracePeriodMs: options.gracePeriodMs } : {}) },
        { timeoutMs: this.timeoutMs },
      ),
    );
  }

  async *logs(name: string, options: { namespace?: string; follow?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
    try {
      for await (const chunk of this.client.logs(
        { name, namespace: options.namespace ?? "", follow: options.follow ?? false },
        options.signal ? { signal: options.signal } : {},
      )) {
        yield chunk.data;
      }
    } catch (error) {
      throw fromConnectError(error);
    }
  }

  /** Runs a command in the sandbox; resolves with its exit code and collected output. */
  async exec(name: string, command: string[], options: ExecOptions = {}): Promise<ExecResult> {
    const stdout: Uint8Array[] = [];
    const stderr: Uint8Array[] = [];
    let exitCode: number | undefined;
    try {
      for await (const event of this.client.exec(
        { name, namespace: options.namespace ?? "", command, envs: options.envs ?? [], workingDir: options.workingDir ?? "" },
        options.signal ? { signal: options.signal } : {},
      )) {
        switch (event.event.case) {
          // A stream with a callback is handed over, not also kept: output can be larger than memory.
          case "stdout":
            if (options.onStdout) options.onStdout(event.event.value);
            else stdout.push(event.event.value);
            break;
          case "stderr":
            if (options.onStderr) options.onStderr(event.event.value);
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
      throw fromConnectError(error);
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
    const message = await translate(() =>
      this.client.applySandboxPool({ pool: sandboxPoolToMessage({ ...pool, apiVersion: pool.apiVersion || API_VERSION }) }, { timeoutMs: this.timeoutMs }),
    );
    return sandboxPoolFromMessage(message);
  }

  async get(name: string, options: { namespace?: string } = {}): Promise<SandboxPool> {
    return sandboxPoolFromMessage(
      await translate(() => this.client.getSandboxPool({ name, namespace: options.namespace ?? "" }, { timeoutMs: this.timeoutMs })),
    );
  }

  async list(options: { namespace?: string } = {}): Promise<SandboxPool[]> {
    const response = await translate(() => this.client.listSandboxPools({ namespace: options.namespace ?? "" }, { timeoutMs: this.timeoutMs }));
    return response.pools.map(sandboxPoolFromMessage);
  }

  async delete(name: string, options: { namespace?: string } = {}): Promise<void> {
    await translate(() => this.client.deleteSandboxPool({ name, namespace: options.namespace ?? "" }, { timeoutMs: this.timeoutMs }));
  }

  /**
   * Pulls an image on every ready agent of a pool (no deadline: large images take a while) and
   * resolves with each agent's final report, or fails with the first agent's error after all finished.
   */
  async pullImage(image: string, options: PullImageOptions = {}): Promise<PullProgress[]> {
    const last = new Map<string, PullProgress>();
    try {
      for await (const message of this.client.pullImage(
        { image, namespace: options.namespace ?? "", pool: options.pool ?? "" },
        options.signal ? { signal: options.signal } : {},
      )) {
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
        options.onProgress?.(progress);
      }
    } catch (error) {
      throw fromConnectError(error);
    }
    return [...last.values()].sort((a, b) => a.agent.localeCompare(b.agent));
  }

  async agents(options: { namespace?: string; pool?: string } = {}): Promise<AgentSummary[]> {
    const response = await translate(() =>
      this.client.listAgents({ namespace: options.namespace ?? "", pool: options.pool ?? "" }, { timeoutMs: this.timeoutMs }),
    );
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

/** One connection to a Fast Sandbox control plane, with sub-clients `sandboxes` and `pools`. */
export class FastSandboxClient {
  readonly sandboxes: Sandboxes;
  readonly pools: Pools;
  readonly url: string;
  private readonly sessions: Http2SessionManager | undefined;

  constructor(options: FastSandboxClientOptions = {}) {
    const url = options.url ?? process.env.FSB_URL;
    const token = options.token ?? process.env.FSB_TOKEN;
    if (!url) throw new ValidationError("url", "no control plane address: pass `url` or set FSB_URL (fsb up prints it)");
    if (!token) throw new ValidationError("token", "no token: pass `token` or set FSB_TOKEN (fsb up stores it in its data directory)");
    this.url = url;
    const interceptors = [sendBearerToken(token)];
    let transport: Transport;
    if ((options.httpVersion ?? "2") === "2") {
      this.sessions = new Http2SessionManager(url, { idleConnectionTimeoutMs: 30_000 });
      transport = createConnectTransport({ baseUrl: url, httpVersion: "2", interceptors, sessionManager: this.sessions });
    } else {
      transport = createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors });
    }
    const timeoutMs = options.requestTimeoutMs ?? 60_000;
    this.sandboxes = new Sandboxes(createClient(pb.SandboxService, transport), timeoutMs);
    this.pools = new Pools(createClient(pb.PoolService, transport), timeoutMs);
  }

  /** Closes the connection (calls in flight fail); the process may then exit. */
  close(): void {
    this.sessions?.abort();
  }
}
