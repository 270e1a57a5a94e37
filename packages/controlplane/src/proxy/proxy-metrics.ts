/**
 * The sandbox proxy's Prometheus metrics, registered in the registry of the process that runs it (the
 * control plane's, served at its `/metrics`): answers by status code and kind, bytes to and from
 * sandboxes, and the WebSockets and tunnels open now. Labelled by kind and code, never by sandbox.
 */
import { Counter, Gauge, type Registry } from "prom-client";

/** What a request through the proxy is: plain HTTP (1.1 or 2), a WebSocket, or a raw TCP tunnel (CONNECT, `fsb port-forward`). */
export type ProxiedKind = "http" | "websocket" | "tunnel";

export class ProxyMetrics {
  private readonly requests: Counter<"kind" | "code">;
  private readonly bytes: Counter<"direction">;
  private readonly open: Gauge<"kind">;

  constructor(registry: Registry) {
    this.requests = new Counter({
      name: "fsb_proxy_requests_total",
      help: "Requests through the sandbox proxy, by kind (http, websocket, tunnel) and the status code answered (the sandbox's, or the proxy's refusal).",
      labelNames: ["kind", "code"] as const,
      registers: [registry],
    });
    this.bytes = new Counter({
      name: "fsb_proxy_bytes_total",
      help: "Bytes the sandbox proxy exchanged with sandboxes (headers included), by direction: to_sandbox, from_sandbox.",
      labelNames: ["direction"] as const,
      registers: [registry],
    });
    this.open = new Gauge({
      name: "fsb_proxy_open_connections",
      help: "WebSockets and tunnels open through the sandbox proxy now, by kind.",
      labelNames: ["kind"] as const,
      registers: [registry],
    });
    for (const kind of ["websocket", "tunnel"]) this.open.labels({ kind }).set(0);
    for (const direction of ["to_sandbox", "from_sandbox"]) this.bytes.labels({ direction }).inc(0);
  }

  answered(kind: ProxiedKind, code: number): void {
    this.requests.labels({ kind, code: String(code) }).inc();
  }

  transferred(toSandbox: number, fromSandbox: number): void {
    if (toSandbox > 0) this.bytes.labels({ direction: "to_sandbox" }).inc(toSandbox);
    if (fromSandbox > 0) this.bytes.labels({ direction: "from_sandbox" }).inc(fromSandbox);
  }

  opened(kind: Exclude<ProxiedKind, "http">): void {
    this.open.labels({ kind }).inc();
  }

  closed(kind: Exclude<ProxiedKind, "http">): void {
    this.open.labels({ kind }).dec();
  }
}
