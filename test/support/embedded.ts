/**
 * Starts a real embedded Fast Sandbox for one e2e case: its own data directory, containerd
 * namespace and cgroup root, real agent processes, the real HTTP API on loopback. `stop()` removes
 * everything the case created.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { destination, pino } from "pino";
import { API_VERSION, type SandboxPool } from "@fast-sandbox/api";
import { startEmbeddedControlPlane, type EmbeddedControlPlane, type LocalJanitorOptions } from "@fast-sandbox/controlplane";
import { FastSandboxClient, NotFoundError } from "@fast-sandbox/sdk";
import { BASE_IMAGE, ctr, importBaseImage, removeCgroupTree, removeNamespace } from "./containerd.js";
import { containerKind, isAnchor, isPreparedInstance } from "./containerd-contents.js";

export { BASE_IMAGE, ctr } from "./containerd.js";

export interface EmbeddedCase {
  /**
   * The in-process control plane, for its URL and what the API does not cover (the supervised
   * janitor process). Cases assert through `client` (pool status, agents, sandbox status) instead
   * of its internals, so that they hold in either mode.
   */
  controlPlane: EmbeddedControlPlane;
  /** A client of the public API with the case's token; a new one after `restart()`. */
  client: FastSandboxClient;
  token: string;
  dataDir: string;
  containerdNamespace: string;
  cgroupRoot: string;
  /** Stops the control plane (sandboxes keep running); `restart()` starts it again. */
  shutdown(): Promise<void>;
  /** Restarts the control plane on the same data directory (crash recovery). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface EmbeddedCaseOptions {
  /** Short name: used for the containerd namespace and cgroup root. */
  name: string;
  pools?: SandboxPool[];
  heartbeatIntervalMs?: number;
  /** First restart delay of a lost agent (keeps a killed agent away for a while). */
  agentRestartDelayMs?: number;
  /** Run the supervised janitor process, as `fsb up` does. @default no janitor */
  janitor?: LocalJanitorOptions;
  /** The window of the pools' create rates (capacity.dynamicBuffer). @default the control plane's */
  createRateWindowMs?: number;
}

export function pool(name: string, spec: Partial<SandboxPool["spec"]> & { maxSandboxesPerPod: number }, namespace = "default"): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name, namespace },
    spec: { capacity: { poolMin: 1, poolMax: 1 }, runtimeType: "container", image: BASE_IMAGE, ...spec },
  };
}

export async function startEmbedded(options: EmbeddedCaseOptions): Promise<EmbeddedCase> {
  const suffix = randomBytes(3).toString("hex");
  const containerdNamespace = `fsb-e2e-${options.name}-${suffix}`;
  const cgroupRoot = containerdNamespace;
  importBaseImage(containerdNamespace);
  const dataDir = mkdtempSync(join(tmpdir(), `fsb-e2e-${options.name}-`));
  const token = randomBytes(24).toString("base64url");
  const logger = pino({ level: process.env.FSB_TEST_LOG_LEVEL ?? "warn" }, destination(2));

  /** Starts the control plane, applies the pools it does not have yet, and waits until their agents serve. */
  const start = async (): Promise<{ controlPlane: EmbeddedControlPlane; client: FastSandboxClient }> => {
    const controlPlane = await startEmbeddedControlPlane({
      dataDir,
      token,
      containerdNamespace,
      cgroupRoot,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 500,
      ...(options.agentRestartDelayMs !== undefined ? { agentRestartDelayMs: options.agentRestartDelayMs } : {}),
      ...(options.janitor ? { janitor: options.janitor } : {}),
      ...(options.createRateWindowMs !== undefined ? { createRateWindowMs: options.createRateWindowMs } : {}),
      logger,
    });
    const client = new FastSandboxClient({ url: controlPlane.url, token });
    try {
      for (const p of options.pools ?? []) {
        const { namespace = "default", name } = p.metadata;
        const exists = await client.pools.get(name, { namespace }).then(
          () => true,
          (error: unknown) => {
            if (error instanceof NotFoundError) return false;
            throw error;
          },
        );
        if (!exists) await client.pools.apply(p);
      }
      // Wait until each pool has poolMin agents that serve (as the API lists them).
      await waitFor(
        async () => {
          for (const p of options.pools ?? []) {
            const agents = await client.pools.agents({ namespace: p.metadata.namespace ?? "default", pool: p.metadata.name });
            if (agents.filter((agent) => agent.ready).length < p.spec.capacity.poolMin) return false;
          }
          return true;
        },
        30_000,
        "pool agents ready",
      );
    } catch (error) {
      client.close();
      await controlPlane.close().catch(() => undefined);
      throw error;
    }
    return { controlPlane, client };
  };

  const state = { ...(await start()), running: true };
  const shutdown = async () => {
    if (!state.running) return;
    state.running = false;
    state.client.close();
    await state.controlPlane.close();
  };
  const embedded: EmbeddedCase = {
    get controlPlane() {
      return state.controlPlane;
    },
    get client() {
      return state.client;
    },
    token,
    dataDir,
    containerdNamespace,
    cgroupRoot,
    shutdown,
    async restart() {
      await shutdown();
      Object.assign(state, await start(), { running: true });
    },
    async stop() {
      try {
        if (state.running) {
          const client = state.client;
          for (const sandbox of await client.sandboxes.list({ namespace: "*" })) {
            await client.sandboxes
              .delete(sandbox.metadata.name, { namespace: sandbox.metadata.namespace ?? "default", gracePeriodMs: 0 })
              .catch(() => undefined);
          }
        }
      } finally {
        await shutdown();
        removeNamespace(containerdNamespace);
        removeCgroupTree(`/${cgroupRoot}`);
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
  };
  return embedded;
}

/** Polls `check` until it holds; fails with `what` after `timeoutMs` (a convergence bound, not a speed assertion). */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * What a containerd namespace holds besides images: container ids, task ids and snapshot keys
 * (image layers left out), a sandbox's named by its sandbox id — a sandbox that claimed a prepared
 * instance lives in the instance's container (`fsb-prepared-…`), labelled with its id. The agents'
 * own containers are left out: their shim anchors always, and their prepared instances in stock
 * (with their tasks and snapshots) unless `withPreparedStock` — set it where nothing at all may be
 * left (after a pool's deletion or its agents' end).
 *
 * An agent refills its stock in the background after a claim, so an instance may be caught half
 * made (its snapshot before its container exists, or its container removed before its snapshot):
 * what of `fsb-prepared-…` no container explains is looked at again for up to 3 s, and reported
 * only when it stays (a real leftover does).
 */
export function containerdLeftovers(
  namespace: string,
  options: { withPreparedStock?: boolean } = {},
): { containers: string[]; tasks: string[]; snapshots: string[] } {
  const deadline = Date.now() + 3_000;
  for (;;) {
    const { leftovers, unexplained } = readLeftovers(namespace, options.withPreparedStock ?? false);
    if (!unexplained || Date.now() > deadline) return leftovers;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
  }
}

function readLeftovers(
  namespace: string,
  withPreparedStock: boolean,
): { leftovers: { containers: string[]; tasks: string[]; snapshots: string[] }; unexplained: boolean } {
  const lines = (text: string) =>
    text
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean);
  // Snapshots and tasks first: each is made before (and removed after) its container, so a
  // container listed last explains whatever of it the earlier lists caught.
  const snapshotKeys = lines(ctr(namespace, "snapshots", "ls"))
    .slice(1)
    .map((l) => l.split(/\s+/)[0] ?? "")
    .filter((key) => !key.startsWith("sha256:"));
  const taskIds = lines(ctr(namespace, "tasks", "ls", "-q"));
  const containerIdsNow = lines(ctr(namespace, "containers", "ls", "-q"));
  const kinds = new Map(containerIdsNow.map((id) => [id, containerKind(namespace, id)]));
  let unexplained = false;
  const name = (id: string): string[] => {
    const what = kinds.has(id) ? kinds.get(id) : undefined;
    if (what?.kind === "anchor" || isAnchor(id)) return [];
    if (what?.kind === "prepared-stock") return withPreparedStock ? [id] : [];
    if (what?.kind === "sandbox") return [what.sandboxId];
    // No container (any more, or yet): a prepared instance's leftover, or one being made or removed.
    if (isPreparedInstance(id)) unexplained = true;
    return [id];
  };
  return {
    leftovers: {
      containers: containerIdsNow.flatMap(name),
      tasks: taskIds.flatMap(name),
      snapshots: snapshotKeys.flatMap(name),
    },
    unexplained,
  };
}
