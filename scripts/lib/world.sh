# Shell version of the isolated test world (DESIGN.md "Test topology rules"): a node namespace
# with a bridge and no link to the root namespace, and pods joined to it by veth pairs.
# Source it, set WORLD (a short unique prefix), call world_create, world_add_pod NAME IP [IP6],
# and trap world_destroy. Namespaces are named "$WORLD-node" and "$WORLD-<pod>".

world_node() { echo "$WORLD-node"; }
world_ns() { echo "$WORLD-$1"; }

world_create() {
  local node; node=$(world_node)
  ip netns add "$node"
  ip netns exec "$node" ip link set lo up
  ip netns exec "$node" ip link add br0 type bridge
  ip netns exec "$node" ip addr add 10.244.0.1/16 dev br0
  ip netns exec "$node" ip addr add fd00:244::1/64 dev br0 nodad
  ip netns exec "$node" ip link set br0 up
  WORLD_PODS=()
}

# world_add_pod NAME IPV4 [IPV6]
world_add_pod() {
  local name=$1 ip4=$2 ip6=${3:-} ns node idx host peer
  ns=$(world_ns "$name"); node=$(world_node); idx=${#WORLD_PODS[@]}
  host="${WORLD}h$idx"; peer="${WORLD}c$idx"
  ip netns add "$ns"
  WORLD_PODS+=("$ns")
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$node" ip link add "$host" type veth peer name "$peer" netns "$ns"
  ip netns exec "$node" ip link set "$host" master br0 up
  ip netns exec "$ns" ip link set "$peer" name eth0
  ip netns exec "$ns" ip addr add "$ip4/16" dev eth0
  [[ -n $ip6 ]] && ip netns exec "$ns" ip addr add "$ip6/64" dev eth0 nodad
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip route add default via 10.244.0.1
  [[ -n $ip6 ]] && ip netns exec "$ns" ip -6 route add default via fd00:244::1
  return 0
}

world_destroy() {
  local ns
  for ns in "${WORLD_PODS[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
  ip netns delete "$(world_node)" 2>/dev/null || true
}
