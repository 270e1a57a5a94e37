/**
 * What `fsb run` (cold or `--from-checkpoint`) and `fsb fork` print for a sandbox they made: its
 * access token (saved in the data directory when there is one) and where it runs, its name last.
 * Quiet (`-q`): the name alone on stdout, for scripts (`name=$(fsb run -q -- …)`); the token then
 * goes to stderr only when there is no data directory to keep it, since it is shown just once.
 */
import type { CreatedSandbox } from "@fast-sandbox/sdk";
import { saveAccessToken } from "./access-tokens.js";

export interface CreatedSandboxOutput {
  namespace: string;
  /** The data directory the token is saved in (a local instance); undefined for a remote one. */
  dataDir: string | undefined;
  /** How it came to be, e.g. "restored from checkpoint golden"; nothing for a plain create. */
  origin?: string;
  quiet?: boolean;
}

export function printCreated(sandbox: CreatedSandbox, output: CreatedSandboxOutput): void {
  const name = sandbox.metadata.name;
  const saved = output.dataDir && sandbox.accessToken ? saveAccessToken(output.dataDir, output.namespace, name, sandbox.accessToken) : undefined;
  const token =
    `access token: ${sandbox.accessToken} (send it as the X-Access-Token header to its endpoints${saved ? `; saved in ${saved}` : ""}; ` +
    `'fsb token ${name}' replaces it)\n`;
  if (output.quiet) {
    if (!saved && sandbox.accessToken) process.stderr.write(token);
    process.stdout.write(`${name}\n`);
    return;
  }
  process.stdout.write(token);
  const endpoints = sandbox.status?.endpoints?.length ? ` (endpoints: ${sandbox.status.endpoints.join(", ")})` : "";
  const address = sandbox.status?.sandboxIP ? `, address ${sandbox.status.sandboxIP}` : "";
  const what = output.origin ? `sandbox ${output.origin}` : "sandbox";
  process.stdout.write(`${what} running on agent ${sandbox.status?.assignedPod ?? "?"}${address}${endpoints}: ${name}\n`);
}
