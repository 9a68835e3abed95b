// TPROXY inbound end to end. In a world the test makes (a pod with the app and the proxy, a
// client pod): remora-init installs --inbound-interception-mode TPROXY (iptables and nftables
// modes), remora-proxy runs as uid 1337 with only CAP_NET_ADMIN and a transparent inbound
// listener, and the client connects to the app's port. The app must see the client's own
// address (REDIRECT mode, checked too, shows 127.0.0.6), the payload must come back, the
// connection must have gone through the proxy (with the proxy stopped it fails), and uninstall
// must leave no rule, no ip rule and no route.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "e2e_util.h"
#include "netns_world.h"

namespace remora::test {
namespace {

constexpr const char* kClientIp = "10.244.0.20";
constexpr const char* kClientIp6 = "fd00:244::20";
constexpr const char* kClient2Ip = "10.244.0.30";
constexpr const char* kClient2Ip6 = "fd00:244::30";
constexpr const char* kPython = "/usr/bin/python3";

// The app of the HTTP case: keep-alive HTTP/1.1 servers on each HOST:PORT given, answering
// every request with the peer it came from ("peer=IP:PORT", IPv6 bracketed).
constexpr const char* kPeerServer = R"PY(
import socket, sys, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        host, port = self.client_address[:2]
        peer = ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)
        body = ("peer=%s\n" % peer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
class V6(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()
for spec in sys.argv[1:]:
    host, port = spec.rsplit(":", 1)
    host = host.strip("[]")
    server = (V6 if ":" in host else ThreadingHTTPServer)((host, int(port)), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
)PY";

// N requests on ONE kept-alive connection to each HOST:PORT in turn, a short pause between
// them so two clients running at once interleave; a line "HOST:PORT STATUS BODY" per response.
constexpr const char* kKeepAliveClient = R"PY(
import http.client, sys, time
n = int(sys.argv[1])
for spec in sys.argv[2:]:
    host, port = spec.rsplit(":", 1)
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=5)
    for i in range(n):
        conn.request("GET", "/")
        r = conn.getresponse()
        print(spec, r.status, r.read().decode().strip(), flush=True)
        time.sleep(0.01)
    conn.close()
print("done", flush=True)
)PY";

// The front pod's app as the proxy's config sees it: port 8090 declared HTTP (http-*), port
// 8091 unnamed (sniffed inbound), on both of the pod's addresses.
constexpr const char* kAppConfig = R"(apiVersion: v1
kind: Pod
metadata:
  name: front
  namespace: tproxy
  labels:
    app: front
status:
  podIP: 10.244.0.10
  podIPs:
  - ip: 10.244.0.10
  - ip: fd00:244::10
---
apiVersion: v1
kind: Service
metadata:
  name: front
  namespace: tproxy
spec:
  clusterIP: 10.1.122.250
  selector:
    app: front
  ports:
  - name: http-app
    port: 8090
    targetPort: 8090
  - name: web
    port: 8091
    targetPort: 8091
)";

class TproxyE2eTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "needs root for network namespaces";
    world_ = std::make_unique<NetnsWorld>();
    front_ = *world_->addPod("front", kFrontIp, kFrontIp6);
    client_ = *world_->addPod("client", kClientIp, kClientIp6);
    // The app: says who its peer is and echoes what it got.
    app_ = world_->spawn(
        front_, {probePath(), "serve", "--listen", "0.0.0.0:8080", "--reply", "app", "--echo"});
    ASSERT_TRUE(app_ && app_->waitForLine("ready", 5000));
  }

  CommandOutput run(const Pod& pod, const std::vector<std::string>& argv) {
    auto out = world_->exec(pod, argv);
    EXPECT_TRUE(out.ok());
    return out ? *out : CommandOutput{};
  }

  void install(const std::string& inbound_mode, const std::string& ipv6 = "off") {
    auto out = run(front_, {binaryPath("remora-init"), "install", "--mode", GetParam(), "--ipv6",
                            ipv6, "--inbound-interception-mode", inbound_mode});
    ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
  }

  // remora-proxy as uid 1337 holding CAP_NET_ADMIN only (the TPROXY permission model).
  std::unique_ptr<Process> startProxy(const std::string& inbound_mode, bool with_cap = true,
                                      bool ipv6 = false, const std::string& config = {}) {
    std::vector<std::string> argv = {"setpriv", "--reuid=1337", "--regid=1337", "--clear-groups"};
    if (with_cap) {
      argv.insert(argv.end(), {"--inh-caps=-all,+net_admin", "--ambient-caps=-all,+net_admin",
                               "--bounding-set=-all,+net_admin"});
    } else {
      argv.insert(argv.end(), {"--inh-caps=-all", "--bounding-set=-all"});
    }
    argv.push_back(binaryPath("remora-proxy"));
    if (!ipv6) argv.emplace_back("--no-ipv6");  // else [::] listeners beside the 0.0.0.0 ones
    argv.insert(argv.end(),
                {"--inbound-listen", "0.0.0.0:15006", "--outbound-listen", "0.0.0.0:15001",
                 "--admin-listen", "127.0.0.1:15000", "--inbound-interception-mode", inbound_mode});
    if (!config.empty()) argv.insert(argv.end(), {"--config", config});
    // Through sh so stderr lands in the output the test reads too.
    std::string command = "exec";
    for (const auto& a : argv) command += " " + a;
    return world_->spawn(front_, {"sh", "-c", command + " 2>&1"});
  }

  std::string connect(const std::string& payload, const std::string& to = kFrontIp) {
    const std::string at = to.find(':') != std::string::npos ? "[" + to + "]" : to;
    auto out = world_->exec(
        client_, {probePath(), "connect", at + ":8080", "--timeout-ms", "1500", "--send", payload});
    if (!out || out->exit_code != 0) return "FAILED";
    return out->out;
  }

  // Everything of Remora's that could be left in the pod's netns, as text ("" when clean).
  std::string leftovers() {
    std::string found;
    for (const char* tool : {"iptables-save", "iptables-legacy-save"}) {
      auto out = world_->exec(front_, {tool});
      if (out && out->out.find("REMORA") != std::string::npos)
        found += tool + std::string(": ") + out->out;
    }
    for (const char* family : {"-4", "-6"}) {
      auto rules = run(front_, {"ip", family, "rule", "show"});
      if (rules.out.find("lookup 133") != std::string::npos) found += "ip rule: " + rules.out;
      auto routes = run(front_, {"ip", family, "route", "show", "table", "133"});
      if (!routes.out.empty()) found += "table 133: " + routes.out;
    }
    auto ip6 = world_->exec(front_, {"ip6tables-save"});
    if (ip6 && ip6->out.find("REMORA") != std::string::npos) found += "ip6tables-save: " + ip6->out;
    auto tables = run(front_, {"nft", "list", "tables"});
    if (tables.out.find("remora") != std::string::npos) found += "nft: " + tables.out;
    return found;
  }

  std::unique_ptr<NetnsWorld> world_;
  Pod front_, client_;
  std::unique_ptr<Process> app_;
};

TEST_P(TproxyE2eTest, AppSeesTheRealClientUnderTproxyAnd127006UnderRedirect) {
  install("TPROXY");
  auto rules = run(front_, {"ip", "-4", "rule", "show"});
  EXPECT_NE(rules.out.find("fwmark 0x539 lookup 133"), std::string::npos) << rules.out;
  auto route = run(front_, {"ip", "-4", "route", "show", "table", "133"});
  EXPECT_NE(route.out.find("local default dev lo"), std::string::npos) << route.out;
  // Idempotent: a second install changes nothing and leaves one ip rule.
  install("TPROXY");
  rules = run(front_, {"ip", "-4", "rule", "show"});
  EXPECT_EQ(rules.out.find("lookup 133"), rules.out.rfind("lookup 133")) << rules.out;
  auto check = run(front_, {binaryPath("remora-init"), "install", "--mode", GetParam(), "--ipv6",
                            "off", "--inbound-interception-mode", "TPROXY", "--dry-run"});
  EXPECT_NE(check.out.find("already installed"), std::string::npos) << check.out;

  // Without CAP_NET_ADMIN the proxy refuses the transparent listener and says why.
  auto refused = startProxy("TPROXY", /*with_cap=*/false);
  EXPECT_TRUE(refused->waitForLine("CAP_NET_ADMIN", 5000)) << refused->output();
  EXPECT_NE(refused->output().find("CAP_NET_ADMIN"), std::string::npos) << refused->output();

  {
    auto proxy = startProxy("TPROXY");
    ASSERT_TRUE(proxy->waitForLine("remora-proxy started", 10000)) << proxy->output();
    auto got = connect("ping-tproxy");
    EXPECT_NE(got.find(std::string("peer=") + kClientIp + ":"), std::string::npos) << got;
    EXPECT_NE(got.find("local=10.244.0.10:8080"), std::string::npos) << got;
    EXPECT_NE(got.find("echo=ping-tproxy"), std::string::npos) << got;
    // A second connection (the connmark and the ESTABLISHED path again, another source port).
    EXPECT_NE(connect("again").find("echo=again"), std::string::npos);
  }
  // The proxy is gone: TPROXY finds no listener and the packet is dropped, never delivered to
  // the app uncaptured.
  EXPECT_EQ(connect("no-proxy"), "FAILED");

  // REDIRECT mode, same world: the app sees the proxy's passthrough source.
  install("REDIRECT");
  rules = run(front_, {"ip", "-4", "rule", "show"});
  EXPECT_EQ(rules.out.find("lookup 133"), std::string::npos) << rules.out;
  {
    auto proxy = startProxy("REDIRECT");
    ASSERT_TRUE(proxy->waitForLine("remora-proxy started", 10000)) << proxy->output();
    auto got = connect("ping-redirect");
    EXPECT_NE(got.find("peer=127.0.0.6:"), std::string::npos) << got;
    EXPECT_NE(got.find("echo=ping-redirect"), std::string::npos) << got;
  }

  install("TPROXY");
  auto out = run(front_, {binaryPath("remora-init"), "uninstall"});
  EXPECT_EQ(out.exit_code, 0) << out.out << out.err;
  EXPECT_EQ(leftovers(), "");
}

// IPv6: ip6tables' TPROXY (nftables' `tproxy ip6`), the IPv6 policy route and the proxy's
// transparent [::]:15006 listener; the app sees the client pod's IPv6 address.
TEST_P(TproxyE2eTest, Ipv6AppSeesTheRealClientUnderTproxy) {
  auto app6 = world_->spawn(
      front_, {probePath(), "serve", "--listen", "[::]:8080", "--reply", "app6", "--echo"});
  ASSERT_TRUE(app6 && app6->waitForLine("ready", 5000));
  install("TPROXY", "on");
  auto rules = run(front_, {"ip", "-6", "rule", "show"});
  EXPECT_NE(rules.out.find("fwmark 0x539 lookup 133"), std::string::npos) << rules.out;
  auto route = run(front_, {"ip", "-6", "route", "show", "table", "133"});
  EXPECT_NE(route.out.find("local"), std::string::npos) << route.out;
  {
    auto proxy = startProxy("TPROXY", /*with_cap=*/true, /*ipv6=*/true);
    ASSERT_TRUE(proxy->waitForLine("remora-proxy started", 10000)) << proxy->output();
    auto got = connect("ping-tproxy6", kFrontIp6);
    EXPECT_NE(got.find(std::string("peer=[") + kClientIp6 + "]:"), std::string::npos)
        << got << "\n---\n"
        << proxy->output();
    EXPECT_NE(got.find(std::string("local=[") + kFrontIp6 + "]:8080"), std::string::npos) << got;
    EXPECT_NE(got.find("echo=ping-tproxy6"), std::string::npos) << got;
    EXPECT_NE(connect("again6", kFrontIp6).find("echo=again6"), std::string::npos);
    // IPv4 still goes through the same proxy.
    EXPECT_NE(connect("ping-tproxy4").find(std::string("peer=") + kClientIp + ":"),
              std::string::npos);
  }
  // The proxy is gone: dropped, never delivered to the app uncaptured.
  EXPECT_EQ(connect("no-proxy6", kFrontIp6), "FAILED");
  // REDIRECT mode over IPv6: the app sees the proxy's IPv6 passthrough source instead.
  install("REDIRECT", "on");
  {
    auto proxy = startProxy("REDIRECT", /*with_cap=*/true, /*ipv6=*/true);
    ASSERT_TRUE(proxy->waitForLine("remora-proxy started", 10000)) << proxy->output();
    auto got = connect("ping-redirect6", kFrontIp6);
    EXPECT_NE(got.find("peer=[::6]:"), std::string::npos) << got;
  }
  install("TPROXY", "on");
  auto out = run(front_, {binaryPath("remora-init"), "uninstall"});
  EXPECT_EQ(out.exit_code, 0) << out.out << out.err;
  EXPECT_EQ(leftovers(), "");
}

// HTTP inbound (issue 13): ports the proxy serves at L7, declared (http-app) or sniffed (web),
// pool their connections to the app. Under TPROXY each of those connections is bound to the
// client's own address and pooled per client address, so two clients with kept-alive
// connections, at the same time, are each seen by the app with their own address on one
// connection of their own: never 127.0.0.6 and never each other's. Over IPv4 and IPv6.
TEST_P(TproxyE2eTest, HttpInboundAppSeesEachClientOnItsOwnPooledConnection) {
  if (access(kPython, X_OK) != 0) GTEST_SKIP() << kPython << " is missing";
  auto client2 = world_->addPod("client2", kClient2Ip, kClient2Ip6);
  ASSERT_TRUE(client2.ok()) << client2.error().message;
  const std::string dir = makeScratchDir("remora-tproxy-http");
  ASSERT_FALSE(dir.empty());
  struct Cleanup {
    std::string dir;
    ~Cleanup() { std::filesystem::remove_all(dir); }
  } cleanup{dir};
  std::ofstream(dir + "/server.py") << kPeerServer;
  std::ofstream(dir + "/client.py") << kKeepAliveClient;
  std::ofstream(dir + "/mesh.yaml") << kAppConfig;
  const std::vector<std::string> targets = {"10.244.0.10:8090", "10.244.0.10:8091",
                                            "[fd00:244::10]:8090", "[fd00:244::10]:8091"};
  std::vector<std::string> serve = {kPython, dir + "/server.py"};
  serve.insert(serve.end(), {"0.0.0.0:8090", "0.0.0.0:8091", "[::]:8090", "[::]:8091"});
  auto app = world_->spawn(front_, serve);
  ASSERT_TRUE(app && app->waitForLine("ready", 10000)) << (app ? app->output() : "");

  install("TPROXY", "on");
  auto proxy = startProxy("TPROXY", /*with_cap=*/true, /*ipv6=*/true, dir + "/mesh.yaml");
  ASSERT_TRUE(proxy->waitForLine("remora-proxy started", 10000)) << proxy->output();

  constexpr int kRequests = 12;
  std::vector<std::string> argv = {kPython, dir + "/client.py", std::to_string(kRequests)};
  argv.insert(argv.end(), targets.begin(), targets.end());
  // Both clients at once, so their requests interleave on the proxy's pool.
  auto a = world_->spawn(client_, argv);
  auto b = world_->spawn(*client2, argv);
  ASSERT_TRUE(a && a->waitForLine("done", 30000)) << (a ? a->output() : "") << proxy->output();
  ASSERT_TRUE(b && b->waitForLine("done", 30000)) << (b ? b->output() : "") << proxy->output();

  struct Seen {
    std::string client;
    std::string client6;
    const Process* process;
  };
  for (const Seen& seen :
       {Seen{kClientIp, kClientIp6, a.get()}, Seen{kClient2Ip, kClient2Ip6, b.get()}}) {
    // target -> the app's peer ports seen for it
    std::map<std::string, std::set<std::string>> ports;
    std::istringstream lines(seen.process->output());
    int answered = 0;
    for (std::string line; std::getline(lines, line);) {
      if (line.empty() || line == "done") continue;
      std::istringstream fields(line);
      std::string target, status, body;
      fields >> target >> status >> body;
      const bool v6 = target.front() == '[';
      const std::string want =
          v6 ? fmt::format("peer=[{}]:", seen.client6) : fmt::format("peer={}:", seen.client);
      EXPECT_EQ(status, "200") << line;
      // The client's own address: not 127.0.0.6 / ::6, not the other client's.
      EXPECT_EQ(body.rfind(want, 0), 0u) << "client " << seen.client << ": " << line;
      ports[target].insert(body.substr(std::min(body.size(), want.size())));
      ++answered;
    }
    EXPECT_EQ(answered, kRequests * static_cast<int>(targets.size())) << seen.process->output();
    // Every request of a kept-alive client went on one pooled connection (one source port at
    // the app): the pool reuses the client's own connection, and only that one.
    for (const auto& target : targets) {
      EXPECT_EQ(ports[target].size(), 1u)
          << "client " << seen.client << " to " << target << ": " << seen.process->output();
    }
  }
  // They did go through the L7 path: counted per request, as the inbound cluster.
  auto stats = run(front_, {"curl", "-sS", "-m", "3", "http://127.0.0.1:15000/stats/prometheus"});
  double counted = 0;
  std::istringstream metrics(stats.out);
  for (std::string line; std::getline(metrics, line);) {
    if (line.starts_with("remora_requests_total{") &&
        line.find("InboundPassthroughCluster") != std::string::npos &&
        line.find("response_code=\"200\"") != std::string::npos) {
      counted += std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  EXPECT_EQ(counted, 2.0 * kRequests * static_cast<double>(targets.size())) << stats.out;
  proxy.reset();
  auto out = run(front_, {binaryPath("remora-init"), "uninstall"});
  EXPECT_EQ(out.exit_code, 0) << out.out << out.err;
  EXPECT_EQ(leftovers(), "");
}

INSTANTIATE_TEST_SUITE_P(Modes, TproxyE2eTest, ::testing::Values("iptables", "nftables"));

}  // namespace
}  // namespace remora::test
