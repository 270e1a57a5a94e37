/**
 * Whether a new sandbox's in-sandbox daemon (E2B's "envd", on SANDBOX_DAEMON_PORT) answers: E2B's
 * SDKs send commands right after a create returns, without a readiness probe of their own, so the
 * create answers only once `GET /health` gives 204. The check is a port so unit specs can fake it;
 * `pollEnvdHealth` is the real one, with a bounded deadline. The embedded mode asks the address
 * directly (one host); the Kubernetes mode through the relay of the sandbox's agent (`relay`): an
 * Isolated sandbox's address is on a bridge inside its agent's network, routable from nowhere else.
 */
import http from "node:http";
import { SANDBOX_DAEMON_PORT, TimeoutError, UnavailableError } from "@fast-sandbox/api";
import { sleep, systemClock, type Clock } from "../controller/clock.js";
import { SandboxDialer } from "../proxy/sandbox-dialer.js";

/** Resolves once the sandbox's daemon answers; rejects (TimeoutError, UnavailableError) when it does not. */
export type EnvdReadiness = (sandbox: { sandboxID: string; address: string; agent?: string }, signal?: AbortSignal) => Promise<void>;

/** The agents' relays, through which the daemons are asked (Kubernetes). */
export interface EnvdRelay {
  /** The relay (`host:port` of the agent's API) of an agent, undefined while it is not known. */
  endpointOf(agentName: string): string | undefined;
  /** The token a relay (`host:port`) requires (its agent's: agent-token.ts), undefined for a relay not known. */
  token: (relay: string) => string | undefined;
}

export interface PollEnvdHealthOptions {
  /** How long the daemon has to answer 204 after the sandbox started. @default 20000 */
  timeoutMs?: number;
  /** Pause between tries. @default 50 */
  intervalMs?: number;
  /** Deadline of one `GET /health`. @default 2000 */
  requestTimeoutMs?: number;
  /** @default SANDBOX_DAEMON_PORT (49983) */
  port?: number;
  /** @default systemClock */
  clock?: Clock;
  /** Ask through the relay of the sandbox's agent. @default the address directly */
  relay?: EnvdRelay;
}

/** The daemon's health URL at `address` (IPv4 or IPv6). */
export function envdHealthUrl(address: string, port = SANDBOX_DAEMON_PORT): string {
  return `http://${address.includes(":") ? `[${address}]` : address}:${port}/health`;
}

/** Polls `GET http://<address>:49983/health` until it answers 204, or fails at the deadline with the last answer. */
export function pollEnvdHealth(options: PollEnvdHealthOptions = {}): EnvdReadiness {
  const timeoutMs = options.timeoutMs ?? 20_000;
  const intervalMs = options.intervalMs ?? 50;
  const requestTimeoutMs = options.requestTimeoutMs ?? 2000;
  const clock = options.clock ?? systemClock;
  const port = options.port ?? SANDBOX_DAEMON_PORT;
  const relay = options.relay;
  // No grace for a port still closed: this poll is the waiting.
  const dialer = relay ? new SandboxDialer(relay.token, { portStartGraceMs: 0 }) : undefined;
  return async ({ sandboxID, address, agent }, signal) => {
    const url = envdHealthUrl(address, port);
    const deadline = clock.now().getTime() + timeoutMs;
    let last = "no answer yet";
    for (;;) {
      if (signal?.aborted) throw new UnavailableError(`stopped waiting for the daemon of sandbox ${sandboxID}: ${String(signal.reason)}`);
      try {
        const timeout = AbortSignal.timeout(Math.max(1, Math.min(requestTimeoutMs, deadline - clock.now().getTime())));
        const both = signal ? AbortSignal.any([signal, timeout]) : timeout;
        let status: number;
        if (relay && dialer) {
          const endpoint = agent ? relay.endpointOf(agent) : undefined;
          if (!endpoint) throw new Error(`the relay of agent ${agent ?? "(none)"} is not known yet`);
          status = await getStatus(url, dialer.freshConnection({ host: address, port, relay: endpoint, sandboxId: sandboxID }), both);
        } else {
          const response = await fetch(url, { signal: both });
          await response.body?.cancel();
          status = response.status;
        }
        if (status === 204) return;
        last = `it answered ${status}`;
      } catch (error) {
        const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
        // A try the overall deadline cut short says less than the answer before it.
        const cutByDeadline = clock.now().getTime() >= deadline && last !== "no answer yet";
        if (!cutByDeadline) last = cause instanceof Error ? cause.message : String(cause);
      }
      if (clock.now().getTime() + intervalMs >= deadline) {
        throw new TimeoutError(`the in-sandbox daemon of sandbox ${sandboxID} did not answer GET ${url} with 204 within ${timeoutMs / 1000}s (last: ${last})`);
      }
      await sleep(clock, intervalMs);
    }
  };
}

/**
 * The status of `GET url` over a connection of its own (a tunnel through a relay), the body
 * discarded. This side closes the tunnel after the answer, never the daemon (so `keep-alive`, which
 * Node would otherwise replace with `close` on a connection of no Agent): a connection the sandbox
 * closed first would sit in TIME-WAIT inside it for 60 s, which runsc 20221219 refuses to
 * checkpoint (an E2B pause right after the create would fail).
 */
function getStatus(url: string, connection: Pick<http.ClientRequestArgs, "agent" | "createConnection">, signal: AbortSignal): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { ...connection, signal, headers: { connection: "keep-alive" } }, (response) => {
      // The tunnel itself: a kept-alive connection is detached from its request once the answer is read.
      const tunnel = response.socket;
      response.resume();
      response.once("end", () => {
        tunnel.destroy();
        resolve(response.statusCode ?? 0);
      });
      response.once("error", reject);
    });
    request.once("error", reject);
  });
}
