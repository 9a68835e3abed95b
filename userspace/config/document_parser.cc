#include "config/document_parser.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <initializer_list>

#include "config/duration.h"

namespace remora::config {
namespace {

using routing::LbPolicy;
using routing::OutboundPolicy;

// The object being parsed, so every error names it.
struct Context {
  explicit Context(const Placement& p, int i = -1) : placement(p), item(i) {}

  const Placement& placement;
  int item = -1;
  std::string kind;
  std::string namespace_name;
  std::string name;

  Error error(std::string_view field, int line, std::string_view what) const {
    return makeError(describeError(placement, item, kind, namespace_name, name, field, line, what));
  }
};

bool present(const YAML::Node& node) { return node.IsDefined() && !node.IsNull(); }

int lineOf(const YAML::Node& node, int fallback) {
  if (!node.IsDefined()) return fallback;
  int line = node.Mark().line;
  return line < 0 ? fallback : line;
}

// A mapping's entries, read once: yaml-cpp's operator[] converts every key it compares, which
// dominates parse time on large files.
class Fields {
 public:
  explicit Fields(const YAML::Node& map) {
    entries_.reserve(map.size());
    for (auto it = map.begin(); it != map.end(); ++it) {
      // The key's text lives in the document's node memory, which outlives this object.
      entries_.push_back({it->first.Scalar(), it->second});
    }
  }

  YAML::Node get(std::string_view key) const {
    for (const auto& e : entries_) {
      if (e.key == key) return e.value;
    }
    return YAML::Node();
  }

  // The first key outside `known`, for Remora's own kinds, where a typo must not pass silently.
  std::optional<std::pair<std::string_view, YAML::Node>> unknownKey(
      std::initializer_list<std::string_view> known) const {
    for (const auto& e : entries_) {
      if (std::find(known.begin(), known.end(), e.key) == known.end()) {
        return std::make_pair(e.key, e.value);
      }
    }
    return std::nullopt;
  }

 private:
  struct Entry {
    std::string_view key;
    YAML::Node value;
  };
  std::vector<Entry> entries_;
};

std::string shown(const YAML::Node& node) {
  if (node.IsScalar()) return fmt::format("'{}'", node.Scalar());
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  return "nothing";
}

Result<std::string> readString(const Context& ctx, const YAML::Node& node, std::string_view field,
                               int line, bool required) {
  if (!present(node)) {
    if (required) return ctx.error(field, line, "is required");
    return std::string();
  }
  if (!node.IsScalar()) {
    return ctx.error(field, lineOf(node, line),
                     fmt::format("must be a string, got {}", shown(node)));
  }
  if (required && node.Scalar().empty()) return ctx.error(field, lineOf(node, line), "is empty");
  return node.Scalar();
}

Result<int64_t> readInt(const Context& ctx, const YAML::Node& node, std::string_view field,
                        int line) {
  if (!present(node)) return ctx.error(field, line, "is required");
  int l = lineOf(node, line);
  if (!node.IsScalar()) {
    return ctx.error(field, l, fmt::format("must be an integer, got {}", shown(node)));
  }
  const std::string& s = node.Scalar();
  int64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    return ctx.error(field, l, fmt::format("must be an integer, got '{}'", s));
  }
  return value;
}

Result<uint16_t> readPort(const Context& ctx, const YAML::Node& node, std::string_view field,
                          int line) {
  auto value = readInt(ctx, node, field, line);
  if (!value) return value.error();
  if (*value < 1 || *value > 65535) {
    return ctx.error(field, lineOf(node, line),
                     fmt::format("must be a port in 1..65535, got {}", *value));
  }
  return static_cast<uint16_t>(*value);
}

Result<bool> readBool(const Context& ctx, const YAML::Node& node, std::string_view field,
                      int line) {
  auto text = readString(ctx, node, field, line, true);
  if (!text) return text.error();
  if (*text == "true" || *text == "True" || *text == "TRUE") return true;
  if (*text == "false" || *text == "False" || *text == "FALSE") return false;
  return ctx.error(field, lineOf(node, line),
                   fmt::format("must be true or false, got '{}'", *text));
}

Result<IpAddress> readIp(const Context& ctx, const YAML::Node& node, std::string_view field,
                         int line) {
  auto text = readString(ctx, node, field, line, true);
  if (!text) return text.error();
  auto ip = IpAddress::parse(*text);
  if (!ip) return ctx.error(field, lineOf(node, line), ip.error().message);
  return *ip;
}

Result<void> requireMap(const Context& ctx, const YAML::Node& node, std::string_view field,
                        int line) {
  if (!present(node)) return ctx.error(field, line, "is required");
  if (!node.IsMap()) {
    return ctx.error(field, lineOf(node, line),
                     fmt::format("must be a mapping, got {}", shown(node)));
  }
  return {};
}

// An optional list: absent or null is empty, anything but a sequence is an error.
Result<void> optionalSequence(const Context& ctx, const YAML::Node& node, std::string_view field,
                              int line) {
  if (present(node) && !node.IsSequence()) {
    return ctx.error(field, lineOf(node, line), fmt::format("must be a list, got {}", shown(node)));
  }
  return {};
}

Result<Labels> readLabels(const Context& ctx, const YAML::Node& node, std::string_view field,
                          int line) {
  Labels labels;
  if (!present(node)) return labels;
  if (!node.IsMap()) {
    return ctx.error(field, lineOf(node, line),
                     fmt::format("must be a mapping, got {}", shown(node)));
  }
  labels.reserve(node.size());
  for (auto it = node.begin(); it != node.end(); ++it) {
    const YAML::Node& value = it->second;
    if (present(value) && !value.IsScalar()) {
      return ctx.error(fmt::format("{}.{}", field, it->first.Scalar()), lineOf(value, line),
                       "a label value must be a string");
    }
    labels.emplace_back(it->first.Scalar(), present(value) ? value.Scalar() : std::string());
  }
  std::sort(labels.begin(), labels.end());
  return labels;
}

// TCP unless stated; UDP and SCTP ports are valid Kubernetes but not the proxy's business.
Result<bool> readIsTcp(const Context& ctx, const YAML::Node& node, std::string_view field,
                       int line) {
  auto protocol = readString(ctx, node, field, line, false);
  if (!protocol) return protocol.error();
  if (protocol->empty() || *protocol == "TCP") return true;
  if (*protocol == "UDP" || *protocol == "SCTP") return false;
  return ctx.error(field, lineOf(node, line),
                   fmt::format("must be TCP, UDP or SCTP, got '{}'", *protocol));
}

Result<std::optional<LbPolicy>> readLoadBalancer(const Context& ctx, const YAML::Node& traffic,
                                                 const std::string& field, int line) {
  if (!present(traffic)) return std::optional<LbPolicy>();
  if (auto r = requireMap(ctx, traffic, field, line); !r) return r.error();
  YAML::Node lb = Fields(traffic).get("loadBalancer");
  std::string lb_field = field + ".loadBalancer";
  if (!present(lb)) return std::optional<LbPolicy>();
  if (auto r = requireMap(ctx, lb, lb_field, lineOf(traffic, line)); !r) return r.error();
  YAML::Node simple = Fields(lb).get("simple");
  // consistentHash and locality settings are not implemented; they leave the default.
  if (!present(simple)) return std::optional<LbPolicy>();
  auto name = readString(ctx, simple, lb_field + ".simple", lineOf(lb, line), true);
  if (!name) return name.error();
  if (*name == "ROUND_ROBIN") return std::optional(LbPolicy::kRoundRobin);
  if (*name == "RANDOM") return std::optional(LbPolicy::kRandom);
  if (*name == "LEAST_REQUEST" || *name == "LEAST_CONN") {
    return std::optional(LbPolicy::kLeastRequest);
  }
  if (*name == "UNSPECIFIED") return std::optional<LbPolicy>();
  return ctx.error(lb_field + ".simple", lineOf(simple, line),
                   fmt::format("'{}' is not supported; use ROUND_ROBIN, RANDOM or LEAST_REQUEST "
                               "(LEAST_CONN)",
                               *name));
}

Result<void> parseService(const Context& ctx, const Fields& top, int line, Object& out) {
  ServiceSpec spec;
  YAML::Node spec_node = top.get("spec");
  if (auto r = requireMap(ctx, spec_node, "spec", line); !r) return r.error();
  int spec_line = lineOf(spec_node, line);
  Fields f(spec_node);

  YAML::Node type_node = f.get("type");
  auto type = readString(ctx, type_node, "spec.type", spec_line, false);
  if (!type) return type.error();
  if (*type == "ExternalName") {
    // A DNS alias: no addresses to intercept and no endpoints to balance.
    out.spec = std::move(spec);
    return {};
  }
  if (!type->empty() && *type != "ClusterIP" && *type != "NodePort" && *type != "LoadBalancer") {
    return ctx.error("spec.type", lineOf(type_node, spec_line),
                     fmt::format("unknown Service type '{}'", *type));
  }

  auto add_ip = [&](const YAML::Node& node, const std::string& field) -> Result<void> {
    auto text = readString(ctx, node, field, spec_line, false);
    if (!text) return text.error();
    // "None" is a headless Service: only its pod addresses are matched.
    if (text->empty() || *text == "None") return {};
    auto ip = readIp(ctx, node, field, spec_line);
    if (!ip) return ip.error();
    if (std::find(spec.cluster_ips.begin(), spec.cluster_ips.end(), *ip) ==
        spec.cluster_ips.end()) {
      spec.cluster_ips.push_back(*ip);
    }
    return {};
  };
  if (auto r = add_ip(f.get("clusterIP"), "spec.clusterIP"); !r) return r.error();
  YAML::Node ips = f.get("clusterIPs");
  if (auto r = optionalSequence(ctx, ips, "spec.clusterIPs", spec_line); !r) return r.error();
  if (present(ips)) {
    size_t i = 0;
    for (const auto& ip : ips) {
      if (auto r = add_ip(ip, fmt::format("spec.clusterIPs[{}]", i++)); !r) return r.error();
    }
  }

  YAML::Node ports = f.get("ports");
  if (!present(ports) || (ports.IsSequence() && ports.size() == 0)) {
    return ctx.error("spec.ports", lineOf(ports, spec_line), "is required: a Service needs a port");
  }
  if (auto r = optionalSequence(ctx, ports, "spec.ports", spec_line); !r) return r.error();
  size_t i = 0;
  for (const auto& port_node : ports) {
    std::string field = fmt::format("spec.ports[{}]", i++);
    if (auto r = requireMap(ctx, port_node, field, spec_line); !r) return r.error();
    int port_line = lineOf(port_node, spec_line);
    Fields pf(port_node);
    ServicePortSpec port;
    port.line = port_line;
    auto name = readString(ctx, pf.get("name"), field + ".name", port_line, false);
    if (!name) return name.error();
    port.name = std::move(*name);
    auto number = readPort(ctx, pf.get("port"), field + ".port", port_line);
    if (!number) return number.error();
    port.port = *number;
    auto tcp = readIsTcp(ctx, pf.get("protocol"), field + ".protocol", port_line);
    if (!tcp) return tcp.error();
    auto app_protocol =
        readString(ctx, pf.get("appProtocol"), field + ".appProtocol", port_line, false);
    if (!app_protocol) return app_protocol.error();
    port.app_protocol = std::move(*app_protocol);

    YAML::Node target = pf.get("targetPort");
    if (!present(target)) {
      port.target_number = port.port;
    } else {
      auto text = readString(ctx, target, field + ".targetPort", port_line, true);
      if (!text) return text.error();
      bool numeric =
          std::all_of(text->begin(), text->end(), [](char c) { return c >= '0' && c <= '9'; });
      if (numeric) {
        auto target_number = readPort(ctx, target, field + ".targetPort", port_line);
        if (!target_number) return target_number.error();
        port.target_number = *target_number;
      } else {
        port.target_name = std::move(*text);
      }
    }
    if (*tcp) spec.ports.push_back(std::move(port));
  }

  auto selector = readLabels(ctx, f.get("selector"), "spec.selector", spec_line);
  if (!selector) return selector.error();
  spec.selector = std::move(*selector);
  out.spec = std::move(spec);
  return {};
}

Result<void> parsePod(const Context& ctx, const Fields& top, int line, Object& out) {
  PodSpec spec;
  YAML::Node spec_node = top.get("spec");
  if (present(spec_node)) {
    if (auto r = requireMap(ctx, spec_node, "spec", line); !r) return r.error();
    int spec_line = lineOf(spec_node, line);
    YAML::Node containers = Fields(spec_node).get("containers");
    if (auto r = optionalSequence(ctx, containers, "spec.containers", spec_line); !r)
      return r.error();
    size_t c = 0;
    for (const auto& container : present(containers) ? containers : YAML::Node()) {
      std::string field = fmt::format("spec.containers[{}]", c++);
      if (auto r = requireMap(ctx, container, field, spec_line); !r) return r.error();
      int container_line = lineOf(container, spec_line);
      YAML::Node ports = Fields(container).get("ports");
      if (auto r = optionalSequence(ctx, ports, field + ".ports", container_line); !r)
        return r.error();
      size_t p = 0;
      for (const auto& port : present(ports) ? ports : YAML::Node()) {
        std::string pfield = fmt::format("{}.ports[{}]", field, p++);
        if (auto r = requireMap(ctx, port, pfield, container_line); !r) return r.error();
        int port_line = lineOf(port, container_line);
        Fields pf(port);
        auto number = readPort(ctx, pf.get("containerPort"), pfield + ".containerPort", port_line);
        if (!number) return number.error();
        auto name = readString(ctx, pf.get("name"), pfield + ".name", port_line, false);
        if (!name) return name.error();
        auto tcp = readIsTcp(ctx, pf.get("protocol"), pfield + ".protocol", port_line);
        if (!tcp) return tcp.error();
        if (*tcp && !name->empty()) spec.named_ports.emplace_back(std::move(*name), *number);
      }
    }
  }

  YAML::Node status = top.get("status");
  bool has_conditions = false;
  bool ready_condition = false;
  bool terminal = false;
  if (present(status)) {
    if (auto r = requireMap(ctx, status, "status", line); !r) return r.error();
    int status_line = lineOf(status, line);
    Fields sf(status);
    auto add_ip = [&](const YAML::Node& node, const std::string& field) -> Result<void> {
      auto ip = readIp(ctx, node, field, status_line);
      if (!ip) return ip.error();
      if (std::find(spec.ips.begin(), spec.ips.end(), *ip) == spec.ips.end())
        spec.ips.push_back(*ip);
      return {};
    };
    if (YAML::Node ip = sf.get("podIP"); present(ip)) {
      if (auto r = add_ip(ip, "status.podIP"); !r) return r.error();
    }
    YAML::Node ips = sf.get("podIPs");
    if (auto r = optionalSequence(ctx, ips, "status.podIPs", status_line); !r) return r.error();
    size_t i = 0;
    for (const auto& entry : present(ips) ? ips : YAML::Node()) {
      std::string field = fmt::format("status.podIPs[{}]", i++);
      if (auto r = requireMap(ctx, entry, field, status_line); !r) return r.error();
      if (auto r = add_ip(Fields(entry).get("ip"), field + ".ip"); !r) return r.error();
    }
    auto phase = readString(ctx, sf.get("phase"), "status.phase", status_line, false);
    if (!phase) return phase.error();
    terminal = *phase == "Succeeded" || *phase == "Failed";
    YAML::Node conditions = sf.get("conditions");
    if (auto r = optionalSequence(ctx, conditions, "status.conditions", status_line); !r) {
      return r.error();
    }
    size_t k = 0;
    for (const auto& condition : present(conditions) ? conditions : YAML::Node()) {
      std::string field = fmt::format("status.conditions[{}]", k++);
      if (auto r = requireMap(ctx, condition, field, status_line); !r) return r.error();
      has_conditions = true;
      int condition_line = lineOf(condition, status_line);
      Fields cf(condition);
      auto type = readString(ctx, cf.get("type"), field + ".type", condition_line, true);
      if (!type) return type.error();
      if (*type != "Ready") continue;
      auto value = readString(ctx, cf.get("status"), field + ".status", condition_line, true);
      if (!value) return value.error();
      ready_condition = *value == "True";
    }
  }
  // Hand-written Pods rarely carry conditions; one with an address is taken as running. When
  // conditions are given they decide, as they do for the endpoints controller.
  bool deleting = false;
  if (YAML::Node meta = top.get("metadata"); meta.IsMap()) {
    deleting = present(Fields(meta).get("deletionTimestamp"));
  }
  spec.ready =
      !spec.ips.empty() && !terminal && !deleting && (has_conditions ? ready_condition : true);
  out.spec = std::move(spec);
  return {};
}

Result<void> parseEndpointSlice(const Context& ctx, const Fields& top, int line, Object& out) {
  EndpointSliceSpec spec;
  auto service = std::find_if(out.labels.begin(), out.labels.end(), [](const auto& label) {
    return label.first == "kubernetes.io/service-name";
  });
  if (service == out.labels.end() || service->second.empty()) {
    return ctx.error("metadata.labels[\"kubernetes.io/service-name\"]", line,
                     "is required: it names the Service this slice belongs to");
  }
  spec.service = service->second;

  auto address_type = readString(ctx, top.get("addressType"), "addressType", line, false);
  if (!address_type) return address_type.error();
  if (!address_type->empty() && *address_type != "IPv4" && *address_type != "IPv6" &&
      *address_type != "FQDN") {
    return ctx.error("addressType", line,
                     fmt::format("must be IPv4, IPv6 or FQDN, got '{}'", *address_type));
  }
  // FQDN endpoints would need DNS; the slice still counts as the Service's endpoint source.
  bool fqdn = *address_type == "FQDN";

  YAML::Node endpoints = top.get("endpoints");
  if (auto r = optionalSequence(ctx, endpoints, "endpoints", line); !r) return r.error();
  size_t i = 0;
  for (const auto& node : present(endpoints) ? endpoints : YAML::Node()) {
    std::string field = fmt::format("endpoints[{}]", i++);
    if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
    int endpoint_line = lineOf(node, line);
    Fields ef(node);
    YAML::Node addresses = ef.get("addresses");
    if (!present(addresses) || !addresses.IsSequence() || addresses.size() == 0) {
      return ctx.error(field + ".addresses", lineOf(addresses, endpoint_line),
                       "is required: a list of at least one address");
    }
    if (fqdn) continue;
    SliceEndpoint endpoint;
    auto address = readIp(ctx, addresses[0], field + ".addresses[0]", endpoint_line);
    if (!address) return address.error();
    endpoint.address = *address;
    if (YAML::Node conditions = ef.get("conditions"); present(conditions)) {
      if (auto r = requireMap(ctx, conditions, field + ".conditions", endpoint_line); !r) {
        return r.error();
      }
      // An unset ready condition means ready, per the EndpointSlice API.
      if (YAML::Node ready = Fields(conditions).get("ready"); present(ready)) {
        auto value = readBool(ctx, ready, field + ".conditions.ready", endpoint_line);
        if (!value) return value.error();
        endpoint.ready = *value;
      }
    }
    if (YAML::Node ref = ef.get("targetRef"); present(ref)) {
      if (auto r = requireMap(ctx, ref, field + ".targetRef", endpoint_line); !r) return r.error();
      Fields rf(ref);
      auto kind = readString(ctx, rf.get("kind"), field + ".targetRef.kind", endpoint_line, false);
      if (!kind) return kind.error();
      if (kind->empty() || *kind == "Pod") {
        auto name =
            readString(ctx, rf.get("name"), field + ".targetRef.name", endpoint_line, false);
        if (!name) return name.error();
        auto ns = readString(ctx, rf.get("namespace"), field + ".targetRef.namespace",
                             endpoint_line, false);
        if (!ns) return ns.error();
        endpoint.pod_name = std::move(*name);
        endpoint.pod_namespace = ns->empty() ? out.namespace_name : std::move(*ns);
      }
    }
    spec.endpoints.push_back(std::move(endpoint));
  }

  YAML::Node ports = top.get("ports");
  if (auto r = optionalSequence(ctx, ports, "ports", line); !r) return r.error();
  size_t p = 0;
  for (const auto& node : present(ports) ? ports : YAML::Node()) {
    std::string field = fmt::format("ports[{}]", p++);
    if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
    int port_line = lineOf(node, line);
    Fields pf(node);
    auto tcp = readIsTcp(ctx, pf.get("protocol"), field + ".protocol", port_line);
    if (!tcp) return tcp.error();
    auto name = readString(ctx, pf.get("name"), field + ".name", port_line, false);
    if (!name) return name.error();
    // A null port means "all ports", which only matters for selector-less pass-through.
    if (!present(pf.get("port"))) continue;
    auto number = readPort(ctx, pf.get("port"), field + ".port", port_line);
    if (!number) return number.error();
    if (*tcp) spec.ports.push_back({std::move(*name), *number});
  }
  out.spec = std::move(spec);
  return {};
}

// Ports of a route's `match` entries that name nothing but a port; a route whose matches need
// more (headers, URIs, source labels) cannot be decided at L4.
Result<void> readMatches(const Context& ctx, const YAML::Node& match, const std::string& field,
                         int line, VsRoute& route) {
  if (auto r = optionalSequence(ctx, match, field, line); !r) return r.error();
  if (!present(match)) return {};
  size_t i = 0;
  for (const auto& entry : match) {
    std::string efield = fmt::format("{}[{}]", field, i++);
    route.has_match = true;
    if (auto r = requireMap(ctx, entry, efield, line); !r) return r.error();
    Fields mf(entry);
    if (mf.unknownKey({"port"})) continue;
    auto port = readPort(ctx, mf.get("port"), efield + ".port", lineOf(entry, line));
    if (!port) return port.error();
    route.match_ports.push_back(*port);
  }
  return {};
}

Result<void> parseVirtualService(const Context& ctx, const Fields& top, int line, Object& out) {
  VirtualServiceSpec spec;
  YAML::Node spec_node = top.get("spec");
  if (auto r = requireMap(ctx, spec_node, "spec", line); !r) return r.error();
  int spec_line = lineOf(spec_node, line);
  Fields f(spec_node);

  YAML::Node hosts = f.get("hosts");
  if (!present(hosts) || !hosts.IsSequence() || hosts.size() == 0) {
    return ctx.error("spec.hosts", lineOf(hosts, spec_line), "is required: a list of hosts");
  }
  size_t h = 0;
  for (const auto& host : hosts) {
    std::string field = fmt::format("spec.hosts[{}]", h++);
    auto text = readString(ctx, host, field, spec_line, true);
    if (!text) return text.error();
    spec.hosts.push_back({std::move(*text), lineOf(host, spec_line)});
  }

  // A VirtualService bound to gateways only does not apply to sidecars.
  YAML::Node gateways = f.get("gateways");
  if (auto r = optionalSequence(ctx, gateways, "spec.gateways", spec_line); !r) return r.error();
  if (present(gateways) && gateways.size() > 0) {
    bool mesh = false;
    for (const auto& g : gateways) mesh = mesh || (g.IsScalar() && g.Scalar() == "mesh");
    if (!mesh) {
      out.spec = std::move(spec);
      return {};
    }
  }

  for (const char* section : {"tcp", "http"}) {
    YAML::Node routes = f.get(section);
    std::string sfield = fmt::format("spec.{}", section);
    if (auto r = optionalSequence(ctx, routes, sfield, spec_line); !r) return r.error();
    size_t i = 0;
    for (const auto& node : present(routes) ? routes : YAML::Node()) {
      std::string field = fmt::format("{}[{}]", sfield, i++);
      if (auto r = requireMap(ctx, node, field, spec_line); !r) return r.error();
      int route_line = lineOf(node, spec_line);
      Fields rf(node);
      VsRoute route;
      route.field = field;
      route.tcp = std::string_view(section) == "tcp";
      route.line = route_line;
      if (auto r = readMatches(ctx, rf.get("match"), field + ".match", route_line, route); !r) {
        return r.error();
      }
      YAML::Node destinations = rf.get("route");
      if (!present(destinations)) {
        // redirect / directResponse: HTTP-only behaviour with nothing to connect to.
        if (!route.tcp) continue;
        return ctx.error(field + ".route", route_line, "is required: a list of destinations");
      }
      if (!destinations.IsSequence() || destinations.size() == 0) {
        return ctx.error(field + ".route", lineOf(destinations, route_line),
                         "must be a non-empty list of destinations");
      }
      size_t d = 0;
      bool single = destinations.size() == 1;
      int64_t sum = 0;
      for (const auto& dnode : destinations) {
        std::string dfield = fmt::format("{}.route[{}]", field, d++);
        if (auto r = requireMap(ctx, dnode, dfield, route_line); !r) return r.error();
        int dline = lineOf(dnode, route_line);
        Fields df(dnode);
        RouteDestination dest;
        dest.line = dline;
        YAML::Node destination = df.get("destination");
        if (auto r = requireMap(ctx, destination, dfield + ".destination", dline); !r) {
          return r.error();
        }
        Fields dsf(destination);
        auto host = readString(ctx, dsf.get("host"), dfield + ".destination.host", dline, true);
        if (!host) return host.error();
        dest.host = std::move(*host);
        auto subset =
            readString(ctx, dsf.get("subset"), dfield + ".destination.subset", dline, false);
        if (!subset) return subset.error();
        dest.subset = std::move(*subset);
        if (YAML::Node port = dsf.get("port"); present(port)) {
          if (auto r = requireMap(ctx, port, dfield + ".destination.port", dline); !r) {
            return r.error();
          }
          auto number = readPort(ctx, Fields(port).get("number"),
                                 dfield + ".destination.port.number", lineOf(port, dline));
          if (!number) return number.error();
          dest.port = *number;
        }
        if (YAML::Node weight = df.get("weight"); present(weight)) {
          auto value = readInt(ctx, weight, dfield + ".weight", dline);
          if (!value) return value.error();
          if (*value < 0 || *value > 100) {
            return ctx.error(dfield + ".weight", lineOf(weight, dline),
                             fmt::format("must be in 0..100, got {}", *value));
          }
          dest.weight = static_cast<uint32_t>(*value);
        }
        sum += dest.weight;
        route.destinations.push_back(std::move(dest));
      }
      // Istio: a lone destination takes all traffic whatever its weight; several must add up.
      if (single) {
        route.destinations[0].weight = 100;
      } else if (sum != 100) {
        return ctx.error(field + ".route", lineOf(destinations, route_line),
                         fmt::format("weights add up to {}, not 100", sum));
      }
      spec.routes.push_back(std::move(route));
    }
  }
  out.spec = std::move(spec);
  return {};
}

Result<void> parseDestinationRule(const Context& ctx, const Fields& top, int line, Object& out) {
  DestinationRuleSpec spec;
  YAML::Node spec_node = top.get("spec");
  if (auto r = requireMap(ctx, spec_node, "spec", line); !r) return r.error();
  int spec_line = lineOf(spec_node, line);
  Fields f(spec_node);
  YAML::Node host_node = f.get("host");
  auto host = readString(ctx, host_node, "spec.host", spec_line, true);
  if (!host) return host.error();
  spec.host = {std::move(*host), lineOf(host_node, spec_line)};
  auto policy = readLoadBalancer(ctx, f.get("trafficPolicy"), "spec.trafficPolicy", spec_line);
  if (!policy) return policy.error();
  spec.policy = *policy;

  YAML::Node subsets = f.get("subsets");
  if (auto r = optionalSequence(ctx, subsets, "spec.subsets", spec_line); !r) return r.error();
  size_t i = 0;
  for (const auto& node : present(subsets) ? subsets : YAML::Node()) {
    std::string field = fmt::format("spec.subsets[{}]", i++);
    if (auto r = requireMap(ctx, node, field, spec_line); !r) return r.error();
    int subset_line = lineOf(node, spec_line);
    Fields sf(node);
    SubsetSpec subset;
    subset.line = subset_line;
    auto name = readString(ctx, sf.get("name"), field + ".name", subset_line, true);
    if (!name) return name.error();
    subset.name = std::move(*name);
    for (const auto& other : spec.subsets) {
      if (other.name == subset.name) {
        return ctx.error(field + ".name", subset_line,
                         fmt::format("subset '{}' is defined twice", subset.name));
      }
    }
    auto labels = readLabels(ctx, sf.get("labels"), field + ".labels", subset_line);
    if (!labels) return labels.error();
    subset.labels = std::move(*labels);
    auto subset_policy =
        readLoadBalancer(ctx, sf.get("trafficPolicy"), field + ".trafficPolicy", subset_line);
    if (!subset_policy) return subset_policy.error();
    subset.policy = *subset_policy;
    spec.subsets.push_back(std::move(subset));
  }
  out.spec = std::move(spec);
  return {};
}

Result<void> parseProxyConfig(const Context& ctx, const Fields& top, int line, Object& out) {
  ProxyConfigSpec spec;
  YAML::Node spec_node = top.get("spec");
  if (!present(spec_node)) {
    out.spec = spec;
    return {};
  }
  if (auto r = requireMap(ctx, spec_node, "spec", line); !r) return r.error();
  int spec_line = lineOf(spec_node, line);
  Fields f(spec_node);
  if (auto unknown =
          f.unknownKey({"outboundPort", "inboundPort", "adminAddress", "adminPort",
                        "inboundSourceAddress", "outboundTrafficPolicy", "connectTimeout",
                        "drainTimeout", "maxConnectAttempts", "accessLog"})) {
    return ctx.error(fmt::format("spec.{}", unknown->first), lineOf(unknown->second, spec_line),
                     "unknown field");
  }
  auto port = [&](const char* key, std::optional<uint16_t>& target) -> Result<void> {
    YAML::Node node = f.get(key);
    if (!present(node)) return {};
    auto value = readPort(ctx, node, fmt::format("spec.{}", key), spec_line);
    if (!value) return value.error();
    target = *value;
    return {};
  };
  auto ip = [&](const char* key, std::optional<IpAddress>& target) -> Result<void> {
    YAML::Node node = f.get(key);
    if (!present(node)) return {};
    auto value = readIp(ctx, node, fmt::format("spec.{}", key), spec_line);
    if (!value) return value.error();
    target = *value;
    return {};
  };
  auto duration = [&](const char* key,
                      std::optional<std::chrono::milliseconds>& target) -> Result<void> {
    YAML::Node node = f.get(key);
    if (!present(node)) return {};
    std::string field = fmt::format("spec.{}", key);
    auto text = readString(ctx, node, field, spec_line, true);
    if (!text) return text.error();
    auto value = parseDuration(*text);
    if (!value) return ctx.error(field, lineOf(node, spec_line), value.error().message);
    target = *value;
    return {};
  };
  for (const auto& r :
       {port("outboundPort", spec.outbound_port), port("inboundPort", spec.inbound_port),
        port("adminPort", spec.admin_port), ip("inboundSourceAddress", spec.inbound_source),
        duration("connectTimeout", spec.connect_timeout),
        duration("drainTimeout", spec.drain_timeout)}) {
    if (!r) return r.error();
  }
  if (YAML::Node node = f.get("adminAddress"); present(node)) {
    // Either an address (the port comes from adminPort or the default) or address:port.
    auto text = readString(ctx, node, "spec.adminAddress", spec_line, true);
    if (!text) return text.error();
    if (auto full = SocketAddress::parse(*text); full) {
      spec.admin_address = full->ip;
      if (!spec.admin_port) spec.admin_port = full->port;
    } else if (auto r = ip("adminAddress", spec.admin_address); !r) {
      return r.error();
    }
  }
  if (YAML::Node node = f.get("outboundTrafficPolicy"); present(node)) {
    if (auto r = requireMap(ctx, node, "spec.outboundTrafficPolicy", spec_line); !r)
      return r.error();
    int policy_line = lineOf(node, spec_line);
    YAML::Node mode_node = Fields(node).get("mode");
    auto mode = readString(ctx, mode_node, "spec.outboundTrafficPolicy.mode", policy_line, true);
    if (!mode) return mode.error();
    if (*mode == "ALLOW_ANY") {
      spec.outbound_policy = OutboundPolicy::kAllowAny;
    } else if (*mode == "REGISTRY_ONLY") {
      spec.outbound_policy = OutboundPolicy::kRegistryOnly;
    } else {
      return ctx.error("spec.outboundTrafficPolicy.mode", lineOf(mode_node, policy_line),
                       fmt::format("must be ALLOW_ANY or REGISTRY_ONLY, got '{}'", *mode));
    }
  }
  if (YAML::Node node = f.get("maxConnectAttempts"); present(node)) {
    auto value = readInt(ctx, node, "spec.maxConnectAttempts", spec_line);
    if (!value) return value.error();
    if (*value < 1 || *value > 100) {
      return ctx.error("spec.maxConnectAttempts", lineOf(node, spec_line),
                       fmt::format("must be in 1..100, got {}", *value));
    }
    spec.max_connect_attempts = static_cast<int>(*value);
  }
  if (YAML::Node node = f.get("accessLog"); present(node)) {
    auto value = readBool(ctx, node, "spec.accessLog", spec_line);
    if (!value) return value.error();
    spec.access_log = *value;
  }
  out.spec = spec;
  return {};
}

struct KindInfo {
  std::string_view kind;
  Kind value;
  std::initializer_list<std::string_view> api_versions;
  Result<void> (*parse)(const Context&, const Fields&, int, Object&);
};

Result<void> parseNamespace(const Context&, const Fields&, int, Object& out) {
  out.spec = NamespaceSpec{};
  return {};
}

const KindInfo kKinds[] = {
    {"Service", Kind::kService, {"v1"}, parseService},
    {"Pod", Kind::kPod, {"v1"}, parsePod},
    {"EndpointSlice", Kind::kEndpointSlice, {"discovery.k8s.io/v1"}, parseEndpointSlice},
    {"VirtualService",
     Kind::kVirtualService,
     {"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"},
     parseVirtualService},
    {"DestinationRule",
     Kind::kDestinationRule,
     {"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"},
     parseDestinationRule},
    {"Namespace", Kind::kNamespace, {"v1"}, parseNamespace},
    {"ProxyConfig", Kind::kProxyConfig, {"remora.dev/v1alpha1"}, parseProxyConfig},
};

Result<void> parseObject(Context& ctx, const YAML::Node& node, int fallback_line,
                         DocumentModel& model) {
  int line = lineOf(node, fallback_line);
  if (!node.IsMap()) {
    return ctx.error("", line,
                     fmt::format("expected a Kubernetes object (a mapping), got {}", shown(node)));
  }
  Fields top(node);
  YAML::Node kind_node = top.get("kind");
  YAML::Node api_node = top.get("apiVersion");
  YAML::Node meta = top.get("metadata");
  // Identify the object first, leniently, so that every later error can name it.
  if (kind_node.IsScalar()) ctx.kind = kind_node.Scalar();
  Object object;
  object.item = ctx.item;
  object.line = line;
  object.namespace_name = "default";
  if (meta.IsMap()) {
    Fields mf(meta);
    if (YAML::Node n = mf.get("name"); n.IsScalar()) ctx.name = n.Scalar();
    if (YAML::Node n = mf.get("namespace"); n.IsScalar() && !n.Scalar().empty()) {
      object.namespace_name = n.Scalar();
    }
    // Namespaces are cluster-scoped; naming one "default/x" would mislead.
    if (ctx.kind != "Namespace") ctx.namespace_name = object.namespace_name;
  }

  auto kind = readString(ctx, kind_node, "kind", line, true);
  if (!kind) return kind.error();
  auto api_version = readString(ctx, api_node, "apiVersion", line, true);
  if (!api_version) return api_version.error();
  const KindInfo* info = nullptr;
  for (const auto& k : kKinds) {
    if (k.kind == *kind) info = &k;
  }
  if (info == nullptr) {
    return ctx.error("kind", lineOf(kind_node, line),
                     fmt::format("unsupported kind '{}' ({}); the proxy reads Service, Pod, "
                                 "EndpointSlice, VirtualService, DestinationRule, Namespace, "
                                 "ProxyConfig and List",
                                 *kind, *api_version));
  }
  if (std::find(info->api_versions.begin(), info->api_versions.end(), *api_version) ==
      info->api_versions.end()) {
    return ctx.error("apiVersion", lineOf(api_node, line),
                     fmt::format("unsupported apiVersion '{}' for {}; expected {}", *api_version,
                                 *kind, fmt::join(info->api_versions, " or ")));
  }
  object.kind = info->value;

  bool named = info->value != Kind::kProxyConfig;
  if (named) {
    if (auto r = requireMap(ctx, meta, "metadata", line); !r) return r.error();
  }
  if (present(meta)) {
    if (auto r = requireMap(ctx, meta, "metadata", line); !r) return r.error();
    int meta_line = lineOf(meta, line);
    Fields mf(meta);
    auto name = readString(ctx, mf.get("name"), "metadata.name", meta_line, named);
    if (!name) return name.error();
    object.name = std::move(*name);
    auto ns = readString(ctx, mf.get("namespace"), "metadata.namespace", meta_line, false);
    if (!ns) return ns.error();
    auto labels = readLabels(ctx, mf.get("labels"), "metadata.labels", meta_line);
    if (!labels) return labels.error();
    object.labels = std::move(*labels);
  }
  if (auto r = info->parse(ctx, top, line, object); !r) return r.error();
  model.objects.push_back(std::move(object));
  return {};
}

Result<void> parseRoot(const Placement& placement, const YAML::Node& root, DocumentModel& model) {
  Context ctx(placement);
  if (!root.IsMap()) {
    return ctx.error("", lineOf(root, 0),
                     fmt::format("expected a Kubernetes object (a mapping), got {}", shown(root)));
  }
  YAML::Node kind = Fields(root).get("kind");
  if (!kind.IsScalar() || kind.Scalar() != "List") return parseObject(ctx, root, 0, model);

  ctx.kind = "List";
  Fields top(root);
  YAML::Node api = top.get("apiVersion");
  auto api_version = readString(ctx, api, "apiVersion", lineOf(root, 0), true);
  if (!api_version) return api_version.error();
  if (*api_version != "v1") {
    return ctx.error(
        "apiVersion", lineOf(api, 0),
        fmt::format("unsupported apiVersion '{}' for List; expected v1", *api_version));
  }
  YAML::Node items = top.get("items");
  if (auto r = optionalSequence(ctx, items, "items", lineOf(root, 0)); !r) return r.error();
  int i = 0;
  for (const auto& item : present(items) ? items : YAML::Node()) {
    Context item_ctx(placement, i++);
    if (YAML::Node k = item.IsMap() ? Fields(item).get("kind") : YAML::Node();
        k.IsScalar() && k.Scalar() == "List") {
      return item_ctx.error("kind", lineOf(item, 0), "a List cannot hold another List");
    }
    if (auto r = parseObject(item_ctx, item, lineOf(items, 0), model); !r) return r.error();
  }
  return {};
}

}  // namespace

Result<std::shared_ptr<const DocumentModel>> parseDocument(std::string_view text,
                                                           const Placement& placement) {
  auto model = std::make_shared<DocumentModel>();
  // yaml-cpp reports through exceptions; they stop here and become Errors.
  try {
    YAML::Node root = YAML::Load(std::string(text));
    if (!root.IsDefined() || root.IsNull()) return std::shared_ptr<const DocumentModel>(model);
    if (auto r = parseRoot(placement, root, *model); !r) return r.error();
  } catch (const YAML::Exception& e) {
    int line = e.mark.is_null() ? 0 : e.mark.line;
    return makeError(describeError(
        placement, -1, "", "", "", "", line,
        fmt::format("YAML syntax error{}: {}",
                    e.mark.is_null() ? "" : fmt::format(" at column {}", e.mark.column + 1),
                    e.msg)));
  }
  return std::shared_ptr<const DocumentModel>(model);
}

}  // namespace remora::config
