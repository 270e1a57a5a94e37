/**
 * How long a Kubernetes watch of ours lasts: the `timeoutSeconds` it asks the API server for, and the
 * grace after which this side ends a watch the server has not closed (a connection that died without
 * a word: TCP keepalive would notice it only minutes later).
 */

/** The lower end of the range client-go spreads its watches' timeouts over, so that many clients' watches do not all end at once. */
const MIN_WATCH_TIMEOUT_SECONDS = 300;

/** How long past its `timeoutSeconds` a watch the server has not closed is ended by this side. */
export const DEFAULT_WATCH_GRACE_MS = 30_000;

/** A whole number of seconds between 300 and 599, drawn for each watch as client-go draws it. */
export function drawWatchTimeoutSeconds(): number {
  return MIN_WATCH_TIMEOUT_SECONDS + Math.floor(Math.random() * MIN_WATCH_TIMEOUT_SECONDS);
}
