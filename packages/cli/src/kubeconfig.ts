/**
 * Loads the kubeconfig as kubectl does: `--kubeconfig FILE`, else the files of `KUBECONFIG`
 * (colon-separated; missing and empty files are skipped; for a name in several files the first
 * wins), else `~/.kube/config` (unless empty), else the Pod's service account when running inside a
 * cluster. `--context` picks a context; a command's default namespace is the context's, else `default`.
 *
 * `prepareKubeConfig` readies it for the API as kubectl would: the files it names are checked, an
 * `http://` server is spoken to in cleartext, and a credential plugin (`exec`) runs once, before the
 * first call, with the user's terminal (client.authentication.k8s.io ExecCredential protocol).
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, dirname, isAbsolute, join, resolve, sep } from "node:path";
import { KubeConfig, type Cluster, type User } from "@kubernetes/client-node";
import { FailedPreconditionError, TimeoutError, UnauthenticatedError, ValidationError } from "@fast-sandbox/api";

export interface KubeConfigOptions {
  /** A kubeconfig file; replaces `KUBECONFIG` and `~/.kube/config`. */
  kubeconfig?: string;
  /** A context of the kubeconfig. @default its current-context */
  context?: string;
}

export interface KubeConfigEnvironment {
  /** @default process.env */
  env?: { KUBECONFIG?: string | undefined; KUBERNETES_SERVICE_HOST?: string | undefined };
  /** @default os.homedir() */
  home?: string;
  /** Prefix of the Pod's service account directory `/var/run/secrets/kubernetes.io/serviceaccount` (tests). @default "" */
  rootDir?: string;
}

export interface LoadedKubeConfig {
  kubeConfig: KubeConfig;
  /** The context in use, e.g. `kind-dev` (`inClusterContext` for a Pod's service account). */
  context: string;
  /** The context's namespace, else `default`. */
  namespace: string;
  /** Where it came from, for messages: a file, `KUBECONFIG=…`, or the Pod's service account. */
  source: string;
  /** The API server's URL. */
  server: string;
}

/** Neither --kubeconfig, KUBECONFIG, ~/.kube/config nor a Pod's service account. */
export class NoKubeConfigError extends FailedPreconditionError {}

const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

export function loadKubeConfig(options: KubeConfigOptions, environment: KubeConfigEnvironment = {}): LoadedKubeConfig {
  const env = environment.env ?? process.env;
  const kubeConfig = new KubeConfig();
  let source: string;
  if (options.kubeconfig !== undefined) {
    if (!existsSync(options.kubeconfig)) throw new ValidationError("--kubeconfig", `${options.kubeconfig}: no such file`);
    if (isEmptyFile(options.kubeconfig)) throw new ValidationError("--kubeconfig", `${options.kubeconfig} is empty: give a kubeconfig`);
    loadFile(kubeConfig, options.kubeconfig);
    source = options.kubeconfig;
  } else if (env.KUBECONFIG) {
    // As kubectl: files that do not exist, and empty ones, are skipped.
    const files = env.KUBECONFIG.split(delimiter).filter((file) => file !== "" && existsSync(file) && !isEmptyFile(file));
    if (files.length === 0) {
      throw new FailedPreconditionError(
        `KUBECONFIG=${env.KUBECONFIG} names no existing file that is not empty; point it at a kubeconfig, or pass --kubeconfig FILE`,
      );
    }
    loadFile(kubeConfig, files[0] ?? "");
    for (const file of files.slice(1)) mergeFirstWins(kubeConfig, file);
    source = `KUBECONFIG=${env.KUBECONFIG}`;
  } else if (existsSync(join(environment.home ?? homedir(), ".kube", "config")) && !isEmptyFile(join(environment.home ?? homedir(), ".kube", "config"))) {
    source = join(environment.home ?? homedir(), ".kube", "config");
    loadFile(kubeConfig, source);
  } else {
    const rootDir = environment.rootDir ?? "";
    if (!env.KUBERNETES_SERVICE_HOST || !existsSync(`${rootDir}${SERVICE_ACCOUNT_DIR}/token`)) {
      throw new NoKubeConfigError(
        "no kubeconfig: pass --kubeconfig FILE, set KUBECONFIG, or create ~/.kube/config (the file kubectl uses); " +
          "for the embedded Fast Sandbox on this host, start it with 'fsb up' and use fsb instead of kubectl fs",
      );
    }
    kubeConfig.loadFromCluster(rootDir);
    source = "the Pod's service account";
  }

  if (options.context !== undefined) {
    if (!kubeConfig.getContextObject(options.context)) {
      const known = kubeConfig.getContexts().map((c) => c.name);
      throw new ValidationError(
        "--context",
        `no context ${JSON.stringify(options.context)} in ${source}${known.length > 0 ? `; it has: ${known.join(", ")}` : ""}`,
      );
    }
    kubeConfig.setCurrentContext(options.context);
  }
  const context = kubeConfig.getCurrentContext();
  const contextObject = context ? kubeConfig.getContextObject(context) : null;
  if (!contextObject) {
    if (context) {
      const known = kubeConfig.getContexts().map((c) => c.name);
      throw new FailedPreconditionError(
        `the current-context of ${source}, ${JSON.stringify(context)}, is a context it does not define` +
          `${known.length > 0 ? ` (it has: ${known.join(", ")})` : ""}: pass --context NAME, or run 'kubectl config use-context NAME'`,
      );
    }
    throw new FailedPreconditionError(`${source} has no current context: pass --context NAME, or run 'kubectl config use-context NAME'`);
  }
  const cluster = kubeConfig.getCurrentCluster();
  if (!cluster)
    throw new FailedPreconditionError(`context ${context} of ${source} names cluster ${JSON.stringify(contextObject.cluster)}, which it does not define`);
  return { kubeConfig, context, namespace: contextObject.namespace || "default", source, server: cluster.server };
}

/** A file of nothing but whitespace, which kubectl takes for no kubeconfig at all; false when it cannot be read (loading it then says why). */
function isEmptyFile(file: string): boolean {
  try {
    if (!statSync(file).isFile()) return false;
    return readFileSync(file, "utf8").trim() === "";
  } catch {
    return false;
  }
}

/** Loads `file` into an empty `kubeConfig`, its users' plugin commands resolved as kubectl does. */
function loadFile(kubeConfig: KubeConfig, file: string): void {
  try {
    kubeConfig.loadFromFile(file);
  } catch (error) {
    throw new FailedPreconditionError(`cannot read kubeconfig ${file}: ${(error as Error).message}`);
  }
  kubeConfig.users = kubeConfig.users.map((user) => {
    const exec = user.exec as ExecConfig | undefined;
    const command = exec?.command;
    // As client-go: a command with a path separator (./bin/plugin) is relative to the file's directory; a bare name is looked up on PATH.
    if (!command || !command.includes(sep) || isAbsolute(command)) return user;
    return { ...user, exec: { ...exec, command: resolve(dirname(file), command) } };
  });
}

/** Adds the clusters, users and contexts of `file` that `kubeConfig` lacks; its current-context only if `kubeConfig` has none (kubectl's merge). */
function mergeFirstWins(kubeConfig: KubeConfig, file: string): void {
  const other = new KubeConfig();
  loadFile(other, file);
  for (const cluster of other.getClusters()) if (!kubeConfig.getCluster(cluster.name)) kubeConfig.addCluster(cluster);
  for (const user of other.getUsers()) if (!kubeConfig.getUser(user.name)) kubeConfig.addUser(user);
  for (const context of other.getContexts()) if (!kubeConfig.getContextObject(context.name)) kubeConfig.addContext(context);
  if (!kubeConfig.getCurrentContext() && other.getCurrentContext()) kubeConfig.setCurrentContext(other.getCurrentContext());
}

/** How the credential plugin of the kubeconfig's user runs. */
export interface CredentialPluginOptions {
  /** How long it may take to print a credential; 0: no limit. @default 60000 */
  timeoutMs?: number;
  /**
   * How long it may take when it talks to the user — it has the terminal (interactive), or it wrote
   * something on stderr (e.g. a device code to enter in a browser): a human is then waiting on it.
   * @default 5 minutes, or timeoutMs when longer
   */
  humanTimeoutMs?: number;
  /** Where its messages go. @default process.stderr */
  stderr?: NodeJS.WritableStream;
  /** Whether the user's stdin is a terminal it may read from. @default process.stdin.isTTY */
  stdinIsTerminal?: boolean;
}

/** What a plugin waiting for a human may take at least. */
const HUMAN_TIMEOUT_MS = 5 * 60_000;

/** The kubeconfig's `exec` of a user (client.authentication.k8s.io), as the YAML names its fields. */
interface ExecConfig {
  apiVersion?: string;
  command?: string;
  args?: string[];
  env?: { name: string; value: string }[] | null;
  installHint?: string;
  provideClusterInfo?: boolean;
  interactiveMode?: "Never" | "IfAvailable" | "Always";
}

/** What a credential plugin prints (its `status`). */
interface ExecCredentialStatus {
  token?: string;
  clientCertificateData?: string;
  clientKeyData?: string;
  expirationTimestamp?: string;
}

/** The `exec` of a user whose credentials come from a plugin it runs (kubeconfig `exec`, also as an auth-provider's), else undefined. */
export function credentialPluginOf(user: User | null | undefined): ExecConfig | undefined {
  if (!user) return undefined;
  const authProvider = user.authProvider as { name?: string; config?: { exec?: unknown } } | undefined;
  const exec = (user.exec ?? authProvider?.config?.exec) as ExecConfig | undefined;
  return exec ?? undefined;
}

/**
 * The kubeconfig of `loaded` as the API calls need it, its current context alone:
 *
 * - the files it names (certificate authority, client certificate and key) must be readable — a
 *   kubeconfig's error, not the API server's;
 * - an `http://` server is spoken to in cleartext, as kubectl does (e.g. `kubectl proxy`);
 * - a credential plugin runs here, once: every call then uses the credential it printed.
 */
export async function prepareKubeConfig(
  loaded: Pick<LoadedKubeConfig, "kubeConfig" | "context" | "server"> & { source?: string },
  options: CredentialPluginOptions = {},
): Promise<KubeConfig> {
  const { kubeConfig } = loaded;
  const cluster = kubeConfig.getCurrentCluster();
  const user = kubeConfig.getCurrentUser();
  const where = `context ${loaded.context}${loaded.source ? ` of kubeconfig ${loaded.source}` : ""}`;
  if (cluster) checkFile(cluster.caFile, `the certificate-authority of cluster ${cluster.name}`, where);
  if (user) {
    checkFile(user.certFile, `the client-certificate of user ${user.name}`, where);
    checkFile(user.keyFile, `the client-key of user ${user.name}`, where);
  }
  if (cluster && !/^https?:\/\//i.test(cluster.server)) {
    throw new FailedPreconditionError(`the server of cluster ${cluster.name} (${where}) is ${JSON.stringify(cluster.server)}: give an https:// or http:// URL`);
  }
  let preparedCluster = cluster;
  // client-node refuses http:// unless TLS checks are off; there is no TLS to check on it.
  if (cluster && /^http:/i.test(cluster.server) && !cluster.skipTLSVerify) preparedCluster = { ...cluster, skipTLSVerify: true };
  let preparedUser = user;
  const exec = credentialPluginOf(user);
  if (user && exec) {
    const status = await runCredentialPlugin(user.name, exec, cluster, options);
    // The plugin's credential in place of the plugin (client-node would run it again for every call).
    preparedUser = {
      ...user,
      exec: undefined,
      authProvider: undefined,
      ...(status.token ? { token: status.token } : {}),
      ...(status.clientCertificateData && status.clientKeyData
        ? {
            certFile: undefined,
            keyFile: undefined,
            certData: Buffer.from(status.clientCertificateData).toString("base64"),
            keyData: Buffer.from(status.clientKeyData).toString("base64"),
          }
        : {}),
    };
  }
  const context = kubeConfig.getContextObject(loaded.context);
  const prepared = new KubeConfig();
  prepared.loadFromOptions({
    clusters: preparedCluster ? [preparedCluster] : [],
    users: preparedUser ? [preparedUser] : [],
    contexts: context ? [context] : [],
    currentContext: loaded.context,
  });
  return prepared;
}

function checkFile(file: string | undefined, what: string, where: string): void {
  if (!file) return;
  try {
    readFileSync(file);
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (error as Error).message;
    throw new FailedPreconditionError(`${what} (${where}), ${file}, cannot be read: ${reason}`);
  }
}

/**
 * Runs a user's credential plugin once, as kubectl does (client.authentication.k8s.io ExecCredential):
 * KUBERNETES_EXEC_INFO tells it whether it may talk to the user and (provideClusterInfo) the cluster;
 * its stderr is the user's — a login prompt or device code shows at once —, and with interactiveMode
 * other than Never and a terminal on stdin it reads the user's stdin too. It has `timeoutMs` to print
 * its credential, `humanTimeoutMs` when it talks to the user.
 */
export function runCredentialPlugin(
  userName: string,
  exec: ExecConfig,
  cluster: Cluster | null | undefined,
  options: CredentialPluginOptions = {},
): Promise<ExecCredentialStatus> {
  const plugin = `the credential plugin of user ${userName}`;
  if (!exec.command) return Promise.reject(new FailedPreconditionError(`${plugin} has no command in the kubeconfig's exec`));
  const command = exec.command;
  const apiVersion = exec.apiVersion ?? "client.authentication.k8s.io/v1beta1";
  const mode = exec.interactiveMode ?? "IfAvailable";
  const terminal = options.stdinIsTerminal ?? process.stdin.isTTY === true;
  if (mode === "Always" && !terminal) {
    return Promise.reject(
      new FailedPreconditionError(`${plugin} (${command}) needs a terminal to ask you for your credentials (interactiveMode: Always), and stdin is not one`),
    );
  }
  const interactive = mode !== "Never" && terminal;
  const stderr = options.stderr ?? process.stderr;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const humanTimeoutMs = timeoutMs === 0 ? 0 : Math.max(timeoutMs, options.humanTimeoutMs ?? HUMAN_TIMEOUT_MS);
  const execInfo = {
    apiVersion,
    kind: "ExecCredential",
    spec: { interactive, ...(exec.provideClusterInfo && cluster ? { cluster: clusterInfo(cluster) } : {}) },
  };
  const env: NodeJS.ProcessEnv = { ...process.env, KUBERNETES_EXEC_INFO: JSON.stringify(execInfo) };
  for (const variable of exec.env ?? []) env[variable.name] = variable.value;

  return new Promise((resolve, reject) => {
    const started = Date.now();
    // With the terminal it reads stdin and writes to stderr itself; else its stderr is passed on, and watched.
    const child = spawn(command, exec.args ?? [], { env, stdio: [interactive ? "inherit" : "ignore", "pipe", interactive ? "inherit" : "pipe"] });
    let stdout = "";
    let errors = "";
    let talked = interactive;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (error: Error | undefined, status?: ExecCredentialStatus) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error) reject(error);
      else resolve(status ?? {});
    };
    const arm = () => {
      clearTimeout(timer);
      const limit = talked ? humanTimeoutMs : timeoutMs;
      if (limit === 0) return;
      timer = setTimeout(
        () => {
          child.kill("SIGKILL");
          finish(
            new TimeoutError(
              talked
                ? `${plugin} (${command}) printed no credential within ${formatMs(limit)}: it may be waiting for you (to log in, or to enter a code; ` +
                    `its messages are above). A plugin that talks to you gets ${formatMs(HUMAN_TIMEOUT_MS)} or --request-timeout, whichever is longer; ` +
                    "run the command again, or log in with the plugin first"
                : `${plugin} (${command}) printed no credential within ${formatMs(limit)} (--request-timeout); ` +
                    "pass a larger --request-timeout (or FSB_REQUEST_TIMEOUT), or 0 for no limit",
            ),
          );
        },
        Math.max(0, started + limit - Date.now()),
      );
      timer.unref();
    };
    arm();
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (chunk: string) => (stdout += chunk));
    child.stderr?.on("data", (chunk: Buffer) => {
      stderr.write(chunk);
      errors += chunk.toString();
      if (!talked) {
        talked = true;
        arm();
      }
    });
    child.on("error", (error) => {
      const hint = (error as NodeJS.ErrnoException).code === "ENOENT" && exec.installHint ? `; ${exec.installHint.trim()}` : "";
      finish(new UnauthenticatedError(`${plugin} could not start: ${error.message}${hint}`));
    });
    child.on("close", (code, signal) => {
      if (code !== 0) {
        const said =
          errors.trim() || (interactive ? "see its messages above" : `it exited with ${signal ? `signal ${signal}` : `code ${code}`} and printed nothing`);
        finish(new UnauthenticatedError(`${plugin} failed: ${said}`));
        return;
      }
      let credential: { apiVersion?: unknown; kind?: unknown; status?: ExecCredentialStatus };
      try {
        credential = JSON.parse(stdout) as typeof credential;
      } catch {
        finish(new UnauthenticatedError(`${plugin} printed no ExecCredential on stdout (not JSON: ${JSON.stringify(stdout.trim().slice(0, 80))})`));
        return;
      }
      if (credential.apiVersion !== apiVersion) {
        finish(new UnauthenticatedError(`${plugin} printed an ExecCredential of ${String(credential.apiVersion)}; the kubeconfig asks for ${apiVersion}`));
        return;
      }
      const status = credential.status;
      if (!status?.token && !(status?.clientCertificateData && status.clientKeyData)) {
        finish(new UnauthenticatedError(`${plugin} printed an ExecCredential without status.token nor status.clientCertificateData and clientKeyData`));
        return;
      }
      finish(undefined, status);
    });
  });
}

/** The cluster as KUBERNETES_EXEC_INFO gives it to a plugin (provideClusterInfo). */
function clusterInfo(cluster: Cluster): Record<string, unknown> {
  let caData = cluster.caData;
  if (!caData && cluster.caFile) {
    try {
      caData = readFileSync(cluster.caFile).toString("base64");
    } catch {
      // prepareKubeConfig said so before.
    }
  }
  return {
    server: cluster.server,
    ...(cluster.tlsServerName ? { "tls-server-name": cluster.tlsServerName } : {}),
    ...(cluster.skipTLSVerify ? { "insecure-skip-tls-verify": true } : {}),
    ...(caData ? { "certificate-authority-data": caData } : {}),
    ...(cluster.proxyUrl ? { "proxy-url": cluster.proxyUrl } : {}),
  };
}

/** `2s`, `1m30s`, `250ms`: a deadline for messages. */
export function formatMs(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  const seconds = Math.round(ms / 1000);
  const minutes = Math.floor(seconds / 60);
  return minutes === 0 ? `${seconds}s` : `${minutes}m${seconds % 60 ? `${seconds % 60}s` : ""}`;
}
