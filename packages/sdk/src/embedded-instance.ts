/**
 * The embedded Fast Sandbox of this machine (`fsb up`) as its data directory shows it: the URL and
 * API token it writes there, and the sandboxes' access tokens kept beside them
 * (`access-tokens/<namespace>/<name>`, mode 0600) by `fsb run`, `fsb token`, this SDK and the
 * Python SDK — so that a program finds the instance and the tokens of its sandboxes as the CLI does.
 */
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/** `FSB_DATA_DIR`, else the directory `fsb up` uses by default for this user. */
export function defaultDataDir(): string {
  if (process.env.FSB_DATA_DIR) return process.env.FSB_DATA_DIR;
  if (process.getuid?.() === 0) return "/var/lib/fast-sandbox";
  return join(process.env.XDG_DATA_HOME ?? join(homedir(), ".local", "share"), "fast-sandbox");
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
