// mTLS between two sidecars (docs/TLS.md): the front pod and the bill pod each run remora-init's
// rules and their own remora-proxy as uid 1337, with certificates the test makes with the
// openssl CLI from a test CA (EC P-256). A third pod without a proxy plays the plaintext client.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tls_fixture.h"

namespace remora::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* kBillIp = "10.244.1.168";
constexpr const char* kLegacyIp = "10.244.0.20";
constexpr const char* kReply = "this is bill-service-v1";
constexpr const char* kVipUrl = "http://10.1.122.241:9999/";
constexpr const char* kDirectUrl = "http://10.244.1.168:80/";

const std::string kWorld = std::string(kFrontPod) + R"(apiVersion: v1
kind: Pod
metadata:
  name: bill-service-v1
  namespace: istio-demo
  labels: {app: bill-service, security.istio.io/tlsMode: istio}
spec:
  serviceAccountName: bill
  containers: [{name: app, image: x, ports: [{name: http, containerPort: 80}]}]
status: {podIP: 10.244.1.168}
---
apiVersion: v1
kind: Service
metadata: {name: bill-service, namespace: istio-demo}
spec:
  clusterIP: 10.1.122.241
  selector: {app: bill-service}
  ports: [{name: tcp-bill, port: 9999, targetPort: 80}]
)";

class TlsE2e : public MeshTlsTest {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "e2e tests need root (network namespaces, iptables)";
    setUpMesh();
    front_ = *world_->addPod("front", kFrontIp);
    bill_ = *world_->addPod("bill", kBillIp);
    legacy_ = *world_->addPod("legacy", kLegacyIp);
    makeCa(front_);
    issue("front", kFrontId);
    issue("bill", kBillId);
    for (const Pod* pod : {&front_, &bill_}) installInit(*pod);
    app_ = world_->serveProbe(bill_, "0.0.0.0:80", kReply, true);
  }

  void TearDown() override {
    front_proxy_.reset();
    bill_proxy_.reset();
    app_.reset();
    tearDownMesh();
  }

  void startBoth(const std::string& config) {
    writeConfig(config);
    bill_proxy_ = startProxy(bill_, "bill");
    front_proxy_ = startProxy(front_, "front");
  }

  Pod front_, bill_, legacy_;
  std::unique_ptr<Process> app_, front_proxy_, bill_proxy_;
};
TEST_F(TlsE2e, StrictServesMutualTlsRefusesPlaintextAndHidesThePayload) {
  startBoth(std::string(kWorld) + peerAuthentication("STRICT"));
  // Capture on the bill pod's veth while the front pod's request crosses it.
  const std::string pcap = dir_ + "/veth.pcap";
  auto dump = world_->spawn(
      bill_, {"tcpdump", "-i", "eth0", "--immediate-mode", "-U", "-w", pcap, "tcp", "port", "80"});
  ASSERT_TRUE(waitFor([&] { return fs::exists(pcap); }, 3000));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(curl(front_, kVipUrl), std::string(kReply) + "\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  dump->stop(SIGINT, 3000);
  const std::string wire = readWholeFile(pcap);
  EXPECT_GT(wire.size(), 1000U) << "the capture saw no traffic";
  EXPECT_EQ(wire.find(kReply), std::string::npos) << "the reply crossed the veth in plaintext";
  EXPECT_EQ(wire.find("GET / HTTP"), std::string::npos);

  // A plaintext client, straight to the pod: refused.
  EXPECT_EQ(curl(legacy_, kDirectUrl), "FAILED");
  const std::string m = metrics(bill_);
  EXPECT_NE(m.find("remora_inbound_connections_total{source_principal=\"cluster.local/ns/"
                   "istio-demo/sa/front\",connection_security_policy=\"mutual_tls\"} 1"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("remora_tls_handshake_failures_total{reason=\"plaintext_refused\"} 1"),
            std::string::npos)
      << m;
  EXPECT_NE(metrics(front_).find("remora_tls_originated_total 1"), std::string::npos);
}

TEST_F(TlsE2e, PermissiveServesBothTlsAndPlaintext) {
  startBoth(std::string(kWorld) + peerAuthentication("PERMISSIVE"));
  EXPECT_EQ(curl(front_, kVipUrl), std::string(kReply) + "\n");
  EXPECT_EQ(curl(legacy_, kDirectUrl), std::string(kReply) + "\n");
  const std::string m = metrics(bill_);
  EXPECT_NE(m.find("remora_tls_permissive_total{detected=\"tls\"} 1"), std::string::npos) << m;
  EXPECT_NE(m.find("remora_tls_permissive_total{detected=\"plaintext\"} 1"), std::string::npos)
      << m;
  EXPECT_NE(m.find("source_principal=\"unknown\",connection_security_policy=\"none\"} 1"),
            std::string::npos)
      << m;
}

// Only the front's principal, only port 80, into the bill pod.
constexpr const char* kAllowFront = R"(---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-front, namespace: istio-demo}
spec:
  selector: {matchLabels: {app: bill-service}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/istio-demo/sa/front"]}}]
    to: [{operation: {ports: ["80"]}}]
)";

TEST_F(TlsE2e, AuthorizationAllowsAPrincipalDeniesANamespaceAndAPort) {
  const std::string allow_front = kAllowFront;
  startBoth(std::string(kWorld) + peerAuthentication("PERMISSIVE") + allow_front);
  EXPECT_EQ(curl(front_, kVipUrl), std::string(kReply) + "\n");
  EXPECT_EQ(curl(legacy_, kDirectUrl), "FAILED");  // no principal: no ALLOW rule matches
  std::string m = metrics(bill_);
  EXPECT_NE(m.find("remora_authz_policy_total{policy=\"istio-demo/allow-front\",result=\"allow\"} "
                   "1"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("remora_authz_decisions_total{decision=\"deny\"} 1"), std::string::npos) << m;

  // Deny the client's namespace: DENY comes before the ALLOW that still matches.
  const std::string deny_ns = R"(---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-demo, namespace: istio-demo}
spec:
  action: DENY
  rules:
  - from: [{source: {namespaces: ["istio-demo"]}}]
)";
  writeConfig(std::string(kWorld) + peerAuthentication("PERMISSIVE") + allow_front + deny_ns);
  ASSERT_TRUE(waitFor([&] { return curl(front_, kVipUrl) == "FAILED"; }, 5000));
  m = metrics(bill_);
  EXPECT_NE(m.find("remora_authz_policy_total{policy=\"istio-demo/deny-demo\",result=\"deny\"}"),
            std::string::npos)
      << m;

  // Only port 8080 allowed: port 80 is refused even to the right principal.
  std::string port_only = allow_front;
  port_only.replace(port_only.find("[\"80\"]"), 6, "[\"8080\"]");
  writeConfig(std::string(kWorld) + peerAuthentication("PERMISSIVE") + port_only);
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  ASSERT_TRUE(waitFor([&] {
    return curl(bill_, "http://127.0.0.1:15000/config_dump").find("deny-demo") == std::string::npos;
  }));
  EXPECT_EQ(curl(front_, kVipUrl), "FAILED");
}

// An HTTP server on ports 8080 and 8081 that prints "accept <port>" for every connection it
// accepts: a denied client must not even open a connection to the app.
constexpr const char* kCountingServer = R"(def serve(port):
    ls = listener(port)
    while True:
        s, _ = ls.accept()
        print('accept %d' % port, flush=True)
        try:
            read_head(s)
            answer(s, 'ok\n')
        except OSError:
            pass
        s.close()
for port in (8080, 8081):
    threading.Thread(target=serve, args=(port,), daemon=True).start()
print('ready', flush=True)
threading.Event().wait()
)";

TEST_F(TlsE2e, DeniedClientsNeverReachTheAppAndTcpMetricsCarryThePrincipal) {
  std::ofstream(dir_ + "/counting.py") << kPythonPrelude << kCountingServer;
  auto app = world_->spawn(bill_, {"python3", dir_ + "/counting.py"});
  ASSERT_TRUE(app->waitForLine("ready", 10000)) << app->output();
  std::string allow = kAllowFront;
  allow.replace(allow.find("[\"80\"]"), 6, "[\"8081\"]");
  startBoth(std::string(kWorld) + peerAuthentication("PERMISSIVE") + allow);
  // Allowed (mTLS, the right principal and port): the app sees one connection.
  EXPECT_EQ(curl(front_, "http://10.244.1.168:8081/"), "ok\n");
  // Denied after the handshake (port 8080 is not allowed), and denied in plaintext (no
  // principal): the app never accepts a connection on 8080.
  EXPECT_EQ(curl(front_, "http://10.244.1.168:8080/"), "FAILED");
  EXPECT_EQ(curl(legacy_, "http://10.244.1.168:8080/"), "FAILED");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  app->drain();
  EXPECT_EQ(countOf(app->output(), "accept 8081"), 1U) << app->output();
  EXPECT_EQ(countOf(app->output(), "accept 8080"), 0U)
      << "a denied client opened a connection to the app: " << app->output();
  const std::string m = metrics(bill_);
  EXPECT_NE(m.find("remora_authz_decisions_total{decision=\"deny\"} 2"), std::string::npos) << m;
  // The inbound TCP families carry the peer's identity.
  EXPECT_NE(m.find("remora_tcp_connections_opened_total{destination_service="
                   "\"InboundPassthroughCluster\",destination_subset=\"\",destination_endpoint="
                   "\"10.244.1.168:8081\",source_principal=\"cluster.local/ns/istio-demo/sa/"
                   "front\"} 1"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("remora_tcp_received_bytes_total{destination_service="
                   "\"InboundPassthroughCluster\",destination_subset=\"\",destination_endpoint="
                   "\"10.244.1.168:8081\",source_principal=\"cluster.local/ns/istio-demo/sa/"
                   "front\"} "),
            std::string::npos)
      << m;
}

TEST_F(TlsE2e, RotationUnderLoadFailsNoConnection) {
  startBoth(std::string(kWorld) + peerAuthentication("STRICT"));
  constexpr int kRequests = 80;
  auto load = world_->spawn(
      front_, {"bash", "-c",
               fmt::format("for i in $(seq {}); do curl -sS -m 3 {} || echo FAILED; done; "
                           "echo LOAD-DONE",
                           kRequests, kVipUrl)});
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    issue("bill", kBillId);
    issue("front", kFrontId);
  }
  ASSERT_TRUE(load->waitForLine("LOAD-DONE", 60000)) << load->output();
  const std::string out = load->output();
  EXPECT_EQ(countOf(out, kReply), static_cast<size_t>(kRequests)) << out;
  EXPECT_EQ(countOf(out, "FAILED"), 0U) << out;
  // Both proxies swapped their certificates at least once while the load ran.
  for (const Pod* pod : {&bill_, &front_}) {
    const std::string m = metrics(*pod);
    const std::string key = "remora_tls_credential_events_total{event=\"rotation\"} ";
    const size_t at = m.find(key);
    ASSERT_NE(at, std::string::npos) << m;
    EXPECT_GE(std::stoi(m.substr(at + key.size())), 1) << m;
  }
}

TEST_F(TlsE2e, ExpiredCertificateIsAnErrorAndAMetric) {
  issue("front", kFrontId, 0);  // notAfter = now: expired once read
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  startBoth(std::string(kWorld) + peerAuthentication("STRICT"));
  EXPECT_EQ(curl(front_, kVipUrl), "FAILED");
  const std::string m = metrics(front_);
  EXPECT_NE(m.find("remora_tls_credential_events_total{event=\"own_cert_expired\"} 1"),
            std::string::npos)
      << m;
  front_proxy_->drain();
  EXPECT_NE(front_proxy_->output().find("expired"), std::string::npos) << front_proxy_->output();
}

}  // namespace
}  // namespace remora::test
