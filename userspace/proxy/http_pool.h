#pragma once

// Upstream bookkeeping of the L7 path, per worker and per cluster (a Service port's subset):
// the DestinationRule connectionPool limits, the idle keep-alive connections per endpoint, the
// requests waiting for a connection, and outlier detection. Pure logic: the engine
// (http_proxy.h) owns the sockets; this only counts and decides.

#include <chrono>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.h"
#include "routing/http_route.h"

namespace remora::proxy {

struct EndpointCounters;

using Clock = std::chrono::steady_clock;

struct Waiter {
  uint32_t slot = 0;
  uint32_t generation = 0;
  bool operator==(const Waiter&) const = default;
};

class ClusterPool {
 public:
  ClusterPool(std::string service, std::string subset)
      : service_(std::move(service)), subset_(std::move(subset)) {}

  const std::string& service() const { return service_; }
  const std::string& subset() const { return subset_; }
  // From the subset's DestinationRule; refreshed with each table.
  routing::ConnectionPoolSettings limits;
  routing::OutlierDetectionSettings outlier;

  // Connections: open or opening, idle or busy.
  bool canOpen() const { return connections_ < limits.max_connections; }
  void opened() { ++connections_; }
  void closed() {
    if (connections_ > 0) --connections_;
  }
  size_t connections() const { return connections_; }
  // Whether a connection that has carried `requests` requests may carry another
  // (http.maxRequestsPerConnection; 0: unlimited).
  bool reusable(uint32_t requests) const {
    return limits.max_requests_per_connection == 0 || requests < limits.max_requests_per_connection;
  }
  // Whether a connection idle since `idle_since` is past http.idleTimeout (0: never).
  bool idleExpired(Clock::time_point idle_since, Clock::time_point now) const {
    return limits.idle_timeout.count() > 0 && now - idle_since >= limits.idle_timeout;
  }

  // Idle kept-alive connections (engine's upstream slots) per (endpoint, source), most recent
  // last. `source` is the client address a TPROXY inbound connection is bound to (Envoy's
  // original_src partitions its pools the same way); nullopt is the shared source (REDIRECT
  // inbound, outbound). A connection bound to one client's address is only ever handed to a
  // request with the same source. Limits (canOpen, the pending queue) stay per pool, across
  // every source: DestinationRule caps count the whole cluster, not one client.
  std::optional<uint32_t> takeIdle(const SocketAddress& endpoint,
                                   const std::optional<IpAddress>& source = std::nullopt);
  // Any idle connection, for a waiter that may go to any endpoint.
  std::optional<uint32_t> takeAnyIdle(const std::vector<SocketAddress>& allowed,
                                      const std::optional<IpAddress>& source = std::nullopt);
  void putIdle(const SocketAddress& endpoint, uint32_t upstream,
               const std::optional<IpAddress>& source = std::nullopt);
  void removeIdle(const SocketAddress& endpoint, uint32_t upstream,
                  const std::optional<IpAddress>& source = std::nullopt);
  // An idle connection bound to a client address other than `except` (the oldest of its
  // list), for the engine to close when the cap leaves no room for a connection from another
  // client; nullopt when there is none. Unsourced connections are never taken.
  std::optional<uint32_t> takeIdleToEvict(const std::optional<IpAddress>& except);
  // Every idle connection bound to `source`: that client's last connection to the proxy closed,
  // so no later request may use them.
  std::vector<uint32_t> takeAllIdleFrom(const IpAddress& source);
  // (source, endpoint) keys holding idle connections; an emptied key is dropped at once, so
  // this stays bounded by the idle connections however many clients came and went.
  size_t idleKeys() const { return idle_.size(); }
  size_t idleConnections() const;

  // Requests waiting for a connection (http1MaxPendingRequests).
  bool enqueue(Waiter w);
  std::optional<Waiter> dequeue();
  // Puts a dequeued waiter back at the head of the queue (it keeps its turn).
  void requeueFront(Waiter w) { pending_.push_front(w); }
  void forget(Waiter w);
  size_t pending() const { return pending_.size(); }

  // Outlier detection. `total` is the number of endpoints of the cluster. Returns true when
  // this result ejected the endpoint.
  enum class Result : uint8_t { kSuccess, k5xx, kGatewayError };
  bool record(const SocketAddress& endpoint, Result result, size_t total, Clock::time_point now);
  bool ejected(const SocketAddress& endpoint, Clock::time_point now);
  // Endpoints ejected now.
  std::vector<SocketAddress> ejectedEndpoints(Clock::time_point now);
  // Outlier detection's `interval` sweeps, as Envoy's interval timer runs them: at each
  // interval boundary an ejected endpoint whose ejection time (baseEjectionTime × times
  // ejected) is over comes back, and an endpoint not ejected has its ejection count lowered by
  // one. So an ejection lasts until the first boundary after its time. The boundaries run from
  // the pool's first sweep; a sweep catches up on every boundary passed since the last one (the
  // engine calls it on its tick, and every outlier query calls it first).
  void sweep(Clock::time_point now);
  // The per-endpoint counters the engine publishes ejections through (may be null).
  void bindCounters(const SocketAddress& endpoint, EndpointCounters* counters);

 private:
  struct Health {
    SocketAddress endpoint;
    uint32_t consecutive_5xx = 0;
    uint32_t consecutive_gateway = 0;
    uint32_t ejections = 0;
    Clock::time_point ejected_until{};
    bool is_ejected = false;
    EndpointCounters* counters = nullptr;
  };
  Health& health(const SocketAddress& endpoint);
  void sweepAt(Clock::time_point boundary);

  std::string service_;
  std::string subset_;
  size_t connections_ = 0;
  // Ordered by source first (the shared one, nullopt, before every client address), so one
  // client's keys are adjacent: takeAllIdleFrom and takeIdleToEvict start at a lower_bound
  // instead of walking every client's.
  struct IdleKey {
    std::optional<IpAddress> source;
    SocketAddress endpoint;
    // NOLINTNEXTLINE(modernize-use-nullptr): see IpAddress
    auto operator<=>(const IdleKey&) const = default;
  };
  std::map<IdleKey, std::vector<uint32_t>> idle_;
  std::deque<Waiter> pending_;
  std::vector<Health> health_;
  Clock::time_point next_sweep_{};
};

// Every cluster pool of a worker, by "service|subset"; they outlive table swaps (connections
// in them do not belong to a table).
class Pools {
 public:
  ClusterPool& get(const std::string& service, const std::string& subset);
  template <typename Fn>
  void forEach(Fn&& fn) {
    for (auto& [key, pool] : pools_) fn(*pool);
  }

 private:
  std::map<std::string, std::unique_ptr<ClusterPool>> pools_;
};

}  // namespace remora::proxy
