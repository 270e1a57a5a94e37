/**
 * A directory watch in a sandbox (`files.watchDir`): its events arrive at `onEvent` as the daemon
 * streams them, until `stop()`, the watch's `timeoutMs`, or a failure (told to `onExit`).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { FilesystemEvent as FilesystemEventMessage } from "./gen/envd/filesystem/filesystem_pb.js";
import { EventType } from "./gen/envd/filesystem/filesystem_pb.js";
import type { EntryInfo } from "./filesystem.js";

/** What happened to an entry of the watched directory. */
export type FilesystemEventType = "create" | "write" | "remove" | "rename" | "chmod";

export interface FilesystemEvent {
  /** The entry's path relative to the watched directory. */
  name: string;
  type: FilesystemEventType;
  /** The entry as it is after the event, when the watch asked for it (`includeEntry`). */
  entry?: EntryInfo;
}

export interface WatchHandleInit {
  events: AsyncIterator<FilesystemEventMessage>;
  onEvent: (event: FilesystemEvent) => void | Promise<void>;
  onExit?: ((error?: Error) => void | Promise<void>) | undefined;
  stop: () => void;
  translate: (error: unknown) => Error;
  entryOf: (message: NonNullable<FilesystemEventMessage["entry"]>) => EntryInfo;
}

/** The watch whose `onEvent` runs (in its async context): its `stop()` must not wait for that delivery. */
const delivering = new AsyncLocalStorage<WatchHandle>();

export class WatchHandle {
  private stopped = false;
  private readonly init: WatchHandleInit;
  private readonly finished: Promise<void>;

  constructor(init: WatchHandleInit) {
    this.init = init;
    this.finished = this.receive();
  }

  /**
   * Stops watching; resolves once no more events will be delivered. Called from the watch's own
   * `onEvent`, it resolves at once: the watch ends (and tells `onExit`) when that delivery returns,
   * which waiting for the end would wait on for ever.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.init.stop();
    if (delivering.getStore() === this) return;
    await this.finished;
  }

  private async receive(): Promise<void> {
    let failure: Error | undefined;
    try {
      // Stopped during a delivery (from its onEvent): the stream is not read again.
      while (!this.stopped) {
        const next = await this.init.events.next();
        if (next.done || this.stopped) break;
        const type = eventType(next.value.type);
        if (!type) continue;
        const event: FilesystemEvent = {
          name: next.value.name,
          type,
          ...(next.value.entry ? { entry: this.init.entryOf(next.value.entry) } : {}),
        };
        await delivering.run(this, () => this.init.onEvent(event));
      }
    } catch (error) {
      if (!this.stopped) failure = this.init.translate(error);
    } finally {
      this.init.stop();
    }
    try {
      await this.init.onExit?.(failure);
    } catch {
      // A failing onExit has no one to tell.
    }
  }
}

function eventType(type: EventType): FilesystemEventType | undefined {
  switch (type) {
    case EventType.CREATE:
      return "create";
    case EventType.WRITE:
      return "write";
    case EventType.REMOVE:
      return "remove";
    case EventType.RENAME:
      return "rename";
    case EventType.CHMOD:
      return "chmod";
    default:
      return undefined;
  }
}
