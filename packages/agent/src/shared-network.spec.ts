/** Against the real iproute2 of this host (root): a process in a namespace of the spec's own stands for an agent in a Pod. */
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { exposeSharedNetwork, sharedNetworkName, withdrawSharedNetwork } from "./shared-network.js";

const POD_NETNS = `fsb-shared-spec-${process.pid}`;
const AGENT = `spec-${process.pid}`;
const exposed = `/run/netns/${sharedNetworkName(AGENT)}`;
const same = (a: string, b: string) => statSync(a).ino === statSync(b).ino && statSync(a).dev === statSync(b).dev;

let stateDir: string;
let inPod: ChildProcess;

before(() => {
  stateDir = mkdtempSync(join(tmpdir(), "fsb-shared-network-"));
  execFileSync("ip", ["netns", "add", POD_NETNS]);
  inPod = spawn("ip", ["netns", "exec", POD_NETNS, "sleep", "300"], { stdio: "ignore" });
});

after(async () => {
  inPod.kill("SIGKILL");
  await withdrawSharedNetwork(AGENT);
  execFileSync("ip", ["netns", "delete", POD_NETNS]);
  rmSync(stateDir, { recursive: true, force: true });
});

describe("exposeSharedNetwork", () => {
  it("names the agent's network namespace under /run/netns, keeps it when asked again, and copies the agent's resolver files", async () => {
    // `ip netns exec` becomes `sleep` once it has entered the namespace.
    const pid = inPod.pid ?? 0;
    for (let tries = 0; !same(`/proc/${pid}/ns/net`, `/run/netns/${POD_NETNS}`); tries++) {
      assert.ok(tries < 100, "the stand-in process entered its namespace");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const network = await exposeSharedNetwork({ agentName: AGENT, stateDir, ownNetns: `/proc/${pid}/ns/net`, pid });
    assert.equal(network.netnsPath, exposed);
    assert.ok(same(exposed, `/run/netns/${POD_NETNS}`), "the Pod's namespace, not this process's");
    assert.ok(!same(exposed, "/proc/self/ns/net"));
    assert.deepEqual(
      network.files.map((file) => file.destination),
      ["/etc/resolv.conf", "/etc/hosts"].filter((file) => existsSync(file)),
    );
    for (const file of network.files) {
      assert.ok(file.source.startsWith(stateDir), "a copy beside the agent's state, a host path containerd can bind");
      assert.equal(readFileSync(file.source, "utf8"), readFileSync(file.destination, "utf8"));
    }
    const again = await exposeSharedNetwork({ agentName: AGENT, stateDir, ownNetns: `/proc/${pid}/ns/net`, pid });
    assert.equal(again.netnsPath, exposed);
    assert.ok(same(exposed, `/run/netns/${POD_NETNS}`));
  });

  it("replaces a name left on another namespace (a previous Pod's), and withdraws it", async () => {
    // The name still points at the stand-in Pod's namespace: an agent in this process's namespace takes it over.
    const network = await exposeSharedNetwork({ agentName: AGENT, stateDir });
    assert.ok(same(network.netnsPath, "/proc/self/ns/net"));
    assert.ok(!same(network.netnsPath, `/run/netns/${POD_NETNS}`));
    await withdrawSharedNetwork(AGENT);
    assert.equal(existsSync(exposed), false);
    await withdrawSharedNetwork(AGENT);
  });
});
