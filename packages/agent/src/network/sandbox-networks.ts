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
 */
import { readFileSync } from "node:fs";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { AlreadyExistsError, FailedPreconditionError, FsbError } from "@fast-sandbox/api/core";
import type { Logger } from "pino";
import type { SandboxNetworkSpec } from "../runtime/runtime.js";
import { AttachmentStore, type AttachmentOwner, type AttachmentRecord } from "./attachment-store.js";
import { CniInvoker } from "./cni-invoker.js";
import { peerGroupOf } from "./firewall-rules.js";
import { Conntrack } from "./conntrack.js";
import { prepareAttachment, teardownAttachment, type AttachmentTools } from "./network-attachment.js";
import { IpNetworkNamespaces } from "./network-namespace.js";
import type { SandboxNetworkSettings } from "./network-settings.js";
import { PreparedPool } from "../runtime/prepared-pool.js";
import { SandboxFirewall } from "./sandbox-firewall.js";
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
  logger: Logger;
}

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
  private readonly logger: Logger;
  private pool: PreparedPool<AttachmentRecord>;
  /** Claimed attachments by sandbox id. */
  private readonly claimed = new Map<string, AttachmentRecord>();
  private recovered = false;
  /** Teardowns in flight by attachment id: a second delete of the same sandbox joins the first. */
  private readonly tearingDown = new Map<string, Promise<void>>();

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
    this.logger = options.logger.child({ component: "sandbox-networks", network: name });
    this.pool = this.newPool();
  }

  private newPool(): PreparedPool<AttachmentRecord> {
    return new PreparedPool({
      target: this.settings.preparedNamespaces,
      prepare: () => this.prepare(),
      ...(this.beforeEachPrepare ? { beforeEachPrepare: this.beforeEachPrepare } : {}),
      onError: (error) => this.logger.warn({ err: error }, "could not prepare a network namespace; retrying"),
    });
  }

  private prepare(): Promise<AttachmentRecord> {
    return prepareAttachment(this.tools, {
      network: { name: this.settings.name, subnet: this.settings.subnet },
      stateDir: this.settings.stateDir,
      owner: this.owner,
    });
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
    const claimedRecord: AttachmentRecord = { ...record, state: "claimed", sandboxId: request.sandboxId };
    this.tools.store.write(claimedRecord);
    this.claimed.set(request.sandboxId, claimedRecord);

    const resolvers = sandboxResolvers(readHostResolvConf(this.settings.hostResolvConfPath), this.hostAddresses(), this.settings.upstreamDnsServers);
    const egress = request.network.egress ?? { kind: "allowAll" };
    const policyApplied = this.tools.firewall.applyPolicy({
      id: record.id,
      address: address.address,
      hostInterface: address.hostInterface,
      egress,
      dnsServers: resolvers.nameservers,
      ...(request.network.allowSandboxToSandbox ? { peerGroup: peerGroupOf(request.namespace, request.pool) } : {}),
    });
    // Awaited by the caller before the sandbox starts; a rejection is the caller's to handle.
    policyApplied.catch(() => undefined);
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
    const adopted: AttachmentRecord[] = [];
    for (const record of this.ownRecords()) {
      if (record.state === "claimed" && record.sandboxId && sandboxIds.has(record.sandboxId)) {
        this.claimed.set(record.sandboxId, record);
        counts.kept += 1;
      } else if (record.state === "prepared" && this.tools.namespaces.exists(record.netnsName)) {
        adopted.push(record);
        counts.adopted += 1;
      } else {
        await this.teardown(record);
        counts.reclaimed += 1;
      }
    }
    this.pool.adopt(adopted);
    if (counts.kept + counts.adopted > 0) this.pool.fill();
    return counts;
  }

  /** Tears down the prepared namespaces (an agent stopping with nothing left); claims later prepare anew. */
  async releasePrepared(): Promise<void> {
    const pool = this.pool;
    this.pool = this.newPool();
    for (const record of await pool.drain()) await this.teardown(record);
  }

  /**
   * Gives the network up on this node: its firewall tables and its bridge. Refused while any
   * namespace of the network exists (of any agent). For tests and uninstalls.
   */
  async removeNode(): Promise<void> {
    const left = this.tools.store.list();
    if (left.length > 0) throw new FailedPreconditionError(`network ${this.settings.name} still has ${left.length} network namespace(s)`);
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
    const done = teardownAttachment(this.tools, record).finally(() => this.tearingDown.delete(record.id));
    this.tearingDown.set(record.id, done);
    return done;
  }

  private async teardown(record: AttachmentRecord): Promise<void> {
    try {
      await this.teardownOnce(record);
    } catch (error) {
      this.logger.warn({ err: error, attachment: record.id }, "could not tear down a network namespace; the janitor retries");
    }
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

function readHostResolvConf(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}
