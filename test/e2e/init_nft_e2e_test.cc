// remora-init --mode nftables (and auto) in namespaces of the test's own: the scenario of
// init_e2e_test.cc (capture proven with real TCP, idempotent re-install, exact uninstall) with the
// rules in one `inet remora` table written through libnftables.
#include <gtest/gtest.h>

#include <iostream>

#include "init_world.h"
#include "netns_world.h"

namespace remora::test {
namespace {

constexpr const char* kVip = kInitVip;
constexpr const char* kVip6 = kInitVip6;

class InitNftE2e : public InitWorld<::testing::Test> {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "e2e tests need root (network namespaces, nftables)";
    buildWorld(/*with_v2=*/false);
  }

  CommandOutput init(std::vector<std::string> args) {
    args.insert(args.begin(), binaryPath("remora-init"));
    return run(args);
  }
  std::string ruleset() { return run({"nft", "list", "ruleset"}).out; }

  // What `ip kube-proxy` looks like in kube-proxy's nftables mode (shape only: one service).
  void addKubeProxyTable() {
    auto out = run({"nft", "-f", "-"},
                   "table ip kube-proxy {\n"
                   "  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }\n"
                   "  chain nat-output { type nat hook output priority -100; policy accept; }\n"
                   "}\n");
    ASSERT_EQ(out.exit_code, 0) << out.err;
  }
};

TEST_F(InitNftE2e, InstallCapturesAsIptablesModeDoes) {
  EXPECT_EQ(connect(front_, kVip), "FAILED");
  auto out = init({"install", "--mode", "nftables"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_NE(out.out.find("nftables: installed table inet remora"), std::string::npos) << out.out;
  EXPECT_NE(out.out.find("mode nftables (chosen with --mode)"), std::string::npos) << out.out;
  // Nothing in iptables.
  EXPECT_EQ(ruleset().find("table ip nat"), std::string::npos) << ruleset();
  EXPECT_NE(connect(front_, kVip).find("outbound orig=10.1.122.241:9999"), std::string::npos);
  EXPECT_NE(connect(front_, kVip6).find("outbound6 orig=[fd00:1::241]:9999"), std::string::npos);
  auto got = connect(client_, std::string(kFrontIp) + ":8080");
  EXPECT_NE(got.find("inbound orig=10.244.0.10:8080"), std::string::npos) << got;
  got = connect(client_, std::string(kFrontIp) + ":15001");
  EXPECT_NE(got.find("outbound orig=none"), std::string::npos) << got;
  // The proxy's own traffic, loopback and the passthrough source, as in iptables mode.
  got = connect(front_, std::string(kBillV1) + ":80", 1337);
  EXPECT_NE(got.find("bill-v1 orig=none"), std::string::npos) << got;
  got = connect(front_, std::string(kFrontIp) + ":8080", 1000);
  EXPECT_NE(got.find("app orig=none"), std::string::npos) << got;
  got = connect(front_, std::string(kFrontIp) + ":8080", 1337);
  EXPECT_NE(got.find("inbound orig=10.244.0.10:8080"), std::string::npos) << got;
  got = connect(front_, std::string(kFrontIp) + ":8080", 1337, "127.0.0.6");
  EXPECT_NE(got.find("app orig=none"), std::string::npos) << got;
  EXPECT_NE(ruleset().find("ct state invalid drop"), std::string::npos) << ruleset();
}

TEST_F(InitNftE2e, ReinstallIsANoOpAndNewFlagsReplaceInOneTransaction) {
  ASSERT_EQ(init({"install", "--mode", "nftables"}).exit_code, 0);
  auto first = ruleset();
  auto again = init({"install", "--mode", "nftables"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("already installed, nothing changed"), std::string::npos) << again.out;
  EXPECT_EQ(ruleset(), first);
  ASSERT_EQ(init({"install", "--mode", "nftables", "--outbound-port", "15999"}).exit_code, 0);
  auto replaced = ruleset();
  EXPECT_NE(replaced.find("redirect to :15999"), std::string::npos) << replaced;
  EXPECT_EQ(replaced.find("redirect to :15001"), std::string::npos) << replaced;
  // A rule removed by hand is noticed and put back.
  auto handles = run({"nft", "-a", "list", "chain", "inet", "remora", "REMORA_REDIRECT_v4"}).out;
  auto at = handles.rfind("# handle ");  // the last one is the rule's
  ASSERT_NE(at, std::string::npos) << handles;
  std::string handle = handles.substr(at + 9, handles.find('\n', at) - at - 9);
  ASSERT_EQ(run({"nft", "delete", "rule", "inet", "remora", "REMORA_REDIRECT_v4", "handle", handle})
                .exit_code,
            0);
  auto fixed = init({"install", "--mode", "nftables", "--outbound-port", "15999"});
  EXPECT_NE(fixed.out.find("nftables: installed"), std::string::npos) << fixed.out;
  EXPECT_EQ(ruleset(), replaced);
}

TEST_F(InitNftE2e, UninstallDeletesOnlyTheTableAndCoexistsWithKubeProxyAndIptables) {
  addKubeProxyTable();
  auto ipt = run({"iptables-nft-restore", "--noflush"},
                 "*filter\n:MY-CHAIN - [0:0]\n-A MY-CHAIN -p tcp -m tcp --dport 7 -j RETURN\n"
                 "COMMIT\n");
  ASSERT_EQ(ipt.exit_code, 0) << ipt.err;
  auto before = ruleset();
  auto out = init({"install", "--mode", "auto"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_NE(
      out.out.find("mode nftables (auto: kube-proxy's nftables table (ip kube-proxy) is here)"),
      std::string::npos)
      << out.out;
  EXPECT_NE(connect(front_, kVip).find("outbound orig=10.1.122.241:9999"), std::string::npos);
  auto lo = run({"ip", "-6", "addr", "show", "dev", "lo"});
  EXPECT_NE(lo.out.find("::6/128"), std::string::npos) << lo.out;
  auto gone = init({"uninstall"});
  ASSERT_EQ(gone.exit_code, 0) << gone.err;
  EXPECT_NE(gone.out.find("nftables: deleted table inet remora"), std::string::npos) << gone.out;
  EXPECT_EQ(ruleset(), before);
  lo = run({"ip", "-6", "addr", "show", "dev", "lo"});
  EXPECT_EQ(lo.out.find("::6/128"), std::string::npos) << lo.out;
  EXPECT_EQ(connect(front_, kVip), "FAILED");
  auto again = init({"uninstall"});
  EXPECT_NE(again.out.find("nothing changed"), std::string::npos) << again.out;
}

TEST_F(InitNftE2e, AutoSaysWhyAndSwitchingModesNeverCapturesTwice) {
  // Empty netns: nftables, because there is no iptables table at all.
  auto out = init({"install", "--mode", "auto", "--dry-run"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_NE(out.out.find("add table inet remora\ndelete table inet remora\ntable inet remora {"),
            std::string::npos)
      << out.out;
  ASSERT_EQ(init({"install", "--mode", "iptables", "--iptables-backend", "nft"}).exit_code, 0);
  // The iptables install is there now: auto keeps to iptables and says why.
  out = init({"install", "--mode", "auto", "--iptables-backend", "nft"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_NE(out.out.find("mode iptables (auto: this netns has iptables tables (ip nat"),
            std::string::npos)
      << out.out;
  // Switching to nftables removes the iptables install in the same run, and back again.
  out = init({"install", "--mode", "nftables"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_NE(out.out.find("removed an earlier install"), std::string::npos) << out.out;
  EXPECT_EQ(ruleset().find("REMORA_OUTPUT -"), std::string::npos);
  auto nat = run({"iptables-nft-save", "-t", "nat"}).out;
  EXPECT_EQ(nat.find("REMORA"), std::string::npos) << nat;
  EXPECT_NE(connect(front_, kVip).find("outbound orig=10.1.122.241:9999"), std::string::npos);
  out = init({"install", "--mode", "iptables", "--iptables-backend", "nft"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_NE(out.out.find("nftables: removed an earlier install (table inet remora)"),
            std::string::npos)
      << out.out;
  EXPECT_NE(connect(front_, kVip).find("outbound orig=10.1.122.241:9999"), std::string::npos);
  EXPECT_NE(connect(front_, kVip6).find("outbound6 orig=[fd00:1::241]:9999"), std::string::npos);
}

}  // namespace
}  // namespace remora::test
