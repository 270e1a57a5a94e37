import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { pb } from "@fast-sandbox/api";
import { ANY_CALLER, callAccess, describeAccess, type ResourceAccess } from "./call-access.js";

describe("callAccess", () => {
  it("names what every method of the three services does (none is left to the API token alone by omission)", () => {
    for (const service of [pb.SandboxService, pb.PoolService, pb.E2bService]) {
      for (const method of service.methods) {
        const access = callAccess(service.typeName, method.localName, create(method.input));
        assert.ok(access !== undefined, `${service.typeName}/${method.name} has no access`);
        if (access !== ANY_CALLER) {
          assert.ok(access.length > 0, method.name);
          for (const one of access) assert.ok(one.resource && one.verb, `${method.name}: ${JSON.stringify(one)}`);
        }
      }
    }
  });

  it("maps sandbox calls onto the CRD's resource and Kubernetes-style subresources, empty namespaces onto default", () => {
    const cases: [string, object, ResourceAccess | ResourceAccess[]][] = [
      ["createSandbox", { namespace: "team", name: "web" }, { verb: "create", resource: "sandboxes", namespace: "team" }],
      ["getSandbox", { namespace: "", name: "web" }, { verb: "get", resource: "sandboxes", namespace: "default", name: "web" }],
      ["listSandboxes", { namespace: "team" }, { verb: "list", resource: "sandboxes", namespace: "team" }],
      ["listSandboxes", { namespace: "*" }, { verb: "list", resource: "sandboxes", namespace: "" }],
      ["listSandboxes", { namespace: "" }, { verb: "list", resource: "sandboxes", namespace: "default" }],
      ["updateSandbox", { namespace: "team", name: "web" }, { verb: "patch", resource: "sandboxes", namespace: "team", name: "web" }],
      ["deleteSandbox", { namespace: "team", name: "web" }, { verb: "delete", resource: "sandboxes", namespace: "team", name: "web" }],
      ["logs", { namespace: "team", name: "web" }, { verb: "get", resource: "sandboxes", subresource: "log", namespace: "team", name: "web" }],
      ["exec", { namespace: "team", name: "web" }, { verb: "create", resource: "sandboxes", subresource: "exec", namespace: "team", name: "web" }],
      ["getSandboxStats", { namespace: "team", name: "web" }, { verb: "get", resource: "sandboxes", subresource: "stats", namespace: "team", name: "web" }],
      [
        "rotateAccessToken",
        { namespace: "team", name: "web" },
        { verb: "create", resource: "sandboxes", subresource: "token", namespace: "team", name: "web" },
      ],
      [
        "forkSandbox",
        { namespace: "team", name: "web" },
        [
          { verb: "create", resource: "sandboxes", subresource: "fork", namespace: "team", name: "web" },
          { verb: "create", resource: "sandboxes", namespace: "team" },
        ],
      ],
      [
        "createSandbox",
        { namespace: "team", name: "copy", fromCheckpoint: "snap" },
        [
          { verb: "create", resource: "sandboxes", namespace: "team" },
          { verb: "get", resource: "sandboxcheckpoints", namespace: "team", name: "snap" },
        ],
      ],
      ["listCheckpoints", { namespace: "*" }, { verb: "list", resource: "sandboxcheckpoints", namespace: "" }],
      ["deleteCheckpoint", { namespace: "team", name: "c1" }, { verb: "delete", resource: "sandboxcheckpoints", namespace: "team", name: "c1" }],
    ];
    for (const [method, request, expected] of cases) {
      assert.deepEqual(callAccess(pb.SandboxService.typeName, method, request), [expected].flat(), `${method} ${JSON.stringify(request)}`);
    }
    assert.equal(callAccess(pb.SandboxService.typeName, "getSandboxProxy", {}), ANY_CALLER);
  });

  it("maps pool calls (an apply creates or patches; a pull with no pool is the default one's), the agents of every namespace and the E2B API's cluster-wide keys", () => {
    const py = { resource: "sandboxpools", namespace: "team", name: "py" };
    assert.deepEqual(callAccess(pb.PoolService.typeName, "applySandboxPool", { pool: { metadata: { namespace: "team", name: "py" } } }), [
      { verb: "create", ...py },
      { verb: "patch", ...py },
    ]);
    assert.deepEqual(callAccess(pb.PoolService.typeName, "applySandboxPool", { pool: { metadata: { name: "py" } } }), [
      { verb: "create", ...py, namespace: "default" },
      { verb: "patch", ...py, namespace: "default" },
    ]);
    assert.deepEqual(callAccess(pb.PoolService.typeName, "listAgents", { namespace: "", pool: "" }), [
      { verb: "get", resource: "sandboxpools", subresource: "agents", namespace: "" },
    ]);
    assert.deepEqual(callAccess(pb.PoolService.typeName, "pullImage", { namespace: "team", pool: "py", image: "x" }), [
      { verb: "create", ...py, subresource: "pull" },
    ]);
    assert.deepEqual(callAccess(pb.PoolService.typeName, "pullImage", { namespace: "team", pool: "", image: "x" }), [
      { verb: "create", ...py, name: "default", subresource: "pull" },
    ]);
    assert.deepEqual(callAccess(pb.E2bService.typeName, "createApiKey", {}), [{ verb: "create", resource: "e2bapikeys", namespace: "", clusterWide: true }]);
  });

  it("knows no method outside the tables, nor an inherited property's name", () => {
    assert.equal(callAccess(pb.SandboxService.typeName, "toString", {}), undefined);
    assert.equal(callAccess(pb.SandboxService.typeName, "createSandboxes", {}), undefined);
    assert.equal(callAccess(pb.AgentService.typeName, "createSandbox", {}), undefined);
  });

  it("describes an access for a refusal", () => {
    assert.equal(
      describeAccess({ verb: "create", resource: "sandboxes", subresource: "exec", namespace: "team", name: "web" }),
      'create sandbox.fast.io sandboxes/exec "web" in namespace "team"',
    );
    assert.equal(describeAccess({ verb: "list", resource: "sandboxes", namespace: "" }), "list sandbox.fast.io sandboxes in every namespace");
    assert.equal(
      describeAccess({ verb: "create", resource: "e2bapikeys", namespace: "", clusterWide: true }),
      "create sandbox.fast.io e2bapikeys (cluster-wide)",
    );
  });
});
