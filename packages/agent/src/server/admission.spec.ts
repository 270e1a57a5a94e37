import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { NoCapacityError, UnavailableError, ValidationError } from "@fast-sandbox/api";
import type { RuntimeSandbox } from "../runtime/runtime.js";
import { Admission, type AdmissionRequest } from "./admission.js";

const AGENT = "default-0";

function request(sandboxId: string, overrides: Partial<AdmissionRequest> = {}): AdmissionRequest {
  return { sandboxId, namespace: "default", name: sandboxId, slots: 3, exposedPorts: [], ...overrides };
}

function listed(sandboxId: string, overrides: Partial<RuntimeSandbox> = {}): RuntimeSandbox {
  return { sandboxId, namespace: "team", name: sandboxId, pool: "default", image: "img", state: "running", labels: {}, ...overrides };
}

/** The refusal admit() throws, or a failure when it admits. */
function refusal(admission: Admission, admitted: AdmissionRequest): Error {
  try {
    admission.admit(admitted);
  } catch (error) {
    assert.ok(error instanceof Error);
    return error;
  }
  assert.fail(`expected ${admitted.sandboxId} to be refused`);
}

describe("Admission", () => {
  describe("slots", () => {
    it("admits up to `slots` creates in flight and refuses the next with NoCapacityError saying how full the agent is", () => {
      const admission = new Admission(AGENT);
      for (const id of ["a", "b", "c"]) admission.admit(request(id));
      const error = refusal(admission, request("d"));
      assert.ok(error instanceof NoCapacityError);
      assert.equal(error.message, "agent default-0 is full: 3 of 3 slots in use");
      assert.equal(admission.held, 3);
    });

    it("counts created and adopted sandboxes like creates in flight, exited ones too", () => {
      const admission = new Admission(AGENT);
      admission.adopt([listed("old-1"), listed("old-2", { state: "stopped", exitCode: 0 })]);
      admission.admit(request("new")).confirm();
      assert.ok(refusal(admission, request("more")) instanceof NoCapacityError);
      assert.equal(admission.held, 3);
    });

    it("treats slots 0 as no limit (callers that do not send it)", () => {
      const admission = new Admission(AGENT);
      for (let i = 0; i < 50; i++) admission.admit(request(`s${i}`, { slots: 0 }));
      assert.equal(admission.held, 50);
    });

    it("uses the slots each create states: a lowered count refuses while the agent holds more", () => {
      const admission = new Admission(AGENT);
      for (const id of ["a", "b"]) admission.admit(request(id, { slots: 4 }));
      assert.match(refusal(admission, request("c", { slots: 2 })).message, /2 of 2 slots/);
      admission.admit(request("c", { slots: 4 }));
    });

    it("gives the slot back when the create fails, once, and keeps it when the create succeeds", () => {
      const admission = new Admission(AGENT);
      const failed = admission.admit(request("a", { slots: 1 }));
      failed.release();
      failed.release();
      const succeeded = admission.admit(request("b", { slots: 1 }));
      succeeded.confirm();
      succeeded.release();
      assert.equal(admission.held, 1);
      assert.ok(refusal(admission, request("c", { slots: 1 })) instanceof NoCapacityError);
    });

    it("frees the slot when the sandbox's delete has finished, and ignores unknown ids", () => {
      const admission = new Admission(AGENT);
      admission.admit(request("a", { slots: 1 })).confirm();
      admission.deleted("unknown");
      assert.ok(refusal(admission, request("b", { slots: 1 })) instanceof NoCapacityError);
      admission.deleted("a");
      admission.admit(request("b", { slots: 1 }));
      assert.equal(admission.held, 1);
    });
  });

  describe("exposed ports", () => {
    it("refuses a port a create in flight exposes, naming the sandbox that has it", () => {
      const admission = new Admission(AGENT);
      admission.admit(request("web", { namespace: "team", name: "web", exposedPorts: [8080, 9090] }));
      const error = refusal(admission, request("other", { exposedPorts: [7000, 9090] }));
      assert.ok(error instanceof NoCapacityError);
      assert.equal(error.message, "port 9090 is already exposed by sandbox team/web on agent default-0");
      // The refused create took nothing: its other port is still free.
      admission.admit(request("third", { exposedPorts: [7000] }));
    });

    it("refuses ports of adopted sandboxes too", () => {
      const admission = new Admission(AGENT);
      admission.adopt([listed("old", { name: "api", exposedPorts: [443] })]);
      assert.match(refusal(admission, request("new", { exposedPorts: [443] })).message, /port 443 is already exposed by sandbox team\/api/);
    });

    it("holds no port for an adopted sandbox with an address of its own (Isolated network)", () => {
      const admission = new Admission(AGENT);
      admission.adopt([listed("old", { name: "api", exposedPorts: [443], address: "10.88.0.2" })]);
      admission.admit(request("new", { exposedPorts: [443] }));
      assert.equal(admission.held, 2);
    });

    it("frees the ports of a failed create and of a deleted sandbox", () => {
      const admission = new Admission(AGENT);
      admission.admit(request("a", { exposedPorts: [80] })).release();
      admission.admit(request("b", { exposedPorts: [80] })).confirm();
      assert.ok(refusal(admission, request("c", { exposedPorts: [80] })) instanceof NoCapacityError);
      admission.deleted("b");
      admission.admit(request("c", { exposedPorts: [80] }));
    });

    it("accepts a port listed twice by one create and frees it once", () => {
      const admission = new Admission(AGENT);
      const first = admission.admit(request("a", { exposedPorts: [80, 80] }));
      const heldByA = refusal(admission, request("c", { exposedPorts: [80] }));
      assert.ok(heldByA instanceof NoCapacityError);
      assert.match(heldByA.message, /port 80 is already exposed by sandbox default\/a /);
      first.release();
      // Free again once the failed create let go, and held by the next create that takes it.
      admission.admit(request("b", { exposedPorts: [80] }));
      const heldByB = refusal(admission, request("c", { exposedPorts: [80] }));
      assert.ok(heldByB instanceof NoCapacityError);
      assert.match(heldByB.message, /port 80 is already exposed by sandbox default\/b /);
    });
  });

  describe("a create of an id already held (a retry)", () => {
    it("is admitted without taking another slot, even when the agent is full, and its failure frees nothing", () => {
      const admission = new Admission(AGENT);
      const first = admission.admit(request("a", { slots: 2, exposedPorts: [80] }));
      admission.admit(request("b", { slots: 2 }));
      const retry = admission.admit(request("a", { slots: 2, exposedPorts: [80] }));
      assert.equal(admission.held, 2);
      retry.release();
      assert.equal(admission.held, 2);
      assert.ok(refusal(admission, request("c", { slots: 3, exposedPorts: [80] })) instanceof NoCapacityError);
      first.confirm();
      admission.admit(request("a", { slots: 2 })).release();
      assert.equal(admission.held, 2);
    });

    it("holds the sandbox again when the retry succeeds after the first create failed", () => {
      const admission = new Admission(AGENT);
      const first = admission.admit(request("a", { slots: 1 }));
      const retry = admission.admit(request("a", { slots: 1 }));
      first.release();
      retry.confirm();
      assert.equal(admission.held, 1);
      assert.ok(refusal(admission, request("b", { slots: 1 })) instanceof NoCapacityError);
    });
  });

  describe("reconcile with a listing of the runtime", () => {
    it("forgets sandboxes gone from the runtime behind the agent's back", () => {
      const admission = new Admission(AGENT);
      admission.adopt([listed("reaped", { exposedPorts: [80] }), listed("kept")]);
      const mark = admission.mark();
      admission.reconcile([listed("kept")], mark);
      assert.equal(admission.held, 1);
      admission.admit(request("new", { exposedPorts: [80] }));
    });

    it("keeps creates in flight and sandboxes created after the listing began, whatever the listing says", () => {
      const admission = new Admission(AGENT);
      const mark = admission.mark();
      admission.admit(request("in-flight"));
      admission.admit(request("done-after-mark")).confirm();
      admission.reconcile([], mark);
      assert.equal(admission.held, 2);
      // A listing that began after the create finished does see it, or it is gone.
      admission.reconcile([], admission.mark());
      assert.equal(admission.held, 1);
    });
  });

  describe("stopping", () => {
    it("refuses every create with UnavailableError once stopped, retries included", () => {
      const admission = new Admission(AGENT);
      admission.admit(request("a"));
      admission.stop();
      for (const id of ["a", "b"]) {
        const error = refusal(admission, request(id));
        assert.ok(error instanceof UnavailableError);
        assert.match(error.message, /agent default-0 is stopping/);
      }
      assert.equal(admission.held, 1);
    });
  });

  describe("retirement", () => {
    it("retires only an agent that holds nothing: a create in flight, or a sandbox, keeps it admitting", () => {
      const admission = new Admission(AGENT);
      const inFlight = admission.admit(request("a"));
      assert.equal(admission.retireIfIdle(), false, "a create in flight");
      inFlight.confirm();
      assert.equal(admission.retireIfIdle(), false, "a sandbox");
      admission.admit(request("b")).confirm();
      admission.deleted("a");
      admission.deleted("b");
      assert.equal(admission.refusing, false);
      assert.equal(admission.retireIfIdle(), true);
      assert.equal(admission.retireIfIdle(), true, "asked again: still retired");
      assert.equal(admission.refusing, true);
    });

    it("lets a retirement lapse when the stop it announces does not come", (t) => {
      t.mock.timers.enable({ apis: ["setTimeout"] });
      const admission = new Admission(AGENT);
      assert.equal(admission.retireIfIdle(60_000), true);
      t.mock.timers.tick(59_999);
      assert.equal(admission.retired, true);
      t.mock.timers.tick(1);
      assert.equal(admission.retired, false, "lapsed");
      admission.admit(request("a")).confirm();
      assert.equal(admission.held, 1);
    });

    it("refuses every create with UnavailableError once retired, and admits again once the retirement is undone", () => {
      const admission = new Admission(AGENT);
      assert.equal(admission.retireIfIdle(), true);
      const error = refusal(admission, request("a"));
      assert.ok(error instanceof UnavailableError);
      assert.match(error.message, /agent default-0 is retired \(its pool is stopping it\); place the sandbox on another agent/);
      assert.equal(admission.held, 0, "the refused create holds nothing");
      admission.unretire();
      assert.equal(admission.refusing, false);
      admission.admit(request("a")).confirm();
      assert.equal(admission.held, 1);
    });
  });

  describe("validation", () => {
    it("refuses negative slots and ports outside 1-65535 with a ValidationError naming the field", () => {
      const admission = new Admission(AGENT);
      const slots = refusal(admission, request("a", { slots: -1 }));
      assert.ok(slots instanceof ValidationError);
      assert.equal(slots.field, "slots");
      for (const port of [0, 65536, 1.5]) {
        const error = refusal(admission, request("a", { exposedPorts: [80, port] }));
        assert.ok(error instanceof ValidationError);
        assert.equal(error.field, "exposedPorts[1]");
      }
      assert.equal(admission.held, 0);
    });
  });
});
