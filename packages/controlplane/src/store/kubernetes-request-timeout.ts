/**
 * A time limit on every request to the Kubernetes API server but a watch (a watch has its own:
 * watch-timeout.ts, deadline-watch.ts). client-node 1.4 sends each call through an HTTP agent of its
 * own with no timeout and no TCP keep-alive: a request an API server took and then never answered
 * (it died, a partition swallowed the answer) would never settle, nor would what waits for it — an
 * informer's list (its cache frozen, no relist), a reconcile (its key held, the object never
 * reconciled again). Each call made through `withRequestTimeout` carries an AbortSignal (set on the
 * request by a middleware: node-fetch then aborts the request and the reading of its answer) and
 * fails with UnavailableError naming the call once the limit has passed — even if what comes before
 * the request (reading credentials) is what hangs.
 */
import { Observable, type ConfigurationOptions, type ObservableMiddleware } from "@kubernetes/client-node";
import { UnavailableError, ValidationError } from "@fast-sandbox/api";

/** The limit of a read or a write of one object. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

/**
 * The limit of a list, which answers a whole collection (every Sandbox of the cluster) in one go: the
 * API server's own limit on a request (its --request-timeout, one minute by default) and a margin, so
 * a big list the server is still sending is not cut short by this side.
 */
export const DEFAULT_LIST_TIMEOUT_MS = 90_000;

/** The limits an adapter of the API server applies, in milliseconds. */
export interface KubernetesRequestTimeouts {
  /** Every call but lists and watches. @default DEFAULT_REQUEST_TIMEOUT_MS */
  requestTimeoutMs?: number;
  /** Lists. @default DEFAULT_LIST_TIMEOUT_MS */
  listTimeoutMs?: number;
}

/** The limits with their defaults; ValidationError for one that is not a positive number of milliseconds. */
export function requestTimeouts(options: KubernetesRequestTimeouts): Required<KubernetesRequestTimeouts> {
  const resolved = {
    requestTimeoutMs: options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
    listTimeoutMs: options.listTimeoutMs ?? DEFAULT_LIST_TIMEOUT_MS,
  };
  for (const [field, value] of Object.entries(resolved)) {
    if (!Number.isFinite(value) || value <= 0) throw new ValidationError(field, `${String(value)} is not a number of milliseconds > 0`);
  }
  return resolved;
}

/**
 * Runs `call`, which must pass the options it is given to the generated client's method (they set
 * the request's signal), and rejects with UnavailableError ("cannot <what>: …") when it has not
 * settled within `timeoutMs`; the request is aborted then. Other failures are `call`'s own, for
 * the caller to translate.
 */
export async function withRequestTimeout<T>(what: string, timeoutMs: number, call: (options: ConfigurationOptions) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      reject(new UnavailableError(`cannot ${what}: the Kubernetes API server did not answer within ${timeoutMs} ms`));
      controller.abort();
    }, timeoutMs);
  });
  const signal: ObservableMiddleware = {
    pre: (request) => {
      request.setSignal(controller.signal);
      return new Observable(Promise.resolve(request));
    },
    post: (response) => new Observable(Promise.resolve(response)),
  };
  try {
    // The aborted request's own rejection (node-fetch's AbortError) comes after the timeout's and is dropped.
    return await Promise.race([call({ middleware: [signal], middlewareMergeStrategy: "append" }), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}
