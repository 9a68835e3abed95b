#!/usr/bin/env bash
# The main job on the embedded seed scenario (namespace istio-demo), in network namespaces of
# its own: remora-init installs the rules in the front-tomcat pod, remora-proxy (uid 1337)
# routes bill-service by the VirtualService's weights, the weights change live, and
# `remora-init dump` / `dump --trace` explain where connections go. At the end the proxy gets
# SIGTERM, drains and exits; the demo waits for it and removes its namespaces. One more step
# shows STRICT mTLS between two sidecars (certificates made here with the openssl CLI).
#
#   scripts/demo.sh                  set up, build (in build/) and run
#   scripts/demo.sh --no-build       run with the binaries already in build/bin
#   scripts/demo.sh --bin-dir DIR    run with the binaries in DIR (no setup, no build)
#
# Run as root on Debian 12. Nothing leaves the machine: the "node" namespace has no uplink.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

build=1
bin=$root/build/bin
while (($#)); do
  case "$1" in
    -h|--help) sed -n '2,13p' "$root/scripts/demo.sh" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --no-build) build=0 ;;
    --bin-dir) [[ $# -ge 2 ]] || { echo "demo: --bin-dir wants a directory" >&2; exit 2; }
               bin=$(realpath "$2"); build=0; shift ;;
    *) echo "demo: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
cd "$root"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { echo "demo: $*" >&2; exit 1; }

if ((build)); then
  step "setup and build"
  bash scripts/setup.sh
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j"$(nproc)" --target remora-init remora-proxy remora-probe >/dev/null
fi
for b in remora-init remora-proxy remora-probe; do
  [[ -x $bin/$b ]] || fail "$bin/$b is not built (run without --no-build/--bin-dir)"
done

source scripts/lib/world.sh
WORLD="rmdemo$$"
WORLD_PODS=()
work=$(mktemp -d /tmp/remora-demo-XXXXXX)
chmod 755 "$work"
# Every background process is started as `ip netns exec NS [setpriv ...] PROGRAM &`: ip and
# setpriv exec the next program, so $! is the program's own PID (a shell function in between
# would make $! a subshell's, and killing that would leave the program running).
pids=() starts=() names=()  # PID, start time (to never signal a reused PID) and name of each

# starttime PID: field 22 of /proc/PID/stat (after the command name, which may hold spaces).
starttime() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  # shellcheck disable=SC2086  # the fields are split on purpose
  set -- $stat
  echo "${20}"
}
# track NAME: records $! (call right after `... &`).
track() { pids+=("$!"); starts+=("$(starttime "$!")"); names+=("$1"); }
# running PID START: the process is still the one we started and has not exited.
running() {
  local want=$2 stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  [[ $1 != Z && ${20} == "$want" ]]
}

# stop_pid INDEX SECONDS: SIGTERM to that process only, up to SECONDS for it to exit, then
# SIGKILL; reaps it and prints how it ended. Returns its exit status.
stop_pid() {
  local pid=${pids[$1]} start=${starts[$1]} name=${names[$1]} limit=$2 rc=0
  if running "$pid" "$start"; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + limit))
    while ((SECONDS < deadline)) && running "$pid" "$start"; do sleep 0.1; done
    if running "$pid" "$start"; then
      echo "$name (pid $pid) still running ${limit}s after SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || rc=$?
  if ((rc > 128)); then
    echo "$name (pid $pid) ended by signal $(kill -l "$rc" 2>/dev/null || echo "$((rc - 128))")"
  else
    echo "$name (pid $pid) exited with status $rc"
  fi
  return "$rc"
}

# Stops whatever is still running, removes the namespaces and the work directory. Runs on every
# exit path (the trap), and once more is harmless.
cleanup() {
  local i
  for i in "${!pids[@]}"; do
    if [[ -n ${pids[$i]} ]]; then stop_pid "$i" 5 || true; fi
  done
  pids=() starts=() names=()
  world_destroy
  rm -rf "/etc/netns/$WORLD-front-tomcat" "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "demo: namespaces $WORLD-*, logs in $work (both removed at the end)"

vip=10.1.122.241:9999
step "the seed's world: front-tomcat, bill-service-v1 and -v2 pods on a node bridge"
world_create
world_add_pod front-tomcat 10.244.0.10 fd00:244::10
world_add_pod bill-service-v1 10.244.1.168
world_add_pod bill-service-v2 10.244.2.74
front=$(world_ns front-tomcat)
in_front() { ip netns exec "$front" "$@"; }
# `bill-service` resolves through the pod netns's own hosts file, as cluster DNS would.
mkdir -p "/etc/netns/$front"
printf '127.0.0.1 localhost\n10.1.122.241 bill-service bill-service.istio-demo.svc.cluster.local\n' \
  > "/etc/netns/$front/hosts"
for v in 1 2; do
  reply="this is bill-service-v1"; [[ $v == 2 ]] && reply="hello, this is bill-service-v2"
  ip=10.244.1.168; [[ $v == 2 ]] && ip=10.244.2.74
  ip netns exec "$(world_ns bill-service-v$v)" "$bin/remora-probe" serve --listen "$ip:80" \
    --http --reply "$reply" > "$work/v$v.log" &
  track "remora-probe bill-service-v$v"
done
echo "front-tomcat 10.244.0.10; bill-service-v1 10.244.1.168:80; bill-service-v2 10.244.2.74:80"
echo "Service bill-service: ClusterIP $vip -> targetPort 80"

step "before interception: the ClusterIP leads nowhere (there is no kube-proxy here)"
if in_front curl -s -m 1 "http://bill-service:9999/"; then fail "bill-service answered without Remora"; fi
echo "curl http://bill-service:9999/ failed, as it should"

step "remora-init install (what the pod's init container runs)"
in_front "$bin/remora-init" install

step "remora-proxy as uid 1337, with the seed's YAML and a 90/10 VirtualService"
cat test/fixtures/seed/seed.yaml test/fixtures/seed/istio-90-10.yaml > "$work/mesh.yaml"
grep -A12 '^kind: VirtualService' test/fixtures/seed/istio-90-10.yaml | sed 's/^/  /'
# Not `in_front ... &`: $! must be the proxy itself (see track above).
ip netns exec "$front" setpriv --reuid=1337 --regid=1337 --clear-groups \
  "$bin/remora-proxy" --config "$work/mesh.yaml" > "$work/proxy.log" 2>&1 &
track remora-proxy
proxy=$((${#pids[@]} - 1))
for _ in $(seq 100); do
  in_front curl -sf -m 1 http://127.0.0.1:15000/ready >/dev/null 2>&1 && break
  sleep 0.1
done
in_front curl -sf -m 1 http://127.0.0.1:15000/ready >/dev/null || { cat "$work/proxy.log"; fail "proxy not ready"; }

# split N: N curls from front-tomcat; prints the count per backend and sets V1/V2.
split() {
  local out
  out=$(for _ in $(seq "$1"); do in_front curl -s -m 2 http://bill-service:9999/; done)
  V1=$(grep -c '^this is bill-service-v1' <<<"$out" || true)
  V2=$(grep -c '^hello, this is bill-service-v2' <<<"$out" || true)
  echo "$1 requests: $V1 × 'this is bill-service-v1', $V2 × 'hello, this is bill-service-v2'"
}
generation() {
  in_front curl -s -m 1 http://127.0.0.1:15000/config_dump | grep -o '"generation": [0-9]*' | head -1 | grep -o '[0-9]*$'
}

step "curl http://bill-service:9999/ from front-tomcat, 100 times"
split 100
[[ $V1 == 90 && $V2 == 10 ]] || fail "expected exactly 90/10"
echo "exactly 90/10 (kube-proxy's random 50/50 chains cannot do this)"

step "edit the VirtualService to 50/50; the proxy reloads without a restart"
gen=$(generation)
cat test/fixtures/seed/seed.yaml test/fixtures/seed/istio-50-50.yaml > "$work/mesh.yaml.new"
mv "$work/mesh.yaml.new" "$work/mesh.yaml"
for _ in $(seq 100); do [[ $(generation) != "$gen" ]] && break; sleep 0.1; done
echo "config generation $gen -> $(generation)"
split 100
[[ $V1 == 50 && $V2 == 50 ]] || fail "expected exactly 50/50"

step "the proxy's view: /stats/prometheus (bill-service lines)"
in_front curl -s http://127.0.0.1:15000/stats/prometheus | grep 'bill-service' | grep -E 'opened|active' | head -6

step "remora-init dump"
in_front "$bin/remora-init" dump

step "remora-init dump --trace $vip (the app, uid 0)"
in_front "$bin/remora-init" dump --trace $vip

step "remora-init dump --trace 10.244.1.168:80 --uid 1337 (the proxy's own upstream connection)"
in_front "$bin/remora-init" dump --trace 10.244.1.168:80 --uid 1337 --gid 1337

step "mTLS between two sidecars: a sleep pod calls ratings, whose namespace is STRICT"
# Two more meshed pods (label security.istio.io/tlsMode: istio), each with remora-init's rules
# and its own remora-proxy holding a certificate for its service account, issued here from a
# throwaway CA with the openssl CLI (the layout of --tls-dir: cert-chain.pem, key.pem,
# root-cert.pem).
world_add_pod sleep 10.244.5.10
world_add_pod ratings 10.244.5.20
sleep_ns=$(world_ns sleep) ratings_ns=$(world_ns ratings)
ossl() { openssl "$@" 2>>"$work/openssl.log" || fail "openssl $1 failed (see $work/openssl.log)"; }
ossl ecparam -name prime256v1 -genkey -noout -out "$work/ca.key"
ossl req -x509 -new -key "$work/ca.key" -subj /CN=remora-demo-ca -days 1 -out "$work/ca.pem"
for sa in sleep ratings; do
  mkdir -m 755 "$work/certs-$sa"
  ossl ecparam -name prime256v1 -genkey -noout -out "$work/certs-$sa/key.pem"
  ossl req -new -key "$work/certs-$sa/key.pem" -subj "/CN=$sa" -out "$work/$sa.csr"
  printf 'subjectAltName=URI:spiffe://cluster.local/ns/istio-demo/sa/%s\nextendedKeyUsage=serverAuth,clientAuth\n' \
    "$sa" > "$work/$sa.ext"
  ossl x509 -req -in "$work/$sa.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 1 -extfile "$work/$sa.ext" -out "$work/certs-$sa/cert-chain.pem"
  cp "$work/ca.pem" "$work/certs-$sa/root-cert.pem"
  chmod 644 "$work/certs-$sa"/*.pem
done
echo "certificates: spiffe://cluster.local/ns/istio-demo/sa/sleep and .../sa/ratings, one test CA"
cat > "$work/mtls.yaml" <<'YAML'
apiVersion: v1
kind: Pod
metadata:
  name: sleep
  namespace: istio-demo
  labels: {app: sleep, security.istio.io/tlsMode: istio}
spec: {serviceAccountName: sleep, containers: [{name: sleep, image: curl}]}
status: {podIP: 10.244.5.10}
---
apiVersion: v1
kind: Pod
metadata:
  name: ratings
  namespace: istio-demo
  labels: {app: ratings, security.istio.io/tlsMode: istio}
spec: {serviceAccountName: ratings, containers: [{name: ratings, image: ratings}]}
status: {podIP: 10.244.5.20}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: istio-demo}
spec:
  clusterIP: 10.1.122.250
  selector: {app: ratings}
  ports: [{name: tcp-ratings, port: 9080, targetPort: 80}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-demo}
spec:
  mtls: {mode: STRICT}
YAML
chmod 644 "$work/mtls.yaml"
sed -n '/kind: PeerAuthentication/,$p' "$work/mtls.yaml" | sed 's/^/  /'
ip netns exec "$ratings_ns" "$bin/remora-probe" serve --listen 10.244.5.20:80 --http \
  --reply "this is ratings, reached over mTLS" > "$work/ratings.log" &
track "remora-probe ratings"
mtls_proxies=()
for sa in ratings sleep; do
  ns=$(world_ns "$sa")
  ip netns exec "$ns" "$bin/remora-init" install >/dev/null
  ip netns exec "$ns" setpriv --reuid=1337 --regid=1337 --clear-groups \
    "$bin/remora-proxy" --config "$work/mtls.yaml" --tls-dir "$work/certs-$sa" \
    > "$work/proxy-$sa.log" 2>&1 &
  track "remora-proxy ($sa)"
  mtls_proxies+=($((${#pids[@]} - 1)))
  for _ in $(seq 100); do
    ip netns exec "$ns" curl -sf -m 1 http://127.0.0.1:15000/ready >/dev/null 2>&1 && break
    sleep 0.1
  done
  ip netns exec "$ns" curl -sf -m 1 http://127.0.0.1:15000/ready >/dev/null ||
    { cat "$work/proxy-$sa.log"; fail "the $sa sidecar is not ready"; }
done
echo "sleep (10.244.5.10) and ratings (10.244.5.20:80, Service 10.1.122.250:9080), a sidecar each"
reply=$(ip netns exec "$sleep_ns" curl -s -m 3 http://10.1.122.250:9080/ || true)
echo "sleep: curl http://10.1.122.250:9080/ -> ${reply:-FAILED}"
[[ $reply == "this is ratings, reached over mTLS" ]] || fail "the mTLS request was not served"
echo "mTLS: served (sleep's sidecar originated TLS 1.3, ratings' sidecar verified its certificate)"
if ip netns exec "$(world_ns bill-service-v1)" curl -s -m 2 http://10.244.5.20:80/; then
  fail "ratings answered a plaintext client under STRICT"
fi
echo "bill-service-v1 (no sidecar): plaintext curl http://10.244.5.20:80/ -> refused, as STRICT wants"
echo "ratings' sidecar, /stats/prometheus:"
stats=$(ip netns exec "$ratings_ns" curl -s -m 2 http://127.0.0.1:15000/stats/prometheus)
grep -E '^remora_inbound_connections_total|^remora_tls_handshake_failures_total' <<<"$stats" | sed 's/^/  /'
grep -q 'remora_inbound_connections_total{source_principal="cluster.local/ns/istio-demo/sa/sleep",connection_security_policy="mutual_tls"} 1' <<<"$stats" ||
  fail "the sleep pod's principal is not in ratings' metrics"
grep -q 'remora_tls_handshake_failures_total{reason="plaintext_refused"} 1' <<<"$stats" ||
  fail "the refused plaintext client is not counted"
echo "mTLS: the source principal cluster.local/ns/istio-demo/sa/sleep is in the metrics"
for i in "${mtls_proxies[@]}"; do
  rc=0
  stop_pid "$i" 10 || rc=$?
  pids[i]=""
  ((rc == 0)) || fail "${names[$i]} exited with status $rc after SIGTERM"
done

step "stop remora-proxy with SIGTERM (what the kubelet sends): it drains, then exits"
proxy_rc=0
stop_pid "$proxy" 10 || proxy_rc=$?
pids[proxy]=""
echo "its log:"
grep -E 'drain|exit|stopp|shut' "$work/proxy.log" | sed 's/^/  /' || true
((proxy_rc == 0)) || fail "remora-proxy exited with status $proxy_rc after SIGTERM"

step "stop the backends and remove the namespaces"
cleanup
trap - EXIT
left=$(pgrep -a -f -- "$work" || true)
[[ -z $left ]] || fail "processes of this demo are still running: $left"
step "done: every process the demo started has exited, and its namespaces are removed"
