#!/usr/bin/env bash
# CNI ADD latency of remora-cni: from exec of the plugin to its exit, with the rules installed
# (checked after each run, outside the timing). Each ADD gets a brand-new network namespace of
# its own, as a pod does, and a prevResult like the bridge plugin's. Five warm-up ADDs per
# configuration are not counted. Goal: median <= 30 ms.
#
#   scripts/cni_bench.sh [-n RUNS] [--bin-dir DIR]
#
#   -n RUNS        ADDs per configuration (default 50)
#   --bin-dir DIR  where remora-cni was built (default build/bin)
#
# Two configurations: an IPv4-only pod (prevResult has only IPv4 addresses, so with the default
# "ipv6": "auto" only IPv4 rules are installed) and a dual-stack pod (both families). Root only;
# the namespaces are this script's own (named with its PID) and are deleted as it goes.
set -euo pipefail

src_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=50
bin_dir="$src_dir/build/bin"
while (($#)); do
  case "$1" in
    -n) runs=$2; shift 2 ;;
    --bin-dir) bin_dir=$(cd "$2" && pwd); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "cni_bench: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[[ $EUID -eq 0 ]] || { echo "cni_bench: needs root (network namespaces, iptables)" >&2; exit 77; }
plugin="$bin_dir/remora-cni"
[[ -x "$plugin" ]] || { echo "cni_bench: $plugin is not built" >&2; exit 1; }
[[ -n "${EPOCHREALTIME:-}" ]] || { echo "cni_bench: needs bash 5 (EPOCHREALTIME)" >&2; exit 1; }

prefix="rcbench$$"
work=$(mktemp -d /tmp/remora-cni-bench.XXXXXX)
current_ns=""
cleanup() {
  [[ -n "$current_ns" ]] && ip netns delete "$current_ns" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Milliseconds with one decimal, from microseconds.
ms() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }

# Microseconds from two EPOCHREALTIME values, without forking a timer.
micros() {
  local s=${1/./} e=${2/./}
  echo $((10#$e - 10#$s))
}

run_config() {
  local label=$1 ips=$2
  local times=() i ns start end conf rules
  # The first few runs also pay for page cache and module loading; they are not counted.
  local warmup=5
  for ((i = -warmup; i < runs; i++)); do
    ns="$prefix-$((i + warmup))"
    ip netns add "$ns"
    current_ns=$ns
    conf=$(printf '{"cniVersion":"1.0.0","name":"bench","type":"remora-cni","stateDir":"%s/state","logFile":"%s/cni.log","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/%s"}],"ips":[%s],"dns":{}}}' \
      "$work" "$work" "$ns" "$ips")
    start=$EPOCHREALTIME
    CNI_COMMAND=ADD CNI_CONTAINERID="bench$((i + warmup))" CNI_NETNS="/var/run/netns/$ns" CNI_IFNAME=eth0 \
      CNI_PATH=/opt/cni/bin "$plugin" <<<"$conf" >"$work/out" ||
      { echo "cni_bench: ADD failed: $(cat "$work/out")" >&2; exit 1; }
    end=$EPOCHREALTIME
    rules=$(ip netns exec "$ns" iptables-save -t nat 2>/dev/null)
    grep -q -- '-A REMORA_REDIRECT' <<<"$rules" || { echo "cni_bench: rules missing after ADD" >&2; exit 1; }
    ((i >= 0)) && times+=("$(micros "$start" "$end")")
    CNI_COMMAND=DEL CNI_CONTAINERID="bench$((i + warmup))" CNI_NETNS="/var/run/netns/$ns" CNI_IFNAME=eth0 \
      "$plugin" <<<"$conf" >/dev/null
    ip netns delete "$ns"
    current_ns=""
  done
  sort -n <<<"$(printf '%s\n' "${times[@]}")" >"$work/sorted"
  local n median p90 min max
  n=$(wc -l <"$work/sorted")
  median=$(sed -n "$(((n + 1) / 2))p" "$work/sorted")
  p90=$(sed -n "$(((n * 9 + 9) / 10))p" "$work/sorted")
  min=$(head -1 "$work/sorted")
  max=$(tail -1 "$work/sorted")
  printf '%-16s runs=%-4d median=%6s ms  p90=%6s ms  min=%6s ms  max=%6s ms\n' \
    "$label" "$n" "$(ms "$median")" "$(ms "$p90")" "$(ms "$min")" "$(ms "$max")"
  echo "$median" >"$work/median-$label"
}

echo "remora-cni ADD latency (exec to exit, rules installed), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
run_config "ipv4-pod" '{"interface":0,"address":"10.245.9.2/24","gateway":"10.245.9.1"}'
run_config "dual-stack-pod" '{"interface":0,"address":"10.245.9.2/24","gateway":"10.245.9.1"},{"interface":0,"address":"fd00:245::2/64","gateway":"fd00:245::1"}'
median=$(cat "$work/median-ipv4-pod")
if ((median <= 30000)); then
  echo "ADD median (IPv4 pod): $(ms "$median") ms, within the 30 ms goal"
else
  echo "ADD median (IPv4 pod): $(ms "$median") ms, ABOVE the 30 ms goal"
fi
