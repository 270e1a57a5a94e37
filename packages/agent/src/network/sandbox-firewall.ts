/**
 * The host-side firewall of a sandbox network (rules: firewall-rules.ts) applied through nft. Every
 * operation is one nftables transaction, so agents of the node may work on the same tables at
 * once, and each is idempotent.
 */
import {
  deleteSetCommand,
  deleteTablesCommands,
  emptyGroupSets,
  nodeCommands,
  portGuardCommands,
  removalCommands,
  sandboxPolicyCommands,
  elementKey,
  type AttachmentKeys,
  type FirewallNetwork,
  type NftCommand,
  type NftListing,
  type PortGuard,
  type SandboxPolicy,
} from "./firewall-rules.js";
import { Nft } from "./nft.js";

/** How many times a removal is tried again from a fresh listing when objects of it vanished meanwhile. */
const REMOVAL_ATTEMPTS = 5;

export class SandboxFirewall {
  readonly network: FirewallNetwork;
  private readonly nft: Nft;
  private nodeReady: Promise<void> | undefined;

  constructor(network: FirewallNetwork, nft: Nft = new Nft()) {
    this.network = network;
    this.nft = nft;
  }

  /** The node's tables and base chains; done once per instance (again after a failure). */
  ensureNode(): Promise<void> {
    this.nodeReady ??= this.nft.apply(nodeCommands(this.network)).catch((error: unknown) => {
      this.nodeReady = undefined;
      throw error;
    });
    return this.nodeReady;
  }

  /** Pins a bridge port to its sandbox's MAC and address; until a policy is applied, the sandbox reaches nothing. */
  async guardPort(guard: PortGuard): Promise<void> {
    await this.ensureNode();
    await this.nft.apply(portGuardCommands(this.network, guard));
  }

  async applyPolicy(policy: SandboxPolicy): Promise<void> {
    await this.ensureNode();
    await this.nft.apply(sandboxPolicyCommands(this.network, policy));
  }

  /** Removes every rule, element and chain of one attachment; then the group sets it was the last member of. */
  async remove(keys: AttachmentKeys): Promise<void> {
    // The listing can be stale by the time the transaction runs (another agent of the node, or the
    // janitor finishing a teardown cut short, removed an object of it): nft then refuses the whole
    // transaction with ENOENT, and a fresh listing names only what is still there.
    let listing = await this.listing();
    let commands = removalCommands(this.network, listing, keys);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.nft.apply(commands);
        break;
      } catch (error) {
        if (attempt >= REMOVAL_ATTEMPTS || !(error instanceof Error && /No such file or directory/.test(error.message))) throw error;
        listing = await this.listing();
        commands = removalCommands(this.network, listing, keys);
      }
    }
    // Another agent may add a member meanwhile: its chain then refers to the set and the delete fails.
    for (const set of emptyGroupSets(this.network, withoutRemovedElements(listing, commands))) {
      await this.nft.apply([deleteSetCommand(this.network, set)]).catch(() => undefined);
    }
  }

  /** Both tables (inet, bridge) as nft lists them; empty for tables that do not exist. */
  async listing(): Promise<NftListing> {
    const [inet, bridge] = await Promise.all([this.nft.list("inet", this.network.table), this.nft.list("bridge", this.network.table)]);
    return [...(inet ?? []), ...(bridge ?? [])];
  }

  /** Removes both tables (the node gives up the network: tests, uninstall). */
  async removeNode(): Promise<void> {
    this.nodeReady = undefined;
    for (const command of deleteTablesCommands(this.network)) {
      await this.nft.apply([command]).catch((error: unknown) => {
        if (!(error instanceof Error && /No such file or directory/.test(error.message))) throw error;
      });
    }
  }
}

/** The listing as it is after `commands` removed their elements (only element deletions matter here). */
function withoutRemovedElements(listing: NftListing, commands: readonly NftCommand[]): NftListing {
  const removed = new Set(
    commands.flatMap((command) => {
      const element = "delete" in command ? command.delete.element : undefined;
      return element ? [JSON.stringify([element.family, element.name, (element.elem as unknown[])[0]])] : [];
    }),
  );
  if (removed.size === 0) return [];
  return listing.map((object) => {
    const body = object.set;
    if (!body || !Array.isArray(body.elem)) return object;
    const elem = (body.elem as unknown[]).filter((item) => !removed.has(JSON.stringify([body.family, body.name, elementKey(item)])));
    return { set: { ...body, elem } };
  });
}
