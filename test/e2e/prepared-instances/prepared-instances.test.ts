/**
 * Prepared instances on the real containerd, runc and runsc (packages/agent/src/containerd/prepared-instances.ts):
 * a claim runs exactly the requested command, env and working directory; two claims never get the
 * same instance; a claim leaks nothing of another instance; a create that does not match the
 * template takes the cold path; a claimed command that cannot start fails the create like a cold
 * one and leaves nothing; and removing the stock leaves nothing behind.
 * And a claim whose agent dies before containerd has recorded it (containerd out of reach) is
 * recorded by the agent's next start: the sandbox runs on, it is not removed as a leftover instance;
 * one containerd has not recorded in time is recorded by the same agent once containerd is back. A
 * claim bigger than the FIFO's pipe arrives whole. The helper reports an instance waiting only once
 * a claim can be written. A failed prepare leaves nothing, and a start that keeps no instances
 * removes those a previous process left. runc with Shared and Isolated networks, and gVisor (whose
 * helper waits on a host FIFO: runsc --host-fifo=open). Everything runs in its own containerd
 * namespace and network, removed at the end.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { closeSync, constants, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { AlreadyExistsError, FailedPreconditionError, ValidationError } from "@fast-sandbox/api";
import { DEFAULT_HELPER_PATH, createContainerdRuntime, type ContainerdRuntime, type CreateTimings } from "@fast-sandbox/agent";
import { encodeClaim, writeClaim, type PreparedTemplate } from "../../../packages/agent/src/containerd/prepared-instances.js";
import type { RuntimeSandboxSpec } from "../../../packages/agent/src/runtime/runtime.js";
import { BASE_IMAGE, ctr, importBaseImage, removeCgroupTree, removeNamespace } from "../../support/containerd.js";
import { removeTestNetwork, testNetworkSettings } from "../../support/sandbox-network.js";

const NAMESPACE = "fsb-test-prepared";
const CGROUP_PARENT = "/fsb-test-prepared";
const workDir = mkdtempSync(join(tmpdir(), "fsb-prepared-"));
const settings = testNetworkSettings();
let counter = 0;

type Mode = "shared" | "isolated" | "gvisor";

const isolatedTemplate: PreparedTemplate = {
  namespace: "team",
  pool: "pool",
  image: BASE_IMAGE,
  runtimeType: "container",
  resources: { memoryBytes: 64 << 20 },
  network: { mode: "isolated", egress: { kind: "denyAll" }, allowSandboxToSandbox: false },
};

const templates: Record<Mode, PreparedTemplate> = {
  shared: { namespace: "team", pool: "pool", image: BASE_IMAGE, runtimeType: "container", resources: { memoryBytes: 64 << 20 } },
  isolated: isolatedTemplate,
  // gVisor's helper waits on a host FIFO (runsc --host-fifo=open, gvisor-binary.ts).
  gvisor: { ...isolatedTemplate, runtimeType: "gvisor" },
};

const titles: Record<Mode, string> = { shared: "runc, shared network", isolated: "runc, isolated network", gvisor: "gVisor, isolated network" };

function newRuntime(mode: Mode, timings: CreateTimings[]): ContainerdRuntime {
  return createContainerdRuntime({
    namespace: NAMESPACE,
    agentName: `prep-${mode}`,
    stateDir: join(workDir, mode, "state"),
    cgroupParent: `${CGROUP_PARENT}/${mode}`,
    helperPath: DEFAULT_HELPER_PATH,
    ...(mode !== "shared" ? { network: { ...settings, preparedNamespaces: 0 } } : {}),
    preparedInstances: { count: 2, template: templates[mode] },
    onCreateTimings: (t) => timings.push(t),
    logger: pino({ level: process.env.FSB_TEST_LOG_LEVEL ?? "warn" }),
  });
}

function spec(mode: Mode, overrides: Partial<RuntimeSandboxSpec> = {}): RuntimeSandboxSpec {
  counter += 1;
  const sandboxId = `p${process.pid}x${counter}`;
  const template = templates[mode];
  return {
    sandboxId,
    namespace: template.namespace,
    name: `box-${counter}`,
    pool: template.pool,
    image: template.image,
    command: ["sh", "-c", "sleep 1000"],
    args: [],
    env: [],
    runtimeType: template.runtimeType,
    ...(template.resources ? { resources: template.resources } : {}),
    ...(template.network ? { network: template.network } : {}),
    logPath: join(workDir, mode, `${sandboxId}.log`),
    ...overrides,
  };
}

async function execOut(runtime: ContainerdRuntime, sandboxId: string, script: string): Promise<string> {
  let stdout = "";
  const code = await runtime.exec(
    sandboxId,
    { command: ["sh", "-c", script] },
    { onStdout: (chunk) => void (stdout += Buffer.from(chunk).toString()), onStderr: () => undefined },
  );
  assert.equal(code, 0, `exec ${script} failed`);
  return stdout;
}

async function logOf(path: string, until: (text: string) => boolean): Promise<string> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const text = existsSync(path) ? readFileSync(path, "utf8") : "";
    if (until(text)) return text;
    await sleep(25);
  }
  return existsSync(path) ? readFileSync(path, "utf8") : "";
}

/**
 * containerd's socket behind a gate: while shut, every connection through it is cut and new ones
 * are refused — containerd out of reach for one runtime only, the rest of the host unaffected.
 */
class ContainerdGate {
  private readonly sockets = new Set<Socket>();
  private open = true;

  private constructor(
    readonly path: string,
    private readonly server: Server,
  ) {}

  static async listen(path: string, upstream = "/run/containerd/containerd.sock"): Promise<ContainerdGate> {
    const server = createServer();
    const gate = new ContainerdGate(path, server);
    server.on("connection", (client) => {
      if (!gate.open) return void client.destroy();
      const target = createConnection(upstream);
      for (const socket of [client, target]) {
        gate.sockets.add(socket);
        socket.on("close", () => gate.sockets.delete(socket));
        socket.on("error", () => (client.destroy(), target.destroy()));
      }
      client.pipe(target).pipe(client);
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    return gate;
  }

  shut(): void {
    this.open = false;
    for (const socket of this.sockets) socket.destroy();
  }

  reopen(): void {
    this.open = true;
  }

  async close(): Promise<void> {
    this.shut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** The snapshot of a claimed instance's container is labelled as the sandbox's, containerd's own labels kept. */
function assertSnapshotOfSandbox(containerId: string | undefined, sandboxId: string): void {
  assert.ok(containerId, `a container of sandbox ${sandboxId}`);
  const labels = (JSON.parse(ctr(NAMESPACE, "snapshots", "info", containerId)) as { Labels?: Record<string, string> }).Labels ?? {};
  assert.equal(labels["fast-sandbox.io/sandbox-id"], sandboxId, "the snapshot names the sandbox");
  assert.equal(labels["fast-sandbox.io/role"], undefined, "the snapshot is not stock any more");
  assert.ok(labels["containerd.io/gc.root"], "containerd's own label is kept");
}

const containersOf = (agent: string) => ctr(NAMESPACE, "containers", "list", "-q", `labels."fast-sandbox.io/agent"==${agent}`).split("\n").filter(Boolean);

before(() => {
  importBaseImage(NAMESPACE);
});

after(async () => {
  for (const [what, step] of [
    ["network", () => removeTestNetwork(settings)],
    ["containerd namespace", () => removeNamespace(NAMESPACE)],
    ["cgroups", () => removeCgroupTree(CGROUP_PARENT)],
    ["work directory", () => rmSync(workDir, { recursive: true, force: true })],
  ] as const) {
    try {
      await step();
    } catch (error) {
      console.error(`clean-up of ${what} failed:`, error);
    }
  }
});

for (const mode of ["shared", "isolated", "gvisor"] as const) {
  describe(`prepared instances, ${titles[mode]}`, () => {
    const timings: CreateTimings[] = [];
    let runtime: ContainerdRuntime;

    before(async () => {
      runtime = newRuntime(mode, timings);
      await runtime.prepare();
      await runtime.preparedInstancesReady();
    });

    after(async () => {
      for (const sandbox of await runtime.list()) await runtime.delete(sandbox.sandboxId, { gracePeriodMs: 0 });
      await runtime.unprepare();
      runtime.close();
    });

    it("a claim runs exactly the requested command, env and working directory, and execs inherit them", async () => {
      assert.equal(runtime.preparedInstanceCount, 2);
      const request = spec(mode, {
        // (The claim FIFO must be gone before the command starts: a line would say it was not.)
        command: [
          "sh",
          "-c",
          '[ -e /.fast-sandbox/run/claim ] && echo claim-fifo-visible; echo "greeting=$GREETING dir=$(pwd) args=$0,$1"; echo "home=$HOME"; echo "$SECRET_OF_TEMPLATE" > /tmp/seen; sleep 1000',
          "first",
          "second",
        ],
        env: [{ name: "GREETING", value: "hello world" }],
        workingDir: "/srv/app",
      });
      const sandbox = await runtime.create(request);
      assert.equal(timings.at(-1)?.prepared, true, "the create claimed a prepared instance");
      assert.equal(sandbox.state, "running");
      assert.equal(sandbox.sandboxId, request.sandboxId);
      const log = await logOf(request.logPath, (text) => text.includes("home="));
      // HOME, which the image does not set: the runtime's, as a cold create's command and an exec get it.
      const home = (await execOut(runtime, request.sandboxId, 'echo "$HOME"')).trim();
      assert.ok(home.startsWith("/"), `the runtime gives execs a HOME: ${JSON.stringify(home)}`);
      assert.equal(log, `greeting=hello world dir=/srv/app args=first,second\nhome=${home}\n`);
      assert.equal(await execOut(runtime, request.sandboxId, 'echo "$GREETING|$(pwd)"'), "hello world|/srv/app\n");
      // The image's environment is kept under the request's (PATH comes from the image).
      assert.match(await execOut(runtime, request.sandboxId, "echo $PATH"), /\/bin/);
      const got = await runtime.get(request.sandboxId);
      assert.equal(got?.name, request.name);
      assert.equal(got?.state, "running");
      // get() waited for the claim's record: the instance's snapshot is now the sandbox's too.
      const [containerId] = ctr(NAMESPACE, "containers", "list", "-q", `labels."fast-sandbox.io/sandbox-id"==${request.sandboxId}`).split("\n").filter(Boolean);
      assertSnapshotOfSandbox(containerId, request.sandboxId);
      if (mode !== "shared") assert.match(sandbox.address ?? "", /^\d+\.\d+\.\d+\.\d+$/);
      // gVisor's own kernel answers: its dmesg is the Sentry's boot log, not the host's.
      if (mode === "gvisor") assert.match(await execOut(runtime, request.sandboxId, "dmesg"), /gVisor/i);
      await runtime.delete(request.sandboxId, { gracePeriodMs: 0 });
      assert.equal(await runtime.get(request.sandboxId), undefined);
    });

    it("concurrent claims never get the same instance, and one sees nothing of another", async () => {
      await runtime.preparedInstancesReady();
      const requests = [0, 1].map((index) =>
        spec(mode, { command: ["sh", "-c", `echo mine-${index} > /tmp/owner; ls /tmp; sleep 1000`], env: [{ name: "INDEX", value: String(index) }] }),
      );
      const before = timings.length;
      const sandboxes = await Promise.all(requests.map((request) => runtime.create(request)));
      assert.deepEqual(
        timings.slice(before).map((t) => t.prepared),
        [true, true],
      );
      assert.notEqual(sandboxes[0]?.pid, sandboxes[1]?.pid);
      for (const [index, request] of requests.entries()) {
        const log = await logOf(request.logPath, (text) => text.includes("owner"));
        assert.equal(log, "owner\n", "each sandbox's /tmp holds its own file only");
        assert.equal(await execOut(runtime, request.sandboxId, "cat /tmp/owner; echo $INDEX"), `mine-${index}\n${index}\n`);
      }
      const hostnames = await Promise.all(requests.map((request) => execOut(runtime, request.sandboxId, "hostname")));
      assert.notEqual(hostnames[0], hostnames[1]);
      if (mode !== "shared") assert.notEqual(sandboxes[0]?.address, sandboxes[1]?.address);
      const containers = containersOf(`prep-${mode}`);
      for (const sandbox of sandboxes) await runtime.delete(sandbox.sandboxId, { gracePeriodMs: 0 });
      assert.ok(containers.length >= 2);
    });

    it("a create that differs from the template takes the cold path", async () => {
      const request = spec(mode, { resources: { memoryBytes: 128 << 20 } });
      const before = runtime.preparedInstanceCount;
      await runtime.create(request);
      assert.notEqual(timings.at(-1)?.prepared, true);
      assert.equal(runtime.preparedInstanceCount, before, "no instance was taken");
      await runtime.delete(request.sandboxId, { gracePeriodMs: 0 });
    });

    it("a FIFO where the agent reads a file blocks nothing, and one the sandbox waits on keeps it from nothing", async () => {
      await runtime.preparedInstancesReady();
      const trap = "/.fast-sandbox/run/trap";
      const request = spec(mode, { command: ["sh", "-c", `until [ -p ${trap} ]; do sleep 0.05; done; echo opening; cat ${trap}; echo opened`] });
      await runtime.create(request);
      assert.equal(timings.at(-1)?.prepared, true, "the create claimed a prepared instance");
      const runDir = join(workDir, mode, "state", "run", request.sandboxId);
      assert.equal(existsSync(join(runDir, "claim")), false, "the claim FIFO is gone once it served");
      // FIFOs with nothing on their other end (as an image's layer may hold, or code in the sandbox
      // may make): one the command opens, one where the helper records the command's exit.
      execFileSync("mkfifo", [join(runDir, "trap")]);
      execFileSync("mkfifo", [join(runDir, "exit-code")]);
      await logOf(request.logPath, (text) => text.includes("opening"));
      const got = await runtime.get(request.sandboxId);
      assert.equal(got?.state, "running");
      assert.equal(got?.exitCode, undefined, "a FIFO is no exit code");
      await runtime.delete(request.sandboxId, { gracePeriodMs: 0 });
      assert.equal(await runtime.get(request.sandboxId), undefined);
      const left = ctr(NAMESPACE, "containers", "list", "-q", `labels."fast-sandbox.io/sandbox-id"==${request.sandboxId}`);
      assert.equal(left.trim(), "", "its container is gone");
    });

    it("a claimed command that cannot start fails the create like a cold one, and leaves nothing of the instance", async () => {
      await runtime.preparedInstancesReady();
      const request = spec(mode, { command: ["/no/such/program"] });
      await assert.rejects(runtime.create(request), (error: unknown) => error instanceof FailedPreconditionError || error instanceof ValidationError);
      assert.equal(await runtime.get(request.sandboxId), undefined);
      assert.equal(existsSync(join(workDir, mode, "state", "run", request.sandboxId)), false);
      // Only the stock is left (being refilled): every container of the agent is a prepared instance or an anchor.
      for (const id of containersOf(`prep-${mode}`)) assert.match(id, /^(fsb-prepared-|fsb-anchor\.)/);
    });

    it("a claim whose journal cannot be written (its command started meanwhile) fails the create, and leaves nothing of the instance or its network", async () => {
      await runtime.preparedInstancesReady();
      const stock = containersOf(`prep-${mode}`).filter((id) => id.startsWith("fsb-prepared-"));
      assert.equal(stock.length, 2);
      // A directory where the journal writes its entry (then renames it into place): the entry,
      // written while the helper starts the command, fails; removing it would not.
      const request = spec(mode, { command: ["sh", "-c", "echo started; sleep 1000"] });
      const blocker = join(workDir, mode, "state", "claims", `${request.sandboxId}.json.${process.pid}.tmp`);
      mkdirSync(blocker, { recursive: true });
      try {
        await assert.rejects(runtime.create(request), /EISDIR/);
      } finally {
        rmSync(blocker, { recursive: true, force: true });
      }
      assert.equal(await runtime.get(request.sandboxId), undefined);
      assert.equal(existsSync(join(workDir, mode, "state", "run", request.sandboxId)), false, "its run directory is gone");
      const claimed = stock.filter((id) => !containersOf(`prep-${mode}`).includes(id));
      assert.equal(claimed.length, 1, "the claimed instance's container is gone, the other is still in stock");
      assert.ok(!ctr(NAMESPACE, "tasks", "list", "-q").split("\n").includes(claimed[0]!), "its task (the started command) is gone");
      if (mode !== "shared") {
        const records = readdirSync(join(settings.stateDir, "attachments"))
          .filter((file) => file.endsWith(".json"))
          .map((file) => JSON.parse(readFileSync(join(settings.stateDir, "attachments", file), "utf8")) as { id: string; sandboxId?: string });
        const left = records.filter((record) => record.sandboxId === request.sandboxId || record.sandboxId === claimed[0] || record.id === claimed[0]);
        assert.deepEqual(left, [], "no network record of the sandbox or the instance");
      }
    });

    it("a second create of a sandbox it runs, claimed or cold, fails as a duplicate and leaves the sandbox as it was", async () => {
      await runtime.preparedInstancesReady();
      for (const [how, overrides] of [
        ["claimed", {}],
        ["cold", { resources: { memoryBytes: 128 << 20 } }],
      ] as const) {
        const request = spec(mode, { command: ["sh", "-c", "sleep 1000"], ...overrides });
        await runtime.create(request);
        await assert.rejects(runtime.create(request), (error: unknown) => error instanceof AlreadyExistsError, how);
        assert.equal((await runtime.get(request.sandboxId))?.state, "running", how);
        const labelled = () =>
          ctr(NAMESPACE, "containers", "list", "-q", `labels."fast-sandbox.io/sandbox-id"==${request.sandboxId}`).split("\n").filter(Boolean);
        assert.equal(labelled().length, 1, `${how}: one container of the sandbox`);
        const runDir = join(workDir, mode, "state", "run", request.sandboxId);
        assert.ok(existsSync(join(runDir, "command-start")), `${how}: its run directory is intact (${readdirSync(runDir).join(", ")})`);
        await runtime.delete(request.sandboxId, { gracePeriodMs: 0 });
        assert.deepEqual(labelled(), [], `${how}: nothing left`);
      }
    });

    it("a claim bigger than the FIFO's pipe (200 KiB of env) runs with the whole of it", async () => {
      await runtime.preparedInstancesReady();
      const env = ["A", "B", "C", "D"].map((letter, index) => ({ name: `BIG_${index}`, value: letter.repeat(50 << 10) }));
      const request = spec(mode, { command: ["sh", "-c", 'echo "${#BIG_0} ${#BIG_1} ${#BIG_2} ${#BIG_3} ${BIG_3#DDDDDDD}"; sleep 1000'], env });
      const before = timings.length;
      await runtime.create(request);
      assert.equal(timings[before]?.prepared, true, "the create claimed an instance");
      const log = await logOf(request.logPath, (text) => text.endsWith("\n"));
      assert.equal(log, `51200 51200 51200 51200 ${"D".repeat((50 << 10) - 7)}\n`);
      assert.equal(await execOut(runtime, request.sandboxId, 'echo "${#BIG_3}"'), "51200\n");
      await runtime.delete(request.sandboxId, { gracePeriodMs: 0 });
    });

    it("a create whose claim is refused before the instance is touched (a NUL byte in its env) gives the instance back to the stock", async () => {
      await runtime.preparedInstancesReady();
      const prepared = () => containersOf(`prep-${mode}`).filter((id) => id.startsWith("fsb-prepared-"));
      assert.equal(prepared().length, 2);
      const request = spec(mode, { env: [{ name: "BAD", value: "a\0b" }] });
      await assert.rejects(runtime.create(request), (error: unknown) => /must not contain NUL bytes/.test(String(error)));
      assert.equal(runtime.preparedInstanceCount, 2, "the instance is back in the stock");
      await runtime.preparedInstancesReady();
      assert.equal(prepared().length, runtime.preparedInstanceCount, "no instance is left outside the stock");
      assert.equal(await runtime.get(request.sandboxId), undefined);
    });

    it("removing the stock leaves no container, snapshot, run directory or log of an instance, and spares a claim just answered", async () => {
      await runtime.preparedInstancesReady();
      // containerd relabels a claimed instance as its sandbox only after the create's answer: the
      // stock's removal right behind it (an agent stopping) must still tell the claim from the stock.
      const claim = spec(mode, { command: ["sh", "-c", "sleep 1000"] });
      const before = timings.length;
      await runtime.create(claim);
      await runtime.removePreparedInstances();
      assert.equal(timings[before]?.prepared, true, "the create claimed an instance");
      assert.equal((await runtime.get(claim.sandboxId))?.state, "running", "the claimed sandbox survives the stock's removal");
      await runtime.delete(claim.sandboxId, { gracePeriodMs: 0 });
      assert.deepEqual(
        containersOf(`prep-${mode}`).filter((id) => !id.startsWith("fsb-anchor.")),
        [],
      );
      const snapshots = ctr(NAMESPACE, "snapshots", "list");
      assert.doesNotMatch(snapshots, /fsb-prepared-/);
      const stateDir = join(workDir, mode, "state");
      assert.deepEqual(
        readdirSync(join(stateDir, "run")).filter((name) => name.startsWith("fsb-prepared-")),
        [],
      );
      assert.deepEqual(
        readdirSync(join(stateDir, "logs")).filter((name) => name.startsWith("fsb-prepared-")),
        [],
      );
      assert.equal(runtime.preparedInstanceCount, 0);
    });
  });
}

describe("a claim containerd has not recorded when its agent dies", () => {
  it("is recorded by the agent's next start: the sandbox runs on and is not removed as a leftover instance", async () => {
    const dir = join(workDir, "journal");
    mkdirSync(dir, { recursive: true });
    const gate = await ContainerdGate.listen(join(dir, "containerd.sock"));
    const agentName = "prep-journal";
    const stateDir = join(dir, "state");
    const make = () =>
      createContainerdRuntime({
        namespace: NAMESPACE,
        agentName,
        socketPath: gate.path,
        stateDir,
        cgroupParent: `${CGROUP_PARENT}/journal`,
        helperPath: DEFAULT_HELPER_PATH,
        preparedInstances: { count: 1, template: templates.shared },
        logger: pino({ level: process.env.FSB_TEST_LOG_LEVEL ?? "silent" }),
      });
    let second: ContainerdRuntime | undefined;
    try {
      const first = make();
      await first.prepare();
      await first.preparedInstancesReady();
      const [instance] = containersOf(agentName).filter((id) => id.startsWith("fsb-prepared-"));
      assert.ok(instance, "one instance in stock");

      // containerd goes out of the agent's reach; the claim itself needs nothing of it.
      gate.shut();
      const request = spec("shared", { command: ["sh", "-c", "echo claimed before the agent died; sleep 1000"] });
      const created = await first.create(request);
      assert.equal(created.state, "running");
      assert.deepEqual(readdirSync(join(stateDir, "claims")), [`${request.sandboxId}.json`], "the claim is in the journal");
      // The agent dies with its record undone: containerd still holds an instance of the stock.
      first.close();
      const labels = JSON.parse(ctr(NAMESPACE, "containers", "info", instance)).Labels as Record<string, string>;
      assert.equal(labels["fast-sandbox.io/role"], "prepared-instance");

      gate.reopen();
      second = make();
      await second.prepare();
      const listed = await second.list();
      assert.deepEqual(
        listed.map((sandbox) => [sandbox.sandboxId, sandbox.state]),
        [[request.sandboxId, "running"]],
        "the claimed sandbox is the agent's, running",
      );
      assert.ok(containersOf(agentName).includes(instance), "its container was not removed as stock");
      assert.match(await logOf(request.logPath, (text) => text.includes("claimed before")), /claimed before the agent died/);
      assert.equal((await execOut(second, request.sandboxId, "echo still here")).trim(), "still here");
      assert.deepEqual(readdirSync(join(stateDir, "claims")), [], "the journal is empty once containerd has the claim");
      const recorded = JSON.parse(ctr(NAMESPACE, "containers", "info", instance)).Labels as Record<string, string>;
      assert.equal(recorded["fast-sandbox.io/sandbox-id"], request.sandboxId);
      assert.equal(recorded["fast-sandbox.io/role"], undefined);
      assertSnapshotOfSandbox(instance, request.sandboxId);
    } finally {
      if (second) {
        for (const sandbox of await second.list()) await second.delete(sandbox.sandboxId, { gracePeriodMs: 0 });
        await second.unprepare();
        second.close();
      }
      await gate.close();
    }
  });
});

/** A logger that also tells `onMessage` every message it writes (as JSON lines). */
function watchedLogger(onMessage: (msg: string) => void) {
  return pino(
    { level: "warn" },
    {
      write: (line: string) => {
        onMessage((JSON.parse(line) as { msg: string }).msg);
        if (process.env.FSB_TEST_LOG_LEVEL) process.stderr.write(line);
      },
    },
  );
}

describe("the prepared helper, process 1 of an instance", () => {
  // The helper alone, as a prepared instance's process 1 but in a bare root: its run directory at
  // /.fast-sandbox/run, and itself as the only program.
  const root = join(workDir, "helper-root");
  const run = join(root, ".fast-sandbox", "run");
  const startHelper = (env: Record<string, string> = {}) =>
    spawn("chroot", [root, "/helper", "--prepared"], { stdio: ["ignore", "ignore", "ignore"], env: { ...process.env, ...env } });

  before(() => {
    mkdirSync(run, { recursive: true });
    copyFileSync(DEFAULT_HELPER_PATH, join(root, "helper"));
  });

  it("reports waiting only with its claim FIFO open: without the FIFO it reports nothing and exits", async () => {
    const helper = startHelper();
    const [code] = (await once(helper, "exit")) as [number | null];
    assert.equal(code, 2);
    assert.equal(existsSync(join(run, "prepared")), false, "no instance reported waiting");
  });

  it("takes a claim written the moment it reports waiting, and runs it", async () => {
    rmSync(join(run, "prepared"), { force: true });
    const fifo = join(run, "claim");
    execFileSync("mkfifo", ["-m", "0600", fifo]);
    const helper = startHelper();
    const exited = once(helper, "exit");
    try {
      while (!existsSync(join(run, "prepared")) && helper.exitCode === null) await sleep(1);
      // Its own binary with no arguments: a command that starts (and exits with 2 at once).
      assert.equal(await writeClaim(fifo, encodeClaim({ workingDir: "/", args: ["/helper"], env: ["GREETING=hello"] })), true, "a claim is taken");
      while (!existsSync(join(run, "exit-code")) && helper.exitCode === null) await sleep(5);
      assert.equal(readFileSync(join(run, "command-start"), "utf8"), "started\n");
      assert.equal(readFileSync(join(run, "exit-code"), "utf8"), "2\n");
      assert.equal(existsSync(fifo), false, "the helper removed the claim FIFO");
    } finally {
      helper.kill("SIGTERM");
      await exited;
    }
  });

  /** A fresh run directory with its claim FIFO, and the helper waiting on it. */
  async function waitingHelper(
    env: Record<string, string> = {},
  ): Promise<{ fifo: string; helper: ReturnType<typeof startHelper>; exited: Promise<unknown[]> }> {
    for (const name of readdirSync(run)) rmSync(join(run, name), { force: true });
    const fifo = join(run, "claim");
    execFileSync("mkfifo", ["-m", "0600", fifo]);
    const helper = startHelper(env);
    const exited = once(helper, "exit");
    while (!existsSync(join(run, "prepared")) && helper.exitCode === null) await sleep(1);
    return { fifo, helper, exited };
  }

  it("reads a claim that comes in pieces until its counts are met, with no end of file to tell it", async () => {
    const { fifo, helper, exited } = await waitingHelper();
    try {
      const claim = encodeClaim({ workingDir: "/", args: ["/helper"], env: ["GREETING=hello"] });
      const fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
      try {
        // Cut after a NUL, so the first piece looks like a claim's end (the helper's cheap check).
        const cut = claim.indexOf(0, claim.indexOf(Buffer.from("/helper"))) + 1;
        writeSync(fd, claim.subarray(0, cut));
        await sleep(200);
        assert.equal(existsSync(join(run, "command-start")), false, "no command runs from half a claim");
        assert.equal(helper.exitCode, null, "the helper waits for the rest");
        writeSync(fd, claim.subarray(cut));
        // The writer stays open: the claim's own counts end it (5 s at most, then the assertion says so).
        for (let waited = 0; waited < 5_000 && !existsSync(join(run, "exit-code")) && helper.exitCode === null; waited += 5) await sleep(5);
        assert.equal(existsSync(join(run, "command-start")), true, "the whole claim was taken with its writer still open");
      } finally {
        closeSync(fd);
      }
      assert.equal(readFileSync(join(run, "command-start"), "utf8"), "started\n");
    } finally {
      helper.kill("SIGTERM");
      await exited;
    }
  });

  it("refuses a claim cut short once the rest is overdue (exit status 2, no command)", async () => {
    const { fifo, helper, exited } = await waitingHelper({ FSB_CLAIM_REST_TIMEOUT_MS: "300" });
    const claim = encodeClaim({ workingDir: "/", args: ["/helper"], env: ["GREETING=hello"] });
    const fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    try {
      writeSync(fd, claim.subarray(0, claim.length - 3));
      // The writer stays open (an agent that stopped mid-claim): only the helper's timeout ends it.
      const [code] = (await exited) as [number | null];
      assert.equal(code, 2);
      assert.equal(existsSync(join(run, "command-start")), false, "no command runs from part of a claim");
    } finally {
      closeSync(fd);
      helper.kill("SIGTERM");
    }
  });

  it("refuses a claim that is not one (exit status 2, no command)", async () => {
    const { fifo, helper, exited } = await waitingHelper();
    assert.equal(await writeClaim(fifo, Buffer.from(["not-a-claim", "/", "1", "/helper", "0", ""].join("\0"))), true);
    const [code] = (await exited) as [number | null];
    assert.equal(code, 2);
    assert.equal(existsSync(join(run, "command-start")), false);
    assert.equal(helper.exitCode, 2);
  });
});

describe("a prepare that fails", () => {
  it("leaves nothing of its instance: no container, run directory or log file", async () => {
    const agentName = "prep-failing";
    const stateDir = join(workDir, "failing", "state");
    let failed!: () => void;
    const prepareFailed = new Promise<void>((resolve) => (failed = resolve));
    const runtime = createContainerdRuntime({
      namespace: NAMESPACE,
      agentName,
      stateDir,
      cgroupParent: `${CGROUP_PARENT}/failing`,
      helperPath: DEFAULT_HELPER_PATH,
      // Less memory than runc's init of the container needs: Tasks.Create fails after the shim opened the log.
      preparedInstances: { count: 1, template: { ...templates.shared, resources: { memoryBytes: 1 << 20 } } },
      logger: watchedLogger((msg) => {
        if (msg.startsWith("could not make a prepared instance")) failed();
      }),
    });
    try {
      await runtime.prepare();
      // Should a kernel let runc's init live in 1 MiB, the test fails rather than waits forever.
      const hopeless = sleep(120_000, undefined, { ref: false }).then(() =>
        assert.fail("no prepare failed in 2 minutes: the memory limit did not stop the instance"),
      );
      await Promise.race([prepareFailed, hopeless]);
      // Waits for a prepare in progress (retrying the failed one) to end.
      await runtime.removePreparedInstances();
      const leftovers = (dir: string) => (existsSync(dir) ? readdirSync(dir).filter((name) => name.startsWith("fsb-prepared-")) : []);
      assert.deepEqual(leftovers(join(stateDir, "logs")), [], "no log file");
      assert.deepEqual(leftovers(join(stateDir, "run")), [], "no run directory");
      assert.deepEqual(
        containersOf(agentName).filter((id) => id.startsWith("fsb-prepared-")),
        [],
        "no container",
      );
    } finally {
      await runtime.unprepare();
      runtime.close();
    }
  });
});

describe("instances a previous process of the agent left", () => {
  it("are removed by a start that keeps none (prepared instances turned off)", async () => {
    const agentName = "prep-retired";
    const stateDir = join(workDir, "retired", "state");
    const make = (preparedInstances?: { count: number; template: PreparedTemplate }) =>
      createContainerdRuntime({
        namespace: NAMESPACE,
        agentName,
        stateDir,
        cgroupParent: `${CGROUP_PARENT}/retired`,
        helperPath: DEFAULT_HELPER_PATH,
        ...(preparedInstances ? { preparedInstances } : {}),
        logger: pino({ level: process.env.FSB_TEST_LOG_LEVEL ?? "warn" }),
      });
    const instances = () => containersOf(agentName).filter((id) => id.startsWith("fsb-prepared-"));
    const first = make({ count: 1, template: templates.shared });
    await first.prepare();
    await first.preparedInstancesReady();
    assert.equal(instances().length, 1);
    // Killed: its stock is left running.
    first.close();
    const second = make();
    try {
      await second.prepare();
      assert.deepEqual(instances(), [], "the previous process's instance is removed");
      assert.deepEqual(
        readdirSync(join(stateDir, "logs")).filter((name) => name.startsWith("fsb-prepared-")),
        [],
      );
      assert.deepEqual(
        readdirSync(join(stateDir, "run")).filter((name) => name.startsWith("fsb-prepared-")),
        [],
      );
      assert.equal(second.preparedInstanceCount, 0);
    } finally {
      await second.unprepare();
      second.close();
    }
  });
});

describe("a claim containerd has not recorded in time", () => {
  /** An agent runtime of one prepared instance reaching containerd through a gate the test shuts and reopens, its instance in stock. */
  async function gatedRuntime(name: string) {
    const dir = join(workDir, name);
    mkdirSync(dir, { recursive: true });
    const gate = await ContainerdGate.listen(join(dir, "containerd.sock"));
    const agentName = `prep-${name}`;
    const stateDir = join(dir, "state");
    const runtime = createContainerdRuntime({
      namespace: NAMESPACE,
      agentName,
      socketPath: gate.path,
      stateDir,
      cgroupParent: `${CGROUP_PARENT}/${name}`,
      helperPath: DEFAULT_HELPER_PATH,
      preparedInstances: { count: 1, template: templates.shared },
      claimRecordTimeoutMs: 200,
      logger: pino({ level: process.env.FSB_TEST_LOG_LEVEL ?? "silent" }),
    });
    return { gate, runtime, stateDir, agentName };
  }

  async function stockedInstance(runtime: ContainerdRuntime, agentName: string): Promise<string> {
    await runtime.prepare();
    await runtime.preparedInstancesReady();
    const [instance] = containersOf(agentName).filter((id) => id.startsWith("fsb-prepared-"));
    assert.ok(instance, "one instance in stock");
    return instance;
  }

  it("is recorded by the same agent process once containerd is back: the sandbox is found again", async () => {
    const { gate, runtime, stateDir, agentName } = await gatedRuntime("late-record");
    try {
      const instance = await stockedInstance(runtime, agentName);

      gate.shut();
      const request = spec("shared", { command: ["sh", "-c", "sleep 1000"] });
      assert.equal((await runtime.create(request)).state, "running");
      // Past claimRecordTimeoutMs operations on the sandbox stop waiting for the record: containerd is still away.
      await assert.rejects(runtime.get(request.sandboxId));
      assert.deepEqual(readdirSync(join(stateDir, "claims")), [`${request.sandboxId}.json`], "the claim is in the journal");

      gate.reopen();
      // The journal entry goes once containerd has the whole record (container and snapshot).
      for (let attempt = 0; attempt < 240 && readdirSync(join(stateDir, "claims")).length > 0; attempt++) await sleep(250);
      assert.deepEqual(readdirSync(join(stateDir, "claims")), [], "containerd has the claim");
      assert.equal((await runtime.get(request.sandboxId))?.state, "running", "the sandbox is found");
      const labels = JSON.parse(ctr(NAMESPACE, "containers", "info", instance)).Labels as Record<string, string>;
      assert.equal(labels["fast-sandbox.io/sandbox-id"], request.sandboxId);
      assertSnapshotOfSandbox(instance, request.sandboxId);
    } finally {
      gate.reopen();
      for (const sandbox of await runtime.list()) await runtime.delete(sandbox.sandboxId, { gracePeriodMs: 0 });
      await runtime.unprepare();
      runtime.close();
      await gate.close();
    }
  });

  it("is deleted whole when the delete comes before the record: the claimed instance's task and container go", async (t) => {
    const { gate, runtime, agentName } = await gatedRuntime("late-record-delete");
    try {
      const instance = await stockedInstance(runtime, agentName);
      gate.shut();
      const request = spec("shared", { command: ["sh", "-c", "sleep 1000"] });
      assert.equal((await runtime.create(request)).state, "running");
      await assert.rejects(runtime.get(request.sandboxId), "past claimRecordTimeoutMs, containerd still away");
      gate.reopen();
      // Once the agent reaches containerd again (its connection retries with backoff), deleted at
      // once, before the record's next try: the instance still carries its own labels, not the sandbox's.
      for (let attempt = 0; ; attempt++) {
        const reached = await runtime.get("not-a-sandbox").then(
          () => true,
          () => false,
        );
        if (reached) break;
        assert.ok(attempt < 6000, "the agent reaches containerd again");
        await sleep(10);
      }
      const owner = (JSON.parse(ctr(NAMESPACE, "containers", "info", instance)).Labels as Record<string, string>)["fast-sandbox.io/sandbox-id"];
      t.diagnostic(`the instance's sandbox-id label at the delete: ${owner ?? "none"} (the sandbox's once recorded: ${request.sandboxId})`);
      await runtime.delete(request.sandboxId, { gracePeriodMs: 0 });
      assert.ok(!ctr(NAMESPACE, "containers", "list", "-q").split("\n").includes(instance), "the claimed instance's container is gone");
      assert.ok(!ctr(NAMESPACE, "tasks", "list", "-q").split("\n").includes(instance), "its task (the user's command) is gone");
    } finally {
      gate.reopen();
      for (const sandbox of await runtime.list()) await runtime.delete(sandbox.sandboxId, { gracePeriodMs: 0 });
      await runtime.unprepare();
      runtime.close();
      await gate.close();
    }
  });
});
