/**
 * The CLI against a Kubernetes cluster (`kubectl fs`): the kubeconfig, the controller's fast-path
 * API and its token. `--url`/`FSB_URL` skip the discovery (e.g. through `kubectl port-forward`),
 * `FSB_TOKEN` the Secret. Loaded only in cluster mode: `@kubernetes/client-node` takes a while to import.
 *
 * Also the CLI's one boundary for errors of the Kubernetes API (`kubernetesClusterReader`).
 */
import { readFileSync } from "node:fs";
import { connect as connectTcp } from "node:net";
import {
  AbortError,
  ApiException,
  CoreV1Api,
  DiscoveryV1Api,
  FetchError,
  Observable,
  type ConfigurationOptions,
  type KubeConfig,
  type RequestContext,
  type ResponseContext,
} from "@kubernetes/client-node";
import { FailedPreconditionError, FsbError, PermissionDeniedError, TimeoutError, UnauthenticatedError, UnavailableError } from "@fast-sandbox/api";
import {
  API_TOKEN_SECRET,
  CONTROLLER_NAMESPACE,
  CONTROLLER_SERVICE,
  describeEndpoint,
  findController,
  portForwardHint,
  readApiToken,
  type ClusterReader,
  type ReachabilityCheck,
} from "./controller-discovery.js";
import {
  NoKubeConfigError,
  credentialPluginOf,
  formatMs,
  loadKubeConfig,
  prepareKubeConfig,
  type CredentialPluginOptions,
  type KubeConfigEnvironment,
  type KubeConfigOptions,
  type LoadedKubeConfig,
} from "./kubeconfig.js";

export interface ClusterConnectionOptions extends KubeConfigOptions {
  /** Namespace of the controller's Service and token Secret. @default "fast-sandbox-system" */
  fsbNamespace?: string;
  /** The fast-path API's URL (e.g. a port-forward); skips the discovery. */
  url?: string;
  /** The fast-path API's token; skips reading the Secret. */
  token?: string;
  /** Where `token` came from, for messages. @default `FSB_TOKEN` */
  tokenFrom?: string;
  /** The namespace of the command (`-n`). @default the kubeconfig context's, else `default` */
  namespace?: string;
  /** Where the kubeconfig is looked for. @default process.env and the home directory */
  environment?: KubeConfigEnvironment;
  /** Each read of the Kubernetes API's deadline (and the credential plugin's, see CredentialPluginOptions); 0: none. @default 60000 */
  requestTimeoutMs?: number;
  /** How the kubeconfig's credential plugin runs, if it has one. */
  credentialPlugin?: Omit<CredentialPluginOptions, "timeoutMs">;
  /** The Kubernetes API. @default kubernetesClusterReader */
  makeReader?: (loaded: LoadedKubeConfig, options: ClusterReaderOptions) => ClusterReader;
  /** @default tcpReachable */
  reachable?: ReachabilityCheck;
}

export interface ClusterEndpoint {
  url: string;
  token: string;
  namespace: string;
  /** What answers at `url`, for messages: e.g. `the controller at 10.0.3.7:7070 (Pod …), found through Service …`. */
  endpointDescription: string;
  /** The controller's address alone, for messages: e.g. `10.0.3.7:7070 (Pod …)`, or the URL given. */
  controllerAddress: string;
  /** Where the token came from, for messages: `FSB_TOKEN`, the Secret, or the kubeconfig's user. */
  tokenSource: string;
  /** The token is the kubeconfig user's own (the Secret may not be read): the controller authorizes by the user's RBAC. */
  ownCredential?: true;
  /** How to reach the controller from outside the cluster network. */
  portForwardHint: string;
}

export async function resolveClusterEndpoint(options: ClusterConnectionOptions): Promise<ClusterEndpoint> {
  const systemNamespace = options.fsbNamespace ?? CONTROLLER_NAMESPACE;
  const needsApi = options.url === undefined || options.token === undefined;
  let loaded: LoadedKubeConfig | undefined;
  try {
    loaded = needsApi || options.namespace === undefined ? loadKubeConfig(options, options.environment) : undefined;
  } catch (error) {
    // With URL and token given the kubeconfig only names the default namespace; without one that is `default`.
    if (needsApi || !(error instanceof NoKubeConfigError)) throw error;
  }
  const readerOptions: ClusterReaderOptions = {
    ...(options.requestTimeoutMs !== undefined ? { timeoutMs: options.requestTimeoutMs } : {}),
    ...(options.credentialPlugin ? { credentialPlugin: options.credentialPlugin } : {}),
  };
  const reader = loaded && needsApi ? (options.makeReader ?? kubernetesClusterReader)(loaded, readerOptions) : undefined;
  const [controller, token] = await Promise.allSettled([
    options.url !== undefined || !reader
      ? Promise.resolve(undefined)
      : findController({ reader, reachable: options.reachable ?? tcpReachable, namespace: systemNamespace, service: CONTROLLER_SERVICE }),
    options.token !== undefined || !reader
      ? Promise.resolve({ token: options.token ?? "", own: false })
      : readApiToken({ reader, namespace: systemNamespace }).then(
          (secretToken) => ({ token: secretToken, own: false }),
          // Who may not read the Secret calls as themselves, when the kubeconfig gives a bearer token
          // (the controller authorizes each call by their RBAC: FSB_KUBERNETES_USERS).
          async (error: unknown) => {
            const own = error instanceof PermissionDeniedError ? await reader.ownBearerToken?.() : undefined;
            if (!own) throw error;
            return { token: own, own: true };
          },
        ),
  ]);
  // Where the controller is matters first: without it the token is of no use.
  if (controller.status === "rejected") throw controller.reason;
  if (token.status === "rejected") throw token.reason;
  const service = `Service ${systemNamespace}/${CONTROLLER_SERVICE}`;
  const found = controller.value;
  return {
    url: found?.url ?? options.url ?? "",
    token: token.value.token,
    namespace: options.namespace ?? loaded?.namespace ?? "default",
    endpointDescription: found
      ? `the controller at ${describeEndpoint(found.endpoint)}, found through ${service}${loaded ? ` of context ${loaded.context}` : ""}`
      : `the controller at ${options.url ?? ""}`,
    controllerAddress: found ? describeEndpoint(found.endpoint) : (options.url ?? ""),
    tokenSource:
      options.token !== undefined
        ? (options.tokenFrom ?? "FSB_TOKEN")
        : token.value.own
          ? `your own Kubernetes credential (context ${loaded?.context ?? ""}; you may not read Secret ${systemNamespace}/${API_TOKEN_SECRET})`
          : `Secret ${systemNamespace}/${API_TOKEN_SECRET}`,
    ...(token.value.own ? { ownCredential: true as const } : {}),
    portForwardHint: portForwardHint(systemNamespace, CONTROLLER_SERVICE),
  };
}

/** Opens a TCP connection and closes it again: whether anything listens there and is reachable from here. */
export const tcpReachable: ReachabilityCheck = (address, port, timeoutMs) =>
  new Promise((resolve) => {
    const socket = connectTcp({ host: address, port, timeout: timeoutMs });
    const done = (reachable: boolean) => {
      socket.destroy();
      resolve(reachable);
    };
    socket.once("connect", () => done(true));
    socket.once("timeout", () => done(false));
    socket.once("error", () => done(false));
  });

export interface ClusterReaderOptions {
  /** Each read's deadline; 0: none. @default 60000 */
  timeoutMs?: number;
  /** How the kubeconfig's credential plugin runs (once, before the first read), if it has one. */
  credentialPlugin?: Omit<CredentialPluginOptions, "timeoutMs">;
}

/**
 * The `ClusterReader` over `@kubernetes/client-node`, translating its errors. Before the first read
 * the kubeconfig is readied (`prepareKubeConfig`: its files checked, its credential plugin run once,
 * for every read); each read then has `timeoutMs` to be answered.
 */
export function kubernetesClusterReader(
  loaded: Pick<LoadedKubeConfig, "kubeConfig" | "context" | "server"> & { source?: string },
  options: ClusterReaderOptions = {},
): ClusterReader {
  const kubeConfig: KubeConfig = loaded.kubeConfig;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const cluster = { context: loaded.context, server: loaded.server, credentialPluginUser: credentialPluginUser(kubeConfig) };
  let clients: Promise<{ core: CoreV1Api; discovery: DiscoveryV1Api; prepared: KubeConfig }> | undefined;
  // Shared by the reads made at once: the plugin runs a single time.
  const ready = () =>
    (clients ??= prepareKubeConfig(loaded, { ...options.credentialPlugin, timeoutMs }).then((prepared) => ({
      core: prepared.makeApiClient(CoreV1Api),
      discovery: prepared.makeApiClient(DiscoveryV1Api),
      prepared,
    })));
  const call = async <T>(
    action: string,
    fn: (apis: { core: CoreV1Api; discovery: DiscoveryV1Api }, signalled: ConfigurationOptions) => Promise<T>,
    callOptions: { notFound?: T } = {},
  ): Promise<T> => {
    const apis = await ready();
    const abort = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      if (timeoutMs === 0) return;
      timer = setTimeout(() => {
        abort.abort();
        reject(
          new TimeoutError(
            `cannot ${action}: the Kubernetes API server ${cluster.server} of context ${cluster.context} did not answer within ${formatMs(timeoutMs)} ` +
              "(--request-timeout); pass a larger --request-timeout (or FSB_REQUEST_TIMEOUT), or 0 for no limit",
          ),
        );
      }, timeoutMs);
    });
    try {
      return await Promise.race([fn(apis, withSignal(abort.signal)), deadline]);
    } catch (error) {
      if (error instanceof TimeoutError) throw error;
      if (error instanceof ApiException && error.code === 404 && "notFound" in callOptions) return callOptions.notFound as T;
      throw translateKubernetesError(error, action, cluster);
    } finally {
      clearTimeout(timer);
    }
  };
  return {
    async endpointSlices(namespace, service) {
      const list = await call(`list EndpointSlices in namespace ${namespace}`, ({ discovery }, signalled) =>
        discovery.listNamespacedEndpointSlice({ namespace, labelSelector: `kubernetes.io/service-name=${service}` }, signalled),
      );
      return list.items.map((slice) => ({
        addressType: slice.addressType,
        endpoints: (slice.endpoints ?? []).map((endpoint) => ({
          addresses: endpoint.addresses,
          ...(endpoint.conditions?.ready !== undefined ? { ready: endpoint.conditions.ready } : {}),
          ...(endpoint.targetRef
            ? {
                targetRef: {
                  ...(endpoint.targetRef.kind ? { kind: endpoint.targetRef.kind } : {}),
                  ...(endpoint.targetRef.name ? { name: endpoint.targetRef.name } : {}),
                },
              }
            : {}),
        })),
        ports: (slice.ports ?? []).map((port) => ({ ...(port.name ? { name: port.name } : {}), ...(port.port !== undefined ? { port: port.port } : {}) })),
      }));
    },
    async service(namespace, name) {
      const service = await call(`get Service ${namespace}/${name}`, ({ core }, signalled) => core.readNamespacedService({ namespace, name }, signalled), {
        notFound: undefined,
      });
      if (!service) return undefined;
      return {
        ...(service.spec?.selector ? { selector: service.spec.selector } : {}),
        ports: (service.spec?.ports ?? []).map((port) => ({
          ...(port.name ? { name: port.name } : {}),
          port: port.port,
          ...(port.targetPort !== undefined ? { targetPort: port.targetPort } : {}),
        })),
      };
    },
    async pods(namespace, selector) {
      const labelSelector = Object.entries(selector)
        .map(([key, value]) => `${key}=${value}`)
        .join(",");
      const list = await call(`list Pods in namespace ${namespace}`, ({ core }, signalled) => core.listNamespacedPod({ namespace, labelSelector }, signalled));
      return list.items.map((pod) => ({
        name: pod.metadata?.name ?? "",
        ...(pod.status?.podIP ? { podIP: pod.status.podIP } : {}),
        ready: (pod.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True"),
        terminating: pod.metadata?.deletionTimestamp !== undefined,
        containerPorts: (pod.spec?.containers ?? []).flatMap((c) =>
          (c.ports ?? []).map((p) => ({ ...(p.name ? { name: p.name } : {}), containerPort: p.containerPort })),
        ),
      }));
    },
    async ownBearerToken() {
      // A credential plugin's token is not sent to the controller: it may be a cloud credential
      // (gke-gcloud-auth-plugin, aws eks get-token) that reaches beyond this cluster.
      if (cluster.credentialPluginUser) return undefined;
      const user = (await ready()).prepared.getCurrentUser();
      if (user?.token) return user.token.trim() || undefined;
      // A Pod's service account: client-node reads its token file at each call (it is rotated).
      const tokenFile = (user?.authProvider as { name?: string; config?: { tokenFile?: string } } | undefined)?.config?.tokenFile;
      if (!tokenFile) return undefined;
      try {
        return readFileSync(tokenFile, "utf8").trim() || undefined;
      } catch {
        return undefined;
      }
    },
    async secretData(namespace, name) {
      const secret = await call(`get Secret ${namespace}/${name}`, ({ core }, signalled) => core.readNamespacedSecret({ namespace, name }, signalled), {
        notFound: undefined,
      });
      if (!secret) return undefined;
      return Object.fromEntries(Object.entries(secret.data ?? {}).map(([key, value]) => [key, Buffer.from(value, "base64").toString("utf8")]));
    },
  };
}

/** A call's options that make its request abortable by `signal` (client-node passes the request's signal to its fetch). */
function withSignal(signal: AbortSignal): ConfigurationOptions {
  return {
    middleware: [
      {
        pre: (context: RequestContext) => {
          context.setSignal(signal);
          return new Observable(Promise.resolve(context));
        },
        post: (context: ResponseContext) => new Observable(Promise.resolve(context)),
      },
    ],
    middlewareMergeStrategy: "append",
  };
}

/** The name of the context's user when its credentials come from a plugin it runs (kubeconfig `exec`, e.g. aws, kubelogin), else undefined. */
function credentialPluginUser(kubeConfig: KubeConfig): string | undefined {
  const user = kubeConfig.getCurrentUser();
  return credentialPluginOf(user) ? user?.name : undefined;
}

/**
 * Whether a call failed in the context's credential plugin, before anything was sent: the plugin
 * could not start (`spawn … ENOENT`), exited non-zero (its stderr is the message) or printed no
 * credential — not a connection's error (FetchError) nor a file's (the kubeconfig's CA, `open`).
 */
function isCredentialPluginFailure(error: unknown): boolean {
  if (!(error instanceof Error) || error instanceof FetchError || error instanceof AbortError) return false;
  const syscall = (error as NodeJS.ErrnoException).syscall;
  return syscall === undefined || syscall.startsWith("spawn");
}

/**
 * Errors of the Kubernetes API as the user of the CLI should read them: 401 the kubeconfig's
 * credentials, 403 what may not be done, a failing credential plugin (`credentialPluginUser`, the
 * user whose plugin it is) as such, anything else without an HTTP status the API server unreachable.
 */
export function translateKubernetesError(
  error: unknown,
  action: string,
  cluster: Pick<LoadedKubeConfig, "context" | "server"> & { credentialPluginUser?: string | undefined },
): FsbError {
  if (error instanceof FsbError) return error;
  if (error instanceof ApiException) {
    const code = typeof error.code === "number" ? error.code : 0;
    const message = statusMessage(error.body) ?? `HTTP ${code}`;
    if (code === 401) {
      return new UnauthenticatedError(`the Kubernetes API server ${cluster.server} did not accept the credentials of context ${cluster.context}: ${message}`);
    }
    if (code === 403) return new PermissionDeniedError(`cannot ${action}: ${message}`, { cause: error });
    if (code === 429 || code === 503)
      return new UnavailableError(`cannot ${action}: the Kubernetes API server is busy (${code}): ${message}; retry later`, { cause: error });
    return new FsbError(code >= 500 ? "internal" : "failed_precondition", `cannot ${action}: the Kubernetes API server answered ${code}: ${message}`, {
      cause: error,
    });
  }
  if (cluster.credentialPluginUser !== undefined && isCredentialPluginFailure(error)) {
    const message = (error as Error).message.trim() || "it printed nothing";
    return new UnauthenticatedError(`cannot ${action}: the credential plugin of user ${cluster.credentialPluginUser} failed: ${message}`);
  }
  const reason = error instanceof Error ? error.message : String(error);
  // A file the kubeconfig names (prepareKubeConfig checks them first), or a server client-node will not speak to: the kubeconfig's fault.
  const syscall = (error as NodeJS.ErrnoException | undefined)?.syscall;
  if ((syscall === "open" || syscall === "read") && !(error instanceof FetchError)) {
    return new FailedPreconditionError(`cannot ${action}: a file the kubeconfig's context ${cluster.context} names cannot be read (${reason})`);
  }
  if (/^HTTP protocol is not allowed|^Unsupported proxy type/.test(reason)) {
    return new FailedPreconditionError(`cannot ${action}: the kubeconfig's context ${cluster.context} (server ${cluster.server}) cannot be used: ${reason}`);
  }
  return new UnavailableError(`cannot ${action}: the Kubernetes API server ${cluster.server} of context ${cluster.context} is unreachable (${reason})`, {
    cause: error,
  });
}

function statusMessage(body: unknown): string | undefined {
  const parse = (value: unknown): unknown => {
    if (typeof value !== "string") return value;
    try {
      return JSON.parse(value);
    } catch {
      return value.trim() === "" ? undefined : value.trim();
    }
  };
  const status = parse(body);
  if (typeof status === "string") return status;
  const message = (status as { message?: unknown } | undefined)?.message;
  return typeof message === "string" ? message : undefined;
}
