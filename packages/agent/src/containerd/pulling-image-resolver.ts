/**
 * The create path's image lookup: the ImageResolver over containerd's image store, which pulls
 * what is missing. A reference is looked up as written (images imported under any name keep
 * working), then under its normalized name (`busybox` → `docker.io/library/busybox:latest`, the
 * name pulls store images under), and only then pulled. An image whose record exists but whose
 * layers are not unpacked for the snapshotter (imported without unpacking, or its snapshots
 * removed) is unpacked again. Resolutions are cached per normalized name, so concurrent creates of
 * a missing image wait for one pull, the hot path pays nothing once it is there, and every
 * spelling of a name (`busybox`, `busybox:latest`, `docker.io/library/busybox:latest`) shares one
 * resolution: a pull of any of them forgets it, so none keeps the digest from before the pull (the
 * prepared instances of the new one would be thrown away as stale on every claim).
 */
import { FsbError, NotFoundError, TimeoutError, UnavailableError, UpstreamUnavailableError, normalizeImageName } from "@fast-sandbox/api/core";
import type { PullImageOptions, PulledImage } from "../runtime/runtime.js";
import type { ImagePuller } from "./image-puller.js";
import type { ImageResolver, ResolvedImage } from "./image-resolver.js";
import { hasSnapshot } from "./image-unpacker.js";
import type { ContainerdClient } from "./containerd-client.js";

export class PullingImageResolver {
  private readonly cache = new Map<string, Promise<ResolvedImage>>();

  constructor(
    private readonly client: ContainerdClient,
    private readonly snapshotter: string,
    private readonly resolver: ImageResolver,
    private readonly puller: ImagePuller,
  ) {}

  resolve(reference: string): Promise<ResolvedImage> {
    const key = normalizeImageName(reference);
    let resolved = this.cache.get(key);
    if (!resolved) {
      resolved = this.load(reference);
      this.cache.set(key, resolved);
      // A failure is not cached: the next create tries again (the registry may be back).
      resolved.catch(() => this.cache.delete(key));
    }
    return resolved;
  }

  /** Forgets a reference, under every spelling (its snapshot turned out to be missing, or it was pulled anew). */
  forget(reference: string): void {
    const normalized = normalizeImageName(reference);
    this.cache.delete(normalized);
    for (const name of new Set([reference, normalized])) this.resolver.forget(name);
  }

  /** Pulls the image from its registry (also when present: a tag may have moved), then forgets stale resolutions. */
  async pull(reference: string, options: PullImageOptions = {}): Promise<PulledImage> {
    let pulled: PulledImage;
    try {
      pulled = await this.puller.pull(reference, options.onProgress);
    } catch (error) {
      // The control plane pulls an image its agent does not report before a create: one whose
      // registry cannot be reached (a name only ever imported, as fast-sandbox.io/base) and that is
      // not here either is said as a create's own lookup says it (how to import it), then the pull's
      // failure. A registry that answered (no such tag) said all there is.
      if (!(error instanceof UnavailableError)) throw error;
      let missing: NotFoundError | undefined;
      const found = await this.lookUp(reference, (notFound) => (missing = notFound)).catch(() => undefined);
      throw missing && !found ? rephrased(error, `${missing.message}; pulling it failed: ${error.message}`) : error;
    }
    this.forget(reference);
    this.forget(pulled.image);
    return pulled;
  }

  private async load(reference: string): Promise<ResolvedImage> {
    let missing: NotFoundError | undefined;
    const found = (await this.lookUp(reference, (error) => (missing = error))) ?? (await this.lookUp(normalizeImageName(reference)));
    if (found) {
      if (await hasSnapshot(this.client, this.snapshotter, found.chainId)) return found;
      // The record is there but not its unpacked layers: unpack what the store holds, or pull what it lacks.
      try {
        await this.puller.unpack(found.reference);
      } catch (error) {
        if (!(error instanceof NotFoundError)) throw error;
        await this.puller.pull(found.reference);
      }
      this.resolver.forget(found.reference);
      return this.resolver.resolve(found.reference);
    }
    let pulled: PulledImage;
    try {
      pulled = await this.puller.pull(reference);
    } catch (error) {
      // The pull's failure alone would hide that the image was looked for here first, and how to import it.
      throw missing && error instanceof FsbError ? rephrased(error, `${missing.message}; pulling it failed: ${error.message}`) : error;
    }
    return this.resolver.resolve(pulled.image);
  }

  private async lookUp(name: string, whenMissing?: (error: NotFoundError) => void): Promise<ResolvedImage | undefined> {
    try {
      return await this.resolver.resolve(name);
    } catch (error) {
      if (!(error instanceof NotFoundError)) throw error;
      whenMissing?.(error);
      return undefined;
    }
  }
}

/** `error` saying `message` instead: of the same code (and class, for those a pull throws). */
function rephrased(error: FsbError, message: string): FsbError {
  if (error instanceof NotFoundError) return new NotFoundError(message, { cause: error });
  if (error instanceof UpstreamUnavailableError) return new UpstreamUnavailableError(message, { cause: error });
  if (error instanceof UnavailableError) return new UnavailableError(message, { cause: error });
  if (error instanceof TimeoutError) return new TimeoutError(message, { cause: error });
  return new FsbError(error.code, message, { cause: error });
}
