// The nftables applier: the planner's rules (iptables spelling) translated into one `inet remora`
// table, written in one libnftables transaction. Nothing is run as a process.
#include "intercept/nftables_applier.h"

#include <fmt/format.h>
#ifndef REMORA_NFT_CLI
#include <nftables/libnftables.h>
#include <nss.h>
#else
#include "common/subprocess.h"
#endif

#include <malloc.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <map>
#include <mutex>
#include <set>

#include "intercept/backend.h"
#include "intercept/loopback.h"
#include "intercept/policy_route.h"
#include "intercept/rule_spec.h"

namespace remora::intercept {
namespace {

// libnftables' error for a table or chain that is not there (ENOENT).
constexpr std::string_view kNoSuchObject = "No such file or directory";

const char* suffix(Family f) { return f == Family::kIpv4 ? "_v4" : "_v6"; }
const char* nfproto(Family f) { return f == Family::kIpv4 ? "ipv4" : "ipv6"; }
const char* addressFamily(Family f) { return f == Family::kIpv4 ? "ip" : "ip6"; }

// One chain of the table: base chains carry their hook declaration.
struct NftChain {
  std::string name;
  std::string hook;  // "type nat hook output priority -100; policy accept;" or "" for user chains
  std::vector<std::string> rules;
};

// The table's chains in declaration order; the base chains first.
struct NftRuleset {
  std::vector<NftChain> chains;
  NftChain& chain(const std::string& name) {
    for (auto& c : chains) {
      if (c.name == name) return c;
    }
    chains.push_back({name, "", {}});
    return chains.back();
  }
};

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

// "eth+" (iptables' prefix wildcard) is "eth*" in nft.
std::string interfaceName(const std::string& name) {
  if (!name.empty() && name.back() == '+') return quoted(name.substr(0, name.size() - 1) + "*");
  return quoted(name);
}

std::string op(bool negated) { return negated ? " != " : " "; }

// The translation writes each rule the way libnftables lists it back (nft 1.0.6), so install
// can compare the installed table with the plan rule by rule (readInstalled, differences).

// An address or network as nft lists it: a host without its full-length prefix ("127.0.0.6",
// not "127.0.0.6/32"), IPv6 compressed ("fd00::/8").
std::string address(const std::string& text) {
  auto cidr = Cidr::parse(text);
  if (!cidr) return text;
  const int full = cidr->address.family == Family::kIpv4 ? 32 : 128;
  return cidr->prefix == full ? cidr->address.toString() : cidr->toString();
}

// A mark as nft lists it: eight hex digits ("0x00000539").
Result<std::string> mark(const std::string& text) {
  const std::string value = text.substr(0, text.find('/'));
  uint32_t number = 0;
  const bool hex = value.starts_with("0x") || value.starts_with("0X");
  const char* begin = value.data() + (hex ? 2 : 0);
  auto [end, ec] = std::from_chars(begin, value.data() + value.size(), number, hex ? 16 : 10);
  if (ec != std::errc() || end != value.data() + value.size() || begin == end) {
    return makeError(fmt::format("mark '{}' is not a number", text));
  }
  return fmt::format("0x{:08x}", number);
}

// `--ctstate RELATED,ESTABLISHED` as nft lists it: lower case, in nft's bit order.
Result<std::string> ctState(const std::string& text) {
  constexpr std::array<std::string_view, 5> kOrder = {"invalid", "established", "related", "new",
                                                      "untracked"};
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::vector<bool> wanted(kOrder.size(), false);
  size_t start = 0;
  while (start <= lower.size()) {
    size_t end = std::min(lower.find(',', start), lower.size());
    auto word = std::string_view(lower).substr(start, end - start);
    auto at = std::find(kOrder.begin(), kOrder.end(), word);
    if (at == kOrder.end()) return makeError(fmt::format("unknown --ctstate '{}'", text));
    wanted[static_cast<size_t>(at - kOrder.begin())] = true;
    start = end + 1;
  }
  std::string out;
  for (size_t i = 0; i < kOrder.size(); ++i) {
    if (wanted[i]) out += (out.empty() ? "" : ",") + std::string(kOrder[i]);
  }
  return out;
}

// The nft statement of one planned rule; Remora's chains get the family's suffix.
Result<std::string> translate(const PlannedRule& rule, Family family) {
  auto spec = parseRuleSpec(rule.args);
  if (!spec) return spec.error();
  std::vector<std::string> parts;
  const std::string af = addressFamily(family);
  if (spec->in_interface) {
    parts.push_back("iifname" + op(spec->in_interface->negated) +
                    interfaceName(spec->in_interface->value));
  }
  if (spec->out_interface) {
    parts.push_back("oifname" + op(spec->out_interface->negated) +
                    interfaceName(spec->out_interface->value));
  }
  if (spec->source) {
    parts.push_back(af + " saddr" + op(spec->source->negated) + address(spec->source->value));
  }
  if (spec->destination) {
    parts.push_back(af + " daddr" + op(spec->destination->negated) +
                    address(spec->destination->value));
  }
  // `tcp dport` implies `meta l4proto tcp`, and nft lists the rule without it.
  const RuleModule* tcp = spec->module("tcp");
  const bool implied = tcp != nullptr && !tcp->options.empty() && spec->protocol &&
                       !spec->protocol->negated && spec->protocol->value == "tcp";
  if (spec->protocol && !implied) {
    parts.push_back("meta l4proto" + op(spec->protocol->negated) + spec->protocol->value);
  }
  for (const auto& module : spec->modules) {
    for (const auto& option : module.options) {
      std::string value = option.value();
      if (module.name == "tcp" && option.name == "--dport") {
        std::replace(value.begin(), value.end(), ':', '-');
        parts.push_back("tcp dport" + op(option.negated) + value);
      } else if (module.name == "owner" && option.name == "--uid-owner") {
        parts.push_back("meta skuid" + op(option.negated) + value);
      } else if (module.name == "owner" && option.name == "--gid-owner") {
        parts.push_back("meta skgid" + op(option.negated) + value);
      } else if ((module.name == "mark" || module.name == "connmark") && option.name == "--mark") {
        auto m = mark(value);
        if (!m) return m.error();
        parts.push_back((module.name == "mark" ? "meta mark" : "ct mark") + op(option.negated) +
                        *m);
      } else if (module.name == "conntrack" && option.name == "--ctstate") {
        auto state = ctState(value);
        if (!state) return state.error();
        parts.push_back("ct state" + op(option.negated) + *state);
      } else {
        return makeError(fmt::format("no nftables form for '-m {} {}' in '{}'", module.name,
                                     option.name, rule.toString()));
      }
    }
  }
  if (spec->target == "RETURN") {
    parts.emplace_back("return");
  } else if (spec->target == "DROP") {
    parts.emplace_back("drop");
  } else if (spec->target == "ACCEPT") {
    parts.emplace_back("accept");
  } else if (spec->target == "MARK" && spec->targetOption("--set-xmark") != nullptr) {
    // The planner sets whole marks ("0x539/0xffffffff").
    auto m = mark(spec->targetOption("--set-xmark")->value());
    if (!m) return m.error();
    parts.push_back("meta mark set " + *m);
  } else if (spec->target == "CONNMARK" && spec->targetOption("--save-mark") != nullptr) {
    parts.emplace_back("ct mark set meta mark");
  } else if (spec->target == "CONNMARK" && spec->targetOption("--restore-mark") != nullptr) {
    parts.emplace_back("meta mark set ct mark");
  } else if (spec->target == "TPROXY") {
    const auto* port = spec->targetOption("--on-port");
    const auto* tproxy_mark = spec->targetOption("--tproxy-mark");
    if (port == nullptr || tproxy_mark == nullptr) {
      return makeError(
          fmt::format("TPROXY without --on-port or --tproxy-mark: {}", rule.toString()));
    }
    auto m = mark(tproxy_mark->value());
    if (!m) return m.error();
    parts.push_back(fmt::format("tproxy {} to :{} meta mark set {} accept", af, port->value(), *m));
    // iptables' TPROXY drops a packet it finds no socket for; nft's statement lets it go on.
    // The second line is a rule of its own, so a proxy that is down never lets the app be
    // reached uncaptured.
    parts.emplace_back("\nmeta l4proto tcp drop");
  } else if (spec->target == "REDIRECT") {
    const auto* to = spec->targetOption("--to-ports");
    if (to == nullptr)
      return makeError(fmt::format("REDIRECT without --to-ports: {}", rule.toString()));
    parts.push_back("redirect to :" + to->value());
  } else if (spec->target.starts_with(kChainPrefix)) {
    parts.push_back(std::string(spec->jump == JumpKind::kGoto ? "goto " : "jump ") + spec->target +
                    suffix(family));
  } else {
    return makeError(fmt::format("no nftables form for target '{}'", spec->target));
  }
  std::string text;
  for (const auto& p : parts) text += (text.empty() ? "" : " ") + p;
  return text;
}

// Built-in iptables chains of each planned table, as base chains of the inet table. Priorities
// are iptables': nat at dstnat (-100), mangle at -150.
struct BaseChain {
  const char* table;
  const char* builtin;
  const char* name;
  const char* hook;
};
constexpr BaseChain kBaseChains[] = {
    {"mangle", "PREROUTING", "mangle_prerouting",
     "type filter hook prerouting priority mangle; policy accept;"},
    {"nat", "PREROUTING", "nat_prerouting",
     "type nat hook prerouting priority dstnat; policy accept;"},
    {"nat", "OUTPUT", "nat_output", "type nat hook output priority -100; policy accept;"},
    // TPROXY mode only (left out when empty): a route chain, so a mark set here re-routes.
    {"mangle", "OUTPUT", "mangle_output", "type route hook output priority mangle; policy accept;"},
};

Result<NftRuleset> buildRuleset(const std::vector<FamilyPlan>& plans) {
  NftRuleset set;
  for (const auto& base : kBaseChains) set.chains.push_back({base.name, base.hook, {}});
  for (const auto& plan : plans) {
    for (const auto& [table, chains, rules] :
         {std::tuple{"nat", &plan.chains, &plan.rules},
          std::tuple{"mangle", &plan.mangle_chains, &plan.mangle_rules}}) {
      for (const auto& c : *chains) set.chain(c + suffix(plan.family));
      for (const auto& rule : *rules) {
        auto text = translate(rule, plan.family);
        if (!text) return text.error();
        const BaseChain* base = nullptr;
        for (const auto& b : kBaseChains) {
          if (std::string_view(b.table) == table && rule.chain == b.builtin) base = &b;
        }
        if (base != nullptr) {
          // An address match implies the family, and nft lists the rule without the nfproto.
          const std::string af = addressFamily(plan.family);
          const bool implied = text->find(af + " saddr ") != std::string::npos ||
                               text->find(af + " daddr ") != std::string::npos;
          set.chain(base->name)
              .rules.push_back(
                  implied ? *text : fmt::format("meta nfproto {} {}", nfproto(plan.family), *text));
        } else {
          // A translation may be more than one nft rule, one per line.
          auto& chain = set.chain(rule.chain + suffix(plan.family)).rules;
          size_t start = 0;
          while (start <= text->size()) {
            size_t end = text->find(" \n", start);
            if (end == std::string::npos) end = text->size();
            chain.push_back(text->substr(start, end - start));
            start = end + 2;
          }
        }
      }
    }
  }
  std::erase_if(set.chains,
                [](const NftChain& c) { return c.name == "mangle_output" && c.rules.empty(); });
  return set;
}

// How the script puts the table in place, in one transaction either way.
enum class TableWrite {
  // `add table; delete table; table { ... }`: replaces whatever is there.
  kReplace,
  // `create table { comment }; table { ... }`: only where there is no table (the transaction
  // fails on EEXIST and changes nothing). A transaction that deletes nothing leaves the kernel
  // nothing to free after an RCU grace period, so closing the netlink socket does not wait for
  // one (nf_tables flushes its pending destroy work on NETLINK_URELEASE): 5-14 ms saved per
  // fresh install on this machine. `create table { ... }` keeps only the table's own
  // attributes, so the chains follow in a second block.
  kCreate,
};

std::string renderRuleset(const NftRuleset& set, const std::string& fingerprint,
                          TableWrite write = TableWrite::kReplace) {
  const std::string comment =
      fingerprint.empty() ? "" : fmt::format("comment \"remora {}\"", fingerprint);
  std::string text;
  if (write == TableWrite::kCreate) {
    text = fmt::format("create table inet {} {{ {}{}}}\ntable inet {} {{\n", kNftTable, comment,
                       comment.empty() ? "" : "; ", kNftTable);
  } else {
    text = fmt::format("add table inet {0}\ndelete table inet {0}\ntable inet {0} {{\n", kNftTable);
    if (!comment.empty()) text += "  " + comment + "\n";
  }
  for (const auto& c : set.chains) {
    text += fmt::format("  chain {} {{\n", c.name);
    if (!c.hook.empty()) text += "    " + c.hook + "\n";
    for (const auto& r : c.rules) text += "    " + r + "\n";
    text += "  }\n";
  }
  text += "}\n";
  return text;
}

// One chain as libnftables lists it: its declaration lines (a base chain's "type ... policy
// accept;") and its rules, each one line.
struct NftListedChain {
  std::vector<std::string> declaration;
  std::vector<std::string> rules;
};

// What is installed, read from the text listing of the table (`list table inet remora`).
struct NftInstalled {
  bool exists = false;
  std::string comment;
  std::map<std::string, NftListedChain> chains;
  std::vector<std::string> other;  // table lines that are neither a chain nor the comment
};

// Parses libnftables' text listing of one table: one item per line, indented by tabs (depth 1
// for the table's chains, sets and comment, depth 2 for a chain's declaration and rules). A
// "# handle N" ending (an `-a` listing) is dropped.
NftInstalled parseListing(const std::string& listing) {
  NftInstalled out;
  out.exists = true;
  NftListedChain* chain = nullptr;
  bool in_other = false;  // inside a table item that is not a chain (a set, a map, ...)
  size_t start = 0;
  while (start < listing.size()) {
    size_t end = listing.find('\n', start);
    if (end == std::string::npos) end = listing.size();
    std::string_view line(listing.data() + start, end - start);
    start = end + 1;
    size_t depth = 0;
    while (depth < line.size() && line[depth] == '\t') ++depth;
    line.remove_prefix(depth);
    if (auto handle = line.find(" # handle "); handle != std::string_view::npos) {
      line = line.substr(0, handle);
    }
    if (line.empty() || depth == 0) continue;  // "table inet remora {", "}", blank lines
    if (depth == 1) {
      chain = nullptr;
      in_other = false;
      if (line == "}") continue;
      if (line.starts_with("chain ") && line.ends_with(" {")) {
        chain = &out.chains[std::string(line.substr(6, line.size() - 8))];
      } else if (line.starts_with("comment \"") && line.size() >= 10 && line.back() == '"') {
        out.comment = std::string(line.substr(9, line.size() - 10));
      } else {
        out.other.emplace_back(line);
        in_other = line.ends_with("{");
      }
      continue;
    }
    if (chain == nullptr) {
      if (!in_other) out.other.emplace_back(line);
      continue;
    }
    if (depth > 2 && !chain->rules.empty()) {
      chain->rules.back() += " " + std::string(line);  // a rule continued on the next line
    } else if (chain->rules.empty() &&
               (line.starts_with("type ") || line.starts_with("policy ") ||
                line.starts_with("comment ") || line.starts_with("flags ") ||
                line.starts_with("devices "))) {
      chain->declaration.emplace_back(line);
    } else {
      chain->rules.emplace_back(line);
    }
  }
  return out;
}

Result<NftInstalled> readInstalled(NftContext& nft) {
  auto text = listNftTable(nft, fmt::format("inet {}", kNftTable));
  if (!text) return text.error();
  if (!*text) return NftInstalled{};
  return parseListing(**text);
}

// A chain's installed rules against the planned ones. The common beginning and end are the
// same; what lies between is reported: rules installed that the plan does not have, and planned
// rules missing, each with its position (1-based) and text.
void ruleDifferences(const std::string& chain, const std::vector<std::string>& installed,
                     const std::vector<std::string>& planned, std::vector<std::string>& diffs) {
  size_t head = 0;
  while (head < installed.size() && head < planned.size() && installed[head] == planned[head]) {
    ++head;
  }
  size_t tail = 0;
  while (tail < installed.size() - head && tail < planned.size() - head &&
         installed[installed.size() - 1 - tail] == planned[planned.size() - 1 - tail]) {
    ++tail;
  }
  for (size_t i = head; i < installed.size() - tail; ++i) {
    diffs.push_back(
        fmt::format("chain {} rule #{} '{}' is not in the plan", chain, i + 1, installed[i]));
  }
  for (size_t i = head; i < planned.size() - tail; ++i) {
    diffs.push_back(fmt::format("chain {} lacks planned rule #{} '{}'", chain, i + 1, planned[i]));
  }
}

std::vector<std::string> differences(const NftInstalled& installed, const NftRuleset& planned,
                                     const std::string& fingerprint) {
  std::vector<std::string> diffs;
  if (!installed.exists) return {fmt::format("table inet {} is not installed", kNftTable)};
  if (installed.comment != "remora " + fingerprint) {
    diffs.push_back(fmt::format("table comment is '{}', expected 'remora {}' (another plan)",
                                installed.comment, fingerprint));
  }
  for (const auto& line : installed.other) {
    diffs.push_back(fmt::format("table inet {} has '{}', not in the plan", kNftTable, line));
  }
  std::set<std::string> planned_names;
  for (const auto& c : planned.chains) {
    planned_names.insert(c.name);
    auto it = installed.chains.find(c.name);
    if (it == installed.chains.end()) {
      diffs.push_back(fmt::format("chain {} is missing", c.name));
      continue;
    }
    const std::string declared = fmt::format("{}", fmt::join(it->second.declaration, " "));
    if (declared != c.hook) {
      diffs.push_back(
          fmt::format("chain {} is declared '{}', expected '{}'", c.name, declared, c.hook));
    }
    ruleDifferences(c.name, it->second.rules, c.rules, diffs);
  }
  for (const auto& [name, chain] : installed.chains) {
    if (!planned_names.contains(name)) diffs.push_back(fmt::format("unexpected chain {}", name));
  }
  return diffs;
}

// Remora's iptables-mode footprint may be in this netns: REMORA_ chains in iptables-nft's
// ip/ip6 nat or mangle tables, or any legacy nat/mangle table (cheap /proc read).
bool iptablesInstallMayExist(NftContext& nft) {
  for (auto family : {Family::kIpv4, Family::kIpv6}) {
    if (legacyTableExists(family, "nat") || legacyTableExists(family, "mangle")) return true;
  }
  for (const char* table : {"ip nat", "ip mangle", "ip6 nat", "ip6 mangle"}) {
    auto text = listNftTable(nft, table);
    if (!text) return true;  // cannot tell: let the iptables applier look
    if (*text && (*text)->find(fmt::format("chain {}", kChainPrefix)) != std::string::npos) {
      return true;
    }
  }
  return false;
}

class NftablesApplier : public Applier {
 public:
  explicit NftablesApplier(std::chrono::milliseconds timeout) : timeout_(timeout) {}
  std::string name() const override { return "nftables"; }

  Result<ApplyReport> install(const InterceptOptions& options) override {
    auto prepared = prepare(options);
    if (!prepared) return prepared.error();
    ApplyReport report;
    report.backend = "nftables";
    bool added_v6 = false;
    if (prepared->v6) {
      // The proxy's IPv6 inbound passthrough source must be a local address (see loopback.h).
      auto added = addLoopbackAddress(passthroughSourceV6());
      if (!added) return added.error();
      added_v6 = *added;
    }
    // TPROXY mode's policy routing first (harmless without the marking rules); a failure
    // after it takes out what this call added.
    RoutesAdded routes;
    auto addRoutes = [&]() -> Result<void> {
      for (const auto& plan : prepared->plans) {
        if (!plan.policy_route) continue;
        auto added = addPolicyRoute(plan.family, *plan.policy_route);
        if (!added) return makeError(added.error().message + removeRoutes(routes));
        if (added->any()) {
          routes.emplace_back(plan.family, *added);
          report.changed = true;
          report.lines.push_back("nftables: added " + plan.policy_route->toString(plan.family));
        }
      }
      return {};
    };
    auto routed = addRoutes();
    if (!routed) {
      if (added_v6) (void)removeLoopbackAddress(passthroughSourceV6());
      return routed.error();
    }
    if (prepared->needed) {
      auto done = nft_.run(prepared->script);
      if (!done && !prepared->existed) {
        // The table appeared since it was read (another installer): replace it instead.
        done = nft_.run(prepared->replace_script);
      }
      if (!done) {
        std::string text = fmt::format("nftables transaction failed, nothing was applied: {}",
                                       done.error().message);
        if (added_v6) {
          auto gone = removeLoopbackAddress(passthroughSourceV6());
          text += gone ? "; removed ::6/128 from lo" : "; REMOVING ::6/128 FROM lo FAILED";
        }
        return makeError(text + removeRoutes(routes));
      }
      report.changed = true;
      if (prepared->existed) {
        // Say why an existing table was replaced (the first differences; check lists them all).
        constexpr size_t kShown = 3;
        const auto& diffs = prepared->diffs;
        const size_t shown = std::min(diffs.size(), kShown);
        report.lines.push_back(fmt::format(
            "nftables: table inet {} differs from the plan: {}{}", kNftTable,
            fmt::join(diffs.begin(), diffs.begin() + static_cast<std::ptrdiff_t>(shown), "; "),
            diffs.size() > shown ? fmt::format(" (and {} more)", diffs.size() - shown) : ""));
      }
      size_t rules = 0;
      for (const auto& c : prepared->ruleset.chains) rules += c.rules.size();
      report.lines.push_back(
          fmt::format("nftables: installed table inet {} ({} rules in {} chains)", kNftTable, rules,
                      prepared->ruleset.chains.size()));
    } else {
      report.lines.push_back(
          fmt::format("nftables: table inet {} already installed, nothing changed", kNftTable));
    }
    // An earlier iptables-mode install would capture a second time; remove it.
    if (iptablesInstallMayExist(nft_)) {
      auto removed = makeIptablesApplier(timeout_)->uninstall();
      if (!removed) {
        return makeError(fmt::format(
            "installed table inet {}, but removing an earlier iptables install failed: {}",
            kNftTable, removed.error().message));
      }
      if (removed->changed) {
        report.changed = true;
        for (const auto& line : removed->lines) {
          report.lines.push_back("removed an earlier install: " + line);
        }
        // The iptables uninstall took ::6 off lo with its IPv6 rules, and any TPROXY policy
        // routing; this plan needs them.
        if (prepared->v6) {
          auto added = addLoopbackAddress(passthroughSourceV6());
          if (!added) return added.error();
        }
        routes.clear();
        auto rerouted = addRoutes();
        if (!rerouted) return rerouted.error();
      }
    }
    // REDIRECT mode after a TPROXY install: its policy routing goes with its rules.
    for (const auto& plan : prepared->plans) {
      if (plan.policy_route) continue;
      auto removed = removePolicyRoute(plan.family, PolicyRoute{});
      if (removed && removed->any()) {
        report.changed = true;
        report.lines.emplace_back(
            "nftables: removed the TPROXY policy route of an earlier install");
      }
    }
    return report;
  }

  Result<std::string> dryRun(const InterceptOptions& options) override {
    auto prepared = prepare(options);
    if (!prepared) return prepared.error();
    std::string text = fmt::format("# nftables (libnftables, one transaction){}\n",
                                   prepared->needed ? ""
                                                    : " (already installed: install would "
                                                      "change nothing)");
    text += prepared->script;
    if (prepared->v6) {
      text += fmt::format("# and {}/128 is added to lo (the IPv6 inbound passthrough source)\n",
                          passthroughSourceV6().toString());
    }
    for (const auto& plan : prepared->plans) {
      if (plan.policy_route) {
        text += "# and the TPROXY policy route: " + plan.policy_route->toString(plan.family) + "\n";
      }
    }
    return text;
  }

  Result<ApplyReport> uninstall() override {
    ApplyReport report;
    report.backend = "nftables";
    auto removed = removeNftablesTable(nft_);
    if (!removed) return removed.error();
    if (*removed) {
      report.changed = true;
      report.lines.push_back(fmt::format("nftables: deleted table inet {}", kNftTable));
      auto gone = removeLoopbackAddress(passthroughSourceV6());
      if (!gone) return gone.error();
    }
    auto routes = uninstallPolicyRoutes(report);
    if (!routes) return routes.error();
    if (!report.changed) report.lines.emplace_back("nftables: nothing installed; nothing changed");
    return report;
  }

  Result<void> check(const InterceptOptions& options) override {
    auto prepared = prepare(options);
    if (!prepared) return prepared.error();
    auto diffs = prepared->diffs;
    for (const auto& plan : prepared->plans) {
      if (auto d = policyRouteDifference(plan)) diffs.push_back(*d);
    }
    if (diffs.empty()) return {};
    return makeError(fmt::format("interception rules are not as configured: nftables: {}",
                                 fmt::join(diffs, "; ")));
  }

 private:
  struct Prepared {
    std::vector<FamilyPlan> plans;
    NftRuleset ruleset;
    std::string script;          // what install runs: kCreate where there is no table
    std::string replace_script;  // the kReplace script
    std::vector<std::string> diffs;
    bool needed = true;
    bool existed = false;  // the table was there (maybe with other rules)
    bool v6 = false;
  };

  Result<Prepared> prepare(const InterceptOptions& options) {
    auto families = plannedFamilies(options);
    if (!families) return families.error();
    std::vector<FamilyPlan> plans;
    Prepared p;
    for (auto family : *families) {
      plans.push_back(planFamily(options, family));
      p.v6 = p.v6 || family == Family::kIpv6;
    }
    auto set = buildRuleset(plans);
    if (!set) return set.error();
    p.ruleset = std::move(*set);
    p.plans = std::move(plans);
    const std::string fingerprint = planFingerprint(renderRuleset(p.ruleset, ""));
    p.replace_script = renderRuleset(p.ruleset, fingerprint);
    auto installed = readInstalled(nft_);
    if (!installed) return installed.error();
    p.existed = installed->exists;
    p.script =
        p.existed ? p.replace_script : renderRuleset(p.ruleset, fingerprint, TableWrite::kCreate);
    p.diffs = differences(*installed, p.ruleset, fingerprint);
    p.needed = !p.diffs.empty();
    return p;
  }

  NftContext nft_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

#ifndef REMORA_NFT_CLI
NftContext::NftContext() : ctx_(nft_ctx_new(NFT_CTX_DEFAULT)) {
  // nft looks every `meta skuid`/`skgid` value up by name first (getpwnam/getgrnam), even a
  // number. The plan holds numbers only (group names are resolved when the options are read),
  // so those lookups can only fail; with a node's `passwd: files systemd` each one loads and asks
  // libnss_systemd, 1.3 ms of CPU per install here. This process asks /etc/passwd and
  // /etc/group only.
  static std::once_flag files_only;
  std::call_once(files_only, [] {
    (void)__nss_configure_lookup("passwd", "files");
    (void)__nss_configure_lookup("group", "files");
  });
  if (ctx_ != nullptr) {
    nft_ctx_buffer_output(ctx_);
    nft_ctx_buffer_error(ctx_);
  }
}

NftContext::~NftContext() {
  if (ctx_ != nullptr) nft_ctx_free(ctx_);
}

Result<std::string> NftContext::run(const std::string& commands, bool json, bool handles) {
  if (ctx_ == nullptr) return makeError("libnftables: cannot create a context");
  unsigned flags = nft_ctx_output_get_flags(ctx_) &
                   ~static_cast<unsigned>(NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE);
  if (json) flags |= NFT_CTX_OUTPUT_JSON;
  if (handles) flags |= NFT_CTX_OUTPUT_HANDLE;
  nft_ctx_output_set_flags(ctx_, flags);
  int rc = nft_run_cmd_from_buffer(ctx_, commands.c_str());
  std::string out = nft_ctx_get_output_buffer(ctx_);
  std::string err = nft_ctx_get_error_buffer(ctx_);
  if (rc != 0) {
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    return makeError(err.empty() ? std::string("libnftables: command failed") : err);
  }
  return out;
}
#else
// The static remora-cni: the same commands through `nft -f -` (one transaction as well).
NftContext::NftContext() : ctx_(nullptr) {}
NftContext::~NftContext() = default;

Result<std::string> NftContext::run(const std::string& commands, bool json, bool handles) {
  std::vector<std::string> argv = {"nft"};
  if (json) argv.emplace_back("-j");
  if (handles) argv.emplace_back("-a");
  argv.insert(argv.end(), {"-f", "-"});
  auto out = runCommand(argv, commands, kDefaultCommandTimeout);
  if (!out) return makeError(fmt::format("{} (install the nftables package)", out.error().message));
  if (out->exit_code != 0) {
    std::string err = out->err;
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    return makeError(fmt::format("nft failed (exit {}): {}", out->exit_code, err));
  }
  return std::move(out->out);
}
#endif

Result<std::vector<std::string>> nftTables(NftContext& nft) {
  auto text = nft.run("list tables");
  if (!text) return text.error();
  std::vector<std::string> tables;
  size_t start = 0;
  while (start < text->size()) {
    size_t end = text->find('\n', start);
    if (end == std::string::npos) end = text->size();
    std::string line = text->substr(start, end - start);
    if (line.starts_with("table ")) tables.push_back(line.substr(6));
    start = end + 1;
  }
  return tables;
}

Result<std::optional<std::string>> listNftTable(NftContext& nft, const std::string& table) {
  auto text = nft.run("list table " + table);
  if (text) return std::optional<std::string>(std::move(*text));
  if (text.error().message.find(kNoSuchObject) != std::string::npos)
    return std::optional<std::string>();
  return text.error();
}

Result<bool> removeNftablesTable(NftContext& nft) {
  // Listing first: a `delete table` of a missing table costs a cache of every table (15 ms with
  // iptables-nft's four tables present), the listing 0.5 ms.
  auto table = fmt::format("inet {}", kNftTable);
  auto listed = listNftTable(nft, table);
  if (!listed) return listed.error();
  if (!*listed) return false;
  auto done = nft.run("delete table " + table);
  if (!done) return done.error();
  return true;
}

bool nftInProcess() {
#ifdef REMORA_NFT_CLI
  return false;
#else
  return true;
#endif
}

void reuseFreedMemory() {
  constexpr int kMmapThreshold = 16 << 20;
  constexpr int kTrimThreshold = 64 << 20;
  mallopt(M_MMAP_THRESHOLD, kMmapThreshold);
  mallopt(M_TRIM_THRESHOLD, kTrimThreshold);
}

std::string planFingerprint(const std::string& text) {
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return fmt::format("{:016x}", hash);
}

Result<std::string> renderNftables(const std::vector<FamilyPlan>& plans,
                                   const std::string& fingerprint) {
  auto set = buildRuleset(plans);
  if (!set) return set.error();
  return renderRuleset(*set, fingerprint);
}

Result<std::vector<std::string>> nftDifferences(const std::optional<std::string>& listing,
                                                const std::vector<FamilyPlan>& plans) {
  auto set = buildRuleset(plans);
  if (!set) return set.error();
  return differences(listing ? parseListing(*listing) : NftInstalled{}, *set,
                     planFingerprint(renderRuleset(*set, "")));
}

std::unique_ptr<Applier> makeNftablesApplier(std::chrono::milliseconds command_timeout) {
  return std::make_unique<NftablesApplier>(command_timeout);
}

}  // namespace remora::intercept
