// remora-init against real iptables (nft and legacy) in namespaces of the test's own, proven
// with real TCP connections (DESIGN.md "Test topology rules").
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <regex>

#include "init_world.h"
#include "netns_world.h"

namespace remora::test {
namespace {

constexpr const char* kVip = kInitVip;
constexpr const char* kVip6 = kInitVip6;

class InitE2e : public InitWorld<::testing::TestWithParam<std::string>> {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "e2e tests need root (network namespaces, iptables)";
    buildWorld(/*with_v2=*/true);
  }

  std::string backend() const { return GetParam(); }

  CommandOutput init(std::vector<std::string> args, const Pod* pod = nullptr) {
    args.insert(args.begin(), binaryPath("remora-init"));
    if (args.size() > 1 && args[1] == "install") {
      args.emplace_back("--iptables-backend");
      args.push_back(backend());
    }
    return run(args, {}, pod);
  }

  // The nat table as iptables-save prints it, without comments and counters.
  std::string natRules(const std::string& family = "iptables") {
    auto out = world_->exec(front_, {family + "-" + backend() + "-save", "-t", "nat"});
    EXPECT_TRUE(out.ok() && out->exit_code == 0);
    std::string text =
        std::regex_replace(out->out, std::regex("^#.*\n", std::regex::multiline), "");
    return std::regex_replace(text, std::regex(" \\[[0-9]+:[0-9]+\\]"), "");
  }

  void restoreInFront(const std::string& rules, const std::string& family = "iptables") {
    auto out = world_->exec(front_, {family + "-" + backend() + "-restore", "--noflush"}, rules);
    ASSERT_TRUE(out.ok() && out->exit_code == 0) << (out ? out->err : out.error().message);
  }
};

TEST_P(InitE2e, OutboundToClusterIpLandsOnProxyWithOriginalDestination) {
  // Before install a VIP has no route beyond the node: the connection fails locally.
  EXPECT_EQ(connect(front_, kVip), "FAILED");
  auto out = init({"install"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_NE(connect(front_, kVip).find("outbound orig=10.1.122.241:9999"), std::string::npos);
  EXPECT_NE(connect(front_, kVip6).find("outbound6 orig=[fd00:1::241]:9999"), std::string::npos);
  // A pod IP is captured too.
  EXPECT_NE(connect(front_, std::string(kBillV1) + ":80").find("outbound orig=10.244.1.168:80"),
            std::string::npos);
}

TEST_P(InitE2e, InboundLandsOnInboundPortButProxyPortsAreNotCaptured) {
  ASSERT_EQ(init({"install"}).exit_code, 0);
  auto got = connect(client_, std::string(kFrontIp) + ":8080");
  EXPECT_NE(got.find("inbound orig=10.244.0.10:8080"), std::string::npos) << got;
  // 15001 is in the never-captured list: reaching it directly is not redirected.
  got = connect(client_, std::string(kFrontIp) + ":15001");
  EXPECT_NE(got.find("outbound orig=none"), std::string::npos) << got;
}

TEST_P(InitE2e, ProxyUidIsNotCapturedAndReachesTheRealDestination) {
  ASSERT_EQ(init({"install"}).exit_code, 0);
  auto got = connect(front_, std::string(kBillV1) + ":80", 1337);
  EXPECT_NE(got.find("bill-v1 orig=none"), std::string::npos) << got;
  EXPECT_EQ(connect(front_, kVip, 1337), "FAILED");  // not captured, and the VIP leads nowhere
  // Any other uid is captured.
  got = connect(front_, std::string(kBillV1) + ":80", 1000);
  EXPECT_NE(got.find("outbound orig=10.244.1.168:80"), std::string::npos) << got;
}

TEST_P(InitE2e, LoopbackRulesAsIstio) {
  ASSERT_EQ(init({"install"}).exit_code, 0);
  // The app calling its own pod IP goes over lo and is not captured.
  auto got = connect(front_, std::string(kFrontIp) + ":8080", 1000);
  EXPECT_NE(got.find("app orig=none"), std::string::npos) << got;
  // The proxy dialling the pod IP (the app's own service VIP routed back) goes through inbound.
  got = connect(front_, std::string(kFrontIp) + ":8080", 1337);
  EXPECT_NE(got.find("inbound orig=10.244.0.10:8080"), std::string::npos) << got;
  // The proxy's inbound passthrough from 127.0.0.6 reaches the app uncaptured.
  got = connect(front_, std::string(kFrontIp) + ":8080", 1337, "127.0.0.6");
  EXPECT_NE(got.find("app orig=none"), std::string::npos) << got;
  EXPECT_NE(got.find("peer=127.0.0.6:"), std::string::npos) << got;
  // localhost is never captured.
  got = connect(front_, "127.0.0.1:8080", 1000);
  EXPECT_NE(got.find("app orig=none"), std::string::npos) << got;
}

TEST_P(InitE2e, ExcludedCidrsAndPortsAreNotCaptured) {
  ASSERT_EQ(init({"install", "--exclude-outbound-cidrs", "10.244.1.0/24",
                  "--exclude-outbound-ports", "81", "--exclude-inbound-ports", "8080"})
                .exit_code,
            0);
  EXPECT_NE(connect(front_, std::string(kBillV1) + ":80").find("bill-v1 orig=none"),
            std::string::npos);
  EXPECT_NE(connect(front_, std::string(kBillV2) + ":81").find("bill-v2-81 orig=none"),
            std::string::npos);
  EXPECT_NE(connect(front_, std::string(kBillV2) + ":80").find("outbound orig=10.244.2.74:80"),
            std::string::npos);
  EXPECT_NE(connect(client_, std::string(kFrontIp) + ":8080").find("app orig=none"),
            std::string::npos);
}

TEST_P(InitE2e, IncludedCidrsOnly) {
  ASSERT_EQ(init({"install", "--include-outbound-cidrs", "10.1.0.0/16"}).exit_code, 0);
  EXPECT_NE(connect(front_, kVip).find("outbound orig=10.1.122.241:9999"), std::string::npos);
  EXPECT_NE(connect(front_, std::string(kBillV1) + ":80").find("bill-v1 orig=none"),
            std::string::npos);
}

TEST_P(InitE2e, SecondInstallIsANoOpAndNewFlagsReplaceCleanly) {
  ASSERT_EQ(init({"install"}).exit_code, 0);
  auto first = natRules();
  auto first6 = natRules("ip6tables");
  auto again = init({"install"});
  ASSERT_EQ(again.exit_code, 0);
  EXPECT_NE(again.out.find("nothing changed"), std::string::npos) << again.out;
  EXPECT_EQ(natRules(), first);
  EXPECT_EQ(natRules("ip6tables"), first6);

  ASSERT_EQ(init({"install", "--outbound-port", "15999"}).exit_code, 0);
  auto replaced = natRules();
  EXPECT_NE(replaced.find("--to-ports 15999"), std::string::npos);
  EXPECT_EQ(replaced.find("--to-ports 15001"), std::string::npos);
  // Exactly one jump from each built-in chain.
  EXPECT_EQ(std::count(replaced.begin(), replaced.end(), '\n'),
            std::count(first.begin(), first.end(), '\n'));
  size_t jumps = 0;
  for (size_t pos = 0; (pos = replaced.find("-j REMORA_OUTPUT", pos)) != std::string::npos; ++pos) {
    ++jumps;
  }
  EXPECT_EQ(jumps, 1u);
}

// Issue 13: iptables-save prints "-d 0.0.0.0/0" back as nothing; the install compared unequal
// and reinstalled (resetting counters) on every run.
TEST_P(InitE2e, ZeroPrefixExcludeCidrIsIdempotent) {
  std::vector<std::string> args = {"install", "--exclude-outbound-cidrs", "0.0.0.0/0,::/0"};
  ASSERT_EQ(init(args).exit_code, 0);
  auto again = init(args);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("iptables-" + backend() + ": already installed, nothing changed"),
            std::string::npos)
      << again.out;
  EXPECT_NE(again.out.find("ip6tables-" + backend() + ": already installed, nothing changed"),
            std::string::npos)
      << again.out;
  EXPECT_NE(connect(front_, std::string(kBillV1) + ":80").find("bill-v1 orig=none"),
            std::string::npos);
}

// Issue 13 cases that route differently, proven with connections.
TEST_P(InitE2e, LoopbackIncludeCidrAndInboundOffRouteAsIstio) {
  ASSERT_EQ(
      init({"install", "--include-outbound-cidrs", "127.1.2.3/32", "--include-inbound-ports", ""})
          .exit_code,
      0);
  // The app dialling the loopback include is captured (the lo RETURN rules are omitted).
  auto got = connect(front_, "127.1.2.3:8080", 1000);
  EXPECT_NE(got.find("outbound orig=127.1.2.3:8080"), std::string::npos) << got;
  // Inbound capture is off: a client reaches the app directly...
  got = connect(client_, std::string(kFrontIp) + ":8080");
  EXPECT_NE(got.find("app orig=none"), std::string::npos) << got;
  // ...but the proxy dialling its own pod IP still goes through the inbound side, as in Istio.
  got = connect(front_, std::string(kFrontIp) + ":8080", 1337);
  EXPECT_NE(got.find("inbound orig=10.244.0.10:8080"), std::string::npos) << got;
}

// --drop-invalid (default on) lives in mangle and leaves with uninstall; off removes it.
TEST_P(InitE2e, DropInvalidInMangleAndRemovedExactly) {
  auto mangle = [&] {
    auto out = world_->exec(front_, {"iptables-" + backend() + "-save", "-t", "mangle"});
    return out ? out->out : std::string();
  };
  ASSERT_EQ(init({"install"}).exit_code, 0);
  EXPECT_NE(mangle().find("-A REMORA_DROP_INVALID -p tcp -m conntrack --ctstate INVALID -j DROP"),
            std::string::npos)
      << mangle();
  ASSERT_EQ(init({"install", "--drop-invalid", "false"}).exit_code, 0);
  EXPECT_EQ(mangle().find("REMORA"), std::string::npos) << mangle();
  ASSERT_EQ(init({"install", "--proxy-uid", "1337,1338,"}).exit_code, 0);
  EXPECT_NE(connect(front_, std::string(kBillV1) + ":80", 1338).find("bill-v1 orig=none"),
            std::string::npos);
  ASSERT_EQ(init({"uninstall"}).exit_code, 0);
  EXPECT_EQ(mangle().find("REMORA"), std::string::npos) << mangle();
}

TEST_P(InitE2e, UninstallRestoresThePreInstallRulesetWithForeignRulesIntact) {
  restoreInFront(
      "*nat\n:KUBE-SERVICES - [0:0]\n:MY-CHAIN - [0:0]\n"
      "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
      "-A OUTPUT -d 192.0.2.1/32 -p tcp -j MY-CHAIN\n"
      "-A MY-CHAIN -p tcp -m tcp --dport 7 -j RETURN\nCOMMIT\n");
  auto before = natRules();
  auto before6 = natRules("ip6tables");
  ASSERT_EQ(init({"install"}).exit_code, 0);
  EXPECT_NE(natRules(), before);
  // IPv6's inbound passthrough source ::6 is made local while installed, and only then.
  auto lo = world_->exec(front_, {"ip", "-6", "addr", "show", "dev", "lo"});
  EXPECT_NE(lo->out.find("::6/128"), std::string::npos) << lo->out;
  auto out = init({"uninstall"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_EQ(natRules(), before);
  EXPECT_EQ(natRules("ip6tables"), before6);
  lo = world_->exec(front_, {"ip", "-6", "addr", "show", "dev", "lo"});
  EXPECT_EQ(lo->out.find("::6/128"), std::string::npos) << lo->out;
  auto again = init({"uninstall"});
  EXPECT_EQ(again.exit_code, 0);
  EXPECT_NE(again.out.find("nothing changed"), std::string::npos) << again.out;
  EXPECT_EQ(connect(front_, kVip), "FAILED");
}

TEST_P(InitE2e, DryRunPrintsRestoreInputAndTouchesNothing) {
  auto before = natRules();
  auto out = init({"install", "--dry-run"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_NE(out.out.find("*nat\n:REMORA_INBOUND - [0:0]"), std::string::npos) << out.out;
  EXPECT_NE(out.out.find("-A OUTPUT -p tcp -j REMORA_OUTPUT"), std::string::npos);
  EXPECT_NE(out.out.find("COMMIT"), std::string::npos);
  EXPECT_EQ(natRules(), before);
}

TEST_P(InitE2e, BadInputAppliesNothing) {
  auto before = natRules();
  for (std::vector<std::string> bad :
       {std::vector<std::string>{"install", "--exclude-outbound-cidrs", "10.0.0.0/33"},
        {"install", "--outbound-port", "0"},
        {"install", "--include-inbound-ports", "80-70"},
        {"install", "--proxy-uid", "x"},
        {"install", "--bogus"}}) {
    auto out = init(bad);
    EXPECT_NE(out.exit_code, 0) << bad[1];
    EXPECT_FALSE(out.err.empty());
  }
  EXPECT_EQ(natRules(), before);
}

// ---- injected faults: tools shadowed on PATH by scripts, the state left read back --------

// A directory of fake tools put first on PATH; removed with everything in it.
class FakeBin {
 public:
  FakeBin() {
    char dir[] = "/tmp/remora-fakebin-XXXXXX";
    if (::mkdtemp(dir) != nullptr) dir_ = dir;
  }
  ~FakeBin() {
    for (const auto& f : files_) std::remove(f.c_str());
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }
  FakeBin(const FakeBin&) = delete;
  FakeBin& operator=(const FakeBin&) = delete;

  void add(const std::string& name, const std::string& script) {
    std::string path = dir_ + "/" + name;
    FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(("#!/bin/sh\n" + script).c_str(), f);
    std::fclose(f);
    ::chmod(path.c_str(), 0755);
    files_.push_back(path);
  }
  std::string path() const { return dir_ + ":" + std::getenv("PATH"); }

 private:
  std::string dir_;
  std::vector<std::string> files_;
};

// The real tool's absolute path, for a fake that wraps it.
std::string realTool(const std::string& name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    std::string path = std::string(dir) + name;
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return name;
}

class InitFaultE2e : public InitE2e {
 protected:
  // remora-init install with `bin` first on PATH.
  CommandOutput installWith(const FakeBin& bin, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {"env",     "PATH=" + bin.path(), binaryPath("remora-init"),
                                     "install", "--iptables-backend", backend()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto out = world_->exec(front_, argv);
    EXPECT_TRUE(out.ok());
    return out ? *out : CommandOutput{};
  }

  bool passthroughOnLo() {
    auto lo = world_->exec(front_, {"ip", "-6", "addr", "show", "dev", "lo"});
    return lo && lo->out.find("::6/128") != std::string::npos;
  }

  // "22 rules in 4 chains" for a family, from what a real install reports, then uninstalled.
  std::string installedSize(const std::string& family_tool, std::vector<std::string> extra) {
    std::vector<std::string> args = {"install"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto out = init(args);
    std::smatch m;
    std::regex line(family_tool + "-" + backend() + ": installed ([0-9]+ rules in [0-9]+ chains)");
    EXPECT_TRUE(std::regex_search(out.out, m, line)) << out.out << out.err;
    EXPECT_EQ(init({"uninstall"}).exit_code, 0);
    return m.size() > 1 ? m[1].str() : std::string("?");
  }

  std::string restoreName(const std::string& family_tool) const {
    return family_tool + "-" + backend() + "-restore";
  }
  // A restore that does the real work when installing (--noflush) and then misbehaves with
  // `after`; rollbacks (no --noflush) run the real tool untouched.
  std::string wrapInstall(const std::string& family_tool, const std::string& after) const {
    return "case \"$*\" in *--noflush*) " + realTool(restoreName(family_tool)) + " \"$@\"; " +
           after + ";; esac\nexec " + realTool(restoreName(family_tool)) + " \"$@\"\n";
  }
};

TEST_P(InitFaultE2e, FailingIpv6RestoreRollsBackIpv4AndThePassthroughAddress) {
  // The IPv4 rules and ::6/128 on lo, both added earlier in the same install, must go.
  FakeBin bin;
  bin.add(restoreName("ip6tables"), "echo 'simulated failure' >&2\nexit 1\n");
  auto before = natRules();
  auto before6 = natRules("ip6tables");
  auto out = installWith(bin, {"--ipv6", "on"});
  EXPECT_EQ(out.exit_code, 1);
  EXPECT_EQ(out.err, "remora-init: install failed: IPv6: " + restoreName("ip6tables") +
                         " failed (exit 1): simulated failure; rolled back iptables-" + backend() +
                         "; removed ::6/128 from lo; nothing is installed\n");
  EXPECT_EQ(natRules(), before);
  EXPECT_EQ(natRules("ip6tables"), before6);
  EXPECT_FALSE(passthroughOnLo());
}

TEST_P(InitFaultE2e, FailingIpv4RestoreAppliesNothing) {
  FakeBin bin;
  bin.add(restoreName("iptables"), "echo 'simulated failure' >&2\nexit 1\n");
  auto before = natRules();
  auto before6 = natRules("ip6tables");
  auto out = installWith(bin, {"--ipv6", "on"});
  EXPECT_EQ(out.exit_code, 1);
  EXPECT_EQ(out.err, "remora-init: install failed: IPv4: " + restoreName("iptables") +
                         " failed (exit 1): simulated failure; nothing was applied; nothing is "
                         "installed\n");
  EXPECT_EQ(natRules(), before);
  EXPECT_EQ(natRules("ip6tables"), before6);
  EXPECT_FALSE(passthroughOnLo());
}

TEST_P(InitFaultE2e, RestoreKilledAfterCommitIsReadBackAndRolledBack) {
  // The restore commits and is then killed (exit 137): its exit status says failure, the table
  // says installed. remora-init must believe the table.
  FakeBin bin;
  bin.add(restoreName("iptables"), wrapInstall("iptables", "kill -9 $$"));
  auto before = natRules();
  auto out = installWith(bin, {"--ipv6", "off"});
  EXPECT_EQ(out.exit_code, 1);
  EXPECT_EQ(out.err, "remora-init: install failed: IPv4: " + restoreName("iptables") +
                         " failed (exit 137); it had committed before it failed (read back from "
                         "the tables); rolled back iptables-" +
                         backend() + "; nothing is installed\n");
  EXPECT_EQ(natRules(), before);
}

TEST_P(InitFaultE2e, HungRestoreIsKilledAtTheTimeoutAndRolledBack) {
  FakeBin bin;
  bin.add(restoreName("iptables"), wrapInstall("iptables", "sleep 1000"));
  auto before = natRules();
  auto started = std::chrono::steady_clock::now();
  auto out = installWith(bin, {"--ipv6", "off", "--command-timeout", "1"});
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(out.exit_code, 1);
  EXPECT_EQ(out.err, "remora-init: install failed: IPv4: " + restoreName("iptables") +
                         " did not finish within 1 s and was killed; it had committed before it "
                         "failed (read back from the tables); rolled back iptables-" +
                         backend() + "; nothing is installed\n");
  EXPECT_EQ(natRules(), before);
  EXPECT_LT(took, std::chrono::seconds(20));
  // The environment form works the same (a restore that hangs before doing anything).
  FakeBin hung;
  hung.add(restoreName("iptables"), "sleep 1000\n");
  auto env = world_->exec(
      front_, {"env", "PATH=" + hung.path(), "REMORA_COMMAND_TIMEOUT=1", binaryPath("remora-init"),
               "install", "--iptables-backend", backend(), "--ipv6", "off"});
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->err, "remora-init: install failed: IPv4: " + restoreName("iptables") +
                          " did not finish within 1 s and was killed; nothing was applied; "
                          "nothing is installed\n");
  EXPECT_EQ(natRules(), before);
}

TEST_P(InitFaultE2e, FailingRollbackSaysWhatIsStillInstalled) {
  // IPv6 fails, and so does the rollback of IPv4: the IPv4 rules stay, and the message says so.
  std::string size = installedSize("iptables", {"--ipv6", "on"});
  FakeBin bin;
  bin.add(restoreName("iptables"),
          "case \"$*\" in *--noflush*) exec " + realTool(restoreName("iptables")) +
              " \"$@\";; esac\necho 'simulated rollback failure' >&2\nexit 1\n");
  bin.add(restoreName("ip6tables"), "echo 'simulated failure' >&2\nexit 1\n");
  auto before6 = natRules("ip6tables");
  auto out = installWith(bin, {"--ipv6", "on"});
  EXPECT_EQ(out.exit_code, 1);
  EXPECT_EQ(out.err, "remora-init: install failed: IPv6: " + restoreName("ip6tables") +
                         " failed (exit 1): simulated failure; ROLLBACK OF iptables-" + backend() +
                         " FAILED: " + restoreName("iptables") +
                         " failed (exit 1): simulated rollback failure; removed ::6/128 from lo; "
                         "now installed: iptables-" +
                         backend() + ": " + size + "\n");
  EXPECT_NE(natRules().find("-A OUTPUT -p tcp -j REMORA_OUTPUT"), std::string::npos);
  EXPECT_EQ(natRules("ip6tables"), before6);
  EXPECT_FALSE(passthroughOnLo());
}

INSTANTIATE_TEST_SUITE_P(Backends, InitFaultE2e, ::testing::Values("nft", "legacy"),
                         [](const auto& info) { return info.param; });

TEST_P(InitE2e, MissingIptablesAndMissingPrivilegesAreClearErrors) {
  auto out = world_->exec(front_, {"env", "PATH=/nonexistent", binaryPath("remora-init"), "install",
                                   "--iptables-backend", backend()});
  ASSERT_TRUE(out.ok());
  EXPECT_NE(out->exit_code, 0);
  EXPECT_NE(out->err.find("not found in PATH"), std::string::npos) << out->err;
  auto unprivileged = world_->execAs(front_, 1000, 1000, {binaryPath("remora-init"), "install"});
  ASSERT_TRUE(unprivileged.ok());
  EXPECT_NE(unprivileged->exit_code, 0);
  EXPECT_NE(unprivileged->err.find("root or with CAP_NET_ADMIN"), std::string::npos);
}

TEST_P(InitE2e, DumpShowsBackendChainsAndCounters) {
  ASSERT_EQ(init({"install"}).exit_code, 0);
  ASSERT_NE(connect(front_, kVip), "FAILED");
  auto out = init({"dump"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_NE(out.out.find("iptables-" + backend()), std::string::npos) << out.out;
  EXPECT_NE(out.out.find("REMORA_OUTPUT"), std::string::npos);
  EXPECT_NE(out.out.find("1337"), std::string::npos);
  auto json = init({"dump", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(json.out.front(), '{');
}

TEST_P(InitE2e, TraceAgreesWithWhereConnectionsLand) {
  ASSERT_EQ(init({"install"}).exit_code, 0);
  // kube-proxy-shaped chains after Remora's jump: the proxy's own traffic (uid 1337) falls
  // through to them and is DNATed 50/50; everyone else is redirected to 15001.
  restoreInFront(
      "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-BILL - [0:0]\n:KUBE-SEP-V1 - [0:0]\n"
      ":KUBE-SEP-V2 - [0:0]\n"
      "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
      "-A KUBE-SERVICES -d 10.1.122.241/32 -p tcp -m comment --comment "
      "\"istio-demo/bill-service:http cluster IP\" -m tcp --dport 9999 -j KUBE-SVC-BILL\n"
      "-A KUBE-SVC-BILL -m comment --comment \"istio-demo/bill-service:http -> 10.244.1.168:80\" "
      "-m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-V1\n"
      "-A KUBE-SVC-BILL -j KUBE-SEP-V2\n"
      "-A KUBE-SEP-V1 -p tcp -m tcp -j DNAT --to-destination 10.244.1.168:80\n"
      "-A KUBE-SEP-V2 -p tcp -m tcp -j DNAT --to-destination 10.244.2.74:80\nCOMMIT\n");
  auto captured = init({"dump", "--trace", kVip});
  ASSERT_EQ(captured.exit_code, 0) << captured.err;
  EXPECT_NE(captured.out.find("15001"), std::string::npos) << captured.out;
  EXPECT_NE(connect(front_, kVip).find("outbound orig=10.1.122.241:9999"), std::string::npos);

  auto proxy = init({"dump", "--trace", kVip, "--uid", "1337", "--gid", "1337"});
  ASSERT_EQ(proxy.exit_code, 0) << proxy.err;
  EXPECT_NE(proxy.out.find("10.244.1.168:80"), std::string::npos) << proxy.out;
  EXPECT_NE(proxy.out.find("10.244.2.74:80"), std::string::npos) << proxy.out;
  EXPECT_NE(proxy.out.find("50"), std::string::npos) << proxy.out;
  // Real connections from uid 1337 land on both backends, never on the proxy.
  int v1 = 0, v2 = 0;
  for (int i = 0; i < 40; ++i) {
    auto got = connect(front_, kVip, 1337);
    v1 += got.find("bill-v1") != std::string::npos;
    v2 += got.find("bill-v2") != std::string::npos;
    EXPECT_EQ(got.find("outbound"), std::string::npos) << got;
  }
  EXPECT_EQ(v1 + v2, 40);
  EXPECT_GT(v1, 0);
  EXPECT_GT(v2, 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, InitE2e, ::testing::Values("nft", "legacy"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace remora::test
