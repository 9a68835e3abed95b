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
  rows.add(prefix, {{"", A}, {"exact", A}, {"prefix", A}, {"regex", A}});
}

// Headers: request and response operations (set, add, remove).
void addHeaderOps(Rows& rows, std::string_view prefix) {
  for (std::string_view side : {"request", "response"}) {
    std::string at = prefix.empty() ? std::string(side) : fmt::format("{}.{}", prefix, side);
    rows.paths.push_back(at);
    std::string_view p = rows.paths.back();
    rows.add(p, {{"", A},
                 {"set", A},
                 {"set.*", A},
                 {"add", A},
                 {"add.*", A},
                 {"remove", A},
                 {"remove[]", A}});
  }
  rows.add(prefix, {{"", A}});
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
          {"connectionPool", A},
          {"connectionPool.tcp", A},
          {"connectionPool.tcp.maxConnections", A},
          {"connectionPool.tcp.connectTimeout", A},
          {"connectionPool.tcp.tcpKeepalive", A},
          {"connectionPool.tcp.tcpKeepalive.probes", A},
          {"connectionPool.tcp.tcpKeepalive.time", A},
          {"connectionPool.tcp.tcpKeepalive.interval", A},
          {"connectionPool.tcp.maxConnectionDuration", N,
           "upstream connections are not closed after a maximum duration"},
          {"connectionPool.tcp.idleTimeout", N,
           "the TCP idle timeout is ProxyConfig's idleTimeout, not this one"},
          {"connectionPool.http", A},
          {"connectionPool.http.http1MaxPendingRequests", A},
          {"connectionPool.http.maxRequestsPerConnection", A},
          {"connectionPool.http.maxRetries", A},
          {"connectionPool.http.idleTimeout", A},
          {"connectionPool.http.http2MaxRequests", N,
           "HTTP/2 is not spoken upstream; requests are capped by maxConnections and "
           "http1MaxPendingRequests"},
          {"connectionPool.http.maxConcurrentStreams", N,
           "HTTP/2 is not spoken upstream; this limit has nothing to cap"},
          {"connectionPool.http.h2UpgradePolicy", N,
           "upstream connections are not upgraded to HTTP/2", "DEFAULT"},
          {"connectionPool.http.useClientProtocol", N,
           "upstream requests are HTTP/1.1, whatever the client spoke", "false"},
          {"outlierDetection", A},
          {"outlierDetection.consecutive5xxErrors", A},
          {"outlierDetection.consecutiveGatewayErrors", A},
          {"outlierDetection.consecutiveErrors", A},
          {"outlierDetection.interval", A},
          {"outlierDetection.baseEjectionTime", A},
          {"outlierDetection.maxEjectionPercent", A},
          {"outlierDetection.minHealthPercent", N,
           "there is no panic mode: ejected endpoints get no traffic however few are left"},
          {"outlierDetection.splitExternalLocalOriginErrors", N,
           "local-origin errors (connect failures, resets) are not counted apart", "false"},
          {"outlierDetection.consecutiveLocalOriginFailures", N,
           "local-origin errors (connect failures, resets) are not counted apart"},
          // tls: docs/TLS.md; security_parser.cc reads it and reports credentialName and the
          // fields a mode does not use.
          {"tls", A},
          {"tls.mode", A},
          {"tls.clientCertificate", A},
          {"tls.privateKey", A},
          {"tls.caCertificates", A},
          {"tls.sni", A},
          {"tls.subjectAltNames", A},
          {"tls.subjectAltNames[]", A},
          {"tls.insecureSkipVerify", A},
          {"tls.credentialName", P},
          {"tls.caCrl", N,
           "certificate revocation lists are not checked; a revoked server certificate is "
           "accepted"},
          {"tunnel", N, "tunnelling is not applied; connections go straight to the endpoint"},
          {"tunnel.*", N},
          {"proxyProtocol", N, "the PROXY protocol header is not sent"},
          {"proxyProtocol.*", N},
          {"retryBudget", N, "retry budgets are not applied"},
          {"retryBudget.*", N},
      });
  if (port_level) {
    rows.paths.push_back(fmt::format("{}.portLevelSettings[]", prefix));
    std::string_view entry = rows.paths.back();
    rows.add(prefix, {{"portLevelSettings", A}, {"portLevelSettings[]", A}});
    rows.add(entry, {{"port", A}, {"port.number", A}});
    addTrafficPolicy(rows, entry, false);
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
  r.add("",
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
            {"spec.http[].match", A},
            {"spec.http[].match[]", A},
            {"spec.http[].match[].name", A},
            {"spec.http[].match[].port", A},
            {"spec.http[].match[].headers", A},
            {"spec.http[].match[].withoutHeaders", A},
            {"spec.http[].match[].queryParams", A},
            {"spec.http[].match[].ignoreUriCase", A},
            {"spec.http[].match[].sourceLabels", A,
             "held against the proxy's own workload labels (--pod-labels-file, or the Pod named "
             "by --pod-namespace and --pod-name); unknown labels: a finding, and the entry never "
             "holds"},
            {"spec.http[].match[].sourceLabels.*", A},
            {"spec.http[].match[].sourceNamespace", A,
             "held against the proxy's namespace (--pod-namespace, POD_NAMESPACE); unknown: a "
             "finding, and the entry never holds"},
            {"spec.http[].match[].gateways", A},
            {"spec.http[].match[].gateways[]", A},
            {"spec.http[].match[].statPrefix", I},
            {"spec.http[].route", A},
            {"spec.http[].route[]", A},
            {"spec.http[].route[].weight", A},
            {"spec.http[].redirect", A},
            {"spec.http[].redirect.uri", A},
            {"spec.http[].redirect.authority", A},
            {"spec.http[].redirect.port", A},
            {"spec.http[].redirect.derivePort", A},
            {"spec.http[].redirect.scheme", A},
            {"spec.http[].redirect.redirectCode", A},
            {"spec.http[].directResponse", A},
            {"spec.http[].directResponse.status", A},
            {"spec.http[].directResponse.body", A},
            {"spec.http[].directResponse.body.string", A},
            {"spec.http[].directResponse.body.bytes", A},
            {"spec.http[].delegate", N,
             "delegation is not applied: the route is skipped, and its requests follow the next "
             "matching route"},
            {"spec.http[].delegate.*", N},
            {"spec.http[].rewrite", A},
            {"spec.http[].rewrite.uri", A},
            {"spec.http[].rewrite.authority", A},
            {"spec.http[].rewrite.uriRegexRewrite", A},
            {"spec.http[].rewrite.uriRegexRewrite.match", A},
            {"spec.http[].rewrite.uriRegexRewrite.rewrite", A},
            {"spec.http[].timeout", A},
            {"spec.http[].retries", A},
            {"spec.http[].retries.attempts", A},
            {"spec.http[].retries.perTryTimeout", A},
            {"spec.http[].retries.retryOn", A},
            {"spec.http[].retries.retryRemoteLocalities", N,
             "retries do not prefer endpoints in other localities", "false"},
            {"spec.http[].retries.retryIgnorePreviousHosts", N,
             "a retry always goes to another endpoint when there is one", "true"},
            {"spec.http[].retries.backoff", N,
             "retries are not spaced by a backoff; a retry starts at once"},
            {"spec.http[].retries.backoff.*", N},
            {"spec.http[].fault", A},
            {"spec.http[].fault.delay", A},
            {"spec.http[].fault.delay.fixedDelay", A},
            {"spec.http[].fault.delay.percent", A},
            {"spec.http[].fault.delay.percentage", A},
            {"spec.http[].fault.delay.percentage.value", A},
            {"spec.http[].fault.delay.exponentialDelay", N,
             "exponential delays are not injected (Istio does not support them either)"},
            {"spec.http[].fault.abort", A},
            {"spec.http[].fault.abort.httpStatus", A},
            {"spec.http[].fault.abort.percentage", A},
            {"spec.http[].fault.abort.percentage.value", A},
            {"spec.http[].fault.abort.grpcStatus", N,
             "gRPC is not parsed; a gRPC-status abort is not injected"},
            {"spec.http[].fault.abort.http2Error", N,
             "HTTP/2 is not parsed; an HTTP/2 error abort is not injected"},
            {"spec.http[].mirrors", A},
            {"spec.http[].mirrors[]", A},
            {"spec.http[].mirrors[].percentage", A},
            {"spec.http[].mirrors[].percentage.value", A},
            {"spec.http[].mirrorPercentage", A},
            {"spec.http[].mirrorPercentage.value", A},
            {"spec.http[].mirror_percent", A},
            {"spec.http[].mirrorPercent", A},
            {"spec.http[].corsPolicy", N,
             "CORS handling is not applied yet; preflight requests go to the app"},
            {"spec.http[].corsPolicy.*", N},
            {"spec.tcp", A},
            {"spec.tcp[]", A},
            {"spec.tcp[].match", P},
            {"spec.tcp[].match[]", P},
            {"spec.tcp[].match[].port", A},
            {"spec.tcp[].match[].destinationSubnets", P},
            {"spec.tcp[].match[].destinationSubnets[]", P},
            {"spec.tcp[].match[].sourceLabels", A,
             "held against the proxy's own workload labels, as for spec.http"},
            {"spec.tcp[].match[].sourceLabels.*", A},
            {"spec.tcp[].match[].sourceNamespace", A,
             "held against the proxy's namespace, as for spec.http"},
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
  addDestination(r, "spec.http[].mirror", A);
  addDestination(r, "spec.http[].mirrors[].destination", A);
  addHeaderOps(r, "spec.http[].headers");
  addHeaderOps(r, "spec.http[].route[].headers");
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
          {"spec.workloadSelector", A,
           "applies only when the proxy's workload is in the rule's namespace and has its "
           "labels; istiod's merge and precedence (docs/CONFIG.md); unknown workload: a finding, "
           "and the rule applies nowhere"},
          {"spec.workloadSelector.matchLabels", A},
          {"spec.workloadSelector.matchLabels.*", A},
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
                {"spec.inboundInterceptionMode", A},
                {"spec.outboundTrafficPolicy", A},
                {"spec.outboundTrafficPolicy.mode", A},
                {"spec.connectTimeout", A},
                {"spec.drainTimeout", A},
                {"spec.maxConnectAttempts", A},
                {"spec.accessLog", A},
                {"spec.relay", A},
                {"spec.tlsDir", A},
                {"spec.trustDomain", A},
                {"spec.podNamespace", A,
                 "the proxy's workload namespace; `--pod-namespace` (POD_NAMESPACE) wins"},
                {"spec.podName", A, "the proxy's pod name; `--pod-name` (POD_NAME) wins"},
                {"spec.podLabelsFile", A,
                 "the downward API file of the pod's labels, read at every load; "
                 "`--pod-labels-file` (REMORA_POD_LABELS_FILE) wins"},
                {"spec.bufferLimit", A},
                {"spec.idleTimeout", A},
                {"spec.halfCloseTimeout", A},
                {"spec.maxConnectionDuration", A},
                {"spec.maxConnections", A},
                {"spec.tcpKeepalive", A},
                {"spec.inboundDrainGrace", A},
                {"spec.protocolDetectionTimeout", A},
                {"spec.pathNormalization", A, "Istio's meshConfig `pathNormalization`"},
                {"spec.pathNormalization.normalization", A,
                 "NONE, BASE (the default; DEFAULT is BASE), MERGE_SLASHES or "
                 "DECODE_AND_MERGE_SLASHES, as Istio sets Envoy for each; every HTTP request on "
                 "both listeners, live on reload (docs/HTTP.md); `--path-normalization` wins"},
            });
  return r;
}

// security.istio.io/v1 (docs/TLS.md); security_parser.cc reads the values and reports what a
// row marks P.
Rows peerAuthenticationRows() {
  Rows r;
  addMetadata(r, true, false);  // the oldest policy of a level wins
  r.add("", {
                {"spec", A},
                {"spec.selector", A},
                {"spec.selector.matchLabels", A},
                {"spec.selector.matchLabels.*", A},
                {"spec.mtls", A},
                {"spec.mtls.mode", A},
                // Without a selector Istio ignores it, and so does Remora (a finding says so).
                {"spec.portLevelMtls", P},
                {"spec.portLevelMtls.*", A},
                {"spec.portLevelMtls.*.mode", A},
            });
  return r;
}

Rows authorizationPolicyRows() {
  Rows r;
  addMetadata(r, false, false);
  constexpr std::string_view kJwt =
      "needs JWT authentication, which Remora does not do: no request has a request principal "
      "(requestPrincipals never matches, notRequestPrincipals always does); on a TCP port an "
      "ALLOW rule with it never matches, a DENY rule matches on its other fields, as Istio does "
      "for TCP";
  r.add("", {
                {"spec", A},
                {"spec.selector", A},
                {"spec.selector.matchLabels", A},
                {"spec.selector.matchLabels.*", A},
                {"spec.action", P},  // CUSTOM is refused
                {"spec.provider", N, "CUSTOM (external authorization) providers are not supported"},
                {"spec.provider.*", N},
                {"spec.targetRef", P},  // refused: the policy is for a gateway or a waypoint
                {"spec.targetRef.*", P},
                {"spec.targetRefs", P},
                {"spec.targetRefs[]", P},
                {"spec.targetRefs[].*", P},
                {"spec.rules", A},
                {"spec.rules[]", A},
                {"spec.rules[].from", A},
                {"spec.rules[].from[]", A},
                {"spec.rules[].from[].source", A},
                {"spec.rules[].to", A},
                {"spec.rules[].to[]", A},
                {"spec.rules[].to[].operation", A},
                {"spec.rules[].when", A},
                {"spec.rules[].when[]", A},
                // request.auth.* keys need JWT, unknown keys are not evaluated: reported.
                {"spec.rules[].when[].key", P},
                {"spec.rules[].when[].values", A},
                {"spec.rules[].when[].values[]", A},
                {"spec.rules[].when[].notValues", A},
                {"spec.rules[].when[].notValues[]", A},
            });
  for (std::string_view key : {"principals", "notPrincipals", "namespaces", "notNamespaces",
                               "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"}) {
    const std::string item = fmt::format("{}[]", key);  // add() copies the path
    r.add("spec.rules[].from[].source", {{key, A}, {item, A}});
  }
  for (std::string_view key : {"requestPrincipals", "notRequestPrincipals"}) {
    const std::string item = fmt::format("{}[]", key);
    r.add("spec.rules[].from[].source", {{key, N, kJwt}, {item, N}});
  }
  // hosts, methods and paths are evaluated per request on HTTP ports; on a TCP port they
  // behave as Istio documents (docs/TLS.md).
  for (std::string_view key :
       {"ports", "notPorts", "hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"}) {
    const std::string item = fmt::format("{}[]", key);
    r.add("spec.rules[].to[].operation", {{key, A}, {item, A}});
  }
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
    t.emplace("PeerAuthentication", Table(peerAuthenticationRows()));
    t.emplace("AuthorizationPolicy", Table(authorizationPolicyRows()));
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
