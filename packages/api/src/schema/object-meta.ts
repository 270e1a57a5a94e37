import { Type, type Static } from "@sinclair/typebox";

/** DNS-1123 label: what Kubernetes accepts as a name, and safe as a containerd id. */
export const NAME_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
export const NAME_MAX_LENGTH = 63;

export const ObjectMeta = Type.Object(
  {
    name: Type.String({ pattern: NAME_PATTERN, minLength: 1, maxLength: NAME_MAX_LENGTH }),
    namespace: Type.Optional(Type.String({ pattern: NAME_PATTERN, minLength: 1, maxLength: NAME_MAX_LENGTH })),
    uid: Type.Optional(Type.String()),
    resourceVersion: Type.Optional(Type.String()),
    generation: Type.Optional(Type.Integer({ minimum: 0 })),
    creationTimestamp: Type.Optional(Type.String()),
    deletionTimestamp: Type.Optional(Type.String()),
    finalizers: Type.Optional(Type.Array(Type.String())),
    labels: Type.Optional(Type.Record(Type.String(), Type.String())),
    annotations: Type.Optional(Type.Record(Type.String(), Type.String())),
  },
  { additionalProperties: false },
);
export type ObjectMeta = Static<typeof ObjectMeta>;

export const Condition = Type.Object(
  {
    type: Type.String({ minLength: 1 }),
    status: Type.Union([Type.Literal("True"), Type.Literal("False"), Type.Literal("Unknown")]),
    reason: Type.Optional(Type.String()),
    message: Type.Optional(Type.String()),
    lastTransitionTime: Type.Optional(Type.String()),
    observedGeneration: Type.Optional(
      Type.Integer({ minimum: 0, description: "The metadata.generation the condition was set for (as in Kubernetes' metav1.Condition)." }),
    ),
  },
  { additionalProperties: false },
);
export type Condition = Static<typeof Condition>;

export { GROUP, VERSION, API_VERSION } from "./api-version.js";
