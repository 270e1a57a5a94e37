import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { BASE_IMAGE, containerdLeftovers, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

describe("a pool with runtimeType gvisor runs untrusted code under runsc", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    embedded = await startEmbedded({ name: "gvisor", pools: [pool("untrusted", { maxSandboxesPerPod: 2, runtimeType: "gvisor" })] });
  });

  after(async () => {
    await embedded?.stop();
  });

  it("creates the sandbox inside gVisor's kernel, execs in it and deletes it without leftovers", async () => {
    const { client, containerdNamespace } = embedded;
    const sandbox = await client.sandboxes.create({ pool: "untrusted", image: BASE_IMAGE, command: ["sh", "-c", "echo from-gvisor; sleep 3600"] });
    assert.equal(sandbox.status?.phase, "Running");
    await waitFor(
      async () => {
        let text = "";
        for await (const chunk of client.sandboxes.logs(sandbox.metadata.name)) text += new TextDecoder().decode(chunk);
        return text.includes("from-gvisor");
      },
      20_000,
      "the sandbox's output",
    );
    // gVisor's own kernel answers: its dmesg is the Sentry's boot log, not the host's.
    const dmesg = await client.sandboxes.exec(sandbox.metadata.name, ["dmesg"]);
    assert.equal(dmesg.exitCode, 0);
    assert.match(dmesg.stdout, /gVisor/i);
    // The spec's seccomp profile holds inside gVisor's kernel too (runsc --oci-seccomp): a filter is on
    // every process, and a user namespace — which the profile refuses — cannot be made.
    const seccomp = await client.sandboxes.exec(sandbox.metadata.name, ["sh", "-c", "grep '^Seccomp:' /proc/self/status; unshare -U true; echo unshare=$?"]);
    assert.match(seccomp.stdout, /^Seccomp:\s+2$/m, JSON.stringify(seccomp));
    assert.match(seccomp.stdout, /^unshare=[1-9]/m, JSON.stringify(seccomp));
    assert.match(seccomp.stderr, /not permitted/i, JSON.stringify(seccomp));
    const exit = await client.sandboxes.exec(sandbox.metadata.name, ["sh", "-c", "echo err >&2; exit 5"]);
    assert.deepEqual(exit, { exitCode: 5, stdout: "", stderr: "err\n" });
    // Its agent reads the cgroup runsc put the whole sandbox in (the Sentry and gofer included).
    const stats = await client.sandboxes.stats(sandbox.metadata.name);
    assert.ok(stats.memoryUsedBytes > 1 << 20, `memory ${stats.memoryUsedBytes}`);
    assert.ok(stats.cpuUsageNanos > 0 && stats.pids >= 1, JSON.stringify(stats));
    await client.sandboxes.delete(sandbox.metadata.name);
    assert.deepEqual(containerdLeftovers(containerdNamespace), { containers: [], tasks: [], snapshots: [] });
  });
});
