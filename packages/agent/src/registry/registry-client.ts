/**
 * A client of one OCI registry over the distribution HTTP API (`/v2/<repository>/manifests/…`
 * and `/blobs/…`) with Node's fetch. It answers the registry's `WWW-Authenticate` challenge: the
 * bearer token flow (a token from the challenge's realm, with Basic credentials when there are
 * any) or plain Basic auth. Loopback registries (127.0.0.0/8, localhost, [::1]) are spoken to over
 * plain HTTP, every other one over HTTPS.
 *
 * The one place where registry answers become FsbErrors: an unknown image is NotFoundError,
 * refused credentials UnauthenticatedError/PermissionDeniedError (with the `fsb login` to run), an
 * unreachable or failing registry UnavailableError.
 */
import { createHash } from "node:crypto";
import {
  DOCKER_HUB_DOMAIN,
  FailedPreconditionError,
  FsbError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
} from "@fast-sandbox/api/core";
import { parseAuthChallenges, type AuthChallenge } from "./auth-challenge.js";
import type { RegistryCredentials } from "./registry-credentials.js";

export const MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
const MANIFEST_ACCEPT = [MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST].join(", ");
/** How the agent introduces itself to registries (and shows in their access logs). */
export const USER_AGENT = "fast-sandbox-agent";
/** The distribution server refuses larger manifests too. */
const MANIFEST_MAX_BYTES = 4 * 1024 * 1024;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;
const ERROR_DETAIL_TIMEOUT_MS = 3000;

export interface RegistryClientOptions {
  /** The registry host as image references name it: `docker.io`, `ghcr.io`, `127.0.0.1:5000`. */
  registry: string;
  /** Sent when the registry asks for them; anonymous otherwise. */
  credentials?: RegistryCredentials;
  /** How long a request may take to answer with its headers. @default 30_000 */
  requestTimeoutMs?: number;
  /** Longest pause between two chunks of a blob before the download is given up. @default 60_000 */
  idleTimeoutMs?: number;
  /** @default globalThis.fetch (tests inject their own) */
  fetch?: typeof fetch;
}

export interface FetchedManifest {
  mediaType: string;
  /** sha256 of the bytes as served (verified against the reference when it is a digest). */
  digest: string;
  size: number;
  bytes: Uint8Array;
}

export interface BlobStream {
  /** Content-Length, when the registry sent one. */
  size?: number;
  body: AsyncIterable<Uint8Array>;
}

/** True for hosts on this machine's loopback, which are spoken to over plain HTTP. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.startsWith("[") ? registry.slice(0, registry.indexOf("]") + 1) : registry.replace(/:\d+$/, "");
  return host === "localhost" || host === "[::1]" || /^127(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}$/.test(host);
}

/** Base URL of a registry's API: Docker Hub is served from registry-1.docker.io. */
export function registryBaseUrl(registry: string): string {
  if (registry === DOCKER_HUB_DOMAIN) return "https://registry-1.docker.io";
  return `${isLoopbackRegistry(registry) ? "http" : "https"}://${registry}`;
}

export class RegistryClient {
  readonly registry: string;
  readonly baseUrl: string;
  private readonly credentials: RegistryCredentials | undefined;
  private readonly requestTimeoutMs: number;
  private readonly idleTimeoutMs: number;
  private readonly fetch: typeof fetch;
  /** Authorization header per repository scope, once a challenge was answered. */
  private readonly authorizations = new Map<string, string>();

  constructor(options: RegistryClientOptions) {
    this.registry = options.registry;
    this.baseUrl = registryBaseUrl(options.registry);
    this.credentials = options.credentials;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
    this.fetch = options.fetch ?? globalThis.fetch;
  }

  /** Fetches a manifest or index by tag or digest. */
  async getManifest(repository: string, reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const image = `${this.registry}/${repository}${reference.includes(":") ? "@" : ":"}${reference}`;
    const response = await this.request(repository, `/v2/${repository}/manifests/${reference}`, { accept: MANIFEST_ACCEPT }, signal);
    try {
      if (response.status === 404) {
        const what = reference.includes(":") ? `manifest ${reference}` : `tag "${reference}"`;
        throw new NotFoundError(
          `image ${image} not found: the registry has no ${what} in repository ${repository}${await errorDetail(response)}; check the image name and tag`,
        );
      }
      if (!response.ok) throw await this.failure(response, repository, `fetching the manifest of ${image}`);
      const length = Number(response.headers.get("content-length") ?? "0");
      if (length > MANIFEST_MAX_BYTES)
        throw new FailedPreconditionError(`the manifest of ${image} is ${length} bytes; at most ${MANIFEST_MAX_BYTES} are accepted`);
      const bytes = new Uint8Array(await this.readBounded(response, (r) => r.arrayBuffer()));
      if (bytes.byteLength > MANIFEST_MAX_BYTES) {
        throw new FailedPreconditionError(`the manifest of ${image} is larger than ${MANIFEST_MAX_BYTES} bytes`);
      }
      const algorithm = reference.startsWith("sha512:") ? "sha512" : "sha256";
      const digest = `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}`;
      if (reference.includes(":") && digest !== reference) {
        throw new FsbError("internal", `registry ${this.registry} served content with digest ${digest} for ${image}; refusing it`);
      }
      const mediaType = manifestMediaType(bytes, response.headers.get("content-type"));
      if (mediaType.startsWith("application/vnd.docker.distribution.manifest.v1")) {
        throw new FailedPreconditionError(`${image} is a Docker schema 1 image, which is not supported; push it again with a current client`);
      }
      return { mediaType, digest, size: bytes.byteLength, bytes };
    } catch (error) {
      await response.body?.cancel().catch(() => undefined);
      throw error;
    }
  }

  /** Streams a blob (config or layer); the caller verifies its digest. */
  async getBlob(repository: string, digest: string, signal?: AbortSignal): Promise<BlobStream> {
    const controller = new AbortController();
    const combined = signal ? AbortSignal.any([signal, controller.signal]) : controller.signal;
    const response = await this.request(repository, `/v2/${repository}/blobs/${digest}`, {}, combined);
    if (response.status === 404) {
      await response.body?.cancel().catch(() => undefined);
      throw new NotFoundError(`registry ${this.registry} has no blob ${digest} in repository ${repository}, although the image's manifest names it`);
    }
    if (!response.ok || !response.body) throw await this.failure(response, repository, `fetching blob ${digest}`);
    const length = response.headers.get("content-length");
    return {
      ...(length !== null && /^\d+$/.test(length) ? { size: Number(length) } : {}),
      body: this.idleGuarded(response.body, controller, `blob ${digest} from ${this.registry}`),
    };
  }

  private async *idleGuarded(body: ReadableStream<Uint8Array>, controller: AbortController, what: string): AsyncGenerator<Uint8Array> {
    const reader = body.getReader();
    let timer: NodeJS.Timeout | undefined;
    const stalled = new UnavailableError(`the registry sent nothing of ${what} for ${this.idleTimeoutMs / 1000} s; try again`);
    let timedOut = false;
    try {
      for (;;) {
        timer = setTimeout(() => {
          timedOut = true;
          controller.abort(stalled);
        }, this.idleTimeoutMs);
        let result: Awaited<ReturnType<typeof reader.read>>;
        try {
          result = await reader.read();
        } catch (error) {
          if (timedOut) throw stalled;
          throw this.unreachable(error);
        } finally {
          clearTimeout(timer);
        }
        if (result.done) return;
        yield result.value;
      }
    } finally {
      clearTimeout(timer);
      await reader.cancel().catch(() => undefined);
    }
  }

  /** One request, answering at most one authentication challenge. */
  private async request(repository: string, path: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Response> {
    const url = `${this.baseUrl}${path}`;
    const authorization = this.authorizations.get(repository);
    let response = await this.send(url, { ...headers, ...(authorization ? { authorization } : {}) }, signal);
    if (response.status !== 401) return response;
    const challenges = parseAuthChallenges(response.headers.get("www-authenticate") ?? "");
    await response.body?.cancel().catch(() => undefined);
    const answer = await this.answer(challenges, repository, signal);
    if (!answer) throw this.refused(repository, this.credentials !== undefined);
    this.authorizations.set(repository, answer);
    response = await this.send(url, { ...headers, authorization: answer }, signal);
    if (response.status === 401) {
      await response.body?.cancel().catch(() => undefined);
      throw this.refused(repository, this.credentials !== undefined);
    }
    return response;
  }

  /**
   * One request, following redirects by hand: only to HTTPS, or to plain HTTP on loopback, and with
   * the Authorization header only on the same origin (registries send blobs to storage elsewhere).
   */
  private async send(url: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Response> {
    let target = new URL(url);
    const origin = target.origin;
    for (let hop = 0; ; hop++) {
      const sameOrigin = target.origin === origin;
      const { authorization: _authorization, ...withoutAuthorization } = headers;
      const response = await this.sendOnce(target.toString(), sameOrigin ? headers : withoutAuthorization, signal);
      const location = REDIRECT_STATUSES.has(response.status) ? response.headers.get("location") : null;
      if (location === null) return response;
      await response.body?.cancel().catch(() => undefined);
      const next = new URL(location, target);
      if (hop >= MAX_REDIRECTS) throw this.unreachable(new Error(`more than ${MAX_REDIRECTS} redirects from ${url}`));
      if (next.protocol !== "https:" && !(next.protocol === "http:" && isLoopbackRegistry(next.host))) {
        throw this.unreachable(new Error(`redirected to ${next.origin}, which is neither HTTPS nor on loopback; refusing to follow`));
      }
      target = next;
    }
  }

  private async sendOnce(url: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Response> {
    // The timeout covers the wait for the headers only; bodies are read within readBounded() or,
    // for blobs, under their own idle guard.
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), this.requestTimeoutMs);
    try {
      return await this.fetch(url, {
        headers: { "user-agent": USER_AGENT, ...headers },
        signal: signal ? AbortSignal.any([signal, timeout.signal]) : timeout.signal,
        redirect: "manual",
      });
    } catch (error) {
      if (signal?.aborted && !timeout.signal.aborted) throw error;
      throw this.unreachable(timeout.signal.aborted ? new Error(`no answer within ${this.requestTimeoutMs / 1000} s`) : error);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads a (small) body within the request timeout: a registry that stalls mid-body must not hang the pull. */
  private async readBounded<T>(response: Response, read: (response: Response) => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const stalled = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        void response.body?.cancel().catch(() => undefined);
        reject(this.unreachable(new Error(`the answer's body did not arrive within ${this.requestTimeoutMs / 1000} s`)));
      }, this.requestTimeoutMs);
    });
    try {
      return await Promise.race([read(response), stalled]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The Authorization header that answers a challenge, or undefined when there is nothing to answer with. */
  private async answer(challenges: AuthChallenge[], repository: string, signal?: AbortSignal): Promise<string | undefined> {
    const bearer = challenges.find((c) => c.scheme === "bearer" && c.params.realm);
    if (bearer) return `Bearer ${await this.token(bearer, repository, signal)}`;
    if (challenges.some((c) => c.scheme === "basic") && this.credentials) return basicAuthorization(this.credentials);
    return undefined;
  }

  /** The token flow: GET <realm>?service=…&scope=repository:<repo>:pull, with Basic credentials when there are any. */
  private async token(challenge: AuthChallenge, repository: string, signal?: AbortSignal): Promise<string> {
    let url: URL;
    try {
      url = new URL(challenge.params.realm ?? "");
    } catch {
      throw new UnavailableError(`registry ${this.registry} named an invalid token realm ${JSON.stringify(challenge.params.realm)}`);
    }
    if (url.protocol !== "https:" && !(url.protocol === "http:" && isLoopbackRegistry(url.host))) {
      throw new UnavailableError(
        `registry ${this.registry} asks for a token from ${url.origin}, which is neither HTTPS nor on loopback; refusing to send credentials there`,
      );
    }
    if (challenge.params.service) url.searchParams.set("service", challenge.params.service);
    url.searchParams.set("scope", `repository:${repository}:pull`);
    const response = await this.send(url.toString(), this.credentials ? { authorization: basicAuthorization(this.credentials) } : {}, signal);
    if (response.status === 401 || response.status === 403) {
      await response.body?.cancel().catch(() => undefined);
      throw this.refused(repository, this.credentials !== undefined);
    }
    if (!response.ok) throw await this.failure(response, repository, "getting a token");
    let body: { token?: unknown; access_token?: unknown };
    try {
      body = (await this.readBounded(response, (r) => r.json())) as typeof body;
    } catch (error) {
      throw new UnavailableError(`the token service of registry ${this.registry} answered with something that is not JSON`, { cause: error });
    }
    const token = typeof body.token === "string" && body.token ? body.token : body.access_token;
    if (typeof token !== "string" || !token) throw new UnavailableError(`the token service of registry ${this.registry} answered without a token`);
    return token;
  }

  private refused(repository: string, hadCredentials: boolean): FsbError {
    if (hadCredentials && this.credentials) {
      return new UnauthenticatedError(
        `registry ${this.registry} refused the credentials of user "${this.credentials.username}" for ${repository}: ` +
          `run 'fsb login ${this.registry} -u USER --password-stdin' with a user and password it accepts`,
      );
    }
    return new UnauthenticatedError(
      `registry ${this.registry} requires credentials for ${repository} (or it does not exist there): run 'fsb login ${this.registry} -u USER --password-stdin'`,
    );
  }

  private async failure(response: Response, repository: string, what: string): Promise<FsbError> {
    const detail = await errorDetail(response);
    if (response.status === 403) {
      const user = this.credentials ? `user "${this.credentials.username}"` : "anonymous pulls";
      return new PermissionDeniedError(
        `registry ${this.registry} denied ${user} access to ${repository}${detail}: run 'fsb login ${this.registry} -u USER --password-stdin' as a user allowed to pull it`,
      );
    }
    if (response.status === 429) return new UnavailableError(`registry ${this.registry} is rate limiting pulls${detail}; try again later`);
    if (response.status >= 500) return new UnavailableError(`registry ${this.registry} failed ${what} (HTTP ${response.status})${detail}; try again later`);
    return new FsbError("internal", `registry ${this.registry} answered HTTP ${response.status} ${what}${detail}`);
  }

  private unreachable(error: unknown): UnavailableError {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    const reason = cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error));
    return new UnavailableError(
      `registry ${this.registry} is unreachable at ${this.baseUrl} (${reason}); check the image's registry name, that the registry is up and that this host reaches it`,
      { cause: error },
    );
  }
}

function basicAuthorization(credentials: RegistryCredentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;
}

/** The media type a manifest declares in its body, else the Content-Type the registry sent. */
function manifestMediaType(bytes: Uint8Array, contentType: string | null): string {
  try {
    const parsed = JSON.parse(Buffer.from(bytes).toString("utf8")) as { mediaType?: unknown; manifests?: unknown };
    if (typeof parsed.mediaType === "string" && parsed.mediaType) return parsed.mediaType;
    if (Array.isArray(parsed.manifests)) return MEDIA_TYPE_OCI_INDEX;
  } catch {
    throw new FailedPreconditionError("the registry served a manifest that is not JSON");
  }
  return (contentType ?? MEDIA_TYPE_OCI_MANIFEST).split(";")[0]?.trim() || MEDIA_TYPE_OCI_MANIFEST;
}

/** ` (CODE: message)` from a registry's JSON error body, or "". */
async function errorDetail(response: Response): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  try {
    // Only a detail for a message: a body that does not arrive within a few seconds is skipped.
    const stalled = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        void response.body?.cancel().catch(() => undefined);
        reject(new Error("no body"));
      }, ERROR_DETAIL_TIMEOUT_MS);
    });
    const text = (await Promise.race([response.text(), stalled])).slice(0, 4096);
    const body = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    const first = body.errors?.[0];
    if (first) return ` (${[first.code, first.message].filter(Boolean).join(": ")})`;
  } catch {
    // not JSON, or no body
  } finally {
    clearTimeout(timer);
  }
  return "";
}
