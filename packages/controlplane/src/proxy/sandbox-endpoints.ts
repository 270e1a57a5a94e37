/**
 * The public address of the sandbox proxy and the URLs it gives each exposed port of a sandbox:
 * `<scheme>://<port>-<sandboxID>.<domain>[:<proxy port>]/`. The embedded default base URL is
 * `http://localhost:<proxy port>`, so an endpoint reads `http://8080-<id>.localhost:7072/`: curl and
 * browsers resolve every `*.localhost` name to loopback, without DNS set-up.
 */
import { ValidationError } from "@fast-sandbox/api";

export interface ProxyAddress {
  /** `http:` or `https:`. */
  protocol: string;
  /** The domain sandboxes are named under, e.g. `localhost` or `sandboxes.example.com`. */
  domain: string;
  /** `:7072`, or empty for the scheme's default port. */
  portSuffix: string;
}

/** Parses the proxy's public base URL (e.g. `http://localhost:7072`, `https://sandboxes.example.com`). */
export function parseProxyBaseUrl(baseUrl: string, field = "proxy base URL"): ProxyAddress {
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw new ValidationError(field, `${JSON.stringify(baseUrl)} is not a URL; e.g. http://localhost:7072 or https://sandboxes.example.com`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new ValidationError(field, `${JSON.stringify(baseUrl)} must be http:// or https://`);
  if (url.pathname !== "/" || url.search || url.hash || url.username || url.password) {
    throw new ValidationError(field, `${JSON.stringify(baseUrl)} must be a scheme, a host and a port only: sandboxes are routed by host name, not by path`);
  }
  if (/^\[|^\d+\.\d+\.\d+\.\d+$/.test(url.hostname)) {
    throw new ValidationError(field, `${JSON.stringify(baseUrl)} names an IP address: sandboxes need names under a domain (localhost works on this host)`);
  }
  return { protocol: url.protocol, domain: url.hostname, portSuffix: url.port ? `:${url.port}` : "" };
}

/** The URL of `port` of the sandbox instance `sandboxId` through the proxy. */
export function endpointUrl(address: ProxyAddress, sandboxId: string, port: number): string {
  return `${address.protocol}//${port}-${sandboxId}.${address.domain}${address.portSuffix}/`;
}

/** The proxy's base URL again (`parseProxyBaseUrl` in reverse), e.g. `http://localhost:7072`. */
export function proxyBaseUrl(address: ProxyAddress): string {
  return `${address.protocol}//${address.domain}${address.portSuffix}`;
}
