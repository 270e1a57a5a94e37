/**
 * Specs' nft: keeps the tables in memory with as much of nft's semantics as the agent's own
 * commands need (a transaction is all or nothing; adding to a missing table or set fails with
 * ENOENT; `add` of what exists changes nothing), records every transaction, and can lose
 * everything as `nft flush ruleset` does.
 */
import { FsbError } from "@fast-sandbox/api/core";
import { elementKey, type NftCommand, type NftFamily, type NftListing } from "./firewall-rules.js";
import { Nft } from "./nft.js";

interface State {
  tables: string[];
  chains: Record<string, Record<string, unknown>>;
  rules: Record<string, unknown>[];
  sets: Record<string, { kind: "set" | "map"; body: Record<string, unknown>; elem: unknown[] }>;
}

const key = (body: Record<string, unknown>, name = body.name) => `${String(body.family)} ${String(body.table)} ${String(name)}`;
const tableOf = (body: Record<string, unknown>) => `${String(body.family)} ${String(body.table)}`;

export class FakeNft extends Nft {
  /** Every transaction applied (or refused), in order. */
  readonly batches: NftCommand[][] = [];
  private state: State = { tables: [], chains: {}, rules: [], sets: {} };

  override apply(commands: readonly NftCommand[], options: { check?: boolean } = {}): Promise<void> {
    if (commands.length === 0 || options.check) return Promise.resolve();
    this.batches.push([...commands]);
    const before = structuredClone(this.state);
    try {
      for (const command of commands) this.execute(command);
      return Promise.resolve();
    } catch (error) {
      this.state = before;
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  override list(family: NftFamily, table: string): Promise<NftListing | undefined> {
    const name = `${family} ${table}`;
    if (!this.state.tables.includes(name)) return Promise.resolve(undefined);
    const mine = (body: Record<string, unknown>) => tableOf(body) === name;
    return Promise.resolve([
      { table: { family, name: table } },
      ...Object.values(this.state.sets)
        .filter(({ body }) => mine(body))
        .map(({ kind, body, elem }) => ({ [kind]: { ...body, ...(elem.length > 0 ? { elem: structuredClone(elem) } : {}) } })),
      ...Object.values(this.state.chains)
        .filter(mine)
        .map((chain) => ({ chain: { ...chain } })),
      ...this.state.rules.filter(mine).map((rule) => ({ rule: { ...rule } })),
    ]);
  }

  /** What `nft flush ruleset` does (e.g. `systemctl reload nftables`): every table gone. */
  flushRuleset(): void {
    this.state = { tables: [], chains: {}, rules: [], sets: {} };
  }

  /** The commands of every transaction since `from`, flattened. */
  commandsSince(from: number): NftCommand[] {
    return this.batches.slice(from).flat();
  }

  private execute(command: NftCommand): void {
    const [verb, object] = Object.entries(command)[0] as [string, Record<string, Record<string, unknown>>];
    const [kind, body] = Object.entries(object)[0] as [string, Record<string, unknown>];
    const state = this.state;
    const missing = () => new FsbError("internal", `nft batch failed: Error: Could not process rule: No such file or directory (${verb} ${kind} ${key(body)})`);
    const needTable = (table: string) => {
      if (!state.tables.includes(table)) throw missing();
    };
    if (kind === "table") {
      const table = `${String(body.family)} ${String(body.name)}`;
      if (verb === "add") {
        if (!state.tables.includes(table)) state.tables.push(table);
      } else if (verb === "delete") {
        needTable(table);
        state.tables = state.tables.filter((name) => name !== table);
        const other = (item: Record<string, unknown>) => tableOf(item) !== table;
        state.rules = state.rules.filter(other);
        state.chains = Object.fromEntries(Object.entries(state.chains).filter(([, chain]) => other(chain)));
        state.sets = Object.fromEntries(Object.entries(state.sets).filter(([, set]) => other(set.body)));
      }
    } else if (kind === "chain") {
      needTable(tableOf(body));
      const chain = key(body);
      const ofChain = (rule: Record<string, unknown>) => key(rule, rule.chain) === chain;
      if (verb === "add") state.chains[chain] ??= { ...body };
      else if (!state.chains[chain]) throw missing();
      else if (verb === "flush") state.rules = state.rules.filter((rule) => !ofChain(rule));
      else if (verb === "delete") delete state.chains[chain];
    } else if (kind === "rule") {
      if (!state.chains[key(body, body.chain)]) throw missing();
      state.rules.push({ ...body });
    } else if (kind === "set" || kind === "map") {
      needTable(tableOf(body));
      const set = key(body);
      if (verb === "add") state.sets[set] ??= { kind, body: { ...body }, elem: [] };
      else if (!state.sets[set]) throw missing();
      else if (verb === "delete") delete state.sets[set];
    } else if (kind === "element") {
      const set = state.sets[key(body)];
      if (!set) throw missing();
      for (const item of body.elem as unknown[]) {
        const held = set.elem.findIndex((existing) => elementKey(existing) === elementKey(item));
        if (verb === "add" && held < 0) set.elem.push(item);
        else if (verb === "delete") {
          if (held < 0) throw missing();
          set.elem.splice(held, 1);
        }
      }
    }
  }
}
