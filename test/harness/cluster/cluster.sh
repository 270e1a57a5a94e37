#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for tests:
# etcd + kube-apiserver + kube-controller-manager + kube-scheduler (built by
# build.sh) and one fake kubelet per node (fake-kubelet.ts).
#
#   cluster.sh build                      build/cache the binaries, print their dir
#   cluster.sh up                         start (idempotent), print KUBECONFIG=<path>
#   cluster.sh down                       stop everything it started, remove the state dir
#   cluster.sh status                     what runs (exit 0 when all runs, 3 otherwise)
#   cluster.sh env                        print KUBECONFIG=<path> (and other facts) of a running cluster
#   cluster.sh kubeconfig-for NS SA [DURATION]
#                                         print a kubeconfig for ServiceAccount NS/SA (TokenRequest)
#
# Environment:
#   FSB_CLUSTER_DIR        state dir (default /tmp/fsb-cluster); removed by `down`
#   FSB_APISERVER_PORT     apiserver port on 127.0.0.1 (default: a free port)
#   FSB_CLUSTER_NODES      comma separated node names (default fsb-node-0)
#   FSB_IMAGE_MAP          image -> command mapping file (default programs/images.json)
#   FSB_K8S_VERSION, FSB_K8S_CACHE   see build.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
STATE="${FSB_CLUSTER_DIR:-/tmp/fsb-cluster}"
NODES="${FSB_CLUSTER_NODES:-fsb-node-0}"
IMAGE_MAP="${FSB_IMAGE_MAP:-$HERE/programs/images.json}"
SERVICE_CIDR="${FSB_SERVICE_CIDR:-10.96.0.0/16}"
# Pod IPs (127.0.0.N) are allocated machine-wide so that two clusters never share one.
export FSB_IP_POOL_DIR="${FSB_IP_POOL_DIR:-${TMPDIR:-/tmp}/fsb-loopback-ips}"
ISSUER="https://kubernetes.default.svc.cluster.local"

log() { echo "[cluster] $*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------- helpers

# pid_alive PIDFILE -> 0 when the pid in the file runs and belongs to this state dir.
pid_alive() {
  local f="$1" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  # The process must carry the state dir on its command line (guards against pid reuse).
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STATE" || return 1
  # A zombie is not alive.
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ]
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# free_ports N -> N distinct free TCP ports on 127.0.0.1, one a line
free_ports() {
  node -e '
    const net = require("node:net");
    const n = Number(process.argv[1]); const servers = []; const ports = [];
    (async () => {
      for (let i = 0; i < n; i++) {
        const s = net.createServer(); servers.push(s);
        await new Promise((r) => s.listen(0, "127.0.0.1", r));
        ports.push(s.address().port);
      }
      for (const s of servers) s.close();
      console.log(ports.join("\n"));
    })();' "$1"
}

# start NAME CMD... : run in its own session/process group, log to logs/NAME.log
start_proc() {
  local name="$1"; shift
  if pid_alive "$STATE/pids/$name.pid"; then return 0; fi
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  local pid=$!
  echo "$pid" >"$STATE/pids/$name.pid"
  # Until it has exec'd the program, the child is a copy of this shell, whose command line does not
  # name the state dir: pid_alive would take a process still starting (on a loaded machine, for a
  # while) for one that exited. Wait for the exec, or for the child to end.
  local tries=0
  while [ -d "/proc/$pid" ] && ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STATE" && [ "$tries" -lt 200 ]; do
    tries=$((tries + 1))
    sleep 0.05
  done
}

# exit_facts PIDFILE: sets FACTS to how the process of the pid file ended, as far as this shell can
# tell: its exit status or signal when it was this shell's child, or what still runs under its pid.
# (Not in a command substitution: a subshell cannot wait for this shell's children.)
exit_facts() {
  local pid code state
  FACTS="no pid file"
  pid="$(cat "$1" 2>/dev/null)" || return 0
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
  if [ -n "$state" ] && [ "$state" != Z ]; then
    FACTS="pid $pid is there ($state): $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)"
    return 0
  fi
  wait "$pid" 2>/dev/null && code=0 || code=$?
  if [ "$code" = 127 ]; then FACTS="pid $pid, not a child of this shell"
  elif [ "$code" -gt 128 ]; then FACTS="pid $pid killed by signal $((code - 128))"
  else FACTS="pid $pid exit status $code"; fi
}

# wait_for DESCRIPTION TIMEOUT_SECONDS PIDNAME CMD... : poll CMD until it succeeds
wait_for() {
  local what="$1" timeout="$2" pidname="$3"; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$pidname" ] && ! pid_alive "$STATE/pids/$pidname.pid"; then
      exit_facts "$STATE/pids/$pidname.pid"
      log "$pidname exited ($FACTS); last lines of $STATE/logs/$pidname.log:"
      tail -n 30 "$STATE/logs/$pidname.log" >&2 || true
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "timed out after ${timeout}s waiting for $what"
      [ -n "$pidname" ] && tail -n 30 "$STATE/logs/$pidname.log" >&2
      return 1
    fi
    sleep 0.5
  done
}

kubeconfig() { # FILE USER CERT KEY
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fsb
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $3
    client-key: $4
contexts:
- name: fsb
  context:
    cluster: fsb
    user: $2
current-context: fsb
EOF
}

client_cert() { # NAME CN [O [CA]]
  local name="$1" cn="$2" o="${3:-}" ca="${4:-ca}" subj
  subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o/CN=$cn"
  [ -f "$STATE/pki/$name.crt" ] && return 0
  openssl genrsa -out "$STATE/pki/$name.key" 2048 2>/dev/null
  openssl req -new -key "$STATE/pki/$name.key" -subj "$subj" -out "$STATE/pki/$name.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$STATE/pki/$name.ext"
  openssl x509 -req -in "$STATE/pki/$name.csr" -CA "$STATE/pki/$ca.crt" -CAkey "$STATE/pki/$ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$STATE/pki/$name.ext" -out "$STATE/pki/$name.crt" 2>/dev/null
}

gen_pki() {
  local p="$STATE/pki"
  mkdir -p "$p"
  local ca
  # ca: cluster CA; front-proxy-ca: the aggregation layer's request-header CA.
  for ca in ca front-proxy-ca; do
    [ -f "$p/$ca.crt" ] && continue
    openssl genrsa -out "$p/$ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$p/$ca.key" -subj "/CN=fsb-test-$ca" -days 30 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$p/$ca.crt" 2>/dev/null
  done
  if [ ! -f "$p/apiserver.crt" ]; then
    openssl genrsa -out "$p/apiserver.key" 2048 2>/dev/null
    openssl req -new -key "$p/apiserver.key" -subj "/CN=kube-apiserver" -out "$p/apiserver.csr" 2>/dev/null
    local first_ip="${SERVICE_CIDR%/*}"; first_ip="${first_ip%.*}.1"
    cat >"$p/apiserver.ext" <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$first_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl x509 -req -in "$p/apiserver.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 30 \
      -sha256 -extfile "$p/apiserver.ext" -out "$p/apiserver.crt" 2>/dev/null
  fi
  if [ ! -f "$p/sa.key" ]; then
    openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
    openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  fi
  client_cert admin kubernetes-admin system:masters
  client_cert controller-manager system:kube-controller-manager
  client_cert scheduler system:kube-scheduler
  client_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  client_cert front-proxy-client front-proxy-client "" front-proxy-ca
  local n
  for n in ${NODES//,/ }; do client_cert "node-$n" "system:node:$n" system:nodes; done
  chmod 600 "$p"/*.key
}

load_ports() {
  # shellcheck disable=SC1091
  [ -f "$STATE/ports.env" ] && . "$STATE/ports.env"
  return 0
}

cluster_json() {
  local nodes_json="" n
  for n in ${NODES//,/ }; do nodes_json="$nodes_json${nodes_json:+,}\"$n\""; done
  cat >"$STATE/cluster.json" <<EOF
{
  "server": "https://127.0.0.1:$APISERVER_PORT",
  "apiserverPort": $APISERVER_PORT,
  "etcdPort": $ETCD_PORT,
  "stateDir": "$STATE",
  "kubeconfig": "$STATE/admin.kubeconfig",
  "ca": "$STATE/pki/ca.crt",
  "adminCert": "$STATE/pki/admin.crt",
  "adminKey": "$STATE/pki/admin.key",
  "nodes": [$nodes_json],
  "binDir": "$BIN"
}
EOF
}

# ---------------------------------------------------------------- commands

cmd_build() { bash "$HERE/build.sh"; }

cmd_up() {
  BIN="$(bash "$HERE/build.sh" | tail -n 1)"
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    [ -x "$BIN/$b" ] || die "missing $BIN/$b"
  done
  command -v kubectl >/dev/null || die "kubectl not found on PATH"
  if [ -d "$STATE" ] && [ -n "$(ls -A "$STATE")" ] && [ ! -f "$STATE/.fsb-cluster" ]; then
    die "$STATE exists and is not a cluster state dir; refusing to use it (set FSB_CLUSTER_DIR)"
  fi
  mkdir -p "$STATE"/{pids,logs,pki,etcd,kubelet}
  touch "$STATE/.fsb-cluster"
  exec 8>"$STATE/.lock"
  flock 8

  if [ ! -f "$STATE/ports.env" ]; then
    local ports
    mapfile -t ports < <(free_ports 5)
    {
      echo "APISERVER_PORT=${FSB_APISERVER_PORT:-${ports[0]}}"
      echo "ETCD_PORT=${ports[1]}"
      echo "ETCD_PEER_PORT=${ports[2]}"
      echo "KCM_PORT=${ports[3]}"
      echo "SCHED_PORT=${ports[4]}"
    } >"$STATE/ports.env"
  fi
  load_ports
  if ! pid_alive "$STATE/pids/kube-apiserver.pid" && port_open 127.0.0.1 "$APISERVER_PORT"; then
    die "port $APISERVER_PORT on 127.0.0.1 is taken by another process (set FSB_APISERVER_PORT)"
  fi
  gen_pki
  kubeconfig "$STATE/admin.kubeconfig" admin "$STATE/pki/admin.crt" "$STATE/pki/admin.key"
  kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager "$STATE/pki/controller-manager.crt" "$STATE/pki/controller-manager.key"
  kubeconfig "$STATE/scheduler.kubeconfig" scheduler "$STATE/pki/scheduler.crt" "$STATE/pki/scheduler.key"
  cluster_json

  # etcd: loopback only, plain HTTP on 127.0.0.1 (never leaves the machine).
  start_proc etcd "$BIN/etcd" --name fsb --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "fsb=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn
  wait_for "etcd" 60 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  local p="$STATE/pki"
  # Admission: the default enabled set of the release plus NodeRestriction.
  # Started again if it exits before it is ready (a failure is reported with its log), up to three
  # times, a few seconds apart: once in a CI run it exited twice in a row at once, leaving no log.
  local attempt
  for attempt in 1 2 3; do
    start_proc kube-apiserver "$BIN/kube-apiserver" \
      --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
      --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
      --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
      --client-ca-file="$p/ca.crt" \
      --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" --kubelet-client-key="$p/apiserver-kubelet-client.key" \
      --requestheader-client-ca-file="$p/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
      --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
      --requestheader-extra-headers-prefix=X-Remote-Extra- \
      --proxy-client-cert-file="$p/front-proxy-client.crt" --proxy-client-key-file="$p/front-proxy-client.key" \
      --authorization-mode=Node,RBAC \
      --enable-admission-plugins=NodeRestriction \
      --service-account-issuer="$ISSUER" \
      --service-account-key-file="$p/sa.pub" \
      --service-account-signing-key-file="$p/sa.key" \
      --service-cluster-ip-range="$SERVICE_CIDR" \
      --endpoint-reconciler-type=none \
      --allow-privileged=true \
      --profiling=false \
      --cert-dir="$p/apiserver-generated"
    if wait_for "kube-apiserver /readyz" 180 kube-apiserver \
      curl -sf --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key" "https://127.0.0.1:$APISERVER_PORT/readyz"; then
      break
    fi
    [ "$attempt" = 3 ] && die "kube-apiserver did not become ready"
    log "kube-apiserver did not become ready; starting it again in $((attempt * 3)) s"
    sleep $((attempt * 3))
  done

  start_proc kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --controllers='*,bootstrapsigner,tokencleaner' \
    --leader-elect=false \
    --cert-dir="$p/kcm-generated"
  start_proc kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" \
    --leader-elect=false \
    --cert-dir="$p/scheduler-generated"

  local n
  for n in ${NODES//,/ }; do
    kubeconfig "$STATE/node-$n.kubeconfig" "system:node:$n" "$p/node-$n.crt" "$p/node-$n.key"
    (cd "$REPO" && start_proc "kubelet-$n" node --import tsx "$HERE/fake-kubelet.ts" \
      --state-dir "$STATE" --node "$n" --server "https://127.0.0.1:$APISERVER_PORT" \
      --ca "$p/ca.crt" --cert "$p/node-$n.crt" --key "$p/node-$n.key" \
      --image-map "$IMAGE_MAP" --apiserver-port "$APISERVER_PORT" \
      --kubelet-version "$(sed -n 's/^version=//p' "$BIN/../.complete")-fsb-fake")
  done

  local kc="$STATE/admin.kubeconfig"
  wait_for "kube-controller-manager /healthz" 120 kube-controller-manager \
    curl -skf "https://127.0.0.1:$KCM_PORT/healthz"
  wait_for "kube-scheduler /healthz" 120 kube-scheduler curl -skf "https://127.0.0.1:$SCHED_PORT/healthz"
  for n in ${NODES//,/ }; do
    wait_for "node $n Ready" 120 "kubelet-$n" \
      bash -c "kubectl --kubeconfig '$kc' get node '$n' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  done
  # The default ServiceAccount appears once the serviceaccount controller ran.
  wait_for "default ServiceAccount" 120 kube-controller-manager kubectl --kubeconfig "$kc" -n default get serviceaccount default
  log "cluster is up (state dir $STATE, logs in $STATE/logs)"
  echo "KUBECONFIG=$kc"
}

# stop_group NAME TIMEOUT: SIGTERM its process group, then SIGKILL after TIMEOUT seconds
stop_group() {
  local name="$1" timeout="${2:-10}" f pid i
  f="$STATE/pids/$name.pid"
  [ -f "$f" ] || return 0
  if pid_alive "$f"; then
    pid="$(cat "$f")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
      pid_alive "$f" || break
      sleep 0.1
    done
    if pid_alive "$f"; then
      log "$name did not stop on SIGTERM, sending SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$f"
}

# Pod processes run in their own process groups; the fake kubelet records them.
stop_pod_processes() {
  local f pgid
  for f in "$STATE"/kubelet/*/pods/*/*.pgid; do
    [ -f "$f" ] || continue
    pgid="$(cat "$f")"
    [ -n "$pgid" ] && kill -KILL -- "-$pgid" 2>/dev/null || true
  done
}

# Loopback IPs still recorded as owned by this state dir (a kubelet that was killed).
release_ips() {
  local d
  for d in "$FSB_IP_POOL_DIR"/*/; do
    [ -f "$d/owner" ] || continue
    grep -qF "\"stateDir\":\"$STATE\"" "$d/owner" && rm -rf "$d"
  done
  return 0
}

# wait_exited ID...: waits (10 s at most) until none of the processes (PID) or process groups (-PGID)
# exists but as a zombie. pid_alive says "gone" as soon as a process's command line reads empty, which
# happens early in its exit, while a big process may still be tearing its memory down (and is still
# there for kill -0): `down` returns only once everything it stopped has really ended.
wait_exited() {
  local i id state alive
  for ((i = 0; i < 100; i++)); do
    alive=""
    for id in "$@"; do
      kill -0 -- "$id" 2>/dev/null || continue
      if [[ "$id" != -* ]]; then
        state="$(awk '{print $3}' "/proc/$id/stat" 2>/dev/null || true)"
        [ -z "$state" ] || [ "$state" = Z ] && continue
      fi
      alive="$id"
      break
    done
    [ -z "$alive" ] && return 0
    sleep 0.1
  done
  log "still running 10 s after down stopped it: $alive"
}

cmd_down() {
  [ -d "$STATE" ] || { log "nothing to stop ($STATE does not exist)"; return 0; }
  [ -f "$STATE/.fsb-cluster" ] || die "$STATE is not a cluster state dir (no .fsb-cluster marker); not touching it"
  exec 8>"$STATE/.lock"
  flock 8
  local n f stopped=()
  # What this run started and down stops: the control plane and kubelets (while pid_alive still
  # recognises them by their command lines) and the pods' process groups.
  for f in "$STATE"/pids/*.pid; do
    [ -f "$f" ] && pid_alive "$f" && stopped+=("$(cat "$f")")
  done
  for f in "$STATE"/kubelet/*/pods/*/*.pgid; do
    [ -f "$f" ] && [ -n "$(cat "$f")" ] && stopped+=("-$(cat "$f")")
  done
  # Kubelets first (they stop their pods on SIGTERM), then the control plane.
  for f in "$STATE"/pids/kubelet-*.pid; do
    [ -f "$f" ] || continue
    n="$(basename "$f" .pid)"
    stop_group "$n" 20
  done
  stop_pod_processes
  release_ips
  stop_group kube-scheduler 10
  stop_group kube-controller-manager 10
  stop_group kube-apiserver 20
  stop_group etcd 10
  [ ${#stopped[@]} -eq 0 ] || wait_exited "${stopped[@]}"
  rm -rf "$STATE"
  log "stopped; removed $STATE"
}

cmd_status() {
  [ -d "$STATE" ] || { echo "not running (no $STATE)"; return 3; }
  load_ports
  local all=0 f name
  for f in "$STATE"/pids/*.pid; do
    [ -f "$f" ] || continue
    name="$(basename "$f" .pid)"
    if pid_alive "$f"; then echo "$name: running (pid $(cat "$f"))"
    else echo "$name: NOT running (see $STATE/logs/$name.log)"; all=1; fi
  done
  if [ -n "${APISERVER_PORT:-}" ] && curl -sf --cacert "$STATE/pki/ca.crt" --cert "$STATE/pki/admin.crt" \
    --key "$STATE/pki/admin.key" "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null 2>&1; then
    echo "apiserver: ready at https://127.0.0.1:$APISERVER_PORT"
    kubectl --kubeconfig "$STATE/admin.kubeconfig" get nodes 2>/dev/null || true
  else
    echo "apiserver: not ready"; all=1
  fi
  echo "KUBECONFIG=$STATE/admin.kubeconfig"
  return $all
}

cmd_env() {
  [ -f "$STATE/admin.kubeconfig" ] || die "no cluster in $STATE"
  load_ports
  echo "KUBECONFIG=$STATE/admin.kubeconfig"
  echo "FSB_CLUSTER_DIR=$STATE"
  echo "FSB_APISERVER=https://127.0.0.1:$APISERVER_PORT"
}

cmd_kubeconfig_for() {
  local ns="${1:?usage: kubeconfig-for NAMESPACE SERVICEACCOUNT [DURATION]}" sa="${2:?usage: kubeconfig-for NAMESPACE SERVICEACCOUNT [DURATION]}"
  local duration="${3:-24h}" token
  [ -f "$STATE/admin.kubeconfig" ] || die "no cluster in $STATE"
  load_ports
  token="$(kubectl --kubeconfig "$STATE/admin.kubeconfig" -n "$ns" create token "$sa" --duration "$duration")"
  cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fsb
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $STATE/pki/ca.crt
users:
- name: system:serviceaccount:$ns:$sa
  user:
    token: $token
contexts:
- name: fsb
  context:
    cluster: fsb
    namespace: $ns
    user: system:serviceaccount:$ns:$sa
current-context: fsb
EOF
}

case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  kubeconfig-for) shift; cmd_kubeconfig_for "$@" ;;
  *)
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
