/**
 * Which sandbox signed an E2B presigned file URL (signed-file-url.ts). Such a URL names no sandbox,
 * so the first request of a URL compares its signature against every sandbox whose token the proxy
 * can derive: a SHA-256 per sandbox, tens of milliseconds of the proxy's event loop at thousands of
 * sandboxes. Two things bound what that costs:
 * - A signature that matched is remembered (most recently used first, up to `remembered`): the
 *   same URL again (a retried or resumed download, a second reader) goes to its sandbox at once,
 *   its signature checked against that sandbox's token alone.
 * - The time spent on signatures that matched nothing is budgeted (a token bucket of milliseconds):
 *   once a flood of made-up signatures has used it up, further unknown signatures are answered "busy"
 *   (429) without a scan until it refills. Remembered URLs and every other request through the proxy
 *   are served meanwhile; a scan that finds its sandbox costs the budget nothing.
 */
import { performance } from "node:perf_hooks";
import type { Sandbox } from "@fast-sandbox/api";
import { signedBy, type SignedFileRequest } from "./signed-file-url.js";

/** The sandboxes that can sign presigned URLs, and their tokens. */
export interface UrlSigners {
  list(): Iterable<{ sandbox: Sandbox; token: string }>;
  tokenOf(sandbox: Sandbox): string | undefined;
}

export interface SignedFileLookupOptions {
  signers: UrlSigners;
  /** The sandbox whose current instance has this id (a remembered URL's sandbox). */
  lookup: (sandboxId: string) => Promise<Sandbox | undefined>;
  /** Milliseconds per second that scans for signatures matching no sandbox may take, on average. @default 100 (a tenth of a core) */
  unmatchedMsPerSecond?: number;
  /** Milliseconds such scans may take at once, after a quiet while. @default 500 */
  unmatchedBurstMs?: number;
  /** Matched signatures remembered. @default 10000 */
  remembered?: number;
  /** A monotonic clock in ms. @default performance.now */
  now?: () => number;
}

export type SignedFileMatch = { sandbox: Sandbox; token: string } | "unmatched" | "busy";

export class SignedFileLookup {
  private readonly signers: UrlSigners;
  private readonly lookup: (sandboxId: string) => Promise<Sandbox | undefined>;
  private readonly ratePerMs: number;
  private readonly burstMs: number;
  private readonly capacity: number;
  private readonly now: () => number;
  /** Signature → the instance id of the sandbox that signed it; a Map iterates oldest first. */
  private readonly matched = new Map<string, string>();
  private budgetMs: number;
  private budgetAt: number;

  constructor(options: SignedFileLookupOptions) {
    this.signers = options.signers;
    this.lookup = options.lookup;
    this.ratePerMs = (options.unmatchedMsPerSecond ?? 100) / 1000;
    this.burstMs = options.unmatchedBurstMs ?? 500;
    this.capacity = options.remembered ?? 10_000;
    this.now = options.now ?? (() => performance.now());
    this.budgetMs = this.burstMs;
    this.budgetAt = this.now();
  }

  async find(request: SignedFileRequest): Promise<SignedFileMatch> {
    const remembered = await this.rememberedMatch(request);
    if (remembered) return remembered;
    if (this.budget() <= 0) return "busy";
    const started = this.now();
    for (const signer of this.signers.list()) {
      if (!signedBy(request, signer.token)) continue;
      const sandboxId = signer.sandbox.status?.sandboxID;
      if (sandboxId) this.remember(request.signature, sandboxId);
      return signer;
    }
    this.budgetMs -= this.now() - started;
    return "unmatched";
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

  /** The budget left for unmatched scans, refilled for the time since it was last looked at. */
  private budget(): number {
    const now = this.now();
    this.budgetMs = Math.min(this.burstMs, this.budgetMs + (now - this.budgetAt) * this.ratePerMs);
    this.budgetAt = now;
    return this.budgetMs;
  }
}
