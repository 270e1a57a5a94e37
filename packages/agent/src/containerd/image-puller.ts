/**
 * Pulls images from OCI registries into containerd, client-side (containerd 1.6 has no Transfer
 * service), the way containerd's Go client does:
 *
 *   resolve the reference at the registry → fetch index / manifest (linux/<arch>) / config / layers
 *   into the content store → label manifests with `containerd.io/gc.ref.content.*` so garbage
 *   collection keeps their children → unpack the layers into the snapshotter (chain IDs) → label the
 *   config with `containerd.io/gc.ref.snapshot.<snapshotter>` → create or update the image record.
 *
 * Everything happens under a containerd lease, so nothing is collected mid-pull; deleting the lease
 * at the end leaves what the image record references and, after a failure, nothing (ingests are
 * aborted, extraction snapshots removed, and a synchronous collection runs before the error is
 * reported). Concurrent pulls of one reference share a single pull and its result or error.
 *
 * Nothing is downloaded that cannot be unpacked (layer media types are checked first) or run (a
 * config for another platform fails the pull before its layers are fetched). A fetch that fails for
 * a moment is tried again; a layer that fails for good stops the other layers' downloads.
 */
import { createHash, randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  FsbError,
  NotFoundError,
  UnavailableError,
  parseImageReference,
  type ImageReference,
} from "@fast-sandbox/api/core";
import type { ImagePullProgress, PulledImage } from "../runtime/runtime.js";
import { loadRegistryCredentials } from "../registry/registry-credentials.js";
import { RegistryClient, type RegistryClientOptions } from "../registry/registry-client.js";
import { quoteFilterValue, type ContainerdClient } from "./containerd-client.js";
import { hasContent, ingestBlob, type BlobSource } from "./content-ingest.js";
import { checkImagePlatform, isIndex, parseDiffIds, parseJson, parseManifest, selectPlatformManifest, type Descriptor } from "./image-manifest.js";
import { unpackLayers } from "./image-unpacker.js";

/** Largest image config accepted (they are a few KiB). */
const CONFIG_MAX_BYTES = 8 * 1024 * 1024;
/**
 * When a pull's lease expires. A pull deletes its lease when it ends, and the lease is never
 * extended: so it must outlast any pull, or a garbage collection during a long one (a large image
 * on a slow link) would collect the layers it committed but no image references yet. The expiry
 * only matters after an agent crash: the leftovers of the pull it cut short stay this long.
 */
const PULL_LEASE_EXPIRY_MS = 24 * 60 * 60 * 1000;
/** The ids of pulls' leases begin with it. */
const PULL_LEASE_PREFIX = "fsb-pull-";
/** Progress of byte counts is reported at most this often (phase changes and layers at once). */
const PROGRESS_INTERVAL_MS = 200;
/**
 * How many times one blob or manifest (with the token it needs) is fetched before its failure fails
 * the pull: a registry's 5xx or 429, a reset connection or a stalled download (all
 * UnavailableError) are usually gone on the next try, and one of them should not throw away the
 * rest of a large pull. The registry client fetches a blob whole (no ranges), so a retry starts
 * that blob again; the blobs already stored stay.
 */
const FETCH_ATTEMPTS = 4;

/**
 * The bytes a registry served for a digest hash to something else (the content store refused to
 * commit them, or the config did not match). A corrupted transfer is tried once more; a registry
 * that serves the same wrong bytes again fails the pull.
 */
class MismatchedBlobError extends UnavailableError {}

export interface ImagePullerOptions {
  client: ContainerdClient;
  /** Snapshotter the layers are unpacked for. */
  snapshotter: string;
  /** Docker config.json with registry credentials, read at every pull (env FSB_REGISTRY_CONFIG). @default none: anonymous */
  registryConfigPath?: string;
  /** Layers downloaded at once. @default 3 */
  downloadConcurrency?: number;
  /** Platform architecture to pull (Go's name). @default this machine's */
  architecture?: string;
  /** Builds the registry client (tests inject a fetch). */
  registryClient?: (options: RegistryClientOptions) => RegistryClient;
  /** The first pause before a blob's or manifest's fetch is tried again (doubled each time). @default 500 */
  blobRetryDelayMs?: number;
  /**
   * Labels every pull's lease carries (the agent's name): a process of the agent that dies mid-pull
   * leaves its lease, which the agent's next start removes (`removeLeftoverLeases`). @default none
   */
  leaseLabels?: Record<string, string>;
  logger: Logger;
}

type ProgressListener = (progress: ImagePullProgress) => void;

interface PullInFlight {
  result: Promise<PulledImage>;
  listeners: Set<ProgressListener>;
  /** The latest report, for a caller that joins late. */
  latest(): ImagePullProgress;
}

export class ImagePuller {
  private readonly client: ContainerdClient;
  private readonly snapshotter: string;
  private readonly registryConfigPath: string | undefined;
  private readonly downloadConcurrency: number;
  private readonly architecture: string | undefined;
  private readonly registryClient: (options: RegistryClientOptions) => RegistryClient;
  private readonly blobRetryDelayMs: number;
  private readonly leaseLabels: Record<string, string>;
  private readonly logger: Logger;
  private readonly inFlight = new Map<string, PullInFlight>();
  private readonly closing = new AbortController();

  constructor(options: ImagePullerOptions) {
    this.client = options.client;
    this.snapshotter = options.snapshotter;
    this.registryConfigPath = options.registryConfigPath;
    this.downloadConcurrency = Math.max(1, options.downloadConcurrency ?? 3);
    this.architecture = options.architecture;
    this.registryClient = options.registryClient ?? ((clientOptions) => new RegistryClient(clientOptions));
    this.blobRetryDelayMs = options.blobRetryDelayMs ?? 500;
    this.leaseLabels = options.leaseLabels ?? {};
    this.logger = options.logger.child({ component: "image-puller" });
  }

  /** Pulls the image (joining a pull of the same normalized reference already in flight). */
  pull(reference: string, onProgress?: ProgressListener): Promise<PulledImage> {
    const parsed = parseImageReference(reference);
    let pull = this.inFlight.get(parsed.name);
    if (!pull) {
      const listeners = new Set<ProgressListener>();
      let latest: ImagePullProgress = { image: parsed.name, phase: "resolving", layersTotal: 0, layersDone: 0, bytesTotal: 0, bytesDone: 0, digest: "" };
      const result = this.run(parsed, (progress) => {
        latest = progress;
        for (const listener of listeners) listener(progress);
      }).finally(() => this.inFlight.delete(parsed.name));
      pull = { result, listeners, latest: () => latest };
      this.inFlight.set(parsed.name, pull);
    }
    if (!onProgress) return pull.result;
    const { listeners, result } = pull;
    listeners.add(onProgress);
    onProgress(pull.latest());
    return result.finally(() => listeners.delete(onProgress));
  }

  /**
   * Unpacks an image whose record and blobs are in the store but whose layers are not unpacked for
   * the snapshotter (imported without unpacking, or its snapshots removed). NotFoundError when a
   * blob is missing too: then only a pull helps.
   */
  async unpack(name: string): Promise<void> {
    const { image } = await this.client.images.get({ name });
    if (!image?.target) throw new NotFoundError(`image ${name} has no target`);
    let manifestDigest = image.target.digest;
    let document = parseJson(await this.readContent(manifestDigest), `the manifest of ${name}`);
    if (isIndex(image.target.mediaType, document)) {
      manifestDigest = selectPlatformManifest(document, name, this.architecture).digest;
      document = parseJson(await this.readContent(manifestDigest), `the ${manifestDigest} manifest of ${name}`);
    }
    const manifest = parseManifest(document, name);
    const diffIds = parseDiffIds(parseJson(await this.readContent(manifest.config.digest), `the config of ${name}`), name, manifest.layers.length);
    for (const layer of manifest.layers) {
      if (!(await hasContent(this.client, layer.digest))) throw new NotFoundError(`image ${name}: layer ${layer.digest} is not in the content store`);
    }
    await this.withLease(async (leaseId) => {
      const chain = await unpackLayers(this.client, manifest.layers, diffIds, { snapshotter: this.snapshotter, leaseId });
      await this.label(manifest.config.digest, { [`containerd.io/gc.ref.snapshot.${this.snapshotter}`]: chain }, leaseId);
    });
    this.logger.info({ image: name }, "unpacked image from the content store");
  }

  /** Runs `work` under a new lease; deletes the lease after, collecting at once what it alone kept when `work` failed. */
  private async withLease<T>(work: (leaseId: string) => Promise<T>): Promise<T> {
    const leaseId = `${PULL_LEASE_PREFIX}${randomBytes(8).toString("hex")}`;
    await this.client.leases.create({
      id: leaseId,
      labels: { ...this.leaseLabels, "containerd.io/gc.expire": new Date(Date.now() + PULL_LEASE_EXPIRY_MS).toISOString() },
    });
    let succeeded = false;
    try {
      const result = await work(leaseId);
      succeeded = true;
      return result;
    } finally {
      await this.client.leases.delete({ id: leaseId, sync: !succeeded }, { timeoutMs: 60_000 }).catch((error: unknown) => {
        this.logger.warn({ err: error, leaseId }, "could not delete a pull's lease; containerd drops it when it expires");
      });
    }
  }

  /**
   * Deletes the pull leases carrying every one of `labels` (an earlier process of this agent, killed
   * mid-pull, left them, with their partial downloads, until they expire a day later), collecting at
   * once what they alone kept; call it before this process pulls. Returns how many it deleted.
   */
  async removeLeftoverLeases(labels: Record<string, string>): Promise<number> {
    const filter = Object.entries(labels)
      .map(([key, value]) => `labels."${key}"==${quoteFilterValue(value)}`)
      .join(",");
    const { leases } = await this.client.leases.list({ filters: [filter] });
    const leftovers = leases.filter((lease) => lease.id.startsWith(PULL_LEASE_PREFIX));
    for (const lease of leftovers) await this.client.leases.delete({ id: lease.id, sync: true }, { timeoutMs: 60_000 });
    return leftovers.length;
  }

  /** Aborts the pulls in flight (agent shutdown); they fail and clean up after themselves. */
  close(): void {
    this.closing.abort(new FsbError("unavailable", "the agent is shutting down"));
  }

  private async run(reference: ImageReference, emit: ProgressListener): Promise<PulledImage> {
    const started = Date.now();
    const log = this.logger.child({ image: reference.name });
    log.info("pulling image");
    const progress = new ProgressTracker(reference.name, emit);
    try {
      const pulled = await this.withLease((leaseId) => this.fetchAndUnpack(reference, leaseId, progress));
      log.info({ digest: pulled.digest, bytes: progress.bytesDone, layers: progress.layersTotal, durationMs: Date.now() - started }, "pulled image");
      return pulled;
    } catch (error) {
      log.warn({ err: error, durationMs: Date.now() - started }, "image pull failed");
      throw error;
    }
  }

  private async fetchAndUnpack(reference: ImageReference, leaseId: string, progress: ProgressTracker): Promise<PulledImage> {
    // Aborted when a layer fails for good, so that the others stop downloading. The pull's own:
    // whoever waits on a pull (one create or several) cannot abort it for the others.
    const failed = new AbortController();
    const signal = AbortSignal.any([this.closing.signal, failed.signal]);
    const { name, path } = reference;
    const credentials = await loadRegistryCredentials(this.registryConfigPath, reference.domain);
    const registry = this.registryClient({ registry: reference.domain, ...(credentials ? { credentials } : {}) });

    const tag = reference.digest ?? reference.tag ?? "latest";
    const top = await this.retrying(`the manifest of ${name}`, signal, () => registry.getManifest(path, tag, signal));
    progress.resolved(top.digest);
    const target: Descriptor = { mediaType: top.mediaType, digest: top.digest, size: top.size };
    const topDocument = parseJson(top.bytes, `the manifest of ${name}`);

    let manifestDescriptor = target;
    let manifestBytes = top.bytes;
    let manifestDocument = topDocument;
    if (isIndex(top.mediaType, topDocument)) {
      manifestDescriptor = selectPlatformManifest(topDocument, name, this.architecture);
      const digest = manifestDescriptor.digest;
      const fetched = await this.retrying(digest, signal, () => registry.getManifest(path, digest, signal));
      manifestBytes = fetched.bytes;
      manifestDescriptor = { ...manifestDescriptor, mediaType: manifestDescriptor.mediaType || fetched.mediaType, size: fetched.size };
      manifestDocument = parseJson(fetched.bytes, `the ${manifestDescriptor.digest} manifest of ${name}`);
      if (isIndex(fetched.mediaType, manifestDocument)) throw new FailedPreconditionError(`image ${name}: nested indexes are not supported`);
    }
    const manifest = parseManifest(manifestDocument, name);

    // The config first: small, its platform must be this agent's, and its diff IDs name the
    // snapshots. The lease's before the store is asked for it, as ingestBlob does for the other
    // blobs: one there but referenced by nothing (an image removed, not yet collected) could
    // otherwise be collected between the look and the read.
    await this.client.leases.addResource({ id: leaseId, resource: { id: manifest.config.digest, type: "content" } });
    const configBytes = (await hasContent(this.client, manifest.config.digest))
      ? await this.readContent(manifest.config.digest)
      : await this.retrying(manifest.config.digest, signal, () => this.download(registry, path, manifest.config, signal));
    const config = parseJson(configBytes, `the config of ${name}`);
    checkImagePlatform(config, name, this.architecture);
    const diffIds = parseDiffIds(config, name, manifest.layers.length);

    progress.downloading(manifest.layers);
    const store = (descriptor: Descriptor, ref: string, open: () => Promise<BlobSource>, onBytes?: (bytes: number) => void) =>
      ingestBlob(this.client, descriptor, open, { leaseId, ref, signal, ...(onBytes ? { onBytes } : {}) });
    const fromMemory = (bytes: Uint8Array) => () => Promise.resolve([bytes]);
    if (manifestDescriptor !== target) await store(target, `index-${target.digest}`, fromMemory(top.bytes));
    await store(manifestDescriptor, `manifest-${manifestDescriptor.digest}`, fromMemory(manifestBytes));
    await store(manifest.config, `config-${manifest.config.digest}`, fromMemory(configBytes));
    await runLimited(manifest.layers, this.downloadConcurrency, failed, async (layer, index) => {
      const outcome = await this.retrying(layer.digest, signal, async () => {
        // A retry writes the blob from its start again (ingestBlob aborts a failed ingest).
        progress.restart(index);
        try {
          return await store(
            layer,
            `layer-${layer.digest}`,
            async () => (await registry.getBlob(path, layer.digest, signal)).body,
            (bytes) => progress.bytes(index, bytes),
          );
        } catch (error) {
          // containerd's COMMIT found another digest: "unexpected commit digest …, expected …".
          if (error instanceof FailedPreconditionError && /unexpected commit digest/.test(error.message)) {
            throw new MismatchedBlobError(
              `registry ${registry.registry} served bytes that do not match ${layer.digest}; try again, or check the registry (and any proxy between it and this host)`,
              { cause: error },
            );
          }
          throw error;
        }
      });
      progress.layerDownloaded(index, outcome === "present");
    });

    // Garbage collection follows these labels from the image record down to every blob.
    if (manifestDescriptor !== target) {
      // Labelled by its position in the index, like containerd does, so other platforms' labels stay.
      const position = (topDocument.manifests as { digest?: unknown }[]).findIndex((entry) => entry.digest === manifestDescriptor.digest);
      await this.label(target.digest, { [`containerd.io/gc.ref.content.m.${position}`]: manifestDescriptor.digest }, leaseId);
    }
    await this.label(
      manifestDescriptor.digest,
      {
        "containerd.io/gc.ref.content.config": manifest.config.digest,
        ...Object.fromEntries(manifest.layers.map((layer, i) => [`containerd.io/gc.ref.content.l.${i}`, layer.digest])),
      },
      leaseId,
    );

    progress.unpacking();
    const chain = await unpackLayers(this.client, manifest.layers, diffIds, {
      snapshotter: this.snapshotter,
      leaseId,
      onLayer: () => progress.layerUnpacked(),
    });
    await this.label(manifest.config.digest, { [`containerd.io/gc.ref.snapshot.${this.snapshotter}`]: chain }, leaseId);

    const image = { name, target: { mediaType: target.mediaType, digest: target.digest, size: BigInt(target.size) } };
    try {
      await this.client.images.create({ image }, { leaseId });
    } catch (error) {
      if (!(error instanceof AlreadyExistsError)) throw error;
      await this.client.images.update({ image, updateMask: { paths: ["target"] } }, { leaseId });
    }
    progress.done();
    return { image: name, digest: target.digest };
  }

  /**
   * `fetch` of one blob or manifest (`what`), tried again on a transient failure (FETCH_ATTEMPTS)
   * with a doubling pause; bytes that do not match their digest are fetched once more only.
   */
  private async retrying<T>(what: string, signal: AbortSignal, fetch: () => Promise<T>): Promise<T> {
    let mismatches = 0;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fetch();
      } catch (error) {
        // Another writer holding the ingest past its wait is not going to let go sooner.
        const transient = error instanceof UnavailableError && !/locked/.test(error.message);
        if (error instanceof MismatchedBlobError) mismatches += 1;
        if (!transient || attempt >= FETCH_ATTEMPTS || mismatches > 1 || signal.aborted) throw error;
        this.logger.info({ what, attempt, err: error }, "fetching from the registry failed; trying again");
        await sleep(this.blobRetryDelayMs * 2 ** (attempt - 1), undefined, { signal }).catch(() => undefined);
        // The agent stopping: the pull fails with its reason.
        signal.throwIfAborted();
      }
    }
  }

  /** Small blobs (the config) go through memory: their content is needed, and verified here. */
  private async download(registry: RegistryClient, repository: string, descriptor: Descriptor, signal: AbortSignal): Promise<Uint8Array> {
    if (descriptor.size > CONFIG_MAX_BYTES) throw new FailedPreconditionError(`the image config ${descriptor.digest} is ${descriptor.size} bytes; too large`);
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of (await registry.getBlob(repository, descriptor.digest, signal)).body) {
      size += chunk.byteLength;
      if (size > descriptor.size) break;
      chunks.push(chunk);
    }
    const bytes = Buffer.concat(chunks);
    const [algorithm = "sha256"] = descriptor.digest.split(":");
    const digest = `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}`;
    if (size !== descriptor.size || digest !== descriptor.digest) {
      throw new MismatchedBlobError(
        `registry ${registry.registry} served bytes that do not match ${descriptor.digest} (${size} bytes with digest ${digest}); ` +
          `try again, or check the registry (and any proxy between it and this host)`,
      );
    }
    return bytes;
  }

  private async readContent(digest: string): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    for await (const response of this.client.content.read({ digest })) chunks.push(response.data);
    return Buffer.concat(chunks);
  }

  private async label(digest: string, labels: Record<string, string>, leaseId: string): Promise<void> {
    await this.client.content.update({ info: { digest, labels }, updateMask: { paths: Object.keys(labels).map((key) => `labels.${key}`) } }, { leaseId });
  }
}

/**
 * Runs `work` over the items, at most `limit` at once. The first failure fails the whole: it
 * aborts `failed` (which the work's signal follows), so the work under way stops instead of
 * finishing downloads nobody will use, and the whole fails with it once the others have settled.
 */
async function runLimited<T>(items: readonly T[], limit: number, failed: AbortController, work: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (next < items.length && !failure) {
      const index = next++;
      try {
        await work(items[index] as T, index);
      } catch (error) {
        if (!failure) {
          failure = { error };
          failed.abort(error);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.error;
}

/** Turns the pull's events into ImagePullProgress reports, rate-limited for byte counts. */
class ProgressTracker {
  private phase: ImagePullProgress["phase"] = "resolving";
  private digest = "";
  layersTotal = 0;
  private layersDone = 0;
  private bytesTotal = 0;
  bytesDone = 0;
  private layerSizes: number[] = [];
  private layerBytes: number[] = [];
  private lastEmitMs = 0;

  constructor(
    private readonly image: string,
    private readonly emit: ProgressListener,
  ) {
    this.report(true);
  }

  resolved(digest: string): void {
    this.digest = digest;
    this.report(true);
  }

  downloading(layers: readonly Descriptor[]): void {
    this.phase = "downloading";
    this.layersTotal = layers.length;
    this.layerSizes = layers.map((layer) => layer.size);
    this.layerBytes = layers.map(() => 0);
    this.bytesTotal = this.layerSizes.reduce((sum, size) => sum + size, 0);
    this.report(true);
  }

  /** A layer's download starts again: what it counted so far is taken back. */
  restart(index: number): void {
    this.bytesDone -= this.layerBytes[index] ?? 0;
    this.layerBytes[index] = 0;
  }

  bytes(index: number, count: number): void {
    this.layerBytes[index] = (this.layerBytes[index] ?? 0) + count;
    this.bytesDone += count;
    this.report(false);
  }

  layerDownloaded(index: number, wasPresent: boolean): void {
    // A layer the store already had counts as downloaded, bytes included.
    if (wasPresent) this.bytesDone += (this.layerSizes[index] ?? 0) - (this.layerBytes[index] ?? 0);
    this.layersDone += 1;
    this.report(true);
  }

  unpacking(): void {
    this.phase = "unpacking";
    this.layersDone = 0;
    this.report(true);
  }

  layerUnpacked(): void {
    this.layersDone += 1;
    this.report(true);
  }

  done(): void {
    this.phase = "done";
    this.report(true);
  }

  private report(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.lastEmitMs < PROGRESS_INTERVAL_MS) return;
    this.lastEmitMs = now;
    this.emit({
      image: this.image,
      phase: this.phase,
      layersTotal: this.layersTotal,
      layersDone: this.layersDone,
      bytesTotal: this.bytesTotal,
      bytesDone: this.bytesDone,
      digest: this.digest,
    });
  }
}
