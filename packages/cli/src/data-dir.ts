import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/**
 * Where `fsb up` keeps its state and how other commands find it:
 * `--data-dir` > `FSB_DATA_DIR` > `/var/lib/fast-sandbox` (root) or `~/.local/share/fast-sandbox`.
 */
export function resolveDataDir(flag?: string): string {
  if (flag) return flag;
  if (process.env.FSB_DATA_DIR) return process.env.FSB_DATA_DIR;
  if (process.getuid?.() === 0) return "/var/lib/fast-sandbox";
  return join(process.env.XDG_DATA_HOME ?? join(homedir(), ".local", "share"), "fast-sandbox");
}

export const files = {
  token: (dir: string) => join(dir, "token"),
  url: (dir: string) => join(dir, "url"),
  pid: (dir: string) => join(dir, "controlplane.pid"),
  log: (dir: string) => join(dir, "controlplane.log"),
  settings: (dir: string) => join(dir, "settings.json"),
};

/** What `fsb up` runs with; `fsb janitor` and `fsb down --delete-sandboxes` act on the same containerd state. */
export interface EmbeddedSettings {
  containerdNamespace: string;
  containerdSocket: string;
  cgroupRoot: string;
}

export function writeSettings(dir: string, settings: EmbeddedSettings): void {
  writeFileSync(files.settings(dir), `${JSON.stringify(settings, null, 2)}\n`);
}

/** The settings of the last `fsb up` of this data directory, if any. */
export function readSettings(dir: string): EmbeddedSettings | undefined {
  const text = readIfExists(files.settings(dir));
  if (!text) return undefined;
  try {
    const parsed = JSON.parse(text) as Partial<EmbeddedSettings>;
    if (typeof parsed.containerdNamespace !== "string" || typeof parsed.containerdSocket !== "string") return undefined;
    return { containerdNamespace: parsed.containerdNamespace, containerdSocket: parsed.containerdSocket, cgroupRoot: parsed.cgroupRoot ?? "" };
  } catch {
    return undefined;
  }
}

/** The API token, created on first use with mode 0600. */
export function ensureToken(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = files.token(dir);
  if (!existsSync(path)) writeFileSync(path, `${randomBytes(32).toString("base64url")}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
  return readFileSync(path, "utf8").trim();
}

export function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The pid of a running control plane of this data dir, if any. */
export function runningPid(dir: string): number | undefined {
  const pid = Number(readIfExists(files.pid(dir)));
  return Number.isInteger(pid) && pid > 0 && isAlive(pid) ? pid : undefined;
}

export function clearRunFiles(dir: string): void {
  rmSync(files.pid(dir), { force: true });
  rmSync(files.url(dir), { force: true });
}
