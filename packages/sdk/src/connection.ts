/**
 * One connection to a Fast Sandbox: the fast-path API of its control plane (a `FastSandboxClient`)
 * and the way to its sandboxes' daemons (through the sandbox proxy). Expensive to make, cheap to
 * share: every sandbox handle of a program can use one. Both transports can be injected, which is
 * how the SDK's unit specs run without sockets.
 */
import { resolve } from "node:path";
import { ValidationError } from "@fast-sandbox/api/core";
import { FastSandboxClient, type FastSandboxClientOptions } from "./fast-sandbox-client.js";
import { throughSandboxProxy, type DaemonChannel, type DaemonChannelFactory, type DaemonTarget } from "./daemon-channel.js";
import { EmbeddedInstance, controlPlaneAddress, defaultDataDir, fromEnv, requireControlPlaneAddress, sameUrl } from "./embedded-instance.js";
import { duration, untilAborted, type RequestOptions } from "./request-options.js";

export interface ConnectionOptions {
  /** Base URL of the control plane, e.g. `http://127.0.0.1:7070`. @default FSB_URL, else the URL the running `fsb up` of `dataDir` wrote */
  url?: string;
  /**
   * The API's bearer token. @default FSB_TOKEN, else the token of `dataDir` — only for that data
   * directory's own URL or one on this host's loopback (another host's URL needs its own token)
   */
  token?: string;
  /** A file that holds the token and is renewed (a Pod's ServiceAccount token): see FastSandboxClientOptions. @default FSB_TOKEN_FILE */
  tokenFile?: string;
  /**
   * Base URL of the sandbox proxy, through which the SDK reaches the sandboxes' daemons, e.g.
   * `http://127.0.0.1:7072`.
   * @default FSB_PROXY_URL, else FSB_SANDBOX_URL, else what the control plane says (GetSandboxProxy)
   */
  proxyUrl?: string;
  /**
   * The data directory of the embedded Fast Sandbox (`fsb up`): where its URL and token are found
   * when not given, and — when the URL is its — where sandboxes' access tokens are kept (as `fsb
   * run` keeps them), so `FastSandbox.connect` finds them.
   * @default FSB_DATA_DIR, else /var/lib/fast-sandbox as root, else ~/.local/share/fast-sandbox
   */
  dataDir?: string;
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
  /** Where access tokens are kept: the embedded instance whose URL this connection uses, else none. */
  readonly accessTokens: EmbeddedInstance | undefined;
  private readonly daemon: DaemonChannelFactory;
  private proxy: Promise<string> | undefined;

  constructor(options: ConnectionOptions = {}) {
    this.requestTimeoutMs = duration(options.requestTimeoutMs ?? 60_000, "requestTimeoutMs");
    const embedded = new EmbeddedInstance(options.dataDir ?? defaultDataDir());
    const embeddedUrl = embedded.url();
    // An injected transport needs neither; the URL still tells whether tokens are kept (below).
    const { url, token, tokenFile } = options.transport
      ? controlPlaneAddress(options, embedded, { tokens: false })
      : requireControlPlaneAddress(options, embedded);
    this.client = new FastSandboxClient({
      ...(url !== undefined ? { url } : {}),
      // A file's token is read again by the client as it is renewed.
      ...(tokenFile ? { tokenFile: tokenFile.path } : token !== undefined ? { token } : {}),
      ...(options.httpVersion ? { httpVersion: options.httpVersion } : {}),
      ...(options.transport ? { transport: options.transport } : {}),
      requestTimeoutMs: this.requestTimeoutMs,
    });
    // An injected transport is no instance's URL: tokens are kept only for a data directory named outright.
    const keepsTokens = !options.transport || options.dataDir !== undefined;
    this.accessTokens = keepsTokens && embeddedUrl !== undefined && url !== undefined && sameUrl(url, embeddedUrl) ? embedded : undefined;
    this.daemon = options.daemon ?? throughSandboxProxy;
    const proxyUrl = options.proxyUrl ?? fromEnv("FSB_PROXY_URL") ?? fromEnv("FSB_SANDBOX_URL");
    if (proxyUrl) this.proxy = Promise.resolve(checkProxyUrl(proxyUrl));
  }

  /**
   * The sandbox proxy's base URL: the option, FSB_PROXY_URL, FSB_SANDBOX_URL, or (asked once) the
   * control plane's. The question is shared by every caller meanwhile, so it is asked with the
   * connection's own deadline and no caller's signal: one caller's abort or short deadline ends its
   * own wait (`signal`), not the others'.
   */
  async proxyUrl(options: Pick<RequestOptions, "signal"> = {}): Promise<string> {
    if (!this.proxy) {
      const asked = this.client.sandboxes.proxyUrl({ requestTimeoutMs: this.requestTimeoutMs }).then((url) => {
        if (!url) throw new ValidationError("proxyUrl", "the control plane does not know the sandbox proxy's URL; pass proxyUrl or set FSB_PROXY_URL");
        return checkProxyUrl(url);
      });
      this.proxy = asked;
      // A failed question is asked again by the next call.
      void asked.catch(() => {
        if (this.proxy === asked) this.proxy = undefined;
      });
    }
    return untilAborted(this.proxy, options.signal);
  }

  /**
   * The channel to the daemon of `target` (made by the `daemon` option's factory). A handle shares it
   * among its calls: it is made without a caller's signal, which each caller races by itself.
   */
  async daemonChannel(target: DaemonTarget, options: Pick<RequestOptions, "signal"> = {}): Promise<DaemonChannel> {
    return untilAborted(Promise.resolve(this.daemon(target, () => this.proxyUrl())), options.signal);
  }

  /** Closes the connection to the control plane (calls in flight fail); the process may then exit. */
  close(): void {
    this.client.close();
  }
}

function checkProxyUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ValidationError("proxyUrl", `${JSON.stringify(url)} is not a URL; e.g. http://127.0.0.1:7072 (the sandbox proxy of 'fsb up')`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new ValidationError("proxyUrl", `${JSON.stringify(url)} must be http:// or https://`);
  // With its path: a proxy behind a gateway may be served under one (https://gw.example.com/fsb-proxy).
  return `${parsed.origin}${parsed.pathname.replace(/\/+$/, "")}`;
}

const shared = new Map<string, Connection>();

/** A path made absolute: the same file, whatever the working directory, is the same key. */
function resolvedPath(path: string | undefined): string | undefined {
  return path === undefined ? undefined : resolve(path);
}

/**
 * The connection for options that name none: one per distinct url, token, proxy URL, data
 * directory, deadline and HTTP version, made on first use and kept (its idle connections do not
 * keep the process alive).
 */
export function sharedConnection(options: ConnectionOptions): Connection {
  if (options.transport || options.daemon) return new Connection(options);
  const key = JSON.stringify([
    options.url ?? fromEnv("FSB_URL"),
    options.token ?? fromEnv("FSB_TOKEN"),
    resolvedPath(options.tokenFile ?? fromEnv("FSB_TOKEN_FILE")),
    options.proxyUrl ?? fromEnv("FSB_PROXY_URL") ?? fromEnv("FSB_SANDBOX_URL"),
    options.dataDir ?? defaultDataDir(),
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
