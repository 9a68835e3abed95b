// remora-init --mode nftables (and auto) in namespaces of the test's own: the scenario of
// init_e2e_test.cc (capture proven with real TCP, idempotent re-install, exact uninstall) with the
// rules in one `inet remora` table written through libnftables.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <utility>

#include "common/netns.h"
#include "init_world.h"
#include "intercept/cli.h"
#include "intercept/nftables_applier.h"
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
  // With rule handles: a table written anew gets new handles, so an unchanged listing proves
  // that nothing was rewritten.
  std::string handles() { return run({"nft", "-a", "list", "table", "inet", "remora"}).out; }

  // The nftables applier's check (what remora-cni's CHECK runs) in front's netns, for the
  // options the flags give; "" when the table is exactly the plan, else the error.
  std::string check(const std::vector<std::pair<std::string, std::string>>& flags = {}) {
    intercept::InterceptOptions options;
    for (const auto& [flag, value] : flags) {
      auto set = intercept::setOption(options, flag, value);
      EXPECT_TRUE(set.ok()) << flag << ": " << set.error().message;
    }
    std::string error;
    auto ran = runInNetns(world_->netnsPath(front_), [&]() -> Result<void> {
      auto checked = intercept::makeNftablesApplier()->check(options);
      if (!checked) error = checked.error().message;
      return {};
    });
    EXPECT_TRUE(ran.ok()) << ran.error().message;
    return error;
  }

  // The handle nft gave `rule` (its exact listed text) in `chain` of inet remora, or "".
  std::string handleOf(const std::string& chain, const std::string& rule) {
    auto text = run({"nft", "-a", "list", "chain", "inet", "remora", chain}).out;
    auto at = text.find("\t" + rule + " # handle ");
    if (at == std::string::npos) return "";
    at += rule.size() + 11;
    return text.substr(at, text.find('\n', at) - at);
  }

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

// A fresh install writes `create table` (no delete, so closing libnftables' socket does not wait
// for an RCU grace period). The same script run once the table exists, as by a second installer
// racing this one, is refused whole: nothing is doubled, nothing changes.
TEST_F(InitNftE2e, AFreshInstallOnlyCreatesTheTableSoARacingOneChangesNothing) {
  auto dry = init({"install", "--mode", "nftables", "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  ASSERT_NE(dry.out.find("create table inet remora {"), std::string::npos) << dry.out;
  EXPECT_EQ(dry.out.find("delete table"), std::string::npos) << dry.out;
  ASSERT_EQ(init({"install", "--mode", "nftables"}).exit_code, 0);
  const std::string installed = handles();
  const std::string script = fmt::format("/tmp/remora-nft-create-{}.nft", ::getpid());
  std::ofstream(script) << dry.out;
  auto racing = run({"nft", "-f", script});
  std::remove(script.c_str());
  EXPECT_NE(racing.exit_code, 0) << racing.out;
  EXPECT_NE(racing.err.find("File exists"), std::string::npos) << racing.err;
  EXPECT_EQ(handles(), installed);
  // And the installer, finding the table there, replaces nothing it does not have to.
  auto again = init({"install", "--mode", "nftables"});
  EXPECT_NE(again.out.find("already installed, nothing changed"), std::string::npos) << again.out;
}

// A rule edited in place (same chain, same rule count) is noticed: install puts the planned rule
// back, and the check names the chain and both rules. Without tampering, a second install
// rewrites nothing (same handles) and the check passes.
TEST_F(InitNftE2e, RuleReplacedInPlaceIsNoticedByInstallAndCheck) {
  ASSERT_EQ(init({"install", "--mode", "nftables"}).exit_code, 0);
  const auto installed = handles();
  auto again = init({"install", "--mode", "nftables"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("already installed, nothing changed"), std::string::npos) << again.out;
  EXPECT_EQ(handles(), installed);
  EXPECT_EQ(check(), "");

  // `meta skuid 1337 return` (the proxy's own traffic leaves uncaptured) becomes 1338.
  const std::string handle = handleOf("REMORA_OUTPUT_v4", "meta skuid 1337 return");
  ASSERT_NE(handle, "") << installed;
  auto replaced = run({"nft", "replace", "rule", "inet", "remora", "REMORA_OUTPUT_v4", "handle",
                       handle, "meta", "skuid", "1338", "return"});
  ASSERT_EQ(replaced.exit_code, 0) << replaced.err;
  ASSERT_NE(ruleset().find("meta skuid 1338 return"), std::string::npos) << ruleset();

  auto checked = check();
  EXPECT_NE(checked.find("chain REMORA_OUTPUT_v4 rule #4 'meta skuid 1338 return' is not in the "
                         "plan"),
            std::string::npos)
      << checked;
  EXPECT_NE(checked.find("chain REMORA_OUTPUT_v4 lacks planned rule #4 'meta skuid 1337 return'"),
            std::string::npos)
      << checked;

  auto fixed = init({"install", "--mode", "nftables"});
  ASSERT_EQ(fixed.exit_code, 0) << fixed.err;
  EXPECT_EQ(fixed.out.find("nothing changed"), std::string::npos) << fixed.out;
  EXPECT_NE(fixed.out.find("nftables: table inet remora differs from the plan: chain "
                           "REMORA_OUTPUT_v4 rule #4 'meta skuid 1338 return' is not in the plan"),
            std::string::npos)
      << fixed.out;
  EXPECT_NE(fixed.out.find("nftables: installed table inet remora"), std::string::npos)
      << fixed.out;
  EXPECT_EQ(ruleset().find("meta skuid 1338"), std::string::npos) << ruleset();
  EXPECT_NE(handleOf("REMORA_OUTPUT_v4", "meta skuid 1337 return"), "") << handles();
  EXPECT_EQ(check(), "");
}

// Every rule shape the planner makes, installed for real: an immediate second install must find
// the table exactly as planned. A rule whose translation is not written the way libnftables lists
// it back would make the second install rewrite the table (and the check fail).
TEST_F(InitNftE2e, EveryPlanVariantIsListedBackAsPlanned) {
  using Flags = std::vector<std::pair<std::string, std::string>>;
  const std::vector<Flags> variants = {
      {},
      {{"ipv6", "off"}},
      {{"ipv6", "on"}},  // the same plan as the default here, but after the IPv4-only one
      {{"drop-invalid", "false"}},
      {{"inbound-interception-mode", "TPROXY"}},
      {{"inbound-interception-mode", "TPROXY"},
       {"include-inbound-ports", "8080,9000:9010"},
       {"exclude-inbound-ports", "7000"},
       {"drop-invalid", "false"}},
      {{"include-inbound-ports", "8080,9000:9010"}, {"exclude-inbound-ports", "7000,7100:7200"}},
      {{"include-inbound-ports", ""}},
      {{"exclude-outbound-cidrs", "10.96.0.0/12,192.168.1.1/32,fd00:1::/64,fd00:2::7"},
       {"include-outbound-cidrs", "10.0.0.0/8,fd00::/16"}},
      {{"exclude-outbound-cidrs", "0.0.0.0/0,::/0"}},
      {{"include-outbound-cidrs", "127.1.2.3/32"}},
      {{"proxy-uid", "3,4"}, {"proxy-gid", "5,6,"}},
      {{"include-outbound-owner-groups", "101,102"}, {"exclude-outbound-owner-groups", "103"}},
      {{"kube-virt-interfaces", "k6t-eth0,k6t-net1"},
       {"exclude-outbound-cidrs", "10.96.0.0/12,fd00:1::/64"},
       {"include-outbound-cidrs", "10.0.0.0/8,fd00::/16"}},
      {{"kube-virt-interfaces", "k6t-eth0"}},
      {{"include-outbound-ports", "443,8000:8100"}, {"exclude-outbound-ports", "22,9000:9100"}},
      {{"exclude-interfaces", "veth+,eth9"}, {"outbound-port", "15999"}, {"inbound-port", "15998"}},
  };
  for (const auto& flags : variants) {
    std::vector<std::string> args = {"install", "--mode", "nftables"};
    std::string label = "--mode nftables";
    for (const auto& [flag, value] : flags) {
      args.push_back("--" + flag);
      args.push_back(value);
      label += " --" + flag + " '" + value + "'";
    }
    SCOPED_TRACE(label);
    auto first = init(args);
    ASSERT_EQ(first.exit_code, 0) << first.err;
    EXPECT_NE(first.out.find("nftables: installed table inet remora"), std::string::npos)
        << first.out;
    const auto installed = handles();
    auto second = init(args);
    ASSERT_EQ(second.exit_code, 0) << second.err;
    EXPECT_NE(second.out.find("already installed, nothing changed"), std::string::npos)
        << second.out << "\n"
        << installed;
    EXPECT_EQ(handles(), installed);
    auto with_mode = flags;
    with_mode.emplace_back("mode", "nftables");
    EXPECT_EQ(check(with_mode), "");
  }
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
  // No table yet: the transaction creates it (and would fail, changing nothing, if one appeared).
  EXPECT_NE(out.out.find("create table inet remora { comment \"remora "), std::string::npos)
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
