/**
 * One connection to a Fast Sandbox: the fast-path API of its control plane (a `FastSandboxClient`)
 * and the way to its sandboxes' daemons (through the sandbox proxy). Expensive to make, cheap to
 * share: every sandbox handle of a program can use one. Both transports can be injected, which is
 * how the SDK's unit specs run without sockets.
 */
import { ValidationError } from "@fast-sandbox/api";
import { FastSandboxClient, type FastSandboxClientOptions } from "./fast-sandbox-client.js";
import { throughSandboxProxy, type DaemonChannel, type DaemonChannelFactory, type DaemonTarget } from "./daemon-channel.js";
import type { RequestOptions } from "./request-options.js";

export interface ConnectionOptions {
  /** Base URL of the control plane, e.g. `http://127.0.0.1:7070`. @default FSB_URL */
  url?: string;
  /** The API's bearer token. @default FSB_TOKEN */
  token?: string;
  /**
   * Base URL of the sandbox proxy, through which the SDK reaches the sandboxes' daemons, e.g.
   * `http://127.0.0.1:7072`.
   * @default FSB_SANDBOX_URL, else what the control plane says (GetSandboxProxy)
   */
  sandboxUrl?: string;
  /** Deadline of requests (each call may pass its own `requestTimeoutMs`); 0 for none. @default 60000 */
  requestTimeoutMs?: number;
  /** HTTP version to the control plane. @default "2" */
  httpVersion?: "1.1" | "2";
  /** The fast-path API's transport instead of one to `url` (`createRouterTransport` in tests). @default a Connect transport to `url` */
  transport?: FastSandboxClientOptions["transport"];
  /** Makes the channel to a sandbox's daemon. @default through the sandbox proxy (`throughSandboxProxy`) */
  daemon?: DaemonChannelFactory;
}

export class Connection {
  /** The fast-path API: sandboxes and pools as records. */
  readonly client: FastSandboxClient;
  /** Deadline of requests that do not pass their own. */
  readonly requestTimeoutMs: number;
  private readonly daemon: DaemonChannelFactory;
  private sandboxUrl: Promise<string> | undefined;

  constructor(options: ConnectionOptions = {}) {
    this.requestTimeoutMs = options.requestTimeoutMs ?? 60_000;
    this.client = new FastSandboxClient({
      ...(options.url !== undefined ? { url: options.url } : {}),
      ...(options.token !== undefined ? { token: options.token } : {}),
      ...(options.httpVersion ? { httpVersion: options.httpVersion } : {}),
      ...(options.transport ? { transport: options.transport } : {}),
      requestTimeoutMs: this.requestTimeoutMs,
    });
    this.daemon = options.daemon ?? throughSandboxProxy;
    const sandboxUrl = options.sandboxUrl ?? process.env.FSB_SANDBOX_URL;
    if (sandboxUrl) this.sandboxUrl = Promise.resolve(checkSandboxUrl(sandboxUrl));
  }

  /** The sandbox proxy's base URL: the option, FSB_SANDBOX_URL, or (asked once) the control plane's. */
  async sandboxProxyUrl(options: RequestOptions = {}): Promise<string> {
    if (!this.sandboxUrl) {
      const asked = this.client.sandboxes.proxyUrl(options).then((url) => {
        if (!url) throw new ValidationError("sandboxUrl", "the control plane does not know the sandbox proxy's URL; pass sandboxUrl or set FSB_SANDBOX_URL");
        return checkSandboxUrl(url);
      });
      this.sandboxUrl = asked;
      // A failed question is asked again by the next call.
      void asked.catch(() => {
        if (this.sandboxUrl === asked) this.sandboxUrl = undefined;
      });
    }
    return this.sandboxUrl;
  }

  /** The channel to the daemon of `target` (made by the `daemon` option's factory). */
  async daemonChannel(target: DaemonTarget, options: RequestOptions = {}): Promise<DaemonChannel> {
    return this.daemon(target, () => this.sandboxProxyUrl(options));
  }

  /** Closes the connection to the control plane (calls in flight fail); the process may then exit. */
  close(): void {
    this.client.close();
  }
}

function checkSandboxUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ValidationError("sandboxUrl", `${JSON.stringify(url)} is not a URL; e.g. http://127.0.0.1:7072 (the sandbox proxy of 'fsb up')`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:")
    throw new ValidationError("sandboxUrl", `${JSON.stringify(url)} must be http:// or https://`);
  return parsed.origin;
}

const shared = new Map<string, Connection>();

/**
 * The connection for options that name none: one per distinct url, token, sandbox URL, deadline
 * and HTTP version, made on first use and kept (its idle connections do not keep the process alive).
 */
export function sharedConnection(options: ConnectionOptions): Connection {
  if (options.transport || options.daemon) return new Connection(options);
  const key = JSON.stringify([
    options.url ?? process.env.FSB_URL,
    options.token ?? process.env.FSB_TOKEN,
    options.sandboxUrl ?? process.env.FSB_SANDBOX_URL,
    options.requestTimeoutMs,
    options.httpVersion,
  ]);
  let connection = shared.get(key);
  if (!connection) {
    connection = new Connection(options);
    shared.set(key, connection);
  }
  return connection;
}
