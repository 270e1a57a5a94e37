/**
 * How the sandbox proxy reaches a target's port:
 * - directly, a TCP connection to the address (the embedded mode, where the proxy runs on the node
 *   of every sandbox; and a Shared sandbox, which listens on its agent Pod's routable address);
 * - through the relay of the agent that runs the sandbox (Kubernetes, an Isolated sandbox: its
 *   address is on a bridge inside its agent's network, reachable from nowhere else): an HTTP/1.1
 *   `CONNECT <address>:<port>` to the agent's port with the agent token, after which the connection
 *   is the sandbox's (packages/agent/src/server/sandbox-relay.ts).
 * Requests reuse connections (keep-alive), per agent for relayed ones, since two nodes' bridges may
 * hand out the same address. An idle kept-alive connection is closed by this side after
 * `idleTimeoutMs`: the sandbox's side then closes passively, leaving no TIME-WAIT in the sandbox —
 * and a gVisor checkpoint (pause, fork) is refused while the sandbox holds any open or TIME-WAIT
 * connection (runsc 20221219), so an idle one must not linger. A request in progress, however long
 * it streams or waits, is never cut by it.
 */
import http from "node:http";
import net from "node:net";
import type { Duplex } from "node:stream";
import { RELAY_SANDBOX_HEADER } from "@fast-sandbox/api";

/**
 * Where a connection goes: the address and port, and the agent relay (`host:port`) to dial through,
 * if any, with the instance id of the sandbox meant at that address (the relay checks it).
 */
export interface DialTarget {
  host: string;
  port: number;
  relay?: string;
  sandboxId?: string;
}

/** Request options that carry the sandbox meant to a relayed pool's `createConnection` (Node passes unknown options through). */
type SandboxRequestOptions = http.ClientRequestArgs & { sandboxId?: string };

export class RelayRefusedError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "RelayRefusedError";
  }
}

/** How long a relay's refusal body may take to arrive before the refusal is reported without it. */
const REFUSAL_BODY_WAIT_MS = 2000;

function splitEndpoint(endpoint: string): { host: string; port: number } {
  const at = endpoint.lastIndexOf(":");
  return { host: endpoint.slice(0, at).replace(/^\[|\]$/g, ""), port: Number(endpoint.slice(at + 1)) };
}

/** The message of a relay's JSON refusal (`{code, message}`), or the raw text. */
function refusalMessage(status: number, body: string): string {
  try {
    const parsed = JSON.parse(body) as { message?: unknown };
    if (typeof parsed.message === "string") return `the agent relay answered ${status}: ${parsed.message}`;
  } catch {
    // not JSON: reported as it is
  }
  return `the agent relay answered ${status}${body ? `: ${body.slice(0, 200)}` : ""}`;
}

/** A TCP connection to `host:port` through the agent relay at `relay`, ready to carry the sandbox's bytes. */
export function dialThroughRelay(relay: string, token: string, host: string, port: number, sandboxId?: string): Promise<net.Socket> {
  const agent = splitEndpoint(relay);
  const authority = net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
  return new Promise((resolve, reject) => {
    const request = http.request({
      host: agent.host,
      port: agent.port,
      method: "CONNECT",
      path: authority,
      headers: { host: authority, authorization: `Bearer ${token}`, ...(sandboxId ? { [RELAY_SANDBOX_HEADER]: sandboxId } : {}) },
      agent: false,
    });
    request.once("connect", (response: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      const status = response.statusCode ?? 0;
      if (status === 200) {
        if (head.length > 0) socket.unshift(head);
        resolve(socket);
        return;
      }
      // A refusal: its JSON body follows on the socket, which the relay then closes.
      const chunks: Buffer[] = [head];
      const done = () => {
        clearTimeout(timer);
        socket.destroy();
        reject(new RelayRefusedError(status, refusalMessage(status, Buffer.concat(chunks).toString())));
      };
      const timer = setTimeout(done, REFUSAL_BODY_WAIT_MS);
      socket.on("data", (chunk: Buffer) => chunks.push(chunk));
      socket.once("end", done);
      socket.once("error", done);
    });
    request.once("error", (error) => reject(new Error(`the agent relay at ${relay} cannot be reached: ${error.message}`)));
    request.end();
  });
}

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

  constructor(private readonly idleTimeoutMs: number) {
    super({ keepAlive: true });
  }

  keepSocketAlive(socket: Duplex): boolean {
    const kept = agentHooks.keepSocketAlive.call(this, socket);
    if (kept) {
      const timer = setTimeout(() => socket.destroy(), this.idleTimeoutMs);
      timer.unref();
      this.idleTimers.set(socket, timer);
    }
    return kept;
  }

  reuseSocket(socket: Duplex, request: http.ClientRequest): void {
    clearTimeout(this.idleTimers.get(socket));
    this.idleTimers.delete(socket);
    agentHooks.reuseSocket.call(this, socket, request);
  }
}

/** A keep-alive pool whose connections are tunnels through one agent's relay. */
class RelayAgent extends KeepAliveAgent {
  constructor(
    private readonly relay: string,
    private readonly token: string,
    idleTimeoutMs: number,
  ) {
    super(idleTimeoutMs);
  }

  // Kept-alive tunnels are per sandbox too: each was opened for the sandbox it names.
  getName(options?: SandboxRequestOptions): string {
    return `${agentHooks.getName.call(this, options)}:${options?.sandboxId ?? ""}`;
  }

  // Node's Agent creates each connection with this method; a callback answers asynchronously.
  createConnection(options: SandboxRequestOptions, callback: (error: Error | null, socket?: Duplex) => void): undefined {
    dialThroughRelay(this.relay, this.token, options.host ?? "", Number(options.port), options.sandboxId).then(
      (socket) => callback(null, socket),
      (error: unknown) => callback(error instanceof Error ? error : new Error(String(error))),
    );
    return undefined;
  }
}

export class SandboxDialer {
  private readonly direct: http.Agent;
  private readonly relayed = new Map<string, RelayAgent>();

  /**
   * @param relayToken the agent token, which relays require; without it no target may name a relay.
   * @param idleTimeoutMs how long a kept-alive connection may stay idle.
   */
  constructor(
    private readonly relayToken?: string,
    private readonly idleTimeoutMs = DEFAULT_IDLE_CONNECTION_TIMEOUT_MS,
  ) {
    this.direct = new KeepAliveAgent(idleTimeoutMs);
  }

  /** A raw TCP connection to the target (tunnels, WebSockets). */
  connect(target: DialTarget): Promise<net.Socket> {
    if (target.relay) return dialThroughRelay(target.relay, this.token(target.relay), target.host, target.port, target.sandboxId);
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
      socket.once("connect", () => {
        socket.off("error", reject);
        resolve(socket);
      });
      socket.once("error", reject);
    });
  }

  /** Request options that take a kept-alive connection to the target (or make one). */
  pooledConnection(target: DialTarget): Pick<http.ClientRequestArgs, "agent"> {
    if (!target.relay) return { agent: this.direct };
    let agent = this.relayed.get(target.relay);
    if (!agent) {
      agent = new RelayAgent(target.relay, this.token(target.relay), this.idleTimeoutMs);
      this.relayed.set(target.relay, agent);
    }
    const options: Pick<SandboxRequestOptions, "agent" | "sandboxId"> = { agent, ...(target.sandboxId ? { sandboxId: target.sandboxId } : {}) };
    return options;
  }

  /** A request option that makes a fresh connection (no pool) to the target: for WebSocket upgrades. */
  freshConnection(target: DialTarget): Pick<http.ClientRequestArgs, "agent" | "createConnection"> {
    if (!target.relay) return { agent: false };
    // No `agent` at all: Node uses `createConnection` only then (an `agent: false` request dials with a new Agent's own).
    return {
      createConnection: (_options, oncreate) => {
        this.connect(target).then(
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

  private token(relay: string): string {
    if (!this.relayToken) throw new Error(`no agent token to dial the relay at ${relay} with: the proxy needs FSB_AGENT_TOKEN`);
    return this.relayToken;
  }
}
