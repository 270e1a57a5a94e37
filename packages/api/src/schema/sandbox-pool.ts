import { Type, type Static } from "@sinclair/typebox";
import { PoolNetwork } from "./network.js";
import { API_VERSION, Condition, ObjectMeta } from "./object-meta.js";

export const PoolCapacity = Type.Object(
  {
    poolMin: Type.Integer({ minimum: 0, description: "Fewest agents the pool keeps." }),
    poolMax: Type.Integer({ minimum: 0, description: "Most agents the pool may run." }),
    bufferMin: Type.Optional(Type.Integer({ minimum: 0, description: "Fewest free sandbox slots kept warm." })),
    bufferMax: Type.Optional(
      Type.Integer({ minimum: 0, description: "Most free sandbox slots kept warm; idle agents beyond it are released after scaleDownDelaySeconds." }),
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

export const SandboxResources = Type.Object(
  {
    cpu: Type.Optional(Type.String({ pattern: "^([0-9]+m|[0-9]+(\\.[0-9]+)?)$", description: "CPU per sandbox, e.g. 500m or 2." })),
    memory: Type.Optional(Type.String({ pattern: "^[0-9]+(Ki|Mi|Gi|Ti|K|M|G|T)?$", description: "Memory per sandbox, e.g. 256Mi." })),
    pids: Type.Optional(Type.Integer({ minimum: 1, description: "Most processes (threads included) per sandbox. Default 4096." })),
  },
  { additionalProperties: false },
);
export type SandboxResources = Static<typeof SandboxResources>;

export const SandboxPoolSpec = Type.Object(
  {
    capacity: PoolCapacity,
    maxSandboxesPerPod: Type.Integer({ minimum: 1, maximum: 1024, description: "Sandbox slots per agent." }),
    runtimeType: Type.Optional(RuntimeType),
    image: Type.Optional(Type.String({ minLength: 1, description: "Default image of sandboxes that name none." })),
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
      Type.Array(Type.String({ minLength: 1 }), {
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
