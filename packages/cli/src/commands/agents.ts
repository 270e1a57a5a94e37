import { connect, type GlobalOptions } from "../connection.js";
import { printObjects, printTable, type OutputFormat } from "../output.js";

export async function agents(options: GlobalOptions & { namespace?: string; pool?: string; output: OutputFormat }): Promise<void> {
  // Every namespace's agents unless -n names one.
  const { client } = await connect(options);
  const list = await client.pools.agents({ namespace: options.namespace ?? "*", ...(options.pool ? { pool: options.pool } : {}) });
  // A List, as `ls`, `pools` and `stats` print: -o json/yaml of every listing has the same shape.
  printObjects(options.output, { apiVersion: "v1", kind: "List", items: list }, () =>
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
