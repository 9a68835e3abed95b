#pragma once

// The contract between configuration, routing and the io_uring engine. The config library
// builds an immutable RouteTable from YAML; each worker owns a Router that picks upstreams from
// the current table; the engine only sees RouteDecision.

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/finding.h"
#include "common/ip_address.h"
#include "common/result.h"

namespace remora::security {
class SecurityTable;
}

namespace remora::routing {

enum class LbPolicy { kRoundRobin, kRandom, kLeastRequest };
enum class OutboundPolicy { kAllowAny, kRegistryOnly };

// The proxy's own settings: flags override the optional ProxyConfig document, which overrides
// these defaults.
struct ProxySettings {
  SocketAddress outbound_listen = *SocketAddress::parse("0.0.0.0:15001");
  SocketAddress inbound_listen = *SocketAddress::parse("0.0.0.0:15006");
  SocketAddress admin_listen = *SocketAddress::parse("127.0.0.1:15000");
  IpAddress inbound_source = *IpAddress::parse("127.0.0.6");
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
};

struct Endpoint {
  SocketAddress address;
  std::string pod;  // "namespace/name", empty when known only from an EndpointSlice
};

struct Subset {
  std::string name;  // "" for the whole service
  LbPolicy policy = LbPolicy::kRoundRobin;
  std::vector<Endpoint> endpoints;
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
  // O(1): a hash lookup on IP:port.
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
};

std::unique_ptr<Router> makeRouter(std::shared_ptr<const RouteTable> table);
// The same with a fixed seed for the RANDOM policy, so tests and benchmarks are reproducible.
std::unique_ptr<Router> makeRouter(std::shared_ptr<const RouteTable> table, uint64_t seed);

}  // namespace remora::routing
