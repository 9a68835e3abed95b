#!/usr/bin/env bash
# Issue 16: scripts/demo.sh must stop every process it starts. Runs the demo (the part after the
# build: --bin-dir) and then asserts that
#   - no process whose command line names the demo's work directory is still running (the old
#     demo left remora-proxy running as uid 1337, reparented to PID 1);
#   - the demo exited 0 and reported remora-proxy's exit status after SIGTERM (0: it drained);
#   - its namespaces (rmdemo<PID>-*), /etc/netns entry and work directory are gone;
#   - its mTLS step printed its three results (served, plaintext refused, principal in metrics).
# Processes the demo left behind are listed and then killed by PID (only those: they carry the
# work directory of the demo this test started, and did not exist before it).
#
#   test/e2e/demo_leak_test.sh BIN_DIR [DEMO_SCRIPT]
#
# DEMO_SCRIPT defaults to scripts/demo.sh; it is run as `bash DEMO_SCRIPT --bin-dir BIN_DIR`.
# Root only (exit 77 otherwise).
set -uo pipefail

src_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin_dir=${1:?usage: demo_leak_test.sh BIN_DIR [DEMO_SCRIPT]}
demo=${2:-$src_dir/scripts/demo.sh}
limit=300  # seconds the demo may take (it needs about 20 on an idle machine)

say() { echo "demo_leak_test: $*"; }
[[ $EUID -eq 0 ]] || { say "skipped: needs root (network namespaces)"; exit 77; }
for b in remora-init remora-proxy remora-probe; do
  [[ -x $bin_dir/$b ]] || { say "FAIL: $bin_dir/$b is not built"; exit 1; }
done

# Processes whose command line contains the text $1, as "PID START" lines (START = field 22 of
# stat, so a PID reused later is not taken for the same process).
procs_naming() {
  local text=$1 d pid cmd stat
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    cmd=$(tr '\0' ' ' 2>/dev/null <"$d/cmdline") || continue
    [[ $cmd == *"$text"* ]] || continue
    stat=$(cat "$d/stat" 2>/dev/null) || continue
    stat=${stat##*) }
    # shellcheck disable=SC2086  # the fields are split on purpose
    set -- $stat
    echo "$pid ${20}"
  done
}
start_of() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  echo "${20}"
}

# Demo processes that existed before (another run's): not this run's to judge or to kill.
before=$(procs_naming /tmp/remora-demo-)
log=$(mktemp /tmp/demo-leak-test.XXXXXX)
trap 'rm -f "$log"' EXIT

say "running: bash $demo --bin-dir $bin_dir"
bash "$demo" --bin-dir "$bin_dir" >"$log" 2>&1 &
demo_pid=$!
demo_start=$(start_of "$demo_pid")
deadline=$((SECONDS + limit))
while ((SECONDS < deadline)); do
  [[ $(start_of "$demo_pid") == "$demo_start" ]] || break
  [[ $(ps -o stat= -p "$demo_pid" 2>/dev/null) == Z* ]] && break
  sleep 0.1
done
if [[ $(start_of "$demo_pid") == "$demo_start" && $(ps -o stat= -p "$demo_pid") != Z* ]]; then
  say "the demo is still running after ${limit}s; SIGTERM (its trap cleans up)"
  kill -TERM "$demo_pid"
  sleep 20
  [[ $(start_of "$demo_pid") == "$demo_start" ]] && kill -KILL "$demo_pid"
fi
demo_rc=0
wait "$demo_pid" || demo_rc=$?
sed 's/^/  | /' "$log"

failures=0
check() {  # check CONDITION-RESULT MESSAGE
  if (($1)); then say "ok: $2"; else say "FAIL: $2"; failures=$((failures + 1)); fi
}

work=$(grep -o -m1 '/tmp/remora-demo-[A-Za-z0-9]*' "$log" || true)
pattern=${work:-/tmp/remora-demo-}
[[ -n $work ]] || say "the demo did not print its work directory; looking for any /tmp/remora-demo-*"
left=()
while read -r pid start; do
  [[ -z $pid ]] && continue
  grep -qx "$pid $start" <<<"$before" && continue
  left+=("$pid:$start")
done < <(procs_naming "$pattern")
if ((${#left[@]})); then
  say "FAIL: ${#left[@]} process(es) naming $pattern survived the demo:"
  for e in "${left[@]}"; do ps -o pid=,user=,args= -p "${e%%:*}" | sed 's/^/    /'; done
  failures=$((failures + 1))
  # Remove them: this test started the demo that left them. Only processes still the same
  # (start time) and running a program from BIN_DIR are signalled, by PID.
  mine=()
  for e in "${left[@]}"; do
    exe=$(readlink "/proc/${e%%:*}/exe" 2>/dev/null || true)
    [[ $exe == "$(realpath "$bin_dir")"/* ]] && mine+=("$e")
  done
  for sig in TERM KILL; do
    for e in "${mine[@]}"; do
      [[ $(start_of "${e%%:*}") == "${e#*:}" ]] && kill "-$sig" "${e%%:*}"
    done
    ((${#mine[@]})) && sleep 3
  done
else
  say "ok: no process naming $pattern survived the demo"
fi

check "demo_rc == 0" "the demo exited 0 (exit $demo_rc)"
grep -Eq '^remora-proxy \(pid [0-9]+\) exited with status 0$' "$log"
check "$? == 0" "the demo reported remora-proxy's exit status 0 after SIGTERM"
# The mTLS step (issue 14): STRICT served the sidecar's request, refused plaintext, and the
# caller's principal reached the server sidecar's metrics (the demo fails otherwise, too).
for line in "mTLS: served" "refused, as STRICT wants" \
            "mTLS: the source principal cluster.local/ns/istio-demo/sa/sleep is in the metrics"; do
  grep -qF "$line" "$log"
  check "$? == 0" "the demo printed '$line'"
done
ns_left=$(ip netns list | awk '{print $1}' | grep "^rmdemo${demo_pid}-" || true)
check "$([[ -z $ns_left ]] && echo 1 || echo 0)" "no rmdemo${demo_pid}-* namespace left ${ns_left//$'\n'/ }"
check "$(compgen -G "/etc/netns/rmdemo${demo_pid}-*" >/dev/null && echo 0 || echo 1)" \
  "no /etc/netns/rmdemo${demo_pid}-* left"
if [[ -n $work ]]; then
  check "$([[ -e $work ]] && echo 0 || echo 1)" "the work directory $work is removed"
fi

if ((failures)); then
  say "$failures check(s) failed"
  exit 1
fi
say "passed"
