// The fixture base remora-init's e2e tests share (init_e2e_test.cc for iptables,
// init_nft_e2e_test.cc for nftables): the seed world's pods with remora-probe servers standing in
// for the proxy's listeners and the app, each saying who it is and what SO_ORIGINAL_DST is.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "netns_world.h"

namespace remora::test {

inline constexpr const char* kInitClientIp = "10.244.0.20";
inline constexpr const char* kInitVip = "10.1.122.241:9999";
inline constexpr const char* kInitVip6 = "[fd00:1::241]:9999";

// TestBase: ::testing::Test or ::testing::TestWithParam<...>.
template <typename TestBase>
class InitWorld : public TestBase {
 protected:
  // Adds front-tomcat (IPv4 and IPv6), bill-service-v1, bill-service-v2 when `with_v2`, and a
  // client pod, and starts the servers: the proxy's two listeners (15001 on both families,
  // 15006) and the app (8080) in front, bill-v1 on v1:80, bill-v2 on v2:80 and :81.
  void buildWorld(bool with_v2) {
    world_ = std::make_unique<NetnsWorld>();
    front_ = *world_->addPod("front-tomcat", kFrontIp, kFrontIp6);
    v1_ = *world_->addPod("bill-service-v1", kBillV1);
    if (with_v2) v2_ = *world_->addPod("bill-service-v2", kBillV2);
    client_ = *world_->addPod("client", kInitClientIp);
    servers_.push_back(world_->serveProbe(front_, "0.0.0.0:15001", "outbound"));
    servers_.push_back(world_->serveProbe(front_, "[::]:15001", "outbound6"));
    servers_.push_back(world_->serveProbe(front_, "0.0.0.0:15006", "inbound"));
    servers_.push_back(world_->serveProbe(front_, "0.0.0.0:8080", "app"));
    servers_.push_back(world_->serveProbe(v1_, "0.0.0.0:80", "bill-v1"));
    if (with_v2) {
      servers_.push_back(world_->serveProbe(v2_, "0.0.0.0:80", "bill-v2"));
      servers_.push_back(world_->serveProbe(v2_, "0.0.0.0:81", "bill-v2-81"));
    }
  }

  // Runs argv in `pod` (front when null); a command that cannot start fails the test.
  CommandOutput run(const std::vector<std::string>& argv, const std::string& input = {},
                    const Pod* pod = nullptr) {
    auto out = world_->exec(pod ? *pod : front_, argv, input);
    EXPECT_TRUE(out.ok());
    return out ? *out : CommandOutput{};
  }

  // Connects from `pod` (as uid/gid when given) and returns what the server said, or "FAILED".
  std::string connect(const Pod& pod, const std::string& target, uint32_t uid = 0,
                      const std::string& bind = {}) {
    std::vector<std::string> argv = {probePath(), "connect", target, "--timeout-ms", "1500"};
    if (!bind.empty()) argv.insert(argv.end(), {"--bind", bind});
    auto out = uid ? world_->execAs(pod, uid, uid, argv) : world_->exec(pod, argv);
    if (!out || out->exit_code != 0) return "FAILED";
    return out->out;
  }

  std::unique_ptr<NetnsWorld> world_;
  Pod front_, v1_, v2_, client_;
  std::vector<std::unique_ptr<Process>> servers_;
};

}  // namespace remora::test
