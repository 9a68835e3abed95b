#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.h"
#include "intercept/options.h"

namespace remora::intercept {

inline constexpr const char* kOutputChain = "REMORA_OUTPUT";
inline constexpr const char* kRedirectChain = "REMORA_REDIRECT";
inline constexpr const char* kInboundChain = "REMORA_INBOUND";
inline constexpr const char* kInRedirectChain = "REMORA_IN_REDIRECT";
inline constexpr const char* kDropInvalidChain = "REMORA_DROP_INVALID";  // mangle table
// TPROXY inbound (mangle table). Named apart from the nat chains: nftables mode puts both
// tables' chains in one `inet remora` table.
inline constexpr const char* kTproxyInboundChain = "REMORA_TP_INBOUND";
inline constexpr const char* kTproxyOutputChain = "REMORA_TP_OUTPUT";
inline constexpr const char* kDivertChain = "REMORA_DIVERT";
inline constexpr const char* kTproxyChain = "REMORA_TPROXY";
inline constexpr const char* kChainPrefix = "REMORA_";

// TPROXY mode's policy routing for one family: `ip rule add fwmark MARK lookup TABLE` and
// `ip route add local default dev lo table TABLE`. Installed and removed with the rules.
struct PolicyRoute {
  uint32_t mark = kTproxyMark;
  uint32_t table = kTproxyRouteTable;

  std::string toString(Family family) const;  // "ip -4 rule ... ; ip -4 route ..."
  bool operator==(const PolicyRoute&) const = default;
};

// One rule as iptables arguments after "-A CHAIN", e.g. {"-p","tcp","-j","REMORA_OUTPUT"}.
// The spelling matches what iptables-save prints back, so a plan can be compared with the
// installed ruleset textually.
struct PlannedRule {
  std::string chain;
  std::vector<std::string> args;

  std::string toString() const;  // "-A CHAIN args..."
  bool operator==(const PlannedRule&) const = default;
};

// The rules for one address family: the nat table's, and the mangle table's (--drop-invalid).
struct FamilyPlan {
  Family family = Family::kIpv4;
  std::vector<std::string> chains;         // Remora's own nat chains, in declaration order
  std::vector<PlannedRule> rules;          // in order; jumps from built-in chains included
  std::vector<std::string> mangle_chains;  // empty when nothing goes to mangle
  std::vector<PlannedRule> mangle_rules;
  // Set in TPROXY inbound mode: the route that delivers marked packets to the local socket.
  std::optional<PolicyRoute> policy_route;

  bool operator==(const FamilyPlan&) const = default;
};

// Computes the rules for one family from the options. Pure: no I/O. CIDRs of the other family
// are skipped. The rule order follows istio-iptables (see docs/INTERCEPTION.md).
FamilyPlan planFamily(const InterceptOptions& options, Family family);

// What is installed in one table, as far as the restore input needs to know: Remora's chains
// there and the jumps into them from other chains (as "-A CHAIN ..." lines from iptables-save).
struct TableFootprint {
  std::vector<std::string> chains;
  std::vector<std::string> jumps;
};

// Renders a plan as `iptables-restore --noflush` input for the nat table, and for mangle when
// the plan or `mangle` has something there. The footprints' jumps are deleted in the same
// transaction, and Remora chains the plan no longer has are deleted, so the result is exactly
// the plan.
std::string renderRestore(const FamilyPlan& plan, const TableFootprint& nat,
                          const TableFootprint& mangle = {});

// Whether a CIDR lies in the family's loopback range (127.0.0.0/8, ::1/128).
bool isLoopbackCidr(const Cidr& cidr);

}  // namespace remora::intercept
