/**
 * A sandbox's own server may still be starting when the first request for its port arrives: a
 * create answers once the sandbox's command runs (and, through the E2B-compatible API, once the
 * in-sandbox daemon answers), not once the command listens — and E2B's SDKs call a port the moment
 * create returns (the code interpreter's 49999, say). So the first connection the proxy makes to a
 * port of a sandbox instance is tried again while the port refuses it, for `graceMs` at most, before
 * the request is given the connection (so no byte of its body is spent on a refused one). Once
 * the proxy has reached a port of an instance, a refusal there is the answer (a 502 at once): the
 * server went away. A port that never opens costs its first caller `graceMs` before that 502, and
 * gets no grace for `refusedForMs` after (a client polling a port whose server takes long to start
 * gets quick answers, and the sandbox, or its agent's relay, no storm of dials). Tries back off from
 * `intervalMs` to 10 times that. Ports are remembered per instance (a reset or recreated sandbox has
 * a new id, and a new grace), the most recent `capacity` of each kind. A caller that hangs up
 * (its `signal` aborts) ends the tries at once, and the port is not counted as refused.
 */
import type net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { RelayRefusedError, type DialTarget } from "./relay-dial.js";

export interface PortStartGraceOptions {
  /** How long a port's first connection is tried again while the port refuses it. @default 3000 */
  graceMs?: number;
  /** First pause between tries, doubling up to 10 times this. @default 25 */
  intervalMs?: number;
  /** How long a port that refused through a whole grace gets no grace. @default 30000 */
  refusedForMs?: number;
  /** Ports remembered, reached and refused each. @default 50000 */
  capacity?: number;
}

/** The port refused the connection (nothing listens there yet), directly or at the agent's relay. */
export function isRefused(error: unknown): boolean {
  if ((error as NodeJS.ErrnoException | undefined)?.code === "ECONNREFUSED") return true;
  return error instanceof RelayRefusedError && error.status === 502 && error.message.includes("ECONNREFUSED");
}

export class PortStartGrace {
  private readonly graceMs: number;
  private readonly intervalMs: number;
  private readonly refusedForMs: number;
  private readonly capacity: number;
  /** `<sandbox id>:<port>` of the ports reached, oldest first. */
  private readonly reached = new Map<string, true>();
  /** `<sandbox id>:<port>` of the ports that refused through a whole grace → until when they get none. */
  private readonly refused = new Map<string, number>();

  constructor(
    /** One try; `signal` aborts it (the caller hung up). */
    private readonly dial: (target: DialTarget, signal?: AbortSignal) => Promise<net.Socket>,
    options: PortStartGraceOptions = {},
  ) {
    this.graceMs = options.graceMs ?? 3000;
    this.intervalMs = options.intervalMs ?? 25;
    this.refusedForMs = options.refusedForMs ?? 30_000;
    this.capacity = options.capacity ?? 50_000;
  }

  /**
   * A connection to the target: the first one to a port of an instance is tried again while the
   * port refuses, within the grace; any other failure (and a refusal past the grace, or at a port
   * reached before) is thrown as it is. Once `signal` aborts (the caller hung up) no try is made,
   * the try in progress stops, and no pause is waited out: the abort's reason is thrown, and a
   * connection made meanwhile closed.
   */
  async connect(target: DialTarget, signal?: AbortSignal): Promise<net.Socket> {
    const key = this.keyOf(target);
    const graceless = !key || this.reached.has(key) || (this.refused.get(key) ?? 0) > Date.now();
    const deadline = Date.now() + this.graceMs;
    let pause = this.intervalMs;
    for (;;) {
      signal?.throwIfAborted();
      try {
        const socket = await this.dial(target, signal);
        if (signal?.aborted) {
          socket.destroy();
          signal.throwIfAborted();
        }
        if (key) {
          this.refused.delete(key);
          remember(this.reached, key, true, this.capacity);
        }
        return socket;
      } catch (error) {
        signal?.throwIfAborted();
        if (graceless || !key || !isRefused(error)) throw error;
        if (Date.now() + pause > deadline) {
          remember(this.refused, key, Date.now() + this.refusedForMs, this.capacity);
          throw error;
        }
        // An abort ends the pause with the abort's reason, as it ends a try.
        await sleep(pause, undefined, signal ? { signal } : {}).catch(() => signal?.throwIfAborted());
        pause = Math.min(pause * 2, this.intervalMs * 10);
      }
    }
  }

  private keyOf(target: DialTarget): string | undefined {
    return target.sandboxId ? `${target.sandboxId}:${target.port}` : undefined;
  }
}

/** Sets `key` as the newest entry of `map`, dropping the oldest past `capacity`. */
function remember<T>(map: Map<string, T>, key: string, value: T, capacity: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > capacity) map.delete(map.keys().next().value as string);
}
