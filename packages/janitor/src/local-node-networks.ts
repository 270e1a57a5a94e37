/**
 * NodeNetworks over the state directories of this host's sandbox networks, with the agent's own
 * teardown (network-attachment.ts): a record holds everything its teardown needs.
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { AttachmentStore, DEFAULT_NETWORK_STATE_ROOT, teardownAttachment, toolsForRecord } from "@fast-sandbox/agent";
import type { NetworkAttachmentFacts, NodeNetworks } from "./node-networks.js";

export interface LocalNodeNetworksOptions {
  /** The networks' state directories (FSB_NETWORK_STATE_DIR of their agents). @default every directory under /run/fast-sandbox/network */
  stateDirs?: readonly string[];
}

export class LocalNodeNetworks implements NodeNetworks {
  private readonly stateDirs: readonly string[] | undefined;
  /** Which state directory each attachment was listed from. */
  private readonly homes = new Map<string, string>();

  constructor(options: LocalNodeNetworksOptions = {}) {
    this.stateDirs = options.stateDirs;
  }

  listAttachments(): Promise<NetworkAttachmentFacts[]> {
    const facts: NetworkAttachmentFacts[] = [];
    for (const stateDir of this.directories()) {
      for (const { record, changedAtMs } of new AttachmentStore(stateDir).list()) {
        this.homes.set(record.id, stateDir);
        facts.push({
          id: record.id,
          network: record.network.name,
          agent: record.owner.agent,
          ...(record.owner.agentUid ? { agentUid: record.owner.agentUid } : {}),
          containerdNamespace: record.owner.containerdNamespace,
          state: record.state,
          ...(record.sandboxId ? { sandboxId: record.sandboxId } : {}),
          changedAtMs,
        });
      }
    }
    return Promise.resolve(facts);
  }

  async removeAttachment(attachment: NetworkAttachmentFacts): Promise<boolean> {
    const stateDir = this.homes.get(attachment.id);
    const stored = stateDir ? new AttachmentStore(stateDir).read(attachment.id) : undefined;
    if (!stateDir || !stored) return false;
    await teardownAttachment(toolsForRecord(stored.record, stateDir), stored.record);
    return true;
  }

  private directories(): readonly string[] {
    if (this.stateDirs) return this.stateDirs;
    try {
      return readdirSync(DEFAULT_NETWORK_STATE_ROOT, { withFileTypes: true })
        .filter((entry) => entry.isDirectory())
        .map((entry) => join(DEFAULT_NETWORK_STATE_ROOT, entry.name));
    } catch {
      return [];
    }
  }
}
