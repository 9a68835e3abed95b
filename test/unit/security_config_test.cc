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

// The pods, then a DestinationRule bill/demo whose spec is `spec` (indented by two).
std::string destinationRule(const std::string& spec) {
  return std::string(kPods) + R"(---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bill, namespace: demo}
spec:)" + spec;
}

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
  // Unknown keys come from the field table, as for every other kind, with a suggestion.
  EXPECT_NE(f.find("did you mean 'action'"), std::string::npos) << f;
  EXPECT_EQ(t->security->policiesFor(ip("10.0.1.1")).size(), 3U);
  EXPECT_EQ(t->security->policiesFor(ip("10.0.1.2")).size(), 2U);
}

TEST(SecurityConfig, SecurityFieldsAreCheckedByTheFieldTableAndJwtIsReported) {
  auto t = load(std::string(kPods) + R"(---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: jwt, namespace: demo}
spec:
  rules:
  - from:
    - source:
        requestPrincipals: ["issuer/subject"]
        principal: ["typo"]
    to:
    - operation: {pathz: ["/x"]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: demo}
spec:
  mtls: {mode: STRICT, extra: 1}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: demo}
spec:
  jwtRules: [{issuer: x}]
)");
  ASSERT_TRUE(t && t->security);
  std::string jwt, typo, pathz, extra, request_auth;
  for (const auto& f : t->findings()) {
    if (f.text.find("spec.rules[0].from[0].source.requestPrincipals") != std::string::npos) {
      jwt = f.text;
      EXPECT_EQ(f.severity, Severity::kWarning);
    }
    if (f.text.find("source.principal,") != std::string::npos) typo = f.text;
    if (f.text.find("operation.pathz") != std::string::npos) pathz = f.text;
    if (f.text.find("spec.mtls.extra") != std::string::npos) extra = f.text;
    if (f.text.find("RequestAuthentication") != std::string::npos) {
      request_auth = f.text;
      EXPECT_EQ(f.severity, Severity::kWarning);
    }
  }
  EXPECT_NE(jwt.find("needs JWT authentication"), std::string::npos) << findings(*t);
  EXPECT_NE(typo.find("did you mean 'principals'"), std::string::npos) << findings(*t);
  EXPECT_NE(pathz.find("did you mean 'paths'"), std::string::npos) << findings(*t);
  EXPECT_NE(extra.find("is not a field Remora knows"), std::string::npos) << findings(*t);
  EXPECT_NE(request_auth.find("not applied"), std::string::npos) << findings(*t);
  // Document, field and line, as for every other kind.
  EXPECT_NE(jwt.find("document "), std::string::npos) << jwt;
  EXPECT_NE(jwt.find(", line "), std::string::npos) << jwt;
}

// A typo inside a rule (`principal` for `principals`) must never widen access: Kubernetes prunes
// such a key, which turns `from: [{source: {principal: [x]}}]` into "any source". Remora reports
// the key and the rule, and the ALLOW rule then matches nobody; a DENY rule keeps denying on
// its other fields.
TEST(SecurityConfig, ATypoInARuleNeverWidensAccess) {
  auto t = load(std::string(kPods) + R"(---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-typo, namespace: demo}
spec:
  selector: {matchLabels: {app: bill}}
  action: ALLOW
  rules:
  - from:
    - source: {principal: ["cluster.local/ns/demo/sa/sleep"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-typo, namespace: demo}
spec:
  selector: {matchLabels: {app: legacy}}
  action: DENY
  rules:
  - to:
    - operation: {ports: ["80"], methodz: ["GET"]}
)");
  ASSERT_TRUE(t && t->security);
  security::ConnectionAttributes a;
  a.source_ip = a.remote_ip = ip("10.0.0.5");
  a.destination_port = 80;
  a.principal = "cluster.local/ns/other/sa/curl";
  a.source_namespace = "other";
  a.destination_ip = ip("10.0.1.1");
  EXPECT_FALSE(security::evaluate(t->security->policiesFor(a.destination_ip), a).allowed)
      << "an ALLOW rule with a typo let an unlisted principal in";
  a.destination_ip = ip("10.0.1.2");
  EXPECT_FALSE(security::evaluate(t->security->policiesFor(a.destination_ip), a).allowed)
      << "a DENY rule with a typo stopped denying";
  a.destination_port = 81;
  EXPECT_TRUE(security::evaluate(t->security->policiesFor(a.destination_ip), a).allowed);
  const std::string f = findings(*t);
  EXPECT_NE(f.find("did you mean 'principals'"), std::string::npos) << f;
  EXPECT_NE(f.find("an ALLOW rule with it never matches"), std::string::npos) << f;
}

TEST(SecurityConfig, DestinationRuleTlsModesPerPort) {
  auto t = load(destinationRule(R"(
  host: bill
  trafficPolicy:
    tls: {mode: DISABLE}
    portLevelSettings:
    - port: {number: 8443}
      tls: {mode: ISTIO_MUTUAL}
    - port: {number: 9443}
      tls: {mode: SIMPLE, sni: x}
)"));
  ASSERT_TRUE(t && t->security);
  EXPECT_FALSE(t->security->outbound("bill.demo", 80, ip("10.0.1.1")).tls);
  EXPECT_TRUE(t->security->outbound("bill.demo", 8443, ip("10.0.1.2")).tls);
  auto simple = t->security->outbound("bill.demo", 9443, ip("10.0.1.1"));
  EXPECT_TRUE(simple.tls);
  EXPECT_EQ(simple.mode, security::TlsMode::kSimple);
  ASSERT_NE(simple.settings, nullptr);
  EXPECT_EQ(simple.settings->sni, "x");
  EXPECT_EQ(findings(*t).find("spec.trafficPolicy"), std::string::npos) << findings(*t);
}

TEST(SecurityConfig, DestinationRuleSimpleAndMutualSettings) {
  auto t = load(destinationRule(R"(
  host: bill.demo.svc.cluster.local
  trafficPolicy:
    tls:
      mode: MUTUAL
      clientCertificate: /etc/certs/client.pem
      privateKey: /etc/certs/client.key
      caCertificates: /etc/certs/ca.pem
      sni: bill.example.com
      subjectAltNames: [bill.example.com, spiffe://x/y]
      credentialName: bill-secret
      caCrl: /etc/certs/crl.pem
    portLevelSettings:
    - port: {number: 8443}
      tls:
        mode: SIMPLE
        insecureSkipVerify: true
        clientCertificate: /etc/certs/client.pem
    - port: {number: 8444}
      tls:
        mode: ISTIO_MUTUAL
        sni: ignored.example.com
)"));
  ASSERT_TRUE(t && t->security);
  auto mutual = t->security->outbound("bill.demo", 80, ip("10.0.1.2"));
  ASSERT_TRUE(mutual.tls);
  ASSERT_NE(mutual.settings, nullptr);
  EXPECT_EQ(mutual.mode, security::TlsMode::kMutual);
  EXPECT_EQ(mutual.settings->client_certificate, "/etc/certs/client.pem");
  EXPECT_EQ(mutual.settings->private_key, "/etc/certs/client.key");
  EXPECT_EQ(mutual.settings->ca_certificates, "/etc/certs/ca.pem");
  EXPECT_EQ(mutual.settings->sni, "bill.example.com");
  EXPECT_EQ(mutual.settings->subject_alt_names,
            (std::vector<std::string>{"bill.example.com", "spiffe://x/y"}));
  EXPECT_FALSE(mutual.settings->insecure_skip_verify);
  auto simple = t->security->outbound("bill.demo", 8443, ip("10.0.1.2"));
  ASSERT_NE(simple.settings, nullptr);
  EXPECT_EQ(simple.mode, security::TlsMode::kSimple);
  EXPECT_TRUE(simple.settings->insecure_skip_verify);
  EXPECT_EQ(t->security->outbound("bill.demo", 8444, ip("10.0.1.2")).mode,
            security::TlsMode::kIstioMutual);
  const std::string f = findings(*t);
  // Each finding names the field: credentialName needs a secret store, caCrl is not checked,
  // SIMPLE presents no client certificate, ISTIO_MUTUAL uses none of the file fields.
  EXPECT_NE(f.find("spec.trafficPolicy.tls.credentialName"), std::string::npos) << f;
  EXPECT_NE(f.find("no Kubernetes secret store"), std::string::npos) << f;
  EXPECT_NE(f.find("spec.trafficPolicy.tls.caCrl"), std::string::npos) << f;
  EXPECT_NE(f.find("not presented in mode SIMPLE"), std::string::npos) << f;
  EXPECT_NE(f.find("portLevelSettings[1].tls.sni"), std::string::npos) << f;
  EXPECT_EQ(f.find("subjectAltNames"), std::string::npos) << f;
  EXPECT_EQ(f.find("tls.mode"), std::string::npos) << f;
}

TEST(SecurityConfig, DestinationRuleMutualWithoutFilesIsAnError) {
  // The object is refused (an error finding), as every object with an error is.
  auto t = load(destinationRule(R"(
  host: bill
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: bill-secret}
)"));
  ASSERT_TRUE(t);
  bool refused = false;
  for (const auto& f : t->findings()) {
    refused = refused ||
              (f.severity == Severity::kError &&
               f.text.find("MUTUAL needs clientCertificate and privateKey") != std::string::npos);
  }
  EXPECT_TRUE(refused) << findings(*t);
  EXPECT_TRUE(t->security == nullptr || t->security->destination_tls.empty());
}

}  // namespace
}  // namespace remora::config
