import { Type, type Static } from "@sinclair/typebox";
import { ValidationError } from "../errors.js";
import { PoolNetwork } from "./network.js";
import { API_VERSION, Condition, ObjectMeta } from "./object-meta.js";
import { IMAGE_MAX_LENGTH } from "./process-rules.js";

/** The largest count a pool's spec may set: its wire messages carry counts as int32. */
export const INT32_MAX = 2 ** 31 - 1;

export const PoolCapacity = Type.Object(
  {
    poolMin: Type.Integer({ minimum: 0, maximum: INT32_MAX, description: "Fewest agents the pool keeps." }),
    poolMax: Type.Integer({ minimum: 0, maximum: INT32_MAX, description: "Most agents the pool may run." }),
    bufferMin: Type.Optional(Type.Integer({ minimum: 0, maximum: INT32_MAX, description: "Fewest free sandbox slots kept warm." })),
    bufferMax: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: INT32_MAX,
        description: "Most free sandbox slots kept warm; idle agents beyond it are released after scaleDownDelaySeconds.",
      }),
    ),
    scaleDownDelaySeconds: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 86400,
        description: "How long spare capacity must stay idle before idle agents are released (down to poolMin, 0 included). Default 300.",
      }),
    ),
    wakeTimeoutSeconds: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 3600,
        description: "How long a create waits for the pool to start an agent (scale from zero, or growing under poolMax). Default 30.",
      }),
    ),
    dynamicBuffer: Type.Optional(
      Type.Boolean({
        description:
          "Flow-aware buffer: keep as many free slots as the creates expected while an agent starts — ceil(creates per second over the last minute × the pool's measured agent start time) — at least bufferMin and at most bufferMax when set. status.buffer shows it. Default false (bufferMin).",
      }),
    ),
  },
  {
    additionalProperties: false,
    // The cross-field rules of validateSandboxPool, for the API server (CEL, Kubernetes mode).
    "x-kubernetes-validations": [
      {
        rule: "self.poolMin <= self.poolMax",
        message: "is greater than poolMax",
        fieldPath: ".poolMin",
        reason: "FieldValueInvalid",
      },
      {
        rule: "!has(self.bufferMin) || !has(self.bufferMax) || self.bufferMin <= self.bufferMax",
        message: "is greater than bufferMax",
        fieldPath: ".bufferMin",
        reason: "FieldValueInvalid",
      },
    ],
  },
);
export type PoolCapacity = Static<typeof PoolCapacity>;

export const RuntimeType = Type.Union([Type.Literal("container"), Type.Literal("gvisor")], {
  description: "container: runc; gvisor: runsc (for untrusted code).",
});
export type RuntimeType = Static<typeof RuntimeType>;

/**
 * The smallest CPU limit of a sandbox, in millicores: a CFS quota of 1 ms per 100 ms period, the
 * least the kernel takes. A smaller quantity would be sent as 0 millicores, which reads as no limit.
 */
export const SANDBOX_CPU_MIN_MILLIS = 10;
/** The largest CPU limit of a sandbox, in millicores: what an agent create request carries (int32). */
export const SANDBOX_CPU_MAX_MILLIS = INT32_MAX;
/**
 * The smallest memory limit of a sandbox: 6 MiB, Docker's floor (moby/moby#41167). The kernel takes
 * any limit, but below it runc's own init, which runs in the sandbox's cgroup before the command,
 * is OOM-killed and the sandbox never starts. 0 would read as no limit.
 */
export const SANDBOX_MEMORY_MIN_BYTES = 6 * 1024 ** 2;
/** Memory limits are below 2^53 bytes (8 PiB): the most a number holds exactly, and within what the agent API carries (int64). */
export const SANDBOX_MEMORY_LIMIT_BYTES = 2 ** 53;

/**
 * The smallest disk limit of a sandbox: 1 MiB. What the agent writes into a sandbox's run directory
 * (its hosts and resolv.conf files, its helper's records) counts too, a few KiB; 0 would read as no limit.
 */
export const SANDBOX_EPHEMERAL_STORAGE_MIN_BYTES = 1024 ** 2;

const CPU_RANGE = `allowed: ${SANDBOX_CPU_MIN_MILLIS}m..${SANDBOX_CPU_MAX_MILLIS}m (${SANDBOX_CPU_MIN_MILLIS}m is the kernel's smallest CPU quota, 1 ms per 100 ms; leave the field out for no limit)`;
const MEMORY_RANGE =
  "allowed: at least 6Mi (below it runc's init is OOM-killed before the command starts) and less than 8192Ti (2^53 bytes); leave the field out for no limit";

const EPHEMERAL_STORAGE_RANGE = "allowed: at least 1Mi and less than 8192Ti (2^53 bytes); leave the field out for no limit";

/** The longest CPU or memory quantity: bounds the cost of the CEL rules below. */
const QUANTITY_MAX_LENGTH = 64;
/**
 * `self` as Kubernetes' quantity() reads it: the memory grammar takes `K` for 1000 (as `M`, `G`
 * and `T`), which Kubernetes writes `k`.
 */
const MEMORY_QUANTITY = "(self.endsWith('K') ? self.substring(0, size(self) - 1) + 'k' : self)";

/**
 * A quantity of bytes in the memory grammar (`256Mi`, `1G`), from `minBytes` to below 2^53, the
 * range told the API server as a CEL rule (a value of another grammar is left to the pattern).
 */
function bytesQuantity(description: string, minBytes: number, range: string) {
  return Type.String({
    maxLength: QUANTITY_MAX_LENGTH,
    pattern: "^[0-9]+(Ki|Mi|Gi|Ti|K|M|G|T)?$",
    description,
    "x-kubernetes-validations": [
      {
        rule: `!isQuantity(${MEMORY_QUANTITY}) || (quantity(${MEMORY_QUANTITY}).compareTo(quantity('${minBytes}')) >= 0 && quantity(${MEMORY_QUANTITY}).isLessThan(quantity('${SANDBOX_MEMORY_LIMIT_BYTES}')))`,
        message: `is out of range; ${range}`,
      },
    ],
  });
}

export const SandboxResources = Type.Object(
  {
    cpu: Type.Optional(
      Type.String({
        maxLength: QUANTITY_MAX_LENGTH,
        pattern: "^([0-9]+m|[0-9]+(\\.[0-9]+)?)$",
        description: `CPU per sandbox, e.g. 500m or 2; at least ${SANDBOX_CPU_MIN_MILLIS}m.`,
        // The ranges checkSandboxResources checks, for the API server (CEL, Kubernetes mode). A value
        // of another grammar is left to the pattern.
        "x-kubernetes-validations": [
          {
            rule: `!isQuantity(self) || (quantity(self).compareTo(quantity('${SANDBOX_CPU_MIN_MILLIS}m')) >= 0 && quantity(self).compareTo(quantity('${SANDBOX_CPU_MAX_MILLIS}m')) <= 0)`,
            message: `is out of range; ${CPU_RANGE}`,
          },
        ],
      }),
    ),
    memory: Type.Optional(
      bytesQuantity(
        "Memory per sandbox, e.g. 256Mi: a whole number of bytes, or with one of the suffixes Ki, Mi, Gi, Ti, K, M, G, T; at least 6Mi, less than 8192Ti.",
        SANDBOX_MEMORY_MIN_BYTES,
        MEMORY_RANGE,
      ),
    ),
    pids: Type.Optional(Type.Integer({ minimum: 1, maximum: INT32_MAX, description: "Most processes (threads included) per sandbox. Default 4096." })),
    ephemeralStorage: Type.Optional(
      bytesQuantity(
        "Disk per sandbox, e.g. 1Gi (the memory grammar): what it may hold on its node's disk, its root file system's own layer, its run directory and the files its processes removed but hold open. Its agent measures it every 10 s (FSB_DISK_CHECK_INTERVAL_MS) and stops a sandbox past it, as the kubelet evicts a Pod: the sandbox becomes Lost with reason Evicted (failurePolicy AutoRecreate replaces it). gVisor sandboxes keep their root file system's changes in memory (bounded by memory), so only their run directory counts. At least 1Mi, less than 8192Ti; unset: no limit.",
        SANDBOX_EPHEMERAL_STORAGE_MIN_BYTES,
        EPHEMERAL_STORAGE_RANGE,
      ),
    ),
  },
  { additionalProperties: false },
);
export type SandboxResources = Static<typeof SandboxResources>;

/**
 * Throws a ValidationError on `field`.cpu, .memory or .ephemeralStorage for a limit out of its range: one that cannot
 * work, would read as no limit, or does not fit the agent API. The quantities are compared exactly,
 * as the API server's quantity() does (the CEL rules above); the schema has checked their grammar.
 */
export function checkSandboxResources(resources: SandboxResources | undefined, field: string): void {
  const { cpu, memory, ephemeralStorage } = resources ?? {};
  if (cpu !== undefined) {
    const [numerator, denominator] = millicoresOf(cpu);
    if (numerator < BigInt(SANDBOX_CPU_MIN_MILLIS) * denominator || numerator > BigInt(SANDBOX_CPU_MAX_MILLIS) * denominator) {
      throw new ValidationError(`${field}.cpu`, `${JSON.stringify(cpu)} is out of range; ${CPU_RANGE}`);
    }
  }
  if (memory !== undefined) {
    const bytes = bytesOf(memory);
    if (bytes < BigInt(SANDBOX_MEMORY_MIN_BYTES) || bytes >= BigInt(SANDBOX_MEMORY_LIMIT_BYTES)) {
      throw new ValidationError(`${field}.memory`, `${JSON.stringify(memory)} is out of range; ${MEMORY_RANGE}`);
    }
  }
  if (ephemeralStorage !== undefined) {
    const bytes = bytesOf(ephemeralStorage);
    if (bytes < BigInt(SANDBOX_EPHEMERAL_STORAGE_MIN_BYTES) || bytes >= BigInt(SANDBOX_MEMORY_LIMIT_BYTES)) {
      throw new ValidationError(`${field}.ephemeralStorage`, `${JSON.stringify(ephemeralStorage)} is out of range; ${EPHEMERAL_STORAGE_RANGE}`);
    }
  }
}

/** A CPU quantity of the schema's grammar (`500m`, `2`, `0.0125`) in millicores, exactly: [numerator, denominator]. */
function millicoresOf(quantity: string): [bigint, bigint] {
  if (quantity.endsWith("m")) return [BigInt(quantity.slice(0, -1)), 1n];
  const [cores = "0", fraction = ""] = quantity.split(".");
  return [BigInt(cores + fraction) * 1000n, 10n ** BigInt(fraction.length)];
}

const MEMORY_UNITS: Record<string, bigint> = {
  "": 1n,
  K: 1000n,
  M: 1000n ** 2n,
  G: 1000n ** 3n,
  T: 1000n ** 4n,
  Ki: 1024n,
  Mi: 1024n ** 2n,
  Gi: 1024n ** 3n,
  Ti: 1024n ** 4n,
};

/** A memory quantity of the schema's grammar (`256Mi`, `1G`) in bytes, exactly. */
function bytesOf(quantity: string): bigint {
  const [, digits = "0", unit = ""] = /^([0-9]+)(.*)$/.exec(quantity) ?? [];
  return BigInt(digits) * (MEMORY_UNITS[unit] ?? 1n);
}

export const SandboxPoolSpec = Type.Object(
  {
    capacity: PoolCapacity,
    maxSandboxesPerPod: Type.Integer({ minimum: 1, maximum: 1024, description: "Sandbox slots per agent." }),
    runtimeType: Type.Optional(RuntimeType),
    image: Type.Optional(Type.String({ minLength: 1, maxLength: IMAGE_MAX_LENGTH, description: "Default image of sandboxes that name none." })),
    sandboxResources: Type.Optional(SandboxResources),
    preparedInstances: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 64,
        description:
          "Sandboxes of the pool's template (image, runtime, resources, network) each agent keeps prepared ahead: a create that matches claims one in milliseconds. Needs spec.image (runc or gvisor), or a gvisor pool's spec.preparedFromCheckpoint; at most maxSandboxesPerPod. Unset: 2 (at most maxSandboxesPerPod) for a runtimeType container pool with spec.image or a gvisor pool with spec.preparedFromCheckpoint, else 0 (a gvisor pool's instances of its image are asked for: each holds a gVisor kernel's memory); 0: none. Unclaimed instances take no sandbox slot: a claimed one becomes a sandbox and takes one.",
      }),
    ),
    preparedFromCheckpoint: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 63,
        pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description:
          "gVisor pools: the checkpoint (of this namespace, taken of one of the pool's sandboxes) that each agent restores its preparedInstances from, ahead of need: a restore of that checkpoint ('fsb run --from-checkpoint') claims one. Until the checkpoint exists the agents keep none. preparedInstances unset: 2 (at most maxSandboxesPerPod).",
      }),
    ),
    network: Type.Optional(PoolNetwork),
    prewarmImages: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: IMAGE_MAX_LENGTH }), {
        uniqueItems: true,
        maxItems: 32,
        description: "Images pulled on every agent of the pool before it reports ready.",
      }),
    ),
    imagePullSecret: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          "Kubernetes mode: name of a kubernetes.io/dockerconfigjson Secret in the pool's namespace with registry credentials. Reserved: not read yet (the embedded mode uses fsb login).",
      }),
    ),
    agentTemplate: Type.Optional(
      Type.Object(
        {},
        {
          additionalProperties: true,
          description: "Pod template of the agents (Kubernetes mode).",
          "x-kubernetes-preserve-unknown-fields": true,
        },
      ),
    ),
  },
  {
    additionalProperties: false,
    // The cross-field rules of validateSandboxPool about prepared instances, for the API server (CEL):
    // a pool the controller's own writes would refuse must not be accepted by kubectl.
    "x-kubernetes-validations": [
      {
        rule: "!has(self.preparedFromCheckpoint) || (has(self.runtimeType) && self.runtimeType == 'gvisor')",
        message: "instances restored from a checkpoint need runtimeType gvisor",
        fieldPath: ".preparedFromCheckpoint",
        reason: "FieldValueInvalid",
      },
      {
        rule: "!has(self.preparedInstances) || self.preparedInstances <= self.maxSandboxesPerPod",
        message: "is greater than maxSandboxesPerPod",
        fieldPath: ".preparedInstances",
        reason: "FieldValueInvalid",
      },
      {
        rule: "!has(self.preparedInstances) || self.preparedInstances == 0 || has(self.preparedFromCheckpoint) || has(self.image)",
        message: "needs spec.image, or a gvisor pool that names spec.preparedFromCheckpoint (or set it to 0)",
        fieldPath: ".preparedInstances",
        reason: "FieldValueInvalid",
      },
    ],
  },
);
export type SandboxPoolSpec = Static<typeof SandboxPoolSpec>;

export const SandboxPoolStatus = Type.Object(
  {
    agents: Type.Optional(Type.Integer({ minimum: 0 })),
    readyAgents: Type.Optional(Type.Integer({ minimum: 0 })),
    sandboxes: Type.Optional(Type.Integer({ minimum: 0 })),
    freeSlots: Type.Optional(Type.Integer({ minimum: 0 })),
    desiredAgents: Type.Optional(Type.Integer({ minimum: 0, description: "Agents the pool sizer wants right now." })),
    buffer: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: "Free slots the pool keeps for creates now: bufferMin, or with dynamicBuffer what the recent create rate asks for.",
      }),
    ),
    updatedAgents: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          "Agents started from the pool's current agent settings (agentTemplate, limits, prepared instances). The others are replaced once idle, one at a time.",
      }),
    ),
    preparedInstances: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          "Prepared instances ready to be claimed on the pool's ready agents, as they last reported them (each keeps spec.preparedInstances). Unset when the pool keeps none. The condition InstancesPrepared=False says why agents cannot make them.",
      }),
    ),
    hotImages: Type.Optional(Type.Array(Type.String(), { description: "Images most used in the pool recently; pre-pulled on agents that lack them." })),
    conditions: Type.Optional(Type.Array(Condition)),
    observedGeneration: Type.Optional(Type.Integer({ minimum: 0, description: "The metadata.generation this status was computed for." })),
  },
  { additionalProperties: false },
);
export type SandboxPoolStatus = Static<typeof SandboxPoolStatus>;

export const SandboxPool = Type.Object(
  {
    apiVersion: Type.Literal(API_VERSION),
    kind: Type.Literal("SandboxPool"),
    metadata: ObjectMeta,
    spec: SandboxPoolSpec,
    status: Type.Optional(SandboxPoolStatus),
  },
  { additionalProperties: false },
);
export type SandboxPool = Static<typeof SandboxPool>;

/**
 * Prepared instances an agent of the pool keeps: spec.preparedInstances when set (0: none), else
 * DEFAULT_PREPARED_INSTANCES, at most maxSandboxesPerPod, for a runc pool that names an image or a
 * gVisor pool that names preparedFromCheckpoint, and none for any other: without an image or a
 * checkpoint there is no template to prepare, and a gVisor pool's instances of its image are asked
 * for explicitly (each waiting one holds a gVisor kernel's memory, tens of MiB, where a runc one
 * holds a process). The one place the default is decided: stored pools keep the field unset, so
 * they follow it.
 */
export function preparedInstancesOf(spec: SandboxPoolSpec): number {
  if (spec.preparedInstances !== undefined) return spec.preparedInstances;
  const runc = spec.image && (spec.runtimeType ?? "container") === "container";
  const gvisorCopies = spec.runtimeType === "gvisor" && spec.preparedFromCheckpoint;
  return runc || gvisorCopies ? Math.min(DEFAULT_PREPARED_INSTANCES, spec.maxSandboxesPerPod) : 0;
}

/**
 * Prepared instances per agent of a runc pool that names an image and leaves preparedInstances
 * unset: two creates in a row are served at once while the stock refills in the background, and
 * an idle agent holds only two extra waiting processes.
 */
export const DEFAULT_PREPARED_INSTANCES = 2;
