#include "intercept/trace.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <numeric>
#include <sstream>

#include "intercept/plan.h"
#include "iptables_fixtures.h"
#include "trace_fixtures.h"

namespace remora::intercept {
namespace {

using fixtures::arriving;
using fixtures::natFromFixture;
using fixtures::natFromText;
using fixtures::readFixture;

// A nat table holding exactly what Remora installs for `options`, spelled as planFamily does.
SavedTable natFromPlan(const InterceptOptions& options, Family family) {
  std::string text =
      "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
      ":POSTROUTING ACCEPT [0:0]\n";
  FamilyPlan plan = planFamily(options, family);
  for (const auto& c : plan.chains) text += ":" + c + " - [0:0]\n";
  for (const auto& r : plan.rules) text += r.toString() + "\n";
  return natFromText(text + "COMMIT\n");
}

// A hand-written nat table: built-in chains plus `chains`, then `rules` ("-A ..." lines).
SavedTable natWith(const std::vector<std::string>& chains, const std::vector<std::string>& rules,
                   const std::string& output_policy = "ACCEPT") {
  std::string text = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT " + output_policy + " [0:0]\n";
  for (const auto& c : chains) text += ":" + c + " - [0:0]\n";
  for (const auto& r : rules) text += r + "\n";
  return natFromText(text + "COMMIT\n");
}

TracePacket packet(const std::string& dst, uint32_t uid = 0, const std::string& src = "10.244.0.5",
                   const std::string& out = "eth0") {
  TracePacket p;
  p.destination = *SocketAddress::parse(dst);
  p.uid = uid;
  p.gid = uid;
  if (!src.empty()) p.source = *IpAddress::parse(src);
  if (!out.empty()) p.out_interface = out;
  return p;
}

// The pod of the seed scenario: its own address and loopback are local.
TraceContext podContext() {
  TraceContext c;
  c.local_networks = std::vector<Cidr>{*Cidr::parse("127.0.0.0/8"), *Cidr::parse("10.244.0.5/32"),
                                       *Cidr::parse("::1/128"), *Cidr::parse("fd00:244::5/128")};
  return c;
}

double total(const TraceResult& r) {
  return std::accumulate(r.outcomes.begin(), r.outcomes.end(), 0.0,
                         [](double s, const TraceOutcome& o) { return s + o.probability; });
}

std::string dest(const TraceOutcome& o) { return o.destination ? o.destination->toString() : "-"; }

// ---- kube-proxy ------------------------------------------------------------------------------

TEST(TraceTest, SeedServiceSplitsFiftyFiftyAcrossTwoEndpoints) {
  auto nat = natFromFixture("kube_proxy_seed.save");
  auto r = traceNatOutput(nat, packet("10.1.122.241:9999"), podContext());
  ASSERT_EQ(r.outcomes.size(), 2u);
  const auto& a = r.outcomes[0];
  const auto& b = r.outcomes[1];
  EXPECT_EQ(a.kind, OutcomeKind::kDnat);
  EXPECT_EQ(dest(a), "10.244.1.168:80");
  EXPECT_EQ(a.chain, "KUBE-SEP-2OWQ4WZBKQXM6JKW");
  EXPECT_EQ(a.rule_index, 2u);
  EXPECT_DOUBLE_EQ(a.probability, 0.5);
  EXPECT_EQ(b.kind, OutcomeKind::kDnat);
  EXPECT_EQ(dest(b), "10.244.2.74:80");
  EXPECT_EQ(b.chain, "KUBE-SEP-N7PKW3QR6T4JLV5A");
  EXPECT_DOUBLE_EQ(b.probability, 0.5);
  // From inside the cluster CIDR, kube-proxy does not mark for masquerade.
  EXPECT_EQ(a.mark, 0u);

  ASSERT_EQ(a.path.size(), 4u);
  EXPECT_EQ(a.path[0].chain, "OUTPUT");
  EXPECT_EQ(a.path[0].rule_index, 1u);
  EXPECT_EQ(a.path[0].verdict, StepVerdict::kJump);
  EXPECT_EQ(a.path[1].chain, "KUBE-SERVICES");
  EXPECT_EQ(a.path[1].rule_index, 3u);
  EXPECT_EQ(a.path[2].chain, "KUBE-SVC-LFR5ZTL3B5QBR7VJ");
  EXPECT_EQ(a.path[2].detail, "chosen at random, 50.00%");
  EXPECT_EQ(a.path[2].depth, 2u);
  EXPECT_EQ(a.path[3].verdict, StepVerdict::kTerminal);
  EXPECT_EQ(a.path[3].rule,
            "-p tcp -m comment --comment \"istio-demo/bill-service:http\" -m tcp -j DNAT "
            "--to-destination 10.244.1.168:80");
  ASSERT_EQ(b.path.size(), 5u);
  EXPECT_EQ(b.path[2].verdict, StepVerdict::kRandomSkip);
  EXPECT_EQ(b.path[3].rule_index, 3u);
}

TEST(TraceTest, ThreeEndpointsGetAThirdEach) {
  auto nat = natFromFixture("kube_proxy_seed.save");
  auto r = traceNatOutput(nat, packet("10.1.50.10:8080"), podContext());
  ASSERT_EQ(r.outcomes.size(), 3u);
  const char* expected[] = {"10.244.1.20:8080", "10.244.2.21:8080", "10.244.3.22:8080"};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(r.outcomes[i].kind, OutcomeKind::kDnat);
    EXPECT_EQ(dest(r.outcomes[i]), expected[i]);
    EXPECT_NEAR(r.outcomes[i].probability, 1.0 / 3.0, 1e-9);
    EXPECT_EQ(formatProbability(r.outcomes[i].probability), "33.33%");
  }
  EXPECT_NEAR(total(r), 1.0, 1e-12);
}

TEST(TraceTest, OutsideTheClusterCidrIsMarkedForMasquerade) {
  auto nat = natFromFixture("kube_proxy_seed.save");
  auto r = traceNatOutput(nat, packet("10.1.122.241:9999", 0, "172.18.0.9"), podContext());
  ASSERT_EQ(r.outcomes.size(), 2u);
  for (const auto& o : r.outcomes) {
    EXPECT_EQ(o.kind, OutcomeKind::kDnat);
    EXPECT_EQ(o.mark, 0x4000u);
  }
  // KUBE-MARK-MASQ is entered, marks, and falls back to the service chain.
  const auto& path = r.outcomes[0].path;
  ASSERT_GE(path.size(), 5u);
  EXPECT_EQ(path[2].chain, "KUBE-SVC-LFR5ZTL3B5QBR7VJ");
  EXPECT_EQ(path[2].verdict, StepVerdict::kJump);
  EXPECT_EQ(path[3].chain, "KUBE-MARK-MASQ");
  EXPECT_EQ(path[3].detail, "mark is now 0x4000");
  EXPECT_EQ(path[4].verdict, StepVerdict::kEndOfChain);
  EXPECT_NE(describeOutcome(r.outcomes[0], packet("10.1.122.241:9999")).find("(mark 0x4000)"),
            std::string::npos);
}

TEST(TraceTest, NodePortOnALocalAddressGoesThroughAddrtype) {
  auto nat = natFromFixture("kube_proxy_seed.save");
  auto r = traceNatOutput(nat, packet("10.244.0.5:30999"), podContext());
  ASSERT_EQ(r.outcomes.size(), 2u);
  EXPECT_EQ(dest(r.outcomes[0]), "10.244.1.168:80");
  EXPECT_EQ(dest(r.outcomes[1]), "10.244.2.74:80");
  EXPECT_EQ(r.outcomes[0].mark, 0x4000u);  // KUBE-EXT masquerades external traffic
  EXPECT_EQ(r.outcomes[0].path[1].chain, "KUBE-SERVICES");
  EXPECT_EQ(r.outcomes[0].path[1].rule_index, 5u);
}

TEST(TraceTest, NoServiceMatchLeavesTheConnectionUnchanged) {
  auto nat = natFromFixture("kube_proxy_seed.save");
  auto p = packet("10.1.99.99:80");
  auto r = traceNatOutput(nat, p, podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  const auto& o = r.outcomes[0];
  EXPECT_EQ(o.kind, OutcomeKind::kUnchanged);
  EXPECT_EQ(o.rule_index, 0u);
  EXPECT_EQ(dest(o), "10.1.99.99:80");
  ASSERT_EQ(o.path.size(), 3u);
  EXPECT_EQ(o.path[1].verdict, StepVerdict::kEndOfChain);
  EXPECT_EQ(o.path[2].verdict, StepVerdict::kPolicy);
  EXPECT_EQ(describeOutcome(o, p),
            "no translation: the connection goes to the original destination 10.1.99.99:80 "
            "unmodified (OUTPUT policy ACCEPT), 100%");
}

TEST(TraceTest, UnknownSourceIsUndeterminedNotGuessed) {
  auto nat = natFromFixture("kube_proxy_seed.save");
  auto r = traceNatOutput(nat, packet("10.1.122.241:9999", 0, "", ""), podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  const auto& o = r.outcomes[0];
  EXPECT_EQ(o.kind, OutcomeKind::kUndetermined);
  EXPECT_EQ(o.chain, "KUBE-SVC-LFR5ZTL3B5QBR7VJ");
  EXPECT_EQ(o.rule_index, 1u);
  EXPECT_EQ(o.reason,
            "KUBE-SVC-LFR5ZTL3B5QBR7VJ #1: ! -s 10.244.0.0/16 needs the source address, which is "
            "not known");
  EXPECT_EQ(o.path.back().verdict, StepVerdict::kUndetermined);
  EXPECT_FALSE(o.destination.has_value());
}

TEST(TraceTest, UnknownLocalAddressesMakeAddrtypeUndetermined) {
  auto nat = natFromFixture("kube_proxy_seed.save");
  auto r = traceNatOutput(nat, packet("10.1.99.99:80"), TraceContext{});
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_NE(r.outcomes[0].reason.find("KUBE-SERVICES #5: -m addrtype --dst-type LOCAL needs the "
                                      "netns's local addresses"),
            std::string::npos)
      << r.outcomes[0].reason;
}

TEST(TraceTest, Ipv6ServiceSplitsFiftyFifty) {
  auto nat = natFromFixture("kube_proxy_seed_v6.save");
  auto r = traceNatOutput(nat, packet("[fd00:10:96::a1b2]:9999", 0, "fd00:244::5"), podContext());
  ASSERT_EQ(r.outcomes.size(), 2u);
  EXPECT_EQ(dest(r.outcomes[0]), "[fd00:244:1::a8]:80");
  EXPECT_EQ(dest(r.outcomes[1]), "[fd00:244:2::4a]:80");
  EXPECT_DOUBLE_EQ(r.outcomes[0].probability, 0.5);
  EXPECT_EQ(r.outcomes[0].mark, 0u);
}

// ---- Remora's own chains -------------------------------------------------------------------

TEST(TraceTest, PlannedRulesRedirectAppTrafficToTheOutboundListener) {
  InterceptOptions o;
  auto nat = natFromPlan(o, Family::kIpv4);
  auto p = packet("10.1.122.241:9999");
  auto r = traceNatOutput(nat, p, podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  const auto& out = r.outcomes[0];
  EXPECT_EQ(out.kind, OutcomeKind::kRedirect);
  EXPECT_EQ(dest(out), "127.0.0.1:15001");
  EXPECT_EQ(out.chain, kRedirectChain);
  EXPECT_DOUBLE_EQ(out.probability, 1.0);
  EXPECT_EQ(describeOutcome(out, p),
            "REDIRECT to local port 15001 (captured by the proxy's outbound listener), 100%");
}

TEST(TraceTest, PlannedRulesLetTheProxyThrough) {
  auto nat = natFromPlan(InterceptOptions{}, Family::kIpv4);
  auto r = traceNatOutput(nat, packet("10.1.122.241:9999", 1337), podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  const auto& o = r.outcomes[0];
  EXPECT_EQ(o.kind, OutcomeKind::kUnchanged);
  EXPECT_EQ(dest(o), "10.1.122.241:9999");
  ASSERT_EQ(o.path.size(), 3u);
  EXPECT_EQ(o.path[1].rule, "-m owner --uid-owner 1337 -j RETURN");
  EXPECT_EQ(o.path[1].verdict, StepVerdict::kReturn);
}

TEST(TraceTest, PlannedRulesOnLoopback) {
  auto nat = natFromPlan(InterceptOptions{}, Family::kIpv4);
  // The app to localhost: left alone.
  auto app = traceNatOutput(nat, packet("127.0.0.1:8080", 0, "127.0.0.1", "lo"), podContext());
  ASSERT_EQ(app.outcomes.size(), 1u);
  EXPECT_EQ(app.outcomes[0].kind, OutcomeKind::kUnchanged);
  EXPECT_EQ(app.outcomes[0].path[1].rule, "-o lo -m owner ! --uid-owner 1337 -j RETURN");
  // The proxy to the pod's own address: back through the inbound side.
  auto own = traceNatOutput(nat, packet("10.244.0.5:8080", 1337, "10.244.0.5", "lo"), podContext());
  ASSERT_EQ(own.outcomes.size(), 1u);
  EXPECT_EQ(own.outcomes[0].kind, OutcomeKind::kRedirect);
  EXPECT_EQ(dest(own.outcomes[0]), "127.0.0.1:15006");
  EXPECT_EQ(own.outcomes[0].chain, kInRedirectChain);
  EXPECT_NE(describeOutcome(own.outcomes[0], TracePacket{}).find("inbound listener"),
            std::string::npos);
  // The inbound passthrough from 127.0.0.6.
  auto pass = traceNatOutput(nat, packet("127.0.0.1:8080", 1337, "127.0.0.6", "lo"), podContext());
  ASSERT_EQ(pass.outcomes.size(), 1u);
  EXPECT_EQ(pass.outcomes[0].kind, OutcomeKind::kUnchanged);
  EXPECT_EQ(pass.outcomes[0].path[1].rule, "-s 127.0.0.6/32 -o lo -j RETURN");
}

TEST(TraceTest, PlannedRulesHonourExclusions) {
  InterceptOptions o;
  o.exclude_outbound_cidrs = {*Cidr::parse("10.96.0.0/12")};
  o.exclude_outbound_ports = {{22, 22}};
  auto nat = natFromPlan(o, Family::kIpv4);
  auto cidr = traceNatOutput(nat, packet("10.96.0.1:443"), podContext());
  ASSERT_EQ(cidr.outcomes.size(), 1u);
  EXPECT_EQ(cidr.outcomes[0].kind, OutcomeKind::kUnchanged);
  EXPECT_EQ(cidr.outcomes[0].path[1].rule, "-d 10.96.0.0/12 -j RETURN");
  auto ssh = traceNatOutput(nat, packet("10.1.122.241:22"), podContext());
  ASSERT_EQ(ssh.outcomes.size(), 1u);
  EXPECT_EQ(ssh.outcomes[0].kind, OutcomeKind::kUnchanged);
  EXPECT_EQ(ssh.outcomes[0].path[1].rule, "-p tcp -m tcp --dport 22 -j RETURN");
  auto other = traceNatOutput(nat, packet("10.1.122.241:9999"), podContext());
  EXPECT_EQ(other.outcomes[0].kind, OutcomeKind::kRedirect);
}

TEST(TraceTest, LocalhostIsNotCapturedEvenOffLoopback) {
  auto nat = natFromPlan(InterceptOptions{}, Family::kIpv4);
  // The route to 127.0.0.1 is always lo, but the -d 127.0.0.1/32 rule stands on its own.
  auto r = traceNatOutput(nat, packet("127.0.0.1:8080", 0, "127.0.0.1", "weird0"), podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kUnchanged);
  EXPECT_EQ(r.outcomes[0].path[1].rule, "-d 127.0.0.1/32 -j RETURN");
}

TEST(TraceTest, UnknownGidIsUndeterminedAtTheGidRule) {
  auto nat = natFromPlan(InterceptOptions{}, Family::kIpv4);
  auto p = packet("10.1.122.241:9999");
  p.gid.reset();
  auto r = traceNatOutput(nat, p, podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_EQ(r.outcomes[0].reason,
            "REMORA_OUTPUT #7: -m owner --gid-owner 1337 needs the gid, which is not known");
}

TEST(TraceTest, RealInstallCaptureBehavesLikeThePlan) {
  auto nat = natFromFixture("remora_install_nft.save");
  auto app = traceNatOutput(nat, packet("10.1.122.241:9999"), podContext());
  ASSERT_EQ(app.outcomes.size(), 1u);
  EXPECT_EQ(app.outcomes[0].kind, OutcomeKind::kRedirect);
  EXPECT_EQ(dest(app.outcomes[0]), "127.0.0.1:15001");
  auto proxy = traceNatOutput(nat, packet("10.1.122.241:9999", 1337), podContext());
  EXPECT_EQ(proxy.outcomes[0].kind, OutcomeKind::kUnchanged);
  auto local = traceNatOutput(nat, packet("127.0.0.1:80", 0, "127.0.0.1", "lo"), podContext());
  EXPECT_EQ(local.outcomes[0].kind, OutcomeKind::kUnchanged);
  auto excluded = traceNatOutput(nat, packet("10.100.0.1:443"), podContext());
  EXPECT_EQ(excluded.outcomes[0].kind, OutcomeKind::kUnchanged);
  EXPECT_EQ(excluded.outcomes[0].path[1].rule, "-d 10.96.0.0/12 -j RETURN");

  auto legacy = natFromFixture("remora_install_legacy.save");
  auto l = traceNatOutput(legacy, packet("10.1.122.241:9999"), podContext());
  EXPECT_EQ(l.outcomes[0].kind, OutcomeKind::kRedirect);
}

TEST(TraceTest, Ipv6InstallRedirectsToLoopbackSix) {
  auto nat = natFromFixture("remora_install_v6_nft.save");
  auto r = traceNatOutput(nat, packet("[fd00:10::1]:80", 0, "fd00:244::5"), podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kRedirect);
  EXPECT_EQ(dest(r.outcomes[0]), "[::1]:15001");
  auto excluded = traceNatOutput(nat, packet("[fd00:96::1]:80", 0, "fd00:244::5"), podContext());
  EXPECT_EQ(excluded.outcomes[0].kind, OutcomeKind::kUnchanged);
  auto planned = natFromPlan(InterceptOptions{}, Family::kIpv6);
  auto pass = traceNatOutput(planned, packet("[::1]:8080", 1337, "::6", "lo"), podContext());
  EXPECT_EQ(pass.outcomes[0].kind, OutcomeKind::kUnchanged);
  EXPECT_EQ(pass.outcomes[0].path[1].rule, "-s ::6/128 -o lo -j RETURN");
}

TEST(TraceTest, KubeProxyAheadOfRemoraWinsForServiceAddresses) {
  auto nat = natFromFixture("kube_proxy_and_remora.save");
  auto svc = traceNatOutput(nat, packet("10.1.122.241:9999"), podContext());
  ASSERT_EQ(svc.outcomes.size(), 2u);
  EXPECT_EQ(svc.outcomes[0].kind, OutcomeKind::kDnat);
  auto other = traceNatOutput(nat, packet("10.1.99.9:80"), podContext());
  ASSERT_EQ(other.outcomes.size(), 1u);
  EXPECT_EQ(other.outcomes[0].kind, OutcomeKind::kRedirect);
  EXPECT_EQ(other.outcomes[0].path[2].chain, "OUTPUT");
  EXPECT_EQ(other.outcomes[0].path[2].rule_index, 2u);
}

// ---- matches and targets -------------------------------------------------------------------

TEST(TraceTest, UnknownMatchIsUndeterminedNamingRuleAndMatch) {
  auto nat =
      natWith({}, {"-A OUTPUT -p tcp -m connlimit --connlimit-above 2 -j REDIRECT --to-ports 1"});
  auto r = traceNatOutput(nat, packet("10.1.1.1:80"), podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_EQ(r.outcomes[0].reason,
            "OUTPUT #1: -m connlimit --connlimit-above 2: the trace does not evaluate this match");
  EXPECT_EQ(r.outcomes[0].chain, "OUTPUT");
  EXPECT_EQ(r.outcomes[0].rule_index, 1u);
}

TEST(TraceTest, AnUnknownMatchDoesNotMatterWhenAnotherMatchFails) {
  auto nat = natWith({}, {"-A OUTPUT -d 10.9.9.9/32 -m connlimit --connlimit-above 2 -j DROP"});
  auto r = traceNatOutput(nat, packet("10.1.1.1:80"), podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kUnchanged);
}

TEST(TraceTest, NthModeAndUnknownTargetsAreUndetermined) {
  auto nth = natWith({}, {"-A OUTPUT -m statistic --mode nth --every 2 --packet 0 -j DROP"});
  auto r = traceNatOutput(nth, packet("10.1.1.1:80"), podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_NE(r.outcomes[0].reason.find("--mode nth"), std::string::npos);

  auto target = natWith({}, {"-A OUTPUT -j FANCY --x 1"});
  auto t = traceNatOutput(target, packet("10.1.1.1:80"), podContext());
  EXPECT_EQ(t.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_NE(t.outcomes[0].reason.find("'FANCY'"), std::string::npos);

  auto sport = natWith({}, {"-A OUTPUT -p tcp -m tcp --sport 1000:2000 -j DROP"});
  auto s = traceNatOutput(sport, packet("10.1.1.1:80"), podContext());
  EXPECT_EQ(s.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_NE(s.outcomes[0].reason.find("source port"), std::string::npos);
}

TEST(TraceTest, GotoReturnsToTheCallerOfTheGoingChain) {
  // RETURN from a chain reached by -g skips the chain that did the goto.
  auto go = natWith(
      {"A", "B"}, {"-A OUTPUT -j A", "-A OUTPUT -j DNAT --to-destination 10.0.0.2:80", "-A A -g B",
                   "-A A -j DNAT --to-destination 10.0.0.1:80", "-A B -j RETURN"});
  auto r = traceNatOutput(go, packet("10.1.1.1:80"), podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(dest(r.outcomes[0]), "10.0.0.2:80");
  // The same with -j: back in A, whose next rule decides.
  auto jump = natWith(
      {"A", "B"}, {"-A OUTPUT -j A", "-A OUTPUT -j DNAT --to-destination 10.0.0.2:80", "-A A -j B",
                   "-A A -j DNAT --to-destination 10.0.0.1:80", "-A B -j RETURN"});
  auto j = traceNatOutput(jump, packet("10.1.1.1:80"), podContext());
  EXPECT_EQ(dest(j.outcomes[0]), "10.0.0.1:80");
  // A goto from the base chain that falls off its end reaches the base chain's policy.
  auto base = natWith({"A"}, {"-A OUTPUT -g A", "-A OUTPUT -j DROP"});
  auto b = traceNatOutput(base, packet("10.1.1.1:80"), podContext());
  EXPECT_EQ(b.outcomes[0].kind, OutcomeKind::kUnchanged);
  EXPECT_EQ(b.outcomes[0].path.back().verdict, StepVerdict::kPolicy);
}

TEST(TraceTest, LoopsAndDeepNestingStopTheWalk) {
  auto loop = natWith({"A", "B"}, {"-A OUTPUT -j A", "-A A -j B", "-A B -j A"});
  auto r = traceNatOutput(loop, packet("10.1.1.1:80"), podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_NE(r.outcomes[0].reason.find("loop: A"), std::string::npos);

  auto goto_loop = natWith({"A", "B"}, {"-A OUTPUT -j A", "-A A -g B", "-A B -g A"});
  auto g = traceNatOutput(goto_loop, packet("10.1.1.1:80"), podContext());
  EXPECT_EQ(g.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_NE(g.outcomes[0].reason.find("loop"), std::string::npos);

  std::vector<std::string> chains;
  std::vector<std::string> rules = {"-A OUTPUT -j C0"};
  for (int i = 0; i < 70; ++i) {
    chains.push_back(fmt::format("C{}", i));
    rules.push_back(fmt::format("-A C{} -j C{}", i, i + 1));
  }
  chains.push_back("C70");
  auto deep = traceNatOutput(natWith(chains, rules), packet("10.1.1.1:80"), podContext());
  EXPECT_EQ(deep.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_NE(deep.outcomes[0].reason.find("deeper than 64"), std::string::npos);
}

TEST(TraceTest, MarkSetEarlierIsSeenByMarkMatchesLater) {
  auto nat = natWith({}, {"-A OUTPUT -j MARK --set-xmark 0x10/0xff",
                          "-A OUTPUT -m mark ! --mark 0x10/0xff -j DROP",
                          "-A OUTPUT -m mark --mark 0x10/0xff -j DNAT --to-destination 10.0.0.1"});
  auto r = traceNatOutput(nat, packet("10.1.1.1:80"), podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kDnat);
  EXPECT_EQ(dest(r.outcomes[0]), "10.0.0.1:80");  // no port: the original one stays
  EXPECT_EQ(r.outcomes[0].mark, 0x10u);
}

TEST(TraceTest, InterfacesPortsAndOwners) {
  auto nat = natWith({}, {
                             "-A OUTPUT -o lo -j DROP",
                             "-A OUTPUT -i eth0 -j DROP",  // no input device for local traffic
                             "-A OUTPUT -p udp -j DROP",
                             "-A OUTPUT -f -j DROP",
                             "-A OUTPUT -p tcp -m tcp ! --dport 1:1000 -j DROP",
                             "-A OUTPUT -m owner --uid-owner 10-20 -j DROP",
                             "-A OUTPUT -p tcp -m multiport --dports 80,90:95 -m owner ! "
                             "--uid-owner 10-20 -o eth+ -j REDIRECT --to-ports 8000-8010",
                         });
  auto r = traceNatOutput(nat, packet("10.1.1.1:92", 0, "10.244.0.5", "eth7"), podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kRedirect);
  EXPECT_FALSE(r.outcomes[0].destination.has_value());  // a port range: no single address
  EXPECT_EQ(r.outcomes[0].target, "REDIRECT --to-ports 8000-8010");
  EXPECT_EQ(r.outcomes[0].rule_index, 7u);

  auto uid15 = traceNatOutput(nat, packet("10.1.1.1:92", 15, "10.244.0.5", "eth7"), podContext());
  EXPECT_EQ(uid15.outcomes[0].kind, OutcomeKind::kDrop);
  EXPECT_EQ(uid15.outcomes[0].rule_index, 6u);
  auto high = traceNatOutput(nat, packet("10.1.1.1:2000", 0, "10.244.0.5", "eth7"), podContext());
  EXPECT_EQ(high.outcomes[0].rule_index, 5u);
  auto lo = traceNatOutput(nat, packet("10.1.1.1:92", 0, "10.244.0.5", "lo"), podContext());
  EXPECT_EQ(lo.outcomes[0].rule_index, 1u);
  auto unknown_if = traceNatOutput(nat, packet("10.1.1.1:92", 0, "10.244.0.5", ""), podContext());
  EXPECT_EQ(unknown_if.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_NE(unknown_if.outcomes[0].reason.find("output interface"), std::string::npos);
}

TEST(TraceTest, CertainAndImpossibleProbabilitiesDoNotSplit) {
  auto nat = natWith({}, {"-A OUTPUT -m statistic --mode random --probability 0.0 -j DROP",
                          "-A OUTPUT -m statistic --mode random --probability 1.0 -j DNAT "
                          "--to-destination 10.0.0.1:80"});
  auto r = traceNatOutput(nat, packet("10.1.1.1:80"), podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kDnat);
  EXPECT_DOUBLE_EQ(r.outcomes[0].probability, 1.0);
}

TEST(TraceTest, DropPolicy) {
  auto nat = natWith({}, {}, "DROP");
  auto p = packet("10.1.1.1:80");
  auto r = traceNatOutput(nat, p, podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kDrop);
  EXPECT_EQ(describeOutcome(r.outcomes[0], p),
            "dropped (OUTPUT policy DROP): the SYN gets no answer, connect() times out, 100%");
}

TEST(TraceTest, RandomBranchesAreBounded) {
  // 13 independent coin flips would give 8192 branches; the walk stops at its budget.
  std::vector<std::string> rules;
  for (int i = 0; i < 13; ++i) {
    rules.push_back(
        "-A OUTPUT -m statistic --mode random --probability 0.5 -j MARK --set-xmark "
        "0x" +
        std::to_string(i + 1) + "/0xffffffff");
  }
  auto r = traceNatOutput(natWith({}, rules), packet("10.1.1.1:80"), podContext());
  EXPECT_LE(r.outcomes.size(), 4096u + 4096u);
  EXPECT_NEAR(total(r), 1.0, 1e-9);
  EXPECT_TRUE(std::any_of(r.outcomes.begin(), r.outcomes.end(), [](const TraceOutcome& o) {
    return o.kind == OutcomeKind::kUndetermined;
  }));
}

// ---- nat, then filter: kube-proxy's node rules (test/fixtures/kube_proxy_node.save) --------

SavedRuleset rulesetFromFixture(const std::string& name) {
  auto r = parseIptablesSave(readFixture(name));
  EXPECT_TRUE(r.ok()) << r.error().message;
  return r.ok() ? *r : SavedRuleset{};
}

// The node of the fixture: 172.18.0.3, cni0 at 10.244.0.1, loopback.
TraceContext nodeContext() {
  TraceContext c;
  c.local_networks = std::vector<Cidr>{*Cidr::parse("127.0.0.0/8"), *Cidr::parse("172.18.0.3/32"),
                                       *Cidr::parse("10.244.0.1/32")};
  c.route_device = [](const IpAddress& ip) -> std::optional<std::string> {
    if (Cidr::parse("10.244.0.0/24")->contains(ip)) return "cni0";
    return "eth0";
  };
  return c;
}

bool pathHas(const TraceOutcome& o, const std::string& table, const std::string& chain) {
  return std::any_of(o.path.begin(), o.path.end(),
                     [&](const TraceStep& s) { return s.table == table && s.chain == chain; });
}

TEST(TraceFilterTest, NoEndpointsIsRejectedNotPassedThrough) {
  auto rules = rulesetFromFixture("kube_proxy_node.save");
  auto p = packet("10.96.60.6:80");
  // What the nat-only walk said before: nothing translates it.
  auto nat_only = traceNatOutput(*rules.table("nat"), p, podContext());
  ASSERT_EQ(nat_only.outcomes.size(), 1u);
  EXPECT_EQ(nat_only.outcomes[0].kind, OutcomeKind::kUnchanged);

  auto r = traceConnection(rules, p, podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  const auto& o = r.outcomes[0];
  EXPECT_EQ(o.kind, OutcomeKind::kReject);
  EXPECT_EQ(o.table, "filter");
  EXPECT_EQ(o.chain, "KUBE-SERVICES");
  EXPECT_EQ(o.rule_index, 1u);
  EXPECT_EQ(o.comment, "shop/cart:http has no endpoints");
  EXPECT_EQ(o.target, "REJECT --reject-with icmp-port-unreachable");
  EXPECT_FALSE(o.destination.has_value());
  EXPECT_DOUBLE_EQ(o.probability, 1.0);
  EXPECT_EQ(describeOutcome(o, p),
            "rejected (REJECT --reject-with icmp-port-unreachable in filter KUBE-SERVICES #1, "
            "\"shop/cart:http has no endpoints\"): connect() fails at once with ECONNREFUSED, "
            "100%");
  // The nat walk comes first, then filter OUTPUT's jump into KUBE-SERVICES.
  ASSERT_GE(o.path.size(), 3u);
  EXPECT_EQ(o.path.front().table, "nat");
  const auto& jump = o.path[o.path.size() - 2];
  EXPECT_EQ(jump.table, "filter");
  EXPECT_EQ(jump.chain, "OUTPUT");
  EXPECT_EQ(jump.rule_index, 2u);
  EXPECT_EQ(o.path.back().verdict, StepVerdict::kTerminal);
  EXPECT_EQ(r.tables, (std::vector<std::string>{"nat", "filter"}));
}

TEST(TraceFilterTest, NoEndpointsFromAPodIsRejectedInForward) {
  auto rules = rulesetFromFixture("kube_proxy_node.save");
  auto r = traceConnection(rules, arriving("10.96.60.6:80", "10.244.0.9", "cni0"), nodeContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kReject);
  EXPECT_EQ(r.outcomes[0].chain, "KUBE-SERVICES");
  EXPECT_TRUE(pathHas(r.outcomes[0], "filter", "FORWARD"));
  EXPECT_TRUE(pathHas(r.outcomes[0], "filter", "KUBE-FORWARD"));  // passed, not accepted
  EXPECT_TRUE(pathHas(r.outcomes[0], "nat", "PREROUTING"));
}

TEST(TraceFilterTest, NoEndpointsNodePortAndExternalIpFromOutside) {
  auto rules = rulesetFromFixture("kube_proxy_node.save");
  // The node port on the node's address: local, so filter INPUT.
  auto np =
      traceConnection(rules, arriving("172.18.0.3:30606", "192.0.2.200", "eth0"), nodeContext());
  ASSERT_EQ(np.outcomes.size(), 1u);
  EXPECT_EQ(np.outcomes[0].kind, OutcomeKind::kReject);
  EXPECT_EQ(np.outcomes[0].chain, "KUBE-EXTERNAL-SERVICES");
  EXPECT_EQ(np.outcomes[0].rule_index, 2u);
  EXPECT_TRUE(pathHas(np.outcomes[0], "filter", "INPUT"));
  // The external IP: forwarded.
  auto ext =
      traceConnection(rules, arriving("192.0.2.66:80", "192.0.2.200", "eth0"), nodeContext());
  ASSERT_EQ(ext.outcomes.size(), 1u);
  EXPECT_EQ(ext.outcomes[0].kind, OutcomeKind::kReject);
  EXPECT_EQ(ext.outcomes[0].chain, "KUBE-EXTERNAL-SERVICES");
  EXPECT_EQ(ext.outcomes[0].rule_index, 1u);
  // From the pod itself, kube-proxy only rejects in KUBE-SERVICES (cluster IPs): the external IP
  // goes out untouched.
  auto local = traceConnection(rules, packet("192.0.2.66:80"), podContext());
  ASSERT_EQ(local.outcomes.size(), 1u);
  EXPECT_EQ(local.outcomes[0].kind, OutcomeKind::kUnchanged);
  EXPECT_EQ(local.outcomes[0].accepted_by, "filter OUTPUT: accepted (policy ACCEPT)");
}

TEST(TraceFilterTest, LoadBalancerSourceRanges) {
  auto rules = rulesetFromFixture("kube_proxy_node.save");
  // The pod's own address is outside 203.0.113.0/24: KUBE-FW lets it fall through and
  // KUBE-PROXY-FIREWALL drops it.
  auto p = packet("198.51.100.7:443");
  auto local = traceConnection(rules, p, podContext());
  ASSERT_EQ(local.outcomes.size(), 1u);
  const auto& d = local.outcomes[0];
  EXPECT_EQ(d.kind, OutcomeKind::kDrop);
  EXPECT_EQ(d.table, "filter");
  EXPECT_EQ(d.chain, "KUBE-PROXY-FIREWALL");
  EXPECT_EQ(d.rule_index, 1u);
  EXPECT_TRUE(pathHas(d, "nat", "KUBE-FW-QK4ZP2VJ7H3MXNAT"));
  EXPECT_EQ(describeOutcome(d, p),
            "dropped (DROP in filter KUBE-PROXY-FIREWALL #1, \"shop/api:https traffic not "
            "accepted by KUBE-FW-QK4ZP2VJ7H3MXNAT\"): the SYN gets no answer, connect() times "
            "out, 100%");

  // An external client outside the ranges: the same drop, in FORWARD.
  auto outside =
      traceConnection(rules, arriving("198.51.100.7:443", "198.18.0.1", "eth0"), nodeContext());
  ASSERT_EQ(outside.outcomes.size(), 1u);
  EXPECT_EQ(outside.outcomes[0].kind, OutcomeKind::kDrop);
  EXPECT_TRUE(pathHas(outside.outcomes[0], "filter", "FORWARD"));

  // Inside the ranges: masqueraded, split across both endpoints, accepted by KUBE-FORWARD.
  auto inside =
      traceConnection(rules, arriving("198.51.100.7:443", "203.0.113.9", "eth0"), nodeContext());
  ASSERT_EQ(inside.outcomes.size(), 2u);
  EXPECT_EQ(dest(inside.outcomes[0]), "10.244.1.30:8443");
  EXPECT_EQ(dest(inside.outcomes[1]), "10.244.2.31:8443");
  for (const auto& o : inside.outcomes) {
    EXPECT_EQ(o.kind, OutcomeKind::kDnat);
    EXPECT_DOUBLE_EQ(o.probability, 0.5);
    EXPECT_EQ(o.mark, 0x4000u);
    EXPECT_EQ(o.accepted_by, "filter FORWARD: accepted (ACCEPT in KUBE-FORWARD #2)");
  }
}

TEST(TraceFilterTest, ExternalTrafficPolicyLocalKeepsExternalClientsOnThisNode) {
  auto rules = rulesetFromFixture("kube_proxy_node.save");
  // An external client on the node port: KUBE-SVL, the local endpoint only, source kept.
  auto ext =
      traceConnection(rules, arriving("172.18.0.3:30080", "192.0.2.200", "eth0"), nodeContext());
  ASSERT_EQ(ext.outcomes.size(), 1u);
  const auto& o = ext.outcomes[0];
  EXPECT_EQ(o.kind, OutcomeKind::kDnat);
  EXPECT_EQ(dest(o), "10.244.0.7:8080");
  EXPECT_DOUBLE_EQ(o.probability, 1.0);
  EXPECT_EQ(o.mark, 0u);
  EXPECT_TRUE(pathHas(o, "nat", "KUBE-SVL-W3BRT6HUYDQ4LKPE"));
  EXPECT_EQ(o.accepted_by, "filter FORWARD: accepted (policy ACCEPT)");

  // A pod on the node port: the whole service, unmarked.
  auto pod =
      traceConnection(rules, arriving("172.18.0.3:30080", "10.244.2.5", "eth0"), nodeContext());
  ASSERT_EQ(pod.outcomes.size(), 2u);
  EXPECT_EQ(dest(pod.outcomes[0]), "10.244.0.7:8080");
  EXPECT_EQ(dest(pod.outcomes[1]), "10.244.1.9:8080");
  EXPECT_EQ(pod.outcomes[0].mark, 0u);
  EXPECT_FALSE(pathHas(pod.outcomes[0], "nat", "KUBE-SVL-W3BRT6HUYDQ4LKPE"));

  // The node itself (OUTPUT, a LOCAL source): masqueraded, the whole service.
  auto node =
      traceConnection(rules, packet("172.18.0.3:30080", 0, "172.18.0.3", "lo"), nodeContext());
  ASSERT_EQ(node.outcomes.size(), 2u);
  EXPECT_EQ(node.outcomes[0].mark, 0x4000u);
  EXPECT_DOUBLE_EQ(node.outcomes[0].probability, 0.5);
}

TEST(TraceFilterTest, ClusterIpOfThreeEndpointsThroughBothTables) {
  auto rules = rulesetFromFixture("kube_proxy_node.save");
  auto r = traceConnection(rules, packet("10.96.50.10:8080"), podContext());
  ASSERT_EQ(r.outcomes.size(), 3u);
  const char* expected[] = {"10.244.1.20:8080", "10.244.2.21:8080", "10.244.3.22:8080"};
  const char* chance[] = {"chosen at random, 33.33%", "chosen at random, 50.00%", ""};
  for (size_t i = 0; i < 3; ++i) {
    const auto& o = r.outcomes[i];
    EXPECT_EQ(o.kind, OutcomeKind::kDnat);
    EXPECT_EQ(dest(o), expected[i]);
    EXPECT_NEAR(o.probability, 1.0 / 3.0, 1e-9);
    EXPECT_EQ(o.accepted_by, "filter OUTPUT: accepted (policy ACCEPT)");
    auto svc = std::find_if(o.path.begin(), o.path.end(), [](const TraceStep& s) {
      return s.chain == "KUBE-SVC-6M2TQXAKRJ5LZP4W" && s.verdict == StepVerdict::kJump;
    });
    ASSERT_NE(svc, o.path.end());
    EXPECT_EQ(svc->detail, chance[i]);
  }
  EXPECT_NEAR(total(r), 1.0, 1e-12);
  // From outside the cluster CIDR (a node-network client): marked for masquerade.
  auto off =
      traceConnection(rules, arriving("10.96.50.10:8080", "172.18.0.9", "eth0"), nodeContext());
  ASSERT_EQ(off.outcomes.size(), 3u);
  EXPECT_EQ(off.outcomes[0].mark, 0x4000u);
  EXPECT_EQ(off.outcomes[0].accepted_by, "filter FORWARD: accepted (ACCEPT in KUBE-FORWARD #2)");
}

TEST(TraceFilterTest, SessionAffinityReportsTheFirstConnectionSplit) {
  auto rules = rulesetFromFixture("kube_proxy_node.save");
  auto p = packet("10.96.90.9:80");
  auto r = traceConnection(rules, p, podContext());
  ASSERT_EQ(r.outcomes.size(), 2u);
  EXPECT_EQ(dest(r.outcomes[0]), "10.244.1.40:80");
  EXPECT_EQ(dest(r.outcomes[1]), "10.244.2.41:80");
  for (const auto& o : r.outcomes) {
    EXPECT_EQ(o.kind, OutcomeKind::kDnat);
    EXPECT_DOUBLE_EQ(o.probability, 0.5);
    ASSERT_EQ(o.assumptions.size(), 1u);
    EXPECT_NE(o.assumptions[0].find("a client's first connection"), std::string::npos);
    // Both --rcheck rules are shown as not matched, with the list each one checks.
    ASSERT_GE(o.path.size(), 4u);
    EXPECT_EQ(o.path[2].verdict, StepVerdict::kAssumedSkip);
    EXPECT_EQ(o.path[2].detail,
              "no entry for this client in recent list KUBE-SEP-PB3VXA4LNT6KQZ2M: its first "
              "connection");
    EXPECT_EQ(o.path[3].verdict, StepVerdict::kAssumedSkip);
  }
  // --set on the DNAT rule always matches: the DNAT is reached.
  EXPECT_EQ(r.outcomes[0].chain, "KUBE-SEP-PB3VXA4LNT6KQZ2M");
  EXPECT_EQ(r.outcomes[0].rule_index, 2u);

  TraceReport report;
  report.packet = p;
  report.result = r;
  const std::string text = renderTrace(report);
  EXPECT_NE(text.find("--rsource -j KUBE-SEP-PB3VXA4LNT6KQZ2M → not matched (no entry for this "
                      "client in recent list KUBE-SEP-PB3VXA4LNT6KQZ2M: its first connection)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\nAssumed: session affinity (-m recent)"), std::string::npos) << text;
}

TEST(TraceFilterTest, NfacctOnlyCounts) {
  auto rules = rulesetFromFixture("kube_proxy_node.save");
  // The node port on localhost: KUBE-NODEPORTS' first rule counts with nfacct and matches.
  auto r = traceConnection(rules, packet("127.0.0.1:30080", 0, "127.0.0.1", "lo"), nodeContext());
  ASSERT_EQ(r.outcomes.size(), 2u);
  for (const auto& o : r.outcomes) {
    EXPECT_EQ(o.kind, OutcomeKind::kDnat);
    EXPECT_DOUBLE_EQ(o.probability, 0.5);
    EXPECT_EQ(o.mark, 0x4000u);
    auto np = std::find_if(o.path.begin(), o.path.end(),
                           [](const TraceStep& s) { return s.chain == "KUBE-NODEPORTS"; });
    ASSERT_NE(np, o.path.end());
    EXPECT_EQ(np->rule_index, 1u);
    EXPECT_NE(np->rule.find("-m nfacct --nfacct-name localhost_nps_accepted_pkts"),
              std::string::npos);
  }
  auto nfacct = natWith({}, {"-A OUTPUT -m nfacct --nfacct-name x -j DNAT --to-destination "
                             "10.0.0.1:80"});
  auto n = traceNatOutput(nfacct, packet("10.1.1.1:80"), podContext());
  ASSERT_EQ(n.outcomes.size(), 1u);
  EXPECT_EQ(n.outcomes[0].kind, OutcomeKind::kDnat);
}

TEST(TraceFilterTest, ConntrackStateOfTheFirstPacket) {
  auto ruleset = [](const std::string& filter_rules) {
    auto r = parseIptablesSave(
        "*nat\n:OUTPUT ACCEPT [0:0]\n:PREROUTING ACCEPT [0:0]\n"
        "-A OUTPUT -d 10.9.0.0/16 -p tcp -j DNAT --to-destination 127.0.0.1:9\n"
        "COMMIT\n*filter\n:OUTPUT ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n" +
        filter_rules + "COMMIT\n");
    EXPECT_TRUE(r.ok());
    return *r;
  };
  auto rules = ruleset(
      "-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
      "-A OUTPUT ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate DNAT -j DROP\n"
      "-A OUTPUT -m state --state NEW -j REJECT --reject-with tcp-reset\n");
  // Translated by nat: the DNAT state exempts it from the localnet drop; NEW meets the reject.
  auto dnat = traceConnection(rules, packet("10.9.1.1:80"), podContext());
  ASSERT_EQ(dnat.outcomes.size(), 1u);
  EXPECT_EQ(dnat.outcomes[0].kind, OutcomeKind::kReject);
  EXPECT_EQ(dnat.outcomes[0].rule_index, 3u);
  EXPECT_EQ(dnat.outcomes[0].translated, "DNAT 127.0.0.1:9 via OUTPUT");
  EXPECT_NE(describeOutcome(dnat.outcomes[0], packet("10.9.1.1:80"))
                .find("connect() fails at once with ECONNREFUSED (after DNAT 127.0.0.1:9 via "
                      "OUTPUT)"),
            std::string::npos);
  // Straight to 127.0.0.2 from the pod address: dropped.
  auto direct = traceConnection(rules, packet("127.0.0.2:80"), podContext());
  EXPECT_EQ(direct.outcomes[0].kind, OutcomeKind::kDrop);
  EXPECT_EQ(direct.outcomes[0].rule_index, 2u);
  // Other state options are not evaluated.
  auto other = traceConnection(ruleset("-A OUTPUT -m conntrack --ctorigdstport 80 -j DROP\n"),
                               packet("10.8.1.1:80"), podContext());
  EXPECT_EQ(other.outcomes[0].kind, OutcomeKind::kUndetermined);
  // Reject codes become the errno connect() sees.
  auto host = traceConnection(ruleset("-A OUTPUT -j REJECT --reject-with icmp-host-prohibited\n"),
                              packet("10.8.1.1:80"), podContext());
  EXPECT_NE(describeOutcome(host.outcomes[0], packet("10.8.1.1:80")).find("EHOSTUNREACH"),
            std::string::npos);
}

TEST(TraceFilterTest, Ipv6RejectsAndJson) {
  auto r = parseIptablesSave(
      "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
      ":KUBE-SERVICES - [0:0]\n"
      "-A FORWARD -m conntrack --ctstate NEW -j KUBE-SERVICES\n"
      "-A KUBE-SERVICES -d fd00:10:96::6/128 -p tcp -m comment --comment \"shop/cart:http has no "
      "endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp6-port-unreachable\n"
      "-A KUBE-SERVICES -d fd00:10:96::7/128 -j REJECT --reject-with icmp6-adm-prohibited\n"
      "COMMIT\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  TraceContext context;
  context.local_networks = std::vector<Cidr>{*Cidr::parse("::1/128")};
  auto in = arriving("[fd00:10:96::6]:80", "fd00:244:2::9", "eth0");
  auto cart = traceConnection(*r, in, context);
  ASSERT_EQ(cart.outcomes.size(), 1u);
  EXPECT_EQ(cart.outcomes[0].kind, OutcomeKind::kReject);
  EXPECT_NE(describeOutcome(cart.outcomes[0], in).find("ECONNREFUSED"), std::string::npos);
  auto other = arriving("[fd00:10:96::7]:80", "fd00:244:2::9", "eth0");
  auto adm = traceConnection(*r, other, context);
  EXPECT_NE(describeOutcome(adm.outcomes[0], other).find("EACCES"), std::string::npos);

  TraceReport report;
  report.packet = in;
  report.result = cart;
  auto j = traceToJson(report);
  EXPECT_EQ(j["chain"], "PREROUTING");
  EXPECT_EQ(j["tables"], nlohmann::json::array({"nat", "filter"}));
  EXPECT_EQ(j["packet"]["origin"], "arriving");
  EXPECT_EQ(j["packet"]["in_interface"], "eth0");
  const auto& o = j["outcomes"][0];
  EXPECT_EQ(o["kind"], "reject");
  EXPECT_EQ(o["table"], "filter");
  EXPECT_EQ(o["comment"], "shop/cart:http has no endpoints");
  EXPECT_EQ(o["path"].back()["table"], "filter");
  EXPECT_NE(renderTrace(report).find("Trace: tcp to [fd00:10:96::6]:80 arriving from "
                                     "fd00:244:2::9, in eth0 — nat and filter tables"),
            std::string::npos)
      << renderTrace(report);
}

TEST(TraceFilterTest, ArrivingPacketsNeedTheirInterfaceAndLocalAddresses) {
  // Remora's inbound capture for a packet arriving at the pod.
  auto nat = natFromPlan(InterceptOptions{}, Family::kIpv4);
  auto in = arriving("10.244.0.5:8080", "10.244.1.3", "eth0");
  auto r = traceChain(nat, "PREROUTING", in, podContext());
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kRedirect);
  EXPECT_EQ(r.outcomes[0].chain, kInRedirectChain);
  // An -i rule with no input interface known.
  auto iface = natWith({}, {"-A PREROUTING -i eth0 -j DNAT --to-destination 10.0.0.1:80"});
  in.in_interface.reset();
  auto u = traceChain(iface, "PREROUTING", in, podContext());
  EXPECT_EQ(u.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_NE(u.outcomes[0].reason.find("input interface"), std::string::npos);
  // INPUT or FORWARD depends on the local addresses.
  auto rules = rulesetFromFixture("kube_proxy_node.save");
  auto unknown =
      traceConnection(rules, arriving("10.1.2.3:80", "192.0.2.200", "eth0"), TraceContext{});
  ASSERT_EQ(unknown.outcomes.size(), 1u);
  EXPECT_EQ(unknown.outcomes[0].kind, OutcomeKind::kUndetermined);
}

// A REDIRECT in PREROUTING sends the packet to the receiving interface's first address, not to
// loopback: a filter INPUT rule on 127.0.0.1 does not see it, one on that address does.
TEST(TraceFilterTest, RedirectInPreroutingGoesToTheReceivingInterfacesFirstAddress) {
  auto rules = parseIptablesSave(
      "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
      "-A PREROUTING -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 15006\n"
      "COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
      "-A INPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 15006 -j REJECT\n"
      "-A INPUT -d 10.244.0.9/32 -p tcp -m tcp --dport 15006 -j REJECT\n"
      "COMMIT\n");
  ASSERT_TRUE(rules.ok()) << rules.error().message;
  TraceContext context = podContext();
  context.interface_addresses =
      [](const std::string& name) -> std::optional<std::vector<IpAddress>> {
    if (name == "eth0") {
      return std::vector<IpAddress>{*IpAddress::parse("fe80::1"), *IpAddress::parse("10.244.0.5"),
                                    *IpAddress::parse("10.244.0.9"),
                                    *IpAddress::parse("fd00:244::5")};
    }
    if (name == "bare") return std::vector<IpAddress>{};
    return std::nullopt;
  };
  auto p = arriving("10.244.0.9:8080", "192.0.2.200", "eth0");
  auto r = traceConnection(*rules, p, context);
  ASSERT_EQ(r.outcomes.size(), 1u);
  const auto& o = r.outcomes[0];
  EXPECT_EQ(o.kind, OutcomeKind::kRedirect);
  EXPECT_EQ(dest(o), "10.244.0.5:15006");
  EXPECT_EQ(o.accepted_by, "filter INPUT: accepted (policy ACCEPT)");
  EXPECT_EQ(describeOutcome(o, p),
            "REDIRECT to local port 15006 on 10.244.0.5; filter INPUT: accepted (policy ACCEPT), "
            "100%");

  // An interface with no IPv4 address: the kernel drops the packet.
  auto bare = traceConnection(*rules, arriving("10.244.0.9:8080", "192.0.2.200", "bare"), context);
  ASSERT_EQ(bare.outcomes.size(), 1u);
  EXPECT_EQ(bare.outcomes[0].kind, OutcomeKind::kDrop);
  EXPECT_NE(describeOutcome(bare.outcomes[0], p).find("bare has no IPv4 address"),
            std::string::npos);
  // Unknown addresses: undetermined, never loopback by default.
  auto unknown =
      traceConnection(*rules, arriving("10.244.0.9:8080", "192.0.2.200", "eth9"), context);
  ASSERT_EQ(unknown.outcomes.size(), 1u);
  EXPECT_EQ(unknown.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_NE(unknown.outcomes[0].reason.find("first address of eth9"), std::string::npos)
      << unknown.outcomes[0].reason;
  // A packet this netns sends is still redirected to loopback.
  auto out =
      traceChain(natWith({}, {"-A OUTPUT -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 15001"}),
                 "OUTPUT", packet("10.1.2.3:8080"), context);
  EXPECT_EQ(dest(out.outcomes[0]), "127.0.0.1:15001");
  // IPv6: the first address of the destination's scope.
  auto v6 = traceChain(natWith({}, {"-A PREROUTING -p tcp -j REDIRECT --to-ports 15006"}),
                       "PREROUTING", arriving("[fd00:244::9]:80", "fd00:1::2", "eth0"), context);
  EXPECT_EQ(dest(v6.outcomes[0]), "[fd00:244::5]:15006");
  auto ll = traceChain(natWith({}, {"-A PREROUTING -p tcp -j REDIRECT --to-ports 15006"}),
                       "PREROUTING", arriving("[fe80::9]:80", "fe80::2", "eth0"), context);
  EXPECT_EQ(dest(ll.outcomes[0]), "[fe80::1]:15006");
}

// raw and mangle come before nat, so a DROP there is the outcome; nat POSTROUTING's source NAT
// comes after the filter verdict and is shown with it.
TEST(TraceFilterTest, RawAndMangleDropsAndPostroutingSourceNat) {
  auto rules = parseIptablesSave(
      "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
      "-A OUTPUT -d 10.9.9.9/32 -j DROP\nCOMMIT\n"
      "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
      ":OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
      "-A PREROUTING -s 192.0.2.0/24 -j DROP\nCOMMIT\n"
      "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
      "-A OUTPUT -d 10.9.9.9/32 -j DNAT --to-destination 10.1.1.1:80\n"
      "-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n");
  ASSERT_TRUE(rules.ok()) << rules.error().message;
  auto raw = traceConnection(*rules, packet("10.9.9.9:80"), nodeContext());
  ASSERT_EQ(raw.outcomes.size(), 1u);
  EXPECT_EQ(raw.outcomes[0].kind, OutcomeKind::kDrop);
  EXPECT_EQ(raw.outcomes[0].table, "raw");
  EXPECT_EQ(raw.outcomes[0].path.front().table, "raw");
  auto mangle =
      traceConnection(*rules, arriving("10.244.0.5:80", "192.0.2.9", "eth0"), nodeContext());
  ASSERT_EQ(mangle.outcomes.size(), 1u);
  EXPECT_EQ(mangle.outcomes[0].kind, OutcomeKind::kDrop);
  EXPECT_EQ(mangle.outcomes[0].table, "mangle");
  EXPECT_EQ(mangle.outcomes[0].chain, "PREROUTING");
  auto p = packet("10.1.2.3:80");
  auto masq = traceConnection(*rules, p, nodeContext());
  ASSERT_EQ(masq.outcomes.size(), 1u);
  EXPECT_EQ(masq.outcomes[0].source_nat, "MASQUERADE in POSTROUTING #1");
  EXPECT_NE(describeOutcome(masq.outcomes[0], p).find("; source NAT: MASQUERADE in POSTROUTING #1"),
            std::string::npos)
      << describeOutcome(masq.outcomes[0], p);
  EXPECT_TRUE(pathHas(masq.outcomes[0], "nat", "POSTROUTING"));
  EXPECT_EQ(masq.tables, (std::vector<std::string>{"nat", "raw", "mangle"}));
}

// kube-proxy masquerades what it marked (an external client's NodePort connection), not a
// pod's connection to a ClusterIP.
TEST(TraceFilterTest, KubeProxyMasqueradesMarkedConnectionsInPostrouting) {
  auto rules = rulesetFromFixture("kube_proxy_node.save");
  auto cluster = traceConnection(rules, packet("10.96.50.10:8080"), nodeContext());
  ASSERT_EQ(cluster.outcomes.size(), 3u);
  for (const auto& o : cluster.outcomes) EXPECT_EQ(o.source_nat, "") << o.source_nat;
  auto external =
      traceConnection(rules, arriving("198.51.100.7:443", "203.0.113.9", "eth0"), nodeContext());
  bool masqueraded = false;
  for (const auto& o : external.outcomes) {
    if (o.kind == OutcomeKind::kDnat && o.mark == 0x4000u) {
      EXPECT_EQ(o.source_nat, "MASQUERADE --random-fully in KUBE-POSTROUTING #3");
      masqueraded = true;
    }
  }
  EXPECT_TRUE(masqueraded);
}

// ---- rendering ----------------------------------------------------------------------------

TEST(TraceTest, RendersPathAndOutcomesForTheSeed) {
  TraceReport report;
  report.backend = "iptables-nft";
  report.packet = packet("10.1.122.241:9999");
  report.notes = {"gid not given: using 0"};
  report.result =
      traceNatOutput(natFromFixture("kube_proxy_seed.save"), report.packet, podContext());
  const std::string text = renderTrace(report);
  EXPECT_EQ(
      text,
      "Trace: tcp to 10.1.122.241:9999 from uid 0, gid 0, source 10.244.0.5, out eth0 — nat "
      "table via iptables-nft\n"
      "Note: gid not given: using 0\n"
      "\n"
      "Path 1 of 2 (50.00%):\n"
      "  OUTPUT #1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES → "
      "jump\n"
      "    KUBE-SERVICES #3 -d 10.1.122.241/32 -p tcp -m comment --comment "
      "\"istio-demo/bill-service:http cluster IP\" -m tcp --dport 9999 -j "
      "KUBE-SVC-LFR5ZTL3B5QBR7VJ → jump\n"
      "      KUBE-SVC-LFR5ZTL3B5QBR7VJ #2 -m comment --comment \"istio-demo/bill-service:http "
      "-> 10.244.1.168:80\" -m statistic --mode random --probability 0.50000000000 -j "
      "KUBE-SEP-2OWQ4WZBKQXM6JKW → jump (chosen at random, 50.00%)\n"
      "        KUBE-SEP-2OWQ4WZBKQXM6JKW #2 -p tcp -m comment --comment "
      "\"istio-demo/bill-service:http\" -m tcp -j DNAT --to-destination 10.244.1.168:80 → "
      "DNAT\n"
      "\n"
      "Path 2 of 2 (50.00%):\n"
      "  OUTPUT #1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES → "
      "jump\n"
      "    KUBE-SERVICES #3 -d 10.1.122.241/32 -p tcp -m comment --comment "
      "\"istio-demo/bill-service:http cluster IP\" -m tcp --dport 9999 -j "
      "KUBE-SVC-LFR5ZTL3B5QBR7VJ → jump\n"
      "      KUBE-SVC-LFR5ZTL3B5QBR7VJ #2 -m comment --comment \"istio-demo/bill-service:http "
      "-> 10.244.1.168:80\" -m statistic --mode random --probability 0.50000000000 -j "
      "KUBE-SEP-2OWQ4WZBKQXM6JKW → not chosen at random, 50.00%\n"
      "      KUBE-SVC-LFR5ZTL3B5QBR7VJ #3 -m comment --comment \"istio-demo/bill-service:http "
      "-> 10.244.2.74:80\" -j KUBE-SEP-N7PKW3QR6T4JLV5A → jump\n"
      "        KUBE-SEP-N7PKW3QR6T4JLV5A #2 -p tcp -m comment --comment "
      "\"istio-demo/bill-service:http\" -m tcp -j DNAT --to-destination 10.244.2.74:80 → "
      "DNAT\n"
      "\n"
      "Outcomes:\n"
      "  → DNAT 10.244.1.168:80 via KUBE-SEP-2OWQ4WZBKQXM6JKW, 50.00%\n"
      "  → DNAT 10.244.2.74:80 via KUBE-SEP-N7PKW3QR6T4JLV5A, 50.00%\n");
}

TEST(TraceTest, RendersRemoraCaptureAndPassthrough) {
  TraceReport report;
  report.backend = "iptables-legacy";
  report.packet = packet("10.1.122.241:9999", 1337);
  auto nat = natFromFixture("remora_install_nft.save");
  report.result = traceNatOutput(nat, report.packet, podContext());
  EXPECT_EQ(renderTrace(report),
            "Trace: tcp to 10.1.122.241:9999 from uid 1337, gid 1337, source 10.244.0.5, out eth0 "
            "— nat table via iptables-legacy\n"
            "\n"
            "Path:\n"
            "  OUTPUT #1 -p tcp -j REMORA_OUTPUT → jump\n"
            "    REMORA_OUTPUT #5 -m owner --uid-owner 1337 -j RETURN → return\n"
            "  OUTPUT: no rule decided → policy ACCEPT\n"
            "\n"
            "Outcome:\n"
            "  → no translation: the connection goes to the original destination "
            "10.1.122.241:9999 unmodified (OUTPUT policy ACCEPT), 100%\n");
  report.packet = packet("10.1.122.241:9999", 0);
  report.result = traceNatOutput(nat, report.packet, podContext());
  const std::string text = renderTrace(report);
  EXPECT_NE(text.find("  OUTPUT #1 -p tcp -j REMORA_OUTPUT → jump\n"
                      "    REMORA_OUTPUT #11 -j REMORA_REDIRECT → jump\n"
                      "      REMORA_REDIRECT #1 -p tcp -j REDIRECT --to-ports 15001 → REDIRECT\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("→ REDIRECT to local port 15001 (captured by the proxy's outbound "
                      "listener), 100%"),
            std::string::npos);
}

TEST(TraceTest, JsonCarriesOutcomesAndPaths) {
  TraceReport report;
  report.backend = "iptables-nft";
  report.packet = packet("10.1.122.241:9999");
  report.packet.out_interface.reset();
  report.result =
      traceNatOutput(natFromFixture("kube_proxy_seed.save"), report.packet, podContext());
  auto j = traceToJson(report);
  EXPECT_EQ(j["backend"], "iptables-nft");
  EXPECT_EQ(j["table"], "nat");
  EXPECT_EQ(j["packet"]["destination"], "10.1.122.241:9999");
  EXPECT_EQ(j["packet"]["source"], "10.244.0.5");
  EXPECT_TRUE(j["packet"]["out_interface"].is_null());
  EXPECT_EQ(j["packet"]["uid"], 0);
  ASSERT_EQ(j["outcomes"].size(), 2u);
  const auto& o = j["outcomes"][0];
  EXPECT_EQ(o["kind"], "dnat");
  EXPECT_DOUBLE_EQ(o["probability"].get<double>(), 0.5);
  EXPECT_EQ(o["destination"], "10.244.1.168:80");
  EXPECT_EQ(o["chain"], "KUBE-SEP-2OWQ4WZBKQXM6JKW");
  EXPECT_EQ(o["target"], "DNAT --to-destination 10.244.1.168:80");
  EXPECT_EQ(o["summary"], "DNAT 10.244.1.168:80 via KUBE-SEP-2OWQ4WZBKQXM6JKW, 50.00%");
  ASSERT_EQ(o["path"].size(), 4u);
  EXPECT_EQ(o["path"][0]["chain"], "OUTPUT");
  EXPECT_EQ(o["path"][0]["verdict"], "jump");
  EXPECT_EQ(o["path"][2]["detail"], "chosen at random, 50.00%");
  EXPECT_EQ(j["outcomes"][1]["path"][2]["verdict"], "random-skip");
}

// ---- scale ---------------------------------------------------------------------------------

// A kube-proxy dump of a big cluster: 10k services with 5 endpoints each (~230k lines).
std::string bigKubeProxyDump(int services) {
  std::string text =
      "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
      ":POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n";
  std::string rules =
      "[0:0] -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
      "[0:0] -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n";
  const char* probabilities[] = {"0.20000000019", "0.25000000000", "0.33333333349",
                                 "0.50000000000"};
  for (int s = 0; s < services; ++s) {
    std::string svc = "KUBE-SVC-" + std::to_string(s);
    std::string vip = fmt::format("10.{}.{}.{}", 96 + s / 65536, (s / 256) % 256, s % 256);
    text += ":" + svc + " - [0:0]\n";
    rules += fmt::format(
        "[0:0] -A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"ns/svc-{}:http cluster "
        "IP\" -m tcp --dport 80 -j {}\n",
        vip, s, svc);
    for (int e = 0; e < 5; ++e) {
      std::string sep = fmt::format("KUBE-SEP-{}-{}", s, e);
      std::string ep = fmt::format("10.244.{}.{}:8080", (s * 5 + e) / 256 % 256, (s * 5 + e) % 256);
      text += ":" + sep + " - [0:0]\n";
      rules += fmt::format(
          "[0:0] -A {} -m comment --comment \"ns/svc-{}:http -> {}\"{} -j {}\n", svc, s, ep,
          e < 4 ? fmt::format(" -m statistic --mode random --probability {}", probabilities[e])
                : "",
          sep);
      rules +=
          fmt::format("[0:0] -A {} -s {}/32 -j KUBE-MARK-MASQ\n", sep, ep.substr(0, ep.find(':')));
      rules += fmt::format("[0:0] -A {} -p tcp -m tcp -j DNAT --to-destination {}\n", sep, ep);
    }
  }
  return text + rules + "COMMIT\n";
}

TEST(TraceTest, LargeKubeProxyDumpParsesAndTracesQuickly) {
  const int kServices = 10000;
  std::string text = bigKubeProxyDump(kServices);
  auto start = std::chrono::steady_clock::now();
  auto parsed = parseIptablesSave(text);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  const SavedTable& nat = *parsed->table("nat");
  EXPECT_GT(nat.rules.size() + nat.chains.size(), 200000u);
  // The last service: the walk passes every KUBE-SERVICES rule.
  auto r = traceNatOutput(nat, packet("10.96.39.15:80"), podContext());
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(r.outcomes.size(), 5u);
  for (const auto& o : r.outcomes) {
    EXPECT_EQ(o.kind, OutcomeKind::kDnat);
    EXPECT_NEAR(o.probability, 0.2, 1e-9);
  }
  EXPECT_LT(seconds, 10.0) << "parse + trace of " << kServices << " services took " << seconds;
}

}  // namespace
}  // namespace remora::intercept
