/**
 * Writes one blob into containerd's content store through Content.Write, the way containerd's
 * own client does: STAT opens (and locks) the ingest `ref`, WRITEs append at the offset the store
 * reports, COMMIT checks size and digest and makes the blob visible. A blob the store already
 * has is not written again. While another writer (another agent pulling the same layer) holds the
 * ref, the ingest waits for it and usually finds the blob committed. A failed ingest is aborted,
 * so no partial data stays behind. The blob is the lease's before the store is asked for it: one
 * that is present but referenced by nothing else (a pull that failed earlier) would otherwise be
 * skipped, stay outside the lease and be collected by a garbage collection during the pull.
 *
 * A write has no deadline as a whole: a 4 GB layer over a 2 MB/s link takes over half an hour, and
 * a deadline is not tried again. What bounds it is progress: the registry client fails a download
 * that sends nothing for a minute (its idle guard), and each message to the content store must be
 * answered within ANSWER_TIMEOUT_MS.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { AlreadyExistsError, FsbError, UnavailableError } from "@fast-sandbox/api/core";
import type { ContainerdClient } from "./containerd-client.js";
import { WriteAction } from "./gen/github.com/containerd/containerd/api/services/content/v1/content_pb.js";
import { isNotFound } from "./grpc-errors.js";
import type { Descriptor } from "./image-manifest.js";

/** Chunk size of WRITE messages (containerd accepts messages of up to 16 MiB). */
const WRITE_CHUNK_BYTES = 1024 * 1024;
/** Longest wait for the content store's answer to one message (a WRITE of a chunk, the COMMIT). */
const ANSWER_TIMEOUT_MS = 5 * 60 * 1000;

type WriteStream = ReturnType<ContainerdClient["content"]["write"]>;

/** The blob's bytes, in chunks. */
export type BlobSource = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

export interface IngestOptions {
  /** Lease the ingest and the committed blob belong to until the image references them. */
  leaseId: string;
  /** Ingest name; writers of the same ref exclude each other (containerd's convention: `layer-<digest>`). */
  ref: string;
  /** Called with the number of bytes of each chunk stored. */
  onBytes?: (bytes: number) => void;
  /**
   * Longest wait for another writer of the same ref while its ingest makes no progress: a writer
   * whose ingest grows (a big layer shared by two images pulled at once, downloading for half an
   * hour) is waited for as long as it keeps growing. @default 600_000
   */
  lockWaitMs?: number;
  /** Deadline of the whole write stream. @default none: a slow download that keeps going is not cut off */
  timeoutMs?: number;
  /** Longest wait for the answer to one message of the write stream. @default ANSWER_TIMEOUT_MS */
  answerTimeoutMs?: number;
  signal?: AbortSignal;
}

/** Whether the blob is in the content store (Content.Info). */
export async function hasContent(client: ContainerdClient, digest: string): Promise<boolean> {
  try {
    await client.content.info({ digest });
    return true;
  } catch (error) {
    if (isNotFound(error)) return false;
    throw error;
  }
}

/**
 * Stores `descriptor`'s blob, reading it from `open()` only when the store lacks it.
 * Resolves "present" when it was there already, "written" when this call wrote it.
 */
export async function ingestBlob(
  client: ContainerdClient,
  descriptor: Pick<Descriptor, "digest" | "size">,
  open: () => Promise<BlobSource>,
  options: IngestOptions,
): Promise<"present" | "written"> {
  // Idempotent, and containerd takes a resource that does not exist yet: from here on, whether the
  // blob is there already or written below, garbage collection leaves it to the lease.
  await client.leases.addResource({ id: options.leaseId, resource: { id: descriptor.digest, type: "content" } });
  const lockWaitMs = options.lockWaitMs ?? 600_000;
  let deadline = Date.now() + lockWaitMs;
  let writerOffset: bigint | undefined;
  for (let attempt = 0; ; attempt++) {
    options.signal?.throwIfAborted();
    if (await hasContent(client, descriptor.digest)) return "present";
    try {
      await writeOnce(client, descriptor, open, options);
      return "written";
    } catch (error) {
      if (error instanceof AlreadyExistsError) return "present";
      // Another writer holds the ref ("ref … locked"): wait for it, then look again — for as long
      // as its ingest grows, and lockWaitMs more once it stops.
      if (error instanceof UnavailableError && /locked/.test(error.message)) {
        const offset = await ingestOffset(client, options.ref);
        if (offset !== undefined && offset !== writerOffset) {
          writerOffset = offset;
          deadline = Date.now() + lockWaitMs;
        }
        if (Date.now() < deadline) {
          await sleep(Math.min(1000, 50 * 2 ** attempt), undefined, options.signal ? { signal: options.signal } : {});
          continue;
        }
      }
      throw error;
    }
  }
}

/** How far the ingest `ref` has got (Content.Status), or undefined when that cannot be told (no such ingest, an error). */
async function ingestOffset(client: ContainerdClient, ref: string): Promise<bigint | undefined> {
  try {
    return (await client.content.status({ ref })).status?.offset;
  } catch {
    return undefined;
  }
}

async function writeOnce(
  client: ContainerdClient,
  descriptor: Pick<Descriptor, "digest" | "size">,
  open: () => Promise<BlobSource>,
  options: IngestOptions,
): Promise<void> {
  const stream = client.content.write({ leaseId: options.leaseId, timeoutMs: options.timeoutMs ?? Number.POSITIVE_INFINITY });
  const exchange = answeredWithin(stream, options.answerTimeoutMs ?? ANSWER_TIMEOUT_MS, descriptor.digest);
  let opened = false;
  try {
    // STAT takes the ref's lock; it fails with "locked" while another writer has it.
    await exchange({ action: WriteAction.STAT, ref: options.ref, total: BigInt(descriptor.size), expected: descriptor.digest });
    opened = true;
    let offset = 0n;
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    const flush = async () => {
      if (pendingBytes === 0) return;
      const data = pending.length === 1 ? (pending[0] as Uint8Array) : Buffer.concat(pending);
      pending = [];
      pendingBytes = 0;
      // Offset 0 also truncates what an earlier, interrupted ingest of this ref left.
      const response = await exchange({ action: WriteAction.WRITE, offset, data });
      if (response.offset !== offset + BigInt(data.byteLength)) {
        throw new FsbError("internal", `content store accepted ${response.offset - offset} of ${data.byteLength} bytes of ${descriptor.digest}`);
      }
      offset = response.offset;
      options.onBytes?.(data.byteLength);
    };
    for await (const chunk of await open()) {
      options.signal?.throwIfAborted();
      pending.push(chunk);
      pendingBytes += chunk.byteLength;
      if (offset + BigInt(pendingBytes) > BigInt(descriptor.size)) {
        throw new FsbError("internal", `${descriptor.digest} is larger than the ${descriptor.size} bytes its descriptor says`);
      }
      if (pendingBytes >= WRITE_CHUNK_BYTES) await flush();
    }
    await flush();
    if (offset !== BigInt(descriptor.size)) {
      throw new UnavailableError(`${descriptor.digest} ended after ${offset} of ${descriptor.size} bytes; try again`);
    }
    const committed = await exchange({ action: WriteAction.COMMIT, offset, total: BigInt(descriptor.size), expected: descriptor.digest });
    if (committed.digest && committed.digest !== descriptor.digest) {
      throw new FsbError("internal", `content store committed ${committed.digest} for ${descriptor.digest}`);
    }
    stream.end();
  } catch (error) {
    stream.cancel();
    // Leave no partial ingest behind (but never abort another writer's ref we could not open).
    if (opened) {
      // The lease's deletion collects an ingest this abort missed.
      await client.content.abort({ ref: options.ref }).catch(() => undefined);
    }
    throw error;
  }
}

/**
 * `stream.exchange`, failing (and cancelling the stream) when the content store does not answer
 * within `timeoutMs`: with no deadline on the stream, a hung containerd would otherwise hold the
 * pull for ever. UnavailableError, so the blob is tried again.
 */
function answeredWithin(stream: WriteStream, timeoutMs: number, digest: string): WriteStream["exchange"] {
  return async (request) => {
    let timer: NodeJS.Timeout | undefined;
    const unanswered = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        // Rejected before the cancellation fails the exchange, so the race reports this reason.
        reject(new UnavailableError(`containerd did not answer a write of ${digest} within ${timeoutMs / 1000} s; try again`));
        stream.cancel();
      }, timeoutMs);
    });
    try {
      return await Promise.race([stream.exchange(request), unanswered]);
    } finally {
      clearTimeout(timer);
    }
  };
}
