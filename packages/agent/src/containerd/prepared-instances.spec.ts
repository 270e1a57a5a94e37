import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { networkKey, templateKey, type PreparedTemplate } from "./prepared-instances.js";

const TEMPLATE: PreparedTemplate = {
  namespace: "default",
  pool: "python",
  image: "python:3.12",
  runtimeType: "container",
  resources: { cpuMillis: 500, memoryBytes: 256 << 20 },
  network: { mode: "isolated", egress: { kind: "allowAll" } },
};

describe("what a create must match to claim an instance made ahead", () => {
  it("the same template, written differently, has the same key", () => {
    assert.equal(templateKey(TEMPLATE), templateKey({ ...TEMPLATE, image: "docker.io/library/python:3.12", network: { mode: "isolated" } }));
  });

  it("image, runtime, resources and pool each tell templates apart", () => {
    for (const other of [
      { ...TEMPLATE, image: "python:3.13" },
      { ...TEMPLATE, runtimeType: "gvisor" as const },
      { ...TEMPLATE, resources: { cpuMillis: 1000, memoryBytes: 256 << 20 } },
      { ...TEMPLATE, pool: "other" },
      { ...TEMPLATE, namespace: "team-b" },
    ]) {
      assert.notEqual(templateKey(other), templateKey(TEMPLATE), JSON.stringify(other));
    }
  });

  it("an isolated sandbox's egress policy and sandbox-to-sandbox rule are part of its network's key", () => {
    const pool = networkKey({ mode: "isolated", egress: { kind: "allowAll" } });
    assert.equal(networkKey({ mode: "isolated" }), pool, "allowAll is the default policy");
    assert.equal(networkKey({ mode: "isolated", egress: { kind: "allowAll", allow: [] } }), pool, "no rules is no rules");
    const list = (cidr: string) => networkKey({ mode: "isolated", egress: { kind: "allowList", allow: [{ cidr, ports: [443] }] } });
    assert.notEqual(list("10.0.0.0/8"), list("10.0.0.0/16"));
    assert.notEqual(networkKey({ mode: "isolated", egress: { kind: "denyAll" } }), pool);
    assert.notEqual(networkKey({ mode: "isolated", egress: { kind: "allowAll" }, allowSandboxToSandbox: true }), pool);
    assert.notEqual(networkKey({ mode: "shared" }), pool);
    assert.notEqual(templateKey({ ...TEMPLATE, network: { mode: "isolated", egress: { kind: "denyAll" } } }), templateKey(TEMPLATE));
  });

  it("a shared network has no policy of its own: no network spec is a shared one", () => {
    assert.equal(networkKey(undefined), networkKey({ mode: "shared" }));
  });
});
