#include "intercept/dump_nft.h"

#include <fmt/format.h>

#include <algorithm>

#include "intercept/nftables_applier.h"

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
    out.rules.push_back(NftDumpRule{r.handle, r.text, r.comment, countersOf(r.expr)});
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
    for (const char* hook : kHooks) {
      for (const auto& [name, c] : remora->chains) {
        if (c.hook == hook) table.chains.push_back(chainOf(c));
      }
    }
    for (const auto& [name, c] : remora->chains) {
      if (c.hook.empty() || !remoraHook(c.hook)) table.chains.push_back(chainOf(c));
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
        out += fmt::format("{}    #{} {}{}\n", indent, i + 1, c.rules[i].rule,
                           countersText(c.rules[i].counters));
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
