#!/usr/bin/env bash
# Builds Remora's OCI image offline: a rootfs assembled from the built binaries and the host's
# Debian packages, added FROM scratch by buildah (or podman build). No registry is contacted.
#
#   scripts/build-image.sh [--build-dir DIR] [--tag NAME] [--test-tools] [--require-proxy]
#                          [--keep-context DIR]
#
#   --build-dir DIR    where remora-init, remora-cni and remora-proxy were built (DIR/bin);
#                      default: build
#   --tag NAME         image name (default localhost/remora:latest)
#   --test-tools       also add remora-probe, curl, a shell (sh, sleep, cat) and /pause, for
#                      the end-to-end tests and the demo's app, backend and pod infra containers
#   --require-proxy    fail if remora-proxy is not built (otherwise a warning)
#   --keep-context DIR keep the build context (Containerfile + rootfs/) in DIR
#
# The storage the image lands in is the caller's: tests set CONTAINERS_STORAGE_CONF to a
# storage root of their own.
set -euo pipefail

src_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir="$src_dir/build"
tag="localhost/remora:latest"
test_tools=0
require_proxy=0
keep_context=""

while (($#)); do
  case "$1" in
    --build-dir) build_dir=$(cd "$2" && pwd); shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --test-tools) test_tools=1; shift ;;
    --require-proxy) require_proxy=1; shift ;;
    --keep-context) keep_context="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "build-image: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

log() { echo "build-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

if command -v buildah >/dev/null; then
  builder=(buildah bud --pull=false --layers=false)
elif command -v podman >/dev/null; then
  builder=(podman build --pull=never)
else
  die "neither buildah nor podman is installed (scripts/setup.sh installs both)"
fi

ctx=$(mktemp -d /tmp/remora-image.XXXXXX)
cleanup() {
  if [[ -n "$keep_context" ]]; then
    mkdir -p "$keep_context" && cp -a "$ctx/." "$keep_context/"
  fi
  rm -rf "$ctx"
}
trap cleanup EXIT
root="$ctx/rootfs"

# Debian is merged-/usr: /bin, /sbin, /lib and /lib64 are links into /usr. The rootfs has the
# same shape, so paths ldd and dpkg print resolve the same way inside it.
mkdir -p "$root"/usr/{bin,sbin,lib,lib64,local/bin} "$root"/{etc,tmp,run,var/run,var/log}
chmod 1777 "$root/tmp"
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done

# Copies one host file (following symlinks) to the same path in the rootfs.
copy_file() {
  local path=$1
  local dest="$root$path"
  mkdir -p "$(dirname "$dest")"
  [[ -e "$dest" ]] || cp -L "$path" "$dest"
}

# Every binary and module gets exactly the shared libraries ldd resolves for it.
elves=()
copy_with_libs() {
  copy_file "$1"
  elves+=("$1")
}

find_binary() {
  if [[ -x "$build_dir/bin/$1" ]]; then echo "$build_dir/bin/$1"; fi
}

# Remora's own binaries, stripped of debug info.
for name in remora-init remora-cni remora-proxy; do
  bin=$(find_binary "$name")
  if [[ -z "$bin" ]]; then
    if [[ "$name" == remora-proxy && $require_proxy -eq 0 ]]; then
      log "warning: remora-proxy is not built; the image has no proxy"
      continue
    fi
    die "$name is not built in $build_dir/bin"
  fi
  log "adding $bin"
  strip --strip-debug -o "$root/usr/local/bin/$name" "$bin"
  elves+=("$root/usr/local/bin/$name")
done

# iptables, nft and legacy, from the host's Debian package: its programs, its symlinks (the
# Debian alternatives resolved, since the image has no /etc/alternatives) and its modules.
command -v dpkg-query >/dev/null || die "dpkg-query not found: the image is assembled from Debian packages"
dpkg-query -W -f='${Status}' iptables 2>/dev/null | grep -q 'install ok installed' ||
  die "the iptables package is not installed (scripts/setup.sh installs it)"
while read -r path; do
  case "$path" in /usr/share/*|/etc/*) continue ;; esac
  if [[ -L "$path" ]]; then
    target=$(readlink "$path")
    if [[ "$target" == /etc/alternatives/* ]]; then target=$(basename "$(readlink -f "$path")"); fi
    mkdir -p "$root$(dirname "$path")"
    ln -sfn "$target" "$root$path"
  elif [[ -f "$path" ]]; then
    copy_with_libs "$path"
  fi
done < <(dpkg -L iptables)
# Debian's alternatives default: plain iptables is the nft variant.
for tool in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  [[ -e "$root/usr/sbin/$tool" ]] || ln -s xtables-nft-multi "$root/usr/sbin/$tool"
done
# Protocol and service names iptables resolves.
for f in /etc/protocols /etc/services /etc/ethertypes; do
  [[ -f "$f" ]] && cp "$f" "$root$f"
done

if ((test_tools)); then
  probe=$(find_binary remora-probe)
  [[ -n "$probe" ]] || die "--test-tools needs remora-probe built"
  strip --strip-debug -o "$root/usr/local/bin/remora-probe" "$probe"
  elves+=("$root/usr/local/bin/remora-probe")
  for tool in curl sleep cat env; do
    path=$(command -v "$tool") || die "--test-tools needs $tool on the host"
    copy_with_libs "$(readlink -f "$path")"
    [[ -e "$root/usr/bin/$tool" ]] || ln -s "$(readlink -f "$path")" "$root/usr/bin/$tool"
  done
  copy_with_libs /usr/bin/dash
  ln -sfn dash "$root/usr/bin/sh"
  # A pod infra ("pause") process for podman kube play, so it needs no pause image either.
  printf '#!/bin/sh\nexec sleep infinity\n' >"$root/pause"
  chmod 755 "$root/pause"
fi

# The shared-library closure: ldd resolves recursively, so one pass per file suffices. Static
# binaries and scripts (iptables-apply) have none: ldd says "not a dynamic executable".
for elf in "${elves[@]}"; do
  while read -r lib; do
    copy_file "$lib"
  done < <(ldd "$elf" 2>/dev/null | grep -o '/[^ ]*' || true)
done

# Names for the two users the manifests run as, so ps and error messages read well.
printf 'root:x:0:0:root:/root:/bin/sh\nremora-proxy:x:1337:1337:remora-proxy:/:/sbin/nologin\n' \
  >"$root/etc/passwd"
printf 'root:x:0:\nremora-proxy:x:1337:\n' >"$root/etc/group"

cp "$src_dir/Containerfile" "$ctx/Containerfile"
# The test variant pauses when started without a command, as a pod's infra container is
# (podman's infra_command setting is not applied to kube play's infra container).
((test_tools)) && printf '\nCMD ["/pause"]\n' >>"$ctx/Containerfile"
log "rootfs: $(du -sh "$root" | cut -f1), building $tag with ${builder[0]}"
"${builder[@]}" -q -f "$ctx/Containerfile" -t "$tag" "$ctx" >/dev/null
log "built $tag"
