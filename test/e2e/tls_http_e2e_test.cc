// L7 HTTP over mTLS between sidecars (docs/TLS.md, "HTTP ports"): the front pod's proxy routes
// each request of ONE client keep-alive connection on its own and originates TLS toward the bill
// pods; each bill pod's proxy terminates it (STRICT) and applies AuthorizationPolicy per request.
// Three pods (front, bill v1, bill v2), each with remora-init and its own remora-proxy;
// certificates from the openssl CLI (tls_fixture.h).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tls_fixture.h"

namespace remora::test {
namespace {

constexpr const char* kV1Reply = "this is bill-service-v1";
constexpr const char* kV2Reply = "hello, this is bill-service-v2";
constexpr const char* kPython = "/usr/bin/python3";

const std::string kWorld = std::string(kFrontPod) + R"(apiVersion: v1
kind: Pod
metadata:
  name: bill-service-v1
  namespace: istio-demo
  labels: {app: bill-service, version: v1, security.istio.io/tlsMode: istio}
spec:
  serviceAccountName: bill
  containers: [{name: app, image: x, ports: [{name: http, containerPort: 80}]}]
status: {podIP: 10.244.1.168}
---
apiVersion: v1
kind: Pod
metadata:
  name: bill-service-v2
  namespace: istio-demo
  labels: {app: bill-service, version: v2, security.istio.io/tlsMode: istio}
spec:
  serviceAccountName: bill
  containers: [{name: app, image: x, ports: [{name: http, containerPort: 80}]}]
status: {podIP: 10.244.2.74}
---
apiVersion: v1
kind: Service
metadata: {name: bill-service, namespace: istio-demo}
spec:
  clusterIP: 10.1.122.241
  selector: {app: bill-service}
  ports: [{name: http, port: 9999, targetPort: 80}]
)";

constexpr const char* kSplit9010 = R"(---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bill-service, namespace: istio-demo}
spec:
  host: bill-service
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bill-service, namespace: istio-demo}
spec:
  hosts: [bill-service]
  http:
  - route:
    - {destination: {host: bill-service, subset: v1}, weight: 90}
    - {destination: {host: bill-service, subset: v2}, weight: 10}
)";

// name port: answers every request with its name, and the path it got in x-seen-path.
constexpr const char* kBackend = R"PY(
import sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
name, port = sys.argv[1], int(sys.argv[2])
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        n = int(self.headers.get("Content-Length", "0"))
        if n:
            self.rfile.read(n)
        b = (name + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.send_header("x-seen-path", self.path)
        self.end_headers()
        self.wfile.write(b)
    do_POST = do_GET
ThreadingHTTPServer.daemon_threads = True
srv = ThreadingHTTPServer(("0.0.0.0", port), H)
print("ready", flush=True)
srv.serve_forever()
)PY";

// argv[1]: "METHOD PATH" requests separated by commas, all on ONE keep-alive connection; a JSON
// line each with the status, the body, the path the app saw and the client's local port (the
// connection).
constexpr const char* kClient = R"PY(
import sys, json, http.client
c = http.client.HTTPConnection("10.1.122.241", 9999, timeout=10)
for item in sys.argv[1].split(","):
    method, path = item.split(" ")
    c.request(method, path, body="x" if method == "POST" else None)
    r = c.getresponse()
    body = r.read().decode().strip()
    print(json.dumps({"status": r.status, "body": body, "path": r.getheader("x-seen-path"),
                      "port": c.sock.getsockname()[1]}), flush=True)
)PY";

class TlsHttpE2e : public MeshTlsTest {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "e2e tests need root (network namespaces, iptables)";
    if (access(kPython, X_OK) != 0) GTEST_SKIP() << kPython << " is missing";
    setUpMesh();
    front_ = *world_->addPod("front", kFrontIp);
    v1_ = *world_->addPod("bill-v1", kBillV1);
    v2_ = *world_->addPod("bill-v2", kBillV2);
    legacy_ = *world_->addPod("legacy", "10.244.0.20");  // no proxy: a plaintext client
    makeCa(front_);
    issue("front", kFrontId);
    issue("bill", kBillId);
    for (const Pod* pod : {&front_, &v1_, &v2_}) installInit(*pod);
    std::ofstream(dir_ + "/backend.py") << kBackend;
    std::ofstream(dir_ + "/client.py") << kClient;
    backends_.push_back(world_->spawn(v1_, {kPython, dir_ + "/backend.py", kV1Reply, "80"}));
    backends_.push_back(world_->spawn(v2_, {kPython, dir_ + "/backend.py", kV2Reply, "80"}));
    for (auto& b : backends_) ASSERT_TRUE(b->waitForLine("ready", 10000)) << b->output();
  }

  void TearDown() override {
    proxies_.clear();
    backends_.clear();
    tearDownMesh();
  }

  void startAll(const std::string& config) {
    writeConfig(config);
    proxies_.push_back(startProxy(v1_, "bill"));
    proxies_.push_back(startProxy(v2_, "bill"));
    proxies_.push_back(startProxy(front_, "front"));
  }

  std::string client(const std::string& requests) {
    auto out = world_->exec(front_, {kPython, dir_ + "/client.py", requests});
    if (!out) return "FAILED " + out.error().message;
    return out->out + out->err;
  }

  // The sum of the `series` lines (remora_requests_total unless given) of a pod that carry `label`.
  long requestsWith(const Pod& pod, const std::string& label,
                    const std::string& series = "remora_requests_total") {
    std::istringstream lines(metrics(pod));
    long sum = 0;
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind(series + "{", 0) != 0) continue;
      if (line.find(label) == std::string::npos) continue;
      sum += std::stol(line.substr(line.rfind(' ') + 1));
    }
    return sum;
  }

  // The value of one metric line (exact labels) in a pod's /stats/prometheus, or -1.
  long metric(const Pod& pod, const std::string& key) {
    const std::string m = fmt::format("\n{}", metrics(pod));
    const size_t at = m.find(fmt::format("\n{} ", key));
    return at == std::string::npos ? -1 : std::stol(m.substr(at + key.size() + 2));
  }

  Pod front_, v1_, v2_, legacy_;
  std::vector<std::unique_ptr<Process>> backends_;
  std::vector<std::unique_ptr<Process>> proxies_;
};

// The distinct client ports of the JSON lines: 1 means every request used one connection.
size_t connections(const std::string& out) {
  std::set<std::string> ports;
  std::regex re("\"port\": (\\d+)");
  for (std::sregex_iterator it(out.begin(), out.end(), re), end; it != end; ++it) {
    ports.insert((*it)[1]);
  }
  return ports.size();
}

TEST_F(TlsHttpE2e, NinetyTenPerRequestOverOneConnectionWithStrictMtls) {
  startAll(std::string(kWorld) + peerAuthentication("STRICT") + kSplit9010);
  const std::string pcap = dir_ + "/veth.pcap";
  auto dump = world_->spawn(
      v1_, {"tcpdump", "-i", "eth0", "--immediate-mode", "-U", "-w", pcap, "tcp", "port", "80"});
  ASSERT_TRUE(waitFor([&] { return std::filesystem::exists(pcap); }, 3000));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::string requests;
  for (int i = 0; i < 100; ++i) requests += std::string(i ? "," : "") + "GET /hello";
  const std::string out = client(requests);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  dump->stop(SIGINT, 3000);
  EXPECT_EQ(countOf(out, "\"status\": 200"), 100U) << out;
  EXPECT_EQ(countOf(out, std::string("\"body\": \"") + kV1Reply + "\""), 90U) << out;
  EXPECT_EQ(countOf(out, std::string("\"body\": \"") + kV2Reply + "\""), 10U) << out;
  EXPECT_EQ(connections(out), 1U) << out;

  // The bytes on the v1 pod's veth are TLS: neither the request line nor the reply shows.
  const std::string wire = readWholeFile(pcap);
  EXPECT_GT(wire.size(), 1000U) << "the capture saw no traffic";
  EXPECT_EQ(wire.find(kV1Reply), std::string::npos) << "the reply crossed the veth in plaintext";
  EXPECT_EQ(wire.find("GET /hello"), std::string::npos);

  // The pooled upstream connections kept their TLS streams: one handshake per bill pod, and the
  // bill proxies saw the front's identity.
  EXPECT_EQ(metric(front_, "remora_tls_originated_total"), 2) << metrics(front_);
  for (const Pod* pod : {&v1_, &v2_}) {
    EXPECT_EQ(metric(*pod, "remora_tls_handshakes_total{side=\"server\"}"), 1) << metrics(*pod);
    EXPECT_EQ(metric(*pod,
                     "remora_inbound_connections_total{source_principal=\"cluster.local/ns/"
                     "istio-demo/sa/front\",connection_security_policy=\"mutual_tls\"}"),
              1)
        << metrics(*pod);
  }
  // Each bill proxy counts its inbound requests under the front's identity.
  const std::string front_principal = "source_principal=\"cluster.local/ns/istio-demo/sa/front\"";
  EXPECT_EQ(requestsWith(v1_, front_principal), 90) << metrics(v1_);
  EXPECT_EQ(requestsWith(v2_, front_principal), 10) << metrics(v2_);
  EXPECT_EQ(requestsWith(v1_, front_principal, "remora_request_duration_milliseconds_count"), 90)
      << metrics(v1_);
  EXPECT_EQ(metric(front_,
                   "remora_requests_total{destination_service=\"bill-service.istio-demo\","
                   "destination_subset=\"v1\",response_code=\"200\",response_flags=\"-\"}"),
            90)
      << metrics(front_);
}

TEST_F(TlsHttpE2e, AllowPathsAndMethodsPerRequestOnOneConnection) {
  const std::string allow = R"(---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-public, namespace: istio-demo}
spec:
  selector: {matchLabels: {app: bill-service}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/istio-demo/sa/front"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/public/*"]}}]
)";
  startAll(std::string(kWorld) + peerAuthentication("STRICT") + allow);
  // The fifth is matched, and reaches the app, normalized: /public/x-y?q=1.
  const std::string out = client(
      "GET /public/x,POST /public/x,GET /private,GET /public/y?q=1,"
      "GET /public/a/./b/../../x%2Dy?q=1,GET /public/../private,DELETE /public/x");
  std::vector<int> statuses;
  std::regex re("\"status\": (\\d+)");
  for (std::sregex_iterator it(out.begin(), out.end(), re), end; it != end; ++it) {
    statuses.push_back(std::stoi((*it)[1]));
  }
  EXPECT_EQ(statuses, (std::vector<int>{200, 403, 403, 200, 200, 403, 403})) << out;
  EXPECT_EQ(countOf(out, "RBAC: access denied"), 4U) << out;
  EXPECT_EQ(countOf(out, "\"path\": \"/public/x-y?q=1\""), 1U) << out;
  EXPECT_EQ(connections(out), 1U) << out;  // a 403 keeps the connection usable
  long allowed = 0;
  long denied = 0;
  for (const Pod* pod : {&v1_, &v2_}) {
    allowed += std::max(0L, metric(*pod,
                                   "remora_authz_policy_total{policy=\"istio-demo/allow-public\","
                                   "result=\"allow\"}"));
    denied += std::max(0L, metric(*pod, "remora_authz_decisions_total{decision=\"deny\"}"));
  }
  EXPECT_EQ(allowed, 3);
  EXPECT_EQ(denied, 4);
}

TEST_F(TlsHttpE2e, PermissiveServesTlsAndPlaintextOnTheL7PathStrictRefusesPlaintext) {
  startAll(std::string(kWorld) + peerAuthentication("PERMISSIVE"));
  // Per request across v1 and v2 (the port's own weights): one TLS request reaches each.
  const std::string out = client("GET /a,GET /b");
  EXPECT_EQ(countOf(out, "\"status\": 200"), 2U) << out;
  auto plain = world_->exec(legacy_, {"curl", "-sS", "-m", "3", "http://10.244.1.168:80/x"});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->out, std::string(kV1Reply) + "\n") << plain->err;
  EXPECT_EQ(metric(v1_, "remora_tls_permissive_total{detected=\"tls\"}"), 1) << metrics(v1_);
  EXPECT_EQ(metric(v1_, "remora_tls_permissive_total{detected=\"plaintext\"}"), 1) << metrics(v1_);
  EXPECT_EQ(metric(v1_,
                   "remora_inbound_connections_total{source_principal=\"unknown\","
                   "connection_security_policy=\"none\"}"),
            1)
      << metrics(v1_);
  EXPECT_EQ(requestsWith(v1_, "source_principal=\"unknown\""), 1) << metrics(v1_);
  EXPECT_EQ(requestsWith(v1_, "source_principal=\"cluster.local/ns/istio-demo/sa/front\""), 1)
      << metrics(v1_);
  // TLS of the client's own (curl's https, ALPN h2 / http/1.1) on this HTTP port: Istio's
  // PERMISSIVE HTTP chains match only mesh mTLS and plaintext, so the connection is closed.
  auto foreign =
      world_->exec(legacy_, {"curl", "-sS", "-k", "-m", "3", "https://10.244.1.168:80/x"});
  ASSERT_TRUE(foreign.ok());
  EXPECT_NE(foreign->exit_code, 0) << foreign->out;
  EXPECT_EQ(metric(v1_, "remora_tls_permissive_total{detected=\"tls_refused\"}"), 1)
      << metrics(v1_);
  EXPECT_EQ(metric(v1_, "remora_tls_permissive_total{detected=\"tls\"}"), 1) << metrics(v1_);

  // STRICT (after a reload): the plaintext client is refused, the sidecar still served.
  writeConfig(std::string(kWorld) + peerAuthentication("STRICT"));
  ASSERT_TRUE(waitFor([&] {
    auto r = world_->exec(legacy_, {"curl", "-sS", "-m", "3", "http://10.244.1.168:80/x"});
    return r.ok() && r->exit_code != 0;
  }));
  EXPECT_GE(metric(v1_, "remora_tls_handshake_failures_total{reason=\"plaintext_refused\"}"), 1)
      << metrics(v1_);
  EXPECT_EQ(countOf(client("GET /c,GET /d"), "\"status\": 200"), 2U);
}

// The world with the Service's ports unnamed (no appProtocol): "auto", sniffed. 9999 → the HTTP
// backends, 7777 → an echo server on 7000, 7443 → 7443 (an app serving its own TLS, when a test
// starts one).
std::string autoWorld() {
  std::string w = kWorld;
  const std::string named = "ports: [{name: http, port: 9999, targetPort: 80}]";
  w.replace(w.find(named), named.size(),
            "ports: [{name: web, port: 9999, targetPort: 80}, {name: echo, port: 7777, "
            "targetPort: 7000}, {name: secure, port: 7443, targetPort: 7443}]");
  return w;
}

constexpr const char* kDenyAdmin = R"(---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: istio-demo}
spec:
  selector: {matchLabels: {app: bill-service}}
  action: DENY
  rules:
  - to: [{operation: {ports: ["80"], paths: ["/admin/*"]}}]
)";

// port: echoes what each connection sends.
constexpr const char* kEcho = R"PY(
import sys
port = int(sys.argv[1])
ls = listener(port)
print("ready", flush=True)
def serve(c):
    while True:
        d = c.recv(4096)
        if not d:
            break
        c.sendall(d)
    c.close()
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
)PY";

// A client-first, non-HTTP protocol to the echo Service: prints what came back.
constexpr const char* kRawClient = R"PY(
import socket
s = socket.create_connection(("10.1.122.241", 7777), timeout=10)
msg = b"\x01raw-bytes\n"
s.sendall(msg)
got = b""
while len(got) < len(msg):
    d = s.recv(4096)
    if not d:
        break
    got += d
print("echo ok" if got == msg else "echo wrong: %r" % got, flush=True)
)PY";

class TlsSniffE2e : public TlsHttpE2e {
 protected:
  void SetUp() override {
    TlsHttpE2e::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    std::ofstream(dir_ + "/echo.py") << kPythonPrelude << kEcho;
    std::ofstream(dir_ + "/raw.py") << kRawClient;
    for (const Pod* pod : {&v1_, &v2_}) {
      backends_.push_back(world_->spawn(*pod, {kPython, dir_ + "/echo.py", "7000"}));
      ASSERT_TRUE(backends_.back()->waitForLine("ready", 10000)) << backends_.back()->output();
    }
  }
  std::vector<int> statuses(const std::string& out) {
    std::vector<int> got;
    std::regex re("\"status\": (\\d+)");
    for (std::sregex_iterator it(out.begin(), out.end(), re), end; it != end; ++it) {
      got.push_back(std::stoi((*it)[1]));
    }
    return got;
  }
  // The sum over both bill pods of requestsWith(label).
  long billRequestsWith(const std::string& label) {
    return requestsWith(v1_, label) + requestsWith(v2_, label);
  }
  long billMetric(const std::string& key) {
    return std::max(0L, metric(v1_, key)) + std::max(0L, metric(v2_, key));
  }
  static constexpr const char* kFrontPrincipal =
      "source_principal=\"cluster.local/ns/istio-demo/sa/front\"";
};

// An unnamed port under PERMISSIVE mTLS, with per-request routes at the front (so the front's
// proxy sniffs, and its L7 path originates mTLS offering Istio's HTTP ALPN): the bill proxies
// terminate the mTLS, see HTTP by the ALPN and serve each request on the L7 path (metrics, a
// DENY on a path per request); a raw TCP client over mTLS is still relayed; a plaintext HTTP
// client without a sidecar still gets the L7 path.
TEST_F(TlsSniffE2e, UnnamedPortOverPermissiveMtlsGetsL7PerRequest) {
  startAll(autoWorld() + peerAuthentication("PERMISSIVE") + kSplit9010 + kDenyAdmin);
  const std::string out = client("GET /a,GET /admin/x,GET /b,GET /c");
  EXPECT_EQ(statuses(out), (std::vector<int>{200, 403, 200, 200})) << out;
  EXPECT_EQ(countOf(out, "RBAC: access denied"), 1U) << out;
  EXPECT_EQ(connections(out), 1U) << out;
  // Per request, under the front's identity, on whichever bill pod each went to.
  long served = 0;
  for (const Pod* pod : {&v1_, &v2_}) {
    std::istringstream lines(metrics(*pod));
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("remora_requests_total{", 0) == 0 &&
          line.find(kFrontPrincipal) != std::string::npos &&
          line.find("response_code=\"200\"") != std::string::npos) {
        served += std::stol(line.substr(line.rfind(' ') + 1));
      }
    }
  }
  EXPECT_EQ(served, 3) << metrics(v1_) << metrics(v2_);
  EXPECT_EQ(billMetric("remora_authz_decisions_total{decision=\"deny\"}"), 1);
  EXPECT_GE(billMetric("remora_tls_permissive_total{detected=\"tls\"}"), 1);
  EXPECT_GE(billMetric("remora_protocol_sniff_total{result=\"http\"}"), 1);

  // Raw TCP over mTLS: the front finds no HTTP and relays with Istio's TCP ALPN; the bill proxy
  // terminates the mTLS and relays it to the echo server.
  const long tcp_before = billMetric("remora_protocol_sniff_total{result=\"tcp\"}");
  const long tls_before = billMetric("remora_tls_permissive_total{detected=\"tls\"}");
  auto raw = world_->exec(front_, {kPython, dir_ + "/raw.py"});
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->out, "echo ok\n") << raw->err;
  EXPECT_EQ(billMetric("remora_protocol_sniff_total{result=\"tcp\"}"), tcp_before + 1);
  EXPECT_EQ(billMetric("remora_tls_permissive_total{detected=\"tls\"}"), tls_before + 1);

  // Plaintext HTTP from a pod without a sidecar: PERMISSIVE allows it, sniffed as before.
  auto plain = world_->exec(legacy_, {"curl", "-sS", "-m", "3", "http://10.244.1.168:80/x"});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->out, std::string(kV1Reply) + "\n") << plain->err;
  auto denied = world_->exec(legacy_, {"curl", "-sS", "-m", "3", "-o", "/dev/null", "-w",
                                       "%{http_code}", "http://10.244.1.168:80/admin/y"});
  ASSERT_TRUE(denied.ok());
  EXPECT_EQ(denied->out, "403") << denied->err;
  EXPECT_EQ(requestsWith(v1_, "source_principal=\"unknown\""), 2) << metrics(v1_);
}

// Without per-request routes the front still sniffs the unnamed port (mTLS may be originated)
// and relays it at L4, its mTLS offering Istio's HTTP ALPN for HTTP and "istio" for the rest, as
// an Istio client sidecar does: the bill proxies, PERMISSIVE, see an Istio ALPN, so they
// terminate the mTLS (the front's identity in every request's metrics) instead of passing it to
// the app as TLS that is not the mesh's, and serve each request on the L7 path. Before the front
// offered an ALPN here, the bill proxy passing ALPN-less TLS through broke this connection.
TEST_F(TlsSniffE2e, UnnamedPortWithoutRoutesStillGetsMtlsWithAnIstioAlpn) {
  startAll(autoWorld() + peerAuthentication("PERMISSIVE") + kDenyAdmin);
  const std::string out = client("GET /a,GET /admin/x,GET /b");
  EXPECT_EQ(statuses(out), (std::vector<int>{200, 403, 200})) << out;
  EXPECT_EQ(connections(out), 1U) << out;
  EXPECT_EQ(billRequestsWith(kFrontPrincipal), 3) << metrics(v1_) << metrics(v2_);
  EXPECT_EQ(billMetric("remora_protocol_sniff_total{result=\"http\"}"), 1);
  EXPECT_EQ(billMetric("remora_tls_permissive_total{detected=\"tls\"}"), 1);
  EXPECT_EQ(billMetric("remora_tls_permissive_total{detected=\"tls_passthrough\"}"), 0);
  // The raw TCP client: the front finds no HTTP and offers "istio"; relayed over mTLS.
  auto raw = world_->exec(front_, {kPython, dir_ + "/raw.py"});
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->out, "echo ok\n") << raw->err;
  EXPECT_EQ(billMetric("remora_protocol_sniff_total{result=\"tcp\"}"), 1);
  EXPECT_EQ(billMetric("remora_tls_permissive_total{detected=\"tls\"}"), 2);
  EXPECT_EQ(billMetric("remora_tls_permissive_total{detected=\"tls_passthrough\"}"), 0);

  // STRICT (after a reload): a plaintext client of the unnamed port is refused at its first
  // byte; the sidecar's mTLS requests are still served and authorized one by one. The refusal
  // has its access-log line (the sniffer closed it before any route), as the L4 path's has.
  writeConfig(autoWorld() + peerAuthentication("STRICT") + kDenyAdmin + R"(
---
apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
metadata: {name: proxy}
spec: {accessLog: true}
)");
  ASSERT_TRUE(waitFor([&] {
    auto r = world_->exec(legacy_, {"curl", "-sS", "-m", "3", "http://10.244.1.168:80/x"});
    return r.ok() && r->exit_code != 0;
  }));
  EXPECT_GE(metric(v1_, "remora_tls_handshake_failures_total{reason=\"plaintext_refused\"}"), 1)
      << metrics(v1_);
  EXPECT_TRUE(proxies_[0]->waitForLine("inbound downstream=10.244.0.20:", 5000))
      << proxies_[0]->output();
  EXPECT_NE(
      proxies_[0]->output().find("original_dst=10.244.1.168:80 service=InboundPassthroughCluster "
                                 "subset=- upstream=- outcome=tls_handshake_failed "
                                 "received_bytes="),
      std::string::npos)
      << proxies_[0]->output();
  const std::string strict = client("GET /admin/z,GET /d");
  EXPECT_EQ(statuses(strict), (std::vector<int>{403, 200})) << strict;
}

// A client outside the mesh speaking its own TLS (curl: ALPN h2 and http/1.1, no client
// certificate) to an app serving HTTPS itself (openssl s_server -www, a certificate for
// app.remora.test made by the test): under PERMISSIVE the bill proxy passes that TLS through
// untouched, on an unnamed port (the sniffer, 7443) and on a port of no Service (the L4 path,
// 8443): the app's certificate verifies for its name and its page comes back, counted
// detected="tls_passthrough" and in the remora_tcp_* series as source_principal="unknown". The
// sidecar's mTLS on the same pod is still terminated (its identity, the DENY per request).
// STRICT (after a reload) terminates every TLS, as Istio's STRICT chains do: the same client
// fails its handshake, having no mesh certificate.
TEST_F(TlsSniffE2e, PermissiveTlsWithoutAnIstioAlpnReachesTheAppsOwnTlsUntouched) {
  sign(dir_ + "/app", "app.remora.test", "DNS:app.remora.test");
  for (const char* port : {"7443", "8443"}) {
    backends_.push_back(world_->spawn(v1_, {"openssl", "s_server", "-accept", port, "-cert",
                                            dir_ + "/app.pem", "-key", dir_ + "/app.key", "-www"}));
    ASSERT_TRUE(backends_.back()->waitForLine("ACCEPT", 10000)) << backends_.back()->output();
  }
  startAll(autoWorld() + peerAuthentication("PERMISSIVE") + kDenyAdmin);
  auto https = [&](const std::string& port) {
    return world_->exec(legacy_, {"curl", "-sS", "-m", "5", "--cacert", dir_ + "/ca.pem",
                                  "--resolve", "app.remora.test:" + port + ":10.244.1.168",
                                  "https://app.remora.test:" + port + "/"});
  };
  for (const std::string port : {"7443", "8443"}) {
    auto r = https(port);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->exit_code, 0) << port << ": " << r->err << metrics(v1_);
    EXPECT_NE(r->out.find("s_server"), std::string::npos) << port << ": " << r->out;
  }
  EXPECT_EQ(metric(v1_, "remora_tls_permissive_total{detected=\"tls_passthrough\"}"), 2)
      << metrics(v1_);
  EXPECT_EQ(metric(v1_, "remora_tls_permissive_total{detected=\"tls\"}"), 0) << metrics(v1_);
  EXPECT_EQ(metric(v1_, "remora_tls_handshakes_total{side=\"server\"}"), 0) << metrics(v1_);
  EXPECT_EQ(billMetric("remora_protocol_sniff_total{result=\"tcp\"}"), 1);
  long received = 0;
  std::istringstream lines(metrics(v1_));
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("remora_tcp_received_bytes_total{", 0) == 0 &&
        line.find("source_principal=\"unknown\"") != std::string::npos) {
      received += std::stol(line.substr(line.rfind(' ') + 1));
    }
  }
  EXPECT_GT(received, 200) << metrics(v1_);  // at least the two ClientHellos

  // The sidecar's mTLS is still the mesh's: its identity, the DENY evaluated per request.
  const std::string out = client("GET /a,GET /admin/x");
  EXPECT_EQ(statuses(out), (std::vector<int>{200, 403})) << out;
  EXPECT_EQ(billRequestsWith(kFrontPrincipal), 2) << metrics(v1_) << metrics(v2_);
  EXPECT_EQ(billMetric("remora_tls_permissive_total{detected=\"tls\"}"), 1);

  // STRICT: any TLS is terminated as mTLS; the client without a mesh certificate fails.
  const long failed = metric(v1_, "remora_tls_handshake_failures_total{reason=\"handshake\"}");
  writeConfig(autoWorld() + peerAuthentication("STRICT") + kDenyAdmin);
  ASSERT_TRUE(waitFor([&] {
    auto r = https("8443");
    return r.ok() && r->exit_code != 0;
  }));
  auto sniffed = https("7443");
  ASSERT_TRUE(sniffed.ok());
  EXPECT_NE(sniffed->exit_code, 0) << sniffed->out;
  EXPECT_GE(metric(v1_, "remora_tls_handshake_failures_total{reason=\"handshake\"}"), failed + 2)
      << metrics(v1_);
}

// The bill pods accept plaintext only (DISABLE) while the DestinationRule asks for ISTIO_MUTUAL:
// the front's TLS handshake gets a plaintext 400 back and fails. Envoy flags that an upstream
// connection failure (UF), not a reset (UC).
TEST_F(TlsHttpE2e, AFailedUpstreamHandshakeIsFlaggedUF) {
  const std::string mutual = R"(---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bill-service, namespace: istio-demo}
spec:
  host: bill-service
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
)";
  startAll(std::string(kWorld) + peerAuthentication("DISABLE") + mutual);
  const std::string out = client("GET /a");
  EXPECT_EQ(countOf(out, "\"status\": 503"), 1U) << out;
  const std::string m = metrics(front_);
  EXPECT_NE(m.find("response_code=\"503\",response_flags=\"UF"), std::string::npos) << m;
  EXPECT_EQ(m.find("response_flags=\"UC"), std::string::npos) << m;
}

}  // namespace
}  // namespace remora::test
