/**
 * A client of one OCI registry over the distribution HTTP API (`/v2/<repository>/manifests/…`
 * and `/blobs/…`) with Node's fetch. It answers the registry's `WWW-Authenticate` challenge: the
 * bearer token flow (a token from the challenge's realm, with Basic credentials when there are
 * any) or plain Basic auth. Loopback registries (127.0.0.0/8, localhost, [::1]) are spoken to over
 * plain HTTP, every other one over HTTPS.
 *
 * A registry is not trusted beyond what a pull needs: the small answers read into memory
 * (manifests, tokens, error bodies) are read up to a limit and within a deadline, and stop the
 * download past either; redirects and token realms lead only to HTTPS, and to this host (loopback,
 * its own interface addresses, by whatever name resolves to them) or plain HTTP only from a
 * registry on loopback itself; a host other than the registry's is resolved once, checked, and
 * connected to at the addresses checked (pinned-fetch.ts); credentials answer only the registry's
 * own challenges, never one from a host a redirect led to.
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
  UpstreamUnavailableError,
} from "@fast-sandbox/api/core";
import { parseAuthChallenges, type AuthChallenge } from "./auth-challenge.js";
import { isLoopbackAddress, pinnedFetch, resolveHost, systemLookup, thisHostAddress, type HostLookup, type ResolvedAddress } from "./pinned-fetch.js";
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
/** A token service's answer (a JWT of a few KiB, sometimes with a refresh token). */
const TOKEN_ANSWER_MAX_BYTES = 1024 * 1024;
/** Only the start of an error body is shown in a message. */
const ERROR_DETAIL_MAX_BYTES = 4096;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;
const ERROR_DETAIL_TIMEOUT_MS = 3000;
/** A bearer token as RFC 6750 allows it (b64token): anything else must not reach a header, nor a message. */
const BEARER_TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
/** The media type of Docker's schema 1 manifests (`…v1+json`, `…v1+prettyjws`). */
const MEDIA_TYPE_DOCKER_SCHEMA1_PREFIX = "application/vnd.docker.distribution.manifest.v1";

export interface RegistryClientOptions {
  /** The registry host as image references name it: `docker.io`, `ghcr.io`, `127.0.0.1:5000`. */
  registry: string;
  /** Sent when the registry asks for them; anonymous otherwise. */
  credentials?: RegistryCredentials;
  /** How long a request may take to answer with its headers. @default 30_000 */
  requestTimeoutMs?: number;
  /** Longest pause between two chunks of a blob before the download is given up. @default 60_000 */
  idleTimeoutMs?: number;
  /**
   * Every request, pinned or not (tests inject their own). @default globalThis.fetch for the
   * registry's own host, pinnedFetch() for a host it sends the agent to
   */
  fetch?: typeof fetch;
  /** Resolves the host of a redirect or token realm elsewhere than the registry. @default the system's resolver */
  lookup?: HostLookup;
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

/** How one request is sent. */
interface SendOptions {
  signal?: AbortSignal | undefined;
  /** The checked addresses of the URL's host to connect to; none for the registry's own host. */
  addresses?: readonly ResolvedAddress[] | undefined;
  /** The request is for a token (named so when its host is unreachable). */
  token?: boolean;
}

/** Where a redirect or token realm may lead: refused, or the addresses to connect to (none: resolved as usual). */
type Route = { refusal: string } | { addresses?: readonly ResolvedAddress[] };

/** A registry's answer to one request, after any redirects. */
interface Answer {
  response: Response;
  /** Where the answer came from: the last redirect's target, or the URL asked for. */
  url: URL;
  /**
   * Aborts the fetch, so nothing more of the body is downloaded. Cancelling the body alone does
   * nothing once a reader holds it, and the header timeout is over by then.
   */
  abort(): void;
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
  /** The registry's own host (the API's: registry-1.docker.io for docker.io), where the agent goes as the user named it. */
  private readonly baseHost: string;
  private readonly baseOrigin: string;
  /** Only a registry on loopback (spoken to over plain HTTP) may lead the agent to loopback or plain HTTP. */
  private readonly onLoopback: boolean;
  private readonly credentials: RegistryCredentials | undefined;
  private readonly requestTimeoutMs: number;
  private readonly idleTimeoutMs: number;
  private readonly fetch: typeof fetch;
  /** The fetch for a host elsewhere, connecting to the addresses checked. */
  private readonly fetchAt: (addresses: readonly ResolvedAddress[]) => typeof fetch;
  private readonly lookup: HostLookup;
  /** Authorization header per repository scope, once a challenge was answered. */
  private readonly authorizations = new Map<string, string>();

  constructor(options: RegistryClientOptions) {
    this.registry = options.registry;
    this.baseUrl = registryBaseUrl(options.registry);
    const base = new URL(this.baseUrl);
    this.baseHost = base.hostname;
    this.baseOrigin = base.origin;
    this.onLoopback = isLoopbackRegistry(options.registry);
    this.credentials = options.credentials;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
    this.fetch = options.fetch ?? globalThis.fetch;
    const injected = options.fetch;
    this.fetchAt = injected ? () => injected : pinnedFetch;
    this.lookup = options.lookup ?? systemLookup;
  }

  /** Fetches a manifest or index by tag or digest. */
  async getManifest(repository: string, reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const image = `${this.registry}/${repository}${reference.includes(":") ? "@" : ":"}${reference}`;
    const answer = await this.request(repository, `/v2/${repository}/manifests/${reference}`, { accept: MANIFEST_ACCEPT }, signal);
    const { response } = answer;
    try {
      if (response.status === 404) {
        const what = reference.includes(":") ? `manifest ${reference}` : `tag "${reference}"`;
        throw new NotFoundError(
          `image ${image} not found: the registry has no ${what} in repository ${repository}${await errorDetail(answer)}; check the image name and tag`,
        );
      }
      if (!response.ok) throw await this.failure(answer, repository, `fetching the manifest of ${image}`);
      const length = Number(response.headers.get("content-length") ?? "0");
      if (length > MANIFEST_MAX_BYTES)
        throw new FailedPreconditionError(`the manifest of ${image} is ${length} bytes; at most ${MANIFEST_MAX_BYTES} are accepted`);
      const { bytes, complete } = await this.readBody(answer, MANIFEST_MAX_BYTES, signal);
      if (!complete) throw new FailedPreconditionError(`the manifest of ${image} is larger than ${MANIFEST_MAX_BYTES} bytes`);
      const algorithm = reference.startsWith("sha512:") ? "sha512" : "sha256";
      const digest = `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}`;
      if (reference.includes(":") && digest !== reference) {
        throw new FsbError("internal", `registry ${this.registry} served content with digest ${digest} for ${image}; refusing it`);
      }
      const mediaType = manifestMediaType(bytes, response.headers.get("content-type"));
      if (mediaType.startsWith(MEDIA_TYPE_DOCKER_SCHEMA1_PREFIX)) {
        throw new FailedPreconditionError(`${image} is a Docker schema 1 image, which is not supported; push it again with a current client`);
      }
      return { mediaType, digest, size: bytes.byteLength, bytes };
    } catch (error) {
      await discard(answer);
      throw error;
    }
  }

  /** Streams a blob (config or layer); the caller verifies its digest. */
  async getBlob(repository: string, digest: string, signal?: AbortSignal): Promise<BlobStream> {
    const controller = new AbortController();
    const combined = signal ? AbortSignal.any([signal, controller.signal]) : controller.signal;
    const answer = await this.request(repository, `/v2/${repository}/blobs/${digest}`, {}, combined);
    const { response } = answer;
    if (response.status === 404) {
      await discard(answer);
      throw new NotFoundError(`registry ${this.registry} has no blob ${digest} in repository ${repository}, although the image's manifest names it`);
    }
    if (!response.ok || !response.body) throw await this.failure(answer, repository, `fetching blob ${digest}`);
    const length = response.headers.get("content-length");
    return {
      ...(length !== null && /^\d+$/.test(length) ? { size: Number(length) } : {}),
      body: this.idleGuarded(response.body, controller, `blob ${digest} from ${this.registry}`, answer.url),
    };
  }

  private async *idleGuarded(body: ReadableStream<Uint8Array>, controller: AbortController, what: string, from: URL): AsyncGenerator<Uint8Array> {
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
          throw this.unreachable(error, from);
        } finally {
          clearTimeout(timer);
        }
        if (result.done) return;
        yield result.value;
      }
    } finally {
      clearTimeout(timer);
      await reader.cancel().catch(() => undefined);
      // A consumer that stops early (a blob longer than its descriptor) ends the download too.
      controller.abort();
    }
  }

  /**
   * One request, answering at most one authentication challenge: the registry's own. A 401 from a
   * host a redirect led to (blob storage) is not answered with the registry's credentials.
   */
  private async request(repository: string, path: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Answer> {
    const url = new URL(`${this.baseUrl}${path}`);
    const authorization = this.authorizations.get(repository);
    let answer = await this.send(url, { ...headers, ...(authorization ? { authorization } : {}) }, { signal });
    if (answer.response.status !== 401) return answer;
    await discard(answer);
    if (answer.url.origin !== url.origin) throw this.challengedElsewhere(answer.url, url);
    const challenges = parseAuthChallenges(answer.response.headers.get("www-authenticate") ?? "");
    const value = await this.answer(challenges, repository, signal);
    if (!value) throw this.refused(repository, this.credentials !== undefined);
    this.authorizations.set(repository, value);
    answer = await this.send(url, { ...headers, authorization: value }, { signal });
    if (answer.response.status === 401) {
      await discard(answer);
      if (answer.url.origin !== url.origin) throw this.challengedElsewhere(answer.url, url);
      // The token was granted, but not for this repository (Docker Hub: no such repository, or
      // one the user may not pull): not a matter of wrong credentials.
      const again = parseAuthChallenges(answer.response.headers.get("www-authenticate") ?? "");
      if (this.credentials && again.some((c) => c.scheme === "bearer" && c.params.error === "insufficient_scope")) {
        throw this.outOfScope(repository, this.credentials.username);
      }
      throw this.refused(repository, this.credentials !== undefined);
    }
    return answer;
  }

  /**
   * One request, following redirects by hand: only where route() allows, and with the
   * Authorization header only on the same origin (registries send blobs to storage elsewhere).
   */
  private async send(url: URL, headers: Record<string, string>, options: SendOptions): Promise<Answer> {
    let target = url;
    let addresses = options.addresses;
    for (let hop = 0; ; hop++) {
      const sameOrigin = target.origin === url.origin;
      const { authorization: _authorization, ...withoutAuthorization } = headers;
      const answer = await this.sendOnce(target, sameOrigin ? headers : withoutAuthorization, { ...options, addresses });
      const location = REDIRECT_STATUSES.has(answer.response.status) ? answer.response.headers.get("location") : null;
      if (location === null) return answer;
      await discard(answer);
      const next = new URL(location, target);
      if (hop >= MAX_REDIRECTS) throw this.unreachable(new Error(`more than ${MAX_REDIRECTS} redirects from ${url.toString()}`));
      const route = await this.route(next, options.signal, options.token);
      if ("refusal" in route) throw this.unreachable(new Error(`redirected to ${next.origin}, ${route.refusal}; refusing to follow`));
      target = next;
      addresses = route.addresses;
    }
  }

  private async sendOnce(url: URL, headers: Record<string, string>, options: SendOptions): Promise<Answer> {
    const { signal, addresses } = options;
    // The timer covers the wait for the headers; the controller outlives it, so that a body read
    // later (readBody(), or a blob under its idle guard) can still stop the download.
    const connection = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      connection.abort();
    }, this.requestTimeoutMs);
    try {
      const send = addresses ? this.fetchAt(addresses) : this.fetch;
      const response = await send(url.toString(), {
        headers: { "user-agent": USER_AGENT, ...headers },
        signal: signal ? AbortSignal.any([signal, connection.signal]) : connection.signal,
        redirect: "manual",
      });
      return { response, url, abort: () => connection.abort() };
    } catch (error) {
      if (signal?.aborted && !timedOut) throw error;
      if (error instanceof TypeError && error.cause === undefined && !timedOut) {
        // Not a network error (those carry their cause): the request itself was refused, a header
        // value with a character HTTP does not allow. Its message quotes the value (a token, say).
        throw new FsbError("internal", `the agent could not send a request to ${url.origin}${url.pathname}: one of its header values is not valid in HTTP`);
      }
      throw this.unreachable(timedOut ? new Error(`no answer within ${this.requestTimeoutMs / 1000} s`) : error, url, options.token);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Reads a small body into memory: at most `maxBytes` (`complete` is false when there was more)
   * and within the request timeout. Either way the download stops there: an endless or stalling
   * body must neither fill the agent's memory nor keep streaming after the pull gave up.
   */
  private async readBody(answer: Answer, maxBytes: number, signal?: AbortSignal): Promise<{ bytes: Uint8Array; complete: boolean }> {
    try {
      return await readLimited(answer, maxBytes, this.requestTimeoutMs);
    } catch (error) {
      if (error instanceof BodyTimeout) {
        throw this.unreachable(new Error(`the answer's body did not arrive within ${this.requestTimeoutMs / 1000} s`), answer.url);
      }
      if (signal?.aborted) throw error;
      throw this.unreachable(error, answer.url);
    }
  }

  /**
   * Whether a redirect target or token realm may be contacted, and at which addresses. The
   * registry's own host is contacted as the user named it. Elsewhere, HTTPS is fine anywhere but
   * this host; this host, and plain HTTP at all, only for a registry on loopback itself: a remote
   * registry must not make the agent send requests to services listening on the agent's host.
   * "This host" is what the name resolves to (loopback, the unspecified address, an address of
   * one of this machine's interfaces), and the request then goes to the addresses checked, so a
   * second DNS answer cannot send it elsewhere.
   */
  private async route(url: URL, signal?: AbortSignal, token = false): Promise<Route> {
    const sameHost = url.hostname === this.baseHost;
    if (this.onLoopback) {
      const refusal = "which is neither HTTPS nor on loopback";
      if (url.protocol === "https:" || (url.protocol === "http:" && sameHost)) return {};
      if (url.protocol !== "http:") return { refusal };
      const addresses = await this.resolve(url, signal, token);
      return addresses.every(isLoopbackAddress) ? { addresses } : { refusal };
    }
    if (url.protocol !== "https:") return { refusal: "which is not HTTPS" };
    if (sameHost) return {};
    const hostname = url.hostname.replace(/\.$/, "");
    if (hostname === "localhost" || hostname.endsWith(".localhost")) return { refusal: this.thisHostRefusal("localhost") };
    const addresses = await this.resolve(url, signal, token);
    for (const address of addresses) {
      const reason = thisHostAddress(address);
      if (reason) return { refusal: this.thisHostRefusal(`${address.address}: ${reason}`) };
    }
    return { addresses };
  }

  private thisHostRefusal(what: string): string {
    return `which is this host (${what}), although registry ${this.registry} is not on loopback`;
  }

  /** The addresses of a redirect's or realm's host, within the request timeout. */
  private async resolve(url: URL, signal: AbortSignal | undefined, token: boolean): Promise<ResolvedAddress[]> {
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const interrupted = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no address for ${url.hostname} within ${this.requestTimeoutMs / 1000} s`)), this.requestTimeoutMs);
      onAbort = () => reject(signal?.reason as Error);
      if (signal?.aborted) onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    try {
      return await Promise.race([resolveHost(url.hostname, this.lookup), interrupted]);
    } catch (error) {
      if (signal?.aborted) throw error;
      throw this.unreachable(new Error("lookup failed", { cause: error }), url, token);
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener("abort", onAbort);
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
    const route = await this.route(url, signal, true);
    if ("refusal" in route)
      throw new UnavailableError(`registry ${this.registry} asks for a token from ${url.origin}, ${route.refusal}; refusing to ask there`);
    if (challenge.params.service) url.searchParams.set("service", challenge.params.service);
    url.searchParams.set("scope", `repository:${repository}:pull`);
    const service = `the token service of registry ${this.registry} (${url.origin}${url.pathname})`;
    const answer = await this.send(url, this.credentials ? { authorization: basicAuthorization(this.credentials) } : {}, {
      signal,
      addresses: route.addresses,
      token: true,
    });
    if (answer.response.status === 401 || answer.response.status === 403) {
      await discard(answer);
      throw this.refused(repository, this.credentials !== undefined);
    }
    if (!answer.response.ok) throw await this.failure(answer, repository, "getting a token");
    const { bytes, complete } = await this.readBody(answer, TOKEN_ANSWER_MAX_BYTES, signal);
    if (!complete) throw new UnavailableError(`${service} answered with more than ${TOKEN_ANSWER_MAX_BYTES} bytes`);
    let body: { token?: unknown; access_token?: unknown };
    try {
      body = JSON.parse(Buffer.from(bytes).toString("utf8")) as typeof body;
    } catch (error) {
      throw new UnavailableError(`${service} answered with something that is not JSON`, { cause: error });
    }
    const token = typeof body.token === "string" && body.token ? body.token : body.access_token;
    if (typeof token !== "string" || !token) throw new UnavailableError(`${service} answered without a token`);
    // Not quoted: it is a credential.
    if (!BEARER_TOKEN.test(token)) {
      throw new UnavailableError(`${service} answered with a token that is not a valid bearer token (RFC 6750); check the registry's token service`);
    }
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

  /** The credentials were accepted, and the token they got does not cover the repository. */
  private outOfScope(repository: string, username: string): PermissionDeniedError {
    return new PermissionDeniedError(
      `registry ${this.registry} has no repository ${repository}, or user "${username}" may not pull it (the registry accepted the credentials, ` +
        `but not for that repository): check the image name, or run 'fsb login ${this.registry} -u USER --password-stdin' as a user allowed to pull it`,
    );
  }

  /** A 401 from where a redirect led: that host's challenge is not answered with this registry's credentials. */
  private challengedElsewhere(answered: URL, asked: URL): UnavailableError {
    return new UnavailableError(
      `registry ${this.registry} redirected ${asked.pathname} to ${answered.origin}, which asks for credentials (HTTP 401); ` +
        `the registry's credentials are not sent to another host: check the registry's storage configuration`,
    );
  }

  private async failure(answer: Answer, repository: string, what: string): Promise<FsbError> {
    const { response } = answer;
    const detail = await errorDetail(answer);
    if (response.status === 403 && answer.url.origin !== this.baseOrigin) {
      // Storage a redirect led to (a presigned URL that expired, a clock skew): not the user's
      // access to the repository, and a new redirect from the registry usually works.
      return new UnavailableError(
        `storage at ${answer.url.origin} refused the redirected download (HTTP 403) ${what} from registry ${this.registry}${detail}; ` +
          `try again later, or check the registry's storage configuration`,
      );
    }
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

  /**
   * `error` as UnavailableError naming where the agent could not get: the registry, or the URL
   * it was sent to (its token service, the storage of its blobs).
   */
  private unreachable(error: unknown, url?: URL, token = false): UpstreamUnavailableError {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    const reason = cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error));
    if (url && url.origin !== this.baseOrigin) {
      const where = `${url.origin}${url.pathname}`;
      return new UpstreamUnavailableError(
        token
          ? `the token service of registry ${this.registry} is unreachable at ${where} (${reason}); check that this host reaches it and that the registry is up`
          : `${where}, where registry ${this.registry} sent the agent, is unreachable (${reason}); check that this host reaches it and that the registry is up`,
        { cause: error },
      );
    }
    return new UpstreamUnavailableError(
      `registry ${this.registry} is unreachable at ${this.baseUrl} (${reason}); check the image's registry name, that the registry is up and that this host reaches it`,
      { cause: error },
    );
  }
}

function basicAuthorization(credentials: RegistryCredentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;
}

/**
 * The media type a manifest declares in its body, else the Content-Type the registry sent. A body
 * of schema version 1 is Docker's schema 1 whatever it was served as (often `application/json`).
 */
function manifestMediaType(bytes: Uint8Array, contentType: string | null): string {
  try {
    const parsed = JSON.parse(Buffer.from(bytes).toString("utf8")) as { mediaType?: unknown; manifests?: unknown; schemaVersion?: unknown };
    if (typeof parsed.mediaType === "string" && parsed.mediaType) return parsed.mediaType;
    if (parsed.schemaVersion === 1) return `${MEDIA_TYPE_DOCKER_SCHEMA1_PREFIX}+prettyjws`;
    if (Array.isArray(parsed.manifests)) return MEDIA_TYPE_OCI_INDEX;
  } catch {
    throw new FailedPreconditionError("the registry served a manifest that is not JSON");
  }
  return (contentType ?? MEDIA_TYPE_OCI_MANIFEST).split(";")[0]?.trim() || MEDIA_TYPE_OCI_MANIFEST;
}

/** ` (CODE: message)` from a registry's JSON error body, or "". */
async function errorDetail(answer: Answer): Promise<string> {
  try {
    // Only a detail for a message: the start of the body, if it arrives within a few seconds.
    const { bytes } = await readLimited(answer, ERROR_DETAIL_MAX_BYTES, ERROR_DETAIL_TIMEOUT_MS);
    const body = JSON.parse(Buffer.from(bytes).toString("utf8")) as { errors?: { code?: string; message?: string }[] };
    const first = body.errors?.[0];
    if (first) return ` (${[first.code, first.message].filter(Boolean).join(": ")})`;
  } catch {
    // not JSON, cut short, or no body
  }
  return "";
}

class BodyTimeout extends Error {}

/**
 * Reads at most `maxBytes` of an answer's body within `timeoutMs` (BodyTimeout otherwise), then
 * stops its download whatever happened: the reader is cancelled and the fetch aborted.
 */
async function readLimited(answer: Answer, maxBytes: number, timeoutMs: number): Promise<{ bytes: Uint8Array; complete: boolean }> {
  const body: ReadableStream<Uint8Array> | null = answer.response.body;
  if (!body) return { bytes: new Uint8Array(0), complete: true };
  const reader = body.getReader();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    // Ends a pending read() (as done) and the download under it.
    answer.abort();
    void reader.cancel().catch(() => undefined);
  }, timeoutMs);
  const chunks: Uint8Array[] = [];
  let length = 0;
  try {
    for (;;) {
      let result: Awaited<ReturnType<typeof reader.read>>;
      try {
        result = await reader.read();
      } catch (error) {
        throw timedOut ? new BodyTimeout() : error;
      }
      if (timedOut) throw new BodyTimeout();
      if (result.done) return { bytes: concat(chunks, length), complete: true };
      if (length + result.value.byteLength > maxBytes) {
        chunks.push(result.value.subarray(0, maxBytes - length));
        return { bytes: concat(chunks, maxBytes), complete: false };
      }
      chunks.push(result.value);
      length += result.value.byteLength;
    }
  } finally {
    clearTimeout(timer);
    answer.abort();
    await reader.cancel().catch(() => undefined);
  }
}

/** The chunks in one array of its own (not a slice of Buffer's shared pool). */
function concat(chunks: Uint8Array[], length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

/** Drops an answer whose body is not wanted (a no-op for one already read or dropped). */
async function discard(answer: Answer): Promise<void> {
  answer.abort();
  const body = answer.response.body;
  if (body && !body.locked) await body.cancel().catch(() => undefined);
}
