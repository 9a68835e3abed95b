#include "proxy/http_pool.h"

#include <algorithm>

#include "proxy/stats.h"

namespace remora::proxy {

std::optional<uint32_t> ClusterPool::takeIdle(const SocketAddress& endpoint) {
  for (auto& [address, list] : idle_) {
    if (address == endpoint && !list.empty()) {
      uint32_t up = list.back();
      list.pop_back();
      return up;
    }
  }
  return std::nullopt;
}

std::optional<uint32_t> ClusterPool::takeAnyIdle(const std::vector<SocketAddress>& allowed) {
  for (const SocketAddress& a : allowed) {
    if (auto up = takeIdle(a)) return up;
  }
  return std::nullopt;
}

void ClusterPool::putIdle(const SocketAddress& endpoint, uint32_t upstream) {
  for (auto& [address, list] : idle_) {
    if (address == endpoint) {
      list.push_back(upstream);
      return;
    }
  }
  idle_.emplace_back(endpoint, std::vector<uint32_t>{upstream});
}

void ClusterPool::removeIdle(const SocketAddress& endpoint, uint32_t upstream) {
  for (auto& [address, list] : idle_) {
    if (address == endpoint) std::erase(list, upstream);
  }
}

bool ClusterPool::enqueue(Waiter w) {
  if (pending_.size() >= limits.http1_max_pending_requests) return false;
  pending_.push_back(w);
  return true;
}

std::optional<Waiter> ClusterPool::dequeue() {
  if (pending_.empty()) return std::nullopt;
  Waiter w = pending_.front();
  pending_.pop_front();
  return w;
}

void ClusterPool::forget(Waiter w) { std::erase(pending_, w); }

ClusterPool::Health& ClusterPool::health(const SocketAddress& endpoint) {
  for (Health& h : health_) {
    if (h.endpoint == endpoint) return h;
  }
  Health& h = health_.emplace_back();
  h.endpoint = endpoint;
  return h;
}

void ClusterPool::bindCounters(const SocketAddress& endpoint, EndpointCounters* counters) {
  health(endpoint).counters = counters;
}

void ClusterPool::refresh(Health& h, Clock::time_point now) {
  if (h.is_ejected && now >= h.ejected_until) {
    h.is_ejected = false;
    h.consecutive_5xx = 0;
    h.consecutive_gateway = 0;
    if (h.counters != nullptr) h.counters->ejected.set(0);
  }
}

bool ClusterPool::ejected(const SocketAddress& endpoint, Clock::time_point now) {
  for (Health& h : health_) {
    if (h.endpoint == endpoint) {
      refresh(h, now);
      return h.is_ejected;
    }
  }
  return false;
}

std::vector<SocketAddress> ClusterPool::ejectedEndpoints(Clock::time_point now) {
  std::vector<SocketAddress> out;
  for (Health& h : health_) {
    refresh(h, now);
    if (h.is_ejected) out.push_back(h.endpoint);
  }
  return out;
}

bool ClusterPool::record(const SocketAddress& endpoint, Result result, size_t total,
                         Clock::time_point now) {
  if (!outlier.enabled) return false;
  Health& h = health(endpoint);
  refresh(h, now);
  if (h.is_ejected) return false;
  switch (result) {
    case Result::kSuccess:
      h.consecutive_5xx = 0;
      h.consecutive_gateway = 0;
      return false;
    case Result::kGatewayError:
      ++h.consecutive_gateway;
      ++h.consecutive_5xx;  // a gateway error is a 5xx too, as Envoy counts it
      break;
    case Result::k5xx:
      ++h.consecutive_5xx;
      h.consecutive_gateway = 0;
      break;
  }
  const bool trip =
      (outlier.consecutive_5xx_errors > 0 && h.consecutive_5xx >= outlier.consecutive_5xx_errors) ||
      (outlier.consecutive_gateway_errors > 0 &&
       h.consecutive_gateway >= outlier.consecutive_gateway_errors);
  if (!trip) return false;
  size_t ejected_now = 0;
  for (Health& other : health_) {
    refresh(other, now);
    if (other.is_ejected) ++ejected_now;
  }
  // As Envoy: eject while the ejected share is below maxEjectionPercent.
  if (total == 0 || ejected_now * 100 >= size_t{outlier.max_ejection_percent} * total) {
    return false;
  }
  ++h.ejections;
  h.is_ejected = true;
  // Each ejection of the same endpoint lasts longer: base × times ejected.
  h.ejected_until = now + outlier.base_ejection_time * h.ejections;
  if (h.counters != nullptr) {
    h.counters->ejections.inc();
    h.counters->ejected.set(1);
  }
  return true;
}

ClusterPool& Pools::get(const std::string& service, const std::string& subset) {
  const std::string key = service + "|" + subset;
  auto it = pools_.find(key);
  if (it != pools_.end()) return *it->second;
  auto& slot = pools_[key];
  slot = std::make_unique<ClusterPool>(service, subset);
  return *slot;
}

}  // namespace remora::proxy
