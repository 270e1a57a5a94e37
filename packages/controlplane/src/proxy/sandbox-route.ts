/**
 * Which sandbox and port a request through the sandbox proxy is for. Two forms, as E2B's proxy reads
 * them (so E2B's SDKs work through ours):
 * - the Host `<port>-<sandboxID>.<domain>[:proxy port]` (one name per sandbox port: browsers, curl);
 * - the headers `E2b-Sandbox-Id` and `E2b-Sandbox-Port` on a request to the proxy's own name (the
 *   bare domain, `localhost` or an IP address: one URL for every sandbox, no wildcard DNS).
 * Parsing is strict: a sandbox id is a DNS label of lower-case letters and digits (what the control
 * plane generates), a port a decimal number in 1..65535 without leading zeros.
 */
import { isIP } from "node:net";

export const SANDBOX_ID_HEADER = "e2b-sandbox-id";
export const SANDBOX_PORT_HEADER = "e2b-sandbox-port";

/** A sandbox id the proxy routes to: a DNS label of lower-case letters and digits. */
const SANDBOX_ID = /^[a-z0-9]{1,63}$/;
const PORT = /^[1-9][0-9]{0,4}$/;
/** `<port>-<sandboxID>`: the left-most label of a routed Host. */
const HOST_LABEL = /^([1-9][0-9]{0,4})-([a-z0-9]{1,63})$/;

export interface SandboxRoute {
  sandboxId: string;
  port: number;
  /** Where the route came from. */
  by: "host" | "headers";
}

/** A request the proxy cannot route, with what to send instead. */
export interface RouteRefusal {
  refused: string;
}

/** The headers routing reads (Node's lower-cased request headers, or HTTP/2's with `:authority`). */
export type RoutingHeaders = Record<string, string | string[] | undefined>;

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** The host name of a Host header value, lower-cased, without its port or an IPv6 literal's brackets. */
export function hostnameOf(host: string): string {
  const value = host.trim().toLowerCase();
  if (value.startsWith("[")) return value.slice(1, value.indexOf("]") > 0 ? value.indexOf("]") : undefined);
  const colon = value.lastIndexOf(":");
  return (colon >= 0 && value.indexOf(":") === colon ? value.slice(0, colon) : value).replace(/\.$/, "");
}

function parsePort(value: string): number | undefined {
  if (!PORT.test(value)) return undefined;
  const port = Number(value);
  return port <= 65535 ? port : undefined;
}

/**
 * The route of a request, or why there is none. `domain` is the proxy's public domain (e.g.
 * `localhost`, `sandboxes.example.com`): a Host `<port>-<id>.<domain>` is routed by its label; any
 * other Host — the domain itself, `localhost`, an IP address, the proxy's Service name — by the
 * E2B headers.
 */
export function routeOf(headers: RoutingHeaders, domain: string): SandboxRoute | RouteRefusal {
  const host = single(headers[":authority"]) ?? single(headers.host) ?? "";
  const hostname = hostnameOf(host);
  const suffix = `.${domain.toLowerCase()}`;
  if (hostname.endsWith(suffix) && isIP(hostname) === 0) {
    const label = hostname.slice(0, -suffix.length);
    const match = HOST_LABEL.exec(label);
    if (match) {
      const port = parsePort(match[1] ?? "");
      if (port !== undefined) return { sandboxId: match[2] ?? "", port, by: "host" };
    }
    if (!label.includes(".") && single(headers[SANDBOX_ID_HEADER]) === undefined) {
      return {
        refused: `the host ${JSON.stringify(hostname)} is not <port>-<sandboxID>${suffix} (a port of 1..65535 and a sandbox id of lower-case letters and digits)`,
      };
    }
  }
  const id = single(headers[SANDBOX_ID_HEADER]);
  const portHeader = single(headers[SANDBOX_PORT_HEADER]);
  if (id === undefined && portHeader === undefined) {
    return {
      refused: `no sandbox named: use the host <port>-<sandboxID>${suffix} or the headers E2b-Sandbox-Id and E2b-Sandbox-Port (host was ${JSON.stringify(host)})`,
    };
  }
  if (id === undefined || !SANDBOX_ID.test(id.trim())) {
    return { refused: `E2b-Sandbox-Id ${JSON.stringify(id ?? "")} is not a sandbox id (lower-case letters and digits)` };
  }
  const port = portHeader === undefined ? undefined : parsePort(portHeader.trim());
  if (port === undefined) return { refused: `E2b-Sandbox-Port ${JSON.stringify(portHeader ?? "")} is not a port (1..65535)` };
  return { sandboxId: id.trim(), port, by: "headers" };
}

export function isRefusal(route: SandboxRoute | RouteRefusal): route is RouteRefusal {
  return "refused" in route;
}
