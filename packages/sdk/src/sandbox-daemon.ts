/**
 * @internal What `commands`, `files` and `pty` share: Connect clients of one sandbox's daemon, the
 * options of each call (deadline, signal, user), and the one translation of what a call throws.
 * Not part of the SDK's public surface.
 */
import { createClient, type CallOptions, type Client } from "@connectrpc/connect";
import { daemonCallError, isSandboxGone } from "./errors.js";
import type { DaemonChannel } from "./daemon-channel.js";
import { Filesystem } from "./gen/envd/filesystem/filesystem_pb.js";
import { Process } from "./gen/envd/process/process_pb.js";
import { deadline, duration, type RequestOptions } from "./request-options.js";

/** Options of calls that act as a Linux user of the sandbox. */
export interface UserOptions {
  /** The Linux user to act as (E2B's `Authorization: Basic base64("<user>:")`). @default the daemon's default user */
  user?: string;
}

export interface SandboxDaemonSource {
  /** For messages: `sb-1` (and its namespace when not `default`). */
  readonly label: string;
  readonly requestTimeoutMs: number;
  channel(options: RequestOptions): Promise<DaemonChannel>;
  /**
   * A failed call's error once the proxy said the instance is gone (`isSandboxGone`): the source may
   * look the sandbox up and tell a replaced instance (`replacedError`); `what` is the call's context.
   */
  gone?(error: Error, what: string, signal: AbortSignal | undefined): Promise<Error>;
}

export class SandboxDaemon {
  constructor(private readonly source: SandboxDaemonSource) {}

  get label(): string {
    return this.source.label;
  }

  get defaultRequestTimeoutMs(): number {
    return this.source.requestTimeoutMs;
  }

  channel(options: RequestOptions): Promise<DaemonChannel> {
    return this.source.channel(options);
  }

  async process(options: RequestOptions): Promise<Client<typeof Process>> {
    return createClient(Process, (await this.channel(options)).transport);
  }

  async filesystem(options: RequestOptions): Promise<Client<typeof Filesystem>> {
    return createClient(Filesystem, (await this.channel(options)).transport);
  }

  /** The request deadline of a call: its own, else the connection's. */
  requestTimeoutMs(options: RequestOptions): number {
    return duration(options.requestTimeoutMs, "requestTimeoutMs") ?? this.source.requestTimeoutMs;
  }

  /** Connect's options of a unary call. */
  unaryOptions(options: RequestOptions & UserOptions): CallOptions {
    const timeoutMs = deadline(this.requestTimeoutMs(options));
    return {
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      headers: userHeader(options.user),
    };
  }

  /** Runs a unary call, translating what it throws. */
  async call<T>(what: string, options: RequestOptions & UserOptions, fn: (callOptions: CallOptions) => Promise<T>): Promise<T> {
    const callOptions = this.unaryOptions(options);
    try {
      return await fn(callOptions);
    } catch (error) {
      throw await this.explained(this.error(error, what, options.signal, callOptions.timeoutMs, "requestTimeoutMs"), what, options.signal);
    }
  }

  /** The one translation of a failed daemon call; `what` gets "in sandbox <label>" unless it says so already. */
  error(error: unknown, what: string, signal: AbortSignal | undefined, timeoutMs: number | undefined, timeoutOption: string): Error {
    return daemonCallError(error, { what: this.where(what), sandbox: this.label, signal, timeoutMs, timeoutOption });
  }

  /**
   * A translated error, once more where the proxy said the instance is gone: the handle's sandbox may
   * live on as another instance (a reset), which its source then tells (one look-up by name).
   */
  async explained(error: Error, what: string, signal: AbortSignal | undefined): Promise<Error> {
    if (!isSandboxGone(error) || !this.source.gone) return error;
    return this.source.gone(error, this.where(what), signal);
  }

  private where(what: string): string {
    return what.endsWith(` in sandbox ${this.label}`) ? what : `${what} in sandbox ${this.label}`;
  }
}

/** `Authorization: Basic base64("<user>:")`, E2B's way of naming the Linux user; none for the default user. */
export function userHeader(user: string | undefined): Record<string, string> {
  if (user === undefined || user === "") return {};
  return { authorization: `Basic ${Buffer.from(`${user}:`).toString("base64")}` };
}
