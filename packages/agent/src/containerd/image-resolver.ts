/**
 * Resolves an image reference in containerd's image store into what the create path needs:
 * the image's process defaults (Entrypoint, Cmd, Env, WorkingDir, User) and the chain ID of
 * its layers, i.e. the parent of the sandbox's snapshot. Results are cached per reference, so
 * the hot path pays for it once per image. A reference re-imported with other content keeps its
 * cached resolution until `forget()` (called when its snapshot is missing) or an agent restart.
 * Of a multi-platform index it reads the manifest the puller stores (selectPlatformManifest, for
 * the same architecture): any other entry's blobs need not be in the store.
 */
import { NotFoundError, FsbError } from "@fast-sandbox/api/core";
import type { ContainerdClient } from "./containerd-client.js";
import { chainId } from "./chain-id.js";
import { isIndex, selectPlatformManifest } from "./image-manifest.js";

/** The parts of an OCI image config the runtime uses. */
export interface ImageConfig {
  entrypoint: string[];
  cmd: string[];
  env: string[];
  workingDir: string;
  user: string;
}

export interface ResolvedImage {
  reference: string;
  /** Digest of the image's target (index or manifest). */
  targetDigest: string;
  config: ImageConfig;
  /** Parent snapshot key of every sandbox of this image. */
  chainId: string;
}

export interface ImageResolverOptions {
  /** Platform architecture of an index's manifest (Go's name): the ImagePuller's. @default this machine's */
  architecture?: string;
}

interface Descriptor {
  mediaType?: string;
  digest: string;
}

export class ImageResolver {
  private readonly cache = new Map<string, Promise<ResolvedImage>>();
  private readonly architecture: string | undefined;

  constructor(
    private readonly client: ContainerdClient,
    private readonly importHint: string,
    options: ImageResolverOptions = {},
  ) {
    this.architecture = options.architecture;
  }

  resolve(reference: string): Promise<ResolvedImage> {
    let resolved = this.cache.get(reference);
    if (!resolved) {
      resolved = this.load(reference);
      this.cache.set(reference, resolved);
      // A failed resolution is not cached: the image may be imported a moment later.
      resolved.catch(() => this.cache.delete(reference));
    }
    return resolved;
  }

  /** Forgets a reference, e.g. when its snapshot turned out to be missing (image removed or re-tagged). */
  forget(reference: string): void {
    this.cache.delete(reference);
  }

  private async load(reference: string): Promise<ResolvedImage> {
    let target: Descriptor;
    try {
      const { image } = await this.client.images.get({ name: reference });
      if (!image?.target) throw new NotFoundError(`image "${reference}" has no target`);
      target = {
        mediaType: image.target.mediaType,
        digest: image.target.digest,
      };
    } catch (error) {
      if (error instanceof NotFoundError) {
        throw new NotFoundError(`image "${reference}" is not in containerd namespace "${this.client.namespace}"; ${this.importHint}`, { cause: error });
      }
      throw error;
    }

    let manifestDescriptor = target;
    let document = await this.readJson(target.digest);
    if (isIndex(target.mediaType ?? "", document)) {
      // As the puller picks it: with `linux/amd64/v3` listed before `linux/amd64`, the first
      // entry for the architecture is not the one pulled, and its blobs are not in the store.
      manifestDescriptor = selectPlatformManifest(document, reference, this.architecture);
      document = await this.readJson(manifestDescriptor.digest);
    }
    const configDescriptor = document.config as Descriptor | undefined;
    if (!configDescriptor?.digest) {
      throw new FsbError("invalid_argument", `image "${reference}": manifest ${manifestDescriptor.digest} has no config`);
    }
    const imageConfig = await this.readJson(configDescriptor.digest);
    const config = (imageConfig.config ?? {}) as Record<string, unknown>;
    const rootfs = (imageConfig.rootfs ?? {}) as { diff_ids?: string[] };
    const diffIds = rootfs.diff_ids ?? [];
    if (diffIds.length === 0) {
      throw new FsbError("invalid_argument", `image "${reference}" has no layers`);
    }
    return {
      reference,
      targetDigest: target.digest,
      chainId: chainId(diffIds),
      config: {
        entrypoint: stringArray(config.Entrypoint),
        cmd: stringArray(config.Cmd),
        env: stringArray(config.Env),
        workingDir: typeof config.WorkingDir === "string" ? config.WorkingDir : "",
        user: typeof config.User === "string" ? config.User : "",
      },
    };
  }

  private async readJson(digest: string): Promise<Record<string, unknown>> {
    const chunks: Uint8Array[] = [];
    for await (const response of this.client.content.read({ digest })) chunks.push(response.data);
    return JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
  }
}

function stringArray(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === "string") : [];
}
