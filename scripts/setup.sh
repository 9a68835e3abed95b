#!/usr/bin/env bash
# Installs every build, test and benchmark dependency of Remora with apt-get.
# Idempotent: packages already present are skipped, so a second run is quick.
set -euo pipefail

packages=(
  # build
  build-essential cmake ccache g++ clang llvm clang-format clang-tidy-22 pkg-config
  libclang-rt-14-dev  # libFuzzer and the sanitizer runtimes for clang 14 (docs/TESTING.md)
  libbpf-dev bpftool libnl-3-dev libnl-route-3-dev liburing-dev libssl-dev
  libspdlog-dev libfmt-dev libgtest-dev libgmock-dev
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libhttp-parser-dev libc-ares-dev
  libre2-dev libnftables-dev  # L7 route regexes (RE2); native nftables mode
  # interception and network test worlds
  iptables nftables iproute2 procps util-linux kmod
  # DNS server for the ServiceEntry resolution: DNS tests (dnsmasq-base: no system service)
  dnsmasq-base
  # container runtime and reference CNI plugins
  podman runc containernetworking-plugins buildah
  # demo, end-to-end and benchmark peers
  curl haproxy nginx-light libnginx-mod-stream wrk iperf3 gnuplot-nox python3 strace
  openssl tcpdump  # test certificates for mTLS; checking that veth bytes are encrypted
  linux-perf  # per-request CPU profiles: test/bench/l7_cost.sh, the relay benches' perf stat
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#packages[@]} packages present"
fi

# Debian's nginx and haproxy packages start system services on install; the
# benchmarks run their own instances, so the system ones are stopped if running.
for svc in nginx haproxy; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done

# bpffs is needed by the eBPF mode and its tests.
if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf || echo "setup: warning: could not mount bpffs at /sys/fs/bpf"
fi
