import { FormatRegistry, type TSchema } from "@sinclair/typebox";
import { TypeCompiler, type TypeCheck } from "@sinclair/typebox/compiler";
import { ValueErrorType, type ValueError } from "@sinclair/typebox/value";
import { ValidationError } from "../errors.js";
import { cidrProblem } from "./cidr.js";
import { parseImageReference } from "./image-reference.js";
import { checkLabels } from "./labels.js";
import { RFC3339 } from "./string-formats.js";
import { checkEgressPolicy, checkPoolNetwork } from "./network.js";
import { REVISION_MAX_LENGTH, checkProcessSize } from "./process-rules.js";
import { Sandbox } from "./sandbox.js";
import { SandboxPool, checkSandboxResources } from "./sandbox-pool.js";

if (!FormatRegistry.Has("date-time")) {
  FormatRegistry.Set("date-time", (value) => RFC3339.test(value) && !Number.isNaN(Date.parse(value)));
}
if (!FormatRegistry.Has("cidr")) {
  FormatRegistry.Set("cidr", (value) => cidrProblem(value) === undefined);
}

/** What is wrong with a value of each string format, and what a good one looks like. */
const FORMAT_PROBLEMS: Record<string, (value: string) => string> = {
  "date-time": (value) => `${JSON.stringify(value)} is not a valid date-time (use RFC 3339, e.g. 2026-01-02T15:04:05Z)`,
  cidr: (value) => `${JSON.stringify(value)} is not a valid CIDR: ${cidrProblem(value) ?? "?"} (e.g. 10.0.0.0/8, 203.0.113.7/32 or 2001:db8::/32)`,
};

/** `/spec/exposedPorts/0` → `spec.exposedPorts[0]`. */
export function fieldPath(pointer: string): string {
  let path = "";
  for (const part of pointer.split("/").slice(1)) {
    const key = part.replace(/~1/g, "/").replace(/~0/g, "~");
    path += /^\d+$/.test(key) ? `[${key}]` : path ? `.${key}` : key;
  }
  return path;
}

function describe(error: ValueError): { field: string; message: string } {
  const schema = error.schema as TSchema & Record<string, unknown>;
  const field = fieldPath(error.path);
  switch (error.type) {
    case ValueErrorType.ObjectAdditionalProperties: {
      // TypeBox 0.34 points at the unknown property itself; its schema is the parent object's.
      const known = Object.keys((schema.properties as object | undefined) ?? {});
      return { field, message: `unknown field; allowed fields: ${known.join(", ")}` };
    }
    case ValueErrorType.ObjectRequiredProperty:
      return { field, message: "is required" };
    case ValueErrorType.StringPattern:
      if (schema.pattern && String(schema.pattern).startsWith("^[a-z0-9]([-a-z0-9]*")) {
        return {
          field,
          message: `invalid name ${JSON.stringify(error.value)}: use lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters`,
        };
      }
      return { field, message: `${JSON.stringify(error.value)} is not valid${schema.description ? ` (${String(schema.description)})` : ""}` };
    case ValueErrorType.StringFormat: {
      const problem = FORMAT_PROBLEMS[String(schema.format)];
      return { field, message: problem ? problem(String(error.value)) : `${JSON.stringify(error.value)} is not a valid ${String(schema.format)}` };
    }
    case ValueErrorType.StringMinLength:
      return { field, message: schema.minLength === 1 ? "must not be empty" : `must have at least ${String(schema.minLength)} characters` };
    case ValueErrorType.StringMaxLength:
      return { field, message: `has ${String((error.value as string).length)} characters; at most ${String(schema.maxLength)} are allowed` };
    case ValueErrorType.NumberMinimum:
    case ValueErrorType.IntegerMinimum:
    case ValueErrorType.NumberMaximum:
    case ValueErrorType.IntegerMaximum:
      return {
        field,
        message: `${String(error.value)} is out of range; allowed: ${String(schema.minimum ?? "-∞")}..${String(schema.maximum ?? "∞")}`,
      };
    case ValueErrorType.Union:
    case ValueErrorType.Literal: {
      const options = ((schema.anyOf as TSchema[] | undefined) ?? [schema]).map((s) => (s as { const?: unknown }).const).filter((v) => v !== undefined);
      if (options.length > 0) {
        return {
          field,
          message: `${JSON.stringify(error.value)} is not allowed; allowed: ${options.map((o) => String(o as string | number | boolean)).join(", ")}`,
        };
      }
      return { field, message: error.message };
    }
    case ValueErrorType.ArrayUniqueItems:
      return { field, message: "must not contain duplicates" };
    case ValueErrorType.ArrayMinItems:
      return { field, message: schema.minItems === 1 ? "must not be empty (leave it out instead)" : `must have at least ${String(schema.minItems)} entries` };
    case ValueErrorType.ArrayMaxItems:
      return { field, message: `has ${String((error.value as unknown[]).length)} entries; at most ${String(schema.maxItems)} are allowed` };
    default:
      return { field, message: error.message.replace(/^Expected/, "expected") };
  }
}

/** Checks `value` against a compiled schema and throws a ValidationError naming the first bad field. */
export function assertValid<T extends TSchema>(check: TypeCheck<T>, value: unknown): void {
  assertValidParts(check, value, undefined);
}

/** A part of a Sandbox or a SandboxPool that a validation can be limited to (ValidationOptions). */
export type ResourcePart = "metadata" | "spec" | "status";

/** How validateSandbox and validateSandboxPool check an object. */
export interface ValidationOptions {
  /**
   * The parts checked (apiVersion and kind always are). A store checks the parts a write changes: a
   * status write its status, an update that leaves the spec as stored its metadata. So an object
   * the API server accepted but these rules refuse (written with kubectl, or stored before a rule
   * was added) still takes its status and the removal of its finalizers.
   * @default ["metadata", "spec", "status"]
   */
  parts?: readonly ResourcePart[];
}

/** `/spec/image` → "spec": the ResourcePart a JSON pointer is in; undefined outside them (`/kind`). */
function partOf(pointer: string): string | undefined {
  return /^\/(metadata|spec|status)(?:\/|$)/.exec(pointer)?.[1];
}

/** assertValid, counting only the errors in `parts` (and outside every part) when given. */
function assertValidParts<T extends TSchema>(check: TypeCheck<T>, value: unknown, parts: ReadonlySet<string> | undefined): void {
  if (check.Check(value)) return;
  const errors = [...check.Errors(value)].filter((error) => {
    const part = partOf(error.path);
    return parts === undefined || part === undefined || parts.has(part);
  });
  if (parts !== undefined && errors.length === 0) return;
  // Prefer the most specific error (deepest path), which is what a user can act on.
  errors.sort((a, b) => b.path.length - a.path.length);
  const first = errors[0];
  if (!first) throw new ValidationError("", "invalid object");
  const { field, message } = describe(first);
  throw new ValidationError(field, message);
}

// Compiled on first use: compiling generates and evaluates code, which every program importing
// @fast-sandbox/api (`fsb ls` too) would otherwise pay at start-up.
let sandboxCheck: TypeCheck<typeof Sandbox> | undefined;
let sandboxPoolCheck: TypeCheck<typeof SandboxPool> | undefined;

function partsOf(options: ValidationOptions): ReadonlySet<string> | undefined {
  return options.parts === undefined ? undefined : new Set(options.parts);
}

/** Throws a ValidationError naming the first field that is wrong (of `options.parts` only, when given). */
export function validateSandbox(value: unknown, options: ValidationOptions = {}): asserts value is Sandbox {
  const parts = partsOf(options);
  assertValidParts((sandboxCheck ??= TypeCompiler.Compile(Sandbox)), value, parts);
  if (!parts || parts.has("metadata")) {
    const { labels, annotations } = (value as Sandbox).metadata;
    checkLabels(labels, "metadata.labels");
    checkRequestId(annotations?.[REQUEST_ID_ANNOTATION]);
  }
  if (parts && !parts.has("spec")) return;
  const { spec } = value as Sandbox;
  // Before anything is reserved for it: an agent would refuse it only after a slot, a record and a wake.
  if (spec.image !== undefined) parseImageReference(spec.image, "spec.image");
  if (spec.egress) checkEgressPolicy(spec.egress, "spec.egress");
  checkProcessSize(spec, "spec.");
}

/**
 * The annotation a fast-path create keeps its request id in (the control plane's
 * REQUEST_ID_ANNOTATION): a retry with the id finds the sandbox by it.
 */
const REQUEST_ID_ANNOTATION = "sandbox.fast.io/request-id";

/** A create's request id is hashed into the sandbox's name and kept in its record: a long one is refused before either. */
function checkRequestId(requestId: string | undefined): void {
  if (requestId !== undefined && requestId.length > REVISION_MAX_LENGTH) {
    throw new ValidationError(
      `metadata.annotations[${JSON.stringify(REQUEST_ID_ANNOTATION)}]`,
      `the create's requestId has ${requestId.length} characters; at most ${REVISION_MAX_LENGTH} are allowed`,
    );
  }
}

/** Throws a ValidationError naming the first field that is wrong (of `options.parts` only, when given). */
export function validateSandboxPool(value: unknown, options: ValidationOptions = {}): asserts value is SandboxPool {
  const parts = partsOf(options);
  assertValidParts((sandboxPoolCheck ??= TypeCompiler.Compile(SandboxPool)), value, parts);
  if (!parts || parts.has("metadata")) checkLabels((value as SandboxPool).metadata.labels, "metadata.labels");
  if (parts && !parts.has("spec")) return;
  const { capacity } = (value as SandboxPool).spec;
  if (capacity.poolMin > capacity.poolMax) {
    throw new ValidationError("spec.capacity.poolMin", `${capacity.poolMin} is greater than poolMax ${capacity.poolMax}`);
  }
  if (capacity.bufferMin !== undefined && capacity.bufferMax !== undefined && capacity.bufferMin > capacity.bufferMax) {
    throw new ValidationError("spec.capacity.bufferMin", `${capacity.bufferMin} is greater than bufferMax ${capacity.bufferMax}`);
  }
  checkPoolNetwork((value as SandboxPool).spec);
  checkSandboxResources((value as SandboxPool).spec.sandboxResources, "spec.sandboxResources");
  const { preparedInstances, image, runtimeType, maxSandboxesPerPod, preparedFromCheckpoint, prewarmImages, agentTemplate } = (value as SandboxPool).spec;
  if (image !== undefined) parseImageReference(image, "spec.image");
  prewarmImages?.forEach((reference, index) => parseImageReference(reference, `spec.prewarmImages[${index}]`));
  if (agentTemplate !== undefined) checkAgentTemplate(agentTemplate, "spec.agentTemplate");
  if (preparedFromCheckpoint && runtimeType !== "gvisor") {
    throw new ValidationError("spec.preparedFromCheckpoint", `instances restored from a checkpoint need runtimeType gvisor, not ${runtimeType ?? "container"}`);
  }
  if (preparedInstances) {
    if (preparedInstances > maxSandboxesPerPod) {
      throw new ValidationError("spec.preparedInstances", `${preparedInstances} is greater than maxSandboxesPerPod ${maxSandboxesPerPod}`);
    }
    // Instances are made of the pool's image (runc or gVisor), or are copies of a gVisor pool's
    // checkpoint, whose image and command are the checkpoint's.
    if (!preparedFromCheckpoint && !image) {
      throw new ValidationError(
        "spec.preparedInstances",
        "needs spec.image (or, for a gvisor pool, spec.preparedFromCheckpoint): prepared instances are made of the pool's image before any create names one",
      );
    }
  }
}

/**
 * The shape of a pool's agentTemplate (a Pod template) that the agent Pod builder relies on
 * (controlplane fleet/agent-pod.ts): it merges the template's labels and annotations, its
 * containers and init containers (each one's env by name, mounts by path, ports) and its volumes
 * (by name) over the deployment's template, and passes the rest on to the Pod as it is. The API
 * server keeps the field as it is given (x-kubernetes-preserve-unknown-fields), so a list written
 * as a map would reach the builder; the rest of the Pod is the API server's to check when the agent
 * Pod is created. Unset fields, null included (Kubernetes reads null as unset), are not checked.
 */
function checkAgentTemplate(template: Record<string, unknown>, field: string): void {
  const { metadata, spec } = template;
  if (isSet(metadata)) {
    if (!isMap(metadata)) throw new ValidationError(`${field}.metadata`, mustBe("a map (of the agent Pods' labels and annotations)", metadata));
    for (const name of ["labels", "annotations"]) {
      const values = metadata[name];
      if (!isSet(values)) continue;
      if (!isMap(values)) throw new ValidationError(`${field}.metadata.${name}`, mustBe(`a map of ${name.slice(0, -1)} names to values`, values));
      const [key, entry] = Object.entries(values).find(([, value]) => typeof value !== "string") ?? [];
      if (key !== undefined) throw new ValidationError(`${field}.metadata.${name}[${JSON.stringify(key)}]`, mustBe("a string (quote it in YAML)", entry));
    }
  }
  if (!isSet(spec)) return;
  if (!isMap(spec)) throw new ValidationError(`${field}.spec`, mustBe("a map (a Pod spec)", spec));
  for (const list of ["initContainers", "containers"]) {
    mapsOf(spec[list], `${field}.spec.${list}`, "containers", "a container (a map)").forEach((container, index) =>
      checkTemplateContainer(container, `${field}.spec.${list}[${index}]`),
    );
  }
  mapsOf(spec.volumes, `${field}.spec.volumes`, "volumes", "a volume (a map)").forEach((volume, index) =>
    requireString(volume, "name", `${field}.spec.volumes[${index}]`, "volumes are merged by name"),
  );
}

/** A container of an agentTemplate: its name, and the lists the agent Pod builder merges or reads. */
function checkTemplateContainer(container: Record<string, unknown>, field: string): void {
  if (isSet(container.name) && typeof container.name !== "string") throw new ValidationError(`${field}.name`, mustBe("a string", container.name));
  mapsOf(container.env, `${field}.env`, "{name, value} entries", "an entry {name, value}").forEach((variable, index) =>
    requireString(variable, "name", `${field}.env[${index}]`, "variables are merged by name"),
  );
  mapsOf(container.volumeMounts, `${field}.volumeMounts`, "{name, mountPath} entries", "an entry {name, mountPath}").forEach((mount, index) =>
    requireString(mount, "mountPath", `${field}.volumeMounts[${index}]`, "mounts are merged by path"),
  );
  mapsOf(container.ports, `${field}.ports`, "{containerPort} entries", "an entry {containerPort}");
}

/** The entries of a list of maps (none when unset); a ValidationError naming the list, or the first entry, that is not one. */
function mapsOf(value: unknown, field: string, entries: string, entry: string): Record<string, unknown>[] {
  if (!isSet(value)) return [];
  if (!Array.isArray(value)) throw new ValidationError(field, mustBe(`a list of ${entries}`, value));
  value.forEach((item: unknown, index) => {
    if (!isMap(item)) throw new ValidationError(`${field}[${index}]`, mustBe(entry, item));
  });
  return value as Record<string, unknown>[];
}

/** `map[key]` must be a string that is not empty: `why` says what needs it. */
function requireString(map: Record<string, unknown>, key: string, field: string, why: string): void {
  const value = map[key];
  if (!isSet(value)) throw new ValidationError(`${field}.${key}`, `is required: ${why}`);
  if (typeof value !== "string") throw new ValidationError(`${field}.${key}`, mustBe("a string", value));
  if (value === "") throw new ValidationError(`${field}.${key}`, `must not be empty: ${why}`);
}

function isSet(value: unknown): boolean {
  return value !== undefined && value !== null;
}

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** "must be a list of containers, not the string "agent"". */
function mustBe(expected: string, value: unknown): string {
  const actual =
    value === null ? "null" : Array.isArray(value) ? "a list" : typeof value === "object" ? "a map" : `the ${typeof value} ${JSON.stringify(value)}`;
  return `must be ${expected}, not ${actual}`;
}
