#!/usr/bin/env bash
# Prints the ruleset of `remora-init install` with default flags (DESIGN.md defaults; rule order
# of istio-iptables, as init/intercept/plan.cc plans it), written out by hand so the benchmarks
# can compare ways of applying the same rules and can stand in when remora-init is not usable.
#   default_plan.sh restore 4|6    iptables-restore --noflush input (nat table)
#   default_plan.sh commands 4|6   one iptables argument list per line (-t nat -N/-A ...)
set -euo pipefail

mode=${1:?usage: default_plan.sh restore|commands 4|6}
family=${2:?usage: default_plan.sh restore|commands 4|6}
case "$family" in
  4) localhost=127.0.0.1/32 passthrough=127.0.0.6/32 ;;
  6) localhost=::1/128 passthrough=::6/128 ;;
  *) echo "default_plan.sh: family must be 4 or 6" >&2; exit 2 ;;
esac

chains=(REMORA_INBOUND REMORA_IN_REDIRECT REMORA_OUTPUT REMORA_REDIRECT)
rules=(
  "REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"
  "REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 15001"
  "PREROUTING -p tcp -j REMORA_INBOUND"
  "REMORA_INBOUND -p tcp -m tcp --dport 15000:15001 -j RETURN"
  "REMORA_INBOUND -p tcp -m tcp --dport 15006 -j RETURN"
  "REMORA_INBOUND -p tcp -m tcp --dport 15020:15021 -j RETURN"
  "REMORA_INBOUND -p tcp -m tcp --dport 15090 -j RETURN"
  "REMORA_INBOUND -p tcp -j REMORA_IN_REDIRECT"
  "OUTPUT -p tcp -j REMORA_OUTPUT"
  "REMORA_OUTPUT -s $passthrough -o lo -j RETURN"
  "REMORA_OUTPUT ! -d $localhost -o lo -m owner --uid-owner 1337 -j REMORA_IN_REDIRECT"
  "REMORA_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN"
  "REMORA_OUTPUT -m owner --uid-owner 1337 -j RETURN"
  "REMORA_OUTPUT ! -d $localhost -o lo -m owner --gid-owner 1337 -j REMORA_IN_REDIRECT"
  "REMORA_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN"
  "REMORA_OUTPUT -m owner --gid-owner 1337 -j RETURN"
  "REMORA_OUTPUT -d $localhost -j RETURN"
  "REMORA_OUTPUT -j REMORA_REDIRECT"
)

case "$mode" in
  restore)
    echo "*nat"
    for c in "${chains[@]}"; do echo ":$c - [0:0]"; done
    for r in "${rules[@]}"; do echo "-A $r"; done
    echo "COMMIT"
    ;;
  commands)
    for c in "${chains[@]}"; do echo "-t nat -N $c"; done
    for r in "${rules[@]}"; do echo "-t nat -A $r"; done
    ;;
  *) echo "default_plan.sh: unknown mode $mode" >&2; exit 2 ;;
esac
