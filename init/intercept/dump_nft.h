#pragma once

// `remora-init dump` over native nftables: Remora's own `inet remora` table (--mode nftables)
// rule by rule, and the base chains of other native tables (kube-proxy's `ip kube-proxy`, ...)
// on the hooks Remora uses, with where they run relative to Remora's.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "intercept/iptables_save.h"
#include "intercept/trace_nft.h"

namespace remora::intercept {

struct NftDumpRule {
  uint64_t handle = 0;
  std::string rule;                  // as `nft -a list ruleset` prints it
  std::string comment;               // "" when none
  std::optional<Counters> counters;  // set when the rule has a `counter` statement
  // Remora's table only: the rule in words, as the iptables dump says the planned rule it was
  // translated from (describeRule), e.g. "redirect to local port 15001 (the proxy's outbound
  // listener)"; "" in other tables.
  std::string words;
};

struct NftDumpChain {
  std::string name;
  std::string type;  // "nat", "filter", ...; "" for a regular chain
  std::string hook;  // "output", ...; "" for a regular chain
  int priority = 0;
  std::string policy;  // base chains; "" for a regular chain
  std::vector<NftDumpRule> rules;
  // A foreign base chain: where it runs relative to Remora's chain on the same hook, e.g.
  // "runs before inet remora nat_output (priority -100)".
  std::string message;
};

struct NftDumpTable {
  std::string family;  // "inet", "ip", "ip6"
  std::string name;
  bool remora = false;  // Remora's own `inet remora`: every chain; otherwise base chains only
  std::vector<NftDumpChain> chains;
  std::string label() const { return family + " " + name; }
};

struct NftDump {
  bool read = false;                 // the ruleset could be read
  std::string error;                 // !read: why
  bool installed = false;            // `inet remora` exists
  std::vector<NftDumpTable> tables;  // Remora's first, then the others in listing order
  std::vector<std::string> notes;
};

// Pure and deterministic: Remora's table whole, and the other native tables' base chains on the
// hooks Remora's chains sit on (prerouting, input, output, postrouting, as iptables' built-ins),
// which shape what Remora sees.
NftDump buildNftDump(const NftRuleset& ruleset);
NftDump nftDumpUnread(std::string why);

std::string renderNftDump(const NftDump& dump);
nlohmann::json nftDumpToJson(const NftDump& dump);

}  // namespace remora::intercept
