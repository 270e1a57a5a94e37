// Runs a product binary under the fake kubelet as if it were in a container, unchanged:
//
//   node in-pod.js -- COMMAND [ARGS...]
//
// The fake kubelet mounts no volumes: it prepares each volume as a host directory and passes
// FSB_VOLUME_MOUNTS (JSON: mountPath -> host dir). This wrapper
//   - rewrites every environment value that is a mountPath or a path under one (longest mountPath
//     first) to the host directory, so FSB_TOKEN_FILE=/var/run/fast-sandbox/api-token/token names
//     the Secret volume's file. Only environment values: arguments are left as they are;
//   - rewrites every environment value that is exactly `0.0.0.0:<port>` to `$POD_IP:<port>` (POD_IP
//     is set by the fake kubelet). In a real Pod, 0.0.0.0 is "all of my Pod's addresses", inside
//     its own network namespace; here every Pod shares the host's network, so a listen address
//     0.0.0.0:7070 would take the port on every address of the host and two replicas (or two Pods
//     of a pool) would collide. Bound to the Pod's 127.0.0.N it is reachable exactly where a
//     Pod's would be: at status.podIP. FSB_LISTEN=0.0.0.0:7070 becomes 127.0.0.5:7070. Other
//     values (`[::]:7070`, `127.0.0.1:9464`, arguments) are left as they are;
//   - when the service-account volume is mounted (/var/run/secrets/kubernetes.io/serviceaccount,
//     the default kube-api-access-* volume) and the Pod sets no KUBECONFIG, writes a kubeconfig
//     (server https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, the volume's ca.crt, token
//     and namespace) into the Pod's directory and sets KUBECONFIG, since in-cluster loaders
//     (@kubernetes/client-node's loadFromDefault()) read the absolute path otherwise;
//   - spawns COMMAND in its own process group (the Pod's), forwards SIGTERM, SIGINT and SIGHUP, and
//     exits with its exit code (or dies of the same signal).
// The fake kubelet signals the whole process group, so a product gets a stop signal directly and
// once more through the wrapper: the products handle a repeated SIGTERM as one.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";

const SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount";

const separator = process.argv.indexOf("--");
const command = separator === -1 ? [] : process.argv.slice(separator + 1);
if (command.length === 0) {
  console.error("in-pod: usage: node in-pod.js -- COMMAND [ARGS...]");
  process.exit(2);
}

/** mountPath -> host dir, without trailing slashes, longest mountPath first. */
function volumeMounts() {
  const raw = process.env.FSB_VOLUME_MOUNTS;
  if (!raw) return [];
  let mounts;
  try {
    mounts = JSON.parse(raw);
  } catch (error) {
    console.error(`in-pod: FSB_VOLUME_MOUNTS is not JSON: ${error.message}`);
    process.exit(2);
  }
  const trim = (p) => (p.length > 1 ? p.replace(/\/+$/, "") : p);
  return Object.entries(mounts)
    .map(([mountPath, hostDir]) => [trim(mountPath), trim(hostDir)])
    .sort(([a], [b]) => b.length - a.length);
}

/** `0.0.0.0:<port>`: a listen address on all of the Pod's addresses. */
const ALL_ADDRESSES = /^0\.0\.0\.0:(\d{1,5})$/;

/** The host path of `value` when it is a mountPath or under one; undefined otherwise. */
function hostPathOf(value, mounts) {
  for (const [mountPath, hostDir] of mounts) {
    if (value === mountPath) return hostDir;
    const prefix = mountPath === "/" ? "/" : `${mountPath}/`;
    if (value.startsWith(prefix)) return path.join(hostDir, value.slice(prefix.length));
  }
  return undefined;
}

/**
 * Writes a kubeconfig for the Pod's service account into the Pod's directory (the volume dirs are
 * `<pod dir>/volumes/<name>`, removed with the Pod); returns its path, or undefined when the volume
 * is not mounted or incomplete.
 */
function writeServiceAccountKubeconfig(mounts) {
  const account = mounts.find(([mountPath]) => mountPath === SERVICE_ACCOUNT_MOUNT)?.[1];
  if (!account) return undefined;
  const caFile = path.join(account, "ca.crt");
  const tokenFile = path.join(account, "token");
  if (!existsSync(caFile) || !existsSync(tokenFile)) {
    console.error(`in-pod: the service-account volume at ${account} has no ca.crt or token; KUBECONFIG is not set`);
    return undefined;
  }
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = process.env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) {
    console.error("in-pod: KUBERNETES_SERVICE_HOST/PORT are not set; KUBECONFIG is not set");
    return undefined;
  }
  const namespaceFile = path.join(account, "namespace");
  const namespace = existsSync(namespaceFile) ? readFileSync(namespaceFile, "utf8").trim() : "default";
  const kubeconfig = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "in-cluster", cluster: { server: `https://${host}:${port}`, "certificate-authority": caFile } }],
    users: [{ name: "service-account", user: { token: readFileSync(tokenFile, "utf8").trim() } }],
    contexts: [{ name: "in-cluster", context: { cluster: "in-cluster", user: "service-account", namespace } }],
    "current-context": "in-cluster",
  };
  // <pod dir>/volumes/<volume>: the Pod's directory is two levels up, and goes with the Pod.
  const dir = path.join(path.dirname(path.dirname(account)), "in-pod");
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `kubeconfig-${process.pid}.json`);
  // JSON is YAML: kubeconfig loaders read it as is.
  writeFileSync(file, JSON.stringify(kubeconfig, null, 2), { mode: 0o600 });
  return file;
}

const mounts = volumeMounts();
const env = { ...process.env };
for (const [name, value] of Object.entries(env)) {
  if (name === "FSB_VOLUME_MOUNTS" || value === undefined) continue;
  const hostPath = hostPathOf(value, mounts);
  if (hostPath !== undefined) env[name] = hostPath;
  const listen = ALL_ADDRESSES.exec(value);
  if (listen && env.POD_IP) env[name] = `${env.POD_IP}:${listen[1]}`;
}
let kubeconfigFile;
if (!env.KUBECONFIG) {
  kubeconfigFile = writeServiceAccountKubeconfig(mounts);
  if (kubeconfigFile) env.KUBECONFIG = kubeconfigFile;
}

const child = spawn(command[0], command.slice(1), { env, stdio: "inherit" });
const forwarded = ["SIGTERM", "SIGINT", "SIGHUP"];
for (const signal of forwarded) {
  process.on(signal, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  });
}
child.on("error", (error) => {
  console.error(`in-pod: cannot run ${command[0]}: ${error.message}`);
  if (kubeconfigFile) rmSync(kubeconfigFile, { force: true });
  process.exit(error.code === "ENOENT" ? 127 : 126);
});
child.on("exit", (code, signal) => {
  if (kubeconfigFile) rmSync(kubeconfigFile, { force: true });
  if (signal) {
    // Die of the same signal, so the kubelet records what the command died of.
    for (const name of forwarded) process.removeAllListeners(name);
    process.kill(process.pid, signal);
    // A signal whose default action does not end the process.
    setTimeout(() => process.exit(128), 1000).unref();
    return;
  }
  process.exit(code ?? 1);
});
