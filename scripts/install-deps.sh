#!/usr/bin/env bash
# Installs what Fast Sandbox needs on a Debian host (idempotent) and makes sure containerd runs.
# Needs root. Set FSB_SKIP_APT=1 to skip package installation (e.g. on a prepared host).
set -euo pipefail
cd "$(dirname "$0")/.."

# Runtime: containerd + runc (default) + runsc (gVisor); base image: busybox-static + umoci;
# sandbox networks: the CNI plugins (bridge, host-local, firewall, loopback), nftables (the agent's
# rules), iptables (the CNI firewall plugin), iproute2 (network namespaces), conntrack (forgetting a
# released address's connections);
# code generation: protoc and containerd's API protos; registry tests: skopeo, docker-registry (the CNCF
# distribution server, started by the tests on loopback) and htpasswd (apache2-utils); the Python
# SDK's tests: python3 with venv (test/e2e/python-sdk makes a virtual environment and pip-installs into it);
# the Kubernetes mode's images (test/e2e/images-build-and-run): buildah, and debootstrap for their
# base image (scripts/build-node-base-image.sh); the code-interpreter image's R and Java contexts:
# r-base-core (with fonts for its plots) and a JDK, without their recommendations (compilers,
# manuals, extra packages, X11).
PACKAGES=(containerd runc runsc busybox-static umoci skopeo protobuf-compiler python3 python3-venv
  golang-github-containerd-containerd-dev golang-github-gogo-protobuf-dev golang-github-gogo-googleapis-dev
  containernetworking-plugins nftables iptables conntrack
  iproute2 openssl curl util-linux gcc libc6-dev docker-registry apache2-utils buildah debootstrap)
WITHOUT_RECOMMENDS=(r-base-core fonts-dejavu-core openjdk-17-jdk-headless)

if [ "${FSB_SKIP_APT:-}" != 1 ]; then
  missing_of() {
    local package
    for package in "$@"; do
      dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || echo "$package"
    done
  }
  mapfile -t missing < <(missing_of "${PACKAGES[@]}")
  mapfile -t missing_plain < <(missing_of "${WITHOUT_RECOMMENDS[@]}")
  if [ $((${#missing[@]} + ${#missing_plain[@]})) -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "install-deps: missing packages (${missing[*]} ${missing_plain[*]}); run as root or install them: apt-get install -y ${missing[*]} ${missing_plain[*]}" >&2
      exit 1
    fi
    echo "install-deps: installing ${missing[*]} ${missing_plain[*]}" >&2
    apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; fi
    if [ ${#missing_plain[@]} -gt 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_plain[@]}" >/dev/null; fi
  fi
fi

# Debian's docker-registry package enables (and, under systemd, starts) a registry on :5000 of every
# interface; only the tests use the binary, each starting its own on loopback: the service is turned off.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled docker-registry >/dev/null 2>&1; then
  systemctl disable docker-registry >/dev/null 2>&1 || true
  if [ -d /run/systemd/system ]; then systemctl stop docker-registry >/dev/null 2>&1 || true; fi
fi

# kubectl drives the Kubernetes test harness; this image's apt sources carry it as `kubectl`.
if ! command -v kubectl >/dev/null 2>&1 && [ "${FSB_SKIP_APT:-}" != 1 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
fi

bash scripts/start-containerd.sh
