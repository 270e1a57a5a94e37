/**
 * The leading controller replica dies (SIGKILL of its process) in the middle of a burst of creates
 * split over both replicas, and stays down until its Lease has expired: the fake kubelet restarts
 * it in the same Pod after a back-off, and the case kills every restart at once (a crash loop)
 * until the other replica holds the Lease — a restart within the Lease's duration would renew it
 * itself, since a replica's identity is its Pod's name. Afterwards:
 * - every create the surviving replica got is acknowledged (its fast path needs no leader);
 * - every acknowledged create exists as a Running Sandbox whose container runs; every
 *   unacknowledged one exists fully (Running) or not at all; once settled no Sandbox is left
 *   Pending or Bound (the new leader finishes or removes creates the dead one cut short);
 * - containerd holds exactly the sandboxes' containers, and the pool's status and both replicas'
 *   registries count exactly their slots;
 * - the other replica took the Lease and keeps it when the crashed one is back;
 * - the new leader finished or removed the cut-short creates without waiting out their grace: the
 *   creates' replica ran no more (it was crash-looping, then restarted).
 * The burst's sandboxes are compared before and after the crashed replica is back: what the new
 * leader settled alone must already be the truth.
 * Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe } from "node:test";
import { fileURLToPath } from "node:url";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { DEFAULT_FOREIGN_CREATE_GRACE_MS } from "../../../../packages/controlplane/src/kubernetes/kubernetes-control-plane.js";
import { namespaceContainers, runningTasks } from "../../../support/containerd-contents.js";
import {
  allocatedSlots,
  controllerLease,
  controllerReplicas,
  deleteCaseNamespace,
  getPool,
  itWithDiagnostics,
  listSandboxes,
  waitForReadyAgents,
} from "../../../support/kubernetes-cases.js";
import { BASE_IMAGE, SYSTEM_NAMESPACE, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";
import { killPodProcesses } from "../../../support/pod-processes.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "failover";
const SLOTS = 8;
/** Creates sent to the leader and to the follower, all at once (8 slots hold them all). */
const LEADER_CREATES = 5;
const FOLLOWER_CREATES = 3;
/**
 * A create cut short by the leader's death may be left Bound (its agent never got it) or Pending
 * (killed before it was bound); the new leader treats such a record as another replica's create in
 * flight until no replica that ran when it was written runs any more — here at once, the dead
 * leader's container crash-looping or restarted (kubernetes-replica-liveness.ts) — and at most for
 * DEFAULT_FOREIGN_CREATE_GRACE_MS (120 s, kubernetes-control-plane.ts). The timeout allows for the
 * longest wait, plus slack.
 */
const SETTLE_TIMEOUT_MS = 300_000;

interface Outcome {
  name: string;
  replica: "leader" | "follower";
  acknowledged: boolean;
  error?: string;
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("leader failover during a burst of creates", () => {
    let namespace = "";
    const clients: FastSandboxClient[] = [];

    const sandboxContainers = (): string[] => namespaceContainers(suite.containerdNamespace, namespace);

    before(async () => {
      namespace = await suite.createNamespace("failover");
      await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
      await waitForReadyAgents(suite, namespace, POOL, 2);
    });

    after(async () => {
      for (const client of clients) client.close();
      if (namespace) await deleteCaseNamespace(suite, namespace);
    });

    itWithDiagnostics(
      suite,
      () => namespace,
      "acknowledged creates run, the others exist fully or not at all, and the other replica leads",
      900_000,
      async () => {
        const leaseBefore = await controllerLease(suite);
        const all = await controllerReplicas(suite);
        const leader = all.find((replica) => replica.name === leaseBefore.holderIdentity);
        const follower = all.find((replica) => replica.name !== leaseBefore.holderIdentity);
        assert.ok(leader && follower && leader.ready && follower.ready && leader.pid > 0, `a leader and a follower: ${JSON.stringify({ leaseBefore, all })}`);
        const leaderClient = new FastSandboxClient({ url: leader.url, token: suite.apiToken });
        const followerClient = new FastSandboxClient({ url: follower.url, token: suite.apiToken });
        clients.push(leaderClient, followerClient);

        // The leader dies right after it acknowledged its first create, while its other creates run.
        let killedAt = 0;
        const killLeader = () => {
          if (killedAt) return;
          killedAt = Date.now();
          process.kill(-leader.pid, "SIGKILL");
        };
        const create = async (replica: Outcome["replica"], name: string): Promise<Outcome> => {
          try {
            await (replica === "leader" ? leaderClient : followerClient).sandboxes.create({
              namespace,
              name,
              pool: POOL,
              image: BASE_IMAGE,
              command: ["sleep", "3600"],
              requestId: `${name}-request`,
            });
            if (replica === "leader") killLeader();
            return { name, replica, acknowledged: true };
          } catch (error) {
            return { name, replica, acknowledged: false, error: String(error) };
          }
        };
        const outcomes = await Promise.all([
          ...Array.from({ length: LEADER_CREATES }, (_, index) => create("leader", `to-leader-${index}`)),
          ...Array.from({ length: FOLLOWER_CREATES }, (_, index) => create("follower", `to-follower-${index}`)),
        ]);
        console.error(`burst outcomes: ${JSON.stringify(outcomes)}`);
        assert.ok(killedAt > 0, "the leader acknowledged a create and was killed");
        assert.ok(
          outcomes.some((outcome) => outcome.replica === "leader" && !outcome.acknowledged),
          "the leader died with creates of the burst unanswered",
        );
        const followerFailures = outcomes.filter((outcome) => outcome.replica === "follower" && !outcome.acknowledged);
        assert.deepEqual(followerFailures, [], "every create sent to the surviving replica is acknowledged");

        // The dead leader stays down (each restart killed at once) until the follower holds the Lease.
        let restartsKilled = 0;
        const taken = await suite.eventually(
          "the other replica to take the Lease",
          async () => {
            restartsKilled += killPodProcesses(SYSTEM_NAMESPACE, leader.name);
            const now = await controllerLease(suite);
            return now.holderIdentity === follower.name ? now : undefined;
          },
          { timeoutMs: 120_000, intervalMs: 100 },
        );
        console.error(
          `the follower took the Lease ${Math.round((Date.now() - killedAt) / 1000)} s after the kill; restarts killed meanwhile: ${restartsKilled}`,
        );
        assert.equal(taken.leaseTransitions, (leaseBefore.leaseTransitions ?? 0) + 1, "one transition: from the dead leader to the follower");

        const takenAt = Date.now();

        const acknowledged = outcomes.filter((outcome) => outcome.acknowledged).map((outcome) => outcome.name);
        const burstNames = new Set(outcomes.map((outcome) => outcome.name));
        const runningBurst = async () => {
          const sandboxes = await listSandboxes(suite, namespace);
          const names = new Set(sandboxes.map((s) => s.metadata.name));
          return sandboxes.every((s) => s.status?.phase === "Running") && acknowledged.every((name) => names.has(name)) ? sandboxes : undefined;
        };
        const settledAlone = await suite.eventually("every sandbox Running, the acknowledged ones among them", runningBurst, {
          timeoutMs: SETTLE_TIMEOUT_MS,
          intervalMs: 500,
        });
        const settledAfterMs = Date.now() - takenAt;
        console.error(
          `settled ${Math.round(settledAfterMs / 1000)} s after the Lease was taken; sandboxes: ${settledAlone.map((s) => s.metadata.name).join(", ")}`,
        );
        // The new leader first saw the cut-short records when it took the Lease: their grace ran from then.
        assert.ok(
          settledAfterMs < DEFAULT_FOREIGN_CREATE_GRACE_MS,
          `settled ${settledAfterMs} ms after the Lease was taken: the cut-short creates' grace (${DEFAULT_FOREIGN_CREATE_GRACE_MS} ms) was waited out although their replica ran no more`,
        );

        await suite.eventually(
          "the crashed replica restarted by the kubelet and Ready",
          async () => {
            const now = (await controllerReplicas(suite)).find((replica) => replica.name === leader.name);
            return now && now.ready && now.restartCount > leader.restartCount && now.pid !== leader.pid;
          },
          { timeoutMs: 180_000, intervalMs: 500 },
        );
        const settled = (await runningBurst()) ?? [];
        assert.deepEqual(
          settled.map((s) => s.metadata.uid).sort(),
          settledAlone.map((s) => s.metadata.uid).sort(),
          "the crashed replica back, the burst's sandboxes are those the new leader settled alone",
        );
        assert.ok(
          settled.every((sandbox) => burstNames.has(sandbox.metadata.name)),
          "no sandbox but the burst's",
        );
        for (const sandbox of settled) assert.equal(sandbox.metadata.deletionTimestamp, undefined, `${sandbox.metadata.name} is not being deleted`);

        const ids = settled.map((s) => s.status?.sandboxID ?? "").sort();
        await suite.eventually("containerd to hold exactly the sandboxes' containers", () => JSON.stringify(sandboxContainers()) === JSON.stringify(ids), {
          timeoutMs: 60_000,
        });
        assert.ok(
          ids.every((id) => runningTasks(suite.containerdNamespace).includes(id)),
          "their tasks run",
        );
        for (const sandbox of settled) {
          const result = await followerClient.sandboxes.exec(sandbox.metadata.name, ["true"], { namespace });
          assert.equal(result.exitCode, 0, `exec in ${sandbox.metadata.name}`);
        }
        await suite.eventually("the pool's status to count exactly the sandboxes' slots", async () => {
          const status = (await getPool(suite, namespace, POOL)).status;
          return status?.sandboxes === settled.length && status.freeSlots === SLOTS - settled.length;
        });
        await suite.eventually("both replicas' registries to count exactly the sandboxes' slots", async () => {
          const counts = await Promise.all([leaderClient, followerClient].map((client) => allocatedSlots(client, namespace, POOL)));
          return counts.every((count) => count === settled.length);
        });

        const now = await controllerLease(suite);
        assert.equal(now.holderIdentity, follower.name, "the replica that came back did not take the Lease back");
        assert.ok(Date.parse(now.renewTime ?? "") > Date.parse(taken.renewTime ?? ""), "the new leader renews the Lease");

        for (const sandbox of settled) await followerClient.sandboxes.delete(sandbox.metadata.name, { namespace });
        assert.deepEqual(sandboxContainers(), [], "deleted sandboxes leave no container");
      },
    );
  });
}
