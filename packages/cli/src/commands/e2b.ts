/**
 * `fsb e2b env`: what E2B's own SDKs need to use this Fast Sandbox, as shell exports —
 * `eval "$(fsb e2b env)"` and then `Sandbox.create()` of npm or PyPI `e2b` works unchanged. Each run
 * issues a new API key; the URLs are the ones the control plane serves (E2B-compatible API, sandbox
 * proxy). `fsb e2b revoke KEY` revokes a key.
 */
import { NotFoundError, type E2bApiKey } from "@fast-sandbox/sdk";
import { connect, type GlobalOptions } from "../connection.js";

/** A word as the shell reads it back unchanged: bare when it is plain, else in single quotes. */
export function shellWord(value: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

/** The three export lines, in the order E2B's documentation gives them. */
export function e2bEnvLines(key: E2bApiKey): string {
  return [
    `export E2B_API_URL=${shellWord(key.apiUrl)}`,
    `export E2B_SANDBOX_URL=${shellWord(key.sandboxUrl)}`,
    `export E2B_API_KEY=${shellWord(key.apiKey)}`,
    "",
  ].join("\n");
}

export async function env(options: GlobalOptions): Promise<void> {
  const { client } = await connect(options);
  process.stdout.write(e2bEnvLines(await client.e2b.createApiKey()));
}

/** Revokes `apiKey` (E2B's API refuses it from then on); a key that was never issued, or revoked already, is NotFound (exit 1). */
export async function revoke(key: string, options: GlobalOptions): Promise<void> {
  const apiKey = key === "-" ? (await readStdin()).trim() : key;
  const { client } = await connect(options);
  if (!(await client.e2b.revokeApiKey(apiKey))) throw new NotFoundError(`no such E2B API key (never issued here, or revoked already)`);
  process.stderr.write("revoked\n");
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
