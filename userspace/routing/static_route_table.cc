#include "routing/static_route_table.h"

#include <fmt/format.h>

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

// Small subsets are scanned; past this many endpoints a map avoids quadratic indexing.
constexpr size_t kScanLimit = 32;

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
  if (route.mirror) {
    j["mirror"] = {{"host", route.mirror->host},
                   {"subset", subsetName(route.mirror->subset_index)},
                   {"percent", percent(route.mirror_percentage)}};
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

size_t SocketAddressHash::operator()(const SocketAddress& address) const noexcept {
  uint64_t lo = 0;
  uint64_t hi = 0;
  std::memcpy(&lo, address.ip.bytes.data(), 8);
  std::memcpy(&hi, address.ip.bytes.data() + 8, 8);
  uint64_t tag =
      (static_cast<uint64_t>(address.port) << 1) | (address.ip.family == Family::kIpv6 ? 1 : 0);
  return mix(lo ^ mix(hi ^ mix(tag)));
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
    : settings_(settings),
      generation_(generation),
      entries_(std::move(entries)),
      findings_(std::move(findings)) {}

Result<std::shared_ptr<const StaticRouteTable>> StaticRouteTable::create(
    ProxySettings settings, uint64_t generation, std::vector<ServicePortEntry> entries,
    std::vector<Finding> findings) {
  // make_shared cannot reach the private constructor.
  std::shared_ptr<StaticRouteTable> table(
      new StaticRouteTable(settings, generation, std::move(entries), std::move(findings)));
  auto& index = table->index_;
  size_t keys = 0;
  for (const auto& entry : table->entries_)
    keys += entry.cluster_ips.size() + entry.pod_addresses.size();
  index.reserve(keys);

  const auto& all = table->entries_;
  for (uint32_t i = 0; i < all.size(); ++i) {
    for (const auto& ip : all[i].cluster_ips) {
      SocketAddress key{ip, all[i].port.port};
      auto [it, inserted] = index.try_emplace(key, Target{.entry = i});
      if (!inserted) {
        return makeError(fmt::format("{} of {} is already the address of {}", key.toString(),
                                     all[i].port.service, all[it->second.entry].port.service));
      }
    }
  }

  std::unordered_map<SocketAddress, std::pair<uint32_t, uint32_t>, SocketAddressHash> positions;
  for (uint32_t i = 0; i < all.size(); ++i) {
    const ServicePort& port = all[i].port;
    size_t endpoint_count = 0;
    for (const auto& subset : port.subsets) endpoint_count += subset.endpoints.size();
    bool use_map = endpoint_count > kScanLimit;
    if (use_map) {
      positions.clear();
      for (uint32_t s = 0; s < port.subsets.size(); ++s) {
        for (uint32_t e = 0; e < port.subsets[s].endpoints.size(); ++e) {
          positions.try_emplace(port.subsets[s].endpoints[e].address, s, e);
        }
      }
    }
    for (const auto& pod : all[i].pod_addresses) {
      Target target{.entry = i, .endpoint = true};
      if (use_map) {
        if (auto it = positions.find(pod.endpoint); it != positions.end()) {
          target.subset_index = it->second.first;
          target.endpoint_index = it->second.second;
        }
      } else {
        for (uint32_t s = 0;
             s < port.subsets.size() && target.subset_index == RouteMatch::kNoSubset; ++s) {
          const auto& endpoints = port.subsets[s].endpoints;
          for (uint32_t e = 0; e < endpoints.size(); ++e) {
            if (endpoints[e].address == pod.endpoint) {
              target.subset_index = s;
              target.endpoint_index = e;
              break;
            }
          }
        }
      }
      index.try_emplace(pod.address, target);
    }
  }
  return std::shared_ptr<const StaticRouteTable>(std::move(table));
}

const ServicePort* StaticRouteTable::find(const SocketAddress& original_dst) const {
  auto it = index_.find(original_dst);
  return it == index_.end() ? nullptr : &entries_[it->second.entry].port;
}

RouteMatch StaticRouteTable::match(const SocketAddress& original_dst) const {
  auto it = index_.find(original_dst);
  if (it == index_.end()) return {};
  const Target& t = it->second;
  return RouteMatch{.service = &entries_[t.entry].port,
                    .endpoint = t.endpoint,
                    .subset_index = t.subset_index,
                    .endpoint_index = t.endpoint_index};
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
      for (const auto& e : subset.endpoints) {
        endpoints.push_back({{"address", e.address.toString()}, {"pod", e.pod}});
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
