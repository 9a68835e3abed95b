#include "intercept/backend.h"

#include <fmt/format.h>

#include <fstream>

#include "common/subprocess.h"

namespace remora::intercept {

std::string IptablesTools::name() const {
  return fmt::format("{}-{}", family == Family::kIpv4 ? "iptables" : "ip6tables",
                     backend == IptablesBackend::kLegacy ? "legacy" : "nft");
}

IptablesTools toolsFor(IptablesBackend backend, Family family) {
  IptablesTools t;
  t.backend =
      backend == IptablesBackend::kLegacy ? IptablesBackend::kLegacy : IptablesBackend::kNft;
  t.family = family;
  std::string base = t.name();
  t.save = base + "-save";
  t.restore = base + "-restore";
  return t;
}

Result<std::string> saveTable(const IptablesTools& tools, const std::string& table) {
  std::vector<std::string> argv = {tools.save, "-c"};
  if (!table.empty()) argv.insert(argv.end(), {"-t", table});
  auto out = runCommand(argv);
  if (!out) {
    return Error{out.error().code,
                 fmt::format("{} (install the iptables package)", out.error().message)};
  }
  if (out->exit_code != 0) {
    return makeError(fmt::format("{} failed (exit {}): {}", tools.save, out->exit_code, out->err));
  }
  return std::move(out->out);
}

Result<IptablesBackend> detectBackend(IptablesBackend requested, Family family) {
  IptablesBackend chosen = requested;
  if (requested == IptablesBackend::kAuto) {
    chosen = IptablesBackend::kNft;
    // A netns whose legacy tables hold any rule is managed with legacy tools; mixing the two
    // gives the "unable to initialize table 'nat'" mess users report.
    // No legacy table at all is the common case and costs no process.
    auto legacy = toolsFor(IptablesBackend::kLegacy, family);
    bool any_legacy_table = legacyTableExists(family, "nat") ||
                            legacyTableExists(family, "filter") ||
                            legacyTableExists(family, "mangle") || legacyTableExists(family, "raw");
    if (any_legacy_table && programInPath(legacy.save)) {
      auto text = saveTable(legacy, "");
      // With -c each rule line reads "[pkts:bytes] -A CHAIN ...".
      if (text &&
          (text->find("\n-A ") != std::string::npos || text->find("] -A ") != std::string::npos)) {
        chosen = IptablesBackend::kLegacy;
      }
    }
  }
  auto tools = toolsFor(chosen, family);
  for (const auto& program : {tools.save, tools.restore}) {
    if (!programInPath(program)) {
      return Error{ENOENT, fmt::format("'{}' was not found in PATH (install the iptables package, "
                                       "or choose another --iptables-backend)",
                                       program)};
    }
  }
  return chosen;
}

bool legacyTableExists(Family family, const std::string& table) {
  std::ifstream names(family == Family::kIpv4 ? "/proc/thread-self/net/ip_tables_names"
                                              : "/proc/thread-self/net/ip6_tables_names");
  std::string name;
  while (names >> name) {
    if (name == table) return true;
  }
  return false;
}

bool ipv6Enabled() {
  std::ifstream f("/proc/sys/net/ipv6/conf/all/disable_ipv6");
  int disabled = 1;
  if (!(f >> disabled)) return false;
  return disabled == 0;
}

}  // namespace remora::intercept
