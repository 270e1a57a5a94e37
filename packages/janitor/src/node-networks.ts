/**
 * The janitor's port to a node's sandbox networks: the network namespaces agents made for isolated
 * sandboxes (prepared, or claimed by a sandbox), as their records in each network's state
 * directory describe them, and their teardown (firewall rules, CNI DEL, the namespace, the record).
 */
import type { AttachmentState } from "@fast-sandbox/agent";

export interface NetworkAttachmentFacts {
  /** The namespace's id (its record's name). */
  id: string;
  /** The sandbox network it is on. */
  network: string;
  agent: string;
  /** The agent's Pod UID (Kubernetes mode). */
  agentUid?: string;
  /** The containerd namespace of the agent's sandboxes. */
  containerdNamespace: string;
  state: AttachmentState;
  /** The sandbox that claimed it. */
  sandboxId?: string;
  /** When its record last changed: the protection window runs from here. */
  changedAtMs: number;
}

export interface NodeNetworks {
  listAttachments(): Promise<NetworkAttachmentFacts[]>;
  /** Tears the namespace down completely; false when its record was gone already. Throws when a step fails (a later pass retries). */
  removeAttachment(attachment: NetworkAttachmentFacts): Promise<boolean>;
}
