/**
 * Finds the controller's fast-path API in a cluster, as the Service `fast-sandbox-controller` would
 * route to it: the ready endpoints of its EndpointSlices (discovery.k8s.io/v1, label
 * `kubernetes.io/service-name`), or — when there are none, or they may not be listed — the ready
 * Pods matching the Service's selector. One reachable endpoint is picked at random (as the Service
 * spreads clients); Pod IPs are reachable only inside the cluster network, so when none answers
 * the error says how to port-forward instead. The API token comes from the Secret
 * `fast-sandbox-api-token` (key `token`) beside the controller; a user who may not read it calls
 * with their own bearer token instead, when the kubeconfig gives one (cluster-connection.ts).
 *
 * The Kubernetes API is behind the `ClusterReader` port; `cluster-connection.ts` implements it.
 */
import { FailedPreconditionError, NotFoundError, PermissionDeniedError, UnavailableError } from "@fast-sandbox/api";

export const CONTROLLER_NAMESPACE = "fast-sandbox-system";
export const CONTROLLER_SERVICE = "fast-sandbox-controller";
/** The name of the Service's port (config/manager/controller-service.yaml). */
export const FAST_PATH_PORT_NAME = "fast-path";
export const FAST_PATH_PORT = 7070;
export const API_TOKEN_SECRET = "fast-sandbox-api-token";
export const API_TOKEN_KEY = "token";

/** What discovery needs of an EndpointSlice. */
export interface EndpointSliceView {
  /** IPv4, IPv6 or FQDN. */
  addressType: string;
  endpoints: { addresses: string[]; ready?: boolean; targetRef?: { kind?: string; name?: string } }[];
  ports: { name?: string; port?: number }[];
}

export interface ServiceView {
  selector?: Record<string, string>;
  ports: { name?: string; port: number; targetPort?: number | string }[];
}

export interface PodView {
  name: string;
  podIP?: string;
  /** The Pod's Ready condition is True. */
  ready: boolean;
  /** It has a deletionTimestamp. */
  terminating: boolean;
  containerPorts: { name?: string; containerPort: number }[];
}

/**
 * Reads of the Kubernetes API. Errors are `FsbError`s: `PermissionDeniedError` when RBAC forbids the
 * read, `UnavailableError` when the API server cannot be reached.
 */
export interface ClusterReader {
  /** The EndpointSlices labelled `kubernetes.io/service-name=<service>`. */
  endpointSlices(namespace: string, service: string): Promise<EndpointSliceView[]>;
  /** The Service, or undefined when there is none. */
  service(namespace: string, name: string): Promise<ServiceView | undefined>;
  /** The Pods matching the label selector. */
  pods(namespace: string, selector: Record<string, string>): Promise<PodView[]>;
  /** The Secret's data, decoded, or undefined when there is none. */
  secretData(namespace: string, name: string): Promise<Record<string, string> | undefined>;
  /**
   * The kubeconfig user's own bearer token (its `token`/`tokenFile`, a Pod's service account
   * token), or undefined when it has none (client certificates) or it comes from a credential
   * plugin (possibly a cloud credential, valid beyond the cluster: not sent).
   */
  ownBearerToken?(): Promise<string | undefined>;
}

/** Whether a TCP connection to `address:port` opens within `timeoutMs`. */
export type ReachabilityCheck = (address: string, port: number, timeoutMs: number) => Promise<boolean>;

/** One address the Service routes (or would route) to. */
export interface ControllerEndpoint {
  address: string;
  port: number;
  ready: boolean;
  /** What it is, for messages, e.g. `Pod fast-sandbox-controller-5d8f9-x2x7q`. */
  name?: string;
}

export interface FindControllerOptions {
  reader: ClusterReader;
  reachable: ReachabilityCheck;
  /** @default "fast-sandbox-system" */
  namespace?: string;
  /** @default "fast-sandbox-controller" */
  service?: string;
  /** How long to wait for a TCP connection to each endpoint. @default 3000 */
  connectTimeoutMs?: number;
  /** Picks among the ready endpoints. @default Math.random */
  random?: () => number;
}

export interface FoundController {
  url: string;
  endpoint: ControllerEndpoint;
  /** Where the endpoint came from. */
  via: "EndpointSlice" | "Pod";
}

/** The endpoints of the Service's slices on its fast-path port (the port so named, or a slice's only port). */
export function endpointsFromSlices(slices: EndpointSliceView[]): ControllerEndpoint[] {
  const found: ControllerEndpoint[] = [];
  for (const slice of slices) {
    const port = (slice.ports.find((p) => p.name === FAST_PATH_PORT_NAME) ?? (slice.ports.length === 1 ? slice.ports[0] : undefined))?.port;
    if (port === undefined) continue;
    for (const endpoint of slice.endpoints) {
      const name = endpoint.targetRef?.name ? `${endpoint.targetRef.kind ?? "Pod"} ${endpoint.targetRef.name}` : undefined;
      // An unset `ready` means unknown, which consumers treat as ready (EndpointConditions).
      const ready = endpoint.ready !== false;
      for (const address of endpoint.addresses) found.push({ address, port, ready, ...(name ? { name } : {}) });
    }
  }
  return found;
}

/** The Pods behind the Service, on its fast-path port's target (a number, or a container port's name). */
export function endpointsFromPods(service: ServiceView, pods: PodView[]): ControllerEndpoint[] {
  const servicePort = service.ports.find((p) => p.name === FAST_PATH_PORT_NAME) ?? service.ports[0];
  const target = servicePort?.targetPort ?? servicePort?.port ?? FAST_PATH_PORT;
  const found: ControllerEndpoint[] = [];
  for (const pod of pods) {
    if (!pod.podIP) continue;
    const port = typeof target === "number" ? target : pod.containerPorts.find((p) => p.name === target)?.containerPort;
    if (port === undefined) continue;
    found.push({ address: pod.podIP, port, ready: pod.ready && !pod.terminating, name: `Pod ${pod.name}` });
  }
  return found;
}

export function urlOf(endpoint: { address: string; port: number }): string {
  const host = endpoint.address.includes(":") ? `[${endpoint.address}]` : endpoint.address;
  return `http://${host}:${endpoint.port}`;
}

export function describeEndpoint(endpoint: ControllerEndpoint): string {
  const address = `${endpoint.address.includes(":") ? `[${endpoint.address}]` : endpoint.address}:${endpoint.port}`;
  return endpoint.name ? `${address} (${endpoint.name})` : address;
}

/** How to reach the controller from outside the cluster network. */
export function portForwardHint(namespace: string, service: string): string {
  return `run 'kubectl -n ${namespace} port-forward svc/${service} ${FAST_PATH_PORT}:${FAST_PATH_PORT}' and pass --url http://127.0.0.1:${FAST_PATH_PORT}`;
}

export async function findController(options: FindControllerOptions): Promise<FoundController> {
  const namespace = options.namespace ?? CONTROLLER_NAMESPACE;
  const service = options.service ?? CONTROLLER_SERVICE;
  const { reader } = options;
  const where = `Service ${namespace}/${service}`;

  let endpoints: ControllerEndpoint[] = [];
  let via: FoundController["via"] = "EndpointSlice";
  let slicesForbidden: PermissionDeniedError | undefined;
  try {
    endpoints = endpointsFromSlices(await reader.endpointSlices(namespace, service));
  } catch (error) {
    if (!(error instanceof PermissionDeniedError)) throw error;
    slicesForbidden = error;
  }
  if (endpoints.length === 0) {
    // No slices (no endpoint controller, or none written yet), or they may not be listed: the Pods the Service selects.
    let found: ServiceView | undefined;
    try {
      found = await reader.service(namespace, service);
    } catch (error) {
      if (error instanceof PermissionDeniedError && slicesForbidden) {
        throw new PermissionDeniedError(
          `you may not list EndpointSlices nor get Services in namespace ${namespace}, so the controller cannot be found: ` +
            `ask for list on endpointslices.discovery.k8s.io (or get on services and list on pods) there, or ${portForwardHint(namespace, service)}`,
          { cause: error },
        );
      }
      throw error;
    }
    if (!found) {
      throw new NotFoundError(
        `there is no ${where}: install Fast Sandbox in the cluster (kubectl apply -k config/default), ` +
          `pass --fsb-namespace NAMESPACE if it runs elsewhere, or pass --url`,
      );
    }
    if (!found.selector || Object.keys(found.selector).length === 0) {
      throw new UnavailableError(`${where} has no selector and no EndpointSlices with its fast-path port: nothing answers behind it`);
    }
    endpoints = endpointsFromPods(found, await reader.pods(namespace, found.selector));
    via = "Pod";
  }

  const ready = endpoints.filter((e) => e.ready);
  if (ready.length === 0) {
    throw new UnavailableError(
      `no ready controller behind ${where} (${endpoints.length === 0 ? "no endpoints" : `${endpoints.length} endpoints, none ready`}): ` +
        `is the controller running? kubectl -n ${namespace} get pods shows it`,
    );
  }
  const shuffled = shuffle(ready, options.random ?? Math.random);
  const timeoutMs = options.connectTimeoutMs ?? 3_000;
  // Every candidate at once; the first to accept a connection wins.
  const chosen = await Promise.any(
    shuffled.map(async (endpoint) => {
      if (await options.reachable(endpoint.address, endpoint.port, timeoutMs)) return endpoint;
      throw new Error("unreachable");
    }),
  ).catch(() => undefined);
  if (!chosen) {
    const tried = shuffled.map(describeEndpoint).join(", ");
    throw new UnavailableError(
      `cannot reach the controller at ${tried} within ${timeoutMs} ms: Pod IPs are reachable only inside the cluster network; ` +
        `from outside it, ${portForwardHint(namespace, service)}`,
    );
  }
  return { url: urlOf(chosen), endpoint: chosen, via };
}

export interface ReadApiTokenOptions {
  reader: ClusterReader;
  /** @default "fast-sandbox-system" */
  namespace?: string;
  /** @default "fast-sandbox-api-token" */
  secret?: string;
}

/** The fast-path API's bearer token from the Secret beside the controller. */
export async function readApiToken(options: ReadApiTokenOptions): Promise<string> {
  const namespace = options.namespace ?? CONTROLLER_NAMESPACE;
  const secret = options.secret ?? API_TOKEN_SECRET;
  const where = `Secret ${namespace}/${secret}`;
  let data: Record<string, string> | undefined;
  try {
    data = await options.reader.secretData(namespace, secret);
  } catch (error) {
    if (error instanceof PermissionDeniedError) {
      throw new PermissionDeniedError(
        `you may not read ${where}, which holds the fast-path API's token: set FSB_TOKEN to the token, ask for get on secrets/${secret} in namespace ${namespace}, ` +
          "or use a kubeconfig user with a token or token file (a ServiceAccount's, an OIDC id token; a credential plugin's is not sent): the controller then lets you do what your RBAC allows",
        { cause: error },
      );
    }
    throw error;
  }
  if (!data) {
    throw new NotFoundError(
      `there is no ${where} with the fast-path API's token: create it (kubectl -n ${namespace} create secret generic ${secret} ` +
        `--from-literal=${API_TOKEN_KEY}="$(openssl rand -hex 32)") and restart the controller, or set FSB_TOKEN`,
    );
  }
  const token = data[API_TOKEN_KEY]?.trim();
  if (!token) throw new FailedPreconditionError(`${where} has no key ${JSON.stringify(API_TOKEN_KEY)}: it should hold the fast-path API's token`);
  return token;
}

/** A copy in random order (Fisher–Yates). */
function shuffle<T>(items: T[], random: () => number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy;
}
