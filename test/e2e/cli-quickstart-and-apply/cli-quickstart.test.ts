/**
 * The README's quick start, through the real `fsb` binary: `fsb up --detach`, run, logs, exec, rm,
 * apply, agents, ls, down — against the real containerd.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CONTROL_PLANE_ENV, CONTROL_PLANE_NODE_FLAGS } from "@fast-sandbox/controlplane";
import { BASE_IMAGE, REPO_ROOT, importBaseImage, removeCgroupTree, removeNamespace } from "../../support/containerd.js";
import { recordedContainerOfSandbox } from "../../support/containerd-contents.js";
import { containerdLeftovers, ctr, waitFor } from "../../support/embedded.js";

const here = import.meta.dirname;
const FSB = join(REPO_ROOT, "packages/cli/bin/fsb.js");

describe("fsb on the command line", () => {
  const suffix = Math.random().toString(16).slice(2, 8);
  const namespace = `fsb-e2e-cli-${suffix}`;
  const dataDir = mkdtempSync(join(tmpdir(), "fsb-e2e-cli-"));
  // Where fsb up claims its containerd namespace (inherited by the fsb processes spawned below).
  const claimsDir = mkdtempSync(join(tmpdir(), "fsb-e2e-cli-claims-"));
  process.env.FSB_NAMESPACE_CLAIMS_DIR = claimsDir;

  /** `fsb up`'s flags for an instance on any free ports in containerd namespace `ns`, under the cgroup root of that name. */
  const upFlags = (ns: string) => ["--port", "0", "--proxy-port", "0", "--e2b-port", "0", "--containerd-namespace", ns, "--cgroup-root", ns];

  function fsb(...args: string[]): { status: number | null; stdout: string; stderr: string } {
    const result = spawnSync(process.execPath, [FSB, "--data-dir", dataDir, ...args], { encoding: "utf8", timeout: 120_000 });
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  }

  before(() => {
    importBaseImage(namespace);
    // The agents fsb up starts inherit it: they sample their sandboxes every half second (fsb stats --history).
    process.env.FSB_STATS_INTERVAL_MS = "500";
    const up = fsb("up", "--detach", ...upFlags(namespace));
    assert.equal(up.status, 0, up.stderr);
    assert.match(up.stdout, /Fast Sandbox is listening on http:\/\/127\.0\.0\.1:\d+/);
    // The command it suggests reaches this instance (its data directory is not the default one).
    assert.ok(up.stdout.includes(`Try: npx fsb --data-dir ${dataDir} run -- sh -c 'echo hello'`), up.stdout);
  });

  after(() => {
    fsb("down", "--delete-sandboxes");
    removeNamespace(namespace);
    removeCgroupTree(`/${namespace}`);
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(claimsDir, { recursive: true, force: true });
  });

  it("refuses a second instance, of another data directory, in the same containerd namespace", () => {
    assert.equal(readFileSync(join(claimsDir, namespace), "utf8").trim(), dataDir);
    const other = mkdtempSync(join(tmpdir(), "fsb-e2e-cli-other-"));
    try {
      const second = spawnSync(process.execPath, [FSB, "--data-dir", other, "up", ...upFlags(namespace)], { encoding: "utf8", timeout: 60_000 });
      assert.equal(second.status, 1, second.stderr);
      assert.match(second.stderr, new RegExp(`containerd namespace ${namespace} belongs to the Fast Sandbox of data directory ${dataDir}`));
      // It started nothing: the namespace still has the first instance's agents only.
      assert.ok(!existsSync(join(other, "url")));
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });

  /** The node options and MALLOC_ARENA_MAX of a running process. */
  function startedWith(pid: number | string): { nodeArgs: string[]; arena: string | undefined } {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    const script = argv.findIndex((arg) => arg.endsWith("fsb.js"));
    assert.ok(script > 0, `it runs fsb.js: ${argv.join(" ")}`);
    const environ = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
    return { nodeArgs: argv.slice(1, script), arena: environ.find((entry) => entry.startsWith("MALLOC_ARENA_MAX="))?.slice("MALLOC_ARENA_MAX=".length) };
  }

  it("runs the detached control plane with the control plane's Node.js flags and environment", () => {
    const { nodeArgs, arena } = startedWith(readFileSync(join(dataDir, "controlplane.pid"), "utf8").trim());
    for (const flag of CONTROL_PLANE_NODE_FLAGS) assert.ok(nodeArgs.includes(flag), `${flag} is given to node: ${nodeArgs.join(" ")}`);
    assert.equal(arena, CONTROL_PLANE_ENV.MALLOC_ARENA_MAX);
  });

  it(
    "runs a plain foreground fsb up again with the control plane's flags and environment; fsb down stops that one, and the fsb that was run follows",
    { timeout: 120_000 },
    async () => {
      const foreground = `${namespace}-fg`;
      const fgDir = mkdtempSync(join(tmpdir(), "fsb-e2e-cli-fg-"));
      importBaseImage(foreground);
      const up = spawn(process.execPath, [FSB, "--data-dir", fgDir, "up", ...upFlags(foreground), "--no-janitor"], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, MALLOC_ARENA_MAX: undefined },
      });
      let output = "";
      up.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
      up.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
      const exited = once(up, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
      try {
        await waitFor(() => existsSync(join(fgDir, "url")) || up.exitCode !== null, 60_000, "the foreground fsb up serves");
        assert.ok(existsSync(join(fgDir, "url")), `fsb up serves: ${output}`);
        const pid = Number(readFileSync(join(fgDir, "controlplane.pid"), "utf8").trim());
        assert.notEqual(pid, up.pid, "the control plane is a process of its own, not the fsb that was run");
        assert.deepEqual(startedWith(up.pid ?? 0).nodeArgs, [], "the fsb that was run had no node options");
        const { nodeArgs, arena } = startedWith(pid);
        for (const flag of CONTROL_PLANE_NODE_FLAGS) assert.ok(nodeArgs.includes(flag), `${flag} is given to node: ${nodeArgs.join(" ")}`);
        assert.equal(arena, CONTROL_PLANE_ENV.MALLOC_ARENA_MAX);
        // fsb down stops the process the data directory's lock names — the child — and the fsb that was run follows it.
        const down = spawnSync(process.execPath, [FSB, "--data-dir", fgDir, "down", "--delete-sandboxes"], { encoding: "utf8", timeout: 120_000 });
        assert.equal(down.status, 0, down.stderr);
        assert.match(down.stdout, new RegExp(`Fast Sandbox stopped \\(pid ${pid}\\)`));
        const [code, signal] = await exited;
        assert.deepEqual([code, signal], [0, null], output);
        assert.equal(existsSync(`/proc/${pid}`), false, "the control plane stopped with it");
        assert.equal(existsSync(join(fgDir, "url")), false, "and cleared its run files");
      } finally {
        if (up.exitCode === null && up.signalCode === null) {
          up.kill("SIGKILL");
          await exited;
        }
        removeNamespace(foreground);
        removeCgroupTree(`/${foreground}`);
        rmSync(fgDir, { recursive: true, force: true });
      }
    },
  );

  it("stores the API token with mode 0600", () => {
    assert.equal(statSync(join(dataDir, "token")).mode & 0o777, 0o600);
  });

  it("prints what E2B's SDKs need for the running instance, found through the data directory: fsb e2b env", async () => {
    const env = fsb("e2b", "env");
    assert.equal(env.status, 0, env.stderr);
    const lines = env.stdout.trimEnd().split("\n");
    assert.deepEqual(
      lines.map((line) => line.split("=")[0]),
      ["export E2B_API_URL", "export E2B_SANDBOX_URL", "export E2B_API_KEY"],
    );
    const value = (index: number) => {
      const line = lines[index] ?? "";
      return line.slice(line.indexOf("=") + 1);
    };
    assert.match(value(2), /^e2b_[0-9a-f]{40}$/);
    // The API answers the key; the sandbox URL is the proxy (its own JSON refusal of a request without a route).
    const list = await fetch(`${value(0)}/v2/sandboxes`, { headers: { "x-api-key": value(2) } });
    assert.equal(list.status, 200);
    assert.deepEqual(await list.json(), []);
    const proxy = await fetch(`${value(1)}/`);
    assert.equal(proxy.status, 400);
    assert.equal(((await proxy.json()) as { code: number }).code, 400);
  });

  it("runs echo hello, shows its log, propagates exec's exit code and removes everything", async () => {
    const run = fsb("run", "--", "sh", "-c", "echo hello");
    assert.equal(run.status, 0, run.stderr);
    const name = run.stdout.trim().split(/\s+/).at(-1) ?? "";
    assert.match(name, /^sb-[0-9a-f]{10}$/);

    await waitFor(() => fsb("logs", name).stdout.includes("hello"), 10_000, "hello in the logs");
    assert.equal(fsb("logs", name).stdout, "hello\n");

    const exec = fsb("exec", name, "--", "sh", "-c", "echo out; echo err >&2; exit 3");
    assert.equal(exec.status, 3);
    assert.equal(exec.stdout, "out\n");
    assert.equal(exec.stderr, "err\n");
    // A command that is not there, and one whose working directory is not: docker exec's 127 and 126, runc's reason alone.
    const missing = fsb("exec", name, "--", "nosuch");
    assert.deepEqual([missing.status, missing.stderr], [127, 'error: exec: "nosuch": executable file not found in $PATH\n']);
    const noDirectory = fsb("exec", name, "-w", "/missing", "--", "ls");
    assert.deepEqual([noDirectory.status, noDirectory.stderr], [126, 'error: exec: working directory "/missing": no such file or directory\n']);

    const get = fsb("get", name, "-o", "json");
    assert.equal(get.status, 0);
    const sandbox = JSON.parse(get.stdout) as { status: { phase: string; sandboxID: string } };
    assert.equal(sandbox.status.phase, "Running");
    assert.ok(containerdLeftovers(namespace).containers.includes(sandbox.status.sandboxID));

    const rm = fsb("rm", name);
    assert.equal(rm.status, 0, rm.stderr);
    assert.deepEqual(containerdLeftovers(namespace), { containers: [], tasks: [], snapshots: [] });
    const gone = fsb("get", name);
    assert.equal(gone.status, 1);
    assert.match(gone.stderr, /error: sandbox default\/.+ not found/);
  });

  it("stats --history shows one sandbox's samples, oldest first, its CPU over the time between them", async () => {
    const name = fsb("run", "-q", "--", "sh", "-c", "while :; do :; done").stdout.trim();
    assert.match(name, /^sb-[0-9a-f]{10}$/);
    try {
      type Sample = { timestampMs: number; cpuUsedMillis: number; memoryUsedBytes: number };
      let samples: Sample[] = [];
      await waitFor(
        () => {
          const shown = fsb("stats", name, "--history", "-o", "json");
          assert.equal(shown.status, 0, shown.stderr);
          const list = JSON.parse(shown.stdout) as { apiVersion: string; kind: string; items: Sample[] };
          assert.equal(list.kind, "List", shown.stdout);
          samples = list.items;
          return samples.length >= 3;
        },
        20_000,
        "three samples",
      );
      assert.ok(
        samples.every((sample, index) => index === 0 || sample.timestampMs > samples[index - 1]!.timestampMs),
        "oldest first",
      );
      assert.ok(samples.at(-1)!.cpuUsedMillis > 300, `a busy loop's CPU between the last two samples: ${samples.at(-1)!.cpuUsedMillis}m`);
      const table = fsb("stats", name, "--history").stdout.trimEnd().split("\n");
      assert.match(table[0] ?? "", /^TIME\s+CPU\s+MEMORY\s+PIDS\s+DISK WRITTEN$/);
      assert.match(table[1] ?? "", /^\d{4}-\d{2}-\d{2}T\S+Z\s+\d/);
      const two = fsb("stats", name, name, "--history");
      assert.equal(two.status, 2, "a usage error");
      assert.match(two.stderr, /--history: shows one sandbox's samples; got 2 names/);
    } finally {
      assert.equal(fsb("rm", name).status, 0);
    }
  });

  it("run -q prints the new sandbox's name alone, for scripts; its token is saved as without -q", async () => {
    const run = fsb("run", "-q", "--", "sleep", "3600");
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^sb-[0-9a-f]{10}\n$/, "the name and nothing else");
    assert.equal(run.stderr, "", "the token went to the data directory, not to stderr");
    const name = run.stdout.trim();
    const get = fsb("get", name, "-o", "json");
    assert.equal(get.status, 0, get.stderr);
    assert.equal((JSON.parse(get.stdout) as { status: { phase: string } }).status.phase, "Running");
    assert.match(readFileSync(join(dataDir, "access-tokens", "default", name), "utf8").trim(), /^[A-Za-z0-9_-]{20,}$/, "the saved token");
    const rm = fsb("rm", name);
    assert.equal(rm.status, 0, rm.stderr);
  });

  it("applies a multi-document manifest of a pool and a sandbox", async () => {
    const apply = fsb("apply", "-f", join(here, "pool-and-sandbox.yaml"));
    assert.equal(apply.status, 0, apply.stderr);
    assert.equal(apply.stdout, "sandboxpool/workers created\nsandbox/web created\n");
    const web = JSON.parse(fsb("get", "web", "-o", "json").stdout) as {
      spec: Record<string, unknown>;
      status: { endpoints: string[]; assignedPod: string; sandboxID: string };
    };
    // Through the sandbox proxy (on a free port here): <port>-<sandboxID>.localhost.
    assert.equal(web.status.endpoints.length, 1);
    assert.match(web.status.endpoints[0] ?? "", new RegExp(`^http://18080-${web.status.sandboxID}\\.localhost:\\d+/$`));
    assert.equal(web.status.assignedPod, "workers-0");
    assert.equal(web.spec.recoveryTimeoutSeconds, 30);
    await waitFor(() => fsb("logs", "web").stdout.includes("serving on 8080"), 10_000, "the web sandbox's output");
    // The pool's resources land in the sandbox's cgroup, under its agent's cgroup (v1 here, v2 elsewhere),
    // named after its container: the prepared instance's when the sandbox claimed one (the pool keeps 2 by default).
    const cgroup = `${namespace}/workers-0/sandboxes/${await recordedContainerOfSandbox(namespace, web.status.sandboxID)}`;
    const v2 = existsSync("/sys/fs/cgroup/cgroup.controllers");
    const memory = readFileSync(v2 ? `/sys/fs/cgroup/${cgroup}/memory.max` : `/sys/fs/cgroup/memory/${cgroup}/memory.limit_in_bytes`, "utf8").trim();
    assert.equal(memory, String(64 * 1024 * 1024));
    const cpu = readFileSync(v2 ? `/sys/fs/cgroup/${cgroup}/cpu.max` : `/sys/fs/cgroup/cpu/${cgroup}/cpu.cfs_quota_us`, "utf8").trim();
    assert.equal(cpu.split(" ")[0], "50000");

    const agents = (
      JSON.parse(fsb("agents", "-o", "json").stdout) as {
        kind: "List";
        items: { name: string; pool: string; allocated: number; capacity: number; pid: number; images: string[] }[];
      }
    ).items;
    const worker = agents.find((a) => a.name === "workers-0");
    assert.ok(worker);
    assert.equal(worker.allocated, 1);
    assert.equal(worker.capacity, 4);
    assert.ok(worker.pid > 0);
    // Each agent process lives in its own cgroup, with its sandboxes beside it.
    assert.match(readFileSync(`/proc/${worker.pid}/cgroup`, "utf8"), new RegExp(`:/${namespace}/workers-0/agent$`, "m"));
    assert.ok(worker.images.includes(BASE_IMAGE));

    // Applying again updates instead of failing; nothing changed, and it says so (as kubectl apply).
    const again = fsb("apply", "-f", join(here, "pool-and-sandbox.yaml"));
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.stdout, "sandboxpool/workers unchanged\nsandbox/web unchanged\n");

    const ls = fsb("ls", "-o", "yaml");
    assert.match(ls.stdout, /name: web/);
    assert.equal(fsb("rm", "web").status, 0);
  });

  it("rejects unknown kinds and invalid fields, naming the document and the field, and applies nothing", () => {
    const unknownKind = fsb("apply", "-f", join(here, "unknown-kind.yaml"));
    assert.equal(unknownKind.status, 1);
    assert.match(unknownKind.stderr, /document 2: kind: "Sandbag" is not a kind fsb knows; allowed: Sandbox, SandboxPool/);

    const invalid = fsb("apply", "-f", join(here, "invalid-field.yaml"));
    assert.equal(invalid.status, 1);
    assert.match(invalid.stderr, /document 1: spec\.exposedPorts\[1\]: 70000 is out of range; allowed: 1\.\.65535/);
    const pools = (JSON.parse(fsb("agents", "-o", "json").stdout) as { items: { pool: string }[] }).items;
    assert.ok(!pools.some((p) => p.pool === "fine"), "the valid pool of a rejected file must not be applied");
    assert.equal(fsb("get", "bad-port").status, 1);
  });

  it("exits 2 on bad usage and explains", () => {
    const bad = fsb("run", "--port", "0", "--", "true");
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--port: "0" is not a port; allowed: 1\.\.65535/);
    assert.equal(fsb("frobnicate").status, 2);
  });

  it("supervises a janitor process beside the control plane", () => {
    const controlPlanePid = readFileSync(join(dataDir, "controlplane.pid"), "utf8").trim();
    const children = spawnSync("ps", ["-o", "args=", "--ppid", controlPlanePid], { encoding: "utf8" }).stdout;
    assert.match(children, /janitor\/(dist|src)\/main\.(js|ts)/);
    assert.ok(existsSync(join(dataDir, "janitor.log")));
  });

  it("runs one janitor pass with fsb janitor --once and reports what it removed", () => {
    ctr(
      namespace,
      "run",
      "-d",
      "--label",
      "fast-sandbox.io/managed=true",
      "--label",
      "fast-sandbox.io/agent=nobody-0",
      BASE_IMAGE,
      "cli-orphan",
      "sleep",
      "3600",
    );
    const kept = fsb("janitor", "--once");
    assert.equal(kept.status, 0, kept.stderr);
    assert.match(
      kept.stdout,
      /^reclaimed 0 orphans \(agent_gone 0, record_gone 0, anchor_orphaned 0, prepared_orphaned 0\); 0 objects removed; 1 inside the protection window\n$/,
    );
    // ctr made stdio FIFOs for its task (and earlier runs' may be left under the same name).
    const ctrFifos = () =>
      readdirSync("/run/containerd/fifo").flatMap((directory) =>
        ["stdin", "stdout", "stderr"].filter((stream) => existsSync(join("/run/containerd/fifo", directory, `cli-orphan-${stream}`))),
      ).length;
    const fifos = ctrFifos();
    assert.ok(fifos >= 3, `${fifos} FIFOs of cli-orphan`);
    const pass = fsb("janitor", "--once", "--protection", "0");
    assert.equal(pass.status, 0, pass.stderr);
    // Its task, snapshot and container, and the FIFOs.
    assert.match(
      pass.stdout,
      new RegExp(
        `^reclaimed 1 orphans \\(agent_gone 1, record_gone 0, anchor_orphaned 0, prepared_orphaned 0\\); ${3 + fifos} objects removed; 0 inside the protection window\n$`,
      ),
    );
    assert.ok(!ctr(namespace, "containers", "ls", "-q").includes("cli-orphan"));
    assert.equal(ctrFifos(), 0);
    assert.equal(fsb("janitor", "--once", "--interval", "soon").status, 2);
  });

  // After the janitor case: a deleted pool's agents leave their shim anchors for the janitor, which that case counts.
  it("lists, shows and deletes pools with fsb pools, fsb get pool and fsb delete pool", async () => {
    const apply = fsb("apply", "-f", join(here, "pool-and-sandbox.yaml"));
    assert.equal(apply.status, 0, apply.stderr);
    await waitFor(
      () => {
        const pool = JSON.parse(fsb("get", "pool", "workers", "-o", "json").stdout) as { status?: { readyAgents?: number; sandboxes?: number } };
        return pool.status?.readyAgents === 1 && pool.status.sandboxes === 1;
      },
      15_000,
      "the pool's status to count its agent and sandbox",
    );
    const table = fsb("pools");
    assert.equal(table.status, 0, table.stderr);
    assert.match(table.stdout, /^NAME +AGENTS +DESIRED +UPDATED +SANDBOXES +FREE +PREPARED +RUNTIME +NETWORK +EGRESS +IMAGE +AGE\n/);
    assert.match(table.stdout, /^workers +1\/1 +\d+ +1 +1 +3 +\d+ +container +(Shared|Isolated) +\S+ +fast-sandbox\.io\/base:latest +\d+[smhd]$/m);
    assert.match(table.stdout, /^default +\d+\/\d+ /m);
    const all = JSON.parse(fsb("pools", "-A", "-o", "json").stdout) as { items: { metadata: { name: string; namespace: string } }[] };
    assert.deepEqual(all.items.map((p) => `${p.metadata.namespace}/${p.metadata.name}`).sort(), ["default/default", "default/workers"]);
    assert.match(fsb("get", "pool", "workers", "-o", "yaml").stdout, /maxSandboxesPerPod: 4/);
    assert.match(fsb("get", "sandbox", "web").stdout, /^web +Running +workers /m);

    const busy = fsb("delete", "pool", "workers");
    assert.equal(busy.status, 1);
    assert.match(busy.stderr, /^error: pool default\/workers still has 1 sandbox; delete it first$/m);
    const deleteSandbox = fsb("delete", "sandbox", "web");
    assert.equal(deleteSandbox.status, 0, deleteSandbox.stderr);
    assert.equal(deleteSandbox.stdout, "sandbox web deleted\n");
    const deletePool = fsb("delete", "pool", "workers");
    assert.equal(deletePool.status, 0, deletePool.stderr);
    assert.equal(deletePool.stdout, "pool workers deleted\n");
    const gone = fsb("get", "pool", "workers");
    assert.equal(gone.status, 1);
    assert.match(gone.stderr, /error: pool default\/workers not found/);
    assert.doesNotMatch(fsb("pools").stdout, /^workers /m);
    await waitFor(
      () => !(JSON.parse(fsb("agents", "-o", "json").stdout) as { items: { pool: string }[] }).items.some((a) => a.pool === "workers"),
      15_000,
      "the pool's agents to stop",
    );
  });

  it("stops with fsb down, and with --delete-sandboxes leaves nothing of Fast Sandbox running", async () => {
    const run = fsb("run", "-q", "--", "sleep", "3600");
    assert.equal(run.status, 0, run.stderr);
    assert.ok(existsSync(join(dataDir, "access-tokens", "default", run.stdout.trim())), "fsb run saved its token");
    const down = fsb("down", "--delete-sandboxes");
    assert.equal(down.status, 0, down.stderr);
    assert.match(down.stdout, /deleted 1 sandbox\n/);
    assert.ok(!existsSync(join(dataDir, "access-tokens")), "the deleted sandboxes' access tokens are forgotten");
    assert.match(down.stdout, /Fast Sandbox stopped/);
    // Agents with no sandboxes left remove their own anchors as they stop; the sweep removes any left.
    assert.match(down.stdout, /removed \d+ shim anchors/);
    // The namespace is free for another data directory's instance.
    assert.ok(!existsSync(join(claimsDir, namespace)));
    const ls = fsb("ls");
    assert.equal(ls.status, 1);
    assert.match(ls.stderr, /Fast Sandbox is not running .* start it with 'npx fsb up'/);

    // No container (anchors included), no task, no shim of the namespace, no agent or janitor process.
    const lines = (text: string) => text.split("\n").filter((line) => line.trim() !== "");
    assert.deepEqual(lines(ctr(namespace, "containers", "ls", "-q")), []);
    assert.deepEqual(lines(ctr(namespace, "tasks", "ls", "-q")), []);
    const processes = () => lines(spawnSync("ps", ["-eo", "args="], { encoding: "utf8" }).stdout);
    await waitFor(
      () => !processes().some((args) => args.includes("containerd-shim") && args.includes(`-namespace ${namespace} `)),
      10_000,
      "the shims to exit",
    );
    assert.deepEqual(
      processes().filter((args) => args.includes(dataDir)),
      [],
    );
  });
});
