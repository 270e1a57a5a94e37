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
    // Its agent reads the cgroup runsc put the whole sandbox in (the Sentry and gofer included).
    const stats = await client.sandboxes.stats(sandbox.metadata.name);
    assert.ok(stats.memoryUsedBytes > 1 << 20, `memory ${stats.memoryUsedBytes}`);
    assert.ok(stats.cpuUsageNanos > 0 && stats.pids >= 1, JSON.stringify(stats));
    await client.sandboxes.delete(sandbox.metadata.name);
    assert.deepEqual(containerdLeftovers(containerdNamespace), { containers: [], tasks: [], snapshots: [] });
  });
});
