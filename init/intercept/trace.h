#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.h"
#include "common/result.h"
#include "intercept/iptables_save.h"
#include "intercept/options.h"

namespace remora::intercept {

struct NftRuleset;  // trace_nft.h

// Where the first packet of the connection enters the netfilter hooks.
enum class TraceOrigin {
  kLocal,     // sent by a socket of this netns: nat OUTPUT, then filter OUTPUT
  kArriving,  // received from a pod or an external client: nat PREROUTING, then filter INPUT
              // (a local destination) or FORWARD (any other)
};

// The first packet of a connection, as the first hook sees it.
// Unknown fields stay unset: a rule that tests one yields an "undetermined" outcome, never a guess.
struct TracePacket {
  SocketAddress destination;
  std::string protocol = "tcp";
  TraceOrigin origin = TraceOrigin::kLocal;
  std::optional<IpAddress> source;           // the route's preferred source, or --source
  std::optional<std::string> out_interface;  // the route's device (kLocal)
  std::optional<std::string> in_interface;   // the receiving device (kArriving)
  uint32_t uid = 0;  // the socket's owner (kLocal only: arriving packets have no local socket)
  std::optional<uint32_t> gid;
  uint32_t mark = 0;
  // The connection's mark (ct mark): 0 for a new connection until a rule sets it (nftables
  // `ct mark set`); carried from one base chain to the next like the packet mark.
  uint32_t ct_mark = 0;
};

// Facts about the netns the evaluator needs, passed in so the evaluator stays pure.
struct TraceContext {
  // Networks of type "local" in the local routing table (what -m addrtype LOCAL checks), e.g.
  // 127.0.0.0/8 and the pod IP. Unset when unknown.
  std::optional<std::vector<Cidr>> local_networks;
  // The output device of the route to an address (for -o in FORWARD, after DNAT changed the
  // destination); unset or returning nullopt when unknown.
  std::function<std::optional<std::string>(const IpAddress&)> route_device;
  // The addresses of an interface in the kernel's order (primary addresses first), for a
  // REDIRECT in PREROUTING: the kernel sends the packet to the receiving interface's first
  // address of the family (IPv6: of the destination's scope), not to loopback. Unset or
  // returning nullopt when unknown.
  std::function<std::optional<std::vector<IpAddress>>(const std::string&)> interface_addresses;
};

enum class StepVerdict {
  kJump,         // -j CHAIN
  kGoto,         // -g CHAIN
  kReturn,       // -j RETURN
  kEndOfChain,   // fell off the end of a user chain: back to the caller
  kContinue,     // matched, non-terminating target (MARK, LOG, no target)
  kRandomSkip,   // a statistic match did not fire on this branch
  kTerminal,     // ACCEPT, DROP, DNAT, REDIRECT, ...
  kPolicy,       // end of a built-in chain: its policy
  kAssumedSkip,  // did not match by an assumption the outcome names (session affinity)
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
  kDrop,          // DROP or a DROP policy: the SYN gets no answer, connect() times out
  kReject,        // REJECT: an ICMP error or a TCP reset comes back, connect() fails at once
  kOther,         // another terminal target (SNAT, MASQUERADE, NETMAP, ...)
  kUndetermined,  // a match could not be evaluated; see reason
};
const char* toString(OutcomeKind kind);

struct TraceOutcome {
  OutcomeKind kind = OutcomeKind::kUnchanged;
  double probability = 1.0;
  std::string table = "nat";  // the table of the deciding rule
  std::string chain;          // the chain holding the deciding rule, or the built-in for a policy
  size_t rule_index = 0;      // 1-based; 0 for a policy
  std::string target;         // "DNAT --to-destination 10.244.1.168:80", "policy ACCEPT", ...
  // Where the connection goes: the translated address when it is one address and port, the
  // original one when unchanged; unset for ranges, drops and undetermined outcomes.
  std::optional<SocketAddress> destination;
  std::string reason;   // kUndetermined: which rule, which match, and why
  std::string comment;  // the deciding rule's -m comment, e.g. "ns/svc:p80 has no endpoints"
  // An outcome decided in the filter table: what nat did before ("DNAT 10.244.1.168:80 via
  // KUBE-SEP-X"), empty when nat left the packet alone.
  std::string translated;
  // For an accepted outcome, the filter chain and rule (or policy) that let it through, e.g.
  // "filter FORWARD: KUBE-FORWARD #2 ACCEPT"; empty when there is no filter table.
  std::string accepted_by;
  // The source NAT nat POSTROUTING (or INPUT) applied on the way, e.g. "MASQUERADE
  // --random-fully in KUBE-POSTROUTING #3"; empty when none.
  std::string source_nat;
  // Branches the trace resolved by assumption, e.g. a session-affinity check taken as "this
  // client has no affinity entry yet".
  std::vector<std::string> assumptions;
  uint32_t mark = 0;
  uint32_t ct_mark = 0;  // the connection's mark when the walk ended
  std::vector<TraceStep> path;
};

struct TraceResult {
  // Every way the walk can end, with its probability (products of the statistic branches);
  // in walk order, the branch where a random match fires first.
  std::vector<TraceOutcome> outcomes;
  // The tables the walk went through ({"nat"} or {"nat", "filter"}); empty for one chain.
  std::vector<std::string> tables;
};

// Where REDIRECT sends the packet, as nf_nat_redirect does: loopback for a packet this netns
// sends; the receiving interface's first address of the family for an arriving one (IPv6: the
// first of the destination's scope, link-local or not), and nowhere (the kernel drops it) when
// the interface has none.
struct RedirectAddress {
  std::optional<IpAddress> ip;
  bool known = true;  // false: the address depends on facts the trace does not have
  std::string why;    // unset ip: why
};
RedirectAddress redirectAddress(const TracePacket& packet, const TraceContext& context);

// Outcomes both walkers (iptables, nftables) end a branch with: a base chain's policy
// (`drop`: the policy drops), and a rule or match the walk cannot evaluate.
TraceOutcome policyOutcome(const std::string& chain, const std::string& policy, bool drop,
                           const SocketAddress& destination);
TraceOutcome undeterminedOutcome(const std::string& chain, const std::vector<TraceStep>& path,
                                 std::string reason);

// Walks the nat table's OUTPUT chain for `packet` the way the kernel does: rules in order,
// jumps and gotos, RETURN, policies, MARK, and a branch per `-m statistic --mode random`.
// Pure. The walk is bounded (jump depth 64, loop detection, a branch and step budget); hitting a
// bound yields an undetermined outcome.
TraceResult traceNatOutput(const SavedTable& nat, const TracePacket& packet,
                           const TraceContext& context);

// Walks one built-in chain of one table (nat OUTPUT, filter FORWARD, ...) the same way.
// `translated` says whether nat already changed the destination (conntrack's DNAT state).
TraceResult traceChain(const SavedTable& table, std::string_view chain, const TracePacket& packet,
                       const TraceContext& context, bool translated = false);

// The whole path of a connection's first packet through nat and filter, as the kernel takes it:
// kLocal packets through nat OUTPUT then filter OUTPUT; kArriving ones through nat PREROUTING,
// then filter INPUT when the (translated) destination is local, FORWARD otherwise. The filter
// walk sees the destination and mark nat left. A missing table passes everything.
// `nft` (optional): native nftables tables, whose base chains on each hook are walked in
// priority order with the iptables ones (nat chains once no nat chain has translated yet).
TraceResult traceConnection(const SavedRuleset& ruleset, const TracePacket& packet,
                            const TraceContext& context, const NftRuleset* nft = nullptr);

struct TraceRequest {
  SocketAddress destination;
  uint32_t uid = 0;
  std::optional<uint32_t> gid;  // unset: the uid's primary group (see TraceReport::notes)
  IptablesBackend backend = IptablesBackend::kAuto;
  // Set: trace a packet arriving from this address (a pod or an external client) through
  // PREROUTING instead of one this netns sends.
  std::optional<IpAddress> source;
  std::optional<std::string> in_interface;  // unset with source: the route back to the source
};

struct TraceReport {
  std::string backend;  // "iptables-nft", ...
  TracePacket packet;
  std::vector<std::string> notes;  // what was assumed or could not be found out
  TraceResult result;
};

// Traces `request` in the calling thread's netns: picks the backend, reads the tables, asks
// the kernel for the route's source address and device (`ip route get`) and the local
// addresses, and runs traceConnection. Facts it cannot read stay unknown and are named in notes.
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
