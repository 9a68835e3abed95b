#include "config/table_builder.h"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "routing/static_route_table.h"

namespace remora::config {
namespace {

using routing::LbPolicy;

// An object and the document it came from.
struct Ref {
  const Placement* placement = nullptr;
  const Object* object = nullptr;

  Error error(std::string_view field, int line, std::string_view what) const {
    bool namespaced = object->kind != Kind::kNamespace;
    return makeError(describeError(*placement, object->item, toString(object->kind),
                                   namespaced ? object->namespace_name : "", object->name, field,
                                   line, what));
  }

  std::string where() const {
    std::string out = fmt::format("document {}", placement->index);
    if (object->item >= 0) out += fmt::format(" item {}", object->item);
    return fmt::format("{}, line {}", out, placement->first_line + object->line + 1);
  }
};

struct EndpointInfo {
  routing::Endpoint endpoint;
  const Labels* labels = nullptr;    // the Pod's, when known
  std::vector<IpAddress> other_ips;  // the pod's addresses in other families
};

struct ServiceInfo {
  Ref ref;
  const ServiceSpec* spec = nullptr;
  std::string key;                                   // "name.namespace"
  std::vector<std::vector<EndpointInfo>> endpoints;  // per spec->ports entry
  // Every Pod behind the Service, ready or not: a subset that matches none of them is a typo,
  // one that matches only unready pods is just empty for now.
  std::vector<const Object*> pods;
  Ref destination_rule;
  Ref virtual_service;
};

// A key of up to three views into the parsed objects, which outlive the build: maps keyed on
// it cost no allocation per lookup, which matters at tens of thousands of objects.
struct ViewKey {
  std::string_view a;
  std::string_view b;
  std::string_view c;
  bool operator==(const ViewKey&) const = default;
};

struct ViewKeyHash {
  size_t operator()(const ViewKey& k) const noexcept {
    std::hash<std::string_view> h;
    size_t x = h(k.a);
    x ^= h(k.b) + 0x9e3779b97f4a7c15ULL + (x << 6) + (x >> 2);
    x ^= h(k.c) + 0x9e3779b97f4a7c15ULL + (x << 6) + (x >> 2);
    return x;
  }
};

template <typename T>
using ViewMap = std::unordered_map<ViewKey, T, ViewKeyHash>;

std::string labelsText(const Labels& labels) {
  std::string out;
  for (const auto& [k, v] : labels) out += fmt::format("{}{}={}", out.empty() ? "" : ",", k, v);
  return out.empty() ? "{}" : out;
}

class Builder {
 public:
  Builder(const std::vector<PlacedDocument>& documents, const routing::ProxySettings& base)
      : documents_(documents), settings_(base) {}

  Result<std::shared_ptr<const routing::RouteTable>> build(uint64_t generation) {
    if (auto r = collect(); !r) return r.error();
    if (auto r = applyProxyConfig(); !r) return r.error();
    if (auto r = indexPods(); !r) return r.error();
    if (auto r = indexServices(); !r) return r.error();
    computeEndpoints();
    if (auto r = attachIstio(); !r) return r.error();
    std::vector<routing::ServicePortEntry> entries;
    entries.reserve(services_.size());
    for (auto& service : services_) {
      for (size_t p = 0; p < service.spec->ports.size(); ++p) {
        auto entry = buildPort(service, p);
        if (!entry) return entry.error();
        entries.push_back(std::move(*entry));
      }
    }
    auto table = routing::StaticRouteTable::create(settings_, generation, std::move(entries));
    if (!table) return table.error();
    return std::shared_ptr<const routing::RouteTable>(std::move(*table));
  }

 private:
  Result<void> collect() {
    // Pods and Services, the bulk of a large file, are checked for duplicates by the indexes
    // built from them anyway; this map holds only the other kinds.
    ViewMap<Ref> seen;
    for (const auto& doc : documents_) {
      for (const auto& object : doc.model->objects) {
        Ref ref{&doc.placement, &object};
        if (object.kind != Kind::kPod && object.kind != Kind::kService) {
          ViewKey key = object.kind == Kind::kProxyConfig
                            ? ViewKey{"ProxyConfig", "", ""}
                            : ViewKey{toString(object.kind), object.namespace_name, object.name};
          auto [it, inserted] = seen.try_emplace(key, ref);
          if (!inserted) return duplicate(ref, it->second);
        }
        switch (object.kind) {
          case Kind::kService:
            service_refs_.push_back(ref);
            break;
          case Kind::kPod:
            pods_.push_back(ref);
            break;
          case Kind::kEndpointSlice:
            slices_[ViewKey{std::get<EndpointSliceSpec>(object.spec).service, object.namespace_name,
                            ""}]
                .push_back(ref);
            break;
          case Kind::kVirtualService:
            virtual_services_.push_back(ref);
            break;
          case Kind::kDestinationRule:
            destination_rules_.push_back(ref);
            break;
          case Kind::kProxyConfig:
            proxy_config_ = ref;
            break;
          case Kind::kNamespace:
            break;
        }
      }
    }
    return {};
  }

  static Error duplicate(const Ref& ref, const Ref& first) {
    const Object& object = *ref.object;
    return ref.error("metadata.name", object.line,
                     object.kind == Kind::kProxyConfig
                         ? fmt::format("a second ProxyConfig (the first is at {})", first.where())
                         : fmt::format("duplicate {} (the first is at {})", toString(object.kind),
                                       first.where()));
  }

  Result<void> applyProxyConfig() {
    if (proxy_config_.object == nullptr) return {};
    const auto& c = std::get<ProxyConfigSpec>(proxy_config_.object->spec);
    if (c.outbound_port) settings_.outbound_listen.port = *c.outbound_port;
    if (c.inbound_port) settings_.inbound_listen.port = *c.inbound_port;
    if (c.admin_address) settings_.admin_listen.ip = *c.admin_address;
    if (c.admin_port) settings_.admin_listen.port = *c.admin_port;
    if (c.inbound_source) settings_.inbound_source = *c.inbound_source;
    if (c.outbound_policy) settings_.outbound_policy = *c.outbound_policy;
    if (c.connect_timeout) settings_.connect_timeout = *c.connect_timeout;
    if (c.drain_timeout) settings_.drain_timeout = *c.drain_timeout;
    if (c.max_connect_attempts) settings_.max_connect_attempts = *c.max_connect_attempts;
    if (c.access_log) settings_.access_log = *c.access_log;
    if (settings_.outbound_listen.port == settings_.inbound_listen.port) {
      return proxy_config_.error(
          "spec.inboundPort", proxy_config_.object->line,
          fmt::format("the inbound and outbound ports are both {}", settings_.inbound_listen.port));
    }
    return {};
  }

  // Pods by (namespace, label) so a selector only looks at pods sharing its rarest label,
  // instead of every Service scanning every Pod.
  Result<void> indexPods() {
    pods_by_name_.reserve(pods_.size());
    pods_by_label_.reserve(pods_.size() * 2);
    for (uint32_t i = 0; i < pods_.size(); ++i) {
      const Object& pod = *pods_[i].object;
      auto [it, inserted] = pods_by_name_.try_emplace(ViewKey{pod.namespace_name, pod.name, ""}, i);
      if (!inserted) return duplicate(pods_[i], pods_[it->second]);
      for (const auto& [k, v] : pod.labels) {
        pods_by_label_[ViewKey{pod.namespace_name, k, v}].push_back(i);
      }
    }
    return {};
  }

  std::vector<uint32_t> selectPods(std::string_view ns, const Labels& selector) const {
    const std::vector<uint32_t>* narrowest = nullptr;
    for (const auto& [k, v] : selector) {
      auto it = pods_by_label_.find(ViewKey{ns, k, v});
      if (it == pods_by_label_.end()) return {};
      if (narrowest == nullptr || it->second.size() < narrowest->size()) narrowest = &it->second;
    }
    std::vector<uint32_t> out;
    if (narrowest == nullptr) return out;
    for (uint32_t i : *narrowest) {
      if (selector.size() == 1 || labelsMatch(selector, pods_[i].object->labels)) out.push_back(i);
    }
    return out;
  }

  Result<void> indexServices() {
    services_.reserve(service_refs_.size());
    services_by_key_.reserve(service_refs_.size());
    std::unordered_map<SocketAddress, Ref, routing::SocketAddressHash> vips;
    for (const Ref& ref : service_refs_) {
      auto [known, added] =
          services_by_key_.try_emplace(ViewKey{ref.object->name, ref.object->namespace_name, ""},
                                       static_cast<uint32_t>(services_.size()));
      if (!added) return duplicate(ref, services_[known->second].ref);
      ServiceInfo info;
      info.ref = ref;
      info.spec = &std::get<ServiceSpec>(ref.object->spec);
      info.key = fmt::format("{}.{}", ref.object->name, ref.object->namespace_name);
      for (const auto& port : info.spec->ports) {
        for (const auto& ip : info.spec->cluster_ips) {
          auto [it, inserted] = vips.try_emplace(SocketAddress{ip, port.port}, ref);
          if (!inserted) {
            return ref.error("spec.clusterIP", ref.object->line,
                             fmt::format("{} is already Service {}/{} ({})",
                                         SocketAddress{ip, port.port}.toString(),
                                         it->second.object->namespace_name, it->second.object->name,
                                         it->second.where()));
          }
        }
      }
      services_.push_back(std::move(info));
    }
    return {};
  }

  // The pod address a Service of these families should use: the first of the preferred
  // family, as the endpoints controller writes one slice per family.
  static size_t primaryIp(const PodSpec& pod, const ServiceSpec& service) {
    if (service.cluster_ips.empty()) return 0;
    Family family = service.cluster_ips.front().family;
    for (size_t i = 0; i < pod.ips.size(); ++i) {
      if (pod.ips[i].family == family) return i;
    }
    return 0;
  }

  void computeEndpoints() {
    for (auto& service : services_) {
      const ServiceSpec& spec = *service.spec;
      service.endpoints.resize(spec.ports.size());
      auto slices =
          slices_.find(ViewKey{service.ref.object->name, service.ref.object->namespace_name, ""});
      if (slices != slices_.end()) {
        endpointsFromSlices(service, slices->second);
        continue;
      }
      if (spec.selector.empty()) continue;
      for (uint32_t i : selectPods(service.ref.object->namespace_name, spec.selector)) {
        const Object& pod_object = *pods_[i].object;
        service.pods.push_back(&pod_object);
        const auto& pod = std::get<PodSpec>(pod_object.spec);
        if (!pod.ready) continue;
        size_t primary = primaryIp(pod, spec);
        for (size_t p = 0; p < spec.ports.size(); ++p) {
          const ServicePortSpec& port = spec.ports[p];
          uint16_t target = port.target_number;
          if (target == 0) {
            auto named = std::find_if(pod.named_ports.begin(), pod.named_ports.end(),
                                      [&](const auto& np) { return np.first == port.target_name; });
            // As the endpoints controller does: a pod without the named port is not an endpoint.
            if (named == pod.named_ports.end()) continue;
            target = named->second;
          }
          EndpointInfo info;
          info.endpoint.address = SocketAddress{pod.ips[primary], target};
          info.endpoint.pod = fmt::format("{}/{}", pod_object.namespace_name, pod_object.name);
          info.labels = &pod_object.labels;
          for (size_t k = 0; k < pod.ips.size(); ++k) {
            if (k != primary) info.other_ips.push_back(pod.ips[k]);
          }
          service.endpoints[p].push_back(std::move(info));
        }
      }
    }
  }

  void endpointsFromSlices(ServiceInfo& service, const std::vector<Ref>& slices) {
    const ServiceSpec& spec = *service.spec;
    std::unordered_set<const Object*> pods_seen;
    for (size_t p = 0; p < spec.ports.size(); ++p) {
      const ServicePortSpec& port = spec.ports[p];
      std::unordered_set<SocketAddress, routing::SocketAddressHash> seen;
      for (const Ref& ref : slices) {
        const auto& slice = std::get<EndpointSliceSpec>(ref.object->spec);
        // Slice ports carry the Service port's name; without one, a numeric targetPort still
        // says where the pods listen.
        uint16_t target = 0;
        auto named = std::find_if(slice.ports.begin(), slice.ports.end(),
                                  [&](const SlicePort& sp) { return sp.name == port.name; });
        if (named != slice.ports.end()) {
          target = named->port;
        } else if (slice.ports.empty()) {
          target = port.target_number;
        }
        if (target == 0) continue;
        for (const auto& e : slice.endpoints) {
          const Object* pod = nullptr;
          if (!e.pod_name.empty()) {
            auto it = pods_by_name_.find(ViewKey{e.pod_namespace, e.pod_name, ""});
            if (it != pods_by_name_.end()) pod = pods_[it->second].object;
          }
          if (pod != nullptr && pods_seen.insert(pod).second) service.pods.push_back(pod);
          if (!e.ready) continue;
          SocketAddress address{e.address, target};
          if (!seen.insert(address).second) continue;
          EndpointInfo info;
          info.endpoint.address = address;
          if (!e.pod_name.empty())
            info.endpoint.pod = fmt::format("{}/{}", e.pod_namespace, e.pod_name);
          info.labels = pod == nullptr ? nullptr : &pod->labels;
          service.endpoints[p].push_back(std::move(info));
        }
      }
    }
  }

  // "reviews", "reviews.ns", "reviews.ns.svc" and "reviews.ns.svc.cluster.local" all name
  // the Service reviews.ns; a short name is relative to the referring object's namespace.
  ServiceInfo* resolveHost(std::string_view host, std::string_view ns) {
    if (auto svc = host.find(".svc");
        svc != std::string_view::npos && (svc + 4 == host.size() || host[svc + 4] == '.')) {
      host = host.substr(0, svc);
    }
    std::string_view name = host;
    if (auto dot = host.find('.'); dot != std::string_view::npos) {
      name = host.substr(0, dot);
      ns = host.substr(dot + 1);
    }
    auto it = services_by_key_.find(ViewKey{name, ns, ""});
    return it == services_by_key_.end() ? nullptr : &services_[it->second];
  }

  // Istio ignores rules for hosts it does not know (they may be ServiceEntries or other
  // clusters); so does Remora, since a file may be a dump of a whole cluster.
  Result<void> attachIstio() {
    for (const Ref& ref : destination_rules_) {
      const auto& dr = std::get<DestinationRuleSpec>(ref.object->spec);
      ServiceInfo* service = resolveHost(dr.host.host, ref.object->namespace_name);
      if (service == nullptr) continue;
      if (service->destination_rule.object != nullptr) {
        return ref.error(
            "spec.host", dr.host.line,
            fmt::format("{} already has DestinationRule {}/{} ({})", service->key,
                        service->destination_rule.object->namespace_name,
                        service->destination_rule.object->name, service->destination_rule.where()));
      }
      service->destination_rule = ref;
    }
    for (const Ref& ref : virtual_services_) {
      const auto& vs = std::get<VirtualServiceSpec>(ref.object->spec);
      for (size_t h = 0; h < vs.hosts.size(); ++h) {
        ServiceInfo* service = resolveHost(vs.hosts[h].host, ref.object->namespace_name);
        if (service == nullptr || service->virtual_service.object == ref.object) continue;
        if (service->virtual_service.object != nullptr) {
          return ref.error(
              fmt::format("spec.hosts[{}]", h), vs.hosts[h].line,
              fmt::format("{} is already routed by VirtualService {}/{} ({})", service->key,
                          service->virtual_service.object->namespace_name,
                          service->virtual_service.object->name, service->virtual_service.where()));
        }
        service->virtual_service = ref;
      }
    }
    return {};
  }

  static std::optional<LbPolicy> rulePolicy(const ServiceInfo& service) {
    if (service.destination_rule.object == nullptr) return std::nullopt;
    return std::get<DestinationRuleSpec>(service.destination_rule.object->spec).policy;
  }

  static const VsRoute* routeFor(const ServiceInfo& service, uint16_t port) {
    if (service.virtual_service.object == nullptr) return nullptr;
    const auto& vs = std::get<VirtualServiceSpec>(service.virtual_service.object->spec);
    for (const auto& route : vs.routes) {
      if (!route.has_match || std::find(route.match_ports.begin(), route.match_ports.end(), port) !=
                                  route.match_ports.end()) {
        return &route;
      }
    }
    return nullptr;
  }

  Result<routing::ServicePortEntry> buildPort(const ServiceInfo& service, size_t p) {
    const ServicePortSpec& port = service.spec->ports[p];
    routing::ServicePortEntry entry;
    entry.port.service = service.key;
    entry.port.port = port.port;
    entry.port.name = port.name;
    entry.port.app_protocol = port.app_protocol;
    entry.cluster_ips = service.spec->cluster_ips;
    for (const auto& e : service.endpoints[p]) {
      entry.pod_addresses.push_back({e.endpoint.address, e.endpoint.address});
      for (const auto& ip : e.other_ips) {
        entry.pod_addresses.push_back(
            {SocketAddress{ip, e.endpoint.address.port}, e.endpoint.address});
      }
    }

    const VsRoute* route = routeFor(service, port.port);
    if (route == nullptr) {
      routing::Subset all;
      all.policy = rulePolicy(service).value_or(LbPolicy::kRoundRobin);
      all.endpoints.reserve(service.endpoints[p].size());
      for (const auto& e : service.endpoints[p]) all.endpoints.push_back(e.endpoint);
      entry.port.subsets.push_back(std::move(all));
      entry.port.route.push_back({0, 100});
      return entry;
    }

    const Ref& vs = service.virtual_service;
    struct SubsetKey {
      const ServiceInfo* service;
      size_t port;
      std::string subset;
    };
    std::vector<SubsetKey> keys;
    for (size_t d = 0; d < route->destinations.size(); ++d) {
      const RouteDestination& dest = route->destinations[d];
      std::string field = fmt::format("{}.route[{}].destination", route->field, d);
      const ServiceInfo* target = resolveHost(dest.host, vs.object->namespace_name);
      if (target == nullptr) {
        return vs.error(field + ".host", dest.line,
                        fmt::format("'{}' is not a Service in this file", dest.host));
      }
      auto target_port = destinationPort(service, port, *target, dest);
      if (!target_port)
        return vs.error(field + ".port.number", dest.line, target_port.error().message);

      auto existing = std::find_if(keys.begin(), keys.end(), [&](const SubsetKey& k) {
        return k.service == target && k.port == *target_port && k.subset == dest.subset;
      });
      if (existing == keys.end()) {
        auto subset = buildSubset(service, *target, *target_port, dest, field);
        if (!subset) return subset.error();
        keys.push_back({target, *target_port, dest.subset});
        entry.port.subsets.push_back(std::move(*subset));
        existing = keys.end() - 1;
      }
      entry.port.route.push_back({static_cast<uint32_t>(existing - keys.begin()), dest.weight});
    }
    return entry;
  }

  static Result<size_t> destinationPort(const ServiceInfo& self, const ServicePortSpec& port,
                                        const ServiceInfo& target, const RouteDestination& dest) {
    const auto& ports = target.spec->ports;
    auto by_number = [&](uint16_t number) -> std::optional<size_t> {
      for (size_t i = 0; i < ports.size(); ++i) {
        if (ports[i].port == number) return i;
      }
      return std::nullopt;
    };
    if (dest.port != 0) {
      if (auto i = by_number(dest.port)) return *i;
      return makeError(fmt::format("{} has no TCP port {}", target.key, dest.port));
    }
    if (&target == &self) return static_cast<size_t>(&port - ports.data());
    if (ports.size() == 1) return size_t{0};
    if (auto i = by_number(port.port)) return *i;
    return makeError(fmt::format("is required: {} has {} ports", target.key, ports.size()));
  }

  Result<routing::Subset> buildSubset(const ServiceInfo& self, const ServiceInfo& target,
                                      size_t target_port, const RouteDestination& dest,
                                      const std::string& field) {
    const Ref& vs = self.virtual_service;
    routing::Subset subset;
    bool same = &target == &self;
    std::string name =
        same ? dest.subset
             : (dest.subset.empty() ? target.key : fmt::format("{}/{}", target.key, dest.subset));
    subset.name = std::move(name);
    const auto& endpoints = target.endpoints[target_port];
    if (dest.subset.empty()) {
      subset.policy = rulePolicy(target).value_or(LbPolicy::kRoundRobin);
      for (const auto& e : endpoints) subset.endpoints.push_back(e.endpoint);
      return subset;
    }

    const SubsetSpec* spec = nullptr;
    if (target.destination_rule.object != nullptr) {
      const auto& dr = std::get<DestinationRuleSpec>(target.destination_rule.object->spec);
      for (const auto& s : dr.subsets) {
        if (s.name == dest.subset) spec = &s;
      }
    }
    if (spec == nullptr) {
      return vs.error(field + ".subset", dest.line,
                      fmt::format("subset '{}' of {} is not defined by any DestinationRule",
                                  dest.subset, target.key));
    }
    subset.policy = spec->policy.value_or(rulePolicy(target).value_or(LbPolicy::kRoundRobin));
    for (const auto& e : endpoints) {
      if (e.labels != nullptr && labelsMatch(spec->labels, *e.labels)) {
        subset.endpoints.push_back(e.endpoint);
      }
    }
    if (subset.endpoints.empty()) {
      bool any_pod = std::any_of(target.pods.begin(), target.pods.end(), [&](const Object* pod) {
        return labelsMatch(spec->labels, pod->labels);
      });
      if (!any_pod) {
        const Ref& dr = target.destination_rule;
        size_t index = static_cast<size_t>(
            spec - std::get<DestinationRuleSpec>(dr.object->spec).subsets.data());
        return dr.error(fmt::format("spec.subsets[{}].labels", index), spec->line,
                        fmt::format("subset '{}' ({}) matches no endpoint of {}, as routed by "
                                    "VirtualService {}/{}",
                                    spec->name, labelsText(spec->labels), target.key,
                                    vs.object->namespace_name, vs.object->name));
      }
    }
    return subset;
  }

  const std::vector<PlacedDocument>& documents_;
  routing::ProxySettings settings_;
  std::vector<Ref> service_refs_;
  std::vector<Ref> pods_;
  ViewMap<std::vector<Ref>> slices_;  // by (service name, namespace)
  std::vector<Ref> virtual_services_;
  std::vector<Ref> destination_rules_;
  Ref proxy_config_;
  ViewMap<uint32_t> pods_by_name_;                // (namespace, name)
  ViewMap<std::vector<uint32_t>> pods_by_label_;  // (namespace, key, value)
  std::vector<ServiceInfo> services_;
  ViewMap<uint32_t> services_by_key_;  // (name, namespace)
};

}  // namespace

Result<std::shared_ptr<const routing::RouteTable>> buildRouteTable(
    const std::vector<PlacedDocument>& documents, uint64_t generation,
    const routing::ProxySettings& base) {
  return Builder(documents, base).build(generation);
}

}  // namespace remora::config
