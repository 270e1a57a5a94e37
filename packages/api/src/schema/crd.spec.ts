import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Type, type TSchema } from "@sinclair/typebox";
import { parse } from "yaml";
import { renderCrds, toStructuralSchema } from "./crd.js";
import { GROUP, VERSION } from "./object-meta.js";
import { SandboxSpec, SandboxStatus } from "./sandbox.js";
import { SandboxPoolSpec, SandboxPoolStatus } from "./sandbox-pool.js";

type Json = Record<string, unknown>;

/** packages/api/src/schema → repository root. */
const REPO_ROOT = join(import.meta.dirname, "..", "..", "..", "..");

interface Crd {
  kind: string;
  metadata: { name: string };
  spec: {
    group: string;
    names: { kind: string; plural: string };
    versions: { name: string; schema: { openAPIV3Schema: Json } }[];
  };
}

function parsedCrds(): Map<string, Crd> {
  return new Map(Object.entries(renderCrds()).map(([file, text]) => [file, parse(text) as Crd]));
}

function crdOfKind(kind: string): Crd {
  const crd = [...parsedCrds().values()].find((c) => c.spec.names.kind === kind);
  assert.ok(crd, `a CRD for ${kind}`);
  return crd;
}

function openApiSchema(kind: string): Json {
  const version = crdOfKind(kind).spec.versions[0];
  assert.ok(version);
  return version.schema.openAPIV3Schema;
}

/** Every schema node with its path, depth first. */
function* nodes(schema: unknown, path = "$"): Generator<[string, Json]> {
  if (typeof schema !== "object" || schema === null) return;
  const node = schema as Json;
  yield [path, node];
  for (const [name, child] of Object.entries((node.properties as Json | undefined) ?? {})) yield* nodes(child, `${path}.${name}`);
  if (node.items) yield* nodes(node.items, `${path}[]`);
  if (typeof node.additionalProperties === "object") yield* nodes(node.additionalProperties, `${path}{}`);
}

describe("renderCrds", () => {
  it("yields one CRD per kind, named <plural>.<group>", () => {
    const crds = parsedCrds();
    assert.deepEqual([...crds.keys()].sort(), [`${GROUP}_sandboxes.yaml`, `${GROUP}_sandboxpools.yaml`]);
    assert.deepEqual([...crds.values()].map((c) => [c.kind, c.metadata.name, c.spec.group, c.spec.names.kind, c.spec.versions[0]?.name]).sort(), [
      ["CustomResourceDefinition", `sandboxes.${GROUP}`, GROUP, "Sandbox", VERSION],
      ["CustomResourceDefinition", `sandboxpools.${GROUP}`, GROUP, "SandboxPool", VERSION],
    ]);
  });

  for (const kind of ["Sandbox", "SandboxPool"]) {
    describe(`the ${kind} openAPIV3Schema is structural`, () => {
      it("has no anyOf, no additionalProperties: false and no uniqueItems anywhere", () => {
        for (const [path, node] of nodes(openApiSchema(kind))) {
          assert.equal(node.anyOf, undefined, `${path} has anyOf`);
          assert.equal(node.oneOf, undefined, `${path} has oneOf`);
          assert.notEqual(node.additionalProperties, false, `${path} has additionalProperties: false`);
          assert.equal(node.uniqueItems, undefined, `${path} has uniqueItems`);
          assert.equal(node.const, undefined, `${path} has const`);
        }
      });

      it("gives every node a type, and every node with properties type: object", () => {
        for (const [path, node] of nodes(openApiSchema(kind))) {
          assert.equal(typeof node.type, "string", `${path} has no type`);
          if (node.properties) assert.equal(node.type, "object", `${path} has properties but type ${String(node.type)}`);
        }
      });
    });
  }

  it("turns unions of literals into string enums", () => {
    const sandbox = openApiSchema("Sandbox") as {
      properties: { spec: Json; status: Json };
    };
    const spec = sandbox.properties.spec.properties as Record<string, Json>;
    const status = sandbox.properties.status.properties as Record<string, Json>;
    assert.deepEqual(spec.failurePolicy?.enum, ["Manual", "AutoRecreate"]);
    assert.equal(spec.failurePolicy?.type, "string");
    assert.deepEqual(spec.consistencyMode?.enum, ["fast", "strong"]);
    assert.deepEqual(status.phase?.enum, ["Pending", "Bound", "Running", "Terminating", "Expired", "Failed", "Lost", "Paused"]);
    const pool = openApiSchema("SandboxPool") as {
      properties: { spec: { properties: Record<string, Json> } };
    };
    assert.deepEqual(pool.properties.spec.properties.runtimeType?.enum, ["container", "gvisor"]);
  });

  it("checks date-times and CIDRs as strictly as the embedded validation (the API server's own formats are lenient)", () => {
    const sandbox = openApiSchema("Sandbox") as { properties: { spec: { properties: Record<string, Json> } } };
    const expireTime = sandbox.properties.spec.properties.expireTime as { format: string; pattern: string };
    assert.equal(expireTime.format, "date-time");
    const pattern = new RegExp(expireTime.pattern);
    assert.ok(pattern.test("2030-01-01T00:00:00Z") && pattern.test("2030-01-01T00:00:00.123+02:00"));
    assert.ok(!pattern.test("2030-01-01t00:00:00z"), "lower-case t and z, which the API server's date-time takes, are refused");
    const egress = sandbox.properties.spec.properties.egress as { properties: { allow: { items: { properties: { cidr: Json } } } } };
    const cidr = egress.properties.allow.items.properties.cidr as { format: string; maxLength: number; "x-kubernetes-validations": { rule: string }[] };
    assert.equal(cidr.format, "cidr");
    assert.ok(cidr.maxLength >= 43, "room for the longest IPv6 CIDR");
    assert.match(cidr["x-kubernetes-validations"][0]?.rule ?? "", /cidr\(self\)\.masked\(\) == cidr\(self\)/);
  });

  it("marks unique port lists as sets and keeps agentTemplate open", () => {
    const sandbox = openApiSchema("Sandbox") as {
      properties: { spec: { properties: Record<string, Json> } };
    };
    assert.equal(sandbox.properties.spec.properties.exposedPorts?.["x-kubernetes-list-type"], "set");
    const pool = openApiSchema("SandboxPool") as {
      properties: { spec: { properties: Record<string, Json> } };
    };
    const agentTemplate = pool.properties.spec.properties.agentTemplate;
    assert.equal(agentTemplate?.["x-kubernetes-preserve-unknown-fields"], true);
    assert.equal(agentTemplate?.type, "object");
  });

  it("bounds the Sandbox's lists and strings for the API server as the embedded validation does", () => {
    const spec = (openApiSchema("Sandbox") as { properties: { spec: { properties: Record<string, Json> } } }).properties.spec.properties;
    const items = (name: string) => spec[name]?.items as Json;
    assert.deepEqual(
      ["command", "args", "envs", "exposedPorts"].map((name) => spec[name]?.maxItems),
      [256, 256, 256, 64],
    );
    assert.equal(items("command").maxLength, 131071);
    assert.equal(items("args").maxLength, 131071);
    const env = items("envs").properties as Record<string, Json>;
    assert.deepEqual([env.name?.maxLength, env.value?.maxLength, env.name?.pattern], [131071, 131071, "^[^=\\x00]+$"]);
    assert.deepEqual([spec.image?.maxLength, spec.workingDir?.maxLength, spec.resetRevision?.maxLength], [1024, 4095, 253]);
  });

  it("gives the API server the ranges of a pool's sandboxResources and counts (CEL quantity rules, int32 maxima)", () => {
    const spec = (openApiSchema("SandboxPool") as { properties: { spec: { properties: Record<string, Json> } } }).properties.spec.properties;
    const resources = spec.sandboxResources?.properties as Record<string, Json & { "x-kubernetes-validations"?: { rule: string; message: string }[] }>;
    const cpu = resources.cpu?.["x-kubernetes-validations"]?.[0];
    assert.match(cpu?.rule ?? "", /quantity\(self\)\.compareTo\(quantity\('10m'\)\) >= 0 && quantity\(self\)\.compareTo\(quantity\('2147483647m'\)\) <= 0/);
    assert.match(cpu?.message ?? "", /^is out of range; allowed: 10m\.\.2147483647m/);
    const memory = resources.memory?.["x-kubernetes-validations"]?.[0];
    assert.match(memory?.rule ?? "", /compareTo\(quantity\('6291456'\)\) >= 0 && .*isLessThan\(quantity\('9007199254740992'\)\)/);
    assert.match(memory?.message ?? "", /^is out of range; allowed: at least 6Mi/);
    const disk = resources.ephemeralStorage?.["x-kubernetes-validations"]?.[0];
    assert.match(disk?.rule ?? "", /compareTo\(quantity\('1048576'\)\) >= 0 && .*isLessThan\(quantity\('9007199254740992'\)\)/);
    assert.match(disk?.message ?? "", /^is out of range; allowed: at least 1Mi/);
    assert.deepEqual(
      [resources.cpu?.maxLength, resources.memory?.maxLength, resources.ephemeralStorage?.maxLength, resources.pids?.maximum],
      [64, 64, 64, 2147483647],
    );
    const capacity = spec.capacity?.properties as Record<string, Json>;
    assert.deepEqual(
      ["poolMin", "poolMax", "bufferMin", "bufferMax"].map((name) => capacity[name]?.maximum),
      [2147483647, 2147483647, 2147483647, 2147483647],
    );
  });

  it("has exactly the TypeBox schemas' field names in spec and status", () => {
    const cases: [string, TSchema, TSchema][] = [
      ["Sandbox", SandboxSpec, SandboxStatus],
      ["SandboxPool", SandboxPoolSpec, SandboxPoolStatus],
    ];
    for (const [kind, spec, status] of cases) {
      const root = openApiSchema(kind) as {
        properties: { spec: Json; status: Json };
      };
      assert.deepEqual(Object.keys(root.properties.spec.properties as Json), Object.keys(spec.properties as Json), `${kind} spec`);
      assert.deepEqual(Object.keys(root.properties.status.properties as Json), Object.keys(status.properties as Json), `${kind} status`);
      assert.deepEqual(root.properties.spec.required, spec.required, `${kind} spec required`);
    }
  });

  it("matches the checked-in config/crd/*.yaml exactly (run `npm run generate` when this fails)", () => {
    const directory = join(REPO_ROOT, "config", "crd");
    const rendered = renderCrds();
    assert.deepEqual(
      readdirSync(directory)
        .filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml")
        .sort(),
      Object.keys(rendered).sort(),
    );
    // The kustomize entry (also generated) lists exactly the CRDs.
    const kustomization = readFileSync(join(directory, "kustomization.yaml"), "utf8");
    const listed = [...kustomization.matchAll(/^ {2}- (\S+)$/gm)].map((match) => match[1]);
    assert.deepEqual(listed, Object.keys(rendered).sort());
    for (const [file, text] of Object.entries(rendered)) {
      assert.equal(readFileSync(join(directory, file), "utf8"), text, `config/crd/${file} is out of date`);
    }
  });
});

describe("toStructuralSchema", () => {
  it("refuses unions that are not all string literals", () => {
    assert.throws(() => toStructuralSchema(Type.Union([Type.String(), Type.Integer()])), /only unions of string literals/);
  });

  it("maps records to additionalProperties of the value schema", () => {
    assert.deepEqual(toStructuralSchema(Type.Record(Type.String(), Type.String())).additionalProperties, { type: "string" });
  });
});
