/**
 * `fsb port-forward`: a local TCP port whose every connection becomes a raw tunnel to a port of a
 * sandbox, through the sandbox proxy: `CONNECT <port>-<sandboxID>.<domain>:<proxy port>` with the
 * sandbox's access token in `X-Access-Token`, then bytes both ways (each direction ends on its own).
 */
import net from "node:net";
import tls from "node:tls";
import type { Duplex } from "node:stream";
import { ACCESS_TOKEN_HEADER, FsbError, ValidationError } from "@fast-sandbox/api";

export interface PortMapping {
  /** 0: any free port. */
  localPort: number;
  remotePort: number;
}

/** `LOCAL:REMOTE`, `:REMOTE` (any free local port) or `PORT` (the same on both sides), as kubectl port-forward takes them. */
export function parsePortMapping(value: string): PortMapping {
  const match = /^(\d*):(\d+)$|^(\d+)$/.exec(value);
  const port = (text: string | undefined, allowZero: boolean) => {
    const number = Number(text);
    return text !== undefined && /^\d+$/.test(text) && number <= 65535 && (allowZero || number >= 1) ? number : undefined;
  };
  const local = match?.[3] ?? (match?.[1] === "" ? "0" : match?.[1]);
  const remote = match?.[3] ?? match?.[2];
  const localPort = port(local, true);
  const remotePort = port(remote, false);
  if (localPort === undefined || remotePort === undefined) {
    throw new ValidationError("LOCAL:REMOTE", `${JSON.stringify(value)} is not LOCAL:REMOTE (e.g. 9000:8080, :8080 for any free local port, or 8080)`);
  }
  return { localPort, remotePort };
}

/** Where the proxy is and how a tunnel to one port of a sandbox is asked for, from that port's endpoint URL. */
export interface TunnelTarget {
  /** Address and port to connect to. */
  host: string;
  port: number;
  tls: boolean;
  /** The CONNECT request target and Host: `<port>-<sandboxID>.<domain>:<proxy port>`. */
  authority: string;
}

export function tunnelTarget(endpoint: string): TunnelTarget {
  const url = new URL(endpoint);
  const secure = url.protocol === "https:";
  const port = Number(url.port || (secure ? 443 : 80));
  // Every *.localhost name is this host's loopback (RFC 6761), whatever the resolver says.
  const host = url.hostname === "localhost" || url.hostname.endsWith(".localhost") ? "127.0.0.1" : url.hostname;
  return { host, port, tls: secure, authority: `${url.hostname}:${port}` };
}

/**
 * Opens a tunnel: resolves with the connection, past the proxy's 200, and what arrived after it.
 * Aborting `signal` destroys the connection, whether the proxy answered yet or not.
 */
export async function openTunnel(
  target: TunnelTarget,
  accessToken: string,
  options: { signal?: AbortSignal } = {},
): Promise<{ connection: Duplex; rest: Buffer }> {
  options.signal?.throwIfAborted();
  const connection: net.Socket = target.tls
    ? tls.connect({ host: target.host, port: target.port, servername: target.authority.split(":")[0] })
    : net.connect(target.port, target.host);
  const abort = () => connection.destroy();
  options.signal?.addEventListener("abort", abort, { once: true });
  try {
    return await negotiate(connection, target, accessToken);
  } catch (error) {
    // Given up: the abort's reason rather than the closed connection it caused.
    options.signal?.throwIfAborted();
    throw error;
  } finally {
    options.signal?.removeEventListener("abort", abort);
  }
}

/** Asks the proxy for the tunnel over `connection`; resolves past its 200, rejects with its refusal. */
async function negotiate(connection: net.Socket, target: TunnelTarget, accessToken: string): Promise<{ connection: Duplex; rest: Buffer }> {
  connection.write(`CONNECT ${target.authority} HTTP/1.1\r\nhost: ${target.authority}\r\n${ACCESS_TOKEN_HEADER}: ${accessToken}\r\n\r\n`);
  const { head, rest } = await new Promise<{ head: string; rest: Buffer }>((resolve, reject) => {
    let received = Buffer.alloc(0);
    const onError = (error: Error) => {
      stop();
      reject(new FsbError("unavailable", `cannot reach the sandbox proxy at ${target.host}:${target.port}: ${error.message}`, { cause: error }));
    };
    const onClose = () => {
      stop();
      reject(new FsbError("unavailable", `the sandbox proxy at ${target.host}:${target.port} closed the tunnel before answering`));
    };
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf("\r\n\r\n");
      if (end < 0) return;
      stop();
      connection.pause();
      resolve({ head: received.subarray(0, end).toString("latin1"), rest: received.subarray(end + 4) });
    };
    const stop = () => {
      connection.off("data", onData);
      connection.off("error", onError);
      connection.off("close", onClose);
    };
    connection.on("data", onData);
    connection.on("error", onError);
    connection.on("close", onClose);
  });
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
  if (status === 200) return { connection, rest };
  // A refusal: the proxy's JSON body ({code, message}) says why.
  const body = await new Promise<string>((resolve) => {
    let text = rest.toString();
    connection.on("data", (chunk: Buffer) => (text += chunk.toString()));
    connection.once("close", () => resolve(text));
    connection.once("error", () => resolve(text));
    connection.resume();
  });
  let message = body.trim() || head.split("\r\n")[0] || "no answer";
  try {
    message = (JSON.parse(body) as { message?: string }).message ?? message;
  } catch {
    // Not JSON: the raw text says what it can.
  }
  throw new FsbError(
    status === 401 ? "unauthenticated" : status === 403 ? "permission_denied" : status === 502 ? "not_found" : "unavailable",
    `the sandbox proxy refused the tunnel (${status}): ${message}`,
  );
}

export interface PortForwarder {
  /** The local port it listens on. */
  port: number;
  /** Stops listening and closes every connection and tunnel, those still opening too. */
  close(): Promise<void>;
}

/** Listens on `address:localPort` and tunnels every connection to the target; `onError` hears each tunnel that could not open. */
export async function forwardPort(options: {
  address: string;
  localPort: number;
  target: TunnelTarget;
  accessToken: string;
  onError: (error: unknown) => void;
}): Promise<PortForwarder> {
  const open = new Set<Duplex>();
  // One per local connection whose tunnel is still opening: aborted when that connection closes, or by close().
  const opening = new Set<AbortController>();
  const server = net.createServer({ allowHalfOpen: true }, (local) => {
    open.add(local);
    local.pause();
    const tunnelOpening = new AbortController();
    opening.add(tunnelOpening);
    local.once("close", () => {
      open.delete(local);
      tunnelOpening.abort();
    });
    local.on("error", () => local.destroy());
    openTunnel(options.target, options.accessToken, { signal: tunnelOpening.signal }).then(
      ({ connection, rest }) => {
        opening.delete(tunnelOpening);
        // The local connection may have closed as the answer arrived: then the tunnel goes too.
        if (tunnelOpening.signal.aborted || local.destroyed) {
          connection.destroy();
          return;
        }
        open.add(connection);
        connection.once("close", () => {
          open.delete(connection);
          local.destroy();
        });
        connection.on("error", () => connection.destroy());
        local.once("close", () => connection.destroy());
        if (rest.length > 0) local.write(rest);
        connection.pipe(local);
        local.pipe(connection);
        connection.resume();
        local.resume();
      },
      (error: unknown) => {
        opening.delete(tunnelOpening);
        // A tunnel given up because its local connection or the forwarder closed is no error.
        if (!tunnelOpening.signal.aborted) options.onError(error);
        local.destroy();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.localPort, options.address, () => resolve());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const tunnel of opening) tunnel.abort();
        for (const connection of open) connection.destroy();
        server.close(() => resolve());
      }),
  };
}
