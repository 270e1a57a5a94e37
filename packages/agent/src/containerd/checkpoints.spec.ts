import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fsPromises from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { after, describe, it, mock } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { pino } from "pino";
import { FailedPreconditionError, FsbError, NotFoundError } from "@fast-sandbox/api";
import { DEFAULT_HELPER_PATH } from "../agent-config.js";
import { LABEL_AGENT, LABEL_NAME, LABEL_POOL, LABEL_SANDBOX_ID } from "../runtime/runtime.js";
import {
  GvisorCheckpoints,
  LABEL_ROOTFS_OVERLAY,
  ROOTFS_OVERLAY_MEMORY,
  RunDirectoryTooLargeError,
  checkpointError,
  withoutGoTrace,
  copyRunDirectory,
  copySpec,
  hostnameExecArgs,
  moveRunDir,
  runDirOwner,
  runDirectoryExcess,
  unsafeRunDirMounts,
  userCommandOf,
} from "./checkpoints.js";
import type { ContainerdClient } from "./containerd-client.js";
import { LABEL_RUNTIME_TYPE } from "./containerd-runtime.js";
import type { ExecFiles } from "./exec-files.js";
import { OptionsSchema as RuncOptionsSchema } from "./gen/github.com/containerd/containerd/runtime/v2/runc/options/oci_pb.js";
import { Status as TaskStatus } from "./gen/github.com/containerd/containerd/api/types/task/task_pb.js";
import { ENVD_BINARY, HELPER_BINARY, HELPER_RUN_DIR, type OciSpec } from "./oci-spec.js";

const TEMPLATE_RUN = "/var/lib/fsb/agents/gv-0/run/tmpl";

function checkpointedSpec(): OciSpec {
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: [HELPER_BINARY, "--workdir", "/srv", "--envd", ENVD_BINARY, "--", "sh", "-c", "loop"],
      env: ["PATH=/bin", "FOO=bar"],
      cwd: "/",
      capabilities: { bounding: [], effective: [], permitted: [], inheritable: [], ambient: [] },
      rlimits: [],
      noNewPrivileges: true,
    },
    root: { path: "rootfs", readonly: false },
    hostname: "tmpl",
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: [] },
      { destination: "/etc/hosts", type: "bind", source: `${TEMPLATE_RUN}/etc/hosts`, options: ["rbind", "ro"] },
      { destination: HELPER_BINARY, type: "bind", source: "/opt/fsb-helper", options: ["rbind", "ro"] },
      { destination: HELPER_RUN_DIR, type: "bind", source: TEMPLATE_RUN, options: ["rbind", "rw"] },
      // Another sandbox's run directory whose name starts like this one's is not this one's.
      { destination: "/other", type: "bind", source: `${TEMPLATE_RUN}-2/x`, options: ["rbind", "ro"] },
    ],
    annotations: {},
    linux: {
      cgroupsPath: "/fast-sandbox/gv-0/sandboxes/tmpl",
      resources: { devices: [] },
      namespaces: [{ type: "pid" }, { type: "network", path: "/run/netns/fsb-tmpl" }],
      maskedPaths: [],
      readonlyPaths: [],
    },
  };
}

type CheckpointsOptions = ConstructorParameters<typeof GvisorCheckpoints>[0];

/** The checkpoints of agent gv-0 under `root`, with what a case does not use refused and `options` over it. */
function gvisorCheckpoints(root: string, options: Partial<CheckpointsOptions>): GvisorCheckpoints {
  return new GvisorCheckpoints({
    client: {} as ContainerdClient,
    snapshotter: "overlayfs",
    directory: join(root, "checkpoints"),
    agentName: "gv-0",
    execFiles: {} as ExecFiles,
    runDir: (id) => join(root, "run", id),
    logPath: (id) => join(root, `${id}.log`),
    cgroupsPath: (id) => `/fsb/${id}`,
    removeCgroup: async () => undefined,
    killCgroup: async () => 0,
    resolveImage: () => Promise.reject(new Error("not used")),
    claimNetwork: () => Promise.reject(new Error("not used")),
    refillNetworks: () => undefined,
    ownerLabels: () => ({}),
    owns: () => true,
    exitedWithin: async () => true,
    shimGroup: () => undefined,
    runscFeatures: () => Promise.reject(new Error("not used")),
    runscBinary: (mode) => `/this-agent/${mode}`,
    logger: pino({ level: "silent" }),
    ...options,
  });
}

describe("copySpec", () => {
  it("rewrites only what is the copy's own: its run directory's mounts, network namespace, cgroup and hostname", () => {
    const record = { ociSpec: checkpointedSpec(), runDir: TEMPLATE_RUN };
    const copy = copySpec(record, { runDir: "/state/run/copy", cgroupsPath: "/fsb/copy", hostname: "copy", netnsPath: "/run/netns/fsb-copy" });
    assert.deepEqual(
      copy.mounts.map((m) => m.source),
      ["proc", "/state/run/copy/etc/hosts", "/opt/fsb-helper", "/state/run/copy", `${TEMPLATE_RUN}-2/x`],
    );
    assert.deepEqual(copy.linux.namespaces, [{ type: "pid" }, { type: "network", path: "/run/netns/fsb-copy" }]);
    assert.equal(copy.linux.cgroupsPath, "/fsb/copy");
    assert.equal(copy.hostname, "copy");
    // Mount order and destinations, process and the rest are the checkpoint's (runsc restores onto them).
    assert.deepEqual(
      copy.mounts.map((m) => m.destination),
      record.ociSpec.mounts.map((m) => m.destination),
    );
    assert.deepEqual(copy.process, record.ociSpec.process);
    assert.equal(record.ociSpec.hostname, "tmpl", "the record is left as it was");
  });

  it("needs the copy's network namespace for an Isolated checkpoint", () => {
    assert.throws(() => copySpec({ ociSpec: checkpointedSpec(), runDir: TEMPLATE_RUN }, { runDir: "/r", cgroupsPath: "/c", hostname: "h" }), FsbError);
  });
});

describe("userCommandOf", () => {
  it("finds the user's command and working directory inside the helper's arguments", () => {
    assert.deepEqual(userCommandOf(checkpointedSpec()), { command: ["sh", "-c", "loop"], workingDir: "/srv" });
  });

  it("takes a process without the helper as it is", () => {
    const spec = checkpointedSpec();
    spec.process.args = ["python3", "app.py"];
    spec.process.cwd = "/app";
    assert.deepEqual(userCommandOf(spec), { command: ["python3", "app.py"], workingDir: "/app" });
  });
});

describe("a restored copy's hostname without the daemon", () => {
  it("is set by the helper at its absolute path (its read-only mount), never by a program found through the copy's PATH", () => {
    const args = hostnameExecArgs(checkpointedSpec(), "copy-1");
    assert.deepEqual(args, [HELPER_BINARY, "--sethostname", "copy-1"]);
    assert.ok(args?.[0]?.startsWith("/"));
    // A sandbox that runs without the helper has nothing trusted to run: its hostname stays.
    const spec = checkpointedSpec();
    spec.mounts = spec.mounts.filter((mount) => mount.destination !== HELPER_BINARY);
    assert.equal(hostnameExecArgs(spec, "copy-1"), undefined);
  });

  it("the helper's --sethostname sets the hostname of its UTS namespace, or exits 1 saying why", () => {
    // In a UTS namespace of its own (unshare, as root): the host's hostname is left alone.
    const inUts = (...args: string[]) =>
      // A helper without the mode would take it for a command to run as process 1, and wait.
      execFileSync(
        "unshare",
        ["--uts", "sh", "-c", `timeout -s KILL 10 "$0" "$@"; echo "exit $?"; cat /proc/sys/kernel/hostname`, DEFAULT_HELPER_PATH, ...args],
        {
          encoding: "utf8",
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
    assert.equal(inUts("--sethostname", "copy-1"), "exit 0\ncopy-1\n");
    assert.match(inUts("--sethostname", "x".repeat(65)), /^exit 1\n/, "longer than the kernel takes");
    assert.match(inUts("--sethostname"), /^exit 1\n/);
    const refused = (() => {
      try {
        execFileSync("timeout", ["-s", "KILL", "10", DEFAULT_HELPER_PATH, "--sethostname"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
        return "";
      } catch (error) {
        return String((error as { stderr?: string }).stderr);
      }
    })();
    assert.match(refused, /usage: --sethostname NAME/);
  });
});

describe("withoutGoTrace", () => {
  it("cuts the goroutine dump a runsc panic appends, and leaves other messages whole", () => {
    const panicked =
      "runsc restore: OCI runtime restore failed: header error: EOF: goroutine 24 [running]:\nruntime/debug.Stack()\n\truntime/debug/stack.go:24 +0x65\n: unknown";
    assert.equal(withoutGoTrace(panicked), "runsc restore: OCI runtime restore failed: header error: EOF (runsc's stack trace is in the agent's log)");
    assert.equal(withoutGoTrace("containerd is gone"), "containerd is gone");
  });
});

describe("checkpointError", () => {
  it("turns runsc's refusal to save TCP state into a FailedPrecondition that says what to do", () => {
    const connected = checkpointError(
      new Error(
        "checkpoint failed: encoding error at object tcp.endpoint{…}: save rejected due to unsupported networking state: endpoint cannot be saved in connected state: local 10.213.0.2:8080, remote 10.213.0.1:60034: path= /run/x: unknown",
      ),
      "sb-1",
    );
    assert.ok(connected instanceof FailedPreconditionError);
    assert.match(
      connected.message,
      /sandbox sb-1 holds TCP sockets .* \(a connection local 10\.213\.0\.2:8080, remote 10\.213\.0\.1:60034\).*TIME-WAIT.*then retry$/,
    );
    // Whether the sandbox runs on is not the refusal's to say: Debian's runsc stops it for some.
    assert.doesNotMatch(connected.message, /runs on/);
    const waited = checkpointError(
      new Error("checkpoint failed: encoding error at object tcp.endpoint{…}: endpoint still has waiters upon save: path= /x"),
      "sb-1",
    );
    assert.ok(waited instanceof FailedPreconditionError);
    assert.match(waited.message, /through epoll/);
  });

  it("leaves other failures as they are", () => {
    const other = checkpointError(new FsbError("unavailable", "containerd is gone"), "sb-1");
    assert.equal(other.code, "unavailable");
  });
});

describe("copyRunDirectory", () => {
  const dir = mkdtempSync(join(tmpdir(), "fsb-run-copy-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("copies files and directories, and leaves links, FIFOs and sockets out (a claim FIFO, or what a sandbox made)", async () => {
    const from = join(dir, "from");
    mkdirSync(join(from, "etc"), { recursive: true });
    writeFileSync(join(from, "command-start"), "started\n");
    writeFileSync(join(from, "etc", "hosts"), "127.0.0.1 localhost\n");
    symlinkSync("etc/hosts", join(from, "hosts-link"));
    execFileSync("mkfifo", [join(from, "claim"), join(from, "etc", "made-by-the-sandbox")]);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(from, "socket"), resolve));
    try {
      const to = join(dir, "to");
      copyRunDirectory(from, to);
      assert.deepEqual(readdirSync(to).sort(), ["command-start", "etc"]);
      assert.deepEqual(readdirSync(join(to, "etc")), ["hosts"]);
      assert.equal(readFileSync(join(to, "command-start"), "utf8"), "started\n");
      assert.equal(readFileSync(join(to, "etc", "hosts"), "utf8"), "127.0.0.1 localhost\n");
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe("a copied run directory's owners", () => {
  const dir = mkdtempSync(join(tmpdir(), "fsb-run-owners-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const ownerOf = (path: string) => {
    const { uid, gid } = statSync(path);
    return `${uid}:${gid}`;
  };
  /** A run directory as a sandbox running as USER 1000 leaves it: its own, what its helper wrote its, the agent's /etc files root's. */
  function sandboxRunDir(path: string, owner: { uid: number; gid: number } | undefined): void {
    mkdirSync(join(path, "etc"), { recursive: true });
    writeFileSync(join(path, "etc", "hosts"), "127.0.0.1 localhost\n");
    writeFileSync(join(path, "command-start"), "started\n");
    chownSync(join(path, "command-start"), 1000, 1000);
    if (owner) chownSync(path, owner.uid, owner.gid);
  }

  it("a checkpoint's copy keeps every entry's owner (cpSync alone makes them root's)", () => {
    assert.equal(process.getuid?.(), 0, "needs root to chown (npm test runs as root)");
    const runDir = join(dir, "sandbox");
    sandboxRunDir(runDir, { uid: 1000, gid: 1000 });
    const saved = join(dir, "saved");
    copyRunDirectory(runDir, saved);
    assert.equal(ownerOf(saved), "1000:1000");
    assert.equal(ownerOf(join(saved, "command-start")), "1000:1000");
    assert.equal(ownerOf(join(saved, "etc")), "0:0");
    assert.equal(ownerOf(join(saved, "etc", "hosts")), "0:0");
  });

  it("a restored copy's directory is the user's its helper runs as (as a cold create makes it), even from a root-owned saved copy", () => {
    assert.equal(process.getuid?.(), 0, "needs root to chown (npm test runs as root)");
    const saved = join(dir, "saved-before");
    sandboxRunDir(saved, undefined);
    const spec = checkpointedSpec();
    spec.process.user = { uid: 1000, gid: 1000 };
    const copy = join(dir, "copy");
    copyRunDirectory(saved, copy, runDirOwner(spec));
    assert.equal(ownerOf(copy), "1000:1000", "the helper, as USER 1000, can write its reports (exit-code…) there");
    assert.equal(ownerOf(join(copy, "command-start")), "1000:1000");
    assert.equal(ownerOf(join(copy, "etc", "hosts")), "0:0", "the agent's /etc files stay root's");
  });

  it("runDirOwner: the numeric non-root user of a sandbox's helper; none for root, a named user (root process 1) or no helper", () => {
    const spec = checkpointedSpec();
    assert.equal(runDirOwner(spec), undefined);
    spec.process.user = { uid: 1000, gid: 100 };
    assert.deepEqual(runDirOwner(spec), { uid: 1000, gid: 100 });
    spec.process.user = { uid: 0, gid: 1000 };
    assert.deepEqual(runDirOwner(spec), { uid: 0, gid: 1000 });
    spec.process.user = { uid: 1000, gid: 100 };
    spec.process.args = ["python3", "app.py"];
    assert.equal(runDirOwner(spec), undefined);
  });
});

describe("unsafeRunDirMounts", () => {
  const dir = mkdtempSync(join(tmpdir(), "fsb-run-links-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("names the mounts whose source in the run directory a link leads elsewhere, or that is gone", () => {
    const runDir = join(dir, "run", "sb-1");
    mkdirSync(join(runDir, "etc"), { recursive: true });
    writeFileSync(join(dir, "host-secret"), "secret");
    writeFileSync(join(runDir, "etc", "hosts"), "127.0.0.1 localhost\n");
    symlinkSync(join(dir, "host-secret"), join(runDir, "etc", "resolv.conf"));
    mkdirSync(join(dir, "elsewhere"));
    writeFileSync(join(dir, "elsewhere", "hostname"), "x");
    symlinkSync(join(dir, "elsewhere"), join(runDir, "linked-dir"));
    const mount = (source: string) => ({ destination: `/m/${source}`, type: "bind", source, options: ["rbind"] });
    const spec = {
      mounts: [
        mount(runDir),
        mount(join(runDir, "etc", "hosts")),
        mount(join(runDir, "etc", "resolv.conf")),
        mount(join(runDir, "linked-dir", "hostname")),
        mount(join(runDir, "etc", "gone")),
        mount(join(dir, "host-secret")),
      ],
    };
    assert.deepEqual(unsafeRunDirMounts(spec, runDir), {
      linked: [`/m/${join(runDir, "etc", "resolv.conf")}`, `/m/${join(runDir, "linked-dir", "hostname")}`],
      gone: [`/m/${join(runDir, "etc", "gone")}`],
    });
    // A dangling link is a link, not a file gone.
    symlinkSync(join(dir, "nowhere"), join(runDir, "etc", "dangling"));
    assert.deepEqual(unsafeRunDirMounts({ mounts: [mount(join(runDir, "etc", "dangling"))] }, runDir), {
      linked: [`/m/${join(runDir, "etc", "dangling")}`],
      gone: [],
    });
    // No mount in the run directory: nothing to check, even with the directory gone.
    assert.deepEqual(unsafeRunDirMounts({ mounts: [mount(join(dir, "host-secret"))] }, join(dir, "no-run-dir")), { linked: [], gone: [] });
  });

  it("takes a run directory reached through a link of the host's own (a state directory on a linked path) as it is", () => {
    mkdirSync(join(dir, "real", "sb-2", "etc"), { recursive: true });
    writeFileSync(join(dir, "real", "sb-2", "etc", "hosts"), "");
    symlinkSync(join(dir, "real"), join(dir, "linked-state"));
    const runDir = join(dir, "linked-state", "sb-2");
    assert.deepEqual(unsafeRunDirMounts({ mounts: [{ destination: "/etc/hosts", type: "bind", source: join(runDir, "etc", "hosts"), options: [] }] }, runDir), {
      linked: [],
      gone: [],
    });
  });
});

describe("checkpoint(): a save that fails, the run directory's bound, the record", () => {
  const dir = mkdtempSync(join(tmpdir(), "fsb-checkpoint-save-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let made = 0;

  /**
   * GvisorCheckpoints over a containerd whose one Shared gVisor sandbox `sb` (without the daemon)
   * runs, whose Tasks.Checkpoint fails with `saveError` (undefined: saves), and whose task is then `statusAfter`.
   */
  function checkpointsOver(saveError: Error | undefined, statusAfter: TaskStatus) {
    const root = join(dir, `case-${(made += 1)}`);
    const runDir = join(root, "run", "sb");
    mkdirSync(join(runDir, "etc"), { recursive: true });
    writeFileSync(join(runDir, "etc", "hosts"), "127.0.0.1 localhost\n");
    const spec = moveRunDir(checkpointedSpec(), TEMPLATE_RUN, runDir);
    spec.linux.namespaces = [{ type: "pid" }, { type: "network" }];
    const calls: string[] = [];
    const created: string[] = [];
    let status = TaskStatus.RUNNING;
    const client = {
      containers: {
        get: async () => ({
          container: {
            id: "sb",
            image: "img",
            snapshotKey: "sb",
            labels: {
              [LABEL_AGENT]: "gv-0",
              [LABEL_SANDBOX_ID]: "sb",
              [LABEL_NAME]: "source",
              [LABEL_POOL]: "gv",
              [LABEL_RUNTIME_TYPE]: "gvisor",
              [LABEL_ROOTFS_OVERLAY]: ROOTFS_OVERLAY_MEMORY,
            },
            runtime: {
              name: "io.containerd.runc.v2",
              options: { typeUrl: "containerd.runc.v1.Options", value: toBinary(RuncOptionsSchema, create(RuncOptionsSchema, { binaryName: "runsc-fsb" })) },
            },
            spec: { typeUrl: "", value: Buffer.from(JSON.stringify(spec)) },
          },
        }),
      },
      tasks: {
        get: async () => ({ process: { status, pid: 42 } }),
        checkpoint: async () => {
          calls.push("checkpoint");
          status = statusAfter;
          if (saveError) throw saveError;
        },
        delete: async () => calls.push("delete"),
        create: async (request: { options: { value: Uint8Array } }) => {
          calls.push("create");
          created.push(fromBinary(RuncOptionsSchema, request.options.value).criuImagePath);
        },
        start: async () => calls.push("start"),
      },
      snapshots: {
        mounts: async () => ({ mounts: [] }),
        stat: async ({ key }: { key: string }) => ({ info: { name: key, parent: "sha256:chain-then" } }),
      },
    };
    const checkpoints = gvisorCheckpoints(root, {
      client: client as unknown as ContainerdClient,
      runDir: () => runDir,
      logPath: () => join(root, "sb.log"),
      resolveImage: async () => ({ chainId: "sha256:0" }),
    });
    const checkpoint = (leaveStopped?: boolean) =>
      checkpoints.checkpoint({ sandboxId: "sb", checkpointId: "ck", namespace: "default", name: "one", ...(leaveStopped ? { leaveStopped } : {}) });
    const left = () => (existsSync(join(root, "checkpoints")) ? readdirSync(join(root, "checkpoints")) : []);
    return { checkpoint, calls, created, left, runDir, root };
  }
  const deadline = () => new FsbError("deadline_exceeded", "containerd containerd.services.tasks.v1.Tasks/Checkpoint: Deadline exceeded");

  it("on the agent's deadline with the task still running, leaves the image runsc may still be writing and does not say the sandbox runs on", async () => {
    const { checkpoint, calls, left } = checkpointsOver(deadline(), TaskStatus.RUNNING);
    await assert.rejects(
      checkpoint(),
      (error: Error) =>
        error instanceof FsbError &&
        error.code === "deadline_exceeded" &&
        /did not finish .*runsc may still be saving the sandbox, which then stops/.test(error.message),
    );
    assert.equal(left().length, 1);
    assert.match(left()[0] ?? "", /^ck\.partial-[0-9a-f]{8}$/, "left for a later list() to remove");
    assert.deepEqual(calls, ["checkpoint"], "nothing restored over a task that runs");
  });

  it("on the agent's deadline with the task stopped (runsc saved it), restores it in place from what runsc wrote, then removes that", async () => {
    const { checkpoint, calls, created, left } = checkpointsOver(deadline(), TaskStatus.STOPPED);
    await assert.rejects(
      checkpoint(),
      (error: Error) => error instanceof FsbError && /could not be saved after runsc stopped the sandbox .*; the sandbox runs on$/.test(error.message),
    );
    assert.deepEqual(calls, ["checkpoint", "delete", "create", "start"]);
    assert.match(created[0] ?? "", /\/checkpoints\/ck\.partial-[0-9a-f]{8}\/image$/);
    assert.deepEqual(left(), []);
  });

  it("refused by runsc with the task running: the sandbox runs on, the partial image is removed", async () => {
    const { checkpoint, calls, left } = checkpointsOver(
      new FsbError("internal", "checkpoint failed: endpoint still has waiters upon save: path= /x"),
      TaskStatus.RUNNING,
    );
    await assert.rejects(checkpoint(), (error: Error) => error instanceof FailedPreconditionError && /the sandbox runs on/.test(error.message));
    assert.deepEqual(calls, ["checkpoint"]);
    assert.deepEqual(left(), []);
  });

  it("refuses a sandbox whose run directory holds more than a checkpoint saves, before it stops anything", async () => {
    const { checkpoint, calls, left, runDir } = checkpointsOver(undefined, TaskStatus.STOPPED);
    writeFileSync(join(runDir, "written-by-the-sandbox"), Buffer.alloc(4 * 1024 * 1024 + 1));
    await assert.rejects(
      checkpoint(),
      (error: Error) =>
        error instanceof FailedPreconditionError &&
        /^sandbox sb's \/\.fast-sandbox\/run holds 4194325 bytes; at most 4194304 bytes in 1000 files and directories are saved with a checkpoint: remove the files .*; the sandbox runs on$/.test(
          error.message,
        ),
    );
    assert.deepEqual(calls, [], "the sandbox was not stopped");
    assert.deepEqual(left(), []);
  });

  it("records the snapshot the sandbox ran on (restores use its layers) and still the wrapper, for agents of earlier versions", async () => {
    const { checkpoint, calls, root } = checkpointsOver(undefined, TaskStatus.STOPPED);
    await checkpoint(true);
    assert.deepEqual(calls, ["checkpoint", "delete"]);
    const record = JSON.parse(readFileSync(join(root, "checkpoints", "ck", "checkpoint.json"), "utf8")) as Record<string, unknown>;
    assert.equal(record.snapshotParent, "sha256:chain-then");
    assert.equal(record.binaryName, "runsc-fsb");
    assert.equal(record.networkMode, "shared");
    assert.deepEqual(readdirSync(join(root, "checkpoints", "ck", "run", "etc")), ["hosts"]);
  });
});

describe("runDirectoryExcess and copyRunDirectory's bound", () => {
  const dir = mkdtempSync(join(tmpdir(), "fsb-run-bound-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("counts regular files' bytes and every entry, follows no link, and refuses to copy past either bound", () => {
    const from = join(dir, "from");
    mkdirSync(join(from, "etc"), { recursive: true });
    writeFileSync(join(from, "etc", "hosts"), "127.0.0.1 localhost\n");
    // A link to a large file of the host counts as a link, not as what it leads to.
    writeFileSync(join(dir, "large"), Buffer.alloc(8 * 1024 * 1024));
    symlinkSync(join(dir, "large"), join(from, "large-link"));
    symlinkSync(dir, join(from, "dir-link"));
    assert.equal(runDirectoryExcess(from), undefined);
    copyRunDirectory(from, join(dir, "copy-1"));
    assert.deepEqual(readdirSync(join(dir, "copy-1")), ["etc"]);

    writeFileSync(join(from, "etc", "written"), Buffer.alloc(4 * 1024 * 1024 - 20));
    assert.equal(runDirectoryExcess(from), undefined, "4 MiB exactly");
    writeFileSync(join(from, "etc", "written"), Buffer.alloc(4 * 1024 * 1024 - 19));
    assert.equal(runDirectoryExcess(from), "4194305 bytes");
    assert.throws(
      () => copyRunDirectory(from, join(dir, "copy-2")),
      (error: Error) => error instanceof RunDirectoryTooLargeError && error instanceof FailedPreconditionError && error.excess === "4194305 bytes",
    );
    assert.equal(existsSync(join(dir, "copy-2")), false, "nothing copied");
    rmSync(join(from, "etc", "written"));

    // 1,000 entries in all are copied; one more is refused (the walk stops there).
    mkdirSync(join(from, "many"));
    for (let index = 0; index < 995; index += 1) writeFileSync(join(from, "many", String(index)), "");
    assert.equal(runDirectoryExcess(from), undefined);
    writeFileSync(join(from, "many", "one-more"), "");
    assert.equal(runDirectoryExcess(from), "more than 1000 files and directories");
    assert.throws(() => copyRunDirectory(from, join(dir, "copy-3")), RunDirectoryTooLargeError);
  });
});

describe("restores from a checkpoint's record", () => {
  const dir = mkdtempSync(join(tmpdir(), "fsb-restore-record-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let made = 0;
  const THIS_AGENT = { shared: "/state/this-agent/runsc-network-none", isolated: "/state/this-agent/runsc-own-netns" };

  /**
   * GvisorCheckpoints over a containerd that takes any restore, with checkpoint `ck` written as an
   * agent took it: its record (`record` over a Shared one of sandbox `sb` taken by agent gv-old),
   * image and run directory. `goneParents`: snapshots that are not on the node (until `resolved`
   * resolves the image to one of them, as an unpack would make it again).
   */
  function restoresOver(record: Record<string, unknown>, options: { resolved?: string; goneParents?: string[] } = {}) {
    const root = join(dir, `case-${(made += 1)}`);
    const checkpoint = join(root, "checkpoints", "ck");
    const sourceRunDir = join(root, "run", "sb");
    mkdirSync(join(checkpoint, "image"), { recursive: true });
    mkdirSync(join(checkpoint, "run", "etc"), { recursive: true });
    writeFileSync(join(checkpoint, "run", "etc", "hosts"), "127.0.0.1 localhost\n");
    mkdirSync(join(sourceRunDir, "etc"), { recursive: true });
    writeFileSync(join(sourceRunDir, "etc", "hosts"), "127.0.0.1 localhost\n");
    const spec = moveRunDir(checkpointedSpec(), TEMPLATE_RUN, sourceRunDir);
    spec.linux.namespaces = [{ type: "pid" }, { type: "network" }];
    const written = {
      version: 1,
      checkpointId: "ck",
      namespace: "default",
      name: "one",
      pool: "gv",
      sourceSandboxId: "sb",
      sourceName: "source",
      image: "img",
      runtimeType: "gvisor",
      networkMode: "shared",
      command: ["sh", "-c", "loop"],
      workingDir: "/srv",
      createdAt: "2024-01-01T00:00:00.000Z",
      sizeBytes: 1,
      ociSpec: spec,
      runDir: sourceRunDir,
      // The checkpointing agent's wrapper, in its state directory: gone with that agent.
      binaryName: "/run/fast-sandbox/gv-old/runsc-network-none",
      envd: false,
      stdout: `file://${join(root, "sb.log")}`,
      stderr: `file://${join(root, "sb.log")}`,
      ...record,
    };
    for (const [key, value] of Object.entries(written)) if (value === undefined) delete (written as Record<string, unknown>)[key];
    writeFileSync(join(checkpoint, "checkpoint.json"), JSON.stringify(written));
    const gone = new Set(options.goneParents);
    const seen = { containerBinary: [] as string[], taskBinary: [] as string[], criuImagePath: [] as string[], parents: [] as string[] };
    let sourceStatus = TaskStatus.STOPPED;
    const client = {
      containers: {
        create: async (request: { container: { runtime: { options: { value: Uint8Array } } } }) => {
          seen.containerBinary.push(fromBinary(RuncOptionsSchema, request.container.runtime.options.value).binaryName);
        },
        delete: async () => undefined,
        get: async () => ({
          container: { id: "sb", labels: { [LABEL_AGENT]: "gv-0", [LABEL_SANDBOX_ID]: "sb" } },
        }),
      },
      snapshots: {
        prepare: async (request: { parent: string }) => {
          seen.parents.push(request.parent);
          if (gone.has(request.parent)) throw new NotFoundError(`parent snapshot ${request.parent} does not exist`);
          return { mounts: [] };
        },
        remove: async () => undefined,
        mounts: async () => ({ mounts: [] }),
      },
      tasks: {
        create: async (request: { options: { value: Uint8Array } }) => {
          const options = fromBinary(RuncOptionsSchema, request.options.value);
          seen.taskBinary.push(options.binaryName);
          seen.criuImagePath.push(options.criuImagePath);
        },
        start: async () => undefined,
        delete: async () => undefined,
        kill: async () => undefined,
        get: async ({ containerId }: { containerId: string }) => ({
          process: { pid: 7, status: containerId === "sb" ? sourceStatus : TaskStatus.RUNNING },
        }),
      },
    };
    const checkpoints = gvisorCheckpoints(root, {
      client: client as unknown as ContainerdClient,
      resolveImage: async () => {
        const chainId = options.resolved ?? "sha256:chain-then";
        gone.delete(chainId);
        return { chainId };
      },
      claimNetwork: async () => ({
        attachmentId: "a-1",
        netnsPath: "/run/netns/fsb-copy",
        address: "10.0.0.5",
        prepared: true,
        files: {},
        policyApplied: Promise.resolve(),
      }),
      runscFeatures: async () => ({ hostnameOnRestore: true }),
      runscBinary: (mode) => THIS_AGENT[mode],
    });
    const restore = (network: "shared" | "isolated" = "shared") =>
      checkpoints.restore({
        sandboxId: "copy",
        namespace: "default",
        name: "copy",
        pool: "gv",
        image: "",
        command: [],
        args: [],
        env: [],
        runtimeType: "gvisor",
        logPath: join(root, "copy.log"),
        network: { mode: network },
        fromCheckpoint: "ck",
      });
    const resume = () => {
      sourceStatus = TaskStatus.STOPPED;
      return checkpoints.resume("sb", "ck");
    };
    return { checkpoints, restore, resume, seen, root, checkpoint };
  }

  it("restores under this agent's wrapper, never the one its checkpointing agent's record names (its state directory may be gone)", async () => {
    const { restore, seen, checkpoint } = restoresOver({});
    await restore();
    assert.deepEqual(seen.containerBinary, [THIS_AGENT.shared]);
    assert.deepEqual(seen.taskBinary, [THIS_AGENT.shared], "the task options repeat this agent's wrapper");
    assert.deepEqual(seen.criuImagePath, [join(checkpoint, "image")]);
  });

  it("resumes in place under this agent's wrapper too", async () => {
    const { resume, seen } = restoresOver({});
    await resume();
    assert.deepEqual(seen.taskBinary, [THIS_AGENT.shared]);
  });

  it("takes the network mode of a record that lacks one from the wrapper it names, and restores under this agent's wrapper for it", async () => {
    const spec = moveRunDir(checkpointedSpec(), TEMPLATE_RUN, "/run/fast-sandbox/gv-old/run/sb");
    const { restore, seen } = restoresOver({ networkMode: undefined, binaryName: "/run/fast-sandbox/gv-old/runsc-own-netns", ociSpec: spec });
    await assert.rejects(restore("shared"), (error: Error) => error instanceof FailedPreconditionError && /with a isolated network/.test(error.message));
    await restore("isolated");
    assert.deepEqual(seen.containerBinary, [THIS_AGENT.isolated]);
    assert.deepEqual(seen.taskBinary, [THIS_AGENT.isolated]);
  });

  it("restores on the snapshot the checkpoint was taken on, even once the image's name points to other layers", async () => {
    const { restore, seen } = restoresOver({ snapshotParent: "sha256:chain-then" }, { resolved: "sha256:pulled-since" });
    await restore();
    assert.deepEqual(seen.parents, ["sha256:chain-then"]);
  });

  it("with that snapshot gone, restores on the image's name only when it still has the same layers", async () => {
    const same = restoresOver({ snapshotParent: "sha256:chain-then" }, { goneParents: ["sha256:chain-then"] });
    await same.restore();
    assert.deepEqual(same.seen.parents, ["sha256:chain-then", "sha256:chain-then"], "made again from the image, then used");
    const changed = restoresOver({ snapshotParent: "sha256:chain-then" }, { goneParents: ["sha256:chain-then"], resolved: "sha256:pulled-since" });
    await assert.rejects(
      changed.restore(),
      (error: Error) =>
        error instanceof FailedPreconditionError && /^checkpoint one cannot be restored: image img has changed since the checkpoint/.test(error.message),
    );
    assert.deepEqual(changed.seen.parents, ["sha256:chain-then"], "never on the new layers");
    assert.equal(existsSync(join(changed.root, "run", "copy")), false, "the copy's run directory is removed");
  });

  it("a record of an earlier version (no snapshot) restores on the image's name", async () => {
    const { restore, seen } = restoresOver({}, { resolved: "sha256:by-name" });
    await restore();
    assert.deepEqual(seen.parents, ["sha256:by-name"]);
  });

  it("refuses a checkpoint whose saved run directory holds more than a restore copies, and leaves nothing", async () => {
    const { restore, seen, root, checkpoint } = restoresOver({});
    writeFileSync(join(checkpoint, "run", "large"), Buffer.alloc(5 * 1024 * 1024));
    await assert.rejects(
      restore(),
      (error: Error) =>
        error instanceof FailedPreconditionError &&
        /^checkpoint one cannot be restored: its saved \/\.fast-sandbox\/run holds 5242900 bytes, and at most 4194304 bytes in 1000 files and directories are copied/.test(
          error.message,
        ),
    );
    assert.deepEqual(seen.containerBinary, []);
    assert.equal(existsSync(join(root, "run", "copy")), false);
  });
});

describe("list(): a delete cut short long ago", () => {
  const dir = mkdtempSync(join(tmpdir(), "fsb-list-deleting-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("is moved out of its name before it is removed: a crash during the removal never leaves it to read as complete", async () => {
    const directory = join(dir, "checkpoints");
    const checkpoint = join(directory, "ck");
    mkdirSync(join(checkpoint, "image"), { recursive: true });
    writeFileSync(join(checkpoint, "checkpoint.json"), "{}");
    writeFileSync(join(checkpoint, "deleting"), "");
    const longAgo = new Date(Date.now() - 3_600_000);
    utimesSync(join(checkpoint, "deleting"), longAgo, longAgo);
    const checkpoints = gvisorCheckpoints(dir, { directory });
    // The agent dies as the removal starts.
    const removed: string[] = [];
    const crash = mock.method(fsPromises, "rm", async (path: string) => {
      removed.push(path);
      throw new Error("the agent was killed");
    });
    syncBuiltinESMExports();
    try {
      await assert.rejects(checkpoints.list(), /the agent was killed/);
    } finally {
      crash.mock.restore();
      syncBuiltinESMExports();
    }
    const left = readdirSync(directory);
    assert.equal(left.length, 1);
    assert.match(left[0] ?? "", /^ck\.partial-deleted-[0-9a-f]{8}$/);
    assert.deepEqual(removed, [join(directory, left[0] ?? "")]);
    // The leftover is no checkpoint, and a list once it is old removes it.
    assert.deepEqual(await checkpoints.list(), []);
    utimesSync(join(directory, left[0] ?? ""), longAgo, longAgo);
    assert.deepEqual(await checkpoints.list(), []);
    assert.deepEqual(readdirSync(directory), []);
  });
});
