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
constexpr const char* kClientIp6 = "fd00:244::20";
constexpr uint32_t kProxyUid = 1337;

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
                                      bool ipv6 = false) {
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

INSTANTIATE_TEST_SUITE_P(Modes, TproxyE2eTest, ::testing::Values("iptables", "nftables"));

}  // namespace
}  // namespace remora::test
