#pragma once

#include <string>
#include <vector>

#include "common/ip_address.h"
#include "intercept/options.h"

namespace remora::intercept {

inline constexpr const char* kOutputChain = "REMORA_OUTPUT";
inline constexpr const char* kRedirectChain = "REMORA_REDIRECT";
inline constexpr const char* kInboundChain = "REMORA_INBOUND";
inline constexpr const char* kInRedirectChain = "REMORA_IN_REDIRECT";
inline constexpr const char* kChainPrefix = "REMORA_";

// One rule as iptables arguments after "-A CHAIN", e.g. {"-p","tcp","-j","REMORA_OUTPUT"}.
// The spelling matches what iptables-save prints back, so a plan can be compared with the
// installed ruleset textually.
struct PlannedRule {
  std::string chain;
  std::vector<std::string> args;

  std::string toString() const;  // "-A CHAIN args..."
  bool operator==(const PlannedRule&) const = default;
};

// The nat-table rules for one address family.
struct FamilyPlan {
  Family family = Family::kIpv4;
  std::vector<std::string> chains;  // Remora's own chains, in declaration order
  std::vector<PlannedRule> rules;   // in order; jumps from built-in chains included

  bool operator==(const FamilyPlan&) const = default;
};

// Computes the rules for one family from the options. Pure: no I/O. CIDRs of the other family
// are skipped. The rule order follows istio-iptables (see docs/INTERCEPTION.md).
FamilyPlan planFamily(const InterceptOptions& options, Family family);

// Renders a plan as `iptables-restore --noflush` input for the nat table. `stale_jumps` are
// existing rules (as "-A CHAIN ..." lines from iptables-save) that jump into Remora's chains
// from other chains; they are deleted in the same transaction, so the result is exactly the plan.
std::string renderRestore(const FamilyPlan& plan, const std::vector<std::string>& stale_jumps);

}  // namespace remora::intercept
