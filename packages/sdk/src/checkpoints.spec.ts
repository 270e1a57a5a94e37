import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createRouterTransport } from "@connectrpc/connect";
import { API_VERSION, FailedPreconditionError, pb, sandboxToMessage, toConnectError, type Sandbox } from "@fast-sandbox/api";
import { FastSandboxClient } from "./fast-sandbox-client.js";

function sandbox(name: string): Sandbox {
  return {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name, namespace: "default" },
    spec: { image: "base:1", poolRef: "gv" },
    status: { phase: "Running", sandboxID: `id-${name}` },
  };
}

const checkpoint = create(pb.CheckpointSchema, {
  namespace: "default",
  name: "golden",
  sandbox: "src",
  pool: "gv",
  image: "base:1",
  sizeBytes: 2048n,
  nodeName: "n1",
  agents: ["gv-0"],
  id: "ck1",
});

/** A client over an in-process SandboxService that records the checkpoint calls. */
function clientRecording(): { client: FastSandboxClient; requests: unknown[] } {
  const requests: unknown[] = [];
  const transport = createRouterTransport(({ service }) => {
    service(pb.SandboxService, {
      createSandbox(request, context) {
        requests.push(request);
        context.responseHeader.set("fsb-access-token", "restored-token");
        return sandboxToMessage(sandbox(request.name || "copy"));
      },
      checkpointSandbox(request) {
        requests.push(request);
        if (request.name === "on-runc") throw toConnectError(new FailedPreconditionError("checkpoint needs runtimeType gvisor"));
        return checkpoint;
      },
      listCheckpoints: () => create(pb.ListCheckpointsResponseSchema, { checkpoints: [checkpoint] }),
      deleteCheckpoint(request) {
        requests.push(request);
        return create(pb.DeleteCheckpointResponseSchema, {});
      },
      forkSandbox(request) {
        requests.push(request);
        return create(pb.ForkSandboxResponseSchema, {
          sandboxes: [1, 2].map((n) => ({ sandbox: sandboxToMessage(sandbox(`src-${n}`)), accessToken: `token-${n}` })),
        });
      },
    });
  });
  return { client: new FastSandboxClient({ transport }), requests };
}

describe("client.checkpoints", () => {
  it("checkpoints, lists and deletes, with the checkpoint's fields", async () => {
    const { client, requests } = clientRecording();
    const made = await client.checkpoints.create("src", { name: "golden" });
    assert.deepEqual(made, {
      namespace: "default",
      name: "golden",
      id: "ck1",
      sandbox: "src",
      pool: "gv",
      image: "base:1",
      createTime: "",
      sizeBytes: 2048,
      nodeName: "n1",
      agents: ["gv-0"],
    });
    assert.deepEqual(
      (await client.checkpoints.list()).map((c) => c.name),
      ["golden"],
    );
    await client.checkpoints.delete("golden", { namespace: "team" });
    assert.equal((requests[1] as pb.DeleteCheckpointRequest).namespace, "team");
    await assert.rejects(client.checkpoints.create("on-runc"), FailedPreconditionError);
  });

  it("restores through CreateSandbox with from_checkpoint and no image or pool of its own, and hands out the access token", async () => {
    const { client, requests } = clientRecording();
    const restored = await client.checkpoints.restore("golden", { name: "copy", exposedPorts: [8080] });
    const request = requests[0] as pb.CreateSandboxRequest;
    assert.equal(request.fromCheckpoint, "golden");
    assert.equal(request.spec?.image, "");
    assert.equal(request.spec?.poolRef, "");
    assert.deepEqual(request.spec?.exposedPorts, [8080]);
    assert.equal(restored.accessToken, "restored-token");
    assert.equal(restored.metadata.name, "copy");
    await client.checkpoints.restore("golden", { pool: "gvisor" });
    assert.equal((requests[1] as pb.CreateSandboxRequest).spec?.poolRef, "gvisor", "a named pool is sent, so a pool at zero agents can be woken");
  });

  it("forks into copies, each with its own access token", async () => {
    const { client, requests } = clientRecording();
    const fork = await client.checkpoints.fork("src", { count: 2 });
    assert.equal((requests[0] as pb.ForkSandboxRequest).count, 2);
    assert.deepEqual(
      fork.sandboxes.map((s) => [s.metadata.name, s.accessToken]),
      [
        ["src-1", "token-1"],
        ["src-2", "token-2"],
      ],
    );
    assert.equal(fork.checkpoint, undefined);
  });
});
