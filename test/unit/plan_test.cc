#include "intercept/plan.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "intercept/cli.h"
#include "plan_helpers.h"

namespace remora::intercept {
namespace {

std::vector<std::string> lines(const FamilyPlan& plan) {
  std::vector<std::string> out;
  for (const auto& r : plan.rules) out.push_back(r.toString());
  return out;
}

using testing::chainLines;
using testing::has;
using testing::with;

TEST(Plan, DefaultIpv4MatchesIstioOrder) {
  auto plan = planFamily(InterceptOptions{}, Family::kIpv4);
  EXPECT_EQ(plan.chains, (std::vector<std::string>{"REMORA_INBOUND", "REMORA_IN_REDIRECT",
                                                   "REMORA_OUTPUT", "REMORA_REDIRECT"}));
  EXPECT_EQ(chainLines(plan, "OUTPUT"),
            (std::vector<std::string>{"-A OUTPUT -p tcp -j REMORA_OUTPUT"}));
  EXPECT_EQ(chainLines(plan, "PREROUTING"),
            (std::vector<std::string>{"-A PREROUTING -p tcp -j REMORA_INBOUND"}));
  EXPECT_EQ(chainLines(plan, "REMORA_REDIRECT"),
            (std::vector<std::string>{"-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 15001"}));
  EXPECT_EQ(
      chainLines(plan, "REMORA_IN_REDIRECT"),
      (std::vector<std::string>{"-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"}));
  EXPECT_EQ(chainLines(plan, "REMORA_OUTPUT"),
            (std::vector<std::string>{
                "-A REMORA_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
                "-A REMORA_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j "
                "REMORA_IN_REDIRECT",
                "-A REMORA_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
                "-A REMORA_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                "-A REMORA_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner 1337 -j "
                "REMORA_IN_REDIRECT",
                "-A REMORA_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
                "-A REMORA_OUTPUT -m owner --gid-owner 1337 -j RETURN",
                "-A REMORA_OUTPUT -d 127.0.0.1/32 -j RETURN",
                "-A REMORA_OUTPUT -j REMORA_REDIRECT",
            }));
  EXPECT_EQ(chainLines(plan, "REMORA_INBOUND"),
            (std::vector<std::string>{
                "-A REMORA_INBOUND -p tcp -m tcp --dport 15000:15001 -j RETURN",
                "-A REMORA_INBOUND -p tcp -m tcp --dport 15006 -j RETURN",
                "-A REMORA_INBOUND -p tcp -m tcp --dport 15008 -j RETURN",
                "-A REMORA_INBOUND -p tcp -m tcp --dport 15020:15021 -j RETURN",
                "-A REMORA_INBOUND -p tcp -m tcp --dport 15090 -j RETURN",
                "-A REMORA_INBOUND -p tcp -j REMORA_IN_REDIRECT",
            }));
}

TEST(Plan, Ipv6UsesV6LoopbackAndPassthroughSource) {
  auto plan = planFamily(InterceptOptions{}, Family::kIpv6);
  auto out = chainLines(plan, "REMORA_OUTPUT");
  EXPECT_TRUE(has(out, "-A REMORA_OUTPUT -s ::6/128 -o lo -j RETURN"));
  EXPECT_TRUE(has(out, "-A REMORA_OUTPUT -d ::1/128 -j RETURN"));
  EXPECT_TRUE(has(out,
                  "-A REMORA_OUTPUT ! -d ::1/128 -o lo -m owner --uid-owner 1337 -j "
                  "REMORA_IN_REDIRECT"));
  for (const auto& line : lines(plan)) EXPECT_EQ(line.find("127.0.0."), std::string::npos) << line;
}

TEST(Plan, ProxyIdsAndPorts) {
  auto plan = planFamily(with({{"proxy-uid", "2102"},
                               {"proxy-gid", "2103"},
                               {"outbound-port", "4140"},
                               {"inbound-port", "4143"}}),
                         Family::kIpv4);
  auto all = lines(plan);
  EXPECT_TRUE(has(all, "-A REMORA_OUTPUT -m owner --uid-owner 2102 -j RETURN"));
  EXPECT_TRUE(has(all, "-A REMORA_OUTPUT -m owner --gid-owner 2103 -j RETURN"));
  EXPECT_TRUE(has(all, "-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 4140"));
  EXPECT_TRUE(has(all, "-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 4143"));
  for (const auto& line : all) EXPECT_EQ(line.find("1337"), std::string::npos) << line;
}

TEST(Plan, ExcludedAndIncludedCidrsPerFamily) {
  auto o = with({{"include-outbound-cidrs", "10.1.0.0/16,fd00:1::/64"},
                 {"exclude-outbound-cidrs", "10.1.2.0/24, fd00:1::5"}});
  auto v4 = chainLines(planFamily(o, Family::kIpv4), "REMORA_OUTPUT");
  EXPECT_EQ(v4.back(), "-A REMORA_OUTPUT -d 10.1.0.0/16 -j REMORA_REDIRECT");
  EXPECT_EQ(v4[v4.size() - 2], "-A REMORA_OUTPUT -d 10.1.2.0/24 -j RETURN");
  EXPECT_FALSE(has(v4, "-A REMORA_OUTPUT -j REMORA_REDIRECT"));
  auto v6 = chainLines(planFamily(o, Family::kIpv6), "REMORA_OUTPUT");
  EXPECT_EQ(v6.back(), "-A REMORA_OUTPUT -d fd00:1::/64 -j REMORA_REDIRECT");
  EXPECT_EQ(v6[v6.size() - 2], "-A REMORA_OUTPUT -d fd00:1::5/128 -j RETURN");
  for (const auto& line : v6) EXPECT_EQ(line.find("10.1."), std::string::npos);
}

TEST(Plan, EmptyIncludeOutboundCapturesNothingOutbound) {
  auto out = chainLines(planFamily(with({{"include-outbound-cidrs", ""}}), Family::kIpv4),
                        "REMORA_OUTPUT");
  for (const auto& line : out) EXPECT_EQ(line.find("REMORA_REDIRECT"), std::string::npos) << line;
}

TEST(Plan, InboundPortsIncludeExcludeAndAlwaysExcluded) {
  auto plan = planFamily(
      with({{"include-inbound-ports", "80,8080-8090"}, {"exclude-inbound-ports", "8085"}}),
      Family::kIpv4);
  auto in = chainLines(plan, "REMORA_INBOUND");
  EXPECT_TRUE(has(in, "-A REMORA_INBOUND -p tcp -m tcp --dport 8085 -j RETURN"));
  EXPECT_TRUE(has(in, "-A REMORA_INBOUND -p tcp -m tcp --dport 15090 -j RETURN"));
  EXPECT_TRUE(has(in, "-A REMORA_INBOUND -p tcp -m tcp --dport 80 -j REMORA_IN_REDIRECT"));
  EXPECT_TRUE(has(in, "-A REMORA_INBOUND -p tcp -m tcp --dport 8080:8090 -j REMORA_IN_REDIRECT"));
  EXPECT_FALSE(has(in, "-A REMORA_INBOUND -p tcp -j REMORA_IN_REDIRECT"));
  // Exclusions come before the redirects, so 8085 inside the range stays uncaptured.
  auto pos = [&](const std::string& l) { return std::find(in.begin(), in.end(), l) - in.begin(); };
  EXPECT_LT(pos("-A REMORA_INBOUND -p tcp -m tcp --dport 8085 -j RETURN"),
            pos("-A REMORA_INBOUND -p tcp -m tcp --dport 8080:8090 -j REMORA_IN_REDIRECT"));
}

// (With inbound capture off, the proxy-to-own-pod-IP rule stays: plan_istio_test.cc.)
TEST(Plan, NoInboundCaptureDropsPreroutingJump) {
  auto plan = planFamily(with({{"include-inbound-ports", ""}}), Family::kIpv4);
  EXPECT_TRUE(chainLines(plan, "PREROUTING").empty());
  EXPECT_TRUE(chainLines(plan, "REMORA_INBOUND").empty());
}

TEST(Plan, RenderRestoreDeletesChainsThePlanNoLongerHas) {
  auto plan = planFamily(with({{"drop-invalid", "false"}}), Family::kIpv4);
  auto text = renderRestore(
      plan, {}, {{"REMORA_DROP_INVALID"}, {"-A PREROUTING -p tcp -j REMORA_DROP_INVALID"}});
  EXPECT_NE(
      text.find("*mangle\n-D PREROUTING -p tcp -j REMORA_DROP_INVALID\n-F REMORA_DROP_INVALID\n"
                "-X REMORA_DROP_INVALID\nCOMMIT\n"),
      std::string::npos)
      << text;
}

TEST(Plan, ExcludedOutboundPortsComeFirst) {
  auto out =
      chainLines(planFamily(with({{"exclude-outbound-ports", "22,5432-5433"}}), Family::kIpv4),
                 "REMORA_OUTPUT");
  EXPECT_EQ(out[0], "-A REMORA_OUTPUT -p tcp -m tcp --dport 22 -j RETURN");
  EXPECT_EQ(out[1], "-A REMORA_OUTPUT -p tcp -m tcp --dport 5432:5433 -j RETURN");
}

TEST(Plan, ExcludedInterfacesOnBothDirections) {
  auto plan = planFamily(with({{"exclude-interfaces", "eth1,veth+"}}), Family::kIpv4);
  auto out = chainLines(plan, "REMORA_OUTPUT");
  auto in = chainLines(plan, "REMORA_INBOUND");
  EXPECT_EQ(out[0], "-A REMORA_OUTPUT -o eth1 -j RETURN");
  EXPECT_EQ(out[1], "-A REMORA_OUTPUT -o veth+ -j RETURN");
  EXPECT_EQ(in[0], "-A REMORA_INBOUND -i eth1 -j RETURN");
}

TEST(Plan, RenderRestoreDeclaresChainsDeletesStaleJumpsAndCommits) {
  auto plan = planFamily(InterceptOptions{}, Family::kIpv4);
  auto text = renderRestore(plan, {{}, {"-A OUTPUT -p tcp -j REMORA_OUTPUT"}});
  EXPECT_EQ(text.rfind("*nat\n:REMORA_INBOUND - [0:0]\n", 0), 0u);
  EXPECT_NE(text.find("\n-D OUTPUT -p tcp -j REMORA_OUTPUT\n"), std::string::npos);
  EXPECT_LT(text.find("-D OUTPUT"), text.find("-A OUTPUT"));
  EXPECT_TRUE(text.ends_with("COMMIT\n"));
}

TEST(Plan, PureAndDeterministic) {
  auto o = with({{"exclude-outbound-cidrs", "10.0.0.0/8"}, {"exclude-inbound-ports", "22"}});
  EXPECT_EQ(planFamily(o, Family::kIpv4), planFamily(o, Family::kIpv4));
  EXPECT_EQ(renderRestore(planFamily(o, Family::kIpv6), {}),
            renderRestore(planFamily(o, Family::kIpv6), {}));
}

}  // namespace
}  // namespace remora::intercept
