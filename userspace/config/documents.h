#pragma once

// The typed form of the Kubernetes and Istio objects the proxy reads. Parsing one document
// depends on nothing else in the file, so these are cached across reloads by document text;
// everything that relates objects to each other happens in the table builder.
//
// Lines are 0-based and relative to the document's first line, because a cached document can
// move within the file between loads.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "common/ip_address.h"
#include "routing/route_table.h"

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
};

struct PodSpec {
  std::vector<IpAddress> ips;  // status.podIP first, then the rest of status.podIPs
  bool ready = false;
  std::vector<std::pair<std::string, uint16_t>> named_ports;  // TCP container ports
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

struct VsRoute {
  std::string field;  // "spec.tcp[0]", for errors found while building
  bool tcp = false;
  bool has_match = false;
  std::vector<uint16_t> match_ports;  // tcp routes: the ports their matches name
  std::vector<RouteDestination> destinations;
  int line = 0;
};

struct HostRef {
  std::string host;
  int line = 0;
};

struct VirtualServiceSpec {
  std::vector<HostRef> hosts;
  std::vector<VsRoute> routes;  // tcp routes first, then http, each in file order
};

struct SubsetSpec {
  std::string name;
  Labels labels;
  std::optional<routing::LbPolicy> policy;
  int line = 0;
};

struct DestinationRuleSpec {
  HostRef host;
  std::optional<routing::LbPolicy> policy;
  std::vector<SubsetSpec> subsets;
};

struct ProxyConfigSpec {
  std::optional<uint16_t> outbound_port;
  std::optional<uint16_t> inbound_port;
  std::optional<IpAddress> admin_address;
  std::optional<uint16_t> admin_port;
  std::optional<IpAddress> inbound_source;
  std::optional<routing::OutboundPolicy> outbound_policy;
  std::optional<std::chrono::milliseconds> connect_timeout;
  std::optional<std::chrono::milliseconds> drain_timeout;
  std::optional<int> max_connect_attempts;
  std::optional<bool> access_log;
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
};

const char* toString(Kind kind);

struct Object {
  Kind kind = Kind::kNamespace;
  int item = -1;  // position in a `kind: List`, or -1
  int line = 0;
  std::string namespace_name;  // metadata.namespace, "default" when unset
  std::string name;
  Labels labels;
  std::variant<ServiceSpec, PodSpec, EndpointSliceSpec, VirtualServiceSpec, DestinationRuleSpec,
               NamespaceSpec, ProxyConfigSpec>
      spec;
};

// One YAML document: a single object, several (a List), or none (an empty document).
struct DocumentModel {
  std::vector<Object> objects;
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
