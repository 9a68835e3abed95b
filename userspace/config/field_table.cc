#include "config/field_table.h"

#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <map>
#include <unordered_map>

namespace remora::config {
namespace {

constexpr Support A = Support::kApplied;
constexpr Support P = Support::kPartly;
constexpr Support N = Support::kNotApplied;
constexpr Support I = Support::kIgnored;

// Rows shared by several kinds are written once and placed under a prefix.
struct Rows {
  std::deque<std::string> paths;  // owns the text of prefixed rows
  std::vector<FieldRule> rules;

  void add(std::string_view prefix, std::initializer_list<FieldRule> rows) {
    for (const auto& r : rows) {
      if (prefix.empty()) {
        rules.push_back(r);
      } else {
        paths.push_back(r.path.empty() ? std::string(prefix)
                                       : fmt::format("{}.{}", prefix, r.path));
        rules.push_back({paths.back(), r.support, r.note, r.silent_value});
      }
    }
  }
};

void addMetadata(Rows& rows, bool creation_applied, bool deletion_applied) {
  rows.add("", {
                   {"apiVersion", A},
                   {"kind", A},
                   {"metadata", A},
                   {"metadata.name", A},
                   {"metadata.namespace", A},
                   {"metadata.labels", A},
                   {"metadata.labels.*", A},
                   {"metadata.annotations", I},
                   {"metadata.uid", I},
                   {"metadata.resourceVersion", I},
                   {"metadata.generation", I},
                   {"metadata.creationTimestamp", creation_applied ? A : I},
                   {"metadata.deletionTimestamp", deletion_applied ? A : I},
                   {"metadata.deletionGracePeriodSeconds", I},
                   {"metadata.managedFields", I},
                   {"metadata.ownerReferences", I},
                   {"metadata.finalizers", I},
                   {"metadata.generateName", I},
                   {"metadata.selfLink", I},
                   {"status", I},
               });
}

// Istio's Destination: where a route, a mirror or a redirect points.
void addDestination(Rows& rows, std::string_view prefix, Support support) {
  rows.add(prefix, {
                       {"", support},
                       {"host", support},
                       {"subset", support},
                       {"port", support},
                       {"port.number", support},
                   });
}

// StringMatch: exact, prefix or regex.
void addStringMatch(Rows& rows, std::string_view prefix) {
  rows.add(prefix, {{"", P}, {"exact", P}, {"prefix", P}, {"regex", P}});
}

void addTrafficPolicy(Rows& rows, std::string_view prefix, bool port_level) {
  rows.add(
      prefix,
      {
          {"", A},
          {"loadBalancer", A},
          {"loadBalancer.simple", A},
          {"loadBalancer.consistentHash", N,
           "consistent hashing is not applied yet; endpoints are picked ROUND_ROBIN instead"},
          {"loadBalancer.consistentHash.*", N},
          {"loadBalancer.localityLbSetting", N,
           "locality load balancing is not applied; endpoints in every locality are used alike"},
          {"loadBalancer.localityLbSetting.*", N},
          {"loadBalancer.warmupDurationSecs", N,
           "slow start is not applied; new endpoints get their full share at once"},
          {"loadBalancer.warmup", N,
           "slow start is not applied; new endpoints get their full share at once"},
          {"loadBalancer.warmup.*", N},
          {"connectionPool", N,
           "connection pool limits are not applied yet; connections and requests are not capped"},
          {"connectionPool.tcp", N},
          {"connectionPool.tcp.*", N},
          {"connectionPool.tcp.tcpKeepalive", N},
          {"connectionPool.tcp.tcpKeepalive.*", N},
          {"connectionPool.http", N},
          {"connectionPool.http.*", N},
          {"outlierDetection", N,
           "outlier detection is not applied yet; failing endpoints are not ejected (a failed "
           "connect still tries another endpoint)"},
          {"outlierDetection.*", N},
          // tls.mode: docs/TLS.md; SIMPLE and MUTUAL are reported by security_parser.cc.
          {"tls", P},
          {"tls.mode", A},
          {"tls.*", N,
           "only tls.mode is applied (ISTIO_MUTUAL with the proxy's own certificate); "
           "certificates, SNI and subjectAltNames given here are not used"},
          {"tunnel", N, "tunnelling is not applied; connections go straight to the endpoint"},
          {"tunnel.*", N},
          {"proxyProtocol", N, "the PROXY protocol header is not sent"},
          {"proxyProtocol.*", N},
          {"retryBudget", N, "retry budgets are not applied"},
          {"retryBudget.*", N},
      });
  if (port_level) {
    rows.add(prefix, {{"portLevelSettings", P},
                      {"portLevelSettings[]", P},
                      {"portLevelSettings[].port", A},
                      {"portLevelSettings[].port.number", A},
                      {"portLevelSettings[].tls", P},
                      {"portLevelSettings[].tls.mode", A},
                      {"portLevelSettings[].tls.*", N,
                       "only tls.mode is applied; certificates, SNI and subjectAltNames are not"},
                      {"portLevelSettings[].*", N,
                       "per-port traffic policies other than tls.mode are not applied yet; the "
                       "policy above applies to every port"}});
  }
}

Rows serviceRows() {
  Rows r;
  addMetadata(r, false, false);
  r.add(
      "",
      {
          {"spec", A},
          {"spec.type", A},
          {"spec.clusterIP", A},
          {"spec.clusterIPs", A},
          {"spec.clusterIPs[]", A},
          {"spec.selector", A},
          {"spec.selector.*", A},
          {"spec.ports", A},
          {"spec.ports[]", A},
          {"spec.ports[].name", A},
          {"spec.ports[].port", A},
          {"spec.ports[].targetPort", A},
          {"spec.ports[].protocol", A},
          {"spec.ports[].appProtocol", A},
          {"spec.ports[].nodePort", I},
          {"spec.externalName", N,
           "ExternalName Services are not routed; connections pass through to the address the app "
           "resolved"},
          {"spec.externalIPs", N, "externalIPs are not matched; connections to them pass through"},
          {"spec.externalIPs[]", N},
          {"spec.sessionAffinity", N,
           "client-IP session affinity is not applied; each connection is balanced by the "
           "DestinationRule's policy",
           "None"},
          {"spec.sessionAffinityConfig", I},
          {"spec.sessionAffinityConfig.*", I},
          {"spec.ipFamilies", I},
          {"spec.ipFamilyPolicy", I},
          {"spec.internalTrafficPolicy", N,
           "Local is not applied; endpoints on every node are used", "Cluster"},
          {"spec.externalTrafficPolicy", I},
          {"spec.loadBalancerIP", I},
          {"spec.loadBalancerSourceRanges", I},
          {"spec.loadBalancerClass", I},
          {"spec.allocateLoadBalancerNodePorts", I},
          {"spec.healthCheckNodePort", I},
          {"spec.publishNotReadyAddresses", N, "not-ready pods are still left out of the endpoints",
           "false"},
          {"spec.trafficDistribution", N,
           "topology-aware routing is not applied; endpoints in every zone are used alike"},
      });
  return r;
}

Rows podRows() {
  Rows r;
  addMetadata(r, false, true);
  r.add("", {
                {"spec", A},
                {"spec.*", I},
                {"spec.containers", A},
                {"spec.containers[]", A},
                {"spec.containers[].*", I},
                {"spec.containers[].ports", A},
                {"spec.containers[].ports[]", A},
                {"spec.containers[].ports[].containerPort", A},
                {"spec.containers[].ports[].name", A},
                {"spec.containers[].ports[].protocol", A},
                {"spec.containers[].ports[].hostPort", I},
                {"spec.containers[].ports[].hostIP", I},
                {"status", A},
                {"status.*", I},
                {"status.podIP", A},
                {"status.podIPs", A},
                {"status.podIPs[]", A},
                {"status.podIPs[].ip", A},
                {"status.phase", A},
                {"status.conditions", A},
                {"status.conditions[]", A},
                {"status.conditions[].type", A},
                {"status.conditions[].status", A},
                {"status.conditions[].*", I},
            });
  return r;
}

void addTargetRef(Rows& r, std::string_view prefix) {
  r.add(prefix, {{"", A},
                 {"kind", A},
                 {"name", A},
                 {"namespace", A},
                 {"uid", I},
                 {"apiVersion", I},
                 {"resourceVersion", I},
                 {"fieldPath", I}});
}

Rows endpointSliceRows() {
  Rows r;
  addMetadata(r, false, false);
  r.add("", {
                {"addressType", A},
                {"endpoints", A},
                {"endpoints[]", A},
                {"endpoints[].addresses", A},
                {"endpoints[].addresses[]", A},
                {"endpoints[].conditions", A},
                {"endpoints[].conditions.ready", A},
                {"endpoints[].conditions.serving", I},
                {"endpoints[].conditions.terminating", I},
                {"endpoints[].hostname", I},
                {"endpoints[].nodeName", I},
                {"endpoints[].zone", I},
                {"endpoints[].hints", I},
                {"endpoints[].deprecatedTopology", I},
                {"ports", A},
                {"ports[]", A},
                {"ports[].name", A},
                {"ports[].port", A},
                {"ports[].protocol", A},
                {"ports[].appProtocol", I},
            });
  addTargetRef(r, "endpoints[].targetRef");
  return r;
}

Rows endpointsRows() {
  Rows r;
  addMetadata(r, false, false);
  r.add("", {
                {"subsets", A},
                {"subsets[]", A},
                {"subsets[].addresses", A},
                {"subsets[].addresses[]", A},
                {"subsets[].addresses[].ip", A},
                {"subsets[].addresses[].hostname", I},
                {"subsets[].addresses[].nodeName", I},
                {"subsets[].notReadyAddresses", A},
                {"subsets[].notReadyAddresses[]", A},
                {"subsets[].notReadyAddresses[].ip", A},
                {"subsets[].notReadyAddresses[].hostname", I},
                {"subsets[].notReadyAddresses[].nodeName", I},
                {"subsets[].ports", A},
                {"subsets[].ports[]", A},
                {"subsets[].ports[].name", A},
                {"subsets[].ports[].port", A},
                {"subsets[].ports[].protocol", A},
                {"subsets[].ports[].appProtocol", I},
            });
  addTargetRef(r, "subsets[].addresses[].targetRef");
  addTargetRef(r, "subsets[].notReadyAddresses[].targetRef");
  return r;
}

Rows virtualServiceRows() {
  Rows r;
  addMetadata(r, true, false);
  r.add(
      "",
      {
          {"spec", A},
          {"spec.hosts", A},
          {"spec.hosts[]", A},
          {"spec.gateways", A},
          {"spec.gateways[]", A},
          {"spec.exportTo", N,
           "exportTo is not applied: the VirtualService applies to every namespace, as with '*'"},
          {"spec.exportTo[]", N},
          {"spec.http", A},
          {"spec.http[]", A},
          {"spec.http[].name", A},
          {"spec.http[].match", P},
          {"spec.http[].match[]", P},
          {"spec.http[].match[].name", A},
          {"spec.http[].match[].port", A},
          {"spec.http[].match[].method", P},
          {"spec.http[].match[].authority", P},
          {"spec.http[].match[].scheme", P},
          {"spec.http[].match[].headers", P},
          {"spec.http[].match[].headers.*", P},
          {"spec.http[].match[].withoutHeaders", P},
          {"spec.http[].match[].withoutHeaders.*", P},
          {"spec.http[].match[].queryParams", P},
          {"spec.http[].match[].queryParams.*", P},
          {"spec.http[].match[].ignoreUriCase", P},
          {"spec.http[].match[].sourceLabels", P},
          {"spec.http[].match[].sourceLabels.*", P},
          {"spec.http[].match[].sourceNamespace", P},
          {"spec.http[].match[].gateways", P},
          {"spec.http[].match[].gateways[]", P},
          {"spec.http[].match[].statPrefix", I},
          {"spec.http[].route", A},
          {"spec.http[].route[]", A},
          {"spec.http[].route[].weight", A},
          {"spec.http[].route[].headers", N,
           "header manipulation is not applied yet; requests and responses pass unchanged"},
          {"spec.http[].route[].headers.*", N},
          {"spec.http[].route[].headers.*.*", N},
          {"spec.http[].redirect", P},
          {"spec.http[].redirect.*", P},
          {"spec.http[].directResponse", P},
          {"spec.http[].directResponse.*", P},
          {"spec.http[].directResponse.body.*", P},
          {"spec.http[].delegate", P},
          {"spec.http[].delegate.*", P},
          {"spec.http[].rewrite", N, "URI and authority rewrites are not applied yet"},
          {"spec.http[].rewrite.*", N},
          {"spec.http[].rewrite.uriRegexRewrite.*", N},
          {"spec.http[].timeout", N, "request timeouts are not applied yet; requests are not cut"},
          {"spec.http[].retries", N,
           "HTTP retries are not applied yet; a failed request is not retried (a failed connect "
           "still tries another endpoint)"},
          {"spec.http[].retries.*", N},
          {"spec.http[].retries.backoff.*", N},
          {"spec.http[].fault", N,
           "fault injection is not applied yet; requests are forwarded without delays or aborts"},
          {"spec.http[].fault.delay", N},
          {"spec.http[].fault.delay.*", N},
          {"spec.http[].fault.delay.percentage", N},
          {"spec.http[].fault.delay.percentage.*", N},
          {"spec.http[].fault.abort", N},
          {"spec.http[].fault.abort.*", N},
          {"spec.http[].fault.abort.percentage", N},
          {"spec.http[].fault.abort.percentage.*", N},
          {"spec.http[].mirror", N, "traffic mirroring is not applied yet; nothing is mirrored"},
          {"spec.http[].mirrors", N, "traffic mirroring is not applied yet; nothing is mirrored"},
          {"spec.http[].mirrors[]", N},
          {"spec.http[].mirrors[].percentage", N},
          {"spec.http[].mirrors[].percentage.*", N},
          {"spec.http[].mirrorPercentage", N},
          {"spec.http[].mirrorPercentage.*", N},
          {"spec.http[].mirror_percent", N},
          {"spec.http[].mirrorPercent", N},
          {"spec.http[].corsPolicy", N, "CORS handling is not applied yet"},
          {"spec.http[].corsPolicy.*", N},
          {"spec.http[].headers", N,
           "header manipulation is not applied yet; requests and responses pass unchanged"},
          {"spec.http[].headers.*", N},
          {"spec.http[].headers.*.*", N},
          {"spec.tcp", A},
          {"spec.tcp[]", A},
          {"spec.tcp[].match", P},
          {"spec.tcp[].match[]", P},
          {"spec.tcp[].match[].port", A},
          {"spec.tcp[].match[].destinationSubnets", P},
          {"spec.tcp[].match[].destinationSubnets[]", P},
          {"spec.tcp[].match[].sourceLabels", P},
          {"spec.tcp[].match[].sourceLabels.*", P},
          {"spec.tcp[].match[].sourceNamespace", P},
          {"spec.tcp[].match[].gateways", P},
          {"spec.tcp[].match[].gateways[]", P},
          {"spec.tcp[].route", A},
          {"spec.tcp[].route[]", A},
          {"spec.tcp[].route[].weight", A},
          {"spec.tls", N,
           "TLS routes (SNI matching) are not applied yet; connections on TLS ports go to the "
           "Service's own endpoints"},
          {"spec.tls[]", N},
          {"spec.tls[].*", N},
          {"spec.tls[].match", N},
          {"spec.tls[].match[]", N},
          {"spec.tls[].match[].*", N},
          {"spec.tls[].route", N},
          {"spec.tls[].route[]", N},
          {"spec.tls[].route[].*", N},
      });
  for (auto prefix :
       {"spec.http[].match[].uri", "spec.http[].match[].method", "spec.http[].match[].authority",
        "spec.http[].match[].scheme", "spec.http[].match[].headers.*",
        "spec.http[].match[].withoutHeaders.*", "spec.http[].match[].queryParams.*"}) {
    addStringMatch(r, prefix);
  }
  addDestination(r, "spec.http[].route[].destination", A);
  addDestination(r, "spec.tcp[].route[].destination", A);
  addDestination(r, "spec.tls[].route[].destination", N);
  addDestination(r, "spec.http[].mirror", N);
  addDestination(r, "spec.http[].mirrors[].destination", N);
  return r;
}

Rows destinationRuleRows() {
  Rows r;
  addMetadata(r, true, false);
  r.add(
      "",
      {
          {"spec", A},
          {"spec.host", A},
          {"spec.subsets", A},
          {"spec.subsets[]", A},
          {"spec.subsets[].name", A},
          {"spec.subsets[].labels", A},
          {"spec.subsets[].labels.*", A},
          {"spec.exportTo", N,
           "exportTo is not applied: the DestinationRule applies to every namespace, as with '*'"},
          {"spec.exportTo[]", N},
          {"spec.workloadSelector", N,
           "workloadSelector is not applied: the DestinationRule applies to every workload"},
          {"spec.workloadSelector.*", N},
          {"spec.workloadSelector.matchLabels", N},
          {"spec.workloadSelector.matchLabels.*", N},
      });
  addTrafficPolicy(r, "spec.trafficPolicy", true);
  addTrafficPolicy(r, "spec.subsets[].trafficPolicy", true);
  return r;
}

void addWorkload(Rows& r, std::string_view prefix) {
  r.add(prefix, {
                    {"address", A},
                    {"ports", A},
                    {"ports.*", A},
                    {"labels", A},
                    {"labels.*", A},
                    {"network", I},
                    {"locality", I},
                    {"weight", N, "endpoint weights are not applied; endpoints share load evenly"},
                    {"serviceAccount", I},
                });
}

Rows serviceEntryRows() {
  Rows r;
  addMetadata(r, true, false);
  r.add(
      "",
      {
          {"spec", A},
          {"spec.hosts", A},
          {"spec.hosts[]", A},
          {"spec.addresses", A},
          {"spec.addresses[]", A},
          {"spec.ports", A},
          {"spec.ports[]", A},
          {"spec.ports[].number", A},
          {"spec.ports[].protocol", A},
          {"spec.ports[].name", A},
          {"spec.ports[].targetPort", A},
          {"spec.location", A},
          {"spec.resolution", A},
          {"spec.endpoints", A},
          {"spec.endpoints[]", A},
          {"spec.workloadSelector", A},
          {"spec.workloadSelector.labels", A},
          {"spec.workloadSelector.labels.*", A},
          {"spec.exportTo", N,
           "exportTo is not applied: the ServiceEntry is visible to every namespace, as with '*'"},
          {"spec.exportTo[]", N},
          {"spec.subjectAltNames", N, "subjectAltNames are not checked: TLS is not originated yet"},
          {"spec.subjectAltNames[]", N},
      });
  addWorkload(r, "spec.endpoints[]");
  return r;
}

Rows workloadEntryRows() {
  Rows r;
  addMetadata(r, false, false);
  r.add("", {{"spec", A}});
  addWorkload(r, "spec");
  return r;
}

Rows proxyConfigRows() {
  Rows r;
  addMetadata(r, false, false);
  r.add("", {
                {"spec", A},
                {"spec.outboundPort", A},
                {"spec.inboundPort", A},
                {"spec.adminAddress", A},
                {"spec.adminPort", A},
                {"spec.inboundSourceAddress", A},
                {"spec.outboundTrafficPolicy", A},
                {"spec.outboundTrafficPolicy.mode", A},
                {"spec.connectTimeout", A},
                {"spec.drainTimeout", A},
                {"spec.maxConnectAttempts", A},
                {"spec.accessLog", A},
                {"spec.bufferLimit", A},
                {"spec.idleTimeout", A},
                {"spec.halfCloseTimeout", A},
                {"spec.maxConnectionDuration", A},
                {"spec.maxConnections", A},
                {"spec.tcpKeepalive", A},
                {"spec.inboundDrainGrace", A},
            });
  return r;
}

Rows namespaceRows() {
  Rows r;
  addMetadata(r, false, false);
  r.add("", {{"spec", I}});
  return r;
}

struct Table {
  Rows rows;
  std::unordered_map<std::string_view, const FieldRule*> by_path;
  std::unordered_map<std::string_view, std::vector<std::string_view>> children;  // names

  explicit Table(Rows r) : rows(std::move(r)) {
    for (const auto& rule : rows.rules) {
      by_path.emplace(rule.path, &rule);
      std::string_view path = rule.path;
      size_t cut = path.find_last_of('.');
      std::string_view parent = cut == std::string_view::npos ? "" : path.substr(0, cut);
      std::string_view name = cut == std::string_view::npos ? path : path.substr(cut + 1);
      if (name.find('[') == std::string_view::npos && name != "*") {
        children[parent].push_back(name);
      }
    }
  }
};

const std::map<std::string_view, Table>& tables() {
  static const auto* all = new std::map<std::string_view, Table>([] {
    std::map<std::string_view, Table> t;
    t.emplace("Service", Table(serviceRows()));
    t.emplace("Pod", Table(podRows()));
    t.emplace("EndpointSlice", Table(endpointSliceRows()));
    t.emplace("Endpoints", Table(endpointsRows()));
    t.emplace("VirtualService", Table(virtualServiceRows()));
    t.emplace("DestinationRule", Table(destinationRuleRows()));
    t.emplace("ServiceEntry", Table(serviceEntryRows()));
    t.emplace("WorkloadEntry", Table(workloadEntryRows()));
    t.emplace("ProxyConfig", Table(proxyConfigRows()));
    t.emplace("Namespace", Table(namespaceRows()));
    return t;
  }());
  return *all;
}

int lineOf(const YAML::Node& node) {
  int line = node.Mark().line;
  return line < 0 ? 0 : line;
}

class Walker {
 public:
  explicit Walker(const Table& table) : table_(table) {}

  void walk(const YAML::Node& node, const std::string& pattern, const std::string& field,
            bool reported) {
    if (node.IsSequence()) {
      std::string item_pattern = pattern + "[]";
      const FieldRule* rule = find(item_pattern);
      if (rule == nullptr || rule->support == Support::kIgnored) return;
      size_t i = 0;
      for (const auto& item : node) {
        walk(item, item_pattern, fmt::format("{}[{}]", field, i++), reported);
      }
      return;
    }
    if (!node.IsMap()) return;
    std::vector<std::string_view> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string& key = it->first.Scalar();
      std::string key_field = field.empty() ? key : fmt::format("{}.{}", field, key);
      int line = lineOf(it->first);
      if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
        notes_.push_back({Severity::kError, key_field, line,
                          "is given twice in one mapping; the API server rejects duplicate "
                          "keys, so Remora does too"});
        continue;
      }
      seen.push_back(key);
      std::string key_pattern = pattern.empty() ? key : fmt::format("{}.{}", pattern, key);
      const FieldRule* rule = find(key_pattern);
      if (rule == nullptr) {
        key_pattern = pattern.empty() ? "*" : pattern + ".*";
        rule = find(key_pattern);
      }
      if (rule == nullptr) {
        unknown(pattern, key, key_field, line);
        continue;
      }
      if (rule->support == Support::kIgnored) continue;
      bool now_reported = reported;
      if (rule->support == Support::kNotApplied && !reported) {
        bool silent = !rule->silent_value.empty() && it->second.IsScalar() &&
                      it->second.Scalar() == rule->silent_value;
        bool empty = (it->second.IsSequence() || it->second.IsMap()) && it->second.size() == 0;
        if (!silent && !empty && !rule->note.empty()) {
          notes_.push_back({Severity::kWarning, key_field, line, std::string(rule->note)});
          now_reported = true;
        }
      }
      walk(it->second, key_pattern, key_field, now_reported);
    }
  }

  std::vector<FieldNote> take() { return std::move(notes_); }

 private:
  const FieldRule* find(const std::string& pattern) const {
    auto it = table_.by_path.find(pattern);
    return it == table_.by_path.end() ? nullptr : it->second;
  }

  void unknown(const std::string& parent, const std::string& key, const std::string& field,
               int line) {
    std::string message = "is not a field Remora knows";
    auto names = table_.children.find(parent);
    if (names != table_.children.end()) {
      std::string best = suggest(key, names->second);
      if (!best.empty()) message += fmt::format(" (did you mean '{}'?)", best);
    }
    message += "; it is ignored, so whatever it was meant to do does not happen";
    notes_.push_back({Severity::kWarning, field, line, std::move(message)});
  }

  const Table& table_;
  std::vector<FieldNote> notes_;
};

// Optimal string alignment distance: Levenshtein plus adjacent transpositions.
size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

}  // namespace

std::span<const FieldRule> fieldTable(std::string_view kind) {
  auto it = tables().find(kind);
  if (it == tables().end()) return {};
  return it->second.rows.rules;
}

bool isKnownField(std::string_view kind, std::string_view path) {
  auto it = tables().find(kind);
  return it != tables().end() && it->second.by_path.count(path) != 0;
}

std::vector<FieldNote> checkFields(std::string_view kind, const YAML::Node& object) {
  auto it = tables().find(kind);
  if (it == tables().end()) return {};
  Walker walker(it->second);
  walker.walk(object, "", "", false);
  return walker.take();
}

std::string suggest(std::string_view word, std::span<const std::string_view> candidates) {
  std::string_view best;
  size_t best_distance = SIZE_MAX;
  for (auto c : candidates) {
    size_t d = editDistance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  // Up to two edits, and fewer than half the word: "lables" → "labels", not "x" → "host".
  if (best.empty() || best_distance > 2 || best_distance * 2 >= word.size()) return "";
  return std::string(best);
}

}  // namespace remora::config
