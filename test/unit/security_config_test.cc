// PeerAuthentication, AuthorizationPolicy, DestinationRule tls and Pod identities read from YAML
// into the SecurityTable, with findings for what is not applied.

#include <gtest/gtest.h>

#include "config/loader.h"
#include "routing/route_table.h"
#include "security/security_policy.h"

namespace remora::config {
namespace {

constexpr const char* kPods = R"(apiVersion: v1
kind: Pod
metadata:
  name: bill
  namespace: demo
  labels: {app: bill, security.istio.io/tlsMode: istio}
spec: {serviceAccountName: bill-sa}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy, namespace: demo, labels: {app: legacy}}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Service
metadata: {name: bill, namespace: demo}
spec:
  clusterIP: 10.1.0.1
  selector: {app: bill}
  ports: [{name: tcp, port: 80}]
)";

std::shared_ptr<const routing::RouteTable> load(const std::string& yaml) {
  Loader loader;
  auto table = loader.load(yaml, 1);
  EXPECT_TRUE(table.ok()) << (table.ok() ? "" : table.error().message);
  return table.ok() ? *table : nullptr;
}

std::string findings(const routing::RouteTable& t) {
  std::string out;
  for (const auto& f : t.findings()) out += f.text + "\n";
  return out;
}

IpAddress ip(const char* text) { return *IpAddress::parse(text); }

TEST(SecurityConfig, NothingSecurityRelatedLeavesNoTable) {
  auto t = load(R"(apiVersion: v1
kind: Pod
metadata: {name: a, namespace: demo}
status: {podIP: 10.0.1.9}
)");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->security, nullptr);
}

TEST(SecurityConfig, PodsGiveIdentitiesAndAutoMtls) {
  auto t = load(kPods);
  ASSERT_TRUE(t && t->security);
  const auto* w = t->security->workload(ip("10.0.1.1"));
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->spiffe_id, "spiffe://cluster.local/ns/demo/sa/bill-sa");
  EXPECT_TRUE(w->meshed);
  EXPECT_EQ(t->security->workload(ip("10.0.1.2"))->spiffe_id,
            "spiffe://cluster.local/ns/demo/sa/default");
  EXPECT_TRUE(t->security->outbound("bill.demo", 80, ip("10.0.1.1")).tls);
  EXPECT_FALSE(t->security->outbound("bill.demo", 80, ip("10.0.1.2")).tls);
}

TEST(SecurityConfig, PeerAuthenticationLevelsAndPorts) {
  auto t = load(std::string(kPods) + R"(---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: bill, namespace: demo}
spec:
  selector: {matchLabels: {app: bill}}
  portLevelMtls:
    "9000": {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns-ports, namespace: demo}
spec:
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    "8080": {mode: STRICT}
)");
  ASSERT_TRUE(t && t->security);
  EXPECT_EQ(t->security->inboundMode(ip("10.0.1.1"), 80), security::MtlsMode::kPermissive);
  EXPECT_EQ(t->security->inboundMode(ip("10.0.1.1"), 9000), security::MtlsMode::kDisable);
  EXPECT_EQ(t->security->inboundMode(ip("10.9.9.9"), 80), security::MtlsMode::kStrict);
  EXPECT_NE(findings(*t).find("portLevelMtls needs a workload selector"), std::string::npos)
      << findings(*t);
}

TEST(SecurityConfig, AuthorizationPolicyRulesAndL7Findings) {
  auto t = load(std::string(kPods) + R"(---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-front, namespace: demo}
spec:
  selector: {matchLabels: {app: bill}}
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/demo/sa/front"]
        ipBlocks: ["10.0.0.0/16"]
    to:
    - operation: {ports: ["80"], methods: ["GET"]}
    when:
    - {key: source.namespace, values: ["demo"]}
    - key: "request.headers[x-user]"
      values: ["a"]
    - {key: "request.auth.claims[iss]", values: ["x"]}
    - {key: request.bogus, values: ["x"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: demo}
spec: {action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: custom, namespace: demo}
spec: {action: CUSTOM, provider: {name: x}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: typo, namespace: demo}
spec: {acton: DENY}
)");
  ASSERT_TRUE(t && t->security);
  const auto& policies = t->security->authorization_policies;
  ASSERT_EQ(policies.size(), 3U);  // CUSTOM is refused
  const auto& allow = policies[0];
  EXPECT_EQ(allow.action, security::Action::kAllow);
  ASSERT_EQ(allow.rules.size(), 1U);
  EXPECT_EQ(allow.rules[0].from[0].principals[0], "cluster.local/ns/demo/sa/front");
  EXPECT_EQ(allow.rules[0].to[0].ports[0], 80);
  EXPECT_TRUE(allow.rules[0].to[0].l7);
  EXPECT_FALSE(allow.rules[0].when[0].l7);
  EXPECT_TRUE(allow.rules[0].when[1].l7);
  EXPECT_EQ(policies[1].action, security::Action::kDeny);
  EXPECT_EQ(policies[1].rules.size(), 1U);
  EXPECT_TRUE(policies[2].rules.empty());
  const std::string f = findings(*t);
  // HTTP fields are applied on HTTP ports (issue 14 with L7): parsed, no finding.
  EXPECT_EQ(allow.rules[0].to[0].methods, std::vector<std::string>{"GET"});
  EXPECT_EQ(f.find("methods"), std::string::npos) << f;
  EXPECT_EQ(f.find("x-user"), std::string::npos) << f;
  EXPECT_NE(f.find("'request.auth.claims[iss]' needs JWT authentication"), std::string::npos) << f;
  EXPECT_NE(f.find("'request.bogus' is unknown"), std::string::npos) << f;
  EXPECT_NE(f.find("CUSTOM (external authorization) is not supported"), std::string::npos) << f;
  EXPECT_NE(f.find("unknown field 'acton'"), std::string::npos) << f;
  EXPECT_EQ(t->security->policiesFor(ip("10.0.1.1")).size(), 3U);
  EXPECT_EQ(t->security->policiesFor(ip("10.0.1.2")).size(), 2U);
}

TEST(SecurityConfig, DestinationRuleTlsModesPerPort) {
  auto t = load(std::string(kPods) + R"(---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bill, namespace: demo}
spec:
  host: bill
  trafficPolicy:
    tls: {mode: DISABLE}
    portLevelSettings:
    - port: {number: 8443}
      tls: {mode: ISTIO_MUTUAL}
    - port: {number: 9443}
      tls: {mode: SIMPLE, sni: x}
)");
  ASSERT_TRUE(t && t->security);
  EXPECT_FALSE(t->security->outbound("bill.demo", 80, ip("10.0.1.1")).tls);
  EXPECT_TRUE(t->security->outbound("bill.demo", 8443, ip("10.0.1.2")).tls);
  EXPECT_FALSE(t->security->outbound("bill.demo", 9443, ip("10.0.1.1")).tls);
  const std::string f = findings(*t);
  EXPECT_NE(f.find("tls.mode SIMPLE is not applied yet"), std::string::npos) << f;
  EXPECT_NE(f.find("only tls.mode is applied"), std::string::npos) << f;
}

}  // namespace
}  // namespace remora::config
