import { connect, type GlobalOptions } from "../connection.js";
import { printObjects, printTable, type OutputFormat } from "../output.js";

export async function agents(options: GlobalOptions & { namespace?: string; pool?: string; output: OutputFormat }): Promise<void> {
  const list = await connect(options).pools.agents({ namespace: options.namespace ?? "*", ...(options.pool ? { pool: options.pool } : {}) });
  printObjects(options.output, list, () =>
    printTable(
      ["NAME", "POOL", "ENDPOINT", "CAPACITY", "ALLOCATED", "READY", "PID", "IMAGES"],
      list.map((a) => [
        a.name,
        `${a.namespace}/${a.pool}`,
        a.endpoint,
        String(a.capacity),
        String(a.allocated),
        a.ready ? "yes" : "no",
        a.pid ? String(a.pid) : "-",
        a.images.join(",") || "-",
      ]),
    ),
  );
}
