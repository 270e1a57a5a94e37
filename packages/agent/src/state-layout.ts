/**
 * Where an agent keeps the host-side files of its sandboxes, under its state directory
 * (`FSB_AGENT_STATE_DIR`; in the embedded mode `<dataDir>/agents/<agentName>`). The agent writes
 * these paths and the janitor removes them for sandboxes whose agent or record is gone, so both
 * take them from here.
 *
 *   <stateDir>/logs/<sandboxId>.log                    the sandbox's stdout and stderr
 *   <stateDir>/logs/<sandboxId>.log.1                  its previous part, once rotated (log-rotation.ts)
 *   <stateDir>/logs/<sandboxId>.log.1.tmp              that part while a rotation copies it
 *   <stateDir>/run/<sandboxId>/                         the helper's run directory (exit code)
 *   <stateDir>/<sandboxId>.<execId>.stdout|.stderr      FIFOs of an exec in progress
 */
import { join } from "node:path";

/** Directory of the sandboxes' log files. */
export function sandboxLogDir(stateDir: string): string {
  return join(stateDir, "logs");
}

/** The file that receives a sandbox's stdout and stderr. */
export function sandboxLogPath(stateDir: string, sandboxId: string): string {
  return join(sandboxLogDir(stateDir), `${sandboxId}.log`);
}

/** The previous part of a log file, moved aside when the file outgrew its limit (log-rotation.ts). */
export function rotatedLogPath(logPath: string): string {
  return `${logPath}.1`;
}

/** Where a rotation copies the previous part before it replaces `rotatedLogPath` in one rename. */
export function rotatingLogPath(logPath: string): string {
  return `${rotatedLogPath(logPath)}.tmp`;
}

/** Every file a sandbox's log may consist of: the log, its rotated part and a rotation's copy. */
export function sandboxLogFiles(logPath: string): string[] {
  return [logPath, rotatedLogPath(logPath), rotatingLogPath(logPath)];
}

/** The sandbox id a file in the log directory belongs to (`<id>.log`, `.log.1`, `.log.1.tmp`); undefined for another file. */
export function sandboxIdOfLogFile(fileName: string): string | undefined {
  const match = /^(.+)\.log(?:\.1(?:\.tmp)?)?$/.exec(fileName);
  return match?.[1];
}

/** Directory of a sandbox that the helper writes to (mounted at /.fast-sandbox/run). */
export function sandboxRunDir(stateDir: string, sandboxId: string): string {
  return join(stateDir, "run", sandboxId);
}

/** Base name (without `.stdout`/`.stderr`) of the FIFOs of one exec. */
export function execFifoName(sandboxId: string, execId: string): string {
  return `${sandboxId}.${execId}`;
}

/** The sandbox and exec of an exec FIFO's file name; undefined for any other name. */
export function parseExecFifoName(fileName: string): { sandboxId: string; execId: string } | undefined {
  const match = /^(.+)\.(exec-[0-9a-f]+)\.(?:stdout|stderr)$/.exec(fileName);
  return match?.[1] && match[2] ? { sandboxId: match[1], execId: match[2] } : undefined;
}

/** True for a file name of an exec FIFO (of `sandboxId` when given) directly in the state directory. */
export function isExecFifoName(fileName: string, sandboxId?: string): boolean {
  if (!/\.exec-[0-9a-f]+\.(stdout|stderr)$/.test(fileName)) return false;
  return sandboxId === undefined || fileName.startsWith(`${sandboxId}.exec-`);
}
