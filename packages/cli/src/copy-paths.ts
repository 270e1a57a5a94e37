/**
 * The arguments of `fsb cp`: one side is a local path (or `-` for stdin/stdout), the other
 * `NAME:PATH` in a sandbox, as `docker cp` and `kubectl cp` write it. A local path that contains a
 * colon is written with a slash before it (`./a:b`).
 */
import { ValidationError } from "@fast-sandbox/api";

export interface SandboxPath {
  sandbox: string;
  path: string;
}

export type CopyDirection = { upload: true; local: string; remote: SandboxPath } | { upload: false; remote: SandboxPath; local: string };

/** `NAME:PATH` (a sandbox name is a DNS label or subdomain); anything else is local. */
const SANDBOX_PATH = /^([a-z0-9](?:[-a-z0-9.]*[a-z0-9])?):(.*)$/;

export function parseSandboxPath(argument: string): SandboxPath | undefined {
  const match = SANDBOX_PATH.exec(argument);
  if (!match?.[1]) return undefined;
  return { sandbox: match[1], path: match[2] ?? "" };
}

export function parseCopyArguments(source: string, destination: string): CopyDirection {
  const from = parseSandboxPath(source);
  const to = parseSandboxPath(destination);
  if (from && to) {
    throw new ValidationError(
      "SRC",
      "both sides are in sandboxes; copy to a local file first, then to the other sandbox (a local name with a ':' in it is written ./NAME, e.g. ./backup:1.tar)",
    );
  }
  if (!from && !to) {
    throw new ValidationError(
      "SRC",
      `neither ${JSON.stringify(source)} nor ${JSON.stringify(destination)} is NAME:PATH; e.g. fsb cp ./data.csv sb-1:/tmp/data.csv`,
    );
  }
  const remote = (from ?? to) as SandboxPath;
  if (remote.path === "")
    throw new ValidationError(from ? "SRC" : "DEST", `${remote.sandbox}: names no path; write NAME:PATH, e.g. ${remote.sandbox}:/tmp/file`);
  const local = from ? destination : source;
  if (local === "") throw new ValidationError(from ? "DEST" : "SRC", "the local path is empty; give a file, a directory, or - for stdin/stdout");
  return from ? { upload: false, remote, local } : { upload: true, local, remote };
}

/** The last part of a path (`/a/b.txt` → `b.txt`), for copying into a directory. */
export function baseName(path: string): string {
  return path.replace(/\/+$/, "").split("/").at(-1) ?? "";
}
