import { FastSandboxClient, ValidationError } from "@fast-sandbox/sdk";
import { files, readIfExists, resolveDataDir } from "./data-dir.js";

export interface GlobalOptions {
  dataDir?: string;
  url?: string;
}

/** Connects to the control plane named by --url/FSB_URL, or the one `fsb up` runs for the data dir. */
export function connect(options: GlobalOptions): FastSandboxClient {
  const client = new FastSandboxClient(endpoint(options));
  open.push(client);
  return client;
}

/** The control plane's URL and token: --url/FSB_URL or the data dir's `url`; FSB_TOKEN or the data dir's `token`. */
export function endpoint(options: GlobalOptions): { url: string; token: string } {
  const dataDir = resolveDataDir(options.dataDir);
  const url = options.url ?? process.env.FSB_URL ?? readIfExists(files.url(dataDir));
  if (!url) {
    throw new ValidationError("", `Fast Sandbox is not running for data directory ${dataDir}: start it with 'npx fsb up' (or 'npm run up'), or pass --url`);
  }
  const token = process.env.FSB_TOKEN ?? readIfExists(files.token(dataDir));
  if (!token) throw new ValidationError("", `no API token in ${files.token(dataDir)}; set FSB_TOKEN or run 'fsb up' once to create it`);
  return { url, token };
}

const open: FastSandboxClient[] = [];

/** Closes every connection the command opened, so the process exits as soon as it is done. */
export function closeConnections(): void {
  for (const client of open.splice(0)) client.close();
}
