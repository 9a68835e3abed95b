#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <optional>

#include "common/subprocess.h"
#include "intercept/applier.h"
#include "intercept/backend.h"
#include "intercept/iptables_save.h"
#include "intercept/loopback.h"
#include "intercept/nftables_applier.h"
#include "intercept/plan.h"
#include "intercept/policy_route.h"

namespace remora::intercept {
namespace {

bool isRemoraChain(std::string_view name) { return name.starts_with(kChainPrefix); }

// The target of a rule ("-j X" or "-g X"), or "".
std::string targetOf(const SavedRule& rule) {
  for (size_t i = 0; i + 1 < rule.args.size(); ++i) {
    if (rule.args[i] == "-j" || rule.args[i] == "-g") return rule.args[i + 1];
  }
  return {};
}

// Remora's footprint in one table: its chains, their rules, and the jumps into them.
struct TableState {
  std::vector<std::string> chains;
  std::vector<std::string> rule_lines;  // "-A CHAIN ..." in file order, Remora's chains and jumps
  std::vector<std::string> jump_lines;  // jumps into Remora's chains from other chains
  bool empty() const { return chains.empty() && jump_lines.empty(); }
  bool operator==(const TableState&) const = default;
};

// Remora's footprint in one family: the nat table, and mangle (--drop-invalid).
struct Installed {
  TableState nat;
  TableState mangle;
  bool empty() const { return nat.empty() && mangle.empty(); }
  bool operator==(const Installed&) const = default;
};

TableState findInstalled(const SavedTable* table) {
  TableState found;
  if (table == nullptr) return found;
  for (const auto& chain : table->chains) {
    if (isRemoraChain(chain.name)) found.chains.push_back(chain.name);
  }
  for (const auto& rule : table->rules) {
    bool own = isRemoraChain(rule.chain);
    bool jump = !own && isRemoraChain(targetOf(rule));
    if (jump) found.jump_lines.push_back(rule.text);
    if (own || jump) found.rule_lines.push_back(rule.text);
  }
  return found;
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// Compares one table's installed state with the planned chains and rules. iptables-save orders
// chains its own way, so compare each chain's rule sequence, plus the set of declared chains.
void tableDifferences(std::vector<std::string>& diffs, const char* table,
                      const TableState& installed, const std::vector<std::string>& chains,
                      const std::vector<PlannedRule>& rules) {
  if (sorted(installed.chains) != sorted(chains)) {
    diffs.push_back(fmt::format("{} chains are [{}], expected [{}]", table,
                                fmt::join(installed.chains, " "), fmt::join(chains, " ")));
  }
  auto byChain = [](const std::vector<std::string>& lines) {
    std::map<std::string, std::vector<std::string>> m;
    for (const auto& line : lines) {
      auto chain = line.substr(3, line.find(' ', 3) - 3);
      m[chain].push_back(line);
    }
    return m;
  };
  std::vector<std::string> expected;
  expected.reserve(rules.size());
  for (const auto& rule : rules) expected.push_back(rule.toString());
  auto have = byChain(installed.rule_lines);
  auto want = byChain(expected);
  for (const auto& [chain, lines] : want) {
    const auto& got = have[chain];
    for (size_t i = 0; i < std::max(lines.size(), got.size()); ++i) {
      if (i < lines.size() && i < got.size() && lines[i] == got[i]) continue;
      if (i >= got.size()) {
        diffs.push_back(fmt::format("missing {} rule: {}", table, lines[i]));
      } else if (i >= lines.size()) {
        diffs.push_back(fmt::format("unexpected {} rule: {}", table, got[i]));
      } else {
        diffs.push_back(fmt::format("rule {} of {} {} is '{}', expected '{}'", i + 1, table, chain,
                                    got[i], lines[i]));
      }
    }
  }
  for (const auto& [chain, lines] : have) {
    if (!want.contains(chain)) {
      for (const auto& line : lines) {
        diffs.push_back(fmt::format("unexpected {} rule: {}", table, line));
      }
    }
  }
}

std::vector<std::string> differences(const Installed& installed, const FamilyPlan& plan) {
  std::vector<std::string> diffs;
  tableDifferences(diffs, "nat", installed.nat, plan.chains, plan.rules);
  tableDifferences(diffs, "mangle", installed.mangle, plan.mangle_chains, plan.mangle_rules);
  return diffs;
}

// The "*table ... COMMIT" section of iptables-save output, or an empty section (which
// iptables-restore without --noflush reads as "flush the table": the table had nothing).
std::string tableSection(const std::string& text, const std::string& table) {
  auto start = text.find("*" + table + "\n");
  if (start != 0 && start != std::string::npos) start = text.find("\n*" + table + "\n");
  if (start == std::string::npos) return "*" + table + "\nCOMMIT\n";
  if (text[start] == '\n') ++start;
  auto end = text.find("\nCOMMIT\n", start);
  if (end == std::string::npos) return "*" + table + "\nCOMMIT\n";
  return text.substr(start, end + 8 - start);
}

// Tables that do not exist hold nothing. Legacy tables are listed in /proc; iptables-nft's are
// the nftables tables `ip nat`, `ip6 mangle` and so on, and asking libnftables about them costs
// about 0.1 ms where a save costs 8 ms (so a first install in a new pod saves nothing).
bool mayHoldRules(const IptablesTools& tools) {
  if (tools.backend == IptablesBackend::kLegacy) {
    return legacyTableExists(tools.family, "nat") || legacyTableExists(tools.family, "mangle");
  }
  if (!nftInProcess()) return true;
  NftContext nft;
  for (const char* table : {"nat", "mangle"}) {
    auto listed = listNftTable(
        nft, fmt::format("{} {}", tools.family == Family::kIpv4 ? "ip" : "ip6", table));
    if (!listed || *listed) return true;
  }
  return false;
}

// Reads Remora's footprint in nat and mangle with one save of all tables; `snapshot` gets the
// two tables' sections, for rollback.
Result<Installed> readInstalled(const IptablesTools& tools, std::string* snapshot = nullptr) {
  if (!mayHoldRules(tools)) {
    if (snapshot) *snapshot = tableSection("", "nat") + tableSection("", "mangle");
    return Installed{};
  }
  auto text = saveTable(tools, "");
  if (!text) return text.error();
  auto parsed = parseIptablesSave(*text);
  if (!parsed) {
    return makeError(fmt::format("cannot parse {} output: {}", tools.save, parsed.error().message));
  }
  if (snapshot) *snapshot = tableSection(*text, "nat") + tableSection(*text, "mangle");
  return Installed{findInstalled(parsed->table("nat")), findInstalled(parsed->table("mangle"))};
}

Result<void> restore(const IptablesTools& tools, const std::string& input, bool noflush) {
  // Without --noflush (rollback), the saved counters are put back too.
  std::vector<std::string> argv = {tools.restore, "--wait", noflush ? "--noflush" : "--counters"};
  auto out = runCommand(argv, input, tools.timeout);
  if (!out) return out.error();
  if (out->exit_code != 0) {
    std::string err = out->err;
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    return makeError(fmt::format("{} failed (exit {}){}{}", tools.restore, out->exit_code,
                                 err.empty() ? "" : ": ", err));
  }
  return {};
}

// Remora's footprint as it is now, or nullopt when it cannot be read.
std::optional<Installed> readBack(const IptablesTools& tools) {
  auto installed = readInstalled(tools);
  if (!installed) return std::nullopt;
  return *installed;
}

std::string describe(const Installed& installed) {
  return fmt::format("{} rules in {} chains",
                     installed.nat.rule_lines.size() + installed.mangle.rule_lines.size(),
                     installed.nat.chains.size() + installed.mangle.chains.size());
}

std::string removalInput(const Installed& installed) {
  std::string text;
  for (const auto& [table, state] :
       {std::pair{"nat", &installed.nat}, std::pair{"mangle", &installed.mangle}}) {
    if (state->empty()) continue;
    text += fmt::format("*{}\n", table);
    for (const auto& jump : state->jump_lines) text += "-D" + jump.substr(2) + "\n";
    // Flush all before deleting any: Remora's chains jump to each other.
    for (const auto& chain : state->chains) text += "-F " + chain + "\n";
    for (const auto& chain : state->chains) text += "-X " + chain + "\n";
    text += "COMMIT\n";
  }
  return text;
}

TableFootprint footprint(const TableState& state) { return {state.chains, state.jump_lines}; }

const char* familyName(Family f) { return f == Family::kIpv4 ? "IPv4" : "IPv6"; }

// One family's planned change: tools, the state before, and the restore input.
struct FamilyChange {
  IptablesTools tools;
  FamilyPlan plan;
  std::string snapshot;  // iptables-save -c of nat and mangle before the change, for rollback
  Installed before;
  std::string input;
  bool needed = false;
};

class IptablesApplier : public Applier {
 public:
  explicit IptablesApplier(std::chrono::milliseconds timeout) : timeout_(timeout) {}
  std::string name() const override { return "iptables"; }

  Result<ApplyReport> install(const InterceptOptions& options) override {
    auto changes = prepare(options);
    if (!changes) return changes.error();
    ApplyReport report;
    // Families whose restore ran (ok or not), and whether this install put ::6 on lo.
    std::vector<const FamilyChange*> touched;
    bool added_v6 = false;
    // TPROXY mode's policy routing goes in first (harmless without the marking rules); what this
    // call added is taken out again if anything after fails.
    RoutesAdded routes;
    for (const auto& change : *changes) {
      if (!change.plan.policy_route) continue;
      auto added = addPolicyRoute(change.plan.family, *change.plan.policy_route);
      if (!added) return makeError(added.error().message + removeRoutes(routes));
      if (added->any()) {
        routes.emplace_back(change.plan.family, *added);
        report.changed = true;
        report.lines.push_back(fmt::format("{}: added {}", familyName(change.plan.family),
                                           change.plan.policy_route->toString(change.plan.family)));
      }
    }
    for (const auto& change : *changes) {
      report.backend = change.tools.name();
      if (change.plan.family == Family::kIpv6) {
        // The proxy's IPv6 inbound passthrough source must be a local address (see loopback.h).
        auto added = addLoopbackAddress(passthroughSourceV6());
        if (!added) {
          return makeError(added.error().message + undo(*changes, touched, false) +
                           removeRoutes(routes));
        }
        added_v6 = *added;
      }
      if (!change.needed) {
        report.lines.push_back(
            fmt::format("{}: already installed, nothing changed", change.tools.name()));
        continue;
      }
      auto done = restore(change.tools, change.input, /*noflush=*/true);
      if (!done) {
        // The exit status is not the truth: a restore killed (or timed out) after its COMMIT
        // has changed the table. Read it back and roll back whatever did change.
        std::string text =
            fmt::format("{}: {}", familyName(change.plan.family), done.error().message);
        auto now = readBack(change.tools);
        if (!now) {
          text += "; cannot read the tables back to see whether it committed";
          touched.push_back(&change);
        } else if (*now != change.before) {
          text += "; it had committed before it failed (read back from the tables)";
          touched.push_back(&change);
        } else if (touched.empty()) {
          text += "; nothing was applied";
        }
        return makeError(text + undo(*changes, touched, added_v6) + removeRoutes(routes));
      }
      touched.push_back(&change);
      report.changed = true;
      report.lines.push_back(
          fmt::format("{}: installed {} rules in {} chains", change.tools.name(),
                      change.plan.rules.size() + change.plan.mangle_rules.size(),
                      change.plan.chains.size() + change.plan.mangle_chains.size()));
    }
    // REDIRECT mode after a TPROXY install: its policy routing goes with its rules.
    for (const auto& change : *changes) {
      if (change.plan.policy_route) continue;
      auto removed = removePolicyRoute(change.plan.family, PolicyRoute{});
      if (removed && removed->any()) {
        report.changed = true;
        report.lines.push_back(
            fmt::format("{}: removed the TPROXY policy route of an earlier "
                        "install",
                        familyName(change.plan.family)));
      }
    }
    // A previous install in nftables mode would capture twice; remove its table.
    NftContext nft;
    auto removed_table = removeNftablesTable(nft);
    if (removed_table && *removed_table) {
      report.changed = true;
      report.lines.push_back(
          fmt::format("nftables: removed an earlier install (table inet {})", kNftTable));
    }
    // A previous install through the other backend would capture twice; remove it.
    for (const auto& change : *changes) {
      auto other =
          toolsFor(change.tools.backend == IptablesBackend::kLegacy ? IptablesBackend::kNft
                                                                    : IptablesBackend::kLegacy,
                   change.plan.family, timeout_);
      if (!programInPath(other.save) || !mayHoldRules(other)) continue;
      auto removed = removeWith(other);
      if (removed && *removed) {
        report.changed = true;
        report.lines.push_back(fmt::format("{}: removed an earlier install", other.name()));
      }
    }
    return report;
  }

  Result<std::string> dryRun(const InterceptOptions& options) override {
    auto changes = prepare(options);
    if (!changes) return changes.error();
    std::string text;
    for (const auto& change : *changes) {
      text +=
          fmt::format("# {} ({}): {} --noflush{}\n", change.tools.name(),
                      familyName(change.plan.family), change.tools.restore,
                      change.needed ? "" : " (already installed: install would change nothing)");
      text += change.input;
      if (change.plan.family == Family::kIpv6) {
        text += fmt::format("# and {}/128 is added to lo (the IPv6 inbound passthrough source)\n",
                            passthroughSourceV6().toString());
      }
      if (change.plan.policy_route) {
        text += fmt::format("# and the TPROXY policy route: {}\n",
                            change.plan.policy_route->toString(change.plan.family));
      }
    }
    return text;
  }

  Result<ApplyReport> uninstall() override {
    ApplyReport report;
    bool removed_v6 = false;
    for (auto backend : {IptablesBackend::kNft, IptablesBackend::kLegacy}) {
      for (auto family : {Family::kIpv4, Family::kIpv6}) {
        auto tools = toolsFor(backend, family, timeout_);
        if (!programInPath(tools.save) || !programInPath(tools.restore)) continue;
        if (!mayHoldRules(tools)) continue;
        auto removed = removeWith(tools);
        if (!removed) return removed.error();
        if (*removed) {
          report.changed = true;
          report.backend = tools.name();
          report.lines.push_back(
              fmt::format("{}: removed Remora's chains and jumps", tools.name()));
          removed_v6 = removed_v6 || family == Family::kIpv6;
        }
      }
    }
    if (removed_v6) {
      auto gone = removeLoopbackAddress(passthroughSourceV6());
      if (!gone) return gone.error();
    }
    auto routes = uninstallPolicyRoutes(report);
    if (!routes) return routes.error();
    if (!report.changed) report.lines.emplace_back("nothing installed; nothing changed");
    return report;
  }

  Result<void> check(const InterceptOptions& options) override {
    auto changes = prepare(options);
    if (!changes) return changes.error();
    std::vector<std::string> problems;
    for (const auto& change : *changes) {
      for (const auto& d : differences(change.before, change.plan)) {
        problems.push_back(fmt::format("{}: {}", change.tools.name(), d));
      }
      if (auto d = policyRouteDifference(change.plan)) problems.push_back(*d);
    }
    if (!problems.empty()) {
      return makeError(
          fmt::format("interception rules are not as configured: {}", fmt::join(problems, "; ")));
    }
    return {};
  }

 private:
  Result<std::vector<FamilyChange>> prepare(const InterceptOptions& options) {
    auto families = plannedFamilies(options);
    if (!families) return families.error();
    std::vector<FamilyChange> changes;
    for (auto family : *families) {
      auto backend = detectBackend(options.backend, family, timeout_);
      if (!backend) return backend.error();
      FamilyChange change;
      change.tools = toolsFor(*backend, family, timeout_);
      change.plan = planFamily(options, family);
      auto before = readInstalled(change.tools, &change.snapshot);
      if (!before) return before.error();
      change.before = *before;
      change.needed = !differences(change.before, change.plan).empty();
      change.input =
          renderRestore(change.plan, footprint(change.before.nat), footprint(change.before.mangle));
      changes.push_back(std::move(change));
    }
    return changes;
  }

  // Returns whether anything was removed.
  Result<bool> removeWith(const IptablesTools& tools) {
    auto installed = readInstalled(tools);
    if (!installed) return installed.error();
    if (installed->empty()) return false;
    auto done = restore(tools, removalInput(*installed), /*noflush=*/true);
    if (!done) return done.error();
    return true;
  }

  // Puts back the nat tables of the families `touched` changed, and takes ::6 off lo when this
  // install added it; returns text for the error message, ending with what is installed now in
  // every family of `all`, as read back from the tables.
  static std::string undo(const std::vector<FamilyChange>& all,
                          const std::vector<const FamilyChange*>& touched, bool added_v6) {
    std::string text;
    for (const auto* change : touched) {
      auto undone = restore(change->tools, change->snapshot, /*noflush=*/false);
      // As with install, the table decides: a rollback tool that fails after its COMMIT rolled
      // back all the same.
      auto now = readBack(change->tools);
      if (now && *now == change->before) {
        text += fmt::format("; rolled back {}", change->tools.name());
      } else {
        text += fmt::format(
            "; ROLLBACK OF {} FAILED: {}", change->tools.name(),
            undone ? "the table differs from before the install" : undone.error().message);
      }
    }
    bool v6_left = false;
    if (added_v6) {
      auto gone = removeLoopbackAddress(passthroughSourceV6());
      text += gone ? fmt::format("; removed {}/128 from lo", passthroughSourceV6().toString())
                   : fmt::format("; REMOVING {}/128 FROM lo FAILED: {}",
                                 passthroughSourceV6().toString(), gone.error().message);
      v6_left = !gone;
    }
    std::vector<std::string> state;
    for (const auto& change : all) {
      auto now = readBack(change.tools);
      if (!now) {
        state.push_back(fmt::format("{}: unknown (cannot read the tables)", change.tools.name()));
      } else if (*now == change.before && !now->empty()) {
        state.push_back(fmt::format("{}: the previous install, unchanged", change.tools.name()));
      } else if (!now->empty()) {
        state.push_back(fmt::format("{}: {}", change.tools.name(), describe(*now)));
      }
    }
    if (v6_left) state.push_back(fmt::format("{}/128 on lo", passthroughSourceV6().toString()));
    text += state.empty() ? "; nothing is installed"
                          : fmt::format("; now installed: {}", fmt::join(state, ", "));
    return text;
  }

  std::chrono::milliseconds timeout_;
};

}  // namespace

std::unique_ptr<Applier> makeIptablesApplier(std::chrono::milliseconds command_timeout) {
  return std::make_unique<IptablesApplier>(command_timeout);
}

}  // namespace remora::intercept
