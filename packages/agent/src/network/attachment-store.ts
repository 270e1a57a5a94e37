/**
 * One record per network namespace of a sandbox network, in the network's state directory
 * (`<stateDir>/attachments/<id>.json`), shared by the node's agents and read by the janitor. A
 * record is written before anything it describes exists and removed only after all of it is gone,
 * so whoever finds it — the agent after a restart, its successor, the janitor — can finish either
 * way: it holds everything a teardown needs (the CNI configuration and results, the firewall keys).
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { EgressPolicy } from "../runtime/runtime.js";
import type { CniNetworkList, CniResult } from "./cni-invoker.js";
import type { SandboxAddress } from "./cni-conflist.js";

/**
 * `preparing`: the namespace and its CNI attachments are being made (or a crash cut that short);
 * `prepared`: ready, claimed by no sandbox; `claimed`: a sandbox's.
 */
export type AttachmentState = "preparing" | "prepared" | "claimed";

export interface AttachmentOwner {
  agent: string;
  /** The agent's Pod UID (Kubernetes mode); absent in the embedded mode. */
  agentUid?: string;
  /** The containerd namespace of the agent's sandboxes: the janitor only judges records of the namespaces it looks after. */
  containerdNamespace: string;
}

export interface AttachmentRecord {
  version: 1;
  /** The network namespace's id: 12 lower-case hex digits, unique on the node. */
  id: string;
  state: AttachmentState;
  owner: AttachmentOwner;
  /** The network: its name (bridge and nftables tables) and subnet. */
  network: { name: string; subnet: string };
  netnsName: string;
  netnsPath: string;
  /** `CNI_CONTAINERID` of both attachments. */
  cniContainerId: string;
  cniPluginDirs: string[];
  /** The lists the namespace was attached with: what DEL must be given again. */
  lists: { loopback: CniNetworkList; sandbox: CniNetworkList };
  results?: { loopback?: CniResult; sandbox?: CniResult };
  /** Known once the sandbox network's ADD succeeded. */
  address?: SandboxAddress;
  /** The sandbox that claimed it. */
  sandboxId?: string;
  /**
   * The claim's firewall policy: what an agent applies again after a restart, or once it found the
   * firewall's rules gone. Absent before a claim, and in records of agents that did not keep it.
   */
  policy?: AttachmentPolicy;
  createdAt: string;
}

/** What a claim put in force for its sandbox, besides the port guard (firewall-rules.ts's SandboxPolicy). */
export interface AttachmentPolicy {
  egress: EgressPolicy;
  /** The resolvers of the sandbox's resolv.conf (reachable on port 53 unless egress is denyAll). */
  dnsServers: string[];
  /** Its peer group, when it may reach the sandboxes of its pool. */
  peerGroup?: string;
}

/** A record and when its file last changed (the janitor's protection window runs from there). */
export interface StoredAttachment {
  record: AttachmentRecord;
  changedAtMs: number;
}

const ID = /^[0-9a-f]{12}$/;

export function isAttachmentId(id: string): boolean {
  return ID.test(id);
}

export class AttachmentStore {
  readonly directory: string;

  /** @param stateDir the network's state directory */
  constructor(stateDir: string) {
    this.directory = join(stateDir, "attachments");
  }

  /** Writes the record atomically (a reader sees the old or the new one, never half). */
  write(record: AttachmentRecord): void {
    if (!isAttachmentId(record.id)) throw new Error(`not an attachment id: ${record.id}`);
    mkdirSync(this.directory, { recursive: true, mode: 0o700 });
    const path = this.path(record.id);
    const temporary = `${path}.${process.pid}.tmp`;
    writeFileSync(temporary, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
    renameSync(temporary, path);
  }

  read(id: string): StoredAttachment | undefined {
    if (!isAttachmentId(id)) return undefined;
    try {
      const path = this.path(id);
      const record = JSON.parse(readFileSync(path, "utf8")) as AttachmentRecord;
      return record.version === 1 && record.id === id ? { record, changedAtMs: statSync(path).mtimeMs } : undefined;
    } catch {
      return undefined;
    }
  }

  /** Every readable record (files being written or not ours are skipped). */
  list(): StoredAttachment[] {
    let names: string[];
    try {
      names = readdirSync(this.directory);
    } catch {
      return [];
    }
    return names.flatMap((name) => {
      const id = name.endsWith(".json") ? name.slice(0, -".json".length) : "";
      const stored = this.read(id);
      return stored ? [stored] : [];
    });
  }

  remove(id: string): void {
    if (isAttachmentId(id)) rmSync(this.path(id), { force: true });
  }

  private path(id: string): string {
    return join(this.directory, `${id}.json`);
  }
}
