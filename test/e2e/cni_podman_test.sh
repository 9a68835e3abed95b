#!/usr/bin/env bash
# remora-cni under a real container runtime: podman 4's CNI backend, which drives the plugins
# through libcni exactly as it drives the reference ones.
#
#   cni_podman_test.sh libcni          BIN_DIR
#   cni_podman_test.sh node_installer  BIN_DIR
#   cni_podman_test.sh kube_play       BIN_DIR
#   cni_podman_test.sh kube_play_ebpf  BIN_DIR
#
# libcni: a container on an --internal network whose podman-written conflist (bridge +
#   host-local, portmap, firewall, tuning) is chained with remora-cni. While it runs, its netns
#   holds Remora's rules (iptables-save through nsenter) and a connection to a service VIP in
#   the network's own subnet is captured; `podman network disconnect` (DEL on a live netns)
#   removes them; after a container stops, nothing Remora made is left.
# node_installer: install-node against the conf dir holding podman's conflist, a container,
#   install-node --watch re-chaining after the file is rewritten, then uninstall-node: the
#   conflist is byte-identical to podman's original and the binary is gone.
# kube_play: `podman kube play` of deploy/podman/bill-demo.yaml (remora-init initContainer, the
#   app, the remora-proxy sidecar as UID 1337 reading a ConfigMap); from the app, curl to the
#   bill-service VIP is split by the VirtualService's 90/10 weights.
# kube_play_ebpf: the same seed with no iptables at all. install-node --mode ebpf attaches the
#   programs to a cgroup v2 directory the test makes and pins them in a bpffs of its own, and
#   chains remora-cni ("mode": "ebpf") into the network's conflist; the pod (bill-demo.yaml
#   without its init container) runs below that cgroup. No REMORA rule in iptables-save, the
#   netns registered in `remora-init dump`, exactly 90/10; after the pod's removal (CNI DEL) and
#   uninstall-node, no program, link, pin or map of the test is left.
#
# Everything lives in a temp dir of its own: containers.conf (runc, CNI backend, cgroupfs),
# storage root, network config dir and CNI bin dir; the machine's /etc/containers is never
# read for these. Names carry this shell's PID; cleanup removes exactly those, even on failure,
# on SIGTERM/SIGINT, and (at the next run's start) after a SIGKILL.
# Exit 77 = skipped (the reason is printed).
set -euo pipefail

case_name=${1:?usage: cni_podman_test.sh libcni|node_installer|kube_play|kube_play_ebpf BIN_DIR}
bin_dir=$(cd "${2:?BIN_DIR}" && pwd)
src_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
plugin_dir=${REMORA_CNI_PLUGIN_DIR:-/usr/lib/cni}

say() { echo "[$case_name] $*"; }
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || skip "needs root (podman rootful with the CNI backend, nsenter)"
for tool in podman buildah nsenter iptables-save; do
  command -v "$tool" >/dev/null || skip "$tool is not installed (scripts/setup.sh installs it)"
done
[[ -x "$plugin_dir/bridge" && -x "$plugin_dir/host-local" ]] ||
  skip "reference CNI plugins not found in $plugin_dir (containernetworking-plugins)"
for b in remora-cni remora-init remora-probe; do
  [[ -x "$bin_dir/$b" ]] || skip "$bin_dir/$b is not built"
done

# rmdir, deepest first, the cgroup directories named $1 in every hierarchy: kube_play_ebpf's
# cgroup v2 directory, and what runc made below its pod's cgroup parent in the v1 hierarchies.
remove_cgroups() {
  local h
  for h in /sys/fs/cgroup /sys/fs/cgroup/*; do
    [[ -d "$h/$1" ]] && find "$h/$1" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  return 0
}

# An earlier run killed without its cleanup (ctest's TIMEOUT kills with SIGKILL, which no trap
# sees) leaves its containers running, the kube_play pod holding hostPort 8080, its network,
# mounts and work dir. Each run's work dir names its owner (the file `owner`, or for runs older
# than that file the PID in its network's name); the dir of an owner that is gone is swept with
# that run's own podman configuration, so only what that run made is removed. A live owner (a
# run in parallel) is left alone, and so is a dir with no known owner younger than 10 minutes.
old_pm() {
  CONTAINERS_CONF="$dir/containers.conf" CONTAINERS_STORAGE_CONF="$dir/storage.conf" \
    timeout 60 podman "$@"
}
sweep_leftovers() {
  local owner conflist n b
  for dir in /tmp/remora-cni-podman.*; do  # `dir` is global: old_pm reads it
    [[ -d "$dir" ]] || continue
    owner=$(cat "$dir/owner" 2>/dev/null || true)
    if [[ -z "$owner" ]]; then
      conflist=$(find "$dir/net" -maxdepth 1 -name 'rcni-*.conflist' 2>/dev/null | head -n 1 || true)
      owner=${conflist##*/rcni-}
      owner=${owner%.conflist}
    fi
    if [[ "$owner" =~ ^[0-9]+$ ]]; then
      grep -qs cni_podman_test "/proc/$owner/cmdline" && continue
    elif [[ -z $(find "$dir" -maxdepth 0 -mmin +10) ]]; then
      continue
    fi
    say "removing the leftovers of an earlier run that was killed: $dir"
    if [[ -f "$dir/containers.conf" && -f "$dir/storage.conf" ]]; then
      {
        old_pm pod rm -a -f -t 0
        old_pm rm -a -f -t 0
        for n in "$dir"/net/*.conflist; do
          [[ -f "$n" ]] || continue
          b=$(grep -o '"bridge": *"[^"]*"' "$n" | cut -d'"' -f4)
          n=$(basename "$n" .conflist)
          old_pm network rm -f "$n"
          [[ -n "$b" ]] && ip link show "$b" && ip link delete "$b"
          rm -rf "/var/lib/cni/networks/$n"
        done
        old_pm rmi -a -f
      } >/dev/null 2>&1 || true
    fi
    # Its bpffs (kube_play_ebpf) goes with the mounts: the pins vanish and their programs detach.
    awk -v w="$dir" '$2 ~ "^"w {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l
    [[ "$owner" =~ ^[0-9]+$ ]] && remove_cgroups "remora-cni-podman-$owner"
    rm -rf "$dir"
  done
}
sweep_leftovers

id=$$
work=$(mktemp -d /tmp/remora-cni-podman.XXXXXX)
echo "$id" >"$work/owner"
net="rcni-$id"
image="localhost/remora-cni-e2e:$id"
sub="10.89.$((id % 150 + 50))"  # the --internal network's /24; VIPs live inside it
vip="$sub.241"
containers=()
pods=()
watcher_pid=""
bridge=""
# kube_play_ebpf: the programs attach to a cgroup v2 directory the test makes ($ebpf_cgroup,
# under the cgroup v2 root), whose name is also its pod's cgroup parent; the pins go to a bpffs
# of the test's own, mounted in its work dir. Cleanup (or the next run's sweep) removes both.
ebpf_cgroup_name="remora-cni-podman-$id"
ebpf_cgroup=""
ebpf_pins=""

# On failure: what podman knows about this run's containers, and their last log lines.
diagnose() {
  echo "--- diagnostics ($case_name) ---" >&2
  timeout 30 podman ps -a --format '{{.Names}} {{.Status}}' 2>&1 | grep -- "$net" >&2
  local c
  for c in $(timeout 30 podman ps -a --format '{{.Names}}' 2>/dev/null | grep -- "$net"); do
    echo "--- logs of $c" >&2
    timeout 30 podman logs --tail 15 "$c" 2>&1 | sed 's/^/    /' >&2
  done
  [[ -f "$work/remora-cni.log" ]] && tail -n 20 "$work/remora-cni.log" >&2
}

cleanup() {
  local rc=$?
  set +e
  ((rc != 0 && rc != 77)) && diagnose
  [[ -n "$watcher_pid" ]] && kill "$watcher_pid" 2>/dev/null && wait "$watcher_pid" 2>/dev/null
  for p in "${pods[@]}"; do timeout 60 podman pod rm -f -t 0 "$p" >/dev/null 2>&1; done
  for c in "${containers[@]}"; do timeout 60 podman rm -f -t 0 "$c" >/dev/null 2>&1; done
  timeout 30 podman network rm -f "$net" >/dev/null 2>&1
  timeout 60 podman rmi -f "$image" >/dev/null 2>&1
  # podman network rm deletes the bridge; make sure, by the name the conflist gave it.
  [[ -n "$bridge" ]] && ip link show "$bridge" >/dev/null 2>&1 && ip link delete "$bridge"
  rm -rf "/var/lib/cni/networks/$net"
  # Storage mounts of this run's own storage root, and kube_play_ebpf's bpffs (its pins go, so
  # its programs detach), deepest first.
  awk -v w="$work" '$2 ~ "^"w {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l
  [[ -n "$ebpf_cgroup" ]] && remove_cgroups "$ebpf_cgroup_name"
  rm -rf "$work"
  if ((rc != 0 && rc != 77)); then echo "[$case_name] FAILED (exit $rc)" >&2; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- podman, hermetic --------------------------------------------------------------------
mkdir -p "$work"/{net,bin,root,runroot,tmp,state}
# default_ulimits: podman's defaults (nofile 1048576) exceed the hard limits of a runner
# without CAP_SYS_RESOURCE, which makes runc fail to start anything.
# infra_image: pods get their infra ("pause") process from the test image (its CMD is /pause),
# not from a registry.
cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
tmp_dir = "$work/tmp"
infra_image = "$image"
[network]
network_backend = "cni"
cni_plugin_dirs = ["$work/bin", "$plugin_dir"]
network_config_dir = "$work/net"
EOF
cat >"$work/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$work/root"
runroot = "$work/runroot"
EOF
export CONTAINERS_CONF="$work/containers.conf"
export CONTAINERS_STORAGE_CONF="$work/storage.conf"
pm() { timeout 90 podman "$@"; }

build_image() {
  say "building $image offline (FROM scratch)"
  "$src_dir/scripts/build-image.sh" --build-dir "$bin_dir/.." --tag "$image" --test-tools \
    "$@" >/dev/null 2>"$work/build-image.log" || { cat "$work/build-image.log"; fail "image build"; }
}

create_network() {
  pm network create --internal --subnet "$sub.0/24" "$net" >/dev/null
  bridge=$(grep -o '"bridge": *"[^"]*"' "$work/net/$net.conflist" | cut -d'"' -f4)
  say "network $net ($sub.0/24, --internal, bridge $bridge)"
}

write_entry() {
  cat >"$work/entry.json" <<EOF
{
  "type": "remora-cni",
  "stateDir": "$work/state",
  "logFile": "$work/remora-cni.log",
  "logLevel": "debug",
  "excludeNamespaces": ["kube-system"]
}
EOF
}

# Polls `cmd` until it succeeds, up to ~20 s.
wait_for() {
  local what=$1
  shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  fail "timed out waiting for $what"
}

logs_ready() { pm logs "$1" 2>&1 | grep -q ready; }
pid_of() { pm inspect -f '{{.State.Pid}}' "$1"; }
nat_of() { nsenter -t "$(pid_of "$1")" -n iptables-save -t nat; }
state_files() { find "$work/state" -name '*.json' | wc -l; }
chained() { grep -q '"remora-cni"' "$work/net/$net.conflist"; }

# Starts a container whose main process is the stand-in proxy: UID 1337 on 15001.
run_proxy_container() {
  local name=$1
  containers+=("$name")
  pm run -d --name "$name" --network "$net" --user 1337:1337 "$image" \
    remora-probe serve --listen 0.0.0.0:15001 --reply captured-by-remora >/dev/null
  wait_for "$name to listen" logs_ready "$name"
}

assert_rules() {
  local rules
  rules=$(nat_of "$1")
  for chain in REMORA_OUTPUT REMORA_REDIRECT REMORA_INBOUND REMORA_IN_REDIRECT; do
    grep -q -- "-A $chain" <<<"$rules" || fail "$1: $chain missing from its netns:
$rules"
  done
  grep -q -- "-A OUTPUT -p tcp -j REMORA_OUTPUT" <<<"$rules" || fail "$1: no jump from OUTPUT"
  say "$1: Remora's chains are in its netns (iptables-save via nsenter)"
}

assert_no_rules() {
  local rules
  rules=$(nat_of "$1")
  if grep -q REMORA_ <<<"$rules"; then fail "$1: Remora's rules are still there:
$rules"; fi
}

case_libcni() {
  build_image
  create_network
  write_entry
  "$bin_dir/remora-cni" install-node --conf-dir "$work/net" --bin-dir "$work/bin" \
    --plugin-config "$work/entry.json" >/dev/null
  say "plugins: $(grep -o '"type": *"[^"]*"' "$work/net/$net.conflist" | cut -d'"' -f4 | xargs)"

  run_proxy_container "$net-a"
  assert_rules "$net-a"
  [[ $(state_files) -eq 1 ]] || fail "expected one attachment record, found $(state_files)"

  # The app (root) to a VIP in the network's subnet: only interception can answer it.
  out=$(pm exec --user 0:0 "$net-a" remora-probe connect "$vip:9999" --timeout-ms 3000) ||
    fail "connection to $vip:9999 was not captured: $out"
  grep -q "captured-by-remora" <<<"$out" || fail "unexpected reply: $out"
  grep -q "orig=$vip:9999" <<<"$out" || fail "SO_ORIGINAL_DST is not the VIP: $out"
  say "connect $vip:9999 from the container -> captured ($out)"
  # The proxy's own UID is never captured: the same connection fails locally.
  if pm exec --user 1337:1337 "$net-a" remora-probe connect "$vip:9999" --timeout-ms 1500 \
    >/dev/null 2>&1; then
    fail "UID 1337's connection was captured (the loop breaker is missing)"
  fi
  say "the same connection from UID 1337 is not captured"

  # DEL on a live netns: disconnect keeps the container (and its netns) running.
  pm network disconnect "$net" "$net-a"
  assert_no_rules "$net-a"
  [[ $(state_files) -eq 0 ]] || fail "attachment record left after DEL"
  say "podman network disconnect (CNI DEL): the rules are gone from the still-running netns"

  # A container that simply stops: DEL runs at teardown and nothing Remora made is left.
  run_proxy_container "$net-b"
  assert_rules "$net-b"
  pm stop -t 2 "$net-b" >/dev/null
  wait_for "the attachment record to go" test "$(state_files)" -eq 0
  grep -q "container=$(pm inspect -f '{{.Id}}' "$net-b").*interception removed" \
    "$work/remora-cni.log" || fail "no DEL logged for $net-b:
$(cat "$work/remora-cni.log")"
  say "podman stop: DEL removed the rules and the record"
  if grep -qi ' error:' "$work/remora-cni.log"; then
    fail "remora-cni logged errors:
$(grep -i ' error:' "$work/remora-cni.log")"
  fi
}

case_node_installer() {
  build_image
  create_network
  write_entry
  local conf="$work/net/$net.conflist"
  cp -p "$conf" "$work/original.conflist"

  "$bin_dir/remora-cni" install-node --conf-dir "$work/net" --bin-dir "$work/bin" \
    --plugin-config "$work/entry.json" >"$work/install.log" 2>&1 ||
    fail "install-node: $(cat "$work/install.log")"
  chained || fail "install-node did not chain remora-cni into $conf"
  cmp -s "$bin_dir/remora-cni" "$work/bin/remora-cni" || fail "binary not copied to the bin dir"
  [[ $(grep -c '"remora-cni"' "$conf") -eq 1 ]] || fail "duplicate entries"
  cp "$conf" "$work/installed.conflist"
  "$bin_dir/remora-cni" install-node --conf-dir "$work/net" --bin-dir "$work/bin" \
    --plugin-config "$work/entry.json" >/dev/null 2>&1
  cmp -s "$conf" "$work/installed.conflist" || fail "a second install-node changed the file"
  say "install-node chained remora-cni into $net.conflist (idempotent)"

  run_proxy_container "$net-a"
  assert_rules "$net-a"
  pm rm -f -t 0 "$net-a" >/dev/null

  # --watch: the primary CNI rewrites its file without the entry; it comes back.
  "$bin_dir/remora-cni" install-node --watch --resync-seconds 60 --conf-dir "$work/net" \
    --bin-dir "$work/bin" --plugin-config "$work/entry.json" >"$work/watch.log" 2>&1 &
  watcher_pid=$!
  wait_for "watch to start" grep -q "watching" "$work/watch.log"
  cp "$work/original.conflist" "$conf"
  wait_for "the entry to be re-chained" chained
  say "install-node --watch re-chained after the conflist was rewritten"
  kill -TERM "$watcher_pid"
  wait "$watcher_pid" || fail "install-node --watch exited non-zero on SIGTERM"
  watcher_pid=""

  "$bin_dir/remora-cni" uninstall-node --conf-dir "$work/net" --bin-dir "$work/bin" \
    >"$work/uninstall.log" 2>&1 || fail "uninstall-node: $(cat "$work/uninstall.log")"
  cmp "$conf" "$work/original.conflist" || fail "the conflist differs from podman's original"
  [[ ! -e "$work/bin/remora-cni" ]] || fail "uninstall-node left the binary"
  [[ ! -e "$work/net/remora-cni.d" ]] || fail "uninstall-node left its backup directory"
  # podman keeps its own cni.lock there; nothing else may be left.
  local left
  left=$(find "$work/net" -mindepth 1 -maxdepth 1 ! -name cni.lock -printf '%f\n')
  [[ "$left" == "$net.conflist" ]] || fail "unexpected files left in the conf dir: $left"
  say "uninstall-node: $net.conflist is byte-identical to podman's original; binary removed"

  run_proxy_container "$net-b"
  assert_no_rules "$net-b"
  say "a container started after uninstall gets no rules"
}

# The seed's two backends as plain containers at fixed IPs, and the seed's ConfigMap with its
# addresses moved into this network (the front pod at $sub.10, the VIP at $vip); the proxy's
# seccomp profile.
start_seed_backends() {
  v1="$sub.168" v2="$sub.74" front="$sub.10"
  containers+=("$net-bill-v1" "$net-bill-v2")
  pm run -d --name "$net-bill-v1" --network "$net" --ip "$v1" "$image" \
    remora-probe serve --listen 0.0.0.0:80 --http --reply "this is bill-service-v1" >/dev/null
  pm run -d --name "$net-bill-v2" --network "$net" --ip "$v2" "$image" \
    remora-probe serve --listen 0.0.0.0:80 --http --reply "hello, this is bill-service-v2" >/dev/null
  wait_for "bill-service-v1" logs_ready "$net-bill-v1"
  wait_for "bill-service-v2" logs_ready "$net-bill-v2"
  sed -e "s/10\.244\.1\.168/$v1/g" -e "s/10\.244\.2\.74/$v2/g" \
    -e "s/10\.1\.122\.241/$vip/g" -e "s/10\.244\.0\.10/$front/g" \
    "$src_dir/deploy/sidecar/remora-proxy-config.yaml" >"$work/config.yaml"
  # podman's default seccomp profile plus io_uring, for the proxy (docs/PROXY.md).
  local default_profile=/usr/share/containers/seccomp.json
  [[ -f "$default_profile" ]] || skip "no default seccomp profile at $default_profile to extend"
  mkdir -p "$work/seccomp"
  sed '0,/"syscalls": *\[/s//"syscalls": [ {"names": ["io_uring_setup", "io_uring_enter", "io_uring_register"], "action": "SCMP_ACT_ALLOW"},/' \
    "$default_profile" >"$work/seccomp/remora-proxy.json"
}

# deploy/podman/bill-demo.yaml with the test image and the pod named $1, written to $2; any
# further arguments are more sed expressions.
write_pod_yaml() {
  local name=$1 out=$2
  shift 2
  local edits=(-e "s#localhost/remora:latest#$image#g"
    -e "s/^  name: front-tomcat\$/  name: $name/")
  for e in "$@"; do edits+=(-e "$e"); done
  sed "${edits[@]}" "$src_dir/deploy/podman/bill-demo.yaml" >"$out"
}

kube_play() {
  pm kube play --network "$net" --ip "$front" --configmap "$work/config.yaml" \
    --seccomp-profile-root "$work/seccomp" "$@" >"$work/play.log" 2>&1 ||
    fail "podman kube play: $(cat "$work/play.log")"
}

# 100 curls from container $1 to the bill-service VIP: exactly the VirtualService's 90/10.
expect_seed_split() {
  local v1n=0 v2n=0 body
  for _ in $(seq 1 100); do
    body=$(pm exec "$1" curl -s --max-time 3 "http://$vip:9999/") || fail "curl to the VIP failed"
    case "$body" in
      *"hello, this is bill-service-v2"*) v2n=$((v2n + 1)) ;;
      *"this is bill-service-v1"*) v1n=$((v1n + 1)) ;;
      *) fail "unexpected answer from the VIP: $body" ;;
    esac
  done
  say "100 x curl http://$vip:9999/ from the app: v1=$v1n v2=$v2n"
  [[ $v1n -eq 90 && $v2n -eq 10 ]] || fail "expected exactly 90/10 (VirtualService weights)"
}

case_kube_play() {
  [[ -x "$bin_dir/remora-proxy" ]] || skip "remora-proxy is not built"
  build_image --require-proxy
  create_network
  # The app and the sidecar share the pod; the backends are plain containers at fixed IPs.
  start_seed_backends
  write_pod_yaml "$net-front" "$work/pod.yaml"
  pods+=("$net-front")
  kube_play "$work/pod.yaml"
  local app="$net-front-app"
  wait_for "the proxy's admin endpoint" pm exec "$app" curl -sf http://127.0.0.1:15000/ready
  assert_rules "$app"
  expect_seed_split "$app"
}

# --- eBPF mode ---------------------------------------------------------------------------

# From now on podman creates containers through a runc wrapper that puts them below the cgroup
# parent $1 instead of podman's /libpod_parent.
use_cgroup_parent() {
  cat >"$work/runc-cgroup-parent" <<WRAPPER
#!/bin/sh
bundle=""
prev=""
for a in "\$@"; do
  [ "\$prev" = "--bundle" ] && bundle=\$a
  prev=\$a
done
if [ -n "\$bundle" ] && [ -f "\$bundle/config.json" ]; then
  sed -i 's#\\("cgroupsPath": *"\\)/libpod_parent/#\\1$1/#' "\$bundle/config.json"
fi
exec $(command -v runc) "\$@"
WRAPPER
  chmod +x "$work/runc-cgroup-parent"
  sed -i 's/^runtime = "runc"$/runtime = "remora-runc"/' "$work/containers.conf"
  printf '[engine.runtimes]\nremora-runc = ["%s"]\n' "$work/runc-cgroup-parent" \
    >>"$work/containers.conf"
}

# Probes what eBPF mode needs from the kernel; a missing piece skips, naming it.
probe_ebpf() {
  local root
  for root in /sys/fs/cgroup /sys/fs/cgroup/unified; do
    if [[ $(stat -f -c %T "$root" 2>/dev/null) == cgroup2fs ]]; then
      ebpf_cgroup="$root/$ebpf_cgroup_name"
      break
    fi
  done
  [[ -n "$ebpf_cgroup" ]] ||
    skip "no cgroup v2 hierarchy (neither /sys/fs/cgroup nor /sys/fs/cgroup/unified is cgroup2)"
  [[ -r /sys/kernel/btf/vmlinux ]] || skip "the kernel has no BTF (/sys/kernel/btf/vmlinux)"
  mkdir -p "$work/bpffs"
  mount -t bpf bpf "$work/bpffs" 2>/dev/null || skip "cannot mount a bpffs (CONFIG_BPF_SYSCALL)"
  ebpf_pins="$work/bpffs/remora"
  mkdir "$ebpf_cgroup"
}

# remora-init dump in eBPF mode inside container $1's netns (nsenter keeps the host's mounts, so
# the pin dir is visible; `ip netns exec` would remount /sys).
ebpf_dump() {
  local c=$1
  shift
  nsenter -t "$(pid_of "$c")" -n "$bin_dir/remora-init" dump --mode ebpf \
    --bpf-pin-dir "$ebpf_pins" "$@"
}

# Every BPF object of `dump --json` ($1), one "prog N", "link N" or "map N" a line.
ebpf_object_ids() {
  local flat
  flat=$(tr -d ' \n' <<<"$1")
  { grep -o '"\(prog\|link\)_id":[0-9]*' <<<"$flat" || true; } | sed 's/"\(prog\|link\)_id":/\1 /'
  { grep -o '"map_ids":\[[0-9,]*\]' <<<"$flat" || true; } | { grep -o '[0-9]\+' || true; } |
    sed 's/^/map /'
}

# The objects of $1 (ebpf_object_ids's lines) that are still alive, and any program still
# attached to the test's cgroup.
ebpf_live_objects() {
  local kind obj_id
  while read -r kind obj_id; do
    bpftool "$kind" show id "$obj_id" >/dev/null 2>&1 && echo "$kind $obj_id"
  done <<<"$1"
  bpftool cgroup show "$ebpf_cgroup" 2>/dev/null | grep -v '^ID' || true
}

# The value of counter $2 in `dump --mode ebpf` from container $1's netns.
ebpf_counter() { ebpf_dump "$1" | awk -v name="$2" '$1 == name {print $2}'; }
# The proxy's single-series metric $2, read from container $1.
proxy_metric() {
  pm exec "$1" curl -sf http://127.0.0.1:15000/stats/prometheus | awk -v name="$2" '$1 == name {print $2}'
}

# Inbound without NAT: 10 curls from a backend (not meshed) to the front pod's app port. Each
# answer is the app's, sk_lookup steered each connection to the proxy's listener (its counter),
# and the proxy accepted each one (nothing else connects through it meanwhile).
expect_inbound_steered() {
  local app=$1 steered accepted body
  steered=$(ebpf_counter "$app" inbound_steered)
  accepted=$(proxy_metric "$app" remora_tcp_accepted_total)
  # One exec for the ten: podman exec is the slow part on a loaded machine.
  body=$(pm exec "$net-bill-v1" sh -c "for i in 1 2 3 4 5 6 7 8 9 10; do
    curl -s --max-time 3 http://$front:8080/ || echo FAILED; echo; done") ||
    fail "curl to the front pod's app port failed: $body"
  [[ $(grep -c front-tomcat <<<"$body") -eq 10 ]] ||
    fail "not 10 answers from the front pod's app: $body"
  steered=$(($(ebpf_counter "$app" inbound_steered) - ${steered:-0}))
  accepted=$(($(proxy_metric "$app" remora_tcp_accepted_total) - ${accepted:-0}))
  ((steered >= 10)) || fail "sk_lookup steered $steered of 10 inbound connections: $(ebpf_dump "$app")"
  ((accepted >= 10)) || fail "the proxy accepted $accepted of 10 inbound connections"
  say "10 x curl http://$front:8080/ from a backend: the app answered; sk_lookup steered" \
    "$steered, the proxy accepted $accepted"
}

case_kube_play_ebpf() {
  [[ -x "$bin_dir/remora-proxy" ]] || skip "remora-proxy is not built"
  command -v bpftool >/dev/null || skip "bpftool is not installed (scripts/setup.sh installs it)"
  probe_ebpf
  build_image --require-proxy
  create_network
  # The backends start before remora-cni is chained, so only the front pod is meshed.
  start_seed_backends
  write_entry  # install-node --mode ebpf adds "mode", "cgroup" and "bpf-pin-dir" to it
  cp -p "$work/net/$net.conflist" "$work/original.conflist"
  "$bin_dir/remora-cni" install-node --mode ebpf --cgroup "$ebpf_cgroup" \
    --bpf-pin-dir "$ebpf_pins" --conf-dir "$work/net" --bin-dir "$work/bin" \
    --plugin-config "$work/entry.json" >"$work/install.log" 2>&1 ||
    fail "install-node --mode ebpf: $(cat "$work/install.log")"
  grep -q '"mode": *"ebpf"' "$work/net/$net.conflist" || fail "the chained entry is not eBPF mode"
  say "install-node --mode ebpf: programs on $ebpf_cgroup, pins in $ebpf_pins"

  # The pod without its iptables init container.
  write_pod_yaml "$net-front" "$work/pod.yaml" \
    '/^  initContainers:$/,/^  containers:$/{/^  containers:$/!d}'
  if grep -q 'initContainers\|remora-init install' "$work/pod.yaml"; then
    fail "the pod variant still has its init container"
  fi
  # podman 4's kube play has no --cgroup-parent (and pod clone, which has one, loses the proxy's
  # seccomp profile): the pod's containers are created through runc_cgroup_parent, which moves
  # each one's cgroupsPath from podman's /libpod_parent to the test's parent. runc makes that
  # path in every hierarchy, the cgroup2 one included, and `podman exec` joins the same.
  use_cgroup_parent "/$ebpf_cgroup_name"
  pods+=("$net-front")
  kube_play "$work/pod.yaml"
  local app="$net-front-app" proxy="$net-front-remora-proxy" c where
  for c in "$app" "$proxy"; do
    where=$(grep '^0::' "/proc/$(pid_of "$c")/cgroup" | cut -d: -f3) ||
      fail "$c is not running: $(pm ps -a --pod)"
    [[ "$where" == "/$ebpf_cgroup_name/"* ]] ||
      fail "$c runs in cgroup2 $where, not below the test's /$ebpf_cgroup_name"
  done
  say "the pod's containers run below $ebpf_cgroup"
  wait_for "the proxy's admin endpoint" pm exec "$app" curl -sf http://127.0.0.1:15000/ready

  # No rule: interception is the cgroup's programs and the pod's registration.
  local rules dump
  rules=$(nsenter -t "$(pid_of "$app")" -n iptables-save 2>&1)
  if grep -q REMORA <<<"$rules"; then fail "iptables-save in the pod's netns shows Remora's rules:
$rules"; fi
  dump=$(ebpf_dump "$app") || fail "remora-init dump --mode ebpf: $dump"
  grep -q '(this netns)' <<<"$dump" || fail "the pod's netns is not registered:
$dump"
  grep -q '^node hold: yes' <<<"$dump" || fail "no node hold after install-node --mode ebpf:
$dump"
  grep -q '^inbound (sk_lookup): 1 pod address(es), [1-9][0-9]* proxy listener' <<<"$dump" ||
    fail "the proxy's inbound listener is not in the sockhash: $dump"
  say "no REMORA rule in iptables-save; dump --mode ebpf shows the pod's netns registered"

  expect_seed_split "$app"
  dump=$(ebpf_dump "$app")
  local redirected json ids
  redirected=$(awk '$1 == "redirected" {print $2}' <<<"$dump")
  ((${redirected:-0} >= 100)) || fail "connect4 redirected ${redirected:-0} connects, not 100:
$dump"
  expect_inbound_steered "$app"
  json=$(ebpf_dump "$app" --json) || fail "dump --json: $json"
  ids=$(ebpf_object_ids "$json")
  grep -q '^map' <<<"$ids" || fail "no map id in dump --json: $json"
  [[ $(grep -c '^prog' <<<"$ids") -eq 5 ]] ||
    fail "expected 5 programs (4 on the cgroup, sk_lookup on the pod): $json"

  # CNI DEL: the pod's registration and sk_lookup link go; the node hold keeps the programs.
  # Stop first: a SIGKILL sent by rm to a container that exits by itself makes rm fail.
  pm pod stop -t 0 "$net-front" >/dev/null 2>&1 || true
  pm pod rm -f "$net-front" >/dev/null
  grep -q 'netns cookie [0-9]* unregistered' "$work/remora-cni.log" || fail "no DEL logged:
$(cat "$work/remora-cni.log")"
  [[ $(state_files) -eq 0 ]] || fail "attachment record left after DEL"
  dump=$("$bin_dir/remora-init" dump --mode ebpf --bpf-pin-dir "$ebpf_pins")
  grep -q '^meshed netns: 0' <<<"$dump" || fail "the pod is still registered after DEL:
$dump"
  if find "$ebpf_pins" -name 'link_sk_lookup_*' | grep -q .; then
    fail "the pod's sk_lookup pin survived DEL"
  fi
  say "podman pod rm (CNI DEL): the pod is unregistered; the node hold keeps the programs"

  "$bin_dir/remora-cni" uninstall-node --mode ebpf --bpf-pin-dir "$ebpf_pins" \
    --conf-dir "$work/net" --bin-dir "$work/bin" >"$work/uninstall.log" 2>&1 ||
    fail "uninstall-node --mode ebpf: $(cat "$work/uninstall.log")"
  cmp -s "$work/net/$net.conflist" "$work/original.conflist" ||
    fail "the conflist differs from podman's original"
  # A new bpffs holds only the kernel's own maps.debug and progs.debug.
  [[ -z $(find "$work/bpffs" -mindepth 1 ! -name maps.debug ! -name progs.debug) ]] ||
    fail "pins left after uninstall-node: $(ls -AR "$work/bpffs")"
  # The kernel frees an unpinned link's last reference from deferred work: poll.
  wait_for "every program, link and map of the test to be freed" \
    test -z "$(ebpf_live_objects "$ids")"
  say "uninstall-node --mode ebpf: no program, link, pin or map of the test is left"
  if grep -qi ' error:' "$work/remora-cni.log"; then
    fail "remora-cni logged errors:
$(grep -i ' error:' "$work/remora-cni.log")"
  fi
}

case "$case_name" in
  libcni) case_libcni ;;
  node_installer) case_node_installer ;;
  kube_play) case_kube_play ;;
  kube_play_ebpf) case_kube_play_ebpf ;;
  *) fail "unknown case '$case_name'" ;;
esac
say "PASS"
