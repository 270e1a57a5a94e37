import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "../errors.js";
import { API_VERSION } from "./object-meta.js";
import type { Sandbox } from "./sandbox.js";
import type { SandboxPool } from "./sandbox-pool.js";
import { fieldPath, validateSandbox, validateSandboxPool } from "./validation.js";

/** A Sandbox with every field set to a valid value. */
function fullSandbox(): Sandbox {
  return {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: {
      name: "web-1",
      namespace: "team-a",
      uid: "0b3c",
      resourceVersion: "42",
      generation: 3,
      creationTimestamp: "2026-01-02T15:04:05Z",
      deletionTimestamp: "2026-01-02T16:04:05Z",
      finalizers: ["sandbox.fast.io/cleanup"],
      labels: { app: "web" },
      annotations: { note: "hello" },
    },
    spec: {
      image: "docker.io/library/python:3.12",
      command: ["python"],
      args: ["-m", "http.server"],
      envs: [
        { name: "A", value: "1" },
        { name: "EMPTY", value: "" },
      ],
      workingDir: "/srv",
      exposedPorts: [1, 8080, 65535],
      poolRef: "default",
      expireTime: "2026-01-02T15:04:05.123+02:00",
      failurePolicy: "AutoRecreate",
      recoveryTimeoutSeconds: 0,
      resetRevision: "r1",
      consistencyMode: "strong",
      egress: { policy: "allowList", allow: [{ cidr: "10.0.0.0/8", ports: [443], protocol: "tcp" }, { cidr: "2001:db8::/32" }] },
    },
    status: {
      phase: "Running",
      assignedPod: "agent-0",
      nodeName: "node-1",
      sandboxID: "c0ffee",
      endpoints: ["10.0.0.1:8080"],
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "Started",
          message: "ok",
          lastTransitionTime: "2026-01-02T15:04:05Z",
        },
      ],
      acceptedResetRevision: "r1",
    },
  };
}

function fullPool(): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name: "default", namespace: "default" },
    spec: {
      capacity: { poolMin: 0, poolMax: 3, bufferMin: 1, bufferMax: 4 },
      maxSandboxesPerPod: 16,
      runtimeType: "gvisor",
      image: "fast-sandbox.io/base:latest",
      sandboxResources: { cpu: "500m", memory: "256Mi", pids: 128 },
      network: {
        mode: "Isolated",
        egress: {
          policy: "allowList",
          allow: [
            { cidr: "10.0.0.0/8", ports: [80, 443], protocol: "tcp" },
            { cidr: "::/0", protocol: "udp" },
          ],
        },
        allowSandboxToSandbox: true,
      },
      agentTemplate: { spec: { nodeSelector: { pool: "fast" } } },
    },
    status: {
      agents: 2,
      readyAgents: 1,
      sandboxes: 5,
      freeSlots: 27,
      conditions: [{ type: "Ready", status: "Unknown" }],
    },
  };
}

/** Applies `change` to a fresh valid object (as a loose record, so tests can write invalid values). */
function sandboxWith(change: (sandbox: Record<string, any>) => void): unknown {
  const sandbox = fullSandbox() as unknown as Record<string, any>;
  change(sandbox);
  return sandbox;
}

function poolWith(change: (pool: Record<string, any>) => void): unknown {
  const pool = fullPool() as unknown as Record<string, any>;
  change(pool);
  return pool;
}

/** Runs `validate` and returns the ValidationError it must throw. */
function rejection(validate: () => void): ValidationError {
  try {
    validate();
  } catch (error) {
    assert.ok(error instanceof ValidationError, `expected a ValidationError, got ${String(error)}`);
    assert.ok(error.message.startsWith(`${error.field}: `), `message names the field: ${error.message}`);
    return error;
  }
  assert.fail("expected a ValidationError");
}

function assertSandboxRejected(change: (sandbox: Record<string, any>) => void, field: string, message: RegExp): void {
  const error = rejection(() => validateSandbox(sandboxWith(change)));
  assert.equal(error.field, field);
  assert.match(error.message, message);
}

function assertPoolRejected(change: (pool: Record<string, any>) => void, field: string, message: RegExp): void {
  const error = rejection(() => validateSandboxPool(poolWith(change)));
  assert.equal(error.field, field);
  assert.match(error.message, message);
}

describe("fieldPath", () => {
  it("turns a JSON pointer into a dotted path with array indices", () => {
    assert.equal(fieldPath("/spec/exposedPorts/0"), "spec.exposedPorts[0]");
    assert.equal(fieldPath("/status/conditions/2/type"), "status.conditions[2].type");
    assert.equal(fieldPath("/metadata"), "metadata");
    assert.equal(fieldPath(""), "");
  });

  it("unescapes ~1 and ~0 in keys", () => {
    assert.equal(fieldPath("/metadata/labels/app.kubernetes.io~1name"), "metadata.labels.app.kubernetes.io/name");
    assert.equal(fieldPath("/metadata/labels/a~0b"), "metadata.labels.a~b");
  });
});

describe("validateSandbox", () => {
  it("accepts a sandbox with every field set", () => {
    assert.doesNotThrow(() => validateSandbox(fullSandbox()));
  });

  it("accepts a sandbox with only the required fields", () => {
    assert.doesNotThrow(() =>
      validateSandbox({
        apiVersion: API_VERSION,
        kind: "Sandbox",
        metadata: { name: "a" },
        spec: { image: "x", poolRef: "p" },
      }),
    );
  });

  it("accepts names of 1 and 63 characters and names with inner dashes", () => {
    for (const name of ["a", "0", "a-b-9", "a".repeat(63)]) {
      assert.doesNotThrow(() => validateSandbox(sandboxWith((s) => (s.metadata.name = name))), name);
    }
  });

  it("rejects an empty image", () => {
    assertSandboxRejected((s) => (s.spec.image = ""), "spec.image", /must not be empty/);
  });

  it("rejects an image that is no image reference, saying why (before anything is reserved for it)", () => {
    assertSandboxRejected((s) => (s.spec.image = "Not A//Valid:Image!!"), "spec.image", /"Not A\/\/Valid:Image!!" is not a valid image reference/);
    assert.doesNotThrow(() => validateSandbox(sandboxWith((s) => (s.spec.image = "registry.local:5000/team/app:1.2@sha256:" + "a".repeat(64)))));
  });

  it("rejects port 0 and port 65536 at their index and states the allowed range", () => {
    assertSandboxRejected((s) => (s.spec.exposedPorts = [0]), "spec.exposedPorts[0]", /0 is out of range; allowed: 1\.\.65535/);
    assertSandboxRejected((s) => (s.spec.exposedPorts = [80, 65536]), "spec.exposedPorts[1]", /65536 is out of range; allowed: 1\.\.65535/);
  });

  it("rejects a non-integer port", () => {
    assertSandboxRejected((s) => (s.spec.exposedPorts = [80.5]), "spec.exposedPorts[0]", /integer/);
  });

  it("rejects duplicate ports", () => {
    assertSandboxRejected((s) => (s.spec.exposedPorts = [80, 443, 80]), "spec.exposedPorts", /must not contain duplicates/);
  });

  it("rejects names with upper case or underscores and says what a name may contain", () => {
    assertSandboxRejected((s) => (s.metadata.name = "Web"), "metadata.name", /invalid name "Web": use lower-case letters, digits and '-'/);
    assertSandboxRejected((s) => (s.metadata.name = "web_1"), "metadata.name", /invalid name "web_1"/);
    assertSandboxRejected((s) => (s.metadata.name = "-web"), "metadata.name", /invalid name/);
    assertSandboxRejected((s) => (s.metadata.namespace = "Team"), "metadata.namespace", /invalid name "Team"/);
    assertSandboxRejected((s) => (s.spec.poolRef = "Pool_1"), "spec.poolRef", /invalid name "Pool_1"/);
  });

  it("rejects a 64-character name", () => {
    assertSandboxRejected((s) => (s.metadata.name = "a".repeat(64)), "metadata.name", /^metadata\.name: has 64 characters; at most 63 are allowed$/);
  });

  it("names an unknown field at every depth and lists the allowed fields", () => {
    assertSandboxRejected((s) => (s.surprise = 1), "surprise", /unknown field; allowed fields: apiVersion, kind, metadata, spec, status$/);
    assertSandboxRejected((s) => (s.spec.surprise = 1), "spec.surprise", /unknown field; allowed fields: image, command, .*consistencyMode, egress$/);
    assertSandboxRejected((s) => (s.spec.surprise = { nested: true }), "spec.surprise", /unknown field/);
    assertSandboxRejected((s) => (s.metadata.surprise = "x"), "metadata.surprise", /allowed fields: name, namespace,/);
    assertSandboxRejected((s) => (s.spec.envs[1].surprise = "x"), "spec.envs[1].surprise", /allowed fields: name, value$/);
    assertSandboxRejected((s) => (s.status.surprise = "x"), "status.surprise", /allowed fields: phase, /);
    assertSandboxRejected(
      (s) => (s.status.conditions[0].surprise = "x"),
      "status.conditions[0].surprise",
      /allowed fields: type, status, reason, message, lastTransitionTime, observedGeneration$/,
    );
  });

  it("rejects bad enum values and lists the allowed ones", () => {
    assertSandboxRejected((s) => (s.spec.failurePolicy = "Never"), "spec.failurePolicy", /"Never" is not allowed; allowed: Manual, AutoRecreate$/);
    assertSandboxRejected((s) => (s.spec.consistencyMode = "eventual"), "spec.consistencyMode", /"eventual" is not allowed; allowed: fast, strong$/);
    assertSandboxRejected(
      (s) => (s.status.phase = "Zombie"),
      "status.phase",
      /"Zombie" is not allowed; allowed: Pending, Bound, Running, Terminating, Expired, Failed, Lost, Paused$/,
    );
    assertSandboxRejected((s) => (s.status.conditions[0].status = "Yes"), "status.conditions[0].status", /allowed: True, False, Unknown$/);
    assertSandboxRejected((s) => (s.kind = "Pod"), "kind", /"Pod" is not allowed; allowed: Sandbox$/);
    assertSandboxRejected((s) => (s.apiVersion = "v1"), "apiVersion", new RegExp(`allowed: ${API_VERSION}$`));
  });

  it("rejects an expireTime that is not RFC 3339 and shows an example", () => {
    for (const expireTime of ["tomorrow", "2026-01-02", "2026-01-02 15:04:05Z", "2026-13-45T00:00:00Z"]) {
      assertSandboxRejected((s) => (s.spec.expireTime = expireTime), "spec.expireTime", /is not a valid date-time \(use RFC 3339, e\.g\. /);
    }
  });

  it("rejects a missing poolRef, image or spec as required", () => {
    assertSandboxRejected((s) => delete s.spec.poolRef, "spec.poolRef", /is required/);
    assertSandboxRejected((s) => delete s.spec.image, "spec.image", /is required/);
    assertSandboxRejected((s) => delete s.spec, "spec", /is required/);
    assertSandboxRejected((s) => delete s.metadata.name, "metadata.name", /is required/);
  });

  it("rejects env names containing '=' or empty, relative working dirs and negative recovery timeouts", () => {
    assertSandboxRejected(
      (s) => (s.spec.envs = [{ name: "A=B", value: "" }]),
      "spec.envs[0].name",
      /"A=B" is not valid \(Variable name; must not be empty or contain '=' or NUL bytes\.\)/,
    );
    assertSandboxRejected((s) => (s.spec.envs = [{ name: "", value: "" }]), "spec.envs[0].name", /must not be empty/);
    assertSandboxRejected((s) => (s.spec.workingDir = "srv"), "spec.workingDir", /"srv" is not valid \(Absolute path, without NUL bytes\.\)/);
    assertSandboxRejected((s) => (s.spec.recoveryTimeoutSeconds = -1), "spec.recoveryTimeoutSeconds", /-1 is out of range; allowed: 0\.\.86400/);
    assertSandboxRejected((s) => (s.spec.recoveryTimeoutSeconds = 86401), "spec.recoveryTimeoutSeconds", /allowed: 0\.\.86400/);
  });

  it("rejects NUL bytes in the command, its arguments, env values and working dir (a process cannot take them)", () => {
    assertSandboxRejected((s) => (s.spec.command = ["sh", "a\0b"]), "spec.command[1]", /is not valid \(must not contain NUL bytes\)/);
    assertSandboxRejected((s) => (s.spec.args = ["a\0"]), "spec.args[0]", /is not valid \(must not contain NUL bytes\)/);
    assertSandboxRejected((s) => (s.spec.envs = [{ name: "A", value: "x\0y" }]), "spec.envs[0].value", /must not contain NUL bytes/);
    assertSandboxRejected((s) => (s.spec.workingDir = "/srv\0x"), "spec.workingDir", /without NUL bytes/);
  });

  it("bounds the entries of the command, its arguments, envs and exposed ports, naming the list and saying how many are allowed", () => {
    const many = (count: number) => Array.from({ length: count }, (_, index) => String(index));
    assertSandboxRejected((s) => (s.spec.command = many(257)), "spec.command", /^spec\.command: has 257 entries; at most 256 are allowed$/);
    assertSandboxRejected((s) => (s.spec.args = many(257)), "spec.args", /^spec\.args: has 257 entries; at most 256 are allowed$/);
    assertSandboxRejected(
      (s) => (s.spec.envs = many(257).map((index) => ({ name: `V${index}`, value: "" }))),
      "spec.envs",
      /^spec\.envs: has 257 entries; at most 256 are allowed$/,
    );
    assertSandboxRejected(
      (s) => (s.spec.exposedPorts = Array.from({ length: 65 }, (_, index) => 1000 + index)),
      "spec.exposedPorts",
      /^spec\.exposedPorts: has 65 entries; at most 64 are allowed$/,
    );
    // 60,000 ports: refused as a count, not stored for their agent to fail on.
    assertSandboxRejected((s) => (s.spec.exposedPorts = Array.from({ length: 60_000 }, (_, index) => 1 + index)), "spec.exposedPorts", /has 60000 entries/);
    assert.doesNotThrow(() =>
      validateSandbox(
        sandboxWith((s) => {
          s.spec.command = many(256);
          s.spec.args = many(256);
          s.spec.envs = many(256).map((index) => ({ name: `V${index}`, value: index }));
          s.spec.exposedPorts = Array.from({ length: 64 }, (_, index) => 1000 + index);
        }),
      ),
    );
  });

  it("bounds the length of the image, each argument, env name and value, the working dir and resetRevision, saying the length and the most allowed", () => {
    assertSandboxRejected((s) => (s.spec.image = `${"a".repeat(1022)}:v1`), "spec.image", /^spec\.image: has 1025 characters; at most 1024 are allowed$/);
    const long = "x".repeat(128 * 1024);
    assertSandboxRejected((s) => (s.spec.command = ["sh", long]), "spec.command[1]", /^spec\.command\[1\]: has 131072 characters; at most 131071 are allowed$/);
    assertSandboxRejected((s) => (s.spec.args = [long]), "spec.args[0]", /has 131072 characters; at most 131071 are allowed$/);
    assertSandboxRejected((s) => (s.spec.envs = [{ name: "A", value: long }]), "spec.envs[0].value", /has 131072 characters; at most 131071 are allowed$/);
    assertSandboxRejected((s) => (s.spec.envs = [{ name: long, value: "" }]), "spec.envs[0].name", /has 131072 characters; at most 131071 are allowed$/);
    assertSandboxRejected(
      (s) => (s.spec.workingDir = `/${"d".repeat(4095)}`),
      "spec.workingDir",
      /^spec\.workingDir: has 4096 characters; at most 4095 are allowed$/,
    );
    assertSandboxRejected(
      (s) => (s.spec.resetRevision = "r".repeat(254)),
      "spec.resetRevision",
      /^spec\.resetRevision: has 254 characters; at most 253 are allowed$/,
    );
    assert.doesNotThrow(() =>
      validateSandbox(
        sandboxWith((s) => {
          s.spec.resetRevision = "r".repeat(253);
          s.spec.workingDir = `/${"d".repeat(4094)}`;
          s.spec.args = ["x".repeat(131071)];
        }),
      ),
    );
  });

  it("refuses an argument or a variable (NAME=value) of 128 KiB or more in bytes, which the kernel refuses (E2BIG)", () => {
    // Within the schema's lengths in characters, but not in bytes: 70,000 two-byte characters, and a name and value together.
    assertSandboxRejected(
      (s) => (s.spec.args = ["ok", "é".repeat(70_000)]),
      "spec.args[1]",
      /^spec\.args\[1\]: takes 140001 bytes with its NUL; at most 131072 \(128 KiB, the kernel's limit for one argument\) are allowed$/,
    );
    assertSandboxRejected(
      (s) =>
        (s.spec.envs = [
          { name: "A", value: "" },
          { name: "N".repeat(70_000), value: "v".repeat(70_000) },
        ]),
      "spec.envs[1]",
      /takes 140002 bytes with its NUL; at most 131072 \(128 KiB, the kernel's limit for one variable, as NAME=value\) are allowed$/,
    );
  });

  it("refuses a command, arguments and environment of more than 1 MiB together, naming the list that takes the most", () => {
    const value = "v".repeat(120 * 1024);
    const envs = (count: number) => Array.from({ length: count }, (_, index) => ({ name: `V${index}`, value }));
    assertSandboxRejected(
      (s) => (s.spec.envs = envs(9)),
      "spec.envs",
      /^spec\.envs: takes 1105956 bytes, and the command, its arguments and environment 1105978 together \(each string with its NUL, each variable as NAME=value\); at most 1048576 \(1 MiB\) together are allowed$/,
    );
    assertSandboxRejected((s) => (s.spec.args = Array(9).fill(value)), "spec.args", /^spec\.args: takes 1105929 bytes, .*at most 1048576 \(1 MiB\)/);
    assert.doesNotThrow(() => validateSandbox(sandboxWith((s) => (s.spec.envs = envs(8)))));
  });

  it("bounds a create's request id (kept in an annotation, hashed into the name) at 253 characters", () => {
    const withRequestId = (requestId: string) => (s: Record<string, any>) => (s.metadata.annotations = { "sandbox.fast.io/request-id": requestId });
    assertSandboxRejected(
      withRequestId("q".repeat(254)),
      'metadata.annotations["sandbox.fast.io/request-id"]',
      /the create's requestId has 254 characters; at most 253 are allowed$/,
    );
    assert.doesNotThrow(() => validateSandbox(sandboxWith(withRequestId("q".repeat(253)))));
    assert.doesNotThrow(() => validateSandbox(sandboxWith(withRequestId("q".repeat(254))), { parts: ["spec", "status"] }));
  });

  it("rejects an egress CIDR that is not one, saying what is wrong and showing examples", () => {
    const cidr = (value: string) => (s: Record<string, any>) => (s.spec.egress.allow[0].cidr = value);
    assertSandboxRejected(
      cidr("10.0.0.1/8"),
      "spec.egress.allow[0].cidr",
      /"10\.0\.0\.1\/8" is not a valid CIDR: bits are set after the \/8 prefix; the network is 10\.0\.0\.0\/8 \(e\.g\. /,
    );
    assertSandboxRejected(cidr("10.0.0.0"), "spec.egress.allow[0].cidr", /is not a valid CIDR: it has no \/prefix length/);
    assertSandboxRejected(cidr("10.0.0.0/40"), "spec.egress.allow[0].cidr", /prefix length must be a number from 0 to 32 for IPv4/);
    assertSandboxRejected(cidr("localhost/8"), "spec.egress.allow[0].cidr", /"localhost" is not an IPv4 or IPv6 address/);
    assertSandboxRejected(cidr(""), "spec.egress.allow[0].cidr", /is not a valid CIDR/);
  });

  it("rejects egress ports out of range, duplicated or an empty list, and an unknown protocol", () => {
    assertSandboxRejected((s) => (s.spec.egress.allow[0].ports = [0]), "spec.egress.allow[0].ports[0]", /0 is out of range; allowed: 1\.\.65535/);
    assertSandboxRejected((s) => (s.spec.egress.allow[0].ports = [443, 65536]), "spec.egress.allow[0].ports[1]", /65536 is out of range/);
    assertSandboxRejected((s) => (s.spec.egress.allow[0].ports = [443, 443]), "spec.egress.allow[0].ports", /must not contain duplicates/);
    // An empty list would read "every port" once on the wire: it must be left out instead.
    assertSandboxRejected((s) => (s.spec.egress.allow[0].ports = []), "spec.egress.allow[0].ports", /must not be empty \(leave it out instead\)/);
    assertSandboxRejected((s) => (s.spec.egress.allow[0].protocol = "icmp"), "spec.egress.allow[0].protocol", /"icmp" is not allowed; allowed: tcp, udp$/);
  });

  it("rejects an unknown egress policy, an allowList without entries and entries under another policy", () => {
    assertSandboxRejected((s) => (s.spec.egress.policy = "deny"), "spec.egress.policy", /"deny" is not allowed; allowed: allowAll, denyAll, allowList$/);
    assertSandboxRejected((s) => (s.spec.egress = { policy: "allowList" }), "spec.egress.allow", /policy allowList needs at least one entry in allow/);
    assertSandboxRejected((s) => (s.spec.egress = { policy: "allowList", allow: [] }), "spec.egress.allow", /needs at least one entry/);
    assertSandboxRejected((s) => (s.spec.egress.policy = "allowAll"), "spec.egress.allow", /is read with policy allowList only, and the policy is allowAll/);
    assertSandboxRejected((s) => (s.spec.egress.allow[0].host = "x"), "spec.egress.allow[0].host", /allowed fields: cidr, ports, protocol$/);
    assertSandboxRejected((s) => (s.spec.egress.allow = Array(65).fill({ cidr: "10.0.0.0/8" })), "spec.egress.allow", /has 65 entries; at most 64/);
    assert.doesNotThrow(() => validateSandbox(sandboxWith((s) => (s.spec.egress = { policy: "denyAll" }))));
  });

  it("rejects label keys and values Kubernetes would refuse, naming the label and saying what is allowed", () => {
    assertSandboxRejected((s) => (s.metadata.labels = { "Bad Key!": "x" }), 'metadata.labels["Bad Key!"]', /is not a label key: \[prefix\/\]name/);
    assertSandboxRejected((s) => (s.metadata.labels = { "Fast.io/team": "x" }), 'metadata.labels["Fast.io/team"]', /lower-case DNS subdomain/);
    assertSandboxRejected((s) => (s.metadata.labels = { team: "a b" }), 'metadata.labels["team"]', /"a b" is not a label value/);
    assertSandboxRejected((s) => (s.metadata.labels = { team: "x".repeat(64) }), 'metadata.labels["team"]', /is not a label value/);
    assertPoolRejected((p) => (p.metadata.labels = { "-x": "1" }), 'metadata.labels["-x"]', /is not a label key/);
    assert.doesNotThrow(() => validateSandbox(sandboxWith((s) => (s.metadata.labels = { "fast.io/team": "a.b_c-1", app: "", ["x".repeat(63)]: "y" }))));
  });

  it("rejects label values that are not strings, naming the label", () => {
    assertSandboxRejected((s) => (s.metadata.labels = { app: 1 }), "metadata.labels.app", /string/);
  });

  it("rejects non-objects", () => {
    for (const value of [null, "sandbox", 1, []]) {
      assert.throws(() => validateSandbox(value), ValidationError);
      assert.throws(() => validateSandbox(value, { parts: ["status"] }), ValidationError);
    }
  });

  it("checks only the parts asked for: the status of a sandbox whose image or egress is refused", () => {
    const refusedSpec = sandboxWith((s) => {
      s.spec.image = "Not A Valid Image";
      s.spec.egress = { policy: "allowList" };
    });
    assert.equal(rejection(() => validateSandbox(refusedSpec)).field, "spec.image");
    assert.doesNotThrow(() => validateSandbox(refusedSpec, { parts: ["status"] }));
    assert.doesNotThrow(() => validateSandbox(refusedSpec, { parts: ["metadata"] }));
    assert.equal(
      rejection(() =>
        validateSandbox(
          sandboxWith((s) => (s.status.phase = "Zombie")),
          { parts: ["status"] },
        ),
      ).field,
      "status.phase",
    );
    assert.doesNotThrow(() =>
      validateSandbox(
        sandboxWith((s) => (s.status.phase = "Zombie")),
        { parts: ["metadata", "spec"] },
      ),
    );
  });
});

describe("validateSandboxPool", () => {
  it("accepts a pool with every field set", () => {
    assert.doesNotThrow(() => validateSandboxPool(fullPool()));
  });

  it("accepts a pool with only the required fields, and poolMin equal to poolMax", () => {
    assert.doesNotThrow(() =>
      validateSandboxPool({
        apiVersion: API_VERSION,
        kind: "SandboxPool",
        metadata: { name: "p" },
        spec: { capacity: { poolMin: 2, poolMax: 2 }, maxSandboxesPerPod: 1 },
      }),
    );
  });

  it("rejects a pool image or a prewarm image that is no image reference, at its index", () => {
    assertPoolRejected((p) => (p.spec.image = "UPPER/case"), "spec.image", /is not a valid image reference/);
    assertPoolRejected((p) => (p.spec.prewarmImages = ["busybox", "bad image"]), "spec.prewarmImages[1]", /"bad image" is not a valid image reference/);
  });

  it("accepts agentTemplate fields the agent Pod builder does not read, whatever they hold", () => {
    assert.doesNotThrow(() => validateSandboxPool(poolWith((p) => (p.spec.agentTemplate = { anything: [1, { deep: true }] }))));
    assert.doesNotThrow(() => validateSandboxPool(poolWith((p) => (p.spec.agentTemplate = { spec: { nodeSelector: "x", tolerations: {} } }))));
  });

  it("accepts a full agent Pod template, and null (unset, as Kubernetes reads it) for any of its lists and maps", () => {
    const template = {
      metadata: { labels: { tier: "agents" }, annotations: { "fast.io/note": "1" } },
      spec: {
        initContainers: [{ name: "setup", image: "busybox", env: [{ name: "A", value: "1" }], volumeMounts: [{ name: "v", mountPath: "/v" }] }],
        containers: [
          { name: "agent", env: [{ name: "B", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } }], ports: [{ containerPort: 7071 }] },
          { image: "sidecar" },
        ],
        volumes: [{ name: "v", emptyDir: {} }],
        tolerations: [{ operator: "Exists" }],
      },
    };
    assert.doesNotThrow(() => validateSandboxPool(poolWith((p) => (p.spec.agentTemplate = template))));
    const nulls = {
      metadata: { labels: null, annotations: null },
      spec: { containers: [{ name: "agent", env: null, volumeMounts: null, ports: null }], volumes: null },
    };
    assert.doesNotThrow(() => validateSandboxPool(poolWith((p) => (p.spec.agentTemplate = nulls))));
    assert.doesNotThrow(() => validateSandboxPool(poolWith((p) => (p.spec.agentTemplate = { metadata: null, spec: null }))));
  });

  it("rejects an agentTemplate the agent Pod builder cannot merge, naming the path and what it must be", () => {
    const template = (agentTemplate: unknown) => (p: Record<string, any>) => (p.spec.agentTemplate = agentTemplate);
    const at = "spec.agentTemplate";
    assertPoolRejected(template({ spec: { containers: "agent" } }), `${at}.spec.containers`, /must be a list of containers, not the string "agent"$/);
    assertPoolRejected(template({ spec: { containers: { agent: {} } } }), `${at}.spec.containers`, /must be a list of containers, not a map$/);
    assertPoolRejected(template({ spec: { containers: [{ name: "agent" }, null] } }), `${at}.spec.containers[1]`, /must be a container \(a map\), not null$/);
    assertPoolRejected(
      template({ spec: { initContainers: ["setup"] } }),
      `${at}.spec.initContainers[0]`,
      /must be a container \(a map\), not the string "setup"$/,
    );
    assertPoolRejected(template({ spec: { containers: [{ name: 7 }] } }), `${at}.spec.containers[0].name`, /must be a string, not the number 7$/);
    assertPoolRejected(
      template({ spec: { containers: [{ name: "agent", env: { FOO: "1" } }] } }),
      `${at}.spec.containers[0].env`,
      /must be a list of \{name, value\} entries, not a map$/,
    );
    assertPoolRejected(
      template({ spec: { containers: [{ env: [{ value: "1" }] }] } }),
      `${at}.spec.containers[0].env[0].name`,
      /is required: variables are merged by name$/,
    );
    assertPoolRejected(template({ spec: { initContainers: [{ env: [{ name: "" }] }] } }), `${at}.spec.initContainers[0].env[0].name`, /must not be empty/);
    assertPoolRejected(
      template({ spec: { containers: [{ volumeMounts: [{ name: "v" }] }] } }),
      `${at}.spec.containers[0].volumeMounts[0].mountPath`,
      /is required: mounts are merged by path$/,
    );
    assertPoolRejected(
      template({ spec: { containers: [{ ports: 7071 }] } }),
      `${at}.spec.containers[0].ports`,
      /must be a list of \{containerPort\} entries, not the number 7071$/,
    );
    assertPoolRejected(template({ spec: { volumes: {} } }), `${at}.spec.volumes`, /must be a list of volumes, not a map$/);
    assertPoolRejected(template({ spec: { volumes: [{ emptyDir: {} }] } }), `${at}.spec.volumes[0].name`, /is required: volumes are merged by name$/);
    assertPoolRejected(template({ spec: [] }), `${at}.spec`, /must be a map \(a Pod spec\), not a list$/);
    assertPoolRejected(
      template({ metadata: "agents" }),
      `${at}.metadata`,
      /must be a map \(of the agent Pods' labels and annotations\), not the string "agents"$/,
    );
    assertPoolRejected(template({ metadata: { labels: ["tier"] } }), `${at}.metadata.labels`, /must be a map of label names to values, not a list$/);
    assertPoolRejected(
      template({ metadata: { annotations: { replicas: 3 } } }),
      `${at}.metadata.annotations["replicas"]`,
      /must be a string \(quote it in YAML\), not the number 3$/,
    );
  });

  it("rejects poolMin greater than poolMax", () => {
    assertPoolRejected((p) => (p.spec.capacity = { poolMin: 3, poolMax: 2 }), "spec.capacity.poolMin", /3 is greater than poolMax 2/);
  });

  it("rejects bufferMin greater than bufferMax", () => {
    assertPoolRejected(
      (p) =>
        (p.spec.capacity = {
          poolMin: 0,
          poolMax: 2,
          bufferMin: 5,
          bufferMax: 4,
        }),
      "spec.capacity.bufferMin",
      /5 is greater than bufferMax 4/,
    );
  });

  it("rejects negative and fractional capacities", () => {
    assertPoolRejected((p) => (p.spec.capacity.poolMin = -1), "spec.capacity.poolMin", /-1 is out of range; allowed: 0\.\./);
    assertPoolRejected((p) => (p.spec.capacity.poolMax = 1.5), "spec.capacity.poolMax", /integer/);
    assertPoolRejected((p) => (p.spec.maxSandboxesPerPod = 0), "spec.maxSandboxesPerPod", /0 is out of range; allowed: 1\.\.1024/);
    assertPoolRejected((p) => (p.spec.maxSandboxesPerPod = 1025), "spec.maxSandboxesPerPod", /allowed: 1\.\.1024/);
  });

  it("rejects an unknown runtimeType and lists the allowed ones", () => {
    assertPoolRejected((p) => (p.spec.runtimeType = "kata"), "spec.runtimeType", /"kata" is not allowed; allowed: container, gvisor$/);
  });

  it("rejects bad cpu and memory quantities with an example", () => {
    for (const cpu of ["1.5.5", "500mi", "-1", "m", "1e3"]) {
      assertPoolRejected(
        (p) => (p.spec.sandboxResources.cpu = cpu),
        "spec.sandboxResources.cpu",
        /is not valid \(CPU per sandbox, e\.g\. 500m or 2; at least 10m\.\)/,
      );
    }
    for (const memory of ["256MB", "1.5Gi", "Mi", "-1", "64Pi"]) {
      assertPoolRejected(
        (p) => (p.spec.sandboxResources.memory = memory),
        "spec.sandboxResources.memory",
        /is not valid \(Memory per sandbox, e\.g\. 256Mi: a whole number of bytes, or with one of the suffixes Ki, Mi, Gi, Ti, K, M, G, T; at least 6Mi, less than 8192Ti\.\)/,
      );
    }
    assertPoolRejected((p) => (p.spec.sandboxResources.pids = 0), "spec.sandboxResources.pids", /0 is out of range/);
  });

  it("refuses CPU limits below 10m (they would be sent as 0, no limit, or below the kernel's smallest quota) or above 2^31 - 1 millicores", () => {
    const outOfRange =
      /is out of range; allowed: 10m\.\.2147483647m \(10m is the kernel's smallest CPU quota, 1 ms per 100 ms; leave the field out for no limit\)$/;
    for (const cpu of ["0", "0m", "0.0", "0.0004", "1m", "9m", "0.0099", "0.00999999999999999999", "2147483648m", "3000000", "2147483.6475"]) {
      const error = rejection(() => validateSandboxPool(poolWith((p) => (p.spec.sandboxResources.cpu = cpu))));
      assert.equal(error.field, "spec.sandboxResources.cpu", cpu);
      assert.match(error.message, outOfRange, cpu);
      assert.ok(error.message.includes(`${JSON.stringify(cpu)} is out of range`), error.message);
    }
    for (const cpu of ["10m", "0.01", "0.010", "0010m", "2", "2147483647m", "2147483.647", "2147483.6470000"]) {
      assert.doesNotThrow(() => validateSandboxPool(poolWith((p) => (p.spec.sandboxResources.cpu = cpu))), cpu);
    }
  });

  it("refuses memory limits below 6Mi (0 would read as no limit; a sandbox cannot start below it) or of 2^53 bytes and more", () => {
    const outOfRange =
      /is out of range; allowed: at least 6Mi \(below it runc's init is OOM-killed before the command starts\) and less than 8192Ti \(2\^53 bytes\); leave the field out for no limit$/;
    for (const memory of ["0", "0Mi", "1Mi", "4Mi", "6291455", "6291K", "99999999999999T", "8192Ti", "9007199254740992", "99999999999999999999"]) {
      const error = rejection(() => validateSandboxPool(poolWith((p) => (p.spec.sandboxResources.memory = memory))));
      assert.equal(error.field, "spec.sandboxResources.memory", memory);
      assert.match(error.message, outOfRange, memory);
    }
    for (const memory of ["6Mi", "6291456", "6292K", "7M", "256Mi", "8191Ti", "9007199254740991"]) {
      assert.doesNotThrow(() => validateSandboxPool(poolWith((p) => (p.spec.sandboxResources.memory = memory))), memory);
    }
    assertPoolRejected((p) => (p.spec.sandboxResources.memory = "1".repeat(65)), "spec.sandboxResources.memory", /has 65 characters; at most 64 are allowed$/);
  });

  it("refuses disk limits below 1Mi (0 would read as no limit) or of 2^53 bytes and more, and any other grammar than memory's", () => {
    const outOfRange = /is out of range; allowed: at least 1Mi and less than 8192Ti \(2\^53 bytes\); leave the field out for no limit$/;
    for (const ephemeralStorage of ["0", "0Gi", "1023Ki", "1048575", "1M", "8192Ti", "9007199254740992"]) {
      const error = rejection(() => validateSandboxPool(poolWith((p) => (p.spec.sandboxResources.ephemeralStorage = ephemeralStorage))));
      assert.equal(error.field, "spec.sandboxResources.ephemeralStorage", ephemeralStorage);
      assert.match(error.message, outOfRange, ephemeralStorage);
    }
    for (const ephemeralStorage of ["1Mi", "1048576", "1049K", "2M", "10Gi", "8191Ti"]) {
      assert.doesNotThrow(() => validateSandboxPool(poolWith((p) => (p.spec.sandboxResources.ephemeralStorage = ephemeralStorage))), ephemeralStorage);
    }
    for (const ephemeralStorage of ["1GB", "1.5Gi", "-1", "Gi"]) {
      assertPoolRejected(
        (p) => (p.spec.sandboxResources.ephemeralStorage = ephemeralStorage),
        "spec.sandboxResources.ephemeralStorage",
        /is not valid \(Disk per sandbox, e\.g\. 1Gi \(the memory grammar\)/,
      );
    }
  });

  it("refuses pids and capacities beyond what the wire messages carry (int32)", () => {
    assertPoolRejected(
      (p) => (p.spec.sandboxResources.pids = 3_000_000_000),
      "spec.sandboxResources.pids",
      /^spec\.sandboxResources\.pids: 3000000000 is out of range; allowed: 1\.\.2147483647$/,
    );
    assert.doesNotThrow(() => validateSandboxPool(poolWith((p) => (p.spec.sandboxResources.pids = 2_147_483_647))));
    for (const field of ["poolMin", "poolMax", "bufferMin", "bufferMax"]) {
      assertPoolRejected((p) => (p.spec.capacity[field] = 2 ** 31), `spec.capacity.${field}`, /2147483648 is out of range; allowed: 0\.\.2147483647$/);
    }
  });

  it("bounds the length of the pool's image and prewarm images", () => {
    assertPoolRejected((p) => (p.spec.image = `${"a".repeat(1022)}:v1`), "spec.image", /has 1025 characters; at most 1024 are allowed$/);
    assertPoolRejected((p) => (p.spec.prewarmImages = ["busybox", `${"a".repeat(1022)}:v1`]), "spec.prewarmImages[1]", /has 1025 characters; at most 1024/);
  });

  it("names unknown fields of nested pool objects", () => {
    assertPoolRejected(
      (p) => (p.spec.capacity.surprise = 1),
      "spec.capacity.surprise",
      /allowed fields: poolMin, poolMax, bufferMin, bufferMax, scaleDownDelaySeconds, wakeTimeoutSeconds, dynamicBuffer$/,
    );
    assertPoolRejected((p) => (p.spec.sandboxResources.surprise = 1), "spec.sandboxResources.surprise", /allowed fields: cpu, memory, pids, ephemeralStorage$/);
    assertPoolRejected(
      (p) => (p.status.surprise = 1),
      "status.surprise",
      /allowed fields: agents, readyAgents, sandboxes, freeSlots, desiredAgents, buffer, updatedAgents, preparedInstances, hotImages, conditions, observedGeneration$/,
    );
    assertPoolRejected((p) => (p.spec.surprise = 1), "spec.surprise", /allowed fields: capacity, maxSandboxesPerPod, /);
  });

  it("rejects a network mode it does not know, and egress or sandbox-to-sandbox traffic on a Shared network", () => {
    assertPoolRejected((p) => (p.spec.network.mode = "Bridge"), "spec.network.mode", /"Bridge" is not allowed; allowed: Isolated, Shared$/);
    assertPoolRejected((p) => (p.spec.network.mode = "Shared"), "spec.network.egress", /applies to an Isolated network only, and this pool's is Shared/);
    assertPoolRejected(
      (p) => (p.spec.network = { mode: "Shared", allowSandboxToSandbox: true }),
      "spec.network.allowSandboxToSandbox",
      /applies to an Isolated network only/,
    );
    assertPoolRejected((p) => (p.spec.network.surprise = 1), "spec.network.surprise", /allowed fields: mode, egress, allowSandboxToSandbox$/);
    assert.doesNotThrow(() => validateSandboxPool(poolWith((p) => (p.spec.network = { mode: "Shared" }))));
  });

  it("checks the pool's egress policy as a sandbox's", () => {
    assertPoolRejected(
      (p) => (p.spec.network.egress.allow[1].cidr = "::1/0"),
      "spec.network.egress.allow[1].cidr",
      /bits are set after the \/0 prefix; the network is ::\/0/,
    );
    assertPoolRejected((p) => (p.spec.network.egress = { policy: "allowList" }), "spec.network.egress.allow", /needs at least one entry/);
    assertPoolRejected((p) => (p.spec.network.egress.policy = "denyAll"), "spec.network.egress.allow", /is read with policy allowList only/);
  });

  it("rejects a missing capacity, an empty image and a wrong kind", () => {
    assertPoolRejected((p) => delete p.spec.capacity, "spec.capacity", /is required/);
    assertPoolRejected((p) => (p.spec.image = ""), "spec.image", /must not be empty/);
    assertPoolRejected((p) => (p.kind = "Sandbox"), "kind", /allowed: SandboxPool$/);
  });

  it("checks only the parts asked for, apiVersion and kind always", () => {
    const refusedSpec = poolWith((p) => {
      p.spec.image = "registry.example.com/Team/app:1";
      p.spec.agentTemplate = { spec: { volumes: {} } };
      p.spec.capacity.poolMin = 9;
    });
    assert.throws(() => validateSandboxPool(refusedSpec), ValidationError);
    assert.doesNotThrow(() => validateSandboxPool(refusedSpec, { parts: ["metadata", "status"] }));
    const badLabel = poolWith((p) => {
      p.metadata.labels = { "-x": "1" };
      p.spec.maxSandboxesPerPod = 0;
    });
    assert.equal(rejection(() => validateSandboxPool(badLabel, { parts: ["metadata"] })).field, 'metadata.labels["-x"]');
    assert.doesNotThrow(() => validateSandboxPool(badLabel, { parts: ["status"] }));
    // A wrong spec does not hide what is wrong in a part asked for.
    const badStatus = poolWith((p) => {
      p.status.agents = -1;
      p.spec.capacity.bufferMin = { deeply: { nested: "wrong" } };
    });
    assert.equal(rejection(() => validateSandboxPool(badStatus, { parts: ["status"] })).field, "status.agents");
    assert.equal(
      rejection(() =>
        validateSandboxPool(
          poolWith((p) => (p.kind = "Sandbox")),
          { parts: ["status"] },
        ),
      ).field,
      "kind",
    );
    assert.equal(
      rejection(() =>
        validateSandboxPool(
          poolWith((p) => (p.surprise = 1)),
          { parts: [] },
        ),
      ).field,
      "surprise",
    );
  });

  it("rejects a Sandbox passed as a pool and a pool passed as a Sandbox", () => {
    assert.throws(() => validateSandboxPool(fullSandbox()), ValidationError);
    assert.throws(() => validateSandbox(fullPool()), ValidationError);
  });
});
