/**
 * What the sandbox proxy holds open, by sandbox, each with the access token hash it was let in
 * with: tunnels (CONNECT), WebSockets, and requests in flight (a request may stream for as long as
 * its client and the sandbox like: a shell's process.Connect/StreamInput, a long download or upload).
 * A token is checked when a connection or request opens; so they are cut when their sandbox's token
 * changes (`fsb token NAME`: "the old one stops working") and when the sandbox is deleted. What was
 * let in by a presigned URL or a traffic token holds the access token hash it was let in under too
 * (the signature and the traffic token stand for that token), and goes with it.
 */
import type { Duplex } from "node:stream";
import type { Sandbox } from "@fast-sandbox/api";
import type { ProxyTarget } from "./proxy-target.js";

/** `namespace/name`: a sandbox's record across its instances. */
function keyOf(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** Something held open: what cuts it (a connection's destroy, a request's own stream or socket). */
export interface Cuttable {
  destroy(): void;
}

export class OpenTunnels {
  /** Each sandbox's open connections and requests → the token hash each was let in with. */
  private readonly bySandbox = new Map<string, Map<Cuttable, string | undefined>>();

  /** Holds `connection` until it closes, as let in to `target`'s sandbox with `target.accessTokenHash`. */
  add(connection: Duplex, target: Pick<ProxyTarget, "namespace" | "name" | "accessTokenHash">): void {
    if (connection.destroyed) return;
    const release = this.hold(connection, target);
    connection.once("close", release);
  }

  /**
   * Holds `held` as let in to `target`'s sandbox with `target.accessTokenHash`, until the returned
   * function is called (once it is done: a request's response closed). Calling it again does nothing.
   */
  hold(held: Cuttable, target: Pick<ProxyTarget, "namespace" | "name" | "accessTokenHash">): () => void {
    const key = keyOf(target.namespace, target.name);
    let entries = this.bySandbox.get(key);
    if (!entries) {
      entries = new Map();
      this.bySandbox.set(key, entries);
    }
    entries.set(held, target.accessTokenHash);
    const mine = entries;
    return () => {
      mine.delete(held);
      if (mine.size === 0 && this.bySandbox.get(key) === mine) this.bySandbox.delete(key);
    };
  }

  /**
   * A sandbox's record changed (or it is gone: `deleted`): cuts what was let in with another token
   * than its own now, and everything once it is deleted or being deleted.
   */
  sandboxChanged(sandbox: Sandbox, deleted: boolean): void {
    const entries = this.bySandbox.get(keyOf(sandbox.metadata.namespace ?? "default", sandbox.metadata.name));
    if (!entries) return;
    const gone = deleted || Boolean(sandbox.metadata.deletionTimestamp);
    const hash = sandbox.status?.accessTokenHash;
    for (const [held, letInWith] of [...entries]) {
      if (gone || letInWith !== hash) held.destroy();
    }
  }
}
