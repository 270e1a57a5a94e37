import { Type, type Static } from "@sinclair/typebox";

/** DNS-1123 label: what Kubernetes accepts as a name, and safe as a containerd id. */
export const NAME_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
export const NAME_MAX_LENGTH = 63;

/**
 * An owner of an object (Kubernetes' metav1.OwnerReference). In the Kubernetes mode its garbage
 * collector deletes an object whose owner is gone — also one created after its owner was deleted,
 * which is how a sandbox a replica creates for a pool being deleted at that moment still goes.
 * The embedded store keeps it and nothing acts on it.
 */
export const OwnerReference = Type.Object(
  {
    apiVersion: Type.String({ minLength: 1 }),
    kind: Type.String({ minLength: 1 }),
    name: Type.String({ minLength: 1 }),
    uid: Type.String({ minLength: 1 }),
    controller: Type.Optional(Type.Boolean()),
    blockOwnerDeletion: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type OwnerReference = Static<typeof OwnerReference>;

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
    ownerReferences: Type.Optional(Type.Array(OwnerReference)),
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
