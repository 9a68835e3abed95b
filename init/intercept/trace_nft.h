#pragma once

// dump --trace over native nftables rulesets (Remora's `inet remora`, kube-proxy's
// `ip kube-proxy`), read from libnftables' JSON output (`nft -j list ruleset`).

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "intercept/trace.h"

namespace remora::intercept {

// nlohmann::json's move may assert (and so, to clang-tidy, throw); moves here never do.
struct NftRule {  // NOLINT(bugprone-exception-escape)
  uint64_t handle = 0;
  std::string text;     // the rule as `nft -a list ruleset` prints it, or "handle N"
  std::string comment;  // the rule's comment, "" when none
  nlohmann::json expr;  // the statements, as libnftables JSON
};

struct NftChain {
  std::string name;
  std::string type;  // "nat", "filter", "route"; "" for a regular chain
  std::string hook;  // "prerouting", "output", ...; "" for a regular chain
  int priority = 0;
  std::string policy = "accept";
  std::vector<NftRule> rules;
};

// A named set or map. Each element is its key (a value, a prefix, a range or a concatenation)
// and, for a verdict map, its verdict ({"goto": {"target": ...}}); comments are kept.
struct NftSet {
  struct Element {  // NOLINT(bugprone-exception-escape)
    nlohmann::json key;
    nlohmann::json value;  // null for a set
    std::string comment;
  };
  std::vector<Element> elements;
};

struct NftTable {
  std::string family;  // "ip", "ip6", "inet", ...
  std::string name;
  std::map<std::string, NftChain, std::less<>> chains;
  std::map<std::string, NftSet, std::less<>> sets;  // sets and maps, by name

  // "ip kube-proxy"
  std::string label() const { return family + " " + name; }
  // Whether its base chains see packets of `family` (inet sees both).
  bool sees(Family f) const;
};

struct NftRuleset {
  std::vector<NftTable> tables;
};

// Parses `nft -j list ruleset`; `text` (optional) is `nft -a list ruleset`, whose lines give
// each rule's text by handle. Tables of iptables-nft (ip/ip6 filter, nat, mangle, raw, security)
// are left out: the trace reads those through iptables-save.
Result<NftRuleset> parseNftRuleset(const std::string& json, const std::string& text = {});

// Walks one chain of one nftables table for `packet` as the kernel does: matches, verdicts,
// jumps and gotos, verdict maps (named or anonymous), `numgen random mod N` maps (one branch per
// element, with its exact share), meta mark, dnat, redirect, reject, drop, masquerade.
// `translated`: nat already changed the destination. Pure. Steps and outcomes carry the table's
// label ("ip kube-proxy") as their table.
TraceResult traceNftChain(const NftTable& table, std::string_view chain, const TracePacket& packet,
                          const TraceContext& context, bool translated = false);

// The base chains of `ruleset` on `hook` for packets of `family`, in the kernel's order
// (priority, then listing order).
struct NftBaseChain {
  const NftTable* table = nullptr;
  const NftChain* chain = nullptr;
};
std::vector<NftBaseChain> nftBaseChains(const NftRuleset& ruleset, Family family,
                                        std::string_view hook);

// Reads the calling thread's netns's nftables ruleset through libnftables (JSON and text).
Result<NftRuleset> readNftRuleset();

}  // namespace remora::intercept
