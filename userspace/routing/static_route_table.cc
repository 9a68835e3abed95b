#include "routing/static_route_table.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace remora::routing {
namespace {

uint64_t mix(uint64_t x) {
  // splitmix64's finaliser: cheap, and spreads sequential pod IPs over the buckets.
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

size_t IpAddressHash::operator()(const IpAddress& ip) const noexcept {
  uint64_t lo = 0;
  uint64_t hi = 0;
  std::memcpy(&lo, ip.bytes.data(), 8);
  std::memcpy(&hi, ip.bytes.data() + 8, 8);
  return mix(lo ^ mix(hi ^ (ip.family == Family::kIpv6 ? 1 : 0)));
}

size_t SocketAddressHash::operator()(const SocketAddress& address) const noexcept {
  uint64_t lo = 0;
  uint64_t hi = 0;
  std::memcpy(&lo, address.ip.bytes.data(), 8);
  std::memcpy(&hi, address.ip.bytes.data() + 8, 8);
  uint64_t tag =
      (static_cast<uint64_t>(address.port) << 1) | (address.ip.family == Family::kIpv6 ? 1 : 0);
  return mix(lo ^ mix(hi ^ mix(tag)));
}

EndpointList::EndpointList(std::shared_ptr<const EndpointPool> pool,
                           std::shared_ptr<const std::vector<uint32_t>> members, uint16_t port,
                           std::shared_ptr<const std::vector<uint16_t>> ports)
    : pool_(std::move(pool)), members_(std::move(members)), ports_(std::move(ports)), port_(port) {}

namespace {

// The object behind `shared` when nothing else holds it, else a copy of its own.
template <typename T>
std::shared_ptr<T> owned(std::shared_ptr<const T>& shared) {
  if (!shared || shared.use_count() != 1) {
    auto copy = shared ? std::make_shared<T>(*shared) : std::make_shared<T>();
    shared = copy;
    return copy;
  }
  // Every object a list holds was created non-const (make_shared<T>), so writing is defined.
  return std::const_pointer_cast<T>(shared);
}

}  // namespace

void EndpointList::append(const Endpoint& endpoint) {
  size_t n = size();
  auto pool = owned(pool_);
  auto members = owned(members_);
  members->push_back(static_cast<uint32_t>(pool->ips.size()));
  pool->ips.push_back(endpoint.address.ip);
  pool->pods.push_back(endpoint.pod);
  if (n == 0) port_ = endpoint.address.port;
  if (ports_ || endpoint.address.port != port_) {
    bool fresh = !ports_;
    auto ports = owned(ports_);
    if (fresh) ports->assign(n, port_);
    ports->push_back(endpoint.address.port);
  }
}

void EndpointList::addOtherIp(const IpAddress& ip) {
  if (empty()) return;
  owned(pool_)->other_ips.emplace_back(member(size() - 1), ip);
}

const char* toString(LbPolicy policy) {
  switch (policy) {
    case LbPolicy::kRoundRobin:
      return "ROUND_ROBIN";
    case LbPolicy::kRandom:
      return "RANDOM";
    case LbPolicy::kLeastRequest:
      return "LEAST_REQUEST";
  }
  return "UNKNOWN";
}

const char* toString(OutboundPolicy policy) {
  return policy == OutboundPolicy::kRegistryOnly ? "REGISTRY_ONLY" : "ALLOW_ANY";
}

nlohmann::json toJson(const ProxySettings& settings) {
  return {
      {"outboundListen", settings.outbound_listen.toString()},
      {"inboundListen", settings.inbound_listen.toString()},
      {"adminListen", settings.admin_listen.toString()},
      {"inboundSourceAddress", settings.inbound_source.toString()},
      {"outboundTrafficPolicy", toString(settings.outbound_policy)},
      {"connectTimeoutMs", settings.connect_timeout.count()},
      {"drainTimeoutMs", settings.drain_timeout.count()},
      {"maxConnectAttempts", settings.max_connect_attempts},
      {"accessLog", settings.access_log},
  };
}

StaticRouteTable::StaticRouteTable(ProxySettings settings, uint64_t generation,
                                   std::vector<ServicePortEntry> entries,
                                   std::vector<Finding> findings)
    : settings_(std::move(settings)),
      generation_(generation),
      entries_(std::move(entries)),
      findings_(std::move(findings)) {}

Result<std::shared_ptr<const StaticRouteTable>> StaticRouteTable::create(
    ProxySettings settings, uint64_t generation, std::vector<ServicePortEntry> entries,
    std::vector<Finding> findings) {
  // make_shared cannot reach the private constructor.
  std::shared_ptr<StaticRouteTable> table(new StaticRouteTable(
      std::move(settings), generation, std::move(entries), std::move(findings)));
  auto& index = table->services_;
  size_t keys = 0;
  for (const auto& entry : table->entries_) keys += entry.cluster_ips.size();
  index.reserve(keys);

  const auto& all = table->entries_;
  for (uint32_t i = 0; i < all.size(); ++i) {
    for (const auto& ip : all[i].cluster_ips) {
      SocketAddress key{ip, all[i].port.port};
      auto [it, inserted] = index.try_emplace(key, i);
      if (!inserted) {
        return makeError(fmt::format("{} of {} is already the address of {}", key.toString(),
                                     all[i].port.service, all[it->second].port.service));
      }
    }
  }
  table->indexPods();
  return std::shared_ptr<const StaticRouteTable>(std::move(table));
}

namespace {

using Slots = std::vector<StaticRouteTable::Slot>;

// FNV-1a over the slots: equal vectors (one per port of a Service, usually) share one copy.
uint64_t hashSlots(const Slots& slots) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const auto& s : slots) {
    for (uint32_t v : {s.list_pos, s.subset_index, s.endpoint_index}) {
      h = (h ^ v) * 0x100000001b3ULL;
    }
  }
  return h;
}

// Where each endpoint of `list` (by pool index) sits in the list and in the subsets: the
// first subset, in order, holding its address.
Slots computeSlots(const EndpointList& list, const std::vector<Subset>& subsets) {
  using Slot = StaticRouteTable::Slot;
  Slots slots(list.pool()->ips.size());
  for (uint32_t j = 0; j < list.size(); ++j) {
    Slot& slot = slots[list.member(j)];
    if (slot.list_pos == Slot::kAbsent) slot.list_pos = j;
  }
  // Subsets of another Service (a VirtualService may route to one) index another pool: their
  // endpoints are found by address.
  std::unordered_map<SocketAddress, uint32_t, SocketAddressHash> by_address;
  for (uint32_t s = 0; s < subsets.size(); ++s) {
    const EndpointList& endpoints = subsets[s].endpoints;
    bool same_pool = endpoints.pool() == list.pool();
    if (!same_pool && by_address.empty()) {
      for (uint32_t j = 0; j < list.size(); ++j) by_address.try_emplace(list.address(j), j);
    }
    for (uint32_t e = 0; e < endpoints.size(); ++e) {
      uint32_t k = 0;
      if (same_pool) {
        k = endpoints.member(e);
        if (slots[k].list_pos == Slot::kAbsent || list.port(slots[k].list_pos) != endpoints.port(e))
          continue;
      } else {
        auto it = by_address.find(endpoints.address(e));
        if (it == by_address.end()) continue;
        k = list.member(it->second);
      }
      if (slots[k].subset_index == RouteMatch::kNoSubset) {
        slots[k].subset_index = s;
        slots[k].endpoint_index = e;
      }
    }
  }
  return slots;
}

}  // namespace

void StaticRouteTable::indexPods() {
  const auto& all = entries_;
  slots_.resize(all.size());
  std::unordered_map<const EndpointPool*, uint32_t> group_of;
  std::unordered_multimap<uint64_t, std::shared_ptr<const Slots>> shared;
  for (uint32_t i = 0; i < all.size(); ++i) {
    const EndpointList& list = all[i].endpoints;
    if (list.empty()) continue;
    auto slots = std::make_shared<const Slots>(computeSlots(list, all[i].port.subsets));
    uint64_t h = hashSlots(*slots);
    auto [first, last] = shared.equal_range(h);
    auto same = std::find_if(first, last, [&](const auto& kv) { return *kv.second == *slots; });
    if (same != last) {
      slots_[i] = same->second;
    } else {
      shared.emplace(h, slots);
      slots_[i] = std::move(slots);
    }

    auto [g, fresh] =
        group_of.try_emplace(list.pool().get(), static_cast<uint32_t>(groups_.size()));
    uint32_t group_index = g->second;
    if (fresh) {
      groups_.emplace_back();
      const EndpointPool& pool = *list.pool();
      auto add = [&](const IpAddress& ip, uint32_t member) {
        auto ref = static_cast<uint32_t>(pod_refs_.size());
        pod_refs_.push_back({.group = group_index, .member = member});
        auto [it, inserted] = pods_.try_emplace(ip, ref);
        if (inserted) return;
        // Chain behind the IP's earlier groups: earlier entries win a shared pod address.
        uint32_t at = it->second;
        while (pod_refs_[at].next != PodRef::kEnd) at = pod_refs_[at].next;
        pod_refs_[at].next = ref;
      };
      for (uint32_t k = 0; k < pool.ips.size(); ++k) add(pool.ips[k], k);
      for (const auto& [k, ip] : pool.other_ips) add(ip, k);
    }
    Group& group = groups_[group_index];
    if (list.ports() == nullptr) {
      group.by_port.emplace_back(list.port(0), i);
    } else {
      group.mixed.push_back(i);
    }
  }
  for (auto& group : groups_) std::sort(group.by_port.begin(), group.by_port.end());
}

const StaticRouteTable::Slot* StaticRouteTable::slotFor(uint32_t entry, uint32_t member,
                                                        uint16_t port) const {
  const Slot& slot = (*slots_[entry])[member];
  if (slot.list_pos == Slot::kAbsent) return nullptr;
  if (entries_[entry].endpoints.port(slot.list_pos) != port) return nullptr;
  return &slot;
}

const ServicePort* StaticRouteTable::find(const SocketAddress& original_dst) const {
  return match(original_dst).service;
}

RouteMatch StaticRouteTable::match(const SocketAddress& original_dst) const {
  if (auto it = services_.find(original_dst); it != services_.end()) {
    return RouteMatch{.service = &entries_[it->second].port};
  }
  auto it = pods_.find(original_dst.ip);
  if (it == pods_.end()) return {};
  // The first entry, in build order, that has this pod listening on this port.
  uint32_t best = UINT32_MAX;
  const Slot* best_slot = nullptr;
  auto consider = [&](uint32_t entry, uint32_t member) {
    if (entry >= best) return;
    if (const Slot* slot = slotFor(entry, member, original_dst.port)) {
      best = entry;
      best_slot = slot;
    }
  };
  for (uint32_t r = it->second; r != PodRef::kEnd; r = pod_refs_[r].next) {
    const PodRef& ref = pod_refs_[r];
    const Group& group = groups_[ref.group];
    auto lo = std::lower_bound(group.by_port.begin(), group.by_port.end(),
                               std::pair<uint16_t, uint32_t>{original_dst.port, 0});
    for (; lo != group.by_port.end() && lo->first == original_dst.port; ++lo) {
      consider(lo->second, ref.member);
    }
    for (uint32_t entry : group.mixed) consider(entry, ref.member);
  }
  if (best_slot == nullptr) return {};
  return RouteMatch{.service = &entries_[best].port,
                    .endpoint = true,
                    .subset_index = best_slot->subset_index,
                    .endpoint_index = best_slot->endpoint_index};
}

nlohmann::json StaticRouteTable::toJson() const {
  auto services = nlohmann::json::array();
  for (const auto& entry : entries_) {
    const ServicePort& port = entry.port;
    auto cluster_ips = nlohmann::json::array();
    for (const auto& ip : entry.cluster_ips) cluster_ips.push_back(ip.toString());
    auto route = nlohmann::json::array();
    for (const auto& r : port.route) {
      route.push_back({{"subset", port.subsets.at(r.subset_index).name}, {"weight", r.weight}});
    }
    auto subsets = nlohmann::json::array();
    for (const auto& subset : port.subsets) {
      auto endpoints = nlohmann::json::array();
      for (size_t e = 0; e < subset.endpoints.size(); ++e) {
        endpoints.push_back({{"address", subset.endpoints.address(e).toString()},
                             {"pod", subset.endpoints.pod(e)}});
      }
      subsets.push_back({{"name", subset.name},
                         {"policy", routing::toString(subset.policy)},
                         {"endpoints", std::move(endpoints)}});
    }
    nlohmann::json service = {{"service", port.service},
                              {"port", port.port},
                              {"clusterIPs", std::move(cluster_ips)},
                              {"route", std::move(route)},
                              {"subsets", std::move(subsets)}};
    if (!port.name.empty()) service["name"] = port.name;
    if (!port.app_protocol.empty()) service["appProtocol"] = port.app_protocol;
    service["protocol"] = port.protocol;
    services.push_back(std::move(service));
  }
  return {{"generation", generation_},
          {"settings", routing::toJson(settings_)},
          {"services", std::move(services)},
          {"findings", routing::toJson(findings_)}};
}

nlohmann::json toJson(const std::vector<Finding>& findings) {
  auto out = nlohmann::json::array();
  for (const auto& f : findings) {
    nlohmann::json j = {{"severity", toString(f.severity)}, {"message", f.text}};
    if (!f.kind.empty()) j["kind"] = f.kind;
    if (!f.namespace_name.empty()) j["namespace"] = f.namespace_name;
    if (!f.name.empty()) j["name"] = f.name;
    if (!f.field.empty()) j["field"] = f.field;
    if (f.line > 0) j["line"] = f.line;
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace remora::routing
