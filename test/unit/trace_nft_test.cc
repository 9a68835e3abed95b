#include "intercept/trace_nft.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "iptables_fixtures.h"
#include "trace_fixtures.h"

namespace remora::intercept {
namespace {

using fixtures::arriving;
using fixtures::readFixture;

// test/fixtures/kube_proxy_nft.nft as libnftables lists it (JSON and `nft -a` text).
NftRuleset kubeProxy() {
  auto r = parseNftRuleset(readFixture("kube_proxy_nft.json"), readFixture("kube_proxy_nft.txt"));
  EXPECT_TRUE(r.ok()) << r.error().message;
  return r.ok() ? *r : NftRuleset{};
}

// The node of the fixture: 10.244.0.5 on eth0, pods behind cni0.
TraceContext node() {
  TraceContext c;
  c.local_networks = std::vector<Cidr>{*Cidr::parse("127.0.0.0/8"), *Cidr::parse("10.244.0.5/32")};
  c.route_device = [](const IpAddress& ip) -> std::optional<std::string> {
    if (Cidr::parse("10.244.0.0/16")->contains(ip)) return "cni0";
    return "eth0";
  };
  return c;
}

TracePacket local(const std::string& dst) {
  TracePacket p;
  p.destination = *SocketAddress::parse(dst);
  p.source = *IpAddress::parse("10.244.0.5");
  p.out_interface = "eth0";
  p.gid = 0;
  return p;
}

TraceResult trace(const NftRuleset& nft, const TracePacket& p) {
  static const SavedRuleset kNoIptables{};
  return traceConnection(kNoIptables, p, node(), &nft);
}

double total(const TraceResult& r) {
  return std::accumulate(r.outcomes.begin(), r.outcomes.end(), 0.0,
                         [](double s, const TraceOutcome& o) { return s + o.probability; });
}

std::string dest(const TraceOutcome& o) { return o.destination ? o.destination->toString() : "-"; }

bool pathHas(const TraceOutcome& o, const std::string& chain) {
  return std::any_of(o.path.begin(), o.path.end(),
                     [&](const TraceStep& s) { return s.chain == chain; });
}

TEST(TraceNftTest, ParsesTablesChainsMapsAndRuleTexts) {
  auto nft = kubeProxy();
  ASSERT_EQ(nft.tables.size(), 1u);
  const auto& t = nft.tables[0];
  EXPECT_EQ(t.label(), "ip kube-proxy");
  EXPECT_TRUE(t.sees(Family::kIpv4));
  EXPECT_FALSE(t.sees(Family::kIpv6));
  const auto& out = t.chains.at("filter-output");
  EXPECT_EQ(out.hook, "output");
  EXPECT_EQ(out.type, "filter");
  EXPECT_EQ(out.priority, -110);
  ASSERT_EQ(out.rules.size(), 2u);
  EXPECT_EQ(out.rules[0].text, "ct state new jump service-endpoints-check");
  ASSERT_EQ(t.sets.at("service-ips").elements.size(), 4u);
  EXPECT_EQ(t.sets.at("no-endpoint-services").elements[0].comment, "shop/cart:http");
  // Base chains in the kernel's order: filter-output (-110), nat-output (-100), post-dnat (-90).
  auto hooks = nftBaseChains(nft, Family::kIpv4, "output");
  ASSERT_EQ(hooks.size(), 3u);
  EXPECT_EQ(hooks[0].chain->name, "filter-output");
  EXPECT_EQ(hooks[1].chain->name, "nat-output");
  EXPECT_EQ(hooks[2].chain->name, "filter-output-post-dnat");
  // iptables-nft's own tables are read through iptables-save, not here.
  auto mixed = parseNftRuleset(
      R"({"nftables":[{"table":{"family":"ip","name":"nat","handle":1}},
                      {"table":{"family":"inet","name":"remora","handle":2}}]})");
  ASSERT_TRUE(mixed.ok());
  ASSERT_EQ(mixed->tables.size(), 1u);
  EXPECT_EQ(mixed->tables[0].label(), "inet remora");
  EXPECT_FALSE(parseNftRuleset("not json").ok());
}

// `nft -a list ruleset` prints an anonymous set inline, so one rule's line can be megabytes long
// (kube-proxy's or a firewall's address lists). Reading it must not recurse per character: the
// parser once ran std::regex over each line and overflowed the stack.
TEST(TraceNftTest, ARuleLineOfMegabytesIsReadWithoutOverflowingTheStack) {
  std::string elements;
  for (int i = 0; i < 200000; ++i)
    elements += fmt::format("10.{}.{}.{}, ", i >> 16, (i >> 8) & 255, i & 255);
  const std::string rule = "ip daddr { " + elements + "10.255.255.255 } drop";
  const std::string text = "table ip t {\n\tchain c {\n\t\t" + rule + " # handle 7 \n\t}\n}\n";
  auto r = parseNftRuleset(
      R"({"nftables":[{"table":{"family":"ip","name":"t","handle":1}},
         {"chain":{"family":"ip","table":"t","name":"c","handle":2}},
         {"rule":{"family":"ip","table":"t","chain":"c","handle":7,"expr":[{"drop":null}]}}]})",
      text);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->tables.size(), 1u);
  const auto& rules = r->tables[0].chains.at("c").rules;
  ASSERT_EQ(rules.size(), 1u);
  EXPECT_EQ(rules[0].text, rule);
}

// Lines that are no rule: declarations, a handle past 64 bits, a comment with no text before it.
TEST(TraceNftTest, OnlyRuleLinesGiveRuleTexts) {
  const std::string text =
      "table ip t {\n"
      "\tchain c { # handle 2\n"
      "\t\ttype filter hook output priority filter; policy accept;\n"
      "\t\tct state new accept # handle 3\n"
      "\t\tdrop # handle 99999999999999999999999\n"
      "\t\t# handle 5\n"
      "\t}\n"
      "}\n";
  auto r = parseNftRuleset(
      R"({"nftables":[{"table":{"family":"ip","name":"t","handle":1}},
         {"chain":{"family":"ip","table":"t","name":"c","handle":2}},
         {"rule":{"family":"ip","table":"t","chain":"c","handle":3,"expr":[{"accept":null}]}},
         {"rule":{"family":"ip","table":"t","chain":"c","handle":5,"expr":[{"accept":null}]}}]})",
      text);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto& rules = r->tables[0].chains.at("c").rules;
  ASSERT_EQ(rules.size(), 2u);
  EXPECT_EQ(rules[0].text, "ct state new accept");
  EXPECT_EQ(rules[1].text, "(handle 5)");
}

TEST(TraceNftTest, ClusterIpOfThreeEndpointsSplitsAThirdEach) {
  auto nft = kubeProxy();
  auto p = local("10.96.0.10:80");
  auto r = trace(nft, p);
  ASSERT_EQ(r.outcomes.size(), 3u);
  const char* endpoints[] = {"10.244.1.3:8080", "10.244.1.4:8080", "10.244.2.9:8080"};
  for (size_t i = 0; i < 3; ++i) {
    const auto& o = r.outcomes[i];
    EXPECT_EQ(o.kind, OutcomeKind::kDnat);
    EXPECT_EQ(dest(o), endpoints[i]);
    EXPECT_EQ(o.table, "ip kube-proxy");
    EXPECT_NEAR(o.probability, 1.0 / 3.0, 1e-12);
    EXPECT_EQ(o.mark, 0u);  // from a pod address: no masquerade mark
    EXPECT_EQ(o.accepted_by,
              "ip kube-proxy filter-output: accepted (policy accept); ip kube-proxy "
              "filter-output-post-dnat: accepted (policy accept)");
  }
  EXPECT_NEAR(total(r), 1.0, 1e-12);
  EXPECT_EQ(r.tables, (std::vector<std::string>{"nat", "ip kube-proxy"}));
  const std::string line = describeOutcome(r.outcomes[0], p);
  EXPECT_EQ(line.substr(0, 60), "DNAT 10.244.1.3:8080 via endpoint-W1-shop/web/tcp/http__10.2");
  EXPECT_NE(line.find(", 33.33%"), std::string::npos) << line;
  // The map lookup and the numgen choice are steps of the path, with the rule text.
  const auto& path = r.outcomes[1].path;
  auto numgen = std::find_if(path.begin(), path.end(), [](const TraceStep& s) {
    return s.detail.find("numgen random chose 1, 33.33%") != std::string::npos;
  });
  ASSERT_NE(numgen, path.end());
  EXPECT_EQ(numgen->rule.substr(0, 26), "numgen random mod 3 vmap {");
  EXPECT_EQ(numgen->verdict, StepVerdict::kGoto);
}

TEST(TraceNftTest, NoEndpointsIsRejectedByTheNoEndpointMap) {
  auto nft = kubeProxy();
  auto p = local("10.96.60.6:80");
  auto r = trace(nft, p);
  ASSERT_EQ(r.outcomes.size(), 1u);
  const auto& o = r.outcomes[0];
  EXPECT_EQ(o.kind, OutcomeKind::kReject);
  EXPECT_EQ(o.chain, "reject-chain");
  EXPECT_EQ(o.comment, "shop/cart:http");
  EXPECT_TRUE(pathHas(o, "service-endpoints-check"));
  EXPECT_EQ(describeOutcome(o, p),
            "rejected (reject with icmp port-unreachable in ip kube-proxy reject-chain #1, "
            "\"shop/cart:http\"): connect() fails at once with ECONNREFUSED, 100%");
  // The node port of the same Service, from outside: nat leaves it, filter-input rejects it.
  auto np = trace(nft, arriving("10.244.0.5:30060", "192.0.2.9", "eth0"));
  ASSERT_EQ(np.outcomes.size(), 1u);
  EXPECT_EQ(np.outcomes[0].kind, OutcomeKind::kReject);
  EXPECT_TRUE(pathHas(np.outcomes[0], "filter-input"));
  EXPECT_TRUE(pathHas(np.outcomes[0], "nodeport-endpoints-check"));
}

TEST(TraceNftTest, LoadBalancerSourceRangesDropOthersAndLetTheRangeThrough) {
  auto nft = kubeProxy();
  auto p = local("198.51.100.7:443");
  auto r = trace(nft, p);
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kDrop);
  EXPECT_EQ(r.outcomes[0].chain, "firewall-API7TCP-shop/api/tcp/https");
  EXPECT_NE(describeOutcome(r.outcomes[0], p).find("connect() times out"), std::string::npos);

  auto in = trace(nft, arriving("198.51.100.7:443", "203.0.113.9", "eth0"));
  ASSERT_EQ(in.outcomes.size(), 2u);
  for (const auto& o : in.outcomes) {
    EXPECT_EQ(o.kind, OutcomeKind::kDnat);
    EXPECT_DOUBLE_EQ(o.probability, 0.5);
    EXPECT_EQ(o.mark, 0x4000u);  // external traffic is marked for masquerade
    EXPECT_NE(o.accepted_by.find("ip kube-proxy filter-forward: accepted (policy accept)"),
              std::string::npos)
        << o.accepted_by;
  }
  EXPECT_EQ(in.outcomes[0].source_nat, "masquerade in ip kube-proxy masquerading #3");
  EXPECT_EQ(dest(in.outcomes[0]), "10.244.1.7:8443");
  EXPECT_EQ(dest(in.outcomes[1]), "10.244.2.7:8443");
}

TEST(TraceNftTest, NodePortGoesThroughTheExternalChain) {
  auto nft = kubeProxy();
  auto r = trace(nft, arriving("10.244.0.5:30080", "192.0.2.9", "eth0"));
  ASSERT_EQ(r.outcomes.size(), 3u);
  for (const auto& o : r.outcomes) {
    EXPECT_EQ(o.kind, OutcomeKind::kDnat);
    EXPECT_EQ(o.mark, 0x4000u);
    EXPECT_TRUE(pathHas(o, "external-WEB4TCP-shop/web/tcp/http"));
  }
  // Not a node port: the services chain passes, nothing translates.
  auto none = trace(nft, arriving("10.244.0.5:30999", "192.0.2.9", "eth0"));
  ASSERT_EQ(none.outcomes.size(), 1u);
  EXPECT_EQ(none.outcomes[0].kind, OutcomeKind::kUnchanged);
}

TEST(TraceNftTest, ClusterIpChecksRejectWrongPortsAndDropUnallocatedAddresses) {
  auto nft = kubeProxy();
  auto port = trace(nft, arriving("10.96.0.10:81", "10.244.1.3", "cni0"));
  ASSERT_EQ(port.outcomes.size(), 1u);
  EXPECT_EQ(port.outcomes[0].kind, OutcomeKind::kReject);
  EXPECT_EQ(port.outcomes[0].comment, "Reject traffic to invalid ports of ClusterIPs");
  auto unallocated = trace(nft, arriving("10.96.99.99:80", "10.244.1.3", "cni0"));
  ASSERT_EQ(unallocated.outcomes.size(), 1u);
  EXPECT_EQ(unallocated.outcomes[0].kind, OutcomeKind::kDrop);
  EXPECT_EQ(unallocated.outcomes[0].comment, "Drop traffic to unallocated ClusterIPs");
}

// A small table of the shapes Remora's inet remora table uses, in JSON.
NftRuleset remoraLike() {
  auto r = parseNftRuleset(R"({"nftables":[
    {"table":{"family":"inet","name":"remora"}},
    {"chain":{"family":"inet","table":"remora","name":"nat_output","type":"nat","hook":"output",
              "prio":-100,"policy":"accept"}},
    {"chain":{"family":"inet","table":"remora","name":"REMORA_OUTPUT_v4"}},
    {"chain":{"family":"inet","table":"remora","name":"REMORA_REDIRECT_v4"}},
    {"rule":{"family":"inet","table":"remora","chain":"nat_output","handle":5,"expr":[
      {"match":{"op":"==","left":{"meta":{"key":"nfproto"}},"right":"ipv4"}},
      {"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"tcp"}},
      {"jump":{"target":"REMORA_OUTPUT_v4"}}]}},
    {"rule":{"family":"inet","table":"remora","chain":"REMORA_OUTPUT_v4","handle":6,"expr":[
      {"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},
                "right":{"range":[15000,15001]}}},{"return":null}]}},
    {"rule":{"family":"inet","table":"remora","chain":"REMORA_OUTPUT_v4","handle":7,"expr":[
      {"match":{"op":"==","left":{"meta":{"key":"skuid"}},"right":1337}},{"return":null}]}},
    {"rule":{"family":"inet","table":"remora","chain":"REMORA_OUTPUT_v4","handle":8,"expr":[
      {"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"daddr"}},
                "right":"127.0.0.1"}},{"return":null}]}},
    {"rule":{"family":"inet","table":"remora","chain":"REMORA_OUTPUT_v4","handle":9,"expr":[
      {"jump":{"target":"REMORA_REDIRECT_v4"}}]}},
    {"rule":{"family":"inet","table":"remora","chain":"REMORA_REDIRECT_v4","handle":10,"expr":[
      {"counter":{"packets":0,"bytes":0}},{"redirect":{"port":15001}}]}},
    {"rule":{"family":"inet","table":"remora","chain":"REMORA_REDIRECT_v4","handle":11,"expr":[
      {"xt":{"type":"match","name":"connlimit"}},{"drop":null}]}}
  ]})");
  EXPECT_TRUE(r.ok()) << r.error().message;
  return r.ok() ? *r : NftRuleset{};
}

TEST(TraceNftTest, RemorasOwnTableRedirectsTheAppAndLetsTheProxyThrough) {
  auto nft = remoraLike();
  auto app = trace(nft, local("10.1.2.3:80"));
  ASSERT_EQ(app.outcomes.size(), 1u);
  EXPECT_EQ(app.outcomes[0].kind, OutcomeKind::kRedirect);
  EXPECT_EQ(dest(app.outcomes[0]), "127.0.0.1:15001");
  EXPECT_EQ(app.outcomes[0].table, "inet remora");
  auto proxy = local("10.1.2.3:80");
  proxy.uid = 1337;
  auto through = trace(nft, proxy);
  ASSERT_EQ(through.outcomes.size(), 1u);
  EXPECT_EQ(through.outcomes[0].kind, OutcomeKind::kUnchanged);
  // An iptables-nft compat match is not evaluated: undetermined, naming the rule.
  auto table = nft.tables[0];
  auto& redirect = table.chains.at("REMORA_REDIRECT_v4").rules;
  std::swap(redirect[0], redirect[1]);
  auto u = traceNftChain(table, "nat_output", local("10.1.2.3:80"), node());
  ASSERT_EQ(u.outcomes.size(), 1u);
  EXPECT_EQ(u.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_NE(u.outcomes[0].reason.find("REMORA_REDIRECT_v4 #1"), std::string::npos)
      << u.outcomes[0].reason;
}

// One `ip t` table whose base chain `c` (type nat unless `type`, on `hook` at `prio`) holds
// `rules` (each the JSON statements of one rule); `extra`: more JSON items (chains, maps, rules).
NftRuleset oneTable(const std::vector<std::string>& rules, const std::string& extra = "",
                    const std::string& hook = "output", int prio = -100,
                    const std::string& type = "nat") {
  std::string j = R"({"nftables":[{"table":{"family":"ip","name":"t"}},)";
  j += fmt::format(
      R"({{"chain":{{"family":"ip","table":"t","name":"c","type":"{}","hook":"{}","prio":{},)"
      R"("policy":"accept"}}}})",
      type, hook, prio);
  uint64_t handle = 100;
  for (const auto& r : rules) {
    j += fmt::format(
        R"(,{{"rule":{{"family":"ip","table":"t","chain":"c","handle":{},"expr":{}}}}})", handle++,
        r);
  }
  if (!extra.empty()) j += "," + extra;
  j += "]}";
  auto r = parseNftRuleset(j);
  EXPECT_TRUE(r.ok()) << r.error().message << "\n" << j;
  return r.ok() ? *r : NftRuleset{};
}

const TraceStep* stepWith(const TraceOutcome& o, const std::string& detail) {
  for (const auto& s : o.path) {
    if (s.detail.find(detail) != std::string::npos) return &s;
  }
  return nullptr;
}

TEST(TraceNftTest, NumgenIncIsARoundRobinWithExactShares) {
  // numgen inc mod 3 vmap { 0 : goto a, 1-2 : goto b }; a and b dnat.
  auto nft = oneTable({R"([{"vmap":{"key":{"numgen":{"mode":"inc","mod":3,"offset":0}},
            "data":{"set":[[0,{"goto":{"target":"a"}}],[{"range":[1,2]},{"goto":{"target":"b"}}]]}}}])"},
                      R"({"chain":{"family":"ip","table":"t","name":"a"}},
         {"chain":{"family":"ip","table":"t","name":"b"}},
         {"rule":{"family":"ip","table":"t","chain":"a","handle":1,"expr":[
           {"dnat":{"addr":"10.1.0.1","port":8080}}]}},
         {"rule":{"family":"ip","table":"t","chain":"b","handle":2,"expr":[
           {"dnat":{"addr":"10.1.0.2","port":8080}}]}})");
  auto r = trace(nft, local("10.96.0.1:80"));
  ASSERT_EQ(r.outcomes.size(), 2u);
  EXPECT_EQ(dest(r.outcomes[0]), "10.1.0.1:8080");
  EXPECT_NEAR(r.outcomes[0].probability, 1.0 / 3.0, 1e-12);
  EXPECT_EQ(dest(r.outcomes[1]), "10.1.0.2:8080");
  EXPECT_NEAR(r.outcomes[1].probability, 2.0 / 3.0, 1e-12);
  EXPECT_NE(stepWith(r.outcomes[0],
                     "numgen inc (round robin) chose 0: 1 of every 3 connections in turn, 33.33%"),
            nullptr);
  EXPECT_NE(stepWith(r.outcomes[1],
                     "numgen inc (round robin) chose {\"range\":[1,2]}: 2 of "
                     "every 3 connections in turn, 66.67%"),
            nullptr);
  for (const auto& o : r.outcomes) EXPECT_NE(o.kind, OutcomeKind::kUndetermined) << o.reason;

  // numgen inc mod 2 0 accept; dnat to 10.1.0.3:80: half accepted unchanged, half translated.
  auto half = oneTable({R"([{"match":{"op":"==","left":{"numgen":{"mode":"inc","mod":2,"offset":0}},
                               "right":0}},{"accept":null}])",
                        R"([{"dnat":{"addr":"10.1.0.3","port":80}}])"});
  auto h = trace(half, local("10.96.0.1:80"));
  ASSERT_EQ(h.outcomes.size(), 2u);
  EXPECT_EQ(h.outcomes[0].kind, OutcomeKind::kUnchanged);
  EXPECT_DOUBLE_EQ(h.outcomes[0].probability, 0.5);
  EXPECT_NE(stepWith(h.outcomes[0], "numgen inc (round robin) matched: 1 of every 2"), nullptr);
  EXPECT_EQ(h.outcomes[1].kind, OutcomeKind::kDnat);
  EXPECT_DOUBLE_EQ(h.outcomes[1].probability, 0.5);
  EXPECT_NE(stepWith(h.outcomes[1], "numgen inc (round robin) did not match: 1 of every 2"),
            nullptr);
  EXPECT_NEAR(total(h), 1.0, 1e-12);
  // A mod the walker will not enumerate is named, not guessed.
  auto huge = oneTable({R"([{"vmap":{"key":{"numgen":{"mode":"inc","mod":100000}},
                              "data":{"set":[[0,{"accept":null}]]}}}])"});
  auto u = trace(huge, local("10.96.0.1:80"));
  ASSERT_EQ(u.outcomes.size(), 1u);
  EXPECT_EQ(u.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_NE(u.outcomes[0].reason.find("numgen: mod must be 1..65536"), std::string::npos)
      << u.outcomes[0].reason;
}

TEST(TraceNftTest, CtMarkIsSetMatchedAndCarriedToTheNextBaseChain) {
  // A mangle-priority chain sets the packet mark and saves it to the connection; the nat chain
  // (a later base chain) matches ct mark and meta mark.
  auto nft = oneTable(
      {R"([{"mangle":{"key":{"meta":{"key":"mark"}},"value":16}},
           {"mangle":{"key":{"ct":{"key":"mark"}},"value":{"|":[{"meta":{"key":"mark"}},4]}}}])"},
      R"({"chain":{"family":"ip","table":"t","name":"n","type":"nat","hook":"output","prio":-100,
                   "policy":"accept"}},
         {"rule":{"family":"ip","table":"t","chain":"n","handle":1,"expr":[
           {"match":{"op":"==","left":{"ct":{"key":"mark"}},"right":99}},{"drop":null}]}},
         {"rule":{"family":"ip","table":"t","chain":"n","handle":2,"expr":[
           {"match":{"op":"==","left":{"&":[{"ct":{"key":"mark"}},4]},"right":4}},
           {"match":{"op":"==","left":{"meta":{"key":"mark"}},"right":16}},
           {"mangle":{"key":{"meta":{"key":"mark"}},"value":{"ct":{"key":"mark"}}}},
           {"dnat":{"addr":"10.1.0.9","port":81}}]}})",
      "output", -150, "filter");
  auto r = trace(nft, local("10.96.0.1:80"));
  ASSERT_EQ(r.outcomes.size(), 1u);
  const auto& o = r.outcomes[0];
  EXPECT_EQ(o.kind, OutcomeKind::kDnat) << o.reason;
  EXPECT_EQ(dest(o), "10.1.0.9:81");
  EXPECT_EQ(o.ct_mark, 0x14u);
  EXPECT_EQ(o.mark, 0x14u);  // meta mark set ct mark
  EXPECT_NE(stepWith(o, "ct mark is now 0x14"), nullptr);
  // A new connection's ct mark is 0 until a rule sets it.
  auto fresh = oneTable({R"([{"match":{"op":"==","left":{"ct":{"key":"mark"}},"right":0}},
                              {"drop":null}])"});
  auto f = trace(fresh, local("10.96.0.1:80"));
  ASSERT_EQ(f.outcomes.size(), 1u);
  EXPECT_EQ(f.outcomes[0].kind, OutcomeKind::kDrop);
}

TEST(TraceNftTest, DnatAndSnatToMapsTranslateByTheMappedValue) {
  // The shapes nft 1.0.6 lists for: dnat ip addr . port to ip daddr . tcp dport map @m;
  // dnat to ip daddr map { ... }; dnat to numgen inc mod 2 map { 0 : A, 1 : B }.
  auto nft =
      oneTable({R"([{"dnat":{"family":"ip","addr":{"map":{"key":{"concat":[
            {"payload":{"protocol":"ip","field":"daddr"}},
            {"payload":{"protocol":"tcp","field":"dport"}}]},"data":"@m"}}}}])",
                R"([{"dnat":{"addr":{"map":{"key":{"payload":{"protocol":"ip","field":"daddr"}},
            "data":{"set":[["10.0.0.3","10.1.0.3"]]}}}}}])",
                R"([{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"daddr"}},
                     "right":"10.0.0.4"}},
           {"dnat":{"addr":{"map":{"key":{"numgen":{"mode":"inc","mod":2,"offset":0}},
            "data":{"set":[[0,"10.1.0.4"],[1,"10.1.0.5"]]}}}}}])"},
               R"({"map":{"family":"ip","name":"m","table":"t","type":["ipv4_addr","inet_service"],
                 "map":"ipv4_addr . inet_service",
                 "elem":[[{"concat":["10.0.0.1",80]},{"concat":["10.1.0.1",8080]}]]}})");
  auto named = trace(nft, local("10.0.0.1:80"));
  ASSERT_EQ(named.outcomes.size(), 1u);
  EXPECT_EQ(named.outcomes[0].kind, OutcomeKind::kDnat) << named.outcomes[0].reason;
  EXPECT_EQ(dest(named.outcomes[0]), "10.1.0.1:8080");
  EXPECT_NE(stepWith(named.outcomes[0], "10.0.0.1 . 80 matched"), nullptr);

  auto inl = trace(nft, local("10.0.0.3:443"));
  ASSERT_EQ(inl.outcomes.size(), 1u);
  EXPECT_EQ(dest(inl.outcomes[0]), "10.1.0.3:443");  // the port is kept
  EXPECT_EQ(inl.outcomes[0].target, "dnat to 10.1.0.3");

  auto rr = trace(nft, local("10.0.0.4:80"));
  ASSERT_EQ(rr.outcomes.size(), 2u);
  EXPECT_EQ(dest(rr.outcomes[0]), "10.1.0.4:80");
  EXPECT_EQ(dest(rr.outcomes[1]), "10.1.0.5:80");
  for (const auto& o : rr.outcomes) EXPECT_DOUBLE_EQ(o.probability, 0.5);

  // In no map: each lookup fails, so the rules do not match and nothing translates.
  auto none = trace(nft, local("10.0.0.9:80"));
  ASSERT_EQ(none.outcomes.size(), 1u);
  EXPECT_EQ(none.outcomes[0].kind, OutcomeKind::kUnchanged);
  EXPECT_NE(stepWith(none.outcomes[0], "10.0.0.9 . 80 is not in the map: no verdict"), nullptr);

  // snat to ip saddr map { ... } in postrouting: shown as the source NAT.
  auto snat = oneTable({R"([{"snat":{"addr":{"map":{"key":{"payload":{"protocol":"ip",
                             "field":"saddr"}},"data":{"set":[["10.244.0.5","192.0.2.1"]]}}}}}])"},
                       "", "postrouting", 100);
  auto s = trace(snat, local("10.0.0.9:80"));
  ASSERT_EQ(s.outcomes.size(), 1u);
  EXPECT_EQ(s.outcomes[0].source_nat, "snat to 192.0.2.1 in ip t c #1");
}

TEST(TraceNftTest, XtCompatMatchesAreUndeterminedByName) {
  auto nft = oneTable({R"([{"xt":{"type":"match","name":"comment"}},
                           {"xt":{"type":"match","name":"nfacct"}},
                           {"xt":{"type":"match","name":"connlimit"}},{"drop":null}])"});
  auto r = trace(nft, local("10.0.0.9:80"));
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].kind, OutcomeKind::kUndetermined);
  EXPECT_NE(r.outcomes[0].reason.find(
                "c #1: iptables compat match 'connlimit' (xt): libnftables does not show its "
                "options, so the trace cannot evaluate it"),
            std::string::npos)
      << r.outcomes[0].reason;
  auto target = oneTable({R"([{"xt":{"type":"target","name":"CLASSIFY"}}])"});
  auto t = trace(target, local("10.0.0.9:80"));
  ASSERT_EQ(t.outcomes.size(), 1u);
  EXPECT_NE(t.outcomes[0].reason.find("iptables compat target 'CLASSIFY' (xt)"), std::string::npos)
      << t.outcomes[0].reason;
}

}  // namespace
}  // namespace remora::intercept
