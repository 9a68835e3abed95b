// TPROXY inbound end to end. In a world the test makes (a pod with the app and the proxy, a
// client pod): remora-init installs --inbound-interception-mode TPROXY (iptables and nftables
// modes), remora-proxy runs as uid 1337 with only CAP_NET_ADMIN and a transparent inbound
// listener, and the client connects to the app's port. The app must see the client's own
// address (REDIRECT mode, checked too, shows 127.0.0.6), the payload must come back, the
// connection must have gone through the proxy (with the proxy stopped it fails), and uninstall
// must leave no rule, no ip rule and no route.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "netns_world.h"

namespace remora::test {
namespace {

constexpr const char* kClientIp = "10.244.0.20";
constexpr uint32_t kProxyUid = 1337;

class TproxyE2eTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "needs root for network namespaces";
    world_ = std::make_unique<NetnsWorld>();
    front_ = *world_->addPod("front", kFrontIp);
    client_ = *world_->addPod("client", kClientIp);
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

  void install(const std::string& inbound_mode) {
    auto out = run(front_, {binaryPath("remora-init"), "install", "--mode", GetParam(), "--ipv6",
                            "off", "--inbound-interception-mode", inbound_mode});
    ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
  }

  // remora-proxy as uid 1337 holding CAP_NET_ADMIN only (the TPROXY permission model).
  std::unique_ptr<Process> startProxy(const std::string& inbound_mode, bool with_cap = true) {
    std::vector<std::string> argv = {"setpriv", "--reuid=1337", "--regid=1337", "--clear-groups"};
    if (with_cap) {
      argv.insert(argv.end(), {"--inh-caps=-all,+net_admin", "--ambient-caps=-all,+net_admin",
                               "--bounding-set=-all,+net_admin"});
    } else {
      argv.insert(argv.end(), {"--inh-caps=-all", "--bounding-set=-all"});
    }
    argv.insert(argv.end(),
                {binaryPath("remora-proxy"), "--no-ipv6", "--inbound-listen", "0.0.0.0:15006",
                 "--outbound-listen", "0.0.0.0:15001", "--admin-listen", "127.0.0.1:15000",
                 "--inbound-interception-mode", inbound_mode});
    // Through sh so stderr lands in the output the test reads too.
    std::string command = "exec";
    for (const auto& a : argv) command += " " + a;
    return world_->spawn(front_, {"sh", "-c", command + " 2>&1"});
  }

  std::string connect(const std::string& payload) {
    auto out = world_->exec(client_, {probePath(), "connect", std::string(kFrontIp) + ":8080",
                                      "--timeout-ms", "1500", "--send", payload});
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
    auto rules = run(front_, {"ip", "-4", "rule", "show"});
    if (rules.out.find("lookup 133") != std::string::npos) found += "ip rule: " + rules.out;
    auto routes = run(front_, {"ip", "-4", "route", "show", "table", "133"});
    if (!routes.out.empty()) found += "table 133: " + routes.out;
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

INSTANTIATE_TEST_SUITE_P(Modes, TproxyE2eTest, ::testing::Values("iptables", "nftables"));

}  // namespace
}  // namespace remora::test
