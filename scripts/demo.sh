#!/usr/bin/env bash
# The main job on the embedded seed scenario (namespace istio-demo): sets up, builds, then runs
# Remora's interception in network namespaces of its own and explains what it installed.
# Run as root on Debian 12. Nothing leaves the machine: the "node" namespace has no uplink.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "setup and build"
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target remora-init remora-probe >/dev/null
bin=$root/build/bin

source scripts/lib/world.sh
WORLD="rmdemo$$"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  world_destroy
}
trap cleanup EXIT

vip=10.1.122.241:9999
step "the seed's world: front-tomcat, bill-service-v1 and -v2 pods on a node bridge"
world_create
world_add_pod front-tomcat 10.244.0.10 fd00:244::10
world_add_pod bill-service-v1 10.244.1.168
world_add_pod bill-service-v2 10.244.2.74
front=$(world_ns front-tomcat)
echo "front-tomcat 10.244.0.10, bill-service-v1 10.244.1.168, bill-service-v2 10.244.2.74"
echo "Service bill-service: ClusterIP $vip -> targetPort 80"

step "before interception: the ClusterIP leads nowhere (no kube-proxy here)"
if ip netns exec "$front" "$bin/remora-probe" connect $vip --timeout-ms 1000; then
  echo "unexpected: $vip answered without interception" >&2
  exit 1
fi

step "remora-init install (what the pod's init container runs)"
ip netns exec "$front" "$bin/remora-init" install

step "a listener on the proxy's outbound port 15001 reports SO_ORIGINAL_DST"
ip netns exec "$front" "$bin/remora-probe" serve --listen 0.0.0.0:15001 \
  --reply "proxy listener 15001 got a connection:" > /tmp/$WORLD-15001.log &
pids+=($!)
for _ in $(seq 50); do grep -q ready /tmp/$WORLD-15001.log 2>/dev/null && break; sleep 0.1; done
for target in $vip 10.244.1.168:80; do
  echo "front-tomcat (uid 0) connects to $target:"
  ip netns exec "$front" "$bin/remora-probe" connect "$target" | sed 's/^/  /'
done
rm -f /tmp/$WORLD-15001.log

step "remora-init dump"
ip netns exec "$front" "$bin/remora-init" dump

step "remora-init dump --trace $vip (the app, uid 0)"
ip netns exec "$front" "$bin/remora-init" dump --trace $vip

step "remora-init dump --trace $vip --uid 1337 (the proxy's own traffic)"
ip netns exec "$front" "$bin/remora-init" dump --trace $vip --uid 1337 --gid 1337

step "done; the namespaces are removed on exit"
