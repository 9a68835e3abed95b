#!/usr/bin/env bash
# Remora benchmarks (issue 5): Remora side by side with a direct connection, kube-proxy-shaped
# iptables chains, HAProxy and nginx, in an isolated world of network namespaces.
#
#   scripts/bench.sh            full run (≤ 20 min), writes docs/BENCHMARKS.md and docs/bench/*.png
#   scripts/bench.sh --quick    CI smoke test (≤ 3 min): asserts that every setup that exists
#                               produced numbers and that the topology was cleaned up
#
# Options (after the mode):
#   --no-build           use the binaries already in the build dir
#   --build-dir DIR      default: build-bench in the repository
#   --runs N             runs per figure (default: 3 full, 1 quick)
#   --setups a,b,...     default: direct,kube-proxy,remora,remora-ebpf,remora-l7,haproxy-tcp,
#                        nginx-stream,nginx-http,haproxy-http
#   --skip a,b           skip figures: perf,cap,weights,scaling,memory (cap: the runs at a
#                        quarter-CPU cgroup quota)
#   --pin SPEC|none      default load=0,backends=0,proxy=1 (taskset CPUs)
#   --out DIR            results.json and logs (default: BUILD_DIR/bench-results/DATE)
#   --docs DIR | --no-docs   where BENCHMARKS.md goes (default: docs/ on full runs only)
#   --note TEXT          a note printed with the results (e.g. "measured under contention")
#
# Must run as root. All traffic stays inside namespaces named rb<PID>-*; the trap below removes
# them, and the processes inside them, even when the run fails or is interrupted.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir="$root/build-bench"
build=1
pass=()
command_line="scripts/bench.sh $*"

while (($#)); do
  case "$1" in
    -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --no-build) build=0 ;;
    --build-dir) build_dir=$(realpath -m "$2"); shift ;;
    --quick|--no-docs) pass+=("$1") ;;
    --runs|--setups|--skip|--pin|--out|--docs|--note) pass+=("$1" "$2"); shift ;;
    *) echo "bench.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if ((EUID != 0)); then
  echo "bench.sh: must run as root (it creates network namespaces and iptables rules)" >&2
  exit 1
fi

if ((build)); then
  echo "[bench] building in $build_dir"
  if ! { cmake -S "$root" -B "$build_dir" >/dev/null && make -C "$build_dir" -j2 --no-print-directory >/dev/null; }; then
    # Other parts of the tree may be mid-change; measure whatever binaries exist.
    echo "[bench] warning: the build failed; using whatever binaries $build_dir/bin already has" >&2
  fi
fi

prefix="rb$$"

# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Everything the harness starts runs inside its own namespaces, so the processes still in
  # them (found by PID with `ip netns pids`) are exactly the ones left over from a failed run.
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${prefix}-" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      kill -KILL "$pid" 2>/dev/null || true
    done
    ip netns delete "$ns" 2>/dev/null || true
  done
  rm -rf /tmp/"${prefix}"-* 2>/dev/null || true
  # The CPU cap's cgroups (test/bench/cpucap.py), named ${prefix}-<setup>-<phase> at the root of
  # the cpu hierarchy; their processes died with the namespaces above, so they are empty.
  local mnt cg
  while read -r mnt; do
    for cg in "$mnt/${prefix}"-*; do
      if [[ -d $cg ]] && ! rmdir "$cg" 2>/dev/null; then
        echo "[bench] cleanup: FAILED, cgroup $cg remains" >&2
        rc=1
      fi
    done
  done < <(awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts)
  if ip netns list 2>/dev/null | awk '{print $1}' | grep -q "^${prefix}-"; then
    echo "[bench] cleanup: FAILED, namespaces ${prefix}-* remain" >&2
    rc=1
  else
    echo "[bench] cleanup: ok (no ${prefix}-* namespaces left)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

quick=0
for a in "${pass[@]}"; do [[ $a == --quick ]] && quick=1; done
start=$(date +%s)
rc=0
/usr/bin/python3 "$root/test/bench/bench.py" --prefix "$prefix" --build-dir "$build_dir" \
  --command "$command_line" "${pass[@]}" || rc=$?
elapsed=$(($(date +%s) - start))
echo "[bench] finished in $elapsed s (exit $rc)"
if ((quick && elapsed > 180)); then
  echo "[bench] warning: --quick took $elapsed s, over its 3-minute budget" >&2
fi
exit "$rc"
