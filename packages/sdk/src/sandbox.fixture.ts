/**
 * In-memory stand-ins for the SDK's unit specs, with no sockets: a control plane serving the
 * fast-path calls the SDK makes (Connect's `createRouterTransport`), and an in-sandbox daemon —
 * `process.Process`, `filesystem.Filesystem` and the plain-HTTP `/files` and `/health` — whose
 * processes are programs the spec writes in TypeScript and whose filesystem is a map.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createRouterTransport, type HandlerContext, type Interceptor, type ServiceImpl, type Transport } from "@connectrpc/connect";
import {
  API_VERSION,
  AsyncQueue,
  ConflictError,
  NotFoundError,
  pb,
  sandboxPoolToMessage,
  sandboxSpecFromMessage,
  sandboxToMessage,
  toConnectError,
  type Sandbox,
} from "@fast-sandbox/api";
import type { DaemonChannel, DaemonTarget } from "./daemon-channel.js";
import {
  EntryInfoSchema,
  EventType,
  FileType,
  Filesystem,
  FilesystemEventSchema,
  type EntryInfo as EntryInfoMessage,
} from "./gen/envd/filesystem/filesystem_pb.js";
import { Process, ProcessEventSchema, Signal, type ProcessEvent, type ProcessSelector } from "./gen/envd/process/process_pb.js";

export const PROXY_URL = "http://proxy.test:7072";
/** The sandbox proxy's code beside its 502 for an instance id it does not know (proxy-target.ts). */
const UNKNOWN_INSTANCE_HEADERS = new Headers({ "fsb-error-code": "not_found" });
export const FIRST_SANDBOX_ID = "k3x9q0m2zt7c1w8r5bn4";

/** A fast-path control plane holding sandboxes in a map. */
export class FakeControlPlane {
  readonly sandboxes = new Map<string, Sandbox>();
  /** UpdateSandbox calls to refuse with a conflict before one is applied (a concurrent writer). */
  conflictsToInject = 0;
  readonly updates: Sandbox["spec"][] = [];
  readonly deletes: string[] = [];
  readonly creates: pb.CreateSandboxRequest[] = [];
  logs: Uint8Array[] = [];
  /** The Logs requests, as received. */
  readonly logsRequests: pb.LogsRequest[] = [];
  /** How long Logs waits before each chunk of `logs` (by index; none when missing): an output that comes late. */
  logDelaysMs: number[] = [];
  proxyUrl = PROXY_URL;
  proxyUrlQuestions = 0;
  /** GetSandboxProxy answers once this settles (a slow control plane). @default at once */
  proxyUrlAnswered: Promise<void> = Promise.resolve();
  readonly transport: Transport;

  constructor() {
    this.transport = createRouterTransport(({ service }) => {
      service(pb.SandboxService, this.sandboxService());
      service(pb.PoolService, {
        getSandboxPool: (request) =>
          sandboxPoolToMessage({
            apiVersion: API_VERSION,
            kind: "SandboxPool",
            metadata: { name: request.name, namespace: request.namespace || "default" },
            spec: { capacity: { poolMin: 1, poolMax: 1 }, maxSandboxesPerPod: 4, image: "fast-sandbox.io/base:latest" },
          }),
      });
    });
  }

  /** The stored record of a sandbox. */
  sandbox(name: string, namespace = "default"): Sandbox {
    const sandbox = this.sandboxes.get(`${namespace}/${name}`);
    if (!sandbox) throw new Error(`no sandbox ${namespace}/${name} in the fake`);
    return sandbox;
  }

  /** Adds a sandbox as if another client had made it. */
  add(name: string, sandboxID: string): Sandbox {
    const sandbox: Sandbox = {
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: { name, namespace: "default", resourceVersion: "1" },
      spec: { image: "fast-sandbox.io/base:latest", poolRef: "default" },
      status: { phase: "Running", sandboxID },
    };
    this.sandboxes.set(`default/${name}`, sandbox);
    return sandbox;
  }

  private find(namespace: string, name: string): Sandbox {
    const sandbox = this.sandboxes.get(`${namespace || "default"}/${name}`);
    if (!sandbox) throw toConnectError(new NotFoundError(`sandbox ${namespace || "default"}/${name} not found`));
    return sandbox;
  }

  private sandboxService(): Partial<ServiceImpl<typeof pb.SandboxService>> {
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the streaming handlers are generator functions
    const plane = this;
    return {
      createSandbox: (request, context) => {
        this.creates.push(request);
        const name = request.name || `sb-${String(this.sandboxes.size + 1).padStart(10, "0")}`;
        const namespace = request.namespace || "default";
        const sandbox: Sandbox = {
          apiVersion: API_VERSION,
          kind: "Sandbox",
          metadata: { name, namespace, resourceVersion: "1", ...(Object.keys(request.labels).length > 0 ? { labels: request.labels } : {}) },
          spec: sandboxSpecFromMessage(request.spec),
          status: {
            phase: "Running",
            sandboxID: this.sandboxes.size === 0 ? FIRST_SANDBOX_ID : `${FIRST_SANDBOX_ID.slice(0, 16)}${String(this.sandboxes.size).padStart(4, "0")}`,
          },
        };
        this.sandboxes.set(`${namespace}/${name}`, sandbox);
        context.responseHeader.set("fsb-access-token", `token-of-${name}`);
        return sandboxToMessage(sandbox);
      },
      getSandbox: (request) => sandboxToMessage(this.find(request.namespace, request.name)),
      listSandboxes: (request) =>
        create(pb.ListSandboxesResponseSchema, {
          sandboxes: [...this.sandboxes.values()].filter((s) => s.metadata.namespace === (request.namespace || "default")).map(sandboxToMessage),
        }),
      updateSandbox: (request) => {
        const current = this.find(request.namespace, request.name);
        if (this.conflictsToInject > 0) {
          this.conflictsToInject--;
          // Someone else wrote in between: the version moves on.
          current.metadata.resourceVersion = String(Number(current.metadata.resourceVersion) + 1);
          throw toConnectError(new ConflictError("the sandbox changed since it was read"));
        }
        if (request.resourceVersion && request.resourceVersion !== current.metadata.resourceVersion) {
          throw toConnectError(new ConflictError(`resourceVersion ${request.resourceVersion} is stale`));
        }
        const spec = sandboxSpecFromMessage(request.spec);
        this.updates.push(spec);
        const updated: Sandbox = { ...current, spec, metadata: { ...current.metadata, resourceVersion: String(Number(current.metadata.resourceVersion) + 1) } };
        this.sandboxes.set(`${request.namespace || "default"}/${request.name}`, updated);
        return sandboxToMessage(updated);
      },
      deleteSandbox: (request) => {
        this.find(request.namespace, request.name);
        this.sandboxes.delete(`${request.namespace || "default"}/${request.name}`);
        this.deletes.push(request.name);
        return create(pb.DeleteSandboxResponseSchema, {});
      },
      logs: async function* (request, context) {
        plane.logsRequests.push(request);
        plane.find(request.namespace, request.name);
        for (const [index, data] of plane.logs.entries()) {
          const delayMs = plane.logDelaysMs[index] ?? 0;
          if (delayMs > 0) await sleep(delayMs, undefined, { signal: context.signal });
          yield create(pb.LogsResponseSchema, { data });
        }
      },
      rotateAccessToken: (request) => {
        const sandbox = this.find(request.namespace, request.name);
        return create(pb.RotateAccessTokenResponseSchema, { accessToken: `rotated-token-of-${request.name}`, sandbox: sandboxToMessage(sandbox) });
      },
      getSandboxProxy: async () => {
        this.proxyUrlQuestions++;
        await this.proxyUrlAnswered;
        return create(pb.GetSandboxProxyResponseSchema, { url: this.proxyUrl });
      },
    };
  }
}

/** What a program in the fake daemon sees of its process. */
export interface FakeProcessIO {
  readonly pid: number;
  readonly envs: Record<string, string>;
  readonly cwd: string | undefined;
  /** The Linux user of Basic authorization ("" for the default user). */
  readonly user: string;
  /** Its terminal's size (undefined without a terminal). */
  readonly ptySize: { cols: number; rows: number } | undefined;
  stdout(text: string | Uint8Array): void;
  stderr(text: string | Uint8Array): void;
  /** Terminal output. */
  output(text: string | Uint8Array): void;
  /** A keepalive on its streams, as the daemon sends on an idle one. */
  keepalive(): void;
  /** Its input (stdin or the terminal's), chunk by chunk, until stdin closes or it ends. */
  input(): AsyncIterable<Uint8Array>;
  /** Resolves when SIGKILL arrives (the process has ended as killed then). */
  readonly killed: Promise<void>;
  /** Resolves with the next size of its terminal. */
  nextResize(): Promise<{ cols: number; rows: number }>;
}

/** A process's behaviour; resolves with its exit code. A process killed meanwhile ended as killed. */
export type FakeProgram = (io: FakeProcessIO) => Promise<number>;

type End = { exitCode: number; exited: boolean; status: string; error?: string };

class FakeProcess implements FakeProcessIO {
  readonly subscribers = new Set<AsyncQueue<ProcessEvent>>();
  readonly inputQueue = new AsyncQueue<Uint8Array>();
  stdinOpen: boolean;
  end: End | undefined;
  readonly killed: Promise<void>;
  private markKilled: () => void = () => undefined;
  private readonly resizes = new AsyncQueue<{ cols: number; rows: number }>();
  private readonly resizeIterator = this.resizes[Symbol.asyncIterator]();

  constructor(
    readonly pid: number,
    readonly config: { cmd: string; args: string[]; envs: Record<string, string>; cwd?: string },
    readonly user: string,
    public ptySize: { cols: number; rows: number } | undefined,
    stdin: boolean,
    readonly tag: string | undefined,
  ) {
    this.stdinOpen = stdin || ptySize !== undefined;
    this.killed = new Promise((resolve) => (this.markKilled = resolve));
  }

  get envs(): Record<string, string> {
    return this.config.envs;
  }

  get cwd(): string | undefined {
    return this.config.cwd;
  }

  subscribe(): AsyncQueue<ProcessEvent> {
    const queue = new AsyncQueue<ProcessEvent>();
    if (this.end) {
      queue.push(create(ProcessEventSchema, { event: { case: "end", value: this.end } }));
      queue.end();
    } else {
      this.subscribers.add(queue);
    }
    return queue;
  }

  private emit(event: ProcessEvent): void {
    for (const subscriber of this.subscribers) subscriber.push(event);
  }

  private data(kind: "stdout" | "stderr" | "pty", text: string | Uint8Array): void {
    if (this.end) return;
    const value = typeof text === "string" ? new TextEncoder().encode(text) : text;
    this.emit(create(ProcessEventSchema, { event: { case: "data", value: { output: { case: kind, value } } } }));
  }

  stdout(text: string | Uint8Array): void {
    this.data("stdout", text);
  }

  stderr(text: string | Uint8Array): void {
    this.data("stderr", text);
  }

  output(text: string | Uint8Array): void {
    this.data("pty", text);
  }

  keepalive(): void {
    if (!this.end) this.emit(create(ProcessEventSchema, { event: { case: "keepalive", value: {} } }));
  }

  input(): AsyncIterable<Uint8Array> {
    return this.inputQueue;
  }

  async nextResize(): Promise<{ cols: number; rows: number }> {
    const next = await this.resizeIterator.next();
    if (next.done) throw new Error("the process ended before a resize");
    return next.value;
  }

  resize(size: { cols: number; rows: number }): void {
    this.ptySize = size;
    this.resizes.push(size);
  }

  kill(): void {
    this.finish({ exitCode: -1, exited: false, status: "signal: killed", error: "signal: killed" });
    this.markKilled();
  }

  finish(end: End): void {
    if (this.end) return;
    this.end = end;
    this.inputQueue.end();
    this.resizes.end();
    this.emit(create(ProcessEventSchema, { event: { case: "end", value: end } }));
    for (const subscriber of this.subscribers) subscriber.end();
    this.subscribers.clear();
  }
}

interface FakeEntry {
  kind: "file" | "dir";
  /** Permission bits as an upload's `mode` set them; 0o755 for a directory, 0o644 for a file otherwise. */
  mode?: number;
  data: Uint8Array;
  modified: Date;
}

interface Watcher {
  path: string;
  recursive: boolean;
  queue: AsyncQueue<{ name: string; type: EventType }>;
}

/** The in-sandbox daemon of one sandbox, in memory. */
export class FakeDaemon {
  readonly programs = new Map<string, FakeProgram>();
  readonly processes = new Map<number, FakeProcess>();
  /** Every request's procedure or method and path, with its headers. */
  readonly requests: { what: string; headers: Headers }[] = [];
  /** The targets channels were made for. */
  readonly targets: DaemonTarget[] = [];
  readonly entries = new Map<string, FakeEntry>([
    ["/", { kind: "dir", data: new Uint8Array(), modified: new Date(0) }],
    ["/tmp", { kind: "dir", data: new Uint8Array(), modified: new Date(0) }],
    ["/root", { kind: "dir", data: new Uint8Array(), modified: new Date(0) }],
  ]);
  /** The sandbox is gone: the proxy answers 502 to everything. */
  gone = false;
  /**
   * Instance ids the sandbox proxy does not know (deleted, expired, or replaced by a reset): it answers
   * their requests as the real one does, 502 with `fsb-error-code: not_found`.
   */
  readonly unknownInstances = new Set<string>();
  /** Delay before each answer, in ms (to make requests time out). */
  answerDelayMs = 0;
  /** How long Start's start event takes once the process started (an event in flight when the caller gives up). */
  startEventDelayMs = 0;
  /** A download's body comes in parts of this many bytes, `downloadPartDelayMs` apart. @default all at once */
  downloadPartBytes = 0;
  downloadPartDelayMs = 0;
  /** How much sooner than Connect-Timeout-Ms says the daemon kills a process (its clock runs ahead of the client's). */
  killEarlierMs = 0;
  /** How many `GET /health` get the proxy's 502 for a port nothing listens on yet (a daemon starting). */
  startingHealthAnswers = 0;
  /** Requests that named a user other than these fail as the daemon fails an unknown user. */
  readonly users = new Set(["", "root", "user"]);
  private nextPid = 100;
  private readonly watchers = new Set<Watcher>();
  readonly transport: Transport;

  constructor() {
    this.transport = this.transportTo(undefined);
  }

  /** The daemon's services, as the proxy passes them on to the instance `sandboxId` (any: undefined). */
  private transportTo(sandboxId: string | undefined): Transport {
    const record: Interceptor = (next) => async (request) => {
      this.requests.push({ what: `${request.service.typeName}/${request.method.name}`, headers: request.header });
      if (this.answerDelayMs > 0) await delay(this.answerDelayMs, request.signal);
      if (this.gone) throw new ConnectError("HTTP 502", Code.Unavailable);
      if (sandboxId !== undefined && this.unknownInstances.has(sandboxId)) throw new ConnectError("HTTP 502", Code.Unavailable, UNKNOWN_INSTANCE_HEADERS);
      const user = basicUser(request.header.get("authorization"));
      if (!this.users.has(user)) throw new ConnectError(`user ${JSON.stringify(user)} does not exist in the sandbox`, Code.Unauthenticated);
      return next(request);
    };
    return createRouterTransport(
      ({ service }) => {
        service(Process, this.processService());
        service(Filesystem, this.filesystemService());
      },
      { router: { interceptors: [record] } },
    );
  }

  /** A channel factory for `Connection`'s `daemon` option. */
  readonly factory = (target: DaemonTarget): DaemonChannel => {
    this.targets.push(target);
    return {
      transport: this.transportTo(target.sandboxId),
      fetch: async (path, init) => {
        if (!this.unknownInstances.has(target.sandboxId)) return this.fetch(path, init);
        this.requests.push({ what: `${init?.method ?? "GET"} ${new URL(path, PROXY_URL).pathname}`, headers: new Headers(init?.headers) });
        return new Response(JSON.stringify({ sandboxId: target.sandboxId, message: "The sandbox was not found", code: 502 }), {
          status: 502,
          headers: { "content-type": "application/json", ...Object.fromEntries(UNKNOWN_INSTANCE_HEADERS) },
        });
      },
    };
  };

  /** Defines what running `command` does: a `bash -c` command line, or a program and its arguments joined by spaces. */
  define(command: string, program: FakeProgram): void {
    this.programs.set(command, program);
  }

  /** Kills what still runs (a spec's clean-up: the in-memory transport does not tell handlers of clients that went away). */
  killAll(): void {
    for (const process of this.processes.values()) process.kill();
  }

  /** The text of a file, or undefined. */
  file(path: string): string | undefined {
    const entry = this.entries.get(path);
    return entry?.kind === "file" ? new TextDecoder().decode(entry.data) : undefined;
  }

  writeFile(path: string, data: Uint8Array | string, mode?: number): void {
    this.mkdirs(parentOf(path));
    const existed = this.entries.get(path);
    this.entries.set(path, {
      kind: "file",
      data: typeof data === "string" ? new TextEncoder().encode(data) : data,
      modified: new Date(),
      ...((mode ?? existed?.mode) !== undefined ? { mode: mode ?? existed?.mode } : {}),
    });
    this.notify(path, existed ? EventType.WRITE : EventType.CREATE);
  }

  // --- process.Process ---

  private processService(): ServiceImpl<typeof Process> {
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the streaming handlers are generator functions
    const daemon = this;
    return {
      async *start(request, context) {
        const config = request.process;
        if (!config?.cmd) throw new ConnectError("process.cmd is required", Code.InvalidArgument);
        const command =
          config.cmd === "/bin/bash" && config.args[0] === "-l" && config.args[1] === "-c" ? (config.args[2] ?? "") : [config.cmd, ...config.args].join(" ");
        const program = daemon.programs.get(command);
        if (!program) throw new ConnectError(`exec: ${JSON.stringify(config.cmd)}: executable file not found in $PATH (${command})`, Code.InvalidArgument);
        const pid = daemon.nextPid++;
        const size = request.pty?.size;
        const process = new FakeProcess(
          pid,
          { cmd: config.cmd, args: config.args, envs: config.envs, ...(config.cwd !== undefined ? { cwd: config.cwd } : {}) },
          basicUser(context.requestHeader.get("authorization")),
          size ? { cols: size.cols, rows: size.rows } : undefined,
          request.stdin ?? true,
          request.tag,
        );
        daemon.processes.set(pid, process);
        const events = process.subscribe();
        // As the real daemon does with Connect-Timeout-Ms: the process is killed at the deadline.
        const timeoutMs = context.timeoutMs();
        // Unreferenced: a process a spec left running does not keep the spec's process alive.
        const timer = timeoutMs !== undefined ? setTimeout(() => process.kill(), Math.max(0, timeoutMs - daemon.killEarlierMs)).unref() : undefined;
        void process.killed.then(() => clearTimeout(timer));
        program(process).then(
          (exitCode) => {
            clearTimeout(timer);
            process.finish({ exitCode, exited: true, status: `exit status ${exitCode}` });
          },
          (error: unknown) => process.finish({ exitCode: 1, exited: true, status: "exit status 1", error: String(error) }),
        );
        if (daemon.startEventDelayMs > 0) await delay(daemon.startEventDelayMs);
        yield { event: create(ProcessEventSchema, { event: { case: "start", value: { pid } } }) };
        yield { event: create(ProcessEventSchema, { event: { case: "keepalive", value: {} } }) };
        yield* daemon.relay(events, context);
      },
      async *connect(request, context) {
        const process = daemon.find(request.process);
        const events = process.subscribe();
        yield { event: create(ProcessEventSchema, { event: { case: "start", value: { pid: process.pid } } }) };
        yield* daemon.relay(events, context);
      },
      list: () => ({
        processes: [...daemon.processes.values()].filter((p) => !p.end).map((p) => ({ pid: p.pid, config: p.config, ...(p.tag ? { tag: p.tag } : {}) })),
      }),
      sendInput: (request) => {
        const process = daemon.find(request.process);
        const input = request.input?.input;
        if (input?.case === "pty" && !process.ptySize) throw new ConnectError(`process ${process.pid} has no terminal`, Code.FailedPrecondition);
        if (input?.case === "stdin" && process.ptySize) throw new ConnectError(`process ${process.pid} has a terminal`, Code.FailedPrecondition);
        if (!process.stdinOpen) throw new ConnectError(`the stdin of process ${process.pid} is not open`, Code.FailedPrecondition);
        if (input?.value) process.inputQueue.push(input.value);
        return {};
      },
      closeStdin: (request) => {
        const process = daemon.find(request.process);
        process.stdinOpen = false;
        process.inputQueue.end();
        return {};
      },
      sendSignal: (request) => {
        const process = daemon.find(request.process);
        if (request.signal !== Signal.SIGKILL && request.signal !== Signal.SIGTERM)
          throw new ConnectError("give SIGNAL_SIGTERM or SIGNAL_SIGKILL", Code.InvalidArgument);
        process.kill();
        return {};
      },
      update: (request) => {
        const process = daemon.find(request.process);
        if (!process.ptySize) throw new ConnectError(`process ${process.pid} has no terminal`, Code.FailedPrecondition);
        const size = request.pty?.size;
        if (!size || size.cols < 1 || size.rows < 1) throw new ConnectError("pty.size needs cols and rows between 1 and 65535", Code.InvalidArgument);
        process.resize({ cols: size.cols, rows: size.rows });
        return {};
      },
      streamInput: () => {
        throw new ConnectError("the SDK does not use StreamInput", Code.Unimplemented);
      },
    };
  }

  private async *relay(events: AsyncQueue<ProcessEvent>, context: HandlerContext): AsyncGenerator<{ event: ProcessEvent }> {
    const stop = () => events.end();
    context.signal.addEventListener("abort", stop);
    try {
      for await (const event of events) yield { event };
    } finally {
      context.signal.removeEventListener("abort", stop);
    }
  }

  private find(selector: ProcessSelector | undefined): FakeProcess {
    if (selector?.selector.case !== "pid") throw new ConnectError("select the process by pid", Code.InvalidArgument);
    const process = this.processes.get(selector.selector.value);
    if (!process || process.end) throw new ConnectError(`process with pid ${selector.selector.value} not found`, Code.NotFound);
    return process;
  }

  // --- filesystem.Filesystem ---

  private filesystemService(): ServiceImpl<typeof Filesystem> {
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the streaming handler is a generator function
    const daemon = this;
    return {
      stat: (request) => ({ entry: this.entryOf(this.existing(request.path)) }),
      makeDir: (request) => {
        const path = absolute(request.path);
        if (this.entries.has(path)) throw new ConnectError(`${path} already exists`, Code.AlreadyExists);
        this.mkdirs(path);
        return { entry: this.entryOf(path) };
      },
      move: (request) => {
        const source = this.existing(request.source);
        const destination = absolute(request.destination);
        for (const [path, entry] of [...this.entries]) {
          if (path === source || path.startsWith(`${source}/`)) {
            this.entries.delete(path);
            this.entries.set(destination + path.slice(source.length), entry);
          }
        }
        this.notify(source, EventType.RENAME);
        this.notify(destination, EventType.CREATE);
        return { entry: this.entryOf(destination) };
      },
      listDir: (request) => {
        const path = this.existing(request.path);
        if (this.entries.get(path)?.kind !== "dir") throw new ConnectError(`${path} is not a directory`, Code.InvalidArgument);
        const depth = request.depth || 1;
        const entries = [...this.entries.keys()]
          .filter((p) => p !== path && p.startsWith(path === "/" ? "/" : `${path}/`))
          .filter((p) => p.slice(path.length).split("/").filter(Boolean).length <= depth)
          .sort()
          .map((p) => this.entryOf(p));
        return { entries };
      },
      remove: (request) => {
        // As the daemon does: what is not there is removed already.
        const path = absolute(request.path);
        if (!this.entries.has(path)) return {};
        for (const p of [...this.entries.keys()]) if (p === path || p.startsWith(`${path}/`)) this.entries.delete(p);
        this.notify(path, EventType.REMOVE);
        return {};
      },
      async *watchDir(request, context) {
        const path = daemon.existing(request.path);
        const watcher: Watcher = { path, recursive: request.recursive, queue: new AsyncQueue() };
        daemon.watchers.add(watcher);
        const stop = () => watcher.queue.end();
        context.signal.addEventListener("abort", stop);
        try {
          yield { event: { case: "start", value: {} } };
          yield { event: { case: "keepalive", value: {} } };
          for await (const event of watcher.queue) {
            const entry = request.includeEntry && daemon.entries.has(`${path}/${event.name}`) ? daemon.entryOf(`${path}/${event.name}`) : undefined;
            yield { event: { case: "filesystem", value: create(FilesystemEventSchema, { name: event.name, type: event.type, ...(entry ? { entry } : {}) }) } };
          }
        } finally {
          daemon.watchers.delete(watcher);
          context.signal.removeEventListener("abort", stop);
        }
      },
      createWatcher: () => {
        throw new ConnectError("the SDK watches with WatchDir", Code.Unimplemented);
      },
      getWatcherEvents: () => {
        throw new ConnectError("the SDK watches with WatchDir", Code.Unimplemented);
      },
      removeWatcher: () => {
        throw new ConnectError("the SDK watches with WatchDir", Code.Unimplemented);
      },
    };
  }

  private existing(path: string): string {
    const resolved = absolute(path);
    if (!this.entries.has(resolved)) throw new ConnectError(`stat ${resolved}: no such file or directory`, Code.NotFound);
    return resolved;
  }

  private entryOf(path: string): EntryInfoMessage {
    const entry = this.entries.get(path);
    if (!entry) throw new ConnectError(`${path}: no such file or directory`, Code.NotFound);
    return create(EntryInfoSchema, {
      name: path.split("/").at(-1) || "/",
      type: entry.kind === "dir" ? FileType.DIRECTORY : FileType.FILE,
      path,
      size: BigInt(entry.data.length),
      // The permission bits alone, as the daemon gives them (st_mode & 0o7777).
      mode: entry.mode ?? (entry.kind === "dir" ? 0o755 : 0o644),
      permissions: permissionsOf(entry.kind, entry.mode ?? (entry.kind === "dir" ? 0o755 : 0o644)),
      owner: "root",
      group: "root",
      modifiedTime: timestampFromDate(entry.modified),
    });
  }

  private mkdirs(path: string): void {
    let current = "";
    for (const part of path.split("/").filter(Boolean)) {
      current += `/${part}`;
      const entry = this.entries.get(current);
      if (entry?.kind === "file") throw new ConnectError(`${current} is a file`, Code.InvalidArgument);
      if (!entry) {
        this.entries.set(current, { kind: "dir", data: new Uint8Array(), modified: new Date() });
        this.notify(current, EventType.CREATE);
      }
    }
  }

  private notify(path: string, type: EventType): void {
    for (const watcher of this.watchers) {
      if (!path.startsWith(`${watcher.path}/`)) continue;
      const name = path.slice(watcher.path.length + 1);
      if (!watcher.recursive && name.includes("/")) continue;
      watcher.queue.push({ name, type });
    }
  }

  // --- plain HTTP: /files, /health ---

  private async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    const response = await this.answer(path, init);
    // As with a real fetch, the body breaks off when the request's signal aborts.
    if (!init.signal || !response.body) return response;
    return new Response(response.body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>(), { signal: init.signal }), {
      status: response.status,
      headers: response.headers,
    });
  }

  private async answer(path: string, init: RequestInit): Promise<Response> {
    const url = new URL(path, PROXY_URL);
    const method = init.method ?? "GET";
    this.requests.push({ what: `${method} ${url.pathname}`, headers: new Headers(init.headers) });
    if (this.answerDelayMs > 0) await delay(this.answerDelayMs, init.signal ?? undefined);
    init.signal?.throwIfAborted();
    if (this.gone) return json(502, { sandboxId: "x", message: "The sandbox was not found", code: 502 });
    if (url.pathname === "/health" && method === "GET") {
      if (this.startingHealthAnswers > 0) {
        this.startingHealthAnswers--;
        return json(502, { message: "connection refused: nothing listens on port 49983 yet", code: 502 });
      }
      return new Response(null, { status: 204 });
    }
    if (url.pathname !== "/files") return json(404, { message: `no route ${method} ${url.pathname}`, code: 404 });
    const user = url.searchParams.get("username") ?? "";
    if (!this.users.has(user)) return json(401, { message: `user ${JSON.stringify(user)} does not exist`, code: 401 });
    const requested = url.searchParams.get("path");
    if (!requested) return json(400, { message: "the path query parameter is required", code: 400 });
    const target = absolute(requested);
    if (method === "GET") {
      const entry = this.entries.get(target);
      if (!entry) return json(404, { message: `open ${target}: no such file or directory`, code: 404 });
      if (entry.kind === "dir") return json(400, { message: `${target} is a directory`, code: 400 });
      const headers = { "content-length": String(entry.data.length) };
      if (this.downloadPartBytes <= 0) return new Response(entry.data, { status: 200, headers });
      const { data } = entry;
      const [partBytes, delayMs] = [this.downloadPartBytes, this.downloadPartDelayMs];
      let offset = 0;
      const parts = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (offset > 0) await delay(delayMs).catch(() => undefined);
          controller.enqueue(data.subarray(offset, offset + partBytes));
          offset += partBytes;
          if (offset >= data.length) controller.close();
        },
      });
      return new Response(parts, { status: 200, headers });
    }
    if (method === "POST") {
      if (new Headers(init.headers).get("content-type") !== "application/octet-stream")
        return json(400, { message: "send application/octet-stream", code: 400 });
      const modeText = url.searchParams.get("mode");
      const mode = modeText === null ? undefined : /^[0-7]{1,4}$/.test(modeText) ? parseInt(modeText, 8) : NaN;
      if (mode !== undefined && !(mode <= 0o777)) return json(400, { message: `mode ${JSON.stringify(modeText)} is not a file mode: 0 to 777`, code: 400 });
      const body = new Uint8Array(await new Response(init.body).arrayBuffer());
      if (this.entries.get(target)?.kind === "dir") return json(400, { message: `${target} is a directory`, code: 400 });
      this.writeFile(target, body, mode);
      return json(200, [{ name: target.split("/").at(-1), type: "file", path: target }]);
    }
    return json(405, { message: `${method} /files`, code: 405 });
  }
}

function absolute(path: string): string {
  const joined = path.startsWith("/") ? path : `/root/${path}`;
  const parts: string[] = [];
  for (const part of joined.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return `/${parts.join("/")}`;
}

function parentOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

function basicUser(header: string | null): string {
  if (!header) return "";
  const match = /^Basic (.+)$/.exec(header);
  if (!match?.[1]) return "<malformed>";
  return Buffer.from(match[1], "base64").toString().split(":")[0] ?? "";
}

function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason instanceof Error ? signal.reason : new Error("aborted"));
    });
  });
}

/** `ls -l`'s permission string of a file or directory with these bits. */
function permissionsOf(kind: "file" | "dir", mode: number): string {
  const bits = ["r", "w", "x"];
  let text = kind === "dir" ? "d" : "-";
  for (let i = 8; i >= 0; i--) text += mode & (1 << i) ? bits[(8 - i) % 3] : "-";
  return text;
}
