/**
 * The package's entries and what they load. The main entry is the embedded mode's (`fsb up`, the
 * benches): it must not load @kubernetes/client-node, which alone costs some 50 MiB of a control
 * plane's memory (docs/PERFORMANCE.md, "Footprint at scale"). The Kubernetes parts are
 * `@fast-sandbox/controlplane/kubernetes`. Each probe imports an entry in a fresh node
 * (test/support/loaded-packages.ts) and prints the entry's exports.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { loadedPackages } from "../../../test/support/loaded-packages.js";

/** Imports `specifier` in a new node process: its exports, and the modules that imported the Kubernetes client. */
function probe(specifier: string): { exports: string[]; kubernetesImporters: string[] } {
  const { status, stdout, stderr, importers } = loadedPackages(
    `const entry = await import(${JSON.stringify(specifier)}); process.stdout.write(JSON.stringify(Object.keys(entry)));`,
    import.meta.dirname,
  );
  assert.equal(status, 0, `importing ${specifier} failed:\n${stderr}`);
  return { exports: JSON.parse(stdout) as string[], kubernetesImporters: importers.get("@kubernetes/client-node") ?? [] };
}

test("the main entry (the embedded mode) does not load @kubernetes/client-node", () => {
  const { exports, kubernetesImporters } = probe("@fast-sandbox/controlplane");
  assert.ok(exports.includes("startEmbeddedControlPlane"), `the main entry exports: ${exports.join(", ")}`);
  assert.deepEqual(kubernetesImporters, [], "modules of the main entry that import @kubernetes/client-node");
});

test("the kubernetes entry holds the Kubernetes store and composition roots, and does load the client", () => {
  const { exports, kubernetesImporters } = probe("@fast-sandbox/controlplane/kubernetes");
  for (const name of ["openKubernetesResourceStore", "startKubernetesControlPlane", "startKubernetesSandboxProxy"]) {
    assert.ok(exports.includes(name), `${name} among ${exports.join(", ")}`);
  }
  assert.notDeepEqual(kubernetesImporters, [], "the probe sees the client loaded when it is");
});
