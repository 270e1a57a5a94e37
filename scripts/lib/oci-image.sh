# Shared by the scripts that build sandbox images offline from this host's files with umoci
# (build-base-image.sh, build-code-interpreter-image.sh) and import them into containerd. Sourced,
# not run; the caller defines log() and die(), and runs as root (chroot, containerd's socket).

# oci_split_reference IMAGE: sets REPOSITORY and TAG, and IMAGE to REPOSITORY:TAG (a ':' after the
# last '/' starts the tag; none means latest).
oci_split_reference() {
  IMAGE=$1
  if [[ "${IMAGE##*/}" == *:* ]]; then
    REPOSITORY="${IMAGE%:*}"
    TAG="${IMAGE##*:}"
  else
    REPOSITORY="$IMAGE"
    TAG="latest"
    IMAGE="$REPOSITORY:$TAG"
  fi
}

# oci_new_bundle WORK TAG: an empty image in the OCI layout WORK/layout, unpacked into the bundle
# WORK/bundle (its root file system: WORK/bundle/rootfs).
oci_new_bundle() {
  local work=$1 tag=$2
  umoci init --layout "$work/layout"
  umoci new --image "$work/layout:$tag"
  umoci unpack --image "$work/layout:$tag" "$work/bundle"
}

# oci_busybox_rootfs ROOTFS BUSYBOX: the directories of a root file system, busybox-static with a
# symlink per applet (sh, echo, cat, sleep, ls, env, ...: it runs in the chroot without any
# library), and name resolution from files then DNS. /etc/passwd and /etc/group are the caller's.
oci_busybox_rootfs() {
  local rootfs=$1 busybox=$2
  mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,run,var/tmp}
  chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
  chmod 0700 "$rootfs/root"
  cp "$busybox" "$rootfs/bin/busybox"
  chroot "$rootfs" /bin/busybox --install -s
  printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
}

# oci_write_archive WORK ARCHIVE: the layout (repacked and configured by the caller) garbage-
# collected and written to ARCHIVE (an OCI archive) in one rename; WORK is removed.
oci_write_archive() {
  local work=$1 archive=$2
  umoci gc --layout "$work/layout"
  tar -C "$work/layout" -cf "$work/image.tar" .
  mv "$work/image.tar" "$archive"
  rm -rf "$work"
}

# oci_import ADDRESS NAMESPACE REPOSITORY IMAGE ARCHIVE: ARCHIVE imported into containerd's
# NAMESPACE, unpacked for the default snapshotter (overlayfs), as IMAGE.
oci_import() {
  local address=$1 namespace=$2 repository=$3 image=$4 archive=$5
  log "importing $image into containerd namespace $namespace"
  ctr --address "$address" -n "$namespace" images import --base-name "$repository" "$archive" >&2
  oci_image_listed "$address" "$namespace" "$image" || die "import finished but $image is not listed"
  log "imported $image"
}

# oci_image_listed ADDRESS NAMESPACE IMAGE: whether containerd's namespace lists IMAGE. The list is
# read whole before it is searched: `ctr … | grep -q` under pipefail fails when grep stops reading
# early and ctr dies of SIGPIPE, which a namespace with many images makes likely.
oci_image_listed() {
  local listed
  listed="$(ctr --address "$1" -n "$2" images ls -q)" || return 1
  grep -Fxq "$3" <<<"$listed"
}

# oci_prune_cache DIR PATTERN KEEP: the cache entries in DIR named PATTERN (a glob: archives, each
# with its .digest, or directories) other than KEEP that nothing used for a day are removed: every
# change to an image's sources names a new archive, and the old ones (~140 MB each for the code
# interpreter) would pile up. KEEP is touched (it is in use). A day's grace leaves alone what another
# checkout building a different version now may be about to import.
oci_prune_cache() {
  local dir=$1 pattern=$2 keep=$3 entry
  [[ -e "$keep" ]] && touch "$keep"
  while IFS= read -r -d '' entry; do
    [[ "$entry" == "$keep" ]] && continue
    log "removing $entry from the cache (unused for a day)"
    rm -rf "$entry" "$entry.digest"
  done < <(find "$dir" -maxdepth 1 -name "$pattern" -mmin +1440 -print0 2>/dev/null)
}
