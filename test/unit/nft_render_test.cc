// The nftables rendering of the planner's rules: one inet table, per-family user chains, base
// chains dispatching by nfproto, every planned rule translated (no process, no kernel).
#include <gtest/gtest.h>

#include "intercept/cli.h"
#include "intercept/nftables_applier.h"

namespace remora::intercept {
namespace {

std::string render(std::initializer_list<std::pair<const char*, const char*>> flags,
                   std::vector<Family> families = {Family::kIpv4, Family::kIpv6}) {
  InterceptOptions o;
  for (const auto& [flag, value] : flags) EXPECT_TRUE(setOption(o, flag, value).ok()) << flag;
  std::vector<FamilyPlan> plans;
  for (auto f : families) plans.push_back(planFamily(o, f));
  auto text = renderNftables(plans, "fp");
  EXPECT_TRUE(text.ok()) << text.error().message;
  return text ? *text : "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(NftRender, OneTransactionReplacingTheWholeTable) {
  auto text = render({});
  EXPECT_TRUE(
      text.starts_with("add table inet remora\ndelete table inet remora\ntable inet remora {\n"
                       "  comment \"remora fp\"\n"))
      << text;
  EXPECT_TRUE(contains(text,
                       "chain nat_output {\n    type nat hook output priority -100; "
                       "policy accept;\n    meta nfproto ipv4 meta l4proto tcp jump "
                       "REMORA_OUTPUT_v4\n    meta nfproto ipv6 meta l4proto tcp jump "
                       "REMORA_OUTPUT_v6\n  }"))
      << text;
  EXPECT_TRUE(contains(text, "type nat hook prerouting priority dstnat; policy accept;"));
  EXPECT_TRUE(contains(text, "type filter hook prerouting priority mangle; policy accept;"));
}

TEST(NftRender, RulesTranslateOneToOne) {
  auto text = render({{"exclude-interfaces", "veth+"}, {"exclude-outbound-ports", "22,80:90"}});
  for (const char* rule : {
           "oifname \"veth*\" return",
           "meta l4proto tcp tcp dport 80-90 return",
           "oifname \"lo\" ip saddr 127.0.0.6/32 return",
           "oifname \"lo\" ip daddr != 127.0.0.1/32 meta skuid 1337 jump REMORA_IN_REDIRECT_v4",
           "oifname \"lo\" meta skuid != 1337 return",
           "meta skgid 1337 return",
           "ip6 daddr ::1/128 return",
           "meta l4proto tcp redirect to :15001",
           "meta l4proto tcp redirect to :15006",
           "meta l4proto tcp tcp dport 15008 return",
           "meta l4proto tcp ct state invalid drop",
           "meta nfproto ipv4 meta l4proto tcp jump REMORA_DROP_INVALID_v4",
       }) {
    EXPECT_TRUE(contains(text, "    " + std::string(rule) + "\n")) << rule << "\n" << text;
  }
}

TEST(NftRender, SameOptionsSameScriptAndFingerprint) {
  EXPECT_EQ(render({{"proxy-uid", "3,4"}}), render({{"proxy-uid", "3,4"}}));
  EXPECT_NE(planFingerprint(render({})), planFingerprint(render({{"outbound-port", "15999"}})));
}

TEST(NftRender, OwnerGroupsAndKubeVirt) {
  auto text =
      render({{"include-outbound-owner-groups", "101,102"}, {"kube-virt-interfaces", "k6t-eth0"}},
             {Family::kIpv4});
  EXPECT_TRUE(contains(text, "    meta skgid != 101 meta skgid != 102 return\n")) << text;
  EXPECT_TRUE(
      contains(text, "    meta nfproto ipv4 iifname \"k6t-eth0\" jump REMORA_REDIRECT_v4\n"))
      << text;
}

}  // namespace
}  // namespace remora::intercept
