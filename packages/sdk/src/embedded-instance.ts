/**
 * The embedded Fast Sandbox of this machine (`fsb up`) as its data directory shows it: the URL and
 * API token it writes there, and the sandboxes' access tokens kept beside them
 * (`access-tokens/<namespace>/<name>`, mode 0600) by `fsb run`, `fsb token`, this SDK and the
 * Python SDK — so that a program finds the instance and the tokens of its sandboxes as the CLI does.
 */
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { ValidationError } from "@fast-sandbox/api/core";
import { checkControlPlaneUrl } from "./arguments.js";
import { TokenFile } from "./token-file.js";

/** An environment variable of the SDK's; an empty one is unset (`FSB_TOKEN=` in a shell), as the Python SDK reads it. */
export function fromEnv(name: string): string | undefined {
  return process.env[name] || undefined;
}

/** `FSB_DATA_DIR`, else the directory `fsb up` uses by default for this user. */
export function defaultDataDir(): string {
  const configured = fromEnv("FSB_DATA_DIR");
  if (configured) return configured;
  if (process.getuid?.() === 0) return "/var/lib/fast-sandbox";
  return join(fromEnv("XDG_DATA_HOME") ?? join(homedir(), ".local", "share"), "fast-sandbox");
}

/** Where the control plane is, as options and the environment tell it. */
export interface ControlPlaneAddress {
  url: string | undefined;
  token: string | undefined;
  /** Where the token is read from again as it is renewed (the tokenFile option, FSB_TOKEN_FILE). */
  tokenFile?: TokenFile;
  /** The token came from the caller (an option, FSB_TOKEN or FSB_TOKEN_FILE), not from the data directory. */
  tokenGiven: boolean;
  /** The data directory's token may go to `url`: its own URL, or one on this host's loopback. */
  dataDirTokenAllowed: boolean;
}

/** How a caller names the control plane and its token. */
export interface ControlPlaneOptions {
  url?: string | undefined;
  token?: string | undefined;
  tokenFile?: string | undefined;
}

/**
 * The control plane's URL and API token: the options (`token`, else `tokenFile`), else `FSB_URL` and
 * `FSB_TOKEN`, else `FSB_TOKEN_FILE`, else what the running `fsb up` of `embedded`'s data directory
 * wrote — its token only for its own URL or one on this host's loopback, as the CLI sends it: the
 * token of this host's Fast Sandbox is not sent to another host a URL names.
 */
export function controlPlaneAddress(
  options: ControlPlaneOptions,
  embedded: EmbeddedInstance,
  { tokens = true }: { tokens?: boolean } = {},
): ControlPlaneAddress {
  const embeddedUrl = embedded.url();
  const url = options.url ?? fromEnv("FSB_URL") ?? embeddedUrl;
  // Without tokens (an injected transport needs none), no token file is read either.
  const tokenFile = tokens ? tokenFileOf(options) : undefined;
  const givenToken = options.token ?? tokenFile?.current() ?? fromEnv("FSB_TOKEN");
  const dataDirTokenAllowed = url === undefined || (embeddedUrl !== undefined && sameUrl(url, embeddedUrl)) || onLoopback(url);
  const token = givenToken ?? (dataDirTokenAllowed ? embedded.token() : undefined);
  return { url, token, ...(tokenFile ? { tokenFile } : {}), tokenGiven: givenToken !== undefined, dataDirTokenAllowed };
}

/** The token's file, when it is where the token comes from: the option (without `token`), else FSB_TOKEN_FILE (without FSB_TOKEN). */
function tokenFileOf(options: ControlPlaneOptions): TokenFile | undefined {
  if (options.token !== undefined) return undefined;
  if (options.tokenFile !== undefined) return new TokenFile(options.tokenFile, "tokenFile");
  const fromEnvironment = fromEnv("FSB_TOKEN") === undefined ? fromEnv("FSB_TOKEN_FILE") : undefined;
  return fromEnvironment === undefined ? undefined : new TokenFile(fromEnvironment, "FSB_TOKEN_FILE");
}

/** `controlPlaneAddress`, both found: else a ValidationError that says what is missing and how to give it. */
export function requireControlPlaneAddress(options: ControlPlaneOptions, embedded: EmbeddedInstance): { url: string; token: string; tokenFile?: TokenFile } {
  const { url, token, tokenFile, tokenGiven, dataDirTokenAllowed } = controlPlaneAddress(options, embedded);
  if (!url) {
    throw new ValidationError(
      "url",
      `Fast Sandbox is not running for data directory ${embedded.dataDir}: start it with 'npx fsb up', or pass url or set FSB_URL to the control plane's address (or dataDir or FSB_DATA_DIR to the data directory of the 'fsb up' that runs)`,
    );
  }
  checkControlPlaneUrl(url, options.url === undefined && fromEnv("FSB_URL") !== undefined ? "FSB_URL" : "url");
  if (!tokenGiven && !dataDirTokenAllowed) {
    throw new ValidationError(
      options.url === undefined && fromEnv("FSB_URL") !== undefined ? "FSB_URL" : "url",
      `${url} is neither this data directory's Fast Sandbox (${embedded.dataDir}) nor on this host: pass token or tokenFile, or set FSB_TOKEN or FSB_TOKEN_FILE, to its API token (this host's token is not sent to another host)`,
    );
  }
  if (!token) {
    throw new ValidationError(
      "token",
      `no API token: pass token or tokenFile, set FSB_TOKEN or FSB_TOKEN_FILE, or run 'fsb up' once so that ${embedded.dataDir}/token exists`,
    );
  }
  return { url, token, ...(tokenFile ? { tokenFile } : {}) };
}

export function sameUrl(a: string, b: string): boolean {
  return a.replace(/\/+$/, "") === b.replace(/\/+$/, "");
}

/** Whether the URL names this host's loopback (127.0.0.0/8, ::1, localhost); false for one that does not parse. */
function onLoopback(url: string): boolean {
  if (!URL.canParse(url)) return false;
  const host = new URL(url).hostname.replace(/^\[|\]$/g, "").toLowerCase();
  return host === "localhost" || host.endsWith(".localhost") || host === "::1" || /^127(\.\d{1,3}){3}$/.test(host);
}

export class EmbeddedInstance {
  constructor(readonly dataDir: string) {}

  /** The URL of the running `fsb up` of this directory, if any. */
  url(): string | undefined {
    return read(join(this.dataDir, "url"));
  }

  token(): string | undefined {
    return read(join(this.dataDir, "token"));
  }

  savedAccessToken(namespace: string, name: string): string | undefined {
    return read(this.tokenPath(namespace, name));
  }

  /** Keeps a sandbox's access token; a directory that cannot take it is no error (the caller has the token). */
  saveAccessToken(namespace: string, name: string, accessToken: string): void {
    try {
      mkdirSync(join(this.dataDir, "access-tokens", namespace), { recursive: true, mode: 0o700 });
      writeFileSync(this.tokenPath(namespace, name), `${accessToken}\n`, { mode: 0o600 });
      chmodSync(this.tokenPath(namespace, name), 0o600);
    } catch {
      // Not ours to fix: e.g. the data directory of another user.
    }
  }

  forgetAccessToken(namespace: string, name: string): void {
    rmSync(this.tokenPath(namespace, name), { force: true });
  }

  private tokenPath(namespace: string, name: string): string {
    return join(this.dataDir, "access-tokens", namespace, name);
  }
}

function read(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}
