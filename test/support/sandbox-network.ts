/**
 * Test support for sandbox networks: a network of the test's own (name, subnet, state directory, so
 * concurrent runs and the Kubernetes suite never meet), a "server" network namespace the test owns
 * (something on another local address, and a link-local 169.254.169.254 that would answer), and an
 * inventory of everything a sandbox network leaves on the host. Traffic only ever goes to loopback
 * and to namespaces the test creates.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AttachmentStore, teardownAttachment, toolsForRecord, type SandboxNetworkSettings } from "@fast-sandbox/agent";

const run = (command: string, ...args: string[]) => execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
const quietly = (command: string, ...args: string[]) => {
  try {
    return run(command, ...args);
  } catch {
    return "";
  }
};

/** A random /24 in 10.200-249.x.0 that no route of this host covers yet. */
function freeSubnet(): string {
  const routes = run("ip", "-4", "route", "show", "table", "all");
  for (let attempt = 0; attempt < 50; attempt++) {
    const [a = 0, b = 0] = randomBytes(2);
    const subnet = `10.${200 + (a % 50)}.${b}.0/24`;
    if (!routes.includes(subnet.slice(0, subnet.lastIndexOf(".")))) return subnet;
  }
  throw new Error("no free /24 under 10.200.0.0/10");
}

/** Settings of a network of the test's own: `fsbt<6 hex>` (bridge and nftables tables), a free /24, a fresh state directory. */
export function testNetworkSettings(overrides: Partial<SandboxNetworkSettings> = {}): SandboxNetworkSettings {
  return {
    name: `fsbt${randomBytes(3).toString("hex")}`,
    subnet: freeSubnet(),
    stateDir: mkdtempSync(join(tmpdir(), "fsb-test-network-")),
    cniPluginDirs: ["/usr/lib/cni", "/opt/cni/bin"],
    upstreamDnsServers: ["192.0.2.53"],
    hostResolvConfPath: "/etc/resolv.conf",
    preparedNamespaces: 2,
    deniedCidrs: [],
    ...overrides,
  };
}

/** What a sandbox network has on the host right now; empty lists once everything of its sandboxes is gone. */
/** What a sandbox network has on the host right now; empty lists once everything of its sandboxes is gone. */
export interface NetworkLeftovers {
  /** Named network namespaces of the network. */
  namespaces: string[];
  /** Interfaces attached to its bridge (the sandboxes' veths). */
  ports: string[];
  /** Addresses of the subnet on any interface of the host, but the bridge's gateway. */
  addresses: string[];
  /** Records in its state directory (`<id> <state> <sandbox id or ->`). */
  records: string[];
  /** host-local IPAM reservations. */
  reservations: string[];
  /** Per-sandbox nftables objects: `<family> chain <name>` and `<family> <map or set>: <element>`. */
  rules: string[];
  /** iptables rules that name one of the subnet's addresses (the CNI firewall plugin's FORWARD rules). */
  iptablesRules: string[];
}

/** The network's per-sandbox nftables objects (both tables), from nft's JSON listing. */
function nftObjects(table: string): string[] {
  const objects: string[] = [];
  for (const family of ["inet", "bridge"]) {
    const text = quietly("nft", "-j", "list", "table", family, table);
    if (!text) continue;
    for (const object of (JSON.parse(text) as { nftables: Record<string, { name?: string; elem?: unknown[] }>[] }).nftables) {
      const [kind, body] = Object.entries(object)[0] ?? [];
      if (kind === "chain" && /^(sandbox|port|peers)_[0-9a-f]{12}$/.test(body?.name ?? "")) objects.push(`${family} chain ${body?.name}`);
      if ((kind === "map" || kind === "set") && Array.isArray(body?.elem)) {
        for (const element of body.elem) {
          const key = Array.isArray(element) ? element[0] : element;
          const value = key && typeof key === "object" && "elem" in key ? (key as { elem: { val: unknown } }).elem.val : key;
          objects.push(`${family} ${body.name}: ${String(value)}`);
        }
      }
    }
  }
  return objects;
}

/**
 * @param options.exceptPrepared leave out what belongs to the prepared namespaces of live agents
 * (namespace, port, reservation, port guard, firewall-plugin rules): what remains is the sandboxes'.
 */
export function networkLeftovers(settings: SandboxNetworkSettings, options: { exceptPrepared?: boolean } = {}): NetworkLeftovers {
  const prefix = settings.subnet.slice(0, settings.subnet.lastIndexOf(".") + 1);
  const gateway = `${prefix}1`;
  let reservations: string[] = [];
  try {
    reservations = readdirSync(join(settings.stateDir, "ipam", settings.name)).filter((name) => /^\d+\.\d+\.\d+\.\d+$/.test(name));
  } catch {
    reservations = [];
  }
  const records = new AttachmentStore(settings.stateDir).list().map(({ record }) => record);
  const left: NetworkLeftovers = {
    namespaces: quietly("ip", "netns", "list")
      .split("\n")
      .map((line) => line.split(" ")[0] ?? "")
      .filter((name) => name.startsWith(`fsb-${settings.name}-`)),
    ports: quietly("ip", "-o", "link", "show", "master", settings.name)
      .split("\n")
      .filter(Boolean)
      .map((line) => line.split(":")[1]?.trim().split("@")[0] ?? line),
    addresses: quietly("ip", "-o", "-4", "addr")
      .split("\n")
      .filter((line) => line.includes(` ${prefix}`) && !line.includes(` ${gateway}/`)),
    records: records.map((record) => `${record.id} ${record.state} ${record.sandboxId ?? "-"}`),
    reservations,
    rules: nftObjects(settings.name),
    iptablesRules: quietly("iptables-save")
      .split("\n")
      .filter((line) => line.includes(prefix)),
  };
  if (!options.exceptPrepared) return left;
  const prepared = records.filter((record) => record.state === "prepared");
  const keys = prepared.flatMap((record) => [record.id, record.netnsName, record.address?.address ?? "-", record.address?.hostInterface ?? "-"]);
  const theirs = (line: string) => keys.some((key) => new RegExp(`(^|[^0-9a-z.])${key.replace(/\./g, "\\.")}($|[^0-9a-z.])`).test(line));
  const without = (lines: string[]) => lines.filter((line) => !theirs(line));
  return {
    namespaces: without(left.namespaces),
    ports: without(left.ports),
    addresses: without(left.addresses),
    records: without(left.records),
    reservations: without(left.reservations),
    rules: without(left.rules),
    iptablesRules: without(left.iptablesRules),
  };
}

/** Tears down whatever is left of the network's namespaces, then its tables, its bridge and its state directory. */
export async function removeTestNetwork(settings: SandboxNetworkSettings): Promise<void> {
  for (const { record } of new AttachmentStore(settings.stateDir).list()) {
    await teardownAttachment(toolsForRecord(record, settings.stateDir), record).catch(() => undefined);
  }
  quietly("nft", "delete", "table", "inet", settings.name);
  quietly("nft", "delete", "table", "bridge", settings.name);
  quietly("ip", "link", "delete", settings.name);
  rmSync(settings.stateDir, { recursive: true, force: true });
}

/**
 * A network namespace of the test's own, linked to the host by a veth pair (`hostAddress` on the
 * host's side, `address` inside), with 169.254.169.254 on its loopback and a host route to it: a
 * metadata-like address that answers, and servers on another local address. TCP servers answer
 * every connection with `srv-<port>`; `dns` answers every A query with 192.0.2.123.
 */
export class ServerNamespace {
  readonly name: string;
  readonly hostAddress: string;
  readonly address: string;
  /** Cloud metadata addresses (link-local, Alibaba Cloud's), served here so a test can show no sandbox reaches them. */
  readonly metadataAddresses = ["169.254.169.254", "100.100.100.200"] as const;
  /** An address served here for a network that denies it (FSB_NETWORK_DENY): only such a network keeps sandboxes from it. */
  readonly deniableAddress = "192.0.2.77";
  private readonly hostInterface: string;
  private readonly children: ChildProcess[] = [];

  private constructor(suffix: string, block: number) {
    this.name = `fsbt-srv-${suffix}`;
    this.hostInterface = `fsbs${suffix}`;
    this.hostAddress = `10.250.${block}.1`;
    this.address = `10.250.${block}.2`;
  }

  static create(): ServerNamespace {
    if (run("ip", "route", "show", "169.254.169.254/32").trim() !== "") {
      throw new Error("169.254.169.254 already has a route on this host (another test run?); the metadata test needs it");
    }
    const suffix = randomBytes(3).toString("hex");
    const server = new ServerNamespace(suffix, randomBytes(1)[0] ?? 0);
    const inside = `${server.hostInterface}n`;
    run("ip", "netns", "add", server.name);
    run("ip", "link", "add", server.hostInterface, "type", "veth", "peer", "name", inside, "netns", server.name);
    run("ip", "addr", "add", `${server.hostAddress}/30`, "dev", server.hostInterface);
    run("ip", "link", "set", server.hostInterface, "up");
    run("ip", "-n", server.name, "addr", "add", `${server.address}/30`, "dev", inside);
    run("ip", "-n", server.name, "link", "set", inside, "up");
    run("ip", "-n", server.name, "link", "set", "lo", "up");
    const served = [...server.metadataAddresses, server.deniableAddress];
    for (const address of served) run("ip", "-n", server.name, "addr", "add", `${address}/32`, "dev", "lo");
    run("ip", "-n", server.name, "route", "add", "default", "via", server.hostAddress);
    for (const address of served) run("ip", "route", "add", `${address}/32`, "via", server.address);
    return server;
  }

  /** A TCP server on every address of the namespace that answers `srv-<port>`. */
  async serveTcp(port: number): Promise<void> {
    this.start("busybox", "nc", "-ll", "-p", String(port), "-e", "/bin/echo", `srv-${port}`);
    await waitForConnect(this.address, port);
  }

  /** A DNS server on port 53 that answers every A query with 192.0.2.123. */
  serveDns(): void {
    this.start(process.execPath, "-e", DNS_SERVER);
  }

  private start(command: string, ...args: string[]): void {
    const child = spawn("ip", ["netns", "exec", this.name, command, ...args], { stdio: "ignore" });
    this.children.push(child);
  }

  remove(): void {
    for (const child of this.children) child.kill("SIGKILL");
    for (const address of [...this.metadataAddresses, this.deniableAddress]) quietly("ip", "route", "del", `${address}/32`);
    quietly("ip", "link", "delete", this.hostInterface);
    quietly("ip", "netns", "delete", this.name);
  }
}

/** Resolves once something accepts a TCP connection at address:port (from the host). */
export async function waitForConnect(address: string, port: number, attempts = 100): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: address, port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    if (attempt >= attempts) throw new Error(`nothing answers at ${address}:${port}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** What a TCP server at address:port sends before it closes (from the host), or an error. */
export function readBanner(address: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const socket = connect({ host: address, port });
    socket.setTimeout(5_000, () => socket.destroy(new Error(`no answer from ${address}:${port}`)));
    socket.on("data", (chunk: Buffer) => (text += chunk.toString()));
    socket.once("error", reject);
    socket.once("close", () => resolve(text));
  });
}

const DNS_SERVER = `
const socket = require("node:dgram").createSocket("udp4");
socket.on("message", (query, peer) => {
  let end = 12;
  while (query[end] !== 0) end += query[end] + 1;
  const question = query.subarray(12, end + 5);
  const header = Buffer.from([query[0], query[1], 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
  const answer = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 123]);
  socket.send(Buffer.concat([header, question, answer]), peer.port, peer.address);
});
socket.bind(53);
`;
