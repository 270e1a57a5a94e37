/**
 * Kubernetes users call the fast path with their own tokens, and get exactly what their RBAC gives
 * them (FSB_KUBERNETES_USERS, on by default; packages/controlplane/src/fastpath/api-caller-check.ts):
 * the controller asks the real API server who the token is (TokenReview) and whether that user may
 * do what the call does in the namespace it names (SubjectAccessReview).
 *
 * - alice, a ServiceAccount bound to config/rbac's ClusterRole fast-sandbox-user in her namespace,
 *   creates a sandbox there with her own token (recorded as its creator), runs a command in it,
 *   reads its logs and deletes it
 *   — through the SDK, and through `kubectl fs` with a kubeconfig holding her token (she may not read
 *   the API token's Secret: the CLI calls as her);
 * - she may not list another namespace's sandboxes, nor every namespace's;
 * - bob, bound to a Role that only reads sandboxes, sees hers but may not run a command in it,
 *   delete it or create one;
 * - a token the API server does not accept is refused as unauthenticated; the API token still
 *   makes every call.
 * Run by ../suite.test.ts on the suite's cluster, with the pool in pool.yaml.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { FastSandboxClient, NotFoundError, PermissionDeniedError, UnauthenticatedError } from "@fast-sandbox/sdk";
import { BASE_IMAGE, REPO_ROOT } from "../../../support/containerd.js";
import { controllerReplicas, deleteCaseNamespace, getSandbox, waitForReadyAgents } from "../../../support/kubernetes-cases.js";
import type { KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "rbac";
const KUBECTL_FS = path.join(REPO_ROOT, "packages/cli/bin/kubectl-fs");

/** A kubeconfig for the suite's cluster whose user is `token` (as `kubectl config set-credentials --token`). */
async function kubeconfigWithToken(suite: KubernetesSuiteContext, file: string, token: string): Promise<void> {
  const admin = JSON.parse(await suite.kubectlOk("config", "view", "--raw", "--minify", "-o", "json")) as {
    clusters: { name: string; cluster: Record<string, unknown> }[];
  };
  const cluster = admin.clusters[0]!;
  const config = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "fsb", cluster: cluster.cluster }],
    users: [{ name: "user", user: { token } }],
    contexts: [{ name: "user", context: { cluster: "fsb", user: "user" } }],
    "current-context": "user",
  };
  writeFileSync(file, JSON.stringify(config), { mode: 0o600 });
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("the fast path honours Kubernetes RBAC for users' own tokens", () => {
    let namespace = "";
    let other = "";
    let url = "";
    let aliceToken = "";
    let alice: FastSandboxClient | undefined;
    let bob: FastSandboxClient | undefined;
    let admin: FastSandboxClient | undefined;
    const work = mkdtempSync(path.join(os.tmpdir(), "fsb-rbac-case-"));

    before(async () => {
      namespace = await suite.createNamespace("rbac");
      other = await suite.createNamespace("rbac-other");
      await suite.kubectlOk("-n", namespace, "apply", "-f", path.join(HERE, "pool.yaml"));
      for (const account of ["alice", "bob"]) await suite.kubectlOk("-n", namespace, "create", "serviceaccount", account);
      await suite.kubectlOk(
        "-n",
        namespace,
        "create",
        "rolebinding",
        "alice-sandboxes",
        "--clusterrole=fast-sandbox-user",
        `--serviceaccount=${namespace}:alice`,
      );
      await suite.kubectlOk("-n", namespace, "create", "role", "sandbox-reader", "--verb=get,list", "--resource=sandboxes.sandbox.fast.io");
      await suite.kubectlOk("-n", namespace, "create", "rolebinding", "bob-reads", "--role=sandbox-reader", `--serviceaccount=${namespace}:bob`);
      aliceToken = (await suite.kubectlOk("-n", namespace, "create", "token", "alice", "--duration=1h")).trim();
      const bobToken = (await suite.kubectlOk("-n", namespace, "create", "token", "bob", "--duration=1h")).trim();
      const [replica] = (await controllerReplicas(suite)).filter((candidate) => candidate.ready && candidate.podIP);
      assert.ok(replica, "a ready controller replica");
      url = replica.url;
      alice = new FastSandboxClient({ url, token: aliceToken });
      bob = new FastSandboxClient({ url, token: bobToken });
      admin = new FastSandboxClient({ url, token: suite.apiToken });
      await waitForReadyAgents(suite, namespace, POOL, 1);
    });

    after(async () => {
      for (const client of [alice, bob, admin]) client?.close();
      rmSync(work, { recursive: true, force: true });
      for (const name of [namespace, other]) if (name) await deleteCaseNamespace(suite, name);
    });

    it("lets alice create a sandbox in her namespace with her own token, run a command in it and read its logs", async () => {
      const created = await alice!.sandboxes.create({
        namespace,
        pool: POOL,
        image: BASE_IMAGE,
        name: "alices",
        command: ["sh", "-c", "echo started; sleep 3600"],
      });
      assert.equal(created.status?.phase, "Running");
      // The Sandbox object records who made it.
      assert.equal(
        (await getSandbox(suite, namespace, "alices"))?.metadata.annotations?.["sandbox.fast.io/created-by"],
        `system:serviceaccount:${namespace}:alice`,
      );
      const ran = await alice!.sandboxes.exec("alices", ["sh", "-c", "echo from-$((6*7))"], { namespace });
      assert.deepEqual([ran.exitCode, ran.stdout], [0, "from-42\n"]);
      const logs = await suite.eventually("the sandbox's log to hold its first line", async () => {
        let text = "";
        for await (const chunk of alice!.sandboxes.logs("alices", { namespace })) text += Buffer.from(chunk).toString();
        return text.includes("started") ? text : undefined;
      });
      assert.match(logs, /started/);
      assert.deepEqual(
        (await alice!.sandboxes.list({ namespace })).map((sandbox) => sandbox.metadata.name),
        ["alices"],
      );
    });

    it("refuses alice another namespace and every namespace, naming her and what she lacks", async () => {
      await assert.rejects(alice!.sandboxes.list({ namespace: other }), (error: unknown) => {
        assert.ok(error instanceof PermissionDeniedError, String(error));
        assert.match(
          error.message,
          new RegExp(`"system:serviceaccount:${namespace}:alice" may not list sandbox\\.fast\\.io sandboxes in namespace "${other}"`),
        );
        return true;
      });
      await assert.rejects(alice!.sandboxes.list({ namespace: "*" }), PermissionDeniedError);
      await assert.rejects(alice!.pools.get(POOL, { namespace: other }), PermissionDeniedError);
      // Her own namespace's pool she may read (the ClusterRole's rule).
      assert.equal((await alice!.pools.get(POOL, { namespace })).metadata.name, POOL);
    });

    it("lets bob read her sandbox, and nothing more", async () => {
      assert.equal((await bob!.sandboxes.get("alices", { namespace })).metadata.name, "alices");
      await assert.rejects(bob!.sandboxes.get("nobody", { namespace }), NotFoundError);
      await assert.rejects(bob!.sandboxes.exec("alices", ["id"], { namespace }), (error: unknown) => {
        assert.ok(error instanceof PermissionDeniedError, String(error));
        assert.match(error.message, /may not create sandbox\.fast\.io sandboxes\/exec "alices"/);
        return true;
      });
      await assert.rejects(bob!.sandboxes.delete("alices", { namespace }), PermissionDeniedError);
      await assert.rejects(bob!.sandboxes.create({ namespace, pool: POOL, image: BASE_IMAGE, name: "bobs", command: ["sleep", "60"] }), PermissionDeniedError);
      assert.equal(await getSandbox(suite, namespace, "bobs"), undefined);
      assert.equal((await getSandbox(suite, namespace, "alices"))?.status?.phase, "Running");
    });

    it("refuses a token the API server does not accept; the API token makes every call", async () => {
      const stranger = new FastSandboxClient({ url, token: `${aliceToken.slice(0, -4)}AAAA` });
      try {
        await assert.rejects(stranger.sandboxes.list({ namespace }), (error: unknown) => {
          assert.ok(error instanceof UnauthenticatedError, String(error));
          assert.match(error.message, /neither the fast-path API's token nor a Kubernetes token the API server accepts/);
          return true;
        });
      } finally {
        stranger.close();
      }
      assert.ok((await admin!.sandboxes.list({ namespace: "*" })).some((sandbox) => sandbox.metadata.name === "alices"));
    });

    it("takes alice's token from a file, as a program in a Pod reads its ServiceAccount token (tokenFile)", async () => {
      const tokenFile = path.join(work, "alice-token");
      writeFileSync(tokenFile, `${aliceToken}\n`, { mode: 0o600 });
      const fromFile = new FastSandboxClient({ url, tokenFile });
      try {
        assert.ok((await fromFile.sandboxes.list({ namespace })).some((sandbox) => sandbox.metadata.name === "alices"));
        await assert.rejects(fromFile.sandboxes.list({ namespace: other }), PermissionDeniedError);
      } finally {
        fromFile.close();
      }
    });

    it("runs `kubectl fs` as alice with her kubeconfig (she may not read the API token's Secret), and refuses her elsewhere", async () => {
      const kubeconfig = path.join(work, "alice.kubeconfig");
      await kubeconfigWithToken(suite, kubeconfig, aliceToken);
      const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? "", HOME: work, FSB_DATA_DIR: path.join(work, "no-fsb-up") };
      const kubectlFs = async (command: string, ...args: string[]) => {
        try {
          const { stdout, stderr } = await promisify(execFile)(KUBECTL_FS, [command, "--kubeconfig", kubeconfig, "--url", url, ...args], {
            env,
            timeout: 120_000,
          });
          return { code: 0, stdout, stderr };
        } catch (error) {
          const failed = error as { code?: number; stdout?: string; stderr?: string };
          return { code: typeof failed.code === "number" ? failed.code : 1, stdout: failed.stdout ?? "", stderr: failed.stderr ?? "" };
        }
      };
      const listed = await kubectlFs("ls", "-n", namespace);
      assert.equal(listed.code, 0, listed.stderr);
      assert.match(listed.stdout, /alices/);
      const ran = await kubectlFs("exec", "-n", namespace, "alices", "--", "echo", "via-kubectl-fs");
      assert.equal(ran.code, 0, ran.stderr);
      assert.equal(ran.stdout, "via-kubectl-fs\n");
      const refused = await kubectlFs("ls", "-n", other);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /may not list sandbox\.fast\.io sandboxes in namespace/);
      const removed = await kubectlFs("rm", "-n", namespace, "alices");
      assert.equal(removed.code, 0, removed.stderr);
      assert.equal(await getSandbox(suite, namespace, "alices"), undefined);
    });
  });
}
