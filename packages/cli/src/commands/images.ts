/**
 * Images: `fsb pull IMAGE` pulls an image on the agents of a pool, showing progress; `fsb login`
 * stores registry credentials where the embedded mode's agents read them at every pull.
 */
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { FailedPreconditionError, ValidationError, normalizeRegistryHost } from "@fast-sandbox/api";
import { registryConfigPath } from "@fast-sandbox/controlplane";
import type { PullProgress } from "@fast-sandbox/sdk";
import { connect, type GlobalOptions } from "../connection.js";
import { resolveDataDir } from "../data-dir.js";
import { formatBytes } from "../byte-sizes.js";
import { printTable } from "../output.js";

/** One agent's progress as text: `default-0: downloading 1/2 layers, 1.2 MB/3.4 MB`. */
export function describeProgress(progress: PullProgress): string {
  const layers = `${progress.layersDone}/${progress.layersTotal} layers`;
  const bytes = `${formatBytes(progress.bytesDone)}/${formatBytes(progress.bytesTotal)}`;
  switch (progress.phase) {
    case "resolving":
      return `${progress.agent}: resolving ${progress.image}`;
    case "downloading":
      return `${progress.agent}: downloading ${layers}, ${bytes}`;
    case "unpacking":
      return `${progress.agent}: unpacking ${layers}`;
    case "done":
      return `${progress.agent}: done, ${progress.layersTotal} layers, ${formatBytes(progress.bytesTotal)}`;
    default:
      return `${progress.agent}: ${String(progress.phase)}`;
  }
}

export interface PullOptions extends GlobalOptions {
  namespace?: string;
  pool: string;
}

/**
 * Pulls the image on every ready agent of the pool. Progress goes to stderr (rewritten in place on
 * a terminal, a line per phase otherwise); stdout gets one line per agent at the end.
 */
export async function pull(image: string, options: PullOptions): Promise<void> {
  const { client, namespace } = await connect(options);
  const interactive = process.stderr.isTTY === true;
  const latest = new Map<string, PullProgress>();
  const lastPhase = new Map<string, string>();
  let lastDrawMs = 0;
  const draw = (force: boolean) => {
    const now = Date.now();
    if (!force && now - lastDrawMs < 100) return;
    lastDrawMs = now;
    const line = [...latest.values()].map(describeProgress).join(" | ");
    process.stderr.write(`\r\x1b[2K${line.length > 200 ? `${line.slice(0, 199)}…` : line}`);
  };
  const controller = new AbortController();
  const interrupt = () => controller.abort();
  process.once("SIGINT", interrupt);
  let results: PullProgress[];
  try {
    results = await client.pools.pullImage(image, {
      pool: options.pool,
      namespace,
      signal: controller.signal,
      onProgress: (progress) => {
        latest.set(progress.agent, progress);
        if (interactive) draw(progress.phase === "done");
        else if (lastPhase.get(progress.agent) !== progress.phase) {
          lastPhase.set(progress.agent, progress.phase);
          if (progress.phase !== "done") process.stderr.write(`${describeProgress(progress)}\n`);
        }
      },
    });
  } finally {
    process.removeListener("SIGINT", interrupt);
    if (interactive && latest.size > 0) process.stderr.write("\r\x1b[2K");
  }
  printTable(
    ["AGENT", "IMAGE", "DIGEST", "LAYERS", "SIZE"],
    results.map((r) => [r.agent, r.image, r.digest, String(r.layersTotal), formatBytes(r.bytesTotal)]),
  );
}

const REGISTRY_HOST = /^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::\d{1,5})?$/;

/** The registry host a `fsb login` argument names (`https://index.docker.io/v1/` → docker.io); a usage error if it names none. */
export function registryHost(argument: string): string {
  const host = normalizeRegistryHost(argument);
  if (!REGISTRY_HOST.test(host)) {
    throw new ValidationError("REGISTRY", `${JSON.stringify(argument)} is not a registry host, e.g. ghcr.io, docker.io or 127.0.0.1:5000`);
  }
  return host;
}

/**
 * Docker's config.json with `auths[registry]` set to the credentials; entries of other registries
 * are kept, and other spellings of the same registry (`https://index.docker.io/v1/`) replaced.
 */
export function withCredentials(config: Record<string, unknown>, registry: string, username: string, password: string): Record<string, unknown> {
  const existing = config.auths;
  const auths: Record<string, unknown> = typeof existing === "object" && existing !== null && !Array.isArray(existing) ? { ...existing } : {};
  for (const key of Object.keys(auths)) if (normalizeRegistryHost(key) === registry) delete auths[key];
  auths[registry] = { auth: Buffer.from(`${username}:${password}`).toString("base64") };
  return { ...config, auths };
}

export interface LoginOptions extends GlobalOptions {
  username?: string;
  passwordStdin?: boolean;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * Saves credentials for a registry in `<data dir>/registry/config.json` (Docker's format, mode
 * 0600), where the embedded mode's agents read them at every pull. They are not checked here: the
 * next pull from that registry uses them, and says so when the registry refuses them.
 */
export async function login(registryArgument: string, options: LoginOptions): Promise<void> {
  const registry = registryHost(registryArgument);
  if (!options.username) throw new ValidationError("--username", "name the user: fsb login REGISTRY -u USER --password-stdin");
  if (!options.passwordStdin) {
    throw new ValidationError("--password-stdin", 'pass the password on stdin, e.g. echo "$TOKEN" | fsb login REGISTRY -u USER --password-stdin');
  }
  const password = (await readStdin()).replace(/\r?\n$/, "");
  if (!password) throw new ValidationError("--password-stdin", "stdin held no password");
  if (options.username.includes(":")) throw new ValidationError("--username", "a user name must not contain ':'");

  const path = registryConfigPath(resolveDataDir(options.dataDir));
  let config: Record<string, unknown> = {};
  let text: string | undefined;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  if (text !== undefined && text.trim() !== "") {
    try {
      const parsed = JSON.parse(text) as unknown;
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not a JSON object");
      config = parsed as Record<string, unknown>;
    } catch (error) {
      throw new FailedPreconditionError(`${path} is not valid JSON (${(error as Error).message}); fix or remove it, then log in again`);
    }
  }
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  // Written beside and renamed over: an agent reading it at that moment sees the old or the new file, whole.
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, `${JSON.stringify(withCredentials(config, registry, options.username, password), null, 2)}\n`, { mode: 0o600 });
  chmodSync(temporary, 0o600);
  renameSync(temporary, path);
  process.stdout.write(`credentials for ${registry} saved in ${path}; pulls from it use them\n`);
}
