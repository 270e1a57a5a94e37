/**
 * A gVisor sandbox's view of its cgroup, on a current runsc (built from the Go module proxy by
 * scripts/build-runsc.sh, once; cached outside the repository): gVisor's kernel serves its own
 * cgroupfs at /sys/fs/cgroup, a v1 layout whose memory limit is the one the sandbox was given, and
 * nothing of the host's cgroup path shows in it. What the sandbox writes there stays in gVisor's
 * kernel: the host's limit on the sandbox holds. Debian 12's runsc (20221219, the agents' default,
 * gvisor-pool.test.ts) leaves the mount out, so its sandboxes have no such view.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "../../support/containerd.js";
import { recordedContainerOfSandbox } from "../../support/containerd-contents.js";
import { BASE_IMAGE, containerdLeftovers, pool, startEmbedded, type EmbeddedCase } from "../../support/embedded.js";
import { sandboxCgroup } from "../../support/sandbox-cgroup.js";

/** The memory limit of the pool's sandboxes (the Sentry and its gofer count against it too), and the same in bytes. */
const MEMORY = "128Mi";
const MEMORY_BYTES = 128 * 2 ** 20;

/**
 * Run inside the sandbox: its /proc/self/cgroup, then the memory limit it reads at /sys/fs/cgroup
 * (v2's memory.max, or v1's memory controller, whichever layout the kernel serves), then what a
 * write of a lower limit there answers.
 */
const CGROUP_VIEW_SCRIPT = [
  "cat /proc/self/cgroup",
  "if [ -e /sys/fs/cgroup/cgroup.controllers ]; then f=/sys/fs/cgroup/memory.max; else f=/sys/fs/cgroup/memory/memory.limit_in_bytes; fi",
  'limit=$(cat "$f"); echo "limit=$limit"',
  'echo $((limit / 2)) > "$f"; echo "write=$?"',
].join("\n");

/** The host's memory limit on the cgroup of container `containerId`, found under the case's cgroup root. */
function hostMemoryLimit(cgroupRoot: string, containerId: string): string {
  const v2 = existsSync("/sys/fs/cgroup/cgroup.controllers");
  const cgroup = sandboxCgroup(v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory", cgroupRoot, containerId);
  return readFileSync(join(cgroup, v2 ? "memory.max" : "memory.limit_in_bytes"), "utf8").trim();
}

describe("a gVisor sandbox on a current runsc reads its own memory limit at /sys/fs/cgroup, and nothing of the host's cgroup", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    // The agents the embedded control plane starts inherit this process's environment.
    process.env.FSB_RUNSC_PATH = execFileSync("bash", ["scripts/build-runsc.sh"], {
      cwd: REPO_ROOT,
      encoding: "utf8",
      timeout: 30 * 60_000,
      stdio: ["ignore", "pipe", "inherit"],
    }).trim();
    embedded = await startEmbedded({
      name: "gvisor-cgroup",
      pools: [pool("untrusted", { maxSandboxesPerPod: 1, runtimeType: "gvisor", sandboxResources: { memory: MEMORY } })],
    });
  });

  after(async () => {
    await embedded?.stop();
    delete process.env.FSB_RUNSC_PATH;
  });

  it("shows the sandbox its memory limit in gVisor's cgroupfs, no host cgroup path, and keeps its writes from the host", async () => {
    const { client, containerdNamespace, cgroupRoot } = embedded;
    const sandbox = await client.sandboxes.create({ pool: "untrusted", image: BASE_IMAGE, command: ["sleep", "3600"] });
    const containerId = await recordedContainerOfSandbox(containerdNamespace, sandbox.status?.sandboxID ?? "");
    const view = await client.sandboxes.exec(sandbox.metadata.name, ["sh", "-c", CGROUP_VIEW_SCRIPT]);
    const report = JSON.stringify(view);
    // gVisor's kernel names its own cgroups (after the container); the host's path (the agents'
    // cgroup root and the sandbox's parent there) shows nowhere.
    const [cgroupLines = ""] = view.stdout.split("\nlimit=");
    assert.ok(cgroupLines.trim().length > 0, report);
    assert.ok(!view.stdout.includes(cgroupRoot), report);
    // Its limit, where runtimes that size themselves look for it.
    assert.match(view.stdout, new RegExp(`^limit=${MEMORY_BYTES}$`, "m"), report);
    // Whatever gVisor's kernel makes of a write there, the host's limit on the sandbox holds.
    assert.match(view.stdout, /^write=\d+$/m, report);
    assert.equal(hostMemoryLimit(cgroupRoot, containerId), String(MEMORY_BYTES));
    await client.sandboxes.delete(sandbox.metadata.name);
    assert.deepEqual(containerdLeftovers(containerdNamespace), { containers: [], tasks: [], snapshots: [] });
  });
});
