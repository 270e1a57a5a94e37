import { networkModeOf, type SandboxPool } from "@fast-sandbox/api";
import { connect, type GlobalOptions } from "../connection.js";
import { forEachName } from "../failures.js";
import { age, printObjects, printTable, type OutputFormat } from "../output.js";
import { printConditions } from "./conditions.js";

export const POOL_HEADERS = ["NAME", "AGENTS", "DESIRED", "UPDATED", "SANDBOXES", "FREE", "PREPARED", "RUNTIME", "NETWORK", "EGRESS", "IMAGE", "AGE"];

/** The EGRESS column: the policy of an Isolated pool (an allowList with its number of entries), `-` for a Shared one. */
function egressCell(pool: SandboxPool): string {
  if (networkModeOf(pool.spec) === "Shared") return "-";
  const egress = pool.spec.network?.egress;
  if (!egress) return "allowAll";
  return egress.policy === "allowList" ? `allowList(${egress.allow?.length ?? 0})` : egress.policy;
}

/**
 * One pool as `fsb pools` prints it: AGENTS is ready/total; UPDATED counts the agents started from
 * the pool's current spec (the others are replaced once idle); PREPARED the prepared instances ready
 * on its agents (`-` for a pool that keeps none); counts the control plane has not written yet show
 * as `-`; NETWORK is the pool's mode (the default when it sets none).
 */
export function poolRow(pool: SandboxPool, now = Date.now()): string[] {
  const status = pool.status;
  const count = (value: number | undefined) => (value === undefined ? "-" : String(value));
  return [
    pool.metadata.name,
    `${status?.readyAgents ?? 0}/${status?.agents ?? 0}`,
    count(status?.desiredAgents),
    count(status?.updatedAgents),
    count(status?.sandboxes),
    count(status?.freeSlots),
    count(status?.preparedInstances),
    pool.spec.runtimeType ?? "container",
    networkModeOf(pool.spec),
    egressCell(pool),
    pool.spec.image ?? "-",
    age(pool.metadata.creationTimestamp, now),
  ];
}

export async function pools(options: GlobalOptions & { namespace?: string; allNamespaces?: boolean; output: OutputFormat }): Promise<void> {
  const { client, namespace } = await connect(options);
  const list = await client.pools.list({ namespace: options.allNamespaces ? "*" : namespace });
  printObjects(options.output, { apiVersion: "v1", kind: "List", items: list }, () => {
    if (list.length === 0) {
      process.stdout.write("No pools. Create one with: npx fsb apply -f pool.yaml\n");
      return;
    }
    const withNamespace = options.allNamespaces === true;
    printTable(
      withNamespace ? ["NAMESPACE", ...POOL_HEADERS] : POOL_HEADERS,
      list.map((p) => (withNamespace ? [p.metadata.namespace ?? "", ...poolRow(p)] : poolRow(p))),
    );
  });
}

export async function getPool(name: string, options: GlobalOptions & { namespace?: string; output: OutputFormat }): Promise<void> {
  const { client, namespace } = await connect(options);
  const pool = await client.pools.get(name, { namespace });
  printObjects(options.output, pool, () => {
    printTable(POOL_HEADERS, [poolRow(pool)]);
    printConditions(pool);
  });
}

/**
 * Deletes pools one by one; the control plane refuses a pool that still has sandboxes. One that fails
 * is reported and the others are deleted all the same (exit 1 at the end).
 */
export async function deletePools(names: string[], options: GlobalOptions & { namespace?: string }): Promise<void> {
  const { client, namespace } = await connect(options);
  await forEachName(names, async (name) => {
    await client.pools.delete(name, { namespace });
    process.stdout.write(`pool ${name} deleted\n`);
  });
}
