import { join } from "node:path";
import type { ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import {
  AlreadyExistsError,
  AsyncQueue,
  BusyError,
  NotFoundError,
  UnavailableError,
  SANDBOX_ID_MAX_LENGTH,
  ValidationError,
  checkProcess,
  checkTailLines,
  isSandboxId,
  normalizeImageName,
  parseExecUser,
  parseImageReference,
  pb,
  sandboxStatsToMessage,
  toConnectError,
} from "@fast-sandbox/api/core";
import type { ImagePullProgress, Runtime, RuntimeSandbox } from "../runtime/runtime.js";
import { runtimeSpecOf, sandboxNetworkOf } from "./create-request.js";
import { readLog } from "../log-follower.js";
import { readLogTail } from "../log-tail.js";
import { removeLog, type LogRotation } from "../log-rotation.js";
import { Admission } from "./admission.js";
import { StatsHistory } from "./stats-history.js";
import { CreatesInFlight } from "./creates-in-flight.js";
import { CheckpointsInFlight, checkpointMethods, guardCheckpoints } from "./checkpoint-service.js";

export interface AgentIdentity {
  name: string;
  namespace: string;
  pool: string;
  nodeName: string;
}

export interface AgentServiceOptions {
  identity: AgentIdentity;
  runtime: Runtime;
  /** Directory of the sandboxes' log files. */
  logDir: string;
  /** Creates in flight (reported as `creating`; drained on stop). @default a new tracker */
  creates?: CreatesInFlight;
  /** Checkpoints (and in-place resumes) in flight (drained on stop). @default a new tracker */
  checkpoints?: CheckpointsInFlight;
  /**
   * Decides which creates fit (slots, exposed ports, not stopping); seed it with the runtime's
   * sandboxes (`adopt`) before serving. @default a new, empty one
   */
  admission?: Admission;
  /** The sandboxes' sampled resource use (GetSandboxStatsHistory). @default one over `runtime`, never started: empty histories */
  statsHistory?: StatsHistory;
  /** The rotation of the sandboxes' logs: a new sandbox's log is marked hot, and the logs' readers go by its records. @default none */
  logRotation?: Pick<LogRotation, "markHot" | "generations">;
}

function toAgentSandbox(sandbox: RuntimeSandbox): pb.AgentSandbox {
  return create(pb.AgentSandboxSchema, {
    sandboxId: sandbox.sandboxId,
    namespace: sandbox.namespace,
    name: sandbox.name,
    image: sandbox.image,
    state: sandbox.state,
    pid: sandbox.pid ?? 0,
    ...(sandbox.exitCode !== undefined ? { exitCode: sandbox.exitCode } : {}),
    oomKilled: sandbox.oomKilled ?? false,
    address: sandbox.address ?? "",
    checkpointing: sandbox.checkpointing ?? false,
    evicted: sandbox.evicted ?? "",
  });
}

function toPullProgress(progress: ImagePullProgress): pb.PullProgress {
  return create(pb.PullProgressSchema, { ...progress, bytesTotal: BigInt(progress.bytesTotal), bytesDone: BigInt(progress.bytesDone) });
}

/** The image names containerd holds plus their normalized forms, so `busybox` and `docker.io/library/busybox:latest` both match. */
function withNormalizedNames(images: string[]): string[] {
  return [...new Set(images.flatMap((name) => [name, normalizeImageName(name)]))].sort();
}

/** Exec output chunks (up to 64 KiB each) buffered per stream before the pipe pauses, and resumes. */
export const EXEC_QUEUE_HIGH = 64;
export const EXEC_QUEUE_LOW = 16;

function checkSandboxId(id: string): void {
  if (!isSandboxId(id)) {
    throw new ValidationError(
      "sandboxId",
      `${JSON.stringify(id)} is not a valid sandbox id: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most ${SANDBOX_ID_MAX_LENGTH} characters`,
    );
  }
}

/**
 * How long Status waits for containerd's lists within a call whose deadline is `timeoutMs` away: a
 * quarter of it (at most 500 ms) is left for the answer to travel. Undefined: no deadline, no budget.
 */
export function statusBudgetMs(timeoutMs: number | undefined): number | undefined {
  if (timeoutMs === undefined) return undefined;
  return Math.max(50, timeoutMs - Math.min(500, timeoutMs / 4));
}

/**
 * `work`, or a BusyError once `budgetMs` has passed without it: a heartbeat then hears that the agent
 * is alive and containerd slow (a churn of deletes makes its task list wait on every busy shim), and
 * does not take the agent for hung.
 */
async function withinBudget<T>(work: Promise<T>, budgetMs: number | undefined, what: string): Promise<T> {
  if (budgetMs === undefined) return work;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new BusyError(`containerd did not ${what} within ${Math.round(budgetMs)} ms (busy or restarting); the agent itself is alive — ask again`)),
      budgetMs,
    );
  });
  work.catch(() => undefined);
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `fn` and translates anything it throws into a ConnectError (the agent's API edge). */
async function edge<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw toConnectError(error);
  }
}

/** How long GetSandboxStats watches a sandbox's CPU time to tell its CPU use. */
export const STATS_WINDOW_MS = 100;

/** The agent's API: a thin layer over the Runtime that adds log files and streaming. */
export function createAgentService(options: AgentServiceOptions): ServiceImpl<typeof pb.AgentService> {
  const { identity, logDir } = options;
  // Checkpoints stop a sandbox's task for a moment: the rest of the API must not take that for an exit (checkpoint-service.ts).
  const checkpointsInFlight = options.checkpoints ?? new CheckpointsInFlight();
  const runtime = guardCheckpoints(options.runtime, checkpointsInFlight);
  const creates = options.creates ?? new CreatesInFlight();
  const admission = options.admission ?? new Admission(identity.name);
  const logPath = (sandboxId: string) => join(logDir, `${sandboxId}.log`);
  const statsHistory = options.statsHistory ?? new StatsHistory({ runtime: options.runtime });

  async function requireSandbox(sandboxId: string): Promise<RuntimeSandbox> {
    checkSandboxId(sandboxId);
    const sandbox = await runtime.get(sandboxId);
    if (!sandbox) throw new NotFoundError(`sandbox ${sandboxId} does not exist on agent ${identity.name}`);
    return sandbox;
  }

  return {
    ...checkpointMethods({
      agentName: identity.name,
      runtime,
      inFlight: checkpointsInFlight,
      // A task restored in place may write fast from its start, as a new sandbox's (createSandbox).
      restarted: (sandboxId) => options.logRotation?.markHot(logPath(sandboxId)),
    }),
    async status(_request, context) {
      return edge(async () => {
        const inFlight = creates.ids();
        const mark = admission.mark();
        const [images, listed] = await withinBudget(
          Promise.all([runtime.listImages(), runtime.list()]),
          statusBudgetMs(context.timeoutMs()),
          "list this agent's sandboxes and images",
        );
        admission.reconcile(listed, mark);
        // A create in flight is `creating` whatever its container's state, and listed even before its container exists.
        const creating = new Set(creates.ids().filter((id) => inFlight.includes(id)));
        const sandboxes = listed.map((sandbox) => (creating.has(sandbox.sandboxId) ? { ...sandbox, state: "creating" as const } : sandbox));
        for (const id of creating) {
          if (!listed.some((sandbox) => sandbox.sandboxId === id)) {
            sandboxes.push({ sandboxId: id, namespace: "", name: "", pool: identity.pool, image: "", state: "creating", labels: {} });
          }
        }
        const prepared = runtime.preparedInstances?.();
        return create(pb.AgentStatusSchema, {
          ...identity,
          images: withNormalizedNames(images),
          sandboxes: sandboxes.map(toAgentSandbox),
          pid: process.pid,
          retired: admission.retired,
          ...(prepared ? { preparedInstances: { target: prepared.target, ready: prepared.ready, error: prepared.error ?? "" } } : {}),
        });
      });
    },

    async createSandbox(request) {
      return edge(async () => {
        checkSandboxId(request.sandboxId);
        // As Exec: the control plane checks the same first; this covers a caller that reaches the agent directly.
        checkProcess({ command: request.command, args: request.args, envs: request.envs, workingDir: request.workingDir });
        // A bad network is refused before anything is reserved.
        sandboxNetworkOf(request.network);
        // Decided before the first await, so concurrent creates (from any control-plane replica)
        // cannot both take the last slot or the same port.
        const reservation = admission.admit({
          sandboxId: request.sandboxId,
          namespace: request.namespace,
          name: request.name,
          slots: request.slots,
          // An Isolated sandbox has an address, and so ports, of its own: only Shared ones compete for the agent's.
          exposedPorts: request.network?.mode === pb.SandboxNetwork_Mode.ISOLATED ? [] : request.exposedPorts,
        });
        let sandbox: RuntimeSandbox;
        try {
          sandbox = await creates.track(request.sandboxId, () => runtime.create(runtimeSpecOf(request, identity.pool, logPath(request.sandboxId))));
        } catch (error) {
          reservation.release();
          // The runtime undid its steps; the log file is the agent's to remove — unless it is
          // another's: a sandbox of that id exists (a retried create whose duplicate check failed
          // on containerd away, say), or that cannot be told now.
          if (
            !(error instanceof AlreadyExistsError) &&
            (await runtime.get(request.sandboxId).then(
              (found) => found === undefined,
              () => false,
            ))
          ) {
            await removeLog(logPath(request.sandboxId));
          }
          throw error;
        }
        reservation.confirm();
        // It may write fast from its first line: its log is checked closely from the start (log-rotation.ts).
        options.logRotation?.markHot(logPath(request.sandboxId));
        return toAgentSandbox(sandbox);
      });
    },

    async deleteSandbox(request) {
      return edge(async () => {
        checkSandboxId(request.sandboxId);
        // Until it has finished, a create of the same id is refused (creates-in-flight.ts).
        await creates.deleting(request.sandboxId, async () => {
          // A create of the same id still in flight (its caller gave up, e.g. a deadline) finishes
          // first: deleting under it would leave the container it goes on to make.
          await creates.settled(request.sandboxId);
          // The control plane always sends the grace period it wants; 0 means SIGKILL at once.
          await runtime.delete(request.sandboxId, { gracePeriodMs: Math.max(0, request.gracePeriodMs) });
          admission.deleted(request.sandboxId);
          await removeLog(logPath(request.sandboxId));
        });
        return create(pb.AgentDeleteSandboxResponseSchema, {});
      });
    },

    async getSandboxStats(request) {
      return edge(async () => {
        checkSandboxId(request.sandboxId);
        return sandboxStatsToMessage(await runtime.stats(request.sandboxId, STATS_WINDOW_MS));
      });
    },

    async getSandboxStatsHistory(request) {
      return edge(async () => {
        checkSandboxId(request.sandboxId);
        const samples = await statsHistory.samples(request.sandboxId, Number(request.sinceMs), Number(request.untilMs));
        return create(pb.AgentSandboxStatsHistoryResponseSchema, { samples: samples.map(sandboxStatsToMessage) });
      });
    },

    retire(request) {
      // Synchronous, like admission: no create can slip in between the check and the retirement.
      let retired = false;
      if (request.cancel) admission.unretire();
      else retired = admission.retireIfIdle();
      return Promise.resolve(create(pb.AgentRetireResponseSchema, { retired, sandboxes: admission.held }));
    },

    async listSandboxes() {
      return edge(async () => {
        const mark = admission.mark();
        const listed = await runtime.list();
        admission.reconcile(listed, mark);
        return create(pb.AgentListSandboxesResponseSchema, { sandboxes: listed.map(toAgentSandbox) });
      });
    },

    async *logs(request, context) {
      // Following ends when the command exits; the wait for that stops with the stream.
      const stop = new AbortController();
      const signal = AbortSignal.any([stop.signal, context.signal]);
      try {
        const tail = request.tailLines === undefined ? undefined : checkTailLines(request.tailLines, "tail_lines");
        const sandbox = await requireSandbox(request.sandboxId);
        // `unknown`: containerd could not tell the task's state (its shim busy), which does not mean it ended.
        const live = sandbox.state === "running" || sandbox.state === "created" || sandbox.state === "unknown";
        const following = request.follow && live && sandbox.exitCode === undefined;
        let finished = following ? runtime.wait(sandbox.sandboxId, signal) : Promise.resolve(0);
        if (following && sandbox.state === "unknown") {
          finished = finished.catch((error: unknown) => {
            if (error instanceof NotFoundError || signal.aborted) throw error;
            throw new UnavailableError(
              `containerd did not answer for sandbox ${sandbox.sandboxId}'s task (its state unknown: containerd busy or its shim gone), so its exit cannot be waited for; retry`,
              { cause: error },
            );
          });
        }
        finished.catch(() => undefined);
        const reading = { follow: following, finished, signal, generations: options.logRotation?.generations };
        // With a tail: its last lines, then readLog from the byte after them (log-tail.ts).
        const path = logPath(sandbox.sandboxId);
        for await (const data of tail === undefined ? readLog(path, reading) : readLogTail(path, tail, reading)) {
          yield create(pb.LogsResponseSchema, { data });
        }
      } catch (error) {
        throw toConnectError(error);
      } finally {
        stop.abort();
      }
    },

    async *pullImage(request) {
      const queue = new AsyncQueue<pb.PullProgress>();
      try {
        parseImageReference(request.image);
        // The pull is shared with creates and other callers waiting for the same image: a client
        // that goes away stops listening, the pull goes on.
        const pulled = runtime.pullImage(request.image, { onProgress: (progress) => queue.push(toPullProgress(progress)) }).then(
          () => queue.end(),
          (error: unknown) => queue.end(error),
        );
        yield* queue;
        await pulled;
      } catch (error) {
        throw toConnectError(error);
      }
    },

    async *exec(request, context) {
      const queue = new AsyncQueue<pb.ExecResponse>();
      // Above EXEC_QUEUE_HIGH chunks waiting for a slow client, the process's output pipe pauses
      // until the client has taken all but EXEC_QUEUE_LOW of them.
      const enqueue = (event: pb.ExecResponse["event"]): Promise<void> | undefined => {
        queue.push(create(pb.ExecResponseSchema, { event }));
        return queue.size > EXEC_QUEUE_HIGH ? queue.whenBelow(EXEC_QUEUE_LOW) : undefined;
      };
      try {
        await requireSandbox(request.sandboxId);
        if (request.command.length === 0) throw new ValidationError("command", "must name the program to run");
        // The control plane checks the same first; this covers a caller that reaches the agent directly.
        checkProcess({ command: request.command, envs: request.envs, workingDir: request.workingDir });
        if (request.user) parseExecUser("user", request.user);
        const exitCode = runtime
          .exec(
            request.sandboxId,
            {
              command: request.command,
              env: request.envs.map((e) => ({ name: e.name, value: e.value })),
              ...(request.workingDir ? { workingDir: request.workingDir } : {}),
              ...(request.user ? { user: request.user } : {}),
            },
            {
              onStdout: (chunk) => enqueue({ case: "stdout", value: chunk }),
              onStderr: (chunk) => enqueue({ case: "stderr", value: chunk }),
              signal: context.signal,
            },
          )
          .then(
            (code) => {
              queue.push(create(pb.ExecResponseSchema, { event: { case: "exitCode", value: code } }));
              queue.end();
            },
            (error: unknown) => queue.end(error),
          );
        yield* queue;
        await exitCode;
      } catch (error) {
        throw toConnectError(error);
      }
    },
  };
}
