/**
 * A pool's agent limits: the `resources.limits` of the agent container (named `agent`, else the
 * first) in its `spec.agentTemplate`. All of an agent's sandboxes together stay within them (the
 * agent bounds the cgroup its sandboxes' cgroups are made in), each within its own
 * `sandboxResources`. Kubernetes hands them to the agent through the Downward API; the embedded mode
 * reads them here.
 */
import { ValidationError } from "../errors.js";
import { parseQuantity } from "./quantity.js";
import type { SandboxPoolSpec } from "./sandbox-pool.js";

/** The container of an agent Pod the agent runs in (the first one when none is named so). */
export const AGENT_CONTAINER_NAME = "agent";

export interface AgentLimits {
  /** Thousandths of a core. */
  cpuMillis?: number;
  memoryBytes?: number;
}

interface TemplateContainer {
  name?: unknown;
  resources?: { limits?: Record<string, unknown> };
}

/** `value[key]` of an object, else undefined. */
function member(value: unknown, key: string): unknown {
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>)[key] : undefined;
}

/**
 * The agent limits `spec.agentTemplate` sets (none it does not), read as Kubernetes reads them.
 * Throws a ValidationError naming the field for a limit that is not a positive quantity. The API
 * server does not look inside a pool's agentTemplate, so this is checked where fsb applies a pool
 * (never on the store's writes: a pool kubectl wrote must stay writable).
 */
export function agentLimitsOf(spec: Pick<SandboxPoolSpec, "agentTemplate">): AgentLimits {
  const containers = member(member(spec.agentTemplate, "spec"), "containers");
  if (!Array.isArray(containers) || containers.length === 0) return {};
  const named = containers.findIndex((container: TemplateContainer) => container?.name === AGENT_CONTAINER_NAME);
  const index = Math.max(0, named);
  const limits = (containers[index] as TemplateContainer | undefined)?.resources?.limits;
  if (!limits) return {};
  const field = (name: string) => `spec.agentTemplate.spec.containers[${index}].resources.limits.${name}`;
  /** The limit's value in base units (cores, bytes); undefined when not set. */
  const quantity = (name: string): number | undefined => {
    const value = limits[name];
    if (value === undefined) return undefined;
    const parsed = typeof value === "string" ? parseQuantity(value, field(name)) : typeof value === "number" ? value : Number.NaN;
    if (!Number.isFinite(parsed) || parsed <= 0) throw new ValidationError(field(name), `${JSON.stringify(value)} is not a positive quantity`);
    return parsed;
  };
  const cpu = quantity("cpu");
  const memory = quantity("memory");
  return {
    // The Downward API's rounding: up to the next millicore, down to the byte.
    ...(cpu !== undefined ? { cpuMillis: Math.ceil(Math.round(cpu * 1e9) / 1e6) } : {}),
    ...(memory !== undefined ? { memoryBytes: Math.max(1, Math.floor(memory)) } : {}),
  };
}
