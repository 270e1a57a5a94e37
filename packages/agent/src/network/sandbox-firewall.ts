/**
 * The host-side firewall of a sandbox network (rules: firewall-rules.ts) applied through nft, and
 * the device group that marks the network's bridge ports (bridge-ports.ts). Every nft operation is
 * one nftables transaction, so agents of the node may work on the same tables at once, and each is
 * idempotent.
 */
import { IpBridgePorts, type BridgePorts } from "./bridge-ports.js";
import {
  deleteSetCommand,
  deleteTablesCommands,
  emptyGroupSets,
  nodeCommands,
  portGroupOf,
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

/**
 * The most JSON one `restore` transaction carries: nft takes its batch as one argument, and the
 * kernel refuses an argument over 128 KiB (E2BIG).
 */
const RESTORE_BATCH_CHARS = 96 * 1024;

/** One attachment's part of the firewall: its port guard, and its policy once a sandbox claimed it. */
export interface FirewallAttachment {
  guard: PortGuard;
  policy?: SandboxPolicy;
}

export class SandboxFirewall {
  readonly network: FirewallNetwork;
  private readonly nft: Nft;
  private readonly ports: BridgePorts;
  private readonly portGroup: number;
  private nodeReady: Promise<void> | undefined;

  constructor(network: FirewallNetwork, nft: Nft = new Nft(), ports: BridgePorts = new IpBridgePorts()) {
    this.network = network;
    this.nft = nft;
    this.ports = ports;
    this.portGroup = portGroupOf(network);
  }

  /**
   * The node's tables and base chains; done once per instance (again after a failure), unless
   * `rebuild`: the tables were found gone, and whoever waits for the node from then on waits for
   * them to be made again.
   */
  ensureNode(options: { rebuild?: boolean } = {}): Promise<void> {
    if (options.rebuild) this.nodeReady = undefined;
    this.nodeReady ??= this.nft.apply(nodeCommands(this.network)).catch((error: unknown) => {
      this.nodeReady = undefined;
      throw error;
    });
    return this.nodeReady;
  }

  /**
   * Pins a bridge port to its sandbox's MAC and address; until a policy is applied, the sandbox
   * reaches nothing. The port is marked as the network's as well (at the same time: either makes it
   * drop what is not its sandbox's): should its guard ever be lost, the bridge drops everything it sends.
   */
  async guardPort(guard: PortGuard): Promise<void> {
    const marked = this.ports.mark([guard.hostInterface], this.portGroup);
    const guarded = this.ensureNode().then(() => this.nft.apply(portGuardCommands(this.network, guard)));
    // Both settle before a failure is told: the caller's undo (remove) must list what the nft
    // transaction made, not run beside it and leave its chain and set entries behind.
    const [markResult, guardResult] = await Promise.allSettled([marked, guarded]);
    if (markResult.status === "rejected") throw markResult.reason;
    if (guardResult.status === "rejected") throw guardResult.reason;
  }

  async applyPolicy(policy: SandboxPolicy): Promise<void> {
    await this.ensureNode();
    await this.nft.apply(sandboxPolicyCommands(this.network, policy));
  }

  /**
   * Puts the port guards and policies of `attachments` back (the node's rules first): after an
   * agent restart, or once the firewall lost them. As few transactions as fit (a restart with many
   * sandboxes is not one nft process each); the attachments of a transaction that fails are tried
   * one by one. Resolves with those that could not be restored, and why.
   */
  async restore(attachments: readonly FirewallAttachment[]): Promise<{ attachment: FirewallAttachment; error: unknown }[]> {
    if (attachments.length === 0) return [];
    await this.ensureNode();
    const allMarked = await this.ports
      .mark(
        attachments.map((attachment) => attachment.guard.hostInterface),
        this.portGroup,
      )
      .then(
        () => true,
        () => false,
      );
    const failed: { attachment: FirewallAttachment; error: unknown }[] = [];
    for (const batch of restoreBatches(this.network, attachments)) {
      if (allMarked) {
        try {
          await this.nft.apply(batch.flatMap(({ commands }) => commands));
          continue;
        } catch {
          // One of them spoils the whole transaction (nft refuses it all): each on its own below.
        }
      }
      for (const { attachment } of batch) {
        try {
          await this.guardPort(attachment.guard);
          if (attachment.policy) await this.applyPolicy(attachment.policy);
        } catch (error) {
          failed.push({ attachment, error });
        }
      }
    }
    return failed;
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

/** The attachments with their commands, in batches of at most RESTORE_BATCH_CHARS of JSON (one attachment may go over alone). */
function restoreBatches(network: FirewallNetwork, attachments: readonly FirewallAttachment[]) {
  const batches: { attachment: FirewallAttachment; commands: NftCommand[] }[][] = [];
  let chars = 0;
  for (const attachment of attachments) {
    const commands = [...portGuardCommands(network, attachment.guard), ...(attachment.policy ? sandboxPolicyCommands(network, attachment.policy) : [])];
    const size = JSON.stringify(commands).length;
    const last = batches.at(-1);
    if (last && chars + size <= RESTORE_BATCH_CHARS) {
      last.push({ attachment, commands });
      chars += size;
    } else {
      batches.push([{ attachment, commands }]);
      chars = size;
    }
  }
  return batches;
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
