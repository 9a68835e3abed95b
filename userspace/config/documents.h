#pragma once

// The typed form of the Kubernetes and Istio objects the proxy reads. Parsing one document
// depends on nothing else in the file, so these are cached across reloads by document text;
// everything that relates objects to each other happens in the table builder.
//
// Lines are 0-based and relative to the document's first line, because a cached document can
// move within the file between loads.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "common/finding.h"
#include "common/ip_address.h"
#include "config/security_documents.h"
#include "routing/route_table.h"
#include "security/path_normalization.h"

namespace remora::config {

// Sorted by key, so matching a selector is a merge rather than a lookup per label.
using Labels = std::vector<std::pair<std::string, std::string>>;

// True when every key=value of `selector` is in `labels` (both sorted by key).
bool labelsMatch(const Labels& selector, const Labels& labels);

struct ServicePortSpec {
  std::string name;
  uint16_t port = 0;
  uint16_t target_number = 0;  // 0 when targetPort is a name
  std::string target_name;
  std::string app_protocol;
  int line = 0;
};

struct ServiceSpec {
  std::vector<IpAddress> cluster_ips;  // clusterIP and clusterIPs merged, "None" dropped
  std::vector<ServicePortSpec> ports;  // TCP ports only
  Labels selector;                     // empty: endpoints come from EndpointSlices only
  bool external_name = false;          // type ExternalName: a DNS alias, nothing to route
  bool headless = false;               // clusterIP: None
};

struct PodSpec {
  std::vector<IpAddress> ips;  // status.podIP first, then the rest of status.podIPs
  bool ready = false;
  std::vector<std::pair<std::string, uint16_t>> named_ports;  // TCP container ports
  std::string service_account;  // spec.serviceAccountName: the SPIFFE identity's last part
};

struct SliceEndpoint {
  IpAddress address;  // addresses[0]: the API says consumers use only the first
  bool ready = true;
  std::string pod_namespace;  // targetRef, when it is a Pod
  std::string pod_name;
};

struct SlicePort {
  std::string name;
  uint16_t port = 0;
};

struct EndpointSliceSpec {
  std::string service;  // the kubernetes.io/service-name label
  std::vector<SliceEndpoint> endpoints;
  std::vector<SlicePort> ports;  // TCP ports only
};

struct RouteDestination {
  std::string host;
  std::string subset;
  uint16_t port = 0;  // 0 when destination.port is unset
  uint32_t weight = 0;
  int line = 0;
};

enum class RouteSection { kHttp, kTcp, kTls };

struct VsRoute {
  std::string field;  // "spec.tcp[0]", for errors found while building
  RouteSection section = RouteSection::kHttp;
  bool has_match = false;
  // One entry of `match`. Entries that name nothing but a port, sourceLabels and
  // sourceNamespace (or nothing at all) can be decided per connection (`l4`); `l7_match` names
  // what the others need ("headers", "uri", ...): such a match is not applied per connection.
  // The source conditions are held against the proxy's own workload by the table builder.
  struct MatchEntry {
    std::string field;  // "spec.tcp[0].match[1]"
    int line = 0;
    bool l4 = true;
    uint16_t port = 0;  // 0: any port
    std::optional<Labels> source_labels;
    std::optional<std::string> source_namespace;
  };
  std::vector<MatchEntry> entries;
  std::string l7_match;
  std::string action;  // "redirect", "directResponse" or "delegate" when there is no route
  std::vector<RouteDestination> destinations;
  int line = 0;
  // spec.http only: the per-request model. Its destinations are `destinations` in order (and
  // its mirrors are `mirrors`), with subset indexes left for the table builder to resolve per
  // port. nullptr when the route was rejected (`rejected`) or is not an http route.
  std::shared_ptr<const routing::HttpRoute> http;
  // Its mirrors, in the order of http_route's: `mirror`, or each entry of `mirrors[]`.
  struct Mirror {
    RouteDestination destination;
    std::string field;  // "spec.http[0].mirror" or "spec.http[0].mirrors[1].destination"
  };
  std::vector<Mirror> mirrors;
  // An invalid value in the route (a bad regex, an out-of-range status): reported as an error
  // note, and this route alone is left out.
  bool rejected = false;
  // False when every match entry is bound to gateways only (or needs what a sidecar cannot
  // know): the route does not apply to sidecars.
  bool sidecar = true;
};

struct HostRef {
  std::string host;
  int line = 0;
};

struct VirtualServiceSpec {
  std::vector<HostRef> hosts;
  std::vector<VsRoute> routes;  // tcp routes first, then http, then tls, each in file order
  bool mesh = true;             // false when bound to gateways only: not for sidecars
};

// One level of a DestinationRule trafficPolicy (the top, a subset's, or one portLevelSettings
// entry): the blocks it sets. Istio merges levels block by block (docs/CONFIG.md).
struct PolicyLevel {
  std::optional<routing::LbPolicy> lb;
  std::optional<routing::ConnectionPoolSettings> pool;
  std::optional<routing::OutlierDetectionSettings> outlier;
};

struct TrafficPolicySpec {
  PolicyLevel level;
  std::vector<std::pair<uint16_t, PolicyLevel>> ports;  // portLevelSettings by port number
};

struct SubsetSpec {
  std::string name;
  Labels labels;
  std::optional<routing::LbPolicy> policy;  // traffic.level.lb
  TrafficPolicySpec traffic;
  int line = 0;
};

struct DestinationRuleSpec {
  HostRef host;
  std::optional<routing::LbPolicy> policy;  // traffic.level.lb
  TrafficPolicySpec traffic;
  bool has_traffic_policy = false;
  std::vector<SubsetSpec> subsets;
  DestinationTls tls;  // trafficPolicy.tls (security_parser.cc)
  // spec.workloadSelector.matchLabels: the rule applies only to proxies of selected workloads
  // in its own namespace (an empty selector selects every workload there). nullopt: no selector.
  std::optional<Labels> workload_selector;
  int selector_line = 0;
};

struct ProxyConfigSpec {
  std::optional<uint16_t> outbound_port;
  std::optional<uint16_t> inbound_port;
  std::optional<IpAddress> admin_address;
  std::optional<uint16_t> admin_port;
  std::optional<IpAddress> inbound_source;
  std::optional<bool> inbound_transparent;  // inboundInterceptionMode: TPROXY (true) or REDIRECT
  std::optional<routing::OutboundPolicy> outbound_policy;
  std::optional<std::chrono::milliseconds> connect_timeout;
  std::optional<std::chrono::milliseconds> drain_timeout;
  std::optional<int> max_connect_attempts;
  std::optional<bool> access_log;
  // Data path (a zero duration disables that timeout).
  std::optional<uint64_t> buffer_limit_bytes;
  std::optional<std::chrono::milliseconds> idle_timeout;
  std::optional<std::chrono::milliseconds> half_close_timeout;
  std::optional<std::chrono::milliseconds> max_connection_duration;
  std::optional<uint32_t> max_connections;
  std::optional<std::chrono::milliseconds> tcp_keepalive;
  std::optional<std::chrono::milliseconds> inbound_drain_grace;
  std::optional<std::string> relay;  // "auto", "kernel" or "uring"
  // Istio's meshConfig protocolDetectionTimeout: the first-bytes wait of a port with no declared
  // protocol (more than 0).
  std::optional<std::chrono::milliseconds> protocol_detection_timeout;
  // Istio's meshConfig pathNormalization.normalization (spec.pathNormalization.normalization).
  std::optional<security::PathNormalization> path_normalization;
  // mTLS credentials (docs/TLS.md): the --tls-dir and --trust-domain of the document.
  std::optional<std::string> tls_dir;
  std::optional<std::string> trust_domain;
  // The proxy's workload (routing::WorkloadIdentity), under --pod-namespace, --pod-name and
  // --pod-labels-file.
  std::optional<std::string> pod_namespace;
  std::optional<std::string> pod_name;
  std::optional<std::string> pod_labels_file;
};

// A workload outside Kubernetes (a WorkloadEntry, or one of a ServiceEntry's endpoints).
struct WorkloadSpec {
  std::string address;  // an IP, or a DNS name (resolved when the ServiceEntry says DNS)
  std::vector<std::pair<std::string, uint16_t>> ports;  // port name → number
  Labels labels;
  int line = 0;
};

enum class Resolution { kNone, kStatic, kDns, kDnsRoundRobin };

struct ServiceEntryPortSpec {
  std::string name;
  uint16_t number = 0;
  uint16_t target = 0;  // targetPort, else number
  std::string protocol;
  int line = 0;
};

struct ServiceEntrySpec {
  std::vector<HostRef> hosts;
  std::vector<IpAddress> addresses;  // VIPs (single addresses; wider CIDRs are reported)
  std::vector<ServiceEntryPortSpec> ports;
  Resolution resolution = Resolution::kNone;
  bool mesh_internal = false;
  std::vector<WorkloadSpec> endpoints;
  std::optional<Labels> workload_selector;
  int line = 0;
};

struct WorkloadEntrySpec {
  WorkloadSpec workload;
};

struct NamespaceSpec {};

enum class Kind {
  kService,
  kPod,
  kEndpointSlice,
  kVirtualService,
  kDestinationRule,
  kNamespace,
  kProxyConfig,
  kEndpoints,  // core/v1 Endpoints, read into an EndpointSliceSpec
  kServiceEntry,
  kWorkloadEntry,
  kPeerAuthentication,   // security_parser.cc
  kAuthorizationPolicy,  // security_parser.cc
};

const char* toString(Kind kind);

// A finding about one object, with a line relative to its document.
struct Note {
  Severity severity = Severity::kWarning;
  std::string field;
  int line = 0;
  std::string message;
};

struct Object {
  Kind kind = Kind::kNamespace;
  int item = -1;  // position in a `kind: List`, or -1
  int line = 0;
  std::string namespace_name;  // metadata.namespace, "default" when unset
  std::string name;
  std::string created;  // metadata.creationTimestamp (RFC 3339 sorts as text), may be empty
  Labels labels;
  std::variant<ServiceSpec, PodSpec, EndpointSliceSpec, VirtualServiceSpec, DestinationRuleSpec,
               NamespaceSpec, ProxyConfigSpec, ServiceEntrySpec, WorkloadEntrySpec,
               PeerAuthenticationSpec, AuthorizationPolicySpec>
      spec;
  std::vector<Note> notes;  // fields not applied, unknown fields
};

// An object that failed validation. It is left out of the table; its last good version (by
// kind, namespace and name) keeps serving when there is one.
struct Rejected {
  std::string kind;
  std::string namespace_name;
  std::string name;
  int item = -1;
  std::string field;
  int line = 0;         // relative, like Object::line
  std::string message;  // the full text, naming document, object, field and line
};

// One YAML document: a single object, several (a List), or none (an empty document).
struct DocumentModel {
  std::vector<Object> objects;
  std::vector<Rejected> rejected;
  // Kinds the proxy does not read (Deployment, ConfigMap, ...), "kind (apiVersion)" each.
  std::vector<std::string> skipped;
};

// Where a document sits in the file being loaded.
struct Placement {
  size_t index = 0;    // 1-based, in file order
  int first_line = 0;  // 0-based line of the document's first line in the file
};

// "document 3 (Service istio-demo/bill-service), spec.ports[0].port, line 14: <what>". Both the
// parser and the builder word their errors this way, so a user always gets the same shape.
std::string describeError(const Placement& placement, int item, std::string_view kind,
                          std::string_view namespace_name, std::string_view name,
                          std::string_view field, int relative_line, std::string_view what);

}  // namespace remora::config
