/**
 * The `envdVersion` the E2B-compatible API reports for every sandbox: the version of E2B's envd
 * whose features the in-sandbox daemon implements, which E2B's SDKs switch features on by. The
 * daemon's package keeps it in one file, `packages/envd/version.json` (`{"envdVersion": "x.y.z"}`),
 * read by the daemon's build and here, so the two cannot disagree.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { FailedPreconditionError } from "@fast-sandbox/api";

/** packages/envd/version.json, from this module in src/e2b or dist/e2b of packages/controlplane. */
export const ENVD_VERSION_FILE = fileURLToPath(new URL("../../../envd/version.json", import.meta.url));

/** The version in `path` (default: the daemon's file); read when an E2B API starts, not at import. */
export function readEnvdVersion(path = ENVD_VERSION_FILE): string {
  let version: unknown;
  try {
    version = (JSON.parse(readFileSync(path, "utf8")) as { envdVersion?: unknown }).envdVersion;
  } catch (error) {
    throw new FailedPreconditionError(`cannot read the in-sandbox daemon's version from ${path}: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (typeof version !== "string" || !/^\d+\.\d+\.\d+$/.test(version)) {
    throw new FailedPreconditionError(`${path} must hold {"envdVersion": "x.y.z"}; it holds ${JSON.stringify(version)}`);
  }
  return version;
}
