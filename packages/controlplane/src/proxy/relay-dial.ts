/**
 * A TCP connection to a sandbox's port through the relay of the agent that runs it (Kubernetes, an
 * Isolated sandbox: its address is on a bridge inside its agent's network, reachable from nowhere
 * else): an HTTP/1.1 `CONNECT <address>:<port>` to the agent's port with the agent token, after which
 * the connection is the sandbox's (packages/agent/src/server/sandbox-relay.ts). The relay names the
 * sandbox meant (`fsb-sandbox-id`) and refuses when the address is another's now.
 */
import http from "node:http";
import net from "node:net";
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

export class RelayRefusedError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "RelayRefusedError";
  }
}

/**
 * A connection (or a relay's answer to its CONNECT) did not come within the connect timeout: the
 * address takes no connection (a host gone, a packet filter dropping them) or the relay hangs.
 */
export class DialTimeoutError extends Error {
  constructor(
    readonly timeoutMs: number,
    message: string,
  ) {
    super(message);
    this.name = "DialTimeoutError";
  }
}

/** How long a connection to a sandbox, or to an agent relay and its answer, may take. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

export interface DialOptions {
  /** The instance id of the sandbox meant at the address (a relay checks it). */
  sandboxId?: string | undefined;
  /** How long the connection may take, the relay's answer included. @default DEFAULT_CONNECT_TIMEOUT_MS */
  connectTimeoutMs?: number;
  /** The caller hung up: the attempt stops, and the signal's reason is thrown. */
  signal?: AbortSignal | undefined;
}

/**
 * Idle time after which TCP keep-alive probes check a connection the proxy holds (a client's, a
 * relay's): one whose peer went without a FIN or RST (a node powered off, a NAT that forgot it) is
 * found dead within minutes and closed, not held until the system's default of two hours of idleness.
 */
export const TCP_KEEPALIVE_DELAY_MS = 60_000;

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

/**
 * A TCP connection to `host:port` through the agent relay at `relay`, ready to carry the sandbox's
 * bytes. Half-open, as a direct one: each direction of a tunnel ends on its own, and a sandbox that
 * ends its side first (`shutdown(SHUT_WR)`) may still read what the client sends after.
 */
export function dialThroughRelay(relay: string, token: string, host: string, port: number, options: DialOptions = {}): Promise<net.Socket> {
  const agent = splitEndpoint(relay);
  const authority = net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
  const { sandboxId, signal } = options;
  const timeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    // Node hands the socket options on to the connection it makes (its types do not say so).
    const requestOptions: http.RequestOptions & net.SocketConstructorOpts = {
      host: agent.host,
      port: agent.port,
      method: "CONNECT",
      path: authority,
      headers: { host: authority, authorization: `Bearer ${token}`, ...(sandboxId ? { [RELAY_SANDBOX_HEADER]: sandboxId } : {}) },
      agent: false,
      allowHalfOpen: true,
    };
    const request = http.request(requestOptions);
    // The connection and the relay's answer, which comes once the relay has reached the sandbox's port.
    const timer = setTimeout(
      () => request.destroy(new DialTimeoutError(timeoutMs, `the agent relay at ${relay} did not open a connection to ${authority} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onAbort = () => request.destroy(signal?.reason as Error);
    signal?.addEventListener("abort", onAbort, { once: true });
    const settled = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    request.once("connect", (response: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      settled();
      const status = response.statusCode ?? 0;
      if (status === 200) {
        // A tunnel may carry nothing for long (an idle kept-alive connection, a quiet WebSocket):
        // probes tell an agent that went without a word from one that has nothing to say.
        socket.setKeepAlive(true, TCP_KEEPALIVE_DELAY_MS);
        if (head.length > 0) socket.unshift(head);
        resolve(socket);
        return;
      }
      // A refusal: its JSON body follows on the socket, which the relay then closes.
      const chunks: Buffer[] = [head];
      const done = () => {
        clearTimeout(bodyTimer);
        socket.destroy();
        reject(new RelayRefusedError(status, refusalMessage(status, Buffer.concat(chunks).toString())));
      };
      const bodyTimer = setTimeout(done, REFUSAL_BODY_WAIT_MS);
      socket.on("data", (chunk: Buffer) => chunks.push(chunk));
      socket.once("end", done);
      socket.once("error", done);
    });
    request.once("error", (error) => {
      settled();
      if (signal?.aborted) reject(signal.reason as Error);
      else if (error instanceof DialTimeoutError) reject(error);
      else reject(new Error(`the agent relay at ${relay} cannot be reached: ${error.message}`));
    });
    request.end();
  });
}
