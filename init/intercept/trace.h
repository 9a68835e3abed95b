#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.h"
#include "common/result.h"
#include "intercept/iptables_save.h"
#include "intercept/options.h"

namespace remora::intercept {

// The first packet of a connection the calling netns would send, as nat OUTPUT sees it.
// Unknown fields stay unset: a rule that tests one yields an "undetermined" outcome, never a guess.
struct TracePacket {
  SocketAddress destination;
  std::string protocol = "tcp";
  std::optional<IpAddress> source;           // the route's preferred source
  std::optional<std::string> out_interface;  // the route's device
  uint32_t uid = 0;
  std::optional<uint32_t> gid;
  uint32_t mark = 0;
};

// Facts about the netns the evaluator needs, passed in so the evaluator stays pure.
struct TraceContext {
  // Networks of type "local" in the local routing table (what -m addrtype LOCAL checks), e.g.
  // 127.0.0.0/8 and the pod IP. Unset when unknown.
  std::optional<std::vector<Cidr>> local_networks;
};

enum class StepVerdict {
  kJump,        // -j CHAIN
  kGoto,        // -g CHAIN
  kReturn,      // -j RETURN
  kEndOfChain,  // fell off the end of a user chain: back to the caller
  kContinue,    // matched, non-terminating target (MARK, LOG, no target)
  kRandomSkip,  // a statistic match did not fire on this branch
  kTerminal,    // ACCEPT, DROP, DNAT, REDIRECT, ...
  kPolicy,      // end of a built-in chain: its policy
  kUndetermined,
};
const char* toString(StepVerdict verdict);

// One step of a walk. rule_index is 1-based within the chain; 0 for the policy or the end of a
// chain. rule is the rule's text without "-A CHAIN".
struct TraceStep {
  std::string table = "nat";
  std::string chain;
  size_t rule_index = 0;
  std::string rule;
  StepVerdict verdict = StepVerdict::kContinue;
  std::string detail;  // the jump target, the branch probability, ...
  size_t depth = 0;    // call depth, for indentation
};

enum class OutcomeKind {
  kUnchanged,     // ACCEPT or the chain policy: no translation
  kRedirect,      // REDIRECT to a local port
  kDnat,          // DNAT
  kDrop,          // DROP/REJECT or a DROP policy
  kOther,         // another terminal target (SNAT, MASQUERADE, NETMAP, ...)
  kUndetermined,  // a match could not be evaluated; see reason
};
const char* toString(OutcomeKind kind);

struct TraceOutcome {
  OutcomeKind kind = OutcomeKind::kUnchanged;
  double probability = 1.0;
  std::string chain;      // the chain holding the deciding rule, or the built-in for a policy
  size_t rule_index = 0;  // 1-based; 0 for a policy
  std::string target;     // "DNAT --to-destination 10.244.1.168:80", "policy ACCEPT", ...
  // Where the connection goes: the translated address when it is one address and port, the
  // original one when unchanged; unset for ranges, drops and undetermined outcomes.
  std::optional<SocketAddress> destination;
  std::string reason;  // kUndetermined: which rule, which match, and why
  uint32_t mark = 0;
  std::vector<TraceStep> path;
};

struct TraceResult {
  // Every way the walk can end, with its probability (products of the statistic branches);
  // in walk order, the branch where a random match fires first.
  std::vector<TraceOutcome> outcomes;
};

// Walks the nat table's OUTPUT chain for `packet` the way the kernel does: rules in order,
// jumps and gotos, RETURN, policies, MARK, and a branch per `-m statistic --mode random`.
// Pure. The walk is bounded (jump depth 64, loop detection, a branch and step budget); hitting a
// bound yields an undetermined outcome.
TraceResult traceNatOutput(const SavedTable& nat, const TracePacket& packet,
                           const TraceContext& context);

struct TraceRequest {
  SocketAddress destination;
  uint32_t uid = 0;
  std::optional<uint32_t> gid;  // unset: the uid's primary group (see TraceReport::notes)
  IptablesBackend backend = IptablesBackend::kAuto;
};

struct TraceReport {
  std::string backend;  // "iptables-nft", ...
  TracePacket packet;
  std::vector<std::string> notes;  // what was assumed or could not be found out
  TraceResult result;
};

// Traces `request` in the calling thread's netns: picks the backend, reads the nat table, asks
// the kernel for the route's source address and device (`ip route get`) and the local
// addresses, and runs traceNatOutput. Facts it cannot read stay unknown and are named in notes.
// Errors when the iptables tools are missing or their output cannot be parsed.
Result<TraceReport> traceCurrentNetns(const TraceRequest& request);

// The path of each outcome as an indented list, then one summary line per outcome.
std::string renderTrace(const TraceReport& report);
nlohmann::json traceToJson(const TraceReport& report);

// One line for an outcome, e.g. "DNAT 10.244.1.168:80 via KUBE-SEP-A, 50.00%".
std::string describeOutcome(const TraceOutcome& outcome, const TracePacket& packet);
// "100%" for certainty, otherwise two decimals ("33.33%").
std::string formatProbability(double probability);

}  // namespace remora::intercept
