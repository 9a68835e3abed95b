#include "proxy/http_pool.h"

#include <algorithm>

#include "proxy/stats.h"

namespace remora::proxy {

std::optional<uint32_t> ClusterPool::takeIdle(const SocketAddress& endpoint,
                                              const std::optional<IpAddress>& source) {
  auto it = idle_.find(IdleKey{source, endpoint});
  if (it == idle_.end()) return std::nullopt;
  const uint32_t up = it->second.back();
  it->second.pop_back();
  if (it->second.empty()) idle_.erase(it);
  return up;
}

std::optional<uint32_t> ClusterPool::takeAnyIdle(const std::vector<SocketAddress>& allowed,
                                                 const std::optional<IpAddress>& source) {
  for (const SocketAddress& a : allowed) {
    if (auto up = takeIdle(a, source)) return up;
  }
  return std::nullopt;
}

void ClusterPool::putIdle(const SocketAddress& endpoint, uint32_t upstream,
                          const std::optional<IpAddress>& source) {
  idle_[IdleKey{source, endpoint}].push_back(upstream);
}

void ClusterPool::removeIdle(const SocketAddress& endpoint, uint32_t upstream,
                             const std::optional<IpAddress>& source) {
  auto it = idle_.find(IdleKey{source, endpoint});
  if (it == idle_.end()) return;
  std::erase(it->second, upstream);
  if (it->second.empty()) idle_.erase(it);
}

std::optional<uint32_t> ClusterPool::takeIdleToEvict(const std::optional<IpAddress>& except) {
  // The lowest key with a source (an address and endpoint of all zeros orders first).
  for (auto it = idle_.lower_bound(IdleKey{IpAddress{}, SocketAddress{}}); it != idle_.end();
       ++it) {
    if (it->first.source == except) continue;
    const uint32_t up = it->second.front();  // the longest idle of its list
    it->second.erase(it->second.begin());
    if (it->second.empty()) idle_.erase(it);
    return up;
  }
  return std::nullopt;
}

std::vector<uint32_t> ClusterPool::takeAllIdleFrom(const IpAddress& source) {
  std::vector<uint32_t> out;
  auto it = idle_.lower_bound(IdleKey{source, SocketAddress{}});
  while (it != idle_.end() && it->first.source == source) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    it = idle_.erase(it);
  }
  return out;
}

size_t ClusterPool::idleConnections() const {
  size_t n = 0;
  for (const auto& [key, list] : idle_) n += list.size();
  return n;
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

void ClusterPool::sweepAt(Clock::time_point boundary) {
  for (Health& h : health_) {
    if (h.is_ejected) {
      if (boundary < h.ejected_until) continue;
      h.is_ejected = false;
      h.consecutive_5xx = 0;
      h.consecutive_gateway = 0;
      if (h.counters != nullptr) h.counters->ejected.set(0);
    } else if (h.ejections > 0) {
      --h.ejections;
    }
  }
}

void ClusterPool::sweep(Clock::time_point now) {
  if (!outlier.enabled) return;
  const auto interval = std::max<Clock::duration>(outlier.interval, std::chrono::milliseconds(1));
  if (next_sweep_ == Clock::time_point{}) {
    next_sweep_ = now + interval;
    return;
  }
  // Every boundary passed, in order; after a long quiet spell (more than 64 boundaries) the
  // rest are skipped: ejected endpoints come back at once and the counts drop by 64 at most.
  for (int i = 0; now >= next_sweep_; ++i) {
    if (i == 64) {
      sweepAt(now);
      next_sweep_ = now + interval;
      break;
    }
    sweepAt(next_sweep_);
    next_sweep_ += interval;
  }
}

bool ClusterPool::ejected(const SocketAddress& endpoint, Clock::time_point now) {
  sweep(now);
  for (const Health& h : health_) {
    if (h.endpoint == endpoint) return h.is_ejected;
  }
  return false;
}

std::vector<SocketAddress> ClusterPool::ejectedEndpoints(Clock::time_point now) {
  sweep(now);
  std::vector<SocketAddress> out;
  for (const Health& h : health_) {
    if (h.is_ejected) out.push_back(h.endpoint);
  }
  return out;
}

bool ClusterPool::record(const SocketAddress& endpoint, Result result, size_t total,
                         Clock::time_point now) {
  if (!outlier.enabled) return false;
  sweep(now);
  Health& h = health(endpoint);
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
  for (const Health& other : health_) {
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
