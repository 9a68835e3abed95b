#include "config/document_parser.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <initializer_list>

#include "config/duration.h"
#include "config/field_table.h"
#include "config/security_parser.h"
#include "security/security_policy.h"

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

  // Remembers the field and line, so a rejected object can be reported in parts too.
  Error error(std::string_view field, int line, std::string_view what) const {
    last_field = field;
    last_line = line;
    if (bare) return makeError(std::string(what));
    return makeError(describeError(placement, item, kind, namespace_name, name, field, line, what));
  }

  // The error text is just `what`: for an error that becomes a note on an object that is kept
  // (an http route rejected alone), which the table builder words in full.
  bool bare = false;

  mutable std::string last_field;
  mutable int last_line = 0;
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

  // The first key `known` refuses, for Remora's own kinds, where a typo must not pass.
  template <typename Known>
  std::optional<std::pair<std::string_view, YAML::Node>> unknownKey(Known known) const {
    for (const auto& e : entries_) {
      if (!known(e.key)) return std::make_pair(e.key, e.value);
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

// Kubernetes' IANA_SVC_NAME: 1-15 of [a-z0-9-], at least one letter, no leading, trailing
// or doubled '-'. A targetPort that is neither this nor a port number is invalid.
bool isIanaServiceName(std::string_view s) {
  if (s.empty() || s.size() > 15 || s.front() == '-' || s.back() == '-') return false;
  if (s.find("--") != std::string_view::npos) return false;
  bool letter = false;
  for (char c : s) {
    bool lower = c >= 'a' && c <= 'z';
    letter = letter || lower;
    if (!lower && !(c >= '0' && c <= '9') && c != '-') return false;
  }
  return letter;
}

bool isUnspecified(const IpAddress& ip) {
  return std::all_of(ip.bytes.begin(), ip.bytes.end(), [](uint8_t b) { return b == 0; });
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
    YAML::Node value = it->second;  // a copy: the iterator's proxy is a temporary
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

// A port entry of a Pod's container or an Endpoints subset: {name, <number_key>, protocol}.
struct NamedPort {
  std::string name;
  uint16_t number = 0;
  bool tcp = true;
};

Result<NamedPort> readNamedPort(const Context& ctx, const YAML::Node& node,
                                const std::string& field, int line, const char* number_key) {
  if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
  int port_line = lineOf(node, line);
  Fields pf(node);
  NamedPort out;
  auto number =
      readPort(ctx, pf.get(number_key), fmt::format("{}.{}", field, number_key), port_line);
  if (!number) return number.error();
  out.number = *number;
  auto name = readString(ctx, pf.get("name"), field + ".name", port_line, false);
  if (!name) return name.error();
  out.name = std::move(*name);
  auto tcp = readIsTcp(ctx, pf.get("protocol"), field + ".protocol", port_line);
  if (!tcp) return tcp.error();
  out.tcp = *tcp;
  return out;
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

// ---- DestinationRule trafficPolicy: connectionPool, outlierDetection, portLevelSettings ----

Result<uint32_t> readBounded(const Context& ctx, const YAML::Node& node, const std::string& field,
                             int line, int64_t low, int64_t high) {
  auto value = readInt(ctx, node, field, line);
  if (!value) return value.error();
  if (*value < low || *value > high) {
    return ctx.error(field, lineOf(node, line),
                     fmt::format("must be in {}..{}, got {}", low, high, *value));
  }
  return static_cast<uint32_t>(*value);
}

// A duration such as "250ms" or "1m30s"; "0s" (or "0") only where `zero_ok`.
Result<std::chrono::milliseconds> readDurationValue(const Context& ctx, const YAML::Node& node,
                                                    const std::string& field, int line,
                                                    bool zero_ok) {
  auto text = readString(ctx, node, field, line, true);
  if (!text) return text.error();
  if (zero_ok && (*text == "0" || *text == "0s")) return std::chrono::milliseconds(0);
  auto value = parseDuration(*text);
  if (!value) return ctx.error(field, lineOf(node, line), value.error().message);
  return *value;
}

// Reads the optional key `key` of `f` into `target` with `read`; absent leaves `target` alone.
template <typename T, typename Read>
Result<void> readOptional(const Fields& f, const char* key, const std::string& prefix, int line,
                          T& target, Read read) {
  YAML::Node node = f.get(key);
  if (!present(node)) return {};
  auto value = read(node, fmt::format("{}.{}", prefix, key), line);
  if (!value) return value.error();
  target = *value;
  return {};
}

constexpr int64_t kUint32Max = UINT32_MAX;

Result<routing::ConnectionPoolSettings> readConnectionPool(const Context& ctx,
                                                           const YAML::Node& node,
                                                           const std::string& field, int line) {
  if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
  routing::ConnectionPoolSettings pool;
  Fields f(node);
  int pool_line = lineOf(node, line);
  auto count = [&](const YAML::Node& n, const std::string& fld, int l) {
    return readBounded(ctx, n, fld, l, 0, kUint32Max);
  };
  auto duration = [&](bool zero_ok) {
    return [&ctx, zero_ok](const YAML::Node& n, const std::string& fld, int l) {
      return readDurationValue(ctx, n, fld, l, zero_ok);
    };
  };
  // Istio: a count of 0 leaves the default (no limit).
  auto limit = [](uint32_t& target) {
    return [&target](uint32_t v) {
      if (v != 0) target = v;
    };
  };
  if (YAML::Node tcp = f.get("tcp"); present(tcp)) {
    std::string tfield = field + ".tcp";
    if (auto r = requireMap(ctx, tcp, tfield, pool_line); !r) return r.error();
    Fields tf(tcp);
    int tline = lineOf(tcp, pool_line);
    uint32_t max_connections = 0;
    if (auto r = readOptional(tf, "maxConnections", tfield, tline, max_connections, count); !r) {
      return r.error();
    }
    limit(pool.max_connections)(max_connections);
    if (auto r = readOptional(tf, "connectTimeout", tfield, tline, pool.connect_timeout,
                              duration(false));
        !r) {
      return r.error();
    }
    if (YAML::Node ka = tf.get("tcpKeepalive"); present(ka)) {
      std::string kfield = tfield + ".tcpKeepalive";
      if (auto r = requireMap(ctx, ka, kfield, tline); !r) return r.error();
      Fields kf(ka);
      int kline = lineOf(ka, tline);
      routing::ConnectionPoolSettings::Keepalive keepalive;
      for (const auto& r :
           {readOptional(kf, "probes", kfield, kline, keepalive.probes, count),
            readOptional(kf, "time", kfield, kline, keepalive.time, duration(false)),
            readOptional(kf, "interval", kfield, kline, keepalive.interval, duration(false))}) {
        if (!r) return r.error();
      }
      pool.tcp_keepalive = keepalive;
    }
  }
  if (YAML::Node http = f.get("http"); present(http)) {
    std::string hfield = field + ".http";
    if (auto r = requireMap(ctx, http, hfield, pool_line); !r) return r.error();
    Fields hf(http);
    int hline = lineOf(http, pool_line);
    uint32_t pending = 0;
    uint32_t retries = 0;
    for (const auto& r :
         {readOptional(hf, "http1MaxPendingRequests", hfield, hline, pending, count),
          readOptional(hf, "maxRequestsPerConnection", hfield, hline,
                       pool.max_requests_per_connection, count),
          readOptional(hf, "maxRetries", hfield, hline, retries, count),
          readOptional(hf, "idleTimeout", hfield, hline, pool.idle_timeout, duration(true))}) {
      if (!r) return r.error();
    }
    limit(pool.http1_max_pending_requests)(pending);
    limit(pool.max_retries)(retries);
  }
  return pool;
}

Result<routing::OutlierDetectionSettings> readOutlierDetection(const Context& ctx,
                                                               const YAML::Node& node,
                                                               const std::string& field, int line) {
  if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
  routing::OutlierDetectionSettings out;
  out.enabled = true;
  Fields f(node);
  int oline = lineOf(node, line);
  auto count = [&](const YAML::Node& n, const std::string& fld, int l) {
    return readBounded(ctx, n, fld, l, 0, kUint32Max);
  };
  auto duration = [&](const YAML::Node& n, const std::string& fld, int l) {
    return readDurationValue(ctx, n, fld, l, false);
  };
  // The deprecated consecutiveErrors counts gateway errors only, as Istio translates it.
  std::optional<uint32_t> legacy;
  if (auto r = readOptional(f, "consecutiveErrors", field, oline, legacy, count); !r) {
    return r.error();
  }
  if (legacy) {
    out.consecutive_gateway_errors = *legacy;
    out.consecutive_5xx_errors = 0;
  }
  auto percent = [&](const YAML::Node& n, const std::string& fld, int l) {
    return readBounded(ctx, n, fld, l, 0, 100);
  };
  for (const auto& r :
       {readOptional(f, "consecutiveGatewayErrors", field, oline, out.consecutive_gateway_errors,
                     count),
        readOptional(f, "consecutive5xxErrors", field, oline, out.consecutive_5xx_errors, count),
        readOptional(f, "interval", field, oline, out.interval, duration),
        readOptional(f, "baseEjectionTime", field, oline, out.base_ejection_time, duration),
        readOptional(f, "maxEjectionPercent", field, oline, out.max_ejection_percent, percent)}) {
    if (!r) return r.error();
  }
  return out;
}

// The blocks one trafficPolicy level sets (a trafficPolicy, or a portLevelSettings entry).
Result<PolicyLevel> readPolicyLevel(const Context& ctx, const YAML::Node& node,
                                    const std::string& field, int line) {
  PolicyLevel level;
  auto lb = readLoadBalancer(ctx, node, field, line);
  if (!lb) return lb.error();
  level.lb = *lb;
  Fields f(node);
  int l = lineOf(node, line);
  if (YAML::Node pool = f.get("connectionPool"); present(pool)) {
    auto value = readConnectionPool(ctx, pool, field + ".connectionPool", l);
    if (!value) return value.error();
    level.pool = *value;
  }
  if (YAML::Node outlier = f.get("outlierDetection"); present(outlier)) {
    auto value = readOutlierDetection(ctx, outlier, field + ".outlierDetection", l);
    if (!value) return value.error();
    level.outlier = *value;
  }
  return level;
}

Result<TrafficPolicySpec> readTrafficPolicy(const Context& ctx, const YAML::Node& node,
                                            const std::string& field, int line) {
  TrafficPolicySpec spec;
  if (!present(node)) return spec;
  if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
  auto level = readPolicyLevel(ctx, node, field, line);
  if (!level) return level.error();
  spec.level = *level;
  int l = lineOf(node, line);
  YAML::Node ports = Fields(node).get("portLevelSettings");
  if (auto r = optionalSequence(ctx, ports, field + ".portLevelSettings", l); !r) {
    return r.error();
  }
  size_t i = 0;
  for (const auto& entry : present(ports) ? ports : YAML::Node()) {
    std::string efield = fmt::format("{}.portLevelSettings[{}]", field, i++);
    if (auto r = requireMap(ctx, entry, efield, l); !r) return r.error();
    int eline = lineOf(entry, l);
    YAML::Node port = Fields(entry).get("port");
    if (auto r = requireMap(ctx, port, efield + ".port", eline); !r) return r.error();
    auto number = readPort(ctx, Fields(port).get("number"), efield + ".port.number", eline);
    if (!number) return number.error();
    for (const auto& [other, unused] : spec.ports) {
      if (other == *number) {
        return ctx.error(efield + ".port.number", eline,
                         fmt::format("port {} has settings already", *number));
      }
    }
    auto entry_level = readPolicyLevel(ctx, entry, efield, eline);
    if (!entry_level) return entry_level.error();
    spec.ports.emplace_back(*number, *entry_level);
  }
  return spec;
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
    spec.external_name = true;
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
    if (*text == "None") spec.headless = true;
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
      // A plain scalar such as 0x50, 1e3 or .inf is a number to the API server's YAML reader,
      // never a port name.
      bool yaml_number = target.Tag() == "?" && !text->empty() &&
                         (std::isdigit(static_cast<unsigned char>(text->front())) != 0 ||
                          text->front() == '.' || text->front() == '-' || text->front() == '+') &&
                         !isIanaServiceName(*text);
      bool hex = target.Tag() == "?" && text->size() > 2 && (*text)[0] == '0' &&
                 ((*text)[1] == 'x' || (*text)[1] == 'o');
      if (!numeric && (yaml_number || hex)) {
        return ctx.error(field + ".targetPort", lineOf(target, port_line),
                         fmt::format("'{}' is a number in YAML, not a port in 1..65535 nor a "
                                     "port name (an IANA_SVC_NAME)",
                                     *text));
      }
      if (numeric) {
        auto target_number = readPort(ctx, target, field + ".targetPort", port_line);
        if (!target_number) return target_number.error();
        port.target_number = *target_number;
      } else if (isIanaServiceName(*text)) {
        port.target_name = std::move(*text);
      } else {
        return ctx.error(field + ".targetPort", lineOf(target, port_line),
                         fmt::format("must be a port number in 1..65535 or a port name (an "
                                     "IANA_SVC_NAME: 1-15 lowercase letters, digits and '-'), "
                                     "got '{}'",
                                     *text));
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
    auto account = readString(ctx, Fields(spec_node).get("serviceAccountName"),
                              "spec.serviceAccountName", spec_line, false);
    if (!account) return account.error();
    spec.service_account = std::move(*account);
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
        auto named = readNamedPort(ctx, port, fmt::format("{}.ports[{}]", field, p++),
                                   container_line, "containerPort");
        if (!named) return named.error();
        if (named->tcp && !named->name.empty()) {
          spec.named_ports.emplace_back(std::move(named->name), named->number);
        }
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
      if (isUnspecified(*ip)) {
        return ctx.error(
            field, lineOf(node, status_line),
            fmt::format("'{}' is the unspecified address, not a pod address", ip->toString()));
      }
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

// Reads a route's `match` entries. An entry that names nothing but a port and the client's
// identity (sourceLabels, sourceNamespace) can be decided per connection; one that needs HTTP
// is noted in `route.l7_match` (the table builder reports it where it matters).
Result<void> readMatches(const Context& ctx, const YAML::Node& match, const std::string& field,
                         int line, VsRoute& route) {
  if (auto r = optionalSequence(ctx, match, field, line); !r) return r.error();
  if (!present(match)) return {};
  size_t i = 0;
  for (const auto& entry : match) {
    VsRoute::MatchEntry out;
    out.field = fmt::format("{}[{}]", field, i++);
    route.has_match = true;
    if (auto r = requireMap(ctx, entry, out.field, line); !r) return r.error();
    out.line = lineOf(entry, line);
    for (auto it = entry.begin(); it != entry.end(); ++it) {
      const std::string& key = it->first.Scalar();
      if (key == "port" || key == "name" || key == "statPrefix" || key == "sourceLabels" ||
          key == "sourceNamespace") {
        continue;
      }
      out.l4 = false;
      if (route.l7_match.find(key) == std::string::npos) {
        route.l7_match += route.l7_match.empty() ? key : ", " + key;
      }
    }
    // An entry decided per connection rejects the VirtualService on a bad value here; for
    // one that needs HTTP the per-request parser (readHttpMatch) reports it, leaving out that
    // route alone, so a bad value only goes unrecorded.
    const bool strict = out.l4;
    Fields f(entry);
    if (YAML::Node labels_node = f.get("sourceLabels"); present(labels_node)) {
      auto labels = readLabels(ctx, labels_node, out.field + ".sourceLabels", out.line);
      if (labels) {
        out.source_labels = std::move(*labels);
      } else if (strict) {
        return labels.error();
      }
    }
    if (YAML::Node ns_node = f.get("sourceNamespace"); present(ns_node)) {
      auto ns = readString(ctx, ns_node, out.field + ".sourceNamespace", out.line, true);
      if (ns) {
        out.source_namespace = std::move(*ns);
      } else if (strict) {
        return ns.error();
      }
    }
    if (YAML::Node port_node = f.get("port"); present(port_node) && strict) {
      auto port = readPort(ctx, port_node, out.field + ".port", out.line);
      if (!port) return port.error();
      out.port = *port;
    }
    route.entries.push_back(std::move(out));
  }
  return {};
}

Result<RouteDestination> readDestination(const Context& ctx, const YAML::Node& node,
                                         const std::string& field, int line);

Result<RouteDestination> readRouteDestination(const Context& ctx, const YAML::Node& dnode,
                                              const std::string& dfield, int route_line) {
  if (auto r = requireMap(ctx, dnode, dfield, route_line); !r) return r.error();
  int dline = lineOf(dnode, route_line);
  Fields df(dnode);
  auto parsed = readDestination(ctx, df.get("destination"), dfield + ".destination", dline);
  if (!parsed) return parsed.error();
  RouteDestination dest = std::move(*parsed);
  if (YAML::Node weight = df.get("weight"); present(weight)) {
    auto value = readInt(ctx, weight, dfield + ".weight", dline);
    if (!value) return value.error();
    // Istio's weights are relative (a destination gets weight / sum); only negative weights
    // and an all-zero total are invalid.
    if (*value < 0 || *value > INT32_MAX) {
      return ctx.error(dfield + ".weight", lineOf(weight, dline),
                       fmt::format("must be a non-negative 32-bit integer, got {}", *value));
    }
    dest.weight = static_cast<uint32_t>(*value);
  }
  return dest;
}

// ---- VirtualService http[]: the per-request model (routing/http_route.h) ----

// Istio's StringMatch: one of exact, prefix or regex (RE2). `{}` (or no value) means "present"
// where `presence_ok` (headers, withoutHeaders, queryParams).
Result<routing::StringMatch> readStringMatch(const Context& ctx, const YAML::Node& node,
                                             const std::string& field, int line, bool presence_ok) {
  int l = lineOf(node, line);
  if (!present(node) || (node.IsMap() && node.size() == 0)) {
    if (presence_ok) return routing::StringMatch{};
    return ctx.error(field, l, "needs one of exact, prefix or regex");
  }
  if (!node.IsMap()) {
    return ctx.error(
        field, l,
        fmt::format("must be a mapping with exact, prefix or regex, got {}", shown(node)));
  }
  Fields f(node);
  std::optional<routing::StringMatch> out;
  for (std::string_view key : {"exact", "prefix", "regex"}) {
    YAML::Node value = f.get(key);
    if (!present(value)) continue;
    std::string kfield = fmt::format("{}.{}", field, key);
    int vline = lineOf(value, l);
    if (out) return ctx.error(kfield, vline, "only one of exact, prefix or regex may be set");
    auto text = readString(ctx, value, kfield, l, false);
    if (!text) return text.error();
    if (key == "regex") {
      auto re = routing::StringMatch::makeRegex(*text);
      if (!re) return ctx.error(kfield, vline, re.error().message);
      out = std::move(*re);
      continue;
    }
    routing::StringMatch m;
    m.kind =
        key == "exact" ? routing::StringMatch::Kind::kExact : routing::StringMatch::Kind::kPrefix;
    m.value = std::move(*text);
    out = std::move(m);
  }
  if (!out) return ctx.error(field, l, "needs one of exact, prefix or regex");
  return std::move(*out);
}

std::string lowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// `headers`, `withoutHeaders` or `queryParams`: name → StringMatch.
template <typename Add>
Result<void> readMatchMap(const Context& ctx, const YAML::Node& node, const std::string& field,
                          int line, Add add) {
  if (!present(node)) return {};
  if (!node.IsMap()) {
    return ctx.error(field, lineOf(node, line),
                     fmt::format("must be a mapping, got {}", shown(node)));
  }
  for (auto it = node.begin(); it != node.end(); ++it) {
    const std::string& name = it->first.Scalar();
    std::string efield = fmt::format("{}.{}", field, name);
    if (name.empty()) return ctx.error(field, lineOf(node, line), "a name is empty");
    auto m = readStringMatch(ctx, it->second, efield, lineOf(it->first, line), true);
    if (!m) return m.error();
    add(name, std::move(*m));
  }
  return {};
}

// One match entry; nullopt when it cannot hold for a sidecar (bound to gateways only).
Result<std::optional<routing::HttpMatch>> readHttpMatch(const Context& ctx, const YAML::Node& node,
                                                        const std::string& field, int line) {
  using Out = Result<std::optional<routing::HttpMatch>>;
  if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
  int l = lineOf(node, line);
  Fields f(node);
  routing::HttpMatch m;
  m.line = l;
  auto name = readString(ctx, f.get("name"), field + ".name", l, false);
  if (!name) return name.error();
  m.name = std::move(*name);
  const std::pair<const char*, std::optional<routing::StringMatch>*> singles[] = {
      {"uri", &m.uri}, {"scheme", &m.scheme}, {"method", &m.method}, {"authority", &m.authority}};
  for (const auto& [key, target] : singles) {
    YAML::Node value = f.get(key);
    if (!present(value)) continue;
    auto sm = readStringMatch(ctx, value, fmt::format("{}.{}", field, key), l, false);
    if (!sm) return sm.error();
    *target = std::move(*sm);
  }
  if (YAML::Node v = f.get("ignoreUriCase"); present(v)) {
    auto value = readBool(ctx, v, field + ".ignoreUriCase", l);
    if (!value) return value.error();
    m.ignore_uri_case = *value;
    // Envoy's case_sensitive: false covers exact and prefix path matches, not regexes.
    if (m.uri && m.uri->kind != routing::StringMatch::Kind::kRegex) m.uri->ignore_case = *value;
  }
  for (bool invert : {false, true}) {
    const char* key = invert ? "withoutHeaders" : "headers";
    auto r = readMatchMap(ctx, f.get(key), fmt::format("{}.{}", field, key), l,
                          [&](const std::string& header, routing::StringMatch value) {
                            m.headers.push_back({lowerAscii(header), std::move(value), invert});
                          });
    if (!r) return r.error();
  }
  auto qr = readMatchMap(ctx, f.get("queryParams"), field + ".queryParams", l,
                         [&](const std::string& param, routing::StringMatch value) {
                           m.query_params.push_back({param, std::move(value)});
                         });
  if (!qr) return qr.error();
  if (YAML::Node v = f.get("port"); present(v)) {
    auto port = readPort(ctx, v, field + ".port", l);
    if (!port) return port.error();
    m.port = *port;
  }
  auto labels = readLabels(ctx, f.get("sourceLabels"), field + ".sourceLabels", l);
  if (!labels) return labels.error();
  m.source_labels = std::move(*labels);
  YAML::Node gateways = f.get("gateways");
  if (auto r = optionalSequence(ctx, gateways, field + ".gateways", l); !r) return r.error();
  if (present(gateways) && gateways.size() > 0) {
    bool mesh = false;
    for (const auto& g : gateways) mesh = mesh || (g.IsScalar() && g.Scalar() == "mesh");
    if (!mesh) return Out(std::nullopt);
  }
  if (YAML::Node ns = f.get("sourceNamespace"); present(ns)) {
    auto text = readString(ctx, ns, field + ".sourceNamespace", l, true);
    if (!text) return text.error();
    m.source_namespace = std::move(*text);
  }
  return Out(std::move(m));
}

Result<routing::HeaderOpsPair> readHeaderOps(const Context& ctx, const YAML::Node& node,
                                             const std::string& field, int line) {
  routing::HeaderOpsPair out;
  if (!present(node)) return out;
  if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
  int l = lineOf(node, line);
  Fields f(node);
  for (bool request : {true, false}) {
    std::string sfield = fmt::format("{}.{}", field, request ? "request" : "response");
    YAML::Node side = f.get(request ? "request" : "response");
    if (!present(side)) continue;
    if (auto r = requireMap(ctx, side, sfield, l); !r) return r.error();
    int sline = lineOf(side, l);
    Fields sf(side);
    routing::HeaderOps& ops = request ? out.request : out.response;
    for (bool set : {true, false}) {
      std::string key = set ? "set" : "add";
      YAML::Node map = sf.get(key);
      if (!present(map)) continue;
      std::string mfield = fmt::format("{}.{}", sfield, key);
      if (!map.IsMap()) {
        return ctx.error(mfield, lineOf(map, sline),
                         fmt::format("must be a mapping, got {}", shown(map)));
      }
      auto& target = set ? ops.set : ops.add;
      for (auto it = map.begin(); it != map.end(); ++it) {
        auto value = readString(ctx, it->second, fmt::format("{}.{}", mfield, it->first.Scalar()),
                                lineOf(it->first, sline), false);
        if (!value) return value.error();
        target.emplace_back(lowerAscii(it->first.Scalar()), std::move(*value));
      }
    }
    YAML::Node remove = sf.get("remove");
    if (auto r = optionalSequence(ctx, remove, sfield + ".remove", sline); !r) return r.error();
    size_t i = 0;
    for (const auto& name : present(remove) ? remove : YAML::Node()) {
      auto text = readString(ctx, name, fmt::format("{}.remove[{}]", sfield, i++), sline, true);
      if (!text) return text.error();
      ops.remove.push_back(lowerAscii(*text));
    }
  }
  return out;
}

// Istio's Percent: {value: 0..100}, a double; kept exactly in parts per million.
Result<routing::Percentage> readPercentage(const Context& ctx, const YAML::Node& node,
                                           const std::string& field, int line) {
  if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
  int l = lineOf(node, line);
  YAML::Node value = Fields(node).get("value");
  auto text = readString(ctx, value, field + ".value", l, true);
  if (!text) return text.error();
  double v = -1;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
  if (ec != std::errc() || end != text->data() + text->size() || !(v >= 0 && v <= 100)) {
    return ctx.error(field + ".value", lineOf(value, l),
                     fmt::format("must be a number in 0..100, got '{}'", *text));
  }
  return routing::Percentage{static_cast<uint32_t>(std::llround(v * 10'000))};
}

// The deprecated integer percent fields (fault.delay.percent, mirrorPercent).
Result<routing::Percentage> readIntegerPercent(const Context& ctx, const YAML::Node& node,
                                               const std::string& field, int line) {
  auto value = readBounded(ctx, node, field, line, 0, 100);
  if (!value) return value.error();
  return routing::Percentage{*value * 10'000};
}

std::optional<std::string> decodeBase64(std::string_view text) {
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (char c : text) {
    int v = -1;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    if (c >= '0' && c <= '9') v = c - '0' + 52;
    if (c == '+' || c == '-') v = 62;
    if (c == '/' || c == '_') v = 63;
    if (c == '=' || c == '\n' || c == ' ') continue;
    if (v < 0) return std::nullopt;
    bits = (bits << 6) | static_cast<uint32_t>(v);
    count += 6;
    if (count >= 8) {
      count -= 8;
      out.push_back(static_cast<char>((bits >> count) & 0xff));
    }
  }
  return out;
}

// A mirror's or a route's Destination: {host, subset, port.number}.
Result<RouteDestination> readDestination(const Context& ctx, const YAML::Node& node,
                                         const std::string& field, int line) {
  if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
  int l = line;
  Fields f(node);
  RouteDestination dest;
  dest.line = l;
  auto host = readString(ctx, f.get("host"), field + ".host", l, true);
  if (!host) return host.error();
  dest.host = std::move(*host);
  auto subset = readString(ctx, f.get("subset"), field + ".subset", l, false);
  if (!subset) return subset.error();
  dest.subset = std::move(*subset);
  if (YAML::Node port = f.get("port"); present(port)) {
    if (auto r = requireMap(ctx, port, field + ".port", l); !r) return r.error();
    auto number =
        readPort(ctx, Fields(port).get("number"), field + ".port.number", lineOf(port, l));
    if (!number) return number.error();
    dest.port = *number;
  }
  return dest;
}

Result<void> readRewrite(const Context& ctx, const YAML::Node& node, const std::string& field,
                         int line, routing::HttpRoute& out) {
  if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
  int l = lineOf(node, line);
  Fields f(node);
  routing::HttpRewrite rewrite;
  auto uri = readString(ctx, f.get("uri"), field + ".uri", l, false);
  if (!uri) return uri.error();
  rewrite.uri = std::move(*uri);
  auto authority = readString(ctx, f.get("authority"), field + ".authority", l, false);
  if (!authority) return authority.error();
  rewrite.authority = std::move(*authority);
  if (YAML::Node re = f.get("uriRegexRewrite"); present(re)) {
    std::string rfield = field + ".uriRegexRewrite";
    if (!rewrite.uri.empty()) {
      return ctx.error(rfield, lineOf(re, l), "cannot be set together with rewrite.uri");
    }
    if (auto r = requireMap(ctx, re, rfield, l); !r) return r.error();
    Fields rf(re);
    int rline = lineOf(re, l);
    auto pattern = readString(ctx, rf.get("match"), rfield + ".match", rline, true);
    if (!pattern) return pattern.error();
    auto with = readString(ctx, rf.get("rewrite"), rfield + ".rewrite", rline, false);
    if (!with) return with.error();
    if (auto r = routing::setUriRegexRewrite(rewrite, *pattern, *with); !r) {
      return ctx.error(rfield, rline, r.error().message);
    }
  }
  out.rewrite = std::move(rewrite);
  return {};
}

Result<void> readRedirect(const Context& ctx, const YAML::Node& node, const std::string& field,
                          int line, routing::HttpRoute& out) {
  if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
  int l = lineOf(node, line);
  Fields f(node);
  routing::HttpRedirect redirect;
  const std::pair<const char*, std::string*> texts[] = {
      {"uri", &redirect.uri}, {"authority", &redirect.authority}, {"scheme", &redirect.scheme}};
  for (const auto& [key, target] : texts) {
    auto text = readString(ctx, f.get(key), fmt::format("{}.{}", field, key), l, false);
    if (!text) return text.error();
    *target = std::move(*text);
  }
  if (YAML::Node port = f.get("port"); present(port)) {
    auto number = readPort(ctx, port, field + ".port", l);
    if (!number) return number.error();
    redirect.port = *number;
  }
  if (YAML::Node derive = f.get("derivePort"); present(derive)) {
    auto text = readString(ctx, derive, field + ".derivePort", l, true);
    if (!text) return text.error();
    if (*text == "FROM_REQUEST_PORT") {
      redirect.derive_from_request_port = true;
    } else if (*text != "FROM_PROTOCOL_DEFAULT") {
      return ctx.error(
          field + ".derivePort", lineOf(derive, l),
          fmt::format("must be FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT, got '{}'", *text));
    }
    if (redirect.port != 0) {
      return ctx.error(field + ".derivePort", lineOf(derive, l),
                       "cannot be set together with redirect.port");
    }
  }
  if (YAML::Node code = f.get("redirectCode"); present(code)) {
    auto value = readInt(ctx, code, field + ".redirectCode", l);
    if (!value) return value.error();
    if (*value != 301 && *value != 302 && *value != 303 && *value != 307 && *value != 308) {
      return ctx.error(field + ".redirectCode", lineOf(code, l),
                       fmt::format("must be 301, 302, 303, 307 or 308, got {}", *value));
    }
    redirect.code = static_cast<uint16_t>(*value);
  }
  out.redirect = std::move(redirect);
  return {};
}

Result<void> readDirectResponse(const Context& ctx, const YAML::Node& node,
                                const std::string& field, int line, routing::HttpRoute& out) {
  if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
  int l = lineOf(node, line);
  Fields f(node);
  routing::HttpDirectResponse response;
  auto status = readBounded(ctx, f.get("status"), field + ".status", l, 200, 599);
  if (!status) return status.error();
  response.status = static_cast<uint16_t>(*status);
  if (YAML::Node body = f.get("body"); present(body)) {
    std::string bfield = field + ".body";
    if (auto r = requireMap(ctx, body, bfield, l); !r) return r.error();
    Fields bf(body);
    int bline = lineOf(body, l);
    YAML::Node string = bf.get("string");
    YAML::Node bytes = bf.get("bytes");
    if (present(string) && present(bytes)) {
      return ctx.error(bfield, bline, "only one of string or bytes may be set");
    }
    if (present(string)) {
      auto text = readString(ctx, string, bfield + ".string", bline, false);
      if (!text) return text.error();
      response.body = std::move(*text);
    } else if (present(bytes)) {
      auto text = readString(ctx, bytes, bfield + ".bytes", bline, false);
      if (!text) return text.error();
      auto decoded = decodeBase64(*text);
      if (!decoded) {
        return ctx.error(bfield + ".bytes", lineOf(bytes, bline), "is not valid base64");
      }
      response.body = std::move(*decoded);
    }
  }
  out.direct_response = std::move(response);
  return {};
}

// gRPC conditions and the other names Istio accepts: valid, but they never hold for an
// HTTP/1.1 response, as in Envoy.
bool inertRetryOn(std::string_view name) {
  for (std::string_view n :
       {"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
        "retriable-headers", "envoy-ratelimited", "http3-post-connect-failure"}) {
    if (n == name) return true;
  }
  return false;
}

Result<void> readRetries(const Context& ctx, const YAML::Node& node, const std::string& field,
                         int line, routing::HttpRoute& out) {
  if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
  int l = lineOf(node, line);
  Fields f(node);
  routing::RetryPolicy retries = routing::RetryPolicy::istioDefault();
  retries.attempts = 0;  // Istio: no attempts, no retries
  if (YAML::Node v = f.get("attempts"); present(v)) {
    auto attempts = readBounded(ctx, v, field + ".attempts", l, 0, INT32_MAX);
    if (!attempts) return attempts.error();
    retries.attempts = *attempts;
  }
  if (YAML::Node v = f.get("perTryTimeout"); present(v)) {
    auto value = readDurationValue(ctx, v, field + ".perTryTimeout", l, false);
    if (!value) return value.error();
    retries.per_try_timeout = *value;
  }
  if (YAML::Node v = f.get("retryOn"); present(v)) {
    auto text = readString(ctx, v, field + ".retryOn", l, false);
    if (!text) return text.error();
    routing::ParsedRetryOn parsed = routing::parseRetryOn(*text);
    for (const auto& name : parsed.unknown) {
      if (inertRetryOn(name)) continue;
      return ctx.error(field + ".retryOn", lineOf(v, l),
                       fmt::format("'{}' is not a retryOn condition (5xx, gateway-error, reset, "
                                   "connect-failure, retriable-4xx, refused-stream, "
                                   "retriable-status-codes, a status code, or a gRPC one)",
                                   name));
    }
    retries.retry_on = parsed.bits;
    retries.retriable_status_codes = std::move(parsed.codes);
  }
  if (retries.attempts == 0) retries = routing::RetryPolicy{};
  out.retries = std::move(retries);
  return {};
}

Result<void> readFault(const Context& ctx, const YAML::Node& node, const std::string& field,
                       int line, routing::HttpRoute& out, std::vector<Note>& notes) {
  if (auto r = requireMap(ctx, node, field, line); !r) return r.error();
  int l = lineOf(node, line);
  Fields f(node);
  // Istio: a fault without a percentage applies to no request.
  auto percentage = [&](const Fields& ff, const std::string& ffield, int fline,
                        bool integer_ok) -> Result<routing::Percentage> {
    if (YAML::Node p = ff.get("percentage"); present(p)) {
      return readPercentage(ctx, p, ffield + ".percentage", fline);
    }
    if (YAML::Node p = ff.get("percent"); integer_ok && present(p)) {
      return readIntegerPercent(ctx, p, ffield + ".percent", fline);
    }
    notes.push_back({Severity::kWarning, ffield, fline,
                     "has no percentage, so it applies to no request (as in Istio); add "
                     "percentage.value: 100 to apply it to every request"});
    return routing::Percentage{0};
  };
  if (YAML::Node delay = f.get("delay"); present(delay)) {
    std::string dfield = field + ".delay";
    if (auto r = requireMap(ctx, delay, dfield, l); !r) return r.error();
    Fields df(delay);
    int dline = lineOf(delay, l);
    if (YAML::Node fixed = df.get("fixedDelay"); present(fixed)) {
      auto value = readDurationValue(ctx, fixed, dfield + ".fixedDelay", dline, false);
      if (!value) return value.error();
      out.fault.delay = *value;
      auto p = percentage(df, dfield, dline, true);
      if (!p) return p.error();
      out.fault.delay_percentage = *p;
    } else if (!present(df.get("exponentialDelay"))) {
      return ctx.error(dfield + ".fixedDelay", dline, "is required");
    }
  }
  if (YAML::Node abort = f.get("abort"); present(abort)) {
    std::string afield = field + ".abort";
    if (auto r = requireMap(ctx, abort, afield, l); !r) return r.error();
    Fields af(abort);
    int aline = lineOf(abort, l);
    if (YAML::Node status = af.get("httpStatus"); present(status)) {
      auto value = readBounded(ctx, status, afield + ".httpStatus", aline, 200, 599);
      if (!value) return value.error();
      out.fault.abort_status = static_cast<uint16_t>(*value);
      auto p = percentage(af, afield, aline, false);
      if (!p) return p.error();
      out.fault.abort_percentage = *p;
    } else if (!present(af.get("grpcStatus")) && !present(af.get("http2Error"))) {
      return ctx.error(afield + ".httpStatus", aline, "is required");
    }
  }
  return {};
}

// `mirror` (with mirrorPercentage, or the deprecated integer mirrorPercent) or `mirrors[]`
// (each entry its destination and percentage, 100% when absent): every one is applied. Istio
// rejects a route with both forms; so does this.
Result<void> readMirror(const Context& ctx, const Fields& rf, const std::string& field, int line,
                        routing::HttpRoute& out, VsRoute& route, std::vector<Note>& notes) {
  YAML::Node mirror = rf.get("mirror");
  YAML::Node mirrors = rf.get("mirrors");
  if (present(mirror) && present(mirrors)) {
    return ctx.error(field + ".mirrors", lineOf(mirrors, line),
                     "cannot be set together with mirror (Istio: \"HTTP route cannot contain both "
                     "mirror and mirrors\")");
  }
  auto add = [&](RouteDestination dest, std::string dfield, routing::Percentage percentage) {
    out.mirrors.push_back({routing::HttpDestination{dest.host, dest.subset, 0}, percentage});
    route.mirrors.push_back({std::move(dest), std::move(dfield)});
  };
  if (present(mirror)) {
    routing::Percentage percentage{routing::Percentage::kMillion};
    auto dest = readDestination(ctx, mirror, field + ".mirror", lineOf(mirror, line));
    if (!dest) return dest.error();
    if (YAML::Node p = rf.get("mirrorPercentage"); present(p)) {
      auto value = readPercentage(ctx, p, field + ".mirrorPercentage", line);
      if (!value) return value.error();
      percentage = *value;
    } else {
      for (const char* key : {"mirrorPercent", "mirror_percent"}) {
        if (YAML::Node p = rf.get(key); present(p)) {
          auto value = readIntegerPercent(ctx, p, fmt::format("{}.{}", field, key), line);
          if (!value) return value.error();
          percentage = *value;
        }
      }
    }
    add(std::move(*dest), field + ".mirror", percentage);
    return {};
  }
  if (!present(mirrors)) {
    // mirrorPercentage alone controls nothing (Istio applies it to `mirror` only).
    for (const char* key : {"mirrorPercentage", "mirrorPercent", "mirror_percent"}) {
      if (YAML::Node p = rf.get(key); present(p)) {
        notes.push_back({Severity::kWarning, fmt::format("{}.{}", field, key), lineOf(p, line),
                         "has no effect without mirror"});
      }
    }
    return {};
  }
  std::string mfield = field + ".mirrors";
  if (auto r = optionalSequence(ctx, mirrors, mfield, line); !r) return r.error();
  for (const char* key : {"mirrorPercentage", "mirrorPercent", "mirror_percent"}) {
    if (YAML::Node p = rf.get(key); present(p)) {
      notes.push_back({Severity::kWarning, fmt::format("{}.{}", field, key), lineOf(p, line),
                       "has no effect with mirrors[]: each entry has its own percentage"});
    }
  }
  for (size_t i = 0; i < mirrors.size(); ++i) {
    YAML::Node entry = mirrors[i];
    std::string efield = fmt::format("{}[{}]", mfield, i);
    if (auto r = requireMap(ctx, entry, efield, line); !r) return r.error();
    int eline = lineOf(entry, line);
    Fields ef(entry);
    YAML::Node d = ef.get("destination");
    if (!present(d)) return ctx.error(efield + ".destination", eline, "is required");
    auto dest = readDestination(ctx, d, efield + ".destination", lineOf(d, eline));
    if (!dest) return dest.error();
    routing::Percentage percentage{routing::Percentage::kMillion};
    if (YAML::Node p = ef.get("percentage"); present(p)) {
      auto value = readPercentage(ctx, p, efield + ".percentage", eline);
      if (!value) return value.error();
      percentage = *value;
    }
    add(std::move(*dest), efield + ".destination", percentage);
  }
  return {};
}

// The per-request model of one spec.http[] entry. Destinations keep their place in
// `route.destinations`; the builder fills their weights and subset indexes.
Result<routing::HttpRoute> readHttpRoute(const Context& ctx, const YAML::Node& node,
                                         const std::string& field, int line, VsRoute& route,
                                         std::vector<Note>& notes) {
  Fields rf(node);
  routing::HttpRoute out;
  out.field = field;
  out.line = line;
  auto name = readString(ctx, rf.get("name"), field + ".name", line, false);
  if (!name) return name.error();
  out.name = std::move(*name);
  YAML::Node match = rf.get("match");
  if (present(match) && match.IsSequence() && match.size() > 0) {
    size_t i = 0;
    for (const auto& entry : match) {
      auto m = readHttpMatch(ctx, entry, fmt::format("{}.match[{}]", field, i++), line);
      if (!m) return m.error();
      if (*m) out.matches.push_back(std::move(**m));
    }
    // Every entry is for gateways: not a sidecar route.
    route.sidecar = !out.matches.empty();
  }
  YAML::Node destinations = rf.get("route");
  bool has_route = present(destinations);
  size_t d = 0;
  for (const auto& dnode : has_route&& destinations.IsSequence() ? destinations : YAML::Node()) {
    std::string dfield = fmt::format("{}.route[{}]", field, d++);
    routing::HttpRouteDestination dest;
    if (dnode.IsMap()) {
      Fields df(dnode);
      auto headers =
          readHeaderOps(ctx, df.get("headers"), dfield + ".headers", lineOf(dnode, line));
      if (!headers) return headers.error();
      dest.headers = std::move(*headers);
    }
    out.destinations.push_back(std::move(dest));
  }
  auto headers = readHeaderOps(ctx, rf.get("headers"), field + ".headers", line);
  if (!headers) return headers.error();
  out.headers = std::move(*headers);
  YAML::Node redirect = rf.get("redirect");
  YAML::Node direct = rf.get("directResponse");
  if (present(redirect)) {
    if (has_route) {
      return ctx.error(field + ".redirect", lineOf(redirect, line),
                       "cannot be set together with route");
    }
    if (present(direct)) {
      return ctx.error(field + ".directResponse", lineOf(direct, line),
                       "cannot be set together with redirect");
    }
    if (auto r = readRedirect(ctx, redirect, field + ".redirect", line, out); !r) {
      return r.error();
    }
  }
  if (present(direct)) {
    if (has_route) {
      return ctx.error(field + ".directResponse", lineOf(direct, line),
                       "cannot be set together with route");
    }
    if (auto r = readDirectResponse(ctx, direct, field + ".directResponse", line, out); !r) {
      return r.error();
    }
  }
  if (YAML::Node rewrite = rf.get("rewrite"); present(rewrite)) {
    if (present(redirect)) {
      return ctx.error(field + ".rewrite", lineOf(rewrite, line),
                       "cannot be set together with redirect");
    }
    if (auto r = readRewrite(ctx, rewrite, field + ".rewrite", line, out); !r) return r.error();
  }
  if (YAML::Node timeout = rf.get("timeout"); present(timeout)) {
    auto value = readDurationValue(ctx, timeout, field + ".timeout", line, true);
    if (!value) return value.error();
    out.timeout = *value;
  }
  if (YAML::Node retries = rf.get("retries"); present(retries)) {
    if (auto r = readRetries(ctx, retries, field + ".retries", line, out); !r) return r.error();
  }
  if (YAML::Node fault = rf.get("fault"); present(fault)) {
    if (auto r = readFault(ctx, fault, field + ".fault", line, out, notes); !r) return r.error();
  }
  if (auto r = readMirror(ctx, rf, field, line, out, route, notes); !r) return r.error();
  return out;
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
    spec.mesh = mesh;
  }

  const std::pair<const char*, RouteSection> sections[] = {
      {"tcp", RouteSection::kTcp}, {"http", RouteSection::kHttp}, {"tls", RouteSection::kTls}};
  for (const auto& [section, kind] : sections) {
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
      route.section = kind;
      route.line = route_line;
      // TLS routes are not applied yet (the field table reports them); keep their place only.
      if (kind != RouteSection::kTls) {
        if (auto r = readMatches(ctx, rf.get("match"), field + ".match", route_line, route); !r) {
          return r.error();
        }
      }
      if (kind == RouteSection::kHttp) {
        // An invalid value here leaves this route out alone, with an error naming it.
        Context l7(ctx);
        l7.bare = true;
        auto http = readHttpRoute(l7, node, field, route_line, route, out.notes);
        if (http) {
          route.http = std::make_shared<const routing::HttpRoute>(std::move(*http));
        } else {
          route.rejected = true;
          out.notes.push_back({Severity::kError, l7.last_field, l7.last_line,
                               http.error().message + "; this route is left out"});
        }
      }
      YAML::Node destinations = rf.get("route");
      if (!present(destinations)) {
        if (kind == RouteSection::kHttp) {
          for (const char* action : {"redirect", "directResponse", "delegate"}) {
            if (present(rf.get(action))) route.action = action;
          }
          if (route.action.empty()) {
            return ctx.error(field, route_line,
                             "needs a route, a redirect, a directResponse or a delegate");
          }
          spec.routes.push_back(std::move(route));
          continue;
        }
        if (kind == RouteSection::kTls) continue;
        return ctx.error(field + ".route", route_line, "is required: a list of destinations");
      }
      if (!destinations.IsSequence() || destinations.size() == 0) {
        return ctx.error(field + ".route", lineOf(destinations, route_line),
                         "must be a non-empty list of destinations");
      }
      size_t d = 0;
      int64_t sum = 0;
      for (const auto& dnode : destinations) {
        auto dest =
            readRouteDestination(ctx, dnode, fmt::format("{}.route[{}]", field, d++), route_line);
        if (!dest) return dest.error();
        sum += dest->weight;
        route.destinations.push_back(std::move(*dest));
      }
      // Istio: a lone destination takes all traffic whatever its weight.
      if (route.destinations.size() == 1) {
        route.destinations[0].weight = 100;
      } else if (sum == 0) {
        return ctx.error(field + ".route", lineOf(destinations, route_line),
                         "the weights add up to 0: at least one destination needs a weight");
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
  auto traffic = readTrafficPolicy(ctx, f.get("trafficPolicy"), "spec.trafficPolicy", spec_line);
  if (!traffic) return traffic.error();
  spec.traffic = std::move(*traffic);
  spec.policy = spec.traffic.level.lb;
  spec.has_traffic_policy = present(f.get("trafficPolicy"));

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
    auto subset_traffic =
        readTrafficPolicy(ctx, sf.get("trafficPolicy"), field + ".trafficPolicy", subset_line);
    if (!subset_traffic) return subset_traffic.error();
    subset.traffic = std::move(*subset_traffic);
    subset.policy = subset.traffic.level.lb;
    spec.subsets.push_back(std::move(subset));
  }
  if (YAML::Node selector = f.get("workloadSelector"); present(selector)) {
    if (auto r = requireMap(ctx, selector, "spec.workloadSelector", spec_line); !r) {
      return r.error();
    }
    spec.selector_line = lineOf(selector, spec_line);
    auto labels = readLabels(ctx, Fields(selector).get("matchLabels"),
                             "spec.workloadSelector.matchLabels", spec.selector_line);
    if (!labels) return labels.error();
    spec.workload_selector = std::move(*labels);
  }
  auto tls = readDestinationTls(
      spec_node, spec_line, out,
      [&ctx](std::string_view f, int l, std::string_view what) { return ctx.error(f, l, what); });
  if (!tls) return tls.error();
  spec.tls = std::move(*tls);
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
  // Remora's own kind: a key its field table does not know is an error, not a warning.
  if (auto unknown = f.unknownKey([](std::string_view key) {
        return isKnownField("ProxyConfig", fmt::format("spec.{}", key));
      })) {
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
    if (*text == "0" || *text == "0s") {  // turns the timeout off
      target = std::chrono::milliseconds(0);
      return {};
    }
    auto value = parseDuration(*text);
    if (!value) return ctx.error(field, lineOf(node, spec_line), value.error().message);
    target = *value;
    return {};
  };
  for (const auto& r :
       {port("outboundPort", spec.outbound_port), port("inboundPort", spec.inbound_port),
        port("adminPort", spec.admin_port), ip("inboundSourceAddress", spec.inbound_source),
        duration("connectTimeout", spec.connect_timeout),
        duration("drainTimeout", spec.drain_timeout), duration("idleTimeout", spec.idle_timeout),
        duration("halfCloseTimeout", spec.half_close_timeout),
        duration("maxConnectionDuration", spec.max_connection_duration),
        duration("tcpKeepalive", spec.tcp_keepalive),
        duration("inboundDrainGrace", spec.inbound_drain_grace)}) {
    if (!r) return r.error();
  }
  if (YAML::Node node = f.get("protocolDetectionTimeout"); present(node)) {
    // No "0 turns it off" here: an unnamed port always has its sniff bounded.
    auto text = readString(ctx, node, "spec.protocolDetectionTimeout", spec_line, true);
    if (!text) return text.error();
    auto value = parseDuration(*text);
    if (!value || value->count() <= 0) {
      return ctx.error(
          "spec.protocolDetectionTimeout", lineOf(node, spec_line),
          fmt::format("must be a duration of more than 0 such as 100ms or 1s, got '{}'", *text));
    }
    spec.protocol_detection_timeout = *value;
  }
  if (YAML::Node node = f.get("pathNormalization"); present(node)) {
    // Istio's meshConfig shape. An unset normalization is meshConfig's DEFAULT, i.e. BASE.
    if (auto r = requireMap(ctx, node, "spec.pathNormalization", spec_line); !r) return r.error();
    const int norm_line = lineOf(node, spec_line);
    Fields fields(node);
    if (auto unknown = fields.unknownKey([](std::string_view key) {
          return isKnownField("ProxyConfig", fmt::format("spec.pathNormalization.{}", key));
        })) {
      return ctx.error(fmt::format("spec.pathNormalization.{}", unknown->first),
                       lineOf(unknown->second, norm_line), "unknown field");
    }
    if (YAML::Node mode_node = fields.get("normalization"); present(mode_node)) {
      auto mode =
          readString(ctx, mode_node, "spec.pathNormalization.normalization", norm_line, true);
      if (!mode) return mode.error();
      auto parsed = security::parsePathNormalization(*mode);
      if (!parsed) {
        return ctx.error("spec.pathNormalization.normalization", lineOf(mode_node, norm_line),
                         fmt::format("must be {} (or DEFAULT, which is BASE), got '{}'",
                                     security::kPathNormalizationNames, *mode));
      }
      spec.path_normalization = parsed;
    }
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
  if (YAML::Node node = f.get("inboundInterceptionMode"); present(node)) {
    auto mode = readString(ctx, node, "spec.inboundInterceptionMode", spec_line, true);
    if (!mode) return mode.error();
    if (*mode == "REDIRECT" || *mode == "TPROXY") {
      spec.inbound_transparent = *mode == "TPROXY";
    } else {
      return ctx.error("spec.inboundInterceptionMode", lineOf(node, spec_line),
                       fmt::format("must be REDIRECT or TPROXY, got '{}'", *mode));
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
  // An integer key within bounds; `range` words them in the error.
  auto integer = [&](const char* key, int64_t low, int64_t high, std::string_view range,
                     auto& target) -> Result<void> {
    YAML::Node node = f.get(key);
    if (!present(node)) return {};
    std::string field = fmt::format("spec.{}", key);
    auto value = readInt(ctx, node, field, spec_line);
    if (!value) return value.error();
    if (*value < low || *value > high) {
      return ctx.error(field, lineOf(node, spec_line),
                       fmt::format("must be in {}, got {}", range, *value));
    }
    target = static_cast<typename std::decay_t<decltype(target)>::value_type>(*value);
    return {};
  };
  for (const auto& r : {integer("maxConnectAttempts", 1, 100, "1..100", spec.max_connect_attempts),
                        integer("maxConnections", 0, 10000000, "0..10000000 (0: no limit)",
                                spec.max_connections)}) {
    if (!r) return r.error();
  }
  if (YAML::Node node = f.get("bufferLimit"); present(node)) {
    // Bytes, or a Kubernetes binary quantity: 65536, 64Ki, 1Mi.
    auto text = readString(ctx, node, "spec.bufferLimit", spec_line, true);
    if (!text) return text.error();
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
    std::string_view unit(end, static_cast<size_t>(text->data() + text->size() - end));
    int shift = unit.empty() ? 0 : unit == "Ki" ? 10 : unit == "Mi" ? 20 : unit == "Gi" ? 30 : -1;
    if (ec != std::errc() || end == text->data() || shift < 0 || value == 0) {
      return ctx.error(
          "spec.bufferLimit", lineOf(node, spec_line),
          fmt::format("must be a positive size such as 65536, 64Ki or 1Mi, got '{}'", *text));
    }
    spec.buffer_limit_bytes = value << shift;
  }
  if (YAML::Node node = f.get("relay"); present(node)) {
    auto relay = readString(ctx, node, "spec.relay", spec_line, true);
    if (!relay) return relay.error();
    if (*relay != "auto" && *relay != "kernel" && *relay != "uring") {
      return ctx.error("spec.relay", lineOf(node, spec_line),
                       fmt::format("must be auto, kernel or uring, got '{}'", *relay));
    }
    spec.relay = *relay;
  }
  if (YAML::Node node = f.get("tlsDir"); present(node)) {
    auto dir = readString(ctx, node, "spec.tlsDir", spec_line, true);
    if (!dir) return dir.error();
    if (dir->empty() || dir->front() != '/') {
      return ctx.error("spec.tlsDir", lineOf(node, spec_line),
                       fmt::format("must be an absolute directory path, got '{}'", *dir));
    }
    spec.tls_dir = *dir;
  }
  if (YAML::Node node = f.get("trustDomain"); present(node)) {
    auto domain = readString(ctx, node, "spec.trustDomain", spec_line, true);
    if (!domain) return domain.error();
    if (auto valid = security::checkTrustDomain(*domain); !valid) {
      return ctx.error("spec.trustDomain", lineOf(node, spec_line), valid.error().message);
    }
    spec.trust_domain = *domain;
  }
  for (auto [key, target] :
       {std::pair{"podNamespace", &spec.pod_namespace}, std::pair{"podName", &spec.pod_name},
        std::pair{"podLabelsFile", &spec.pod_labels_file}}) {
    YAML::Node node = f.get(key);
    if (!present(node)) continue;
    std::string field = fmt::format("spec.{}", key);
    auto text = readString(ctx, node, field, spec_line, true);
    if (!text) return text.error();
    if (target == &spec.pod_labels_file && text->front() != '/') {
      return ctx.error(field, lineOf(node, spec_line),
                       fmt::format("must be an absolute file path, got '{}'", *text));
    }
    *target = *text;
  }
  if (YAML::Node node = f.get("accessLog"); present(node)) {
    auto value = readBool(ctx, node, "spec.accessLog", spec_line);
    if (!value) return value.error();
    spec.access_log = *value;
  }
  out.spec = spec;
  return {};
}

// core/v1 Endpoints, read into the EndpointSlice form: the same endpoints, named by the
// Service they belong to (the object's own name).
Result<void> parseEndpoints(const Context& ctx, const Fields& top, int line, Object& out) {
  EndpointSliceSpec spec;
  spec.service = out.name;
  YAML::Node subsets = top.get("subsets");
  if (auto r = optionalSequence(ctx, subsets, "subsets", line); !r) return r.error();
  size_t s = 0;
  bool first_ports = true;
  for (const auto& subset : present(subsets) ? subsets : YAML::Node()) {
    std::string field = fmt::format("subsets[{}]", s++);
    if (auto r = requireMap(ctx, subset, field, line); !r) return r.error();
    int subset_line = lineOf(subset, line);
    Fields sf(subset);
    for (const char* list : {"addresses", "notReadyAddresses"}) {
      YAML::Node addresses = sf.get(list);
      std::string lfield = fmt::format("{}.{}", field, list);
      if (auto r = optionalSequence(ctx, addresses, lfield, subset_line); !r) return r.error();
      size_t a = 0;
      for (const auto& node : present(addresses) ? addresses : YAML::Node()) {
        std::string afield = fmt::format("{}[{}]", lfield, a++);
        if (auto r = requireMap(ctx, node, afield, subset_line); !r) return r.error();
        int address_line = lineOf(node, subset_line);
        Fields af(node);
        SliceEndpoint endpoint;
        auto ip = readIp(ctx, af.get("ip"), afield + ".ip", address_line);
        if (!ip) return ip.error();
        endpoint.address = *ip;
        endpoint.ready = std::string_view(list) == "addresses";
        if (YAML::Node ref = af.get("targetRef"); present(ref) && ref.IsMap()) {
          Fields rf(ref);
          YAML::Node kind = rf.get("kind");
          if (!present(kind) || (kind.IsScalar() && kind.Scalar() == "Pod")) {
            YAML::Node name = rf.get("name");
            YAML::Node ns = rf.get("namespace");
            if (name.IsScalar()) endpoint.pod_name = name.Scalar();
            endpoint.pod_namespace =
                ns.IsScalar() && !ns.Scalar().empty() ? ns.Scalar() : out.namespace_name;
          }
        }
        spec.endpoints.push_back(std::move(endpoint));
      }
    }
    // Endpoints may split ports over subsets; the proxy keeps one port list per Service, which
    // the endpoints controller writes identically in every subset.
    YAML::Node ports = sf.get("ports");
    if (auto r = optionalSequence(ctx, ports, field + ".ports", subset_line); !r) return r.error();
    size_t p = 0;
    for (const auto& node : present(ports) ? ports : YAML::Node()) {
      auto named =
          readNamedPort(ctx, node, fmt::format("{}.ports[{}]", field, p++), subset_line, "port");
      if (!named) return named.error();
      bool known = std::any_of(spec.ports.begin(), spec.ports.end(),
                               [&](const SlicePort& sp) { return sp.name == named->name; });
      if (named->tcp && (first_ports || !known)) {
        spec.ports.push_back({std::move(named->name), named->number});
      }
    }
    first_ports = false;
  }
  out.spec = std::move(spec);
  return {};
}

Result<WorkloadSpec> readWorkload(const Context& ctx, const YAML::Node& node,
                                  const std::string& field, int line, bool address_required) {
  WorkloadSpec workload;
  if (auto r = requireMap(ctx, node, field.empty() ? "spec" : field, line); !r) return r.error();
  int wline = lineOf(node, line);
  workload.line = wline;
  Fields f(node);
  std::string prefix = field.empty() ? "spec." : field + ".";
  auto address = readString(ctx, f.get("address"), prefix + "address", wline, address_required);
  if (!address) return address.error();
  workload.address = std::move(*address);
  YAML::Node ports = f.get("ports");
  if (present(ports)) {
    if (auto r = requireMap(ctx, ports, prefix + "ports", wline); !r) return r.error();
    for (auto it = ports.begin(); it != ports.end(); ++it) {
      auto number = readPort(ctx, it->second, prefix + "ports." + it->first.Scalar(), wline);
      if (!number) return number.error();
      workload.ports.emplace_back(it->first.Scalar(), *number);
    }
  }
  auto labels = readLabels(ctx, f.get("labels"), prefix + "labels", wline);
  if (!labels) return labels.error();
  workload.labels = std::move(*labels);
  return workload;
}

Result<void> parseWorkloadEntry(const Context& ctx, const Fields& top, int line, Object& out) {
  auto workload = readWorkload(ctx, top.get("spec"), "", line, true);
  if (!workload) return workload.error();
  if (auto ip = IpAddress::parse(workload->address); ip && isUnspecified(*ip)) {
    return ctx.error("spec.address", workload->line, "0.0.0.0/:: is not a workload address");
  }
  out.spec = WorkloadEntrySpec{std::move(*workload)};
  return {};
}

Result<void> parseServiceEntry(const Context& ctx, const Fields& top, int line, Object& out) {
  ServiceEntrySpec spec;
  YAML::Node spec_node = top.get("spec");
  if (auto r = requireMap(ctx, spec_node, "spec", line); !r) return r.error();
  int spec_line = lineOf(spec_node, line);
  spec.line = spec_line;
  Fields f(spec_node);
  YAML::Node hosts = f.get("hosts");
  if (!present(hosts) || !hosts.IsSequence() || hosts.size() == 0) {
    return ctx.error("spec.hosts", lineOf(hosts, spec_line), "is required: a list of hosts");
  }
  size_t h = 0;
  for (const auto& host : hosts) {
    auto text = readString(ctx, host, fmt::format("spec.hosts[{}]", h++), spec_line, true);
    if (!text) return text.error();
    spec.hosts.push_back({std::move(*text), lineOf(host, spec_line)});
  }
  YAML::Node addresses = f.get("addresses");
  if (auto r = optionalSequence(ctx, addresses, "spec.addresses", spec_line); !r) return r.error();
  size_t a = 0;
  for (const auto& node : present(addresses) ? addresses : YAML::Node()) {
    std::string field = fmt::format("spec.addresses[{}]", a++);
    auto text = readString(ctx, node, field, spec_line, true);
    if (!text) return text.error();
    auto cidr = Cidr::parse(*text);
    if (!cidr) return ctx.error(field, lineOf(node, spec_line), cidr.error().message);
    int full = cidr->address.family == Family::kIpv4 ? 32 : 128;
    if (cidr->prefix != full) {
      // A range cannot be one VIP: Istio matches it at the listener, Remora not yet.
      out.notes.push_back({Severity::kWarning, field, lineOf(node, spec_line),
                           fmt::format("the range {} is not matched yet (only single addresses "
                                       "are); connections to it pass through",
                                       *text)});
      continue;
    }
    spec.addresses.push_back(cidr->address);
  }
  YAML::Node ports = f.get("ports");
  if (auto r = optionalSequence(ctx, ports, "spec.ports", spec_line); !r) return r.error();
  size_t p = 0;
  for (const auto& node : present(ports) ? ports : YAML::Node()) {
    std::string field = fmt::format("spec.ports[{}]", p++);
    if (auto r = requireMap(ctx, node, field, spec_line); !r) return r.error();
    int port_line = lineOf(node, spec_line);
    Fields pf(node);
    ServiceEntryPortSpec port;
    port.line = port_line;
    auto number = readPort(ctx, pf.get("number"), field + ".number", port_line);
    if (!number) return number.error();
    port.number = *number;
    port.target = *number;
    if (YAML::Node target = pf.get("targetPort"); present(target)) {
      auto value = readPort(ctx, target, field + ".targetPort", port_line);
      if (!value) return value.error();
      port.target = *value;
    }
    auto name = readString(ctx, pf.get("name"), field + ".name", port_line, false);
    if (!name) return name.error();
    port.name = std::move(*name);
    auto protocol = readString(ctx, pf.get("protocol"), field + ".protocol", port_line, false);
    if (!protocol) return protocol.error();
    port.protocol = std::move(*protocol);
    if (port.protocol == "UDP") continue;
    spec.ports.push_back(std::move(port));
  }
  YAML::Node location = f.get("location");
  auto location_text = readString(ctx, location, "spec.location", spec_line, false);
  if (!location_text) return location_text.error();
  if (*location_text == "MESH_INTERNAL") {
    spec.mesh_internal = true;
  } else if (!location_text->empty() && *location_text != "MESH_EXTERNAL") {
    return ctx.error(
        "spec.location", lineOf(location, spec_line),
        fmt::format("must be MESH_EXTERNAL or MESH_INTERNAL, got '{}'", *location_text));
  }
  YAML::Node resolution = f.get("resolution");
  auto resolution_text = readString(ctx, resolution, "spec.resolution", spec_line, false);
  if (!resolution_text) return resolution_text.error();
  if (resolution_text->empty() || *resolution_text == "NONE") {
    spec.resolution = Resolution::kNone;
  } else if (*resolution_text == "STATIC") {
    spec.resolution = Resolution::kStatic;
  } else if (*resolution_text == "DNS") {
    spec.resolution = Resolution::kDns;
  } else if (*resolution_text == "DNS_ROUND_ROBIN") {
    spec.resolution = Resolution::kDnsRoundRobin;
  } else {
    return ctx.error(
        "spec.resolution", lineOf(resolution, spec_line),
        fmt::format("must be NONE, STATIC, DNS or DNS_ROUND_ROBIN, got '{}'", *resolution_text));
  }
  YAML::Node endpoints = f.get("endpoints");
  if (auto r = optionalSequence(ctx, endpoints, "spec.endpoints", spec_line); !r) return r.error();
  size_t e = 0;
  for (const auto& node : present(endpoints) ? endpoints : YAML::Node()) {
    std::string field = fmt::format("spec.endpoints[{}]", e++);
    auto workload = readWorkload(ctx, node, field, spec_line, true);
    if (!workload) return workload.error();
    bool is_ip = IpAddress::parse(workload->address).ok();
    if (spec.resolution == Resolution::kStatic && !is_ip) {
      return ctx.error(field + ".address", workload->line,
                       fmt::format("'{}' is not an IP address, which resolution STATIC needs",
                                   workload->address));
    }
    spec.endpoints.push_back(std::move(*workload));
  }
  if (YAML::Node selector = f.get("workloadSelector"); present(selector)) {
    if (auto r = requireMap(ctx, selector, "spec.workloadSelector", spec_line); !r) {
      return r.error();
    }
    auto labels = readLabels(ctx, Fields(selector).get("labels"), "spec.workloadSelector.labels",
                             lineOf(selector, spec_line));
    if (!labels) return labels.error();
    if (!spec.endpoints.empty()) {
      return ctx.error("spec.workloadSelector", lineOf(selector, spec_line),
                       "cannot be used together with endpoints");
    }
    spec.workload_selector = std::move(*labels);
  }
  out.spec = std::move(spec);
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

// The security kinds parse in security_parser.cc; these adapt them to the table below.
Result<void> parsePeerAuthenticationKind(const Context& ctx, const Fields& top, int line,
                                         Object& out) {
  return parsePeerAuthentication(
      top.get("spec"), line, out,
      [&ctx](std::string_view f, int l, std::string_view what) { return ctx.error(f, l, what); });
}
Result<void> parseAuthorizationPolicyKind(const Context& ctx, const Fields& top, int line,
                                          Object& out) {
  return parseAuthorizationPolicy(
      top.get("spec"), line, out,
      [&ctx](std::string_view f, int l, std::string_view what) { return ctx.error(f, l, what); });
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
    {"Endpoints", Kind::kEndpoints, {"v1"}, parseEndpoints},
    {"ServiceEntry",
     Kind::kServiceEntry,
     {"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"},
     parseServiceEntry},
    {"WorkloadEntry",
     Kind::kWorkloadEntry,
     {"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"},
     parseWorkloadEntry},
    {"PeerAuthentication",
     Kind::kPeerAuthentication,
     {"security.istio.io/v1", "security.istio.io/v1beta1"},
     parsePeerAuthenticationKind},
    {"AuthorizationPolicy",
     Kind::kAuthorizationPolicy,
     {"security.istio.io/v1", "security.istio.io/v1beta1"},
     parseAuthorizationPolicyKind},
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
    // A `kubectl get all -o yaml` dump holds Deployments, ConfigMaps, ...: not the proxy's
    // business, and no reason to refuse the file. The loader counts them per kind.
    model.skipped.push_back(fmt::format("{} ({})", *kind, *api_version));
    return {};
  }
  if (std::find(info->api_versions.begin(), info->api_versions.end(), *api_version) ==
      info->api_versions.end()) {
    return ctx.error("apiVersion", lineOf(api_node, line),
                     fmt::format("unsupported apiVersion '{}' for {}; expected {}", *api_version,
                                 *kind, fmt::join(info->api_versions, " or ")));
  }
  object.kind = info->value;
  for (auto& note : checkFields(info->kind, node)) {
    if (note.severity == Severity::kError) return ctx.error(note.field, note.line, note.message);
    object.notes.push_back(
        {note.severity, std::move(note.field), note.line, std::move(note.message)});
  }

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
    if (YAML::Node created = mf.get("creationTimestamp"); created.IsScalar()) {
      object.created = created.Scalar();
    }
  }
  if (auto r = info->parse(ctx, top, line, object); !r) return r.error();
  model.objects.push_back(std::move(object));
  return {};
}

// Parses one object; if it fails validation it is recorded as rejected, alone.
void parseOrReject(Context& ctx, const YAML::Node& node, int fallback_line, DocumentModel& model) {
  auto r = parseObject(ctx, node, fallback_line, model);
  if (r) return;
  std::string ns = ctx.kind == "Namespace"      ? ""
                   : ctx.namespace_name.empty() ? "default"
                                                : ctx.namespace_name;
  model.rejected.push_back(
      {ctx.kind, ns, ctx.name, ctx.item, ctx.last_field, ctx.last_line, r.error().message});
}

Result<void> parseRoot(const Placement& placement, const YAML::Node& root, DocumentModel& model) {
  Context ctx(placement);
  if (!root.IsMap()) {
    return ctx.error("", lineOf(root, 0),
                     fmt::format("expected a Kubernetes object (a mapping), got {}", shown(root)));
  }
  YAML::Node kind = Fields(root).get("kind");
  if (!kind.IsScalar() || kind.Scalar() != "List") {
    parseOrReject(ctx, root, 0, model);
    return {};
  }

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
      auto error = item_ctx.error("kind", lineOf(item, 0), "a List cannot hold another List");
      model.rejected.push_back(
          {"List", "", "", item_ctx.item, "kind", lineOf(item, 0), error.message});
      continue;
    }
    parseOrReject(item_ctx, item, lineOf(items, 0), model);
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
