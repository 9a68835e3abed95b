#include "intercept/trace_nft.h"

#include <fmt/format.h>

#include <algorithm>
#include <regex>
#include <sstream>
#include <variant>

#include "intercept/nftables_applier.h"

namespace remora::intercept {
namespace {

using nlohmann::json;

constexpr size_t kMaxDepth = 64;
constexpr size_t kMaxOutcomes = 4096;
constexpr size_t kMaxRuleVisits = 5'000'000;

// ---- values -----------------------------------------------------------------------------------

// What a left-hand expression evaluates to for the traced packet: an address, a number (ports,
// protocol numbers, marks, ids), a string (interface names, nfproto, fib types, ct states) or a
// concatenation of those.
struct Value;
using Scalar = std::variant<IpAddress, uint64_t, std::string>;
struct Value {
  std::vector<Scalar> parts;  // one part unless concatenated
};

std::optional<uint64_t> protocolNumberOf(std::string_view name) {
  static const std::pair<std::string_view, uint64_t> kNames[] = {
      {"tcp", 6}, {"udp", 17}, {"icmp", 1}, {"ipv6-icmp", 58}, {"icmpv6", 58}, {"sctp", 132}};
  for (const auto& [n, v] : kNames) {
    if (n == name) return v;
  }
  return std::nullopt;
}

// A right-hand literal compared with one part of the packet's value: equality, a prefix or a
// range. nullopt: the literal is not understood.
std::optional<bool> scalarMatches(const Scalar& have, const json& want) {
  if (const auto* ip = std::get_if<IpAddress>(&have)) {
    if (want.is_string()) {
      auto w = IpAddress::parse(want.get<std::string>());
      if (!w) return std::nullopt;
      return *w == *ip;
    }
    if (want.is_object() && want.contains("prefix")) {
      const auto& p = want["prefix"];
      if (!p.contains("addr") || !p["addr"].is_string() || !p.contains("len")) return std::nullopt;
      auto c = Cidr::parse(fmt::format("{}/{}", p["addr"].get<std::string>(), p["len"].dump()));
      if (!c) return std::nullopt;
      return c->contains(*ip);
    }
    if (want.is_object() && want.contains("range") && want["range"].is_array() &&
        want["range"].size() == 2 && want["range"][0].is_string() && want["range"][1].is_string()) {
      auto lo = IpAddress::parse(want["range"][0].get<std::string>());
      auto hi = IpAddress::parse(want["range"][1].get<std::string>());
      if (!lo || !hi || lo->family != ip->family) return std::nullopt;
      return !(ip->bytes < lo->bytes) && !(hi->bytes < ip->bytes);
    }
    return std::nullopt;
  }
  if (const auto* n = std::get_if<uint64_t>(&have)) {
    if (want.is_number_unsigned() || want.is_number_integer()) return want.get<uint64_t>() == *n;
    if (want.is_string()) {
      auto proto = protocolNumberOf(want.get<std::string>());
      if (!proto) return std::nullopt;
      return *proto == *n;
    }
    if (want.is_object() && want.contains("range") && want["range"].is_array() &&
        want["range"].size() == 2 && want["range"][0].is_number() && want["range"][1].is_number()) {
      return *n >= want["range"][0].get<uint64_t>() && *n <= want["range"][1].get<uint64_t>();
    }
    return std::nullopt;
  }
  const auto& s = std::get<std::string>(have);
  if (!want.is_string()) return std::nullopt;
  const auto w = want.get<std::string>();
  // Interface names: a trailing '*' is a prefix match.
  if (w.ends_with('*')) return s.starts_with(std::string_view(w).substr(0, w.size() - 1));
  return s == w;
}

std::string valueText(const Value& v) {
  std::vector<std::string> parts;
  for (const auto& p : v.parts) {
    if (const auto* ip = std::get_if<IpAddress>(&p)) {
      parts.push_back(ip->toString());
    } else if (const auto* n = std::get_if<uint64_t>(&p)) {
      parts.push_back(std::to_string(*n));
    } else {
      parts.push_back(std::get<std::string>(p));
    }
  }
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : " . ") + p;
  return out;
}

// ---- the walk ---------------------------------------------------------------------------------

struct NftFrame {
  std::string chain;
  size_t next = 0;
};

struct NftBranch {
  std::string chain;
  size_t next = 0;
  std::vector<NftFrame> stack;  // callers of jumps (a goto replaces the current frame)
  uint32_t mark = 0;
  double probability = 1.0;
  std::vector<TraceStep> path;
};

// A verdict a rule or a map element gives.
struct Verdict {
  std::string kind;  // "jump", "goto", "return", "accept", "drop", "continue"
  std::string target;
};

std::optional<Verdict> verdictOf(const json& v) {
  if (!v.is_object() || v.size() != 1) return std::nullopt;
  const std::string& kind = v.begin().key();
  const json& body = v.begin().value();
  if (kind == "jump" || kind == "goto") {
    if (!body.is_object() || !body.contains("target") || !body["target"].is_string()) {
      return std::nullopt;
    }
    return Verdict{kind, body["target"].get<std::string>()};
  }
  if (kind == "return" || kind == "accept" || kind == "drop" || kind == "continue") {
    return Verdict{kind, {}};
  }
  return std::nullopt;
}

class NftWalker {
 public:
  NftWalker(const NftTable& table, std::string_view base, const TracePacket& packet,
            const TraceContext& context, bool translated)
      : table_(table),
        label_(table.label()),
        base_(base),
        packet_(packet),
        context_(context),
        translated_(translated) {}

  TraceResult run() {
    auto it = table_.chains.find(base_);
    policy_ = it == table_.chains.end() ? "accept" : it->second.policy;
    NftBranch first;
    first.chain = base_;
    first.mark = packet_.mark;
    pending_.push_back(std::move(first));
    while (!pending_.empty()) {
      NftBranch b = std::move(pending_.back());
      pending_.pop_back();
      if (result_.outcomes.size() >= kMaxOutcomes) {
        undetermined(b, fmt::format("more than {} random branches", kMaxOutcomes));
        continue;
      }
      walk(b);
    }
    return std::move(result_);
  }

 private:
  // The result of one rule for one branch: go on with the next rule, or stop this branch.
  enum class Next { kRule, kStop };

  void walk(NftBranch& b) {
    while (true) {
      if (++visits_ > kMaxRuleVisits) {
        undetermined(b, "the walk visited too many rules");
        return;
      }
      auto it = table_.chains.find(b.chain);
      if (it == table_.chains.end() || b.next >= it->second.rules.size()) {
        if (!endOfChain(b)) return;
        continue;
      }
      const NftRule& rule = it->second.rules[b.next];
      const size_t index = ++b.next;
      TraceStep step{label_, b.chain, index, rule.text, StepVerdict::kContinue, "", b.stack.size()};
      if (statements(b, rule, step) == Next::kStop) return;
    }
  }

  // Runs a rule's statements in order. A failing match ends the rule (next rule).
  Next statements(NftBranch& b, const NftRule& rule, TraceStep& step) {
    if (!rule.expr.is_array()) return cannot(b, step, "the rule has no statements");
    bool acted = false;
    for (const auto& st : rule.expr) {
      if (!st.is_object() || st.size() != 1) return cannot(b, step, "a statement is not an object");
      const std::string& kind = st.begin().key();
      const json& body = st.begin().value();
      if (kind == "match") {
        std::string why;
        auto m = match(body, b.mark, why);
        if (!m) return cannot(b, step, why);
        if (!*m) {
          if (acted) b.path.push_back(step);
          return Next::kRule;
        }
        continue;
      }
      if (kind == "counter" || kind == "log" || kind == "limit" || kind == "notrack") {
        continue;
      }
      if (kind == "mangle") {
        auto mark = mangleMark(body, b.mark);
        if (!mark) return cannot(b, step, "a mangle statement other than 'meta mark set'");
        b.mark = *mark;
        step.detail = fmt::format("mark is now {:#x}", b.mark);
        acted = true;
        continue;
      }
      if (auto v = verdictOf(st)) return verdict(b, rule, step, *v);
      if (kind == "vmap") return vmap(b, rule, step, body);
      return terminal(b, rule, step, kind, body);
    }
    if (!acted) step.detail = "no verdict: counted only";
    b.path.push_back(step);
    return Next::kRule;
  }

  Next cannot(NftBranch& b, TraceStep& step, const std::string& why) {
    step.verdict = StepVerdict::kUndetermined;
    step.detail = why;
    b.path.push_back(step);
    undetermined(b, fmt::format("{} #{}: {}", step.chain, step.rule_index, why));
    return Next::kStop;
  }

  Next verdict(NftBranch& b, const NftRule& rule, TraceStep& step, const Verdict& v) {
    if (v.kind == "continue") {
      b.path.push_back(step);
      return Next::kRule;
    }
    if (v.kind == "jump" || v.kind == "goto") {
      if (table_.chains.find(v.target) == table_.chains.end()) {
        return cannot(
            b, step, fmt::format("{} to {}, which is not a chain of {}", v.kind, v.target, label_));
      }
      step.verdict = v.kind == "jump" ? StepVerdict::kJump : StepVerdict::kGoto;
      step.detail = step.detail.empty() ? v.target : step.detail + "; " + v.target;
      b.path.push_back(step);
      return enter(b, v.target, v.kind == "goto") ? Next::kRule : Next::kStop;
    }
    if (v.kind == "return") {
      step.verdict = StepVerdict::kReturn;
      b.path.push_back(step);
      return leave(b) ? Next::kRule : Next::kStop;
    }
    TraceOutcome out = outcomeOf(rule, step);
    out.kind = v.kind == "accept" ? OutcomeKind::kUnchanged : OutcomeKind::kDrop;
    out.target = v.kind;
    if (v.kind == "accept") out.destination = packet_.destination;
    step.verdict = StepVerdict::kTerminal;
    step.detail = step.detail.empty() ? v.kind : fmt::format("{} ({})", v.kind, step.detail);
    b.path.push_back(step);
    finish(b, std::move(out));
    return Next::kStop;
  }

  // `... vmap @map` or `... vmap { k : verdict, ... }`; with `numgen random mod N` as the key,
  // one branch per element, each with its share of the N values.
  Next vmap(NftBranch& b, const NftRule& rule, TraceStep& step, const json& body) {
    if (!body.is_object() || !body.contains("key") || !body.contains("data")) {
      return cannot(b, step, "a vmap without key or data");
    }
    std::vector<NftSet::Element> inline_elements;
    const std::vector<NftSet::Element>* elements = nullptr;
    const auto& data = body["data"];
    if (data.is_string() && data.get<std::string>().starts_with('@')) {
      auto set = table_.sets.find(std::string_view(data.get<std::string>()).substr(1));
      if (set == table_.sets.end()) return cannot(b, step, "vmap " + data.dump() + ": no such map");
      elements = &set->second.elements;
    } else if (data.is_object() && data.contains("set") && data["set"].is_array()) {
      for (const auto& e : data["set"]) {
        if (!e.is_array() || e.size() != 2) return cannot(b, step, "a vmap element not understood");
        inline_elements.push_back({e[0], e[1], {}});
      }
      elements = &inline_elements;
    } else {
      return cannot(b, step, "a vmap's data not understood");
    }

    const auto& key = body["key"];
    if (key.is_object() && key.contains("numgen")) return numgen(b, rule, step, key, *elements);
    std::string why;
    auto value = evaluate(key, b.mark, why);
    if (!value) return cannot(b, step, why);
    for (const auto& e : *elements) {
      auto in = elementMatches(*value, e.key, why);
      if (!in) return cannot(b, step, why);
      if (!*in) continue;
      auto v = verdictOf(e.value);
      if (!v) return cannot(b, step, "a vmap element's verdict not understood");
      step.detail = fmt::format("{} matched{}", valueText(*value),
                                e.comment.empty() ? "" : " \"" + e.comment + "\"");
      comment_ = e.comment;
      return verdict(b, rule, step, *v);
    }
    // No element: the rule does not match.
    step.detail = fmt::format("{} is not in the map: no verdict", valueText(*value));
    b.path.push_back(step);
    return Next::kRule;
  }

  Next numgen(NftBranch& b, const NftRule& rule, TraceStep& step, const json& key,
              const std::vector<NftSet::Element>& elements) {
    const auto& n = key["numgen"];
    if (!n.is_object() || n.value("mode", "") != "random" || !n.contains("mod") ||
        !n["mod"].is_number_unsigned() || n["mod"].get<uint64_t>() == 0) {
      return cannot(b, step, "numgen: only 'numgen random mod N' can be evaluated");
    }
    const uint64_t mod = n["mod"].get<uint64_t>();
    const uint64_t offset = n.value("offset", uint64_t{0});
    // The share of each element: how many of offset..offset+mod-1 it holds.
    std::vector<std::pair<const NftSet::Element*, uint64_t>> shares;
    uint64_t covered = 0;
    for (const auto& e : elements) {
      uint64_t count = 0;
      for (uint64_t i = offset; i < offset + mod && i - offset < 65536; ++i) {
        auto in = scalarMatches(Scalar{i}, e.key);
        if (!in) return cannot(b, step, "numgen map key not understood");
        if (*in) ++count;
      }
      if (count != 0) shares.emplace_back(&e, count);
      covered += count;
    }
    if (covered < mod) {
      NftBranch none = b;
      TraceStep s = step;
      s.detail = fmt::format("numgen value in no element, {}: no verdict",
                             formatProbability(static_cast<double>(mod - covered) / mod));
      none.probability *= static_cast<double>(mod - covered) / mod;
      none.path.push_back(std::move(s));
      pending_.push_back(std::move(none));
    }
    // Queued in reverse, so the branches come out in the map's order after this one.
    for (size_t i = shares.size(); i-- > 1;) {
      NftBranch other = b;
      TraceStep s = step;
      if (share(other, rule, s, *shares[i].first, shares[i].second, mod) == Next::kRule) {
        pending_.push_back(std::move(other));
      }
    }
    if (shares.empty()) return Next::kStop;
    return share(b, rule, step, *shares[0].first, shares[0].second, mod);
  }

  // Follows one element of a numgen map on `b`, which gets its share of the probability.
  Next share(NftBranch& b, const NftRule& rule, TraceStep& step, const NftSet::Element& e,
             uint64_t count, uint64_t mod) {
    const double p = static_cast<double>(count) / static_cast<double>(mod);
    b.probability *= p;
    step.detail = fmt::format("numgen random chose {}, {}", e.key.dump(), formatProbability(p));
    auto v = verdictOf(e.value);
    if (!v) return cannot(b, step, "a vmap element's verdict not understood");
    return verdict(b, rule, step, *v);
  }

  Next terminal(NftBranch& b, const NftRule& rule, TraceStep& step, const std::string& kind,
                const json& body) {
    TraceOutcome out = outcomeOf(rule, step);
    out.target = kind;
    if (kind == "reject") {
      out.kind = OutcomeKind::kReject;
      out.target = rejectText(body);
    } else if (kind == "dnat") {
      out.kind = OutcomeKind::kDnat;
      out.target = "dnat to " + natText(body);
      if (body.is_object() && body.contains("addr") && body["addr"].is_string()) {
        auto ip = IpAddress::parse(body["addr"].get<std::string>());
        uint16_t port = packet_.destination.port;
        bool single = ip.ok();
        if (body.contains("port")) {
          single = single && body["port"].is_number_unsigned();
          if (single) port = body["port"].get<uint16_t>();
        }
        if (single) out.destination = SocketAddress{*ip, port};
      }
    } else if (kind == "redirect") {
      out.kind = OutcomeKind::kRedirect;
      out.target = body.is_object() ? "redirect to " + natText(body) : "redirect";
      uint16_t port = packet_.destination.port;
      bool single = true;
      if (body.is_object() && body.contains("port")) {
        single = body["port"].is_number_unsigned();
        if (single) port = body["port"].get<uint16_t>();
      }
      auto address = redirectAddress(packet_, context_);
      if (!address.ip && address.known) {
        out.kind = OutcomeKind::kDrop;
        out.reason = address.why;
      } else if (address.ip && single) {
        out.destination = SocketAddress{*address.ip, port};
      } else if (!address.ip) {
        out.reason = address.why;
      }
    } else if (kind == "masquerade" || kind == "snat") {
      out.kind = OutcomeKind::kOther;
    } else {
      return cannot(b, step, fmt::format("'{}' is a statement the trace does not know", kind));
    }
    step.verdict = StepVerdict::kTerminal;
    step.detail =
        step.detail.empty() ? out.target : fmt::format("{} ({})", out.target, step.detail);
    b.path.push_back(step);
    finish(b, std::move(out));
    return Next::kStop;
  }

  TraceOutcome outcomeOf(const NftRule& rule, const TraceStep& step) {
    TraceOutcome out;
    out.chain = step.chain;
    out.rule_index = step.rule_index;
    out.comment = !comment_.empty() ? comment_ : rule.comment;
    comment_.clear();
    return out;
  }

  static std::string natText(const json& body) {
    if (!body.is_object()) return "";
    std::string text;
    if (body.contains("addr")) {
      text = body["addr"].is_string() ? body["addr"].get<std::string>() : body["addr"].dump();
    }
    if (body.contains("port")) text += ":" + body["port"].dump();
    return text;
  }

  static std::string rejectText(const json& body) {
    if (!body.is_object()) return "reject";
    const std::string type = body.value("type", "");
    if (type == "tcp reset") return "reject with tcp reset";
    const std::string expr = body.contains("expr") && body["expr"].is_string()
                                 ? body["expr"].get<std::string>()
                                 : "port-unreachable";
    return fmt::format("reject with {} {}", type.empty() ? "icmpx" : type, expr);
  }

  bool enter(NftBranch& b, const std::string& chain, bool go_to) {
    if (!go_to) {
      if (b.stack.size() >= kMaxDepth) {
        undetermined(b, fmt::format("jumps nest deeper than {}", kMaxDepth));
        return false;
      }
      b.stack.push_back(NftFrame{b.chain, b.next});
    }
    b.chain = chain;
    b.next = 0;
    return true;
  }

  bool leave(NftBranch& b) {
    if (b.stack.empty()) {
      policy(b);
      return false;
    }
    b.chain = b.stack.back().chain;
    b.next = b.stack.back().next;
    b.stack.pop_back();
    return true;
  }

  bool endOfChain(NftBranch& b) {
    if (b.chain != base_ || !b.stack.empty()) {
      b.path.push_back(TraceStep{
          label_, b.chain, 0, "(end of chain)", StepVerdict::kEndOfChain,
          b.stack.empty() ? "back to the " + base_ + " policy" : "back to " + b.stack.back().chain,
          b.stack.size()});
      return leave(b);
    }
    policy(b);
    return false;
  }

  void policy(NftBranch& b) {
    b.path.push_back(TraceStep{label_, base_, 0, "policy " + policy_, StepVerdict::kPolicy, "", 0});
    finish(b, policyOutcome(base_, policy_, policy_ == "drop", packet_.destination));
  }

  void undetermined(NftBranch& b, std::string reason) {
    finish(b, undeterminedOutcome(b.chain, b.path, std::move(reason)));
  }

  void finish(NftBranch& b, TraceOutcome out) {
    out.table = label_;
    out.probability = b.probability;
    out.mark = b.mark;
    out.path = std::move(b.path);
    result_.outcomes.push_back(std::move(out));
  }

  // ---- expressions ----

  std::optional<Value> evaluate(const json& e, uint32_t mark, std::string& why) const {
    auto one = [](Scalar s) { return Value{{std::move(s)}}; };
    if (e.is_object() && e.contains("concat") && e["concat"].is_array()) {
      Value v;
      for (const auto& part : e["concat"]) {
        auto p = evaluate(part, mark, why);
        if (!p) return std::nullopt;
        v.parts.insert(v.parts.end(), p->parts.begin(), p->parts.end());
      }
      return v;
    }
    if (e.is_object() && e.contains("payload")) {
      const auto& p = e["payload"];
      const std::string proto = p.value("protocol", "");
      const std::string field = p.value("field", "");
      const bool v4 = packet_.destination.ip.family == Family::kIpv4;
      if (proto == "ip" || proto == "ip6") {
        if ((proto == "ip") != v4) {
          why = fmt::format("{} {} on a packet of the other family", proto, field);
          return std::nullopt;
        }
        if (field == "daddr") return one(packet_.destination.ip);
        if (field == "saddr") {
          if (!packet_.source) {
            why = fmt::format("{} saddr needs the source address, which is not known", proto);
            return std::nullopt;
          }
          return one(*packet_.source);
        }
      }
      if (proto == "tcp" || proto == "udp" || proto == "th") {
        if (proto != "th" && proto != packet_.protocol) {
          why = fmt::format("{} {} on a {} packet", proto, field, packet_.protocol);
          return std::nullopt;
        }
        if (field == "dport") return one(uint64_t{packet_.destination.port});
        if (field == "sport") {
          why = fmt::format(
              "{} sport needs the source port, which the kernel picks at connect "
              "time",
              proto);
          return std::nullopt;
        }
      }
      why = fmt::format("payload {} {}: the trace does not evaluate this field", proto, field);
      return std::nullopt;
    }
    if (e.is_object() && e.contains("meta")) return meta(e["meta"].value("key", ""), mark, why);
    if (e.is_object() && e.contains("ct")) {
      const std::string key = e["ct"].value("key", "");
      if (key == "state") return one(std::string("new"));
      if (key == "status" && translated_) return one(std::string("dnat"));
      why = fmt::format("ct {}: the trace evaluates only the connection state", key);
      return std::nullopt;
    }
    if (e.is_object() && e.contains("fib")) return fib(e["fib"], why);
    if (e.is_object() && e.contains("&") && e["&"].is_array() && e["&"].size() == 2) {
      auto left = evaluate(e["&"][0], mark, why);
      if (!left) return std::nullopt;
      const auto* n = left->parts.size() == 1 ? std::get_if<uint64_t>(&left->parts[0]) : nullptr;
      if (n == nullptr || !e["&"][1].is_number_unsigned()) {
        why = "a bitwise and the trace does not evaluate";
        return std::nullopt;
      }
      return one(*n & e["&"][1].get<uint64_t>());
    }
    why = fmt::format("{}: the trace does not evaluate this expression", e.dump());
    return std::nullopt;
  }

  std::optional<Value> meta(const std::string& key, uint32_t mark, std::string& why) const {
    auto one = [](Scalar s) { return Value{{std::move(s)}}; };
    const bool v4 = packet_.destination.ip.family == Family::kIpv4;
    if (key == "l4proto" || key == "protocol") {
      if (key == "protocol") return one(uint64_t{v4 ? 0x0800u : 0x86ddu});
      auto n = protocolNumberOf(packet_.protocol);
      if (!n) {
        why = "unknown protocol";
        return std::nullopt;
      }
      return one(*n);
    }
    if (key == "nfproto") return one(std::string(v4 ? "ipv4" : "ipv6"));
    if (key == "mark") return one(uint64_t{mark});
    if (key == "skuid" || key == "skgid") {
      if (packet_.origin != TraceOrigin::kLocal) {
        why = fmt::format("meta {}: an arriving packet has no local socket", key);
        return std::nullopt;
      }
      if (key == "skuid") return one(uint64_t{packet_.uid});
      if (!packet_.gid) {
        why = "meta skgid needs the gid, which is not known";
        return std::nullopt;
      }
      return one(uint64_t{*packet_.gid});
    }
    if (key == "iifname") {
      if (packet_.origin == TraceOrigin::kLocal) return one(std::string());
      if (!packet_.in_interface) {
        why = "meta iifname needs the input interface, which is not known";
        return std::nullopt;
      }
      return one(*packet_.in_interface);
    }
    if (key == "oifname") {
      if (!packet_.out_interface) {
        why = "meta oifname needs the output interface, which is not known";
        return std::nullopt;
      }
      return one(*packet_.out_interface);
    }
    why = fmt::format("meta {}: the trace does not evaluate this key", key);
    return std::nullopt;
  }

  // `fib daddr type` / `fib saddr type`: "local" for an address of this netns.
  std::optional<Value> fib(const json& f, std::string& why) const {
    const bool daddr = f.contains("flags") && f["flags"].dump().find("daddr") != std::string::npos;
    const bool saddr = f.contains("flags") && f["flags"].dump().find("saddr") != std::string::npos;
    if (f.value("result", "") != "type" || daddr == saddr) {
      why = "fib: only 'fib daddr type' and 'fib saddr type' can be evaluated";
      return std::nullopt;
    }
    if (!context_.local_networks) {
      why = "fib ... type needs the netns's local addresses, which are not known";
      return std::nullopt;
    }
    if (!daddr && !packet_.source) {
      why = "fib saddr type needs the source address, which is not known";
      return std::nullopt;
    }
    const IpAddress ip = daddr ? packet_.destination.ip : *packet_.source;
    const auto& nets = *context_.local_networks;
    const bool local =
        std::any_of(nets.begin(), nets.end(), [&](const Cidr& c) { return c.contains(ip); });
    return Value{{std::string(local ? "local" : "unicast")}};
  }

  // Whether `have` is matched by one set element or literal `want`.
  std::optional<bool> elementMatches(const Value& have, const json& want, std::string& why) const {
    const json* key = &want;
    if (want.is_object() && want.contains("elem") && want["elem"].contains("val")) {
      key = &want["elem"]["val"];
    }
    if (key->is_object() && key->contains("concat")) {
      const auto& parts = (*key)["concat"];
      if (!parts.is_array() || parts.size() != have.parts.size()) {
        why = "a concatenation of another length";
        return std::nullopt;
      }
      for (size_t i = 0; i < parts.size(); ++i) {
        auto m = scalarMatches(have.parts[i], parts[i]);
        if (!m) {
          why = fmt::format("{}: not understood", parts[i].dump());
          return std::nullopt;
        }
        if (!*m) return false;
      }
      return true;
    }
    if (have.parts.size() != 1) {
      why = "a concatenation compared with one value";
      return std::nullopt;
    }
    auto m = scalarMatches(have.parts[0], *key);
    if (!m) why = fmt::format("{}: not understood", key->dump());
    return m;
  }

  // One `match` statement; nullopt with `why` when it cannot be evaluated.
  std::optional<bool> match(const json& body, uint32_t mark, std::string& why) const {
    const std::string op = body.value("op", "==");
    if (!body.contains("left") || !body.contains("right")) {
      why = "a match without operands";
      return std::nullopt;
    }
    auto have = evaluate(body["left"], mark, why);
    if (!have) return std::nullopt;
    const json& right = body["right"];
    // ct state and other flag sets: "in" tests whether any named flag is set.
    std::optional<bool> in;
    if (right.is_string() && right.get<std::string>().starts_with('@')) {
      auto set = table_.sets.find(std::string_view(right.get<std::string>()).substr(1));
      if (set == table_.sets.end()) {
        why = "set " + right.get<std::string>() + " does not exist";
        return std::nullopt;
      }
      in = false;
      for (const auto& e : set->second.elements) {
        auto m = elementMatches(*have, e.key, why);
        if (!m) return std::nullopt;
        if (*m) {
          in = true;
          break;
        }
      }
    } else if (right.is_object() && right.contains("set") && right["set"].is_array()) {
      in = false;
      for (const auto& e : right["set"]) {
        auto m = elementMatches(*have, e, why);
        if (!m) return std::nullopt;
        if (*m) {
          in = true;
          break;
        }
      }
    } else if (right.is_array()) {  // a flag list: ct state { established, related } in JSON
      in = false;
      for (const auto& e : right) {
        auto m = elementMatches(*have, e, why);
        if (!m) return std::nullopt;
        if (*m) in = true;
      }
    } else {
      in = elementMatches(*have, right, why);
      if (!in) return std::nullopt;
    }
    if (op == "==" || op == "in") return *in;
    if (op == "!=") return !*in;
    why = fmt::format("match operator '{}' is not evaluated", op);
    return std::nullopt;
  }

  static std::optional<uint32_t> mangleMark(const json& body, uint32_t mark) {
    if (!body.is_object() || !body.contains("key") || !body.contains("value") ||
        body["key"] != json{{"meta", {{"key", "mark"}}}}) {
      return std::nullopt;
    }
    const auto& v = body["value"];
    if (v.is_number_unsigned()) return v.get<uint32_t>();
    if (!v.is_object() || v.size() != 1) return std::nullopt;
    const std::string& op = v.begin().key();
    const json& args = v.begin().value();
    if (!args.is_array() || args.size() != 2 || args[0] != json{{"meta", {{"key", "mark"}}}} ||
        !args[1].is_number_unsigned()) {
      return std::nullopt;
    }
    const auto n = args[1].get<uint32_t>();
    if (op == "|") return mark | n;
    if (op == "^") return mark ^ n;
    if (op == "&") return mark & n;
    return std::nullopt;
  }

  const NftTable& table_;
  std::string label_;
  std::string base_;
  const TracePacket& packet_;
  const TraceContext& context_;
  bool translated_;
  std::string policy_;
  std::string comment_;  // the matched map element's comment, for the outcome
  std::vector<NftBranch> pending_;
  TraceResult result_;
  size_t visits_ = 0;
};

bool iptablesNftTable(const std::string& family, const std::string& name) {
  static const std::string_view kNames[] = {"filter", "nat", "mangle", "raw", "security"};
  return (family == "ip" || family == "ip6") &&
         std::find(std::begin(kNames), std::end(kNames), name) != std::end(kNames);
}

// "table ip kube-proxy {" ... "\t\tip daddr 10.0.0.1 drop # handle 12": each rule's text by
// (table, handle).
std::map<std::pair<std::string, uint64_t>, std::string> ruleTexts(const std::string& text) {
  std::map<std::pair<std::string, uint64_t>, std::string> out;
  static const std::regex kTable(R"(^table (\S+) (\S+) \{)");
  static const std::regex kRule(R"(^\s+(.*\S)\s+# handle (\d+)\s*$)");
  static const std::regex kDecl(R"(^\s*(chain|set|map|flowtable|type|elements|policy) )");
  std::istringstream in(text);
  std::string line;
  std::string table;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, kTable)) {
      table = m[1].str() + " " + m[2].str();
    } else if (std::regex_match(line, m, kRule) && !std::regex_search(line, kDecl)) {
      out[{table, std::stoull(m[2].str())}] = m[1].str();
    }
  }
  return out;
}

}  // namespace

bool NftTable::sees(Family f) const {
  if (family == "inet") return true;
  return family == (f == Family::kIpv4 ? "ip" : "ip6");
}

Result<NftRuleset> parseNftRuleset(const std::string& text_json, const std::string& text) {
  auto j = json::parse(text_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("nftables") || !j["nftables"].is_array()) {
    return makeError("the nftables ruleset is not libnftables JSON");
  }
  const auto texts = ruleTexts(text);
  NftRuleset ruleset;
  auto tableOf = [&](const json& o) -> NftTable* {
    const std::string family = o.value("family", "");
    const std::string name = o.value("table", "");
    for (auto& t : ruleset.tables) {
      if (t.family == family && t.name == name) return &t;
    }
    return nullptr;
  };
  for (const auto& item : j["nftables"]) {
    if (!item.is_object() || item.size() != 1) continue;
    const std::string& kind = item.begin().key();
    const json& o = item.begin().value();
    if (!o.is_object()) continue;
    if (kind == "table") {
      const std::string family = o.value("family", "");
      const std::string name = o.value("name", "");
      if (!iptablesNftTable(family, name)) ruleset.tables.push_back(NftTable{family, name, {}, {}});
      continue;
    }
    NftTable* table = tableOf(o);
    if (table == nullptr) continue;
    if (kind == "chain") {
      NftChain c;
      c.name = o.value("name", "");
      c.type = o.value("type", "");
      c.hook = o.value("hook", "");
      c.priority = o.value("prio", 0);
      c.policy = o.value("policy", "accept");
      table->chains[c.name] = std::move(c);
    } else if (kind == "set" || kind == "map") {
      NftSet s;
      if (o.contains("elem") && o["elem"].is_array()) {
        for (const auto& e : o["elem"]) {
          NftSet::Element el;
          const json& key = kind == "map" && e.is_array() && e.size() == 2 ? e[0] : e;
          if (kind == "map" && e.is_array() && e.size() == 2) el.value = e[1];
          el.key = key;
          if (key.is_object() && key.contains("elem")) {
            el.key = key["elem"].value("val", json());
            el.comment = key["elem"].value("comment", "");
          }
          s.elements.push_back(std::move(el));
        }
      }
      table->sets[o.value("name", "")] = std::move(s);
    } else if (kind == "rule") {
      auto chain = table->chains.find(o.value("chain", ""));
      if (chain == table->chains.end()) continue;
      NftRule r;
      r.handle = o.value("handle", uint64_t{0});
      r.comment = o.value("comment", "");
      r.expr = o.value("expr", json::array());
      auto t = texts.find({table->label(), r.handle});
      r.text = t != texts.end() ? t->second : fmt::format("(handle {})", r.handle);
      chain->second.rules.push_back(std::move(r));
    }
  }
  return ruleset;
}

TraceResult traceNftChain(const NftTable& table, std::string_view chain, const TracePacket& packet,
                          const TraceContext& context, bool translated) {
  return NftWalker(table, chain, packet, context, translated).run();
}

std::vector<NftBaseChain> nftBaseChains(const NftRuleset& ruleset, Family family,
                                        std::string_view hook) {
  std::vector<NftBaseChain> out;
  for (const auto& t : ruleset.tables) {
    if (!t.sees(family)) continue;
    for (const auto& [name, c] : t.chains) {
      if (c.hook == hook) out.push_back({&t, &c});
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const NftBaseChain& a, const NftBaseChain& b) {
    return a.chain->priority < b.chain->priority;
  });
  return out;
}

Result<NftRuleset> readNftRuleset() {
  NftContext nft;
  auto j = nft.run("list ruleset", /*json=*/true);
  if (!j) return j.error();
  auto text = nft.run("list ruleset", /*json=*/false, /*handles=*/true);
  return parseNftRuleset(*j, text ? *text : std::string());
}

}  // namespace remora::intercept
