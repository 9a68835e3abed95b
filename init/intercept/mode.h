#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/result.h"
#include "intercept/applier.h"
#include "intercept/ebpf_applier.h"
#include "intercept/options.h"

namespace remora::intercept {

// The mechanism chosen for this netns and why (printed by remora-init and remora-cni).
struct ModeChoice {
  InterceptMode mode = InterceptMode::kIptables;
  std::string reason;
};

// Resolves --mode in the calling thread's netns. auto picks nftables when kube-proxy's nftables
// table (ip/ip6 kube-proxy) is here, or when there are no iptables tables at all (neither
// iptables-nft's ip/ip6 tables nor legacy ones); iptables otherwise.
Result<ModeChoice> resolveMode(InterceptMode requested);

// The applier of a resolved mode (not kAuto): every tool the rule appliers run is killed after
// `timeout`; `ebpf` (cgroup, pin dir) is used only by kEbpf. remora-init and remora-cni both
// build their applier here.
std::unique_ptr<Applier> makeApplier(InterceptMode mode, std::chrono::milliseconds timeout,
                                     const EbpfConfig& ebpf);

// Removes Remora from every rule mechanism (each removal exact: iptables chains and jumps, the
// inet remora table), so an uninstall needs no --mode. eBPF mode's uninstall is its applier's.
Result<ApplyReport> uninstallAll(std::chrono::milliseconds timeout);

}  // namespace remora::intercept
