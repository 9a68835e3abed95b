// Config fidelity: every field is applied as Istio documents it or reported with its document,
// field and line; one bad object is rejected alone; Istio's semantics where they differ.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "config/field_table.h"
#include "config/loader.h"
#include "config_test_support.h"
#include "routing/route_table.h"
#include "security/security_policy.h"

namespace remora::config {
namespace {

using routing::RouteTable;
using routing::ServicePort;

using testing::addr;
using testing::fixture;

std::shared_ptr<const RouteTable> load(Loader& loader, const std::string& text) {
  return testing::mustLoad(text, {}, &loader);
}

std::shared_ptr<const RouteTable> load(const std::string& text) { return testing::mustLoad(text); }

std::string all(const RouteTable& table) { return testing::allFindings(table); }

void expectFinding(const RouteTable& table, Severity severity,
                   const std::vector<std::string>& parts) {
  for (const auto& f : table.findings()) {
    if (f.severity != severity) continue;
    bool every = std::all_of(parts.begin(), parts.end(), [&](const std::string& p) {
      return f.text.find(p) != std::string::npos;
    });
    if (every) return;
  }
  ADD_FAILURE() << "no " << toString(severity) << " finding with "
                << fmt::format("{}", fmt::join(parts, " + ")) << " in:\n"
                << all(table);
}

std::string bookinfo() { return fixture("bookinfo/bookinfo.yaml"); }

// The file line of line `n` of a fixture appended to bookinfo() after a "---" line.
std::string afterBookinfo(int n) {
  std::string b = bookinfo();
  return fmt::format("line {}", std::count(b.begin(), b.end(), '\n') + 1 + n);
}

TEST(FieldTable, EveryRowHasItsParent) {
  for (const char* kind :
       {"Service", "Pod", "EndpointSlice", "Endpoints", "VirtualService", "DestinationRule",
        "ServiceEntry", "WorkloadEntry", "ProxyConfig", "Namespace"}) {
    auto rows = fieldTable(kind);
    ASSERT_FALSE(rows.empty()) << kind;
    std::set<std::string_view> paths;
    for (const auto& r : rows) paths.insert(r.path);
    for (const auto& r : rows) {
      std::string_view path = r.path;
      size_t cut = std::min(path.rfind('.'), path.rfind('['));
      if (cut == std::string_view::npos) continue;
      EXPECT_TRUE(paths.count(path.substr(0, cut)) == 1) << kind << ": " << path;
      if (r.support == Support::kNotApplied && !r.note.empty()) {
        EXPECT_GT(r.note.size(), 10u) << kind << ": " << path;
      }
    }
  }
}

TEST(FieldTable, SuggestsTheClosestField) {
  std::vector<std::string_view> names = {"name", "labels", "trafficPolicy"};
  EXPECT_EQ(suggest("lables", names), "labels");
  EXPECT_EQ(suggest("trafficpolicy", names), "trafficPolicy");
  EXPECT_EQ(suggest("x", names), "");
  std::vector<std::string_view> vs = {"hosts", "http", "tcp", "tls", "gateways"};
  EXPECT_EQ(suggest("htttp", vs), "http");
}

TEST(Fidelity, BookinfoLoadsAndHeaderMatchIsReportedNotSilent) {
  auto table = load(bookinfo() + "---\n" + fixture("bookinfo/routing.yaml"));
  ASSERT_TRUE(table);
  // kubectl's bookkeeping (status, uid, sessionAffinity: None, ...) is silent.
  EXPECT_EQ(all(*table).find("resourceVersion"), std::string::npos) << all(*table);
  EXPECT_EQ(all(*table).find("sessionAffinity"), std::string::npos) << all(*table);
  expectFinding(*table, Severity::kInfo, {"skipped 1 object of kind Deployment (apps/v1)"});
  expectFinding(*table, Severity::kInfo, {"ServiceAccount (v1)"});
  // The jason route and the fault are applied per request now: no finding about them.
  EXPECT_EQ(all(*table).find("spec.http"), std::string::npos) << all(*table);
  // tls.mode ISTIO_MUTUAL is applied since the mTLS issue: no finding, and the security table
  // records it for the reviews service (docs/TLS.md).
  for (const auto& f : table->findings()) {
    EXPECT_EQ(f.text.find("spec.trafficPolicy.tls"), std::string::npos) << f.text;
  }
  ASSERT_NE(table->security, nullptr);
  EXPECT_EQ(table->security->destination_tls.count({"reviews.bookinfo", 0}), 1U);
  // The HTTP port gets the http route (80/20), the tcp-admin port the tcp route.
  const ServicePort* http = table->find(addr("10.1.122.241:9080"));
  ASSERT_NE(http, nullptr);
  EXPECT_EQ(http->protocol, "HTTP");
  ASSERT_EQ(http->route.size(), 2u);
  EXPECT_EQ(http->subsets[http->route[0].subset_index].name, "v1");
  EXPECT_EQ(http->route[0].weight, 80u);
  EXPECT_EQ(http->route[1].weight, 20u);
  ASSERT_EQ(http->http_routes.size(), 2u);  // the model itself: http_route_test
  const ServicePort* tcp = table->find(addr("10.1.122.241:9999"));
  ASSERT_NE(tcp, nullptr);
  EXPECT_EQ(tcp->protocol, "TCP");
  ASSERT_EQ(tcp->route.size(), 1u);
  EXPECT_EQ(tcp->subsets[tcp->route[0].subset_index].name, "v2");
}

TEST(Fidelity, TyposAreWarningsWithSuggestions) {
  auto table = load(bookinfo() + "---\n" + fixture("bookinfo/typos.yaml"));
  ASSERT_TRUE(table);
  expectFinding(*table, Severity::kWarning,
                {"(DestinationRule bookinfo/ratings)", "spec.subsets[0].lables", afterBookinfo(9),
                 "did you mean 'labels'?"});
  expectFinding(*table, Severity::kWarning,
                {"(VirtualService bookinfo/ratings)", "spec.htttp", "did you mean 'http'?"});
}

TEST(Fidelity, RulesInTheWrongNamespaceSayWhy) {
  std::string rules = fixture("bookinfo/routing.yaml");
  // The samples carry no namespace, so they land in "default".
  size_t at = 0;
  while ((at = rules.find(", namespace: bookinfo", at)) != std::string::npos) {
    rules.erase(at, std::string(", namespace: bookinfo").size());
  }
  auto table = load(bookinfo() + "---\n" + rules);
  ASSERT_TRUE(table);
  expectFinding(*table, Severity::kError,
                {"(VirtualService default/reviews)", "host 'reviews' means reviews.default",
                 "did you mean reviews.bookinfo?", "the VirtualService is left out"});
  const ServicePort* http = table->find(addr("10.1.122.241:9080"));
  ASSERT_NE(http, nullptr);
  EXPECT_EQ(http->route.size(), 1u);  // no VirtualService applied
}

TEST(Fidelity, UnknownHostNamesTheLikelyNamespace) {
  auto table = load(bookinfo() + R"(---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
)");
  ASSERT_TRUE(table);
  expectFinding(*table, Severity::kWarning,
                {"(DestinationRule default/ratings)", "spec.host",
                 "'ratings' means ratings.default", "did you mean ratings.bookinfo?"});
}

TEST(Fidelity, WeightsAreRelative) {
  auto table = load(bookinfo() + R"(---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 800
    - destination: {host: reviews, subset: v2}
      weight: 200
)");
  ASSERT_TRUE(table);
  const ServicePort* http = table->find(addr("10.1.122.241:9080"));
  ASSERT_EQ(http->route.size(), 2u);
  auto router = routing::makeRouter(table, 1);
  int v1 = 0;
  for (int i = 0; i < 100; ++i) {
    v1 += router->route(addr("10.1.122.241:9080")).upstream == addr("10.244.1.168:80") ? 1 : 0;
  }
  EXPECT_EQ(v1, 80);
}

TEST(Fidelity, DestinationRulesForOneHostMerge) {
  auto table = load(bookinfo() + R"(---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-extra, namespace: bookinfo, creationTimestamp: "2026-11-02T00:00:00Z"}
spec:
  host: reviews.bookinfo.svc.cluster.local
  subsets:
  - name: v1
    labels: {version: v2}
  - name: canary
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: canary}
      weight: 1
    - destination: {host: reviews, subset: v1}
      weight: 1
)");
  ASSERT_TRUE(table);
  expectFinding(*table, Severity::kWarning,
                {"(DestinationRule bookinfo/reviews-extra)", "spec.subsets[0].name", "subset 'v1'",
                 "already defined by DestinationRule bookinfo/reviews"});
  const ServicePort* http = table->find(addr("10.1.122.241:9080"));
  ASSERT_EQ(http->subsets.size(), 2u);
  EXPECT_EQ(http->subsets[0].name, "canary");
  ASSERT_EQ(http->subsets[0].endpoints.size(), 1u);
  EXPECT_EQ(http->subsets[0].endpoints[0].address, addr("10.244.2.74:80"));
  // v1 keeps the first (older) rule's labels.
  ASSERT_EQ(http->subsets[1].endpoints.size(), 1u);
  EXPECT_EQ(http->subsets[1].endpoints[0].address, addr("10.244.1.168:80"));
}

TEST(Fidelity, TwoVirtualServicesTheOlderWins) {
  std::string vs = R"(---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: NAME, namespace: bookinfo, creationTimestamp: "STAMP"}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: SUBSET}}]
)";
  auto make = [&](const char* name, const char* stamp, const char* subset) {
    std::string out = vs;
    out.replace(out.find("NAME"), 4, name);
    out.replace(out.find("STAMP"), 5, stamp);
    out.replace(out.find("SUBSET"), 6, subset);
    return out;
  };
  auto table = load(bookinfo() + make("newer", "2026-11-05T00:00:00Z", "v2") +
                    make("older", "2026-11-03T00:00:00Z", "v1"));
  ASSERT_TRUE(table);
  const ServicePort* http = table->find(addr("10.1.122.241:9080"));
  EXPECT_EQ(http->subsets[0].name, "v1");
  expectFinding(*table, Severity::kWarning,
                {"(VirtualService bookinfo/newer)", "also routed by VirtualService bookinfo/older",
                 "IST0109"});
}

TEST(Fidelity, OneBadObjectIsRejectedAloneAndTheLastGoodKeepsServing) {
  Loader loader;
  std::string good = R"(---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
)";
  auto first = load(loader, bookinfo() + good);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->find(addr("10.1.122.241:9080"))->route[0].weight, 90u);
  std::string bad = good;
  bad.replace(bad.find("weight: 10"), 10, "weight: -5");
  auto second = load(loader, bookinfo() + bad + R"(---
apiVersion: v1
kind: Service
metadata: {name: broken, namespace: bookinfo}
spec:
  clusterIP: 10.1.0.99
  ports: [{port: 80, targetPort: .inf}]
)");
  ASSERT_TRUE(second);
  expectFinding(*second, Severity::kError,
                {"(VirtualService bookinfo/reviews)", "spec.http[0].route[1].weight",
                 "its last good version keeps serving"});
  expectFinding(*second, Severity::kError,
                {"(Service bookinfo/broken)", "spec.ports[0].targetPort", "'.inf'",
                 "the object is left out"});
  const ServicePort* http = second->find(addr("10.1.122.241:9080"));
  ASSERT_EQ(http->route.size(), 2u);
  EXPECT_EQ(http->route[0].weight, 90u);
  EXPECT_EQ(second->find(addr("10.1.0.99:80")), nullptr);
}

TEST(Fidelity, NotYamlAtAllFailsTheWholeLoad) {
  Loader loader;
  EXPECT_FALSE(loader.load("{ this: is: not yaml\n", 1).ok());
}

TEST(Fidelity, ValuesAreValidatedAsTheApiServerWould) {
  for (const char* target : {".inf", "0x50", "-9223372036854775809", "HTTP", "a--b"}) {
    auto table = load(fmt::format(R"(apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  clusterIP: 10.96.0.1
  ports: [{{port: 80, targetPort: {}}}]
)",
                                  target));
    ASSERT_TRUE(table);
    expectFinding(*table, Severity::kError, {"spec.ports[0].targetPort", "IANA_SVC_NAME", target});
    EXPECT_EQ(table->find(addr("10.96.0.1:80")), nullptr) << target;
  }
  auto pod = load(R"(apiVersion: v1
kind: Pod
metadata: {name: p}
status: {podIP: 0.0.0.0}
)");
  expectFinding(*pod, Severity::kError, {"(Pod default/p)", "status.podIP", "unspecified"});
  auto dup = load(R"(apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.1
  clusterIP: 10.96.0.2
  ports: [{port: 80}]
)");
  expectFinding(*dup, Severity::kError, {"spec.clusterIP", "line 6", "given twice"});
  auto no_vip = load(R"(apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80}]
)");
  expectFinding(*no_vip, Severity::kWarning, {"spec.clusterIP", "is not set"});
}

TEST(Fidelity, EndpointSliceWithoutPodsNamesTheCause) {
  auto table = load(R"(apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.1]
  targetRef: {kind: Pod, name: web-a}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: web, subset: v1}}]}]
)");
  ASSERT_TRUE(table);
  expectFinding(*table, Severity::kWarning,
                {"EndpointSlice endpoints carry no pod labels: subset v1 (version=v1) needs the "
                 "Pods named in targetRef; include them"});
}

TEST(Sources, EndpointsServiceEntryAndWorkloadEntry) {
  auto table = load(R"(apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: shop}
spec:
  clusterIP: 10.96.1.1
  ports: [{name: tcp-db, port: 5432}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: legacy, namespace: shop}
subsets:
- addresses: [{ip: 10.0.5.1}]
  notReadyAddresses: [{ip: 10.0.5.2}]
  ports: [{name: tcp-db, port: 15432}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: shop}
spec:
  hosts: [payments.example.com]
  addresses: [240.0.0.10]
  ports: [{number: 443, name: tls, protocol: TLS}, {number: 8080, name: http, protocol: HTTP}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - address: 192.0.2.10
    labels: {version: v1}
  - address: 192.0.2.11
    ports: {http: 9090}
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vms, namespace: shop}
spec:
  hosts: [vm.shop.internal]
  addresses: [240.0.0.11]
  ports: [{number: 80, name: http}]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector:
    labels: {app: vm}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: shop}
spec:
  address: 192.0.2.50
  labels: {app: vm}
  ports: {http: 8081}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough, namespace: shop}
spec:
  hosts: [api.example.org]
  ports: [{number: 443, name: tls}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payments, namespace: shop}
spec:
  hosts: [payments.example.com]
  http:
  - route:
    - destination: {host: payments.example.com, subset: v2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payments, namespace: shop}
spec:
  host: payments.example.com
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
)");
  ASSERT_TRUE(table);
  EXPECT_EQ(all(*table).find("error"), std::string::npos) << all(*table);
  const ServicePort* legacy = table->find(addr("10.96.1.1:5432"));
  ASSERT_NE(legacy, nullptr);
  ASSERT_EQ(legacy->subsets[0].endpoints.size(), 1u);
  EXPECT_EQ(legacy->subsets[0].endpoints[0].address, addr("10.0.5.1:15432"));
  const ServicePort* payments = table->find(addr("240.0.0.10:8080"));
  ASSERT_NE(payments, nullptr);
  EXPECT_EQ(payments->service, "payments.example.com");
  ASSERT_EQ(payments->subsets.size(), 1u);
  ASSERT_EQ(payments->subsets[0].endpoints.size(), 1u);
  EXPECT_EQ(payments->subsets[0].endpoints[0].address, addr("192.0.2.11:9090"));
  const ServicePort* tls = table->find(addr("240.0.0.10:443"));
  ASSERT_NE(tls, nullptr);
  EXPECT_EQ(tls->subsets[0].endpoints.size(), 2u);  // TLS port: no http route
  const ServicePort* vm = table->find(addr("240.0.0.11:80"));
  ASSERT_NE(vm, nullptr);
  ASSERT_EQ(vm->subsets[0].endpoints.size(), 1u);
  EXPECT_EQ(vm->subsets[0].endpoints[0].address, addr("192.0.2.50:8081"));
  EXPECT_EQ(vm->subsets[0].endpoints[0].pod, "shop/vm-1");
}

TEST(Sources, WhatServiceEntriesCannotApplyIsReported) {
  auto table = load(R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ranges, namespace: shop}
spec:
  hosts: [a.example.com, b.example.com]
  addresses: [240.0.0.20, 240.1.0.0/16]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.30}]
---
apiVersion: v1
kind: Service
metadata: {name: vm, namespace: shop}
spec:
  clusterIP: 10.96.2.2
  selector: {app: vm}
  ports: [{name: http, port: 80}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-dns, namespace: shop}
spec:
  address: vm.shop.internal
  labels: {app: vm}
)");
  ASSERT_TRUE(table);
  expectFinding(
      *table, Severity::kWarning,
      {"(ServiceEntry shop/ranges)", "spec.addresses[1]", "240.1.0.0/16", "not matched yet"});
  expectFinding(*table, Severity::kWarning,
                {"(ServiceEntry shop/ranges)", "spec.hosts[1]", "first host, a.example.com",
                 "'b.example.com' gets no VIP"});
  expectFinding(*table, Severity::kWarning,
                {"(WorkloadEntry shop/vm-dns)", "spec.address", "'vm.shop.internal' is a DNS name",
                 "vm.shop does not use this workload"});
  EXPECT_NE(table->find(addr("240.0.0.20:80")), nullptr);
  EXPECT_EQ(table->find(addr("240.0.0.20:80"))->service, "a.example.com");
}

TEST(Sources, DnsServiceEntryUsesTheResolver) {
  Loader loader;
  loader.setResolver([](const std::string& host) -> Result<std::vector<IpAddress>> {
    if (host == "db.example.com") return std::vector<IpAddress>{*IpAddress::parse("192.0.2.77")};
    return makeError("NXDOMAIN");
  });
  auto table = load(loader, R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: tcp-pg}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: gone, namespace: shop}
spec:
  hosts: [gone.example.com]
  ports: [{number: 80, name: http}]
  resolution: DNS
)");
  ASSERT_TRUE(table);
  const ServicePort* db = table->find(addr("192.0.2.77:5432"));
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db->subsets[0].endpoints[0].address, addr("192.0.2.77:5432"));
  expectFinding(*table, Severity::kWarning, {"(ServiceEntry shop/gone)", "did not resolve"});
}

TEST(Fidelity, ProxyConfigDataPathSettings) {
  auto table = load(R"(apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
spec:
  bufferLimit: 256Ki
  idleTimeout: 30m
  halfCloseTimeout: 0s
  maxConnectionDuration: 2h
  maxConnections: 5000
  tcpKeepalive: 1m
  inboundDrainGrace: 3s
)");
  ASSERT_TRUE(table);
  const auto& s = table->settings();
  EXPECT_EQ(s.buffer_limit_bytes, 256u * 1024);
  EXPECT_EQ(s.idle_timeout, std::chrono::minutes(30));
  EXPECT_EQ(s.half_close_timeout, std::chrono::milliseconds(0));
  EXPECT_EQ(s.max_connection_duration, std::chrono::hours(2));
  EXPECT_EQ(s.max_connections, 5000u);
  EXPECT_EQ(s.tcp_keepalive, std::chrono::minutes(1));
  EXPECT_EQ(s.inbound_drain_grace, std::chrono::seconds(3));
  auto bad = load(R"(apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
spec:
  bufferLimit: 1Ti
)");
  expectFinding(*bad, Severity::kError, {"spec.bufferLimit", "64Ki or 1Mi", "'1Ti'"});
}

TEST(Fidelity, ProxyConfigProtocolDetectionTimeout) {
  auto table = load(R"(apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
spec:
  protocolDetectionTimeout: 250ms
)");
  ASSERT_TRUE(table);
  EXPECT_EQ(table->settings().protocol_detection_timeout, std::chrono::milliseconds(250));
  auto defaults = load("apiVersion: remora.dev/v1alpha1\nkind: ProxyConfig\nspec: {}\n");
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->settings().protocol_detection_timeout, std::chrono::milliseconds(100));
  for (const char* value : {"0s", "soon", "-5ms"}) {
    auto bad = load(fmt::format(R"(apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
spec:
  accessLog: true
  protocolDetectionTimeout: {}
)",
                                value));
    expectFinding(
        *bad, Severity::kError,
        {"spec.protocolDetectionTimeout", "line 5", "more than 0", fmt::format("'{}'", value)});
  }
}

// Istio's meshConfig pathNormalization, in the same shape: the four modes (and DEFAULT, which
// Istio reads as BASE); BASE when unset.
TEST(Fidelity, ProxyConfigPathNormalization) {
  using security::PathNormalization;
  auto defaults = load("apiVersion: remora.dev/v1alpha1\nkind: ProxyConfig\nspec: {}\n");
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->settings().path_normalization, PathNormalization::kBase);
  EXPECT_EQ(defaults->toJson()["settings"]["pathNormalization"], "BASE");
  for (auto [text, mode] :
       {std::pair{"NONE", PathNormalization::kNone}, std::pair{"BASE", PathNormalization::kBase},
        std::pair{"DEFAULT", PathNormalization::kBase},
        std::pair{"MERGE_SLASHES", PathNormalization::kMergeSlashes},
        std::pair{"DECODE_AND_MERGE_SLASHES", PathNormalization::kDecodeAndMergeSlashes}}) {
    auto table = load(fmt::format(R"(apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
spec:
  pathNormalization:
    normalization: {}
)",
                                  text));
    ASSERT_TRUE(table);
    EXPECT_EQ(table->settings().path_normalization, mode) << text;
    EXPECT_EQ(all(*table), "") << text;
  }
  auto unset = load(R"(apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
spec:
  pathNormalization: {}
)");
  ASSERT_TRUE(unset);
  EXPECT_EQ(unset->settings().path_normalization, PathNormalization::kBase);
  EXPECT_EQ(all(*unset), "");
  for (const char* value : {"merge_slashes", "MERGE", "'1'", "''"}) {
    auto bad = load(fmt::format(R"(apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
metadata: {{name: proxy}}
spec:
  accessLog: true
  pathNormalization:
    normalization: {}
)",
                                value));
    ASSERT_TRUE(bad);
    expectFinding(*bad, Severity::kError,
                  {"(ProxyConfig default/proxy)", "spec.pathNormalization.normalization", "line 7",
                   std::string_view(value) == "''" ? "is empty" : "MERGE_SLASHES"});
    EXPECT_EQ(bad->settings().path_normalization, PathNormalization::kBase) << value;
    EXPECT_FALSE(bad->settings().access_log) << "the whole ProxyConfig is left out";
  }
  const std::string head = "apiVersion: remora.dev/v1alpha1\nkind: ProxyConfig\nspec:\n";
  auto scalar = load(head + "  pathNormalization: MERGE_SLASHES\n");
  ASSERT_TRUE(scalar);
  expectFinding(*scalar, Severity::kError, {"spec.pathNormalization", "line 4", "mapping"});
  auto typo = load(head + "  pathNormalization:\n    normalisation: NONE\n");
  ASSERT_TRUE(typo);
  expectFinding(*typo, Severity::kError,
                {"spec.pathNormalization.normalisation", "line 5", "unknown field"});
}

// A reload whose ProxyConfig has a bad mode keeps the last good ProxyConfig, mode and all.
TEST(Fidelity, ABadPathNormalizationOnReloadKeepsTheLastGoodOne) {
  Loader loader;
  const std::string good = R"(apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
metadata: {name: proxy, namespace: istio-system}
spec:
  pathNormalization: {normalization: MERGE_SLASHES}
)";
  auto first = load(loader, good);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->settings().path_normalization, security::PathNormalization::kMergeSlashes);
  std::string bad = good;
  bad.replace(bad.find("MERGE_SLASHES"), 13, "MERGE_SLASH");
  auto second = load(loader, bad);
  ASSERT_TRUE(second);
  expectFinding(*second, Severity::kError,
                {"(ProxyConfig istio-system/proxy)", "spec.pathNormalization.normalization",
                 "line 5", "'MERGE_SLASH'", "its last good version keeps serving"});
  EXPECT_EQ(second->settings().path_normalization, security::PathNormalization::kMergeSlashes);
}

TEST(Fidelity, ProxyConfigTlsDirAndTrustDomain) {
  auto table = load(R"(apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
spec:
  tlsDir: /var/run/secrets/remora
  trustDomain: mesh-1.example_org
)");
  ASSERT_TRUE(table);
  EXPECT_EQ(table->settings().tls_dir, "/var/run/secrets/remora");
  EXPECT_EQ(table->settings().trust_domain, "mesh-1.example_org");
  auto defaults = load("apiVersion: remora.dev/v1alpha1\nkind: ProxyConfig\nspec: {}\n");
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->settings().tls_dir, "");
  EXPECT_EQ(defaults->settings().trust_domain, "cluster.local");
  auto relative = load(R"(apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
spec:
  accessLog: true
  tlsDir: certs
)");
  expectFinding(*relative, Severity::kError,
                {"spec.tlsDir", "line 5", "absolute directory path", "'certs'"});
  auto upper = load(R"(apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
spec:
  trustDomain: Cluster.Local
)");
  expectFinding(*upper, Severity::kError,
                {"spec.trustDomain", "line 4", "'Cluster.Local' is not a trust domain"});
  auto slash = load(R"(apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
spec:
  trustDomain: "spiffe://cluster.local"
)");
  expectFinding(*slash, Severity::kError, {"spec.trustDomain", "line 4", "not a trust domain"});
  auto empty = load(R"(apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
spec:
  trustDomain: ""
)");
  expectFinding(*empty, Severity::kError, {"spec.trustDomain", "line 4"});
}

TEST(Protocol, AsIstioSelectsIt) {
  EXPECT_EQ(portProtocol("http", ""), "HTTP");
  EXPECT_EQ(portProtocol("http-web", ""), "HTTP");
  EXPECT_EQ(portProtocol("http2", ""), "HTTP2");
  EXPECT_EQ(portProtocol("grpc-api", ""), "GRPC");
  EXPECT_EQ(portProtocol("grpc-web", ""), "GRPC-WEB");
  EXPECT_EQ(portProtocol("tcp-db", ""), "TCP");
  EXPECT_EQ(portProtocol("mysql", ""), "MYSQL");
  EXPECT_EQ(portProtocol("web", ""), "");
  EXPECT_EQ(portProtocol("", ""), "");
  EXPECT_EQ(portProtocol("tcp", "http"), "HTTP");
  EXPECT_EQ(portProtocol("", "kubernetes.io/h2c"), "HTTP2");
  EXPECT_EQ(portProtocol("https", ""), "HTTPS");
}

}  // namespace
}  // namespace remora::config
