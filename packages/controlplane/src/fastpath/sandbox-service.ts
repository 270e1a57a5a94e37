import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  ACCESS_TOKEN_RESPONSE_HEADER,
  FailedPreconditionError,
  ValidationError,
  checkTailLines,
  pb,
  sandboxSpecFromMessage,
  sandboxStatsToMessage,
  sandboxToMessage,
  toConnectError,
} from "@fast-sandbox/api";
import type { ExecEvent } from "../agent-client/agent-client.js";
import { hashAccessToken, newAccessToken } from "../proxy/access-token.js";
import type { SandboxManager } from "./sandbox-manager.js";
import { creatorAnnotations } from "./kubernetes-caller.js";
import type { CheckpointManager } from "./checkpoint-manager.js";
import { checkpointServiceMethods } from "./checkpoint-service.js";
import type { SandboxPauses } from "./checkpoint-pauses.js";

/** The largest page of ListSandboxes (a page_size above it gets this many): bounds what one answer holds. */
export const MAX_LIST_PAGE_SIZE = 1000;

/** Runs `fn`, translating anything thrown into a ConnectError: the fast-path API's one error edge. */
export async function edge<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw toConnectError(error);
  }
}

export async function* edgeStream<T>(fn: () => AsyncIterable<T>): AsyncGenerator<T> {
  try {
    yield* fn();
  } catch (error) {
    throw toConnectError(error);
  }
}

/**
 * The header a follow of Logs asks for keepalives with, in seconds (the daemon's, E2B's name): the
 * Python SDK's follows over HTTP/1.1, which has no PINGs, tell a quiet command from a connection
 * that died without a word by them.
 */
const KEEPALIVE_HEADER = "Keepalive-Ping-Interval";

/** The keepalive interval a request asked for, in milliseconds (1 s to 1 h); undefined: none asked (or not a number). */
function keepaliveIntervalMs(header: string | null): number | undefined {
  const seconds = Number(header ?? "");
  if (!header || !Number.isFinite(seconds) || seconds <= 0) return undefined;
  return Math.min(Math.max(seconds, 1), 3600) * 1000;
}

/**
 * `source`'s items, and `keepalive` after every `intervalMs` without one (an empty Logs response: no
 * output to show). The read of `source` in flight is kept across keepalives, never dropped.
 */
async function* withKeepalives<T>(source: AsyncIterable<T>, intervalMs: number, keepalive: T): AsyncGenerator<T> {
  const iterator = source[Symbol.asyncIterator]();
  let pending = iterator.next();
  try {
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const tick = new Promise<"tick">((resolve) => (timer = setTimeout(() => resolve("tick"), intervalMs)));
      const result = await Promise.race([pending, tick]).finally(() => clearTimeout(timer));
      if (result === "tick") {
        yield keepalive;
        continue;
      }
      if (result.done) return;
      yield result.value;
      pending = iterator.next();
    }
  } finally {
    // The client went (its call's signal ends the source): a read still in flight settles unobserved.
    pending.catch(() => undefined);
    void iterator.return?.()?.catch(() => undefined);
  }
}

/** The range of GetSandboxStatsHistory: milliseconds since the Unix epoch, 0 for an open end; until not before since. */
export function statsHistoryRange(since: bigint, until: bigint): { sinceMs: number; untilMs: number } {
  if (since < 0n) throw new ValidationError("sinceMs", `must be a time in milliseconds since the Unix epoch, or 0 for the first sample kept; got ${since}`);
  if (until < 0n) throw new ValidationError("untilMs", `must be a time in milliseconds since the Unix epoch, or 0 for the last sample; got ${until}`);
  if (until > 0n && until < since) throw new ValidationError("untilMs", `must not be before sinceMs (${since}); got ${until}`);
  return { sinceMs: Number(since), untilMs: Number(until) };
}

function execEventToMessage(event: ExecEvent): pb.ExecResponse {
  switch (event.type) {
    case "stdout":
      return create(pb.ExecResponseSchema, { event: { case: "stdout", value: event.data } });
    case "stderr":
      return create(pb.ExecResponseSchema, { event: { case: "stderr", value: event.data } });
    case "exit":
      return create(pb.ExecResponseSchema, { event: { case: "exitCode", value: event.exitCode } });
  }
}

/**
 * `checkpoints`: CheckpointSandbox, ForkSandbox… and CreateSandbox(from_checkpoint); `pauses`:
 * PauseSandbox, ResumeSandbox; @default none (they fail with FailedPrecondition)
 */
/** The longest a delete waits between SIGTERM and SIGKILL. */
export const MAX_GRACE_PERIOD_MS = 600_000;

/**
 * A create whose expireTime has passed would run a sandbox only for the expiry to delete it (its
 * slot taken, its pool woken, its image pulled, and Running answered): refused. An update may set a
 * past time, which ends the sandbox now (E2B's setTimeout(0)).
 */
function refusePastExpiry(expireTime: string | undefined): void {
  if (expireTime && Date.parse(expireTime) <= Date.now()) {
    throw new ValidationError("spec.expireTime", `${expireTime} has passed; give a time in the future, or leave it empty for no end`);
  }
}

export function createSandboxService(manager: SandboxManager, checkpoints?: CheckpointManager, pauses?: SandboxPauses): ServiceImpl<typeof pb.SandboxService> {
  const checkpointMethods = checkpointServiceMethods(checkpoints, pauses);
  return {
    ...checkpointMethods,
    createSandbox: (request, context) =>
      edge(async () => {
        const accessToken = newAccessToken();
        const accessTokenHash = hashAccessToken(accessToken);
        const creator = creatorAnnotations(context);
        const input = {
          namespace: request.namespace,
          name: request.name,
          labels: request.labels,
          requestId: request.requestId,
          accessTokenHash,
          ...(creator ? { annotations: creator } : {}),
        };
        const spec = request.spec ? sandboxSpecFromMessage(request.spec) : undefined;
        refusePastExpiry(spec?.expireTime);
        let sandbox = request.fromCheckpoint
          ? await (checkpoints ?? noCheckpoints()).createFrom({ ...input, fromCheckpoint: request.fromCheckpoint, spec: spec ?? {} })
          : await manager.create({ ...input, spec: spec ?? sandboxSpecFromMessage(undefined) });
        if (sandbox.status?.accessTokenHash !== accessTokenHash) {
          // A retry of a request whose sandbox an earlier attempt created: that attempt's answer (and
          // token) never reached the caller, who gets a new token, which replaces the earlier one.
          const rotated = await manager.rotateAccessToken(sandbox.metadata.namespace, sandbox.metadata.name);
          sandbox = rotated.sandbox;
          context.responseHeader.set(ACCESS_TOKEN_RESPONSE_HEADER, rotated.accessToken);
        } else {
          context.responseHeader.set(ACCESS_TOKEN_RESPONSE_HEADER, accessToken);
        }
        return sandboxToMessage(sandbox);
      }),
    getSandbox: (request) => edge(async () => sandboxToMessage(await manager.get(request.namespace, request.name))),
    getSandboxStats: (request) => edge(async () => sandboxStatsToMessage(await manager.stats(request.namespace, request.name))),
    getSandboxStatsHistory: (request) =>
      edge(async () => {
        const { sinceMs, untilMs } = statsHistoryRange(request.sinceMs, request.untilMs);
        const samples = await manager.statsHistory(request.namespace, request.name, sinceMs, untilMs);
        return create(pb.GetSandboxStatsHistoryResponseSchema, { samples: samples.map(sandboxStatsToMessage) });
      }),
    listSandboxes: (request) =>
      edge(async () => {
        const pool = request.pool || undefined;
        // Clients from before pages ask for neither: every sandbox, in one answer.
        if (request.pageSize === 0 && request.pageToken === "") {
          return create(pb.ListSandboxesResponseSchema, { sandboxes: (await manager.list(request.namespace, pool)).map(sandboxToMessage) });
        }
        if (request.pageSize < 0) {
          throw new ValidationError("page_size", `${request.pageSize} is negative; 0 asks for the largest page (${MAX_LIST_PAGE_SIZE})`);
        }
        const pageSize = Math.min(request.pageSize || MAX_LIST_PAGE_SIZE, MAX_LIST_PAGE_SIZE);
        const page = await manager.listPage(request.namespace, pool, { pageSize, pageToken: request.pageToken });
        return create(pb.ListSandboxesResponseSchema, { sandboxes: page.items.map(sandboxToMessage), nextPageToken: page.nextPageToken });
      }),
    updateSandbox: (request) =>
      edge(async () => {
        // The request carries the whole desired spec, as every client sends it (the SDKs, `fsb apply`).
        // One without a spec would otherwise be read as an empty spec, and refused for changing the image.
        if (!request.spec) {
          throw new ValidationError(
            "spec",
            "is required (send the current spec, changing only expireTime, failurePolicy, recoveryTimeoutSeconds, resetRevision or consistencyMode)",
          );
        }
        return sandboxToMessage(
          await manager.update({
            namespace: request.namespace,
            name: request.name,
            spec: sandboxSpecFromMessage(request.spec),
            ...(request.replaceLabels || Object.keys(request.labels).length > 0 ? { labels: request.labels } : {}),
            ...(request.resourceVersion ? { resourceVersion: request.resourceVersion } : {}),
          }),
        );
      }),
    deleteSandbox: (request) =>
      edge(async () => {
        const grace = request.gracePeriodMs;
        if (grace !== undefined && (grace < 0 || grace > MAX_GRACE_PERIOD_MS)) {
          throw new ValidationError(
            "grace_period_ms",
            `${grace} is out of range: from 0 (SIGKILL at once) to ${MAX_GRACE_PERIOD_MS} (10 minutes); default 2000`,
          );
        }
        // A delete whose agent must first be ready (a paused sandbox's checkpoint node, an agent away) waits for it, as `fsb rm` does.
        await manager.delete(request.namespace, request.name, grace, { waitForAgent: true });
        return create(pb.DeleteSandboxResponseSchema, {});
      }),
    logs: (request, context) =>
      edgeStream(async function* () {
        const { follow, tailLines } = request;
        // Refused before the agent is asked (which refuses it too).
        const options = tailLines === undefined ? { follow } : { follow, tailLines: checkTailLines(tailLines, "tail_lines") };
        const logs = manager.logs(request.namespace, request.name, options, context.signal);
        const intervalMs = request.follow ? keepaliveIntervalMs(context.requestHeader.get(KEEPALIVE_HEADER)) : undefined;
        for await (const data of intervalMs === undefined ? logs : withKeepalives(logs, intervalMs, new Uint8Array())) {
          yield create(pb.LogsResponseSchema, { data });
        }
      }),
    rotateAccessToken: (request) =>
      edge(async () => {
        const { accessToken, sandbox } = await manager.rotateAccessToken(request.namespace, request.name);
        return create(pb.RotateAccessTokenResponseSchema, { accessToken, sandbox: sandboxToMessage(sandbox) });
      }),
    getSandboxProxy: () => create(pb.GetSandboxProxyResponseSchema, { url: manager.proxyBaseUrl }),
    exec: (request, context) =>
      edgeStream(async function* () {
        const events = manager.exec(
          {
            namespace: request.namespace,
            name: request.name,
            command: request.command,
            envs: request.envs.map((e) => ({ name: e.name, value: e.value })),
            workingDir: request.workingDir,
            user: request.user,
          },
          context.signal,
        );
        for await (const event of events) yield execEventToMessage(event);
      }),
  };
}

function noCheckpoints(): never {
  throw new FailedPreconditionError("this control plane does not offer checkpoints: from_checkpoint cannot be used here");
}
