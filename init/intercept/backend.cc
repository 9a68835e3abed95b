#include "intercept/backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>

#include "common/subprocess.h"
#include "intercept/iptables_save.h"

namespace remora::intercept {

std::string IptablesTools::name() const {
  return fmt::format("{}-{}", family == Family::kIpv4 ? "iptables" : "ip6tables",
                     backend == IptablesBackend::kLegacy ? "legacy" : "nft");
}

IptablesTools toolsFor(IptablesBackend backend, Family family, std::chrono::milliseconds timeout) {
  IptablesTools t;
  t.timeout = timeout;
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
  auto out = runCommand(argv, {}, tools.timeout);
  if (!out) {
    return Error{out.error().code,
                 fmt::format("{} (install the iptables package)", out.error().message)};
  }
  if (out->exit_code != 0) {
    return makeError(fmt::format("{} failed (exit {}): {}", tools.save, out->exit_code, out->err));
  }
  return std::move(out->out);
}

Result<IptablesBackend> detectBackend(IptablesBackend requested, Family family,
                                      std::chrono::milliseconds timeout) {
  IptablesBackend chosen = requested;
  if (requested == IptablesBackend::kAuto) {
    chosen = IptablesBackend::kNft;
    // A netns whose legacy tables hold any rule is managed with legacy tools; mixing the two
    // gives the "unable to initialize table 'nat'" mess users report.
    // No legacy table at all is the common case and costs no process.
    auto legacy = toolsFor(IptablesBackend::kLegacy, family, timeout);
    bool any_legacy_table = !legacyTableNames(family).empty();
    if (any_legacy_table && programInPath(legacy.save)) {
      auto text = saveTable(legacy, "");
      auto saved = text ? parseIptablesSave(*text) : Result<SavedRuleset>(text.error());
      if (saved && std::any_of(saved->tables.begin(), saved->tables.end(),
                               [](const SavedTable& t) { return !t.rules.empty(); })) {
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

std::vector<std::string> legacyTableNames(Family family) {
  std::ifstream file(family == Family::kIpv4 ? "/proc/thread-self/net/ip_tables_names"
                                             : "/proc/thread-self/net/ip6_tables_names");
  std::vector<std::string> names;
  std::string name;
  while (file >> name) names.push_back(name);
  return names;
}

bool legacyTableExists(Family family, const std::string& table) {
  auto names = legacyTableNames(family);
  return std::find(names.begin(), names.end(), table) != names.end();
}

Result<std::vector<Family>> plannedFamilies(const InterceptOptions& options) {
  std::vector<Family> families = {Family::kIpv4};
  if (options.ipv6 == Ipv6Mode::kOn) {
    if (!ipv6Enabled()) {
      return makeError(
          "--ipv6 on, but IPv6 is disabled in this network namespace "
          "(net.ipv6.conf.all.disable_ipv6=1)");
    }
    families.push_back(Family::kIpv6);
  } else if (options.ipv6 == Ipv6Mode::kAuto && ipv6Enabled()) {
    families.push_back(Family::kIpv6);
  }
  return families;
}

bool ipv6Enabled() {
  std::ifstream f("/proc/sys/net/ipv6/conf/all/disable_ipv6");
  int disabled = 1;
  if (!(f >> disabled)) return false;
  return disabled == 0;
}

}  // namespace remora::intercept
