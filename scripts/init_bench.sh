#!/usr/bin/env bash
# Issue 2's figure: how long `remora-init install` takes for the default plan, IPv4 and IPv6,
# beside its own nftables mode (issue 13's goal: nftables <= 0.5x iptables mode) and the two ways
# other meshes apply an equivalent ruleset:
#   Istio's           one `iptables-restore --noflush` per family (the rules of
#                     test/bench/default_plan.sh restore 4|6)
#   linkerd's         one iptables command per rule and per chain (default_plan.sh commands 4|6)
# Each sample runs in a fresh network namespace (IPv6 on, empty nat table) and is timed inside
# it, so `ip netns exec` itself is not counted. The three approaches take turns; the median of
# N samples is printed, with the ratios Remora/Istio and Remora/linkerd.
#
#   scripts/init_bench.sh [--runs N] [--quick] [--backend nft|legacy] [--no-build]
#                         [--build-dir DIR]
#
# Must run as root. Namespaces are named ib<PID>-<n> and removed by a trap, even on failure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir="$root/build-bench"
runs=20
backend=nft
build=1

while (($#)); do
  case "$1" in
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --runs) runs=$2; shift ;;
    --quick) runs=5 ;;
    --backend) backend=$2; shift ;;
    --no-build) build=0 ;;
    --build-dir) build_dir=$(realpath -m "$2"); shift ;;
    *) echo "init_bench.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "init_bench.sh: --runs wants a positive number" >&2; exit 2; }
case "$backend" in
  nft|legacy) ;;
  *) echo "init_bench.sh: --backend must be nft or legacy" >&2; exit 2 ;;
esac
if ((EUID != 0)); then
  echo "init_bench.sh: must run as root (it creates network namespaces)" >&2
  exit 1
fi

if ((build)); then
  cmake -S "$root" -B "$build_dir" >/dev/null && make -C "$build_dir" -j2 --no-print-directory remora-init >/dev/null ||
    echo "init_bench.sh: warning: build failed; using the remora-init already built, if any" >&2
fi
init="$build_dir/bin/remora-init"

prefix="ib$$"
work=$(mktemp -d "/tmp/${prefix}-XXXX")
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${prefix}-" || true); do
    ip netns delete "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

plan="$root/test/bench/default_plan.sh"
for f in 4 6; do
  bash "$plan" restore "$f" >"$work/restore.v$f"
  bash "$plan" commands "$f" >"$work/commands.v$f"
done
rules_per_family=$(grep -c '^-A' "$work/restore.v4")

# The three appliers, each a bash snippet run inside the fresh netns between two timestamps.
ipt4="iptables-$backend" ipt6="ip6tables-$backend"
# shellcheck disable=SC2016  # $l expands later, inside the netns
approach_cmd() {
  case "$1" in
    remora) printf '%q install --iptables-backend %q >/dev/null' "$init" "$backend" ;;
    remora-nft) printf '%q install --mode nftables >/dev/null' "$init" ;;
    istio) printf '%q-restore --noflush <%q && %q-restore --noflush <%q' \
             "$ipt4" "$work/restore.v4" "$ipt6" "$work/restore.v6" ;;
    linkerd) printf 'while read -r l; do %q $l || exit 1; done <%q && while read -r l; do %q $l || exit 1; done <%q' \
               "$ipt4" "$work/commands.v4" "$ipt6" "$work/commands.v6" ;;
  esac
}

# Times one approach in a fresh netns; prints milliseconds, or "fail".
sample() {
  local approach=$1 n=$2 ns="${prefix}-$2"
  ip netns add "$ns"
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0
  local out
  out=$(ip netns exec "$ns" bash -c "s=\$EPOCHREALTIME; $(approach_cmd "$approach") || exit 1; e=\$EPOCHREALTIME; echo \$s \$e" 2>"$work/err") || out=fail
  # A sample counts only if both families really hold the rules afterwards.
  if [[ $out != fail && $approach == remora-nft ]]; then
    # One inet table: one outbound redirect chain per family.
    local chains
    chains=$(ip netns exec "$ns" nft list table inet remora 2>/dev/null | grep -c "redirect to :15001" || true)
    ((chains >= 2)) || out=fail
  elif [[ $out != fail ]]; then
    local v4 v6
    v4=$(ip netns exec "$ns" "$ipt4-save" -t nat 2>/dev/null | grep -c -- "--to-ports 15001" || true)
    v6=$(ip netns exec "$ns" "$ipt6-save" -t nat 2>/dev/null | grep -c -- "--to-ports 15001" || true)
    ((v4 >= 1 && v6 >= 1)) || out=fail
  fi
  ip netns delete "$ns"
  if [[ $out == fail ]]; then
    echo fail
  else
    awk -v s="${out% *}" -v e="${out#* }" 'BEGIN { printf "%.3f\n", (e - s) * 1000 }'
  fi
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

approaches=(remora remora-nft istio linkerd)
declare -A failed=() note=()
if [[ ! -x $init ]]; then
  note[remora]="not available: $init is not built"
  note[remora-nft]=${note[remora]}
  approaches=(istio linkerd)
fi

echo "init_bench: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, Linux $(uname -r)"
echo "init_bench: default plan = $rules_per_family rules + 4 chains per family, IPv4 and IPv6, iptables $backend backend, $runs samples each, fresh netns per sample"
n=0
for ((r = 0; r < runs; r++)); do
  # Rotate the order, so no approach always runs first after a netns is created.
  for ((k = 0; k < ${#approaches[@]}; k++)); do
    a=${approaches[$(((r + k) % ${#approaches[@]}))]}
    n=$((n + 1))
    ms=$(sample "$a" "$n")
    if [[ $ms == fail ]]; then
      failed[$a]=$((${failed[$a]:-0} + 1))
      if [[ $a == remora* ]]; then
        if [[ -s $work/err ]]; then
          note[$a]="install failed: $(head -c 300 "$work/err" | tr "\n" " ")"
        else
          note[$a]="remora-init install left no REDIRECT rules in one of the families"
        fi
      fi
    else
      echo "$ms" >>"$work/$a.ms"
    fi
  done
done

declare -A med=()
for a in remora remora-nft istio linkerd; do
  if [[ -s $work/$a.ms ]]; then
    med[$a]=$(median <"$work/$a.ms")
  fi
done

label() {
  case "$1" in
    remora) echo "remora-init install (iptables mode)" ;;
    remora-nft) echo "remora-init install --mode nftables" ;;
    istio) echo "Istio's way: 1 iptables-restore per family" ;;
    linkerd) echo "linkerd's way: 1 iptables command per rule" ;;
  esac
}
echo
printf '%-45s %12s %10s\n' "approach" "median ms" "samples"
for a in remora remora-nft istio linkerd; do
  ok=0
  [[ -f $work/$a.ms ]] && ok=$(wc -l <"$work/$a.ms")
  if [[ -n ${med[$a]:-} ]]; then
    printf '%-45s %12s %10s\n' "$(label "$a")" "${med[$a]}" "$ok/$runs"
  else
    printf '%-45s %12s %10s   %s\n' "$(label "$a")" "–" "$ok/$runs" "${note[$a]:-every sample failed}"
  fi
done
echo
status=0
if [[ -n ${med[remora]:-} ]]; then
  for b in istio linkerd; do
    [[ -n ${med[$b]:-} ]] && awk -v a="${med[remora]}" -v b="${med[$b]}" -v n="$b" \
      'BEGIN { printf "remora-init / %-8s = %.2f×\n", n, a / b }'
  done
  awk -v a="${med[remora]}" 'BEGIN { printf "goal: remora-init install ≤ 50 ms median: %s (%.1f ms)\n", (a <= 50 ? "met" : "NOT met"), a }'
  if [[ -n ${med[remora-nft]:-} ]]; then
    awk -v a="${med[remora-nft]}" -v b="${med[remora]}" \
      'BEGIN { r = a / b; printf "remora-init nftables / iptables mode = %.2f×; goal ≤ 0.5×: %s\n", r, (r <= 0.5 ? "met" : "NOT met") }'
  else
    echo "remora-init --mode nftables: ${note[remora-nft]:-every sample failed}"
    status=1
  fi
else
  echo "remora-init: ${note[remora]:-every sample failed}"
  [[ -x $init ]] && status=1
fi
for a in istio linkerd; do
  if [[ -n ${failed[$a]:-} ]]; then
    echo "init_bench: $a failed ${failed[$a]} time(s): $(head -c 300 "$work/err")" >&2
    status=1
  fi
done
exit "$status"
