import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { API_VERSION, ValidationError } from "@fast-sandbox/api";
import { closeConnections } from "../connection.js";
import { fakePool, fakeSandbox, startFakeControlPlane } from "../fake-control-plane.fixture.js";
import { apply, checkManifest, outcome, readManifests } from "./apply.js";

const directory = mkdtempSync(join(tmpdir(), "fsb-apply-spec-"));
after(() => rmSync(directory, { recursive: true, force: true }));

let files = 0;
function manifestFile(text: string): string {
  const path = join(directory, `manifest-${++files}.yaml`);
  writeFileSync(path, text);
  return path;
}

const sandboxYaml = (name: string, extra = "") => `apiVersion: ${API_VERSION}
kind: Sandbox
metadata:
  name: ${name}
spec:
  image: python:3.12
  poolRef: default
${extra}`;

const poolYaml = `apiVersion: ${API_VERSION}
kind: SandboxPool
metadata:
  name: default
spec:
  capacity: { poolMin: 0, poolMax: 2 }
  maxSandboxesPerPod: 8
`;

function validationError(fn: () => unknown): ValidationError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    return error;
  }
  assert.fail("expected a ValidationError");
}

describe("readManifests", () => {
  it("reads every document of a multi-document file in order", () => {
    const file = manifestFile(`${poolYaml}---\n${sandboxYaml("a")}---\n${sandboxYaml("b")}`);
    const manifests = readManifests(file);
    assert.deepEqual(
      manifests.map((m) => [(m.object as { kind: string }).kind, (m.object as { metadata: { name: string } }).metadata.name]),
      [
        ["SandboxPool", "default"],
        ["Sandbox", "a"],
        ["Sandbox", "b"],
      ],
    );
    assert.deepEqual(
      manifests.map((m) => m.where),
      [1, 2, 3].map((n) => `${file} document ${n}`),
    );
  });

  it("skips empty documents but keeps the documents' own numbers", () => {
    const file = manifestFile(`---\n${sandboxYaml("a")}---\n---\n# only a comment\n---\n${sandboxYaml("b")}`);
    const manifests = readManifests(file);
    assert.deepEqual(
      manifests.map((m) => (m.object as { metadata: { name: string } }).metadata.name),
      ["a", "b"],
    );
    assert.equal(manifests[0]?.where, `${file} document 1`);
    assert.equal(manifests[1]?.where, `${file} document 4`);
  });

  it("returns nothing for an empty file", () => {
    assert.deepEqual(readManifests(manifestFile("")), []);
  });

  it("reads JSON", () => {
    const file = manifestFile(
      JSON.stringify({
        apiVersion: API_VERSION,
        kind: "Sandbox",
        metadata: { name: "j" },
        spec: { image: "x", poolRef: "p" },
      }),
    );
    assert.equal((readManifests(file)[0]?.object as { metadata: { name: string } }).metadata.name, "j");
  });

  it("names the document with a YAML syntax error", () => {
    const file = manifestFile(`${sandboxYaml("a")}---\nkind: Sandbox\nmetadata: { name: [unclosed\n`);
    const error = validationError(() => readManifests(file));
    assert.equal(error.field, `${file} document 2`);
    assert.ok(error.message.length > error.field.length + 2, "the message explains the syntax error");
  });
});

describe("checkManifest", () => {
  it("returns valid Sandbox and SandboxPool objects", () => {
    const [pool, sandbox] = readManifests(manifestFile(`${poolYaml}---\n${sandboxYaml("a")}`));
    assert.equal(checkManifest(pool?.object, "f document 1").kind, "SandboxPool");
    assert.equal(checkManifest(sandbox?.object, "f document 2").kind, "Sandbox");
  });

  it("refuses an unknown kind, naming `kind` and listing the allowed kinds", () => {
    const error = validationError(() => checkManifest({ apiVersion: API_VERSION, kind: "Pod", metadata: { name: "a" } }, "f.yaml document 3"));
    assert.equal(error.field, "f.yaml document 3: kind");
    assert.match(error.message, /"Pod" is not a kind fsb knows; allowed: Sandbox, SandboxPool/);
  });

  it("refuses a wrong or missing apiVersion and names the supported one", () => {
    for (const apiVersion of ["v1", undefined]) {
      const error = validationError(() => checkManifest({ apiVersion, kind: "Sandbox" }, "f.yaml document 1"));
      assert.equal(error.field, "f.yaml document 1: apiVersion");
      assert.match(error.message, new RegExp(`use ${API_VERSION.replace(/\./g, "\\.")}`));
    }
  });

  it("refuses documents that are not objects", () => {
    for (const value of ["text", 42, [1, 2]]) {
      assert.equal(validationError(() => checkManifest(value, "f.yaml document 1")).field, "f.yaml document 1");
    }
  });

  it("names the document and the field of an invalid object", () => {
    const file = manifestFile(`${poolYaml}---\n${sandboxYaml("a", "  exposedPorts: [0]\n")}`);
    const manifests = readManifests(file);
    const error = validationError(() => manifests.map(({ where, object }) => checkManifest(object, where)));
    assert.equal(error.field, `${file} document 2: spec.exposedPorts[0]`);
    assert.equal(error.message, `${file} document 2: spec.exposedPorts[0]: 0 is out of range; allowed: 1..65535`);
  });

  it("names the right document when an empty document comes before it", () => {
    const file = manifestFile(`${sandboxYaml("ok")}---\n---\n${sandboxYaml("a", "  surprise: true\n")}`);
    const error = validationError(() => readManifests(file).map(({ where, object }) => checkManifest(object, where)));
    assert.equal(error.field, `${file} document 3: spec.surprise`);
    assert.match(error.message, /unknown field/);
  });

  it("reports pool capacity errors with the document", () => {
    const error = validationError(() =>
      checkManifest(
        {
          apiVersion: API_VERSION,
          kind: "SandboxPool",
          metadata: { name: "p" },
          spec: { capacity: { poolMin: 3, poolMax: 1 }, maxSandboxesPerPod: 1 },
        },
        "f.yaml document 1",
      ),
    );
    assert.equal(error.field, "f.yaml document 1: spec.capacity.poolMin");
    assert.match(error.message, /3 is greater than poolMax 1/);
  });

  it("reads a pool's network and a sandbox's egress from YAML, and reports their errors with the document", () => {
    const pool = readManifests(
      manifestFile(`${poolYaml}  network:
    mode: Isolated
    egress: { policy: allowList, allow: [{ cidr: 10.0.0.0/8, ports: [443], protocol: tcp }] }
`),
    )[0];
    assert.ok(pool);
    assert.deepEqual((checkManifest(pool.object, pool.where) as { spec: { network?: unknown } }).spec.network, {
      mode: "Isolated",
      egress: { policy: "allowList", allow: [{ cidr: "10.0.0.0/8", ports: [443], protocol: "tcp" }] },
    });
    const sandbox = readManifests(manifestFile(sandboxYaml("web", "  egress: { policy: allowList, allow: [{ cidr: 10.0.0.1/8 }] }\n")))[0];
    assert.ok(sandbox);
    const error = validationError(() => checkManifest(sandbox.object, "f.yaml document 2"));
    assert.equal(error.field, "f.yaml document 2: spec.egress.allow[0].cidr");
    assert.match(error.message, /"10\.0\.0\.1\/8" is not a valid CIDR: bits are set after the \/8 prefix/);
  });
});

describe("apply", () => {
  const TOKEN = "apply-spec-token-0123456789";
  const dataDir = mkdtempSync(join(tmpdir(), "fsb-apply-spec-data-"));
  writeFileSync(join(dataDir, "token"), `${TOKEN}\n`, { mode: 0o600 });
  after(() => rmSync(dataDir, { recursive: true, force: true }));

  /** What `apply` printed on stdout. */
  async function applied(file: string, url: string): Promise<string> {
    const printed: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = (chunk: string | Uint8Array, ...rest: never[]) => (typeof chunk === "string" ? (printed.push(chunk), true) : write(chunk, ...rest));
    try {
      await apply({ file, url, dataDir });
    } finally {
      process.stdout.write = write;
      closeConnections();
    }
    return printed.join("");
  }

  it("says created for a new object, configured for a changed one and unchanged for one as it was, as kubectl apply", async () => {
    const controlPlane = await startFakeControlPlane({ token: TOKEN });
    try {
      const file = manifestFile(`${poolYaml}---\n${sandboxYaml("a")}`);
      assert.equal(await applied(file, controlPlane.url), "sandboxpool/default created\nsandbox/a created\n");
      assert.equal(await applied(file, controlPlane.url), "sandboxpool/default unchanged\nsandbox/a unchanged\n");
      const pool = manifestFile(poolYaml.replace("poolMax: 2", "poolMax: 3"));
      assert.equal(await applied(pool, controlPlane.url), "sandboxpool/default configured\n");
      const labelled = manifestFile(sandboxYaml("a").replace("  name: a\n", "  name: a\n  labels: { app: demo }\n"));
      assert.equal(await applied(labelled, controlPlane.url), "sandbox/a configured\n");
      assert.equal(await applied(labelled, controlPlane.url), "sandbox/a unchanged\n");
      assert.deepEqual(controlPlane.pools.get("default/default")?.spec.capacity, { poolMin: 0, poolMax: 3 }, "the change was applied");
    } finally {
      await controlPlane.close();
    }
  });
});

describe("outcome", () => {
  it("is created without an object before, unchanged when spec, labels and annotations are the same (none is no labels), else configured", () => {
    const pool = fakePool("p");
    assert.equal(outcome(undefined, pool), "created");
    assert.equal(outcome(pool, { ...pool, metadata: { ...pool.metadata, labels: {}, resourceVersion: "2" }, status: { agents: 1 } }), "unchanged");
    assert.equal(outcome(pool, fakePool("p", { poolMax: 2 })), "configured");
    assert.equal(outcome(pool, { ...pool, metadata: { ...pool.metadata, annotations: { note: "x" } } }), "configured");
    const sandbox = fakeSandbox("s");
    assert.equal(outcome(sandbox, { ...sandbox, metadata: { ...sandbox.metadata, labels: { app: "demo" } } }), "configured");
    assert.equal(outcome(sandbox, { ...sandbox, spec: { ...sandbox.spec, recoveryTimeoutSeconds: 45 } }), "configured");
  });
});
