/**
 * Against the real CNI plugins, iproute2 and nftables of this host (root), on a network of its own
 * (name, subnet, state directory), removed at the end.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { FsbError } from "@fast-sandbox/api";
import { AttachmentStore } from "./attachment-store.js";
import { CniInvoker } from "./cni-invoker.js";
import { portGroupOf } from "./firewall-rules.js";
import { Conntrack } from "./conntrack.js";
import { prepareAttachment, teardownAttachment, toolsForRecord, type AttachmentTools } from "./network-attachment.js";
import { IpNetworkNamespaces } from "./network-namespace.js";
import { SandboxFirewall } from "./sandbox-firewall.js";

const NAME = `fsbna${process.pid % 10000}`;
const NETWORK = { name: NAME, subnet: "10.79.0.0/24" };
const stateDir = mkdtempSync(join(tmpdir(), "fsb-network-attachment-"));
const owner = { agent: "spec-agent", containerdNamespace: "fsb-spec" };

function tools(pluginDirs = ["/usr/lib/cni"]): AttachmentTools {
  return {
    cni: new CniInvoker({ pluginDirs }),
    namespaces: new IpNetworkNamespaces(),
    firewall: new SandboxFirewall({ table: NAME, bridge: NAME, subnet: NETWORK.subnet }),
    conntrack: new Conntrack(),
    store: new AttachmentStore(stateDir),
  };
}

const sh = (command: string, ...args: string[]) => execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
const links = () => sh("ip", "-o", "link");
const reservations = () => {
  try {
    return readdirSync(join(stateDir, "ipam", NAME)).filter((name) => /^\d+\.\d+\.\d+\.\d+$/.test(name));
  } catch {
    return [];
  }
};
const nftables = () => {
  try {
    return sh("nft", "list", "table", "inet", NAME) + sh("nft", "list", "table", "bridge", NAME);
  } catch {
    return "";
  }
};

after(async () => {
  await tools().firewall.removeNode();
  try {
    sh("ip", "link", "delete", NAME);
  } catch {
    // no bridge
  }
  rmSync(stateDir, { recursive: true, force: true });
});

describe("a network attachment", () => {
  it("prepares a namespace with lo up, an address on the bridge, a default route and a guarded port; teardown leaves nothing", async () => {
    const record = await prepareAttachment(tools(), { network: NETWORK, stateDir, owner });
    assert.equal(record.state, "prepared");
    assert.match(record.id, /^[0-9a-f]{12}$/);
    const address = record.address?.address ?? "";
    assert.match(address, /^10\.79\.0\.\d+$/);
    assert.equal(record.address?.gateway, "10.79.0.1");
    assert.deepEqual(new AttachmentStore(stateDir).read(record.id)?.record, record);

    const inside = sh("ip", "-n", record.netnsName, "-o", "addr");
    assert.match(inside, /lo\s+inet 127\.0\.0\.1\/8/);
    assert.match(inside, new RegExp(`eth0\\s+inet ${address.replace(/\./g, "\\.")}/24`));
    assert.match(sh("ip", "-n", record.netnsName, "route"), /^default via 10\.79\.0\.1 dev eth0/m);
    assert.match(sh("ip", "-o", "addr", "show", "dev", NAME), /inet 10\.79\.0\.1\/24/);
    assert.ok(links().includes(record.address?.hostInterface ?? "?"));
    assert.deepEqual(reservations(), [address]);
    assert.match(nftables(), new RegExp(`port_${record.id}`));
    // The port is marked as the network's: should its guard be lost, the bridge drops what it sends.
    assert.match(
      sh("ip", "-d", "link", "show", "dev", record.address?.hostInterface ?? "?"),
      new RegExp(`\\bgroup ${portGroupOf({ table: NAME, bridge: NAME, subnet: NETWORK.subnet })}\\b`),
    );

    await teardownAttachment(tools(), record);
    await teardownAttachment(tools(), record);
    assert.ok(!new IpNetworkNamespaces().exists(record.netnsName));
    assert.ok(!links().includes(record.address?.hostInterface ?? "?"));
    assert.deepEqual(reservations(), []);
    assert.doesNotMatch(nftables(), new RegExp(record.id));
    assert.equal(new AttachmentStore(stateDir).list().length, 0);
  });

  it("a failed prepare undoes itself: no namespace, no reservation, no record", async () => {
    // The real plugins, but a firewall plugin that refuses.
    const plugins = mkdtempSync(join(tmpdir(), "fsb-cni-plugins-"));
    for (const plugin of ["loopback", "bridge", "host-local"]) symlinkSync(`/usr/lib/cni/${plugin}`, join(plugins, plugin));
    writeFileSync(
      join(plugins, "firewall"),
      '#!/bin/sh\ncat >/dev/null\n[ "$CNI_COMMAND" = ADD ] || exit 0\necho \'{"cniVersion":"1.0.0","code":7,"msg":"refused"}\'\nexit 1\n',
    );
    chmodSync(join(plugins, "firewall"), 0o755);
    mkdirSync(join(stateDir, "attachments"), { recursive: true });
    // This network's namespaces only: other spec files, run alongside, make and remove their own meanwhile.
    const ours = () =>
      sh("ip", "netns", "list")
        .split("\n")
        .filter((line) => line.startsWith(`fsb-${NAME}-`));
    const before = ours();
    try {
      await assert.rejects(
        prepareAttachment(tools([plugins]), { network: NETWORK, stateDir, owner }),
        (error: unknown) => error instanceof FsbError && /refused/.test(error.message),
      );
    } finally {
      rmSync(plugins, { recursive: true, force: true });
    }
    assert.deepEqual(ours(), before);
    assert.deepEqual(reservations(), []);
    assert.equal(new AttachmentStore(stateDir).list().length, 0);
  });

  it("an address comes to a new namespace without the tracked connections of its last holder", async () => {
    // host-local hands out the address after the last one it reserved (the network's first, .2, at first).
    const lastFile = join(stateDir, "ipam", NAME, "last_reserved_ip.0");
    const last = existsSync(lastFile) ? readFileSync(lastFile, "utf8").trim() : "10.79.0.1";
    const next = `10.79.0.${Number(last.split(".")[3]) + 1}`;
    // Connections from and to the address, as a sandbox that held it would have left them (one established TCP each way).
    const established = (from: string, to: string, sport: string, dport: string) =>
      sh("conntrack", "-I", "-s", from, "-d", to, "-p", "tcp", "--sport", sport, "--dport", dport, "--state", "ESTABLISHED", "-t", "600", "-u", "ASSURED");
    const tracked = (address: string) =>
      (sh("conntrack", "-L", "--orig-src", address) + sh("conntrack", "-L", "--orig-dst", address)).split("\n").filter((line) => line.includes(address)).length;
    established(next, "192.0.2.1", "40000", "443");
    established("192.0.2.1", next, "40001", "8080");
    assert.equal(tracked(next), 2);
    const record = await prepareAttachment(tools(), { network: NETWORK, stateDir, owner });
    const address = record.address?.address ?? "";
    assert.equal(address, next, "the address the test left connections of");
    assert.equal(tracked(address), 0, "a new namespace inherits no tracked connection of its address");
    await teardownAttachment(tools(), record);
  });

  it("the tools for a record come from the record alone (what the janitor has)", async () => {
    const record = await prepareAttachment(tools(), { network: NETWORK, stateDir, owner });
    await teardownAttachment(toolsForRecord(record, stateDir), record);
    assert.ok(!new IpNetworkNamespaces().exists(record.netnsName));
    assert.deepEqual(reservations(), []);
  });
});
