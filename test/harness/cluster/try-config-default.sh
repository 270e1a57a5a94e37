#!/usr/bin/env bash
# Tries the Kubernetes mode as a user would, on the test harness: a cluster of its own
# (`cluster.sh up`, the default image map, which runs config/default's images from the built
# packages), then literally
#
#   kubectl apply --server-side -k config/default        # after the namespace and the two token Secrets
#   kubectl apply -f config/samples/                      # in a namespace with the agent token Secret
#   kubectl fs logs hello                                 # hello from …
#   kubectl fs exec hello -- echo hi                      # hi
#   kubectl delete sandbox hello                          # its container goes from containerd
#
# and removes everything again: the namespace, `kubectl delete -k config/default`, the cluster,
# what the run's agents left in containerd and the cgroup tree, the images and host dirs it added.
# Exit 0 when every step worked and nothing is left (what was left is listed, and removed).
#
#   bash test/harness/cluster/try-config-default.sh
#
# Needs root, a running containerd, `npm run build` done, and the harness's binaries (`npm run
# cluster -- build`). config/default is production configuration: its agents and janitor use
# containerd's namespace k8s.io and the host dirs /var/lib/fast-sandbox/{agents,bin}, and the janitor
# reclaims what it finds there that its cluster does not know. So the script refuses to start when
# k8s.io holds containers labelled fast-sandbox.io/managed or /var/lib/fast-sandbox/agents is not
# empty (another cluster or `fsb up` as root uses them), and takes /tmp/fsb-k8s-suite.lock, the lock
# of the Kubernetes suite runs on this machine (FSB_K8S_LOCK_HELD=1 when the caller holds it).
#
# The sample's image busybox:1.36 cannot be pulled without the internet: the script imports the
# repository's base image (scripts/build-base-image.sh, busybox-static) into k8s.io and tags it
# docker.io/library/busybox:1.36, as a node whose image cache has it; both are removed at the end
# unless they were there before.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$REPO"
CLUSTER_SH="$REPO/test/harness/cluster/cluster.sh"
LOCK=/tmp/fsb-k8s-suite.lock
SYSTEM=fast-sandbox-system
SAMPLES=fsb-try-config-default
NS=k8s.io
HOST_DIR=/var/lib/fast-sandbox
BASE_IMAGE=fast-sandbox.io/base:latest
SAMPLE_IMAGE=docker.io/library/busybox:1.36

log() { echo "try-config-default: $*" >&2; }
die() {
  log "$*"
  exit 1
}

case "${1:-}" in
  "") ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown argument '$1' (it takes none; --help)" ;;
esac

# ------------------------------------------------------------------ preconditions

[ "$(id -u)" = 0 ] || die "needs root (containerd, cgroups, $HOST_DIR)"
for tool in kubectl ctr openssl flock; do command -v "$tool" >/dev/null || die "$tool is missing"; done
ctr version >/dev/null 2>&1 || die "containerd does not answer (bash scripts/start-containerd.sh starts it)"
for built in packages/controlplane/dist/kubernetes/main.js packages/agent/dist/main.js packages/janitor/dist/main.js \
  packages/cli/dist/main.js packages/agent/helper/build/fsb-helper; do
  [ -e "$built" ] || die "$built is missing: run npm run build"
done

if [ "${FSB_K8S_LOCK_HELD:-}" != 1 ]; then
  exec 9>>"$LOCK"
  if ! flock -n 9; then
    log "waiting for $LOCK (a Kubernetes suite run holds it; if you hold it yourself, set FSB_K8S_LOCK_HELD=1)"
    flock 9
  fi
fi
SECONDS=0

managed_containers() { ctr -n "$NS" containers ls -q 'labels."fast-sandbox.io/managed"' 2>/dev/null || true; }
if [ -n "$(managed_containers)" ]; then
  die "containerd namespace $NS holds containers labelled fast-sandbox.io/managed (another cluster's agents?); config/default's janitor would reclaim them: $(managed_containers | tr '\n' ' ')"
fi
if [ -n "$(ls -A "$HOST_DIR/agents" 2>/dev/null)" ]; then
  die "$HOST_DIR/agents is not empty (fsb up as root, or another cluster's agents); config/default's janitor would reclaim what is there"
fi

# ------------------------------------------------------------------ what the run adds, for the cleanup

STATE="$(mktemp -d "${TMPDIR:-/tmp}/fsb-try-config-default.XXXXXX")"
# Kept when something fails or is left: the cluster's and the Pods' logs.
LOGS="$STATE.logs"
unset FSB_CLUSTER_DIR FSB_IMAGE_MAP FSB_APISERVER_PORT FSB_CLUSTER_NODES KUBECONFIG
cluster() { FSB_CLUSTER_DIR="$STATE" bash "$CLUSTER_SH" "$@"; }
has_image() { ctr -n "$NS" images ls -q | grep -qxF "$1"; }
images_before="$(ctr -n "$NS" images ls -q 2>/dev/null || true)"
created_host_dirs=()
for dir in "$HOST_DIR" "$HOST_DIR/agents" "$HOST_DIR/bin"; do [ -e "$dir" ] || created_host_dirs+=("$dir"); done
had_namespace=0
ctr namespaces ls -q | grep -qxF "$NS" && had_namespace=1
had_base=0
had_sample=0
if [ "$had_namespace" = 1 ]; then
  has_image "$BASE_IMAGE" && had_base=1
  has_image "$SAMPLE_IMAGE" && had_sample=1
fi
cluster_up=0
failed=1

diagnostics() {
  [ -f "${KUBECONFIG:-}" ] || return 0
  log "--- diagnostics"
  kubectl get pods -A -o wide >&2 || true
  kubectl -n "$SAMPLES" get sandboxes,sandboxpools -o wide >&2 2>/dev/null || true
  local file
  for file in "$STATE"/kubelet/*/pods/*/*.log; do
    [ -f "$file" ] || continue
    echo "--- ${file#"$STATE/kubelet/"} (last lines)" >&2
    tail -n 20 "$file" >&2
  done
}

# The Pods' logs so far, into $LOGS (a Pod's dir goes with the Pod).
save_pod_logs() {
  local file pod
  for file in "$STATE"/kubelet/*/pods/*/*.log; do
    [ -f "$file" ] || continue
    pod="$(basename "$(dirname "$file")")"
    mkdir -p "$LOGS/pods/$pod" && cp "$file" "$LOGS/pods/$pod/"
  done
}

# The agents of the run: each has a state dir under $HOST_DIR/agents (which was empty before).
run_agents() { ls -A "$HOST_DIR/agents" 2>/dev/null || true; }

cleanup() {
  local status=$? problems=()
  set +e
  [ "$failed" = 0 ] || diagnostics
  save_pod_logs
  log "removing everything the run created"
  if [ "$cluster_up" = 1 ] && [ -f "${KUBECONFIG:-}" ]; then
    # The sandbox first (when a check failed before), while its agent and the controller run (the
    # controller removes its finalizer once the agent has deleted it), then the namespace: the pool
    # and its agent Pods.
    kubectl -n "$SAMPLES" delete sandbox hello --ignore-not-found --timeout=120s >&2 || problems+=("deleting sandbox hello failed")
    kubectl delete namespace "$SAMPLES" --ignore-not-found --timeout=180s >&2 || problems+=("deleting namespace $SAMPLES failed")
    save_pod_logs
    kubectl delete -k config/default --ignore-not-found --timeout=180s >&2 || problems+=("kubectl delete -k config/default failed")
    kubectl wait --for=delete pods --all -A --timeout=60s >/dev/null 2>&1
    local pods
    pods="$(kubectl get pods -A -o name 2>&1)"
    [ -z "$pods" ] || problems+=("Pods left in the cluster: $pods")
  fi
  cp -r "$STATE/logs" "$LOGS/cluster" 2>/dev/null
  if [ "$cluster_up" = 1 ]; then cluster down >&2 || problems+=("cluster.sh down failed"); fi
  rm -rf "$STATE"
  # KUBECONFIG names the state dir: the commands below must not inherit it.
  unset KUBECONFIG
  # Processes of the run: cluster components name the state dir on their command line, Pod
  # processes in their environment (FSB_VOLUME_MOUNTS…). The pattern comes from a file, so that
  # grep's own command line does not match.
  local left
  left="$(grep -lsF -f <(printf '%s\n' "$STATE") /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | sort -u | tr '\n' ' ')"
  [ -z "$left" ] || problems+=("processes of the run are left: $left")
  # What the run's agents left in containerd (labelled with their names) and in the cgroup tree.
  local agent id
  for agent in $(run_agents); do
    for id in $(ctr -n "$NS" containers ls -q "labels.\"fast-sandbox.io/agent\"==$agent" 2>/dev/null); do
      problems+=("container $id of agent $agent was left in $NS")
      ctr -n "$NS" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1
      sleep 0.5
      ctr -n "$NS" tasks rm -f "$id" >/dev/null 2>&1
      local snapshot
      snapshot="$(ctr -n "$NS" containers info "$id" 2>/dev/null | sed -n 's/^ *"SnapshotKey": *"\([^"]*\)".*/\1/p')"
      ctr -n "$NS" containers rm "$id" >/dev/null 2>&1 || problems+=("could not remove container $id")
      [ -z "$snapshot" ] || ctr -n "$NS" snapshots rm "$snapshot" >/dev/null 2>&1
    done
    local cgroup
    for cgroup in /sys/fs/cgroup/*/"$NS/$agent" /sys/fs/cgroup/"$NS/$agent"; do
      [ -d "$cgroup" ] || continue
      find "$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null
      [ ! -d "$cgroup" ] || problems+=("cgroup $cgroup is left (processes still in it?)")
    done
  done
  # The images the run added: its two names and the references containerd's CRI plugin adds in
  # k8s.io (sha256:<config digest>, io.cri-containerd.image=managed) for the same manifest.
  local digest ref
  digest="$(ctr -n "$NS" images ls 2>/dev/null | awk -v ref="$BASE_IMAGE" '$1 == ref { print $3 }')"
  [ "$had_sample" = 1 ] || ! has_image "$SAMPLE_IMAGE" || ctr -n "$NS" images rm "$SAMPLE_IMAGE" >/dev/null || problems+=("could not remove image $SAMPLE_IMAGE")
  if [ -n "$digest" ]; then
    for ref in $(ctr -n "$NS" images ls 2>/dev/null | awk -v digest="$digest" 'NR > 1 && $3 == digest { print $1 }'); do
      [ "$ref" != "$BASE_IMAGE" ] || continue
      grep -qxF "$ref" <<<"$images_before" || ctr -n "$NS" images rm "$ref" >/dev/null || problems+=("could not remove image $ref")
    done
  fi
  [ "$had_base" = 1 ] || ! has_image "$BASE_IMAGE" || ctr -n "$NS" images rm --sync "$BASE_IMAGE" >/dev/null || problems+=("could not remove image $BASE_IMAGE")
  if [ "$had_namespace" = 0 ]; then ctr namespaces rm "$NS" >/dev/null 2>&1 || problems+=("containerd namespace $NS is not empty"); fi
  # Host dirs, deepest first, only those the run created.
  local i
  for ((i = ${#created_host_dirs[@]} - 1; i >= 0; i--)); do rm -rf "${created_host_dirs[i]}"; done
  if [ ${#problems[@]} -gt 0 ]; then
    printf 'try-config-default: left behind: %s\n' "${problems[@]}" >&2
    [ "$status" != 0 ] || status=1
  fi
  if [ "$status" = 0 ]; then rm -rf "$LOGS"; else log "the run's logs: $LOGS"; fi
  if [ "$status" = 0 ]; then log "OK: everything worked, nothing is left (${SECONDS} s)"; else log "FAILED (exit $status)"; fi
  exit "$status"
}
trap cleanup EXIT

# ------------------------------------------------------------------ the node

log "the sample's image: $SAMPLE_IMAGE from the repository's base image, in containerd namespace $NS"
bash scripts/build-base-image.sh "$BASE_IMAGE" "$NS"
has_image "$SAMPLE_IMAGE" || ctr -n "$NS" images tag "$BASE_IMAGE" "$SAMPLE_IMAGE" >/dev/null
# config/agent's hostPath volumes (DirectoryOrCreate, which the fake kubelet does not create).
mkdir -p "$HOST_DIR/agents" "$HOST_DIR/bin"

log "cluster in $STATE"
cluster_up=1
up="$(cluster up)"
KUBECONFIG="$(printf '%s\n' "$up" | sed -n 's/^KUBECONFIG=//p' | tail -n 1)"
export KUBECONFIG
[ -f "$KUBECONFIG" ] || die "cluster.sh up printed no KUBECONFIG: $up"

# ------------------------------------------------------------------ the commands of config/default/kustomization.yaml

kubectl create namespace "$SYSTEM"
kubectl -n "$SYSTEM" create secret generic fast-sandbox-api-token --from-literal=token="$(openssl rand -hex 32)"
kubectl -n "$SYSTEM" create secret generic fast-sandbox-agent-token --from-literal=token="$(openssl rand -hex 32)"
kubectl apply --server-side -k config/default
kubectl wait --for=condition=Established --timeout=60s crd/sandboxes.sandbox.fast.io crd/sandboxpools.sandbox.fast.io
log "waiting for the controller Deployment to be Available and the janitor Ready"
kubectl -n "$SYSTEM" wait --for=condition=Available --timeout=180s deployment/fast-sandbox-controller
kubectl -n "$SYSTEM" rollout status --timeout=120s daemonset/fast-sandbox-janitor
kubectl -n "$SYSTEM" wait --for=condition=Ready --timeout=120s pod -l app.kubernetes.io/component=janitor

# ------------------------------------------------------------------ the commands of config/samples

kubectl create namespace "$SAMPLES"
# The context's namespace, so what follows is literally the samples' commands.
kubectl config set-context --current --namespace="$SAMPLES" >/dev/null
# No copy of the agent token here: each pool's agents get their own from the controller.
kubectl apply -f config/samples/
log "waiting for the sample Sandbox hello to be Running"
kubectl wait --for=jsonpath='{.status.phase}'=Running --timeout=180s sandbox/hello
kubectl get sandboxes,sandboxpools,pods -o wide

# ------------------------------------------------------------------ kubectl fs

export PATH="$REPO/packages/cli/bin:$PATH"
logs=""
for _ in $(seq 1 20); do
  logs="$(kubectl fs logs hello)"
  [ -z "$logs" ] || break
  sleep 0.5
done
echo "kubectl fs logs hello: $logs"
[[ "$logs" == "hello from "* ]] || die "kubectl fs logs hello printed '$logs', not 'hello from …'"
said="$(kubectl fs exec hello -- echo hi)"
echo "kubectl fs exec hello -- echo hi: $said"
[ "$said" = hi ] || die "kubectl fs exec hello -- echo hi printed '$said'"
set +e
kubectl fs exec hello -- sh -c 'exit 3'
code=$?
set -e
echo "kubectl fs exec hello -- sh -c 'exit 3': exit code $code"
[ "$code" = 3 ] || die "kubectl fs exec hello -- sh -c 'exit 3' exited $code, not 3"

# ------------------------------------------------------------------ kubectl delete sandbox hello

# Its container goes from containerd: at once through its agent, or — when the controller had lost
# the agent at that moment (e.g. a missed readiness probe) — through the janitor, once the container
# is older than the janitor's protection window (config/janitor: 2 min, every 10 s).
kubectl delete sandbox hello --timeout=120s
# Its own container only: the pool's agents also keep prepared instances (role=prepared-instance, no name) in that namespace.
sandbox_containers() { ctr -n "$NS" containers ls -q "labels.\"fast-sandbox.io/namespace\"==$SAMPLES,labels.\"fast-sandbox.io/name\"==hello"; }
deleted_at=$SECONDS
until [ -z "$(sandbox_containers)" ]; do
  [ $((SECONDS - deleted_at)) -lt 180 ] || die "sandbox hello's container is still in containerd 180 s after its deletion: $(sandbox_containers)"
  sleep 1
done
if [ $((SECONDS - deleted_at)) -le 5 ]; then
  echo "kubectl delete sandbox hello: its container is gone"
else
  echo "kubectl delete sandbox hello: its container is gone after $((SECONDS - deleted_at)) s (reclaimed by the janitor)"
fi
failed=0
