import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout } from "node:timers/promises";
import { ConflictError, FailedPreconditionError, NotFoundError, TimeoutError, UnavailableError, ValidationError } from "@fast-sandbox/api";
import { pino } from "pino";
import { PAUSED_CHECKPOINT_ANNOTATION } from "../fastpath/checkpoint-pauses.js";
import { REQUEST_ID_ANNOTATION } from "../fastpath/sandbox-manager.js";
import { FIXTURE_NOW } from "../fastpath/sandbox-manager.fixture.js";
import { hashAccessToken } from "../proxy/access-token.js";
import { IdempotencyMismatchError } from "./e2b-idempotency.js";
import { parseListQuery, parseNewSandbox } from "./e2b-requests.js";
import { METADATA_ANNOTATION, TEMPLATE_ANNOTATION } from "./e2b-sandbox-view.js";
import { DEFAULT_IMAGE, E2B_DOMAIN, E2bFixture, HOST } from "./e2b.fixture.js";
import { readEnvdVersion } from "./envd-version.js";
import { SigningSandboxes } from "./signing-sandboxes.js";

const seconds = (count: number) => new Date(FIXTURE_NOW.getTime() + count * 1000).toISOString();
const create = (body: Record<string, unknown>) => parseNewSandbox({ templateID: "base", timeout: 300, ...body });
const list = (query = "") => parseListQuery(new URLSearchParams(query));

describe("E2B sandboxes over Fast Sandbox's own", () => {
  let e2b: E2bFixture;

  beforeEach(async () => {
    e2b = await new E2bFixture().start();
  });

  afterEach(() => e2b.close());

  describe("create", () => {
    it("runs the template's pool image with no command of its own, E2B's envVars as its env, and its end at now + timeout", async () => {
      const created = await e2b.sandboxes.create(create({ envVars: { FOO: "bar" }, metadata: { user: "abc" } }));
      const [stored] = await e2b.stored();
      assert.ok(stored);
      assert.deepEqual(stored.spec, {
        image: DEFAULT_IMAGE,
        poolRef: "default",
        envs: [{ name: "FOO", value: "bar" }],
        expireTime: seconds(300),
      });
      assert.equal(stored.metadata.annotations?.[TEMPLATE_ANNOTATION], "base");
      assert.equal(stored.metadata.annotations?.[METADATA_ANNOTATION], '{"user":"abc"}');
      assert.deepEqual(e2b.agent.createRequests[0]?.command, [], "the image's own command");
      assert.equal(created.sandboxID, stored.status?.sandboxID);
      assert.match(created.sandboxID, /^[a-z0-9]{20}$/);
    });

    it("answers E2B's Sandbox once the daemon at the sandbox's own address answered, with the access token the proxy checks", async () => {
      const created = await e2b.sandboxes.create(create({}));
      // The agent too: on Kubernetes the daemon is asked through its relay.
      assert.deepEqual(e2b.envdWaits, [{ sandboxID: created.sandboxID, address: "10.88.0.1", agent: "default-0" }]);
      assert.deepEqual(created, {
        templateID: "base",
        sandboxID: created.sandboxID,
        alias: "base",
        clientID: "6532622b",
        envdVersion: readEnvdVersion(),
        envdAccessToken: created.envdAccessToken,
        trafficAccessToken: created.trafficAccessToken,
        domain: E2B_DOMAIN,
      });
      const stored = await e2b.storedById(created.sandboxID);
      assert.equal(stored?.status?.accessTokenHash, hashAccessToken(created.envdAccessToken));
      // A token of its own for the sandbox's ports (not the daemon's): what the proxy derives from the record.
      assert.match(created.trafficAccessToken, /^[A-Za-z0-9_-]{43}$/);
      assert.notEqual(created.trafficAccessToken, created.envdAccessToken);
      assert.equal(
        new SigningSandboxes(
          () => [],
          () => e2b.tokenSecret,
        ).trafficTokenOf(stored),
        created.trafficAccessToken,
      );
      assert.ok(!JSON.stringify(stored).includes(created.envdAccessToken), "the record keeps only the token's hash");
    });

    it("gives each sandbox its own token", async () => {
      const first = await e2b.sandboxes.create(create({}));
      const second = await e2b.sandboxes.create(create({}));
      assert.notEqual(first.envdAccessToken, second.envdAccessToken);
    });

    it("narrows egress to nothing for allow_internet_access: false", async () => {
      await e2b.sandboxes.create(create({ allow_internet_access: false }));
      const [stored] = await e2b.stored();
      assert.deepEqual(stored?.spec.egress, { policy: "denyAll" });
      const network = e2b.agent.createRequests[0]?.network;
      assert.deepEqual(network?.mode === "Isolated" ? network.egress : network, { policy: "denyAll" });
    });

    it("maps a template to the pool of that name, and base to the default pool unless a pool is called base", async () => {
      await e2b.addPool("python");
      const python = await e2b.sandboxes.create(create({ templateID: "python" }));
      assert.equal((await e2b.storedById(python.sandboxID))?.spec.image, "python-image");
      assert.equal(python.templateID, "python");
      await e2b.addPool("base");
      const base = await e2b.sandboxes.create(create({ templateID: "base" }));
      assert.equal((await e2b.storedById(base.sandboxID))?.spec.poolRef, "base");
    });

    it("refuses an unknown template with 'not found', naming the templates there are", async () => {
      await e2b.addPool("python");
      await assert.rejects(
        e2b.sandboxes.create(create({ templateID: "code-interpreter-v1" })),
        (error: unknown) =>
          error instanceof NotFoundError &&
          /template "code-interpreter-v1" not found: a template is a pool of namespace default \(base means pool default\); templates here: default, python/.test(
            error.message,
          ),
      );
      assert.deepEqual(await e2b.stored(), []);
    });

    it("refuses a template whose pool has a Shared network (no address of its own for the daemon), creating nothing", async () => {
      await e2b.addPool("shared", { network: { mode: "Shared" } });
      await assert.rejects(
        e2b.sandboxes.create(create({ templateID: "shared" })),
        (error: unknown) => error instanceof FailedPreconditionError && /network mode is Shared.*network.mode Isolated/.test(error.message),
      );
      assert.deepEqual(await e2b.stored(), []);
      assert.deepEqual(e2b.fixture.client("shared-0").calls, []);
    });

    it("deletes the sandbox when its daemon does not answer, and says so: no half-created sandbox is left", async () => {
      e2b.envdFailure = new TimeoutError("the in-sandbox daemon did not answer within 20s");
      await assert.rejects(e2b.sandboxes.create(create({})), (error: unknown) => {
        assert.ok(error instanceof TimeoutError);
        assert.equal(error.code, "deadline_exceeded");
        assert.match(error.message, /did not answer within 20s; the sandbox was deleted, nothing of it is left: retry the create/);
        return true;
      });
      assert.deepEqual(await e2b.stored(), []);
      assert.deepEqual(
        e2b.agent.calls.map((call) => call.split(" ")[0]),
        ["create", "delete"],
      );
      assert.match(e2b.agent.calls[1] ?? "", / 0$/, "killed without a grace period");
      assert.equal(e2b.fixture.allocated(), 0, "its slot is free again");
    });

    it("stops waiting for the daemon of a sandbox killed meanwhile, saying so (not after the wait's deadline, not 'retry')", async () => {
      e2b.envdGate = new Promise<void>(() => {}); // a daemon that never answers
      const creating = e2b.sandboxes.create(create({}));
      while (e2b.envdWaits.length === 0) await setTimeout(5);
      const [waited] = e2b.envdWaits;
      await e2b.sandboxes.kill(waited?.sandboxID ?? "");
      await assert.rejects(creating, (error: unknown) => {
        assert.ok(error instanceof ConflictError, String(error));
        assert.equal(error.message, `sandbox ${waited?.sandboxID ?? ""} was deleted while the call waited for its in-sandbox daemon`);
        return true;
      });
      assert.deepEqual(await e2b.stored(), []);
      assert.equal(e2b.fixture.allocated(), 0);
    });

    it("deletes the sandbox when the client goes away during the wait", async () => {
      const controller = new AbortController();
      controller.abort(new Error("the client closed the connection"));
      await assert.rejects(
        e2b.sandboxes.create(create({}), controller.signal),
        (error: unknown) => error instanceof UnavailableError && /client went away/.test(error.message),
      );
      assert.deepEqual(await e2b.stored(), []);
    });
  });

  describe("create with an Idempotency-Key", () => {
    /**
     * Until the create's own status write (Running) has landed: a repeat that finds the record still
     * Bound polls it on the fixture's clock, which stands still.
     */
    const landed = (created: { sandboxID: string }) => e2b.sandboxes.get(created.sandboxID);

    /** A gate the daemon check waits for, and its opener. */
    function holdDaemon(): () => void {
      let open = () => {};
      e2b.envdGate = new Promise<void>((resolve) => (open = resolve));
      return () => {
        e2b.envdGate = undefined;
        open();
      };
    }

    it("answers a repeat after the first create answered with the same sandbox, id and tokens alike, creating it once", async () => {
      const first = await e2b.sandboxes.create(create({ metadata: { user: "abc" } }), undefined, "key-1");
      await landed(first);
      const again = await e2b.sandboxes.create(create({ metadata: { user: "abc" } }), undefined, "key-1");
      assert.deepEqual(again, first);
      assert.equal((await e2b.stored()).length, 1);
      assert.equal(e2b.agent.createRequests.length, 1);
      assert.equal(e2b.fixture.allocated(), 1);
      const stored = await e2b.storedById(first.sandboxID);
      assert.equal(stored?.metadata.annotations?.[REQUEST_ID_ANNOTATION], "e2b:key-1");
      // The repeat waited for the daemon too: it answers once the sandbox can be used.
      assert.deepEqual(
        e2b.envdWaits.map((wait) => wait.sandboxID),
        [first.sandboxID, first.sandboxID],
      );
    });

    it("creates another sandbox for another key, and for a create without one", async () => {
      const first = await e2b.sandboxes.create(create({}), undefined, "key-a");
      const other = await e2b.sandboxes.create(create({}), undefined, "key-b");
      const unkeyed = await e2b.sandboxes.create(create({}));
      assert.equal(new Set([first.sandboxID, other.sandboxID, unkeyed.sandboxID]).size, 3);
      assert.notEqual(first.envdAccessToken, other.envdAccessToken);
      assert.equal((await e2b.stored()).length, 3);
    });

    it("never answers with a sandbox of the fast path whose request id is the key", async () => {
      const fastPath = await e2b.fixture.manager.create({ spec: { image: "busybox", poolRef: "default" }, requestId: "same-id" });
      const created = await e2b.sandboxes.create(create({}), undefined, "same-id");
      assert.notEqual(created.sandboxID, fastPath.status?.sandboxID);
      assert.equal((await e2b.stored()).length, 2);
    });

    it("shares a create still waiting for its daemon with its repeats: one sandbox, the same answer for all", async () => {
      const open = holdDaemon();
      const calls = [1, 2, 3].map(() => e2b.sandboxes.create(create({}), new AbortController().signal, "key-concurrent"));
      await setTimeout(20);
      open();
      const [first, ...repeats] = await Promise.all(calls);
      assert.ok(first);
      for (const repeat of repeats) assert.deepEqual(repeat, first);
      assert.equal(e2b.agent.createRequests.length, 1);
      assert.equal((await e2b.stored()).length, 1);
    });

    it("keeps the sandbox while a repeat waits for it when the first caller goes away, and deletes it once every caller has", async () => {
      const open = holdDaemon();
      const firstClient = new AbortController();
      const first = e2b.sandboxes.create(create({}), firstClient.signal, "key-gone");
      const repeatClient = new AbortController();
      const repeat = e2b.sandboxes.create(create({}), repeatClient.signal, "key-gone");
      await setTimeout(20);
      firstClient.abort(new Error("the client closed the connection"));
      await setTimeout(20);
      open();
      const answer = await repeat;
      assert.deepEqual(await first, answer, "the create ran on for the repeat");
      assert.equal((await e2b.stored()).length, 1);

      const reopen = holdDaemon();
      const clients = [new AbortController(), new AbortController()];
      const abandoned = clients.map((client) => e2b.sandboxes.create(create({}), client.signal, "key-abandoned"));
      await setTimeout(20);
      for (const client of clients) client.abort(new Error("the client closed the connection"));
      for (const call of abandoned) await assert.rejects(call, /client went away/);
      reopen();
      assert.deepEqual(
        (await e2b.stored()).map((sandbox) => sandbox.status?.sandboxID),
        [answer.sandboxID],
        "the abandoned create's sandbox was deleted",
      );
      // Its key creates anew.
      const anew = await e2b.sandboxes.create(create({}), undefined, "key-abandoned");
      assert.notEqual(anew.sandboxID, answer.sandboxID);
      assert.equal((await e2b.stored()).length, 2);
    });

    it("creates anew for a key whose first create failed (its sandbox deleted)", async () => {
      e2b.envdFailure = new TimeoutError("the in-sandbox daemon did not answer within 20s");
      await assert.rejects(e2b.sandboxes.create(create({}), undefined, "key-failed"), TimeoutError);
      assert.deepEqual(await e2b.stored(), []);
      e2b.envdFailure = undefined;
      const created = await e2b.sandboxes.create(create({}), undefined, "key-failed");
      assert.equal((await landed(created)).state, "running");
      assert.equal((await e2b.stored()).length, 1);
      assert.equal(e2b.agent.createRequests.length, 2);
    });

    it("does not delete the earlier create's sandbox when a repeat's wait for its daemon fails", async () => {
      const first = await e2b.sandboxes.create(create({}), undefined, "key-kept");
      await landed(first);
      e2b.envdFailure = new TimeoutError("the in-sandbox daemon did not answer within 20s");
      await assert.rejects(e2b.sandboxes.create(create({}), undefined, "key-kept"), TimeoutError);
      assert.equal((await e2b.storedById(first.sandboxID))?.status?.phase, "Running");
      assert.ok(!e2b.agent.calls.some((call) => call.startsWith("delete")));
    });

    for (const [what, body] of [
      ["another template", { templateID: "python" }],
      ["another timeout", { timeout: 60 }],
      ["other metadata", { metadata: { user: "xyz" } }],
      ["other envs", { envVars: { A: "2" } }],
      ["internet access refused", { allow_internet_access: false }],
    ] as const) {
      it(`refuses a repeat with ${what} (409 idempotency_request_mismatch), leaving the sandbox as it is`, async () => {
        if (what === "another template") await e2b.addPool("python");
        const first = await e2b.sandboxes.create(create({ metadata: { user: "abc" }, envVars: { A: "1" } }), undefined, "key-mismatch");
        await landed(first);
        const stored = await e2b.storedById(first.sandboxID);
        await assert.rejects(
          e2b.sandboxes.create(create({ metadata: { user: "abc" }, envVars: { A: "1" }, ...body }), undefined, "key-mismatch"),
          (error: unknown) => {
            assert.ok(error instanceof IdempotencyMismatchError, String(error));
            assert.ok(error instanceof ConflictError);
            assert.equal(error.e2bErrorCode, "idempotency_request_mismatch");
            assert.match(
              error.message,
              new RegExp(`^Idempotency-Key was used before for a different create request \\(that request made sandbox ${first.sandboxID}\\)`),
            );
            return true;
          },
        );
        assert.deepEqual(await e2b.storedById(first.sandboxID), stored, "the sandbox is left as it was");
        assert.equal((await e2b.stored()).length, 1);
      });
    }

    it("refuses a repeat with another request while the first create runs, which goes on", async () => {
      const open = holdDaemon();
      const first = e2b.sandboxes.create(create({ timeout: 300 }), undefined, "key-running");
      await setTimeout(20);
      await assert.rejects(e2b.sandboxes.create(create({ timeout: 60 }), undefined, "key-running"), IdempotencyMismatchError);
      open();
      assert.equal((await e2b.storedById((await first).sandboxID))?.status?.phase, "Running");
    });

    it("takes metadata and envs in any order as the same request", async () => {
      const first = await e2b.sandboxes.create(create({ metadata: { a: "1", b: "2" }, envVars: { X: "1", Y: "2" } }), undefined, "key-order");
      await landed(first);
      const again = await e2b.sandboxes.create(create({ metadata: { b: "2", a: "1" }, envVars: { Y: "2", X: "1" } }), undefined, "key-order");
      assert.equal(again.sandboxID, first.sandboxID);
    });

    it("refuses a repeat whose sandbox no longer runs, naming it, rather than handing it out", async () => {
      const first = await e2b.sandboxes.create(create({}), undefined, "key-ended");
      await landed(first);
      const stored = await e2b.storedById(first.sandboxID);
      assert.ok(stored?.status);
      await e2b.fixture.store.updateStatus("Sandbox", { ...stored, status: { ...stored.status, phase: "Failed" } });
      await assert.rejects(
        e2b.sandboxes.create(create({}), undefined, "key-ended"),
        (error: unknown) => error instanceof ConflictError && error.message.includes(`made sandbox ${first.sandboxID}, which no longer runs (Failed)`),
      );
    });

    it("refuses a repeat whose sandbox is paused now, saying that connect resumes it", async () => {
      await e2b.addPool("gvisor", { runtimeType: "gvisor" });
      const first = await e2b.sandboxes.create(create({ templateID: "gvisor" }), undefined, "key-paused");
      await landed(first);
      await e2b.sandboxes.pause(first.sandboxID);
      await assert.rejects(
        e2b.sandboxes.create(create({ templateID: "gvisor" }), undefined, "key-paused"),
        (error: unknown) =>
          error instanceof ConflictError && error.message.includes(`made sandbox ${first.sandboxID}, which is paused now; connect resumes it`),
      );
      assert.equal((await e2b.sandboxes.get(first.sandboxID)).state, "paused");
    });

    it("creates anew once the key's sandbox was killed", async () => {
      const first = await e2b.sandboxes.create(create({}), undefined, "key-killed");
      await e2b.sandboxes.kill(first.sandboxID);
      const again = await e2b.sandboxes.create(create({}), undefined, "key-killed");
      assert.notEqual(again.sandboxID, first.sandboxID);
    });
  });

  describe("list", () => {
    it("lists the E2B API's running sandboxes only, filtered by metadata, state and template, with the running count", async () => {
      const a = await e2b.sandboxes.create(create({ metadata: { user: "abc", app: "prod" } }));
      const b = await e2b.sandboxes.create(create({ metadata: { user: "abc" } }));
      await e2b.sandboxes.create(create({ metadata: { user: "xyz" } }));
      await e2b.fixture.manager.create({ spec: { image: "busybox", poolRef: "default" } });
      const ids = async (query: string) => (await e2b.sandboxes.list(list(query))).page.items.map((item) => item.sandboxID).sort();
      assert.deepEqual(await ids("metadata=user%3Dabc"), [a.sandboxID, b.sandboxID].sort());
      assert.deepEqual(await ids("metadata=user%3Dabc%26app%3Dprod"), [a.sandboxID]);
      assert.deepEqual(await ids("state=paused"), []);
      assert.equal((await ids("state=running,paused")).length, 3);
      assert.deepEqual(await ids("template=python"), []);
      assert.equal((await ids("template=base")).length, 3);
      assert.equal((await e2b.sandboxes.list(list())).totalRunning, 3, "the sandbox of the fast path is not E2B's");
      // As E2B's X-Total-Running: the running ones of every filter, before the page; none without running in the states.
      assert.equal((await e2b.sandboxes.list(list("metadata=user%3Dabc&limit=1"))).totalRunning, 2);
      assert.equal((await e2b.sandboxes.list(list("template=python"))).totalRunning, 0);
      assert.equal((await e2b.sandboxes.list(list("state=paused"))).totalRunning, undefined);
    });

    it("pages by limit with a cursor, newest first", async () => {
      for (let i = 0; i < 5; i++) await e2b.sandboxes.create(create({}));
      const seen: string[] = [];
      let nextToken: string | undefined;
      do {
        const { page } = await e2b.sandboxes.list(list(`limit=2${nextToken ? `&nextToken=${nextToken}` : ""}`));
        assert.ok(page.items.length <= 2);
        seen.push(...page.items.map((item) => item.sandboxID));
        nextToken = page.nextToken;
      } while (nextToken);
      assert.equal(new Set(seen).size, 5);
      const started = await Promise.all(seen.map(async (id) => Date.parse((await e2b.storedById(id))?.metadata.creationTimestamp ?? "")));
      assert.deepEqual(
        started,
        [...started].sort((x, y) => y - x),
        "newest first",
      );
    });

    it("leaves out a sandbox being deleted", async () => {
      const created = await e2b.sandboxes.create(create({}));
      const stored = await e2b.storedById(created.sandboxID);
      assert.ok(stored);
      await e2b.fixture.store.delete("Sandbox", { namespace: "default", name: stored.metadata.name });
      assert.deepEqual((await e2b.sandboxes.list(list())).page.items, []);
    });
  });

  describe("get, kill, timeout, connect", () => {
    it("get: E2B's SandboxDetail, with the pool's resources and the access token", async () => {
      await e2b.addPool("small", { sandboxResources: { cpu: "2", memory: "512Mi" } });
      const created = await e2b.sandboxes.create(create({ templateID: "small", metadata: { k: "v" } }));
      const detail = await e2b.sandboxes.get(created.sandboxID);
      const stored = await e2b.storedById(created.sandboxID);
      assert.deepEqual(detail, {
        templateID: "small",
        alias: "small",
        sandboxID: created.sandboxID,
        clientID: "6532622b",
        startedAt: stored?.status?.startTime,
        endAt: seconds(300),
        cpuCount: 2,
        memoryMB: 512,
        diskSizeMB: HOST.diskSizeMB,
        state: "running",
        metadata: { k: "v" },
        envdVersion: readEnvdVersion(),
        envdAccessToken: created.envdAccessToken,
        allowInternetAccess: null,
        domain: E2B_DOMAIN,
        lifecycle: { onTimeout: "kill", autoResume: false },
      });
      // What the create said of internet access, when it said it (E2B's detail: null when not said).
      const closed = await e2b.sandboxes.create(create({ templateID: "small", allow_internet_access: false }));
      assert.equal((await e2b.sandboxes.get(closed.sandboxID)).allowInternetAccess, false);
      const open = await e2b.sandboxes.create(create({ templateID: "small", allow_internet_access: true }));
      assert.equal((await e2b.sandboxes.get(open.sandboxID)).allowInternetAccess, true);
    });

    it("an unknown id, and a sandbox not of the E2B API, are not found for every operation", async () => {
      const own = await e2b.fixture.manager.create({ spec: { image: "busybox", poolRef: "default" } });
      for (const id of ["unknownunknownunknow", own.status?.sandboxID ?? ""]) {
        const notFound = (error: unknown) => error instanceof NotFoundError && new RegExp(`sandbox ${id} not found`).test(error.message);
        await assert.rejects(e2b.sandboxes.get(id), notFound);
        await assert.rejects(e2b.sandboxes.kill(id), notFound);
        await assert.rejects(e2b.sandboxes.setTimeout(id, 10), notFound);
        await assert.rejects(e2b.sandboxes.connect(id, 10), notFound);
      }
      assert.ok(await e2b.fixture.stored(own.metadata.name), "the E2B API did not touch it");
    });

    it("kill: deletes the sandbox at once; a second kill finds nothing", async () => {
      const created = await e2b.sandboxes.create(create({}));
      await e2b.sandboxes.kill(created.sandboxID);
      assert.deepEqual(await e2b.stored(), []);
      assert.ok(
        e2b.agent.calls.some((call) => call.endsWith(" 0") && call.startsWith("delete")),
        "no grace period",
      );
      await assert.rejects(e2b.sandboxes.kill(created.sandboxID), NotFoundError);
      await assert.rejects(e2b.sandboxes.get(created.sandboxID), NotFoundError);
    });

    for (const phase of ["Expired", "Failed", "Lost"] as const) {
      it(`kill: a sandbox that ended ${phase} is not found, as on E2B (kill() answers false), and its record is removed`, async () => {
        const created = await e2b.sandboxes.create(create({}));
        await e2b.sandboxes.get(created.sandboxID); // the create's own status write has landed
        const stored = await e2b.storedById(created.sandboxID);
        assert.ok(stored?.status);
        await e2b.fixture.store.updateStatus("Sandbox", { ...stored, status: { ...stored.status, phase } });
        await assert.rejects(
          e2b.sandboxes.kill(created.sandboxID),
          (error: unknown) => error instanceof NotFoundError && error.message.includes(`it no longer ran (${phase}); what was left of it is removed now`),
        );
        assert.deepEqual(await e2b.stored(), [], "the record went all the same");
        await assert.rejects(e2b.sandboxes.kill(created.sandboxID), /not found: it was killed/);
      });
    }

    it("kill: a sandbox being deleted is not found, and its deletion is carried out", async () => {
      const created = await e2b.sandboxes.create(create({}));
      await e2b.sandboxes.get(created.sandboxID);
      const stored = await e2b.storedById(created.sandboxID);
      assert.ok(stored);
      // A finalizer of someone else's holds the record in deletion.
      await e2b.fixture.store.update("Sandbox", {
        ...stored,
        metadata: { ...stored.metadata, finalizers: [...(stored.metadata.finalizers ?? []), "test/hold"] },
      });
      await e2b.fixture.store.delete("Sandbox", { namespace: stored.metadata.namespace ?? "default", name: stored.metadata.name });
      assert.ok((await e2b.storedById(created.sandboxID))?.metadata.deletionTimestamp, "in deletion");
      const deletes = e2b.agent.calls.filter((call) => call.startsWith("delete")).length;
      await assert.rejects(
        e2b.sandboxes.kill(created.sandboxID),
        (error: unknown) => error instanceof NotFoundError && error.message.includes("it no longer ran (being deleted)"),
      );
      assert.ok(e2b.agent.calls.filter((call) => call.startsWith("delete")).length > deletes, "its instance deleted by the kill");
    });

    it("timeout: the end becomes now + timeout, later or sooner", async () => {
      const created = await e2b.sandboxes.create(create({ timeout: 300 }));
      await e2b.sandboxes.setTimeout(created.sandboxID, 1000);
      assert.equal((await e2b.storedById(created.sandboxID))?.spec.expireTime, seconds(1000));
      e2b.fixture.clock.advance(100_000);
      await e2b.sandboxes.setTimeout(created.sandboxID, 10);
      assert.equal((await e2b.storedById(created.sandboxID))?.spec.expireTime, seconds(110), "shortened, from the current time");
      assert.equal((await e2b.sandboxes.get(created.sandboxID)).endAt, seconds(110));
    });

    it("connect: the end moves only later, and the answer carries the same token as the create's", async () => {
      const created = await e2b.sandboxes.create(create({ timeout: 600 }));
      const connected = await e2b.sandboxes.connect(created.sandboxID, 60);
      assert.deepEqual(connected, { sandbox: created, resumed: false });
      assert.equal((await e2b.storedById(created.sandboxID))?.spec.expireTime, seconds(600), "not shortened");
      await e2b.sandboxes.connect(created.sandboxID, 3600);
      assert.equal((await e2b.storedById(created.sandboxID))?.spec.expireTime, seconds(3600), "extended");
    });

    it("connect: refuses to hand out a token that 'fsb token' replaced, before its end moves, and get leaves the token out", async () => {
      const created = await e2b.sandboxes.create(create({}));
      const stored = await e2b.storedById(created.sandboxID);
      await e2b.fixture.manager.rotateAccessToken("default", stored?.metadata.name ?? "");
      await assert.rejects(
        e2b.sandboxes.connect(created.sandboxID, 3600),
        (error: unknown) => error instanceof FailedPreconditionError && /was replaced \('fsb token'\)/.test(error.message),
      );
      assert.equal((await e2b.storedById(created.sandboxID))?.spec.expireTime, seconds(300), "a refused connect does not extend the sandbox");
      assert.equal((await e2b.sandboxes.get(created.sandboxID)).envdAccessToken, undefined);
    });
  });

  describe("pause, connect of a paused sandbox, resume and fork (gVisor templates)", () => {
    beforeEach(async () => {
      await e2b.addPool("gvisor", { runtimeType: "gvisor" });
    });
    const gvisor = (body: Record<string, unknown> = {}) => e2b.sandboxes.create(create({ templateID: "gvisor", ...body }));

    it("pause: the sandbox is paused — its state paused, its end the pause time, no instance running — and still listed and got", async () => {
      const created = await gvisor({ metadata: { app: "x" } });
      const agent = e2b.checkpointingAgent("gvisor");
      e2b.fixture.clock.advance(5_000);
      await e2b.sandboxes.pause(created.sandboxID);
      assert.deepEqual(
        agent.checkpointCalls.map((call) => call.leaveStopped),
        [true],
      );
      assert.equal(agent.sandboxes.size, 0, "nothing of it runs");
      assert.equal(e2b.fixture.allocated("gvisor"), 0, "its slot is free");
      const detail = await e2b.sandboxes.get(created.sandboxID);
      assert.equal(detail.state, "paused");
      assert.equal(detail.endAt, seconds(5), "E2B shows a paused sandbox's end as its pause");
      assert.equal(detail.envdAccessToken, created.envdAccessToken);
      const ids = async (query: string) => (await e2b.sandboxes.list(list(query))).page.items.map((item) => item.sandboxID);
      assert.deepEqual(await ids("state=paused"), [created.sandboxID]);
      assert.deepEqual(await ids("state=running"), []);
      assert.deepEqual(await ids(""), [created.sandboxID], "every state when none is asked for");
      assert.equal((await e2b.sandboxes.list(list())).totalRunning, 0);
      await assert.rejects(
        e2b.sandboxes.setTimeout(created.sandboxID, 60),
        (error: unknown) => error instanceof NotFoundError && /is paused, not running/.test(error.message),
      );
      await assert.rejects(
        e2b.sandboxes.pause(created.sandboxID),
        (error: unknown) => error instanceof ConflictError && new RegExp(`sandbox ${created.sandboxID} is already paused`).test(error.message),
      );
    });

    it("pause: refuses a sandbox of a runc template, saying it needs a template whose pool runs gVisor", async () => {
      const created = await e2b.sandboxes.create(create({}));
      await assert.rejects(e2b.sandboxes.pause(created.sandboxID), (error: unknown) => {
        assert.ok(error instanceof FailedPreconditionError);
        assert.match(
          error.message,
          /cannot be paused: its template "base" is pool default\/default, whose runtimeType is container, .* they work for sandboxes of a template whose pool has runtimeType gvisor/,
        );
        return true;
      });
      assert.equal((await e2b.sandboxes.get(created.sandboxID)).state, "running");
    });

    it("connect: resumes a paused sandbox under the same id and token, ending timeout from now, once its daemon answers at its new address", async () => {
      const created = await gvisor({ timeout: 60 });
      await e2b.sandboxes.pause(created.sandboxID);
      e2b.fixture.clock.advance(3_600_000);
      const { sandbox, resumed } = await e2b.sandboxes.connect(created.sandboxID, 120);
      assert.equal(resumed, true);
      assert.deepEqual(sandbox, created, "the same sandbox id and access token");
      const stored = await e2b.storedById(created.sandboxID);
      assert.equal(stored?.status?.phase, "Running");
      assert.equal(stored?.spec.expireTime, seconds(3_600 + 120));
      assert.equal(stored?.metadata.annotations?.[PAUSED_CHECKPOINT_ANNOTATION], undefined);
      assert.deepEqual(e2b.envdWaits.at(-1), { sandboxID: created.sandboxID, address: stored?.status?.sandboxIP, agent: stored?.status?.assignedPod });
      assert.equal(e2b.node.byId.size, 0, "its checkpoint is gone");
      const detail = await e2b.sandboxes.get(created.sandboxID);
      assert.equal(detail.state, "running");
      // E2B starts a resumed sandbox anew: its start is the resume, in get and list alike.
      assert.equal(detail.startedAt, seconds(3_600));
      assert.equal((await e2b.sandboxes.list(list())).page.items.find((item) => item.sandboxID === created.sandboxID)?.startedAt, seconds(3_600));
      const again = await e2b.sandboxes.connect(created.sandboxID, 60);
      assert.equal(again.resumed, false);
    });

    it("connect: a timeout of 0 resumes no paused sandbox (it would be reaped at once, its checkpoint gone): 400, it stays paused; a running one takes 0", async () => {
      const created = await gvisor({ timeout: 60 });
      await e2b.sandboxes.pause(created.sandboxID);
      const zero = (error: unknown) =>
        error instanceof ValidationError &&
        error.field === "timeout" &&
        new RegExp(`^timeout: must be a whole number of seconds from 1 to 86400 to resume paused sandbox ${created.sandboxID}: .*got 0$`).test(error.message);
      await assert.rejects(e2b.sandboxes.connect(created.sandboxID, 0), zero);
      await assert.rejects(e2b.sandboxes.resume(created.sandboxID, 0), zero);
      assert.equal((await e2b.sandboxes.get(created.sandboxID)).state, "paused");
      assert.equal(e2b.node.byId.size, 1, "its checkpoint is kept");
      assert.equal(e2b.checkpointingAgent("gvisor").createRequests.filter((request) => request.fromCheckpoint).length, 0, "nothing restored");
      assert.equal((await e2b.sandboxes.connect(created.sandboxID, 1)).resumed, true);
      const end = (await e2b.storedById(created.sandboxID))?.spec.expireTime;
      assert.deepEqual(await e2b.sandboxes.connect(created.sandboxID, 0), { sandbox: created, resumed: false });
      assert.equal((await e2b.storedById(created.sandboxID))?.spec.expireTime, end, "0 does not shorten a running sandbox's end");
    });

    it("connect: of two concurrent connects to a paused sandbox one resumes it (201), and the later of their ends holds", async () => {
      const created = await gvisor({ timeout: 60 });
      await e2b.sandboxes.pause(created.sandboxID);
      const [short, long] = await Promise.all([e2b.sandboxes.connect(created.sandboxID, 60), e2b.sandboxes.connect(created.sandboxID, 600)]);
      assert.deepEqual([short.resumed, long.resumed].sort(), [false, true], "resumed once");
      assert.deepEqual(long.sandbox, created);
      assert.equal(e2b.checkpointingAgent("gvisor").createRequests.filter((request) => request.fromCheckpoint).length, 1, "restored once");
      const stored = await e2b.storedById(created.sandboxID);
      assert.equal(stored?.status?.phase, "Running");
      assert.equal(stored?.spec.expireTime, seconds(600), "the second connect's timeout is not lost");
    });

    it("connect: a pause landing between its read of the sandbox and its write of the end makes it resume the sandbox (not 409)", async () => {
      const created = await gvisor({ timeout: 60 });
      const manager = e2b.fixture.manager;
      const update = manager.update.bind(manager);
      let paused = false;
      manager.update = async (input) => {
        if (!paused) {
          paused = true;
          await e2b.sandboxes.pause(created.sandboxID);
        }
        return update(input);
      };
      const { sandbox, resumed } = await e2b.sandboxes.connect(created.sandboxID, 600);
      assert.equal(paused, true, "the pause landed in the connect");
      assert.equal(resumed, true);
      assert.deepEqual(sandbox, created);
      const stored = await e2b.storedById(created.sandboxID);
      assert.equal(stored?.status?.phase, "Running");
      assert.equal(stored?.spec.expireTime, seconds(600));
    });

    it("resume (E2B's legacy): resumes a paused sandbox and refuses one that runs (409)", async () => {
      const created = await gvisor();
      await assert.rejects(
        e2b.sandboxes.resume(created.sandboxID, 60),
        (error: unknown) => error instanceof ConflictError && /already running/.test(error.message),
      );
      await e2b.sandboxes.pause(created.sandboxID);
      assert.deepEqual(await e2b.sandboxes.resume(created.sandboxID, 60), created);
    });

    it("kill: deletes a paused sandbox and its checkpoint", async () => {
      const created = await gvisor();
      await e2b.sandboxes.pause(created.sandboxID);
      assert.equal(e2b.node.byId.size, 1);
      await e2b.sandboxes.kill(created.sandboxID);
      assert.deepEqual(await e2b.stored(), []);
      assert.equal(e2b.node.byId.size, 0);
      await assert.rejects(e2b.sandboxes.get(created.sandboxID), NotFoundError);
    });

    it("kill: a paused sandbox whose checkpoint waits for an agent is killed at once (no 503), and its cleanup finishes later", async () => {
      const created = await gvisor();
      await e2b.sandboxes.pause(created.sandboxID);
      const manager = e2b.fixture.manager;
      const finalize = manager.finalize.bind(manager);
      // As when no agent of the checkpoint's node is ready: the cleanup cannot run yet.
      manager.finalize = () => Promise.reject(new UnavailableError("no ready agent holds the checkpoint; retry once one is"));
      await e2b.sandboxes.kill(created.sandboxID);
      await assert.rejects(e2b.sandboxes.get(created.sandboxID), NotFoundError);
      const [marked] = await e2b.stored();
      assert.ok(marked?.metadata.deletionTimestamp, "marked for deletion, its cleanup pending");
      assert.equal(e2b.node.byId.size, 1, "the checkpoint waits for the cleanup");
      // A second kill finds it gone, as on E2B.
      await assert.rejects(e2b.sandboxes.kill(created.sandboxID), NotFoundError);
      // The reconciler's retry, once an agent is there.
      manager.finalize = finalize;
      await manager.finalize(marked);
      assert.deepEqual(await e2b.stored(), []);
      assert.equal(e2b.node.byId.size, 0);
    });

    it("kill: an error that leaves the sandbox unmarked is the answer", async () => {
      const created = await gvisor();
      const manager = e2b.fixture.manager;
      const remove = manager.delete.bind(manager);
      manager.delete = () => Promise.reject(new UnavailableError("the store is away"));
      await assert.rejects(e2b.sandboxes.kill(created.sandboxID), /the store is away/);
      manager.delete = remove;
      assert.equal((await e2b.storedById(created.sandboxID))?.status?.phase, "Running");
    });

    it("fork: count copies, each an E2B sandbox of its own (id, token, address) with the source's template and metadata; the source runs on", async () => {
      const source = await gvisor({ metadata: { app: "x" }, allow_internet_access: false });
      const results = await e2b.sandboxes.fork(source.sandboxID, { timeoutSeconds: 120, count: 2 });
      const copies = results.map((result) => ("sandbox" in result ? result.sandbox : assert.fail(JSON.stringify(result))));
      assert.equal(new Set([source.sandboxID, ...copies.map((copy) => copy.sandboxID)]).size, 3);
      assert.equal(new Set([source.envdAccessToken, ...copies.map((copy) => copy.envdAccessToken)]).size, 3);
      for (const copy of copies) {
        assert.equal(copy.templateID, "gvisor");
        const stored = await e2b.storedById(copy.sandboxID);
        assert.equal(stored?.spec.expireTime, seconds(120));
        assert.deepEqual(stored?.spec.egress, { policy: "denyAll" });
        assert.equal(stored?.status?.accessTokenHash, hashAccessToken(copy.envdAccessToken));
        const detail = await e2b.sandboxes.get(copy.sandboxID);
        assert.deepEqual(detail.metadata, { app: "x" });
        assert.equal(detail.allowInternetAccess, false, "as the source was created");
        assert.ok(e2b.envdWaits.some((wait) => wait.sandboxID === copy.sandboxID));
      }
      assert.equal((await e2b.sandboxes.get(source.sandboxID)).state, "running");
      assert.equal(e2b.node.byId.size, 0, "the fork's checkpoint is deleted");
    });

    it("fork: a checkpoint its agent saved after the call got no answer is removed once it appears", async () => {
      const source = await gvisor();
      const agent = e2b.checkpointingAgent("gvisor");
      agent.checkpointError = new TimeoutError("the checkpoint call's deadline passed");
      agent.savesLate = true;
      await assert.rejects(e2b.sandboxes.fork(source.sandboxID, { timeoutSeconds: 60, count: 1 }), TimeoutError);
      agent.finishLateSave();
      assert.equal(e2b.node.byId.size, 1, "saved after the call failed");
      for (let waited = 0; e2b.node.byId.size > 0; waited += 5) {
        if (waited > 5_000) assert.fail("the fork's checkpoint was not removed");
        await setTimeout(5);
      }
    });

    it("fork: reports each copy that fails on its own, as E2B's error body, and refuses a paused or runc source", async () => {
      const source = await gvisor();
      const agent = e2b.checkpointingAgent("gvisor");
      let restores = 0;
      agent.onCreate = (spec) => {
        agent.createError = spec.fromCheckpoint && ++restores === 2 ? new FailedPreconditionError("runsc could not restore it") : undefined;
      };
      const results = await e2b.sandboxes.fork(source.sandboxID, { timeoutSeconds: 60, count: 2 });
      agent.onCreate = undefined;
      agent.createError = undefined;
      assert.equal(results.filter((result) => "sandbox" in result).length, 1);
      const failed = results.find((result) => "error" in result);
      assert.deepEqual(failed && "error" in failed ? failed.error : undefined, { code: 400, message: "runsc could not restore it" });

      await e2b.sandboxes.pause(source.sandboxID);
      await assert.rejects(
        e2b.sandboxes.fork(source.sandboxID, { timeoutSeconds: 60, count: 1 }),
        (error: unknown) => error instanceof ConflictError && /paused and cannot be forked; resume it first/.test(error.message),
      );
      const runc = await e2b.sandboxes.create(create({}));
      await assert.rejects(
        e2b.sandboxes.fork(runc.sandboxID, { timeoutSeconds: 60, count: 1 }),
        /cannot be forked: its template "base" is pool default\/default, whose runtimeType is container/,
      );
    });

    it("fork: a copy that failed with an internal error is told as such, with a request id, and logged whole under it", async () => {
      const lines: Record<string, unknown>[] = [];
      const logged = await new E2bFixture({
        logger: pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) }),
      }).start();
      try {
        await logged.addPool("gvisor", { runtimeType: "gvisor" });
        const source = await logged.sandboxes.create(create({ templateID: "gvisor" }));
        logged.checkpoints.createFrom = () => Promise.reject(new Error("SQLITE_CORRUPT: database disk image is malformed at /var/lib/fsb/state.db"));
        const [result] = await logged.sandboxes.fork(source.sandboxID, { timeoutSeconds: 60, count: 1 });
        const error = result && "error" in result ? result.error : undefined;
        assert.equal(error?.code, 500);
        const match = /^internal error \(see the control plane's log, request ([0-9a-f]{16})\)$/.exec(error?.message ?? "");
        assert.ok(match, error?.message);
        const line = lines.find((entry) => entry.requestId === match[1]);
        assert.ok(line, "logged under the answer's request id");
        assert.equal(line.sandboxID, source.sandboxID);
        assert.match(String((line.err as { message?: string } | undefined)?.message), /SQLITE_CORRUPT: database disk image is malformed/);
      } finally {
        await logged.close();
      }
    });
  });
});
