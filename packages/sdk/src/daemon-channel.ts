/**
 * How the SDK reaches a sandbox's in-sandbox daemon (E2B's envd API on port 49983): a Connect
 * transport for its services (`process.Process`, `filesystem.Filesystem`) and plain HTTP for its
 * file transfers (`/files`) and `/health`. The default goes through the sandbox proxy, routed by the
 * `E2b-Sandbox-Id` and `E2b-Sandbox-Port` headers and authenticated by the sandbox's access token,
 * so it works the same in the embedded and the Kubernetes mode; tests inject their own channel.
 */
import type { Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ACCESS_TOKEN_HEADER, SANDBOX_DAEMON_PORT } from "@fast-sandbox/api/core";

/** The sandbox whose daemon a channel reaches. */
export interface DaemonTarget {
  namespace: string;
  name: string;
  /** The instance's id (`status.sandboxID`): what the sandbox proxy routes by. */
  sandboxId: string;
  /** The sandbox's access token, checked by the sandbox proxy. */
  accessToken: string;
}

/** A way to one sandbox's daemon. */
export interface DaemonChannel {
  /** Connect transport to the daemon's services. */
  transport: Transport;
  /** A plain-HTTP request to the daemon; `path` is absolute with its query, e.g. `/files?path=%2Fetc%2Fhosts`. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
}

/** Makes the channel of a sandbox; `proxyUrl` tells the sandbox proxy's base URL (asked of the control plane once, if needed). */
export type DaemonChannelFactory = (target: DaemonTarget, proxyUrl: () => Promise<string>) => DaemonChannel | Promise<DaemonChannel>;

/** Request headers that route to the sandbox's daemon through the sandbox proxy. */
export function sandboxProxyHeaders(target: DaemonTarget): Record<string, string> {
  return {
    "E2b-Sandbox-Id": target.sandboxId,
    "E2b-Sandbox-Port": String(SANDBOX_DAEMON_PORT),
    [ACCESS_TOKEN_HEADER]: target.accessToken,
  };
}

/**
 * The default channel: through the sandbox proxy at `proxyUrl`. Connect with JSON, as E2B's SDKs
 * speak to envd; HTTP/1.1, whose connections Node keeps alive and unreferenced between calls.
 */
export function sandboxProxyChannel(proxyUrl: string, target: DaemonTarget): DaemonChannel {
  const headers = sandboxProxyHeaders(target);
  const transport = createConnectTransport({
    baseUrl: proxyUrl,
    httpVersion: "1.1",
    useBinaryFormat: false,
    interceptors: [
      (next) => (request) => {
        for (const [name, value] of Object.entries(headers)) request.header.set(name, value);
        return next(request);
      },
    ],
  });
  return {
    transport,
    fetch: (path, init = {}) => {
      const merged = new Headers(init.headers);
      for (const [name, value] of Object.entries(headers)) merged.set(name, value);
      // Appended, not resolved against it: an absolute path would drop the proxy URL's own path.
      return fetch(`${proxyUrl.replace(/\/+$/, "")}${path}`, { ...init, headers: merged });
    },
  };
}

/** The factory of `sandboxProxyChannel`, asking for the proxy's URL once the first channel is made. */
export const throughSandboxProxy: DaemonChannelFactory = async (target, proxyUrl) => sandboxProxyChannel(await proxyUrl(), target);
