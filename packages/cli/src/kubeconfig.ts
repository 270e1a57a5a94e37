/**
 * Loads the kubeconfig as kubectl does: `--kubeconfig FILE`, else the files of `KUBECONFIG`
 * (colon-separated; missing files are skipped; for a name in several files the first wins), else
 * `~/.kube/config`, else the Pod's service account when running inside a cluster. `--context`
 * picks a context; a command's default namespace is the context's, else `default`.
 */
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { FailedPreconditionError, ValidationError } from "@fast-sandbox/api";

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
    loadFile(kubeConfig, options.kubeconfig);
    source = options.kubeconfig;
  } else if (env.KUBECONFIG) {
    const files = env.KUBECONFIG.split(delimiter).filter((file) => file !== "" && existsSync(file));
    if (files.length === 0) {
      throw new FailedPreconditionError(`KUBECONFIG=${env.KUBECONFIG} names no existing file; point it at a kubeconfig, or pass --kubeconfig FILE`);
    }
    loadFile(kubeConfig, files[0] ?? "");
    for (const file of files.slice(1)) mergeFirstWins(kubeConfig, file);
    source = `KUBECONFIG=${env.KUBECONFIG}`;
  } else if (existsSync(join(environment.home ?? homedir(), ".kube", "config"))) {
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
    throw new FailedPreconditionError(`${source} has no current context: pass --context NAME, or run 'kubectl config use-context NAME'`);
  }
  const cluster = kubeConfig.getCurrentCluster();
  if (!cluster)
    throw new FailedPreconditionError(`context ${context} of ${source} names cluster ${JSON.stringify(contextObject.cluster)}, which it does not define`);
  return { kubeConfig, context, namespace: contextObject.namespace || "default", source, server: cluster.server };
}

function loadFile(kubeConfig: KubeConfig, file: string): void {
  try {
    kubeConfig.loadFromFile(file);
  } catch (error) {
    throw new FailedPreconditionError(`cannot read kubeconfig ${file}: ${(error as Error).message}`);
  }
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
