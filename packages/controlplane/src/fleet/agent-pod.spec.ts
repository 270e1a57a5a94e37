import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { posix } from "node:path";
import { loadYaml, type V1Container, type V1EnvVar, type V1Pod, type V1PodTemplateSpec } from "@kubernetes/client-node";
import { API_VERSION, type SandboxPool } from "@fast-sandbox/api";
import { agentLimitsEnv } from "./agent-limits-env.js";
import { AGENT_CHECKPOINT_DIR, POOL_LABEL, agentPodLimits, agentPodTemplateHash, buildAgentPod, mergePodTemplates, type AgentPodOptions } from "./agent-pod.js";
import { TEMPLATE_HASH_LABEL } from "./agent-template-hash.js";
import { AGENT_TOKEN_LABEL, POOL_TOKEN_SCHEME, poolAgentToken } from "./agent-token.js";

/** The deployment's default agent Pod template, as the controller reads it (FSB_AGENT_TEMPLATE_FILE). */
function defaultTemplate(): V1PodTemplateSpec {
  return loadYaml<V1PodTemplateSpec>(readFileSync(new URL("../../../../config/agent/agent-pod-template.yaml", import.meta.url), "utf8"));
}

function envNames(container: V1Container | undefined): string[] {
  return container?.env?.map((e) => e.name) ?? [];
}

/** Asserts `first` comes before `second` in the container's env (a `$(first)` in `second` expands). */
function assertBefore(container: V1Container | undefined, first: string, second: string): void {
  const names = envNames(container);
  assert.ok(names.includes(first), `${first} is set`);
  assert.ok(names.includes(second), `${second} is set`);
  assert.ok(names.indexOf(first) < names.indexOf(second), `${first} comes before ${second}: ${names.join(", ")}`);
}

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

/** Whether `path` is `dir` or under it. */
function isUnder(path: string, dir: string): boolean {
  const relative = posix.relative(dir, path);
  return relative === "" || (!relative.startsWith("..") && !posix.isAbsolute(relative));
}

/**
 * Where `path` of the container is on the host: through the container's deepest mount holding it,
 * when that mount's volume is a hostPath; undefined when no hostPath volume holds it (an emptyDir,
 * the container's own files: gone with the Pod).
 */
function hostPathOf(pod: V1Pod, container: V1Container, path: string): string | undefined {
  const mount = (container.volumeMounts ?? []).filter((m) => isUnder(path, m.mountPath)).sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  const volume = pod.spec?.volumes?.find((v) => v.name === mount?.name);
  if (!mount || !volume?.hostPath) return undefined;
  return posix.join(volume.hostPath.path, mount.subPath ?? "", posix.relative(mount.mountPath, path));
}

/**
 * Asserts the agent keeps its pool's checkpoints where its pool's other agents on the node (and
 * its successors) find them: FSB_CHECKPOINT_DIR the same for every agent Pod, outside the agent's
 * own state directory, on a hostPath volume at `hostDir` (the host's containerd writes the images
 * there, so the agent must see it at the host's path).
 */
function assertNodeCheckpointDir(pod: V1Pod, hostDir = AGENT_CHECKPOINT_DIR): void {
  const agent = pod.spec?.containers.find((c) => c.name === "agent") ?? pod.spec?.containers[0];
  assert.ok(agent);
  const dir = env(agent, "FSB_CHECKPOINT_DIR")?.value;
  assert.equal(dir, "/var/lib/fast-sandbox/checkpoints");
  assert.equal(env(agent, "FSB_CHECKPOINT_DIR")?.valueFrom, undefined);
  assert.equal(agent.env?.filter((e) => e.name === "FSB_CHECKPOINT_DIR").length, 1);
  const stateDir = env(agent, "FSB_AGENT_STATE_DIR")?.value?.replaceAll("$(FSB_AGENT_NAME)", "python-agent-x7k2p");
  if (stateDir) assert.ok(!isUnder(dir, stateDir), `${dir} is in the agent's own state directory ${stateDir}`);
  assert.equal(hostPathOf(pod, agent, dir), hostDir, "on a hostPath volume");
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

  it("labels the Pod with its template's hash: the same for the same template in any key order, another for any change that reaches the agent", () => {
    const hash = (p: SandboxPool, options: AgentPodOptions = {}) => buildAgentPod(p, options).metadata?.labels?.[TEMPLATE_HASH_LABEL];
    const template = { metadata: { labels: { team: "a" } }, spec: { containers: [{ name: "agent", resources: { limits: { cpu: "2", memory: "4Gi" } } }] } };
    const reordered = { spec: { containers: [{ resources: { limits: { memory: "4Gi", cpu: "2" } }, name: "agent" }] }, metadata: { labels: { team: "a" } } };
    const base = hash(pool(template));
    assert.match(base ?? "", /^[0-9a-f]{16}$/);
    assert.equal(hash(pool(reordered)), base, "key order does not count");
    assert.equal(agentPodTemplateHash(pool(template)), base);
    const differs = (p: SandboxPool, options: AgentPodOptions = {}, why = "") => assert.notEqual(hash(p, options), base, why);
    differs(pool({ ...template, spec: { containers: [{ name: "agent", resources: { limits: { cpu: "3", memory: "4Gi" } } }] } }), {}, "agent limits");
    differs({ ...pool(template), spec: { ...pool(template).spec, image: "python:3.12", preparedInstances: 3 } }, {}, "prepared instances");
    differs(pool(template), { image: "fast-sandbox.io/agent:v2" }, "the agent image");
    differs(pool(template), { baseTemplate: { spec: { containers: [{ name: "agent", args: ["--verbose"] }] } } }, "the deployment's base template");
    // What does not reach the agent leaves it alone: slots and capacity are the registry's.
    assert.equal(hash({ ...pool(template), spec: { ...pool(template).spec, maxSandboxesPerPod: 2, capacity: { poolMin: 0, poolMax: 9 } } }), base);
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
    assert.deepEqual(agent?.readinessProbe, { httpGet: { path: "/readyz", port: 7171 }, periodSeconds: 2, timeoutSeconds: 2, failureThreshold: 3 });
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
    assert.equal(env(agent, "FSB_AGENT_OWN_NETWORK")?.value, "true", "Shared runc sandboxes join the Pod's network, not the node's");
  });

  it("gives the agent its pool's own token from the pool's token Secret, never in the Pod's spec, and labels the Pod so", () => {
    const built = buildAgentPod(pool(), { deploymentToken: "deployment-token" });
    const [agent] = built.spec?.containers ?? [];
    assert.ok(agent);
    assert.equal(env(agent, "FSB_AGENT_TOKEN")?.value, undefined);
    assert.deepEqual(env(agent, "FSB_AGENT_TOKEN")?.valueFrom, { secretKeyRef: { name: "python-agent-token", key: "token" } });
    // Whoever may `view` the namespace reads the Pod: neither the pool's token nor the deployment's is in it.
    const json = JSON.stringify(built);
    assert.ok(!json.includes(poolAgentToken("deployment-token", "team-a", "python")), "the pool's token is not in the Pod");
    assert.ok(!json.includes("deployment-token"), "the deployment's token is not in the Pod");
    assert.equal(built.metadata?.labels?.[AGENT_TOKEN_LABEL], POOL_TOKEN_SCHEME);
    // Without the deployment's token: the Secret, and no label (an agent called with the deployment's token).
    assert.equal(buildAgentPod(pool()).metadata?.labels?.[AGENT_TOKEN_LABEL], undefined);
  });

  it("tells the agent to keep the pool's prepared instances: the default for a runc pool with an image, none with preparedInstances 0 or no image", () => {
    const withImage = pool();
    withImage.spec.image = "busybox:1.36";
    const [agent] = buildAgentPod(withImage).spec?.containers ?? [];
    assert.ok(agent);
    assert.equal(env(agent, "FSB_PREPARED_INSTANCES")?.value, "2");
    assert.match(env(agent, "FSB_PREPARED_TEMPLATE")?.value ?? "", /busybox:1\.36/);
    withImage.spec.preparedInstances = 0;
    const [optedOut] = buildAgentPod(withImage).spec?.containers ?? [];
    assert.ok(optedOut);
    assert.equal(env(optedOut, "FSB_PREPARED_INSTANCES"), undefined);
    const [withoutImage] = buildAgentPod(pool()).spec?.containers ?? [];
    assert.ok(withoutImage);
    assert.equal(env(withoutImage, "FSB_PREPARED_INSTANCES"), undefined);
  });

  it("mounts the host's containerd directories (socket dir and /var/lib/containerd) and the node's checkpoint directory", () => {
    const pod = buildAgentPod(pool());
    assert.deepEqual(pod.spec?.volumes, [
      { name: "containerd-run", hostPath: { path: "/run/containerd", type: "Directory" } },
      { name: "containerd-root", hostPath: { path: "/var/lib/containerd", type: "Directory" } },
      { name: "sandbox-checkpoints", hostPath: { path: "/var/lib/fast-sandbox/checkpoints", type: "DirectoryOrCreate" } },
    ]);
    assert.deepEqual(pod.spec?.containers[0]?.volumeMounts, [
      { name: "containerd-run", mountPath: "/run/containerd" },
      { name: "containerd-root", mountPath: "/var/lib/containerd" },
      { name: "sandbox-checkpoints", mountPath: "/var/lib/fast-sandbox/checkpoints" },
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
      ["/cache", "/run/containerd", "/var/lib/containerd", "/var/lib/fast-sandbox/checkpoints"],
    );
    assert.deepEqual(
      pod.spec?.volumes?.map((v) => v.name),
      ["cache", "containerd-run", "containerd-root", "sandbox-checkpoints"],
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

describe("buildAgentPod: the node's checkpoint directory (FSB_CHECKPOINT_DIR)", () => {
  it("keeps the pool's checkpoints in the node's directory, a hostPath, not in the agent's own state directory", () => {
    const pod = buildAgentPod(pool(), { baseTemplate: defaultTemplate() });
    assertNodeCheckpointDir(pod);
    const agent = pod.spec?.containers[0];
    assert.ok(agent);
    // The shipped template's state dir is per agent: checkpoints there went with their agent.
    assert.equal(env(agent, "FSB_AGENT_STATE_DIR")?.value, "/var/lib/fast-sandbox/agents/$(FSB_AGENT_NAME)");
    assert.equal(agent.volumeMounts?.filter((m) => m.mountPath === AGENT_CHECKPOINT_DIR).length, 1);
    assert.equal(pod.spec?.volumes?.filter((v) => v.name === "sandbox-checkpoints").length, 1);
  });

  it("is set without a base template, and a pool's template cannot take it away or point it at a per-agent directory", () => {
    assertNodeCheckpointDir(buildAgentPod(pool()));
    const perAgent = {
      spec: {
        containers: [
          {
            name: "agent",
            env: [
              { name: "FSB_AGENT_STATE_DIR", value: "/data/agents/$(FSB_AGENT_NAME)" },
              { name: "FSB_CHECKPOINT_DIR", value: "/data/agents/$(FSB_AGENT_NAME)/checkpoints" },
            ],
            volumeMounts: [{ name: "data", mountPath: "/data" }],
          },
        ],
        volumes: [{ name: "data", emptyDir: {} }],
      },
    };
    assertNodeCheckpointDir(buildAgentPod(pool(perAgent)));
    assertNodeCheckpointDir(buildAgentPod(pool(perAgent), { baseTemplate: defaultTemplate() }));
    // A pool's template whose agent container has another name: the first container gets it.
    const other = buildAgentPod(
      pool({
        spec: {
          containers: [
            { name: "main", image: "my/agent:1" },
            { name: "side", image: "b:1" },
          ],
        },
      }),
    );
    assertNodeCheckpointDir(other);
    assert.equal(other.spec?.containers[1]?.volumeMounts, undefined);
  });

  it("keeps a template's own hostPath at that path (the e2e suite's host dir), once", () => {
    const base = defaultTemplate();
    const volume = base.spec?.volumes?.find((v) => v.name === "sandbox-checkpoints");
    assert.ok(volume?.hostPath);
    volume.hostPath.path = "/run/fast-sandbox-e2e-kubernetes/checkpoints";
    const pod = buildAgentPod(pool(), { baseTemplate: base });
    assertNodeCheckpointDir(pod, "/run/fast-sandbox-e2e-kubernetes/checkpoints");
    assert.equal(pod.spec?.volumes?.filter((v) => v.name === "sandbox-checkpoints").length, 1);
  });
});

describe("mergePodTemplates", () => {
  it("merges metadata labels and annotations, the overlay's winning", () => {
    const merged = mergePodTemplates(
      { metadata: { labels: { a: "base", b: "base" }, annotations: { note: "base" } } },
      { metadata: { labels: { b: "pool", c: "pool" }, annotations: { other: "pool" } } },
    );
    assert.deepEqual(merged.metadata?.labels, { a: "base", b: "pool", c: "pool" });
    assert.deepEqual(merged.metadata?.annotations, { note: "base", other: "pool" });
  });

  it("keeps whichever side has a spec when the other has none", () => {
    const spec = { containers: [{ name: "agent", image: "a:1" }] };
    assert.deepEqual(mergePodTemplates({ spec }, {}).spec, spec);
    assert.deepEqual(mergePodTemplates({}, { spec }).spec, spec);
    assert.equal(mergePodTemplates({}, {}).spec, undefined);
  });

  it("lets the overlay's other spec fields win and keeps the base's it does not set", () => {
    const merged = mergePodTemplates(
      { spec: { serviceAccountName: "base-sa", terminationGracePeriodSeconds: 30, containers: [{ name: "agent" }] } },
      { spec: { terminationGracePeriodSeconds: 60, nodeSelector: { disk: "ssd" }, containers: [] } },
    );
    assert.equal(merged.spec?.serviceAccountName, "base-sa");
    assert.equal(merged.spec?.terminationGracePeriodSeconds, 60);
    assert.deepEqual(merged.spec?.nodeSelector, { disk: "ssd" });
    assert.deepEqual(merged.spec?.containers, [{ name: "agent" }], "an overlay with no containers keeps the base's");
  });

  it("merges containers by name: the base's in their places with the overlay's fields winning, then the overlay's new ones", () => {
    const merged = mergePodTemplates(
      {
        spec: {
          containers: [
            { name: "agent", imagePullPolicy: "IfNotPresent", resources: { limits: { cpu: "4" } } },
            { name: "log-shipper", image: "shipper:1" },
          ],
        },
      },
      {
        spec: {
          containers: [
            { name: "sidecar", image: "sidecar:1" },
            { name: "agent", image: "my/agent:2", resources: { limits: { cpu: "8" } } },
          ],
        },
      },
    );
    assert.deepEqual(merged.spec?.containers, [
      { name: "agent", imagePullPolicy: "IfNotPresent", image: "my/agent:2", resources: { limits: { cpu: "8" } } },
      { name: "log-shipper", image: "shipper:1" },
      { name: "sidecar", image: "sidecar:1" },
    ]);
  });

  it("merges init containers by name", () => {
    const merged = mergePodTemplates(
      {
        spec: {
          containers: [],
          initContainers: [
            { name: "install", command: ["cp"] },
            { name: "warm", image: "w:1" },
          ],
        },
      },
      {
        spec: {
          containers: [],
          initContainers: [
            { name: "install", image: "custom:1" },
            { name: "extra", image: "e:1" },
          ],
        },
      },
    );
    assert.deepEqual(merged.spec?.initContainers, [
      { name: "install", command: ["cp"], image: "custom:1" },
      { name: "warm", image: "w:1" },
      { name: "extra", image: "e:1" },
    ]);
    assert.equal(mergePodTemplates({ spec: { containers: [] } }, { spec: { containers: [] } }).spec?.initContainers, undefined);
  });

  it("merges volumes by name, the overlay's replacing the base's of the same name", () => {
    const merged = mergePodTemplates(
      {
        spec: {
          containers: [],
          volumes: [
            { name: "state", hostPath: { path: "/var/lib/x" } },
            { name: "bin", hostPath: { path: "/opt/bin" } },
          ],
        },
      },
      {
        spec: {
          containers: [],
          volumes: [
            { name: "state", emptyDir: {} },
            { name: "cache", emptyDir: {} },
          ],
        },
      },
    );
    const volumes = merged.spec?.volumes ?? [];
    assert.deepEqual(volumes.map((v) => v.name).sort(), ["bin", "cache", "state"]);
    assert.deepEqual(
      volumes.find((v) => v.name === "state"),
      { name: "state", emptyDir: {} },
    );
  });

  it("merges a container's env by name, the overlay's value in the base's place, so later $(VAR) references still expand", () => {
    const merged = mergePodTemplates(
      {
        spec: {
          containers: [
            {
              name: "agent",
              env: [
                { name: "ROOT", value: "/base" },
                { name: "STATE", value: "$(ROOT)/state" },
                { name: "KEEP", value: "1" },
              ],
            },
          ],
        },
      },
      {
        spec: {
          containers: [
            {
              name: "agent",
              env: [
                { name: "EXTRA", value: "x" },
                { name: "ROOT", value: "/pool" },
              ],
            },
          ],
        },
      },
    );
    assert.deepEqual(merged.spec?.containers[0]?.env, [
      { name: "ROOT", value: "/pool" },
      { name: "STATE", value: "$(ROOT)/state" },
      { name: "KEEP", value: "1" },
      { name: "EXTRA", value: "x" },
    ]);
  });

  it("merges a container's mounts by mountPath, the overlay's winning", () => {
    const merged = mergePodTemplates(
      {
        spec: {
          containers: [
            {
              name: "agent",
              volumeMounts: [
                { name: "bin", mountPath: "/opt/bin", readOnly: true },
                { name: "state", mountPath: "/state" },
              ],
            },
          ],
        },
      },
      {
        spec: {
          containers: [
            {
              name: "agent",
              volumeMounts: [
                { name: "bin2", mountPath: "/opt/bin" },
                { name: "cache", mountPath: "/cache" },
              ],
            },
          ],
        },
      },
    );
    const mounts = merged.spec?.containers[0]?.volumeMounts ?? [];
    assert.deepEqual(mounts.map((m) => m.mountPath).sort(), ["/cache", "/opt/bin", "/state"]);
    assert.deepEqual(
      mounts.find((m) => m.mountPath === "/opt/bin"),
      { name: "bin2", mountPath: "/opt/bin" },
    );
  });

  it("keeps the env and mounts of a container the overlay names without any", () => {
    const merged = mergePodTemplates(
      { spec: { containers: [{ name: "agent", env: [{ name: "A", value: "1" }], volumeMounts: [{ name: "v", mountPath: "/v" }] }] } },
      { spec: { containers: [{ name: "agent", image: "my/agent:2" }] } },
    );
    assert.deepEqual(merged.spec?.containers, [
      { name: "agent", image: "my/agent:2", env: [{ name: "A", value: "1" }], volumeMounts: [{ name: "v", mountPath: "/v" }] },
    ]);
  });
});

describe("agentPodLimits and agentLimitsEnv: the agent container's limits, which bound all of an agent's sandboxes", () => {
  it("reads the pool's template over the deployment's: the shipped one's 4 CPUs and 8Gi unless the pool sets its own resources", () => {
    assert.deepEqual(agentPodLimits(pool(), { baseTemplate: defaultTemplate() }), { cpuMillis: 4000, memoryBytes: 8 * 1024 ** 3 });
    const limited = pool({ spec: { containers: [{ name: "agent", resources: { limits: { memory: "512Mi" } } }] } });
    // Containers merge by name, and the pool's container's resources replace the deployment's whole (as in its Pods).
    assert.deepEqual(agentPodLimits(limited, { baseTemplate: defaultTemplate() }), { memoryBytes: 512 * 1024 ** 2 });
    assert.deepEqual(buildAgentPod(limited, { baseTemplate: defaultTemplate() }).spec?.containers[0]?.resources, { limits: { memory: "512Mi" } });
    assert.deepEqual(agentPodLimits(limited), { memoryBytes: 512 * 1024 ** 2 });
    assert.deepEqual(agentPodLimits(pool()), {});
    // Not quantities (the API server would refuse the Pod): none.
    assert.deepEqual(agentPodLimits(pool({ spec: { containers: [{ name: "agent", resources: { limits: { cpu: "fast" } } }] } })), {});
  });

  it("gives the embedded mode's agents what the Downward API gives agent Pods", () => {
    const limited = pool({ spec: { containers: [{ name: "agent", resources: { limits: { cpu: "300m", memory: "48Mi" } } }] } });
    assert.deepEqual(agentLimitsEnv(limited), { FSB_AGENT_CPU_LIMIT_MILLICORES: "300", FSB_AGENT_MEMORY_LIMIT_BYTES: String(48 * 1024 ** 2) });
    assert.deepEqual(agentLimitsEnv(pool()), {});
    // The names the agent Pod's Downward API sets.
    const env = envNames(buildAgentPod(limited).spec?.containers[0]);
    for (const name of Object.keys(agentLimitsEnv(limited))) assert.ok(env.includes(name), name);
  });
});

describe("buildAgentPod with a base template (config/agent/agent-pod-template.yaml)", () => {
  const AGENT_IMAGE = "registry.example/fsb/agent:v3";

  it("gives the containers and init containers that name no image the agent image", () => {
    const pod = buildAgentPod(pool(), { baseTemplate: defaultTemplate(), image: AGENT_IMAGE });
    assert.deepEqual(
      pod.spec?.containers.map((c) => [c.name, c.image]),
      [["agent", AGENT_IMAGE]],
    );
    assert.deepEqual(
      pod.spec?.initContainers?.map((c) => [c.name, c.image]),
      [["install-node-binaries", AGENT_IMAGE]],
    );
  });

  it("keeps an image a pool's template names, for containers and init containers", () => {
    const pod = buildAgentPod(
      pool({
        spec: {
          initContainers: [{ name: "install-node-binaries", image: "pinned/agent:1" }],
          containers: [{ name: "agent", image: "pinned/agent:1" }, { name: "sidecar", image: "sidecar:1" }, { name: "no-image" }],
        },
      }),
      { baseTemplate: defaultTemplate(), image: AGENT_IMAGE },
    );
    assert.deepEqual(
      pod.spec?.containers.map((c) => [c.name, c.image]),
      [
        ["agent", "pinned/agent:1"],
        ["sidecar", "sidecar:1"],
        ["no-image", AGENT_IMAGE],
      ],
    );
    assert.deepEqual(
      pod.spec?.initContainers?.map((c) => [c.name, c.image]),
      [["install-node-binaries", "pinned/agent:1"]],
    );
    assert.deepEqual(pod.spec?.initContainers?.[0]?.args, ["install-node-binaries", "/var/lib/fast-sandbox/bin"], "the base's args are kept");
  });

  it("replaces the template's agent env in place, so FSB_AGENT_STATE_DIR's $(FSB_AGENT_NAME) still expands", () => {
    const base = defaultTemplate();
    const baseNames = envNames(base.spec?.containers[0]);
    const [agent] = buildAgentPod(pool(), { baseTemplate: base, tokenSecretName: "agents-token", containerdNamespace: "k8s.io" }).spec?.containers ?? [];
    assert.ok(agent);
    // The token is the controller's to inject (the template names none): appended after them.
    assert.ok(!baseNames.includes("FSB_AGENT_TOKEN"));
    assert.deepEqual(envNames(agent), [...baseNames, "FSB_AGENT_TOKEN"], "same variables, same order, none twice");
    assert.equal(env(agent, "FSB_AGENT_STATE_DIR")?.value, "/var/lib/fast-sandbox/agents/$(FSB_AGENT_NAME)");
    assertBefore(agent, "FSB_AGENT_NAME", "FSB_AGENT_STATE_DIR");
    // The injected values replace the template's.
    assert.equal(env(agent, "FSB_AGENT_POOL")?.value, "python");
    assert.equal(env(agent, "FSB_AGENT_POOL")?.valueFrom, undefined);
    assert.deepEqual(env(agent, "FSB_AGENT_TOKEN")?.valueFrom?.secretKeyRef, { name: "agents-token", key: "token" });
    assert.equal(env(agent, "FSB_HELPER_PATH")?.value, "/var/lib/fast-sandbox/bin/fsb-helper");
  });

  it("keeps FSB_AGENT_STATE_DIR after FSB_AGENT_NAME when a pool's template overrides or adds env", () => {
    const pod = buildAgentPod(
      pool({
        spec: {
          containers: [
            {
              name: "agent",
              env: [
                { name: "FSB_AGENT_NAME", value: "ignored" },
                { name: "FSB_HELPER_PATH", value: "/opt/helper" },
                { name: "EXTRA", value: "1" },
              ],
            },
          ],
        },
      }),
      { baseTemplate: defaultTemplate() },
    );
    const [agent] = pod.spec?.containers ?? [];
    assertBefore(agent, "FSB_AGENT_NAME", "FSB_AGENT_STATE_DIR");
    assert.deepEqual(env(agent!, "FSB_AGENT_NAME")?.valueFrom?.fieldRef, { fieldPath: "metadata.name" }, "the agent's identity wins");
    assert.equal(env(agent!, "FSB_HELPER_PATH")?.value, "/opt/helper", "the pool's value wins");
    assert.equal(env(agent!, "EXTRA")?.value, "1");
    assert.equal(new Set(envNames(agent)).size, envNames(agent).length, "no variable twice");
  });

  it("takes the rest of the base template: service account, init container, probes, resources, hostPath volumes and mounts, without duplicates", () => {
    const base = defaultTemplate();
    const pod = buildAgentPod(pool(), { baseTemplate: base });
    const spec = pod.spec;
    assert.equal(spec?.serviceAccountName, "fast-sandbox-agent");
    assert.equal(spec?.automountServiceAccountToken, false);
    assert.equal(spec?.terminationGracePeriodSeconds, 30);
    assert.equal(pod.metadata?.labels?.["app.kubernetes.io/component"], "agent");
    assert.equal(pod.metadata?.labels?.[POOL_LABEL], "python");
    const [agent] = spec?.containers ?? [];
    assert.ok(agent);
    assert.deepEqual(agent.readinessProbe, { httpGet: { path: "/readyz", port: "agent" }, periodSeconds: 2, timeoutSeconds: 2, failureThreshold: 3 });
    assert.deepEqual(agent.livenessProbe?.httpGet, { path: "/healthz", port: "agent" });
    assert.deepEqual(agent.ports, [{ name: "agent", containerPort: 7071, protocol: "TCP" }]);
    assert.deepEqual(agent.resources?.limits, { cpu: "4", memory: "8Gi" });
    assert.equal(agent.securityContext?.privileged, true);
    assert.deepEqual(
      agent.volumeMounts?.map((m) => m.mountPath),
      [
        "/run/containerd",
        "/var/lib/containerd",
        "/var/lib/fast-sandbox/agents",
        "/var/lib/fast-sandbox/checkpoints",
        "/var/lib/fast-sandbox/bin",
        "/run/netns",
        "/run/fast-sandbox/network",
        "/sys/fs/cgroup",
      ],
    );
    // The host's cgroup tree (runc's paths), not the view of a private cgroup namespace.
    assert.deepEqual(
      spec?.volumes?.find((v) => v.name === "host-cgroup"),
      { name: "host-cgroup", hostPath: { path: "/sys/fs/cgroup", type: "Directory" } },
    );
    // Isolated sandboxes' namespaces are made by the agent and must be seen by the host's containerd.
    assert.equal(agent.volumeMounts?.find((m) => m.mountPath === "/run/netns")?.mountPropagation, "Bidirectional");
    assert.deepEqual(
      spec?.volumes?.map((v) => v.name),
      ["containerd-run", "containerd-root", "agents-state", "sandbox-checkpoints", "node-binaries", "netns", "network-state", "host-cgroup"],
    );
    assert.deepEqual(base, defaultTemplate(), "the base template itself is untouched");
  });

  it("merges a pool's template over it: the pool's resources and scheduling win, the base's containers, env and volumes stay", () => {
    const pod = buildAgentPod(
      pool({
        metadata: { labels: { team: "a" } },
        spec: {
          nodeSelector: { sandbox: "true" },
          containers: [
            {
              name: "agent",
              resources: { limits: { cpu: "16", memory: "32Gi" } },
              volumeMounts: [{ name: "scratch", mountPath: "/scratch" }],
            },
            { name: "log-shipper", image: "shipper:1" },
          ],
          volumes: [{ name: "scratch", emptyDir: {} }],
        },
      }),
      { baseTemplate: defaultTemplate(), image: AGENT_IMAGE },
    );
    assert.equal(pod.metadata?.labels?.team, "a");
    assert.equal(pod.metadata?.labels?.["app.kubernetes.io/name"], "fast-sandbox");
    assert.deepEqual(pod.spec?.nodeSelector, { sandbox: "true" });
    assert.equal(pod.spec?.serviceAccountName, "fast-sandbox-agent");
    const [agent, shipper] = pod.spec?.containers ?? [];
    assert.ok(agent);
    assert.equal(agent.name, "agent");
    assert.equal(agent.image, AGENT_IMAGE);
    assert.deepEqual(agent.resources, { limits: { cpu: "16", memory: "32Gi" } });
    assert.equal(env(agent, "FSB_RUNSC_PATH")?.value, "/var/lib/fast-sandbox/bin/runsc");
    // The daemon the init container installed on the host: the host's containerd mounts it into sandboxes.
    assert.equal(env(agent, "FSB_ENVD_PATH")?.value, "/var/lib/fast-sandbox/bin/fsb-envd");
    assertBefore(agent, "FSB_AGENT_NAME", "FSB_AGENT_STATE_DIR");
    assert.deepEqual(agent.volumeMounts?.map((m) => m.mountPath).sort(), [
      "/run/containerd",
      "/run/fast-sandbox/network",
      "/run/netns",
      "/scratch",
      "/sys/fs/cgroup",
      "/var/lib/containerd",
      "/var/lib/fast-sandbox/agents",
      "/var/lib/fast-sandbox/bin",
      "/var/lib/fast-sandbox/checkpoints",
    ]);
    assert.deepEqual(shipper, { name: "log-shipper", image: "shipper:1" });
    assert.deepEqual(pod.spec?.volumes?.map((v) => v.name).sort(), [
      "agents-state",
      "containerd-root",
      "containerd-run",
      "host-cgroup",
      "netns",
      "network-state",
      "node-binaries",
      "sandbox-checkpoints",
      "scratch",
    ]);
    assert.equal(pod.spec?.initContainers?.[0]?.name, "install-node-binaries");
  });
});
