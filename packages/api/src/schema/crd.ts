import type { TSchema } from "@sinclair/typebox";
import { stringify } from "yaml";
import { GROUP, NAME_MAX_LENGTH, NAME_PATTERN, VERSION } from "./object-meta.js";
import { SandboxSpec, SandboxStatus } from "./sandbox.js";
import { SandboxPoolSpec, SandboxPoolStatus } from "./sandbox-pool.js";
import { crdFormatKeywords } from "./string-formats.js";

type JsonSchema = Record<string, unknown>;

/**
 * Turns a TypeBox schema into a Kubernetes *structural* OpenAPI v3 schema: unions of literals become
 * enums, `additionalProperties: false` is dropped (the API server prunes unknown fields instead),
 * `uniqueItems` becomes `x-kubernetes-list-type: set` (uniqueItems is forbidden in CRDs), and a
 * string format gets the keywords that make the API server check it as strictly as the embedded
 * validation does (string-formats.ts).
 */
export function toStructuralSchema(schema: TSchema): JsonSchema {
  const source = schema as JsonSchema;
  if (Array.isArray(source.anyOf)) {
    const members = source.anyOf as JsonSchema[];
    const values = members.map((m) => m.const);
    if (values.every((v) => typeof v === "string")) {
      return withDescription({ type: "string", enum: values }, source);
    }
    throw new Error("only unions of string literals can become CRD schemas");
  }
  if (source.const !== undefined) return withDescription({ type: typeof source.const }, source);
  const out: JsonSchema = {};
  for (const [key, value] of Object.entries(source)) {
    switch (key) {
      case "additionalProperties":
        if (typeof value === "object") out.additionalProperties = toStructuralSchema(value as TSchema);
        break;
      case "patternProperties": {
        // TypeBox records: one pattern → additionalProperties of the value schema.
        const first = Object.values(value as Record<string, TSchema>)[0];
        if (first) out.additionalProperties = toStructuralSchema(first);
        break;
      }
      case "properties": {
        const properties: JsonSchema = {};
        for (const [name, child] of Object.entries(value as Record<string, TSchema>)) {
          properties[name] = toStructuralSchema(child);
        }
        out.properties = properties;
        break;
      }
      case "items":
        out.items = toStructuralSchema(value as TSchema);
        break;
      case "uniqueItems":
        if (value === true) out["x-kubernetes-list-type"] = "set";
        break;
      case "format":
        // The API server's own format checks are lenient: the strict rules come with the format.
        out.format = value;
        Object.assign(out, crdFormatKeywords(String(value)));
        break;
      default:
        out[key] = value;
    }
  }
  return out;
}

function withDescription(schema: JsonSchema, source: JsonSchema): JsonSchema {
  return typeof source.description === "string" ? { ...schema, description: source.description } : schema;
}

interface CrdNames {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
}

interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
}

function customResourceDefinition(names: CrdNames, spec: TSchema, status: TSchema, columns: PrinterColumn[]): JsonSchema {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${names.plural}.${GROUP}` },
    spec: {
      group: GROUP,
      names: { kind: names.kind, listKind: `${names.kind}List`, plural: names.plural, singular: names.singular, shortNames: names.shortNames },
      scope: "Namespaced",
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: [...columns, { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" }],
          schema: {
            openAPIV3Schema: {
              type: "object",
              required: ["spec"],
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                // The API server lets a CRD restrict only a name: the fast path's own rule (a DNS label).
                metadata: { type: "object", properties: { name: { type: "string", pattern: NAME_PATTERN, maxLength: NAME_MAX_LENGTH } } },
                spec: toStructuralSchema(spec),
                status: toStructuralSchema(status),
              },
            },
          },
        },
      ],
    },
  };
}

/** The CRD manifests, file name → YAML; `config/crd/` holds exactly these (drift-checked in CI). */
export function renderCrds(): Record<string, string> {
  const header = "# Generated from packages/api/src/schema by `npm run generate`. Do not edit.\n";
  const sandbox = customResourceDefinition({ kind: "Sandbox", plural: "sandboxes", singular: "sandbox", shortNames: ["sb"] }, SandboxSpec, SandboxStatus, [
    { name: "Phase", type: "string", jsonPath: ".status.phase" },
    { name: "Pool", type: "string", jsonPath: ".spec.poolRef" },
    { name: "Agent", type: "string", jsonPath: ".status.assignedPod" },
  ]);
  const pool = customResourceDefinition(
    { kind: "SandboxPool", plural: "sandboxpools", singular: "sandboxpool", shortNames: ["sbp"] },
    SandboxPoolSpec,
    SandboxPoolStatus,
    [
      { name: "Agents", type: "integer", jsonPath: ".status.agents" },
      { name: "Sandboxes", type: "integer", jsonPath: ".status.sandboxes" },
      { name: "Prepared", type: "integer", jsonPath: ".status.preparedInstances" },
    ],
  );
  return {
    [`${GROUP}_sandboxes.yaml`]: header + stringify(sandbox, { lineWidth: 0 }),
    [`${GROUP}_sandboxpools.yaml`]: header + stringify(pool, { lineWidth: 0 }),
  };
}
