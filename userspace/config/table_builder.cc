#include "config/table_builder.h"

#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "config/field_table.h"
#include "config/security_parser.h"
#include "routing/static_route_table.h"
#include "routing/workload_identity.h"

namespace remora::config {
namespace {

using routing::labelsText;
using routing::LbPolicy;
using routing::readLabelsFile;

// An object and the document it came from.
struct Ref {
  const Placement* placement = nullptr;
  const Object* object = nullptr;

  explicit operator bool() const { return object != nullptr; }

  std::string where() const {
    std::string out = fmt::format("document {}", placement->index);
    if (object->item >= 0) out += fmt::format(" item {}", object->item);
    return fmt::format("{}, line {}", out, placement->first_line + object->line + 1);
  }

  std::string id() const {
    return fmt::format("{} {}/{}", toString(object->kind), object->namespace_name, object->name);
  }
};

// Istio's precedence between two rules for one host: the older creationTimestamp, else the
// one earlier in the file.
bool olderThan(const Ref& a, const Ref& b) {
  if (!a.object->created.empty() && !b.object->created.empty() &&
      a.object->created != b.object->created) {
    return a.object->created < b.object->created;
  }
  if (a.placement->index != b.placement->index) return a.placement->index < b.placement->index;
  return a.object->item < b.object->item;
}

// An endpoint of one Service port while the endpoints are gathered: its place in the
// Service's pool and the port it listens on there.
struct EndpointInfo {
  uint32_t member = 0;
  uint16_t port = 0;
};

// One Service's endpoint pool: every (IP, pod) once, with its labels; and the lists of its
// ports and subsets, identical ones sharing one index vector (issue 9: 100 ports x 10,000
// endpoints used to hold a copy of every address and pod name per port and per subset).
class EndpointInterner {
 public:
  // The pool index of this endpoint, added when new (`fresh`). `ns` and `name` name the pod
  // or workload, both empty when unknown.
  uint32_t intern(const IpAddress& ip, std::string_view ns, std::string_view name,
                  const Labels* labels, bool* fresh = nullptr) {
    auto [first, last] = by_ip_.equal_range(ip);
    for (auto it = first; it != last; ++it) {
      const std::string& pod = pool_->pods[it->second];
      bool same_pod = name.empty()
                          ? pod.empty()
                          : pod.size() == ns.size() + 1 + name.size() && pod.starts_with(ns) &&
                                pod[ns.size()] == '/' && pod.ends_with(name);
      if (same_pod && labels_[it->second] == labels) {
        if (fresh != nullptr) *fresh = false;
        return it->second;
      }
    }
    auto k = static_cast<uint32_t>(pool_->ips.size());
    pool_->ips.push_back(ip);
    pool_->pods.push_back(name.empty() ? std::string() : fmt::format("{}/{}", ns, name));
    labels_.push_back(labels);
    by_ip_.emplace(ip, k);
    if (fresh != nullptr) *fresh = true;
    return k;
  }

  void addOtherIp(uint32_t member, const IpAddress& ip) {
    pool_->other_ips.emplace_back(member, ip);
  }

  const Labels* labels(uint32_t member) const { return labels_[member]; }

  routing::EndpointList list(const std::vector<EndpointInfo>& endpoints) {
    std::vector<uint32_t> members;
    std::vector<uint16_t> ports;
    members.reserve(endpoints.size());
    ports.reserve(endpoints.size());
    for (const auto& e : endpoints) {
      members.push_back(e.member);
      ports.push_back(e.port);
    }
    return make(shared(members_, std::move(members)), std::move(ports));
  }

  // The endpoints of `list` (one of this pool's) whose labels match the subset's.
  routing::EndpointList subset(const routing::EndpointList& list, const SubsetSpec& spec) {
    auto& positions = subset_positions_[{list.members(), &spec}];
    if (!positions) {
      std::vector<uint32_t> keep;
      for (uint32_t j = 0; j < list.size(); ++j) {
        const Labels* l = labels_[list.member(j)];
        if (l != nullptr && labelsMatch(spec.labels, *l)) keep.push_back(j);
      }
      positions = std::make_shared<const std::vector<uint32_t>>(std::move(keep));
    }
    std::vector<uint32_t> members;
    std::vector<uint16_t> ports;
    members.reserve(positions->size());
    ports.reserve(positions->size());
    for (uint32_t j : *positions) {
      members.push_back(list.member(j));
      ports.push_back(list.port(j));
    }
    return make(shared(members_, std::move(members)), std::move(ports));
  }

  void shrink() {
    pool_->ips.shrink_to_fit();
    pool_->pods.shrink_to_fit();
    pool_->other_ips.shrink_to_fit();
  }

 private:
  template <typename T>
  static std::shared_ptr<const std::vector<T>> shared(
      std::vector<std::shared_ptr<const std::vector<T>>>& cache, std::vector<T> v) {
    for (const auto& c : cache) {
      if (*c == v) return c;
    }
    cache.push_back(std::make_shared<const std::vector<T>>(std::move(v)));
    return cache.back();
  }

  routing::EndpointList make(std::shared_ptr<const std::vector<uint32_t>> members,
                             std::vector<uint16_t> ports) {
    if (members->empty()) return {};
    bool uniform =
        std::all_of(ports.begin(), ports.end(), [&](uint16_t p) { return p == ports[0]; });
    if (uniform) return {pool_, std::move(members), ports[0]};
    return {pool_, std::move(members), 0, shared(ports_, std::move(ports))};
  }

  std::shared_ptr<routing::EndpointPool> pool_ = std::make_shared<routing::EndpointPool>();
  std::vector<const Labels*> labels_;  // per pool index: the Pod's or WorkloadEntry's, or null
  std::unordered_multimap<IpAddress, uint32_t, routing::IpAddressHash> by_ip_;
  std::vector<std::shared_ptr<const std::vector<uint32_t>>> members_;
  std::vector<std::shared_ptr<const std::vector<uint16_t>>> ports_;
  std::map<std::pair<const void*, const void*>, std::shared_ptr<const std::vector<uint32_t>>>
      subset_positions_;
};

struct MergedSubset {
  const SubsetSpec* spec = nullptr;
  Ref rule;  // the DestinationRule that defined it
  size_t index = 0;
};

// One of a host's consolidated DestinationRules, as istiod merges them (oldest first): a rule
// starts an entry, and each later rule is merged into every entry whose workloadSelector does
// not conflict with its own (its subsets with new names are added; its trafficPolicy is taken
// when the entry has none yet). A rule starts an entry of its own too unless one of those had
// the same selector, or none like it (docs/CONFIG.md, "DestinationRule workloadSelector").
struct RuleEntry {
  Ref head;  // the rule it started from: its namespace and workloadSelector are the entry's
  const std::optional<Labels>* selector = nullptr;
  std::vector<Ref> rules;  // head first, then the rules merged in, oldest first
  std::vector<MergedSubset> subsets;
  Ref policy;  // the first of `rules` with a trafficPolicy; empty when none has one
  // What the merge left out, reported only for the entry that applies to this proxy.
  struct Ignored {
    Ref rule;
    size_t subset = 0;  // spec.subsets index; SIZE_MAX: its trafficPolicy
    Ref kept;           // the older rule whose subset (or policy) is used instead
  };
  std::vector<Ignored> ignored;
};

struct ServiceInfo {
  Ref ref;
  const ServiceSpec* spec = nullptr;
  std::string key;  // "name.namespace", or a ServiceEntry's host
  bool service_entry = false;
  Resolution resolution = Resolution::kStatic;
  std::vector<std::vector<EndpointInfo>> endpoints;  // per spec->ports entry, while gathered
  // Then per spec->ports entry. `mutable`: subsets of the lists are cached as they are built.
  mutable EndpointInterner pool;
  std::vector<routing::EndpointList> lists;
  // Every Pod behind the Service, ready or not: a subset that matches none of them is a typo,
  // one that matches only unready pods is just empty for now.
  std::vector<const Labels*> workloads;
  bool slice_without_pods = false;      // endpoints from slices whose Pods are not in the file
  std::vector<RuleEntry> rule_entries;  // consolidated DestinationRules, istiod's order
  // Of the entry that applies to this proxy (selectRules): its rules, subsets and the rule whose
  // trafficPolicy applies (empty: none).
  std::vector<Ref> destination_rules;
  std::vector<MergedSubset> subsets;
  Ref policy_rule;
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

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string sectionName(RouteSection s) {
  switch (s) {
    case RouteSection::kHttp:
      return "http";
    case RouteSection::kTcp:
      return "tcp";
    case RouteSection::kTls:
      return "tls";
  }
  return "?";
}

class Builder {
 public:
  Builder(const std::vector<PlacedDocument>& documents, const routing::ProxySettings& base,
          std::vector<Finding> findings, const HostResolver& resolve)
      : documents_(documents), settings_(base), findings_(std::move(findings)), resolve_(resolve) {}

  Result<std::shared_ptr<const routing::RouteTable>> build(uint64_t generation) {
    collect();
    applyProxyConfig();
    indexPods();
    if (auto r = resolveWorkload(); !r) return r.error();
    indexServices();
    indexServiceEntries();
    computeEndpoints();
    attachDestinationRules();
    attachVirtualServices();
    std::vector<routing::ServicePortEntry> entries;
    entries.reserve(services_.size());
    for (auto& service : services_) {
      if (service.service_entry && service.resolution == Resolution::kNone) continue;
      for (size_t p = 0; p < service.spec->ports.size(); ++p) {
        entries.push_back(buildPort(service, p));
      }
    }
    auto table = routing::StaticRouteTable::create(settings_, generation, std::move(entries),
                                                   std::move(findings_));
    if (!table) return table.error();
    // Not shared with anyone yet, so the one field set after construction is still safe.
    std::const_pointer_cast<routing::StaticRouteTable>(*table)->security = buildSecurityTable(
        documents_, [this](const Object& rule) { return unapplied_policies_.count(&rule) == 0; });
    return std::shared_ptr<const routing::RouteTable>(std::move(*table));
  }

 private:
  void note(const Ref& ref, Severity severity, std::string_view field, int line,
            std::string_view message) {
    findings_.push_back(makeFinding(severity, *ref.placement, *ref.object, field, line, message));
  }

  void collect() {
    // Pods and Services, the bulk of a large file, are checked for duplicates by the indexes
    // built from them anyway; this map holds only the other kinds.
    ViewMap<Ref> seen;
    for (const auto& doc : documents_) {
      for (const auto& object : doc.model->objects) {
        Ref ref{&doc.placement, &object};
        for (const auto& n : object.notes) note(ref, n.severity, n.field, n.line, n.message);
        if (object.kind != Kind::kPod && object.kind != Kind::kService) {
          ViewKey key = object.kind == Kind::kProxyConfig
                            ? ViewKey{"ProxyConfig", "", ""}
                            : ViewKey{toString(object.kind), object.namespace_name, object.name};
          auto [it, inserted] = seen.try_emplace(key, ref);
          if (!inserted) {
            duplicate(ref, it->second);
            continue;
          }
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
          case Kind::kEndpoints:
            endpoints_objects_[ViewKey{object.name, object.namespace_name, ""}].push_back(ref);
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
          case Kind::kServiceEntry:
            service_entries_.push_back(ref);
            break;
          case Kind::kWorkloadEntry:
            workload_entries_.push_back(ref);
            break;
          case Kind::kNamespace:
          case Kind::kPeerAuthentication:  // buildSecurityTable reads these
          case Kind::kAuthorizationPolicy:
            break;
        }
      }
    }
  }

  void duplicate(const Ref& ref, const Ref& first) {
    const Object& object = *ref.object;
    note(ref, Severity::kError, "metadata.name", object.line,
         object.kind == Kind::kProxyConfig
             ? fmt::format("a second ProxyConfig (the first is at {}); this one is left out",
                           first.where())
             : fmt::format("duplicate {} (the first is at {}); this one is left out",
                           toString(object.kind), first.where()));
  }

  void applyProxyConfig() {
    if (!proxy_config_) return;
    const auto& c = std::get<ProxyConfigSpec>(proxy_config_.object->spec);
    routing::ProxySettings s = settings_;
    if (c.outbound_port) s.outbound_listen.port = *c.outbound_port;
    if (c.inbound_port) s.inbound_listen.port = *c.inbound_port;
    if (c.admin_address) s.admin_listen.ip = *c.admin_address;
    if (c.admin_port) s.admin_listen.port = *c.admin_port;
    if (c.inbound_source) s.inbound_source = *c.inbound_source;
    if (c.inbound_transparent) s.inbound_transparent = *c.inbound_transparent;
    if (c.outbound_policy) s.outbound_policy = *c.outbound_policy;
    if (c.connect_timeout) s.connect_timeout = *c.connect_timeout;
    if (c.drain_timeout) s.drain_timeout = *c.drain_timeout;
    if (c.max_connect_attempts) s.max_connect_attempts = *c.max_connect_attempts;
    if (c.access_log) s.access_log = *c.access_log;
    if (c.buffer_limit_bytes) s.buffer_limit_bytes = *c.buffer_limit_bytes;
    if (c.idle_timeout) s.idle_timeout = *c.idle_timeout;
    if (c.half_close_timeout) s.half_close_timeout = *c.half_close_timeout;
    if (c.max_connection_duration) s.max_connection_duration = *c.max_connection_duration;
    if (c.max_connections) s.max_connections = *c.max_connections;
    if (c.tcp_keepalive) s.tcp_keepalive = *c.tcp_keepalive;
    if (c.inbound_drain_grace) s.inbound_drain_grace = *c.inbound_drain_grace;
    if (c.relay) s.relay = *c.relay;
    if (c.protocol_detection_timeout) s.protocol_detection_timeout = *c.protocol_detection_timeout;
    if (c.path_normalization) s.path_normalization = *c.path_normalization;
    if (c.tls_dir) s.tls_dir = *c.tls_dir;
    if (c.trust_domain) s.trust_domain = *c.trust_domain;
    // The workload: flags (and POD_NAMESPACE / POD_NAME) come in `base` and win.
    routing::WorkloadIdentity& w = s.workload;
    if (c.pod_namespace && w.namespace_name.empty()) w.namespace_name = *c.pod_namespace;
    if (c.pod_name && w.name.empty()) w.name = *c.pod_name;
    if (c.pod_labels_file && w.labels_file.empty() && !w.labels_known) {
      w.labels_file = *c.pod_labels_file;
    }
    if (s.outbound_listen.port == s.inbound_listen.port) {
      note(proxy_config_, Severity::kError, "spec.inboundPort", proxy_config_.object->line,
           fmt::format("the inbound and outbound ports are both {}; this ProxyConfig is left "
                       "out",
                       s.inbound_listen.port));
      return;
    }
    settings_ = s;
  }

  // Pods and WorkloadEntries by (namespace, label), so a selector only looks at workloads
  // sharing its rarest label, instead of every Service scanning every Pod.
  void indexPods() {
    pods_by_name_.reserve(pods_.size());
    pods_by_label_.reserve(pods_.size() * 2);
    std::vector<Ref> unique;
    unique.reserve(pods_.size());
    for (const Ref& ref : pods_) {
      const Object& pod = *ref.object;
      auto [it, inserted] = pods_by_name_.try_emplace(ViewKey{pod.namespace_name, pod.name, ""},
                                                      static_cast<uint32_t>(unique.size()));
      if (!inserted) {
        duplicate(ref, unique[it->second]);
        continue;
      }
      unique.push_back(ref);
    }
    pods_ = std::move(unique);
    for (const Ref& ref : workload_entries_) pods_.push_back(ref);
    for (uint32_t i = 0; i < pods_.size(); ++i) {
      for (const auto& [k, v] : workloadLabels(i)) {
        pods_by_label_[ViewKey{pods_[i].object->namespace_name, k, v}].push_back(i);
      }
    }
  }

  // The proxy's labels: the labels file when one is named (re-read at every load: the downward
  // API rewrites it when the pod's labels change), else the labels of the Pod document named by
  // the workload's namespace and name. A labels file that cannot be read fails the load.
  Result<void> resolveWorkload() {
    routing::WorkloadIdentity& w = settings_.workload;
    if (w.labels_known) return {};  // given by the embedder
    if (!w.labels_file.empty()) {
      auto labels = readLabelsFile(w.labels_file);
      if (!labels) return makeError("pod labels file: " + labels.error().message);
      w.labels = std::move(*labels);
      w.labels_known = true;
      w.labels_source = "file " + w.labels_file;
      return {};
    }
    if (w.namespace_name.empty() || w.name.empty()) return {};
    auto it = pods_by_name_.find(ViewKey{w.namespace_name, w.name, ""});
    if (it == pods_by_name_.end()) return {};
    const Ref& pod = pods_[it->second];
    w.labels = pod.object->labels;
    w.labels_known = true;
    w.labels_source = fmt::format("Pod {}/{} ({})", w.namespace_name, w.name, pod.where());
    return {};
  }

  // Whether a DestinationRule's workloadSelector selects this proxy's workload: the proxy knows
  // its namespace and labels, the rule is of that namespace, and its labels are the workload's.
  bool selectsWorkload(const Object& rule) const {
    const routing::WorkloadIdentity& w = settings_.workload;
    const auto& selector = std::get<DestinationRuleSpec>(rule.spec).workload_selector;
    return selector && !w.namespace_name.empty() && w.labels_known &&
           rule.namespace_name == w.namespace_name && labelsMatch(*selector, w.labels);
  }

  // Whether a match entry's source conditions hold for this proxy's own workload.
  bool sourceHolds(const std::optional<Labels>& labels,
                   const std::optional<std::string>& namespace_name) const {
    const routing::WorkloadIdentity& w = settings_.workload;
    if (labels && !(w.labels_known && labelsMatch(*labels, w.labels))) return false;
    return !namespace_name || *namespace_name == w.namespace_name;
  }

  // What the proxy knows of itself, for findings: "namespace istio-demo, labels app=x (from
  // file /etc/podinfo/labels)".
  std::string workloadText() const {
    const routing::WorkloadIdentity& w = settings_.workload;
    return fmt::format(
        "namespace {}, labels {}", w.namespace_name.empty() ? "unknown" : w.namespace_name,
        w.labels_known ? fmt::format("{} (from {})", labelsText(w.labels), w.labels_source)
                       : std::string("unknown"));
  }

  const Labels& workloadLabels(uint32_t i) const {
    const Object& o = *pods_[i].object;
    return o.kind == Kind::kWorkloadEntry ? std::get<WorkloadEntrySpec>(o.spec).workload.labels
                                          : o.labels;
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
      if (selector.size() == 1 || labelsMatch(selector, workloadLabels(i))) out.push_back(i);
    }
    return out;
  }

  // Claims clusterIP:port for a service; false (with an error) when another has it.
  bool claimVips(const Ref& ref, const ServiceSpec& spec, std::string_view field) {
    for (const auto& port : spec.ports) {
      for (const auto& ip : spec.cluster_ips) {
        auto it = vips_.find(SocketAddress{ip, port.port});
        if (it != vips_.end()) {
          note(ref, Severity::kError, field, ref.object->line,
               fmt::format("{} is already {} ({}); this one is left out",
                           SocketAddress{ip, port.port}.toString(), it->second.id(),
                           it->second.where()));
          return false;
        }
      }
    }
    for (const auto& port : spec.ports) {
      for (const auto& ip : spec.cluster_ips) vips_.try_emplace(SocketAddress{ip, port.port}, ref);
    }
    return true;
  }

  void indexServices() {
    services_.reserve(service_refs_.size() + service_entries_.size());
    services_by_key_.reserve(service_refs_.size());
    for (const Ref& ref : service_refs_) {
      auto key = ViewKey{ref.object->name, ref.object->namespace_name, ""};
      if (auto known = services_by_key_.find(key); known != services_by_key_.end()) {
        duplicate(ref, services_[known->second].ref);
        continue;
      }
      ServiceInfo info;
      info.ref = ref;
      info.spec = &std::get<ServiceSpec>(ref.object->spec);
      info.key = fmt::format("{}.{}", ref.object->name, ref.object->namespace_name);
      if (!claimVips(ref, *info.spec, "spec.clusterIP")) continue;
      if (info.spec->cluster_ips.empty() && !info.spec->headless && !info.spec->external_name) {
        note(ref, Severity::kWarning, "spec.clusterIP", ref.object->line,
             "is not set: only connections to the Service's pod addresses are routed (a "
             "Service as the API server returns it always has one)");
      }
      services_by_key_.emplace(key, static_cast<uint32_t>(services_.size()));
      services_.push_back(std::move(info));
    }
  }

  // A ServiceEntry becomes one service per host, with the entry's addresses as VIPs.
  void indexServiceEntries() {
    for (const Ref& ref : service_entries_) {
      const auto& se = std::get<ServiceEntrySpec>(ref.object->spec);
      ServiceSpec spec;  // the Service form every host of the entry starts from
      spec.cluster_ips = se.addresses;
      for (const auto& p : se.ports) {
        spec.ports.push_back({p.name, p.number, p.target, "", lower(p.protocol), p.line});
      }
      std::vector<IpAddress> resolved_hosts;
      bool dns = se.resolution == Resolution::kDns || se.resolution == Resolution::kDnsRoundRobin;
      for (size_t h = 0; h < se.hosts.size(); ++h) {
        const HostRef& host = se.hosts[h];
        if (services_by_host_.count(host.host) != 0) {
          note(ref, Severity::kError, fmt::format("spec.hosts[{}]", h), host.line,
               fmt::format("host '{}' is already defined by an earlier ServiceEntry; this host "
                           "is left out",
                           host.host));
          continue;
        }
        ServiceInfo info;
        info.ref = ref;
        info.key = host.host;
        info.service_entry = true;
        info.resolution = se.resolution;
        owned_specs_.push_back(spec);
        ServiceSpec& own = owned_specs_.back();
        if (h > 0 && !own.cluster_ips.empty()) {
          // One VIP cannot lead to two services: it names the first host.
          own.cluster_ips.clear();
          note(ref, Severity::kWarning, fmt::format("spec.hosts[{}]", h), host.line,
               fmt::format("spec.addresses route to the first host, {}; '{}' gets no VIP and "
                           "is reached only through its endpoints' addresses",
                           se.hosts[0].host, host.host));
        }
        if (dns && se.endpoints.empty() && !se.workload_selector) {
          // No endpoints: the host itself is resolved, and the app's connections to those
          // addresses are this service's.
          auto ips = resolveName(ref, fmt::format("spec.hosts[{}]", h), host.line, host.host);
          if (own.cluster_ips.empty()) own.cluster_ips = ips;
          resolved_hosts = std::move(ips);
        }
        info.spec = &own;
        if (!claimVips(ref, own, "spec.addresses")) continue;
        info.endpoints.resize(own.ports.size());
        if (dns && se.endpoints.empty() && !se.workload_selector) {
          for (size_t p = 0; p < own.ports.size(); ++p) {
            for (const auto& ip : resolved_hosts) {
              info.endpoints[p].push_back(
                  {info.pool.intern(ip, "", "", nullptr), own.ports[p].target_number});
            }
          }
        }
        services_by_host_.emplace(host.host, static_cast<uint32_t>(services_.size()));
        services_.push_back(std::move(info));
      }
    }
  }

  std::vector<IpAddress> resolveName(const Ref& ref, const std::string& field, int line,
                                     const std::string& name) {
    if (auto ip = IpAddress::parse(name)) return {*ip};
    if (name.find('*') != std::string::npos) {
      note(ref, Severity::kWarning, field, line,
           fmt::format("'{}' is a wildcard and cannot be resolved; connections to it pass "
                       "through",
                       name));
      return {};
    }
    if (!resolve_) {
      note(ref, Severity::kWarning, field, line,
           fmt::format("'{}' needs DNS resolution, which this load does not do; it has no "
                       "endpoints",
                       name));
      return {};
    }
    auto ips = resolve_(name);
    if (!ips) {
      note(ref, Severity::kWarning, field, line,
           fmt::format("'{}' did not resolve ({}); it has no endpoints until it does", name,
                       ips.error().message));
      return {};
    }
    return *ips;
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

  void addWorkloadEndpoints(ServiceInfo& service, uint32_t i, bool target_by_name) {
    const ServiceSpec& spec = *service.spec;
    const Object& object = *pods_[i].object;
    service.workloads.push_back(&workloadLabels(i));
    if (object.kind == Kind::kWorkloadEntry) {
      const auto& w = std::get<WorkloadEntrySpec>(object.spec).workload;
      auto ip = IpAddress::parse(w.address);
      if (!ip) {
        note(pods_[i], Severity::kWarning, "spec.address", w.line,
             fmt::format("'{}' is a DNS name, which is resolved only for a ServiceEntry with "
                         "resolution DNS; {} does not use this workload",
                         w.address, service.key));
        return;
      }
      uint32_t member = service.pool.intern(*ip, object.namespace_name, object.name, &w.labels);
      for (size_t p = 0; p < spec.ports.size(); ++p) {
        const ServicePortSpec& port = spec.ports[p];
        uint16_t target = port.target_number;
        std::string_view port_name = target_by_name ? port.target_name : port.name;
        for (const auto& [name, number] : w.ports) {
          if (name == port_name && !port_name.empty()) target = number;
        }
        if (target == 0) continue;
        service.endpoints[p].push_back({member, target});
      }
      return;
    }
    const auto& pod = std::get<PodSpec>(object.spec);
    if (!pod.ready) return;
    size_t primary = primaryIp(pod, spec);
    bool fresh = false;
    uint32_t member = service.pool.intern(pod.ips[primary], object.namespace_name, object.name,
                                          &object.labels, &fresh);
    for (size_t k = 0; k < pod.ips.size() && fresh; ++k) {
      if (k != primary) service.pool.addOtherIp(member, pod.ips[k]);
    }
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
      service.endpoints[p].push_back({member, target});
    }
  }

  void computeEndpoints() {
    for (auto& service : services_) {
      const ServiceSpec& spec = *service.spec;
      service.endpoints.resize(spec.ports.size());
      const std::string_view ns = service.ref.object->namespace_name;
      if (service.service_entry) {
        serviceEntryEndpoints(service);
        continue;
      }
      // EndpointSlices when there are any; else core/v1 Endpoints (which the API server
      // mirrors from slices), else the selector over Pods and WorkloadEntries.
      ViewKey key{service.ref.object->name, ns, ""};
      const std::vector<Ref>* source = nullptr;
      if (auto it = slices_.find(key); it != slices_.end()) {
        source = &it->second;
      } else if (auto e = endpoints_objects_.find(key); e != endpoints_objects_.end()) {
        source = &e->second;
      }
      if (source != nullptr) {
        endpointsFromSlices(service, *source);
        continue;
      }
      if (spec.selector.empty()) continue;
      for (uint32_t i : selectPods(ns, spec.selector)) addWorkloadEndpoints(service, i, true);
    }
    for (auto& service : services_) {
      service.lists.reserve(service.endpoints.size());
      for (const auto& endpoints : service.endpoints) {
        service.lists.push_back(service.pool.list(endpoints));
      }
      service.endpoints = {};
      service.pool.shrink();
    }
  }

  void serviceEntryEndpoints(ServiceInfo& service) {
    const Ref& ref = service.ref;
    const auto& se = std::get<ServiceEntrySpec>(ref.object->spec);
    const ServiceSpec& spec = *service.spec;
    if (se.workload_selector) {
      for (uint32_t i : selectPods(ref.object->namespace_name, *se.workload_selector)) {
        addWorkloadEndpoints(service, i, false);
      }
      return;
    }
    bool dns = se.resolution == Resolution::kDns || se.resolution == Resolution::kDnsRoundRobin;
    for (size_t e = 0; e < se.endpoints.size(); ++e) {
      const WorkloadSpec& w = se.endpoints[e];
      std::vector<IpAddress> ips;
      if (auto ip = IpAddress::parse(w.address)) {
        ips.push_back(*ip);
      } else if (dns) {
        ips = resolveName(ref, fmt::format("spec.endpoints[{}].address", e), w.line, w.address);
      }
      for (size_t p = 0; p < spec.ports.size(); ++p) {
        uint16_t target = spec.ports[p].target_number;
        for (const auto& [name, number] : w.ports) {
          if (name == spec.ports[p].name) target = number;
        }
        for (const auto& ip : ips) {
          service.endpoints[p].push_back({service.pool.intern(ip, "", "", &w.labels), target});
        }
      }
      service.workloads.push_back(&w.labels);
    }
  }

  void endpointsFromSlices(ServiceInfo& service, const std::vector<Ref>& slices) {
    const ServiceSpec& spec = *service.spec;
    std::unordered_set<const Object*> pods_seen;
    // Each slice endpoint's pool index (kNotReady for an unready one), resolved once on the
    // first port the slice serves rather than once per port.
    constexpr uint32_t kNotReady = UINT32_MAX;
    std::vector<std::vector<uint32_t>> members(slices.size());
    for (size_t p = 0; p < spec.ports.size(); ++p) {
      const ServicePortSpec& port = spec.ports[p];
      std::unordered_set<SocketAddress, routing::SocketAddressHash> seen;
      for (size_t s = 0; s < slices.size(); ++s) {
        const auto& slice = std::get<EndpointSliceSpec>(slices[s].object->spec);
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
        if (members[s].empty() && !slice.endpoints.empty()) {
          members[s] = sliceMembers(service, slice, pods_seen, kNotReady);
        }
        for (size_t i = 0; i < slice.endpoints.size(); ++i) {
          if (members[s][i] == kNotReady) continue;
          if (!seen.insert(SocketAddress{slice.endpoints[i].address, target}).second) continue;
          service.endpoints[p].push_back({members[s][i], target});
        }
      }
    }
  }

  // The pool index of each of the slice's endpoints, or `not_ready`; notes the slice's pods
  // among the Service's workloads.
  std::vector<uint32_t> sliceMembers(ServiceInfo& service, const EndpointSliceSpec& slice,
                                     std::unordered_set<const Object*>& pods_seen,
                                     uint32_t not_ready) {
    std::vector<uint32_t> out;
    out.reserve(slice.endpoints.size());
    for (const auto& e : slice.endpoints) {
      const Object* pod = nullptr;
      if (!e.pod_name.empty()) {
        auto it = pods_by_name_.find(ViewKey{e.pod_namespace, e.pod_name, ""});
        if (it != pods_by_name_.end()) pod = pods_[it->second].object;
      }
      if (pod == nullptr) service.slice_without_pods = true;
      if (pod != nullptr && pods_seen.insert(pod).second) service.workloads.push_back(&pod->labels);
      if (!e.ready) {
        out.push_back(not_ready);
        continue;
      }
      std::string_view pod_ns = e.pod_name.empty() ? std::string_view() : e.pod_namespace;
      out.push_back(service.pool.intern(e.address, pod_ns, e.pod_name,
                                        pod == nullptr ? nullptr : &pod->labels));
    }
    return out;
  }

  // A ServiceEntry host exactly; else "reviews", "reviews.ns", "reviews.ns.svc" and
  // "reviews.ns.svc.cluster.local" all name the Service reviews.ns, and a short name is
  // relative to the referring object's namespace.
  ServiceInfo* resolveHost(std::string_view host, std::string_view ns) {
    if (auto it = services_by_host_.find(std::string(host)); it != services_by_host_.end()) {
      return &services_[it->second];
    }
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

  // IST0101-like: the rule names a host that is not in the file. When a Service of that short
  // name exists in another namespace, the likely cause is the rule's own namespace.
  void unknownHost(const Ref& ref, const std::string& field, int line, std::string_view host,
                   std::string_view what) {
    note(ref, Severity::kWarning, field, line,
         fmt::format("{}; {}", unknownHostText(ref, host), what));
  }

  std::string unknownHostText(const Ref& ref, std::string_view host) const {
    if (host.find('*') != std::string_view::npos) {
      return fmt::format("wildcard host '{}' is not matched yet", host);
    }
    if (host.find('.') != std::string_view::npos) {
      return fmt::format("host '{}' is not a Service or ServiceEntry in this file", host);
    }
    std::string message = fmt::format(
        "host '{}' means {}.{}, which is not a Service or ServiceEntry in this file (a short "
        "host is relative to the rule's namespace, {})",
        host, host, ref.object->namespace_name, ref.object->namespace_name);
    for (const auto& s : services_) {
      if (!s.service_entry && s.ref.object->name == host) {
        message += fmt::format("; did you mean {}.{}?", host, s.ref.object->namespace_name);
        break;
      }
    }
    return message;
  }

  void attachDestinationRules() {
    std::vector<Ref> ordered = destination_rules_;
    std::stable_sort(ordered.begin(), ordered.end(), olderThan);
    for (const Ref& ref : ordered) {
      const auto& dr = std::get<DestinationRuleSpec>(ref.object->spec);
      ServiceInfo* service = resolveHost(dr.host.host, ref.object->namespace_name);
      if (service == nullptr) {
        unknownHost(ref, "spec.host", dr.host.line, dr.host.host, "this rule does nothing");
        continue;
      }
      mergeRule(*service, ref);
    }
    for (auto& service : services_) selectRules(service);
  }

  // istiod's merge of a host's DestinationRules (RuleEntry), one rule at a time, oldest first.
  static void mergeRule(ServiceInfo& service, const Ref& ref) {
    const auto& mine = std::get<DestinationRuleSpec>(ref.object->spec).workload_selector;
    bool separately = true;
    for (RuleEntry& entry : service.rule_entries) {
      const std::optional<Labels>& theirs = *entry.selector;
      if (mine && theirs && *mine != *theirs) continue;
      if (mine.has_value() == theirs.has_value()) separately = false;
      mergeInto(entry, ref);
    }
    if (separately) {
      RuleEntry entry;
      entry.head = ref;
      entry.selector = &mine;
      mergeInto(entry, ref);
      service.rule_entries.push_back(std::move(entry));
    }
  }

  static void mergeInto(RuleEntry& entry, const Ref& ref) {
    const auto& dr = std::get<DestinationRuleSpec>(ref.object->spec);
    entry.rules.push_back(ref);
    if (dr.has_traffic_policy) {
      if (!entry.policy) {
        entry.policy = ref;
      } else {
        entry.ignored.push_back({ref, SIZE_MAX, entry.policy});
      }
    }
    for (size_t i = 0; i < dr.subsets.size(); ++i) {
      const SubsetSpec& s = dr.subsets[i];
      auto same = std::find_if(entry.subsets.begin(), entry.subsets.end(),
                               [&](const MergedSubset& m) { return m.spec->name == s.name; });
      if (same != entry.subsets.end()) {
        entry.ignored.push_back({ref, i, same->rule});
        continue;
      }
      entry.subsets.push_back({&s, ref, i});
    }
  }

  // The consolidated rule that applies to this proxy, as istiod picks it for a sidecar's
  // outbound traffic: the first entry whose workloadSelector selects the proxy's workload (an
  // entry from the proxy's own namespace whose labels the workload has), else the last entry
  // without a selector. Reports what the merge left out of it, and every selector rule that
  // does not apply here.
  void selectRules(ServiceInfo& service) {
    const routing::WorkloadIdentity& w = settings_.workload;
    const RuleEntry* chosen = nullptr;
    const RuleEntry* catch_all = nullptr;
    for (const RuleEntry& e : service.rule_entries) {
      if (!e.selector->has_value()) {
        catch_all = &e;
      } else if (selectsWorkload(*e.head.object)) {
        chosen = &e;
        break;
      }
    }
    if (chosen == nullptr) chosen = catch_all;
    auto in = [](const RuleEntry* e, const Ref& r) {
      return e != nullptr && std::any_of(e->rules.begin(), e->rules.end(),
                                         [&](const Ref& x) { return x.object == r.object; });
    };
    // Every rule once (a rule sits in several entries): whether it applies, and why not.
    std::unordered_set<const Object*> seen;
    for (const RuleEntry& e : service.rule_entries) {
      for (const Ref& r : e.rules) {
        if (!seen.insert(r.object).second) continue;
        // Only the policy rule's trafficPolicy (and tls) applies.
        if (chosen == nullptr || r.object != chosen->policy.object) {
          unapplied_policies_.insert(r.object);
        }
        const auto& dr = std::get<DestinationRuleSpec>(r.object->spec);
        if (!dr.workload_selector) continue;
        const bool applies = in(chosen, r);
        const bool known = !w.namespace_name.empty() && w.labels_known;
        const bool same_namespace = r.object->namespace_name == w.namespace_name;
        const bool own_selects = selectsWorkload(*r.object);
        if (applies && own_selects) continue;
        std::string why;
        if (!known) {
          why = fmt::format(
              "the proxy does not know its workload's {} (give --pod-namespace and "
              "--pod-labels-file, or --pod-namespace and --pod-name of a Pod in the config)",
              w.namespace_name.empty() ? "namespace" : "labels");
        } else if (!same_namespace) {
          why = fmt::format("a workloadSelector selects workloads of its own namespace ({}) only",
                            r.object->namespace_name);
        } else if (!own_selects) {
          why = fmt::format("its workloadSelector ({}) does not select this proxy's workload",
                            labelsText(*dr.workload_selector));
        } else {
          why = fmt::format(
              "{}, an older DestinationRule whose workloadSelector also selects this "
              "workload, wins (istiod takes the first)",
              chosen->head.id());
        }
        std::string what = applies
                               ? fmt::format(
                                     "as istiod merges rules, its subsets (and its trafficPolicy "
                                     "where the older {} has none) still apply through that rule",
                                     chosen->head.id())
                               : std::string("this DestinationRule does not apply here");
        note(r, known ? Severity::kInfo : Severity::kWarning, "spec.workloadSelector",
             dr.selector_line, fmt::format("{} ({}): {}", why, workloadText(), what));
      }
    }
    if (chosen == nullptr) return;
    service.destination_rules = chosen->rules;
    service.subsets = chosen->subsets;
    service.policy_rule = chosen->policy;
    for (const auto& ignored : chosen->ignored) {
      const auto& dr = std::get<DestinationRuleSpec>(ignored.rule.object->spec);
      if (ignored.subset == SIZE_MAX) {
        note(ignored.rule, Severity::kWarning, "spec.trafficPolicy", dr.host.line,
             fmt::format("{} already has DestinationRule {} ({}), which is older; as in "
                         "Istio, the rules' subsets are merged and only the oldest one's "
                         "traffic policy applies",
                         service.key, ignored.kept.id(), ignored.kept.where()));
        continue;
      }
      const SubsetSpec& s = dr.subsets[ignored.subset];
      note(ignored.rule, Severity::kWarning, fmt::format("spec.subsets[{}].name", ignored.subset),
           s.line,
           fmt::format("subset '{}' of {} is already defined by {} ({}), which wins as the "
                       "older rule; this definition is not used",
                       s.name, service.key, ignored.kept.id(), ignored.kept.where()));
    }
  }

  // The VirtualService's match entries that name the client's labels or namespace: held
  // against the proxy's own workload, and reported when the proxy cannot know or they never
  // hold here.
  void noteSourceConditions(const Ref& ref) {
    const auto& vs = std::get<VirtualServiceSpec>(ref.object->spec);
    const routing::WorkloadIdentity& w = settings_.workload;
    for (const auto& route : vs.routes) {
      if (route.section == RouteSection::kTls || route.rejected || !route.sidecar) continue;
      for (const auto& e : route.entries) {
        if (!e.source_labels && !e.source_namespace) continue;
        if (e.source_labels && !w.labels_known) {
          note(ref, Severity::kWarning, e.field + ".sourceLabels", e.line,
               "the proxy does not know its workload's labels (no --pod-labels-file, and no Pod "
               "document named by --pod-namespace and --pod-name), so this match entry never "
               "holds");
          continue;
        }
        if (e.source_namespace && w.namespace_name.empty()) {
          note(ref, Severity::kWarning, e.field + ".sourceNamespace", e.line,
               "the proxy does not know its workload's namespace (no --pod-namespace or "
               "POD_NAMESPACE), so this match entry never holds");
          continue;
        }
        if (sourceHolds(e.source_labels, e.source_namespace)) continue;
        const bool labels_hold = !e.source_labels || labelsMatch(*e.source_labels, w.labels);
        note(ref, Severity::kInfo, e.field + (labels_hold ? ".sourceNamespace" : ".sourceLabels"),
             e.line,
             fmt::format("does not hold for this proxy's workload ({}), so this match entry "
                         "never matches here",
                         workloadText()));
      }
    }
  }

  // Checks a VirtualService's destinations before it is attached: a rule that points at a
  // host or subset that does not exist is left out alone.
  bool validVirtualService(const Ref& ref) {
    const auto& vs = std::get<VirtualServiceSpec>(ref.object->spec);
    for (const auto& route : vs.routes) {
      if (route.section == RouteSection::kTls || route.rejected) continue;
      const size_t routed = route.destinations.size();
      for (size_t d = 0; d < routed + route.mirrors.size(); ++d) {
        bool mirror = d >= routed;
        const RouteDestination& dest =
            mirror ? route.mirrors[d - routed].destination : route.destinations[d];
        std::string field = mirror ? route.mirrors[d - routed].field
                                   : fmt::format("{}.route[{}].destination", route.field, d);
        ServiceInfo* target = resolveHost(dest.host, ref.object->namespace_name);
        if (target == nullptr) {
          note(ref, Severity::kError, field + ".host", dest.line,
               fmt::format("{}; the VirtualService is left out", unknownHostText(ref, dest.host)));
          return false;
        }
        if (dest.port != 0 &&
            std::none_of(target->spec->ports.begin(), target->spec->ports.end(),
                         [&](const ServicePortSpec& p) { return p.port == dest.port; })) {
          note(ref, Severity::kError, field + ".port.number", dest.line,
               fmt::format("{} has no TCP port {}; the VirtualService is left out", target->key,
                           dest.port));
          return false;
        }
        if (!dest.subset.empty() && findSubset(*target, dest.subset) == nullptr) {
          note(ref, Severity::kError, field + ".subset", dest.line,
               fmt::format("subset '{}' of {} is not defined by any DestinationRule "
                           "(IST0101); the VirtualService is left out",
                           dest.subset, target->key));
          return false;
        }
      }
    }
    return true;
  }

  void attachVirtualServices() {
    std::vector<Ref> ordered = virtual_services_;
    std::stable_sort(ordered.begin(), ordered.end(), olderThan);
    for (const Ref& ref : ordered) {
      const auto& vs = std::get<VirtualServiceSpec>(ref.object->spec);
      if (!vs.mesh) {
        note(ref, Severity::kInfo, "spec.gateways", ref.object->line,
             "is bound to gateways only (no 'mesh'), so it does not apply to sidecars");
        continue;
      }
      if (!validVirtualService(ref)) continue;
      noteSourceConditions(ref);
      for (size_t h = 0; h < vs.hosts.size(); ++h) {
        std::string field = fmt::format("spec.hosts[{}]", h);
        ServiceInfo* service = resolveHost(vs.hosts[h].host, ref.object->namespace_name);
        if (service == nullptr) {
          unknownHost(ref, field, vs.hosts[h].line, vs.hosts[h].host,
                      "this VirtualService does nothing for it");
          continue;
        }
        if (service->virtual_service.object == ref.object) continue;
        if (service->virtual_service) {
          const Ref& first = service->virtual_service;
          note(ref, Severity::kWarning, field, vs.hosts[h].line,
               fmt::format("{} is also routed by {} ({}), which is older and "
                           "wins; this one is not applied to it (IST0109)",
                           service->key, first.id(), first.where()));
          continue;
        }
        if (service->service_entry && service->resolution == Resolution::kNone) {
          note(ref, Severity::kWarning, field, vs.hosts[h].line,
               fmt::format("{} is a ServiceEntry with resolution NONE: connections pass "
                           "through to their original destination, and these routes do not "
                           "apply",
                           service->key));
          continue;
        }
        service->virtual_service = ref;
      }
    }
  }

  static const MergedSubset* findSubset(const ServiceInfo& service, std::string_view name) {
    for (const auto& s : service.subsets) {
      if (s.spec->name == name) return &s;
    }
    return nullptr;
  }

  // Istio's merge of DestinationRule traffic policies for one subset (nullptr: the whole
  // service) on one port: the top level, replaced block by block by the subset's level; at
  // each of the two, a portLevelSettings entry for the port replaces all its blocks.
  static PolicyLevel effectivePolicy(const ServiceInfo& service, const SubsetSpec* subset,
                                     uint16_t port) {
    auto forPort = [port](const TrafficPolicySpec& t) -> const PolicyLevel* {
      for (const auto& [number, level] : t.ports) {
        if (number == port) return &level;
      }
      return nullptr;
    };
    PolicyLevel merged;
    if (service.policy_rule) {
      const auto& dr = std::get<DestinationRuleSpec>(service.policy_rule.object->spec);
      const PolicyLevel* p = forPort(dr.traffic);
      merged = p != nullptr ? *p : dr.traffic.level;
    }
    if (subset != nullptr) {
      const PolicyLevel& level = subset->traffic.level;
      if (level.lb) merged.lb = level.lb;
      if (level.pool) merged.pool = level.pool;
      if (level.outlier) merged.outlier = level.outlier;
      if (const PolicyLevel* p = forPort(subset->traffic)) merged = *p;
    }
    return merged;
  }

  static void applyPolicy(const PolicyLevel& policy, routing::Subset& subset) {
    subset.policy = policy.lb.value_or(LbPolicy::kRoundRobin);
    subset.connection_pool = policy.pool.value_or(routing::ConnectionPoolSettings{});
    subset.outlier_detection = policy.outlier.value_or(routing::OutlierDetectionSettings{});
  }

  // Whether a route's L4-decidable match entries take connections to `port` from this proxy.
  bool matchesPort(const VsRoute& route, uint16_t port) const {
    if (!route.has_match) return true;
    return std::any_of(route.entries.begin(), route.entries.end(), [&](const auto& e) {
      return e.l4 && (e.port == 0 || e.port == port) &&
             sourceHolds(e.source_labels, e.source_namespace);
    });
  }

  // The route that serves a port, as Istio picks it by the port's protocol, reporting every
  // route it has to skip and how the result differs from Istio.
  const VsRoute* routeFor(const ServiceInfo& service, const ServicePortSpec& port,
                          const std::string& protocol) {
    if (!service.virtual_service) return nullptr;
    const Ref& vs_ref = service.virtual_service;
    const auto& vs = std::get<VirtualServiceSpec>(vs_ref.object->spec);
    std::string where = fmt::format("{} port {}", service.key, port.port);
    auto has = [&](RouteSection s) {
      return std::any_of(vs.routes.begin(), vs.routes.end(),
                         [&](const VsRoute& r) { return r.section == s; });
    };
    RouteSection section = RouteSection::kTcp;
    // On HTTP/1.1 ports (and sniffed ones) spec.http applies per request (buildHttpRoutes);
    // the route picked here is then only the per-connection fallback, and says nothing.
    bool per_request = perRequestProtocol(protocol);
    if (isHttpProtocol(protocol)) {
      section = RouteSection::kHttp;
    } else if (isTlsProtocol(protocol)) {
      section = RouteSection::kTls;
    } else if (protocol.empty() && has(RouteSection::kHttp)) {
      note(vs_ref, Severity::kInfo, "spec.http", vs_ref.object->line,
           fmt::format("{} declares no protocol (no port name like 'http-*' and no "
                       "appProtocol): as in Istio, its connections are sniffed; spec.http "
                       "applies per request to those that start with an HTTP/1.x request "
                       "line, and {} to the rest",
                       where, has(RouteSection::kTcp) ? "spec.tcp" : "the Service's endpoints"));
    }
    if (section == RouteSection::kTls) {
      if (has(RouteSection::kTcp) || has(RouteSection::kHttp)) {
        note(vs_ref, Severity::kInfo, "spec", vs_ref.object->line,
             fmt::format("{} is a TLS port ({}): as in Istio, spec.http and spec.tcp routes do "
                         "not apply to it",
                         where, protocol));
      }
      return nullptr;
    }
    RouteSection other = section == RouteSection::kHttp ? RouteSection::kTcp : RouteSection::kHttp;
    if (has(other) && !has(section) && !protocol.empty()) {
      note(vs_ref, Severity::kInfo, fmt::format("spec.{}", sectionName(other)), vs_ref.object->line,
           fmt::format("{} is {} ({}): as in Istio, spec.{} routes do not apply to it, so its "
                       "connections go to the Service's own endpoints",
                       where, section == RouteSection::kHttp ? "an HTTP port" : "a TCP port",
                       protocol.empty() ? "no protocol declared" : protocol, sectionName(other)));
    }
    const VsRoute* skipped = nullptr;
    std::string skipped_why;
    bool quiet = section == RouteSection::kHttp && per_request;
    for (const auto& route : vs.routes) {
      if (route.section != section || route.rejected || !route.sidecar) continue;
      if (!route.action.empty()) {
        if (skipped == nullptr) {
          skipped = &route;
          skipped_why = fmt::format("its {} is not applied yet", route.action);
        }
        continue;
      }
      if (matchesPort(route, port.port)) {
        if (quiet) return &route;
        if (skipped != nullptr) {
          note(vs_ref, Severity::kWarning, skipped->field, skipped->line,
               fmt::format("{}: this route is skipped for {}, so requests it would take follow "
                           "{}",
                           skipped_why, where, route.field));
        }
        if (section == RouteSection::kHttp) {
          note(vs_ref, Severity::kWarning, route.field, route.line,
               fmt::format("is applied per connection on {}, not per request: a client that "
                           "keeps its connection open sends every request to the subset picked "
                           "for that connection ({} is not parsed per request)",
                           where, protocol));
        }
        return &route;
      }
      if (!route.l7_match.empty() && skipped == nullptr) {
        skipped = &route;
        skipped_why = fmt::format("matching on {} is not applied yet", route.l7_match);
      }
    }
    if (skipped != nullptr && !quiet) {
      note(vs_ref, Severity::kWarning, skipped->field, skipped->line,
           fmt::format("{}: this route is skipped for {}, so requests it would take go to the "
                       "Service's own endpoints",
                       skipped_why, where));
    }
    return nullptr;
  }

  routing::ServicePortEntry buildPort(const ServiceInfo& service, size_t p) {
    const ServicePortSpec& port = service.spec->ports[p];
    routing::ServicePortEntry entry;
    entry.port.service = service.key;
    entry.port.port = port.port;
    entry.port.name = port.name;
    entry.port.app_protocol = port.app_protocol;
    std::string protocol = portProtocol(port.name, port.app_protocol);
    entry.port.protocol = protocol.empty() ? "auto" : protocol;
    entry.cluster_ips = service.spec->cluster_ips;
    entry.endpoints = service.lists[p];

    SubsetKeys keys;
    const VsRoute* route = routeFor(service, port, protocol);
    if (route == nullptr) {
      routing::Subset all;
      applyPolicy(effectivePolicy(service, nullptr, port.port), all);
      all.endpoints = service.lists[p];
      entry.port.subsets.push_back(std::move(all));
      entry.port.route.push_back({0, 100});
      keys.push_back({&service, p, ""});
    } else {
      uint64_t total = 0;
      for (const auto& dest : route->destinations) total += dest.weight;
      for (size_t d = 0; d < route->destinations.size(); ++d) {
        const RouteDestination& dest = route->destinations[d];
        std::string field = fmt::format("{}.route[{}].destination", route->field, d);
        uint32_t index = subsetFor(service, port, dest, field, dest.weight, total, keys, entry);
        if (dest.weight > 0) entry.port.route.push_back({index, dest.weight});
      }
    }
    if (service.virtual_service && perRequestProtocol(protocol)) {
      buildHttpRoutes(service, port, keys, entry);
    }
    return entry;
  }

  // The subsets a ServicePort holds, by what they stand for, so that routes naming the same
  // destination share one subset.
  struct SubsetKey {
    const ServiceInfo* service;
    size_t port;
    std::string subset;
  };
  using SubsetKeys = std::vector<SubsetKey>;

  // The index in entry.port.subsets of a route's (or mirror's) destination, adding it first.
  uint32_t subsetFor(const ServiceInfo& service, const ServicePortSpec& port,
                     const RouteDestination& dest, const std::string& field, uint32_t weight,
                     uint64_t total, SubsetKeys& keys, routing::ServicePortEntry& entry) {
    const ServiceInfo* target =
        resolveHost(dest.host, service.virtual_service.object->namespace_name);
    size_t target_port = destinationPort(service, port, *target, dest);
    auto existing = std::find_if(keys.begin(), keys.end(), [&](const SubsetKey& k) {
      return k.service == target && k.port == target_port && k.subset == dest.subset;
    });
    if (existing != keys.end()) return static_cast<uint32_t>(existing - keys.begin());
    entry.port.subsets.push_back(
        buildSubset(service, *target, target_port, dest, field, weight, total));
    keys.push_back({target, target_port, dest.subset});
    return static_cast<uint32_t>(keys.size() - 1);
  }

  // spec.http[] as per-request routes for an HTTP/1.1 (or sniffed) port, in order: the
  // routes whose matches can hold on this port, with their destinations resolved to subsets.
  void buildHttpRoutes(const ServiceInfo& service, const ServicePortSpec& port, SubsetKeys& keys,
                       routing::ServicePortEntry& entry) {
    const Ref& vs_ref = service.virtual_service;
    const auto& vs = std::get<VirtualServiceSpec>(vs_ref.object->spec);
    int first_line = vs_ref.placement->first_line;
    for (const VsRoute& r : vs.routes) {
      if (r.section != RouteSection::kHttp || r.rejected || !r.sidecar || r.http == nullptr) {
        continue;
      }
      // The field table reports delegation as not applied, once per VirtualService.
      if (r.action == "delegate") continue;
      routing::HttpRoute route = *r.http;
      route.line = first_line + r.line + 1;
      if (!route.matches.empty()) {
        // Istio drops match entries for another port; a route left with none is not on it.
        std::erase_if(route.matches, [&](const routing::HttpMatch& m) {
          return m.port != 0 && m.port != port.port;
        });
        if (route.matches.empty()) continue;
        for (auto& m : route.matches) {
          m.line = first_line + m.line + 1;
          // The client is this proxy's workload: its source conditions are decided now.
          if (m.source_labels.empty() && m.source_namespace.empty()) continue;
          std::optional<Labels> labels;
          if (!m.source_labels.empty()) labels = m.source_labels;
          std::optional<std::string> ns;
          if (!m.source_namespace.empty()) ns = m.source_namespace;
          m.source = sourceHolds(labels, ns) ? routing::HttpMatch::Source::kHolds
                                             : routing::HttpMatch::Source::kNever;
        }
      }
      uint64_t total = 0;
      for (const auto& dest : r.destinations) total += dest.weight;
      for (size_t d = 0; d < r.destinations.size() && d < route.destinations.size(); ++d) {
        const RouteDestination& dest = r.destinations[d];
        std::string field = fmt::format("{}.route[{}].destination", r.field, d);
        routing::HttpRouteDestination& out = route.destinations[d];
        out.destination.host = dest.host;
        out.destination.subset_name = dest.subset;
        out.destination.subset_index =
            subsetFor(service, port, dest, field, dest.weight, total, keys, entry);
        out.weight = dest.weight;
      }
      for (size_t m = 0; m < r.mirrors.size() && m < route.mirrors.size(); ++m) {
        route.mirrors[m].destination.subset_index = subsetFor(
            service, port, r.mirrors[m].destination, r.mirrors[m].field, 0, 0, keys, entry);
      }
      entry.port.http_routes.push_back(std::move(route));
    }
  }

  // Which of the target's ports a destination means: its port.number, else the same port
  // (the port itself when the target is the service, the only port, or the same number).
  static size_t destinationPort(const ServiceInfo& self, const ServicePortSpec& port,
                                const ServiceInfo& target, const RouteDestination& dest) {
    const auto& ports = target.spec->ports;
    uint16_t wanted = dest.port != 0 ? dest.port : port.port;
    if (dest.port == 0 && &target == &self) return static_cast<size_t>(&port - ports.data());
    for (size_t i = 0; i < ports.size(); ++i) {
      if (ports[i].port == wanted) return i;
    }
    return 0;
  }

  routing::Subset buildSubset(const ServiceInfo& self, const ServiceInfo& target,
                              size_t target_port, const RouteDestination& dest,
                              const std::string& field, uint32_t weight, uint64_t total) {
    const Ref& vs = self.virtual_service;
    routing::Subset subset;
    bool same = &target == &self;
    subset.name =
        same ? dest.subset
             : (dest.subset.empty() ? target.key : fmt::format("{}/{}", target.key, dest.subset));
    const routing::EndpointList endpoints =
        target.lists.empty() ? routing::EndpointList{} : target.lists[target_port];
    uint16_t port_number = target.spec->ports.empty() ? 0 : target.spec->ports[target_port].port;
    if (dest.subset.empty()) {
      applyPolicy(effectivePolicy(target, nullptr, port_number), subset);
      subset.endpoints = endpoints;
      return subset;
    }
    const MergedSubset& merged = *findSubset(target, dest.subset);
    const SubsetSpec* spec = merged.spec;
    applyPolicy(effectivePolicy(target, spec, port_number), subset);
    subset.endpoints = target.pool.subset(endpoints, *spec);
    if (!subset.endpoints.empty() || weight == 0) return subset;
    std::string share = fmt::format(
        "its {:.4g}% share goes to the other destinations (Istio would answer 503 for it)",
        100.0 * weight / static_cast<double>(total == 0 ? 1 : total));
    bool any_workload = std::any_of(target.workloads.begin(), target.workloads.end(),
                                    [&](const Labels* l) { return labelsMatch(spec->labels, *l); });
    if (any_workload) return subset;  // matching pods exist, just not ready now
    std::string cause;
    if (target.slice_without_pods) {
      cause = fmt::format(
          "EndpointSlice endpoints carry no pod labels: subset {} ({}) needs the "
          "Pods named in targetRef; include them",
          spec->name, labelsText(spec->labels));
    } else {
      cause = fmt::format("subset '{}' ({}) matches none of {}'s pods", spec->name,
                          labelsText(spec->labels), target.key);
    }
    note(merged.rule, Severity::kWarning, fmt::format("spec.subsets[{}].labels", merged.index),
         spec->line,
         fmt::format("{}; as routed by VirtualService {} ({}), {}", cause, vs.id(), field, share));
    return subset;
  }

  const std::vector<PlacedDocument>& documents_;
  routing::ProxySettings settings_;
  std::vector<Finding> findings_;
  const HostResolver& resolve_;
  std::vector<Ref> service_refs_;
  std::vector<Ref> pods_;                        // Pods, then WorkloadEntries
  ViewMap<std::vector<Ref>> slices_;             // by (service name, namespace)
  ViewMap<std::vector<Ref>> endpoints_objects_;  // core/v1 Endpoints, the same way
  std::vector<Ref> virtual_services_;
  std::vector<Ref> destination_rules_;
  // DestinationRules whose trafficPolicy (tls included) does not apply to this proxy.
  std::unordered_set<const Object*> unapplied_policies_;
  std::vector<Ref> service_entries_;
  std::vector<Ref> workload_entries_;
  Ref proxy_config_;
  ViewMap<uint32_t> pods_by_name_;                // (namespace, name)
  ViewMap<std::vector<uint32_t>> pods_by_label_;  // (namespace, key, value)
  std::unordered_map<SocketAddress, Ref, routing::SocketAddressHash> vips_;
  std::deque<ServiceSpec> owned_specs_;  // ServiceEntries' ports and VIPs, in Service form
  std::vector<ServiceInfo> services_;
  ViewMap<uint32_t> services_by_key_;                           // (name, namespace)
  std::unordered_map<std::string, uint32_t> services_by_host_;  // ServiceEntry hosts
};

}  // namespace

bool perRequestProtocol(std::string_view protocol) {
  return protocol == "HTTP" || protocol.empty();
}

std::string portProtocol(std::string_view name, std::string_view app_protocol) {
  static const std::map<std::string, std::string, std::less<>> kByName = {
      {"http", "HTTP"},
      {"http2", "HTTP2"},
      {"h2c", "HTTP2"},
      {"grpc", "GRPC"},
      {"grpc-web", "GRPC-WEB"},
      {"https", "HTTPS"},
      {"tls", "TLS"},
      {"tcp", "TCP"},
      {"mongo", "MONGO"},
      {"mysql", "MYSQL"},
      {"redis", "REDIS"},
      {"udp", "UDP"},
      {"kubernetes.io/h2c", "HTTP2"},
      {"kubernetes.io/ws", "HTTP"},
      {"kubernetes.io/wss", "HTTPS"},
  };
  if (!app_protocol.empty()) {
    if (auto it = kByName.find(lower(app_protocol)); it != kByName.end()) return it->second;
  }
  std::string n = lower(name);
  if (n.rfind("grpc-web", 0) == 0) return "GRPC-WEB";
  std::string prefix = n.substr(0, n.find('-'));
  if (auto it = kByName.find(prefix); it != kByName.end()) return it->second;
  return "";
}

bool isHttpProtocol(std::string_view p) {
  return p == "HTTP" || p == "HTTP2" || p == "GRPC" || p == "GRPC-WEB";
}

bool isTlsProtocol(std::string_view p) { return p == "HTTPS" || p == "TLS"; }

Finding makeFinding(Severity severity, const Placement& placement, const Object& object,
                    std::string_view field, int relative_line, std::string_view message) {
  Finding f;
  f.severity = severity;
  f.kind = toString(object.kind);
  f.namespace_name = object.kind == Kind::kNamespace ? "" : object.namespace_name;
  f.name = object.name;
  f.field = std::string(field);
  f.line = placement.first_line + relative_line + 1;
  f.text = describeError(placement, object.item, f.kind, f.namespace_name, f.name, field,
                         relative_line, message);
  return f;
}

Result<std::shared_ptr<const routing::RouteTable>> buildRouteTable(
    const std::vector<PlacedDocument>& documents, uint64_t generation,
    const routing::ProxySettings& base, std::vector<Finding> findings,
    const HostResolver& resolve) {
  return Builder(documents, base, std::move(findings), resolve).build(generation);
}

}  // namespace remora::config
