#pragma once

// Istio's security.istio.io/v1 PeerAuthentication and AuthorizationPolicy, and the workload
// facts they need, as an immutable table the config library builds and every worker reads.
// Everything here is pure: evaluation takes the connection's attributes and returns a decision.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/ip_address.h"
#include "common/result.h"
#include "security/path_normalization.h"

namespace remora::security {

// A SPIFFE trust domain as the SPIFFE ID standard allows it: 1..255 characters, each a lowercase
// letter, a digit, '.', '-' or '_' ("cluster.local"). For --trust-domain and the ProxyConfig's
// spec.trustDomain; the error says what is wrong.
Result<void> checkTrustDomain(std::string_view domain);

using Labels = std::vector<std::pair<std::string, std::string>>;  // sorted by key

// PeerAuthentication mtls.mode. kUnset inherits from the next wider policy.
enum class MtlsMode : uint8_t { kUnset, kDisable, kPermissive, kStrict };
const char* toString(MtlsMode mode);

struct PeerAuthenticationRule {
  std::string namespace_name;
  std::string name;
  std::string created;                      // metadata.creationTimestamp: the oldest wins a tie
  std::optional<Labels> selector;           // spec.selector.matchLabels; nullopt: namespace-wide
  MtlsMode mode = MtlsMode::kUnset;         // spec.mtls.mode
  std::map<uint16_t, MtlsMode> port_modes;  // spec.portLevelMtls (applies with a selector only)
};

// The mode for one inbound port of a workload: the workload policy (its port level first),
// then the namespace policy, then the mesh-wide one in the root namespace; PERMISSIVE when none
// sets it, as in Istio.
MtlsMode resolveMtls(const std::vector<PeerAuthenticationRule>& rules,
                     const std::string& root_namespace, const std::string& workload_namespace,
                     const Labels& workload_labels, uint16_t port);

enum class Action : uint8_t { kAllow, kDeny, kAudit };
const char* toString(Action action);

// A string condition in Istio's forms: exact, "prefix*", "*suffix", or "*" (any non-empty).
bool matchValue(const std::string& pattern, const std::string& value);

// Istio's path normalization (meshConfig pathNormalization; path_normalization.h says what
// each mode sets in Envoy), which Istio's HTTP connection manager applies to every request on
// sidecar inbound and outbound listeners, before authorization and routing. The query is cut
// first and never touched. In Envoy's order:
// 1. kDecodeAndMergeSlashes only: %2F and %2f become '/', %5C and %5c '\' (one pass, so
//    %252F stays);
// 2. every mode but kNone (kBase's RFC 3986 step): the percent-encoded unreserved characters
//    (%2D %2E %30-%39 %41-%5A %5F %61-%7A %7E, any case) are decoded once (%2F and %5C stay
//    encoded), backslashes become '/', "." and ".." segments are removed (RFC 3986 section
//    5.2.4); nullopt for a path holding %00, which Envoy refuses (400);
// 3. kMergeSlashes and kDecodeAndMergeSlashes: runs of '/' become one, as Envoy's merge_slashes
//    does (a path of slashes only keeps two: "///" gives "//").
// kNone returns the path as sent. Idempotent, except where step 2's single decode makes a new
// escape from an invalid one ("%%32%65" gives "%2e"), which Envoy forwards as is too.
std::optional<std::string> normalizePath(std::string_view path,
                                         PathNormalization mode = PathNormalization::kBase);
// False when normalizePath(path, mode) is certainly `path` itself, so the common request needs
// no copy: always for kNone; else no '%', '\', '?' and no "." or ".." segment, and for the
// merging modes no "//" either. True: run normalizePath.
bool needsNormalization(std::string_view path, PathNormalization mode = PathNormalization::kBase);

// A paths / notPaths entry against a normalized path: an Istio path template when the entry
// holds `{*}` (exactly one segment) or `{**}` (one or more segments, the last operator), else
// matchValue's forms.
bool matchPath(const std::string& pattern, std::string_view path);

struct Source {
  std::vector<std::string> principals, not_principals;
  std::vector<std::string> namespaces, not_namespaces;
  std::vector<Cidr> ip_blocks, not_ip_blocks;
  std::vector<Cidr> remote_ip_blocks, not_remote_ip_blocks;
  // requestPrincipals (JWT): HTTP-only. There is no JWT authentication, so at L7 a request has
  // no request principal: a positive list never matches, a negative one always does.
  std::vector<std::string> request_principals, not_request_principals;
  bool l7 = false;
};

struct Operation {
  std::vector<uint16_t> ports, not_ports;
  // HTTP-only, evaluated per request on HTTP ports (l7: any of them is set). Hosts match the
  // Host header case-insensitively, with or without its port; paths match the path without the
  // query; all in Istio's string forms (matchValue).
  std::vector<std::string> hosts, not_hosts;
  std::vector<std::string> methods, not_methods;
  std::vector<std::string> paths, not_paths;
  bool l7 = false;
};

struct Condition {
  std::string key;  // source.ip, source.namespace, source.principal, destination.ip, ...
  std::vector<std::string> values, not_values;
  bool l7 = false;  // request.* and other HTTP-only keys (or unknown keys)
};

// The `when` keys that have a meaning on an HTTP request (request.headers[...], request.auth.*).
bool isHttpConditionKey(const std::string& key);

struct Rule {
  std::vector<Source> from;  // ORed; empty matches any source
  std::vector<Operation> to;
  std::vector<Condition> when;  // ANDed
  // A key Remora does not know sat somewhere in the rule (a typo such as `principal`): an
  // ALLOW rule never matches, a DENY or AUDIT rule matches on its other fields. Fail closed.
  bool unknown_field = false;
  bool hasL7() const;
};

// Per policy and action: how many connections the policy decided (or, for AUDIT, marked).
struct PolicyCounters {
  std::atomic<uint64_t> allowed{0};
  std::atomic<uint64_t> denied{0};
  std::atomic<uint64_t> audited{0};
};

struct AuthorizationPolicyRule {
  std::string namespace_name;
  std::string name;
  std::optional<Labels> selector;  // nullopt: every workload of the namespace (or mesh)
  Action action = Action::kAllow;
  std::vector<Rule> rules;  // empty: matches nothing (an empty ALLOW policy denies all)
  std::shared_ptr<PolicyCounters> counters;  // stable across reloads (policyCounters())
};

// The counters of policy `ns/name`, created on first use and kept for the process lifetime so
// they survive reloads. Any thread.
std::shared_ptr<PolicyCounters> policyCounters(const std::string& namespace_name,
                                               const std::string& name);
// Every policy's counters, "ns/name" → counters, for /stats/prometheus.
std::vector<std::pair<std::string, std::shared_ptr<PolicyCounters>>> allPolicyCounters();

// What an HTTP request adds to its connection's attributes (all views, valid during
// evaluate()).
struct RequestAttributes {
  std::string_view host;    // the Host header (authority)
  std::string_view method;  // as sent
  std::string_view path;    // normalized by the caller (normalizePath), without the query
  std::vector<std::pair<std::string_view, std::string_view>> headers;  // in order, names as sent
};

// What an inbound connection looks like to the policies at L4 (request == nullptr), or one HTTP
// request on it.
struct ConnectionAttributes {
  IpAddress source_ip;  // the direct peer
  IpAddress remote_ip;  // the original client; at L4 the same as source_ip
  IpAddress destination_ip;
  uint16_t destination_port = 0;
  std::string principal;         // "cluster.local/ns/x/sa/y" from the peer certificate; "" if none
  std::string source_namespace;  // from the principal; "" when not mTLS
  std::string sni;
  const RequestAttributes* request = nullptr;  // set on HTTP ports, per request
};

struct AuthzDecision {
  bool allowed = true;
  const AuthorizationPolicyRule* policy = nullptr;  // the policy that decided, if any
  std::string reason;                               // "denied by DENY policy ns/name", ...
  std::vector<const AuthorizationPolicyRule*> audited;
};

// Istio's order over the policies that select the workload: a matching DENY denies; then, when
// ALLOW policies exist, one of them must match; with none, allow. AUDIT policies that match are
// listed and never change the decision. Without `request` (a TCP connection), rules with
// HTTP-only fields: in ALLOW they never match, in DENY their HTTP-only parts are ignored (so they
// match more), as Istio does for TCP. With `request` every field is evaluated; a `when` key
// known to neither L4 nor HTTP is treated as on TCP.
// Contract: `request->path` is already normalized. The proxy normalizes each request's path once
// (normalizePath), refuses one that fails with a 400 before any policy, and hands the result to
// evaluate(), which matches paths / notPaths on it as given and never normalizes it again (a raw
// "/a/../b" is matched as "/a/../b").
AuthzDecision evaluate(const std::vector<const AuthorizationPolicyRule*>& policies,
                       const ConnectionAttributes& attributes);
// Counts the decision in the deciding (and auditing) policies' counters.
void count(const AuthzDecision& decision);

// A pod the proxy knows, by IP: for inbound (which policies select it) and outbound (is it
// meshed, who should answer).
struct Workload {
  std::string namespace_name;
  std::string name;
  Labels labels;
  std::string spiffe_id;  // spiffe://<td>/ns/<ns>/sa/<serviceAccountName>
  bool meshed = false;    // label security.istio.io/tlsMode: istio
};

// DestinationRule trafficPolicy.tls.mode.
enum class TlsMode : uint8_t { kUnset, kDisable, kSimple, kMutual, kIstioMutual };
const char* toString(TlsMode mode);

// A DestinationRule's trafficPolicy.tls (or a portLevelSettings entry's): Istio's
// ClientTLSSettings. The files are paths on the proxy's host, read when a connection needs them
// (SIMPLE and MUTUAL only; ISTIO_MUTUAL uses the proxy's own certificate).
struct ClientTlsSettings {
  TlsMode mode = TlsMode::kUnset;
  std::string client_certificate;  // MUTUAL: the chain we present (PEM file)
  std::string private_key;         // MUTUAL: its key (PEM file)
  std::string ca_certificates;     // the roots the server's chain must lead to; "": the system's
  std::string sni;                 // the server name sent in the ClientHello; "": none
  std::vector<std::string> subject_alt_names;  // one must be a SAN of the server's certificate
  bool insecure_skip_verify = false;           // no chain or SAN verification
};

// Everything the data path asks of the security configuration. Immutable once built.
class SecurityTable {
 public:
  std::string trust_domain = "cluster.local";
  std::string root_namespace = "istio-system";
  std::vector<PeerAuthenticationRule> peer_authentications;
  std::vector<AuthorizationPolicyRule> authorization_policies;
  std::unordered_map<std::string, Workload> workloads;  // by IP text
  // DestinationRule tls by "service.namespace" and port (0: every port).
  std::map<std::pair<std::string, uint16_t>, ClientTlsSettings> destination_tls;

  const Workload* workload(const IpAddress& ip) const;
  // The inbound mode for a connection to `ip:port` (PERMISSIVE for an unknown workload).
  MtlsMode inboundMode(const IpAddress& ip, uint16_t port) const;
  // The AuthorizationPolicies that select the workload at `ip`: the root namespace's, the
  // workload namespace's, by selector.
  std::vector<const AuthorizationPolicyRule*> policiesFor(const IpAddress& ip) const;
  // Whether to originate mTLS toward `endpoint` of `service` ("name.namespace", may be empty),
  // and the SPIFFE ID to expect ("" for any in the trust domain). DestinationRule DISABLE wins,
  // ISTIO_MUTUAL forces it, SIMPLE and MUTUAL originate TLS with the rule's own files
  // (`settings`), otherwise auto mTLS: only toward meshed pods.
  struct Origination {
    bool tls = false;
    std::string expected_peer;
    TlsMode mode = TlsMode::kUnset;
    const ClientTlsSettings* settings = nullptr;  // the DestinationRule's tls, if one applies
  };
  Origination outbound(const std::string& service, uint16_t service_port,
                       const IpAddress& endpoint) const;
};

}  // namespace remora::security
