/**
 * A sandbox whose command cannot start is a create error with the reason, as `docker run` gives
 * it, and leaves nothing behind: no record, no slot, no container, task, snapshot, run directory
 * or log file — on runc and on gVisor. A command that starts and exits later is not an error.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { basename, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ValidationError, type CreateSandboxOptions } from "@fast-sandbox/sdk";
import { isPreparedInstance, preparedStock } from "../../support/containerd-contents.js";
import { BASE_IMAGE, containerdLeftovers, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

/** Files an agent keeps per sandbox on the host, under its state directory `<dataDir>/agents/<agent>`. */
function agentFiles(dataDir: string): string[] {
  const found: string[] = [];
  const agents = join(dataDir, "agents");
  for (const agent of readdirSync(agents)) {
    for (const kind of ["run", "logs"]) {
      try {
        for (const entry of readdirSync(join(agents, agent, kind))) found.push(`${agent}/${kind}/${entry}`);
      } catch {
        // not created yet
      }
    }
  }
  return found;
}

/**
 * The agents' files of sandboxes: those of their prepared instances in stock left out (the runc pool
 * keeps 2 by default; infrastructure, like their containers). An instance being made has its files
 * a moment before its container: what only such an instance could explain is looked at again for up
 * to 3 s, and reported when it stays.
 */
async function sandboxFiles(dataDir: string, containerdNamespace: string): Promise<string[]> {
  const deadline = Date.now() + 3_000;
  for (;;) {
    const files = agentFiles(dataDir);
    const stock = new Set(preparedStock(containerdNamespace));
    const left = files.filter((path) => !stock.has(basename(path).replace(/\.log$/, "")));
    if (!left.some((path) => isPreparedInstance(basename(path))) || Date.now() > deadline) return left;
    await sleep(100);
  }
}

describe("a create fails when the command cannot start, and leaves nothing", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    embedded = await startEmbedded({
      name: "command-start",
      pools: [
        // One slot each: a slot that a failed create kept would refuse the next create.
        pool("default", { maxSandboxesPerPod: 1 }),
        pool("untrusted", { maxSandboxesPerPod: 1, runtimeType: "gvisor" }),
      ],
    });
  });

  after(async () => {
    await embedded?.stop();
  });

  async function assertNothingLeft(): Promise<void> {
    const { client } = embedded;
    assert.deepEqual(await client.sandboxes.list({ namespace: "*" }), []);
    for (const agent of await client.pools.agents({ namespace: "*" })) assert.equal(agent.allocated, 0, `agent ${agent.name} holds a slot`);
    assert.deepEqual(containerdLeftovers(embedded.containerdNamespace), { containers: [], tasks: [], snapshots: [] });
    assert.deepEqual(await sandboxFiles(embedded.dataDir, embedded.containerdNamespace), []);
  }

  async function assertCreateFails(options: CreateSandboxOptions, message: string): Promise<void> {
    await assert.rejects(embedded.client.sandboxes.create(options), (thrown: Error) => {
      assert.ok(thrown instanceof ValidationError, `expected ValidationError, got ${thrown.constructor.name}: ${thrown.message}`);
      assert.equal(thrown.message, message);
      return true;
    });
    await assertNothingLeft();
  }

  const runc: CreateSandboxOptions = { pool: "default", image: BASE_IMAGE };

  it("refuses a command that is not in the sandbox's $PATH", async () => {
    await assertCreateFails({ ...runc, command: ["nosuch", "--flag"] }, 'spec.command: exec: "nosuch": executable file not found in $PATH');
  });

  it("looks the command up in the $PATH of the sandbox's env, like execvp", async () => {
    await assertCreateFails(
      { ...runc, command: ["sleep", "3600"], envs: { PATH: "/nowhere:/etc" } },
      'spec.command: exec: "sleep": executable file not found in $PATH',
    );
    const found = await embedded.client.sandboxes.create({ ...runc, command: ["sleep", "3600"], envs: { PATH: "/nowhere:/bin" } });
    assert.equal(found.status?.phase, "Running");
    await embedded.client.sandboxes.delete(found.metadata.name, { gracePeriodMs: 0 });
    await assertNothingLeft();
  });

  it("refuses a path that does not exist", async () => {
    await assertCreateFails({ ...runc, command: ["/usr/local/bin/nosuch"] }, 'spec.command: exec: "/usr/local/bin/nosuch": no such file or directory');
  });

  it("refuses a file that is not executable", async () => {
    await assertCreateFails({ ...runc, command: ["/etc/passwd"] }, 'spec.command: exec: "/etc/passwd": permission denied');
  });

  it("refuses a working directory that is not a directory", async () => {
    await assertCreateFails({ ...runc, command: ["sleep", "3600"], workingDir: "/etc/passwd" }, "spec.workingDir: chdir /etc/passwd: not a directory");
  });

  it("refuses a command that is not in $PATH on gVisor too", async () => {
    await assertCreateFails({ pool: "untrusted", image: BASE_IMAGE, command: ["nosuch"] }, 'spec.command: exec: "nosuch": executable file not found in $PATH');
  });

  it("creates a missing working directory, as docker run does, and starts the command in it", async () => {
    const sandbox = await embedded.client.sandboxes.create({ ...runc, command: ["sleep", "3600"], workingDir: "/srv/workspace" });
    assert.equal((await embedded.client.sandboxes.exec(sandbox.metadata.name, ["pwd"])).stdout, "/srv/workspace\n");
    await embedded.client.sandboxes.delete(sandbox.metadata.name, { gracePeriodMs: 0 });
    await assertNothingLeft();
  });

  it("keeps a sandbox whose command started and then failed, and says how it exited", async () => {
    const { client } = embedded;
    const sandbox = await client.sandboxes.create({ ...runc, command: ["sh", "-c", "exit 3"] });
    assert.equal(sandbox.status?.phase, "Running");
    await waitFor(
      async () => (await client.sandboxes.get(sandbox.metadata.name)).status?.conditions?.some((c) => c.type === "CommandExited") ?? false,
      20_000,
      "the CommandExited condition",
    );
    const exited = (await client.sandboxes.get(sandbox.metadata.name)).status?.conditions?.find((c) => c.type === "CommandExited");
    assert.equal(exited?.reason, "Failed");
    assert.match(exited?.message ?? "", /exited with code 3/);
    assert.equal((await client.sandboxes.exec(sandbox.metadata.name, ["true"])).exitCode, 0);
    await client.sandboxes.delete(sandbox.metadata.name, { gracePeriodMs: 0 });
    await assertNothingLeft();
  });
});
