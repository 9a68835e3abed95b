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

const char* kindName(StringMatch::Kind kind) {
  switch (kind) {
    case StringMatch::Kind::kExact:
      return "exact";
    case StringMatch::Kind::kPrefix:
      return "prefix";
    case StringMatch::Kind::kRegex:
      return "regex";
    case StringMatch::Kind::kPresent:
      return "present";
  }
  return "?";
}

nlohmann::json toJson(const StringMatch& m) {
  nlohmann::json j = {{kindName(m.kind), m.value}};
  if (m.ignore_case) j["ignoreCase"] = true;
  return j;
}

nlohmann::json toJson(const HttpMatch& m) {
  nlohmann::json j = nlohmann::json::object();
  if (!m.name.empty()) j["name"] = m.name;
  const std::pair<const char*, const std::optional<StringMatch>*> singles[] = {
      {"uri", &m.uri}, {"scheme", &m.scheme}, {"method", &m.method}, {"authority", &m.authority}};
  for (const auto& [key, value] : singles) {
    if (*value) j[key] = toJson(**value);
  }
  for (const auto& h : m.headers) {
    j[h.invert ? "withoutHeaders" : "headers"][h.name] = toJson(h.value);
  }
  for (const auto& q : m.query_params) j["queryParams"][q.name] = toJson(q.value);
  if (m.port != 0) j["port"] = m.port;
  for (const auto& [k, v] : m.source_labels) j["sourceLabels"][k] = v;
  if (!m.source_namespace.empty()) j["sourceNamespace"] = m.source_namespace;
  // Held against the proxy's own workload when the table was built.
  if (m.source != HttpMatch::Source::kUnchecked) {
    j["sourceHolds"] = m.source == HttpMatch::Source::kHolds;
  }
  if (m.line > 0) j["line"] = m.line;
  return j;
}

nlohmann::json toJson(const HeaderOps& ops) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : ops.set) j["set"][k] = v;
  for (const auto& [k, v] : ops.add) j["add"][k] = v;
  if (!ops.remove.empty()) j["remove"] = ops.remove;
  return j;
}

void addHeaders(nlohmann::json& j, const HeaderOpsPair& headers) {
  if (!headers.request.empty()) j["headers"]["request"] = toJson(headers.request);
  if (!headers.response.empty()) j["headers"]["response"] = toJson(headers.response);
}

double percent(Percentage p) { return p.per_million / 10'000.0; }

nlohmann::json httpRouteJson(const HttpRoute& route, const ServicePort& port) {
  auto subsetName = [&](uint32_t index) {
    return index < port.subsets.size() ? port.subsets[index].name : std::string("?");
  };
  nlohmann::json j = {{"field", route.field}};
  if (!route.name.empty()) j["name"] = route.name;
  if (route.line > 0) j["line"] = route.line;
  auto matches = nlohmann::json::array();
  for (const auto& m : route.matches) matches.push_back(toJson(m));
  j["match"] = std::move(matches);
  auto destinations = nlohmann::json::array();
  for (const auto& d : route.destinations) {
    nlohmann::json dj = {{"host", d.destination.host},
                         {"subset", subsetName(d.destination.subset_index)},
                         {"weight", d.weight}};
    addHeaders(dj, d.headers);
    destinations.push_back(std::move(dj));
  }
  if (!destinations.empty()) j["route"] = std::move(destinations);
  addHeaders(j, route.headers);
  if (route.rewrite) {
    auto& r = j["rewrite"];
    r = nlohmann::json::object();
    if (!route.rewrite->uri.empty()) r["uri"] = route.rewrite->uri;
    if (!route.rewrite->authority.empty()) r["authority"] = route.rewrite->authority;
    if (route.rewrite->uri_regex) r["uriRegexRewrite"] = route.rewrite->uri_regex_rewrite;
  }
  if (route.redirect) {
    const HttpRedirect& r = *route.redirect;
    j["redirect"] = {{"uri", r.uri},       {"authority", r.authority},
                     {"scheme", r.scheme}, {"port", r.port},
                     {"code", r.code},     {"derivePort", r.derive_from_request_port}};
  }
  if (route.direct_response) {
    j["directResponse"] = {{"status", route.direct_response->status},
                           {"bodyBytes", route.direct_response->body.size()}};
  }
  for (const HttpMirrorPolicy& m : route.mirrors) {
    j["mirrors"].push_back(nlohmann::json{{"host", m.destination.host},
                                          {"subset", subsetName(m.destination.subset_index)},
                                          {"percent", percent(m.percentage)}});
  }
  if (route.timeout.count() > 0) j["timeoutMs"] = route.timeout.count();
  const RetryPolicy& retries = route.retries;
  j["retries"] = {{"attempts", retries.attempts},
                  {"perTryTimeoutMs", retries.per_try_timeout.count()},
                  {"retryOn", retries.retry_on},
                  {"retriableStatusCodes", retries.retriable_status_codes}};
  if (route.fault.delay) {
    j["fault"]["delay"] = {{"fixedDelayMs", route.fault.delay->count()},
                           {"percent", percent(route.fault.delay_percentage)}};
  }
  if (route.fault.abort_status) {
    j["fault"]["abort"] = {{"httpStatus", *route.fault.abort_status},
                           {"percent", percent(route.fault.abort_percentage)}};
  }
  return j;
}

// DestinationRule settings, shown only where they differ from the defaults.
void addPolicies(nlohmann::json& j, const Subset& subset) {
  const ConnectionPoolSettings& p = subset.connection_pool;
  if (p != ConnectionPoolSettings{}) {
    j["connectionPool"] = {{"maxConnections", p.max_connections},
                           {"connectTimeoutMs", p.connect_timeout.count()},
                           {"http1MaxPendingRequests", p.http1_max_pending_requests},
                           {"maxRequestsPerConnection", p.max_requests_per_connection},
                           {"idleTimeoutMs", p.idle_timeout.count()},
                           {"maxRetries", p.max_retries}};
    if (p.tcp_keepalive) {
      j["connectionPool"]["tcpKeepalive"] = {{"probes", p.tcp_keepalive->probes},
                                             {"timeMs", p.tcp_keepalive->time.count()},
                                             {"intervalMs", p.tcp_keepalive->interval.count()}};
    }
  }
  const OutlierDetectionSettings& o = subset.outlier_detection;
  if (o.enabled) {
    j["outlierDetection"] = {{"consecutive5xxErrors", o.consecutive_5xx_errors},
                             {"consecutiveGatewayErrors", o.consecutive_gateway_errors},
                             {"intervalMs", o.interval.count()},
                             {"baseEjectionTimeMs", o.base_ejection_time.count()},
                             {"maxEjectionPercent", o.max_ejection_percent}};
  }
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

nlohmann::json toJson(const WorkloadIdentity& w) {
  nlohmann::json labels = nlohmann::json::object();
  for (const auto& [k, v] : w.labels) labels[k] = v;
  return {
      {"namespace", w.namespace_name}, {"name", w.name},
      {"labelsFile", w.labels_file},   {"labels", w.labels_known ? labels : nlohmann::json()},
      {"labelsFrom", w.labels_source},
  };
}

nlohmann::json toJson(const ProxySettings& settings) {
  return {
      {"workload", toJson(settings.workload)},
      {"outboundListen", settings.outbound_listen.toString()},
      {"inboundListen", settings.inbound_listen.toString()},
      {"adminListen", settings.admin_listen.toString()},
      {"inboundSourceAddress", settings.inbound_source.toString()},
      {"inboundInterceptionMode", settings.inbound_transparent ? "TPROXY" : "REDIRECT"},
      {"outboundTrafficPolicy", toString(settings.outbound_policy)},
      {"connectTimeoutMs", settings.connect_timeout.count()},
      {"drainTimeoutMs", settings.drain_timeout.count()},
      {"maxConnectAttempts", settings.max_connect_attempts},
      {"accessLog", settings.access_log},
      {"pathNormalization", security::toString(settings.path_normalization)},
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
      nlohmann::json sj = {{"name", subset.name},
                           {"policy", routing::toString(subset.policy)},
                           {"endpoints", std::move(endpoints)}};
      addPolicies(sj, subset);
      subsets.push_back(std::move(sj));
    }
    nlohmann::json service = {{"service", port.service},
                              {"port", port.port},
                              {"clusterIPs", std::move(cluster_ips)},
                              {"route", std::move(route)},
                              {"subsets", std::move(subsets)}};
    if (!port.name.empty()) service["name"] = port.name;
    if (!port.app_protocol.empty()) service["appProtocol"] = port.app_protocol;
    service["protocol"] = port.protocol;
    if (!port.http_routes.empty()) {
      auto http = nlohmann::json::array();
      for (const auto& r : port.http_routes) http.push_back(httpRouteJson(r, port));
      service["httpRoutes"] = std::move(http);
    }
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
