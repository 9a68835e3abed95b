#include "intercept/trace.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <pwd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "common/subprocess.h"
#include "intercept/backend.h"
#include "intercept/nftables_applier.h"
#include "intercept/plan.h"
#include "intercept/rule_spec.h"
#include "intercept/trace_nft.h"

namespace remora::intercept {
namespace {

// The kernel's own stack is deeper, but no sane ruleset nests this far; past it we stop rather
// than guess.
constexpr size_t kMaxJumpDepth = 64;
// Bounds for hostile or broken input: each random match doubles the branches.
constexpr size_t kMaxOutcomes = 4096;
constexpr size_t kMaxRuleVisits = 5'000'000;

// ---- match evaluation ----------------------------------------------------------------------

// The verdict of one rule's matches, which the kernel ANDs: one definite mismatch decides,
// whatever else could not be evaluated.
struct RuleEval {
  bool mismatch = false;
  std::string unknown;     // the first match that could not be evaluated, and why
  std::string assumption;  // a match decided by assumption (session affinity), and how
  std::string assumed;     // the same for this rule's step
  double probability = 1.0;

  void require(bool matched) {
    if (!matched) mismatch = true;
  }
  void cannot(std::string why) {
    if (unknown.empty()) unknown = std::move(why);
  }
};

std::string optionText(const RuleOption& o) {
  std::vector<std::string> words;
  if (o.negated) words.emplace_back("!");
  words.push_back(o.name);
  words.insert(words.end(), o.values.begin(), o.values.end());
  return joinArgs(words);
}

std::string moduleText(const RuleModule& m) {
  std::string text = "-m " + m.name;
  // Appended in two steps: `" " + optionText(o)` (a literal plus a temporary) inlines to a
  // string insert at 0 that GCC 12 flags at -O3 as an overlapping memcpy (a false -Wrestrict).
  for (const auto& o : m.options) {
    text += ' ';
    text += optionText(o);
  }
  return text;
}

std::string conditionText(std::string_view flag, const RuleCondition& c) {
  return fmt::format("{}{} {}", c.negated ? "! " : "", flag, c.value);
}

std::optional<int> protocolNumber(std::string_view name) {
  if (name == "all" || name == "0") return 0;
  if (name == "tcp" || name == "6") return 6;
  if (name == "udp" || name == "17") return 17;
  if (name == "icmp" || name == "1") return 1;
  if (name == "icmpv6" || name == "ipv6-icmp" || name == "58") return 58;
  if (name == "sctp" || name == "132") return 132;
  return std::nullopt;
}

std::optional<uint32_t> parseU32(std::string_view s) {
  int base = 10;
  if (s.starts_with("0x") || s.starts_with("0X")) {
    s.remove_prefix(2);
    base = 16;
  }
  uint32_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// "value[/mask]" as -m mark and MARK print it.
std::optional<std::pair<uint32_t, uint32_t>> parseValueMask(std::string_view s) {
  auto slash = s.find('/');
  auto value = parseU32(s.substr(0, slash));
  auto mask = slash == std::string_view::npos ? std::optional<uint32_t>(0xFFFFFFFFu)
                                              : parseU32(s.substr(slash + 1));
  if (!value || !mask) return std::nullopt;
  return std::pair{*value, *mask};
}

// "1337" or "1000-2000" as xt_owner prints them.
std::optional<std::pair<uint32_t, uint32_t>> parseIdRange(std::string_view s) {
  auto dash = s.find('-');
  auto first = parseU32(s.substr(0, dash));
  auto last = dash == std::string_view::npos ? first : parseU32(s.substr(dash + 1));
  if (!first || !last || s.starts_with("0x")) return std::nullopt;
  return std::pair{*first, *last};
}

// "80,8000:8080" as multiport prints it.
std::optional<std::vector<PortRange>> parsePortList(std::string_view s) {
  std::vector<PortRange> out;
  while (true) {
    auto comma = s.find(',');
    auto r = parseIptablesPortRange(s.substr(0, comma));
    if (!r) return std::nullopt;
    out.push_back(*r);
    if (comma == std::string_view::npos) return out;
    s.remove_prefix(comma + 1);
  }
}

bool anyContains(const std::vector<PortRange>& ranges, uint16_t port) {
  return std::any_of(ranges.begin(), ranges.end(),
                     [&](const PortRange& r) { return r.contains(port); });
}

// TCP flag bits as iptables names them; the first packet of a connection carries SYN only.
std::optional<uint8_t> parseTcpFlags(std::string_view s) {
  static const std::pair<std::string_view, uint8_t> kFlags[] = {
      {"FIN", 0x01}, {"SYN", 0x02}, {"RST", 0x04}, {"PSH", 0x08}, {"ACK", 0x10},
      {"URG", 0x20}, {"ECE", 0x40}, {"CWR", 0x80}, {"ALL", 0xFF}, {"NONE", 0x00}};
  uint8_t bits = 0;
  while (!s.empty()) {
    auto comma = s.find(',');
    auto name = s.substr(0, comma);
    auto it = std::find_if(std::begin(kFlags), std::end(kFlags),
                           [&](const auto& f) { return f.first == name; });
    if (it == std::end(kFlags)) return std::nullopt;
    bits |= it->second;
    s = comma == std::string_view::npos ? std::string_view() : s.substr(comma + 1);
  }
  return bits;
}

// conntrack's state names as -m conntrack --ctstate / -m state --state print them.
std::optional<std::vector<std::string>> parseStateList(std::string_view s) {
  static const std::string_view kStates[] = {"INVALID",   "NEW",  "ESTABLISHED", "RELATED",
                                             "UNTRACKED", "SNAT", "DNAT"};
  std::vector<std::string> out;
  while (true) {
    auto comma = s.find(',');
    auto name = s.substr(0, comma);
    if (std::find(std::begin(kStates), std::end(kStates), name) == std::end(kStates)) {
      return std::nullopt;
    }
    out.emplace_back(name);
    if (comma == std::string_view::npos) return out;
    s.remove_prefix(comma + 1);
  }
}

class MatchEvaluator {
 public:
  MatchEvaluator(const TracePacket& packet, const TraceContext& context, bool translated)
      : packet_(packet),
        context_(context),
        protocol_(protocolNumber(packet.protocol)),
        translated_(translated) {}

  RuleEval evaluate(const RuleSpec& spec, uint32_t mark) const {
    RuleEval e;
    if (spec.protocol) protocol(e, *spec.protocol);
    if (spec.source) address(e, "-s", *spec.source, packet_.source, "the source address");
    if (spec.destination) {
      address(e, "-d", *spec.destination, packet_.destination.ip, "the destination address");
    }
    if (spec.in_interface) inInterface(e, *spec.in_interface);
    if (spec.out_interface) outInterface(e, *spec.out_interface);
    // The first packet of a TCP connection is never a non-first fragment.
    if (spec.fragment) e.require(!*spec.fragment);
    for (const auto& m : spec.modules) module(e, m, mark);
    return e;
  }

 private:
  void protocol(RuleEval& e, const RuleCondition& c) const {
    auto wanted = protocolNumber(c.value);
    if (!wanted || !protocol_) {
      e.cannot(fmt::format("{}: unknown protocol", conditionText("-p", c)));
      return;
    }
    e.require((*wanted == 0 || *wanted == *protocol_) != c.negated);
  }

  void address(RuleEval& e, std::string_view flag, const RuleCondition& c,
               const std::optional<IpAddress>& ip, std::string_view what) const {
    auto net = parseAddressMask(c.value);
    if (!net) {
      e.cannot(fmt::format("{}: {}", conditionText(flag, c), net.error().message));
      return;
    }
    if (net->matchesEverything()) {
      e.require(!c.negated);
      return;
    }
    if (!ip) {
      e.cannot(fmt::format("{} needs {}, which is not known", conditionText(flag, c), what));
      return;
    }
    e.require(net->contains(*ip) != c.negated);
  }

  void inInterface(RuleEval& e, const RuleCondition& c) const {
    // Locally generated packets have no input device; the kernel compares against "".
    if (packet_.origin == TraceOrigin::kLocal) {
      e.require(interfaceMatches(c.value, "") != c.negated);
      return;
    }
    interface(e, "-i", c, packet_.in_interface, "input");
  }

  void outInterface(RuleEval& e, const RuleCondition& c) const {
    interface(e, "-o", c, packet_.out_interface, "output");
  }

  static void interface(RuleEval& e, std::string_view flag, const RuleCondition& c,
                        const std::optional<std::string>& name, std::string_view which) {
    if (c.value == "+") {
      e.require(!c.negated);
      return;
    }
    if (!name) {
      e.cannot(fmt::format("{} needs the {} interface, which is not known", conditionText(flag, c),
                           which));
      return;
    }
    e.require(interfaceMatches(c.value, *name) != c.negated);
  }

  void module(RuleEval& e, const RuleModule& m, uint32_t mark) const {
    // comment only labels a rule; nfacct only counts into a named accounting object.
    if (m.name == "comment" || m.name == "nfacct") return;
    if (m.name == "conntrack" || m.name == "state") return conntrack(e, m);
    if (m.name == "recent") return recent(e, m);
    if (m.name == "tcp" || m.name == "udp") return ports(e, m);
    if (m.name == "multiport") return multiport(e, m);
    if (m.name == "owner") return owner(e, m);
    if (m.name == "mark") return markMatch(e, m, mark);
    if (m.name == "statistic") return statistic(e, m);
    if (m.name == "addrtype") return addrtype(e, m);
    e.cannot(fmt::format("{}: the trace does not evaluate this match", moduleText(m)));
  }

  void ports(RuleEval& e, const RuleModule& m) const {
    // The tcp/udp match only ever sees its own protocol; -p has already decided otherwise.
    if (packet_.protocol != m.name) {
      e.require(false);
      return;
    }
    for (const auto& o : m.options) {
      if (o.name == "--dport" || o.name == "--destination-port") {
        auto r = parseIptablesPortRange(o.value());
        if (!r) {
          e.cannot(fmt::format("{}: {}", optionText(o), r.error().message));
          continue;
        }
        e.require(r->contains(packet_.destination.port) != o.negated);
      } else if (o.name == "--sport" || o.name == "--source-port") {
        auto r = parseIptablesPortRange(o.value());
        if (r && r->first == 0 && r->last == 65535) {
          e.require(!o.negated);
        } else {
          e.cannot(fmt::format("{} needs the source port, which the kernel picks at connect time",
                               optionText(o)));
        }
      } else if (o.name == "--syn" && m.name == "tcp") {
        e.require(!o.negated);
      } else if (o.name == "--tcp-flags" && m.name == "tcp" && o.values.size() == 2) {
        auto mask = parseTcpFlags(o.values[0]);
        auto comp = parseTcpFlags(o.values[1]);
        if (!mask || !comp) {
          e.cannot(fmt::format("{}: unknown flag", optionText(o)));
          continue;
        }
        e.require(((0x02 & *mask) == *comp) != o.negated);
      } else {
        e.cannot(fmt::format("{} in {}: the trace does not evaluate this option", optionText(o),
                             moduleText(m)));
      }
    }
  }

  void multiport(RuleEval& e, const RuleModule& m) const {
    for (const auto& o : m.options) {
      auto list = parsePortList(o.value());
      if (!list) {
        e.cannot(fmt::format("{}: not a port list", optionText(o)));
        continue;
      }
      const bool dst_in = anyContains(*list, packet_.destination.port);
      if (o.name == "--dports" || o.name == "--destination-ports") {
        e.require(dst_in != o.negated);
      } else if (o.name == "--ports" && dst_in) {
        e.require(!o.negated);
      } else if (o.name == "--sports" || o.name == "--source-ports" || o.name == "--ports") {
        e.cannot(fmt::format("{} needs the source port, which the kernel picks at connect time",
                             optionText(o)));
      } else {
        e.cannot(fmt::format("{}: the trace does not evaluate this option", optionText(o)));
      }
    }
  }

  void owner(RuleEval& e, const RuleModule& m) const {
    const bool suppl = m.option("--suppl-groups") != nullptr;
    for (const auto& o : m.options) {
      if (o.name == "--suppl-groups") continue;
      if (o.name == "--socket-exists") {
        e.require(!o.negated);  // locally generated connections always have a socket
        continue;
      }
      auto range = parseIdRange(o.value());
      if ((o.name != "--uid-owner" && o.name != "--gid-owner") || !range) {
        e.cannot(
            fmt::format("-m owner {}: the trace does not evaluate this option", optionText(o)));
        continue;
      }
      std::optional<uint32_t> id = o.name == "--uid-owner" ? packet_.uid : packet_.gid;
      if (!id) {
        e.cannot(fmt::format("-m owner {} needs the gid, which is not known", optionText(o)));
        continue;
      }
      bool in = *id >= range->first && *id <= range->second;
      if (!in && suppl && o.name == "--gid-owner") {
        e.cannot(fmt::format("-m owner {} --suppl-groups needs the supplementary groups",
                             optionText(o)));
        continue;
      }
      e.require(in != o.negated);
    }
  }

  // The first packet of a connection: conntrack state NEW, plus DNAT once nat has translated
  // the destination. SNAT happens in POSTROUTING, after every chain the trace walks.
  void conntrack(RuleEval& e, const RuleModule& m) const {
    for (const auto& o : m.options) {
      auto states = (o.name == "--ctstate" || o.name == "--state") && o.values.size() == 1
                        ? parseStateList(o.value())
                        : std::nullopt;
      if (!states) {
        e.cannot(fmt::format("{}: the trace evaluates only the connection state", moduleText(m)));
        continue;
      }
      bool in = std::any_of(states->begin(), states->end(), [&](const std::string& st) {
        return st == "NEW" || (st == "DNAT" && translated_);
      });
      e.require(in != o.negated);
    }
  }

  // xt_recent as kube-proxy uses it for session affinity: --rcheck/--update ask whether this
  // client already has an entry (it pins the client to the endpoint that set it); --set adds
  // one and always matches. The trace follows a client's first connection, which has no entry,
  // and says so: every later connection from that client goes where the first one went.
  void recent(RuleEval& e, const RuleModule& m) const {
    const RuleOption* name = m.option("--name");
    const std::string list = name ? name->value() : "DEFAULT";
    for (const auto& o : m.options) {
      if (o.name == "--set") {
        e.require(!o.negated);
        return;
      }
      if (o.name == "--rcheck" || o.name == "--update" || o.name == "--remove") {
        e.require(o.negated);
        e.assumption =
            "session affinity (-m recent): the split is the one of a client's first "
            "connection, which has no affinity entry yet; that connection sets the entry, and "
            "the client's later connections go to the same endpoint until the entry expires";
        e.assumed =
            fmt::format("no entry for this client in recent list {}: its first connection", list);
        return;
      }
    }
    e.cannot(fmt::format("{}: no --set, --rcheck, --update or --remove", moduleText(m)));
  }

  void markMatch(RuleEval& e, const RuleModule& m, uint32_t mark) const {
    const RuleOption* o = m.option("--mark");
    auto vm = o ? parseValueMask(o->value()) : std::nullopt;
    if (!vm || m.options.size() != 1) {
      e.cannot(fmt::format("{}: the trace does not evaluate this match", moduleText(m)));
      return;
    }
    e.require(((mark & vm->second) == vm->first) != o->negated);
  }

  void statistic(RuleEval& e, const RuleModule& m) const {
    const RuleOption* mode = m.option("--mode");
    const RuleOption* p = m.option("--probability");
    if (!mode || mode->value() != "random" || !p) {
      e.cannot(
          fmt::format("{}: only '--mode random' can be evaluated (nth depends on the "
                      "packet count)",
                      moduleText(m)));
      return;
    }
    char* end = nullptr;
    double prob = std::strtod(p->value().c_str(), &end);
    if (end == p->value().c_str() || *end != '\0' || !(prob >= 0.0 && prob <= 1.0)) {
      e.cannot(fmt::format("{}: bad probability", moduleText(m)));
      return;
    }
    // The kernel keeps the probability as a 31-bit fraction and fires when a random 31-bit
    // number is below it; use the same quantised value.
    double fires = std::min(1.0, std::round(prob * 2147483648.0) / 2147483648.0);
    e.probability *= p->negated ? 1.0 - fires : fires;
  }

  void addrtype(RuleEval& e, const RuleModule& m) const {
    for (const auto& o : m.options) {
      const bool dst = o.name == "--dst-type";
      if ((!dst && o.name != "--src-type") || o.value() != "LOCAL") {
        e.cannot(
            fmt::format("{}: only --dst-type/--src-type LOCAL can be evaluated", moduleText(m)));
        continue;
      }
      if (!context_.local_networks) {
        e.cannot(fmt::format("{} needs the netns's local addresses, which are not known",
                             moduleText(m)));
        continue;
      }
      const std::optional<IpAddress> ip = dst ? packet_.destination.ip : packet_.source;
      if (!ip) {
        e.cannot(fmt::format("{} needs the source address, which is not known", moduleText(m)));
        continue;
      }
      const auto& nets = *context_.local_networks;
      bool local =
          std::any_of(nets.begin(), nets.end(), [&](const Cidr& c) { return c.contains(*ip); });
      e.require(local != o.negated);
    }
  }

  const TracePacket& packet_;
  const TraceContext& context_;
  std::optional<int> protocol_;
  bool translated_ = false;
};

// ---- the walk --------------------------------------------------------------------------------

struct Frame {
  std::string chain;
  size_t next = 0;
  std::vector<std::string> active;  // chains this frame entered (itself plus gotos)
};

struct Branch {
  std::string chain;
  size_t next = 0;  // 0-based index of the next rule in chain
  std::vector<std::string> active;
  std::vector<Frame> stack;
  uint32_t mark = 0;
  double probability = 1.0;
  std::vector<TraceStep> path;
  std::vector<std::string> assumptions;
};

// DNAT's --to-destination: "ip", "ip:port", "[v6]:port", "v6"; ranges give no single address.
std::optional<SocketAddress> natDestination(std::string_view to, uint16_t original_port) {
  if (to.find('-') != std::string_view::npos) return std::nullopt;
  if (auto ip = IpAddress::parse(to)) return SocketAddress{*ip, original_port};
  if (to.starts_with('[') && to.ends_with(']')) {
    if (auto ip = IpAddress::parse(to.substr(1, to.size() - 2))) {
      return SocketAddress{*ip, original_port};
    }
  }
  if (auto sa = SocketAddress::parse(to)) return *sa;
  return std::nullopt;
}

IpAddress loopbackOf(Family family) {
  auto ip = IpAddress::parse(family == Family::kIpv4 ? "127.0.0.1" : "::1");
  return *ip;
}

}  // namespace

RedirectAddress redirectAddress(const TracePacket& packet, const TraceContext& context) {
  const Family family = packet.destination.ip.family;
  if (packet.origin == TraceOrigin::kLocal) return {loopbackOf(family), true, {}};
  if (!packet.in_interface) {
    return {std::nullopt, false,
            "REDIRECT in PREROUTING goes to the receiving interface's first address, and the "
            "receiving interface is not known"};
  }
  auto addresses = context.interface_addresses ? context.interface_addresses(*packet.in_interface)
                                               : std::nullopt;
  if (!addresses) {
    return {std::nullopt, false,
            fmt::format("REDIRECT in PREROUTING goes to the first address of {}, whose "
                        "addresses are not known",
                        *packet.in_interface)};
  }
  const auto link_local = Cidr::parse("fe80::/10");
  const bool want_link = family == Family::kIpv6 && link_local->contains(packet.destination.ip);
  for (const auto& ip : *addresses) {
    if (ip.family != family) continue;
    if (family == Family::kIpv6 && link_local->contains(ip) != want_link) continue;
    return {ip, true, {}};
  }
  return {std::nullopt, true,
          fmt::format("{} has no {} address to redirect to: the kernel drops the packet",
                      *packet.in_interface,
                      family == Family::kIpv4 ? "IPv4" : (want_link ? "link-local" : "IPv6"))};
}

namespace {

// The comment of a rule (-m comment --comment TEXT), or "".
std::string commentOf(const RuleSpec& spec) {
  const RuleModule* m = spec.module("comment");
  const RuleOption* c = m ? m->option("--comment") : nullptr;
  return c ? c->value() : std::string();
}

class Walker {
 public:
  Walker(const SavedTable& table, std::string_view base, const TracePacket& packet,
         const TraceContext& context, bool translated)
      : table_(table.name),
        base_(base),
        packet_(packet),
        context_(context),
        matches_(packet, context, translated) {
    for (const auto& c : table.chains) rules_[c.name];
    for (const auto& r : table.rules) rules_[r.chain].push_back(&r);
    const SavedChain* chain = table.chain(base_);
    policy_ = chain && chain->policy != "-" ? chain->policy : "ACCEPT";
  }

  TraceResult run() {
    Branch first;
    first.chain = base_;
    first.active = {base_};
    first.mark = packet_.mark;
    pending_.push_back(std::move(first));
    while (!pending_.empty()) {
      Branch b = std::move(pending_.back());
      pending_.pop_back();
      if (result_.outcomes.size() >= kMaxOutcomes) {
        finishUndetermined(
            b, fmt::format("more than {} random branches; the walk stops here", kMaxOutcomes));
        continue;
      }
      walk(b);
    }
    return std::move(result_);
  }

 private:
  void walk(Branch& b) {
    while (true) {
      if (++visits_ > kMaxRuleVisits) {
        finishUndetermined(b, "the walk visited too many rules (a loop or an enormous ruleset)");
        return;
      }
      auto it = rules_.find(b.chain);
      const auto* rules = it == rules_.end() ? nullptr : &it->second;
      if (rules == nullptr || b.next >= rules->size()) {
        if (!endOfChain(b)) return;
        continue;
      }
      const SavedRule& rule = *(*rules)[b.next];
      const size_t index = ++b.next;
      const auto& spec = specOf(rule);
      TraceStep step{
          table_, b.chain,       index, ruleBody(rule.text, rule.chain), StepVerdict::kContinue,
          "",     b.stack.size()};
      if (!spec) {
        step.verdict = StepVerdict::kUndetermined;
        b.path.push_back(step);
        finishUndetermined(b, fmt::format("{} #{}: the rule cannot be read: {}", b.chain, index,
                                          spec.error().message));
        return;
      }
      RuleEval e = matches_.evaluate(*spec, b.mark);
      if (e.mismatch && !e.assumption.empty() && e.unknown.empty()) {
        step.verdict = StepVerdict::kAssumedSkip;
        step.detail = e.assumed;
        b.path.push_back(std::move(step));
        if (std::find(b.assumptions.begin(), b.assumptions.end(), e.assumption) ==
            b.assumptions.end()) {
          b.assumptions.push_back(e.assumption);
        }
        continue;
      }
      if (e.mismatch) continue;
      if (!e.unknown.empty()) {
        step.verdict = StepVerdict::kUndetermined;
        step.detail = e.unknown;
        b.path.push_back(step);
        finishUndetermined(b, fmt::format("{} #{}: {}", b.chain, index, e.unknown));
        return;
      }
      if (e.probability <= 0.0) continue;
      if (e.probability < 1.0) {
        Branch skipped = b;
        TraceStep skip = step;
        skip.verdict = StepVerdict::kRandomSkip;
        skip.detail =
            fmt::format("not chosen at random, {}", formatProbability(1.0 - e.probability));
        skipped.path.push_back(std::move(skip));
        skipped.probability *= 1.0 - e.probability;
        pending_.push_back(std::move(skipped));
        b.probability *= e.probability;
        step.detail = fmt::format("chosen at random, {}", formatProbability(e.probability));
      }
      if (!applyTarget(b, *spec, step)) return;
    }
  }

  // Returns whether the walk goes on.
  bool applyTarget(Branch& b, const RuleSpec& spec, TraceStep& step) {
    auto note = [&](std::string extra) {
      step.detail = step.detail.empty() ? std::move(extra) : step.detail + "; " + extra;
    };
    const std::string& t = spec.target;
    if (spec.jump != JumpKind::kNone && rules_.count(t) != 0) {
      step.verdict = spec.jump == JumpKind::kGoto ? StepVerdict::kGoto : StepVerdict::kJump;
      b.path.push_back(step);
      return enter(b, t, spec.jump == JumpKind::kGoto);
    }
    if (t.empty()) {
      note("no target: counted only");
      b.path.push_back(step);
      return true;
    }
    if (t == "RETURN") {
      step.verdict = StepVerdict::kReturn;
      b.path.push_back(step);
      return leave(b);
    }
    if (t == "MARK") {
      auto mark = applyMark(b.mark, spec);
      if (!mark) {
        step.verdict = StepVerdict::kUndetermined;
        b.path.push_back(step);
        finishUndetermined(
            b, fmt::format("{} #{}: MARK options not understood", step.chain, step.rule_index));
        return false;
      }
      b.mark = *mark;
      note(fmt::format("mark is now {:#x}", b.mark));
      b.path.push_back(step);
      return true;
    }
    if (t == "CONNMARK" && spec.targetOption("--restore-mark") != nullptr) {
      step.verdict = StepVerdict::kUndetermined;
      b.path.push_back(step);
      finishUndetermined(b, fmt::format("{} #{}: CONNMARK --restore-mark sets the mark from the "
                                        "connection, which the trace does not know",
                                        step.chain, step.rule_index));
      return false;
    }
    static const char* const kNonTerminating[] = {"LOG",   "NFLOG", "ULOG",
                                                  "TRACE", "AUDIT", "CONNMARK"};
    if (std::find(std::begin(kNonTerminating), std::end(kNonTerminating), t) !=
        std::end(kNonTerminating)) {
      b.path.push_back(step);
      return true;
    }

    TraceOutcome out;
    out.chain = step.chain;
    out.rule_index = step.rule_index;
    out.target = joinTarget(spec);
    out.comment = commentOf(spec);
    step.verdict = StepVerdict::kTerminal;
    step.detail = step.detail.empty() ? t : fmt::format("{} ({})", t, step.detail);
    if (t == "ACCEPT") {
      out.kind = OutcomeKind::kUnchanged;
      out.destination = packet_.destination;
    } else if (t == "DROP") {
      out.kind = OutcomeKind::kDrop;
    } else if (t == "REJECT") {
      out.kind = OutcomeKind::kReject;
    } else if (t == "DNAT") {
      out.kind = OutcomeKind::kDnat;
      if (const auto* to = spec.targetOption("--to-destination")) {
        out.destination = natDestination(to->value(), packet_.destination.port);
      }
    } else if (t == "REDIRECT") {
      out.kind = OutcomeKind::kRedirect;
      const auto* to = spec.targetOption("--to-ports");
      std::optional<uint16_t> port;
      if (to == nullptr) {
        port = packet_.destination.port;
      } else if (auto range = parseIptablesPortRange(to->value());
                 range && range->first == range->last &&
                 to->value().find('-') == std::string::npos) {
        port = range->first;
      }
      auto address = redirectAddress(packet_, context_);
      if (!address.ip && address.known) {
        // The kernel drops what it cannot redirect (no address on the receiving interface).
        out.kind = OutcomeKind::kDrop;
        out.reason = address.why;
      } else if (address.ip && port) {
        out.destination = SocketAddress{*address.ip, *port};
      } else if (!address.ip) {
        out.reason = address.why;
      }
    } else if (t == "TPROXY") {
      // No address translation: the packet is handed to the listener on --on-port with its
      // destination kept (the listener reads it with getsockname), and the mark routes it
      // locally through the policy route.
      out.kind = OutcomeKind::kOther;
      out.destination = packet_.destination;
      const auto* port = spec.targetOption("--on-port");
      const auto* mark = spec.targetOption("--tproxy-mark");
      out.reason = fmt::format(
          "TPROXY: to the proxy's inbound listener on port {} with the original destination {} "
          "kept (mark {})",
          port != nullptr ? port->value() : "?", packet_.destination.toString(),
          mark != nullptr ? mark->value() : "unchanged");
    } else if (t == "SNAT" || t == "MASQUERADE" || t == "NETMAP") {
      out.kind = OutcomeKind::kOther;
    } else {
      step.verdict = StepVerdict::kUndetermined;
      b.path.push_back(step);
      finishUndetermined(b, fmt::format("{} #{}: '{}' is neither a chain of this table nor a "
                                        "target the trace knows",
                                        step.chain, step.rule_index, t));
      return false;
    }
    b.path.push_back(step);
    finish(b, std::move(out));
    return false;
  }

  static std::string joinTarget(const RuleSpec& spec) {
    std::vector<std::string> words{spec.target};
    for (const auto& o : spec.target_options) words.push_back(optionText(o));
    std::string text;
    for (const auto& w : words) text += (text.empty() ? "" : " ") + w;
    return text;
  }

  static std::optional<uint32_t> applyMark(uint32_t mark, const RuleSpec& spec) {
    if (spec.target_options.size() != 1) return std::nullopt;
    const auto& o = spec.target_options.front();
    auto vm = parseValueMask(o.value());
    if (!vm) return std::nullopt;
    auto [value, mask] = *vm;
    if (o.name == "--set-xmark") return (mark & ~mask) ^ value;
    if (o.name == "--set-mark") return (mark & ~mask) | value;
    if (o.name == "--and-mark") return mark & value;
    if (o.name == "--or-mark") return mark | value;
    if (o.name == "--xor-mark") return mark ^ value;
    return std::nullopt;
  }

  bool inWalk(const Branch& b, const std::string& chain) const {
    auto has = [&](const std::vector<std::string>& v) {
      return std::find(v.begin(), v.end(), chain) != v.end();
    };
    if (has(b.active)) return true;
    return std::any_of(b.stack.begin(), b.stack.end(),
                       [&](const Frame& f) { return has(f.active); });
  }

  bool enter(Branch& b, const std::string& chain, bool go_to) {
    // The kernel refuses loops at load time; a saved file may still hold one.
    if (inWalk(b, chain)) {
      finishUndetermined(b,
                         fmt::format("loop: {} is entered again while it is being walked", chain));
      return false;
    }
    if (go_to) {
      b.active.push_back(chain);
    } else {
      if (b.stack.size() >= kMaxJumpDepth) {
        finishUndetermined(b, fmt::format("jumps nest deeper than {}", kMaxJumpDepth));
        return false;
      }
      b.stack.push_back(Frame{b.chain, b.next, std::move(b.active)});
      b.active = {chain};
    }
    b.chain = chain;
    b.next = 0;
    return true;
  }

  // RETURN, or the end of a user chain: back to the caller; with no caller, the base chain's
  // policy decides (this is also where a goto from the base chain comes back to).
  bool leave(Branch& b) {
    if (b.stack.empty()) {
      policy(b);
      return false;
    }
    Frame f = std::move(b.stack.back());
    b.stack.pop_back();
    b.chain = std::move(f.chain);
    b.next = f.next;
    b.active = std::move(f.active);
    return true;
  }

  bool endOfChain(Branch& b) {
    if (b.chain != base_ || !b.stack.empty()) {
      std::string back_to = b.stack.empty() ? base_ : b.stack.back().chain;
      b.path.push_back(
          TraceStep{table_, b.chain, 0, "(end of chain)", StepVerdict::kEndOfChain,
                    b.stack.empty() ? "back to the " + base_ + " policy" : "back to " + back_to,
                    b.stack.size()});
    }
    if (b.chain == base_ && b.stack.empty()) {
      policy(b);
      return false;
    }
    return leave(b);
  }

  void policy(Branch& b) {
    b.path.push_back(TraceStep{table_, base_, 0, "policy " + policy_, StepVerdict::kPolicy, "", 0});
    finish(b, policyOutcome(base_, policy_, policy_ == "DROP", packet_.destination));
  }

  void finishUndetermined(Branch& b, std::string reason) {
    finish(b, undeterminedOutcome(b.chain, b.path, std::move(reason)));
  }

  void finish(Branch& b, TraceOutcome out) {
    out.table = table_;
    out.assumptions = std::move(b.assumptions);
    out.probability = b.probability;
    out.mark = b.mark;
    out.ct_mark = packet_.ct_mark;  // no iptables target here sets it
    out.path = std::move(b.path);
    result_.outcomes.push_back(std::move(out));
  }

  const Result<RuleSpec>& specOf(const SavedRule& rule) {
    auto it = specs_.find(&rule);
    if (it == specs_.end()) {
      it =
          specs_.emplace(&rule, std::make_unique<Result<RuleSpec>>(parseRuleSpec(rule.args))).first;
    }
    return *it->second;
  }

  std::string table_;
  std::string base_;
  const TracePacket& packet_;
  const TraceContext& context_;
  MatchEvaluator matches_;
  std::unordered_map<std::string, std::vector<const SavedRule*>> rules_;
  std::unordered_map<const SavedRule*, std::unique_ptr<Result<RuleSpec>>> specs_;
  std::string policy_;
  std::vector<Branch> pending_;
  TraceResult result_;
  size_t visits_ = 0;
};

// ---- reading the netns -------------------------------------------------------------------

// ip -j prints an array of objects; returns the string field of the first one.
std::optional<std::string> firstString(const nlohmann::json& j, const char* key) {
  if (!j.is_array() || j.empty() || !j[0].is_object()) return std::nullopt;
  auto it = j[0].find(key);
  if (it == j[0].end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

std::string firstLine(const std::string& s) {
  auto nl = s.find('\n');
  return s.substr(0, nl);
}

void readRoute(const TraceRequest& request, TracePacket& packet, std::vector<std::string>& notes) {
  const bool v6 = request.destination.ip.family == Family::kIpv6;
  const std::string dst = request.destination.ip.toString();
  auto out = runCommand(
      {"ip", v6 ? "-6" : "-4", "-j", "route", "get", dst, "uid", std::to_string(request.uid)}, {},
      kDefaultCommandTimeout);
  if (!out) {
    notes.push_back(
        fmt::format("cannot run 'ip route get' ({}): the source address and the "
                    "output interface are unknown",
                    out.error().message));
    return;
  }
  if (out->exit_code != 0) {
    notes.push_back(
        fmt::format("no route to {} ({}): connect() would fail before the nat table "
                    "is consulted; the source address and the output interface are "
                    "unknown",
                    dst, firstLine(out->err)));
    return;
  }
  auto j = nlohmann::json::parse(out->out, nullptr, /*allow_exceptions=*/false);
  if (auto dev = firstString(j, "dev")) packet.out_interface = *dev;
  if (auto src = firstString(j, "prefsrc")) {
    if (auto ip = IpAddress::parse(*src)) packet.source = *ip;
  }
  if (!packet.out_interface) notes.emplace_back("'ip route get' named no output interface");
  if (!packet.source) notes.emplace_back("'ip route get' named no source address");
}

// The device of the route to `ip` in this netns (`ip route get`), or nullopt.
std::optional<std::string> routeDevice(const IpAddress& ip) {
  auto out = runCommand(
      {"ip", ip.family == Family::kIpv6 ? "-6" : "-4", "-j", "route", "get", ip.toString()}, {},
      kDefaultCommandTimeout);
  if (!out || out->exit_code != 0) return std::nullopt;
  auto j = nlohmann::json::parse(out->out, nullptr, /*allow_exceptions=*/false);
  return firstString(j, "dev");
}

// The addresses of `interface` in the kernel's order (`ip -j addr show dev`), or nullopt.
std::optional<std::vector<IpAddress>> interfaceAddresses(const std::string& interface) {
  auto out = runCommand({"ip", "-j", "addr", "show", "dev", interface}, {}, kDefaultCommandTimeout);
  if (!out || out->exit_code != 0) return std::nullopt;
  auto j = nlohmann::json::parse(out->out, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array() || j.empty() || !j[0].is_object()) return std::nullopt;
  auto info = j[0].find("addr_info");
  if (info == j[0].end() || !info->is_array()) return std::vector<IpAddress>{};
  std::vector<IpAddress> addresses;
  for (const auto& a : *info) {
    auto local = a.is_object() ? a.find("local") : a.end();
    if (local == a.end() || !local->is_string()) continue;
    if (auto ip = IpAddress::parse(local->get<std::string>())) addresses.push_back(*ip);
  }
  return addresses;
}

std::optional<std::vector<Cidr>> readLocalNetworks(Family family, std::vector<std::string>& notes) {
  auto out = runCommand(
      {"ip", family == Family::kIpv6 ? "-6" : "-4", "-j", "route", "show", "table", "local"}, {},
      kDefaultCommandTimeout);
  // The kernel drops the local table with its last entry (e.g. lo down in a fresh netns), so
  // "does not exist" means no local addresses at all.
  if (out && out->exit_code != 0 && out->err.find("table does not exist") != std::string::npos) {
    return std::vector<Cidr>{};
  }
  if (!out || out->exit_code != 0) {
    notes.push_back(
        fmt::format("cannot read the local routing table ({}): '-m addrtype LOCAL' "
                    "stays undetermined",
                    out ? firstLine(out->err) : out.error().message));
    return std::nullopt;
  }
  auto j = nlohmann::json::parse(out->out, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) {
    notes.emplace_back(
        "'ip route show table local' printed no JSON array: '-m addrtype LOCAL' "
        "stays undetermined");
    return std::nullopt;
  }
  std::vector<Cidr> nets;
  for (const auto& route : j) {
    if (!route.is_object()) continue;
    auto type = route.find("type");
    auto dst = route.find("dst");
    if (type == route.end() || dst == route.end() || !type->is_string() || !dst->is_string() ||
        type->get<std::string>() != "local") {
      continue;
    }
    if (auto cidr = Cidr::parse(dst->get<std::string>())) nets.push_back(*cidr);
  }
  return nets;
}

uint32_t primaryGroup(uint32_t uid, std::vector<std::string>& notes) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    notes.push_back(
        fmt::format("gid not given: using {}, the primary group of uid {} in this "
                    "system's user database",
                    found->pw_gid, uid));
    return found->pw_gid;
  }
  // Containers commonly run numeric ids with gid == uid (Istio's proxy is 1337:1337).
  notes.push_back(
      fmt::format("gid not given and uid {} has no user entry: assuming gid {}", uid, uid));
  return uid;
}

// ---- rendering --------------------------------------------------------------------------------

std::string stepLine(const TraceStep& s) {
  std::string indent(2 + 2 * s.depth, ' ');
  std::string where = s.rule_index == 0 ? s.chain : fmt::format("{} #{}", s.chain, s.rule_index);
  std::string verdict;
  switch (s.verdict) {
    case StepVerdict::kEndOfChain:
      return fmt::format("{}{} (end of chain) → {}", indent, s.chain, s.detail);
    case StepVerdict::kPolicy:
      return fmt::format("{}{}: no rule decided → {}", indent, s.chain, s.rule);
    case StepVerdict::kRandomSkip:
    case StepVerdict::kTerminal:
      return fmt::format("{}{} {} → {}", indent, where, s.rule, s.detail);
    case StepVerdict::kAssumedSkip:
      return fmt::format("{}{} {} → not matched ({})", indent, where, s.rule, s.detail);
    default:
      verdict = toString(s.verdict);
  }
  if (!s.detail.empty()) verdict += " (" + s.detail + ")";
  return fmt::format("{}{} {} → {}", indent, where, s.rule, verdict);
}

std::string packetLine(const TraceReport& r) {
  const TracePacket& p = r.packet;
  std::string line;
  if (p.origin == TraceOrigin::kArriving) {
    line = fmt::format("Trace: {} to {} arriving from {}, in {}", p.protocol,
                       p.destination.toString(), p.source ? p.source->toString() : "unknown",
                       p.in_interface ? *p.in_interface : "unknown");
  } else {
    line = fmt::format("Trace: {} to {} from uid {}", p.protocol, p.destination.toString(), p.uid);
    line += p.gid ? fmt::format(", gid {}", *p.gid) : ", gid unknown";
    line += fmt::format(", source {}", p.source ? p.source->toString() : "unknown");
    line += fmt::format(", out {}", p.out_interface ? *p.out_interface : "unknown");
  }
  if (p.mark != 0) line += fmt::format(", mark {:#x}", p.mark);
  const bool filter =
      std::find(r.result.tables.begin(), r.result.tables.end(), "filter") != r.result.tables.end();
  std::vector<std::string> nft;
  for (const auto& t : r.result.tables) {
    if (t != "nat" && t != "filter" && t != "raw" && t != "mangle") nft.push_back(t);
  }
  line += fmt::format(" — {}{}", filter ? "nat and filter tables" : "nat table",
                      r.backend.empty() ? "" : " via " + r.backend);
  if (!nft.empty()) line += fmt::format(", and nftables {}", fmt::join(nft, ", "));
  return line;
}

// "DNAT 10.244.1.168:80 via KUBE-SEP-X", "REDIRECT to local port 15001", "SNAT ... in CHAIN #n".
std::string describeNat(const TraceOutcome& o) {
  switch (o.kind) {
    case OutcomeKind::kRedirect:
      if (!o.destination) return o.target;
      // In PREROUTING the port is on the receiving interface's address, not loopback.
      return o.destination->ip == loopbackOf(o.destination->ip.family)
                 ? fmt::format("REDIRECT to local port {}", o.destination->port)
                 : fmt::format("REDIRECT to local port {} on {}", o.destination->port,
                               o.destination->ip.toString());
    case OutcomeKind::kDnat:
      return fmt::format("DNAT {} via {}", o.destination ? o.destination->toString() : o.target,
                         o.chain);
    default:
      return fmt::format("{} in {} #{}", o.target, o.chain, o.rule_index);
  }
}

// The packet after a nat translation: the new destination, the mark nat left, and the device
// of the route to the new destination (lo for a REDIRECT).
Result<TracePacket> afterNat(const TracePacket& packet, const TraceOutcome& nat,
                             const TraceContext& context) {
  if (!nat.destination && nat.kind == OutcomeKind::kRedirect && !nat.reason.empty()) {
    return makeError(fmt::format("{} #{}: {}", nat.chain, nat.rule_index, nat.reason));
  }
  if (!nat.destination) {
    return makeError(fmt::format(
        "{} #{}: '{}' translates to a range; the filter table's verdict depends on the address "
        "the kernel picks",
        nat.chain, nat.rule_index, nat.target));
  }
  TracePacket next = packet;
  next.destination = *nat.destination;
  next.mark = nat.mark;
  next.ct_mark = nat.ct_mark;
  if (nat.kind == OutcomeKind::kRedirect) {
    next.out_interface = "lo";
  } else if (!(nat.destination->ip == packet.destination.ip)) {
    next.out_interface.reset();
    if (context.route_device) next.out_interface = context.route_device(nat.destination->ip);
  }
  return next;
}

// One base chain on a hook, in the kernel's priority order: an iptables built-in chain or an
// nftables base chain.
struct Stage {
  int priority = 0;
  bool nat = false;
  std::string table;  // "nat", "filter", "ip kube-proxy"
  std::string chain;  // "OUTPUT", "filter-output", ...
  std::function<TraceResult(const TracePacket&, bool translated)> walk;
};

// What a branch carries from one stage to the next.
struct Carry {
  TracePacket packet;
  std::optional<TraceOutcome> nat;    // the translation, once a nat chain made one
  std::optional<TraceOutcome> first;  // the first nat chain's "no translation" outcome
  double probability = 1.0;
  std::vector<TraceStep> path;
  std::vector<std::string> assumptions;
  std::vector<std::string> accepted;
  std::string source_nat;  // "MASQUERADE in KUBE-POSTROUTING #3", once a source NAT applied
  std::optional<uint32_t> routed_mark;  // the mark when POSTROUTING began
};

class StageWalk {
 public:
  StageWalk(const SavedRuleset& ruleset, const NftRuleset* nft, const TracePacket& packet,
            const TraceContext& context)
      : ruleset_(ruleset), nft_(nft), packet_(packet), context_(context) {}

  TraceResult run() {
    const bool arriving = packet_.origin == TraceOrigin::kArriving;
    result_.tables = {"nat"};
    for (const char* t : {"filter", "raw", "mangle"}) {
      if (ruleset_.table(t) != nullptr) result_.tables.emplace_back(t);
    }
    if (nft_ != nullptr) {
      for (const auto& t : nft_->tables) {
        if (t.sees(packet_.destination.ip.family) &&
            std::any_of(t.chains.begin(), t.chains.end(),
                        [](const auto& c) { return !c.second.hook.empty(); })) {
          result_.tables.push_back(t.label());
        }
      }
    }
    Carry c;
    c.packet = packet_;
    const std::string_view hook = arriving ? "prerouting" : "output";
    walk(stages(hook), 0, std::move(c), hook);
    return std::move(result_);
  }

 private:
  std::vector<Stage> stages(std::string_view hook) const {
    std::vector<Stage> out;
    auto iptables = [&](const SavedTable* table, const char* name, const std::string& chain,
                        int prio, bool nat) {
      out.push_back(Stage{prio, nat, name, chain,
                          [this, table, chain](const TracePacket& p, bool translated) {
                            return traceChain(*table, chain, p, context_, translated);
                          }});
    };
    std::string chain(hook);
    std::transform(chain.begin(), chain.end(), chain.begin(),
                   [](char ch) { return static_cast<char>(std::toupper(ch)); });
    // iptables' tables and their priorities on each hook (raw -300, mangle -150, nat dstnat
    // -100 / srcnat 100, filter 0); nat PREROUTING and OUTPUT are walked even when empty, as
    // the outcome of "no translation".
    static const struct {
      const char* table;
      int priority;
      const char* hooks[5];
    } kTables[] = {
        {"raw", -300, {"prerouting", "output"}},
        {"mangle", -150, {"prerouting", "input", "forward", "output", "postrouting"}},
        {"nat", -100, {"prerouting", "output"}},
        {"filter", 0, {"input", "forward", "output"}},
        {"nat", 100, {"input", "postrouting"}},
    };
    for (const auto& t : kTables) {
      if (std::none_of(std::begin(t.hooks), std::end(t.hooks),
                       [&](const char* h) { return h != nullptr && hook == h; })) {
        continue;
      }
      const SavedTable* table = ruleset_.table(t.table);
      const bool is_nat = std::string_view(t.table) == "nat";
      if (table == nullptr && is_nat && t.priority < 0) table = &empty_nat_;
      const bool always = is_nat && t.priority < 0;  // nat PREROUTING / OUTPUT
      if (table == nullptr || (table->chain(chain) == nullptr && !always)) continue;
      iptables(table, t.table, chain, t.priority, is_nat);
    }

    if (nft_ != nullptr) {
      for (const auto& base : nftBaseChains(*nft_, packet_.destination.ip.family, hook)) {
        out.push_back(Stage{base.chain->priority, base.chain->type == "nat", base.table->label(),
                            base.chain->name, [this, base](const TracePacket& p, bool translated) {
                              return traceNftChain(*base.table, base.chain->name, p, context_,
                                                   translated);
                            }});
      }
    }
    std::stable_sort(out.begin(), out.end(),
                     [](const Stage& a, const Stage& b) { return a.priority < b.priority; });
    return out;
  }

  void walk(const std::vector<Stage>& stages, size_t i, Carry c, std::string_view hook) {
    if (i == stages.size()) {
      if (hook == "prerouting") return arrive(std::move(c));
      if (hook == "output" || hook == "forward") {
        // The outcome reports the mark the routing decision saw (kube-proxy's masquerade chain
        // clears its bit again before MASQUERADE).
        c.routed_mark = c.packet.mark;
        return walk(this->stages("postrouting"), 0, std::move(c), "postrouting");
      }
      return done(std::move(c));
    }
    const Stage& stage = stages[i];
    // Once a nat chain has bound the connection, later nat chains of the same kind (destination
    // NAT before routing, source NAT after) are skipped.
    const bool source_nat = hook == "postrouting" || hook == "input";
    if (stage.nat && (source_nat ? !c.source_nat.empty() : c.nat.has_value())) {
      return walk(stages, i + 1, std::move(c), hook);
    }
    TraceResult r = stage.walk(c.packet, c.nat.has_value());
    for (auto& f : r.outcomes) {
      Carry next = c;
      next.probability *= f.probability;
      next.path.insert(next.path.end(), std::make_move_iterator(f.path.begin()),
                       std::make_move_iterator(f.path.end()));
      for (auto& a : f.assumptions) {
        if (std::find(next.assumptions.begin(), next.assumptions.end(), a) ==
            next.assumptions.end()) {
          next.assumptions.push_back(std::move(a));
        }
      }
      next.packet.mark = f.mark;
      next.packet.ct_mark = f.ct_mark;
      if (f.kind == OutcomeKind::kUnchanged) {
        if (stage.nat && !next.first) next.first = f;
        if (!stage.nat) {
          next.accepted.push_back(fmt::format(
              "{} {}: accepted ({})", stage.table, stage.chain,
              f.rule_index == 0
                  ? f.target
                  : fmt::format("{} in {} #{}", stage.table == "filter" ? "ACCEPT" : f.target,
                                f.chain, f.rule_index)));
        }
        walk(stages, i + 1, std::move(next), hook);
        continue;
      }
      if (f.kind == OutcomeKind::kDnat || f.kind == OutcomeKind::kRedirect) {
        auto moved = afterNat(next.packet, f, context_);
        if (!moved) {
          f.kind = OutcomeKind::kUndetermined;
          f.reason = moved.error().message;
          finish(std::move(next), std::move(f));
          continue;
        }
        next.packet = std::move(*moved);
        next.nat = std::move(f);
        walk(stages, i + 1, std::move(next), hook);
        continue;
      }
      if (f.kind == OutcomeKind::kOther && stage.nat && source_nat) {
        // SNAT/MASQUERADE: the connection goes on, from another source address.
        next.source_nat =
            fmt::format("{} in {}{} #{}", f.target, stage.table == "nat" ? "" : stage.table + " ",
                        f.chain, f.rule_index);
        walk(stages, i + 1, std::move(next), hook);
        continue;
      }
      finish(std::move(next), std::move(f));
    }
  }

  // After PREROUTING: filter INPUT when the (translated) destination is local, FORWARD
  // otherwise.
  void arrive(Carry c) {
    if (stages("input").empty() && stages("forward").empty()) return done(std::move(c));
    const bool moved = c.nat && !(c.packet.destination.ip == packet_.destination.ip);
    bool local = c.nat && c.nat->kind == OutcomeKind::kRedirect;
    if (!local) {
      if (!context_.local_networks) {
        TraceOutcome out = c.nat ? *c.nat : c.first.value_or(TraceOutcome{});
        out.kind = OutcomeKind::kUndetermined;
        out.reason = fmt::format(
            "whether {} is an address of this netns (filter INPUT) or is forwarded (filter "
            "FORWARD) depends on the local addresses, which are not known",
            c.packet.destination.ip.toString());
        return finish(std::move(c), std::move(out));
      }
      const auto& nets = *context_.local_networks;
      local = std::any_of(nets.begin(), nets.end(),
                          [&](const Cidr& n) { return n.contains(c.packet.destination.ip); });
    }
    if (local) {
      c.packet.out_interface.reset();
    } else if (!moved && context_.route_device) {
      c.packet.out_interface = context_.route_device(c.packet.destination.ip);
    }
    const std::string_view hook = local ? "input" : "forward";
    walk(stages(hook), 0, std::move(c), hook);
  }

  // Every stage let the packet through.
  void done(Carry c) {
    TraceOutcome out;
    if (c.nat) {
      out = *c.nat;
    } else if (c.first) {
      out = *c.first;
    } else {
      out.chain = packet_.origin == TraceOrigin::kArriving ? "PREROUTING" : "OUTPUT";
      out.target = "policy ACCEPT";
      out.destination = packet_.destination;
    }
    out.translated.clear();
    out.accepted_by = fmt::format("{}", fmt::join(c.accepted, "; "));
    finish(std::move(c), std::move(out));
  }

  void finish(Carry c, TraceOutcome out) {
    if (c.nat && out.kind != OutcomeKind::kDnat && out.kind != OutcomeKind::kRedirect) {
      out.translated = describeNat(*c.nat);
    }
    if (c.nat && (out.kind == OutcomeKind::kDnat || out.kind == OutcomeKind::kRedirect) &&
        !c.accepted.empty()) {
      out.accepted_by = fmt::format("{}", fmt::join(c.accepted, "; "));
    }
    out.source_nat = c.source_nat;
    out.probability = c.probability;
    out.mark = c.routed_mark.value_or(c.packet.mark);
    out.ct_mark = c.packet.ct_mark;
    out.path = std::move(c.path);
    out.assumptions = std::move(c.assumptions);
    result_.outcomes.push_back(std::move(out));
  }

  const SavedRuleset& ruleset_;
  const NftRuleset* nft_;
  const TracePacket& packet_;
  const TraceContext& context_;
  const SavedTable empty_nat_{"nat", {}, {}};
  TraceResult result_;
};

// What a TCP connect() sees when the SYN is rejected with `target` ("REJECT --reject-with X"):
// the kernel turns the ICMP error (or the reset) into this errno in SYN-SENT.
std::string rejectErrno(const std::string& target) {
  static const std::pair<std::string_view, std::string_view> kErrnos[] = {
      {"tcp-reset", "ECONNREFUSED"},
      {"icmp-net-unreachable", "ENETUNREACH"},
      {"icmp-host-unreachable", "EHOSTUNREACH"},
      {"icmp-proto-unreachable", "ENOPROTOOPT"},
      {"icmp-net-prohibited", "ENETUNREACH"},
      {"icmp-host-prohibited", "EHOSTUNREACH"},
      {"icmp-admin-prohibited", "EHOSTUNREACH"},
      {"icmp6-no-route", "ENETUNREACH"},
      {"no-route", "ENETUNREACH"},
      {"icmp6-adm-prohibited", "EACCES"},
      {"adm-prohibited", "EACCES"},
      {"icmp6-addr-unreachable", "EHOSTUNREACH"},
      {"addr-unreach", "EHOSTUNREACH"},
  };
  // nftables: "reject with icmp host-unreachable", "reject with icmpv6 admin-prohibited".
  if (target.starts_with("reject with ")) {
    static const std::pair<std::string_view, std::string_view> kNft[] = {
        {"tcp reset", "ECONNREFUSED"},         {"net-unreachable", "ENETUNREACH"},
        {"host-unreachable", "EHOSTUNREACH"},  {"prot-unreachable", "ENOPROTOOPT"},
        {"net-prohibited", "ENETUNREACH"},     {"host-prohibited", "EHOSTUNREACH"},
        {"no-route", "ENETUNREACH"},           {"addr-unreachable", "EHOSTUNREACH"},
        {"icmpv6 admin-prohibited", "EACCES"}, {"admin-prohibited", "EHOSTUNREACH"},
    };
    for (const auto& [name, err] : kNft) {
      if (target.find(name) != std::string::npos) return std::string(err);
    }
    return "ECONNREFUSED";
  }
  auto at = target.find("--reject-with ");
  if (at == std::string::npos) return "ECONNREFUSED";  // icmp(6)-port-unreachable by default
  std::string_view with = std::string_view(target).substr(at + 14);
  with = with.substr(0, with.find(' '));
  for (const auto& [name, err] : kErrnos) {
    if (with == name) return std::string(err);
  }
  return "ECONNREFUSED";
}

}  // namespace

const char* toString(StepVerdict verdict) {
  switch (verdict) {
    case StepVerdict::kJump:
      return "jump";
    case StepVerdict::kGoto:
      return "goto";
    case StepVerdict::kReturn:
      return "return";
    case StepVerdict::kEndOfChain:
      return "end-of-chain";
    case StepVerdict::kContinue:
      return "continue";
    case StepVerdict::kRandomSkip:
      return "random-skip";
    case StepVerdict::kTerminal:
      return "terminal";
    case StepVerdict::kPolicy:
      return "policy";
    case StepVerdict::kAssumedSkip:
      return "assumed-skip";
    case StepVerdict::kUndetermined:
      return "undetermined";
  }
  return "?";
}

const char* toString(OutcomeKind kind) {
  switch (kind) {
    case OutcomeKind::kUnchanged:
      return "unchanged";
    case OutcomeKind::kRedirect:
      return "redirect";
    case OutcomeKind::kDnat:
      return "dnat";
    case OutcomeKind::kDrop:
      return "drop";
    case OutcomeKind::kReject:
      return "reject";
    case OutcomeKind::kOther:
      return "other";
    case OutcomeKind::kUndetermined:
      return "undetermined";
  }
  return "?";
}

TraceOutcome policyOutcome(const std::string& chain, const std::string& policy, bool drop,
                           const SocketAddress& destination) {
  TraceOutcome out;
  out.chain = chain;
  out.target = "policy " + policy;
  if (drop) {
    out.kind = OutcomeKind::kDrop;
  } else {
    out.kind = OutcomeKind::kUnchanged;
    out.destination = destination;
  }
  return out;
}

TraceOutcome undeterminedOutcome(const std::string& chain, const std::vector<TraceStep>& path,
                                 std::string reason) {
  TraceOutcome out;
  out.kind = OutcomeKind::kUndetermined;
  out.chain = chain;
  out.rule_index = path.empty() ? 0 : path.back().rule_index;
  out.reason = std::move(reason);
  return out;
}

TraceResult traceChain(const SavedTable& table, std::string_view chain, const TracePacket& packet,
                       const TraceContext& context, bool translated) {
  return Walker(table, chain, packet, context, translated).run();
}

TraceResult traceNatOutput(const SavedTable& nat, const TracePacket& packet,
                           const TraceContext& context) {
  return traceChain(nat, "OUTPUT", packet, context);
}

TraceResult traceConnection(const SavedRuleset& ruleset, const TracePacket& packet,
                            const TraceContext& context, const NftRuleset* nft) {
  return StageWalk(ruleset, nft, packet, context).run();
}

std::string formatProbability(double probability) {
  if (probability >= 1.0 - 1e-9) return "100%";
  return fmt::format("{:.2f}%", probability * 100.0);
}

std::string describeOutcome(const TraceOutcome& o, const TracePacket& packet) {
  const std::string table = o.table == "nat" ? "" : o.table + " ";
  std::string where =
      o.rule_index == 0 ? table + o.chain : fmt::format("{}{} #{}", table, o.chain, o.rule_index);
  // "policy DROP in filter FORWARD" reads worse than "filter FORWARD policy DROP".
  std::string decided = o.rule_index == 0 ? fmt::format("{}{} {}", table, o.chain, o.target)
                                          : fmt::format("{} in {}", o.target, where);
  if (!o.comment.empty()) decided += fmt::format(", \"{}\"", o.comment);
  std::string text;
  switch (o.kind) {
    case OutcomeKind::kRedirect:
      text = describeNat(o);
      // nftables mode names the chains per family: REMORA_REDIRECT_v4.
      if (o.chain == kRedirectChain || o.chain.starts_with(std::string(kRedirectChain) + "_v")) {
        text += " (captured by the proxy's outbound listener)";
      }
      if (o.chain == kInRedirectChain ||
          o.chain.starts_with(std::string(kInRedirectChain) + "_v")) {
        text += " (captured by the proxy's inbound listener)";
      }
      break;
    case OutcomeKind::kDnat:
      text = describeNat(o);
      break;
    case OutcomeKind::kUnchanged:
      text = fmt::format(
          "no translation: the connection goes to the original destination {} "
          "unmodified ({})",
          packet.destination.toString(),
          o.rule_index == 0 ? o.chain + " " + o.target : "ACCEPT in " + where);
      break;
    case OutcomeKind::kDrop:
      text = fmt::format("dropped ({}): {}the SYN gets no answer, connect() times out", decided,
                         o.reason.empty() ? "" : o.reason + "; ");
      break;
    case OutcomeKind::kReject:
      text = fmt::format("rejected ({}): connect() fails at once with {}", decided,
                         rejectErrno(o.target));
      break;
    case OutcomeKind::kOther:
      text = fmt::format("{} in {}", o.target, where);
      if (!o.reason.empty()) text += ": " + o.reason;  // TPROXY says where the packet goes
      break;
    case OutcomeKind::kUndetermined:
      text = "undetermined: " + o.reason;
      break;
  }
  if (!o.translated.empty()) text += fmt::format(" (after {})", o.translated);
  if (o.mark != packet.mark && o.kind != OutcomeKind::kUndetermined) {
    text += fmt::format(" (mark {:#x})", o.mark);
  }
  if (!o.accepted_by.empty()) text += "; " + o.accepted_by;
  if (!o.source_nat.empty()) text += "; source NAT: " + o.source_nat;
  return fmt::format("{}, {}", text, formatProbability(o.probability));
}

Result<TraceReport> traceCurrentNetns(const TraceRequest& request) {
  const Family family = request.destination.ip.family;
  auto backend = detectBackend(request.backend, family);
  if (!backend) return backend.error();
  auto tools = toolsFor(*backend, family);
  TraceReport report;
  report.backend = tools.name();
  // All tables rather than "-t nat": with -t, iptables-legacy-save creates an empty nat table in
  // a netns that had none, and a trace must not change the kernel.
  auto text = saveTable(tools, "");
  if (!text) return text.error();
  auto ruleset = parseIptablesSave(*text);
  if (!ruleset) {
    return makeError(fmt::format("cannot read {} output: {}", tools.save, ruleset.error().message));
  }
  if (ruleset->table("nat") == nullptr) {
    report.notes.push_back(
        fmt::format("{} has no nat table in this netns: nothing translates "
                    "connections",
                    report.backend));
  }
  report.packet.destination = request.destination;
  if (request.source) {
    if (request.source->family != family) {
      return makeError(fmt::format("--source {} and --trace {} are not of the same family",
                                   request.source->toString(), request.destination.toString()));
    }
    report.packet.origin = TraceOrigin::kArriving;
    report.packet.source = *request.source;
    report.packet.in_interface = request.in_interface;
    if (!report.packet.in_interface) {
      report.packet.in_interface = routeDevice(*request.source);
      report.notes.push_back(
          report.packet.in_interface
              ? fmt::format("--in-interface not given: assuming {}, the route back to {}",
                            *report.packet.in_interface, request.source->toString())
              : fmt::format("--in-interface not given and no route back to {}: '-i' matches "
                            "stay undetermined",
                            request.source->toString()));
    }
  } else {
    report.packet.uid = request.uid;
    report.packet.gid = request.gid ? *request.gid : primaryGroup(request.uid, report.notes);
    readRoute(request, report.packet, report.notes);
  }
  TraceContext context;
  context.local_networks = readLocalNetworks(family, report.notes);
  context.route_device = [](const IpAddress& ip) { return routeDevice(ip); };
  context.interface_addresses = [](const std::string& name) { return interfaceAddresses(name); };
  // Native nftables tables (Remora's inet remora, kube-proxy's ip kube-proxy) see the packet
  // too: their base chains are walked with the iptables ones, in priority order.
  auto nft = readNftRuleset();
  if (!nft) {
    report.notes.push_back(fmt::format(
        "NOT WALKED: cannot read the nftables ruleset ({}): native nftables rules (Remora's "
        "nftables mode, kube-proxy's nftables mode) would see this packet too, so the outcomes "
        "below may not be what happens",
        nft.error().message));
  }
  report.result = traceConnection(*ruleset, report.packet, context, nft ? &*nft : nullptr);
  const bool has_nft = report.result.tables.size() > 2 ||
                       (report.result.tables.size() == 2 && report.result.tables[1] != "filter");
  if (ruleset->table("filter") == nullptr && !has_nft) {
    report.notes.push_back(
        fmt::format("{} has no filter table in this netns: nothing rejects or drops connections",
                    report.backend));
  }
  return report;
}

std::string renderTrace(const TraceReport& report) {
  std::string out = packetLine(report) + "\n";
  for (const auto& n : report.notes) out += "Note: " + n + "\n";
  const auto& outcomes = report.result.outcomes;
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const auto& o = outcomes[i];
    out += outcomes.size() == 1 ? "\nPath:\n"
                                : fmt::format("\nPath {} of {} ({}):\n", i + 1, outcomes.size(),
                                              formatProbability(o.probability));
    std::string table = "nat";
    for (const auto& s : o.path) {
      if (s.table != table) {
        table = s.table;
        out += fmt::format("  then the {} table:\n", table);
      }
      out += stepLine(s) + "\n";
    }
  }
  out += outcomes.size() == 1 ? "\nOutcome:\n" : "\nOutcomes:\n";
  std::vector<std::string> assumed;
  for (const auto& o : outcomes) {
    out += fmt::format("  → {}\n", describeOutcome(o, report.packet));
    for (const auto& a : o.assumptions) {
      if (std::find(assumed.begin(), assumed.end(), a) == assumed.end()) assumed.push_back(a);
    }
  }
  for (const auto& a : assumed) out += "Assumed: " + a + "\n";
  return out;
}

nlohmann::json traceToJson(const TraceReport& report) {
  const TracePacket& p = report.packet;
  nlohmann::json packet = {
      {"protocol", p.protocol},
      {"destination", p.destination.toString()},
      {"source", p.source ? nlohmann::json(p.source->toString()) : nlohmann::json(nullptr)},
      {"out_interface",
       p.out_interface ? nlohmann::json(*p.out_interface) : nlohmann::json(nullptr)},
      {"origin", p.origin == TraceOrigin::kArriving ? "arriving" : "local"},
      {"in_interface", p.in_interface ? nlohmann::json(*p.in_interface) : nlohmann::json(nullptr)},
      {"uid", p.uid},
      {"gid", p.gid ? nlohmann::json(*p.gid) : nlohmann::json(nullptr)},
      {"mark", p.mark},
  };
  nlohmann::json outcomes = nlohmann::json::array();
  for (const auto& o : report.result.outcomes) {
    nlohmann::json path = nlohmann::json::array();
    for (const auto& s : o.path) {
      path.push_back({{"table", s.table},
                      {"chain", s.chain},
                      {"rule_index", s.rule_index},
                      {"rule", s.rule},
                      {"verdict", toString(s.verdict)},
                      {"detail", s.detail},
                      {"depth", s.depth}});
    }
    outcomes.push_back({
        {"kind", toString(o.kind)},
        {"probability", o.probability},
        {"table", o.table},
        {"chain", o.chain},
        {"rule_index", o.rule_index},
        {"target", o.target},
        {"destination",
         o.destination ? nlohmann::json(o.destination->toString()) : nlohmann::json(nullptr)},
        {"reason", o.reason},
        {"comment", o.comment},
        {"translated", o.translated},
        {"accepted_by", o.accepted_by},
        {"source_nat", o.source_nat},
        {"assumptions", o.assumptions},
        {"mark", o.mark},
        {"summary", describeOutcome(o, p)},
        {"path", std::move(path)},
    });
  }
  const bool arriving = p.origin == TraceOrigin::kArriving;
  nlohmann::json tables = report.result.tables.empty() ? nlohmann::json::array({"nat"})
                                                       : nlohmann::json(report.result.tables);
  return {{"backend", report.backend},      {"table", "nat"},
          {"tables", std::move(tables)},    {"chain", arriving ? "PREROUTING" : "OUTPUT"},
          {"packet", std::move(packet)},    {"notes", report.notes},
          {"outcomes", std::move(outcomes)}};
}

}  // namespace remora::intercept
