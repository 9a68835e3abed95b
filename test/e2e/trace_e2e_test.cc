#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "../unit/iptables_fixtures.h"
#include "common/netns.h"
#include "common/subprocess.h"
#include "intercept/backend.h"
#include "intercept/dump.h"
#include "intercept/plan.h"
#include "intercept/trace.h"

namespace remora::intercept {
namespace {

using fixtures::readFixture;

// A network namespace named after this process, removed (by that name) however the test ends.
// It gets lo, a veth pair whose both ends stay inside it, the seed client's address and a
// default route, so `ip route get` answers as in a pod; nothing can leave it.
class ScratchNetns {
 public:
  ScratchNetns() : name_(fmt::format("rmtrace{}", ::getpid())) {}
  ~ScratchNetns() {
    if (created_) (void)runCommand({"ip", "netns", "del", name_});
  }
  ScratchNetns(const ScratchNetns&) = delete;
  ScratchNetns& operator=(const ScratchNetns&) = delete;

  // Returns an empty string on success, else what failed.
  std::string create() {
    auto add = runCommand({"ip", "netns", "add", name_});
    if (!add || add->exit_code != 0) return "ip netns add failed: " + (add ? add->err : "");
    created_ = true;
    for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
             {"ip", "link", "set", "lo", "up"},
             {"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"},
             {"ip", "link", "set", "eth0", "up"},
             {"ip", "link", "set", "peer0", "up"},
             {"ip", "addr", "add", "10.244.0.5/24", "dev", "eth0"},
             {"ip", "route", "add", "default", "dev", "eth0"}}) {
      auto r = exec(argv);
      if (!r || r->exit_code != 0) {
        return fmt::format("'{}' failed: {}", fmt::join(argv, " "), r ? r->err : r.error().message);
      }
    }
    return {};
  }

  Result<CommandOutput> exec(std::vector<std::string> argv, const std::string& input = {}) {
    argv.insert(argv.begin(), {"ip", "netns", "exec", name_});
    return runCommand(argv, input);
  }

  std::string path() const { return "/var/run/netns/" + name_; }

 private:
  std::string name_;
  bool created_ = false;
};

struct BackendCase {
  IptablesBackend backend;
  const char* restore;
  const char* name;
};

class TraceE2eTest : public ::testing::TestWithParam<BackendCase> {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: creates a network namespace";
    if (!programInPath(GetParam().restore)) {
      GTEST_SKIP() << GetParam().restore << " is not installed";
    }
    std::string failed = ns_.create();
    if (!failed.empty()) GTEST_SKIP() << "cannot build the test netns: " << failed;
  }

  ScratchNetns ns_;
};

TEST_P(TraceE2eTest, KubeProxyServiceSplitsFiftyFifty) {
  auto loaded = ns_.exec({GetParam().restore}, readFixture("kube_proxy_seed.save"));
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  if (loaded->exit_code != 0) {
    GTEST_SKIP() << GetParam().restore << " cannot load the nat table here: " << loaded->err;
  }

  // Both the explicit backend and auto-detection, which must pick the backend holding the rules.
  for (IptablesBackend requested : {GetParam().backend, IptablesBackend::kAuto}) {
    Result<TraceReport> report = makeError("not run");
    auto ran = runInNetns(ns_.path(), [&]() -> Result<void> {
      report = traceCurrentNetns(
          TraceRequest{*SocketAddress::parse("10.1.122.241:9999"), 0, 0, requested});
      return {};
    });
    ASSERT_TRUE(ran.ok()) << ran.error().message;
    ASSERT_TRUE(report.ok()) << report.error().message;
    EXPECT_EQ(report->backend, GetParam().name);
    ASSERT_TRUE(report->packet.source.has_value()) << renderTrace(*report);
    EXPECT_EQ(report->packet.source->toString(), "10.244.0.5");
    EXPECT_EQ(report->packet.out_interface.value_or(""), "eth0");

    const auto& outcomes = report->result.outcomes;
    ASSERT_EQ(outcomes.size(), 2u) << renderTrace(*report);
    EXPECT_EQ(outcomes[0].kind, OutcomeKind::kDnat);
    EXPECT_EQ(outcomes[0].destination->toString(), "10.244.1.168:80");
    EXPECT_DOUBLE_EQ(outcomes[0].probability, 0.5);
    EXPECT_EQ(outcomes[1].kind, OutcomeKind::kDnat);
    EXPECT_EQ(outcomes[1].destination->toString(), "10.244.2.74:80");
    EXPECT_DOUBLE_EQ(outcomes[1].probability, 0.5);
    const std::string text = renderTrace(*report);
    EXPECT_NE(text.find("→ DNAT 10.244.1.168:80 via KUBE-SEP-2OWQ4WZBKQXM6JKW, 50.00%"),
              std::string::npos)
        << text;

    // The node port on the pod's own address: addrtype LOCAL read from the kernel.
    Result<TraceReport> nodeport = makeError("not run");
    ASSERT_TRUE(runInNetns(ns_.path(), [&]() -> Result<void> {
                  nodeport = traceCurrentNetns(
                      TraceRequest{*SocketAddress::parse("10.244.0.5:30999"), 0, 0, requested});
                  return {};
                }).ok());
    ASSERT_TRUE(nodeport.ok()) << nodeport.error().message;
    ASSERT_EQ(nodeport->result.outcomes.size(), 2u) << renderTrace(*nodeport);
    EXPECT_EQ(nodeport->result.outcomes[0].mark, 0x4000u);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Backends, TraceE2eTest,
    ::testing::Values(BackendCase{IptablesBackend::kNft, "iptables-nft-restore", "iptables-nft"},
                      BackendCase{IptablesBackend::kLegacy, "iptables-legacy-restore",
                                  "iptables-legacy"}),
    [](const auto& info) {
      return std::string(info.param.backend == IptablesBackend::kNft ? "nft" : "legacy");
    });

// Remora installed with nft while kube-proxy-style rules sit in legacy: dump follows detection
// (legacy holds rules) and warns that Remora's chains live in the other backend.
TEST(DumpE2eTest, WarnsAboutRemoraChainsInTheOtherBackend) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: creates a network namespace";
  for (const char* tool : {"iptables-nft-restore", "iptables-legacy-restore"}) {
    if (!programInPath(tool)) GTEST_SKIP() << tool << " is not installed";
  }
  ScratchNetns ns;
  std::string failed = ns.create();
  if (!failed.empty()) GTEST_SKIP() << "cannot build the test netns: " << failed;
  auto legacy = ns.exec({"iptables-legacy-restore"}, readFixture("kube_proxy_seed.save"));
  ASSERT_TRUE(legacy.ok());
  if (legacy->exit_code != 0)
    GTEST_SKIP() << "iptables-legacy cannot load nat here: " << legacy->err;
  auto remora = ns.exec({"iptables-nft-restore", "--noflush"},
                        renderRestore(planFamily(InterceptOptions{}, Family::kIpv4), {}));
  ASSERT_TRUE(remora.ok());
  ASSERT_EQ(remora->exit_code, 0) << remora->err;

  Result<DumpReport> report = makeError("not run");
  ASSERT_TRUE(runInNetns(ns.path(), [&]() -> Result<void> {
                report = dumpCurrentNetns(IptablesBackend::kAuto);
                return {};
              }).ok());
  ASSERT_TRUE(report.ok()) << report.error().message;
  ASSERT_FALSE(report->families.empty());
  const auto& v4 = report->families[0];
  EXPECT_EQ(v4.backend, "iptables-legacy");
  EXPECT_FALSE(v4.installed);
  ASSERT_EQ(report->warnings.size(), 1u) << renderDump(*report);
  EXPECT_NE(report->warnings[0].find("mixed backends: Remora's chains also exist in iptables-nft"),
            std::string::npos)
      << report->warnings[0];

  // Asked for nft explicitly, the same netns shows Remora installed.
  Result<DumpReport> nft = makeError("not run");
  ASSERT_TRUE(runInNetns(ns.path(), [&]() -> Result<void> {
                nft = dumpCurrentNetns(IptablesBackend::kNft);
                return {};
              }).ok());
  ASSERT_TRUE(nft.ok()) << nft.error().message;
  EXPECT_TRUE(nft->families[0].installed);
  EXPECT_NE(renderDump(*nft).find("#1 all TCP leaving the pod enters REMORA_OUTPUT  [0 packets"),
            std::string::npos)
      << renderDump(*nft);
}

}  // namespace
}  // namespace remora::intercept
