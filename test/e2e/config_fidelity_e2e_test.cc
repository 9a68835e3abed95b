// Config fidelity end to end: Bookinfo-shaped YAML (test/fixtures/bookinfo) through
// `remora-proxy check` and a real proxy in the test's own namespaces. The reviews pods are
// remora-probe servers on the seed world's pod addresses.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "e2e_util.h"
#include "netns_world.h"

namespace remora::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* kV1Reply = "reviews-v1";
constexpr const char* kV2Reply = "reviews-v2";
constexpr uint32_t kProxyUid = 1337;

std::string fixture(const std::string& name) {
  return readWholeFile(std::string(REMORA_FIXTURES_DIR) + "/" + name);
}

class ConfigFidelityE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "e2e tests need root (network namespaces, iptables)";
    dir_ = makeScratchDir("remora-fidelity-e2e");
    ASSERT_FALSE(dir_.empty());
  }

  void TearDown() override {
    proxy_.reset();
    servers_.clear();
    world_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::string write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    chmod(path.c_str(), 0644);
    return path;
  }

  // Runs `remora-proxy check` with `args` on the host; returns {exit code, stdout}.
  std::pair<int, std::string> check(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {binaryPath("remora-proxy"), "check"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto out = runCommand(argv);
    if (!out) return {-1, out.error().message};
    if (!out->err.empty()) std::cerr << out->err;
    return {out->exit_code, out->out};
  }

  std::string curl(const std::string& url) {
    auto out = world_->exec(front_, {"curl", "-sS", "-m", "3", url});
    return out && out->exit_code == 0 ? out->out : "FAILED";
  }

  std::string dir_;
  std::unique_ptr<NetnsWorld> world_;
  Pod front_;
  std::vector<std::unique_ptr<Process>> servers_;
  std::unique_ptr<Process> proxy_;
};

TEST_F(ConfigFidelityE2e, CheckPrintsTheTableAndEveryFinding) {
  std::string config = write(
      "mesh.yaml", fixture("bookinfo/bookinfo.yaml") + "---\n" + fixture("bookinfo/routing.yaml"));
  auto [code, out] = check({"--config", config});
  EXPECT_EQ(code, 0) << out;
  // The HTTP port's 80/20 split, and the tcp-admin port's own TCP route.
  EXPECT_NE(out.find("reviews.bookinfo port 9080 (HTTP, named http): 10.1.122.241"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("route  80.000%  v1"), std::string::npos) << out;
  EXPECT_NE(out.find("route  20.000%  v2"), std::string::npos) << out;
  EXPECT_NE(out.find("reviews.bookinfo port 9999 (TCP, named tcp-admin)"), std::string::npos)
      << out;
  EXPECT_NE(out.find("subset v1 (ROUND_ROBIN): 10.244.1.168:80 (bookinfo/reviews-v1-"),
            std::string::npos)
      << out;
  // The per-request routes: jason to v2, the rest 80/20 with a 10% abort.
  EXPECT_NE(out.find("http spec.http[0]: headers end-user exact jason -> v2 100%"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("http spec.http[1]: every request -> v1 80% v2 20% abort 500 10%"),
            std::string::npos)
      << out;
  // tls.mode ISTIO_MUTUAL is applied since the mTLS issue (docs/TLS.md): no warning is left.
  EXPECT_EQ(out.find("TLS origination is not applied yet"), std::string::npos) << out;
  EXPECT_NE(out.find("skipped 1 object of kind Deployment (apps/v1)"), std::string::npos) << out;
  EXPECT_NE(out.find("0 errors, 0 warnings"), std::string::npos) << out;

  EXPECT_EQ(check({"--config", config, "--strict"}).first, 0);
  auto [json_code, json] = check({"--config", config, "--json"});
  EXPECT_EQ(json_code, 0);
  EXPECT_EQ(json.find("\"severity\": \"warning\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"severity\": \"info\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"httpRoutes\""), std::string::npos) << json;

  std::string typos = write(
      "typos.yaml", fixture("bookinfo/bookinfo.yaml") + "---\n" + fixture("bookinfo/typos.yaml"));
  auto [typo_code, typo_out] = check({"--config", typos, "--strict"});
  EXPECT_EQ(typo_code, 1) << typo_out;
  EXPECT_NE(typo_out.find("spec.subsets[0].lables"), std::string::npos) << typo_out;
  EXPECT_NE(typo_out.find("did you mean 'labels'?"), std::string::npos) << typo_out;
  EXPECT_NE(typo_out.find("did you mean 'http'?"), std::string::npos) << typo_out;

  std::string bad = write("bad.yaml", fixture("bookinfo/bookinfo.yaml") + R"(---
apiVersion: v1
kind: Service
metadata: {name: broken, namespace: bookinfo}
spec:
  clusterIP: 10.1.0.99
  ports: [{port: 80, targetPort: 0x50}]
)");
  auto [bad_code, bad_out] = check({"--config", bad});
  EXPECT_EQ(bad_code, 2) << bad_out;
  EXPECT_NE(bad_out.find("error: document 3 (Service bookinfo/broken), spec.ports[0].targetPort"),
            std::string::npos)
      << bad_out;
  // The rest still loads.
  EXPECT_NE(bad_out.find("reviews.bookinfo port 9080"), std::string::npos) << bad_out;

  auto [missing_code, missing_out] = check({"--config", dir_ + "/nope.yaml"});
  EXPECT_EQ(missing_code, 2);
  EXPECT_NE(missing_out.find("nope.yaml"), std::string::npos) << missing_out;
}

TEST_F(ConfigFidelityE2e, BookinfoSplitsExactly80To20OverRealConnections) {
  world_ = std::make_unique<NetnsWorld>();
  front_ = *world_->addPod("front", kFrontIp);
  Pod v1 = *world_->addPod("reviews-v1", kBillV1);
  Pod v2 = *world_->addPod("reviews-v2", kBillV2);
  servers_.push_back(world_->serveProbe(v1, "0.0.0.0:80", kV1Reply, true));
  servers_.push_back(world_->serveProbe(v2, "0.0.0.0:80", kV2Reply, true));
  ASSERT_TRUE(installCapture(*world_, front_));
  std::string config = write(
      "mesh.yaml", fixture("bookinfo/bookinfo.yaml") + "---\n" + fixture("bookinfo/routing.yaml"));
  proxy_ =
      world_->spawn(front_, {binaryPath("remora-proxy"), "--config", config}, kProxyUid, kProxyUid);
  ASSERT_TRUE(proxy_->waitForLine("remora-proxy started", 10000)) << proxy_->output();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (curl("http://127.0.0.1:15000/ready") != "LIVE\n" &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(curl("http://127.0.0.1:15000/ready"), "LIVE\n") << proxy_->output();

  auto out = world_->exec(
      front_,
      {"bash", "-c", "for i in $(seq 100); do curl -sS -m 3 http://10.1.122.241:9080/; done"});
  ASSERT_TRUE(out.ok());
  // Per request (L7): the route's exact 10% abort takes 10 of the 100 requests before routing,
  // and the other 90 split 80/20 as exactly as 90 allow.
  EXPECT_EQ(countOf(out->out, "fault filter abort"), 10u) << out->out << out->err;
  EXPECT_EQ(countOf(out->out, kV1Reply), 72u) << out->out << out->err;
  EXPECT_EQ(countOf(out->out, kV2Reply), 18u) << out->out << out->err;
  // The TCP route on the tcp-admin port sends everything to v2.
  out = world_->exec(
      front_,
      {"bash", "-c", "for i in $(seq 10); do curl -sS -m 3 http://10.1.122.241:9999/; done"});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(countOf(out->out, kV2Reply), 10u) << out->out << out->err;

  // The running proxy shows the same findings in /config_dump, and counts them.
  std::string dump = curl("http://127.0.0.1:15000/config_dump");
  EXPECT_NE(dump.find("skipped 1 object of kind Deployment"), std::string::npos) << dump;
  std::string metrics = curl("http://127.0.0.1:15000/stats/prometheus");
  EXPECT_NE(metrics.find("remora_config_findings{severity=\"info\"}"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("remora_config_findings{severity=\"error\"} 0"), std::string::npos)
      << metrics;
}

}  // namespace
}  // namespace remora::test
