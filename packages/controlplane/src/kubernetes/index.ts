/**
 * `@fast-sandbox/controlplane/kubernetes`: the parts of the control plane that speak to the
 * Kubernetes API. An entry of its own so that the package's main entry (the embedded mode: `fsb up`,
 * SQLite) never loads `@kubernetes/client-node`, which costs some 50 MiB of memory and a noticeable
 * start-up time (docs/PERFORMANCE.md, "Footprint at scale"). The controller's own process starts
 * from main.js in this folder.
 */
export {
  startKubernetesControlPlane,
  DEFAULT_FOREIGN_CREATE_GRACE_MS,
  type KubernetesControlPlane,
  type KubernetesControlPlaneOptions,
} from "./kubernetes-control-plane.js";
export { startKubernetesSandboxProxy, type KubernetesSandboxProxy } from "./kubernetes-sandbox-proxy.js";
export { openKubernetesResourceStore, type KubernetesResourceStore, type KubernetesResourceStoreOptions } from "../store/kubernetes-resource-store.js";
