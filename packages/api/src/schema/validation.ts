import { FormatRegistry, type TSchema } from "@sinclair/typebox";
import { TypeCompiler, type TypeCheck } from "@sinclair/typebox/compiler";
import { ValueErrorType, type ValueError } from "@sinclair/typebox/value";
import { ValidationError } from "../errors.js";
import { cidrProblem } from "./cidr.js";
import { parseImageReference } from "./image-reference.js";
import { checkLabels } from "./labels.js";
import { RFC3339 } from "./string-formats.js";
import { checkEgressPolicy, checkPoolNetwork } from "./network.js";
import { Sandbox } from "./sandbox.js";
import { SandboxPool } from "./sandbox-pool.js";

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
      return { field, message: `must have at most ${String(schema.maxLength)} characters` };
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
  if (check.Check(value)) return;
  const errors = [...check.Errors(value)];
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

export function validateSandbox(value: unknown): asserts value is Sandbox {
  assertValid((sandboxCheck ??= TypeCompiler.Compile(Sandbox)), value);
  checkLabels((value as Sandbox).metadata.labels, "metadata.labels");
  const { egress, image } = (value as Sandbox).spec;
  // Before anything is reserved for it: an agent would refuse it only after a slot, a record and a wake.
  if (image !== undefined) parseImageReference(image, "spec.image");
  if (egress) checkEgressPolicy(egress, "spec.egress");
}

export function validateSandboxPool(value: unknown): asserts value is SandboxPool {
  assertValid((sandboxPoolCheck ??= TypeCompiler.Compile(SandboxPool)), value);
  checkLabels((value as SandboxPool).metadata.labels, "metadata.labels");
  const { capacity } = (value as SandboxPool).spec;
  if (capacity.poolMin > capacity.poolMax) {
    throw new ValidationError("spec.capacity.poolMin", `${capacity.poolMin} is greater than poolMax ${capacity.poolMax}`);
  }
  if (capacity.bufferMin !== undefined && capacity.bufferMax !== undefined && capacity.bufferMin > capacity.bufferMax) {
    throw new ValidationError("spec.capacity.bufferMin", `${capacity.bufferMin} is greater than bufferMax ${capacity.bufferMax}`);
  }
  checkPoolNetwork((value as SandboxPool).spec);
  const { preparedInstances, image, runtimeType, maxSandboxesPerPod, preparedFromCheckpoint, prewarmImages } = (value as SandboxPool).spec;
  if (image !== undefined) parseImageReference(image, "spec.image");
  prewarmImages?.forEach((reference, index) => parseImageReference(reference, `spec.prewarmImages[${index}]`));
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
