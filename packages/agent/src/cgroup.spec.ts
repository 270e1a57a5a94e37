import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, describe, it } from "node:test";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { FailedPreconditionError, UnavailableError } from "@fast-sandbox/api/core";
import {
  cgroupProcessIds,
  detectCgroupLayout,
  joinCgroup,
  killCgroupProcesses,
  limitCgroup,
  readCgroupUsage,
  readOomKillCount,
  removeCgroup,
} from "./cgroup.js";
import { FakeCgroup2 } from "./fake-cgroup2.fixture.js";

const roots: string[] = [];

function tempRoot(): string {
  const root = mkdtempSync(join(tmpdir(), "fsb-cgroup-"));
  roots.push(root);
  return root;
}

/** A v2 tree: every cgroup has a `cgroup.controllers` file, as the kernel creates it. */
function v2Tree(controllers: Record<string, string>): string {
  const root = tempRoot();
  for (const [path, available] of Object.entries(controllers)) {
    mkdirSync(join(root, path), { recursive: true });
    writeFileSync(join(root, path, "cgroup.controllers"), available);
  }
  return root;
}

const read = (path: string) => readFileSync(path, "utf8");

/** A v2 tree that refuses what the kernel would (fake-cgroup2.fixture.ts), node:fs as it was after the test. */
let kernels: FakeCgroup2[] = [];
function fakeCgroup2(controllers?: string[], options?: { withoutKill?: boolean }): FakeCgroup2 {
  const kernel = new FakeCgroup2(controllers, options);
  kernels.push(kernel);
  return kernel;
}

function captureError(run: () => unknown): Error {
  try {
    run();
  } catch (error) {
    return error as Error;
  }
  assert.fail("expected an error");
}

afterEach(() => {
  for (const kernel of kernels.reverse()) kernel.restore();
  kernels = [];
});

after(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

describe("detectCgroupLayout", () => {
  it("detects v2 from cgroup.controllers at the root", () => {
    const root = v2Tree({ ".": "cpuset cpu io memory pids\n" });
    assert.deepEqual(detectCgroupLayout(root), { version: 2, root, controllers: [] });
  });

  it("detects v1 and lists the controller hierarchies present, in a fixed order", () => {
    const root = tempRoot();
    for (const dir of ["pids", "memory", "cpu", "unified", "blkio"]) mkdirSync(join(root, dir));
    assert.deepEqual(detectCgroupLayout(root), { version: 1, root, controllers: ["cpu", "memory", "pids"] });
  });

  it("lists only the v1 controllers that are mounted", () => {
    const root = tempRoot();
    mkdirSync(join(root, "memory"));
    assert.deepEqual(detectCgroupLayout(root), { version: 1, root, controllers: ["memory"] });
  });

  it("treats a root with neither as v1 without controllers", () => {
    const root = tempRoot();
    assert.deepEqual(detectCgroupLayout(root), { version: 1, root, controllers: [] });
  });
});

describe("joinCgroup", () => {
  it("v1: creates the path in every hierarchy and writes the pid into each cgroup.procs", () => {
    const root = tempRoot();
    for (const dir of ["cpu", "memory", "pids", "unified"]) mkdirSync(join(root, dir));
    const layout = detectCgroupLayout(root);
    joinCgroup(layout, "/fast-sandbox/default-0/agent", 4242);
    for (const controller of ["cpu", "memory", "pids"]) {
      assert.equal(read(join(root, controller, "fast-sandbox/default-0/agent/cgroup.procs")), "4242");
    }
    assert.equal(existsSync(join(root, "unified", "fast-sandbox")), false);
    assert.equal(existsSync(join(root, "fast-sandbox")), false);
  });

  it("v1: touches only the controllers the layout lists", () => {
    const root = tempRoot();
    for (const dir of ["cpu", "memory", "pids"]) mkdirSync(join(root, dir));
    joinCgroup({ version: 1, root, controllers: ["memory"] }, "/a/agent", 7);
    assert.equal(read(join(root, "memory/a/agent/cgroup.procs")), "7");
    assert.equal(existsSync(join(root, "cpu/a")), false);
    assert.equal(existsSync(join(root, "pids/a")), false);
  });

  it("v2: writes the pid into a leaf and enables cpu, memory and pids down to its parent, for the sandboxes' cgroups beside it", () => {
    const kernel = fakeCgroup2();
    const layout = detectCgroupLayout(kernel.root);
    joinCgroup(layout, "/fast-sandbox/default-0/agent", 99);
    assert.equal(kernel.read("fast-sandbox/default-0/agent", "cgroup.procs"), "99");
    for (const parent of ["/", "fast-sandbox", "fast-sandbox/default-0"])
      assert.equal(kernel.read(parent, "cgroup.subtree_control"), "cpu memory pids", parent);
    // The leaf delegates nothing: it holds the agent.
    assert.equal(kernel.read("fast-sandbox/default-0/agent", "cgroup.subtree_control"), "");
    // What runc needs in a sandbox's cgroup is there, once it has enabled the controllers on its way down.
    kernel.makeCgroup("fast-sandbox/default-0/sandboxes");
    kernel.writeAs("fast-sandbox/default-0/sandboxes", "cgroup.subtree_control", "+cpu +memory +pids");
    kernel.makeCgroup("fast-sandbox/default-0/sandboxes/sb-1");
    for (const file of ["pids.max", "cpu.max", "memory.max"]) assert.ok(existsSync(kernel.path("fast-sandbox/default-0/sandboxes/sb-1", file)), file);
    // A restart joins again; what is enabled is not written again.
    const writes = kernel.writes.length;
    joinCgroup(layout, "/fast-sandbox/default-0/agent", 100);
    assert.deepEqual(kernel.writes.slice(writes), ["fast-sandbox/default-0/agent/cgroup.procs <- 100"]);
    assert.match(kernel.read("fast-sandbox/default-0/agent", "cgroup.procs"), /^100$/m);
  });

  it("v2: enables only the controllers the root offers, a name contained in another's not taken for it", () => {
    const kernel = fakeCgroup2(["cpuset", "hugetlb", "memory", "io"]);
    joinCgroup(detectCgroupLayout(kernel.root), "/x/agent", 5);
    assert.equal(kernel.read("/", "cgroup.subtree_control"), "memory");
    assert.equal(kernel.read("x", "cgroup.subtree_control"), "memory");
  });

  it("v2: fails when a cgroup above holds processes (a Delegate=yes unit that holds fsb up), naming it and what to do", () => {
    const kernel = fakeCgroup2();
    // systemd enables the controllers down to the unit, whose cgroup holds its main process.
    kernel.writeAs("/", "cgroup.subtree_control", "+cpu +io +memory +pids");
    kernel.makeCgroup("system.slice/fsb.service");
    kernel.writeAs("system.slice", "cgroup.subtree_control", "+cpu +io +memory +pids");
    kernel.writeAs("system.slice/fsb.service", "cgroup.procs", "100");
    const layout = detectCgroupLayout(kernel.root);
    // --cgroup-root system.slice/fsb.service: the agent default-0's cgroup is below the unit's.
    const error = captureError(() => joinCgroup(layout, "/system.slice/fsb.service/default-0/agent", 200));
    assert.ok(error instanceof FailedPreconditionError, String(error));
    assert.match(
      error.message,
      /^cgroup \S+\/system\.slice\/fsb\.service holds processes \(pid 100\): the kernel will not enable cpu, memory, pids below it\. /,
    );
    assert.match(error.message, /--cgroup-root.*leaf cgroup/);
    // fsb up quotes an agent's error line up to 300 characters: this one whole, with the real mount.
    const line = `agent failed to start: ${error.message.replace(kernel.root, "/sys/fs/cgroup")}`;
    assert.ok(line.length <= 300, `${line.length}: ${line}`);
    // Its main process moved into a leaf (as CGROUP_DELEGATION.md says), the unit delegates and the join succeeds.
    kernel.makeCgroup("system.slice/fsb.service/supervisor");
    kernel.writeAs("system.slice/fsb.service/supervisor", "cgroup.procs", "100");
    joinCgroup(layout, "/system.slice/fsb.service/default-0/agent", 200);
    assert.equal(kernel.read("system.slice/fsb.service/default-0", "cgroup.subtree_control"), "cpu memory pids");
  });

  it("v2: enables each controller in a write of its own, so one the kernel refuses leaves the others enabled, and fails naming it", () => {
    const kernel = fakeCgroup2();
    kernel.refuse.set("cpu", "EINVAL"); // RT group scheduling while a realtime task runs
    const error = captureError(() => joinCgroup(detectCgroupLayout(kernel.root), "/fast-sandbox/default-0/agent", 7));
    assert.ok(error instanceof FailedPreconditionError, String(error));
    assert.match(error.message, /does not enable cpu for the cgroups below it \(cpu: EINVAL/);
    for (const parent of ["/", "fast-sandbox", "fast-sandbox/default-0"]) assert.equal(kernel.read(parent, "cgroup.subtree_control"), "memory pids", parent);
  });
});

describe("limitCgroup", () => {
  it("v1: writes the CPU quota over a 100 ms period and the memory limit, creating the cgroup in those hierarchies only", () => {
    const root = tempRoot();
    for (const dir of ["cpu", "memory", "pids"]) mkdirSync(join(root, dir));
    limitCgroup(detectCgroupLayout(root), "/k8s.io/pool-agent-x", { cpuMillis: 1500, memoryBytes: 256 * 1024 * 1024 });
    assert.equal(read(join(root, "cpu/k8s.io/pool-agent-x/cpu.cfs_period_us")), "100000");
    assert.equal(read(join(root, "cpu/k8s.io/pool-agent-x/cpu.cfs_quota_us")), "150000");
    assert.equal(read(join(root, "memory/k8s.io/pool-agent-x/memory.limit_in_bytes")), String(256 * 1024 * 1024));
    assert.equal(existsSync(join(root, "pids/k8s.io")), false);
  });

  it("v1: lifts what is not given (a cgroup kept from an agent that had limits), and a quota below the kernel's 1 ms becomes 1 ms", () => {
    const root = tempRoot();
    for (const dir of ["cpu", "memory"]) mkdirSync(join(root, dir));
    limitCgroup(detectCgroupLayout(root), "a/sandboxes", { cpuMillis: 5, memoryBytes: 1 << 26 });
    limitCgroup(detectCgroupLayout(root), "a/sandboxes", { cpuMillis: 5 });
    assert.equal(read(join(root, "cpu/a/sandboxes/cpu.cfs_quota_us")), "1000");
    assert.equal(read(join(root, "memory/a/sandboxes/memory.limit_in_bytes")), "-1");
    limitCgroup(detectCgroupLayout(root), "a/sandboxes", {});
    assert.equal(read(join(root, "cpu/a/sandboxes/cpu.cfs_quota_us")), "-1");
  });

  it("leaves a memory bound as it was when the cgroup holds more than the new one (v2 would OOM-kill its sandboxes), and says so", () => {
    const all = "cpu memory pids";
    const root = v2Tree({ ".": all, a: all });
    writeFileSync(join(root, "a/memory.max"), String(1 << 30));
    writeFileSync(join(root, "a/memory.current"), String(1 << 27));
    assert.throws(() => limitCgroup(detectCgroupLayout(root), "/a", { cpuMillis: 500, memoryBytes: 1 << 26 }), /holds 134217728 bytes already/);
    assert.equal(read(join(root, "a/memory.max")), String(1 << 30));
    assert.equal(read(join(root, "a/cpu.max")), "50000 100000");
  });

  it("v2: enables cpu, memory and pids down to the cgroup and for its children, and writes cpu.max and memory.max", () => {
    const kernel = fakeCgroup2();
    limitCgroup(detectCgroupLayout(kernel.root), "/a/sandboxes", { cpuMillis: 250, memoryBytes: 64 * 1024 * 1024 });
    for (const parent of ["/", "a", "a/sandboxes"]) assert.equal(kernel.read(parent, "cgroup.subtree_control"), "cpu memory pids", parent);
    assert.equal(kernel.read("a/sandboxes", "cpu.max"), "25000 100000");
    assert.equal(kernel.read("a/sandboxes", "memory.max"), String(64 * 1024 * 1024));
    assert.equal(kernel.read("a/sandboxes", "memory.swap.max"), "0");
  });

  it("v2: a memory bound is written where the kernel refuses cpu, and no CPU bound is lifted where cpu is not enabled", () => {
    const kernel = fakeCgroup2();
    kernel.refuse.set("cpu", "EINVAL");
    limitCgroup(detectCgroupLayout(kernel.root), "/k8s.io/pool-agent-x", { memoryBytes: 256 << 20 });
    assert.equal(kernel.read("k8s.io/pool-agent-x", "memory.max"), String(256 << 20));
    assert.equal(existsSync(kernel.path("k8s.io/pool-agent-x", "cpu.max")), false);
    assert.deepEqual(
      kernel.writes.filter((write) => write.includes("cpu.max")),
      [],
    );
    limitCgroup(detectCgroupLayout(kernel.root), "/k8s.io/pool-agent-x", {});
    assert.equal(kernel.read("k8s.io/pool-agent-x", "memory.max"), "max");
  });

  it("v2: a bound on a cgroup below one that holds processes names that cgroup as why it was refused", () => {
    const kernel = fakeCgroup2();
    kernel.makeCgroup("unit");
    kernel.writeAs("unit", "cgroup.procs", "100");
    assert.throws(
      () => limitCgroup(detectCgroupLayout(kernel.root), "/unit/default-0/sandboxes", { cpuMillis: 2000, memoryBytes: 1 << 30 }),
      /cpu\.max = 200000 100000: EACCES.*\(cgroup \S+\/unit holds processes \(pid 100\)/,
    );
  });

  it("v2: bounds swap with memory where the kernel accounts it (memory.swap.max 0), and lifts both together", () => {
    const all = "cpu memory pids";
    const root = v2Tree({ ".": all, a: all, b: all });
    // The kernel makes memory.swap.max with the cgroup when it accounts swap.
    writeFileSync(join(root, "a/memory.swap.max"), "max");
    limitCgroup(detectCgroupLayout(root), "/a", { memoryBytes: 1 << 26 });
    assert.equal(read(join(root, "a/memory.max")), String(1 << 26));
    assert.equal(read(join(root, "a/memory.swap.max")), "0");
    limitCgroup(detectCgroupLayout(root), "/a", {});
    assert.equal(read(join(root, "a/memory.max")), "max");
    assert.equal(read(join(root, "a/memory.swap.max")), "max");
    // Without swap accounting there is no file to write (cgroupfs would refuse to create one).
    limitCgroup(detectCgroupLayout(root), "/b", { memoryBytes: 1 << 26 });
    assert.equal(existsSync(join(root, "b/memory.swap.max")), false);
  });

  it("v1: bounds memory and swap together (memory.memsw.limit_in_bytes) where the kernel accounts swap, and lifts both", () => {
    const root = tempRoot();
    mkdirSync(join(root, "memory/with-swap"), { recursive: true });
    writeFileSync(join(root, "memory/with-swap/memory.memsw.limit_in_bytes"), "9223372036854771712");
    limitCgroup(detectCgroupLayout(root), "with-swap", { memoryBytes: 1 << 26 });
    assert.equal(read(join(root, "memory/with-swap/memory.limit_in_bytes")), String(1 << 26));
    assert.equal(read(join(root, "memory/with-swap/memory.memsw.limit_in_bytes")), String(1 << 26));
    limitCgroup(detectCgroupLayout(root), "with-swap", {});
    assert.equal(read(join(root, "memory/with-swap/memory.limit_in_bytes")), "-1");
    assert.equal(read(join(root, "memory/with-swap/memory.memsw.limit_in_bytes")), "-1");
    limitCgroup(detectCgroupLayout(root), "without-swap", { memoryBytes: 1 << 26 });
    assert.equal(existsSync(join(root, "memory/without-swap/memory.memsw.limit_in_bytes")), false);
  });

  it("leaves swap's bound as it was too when the memory bound is left (the cgroup holds more)", () => {
    const all = "cpu memory pids";
    const root = v2Tree({ ".": all, a: all });
    writeFileSync(join(root, "a/memory.max"), "max");
    writeFileSync(join(root, "a/memory.swap.max"), "max");
    writeFileSync(join(root, "a/memory.current"), String(1 << 27));
    assert.throws(() => limitCgroup(detectCgroupLayout(root), "/a", { memoryBytes: 1 << 26 }), /holds 134217728 bytes already/);
    assert.equal(read(join(root, "a/memory.max")), "max");
    assert.equal(read(join(root, "a/memory.swap.max")), "max");
  });

  it("on this machine's kernel: swap is bounded with memory where it is accounted, and the bound rises, comes down and is lifted", async () => {
    const layout = detectCgroupLayout();
    const path = `/fsb-test-swap-${process.pid}`;
    const directory = layout.version === 2 ? join(layout.root, path) : join(layout.root, "memory", path);
    const swapFile = join(directory, layout.version === 2 ? "memory.swap.max" : "memory.memsw.limit_in_bytes");
    const memoryFile = join(directory, layout.version === 2 ? "memory.max" : "memory.limit_in_bytes");
    const unlimited = layout.version === 2 ? "max" : "9223372036854771712";
    try {
      for (const bytes of [32 << 20, 64 << 20, 16 << 20, undefined]) {
        // v1 refuses memsw below memory: the order of the two writes matters each way.
        limitCgroup(layout, path, bytes === undefined ? {} : { memoryBytes: bytes });
        assert.equal(read(memoryFile).trim(), bytes === undefined ? unlimited : String(bytes));
        if (!existsSync(swapFile)) continue; // no swap accounting on this kernel
        const swap = read(swapFile).trim();
        if (layout.version === 2) assert.equal(swap, bytes === undefined ? "max" : "0");
        else assert.equal(swap, bytes === undefined ? unlimited : String(bytes));
      }
    } finally {
      for (let i = 0; i < 50 && removeCgroup(layout, path).length > 0; i++) await sleep(20);
    }
  });

  it("writes each limit whatever became of the other, then names what was refused", () => {
    const all = "cpu memory pids";
    const root = v2Tree({ ".": all, a: all });
    // A directory where cpu.max should be makes its write fail, as a controller not delegated would.
    mkdirSync(join(root, "a/cpu.max"), { recursive: true });
    assert.throws(
      () => limitCgroup(detectCgroupLayout(root), "/a", { cpuMillis: 500, memoryBytes: 1 << 26 }),
      /could not bound the cgroup: .*a\/cpu\.max = 50000 100000/,
    );
    assert.equal(read(join(root, "a/memory.max")), String(1 << 26));
  });

  it("v1: lowers the quotas below the cgroup that exceed the new bound first, deepest first; unlimited ones and those within it stay", () => {
    const root = tempRoot();
    mkdirSync(join(root, "cpu"));
    const quota = (path: string, value: number, period = 100_000) => {
      mkdirSync(join(root, "cpu", path), { recursive: true });
      writeFileSync(join(root, "cpu", path, "cpu.cfs_quota_us"), String(value));
      writeFileSync(join(root, "cpu", path, "cpu.cfs_period_us"), String(period));
    };
    quota("agent/big", 200_000);
    quota("agent/big/inner", 150_000);
    quota("agent/other-period", 40_000, 20_000); // 2 cores over a 20 ms period
    quota("agent/small", 20_000);
    quota("agent/unlimited", -1);
    limitCgroup(detectCgroupLayout(root), "agent", { cpuMillis: 500 });
    assert.equal(read(join(root, "cpu/agent/cpu.cfs_quota_us")), "50000");
    assert.equal(read(join(root, "cpu/agent/big/cpu.cfs_quota_us")), "50000");
    assert.equal(read(join(root, "cpu/agent/big/inner/cpu.cfs_quota_us")), "50000");
    assert.equal(read(join(root, "cpu/agent/other-period/cpu.cfs_quota_us")), "10000", "half a core over its own 20 ms period");
    assert.equal(read(join(root, "cpu/agent/small/cpu.cfs_quota_us")), "20000");
    assert.equal(read(join(root, "cpu/agent/unlimited/cpu.cfs_quota_us")), "-1");
  });

  it("on this machine's kernel: a CPU bound below the quota of a cgroup under it is taken (v1 lowers that quota; v2 keeps it, the bound applies)", async () => {
    const layout = detectCgroupLayout();
    const path = `/fsb-test-bound-${process.pid}`;
    const child = `${path}/sandbox`;
    try {
      limitCgroup(layout, path, {});
      // A sandbox's cgroup with 1.5 cores, made while its agent had no bound (an adopted sandbox).
      if (layout.version === 2) {
        mkdirSync(join(layout.root, child), { recursive: true });
        writeFileSync(join(layout.root, child, "cpu.max"), "150000 100000");
      } else {
        mkdirSync(join(layout.root, "cpu", child), { recursive: true });
        writeFileSync(join(layout.root, "cpu", child, "cpu.cfs_quota_us"), "150000");
      }
      limitCgroup(layout, path, { cpuMillis: 500 });
      if (layout.version === 2) {
        assert.equal(read(join(layout.root, path, "cpu.max")).trim(), "50000 100000");
        assert.equal(read(join(layout.root, child, "cpu.max")).trim(), "150000 100000");
      } else {
        assert.equal(read(join(layout.root, "cpu", path, "cpu.cfs_quota_us")).trim(), "50000");
        assert.equal(read(join(layout.root, "cpu", child, "cpu.cfs_quota_us")).trim(), "50000");
      }
    } finally {
      for (let i = 0; i < 50 && (removeCgroup(layout, child).length > 0 || removeCgroup(layout, path).length > 0); i++) await sleep(20);
    }
  });

  it("refuses the root", () => {
    assert.throws(() => limitCgroup({ version: 2, root: tempRoot(), controllers: [] }, "/", { cpuMillis: 100 }), /root cgroup/);
  });

  it("on this machine's kernel: the limits are taken, and a process below them is held to the memory limit", async () => {
    const layout = detectCgroupLayout();
    const path = `/fsb-test-limit-${process.pid}`;
    const child = `${path}/sandbox`;
    try {
      limitCgroup(layout, path, { cpuMillis: 300, memoryBytes: 32 * 1024 * 1024 });
      if (layout.version === 2) {
        assert.equal(read(join(layout.root, path, "cpu.max")).trim(), "30000 100000");
        assert.equal(read(join(layout.root, path, "memory.max")).trim(), String(32 * 1024 * 1024));
      } else {
        assert.equal(read(join(layout.root, "cpu", path, "cpu.cfs_quota_us")).trim(), "30000");
        assert.equal(read(join(layout.root, "memory", path, "memory.limit_in_bytes")).trim(), String(32 * 1024 * 1024));
      }
      // A process in a cgroup made below it (as a sandbox's is) that allocates 100 MiB is OOM-killed.
      // The shell waits for a line until it is in the cgroup: what it starts then is made there.
      const hog = spawn("sh", ["-c", "read go; head -c 100m /dev/zero | tail; echo tail-exited-$?"], { stdio: ["pipe", "pipe", "ignore"] });
      let output = "";
      hog.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
      joinCgroup(layout, child, hog.pid ?? 0);
      hog.stdin.end("go\n");
      // "close", not "exit": the process may exit before its last output has been read.
      await once(hog, "close");
      assert.equal(output.trim(), "tail-exited-137", "tail, holding 100 MiB, was SIGKILLed");
      assert.ok(readOomKillCount(layout, path) + readOomKillCount(layout, child) > 0, "the kernel counted an OOM kill");
    } finally {
      for (let i = 0; i < 50 && (removeCgroup(layout, child).length > 0 || removeCgroup(layout, path).length > 0); i++) await sleep(20);
    }
  });
});

describe("cgroupProcessIds", () => {
  it("v2: the pids of the cgroup and of the cgroups below it; 0s (another PID namespace) left out", () => {
    const root = v2Tree({ "": "cpu memory pids", "fsb/sb": "", "fsb/sb/inner": "", "fsb/other": "" });
    writeFileSync(join(root, "fsb/sb/cgroup.procs"), "12\n0\n34\n");
    writeFileSync(join(root, "fsb/sb/inner/cgroup.procs"), "56\n");
    writeFileSync(join(root, "fsb/other/cgroup.procs"), "78\n");
    const layout = detectCgroupLayout(root);
    assert.deepEqual(
      cgroupProcessIds(layout, "/fsb/sb").sort((a, b) => a - b),
      [12, 34, 56],
    );
    assert.deepEqual(cgroupProcessIds(layout, "/fsb/gone"), []);
    assert.deepEqual(cgroupProcessIds(layout, "/"), [], "never the root's");
  });

  it("v1: the pids hierarchy's, where it is mounted", () => {
    const root = tempRoot();
    for (const controller of ["pids", "memory"]) mkdirSync(join(root, controller, "fsb/sb"), { recursive: true });
    writeFileSync(join(root, "pids/fsb/sb/cgroup.procs"), "21\n43\n");
    writeFileSync(join(root, "memory/fsb/sb/cgroup.procs"), "21\n43\n");
    assert.deepEqual(
      cgroupProcessIds(detectCgroupLayout(root), "/fsb/sb").sort((a, b) => a - b),
      [21, 43],
    );
  });
});

describe("readOomKillCount", () => {
  const sandbox = "/fast-sandbox/default-0/sandboxes/sb-1";

  it("v2: reads oom_kill from the sandbox cgroup's memory.events", () => {
    const root = v2Tree({ ".": "cpu memory pids", [sandbox]: "cpu memory pids" });
    const layout = detectCgroupLayout(root);
    writeFileSync(join(root, sandbox, "memory.events"), "low 0\nhigh 0\nmax 41\noom 3\noom_kill 2\noom_group_kill 0\n");
    assert.equal(readOomKillCount(layout, sandbox), 2);
    writeFileSync(join(root, sandbox, "memory.events"), "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n");
    assert.equal(readOomKillCount(layout, sandbox), 0);
  });

  it("v2: does not take oom_group_kill or oom for oom_kill", () => {
    const root = v2Tree({ ".": "memory", [sandbox]: "memory" });
    writeFileSync(join(root, sandbox, "memory.events"), "oom 5\noom_group_kill 4\n");
    assert.equal(readOomKillCount(detectCgroupLayout(root), sandbox), 0);
  });

  it("v1: reads oom_kill from memory.oom_control in the memory hierarchy", () => {
    const root = tempRoot();
    mkdirSync(join(root, "memory", sandbox), { recursive: true });
    mkdirSync(join(root, "cpu", sandbox), { recursive: true });
    writeFileSync(join(root, "memory", sandbox, "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n");
    const layout = detectCgroupLayout(root);
    assert.equal(layout.version, 1);
    assert.equal(readOomKillCount(layout, sandbox), 7);
  });

  it("is 0 when the cgroup, its memory controller or the counter is missing", () => {
    const v2 = v2Tree({ ".": "cpu pids", [sandbox]: "cpu pids" });
    assert.equal(readOomKillCount(detectCgroupLayout(v2), sandbox), 0);
    assert.equal(readOomKillCount(detectCgroupLayout(v2), "/no/such/cgroup"), 0);
    const v1 = tempRoot();
    mkdirSync(join(v1, "memory", sandbox), { recursive: true });
    // A kernel before 4.13 has no oom_kill line.
    writeFileSync(join(v1, "memory", sandbox, "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\n");
    assert.equal(readOomKillCount(detectCgroupLayout(v1), sandbox), 0);
  });
});

describe("removeCgroup", () => {
  it("removes the cgroup from every v1 hierarchy once (linked ones included) and reports those still holding something", () => {
    const root = mkdtempSync(join(tmpdir(), "fsb-cgroup-rm-"));
    try {
      mkdirSync(join(root, "cpu,cpuacct"));
      symlinkSync("cpu,cpuacct", join(root, "cpu"));
      for (const hierarchy of ["cpu,cpuacct", "memory", "pids", "freezer"]) mkdirSync(join(root, hierarchy, "fsb", "a", "sb-1"), { recursive: true });
      // Not a cgroupfs: a leftover file stands for a cgroup that still has processes.
      writeFileSync(join(root, "pids", "fsb", "a", "sb-1", "tasks"), "1\n");
      const busy = removeCgroup({ version: 1, root, controllers: ["cpu", "memory", "pids"] }, "/fsb/a/sb-1");
      assert.deepEqual(busy, [join(root, "pids", "fsb", "a", "sb-1")]);
      for (const hierarchy of ["cpu,cpuacct", "memory", "freezer"]) assert.equal(existsSync(join(root, hierarchy, "fsb", "a", "sb-1")), false);
      assert.equal(existsSync(join(root, "memory", "fsb", "a")), true, "only the sandbox's own cgroup goes");
      rmSync(join(root, "pids", "fsb", "a", "sb-1", "tasks"));
      assert.deepEqual(removeCgroup({ version: 1, root, controllers: [] }, "/fsb/a/sb-1"), [], "a second call finishes it; hierarchies without it are fine");
      assert.equal(existsSync(join(root, "pids", "fsb", "a", "sb-1")), false);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("on v2 removes the one directory of the unified tree, and never the root itself", () => {
    const root = mkdtempSync(join(tmpdir(), "fsb-cgroup-rm-"));
    try {
      mkdirSync(join(root, "fsb", "a", "sb-1"), { recursive: true });
      assert.deepEqual(removeCgroup({ version: 2, root, controllers: [] }, "/fsb/a/sb-1"), []);
      assert.equal(existsSync(join(root, "fsb", "a", "sb-1")), false);
      assert.deepEqual(removeCgroup({ version: 2, root, controllers: [] }, "/"), []);
      assert.equal(existsSync(root), true);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe("killCgroupProcesses", () => {
  /** A process to kill, listed as the cgroup's member in each of `directories`. */
  function member(directories: string[]) {
    const child = spawn("sleep", ["60"], { stdio: "ignore" });
    for (const directory of directories) {
      mkdirSync(directory, { recursive: true });
      writeFileSync(join(directory, "cgroup.procs"), `${child.pid}\n`);
    }
    return { child, exited: once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]> };
  }

  /** A process listed in `directories` but not in the cgroup (as a pid reused meanwhile would be) is not signalled. */
  async function assertSpared(root: string, path: string, directories: string[]): Promise<void> {
    const { child, exited } = member(directories);
    try {
      assert.equal(await killCgroupProcesses(detectCgroupLayout(root), path), 0);
      assert.ok(await runsOn(child), "the process outside the cgroup runs on");
    } finally {
      child.kill("SIGKILL");
      await exited;
    }
  }

  /** Whether `child` still runs 200 ms on (an exit reported meanwhile says it was signalled). */
  async function runsOn(child: ReturnType<typeof spawn>): Promise<boolean> {
    await sleep(200);
    return child.exitCode === null && child.signalCode === null;
  }

  it("v1: freezes the cgroup, SIGKILLs its members and thaws it", async () => {
    const root = tempRoot();
    for (const dir of ["cpu", "pids", "freezer"]) mkdirSync(join(root, dir));
    const { exited } = member([join(root, "freezer", "parent/box"), join(root, "pids", "parent/box")]);
    // A real freezer reports FREEZING, then FROZEN; this file reads back what was written.
    writeFileSync(join(root, "freezer", "parent/box/freezer.state"), "THAWED\n");
    assert.equal(await killCgroupProcesses(detectCgroupLayout(root), "/parent/box"), 1);
    const [, signal] = await exited;
    assert.equal(signal, "SIGKILL");
    assert.equal(read(join(root, "freezer", "parent/box/freezer.state")), "THAWED");
  });

  it("v1 without a freezer: spares a listed pid that is not the cgroup's (as a pid reused by another process would be)", async () => {
    const root = tempRoot();
    for (const dir of ["cpu", "pids"]) mkdirSync(join(root, dir));
    await assertSpared(root, "/parent/box", [join(root, "pids", "parent/box")]);
  });

  it("v2: kills through cgroup.kill, and signals no pid itself", async () => {
    const root = v2Tree({ ".": "cpu memory pids" });
    const { child, exited } = member([join(root, "parent/box")]);
    try {
      assert.equal(await killCgroupProcesses(detectCgroupLayout(root), "parent/box"), 1);
      assert.equal(read(join(root, "parent/box/cgroup.kill")), "1");
      assert.ok(await runsOn(child), "the kernel's cgroup.kill does the killing, not a signal of its own");
    } finally {
      child.kill("SIGKILL");
      await exited;
    }
  });

  it("v2 without cgroup.kill (a kernel before 5.14): spares a listed pid that is not the cgroup's", async () => {
    const root = v2Tree({ ".": "cpu memory pids" });
    mkdirSync(join(root, "parent/box/cgroup.kill"), { recursive: true }); // a write to it fails
    await assertSpared(root, "parent/box", [join(root, "parent/box")]);
  });

  it("v1 whose freezer refuses the cgroup: spares a listed pid that is not the cgroup's", async () => {
    const root = tempRoot();
    for (const dir of ["pids", "freezer"]) mkdirSync(join(root, dir));
    // A directory where freezer.state would be written: the write fails, as on a freezer that refuses.
    mkdirSync(join(root, "freezer", "parent/box/freezer.state"), { recursive: true });
    await assertSpared(root, "/parent/box", [join(root, "freezer", "parent/box"), join(root, "pids", "parent/box")]);
  });

  it("v2: counts what cgroup.kill killed by cgroup.procs' lines, those listed as 0 (outside this PID namespace) and the cgroups below included", async () => {
    const kernel = fakeCgroup2();
    kernel.makeCgroup("k8s.io/agent-x/sb-1/inner");
    // An agent Pod without hostPID: the kernel lists the sandbox's processes as 0.
    kernel.addProcesses("k8s.io/agent-x/sb-1", [0, 0, 0]);
    kernel.addProcesses("k8s.io/agent-x/sb-1/inner", [0]);
    assert.equal(await killCgroupProcesses(detectCgroupLayout(kernel.root), "/k8s.io/agent-x/sb-1"), 4);
    assert.equal(kernel.read("k8s.io/agent-x/sb-1", "cgroup.procs"), "");
    assert.equal(kernel.read("k8s.io/agent-x/sb-1/inner", "cgroup.procs"), "");
  });

  it("v2 without cgroup.kill: processes outside this PID namespace cannot be signalled, and it says so rather than 0 killed", async () => {
    const kernel = fakeCgroup2(undefined, { withoutKill: true });
    kernel.makeCgroup("k8s.io/agent-x/sb-1");
    kernel.addProcesses("k8s.io/agent-x/sb-1", [0, 0, 0]);
    await assert.rejects(killCgroupProcesses(detectCgroupLayout(kernel.root), "/k8s.io/agent-x/sb-1"), (error: Error) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.match(
        error.message,
        /cgroup \/k8s\.io\/agent-x\/sb-1: 3 processes there are outside this process's PID namespace .*no cgroup\.kill; none of those was killed.*janitor/,
      );
      return true;
    });
  });

  it("v1: tasks the pids hierarchy counts that cgroup.procs does not list (another PID namespace) are not reported as 0 killed, with the freezer or without", async () => {
    for (const hierarchies of [["pids", "freezer"], ["pids"]]) {
      const root = tempRoot();
      for (const dir of hierarchies) mkdirSync(join(root, dir, "k8s.io/agent-x/sb-1"), { recursive: true });
      // v1 leaves a process of another PID namespace out of cgroup.procs; pids.current counts it.
      writeFileSync(join(root, "pids/k8s.io/agent-x/sb-1/cgroup.procs"), "");
      writeFileSync(join(root, "pids/k8s.io/agent-x/sb-1/pids.current"), "3\n");
      if (hierarchies.includes("freezer")) {
        writeFileSync(join(root, "freezer/k8s.io/agent-x/sb-1/cgroup.procs"), "");
        writeFileSync(join(root, "freezer/k8s.io/agent-x/sb-1/freezer.state"), "THAWED\n");
      }
      await assert.rejects(killCgroupProcesses(detectCgroupLayout(root), "/k8s.io/agent-x/sb-1"), (error: Error) => {
        assert.ok(error instanceof UnavailableError, String(error));
        assert.match(error.message, /3 tasks there are outside this process's PID namespace .*cgroup v1 has no cgroup\.kill/);
        return true;
      });
      if (hierarchies.includes("freezer")) assert.equal(read(join(root, "freezer/k8s.io/agent-x/sb-1/freezer.state")), "THAWED", "thawed again");
    }
  });

  it("v1: a task counted in a cgroup below, listed there, is not taken for one out of reach", async () => {
    const root = tempRoot();
    mkdirSync(join(root, "pids/parent/box/inner"), { recursive: true });
    writeFileSync(join(root, "pids/parent/box/pids.current"), "1\n");
    writeFileSync(join(root, "pids/parent/box/inner/cgroup.procs"), `${process.pid}\n`);
    assert.equal(await killCgroupProcesses(detectCgroupLayout(root), "/parent/box"), 0);
  });

  it("signals nothing for a cgroup that is not there, or the root", async () => {
    const root = tempRoot();
    mkdirSync(join(root, "pids"));
    assert.equal(await killCgroupProcesses(detectCgroupLayout(root), "/absent"), 0);
    assert.equal(await killCgroupProcesses(detectCgroupLayout(root), "/"), 0);
  });
});

describe("readCgroupUsage", () => {
  const sandbox = "/fast-sandbox/default-0/sandboxes/sb-1";

  it("v2: cpu.stat's usage_usec, cpu.max, memory.current and memory.max, memory.stat's file, pids.current", () => {
    const root = v2Tree({ ".": "cpu memory pids", [sandbox]: "cpu memory pids" });
    writeFileSync(join(root, sandbox, "cpu.stat"), "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n");
    writeFileSync(join(root, sandbox, "cpu.max"), "50000 100000\n");
    writeFileSync(join(root, sandbox, "memory.current"), "67108864\n");
    writeFileSync(join(root, sandbox, "memory.max"), "268435456\n");
    writeFileSync(join(root, sandbox, "memory.stat"), "anon 33554432\nfile 16777216\nkernel 1048576\nfile_mapped 0\n");
    writeFileSync(join(root, sandbox, "pids.current"), "4\n");
    assert.deepEqual(readCgroupUsage(detectCgroupLayout(root), sandbox), {
      cpuUsageNanos: 2_500_000_000,
      cpuLimitMillis: 500,
      memoryUsedBytes: 64 << 20,
      memoryCacheBytes: 16 << 20,
      memoryLimitBytes: 256 << 20,
      pids: 4,
    });
    writeFileSync(join(root, sandbox, "cpu.max"), "max 100000\n");
    writeFileSync(join(root, sandbox, "memory.max"), "max\n");
    const unlimited = readCgroupUsage(detectCgroupLayout(root), sandbox);
    assert.equal(unlimited.cpuLimitMillis, 0);
    assert.equal(unlimited.memoryLimitBytes, 0);
  });

  it("v1: cpuacct.usage, the CFS quota over its period, memory.usage_in_bytes and its limit (the kernel's 'none' as 0), memory.stat's total_cache", () => {
    const root = tempRoot();
    for (const controller of ["cpu", "cpuacct", "memory", "pids"]) mkdirSync(join(root, controller, sandbox), { recursive: true });
    writeFileSync(join(root, "cpuacct", sandbox, "cpuacct.usage"), "1234567890\n");
    writeFileSync(join(root, "cpu", sandbox, "cpu.cfs_quota_us"), "20000\n");
    writeFileSync(join(root, "cpu", sandbox, "cpu.cfs_period_us"), "100000\n");
    writeFileSync(join(root, "memory", sandbox, "memory.usage_in_bytes"), "1048576\n");
    writeFileSync(join(root, "memory", sandbox, "memory.limit_in_bytes"), "33554432\n");
    // cache is the cgroup's own, total_cache its subtree's too.
    writeFileSync(join(root, "memory", sandbox, "memory.stat"), "cache 4096\nrss 528384\ntotal_cache 12288\ntotal_rss 528384\n");
    writeFileSync(join(root, "pids", sandbox, "pids.current"), "3\n");
    const layout = detectCgroupLayout(root);
    assert.equal(layout.version, 1);
    assert.deepEqual(readCgroupUsage(layout, sandbox), {
      cpuUsageNanos: 1_234_567_890,
      cpuLimitMillis: 200,
      memoryUsedBytes: 1 << 20,
      memoryCacheBytes: 12288,
      memoryLimitBytes: 32 << 20,
      pids: 3,
    });
    writeFileSync(join(root, "cpu", sandbox, "cpu.cfs_quota_us"), "-1\n");
    writeFileSync(join(root, "memory", sandbox, "memory.limit_in_bytes"), "9223372036854771712\n");
    const unlimited = readCgroupUsage(layout, sandbox);
    assert.equal(unlimited.cpuLimitMillis, 0);
    assert.equal(unlimited.memoryLimitBytes, 0);
  });

  it("is all 0 for a cgroup that is not there", () => {
    const root = v2Tree({ ".": "cpu memory pids" });
    assert.deepEqual(readCgroupUsage(detectCgroupLayout(root), "/no/such/cgroup"), {
      cpuUsageNanos: 0,
      cpuLimitMillis: 0,
      memoryUsedBytes: 0,
      memoryCacheBytes: 0,
      memoryLimitBytes: 0,
      pids: 0,
    });
  });
});
