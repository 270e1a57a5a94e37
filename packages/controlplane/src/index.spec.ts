/**
 * The package's entries and what they load. The main entry is the embedded mode's (`fsb up`, the
 * benches): it must not load @kubernetes/client-node, which alone costs some 50 MiB of a control
 * plane's memory (docs/PERFORMANCE.md, "Footprint at scale"). The Kubernetes parts are
 * `@fast-sandbox/controlplane/kubernetes`.
 *
 * Each probe imports an entry in a fresh node (with this test's conditions, so the sources are what
 * is loaded) under a module hook that reports every module resolved inside @kubernetes/client-node.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";

const KUBERNETES_MARK = "loaded @kubernetes/client-node";

const HOOKS = `
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  if (resolved.url.includes("/node_modules/@kubernetes/client-node/") && !(context.parentURL ?? "").includes("/node_modules/@kubernetes/client-node/")) {
    process.stderr.write(${JSON.stringify(KUBERNETES_MARK)} + " from " + context.parentURL + "\\n");
  }
  return resolved;
}
`;

/** Imports `specifier` in a new node process and returns what the hook reported. */
function probe(specifier: string): { exports: string[]; kubernetesImporters: string[] } {
  const script = `
    import { register } from "node:module";
    register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(HOOKS)}`)});
    const entry = await import(${JSON.stringify(specifier)});
    process.stdout.write(JSON.stringify(Object.keys(entry)));
  `;
  const result = spawnSync(process.execPath, [...process.execArgv, "--input-type=module", "-e", script], {
    cwd: import.meta.dirname,
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(result.status, 0, `importing ${specifier} failed:\n${result.stderr}`);
  const kubernetesImporters = result.stderr
    .split("\n")
    .filter((line) => line.startsWith(KUBERNETES_MARK))
    .map((line) => line.slice(KUBERNETES_MARK.length + " from ".length));
  return { exports: JSON.parse(result.stdout) as string[], kubernetesImporters };
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
