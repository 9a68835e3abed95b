#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_address.h"
#include "common/port_range.h"
#include "common/result.h"

namespace remora::intercept {

// One option of a match module or target: {"--dport", {"80"}, negated} for "! --dport 80".
struct RuleOption {
  std::string name;
  std::vector<std::string> values;
  bool negated = false;

  // The first value, or "" when the option takes none (e.g. --syn).
  const std::string& value() const;
};

// "-m NAME --opt v ..." in the order the rule lists it.
struct RuleModule {
  std::string name;
  std::vector<RuleOption> options;

  const RuleOption* option(std::string_view name) const;
};

// A built-in match (-s, -d, -i, -o, -p) with its "!".
struct RuleCondition {
  std::string value;
  bool negated = false;
};

enum class JumpKind { kNone, kJump, kGoto };

// A rule's arguments grouped the way iptables reads them. Values stay text; the trace evaluator
// and the dump renderer interpret them, so one parse serves both.
struct RuleSpec {
  std::optional<RuleCondition> source;
  std::optional<RuleCondition> destination;
  std::optional<RuleCondition> in_interface;
  std::optional<RuleCondition> out_interface;
  std::optional<RuleCondition> protocol;
  std::optional<bool> fragment;  // "-f" is true, "! -f" is false
  std::vector<RuleModule> modules;
  JumpKind jump = JumpKind::kNone;
  std::string target;  // chain name or target extension ("DNAT"); empty without -j/-g
  std::vector<RuleOption> target_options;

  const RuleModule* module(std::string_view name) const;
  const RuleOption* targetOption(std::string_view name) const;
};

// Groups iptables arguments (after "-A CHAIN") into a RuleSpec. Errors say which word was not
// understood.
Result<RuleSpec> parseRuleSpec(const std::vector<std::string>& args);

// An address with its mask, as -s/-d accept it: "10.0.0.0/8", "1.2.3.4", "10.0.0.0/255.0.0.0".
struct AddressMask {
  IpAddress address;
  std::array<uint8_t, 16> mask{};

  bool contains(const IpAddress& ip) const;
  bool matchesEverything() const;
  bool isHost() const;
};
Result<AddressMask> parseAddressMask(std::string_view text);

// A port or range in iptables' form: "80", "80:90", ":90", "80:".
Result<PortRange> parseIptablesPortRange(std::string_view text);

// Whether an interface pattern (-i/-o; "eth+" is a prefix wildcard) matches a name.
bool interfaceMatches(std::string_view pattern, std::string_view name);

// Arguments joined back into one line, quoting words that need it as iptables-save does.
std::string joinArgs(const std::vector<std::string>& args);

// A rule's text without its "-A CHAIN " prefix, for display.
std::string ruleBody(const std::string& text, const std::string& chain);

}  // namespace remora::intercept
