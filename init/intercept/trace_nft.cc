#include "intercept/trace_nft.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <optional>
#include <sstream>
#include <string_view>
#include <variant>

#include "intercept/nftables_applier.h"

namespace remora::intercept {
namespace {

using nlohmann::json;

// A member of a JSON object, or `fallback` when `o` is no object or the member is missing or of
// another type (json::value would throw on the last two).
std::string strOf(const json& o, const char* key, const char* fallback = "") {
  if (!o.is_object()) return fallback;
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : fallback;
}
template <typename T>
T numOf(const json& o, const char* key, T fallback) {
  if (!o.is_object()) return fallback;
  auto it = o.find(key);
  if (it == o.end() || !it->is_number_integer()) return fallback;
  if (it->is_number_unsigned()) {
    const auto n = it->get<uint64_t>();
    return n > static_cast<uint64_t>(std::numeric_limits<T>::max()) ? fallback : static_cast<T>(n);
  }
  const auto n = it->get<int64_t>();
  if (n < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
      (n > 0 && static_cast<uint64_t>(n) > static_cast<uint64_t>(std::numeric_limits<T>::max()))) {
    return fallback;
  }
  return static_cast<T>(n);
}
const json& memberOf(const json& o, const char* key) {
  static const json kNull;
  if (!o.is_object()) return kNull;
  auto it = o.find(key);
  return it != o.end() ? *it : kNull;
}

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
  uint32_t ct_mark = 0;
  double probability = 1.0;
  std::string comment;  // the last matched map element's comment, for the outcome
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

// `numgen random|inc mod N [offset O]`: the values O..O+N-1, each with a share of 1/N. `inc` is
// a round robin (each value in turn, so the split is exact over every N connections); `random`
// is a uniform draw.
struct Numgen {
  std::string mode;
  uint64_t mod = 1;
  uint64_t offset = 0;

  // "numgen inc (round robin) chose 1: 1 of every 3 connections in turn, 33.33%"
  std::string share(std::string_view what, uint64_t count) const {
    const std::string p = formatProbability(static_cast<double>(count) / static_cast<double>(mod));
    if (mode == "inc") {
      return fmt::format("numgen inc (round robin) {}: {} of every {} connections in turn, {}",
                         what, count, mod, p);
    }
    return fmt::format("numgen random {}, {}", what, p);
  }
};

constexpr uint64_t kMaxNumgenMod = 65536;

std::optional<Numgen> numgenOf(const json& e, std::string& why) {
  const json* n = e.is_object() && e.contains("numgen") ? &e["numgen"] : nullptr;
  if (n == nullptr || !n->is_object()) {
    why = "not a numgen expression";
    return std::nullopt;
  }
  Numgen g;
  g.mode = strOf(*n, "mode");
  if (g.mode != "random" && g.mode != "inc") {
    why = fmt::format("numgen {}: only 'random' and 'inc' are evaluated", g.mode);
    return std::nullopt;
  }
  if (!n->contains("mod") || !(*n)["mod"].is_number_unsigned() ||
      (*n)["mod"].get<uint64_t>() == 0 || (*n)["mod"].get<uint64_t>() > kMaxNumgenMod) {
    why = fmt::format("numgen: mod must be 1..{}", kMaxNumgenMod);
    return std::nullopt;
  }
  g.mod = (*n)["mod"].get<uint64_t>();
  if (n->contains("offset")) {
    if (!(*n)["offset"].is_number_unsigned() || (*n)["offset"].get<uint64_t>() > UINT32_MAX) {
      why = "numgen: offset not understood";
      return std::nullopt;
    }
    g.offset = (*n)["offset"].get<uint64_t>();
  }
  return g;
}

// The map elements a lookup can pick, with their share: one element (or none) for a key the
// packet decides; for a numgen key every element holding some of its values, and `nullptr` for
// the values no element holds.
struct Choice {
  const NftSet::Element* element = nullptr;  // nullptr: no element, the lookup fails
  uint64_t count = 1;                        // of `Choices::of`
};
struct Choices {
  std::vector<Choice> list;  // never empty
  uint64_t of = 1;
  std::optional<Numgen> numgen;
  std::string key_text;  // the packet's key, when not a numgen
};

std::string choiceText(const Choices& c, const Choice& ch) {
  if (c.numgen) {
    return c.numgen->share(ch.element != nullptr ? fmt::format("chose {}", ch.element->key.dump())
                                                 : std::string("chose no element (no verdict)"),
                           ch.count);
  }
  if (ch.element == nullptr) return fmt::format("{} is not in the map: no verdict", c.key_text);
  return fmt::format("{} matched{}", c.key_text,
                     ch.element->comment.empty() ? "" : " \"" + ch.element->comment + "\"");
}

bool isMark(const json& e, const char* kind) {
  return e.is_object() && e.size() == 1 && e.contains(kind) && e[kind].is_object() &&
         strOf(e[kind], "key") == "mark";
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
    first.ct_mark = packet_.ct_mark;
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
        auto m = body.is_object() && body.contains("left") && body["left"].is_object() &&
                         body["left"].contains("numgen")
                     ? numgenMatch(b, step, body, why)
                     : match(body, b, why);
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
        if (!mangle(b, step, body)) {
          return cannot(b, step,
                        "a mangle statement other than 'meta mark set' or 'ct mark set' (of a "
                        "number, the packet or connection mark, and | ^ & of those)");
        }
        acted = true;
        continue;
      }
      if (kind == "xt") {
        // iptables-nft's compat expressions: libnftables lists only the match's name.
        const std::string name = strOf(body, "name");
        const std::string type = strOf(body, "type");
        if (type == "match" && (name == "comment" || name == "nfacct")) continue;  // label, count
        return cannot(b, step,
                      fmt::format("iptables compat {} '{}' (xt): libnftables does not show its "
                                  "options, so the trace cannot evaluate it; see iptables-save",
                                  type.empty() ? "expression" : type, name));
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
    TraceOutcome out = outcomeOf(b, rule, step);
    out.kind = v.kind == "accept" ? OutcomeKind::kUnchanged : OutcomeKind::kDrop;
    out.target = v.kind;
    if (v.kind == "accept") out.destination = packet_.destination;
    step.verdict = StepVerdict::kTerminal;
    step.detail = step.detail.empty() ? v.kind : fmt::format("{} ({})", v.kind, step.detail);
    b.path.push_back(step);
    finish(b, std::move(out));
    return Next::kStop;
  }

  // A map's elements: a named map (`@name`) or an anonymous one (`{ k : v, ... }`, kept in
  // `storage`). nullptr with `why` when neither.
  const std::vector<NftSet::Element>* mapElements(const json& data,
                                                  std::vector<NftSet::Element>& storage,
                                                  std::string& why) const {
    if (data.is_string() && data.get<std::string>().starts_with('@')) {
      auto set = table_.sets.find(std::string_view(data.get<std::string>()).substr(1));
      if (set == table_.sets.end()) {
        why = "map " + data.get<std::string>() + " does not exist";
        return nullptr;
      }
      return &set->second.elements;
    }
    if (data.is_object() && data.contains("set") && data["set"].is_array()) {
      for (const auto& e : data["set"]) {
        if (!e.is_array() || e.size() != 2) {
          why = "a map element not understood";
          return nullptr;
        }
        storage.push_back({e[0], e[1], {}});
      }
      return &storage;
    }
    why = "a map's data not understood";
    return nullptr;
  }

  // What a lookup of `key` in `elements` can give (see Choices).
  std::optional<Choices> choose(const json& key, const std::vector<NftSet::Element>& elements,
                                const NftBranch& b, std::string& why) const {
    Choices c;
    if (key.is_object() && key.contains("numgen")) {
      auto gen = numgenOf(key, why);
      if (!gen) return std::nullopt;
      c.numgen = gen;
      c.of = gen->mod;
      uint64_t covered = 0;
      for (const auto& e : elements) {
        uint64_t count = 0;
        for (uint64_t i = 0; i < gen->mod; ++i) {
          auto in = scalarMatches(Scalar{gen->offset + i}, e.key);
          if (!in) {
            why = fmt::format("numgen map key {} not understood", e.key.dump());
            return std::nullopt;
          }
          if (*in) ++count;
        }
        if (count != 0) c.list.push_back({&e, count});
        covered += count;
      }
      if (covered < gen->mod) c.list.push_back({nullptr, gen->mod - covered});
      return c;
    }
    auto value = evaluate(key, b, why);
    if (!value) return std::nullopt;
    c.key_text = valueText(*value);
    for (const auto& e : elements) {
      auto in = elementMatches(*value, e.key, why);
      if (!in) return std::nullopt;
      if (*in) {
        c.list.push_back({&e, 1});
        return c;
      }
    }
    c.list.push_back({nullptr, 1});
    return c;
  }

  // Follows every choice: the first on `b`, the others on copies queued in the map's order.
  // Each branch gets its share of the probability.
  template <typename Follow>
  Next fork(NftBranch& b, TraceStep& step, const Choices& c, Follow&& follow) {
    // Queued in reverse, so they are walked in the map's order after `b`; the outcomes the
    // choices end at once (a dnat) are put back in the map's order below.
    const size_t start = result_.outcomes.size();
    for (size_t i = c.list.size(); i-- > 1;) {
      NftBranch other = b;
      TraceStep s = step;
      other.probability *= static_cast<double>(c.list[i].count) / static_cast<double>(c.of);
      if (follow(other, s, c.list[i]) == Next::kRule) pending_.push_back(std::move(other));
    }
    b.probability *= static_cast<double>(c.list[0].count) / static_cast<double>(c.of);
    const Next next = follow(b, step, c.list[0]);
    std::reverse(result_.outcomes.begin() + static_cast<std::ptrdiff_t>(start),
                 result_.outcomes.end());
    return next;
  }

  // `... vmap @map` or `... vmap { k : verdict, ... }`; with `numgen random|inc mod N` as the
  // key, one branch per element, each with its share of the N values.
  Next vmap(NftBranch& b, const NftRule& rule, TraceStep& step, const json& body) {
    if (!body.is_object() || !body.contains("key") || !body.contains("data")) {
      return cannot(b, step, "a vmap without key or data");
    }
    std::vector<NftSet::Element> storage;
    std::string why;
    const auto* elements = mapElements(body["data"], storage, why);
    if (elements == nullptr) return cannot(b, step, "vmap: " + why);
    auto c = choose(body["key"], *elements, b, why);
    if (!c) return cannot(b, step, why);
    return fork(b, step, *c, [&](NftBranch& br, TraceStep& s, const Choice& ch) {
      s.detail = choiceText(*c, ch);
      if (ch.element == nullptr) {  // no element: the rule does not match
        br.path.push_back(s);
        return Next::kRule;
      }
      auto v = verdictOf(ch.element->value);
      if (!v) return cannot(br, s, "a vmap element's verdict not understood");
      br.comment = ch.element->comment;
      return verdict(br, rule, s, *v);
    });
  }

  // `dnat to KEY map { k : addr, ... }`, `dnat ip addr . port to KEY map @m` (addr . port
  // values), `snat to ...`, a numgen key included: each element reached is a translation.
  Next natMap(NftBranch& b, const NftRule& rule, TraceStep& step, const std::string& kind,
              const json& body) {
    const json& m = body["addr"]["map"];
    if (!m.is_object() || !m.contains("key") || !m.contains("data")) {
      return cannot(b, step, kind + " to a map without key or data");
    }
    std::vector<NftSet::Element> storage;
    std::string why;
    const auto* elements = mapElements(m["data"], storage, why);
    if (elements == nullptr) return cannot(b, step, kind + ": " + why);
    auto c = choose(m["key"], *elements, b, why);
    if (!c) return cannot(b, step, why);
    return fork(b, step, *c, [&](NftBranch& br, TraceStep& s, const Choice& ch) {
      s.detail = choiceText(*c, ch);
      if (ch.element == nullptr) {  // the lookup fails: the rule does not match
        br.path.push_back(s);
        return Next::kRule;
      }
      json resolved = body;
      const json& v = ch.element->value;
      if (v.is_object() && v.contains("concat") && v["concat"].is_array() &&
          v["concat"].size() == 2) {
        resolved["addr"] = v["concat"][0];
        resolved["port"] = v["concat"][1];
      } else {
        resolved["addr"] = v;
      }
      if (resolved["addr"].is_object() && resolved["addr"].contains("map")) {
        return cannot(br, s, "a map whose value is a map");
      }
      br.comment = ch.element->comment;
      return terminal(br, rule, s, kind, resolved);
    });
  }

  // A match on `numgen ... mod N`: the share of the N values that match continues the rule,
  // the rest (queued) goes on with the next rule. nullopt with `why` when not evaluated.
  std::optional<bool> numgenMatch(NftBranch& b, TraceStep& step, const json& body,
                                  std::string& why) {
    auto gen = numgenOf(body["left"], why);
    if (!gen) return std::nullopt;
    uint64_t hits = 0;
    for (uint64_t i = 0; i < gen->mod; ++i) {
      auto m = matchValue(Value{{Scalar{gen->offset + i}}}, body, why);
      if (!m) return std::nullopt;
      if (*m) ++hits;
    }
    if (hits == 0 || hits == gen->mod) return hits != 0;
    const double p = static_cast<double>(hits) / static_cast<double>(gen->mod);
    NftBranch other = b;
    TraceStep s = step;
    s.verdict = StepVerdict::kRandomSkip;
    s.detail = gen->share("did not match", gen->mod - hits);
    other.probability *= 1.0 - p;
    other.path.push_back(std::move(s));
    pending_.push_back(std::move(other));
    b.probability *= p;
    step.detail = gen->share("matched", hits);
    return true;
  }

  Next terminal(NftBranch& b, const NftRule& rule, TraceStep& step, const std::string& kind,
                const json& body) {
    if ((kind == "dnat" || kind == "snat") && body.is_object() && body.contains("addr") &&
        body["addr"].is_object() && body["addr"].contains("map")) {
      return natMap(b, rule, step, kind, body);
    }
    TraceOutcome out = outcomeOf(b, rule, step);
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
      if (kind == "snat" && body.is_object() && body.contains("addr")) {
        out.target = "snat to " + natText(body);
      }
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

  static TraceOutcome outcomeOf(NftBranch& b, const NftRule& rule, const TraceStep& step) {
    TraceOutcome out;
    out.chain = step.chain;
    out.rule_index = step.rule_index;
    out.comment = !b.comment.empty() ? b.comment : rule.comment;
    b.comment.clear();
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
    const std::string type = strOf(body, "type");
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
    out.ct_mark = b.ct_mark;
    out.path = std::move(b.path);
    result_.outcomes.push_back(std::move(out));
  }

  // ---- expressions ----

  std::optional<Value> evaluate(const json& e, const NftBranch& b, std::string& why) const {
    auto one = [](Scalar s) { return Value{{std::move(s)}}; };
    if (e.is_object() && e.contains("concat") && e["concat"].is_array()) {
      Value v;
      for (const auto& part : e["concat"]) {
        auto p = evaluate(part, b, why);
        if (!p) return std::nullopt;
        v.parts.insert(v.parts.end(), p->parts.begin(), p->parts.end());
      }
      return v;
    }
    if (e.is_object() && e.contains("payload")) {
      const auto& p = e["payload"];
      const std::string proto = strOf(p, "protocol");
      const std::string field = strOf(p, "field");
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
    if (e.is_object() && e.contains("meta")) {
      return meta(strOf(e["meta"], "key"), b.mark, why);
    }
    if (e.is_object() && e.contains("ct")) {
      const std::string key = strOf(e["ct"], "key");
      if (key == "state") return one(std::string("new"));
      if (key == "status" && translated_) return one(std::string("dnat"));
      if (key == "mark") return one(uint64_t{b.ct_mark});
      why = fmt::format("ct {}: the trace evaluates only the connection state and mark", key);
      return std::nullopt;
    }
    if (e.is_object() && e.contains("fib")) return fib(e["fib"], why);
    if (e.is_object() && e.contains("&") && e["&"].is_array() && e["&"].size() == 2) {
      auto left = evaluate(e["&"][0], b, why);
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
    if (strOf(f, "result") != "type" || daddr == saddr) {
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
  std::optional<bool> match(const json& body, const NftBranch& b, std::string& why) const {
    if (!body.is_object() || !body.contains("left") || !body.contains("right")) {
      why = "a match without operands";
      return std::nullopt;
    }
    auto have = evaluate(body["left"], b, why);
    if (!have) return std::nullopt;
    return matchValue(*have, body, why);
  }

  // Whether `have` (the left side's value) meets the match's operator and right side.
  std::optional<bool> matchValue(const Value& have_value, const json& body,
                                 std::string& why) const {
    if (!body.is_object() || !body.contains("right")) {
      why = "a match without operands";
      return std::nullopt;
    }
    const std::string op = strOf(body, "op", "==");
    const Value* have = &have_value;
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
    if (op == "==" || op == "in") return in;
    if (op == "!=") return !*in;
    why = fmt::format("match operator '{}' is not evaluated", op);
    return std::nullopt;
  }

  // A mark expression: a number, `meta mark`, `ct mark`, and | ^ & of those.
  static std::optional<uint32_t> markValue(const json& v, const NftBranch& b, int depth = 0) {
    if (depth > 8) return std::nullopt;
    if (v.is_number_unsigned()) {
      const auto n = v.get<uint64_t>();
      if (n > UINT32_MAX) return std::nullopt;
      return static_cast<uint32_t>(n);
    }
    if (isMark(v, "meta")) return b.mark;
    if (isMark(v, "ct")) return b.ct_mark;
    if (!v.is_object() || v.size() != 1) return std::nullopt;
    const std::string& op = v.begin().key();
    const json& args = v.begin().value();
    if (!args.is_array() || args.size() != 2) return std::nullopt;
    auto l = markValue(args[0], b, depth + 1);
    auto r = markValue(args[1], b, depth + 1);
    if (!l || !r) return std::nullopt;
    if (op == "|") return *l | *r;
    if (op == "^") return *l ^ *r;
    if (op == "&") return *l & *r;
    return std::nullopt;
  }

  // `meta mark set ...` / `ct mark set ...`. False when not one of those.
  static bool mangle(NftBranch& b, TraceStep& step, const json& body) {
    if (!body.is_object() || !body.contains("key") || !body.contains("value")) return false;
    const bool is_meta = isMark(body["key"], "meta");
    if (!is_meta && !isMark(body["key"], "ct")) return false;
    auto v = markValue(body["value"], b);
    if (!v) return false;
    (is_meta ? b.mark : b.ct_mark) = *v;
    const std::string text = fmt::format("{} is now {:#x}", is_meta ? "mark" : "ct mark", *v);
    step.detail = step.detail.empty() ? text : step.detail + "; " + text;
    return true;
  }

  const NftTable& table_;
  std::string label_;
  std::string base_;
  const TracePacket& packet_;
  const TraceContext& context_;
  bool translated_;
  std::string policy_;
  std::vector<NftBranch> pending_;
  TraceResult result_;
  size_t visits_ = 0;
};

bool iptablesNftTable(const std::string& family, const std::string& name) {
  static const std::string_view kNames[] = {"filter", "nat", "mangle", "raw", "security"};
  return (family == "ip" || family == "ip6") &&
         std::find(std::begin(kNames), std::end(kNames), name) != std::end(kNames);
}

bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && isSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && isSpace(s.back())) s.remove_suffix(1);
  return s;
}

// "table ip kube-proxy {" gives "ip kube-proxy"; any other line nothing.
std::optional<std::string> tableOfLine(std::string_view line) {
  if (!line.starts_with("table ")) return std::nullopt;
  std::istringstream words{std::string(line.substr(6))};
  std::string family;
  std::string name;
  std::string brace;
  if (!(words >> family >> name >> brace) || brace != "{") return std::nullopt;
  return family + " " + name;
}

// "\t\tip daddr 10.0.0.1 drop # handle 12" gives {12, "ip daddr 10.0.0.1 drop"}. Declarations
// (chain, set, map, ... lines, which carry handles too) and lines with no text before the handle
// give nothing. Plain string scanning: a line can be megabytes long (an inline set), too long for
// a backtracking regex's recursion.
std::optional<std::pair<uint64_t, std::string_view>> ruleOfLine(std::string_view line) {
  static constexpr std::string_view kMarker = "# handle ";
  static constexpr std::string_view kDeclarations[] = {"chain", "set",      "map",   "flowtable",
                                                       "type",  "elements", "policy"};
  if (line.empty() || !isSpace(line.front())) return std::nullopt;
  const size_t at = line.rfind(kMarker);
  if (at == std::string_view::npos || at == 0 || !isSpace(line[at - 1])) return std::nullopt;
  const std::string_view digits = trimmed(line.substr(at + kMarker.size()));
  uint64_t handle = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), handle);
  // A handle past 64 bits is nothing nft prints: the line is not a rule.
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size()) {
    return std::nullopt;
  }
  const std::string_view text = trimmed(line.substr(0, at));
  if (text.empty()) return std::nullopt;
  const std::string_view first = text.substr(0, text.find_first_of(" \t"));
  if (first.size() < text.size() && std::find(std::begin(kDeclarations), std::end(kDeclarations),
                                              first) != std::end(kDeclarations)) {
    return std::nullopt;
  }
  return std::pair{handle, text};
}

// Each rule's text of `nft -a list ruleset` by (table, handle).
std::map<std::pair<std::string, uint64_t>, std::string> ruleTexts(const std::string& text) {
  std::map<std::pair<std::string, uint64_t>, std::string> out;
  std::istringstream in(text);
  std::string line;
  std::string table;
  while (std::getline(in, line)) {
    if (auto t = tableOfLine(line)) {
      table = *t;
    } else if (auto rule = ruleOfLine(line)) {
      out[{table, rule->first}] = std::string(rule->second);
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
    const std::string family = strOf(o, "family");
    const std::string name = strOf(o, "table");
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
      const std::string family = strOf(o, "family");
      const std::string name = strOf(o, "name");
      if (!iptablesNftTable(family, name)) ruleset.tables.push_back(NftTable{family, name, {}, {}});
      continue;
    }
    NftTable* table = tableOf(o);
    if (table == nullptr) continue;
    if (kind == "chain") {
      NftChain c;
      c.name = strOf(o, "name");
      c.type = strOf(o, "type");
      c.hook = strOf(o, "hook");
      c.priority = numOf<int>(o, "prio", 0);
      c.policy = strOf(o, "policy", "accept");
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
            el.key = memberOf(key["elem"], "val");
            el.comment = strOf(key["elem"], "comment");
          }
          s.elements.push_back(std::move(el));
        }
      }
      table->sets[strOf(o, "name")] = std::move(s);
    } else if (kind == "rule") {
      auto chain = table->chains.find(strOf(o, "chain"));
      if (chain == table->chains.end()) continue;
      NftRule r;
      r.handle = numOf<uint64_t>(o, "handle", 0);
      r.comment = strOf(o, "comment");
      r.expr = o.contains("expr") ? o["expr"] : json::array();
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
