import { Type, type Static } from "@sinclair/typebox";
import { SandboxEgressPolicy } from "./network.js";
import { API_VERSION, Condition, NAME_MAX_LENGTH, NAME_PATTERN, ObjectMeta } from "./object-meta.js";
import {
  ARGUMENT_DESCRIPTION,
  ENV_NAME_DESCRIPTION,
  ENV_NAME_PATTERN,
  ENV_VALUE_DESCRIPTION,
  EXPOSED_PORTS_MAX_ITEMS,
  IMAGE_MAX_LENGTH,
  NO_NUL_PATTERN,
  PATH_MAX_LENGTH,
  PROCESS_LIST_MAX_ITEMS,
  PROCESS_STRING_MAX_LENGTH,
  REVISION_MAX_LENGTH,
  WORKING_DIR_DESCRIPTION,
  WORKING_DIR_PATTERN,
} from "./process-rules.js";

export const EnvVar = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: PROCESS_STRING_MAX_LENGTH, pattern: ENV_NAME_PATTERN, description: ENV_NAME_DESCRIPTION }),
    value: Type.String({ maxLength: PROCESS_STRING_MAX_LENGTH, pattern: NO_NUL_PATTERN, description: ENV_VALUE_DESCRIPTION }),
  },
  { additionalProperties: false },
);
export type EnvVar = Static<typeof EnvVar>;

/** An argument of a process (an element of a command or its args). */
const Argument = Type.String({ maxLength: PROCESS_STRING_MAX_LENGTH, pattern: NO_NUL_PATTERN, description: ARGUMENT_DESCRIPTION });

export const FailurePolicy = Type.Union([Type.Literal("Manual"), Type.Literal("AutoRecreate")], {
  description: "What happens when the sandbox's agent is lost: Manual leaves it Lost, AutoRecreate recreates it elsewhere.",
});
export type FailurePolicy = Static<typeof FailurePolicy>;

export const ConsistencyMode = Type.Union([Type.Literal("fast"), Type.Literal("strong")], {
  description: "fast: answer as soon as the sandbox runs and write its status afterwards; strong: answer after the status is stored.",
});
export type ConsistencyMode = Static<typeof ConsistencyMode>;

export const SandboxSpec = Type.Object(
  {
    image: Type.String({
      minLength: 1,
      maxLength: IMAGE_MAX_LENGTH,
      description: "Image reference (e.g. python:3.12, registry.example.com/team/app@sha256:…); pulled by the agent when missing.",
    }),
    command: Type.Optional(Type.Array(Argument, { maxItems: PROCESS_LIST_MAX_ITEMS, description: "Replaces the image's entrypoint." })),
    args: Type.Optional(Type.Array(Argument, { maxItems: PROCESS_LIST_MAX_ITEMS, description: "Replaces the image's cmd." })),
    envs: Type.Optional(Type.Array(EnvVar, { maxItems: PROCESS_LIST_MAX_ITEMS })),
    workingDir: Type.Optional(Type.String({ maxLength: PATH_MAX_LENGTH, pattern: WORKING_DIR_PATTERN, description: WORKING_DIR_DESCRIPTION })),
    exposedPorts: Type.Optional(
      Type.Array(Type.Integer({ minimum: 1, maximum: 65535 }), {
        uniqueItems: true,
        maxItems: EXPOSED_PORTS_MAX_ITEMS,
        description:
          "Ports the sandbox listens on. On a Shared network each is exclusive on its agent's address; an Isolated sandbox has an address of its own.",
      }),
    ),
    poolRef: Type.String({ pattern: NAME_PATTERN, minLength: 1, maxLength: NAME_MAX_LENGTH, description: "Name of the SandboxPool in the same namespace." }),
    expireTime: Type.Optional(Type.String({ format: "date-time", description: "RFC 3339 time after which the sandbox is deleted." })),
    failurePolicy: Type.Optional(FailurePolicy),
    recoveryTimeoutSeconds: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 86400,
        description: "How long the sandbox's agent may be unreachable before failurePolicy acts. Default 30.",
      }),
    ),
    resetRevision: Type.Optional(
      Type.String({ maxLength: REVISION_MAX_LENGTH, description: "Changing it replaces the running instance with a new one (same name and spec)." }),
    ),
    consistencyMode: Type.Optional(ConsistencyMode),
    egress: Type.Optional(SandboxEgressPolicy),
  },
  {
    additionalProperties: false,
    // What the fast path refuses to change after creation (only expireTime, failurePolicy,
    // recoveryTimeoutSeconds, resetRevision and consistencyMode may change), for the API server.
    "x-kubernetes-validations": [
      {
        rule: "self.image == oldSelf.image",
        message: "is immutable; delete the sandbox and create a new one",
        fieldPath: ".image",
        reason: "FieldValueForbidden",
      },
      {
        rule: "has(self.command) == has(oldSelf.command) && (!has(self.command) || self.command == oldSelf.command)",
        message: "is immutable; delete the sandbox and create a new one",
        fieldPath: ".command",
        reason: "FieldValueForbidden",
      },
      {
        rule: "has(self.args) == has(oldSelf.args) && (!has(self.args) || self.args == oldSelf.args)",
        message: "is immutable; delete the sandbox and create a new one",
        fieldPath: ".args",
        reason: "FieldValueForbidden",
      },
      {
        rule: "has(self.envs) == has(oldSelf.envs) && (!has(self.envs) || self.envs == oldSelf.envs)",
        message: "is immutable; delete the sandbox and create a new one",
        fieldPath: ".envs",
        reason: "FieldValueForbidden",
      },
      {
        rule: "has(self.workingDir) == has(oldSelf.workingDir) && (!has(self.workingDir) || self.workingDir == oldSelf.workingDir)",
        message: "is immutable; delete the sandbox and create a new one",
        fieldPath: ".workingDir",
        reason: "FieldValueForbidden",
      },
      {
        rule: "has(self.exposedPorts) == has(oldSelf.exposedPorts) && (!has(self.exposedPorts) || self.exposedPorts == oldSelf.exposedPorts)",
        message: "is immutable; delete the sandbox and create a new one",
        fieldPath: ".exposedPorts",
        reason: "FieldValueForbidden",
      },
      {
        rule: "has(self.egress) == has(oldSelf.egress) && (!has(self.egress) || self.egress == oldSelf.egress)",
        message: "is immutable; delete the sandbox and create a new one",
        fieldPath: ".egress",
        reason: "FieldValueForbidden",
      },
      {
        rule: "self.poolRef == oldSelf.poolRef",
        message: "is immutable; delete the sandbox and create a new one",
        fieldPath: ".poolRef",
        reason: "FieldValueForbidden",
      },
    ],
  },
);
export type SandboxSpec = Static<typeof SandboxSpec>;

export const SandboxPhase = Type.Union([
  Type.Literal("Pending"),
  Type.Literal("Bound"),
  Type.Literal("Running"),
  Type.Literal("Terminating"),
  Type.Literal("Expired"),
  Type.Literal("Failed"),
  Type.Literal("Lost"),
  // Saved (memory and files, a gVisor checkpoint on its node) with no instance running: resumed on demand.
  Type.Literal("Paused"),
]);
export type SandboxPhase = Static<typeof SandboxPhase>;

export const SandboxStatus = Type.Object(
  {
    phase: Type.Optional(SandboxPhase),
    assignedPod: Type.Optional(Type.String({ description: "The agent that runs the sandbox." })),
    nodeName: Type.Optional(Type.String()),
    sandboxID: Type.Optional(Type.String({ description: "Id of this instance of the sandbox, chosen by the control plane; its agent reports it by this id." })),
    endpoints: Type.Optional(
      Type.Array(Type.String(), {
        description: "For each exposed port, its URL through the sandbox proxy (http://<port>-<sandboxID>.<domain>/); requests need the X-Access-Token header.",
      }),
    ),
    sandboxIP: Type.Optional(
      Type.String({
        description: "Isolated network: the sandbox's own address on its node's sandbox bridge (the sandbox proxy connects to it); unset for a Shared network.",
      }),
    ),
    accessTokenHash: Type.Optional(
      Type.String({
        pattern: "^sha256:[0-9a-f]{64}$",
        description: "sha256:<hex> of the sandbox's access token (the sandbox proxy's X-Access-Token); the token itself is never stored.",
      }),
    ),
    startTime: Type.Optional(
      Type.String({
        format: "date-time",
        description: "When the sandbox's current instance started running: its create, its last recreation, or its last resume from a pause.",
      }),
    ),
    conditions: Type.Optional(Type.Array(Condition)),
    acceptedResetRevision: Type.Optional(Type.String({ description: "The resetRevision the running instance was created for." })),
    recreations: Type.Optional(Type.Integer({ minimum: 0, description: "How many times the sandbox was recreated (agent lost or reset)." })),
    observedGeneration: Type.Optional(Type.Integer({ minimum: 0, description: "The metadata.generation this status was computed for." })),
  },
  { additionalProperties: false },
);
export type SandboxStatus = Static<typeof SandboxStatus>;

export const Sandbox = Type.Object(
  {
    apiVersion: Type.Literal(API_VERSION),
    kind: Type.Literal("Sandbox"),
    metadata: ObjectMeta,
    spec: SandboxSpec,
    status: Type.Optional(SandboxStatus),
  },
  { additionalProperties: false },
);
export type Sandbox = Static<typeof Sandbox>;
