/**
 * One network namespace on a sandbox network, from nothing to ready and back: the only code that
 * makes or removes one, used by the agent (prepare, claim's undo, delete, restart recovery) and by
 * the janitor alike.
 *
 *   prepare:  record (preparing) → ip netns add → CNI ADD loopback → CNI ADD sandbox network
 *             (each result recorded as it comes) → the address's tracked connections forgotten →
 *             port guard → record (prepared)
 *   teardown: firewall rules → CNI DEL sandbox network → CNI DEL loopback → ip netns delete → record
 *
 * Teardown runs the DELs while the namespace still exists (plugins find what they made through
 * it) and removes the record last, so a teardown cut short is finished by the next one. An address
 * comes back from the network's pool clean (conntrack.ts says why): prepare makes sure of it — not
 * teardown, whose DEL has handed the address back by then: another prepare may hold it already.
 */
import { randomBytes } from "node:crypto";
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
}

/** Makes a ready network namespace; anything done is undone when a step fails. */
export async function prepareAttachment(tools: AttachmentTools, input: PrepareAttachmentInput): Promise<AttachmentRecord> {
  const id = randomBytes(6).toString("hex");
  const netnsName = `fsb-${input.network.name}-${id}`;
  const record: AttachmentRecord = {
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
    const result = await tools.cni.add(record.lists.sandbox, cniAttachment(record, SANDBOX_INTERFACE), recordResult("sandbox"));
    record.address = sandboxAddressOf(result, record.netnsPath);
    tools.store.write(record);
    await tools.conntrack.forget(record.address.address);
    await tools.firewall.guardPort({ id, hostInterface: record.address.hostInterface, sandboxMac: record.address.sandboxMac, address: record.address.address });
    record.state = "prepared";
    tools.store.write(record);
    return record;
  } catch (error) {
    await teardownAttachment(tools, record).catch(() => undefined);
    throw error;
  }
}

/**
 * Removes everything of the attachment; idempotent, and a no-op for parts already gone. The
 * firewall rules and the CNI side are independent of each other and go in parallel; the record
 * goes only once both are done.
 */
export async function teardownAttachment(tools: AttachmentTools, record: AttachmentRecord): Promise<void> {
  const rules = tools.firewall.remove({
    id: record.id,
    ...(record.address ? { address: record.address.address, hostInterface: record.address.hostInterface } : {}),
  });
  const namespace = (async () => {
    // Once more on failure: another process (the janitor, a second agent process during a restart)
    // may have removed the interface between the plugin finding it and deleting it, and a DEL
    // that then finds nothing succeeds.
    const del = () => tools.cni.del(record.lists.sandbox, cniAttachment(record, SANDBOX_INTERFACE), record.results?.sandbox);
    await del().catch(del);
    await tools.cni.del(record.lists.loopback, cniAttachment(record, "lo"), record.results?.loopback);
    await tools.namespaces.delete(record.netnsName);
  })();
  const [rulesDone, namespaceDone] = await Promise.allSettled([rules, namespace]);
  if (rulesDone.status === "rejected") throw rulesDone.reason;
  if (namespaceDone.status === "rejected") throw namespaceDone.reason;
  tools.store.remove(record.id);
}

function cniAttachment(record: AttachmentRecord, ifName: string): CniAttachment {
  return { containerId: record.cniContainerId, netnsPath: record.netnsPath, ifName };
}
