#!/usr/bin/env bash
# Builds the code-interpreter image — images/code-interpreter/code_interpreter.py (E2B's
# code-interpreter API on port 49999) on Python's standard library — and imports it into containerd.
# Offline, from this host's files, like the base image: busybox-static for the shell and tools,
# Debian's python3 (the interpreter, its standard library and the shared libraries they link),
# Debian's bash and node (for bash and JavaScript contexts), Debian's R (r-base-core: R contexts,
# with R's base packages and its cairo PNG device, no Tcl/Tk), a Java runtime made by jlink from the host's JDK
# (Java contexts: JShell, images/code-interpreter/JavaContext.java compiled), the repository's pinned TypeScript
# compiler (TypeScript contexts: types stripped), numpy, pandas, matplotlib, IPython and pip (the wheels pinned in
# images/code-interpreter/requirements.txt, downloaded once by the host's pip into the cache
# directory), a `user` account with home /home/user (E2B's). A pool named `code-interpreter-v1` (the
# template E2B's code-interpreter SDKs ask for; config/samples/code-interpreter-pool.yaml) with this
# image serves their `run_code`; see the README. Code that needs other packages needs an image that
# has them: any image with python3 serves the same API with the server copied in and run as its
# command.
#
# Idempotent: the OCI archive is cached (keyed by the python, bash and node binaries, the server, the
# requirements and this script) and rebuilt only when missing; the import is skipped when
# containerd's namespace has the image.
#
# Usage: scripts/build-code-interpreter-image.sh [IMAGE] [CONTAINERD_NAMESPACE]
#   IMAGE                 env FSB_CODE_INTERPRETER_IMAGE, default fast-sandbox.io/code-interpreter:latest
#   CONTAINERD_NAMESPACE  env FSB_CONTAINERD_NAMESPACE,   default fast-sandbox
#   cache directory       env FSB_IMAGE_CACHE_DIR,        default ${XDG_CACHE_HOME:-$HOME/.cache}/fast-sandbox/images
#   containerd socket     env FSB_CONTAINERD_ADDRESS,     default /run/containerd/containerd.sock
#   python                env FSB_PYTHON,                 default /usr/bin/python3 (Debian's python3)
#   bash                  env FSB_BASH,                   default /bin/bash
#   node                  env FSB_NODE,                   default the node on PATH
#   Rscript               env FSB_RSCRIPT,                default /usr/bin/Rscript (Debian's r-base-core)
#   JDK (javac, jlink)    env FSB_JAVA_HOME,              default the JDK of the javac on PATH (Debian's openjdk-17-jdk-headless)
#   pip (downloads)       env FSB_PIP,                    default "python3 -m pip", else a virtual environment's (any python's pip: wheels for the image's python are asked for)
# Needs root (ctr, chroot) and the Debian packages busybox-static, umoci, python3, r-base-core, a JDK (openjdk-17-jdk-headless) and containerd.
set -euo pipefail
SELF="$(readlink -f "$0")"
cd "$(dirname "$SELF")/.."
source scripts/lib/oci-image.sh

IMAGE="${1:-${FSB_CODE_INTERPRETER_IMAGE:-fast-sandbox.io/code-interpreter:latest}}"
NAMESPACE="${2:-${FSB_CONTAINERD_NAMESPACE:-fast-sandbox}}"
CACHE_DIR="${FSB_IMAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fast-sandbox/images}"
ADDRESS="${FSB_CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}"
BUSYBOX="${FSB_BUSYBOX:-/bin/busybox}"
PYTHON="${FSB_PYTHON:-/usr/bin/python3}"
BASH_BIN="${FSB_BASH:-/bin/bash}"
NODE_BIN="${FSB_NODE:-$(command -v node || echo /usr/bin/node)}"
RSCRIPT_BIN="${FSB_RSCRIPT:-/usr/bin/Rscript}"
JAVASCRIPT_CONTEXT="images/code-interpreter/javascript_context.cjs"
R_CONTEXT="images/code-interpreter/r_context.R"
JAVA_CONTEXT="images/code-interpreter/JavaContext.java"
# TypeScript contexts strip types with the repository's pinned `typescript` (package.json; npm ci).
TYPESCRIPT_DIR="node_modules/typescript"
SERVER="images/code-interpreter/code_interpreter.py"
REQUIREMENTS="images/code-interpreter/requirements.txt"
read -r -a PIP <<<"${FSB_PIP:-python3 -m pip}"

log() { echo "build-code-interpreter-image: $*" >&2; }
die() { log "$*"; exit 1; }

for tool in umoci ctr sha256sum ldd; do
  command -v "$tool" >/dev/null || die "$tool is missing; apt-get install -y umoci containerd libc-bin"
done
[[ -x "$BUSYBOX" ]] || die "$BUSYBOX is missing; apt-get install -y busybox-static"
[[ -x "$PYTHON" ]] || die "$PYTHON is missing; apt-get install -y python3"
[[ -x "$BASH_BIN" ]] || die "$BASH_BIN is missing; apt-get install -y bash"
[[ -x "$NODE_BIN" ]] || die "$NODE_BIN is missing; apt-get install -y nodejs"
[[ -x "$RSCRIPT_BIN" ]] || die "$RSCRIPT_BIN is missing; apt-get install -y --no-install-recommends r-base-core"
java_home="${FSB_JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v javac || echo /nonexistent/bin/javac)")")")}"
[[ -x "$java_home/bin/jlink" && -x "$java_home/bin/javac" ]] || die "no JDK with javac and jlink ($java_home); apt-get install -y --no-install-recommends openjdk-17-jdk-headless"
[[ -f "$TYPESCRIPT_DIR/lib/typescript.js" ]] || die "$TYPESCRIPT_DIR/lib/typescript.js is missing; run npm ci"
if [[ -z "${FSB_PIP:-}" ]] && ! "${PIP[@]}" --version >/dev/null 2>&1; then
  # A python without pip (Debian's python3 without python3-pip): the pip a virtual environment
  # brings (python3-venv), made once in the cache directory.
  pip_venv="$CACHE_DIR/code-interpreter-pip-venv"
  [[ -x "$pip_venv/bin/pip" ]] || python3 -m venv "$pip_venv" >&2 || die "python3 has no pip and cannot make a virtual environment; apt-get install -y python3-pip or python3-venv (or set FSB_PIP)"
  PIP=("$pip_venv/bin/pip")
fi
"${PIP[@]}" --version >/dev/null 2>&1 || die "${PIP[*]} does not run; apt-get install -y python3-pip (or set FSB_PIP)"
python_bin="$(readlink -f "$PYTHON")"
bash_bin="$(readlink -f "$BASH_BIN")"
node_bin="$(readlink -f "$NODE_BIN")"
rscript_bin="$(readlink -f "$RSCRIPT_BIN")"
# R's home (Debian: /usr/lib/R, its etc/ links into /etc/R) and what of it the image leaves out: the
# data editor, Tcl/Tk, and the packages' manuals. The cairo devices stay (an R context's plots are
# PNG results), with the X11 module R asks for their versions (no X server is used), the DejaVu
# fonts and fontconfig's configuration.
r_home="$("$rscript_bin" --vanilla -e 'cat(R.home())')" || die "$rscript_bin does not run"
[[ -x "$r_home/bin/exec/R" ]] || die "R's home $r_home has no bin/exec/R"
R_EXCLUDES=(--exclude=./modules/R_de.so --exclude=./library/tcltk --exclude='./library/*/doc')
# The interpreter's own prefix and version (a Debian python: /usr, /usr/lib/pythonX.Y).
read -r py_version py_stdlib py_dynload < <("$python_bin" -S -c 'import sys, sysconfig; print("%d.%d" % sys.version_info[:2], sysconfig.get_paths()["stdlib"], sysconfig.get_config_var("DESTSHARED"))')
[[ -d "$py_stdlib" ]] || die "$python_bin's standard library $py_stdlib is missing"

oci_split_reference "$IMAGE"

ctr_ns() { ctr --address "$ADDRESS" -n "$NAMESPACE" "$@"; }

# The shared libraries the interpreter and its extension modules link (ld.so included), and what
# else of the host the image takes: their contents are part of the archive's key, so a security
# update of one of them (libssl, libexpat…) makes a new image.
shared_libraries() {
  local roots=("$python_bin" "$py_stdlib" "$bash_bin" "$node_bin" "$rscript_bin" "$r_home/" "$java_home/lib/")
  [[ -d "$py_dynload" ]] && roots+=("$py_dynload")
  find "${roots[@]}" \( -name '*.so*' -o -path "$python_bin" -o -path "$bash_bin" -o -path "$node_bin" -o -path "$rscript_bin" -o -path "$r_home/bin/exec/R" \) \
    -not -name '_tkinter*' -not -name R_de.so -not -name tcltk.so |
    while read -r file; do ldd "$file" 2>/dev/null || true; done |
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $2 ~ /^\(0x/ { print $1 }' | sort -u
}
libraries="$(shared_libraries)" || die "listing the shared libraries of $python_bin failed"
# glibc loads libgcc_s at a thread's exit (pthread_exit), which no ldd lists.
libgcc="$({ /sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null || true; } | awk '$1 == "libgcc_s.so.1" && $NF ~ /^\// && !found { found = $NF } END { if (found) print found }')"
if [[ -z "$libgcc" ]]; then
  # Beside the libc python links (not another architecture's).
  libc_dir="$(dirname "$(grep -m1 '/libc\.so\.6$' <<<"$libraries" || echo /nonexistent/libc.so.6)")"
  [[ -e "$libc_dir/libgcc_s.so.1" ]] && libgcc="$libc_dir/libgcc_s.so.1"
fi
[[ -n "$libgcc" ]] || die "libgcc_s.so.1 was not found (apt-get install -y libgcc-s1)"
mapfile -t LIBRARIES < <(printf '%s\n' "$libraries" "$libgcc" | sort -u)
[[ ${#LIBRARIES[@]} -gt 2 ]] || die "no shared library of $python_bin was found (ldd)"
# CA certificates (https from the code), time zones (zoneinfo), glibc's C.UTF-8 locale (the image's
# LANG: R reads and prints UTF-8 with it), fontconfig's configuration and the DejaVu fonts (R's
# PNG plots): copied when the host has them.
EXTRAS=()
for extra in /etc/ssl/certs/ca-certificates.crt /usr/share/zoneinfo /usr/lib/locale/C.utf8 /etc/fonts /usr/share/fonts/truetype/dejavu; do
  [[ -e "$extra" ]] && EXTRAS+=("$extra")
done
digest="$( (cat "$python_bin" "$bash_bin" "$node_bin" "$rscript_bin" "$r_home/bin/exec/R" "$r_home/lib/libR.so" "$BUSYBOX" "$SERVER" "$JAVASCRIPT_CONTEXT" "$R_CONTEXT" "$JAVA_CONTEXT" "$java_home/release" "$java_home/lib/modules" "$TYPESCRIPT_DIR/lib/typescript.js" "$REQUIREMENTS" "$SELF" scripts/lib/oci-image.sh "${LIBRARIES[@]}"
  if [[ ${#EXTRAS[@]} -gt 0 ]]; then { find -L "${EXTRAS[@]}" -type f -print0 2>/dev/null || true; } | LC_ALL=C sort -z | xargs -0r cat; fi) | sha256sum | cut -c1-16)"
ARCHIVE="$CACHE_DIR/code-interpreter-${digest}-${TAG}.oci.tar"
# A changed server or python makes a new archive: an image of that name from an older one is replaced.
if oci_image_listed "$ADDRESS" "$NAMESPACE" "$IMAGE"; then
  if [[ "$(ctr_ns images ls "name==$IMAGE" 2>/dev/null | awk 'NR == 2 { print $3 }')" == "$(cat "$ARCHIVE.digest" 2>/dev/null)" ]]; then
    log "$IMAGE already present in containerd namespace $NAMESPACE"
    touch "$ARCHIVE" 2>/dev/null || true # in use (oci_prune_cache)
    exit 0
  fi
fi

if [[ ! -s "$ARCHIVE" ]]; then
  log "building $ARCHIVE (python $py_version from $python_bin)"
  mkdir -p "$CACHE_DIR"
  work="$(mktemp -d "$CACHE_DIR/.build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  oci_new_bundle "$work" "$TAG"
  rootfs="$work/bundle/rootfs"
  oci_busybox_rootfs "$rootfs" "$BUSYBOX"
  mkdir -p "$rootfs"/{usr/local/bin,home/user,opt/fast-sandbox}

  # The interpreter and its standard library (without its tests, IDLE, Tk and ensurepip's wheels).
  cp "$python_bin" "$rootfs/usr/bin/python$py_version"
  ln -sf "python$py_version" "$rootfs/usr/bin/python3"
  ln -sf "python$py_version" "$rootfs/usr/bin/python"
  mkdir -p "$rootfs$py_stdlib"
  tar -C "$py_stdlib" --exclude=./test --exclude=./idlelib --exclude=./tkinter --exclude=./turtledemo \
    --exclude=./ensurepip --exclude=./site-packages --exclude=./dist-packages --exclude='*/tests' \
    --exclude='_tkinter*' -cf - . | tar -C "$rootfs$py_stdlib" -xf -
  if [[ -d "$py_dynload" && "$py_dynload" != "$py_stdlib"/* ]]; then
    mkdir -p "$rootfs$py_dynload"
    cp -a "$py_dynload"/. "$rootfs$py_dynload"/
    rm -f "$rootfs$py_dynload"/_tkinter*
  fi
  # bash for the code's bash contexts (language "bash"), in busybox's place; node for its
  # JavaScript contexts.
  rm -f "$rootfs/bin/bash"
  cp "$bash_bin" "$rootfs/bin/bash"
  cp "$node_bin" "$rootfs/usr/bin/node"
  # R for its contexts: Rscript, R's home with its links resolved (etc/ points into /etc/R), and
  # the R-level files of R's share directory (not its manuals).
  cp "$rscript_bin" "$rootfs/usr/bin/Rscript"
  mkdir -p "$rootfs$r_home" "$rootfs/usr/share/R"
  tar -C "$r_home" -chf - "${R_EXCLUDES[@]}" . | tar -C "$rootfs$r_home" -xf -
  [[ -d /usr/share/R/share ]] && cp -a /usr/share/R/share "$rootfs/usr/share/R/share"
  ln -sf "$r_home/bin/R" "$rootfs/usr/bin/R"
  # Java for its contexts: a runtime of the host JDK's modules that Java SE code and JShell need
  # (jlink), with its class-data archive made below; JavaContext compiled against it.
  "$java_home/bin/jlink" --add-modules java.se,jdk.jshell,jdk.unsupported,jdk.zipfs,jdk.crypto.ec,jdk.localedata \
    --strip-debug --no-man-pages --no-header-files --compress=2 --output "$rootfs/opt/java" || die "jlink failed"
  ln -sf /opt/java/bin/java "$rootfs/usr/bin/java"
  "$java_home/bin/javac" -nowarn -XDignore.symbol.file -d "$rootfs/opt/fast-sandbox/java" "$JAVA_CONTEXT" || die "compiling $JAVA_CONTEXT failed"
  # The shared libraries (see shared_libraries), at their paths; the CA certificates (https from
  # the code) and the time zones (zoneinfo), when the host has them.
  for library in "${LIBRARIES[@]}"; do
    mkdir -p "$rootfs$(dirname "$library")"
    cp -L "$library" "$rootfs$library"
  done
  [[ -e "$rootfs/lib64/ld-linux-x86-64.so.2" || "$(uname -m)" != x86_64 ]] || die "the dynamic loader was not copied"
  for extra in "${EXTRAS[@]}"; do
    mkdir -p "$rootfs$(dirname "$extra")"
    # A file as its contents (it may be a link elsewhere); a directory with its links as they are
    # (zoneinfo's localtime points outside it).
    if [[ -d "$extra" ]]; then cp -a "$extra" "$rootfs$extra"; else cp -L "$extra" "$rootfs$extra"; fi
  done
  # Where this python's OpenSSL looks for CA certificates by default (Debian: /usr/lib/ssl/cert.pem).
  openssl_cafile="$("$python_bin" -S -c 'import ssl; print(ssl.get_default_verify_paths().openssl_cafile)')"
  if [[ -e "$rootfs/etc/ssl/certs/ca-certificates.crt" && -n "$openssl_cafile" && ! -e "$rootfs$openssl_cafile" ]]; then
    mkdir -p "$rootfs$(dirname "$openssl_cafile")"
    ln -s /etc/ssl/certs/ca-certificates.crt "$rootfs$openssl_cafile"
  fi
  # numpy, pandas and matplotlib: manylinux wheels for this python (the closure pinned in
  # requirements.txt), where Debian's python looks for local packages. Their commands (bin/) would
  # name the host's python, so they go; so do their test suites.
  wheels="$CACHE_DIR/code-interpreter-wheels-$(sha256sum "$REQUIREMENTS" | cut -c1-16)"
  wheel_target=(--only-binary=:all: --python-version "$py_version" --implementation cp --abi "cp${py_version/./}"
    --platform "manylinux_2_28_$(uname -m)" --platform "manylinux_2_17_$(uname -m)" --platform "manylinux2014_$(uname -m)" --platform any)
  if [[ ! -s "$wheels/.complete" ]]; then
    log "downloading the wheels of $REQUIREMENTS into $wheels"
    rm -rf "$wheels" && mkdir -p "$wheels"
    "${PIP[@]}" download --quiet --disable-pip-version-check --no-deps "${wheel_target[@]}" -d "$wheels" -r "$REQUIREMENTS" ||
      die "downloading the wheels of $REQUIREMENTS failed"
    date -u +%FT%TZ >"$wheels/.complete"
  fi
  site="$rootfs/usr/local/lib/python$py_version/dist-packages"
  "${PIP[@]}" install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --no-index --find-links "$wheels" "${wheel_target[@]}" \
    --target "$site" -r "$REQUIREMENTS" || die "installing the wheels of $REQUIREMENTS failed"
  rm -rf "$site/bin"
  find "$site" -depth -type d -name tests -exec rm -rf {} +
  # pip for the code's own installs: as the account `user`, into its site (~/.local, made now so
  # that a context started before an install imports what it installs); Debian's mark of a python
  # that only apt may install into does not hold in this image.
  for command in pip pip3; do
    printf '#!/bin/sh\nexec /usr/bin/python3 -m pip "$@"\n' >"$rootfs/usr/local/bin/$command"
    chmod 0755 "$rootfs/usr/local/bin/$command"
  done
  rm -f "$rootfs$py_stdlib/EXTERNALLY-MANAGED"
  mkdir -p "$rootfs/home/user/.local/lib/python$py_version/site-packages"
  install -m 0644 "$SERVER" "$rootfs/opt/fast-sandbox/code_interpreter.py"
  install -m 0644 "$JAVASCRIPT_CONTEXT" "$rootfs/opt/fast-sandbox/javascript_context.cjs"
  install -m 0644 "$R_CONTEXT" "$rootfs/opt/fast-sandbox/r_context.R"
  install -m 0644 "$TYPESCRIPT_DIR/lib/typescript.js" "$rootfs/opt/fast-sandbox/typescript.js"
  install -m 0644 "$TYPESCRIPT_DIR/LICENSE.txt" "$rootfs/opt/fast-sandbox/typescript.LICENSE.txt"

  printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
  chown 1000:1000 "$rootfs/home/user"
  # The interpreter starts in the sandbox: it must run in this root, with nothing of the host's.
  chroot "$rootfs" /usr/bin/python3 -S -c 'import ast, json, http.server, subprocess, uuid' || die "python does not run inside the image's root"
  chroot "$rootfs" /bin/bash --norc -c 'true' || die "bash does not run inside the image's root"
  chroot "$rootfs" /usr/bin/node -e 'require("node:repl"); require("node:vm")' || die "node does not run inside the image's root"
  # R runs and draws a PNG plot with text (fontconfig's cache of the fonts is made now, not at a
  # sandbox's first plot).
  mkdir -p "$rootfs/var/cache/fontconfig"
  r_check="$(chroot "$rootfs" /usr/bin/env -i PATH=/usr/bin:/bin LANG=C.UTF-8 /usr/bin/Rscript --vanilla -e 'library(stats); library(methods)
png("/tmp/check.png", type = "cairo"); plot(1:3, main = "check"); invisible(dev.off())
cat(sum(1:3), l10n_info()$`UTF-8`, file.size("/tmp/check.png") > 1000)' 2>&1)" || true
  [[ "$r_check" == "6 TRUE TRUE" ]] || die "R does not run (or draw a PNG plot) inside the image's root: $r_check"
  rm -f "$rootfs/tmp/check.png"
  # (The launcher finds libjli through $ORIGIN, which needs /proc: a chroot has none, a sandbox has.)
  chroot "$rootfs" /usr/bin/env LD_LIBRARY_PATH=/opt/java/lib /opt/java/bin/java -Xshare:dump >/dev/null || die "java does not run inside the image's root"
  # Read whole, then searched: grep -q stopping early would kill java with SIGPIPE under pipefail.
  modules="$(chroot "$rootfs" /usr/bin/env LD_LIBRARY_PATH=/opt/java/lib /opt/java/bin/java --list-modules)" || die "the image's java does not run"
  grep -q '^jdk.jshell@' <<<"$modules" || die "the image's java has no jdk.jshell"
  # The packages load and matplotlib draws, as the code's account: its font cache is made now, not
  # at a sandbox's first figure.
  chroot "$rootfs" /bin/sh -c 'HOME=/home/user MPLCONFIGDIR=/home/user/.config/matplotlib /usr/bin/python3 -c "
import io, numpy, pandas, matplotlib, IPython.display
matplotlib.use(\"agg\")
import matplotlib.pyplot as plt
plt.plot(numpy.arange(3)); plt.savefig(io.BytesIO(), format=\"png\")" && exec /usr/local/bin/pip --version >/dev/null' ||
    die "numpy, pandas, matplotlib, IPython or pip does not load inside the image's root"
  chown -R 1000:1000 "$rootfs/home/user"

  umoci repack --image "$work/layout:$TAG" "$work/bundle"
  umoci config --image "$work/layout:$TAG" \
    --config.cmd=python3 --config.cmd=-S --config.cmd=/opt/fast-sandbox/code_interpreter.py \
    --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --config.env "PYTHONUNBUFFERED=1" \
    --config.env "LANG=C.UTF-8" \
    --config.exposedports 49999/tcp \
    --config.workingdir /home/user \
    --config.user 0:0
  oci_write_archive "$work" "$ARCHIVE"
  trap - EXIT
else
  log "using cached $ARCHIVE"
fi

oci_prune_cache "$CACHE_DIR" "code-interpreter-*-${TAG}.oci.tar" "$ARCHIVE"
oci_prune_cache "$CACHE_DIR" "code-interpreter-wheels-*" "$CACHE_DIR/code-interpreter-wheels-$(sha256sum "$REQUIREMENTS" | cut -c1-16)"
oci_import "$ADDRESS" "$NAMESPACE" "$REPOSITORY" "$IMAGE" "$ARCHIVE"
ctr_ns images ls "name==$IMAGE" | awk 'NR == 2 { print $3 }' >"$ARCHIVE.digest"
