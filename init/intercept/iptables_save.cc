#include "intercept/iptables_save.h"

#include <fmt/format.h>

#include <charconv>
#include <unordered_set>

namespace remora::intercept {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

bool parseU64(std::string_view s, uint64_t& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && ec == std::errc() && end == s.data() + s.size();
}

// "[pkts:bytes]" as iptables-save -c prints it.
bool parseCounters(std::string_view s, Counters& out) {
  if (s.size() < 5 || s.front() != '[' || s.back() != ']') return false;
  s = s.substr(1, s.size() - 2);
  auto colon = s.find(':');
  if (colon == std::string_view::npos) return false;
  return parseU64(s.substr(0, colon), out.packets) && parseU64(s.substr(colon + 1), out.bytes);
}

class Parser {
 public:
  Result<SavedRuleset> run(std::string_view text) {
    size_t pos = 0;
    while (pos < text.size()) {
      size_t nl = text.find('\n', pos);
      std::string_view raw = text.substr(pos, nl == std::string_view::npos ? nl : nl - pos);
      pos = nl == std::string_view::npos ? text.size() : nl + 1;
      ++line_no_;
      if (auto r = line(trim(raw)); !r) return r.error();
    }
    if (current_ != kNone) {
      return fail(fmt::format("table '{}' (started on line {}) has no COMMIT",
                              out_.tables[current_].name, table_line_));
    }
    return std::move(out_);
  }

 private:
  static constexpr size_t kNone = static_cast<size_t>(-1);

  Error fail(const std::string& what) const {
    return makeError(fmt::format("iptables-save input, line {}: {}", line_no_, what));
  }

  Result<void> line(std::string_view l) {
    if (l.empty() || l.front() == '#') return {};
    if (l.front() == '*') return startTable(trim(l.substr(1)));
    if (current_ == kNone) {
      return fail(fmt::format("'{}' outside a table (expected '*table' first)", l));
    }
    if (l.front() == ':') return declareChain(l.substr(1));
    if (l == "COMMIT") {
      current_ = kNone;
      return {};
    }
    if (l.front() == '[' || l.front() == '-') return addRule(l);
    return fail(fmt::format("unexpected '{}'", l));
  }

  Result<void> startTable(std::string_view name) {
    if (current_ != kNone) {
      return fail(fmt::format("table '{}' starts before table '{}' (line {}) was committed", name,
                              out_.tables[current_].name, table_line_));
    }
    if (name.empty()) return fail("'*' without a table name");
    if (out_.table(name) != nullptr) return fail(fmt::format("table '{}' appears twice", name));
    out_.tables.push_back(SavedTable{std::string(name), {}, {}});
    current_ = out_.tables.size() - 1;
    table_line_ = line_no_;
    chains_.clear();
    return {};
  }

  // "NAME POLICY [p:b]"; the counters are optional, as iptables-restore allows.
  Result<void> declareChain(std::string_view rest) {
    auto words = tokenizeRule(rest);
    if (!words) return fail(words.error().message);
    if (words->size() < 2 || words->size() > 3) {
      return fail(fmt::format("expected ':CHAIN POLICY [packets:bytes]', got ':{}'", rest));
    }
    SavedChain chain{(*words)[0], (*words)[1], {}};
    if (words->size() == 3 && !parseCounters((*words)[2], chain.counters)) {
      return fail(fmt::format("bad chain counters '{}' (expected [packets:bytes])", (*words)[2]));
    }
    if (!chains_.insert(chain.name).second) {
      return fail(fmt::format("chain '{}' declared twice", chain.name));
    }
    out_.tables[current_].chains.push_back(std::move(chain));
    return {};
  }

  Result<void> addRule(std::string_view l) {
    SavedRule rule;
    if (l.front() == '[') {
      auto close = l.find(']');
      Counters c;
      if (close == std::string_view::npos || !parseCounters(l.substr(0, close + 1), c)) {
        return fail(fmt::format("bad rule counters in '{}' (expected [packets:bytes])", l));
      }
      rule.counters = c;
      l = trim(l.substr(close + 1));
    }
    auto tokens = tokenizeRule(l);
    if (!tokens) return fail(tokens.error().message);
    if (tokens->size() < 2 || ((*tokens)[0] != "-A" && (*tokens)[0] != "--append")) {
      return fail(fmt::format("expected '-A CHAIN ...', got '{}'", l));
    }
    rule.chain = std::move((*tokens)[1]);
    if (chains_.count(rule.chain) == 0) {
      return fail(fmt::format("rule for chain '{}', which is not declared (':{} ...')", rule.chain,
                              rule.chain));
    }
    rule.args.assign(std::make_move_iterator(tokens->begin() + 2),
                     std::make_move_iterator(tokens->end()));
    rule.text = std::string(l);
    out_.tables[current_].rules.push_back(std::move(rule));
    return {};
  }

  SavedRuleset out_;
  size_t current_ = kNone;
  size_t line_no_ = 0;
  size_t table_line_ = 0;
  std::unordered_set<std::string> chains_;  // declared in the current table
};

}  // namespace

const SavedChain* SavedTable::chain(std::string_view name) const {
  for (const auto& c : chains) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::vector<const SavedRule*> SavedTable::rulesOf(std::string_view chain_name) const {
  std::vector<const SavedRule*> out;
  for (const auto& r : rules) {
    if (r.chain == chain_name) out.push_back(&r);
  }
  return out;
}

const SavedTable* SavedRuleset::table(std::string_view name) const {
  for (const auto& t : tables) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

Result<SavedRuleset> parseIptablesSave(std::string_view text) { return Parser().run(text); }

// Follows iptables-restore: blanks separate words, double quotes group them, and inside quotes a
// backslash takes the next character literally (iptables-save writes \" and \\ there).
Result<std::vector<std::string>> tokenizeRule(std::string_view line) {
  std::vector<std::string> out;
  std::string word;
  bool in_word = false;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '\\' && i + 1 < line.size()) {
        word += line[++i];
      } else if (c == '"') {
        quoted = false;
      } else {
        word += c;
      }
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      if (in_word) out.push_back(std::move(word));
      word.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '"') {
      quoted = true;
    } else {
      word += c;
    }
  }
  if (quoted) return makeError(fmt::format("unterminated quote in '{}'", line));
  if (in_word) out.push_back(std::move(word));
  return out;
}

}  // namespace remora::intercept
