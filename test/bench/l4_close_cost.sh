#!/usr/bin/env bash
# Per-connection cost of remora-proxy's L4 relay (docs/PROXY.md, "Per-connection cost"): the
# proxy process's CPU time per `Connection: close` request (one request per TCP connection, so
# one accept, one upstream connect and one teardown each), split into user space and kernel by
# cpu-clock samples, with syscalls, io_uring_enter calls, io_uring submissions (SQEs) and TCP
# segments per connection, over a fixed number of requests counted by the backend (nginx
# stub_status). The proxy runs the benchmark's L4 config (test/bench/setups.py
# remora_l4_config_text: bill-service as a TCP port, 90/10 under `tcp:`). This VM has no PMU:
# compare builds over several alternating rounds. --haproxy runs HAProxy tcp
# (test/bench/haproxy-tcp.cfg) in the proxy's place, in the same world. --trace adds the
# io_uring opcodes per connection; --strace adds one round under `strace -c -f` (syscalls by
# name per connection; strace slows the proxy, so its round's times mean nothing). --kernel-relay
# runs the proxy with `--relay kernel`, as the benchmark's remora row (the relay installed by
# remora-init on a bpffs mounted for the run, as bench.py does; no cgroup attachment).
# REMORA_URING_AB in the environment reaches the proxy (loop::uringAbSwitch). --variant
# LABEL:BUILD_DIR:AB_SWITCHES[:RELAY] (repeatable; LABEL `haproxy` for HAProxy) measures several
# proxies in the same world, taking turns round by round: one proxy runs at a time; RELAY
# (`kernel`, `auto`, `uring`) is that proxy's --relay, `kernel` by default with --kernel-relay. --cap puts each proxy
# in a cgroup (v1 cpu) capped at a quarter CPU, as the benchmark's capped rows: the proxy is
# then the bottleneck, and conn/s is the figure issue 12's goal is about.
#
# The world is one network namespace of its own (name carries this script's PID, removed on
# exit): the seed's bill-service ClusterIP and both pod addresses on its loopback, nginx
# (test/bench/nginx-backend.conf) answering as both pods, an OUTPUT REDIRECT of the ClusterIP to
# the proxy's 15001, and wrk as the client. No traffic leaves the namespace.
#
# Usage: test/bench/l4_close_cost.sh [--build-dir DIR] [--requests N] [--conns N] [--rounds N]
#                             [--record FILE] [--trace] [--strace] [--proxy-args "ARGS"] [--haproxy]
#                             [--kernel-relay] [--cap] [--variant LABEL:BUILD_DIR:AB[:RELAY]]...
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$ROOT/build
REQUESTS=20000
CONNS=32
ROUNDS=3
RECORD=""
TRACE=0
STRACE=0
KERNEL_RELAY=0
VARIANTS=()
CAP=0
PROXY_ARGS=""
PEER=""
RELAY=""

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --build-dir) BUILD=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --record) RECORD=$2; shift 2 ;;
    --trace) TRACE=1; shift ;;
    --strace) STRACE=1; shift ;;
    --kernel-relay) KERNEL_RELAY=1; shift ;;
    --variant) VARIANTS+=("$2"); shift 2 ;;
    --cap) CAP=1; shift ;;
    --proxy-args) PROXY_ARGS=$2; shift 2 ;;
    --haproxy) PEER=haproxy; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

for tool in perf wrk nginx iptables curl ip python3; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
if (( ${#VARIANTS[@]} == 0 )); then
  if [[ $PEER == haproxy ]]; then VARIANTS=(haproxy); else VARIANTS=("remora:$BUILD:${REMORA_URING_AB:-}"); fi
fi
for v in "${VARIANTS[@]}"; do
  IFS=: read -r label dir _ <<<"$v"
  [[ $label == haproxy || -x $dir/bin/remora-proxy ]] ||
    { echo "no $dir/bin/remora-proxy (build the remora-proxy target)" >&2; exit 1; }
done

NS=l4cost-$$
CGROUP=/sys/fs/cgroup/cpu/l4cost-$$
if [[ $CAP == 1 ]]; then
  [[ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]] || { echo "--cap needs the cgroup v1 cpu controller" >&2; exit 1; }
fi
TMP=$(mktemp -d /tmp/l4cost.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
  # Everything still running in the namespace is this script's (wrk, nginx, the proxy).
  ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  if [[ -d $TMP/bpffs/relay ]]; then
    "$INIT" relay uninstall --pin-dir "$TMP/bpffs/relay" >/dev/null 2>&1 || true
  fi
  if mountpoint -q "$TMP/bpffs"; then umount -l "$TMP/bpffs"; fi
  if [[ -d $CGROUP ]]; then rmdir "$CGROUP" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

VIP=10.1.122.241
INIT=$BUILD/bin/remora-init
[[ -x $INIT ]] || INIT=$ROOT/build/bin/remora-init
if [[ $KERNEL_RELAY == 1 ]]; then
  mkdir -p "$TMP/bpffs"
  mount -t bpf bpf "$TMP/bpffs" -o mode=0755
  "$INIT" relay install --pin-dir "$TMP/bpffs/relay" --proxy-uid 1337 --proxy-gid 1337 >/dev/null
  PROXY_ARGS+=" --relay-pin-dir $TMP/bpffs/relay"
  RELAY=kernel
fi
ip netns add "$NS"
nsx() { ip netns exec "$NS" "$@"; }
nsx ip link set lo up
for a in $VIP 10.244.1.168 10.244.2.74 10.244.0.10; do nsx ip addr add "$a/32" dev lo; done
nsx iptables -t nat -A OUTPUT -p tcp -d $VIP --dport 9999 -m owner ! --uid-owner 1337 \
  -j REDIRECT --to-ports 15001

# The benchmark's own L4 config, so the route and counters are the remora row's.
python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import setups
print(setups.remora_l4_config_text())' "$ROOT/test/bench" > "$TMP/config.yaml"
chmod 644 "$TMP/config.yaml"

mkdir -p "$TMP/nginx/tmp"
# The backend config plus a stub_status server: its request counter is the window's count for
# every proxy alike (the count's own polls are subtracted).
sed '$d' "$ROOT/test/bench/nginx-backend.conf" > "$TMP/nginx.conf"
printf '    server {\n        listen 127.0.0.1:8081;\n        location / { stub_status; }\n    }\n}\n' \
  >> "$TMP/nginx.conf"
ip netns exec "$NS" nginx -p "$TMP/nginx/" -e stderr -c "$TMP/nginx.conf" &
PIDS+=($!)
start_proxy() {  # $1: a variant; sets PROXY_PID and PPID_ (the pid perf watches)
  local label dir ab relay
  IFS=: read -r label dir ab relay <<<"$1"
  relay=${relay:-$RELAY}
  if [[ $label == haproxy ]]; then
    ip netns exec "$NS" setpriv --reuid 1337 --regid 1337 --clear-groups --inh-caps=-all \
      haproxy -db -f "$ROOT/test/bench/haproxy-tcp.cfg" &
  else
    # shellcheck disable=SC2086 # PROXY_ARGS is a list of flags
    REMORA_URING_AB=$ab ip netns exec "$NS" setpriv --reuid 1337 --regid 1337 --clear-groups \
      --inh-caps=-all "$dir/bin/remora-proxy" --config "$TMP/config.yaml" --concurrency 1 \
      --log-level error ${relay:+--relay "$relay"} $PROXY_ARGS &
  fi
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  for _ in $(seq 600); do ready && break; sleep 0.1; done
  ready || { echo "$label did not answer through $VIP:9999" >&2; exit 1; }
  PPID_=$(nsx ss -Hltnp '( sport = :15001 )' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  [[ -n $PPID_ ]] || { echo "cannot find the pid of $label" >&2; exit 1; }
  if [[ $CAP == 1 ]]; then
    # A quarter CPU (cfs quota 25 ms per 100 ms); threads made later (io-wq) are born inside.
    mkdir -p "$CGROUP"
    echo 100000 > "$CGROUP/cpu.cfs_period_us"
    echo 25000 > "$CGROUP/cpu.cfs_quota_us"
    echo "$PPID_" > "$CGROUP/cgroup.procs"
  fi
}
stop_proxy() {
  kill "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  while nsx ss -Hltn '( sport = :15001 )' | grep -q .; do sleep 0.05; done
}
ready() { nsx curl -s -o /dev/null -m 1 "http://$VIP:9999/" ; }

POLLS=0
requests_total() {  # sets REQ: requests the backend served, minus this function's own
  POLLS=$((POLLS + 1))
  REQ=$(nsx curl -s -m 2 http://127.0.0.1:8081/ | awk -v p="$POLLS" 'NR == 3 {print $3 - p}')
}

# wrk runs until the backend counted REQUESTS more (its own -d is only a bound). Over that
# window perf counts the proxy's CPU time (task-clock), syscalls and io_uring submissions, and
# samples it (cpu-clock, the only clock a VM without a PMU has) to split the CPU time into user
# space and kernel; with --trace, also the io_uring opcodes submitted and the namespace's TCP
# segments.
measure() {  # $1: label; prints one line of per-request figures
  local before after n segs0 segs1
  ip netns exec "$NS" wrk -t1 -c"$CONNS" -d300s -H "Connection: close" "http://$VIP:9999/" >/dev/null 2>&1 &
  local wrk=$!
  sleep 0.5  # connections up and the pool warm before the window opens
  # wrk is stopped while perf attaches and detaches, so the requests counted are exactly the
  # ones perf saw (give or take the CONNS in flight at each end).
  kill -STOP $wrk
  sleep 0.1
  local events="task-clock,raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter"
  events+=",io_uring:io_uring_submit_req,io_uring:io_uring_queue_async_work,context-switches"
  perf stat -x, -e "$events" -p "$PPID_" -o "$TMP/stat.csv" &
  local pids=($!)
  perf record -q -e cpu-clock -F 5000 -p "$PPID_" -o "$TMP/$1.data" 2>/dev/null &
  pids+=($!)
  if [[ $TRACE == 1 ]]; then
    perf record -q -e io_uring:io_uring_submit_req -c 1 -p "$PPID_" -o "$TMP/$1.ops" 2>/dev/null &
    pids+=($!)
  fi
  sleep 0.5  # perf attached
  requests_total; before=$REQ
  segs0=$(nsx nstat -az TcpOutSegs | awk '/TcpOutSegs/ {print $2}')
  local t0 t1
  t0=$(date +%s%N)
  kill -CONT $wrk
  while :; do
    sleep 0.2
    requests_total; after=$REQ
    (( after - before >= REQUESTS )) && break
  done
  kill -STOP $wrk
  t1=$(date +%s%N)
  sleep 0.2  # the requests in flight finish
  requests_total; after=$REQ
  segs1=$(nsx nstat -az TcpOutSegs | awk '/TcpOutSegs/ {print $2}')
  kill -INT "${pids[@]}"
  wait "${pids[@]}" || true
  kill $wrk; kill -CONT $wrk; wait $wrk 2>/dev/null || true
  n=$((after - before))
  local user
  user=$(perf report -i "$TMP/$1.data" --sort dso -F overhead,dso --stdio 2>/dev/null |
    awk '/^#/ {next} /%/ && !/kernel/ {gsub("%", "", $1); s += $1} END {print s / 100}')
  awk -F, -v n="$n" -v label="$1" -v user="$user" -v segs=$((segs1 - segs0)) -v ns=$((t1 - t0)) '
    /^#/ || NF < 3 {next}
    {v[$3] = $1}
    END {
      t = v["task-clock"] / n * 1000
      printf "%-14s req %d  conn/s %.0f  cpu us/conn %.2f (user %.2f kernel %.2f)  syscalls/conn %.3f io_uring_enter/conn %.3f sqes/conn %.3f async/conn %.3f cs/conn %.3f tcp segs/conn %.2f\n",
        label, n, n / (ns / 1e9), t, t * user, t * (1 - user), v["raw_syscalls:sys_enter"]/n,
        v["syscalls:sys_enter_io_uring_enter"]/n, v["io_uring:io_uring_submit_req"]/n, v["io_uring:io_uring_queue_async_work"]/n,
        v["context-switches"]/n, segs / n
    }' "$TMP/stat.csv"
  if [[ $TRACE == 1 ]]; then
    perf script -i "$TMP/$1.ops" -F trace 2>/dev/null | grep -o 'opcode [A-Z_]*' | sort | uniq -c |
      awk -v n="$n" '{printf "        %s/conn %.3f\n", $3, $1 / n}'
  fi
  if [[ -n $RECORD ]]; then
    cp "$TMP/$1.data" "$RECORD.$1"
  fi
}

# Syscalls by name per connection: one more window under strace -c (counts only; strace stops
# the proxy at every syscall, so this round's rate and times are not the proxy's).
strace_round() {
  local before after n
  ip netns exec "$NS" wrk -t1 -c"$CONNS" -d300s -H "Connection: close" "http://$VIP:9999/" \
    >/dev/null 2>&1 &
  local wrk=$!
  sleep 0.5
  kill -STOP $wrk
  sleep 0.1
  strace -c -f -p "$PPID_" -o "$TMP/strace.txt" 2>/dev/null &
  local st=$!
  sleep 0.5
  requests_total; before=$REQ
  kill -CONT $wrk
  while :; do
    sleep 0.2
    requests_total; after=$REQ
    (( after - before >= REQUESTS / 4 )) && break
  done
  kill -STOP $wrk
  sleep 0.2
  requests_total; after=$REQ
  kill -INT $st
  wait $st || true
  kill $wrk; kill -CONT $wrk; wait $wrk 2>/dev/null || true
  n=$((after - before))
  echo "strace: $n connections; syscalls per connection:"
  awk -v n="$n" '$1 ~ /^[0-9.]+$/ && NF >= 5 {
      name = $NF; calls = $4; if (calls !~ /^[0-9]+$/) next
      printf "        %-22s %.3f\n", name, calls / n }' "$TMP/strace.txt" | sort -k2 -nr
}

echo "wrk -c$CONNS Connection: close, $REQUESTS connections per round, variants: ${VARIANTS[*]}"
for r in $(seq "$ROUNDS"); do
  for v in "${VARIANTS[@]}"; do
    start_proxy "$v"
    label=${v%%:*}
    [[ $r == 1 ]] && measure "$label-warmup" >/dev/null
    measure "$label-r$r"
    if [[ $STRACE == 1 && $r == "$ROUNDS" ]]; then strace_round; fi
    stop_proxy
  done
done
if [[ -n $RECORD ]]; then
  echo "profiles: $RECORD.LABEL-rN (perf report -i FILE --no-children --sort dso,sym)"
fi
