/**
 * Which sandbox signed an E2B presigned file URL (signed-file-url.ts). Such a URL names no sandbox,
 * so the first request of a URL compares its signature against every sandbox whose token the proxy
 * can derive: a SHA-256 per sandbox, tens of milliseconds of the proxy's event loop at thousands of
 * sandboxes. Two things bound what that costs:
 * - A signature that matched is remembered (most recently used first, up to `remembered`): the
 *   same URL again (a retried or resumed download, a second reader) goes to its sandbox at once,
 *   its signature checked against that sandbox's token alone.
 * - The time spent scanning is budgeted (token buckets of milliseconds): per client address (an
 *   IPv6 one by its /64, what one host gets), so one client flooding the proxy with made-up
 *   signatures (or with new URLs its own sandbox signed) spends its own budget, and in all, so that
 *   many clients together cannot hold the event loop either. A URL met while its client's budget or
 *   the total is used up is answered "busy" (429) without a scan until they refill; remembered URLs
 *   and every other request through the proxy are served meanwhile. Clients that reach the proxy
 *   from one address (through a load balancer that does not keep the client's address, NAT,
 *   `kubectl port-forward`) share one budget: one of them flooding delays the others' first use of
 *   new URLs.
 */
import { performance } from "node:perf_hooks";
import type { Sandbox } from "@fast-sandbox/api";
import { signedBy, type SignedFileRequest } from "./signed-file-url.js";

/** The sandboxes that can sign presigned URLs, and their tokens. */
export interface UrlSigners {
  list(): Iterable<{ sandbox: Sandbox; token: string }>;
  tokenOf(sandbox: Sandbox): string | undefined;
}

/** A budget of scanning time: `msPerSecond` on average, `burstMs` at once after a quiet while. */
export interface ScanBudget {
  msPerSecond: number;
  burstMs: number;
}

export interface SignedFileLookupOptions {
  signers: UrlSigners;
  /** The sandbox whose current instance has this id (a remembered URL's sandbox). */
  lookup: (sandboxId: string) => Promise<Sandbox | undefined>;
  /** Each client address's budget. @default 100 ms per second (a tenth of a core), 500 ms at once */
  perClient?: ScanBudget;
  /** The budget of all clients together. @default 250 ms per second (a quarter of a core), 1000 ms at once */
  total?: ScanBudget;
  /** Matched signatures remembered. @default 10000 */
  remembered?: number;
  /** Client addresses whose budgets are tracked at once (the idle ones go first). @default 10000 */
  clients?: number;
  /** A monotonic clock in ms. @default performance.now */
  now?: () => number;
}

export type SignedFileMatch = { sandbox: Sandbox; token: string } | "unmatched" | "busy";

/** A token bucket of milliseconds. */
class Bucket {
  private left: number;
  private at: number;

  constructor(
    private readonly budget: ScanBudget,
    now: number,
  ) {
    this.left = budget.burstMs;
    this.at = now;
  }

  /** What is left at `now`, refilled for the time since it was last looked at. */
  available(now: number): number {
    this.left = Math.min(this.budget.burstMs, this.left + ((now - this.at) * this.budget.msPerSecond) / 1000);
    this.at = now;
    return this.left;
  }

  spend(ms: number): void {
    this.left -= ms;
  }

  /** Whether it is full again by `now` (nothing to remember about its client). */
  full(now: number): boolean {
    return this.available(now) >= this.budget.burstMs;
  }
}

export class SignedFileLookup {
  private readonly signers: UrlSigners;
  private readonly lookup: (sandboxId: string) => Promise<Sandbox | undefined>;
  private readonly perClient: ScanBudget;
  private readonly capacity: number;
  private readonly clientCapacity: number;
  private readonly now: () => number;
  /** Signature → the instance id of the sandbox that signed it; a Map iterates oldest first. */
  private readonly matched = new Map<string, string>();
  private readonly total: Bucket;
  /** By client address, least recently used first. */
  private readonly clients = new Map<string, Bucket>();

  constructor(options: SignedFileLookupOptions) {
    this.signers = options.signers;
    this.lookup = options.lookup;
    this.perClient = options.perClient ?? { msPerSecond: 100, burstMs: 500 };
    this.capacity = options.remembered ?? 10_000;
    this.clientCapacity = options.clients ?? 10_000;
    this.now = options.now ?? (() => performance.now());
    this.total = new Bucket(options.total ?? { msPerSecond: 250, burstMs: 1000 }, this.now());
  }

  /** The sandbox that signed the request's URL; `client` is the caller's address (its own budget). */
  async find(request: SignedFileRequest, client = ""): Promise<SignedFileMatch> {
    const remembered = await this.rememberedMatch(request);
    if (remembered) return remembered;
    const started = this.now();
    const own = this.bucketOf(client, started);
    if (own.available(started) <= 0 || this.total.available(started) <= 0) return "busy";
    let found: { sandbox: Sandbox; token: string } | undefined;
    for (const signer of this.signers.list()) {
      if (!signedBy(request, signer.token)) continue;
      found = signer;
      break;
    }
    // A match costs as much as a miss: anyone with a sandbox can sign any number of new URLs.
    const spent = this.now() - started;
    own.spend(spent);
    this.total.spend(spent);
    if (!found) return "unmatched";
    const sandboxId = found.sandbox.status?.sandboxID;
    if (sandboxId) this.remember(request.signature, sandboxId);
    return found;
  }

  /**
   * Whether `sandbox`'s token signed the request: a URL on the sandbox's own host name
   * (`49983-<id>.<domain>`, what E2B's SDKs build without E2B_SANDBOX_URL) names its sandbox, so
   * one signature is computed, against that sandbox alone (no scan, no budget). Its token, if so.
   */
  signerOf(request: SignedFileRequest, sandbox: Sandbox): { sandbox: Sandbox; token: string } | undefined {
    const token = this.signers.tokenOf(sandbox);
    return token && signedBy(request, token) ? { sandbox, token } : undefined;
  }

  private bucketOf(address: string, now: number): Bucket {
    const client = clientKey(address);
    let bucket = this.clients.get(client);
    if (bucket) {
      this.clients.delete(client);
    } else {
      if (this.clients.size >= this.clientCapacity) this.forgetIdleClients(now);
      bucket = new Bucket(this.perClient, now);
    }
    this.clients.set(client, bucket);
    return bucket;
  }

  /** Drops the clients whose budgets are full again (a new bucket would be the same); else the least recently seen. */
  private forgetIdleClients(now: number): void {
    for (const [client, bucket] of this.clients) if (bucket.full(now)) this.clients.delete(client);
    if (this.clients.size >= this.clientCapacity) this.clients.delete(this.clients.keys().next().value as string);
  }

  private async rememberedMatch(request: SignedFileRequest): Promise<{ sandbox: Sandbox; token: string } | undefined> {
    const sandboxId = this.matched.get(request.signature);
    if (sandboxId === undefined) return undefined;
    const sandbox = await this.lookup(sandboxId);
    const token = sandbox ? this.signers.tokenOf(sandbox) : undefined;
    if (!sandbox || !token || !signedBy(request, token)) {
      // Gone, or another instance under that id: the URL is looked for again.
      this.matched.delete(request.signature);
      return undefined;
    }
    this.remember(request.signature, sandboxId);
    return { sandbox, token };
  }

  private remember(signature: string, sandboxId: string): void {
    this.matched.delete(signature);
    this.matched.set(signature, sandboxId);
    if (this.matched.size > this.capacity) this.matched.delete(this.matched.keys().next().value as string);
  }
}

/**
 * The budget's key for a client address: an IPv4 address itself (also written IPv4-mapped), an IPv6
 * one its /64 — a host is given a /64 and can use any address in it.
 */
export function clientKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1] ?? address;
  if (!address.includes(":")) return address;
  const [head = "", tail] = address.toLowerCase().split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  return `${groups
    .slice(0, 4)
    .map((group) => group.replace(/^0+(?=.)/, ""))
    .join(":")}::/64`;
}
