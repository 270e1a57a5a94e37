/**
 * The sandboxes' access tokens this CLI was told (by `fsb run` and `fsb token`), kept in the embedded
 * Fast Sandbox's data directory — `access-tokens/<namespace>/<name>`, mode 0600 — so that
 * `fsb port-forward` finds them. The control plane keeps only their hashes; with a cluster nothing is
 * kept (the token is printed, and `--token` or FSB_ACCESS_TOKEN pass it back).
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ValidationError } from "@fast-sandbox/api";
import { readIfExists } from "./data-dir.js";

function tokenPath(dataDir: string, namespace: string, name: string): string {
  return join(dataDir, "access-tokens", namespace, name);
}

/** Saves the token; returns where, or undefined when the data directory cannot take it (printing it is then all there is). */
export function saveAccessToken(dataDir: string, namespace: string, name: string, token: string): string | undefined {
  const path = tokenPath(dataDir, namespace, name);
  try {
    mkdirSync(join(dataDir, "access-tokens", namespace), { recursive: true, mode: 0o700 });
    writeFileSync(path, `${token}\n`, { mode: 0o600 });
    return path;
  } catch {
    return undefined;
  }
}

export function savedAccessToken(dataDir: string, namespace: string, name: string): string | undefined {
  return readIfExists(tokenPath(dataDir, namespace, name)) || undefined;
}

export function forgetAccessToken(dataDir: string, namespace: string, name: string): void {
  rmSync(tokenPath(dataDir, namespace, name), { force: true });
}

/** Forgets every sandbox's token: `fsb down --delete-sandboxes` deleted them all. */
export function forgetAllAccessTokens(dataDir: string): void {
  rmSync(join(dataDir, "access-tokens"), { recursive: true, force: true });
}

/**
 * The access token a command uses for a sandbox: `--token`, else FSB_ACCESS_TOKEN, else the one
 * `fsb run` or `fsb token` saved; without any, an error that says how to get one — bad usage (exit
 * 2). Commands ask for it through `accessTokenOfExisting`, or once they found the sandbox.
 */
export function accessTokenFor(namespace: string, name: string, options: { token?: string | undefined; dataDir?: string | undefined }): string {
  const token = options.token ?? process.env.FSB_ACCESS_TOKEN ?? (options.dataDir ? savedAccessToken(options.dataDir, namespace, name) : undefined);
  if (!token) {
    throw new ValidationError(
      "--token",
      `no access token for sandbox ${namespace}/${name}: pass --token (or FSB_ACCESS_TOKEN), or run 'fsb token ${name}' to make a new one (the old one stops working)`,
    );
  }
  return token;
}

/**
 * `accessTokenFor` a sandbox that exists: without a token the control plane is asked whether the
 * sandbox is there before the token is asked for, so that a mistyped name is "not found" (exit 1),
 * not advice on getting a token for a sandbox there is none of.
 */
export async function accessTokenOfExisting(
  sandboxes: { get(name: string, options: { namespace: string }): Promise<unknown> },
  namespace: string,
  name: string,
  options: { token?: string | undefined; dataDir?: string | undefined },
): Promise<string> {
  try {
    return accessTokenFor(namespace, name, options);
  } catch (error) {
    await sandboxes.get(name, { namespace });
    throw error;
  }
}
