/**
 * Conversions between the wire messages (protobuf, generated) and the resource objects (TypeBox).
 * The messages' JSON names equal the resources' field names, so conversion goes through protobuf's
 * canonical JSON mapping and only patches the few fields whose shapes differ.
 */
import { fromJson, toJson, type JsonObject } from "@bufbuild/protobuf";
import { API_VERSION } from "../schema/api-version.js";
import type { Sandbox, SandboxSpec } from "../schema/sandbox.js";
import type { SandboxPool } from "../schema/sandbox-pool.js";
import { ValidationError } from "../errors.js";
import {
  SandboxSchema,
  SandboxSpecSchema,
  SandboxPoolSchema,
  type Sandbox as SandboxMessage,
  type SandboxSpec as SandboxSpecMessage,
  type SandboxPool as SandboxPoolMessage,
} from "../gen/fastsandbox/v1alpha1/resources_pb.js";

function fixMetadata(json: JsonObject): void {
  const metadata = json.metadata as JsonObject | undefined;
  if (metadata && typeof metadata.generation === "string") metadata.generation = Number(metadata.generation);
  fixStatus(json.status as JsonObject | undefined);
}

/** int64 fields are strings in protobuf's JSON; the resources hold numbers. */
function fixStatus(status: JsonObject | undefined): void {
  if (!status) return;
  if (typeof status.observedGeneration === "string") status.observedGeneration = Number(status.observedGeneration);
  const conditions = status.conditions;
  if (Array.isArray(conditions)) {
    for (const condition of conditions as JsonObject[]) {
      if (typeof condition.observedGeneration === "string") condition.observedGeneration = Number(condition.observedGeneration);
    }
  }
}

/** proto3 omits empty strings from JSON, but an env var's value is required and may be empty. */
function fixEnvs(spec: JsonObject | undefined): void {
  const envs = spec?.envs;
  if (Array.isArray(envs)) for (const env of envs as JsonObject[]) env.value ??= "";
}

export function sandboxToMessage(sandbox: Sandbox): SandboxMessage {
  return fromJson(SandboxSchema, sandbox as unknown as JsonObject);
}

export function sandboxFromMessage(message: SandboxMessage): Sandbox {
  const json = toJson(SandboxSchema, message) as JsonObject;
  json.apiVersion ??= API_VERSION;
  json.kind ??= "Sandbox";
  json.metadata ??= { name: "" };
  json.spec ??= { image: "", poolRef: "" };
  fixMetadata(json);
  fixEnvs(json.spec as JsonObject);
  return json as unknown as Sandbox;
}

export function sandboxSpecToMessage(spec: SandboxSpec): SandboxSpecMessage {
  return fromJson(SandboxSpecSchema, spec as unknown as JsonObject);
}

/** An absent message becomes an empty spec, so validation reports the missing fields by name. */
export function sandboxSpecFromMessage(message: SandboxSpecMessage | undefined): SandboxSpec {
  if (!message) return {} as SandboxSpec;
  const json = toJson(SandboxSpecSchema, message) as JsonObject;
  fixEnvs(json);
  // Required strings the wire cannot tell from absent: an empty value must fail as "empty", by name.
  return { image: "", poolRef: "", ...json };
}

export function sandboxPoolToMessage(pool: SandboxPool): SandboxPoolMessage {
  const { agentTemplate, ...spec } = pool.spec;
  const json = { ...pool, spec: { ...spec, ...(agentTemplate ? { agentTemplateJson: JSON.stringify(agentTemplate) } : {}) } };
  return fromJson(SandboxPoolSchema, json as unknown as JsonObject);
}

export function sandboxPoolFromMessage(message: SandboxPoolMessage): SandboxPool {
  const json = toJson(SandboxPoolSchema, message) as JsonObject;
  json.apiVersion ??= API_VERSION;
  json.kind ??= "SandboxPool";
  json.metadata ??= { name: "" };
  fixMetadata(json);
  const spec = (json.spec ?? {}) as JsonObject;
  // proto3 omits zero integers from JSON, but poolMin and poolMax are required and 0 is a meaningful
  // value (scale to zero); without this a pool with poolMin 0 would fail validation after the wire.
  const capacity = spec.capacity as JsonObject | undefined;
  if (capacity) {
    capacity.poolMin ??= 0;
    capacity.poolMax ??= 0;
  }
  if (typeof spec.agentTemplateJson === "string") {
    try {
      spec.agentTemplate = JSON.parse(spec.agentTemplateJson) as JsonObject;
    } catch (error) {
      throw new ValidationError(
        "spec.agentTemplate",
        `is not valid JSON (${error instanceof Error ? error.message : String(error)}): send a Pod template object`,
      );
    }
    delete spec.agentTemplateJson;
  }
  json.spec = spec;
  return json as unknown as SandboxPool;
}
