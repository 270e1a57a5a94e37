/**
 * The tunnels (CONNECT) and WebSockets the sandbox proxy holds open, by sandbox, each with the
 * access token hash it was let in with. A token is checked when a connection opens; these last as
 * long as their clients like, so they are closed when their sandbox's token changes (`fsb token NAME`:
 * "the old one stops working") and when the sandbox is deleted. Plain requests are not held here:
 * one in flight may finish.
 */
import type { Duplex } from "node:stream";
import type { Sandbox } from "@fast-sandbox/api";
import type { ProxyTarget } from "./proxy-target.js";

/** `namespace/name`: a sandbox's record across its instances. */
function keyOf(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

export class OpenTunnels {
  /** Each sandbox's open connections → the token hash each was let in with. */
  private readonly bySandbox = new Map<string, Map<Duplex, string | undefined>>();

  /** Holds `connection` until it closes, as let in to `target`'s sandbox with `target.accessTokenHash`. */
  add(connection: Duplex, target: Pick<ProxyTarget, "namespace" | "name" | "accessTokenHash">): void {
    if (connection.destroyed) return;
    const key = keyOf(target.namespace, target.name);
    let connections = this.bySandbox.get(key);
    if (!connections) {
      connections = new Map();
      this.bySandbox.set(key, connections);
    }
    connections.set(connection, target.accessTokenHash);
    connection.once("close", () => {
      connections.delete(connection);
      if (connections.size === 0 && this.bySandbox.get(key) === connections) this.bySandbox.delete(key);
    });
  }

  /**
   * A sandbox's record changed (or it is gone: `deleted`): closes its connections let in with
   * another token than its own now, and every one once it is deleted or being deleted.
   */
  sandboxChanged(sandbox: Sandbox, deleted: boolean): void {
    const connections = this.bySandbox.get(keyOf(sandbox.metadata.namespace ?? "default", sandbox.metadata.name));
    if (!connections) return;
    const gone = deleted || Boolean(sandbox.metadata.deletionTimestamp);
    const hash = sandbox.status?.accessTokenHash;
    for (const [connection, letInWith] of [...connections]) {
      if (gone || letInWith !== hash) connection.destroy();
    }
  }
}
