#pragma once

// The contract between configuration, routing and the io_uring engine. The config library
// builds an immutable RouteTable from YAML; each worker owns a Router that picks upstreams from
// the current table; the engine only sees RouteDecision.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/finding.h"
#include "common/ip_address.h"
#include "common/result.h"
#include "routing/http_route.h"
#include "security/path_normalization.h"

namespace remora::security {
class SecurityTable;
}

namespace remora::routing {

enum class LbPolicy { kRoundRobin, kRandom, kLeastRequest };
enum class OutboundPolicy { kAllowAny, kRegistryOnly };

// The workload the proxy serves, as Istio's sidecar learns it from the downward API (POD_NAME,
// POD_NAMESPACE, and the pod's labels in a file): VirtualService match sourceLabels and
// sourceNamespace, and DestinationRule workloadSelector, are held against it when the table is
// built (docs/CONFIG.md, "The proxy's workload").
struct WorkloadIdentity {
  std::string namespace_name;  // empty: unknown
  std::string name;            // the pod's name; empty: unknown
  std::string labels_file;     // the downward API labels file to read (empty: none)
  LabelList labels;            // sorted by key
  bool labels_known = false;   // read from labels_file, or taken from the config's Pod
  std::string labels_source;   // "file /etc/podinfo/labels", "Pod ns/name", or ""
};

// The proxy's own settings: flags override the optional ProxyConfig document, which overrides
// these defaults.
struct ProxySettings {
  SocketAddress outbound_listen = *SocketAddress::parse("0.0.0.0:15001");
  SocketAddress inbound_listen = *SocketAddress::parse("0.0.0.0:15006");
  SocketAddress admin_listen = *SocketAddress::parse("127.0.0.1:15000");
  IpAddress inbound_source = *IpAddress::parse("127.0.0.6");
  // TPROXY inbound (ProxyConfig spec.inboundInterceptionMode: TPROXY, flag
  // --inbound-interception-mode): the inbound listener is transparent (IP_TRANSPARENT) and the
  // connection to the app is made from the client's own address, marked kTproxyMark. Needs
  // CAP_NET_ADMIN. Off: connections to the app come from inbound_source.
  bool inbound_transparent = false;
  OutboundPolicy outbound_policy = OutboundPolicy::kAllowAny;
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds drain_timeout{5000};
  int max_connect_attempts = 3;
  bool access_log = false;
  // Data path (docs/PROXY.md, "Buffers, timeouts and resets"). Zero durations disable.
  uint64_t buffer_limit_bytes = uint64_t{1} << 20;  // per connection and direction
  std::chrono::milliseconds idle_timeout{std::chrono::hours(1)};
  std::chrono::milliseconds half_close_timeout{std::chrono::minutes(1)};
  std::chrono::milliseconds max_connection_duration{0};
  uint32_t max_connections = 0;                                      // per worker; 0: no limit
  std::chrono::milliseconds tcp_keepalive{std::chrono::minutes(5)};  // keepalive idle time
  // After SIGTERM, inbound keeps accepting this long; outbound until the drain ends.
  std::chrono::milliseconds inbound_drain_grace{std::chrono::seconds(2)};
  // The byte relay of pure L4 routes: "auto", "kernel" or "uring" (proxy/kernel_relay.h).
  // auto by default: the kernel relay where `remora-init relay install` put it (installing it is
  // the opt-in), for the connections it serves best; the io_uring relay everywhere else.
  std::string relay = "auto";
  // How long a connection to a port with no declared protocol waits for its first bytes before
  // it is relayed as TCP (proxy/sniffer.h; Istio's protocolDetectionTimeout).
  std::chrono::milliseconds protocol_detection_timeout{100};
  // Istio's meshConfig pathNormalization: how each HTTP request's path is normalized before
  // authorization, route matching and forwarding, on both listeners (docs/HTTP.md).
  security::PathNormalization path_normalization = security::PathNormalization::kBase;
  // mTLS (docs/TLS.md): the credential directory (empty: no identity, plaintext only) and the
  // SPIFFE trust domain. Read once at start; a reload that changes them is logged.
  std::string tls_dir;
  std::string trust_domain = "cluster.local";
  // Flags (and their environment variables) over ProxyConfig spec.podNamespace, spec.podName and
  // spec.podLabelsFile; the builder reads the labels file, or the Pod document, at each load.
  WorkloadIdentity workload;
};

// One endpoint as tables built in code describe it (EndpointList::append).
struct Endpoint {
  SocketAddress address;
  std::string pod;  // "namespace/name", empty when known only from an EndpointSlice
};

// A Service's endpoints, each held once: its IP and pod name. Every port and subset of the
// Service lists its endpoints as indices into this pool, so 100 ports x 10,000 endpoints keep
// 10,000 addresses and names, not 1,000,000 (docs/PROXY.md, "Memory per endpoint").
struct EndpointPool {
  std::vector<IpAddress> ips;
  std::vector<std::string> pods;  // parallel to ips
  // A dual-stack pod's addresses in the other family: (pool index, address). Dialling one
  // reaches the pod as its primary address does.
  std::vector<std::pair<uint32_t, IpAddress>> other_ips;
};

// An ordered list of endpoints: pool indices plus the port each listens on. Copies share
// everything; the builder gives identical lists of different ports and subsets one index
// vector, and a list whose endpoints all listen on one port stores that port once.
class EndpointList {
 public:
  struct Entry {
    SocketAddress address;
    const std::string& pod;
  };
  class Iterator {
   public:
    using difference_type = std::ptrdiff_t;
    using value_type = Entry;
    Iterator(const EndpointList* list, size_t i) : list_(list), i_(i) {}
    Entry operator*() const { return (*list_)[i_]; }
    Iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator==(const Iterator& other) const { return i_ == other.i_; }

   private:
    const EndpointList* list_;
    size_t i_;
  };

  EndpointList() = default;
  // `ports` is null when every member listens on `port`; otherwise one port per member.
  EndpointList(std::shared_ptr<const EndpointPool> pool,
               std::shared_ptr<const std::vector<uint32_t>> members, uint16_t port,
               std::shared_ptr<const std::vector<uint16_t>> ports = nullptr);

  size_t size() const { return members_ ? members_->size() : 0; }
  bool empty() const { return size() == 0; }
  uint32_t member(size_t i) const { return (*members_)[i]; }  // index into pool()
  uint16_t port(size_t i) const { return ports_ ? (*ports_)[i] : port_; }
  SocketAddress address(size_t i) const { return {pool_->ips[member(i)], port(i)}; }
  const std::string& pod(size_t i) const { return pool_->pods[member(i)]; }
  Entry operator[](size_t i) const { return {address(i), pod(i)}; }
  Iterator begin() const { return {this, 0}; }
  Iterator end() const { return {this, size()}; }
  const std::shared_ptr<const EndpointPool>& pool() const { return pool_; }
  // Null when the list is empty or its ports differ per member.
  const std::vector<uint32_t>* members() const { return members_.get(); }
  const std::vector<uint16_t>* ports() const { return ports_.get(); }

  // For tables built in code: appends to a pool of this list's own (copied first when shared).
  void append(const Endpoint& endpoint);
  // The same pod's address in the other family (the last endpoint pushed).
  void addOtherIp(const IpAddress& ip);

 private:
  std::shared_ptr<const EndpointPool> pool_;
  std::shared_ptr<const std::vector<uint32_t>> members_;
  std::shared_ptr<const std::vector<uint16_t>> ports_;
  uint16_t port_ = 0;
};

struct Subset {
  std::string name;  // "" for the whole service
  LbPolicy policy = LbPolicy::kRoundRobin;
  EndpointList endpoints;
  // DestinationRule trafficPolicy (top level, then subset level, then portLevelSettings for
  // this port, merged as Istio does).
  ConnectionPoolSettings connection_pool;
  OutlierDetectionSettings outlier_detection;
};

struct WeightedSubset {
  uint32_t subset_index = 0;  // into Service::subsets
  uint32_t weight = 0;
};

// One Service port: what a clusterIP:port (or a pod IP:port of the service) maps to.
struct ServicePort {
  std::string service;  // "name.namespace"
  uint16_t port = 0;
  std::vector<Subset> subsets;
  std::vector<WeightedSubset> route;  // weights across subsets; one entry when no VirtualService
  std::string name;                   // the Service's port name ("http"), may be empty
  std::string app_protocol;           // spec.ports[].appProtocol, empty when unset
  std::string protocol = "TCP";       // as Istio selects it: "HTTP", "HTTP2", "GRPC", "TCP", ...
  // VirtualService http[] routes for this port, in order (first match wins). Empty: the port is
  // routed per connection by `route` alone (no VirtualService, tcp routes only, or not an
  // HTTP/1.1 port). On a port with no declared protocol ("auto") they apply to connections
  // sniffed as HTTP/1.x, and `route` (spec.tcp, else the Service's endpoints) to the rest.
  std::vector<HttpRoute> http_routes;
};

// What an original destination matched. `endpoint` is set when the client dialled a pod
// address of the service itself rather than a service address: routing then keeps that pod.
struct RouteMatch {
  static constexpr uint32_t kNoSubset = UINT32_MAX;
  const ServicePort* service = nullptr;
  bool endpoint = false;
  // The dialled pod's place in service->subsets; kNoSubset when no routed subset holds it.
  uint32_t subset_index = kNoSubset;
  uint32_t endpoint_index = 0;
};

// Immutable after construction; shared between workers through shared_ptr<const RouteTable>.
class RouteTable {
 public:
  virtual ~RouteTable() = default;
  // The ServicePort for an original destination, or nullptr (passthrough / REGISTRY_ONLY).
  // O(1): a hash lookup on IP:port, then for a pod address one on the IP.
  virtual const ServicePort* find(const SocketAddress& original_dst) const = 0;
  // find() plus whether the destination is one of the service's own pod addresses. Tables that
  // do not index pods may keep this default, which treats every match as a service address.
  virtual RouteMatch match(const SocketAddress& original_dst) const {
    return RouteMatch{.service = find(original_dst)};
  }
  virtual const ProxySettings& settings() const = 0;
  virtual uint64_t generation() const = 0;
  // /config_dump's body: services, subsets, endpoints, weights, findings and the generation.
  virtual nlohmann::json toJson() const = 0;
  // What the config check found while building this table: rejected objects (errors), fields
  // not applied as Istio would (warnings), notes (info). Empty for tables built in code.
  virtual const std::vector<Finding>& findings() const {
    static const std::vector<Finding> kNone;
    return kNone;
  }
  // PeerAuthentication, AuthorizationPolicy, DestinationRule TLS and the pods' identities
  // (security/security_policy.h); set by the builder before the table is shared, nullptr for
  // tables built in code.
  std::shared_ptr<const security::SecurityTable> security;
};

struct RouteDecision {
  enum class Kind { kService, kPassthrough, kRefused };
  Kind kind = Kind::kPassthrough;
  const ServicePort* service = nullptr;  // valid while the table it came from is alive
  uint32_t subset_index = 0;
  uint32_t endpoint_index = 0;
  SocketAddress upstream;  // where to connect
  // The client dialled this pod's address itself: the decision keeps it and retry() never
  // moves the connection to another pod.
  bool pinned = false;
};

// Endpoints to leave out of a pick (outlier-ejected). Owned by the caller.
class EndpointHealth {
 public:
  virtual ~EndpointHealth() = default;
  virtual bool ejected(const ServicePort& port, uint32_t subset_index,
                       uint32_t endpoint_index) const = 0;
};

// The per-request outcome of an HttpRoute: the weighted destination and an endpoint in it, and
// whether this request draws the route's delay fault, abort fault and each of its mirrors. An
// aborted request stops at the fault, as with Envoy's fault filter: no destination is picked (so
// the weights stay exact over the requests that are routed) and nothing is mirrored.
struct HttpRouteDecision {
  const HttpRouteDestination* destination = nullptr;  // nullptr: the route has none
  // kService with an endpoint; kRefused when the picked subset has no endpoint left (no
  // endpoints, or all ejected or tried): the caller answers 503.
  RouteDecision upstream;
  bool delay = false;
  bool abort = false;
  // One per mirror drawn that has an endpoint, in the route's order.
  std::vector<RouteDecision> mirrors;
};

// Per-worker routing state (smooth weighted round-robin counters, round-robin cursors,
// active-request counts). Not thread-safe: one per worker thread.
class Router {
 public:
  virtual ~Router() = default;
  // Swaps in a new table; decisions already made keep pointing into the old one, which the
  // caller keeps alive (shared_ptr) until their connections close.
  virtual void setTable(std::shared_ptr<const RouteTable> table) = 0;
  virtual const std::shared_ptr<const RouteTable>& table() const = 0;
  // Picks an upstream for a new connection. Exact weights: within any Σweights consecutive
  // decisions for one ServicePort, each subset is chosen exactly weight times, interleaved.
  virtual RouteDecision route(const SocketAddress& original_dst) = 0;
  // Another endpoint in the same subset (then the other subsets) after a failed connect,
  // skipping `tried` and `failed` itself; nullopt when none is left (and always for a pinned
  // decision). The caller still release()s `failed`, as for any decision that has ended.
  virtual std::optional<RouteDecision> retry(const RouteDecision& failed,
                                             std::span<const SocketAddress> tried) = 0;
  // Tells LEAST_REQUEST that a connection routed by `decision` has ended.
  virtual void release(const RouteDecision& decision) = 0;

  // Per request on an HTTP port: picks route.destinations by weight (the same exact smooth
  // weighted round-robin as route(), with counters per HttpRoute), then an endpoint of the
  // picked subset not ejected by `health`; draws the fault and mirror percentages exactly
  // (ExactPercentage per route). `port` is the ServicePort that holds `route`; both must come
  // from the current table. Every RouteDecision returned is release()d by the caller.
  virtual HttpRouteDecision routeRequest(const ServicePort& port, const HttpRoute& route,
                                         const EndpointHealth* health = nullptr) {
    (void)port;
    (void)route;
    (void)health;
    return {};
  }
  // An endpoint of `subset_index` in `port` (by the subset's LB policy) that is neither in
  // `tried` nor ejected by `health`; nullopt when none is left. For retries of a request.
  virtual std::optional<RouteDecision> pickSubsetEndpoint(const ServicePort& port,
                                                          uint32_t subset_index,
                                                          std::span<const SocketAddress> tried,
                                                          const EndpointHealth* health = nullptr) {
    (void)port;
    (void)subset_index;
    (void)tried;
    (void)health;
    return std::nullopt;
  }
};

std::unique_ptr<Router> makeRouter(std::shared_ptr<const RouteTable> table);
// The same with a fixed seed for the RANDOM policy, so tests and benchmarks are reproducible.
std::unique_ptr<Router> makeRouter(std::shared_ptr<const RouteTable> table, uint64_t seed);

}  // namespace remora::routing
