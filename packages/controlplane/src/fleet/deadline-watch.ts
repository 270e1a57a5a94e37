/**
 * client-node's `Watch` for an informer (`ListWatch`) that never hangs on a silent connection. client-node
 * asks for no timeout, so a watch whose connection died without a word (a node or a load balancer
 * gone) stays open until TCP keepalive gives up, minutes later, and the informer sees nothing
 * meanwhile. This one asks the API server to close each watch after `timeoutSeconds` (5–10 minutes,
 * as client-go does) and ends it itself `graceMs` after that if the server has not: either way the
 * informer is told the watch ended cleanly, and watches again from the last version it saw (no
 * relist). It also asks for bookmarks, which move that version forward on a quiet watch.
 */
import { Watch, type KubeConfig } from "@kubernetes/client-node";
import { DEFAULT_WATCH_GRACE_MS, drawWatchTimeoutSeconds } from "../store/watch-timeout.js";

export interface DeadlineWatchOptions {
  /** @default a whole number of seconds drawn for each watch between 300 and 599 */
  timeoutSeconds?: number;
  /** How long past `timeoutSeconds` a watch the server has not closed is ended by this side. @default 30000 */
  graceMs?: number;
}

type WatchCallback = Parameters<Watch["watch"]>[2];
type WatchDone = Parameters<Watch["watch"]>[3];

export class DeadlineWatch extends Watch {
  private readonly options: DeadlineWatchOptions;

  constructor(kubeConfig: KubeConfig, options: DeadlineWatchOptions = {}) {
    super(kubeConfig);
    this.options = options;
  }

  override watch(path: string, queryParams: Record<string, unknown>, callback: WatchCallback, done: WatchDone): Promise<AbortController> {
    const timeoutSeconds = this.options.timeoutSeconds ?? drawWatchTimeoutSeconds();
    let finished = false;
    /** The deadline passed before the server answered: the request is aborted once it has a controller. */
    let expired = false;
    /** The request's controller, once client-node has started it (once the server has answered). */
    let controller: AbortController | undefined;
    // Whichever comes first ends the watch once: the server closing it (or an error), or this side's deadline.
    const finish = (error: unknown): void => {
      if (finished) return;
      finished = true;
      clearTimeout(deadline);
      done(error);
    };
    let timedOut: (controller: AbortController) => void = () => undefined;
    const deadline = setTimeout(
      () => {
        if (controller) {
          // Told first, so the abort's own error (an AbortError) is not mistaken for a failure.
          finish(null);
          controller.abort();
          return;
        }
        // The server has not even answered: the informer gets a controller (already aborted) now, and
        // hears of the end only after it has taken it, so the next watch's controller is not
        // overwritten by this one's when it comes. This one is aborted once it does.
        expired = true;
        const aborted = new AbortController();
        aborted.abort();
        timedOut(aborted);
        setImmediate(() => finish(null));
      },
      timeoutSeconds * 1000 + (this.options.graceMs ?? DEFAULT_WATCH_GRACE_MS),
    );
    deadline.unref();
    const started = super.watch(path, { ...queryParams, timeoutSeconds, allowWatchBookmarks: true }, callback, finish).then((started) => {
      controller = started;
      if (finished || expired) started.abort();
      return started;
    });
    return Promise.race([started, new Promise<AbortController>((resolve) => (timedOut = resolve))]);
  }
}
