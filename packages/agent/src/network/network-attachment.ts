/**
 * One network namespace on a sandbox network, from nothing to ready and back: the only code that
 * makes or removes one, used by the agent (prepare, claim's undo, delete, restart recovery) and by
 * the janitor alike.
 *
 *   prepare:  record (preparing) → ip netns add → CNI ADD loopback → CNI ADD sandbox network
 *             (each result recorded as it comes) → the address's tracked connections forgotten →
 *             port guard → record (prepared)
 *   teardown: firewall rules → CNI DEL sandbox network (recorded as begun, then as done) → CNI DEL
 *             loopback → ip netns delete → record
 *
 * Teardown runs the DELs while the namespace still exists (plugins find what they made through
 * it) and removes the record last, so a teardown cut short is finished by the next one. The
 * sandbox network's DEL hands the address back to the pool, and another prepare may hold it
 * moments later: so the firewall's elements keyed by the address (and by the port) go before it,
 * and a teardown finishing one that got as far as that DEL acts on nothing by the address again —
 * neither those elements nor the DEL with the ADD's result, whose firewall plugin would remove the
 * new holder's rules. An address comes back from the network's pool clean (conntrack.ts says why):
 * prepare makes sure of it — not teardown, for the same reason.
 */
import { randomBytes } from "node:crypto";
import { FsbError } from "@fast-sandbox/api/core";
import { AttachmentStore, type AttachmentOwner, type AttachmentRecord } from "./attachment-store.js";
import { CniInvoker, type CniAttachment, type CniResult } from "./cni-invoker.js";
import { Conntrack } from "./conntrack.js";
import { LOOPBACK_NETWORK, SANDBOX_INTERFACE, sandboxAddressOf, sandboxNetworkList, type SandboxNetworkIdentity } from "./cni-conflist.js";
import { IpNetworkNamespaces, type NetworkNamespaces } from "./network-namespace.js";
import { SandboxFirewall } from "./sandbox-firewall.js";

/** What making and removing attachments of one network works with. */
export interface AttachmentTools {
  cni: CniInvoker;
  namespaces: NetworkNamespaces;
  firewall: SandboxFirewall;
  conntrack: Conntrack;
  store: AttachmentStore;
}

/** The tools a record's teardown needs, from the record alone (the janitor's case). */
export function toolsForRecord(record: AttachmentRecord, stateDir: string): AttachmentTools {
  return {
    cni: new CniInvoker({ pluginDirs: record.cniPluginDirs }),
    namespaces: new IpNetworkNamespaces(),
    firewall: new SandboxFirewall({ table: record.network.name, bridge: record.network.name, subnet: record.network.subnet }),
    conntrack: new Conntrack(),
    store: new AttachmentStore(stateDir),
  };
}

export interface PrepareAttachmentInput {
  network: SandboxNetworkIdentity;
  /** The network's state directory (IPAM reservations, records). */
  stateDir: string;
  owner: AttachmentOwner;
  /**
   * Told when the undo of a failed prepare fails as well: the record and what is left of the
   * namespace stay, and only the caller can tear them down later (the janitor leaves a live
   * agent's namespaces alone). The prepare's own error is thrown all the same. @default none
   */
  onUndoFailure?: (record: TeardownRecord, error: unknown) => void;
}

/**
 * A record with how far a teardown got with the sandbox network's CNI DEL, kept in the record
 * itself so that whoever finishes a teardown cut short (the agent, its successor, the janitor)
 * knows: `started`, the DEL ran at least once and may have handed the address back to the pool
 * (a DEL runs every plugin even when one fails, so a failed one may have too); `done`, it did. Absent
 * in the records of agents that did not keep it: their teardown starts over.
 */
export type TeardownRecord = AttachmentRecord & { sandboxDel?: "started" | "done" };

/** Makes a ready network namespace; anything done is undone when a step fails. */
export async function prepareAttachment(tools: AttachmentTools, input: PrepareAttachmentInput): Promise<AttachmentRecord> {
  const id = randomBytes(6).toString("hex");
  const netnsName = `fsb-${input.network.name}-${id}`;
  const record: TeardownRecord = {
    version: 1,
    id,
    state: "preparing",
    owner: input.owner,
    network: { name: input.network.name, subnet: input.network.subnet },
    netnsName,
    netnsPath: tools.namespaces.path(netnsName),
    cniContainerId: netnsName,
    cniPluginDirs: [...tools.cni.pluginDirs],
    lists: { loopback: LOOPBACK_NETWORK, sandbox: sandboxNetworkList(input.network, input.stateDir) },
    results: {},
    createdAt: new Date().toISOString(),
  };
  tools.store.write(record);
  try {
    await tools.namespaces.create(netnsName);
    const recordResult = (key: "loopback" | "sandbox") => (result: CniResult) => {
      record.results = { ...record.results, [key]: result };
      tools.store.write(record);
    };
    await tools.cni.add(record.lists.loopback, cniAttachment(record, "lo"), recordResult("loopback"));
    const result = await tools.cni.add(record.lists.sandbox, cniAttachment(record, SANDBOX_INTERFACE), recordResult("sandbox")).catch((error: unknown) => {
      // The invoker undid the failed ADD with a DEL of its own, which may have handed the address back.
      record.sandboxDel = "started";
      tools.store.write(record);
      throw error;
    });
    record.address = sandboxAddressOf(result, record.netnsPath);
    tools.store.write(record);
    await tools.conntrack.forget(record.address.address);
    await tools.firewall.guardPort({ id, hostInterface: record.address.hostInterface, sandboxMac: record.address.sandboxMac, address: record.address.address });
    record.state = "prepared";
    tools.store.write(record);
    return record;
  } catch (error) {
    await teardownAttachment(tools, record).catch((undoError: unknown) => input.onUndoFailure?.(record, undoError));
    throw error;
  }
}

/**
 * Removes everything of the attachment; idempotent, and a no-op for parts already gone. The
 * firewall rules go first: its elements are keyed by the address and the port, which the sandbox
 * network's DEL hands back. That DEL is recorded as begun before it runs and as done once it
 * succeeded; a teardown finishing one that got that far removes only what is keyed by the
 * attachment's own id and names (its chains, its CNI container id, its namespace), and runs that
 * DEL again (when it did not succeed yet) without the ADD's result, so the firewall plugin, which
 * removes its rules by the result's addresses, leaves those of the address's next holder alone.
 * The record goes last.
 */
export async function teardownAttachment(tools: AttachmentTools, record: TeardownRecord): Promise<void> {
  const released = record.sandboxDel !== undefined;
  await tools.firewall
    .remove({
      id: record.id,
      ...(record.address && !released ? { address: record.address.address, hostInterface: record.address.hostInterface } : {}),
    })
    .catch((error: unknown) => {
      // nft is missing: no rule can be removed now, and none was made for a prepare that failed at
      // its port guard for want of it. Holding the address and the namespace until nft is there
      // would leak one of each for every prepare the pool tries again meanwhile.
      if (!(error instanceof FsbError && error.code === "failed_precondition")) throw error;
    });
  if (record.sandboxDel !== "done") {
    // Only the first DEL of all is given the ADD's result.
    const prevResult = released ? undefined : record.results?.sandbox;
    record.sandboxDel = "started";
    tools.store.write(record);
    // Once more on failure: another process (the janitor, a second agent process during a restart)
    // may have removed the interface between the plugin finding it and deleting it, and a DEL
    // that then finds nothing succeeds.
    await tools.cni
      .del(record.lists.sandbox, cniAttachment(record, SANDBOX_INTERFACE), prevResult)
      .catch(() => tools.cni.del(record.lists.sandbox, cniAttachment(record, SANDBOX_INTERFACE)));
    record.sandboxDel = "done";
    tools.store.write(record);
  }
  await tools.cni.del(record.lists.loopback, cniAttachment(record, "lo"), record.results?.loopback);
  await tools.namespaces.delete(record.netnsName);
  tools.store.remove(record.id);
}

function cniAttachment(record: AttachmentRecord, ifName: string): CniAttachment {
  return { containerId: record.cniContainerId, netnsPath: record.netnsPath, ifName };
}
