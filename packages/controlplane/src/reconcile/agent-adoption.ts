/**
 * Adoption, the same in both deployment modes: when an agent (re)connects, what it runs is
 * compared with the sandbox records assigned to it. Slots of sandboxes it still runs are restored
 * in the registry (a Lost sandbox it still runs is Running again), a Running record whose container
 * vanished, or whose process 1 is gone (a host restart ends every task and keeps every container),
 * becomes Lost, and containers no record owns are removed (creates still in flight on the
 * agent are left alone). A running sandbox's `status.sandboxIP` follows the address its agent
 * reports (Isolated network), and goes when its instance does. Records the manager is working on
 * are skipped: its own writes tell.
 *
 * Adoptions that arrive together share one list of the Sandboxes (a new leader adopts every agent at
 * once; after a blip the agents reconnect within a heartbeat): every adoption asked for in one go
 * (before the caller awaits anything), or while the previous list is still being read, joins the
 * next list, taken once they have all asked — so after each of their statuses was asked for, as each
 * one's own list used to be. One list is read at a time, and at most `concurrency` adoptions act on
 * it at once. The list stays a read of the store, not an informer's cache: a cache can lag, and a container
 * another replica has just created for a record the cache does not hold yet would be removed as
 * an orphan.
 */
import type { Logger } from "pino";
import { FsbError, UnavailableError, type Sandbox } from "@fast-sandbox/api";
import { processOneGone, type AgentSandbox, type AgentStatus } from "../agent-client/agent-client.js";
import { systemClock, type Clock } from "../controller/clock.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { ResourceStore } from "../store/resource-store.js";
import { DEFAULT_NAMESPACE, sandboxKey, type AgentClients, type SandboxManager } from "../fastpath/sandbox-manager.js";
import { withSandboxIP } from "../fastpath/sandbox-network.js";
import { setCondition, writeStatus } from "../fastpath/sandbox-status.js";
import { lostInstanceCondition } from "./lost-instance.js";

export interface AgentAdoptionOptions {
  store: ResourceStore;
  registry: AgentRegistry;
  manager: SandboxManager;
  agents: AgentClients;
  logger: Logger;
  /** Dates the conditions adoption writes. @default systemClock */
  clock?: Clock;
  /** Adoptions acting on a list at once (each reads and writes its agent's records one by one). @default 8 */
  concurrency?: number;
}

export class AgentAdoption {
  private readonly options: AgentAdoptionOptions;
  private readonly clock: Clock;
  private readonly concurrency: number;
  /** The list the adoptions asked for now will share: not started yet, so joining it is still after their statuses. */
  private gathering: Promise<Sandbox[]> | undefined;
  /** The list being read (settled: none); the next one starts after it. */
  private listing: Promise<unknown> = Promise.resolve();
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(options: AgentAdoptionOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.concurrency = options.concurrency ?? 8;
    if (!Number.isSafeInteger(this.concurrency) || this.concurrency < 1)
      throw new RangeError(`AgentAdoption: concurrency ${this.concurrency} must be a whole number >= 1`);
  }

  /**
   * Every Sandbox, listed after the call: the next list not yet started, which every adoption asked
   * for until it starts shares. It starts once the caller's synchronous code is over (adoptions of
   * every agent asked for in one go join it) and after the list being read ends (those arriving
   * meanwhile join it as well).
   */
  private listAfterNow(): Promise<Sandbox[]> {
    if (this.gathering) return this.gathering;
    const gathering = (async () => {
      await this.listing;
      // From here on a new adoption waits for the next list: this one may have missed its status.
      this.gathering = undefined;
      const listed = this.options.store.list("Sandbox").then(({ items }) => items);
      this.listing = listed.catch(() => undefined);
      return listed;
    })();
    this.gathering = gathering;
    return gathering;
  }

  /** Runs `work` once fewer than `concurrency` adoptions are acting. */
  private async inTurn<T>(work: () => Promise<T>): Promise<T> {
    if (this.active >= this.concurrency) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active++;
    try {
      return await work();
    } finally {
      // The slot passes to the next in line, or is freed.
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }

  /**
   * Adopts what a (re)started agent runs: restores its slots, flags records whose container vanished, removes containers nobody owns.
   * Every sandbox is tried; when any could not be adopted (the store or the agent failed), it then
   * fails with UnavailableError saying how many, so the caller can adopt again (adoption is idempotent).
   */
  async adopt(agentName: string, status: AgentStatus): Promise<void> {
    const items = await this.listAfterNow();
    await this.inTurn(() => this.adoptListed(agentName, status, items));
  }

  /** `adopt` with `items`, every Sandbox as listed after `status` was asked for. */
  private async adoptListed(agentName: string, status: AgentStatus, items: Sandbox[]): Promise<void> {
    const { store, registry, manager, logger } = this.options;
    const failures: unknown[] = [];
    // Only records of the agent's namespace: a record of another namespace names a Pod of that
    // namespace, gone since, whose name this agent's Pod has (a Pod's name is unique only within its
    // namespace). Its report says nothing of that sandbox, which is not restored here nor made Lost.
    const mine = items.filter(
      (s) => s.status?.assignedPod === agentName && this.options.agents.exists?.(agentName, s.metadata.namespace ?? DEFAULT_NAMESPACE) !== false,
    );
    const running = new Map(status.sandboxes.map((s) => [s.sandboxId, s]));
    const known = new Set(items.map((s) => s.status?.sandboxID).filter(Boolean));
    // A Running record the status lacks may be a create that finished after the status was asked
    // for (another replica's, on an agent that serves): only a status asked for after the list, which
    // lacks it too, says its instance vanished. (Orphans, the other way round, need the status asked
    // for before the list: a container is never created before its record.)
    // So does one it holds with process 1 gone: the status may predate the record's instance (a
    // resume reuses its sandbox id over a leftover of the pause).
    const lostOrRunning = (s: Sandbox) => s.status?.phase === "Running" || s.status?.phase === "Lost";
    const doubtful = (s: Sandbox) => {
      const held = running.get(s.status?.sandboxID ?? "");
      return held ? processOneGone(held) : s.status?.phase === "Running";
    };
    const unreported = mine.some((s) => lostOrRunning(s) && !s.metadata.deletionTimestamp && doubtful(s));
    let confirmed: Map<string, AgentSandbox> | undefined;
    if (unreported) {
      try {
        const fresh = await this.options.agents.get(agentName)?.status();
        if (fresh) confirmed = new Map(fresh.sandboxes.map((s) => [s.sandboxId, s]));
      } catch (error) {
        failures.push(error);
      }
    }
    // One sandbox that cannot be adopted must not keep the others (or the agent) out.
    for (const listed of mine) {
      const namespace = listed.metadata.namespace ?? DEFAULT_NAMESPACE;
      const key = sandboxKey(namespace, listed.metadata.name);
      try {
        // Act on the record as it is now, and leave alone what the manager is working on (a delete
        // that releases the slot meanwhile must not be undone by restoring it here).
        if (manager.isBusy(namespace, listed.metadata.name)) continue;
        const sandbox = await store.get("Sandbox", { namespace, name: listed.metadata.name });
        if (!sandbox || sandbox.metadata.uid !== listed.metadata.uid || sandbox.status?.assignedPod !== agentName) continue;
        const id = sandbox.status?.sandboxID ?? "";
        const held = running.get(id);
        const heldStopped = held !== undefined && processOneGone(held) && lostOrRunning(sandbox);
        // Held with its process 1 gone: only a status asked for after the list decides (the agent did not answer: not now).
        if (heldStopped && !confirmed) continue;
        const instance = heldStopped ? confirmed?.get(id) : (held ?? confirmed?.get(id));
        // Held with its process 1 gone is not running it: a Running record is Lost, a Lost one stays so,
        // and the instance goes (it holds its slot and ports on the agent, which the registry gave back).
        const stopped = instance !== undefined && processOneGone(instance) && lostOrRunning(sandbox);
        const reported = stopped ? undefined : instance;
        if (stopped && sandbox.status?.phase === "Lost" && !sandbox.metadata.deletionTimestamp) await manager.removeLostInstance(sandbox);
        if (reported) {
          // The record as the agent reports the instance: with its own address, or none.
          const observed = { ...sandbox, status: withSandboxIP(sandbox.status ?? {}, reported.address) };
          if (sandbox.status?.phase === "Lost" && !sandbox.metadata.deletionTimestamp) {
            // Back after it was given up for lost (failurePolicy Manual): it still runs, so it is Running again.
            logger.info({ sandbox: key, agent: agentName }, "the agent is back and still runs this Lost sandbox; it is Running again");
            registry.restore({ sandboxKey: key, agentName, ports: manager.portsHeldBy(observed) });
            const now = this.clock.now();
            const conditions = setCondition(
              setCondition(sandbox.status.conditions, { type: "Ready", status: "True", reason: "AgentReturned", message: `agent ${agentName} is back` }, now),
              { type: "AgentConnected", status: "True", reason: "AgentReady" },
              now,
            );
            await writeStatus(store, sandbox, {
              phase: "Running",
              endpoints: manager.endpointsOf(sandbox),
              conditions,
              sandboxIP: reported.address,
            });
          } else if (!sandbox.metadata.deletionTimestamp) {
            // (A sandbox being deleted gets no slot back: its cleanup is about to release it.)
            registry.restore({ sandboxKey: key, agentName, ports: manager.portsHeldBy(observed) });
            if (sandbox.status?.phase === "Running") {
              // Its endpoints as this control plane's proxy serves them: `fsb up` may have been started
              // again with another proxy port or URL since they were written.
              const endpoints = manager.endpointsOf(sandbox);
              const endpointsMoved = endpoints.join(" ") !== (sandbox.status.endpoints ?? []).join(" ");
              if (sandbox.status.sandboxIP !== reported.address || endpointsMoved) {
                await writeStatus(store, sandbox, { sandboxIP: reported.address, ...(endpointsMoved ? { endpoints } : {}) });
              }
            }
          }
        } else if (!sandbox.metadata.deletionTimestamp && sandbox.status?.phase === "Running") {
          // Not confirmed by a status asked for after the list (the agent did not answer, or went): not decided now.
          if (!stopped && !confirmed) continue;
          const lost = lostInstanceCondition(agentName, stopped ? "stopped" : "missing", instance?.evicted);
          logger.warn({ sandbox: key, agent: agentName, reason: lost.reason }, `${lost.message}; marking it Lost`);
          const written = await writeStatus(store, sandbox, { phase: "Lost", sandboxIP: undefined }, lost, this.clock.now());
          if (stopped) await manager.removeLostInstance(written);
        }
      } catch (error) {
        logger.error({ err: error, sandbox: key, agent: agentName }, "could not adopt this sandbox");
        failures.push(error);
      }
    }
    const client = this.options.agents.get(agentName);
    for (const orphan of status.sandboxes) {
      // A create still in flight on the agent is nobody's orphan yet.
      if (known.has(orphan.sandboxId) || orphan.state === "creating") continue;
      logger.warn({ agent: agentName, sandboxId: orphan.sandboxId }, "removing a container no sandbox record owns");
      await client?.deleteSandbox(orphan.sandboxId, 0).catch((error: unknown) => {
        logger.error({ err: error, sandboxId: orphan.sandboxId }, "could not remove it");
        failures.push(error);
      });
    }
    if (failures.length > 0) {
      const first = FsbError.from(failures[0]);
      throw new UnavailableError(`could not adopt ${failures.length} sandbox(es) of agent ${agentName} (first: ${first.message}); adopt again`, {
        cause: first,
      });
    }
  }
}
