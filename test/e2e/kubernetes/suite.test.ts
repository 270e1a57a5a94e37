/**
 * The Kubernetes e2e suite: one cluster of the test harness for every case, with Fast Sandbox
 * deployed from config/ (CRDs from config/crd, RBAC from config/rbac) through the overlay in
 * deploy/. The fixture (test/support/kubernetes-suite.ts) starts the cluster and waits for the
 * janitor and the controller; each case lives in `<what-it-proves>/case.ts` with every manifest it
 * needs beside it, and registers its `describe` here; the last test removes everything and checks
 * that nothing of the run is left (processes, containers, tasks, snapshots, cgroups, files).
 *
 * A new case: write `<what-it-proves>/case.ts` exporting `registerCase(suite)`, import it below and
 * add it to `cases`. Cases run in that order, one at a time, on the same cluster: each makes its own
 * namespaces (`suite.createNamespace`) and removes what it makes outside them.
 *
 *   npm run build && node --conditions=development --import tsx --test test/e2e/kubernetes/suite.test.ts
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { KubernetesSuite, type RegisterCase } from "../../support/kubernetes-suite.js";
import { registerCase as agentTemplateForTestsFollowsConfig } from "./agent-template-for-tests-follows-config/case.js";
import { registerCase as janitorRunsAsADaemonSet } from "./janitor-runs-as-a-daemonset/case.js";

const cases: RegisterCase[] = [agentTemplateForTestsFollowsConfig, janitorRunsAsADaemonSet];

describe("Fast Sandbox on Kubernetes (one cluster, deployed from config/)", () => {
  const suite = new KubernetesSuite();

  // Generous: on a fresh machine `cluster.sh up` builds the Kubernetes binaries first.
  before(() => suite.start(), { timeout: 60 * 60_000 });

  for (const register of cases) register(suite);

  let checked = false;
  it("removes everything it installed, and nothing of the run is left", { timeout: 10 * 60_000 }, async () => {
    checked = true;
    assert.deepEqual(await suite.removeEverything(), []);
  });

  // When `before` failed, the test above did not run: this removes what was made until then.
  after(
    async () => {
      const left = await suite.removeEverything();
      if (!checked) assert.deepEqual(left, []);
    },
    { timeout: 10 * 60_000 },
  );
});
