import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { processStartTime } from "@fast-sandbox/agent/process-identity";
import { LocalHostLeftovers, cgroupPathSegments } from "./host-leftovers.js";

const roots: string[] = [];
function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  roots.push(dir);
  return dir;
}
after(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

/** A v1 mount: one directory per hierarchy, `cpu` a link to `cpu,cpuacct` as on Debian. */
function v1Mount(cgroups: string[]): string {
  const mount = tempDir("fsb-janitor-v1-");
  for (const hierarchy of ["cpu,cpuacct", "memory", "pids"]) {
    mkdirSync(join(mount, hierarchy));
    for (const cgroup of cgroups) mkdirSync(join(mount, hierarchy, cgroup), { recursive: true });
  }
  symlinkSync("cpu,cpuacct", join(mount, "cpu"));
  return mount;
}

/** A v2 mount: `cgroup.controllers` at the root. */
function v2Mount(cgroups: string[]): string {
  const mount = tempDir("fsb-janitor-v2-");
  writeFileSync(join(mount, "cgroup.controllers"), "cpu memory pids\n");
  for (const cgroup of cgroups) mkdirSync(join(mount, cgroup), { recursive: true });
  return mount;
}

describe("cgroupPathSegments", () => {
  it("accepts absolute cgroupfs paths of at least two segments", () => {
    assert.deepEqual(cgroupPathSegments("/fsb/default-0/sandboxes/default.web.a1b2c3"), ["fsb", "default-0", "sandboxes", "default.web.a1b2c3"]);
  });

  it("refuses what could reach outside a sandbox's own cgroup", () => {
    for (const path of ["/", "/top", "relative/a/b", "/a/../b", "/a/./b", "system.slice:cri:abc", "/a/b:c"]) {
      assert.equal(cgroupPathSegments(path), undefined, path);
    }
  });
});

describe("LocalHostLeftovers.removeSandboxCgroup", () => {
  it("removes the sandbox's cgroup from every v1 hierarchy and leaves its parent", async () => {
    const mount = v1Mount(["fsb/dead-0/sandboxes/a", "fsb/dead-0/sandboxes/b"]);
    const host = new LocalHostLeftovers({ cgroupMount: mount });
    const removed = await host.removeSandboxCgroup("/fsb/dead-0/sandboxes/a");
    assert.deepEqual(removed.sort(), ["cpu,cpuacct", "memory", "pids"].map((h) => join(mount, h, "fsb/dead-0/sandboxes/a")).sort());
    for (const hierarchy of ["cpu,cpuacct", "memory", "pids"]) {
      assert.ok(!existsSync(join(mount, hierarchy, "fsb/dead-0/sandboxes/a")));
      assert.ok(existsSync(join(mount, hierarchy, "fsb/dead-0/sandboxes/b")));
    }
    // Idempotent.
    assert.deepEqual(await host.removeSandboxCgroup("/fsb/dead-0/sandboxes/a"), []);
  });

  it("removes it from the unified v2 tree", async () => {
    const mount = v2Mount(["fsb/dead-0/sandboxes/a/nested"]);
    const removed = await new LocalHostLeftovers({ cgroupMount: mount }).removeSandboxCgroup("/fsb/dead-0/sandboxes/a");
    assert.deepEqual(removed, [join(mount, "fsb/dead-0/sandboxes/a/nested"), join(mount, "fsb/dead-0/sandboxes/a")]);
    assert.ok(existsSync(join(mount, "fsb/dead-0/sandboxes")));
  });

  it("touches nothing for a path it refuses", async () => {
    const mount = v2Mount(["top", "a/b"]);
    const host = new LocalHostLeftovers({ cgroupMount: mount });
    assert.deepEqual(await host.removeSandboxCgroup("/top"), []);
    assert.deepEqual(await host.removeSandboxCgroup("/a/b/../b"), []);
    assert.ok(existsSync(join(mount, "top")) && existsSync(join(mount, "a/b")));
  });

  it("fails, instead of pretending, when the cgroup cannot be removed", async () => {
    const mount = v2Mount(["fsb/x/sandboxes/a"]);
    // A regular file stands for a cgroup that is still busy: rmdir refuses it.
    writeFileSync(join(mount, "fsb/x/sandboxes/a/busy"), "");
    const host = new LocalHostLeftovers({ cgroupMount: mount, cgroupDrainTimeoutMs: 100 });
    await assert.rejects(host.removeSandboxCgroup("/fsb/x/sandboxes/a"), /could not remove cgroup/);
  });
});

describe("LocalHostLeftovers: killing a sandbox cgroup's processes", () => {
  /** A v2 cgroup as a kernel of 5.14+ shows it, `cgroup.procs` as read from a Pod without hostPID (0 for every process of the host). */
  function v2CgroupSeenFromAPod(mount: string, path: string): string {
    const directory = join(mount, path);
    mkdirSync(directory, { recursive: true });
    writeFileSync(join(directory, "cgroup.kill"), "");
    writeFileSync(join(directory, "cgroup.procs"), "0\n0\n");
    return directory;
  }

  it("v2: removeSandboxCgroup writes cgroup.kill even when none of the cgroup's processes is visible", async () => {
    const mount = v2Mount([]);
    const directory = v2CgroupSeenFromAPod(mount, "fsb/dead-0/sandboxes/a");
    // The fake tree's files keep it from being removed: what matters is the kill.
    await assert.rejects(new LocalHostLeftovers({ cgroupMount: mount, cgroupDrainTimeoutMs: 100 }).removeSandboxCgroup("/fsb/dead-0/sandboxes/a"));
    assert.equal(readFileSync(join(directory, "cgroup.kill"), "utf8"), "1");
  });

  it("v2: killSandboxCgroupProcesses writes cgroup.kill and removes nothing", async () => {
    const mount = v2Mount([]);
    const directory = v2CgroupSeenFromAPod(mount, "fsb/dead-0/sandboxes/a");
    await new LocalHostLeftovers({ cgroupMount: mount }).killSandboxCgroupProcesses("/fsb/dead-0/sandboxes/a");
    assert.equal(readFileSync(join(directory, "cgroup.kill"), "utf8"), "1");
    assert.ok(existsSync(directory));
  });

  it("v1: killSandboxCgroupProcesses freezes the cgroup, SIGKILLs its members and thaws it", async () => {
    const mount = v1Mount(["fsb/dead-0/sandboxes/a"]);
    const freezer = join(mount, "freezer", "fsb/dead-0/sandboxes/a");
    mkdirSync(freezer, { recursive: true });
    writeFileSync(join(freezer, "freezer.state"), "THAWED\n");
    const child = spawn("sleep", ["60"], { stdio: "ignore" });
    const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
    try {
      for (const directory of [freezer, join(mount, "pids", "fsb/dead-0/sandboxes/a")]) writeFileSync(join(directory, "cgroup.procs"), `${child.pid}\n`);
      assert.equal(await new LocalHostLeftovers({ cgroupMount: mount }).killSandboxCgroupProcesses("/fsb/dead-0/sandboxes/a"), 1);
      const [, signal] = await exited;
      assert.equal(signal, "SIGKILL");
      assert.equal(readFileSync(join(freezer, "freezer.state"), "utf8"), "THAWED");
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("kills nothing for a path it refuses", async () => {
    const mount = v2Mount([]);
    const directory = v2CgroupSeenFromAPod(mount, "top");
    assert.equal(await new LocalHostLeftovers({ cgroupMount: mount }).killSandboxCgroupProcesses("/top"), 0);
    assert.equal(readFileSync(join(directory, "cgroup.kill"), "utf8"), "");
  });
});

describe("LocalHostLeftovers.removeAgentCgroup", () => {
  it("removes a gone agent's empty cgroup tree under the cgroup root, in every hierarchy", async () => {
    const mount = v1Mount(["fsb/dead-0/agent", "fsb/dead-0/sandboxes", "fsb/live-0/agent"]);
    const removed = await new LocalHostLeftovers({ cgroupMount: mount, cgroupRoot: "/fsb/" }).removeAgentCgroup("dead-0");
    assert.equal(removed.length, 9);
    assert.ok(!existsSync(join(mount, "memory/fsb/dead-0")));
    assert.ok(existsSync(join(mount, "memory/fsb/live-0/agent")));
  });

  it("does nothing without a cgroup root", async () => {
    const mount = v2Mount(["dead-0/agent"]);
    assert.deepEqual(await new LocalHostLeftovers({ cgroupMount: mount }).removeAgentCgroup("dead-0"), []);
    assert.equal(await new LocalHostLeftovers({ cgroupMount: mount }).hasAgentCgroup("dead-0"), false);
  });

  it("says whether anything of the agent's cgroup is left in any hierarchy", async () => {
    const mount = v1Mount(["fsb/dead-0/sandboxes"]);
    const host = new LocalHostLeftovers({ cgroupMount: mount, cgroupRoot: "fsb" });
    rmSync(join(mount, "memory", "fsb/dead-0"), { recursive: true });
    assert.equal(await host.hasAgentCgroup("dead-0"), true);
    await host.removeAgentCgroup("dead-0");
    assert.equal(await host.hasAgentCgroup("dead-0"), false);
    assert.equal(await host.hasAgentCgroup(".."), false);
  });
});

describe("LocalHostLeftovers.removeCgroupRoot", () => {
  it("removes the cgroup root where it is empty, in every hierarchy, and nothing below it or beside it", () => {
    const mount = v1Mount(["fsb", "other/x"]);
    // Left under the root in one hierarchy: another instance's nested root, or a cgroup in use.
    mkdirSync(join(mount, "memory", "fsb/nested"));
    const removed = new LocalHostLeftovers({ cgroupMount: mount, cgroupRoot: "/fsb" }).removeCgroupRoot();
    assert.deepEqual(removed.sort(), [join(mount, "cpu,cpuacct/fsb"), join(mount, "pids/fsb")]);
    assert.ok(existsSync(join(mount, "memory/fsb/nested")), "what is under it stays, and the root with it");
    assert.ok(existsSync(join(mount, "memory/other/x")));
  });

  it("removes nothing without a cgroup root, nor for a root that is the hierarchy itself", () => {
    const mount = v2Mount(["dead-0"]);
    assert.deepEqual(new LocalHostLeftovers({ cgroupMount: mount }).removeCgroupRoot(), []);
    assert.deepEqual(new LocalHostLeftovers({ cgroupMount: mount, cgroupRoot: "/" }).removeCgroupRoot(), []);
    assert.ok(existsSync(join(mount, "dead-0")));
  });
});

describe("LocalHostLeftovers.listSandboxCgroups", () => {
  const cgroups = [
    // An agent with a cgroup of its own (the embedded mode): its process's, and its sandboxes' parent.
    "fsb/live-0/agent",
    "fsb/live-0/sandboxes/default.web.a1b2c3/nested",
    "fsb/live-0/sandboxes/fsb-anchor-0",
    // Not a name the agent gives a container's cgroup.
    "fsb/live-0/sandboxes/a..b",
    // An agent without (the Kubernetes mode): its containers' cgroups in its own.
    "fsb/pool-agent-x/sb-0123456789abcdef0123456789abcdef",
    "fsb/pool-agent-x/fsb-anchor-1",
    // An agent it is not asked about.
    "fsb/stranger/sandboxes/x",
    "fsb/stranger/y",
  ];
  const expected = [
    { agent: "live-0", name: "default.web.a1b2c3", cgroupsPath: "/fsb/live-0/sandboxes/default.web.a1b2c3" },
    { agent: "live-0", name: "fsb-anchor-0", cgroupsPath: "/fsb/live-0/sandboxes/fsb-anchor-0" },
    { agent: "pool-agent-x", name: "fsb-anchor-1", cgroupsPath: "/fsb/pool-agent-x/fsb-anchor-1" },
    { agent: "pool-agent-x", name: "sb-0123456789abcdef0123456789abcdef", cgroupsPath: "/fsb/pool-agent-x/sb-0123456789abcdef0123456789abcdef" },
  ];
  const byPath = (a: { cgroupsPath: string }, b: { cgroupsPath: string }) => a.cgroupsPath.localeCompare(b.cgroupsPath);

  for (const [version, mount] of [
    ["v1", () => v1Mount(cgroups)],
    ["v2", () => v2Mount(cgroups)],
  ] as const) {
    it(`${version}: lists the cgroups named like containers' under the named agents' cgroups, in either layout, once each`, async () => {
      const host = new LocalHostLeftovers({ cgroupMount: mount(), cgroupRoot: "/fsb/" });
      assert.deepEqual((await host.listSandboxCgroups(["live-0", "pool-agent-x", "live-0", "absent-0", ".."])).sort(byPath), expected);
    });
  }

  it("lists nothing without a cgroup root", async () => {
    assert.deepEqual(await new LocalHostLeftovers({ cgroupMount: v2Mount(cgroups) }).listSandboxCgroups(["live-0"]), []);
  });

  it("without a cgroup root, lists those under /<containerdNamespace>/<agent> of each namespace looked after, and never removes that cgroup", async () => {
    const mount = v2Mount([
      "ns-a/default-0/left-x/nested",
      "ns-a/default-0/fsb-anchor-0",
      "ns-b/default-0/left-y",
      "other/default-0/left-z",
      "ns-a/stranger/left",
    ]);
    const host = new LocalHostLeftovers({ cgroupMount: mount, containerdNamespaces: ["ns-a", "ns-b"] });
    assert.deepEqual((await host.listSandboxCgroups(["default-0", ".."])).sort(byPath), [
      { agent: "default-0", name: "fsb-anchor-0", cgroupsPath: "/ns-a/default-0/fsb-anchor-0" },
      { agent: "default-0", name: "left-x", cgroupsPath: "/ns-a/default-0/left-x" },
      { agent: "default-0", name: "left-y", cgroupsPath: "/ns-b/default-0/left-y" },
    ]);
    assert.deepEqual(await host.removeAgentCgroup("default-0"), []);
    assert.equal(await host.hasAgentCgroup("default-0"), false);
    assert.ok(existsSync(join(mount, "ns-a/default-0")));
  });
});

describe("LocalHostLeftovers.removeAgentNetworkNamespace", () => {
  function netns(names: string[]) {
    const netnsDir = tempDir("fsb-janitor-netns-");
    for (const name of names) writeFileSync(join(netnsDir, name), "");
    const deleted: string[] = [];
    // As `ip netns delete` does it, but on a test's directory: unmount (nothing to unmount here), unlink.
    const deleteNetns = (name: string) => {
      deleted.push(name);
      rmSync(join(netnsDir, name));
      return Promise.resolve();
    };
    return { netnsDir, deleted, host: new LocalHostLeftovers({ netnsDir, deleteNetns }) };
  }

  it("removes the name of the agent's Shared network namespace, and only that", async () => {
    const { netnsDir, deleted, host } = netns(["fsb-agent-dead-0", "fsb-agent-dead-01", "fsb-fsb0-0123456789ab"]);
    assert.equal(await host.removeAgentNetworkNamespace("dead-0"), join(netnsDir, "fsb-agent-dead-0"));
    assert.deepEqual(deleted, ["fsb-agent-dead-0"]);
    assert.deepEqual(readdirSync(netnsDir).sort(), ["fsb-agent-dead-01", "fsb-fsb0-0123456789ab"]);
    // Idempotent; names that would leave the directory are refused.
    assert.equal(await host.removeAgentNetworkNamespace("dead-0"), undefined);
    assert.equal(await host.removeAgentNetworkNamespace("../x"), undefined);
    assert.deepEqual(deleted, ["fsb-agent-dead-0"]);
  });

  it("fails when the name is still there after its deletion, and not when someone else removed it meanwhile", async () => {
    const netnsDir = tempDir("fsb-janitor-netns-");
    writeFileSync(join(netnsDir, "fsb-agent-dead-0"), "");
    const busy = new LocalHostLeftovers({ netnsDir, deleteNetns: () => Promise.reject(new Error("umount: target is busy")) });
    await assert.rejects(busy.removeAgentNetworkNamespace("dead-0"), /target is busy/);
    const raced = new LocalHostLeftovers({
      netnsDir,
      deleteNetns: (name) => {
        rmSync(join(netnsDir, name));
        return Promise.reject(new Error("No such file or directory"));
      },
    });
    assert.equal(await raced.removeAgentNetworkNamespace("dead-0"), join(netnsDir, "fsb-agent-dead-0"));
  });
});

describe("LocalHostLeftovers.removeAgentStateDir", () => {
  /** A gone agent's state directory (its files' status changes now: times cannot be set back). */
  function stateDir(files: Record<string, string>, directories: string[] = []) {
    const agentsDir = tempDir("fsb-janitor-agents-");
    const dir = join(agentsDir, "dead-0");
    for (const name of ["", ...directories]) mkdirSync(join(dir, name), { recursive: true });
    for (const [name, text] of Object.entries(files)) {
      mkdirSync(join(dir, name, ".."), { recursive: true });
      writeFileSync(join(dir, name), text);
    }
    mkdirSync(join(agentsDir, "live-0"));
    return { agentsDir, dir, host: new LocalHostLeftovers({ agentsDir }), writtenAtMs: Date.now() };
  }
  const layout = { "agent.lock": '{"pid":2147483646,"startTime":1}\n', "agent.log": "bye\n", "shared-network/resolv.conf": "", "logs/notes.txt": "" };

  it("removes the whole directory once no file in it has changed since the cutoff", async () => {
    // An empty checkpoints tree holds no checkpoint: it goes with the rest.
    const { agentsDir, dir, host } = stateDir(layout, ["checkpoints/default/pool", "run"]);
    assert.deepEqual(await host.removeAgentStateDir("dead-0", Date.now() - 60_000), []);
    assert.ok(existsSync(join(dir, "agent.log")));
    assert.deepEqual(await host.removeAgentStateDir("dead-0", Date.now() + 1_000), [{ kind: "state_dir", path: dir }]);
    assert.deepEqual(readdirSync(agentsDir), ["live-0"]);
    assert.deepEqual(await host.removeAgentStateDir("dead-0", Date.now() + 1_000), []);
    assert.deepEqual(await host.removeAgentStateDir("..", Date.now() + 1_000), []);
    assert.deepEqual(readdirSync(agentsDir), ["live-0"]);
  });

  it("keeps the checkpoints the agent kept in it, and so the directory; they do not make the rest young", async () => {
    const { dir, host, writtenAtMs } = stateDir(layout);
    await new Promise((resolve) => setTimeout(resolve, 30));
    mkdirSync(join(dir, "checkpoints/default/pool/cp-1/image"), { recursive: true });
    writeFileSync(join(dir, "checkpoints/default/pool/cp-1/image/pages.img"), "");
    writeFileSync(join(dir, "checkpoints/default/pool/cp-1/checkpoint.json"), "{}");
    const removed = await host.removeAgentStateDir("dead-0", writtenAtMs + 15);
    assert.deepEqual(removed.map((file) => `${file.kind} ${file.path.slice(dir.length + 1)}`).sort(), [
      "state_dir agent.lock",
      "state_dir agent.log",
      "state_dir logs",
      "state_dir shared-network",
    ]);
    assert.deepEqual(readdirSync(dir), ["checkpoints"]);
    assert.ok(existsSync(join(dir, "checkpoints/default/pool/cp-1/image/pages.img")));
    assert.deepEqual(await host.removeAgentStateDir("dead-0", Date.now() + 1_000), []);
  });

  it("keeps the directory of an agent process that still runs (its lock names it), whatever the inventory says", async () => {
    const running = JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid) });
    const { dir, host } = stateDir({ ...layout, "agent.lock": `${running}\n` });
    assert.deepEqual(await host.removeAgentStateDir("dead-0", Date.now() + 1_000), []);
    assert.ok(existsSync(join(dir, "agent.lock")));
  });
});

describe("LocalHostLeftovers files", () => {
  function stateDirs() {
    const agentsDir = tempDir("fsb-janitor-agents-");
    const stateDir = join(agentsDir, "dead-0");
    mkdirSync(join(stateDir, "run", "a"), { recursive: true });
    writeFileSync(join(stateDir, "run", "a", "exit-code"), "0\n");
    mkdirSync(join(stateDir, "run", "k"), { recursive: true });
    mkdirSync(join(stateDir, "logs"));
    writeFileSync(join(stateDir, "logs", "a.log"), "hello\n");
    writeFileSync(join(stateDir, "logs", "k.log"), "kept\n");
    // Rotated parts (and a rotation's copy) go with their sandbox's log.
    writeFileSync(join(stateDir, "logs", "a.log.1"), "older\n");
    writeFileSync(join(stateDir, "logs", "a.log.1.tmp"), "copying\n");
    writeFileSync(join(stateDir, "logs", "k.log.1"), "kept too\n");
    writeFileSync(join(stateDir, "logs", "notes.txt"), "not a sandbox's\n");
    writeFileSync(join(stateDir, "agent.log"), "the agent's own log\n");
    execFileSync("mkfifo", [
      join(stateDir, "a.exec-0a1b.stdout"),
      join(stateDir, "a.exec-0a1b.stderr"),
      join(stateDir, "k.exec-99.stdout"),
      join(stateDir, "other.exec-77.stdout"),
    ]);
    // A regular file with a FIFO's name is not one of ours.
    writeFileSync(join(stateDir, "a.exec-0c.stdout"), "");
    mkdirSync(join(agentsDir, "live-0"));
    writeFileSync(join(agentsDir, "not-a-dir"), "");
    return { agentsDir, stateDir };
  }

  it("lists the agents that have a state directory", async () => {
    const { agentsDir } = stateDirs();
    assert.deepEqual((await new LocalHostLeftovers({ agentsDir }).listAgentStateDirs()).sort(), ["dead-0", "live-0"]);
    assert.deepEqual(await new LocalHostLeftovers({ agentsDir: join(agentsDir, "missing") }).listAgentStateDirs(), []);
  });

  it("removes one sandbox's run directory, log file and exec FIFOs, and nothing of another", async () => {
    const { agentsDir, stateDir } = stateDirs();
    const removed = await new LocalHostLeftovers({ agentsDir }).removeSandboxFiles("dead-0", "a");
    assert.deepEqual(
      removed.map((file) => `${file.kind} ${file.path.slice(stateDir.length + 1)}`).sort(),
      [
        "fifo a.exec-0a1b.stderr",
        "fifo a.exec-0a1b.stdout",
        "log_file logs/a.log",
        "log_file logs/a.log.1",
        "log_file logs/a.log.1.tmp",
        "run_dir run/a",
      ].sort(),
    );
    for (const kept of ["a.exec-0c.stdout", "k.exec-99.stdout", "other.exec-77.stdout", "logs/k.log", "logs/k.log.1", "run/k", "agent.log"]) {
      assert.ok(existsSync(join(stateDir, kept)), kept);
    }
    assert.deepEqual(await new LocalHostLeftovers({ agentsDir }).removeSandboxFiles("dead-0", "a"), []);
  });

  it("refuses names that would leave the agents directory", async () => {
    const { agentsDir } = stateDirs();
    const host = new LocalHostLeftovers({ agentsDir });
    assert.deepEqual(await host.removeSandboxFiles("..", "a"), []);
    assert.deepEqual(await host.removeSandboxFiles("dead-0", "../live-0"), []);
    assert.ok(existsSync(join(agentsDir, "live-0")));
  });

  it("removes a gone agent's stale FIFOs, run directories and logs, except those of sandboxes still present", async () => {
    const { agentsDir, stateDir } = stateDirs();
    const host = new LocalHostLeftovers({ agentsDir });
    // Nothing has been unchanged for long enough yet.
    assert.deepEqual(await host.removeStaleAgentFiles("dead-0", Date.now() - 60_000, new Set()), []);
    const removed = await host.removeStaleAgentFiles("dead-0", Date.now() + 1_000, new Set(["k"]));
    assert.deepEqual(
      removed.map((file) => `${file.kind} ${file.path.slice(stateDir.length + 1)}`).sort(),
      [
        "fifo a.exec-0a1b.stderr",
        "fifo a.exec-0a1b.stdout",
        "fifo other.exec-77.stdout",
        "log_file logs/a.log",
        "log_file logs/a.log.1",
        "log_file logs/a.log.1.tmp",
        "run_dir run/a",
      ].sort(),
    );
    for (const kept of ["k.exec-99.stdout", "logs/k.log", "logs/k.log.1", "logs/notes.txt", "run/k", "agent.log", "a.exec-0c.stdout"])
      assert.ok(existsSync(join(stateDir, kept)), kept);
  });

  it("removes the stdio FIFOs a containerd client made for a container, and their directory once empty, nothing else", async () => {
    const fifoDir = tempDir("fsb-janitor-containerd-fifo-");
    const make = (directory: string, names: string[]) => {
      mkdirSync(join(fifoDir, directory));
      execFileSync(
        "mkfifo",
        names.map((name) => join(fifoDir, directory, name)),
      );
    };
    make("101", ["orphan-stdin", "orphan-stdout", "orphan-stderr"]);
    make("102", ["orphan-stdout", "other-stdout"]);
    make("103", ["orphan-2-stdout", "orphaned-stdout"]);
    // A regular file with a FIFO's name is not one of ours.
    mkdirSync(join(fifoDir, "104"));
    writeFileSync(join(fifoDir, "104", "orphan-stderr"), "");
    const host = new LocalHostLeftovers({ containerdFifoDir: fifoDir });
    const removed = await host.removeContainerdFifos("orphan");
    assert.deepEqual(removed.map((file) => `${file.kind} ${file.path.slice(fifoDir.length + 1)}`).sort(), [
      "fifo 101/orphan-stderr",
      "fifo 101/orphan-stdin",
      "fifo 101/orphan-stdout",
      "fifo 102/orphan-stdout",
    ]);
    assert.ok(!existsSync(join(fifoDir, "101")), "an emptied directory goes");
    for (const kept of ["102/other-stdout", "103/orphan-2-stdout", "103/orphaned-stdout", "104/orphan-stderr"])
      assert.ok(existsSync(join(fifoDir, kept)), kept);
    assert.deepEqual(await host.removeContainerdFifos("orphan"), []);
    assert.deepEqual(await host.removeContainerdFifos("../104/orphan"), []);
    assert.deepEqual(await new LocalHostLeftovers({ containerdFifoDir: join(fifoDir, "missing") }).removeContainerdFifos("orphan"), []);
  });
});
