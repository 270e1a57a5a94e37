import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Connection, FastSandbox } from "@fast-sandbox/sdk";
import { recordedContainerOfSandbox, runningTasks } from "../../support/containerd-contents.js";
import { BASE_IMAGE, containerdLeftovers, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";
import { sandboxCgroup } from "../../support/sandbox-cgroup.js";
import { GVISOR_PIDS_HEADROOM } from "../../../packages/agent/src/containerd/oci-spec.js";

/** Starts a thread, then tries a vsock socket; prints what happened to each. */
const PROBE_SOURCE = `#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
static void *run(void *arg) { return arg; }
int main(void) {
  pthread_t thread;
  int failed = pthread_create(&thread, NULL, run, NULL);
  printf("pthread_create: %d\\n", failed);
  if (!failed) pthread_join(thread, NULL);
  int fd = socket(40 /* AF_VSOCK */, SOCK_STREAM, 0);
  if (fd < 0) printf(errno == 97 ? "vsock: refused (errno 97)\\n" : "vsock: refused\\n"); else printf("vsock: socket %d\\n", fd);
  return 0;
}
`;

/** A pool's `pids` below what gVisor's own threads take on the host (~80 idle here). */
const SMALL_PIDS = 16;
/** The untrusted pool's disk limit, measured every half second (10 s by default). */
const DISK_LIMIT = "16Mi";
process.env.FSB_DISK_CHECK_INTERVAL_MS = "500";

describe("a pool with runtimeType gvisor runs untrusted code under runsc", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    embedded = await startEmbedded({
      name: "gvisor",
      pools: [
        pool("untrusted", { maxSandboxesPerPod: 2, runtimeType: "gvisor", sandboxResources: { ephemeralStorage: DISK_LIMIT } }),
        pool("few-pids", { maxSandboxesPerPod: 1, runtimeType: "gvisor", sandboxResources: { pids: SMALL_PIDS } }),
        pool("runc", { maxSandboxesPerPod: 1 }),
      ],
    });
  });

  after(async () => {
    await embedded?.stop();
  });

  it("creates the sandbox inside gVisor's kernel, execs in it and deletes it without leftovers", async () => {
    const { client, containerdNamespace } = embedded;
    // The command reports its seccomp mode and whether it can make a user namespace (the profile refuses one).
    const command = "grep '^Seccomp:' /proc/self/status; unshare -U true; echo unshare=$?; echo from-gvisor; sleep 3600";
    const sandbox = await client.sandboxes.create({ pool: "untrusted", image: BASE_IMAGE, command: ["sh", "-c", command] });
    assert.equal(sandbox.status?.phase, "Running");
    let output = "";
    await waitFor(
      async () => {
        output = "";
        for await (const chunk of client.sandboxes.logs(sandbox.metadata.name)) output += new TextDecoder().decode(chunk);
        return output.includes("from-gvisor");
      },
      20_000,
      "the sandbox's output",
    );
    // The spec's seccomp profile holds inside gVisor's kernel too (runsc --oci-seccomp), for process 1
    // and what it starts (the command, the in-sandbox daemon's processes).
    assert.match(output, /^Seccomp:\s+2$/m, output);
    assert.match(output, /^unshare=[1-9]/m, output);
    assert.match(output, /not permitted/i, output);
    // gVisor's own kernel answers: its dmesg is the Sentry's boot log, not the host's.
    const dmesg = await client.sandboxes.exec(sandbox.metadata.name, ["dmesg"]);
    assert.equal(dmesg.exitCode, 0);
    assert.match(dmesg.stdout, /gVisor/i);
    const exit = await client.sandboxes.exec(sandbox.metadata.name, ["sh", "-c", "echo err >&2; exit 5"]);
    assert.deepEqual(exit, { exitCode: 5, stdout: "", stderr: "err\n" });
    // The helper's directory is a mount point in gVisor's kernel too: it cannot be renamed away.
    const moved = await client.sandboxes.exec(sandbox.metadata.name, ["sh", "-c", "mv /.fast-sandbox /.moved; echo mv=$?; ls /.fast-sandbox"]);
    assert.match(moved.stdout + moved.stderr, /busy/i, JSON.stringify(moved));
    assert.match(moved.stdout, /^mv=[1-9]/m, JSON.stringify(moved));
    assert.match(moved.stdout, /^helper$/m, JSON.stringify(moved));
    // runsc's control socket (Debian's runsc: abstract, `@runsc-sandbox.<id>`, root and nobody let in)
    // is in runsc's own network namespace, out of reach of the host's processes (and of the runc
    // sandboxes that share the host's network).
    const containerId = await recordedContainerOfSandbox(containerdNamespace, sandbox.status?.sandboxID ?? "");
    const socket = `@runsc-sandbox.${containerId}`;
    assert.ok(!readFileSync("/proc/net/unix", "utf8").includes(socket), `${socket} is in the host's network namespace`);
    assert.ok(execFileSync("ip", ["netns", "exec", "fsb-runsc", "cat", "/proc/net/unix"], { encoding: "utf8" }).includes(socket), `${socket} is in fsb-runsc`);
    // Its agent reads the cgroup runsc put the whole sandbox in (the Sentry and gofer included).
    const stats = await client.sandboxes.stats(sandbox.metadata.name);
    assert.ok(stats.memoryUsedBytes > 1 << 20, `memory ${stats.memoryUsedBytes}`);
    assert.ok(stats.cpuUsageNanos > 0 && stats.pids >= 1, JSON.stringify(stats));
    await client.sandboxes.delete(sandbox.metadata.name);
    assert.deepEqual(containerdLeftovers(containerdNamespace), { containers: [], tasks: [], snapshots: [] });
  });

  it("its command's processes start threads (glibc 2.34+ clone3) and are refused vsock sockets, as a runc sandbox's are", async () => {
    // A static glibc program (this host's gcc): pthread_create tries clone3 first, and falls back to
    // clone on ENOSYS only; then socket(AF_VSOCK), which the profile refuses.
    const work = mkdtempSync(join(tmpdir(), "fsb-gvisor-threads-"));
    try {
      writeFileSync(join(work, "probe.c"), PROBE_SOURCE);
      execFileSync("gcc", ["-static", "-O2", "-pthread", "-o", join(work, "probe"), join(work, "probe.c")]);
      const probe = readFileSync(join(work, "probe"));
      const connection = new Connection({ url: embedded.controlPlane.url, token: embedded.token });
      const results: Record<string, string> = {};
      try {
        for (const poolName of ["untrusted", "runc"]) {
          // The command tree, not an exec (a gVisor sandbox's execs run without the profile): it waits for the probe, then runs it.
          const waitThenRun =
            "while [ ! -x /tmp/probe ]; do sleep 0.1; done; /tmp/probe > /tmp/probe.out 2>&1; mv /tmp/probe.out /tmp/probe.done; exec sleep 3600";
          const sandbox = await FastSandbox.create({ connection, pool: poolName, command: ["sh", "-c", waitThenRun] });
          try {
            await sandbox.files.write("/tmp/probe.upload", new Uint8Array(probe));
            await sandbox.commands.run("chmod 755 /tmp/probe.upload && mv /tmp/probe.upload /tmp/probe");
            await waitFor(() => sandbox.files.exists("/tmp/probe.done"), 20_000, `${poolName}: the probe's end`);
            results[poolName] = String(await sandbox.files.read("/tmp/probe.done"));
          } finally {
            await sandbox.kill();
          }
        }
      } finally {
        connection.close();
      }
      assert.match(results.untrusted ?? "", /^pthread_create: 0$/m, results.untrusted);
      assert.match(results.untrusted ?? "", /^vsock: refused$/m, results.untrusted);
      assert.match(results.runc ?? "", /^pthread_create: 0$/m, results.runc);
      assert.match(results.runc ?? "", /^vsock: refused \(errno 97\)$/m, results.runc);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  it("a disk limit counts what a gVisor sandbox writes to its run directory (evicted past it), not its root file system's changes (its memory)", async () => {
    const { client } = embedded;
    const sandbox = await client.sandboxes.create({ pool: "untrusted", image: BASE_IMAGE, command: ["sleep", "3600"] });
    const write = (path: string) => ["sh", "-c", `dd if=/dev/urandom of=${path} bs=1048576 count=24 2>/dev/null && sync && echo written`];
    // 24 MiB in the root file system: gVisor keeps it in the sandbox's memory (runsc's overlay), not on the node's disk.
    assert.equal((await client.sandboxes.exec(sandbox.metadata.name, write("/in-memory"))).stdout, "written\n");
    await sleep(2_000); // four checks
    assert.equal((await client.sandboxes.get(sandbox.metadata.name)).status?.phase, "Running");
    // 24 MiB in its run directory: a file of the node's disk (through the gofer), past the 16Mi limit.
    await client.sandboxes.exec(sandbox.metadata.name, write("/.fast-sandbox/run/on-disk")).catch(() => undefined);
    await waitFor(async () => (await client.sandboxes.get(sandbox.metadata.name)).status?.phase === "Lost", 30_000, "the gVisor sandbox Lost");
    const ready = (await client.sandboxes.get(sandbox.metadata.name)).status?.conditions?.find((c) => c.type === "Ready");
    assert.equal(ready?.reason, "Evicted");
    assert.match(ready?.message ?? "", /went past its limit of 16\.00 MiB/);
    await client.sandboxes.delete(sandbox.metadata.name, { gracePeriodMs: 0 });
  });

  it("a pool's small pids limit leaves gVisor's own threads room: the sandbox runs and starts processes, its host limit the pool's plus gVisor's", async () => {
    const { client, containerdNamespace, cgroupRoot } = embedded;
    const sandbox = await client.sandboxes.create({ pool: "few-pids", image: BASE_IMAGE, command: ["sleep", "3600"] });
    const containerId = await recordedContainerOfSandbox(containerdNamespace, sandbox.status?.sandboxID ?? "");
    const v2 = existsSync("/sys/fs/cgroup/cgroup.controllers");
    const cgroup = sandboxCgroup(v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/pids", cgroupRoot, containerId);
    assert.equal(readFileSync(join(cgroup, "pids.max"), "utf8").trim(), String(SMALL_PIDS + GVISOR_PIDS_HEADROOM));
    // More host tasks than the pool's limit: gVisor's threads, which its processes do not pay for.
    const hostTasks = Number(readFileSync(join(cgroup, "pids.current"), "utf8").trim());
    assert.ok(hostTasks > SMALL_PIDS, `the sandbox's cgroup holds ${hostTasks} tasks, gVisor's own among them`);
    const started = await client.sandboxes.exec(sandbox.metadata.name, ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 600 & done; echo started"]);
    assert.deepEqual(started, { exitCode: 0, stdout: "started\n", stderr: "" });
    const after = await client.sandboxes.exec(sandbox.metadata.name, ["sh", "-c", "ps | grep -c '[s]leep 600'"]);
    assert.equal(after.stdout.trim(), "8", JSON.stringify(after));
    assert.ok(runningTasks(containerdNamespace).includes(containerId), "its task still runs");
    await client.sandboxes.delete(sandbox.metadata.name);
    assert.deepEqual(containerdLeftovers(containerdNamespace), { containers: [], tasks: [], snapshots: [] });
  });
});
