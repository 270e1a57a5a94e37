/**
 * Isolated sandboxes on the real containerd, runc and runsc, created through the agent's API: each
 * has a network namespace of its own on the test's own sandbox network, and the host-side rules
 * hold for both runtimes — no host (loopback listener, the agent's port, any host address), no
 * 169.254.0.0/16 or 100.100.100.200 (cloud metadata), no other sandbox unless its pool allows it, and the egress policy (denyAll,
 * allowAll, allowList) towards a server in a network namespace the test owns. Two sandboxes bind the
 * same port. A host's destination NAT (a published port, as Docker's or kube-proxy's) does not open
 * the host to an allowAll sandbox, while a DNAT to an address elsewhere still works. A Shared sandbox
 * keeps today's behaviour (it reaches the host's loopback), which also shows the loopback probe can
 * succeed.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CODE_INTERPRETER_PORT, SANDBOX_DAEMON_PORT, pb, sendBearerToken } from "@fast-sandbox/api";
import {
  DEFAULT_HELPER_PATH,
  createContainerdRuntime,
  networkSettingsFromEnv,
  startAgentServer,
  type AgentServer,
  type ContainerdRuntime,
} from "@fast-sandbox/agent";
import { pino } from "pino";
import { BASE_IMAGE, importBaseImage, removeCgroupTree, removeNamespace } from "../../support/containerd.js";
import {
  ServerNamespace,
  networkLeftovers,
  readBanner,
  removeTestNetwork,
  testNetworkSettings,
  waitForConnect,
  type NetworkLeftovers,
} from "../../support/sandbox-network.js";

const suffix = randomBytes(3).toString("hex");
const NAMESPACE = `fsb-e2e-netiso-${suffix}`;
const CGROUP_PARENT = `/${NAMESPACE}`;
const TOKEN = randomBytes(16).toString("hex");
const SERVER_PORT = 8000;
const OTHER_SERVER_PORT = 8001;
const SANDBOX_PORT = 8080;
/** Published by the test's DNAT table on the host's addresses, and on an address that is not the host's. */
const PUBLISHED_PORT = 18000;
const NOT_THE_HOST = "198.51.100.200";
const DNAT_TABLE = `fsbt-dnat-${suffix}`;

const settings = testNetworkSettings();
const workDir = mkdtempSync(join(tmpdir(), "fsb-e2e-netiso-"));
let runtime: ContainerdRuntime;
let agent: AgentServer;
let client: Client<typeof pb.AgentService>;
let server: ServerNamespace;
let hostLoopback: Server;
let hostAnyAddress: Server;
let agentPort = 0;

const ISOLATED = pb.SandboxNetwork_Mode.ISOLATED;
const NOTHING: NetworkLeftovers = { namespaces: [], ports: [], addresses: [], records: [], reservations: [], rules: [], iptablesRules: [] };

function network(
  kind: pb.EgressPolicy_Kind,
  options: { allow?: { cidr: string; ports?: number[]; protocol?: string }[]; allowSandboxToSandbox?: boolean } = {},
) {
  return create(pb.SandboxNetworkSchema, {
    mode: ISOLATED,
    egress: { kind, allow: (options.allow ?? []).map((rule) => ({ cidr: rule.cidr, ports: rule.ports ?? [], protocol: rule.protocol ?? "" })) },
    allowSandboxToSandbox: options.allowSandboxToSandbox ?? false,
  });
}

/**
 * A sandbox that answers `hi-<name>` on SANDBOX_PORT (a Shared one only sleeps: it would take the
 * host's port). Its peer group is its namespace and the agent's pool.
 */
async function createSandbox(name: string, runtimeType: string, sandboxNetwork: pb.SandboxNetwork | undefined, namespace = "team"): Promise<pb.AgentSandbox> {
  return client.createSandbox({
    sandboxId: `${name}.${suffix}`,
    namespace,
    name,
    image: BASE_IMAGE,
    command: sandboxNetwork ? ["nc", "-ll", "-p", String(SANDBOX_PORT), "-e", "/bin/echo", `hi-${name}`] : ["sleep", "3600"],
    args: [],
    envs: [],
    runtimeType,
    slots: 0,
    exposedPorts: sandboxNetwork ? [SANDBOX_PORT] : [],
    ...(sandboxNetwork ? { network: sandboxNetwork } : {}),
  });
}

async function exec(sandbox: pb.AgentSandbox, script: string): Promise<{ exitCode: number; stdout: string }> {
  let stdout = "";
  let exitCode = -1;
  for await (const event of client.exec({ sandboxId: sandbox.sandboxId, command: ["sh", "-c", script], envs: [] })) {
    if (event.event.case === "stdout" || event.event.case === "stderr") stdout += new TextDecoder().decode(event.event.value);
    if (event.event.case === "exitCode") exitCode = event.event.value;
  }
  return { exitCode, stdout };
}

/** What a TCP server at address:port answers the sandbox with, or "" when it cannot connect (refused, dropped, unreachable). */
async function answerTo(sandbox: pb.AgentSandbox, address: string, port: number): Promise<string> {
  const { exitCode, stdout } = await exec(sandbox, `echo probe | nc -w 3 ${address} ${port} 2>/dev/null`);
  return exitCode === 0 ? stdout.trim() : "";
}

function listen(host: string, banner: string): Promise<Server> {
  return new Promise((resolve) => {
    const listener = createServer((socket) => {
      // Probes hang up without reading: a reset is no error here.
      socket.on("error", () => undefined);
      socket.end(`${banner}\n`);
    });
    listener.listen(0, host, () => resolve(listener));
  });
}

const portOf = (listener: Server) => (listener.address() as AddressInfo).port;
const gateway = settings.subnet.replace(/0\/24$/, "1");

/**
 * What Docker does for `-p`, and kube-proxy for a NodePort: connections to a port of the host's
 * addresses are rewritten to a server behind the host — here the test's server namespace — and so
 * are forwarded rather than delivered to the host. The same rule for an address that is not the
 * host's (as a Service's virtual address) is the control: destination NAT itself keeps working.
 */
function publishThroughDnat(): void {
  const to = `${server.address}:${SERVER_PORT}`;
  execFileSync("nft", ["-f", "-"], {
    input: `table ip ${DNAT_TABLE} {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr { ${gateway}, ${server.hostAddress} } tcp dport ${PUBLISHED_PORT} dnat to ${to}
    ip daddr ${NOT_THE_HOST} tcp dport ${PUBLISHED_PORT} dnat to ${to}
  }
}
`,
  });
}

before(async () => {
  importBaseImage(NAMESPACE);
  server = ServerNamespace.create();
  writeFileSync(join(workDir, "resolv.conf"), `nameserver ${server.address}\n`);
  await server.serveTcp(SERVER_PORT);
  await server.serveTcp(OTHER_SERVER_PORT);
  server.serveDns();
  hostLoopback = await listen("127.0.0.1", "host-loopback");
  hostAnyAddress = await listen("0.0.0.0", "host-any-address");
  publishThroughDnat();
  runtime = createContainerdRuntime({
    namespace: NAMESPACE,
    agentName: "netiso-0",
    stateDir: join(workDir, "state"),
    cgroupParent: CGROUP_PARENT,
    helperPath: DEFAULT_HELPER_PATH,
    // The sandboxes' resolver is the test's own DNS server; the server's deniable address is denied (FSB_NETWORK_DENY).
    network: { ...settings, hostResolvConfPath: join(workDir, "resolv.conf"), deniedCidrs: [`${server.deniableAddress}/32`] },
    logger: pino({ level: process.env.FSB_TEST_LOG_LEVEL ?? "warn" }),
  });
  await runtime.prepare();
  // Like an agent in the Kubernetes mode, it listens on every address of the host.
  agent = await startAgentServer({
    identity: { name: "netiso-0", namespace: "team", pool: "pool", nodeName: "node" },
    runtime,
    token: TOKEN,
    stateDir: join(workDir, "state"),
    host: "0.0.0.0",
    port: 0,
  });
  agentPort = Number(agent.endpoint.split(":").at(-1));
  client = createClient(pb.AgentService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${agentPort}`, interceptors: [sendBearerToken(TOKEN)] }));
});

after(async () => {
  // Each step on its own: a failure of one must not leave the rest behind.
  const steps: [string, () => unknown][] = [
    [
      "sandboxes",
      async () => {
        for (const sandbox of (await client.listSandboxes({})).sandboxes) await client.deleteSandbox({ sandboxId: sandbox.sandboxId, gracePeriodMs: 0 });
      },
    ],
    ["agent", () => agent.close()],
    [
      "runtime",
      async () => {
        await runtime.unprepare();
        runtime.close();
      },
    ],
    ["listeners", () => [hostLoopback, hostAnyAddress].forEach((listener) => listener.close())],
    ["DNAT table", () => execFileSync("nft", ["delete", "table", "ip", DNAT_TABLE])],
    ["server namespace", () => server.remove()],
    ["network", () => removeTestNetwork(settings)],
    ["containerd namespace", () => removeNamespace(NAMESPACE)],
    ["cgroups", () => removeCgroupTree(CGROUP_PARENT)],
    // Last: the runsc wrappers the shims call live there.
    ["work directory", () => rmSync(workDir, { recursive: true, force: true })],
  ];
  for (const [what, step] of steps) {
    try {
      await step();
    } catch (error) {
      console.error(`clean-up of ${what} failed:`, error);
    }
  }
});

for (const runtimeType of ["container", "gvisor"]) {
  describe(`isolated ${runtimeType} sandboxes`, () => {
    const name = (role: string) => `${runtimeType === "gvisor" ? "g" : "r"}-${role}`;
    const sandboxes: Record<string, pb.AgentSandbox> = {};

    before(async () => {
      const s2s = { allowSandboxToSandbox: true };
      // a and b: one pool that allows sandbox-to-sandbox; c: the same setting in another pool; d: denyAll; e: an allow list.
      const created = await Promise.all([
        createSandbox(name("a"), runtimeType, network(pb.EgressPolicy_Kind.ALLOW_ALL, s2s)),
        createSandbox(name("b"), runtimeType, network(pb.EgressPolicy_Kind.ALLOW_ALL, s2s)),
        createSandbox(name("c"), runtimeType, network(pb.EgressPolicy_Kind.ALLOW_ALL, s2s), "other-team"),
        createSandbox(name("d"), runtimeType, network(pb.EgressPolicy_Kind.DENY_ALL)),
        createSandbox(
          name("e"),
          runtimeType,
          network(pb.EgressPolicy_Kind.ALLOW_LIST, { allow: [{ cidr: `${server.address}/32`, ports: [SERVER_PORT], protocol: "tcp" }] }),
        ),
      ]);
      for (const [index, role] of ["a", "b", "c", "d", "e"].entries()) sandboxes[role] = created[index] as pb.AgentSandbox;
    });

    it("each gets an address of its own on the sandbox bridge, reported by create, list and status, with its hostname, hosts and resolv.conf", async () => {
      const a = sandboxes.a as pb.AgentSandbox;
      const prefix = settings.subnet.replace(/0\/24$/, "");
      const addresses = Object.values(sandboxes).map((sandbox) => sandbox.address);
      assert.ok(addresses.every((address) => address.startsWith(prefix) && address !== gateway));
      assert.equal(new Set(addresses).size, addresses.length);
      const listed = (await client.listSandboxes({})).sandboxes.find((sandbox) => sandbox.sandboxId === a.sandboxId);
      assert.equal(listed?.address, a.address);
      const status = (await client.status({})).sandboxes.find((sandbox) => sandbox.sandboxId === a.sandboxId);
      assert.equal(status?.address, a.address);
      const inside = await exec(a, "hostname; cat /etc/hosts /etc/resolv.conf; ip -4 -o addr show eth0");
      assert.match(inside.stdout, new RegExp(`^${name("a")}\\n`));
      assert.match(inside.stdout, new RegExp(`${a.address.replace(/\./g, "\\.")}\\t${name("a")}`));
      assert.match(inside.stdout, new RegExp(`nameserver ${server.address.replace(/\./g, "\\.")}`));
      assert.match(inside.stdout, new RegExp(`inet ${a.address.replace(/\./g, "\\.")}/24`));
    });

    it("two sandboxes bind the same port, each answering at its own address", async () => {
      assert.equal((await readBanner(sandboxes.a?.address ?? "", SANDBOX_PORT)).trim(), `hi-${name("a")}`);
      assert.equal((await readBanner(sandboxes.b?.address ?? "", SANDBOX_PORT)).trim(), `hi-${name("b")}`);
    });

    it("reaches nothing of the host: not its loopback listener, not the agent's port, not any host address", async () => {
      const a = sandboxes.a as pb.AgentSandbox;
      // The listeners are there: the host itself reaches them.
      await waitForConnect("127.0.0.1", portOf(hostLoopback));
      await waitForConnect(server.hostAddress, agentPort);
      assert.equal((await readBanner(server.hostAddress, portOf(hostAnyAddress))).trim(), "host-any-address");
      const answers = await Promise.all([
        answerTo(a, "127.0.0.1", portOf(hostLoopback)),
        answerTo(a, gateway, portOf(hostLoopback)),
        answerTo(a, gateway, portOf(hostAnyAddress)),
        answerTo(a, gateway, agentPort),
        answerTo(a, server.hostAddress, portOf(hostAnyAddress)),
        answerTo(a, server.hostAddress, agentPort),
      ]);
      assert.deepEqual(answers, ["", "", "", "", "", ""]);
    });

    it("reaches no port the host publishes through destination NAT, even allowed everywhere; a DNAT to an address elsewhere still works", async () => {
      const a = sandboxes.a as pb.AgentSandbox;
      const [control, throughGateway, throughHostAddress] = await Promise.all([
        answerTo(a, NOT_THE_HOST, PUBLISHED_PORT),
        answerTo(a, gateway, PUBLISHED_PORT),
        answerTo(a, server.hostAddress, PUBLISHED_PORT),
      ]);
      assert.deepEqual({ control, throughGateway, throughHostAddress }, { control: `srv-${SERVER_PORT}`, throughGateway: "", throughHostAddress: "" });
    });

    it("cannot reach the clouds' metadata addresses (169.254.169.254, Alibaba's 100.100.100.200), even allowed everywhere else", async () => {
      for (const address of server.metadataAddresses) {
        assert.equal((await readBanner(address, SERVER_PORT)).trim(), `srv-${SERVER_PORT}`, `the host reaches ${address}`);
        assert.equal(await answerTo(sandboxes.a as pb.AgentSandbox, address, SERVER_PORT), "", address);
      }
    });

    it("cannot reach what the network denies (FSB_NETWORK_DENY: on Kubernetes the cluster's ranges), even allowed everywhere else", async () => {
      assert.equal((await readBanner(server.deniableAddress, SERVER_PORT)).trim(), `srv-${SERVER_PORT}`, "the host reaches it");
      assert.equal(await answerTo(sandboxes.a as pb.AgentSandbox, server.deniableAddress, SERVER_PORT), "");
      assert.equal(await answerTo(sandboxes.a as pb.AgentSandbox, server.address, SERVER_PORT), `srv-${SERVER_PORT}`, "the rest stays reachable");
    });

    it("egress: allowAll reaches a server on another local address, denyAll does not, an allow list only what it lists", async () => {
      const [allowAll, allowAllOther, denyAll, listed, unlisted] = await Promise.all([
        answerTo(sandboxes.a as pb.AgentSandbox, server.address, SERVER_PORT),
        answerTo(sandboxes.a as pb.AgentSandbox, server.address, OTHER_SERVER_PORT),
        answerTo(sandboxes.d as pb.AgentSandbox, server.address, SERVER_PORT),
        answerTo(sandboxes.e as pb.AgentSandbox, server.address, SERVER_PORT),
        answerTo(sandboxes.e as pb.AgentSandbox, server.address, OTHER_SERVER_PORT),
      ]);
      assert.deepEqual(
        { allowAll, allowAllOther, denyAll, listed, unlisted },
        { allowAll: "srv-8000", allowAllOther: "srv-8001", denyAll: "", listed: "srv-8000", unlisted: "" },
      );
    });

    it("resolves names through the host's resolver unless its policy is denyAll", async () => {
      const lookup = async (sandbox: pb.AgentSandbox) => (await exec(sandbox, "nslookup -type=a svc.example.test 2>&1")).stdout;
      const [allowAll, allowList, denyAll] = await Promise.all([
        lookup(sandboxes.a as pb.AgentSandbox),
        lookup(sandboxes.e as pb.AgentSandbox),
        lookup(sandboxes.d as pb.AgentSandbox),
      ]);
      assert.match(allowAll, /192\.0\.2\.123/);
      assert.match(allowList, /192\.0\.2\.123/);
      assert.doesNotMatch(denyAll, /192\.0\.2\.123/);
    });

    it("reaches another sandbox only in a pool that allows it, and only that pool's", async () => {
      const { a, b, c, d } = sandboxes as Record<"a" | "b" | "c" | "d", pb.AgentSandbox>;
      const answers = await Promise.all([
        answerTo(a, b.address, SANDBOX_PORT),
        answerTo(b, a.address, SANDBOX_PORT),
        answerTo(c, a.address, SANDBOX_PORT),
        answerTo(a, c.address, SANDBOX_PORT),
        answerTo(d, a.address, SANDBOX_PORT),
        answerTo(a, d.address, SANDBOX_PORT),
      ]);
      assert.deepEqual(answers, [`hi-${name("b")}`, `hi-${name("a")}`, "", "", "", ""]);
    });

    it("a peer never reaches another's in-sandbox daemon (49983) or code interpreter (49999) port, which the host (root) does", async () => {
      const { a, b } = sandboxes as Record<"a" | "b", pb.AgentSandbox>;
      for (const port of [SANDBOX_DAEMON_PORT, CODE_INTERPRETER_PORT]) {
        // What the daemon or the interpreter would serve there (these sandboxes run neither): a listener on its port.
        await exec(b, `nc -ll -p ${port} -e /bin/echo code-runner-b >/dev/null 2>&1 &`);
        await waitForConnect(b.address, port);
        assert.equal((await readBanner(b.address, port)).trim(), "code-runner-b");
        assert.equal(await answerTo(a, b.address, port), "", `port ${port}`);
      }
      assert.equal(await answerTo(a, b.address, SANDBOX_PORT), `hi-${name("b")}`, "its other ports stay open to its peers");
    });

    it("of the host's processes, only root's reach a sandbox: another local account is refused", async () => {
      const { a } = sandboxes as Record<"a", pb.AgentSandbox>;
      const probe = (uid: number) =>
        spawnSync(
          process.execPath,
          [
            "-e",
            `const s = require("node:net").connect(${SANDBOX_PORT}, ${JSON.stringify(a.address)});
             s.setTimeout(5000, () => { console.log("timeout"); process.exit(0); });
             s.on("data", (d) => { console.log("answered " + String(d).trim()); process.exit(0); });
             s.on("error", (e) => { console.log("error " + e.code); process.exit(0); });`,
          ],
          { uid, gid: uid, encoding: "utf8", timeout: 15_000 },
        ).stdout.trim();
      assert.equal(probe(0), `answered hi-${name("a")}`);
      // Refused at once (rejected), not left to time out.
      assert.match(probe(65534), /^error (ECONNREFUSED|EPERM|EHOSTUNREACH)$/);
    });

    it("deleting them removes every namespace, port, address, reservation and rule they had", async () => {
      for (const sandbox of Object.values(sandboxes)) await client.deleteSandbox({ sandboxId: sandbox.sandboxId, gracePeriodMs: 0 });
      // What is left is the agent's prepared namespaces (refilled in the background), nothing of theirs.
      await runtime.networks?.warm();
      assert.deepEqual(networkLeftovers(settings, { exceptPrepared: true }), NOTHING);
      const gone = Object.values(sandboxes).map((sandbox) => sandbox.address);
      assert.ok(!networkLeftovers(settings).reservations.some((address) => gone.includes(address)));
    });
  });
}

describe("the deny list an agent outside a Pod makes without FSB_NETWORK_DENY", () => {
  it("is the host's directly connected subnets as the kernel routes them (here the test server's link), not the sandboxes' own", () => {
    const serverLink = `${server.hostAddress.split(".").slice(0, 3).join(".")}.0/30`;
    const { deniedCidrs } = networkSettingsFromEnv({ FSB_NETWORK_SUBNET: settings.subnet });
    assert.ok(deniedCidrs.includes(serverLink), `${serverLink} in ${deniedCidrs.join(", ")}`);
    assert.ok(!deniedCidrs.includes(settings.subnet), "the sandbox subnet is left to the sandbox-to-sandbox rules");
    // What the cases above prove of any denied CIDR (FSB_NETWORK_DENY) holds for these: no egress policy reaches them.
  });
});

describe("a Shared sandbox next to isolated ones", () => {
  it("keeps today's behaviour: the agent's network, where the host's loopback listener answers, and no address of its own", async () => {
    const shared = await createSandbox("shared", "container", undefined);
    assert.equal(shared.address, "");
    assert.equal(await answerTo(shared, "127.0.0.1", portOf(hostLoopback)), "host-loopback");
    await client.deleteSandbox({ sandboxId: shared.sandboxId, gracePeriodMs: 0 });
  });

  it("the agent's prepared namespaces go with it, and the network then has nothing left", async () => {
    await runtime.unprepare();
    assert.deepEqual(networkLeftovers(settings), { namespaces: [], ports: [], addresses: [], records: [], reservations: [], rules: [], iptablesRules: [] });
  });
});
