#include "intercept/dump.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "common/subprocess.h"
#include "intercept/backend.h"
#include "intercept/plan.h"
#include "intercept/rule_spec.h"

namespace remora::intercept {
namespace {

constexpr const char* kBuiltinChains[] = {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"};

bool isRemoraChain(std::string_view name) { return name.starts_with(kChainPrefix); }

bool isBuiltin(std::string_view name) {
  return std::find(std::begin(kBuiltinChains), std::end(kBuiltinChains), name) !=
         std::end(kBuiltinChains);
}

bool isLoopbackHost(const std::string& value) {
  auto net = parseAddressMask(value);
  if (!net || !net->isHost()) return false;
  return net->address == *IpAddress::parse("127.0.0.1") || net->address == *IpAddress::parse("::1");
}

std::string withoutHostPrefix(const std::string& value) {
  auto net = parseAddressMask(value);
  if (net && net->isHost()) return net->address.toString();
  return value;
}

std::string ports(const std::string& value) {
  std::string s = value;
  std::replace(s.begin(), s.end(), ':', '-');
  return s;
}

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
  return s;
}

// The conditions of a rule in words, in the order iptables evaluates them.
struct Conditions {
  std::vector<std::string> words;
  std::string comment;
  // Remora's shapes are recognised from these.
  bool tcp = false;                 // -p tcp, not negated
  std::optional<RuleOption> owner;  // the single --uid-owner/--gid-owner, if any
  bool has_port = false;
};

Conditions conditionsOf(const RuleSpec& spec, bool in_remora_chain) {
  Conditions c;
  const std::string proto = spec.protocol ? spec.protocol->value : "";
  const std::string proto_word = proto.empty() ? "" : upper(proto);
  if (spec.source) {
    c.words.push_back(
        fmt::format("source {}{}", spec.source->negated ? "other than " : "", spec.source->value));
  }
  if (spec.destination) {
    c.words.push_back(fmt::format("destination {}{}",
                                  spec.destination->negated ? "other than " : "",
                                  spec.destination->value));
  }
  if (spec.in_interface) {
    c.words.push_back(fmt::format("{}arriving on {}", spec.in_interface->negated ? "not " : "",
                                  spec.in_interface->value));
  }
  if (spec.out_interface) {
    c.words.push_back(fmt::format("{}leaving on {}", spec.out_interface->negated ? "not " : "",
                                  spec.out_interface->value));
  }
  std::vector<std::string> module_words;
  for (const auto& m : spec.modules) {
    for (const auto& o : m.options) {
      const char* no = o.negated ? "not " : "";
      if (m.name == "comment" && o.name == "--comment") {
        c.comment = o.value();
      } else if ((m.name == "tcp" || m.name == "udp") &&
                 (o.name == "--dport" || o.name == "--destination-port")) {
        bool range = o.value().find(':') != std::string::npos;
        module_words.push_back(
            fmt::format("{} port{} {}{}", m.name, range ? "s" : "", no, ports(o.value())));
        c.has_port = true;
      } else if ((m.name == "tcp" || m.name == "udp") &&
                 (o.name == "--sport" || o.name == "--source-port")) {
        module_words.push_back(fmt::format("{} source port {}{}", m.name, no, ports(o.value())));
        c.has_port = true;
      } else if (m.name == "multiport") {
        bool src = o.name == "--sports" || o.name == "--source-ports";
        bool any = o.name == "--ports";
        module_words.push_back(fmt::format("{}{}ports {}{}", proto.empty() ? "" : proto + " ",
                                           src   ? "source "
                                           : any ? "source or destination "
                                                 : "",
                                           no, ports(o.value())));
        c.has_port = true;
      } else if (m.name == "owner" && (o.name == "--uid-owner" || o.name == "--gid-owner")) {
        module_words.push_back(
            fmt::format("{}{} {}", no, o.name == "--uid-owner" ? "uid" : "gid", o.value()));
        c.owner = o;
      } else if ((m.name == "mark" || m.name == "connmark") && o.name == "--mark") {
        module_words.push_back(
            fmt::format("{}mark {}{}", m.name == "connmark" ? "connection " : "", no, o.value()));
      } else if (m.name == "conntrack" && o.name == "--ctstate") {
        module_words.push_back(fmt::format("conntrack state {}{}", no, o.value()));
      } else if (m.name == "addrtype" && (o.name == "--dst-type" || o.name == "--src-type")) {
        module_words.push_back(fmt::format(
            "{} type {}{}", o.name == "--dst-type" ? "destination" : "source", no, o.value()));
      } else if (m.name == "statistic" && o.name == "--probability") {
        char* end = nullptr;
        double p = std::strtod(o.value().c_str(), &end);
        module_words.push_back(fmt::format("{}at random ({:.2f}%)", no, p * 100.0));
      } else if (m.name == "statistic" && o.name == "--mode" && o.value() == "random") {
        // Said by --probability.
      } else {
        std::vector<std::string> words{"-m", m.name};
        if (o.negated) words.emplace_back("!");
        words.push_back(o.name);
        words.insert(words.end(), o.values.begin(), o.values.end());
        module_words.push_back(joinArgs(words));
      }
    }
  }
  c.tcp = spec.protocol && !spec.protocol->negated && proto == "tcp";
  // Everything entering Remora's chains is TCP already, and a port phrase names the protocol.
  const bool implied =
      (c.tcp && in_remora_chain) || (spec.protocol && !spec.protocol->negated && c.has_port);
  if (spec.protocol && !implied) {
    c.words.push_back(spec.protocol->negated ? "not " + proto_word : proto_word);
  }
  if (spec.fragment) c.words.emplace_back(*spec.fragment ? "fragments" : "not fragments");
  c.words.insert(c.words.end(), module_words.begin(), module_words.end());
  return c;
}

std::string action(const std::string& chain, const RuleSpec& spec) {
  const std::string& t = spec.target;
  if (spec.jump == JumpKind::kNone) return "counted only";
  if (spec.jump == JumpKind::kGoto) return "go to " + t;
  if (t == "RETURN") return isRemoraChain(chain) ? "not captured" : "return";
  if (t == kRedirectChain) return fmt::format("redirect to the proxy ({})", t);
  if (t == kInRedirectChain) return fmt::format("redirect to the proxy's inbound side ({})", t);
  if (t == kTproxyChain) return fmt::format("hand to the proxy's transparent listener ({})", t);
  if (t == kDivertChain) return fmt::format("deliver to the proxy's socket ({})", t);
  if (t == "TPROXY") {
    const auto* port = spec.targetOption("--on-port");
    const auto* mark = spec.targetOption("--tproxy-mark");
    return fmt::format("TPROXY to local port {}, destination kept{}", port ? port->value() : "?",
                       mark ? ", mark " + mark->value() : "");
  }
  if (t == "REDIRECT") {
    const auto* to = spec.targetOption("--to-ports");
    return to ? fmt::format("redirect to local port {}", ports(to->value()))
              : "redirect to the same port on the local host";
  }
  if (t == "DNAT") {
    const auto* to = spec.targetOption("--to-destination");
    return to ? "DNAT to " + to->value() : "DNAT";
  }
  if (t == "ACCEPT") return "accepted (no translation)";
  if (t == "DROP") return "dropped";
  if (t == "MASQUERADE") return "masqueraded";
  if (t == "LOG" || t == "NFLOG") return "logged";
  if (t == "MARK" && !spec.target_options.empty()) {
    return fmt::format("mark {} {}", spec.target_options[0].name.substr(2),
                       spec.target_options[0].value());
  }
  static const char* const kExtensions[] = {"SNAT",  "NETMAP", "REJECT", "CONNMARK", "CT",
                                            "TRACE", "AUDIT",  "ULOG",   "CLASSIFY"};
  if (std::find(std::begin(kExtensions), std::end(kExtensions), t) != std::end(kExtensions)) {
    std::vector<std::string> words{t};
    for (const auto& o : spec.target_options) {
      words.push_back(o.name);
      words.insert(words.end(), o.values.begin(), o.values.end());
    }
    return joinArgs(words);
  }
  return "jump to " + t;
}

// Remora's own rule shapes (plan.cc), said the way a user thinks about them.
std::optional<std::string> remoraShape(const std::string& chain, const RuleSpec& spec,
                                       const Conditions& c) {
  const std::string& t = spec.target;
  const bool only_tcp = c.tcp && !spec.source && !spec.destination && !spec.in_interface &&
                        !spec.out_interface && !spec.fragment && spec.modules.empty();
  // nat's REMORA_OUTPUT and REMORA_INBOUND, and mangle's chains in TPROXY and --drop-invalid.
  if (chain == "OUTPUT" && isRemoraChain(t) && only_tcp) {
    return fmt::format("all TCP leaving the pod enters {}", t);
  }
  if (chain == "PREROUTING" && isRemoraChain(t) && only_tcp) {
    return fmt::format("all TCP arriving at the pod enters {}", t);
  }
  if (t == "REDIRECT" && (chain == kRedirectChain || chain == kInRedirectChain) && only_tcp) {
    if (const auto* to = spec.targetOption("--to-ports")) {
      return fmt::format("redirect to local port {} (the proxy's {} listener)", to->value(),
                         chain == kRedirectChain ? "outbound" : "inbound");
    }
  }
  if (t == "TPROXY" && chain == kTproxyChain && only_tcp) {
    return fmt::format("{} (the proxy's transparent inbound listener)", action(chain, spec));
  }
  // TPROXY mode: the proxy's connection to the app carries the mark; conntrack keeps it so the
  // app's replies are routed back to the proxy's socket.
  if (t == "CONNMARK" && chain == kTproxyOutputChain && c.words.size() == 1) {
    if (spec.targetOption("--save-mark") != nullptr) {
      return fmt::format("{} (the proxy's connection to the app): saved on the connection",
                         c.words[0]);
    }
    if (spec.targetOption("--restore-mark") != nullptr) {
      return fmt::format("{}: restored on the packet, so the app's replies return to the proxy",
                         c.words[0]);
    }
  }
  if (!isRemoraChain(chain)) return std::nullopt;
  const bool lo =
      spec.out_interface && !spec.out_interface->negated && spec.out_interface->value == "lo";
  const std::string who =
      c.owner
          ? fmt::format("{} {}", c.owner->name == "--uid-owner" ? "uid" : "gid", c.owner->value())
          : "";
  const size_t n = c.words.size();
  if (t == "RETURN") {
    if (spec.source && !spec.source->negated && lo && n == 2) {
      return fmt::format("inbound passthrough source {} on lo: not captured",
                         withoutHostPrefix(spec.source->value));
    }
    if (lo && c.owner && c.owner->negated && n == 2) {
      return fmt::format("app traffic on loopback (not {}): not captured", who);
    }
    if (c.owner && !c.owner->negated && n == 1) {
      return fmt::format("proxy's own traffic ({}): not captured", who);
    }
    if (spec.destination && !spec.destination->negated && n == 1 &&
        isLoopbackHost(spec.destination->value)) {
      return fmt::format("to {}: not captured", spec.destination->value);
    }
    if (n == 1) return fmt::format("{} excluded: not captured", c.words[0]);
  }
  if (t == kInRedirectChain && chain == kOutputChain && lo && c.owner && !c.owner->negated &&
      spec.destination && spec.destination->negated && isLoopbackHost(spec.destination->value) &&
      n == 3) {
    return fmt::format(
        "proxy to a local non-loopback address ({}): back through the inbound "
        "redirect",
        who);
  }
  if ((t == kRedirectChain || t == kInRedirectChain) && n == 0) {
    return fmt::format("everything else: redirect to the proxy ({})", t);
  }
  return std::nullopt;
}

std::string describe(const std::string& chain, const RuleSpec& spec, bool last) {
  Conditions c = conditionsOf(spec, isRemoraChain(chain));
  if (auto shape = remoraShape(chain, spec, c)) return *shape;
  std::string what = c.words.empty() ? (last ? "everything else" : "everything")
                                     : fmt::format("{}", fmt::join(c.words, ", "));
  std::string text = fmt::format("{}: {}", what, action(chain, spec));
  if (!c.comment.empty()) text += fmt::format(" (\"{}\")", c.comment);
  return text;
}

std::string familyName(Family f) { return f == Family::kIpv4 ? "IPv4" : "IPv6"; }

DumpRule dumpRule(const SavedRule& r, size_t index, bool last) {
  DumpRule d;
  d.index = index;
  d.rule = ruleBody(r.text, r.chain);
  d.description = describeRule(r.chain, r.args, last);
  d.counters = r.counters;
  return d;
}

FamilyDump buildFamily(const FamilyTables& in) {
  FamilyDump out;
  out.family = in.family;
  out.backend = in.backend;
  const SavedTable& nat = in.nat;

  // One pass: rules by chain, so huge kube-proxy tables stay linear.
  std::vector<std::string> remora_chains;
  for (const auto& c : nat.chains) {
    if (isRemoraChain(c.name)) remora_chains.push_back(c.name);
  }
  std::vector<std::vector<const SavedRule*>> remora_rules(remora_chains.size());
  std::vector<std::vector<std::pair<size_t, const SavedRule*>>> builtin_rules(4);
  std::vector<size_t> builtin_count(4, 0);
  for (const auto& r : nat.rules) {
    auto rc = std::find(remora_chains.begin(), remora_chains.end(), r.chain);
    if (rc != remora_chains.end()) {
      remora_rules[rc - remora_chains.begin()].push_back(&r);
      continue;
    }
    auto bc = std::find(std::begin(kBuiltinChains), std::end(kBuiltinChains), r.chain);
    if (bc != std::end(kBuiltinChains)) {
      size_t i = bc - std::begin(kBuiltinChains);
      builtin_rules[i].emplace_back(++builtin_count[i], &r);
    }
  }

  // Built-in chains: Remora's hooks and the foreign rules around them.
  std::vector<DumpChain> hooks(4);
  std::vector<std::vector<std::string>> hook_targets(4);  // Remora chains each built-in jumps to
  for (size_t i = 0; i < 4; ++i) {
    const std::string name = kBuiltinChains[i];
    const SavedChain* declared = nat.chain(name);
    hooks[i].name = name;
    hooks[i].builtin = true;
    hooks[i].policy = declared ? declared->policy : "ACCEPT";
    size_t first_remora = 0;
    std::vector<ForeignHook> foreign;
    for (const auto& [index, r] : builtin_rules[i]) {
      auto spec = parseRuleSpec(r->args);
      const bool remora = spec && spec->jump != JumpKind::kNone && isRemoraChain(spec->target);
      if (remora) {
        if (first_remora == 0) first_remora = index;
        auto& seen = hook_targets[i];
        // A chain jumped to twice is a leftover of an earlier install, or another tool's copy.
        if (std::find(seen.begin(), seen.end(), spec->target) != seen.end()) {
          out.warnings.push_back(
              fmt::format("{} jumps to {} more than once (again in rule #{}): "
                          "a leftover of an earlier install?",
                          name, spec->target, index));
        }
        seen.push_back(spec->target);
        hooks[i].rules.push_back(dumpRule(*r, index, index == builtin_count[i]));
        continue;
      }
      ForeignHook f;
      f.chain = name;
      f.index = index;
      f.target = spec ? spec->target : "";
      f.rule = ruleBody(r->text, r->chain);
      if (spec && spec->jump == JumpKind::kJump && nat.chain(spec->target) != nullptr) {
        f.message = fmt::format("{} also jumps to {} (not Remora's)", name, spec->target);
      } else if (spec && spec->jump == JumpKind::kGoto) {
        f.message = fmt::format("{} also goes to {} (not Remora's)", name, spec->target);
      } else {
        f.message = fmt::format("{} also has rule #{}: {} (not Remora's)", name, index,
                                describeRule(name, r->args, false));
      }
      foreign.push_back(std::move(f));
    }
    for (auto& f : foreign) {
      f.before_remora = first_remora != 0 && f.index < first_remora;
      if (f.before_remora) {
        f.message += fmt::format(
            ", rule #{} before Remora's jump: a translation there ends the "
            "nat walk before Remora sees the connection",
            f.index);
      }
      out.foreign.push_back(std::move(f));
    }
  }

  out.installed = !remora_chains.empty();
  for (const auto& h : hooks) out.installed = out.installed || !h.rules.empty();

  auto hook_of = [&](const char* builtin) -> DumpChain& {
    size_t i =
        std::find(std::begin(kBuiltinChains), std::end(kBuiltinChains), std::string_view(builtin)) -
        std::begin(kBuiltinChains);
    return hooks[i];
  };
  auto jumps_to = [&](const char* builtin, const char* target) {
    size_t i =
        std::find(std::begin(kBuiltinChains), std::end(kBuiltinChains), std::string_view(builtin)) -
        std::begin(kBuiltinChains);
    const auto& seen = hook_targets[i];
    return std::find(seen.begin(), seen.end(), target) != seen.end();
  };
  auto remora_index = [&](const std::string& name) -> std::optional<size_t> {
    auto it = std::find(remora_chains.begin(), remora_chains.end(), name);
    if (it == remora_chains.end()) return std::nullopt;
    return it - remora_chains.begin();
  };

  // Logical order: outbound hook and chains, then inbound, then anything else.
  std::vector<std::string> order = {"OUTPUT",     kOutputChain,  kRedirectChain,
                                    "PREROUTING", kInboundChain, kInRedirectChain};
  for (const auto& c : remora_chains) {
    if (std::find(order.begin(), order.end(), c) == order.end()) order.push_back(c);
  }
  order.emplace_back("INPUT");
  order.emplace_back("POSTROUTING");
  for (const auto& name : order) {
    if (isBuiltin(name)) {
      auto& h = hook_of(name.c_str());
      if (!h.rules.empty()) out.chains.push_back(h);
      continue;
    }
    auto idx = remora_index(name);
    if (!idx) continue;
    DumpChain c{name, false, std::string(1, '-'), {}};
    const auto& rules = remora_rules[*idx];
    for (size_t i = 0; i < rules.size(); ++i) {
      c.rules.push_back(dumpRule(*rules[i], i + 1, i + 1 == rules.size()));
    }
    out.chains.push_back(std::move(c));
  }

  if (!out.installed) return out;
  if (remora_index(kOutputChain) && !jumps_to("OUTPUT", kOutputChain)) {
    out.warnings.push_back(
        fmt::format("{} exists but nothing in OUTPUT jumps to it: outbound "
                    "traffic is not captured",
                    kOutputChain));
  }
  if (auto in = remora_index(kInboundChain); in && !jumps_to("PREROUTING", kInboundChain)) {
    if (remora_rules[*in].empty()) {
      out.notes.push_back(
          fmt::format("inbound capture is off (nothing in PREROUTING jumps to {})", kInboundChain));
    } else {
      out.warnings.push_back(
          fmt::format("{} has rules but nothing in PREROUTING jumps to it: "
                      "inbound traffic is not captured",
                      kInboundChain));
    }
  }
  return out;
}

std::string countersText(const std::optional<Counters>& c) {
  if (!c) return "";
  return fmt::format("  [{} packet{}, {} byte{}]", c->packets, c->packets == 1 ? "" : "s", c->bytes,
                     c->bytes == 1 ? "" : "s");
}

nlohmann::json stringsJson(const std::vector<std::string>& v) {
  return v.empty() ? nlohmann::json::array() : nlohmann::json(v);
}

}  // namespace

std::string describeRule(const std::string& chain, const std::vector<std::string>& args,
                         bool last) {
  auto spec = parseRuleSpec(args);
  if (!spec) return fmt::format("(not understood: {})", spec.error().message);
  return describe(chain, *spec, last);
}

DumpReport buildDump(const std::vector<FamilyTables>& input) {
  DumpReport report;
  for (const auto& f : input) report.families.push_back(buildFamily(f));
  return report;
}

std::string renderDump(const DumpReport& report) {
  std::string out;
  for (const auto& w : report.warnings) out += "Warning: " + w + "\n";
  for (const auto& n : report.notes) out += "Note: " + n + "\n";
  for (const auto& f : report.families) {
    if (!out.empty()) out += "\n";
    out += fmt::format("{} ({}): {}\n", familyName(f.family), f.backend,
                       f.installed ? "Remora's interception is installed"
                                   : "Remora is not installed (no REMORA_* chains or jumps in "
                                     "the nat table)");
    for (const auto& c : f.chains) {
      if (c.builtin) {
        out += fmt::format("  {} (built-in, policy {}; Remora's jumps only)\n", c.name, c.policy);
      } else {
        out += fmt::format("  {}{}\n", c.name, c.rules.empty() ? " (empty)" : "");
      }
      for (const auto& r : c.rules) {
        out += fmt::format("    #{} {}{}\n", r.index, r.description, countersText(r.counters));
        out += fmt::format("       {}\n", r.rule);
      }
    }
    if (!f.foreign.empty()) {
      out += "  Other rules on the same built-in chains:\n";
      for (const auto& h : f.foreign) out += "    " + h.message + "\n";
    }
    for (const auto& w : f.warnings) out += "  Warning: " + w + "\n";
    for (const auto& n : f.notes) out += "  Note: " + n + "\n";
  }
  if (report.nftables) out += (out.empty() ? "" : "\n") + renderNftDump(*report.nftables);
  return out;
}

void attachNftDump(DumpReport& report, NftDump nft) {
  std::vector<std::string> iptables;
  for (const auto& f : report.families) {
    if (f.installed) iptables.push_back(f.backend);
  }
  if (nft.installed && iptables.empty()) {
    report.notes.emplace_back(
        "Remora is installed in nftables mode (table inet remora, below); the iptables nat "
        "tables hold none of its chains");
  } else if (nft.installed) {
    report.warnings.push_back(
        fmt::format("Remora is installed twice: in {} and in nftables (table inet remora); the "
                    "kernel runs both",
                    fmt::join(iptables, ", ")));
  }
  report.nftables = std::move(nft);
}

nlohmann::json dumpToJson(const DumpReport& report) {
  nlohmann::json families = nlohmann::json::array();
  for (const auto& f : report.families) {
    nlohmann::json chains = nlohmann::json::array();
    for (const auto& c : f.chains) {
      nlohmann::json rules = nlohmann::json::array();
      for (const auto& r : c.rules) {
        nlohmann::json j = {{"index", r.index}, {"rule", r.rule}, {"description", r.description}};
        j["packets"] = r.counters ? nlohmann::json(r.counters->packets) : nlohmann::json(nullptr);
        j["bytes"] = r.counters ? nlohmann::json(r.counters->bytes) : nlohmann::json(nullptr);
        rules.push_back(std::move(j));
      }
      chains.push_back({{"name", c.name},
                        {"builtin", c.builtin},
                        {"policy", c.policy},
                        {"rules", std::move(rules)}});
    }
    nlohmann::json foreign = nlohmann::json::array();
    for (const auto& h : f.foreign) {
      foreign.push_back({{"chain", h.chain},
                         {"index", h.index},
                         {"target", h.target},
                         {"rule", h.rule},
                         {"before_remora", h.before_remora},
                         {"message", h.message}});
    }
    families.push_back({{"family", f.family == Family::kIpv4 ? "ipv4" : "ipv6"},
                        {"backend", f.backend},
                        {"installed", f.installed},
                        {"chains", std::move(chains)},
                        {"foreign", std::move(foreign)},
                        {"notes", stringsJson(f.notes)},
                        {"warnings", stringsJson(f.warnings)}});
  }
  nlohmann::json out = {{"families", std::move(families)},
                        {"notes", stringsJson(report.notes)},
                        {"warnings", stringsJson(report.warnings)}};
  if (report.nftables) out["nftables"] = nftDumpToJson(*report.nftables);
  return out;
}

Result<DumpReport> dumpCurrentNetns(IptablesBackend requested) {
  std::vector<FamilyTables> input;
  std::vector<std::string> notes;
  std::vector<std::string> warnings;
  for (Family family : {Family::kIpv4, Family::kIpv6}) {
    if (family == Family::kIpv6 && !ipv6Enabled()) {
      notes.emplace_back("IPv6 is disabled in this netns: only IPv4 is shown");
      continue;
    }
    auto backend = detectBackend(requested, family);
    if (!backend) {
      if (family == Family::kIpv4) return backend.error();
      notes.push_back("IPv6 is not shown: " + backend.error().message);
      continue;
    }
    auto tools = toolsFor(*backend, family);
    // All tables rather than "-t nat": with -t, iptables-legacy-save creates an empty nat table
    // in a netns that had none, and dump must not change the kernel.
    auto text = saveTable(tools, "");
    if (!text) return text.error();
    auto ruleset = parseIptablesSave(*text);
    if (!ruleset) {
      return makeError(
          fmt::format("cannot read {} output: {}", tools.save, ruleset.error().message));
    }
    FamilyTables tables{tools.name(), family, SavedTable{"nat", {}, {}}};
    if (const SavedTable* nat = ruleset->table("nat")) tables.nat = *nat;
    input.push_back(std::move(tables));

    // Rules in both backends are both in force; users rarely suspect the one they do not list.
    auto other = toolsFor(
        *backend == IptablesBackend::kLegacy ? IptablesBackend::kNft : IptablesBackend::kLegacy,
        family);
    if (!programInPath(other.save)) continue;
    auto other_text = saveTable(other, "");
    if (!other_text) continue;
    auto other_rules = parseIptablesSave(*other_text);
    const SavedTable* other_nat = other_rules ? other_rules->table("nat") : nullptr;
    if (other_nat == nullptr) continue;
    std::vector<std::string> found;
    for (const auto& c : other_nat->chains) {
      if (isRemoraChain(c.name)) found.push_back(c.name);
    }
    if (!found.empty()) {
      warnings.push_back(
          fmt::format("mixed backends: Remora's chains also exist in {} ({}), "
                      "which the kernel runs too; this dump shows {}",
                      other.name(), fmt::join(found, ", "), tools.name()));
    }
  }
  DumpReport report = buildDump(input);
  report.notes = std::move(notes);
  report.warnings = std::move(warnings);
  auto nft = readNftRuleset();
  attachNftDump(report, nft ? buildNftDump(*nft) : nftDumpUnread(nft.error().message));
  return report;
}

}  // namespace remora::intercept
