#include "security/security_policy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <mutex>

#include "common/hex.h"

namespace remora::security {
namespace {

bool selects(const std::optional<Labels>& selector, const Labels& labels) {
  if (!selector) return true;
  return std::all_of(selector->begin(), selector->end(), [&labels](const auto& kv) {
    return std::find(labels.begin(), labels.end(), kv) != labels.end();
  });
}

bool anyValue(const std::vector<std::string>& patterns, const std::string& value) {
  return std::any_of(patterns.begin(), patterns.end(),
                     [&value](const std::string& p) { return matchValue(p, value); });
}

bool anyCidr(const std::vector<Cidr>& blocks, const IpAddress& ip) {
  return std::any_of(blocks.begin(), blocks.end(), [&ip](const Cidr& c) { return c.contains(ip); });
}

// A positive list must match when given; a negative one must not.
bool positive(bool given, bool matched) { return !given || matched; }

bool sourceMatches(const Source& s, const ConnectionAttributes& a) {
  // No JWT authentication: a request has no request principal.
  if (a.request != nullptr && !s.request_principals.empty()) return false;
  return positive(!s.principals.empty(), anyValue(s.principals, a.principal)) &&
         !(!s.not_principals.empty() && anyValue(s.not_principals, a.principal)) &&
         positive(!s.namespaces.empty(), anyValue(s.namespaces, a.source_namespace)) &&
         !(!s.not_namespaces.empty() && anyValue(s.not_namespaces, a.source_namespace)) &&
         positive(!s.ip_blocks.empty(), anyCidr(s.ip_blocks, a.source_ip)) &&
         !anyCidr(s.not_ip_blocks, a.source_ip) &&
         positive(!s.remote_ip_blocks.empty(), anyCidr(s.remote_ip_blocks, a.remote_ip)) &&
         !anyCidr(s.not_remote_ip_blocks, a.remote_ip);
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Istio's hosts: case-insensitive, and a pattern without a port matches the host with any port.
bool hostMatches(const std::string& pattern, std::string_view host) {
  const std::string p = lower(pattern);
  const std::string h = lower(host);
  if (matchValue(p, h)) return true;
  const size_t colon = h.rfind(':');
  if (colon == std::string::npos || h.find(']', colon) != std::string::npos) return false;
  return matchValue(p, h.substr(0, colon));
}

bool anyHost(const std::vector<std::string>& patterns, std::string_view host) {
  return std::any_of(patterns.begin(), patterns.end(),
                     [host](const std::string& p) { return hostMatches(p, host); });
}

bool anyPath(const std::vector<std::string>& patterns, std::string_view path) {
  return std::any_of(patterns.begin(), patterns.end(),
                     [path](const std::string& p) { return matchPath(p, path); });
}

// `r.path` is normalized already (evaluate()'s contract).
bool httpOperationMatches(const Operation& o, const RequestAttributes& r) {
  const std::string method(r.method);
  return positive(!o.hosts.empty(), anyHost(o.hosts, r.host)) && !anyHost(o.not_hosts, r.host) &&
         positive(!o.methods.empty(), anyValue(o.methods, method)) &&
         !(!o.not_methods.empty() && anyValue(o.not_methods, method)) &&
         positive(!o.paths.empty(), anyPath(o.paths, r.path)) &&
         !(!o.not_paths.empty() && anyPath(o.not_paths, r.path));
}

bool unreserved(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// RFC 3986 section 5.2.4 over a path that starts with '/'.
std::string removeDotSegments(std::string_view in) {
  std::vector<std::string_view> out;
  size_t at = 0;
  bool trailing = false;  // the path ends in a directory ("/a/." → "/a/")
  while (at < in.size()) {
    const size_t next = std::min(in.find('/', at + 1), in.size());
    const std::string_view segment = in.substr(at + 1, next - at - 1);
    const bool last = next == in.size();
    if (segment == ".") {
      trailing = last;
    } else if (segment == "..") {
      if (!out.empty()) out.pop_back();
      trailing = last;
    } else {
      out.push_back(segment);
      trailing = false;
    }
    at = next;
  }
  std::string path;
  for (auto segment : out) {
    path += '/';
    path += segment;
  }
  if (trailing || path.empty()) path += '/';
  return path;
}

// Envoy's UNESCAPE_AND_FORWARD step: %2F / %2f to '/', %5C / %5c to a backslash, in one pass (the
// four sequences cannot overlap, so this equals Envoy's replacement of each in turn).
std::string unescapeSlashes(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '%' && i + 2 < path.size()) {
      const char hi = path[i + 1];
      const char lo = static_cast<char>(path[i + 2] | 0x20);
      if (hi == '2' && lo == 'f') {
        out += '/';
        i += 2;
        continue;
      }
      if (hi == '5' && lo == 'c') {
        out += '\\';
        i += 2;
        continue;
      }
    }
    out += path[i];
  }
  return out;
}

// RFC 3986 plus backslash to '/' (Envoy's normalize_path); nullopt on %00.
std::optional<std::string> normalizeBase(std::string_view path) {
  std::string decoded;
  decoded.reserve(path.size());
  for (size_t i = 0; i < path.size(); ++i) {
    char c = path[i];
    if (c == '%' && i + 2 < path.size()) {
      const int hi = hexDigitValue(path[i + 1]);
      const int lo = hexDigitValue(path[i + 2]);
      if (hi >= 0 && lo >= 0) {
        const char value = static_cast<char>(hi * 16 + lo);
        if (value == 0) return std::nullopt;
        if (unreserved(value)) {
          decoded += value;
          i += 2;
          continue;
        }
      }
    }
    decoded += c == '\\' ? '/' : c;
  }
  if (decoded.empty() || decoded[0] != '/') return decoded;  // "*" (OPTIONS) or an absolute URI
  return removeDotSegments(decoded);
}

// Envoy's merge_slashes: the non-empty segments joined by '/', with the leading and the
// trailing '/' kept. Like Envoy's, a path of slashes only gives "//" (both kept).
std::string mergeSlashes(std::string path) {
  if (path.find("//") == std::string::npos) return path;
  std::string out;
  out.reserve(path.size());
  if (path.front() == '/') out += '/';
  bool first = true;
  size_t at = 0;
  while (at < path.size()) {
    const size_t next = std::min(path.find('/', at), path.size());
    if (next > at) {
      if (!first) out += '/';
      out.append(path, at, next - at);
      first = false;
    }
    at = next + 1;
  }
  if (path.back() == '/') out += '/';
  return out;
}

}  // namespace

std::optional<std::string> normalizePath(std::string_view path, PathNormalization mode) {
  path = path.substr(0, std::min(path.find('?'), path.size()));
  if (mode == PathNormalization::kNone) return std::string(path);
  std::optional<std::string> out;
  if (mode == PathNormalization::kDecodeAndMergeSlashes) {
    out = normalizeBase(unescapeSlashes(path));
  } else {
    out = normalizeBase(path);
  }
  if (!out || mode == PathNormalization::kBase) return out;
  return mergeSlashes(std::move(*out));
}

bool needsNormalization(std::string_view path, PathNormalization mode) {
  if (mode == PathNormalization::kNone) return false;
  const bool merging = mode != PathNormalization::kBase;
  for (size_t i = 0; i < path.size(); ++i) {
    const char c = path[i];
    if (c == '%' || c == '\\' || c == '?') return true;
    if (c != '/') continue;
    if (merging && i + 1 < path.size() && path[i + 1] == '/') return true;
    // A "." or ".." segment after this slash.
    size_t dots = 0;
    while (dots < 2 && i + 1 + dots < path.size() && path[i + 1 + dots] == '.') ++dots;
    const size_t after = i + 1 + dots;
    if (dots > 0 && (after == path.size() || path[after] == '/')) return true;
  }
  return false;
}

bool matchPath(const std::string& pattern, std::string_view path) {
  if (pattern.find("{*}") == std::string::npos && pattern.find("{**}") == std::string::npos) {
    return matchValue(pattern, std::string(path));
  }
  // Segment by segment: "{*}" takes exactly one non-empty segment, "{**}" (last) one or more.
  std::string_view t = pattern;
  size_t ti = 0;
  size_t pi = 0;
  while (true) {
    const bool t_done = ti >= t.size();
    const bool p_done = pi >= path.size();
    if (t_done || p_done) return t_done && p_done;
    if (t[ti] != '/' || path[pi] != '/') return false;
    const size_t t_end = std::min(t.find('/', ti + 1), t.size());
    const size_t p_end = std::min(path.find('/', pi + 1), path.size());
    const std::string_view ts = t.substr(ti + 1, t_end - ti - 1);
    const std::string_view ps = path.substr(pi + 1, p_end - pi - 1);
    if (ts == "{**}") return t_end == t.size() && !ps.empty();
    if (ts == "{*}") {
      if (ps.empty()) return false;
    } else if (ts != ps) {
      return false;
    }
    ti = t_end;
    pi = p_end;
  }
}

namespace {

bool operationMatches(const Operation& o, const ConnectionAttributes& a) {
  auto has = [&a](const std::vector<uint16_t>& ports) {
    return std::find(ports.begin(), ports.end(), a.destination_port) != ports.end();
  };
  return positive(!o.ports.empty(), has(o.ports)) && !has(o.not_ports) &&
         (a.request == nullptr || httpOperationMatches(o, *a.request));
}

// request.headers[name] → "name", else "".
std::string_view headerKey(std::string_view key) {
  constexpr std::string_view kPrefix = "request.headers[";
  if (key.size() <= kPrefix.size() + 1 || key.substr(0, kPrefix.size()) != kPrefix ||
      key.back() != ']') {
    return {};
  }
  return key.substr(kPrefix.size(), key.size() - kPrefix.size() - 1);
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// An HTTP `when` key on a request: the header's value (the first field of that name), or
// nullopt when the request has none (request.auth.*: there is no JWT authentication). A missing
// value matches no `values` and no `notValues`, as Envoy's header matchers do.
bool httpConditionMatches(const Condition& c, const RequestAttributes& r) {
  std::optional<std::string> value;
  if (std::string_view name = headerKey(c.key); !name.empty()) {
    for (const auto& [n, v] : r.headers) {
      if (equalsIgnoreCase(n, name)) {
        value = std::string(v);
        break;
      }
    }
  }
  auto any = [&value](const std::vector<std::string>& patterns) {
    return value && anyValue(patterns, *value);
  };
  return positive(!c.values.empty(), any(c.values)) && !any(c.not_values);
}

// The value of an L4 `when` key, or nullopt for a key with no L4 meaning.
std::optional<std::string> attribute(const std::string& key, const ConnectionAttributes& a) {
  if (key == "source.ip") return a.source_ip.toString();
  if (key == "remote.ip") return a.remote_ip.toString();
  if (key == "source.namespace") return a.source_namespace;
  if (key == "source.principal") return a.principal;
  if (key == "destination.ip") return a.destination_ip.toString();
  if (key == "destination.port") return std::to_string(a.destination_port);
  if (key == "connection.sni") return a.sni;
  return std::nullopt;
}

bool valueMatches(const std::string& key, const std::string& pattern, const std::string& value,
                  const ConnectionAttributes& a) {
  if (key == "source.ip" || key == "remote.ip" || key == "destination.ip") {
    auto cidr = Cidr::parse(pattern);
    const IpAddress& ip = key == "source.ip"   ? a.source_ip
                          : key == "remote.ip" ? a.remote_ip
                                               : a.destination_ip;
    return cidr.ok() && cidr->contains(ip);
  }
  return matchValue(pattern, value);
}

bool conditionMatches(const Condition& c, const ConnectionAttributes& a) {
  auto value = attribute(c.key, a);
  if (!value) return false;
  auto any = [&](const std::vector<std::string>& patterns) {
    return std::any_of(patterns.begin(), patterns.end(),
                       [&](const std::string& p) { return valueMatches(c.key, p, *value, a); });
  };
  return positive(!c.values.empty(), any(c.values)) &&
         !(!c.not_values.empty() && any(c.not_values));
}

bool conditionHolds(const Condition& c, const ConnectionAttributes& a) {
  if (!c.l7) return conditionMatches(c, a);
  if (a.request != nullptr && isHttpConditionKey(c.key)) {
    return httpConditionMatches(c, *a.request);
  }
  return true;  // HTTP-only on a TCP connection (or unknown): dropped, see ruleMatches
}

// Whether the rule holds a part that cannot be evaluated here: any HTTP-only field on a TCP
// connection, an unknown `when` key on a request.
bool hasUnevaluable(const Rule& rule, const ConnectionAttributes& a) {
  if (a.request == nullptr) return rule.hasL7();
  return std::any_of(rule.when.begin(), rule.when.end(),
                     [](const Condition& c) { return c.l7 && !isHttpConditionKey(c.key); });
}

bool ruleMatches(const Rule& rule, Action action, const ConnectionAttributes& a) {
  // ALLOW: a rule that needs HTTP never matches a TCP connection. DENY: its HTTP-only parts
  // are dropped, so it matches on what remains (more connections denied, never fewer).
  if (action == Action::kAllow && hasUnevaluable(rule, a)) return false;
  if (action == Action::kAllow && rule.unknown_field) return false;
  const bool from =
      rule.from.empty() || std::any_of(rule.from.begin(), rule.from.end(),
                                       [&a](const Source& s) { return sourceMatches(s, a); });
  const bool to =
      rule.to.empty() || std::any_of(rule.to.begin(), rule.to.end(),
                                     [&a](const Operation& o) { return operationMatches(o, a); });
  const bool when = std::all_of(rule.when.begin(), rule.when.end(),
                                [&a](const Condition& c) { return conditionHolds(c, a); });
  return from && to && when;
}

bool policyMatches(const AuthorizationPolicyRule& p, const ConnectionAttributes& a) {
  return std::any_of(p.rules.begin(), p.rules.end(),
                     [&](const Rule& r) { return ruleMatches(r, p.action, a); });
}

struct CounterRegistry {
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<PolicyCounters>> by_policy;
};
CounterRegistry& registry() {
  static CounterRegistry r;
  return r;
}

}  // namespace

const char* toString(MtlsMode mode) {
  switch (mode) {
    case MtlsMode::kUnset:
      return "UNSET";
    case MtlsMode::kDisable:
      return "DISABLE";
    case MtlsMode::kPermissive:
      return "PERMISSIVE";
    case MtlsMode::kStrict:
      return "STRICT";
  }
  return "?";
}

const char* toString(Action action) {
  switch (action) {
    case Action::kAllow:
      return "ALLOW";
    case Action::kDeny:
      return "DENY";
    case Action::kAudit:
      return "AUDIT";
  }
  return "?";
}

const char* toString(TlsMode mode) {
  switch (mode) {
    case TlsMode::kUnset:
      return "UNSET";
    case TlsMode::kDisable:
      return "DISABLE";
    case TlsMode::kSimple:
      return "SIMPLE";
    case TlsMode::kMutual:
      return "MUTUAL";
    case TlsMode::kIstioMutual:
      return "ISTIO_MUTUAL";
  }
  return "?";
}

bool matchValue(const std::string& pattern, const std::string& value) {
  if (pattern == "*") return !value.empty();
  if (!pattern.empty() && pattern.back() == '*') {
    return value.compare(0, pattern.size() - 1, pattern, 0, pattern.size() - 1) == 0;
  }
  if (!pattern.empty() && pattern.front() == '*') {
    const size_t n = pattern.size() - 1;
    return value.size() >= n && value.compare(value.size() - n, n, pattern, 1, n) == 0;
  }
  return pattern == value;
}

bool isHttpConditionKey(const std::string& key) {
  return !headerKey(key).empty() || key == "request.auth.principal" ||
         key == "request.auth.audiences" || key == "request.auth.presenter" ||
         (key.rfind("request.auth.claims[", 0) == 0 && key.back() == ']');
}

bool Rule::hasL7() const {
  return std::any_of(from.begin(), from.end(), [](const Source& s) { return s.l7; }) ||
         std::any_of(to.begin(), to.end(), [](const Operation& o) { return o.l7; }) ||
         std::any_of(when.begin(), when.end(), [](const Condition& c) { return c.l7; });
}

MtlsMode resolveMtls(const std::vector<PeerAuthenticationRule>& rules,
                     const std::string& root_namespace, const std::string& workload_namespace,
                     const Labels& workload_labels, uint16_t port) {
  // The oldest policy of each level wins (Istio's tie rule), so pick per level first.
  const PeerAuthenticationRule* workload = nullptr;
  const PeerAuthenticationRule* ns = nullptr;
  const PeerAuthenticationRule* mesh = nullptr;
  auto older = [](const PeerAuthenticationRule* current, const PeerAuthenticationRule& candidate) {
    return current == nullptr ||
           std::tie(candidate.created, candidate.name) < std::tie(current->created, current->name);
  };
  for (const PeerAuthenticationRule& r : rules) {
    if (r.selector) {
      if (r.namespace_name == workload_namespace && selects(r.selector, workload_labels) &&
          older(workload, r)) {
        workload = &r;
      }
    } else if (r.namespace_name == workload_namespace && r.namespace_name != root_namespace) {
      if (older(ns, r)) ns = &r;
    } else if (r.namespace_name == root_namespace && older(mesh, r)) {
      mesh = &r;
    }
  }
  if (workload != nullptr) {
    auto it = workload->port_modes.find(port);
    if (it != workload->port_modes.end() && it->second != MtlsMode::kUnset) return it->second;
    if (workload->mode != MtlsMode::kUnset) return workload->mode;
  }
  if (ns != nullptr && ns->mode != MtlsMode::kUnset) return ns->mode;
  if (mesh != nullptr && mesh->mode != MtlsMode::kUnset) return mesh->mode;
  return MtlsMode::kPermissive;
}

std::shared_ptr<PolicyCounters> policyCounters(const std::string& namespace_name,
                                               const std::string& name) {
  CounterRegistry& r = registry();
  std::lock_guard lock(r.mutex);
  auto& slot = r.by_policy[namespace_name + "/" + name];
  if (!slot) slot = std::make_shared<PolicyCounters>();
  return slot;
}

std::vector<std::pair<std::string, std::shared_ptr<PolicyCounters>>> allPolicyCounters() {
  CounterRegistry& r = registry();
  std::lock_guard lock(r.mutex);
  return {r.by_policy.begin(), r.by_policy.end()};
}

AuthzDecision evaluate(const std::vector<const AuthorizationPolicyRule*>& policies,
                       const ConnectionAttributes& attributes) {
  AuthzDecision d;
  for (const AuthorizationPolicyRule* p : policies) {
    if (p->action == Action::kAudit && policyMatches(*p, attributes)) d.audited.push_back(p);
  }
  for (const AuthorizationPolicyRule* p : policies) {
    if (p->action == Action::kDeny && policyMatches(*p, attributes)) {
      d.allowed = false;
      d.policy = p;
      d.reason = fmt::format("denied by DENY policy {}/{}", p->namespace_name, p->name);
      return d;
    }
  }
  bool any_allow = false;
  for (const AuthorizationPolicyRule* p : policies) {
    if (p->action != Action::kAllow) continue;
    any_allow = true;
    if (policyMatches(*p, attributes)) {
      d.policy = p;
      d.reason = fmt::format("allowed by ALLOW policy {}/{}", p->namespace_name, p->name);
      return d;
    }
  }
  if (any_allow) {
    d.allowed = false;
    d.reason = "denied: no ALLOW policy matched";
  }
  return d;
}

void count(const AuthzDecision& decision) {
  if (decision.policy != nullptr && decision.policy->counters) {
    (decision.allowed ? decision.policy->counters->allowed : decision.policy->counters->denied)
        .fetch_add(1, std::memory_order_relaxed);
  }
  for (const AuthorizationPolicyRule* p : decision.audited) {
    if (p->counters) p->counters->audited.fetch_add(1, std::memory_order_relaxed);
  }
}

const Workload* SecurityTable::workload(const IpAddress& ip) const {
  auto it = workloads.find(ip.toString());
  return it == workloads.end() ? nullptr : &it->second;
}

MtlsMode SecurityTable::inboundMode(const IpAddress& ip, uint16_t port) const {
  const Workload* w = workload(ip);
  static const Labels kNoLabels;
  return resolveMtls(peer_authentications, root_namespace, w ? w->namespace_name : "",
                     w ? w->labels : kNoLabels, port);
}

std::vector<const AuthorizationPolicyRule*> SecurityTable::policiesFor(const IpAddress& ip) const {
  std::vector<const AuthorizationPolicyRule*> out;
  const Workload* w = workload(ip);
  for (const AuthorizationPolicyRule& p : authorization_policies) {
    const bool mesh_wide = p.namespace_name == root_namespace;
    if (!mesh_wide && (w == nullptr || p.namespace_name != w->namespace_name)) continue;
    if (p.selector && (w == nullptr || !selects(p.selector, w->labels))) continue;
    out.push_back(&p);
  }
  return out;
}

SecurityTable::Origination SecurityTable::outbound(const std::string& service,
                                                   uint16_t service_port,
                                                   const IpAddress& endpoint) const {
  Origination o;
  auto it = destination_tls.find({service, service_port});
  if (it == destination_tls.end()) it = destination_tls.find({service, 0});
  if (it != destination_tls.end()) {
    o.mode = it->second.mode;
    o.settings = &it->second;
  }
  const Workload* w = workload(endpoint);
  switch (o.mode) {
    case TlsMode::kDisable:
      return o;
    case TlsMode::kSimple:  // TLS with the rule's own files; the server is not a SPIFFE peer
    case TlsMode::kMutual:
      o.tls = true;
      return o;
    case TlsMode::kIstioMutual:
      o.tls = true;
      break;
    case TlsMode::kUnset:
      o.tls = w != nullptr && w->meshed;  // auto mTLS
      break;
  }
  if (o.tls && w != nullptr) o.expected_peer = w->spiffe_id;
  return o;
}

Result<void> checkTrustDomain(std::string_view domain) {
  if (domain.empty() || domain.size() > 255) {
    return makeError(
        fmt::format("must be a trust domain of 1 to 255 characters, got {}", domain.size()));
  }
  for (char c : domain) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
    if (!ok) {
      return makeError(fmt::format(
          "'{}' is not a trust domain: only lowercase letters, digits, '.', '-' and '_' are "
          "allowed (as in cluster.local)",
          domain));
    }
  }
  return {};
}

}  // namespace remora::security
