/**
 * The agent's relay: an HTTP/1.1 `CONNECT <sandbox address>:<port>` on the agent API's port that
 * opens a TCP connection to a port of one of this agent's own Isolated sandboxes, and then relays
 * bytes both ways. The sandbox proxy dials it in the Kubernetes mode, where a sandbox's address is on
 * its node's bridge (inside the agent Pod's network) and not routable from anywhere else.
 *
 * It is not an open proxy: the caller must send the agent token (`Authorization: Bearer <token>`,
 * the same as the agent API), and the target must be the address of a sandbox this agent runs —
 * the sandbox the caller names in `fsb-sandbox-id`, when it names one (the sandbox proxy does): a
 * caller's record may be older than the address's current holder.
 * Any port of it: which ports are public is the sandbox proxy's decision (the ports a sandbox
 * exposes, its daemon's, and every port of the sandboxes E2B's API created, as E2B's `getHost(port)`
 * expects), checked with the sandbox's access token before it dials. A port rule here would protect
 * nothing: whoever holds the agent token can run commands in this agent's sandboxes anyway. Refusals
 * are JSON `{code, message}`.
 */
import type http from "node:http";
import net from "node:net";
import type { Duplex } from "node:stream";
import { equalTokens, RELAY_SANDBOX_HEADER } from "@fast-sandbox/api/core";
import type { RuntimeSandbox } from "../runtime/runtime.js";
import type { RelayResult } from "./agent-metrics.js";

export interface SandboxRelayOptions {
  token: string;
  /** This agent's sandboxes, as the runtime reports them now (a new one is found at once). */
  sandboxes(): Promise<RuntimeSandbox[]>;
  /** Told how each CONNECT ended up. */
  observe?(result: RelayResult): void;
}

export interface SandboxRelay {
  /** The server's `connect` listener. */
  onConnect: (request: http.IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** Cuts every open tunnel. */
  close(): void;
}

const STATUS_TEXT: Record<number, string> = { 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 502: "Bad Gateway" };

/** How long a refused caller has to read the refusal before its connection is closed from this side. */
export const REFUSAL_LINGER_MS = 1000;

function refuse(socket: Duplex, status: number, message: string): void {
  const body = JSON.stringify({ code: status, message });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
  // The HTTP server no longer times this socket out: a caller that never closes its side (no token
  // needed to get here) would hold it half-open for ever.
  setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
}

/** `address:port` or `[v6 address]:port` of a CONNECT request line, or undefined. */
export function parseRelayTarget(authority: string | undefined): { host: string; port: number } | undefined {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(authority ?? "");
  if (!match) return undefined;
  const host = match[1] ?? match[2] ?? "";
  const port = Number(match[3]);
  if (net.isIP(host) === 0 || port < 1 || port > 65535) return undefined;
  return { host, port };
}

export function createSandboxRelay(options: SandboxRelayOptions): SandboxRelay {
  const open = new Set<Duplex>();
  const observe = (result: RelayResult) => options.observe?.(result);

  const onConnect = (request: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    open.add(socket);
    socket.once("close", () => open.delete(socket));
    socket.on("error", () => socket.destroy());
    // The agent's server keeps a caller's connection half-open, so that an open tunnel relays its FIN
    // (the sandbox's answer may follow). Before the tunnel opens, a FIN means the caller went: there
    // is nothing it could be waiting for, and its connection closes, as would one it reset.
    const wentAway = () => socket.destroy();
    socket.once("end", wentAway);
    void (async () => {
      const match = /^Bearer (.+)$/.exec(request.headers.authorization ?? "");
      if (!match?.[1] || !equalTokens(match[1], options.token)) {
        observe("unauthorized");
        refuse(
          socket,
          401,
          request.headers.authorization ? "invalid bearer token: send the agent token" : "missing bearer token: send 'authorization: Bearer <agent token>'",
        );
        return;
      }
      const target = parseRelayTarget(request.url);
      if (!target) {
        observe("bad_request");
        refuse(socket, 400, `CONNECT target ${JSON.stringify(request.url)} is not <IP address>:<port> of a sandbox`);
        return;
      }
      let sandboxes: RuntimeSandbox[];
      try {
        sandboxes = await options.sandboxes();
      } catch (error) {
        observe("unreachable");
        refuse(socket, 502, `the agent cannot list its sandboxes right now (${error instanceof Error ? error.message : String(error)}); retry shortly`);
        return;
      }
      const sandbox = sandboxes.find((candidate) => candidate.address === target.host);
      if (!sandbox) {
        observe("forbidden");
        refuse(socket, 403, `${target.host} is not the address of a sandbox of this agent: the relay reaches only its own sandboxes`);
        return;
      }
      const meant = request.headers[RELAY_SANDBOX_HEADER];
      if (typeof meant === "string" && meant !== sandbox.sandboxId) {
        observe("forbidden");
        refuse(socket, 404, `sandbox ${meant} is not at ${target.host} on this agent (the address is another sandbox's now)`);
        return;
      }
      // The caller may have gone during the lookup: its "close" has fired, and would never end a connection made now.
      if (socket.destroyed) return;
      const upstream = net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
      open.add(upstream);
      let connected = false;
      upstream.once("connect", () => {
        connected = true;
        socket.off("end", wentAway);
        observe("opened");
        socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        if (head.length > 0) upstream.write(head);
        upstream.pipe(socket);
        socket.pipe(upstream);
      });
      upstream.on("error", (error) => {
        if (connected) {
          socket.destroy();
          return;
        }
        observe("unreachable");
        refuse(socket, 502, `port ${target.port} of sandbox ${sandbox.namespace}/${sandbox.name} is not open (${error.message})`);
      });
      socket.once("close", () => upstream.destroy());
      upstream.once("close", () => {
        open.delete(upstream);
        if (connected) socket.destroy();
      });
    })();
  };

  return {
    onConnect,
    close() {
      for (const connection of open) connection.destroy();
    },
  };
}
