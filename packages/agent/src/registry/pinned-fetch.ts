/**
 * Where a registry may send the agent, and how the agent then gets there without a second DNS
 * answer changing the place: a host is resolved once (resolveHost), its addresses are checked
 * (thisHostAddress: loopback, unspecified, this machine's own interfaces), and the request
 * connects to exactly those addresses (pinnedFetch: node:http(s) with a `lookup` that answers
 * with them, TLS still verified for the host's name).
 *
 * Node's fetch takes no per-request lookup without undici's Agent (a package the agent does not
 * ship), so pinnedFetch is a small fetch over node:http(s): GET only, no redirects (the registry
 * client follows them itself), the body a web stream read on demand.
 */
import { lookup as dnsLookup } from "node:dns/promises";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { BlockList, isIP, type LookupFunction } from "node:net";
import { networkInterfaces } from "node:os";

export interface ResolvedAddress {
  address: string;
  /** 4 or 6. */
  family: number;
}

/** Resolves a host name to all its addresses (tests inject their own). */
export type HostLookup = (hostname: string) => Promise<ResolvedAddress[]>;

export const systemLookup: HostLookup = (hostname) => dnsLookup(hostname, { all: true, verbatim: true });

/**
 * The addresses of a URL's host: an IP literal is its own address (no DNS), a name is resolved by
 * `lookup`. `hostname` as URL gives it (IPv6 bracketed).
 */
export async function resolveHost(hostname: string, lookup: HostLookup): Promise<ResolvedAddress[]> {
  const bare = hostname.startsWith("[") && hostname.endsWith("]") ? hostname.slice(1, -1) : hostname;
  const family = isIP(bare);
  if (family !== 0) return [{ address: bare, family }];
  const addresses = await lookup(bare.replace(/\.$/, ""));
  if (addresses.length === 0) throw new Error(`${bare} has no address`);
  return addresses;
}

/** True when every address is on loopback (127.0.0.0/8, ::1, and their IPv4-mapped forms). */
export function isLoopbackAddress({ address, family }: ResolvedAddress): boolean {
  const loopback = new BlockList();
  loopback.addSubnet("127.0.0.0", 8, "ipv4");
  loopback.addAddress("::1", "ipv6");
  return loopback.check(withoutZone(address), family === 6 ? "ipv6" : "ipv4");
}

/**
 * Why `address` reaches this machine ("loopback", "the unspecified address", "an address of this
 * host"), or undefined when it does not: what a remote registry must not send the agent to.
 * Interfaces are read at every call (addresses come and go). IPv4-mapped IPv6 addresses count as
 * their IPv4 address.
 */
export function thisHostAddress({ address, family }: ResolvedAddress, interfaces = networkInterfaces()): string | undefined {
  const type = family === 6 ? "ipv6" : "ipv4";
  const bare = withoutZone(address);
  if (isLoopbackAddress({ address: bare, family })) return "loopback";
  const unspecified = new BlockList();
  // 0.0.0.0/8 is "this network": Linux connects 0.0.0.0 to this host.
  unspecified.addSubnet("0.0.0.0", 8, "ipv4");
  unspecified.addAddress("::", "ipv6");
  if (unspecified.check(bare, type)) return "the unspecified address";
  const own = new BlockList();
  for (const entries of Object.values(interfaces)) {
    for (const entry of entries ?? []) own.addAddress(withoutZone(entry.address), entry.family === "IPv6" ? "ipv6" : "ipv4");
  }
  if (own.check(bare, type)) return "an address of this host";
  return undefined;
}

function withoutZone(address: string): string {
  const percent = address.indexOf("%");
  return percent < 0 ? address : address.slice(0, percent);
}

/**
 * A fetch (GET, manual redirects) that connects to `addresses` whatever DNS says of the URL's
 * host now: the addresses that were checked. Each request has a connection of its own (no pool:
 * a pooled connection could have been opened by someone else to an address nobody checked).
 * Network errors reject like fetch's (TypeError "fetch failed" with the cause); an aborted
 * signal rejects with its reason.
 */
export function pinnedFetch(addresses: readonly ResolvedAddress[]): typeof fetch {
  const [first] = addresses;
  if (!first) throw new Error("pinnedFetch needs at least one address");
  const lookup: LookupFunction = (_hostname, options, callback) => {
    if (options.all) {
      callback(
        null,
        addresses.map(({ address, family }) => ({ address, family })),
      );
      return;
    }
    const chosen = addresses.find((entry) => !options.family || entry.family === options.family) ?? first;
    callback(null, chosen.address, chosen.family);
  };
  return (input, init) =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
      const signal = init?.signal ?? undefined;
      if (signal?.aborted) {
        reject(signal.reason as Error);
        return;
      }
      const headers: Record<string, string> = {};
      new Headers(init?.headers).forEach((value, name) => {
        headers[name] = value;
      });
      const send = url.protocol === "https:" ? httpsRequest : httpRequest;
      // Throws at once on a header value with a character HTTP does not allow.
      const request = send(url, { method: init?.method ?? "GET", headers, lookup, agent: false, ...(signal ? { signal } : {}) });
      request.on("response", (response) => {
        try {
          const answerHeaders = new Headers();
          for (let i = 0; i + 1 < response.rawHeaders.length; i += 2) answerHeaders.append(response.rawHeaders[i] ?? "", response.rawHeaders[i + 1] ?? "");
          const status = response.statusCode ?? 0;
          const noBody = status === 204 || status === 205 || status === 304 || request.method === "HEAD";
          if (noBody) response.resume();
          resolve(new Response(noBody ? null : webBody(response), { status, statusText: response.statusMessage ?? "", headers: answerHeaders }));
        } catch (error) {
          response.destroy();
          reject(new TypeError("fetch failed", { cause: error }));
        }
      });
      request.on("error", (error) => reject(signal?.aborted ? (signal.reason as Error) : new TypeError("fetch failed", { cause: error })));
      request.end();
    });
}

/** The response's body as a web stream, read from the socket only as the consumer asks (backpressure). */
function webBody(response: IncomingMessage): ReadableStream<Uint8Array> {
  const chunks = response[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let next: IteratorResult<Buffer>;
        try {
          next = await chunks.next();
        } catch (error) {
          // As fetch's body fails: the network error as the cause.
          throw new TypeError("terminated", { cause: error });
        }
        if (next.done) controller.close();
        else controller.enqueue(new Uint8Array(next.value.buffer, next.value.byteOffset, next.value.byteLength));
      },
      async cancel() {
        response.destroy();
        await chunks.return?.();
      },
    },
    { highWaterMark: 0 },
  );
}
