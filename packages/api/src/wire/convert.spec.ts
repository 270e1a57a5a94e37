import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import type { TObject } from "@sinclair/typebox";
import * as proto from "../gen/fastsandbox/v1alpha1/resources_pb.js";
import { ValidationError } from "../errors.js";
import { API_VERSION, Condition, ObjectMeta } from "../schema/object-meta.js";
import { EgressPolicy, EgressRule, PoolNetwork } from "../schema/network.js";
import { EnvVar, Sandbox, SandboxSpec, SandboxStatus } from "../schema/sandbox.js";
import { PoolCapacity, SandboxPool, SandboxPoolSpec, SandboxPoolStatus, SandboxResources, preparedInstancesOf } from "../schema/sandbox-pool.js";
import { validateSandbox, validateSandboxPool } from "../schema/validation.js";
import { sandboxFromMessage, sandboxPoolFromMessage, sandboxPoolToMessage, sandboxSpecFromMessage, sandboxSpecToMessage, sandboxToMessage } from "./convert.js";

function fullSandbox(): Sandbox {
  return {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: {
      name: "web-1",
      namespace: "team-a",
      uid: "6f1c-42",
      resourceVersion: "1234",
      generation: 7,
      creationTimestamp: "2026-01-02T15:04:05Z",
      deletionTimestamp: "2026-01-02T16:00:00Z",
      finalizers: ["sandbox.fast.io/agent", "sandbox.fast.io/ports"],
      ownerReferences: [
        { apiVersion: API_VERSION, kind: "SandboxPool", name: "pool", uid: "0d5e-17" },
        { apiVersion: "v1", kind: "ConfigMap", name: "settings", uid: "9a1b-33", controller: false, blockOwnerDeletion: true },
      ],
      labels: { app: "web", "app.kubernetes.io/name": "demo" },
      annotations: { "fast.io/note": "hello: world", empty: "" },
    },
    spec: {
      image: "docker.io/library/python:3.12",
      command: ["python", "-c"],
      args: ["print('hi')"],
      envs: [
        { name: "A", value: "1" },
        { name: "EMPTY", value: "" },
      ],
      workingDir: "/srv",
      exposedPorts: [8080, 1, 65535],
      poolRef: "default",
      expireTime: "2026-01-02T17:00:00Z",
      failurePolicy: "AutoRecreate",
      recoveryTimeoutSeconds: 0,
      resetRevision: "r2",
      consistencyMode: "strong",
      egress: { policy: "allowList", allow: [{ cidr: "10.0.0.0/8", ports: [443, 80], protocol: "tcp" }, { cidr: "2001:db8::/32" }] },
    },
    status: {
      phase: "Running",
      assignedPod: "agent-0",
      nodeName: "node-1",
      sandboxID: "c0ffee",
      endpoints: ["10.0.0.1:8080", "10.0.0.1:1"],
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "Started",
          message: "running",
          lastTransitionTime: "2026-01-02T15:04:06Z",
          observedGeneration: 7,
        },
        { type: "Recovered", status: "False" },
      ],
      acceptedResetRevision: "r1",
      observedGeneration: 6,
      sandboxIP: "10.88.0.7",
    },
  };
}

function fullPool(): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: {
      name: "default",
      namespace: "team-a",
      uid: "u-1",
      resourceVersion: "9",
      generation: 2,
      creationTimestamp: "2026-01-02T15:04:05Z",
      deletionTimestamp: "2026-01-03T00:00:00Z",
      finalizers: ["sandbox.fast.io/agents"],
      labels: { tier: "fast" },
      annotations: { owner: "me" },
    },
    spec: {
      capacity: { poolMin: 1, poolMax: 4, bufferMin: 0, bufferMax: 8 },
      maxSandboxesPerPod: 16,
      runtimeType: "gvisor",
      image: "fast-sandbox.io/base:latest",
      sandboxResources: { cpu: "500m", memory: "256Mi", pids: 128 },
      network: { mode: "Isolated", egress: { policy: "denyAll" }, allowSandboxToSandbox: true },
      agentTemplate: {
        metadata: { labels: { a: "b" } },
        spec: {
          nodeSelector: { pool: "fast" },
          tolerations: [{ key: "k", operator: "Exists" }],
        },
      },
    },
    status: {
      agents: 3,
      readyAgents: 2,
      sandboxes: 5,
      freeSlots: 43,
      conditions: [
        {
          type: "Ready",
          status: "Unknown",
          reason: "Scaling",
          message: "2/3",
          lastTransitionTime: "2026-01-02T15:04:05Z",
          observedGeneration: 2,
        },
      ],
      observedGeneration: 2,
    },
  };
}

/** Through the message and through its binary encoding, as a real call does. */
function sandboxOverTheWire(sandbox: Sandbox): Sandbox {
  return sandboxFromMessage(fromBinary(proto.SandboxSchema, toBinary(proto.SandboxSchema, sandboxToMessage(sandbox))));
}

function poolOverTheWire(pool: SandboxPool): SandboxPool {
  return sandboxPoolFromMessage(fromBinary(proto.SandboxPoolSchema, toBinary(proto.SandboxPoolSchema, sandboxPoolToMessage(pool))));
}

describe("sandbox conversion", () => {
  it("round-trips a sandbox with every field set unchanged", () => {
    const sandbox = fullSandbox();
    assert.deepEqual(sandboxFromMessage(sandboxToMessage(sandbox)), sandbox);
    assert.deepEqual(sandboxOverTheWire(sandbox), sandbox);
  });

  it("keeps recoveryTimeoutSeconds 0 (recover immediately) apart from absent (the default)", () => {
    const zero = fullSandbox();
    zero.spec.recoveryTimeoutSeconds = 0;
    assert.equal(sandboxOverTheWire(zero).spec.recoveryTimeoutSeconds, 0);
    const absent = fullSandbox();
    delete absent.spec.recoveryTimeoutSeconds;
    assert.equal("recoveryTimeoutSeconds" in sandboxOverTheWire(absent).spec, false);
  });

  it("keeps an env var's empty value, which is required", () => {
    const sandbox = fullSandbox();
    sandbox.spec.envs = [{ name: "EMPTY", value: "" }];
    const back = sandboxOverTheWire(sandbox);
    assert.deepEqual(back.spec.envs, [{ name: "EMPTY", value: "" }]);
    assert.doesNotThrow(() => validateSandbox(back));
    assert.deepEqual(sandboxSpecFromMessage(sandboxSpecToMessage(sandbox.spec)).envs, [{ name: "EMPTY", value: "" }]);
  });

  it("keeps a deletionTimestamp and its absence", () => {
    const sandbox = fullSandbox();
    delete sandbox.metadata.deletionTimestamp;
    assert.equal("deletionTimestamp" in sandboxOverTheWire(sandbox).metadata, false);
  });

  it("round-trips a minimal sandbox without inventing fields", () => {
    const sandbox: Sandbox = {
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: { name: "a" },
      spec: { image: "x", poolRef: "p" },
    };
    assert.deepEqual(sandboxOverTheWire(sandbox), sandbox);
  });

  it("keeps an empty status object", () => {
    const sandbox: Sandbox = {
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: { name: "a" },
      spec: { image: "x", poolRef: "p" },
      status: {},
    };
    assert.deepEqual(sandboxOverTheWire(sandbox), sandbox);
  });

  // proto3 cannot tell an empty string, empty list, empty map or a zero int64 from an absent one.
  // For these fields the empty value means the same as absent: no command/args/envs/ports (the image's
  // defaults), no labels, no reset revision, generation 0 (never written). Documented here so a change
  // that makes a meaningful value disappear fails below instead.
  it("maps empty strings, lists, maps and generation 0 to absent, which mean the same", () => {
    const sandbox: Sandbox = {
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: {
        name: "a",
        generation: 0,
        finalizers: [],
        labels: {},
        annotations: {},
        uid: "",
      },
      spec: {
        image: "x",
        poolRef: "p",
        command: [],
        args: [],
        envs: [],
        exposedPorts: [],
        resetRevision: "",
      },
      status: { endpoints: [], conditions: [], assignedPod: "" },
    };
    assert.deepEqual(sandboxOverTheWire(sandbox), {
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: { name: "a" },
      spec: { image: "x", poolRef: "p" },
      status: {},
    });
  });

  it("fills apiVersion, kind, metadata and spec of an empty message so validation names what is wrong", () => {
    const sandbox = sandboxFromMessage(sandboxToMessage({} as Sandbox));
    assert.equal(sandbox.apiVersion, API_VERSION);
    assert.equal(sandbox.kind, "Sandbox");
    assert.throws(() => validateSandbox(sandbox), ValidationError);
  });

  it("round-trips a spec on its own, and an absent spec becomes an empty one", () => {
    const { spec } = fullSandbox();
    assert.deepEqual(sandboxSpecFromMessage(sandboxSpecToMessage(spec)), spec);
    assert.deepEqual(sandboxSpecFromMessage(undefined), {});
  });
});

describe("sandbox pool conversion", () => {
  it("round-trips a pool with every field set unchanged, agentTemplate included", () => {
    const pool = fullPool();
    assert.deepEqual(sandboxPoolFromMessage(sandboxPoolToMessage(pool)), pool);
    assert.deepEqual(poolOverTheWire(pool), pool);
  });

  it("carries agentTemplate as JSON on the wire", () => {
    const pool = fullPool();
    assert.deepEqual(JSON.parse(sandboxPoolToMessage(pool).spec?.agentTemplateJson ?? "null"), pool.spec.agentTemplate);
  });

  it("refuses an agentTemplate that is not JSON as a ValidationError naming it (not an internal error)", () => {
    const message = sandboxPoolToMessage(fullPool());
    if (message.spec) message.spec.agentTemplateJson = "{nope";
    assert.throws(
      () => sandboxPoolFromMessage(message),
      (error: unknown) => error instanceof ValidationError && error.field === "spec.agentTemplate" && /is not valid JSON/.test(error.message),
    );
  });

  it("keeps poolMin 0 and poolMax 0 (scale to zero), so the pool stays valid after the wire", () => {
    const pool = fullPool();
    pool.spec.capacity = { poolMin: 0, poolMax: 0 };
    const back = poolOverTheWire(pool);
    assert.deepEqual(back.spec.capacity, { poolMin: 0, poolMax: 0 });
    assert.doesNotThrow(() => validateSandboxPool(back));
  });

  it("keeps allowSandboxToSandbox false apart from absent, and an absent network absent", () => {
    const pool = fullPool();
    pool.spec.network = { mode: "Isolated", allowSandboxToSandbox: false };
    assert.deepEqual(poolOverTheWire(pool).spec.network, { mode: "Isolated", allowSandboxToSandbox: false });
    delete pool.spec.network;
    assert.equal("network" in poolOverTheWire(pool).spec, false);
  });

  it("keeps preparedInstances 0 (none) apart from absent (the default)", () => {
    const pool = fullPool();
    pool.spec.runtimeType = "container";
    pool.spec.preparedInstances = 0;
    assert.equal(poolOverTheWire(pool).spec.preparedInstances, 0);
    assert.equal(preparedInstancesOf(poolOverTheWire(pool).spec), 0);
    delete pool.spec.preparedInstances;
    assert.equal("preparedInstances" in poolOverTheWire(pool).spec, false);
    assert.equal(preparedInstancesOf(poolOverTheWire(pool).spec), 2);
  });

  it("keeps an absent agentTemplate absent and an empty one empty", () => {
    const pool = fullPool();
    delete pool.spec.agentTemplate;
    assert.equal("agentTemplate" in poolOverTheWire(pool).spec, false);
    pool.spec.agentTemplate = {};
    assert.deepEqual(poolOverTheWire(pool).spec.agentTemplate, {});
  });

  // The status counters are proto3 int32s: 0 comes back absent, and readers treat an absent counter as 0.
  it("maps zero status counters to absent, which reads as 0", () => {
    const pool = fullPool();
    pool.status = { agents: 0, readyAgents: 0, sandboxes: 0, freeSlots: 0 };
    assert.deepEqual(poolOverTheWire(pool).status, {});
  });
});

describe("proto messages and TypeBox schemas", () => {
  const pairs: [string, TObject, DescMessage, Record<string, string>?][] = [
    ["ObjectMeta", ObjectMeta, proto.ObjectMetaSchema],
    ["Condition", Condition, proto.ConditionSchema],
    ["EnvVar", EnvVar, proto.EnvVarSchema],
    ["SandboxSpec", SandboxSpec, proto.SandboxSpecSchema],
    ["SandboxStatus", SandboxStatus, proto.SandboxStatusSchema],
    ["Sandbox", Sandbox, proto.SandboxSchema],
    ["PoolCapacity", PoolCapacity, proto.PoolCapacitySchema],
    ["SandboxResources", SandboxResources, proto.SandboxResourcesSchema],
    ["NetworkSpec", PoolNetwork, proto.NetworkSpecSchema],
    ["EgressSpec", EgressPolicy, proto.EgressSpecSchema],
    ["EgressRuleSpec", EgressRule, proto.EgressRuleSpecSchema],
    // agentTemplate is free-form, so the wire carries it as a JSON string.
    ["SandboxPoolSpec", SandboxPoolSpec, proto.SandboxPoolSpecSchema, { agentTemplateJson: "agentTemplate" }],
    ["SandboxPoolStatus", SandboxPoolStatus, proto.SandboxPoolStatusSchema],
    ["SandboxPool", SandboxPool, proto.SandboxPoolSchema],
  ];
  for (const [name, schema, message, renamed = {}] of pairs) {
    it(`${name} has the same field names in both`, () => {
      const wireNames = message.fields.map((field) => renamed[field.jsonName] ?? field.jsonName).sort();
      assert.deepEqual(wireNames, Object.keys(schema.properties).sort());
    });
  }
});
