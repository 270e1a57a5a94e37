/**
 * Which Fast Sandbox a command talks to: the embedded one of a data directory (`fsb up`), or the
 * controller of a Kubernetes cluster (`kubectl fs`). Explicit beats implicit; the first rule that
 * applies decides:
 *
 * 1. `--kubeconfig`, `--context` or `--fsb-namespace` → the cluster (together with `--data-dir`: bad usage);
 * 2. `--data-dir` → embedded;
 * 3. the program runs as `kubectl-fs` (`kubectl fs …`) → the cluster;
 * 4. `--url` or `FSB_URL` → that URL, as embedded (token: `FSB_TOKEN` or the data directory's);
 * 5. the data directory holds the URL of an `fsb up` → embedded;
 * 6. `KUBECONFIG` is set → the cluster;
 * 7. otherwise embedded (whose error says how to start it, or how to reach a cluster).
 *
 * In a cluster, `--url`/`FSB_URL` only replace the discovery of the controller (e.g. through
 * `kubectl port-forward`); the token still comes from `FSB_TOKEN` or the cluster's Secret.
 */
import { ValidationError } from "@fast-sandbox/api";

export type TargetMode = "embedded" | "cluster";

/** The global flags that choose the target. */
export interface TargetFlags {
  dataDir?: string;
  url?: string;
  kubeconfig?: string;
  context?: string;
  fsbNamespace?: string;
}

export interface TargetSurroundings {
  /** The name the program was started as, e.g. `fsb` or `kubectl-fs` (the file name of `process.argv[1]`). */
  programName: string;
  env: { FSB_URL?: string | undefined; KUBECONFIG?: string | undefined };
  /** Whether the data directory holds the URL of an `fsb up`; asked only when the rules get there. */
  embeddedUrlKnown: () => boolean;
}

export interface Target {
  mode: TargetMode;
  /** Why this target, for messages: e.g. `--context was given`. */
  reason: string;
}

/** The program name of the kubectl plugin: kubectl runs `kubectl-fs` for `kubectl fs`. */
export const KUBECTL_PLUGIN_NAME = "kubectl-fs";

/** The program name as `chooseTarget` expects it: the file name without a `.js`/`.ts` extension. */
export function programNameOf(scriptPath: string | undefined): string {
  const file = (scriptPath ?? "").split(/[\\/]/).at(-1) ?? "";
  return file.replace(/\.(c|m)?(js|ts)$/, "");
}

export function chooseTarget(flags: TargetFlags, surroundings: TargetSurroundings): Target {
  const clusterFlag =
    flags.kubeconfig !== undefined
      ? "--kubeconfig"
      : flags.context !== undefined
        ? "--context"
        : flags.fsbNamespace !== undefined
          ? "--fsb-namespace"
          : undefined;
  if (clusterFlag && flags.dataDir !== undefined) {
    throw new ValidationError("--data-dir", `${clusterFlag} names a Kubernetes cluster and --data-dir an embedded Fast Sandbox; pass only one of them`);
  }
  if (clusterFlag) return { mode: "cluster", reason: `${clusterFlag} was given` };
  if (flags.dataDir !== undefined) return { mode: "embedded", reason: "--data-dir was given" };
  if (surroundings.programName === KUBECTL_PLUGIN_NAME) return { mode: "cluster", reason: "it runs as kubectl fs" };
  if (flags.url !== undefined) return { mode: "embedded", reason: "--url was given" };
  if (surroundings.env.FSB_URL) return { mode: "embedded", reason: "FSB_URL is set" };
  if (surroundings.embeddedUrlKnown()) return { mode: "embedded", reason: "'fsb up' runs for the data directory" };
  if (surroundings.env.KUBECONFIG) return { mode: "cluster", reason: "KUBECONFIG is set and 'fsb up' does not run" };
  return { mode: "embedded", reason: "no cluster was named" };
}
