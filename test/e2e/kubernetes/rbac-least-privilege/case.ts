/**
 * Every component runs with exactly the Kubernetes API access config/rbac gives it, and that is
 * enough: the suite's cluster runs the controller, agents and janitor with those roles only.
 * - What each ServiceAccount may and may not do, asked of the API server's authorizer with
 *   `kubectl auth can-i --as` (the admin impersonates): the controller works on sandboxes, pools
 *   (writing them only by PATCH, their status only by PUT), agent Pods and the pools' agent token
 *   Secrets (created and patched, never read) in every namespace, and on its own Lease and Secrets in
 *   its own namespace only (the E2B API's keys and token secret, read and created), it asks the API
 *   server who a fast-path caller is and what that caller may do (TokenReview, SubjectAccessReview),
 *   and nothing else
 *   — no Secret of any other namespace read, no Events; the proxy lists
 *   and watches Sandboxes and Pods and reads the one E2B token Secret; the janitor only lists Pods,
 *   Sandboxes and SandboxPools; agents have no API access at all.
 * - Enough: after the cases before this one (alphabetical order) placed, deleted, recreated and
 *   reset sandboxes and scaled pools, no controller replica and no janitor logged a `forbidden`
 *   answer of the API server — a permission the code needs and the role lacks fails this case.
 * Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CONTROLLER_SELECTOR, JANITOR_SELECTOR, SYSTEM_NAMESPACE, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const PROXY_SELECTOR = "app.kubernetes.io/component=proxy";

const CONTROLLER = `system:serviceaccount:${SYSTEM_NAMESPACE}:fast-sandbox-controller`;
const JANITOR = `system:serviceaccount:${SYSTEM_NAMESPACE}:fast-sandbox-janitor`;
const PROXY = `system:serviceaccount:${SYSTEM_NAMESPACE}:fast-sandbox-proxy`;

/**
 * `kubectl auth can-i` as a ServiceAccount: true for yes, false for no. `resource` is TYPE or
 * TYPE/NAME; a subresource (status, finalizers, exec) is given separately, since kubectl reads
 * `pods/exec` as the Pod named exec.
 */
async function can(suite: KubernetesSuiteContext, user: string, verb: string, resource: string, namespace?: string, subresource?: string): Promise<boolean> {
  const scope = namespace ? ["-n", namespace] : ["--all-namespaces"];
  const result = await suite.kubectl("auth", "can-i", verb, resource, ...scope, ...(subresource ? [`--subresource=${subresource}`] : []), `--as=${user}`);
  assert.ok(result.code === 0 || result.code === 1, `kubectl auth can-i ${verb} ${resource} failed:\n${result.stderr}`);
  return result.code === 0;
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("RBAC: least privilege per component", () => {
    it("lets the controller do its work: sandboxes, pools and their status, agent Pods and token Secrets, its Lease, its own namespace's Secrets", async () => {
      // In every namespace (the pools' and sandboxes' namespaces are the users').
      for (const [verb, resource, namespace, subresource] of [
        ["get", "sandboxes.sandbox.fast.io", "default"],
        ["list", "sandboxes.sandbox.fast.io", undefined],
        ["watch", "sandboxes.sandbox.fast.io", undefined],
        ["create", "sandboxes.sandbox.fast.io", "default"],
        // Spec and metadata writes (resetRevision, the cleanup finalizer) are JSON patches.
        ["patch", "sandboxes.sandbox.fast.io", "default"],
        ["delete", "sandboxes.sandbox.fast.io", "default"],
        ["get", "sandboxpools.sandbox.fast.io", "default"],
        ["list", "sandboxpools.sandbox.fast.io", undefined],
        ["watch", "sandboxpools.sandbox.fast.io", undefined],
        ["create", "sandboxpools.sandbox.fast.io", "default"],
        ["patch", "sandboxpools.sandbox.fast.io", "default"],
        ["delete", "sandboxpools.sandbox.fast.io", "default"],
        // Status writes are PUTs of the status subresource.
        ["update", "sandboxes.sandbox.fast.io", "default", "status"],
        ["update", "sandboxpools.sandbox.fast.io", "default", "status"],
        // Agent Pods are owned by their pool with blockOwnerDeletion.
        ["update", "sandboxpools.sandbox.fast.io", "default", "finalizers"],
        ["create", "pods", "default"],
        ["delete", "pods", "default"],
        ["list", "pods", undefined],
        ["watch", "pods", undefined],
      ] as const) {
        const what = `${verb} ${resource}${subresource ? `/${subresource}` : ""} in ${namespace ?? "all namespaces"}`;
        assert.equal(await can(suite, CONTROLLER, verb, resource, namespace, subresource), true, `controller: ${what}`);
      }
      // Who a fast-path caller's token is and what that caller may do (system:auth-delegator).
      assert.equal(await can(suite, CONTROLLER, "create", "tokenreviews.authentication.k8s.io"), true);
      assert.equal(await can(suite, CONTROLLER, "create", "subjectaccessreviews.authorization.k8s.io"), true);
      assert.equal(await can(suite, CONTROLLER, "get", "leases.coordination.k8s.io/fast-sandbox-controller", SYSTEM_NAMESPACE), true);
      assert.equal(await can(suite, CONTROLLER, "update", "leases.coordination.k8s.io/fast-sandbox-controller", SYSTEM_NAMESPACE), true);
      assert.equal(await can(suite, CONTROLLER, "create", "leases.coordination.k8s.io", SYSTEM_NAMESPACE), true);
      // The E2B-compatible API's key Secrets (looked up by name) and token secret, in its own namespace only.
      assert.equal(await can(suite, CONTROLLER, "get", "secrets", SYSTEM_NAMESPACE), true);
      assert.equal(await can(suite, CONTROLLER, "get", "secrets/fast-sandbox-e2b-token-secret", SYSTEM_NAMESPACE), true);
      assert.equal(await can(suite, CONTROLLER, "create", "secrets", SYSTEM_NAMESPACE), true);
      // Each pool's agent token Secret, in the pool's namespace: created, or patched (after the
      // patch's own test of its pool label and owner), never read.
      assert.equal(await can(suite, CONTROLLER, "create", "secrets", "default"), true);
      assert.equal(await can(suite, CONTROLLER, "patch", "secrets", "default"), true);
    });

    it("denies the controller everything else", async () => {
      for (const [verb, resource, namespace, subresource] of [
        // Secrets: only its own namespace's are read, by name; none is listed, watched, replaced or
        // deleted. None of a pool's namespace is read: each pool's agent token Secret is written
        // blind, and a pool's imagePullSecret is not read.
        ["get", "secrets", "default"],
        ["get", "secrets/fast-sandbox-agent-token", "default"],
        ["get", "secrets", "kube-system"],
        ["get", "secrets", undefined],
        ["list", "secrets", undefined],
        ["watch", "secrets", "default"],
        ["delete", "secrets", "default"],
        ["update", "secrets", SYSTEM_NAMESPACE],
        ["delete", "secrets", SYSTEM_NAMESPACE],
        ["list", "secrets", SYSTEM_NAMESPACE],
        ["update", "secrets", "default"],
        ["delete", "nodes", undefined],
        ["list", "configmaps", SYSTEM_NAMESPACE],
        ["get", "configmaps", "default"],
        // No Events are written.
        ["create", "events", "default"],
        ["create", "events", SYSTEM_NAMESPACE],
        ["create", "events.events.k8s.io", "default"],
        // Agent Pods: listed and watched, never read one by one, edited or exec'd into.
        ["get", "pods", "default"],
        ["update", "pods", "default"],
        ["patch", "pods", "default"],
        ["create", "pods", "default", "exec"],
        ["create", "pods", "default", "eviction"],
        ["update", "pods", "default", "status"],
        // Sandboxes and pools: the verbs the store does not use.
        ["update", "sandboxes.sandbox.fast.io", "default"],
        ["update", "sandboxpools.sandbox.fast.io", "default"],
        ["deletecollection", "sandboxes.sandbox.fast.io", "default"],
        ["get", "sandboxes.sandbox.fast.io", "default", "status"],
        ["patch", "sandboxes.sandbox.fast.io", "default", "status"],
        ["patch", "sandboxpools.sandbox.fast.io", "default", "status"],
        ["delete", "sandboxes.sandbox.fast.io", "default", "status"],
        ["update", "sandboxes.sandbox.fast.io", "default", "finalizers"],
        ["create", "deployments.apps", SYSTEM_NAMESPACE],
        ["create", "serviceaccounts", "default"],
        ["update", "customresourcedefinitions.apiextensions.k8s.io", undefined],
        ["create", "rolebindings.rbac.authorization.k8s.io", "default"],
        // Leases: its own, in its own namespace.
        ["update", "leases.coordination.k8s.io/someone-else", SYSTEM_NAMESPACE],
        ["get", "leases.coordination.k8s.io/fast-sandbox-controller", "default"],
        ["create", "leases.coordination.k8s.io", "default"],
        ["list", "leases.coordination.k8s.io", SYSTEM_NAMESPACE],
        ["delete", "leases.coordination.k8s.io/fast-sandbox-controller", SYSTEM_NAMESPACE],
      ] as const) {
        const what = `${verb} ${resource}${subresource ? `/${subresource}` : ""} in ${namespace ?? "all namespaces"}`;
        assert.equal(await can(suite, CONTROLLER, verb, resource, namespace, subresource), false, `controller must not: ${what}`);
      }
    });

    it("lets the janitor list Pods, Sandboxes and SandboxPools, and nothing else", async () => {
      for (const [verb, resource] of [
        ["list", "pods"],
        ["list", "sandboxes.sandbox.fast.io"],
        // Which pools exist: a gone pool's checkpoint directory on the node is the janitor's to remove.
        ["list", "sandboxpools.sandbox.fast.io"],
      ]) {
        assert.equal(await can(suite, JANITOR, verb!, resource!), true, `janitor: ${verb} ${resource}`);
      }
      for (const [verb, resource, subresource] of [
        // Its inventory lists both in full at each pass: it neither reads one by name nor watches.
        ["get", "pods"],
        ["watch", "pods"],
        ["get", "sandboxes.sandbox.fast.io"],
        ["watch", "sandboxes.sandbox.fast.io"],
        ["create", "pods"],
        ["delete", "pods"],
        ["update", "sandboxes.sandbox.fast.io"],
        ["update", "sandboxes.sandbox.fast.io", "status"],
        ["delete", "sandboxes.sandbox.fast.io"],
        ["get", "sandboxpools.sandbox.fast.io"],
        ["watch", "sandboxpools.sandbox.fast.io"],
        ["update", "sandboxpools.sandbox.fast.io"],
        ["patch", "sandboxpools.sandbox.fast.io"],
        ["delete", "sandboxpools.sandbox.fast.io"],
        ["update", "sandboxpools.sandbox.fast.io", "status"],
        ["get", "secrets"],
        ["list", "configmaps"],
        ["create", "events"],
        ["get", "nodes"],
      ] as const) {
        assert.equal(await can(suite, JANITOR, verb, resource, undefined, subresource), false, `janitor must not: ${verb} ${resource} ${subresource ?? ""}`);
      }
    });

    it("lets the proxy read Sandboxes, agent Pods and the E2B token secret, and nothing else", async () => {
      assert.equal(await can(suite, PROXY, "list", "sandboxes.sandbox.fast.io"), true);
      assert.equal(await can(suite, PROXY, "watch", "sandboxes.sandbox.fast.io"), true);
      assert.equal(await can(suite, PROXY, "list", "pods"), true);
      assert.equal(await can(suite, PROXY, "watch", "pods"), true);
      assert.equal(await can(suite, PROXY, "get", "secrets/fast-sandbox-e2b-token-secret", SYSTEM_NAMESPACE), true);
      for (const [verb, resource, namespace] of [
        // Sandboxes and Pods only through informers (list, then watch), never one by name.
        ["get", "sandboxes.sandbox.fast.io", "default"],
        ["get", "pods", "default"],
        ["get", "secrets/fast-sandbox-agent-token", SYSTEM_NAMESPACE],
        ["get", "secrets/fast-sandbox-e2b-token-secret", "default"],
        ["list", "secrets", SYSTEM_NAMESPACE],
        ["create", "secrets", SYSTEM_NAMESPACE],
        ["update", "sandboxes.sandbox.fast.io", "default"],
        ["create", "pods", "default"],
      ] as const) {
        assert.equal(await can(suite, PROXY, verb, resource, namespace), false, `proxy must not: ${verb} ${resource} in ${namespace}`);
      }
    });

    it("gives the agents no Kubernetes API access", async () => {
      const agent = `system:serviceaccount:${SYSTEM_NAMESPACE}:fast-sandbox-agent`;
      for (const [verb, resource] of [
        ["get", "pods"],
        ["list", "sandboxes.sandbox.fast.io"],
        ["get", "secrets"],
      ]) {
        assert.equal(await can(suite, agent, verb!, resource!, SYSTEM_NAMESPACE), false, `agent must not: ${verb} ${resource}`);
      }
    });

    it("was enough: no controller, proxy or janitor replica was refused anything by the API server", async () => {
      for (const [component, selector] of [
        ["controller", CONTROLLER_SELECTOR],
        ["janitor", JANITOR_SELECTOR],
        ["proxy", PROXY_SELECTOR],
      ] as const) {
        const pods = await suite.pods(SYSTEM_NAMESPACE, selector, { includeDeleting: true });
        assert.ok(pods.length > 0, `no ${component} Pod`);
        for (const pod of pods) {
          const log = suite.podLog(SYSTEM_NAMESPACE, pod.metadata.name, pod.spec.containers[0]!.name);
          assert.ok(log.length > 0, `${pod.metadata.name} logged nothing`);
          // An authorization denial names the user and what it cannot do (`is forbidden: User
          // "system:serviceaccount:…" cannot create resource …`); other 403s (a namespace being
          // deleted) are not about permissions.
          const refused = log.split("\n").filter((line) => /forbidden: User \\*"system:serviceaccount:[^"\\]*\\*" cannot/.test(line));
          assert.deepEqual(refused, [], `${pod.metadata.name} was refused by the API server`);
        }
      }
    });
  });
}
