import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { NotFoundError, UnavailableError } from "@fast-sandbox/api";
import type { ContainerdClient } from "./containerd-client.js";
import { ingestBlob } from "./content-ingest.js";
import { WriteAction } from "./gen/github.com/containerd/containerd/api/services/content/v1/content_pb.js";

const DIGEST = `sha256:${"a".repeat(64)}`;

/**
 * A content store lacking every blob whose write stream answers STAT and then nothing more (a hung
 * containerd); a cancelled stream fails its pending exchange, as grpc-js does.
 */
function hungContainerd() {
  const events: string[] = [];
  const client = {
    leases: { addResource: () => Promise.resolve({}) },
    content: {
      info: () => Promise.reject(new NotFoundError(`content digest ${DIGEST}: not found`)),
      abort: (request: { ref: string }) => {
        events.push(`abort ${request.ref}`);
        return Promise.resolve({});
      },
      write: (options: { timeoutMs?: number }) => {
        events.push(`write timeoutMs=${options.timeoutMs}`);
        let cancel = () => undefined as void;
        return {
          exchange: (request: { action: WriteAction }) => {
            events.push(WriteAction[request.action]);
            if (request.action === WriteAction.STAT) return Promise.resolve({ offset: 0n, digest: "" });
            return new Promise((_, reject) => {
              cancel = () => reject(new UnavailableError("Content.Write cancelled"));
            });
          },
          end: () => undefined,
          cancel: () => {
            events.push("cancel");
            cancel();
          },
        };
      },
    },
  };
  return { client: client as unknown as ContainerdClient, events };
}

describe("ingestBlob, a content store that stops answering", () => {
  it("gives the write stream no total deadline, but fails a message left unanswered, cancels the stream and aborts the ingest", async () => {
    const { client, events } = hungContainerd();
    const blob = Buffer.from("layer bytes");
    await assert.rejects(
      ingestBlob(client, { digest: DIGEST, size: blob.length }, () => Promise.resolve([blob]), { leaseId: "lease-1", ref: "layer-x", answerTimeoutMs: 20 }),
      (error: unknown) => error instanceof UnavailableError && /did not answer a write of sha256:a+ within/.test(error.message),
    );
    assert.deepEqual(events, ["write timeoutMs=Infinity", "STAT", "WRITE", "cancel", "cancel", "abort layer-x"]);
  });
});

describe("ingestBlob, another writer of the same ref", () => {
  /**
   * A content store whose ref is locked by another writer for `lockedTimes` STATs, that writer's
   * ingest growing by `growth` bytes between two looks, after which the blob is there.
   */
  function lockedContainerd(lockedTimes: number, growth: bigint) {
    let stats = 0;
    let offset = 0n;
    let present = false;
    const client = {
      leases: { addResource: () => Promise.resolve({}) },
      content: {
        info: () => (present ? Promise.resolve({}) : Promise.reject(new NotFoundError(`content digest ${DIGEST}: not found`))),
        abort: () => Promise.resolve({}),
        status: () => {
          offset += growth;
          return Promise.resolve({ status: { ref: "layer-x", offset } });
        },
        write: () => ({
          exchange: () => {
            stats++;
            if (stats === lockedTimes) present = true;
            return Promise.reject(new UnavailableError("ref layer-x locked for 1.2s (since ...): unavailable"));
          },
          end: () => undefined,
          cancel: () => undefined,
        }),
      },
    };
    return { client: client as unknown as ContainerdClient, stats: () => stats };
  }

  it("waits while the other writer's ingest grows, however long that is beyond lockWaitMs, and finds the blob it wrote", async () => {
    const { client, stats } = lockedContainerd(4, 1_000_000n);
    const result = await ingestBlob(client, { digest: DIGEST, size: 10 }, () => Promise.resolve([Buffer.alloc(10)]), {
      leaseId: "lease-1",
      ref: "layer-x",
      lockWaitMs: 1,
    });
    assert.equal(result, "present");
    assert.equal(stats(), 4);
  });

  it("gives up once the other writer's ingest stops growing for lockWaitMs", async () => {
    const { client, stats } = lockedContainerd(1000, 0n);
    await assert.rejects(
      ingestBlob(client, { digest: DIGEST, size: 10 }, () => Promise.resolve([Buffer.alloc(10)]), { leaseId: "lease-1", ref: "layer-x", lockWaitMs: 1 }),
      (error: unknown) => error instanceof UnavailableError && /locked/.test(error.message),
    );
    assert.ok(stats() <= 2, `gave up after ${stats()} looks`);
  });
});
