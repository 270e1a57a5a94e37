/**
 * A pool's agent token reaches its agents through a Secret of the pool's namespace, not through their
 * Pods' spec (which Kubernetes' `view` role reads). The controller writes `<pool>-agent-token`
 * (owned by the pool, holding the token derived from the deployment's) without reading Secrets, and
 * never overwrites a Secret of that name that is not the pool's: a user's own Secret there (made
 * before the pool, here) is left as it was, no agent Pod is made, and the pool's status says
 * `AgentPodsCreated=False`, reason `TokenSecretTaken`. Once the user's Secret is deleted, the
 * controller's is made, the agent starts with its token (a sandbox is created and runs through it),
 * and the Pod's spec holds neither the pool's token nor the deployment's. Deleting the pool deletes
 * its Secret (the garbage collector, through the owner reference). Run by ../suite.test.ts on the
 * suite's cluster.
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe } from "node:test";
import { fileURLToPath } from "node:url";
import type { Condition, SandboxPool } from "@fast-sandbox/api";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import {
  SANDBOX_POOLS,
  agentPods,
  deleteCaseNamespace,
  getObject,
  itWithDiagnostics,
  poolStatus,
  waitForReadyAgents,
} from "../../../support/kubernetes-cases.js";
import { BASE_IMAGE, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "taken";
const SECRET = `${POOL}-agent-token`;

/** The pool's token as the documented scheme derives it (README: HMAC-SHA256 of the deployment's token over the pool's namespace and name). */
function expectedPoolToken(deploymentToken: string, namespace: string, pool: string): string {
  return createHmac("sha256", deploymentToken).update(`fast-sandbox.io/agent-token/pool-v1\0${namespace}\0${pool}`).digest("base64url");
}

interface SecretJson {
  metadata: { labels?: Record<string, string>; ownerReferences?: { kind: string; name: string; uid: string }[] };
  data?: Record<string, string>;
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("a pool's agent token is in a Secret of its own", () => {
    let namespace = "";
    let client: FastSandboxClient | undefined;

    const secret = async (): Promise<SecretJson | undefined> => {
      const result = await suite.kubectl("-n", namespace, "get", "secret", SECRET, "-o", "json");
      if (result.code !== 0 && /NotFound/.test(result.stderr)) return undefined;
      assert.equal(result.code, 0, result.stderr);
      return JSON.parse(result.stdout) as SecretJson;
    };
    const tokenIn = (found: SecretJson | undefined) => Buffer.from(found?.data?.token ?? "", "base64").toString();
    const podsCreated = async (): Promise<Condition | undefined> =>
      (await poolStatus(suite, namespace, POOL)).conditions?.find((condition) => condition.type === "AgentPodsCreated");

    before(
      async () => {
        namespace = await suite.createNamespace("pool-token");
        client = new FastSandboxClient({ url: await suite.controllerUrl(), token: suite.apiToken });
        await suite.kubectlOk("-n", namespace, "create", "secret", "generic", SECRET, "--from-literal=token=the-users-own");
        await suite.apply(readFileSync(path.join(HERE, "pool.yaml"), "utf8"), namespace);
      },
      { timeout: 120_000 },
    );

    after(
      async () => {
        client?.close();
        if (namespace) await deleteCaseNamespace(suite, namespace);
      },
      { timeout: 300_000 },
    );

    itWithDiagnostics(
      suite,
      () => namespace,
      "leaves a user's Secret of the token Secret's name as it was, makes no agent Pod, and says so in the pool's status",
      120_000,
      async () => {
        const refused = await suite.eventually("the pool's AgentPodsCreated=False", async () => {
          const condition = await podsCreated();
          return condition?.status === "False" ? condition : undefined;
        });
        assert.equal(refused.reason, "TokenSecretTaken");
        assert.match(refused.message ?? "", new RegExp(`Secret ${namespace}/${SECRET} exists and is not pool ${POOL}'s .*rename or delete it`));
        assert.deepEqual(await agentPods(suite, namespace, POOL, { includeDeleting: true }), []);
        const users = await secret();
        assert.equal(tokenIn(users), "the-users-own", "the user's Secret is not overwritten");
        assert.equal(users?.metadata.ownerReferences, undefined, "nor taken over");
      },
    );

    itWithDiagnostics(
      suite,
      () => namespace,
      "once that Secret is gone, writes its own, and the agent runs with the token from it (not in its Pod's spec)",
      240_000,
      async () => {
        await suite.kubectlOk("-n", namespace, "delete", "secret", SECRET);
        await waitForReadyAgents(suite, namespace, POOL, 1);
        const pool = await getObject<SandboxPool>(suite, namespace, SANDBOX_POOLS, POOL);
        const written = await secret();
        const token = expectedPoolToken(suite.agentToken, namespace, POOL);
        assert.equal(tokenIn(written), token);
        assert.deepEqual(
          written?.metadata.ownerReferences?.map(({ kind, name, uid }) => ({ kind, name, uid })),
          [{ kind: "SandboxPool", name: POOL, uid: pool?.metadata.uid }],
        );
        assert.equal(written?.metadata.labels?.["fast-sandbox.io/pool"], POOL);

        const [pod] = await agentPods(suite, namespace, POOL);
        assert.ok(pod, "the agent's Pod");
        const podJson = await suite.kubectlOk("-n", namespace, "get", "pod", pod.metadata.name, "-o", "json");
        assert.ok(!podJson.includes(token), "the pool's token is not in the Pod");
        assert.ok(!podJson.includes(suite.agentToken), "nor the deployment's");
        assert.match(podJson, new RegExp(`"secretKeyRef":\\s*\\{\\s*"key":\\s*"token",\\s*"name":\\s*"${SECRET}"`));

        // The controller calls the agent with the token the agent read from the Secret.
        const created = await client!.sandboxes.create({ namespace, name: "through-the-token", pool: POOL, image: BASE_IMAGE, command: ["sleep", "3600"] });
        assert.equal(created.status?.phase, "Running");
        const exec = await client!.sandboxes.exec("through-the-token", ["echo", "reached"], { namespace });
        assert.equal(exec.stdout.trim(), "reached");
        await client!.sandboxes.delete("through-the-token", { namespace });
      },
    );

    itWithDiagnostics(
      suite,
      () => namespace,
      "deletes the pool's Secret with the pool",
      240_000,
      async () => {
        await suite.kubectlOk("-n", namespace, "delete", SANDBOX_POOLS, POOL, "--wait=true", "--timeout=120s");
        await suite.eventually("the pool's token Secret to be gone", async () => (await secret()) === undefined, { timeoutMs: 120_000, intervalMs: 1000 });
      },
    );
  });
}
