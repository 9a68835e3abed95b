// The install cases of issue 13, rule by rule against istio-iptables' documented behaviour (the
// expectations are written here from Istio's flag documentation and release notes; none of
// Istio's golden files is copied). Uses only setOption, planFamily and renderRestore, the planner's
// string-level seam, so the same file showed each case failing before the fix.
#include <gtest/gtest.h>

#include <algorithm>

#include "intercept/cli.h"
#include "intercept/plan.h"
#include "plan_helpers.h"

namespace remora::intercept {
namespace {

using testing::chainLines;
using testing::has;
using testing::with;

long pos(const std::vector<std::string>& v, const std::string& line) {
  auto it = std::find(v.begin(), v.end(), line);
  return it == v.end() ? -1 : it - v.begin();
}

// iptables-save prints "-d 0.0.0.0/0" and "-d ::/0" back as no -d at all; the plan must spell
// them the same way, or every install differs from the plan and reinstalls (resetting counters).
TEST(PlanIstio, ZeroPrefixCidrIsPlannedAsIptablesSavePrintsIt) {
  auto o = with({{"exclude-outbound-cidrs", "0.0.0.0/0,::/0"}});
  auto v4 = chainLines(planFamily(o, Family::kIpv4), "REMORA_OUTPUT");
  auto v6 = chainLines(planFamily(o, Family::kIpv6), "REMORA_OUTPUT");
  EXPECT_TRUE(has(v4, "-A REMORA_OUTPUT -j RETURN"));
  EXPECT_TRUE(has(v6, "-A REMORA_OUTPUT -j RETURN"));
  for (const auto& line : v4) EXPECT_EQ(line.find("0.0.0.0/0"), std::string::npos) << line;
  for (const auto& line : v6) EXPECT_EQ(line.find("::/0"), std::string::npos) << line;
  auto inc = chainLines(planFamily(with({{"include-outbound-cidrs", "0.0.0.0/0"}}), Family::kIpv4),
                        "REMORA_OUTPUT");
  EXPECT_EQ(inc.back(), "-A REMORA_OUTPUT -j REMORA_REDIRECT");
}

// Istio: --proxy-uid / --proxy-gid take a comma-separated list; each id gets the three owner
// rules (in-redirect to own pod IP, loopback RETURN for others, loop breaker), in list order.
TEST(PlanIstio, ProxyUidAndGidLists) {
  auto out =
      chainLines(planFamily(with({{"proxy-uid", "3,4"}, {"proxy-gid", "5,6,"}}), Family::kIpv4),
                 "REMORA_OUTPUT");
  for (const char* id : {"3", "4"}) {
    std::string uid = std::string("--uid-owner ") + id;
    EXPECT_TRUE(has(out, "-A REMORA_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner " + uid +
                             " -j REMORA_IN_REDIRECT"));
    EXPECT_TRUE(has(out, "-A REMORA_OUTPUT -o lo -m owner ! " + uid + " -j RETURN"));
    EXPECT_TRUE(has(out, "-A REMORA_OUTPUT -m owner " + uid + " -j RETURN"));
  }
  for (const char* id : {"5", "6"}) {
    EXPECT_TRUE(
        has(out, std::string("-A REMORA_OUTPUT -m owner --gid-owner ") + id + " -j RETURN"));
  }
  EXPECT_LT(pos(out, "-A REMORA_OUTPUT -m owner --uid-owner 3 -j RETURN"),
            pos(out, "-A REMORA_OUTPUT -m owner --uid-owner 4 -j RETURN"));
  for (const auto& line : out) EXPECT_EQ(line.find("1337"), std::string::npos) << line;
}

// Istio's examples end port lists with a comma ("6000,7000,"); it means the same as without.
TEST(PlanIstio, TrailingCommaInPortLists) {
  InterceptOptions o;
  ASSERT_TRUE(setOption(o, "exclude-inbound-ports", "6000,7000,").ok());
  ASSERT_TRUE(setOption(o, "exclude-outbound-ports", "6000,7000,").ok());
  ASSERT_TRUE(setOption(o, "include-inbound-ports", "80,").ok());
  auto plan = planFamily(o, Family::kIpv4);
  EXPECT_TRUE(has(chainLines(plan, "REMORA_INBOUND"),
                  "-A REMORA_INBOUND -p tcp -m tcp --dport 7000 -j RETURN"));
  EXPECT_TRUE(has(chainLines(plan, "REMORA_OUTPUT"),
                  "-A REMORA_OUTPUT -p tcp -m tcp --dport 6000 -j RETURN"));
  // A gap in the middle is still a mistake.
  EXPECT_FALSE(setOption(o, "exclude-inbound-ports", "80,,81").ok());
}

// Istio keeps "proxy to a local non-loopback address -> inbound redirect" when inbound capture
// is off (--include-inbound-ports ''): the proxy dialling its own pod IP must still go through
// the inbound side, not straight to the app.
TEST(PlanIstio, ProxyToOwnPodIpStillGoesInboundWhenInboundCaptureIsOff) {
  auto plan = planFamily(with({{"include-inbound-ports", ""}}), Family::kIpv4);
  EXPECT_TRUE(chainLines(plan, "PREROUTING").empty());
  EXPECT_TRUE(chainLines(plan, "REMORA_INBOUND").empty());
  auto out = chainLines(plan, "REMORA_OUTPUT");
  EXPECT_TRUE(has(out,
                  "-A REMORA_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j "
                  "REMORA_IN_REDIRECT"));
  EXPECT_TRUE(has(out,
                  "-A REMORA_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner 1337 -j "
                  "REMORA_IN_REDIRECT"));
  EXPECT_TRUE(has(chainLines(plan, "REMORA_IN_REDIRECT"),
                  "-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"));
}

// Istio: when an include CIDR is a loopback address, the "-o lo ! --uid-owner ... RETURN" rules
// are omitted, so the include rule is reachable for the app's loopback traffic.
TEST(PlanIstio, LoopbackIncludeCidrOmitsLoopbackReturnRules) {
  auto out =
      chainLines(planFamily(with({{"include-outbound-cidrs", "127.1.2.3/32"}}), Family::kIpv4),
                 "REMORA_OUTPUT");
  EXPECT_FALSE(has(out, "-A REMORA_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN"));
  EXPECT_FALSE(has(out, "-A REMORA_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN"));
  EXPECT_EQ(out.back(), "-A REMORA_OUTPUT -d 127.1.2.3/32 -j REMORA_REDIRECT");
  // The loop breakers stay: the proxy's own traffic to 127.1.2.3 is never captured.
  EXPECT_TRUE(has(out, "-A REMORA_OUTPUT -m owner --uid-owner 1337 -j RETURN"));
  // Every rule before the include is either the proxy's or a non-matching RETURN for an app
  // socket dialling 127.1.2.3 on lo.
  for (size_t i = 0; i + 1 < out.size(); ++i) {
    EXPECT_EQ(out[i].find("-o lo -m owner !"), std::string::npos) << out[i];
  }
  // A non-loopback include keeps them.
  auto normal = chainLines(
      planFamily(with({{"include-outbound-cidrs", "10.0.0.0/8"}}), Family::kIpv4), "REMORA_OUTPUT");
  EXPECT_TRUE(has(normal, "-A REMORA_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN"));
}

// Istio never captures 15008 (HBONE) inbound.
TEST(PlanIstio, Port15008IsNeverCapturedInbound) {
  auto in = chainLines(planFamily(InterceptOptions{}, Family::kIpv4), "REMORA_INBOUND");
  EXPECT_TRUE(has(in, "-A REMORA_INBOUND -p tcp -m tcp --dport 15008 -j RETURN"));
  EXPECT_LT(pos(in, "-A REMORA_INBOUND -p tcp -m tcp --dport 15008 -j RETURN"),
            pos(in, "-A REMORA_INBOUND -p tcp -j REMORA_IN_REDIRECT"));
}

// Istio --include-outbound-ports: redirected regardless of the destination IP (include CIDRs do
// not restrict them); excluded CIDRs, localhost and the proxy's own traffic still return first.
TEST(PlanIstio, IncludeOutboundPortsRegardlessOfDestination) {
  auto out = chainLines(planFamily(with({{"include-outbound-cidrs", ""},
                                         {"exclude-outbound-cidrs", "10.9.0.0/16"},
                                         {"include-outbound-ports", "5432,6000-6001,"}}),
                                   Family::kIpv4),
                        "REMORA_OUTPUT");
  EXPECT_TRUE(has(out, "-A REMORA_OUTPUT -p tcp -m tcp --dport 5432 -j REMORA_REDIRECT"));
  EXPECT_TRUE(has(out, "-A REMORA_OUTPUT -p tcp -m tcp --dport 6000:6001 -j REMORA_REDIRECT"));
  EXPECT_LT(pos(out, "-A REMORA_OUTPUT -d 10.9.0.0/16 -j RETURN"),
            pos(out, "-A REMORA_OUTPUT -p tcp -m tcp --dport 5432 -j REMORA_REDIRECT"));
  EXPECT_LT(pos(out, "-A REMORA_OUTPUT -m owner --uid-owner 1337 -j RETURN"),
            pos(out, "-A REMORA_OUTPUT -p tcp -m tcp --dport 5432 -j REMORA_REDIRECT"));
  EXPECT_FALSE(has(out, "-A REMORA_OUTPUT -j REMORA_REDIRECT"));
}

// Istio --include-outbound-owner-groups: only sockets of those groups are captured, i.e. one
// RETURN for "none of these groups"; --exclude-outbound-owner-groups: one RETURN per group.
TEST(PlanIstio, OutboundOwnerGroups) {
  auto include =
      chainLines(planFamily(with({{"include-outbound-owner-groups", "101,102"}}), Family::kIpv4),
                 "REMORA_OUTPUT");
  EXPECT_TRUE(has(include,
                  "-A REMORA_OUTPUT -m owner ! --gid-owner 101 -m owner ! --gid-owner 102 -j "
                  "RETURN"));
  EXPECT_LT(pos(include,
                "-A REMORA_OUTPUT -m owner ! --gid-owner 101 -m owner ! --gid-owner 102 -j RETURN"),
            pos(include, "-A REMORA_OUTPUT -j REMORA_REDIRECT"));
  auto exclude =
      chainLines(planFamily(with({{"exclude-outbound-owner-groups", "root,202"}}), Family::kIpv4),
                 "REMORA_OUTPUT");
  EXPECT_TRUE(has(exclude, "-A REMORA_OUTPUT -m owner --gid-owner 0 -j RETURN"));
  EXPECT_TRUE(has(exclude, "-A REMORA_OUTPUT -m owner --gid-owner 202 -j RETURN"));
  InterceptOptions o;
  EXPECT_FALSE(setOption(o, "exclude-outbound-owner-groups", "no-such-group-xyz").ok());
}

// Istio --kube-virt-interfaces: TCP arriving on a VM's interface is the VM's outbound traffic,
// redirected to the outbound port first thing in PREROUTING (before the inbound jump).
TEST(PlanIstio, KubeVirtInterfacesRedirectToOutboundFirst) {
  auto pre = chainLines(
      planFamily(with({{"kube-virt-interfaces", "k6t-eth0,tap0"}}), Family::kIpv4), "PREROUTING");
  ASSERT_EQ(pre.size(), 3u);
  EXPECT_EQ(pre[0], "-A PREROUTING -i k6t-eth0 -j REMORA_REDIRECT");
  EXPECT_EQ(pre[1], "-A PREROUTING -i tap0 -j REMORA_REDIRECT");
  EXPECT_EQ(pre[2], "-A PREROUTING -p tcp -j REMORA_INBOUND");
  auto some = chainLines(planFamily(with({{"kube-virt-interfaces", "k6t-eth0"},
                                          {"include-outbound-cidrs", "10.0.0.0/8"},
                                          {"exclude-outbound-cidrs", "10.1.0.0/16"}}),
                                    Family::kIpv4),
                         "PREROUTING");
  EXPECT_EQ(some[0], "-A PREROUTING -i k6t-eth0 -d 10.1.0.0/16 -j RETURN");
  EXPECT_EQ(some[1], "-A PREROUTING -i k6t-eth0 -d 10.0.0.0/8 -j REMORA_REDIRECT");
}

// --drop-invalid (default on): conntrack-INVALID TCP dropped in mangle PREROUTING, in the same
// restore transaction; off leaves mangle alone.
TEST(PlanIstio, DropInvalidInManglePrerouting) {
  auto text = renderRestore(planFamily(InterceptOptions{}, Family::kIpv4), {});
  EXPECT_NE(text.find("*mangle\n:REMORA_DROP_INVALID - [0:0]\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\n-A PREROUTING -p tcp -j REMORA_DROP_INVALID\n"), std::string::npos);
  EXPECT_NE(text.find("\n-A REMORA_DROP_INVALID -p tcp -m conntrack --ctstate INVALID -j DROP\n"),
            std::string::npos);
  EXPECT_LT(text.find("*nat"), text.find("*mangle"));
  auto off = renderRestore(planFamily(with({{"drop-invalid", "false"}}), Family::kIpv4), {});
  EXPECT_EQ(off.find("mangle"), std::string::npos) << off;
}

}  // namespace
}  // namespace remora::intercept
