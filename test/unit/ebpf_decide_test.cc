// The eBPF mode's pure parts: options -> per-netns settings, and the decision function the
// connect programs run (bpf/remora_decide.h, compiled here exactly as into the BPF object).
#include <gtest/gtest.h>

#include <cstring>

#include "intercept/cli.h"
#include "intercept/ebpf_applier.h"
#include "intercept/mode.h"
#include "remora_decide.h"

namespace remora::intercept {
namespace {

remora_netns_settings settingsFor(const std::vector<std::pair<std::string, std::string>>& flags,
                                  bool ipv6 = true) {
  InterceptOptions o;
  for (const auto& [flag, value] : flags) {
    auto set = setOption(o, flag, value);
    EXPECT_TRUE(set.ok()) << flag;
  }
  auto s = netnsSettings(o, ipv6);
  EXPECT_TRUE(s.ok()) << (s ? "" : s.error().message);
  return s ? *s : remora_netns_settings{};
}

remora_verdict decide(const remora_netns_settings& s, const std::string& dst, uint32_t uid = 0,
                      uint32_t gid = 0) {
  auto sa = SocketAddress::parse(dst);
  EXPECT_TRUE(sa.ok()) << dst;
  uint32_t addr[4] = {};
  std::memcpy(addr, sa->ip.bytes.data(), sa->ip.size());
  return remora_decide_outbound(&s,
                                sa->ip.family == Family::kIpv4 ? REMORA_AF_INET : REMORA_AF_INET6,
                                addr, sa->port, uid, gid);
}

TEST(EbpfDecide, DefaultsRedirectEverythingButTheProxyAndLoopback) {
  auto s = settingsFor({});
  EXPECT_EQ(s.outbound_port, 15001);
  EXPECT_EQ(decide(s, "10.1.122.241:9999"), REMORA_V_REDIRECT);
  EXPECT_EQ(decide(s, "[fd00:1::241]:9999"), REMORA_V_REDIRECT);
  EXPECT_EQ(decide(s, "10.1.122.241:9999", 1337, 0), REMORA_V_BYPASS_UID);
  EXPECT_EQ(decide(s, "10.1.122.241:9999", 1000, 1337), REMORA_V_BYPASS_GID);
  EXPECT_EQ(decide(s, "127.0.0.1:8080"), REMORA_V_LOOPBACK);
  EXPECT_EQ(decide(s, "127.9.9.9:8080"), REMORA_V_LOOPBACK);
  EXPECT_EQ(decide(s, "[::1]:8080"), REMORA_V_LOOPBACK);
}

TEST(EbpfDecide, ExclusionsAndInclusionsFollowIptablesOrder) {
  auto s = settingsFor({{"exclude-outbound-ports", "22,8000-8080"},
                        {"exclude-outbound-cidrs", "10.96.0.0/12,fd00:9::/32"},
                        {"include-outbound-cidrs", "10.0.0.0/8,fd00::/16"}});
  EXPECT_EQ(decide(s, "10.1.2.3:22"), REMORA_V_EXCLUDED_PORT);
  EXPECT_EQ(decide(s, "10.1.2.3:8000"), REMORA_V_EXCLUDED_PORT);
  EXPECT_EQ(decide(s, "10.1.2.3:8081"), REMORA_V_REDIRECT);
  // An excluded port wins over the proxy uid, as in REMORA_OUTPUT.
  EXPECT_EQ(decide(s, "10.1.2.3:22", 1337, 1337), REMORA_V_EXCLUDED_PORT);
  EXPECT_EQ(decide(s, "10.100.0.1:80"), REMORA_V_EXCLUDED_CIDR);
  EXPECT_EQ(decide(s, "10.112.0.1:80"), REMORA_V_REDIRECT);  // just past 10.96/12
  EXPECT_EQ(decide(s, "[fd00:9:1::1]:80"), REMORA_V_EXCLUDED_CIDR);
  EXPECT_EQ(decide(s, "[fd00:8::1]:80"), REMORA_V_REDIRECT);
  EXPECT_EQ(decide(s, "192.168.1.1:80"), REMORA_V_NOT_INCLUDED);
  EXPECT_EQ(decide(s, "[fd01::1]:80"), REMORA_V_NOT_INCLUDED);
}

TEST(EbpfDecide, PrefixEdgesAndIpv6Off) {
  auto s = settingsFor({{"include-outbound-cidrs", "0.0.0.0/0,10.1.2.3/32"},
                        {"exclude-outbound-cidrs", "fd00::1/128,fd00:1::/33"}});
  EXPECT_EQ(decide(s, "1.2.3.4:1"), REMORA_V_REDIRECT);
  EXPECT_EQ(decide(s, "[fd00::1]:80"), REMORA_V_EXCLUDED_CIDR);
  EXPECT_EQ(decide(s, "[fd00::2]:80"), REMORA_V_NOT_INCLUDED);
  EXPECT_EQ(decide(s, "[fd00:1:7fff::1]:80"), REMORA_V_EXCLUDED_CIDR);
  EXPECT_EQ(decide(s, "[fd00:1:8000::1]:80"), REMORA_V_NOT_INCLUDED);
  auto v4only = settingsFor({}, false);
  EXPECT_EQ(decide(v4only, "[fd00:1::241]:9999"), REMORA_V_IPV6_OFF);
}

TEST(EbpfDecide, InboundPorts) {
  auto all = settingsFor({{"exclude-inbound-ports", "9090"}});
  EXPECT_TRUE(remora_decide_inbound(&all, 8080));
  EXPECT_FALSE(remora_decide_inbound(&all, 9090));
  EXPECT_FALSE(remora_decide_inbound(&all, 15006));  // the proxy's own ports
  auto some = settingsFor({{"include-inbound-ports", "80,8000-8001"}});
  EXPECT_TRUE(remora_decide_inbound(&some, 8001));
  EXPECT_FALSE(remora_decide_inbound(&some, 8002));
  auto none = settingsFor({{"include-inbound-ports", ""}});
  EXPECT_FALSE(remora_decide_inbound(&none, 80));
}

TEST(EbpfSettings, RejectsWhatTheAbiCannotHold) {
  InterceptOptions o;
  ASSERT_TRUE(setOption(o, "exclude-interfaces", "eth1").ok());
  auto s = netnsSettings(o, true);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("--exclude-interfaces"), std::string::npos);
  InterceptOptions many;
  std::string cidrs;
  for (int i = 0; i < 17; ++i) cidrs += "10.0." + std::to_string(i) + ".0/24,";
  ASSERT_TRUE(setOption(many, "exclude-outbound-cidrs", cidrs).ok());
  s = netnsSettings(many, true);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("at most 16"), std::string::npos) << s.error().message;
}

TEST(EbpfCli, ModeFlags) {
  auto c = parseInitCommand({"install", "--mode", "ebpf", "--cgroup", "/sys/fs/cgroup/x",
                             "--bpf-pin-dir", "/sys/fs/bpf/y"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->options.mode, InterceptMode::kEbpf);
  EXPECT_EQ(c->cgroup, "/sys/fs/cgroup/x");
  EXPECT_EQ(c->bpf_pin_dir, "/sys/fs/bpf/y");
  EXPECT_EQ(c->ebpfConfig().cgroup, "/sys/fs/cgroup/x");
  EXPECT_EQ(c->ebpfConfig().pin_dir, "/sys/fs/bpf/y");
  EXPECT_EQ(makeApplier(c->options.mode, c->options.command_timeout, c->ebpfConfig())->name(),
            "ebpf");
  auto d = parseInitCommand({"dump"});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->options.mode, InterceptMode::kIptables);
  EXPECT_EQ(d->ebpfConfig().pin_dir, kDefaultBpfPinDir);
  EXPECT_FALSE(parseInitCommand({"install", "--mode", "bogus"}).ok());
}

// install, uninstall and dump read --mode through the same parser, into options.mode.
TEST(EbpfCli, EveryVerbParsesModeTheSameWay) {
  for (const char* verb : {"install", "uninstall", "dump"}) {
    for (auto mode : {InterceptMode::kIptables, InterceptMode::kNftables, InterceptMode::kAuto,
                      InterceptMode::kEbpf}) {
      auto c = parseInitCommand({verb, "--mode", toString(mode)});
      ASSERT_TRUE(c.ok()) << verb << " " << toString(mode) << ": " << c.error().message;
      EXPECT_EQ(c->options.mode, mode) << verb;
    }
    auto bad = parseInitCommand({verb, "--mode", "bpf"});
    ASSERT_FALSE(bad.ok()) << verb;
    EXPECT_NE(bad.error().message.find("invalid --mode 'bpf': must be iptables, nftables, auto or "
                                       "ebpf"),
              std::string::npos)
        << verb << ": " << bad.error().message;
    auto pin = parseInitCommand({verb, "--mode", "ebpf", "--bpf-pin-dir", "/sys/fs/bpf/z"});
    ASSERT_TRUE(pin.ok()) << verb;
    EXPECT_EQ(pin->ebpfConfig().pin_dir, "/sys/fs/bpf/z") << verb;
  }
  // The rule modes get their appliers from the same function.
  EXPECT_EQ(makeApplier(InterceptMode::kNftables, kDefaultCommandTimeout, EbpfConfig{})->name(),
            "nftables");
}

}  // namespace
}  // namespace remora::intercept
