/**
 * `/healthz`, `/readyz` and `/metrics` in front of an API handler. They answer without a token, so
 * they say nothing about sandboxes: process up, ready or why not, and the Prometheus exposition
 * (counts and latencies, labelled by pool and agent at most). Every other path goes to the API
 * handler, which keeps requiring its bearer token.
 */
import type http from "node:http";
import type http2 from "node:http2";

export type HttpRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type HttpResponse = http.ServerResponse | http2.Http2ServerResponse;
export type HttpHandler = (request: HttpRequest, response: HttpResponse) => void;

export interface Probes {
  /** Undefined when ready; otherwise why not (the 503 body). A throw counts as not ready. */
  notReadyReason(): Promise<string | undefined>;
  /** The Prometheus text exposition and its content type. */
  metrics(): Promise<{ contentType: string; text: string }>;
}

export const PROBE_PATHS: readonly string[] = ["/healthz", "/readyz", "/metrics"];

function send(response: HttpResponse, status: number, contentType: string, body: string, head: boolean): void {
  // The two response types share these methods; their overloads differ, hence the cast.
  (response as http.ServerResponse).writeHead(status, { "content-type": contentType, "cache-control": "no-store" });
  (response as http.ServerResponse).end(head ? undefined : body);
}

async function answer(path: string, probes: Probes, response: HttpResponse, head: boolean): Promise<void> {
  switch (path) {
    case "/healthz":
      send(response, 200, "text/plain; charset=utf-8", "ok\n", head);
      return;
    case "/readyz": {
      const reason = await probes.notReadyReason().catch((error: unknown) => (error instanceof Error ? error.message : String(error)) || "not ready");
      if (reason === undefined) send(response, 200, "text/plain; charset=utf-8", "ok\n", head);
      else send(response, 503, "text/plain; charset=utf-8", `not ready: ${reason}\n`, head);
      return;
    }
    default: {
      const { contentType, text } = await probes.metrics();
      send(response, 200, contentType, text, head);
    }
  }
}

/** Serves the probe paths (GET and HEAD) from `probes` and hands every other request to `next`. */
export function withProbeRoutes(next: HttpHandler, probes: Probes): HttpHandler {
  return (request, response) => {
    const path = (request.url ?? "").split("?")[0] ?? "";
    const method = request.method ?? "";
    if (!PROBE_PATHS.includes(path) || (method !== "GET" && method !== "HEAD")) {
      next(request, response);
      return;
    }
    answer(path, probes, response, method === "HEAD").catch((error: unknown) => {
      if (!response.headersSent) send(response, 500, "text/plain; charset=utf-8", `${error instanceof Error ? error.message : String(error)}\n`, false);
      else response.end();
    });
  };
}
