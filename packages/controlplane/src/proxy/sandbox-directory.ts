/**
 * The sandboxes the proxy routes to, by instance id (`status.sandboxID`): an informer's cache of the
 * store, so a request costs no store read, and an unknown id (a scan, a typo) costs nothing either.
 * A sandbox created a moment ago may still be on its way through the watch: a miss waits until the
 * informer has applied what it has received, and looks once more.
 */
import type { Logger } from "pino";
import type { Sandbox } from "@fast-sandbox/api";
import type { Informer } from "../controller/informer.js";
import type { ResourceStore } from "../store/resource-store.js";
import { sandboxInformer } from "../reconcile/sandbox-informer.js";

const BY_SANDBOX_ID = "sandboxID";

export interface SandboxDirectoryOptions {
  store: ResourceStore;
  logger: Logger;
  /** Only this namespace (when it makes its own informer). @default all namespaces */
  namespace?: string;
  /** The Sandbox informer shared with the control plane's controllers. @default one of its own */
  informer?: Informer<"Sandbox">;
}

/** Sandboxes by the id of their current instance. */
const sandboxesById = (sandbox: Sandbox): string[] => (sandbox.status?.sandboxID ? [sandbox.status.sandboxID] : []);

export class SandboxDirectory {
  private readonly informer: Informer<"Sandbox">;
  private holdingInformer = false;

  constructor(options: SandboxDirectoryOptions) {
    this.informer =
      options.informer ??
      sandboxInformer({ store: options.store, logger: options.logger, ...(options.namespace !== undefined ? { namespace: options.namespace } : {}) });
    this.informer.addIndexes({ [BY_SANDBOX_ID]: sandboxesById });
  }

  /** Lists and watches the sandboxes; resolves once the first list is in the cache. */
  async start(): Promise<void> {
    if (!this.holdingInformer) this.informer.start();
    this.holdingInformer = true;
    await this.informer.waitForSync();
  }

  /** Releases the informer (stopping it unless other users hold it). */
  stop(): void {
    if (!this.holdingInformer) return;
    this.holdingInformer = false;
    this.informer.stop();
  }

  /** The sandbox whose current instance has this id, or undefined. */
  async lookup(sandboxId: string): Promise<Sandbox | undefined> {
    const found = this.cached(sandboxId);
    if (found) return found;
    await this.informer.whenIdle();
    return this.cached(sandboxId);
  }

  /**
   * Tells `listener` of every change to a sandbox after it is in the cache (its record now) and of
   * every deletion (the record as last seen, `deleted`); returns what stops it. The proxy closes the
   * tunnels a new access token or a deletion no longer allows (`ProxyTargetSources.onSandboxChange`).
   */
  onChange(listener: (sandbox: Sandbox, deleted: boolean) => void): () => void {
    return this.informer.addHandlers({ onUpdate: (_previous, current) => listener(current, false), onDelete: (sandbox) => listener(sandbox, true) });
  }

  /** Every sandbox in the cache (no wait). */
  list(): Sandbox[] {
    return this.informer.list();
  }

  private cached(sandboxId: string): Sandbox | undefined {
    // An id is unique to one instance; two records could only share one by a bug elsewhere, and then neither is trusted.
    const matches = this.informer.byIndex(BY_SANDBOX_ID, sandboxId);
    return matches.length === 1 ? matches[0] : undefined;
  }
}
