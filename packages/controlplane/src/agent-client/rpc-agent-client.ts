/**
 * The AgentClient adapter over Connect RPC: the one place where the agent's wire messages are
 * translated to and from the port's domain types, and its errors into FsbError.
 */
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { Http2SessionManager, createConnectTransport } from "@connectrpc/connect-node";
import { create } from "@bufbuild/protobuf";
import {
  ERROR_CODE_HEADER,
  UnavailableError,
  fromConnectError,
  guardSessionErrors,
  pb,
  sandboxStatsFromMessage,
  sendBearerToken,
  type EgressPolicyName,
} from "@fast-sandbox/api";
import { NoAnswerError } from "./agent-client.js";
import type {
  AgentClient,
  AgentSandbox,
  AgentSandboxNetwork,
  AgentSandboxSpec,
  AgentSandboxState,
  AgentStatus,
  ExecEvent,
  ExecRequest,
  PreparedInstancesReport,
  PullPhase,
  PullProgress,
} from "./agent-client.js";
import { agentCheckpointCalls, type AgentCheckpointClient } from "./agent-checkpoints.js";

/** Deadline of a create: long enough for an image pull the create has to wait for. */
const CREATE_TIMEOUT_MS = 60_000;
/** Retiring is a flag at the agent: an answer comes at once, or the agent is not answering. */
const RETIRE_TIMEOUT_MS = 5000;
const LIST_TIMEOUT_MS = 10_000;
/** A stats call watches the sandbox's CPU for 100 ms, then reads its snapshot's size. */
const STATS_TIMEOUT_MS = 10_000;
/** Added to a delete's grace period: the time to remove task, container and snapshot after the kill. */
const DELETE_MARGIN_MS = 30_000;
const DEFAULT_STATUS_TIMEOUT_MS = 5000;

/**
 * Calls the agent at `endpoint` (`host:port`) on a kept-alive HTTP/2 connection; errors arrive as
 * FsbError. The agent serves gRPC, gRPC-Web and Connect on one port; the client speaks Connect's
 * own protocol with binary messages, which costs less per call than gRPC's framing and trailers
 * (the bench's empty agent call: 3.6 vs 4.4 ms p50, docs/PERFORMANCE.md).
 */
export function createAgentClient(endpoint: string, token: string): AgentClient & AgentCheckpointClient {
  const baseUrl = `http://${endpoint}`;
  const sessions = new Http2SessionManager(baseUrl, { pingIntervalMs: 10_000, idleConnectionTimeoutMs: 60_000 });
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: "2",
    useBinaryFormat: true,
    interceptors: [sendBearerToken(token)],
    sessionManager: guardSessionErrors(sessions),
  });
  return createAgentClientOnTransport(transport, { endpoint, close: () => sessions.abort() });
}

export interface AgentTransportOptions {
  /** Names the agent in error messages, e.g. its `host:port`. */
  endpoint: string;
  /** Releases the transport's connection; what `close()` does. @default nothing */
  close?: () => void;
}

/** The AgentClient over any Connect transport: HTTP/2 to a real agent, or an in-process router (tests). */
export function createAgentClientOnTransport(transport: Transport, options: AgentTransportOptions): AgentClient & AgentCheckpointClient {
  const client: Client<typeof pb.AgentService> = createClient(pb.AgentService, transport);
  /** A call's error as an FsbError; `streaming`: what a stream cut off was doing, for its message. */
  const translatedError = (error: unknown, streaming?: string): Error => {
    // A call nobody cancelled that ends "canceled" lost its connection (the agent died or restarted).
    if (error instanceof ConnectError && error.code === Code.Canceled) {
      const message = streaming
        ? `agent at ${options.endpoint} went away (${error.rawMessage}) while ${streaming}`
        : `agent at ${options.endpoint} dropped the connection: ${error.rawMessage}`;
      return new NoAnswerError(message, { cause: error });
    }
    const translated = fromConnectError(error);
    if (translated instanceof UnavailableError && cutOff(error)) return new NoAnswerError(translated.message, { cause: error });
    return translated;
  };
  const unary = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (error) {
      throw translatedError(error);
    }
  };
  /** Each message of a server stream translated (`undefined`: nothing the port can carry, skipped); errors as FsbError. */
  async function* translatedStream<M, T>(
    open: () => AsyncIterable<M>,
    translate: (message: M) => T | undefined,
    streaming: string,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<T> {
    try {
      for await (const message of open()) {
        const translated = translate(message);
        if (translated !== undefined) yield translated;
      }
    } catch (error) {
      // Cancelled by the caller's own signal: that, not the agent going away.
      if (signal?.aborted) throw fromConnectError(error);
      throw translatedError(error, streaming);
    }
  }
  const callOptions = (signal: AbortSignal | undefined) => (signal ? { signal } : {});
  return {
    status: async (timeoutMs = DEFAULT_STATUS_TIMEOUT_MS) => agentStatusFromMessage(await unary(() => client.status({}, { timeoutMs }))),
    createSandbox: async (spec) =>
      agentSandboxFromMessage(await unary(() => client.createSandbox(agentSandboxSpecToMessage(spec), { timeoutMs: CREATE_TIMEOUT_MS }))),
    deleteSandbox: async (sandboxId, gracePeriodMs) => {
      await unary(() => client.deleteSandbox({ sandboxId, gracePeriodMs }, { timeoutMs: gracePeriodMs + DELETE_MARGIN_MS }));
    },
    stats: async (sandboxId) => sandboxStatsFromMessage(await unary(() => client.getSandboxStats({ sandboxId }, { timeoutMs: STATS_TIMEOUT_MS }))),
    statsHistory: async (sandboxId, sinceMs, untilMs) =>
      (
        await unary(() =>
          client.getSandboxStatsHistory(
            { sandboxId, sinceMs: BigInt(Math.max(0, Math.floor(sinceMs))), untilMs: BigInt(Math.max(0, Math.floor(untilMs))) },
            { timeoutMs: STATS_TIMEOUT_MS },
          ),
        )
      ).samples.map(sandboxStatsFromMessage),
    listSandboxes: async () => (await unary(() => client.listSandboxes({}, { timeoutMs: LIST_TIMEOUT_MS }))).sandboxes.map(agentSandboxFromMessage),
    retire: async (cancel = false) => {
      try {
        const answer = await client.retire({ cancel }, { timeoutMs: RETIRE_TIMEOUT_MS });
        return { retired: answer.retired, sandboxes: answer.sandboxes };
      } catch (error) {
        // An agent older than Retire (during an upgrade) cannot be asked: it is stopped as it was before.
        if (error instanceof ConnectError && error.code === Code.Unimplemented) return { retired: !cancel, sandboxes: 0 };
        return unary(() => Promise.reject(error as Error));
      }
    },
    logs: (sandboxId, { follow, tailLines }, signal) =>
      translatedStream(
        () => client.logs({ sandboxId, follow, ...(tailLines !== undefined ? { tailLines } : {}) }, callOptions(signal)),
        logChunkFromMessage,
        // Reading logs again repeats nothing (a command run again would): worth saying.
        `${follow ? "following" : "reading"} the logs of sandbox ${sandboxId}; retry`,
        signal,
      ),
    exec: (request, signal) =>
      translatedStream(
        () => client.exec(execRequestToMessage(request), callOptions(signal)),
        execEventFromMessage,
        `running a command in sandbox ${request.sandboxId}`,
        signal,
      ),
    // No deadline: a large image takes what it takes; progress shows it moving, `signal` stops waiting.
    pullImage: (image, signal) =>
      translatedStream(() => client.pullImage({ image }, callOptions(signal)), pullProgressFromMessage, `pulling image ${image}`, signal),
    ...agentCheckpointCalls(client, unary),
    close: () => options.close?.(),
  };
}

/**
 * Whether a call that failed as unavailable went out and lost its connection (reset, dropped: the
 * agent may be doing what it asked), rather than never reaching the agent — its connection could not
 * be made (refused, unreachable, an unknown host: the connect or the address lookup failed) — or
 * being answered by the agent itself (its errors carry their Fast Sandbox code).
 */
function cutOff(error: unknown): boolean {
  if (error instanceof ConnectError && error.metadata.has(ERROR_CODE_HEADER)) return false;
  for (let cause: unknown = error, depth = 0; cause instanceof Error && depth < 10; cause = cause.cause, depth++) {
    const syscall = (cause as { syscall?: unknown }).syscall;
    if (syscall === "connect" || syscall === "getaddrinfo") return false;
  }
  return true;
}

const SANDBOX_STATES: readonly AgentSandboxState[] = ["creating", "created", "running", "stopped", "unknown"];
const PULL_PHASES: readonly PullPhase[] = ["resolving", "downloading", "unpacking", "done"];

function isOneOf<T extends string>(values: readonly T[], value: string): value is T {
  return (values as readonly string[]).includes(value);
}

function agentSandboxFromMessage(message: pb.AgentSandbox): AgentSandbox {
  return {
    sandboxId: message.sandboxId,
    namespace: message.namespace,
    name: message.name,
    image: message.image,
    // A state this control plane does not know (a newer agent's) tells it nothing it can act on.
    state: isOneOf(SANDBOX_STATES, message.state) ? message.state : "unknown",
    ...(message.pid > 0 ? { pid: message.pid } : {}),
    ...(message.exitCode !== undefined ? { exitCode: message.exitCode } : {}),
    oomKilled: message.oomKilled,
    ...(message.address ? { address: message.address } : {}),
    ...(message.checkpointing ? { checkpointing: true } : {}),
    ...(message.evicted ? { evicted: message.evicted } : {}),
  };
}

function agentStatusFromMessage(message: pb.AgentStatus): AgentStatus {
  return {
    name: message.name,
    namespace: message.namespace,
    pool: message.pool,
    nodeName: message.nodeName,
    images: [...message.images],
    sandboxes: message.sandboxes.map(agentSandboxFromMessage),
    pid: message.pid,
    ...(message.retired ? { retired: true } : {}),
    ...(message.preparedInstances ? { preparedInstances: preparedInstancesFromMessage(message.preparedInstances) } : {}),
  };
}

function preparedInstancesFromMessage(message: pb.PreparedInstances): PreparedInstancesReport {
  return { target: message.target, ready: message.ready, ...(message.error ? { error: message.error } : {}) };
}

/** Limits the spec leaves out travel as 0 ("none") on the wire. */
export function agentSandboxSpecToMessage(spec: AgentSandboxSpec): pb.AgentCreateSandboxRequest {
  return create(pb.AgentCreateSandboxRequestSchema, {
    sandboxId: spec.sandboxId,
    namespace: spec.namespace,
    name: spec.name,
    image: spec.image,
    command: spec.command,
    args: spec.args,
    envs: spec.envs.map(({ name, value }) => ({ name, value })),
    workingDir: spec.workingDir ?? "",
    runtimeType: spec.runtimeType,
    cpuMillis: spec.cpuMillis ?? 0,
    memoryBytes: BigInt(spec.memoryBytes ?? 0),
    pids: spec.pids ?? 0,
    ephemeralStorageBytes: BigInt(spec.ephemeralStorageBytes ?? 0),
    slots: spec.slots ?? 0,
    exposedPorts: spec.exposedPorts,
    network: sandboxNetworkToMessage(spec.network),
    fromCheckpoint: spec.fromCheckpoint ?? "",
  });
}

const EGRESS_KINDS: Record<EgressPolicyName, pb.EgressPolicy_Kind> = {
  allowAll: pb.EgressPolicy_Kind.ALLOW_ALL,
  denyAll: pb.EgressPolicy_Kind.DENY_ALL,
  allowList: pb.EgressPolicy_Kind.ALLOW_LIST,
};

/** Shared is sent as such, not left unset: the agent is told, not left to assume. */
function sandboxNetworkToMessage(network: AgentSandboxNetwork): pb.SandboxNetwork {
  if (network.mode === "Shared") return create(pb.SandboxNetworkSchema, { mode: pb.SandboxNetwork_Mode.SHARED });
  return create(pb.SandboxNetworkSchema, {
    mode: pb.SandboxNetwork_Mode.ISOLATED,
    egress: {
      kind: EGRESS_KINDS[network.egress.policy],
      allow: (network.egress.allow ?? []).map((rule) => ({ cidr: rule.cidr, ports: rule.ports ?? [], protocol: rule.protocol ?? "" })),
    },
    allowSandboxToSandbox: network.allowSandboxToSandbox,
  });
}

function execRequestToMessage(request: ExecRequest): pb.AgentExecRequest {
  return create(pb.AgentExecRequestSchema, {
    sandboxId: request.sandboxId,
    command: request.command,
    envs: (request.envs ?? []).map(({ name, value }) => ({ name, value })),
    workingDir: request.workingDir ?? "",
    user: request.user ?? "",
  });
}

function logChunkFromMessage(message: pb.LogsResponse): Uint8Array {
  return message.data;
}

function execEventFromMessage(message: pb.ExecResponse): ExecEvent | undefined {
  const { event } = message;
  switch (event.case) {
    case "stdout":
      return { type: "stdout", data: event.value };
    case "stderr":
      return { type: "stderr", data: event.value };
    case "exitCode":
      return { type: "exit", exitCode: event.value };
    case undefined:
      return undefined;
  }
}

function pullProgressFromMessage(message: pb.PullProgress): PullProgress | undefined {
  // A phase this control plane does not know (a newer agent's) is progress it cannot show; the pull goes on.
  if (!isOneOf(PULL_PHASES, message.phase)) return undefined;
  return {
    image: message.image,
    phase: message.phase,
    layersTotal: message.layersTotal,
    layersDone: message.layersDone,
    bytesTotal: Number(message.bytesTotal),
    bytesDone: Number(message.bytesDone),
    digest: message.digest,
  };
}
