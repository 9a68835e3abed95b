#include "intercept/dump_nft.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "intercept/dump.h"
#include "intercept/nftables_applier.h"
#include "intercept/plan.h"

namespace remora::intercept {
namespace {

constexpr const char* kHooks[] = {"prerouting", "input", "output", "postrouting"};

bool remoraHook(const std::string& hook) {
  return std::find(std::begin(kHooks), std::end(kHooks), hook) != std::end(kHooks);
}

std::optional<Counters> countersOf(const nlohmann::json& expr) {
  if (!expr.is_array()) return std::nullopt;
  for (const auto& st : expr) {
    if (!st.is_object() || !st.contains("counter") || !st["counter"].is_object()) continue;
    const auto& c = st["counter"];
    Counters out;
    if (c.contains("packets") && c["packets"].is_number_unsigned()) {
      out.packets = c["packets"].get<uint64_t>();
    }
    if (c.contains("bytes") && c["bytes"].is_number_unsigned()) {
      out.bytes = c["bytes"].get<uint64_t>();
    }
    return out;
  }
  return std::nullopt;
}

NftDumpChain chainOf(const NftChain& c) {
  NftDumpChain out;
  out.name = c.name;
  out.type = c.type;
  out.hook = c.hook;
  out.priority = c.priority;
  if (!c.hook.empty()) out.policy = c.policy;
  for (const auto& r : c.rules) {
    out.rules.push_back(NftDumpRule{r.handle, r.text, r.comment, countersOf(r.expr), {}});
  }
  return out;
}

// Where a foreign base chain runs relative to Remora's base chains on the same hook. Without
// Remora's nftables table, relative to iptables' nat table (priority -100), where Remora's
// iptables mode hooks PREROUTING and OUTPUT.
std::string placement(const NftChain& c, const NftTable* remora) {
  std::vector<const NftChain*> mine;
  if (remora != nullptr) {
    for (const auto& [name, rc] : remora->chains) {
      if (rc.hook == c.hook) mine.push_back(&rc);
    }
  }
  std::vector<std::string> parts;
  for (const NftChain* rc : mine) {
    const std::string theirs = fmt::format("inet remora {} (priority {})", rc->name, rc->priority);
    if (c.priority < rc->priority) {
      parts.push_back("runs before " + theirs);
    } else if (c.priority > rc->priority) {
      parts.push_back("runs after " + theirs);
    } else {
      parts.push_back("runs at the same priority as " + theirs +
                      ": the one registered first runs first");
    }
  }
  if (!parts.empty()) return fmt::format("{}", fmt::join(parts, "; "));
  if (remora == nullptr && (c.hook == "output" || c.hook == "prerouting")) {
    if (c.priority < -100) return "runs before iptables' nat table (priority -100)";
    if (c.priority > -100) return "runs after iptables' nat table (priority -100)";
    return "runs at the same priority as iptables' nat table (-100)";
  }
  return "";
}

// ---- Remora's rules in words ---------------------------------------------------------------
// Every rule of `inet remora` is the translation of a planned iptables rule (translate() in
// nftables_applier.cc). Read back into those iptables arguments, it is said by the iptables
// dump's own describer (describeRule), so both modes explain a rule in the same words.

using nlohmann::json;

const json& member(const json& o, const char* key) {
  static const json kAbsent;
  return o.is_object() && o.contains(key) ? o[key] : kAbsent;
}

// The key of a `meta`/`ct` expression ("skuid"), or "" when `e` is not one of `kind`.
std::string keyOf(const json& e, const char* kind) {
  const json& k = member(member(e, kind), "key");
  return k.is_string() ? k.get<std::string>() : "";
}

std::string hex(uint64_t n) { return fmt::format("{:#x}", n); }

std::string upperCase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// A planned rule read back: its iptables chain and arguments, and its family.
struct PlannedForm {
  std::string chain;
  std::vector<std::string> args;
  std::string suffix;  // "_v4"/"_v6": how the table names the family's chains
  std::string family;  // "IPv4"/"IPv6"
  bool tproxy = false;
};

class PlannedReader {
 public:
  // `chain`: the nft chain; its hook names a base chain's built-in iptables chain.
  explicit PlannedReader(const NftDumpChain& chain) : chain_(chain) {}

  // nullopt with `why_` when a statement is not one translate() writes.
  std::optional<PlannedForm> read(const json& expr) {
    if (!chain_.hook.empty()) {
      out_.chain = upperCase(chain_.hook);
    } else if (chain_.name.ends_with("_v4") || chain_.name.ends_with("_v6")) {
      out_.chain = chain_.name.substr(0, chain_.name.size() - 3);
      family(chain_.name.ends_with("_v4") ? "ipv4" : "ipv6");
    } else {
      return fail("a chain translate() does not write");
    }
    if (!expr.is_array()) return fail("no statements");
    for (const auto& st : expr) {
      if (!st.is_object() || st.size() != 1) return fail("a statement is not an object");
      if (!statement(st.begin().key(), st.begin().value())) return std::nullopt;
    }
    if (out_.suffix.empty()) return fail("no family (meta nfproto)");
    if (target_.empty()) return fail("no verdict");
    // A port match implies TCP in nft, which prints no `meta l4proto tcp` before it.
    if (port_ && !tcp_) front_.insert(front_.end(), {"-p", "tcp"});
    out_.args = std::move(front_);
    out_.args.insert(out_.args.end(), modules_.begin(), modules_.end());
    out_.args.insert(out_.args.end(), target_.begin(), target_.end());
    return std::move(out_);
  }

  const std::string& why() const { return why_; }

 private:
  std::nullopt_t fail(std::string why) {
    why_ = std::move(why);
    return std::nullopt;
  }
  bool failed(std::string why) {
    why_ = std::move(why);
    return false;
  }
  void family(const std::string& nfproto) {
    out_.suffix = nfproto == "ipv4" ? "_v4" : "_v6";
    out_.family = nfproto == "ipv4" ? "IPv4" : "IPv6";
  }
  static void negatable(std::vector<std::string>& to, bool negated,
                        std::initializer_list<std::string> words) {
    if (negated) to.emplace_back("!");
    to.insert(to.end(), words);
  }

  bool statement(const std::string& kind, const json& body) {
    if (kind == "match") return match(body);
    if (kind == "counter") return true;
    if (!target_.empty() && !(out_.tproxy && (kind == "mangle" || kind == "accept"))) {
      return failed("more than one action");
    }
    if (kind == "return" || kind == "drop" || kind == "accept") {
      if (target_.empty()) {
        target_ = {"-j", kind == "return" ? "RETURN" : kind == "drop" ? "DROP" : "ACCEPT"};
      }
      return true;
    }
    if (kind == "jump" || kind == "goto") {
      const json& to = member(body, "target");
      if (out_.suffix.empty() || !to.is_string() || !to.get<std::string>().ends_with(out_.suffix)) {
        return failed(kind + " to a chain not of the rule's family");
      }
      const std::string name = to.get<std::string>();
      target_ = {kind == "jump" ? "-j" : "-g", name.substr(0, name.size() - out_.suffix.size())};
      return true;
    }
    if (kind == "redirect" && member(body, "port").is_number_unsigned()) {
      target_ = {"-j", "REDIRECT", "--to-ports", std::to_string(body["port"].get<uint64_t>())};
      return true;
    }
    if (kind == "tproxy" && member(body, "port").is_number_unsigned()) {
      out_.tproxy = true;
      const bool v4 = member(body, "family") == "ip";
      target_ = {"-j",        "TPROXY",
                 "--on-port", std::to_string(body["port"].get<uint64_t>()),
                 "--on-ip",   v4 ? "0.0.0.0" : "::"};
      return true;
    }
    if (kind == "mangle") return mangle(body);
    return failed(fmt::format("a '{}' statement", kind));
  }

  bool mangle(const json& body) {
    const json& key = member(body, "key");
    const json& value = member(body, "value");
    if (keyOf(key, "meta") == "mark" && value.is_number_unsigned()) {
      const std::string mark = hex(value.get<uint64_t>()) + "/0xffffffff";
      if (out_.tproxy) {
        target_.insert(target_.end(), {"--tproxy-mark", mark});
      } else {
        target_ = {"-j", "MARK", "--set-xmark", mark};
      }
      return true;
    }
    const bool save = keyOf(key, "ct") == "mark" && keyOf(value, "meta") == "mark";
    if (save || (keyOf(key, "meta") == "mark" && keyOf(value, "ct") == "mark")) {
      target_ = {"-j",        "CONNMARK",   save ? "--save-mark" : "--restore-mark",
                 "--nfmask",  "0xffffffff", "--ctmask",
                 "0xffffffff"};
      return true;
    }
    return failed("a mangle statement translate() does not write");
  }

  bool match(const json& body) {
    const std::string op = member(body, "op").is_string() ? body["op"].get<std::string>() : "";
    if (op != "==" && op != "!=" && op != "in") return failed("a match with operator " + op);
    const bool no = op == "!=";
    const json& left = member(body, "left");
    const json& right = member(body, "right");
    const std::string meta = keyOf(left, "meta");
    if (meta == "nfproto" && right.is_string() && !no) {
      family(right.get<std::string>());
      return true;
    }
    if (meta == "l4proto" && right.is_string()) {
      tcp_ = tcp_ || (!no && right == "tcp");
      negatable(front_, no, {"-p", right.get<std::string>()});
      return true;
    }
    if ((meta == "iifname" || meta == "oifname") && right.is_string()) {
      std::string name = right.get<std::string>();
      if (name.ends_with('*')) name.back() = '+';
      negatable(front_, no, {meta == "iifname" ? "-i" : "-o", name});
      return true;
    }
    if ((meta == "skuid" || meta == "skgid") && right.is_number_unsigned()) {
      modules_.insert(modules_.end(), {"-m", "owner"});
      negatable(modules_, no, {meta == "skuid" ? "--uid-owner" : "--gid-owner", right.dump()});
      return true;
    }
    const bool ct_mark = keyOf(left, "ct") == "mark";
    if ((meta == "mark" || ct_mark) && right.is_number_unsigned()) {
      modules_.insert(modules_.end(), {"-m", ct_mark ? "connmark" : "mark"});
      negatable(modules_, no, {"--mark", hex(right.get<uint64_t>())});
      return true;
    }
    if (keyOf(left, "ct") == "state") return ctState(right, no);
    const json& payload = member(left, "payload");
    const std::string protocol =
        member(payload, "protocol").is_string() ? payload["protocol"].get<std::string>() : "";
    const std::string field =
        member(payload, "field").is_string() ? payload["field"].get<std::string>() : "";
    if ((protocol == "ip" || protocol == "ip6") && (field == "saddr" || field == "daddr")) {
      auto value = address(right, protocol == "ip" ? 32 : 128);
      if (!value) return failed("an address match translate() does not write");
      negatable(front_, no, {field == "saddr" ? "-s" : "-d", *value});
      return true;
    }
    if (protocol == "tcp" && field == "dport") {
      std::string ports;
      if (right.is_number_unsigned()) {
        ports = right.dump();
      } else if (member(right, "range").is_array() && right["range"].size() == 2) {
        ports = fmt::format("{}:{}", right["range"][0].dump(), right["range"][1].dump());
      } else {
        return failed("a port match translate() does not write");
      }
      port_ = true;
      modules_.insert(modules_.end(), {"-m", "tcp"});
      negatable(modules_, no, {"--dport", ports});
      return true;
    }
    return failed("a match translate() does not write: " + left.dump());
  }

  // "established,related" in either of libnftables' spellings: a string or a list.
  bool ctState(const json& right, bool no) {
    std::vector<std::string> states;
    const json& list = member(right, "set").is_array() ? right["set"] : right;
    if (list.is_string()) states.push_back(list.get<std::string>());
    if (list.is_array()) {
      for (const auto& s : list) {
        if (!s.is_string()) return failed("a ct state not understood");
        states.push_back(s.get<std::string>());
      }
    }
    if (states.empty()) return failed("a ct state not understood");
    // In iptables-save's order ("RELATED,ESTABLISHED"), whatever order nft lists them in.
    static constexpr std::string_view kOrder[] = {"INVALID",   "NEW",  "RELATED", "ESTABLISHED",
                                                  "UNTRACKED", "SNAT", "DNAT"};
    for (auto& s : states) s = upperCase(s);
    auto rank = [](const std::string& state) {
      return std::find(std::begin(kOrder), std::end(kOrder), state) - std::begin(kOrder);
    };
    std::stable_sort(states.begin(), states.end(),
                     [&](const std::string& a, const std::string& b) { return rank(a) < rank(b); });
    std::string value;
    for (const auto& s : states) value += (value.empty() ? "" : ",") + s;
    modules_.insert(modules_.end(), {"-m", "conntrack"});
    negatable(modules_, no, {"--ctstate", value});
    return true;
  }

  // As iptables-save prints it: an address carries its prefix length, /32 or /128 for a host.
  static std::optional<std::string> address(const json& right, int host) {
    if (right.is_string()) return fmt::format("{}/{}", right.get<std::string>(), host);
    const json& prefix = member(right, "prefix");
    if (member(prefix, "addr").is_string() && member(prefix, "len").is_number_unsigned()) {
      return fmt::format("{}/{}", prefix["addr"].get<std::string>(), prefix["len"].dump());
    }
    return std::nullopt;
  }

  const NftDumpChain& chain_;
  PlannedForm out_;
  std::vector<std::string> front_;    // -s, -d, -i, -o, -p
  std::vector<std::string> modules_;  // -m ...
  std::vector<std::string> target_;   // -j/-g ...
  bool tcp_ = false;
  bool port_ = false;
  std::string why_;
};

bool chainNameChar(char c) { return std::isupper(static_cast<unsigned char>(c)) || c == '_'; }

// The words name Remora's chains as iptables does ("REMORA_REDIRECT"); the table's are per
// family ("REMORA_REDIRECT_v4").
std::string withFamilyChains(std::string words, const std::string& suffix) {
  size_t at = 0;
  while ((at = words.find(kChainPrefix, at)) != std::string::npos) {
    size_t end = at;
    while (end < words.size() && chainNameChar(words[end])) ++end;
    if (at == 0 || !chainNameChar(words[at - 1])) {
      words.insert(end, suffix);
      end += suffix.size();
    }
    at = end;
  }
  return words;
}

// Each rule of Remora's table in words. `after_tproxy`: nft's tproxy statement lets a packet
// with no listening socket go on, so translate() follows it with a drop of its own.
void describeRules(NftDumpChain& out, const NftChain& in) {
  bool after_tproxy = false;
  for (size_t i = 0; i < in.rules.size(); ++i) {
    PlannedReader reader(out);
    auto form = reader.read(in.rules[i].expr);
    std::string& words = out.rules[i].words;
    if (!form) {
      words = fmt::format("(not one of Remora's planned rules: {})", reader.why());
    } else if (after_tproxy && form->args == std::vector<std::string>{"-p", "tcp", "-j", "DROP"}) {
      words =
          "no proxy socket took it: dropped (iptables' TPROXY drops such a packet itself; nft's "
          "tproxy lets it go on)";
    } else {
      words = withFamilyChains(describeRule(form->chain, form->args, i + 1 == in.rules.size()),
                               form->suffix);
      if (!out.hook.empty()) words = fmt::format("{}: {}", form->family, words);
    }
    after_tproxy = form && form->tproxy;
  }
}

std::string countersText(const std::optional<Counters>& c) {
  if (!c) return "";
  return fmt::format("  [{} packet{}, {} bytes]", c->packets, c->packets == 1 ? "" : "s", c->bytes);
}

std::string chainHeader(const NftDumpChain& c) {
  if (c.hook.empty()) return c.rules.empty() ? " (empty)" : "";
  return fmt::format(" ({} hook {} priority {}, policy {})", c.type, c.hook, c.priority, c.policy);
}

}  // namespace

NftDump buildNftDump(const NftRuleset& ruleset) {
  NftDump out;
  out.read = true;
  const NftTable* remora = nullptr;
  for (const auto& t : ruleset.tables) {
    if (t.family == "inet" && t.name == kNftTable) remora = &t;
  }
  if (remora != nullptr) {
    out.installed = true;
    NftDumpTable table{remora->family, remora->name, true, {}};
    // Base chains first (hook order), then the per-family chains by name.
    auto add = [&](const NftChain& c) {
      table.chains.push_back(chainOf(c));
      describeRules(table.chains.back(), c);
    };
    for (const char* hook : kHooks) {
      for (const auto& [name, c] : remora->chains) {
        if (c.hook == hook) add(c);
      }
    }
    for (const auto& [name, c] : remora->chains) {
      if (c.hook.empty() || !remoraHook(c.hook)) add(c);
    }
    out.tables.push_back(std::move(table));
  }
  for (const auto& t : ruleset.tables) {
    if (&t == remora) continue;
    NftDumpTable table{t.family, t.name, false, {}};
    for (const char* hook : kHooks) {
      std::vector<const NftChain*> on;
      for (const auto& [name, c] : t.chains) {
        if (c.hook == hook) on.push_back(&c);
      }
      std::stable_sort(on.begin(), on.end(), [](const NftChain* a, const NftChain* b) {
        return a->priority < b->priority;
      });
      for (const NftChain* c : on) {
        NftDumpChain chain = chainOf(*c);
        chain.message = placement(*c, remora);
        table.chains.push_back(std::move(chain));
      }
    }
    if (!table.chains.empty()) out.tables.push_back(std::move(table));
  }
  if (ruleset.tables.empty()) out.notes.emplace_back("no native nftables tables");
  return out;
}

NftDump nftDumpUnread(std::string why) {
  NftDump out;
  out.error = std::move(why);
  return out;
}

std::string renderNftDump(const NftDump& dump) {
  if (!dump.read) return fmt::format("nftables: not read: {}\n", dump.error);
  std::string out = fmt::format(
      "nftables: {}\n", dump.installed ? "Remora's interception is installed (table inet remora)"
                                       : "Remora's table inet remora is not installed");
  bool foreign_header = false;
  for (const auto& t : dump.tables) {
    if (!t.remora && !foreign_header) {
      out += "  Other tables on the same hooks (base chains only):\n";
      foreign_header = true;
    }
    const std::string indent = t.remora ? "  " : "    ";
    for (const auto& c : t.chains) {
      out += fmt::format("{}{} {}{}\n", indent, t.label(), c.name, chainHeader(c));
      if (!c.message.empty()) out += fmt::format("{}  {}\n", indent, c.message);
      for (size_t i = 0; i < c.rules.size(); ++i) {
        const auto& r = c.rules[i];
        if (t.remora) {
          // As the iptables dump: the words with the counters, then the rule.
          out += fmt::format("{}    #{} {}{}\n{}       {}\n", indent, i + 1, r.words,
                             countersText(r.counters), indent, r.rule);
        } else {
          out += fmt::format("{}    #{} {}{}\n", indent, i + 1, r.rule, countersText(r.counters));
        }
      }
    }
  }
  for (const auto& n : dump.notes) out += "  Note: " + n + "\n";
  return out;
}

nlohmann::json nftDumpToJson(const NftDump& dump) {
  nlohmann::json tables = nlohmann::json::array();
  for (const auto& t : dump.tables) {
    nlohmann::json chains = nlohmann::json::array();
    for (const auto& c : t.chains) {
      nlohmann::json rules = nlohmann::json::array();
      for (const auto& r : c.rules) {
        nlohmann::json j = {{"handle", r.handle}, {"rule", r.rule}, {"comment", r.comment}};
        if (t.remora) j["words"] = r.words;
        j["packets"] = r.counters ? nlohmann::json(r.counters->packets) : nlohmann::json(nullptr);
        j["bytes"] = r.counters ? nlohmann::json(r.counters->bytes) : nlohmann::json(nullptr);
        rules.push_back(std::move(j));
      }
      nlohmann::json chain = {{"name", c.name}, {"rules", std::move(rules)}};
      if (!c.hook.empty()) {
        chain["type"] = c.type;
        chain["hook"] = c.hook;
        chain["priority"] = c.priority;
        chain["policy"] = c.policy;
      }
      if (!c.message.empty()) chain["message"] = c.message;
      chains.push_back(std::move(chain));
    }
    tables.push_back({{"family", t.family},
                      {"name", t.name},
                      {"remora", t.remora},
                      {"chains", std::move(chains)}});
  }
  nlohmann::json notes = nlohmann::json::array();
  for (const auto& n : dump.notes) notes.push_back(n);
  nlohmann::json out = {{"read", dump.read},
                        {"installed", dump.installed},
                        {"tables", std::move(tables)},
                        {"notes", std::move(notes)}};
  if (!dump.read) out["error"] = dump.error;
  return out;
}

}  // namespace remora::intercept
