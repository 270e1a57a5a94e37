import { existsSync, readFileSync, statSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import { parseAllDocuments } from "yaml";
import {
  API_VERSION,
  FsbError,
  NotFoundError,
  ValidationError,
  agentLimitsOf,
  validateSandbox,
  validateSandboxPool,
  type Sandbox,
  type SandboxPool,
} from "@fast-sandbox/api";
import { connect, type GlobalOptions } from "../connection.js";

/** One object of a manifest file and where it came from (`file document N`, counting empty documents too). */
export interface Manifest {
  where: string;
  object: unknown;
}

/** Parses a multi-document YAML (or JSON) manifest file, skipping empty documents; `-` reads stdin. */
export function readManifests(file: string): Manifest[] {
  if (file !== "-" && existsSync(file) && statSync(file).isDirectory()) {
    throw new ValidationError("-f", `${file} is a directory; give one manifest file (several documents may be in it, separated by ---), or - for stdin`);
  }
  if (file !== "-" && !existsSync(file)) throw new ValidationError("-f", `${file}: no such file`);
  const text = readFileSync(file === "-" ? 0 : file, "utf8");
  const documents = parseAllDocuments(text);
  const list = Array.isArray(documents) ? documents : [documents];
  const manifests: Manifest[] = [];
  list.forEach((document, index) => {
    const where = `${file} document ${index + 1}`;
    if (document.errors.length > 0) throw new ValidationError(where, document.errors[0]?.message ?? "invalid YAML");
    const value: unknown = document.toJS();
    if (value !== null && value !== undefined) manifests.push({ where, object: value });
  });
  return manifests;
}

/** Validates one manifest and names the document and field on error. */
export function checkManifest(object: unknown, where: string): Sandbox | SandboxPool {
  const record = object as { apiVersion?: unknown; kind?: unknown };
  if (typeof record !== "object" || record === null || Array.isArray(record)) throw new ValidationError(where, "is not an object");
  if (record.apiVersion !== API_VERSION) {
    throw new ValidationError(`${where}: apiVersion`, `${JSON.stringify(record.apiVersion)} is not supported; use ${API_VERSION}`);
  }
  const prefixed = (error: unknown): never => {
    if (error instanceof ValidationError) throw new ValidationError(`${where}: ${error.field}`, error.message.replace(`${error.field}: `, ""));
    throw error;
  };
  switch (record.kind) {
    case "Sandbox":
      try {
        validateSandbox(object);
      } catch (error) {
        prefixed(error);
      }
      return object as Sandbox;
    case "SandboxPool":
      try {
        validateSandboxPool(object);
        agentLimitsOf(object.spec);
      } catch (error) {
        prefixed(error);
      }
      return object as SandboxPool;
    default:
      throw new ValidationError(`${where}: kind`, `${JSON.stringify(record.kind)} is not a kind fsb knows; allowed: Sandbox, SandboxPool`);
  }
}

/** A lookup's NotFoundError as undefined (the object is not there yet); any other error as it is. */
function unlessNotFound(error: unknown): undefined {
  if (error instanceof NotFoundError) return undefined;
  throw error;
}

/**
 * What `apply` did to an object, as `kubectl apply` says it: `created` when it was not there,
 * `configured` when its spec, labels or annotations changed, `unchanged` when the control plane holds
 * the same ones as before (both as it returned them, so its defaults count on both sides).
 */
export function outcome(before: Sandbox | SandboxPool | undefined, after: Sandbox | SandboxPool): "created" | "configured" | "unchanged" {
  if (!before) return "created";
  const stated = (object: Sandbox | SandboxPool) => ({
    spec: object.spec,
    labels: object.metadata.labels ?? {},
    annotations: object.metadata.annotations ?? {},
  });
  return isDeepStrictEqual(stated(before), stated(after)) ? "unchanged" : "configured";
}

export async function apply(options: GlobalOptions & { file: string; namespace?: string }): Promise<void> {
  // Number documents as they are in the file: skipped empty documents must not shift the numbers.
  const objects = readManifests(options.file).map(({ where, object }) => checkManifest(object, where));
  const { client, namespace: defaultNamespace } = await connect(options);
  // Pools first, so sandboxes in the same file find their pool.
  const ordered = [...objects.filter((o) => o.kind === "SandboxPool"), ...objects.filter((o) => o.kind === "Sandbox")];
  for (const object of ordered) {
    const namespace = object.metadata.namespace ?? defaultNamespace;
    if (object.kind === "SandboxPool") {
      const existing = await client.pools.get(object.metadata.name, { namespace }).catch(unlessNotFound);
      const applied = await client.pools.apply({ ...object, metadata: { ...object.metadata, namespace } });
      process.stdout.write(`sandboxpool/${object.metadata.name} ${outcome(existing, applied)}\n`);
      continue;
    }
    const existing = await client.sandboxes.get(object.metadata.name, { namespace }).catch(unlessNotFound);
    if (existing) {
      // The manifest states the labels: those it no longer has are removed.
      const updated = await client.sandboxes.update(object.metadata.name, object.spec, { namespace, labels: object.metadata.labels ?? {} });
      process.stdout.write(`sandbox/${object.metadata.name} ${outcome(existing, updated)}\n`);
    } else {
      const spec = object.spec;
      await client.sandboxes.create({
        name: object.metadata.name,
        namespace,
        pool: spec.poolRef,
        image: spec.image,
        ...(spec.command ? { command: spec.command } : {}),
        ...(spec.args ? { args: spec.args } : {}),
        ...(spec.envs ? { envs: spec.envs } : {}),
        ...(spec.workingDir ? { workingDir: spec.workingDir } : {}),
        ...(spec.exposedPorts ? { exposedPorts: spec.exposedPorts } : {}),
        ...(spec.expireTime ? { expireTime: spec.expireTime } : {}),
        ...(spec.failurePolicy ? { failurePolicy: spec.failurePolicy } : {}),
        ...(spec.recoveryTimeoutSeconds !== undefined ? { recoveryTimeoutSeconds: spec.recoveryTimeoutSeconds } : {}),
        ...(spec.resetRevision ? { resetRevision: spec.resetRevision } : {}),
        ...(spec.consistencyMode ? { consistencyMode: spec.consistencyMode } : {}),
        ...(spec.egress ? { egress: spec.egress } : {}),
        ...(object.metadata.labels ? { labels: object.metadata.labels } : {}),
      });
      process.stdout.write(`sandbox/${object.metadata.name} created\n`);
    }
  }
  if (ordered.length === 0) throw new FsbError("invalid_argument", `${options.file} holds no objects`);
}
