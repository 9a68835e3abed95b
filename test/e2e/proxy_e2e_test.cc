// remora-proxy in the seed scenario, inside namespaces of the test's own (DESIGN.md "Test
// topology rules"): the front pod gets remora-init's rules and the proxy running as uid 1337
// with no capabilities; backends are remora-probe servers on the seed's pod IPs.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "e2e_util.h"
#include "netns_world.h"

namespace remora::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* kOtherIp = "10.244.3.3";
constexpr const char* kClientIp = "10.244.0.20";
constexpr const char* kVipUrl = "http://bill-service:9999/";
constexpr const char* kV1Reply = "this is bill-service-v1";
constexpr const char* kV2Reply = "hello, this is bill-service-v2";
constexpr uint32_t kProxyUid = 1337;

class ProxyE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "e2e tests need root (network namespaces, iptables)";
    world_ = std::make_unique<NetnsWorld>();
    front_ = *world_->addPod("front-tomcat", kFrontIp, kFrontIp6);
    v1_ = *world_->addPod("bill-service-v1", kBillV1);
    v2_ = *world_->addPod("bill-service-v2", kBillV2);
    other_ = *world_->addPod("other", kOtherIp);
    // The config lives in a directory uid 1337 can read; the test replaces the file by rename.
    dir_ = makeScratchDir("remora-proxy-e2e");
    ASSERT_FALSE(dir_.empty());
    config_ = dir_ + "/mesh.yaml";
    // `curl http://bill-service:9999/` resolves through the pod netns' own hosts file.
    hosts_dir_ = "/etc/netns/" + front_.netns;
    fs::create_directories(hosts_dir_);
    std::ofstream(hosts_dir_ + "/hosts") << "127.0.0.1 localhost\n10.1.122.241 bill-service\n";
    ASSERT_TRUE(installCapture(*world_, front_, captureFlags()));
  }

  // remora-init install's flags for this fixture: iptables mode.
  virtual std::vector<std::string> captureFlags() const { return {}; }

  void TearDown() override {
    proxy_.reset();
    servers_.clear();
    world_.reset();
    if (!hosts_dir_.empty()) fs::remove_all(hosts_dir_);
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Replaces the config atomically, as an editor or a ConfigMap update does.
  void writeConfig(const std::string& text) { replaceFile(config_, text); }

  void serveBackends(bool v2_up = true) {
    servers_.push_back(world_->serveProbe(v1_, "0.0.0.0:80", kV1Reply, true));
    if (v2_up) servers_.push_back(world_->serveProbe(v2_, "0.0.0.0:80", kV2Reply, true));
    servers_.push_back(world_->serveProbe(other_, "0.0.0.0:8080", "other-service", true));
  }

  void startProxy(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {
        binaryPath("remora-proxy"), "--config", config_, "--log-level", "debug", "--access-log"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    proxy_ = world_->spawn(front_, argv, kProxyUid, kProxyUid);
    ASSERT_TRUE(proxy_->waitForLine("remora-proxy started", 10000)) << proxy_->output();
    ASSERT_TRUE(waitFor([&] { return curl(front_, "http://127.0.0.1:15000/ready") == "LIVE\n"; }))
        << proxy_->output();
  }

  // curl from the pod as root (an app: its traffic is captured). "FAILED" when curl fails.
  std::string curl(const Pod& pod, const std::string& url,
                   const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {"curl", "-sS", "-m", "3"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(url);
    auto out = world_->exec(pod, argv);
    if (!out || out->exit_code != 0) return "FAILED";
    return out->out;
  }

  // `n` sequential requests from the front pod, in one process.
  // `v1 + v2` requests to the ClusterIP, which must land exactly v1 and v2 times on the subsets.
  void expectSplit(size_t v1, size_t v2) {
    const std::string out = requests(static_cast<int>(v1 + v2));
    EXPECT_EQ(countOf(out, kV1Reply), v1) << out;
    EXPECT_EQ(countOf(out, kV2Reply), v2) << out;
  }

  std::string requests(int n, const std::string& url = kVipUrl) {
    auto out = world_->exec(
        front_,
        {"bash", "-c", fmt::format("for i in $(seq {}); do curl -sS -m 3 {}; done", n, url)});
    return out ? out->out + out->err : "FAILED";
  }

  std::string configDump() { return curl(front_, "http://127.0.0.1:15000/config_dump"); }
  std::string metrics() { return curl(front_, "http://127.0.0.1:15000/stats/prometheus"); }

  // The generation /config_dump reports, or -1.
  int generation() {
    std::smatch m;
    std::string dump = configDump();
    if (std::regex_search(dump, m, std::regex("\"generation\": ([0-9]+)"))) return std::stoi(m[1]);
    return -1;
  }

  std::unique_ptr<NetnsWorld> world_;
  Pod front_, v1_, v2_, other_;
  std::string dir_, config_, hosts_dir_;
  std::vector<std::unique_ptr<Process>> servers_;
  std::unique_ptr<Process> proxy_;
};

TEST_F(ProxyE2e, SeedScenarioSplitsExactly90To10ThenFollowsALiveEditTo50To50) {
  serveBackends();
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy();
  expectSplit(90, 10);

  writeConfig(seedConfig("istio-50-50.yaml"));
  ASSERT_TRUE(waitFor([&] { return generation() == 2; })) << configDump() << proxy_->output();
  expectSplit(50, 50);

  std::string m = metrics();
  EXPECT_NE(m.find("remora_tcp_connections_opened_total{destination_service=\"bill-service.istio-"
                   "demo\",destination_subset=\"v1\",destination_endpoint=\"10.244.1.168:80\"} "
                   "140"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("remora_config_reloads_total 2"), std::string::npos) << m;
  EXPECT_NE(curl(front_, "http://127.0.0.1:15000/clusters").find("10.244.2.74:80::cx_total::60"),
            std::string::npos);
  EXPECT_EQ(proxy_->stop(SIGTERM), 0);
}

// The same world with native nftables rules (issue 13): one `inet remora` table, no iptables rule.
class ProxyE2eNftables : public ProxyE2e {
 protected:
  std::vector<std::string> captureFlags() const override { return {"--mode", "nftables"}; }
};

TEST_F(ProxyE2eNftables, SeedScenarioSplitsExactly90To10AndDumpTraceAndUninstallAgree) {
  auto saved = world_->exec(front_, {"iptables-save"});
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(saved->out.find("REMORA"), std::string::npos) << saved->out;
  serveBackends();
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy();
  expectSplit(90, 10);

  const std::string init = binaryPath("remora-init");
  auto dump = world_->exec(front_, {init, "dump"});
  ASSERT_TRUE(dump.ok());
  EXPECT_NE(dump->out.find("inet remora"), std::string::npos) << dump->out << dump->err;
  auto trace = world_->exec(front_, {init, "dump", "--trace", "10.1.122.241:9999", "--json"});
  ASSERT_TRUE(trace.ok());
  EXPECT_NE(trace->out.find("15001"), std::string::npos) << trace->out << trace->err;
  EXPECT_EQ(proxy_->stop(SIGTERM), 0);

  auto removed = world_->exec(front_, {init, "uninstall"});
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(removed->exit_code, 0) << removed->out << removed->err;
  auto ruleset = world_->exec(front_, {"nft", "list", "ruleset"});
  ASSERT_TRUE(ruleset.ok());
  EXPECT_EQ(ruleset->out.find("remora"), std::string::npos) << ruleset->out;
}

TEST_F(ProxyE2e, SighupReloadsToo) {
  serveBackends();
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy();
  ASSERT_EQ(generation(), 1);
  // A write that inotify does not report to us (a file in another directory, then SIGHUP).
  ::kill(proxy_->pid(), SIGHUP);
  // setpriv execs the proxy in place, so the pid is the proxy's own.
  EXPECT_TRUE(waitFor([&] { return generation() == 2; })) << proxy_->output();
}

TEST_F(ProxyE2e, UnknownDestinationPassesThroughToTheOriginalAddress) {
  serveBackends();
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy();
  std::string url = fmt::format("http://{}:8080/", kOtherIp);
  EXPECT_EQ(curl(front_, url), "other-service\n");
  std::string m = metrics();
  EXPECT_NE(m.find("remora_tcp_passthrough_total 1"), std::string::npos) << m;
  EXPECT_TRUE(proxy_->waitForLine("service=PassthroughCluster", 2000)) << proxy_->output();
}

TEST_F(ProxyE2e, RegistryOnlyRefusesUnknownDestinationsButRoutesServices) {
  serveBackends();
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy({"--outbound-traffic-policy", "REGISTRY_ONLY"});
  EXPECT_EQ(curl(front_, fmt::format("http://{}:8080/", kOtherIp)), "FAILED");
  EXPECT_NE(curl(front_, kVipUrl).find("bill-service"), std::string::npos);
  std::string m = metrics();
  EXPECT_NE(m.find("remora_tcp_refused_total{reason=\"registry_only\"} 1"), std::string::npos) << m;
}

TEST_F(ProxyE2e, FallsBackToAnotherEndpointWhenOneIsDown) {
  serveBackends(/*v2_up=*/false);
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy();
  std::string out = requests(20);
  EXPECT_EQ(countOf(out, kV1Reply), 20u) << out;
  std::string m = metrics();
  EXPECT_NE(m.find("remora_tcp_connect_failures_total{destination_service=\"bill-service.istio-"
                   "demo\",destination_subset=\"v2\",destination_endpoint=\"10.244.2.74:80\"} 2"),
            std::string::npos)
      << m;
}

TEST_F(ProxyE2e, BadReloadKeepsTheLastGoodConfigAndReportsTheError) {
  serveBackends();
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy();
  writeConfig(seedConfig("istio-90-10.yaml") + "\n---\nkind: VirtualService\nspec: [unclosed\n");
  ASSERT_TRUE(waitFor([&] {
    return metrics().find("remora_config_reload_failures_total 1") != std::string::npos;
  })) << proxy_->output();
  std::string dump = configDump();
  EXPECT_NE(dump.find("\"ok\": false"), std::string::npos) << dump;
  EXPECT_EQ(generation(), 1);
  expectSplit(90, 10);
}

TEST_F(ProxyE2e, SigtermDrainsWithoutDroppingAnOpenConnection) {
  serveBackends();
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy({"--drain-timeout", "10s"});
  // An app connection opened before SIGTERM sends its request only after it.
  auto client =
      world_->spawn(front_, {"bash", "-c",
                             "exec 3<>/dev/tcp/10.1.122.241/9999 && echo connected && sleep 1.5 && "
                             "printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"});
  ASSERT_TRUE(client->waitForLine("connected"));
  ::kill(proxy_->pid(), SIGTERM);
  // /ready turns false at once; the held connection still completes.
  EXPECT_TRUE(
      waitFor([&] { return curl(front_, "http://127.0.0.1:15000/ready") == "NOT READY\n"; }, 1000));
  EXPECT_TRUE(client->waitForLine("bill-service", 5000)) << client->output();
  EXPECT_EQ(client->stop(0, 3000).value_or(-1), 0);  // signal 0: wait for its own exit
  auto code = proxy_->stop(0, 5000);
  EXPECT_EQ(code.value_or(-1), 0) << proxy_->output();
  EXPECT_NE(proxy_->output().find("draining"), std::string::npos);
}

TEST_F(ProxyE2e, InboundReachesTheAppFrom127_0_0_6) {
  writeConfig(seedConfig("istio-90-10.yaml"));
  servers_.push_back(world_->serveProbe(front_, "0.0.0.0:8080", "front-app", false));
  auto client = *world_->addPod("client", kClientIp);
  startProxy();
  auto out = world_->exec(client, {probePath(), "connect", std::string(kFrontIp) + ":8080"});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->exit_code, 0) << out->err;
  // The app sees the proxy's inbound passthrough source, not the client.
  EXPECT_NE(out->out.find("front-app"), std::string::npos) << out->out;
  EXPECT_NE(out->out.find("peer=127.0.0.6:"), std::string::npos) << out->out;
  std::string m = metrics();
  EXPECT_NE(m.find("destination_service=\"InboundPassthroughCluster\",destination_subset=\"\","
                   "destination_endpoint=\"10.244.0.10:8080\"} 1"),
            std::string::npos)
      << m;
}

TEST_F(ProxyE2e, FollowsAConfigMapStyleDataSymlinkSwap) {
  serveBackends();
  // A ConfigMap volume: mesh.yaml -> ..data/mesh.yaml, ..data -> ..<timestamp>/; an update
  // writes a new timestamped directory and renames a new ..data symlink over the old one.
  fs::create_directory(dir_ + "/..2026_01");
  std::ofstream(dir_ + "/..2026_01/mesh.yaml") << seedConfig("istio-90-10.yaml");
  fs::create_directory_symlink("..2026_01", dir_ + "/..data");
  fs::create_symlink("..data/mesh.yaml", config_);
  chmod((dir_ + "/..2026_01").c_str(), 0755);
  chmod((dir_ + "/..2026_01/mesh.yaml").c_str(), 0644);
  startProxy();
  std::string out = requests(100);
  EXPECT_EQ(countOf(out, kV1Reply), 90u) << out;

  fs::create_directory(dir_ + "/..2026_02");
  std::ofstream(dir_ + "/..2026_02/mesh.yaml") << seedConfig("istio-50-50.yaml");
  chmod((dir_ + "/..2026_02").c_str(), 0755);
  chmod((dir_ + "/..2026_02/mesh.yaml").c_str(), 0644);
  fs::create_directory_symlink("..2026_02", dir_ + "/..data_tmp");
  fs::rename(dir_ + "/..data_tmp", dir_ + "/..data");
  ASSERT_TRUE(waitFor([&] { return generation() == 2; })) << configDump() << proxy_->output();
  expectSplit(50, 50);
}

TEST_F(ProxyE2e, NotReadyUntilTheFirstGoodConfig) {
  serveBackends();
  writeConfig("apiVersion: v1\nkind: Service\nmetadata: {name: broken\n");
  std::vector<std::string> argv = {binaryPath("remora-proxy"), "--config", config_};
  proxy_ = world_->spawn(front_, argv, kProxyUid, kProxyUid);
  ASSERT_TRUE(proxy_->waitForLine("remora-proxy started", 10000)) << proxy_->output();
  auto code = world_->exec(front_, {"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                    "http://127.0.0.1:15000/ready"});
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(code->out, "503");
  std::string dump = configDump();
  EXPECT_NE(dump.find("\"ok\": false"), std::string::npos) << dump;
  EXPECT_NE(dump.find("\"route_table\": null"), std::string::npos) << dump;

  writeConfig(seedConfig("istio-90-10.yaml"));
  EXPECT_TRUE(waitFor([&] { return curl(front_, "http://127.0.0.1:15000/ready") == "LIVE\n"; }))
      << proxy_->output();
  EXPECT_NE(curl(front_, kVipUrl).find("bill-service"), std::string::npos);
}

TEST_F(ProxyE2e, Ipv6PassthroughUsesIp6tOriginalDst) {
  auto other6 = *world_->addPod("other6", "10.244.3.6", "fd00:244::36");
  servers_.push_back(world_->serveProbe(other6, "[::]:8080", "other-v6", true));
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy();
  EXPECT_EQ(curl(front_, "http://[fd00:244::36]:8080/"), "other-v6\n");
  EXPECT_TRUE(proxy_->waitForLine("original_dst=[fd00:244::36]:8080", 2000)) << proxy_->output();
}

TEST_F(ProxyE2e, SeveralWorkersShareTheListenersWithReusePort) {
  serveBackends();
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy({"--concurrency", "2"});
  std::string out = requests(40);
  // Each worker keeps its own exact sequence; together every request is answered.
  EXPECT_EQ(countOf(out, kV1Reply) + countOf(out, kV2Reply), 40u) << out;
  EXPECT_NE(metrics().find("remora_workers 2"), std::string::npos);
  EXPECT_EQ(proxy_->stop(SIGTERM), 0);
}

TEST_F(ProxyE2e, Ipv6InboundReachesTheAppFromColonColon6) {
  writeConfig(seedConfig("istio-90-10.yaml"));
  // Like Istio's init, the pod needs ::6 on lo for replies to the passthrough source to stay
  // local. Added here if remora-init did not.
  auto lo = world_->exec(front_, {"ip", "-6", "addr", "show", "dev", "lo"});
  if (lo && lo->out.find("::6/128") == std::string::npos) {
    ASSERT_EQ(world_->exec(front_, {"ip", "-6", "addr", "add", "::6/128", "dev", "lo"})->exit_code,
              0);
  }
  servers_.push_back(world_->serveProbe(front_, "[::]:8080", "front-app6", false));
  auto client = *world_->addPod("client6", kClientIp, "fd00:244::20");
  startProxy();
  auto out =
      world_->exec(client, {probePath(), "connect", std::string("[") + kFrontIp6 + "]:8080"});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->exit_code, 0) << out->err;
  EXPECT_NE(out->out.find("front-app6"), std::string::npos) << out->out;
  EXPECT_NE(out->out.find("peer=[::6]:"), std::string::npos) << out->out;
}

}  // namespace
}  // namespace remora::test
