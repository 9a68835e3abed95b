#!/usr/bin/env bash
# eBPF-mode install time for a netns once the programs are attached (issue 11's goal: <= 20 ms).
# Attaches to a cgroup v2 directory and a bpffs it creates, installs in 16 fresh network
# namespaces (the first loads and attaches the programs), and prints per netns the install time
# and, beside it, `remora-init --help` run the same way (process start, for comparison).
#   scripts/ebpf_install_bench.sh [BUILD_DIR]      (root; removes everything it made)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${1:-$root/build}/bin/remora-init
p=eit$$
cg=/sys/fs/cgroup/unified/$p
[[ -d /sys/fs/cgroup/unified ]] || cg=/sys/fs/cgroup/$p
pins=$(mktemp -d /tmp/$p-XXXX)
mkdir "$cg"; mount -t bpf bpf "$pins"
cleanup() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^$p-" || true); do
    nsenter --net="/run/netns/$ns" "$B" uninstall --mode ebpf --cgroup "$cg" --bpf-pin-dir "$pins/remora" >/dev/null 2>&1 || true
    ip netns del "$ns"
  done
  umount "$pins"; rmdir "$pins" "$cg"
}
trap cleanup EXIT
echo "netns install_ms help_ms"
for i in $(seq 0 15); do
  ip netns add "$p-$i"; ip -n "$p-$i" link set lo up
  s=$EPOCHREALTIME
  nsenter --net="/run/netns/$p-$i" "$B" install --mode ebpf --cgroup "$cg" --bpf-pin-dir "$pins/remora" >/dev/null
  e=$EPOCHREALTIME
  s2=$EPOCHREALTIME; nsenter --net="/run/netns/$p-$i" "$B" --help >/dev/null; e2=$EPOCHREALTIME
  awk -v i="$i" -v s="$s" -v e="$e" -v s2="$s2" -v e2="$e2" 'BEGIN{printf "%d %.1f %.1f\n", i, (e-s)*1000, (e2-s2)*1000}'
done
