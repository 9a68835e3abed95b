#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.h"
#include "common/result.h"
#include "intercept/dump_nft.h"
#include "intercept/iptables_save.h"
#include "intercept/options.h"

namespace remora::intercept {

// The nat table of one family as read from one backend.
struct FamilyTables {
  std::string backend;  // "iptables-nft", "ip6tables-legacy", ...
  Family family = Family::kIpv4;
  SavedTable nat;
};

struct DumpRule {
  size_t index = 0;         // 1-based within its chain
  std::string rule;         // as saved, without "-A CHAIN"
  std::string description;  // in words
  std::optional<Counters> counters;
};

struct DumpChain {
  std::string name;
  bool builtin = false;
  std::string policy;  // built-in chains; "-" for user chains
  // All rules of a Remora chain; for a built-in chain only its jumps into Remora's chains.
  std::vector<DumpRule> rules;
};

// A rule in a built-in chain Remora hooks (PREROUTING, INPUT, OUTPUT, POSTROUTING) that is not
// Remora's: it shapes what Remora sees.
struct ForeignHook {
  std::string chain;   // "OUTPUT"
  size_t index = 0;    // 1-based within chain
  std::string target;  // "KUBE-SERVICES", "DNAT", ...
  std::string rule;
  bool before_remora = false;  // the kernel evaluates it before Remora's jump in that chain
  std::string message;         // "OUTPUT also jumps to KUBE-SERVICES (not Remora's)"
};

struct FamilyDump {
  Family family = Family::kIpv4;
  std::string backend;
  bool installed = false;  // any REMORA_* chain or jump
  std::vector<DumpChain> chains;
  std::vector<ForeignHook> foreign;
  std::vector<std::string> notes;
  std::vector<std::string> warnings;  // a partial or duplicated install
};

struct DumpReport {
  std::vector<FamilyDump> families;
  std::vector<std::string> notes;     // e.g. IPv6 disabled
  std::vector<std::string> warnings;  // e.g. Remora's chains in the other backend too
  // The native nftables side (Remora's inet remora table, other tables on the same hooks);
  // unset when not read (the pure buildDump leaves it so).
  std::optional<NftDump> nftables;
};

// Sets report.nftables and says how it relates to the iptables side: a note when Remora is
// installed in nftables mode only, a warning when it is installed in both (the kernel runs both).
void attachNftDump(DumpReport& report, NftDump nft);

// Explains each family's nat table: Remora's chains and hooks with their counters, in words,
// and the foreign rules on the same built-in chains. Pure and deterministic.
DumpReport buildDump(const std::vector<FamilyTables>& input);

// One rule in words, e.g. "proxy's own traffic (uid 1337): not captured". `last` says whether it
// is its chain's last rule (an unconditional last rule reads "everything else").
std::string describeRule(const std::string& chain, const std::vector<std::string>& args, bool last);

std::string renderDump(const DumpReport& report);
nlohmann::json dumpToJson(const DumpReport& report);

// Reads the calling thread's netns: IPv4 always, IPv6 when enabled and ip6tables is installed,
// each from the detected (or requested) backend; warns when Remora's chains also exist in the
// other backend. Errors when the IPv4 tools are missing or their output cannot be parsed.
Result<DumpReport> dumpCurrentNetns(IptablesBackend requested);

}  // namespace remora::intercept
