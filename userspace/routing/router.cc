// Per-worker upstream selection: smooth weighted round-robin across subsets, then the subset's
// load-balancing policy across its endpoints.

#include <algorithm>
#include <limits>
#include <random>
#include <unordered_map>

#include "routing/route_table.h"

namespace remora::routing {
namespace {

// Up to this many endpoints LEAST_REQUEST scans them all, which keeps ties in round-robin order;
// past it, two random choices are as good in practice and O(1).
constexpr size_t kLeastRequestScanLimit = 16;

class RouterImpl final : public Router {
 public:
  RouterImpl(std::shared_ptr<const RouteTable> table, uint64_t seed)
      : table_(std::move(table)), rng_(seed == 0 ? 0x9e3779b97f4a7c15ULL : seed) {}

  void setTable(std::shared_ptr<const RouteTable> table) override {
    table_ = std::move(table);
    // Counters belong to the ServicePorts of one table; the new table starts a fresh cycle.
    index_.clear();
    states_.clear();
    route_index_.clear();
    route_states_.clear();
  }

  const std::shared_ptr<const RouteTable>& table() const override { return table_; }

  RouteDecision route(const SocketAddress& original_dst) override {
    RouteDecision decision;
    decision.upstream = original_dst;
    if (!table_) return decision;
    RouteMatch match = table_->match(original_dst);
    const ServicePort* port = match.service;
    if (port == nullptr) {
      if (table_->settings().outbound_policy == OutboundPolicy::kRegistryOnly) {
        decision.kind = RouteDecision::Kind::kRefused;
      }
      return decision;
    }
    if (match.endpoint) {
      // The client chose this pod; a known pod outside every routed subset still passes.
      if (match.subset_index == RouteMatch::kNoSubset) return decision;
      PortState& state = stateFor(*port);
      ++state.subsets[match.subset_index].active[match.endpoint_index];
      decision.kind = RouteDecision::Kind::kService;
      decision.service = port;
      decision.subset_index = match.subset_index;
      decision.endpoint_index = match.endpoint_index;
      decision.pinned = true;
      return decision;
    }
    decision.service = port;
    PortState& state = stateFor(*port);
    if (state.weights.live.empty()) {
      decision.kind = RouteDecision::Kind::kRefused;
      return decision;
    }
    uint32_t subset = port->route[pickWeighted(state.weights)].subset_index;
    // A live subset has endpoints, and nothing is excluded here, so a pick always succeeds.
    uint32_t endpoint = *pickEndpoint(*port, state, subset, {}, {}, nullptr);
    return serviceDecision(*port, state, subset, endpoint);
  }

  std::optional<RouteDecision> retry(const RouteDecision& failed,
                                     std::span<const SocketAddress> tried) override {
    if (failed.kind != RouteDecision::Kind::kService || failed.service == nullptr ||
        failed.pinned) {
      return std::nullopt;
    }
    const ServicePort& port = *failed.service;
    if (failed.subset_index >= port.subsets.size()) return std::nullopt;
    PortState& state = stateFor(port);
    auto attempt = [&](uint32_t subset) -> std::optional<RouteDecision> {
      auto endpoint = pickEndpoint(port, state, subset, failed.upstream, tried, nullptr);
      if (!endpoint) return std::nullopt;
      return serviceDecision(port, state, subset, *endpoint);
    };
    if (auto d = attempt(failed.subset_index)) return d;
    for (uint32_t live : state.weights.live) {
      uint32_t subset = port.route[live].subset_index;
      if (subset == failed.subset_index) continue;
      if (auto d = attempt(subset)) return d;
    }
    return std::nullopt;
  }

  HttpRouteDecision routeRequest(const ServicePort& port, const HttpRoute& route,
                                 const EndpointHealth* health) override {
    HttpRouteDecision out;
    RouteState& rs = routeStateFor(port, route);
    PortState& state = stateFor(port);
    out.delay = route.fault.delay.has_value() && rs.delay.next();
    out.abort = route.fault.abort_status.has_value() && rs.abort.next();
    out.upstream.service = &port;
    out.upstream.kind = RouteDecision::Kind::kRefused;
    // An aborted request stops at the fault, before routing: no pick, no mirror (Envoy).
    if (out.abort) return out;
    for (size_t m = 0; m < route.mirrors.size() && m < rs.mirrors.size(); ++m) {
      uint32_t subset = route.mirrors[m].destination.subset_index;
      if (!rs.mirrors[m].next() || subset >= port.subsets.size()) continue;
      if (auto e = pickEndpoint(port, state, subset, {}, {}, health)) {
        out.mirrors.push_back(serviceDecision(port, state, subset, *e));
      }
    }
    if (rs.weights.live.empty()) return out;
    const HttpRouteDestination& dest = route.destinations[pickWeighted(rs.weights)];
    out.destination = &dest;
    uint32_t subset = dest.destination.subset_index;
    out.upstream.subset_index = subset;
    if (auto e = pickEndpoint(port, state, subset, {}, {}, health)) {
      out.upstream = serviceDecision(port, state, subset, *e);
    }
    return out;
  }

  std::optional<RouteDecision> pickSubsetEndpoint(const ServicePort& port, uint32_t subset_index,
                                                  std::span<const SocketAddress> tried,
                                                  const EndpointHealth* health) override {
    if (subset_index >= port.subsets.size()) return std::nullopt;
    PortState& state = stateFor(port);
    auto e = pickEndpoint(port, state, subset_index, {}, tried, health);
    if (!e) return std::nullopt;
    return serviceDecision(port, state, subset_index, *e);
  }

  void release(const RouteDecision& decision) override {
    if (decision.kind != RouteDecision::Kind::kService || decision.service == nullptr) return;
    auto it = index_.find(decision.service);
    // Decisions made against an earlier table no longer have counters to give back.
    if (it == index_.end()) return;
    releaseIn(*decision.service, states_[it->second], decision);
  }

 private:
  struct SubsetState {
    uint32_t cursor = 0;
    std::vector<uint32_t> active;  // open connections per endpoint
  };

  // Smooth weighted round-robin over the entries that can take traffic.
  struct WeightedState {
    std::vector<uint32_t> live;    // indices of entries with weight and endpoints
    std::vector<int64_t> weight;   // per live entry
    std::vector<int64_t> current;  // smooth weighted round-robin counter per live entry
    int64_t total = 0;

    // An empty subset's share goes to the others in proportion, which keeps the pick exact
    // over the subsets that can take traffic.
    void add(const ServicePort& port, uint32_t entry, uint32_t subset_index, uint32_t w) {
      if (w == 0 || subset_index >= port.subsets.size() ||
          port.subsets[subset_index].endpoints.empty()) {
        return;
      }
      live.push_back(entry);
      weight.push_back(w);
      total += w;
      current.push_back(0);
    }
  };

  struct PortState {
    WeightedState weights;  // over ServicePort::route
    std::vector<SubsetState> subsets;
  };

  // Per HttpRoute: its weighted destinations and its exact fault and mirror counters.
  struct RouteState {
    WeightedState weights;  // over HttpRoute::destinations
    ExactPercentage delay;
    ExactPercentage abort;
    std::vector<ExactPercentage> mirrors;  // per HttpRoute::mirrors entry
  };

  RouteState& routeStateFor(const ServicePort& port, const HttpRoute& route) {
    auto [it, inserted] =
        route_index_.try_emplace(&route, static_cast<uint32_t>(route_states_.size()));
    if (!inserted) return route_states_[it->second];
    RouteState& rs = route_states_.emplace_back();
    for (uint32_t d = 0; d < route.destinations.size(); ++d) {
      const HttpRouteDestination& dest = route.destinations[d];
      rs.weights.add(port, d, dest.destination.subset_index, dest.weight);
    }
    rs.delay = ExactPercentage(route.fault.delay_percentage);
    rs.abort = ExactPercentage(route.fault.abort_percentage);
    for (const HttpMirrorPolicy& m : route.mirrors) rs.mirrors.emplace_back(m.percentage);
    return rs;
  }

  PortState& stateFor(const ServicePort& port) {
    auto [it, inserted] = index_.try_emplace(&port, static_cast<uint32_t>(states_.size()));
    if (!inserted) return states_[it->second];
    PortState& state = states_.emplace_back();
    state.subsets.resize(port.subsets.size());
    for (size_t s = 0; s < port.subsets.size(); ++s) {
      state.subsets[s].active.assign(port.subsets[s].endpoints.size(), 0);
    }
    for (uint32_t r = 0; r < port.route.size(); ++r) {
      state.weights.add(port, r, port.route[r].subset_index, port.route[r].weight);
    }
    return state;
  }

  // nginx's smooth weighted round-robin: every entry gains its weight, the largest wins and
  // pays back the total. Each cycle of Σw picks holds every entry exactly w times, spread out.
  static uint32_t pickWeighted(WeightedState& state) {
    size_t best = 0;
    int64_t best_value = std::numeric_limits<int64_t>::min();
    for (size_t i = 0; i < state.live.size(); ++i) {
      state.current[i] += state.weight[i];
      if (state.current[i] > best_value) {
        best_value = state.current[i];
        best = i;
      }
    }
    state.current[best] -= state.total;
    return state.live[best];
  }

  std::optional<uint32_t> pickEndpoint(const ServicePort& port, PortState& state, uint32_t subset,
                                       std::optional<SocketAddress> exclude,
                                       std::span<const SocketAddress> tried,
                                       const EndpointHealth* health) {
    const auto& endpoints = port.subsets[subset].endpoints;
    SubsetState& ss = state.subsets[subset];
    auto n = static_cast<uint32_t>(endpoints.size());
    if (n == 0) return std::nullopt;
    bool filtering = exclude.has_value() || !tried.empty() || health != nullptr;
    auto allowed = [&](uint32_t i) {
      if (!filtering) return true;
      if (health != nullptr && health->ejected(port, subset, i)) return false;
      SocketAddress a = endpoints.address(i);
      if (exclude && a == *exclude) return false;
      return std::find(tried.begin(), tried.end(), a) == tried.end();
    };
    switch (port.subsets[subset].policy) {
      case LbPolicy::kRoundRobin:
        return scanFrom(ss, n, ss.cursor % n, allowed);
      case LbPolicy::kRandom:
        return scanFrom(ss, n, static_cast<uint32_t>(next() % n), allowed);
      case LbPolicy::kLeastRequest:
        if (n > kLeastRequestScanLimit && !filtering) {
          auto a = static_cast<uint32_t>(next() % n);
          auto b = static_cast<uint32_t>(next() % (n - 1));
          if (b >= a) ++b;
          return ss.active[b] < ss.active[a] ? b : a;
        }
        std::optional<uint32_t> best;
        for (uint32_t k = 0; k < n; ++k) {
          uint32_t i = (ss.cursor + k) % n;
          if (allowed(i) && (!best || ss.active[i] < ss.active[*best])) best = i;
        }
        if (best) ss.cursor = *best + 1;
        return best;
    }
    return std::nullopt;
  }

  template <typename Allowed>
  static std::optional<uint32_t> scanFrom(SubsetState& ss, uint32_t n, uint32_t start,
                                          const Allowed& allowed) {
    for (uint32_t k = 0; k < n; ++k) {
      uint32_t i = (start + k) % n;
      if (allowed(i)) {
        ss.cursor = i + 1;
        return i;
      }
    }
    return std::nullopt;
  }

  RouteDecision serviceDecision(const ServicePort& port, PortState& state, uint32_t subset,
                                uint32_t endpoint) {
    ++state.subsets[subset].active[endpoint];
    RouteDecision d;
    d.kind = RouteDecision::Kind::kService;
    d.service = &port;
    d.subset_index = subset;
    d.endpoint_index = endpoint;
    d.upstream = port.subsets[subset].endpoints.address(endpoint);
    return d;
  }

  static void releaseIn(const ServicePort& port, PortState& state, const RouteDecision& d) {
    if (d.subset_index >= port.subsets.size() ||
        d.endpoint_index >= state.subsets[d.subset_index].active.size()) {
      return;
    }
    uint32_t& active = state.subsets[d.subset_index].active[d.endpoint_index];
    if (active > 0) --active;
  }

  // xorshift64*: a few cycles per draw; RANDOM needs spread, not cryptographic quality.
  uint64_t next() {
    rng_ ^= rng_ >> 12;
    rng_ ^= rng_ << 25;
    rng_ ^= rng_ >> 27;
    return rng_ * 0x2545F4914F6CDD1DULL;
  }

  std::shared_ptr<const RouteTable> table_;
  std::unordered_map<const ServicePort*, uint32_t> index_;
  std::vector<PortState> states_;
  std::unordered_map<const HttpRoute*, uint32_t> route_index_;
  std::vector<RouteState> route_states_;
  uint64_t rng_;
};

}  // namespace

std::unique_ptr<Router> makeRouter(std::shared_ptr<const RouteTable> table) {
  std::random_device device;
  uint64_t seed = (uint64_t{device()} << 32) | device();
  return makeRouter(std::move(table), seed);
}

std::unique_ptr<Router> makeRouter(std::shared_ptr<const RouteTable> table, uint64_t seed) {
  return std::make_unique<RouterImpl>(std::move(table), seed);
}

}  // namespace remora::routing
