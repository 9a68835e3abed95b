// TPROXY inbound (--inbound-interception-mode TPROXY): the planned mangle rules, the nat rules
// that change with it, the policy route, and their nftables translation.
#include <gtest/gtest.h>

#include "intercept/cli.h"
#include "intercept/nftables_applier.h"
#include "intercept/plan.h"
#include "plan_helpers.h"

namespace remora::intercept {
namespace {

using testing::chainLines;
using testing::has;
using testing::with;

std::vector<std::string> mangleLines(const FamilyPlan& plan, const std::string& chain) {
  std::vector<std::string> out;
  for (const auto& r : plan.mangle_rules) {
    if (r.chain == chain) out.push_back(r.toString());
  }
  return out;
}

TEST(PlanTproxy, ModeParsesInEitherCaseAndRejectsOthers) {
  InterceptOptions o;
  EXPECT_EQ(o.inbound_mode, InboundMode::kRedirect);
  ASSERT_TRUE(setOption(o, "inbound-interception-mode", "TPROXY").ok());
  EXPECT_EQ(o.inbound_mode, InboundMode::kTproxy);
  ASSERT_TRUE(setOption(o, "inbound-interception-mode", "redirect").ok());
  EXPECT_EQ(o.inbound_mode, InboundMode::kRedirect);
  auto bad = setOption(o, "inbound-interception-mode", "DNAT");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("REDIRECT or TPROXY"), std::string::npos);
  bool listed = false;
  for (const auto& spec : optionSpecs()) {
    if (spec.flag == "inbound-interception-mode") {
      listed = spec.env == "REMORA_INBOUND_INTERCEPTION_MODE" && spec.default_text == "REDIRECT";
    }
  }
  EXPECT_TRUE(listed) << "the flag, its env var and the CNI key come from optionSpecs()";
}

TEST(PlanTproxy, RedirectModeHasNoMangleInboundAndNoPolicyRoute) {
  auto plan = planFamily(with({}), Family::kIpv4);
  EXPECT_FALSE(plan.policy_route.has_value());
  EXPECT_TRUE(has(chainLines(plan, "PREROUTING"), "-A PREROUTING -p tcp -j REMORA_INBOUND"));
  EXPECT_TRUE(mangleLines(plan, kTproxyChain).empty());
}

TEST(PlanTproxy, InboundMovesFromNatToMangleTproxy) {
  auto plan = planFamily(with({{"inbound-interception-mode", "TPROXY"}}), Family::kIpv4);
  // nat: no inbound REDIRECT any more; REMORA_IN_REDIRECT stays for the proxy's own pod IP.
  EXPECT_TRUE(chainLines(plan, "PREROUTING").empty());
  EXPECT_EQ(std::find(plan.chains.begin(), plan.chains.end(), kInboundChain), plan.chains.end());
  EXPECT_TRUE(has(chainLines(plan, kInRedirectChain),
                  "-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"));
  // The proxy's marked connection to the app is never captured again, and comes before the
  // owner rule that would send it to REMORA_IN_REDIRECT.
  auto out = chainLines(plan, kOutputChain);
  auto marked =
      std::find(out.begin(), out.end(), "-A REMORA_OUTPUT -o lo -m mark --mark 0x539 -j RETURN");
  auto owner = std::find(
      out.begin(), out.end(),
      "-A REMORA_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j REMORA_IN_REDIRECT");
  ASSERT_NE(marked, out.end());
  ASSERT_NE(owner, out.end());
  EXPECT_LT(marked - out.begin(), owner - out.begin());

  EXPECT_EQ(plan.mangle_chains,
            (std::vector<std::string>{"REMORA_DROP_INVALID", "REMORA_TP_INBOUND",
                                      "REMORA_TP_OUTPUT", "REMORA_DIVERT", "REMORA_TPROXY"}));
  EXPECT_EQ(mangleLines(plan, "PREROUTING"),
            (std::vector<std::string>{"-A PREROUTING -p tcp -j REMORA_DROP_INVALID",
                                      "-A PREROUTING -p tcp -j REMORA_TP_INBOUND"}));
  EXPECT_EQ(mangleLines(plan, "OUTPUT"),
            (std::vector<std::string>{"-A OUTPUT -p tcp -j REMORA_TP_OUTPUT"}));
  EXPECT_EQ(mangleLines(plan, kTproxyOutputChain),
            (std::vector<std::string>{
                "-A REMORA_TP_OUTPUT -m mark --mark 0x539 -j CONNMARK --save-mark --nfmask "
                "0xffffffff --ctmask 0xffffffff",
                "-A REMORA_TP_OUTPUT -m connmark --mark 0x539 -j CONNMARK --restore-mark "
                "--nfmask 0xffffffff --ctmask 0xffffffff"}));
  EXPECT_EQ(mangleLines(plan, kDivertChain),
            (std::vector<std::string>{"-A REMORA_DIVERT -j MARK --set-xmark 0x539/0xffffffff",
                                      "-A REMORA_DIVERT -j ACCEPT"}));
  EXPECT_EQ(mangleLines(plan, kTproxyChain),
            (std::vector<std::string>{"-A REMORA_TPROXY -p tcp -j TPROXY --on-port 15006 "
                                      "--on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff"}));
  auto in = mangleLines(plan, kTproxyInboundChain);
  ASSERT_GE(in.size(), 4u);
  EXPECT_EQ(in.front(), "-A REMORA_TP_INBOUND -i lo -j RETURN");
  EXPECT_TRUE(has(in, "-A REMORA_TP_INBOUND -p tcp -m tcp --dport 15008 -j RETURN"));
  EXPECT_EQ(in[in.size() - 2],
            "-A REMORA_TP_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j "
            "REMORA_DIVERT");
  EXPECT_EQ(in.back(), "-A REMORA_TP_INBOUND -p tcp -j REMORA_TPROXY");
  ASSERT_TRUE(plan.policy_route.has_value());
  EXPECT_EQ(plan.policy_route->toString(Family::kIpv4),
            "ip -4 rule add fwmark 0x539 lookup 133; ip -4 route add local 0.0.0.0/0 dev lo "
            "table 133");
}

TEST(PlanTproxy, Ipv6ListensOnTheAnyAddressOfItsFamily) {
  auto plan = planFamily(with({{"inbound-interception-mode", "TPROXY"}, {"inbound-port", "16006"}}),
                         Family::kIpv6);
  EXPECT_EQ(mangleLines(plan, kTproxyChain),
            (std::vector<std::string>{"-A REMORA_TPROXY -p tcp -j TPROXY --on-port 16006 "
                                      "--on-ip :: --tproxy-mark 0x539/0xffffffff"}));
  EXPECT_EQ(plan.policy_route->toString(Family::kIpv6),
            "ip -6 rule add fwmark 0x539 lookup 133; ip -6 route add local ::/0 dev lo table 133");
}

TEST(PlanTproxy, IncludedPortsAndExclusionsAreHonoured) {
  auto plan = planFamily(with({{"inbound-interception-mode", "TPROXY"},
                               {"include-inbound-ports", "8080,9000-9010"},
                               {"exclude-interfaces", "eth9"}}),
                         Family::kIpv4);
  auto in = mangleLines(plan, kTproxyInboundChain);
  EXPECT_TRUE(has(in, "-A REMORA_TP_INBOUND -i eth9 -j RETURN"));
  EXPECT_TRUE(has(in,
                  "-A REMORA_TP_INBOUND -p tcp -m tcp --dport 8080 -m conntrack --ctstate "
                  "RELATED,ESTABLISHED -j REMORA_DIVERT"));
  EXPECT_TRUE(has(in, "-A REMORA_TP_INBOUND -p tcp -m tcp --dport 9000:9010 -j REMORA_TPROXY"));
  EXPECT_FALSE(has(in, "-A REMORA_TP_INBOUND -p tcp -j REMORA_TPROXY"));
}

TEST(PlanTproxy, NoInboundCaptureMeansNoTproxyRulesAndNoRoute) {
  auto plan =
      planFamily(with({{"inbound-interception-mode", "TPROXY"}, {"include-inbound-ports", ""}}),
                 Family::kIpv4);
  EXPECT_TRUE(mangleLines(plan, kTproxyChain).empty());
  EXPECT_FALSE(plan.policy_route.has_value());
}

TEST(PlanTproxy, RenderRestoreDeclaresAndFillsTheMangleChains) {
  auto plan = planFamily(with({{"inbound-interception-mode", "TPROXY"}}), Family::kIpv4);
  auto text = renderRestore(plan, {}, {});
  auto mangle = text.find("*mangle\n");
  ASSERT_NE(mangle, std::string::npos);
  for (const char* line : {":REMORA_TPROXY - [0:0]\n", ":REMORA_TP_OUTPUT - [0:0]\n",
                           "-A OUTPUT -p tcp -j REMORA_TP_OUTPUT\n"}) {
    EXPECT_NE(text.find(line, mangle), std::string::npos) << line << "\n" << text;
  }
}

TEST(PlanTproxy, NftablesTranslation) {
  InterceptOptions o = with({{"inbound-interception-mode", "TPROXY"}});
  std::vector<FamilyPlan> plans = {planFamily(o, Family::kIpv4), planFamily(o, Family::kIpv6)};
  auto text = renderNftables(plans, "fp");
  ASSERT_TRUE(text.ok()) << text.error().message;
  for (const char* rule : {
           "type route hook output priority mangle; policy accept;",
           "meta nfproto ipv4 meta l4proto tcp jump REMORA_TP_OUTPUT_v4",
           "meta nfproto ipv6 meta l4proto tcp jump REMORA_TP_INBOUND_v6",
           "meta mark 0x00000539 ct mark set meta mark",
           "ct mark 0x00000539 meta mark set ct mark",
           "meta mark set 0x00000539",
           "accept",
           "iifname \"lo\" return",
           "meta l4proto tcp ct state established,related jump REMORA_DIVERT_v4",
           "meta l4proto tcp tproxy ip to :15006 meta mark set 0x00000539 accept",
           "meta l4proto tcp tproxy ip6 to :15006 meta mark set 0x00000539 accept",
           // nft's tproxy lets a packet with no listener go on; iptables' TPROXY drops it.
           "meta l4proto tcp drop",
           "oifname \"lo\" meta mark 0x00000539 return",
       }) {
    EXPECT_NE(text->find("    " + std::string(rule) + "\n"), std::string::npos) << rule << "\n"
                                                                                << *text;
  }
  // REDIRECT mode keeps the table as it was: no route chain.
  std::vector<FamilyPlan> redirect = {planFamily(with({}), Family::kIpv4)};
  auto plain = renderNftables(redirect, "fp");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->find("mangle_output"), std::string::npos);
}

}  // namespace
}  // namespace remora::intercept
