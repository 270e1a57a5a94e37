import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { pino } from "pino";
import { FailedPreconditionError, FsbError } from "@fast-sandbox/api";
import { DEFAULT_HELPER_PATH } from "../agent-config.js";
import { LABEL_AGENT, LABEL_NAME, LABEL_POOL, LABEL_SANDBOX_ID } from "../runtime/runtime.js";
import {
  GvisorCheckpoints,
  LABEL_ROOTFS_OVERLAY,
  ROOTFS_OVERLAY_MEMORY,
  checkpointError,
  copyRunDirectory,
  copySpec,
  hostnameExecArgs,
  moveRunDir,
  runDirOwner,
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
      /sandbox sb-1 holds TCP sockets .* \(a connection local 10\.213\.0\.2:8080, remote 10\.213\.0\.1:60034\).*TIME-WAIT.*the sandbox runs on/,
    );
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

  it("a checkpoint's copy keeps every entry's owner (cpSync alone makes them root's)", { skip: process.getuid?.() !== 0 && "needs root to chown" }, () => {
    const runDir = join(dir, "sandbox");
    sandboxRunDir(runDir, { uid: 1000, gid: 1000 });
    const saved = join(dir, "saved");
    copyRunDirectory(runDir, saved);
    assert.equal(ownerOf(saved), "1000:1000");
    assert.equal(ownerOf(join(saved, "command-start")), "1000:1000");
    assert.equal(ownerOf(join(saved, "etc")), "0:0");
    assert.equal(ownerOf(join(saved, "etc", "hosts")), "0:0");
  });

  it(
    "a restored copy's directory is the user's its helper runs as (as a cold create makes it), even from a root-owned saved copy",
    { skip: process.getuid?.() !== 0 && "needs root to chown" },
    () => {
      const saved = join(dir, "saved-before");
      sandboxRunDir(saved, undefined);
      const spec = checkpointedSpec();
      spec.process.user = { uid: 1000, gid: 1000 };
      const copy = join(dir, "copy");
      copyRunDirectory(saved, copy, runDirOwner(spec));
      assert.equal(ownerOf(copy), "1000:1000", "the helper, as USER 1000, can write its reports (exit-code…) there");
      assert.equal(ownerOf(join(copy, "command-start")), "1000:1000");
      assert.equal(ownerOf(join(copy, "etc", "hosts")), "0:0", "the agent's /etc files stay root's");
    },
  );

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

describe("a checkpoint whose save fails", () => {
  const dir = mkdtempSync(join(tmpdir(), "fsb-checkpoint-save-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let made = 0;

  /**
   * GvisorCheckpoints over a containerd whose one Shared gVisor sandbox `sb` (without the daemon)
   * runs, whose Tasks.Checkpoint fails with `saveError`, and whose task is then `statusAfter`.
   */
  function checkpointsOver(saveError: Error, statusAfter: TaskStatus) {
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
          throw saveError;
        },
        delete: async () => calls.push("delete"),
        create: async (request: { options: { value: Uint8Array } }) => {
          calls.push("create");
          created.push(fromBinary(RuncOptionsSchema, request.options.value).criuImagePath);
        },
        start: async () => calls.push("start"),
      },
      snapshots: { mounts: async () => ({ mounts: [] }) },
    };
    const checkpoints = new GvisorCheckpoints({
      client: client as unknown as ContainerdClient,
      snapshotter: "overlayfs",
      directory: join(root, "checkpoints"),
      agentName: "gv-0",
      execFiles: {} as ExecFiles,
      runDir: () => runDir,
      logPath: () => join(root, "sb.log"),
      cgroupsPath: (id) => `/fsb/${id}`,
      removeCgroup: async () => undefined,
      killCgroup: async () => 0,
      resolveImage: async () => ({ chainId: "sha256:0" }),
      claimNetwork: () => Promise.reject(new Error("not used")),
      refillNetworks: () => undefined,
      ownerLabels: () => ({}),
      owns: () => true,
      exitedWithin: async () => true,
      shimGroup: () => undefined,
      runscFeatures: () => Promise.reject(new Error("not used")),
      logger: pino({ level: "silent" }),
    });
    const checkpoint = () => checkpoints.checkpoint({ sandboxId: "sb", checkpointId: "ck", namespace: "default", name: "one" });
    const left = () => readdirSync(join(root, "checkpoints"));
    return { checkpoint, calls, created, left };
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
});
