#!/usr/bin/env bash
# The main job on the embedded seed scenario (namespace istio-demo), in network namespaces of
# its own: remora-init installs the rules in the front-tomcat pod, remora-proxy (uid 1337)
# routes bill-service by the VirtualService's weights, the weights change live, and
# `remora-init dump` / `dump --trace` explain where connections go.
# Run as root on Debian 12. Nothing leaves the machine: the "node" namespace has no uplink.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { echo "demo: $*" >&2; exit 1; }

step "setup and build"
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target remora-init remora-proxy remora-probe >/dev/null
bin=$root/build/bin

source scripts/lib/world.sh
WORLD="rmdemo$$"
work=$(mktemp -d /tmp/remora-demo-XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  world_destroy
  rm -rf "/etc/netns/$WORLD-front-tomcat" "$work"
}
trap cleanup EXIT

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
  pids+=($!)
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
in_front setpriv --reuid=1337 --regid=1337 --clear-groups \
  "$bin/remora-proxy" --config "$work/mesh.yaml" > "$work/proxy.log" 2>&1 &
pids+=($!)
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

step "done; the proxy is stopped and the namespaces removed"
