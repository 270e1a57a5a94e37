/**
 * `fsb e2b env` for E2B-compatibility tests: runs the CLI against an embedded case and gives its
 * three `export` lines as NAME → value, or puts exactly those three into this process's environment.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { REPO_ROOT } from "./containerd.js";
import type { EmbeddedCase } from "./embedded.js";

const FSB = join(REPO_ROOT, "packages/cli/bin/fsb.js");
export const E2B_VARIABLES = ["E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY"] as const;

/** `fsb e2b env`'s three lines, as NAME → value. */
export function fsbE2bEnv(embedded: EmbeddedCase): Promise<Record<string, string>> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [FSB, "--url", embedded.controlPlane.url, "e2b", "env"],
      { env: { ...process.env, FSB_TOKEN: embedded.token, FSB_DATA_DIR: embedded.dataDir }, encoding: "utf8" },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`fsb e2b env failed: ${stderr}`));
        else
          resolve(
            Object.fromEntries(
              stdout
                .trimEnd()
                .split("\n")
                .map((line) => /^export (\w+)=(.*)$/.exec(line)?.slice(1, 3) ?? []),
            ) as Record<string, string>,
          );
      },
    );
  });
}

/** An environment with no E2B_* variable but the three `fsb e2b env` prints. */
export async function e2bEnvironment(embedded: EmbeddedCase, base: NodeJS.ProcessEnv = process.env): Promise<NodeJS.ProcessEnv> {
  const exported = await fsbE2bEnv(embedded);
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(base).filter(([name]) => !name.startsWith("E2B_")));
  for (const name of E2B_VARIABLES) {
    assert.ok(exported[name], `fsb e2b env exports ${name}`);
    env[name] = exported[name];
  }
  return env;
}

/** Makes this process's E2B_* variables exactly the three `fsb e2b env` prints; returns what puts them back. */
export async function useFsbE2bEnv(embedded: EmbeddedCase): Promise<() => void> {
  const env = await e2bEnvironment(embedded);
  const saved = new Map(Object.entries(process.env).filter(([name]) => name.startsWith("E2B_")));
  for (const name of saved.keys()) delete process.env[name];
  for (const name of E2B_VARIABLES) process.env[name] = env[name];
  return () => {
    for (const name of E2B_VARIABLES) delete process.env[name];
    for (const [name, value] of saved) process.env[name] = value;
  };
}
