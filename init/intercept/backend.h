#pragma once

#include <string>
#include <vector>

#include "common/ip_address.h"
#include "common/result.h"
#include "intercept/options.h"

namespace remora::intercept {

// The iptables-save/-restore pair of one backend and family, e.g. ip6tables-nft-save.
struct IptablesTools {
  IptablesBackend backend = IptablesBackend::kNft;
  Family family = Family::kIpv4;
  std::string save;          // program name, looked up in PATH
  std::string restore;       // program name, looked up in PATH
  std::string name() const;  // "iptables-nft", "ip6tables-legacy", ...
  // Each run of either program is killed after this long (see runCommand).
  std::chrono::milliseconds timeout = kDefaultCommandTimeout;
};

IptablesTools toolsFor(IptablesBackend backend, Family family,
                       std::chrono::milliseconds timeout = kDefaultCommandTimeout);

// Chooses the backend for this netns the way kube-proxy and istio-iptables do: legacy when the
// legacy tables already hold rules, nft otherwise. An explicit choice is returned as is.
// Errors when the chosen tools are not installed.
Result<IptablesBackend> detectBackend(IptablesBackend requested, Family family,
                                      std::chrono::milliseconds timeout = kDefaultCommandTimeout);

// The legacy (x_tables) tables that exist in the calling thread's netns, read from
// /proc/thread-self/net/ip{6,}_tables_names without running anything.
std::vector<std::string> legacyTableNames(Family family);

// Whether the legacy (x_tables) `table` exists in the calling thread's netns, read from
// /proc/thread-self/net/ip{6,}_tables_names without running anything: iptables-legacy-save -t
// would create the table as a side effect.
bool legacyTableExists(Family family, const std::string& table);

// Runs `<family>-<backend>-save -c [-t table]` and returns its text.
Result<std::string> saveTable(const IptablesTools& tools, const std::string& table);

// The families an install plans for: IPv4, and IPv6 by --ipv6 (auto: when the netns has it).
// Errors when --ipv6 on but IPv6 is disabled.
Result<std::vector<Family>> plannedFamilies(const InterceptOptions& options);

// Whether IPv6 is usable in the calling thread's netns (the kernel has it and it is not
// disabled with net.ipv6.conf.all.disable_ipv6).
bool ipv6Enabled();

}  // namespace remora::intercept
