#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace remora::intercept {

struct Counters {
  uint64_t packets = 0;
  uint64_t bytes = 0;
  bool operator==(const Counters&) const = default;
};

struct SavedChain {
  std::string name;
  std::string policy;  // "ACCEPT"/"DROP" for built-in chains, "-" for user chains
  Counters counters;
};

struct SavedRule {
  std::string chain;
  std::vector<std::string> args;     // tokens after "-A CHAIN", quotes removed
  std::optional<Counters> counters;  // present when saved with -c
  std::string text;                  // the "-A CHAIN ..." line as saved, minus the counters
};

struct SavedTable {
  std::string name;
  std::vector<SavedChain> chains;
  std::vector<SavedRule> rules;  // in file order

  const SavedChain* chain(std::string_view name) const;
  std::vector<const SavedRule*> rulesOf(std::string_view chain) const;
};

struct SavedRuleset {
  std::vector<SavedTable> tables;
  const SavedTable* table(std::string_view name) const;
};

// Parses iptables-save / ip6tables-save output (with or without -c counters). Errors name the
// line number and what was unexpected.
Result<SavedRuleset> parseIptablesSave(std::string_view text);

// Splits one rule line into tokens the way iptables-restore does (double quotes group words).
Result<std::vector<std::string>> tokenizeRule(std::string_view line);

}  // namespace remora::intercept
