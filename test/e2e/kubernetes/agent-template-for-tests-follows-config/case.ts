/**
 * The suite's agent Pod template (../deploy/agent-pod-template.yaml, which the overlay puts in the
 * ConfigMap fast-sandbox-agent-template instead of config/agent's) is config/agent's with exactly
 * the documented test changes and nothing else, so the suite's agents run what production runs:
 * containerd namespace fsb-e2e-kubernetes; host dirs under /run/fast-sandbox-e2e-kubernetes, which
 * the init container mounts at their host path and names in its arguments. When config/agent's
 * template changes, this fails until the copy follows. The cluster holds the copy.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { parse } from "yaml";
import { REPO_ROOT } from "../../../support/containerd.js";
import { CONTAINERD_NAMESPACE, DEPLOY_DIR, HOST_DIR, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: unknown;
}

interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  volumeMounts?: { name: string; mountPath: string }[];
}

interface PodTemplate {
  spec: {
    initContainers: Container[];
    containers: Container[];
    volumes: { name: string; hostPath?: { path: string; type?: string } }[];
  };
}

const PRODUCTION = path.join(REPO_ROOT, "config/agent/agent-pod-template.yaml");
const FOR_TESTS = path.join(DEPLOY_DIR, "agent-pod-template.yaml");

function byName<T extends { name: string }>(items: T[], name: string): T {
  const found = items.find((item) => item.name === name);
  assert.ok(found, `${name} is not in the template`);
  return found;
}

/** config/agent's template with the suite's changes, as documented in ../deploy/agent-pod-template.yaml. */
function withTestChanges(template: PodTemplate): PodTemplate {
  const install = byName(template.spec.initContainers, "install-node-binaries");
  assert.deepEqual(install.args, ["install-node-binaries", "/var/lib/fast-sandbox/bin"]);
  install.args = ["install-node-binaries", `${HOST_DIR}/bin`];
  byName(install.volumeMounts ?? [], "node-binaries").mountPath = `${HOST_DIR}/bin`;
  const agent = byName(template.spec.containers, "agent");
  byName(agent.env ?? [], "FSB_CONTAINERD_NAMESPACE").value = CONTAINERD_NAMESPACE;
  byName(template.spec.volumes, "agents-state").hostPath!.path = `${HOST_DIR}/agents`;
  byName(template.spec.volumes, "sandbox-checkpoints").hostPath!.path = `${HOST_DIR}/checkpoints`;
  byName(template.spec.volumes, "node-binaries").hostPath!.path = `${HOST_DIR}/bin`;
  return template;
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("agent template for tests follows config", () => {
    it("differs from config/agent's template only by the documented test changes", () => {
      const production = parse(readFileSync(PRODUCTION, "utf8")) as PodTemplate;
      const forTests = parse(readFileSync(FOR_TESTS, "utf8")) as PodTemplate;
      assert.deepEqual(forTests, withTestChanges(production));
    });

    it("is the template the deployed controller reads", async () => {
      const name = (
        await suite.kubectlOk(
          "-n",
          "fast-sandbox-system",
          "get",
          "configmap",
          "-l",
          "app.kubernetes.io/component=agent",
          "-o",
          "jsonpath={.items[*].metadata.name}",
        )
      ).trim();
      assert.match(name, /^fast-sandbox-agent-template-[a-z0-9]+$/, "one agent template ConfigMap");
      const deployed = await suite.kubectlOk("-n", "fast-sandbox-system", "get", "configmap", name, "-o", "jsonpath={.data.agent-pod-template\\.yaml}");
      assert.equal(deployed, readFileSync(FOR_TESTS, "utf8"));
      const mounted = await suite.kubectlOk(
        "-n",
        "fast-sandbox-system",
        "get",
        "deployment/fast-sandbox-controller",
        "-o",
        `jsonpath={.spec.template.spec.volumes[?(@.name=="agent-template")].configMap.name}`,
      );
      assert.equal(mounted, name);
    });
  });
}
