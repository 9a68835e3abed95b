#include "config/security_parser.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <set>

#include "config/field_table.h"

namespace remora::config {
namespace {

using security::Action;
using security::MtlsMode;
using security::TlsMode;

bool present(const YAML::Node& node) { return node.IsDefined() && !node.IsNull(); }

// The value under `key`, or an undefined node: never yaml-cpp's operator[], whose zombie nodes
// throw on the next question asked of them.
YAML::Node child(const YAML::Node& map, std::string_view key) {
  if (!map.IsMap()) return YAML::Node();
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (it->first.IsScalar() && it->first.Scalar() == key) return it->second;
  }
  return YAML::Node();
}

int lineOf(const YAML::Node& node, int fallback) {
  const int line = node.Mark().line;
  return line < 0 ? fallback : line;
}

void note(Object& out, Severity severity, std::string field, int line, std::string message) {
  out.notes.push_back(Note{severity, std::move(field), line, std::move(message)});
}

// Whether a mapping inside an AuthorizationPolicy rule holds a key that the field table has no
// row for under `at` (a typo such as `principal`). The field table reports the key itself; the
// rule is marked so that the typo can only make the policy stricter, never broader
// (Rule::unknown_field).
bool hasUnknownKey(const YAML::Node& map, std::string_view at) {
  if (!map.IsMap()) return false;
  for (auto it = map.begin(); it != map.end(); ++it) {
    const std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
    if (!isKnownField("AuthorizationPolicy", fmt::format("{}.{}", at, key))) return true;
  }
  return false;
}

Result<std::vector<std::string>> readStrings(const YAML::Node& node, const std::string& field,
                                             int line, const ErrorFn& error) {
  std::vector<std::string> out;
  if (!present(node)) return out;
  if (!node.IsSequence()) return error(field, lineOf(node, line), "expected a list of strings");
  for (const auto& item : node) {
    if (!item.IsScalar()) return error(field, lineOf(item, line), "expected a string");
    out.push_back(item.Scalar());
  }
  return out;
}

Result<std::optional<security::Labels>> readSelector(const YAML::Node& spec, int line,
                                                     const ErrorFn& error) {
  YAML::Node selector = child(spec, "selector");
  if (!present(selector)) return std::optional<security::Labels>();
  if (!selector.IsMap())
    return error("spec.selector", lineOf(selector, line), "expected a mapping");
  security::Labels labels;
  YAML::Node match = child(selector, "matchLabels");
  if (present(match)) {
    if (!match.IsMap()) {
      return error("spec.selector.matchLabels", lineOf(match, line), "expected a mapping");
    }
    for (auto it = match.begin(); it != match.end(); ++it) {
      labels.emplace_back(it->first.Scalar(), it->second.Scalar());
    }
  }
  std::sort(labels.begin(), labels.end());
  return std::optional<security::Labels>(std::move(labels));
}

Result<uint16_t> readPort(const std::string& text, const std::string& field, int line,
                          const ErrorFn& error) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535) {
    return error(field, line, fmt::format("'{}' is not a port number (1-65535)", text));
  }
  return static_cast<uint16_t>(value);
}

Result<MtlsMode> readMtlsMode(const YAML::Node& mtls, const std::string& field, int line,
                              const ErrorFn& error) {
  if (!present(mtls)) return MtlsMode::kUnset;
  YAML::Node mode = mtls.IsMap() ? child(mtls, "mode") : YAML::Node();
  if (!present(mode)) return MtlsMode::kUnset;
  const std::string text = mode.IsScalar() ? mode.Scalar() : "";
  if (text == "UNSET") return MtlsMode::kUnset;
  if (text == "DISABLE") return MtlsMode::kDisable;
  if (text == "PERMISSIVE") return MtlsMode::kPermissive;
  if (text == "STRICT") return MtlsMode::kStrict;
  return error(field + ".mode", lineOf(mode, line),
               fmt::format("mode '{}' is not one of UNSET, DISABLE, PERMISSIVE, STRICT", text));
}

Result<std::vector<Cidr>> readCidrs(const YAML::Node& node, const std::string& field, int line,
                                    const ErrorFn& error) {
  auto texts = readStrings(node, field, line, error);
  if (!texts) return texts.error();
  std::vector<Cidr> out;
  for (const auto& t : *texts) {
    auto c = Cidr::parse(t);
    if (!c) return error(field, lineOf(node, line), fmt::format("'{}' is not an IP or CIDR", t));
    out.push_back(*c);
  }
  return out;
}

// Istio's ClientTLSSettings: the mode, and for SIMPLE and MUTUAL the files, SNI, SANs and
// insecureSkipVerify the origination uses (docs/TLS.md). Key checking is the field table's.
Result<security::ClientTlsSettings> readClientTls(const YAML::Node& tls, const std::string& field,
                                                  int line, Object& out, const ErrorFn& error) {
  security::ClientTlsSettings s;
  if (!tls.IsMap()) return error(field, lineOf(tls, line), "expected a mapping");
  YAML::Node mode = child(tls, "mode");
  const int mline = lineOf(mode, lineOf(tls, line));
  const std::string text = mode.IsScalar() ? mode.Scalar() : "DISABLE";
  if (text == "DISABLE") {
    s.mode = TlsMode::kDisable;
  } else if (text == "ISTIO_MUTUAL") {
    s.mode = TlsMode::kIstioMutual;
  } else if (text == "SIMPLE") {
    s.mode = TlsMode::kSimple;
  } else if (text == "MUTUAL") {
    s.mode = TlsMode::kMutual;
  } else {
    return error(
        field + ".mode", mline,
        fmt::format("mode '{}' is not one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL", text));
  }
  auto scalar = [&](const char* key, std::string& into) -> Result<void> {
    YAML::Node n = child(tls, key);
    if (!present(n)) return {};
    if (!n.IsScalar()) return error(field + "." + key, lineOf(n, mline), "expected a string");
    into = n.Scalar();
    return {};
  };
  for (auto [key, into] :
       {std::pair{"clientCertificate", &s.client_certificate},
        std::pair{"privateKey", &s.private_key}, std::pair{"caCertificates", &s.ca_certificates},
        std::pair{"sni", &s.sni}}) {
    if (auto r = scalar(key, *into); !r) return r.error();
  }
  YAML::Node sans = child(tls, "subjectAltNames");
  auto names = readStrings(sans, field + ".subjectAltNames", mline, error);
  if (!names) return names.error();
  s.subject_alt_names = std::move(*names);
  if (YAML::Node skip = child(tls, "insecureSkipVerify"); present(skip)) {
    const std::string v = skip.IsScalar() ? skip.Scalar() : "";
    if (v != "true" && v != "false") {
      return error(field + ".insecureSkipVerify", lineOf(skip, mline), "expected true or false");
    }
    s.insecure_skip_verify = v == "true";
  }
  YAML::Node credential = child(tls, "credentialName");
  const bool external = s.mode == TlsMode::kSimple || s.mode == TlsMode::kMutual;
  if (present(credential)) {
    note(out, Severity::kWarning, field + ".credentialName", lineOf(credential, mline),
         external ? "credentialName is not applied: Remora has no Kubernetes secret store; give "
                    "the files as clientCertificate, privateKey and caCertificates"
                  : "credentialName is not applied: Remora has no Kubernetes secret store");
  }
  if (s.mode == TlsMode::kMutual && (s.client_certificate.empty() || s.private_key.empty())) {
    return error(field, mline,
                 "mode MUTUAL needs clientCertificate and privateKey (credentialName is not "
                 "applied)");
  }
  if (s.mode == TlsMode::kSimple && (!s.client_certificate.empty() || !s.private_key.empty())) {
    note(out, Severity::kWarning, field, mline,
         "clientCertificate and privateKey are not presented in mode SIMPLE (only MUTUAL does)");
  }
  if (!external) {
    // ISTIO_MUTUAL uses the proxy's own certificate; DISABLE originates nothing.
    for (const char* key : {"clientCertificate", "privateKey", "caCertificates", "subjectAltNames",
                            "sni", "insecureSkipVerify"}) {
      if (YAML::Node n = child(tls, key); present(n)) {
        note(out, Severity::kWarning, field + "." + key, lineOf(n, mline),
             fmt::format("{} is not applied with mode {}: only SIMPLE and MUTUAL use it", key,
                         text));
      }
    }
  }
  return s;
}

}  // namespace

Result<void> parsePeerAuthentication(const YAML::Node& spec, int line, Object& out,
                                     const ErrorFn& error) {
  PeerAuthenticationSpec parsed;
  security::PeerAuthenticationRule& r = parsed.rule;
  r.namespace_name = out.namespace_name;
  r.name = out.name;
  r.created = out.created;
  if (present(spec)) {
    if (!spec.IsMap()) return error("spec", lineOf(spec, line), "expected a mapping");
    const int spec_line = lineOf(spec, line);
    auto selector = readSelector(spec, spec_line, error);
    if (!selector) return selector.error();
    r.selector = std::move(*selector);
    auto mode = readMtlsMode(child(spec, "mtls"), "spec.mtls", spec_line, error);
    if (!mode) return mode.error();
    r.mode = *mode;
    YAML::Node ports = child(spec, "portLevelMtls");
    if (present(ports)) {
      if (!ports.IsMap()) return error("spec.portLevelMtls", spec_line, "expected a mapping");
      if (!r.selector) {
        note(out, Severity::kWarning, "spec.portLevelMtls", lineOf(ports, spec_line),
             "portLevelMtls needs a workload selector; without one Istio ignores it, and so "
             "does Remora");
      }
      for (auto it = ports.begin(); it != ports.end(); ++it) {
        const std::string field = "spec.portLevelMtls." + it->first.Scalar();
        auto port = readPort(it->first.Scalar(), field, lineOf(it->first, spec_line), error);
        if (!port) return port.error();
        auto port_mode = readMtlsMode(it->second, field, lineOf(it->second, spec_line), error);
        if (!port_mode) return port_mode.error();
        if (r.selector) r.port_modes[*port] = *port_mode;
      }
    }
  }
  out.spec = std::move(parsed);
  return {};
}

Result<void> parseAuthorizationPolicy(const YAML::Node& spec, int line, Object& out,
                                      const ErrorFn& error) {
  AuthorizationPolicySpec parsed;
  security::AuthorizationPolicyRule& p = parsed.rule;
  p.namespace_name = out.namespace_name;
  p.name = out.name;
  if (present(spec)) {
    if (!spec.IsMap()) return error("spec", lineOf(spec, line), "expected a mapping");
    const int spec_line = lineOf(spec, line);
    for (const char* key : {"targetRef", "targetRefs"}) {
      if (present(child(spec, key))) {
        return error(std::string("spec.") + key, lineOf(child(spec, key), spec_line),
                     "targetRef (gateway and waypoint policies) is not supported by a sidecar; "
                     "the policy is refused rather than applied to the wrong workloads");
      }
    }
    auto selector = readSelector(spec, spec_line, error);
    if (!selector) return selector.error();
    p.selector = std::move(*selector);
    if (YAML::Node action = child(spec, "action"); present(action)) {
      const std::string text = action.IsScalar() ? action.Scalar() : "";
      if (text == "ALLOW") {
        p.action = Action::kAllow;
      } else if (text == "DENY") {
        p.action = Action::kDeny;
      } else if (text == "AUDIT") {
        p.action = Action::kAudit;
      } else if (text == "CUSTOM") {
        return error("spec.action", lineOf(action, spec_line),
                     "CUSTOM (external authorization) is not supported; the policy is refused");
      } else {
        return error("spec.action", lineOf(action, spec_line),
                     fmt::format("action '{}' is not one of ALLOW, DENY, AUDIT, CUSTOM", text));
      }
    }
    YAML::Node rules = child(spec, "rules");
    if (present(rules) && !rules.IsSequence()) {
      return error("spec.rules", lineOf(rules, spec_line), "expected a list");
    }
    size_t ri = 0;
    for (const auto& rn : present(rules) ? rules : YAML::Node()) {
      const std::string rfield = fmt::format("spec.rules[{}]", ri++);
      const int rline = lineOf(rn, spec_line);
      security::Rule rule;
      if (!rn.IsMap() && present(rn)) return error(rfield, rline, "expected a mapping");
      rule.unknown_field = hasUnknownKey(rn, "spec.rules[]");
      size_t fi = 0;
      for (const auto& fn :
           rn.IsMap() && child(rn, "from").IsSequence() ? child(rn, "from") : YAML::Node()) {
        const std::string field = fmt::format("{}.from[{}].source", rfield, fi++);
        YAML::Node s = fn.IsMap() ? child(fn, "source") : YAML::Node();
        const int sline = lineOf(s, rline);
        security::Source src;
        rule.unknown_field = rule.unknown_field || hasUnknownKey(fn, "spec.rules[].from[]") ||
                             hasUnknownKey(s, "spec.rules[].from[].source");
        for (auto [key, into] : {std::pair{"principals", &src.principals},
                                 std::pair{"notPrincipals", &src.not_principals},
                                 std::pair{"namespaces", &src.namespaces},
                                 std::pair{"notNamespaces", &src.not_namespaces}}) {
          auto v = readStrings(child(s, key), field + "." + key, sline, error);
          if (!v) return v.error();
          *into = std::move(*v);
        }
        for (auto [key, into] :
             {std::pair{"ipBlocks", &src.ip_blocks}, std::pair{"notIpBlocks", &src.not_ip_blocks},
              std::pair{"remoteIpBlocks", &src.remote_ip_blocks},
              std::pair{"notRemoteIpBlocks", &src.not_remote_ip_blocks}}) {
          auto v = readCidrs(child(s, key), field + "." + key, sline, error);
          if (!v) return v.error();
          *into = std::move(*v);
        }
        for (auto [key, into] : {std::pair{"requestPrincipals", &src.request_principals},
                                 std::pair{"notRequestPrincipals", &src.not_request_principals}}) {
          auto v = readStrings(child(s, key), field + "." + key, sline, error);
          if (!v) return v.error();
          *into = std::move(*v);
          // The field table reports it: no JWT authentication (docs/TLS.md).
          if (present(child(s, key))) src.l7 = true;
        }
        rule.from.push_back(std::move(src));
      }
      size_t ti = 0;
      for (const auto& tn :
           rn.IsMap() && child(rn, "to").IsSequence() ? child(rn, "to") : YAML::Node()) {
        const std::string field = fmt::format("{}.to[{}].operation", rfield, ti++);
        YAML::Node o = tn.IsMap() ? child(tn, "operation") : YAML::Node();
        const int oline = lineOf(o, rline);
        security::Operation op;
        rule.unknown_field = rule.unknown_field || hasUnknownKey(tn, "spec.rules[].to[]") ||
                             hasUnknownKey(o, "spec.rules[].to[].operation");
        for (auto [key, into] :
             {std::pair{"ports", &op.ports}, std::pair{"notPorts", &op.not_ports}}) {
          auto v = readStrings(child(o, key), field + "." + key, oline, error);
          if (!v) return v.error();
          for (const auto& t : *v) {
            auto port = readPort(t, field + "." + key, oline, error);
            if (!port) return port.error();
            into->push_back(*port);
          }
        }
        // HTTP-only: evaluated per request on HTTP ports; on a TCP port an ALLOW rule with one
        // never matches and a DENY rule matches on its other fields, as Istio does.
        for (auto [key, into] :
             {std::pair{"hosts", &op.hosts}, std::pair{"notHosts", &op.not_hosts},
              std::pair{"methods", &op.methods}, std::pair{"notMethods", &op.not_methods},
              std::pair{"paths", &op.paths}, std::pair{"notPaths", &op.not_paths}}) {
          auto v = readStrings(child(o, key), field + "." + key, oline, error);
          if (!v) return v.error();
          *into = std::move(*v);
          if (present(child(o, key))) op.l7 = true;
        }
        rule.to.push_back(std::move(op));
      }
      size_t wi = 0;
      for (const auto& wn :
           rn.IsMap() && child(rn, "when").IsSequence() ? child(rn, "when") : YAML::Node()) {
        const std::string field = fmt::format("{}.when[{}]", rfield, wi++);
        const int wline = lineOf(wn, rline);
        security::Condition c;
        rule.unknown_field = rule.unknown_field || hasUnknownKey(wn, "spec.rules[].when[]");
        c.key = wn.IsMap() && child(wn, "key").IsScalar() ? child(wn, "key").Scalar() : "";
        if (c.key.empty()) return error(field + ".key", wline, "a condition needs a key");
        auto values = readStrings(child(wn, "values"), field + ".values", wline, error);
        if (!values) return values.error();
        c.values = std::move(*values);
        auto not_values = readStrings(child(wn, "notValues"), field + ".notValues", wline, error);
        if (!not_values) return not_values.error();
        c.not_values = std::move(*not_values);
        static const std::set<std::string> kL4 = {
            "source.ip",      "remote.ip",        "source.namespace", "source.principal",
            "destination.ip", "destination.port", "connection.sni"};
        if (kL4.count(c.key) == 0) {
          c.l7 = true;
          if (c.key.rfind("request.auth.", 0) == 0) {
            note(out, Severity::kWarning, field + ".key", wline,
                 fmt::format("condition key '{}' needs JWT authentication, which Remora does not "
                             "do: no request has it, so its values never match",
                             c.key));
          } else if (!security::isHttpConditionKey(c.key)) {
            note(out, Severity::kWarning, field + ".key", wline,
                 fmt::format("condition key '{}' is unknown: not evaluated; an ALLOW rule with it "
                             "never matches, a DENY rule matches on its other fields",
                             c.key));
          }
        }
        rule.when.push_back(std::move(c));
      }
      if (rule.unknown_field) {
        note(out, Severity::kWarning, rfield, rline,
             "holds a field Remora does not know (reported on its own line): an ALLOW rule "
             "with it never matches, a DENY rule matches on its other fields, so a typo never "
             "lets more connections through");
      }
      p.rules.push_back(std::move(rule));
    }
  }
  out.spec = std::move(parsed);
  return {};
}

Result<DestinationTls> readDestinationTls(const YAML::Node& spec, int line, Object& out,
                                          const ErrorFn& error) {
  DestinationTls tls;
  YAML::Node traffic = spec.IsMap() ? child(spec, "trafficPolicy") : YAML::Node();
  if (traffic.IsMap()) {
    const int tline = lineOf(traffic, line);
    if (YAML::Node t = child(traffic, "tls"); present(t)) {
      auto settings = readClientTls(t, "spec.trafficPolicy.tls", tline, out, error);
      if (!settings) return settings.error();
      tls.settings = std::move(*settings);
    }
    YAML::Node ports = child(traffic, "portLevelSettings");
    size_t i = 0;
    for (const auto& pn : ports.IsSequence() ? ports : YAML::Node()) {
      const std::string field = fmt::format("spec.trafficPolicy.portLevelSettings[{}]", i++);
      if (!pn.IsMap() || !present(child(pn, "tls"))) continue;
      const int pline = lineOf(pn, tline);
      YAML::Node number =
          child(pn, "port").IsMap() ? child(child(pn, "port"), "number") : YAML::Node();
      if (!number.IsScalar())
        return error(field + ".port.number", pline, "a port number is needed");
      auto port = readPort(number.Scalar(), field + ".port.number", pline, error);
      if (!port) return port.error();
      auto settings = readClientTls(child(pn, "tls"), field + ".tls", pline, out, error);
      if (!settings) return settings.error();
      tls.ports.emplace_back(*port, std::move(*settings));
    }
  }
  YAML::Node subsets = spec.IsMap() ? child(spec, "subsets") : YAML::Node();
  size_t i = 0;
  for (const auto& sn : subsets.IsSequence() ? subsets : YAML::Node()) {
    YAML::Node t = sn.IsMap() && child(sn, "trafficPolicy").IsMap()
                       ? child(child(sn, "trafficPolicy"), "tls")
                       : YAML::Node();
    if (present(t)) {
      note(out, Severity::kWarning, fmt::format("spec.subsets[{}].trafficPolicy.tls", i),
           lineOf(t, line),
           "a subset's tls is not applied yet: the DestinationRule's own tls.mode (or auto mTLS) "
           "applies to every subset");
    }
    ++i;
  }
  return tls;
}

namespace {

// "name", "name.ns", "name.ns.svc[.cluster.local]" → "name.ns", as ServicePort::service names it.
std::string serviceKey(const std::string& host, const std::string& namespace_name) {
  const size_t dot = host.find('.');
  if (dot == std::string::npos) return host + "." + namespace_name;
  const size_t second = host.find('.', dot + 1);
  return second == std::string::npos ? host : host.substr(0, second);
}

}  // namespace

std::shared_ptr<const security::SecurityTable> buildSecurityTable(
    const std::vector<PlacedDocument>& documents,
    const std::function<bool(const Object&)>& policy_applies) {
  auto table = std::make_shared<security::SecurityTable>();
  bool wanted = false;
  for (const auto& doc : documents) {
    for (const auto& object : doc.model->objects) {
      switch (object.kind) {
        case Kind::kPod: {
          const auto& pod = std::get<PodSpec>(object.spec);
          security::Workload w;
          w.namespace_name = object.namespace_name;
          w.name = object.name;
          w.labels = object.labels;
          w.spiffe_id =
              fmt::format("spiffe://{}/ns/{}/sa/{}", table->trust_domain, object.namespace_name,
                          pod.service_account.empty() ? "default" : pod.service_account);
          w.meshed = std::find(object.labels.begin(), object.labels.end(),
                               std::pair<std::string, std::string>{"security.istio.io/tlsMode",
                                                                   "istio"}) != object.labels.end();
          wanted = wanted || w.meshed;
          for (const auto& ip : pod.ips) table->workloads[ip.toString()] = w;
          break;
        }
        case Kind::kPeerAuthentication:
          table->peer_authentications.push_back(std::get<PeerAuthenticationSpec>(object.spec).rule);
          wanted = true;
          break;
        case Kind::kAuthorizationPolicy: {
          auto rule = std::get<AuthorizationPolicySpec>(object.spec).rule;
          rule.counters = security::policyCounters(rule.namespace_name, rule.name);
          table->authorization_policies.push_back(std::move(rule));
          wanted = true;
          break;
        }
        case Kind::kDestinationRule: {
          if (policy_applies && !policy_applies(object)) break;
          const auto& dr = std::get<DestinationRuleSpec>(object.spec);
          const std::string key = serviceKey(dr.host.host, object.namespace_name);
          if (dr.tls.settings) {
            table->destination_tls[{key, 0}] = *dr.tls.settings;
            wanted = true;
          }
          for (const auto& [port, settings] : dr.tls.ports) {
            table->destination_tls[{key, port}] = settings;
            wanted = true;
          }
          break;
        }
        default:
          break;
      }
    }
  }
  if (!wanted) return nullptr;
  return table;
}

}  // namespace remora::config
