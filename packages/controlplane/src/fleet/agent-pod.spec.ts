import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { V1Container, V1EnvVar } from "@kubernetes/client-node";
import { API_VERSION, type SandboxPool } from "@fast-sandbox/api";
import { POOL_LABEL, buildAgentPod } from "./agent-pod.js";

function pool(agentTemplate?: Record<string, unknown>): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name: "python", namespace: "team-a", uid: "0b5c2c1e-0000-4000-8000-000000000001" },
    spec: { capacity: { poolMin: 1, poolMax: 4 }, maxSandboxesPerPod: 8, ...(agentTemplate ? { agentTemplate } : {}) },
  };
}

function env(container: V1Container, name: string): V1EnvVar | undefined {
  return container.env?.find((e) => e.name === name);
}

describe("buildAgentPod", () => {
  it("names the Pod <pool>-agent-<random>, labels it with its pool and makes the pool its controlling owner", () => {
    const pod = buildAgentPod(pool());
    assert.equal(pod.metadata?.generateName, "python-agent-");
    assert.equal(pod.metadata?.name, undefined);
    assert.equal(pod.metadata?.namespace, "team-a");
    assert.equal(pod.metadata?.labels?.[POOL_LABEL], "python");
    assert.deepEqual(pod.metadata?.ownerReferences, [
      { apiVersion: API_VERSION, kind: "SandboxPool", name: "python", uid: "0b5c2c1e-0000-4000-8000-000000000001", controller: true, blockOwnerDeletion: true },
    ]);
  });

  it("refuses a pool read from nowhere (no uid to own the Pod)", () => {
    const p = pool();
    delete p.metadata.uid;
    assert.throws(() => buildAgentPod(p), /has no uid/);
  });

  it("without a template runs one `agent` container of the default image, with a readiness probe on the agent port", () => {
    const pod = buildAgentPod(pool(), { image: "registry.example/fsb/agent:v1", port: 7171 });
    const [agent] = pod.spec?.containers ?? [];
    assert.equal(pod.spec?.containers.length, 1);
    assert.equal(agent?.name, "agent");
    assert.equal(agent?.image, "registry.example/fsb/agent:v1");
    assert.deepEqual(agent?.ports, [{ name: "agent", containerPort: 7171, protocol: "TCP" }]);
    assert.deepEqual(agent?.readinessProbe?.httpGet, { path: "/readyz", port: 7171 });
    assert.equal(pod.spec?.restartPolicy, "Always");
  });

  it("injects the agent's identity, limits, listen address, token and containerd namespace", () => {
    const [agent] = buildAgentPod(pool(), { tokenSecretName: "agents-token", port: 7071 }).spec?.containers ?? [];
    assert.ok(agent);
    assert.deepEqual(env(agent, "FSB_AGENT_NAME")?.valueFrom?.fieldRef, { fieldPath: "metadata.name" });
    assert.deepEqual(env(agent, "FSB_AGENT_UID")?.valueFrom?.fieldRef, { fieldPath: "metadata.uid" });
    assert.deepEqual(env(agent, "FSB_AGENT_NAMESPACE")?.valueFrom?.fieldRef, { fieldPath: "metadata.namespace" });
    assert.deepEqual(env(agent, "FSB_NODE_NAME")?.valueFrom?.fieldRef, { fieldPath: "spec.nodeName" });
    assert.equal(env(agent, "FSB_AGENT_POOL")?.value, "python");
    assert.deepEqual(env(agent, "FSB_AGENT_CPU_LIMIT_MILLICORES")?.valueFrom?.resourceFieldRef, {
      containerName: "agent",
      resource: "limits.cpu",
      divisor: "1m",
    });
    assert.deepEqual(env(agent, "FSB_AGENT_MEMORY_LIMIT_BYTES")?.valueFrom?.resourceFieldRef, {
      containerName: "agent",
      resource: "limits.memory",
      divisor: "1",
    });
    assert.equal(env(agent, "FSB_AGENT_LISTEN")?.value, "0.0.0.0:7071");
    assert.deepEqual(env(agent, "FSB_AGENT_TOKEN")?.valueFrom?.secretKeyRef, { name: "agents-token", key: "token" });
    assert.equal(env(agent, "FSB_CONTAINERD_NAMESPACE")?.value, "k8s.io");
    assert.equal(env(agent, "FSB_CONTAINERD_SOCKET")?.value, "/run/containerd/containerd.sock");
  });

  it("mounts the host's containerd directories (socket dir and /var/lib/containerd)", () => {
    const pod = buildAgentPod(pool());
    assert.deepEqual(pod.spec?.volumes, [
      { name: "containerd-run", hostPath: { path: "/run/containerd", type: "Directory" } },
      { name: "containerd-root", hostPath: { path: "/var/lib/containerd", type: "Directory" } },
    ]);
    assert.deepEqual(pod.spec?.containers[0]?.volumeMounts, [
      { name: "containerd-run", mountPath: "/run/containerd" },
      { name: "containerd-root", mountPath: "/var/lib/containerd" },
    ]);
  });

  it("keeps the template's containers, resources, env, volumes and scheduling, injecting into the container named agent", () => {
    const template = {
      metadata: { labels: { team: "a" }, annotations: { note: "kept" } },
      spec: {
        nodeSelector: { pool: "fast" },
        tolerations: [{ key: "dedicated", operator: "Exists" }],
        volumes: [{ name: "cache", emptyDir: {} }],
        containers: [
          { name: "log-shipper", image: "shipper:1" },
          {
            name: "agent",
            image: "my/agent:2",
            resources: { limits: { cpu: "4", memory: "8Gi" } },
            env: [
              { name: "EXTRA", value: "1" },
              { name: "FSB_CONTAINERD_NAMESPACE", value: "mine" },
            ],
            volumeMounts: [{ name: "cache", mountPath: "/cache" }],
            readinessProbe: { tcpSocket: { port: 7071 } },
          },
        ],
      },
    };
    const pod = buildAgentPod(pool(template));
    assert.equal(pod.metadata?.labels?.team, "a");
    assert.equal(pod.metadata?.labels?.[POOL_LABEL], "python");
    assert.equal(pod.metadata?.annotations?.note, "kept");
    assert.deepEqual(pod.spec?.nodeSelector, { pool: "fast" });
    assert.deepEqual(pod.spec?.tolerations, [{ key: "dedicated", operator: "Exists" }]);
    const [shipper, agent] = pod.spec?.containers ?? [];
    assert.deepEqual(shipper, { name: "log-shipper", image: "shipper:1" });
    assert.ok(agent);
    assert.equal(agent.image, "my/agent:2");
    assert.deepEqual(agent.resources, { limits: { cpu: "4", memory: "8Gi" } });
    assert.equal(env(agent, "EXTRA")?.value, "1");
    assert.equal(env(agent, "FSB_CONTAINERD_NAMESPACE")?.value, "k8s.io", "the agent's own settings win");
    assert.equal(agent.env?.filter((e) => e.name === "FSB_CONTAINERD_NAMESPACE").length, 1);
    assert.deepEqual(agent.readinessProbe, { tcpSocket: { port: 7071 } });
    assert.deepEqual(
      agent.volumeMounts?.map((m) => m.mountPath),
      ["/cache", "/run/containerd", "/var/lib/containerd"],
    );
    assert.deepEqual(
      pod.spec?.volumes?.map((v) => v.name),
      ["cache", "containerd-run", "containerd-root"],
    );
    // The pool's template itself is untouched.
    assert.equal(template.spec.containers[1]?.env?.length, 2);
  });

  it("injects into the first container when none is named agent, and its limits are read from that container", () => {
    const pod = buildAgentPod(
      pool({
        spec: {
          containers: [
            { name: "main", image: "a:1" },
            { name: "side", image: "b:1" },
          ],
        },
      }),
    );
    const [main, side] = pod.spec?.containers ?? [];
    assert.ok(main && side);
    assert.equal(env(main, "FSB_AGENT_NAME")?.valueFrom?.fieldRef?.fieldPath, "metadata.name");
    assert.equal(env(main, "FSB_AGENT_CPU_LIMIT_MILLICORES")?.valueFrom?.resourceFieldRef?.containerName, "main");
    assert.equal(side.env, undefined);
  });
});
