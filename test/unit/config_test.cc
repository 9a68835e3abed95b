#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "config/duration.h"
#include "config/loader.h"
#include "config/yaml_split.h"
#include "config_test_support.h"
#include "routing/route_table.h"

namespace remora::config {
namespace {

using routing::LbPolicy;
using routing::RouteDecision;
using routing::RouteTable;
using routing::ServicePort;

using testing::addr;
using testing::mustLoad;
std::string readFixture(const std::string& name) { return testing::fixture(name); }

// Raw strings in this file start with a newline for readability; line 1 is the one after it.
std::string yaml(const char* text) { return std::string(text).substr(1); }

// The texts of a loaded table's findings at `severity` or above, one per line.
std::string findingsText(const RouteTable& table, Severity severity) {
  std::string out;
  for (const auto& f : table.findings()) {
    if (f.severity >= severity) out += f.text + "\n";
  }
  return out;
}

// A load either fails as a whole (no document is YAML) or rejects objects alone: either way
// the error texts, which must not be empty.
std::string loadError(const std::string& text) {
  Loader loader;
  auto table = loader.load(text, 1);
  std::string message =
      table.ok() ? findingsText(**table, Severity::kError) : table.error().message;
  EXPECT_FALSE(message.empty()) << "no error for:\n" << text;
  return message;
}

std::string loadWarnings(const std::string& text) {
  Loader loader;
  auto table = loader.load(text, 1);
  EXPECT_TRUE(table.ok()) << table.error().message;
  return table.ok() ? findingsText(**table, Severity::kWarning) : std::string();
}

std::vector<std::string> endpointsOf(const routing::Subset& subset) {
  std::vector<std::string> out;
  for (const auto& e : subset.endpoints) out.push_back(e.address.toString() + " " + e.pod);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The seed scenario

TEST(SeedScenario, ServiceBalancesAcrossBothPods) {
  auto table = mustLoad(readFixture("seed/seed.yaml"));
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.1.122.241:9999"));
  ASSERT_NE(port, nullptr);
  EXPECT_EQ(port->service, "bill-service.istio-demo");
  EXPECT_EQ(port->port, 9999);
  EXPECT_EQ(port->name, "http");
  ASSERT_EQ(port->subsets.size(), 1u);
  EXPECT_EQ(port->subsets[0].name, "");
  EXPECT_EQ(endpointsOf(port->subsets[0]),
            (std::vector<std::string>{"10.244.1.168:80 istio-demo/bill-service-v1",
                                      "10.244.2.74:80 istio-demo/bill-service-v2"}));
  ASSERT_EQ(port->route.size(), 1u);
  EXPECT_EQ(port->route[0].weight, 100u);
  // A pod of the service is matched too, and the client keeps that pod.
  EXPECT_EQ(table->find(addr("10.244.1.168:80")), port);
  EXPECT_EQ(table->find(addr("10.244.0.10:8080")), nullptr);
  EXPECT_EQ(table->find(addr("10.1.122.241:80")), nullptr);

  auto router = routing::makeRouter(table, 1);
  int v1 = 0;
  for (int i = 0; i < 10; ++i) {
    if (router->route(addr("10.1.122.241:9999")).upstream == addr("10.244.1.168:80")) ++v1;
  }
  EXPECT_EQ(v1, 5);
}

TEST(SeedScenario, NinetyTenIsExact) {
  auto table = mustLoad(readFixture("seed/seed.yaml") + readFixture("seed/istio-90-10.yaml"));
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.1.122.241:9999"));
  ASSERT_NE(port, nullptr);
  ASSERT_EQ(port->subsets.size(), 2u);
  EXPECT_EQ(port->subsets[0].name, "v1");
  EXPECT_EQ(endpointsOf(port->subsets[0]),
            std::vector<std::string>{"10.244.1.168:80 istio-demo/bill-service-v1"});
  EXPECT_EQ(endpointsOf(port->subsets[1]),
            std::vector<std::string>{"10.244.2.74:80 istio-demo/bill-service-v2"});
  EXPECT_EQ(port->route[0].weight, 90u);
  EXPECT_EQ(port->route[1].weight, 10u);

  auto router = routing::makeRouter(table, 1);
  int v2 = 0;
  for (int i = 0; i < 100; ++i) {
    RouteDecision d = router->route(addr("10.1.122.241:9999"));
    ASSERT_EQ(d.kind, RouteDecision::Kind::kService);
    if (d.upstream == addr("10.244.2.74:80")) ++v2;
  }
  EXPECT_EQ(v2, 10);
}

TEST(SeedScenario, FiftyFiftyIsExact) {
  auto table = mustLoad(readFixture("seed/seed.yaml") + readFixture("seed/istio-50-50.yaml"));
  ASSERT_TRUE(table);
  auto router = routing::makeRouter(table, 1);
  int v2 = 0;
  for (int i = 0; i < 10; ++i) {
    if (router->route(addr("10.1.122.241:9999")).upstream == addr("10.244.2.74:80")) ++v2;
  }
  EXPECT_EQ(v2, 5);
}

TEST(SeedScenario, DumpsAsConfigDump) {
  Loader loader;
  auto table = loader.load(readFixture("seed/seed.yaml") + readFixture("seed/istio-90-10.yaml"), 7);
  ASSERT_TRUE(table.ok()) << table.error().message;
  nlohmann::json j = (*table)->toJson();
  EXPECT_EQ(j["generation"], 7);
  EXPECT_EQ(j["settings"]["adminListen"], "127.0.0.1:15000");
  ASSERT_EQ(j["services"].size(), 1u);
  const auto& s = j["services"][0];
  EXPECT_EQ(s["service"], "bill-service.istio-demo");
  EXPECT_EQ(s["port"], 9999);
  EXPECT_EQ(s["clusterIPs"], nlohmann::json::array({"10.1.122.241"}));
  EXPECT_EQ(s["route"], nlohmann::json::parse(R"([{"subset":"v1","weight":90},
                                                  {"subset":"v2","weight":10}])"));
  EXPECT_EQ(s["subsets"][0], nlohmann::json::parse(R"({"name":"v1","policy":"ROUND_ROBIN",
      "endpoints":[{"address":"10.244.1.168:80","pod":"istio-demo/bill-service-v1"}]})"));
}

// ---------------------------------------------------------------------------------------------
// Endpoints

constexpr const char* kTwoPods = R"(
apiVersion: v1
kind: Pod
metadata: {name: web-a, labels: {app: web, version: v1}}
spec:
  containers:
  - name: web
    ports: [{name: http-alt, containerPort: 8080}]
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, labels: {app: web, version: v2}}
spec:
  containers:
  - name: web
    ports: [{containerPort: 80}]
status: {podIP: 10.0.0.2}
---
)";

TEST(Endpoints, NamedTargetPortUsesEachPodsOwnPortAndSkipsPodsWithout) {
  auto table = mustLoad(yaml(kTwoPods) + R"(apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http-alt}]
)");
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.96.0.10:80"));
  ASSERT_NE(port, nullptr);
  EXPECT_EQ(port->service, "web.default");
  EXPECT_EQ(endpointsOf(port->subsets[0]), std::vector<std::string>{"10.0.0.1:8080 default/web-a"});
}

TEST(Endpoints, TargetPortDefaultsToPortAndUdpIsIgnored) {
  auto table = mustLoad(yaml(kTwoPods) + R"(apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: http, port: 8080}
)");
  ASSERT_TRUE(table);
  EXPECT_EQ(table->find(addr("10.96.0.10:53")), nullptr);
  const ServicePort* port = table->find(addr("10.96.0.10:8080"));
  ASSERT_NE(port, nullptr);
  EXPECT_EQ(port->subsets[0].endpoints.size(), 2u);
  EXPECT_EQ(port->subsets[0].endpoints[1].address, addr("10.0.0.2:8080"));
}

TEST(Endpoints, OnlyReadyPodsInTheServicesNamespace) {
  auto table = mustLoad(yaml(R"(
apiVersion: v1
kind: Pod
metadata: {name: ready, namespace: shop, labels: {app: cart}}
status:
  podIP: 10.0.0.1
  conditions: [{type: PodScheduled, status: "True"}, {type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: unready, namespace: shop, labels: {app: cart}}
status:
  podIP: 10.0.0.2
  conditions: [{type: Ready, status: "False"}]
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: shop, labels: {app: cart}}
status: {phase: Pending}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: shop, labels: {app: cart}}
status: {podIP: 10.0.0.4, phase: Succeeded}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: other, labels: {app: cart}}
status: {podIP: 10.0.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: unlabelled, namespace: shop}
status: {podIP: 10.0.0.6}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {app: cart}
  ports: [{port: 80}]
)"));
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.96.0.20:80"));
  ASSERT_NE(port, nullptr);
  EXPECT_EQ(endpointsOf(port->subsets[0]), std::vector<std::string>{"10.0.0.1:80 shop/ready"});
  EXPECT_EQ(table->find(addr("10.0.0.2:80")), nullptr);
}

TEST(Endpoints, EndpointSliceReplacesTheSelectorAndLabelsComeFromPods) {
  auto table = mustLoad(yaml(kTwoPods) + R"(apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 9090}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 9091, protocol: TCP}]
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: web-a, namespace: default}
- addresses: [10.0.0.2]
  conditions: {ready: false}
  targetRef: {kind: Pod, name: web-b}
- addresses: [10.0.0.3]
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
  hosts: [web.default.svc.cluster.local]
  http:
  - route:
    - destination: {host: web, subset: v1}
)");
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.96.0.10:80"));
  ASSERT_NE(port, nullptr);
  ASSERT_EQ(port->subsets.size(), 1u);
  EXPECT_EQ(port->subsets[0].name, "v1");
  EXPECT_EQ(endpointsOf(port->subsets[0]), std::vector<std::string>{"10.0.0.1:9091 default/web-a"});
  // The endpoint known only from the slice is still a pod address of the service.
  EXPECT_EQ(table->find(addr("10.0.0.3:9091")), port);
}

TEST(Endpoints, SliceWithoutPortsUsesNumericTargetPort) {
  auto table = mustLoad(yaml(R"(
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  clusterIP: 10.96.0.30
  ports: [{port: 5432, targetPort: 15432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: data
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints:
- addresses: [10.0.1.1]
)"));
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.96.0.30:5432"));
  ASSERT_NE(port, nullptr);
  EXPECT_EQ(endpointsOf(port->subsets[0]), std::vector<std::string>{"10.0.1.1:15432 "});
}

TEST(Endpoints, DualStackAndHeadless) {
  auto table = mustLoad(yaml(R"(
apiVersion: v1
kind: Pod
metadata: {name: p, labels: {app: p}}
status:
  podIP: 10.0.0.1
  podIPs: [{ip: 10.0.0.1}, {ip: "fd00:244::1"}]
---
apiVersion: v1
kind: Service
metadata: {name: both}
spec:
  clusterIP: 10.96.0.40
  clusterIPs: [10.96.0.40, "fd00:96::40"]
  selector: {app: p}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: headless}
spec:
  clusterIP: None
  selector: {app: p}
  ports: [{port: 81}]
)"));
  ASSERT_TRUE(table);
  const ServicePort* both = table->find(addr("10.96.0.40:80"));
  ASSERT_NE(both, nullptr);
  EXPECT_EQ(table->find(addr("[fd00:96::40]:80")), both);
  EXPECT_EQ(table->find(addr("[fd00:244::1]:80")), both);
  EXPECT_TRUE(table->match(addr("[fd00:244::1]:80")).endpoint);
  const ServicePort* headless = table->find(addr("10.0.0.1:81"));
  ASSERT_NE(headless, nullptr);
  EXPECT_EQ(headless->service, "headless.default");
}

TEST(Endpoints, KindListIsReadLikeSeparateDocuments) {
  auto table = mustLoad(yaml(R"(
apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: ns, labels: {app: a}}
  status: {podIP: 10.0.0.1}
- apiVersion: v1
  kind: Service
  metadata: {name: a, namespace: ns}
  spec:
    clusterIP: 10.96.0.50
    selector: {app: a}
    ports: [{port: 80}]
)"));
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.96.0.50:80"));
  ASSERT_NE(port, nullptr);
  EXPECT_EQ(port->subsets[0].endpoints.size(), 1u);
}

// ---------------------------------------------------------------------------------------------
// Istio

std::string seedWith(const std::string& istio) {
  return readFixture("seed/seed.yaml") + "\n---\n" + istio;
}

constexpr const char* kSubsets = R"(
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: bill, namespace: istio-demo}
spec:
  host: bill-service
  trafficPolicy:
    loadBalancer: {simple: LEAST_CONN}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
  - name: v2
    labels: {version: v2}
)";

TEST(Istio, AllThreeApiVersionsAndHostForms) {
  for (const char* version : {"v1", "v1beta1", "v1alpha3"}) {
    for (const char* host :
         {"bill-service", "bill-service.istio-demo", "bill-service.istio-demo.svc.cluster.local"}) {
      std::string vs = fmt::format(R"(apiVersion: networking.istio.io/{}
kind: VirtualService
metadata: {{name: bill, namespace: istio-demo}}
spec:
  hosts: [{}]
  http:
  - route:
    - destination: {{host: {}, subset: v2}}
      weight: 70
    - destination: {{host: bill-service, subset: v1}}
      weight: 30
)",
                                   version, host, host);
      auto table = mustLoad(seedWith(vs + kSubsets));
      ASSERT_TRUE(table) << version << " " << host;
      const ServicePort* port = table->find(addr("10.1.122.241:9999"));
      ASSERT_NE(port, nullptr);
      ASSERT_EQ(port->subsets.size(), 2u);
      EXPECT_EQ(port->subsets[0].name, "v2");
      EXPECT_EQ(port->route[0].weight, 70u);
      EXPECT_EQ(port->subsets[0].policy, LbPolicy::kLeastRequest);
      EXPECT_EQ(port->subsets[1].policy, LbPolicy::kRandom);
    }
  }
}

TEST(Istio, HttpRoutesWithMatchesAreSkippedForTheCatchAll) {
  auto table = mustLoad(seedWith(std::string(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bill, namespace: istio-demo}
spec:
  hosts: [bill-service]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: bill-service, subset: v2}}]
  - route: [{destination: {host: bill-service, subset: v1}}]
)") + kSubsets));
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.1.122.241:9999"));
  // Per connection (the fallback when a connection is not parsed as HTTP/1.1) only the
  // catch-all can apply; per request both routes do, in order (http_route_test checks them).
  ASSERT_EQ(port->route.size(), 1u);
  EXPECT_EQ(port->subsets[port->route[0].subset_index].name, "v1");
  EXPECT_EQ(port->route[0].weight, 100u);
  EXPECT_EQ(port->http_routes.size(), 2u);
}

TEST(Istio, HttpRouteMatchedByPortOnAnHttpPort) {
  auto table = mustLoad(seedWith(std::string(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bill, namespace: istio-demo}
spec:
  hosts: [bill-service]
  http:
  - match: [{port: 1234}]
    route: [{destination: {host: bill-service, subset: v2}}]
  - match: [{port: 9999}]
    route: [{destination: {host: bill-service, subset: v1}}]
)") + kSubsets));
  ASSERT_TRUE(table);
  EXPECT_EQ(table->find(addr("10.1.122.241:9999"))->subsets[0].name, "v1");
}

TEST(Istio, GatewayOnlyVirtualServiceDoesNotApply) {
  auto table = mustLoad(seedWith(std::string(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bill, namespace: istio-demo}
spec:
  hosts: [bill-service]
  gateways: [istio-demo/ingress]
  tcp:
  - route: [{destination: {host: bill-service, subset: v2}}]
)") + kSubsets));
  ASSERT_TRUE(table);
  EXPECT_EQ(table->find(addr("10.1.122.241:9999"))->subsets[0].name, "");
}

TEST(Istio, SubsetWhosePodsAreNotReadyIsEmptyNotAnError) {
  std::string seed = readFixture("seed/seed.yaml");
  // v2 is known but not ready.
  size_t at = seed.find("podIP: 10.244.2.74");
  seed.insert(at + std::string("podIP: 10.244.2.74").size(),
              "\n  conditions:\n  - type: Ready\n    status: \"False\"");
  auto table = mustLoad(seed + readFixture("seed/istio-90-10.yaml"));
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.1.122.241:9999"));
  EXPECT_TRUE(port->subsets[1].endpoints.empty());
  auto router = routing::makeRouter(table, 1);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(router->route(addr("10.1.122.241:9999")).upstream, addr("10.244.1.168:80"));
  }
}

TEST(Istio, DestinationOnAnotherService) {
  auto table = mustLoad(seedWith(R"(apiVersion: v1
kind: Service
metadata: {name: front, namespace: istio-demo}
spec:
  clusterIP: 10.1.0.80
  selector: {app: front-tomcat}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: istio-demo}
spec:
  hosts: [front]
  http:
  - route:
    - destination: {host: front}
      weight: 80
    - destination: {host: bill-service, port: {number: 9999}}
      weight: 20
)"));
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.1.0.80:8080"));
  ASSERT_NE(port, nullptr);
  ASSERT_EQ(port->subsets.size(), 2u);
  EXPECT_EQ(port->subsets[1].name, "bill-service.istio-demo");
  EXPECT_EQ(port->subsets[1].endpoints.size(), 2u);
  EXPECT_EQ(port->subsets[1].endpoints[0].address, addr("10.244.1.168:80"));
}

// ---------------------------------------------------------------------------------------------
// ProxyConfig

TEST(ProxyConfig, OverridesTheBaseSettings) {
  routing::ProxySettings base;
  base.max_connect_attempts = 9;
  base.drain_timeout = std::chrono::milliseconds(1234);
  auto table = mustLoad(yaml(R"(
apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
metadata: {name: proxy}
spec:
  outboundPort: 16001
  inboundPort: 16006
  adminAddress: 0.0.0.0
  adminPort: 16000
  inboundSourceAddress: 127.0.0.7
  inboundInterceptionMode: TPROXY
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
  connectTimeout: 250ms
  accessLog: true
)"),
                        base);
  ASSERT_TRUE(table);
  const auto& s = table->settings();
  EXPECT_EQ(s.outbound_listen.toString(), "0.0.0.0:16001");
  EXPECT_EQ(s.inbound_listen.toString(), "0.0.0.0:16006");
  EXPECT_EQ(s.admin_listen.toString(), "0.0.0.0:16000");
  EXPECT_EQ(s.inbound_source.toString(), "127.0.0.7");
  EXPECT_TRUE(s.inbound_transparent);
  EXPECT_EQ(s.outbound_policy, routing::OutboundPolicy::kRegistryOnly);
  EXPECT_EQ(s.connect_timeout.count(), 250);
  EXPECT_EQ(s.drain_timeout.count(), 1234);
  EXPECT_EQ(s.max_connect_attempts, 9);
  EXPECT_TRUE(s.access_log);
}

TEST(ProxyConfig, AdminAddressWithPortAndDefaults) {
  auto table = mustLoad(yaml(R"(
apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
spec: {adminAddress: "127.0.0.1:15999", drainTimeout: 1m30s, maxConnectAttempts: 1}
)"));
  ASSERT_TRUE(table);
  EXPECT_EQ(table->settings().admin_listen.toString(), "127.0.0.1:15999");
  EXPECT_EQ(table->settings().drain_timeout.count(), 90000);
  EXPECT_EQ(table->settings().outbound_listen.toString(), "0.0.0.0:15001");
  EXPECT_FALSE(table->settings().inbound_transparent);  // REDIRECT unless asked
  auto empty = mustLoad("");
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->settings().connect_timeout.count(), 1000);
}

TEST(Duration, ParsesKubernetesStyle) {
  EXPECT_EQ(parseDuration("1s")->count(), 1000);
  EXPECT_EQ(parseDuration("250ms")->count(), 250);
  EXPECT_EQ(parseDuration("1.5s")->count(), 1500);
  EXPECT_EQ(parseDuration("1m30s")->count(), 90000);
  EXPECT_EQ(parseDuration("2h")->count(), 7200000);
  EXPECT_EQ(parseDuration("100us")->count(), 1);  // rounds up, never to zero
  for (const char* bad : {"", "5", "fast", "-1s", "0s", "1x", "s", "1.s5", "9999999h"}) {
    EXPECT_FALSE(parseDuration(bad).ok()) << bad;
  }
}

// ---------------------------------------------------------------------------------------------
// Errors: each names the document, the object, the field and the line.

void expectError(const std::string& text, const std::vector<std::string>& parts) {
  std::string message = loadError(text);
  for (const auto& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  }
}

TEST(Errors, YamlSyntax) {
  expectError(yaml(R"(
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Service
metadata: {name: b
)"),
              {"document 2", "line 8", "YAML syntax error"});
}

TEST(Errors, UnknownKindAndApiVersion) {
  // A kind the proxy does not read is skipped and counted, not an error.
  auto table = mustLoad(yaml(R"(
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
)"));
  ASSERT_TRUE(table);
  EXPECT_EQ(findingsText(*table, Severity::kWarning), "");
  EXPECT_NE(
      findingsText(*table, Severity::kInfo).find("skipped 2 objects of kind Deployment (apps/v1)"),
      std::string::npos)
      << findingsText(*table, Severity::kInfo);
  expectError(yaml(R"(
apiVersion: networking.istio.io/v2
kind: VirtualService
metadata: {name: web}
)"),
              {"document 1 (VirtualService default/web)", "apiVersion", "line 1"});
  expectError(yaml(R"(
kind: Service
metadata: {name: web}
)"),
              {"apiVersion", "is required"});
  expectError("- just\n- a list\n", {"document 1", "line 1", "expected a Kubernetes object"});
}

TEST(Errors, ServiceWithoutPorts) {
  expectError(yaml(R"(
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  clusterIP: 10.96.0.1
  selector: {app: web}
)"),
              {"document 2 (Service shop/web)", "spec.ports", "line 11", "is required"});
}

TEST(Errors, BadFieldValues) {
  expectError(yaml(R"(
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.300
  ports: [{port: 80}]
)"),
              {"(Service default/web)", "spec.clusterIP", "line 5", "10.96.0.300"});
  expectError(yaml(R"(
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports:
  - port: 80
  - port: http
)"),
              {"spec.ports[1].port", "line 7", "must be an integer"});
  expectError(yaml(R"(
apiVersion: v1
kind: Pod
metadata: {name: p}
status: {podIP: not-an-ip}
)"),
              {"(Pod default/p)", "status.podIP", "line 4"});
}

constexpr const char* kRouteHead = R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bill, namespace: istio-demo}
spec:
  hosts: [bill-service]
  http:
  - route:
)";

// The line in the combined file of line `n` of the text after seed.yaml.
int seedLine(int n) {
  std::string seed = readFixture("seed/seed.yaml");
  // seedWith() adds a blank line and a "---" line after seed.yaml.
  return static_cast<int>(std::count(seed.begin(), seed.end(), '\n')) + 2 + n;
}

TEST(Errors, RouteWithoutDestinationHost) {
  expectError(
      seedWith(std::string(kRouteHead) + R"(    - destination: {subset: v1}
)" + kSubsets),
      {"document 6 (VirtualService istio-demo/bill)", "spec.http[0].route[0].destination.host",
       fmt::format("line {}", seedLine(8)), "is required"});
}

TEST(Errors, Weights) {
  // Istio's weights are relative: 90/20 is valid and gives 90/110 and 20/110.
  auto table = mustLoad(
      seedWith(std::string(kRouteHead) + R"(    - destination: {host: bill-service, subset: v1}
      weight: 90
    - destination: {host: bill-service, subset: v2}
      weight: 20
)" + kSubsets));
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.1.122.241:9999"));
  ASSERT_NE(port, nullptr);
  ASSERT_EQ(port->route.size(), 2u);
  EXPECT_EQ(port->route[0].weight, 90u);
  EXPECT_EQ(port->route[1].weight, 20u);
  expectError(
      seedWith(std::string(kRouteHead) + R"(    - destination: {host: bill-service, subset: v1}
      weight: 110
    - destination: {host: bill-service, subset: v2}
      weight: -10
)" + kSubsets),
      {"spec.http[0].route[1].weight", fmt::format("line {}", seedLine(11)),
       "must be a non-negative 32-bit integer, got -10"});
  expectError(
      seedWith(std::string(kRouteHead) + R"(    - destination: {host: bill-service, subset: v1}
      weight: 0
    - destination: {host: bill-service, subset: v2}
)" + kSubsets),
      {"document 6 (VirtualService istio-demo/bill)", "spec.http[0].route",
       "the weights add up to 0"});
  expectError(
      seedWith(std::string(kRouteHead) + R"(    - destination: {host: bill-service, subset: v1}
      weight: 87.5
    - destination: {host: bill-service, subset: v2}
      weight: 12.5
)" + kSubsets),
      {"spec.http[0].route[0].weight", fmt::format("line {}", seedLine(9)),
       "must be an integer, got '87.5'"});
}

TEST(Errors, UndefinedSubset) {
  expectError(
      seedWith(std::string(kRouteHead) + R"(    - destination: {host: bill-service, subset: v3}
)" + kSubsets),
      {"document 6 (VirtualService istio-demo/bill)", "spec.http[0].route[0].destination.subset",
       fmt::format("line {}", seedLine(8)), "subset 'v3' of bill-service.istio-demo",
       "not defined"});
  // No DestinationRule at all.
  expectError(
      seedWith(std::string(kRouteHead) + R"(    - destination: {host: bill-service, subset: v1}
)"),
      {"subset 'v1'", "not defined by any DestinationRule"});
}

TEST(Errors, SubsetMatchingNoEndpoint) {
  // Valid in Istio (that share gets 503s), so a warning naming the cause, not an error.
  std::string warnings = loadWarnings(
      seedWith(std::string(kRouteHead) + R"(    - destination: {host: bill-service, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bill, namespace: istio-demo}
spec:
  host: bill-service
  subsets:
  - name: v1
    labels: {version: "1"}
)"));
  for (const auto& part :
       {std::string("document 7 (DestinationRule istio-demo/bill)"),
        std::string("spec.subsets[0].labels"), fmt::format("line {}", seedLine(16)),
        std::string("matches none of bill-service.istio-demo's pods"), std::string("version=1")}) {
    EXPECT_NE(warnings.find(part), std::string::npos) << part << " not in " << warnings;
  }
}

TEST(Errors, UnknownDestinationHost) {
  expectError(
      seedWith(std::string(kRouteHead) + R"(    - destination: {host: bil-service}
)"),
      {"spec.http[0].route[0].destination.host", "host 'bil-service' means bil-service.istio-demo",
       "the VirtualService is left out"});
}

TEST(Errors, DuplicatesAndClashes) {
  std::string pod = yaml(R"(
apiVersion: v1
kind: Pod
metadata: {name: p}
status: {podIP: 10.0.0.1}
---
)");
  expectError(pod + pod, {"document 2 (Pod default/p)", "duplicate Pod", "document 1, line 1"});
  std::string service = yaml(R"(
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
)");
  expectError(service + service,
              {"document 2 (Service default/a)", "duplicate Service", "document 1, line 1"});
  expectError(yaml(R"(
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
)"),
              {"document 2 (Service default/b)", "10.96.0.1:80 is already Service default/a"});
  expectError(seedWith(std::string(kSubsets).substr(5) + kSubsets),
              {"document 7 (DestinationRule istio-demo/bill)", "duplicate DestinationRule"});
}

TEST(Errors, ProxyConfig) {
  expectError(yaml(R"(
apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
metadata: {name: proxy}
spec:
  connectTimeout: 5
)"),
              {"document 1 (ProxyConfig default/proxy)", "spec.connectTimeout", "line 5",
               "not a duration"});
  expectError(yaml(R"(
apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
spec:
  outboundTrafficPolicy: {mode: DENY}
)"),
              {"spec.outboundTrafficPolicy.mode", "ALLOW_ANY or REGISTRY_ONLY"});
  expectError(yaml(R"(
apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
spec:
  outboundport: 15001
)"),
              {"spec.outboundport", "line 4", "unknown field"});
}

TEST(Errors, ListItemsAreNamed) {
  expectError(
      yaml(R"(
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: a}
- apiVersion: v1
  kind: Service
  metadata: {name: web}
  spec: {ports: [{port: 0}]}
)"),
      {"document 1 item 1 (Service default/web)", "spec.ports[0].port", "line 10", "1..65535"});
}

TEST(Errors, EndpointSliceWithoutServiceName) {
  expectError(yaml(R"(
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1]}]
)"),
              {"(EndpointSlice default/s)", "kubernetes.io/service-name", "is required"});
}

// ---------------------------------------------------------------------------------------------
// Splitting, caching and files

TEST(Split, CutsAtMarkersAndKeepsLineNumbers) {
  auto docs =
      splitDocuments("# header\n---\na: 1\n---\n\n--- \nb: 2\n...\n# tail\n---\nc: |\n  x\n");
  ASSERT_EQ(docs.size(), 4u);
  EXPECT_EQ(docs[0].text, "# header\n---\na: 1\n");
  EXPECT_EQ(docs[0].first_line, 0);
  EXPECT_EQ(docs[1].text, "---\n\n");  // an empty document
  EXPECT_EQ(docs[2].text, "--- \nb: 2\n...\n");
  EXPECT_EQ(docs[2].first_line, 5);
  EXPECT_EQ(docs[3].first_line, 8);
  EXPECT_TRUE(splitDocuments("").empty());
  EXPECT_TRUE(splitDocuments("# only a comment\n").empty());
  EXPECT_EQ(splitDocuments("a: '---'\nb: ---x\n").size(), 1u);
  // A comment introducing the next document is not part of this one's cache key.
  auto keyed = splitDocuments("a: |+\n  x\n\n# next\n\n---\nb: 2\n");
  ASSERT_EQ(keyed.size(), 2u);
  EXPECT_EQ(keyed[0].text, "a: |+\n  x\n\n# next\n\n");
  EXPECT_EQ(keyed[0].key, "a: |+\n  x\n\n");  // the blank line may be content of a |+ scalar
}

TEST(Loader, ReparsesOnlyChangedDocuments) {
  Loader loader;
  std::string seed = readFixture("seed/seed.yaml");
  ASSERT_TRUE(loader.load(seed, 1).ok());
  EXPECT_EQ(loader.lastStats().documents, 5u);
  EXPECT_EQ(loader.lastStats().parsed, 5u);
  auto with_vs = seed + readFixture("seed/istio-90-10.yaml");
  auto table = loader.load(with_vs, 2);
  ASSERT_TRUE(table.ok()) << table.error().message;
  EXPECT_EQ(loader.lastStats().parsed, 2u);
  EXPECT_EQ((*table)->generation(), 2u);
  ASSERT_TRUE(loader.load(with_vs, 3).ok());
  EXPECT_EQ(loader.lastStats().parsed, 0u);
}

TEST(Loader, ErrorsInCachedDocumentsPointAtTheirNewPlace) {
  Loader loader;
  std::string vs =
      std::string(kRouteHead) + "    - destination: {host: bill-service, subset: v9}\n";
  std::string seed = readFixture("seed/seed.yaml");
  auto first = loader.load(seed + "\n---\n" + vs, 1);
  ASSERT_TRUE(first.ok());
  std::string first_errors = findingsText(**first, Severity::kError);
  EXPECT_NE(first_errors.find("document 6"), std::string::npos) << first_errors;
  // The same VirtualService text, cached, now one document and six lines further down.
  auto second = loader.load(seed +
                                "\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"
                                "# moved\n\n---\n" +
                                vs,
                            2);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(loader.lastStats().parsed, 1u);
  std::string errors = findingsText(**second, Severity::kError);
  EXPECT_NE(errors.find("document 7"), std::string::npos) << errors;
  EXPECT_NE(errors.find(fmt::format("line {}", seedLine(14))), std::string::npos) << errors;
}

TEST(Loader, FollowsSymlinksLikeAConfigMapVolume) {
  auto dir =
      std::filesystem::temp_directory_path() / ("remora-config-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "..2024_01_01");
  {
    std::ofstream out(dir / "..2024_01_01" / "remora.yaml");
    out << readFixture("seed/seed.yaml");
  }
  std::filesystem::create_directory_symlink("..2024_01_01", dir / "..data");
  std::filesystem::create_symlink("..data/remora.yaml", dir / "remora.yaml");
  auto table = loadRouteTableFile((dir / "remora.yaml").string(), 4);
  ASSERT_TRUE(table.ok()) << table.error().message;
  EXPECT_EQ((*table)->generation(), 4u);
  EXPECT_NE((*table)->find(addr("10.1.122.241:9999")), nullptr);
  auto missing = loadRouteTableFile((dir / "nope.yaml").string(), 5);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("nope.yaml"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Loader, FreeFunctionLoadsText) {
  auto table = loadRouteTable(readFixture("seed/seed.yaml"), 9);
  ASSERT_TRUE(table.ok()) << table.error().message;
  EXPECT_EQ((*table)->generation(), 9u);
}

}  // namespace
}  // namespace remora::config
