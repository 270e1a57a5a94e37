/**
 * How the sandbox proxy reaches a target's port:
 * - directly, a TCP connection to the address (the embedded mode, where the proxy runs on the node
 *   of every sandbox; and a Shared sandbox, which listens on its agent Pod's routable address);
 * - through the relay of the agent that runs the sandbox (Kubernetes, an Isolated sandbox: its
 *   address is on a bridge inside its agent's network, reachable from nowhere else): an HTTP/1.1
 *   `CONNECT <address>:<port>` to the agent's port with the agent token, after which the connection
 *   is the sandbox's (packages/agent/src/server/sandbox-relay.ts).
 * Every connection is made through PortStartGrace: the first one to a port of a sandbox instance
 * waits (a little) for a server that is still starting. Requests reuse connections (keep-alive), per
 * sandbox instance, and per agent for relayed ones, since two nodes' bridges may hand out the same address. An idle kept-alive connection is closed by this side after
 * `idleTimeoutMs`: the sandbox's side then closes passively, leaving no TIME-WAIT in the sandbox —
 * and a gVisor checkpoint (pause, fork) is refused while the sandbox holds any open or TIME-WAIT
 * connection (runsc 20221219), so an idle one must not linger. A request in progress, however long
 * it streams or waits, is never cut by it. Each try at a connection gives up after `connectTimeoutMs`
 * (a DialTimeoutError, which the proxy answers 504), and when the caller hangs up.
 */
import http from "node:http";
import net from "node:net";
import type { Duplex } from "node:stream";
import { PortStartGrace } from "./port-start-grace.js";
import { DEFAULT_CONNECT_TIMEOUT_MS, DialTimeoutError, TCP_KEEPALIVE_DELAY_MS, dialThroughRelay, type DialTarget } from "./relay-dial.js";

export { DialTimeoutError, RelayRefusedError, dialThroughRelay, type DialTarget } from "./relay-dial.js";

/** How long a kept-alive connection to a sandbox may stay idle before this side closes it. */
export const DEFAULT_IDLE_CONNECTION_TIMEOUT_MS = 4000;

/**
 * The Agent methods Node documents for subclasses to override (https://nodejs.org/api/http.html#agentkeepsocketalivesocket,
 * #agentreusesocketsocket-request, #agentgetnameoptions), which @types/node does not declare.
 */
interface AgentHooks {
  keepSocketAlive(this: http.Agent, socket: Duplex): boolean;
  reuseSocket(this: http.Agent, socket: Duplex, request: http.ClientRequest): void;
  getName(this: http.Agent, options?: http.ClientRequestArgs): string;
}
const agentHooks = http.Agent.prototype as unknown as AgentHooks;

/**
 * A keep-alive pool whose idle connections this side closes after `idleTimeoutMs`. Not Node's Agent
 * `timeout`, which also times out a request in progress: a timer armed when a connection goes back
 * to the pool (`keepSocketAlive`) and cleared when a request takes it again (`reuseSocket`).
 */
class KeepAliveAgent extends http.Agent {
  private readonly idleTimers = new WeakMap<Duplex, NodeJS.Timeout>();
  private readonly endListeners = new WeakMap<Duplex, () => void>();

  constructor(private readonly idleTimeoutMs: number) {
    super({ keepAlive: true });
  }

  keepSocketAlive(socket: Duplex): boolean {
    const kept = agentHooks.keepSocketAlive.call(this, socket);
    if (kept) {
      const timer = setTimeout(() => socket.destroy(), this.idleTimeoutMs);
      timer.unref();
      this.idleTimers.set(socket, timer);
      // The connections are half-open (tunnels need it), so a sandbox (or a relay) that ends an idle
      // one leaves it open on this side: Node's pool would keep it, and the next request would be
      // written into a connection nobody reads (after a restore in place, every kept one is such).
      const onEnd = () => socket.destroy();
      socket.once("end", onEnd);
      this.endListeners.set(socket, onEnd);
    }
    return kept;
  }

  reuseSocket(socket: Duplex, request: http.ClientRequest): void {
    clearTimeout(this.idleTimers.get(socket));
    this.idleTimers.delete(socket);
    const onEnd = this.endListeners.get(socket);
    if (onEnd) socket.off("end", onEnd);
    this.endListeners.delete(socket);
    agentHooks.reuseSocket.call(this, socket, request);
  }
}

/**
 * Request options that carry the sandbox meant, and the signal of the caller's hang-up (which ends
 * a port's grace), to a pool's `createConnection` (Node passes unknown options through).
 */
type SandboxRequestOptions = http.ClientRequestArgs & { sandboxId?: string; dialSignal?: AbortSignal };

/** How a pool's connections are made: to the host and port of the request options, through the relay if any. */
type Dial = (target: DialTarget, signal?: AbortSignal) => Promise<net.Socket>;

/**
 * A keep-alive pool whose connections the dialer makes (the first to a port of a sandbox waits for it
 * to listen: port-start-grace.ts), per sandbox too — through a relay each tunnel was opened for the
 * sandbox it names, and directly a sandbox gone may have left its address and port to another.
 */
class DialingAgent extends KeepAliveAgent {
  constructor(
    private readonly dial: Dial,
    private readonly relay: string | undefined,
    idleTimeoutMs: number,
  ) {
    super(idleTimeoutMs);
  }

  getName(options?: SandboxRequestOptions): string {
    return `${agentHooks.getName.call(this, options)}:${options?.sandboxId ?? ""}`;
  }

  // Node's Agent creates each connection with this method; a callback answers asynchronously.
  createConnection(options: SandboxRequestOptions, callback: (error: Error | null, socket?: Duplex) => void): undefined {
    const target: DialTarget = { host: options.host ?? "", port: Number(options.port), ...(this.relay ? { relay: this.relay } : {}) };
    if (options.sandboxId) target.sandboxId = options.sandboxId;
    this.dial(target, options.dialSignal).then(
      (socket) => callback(null, socket),
      (error: unknown) => callback(error instanceof Error ? error : new Error(String(error))),
    );
    return undefined;
  }
}

export interface SandboxDialerOptions {
  /** How long a kept-alive connection may stay idle. @default DEFAULT_IDLE_CONNECTION_TIMEOUT_MS */
  idleTimeoutMs?: number;
  /** How long the first connection to a port of a sandbox is tried again while the port refuses it. @default 3000 */
  portStartGraceMs?: number;
  /**
   * How long one try at a connection may take: the TCP connection, and through a relay its answer
   * too. Past it the try fails with a DialTimeoutError (an address that drops connections would
   * otherwise hold the caller for the system's SYN retries, minutes). @default DEFAULT_CONNECT_TIMEOUT_MS
   */
  connectTimeoutMs?: number;
}

export class SandboxDialer {
  private readonly direct: DialingAgent;
  private readonly relayed = new Map<string, DialingAgent>();
  private readonly idleTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly grace: PortStartGrace;

  /**
   * @param relayToken the token a relay requires: one for every agent, or its agent's by the relay's
   * `host:port` (Kubernetes: each pool's agents have their own, agent-token.ts); without it no target
   * may name a relay.
   */
  constructor(
    private readonly relayToken?: string | ((relay: string) => string | undefined),
    options: SandboxDialerOptions = {},
  ) {
    this.idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_CONNECTION_TIMEOUT_MS;
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.grace = new PortStartGrace((target, signal) => this.dialOnce(target, signal), {
      ...(options.portStartGraceMs !== undefined ? { graceMs: options.portStartGraceMs } : {}),
    });
    this.direct = new DialingAgent((target, signal) => this.connect(target, signal), undefined, this.idleTimeoutMs);
  }

  /**
   * A raw TCP connection to the target (tunnels, WebSockets, pooled requests). `signal`: the caller
   * hung up; the try in progress and a port's grace end (port-start-grace.ts).
   */
  connect(target: DialTarget, signal?: AbortSignal): Promise<net.Socket> {
    return this.grace.connect(target, signal);
  }

  /** Request options that take a kept-alive connection to the target (or make one, until `signal` aborts). */
  pooledConnection(target: DialTarget, signal?: AbortSignal): Pick<http.ClientRequestArgs, "agent"> {
    let agent = this.direct;
    if (target.relay) {
      agent = this.relayed.get(target.relay) ?? new DialingAgent((dialed, dialSignal) => this.connect(dialed, dialSignal), target.relay, this.idleTimeoutMs);
      this.relayed.set(target.relay, agent);
    }
    const options: Pick<SandboxRequestOptions, "agent" | "sandboxId" | "dialSignal"> = {
      agent,
      ...(target.sandboxId ? { sandboxId: target.sandboxId } : {}),
      ...(signal ? { dialSignal: signal } : {}),
    };
    return options;
  }

  /** A request option that makes a fresh connection (no pool) to the target, until `signal` aborts: for WebSocket upgrades. */
  freshConnection(target: DialTarget, signal?: AbortSignal): Pick<http.ClientRequestArgs, "agent" | "createConnection"> {
    // No `agent` at all: Node uses `createConnection` only then (an `agent: false` request dials with a new Agent's own).
    return {
      createConnection: (_options, oncreate) => {
        this.connect(target, signal).then(
          (socket) => oncreate(null, socket),
          (error: unknown) => oncreate(error instanceof Error ? error : new Error(String(error)), undefined as unknown as Duplex),
        );
        return undefined;
      },
    };
  }

  close(): void {
    this.direct.destroy();
    for (const agent of this.relayed.values()) agent.destroy();
    this.relayed.clear();
  }

  /** One try at a connection, within the connect timeout and until `signal` aborts: through the target's relay, or directly. */
  private dialOnce(target: DialTarget, signal?: AbortSignal): Promise<net.Socket> {
    const timeoutMs = this.connectTimeoutMs;
    if (target.relay) {
      return dialThroughRelay(target.relay, this.token(target.relay), target.host, target.port, {
        sandboxId: target.sandboxId,
        connectTimeoutMs: timeoutMs,
        signal,
      });
    }
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason as Error);
        return;
      }
      // As Node's own Agent does: no Nagle delay (a request's head goes out alone, flushed, before its body).
      const socket = net.connect({
        host: target.host,
        port: target.port,
        allowHalfOpen: true,
        noDelay: true,
        keepAlive: true,
        keepAliveInitialDelay: TCP_KEEPALIVE_DELAY_MS,
      });
      const fail = (error: Error) => {
        settled();
        socket.destroy();
        reject(error);
      };
      const timer = setTimeout(() => fail(new DialTimeoutError(timeoutMs, `no connection to ${target.host}:${target.port} within ${timeoutMs} ms`)), timeoutMs);
      const onAbort = () => fail(signal?.reason as Error);
      signal?.addEventListener("abort", onAbort, { once: true });
      const settled = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        socket.off("error", fail);
      };
      socket.once("connect", () => {
        settled();
        resolve(socket);
      });
      socket.once("error", fail);
    });
  }

  private token(relay: string): string {
    if (!this.relayToken) throw new Error(`no agent token to dial the relay at ${relay} with: the proxy needs FSB_AGENT_TOKEN`);
    const token = typeof this.relayToken === "string" ? this.relayToken : this.relayToken(relay);
    // The relay's agent just went (its Pod deleted): as a relay that does not answer.
    if (!token) throw new Error(`the relay at ${relay} is no agent known now`);
    return token;
  }
}
