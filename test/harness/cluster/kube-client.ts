// A tiny Kubernetes API client for the test harness: plain node:https, JSON,
// client-certificate or bearer-token auth, and watch streams. Test-only code.
import { readFileSync } from "node:fs";
import https from "node:https";
import path from "node:path";

export type KObj = Record<string, any>;

export interface KubeCredentials {
  server: string; // https://127.0.0.1:PORT
  ca: string; // PEM path
  cert?: string; // PEM path (client certificate)
  key?: string; // PEM path
  token?: string; // bearer token
}

export interface ClusterInfo {
  server: string;
  apiserverPort: number;
  etcdPort: number;
  stateDir: string;
  kubeconfig: string;
  ca: string;
  adminCert: string;
  adminKey: string;
  nodes: string[];
  binDir: string;
}

export class KubeError extends Error {
  constructor(
    readonly status: number,
    readonly body: KObj | string,
    what: string,
  ) {
    super(`${what}: HTTP ${status}: ${typeof body === "string" ? body : (body.message ?? JSON.stringify(body))}`);
  }
}

export interface WatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: KObj;
}

export function readClusterInfo(stateDir = process.env.FSB_CLUSTER_DIR ?? "/tmp/fsb-cluster"): ClusterInfo {
  return JSON.parse(readFileSync(path.join(stateDir, "cluster.json"), "utf8")) as ClusterInfo;
}

export class KubeClient {
  private readonly agent: https.Agent;
  private readonly url: URL;

  constructor(private readonly creds: KubeCredentials) {
    this.url = new URL(creds.server);
    this.agent = new https.Agent({
      keepAlive: true,
      ca: readFileSync(creds.ca),
      cert: creds.cert ? readFileSync(creds.cert) : undefined,
      key: creds.key ? readFileSync(creds.key) : undefined,
    });
  }

  static admin(info: ClusterInfo = readClusterInfo()): KubeClient {
    return new KubeClient({
      server: info.server,
      ca: info.ca,
      cert: info.adminCert,
      key: info.adminKey,
    });
  }

  close(): void {
    this.agent.destroy();
  }

  private options(method: string, p: string, headers: Record<string, string>): https.RequestOptions {
    const h: Record<string, string> = {
      accept: "application/json",
      ...headers,
    };
    if (this.creds.token) h.authorization = `Bearer ${this.creds.token}`;
    return {
      method,
      hostname: this.url.hostname,
      port: this.url.port,
      path: p,
      agent: this.agent,
      headers: h,
    };
  }

  /** JSON request. Returns the parsed body; throws KubeError on non-2xx. */
  request<T = KObj>(method: string, p: string, body?: unknown, contentType = "application/json"): Promise<T> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const headers: Record<string, string> = {};
      if (data) {
        headers["content-type"] = contentType;
        headers["content-length"] = String(data.length);
      }
      const req = https.request(this.options(method, p, headers), (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: KObj | string = text;
          try {
            parsed = text ? (JSON.parse(text) as KObj) : {};
          } catch {
            /* keep text */
          }
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) resolve(parsed as T);
          else reject(new KubeError(status, parsed, `${method} ${p}`));
        });
      });
      req.setTimeout(60_000, () => req.destroy(new Error(`${method} ${p}: timed out`)));
      req.on("error", reject);
      if (data) req.write(data);
      req.end();
    });
  }

  get<T = KObj>(p: string): Promise<T> {
    return this.request<T>("GET", p);
  }
  post<T = KObj>(p: string, body: unknown): Promise<T> {
    return this.request<T>("POST", p, body);
  }
  put<T = KObj>(p: string, body: unknown): Promise<T> {
    return this.request<T>("PUT", p, body);
  }
  mergePatch<T = KObj>(p: string, body: unknown): Promise<T> {
    return this.request<T>("PATCH", p, body, "application/merge-patch+json");
  }
  delete<T = KObj>(p: string, body?: unknown): Promise<T> {
    return this.request<T>("DELETE", p, body);
  }

  /**
   * Streams a watch (p must already carry `watch=1` or be a list path; this adds it).
   * Calls onEvent for each event; resolves when the server closes the stream or signal aborts.
   */
  watch(p: string, onEvent: (e: WatchEvent) => void, signal?: AbortSignal): Promise<void> {
    const full = p.includes("watch=") ? p : `${p}${p.includes("?") ? "&" : "?"}watch=1`;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return resolve();
      const req = https.request(this.options("GET", full, {}), (res) => {
        if ((res.statusCode ?? 0) >= 300) {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => reject(new KubeError(res.statusCode ?? 0, Buffer.concat(chunks).toString(), `WATCH ${full}`)));
          return;
        }
        let buf = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          buf += chunk;
          let nl: number;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!line) continue;
            try {
              onEvent(JSON.parse(line) as WatchEvent);
            } catch (err) {
              req.destroy(err as Error);
            }
          }
        });
        res.on("end", () => resolve());
        res.on("error", (err) => (signal?.aborted ? resolve() : reject(err)));
      });
      req.on("error", (err) => (signal?.aborted ? resolve() : reject(err)));
      signal?.addEventListener("abort", () => req.destroy(), { once: true });
      req.end();
    });
  }
}
