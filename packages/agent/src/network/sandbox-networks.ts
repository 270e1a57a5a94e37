/**
 * The runtime's network sub-service: the isolated sandboxes of one agent on the node's sandbox
 * network. A create claims a network namespace — one prepared ahead when there is one (see
 * runtime/prepared-pool.ts), else one made on the spot — and gets its policy applied; a delete tears it
 * down. Namespaces are keyed by their own id, never by the sandbox id, so one can be made before
 * anyone knows which sandbox gets it; the record says which did.
 *
 * After a restart `recover` keeps the namespaces of the sandboxes that still exist, takes its
 * prepared ones back into the pool, and tears down the rest (a create or teardown a crash cut
 * short). What no agent will ever come back for is the janitor's.
 *
 * The firewall (sandbox-firewall.ts) lives in the kernel, not in the agent: an agent restart leaves
 * it as it was, but anything that flushes the host's ruleset (`nft flush ruleset`; Debian's
 * `systemctl reload nftables`, whose /etc/nftables.conf starts with one) takes all of it, and the
 * sandboxes are then open to the host and to each other. So each record keeps what its rules are
 * made of; `recover` puts the rules of the namespaces it keeps back, and, every
 * `firewallCheckIntervalMs` while the agent has namespaces, a check compares the firewall with what
 * this agent put in force and, when something is gone, rebuilds the node's rules and puts back all
 * of this agent's (each agent of the node its own). `stop` ends the checks.
 *
 * A teardown that fails (an nft or ip process timing out on a busy host) is tried again by this
 * agent, `teardownRetryMs` later and then less and less often, until it succeeds: the janitor
 * leaves a live agent's prepared namespaces alone, so nobody else would. `stop` ends that as well;
 * the agent's next start, or the janitor once the agent is gone, finishes what is left.
 */
import { readFileSync } from "node:fs";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { AlreadyExistsError, FailedPreconditionError, FsbError } from "@fast-sandbox/api/core";
import type { Logger } from "pino";
import type { SandboxNetworkSpec } from "../runtime/runtime.js";
import { AttachmentStore, type AttachmentOwner, type AttachmentPolicy, type AttachmentRecord } from "./attachment-store.js";
import { CniInvoker } from "./cni-invoker.js";
import type { SandboxAddress } from "./cni-conflist.js";
import { firewallGaps, peerGroupOf, type SandboxPolicy } from "./firewall-rules.js";
import { Conntrack } from "./conntrack.js";
import { prepareAttachment, teardownAttachment, type AttachmentTools, type TeardownRecord } from "./network-attachment.js";
import { IpNetworkNamespaces } from "./network-namespace.js";
import type { SandboxNetworkSettings } from "./network-settings.js";
import { PreparedPool } from "../runtime/prepared-pool.js";
import { SandboxFirewall, type FirewallAttachment } from "./sandbox-firewall.js";
import { cachedFor, hostIpv4Addresses, hostsText, resolvConfText, sandboxResolvers } from "./sandbox-dns.js";

const run = promisify(execFile);

export interface SandboxNetworksOptions {
  settings: SandboxNetworkSettings;
  /** The agent whose namespaces these are (records carry it; the janitor judges by it). */
  owner: AttachmentOwner;
  /** @default the real CNI plugins, iproute2, nftables and the settings' state directory */
  tools?: AttachmentTools;
  /** The host's IPv4 addresses: resolvers there are not given to sandboxes. @default read from the interfaces, at most every HOST_ADDRESSES_TTL_MS */
  hostAddresses?: () => ReadonlySet<string>;
  /** Awaited before each namespace the background refill makes (e.g. until no create is in flight). @default none */
  beforeEachPrepare?: (signal: AbortSignal) => Promise<void>;
  /**
   * How often the firewall is checked for the rules this agent put in force (and rebuilt when they
   * are gone), while it has namespaces; 0: never. @default FIREWALL_CHECK_INTERVAL_MS
   */
  firewallCheckIntervalMs?: number;
  /** How long after a failed teardown it is tried again; doubled after each further failure, up to TEARDOWN_RETRY_MAX_MS. @default TEARDOWN_RETRY_MS */
  teardownRetryMs?: number;
  logger: Logger;
}

/**
 * How often the firewall is checked by default: how long sandboxes may stay open after someone
 * flushed the host's ruleset. A check lists the network's two tables (two nft processes).
 */
export const FIREWALL_CHECK_INTERVAL_MS = 5_000;

/**
 * How long after a failed teardown it is tried again by default: what holds a namespace, its veth,
 * its address and its rules is mostly a busy host (an nft or ip process timing out), gone in seconds.
 */
export const TEARDOWN_RETRY_MS = 5_000;
/** The longest wait between two attempts at a teardown that keeps failing (one warning each). */
export const TEARDOWN_RETRY_MAX_MS = 5 * 60_000;

/**
 * How long the host's addresses are taken as known: reading them lists every interface of the host
 * (one per sandbox and per prepared namespace: milliseconds on a claim's path), and they change
 * rarely (a resolver on an address the host just gained is kept from sandboxes this much later).
 */
const HOST_ADDRESSES_TTL_MS = 5_000;

export interface NetworkClaim {
  sandboxId: string;
  /** With `pool`, the sandbox's peer group when it allows sandbox-to-sandbox traffic. */
  namespace: string;
  pool: string;
  /** The sandbox's hostname, for its /etc/hosts. */
  hostname: string;
  network: SandboxNetworkSpec;
}

export interface ClaimedNetwork {
  /** The network namespace's id (not the sandbox id). */
  attachmentId: string;
  netnsPath: string;
  address: string;
  /** True when the namespace was prepared ahead, false when this claim made it. */
  prepared: boolean;
  /** The files the sandbox gets, by their path inside it: /etc/hosts and /etc/resolv.conf. */
  files: Record<string, string>;
  /**
   * Settles once the sandbox's egress policy is in force. Until then its address reaches nothing,
   * so a caller may go on creating the sandbox and only wait before it starts it.
   */
  policyApplied: Promise<void>;
}

export class SandboxNetworks {
  readonly settings: SandboxNetworkSettings;
  private readonly owner: AttachmentOwner;
  private readonly tools: AttachmentTools;
  private readonly hostAddresses: () => ReadonlySet<string>;
  private readonly beforeEachPrepare: ((signal: AbortSignal) => Promise<void>) | undefined;
  private readonly firewallCheckIntervalMs: number;
  private readonly teardownRetryMs: number;
  private readonly logger: Logger;
  private pool: PreparedPool<AttachmentRecord>;
  /** Claimed attachments by sandbox id. */
  private readonly claimed = new Map<string, AttachmentRecord>();
  /** The pool's prepared attachments by id (the pool does not list them). */
  private readonly unclaimed = new Map<string, AttachmentRecord>();
  private recovered = false;
  /** Teardowns in flight by attachment id: a second delete of the same sandbox joins the first. */
  private readonly tearingDown = new Map<string, Promise<void>>();
  /** Attachments whose teardown began and has not succeeded: their rules are never put back. */
  private readonly condemned = new Set<string>();
  /** Attachments whose teardown failed, by id: how often, and the timer of the next attempt. */
  private readonly retrying = new Map<string, { failures: number; timer: NodeJS.Timeout }>();
  /**
   * What this process put in force, by attachment id: the port guard, and the policy when `policy`.
   * The firewall check looks for exactly this (so a claim whose policy is on its way is no gap).
   */
  private readonly inForce = new Map<string, { policy: boolean }>();
  private firewallTimer: NodeJS.Timeout | undefined;
  private firewallCheck: Promise<void> | undefined;
  /** A rebuild of the firewall in flight: teardowns wait for it, so it never puts back rules they remove. */
  private rebuilding: Promise<void> | undefined;
  /** True while the firewall cannot be listed (told once, not at every check). */
  private checkFailing = false;
  private stopped = false;

  constructor(options: SandboxNetworksOptions) {
    this.settings = options.settings;
    this.owner = options.owner;
    const { name, subnet } = options.settings;
    this.tools = options.tools ?? {
      cni: new CniInvoker({ pluginDirs: options.settings.cniPluginDirs }),
      namespaces: new IpNetworkNamespaces(),
      firewall: new SandboxFirewall({ table: name, bridge: name, subnet, denied: options.settings.deniedCidrs }),
      conntrack: new Conntrack({ onMissing: (message) => options.logger.error(message) }),
      store: new AttachmentStore(options.settings.stateDir),
    };
    this.hostAddresses = options.hostAddresses ?? cachedFor(HOST_ADDRESSES_TTL_MS, hostIpv4Addresses);
    this.beforeEachPrepare = options.beforeEachPrepare;
    this.firewallCheckIntervalMs = options.firewallCheckIntervalMs ?? FIREWALL_CHECK_INTERVAL_MS;
    this.teardownRetryMs = options.teardownRetryMs ?? TEARDOWN_RETRY_MS;
    this.logger = options.logger.child({ component: "sandbox-networks", network: name });
    this.pool = this.newPool();
    if (!options.settings.defaultDenyInPod && options.settings.deniedCidrs.length > 0) {
      this.logger.info({ denied: options.settings.deniedCidrs }, "Isolated sandboxes reach none of `denied`, whatever their egress allows");
    }
    if (options.settings.defaultDenyInPod) {
      // Told at start, not at each sandbox: what the deny list should be is the installation's to name.
      this.logger.info(
        { denied: options.settings.deniedCidrs },
        "FSB_NETWORK_DENY is unset: Isolated sandboxes reach none of `denied` — the private ranges, where the cluster's Pods, Services " +
          "and nodes are, and this Pod's, its gateway's, the node's and the API server's addresses — whatever their egress allows; " +
          "set FSB_NETWORK_DENY to the cluster's own CIDRs to let them reach other private addresses (an allowList of them), " +
          "or to add a cluster on public addresses",
      );
    }
  }

  private newPool(): PreparedPool<AttachmentRecord> {
    return new PreparedPool({
      target: this.settings.preparedNamespaces,
      prepare: async () => {
        const record = await this.prepare();
        this.unclaimed.set(record.id, record);
        return record;
      },
      ...(this.beforeEachPrepare ? { beforeEachPrepare: this.beforeEachPrepare } : {}),
      onError: (error) => this.logger.warn({ err: error }, "could not prepare a network namespace; retrying"),
    });
  }

  private async prepare(): Promise<AttachmentRecord> {
    this.watchFirewall();
    const record = await prepareAttachment(this.tools, {
      network: { name: this.settings.name, subnet: this.settings.subnet },
      stateDir: this.settings.stateDir,
      owner: this.owner,
      // What is left of a prepare whose undo failed is this agent's to remove: nobody else would.
      onUndoFailure: (record, error) => this.retryLater(record, error),
    });
    // prepareAttachment guarded its port.
    this.inForce.set(record.id, { policy: false });
    return record;
  }

  /** Namespaces ready to be claimed. */
  get preparedCount(): number {
    return this.pool.size;
  }

  /** Resolves once the prepared namespaces are there (benchmarks, tests); starts preparing them. */
  warm(): Promise<void> {
    return this.pool.filled();
  }

  /**
   * Starts making prepared namespaces up to the count, in the background. The runtime calls it once
   * a create is done rather than `claim` itself: a refill started mid-create would compete with
   * that create for the CPU (plugins and nft are processes of their own).
   */
  refill(): void {
    this.pool.fill();
  }

  /** A network namespace for an isolated sandbox, its address, its files, and its policy on the way. */
  async claim(request: NetworkClaim): Promise<ClaimedNetwork> {
    if (request.network.mode !== "isolated") throw new FsbError("internal", "only isolated sandboxes claim a network namespace");
    // A second create of an existing sandbox: its namespace stays its own (and the create fails as a duplicate).
    const existing = this.claimed.get(request.sandboxId);
    if (existing) throw new AlreadyExistsError(`sandbox ${request.sandboxId} already exists (it holds network namespace ${existing.id})`);
    let record = this.takePrepared();
    const prepared = record !== undefined;
    record ??= await this.prepare();
    const address = record.address;
    if (!address) throw new FsbError("internal", `network namespace ${record.id} has no address`);
    const resolvers = sandboxResolvers(readHostResolvConf(this.settings.hostResolvConfPath), this.hostAddresses(), this.settings.upstreamDnsServers);
    // Kept in the record: a restarted agent, or one that finds the firewall flushed, applies it again.
    const policy: AttachmentPolicy = {
      egress: request.network.egress ?? { kind: "allowAll" },
      dnsServers: [...resolvers.nameservers],
      ...(request.network.allowSandboxToSandbox ? { peerGroup: peerGroupOf(request.namespace, request.pool) } : {}),
    };
    const claimedRecord: AttachmentRecord = { ...record, state: "claimed", sandboxId: request.sandboxId, policy };
    this.tools.store.write(claimedRecord);
    this.claimed.set(request.sandboxId, claimedRecord);

    const policyApplied = this.tools.firewall.applyPolicy(sandboxPolicyOf(record.id, address, policy));
    // Awaited by the caller before the sandbox starts; a rejection is the caller's to handle.
    policyApplied.then(
      () => {
        // Unless it was released meanwhile.
        if (this.inForce.has(record.id)) this.inForce.set(record.id, { policy: true });
      },
      () => undefined,
    );
    return {
      attachmentId: record.id,
      netnsPath: record.netnsPath,
      address: address.address,
      prepared,
      files: { "/etc/hosts": hostsText(request.hostname, address.address), "/etc/resolv.conf": resolvConfText(resolvers) },
      policyApplied,
    };
  }

  /** A prepared namespace that still exists (one removed behind the agent's back is torn down and skipped). */
  private takePrepared(): AttachmentRecord | undefined {
    for (;;) {
      const record = this.pool.take();
      if (record) this.unclaimed.delete(record.id);
      if (!record || this.tools.namespaces.exists(record.netnsName)) return record;
      this.logger.warn({ attachment: record.id }, "a prepared network namespace vanished; tearing down the rest of it");
      void this.teardown(record);
    }
  }

  /**
   * Hands the namespace claimed for `fromId` (a prepared instance) to the sandbox `toId` that claimed
   * the instance: its record says so from then on, so a restart keeps it with that sandbox.
   */
  reassign(fromId: string, toId: string): void {
    const record = this.claimed.get(fromId);
    if (!record) throw new FsbError("internal", `no network namespace is claimed for ${fromId}`);
    if (this.claimed.has(toId)) throw new AlreadyExistsError(`sandbox ${toId} already exists (it holds a network namespace)`);
    const reassigned: AttachmentRecord = { ...record, sandboxId: toId };
    this.tools.store.write(reassigned);
    this.claimed.delete(fromId);
    this.claimed.set(toId, reassigned);
  }

  /** Tears down the sandbox's network namespace, if it has one; idempotent. */
  async release(sandboxId: string): Promise<void> {
    const records = [...this.ownRecords()].filter((record) => record.sandboxId === sandboxId);
    const known = this.claimed.get(sandboxId);
    if (known && !records.some((record) => record.id === known.id)) records.push(known);
    for (const record of records) await this.teardownOnce(record);
    this.claimed.delete(sandboxId);
  }

  /**
   * After a (re)start: keeps the namespaces of `sandboxIds` (the agent's sandboxes that still
   * exist), adopts its prepared ones, and tears down everything else this agent left. An agent
   * that had isolated sandboxes or prepared namespaces starts refilling at once.
   */
  async recover(sandboxIds: ReadonlySet<string>): Promise<{ kept: number; adopted: number; reclaimed: number }> {
    const counts = { kept: 0, adopted: 0, reclaimed: 0 };
    // Once per agent process: later, records in `preparing` may be this process's own prepares.
    if (this.recovered) return counts;
    this.recovered = true;
    const kept: (AttachmentRecord & { sandboxId: string })[] = [];
    const found: AttachmentRecord[] = [];
    for (const record of this.ownRecords()) {
      if (record.state === "claimed" && record.sandboxId && sandboxIds.has(record.sandboxId)) {
        kept.push({ ...record, sandboxId: record.sandboxId });
      } else if (record.state === "prepared" && this.tools.namespaces.exists(record.netnsName)) {
        found.push(record);
      } else {
        await this.teardown(record);
        counts.reclaimed += 1;
      }
    }
    // A restart leaves the kernel's rules as they were, but they may have been flushed meanwhile,
    // and this agent's rules may be newer than its predecessor's: all put back (idempotent).
    const withoutPolicy = kept.filter((record) => !record.policy);
    if (withoutPolicy.length > 0) {
      this.logger.warn(
        { sandboxes: withoutPolicy.map((record) => record.sandboxId) },
        "these sandboxes' network records come from an older agent and hold no egress policy: their port guards are put back, " +
          "their policies stay as the firewall holds them; should the firewall lose them, the sandboxes reach nothing (fail closed) until they are created anew",
      );
    }
    const failed = await this.reapply([...kept, ...found]);
    for (const record of kept) {
      // Kept even when its rules could not be put back (logged): the sandbox exists. A rebuild of
      // the firewall tries again.
      this.claimed.set(record.sandboxId, record);
      counts.kept += 1;
    }
    const adopted: AttachmentRecord[] = [];
    for (const record of found) {
      if (failed.has(record.id)) {
        await this.teardown(record);
        counts.reclaimed += 1;
      } else {
        adopted.push(record);
        this.unclaimed.set(record.id, record);
        counts.adopted += 1;
      }
    }
    this.pool.adopt(adopted);
    if (counts.kept + counts.adopted > 0) {
      this.watchFirewall();
      this.pool.fill();
    }
    return counts;
  }

  /**
   * Checks once that the firewall holds what this agent put in force (the node's tables and base
   * chains, its port guards and policies), and rebuilds it when not. Runs every
   * `firewallCheckIntervalMs` while the agent has namespaces; one at a time.
   */
  checkFirewall(): Promise<void> {
    this.firewallCheck ??= this.verifyFirewall().finally(() => {
      this.firewallCheck = undefined;
    });
    return this.firewallCheck;
  }

  /**
   * Ends the firewall checks and the retries of failed teardowns (the agent is stopping, or gives
   * the network up); waits for a check in flight.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.firewallTimer);
    this.firewallTimer = undefined;
    for (const { timer } of this.retrying.values()) clearTimeout(timer);
    this.retrying.clear();
    await this.firewallCheck;
  }

  private watchFirewall(): void {
    if (this.stopped || this.firewallTimer || this.firewallCheckIntervalMs <= 0) return;
    this.firewallTimer = setInterval(() => void this.checkFirewall(), this.firewallCheckIntervalMs);
    // Never what keeps an agent's process alive.
    this.firewallTimer.unref();
  }

  private async verifyFirewall(): Promise<void> {
    if (this.live().length === 0) return;
    const before = this.expectedRules();
    let listing;
    try {
      listing = await this.tools.firewall.listing();
    } catch (error) {
      if (!this.checkFailing) this.logger.warn({ err: error }, "could not list the sandbox network's firewall to check it; retrying");
      this.checkFailing = true;
      return;
    }
    this.checkFailing = false;
    // Only what was in force both before and after the listing: a claim that put its policy in
    // force meanwhile, or a teardown that removed its rules, is no gap.
    const after = this.expectedRules();
    const expected = [...before].flatMap(([id, rules]) => (after.has(id) ? [rules] : []));
    const gaps = firewallGaps(this.tools.firewall.network, listing, {
      ports: expected.map((rules) => rules.port),
      addresses: expected.flatMap((rules) => (rules.address ? [rules.address] : [])),
    });
    if (gaps.length === 0) return;
    this.logger.error(
      { gaps },
      "the sandbox network's firewall lost rules behind the agent's back (e.g. `nft flush ruleset`, or `systemctl reload nftables` with Debian's " +
        "/etc/nftables.conf): its sandboxes were not isolated as their policies say; rebuilding the node's rules and putting back this agent's",
    );
    try {
      await this.rebuildFirewall();
    } catch (error) {
      this.logger.error({ err: error }, "could not rebuild the sandbox network's firewall; the next check tries again");
    }
  }

  private rebuildFirewall(): Promise<void> {
    this.rebuilding ??= (async () => {
      await this.tools.firewall.ensureNode({ rebuild: true });
      const failed = await this.reapply(this.live());
      this.logger.info({ attachments: this.live().length - failed.size }, "rebuilt the sandbox network's firewall");
    })().finally(() => {
      this.rebuilding = undefined;
    });
    return this.rebuilding;
  }

  /**
   * Puts the firewall rules of `records` back: port guards, and the stored policies of claimed ones.
   * Notes what is in force; resolves with the ids of those that failed (logged).
   */
  private async reapply(records: readonly AttachmentRecord[]): Promise<Set<string>> {
    const attachments = records.flatMap((record) => {
      const attachment = firewallAttachmentOf(record);
      return attachment ? [attachment] : [];
    });
    let failures: { attachment: FirewallAttachment; error: unknown }[];
    try {
      failures = await this.tools.firewall.restore(attachments);
    } catch (error) {
      failures = attachments.map((attachment) => ({ attachment, error }));
    }
    const failed = new Set(failures.map(({ attachment }) => attachment.guard.id));
    for (const attachment of attachments) {
      if (failed.has(attachment.guard.id)) this.inForce.delete(attachment.guard.id);
      else this.inForce.set(attachment.guard.id, { policy: attachment.policy !== undefined });
    }
    if (failures.length > 0) {
      this.logger.error(
        { attachments: [...failed], err: failures[0]?.error },
        "could not put back the firewall rules of network namespaces; the next rebuild of the firewall tries again",
      );
    }
    return failed;
  }

  /** This agent's attachments that are to stay: claimed or prepared, none being torn down. */
  private live(): AttachmentRecord[] {
    return [...this.claimed.values(), ...this.unclaimed.values()].filter((record) => !this.condemned.has(record.id));
  }

  /** The keys of what is in force, by attachment id: the port, and the address when its policy is. */
  private expectedRules(): Map<string, { port: string; address?: string }> {
    return new Map(
      this.live().flatMap((record) => {
        const state = this.inForce.get(record.id);
        if (!state || !record.address) return [];
        return [[record.id, { port: record.address.hostInterface, ...(state.policy ? { address: record.address.address } : {}) }]];
      }),
    );
  }

  /** Tears down the prepared namespaces (an agent stopping with nothing left); claims later prepare anew. */
  async releasePrepared(): Promise<void> {
    const pool = this.pool;
    this.pool = this.newPool();
    for (const record of await pool.drain()) {
      this.unclaimed.delete(record.id);
      await this.teardown(record);
    }
  }

  /**
   * Gives the network up on this node: its firewall tables and its bridge. Refused while any
   * namespace of the network exists (of any agent). For tests and uninstalls.
   */
  async removeNode(): Promise<void> {
    const left = this.tools.store.list();
    if (left.length > 0) throw new FailedPreconditionError(`network ${this.settings.name} still has ${left.length} network namespace(s)`);
    await this.stop();
    await this.tools.firewall.removeNode();
    await run("ip", ["link", "delete", this.settings.name, "type", "bridge"]).catch(() => undefined);
  }

  /**
   * One teardown per attachment at a time: two racing ones (a delete retried while the first is
   * still running) would each find the sandbox's interface and one would fail deleting it.
   */
  private teardownOnce(record: AttachmentRecord): Promise<void> {
    const running = this.tearingDown.get(record.id);
    if (running) return running;
    this.condemned.add(record.id);
    this.inForce.delete(record.id);
    const rebuilding = this.rebuilding?.catch(() => undefined);
    const done = (rebuilding ? rebuilding.then(() => teardownAttachment(this.tools, record)) : teardownAttachment(this.tools, record))
      .then(
        () => this.tornDown(record),
        (error: unknown) => {
          this.retryLater(record, error);
          throw error;
        },
      )
      .finally(() => this.tearingDown.delete(record.id));
    this.tearingDown.set(record.id, done);
    return done;
  }

  /** For callers that go on whatever happens: a failure is logged and tried again (`retryLater`). */
  private async teardown(record: AttachmentRecord): Promise<void> {
    await this.teardownOnce(record).catch(() => undefined);
  }

  /** Forgets an attachment whose teardown is done. */
  private tornDown(record: AttachmentRecord): void {
    this.condemned.delete(record.id);
    const retry = this.retrying.get(record.id);
    if (retry) {
      clearTimeout(retry.timer);
      this.retrying.delete(record.id);
      this.logger.info({ attachment: record.id, failedAttempts: retry.failures }, "a network namespace whose teardown had failed is torn down now");
    }
    if (record.sandboxId && this.claimed.get(record.sandboxId)?.id === record.id) this.claimed.delete(record.sandboxId);
  }

  /**
   * Tries a failed teardown again later, waiting longer after each failure. The attempt starts
   * from the stored record (how far the last one got, e.g. past the DEL that handed the address
   * back), and a record gone meanwhile was finished by someone else.
   */
  private retryLater(record: TeardownRecord, error: unknown): void {
    const previous = this.retrying.get(record.id);
    clearTimeout(previous?.timer);
    if (this.stopped) {
      this.retrying.delete(record.id);
      this.logger.warn(
        { err: error, attachment: record.id },
        "could not tear down a network namespace; the agent is stopping: its next start, or the janitor once the agent is gone, removes it",
      );
      return;
    }
    const failures = (previous?.failures ?? 0) + 1;
    const retryInMs = Math.min(this.teardownRetryMs * 2 ** Math.min(failures - 1, 16), Math.max(this.teardownRetryMs, TEARDOWN_RETRY_MAX_MS));
    const timer = setTimeout(() => {
      const stored = this.tools.store.read(record.id)?.record;
      if (stored) void this.teardown(stored);
      else this.tornDown(record);
    }, retryInMs);
    // Never what keeps an agent's process alive.
    timer.unref();
    this.retrying.set(record.id, { failures, timer });
    this.logger.warn({ err: error, attachment: record.id, failures, retryInMs }, "could not tear down a network namespace; the agent tries again later");
  }

  /** This agent's records: its name, and its Pod UID unless either side has none (the runtime's rule). */
  private *ownRecords(): Iterable<AttachmentRecord> {
    for (const { record } of this.tools.store.list()) {
      const { agent, agentUid, containerdNamespace } = record.owner;
      if (agent !== this.owner.agent || containerdNamespace !== this.owner.containerdNamespace) continue;
      if (this.owner.agentUid && agentUid && agentUid !== this.owner.agentUid) continue;
      yield record;
    }
  }
}

function sandboxPolicyOf(id: string, address: SandboxAddress, policy: AttachmentPolicy): SandboxPolicy {
  return {
    id,
    address: address.address,
    hostInterface: address.hostInterface,
    egress: policy.egress,
    dnsServers: policy.dnsServers,
    ...(policy.peerGroup ? { peerGroup: policy.peerGroup } : {}),
  };
}

/** The firewall's part of a record: its port guard, and its policy when claimed with one stored. */
function firewallAttachmentOf(record: AttachmentRecord): FirewallAttachment | undefined {
  const address = record.address;
  if (!address) return undefined;
  const guard = { id: record.id, hostInterface: address.hostInterface, sandboxMac: address.sandboxMac, address: address.address };
  const policy = record.state === "claimed" && record.policy ? sandboxPolicyOf(record.id, address, record.policy) : undefined;
  return { guard, ...(policy ? { policy } : {}) };
}

function readHostResolvConf(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}
