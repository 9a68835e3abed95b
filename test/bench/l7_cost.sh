#!/usr/bin/env bash
# Per-request cost of remora-proxy's L7 path (docs/HTTP.md, "Per-request cost"): the proxy
# process's CPU time per keep-alive request (perf's task-clock, split into user space and kernel
# by cpu-clock samples), syscalls, io_uring submissions, socket poll arms and TCP segments per
# request, over a fixed number of requests counted by the backend (nginx stub_status). No PMU in
# this VM, so no instruction counts: compare builds over several rounds, and read the
# per-function profile (--record) for where the time goes. --haproxy runs HAProxy http
# (test/bench/haproxy-http.cfg) in the proxy's place, in the same world.
#
# The world is one network namespace of its own (name carries this script's PID, removed on
# exit): the seed's bill-service ClusterIP and both pod addresses on its loopback, nginx
# (test/bench/nginx-backend.conf) answering as both pods, an OUTPUT REDIRECT of the ClusterIP to
# the proxy's 15001, and wrk as the keep-alive client. No traffic leaves the namespace.
#
# Usage: test/bench/l7_cost.sh [--build-dir DIR] [--requests N] [--conns N] [--rounds N]
#                              [--record FILE] [--trace] [--proxy-args "ARGS"] [--haproxy]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$ROOT/build
REQUESTS=100000
CONNS=32
ROUNDS=3
RECORD=""
TRACE=0
PROXY_ARGS=""
PEER=""

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --build-dir) BUILD=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --record) RECORD=$2; shift 2 ;;
    --trace) TRACE=1; shift ;;
    --proxy-args) PROXY_ARGS=$2; shift 2 ;;
    --haproxy) PEER=haproxy; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

for tool in perf wrk nginx iptables curl ip; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
PROXY=$BUILD/bin/remora-proxy
[[ -x $PROXY ]] || { echo "no $PROXY (build the remora-proxy target)" >&2; exit 1; }

NS=l7cost-$$
TMP=$(mktemp -d /tmp/l7cost.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
  # Everything still running in the namespace is this script's (wrk, nginx, the proxy).
  ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

VIP=10.1.122.241
ip netns add "$NS"
nsx() { ip netns exec "$NS" "$@"; }
nsx ip link set lo up
for a in $VIP 10.244.1.168 10.244.2.74 10.244.0.10; do nsx ip addr add "$a/32" dev lo; done
nsx iptables -t nat -A OUTPUT -p tcp -d $VIP --dport 9999 -m owner ! --uid-owner 1337 \
  -j REDIRECT --to-ports 15001

cat "$ROOT/test/fixtures/seed/seed.yaml" > "$TMP/config.yaml"
printf -- '---\n' >> "$TMP/config.yaml"
cat "$ROOT/test/fixtures/seed/istio-90-10.yaml" >> "$TMP/config.yaml"
chmod 644 "$TMP/config.yaml"

mkdir -p "$TMP/nginx/tmp"
# The backend config plus a stub_status server: its request counter is the window's count for
# every proxy alike (the count's own polls are subtracted).
sed '$d' "$ROOT/test/bench/nginx-backend.conf" > "$TMP/nginx.conf"
printf '    server {\n        listen 127.0.0.1:8081;\n        location / { stub_status; }\n    }\n}\n' \
  >> "$TMP/nginx.conf"
ip netns exec "$NS" nginx -p "$TMP/nginx/" -e stderr -c "$TMP/nginx.conf" &
PIDS+=($!)
if [[ $PEER == haproxy ]]; then
  ip netns exec "$NS" setpriv --reuid 1337 --regid 1337 --clear-groups --inh-caps=-all \
    haproxy -db -f "$ROOT/test/bench/haproxy-http.cfg" &
else
  # shellcheck disable=SC2086 # PROXY_ARGS is a list of flags
  ip netns exec "$NS" setpriv --reuid 1337 --regid 1337 --clear-groups --inh-caps=-all "$PROXY" \
    --config "$TMP/config.yaml" --concurrency 1 --log-level error $PROXY_ARGS &
fi
PIDS+=($!)

ready() { nsx curl -s -o /dev/null -m 1 "http://$VIP:9999/" ; }
for _ in $(seq 600); do ready && break; sleep 0.1; done
ready || { echo "the proxy did not answer through $VIP:9999" >&2; exit 1; }
PPID_=$(nsx ss -Hltnp '( sport = :15001 )' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
[[ -n $PPID_ ]] || { echo "cannot find the proxy's pid" >&2; exit 1; }

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
  ip netns exec "$NS" wrk -t1 -c"$CONNS" -d300s "http://$VIP:9999/" >/dev/null 2>&1 &
  local wrk=$!
  sleep 0.5  # connections up and the pool warm before the window opens
  # wrk is stopped while perf attaches and detaches, so the requests counted are exactly the
  # ones perf saw (give or take the CONNS in flight at each end).
  kill -STOP $wrk
  sleep 0.1
  local events="task-clock,raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter"
  events+=",io_uring:io_uring_submit_req,io_uring:io_uring_queue_async_work,context-switches"
  # A socket poll armed for an operation that found no data (a multishot receive arms it once).
  events+=",io_uring:io_uring_poll_arm"
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
  kill -CONT $wrk
  while :; do
    sleep 0.2
    requests_total; after=$REQ
    (( after - before >= REQUESTS )) && break
  done
  kill -STOP $wrk
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
  awk -F, -v n="$n" -v label="$1" -v user="$user" -v segs=$((segs1 - segs0)) '
    /^#/ || NF < 3 {next}
    {v[$3] = $1}
    END {
      t = v["task-clock"] / n * 1000
      printf "%-7s req %d  cpu us/req %.2f (user %.2f kernel %.2f)  syscalls/req %.3f io_uring_enter/req %.3f sqes/req %.3f poll_arms/req %.3f cs/req %.3f tcp segs/req %.2f\n",
        label, n, t, t * user, t * (1 - user), v["raw_syscalls:sys_enter"]/n,
        v["syscalls:sys_enter_io_uring_enter"]/n, v["io_uring:io_uring_submit_req"]/n,
        v["io_uring:io_uring_poll_arm"]/n,
        v["context-switches"]/n, segs / n
    }' "$TMP/stat.csv"
  if [[ $TRACE == 1 ]]; then
    perf script -i "$TMP/$1.ops" -F trace 2>/dev/null | grep -o 'opcode [A-Z_]*' | sort | uniq -c |
      awk -v n="$n" '{printf "        %s/req %.3f\n", $3, $1 / n}'
  fi
  if [[ -n $RECORD ]]; then
    cp "$TMP/$1.data" "$RECORD.$1"
  fi
}

echo "${PEER:-remora-proxy $PROXY} (pid $PPID_), $CONNS keep-alive connections, $REQUESTS requests per round"
measure warmup >/dev/null
for r in $(seq "$ROUNDS"); do measure "round$r"; done
if [[ -n $RECORD ]]; then
  echo "profiles: $RECORD.round* (perf report -i FILE --no-children --sort dso,sym)"
fi
