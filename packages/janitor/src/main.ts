/**
 * Entry point of a janitor process configured by its environment (janitor-config.ts): the one
 * `fsb up` supervises, and the per-node DaemonSet's. Prints one JSON line
 * `{"event":"started","pid":…,"metrics":…}` on stdout once it runs; stops on SIGTERM, SIGINT, or
 * when its stdin closes with FSB_JANITOR_EXIT_ON_STDIN_CLOSE=1 (its supervisor is gone).
 */
import { stderrLogger } from "@fast-sandbox/agent/stderr-logger";
import { janitorConfigFromEnv } from "./janitor-config.js";
import { startJanitorProcess } from "./janitor-process.js";

const logger = stderrLogger({ name: "fsb-janitor" });

async function main(): Promise<void> {
  const running = await startJanitorProcess({ ...janitorConfigFromEnv(), logger });
  process.stdout.write(`${JSON.stringify({ event: "started", pid: process.pid, ...(running.metricsUrl ? { metrics: running.metricsUrl } : {}) })}\n`);
  let stopping = false;
  const stop = (reason: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ reason }, "janitor stopping");
    void running.stop().finally(() => process.exit(0));
    // A pass stuck on containerd must not keep the process: its work is idempotent and resumes next time.
    setTimeout(() => process.exit(0), 5_000).unref();
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  if (process.env.FSB_JANITOR_EXIT_ON_STDIN_CLOSE === "1") process.stdin.on("end", () => stop("parent closed stdin")).resume();
}

main().catch((error: unknown) => {
  logger.fatal({ err: error }, "janitor failed to start");
  process.exit(1);
});
