/**
 * A pool's agentTemplate is no way to root on the node: under the controller's default agent
 * template policy (restricted, FSB_AGENT_TEMPLATE_POLICY; the suite's deployment leaves it unset) a
 * pool whose template asks for `hostPID: true` (pool.yaml here) gets no agent Pod. Its status says
 * why — `AgentTemplateValid=False`, reason `AgentTemplateNotAllowed`, a message naming
 * `spec.agentTemplate.spec.hostPID`, what a pool may set and the setting that would allow it — and a
 * create in it fails at once saying the same, instead of waiting for an agent that cannot start; and
 * `fsb apply` (the API) of such a pool is refused at once, storing nothing.
 * Once the field is removed, the condition goes and the pool's agent starts (its allowed liveness
 * probe kept). Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { describe } from "node:test";
import { fileURLToPath } from "node:url";
import type { Condition, SandboxPool } from "@fast-sandbox/api";
import { NoCapacityError, PermissionDeniedError, type FastSandboxClient } from "@fast-sandbox/sdk";
import {
  SANDBOX_POOLS,
  agentPods,
  getObject,
  getPool,
  itWithDiagnostics,
  poolCaseOnLeader,
  poolStatus,
  waitForReadyAgents,
} from "../../../support/kubernetes-cases.js";
import { BASE_IMAGE, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "host-pid";
const REFUSAL =
  /^spec\.agentTemplate\.spec\.hostPID is not allowed by the deployment's agent template policy \(restricted\): a pool may set .*; set FSB_AGENT_TEMPLATE_POLICY=unrestricted on the controller to allow it$/;

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("the agent template policy refuses a pool's hostPID", () => {
    let namespace = "";
    let client: FastSandboxClient | undefined;

    poolCaseOnLeader(suite, { namespacePrefix: "template-policy", poolFile: path.join(HERE, "pool.yaml"), pool: POOL }, (created, leader) => {
      namespace = created;
      client = leader;
    });

    const templateCondition = async (): Promise<Condition | undefined> =>
      (await poolStatus(suite, namespace, POOL)).conditions?.find((condition) => condition.type === "AgentTemplateValid");

    itWithDiagnostics(
      suite,
      () => namespace,
      "says in the pool's status that hostPID is not allowed, and makes no agent Pod; a create fails at once saying so",
      180_000,
      async () => {
        const refused = await suite.eventually("the pool's AgentTemplateValid condition", templateCondition, { timeoutMs: 60_000 });
        assert.equal(refused.status, "False");
        assert.equal(refused.reason, "AgentTemplateNotAllowed");
        assert.match(refused.message ?? "", REFUSAL);
        // The reconcile that wrote it would have created the Pod first: none is there, nor counted.
        const status = await poolStatus(suite, namespace, POOL);
        assert.equal(status.desiredAgents, 1, "the pool wants its agent");
        assert.equal(status.agents, 0);
        assert.deepEqual(await agentPods(suite, namespace, POOL, { includeDeleting: true }), []);

        const error = await client!.sandboxes.create({ namespace, name: "refused", pool: POOL, image: BASE_IMAGE, command: ["sleep", "3600"] }).then(
          () => assert.fail("a create in the pool succeeded"),
          (error: unknown) => error,
        );
        assert.ok(error instanceof NoCapacityError, `a NoCapacityError, not ${String(error)}`);
        assert.match(error.message, /spec\.agentTemplate\.spec\.hostPID is not allowed by the deployment's agent template policy \(restricted\)/);
        assert.deepEqual(await agentPods(suite, namespace, POOL, { includeDeleting: true }), [], "still no agent Pod");

        // `fsb apply` (the API) of such a pool is refused at once, and nothing of it is stored.
        const other = { ...(await getPool(suite, namespace, POOL)), metadata: { name: "host-pid-by-api", namespace } } as SandboxPool;
        delete other.status;
        const applyError = await client!.pools.apply(other).then(
          () => assert.fail("the API stored a pool the policy refuses"),
          (error: unknown) => error,
        );
        assert.ok(applyError instanceof PermissionDeniedError, `a PermissionDeniedError, not ${String(applyError)}`);
        assert.match(applyError.message, REFUSAL);
        assert.equal(await getObject(suite, namespace, SANDBOX_POOLS, "host-pid-by-api"), undefined, "not stored");
      },
    );

    itWithDiagnostics(
      suite,
      () => namespace,
      "starts the pool's agent once hostPID is removed, and the condition goes",
      240_000,
      async () => {
        await suite.kubectlOk(
          "-n",
          namespace,
          "patch",
          "sandboxpool",
          POOL,
          "--type",
          "json",
          "-p",
          JSON.stringify([{ op: "remove", path: "/spec/agentTemplate/spec/hostPID" }]),
        );
        await waitForReadyAgents(suite, namespace, POOL, 1);
        assert.equal(await templateCondition(), undefined);
        const [pod] = await agentPods(suite, namespace, POOL);
        assert.ok(pod, "the agent's Pod");
        const spec = JSON.parse(await suite.kubectlOk("-n", namespace, "get", "pod", pod.metadata.name, "-o", "jsonpath={.spec}")) as {
          hostPID?: boolean;
          containers: { name: string; livenessProbe?: { failureThreshold?: number } }[];
        };
        assert.equal(spec.hostPID, undefined);
        assert.equal(spec.containers.find((container) => container.name === "agent")?.livenessProbe?.failureThreshold, 6, "the pool's allowed probe is kept");
      },
    );
  });
}
