/**
 * The Kubernetes e2e suite: one cluster of the test harness for every case, with Fast Sandbox
 * deployed from config/ (CRDs from config/crd, RBAC from config/rbac) through the overlay in
 * deploy/. The fixture (test/support/kubernetes-suite.ts) starts the cluster and waits for the
 * janitor and the controller; each case lives in `<what-it-proves>/case.ts` with every manifest it
 * needs beside it, and registers its `describe` here; the last test removes everything and checks
 * that nothing of the run is left (processes, containers, tasks, snapshots, cgroups, files).
 *
 * A new case: write `<what-it-proves>/case.ts` exporting `registerCase(suite)`; every folder here
 * with a case.ts is found. Cases run in the order of their folder names, one at a time, on the same
 * cluster: each makes its own namespaces (`suite.createNamespace`) and removes what it makes outside
 * them. FSB_K8S_CASES=name,name runs only those cases (the setup and the final check always run).
 * What cases share lives in test/support: kubernetes-cases.ts (Sandboxes, pools, agent Pods,
 * controller replicas and Lease, watches, cleanup, failure diagnostics), containerd-contents.ts
 * (containers, tasks and snapshots in containerd) and pod-processes.ts (the Pods' local processes).
 *
 *   npm run build && node --conditions=development --import tsx --test test/e2e/kubernetes/suite.test.ts
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { KubernetesSuite, type RegisterCase } from "../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const only = (process.env.FSB_K8S_CASES ?? "")
  .split(",")
  .map((name) => name.trim())
  .filter(Boolean);
const names = readdirSync(HERE, { withFileTypes: true })
  .filter((entry) => entry.isDirectory() && existsSync(path.join(HERE, entry.name, "case.ts")))
  .map((entry) => entry.name)
  .filter((name) => only.length === 0 || only.includes(name))
  .sort();
for (const name of only) assert.ok(names.includes(name), `FSB_K8S_CASES names ${name}, which has no ${name}/case.ts here`);
const cases: RegisterCase[] = [];
for (const name of names) {
  const module = (await import(pathToFileURL(path.join(HERE, name, "case.ts")).href)) as { registerCase: RegisterCase };
  cases.push(module.registerCase);
}

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
