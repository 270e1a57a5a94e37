/**
 * Brings up the test harness's Kubernetes control plane (test/harness/cluster/cluster.sh) for a test
 * file. The cluster is the tests' infrastructure, not the product under test: when `up` fails, what
 * it printed is written to the test's stderr (so that a CI log shows why), the half-started cluster
 * is stopped, and `up` is tried once more in the same state dir.
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { REPO_ROOT } from "./containerd.js";

export const CLUSTER_SH = path.join(REPO_ROOT, "test/harness/cluster/cluster.sh");

interface ClusterCommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

function clusterCommand(command: "up" | "down", env: NodeJS.ProcessEnv, timeoutMs: number): Promise<ClusterCommandResult> {
  return new Promise((resolve) => {
    const child = spawn("bash", [CLUSTER_SH, command], { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${timeoutMs} ms)`;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      resolve({ code: 127, stdout, stderr: `${stderr}${error.message}` });
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr: signal ? `${stderr}\n(ended by ${signal})` : stderr });
    });
  });
}

/** `cluster.sh up` (a fresh machine builds the binaries first: up to an hour); resolves to the admin kubeconfig's path. */
export async function clusterUp(env: NodeJS.ProcessEnv): Promise<string> {
  const failures: string[] = [];
  for (let attempt = 1; attempt <= 2; attempt++) {
    const up = await clusterCommand("up", env, 60 * 60_000);
    const kubeconfig = /KUBECONFIG=(\S+)/.exec(up.stdout)?.[1];
    if (up.code === 0 && kubeconfig) return kubeconfig;
    const failure = `cluster.sh up (attempt ${attempt}) exited with ${up.code}:\n${up.stderr}\nstdout:\n${up.stdout}`;
    failures.push(failure);
    process.stderr.write(`${failure.replace(/^/gm, "# ")}\n`);
    await clusterDown(env);
  }
  throw new Error(`the test cluster did not come up:\n${failures.join("\n")}`);
}

/** `cluster.sh down`: stops what `up` started and removes the state dir. */
export async function clusterDown(env: NodeJS.ProcessEnv): Promise<ClusterCommandResult> {
  return clusterCommand("down", env, 120_000);
}
