/**
 * Registry credentials in Docker's `config.json` format, which `fsb login` writes:
 *
 *   { "auths": { "127.0.0.1:5000": { "auth": "<base64 of user:password>" } } }
 *
 * Entries may also carry `username` and `password` fields instead of `auth`. Keys are matched by
 * registry host, whatever form Docker used for them (`https://index.docker.io/v1/` is Docker
 * Hub). Credential helpers (`credsStore`, `credHelpers`) are not supported.
 *
 * The file is read at every pull, so a `fsb login` takes effect without restarting agents.
 */
import { readFile } from "node:fs/promises";
import { FailedPreconditionError, normalizeRegistryHost } from "@fast-sandbox/api/core";

export interface RegistryCredentials {
  username: string;
  password: string;
}

interface AuthEntry {
  auth?: unknown;
  username?: unknown;
  password?: unknown;
}

/** The credentials the config holds for `registry` (a host as image references name it), or undefined. */
export function findCredentials(config: unknown, registry: string, source = "the registry config"): RegistryCredentials | undefined {
  if (typeof config !== "object" || config === null || Array.isArray(config))
    throw new FailedPreconditionError(`${source} is not a JSON object (Docker's config.json format)`);
  const auths = (config as { auths?: unknown }).auths;
  if (auths === undefined) return undefined;
  if (typeof auths !== "object" || auths === null || Array.isArray(auths)) throw new FailedPreconditionError(`${source}: "auths" is not an object`);
  const wanted = normalizeRegistryHost(registry);
  for (const [key, value] of Object.entries(auths)) {
    if (normalizeRegistryHost(key) !== wanted) continue;
    return entryCredentials((value ?? {}) as AuthEntry, `${source}: auths[${JSON.stringify(key)}]`);
  }
  return undefined;
}

function entryCredentials(entry: AuthEntry, where: string): RegistryCredentials | undefined {
  if (typeof entry.auth === "string" && entry.auth !== "") {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon <= 0) throw new FailedPreconditionError(`${where}.auth is not base64 of "user:password"; run 'fsb login' for that registry again`);
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (typeof entry.username === "string" && entry.username !== "" && typeof entry.password === "string") {
    return { username: entry.username, password: entry.password };
  }
  return undefined;
}

/**
 * Reads the credentials for `registry` from the config file at `path`. No path or no file means
 * no credentials (anonymous pulls); an unreadable or malformed file is an error that names it.
 */
export async function loadRegistryCredentials(path: string | undefined, registry: string): Promise<RegistryCredentials | undefined> {
  if (!path) return undefined;
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new FailedPreconditionError(`cannot read the registry credentials in ${path}: ${(error as Error).message}`);
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch {
    // Not the parser's message: it quotes the text around the fault, a password as likely as not.
    throw new FailedPreconditionError(`${path} is not valid JSON; fix it or run 'fsb login' again`);
  }
  return findCredentials(config, registry, path);
}
