import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { describe, it } from "node:test";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { PermissionDeniedError, pb, sandboxSpecToMessage, sendBearerToken } from "@fast-sandbox/api";
import { answerToUnendedBody } from "../../../../test/support/unended-body.js";
import type { AccessDecision, AccessReview, KubernetesUser } from "./access-review.js";
import type { ApiServer } from "./api-server.js";
import { API_TOKEN, withApiServer as withApiServerOn } from "./api-server.fixture.js";
import type { ResourceAccess } from "./call-access.js";
import { sandboxSpec, type SandboxManagerFixture } from "./sandbox-manager.fixture.js";
import { CREATED_BY_ANNOTATION } from "./sandbox-manager.js";

const TOKEN = API_TOKEN;
const ALICE_TOKEN = "alice-kubernetes-token";
const UNREACHABLE = new Error("connect ECONNREFUSED 10.96.0.1:443");
const ALICE: KubernetesUser = { username: "system:serviceaccount:team-a:alice", groups: ["system:serviceaccounts"] };
const BOB_TOKEN = "bob-kubernetes-token";
const BOB: KubernetesUser = { username: "bob", groups: [] };

/** A stand-in for the API server's reviews: alice, allowed what `rules` lists (verb resource[/sub] namespace). */
class FakeReview implements AccessReview {
  readonly asked: ResourceAccess[] = [];
  rules = new Set(["list sandboxes team-a", "get sandboxes team-a", "create sandboxes team-a", "get sandboxes/log team-a", "create sandboxes default"]);
  fail: Error | undefined;

  async authenticate(token: string): Promise<KubernetesUser | undefined> {
    if (this.fail) throw this.fail;
    return token === ALICE_TOKEN ? ALICE : token === BOB_TOKEN ? BOB : undefined;
  }

  async authorize(user: KubernetesUser, access: ResourceAccess): Promise<AccessDecision> {
    if (this.fail) throw this.fail;
    this.asked.push(access);
    const resource = access.subresource ? `${access.resource}/${access.subresource}` : access.resource;
    return { allowed: (user === ALICE || user === BOB) && this.rules.has(`${access.verb} ${resource} ${access.namespace}`) };
  }
}

function withApiServer(review: AccessReview | undefined, test: (api: ApiServer, fixture: SandboxManagerFixture) => Promise<void>): Promise<void> {
  return withApiServerOn(review ? { review } : {}, test);
}

function clients(url: string, token: string): { sandboxes: Client<typeof pb.SandboxService>; pools: Client<typeof pb.PoolService> }[] {
  const interceptors = [sendBearerToken(token)];
  return [createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors }), createGrpcTransport({ baseUrl: url, interceptors })].map((transport) => ({
    sandboxes: createClient(pb.SandboxService, transport),
    pools: createClient(pb.PoolService, transport),
  }));
}

async function codeOf(call: Promise<unknown>): Promise<{ code: Code; message: string } | "ok"> {
  try {
    await call;
    return "ok";
  } catch (error) {
    assert.ok(error instanceof ConnectError, String(error));
    return { code: error.code, message: error.rawMessage };
  }
}

/** Reads a server stream to its end. */
async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream);
}

describe("requireApiCaller (the fast-path API's callers)", () => {
  it("lets a Kubernetes user make the calls their RBAC allows, in the namespace the call names, and refuses the rest naming what is missing", async () => {
    const review = new FakeReview();
    await withApiServer(review, async (api, fixture) => {
      for (const { sandboxes, pools } of clients(api.url, ALICE_TOKEN)) {
        assert.deepEqual((await sandboxes.listSandboxes({ namespace: "team-a" })).sandboxes, []);
        const denied = await codeOf(sandboxes.listSandboxes({ namespace: "team-b" }));
        assert.notEqual(denied, "ok");
        if (denied !== "ok") {
          assert.equal(denied.code, Code.PermissionDenied);
          assert.match(denied.message, /"system:serviceaccount:team-a:alice" may not list sandbox\.fast\.io sandboxes in namespace "team-b"/);
          assert.match(denied.message, /sandbox-user-cluster-role\.yaml/);
        }
        assert.equal(((await codeOf(sandboxes.listSandboxes({ namespace: "*" }))) as { code: Code }).code, Code.PermissionDenied);
        // Allowed, so the call itself answers: the sandbox does not exist.
        assert.equal(((await codeOf(sandboxes.getSandbox({ namespace: "team-a", name: "nope" }))) as { code: Code }).code, Code.NotFound);
        // A server stream's request is read for its namespace, then handed on whole.
        assert.equal(((await codeOf(drain(sandboxes.logs({ namespace: "team-a", name: "nope" })))) as { code: Code }).code, Code.NotFound);
        assert.equal(((await codeOf(drain(sandboxes.logs({ namespace: "team-b", name: "nope" })))) as { code: Code }).code, Code.PermissionDenied);
        assert.equal(
          ((await codeOf(drain(sandboxes.exec({ namespace: "team-a", name: "nope", command: ["id"] })))) as { code: Code }).code,
          Code.PermissionDenied,
        );
        assert.equal(((await codeOf(pools.getSandboxPool({ namespace: "team-a", name: "default" }))) as { code: Code }).code, Code.PermissionDenied);
        // Any caller may ask where the proxy is.
        assert.equal(await codeOf(sandboxes.getSandboxProxy({})), "ok");
        const spec = sandboxSpecToMessage(sandboxSpec());
        assert.equal(((await codeOf(sandboxes.createSandbox({ namespace: "team-b", name: "refused", spec }))) as { code: Code }).code, Code.PermissionDenied);
      }
      assert.equal(await fixture.store.get("Sandbox", { namespace: "team-b", name: "refused" }), undefined);
      assert.ok(
        review.asked.some((access) => access.namespace === "" && access.verb === "list"),
        "a list of every namespace is asked cluster-wide",
      );
    });
  });

  it("asks for every access a call needs: a restore also reads its checkpoint", async () => {
    const review = new FakeReview();
    await withApiServer(review, async (api) => {
      const { sandboxes } = clients(api.url, ALICE_TOKEN)[0]!;
      const answer = await codeOf(sandboxes.createSandbox({ namespace: "team-a", name: "copy", fromCheckpoint: "someone-elses" }));
      assert.ok(answer !== "ok" && answer.code === Code.PermissionDenied, JSON.stringify(answer));
      assert.match(answer.message, /may not get sandbox\.fast\.io sandboxcheckpoints "someone-elses" in namespace "team-a"/);
    });
  });

  it("makes a create's request id the caller's own (another user sending it gets no sandbox of the first, nor a new token to it), and records who created what", async () => {
    const review = new FakeReview();
    await withApiServer(review, async (api, fixture) => {
      fixture.addAgent("default-0", { capacity: 8 });
      const spec = sandboxSpecToMessage(sandboxSpec());
      const create = async (token: string) => {
        const { sandboxes } = clients(api.url, token)[0]!;
        const sandbox = await sandboxes.createSandbox({ namespace: "default", requestId: "retry-me", spec });
        return sandbox.metadata?.name ?? "";
      };
      const alices = await create(ALICE_TOKEN);
      const hash = (await fixture.stored(alices))?.status?.accessTokenHash;
      assert.ok(hash);
      assert.equal(await create(ALICE_TOKEN), alices, "alice's retry finds her create");
      const hashAfterRetry = (await fixture.stored(alices))?.status?.accessTokenHash;
      const bobs = await create(BOB_TOKEN);
      assert.notEqual(bobs, alices);
      assert.equal((await fixture.stored(alices))?.status?.accessTokenHash, hashAfterRetry, "bob's create left alice's token alone");
      const admins = await create(TOKEN);
      assert.notEqual(admins, alices, "the API token's id is its own too");
      // Who made each is recorded; the API token's holder is nobody in particular.
      assert.equal((await fixture.stored(alices))?.metadata.annotations?.[CREATED_BY_ANNOTATION], ALICE.username);
      assert.equal((await fixture.stored(bobs))?.metadata.annotations?.[CREATED_BY_ANNOTATION], BOB.username);
      assert.equal((await fixture.stored(admins))?.metadata.annotations?.[CREATED_BY_ANNOTATION], undefined);
    });
  });

  it("lets the API token make every call without asking the API server", async () => {
    const review = new FakeReview();
    review.fail = UNREACHABLE;
    await withApiServer(review, async (api) => {
      for (const { sandboxes, pools } of clients(api.url, TOKEN)) {
        assert.deepEqual((await sandboxes.listSandboxes({ namespace: "*" })).sandboxes, []);
        assert.equal(((await codeOf(pools.getSandboxPool({ namespace: "team-b", name: "nope" }))) as { code: Code }).code, Code.NotFound);
      }
      assert.deepEqual(review.asked, []);
    });
  });

  it("refuses a token the API server does not accept before reading the body, and says when it cannot ask", async () => {
    const review = new FakeReview();
    const bomb = gzipSync(Buffer.alloc(16 * 1024 * 1024));
    await withApiServer(review, async (api) => {
      for (const version of ["1.1", "2"] as const) {
        const answer = await answerToUnendedBody(
          api.url,
          version,
          "/fastsandbox.v1alpha1.SandboxService/CreateSandbox",
          { "content-type": "application/json", "content-encoding": "gzip", authorization: "Bearer someone-else" },
          bomb,
        );
        assert.equal(answer.status, 401, `HTTP/${version}`);
        assert.match(
          (JSON.parse(answer.body) as { message: string }).message,
          /neither the fast-path API's token nor a Kubernetes token the API server accepts/,
        );
      }
      review.fail = UNREACHABLE;
      for (const { sandboxes } of clients(api.url, ALICE_TOKEN)) {
        const answer = await codeOf(sandboxes.listSandboxes({ namespace: "team-a" }));
        assert.notEqual(answer, "ok");
        if (answer !== "ok") {
          assert.equal(answer.code, Code.Unavailable);
          assert.match(answer.message, /TokenReview failed \(connect ECONNREFUSED.*\); try again$/);
        }
      }
      // The controller's own missing permission is named, not a retry suggested.
      review.fail = new PermissionDeniedError('tokenreviews.authentication.k8s.io is forbidden: User "system:serviceaccount:fsb:controller" cannot create');
      const { sandboxes } = clients(api.url, ALICE_TOKEN)[0]!;
      const answer = await codeOf(sandboxes.listSandboxes({ namespace: "team-a" }));
      assert.ok(answer !== "ok" && answer.code === Code.Unavailable);
      assert.match(
        answer.message,
        /the controller may not create TokenReviews \(.*forbidden.*\); bind its ServiceAccount to ClusterRole system:auth-delegator/,
      );
    });
  });

  it("takes no Kubernetes token without a review (the embedded mode): the data directory's token only", async () => {
    await withApiServer(undefined, async (api) => {
      for (const { sandboxes } of clients(api.url, ALICE_TOKEN)) {
        const answer = await codeOf(sandboxes.listSandboxes({ namespace: "team-a" }));
        assert.notEqual(answer, "ok");
        if (answer !== "ok") {
          assert.equal(answer.code, Code.Unauthenticated);
          assert.match(answer.message, /data directory of the running 'fsb up'/);
        }
      }
    });
  });
});
