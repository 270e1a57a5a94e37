/**
 * `fsb checkpoint NAME [-n CHECKPOINT]`, `fsb checkpoint ls`, `fsb checkpoint rm`, `fsb run
 * --from-checkpoint C`, `fsb fork NAME -n K`, `fsb pause NAME` and `fsb resume NAME`: checkpoints of
 * sandboxes in gVisor pools. In these
 * commands `-n` is the checkpoint's name (checkpoint) or the number of copies (fork), as the issue
 * that asked for them writes it; the namespace is `--namespace`.
 */
import { NAME_MAX_LENGTH, NAME_PATTERN, ValidationError } from "@fast-sandbox/api";
import type { CheckpointInfo } from "@fast-sandbox/sdk";
import { formatBytes } from "../byte-sizes.js";
import { connect, type GlobalOptions } from "../connection.js";
import { printCreated } from "../created-sandbox.js";
import { forEachName } from "../failures.js";
import { UNTIL_DONE, untilCreated } from "../slow-operations.js";
import { age, printObjects, printTable, type OutputFormat } from "../output.js";
import { checkSandboxName, parseExpireMs, parsePorts } from "./sandboxes.js";

export async function checkpoint(sandbox: string, options: GlobalOptions & { namespace?: string; name?: string }): Promise<void> {
  // Bad usage (exit 2), read before anything is asked of the control plane.
  if (options.name && (options.name.length > NAME_MAX_LENGTH || !new RegExp(NAME_PATTERN).test(options.name))) {
    throw new ValidationError(
      "--name",
      `${JSON.stringify(options.name)} is not a checkpoint name: at most ${NAME_MAX_LENGTH} lowercase letters, digits and '-', starting and ending with a letter or digit`,
    );
  }
  const { client, namespace } = await connect(options);
  const made = await client.checkpoints.create(sandbox, { namespace, ...(options.name ? { name: options.name } : {}), ...UNTIL_DONE });
  process.stdout.write(`checkpoint of ${sandbox} saved on node ${made.nodeName || "?"} (${formatBytes(made.sizeBytes)}); ${sandbox} runs on: ${made.name}\n`);
}

const CHECKPOINT_HEADERS = ["NAME", "SANDBOX", "POOL", "NODE", "SIZE", "AGE"];

function checkpointRow(c: CheckpointInfo): string[] {
  return [c.name, c.sandbox, c.pool, c.nodeName || "-", formatBytes(c.sizeBytes), age(c.createTime)];
}

export async function list(options: GlobalOptions & { namespace?: string; allNamespaces?: boolean; output: OutputFormat }): Promise<void> {
  const { client, namespace } = await connect(options);
  const checkpoints = await client.checkpoints.list({ namespace: options.allNamespaces ? "*" : namespace });
  printObjects(options.output, { kind: "List", items: checkpoints }, () => {
    if (checkpoints.length === 0) {
      process.stdout.write("No checkpoints. Save one of a running sandbox of a gVisor pool with: npx fsb checkpoint NAME\n");
      return;
    }
    const withNamespace = options.allNamespaces === true;
    printTable(
      withNamespace ? ["NAMESPACE", ...CHECKPOINT_HEADERS] : CHECKPOINT_HEADERS,
      checkpoints.map((c) => (withNamespace ? [c.namespace, ...checkpointRow(c)] : checkpointRow(c))),
    );
  });
}

/** Deletes every checkpoint named; one that fails is reported and the others are deleted all the same (exit 1 at the end). */
export async function remove(names: string[], options: GlobalOptions & { namespace?: string }): Promise<void> {
  const { client, namespace } = await connect(options);
  await forEachName(names, async (name) => {
    await client.checkpoints.delete(name, { namespace });
    process.stdout.write(`checkpoint ${name} deleted\n`);
  });
}

export interface RunFromCheckpointOptions extends GlobalOptions {
  fromCheckpoint: string;
  name?: string;
  /** The checkpoint's pool (given: a pool scaled to zero is woken for the restore). */
  pool?: string;
  namespace?: string;
  port: string[];
  expire?: string;
  /** Print the sandbox's name alone (created-sandbox.ts). */
  quiet?: boolean;
}

/** `fsb run --from-checkpoint C`: image, pool, command and environment are the checkpoint's. */
export async function runFromCheckpoint(options: RunFromCheckpointOptions): Promise<void> {
  // Read before anything is asked of the control plane (bad usage, exit 2).
  const exposedPorts = parsePorts(options.port);
  const ttlMs = options.expire !== undefined ? parseExpireMs(options.expire) : undefined;
  checkSandboxName(options.name);
  const { client, namespace, dataDir } = await connect(options);
  const sandbox = await untilCreated(namespace, options.name, (call) =>
    client.checkpoints.restore(options.fromCheckpoint, {
      ...call,
      namespace,
      ...(options.name ? { name: options.name } : {}),
      ...(options.pool ? { pool: options.pool } : {}),
      exposedPorts,
      ...(ttlMs !== undefined ? { ttlMs } : {}),
    }),
  );
  if (sandbox) printCreated(sandbox, { namespace, dataDir, origin: `restored from checkpoint ${options.fromCheckpoint}`, quiet: options.quiet === true });
}

/** The most copies one fork makes (the control plane's MAX_FORK_COUNT). */
const MAX_FORK_COUNT = 32;

export async function fork(
  sandbox: string,
  options: GlobalOptions & { namespace?: string; count: string; checkpoint?: string; quiet?: boolean },
): Promise<void> {
  const count = Number(options.count);
  if (!/^\d+$/.test(options.count) || count < 1 || count > MAX_FORK_COUNT) {
    throw new ValidationError("--count", `${JSON.stringify(options.count)} is not a number of copies; allowed: 1..${MAX_FORK_COUNT}`);
  }
  const { client, namespace, dataDir } = await connect(options);
  const result = await client.checkpoints.fork(sandbox, { namespace, count, ...(options.checkpoint ? { checkpoint: options.checkpoint } : {}), ...UNTIL_DONE });
  for (const copy of result.sandboxes) printCreated(copy, { namespace, dataDir, origin: `copy of ${sandbox}`, quiet: options.quiet === true });
  if (result.checkpoint) (options.quiet ? process.stderr : process.stdout).write(`checkpoint kept: ${result.checkpoint.name}\n`);
}

export async function pause(sandbox: string, options: GlobalOptions & { namespace?: string }): Promise<void> {
  const { client, namespace } = await connect(options);
  const paused = await client.sandboxes.pause(sandbox, { namespace, ...UNTIL_DONE });
  process.stdout.write(
    `sandbox ${sandbox} paused: its memory, processes and files are saved on node ${paused.status?.nodeName || "?"}; 'fsb resume ${sandbox}' runs it on\n`,
  );
}

export async function resume(sandbox: string, options: GlobalOptions & { namespace?: string; expire?: string }): Promise<void> {
  // Read before anything is asked of the control plane (bad usage, exit 2).
  const ttlMs = options.expire !== undefined ? parseExpireMs(options.expire) : undefined;
  const { client, namespace } = await connect(options);
  const expireTime = ttlMs !== undefined ? new Date(Date.now() + ttlMs).toISOString() : undefined;
  const resumed = await client.sandboxes.resume(sandbox, { namespace, ...(expireTime ? { expireTime } : {}), ...UNTIL_DONE });
  const address = resumed.status?.sandboxIP ? `, address ${resumed.status.sandboxIP}` : "";
  const end = resumed.spec.expireTime ? `; it ends at ${resumed.spec.expireTime}` : "";
  process.stdout.write(`sandbox ${sandbox} running on agent ${resumed.status?.assignedPod ?? "?"}${address}${end}\n`);
}
