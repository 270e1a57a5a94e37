import { setTimeout as sleep } from "node:timers/promises";
import { clearRunFiles, isAlive, resolveDataDir, runningPid } from "../data-dir.js";
import { connect } from "../connection.js";

export async function down(options: { dataDir?: string; deleteSandboxes?: boolean }): Promise<void> {
  const dataDir = resolveDataDir(options.dataDir);
  const pid = runningPid(dataDir);
  if (!pid) {
    clearRunFiles(dataDir);
    process.stdout.write(`Fast Sandbox is not running for ${dataDir}\n`);
    return;
  }
  if (options.deleteSandboxes) {
    const client = connect({ dataDir });
    const sandboxes = await client.sandboxes.list({ namespace: "*" });
    await Promise.all(sandboxes.map((s) => client.sandboxes.delete(s.metadata.name, { namespace: s.metadata.namespace ?? "default" })));
    process.stdout.write(`deleted ${sandboxes.length} sandboxes\n`);
  }
  process.kill(pid, "SIGTERM");
  for (let waited = 0; waited < 20_000 && isAlive(pid); waited += 100) await sleep(100);
  if (isAlive(pid)) process.kill(pid, "SIGKILL");
  clearRunFiles(dataDir);
  process.stdout.write(`Fast Sandbox stopped (pid ${pid})\n`);
}
