#include "intercept/mode.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "intercept/backend.h"
#include "intercept/nftables_applier.h"

namespace remora::intercept {

Result<ModeChoice> resolveMode(InterceptMode requested) {
  if (requested != InterceptMode::kAuto) return ModeChoice{requested, "chosen with --mode"};
  NftContext nft;
  auto tables = nftTables(nft);
  if (!tables) return makeError(fmt::format("--mode auto: {}", tables.error().message));
  for (const char* kube : {"ip kube-proxy", "ip6 kube-proxy", "inet kube-proxy"}) {
    if (std::find(tables->begin(), tables->end(), kube) != tables->end()) {
      return ModeChoice{InterceptMode::kNftables,
                        fmt::format("auto: kube-proxy's nftables table ({}) is here", kube)};
    }
  }
  std::vector<std::string> iptables;
  for (const auto& t : *tables) {
    for (const char* name : {"filter", "nat", "mangle", "raw", "security"}) {
      if (t == fmt::format("ip {}", name) || t == fmt::format("ip6 {}", name))
        iptables.push_back(t);
    }
  }
  for (auto family : {Family::kIpv4, Family::kIpv6}) {
    for (const auto& name : legacyTableNames(family)) {
      iptables.push_back(fmt::format("{}-legacy {}", family == Family::kIpv4 ? "ip" : "ip6", name));
    }
  }
  if (iptables.empty()) {
    return ModeChoice{InterceptMode::kNftables, "auto: this netns has no iptables tables"};
  }
  return ModeChoice{
      InterceptMode::kIptables,
      fmt::format("auto: this netns has iptables tables ({})", fmt::join(iptables, ", "))};
}

std::unique_ptr<Applier> makeApplier(InterceptMode mode, std::chrono::milliseconds timeout,
                                     const EbpfConfig& ebpf) {
  switch (mode) {
    case InterceptMode::kNftables:
      return makeNftablesApplier(timeout);
    case InterceptMode::kEbpf:
      return makeEbpfApplier(ebpf);
    case InterceptMode::kIptables:
    case InterceptMode::kAuto:
      break;
  }
  return makeIptablesApplier(timeout);
}

Result<ApplyReport> uninstallAll(std::chrono::milliseconds timeout) {
  ApplyReport all;
  for (auto mode : {InterceptMode::kIptables, InterceptMode::kNftables}) {
    auto report = makeApplier(mode, timeout, EbpfConfig{})->uninstall();
    if (!report) return report.error();
    all.changed = all.changed || report->changed;
    if (report->changed || all.lines.empty()) all.backend = report->backend;
    for (auto& line : report->lines) {
      if (report->changed) all.lines.push_back(std::move(line));
    }
  }
  if (!all.changed) all.lines.emplace_back("nothing installed; nothing changed");
  return all;
}

}  // namespace remora::intercept
