// The nftables rendering of the planner's rules: one inet table, per-family user chains, base
// chains dispatching by nfproto, every planned rule translated (no process, no kernel), and the
// rule-by-rule comparison of a table listing with the plan.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "intercept/cli.h"
#include "intercept/nftables_applier.h"

namespace remora::intercept {
namespace {

using Flags = std::initializer_list<std::pair<const char*, const char*>>;

std::vector<FamilyPlan> plansFor(Flags flags,
                                 std::vector<Family> families = {Family::kIpv4, Family::kIpv6}) {
  InterceptOptions o;
  for (const auto& [flag, value] : flags) EXPECT_TRUE(setOption(o, flag, value).ok()) << flag;
  std::vector<FamilyPlan> plans;
  for (auto f : families) plans.push_back(planFamily(o, f));
  return plans;
}

std::string render(Flags flags, std::vector<Family> families = {Family::kIpv4, Family::kIpv6}) {
  auto text = renderNftables(plansFor(flags, std::move(families)), "fp");
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

// Each rule is written the way libnftables 1.0.6 lists it back: a host address without /32 or
// /128, `tcp dport` without the `meta l4proto tcp` it implies.
TEST(NftRender, RulesTranslateOneToOne) {
  auto text = render({{"exclude-interfaces", "veth+"},
                      {"exclude-outbound-ports", "22,80:90"},
                      {"exclude-outbound-cidrs", "10.96.0.0/12,192.168.1.1/32,fd00:0:0::7/128"}});
  for (const char* rule : {
           "oifname \"veth*\" return",
           "tcp dport 80-90 return",
           "oifname \"lo\" ip saddr 127.0.0.6 return",
           "oifname \"lo\" ip daddr != 127.0.0.1 meta skuid 1337 jump REMORA_IN_REDIRECT_v4",
           "oifname \"lo\" meta skuid != 1337 return",
           "meta skgid 1337 return",
           "ip6 daddr ::1 return",
           "ip daddr 10.96.0.0/12 return",
           "ip daddr 192.168.1.1 return",
           "ip6 daddr fd00::7 return",
           "meta l4proto tcp redirect to :15001",
           "meta l4proto tcp redirect to :15006",
           "tcp dport 15008 return",
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
  // In a base chain an address match implies the family: nft lists no `meta nfproto` there.
  text = render({{"kube-virt-interfaces", "k6t-eth0"}, {"exclude-outbound-cidrs", "fd00:1::/64"}},
                {Family::kIpv6});
  EXPECT_TRUE(contains(text, "    iifname \"k6t-eth0\" ip6 daddr fd00:1::/64 return\n")) << text;
  EXPECT_TRUE(
      contains(text, "    meta nfproto ipv6 iifname \"k6t-eth0\" jump REMORA_REDIRECT_v6\n"))
      << text;
}

// nft 1.0.6's listing of a default install (test/fixtures/remora_kube_proxy_nft.txt, `nft -a
// list ruleset` of a netns holding it), the `inet remora` table only.
std::string listedDefaultInstall() {
  std::ifstream in(std::string(REMORA_FIXTURES_DIR) + "/remora_kube_proxy_nft.txt");
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string all = buffer.str();
  const auto start = all.find("table inet remora {");
  const auto end = all.find("\n}\n", start);
  EXPECT_NE(end, std::string::npos) << all;
  return end == std::string::npos ? "" : all.substr(start, end + 3 - start);
}

// The listing with the comment this plan's fingerprint gives (the fixture's is an older one).
std::string withPlanComment(std::string listing, const std::vector<FamilyPlan>& plans) {
  auto script = renderNftables(plans, "");
  EXPECT_TRUE(script.ok());
  const auto at = listing.find("comment \"remora ") + 16;
  listing.replace(at, 16, planFingerprint(*script));
  return listing;
}

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

std::vector<std::string> diff(const std::optional<std::string>& listing,
                              const std::vector<FamilyPlan>& plans) {
  auto diffs = nftDifferences(listing, plans);
  EXPECT_TRUE(diffs.ok()) << diffs.error().message;
  return diffs ? *diffs : std::vector<std::string>{"(error)"};
}

// What the kernel lists for a default install is exactly what the translation writes, rule for
// rule; so is the plain listing (without handles).
TEST(NftDiff, KernelListingOfTheDefaultPlanMatchesRuleForRule) {
  const auto plans = plansFor({});
  const auto listing = withPlanComment(listedDefaultInstall(), plans);
  EXPECT_EQ(diff(listing, plans), std::vector<std::string>{}) << listing;
  std::string plain;
  std::istringstream lines(listing);
  for (std::string line; std::getline(lines, line);) {
    plain += line.substr(0, line.find(" # handle ")) + "\n";
  }
  EXPECT_EQ(diff(plain, plans), std::vector<std::string>{}) << plain;
  // The fixture's own comment is another plan's fingerprint: that alone is a difference.
  auto old = diff(listedDefaultInstall(), plans);
  ASSERT_EQ(old.size(), 1u);
  EXPECT_TRUE(old[0].starts_with("table comment is 'remora ca611ce03dedff86'")) << old[0];
}

TEST(NftDiff, RuleReplacedInPlaceIsNamedWithItsChain) {
  const auto plans = plansFor({});
  const auto listing = withPlanComment(listedDefaultInstall(), plans);
  auto tampered = replaced(listing, "\t\tmeta skuid 1337 return # handle 30",
                           "\t\tmeta skuid 1338 return # handle 30");
  EXPECT_EQ(diff(tampered, plans),
            (std::vector<std::string>{
                "chain REMORA_OUTPUT_v4 rule #4 'meta skuid 1338 return' is not in the plan",
                "chain REMORA_OUTPUT_v4 lacks planned rule #4 'meta skuid 1337 return'"}));
}

TEST(NftDiff, DeletedAddedAndRedeclaredAreEachNamed) {
  const auto plans = plansFor({});
  const auto listing = withPlanComment(listedDefaultInstall(), plans);
  EXPECT_EQ(diff(replaced(listing, "\t\ttcp dport 15008 return # handle 40\n", ""), plans),
            (std::vector<std::string>{
                "chain REMORA_INBOUND_v6 lacks planned rule #3 'tcp dport 15008 return'"}));
  EXPECT_EQ(
      diff(replaced(listing, "\t\tmeta l4proto tcp redirect to :15001 # handle 36\n",
                    "\t\tmeta l4proto tcp redirect to :15001 # handle 36\n\t\tcounter\n"),
           plans),
      (std::vector<std::string>{"chain REMORA_REDIRECT_v4 rule #2 'counter' is not in the plan"}));
  EXPECT_EQ(diff(replaced(listing, "priority -100;", "priority -101;"), plans),
            (std::vector<std::string>{
                "chain nat_output is declared 'type nat hook output priority -101; policy "
                "accept;', expected 'type nat hook output priority -100; policy accept;'"}));
  EXPECT_EQ(diff(replaced(listing, "\tchain REMORA_DROP_INVALID_v6 {", "\tchain EXTRA {"), plans),
            (std::vector<std::string>{"chain REMORA_DROP_INVALID_v6 is missing",
                                      "unexpected chain EXTRA"}));
  EXPECT_EQ(diff(replaced(listing, "\tchain mangle_prerouting {",
                          "\tset s {\n\t\ttype ipv4_addr\n\t}\n\tchain mangle_prerouting {"),
                 plans),
            (std::vector<std::string>{"table inet remora has 'set s {', not in the plan"}));
  EXPECT_EQ(diff(std::nullopt, plans),
            (std::vector<std::string>{"table inet remora is not installed"}));
}

}  // namespace
}  // namespace remora::intercept
