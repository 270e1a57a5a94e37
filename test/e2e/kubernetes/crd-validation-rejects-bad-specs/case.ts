/**
 * The API server rejects bad Sandbox and SandboxPool specs written with `kubectl apply`, through the
 * CRDs' schemas (config/crd, generated from packages/api/src/schema), with a message naming the
 * field — the same field the embedded mode's validation (validateSandbox / validateSandboxPool of
 * @fast-sandbox/api) names for the same object — and nothing is created. Each bad object is
 * valid-sandbox.yaml or valid-pool.yaml with one change; both are first shown to be accepted
 * (server-side dry run, and the embedded validation). The embedded validation's cross-field rules
 * (poolMin ≤ poolMax, bufferMin ≤ bufferMax, an egress allowList has entries and other policies
 * none, egress only on an Isolated network) need CEL rules (x-kubernetes-validations) in the CRD.
 * Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { ValidationError, validateSandbox, validateSandboxPool } from "@fast-sandbox/api";
import type { KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));

type Manifest = Record<string, unknown> & { kind: string; metadata: { name: string; namespace?: string } };

interface BadSpec {
  /** What is wrong, as the test reports it. */
  what: string;
  kind: "Sandbox" | "SandboxPool";
  /** Where the change is, from the object's root. */
  path: string[];
  /** The new value; `undefined` removes the field. */
  value: unknown;
  /** The field both the API server's message and the embedded validation name. */
  field: string;
}

const BAD_SANDBOXES: BadSpec[] = [
  { what: "missing image", kind: "Sandbox", path: ["spec", "image"], value: undefined, field: "spec.image" },
  { what: "empty image", kind: "Sandbox", path: ["spec", "image"], value: "", field: "spec.image" },
  { what: "missing poolRef", kind: "Sandbox", path: ["spec", "poolRef"], value: undefined, field: "spec.poolRef" },
  { what: "poolRef with characters a name cannot have", kind: "Sandbox", path: ["spec", "poolRef"], value: "My_Pool", field: "spec.poolRef" },
  { what: "exposed port 0", kind: "Sandbox", path: ["spec", "exposedPorts"], value: [0], field: "spec.exposedPorts[0]" },
  { what: "exposed port 70000", kind: "Sandbox", path: ["spec", "exposedPorts"], value: [8080, 70000], field: "spec.exposedPorts[1]" },
  { what: "negative recoveryTimeoutSeconds", kind: "Sandbox", path: ["spec", "recoveryTimeoutSeconds"], value: -1, field: "spec.recoveryTimeoutSeconds" },
  { what: "unknown failurePolicy", kind: "Sandbox", path: ["spec", "failurePolicy"], value: "Sometimes", field: "spec.failurePolicy" },
  { what: "unknown consistencyMode", kind: "Sandbox", path: ["spec", "consistencyMode"], value: "eventual", field: "spec.consistencyMode" },
  { what: "relative workingDir", kind: "Sandbox", path: ["spec", "workingDir"], value: "tmp", field: "spec.workingDir" },
  { what: "env name with '='", kind: "Sandbox", path: ["spec", "envs"], value: [{ name: "A=B", value: "x" }], field: "spec.envs[0].name" },
  { what: "expireTime that is not RFC 3339", kind: "Sandbox", path: ["spec", "expireTime"], value: "tomorrow", field: "spec.expireTime" },
  // The API server's own date-time format takes lower-case t and z; the controller's writes would then all be refused.
  {
    what: "expireTime with a lower-case t and z",
    kind: "Sandbox",
    path: ["spec", "expireTime"],
    value: "2030-01-01t00:00:00z",
    field: "spec.expireTime",
  },
  // The API server's own cidr format takes an address with bits set after the prefix.
  {
    what: "egress CIDR with bits set after its prefix",
    kind: "Sandbox",
    path: ["spec", "egress", "allow"],
    value: [{ cidr: "10.0.0.1/24" }],
    field: "spec.egress.allow[0].cidr",
  },
  { what: "unknown spec field", kind: "Sandbox", path: ["spec", "imagePullPolicy"], value: "Always", field: "spec.imagePullPolicy" },
  {
    what: "egress CIDR without a prefix",
    kind: "Sandbox",
    path: ["spec", "egress", "allow"],
    value: [{ cidr: "10.0.0.0" }],
    field: "spec.egress.allow[0].cidr",
  },
  {
    what: "egress port 70000",
    kind: "Sandbox",
    path: ["spec", "egress", "allow"],
    value: [{ cidr: "10.0.0.0/8", ports: [70000] }],
    field: "spec.egress.allow[0].ports[0]",
  },
  {
    what: "unknown egress protocol",
    kind: "Sandbox",
    path: ["spec", "egress", "allow"],
    value: [{ cidr: "10.0.0.0/8", protocol: "icmp" }],
    field: "spec.egress.allow[0].protocol",
  },
  { what: "unknown egress policy", kind: "Sandbox", path: ["spec", "egress", "policy"], value: "deny", field: "spec.egress.policy" },
  { what: "a NUL byte in an argument of the command", kind: "Sandbox", path: ["spec", "command"], value: ["sh", "a\u0000b"], field: "spec.command[1]" },
  { what: "a NUL byte in an env value", kind: "Sandbox", path: ["spec", "envs"], value: [{ name: "A", value: "x\u0000" }], field: "spec.envs[0].value" },
  // The fast path's names are DNS labels; a dotted name (allowed by Kubernetes) would be refused by the controller's own writes.
  { what: "a name that is not a DNS label", kind: "Sandbox", path: ["metadata", "name"], value: "job.1", field: "metadata.name" },
];

/** The embedded validation's rules across fields of an egress policy (validateSandbox), CEL in the CRD. */
const CROSS_FIELD_SANDBOXES: BadSpec[] = [
  { what: "an egress allowList without entries", kind: "Sandbox", path: ["spec", "egress", "allow"], value: undefined, field: "spec.egress.allow" },
  { what: "egress entries under policy denyAll", kind: "Sandbox", path: ["spec", "egress", "policy"], value: "denyAll", field: "spec.egress.allow" },
];

const BAD_POOLS: BadSpec[] = [
  { what: "maxSandboxesPerPod 0", kind: "SandboxPool", path: ["spec", "maxSandboxesPerPod"], value: 0, field: "spec.maxSandboxesPerPod" },
  { what: "missing maxSandboxesPerPod", kind: "SandboxPool", path: ["spec", "maxSandboxesPerPod"], value: undefined, field: "spec.maxSandboxesPerPod" },
  { what: "missing poolMax", kind: "SandboxPool", path: ["spec", "capacity", "poolMax"], value: undefined, field: "spec.capacity.poolMax" },
  { what: "negative poolMin", kind: "SandboxPool", path: ["spec", "capacity", "poolMin"], value: -1, field: "spec.capacity.poolMin" },
  { what: "wakeTimeoutSeconds 0", kind: "SandboxPool", path: ["spec", "capacity", "wakeTimeoutSeconds"], value: 0, field: "spec.capacity.wakeTimeoutSeconds" },
  {
    what: "scaleDownDelaySeconds above a day",
    kind: "SandboxPool",
    path: ["spec", "capacity", "scaleDownDelaySeconds"],
    value: 86401,
    field: "spec.capacity.scaleDownDelaySeconds",
  },
  { what: "unknown runtimeType", kind: "SandboxPool", path: ["spec", "runtimeType"], value: "kata", field: "spec.runtimeType" },
  {
    what: "memory that is not a quantity",
    kind: "SandboxPool",
    path: ["spec", "sandboxResources", "memory"],
    value: "lots",
    field: "spec.sandboxResources.memory",
  },
  { what: "cpu that is not a quantity", kind: "SandboxPool", path: ["spec", "sandboxResources", "cpu"], value: "fast", field: "spec.sandboxResources.cpu" },
  { what: "pids 0", kind: "SandboxPool", path: ["spec", "sandboxResources", "pids"], value: 0, field: "spec.sandboxResources.pids" },
  { what: "unknown network mode", kind: "SandboxPool", path: ["spec", "network", "mode"], value: "Bridge", field: "spec.network.mode" },
  {
    what: "egress CIDR with bits set after its prefix",
    kind: "SandboxPool",
    path: ["spec", "network", "egress", "allow"],
    value: [{ cidr: "2001:db8::1/32" }],
    field: "spec.network.egress.allow[0].cidr",
  },
  {
    what: "egress CIDR with a prefix beyond 32 bits",
    kind: "SandboxPool",
    path: ["spec", "network", "egress", "allow"],
    value: [{ cidr: "10.0.0.0/33" }],
    field: "spec.network.egress.allow[0].cidr",
  },
];

/** The embedded validation's rules across fields (validateSandboxPool), which a CRD can only state with CEL. */
const CROSS_FIELD_POOLS: BadSpec[] = [
  { what: "poolMin greater than poolMax", kind: "SandboxPool", path: ["spec", "capacity", "poolMin"], value: 3, field: "spec.capacity.poolMin" },
  { what: "bufferMin greater than bufferMax", kind: "SandboxPool", path: ["spec", "capacity", "bufferMin"], value: 3, field: "spec.capacity.bufferMin" },
  { what: "an egress policy on a Shared network", kind: "SandboxPool", path: ["spec", "network", "mode"], value: "Shared", field: "spec.network.egress" },
  {
    what: "preparedInstances greater than maxSandboxesPerPod",
    kind: "SandboxPool",
    path: ["spec", "preparedInstances"],
    value: 3,
    field: "spec.preparedInstances",
  },
  {
    what: "preparedFromCheckpoint on a runtimeType container pool",
    kind: "SandboxPool",
    path: ["spec", "preparedFromCheckpoint"],
    value: "golden",
    field: "spec.preparedFromCheckpoint",
  },
  { what: "preparedInstances without an image", kind: "SandboxPool", path: ["spec", "image"], value: undefined, field: "spec.preparedInstances" },
  { what: "a name that is not a DNS label", kind: "SandboxPool", path: ["metadata", "name"], value: "team.a", field: "metadata.name" },
];

function load(file: string): Manifest {
  return parse(readFileSync(path.join(HERE, file), "utf8")) as Manifest;
}

function withChange(base: Manifest, bad: BadSpec, name: string): Manifest {
  const manifest = structuredClone(base);
  manifest.metadata.name = name;
  let parent = manifest as Record<string, unknown>;
  for (const key of bad.path.slice(0, -1)) parent = parent[key] as Record<string, unknown>;
  const last = bad.path.at(-1)!;
  if (bad.value === undefined) delete parent[last];
  else parent[last] = bad.value;
  return manifest;
}

/** What the embedded mode's validation says of the object: the ValidationError it throws, or undefined when it accepts it. */
function embeddedVerdict(manifest: Manifest, namespace: string): ValidationError | undefined {
  const object = { ...manifest, metadata: { ...manifest.metadata, namespace } };
  try {
    if (manifest.kind === "Sandbox") validateSandbox(object);
    else validateSandboxPool(object);
    return undefined;
  } catch (error) {
    if (error instanceof ValidationError) return error;
    throw error;
  }
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("CRD validation rejects bad specs", () => {
    let namespace = "";
    let dir = "";
    let written = 0;

    /** `kubectl apply -f <file>` of the object (written to a temporary file), in the case's namespace. */
    async function applyObject(manifest: Manifest, ...flags: string[]) {
      const file = path.join(dir, `${++written}-${manifest.metadata.name}.json`);
      writeFileSync(file, JSON.stringify(manifest));
      return suite.kubectl("-n", namespace, "apply", ...flags, "-f", file);
    }

    /** Applies each bad variant and checks that the API server and the embedded validation both refuse it, naming its field. */
    async function expectRejected(t: TestContext, base: Manifest, bads: BadSpec[]): Promise<void> {
      const accepted: string[] = [];
      for (const [index, bad] of bads.entries()) {
        const manifest = withChange(base, bad, `bad-${bad.kind.toLowerCase()}-${index}`);
        const embedded = embeddedVerdict(manifest, namespace);
        const result = await applyObject(manifest);
        const apiServer = result.stderr.trim();
        t.diagnostic(`${bad.kind} with ${bad.what}:\n  API server: ${apiServer || "(accepted)"}\n  embedded:   ${embedded?.message ?? "(accepted)"}`);
        assert.ok(embedded, `the embedded validation accepts a ${bad.kind} with ${bad.what}`);
        assert.equal(embedded.field, bad.field, `the embedded validation names ${embedded.field} for ${bad.what}: ${embedded.message}`);
        if (result.code === 0) {
          accepted.push(`${bad.what} (${result.stdout.trim()})`);
          // Removed at once: a wrongly accepted pool would start agents.
          await suite.kubectlOk("-n", namespace, "delete", bad.kind.toLowerCase(), manifest.metadata.name, "--timeout=120s");
          continue;
        }
        assert.ok(apiServer.includes(bad.field), `the API server's answer to a ${bad.kind} with ${bad.what} does not name ${bad.field}: ${apiServer}`);
      }
      assert.deepEqual(accepted, [], `the API server accepted a ${base.kind} with: ${accepted.join("; ")}`);
    }

    before(async () => {
      namespace = await suite.createNamespace("crd-validation");
      dir = mkdtempSync(path.join(os.tmpdir(), "fsb-crd-validation-"));
    });

    after(async () => {
      if (dir) rmSync(dir, { recursive: true, force: true });
      if (namespace) await suite.kubectl("delete", "namespace", namespace, "--timeout=180s");
    });

    it("accepts the valid Sandbox and SandboxPool the bad ones are made from", async () => {
      for (const file of ["valid-sandbox.yaml", "valid-pool.yaml"]) {
        const manifest = load(file);
        assert.equal(embeddedVerdict(manifest, namespace), undefined, `the embedded validation refuses ${file}`);
        const result = await applyObject(manifest, "--dry-run=server");
        assert.equal(result.code, 0, `the API server refuses ${file}: ${result.stderr}`);
      }
      // A gVisor pool with an image may keep prepared instances too (waiting in gVisor's kernel).
      const gvisor = load("valid-pool.yaml");
      gvisor.metadata.name = "valid-gvisor";
      (gvisor.spec as Record<string, unknown>).runtimeType = "gvisor";
      assert.equal(embeddedVerdict(gvisor, namespace), undefined, "the embedded validation refuses a gVisor pool with an image and prepared instances");
      const result = await applyObject(gvisor, "--dry-run=server");
      assert.equal(result.code, 0, `the API server refuses a gVisor pool with an image and prepared instances: ${result.stderr}`);
    });

    it("rejects bad Sandbox specs, naming the field as the embedded validation does", async (t) => {
      await expectRejected(t, load("valid-sandbox.yaml"), BAD_SANDBOXES);
    });

    it("rejects bad SandboxPool specs, naming the field as the embedded validation does", async (t) => {
      await expectRejected(t, load("valid-pool.yaml"), BAD_POOLS);
    });

    it("rejects pools that break the embedded validation's cross-field rules (CEL in the CRD)", async (t) => {
      await expectRejected(t, load("valid-pool.yaml"), CROSS_FIELD_POOLS);
    });

    it("rejects sandboxes whose egress policy breaks the embedded validation's cross-field rules (CEL in the CRD)", async (t) => {
      await expectRejected(t, load("valid-sandbox.yaml"), CROSS_FIELD_SANDBOXES);
    });

    it("created nothing for the rejected objects", async () => {
      const left = await suite.kubectlOk("-n", namespace, "get", "sandboxes,sandboxpools", "-o", "name");
      assert.equal(left.trim(), "", `objects exist after the rejected applies: ${left}`);
    });

    it("refuses changes to a sandbox's fixed fields, as the fast path does, and accepts the mutable ones", async () => {
      // Its pool does not exist: it stays Pending, which is all this needs (the rules are the API server's).
      await suite.apply(JSON.stringify(load("valid-sandbox.yaml")), namespace);
      for (const [field, value] of [
        ["image", "fast-sandbox.io/other:latest"],
        ["poolRef", "another-pool"],
        ["command", ["true"]],
        ["exposedPorts", [9090]],
        ["workingDir", "/"],
        ["egress", { policy: "allowList", allow: [{ cidr: "10.0.0.0/16" }] }],
      ] as const) {
        const patch = JSON.stringify({ spec: { [field]: value } });
        const result = await suite.kubectl("-n", namespace, "patch", "sandbox", "valid", "--type=merge", "-p", patch);
        assert.notEqual(result.code, 0, `changing spec.${field} was accepted`);
        assert.match(result.stderr, new RegExp(`spec\\.${field}: Forbidden: is immutable`), result.stderr);
      }
      const mutable = JSON.stringify({ spec: { expireTime: "2031-01-02T15:04:05Z", failurePolicy: "Manual", recoveryTimeoutSeconds: 10, resetRevision: "1" } });
      await suite.kubectlOk("-n", namespace, "patch", "sandbox", "valid", "--type=merge", "-p", mutable);
      const stored = JSON.parse(await suite.kubectlOk("-n", namespace, "get", "sandbox", "valid", "-o", "json")) as { spec: Record<string, unknown> };
      assert.equal(stored.spec.image, "fast-sandbox.io/base:latest");
      assert.equal(stored.spec.failurePolicy, "Manual");
      await suite.kubectlOk("-n", namespace, "delete", "sandbox", "valid", "--timeout=60s");
    });
  });
}
