#include "intercept/dump.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

#include "intercept/plan.h"
#include "intercept/trace_nft.h"
#include "iptables_fixtures.h"

namespace remora::intercept {
namespace {

using fixtures::natFromText;
using fixtures::readFixture;

FamilyTables fromFixture(const std::string& name, Family family = Family::kIpv4,
                         const std::string& backend = "iptables-nft") {
  return FamilyTables{backend, family, natFromText(readFixture(name))};
}

std::vector<std::string> split(const std::string& line) {
  auto t = tokenizeRule(line);
  EXPECT_TRUE(t.ok());
  return t.ok() ? *t : std::vector<std::string>{};
}

std::string describe(const std::string& chain, const std::string& args, bool last = false) {
  return describeRule(chain, split(args), last);
}

TEST(DumpTest, DescribesRemorasRuleShapes) {
  EXPECT_EQ(describe("OUTPUT", "-p tcp -j REMORA_OUTPUT"),
            "all TCP leaving the pod enters REMORA_OUTPUT");
  EXPECT_EQ(describe("PREROUTING", "-p tcp -j REMORA_INBOUND"),
            "all TCP arriving at the pod enters REMORA_INBOUND");
  EXPECT_EQ(describe("REMORA_OUTPUT", "-m owner --uid-owner 1337 -j RETURN"),
            "proxy's own traffic (uid 1337): not captured");
  EXPECT_EQ(describe("REMORA_OUTPUT", "-m owner --gid-owner 1337 -j RETURN"),
            "proxy's own traffic (gid 1337): not captured");
  EXPECT_EQ(describe("REMORA_OUTPUT", "-o lo -m owner ! --uid-owner 1337 -j RETURN"),
            "app traffic on loopback (not uid 1337): not captured");
  EXPECT_EQ(describe("REMORA_OUTPUT",
                     "! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j REMORA_IN_REDIRECT"),
            "proxy to a local non-loopback address (uid 1337): back through the inbound redirect");
  EXPECT_EQ(describe("REMORA_OUTPUT", "-s 127.0.0.6/32 -o lo -j RETURN"),
            "inbound passthrough source 127.0.0.6 on lo: not captured");
  EXPECT_EQ(describe("REMORA_OUTPUT", "-s ::6/128 -o lo -j RETURN"),
            "inbound passthrough source ::6 on lo: not captured");
  EXPECT_EQ(describe("REMORA_OUTPUT", "-d 127.0.0.1/32 -j RETURN"),
            "to 127.0.0.1/32: not captured");
  EXPECT_EQ(describe("REMORA_OUTPUT", "-d ::1/128 -j RETURN"), "to ::1/128: not captured");
  EXPECT_EQ(describe("REMORA_OUTPUT", "-d 10.0.0.0/8 -j RETURN"),
            "destination 10.0.0.0/8 excluded: not captured");
  EXPECT_EQ(describe("REMORA_OUTPUT", "-p tcp -m tcp --dport 22 -j RETURN"),
            "tcp port 22 excluded: not captured");
  EXPECT_EQ(describe("REMORA_INBOUND", "-p tcp -m tcp --dport 15020:15021 -j RETURN"),
            "tcp ports 15020-15021 excluded: not captured");
  EXPECT_EQ(describe("REMORA_OUTPUT", "-o eth1 -j RETURN"),
            "leaving on eth1 excluded: not captured");
  EXPECT_EQ(describe("REMORA_OUTPUT", "-j REMORA_REDIRECT", true),
            "everything else: redirect to the proxy (REMORA_REDIRECT)");
  EXPECT_EQ(describe("REMORA_INBOUND", "-p tcp -j REMORA_IN_REDIRECT", true),
            "everything else: redirect to the proxy (REMORA_IN_REDIRECT)");
  EXPECT_EQ(describe("REMORA_REDIRECT", "-p tcp -j REDIRECT --to-ports 15001"),
            "redirect to local port 15001 (the proxy's outbound listener)");
  EXPECT_EQ(describe("REMORA_IN_REDIRECT", "-p tcp -j REDIRECT --to-ports 15006"),
            "redirect to local port 15006 (the proxy's inbound listener)");
}

TEST(DumpTest, DescribesOtherRulesFromTheirMatches) {
  EXPECT_EQ(describe("REMORA_OUTPUT", "-d 10.96.0.0/12 -j REMORA_REDIRECT"),
            "destination 10.96.0.0/12: redirect to the proxy (REMORA_REDIRECT)");
  EXPECT_EQ(describe("REMORA_INBOUND", "-p tcp -m tcp --dport 8080 -j REMORA_IN_REDIRECT"),
            "tcp port 8080: redirect to the proxy's inbound side (REMORA_IN_REDIRECT)");
  EXPECT_EQ(
      describe("OUTPUT",
               "-d 10.1.122.241/32 -p tcp -m comment --comment \"istio-demo/bill-service:http "
               "cluster IP\" -m tcp --dport 9999 -j KUBE-SVC-LFR5ZTL3B5QBR7VJ"),
      "destination 10.1.122.241/32, tcp port 9999: jump to KUBE-SVC-LFR5ZTL3B5QBR7VJ "
      "(\"istio-demo/bill-service:http cluster IP\")");
  EXPECT_EQ(describe("OUTPUT",
                     "! -s 10.244.0.0/16 -p udp -m mark ! --mark 0x4000/0x4000 -j "
                     "MARK --set-xmark 0x4000/0x4000"),
            "source other than 10.244.0.0/16, UDP, mark not 0x4000/0x4000: mark set-xmark "
            "0x4000/0x4000");
  EXPECT_EQ(describe("OUTPUT", "-p tcp -m multiport --dports 80,90:95 -j REDIRECT --to-ports 8080"),
            "tcp ports 80,90-95: redirect to local port 8080");
  EXPECT_EQ(describe("X", "-m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-A"),
            "at random (50.00%): jump to KUBE-SEP-A");
  EXPECT_EQ(describe("X", "-m addrtype --dst-type LOCAL -g KUBE-NODEPORTS"),
            "destination type LOCAL: go to KUBE-NODEPORTS");
  EXPECT_EQ(describe("X", "-p tcp -m conntrack --ctstate NEW -j ACCEPT"),
            "TCP, conntrack state NEW: accepted (no translation)");
  EXPECT_EQ(describe("X", "-j DNAT --to-destination 10.244.1.168:80"),
            "everything: DNAT to 10.244.1.168:80");
  EXPECT_EQ(describe("X", "-o lo", true), "leaving on lo: counted only");
  EXPECT_EQ(describe("X", "-m owner"), "everything: counted only");
  EXPECT_EQ(describe("X", "-j SNAT --to-source 1.2.3.4"), "everything: SNAT --to-source 1.2.3.4");
  EXPECT_EQ(describe("X", "-x"), "(not understood: unexpected '-x')");
}

// The real install (nft, with counters after a few connects) rendered end to end.
TEST(DumpTest, RendersARealInstall) {
  DumpReport report = buildDump({fromFixture("remora_install_nft.save")});
  ASSERT_EQ(report.families.size(), 1u);
  EXPECT_TRUE(report.families[0].installed);
  EXPECT_TRUE(report.families[0].foreign.empty());
  EXPECT_TRUE(report.families[0].warnings.empty());
  EXPECT_EQ(
      renderDump(report),
      "IPv4 (iptables-nft): Remora's interception is installed\n"
      "  OUTPUT (built-in, policy ACCEPT; Remora's jumps only)\n"
      "    #1 all TCP leaving the pod enters REMORA_OUTPUT  [6 packets, 360 bytes]\n"
      "       -p tcp -j REMORA_OUTPUT\n"
      "  REMORA_OUTPUT\n"
      "    #1 tcp port 22 excluded: not captured  [1 packet, 60 bytes]\n"
      "       -p tcp -m tcp --dport 22 -j RETURN\n"
      "    #2 inbound passthrough source 127.0.0.6 on lo: not captured  [0 packets, 0 bytes]\n"
      "       -s 127.0.0.6/32 -o lo -j RETURN\n"
      "    #3 proxy to a local non-loopback address (uid 1337): back through the inbound "
      "redirect  [0 packets, 0 bytes]\n"
      "       ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j REMORA_IN_REDIRECT\n"
      "    #4 app traffic on loopback (not uid 1337): not captured  [2 packets, 120 bytes]\n"
      "       -o lo -m owner ! --uid-owner 1337 -j RETURN\n"
      "    #5 proxy's own traffic (uid 1337): not captured  [1 packet, 60 bytes]\n"
      "       -m owner --uid-owner 1337 -j RETURN\n"
      "    #6 proxy to a local non-loopback address (gid 1337): back through the inbound "
      "redirect  [0 packets, 0 bytes]\n"
      "       ! -d 127.0.0.1/32 -o lo -m owner --gid-owner 1337 -j REMORA_IN_REDIRECT\n"
      "    #7 app traffic on loopback (not gid 1337): not captured  [0 packets, 0 bytes]\n"
      "       -o lo -m owner ! --gid-owner 1337 -j RETURN\n"
      "    #8 proxy's own traffic (gid 1337): not captured  [0 packets, 0 bytes]\n"
      "       -m owner --gid-owner 1337 -j RETURN\n"
      "    #9 to 127.0.0.1/32: not captured  [0 packets, 0 bytes]\n"
      "       -d 127.0.0.1/32 -j RETURN\n"
      "    #10 destination 10.96.0.0/12 excluded: not captured  [1 packet, 60 bytes]\n"
      "       -d 10.96.0.0/12 -j RETURN\n"
      "    #11 everything else: redirect to the proxy (REMORA_REDIRECT)  [1 packet, 60 "
      "bytes]\n"
      "       -j REMORA_REDIRECT\n"
      "  REMORA_REDIRECT\n"
      "    #1 redirect to local port 15001 (the proxy's outbound listener)  [1 packet, 60 "
      "bytes]\n"
      "       -p tcp -j REDIRECT --to-ports 15001\n"
      "  PREROUTING (built-in, policy ACCEPT; Remora's jumps only)\n"
      "    #1 all TCP arriving at the pod enters REMORA_INBOUND  [0 packets, 0 bytes]\n"
      "       -p tcp -j REMORA_INBOUND\n"
      "  REMORA_INBOUND\n"
      "    #1 tcp ports 15000-15001 excluded: not captured  [0 packets, 0 bytes]\n"
      "       -p tcp -m tcp --dport 15000:15001 -j RETURN\n"
      "    #2 tcp port 15006 excluded: not captured  [0 packets, 0 bytes]\n"
      "       -p tcp -m tcp --dport 15006 -j RETURN\n"
      "    #3 tcp ports 15020-15021 excluded: not captured  [0 packets, 0 bytes]\n"
      "       -p tcp -m tcp --dport 15020:15021 -j RETURN\n"
      "    #4 tcp port 15090 excluded: not captured  [0 packets, 0 bytes]\n"
      "       -p tcp -m tcp --dport 15090 -j RETURN\n"
      "    #5 everything else: redirect to the proxy (REMORA_IN_REDIRECT)  [0 packets, 0 "
      "bytes]\n"
      "       -p tcp -j REMORA_IN_REDIRECT\n"
      "  REMORA_IN_REDIRECT\n"
      "    #1 redirect to local port 15006 (the proxy's inbound listener)  [0 packets, 0 "
      "bytes]\n"
      "       -p tcp -j REDIRECT --to-ports 15006\n");
}

TEST(DumpTest, SaysWhenRemoraIsNotInstalledAndListsForeignHooks) {
  DumpReport report = buildDump({fromFixture("kube_proxy_seed.save")});
  ASSERT_EQ(report.families.size(), 1u);
  const auto& f = report.families[0];
  EXPECT_FALSE(f.installed);
  EXPECT_TRUE(f.chains.empty());
  ASSERT_EQ(f.foreign.size(), 3u);
  EXPECT_EQ(f.foreign[1].chain, "OUTPUT");
  EXPECT_EQ(f.foreign[1].target, "KUBE-SERVICES");
  EXPECT_FALSE(f.foreign[1].before_remora);
  EXPECT_EQ(renderDump(report),
            "IPv4 (iptables-nft): Remora is not installed (no REMORA_* chains or jumps in the nat "
            "table)\n"
            "  Other rules on the same built-in chains:\n"
            "    PREROUTING also jumps to KUBE-SERVICES (not Remora's)\n"
            "    OUTPUT also jumps to KUBE-SERVICES (not Remora's)\n"
            "    POSTROUTING also jumps to KUBE-POSTROUTING (not Remora's)\n");
}

TEST(DumpTest, ForeignJumpsAheadOfRemorasAreFlagged) {
  DumpReport report = buildDump({fromFixture("kube_proxy_and_remora.save")});
  const auto& f = report.families[0];
  EXPECT_TRUE(f.installed);
  ASSERT_EQ(f.foreign.size(), 3u);
  EXPECT_TRUE(f.foreign[0].before_remora);
  EXPECT_EQ(f.foreign[1].message,
            "OUTPUT also jumps to KUBE-SERVICES (not Remora's), rule #1 before Remora's jump: a "
            "translation there ends the nat walk before Remora sees the connection");
  EXPECT_FALSE(f.foreign[2].before_remora);  // POSTROUTING holds no Remora jump
  // Remora's hook keeps its real position in OUTPUT.
  ASSERT_FALSE(f.chains.empty());
  EXPECT_EQ(f.chains[0].name, "OUTPUT");
  ASSERT_EQ(f.chains[0].rules.size(), 1u);
  EXPECT_EQ(f.chains[0].rules[0].index, 2u);
}

TEST(DumpTest, ForeignNonJumpRulesAreDescribed) {
  auto nat = natFromText(
      "*nat\n:OUTPUT ACCEPT [0:0]\n:REMORA_OUTPUT - [0:0]\n"
      "-A OUTPUT -p tcp -j REMORA_OUTPUT\n"
      "-A OUTPUT -p tcp -m tcp --dport 25 -j REDIRECT --to-ports 2525\n"
      "-A REMORA_OUTPUT -j RETURN\nCOMMIT\n");
  DumpReport report = buildDump({{"iptables-legacy", Family::kIpv4, nat}});
  ASSERT_EQ(report.families[0].foreign.size(), 1u);
  EXPECT_EQ(report.families[0].foreign[0].message,
            "OUTPUT also has rule #2: tcp port 25: redirect to local port 2525 (not Remora's)");
  EXPECT_EQ(report.families[0].foreign[0].target, "REDIRECT");
}

TEST(DumpTest, WarnsAboutPartialAndDuplicatedInstalls) {
  auto nat = natFromText(
      "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
      ":REMORA_INBOUND - [0:0]\n:REMORA_OUTPUT - [0:0]\n:REMORA_REDIRECT - [0:0]\n"
      "-A PREROUTING -p tcp -j REMORA_OUTPUT\n"
      "-A PREROUTING -p tcp -j REMORA_OUTPUT\n"
      "-A REMORA_INBOUND -p tcp -j RETURN\n"
      "-A REMORA_OUTPUT -j REMORA_REDIRECT\n"
      "COMMIT\n");
  DumpReport report = buildDump({{"iptables-nft", Family::kIpv4, nat}});
  const auto& w = report.families[0].warnings;
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0],
            "PREROUTING jumps to REMORA_OUTPUT more than once (again in rule #2): a leftover of an "
            "earlier install?");
  EXPECT_EQ(w[1],
            "REMORA_OUTPUT exists but nothing in OUTPUT jumps to it: outbound traffic is "
            "not captured");
  EXPECT_EQ(w[2],
            "REMORA_INBOUND has rules but nothing in PREROUTING jumps to it: inbound "
            "traffic is not captured");
  EXPECT_NE(renderDump(report).find("  Warning: REMORA_OUTPUT exists but nothing in OUTPUT"),
            std::string::npos);
}

TEST(DumpTest, InboundOffIsANoteNotAWarning) {
  InterceptOptions o;
  o.include_all_inbound = false;
  FamilyPlan plan = planFamily(o, Family::kIpv4);
  std::string text = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n";
  for (const auto& c : plan.chains) text += ":" + c + " - [0:0]\n";
  for (const auto& r : plan.rules) text += r.toString() + "\n";
  DumpReport report = buildDump({{"iptables-nft", Family::kIpv4, natFromText(text + "COMMIT\n")}});
  const auto& f = report.families[0];
  EXPECT_TRUE(f.warnings.empty());
  ASSERT_EQ(f.notes.size(), 1u);
  EXPECT_EQ(f.notes[0], "inbound capture is off (nothing in PREROUTING jumps to REMORA_INBOUND)");
  EXPECT_NE(renderDump(report).find("  REMORA_INBOUND (empty)\n"), std::string::npos);
}

TEST(DumpTest, BothFamiliesAndReportLevelMessages) {
  DumpReport report =
      buildDump({fromFixture("remora_install_legacy.save", Family::kIpv4, "iptables-legacy"),
                 fromFixture("remora_install_v6_nft.save", Family::kIpv6, "ip6tables-nft")});
  report.warnings.push_back("mixed backends: example");
  report.notes.push_back("a note");
  ASSERT_EQ(report.families.size(), 2u);
  const std::string text = renderDump(report);
  EXPECT_EQ(text.rfind("Warning: mixed backends: example\nNote: a note\n\nIPv4 (iptables-legacy): "
                       "Remora's interception is installed\n",
                       0),
            0u)
      << text;
  EXPECT_NE(text.find("\n\nIPv6 (ip6tables-nft): Remora's interception is installed\n"),
            std::string::npos);
  EXPECT_NE(text.find("inbound passthrough source ::6 on lo: not captured"), std::string::npos);
  EXPECT_NE(text.find("destination fd00:96::/108 excluded: not captured  [1 packet, 80 bytes]"),
            std::string::npos);
}

TEST(DumpTest, JsonMirrorsTheReport) {
  DumpReport report =
      buildDump({fromFixture("remora_install_nft.save"),
                 fromFixture("kube_proxy_seed_v6.save", Family::kIpv6, "ip6tables-nft")});
  auto j = dumpToJson(report);
  ASSERT_EQ(j["families"].size(), 2u);
  const auto& v4 = j["families"][0];
  EXPECT_EQ(v4["family"], "ipv4");
  EXPECT_EQ(v4["backend"], "iptables-nft");
  EXPECT_EQ(v4["installed"], true);
  ASSERT_EQ(v4["chains"].size(), 6u);
  EXPECT_EQ(v4["chains"][0]["name"], "OUTPUT");
  EXPECT_EQ(v4["chains"][0]["builtin"], true);
  EXPECT_EQ(v4["chains"][0]["policy"], "ACCEPT");
  const auto& rule = v4["chains"][0]["rules"][0];
  EXPECT_EQ(rule["index"], 1);
  EXPECT_EQ(rule["rule"], "-p tcp -j REMORA_OUTPUT");
  EXPECT_EQ(rule["description"], "all TCP leaving the pod enters REMORA_OUTPUT");
  EXPECT_EQ(rule["packets"], 6);
  EXPECT_EQ(rule["bytes"], 360);
  EXPECT_EQ(v4["chains"][1]["name"], "REMORA_OUTPUT");
  EXPECT_EQ(v4["chains"][1]["policy"], "-");
  EXPECT_EQ(v4["chains"][1]["rules"].size(), 11u);
  EXPECT_TRUE(v4["foreign"].empty());
  EXPECT_TRUE(v4["warnings"].is_array());

  const auto& v6 = j["families"][1];
  EXPECT_EQ(v6["family"], "ipv6");
  EXPECT_EQ(v6["installed"], false);
  EXPECT_TRUE(v6["chains"].empty());
  ASSERT_EQ(v6["foreign"].size(), 2u);
  EXPECT_EQ(v6["foreign"][1]["chain"], "OUTPUT");
  EXPECT_EQ(v6["foreign"][1]["target"], "KUBE-SERVICES");
  EXPECT_EQ(v6["foreign"][1]["index"], 1);
  EXPECT_EQ(v6["foreign"][1]["before_remora"], false);
  EXPECT_EQ(v6["foreign"][1]["message"], "OUTPUT also jumps to KUBE-SERVICES (not Remora's)");
}

TEST(DumpTest, RulesSavedWithoutCountersHaveNullCounters) {
  auto nat = natFromText(
      "*nat\n:OUTPUT ACCEPT [0:0]\n:REMORA_OUTPUT - [0:0]\n"
      "-A OUTPUT -p tcp -j REMORA_OUTPUT\n-A REMORA_OUTPUT -j RETURN\nCOMMIT\n");
  DumpReport report = buildDump({{"iptables-nft", Family::kIpv4, nat}});
  auto j = dumpToJson(report);
  EXPECT_TRUE(j["families"][0]["chains"][0]["rules"][0]["packets"].is_null());
  EXPECT_TRUE(j["families"][0]["chains"][0]["rules"][0]["bytes"].is_null());
  EXPECT_NE(renderDump(report).find("#1 all TCP leaving the pod enters REMORA_OUTPUT\n"),
            std::string::npos);
}

TEST(DumpTest, IsDeterministic) {
  auto input = std::vector<FamilyTables>{fromFixture("kube_proxy_and_remora.save")};
  EXPECT_EQ(renderDump(buildDump(input)), renderDump(buildDump(input)));
  EXPECT_EQ(dumpToJson(buildDump(input)).dump(), dumpToJson(buildDump(input)).dump());
}

// --- native nftables (dump without --trace) ---

// Remora's --mode nftables install next to kube-proxy's nftables mode, as nft 1.0.6 lists them
// (test/fixtures/kube_proxy_nft.nft loaded, then `remora-init install --mode nftables`).
NftDump remoraAndKubeProxyNft() {
  auto r = parseNftRuleset(readFixture("remora_kube_proxy_nft.json"),
                           readFixture("remora_kube_proxy_nft.txt"));
  EXPECT_TRUE(r.ok()) << r.error().message;
  return buildNftDump(r.ok() ? *r : NftRuleset{});
}

const NftDumpChain* chainNamed(const NftDumpTable& t, const std::string& name) {
  for (const auto& c : t.chains) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

TEST(DumpNftTest, ListsRemorasTableWholeAndKubeProxysBaseChains) {
  NftDump nft = remoraAndKubeProxyNft();
  EXPECT_TRUE(nft.read);
  EXPECT_TRUE(nft.installed);
  ASSERT_EQ(nft.tables.size(), 2u);
  const auto& remora = nft.tables[0];
  EXPECT_EQ(remora.label(), "inet remora");
  EXPECT_TRUE(remora.remora);
  // Base chains first, in hook order, then every user chain.
  ASSERT_GE(remora.chains.size(), 3u);
  EXPECT_EQ(remora.chains[0].name, "mangle_prerouting");
  EXPECT_EQ(remora.chains[1].name, "nat_prerouting");
  EXPECT_EQ(remora.chains[2].name, "nat_output");
  EXPECT_EQ(remora.chains[2].priority, -100);
  const auto* redirect = chainNamed(remora, "REMORA_REDIRECT_v4");
  ASSERT_NE(redirect, nullptr);
  ASSERT_EQ(redirect->rules.size(), 1u);
  EXPECT_EQ(redirect->rules[0].rule, "meta l4proto tcp redirect to :15001");
  EXPECT_FALSE(redirect->rules[0].counters.has_value());

  const auto& kube = nft.tables[1];
  EXPECT_EQ(kube.label(), "ip kube-proxy");
  EXPECT_FALSE(kube.remora);
  // Only its base chains on Remora's hooks, in priority order per hook.
  std::vector<std::string> names;
  for (const auto& c : kube.chains) names.push_back(c.name);
  EXPECT_EQ(names, (std::vector<std::string>{"filter-prerouting", "nat-prerouting", "filter-input",
                                             "filter-output", "nat-output",
                                             "filter-output-post-dnat", "nat-postrouting"}));
  EXPECT_EQ(chainNamed(kube, "filter-output")->message,
            "runs before inet remora nat_output (priority -100)");
  EXPECT_EQ(chainNamed(kube, "nat-output")->message,
            "runs at the same priority as inet remora nat_output (priority -100): the one "
            "registered first runs first");
  EXPECT_EQ(chainNamed(kube, "filter-output-post-dnat")->message,
            "runs after inet remora nat_output (priority -100)");
  EXPECT_EQ(chainNamed(kube, "nat-output")->rules[0].rule, "jump services");

  const std::string text = renderNftDump(nft);
  EXPECT_TRUE(
      text.starts_with("nftables: Remora's interception is installed (table inet "
                       "remora)\n  inet remora mangle_prerouting (filter hook prerouting "
                       "priority -150, policy accept)\n      #1 IPv4: all TCP arriving at the "
                       "pod enters REMORA_DROP_INVALID_v4\n         meta nfproto ipv4 meta "
                       "l4proto tcp jump REMORA_DROP_INVALID_v4\n"))
      << text;
  EXPECT_NE(
      text.find("  inet remora REMORA_REDIRECT_v4\n      #1 redirect to local port 15001 (the "
                "proxy's outbound listener)\n         meta l4proto tcp redirect to :15001\n"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("  Other tables on the same hooks (base chains only):\n    ip kube-proxy "
                      "filter-prerouting (filter hook prerouting priority -110, policy accept)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("    ip kube-proxy nat-output (nat hook output priority -100, policy "
                      "accept)\n      runs at the same priority as inet remora nat_output"),
            std::string::npos)
      << text;
  EXPECT_EQ(text, renderNftDump(remoraAndKubeProxyNft()));  // deterministic
}

// The words of each rule of the named chains, one "  #N words" line each under the chain's name.
std::string wordsOf(const NftDumpTable& table, std::initializer_list<const char*> names) {
  std::string listing;
  for (const char* name : names) {
    const auto* c = chainNamed(table, name);
    listing += std::string(name) + (c == nullptr ? " (missing)\n" : "\n");
    for (size_t i = 0; c != nullptr && i < c->rules.size(); ++i) {
      listing += fmt::format("  #{} {}\n", i + 1, c->rules[i].words);
    }
  }
  return listing;
}

// Each per-family chain of `remora` rule by rule against the plan of `options`: the words are
// describeRule's of the planned rule, the chain names aside (the table's are per family).
void expectThePlansWords(const NftDumpTable& remora, const InterceptOptions& options,
                         const std::vector<Family>& families, size_t chains) {
  for (Family family : families) {
    const FamilyPlan plan = planFamily(options, family);
    const std::string suffix = family == Family::kIpv4 ? "_v4" : "_v6";
    std::map<std::string, std::vector<const PlannedRule*>> by_chain;
    for (const auto* rules : {&plan.rules, &plan.mangle_rules}) {
      for (const auto& r : *rules) {
        if (r.chain.starts_with(kChainPrefix)) by_chain[r.chain].push_back(&r);
      }
    }
    ASSERT_EQ(by_chain.size(), chains);
    for (const auto& [chain, planned] : by_chain) {
      const auto* c = chainNamed(remora, chain + suffix);
      ASSERT_NE(c, nullptr) << chain << suffix;
      // nft's tproxy lets a packet with no socket go on: the translation adds a drop after it.
      const bool tproxy = chain == kTproxyChain;
      ASSERT_EQ(c->rules.size(), planned.size() + (tproxy ? 1 : 0)) << chain << suffix;
      for (size_t i = 0; i < planned.size(); ++i) {
        std::string got = c->rules[i].words;
        for (size_t at = 0; (at = got.find(suffix, at)) != std::string::npos;) {
          got.erase(at, suffix.size());
        }
        EXPECT_EQ(got, describeRule(chain, planned[i]->args, i + 1 == planned.size()))
            << chain << suffix << " #" << i + 1 << ": " << c->rules[i].rule;
      }
      if (tproxy) {
        EXPECT_TRUE(c->rules.back().words.starts_with("no proxy socket took it: dropped"))
            << c->rules.back().words;
      }
    }
  }
}

// Each rule of Remora's table says what the iptables dump says of the planned rule it was
// translated from; kube-proxy's rules keep their nft text only.
TEST(DumpNftTest, RemorasRulesReadAsTheIptablesDumpSaysThem) {
  NftDump nft = remoraAndKubeProxyNft();
  ASSERT_EQ(nft.tables.size(), 2u);
  const auto& remora = nft.tables[0];
  // The same words as the iptables dump's for the same rules (DumpTest.RendersARealInstall).
  EXPECT_EQ(
      wordsOf(remora, {"nat_prerouting", "nat_output", "REMORA_INBOUND_v4", "REMORA_IN_REDIRECT_v4",
                       "REMORA_OUTPUT_v4", "REMORA_REDIRECT_v4", "REMORA_DROP_INVALID_v4"}),
      R"(nat_prerouting
  #1 IPv4: all TCP arriving at the pod enters REMORA_INBOUND_v4
  #2 IPv6: all TCP arriving at the pod enters REMORA_INBOUND_v6
nat_output
  #1 IPv4: all TCP leaving the pod enters REMORA_OUTPUT_v4
  #2 IPv6: all TCP leaving the pod enters REMORA_OUTPUT_v6
REMORA_INBOUND_v4
  #1 tcp ports 15000-15001 excluded: not captured
  #2 tcp port 15006 excluded: not captured
  #3 tcp port 15008 excluded: not captured
  #4 tcp ports 15020-15021 excluded: not captured
  #5 tcp port 15090 excluded: not captured
  #6 everything else: redirect to the proxy (REMORA_IN_REDIRECT_v4)
REMORA_IN_REDIRECT_v4
  #1 redirect to local port 15006 (the proxy's inbound listener)
REMORA_OUTPUT_v4
  #1 inbound passthrough source 127.0.0.6 on lo: not captured
  #2 proxy to a local non-loopback address (uid 1337): back through the inbound redirect
  #3 app traffic on loopback (not uid 1337): not captured
  #4 proxy's own traffic (uid 1337): not captured
  #5 proxy to a local non-loopback address (gid 1337): back through the inbound redirect
  #6 app traffic on loopback (not gid 1337): not captured
  #7 proxy's own traffic (gid 1337): not captured
  #8 to 127.0.0.1/32: not captured
  #9 everything else: redirect to the proxy (REMORA_REDIRECT_v4)
REMORA_REDIRECT_v4
  #1 redirect to local port 15001 (the proxy's outbound listener)
REMORA_DROP_INVALID_v4
  #1 conntrack state INVALID: dropped
)");

  const auto* output6 = chainNamed(remora, "REMORA_OUTPUT_v6");
  ASSERT_NE(output6, nullptr);
  ASSERT_EQ(output6->rules.size(), 9u);
  EXPECT_EQ(output6->rules[0].words, "inbound passthrough source ::6 on lo: not captured");
  EXPECT_EQ(output6->rules[7].words, "to ::1/128: not captured");

  // Every rule of every per-family chain against the planner's rule (the fixture is a default
  // install).
  expectThePlansWords(remora, InterceptOptions{}, {Family::kIpv4, Family::kIpv6}, 5);

  // Remora's rules: the words, then the nft text; kube-proxy's: the nft text, as before.
  const std::string text = renderNftDump(nft);
  for (const char* fragment : {
           "  inet remora REMORA_OUTPUT_v4\n      #1 inbound passthrough source 127.0.0.6 on lo: "
           "not captured\n         oifname \"lo\" ip saddr 127.0.0.6 return\n",
           "    ip kube-proxy nat-output (nat hook output priority -100, policy accept)\n      "
           "runs at the same priority as inet remora nat_output (priority -100): the one "
           "registered first runs first\n        #1 jump services\n",
       }) {
    EXPECT_NE(text.find(fragment), std::string::npos) << fragment << "\n---\n" << text;
  }
  auto j = nftDumpToJson(nft);
  nlohmann::json redirect;
  for (const auto& c : j["tables"][0]["chains"]) {
    if (c["name"] == "REMORA_REDIRECT_v4") redirect = c;
  }
  ASSERT_TRUE(redirect.is_object()) << j.dump(2);
  EXPECT_EQ(redirect["rules"][0]["words"],
            "redirect to local port 15001 (the proxy's outbound listener)");
  EXPECT_FALSE(j["tables"][1]["chains"][0]["rules"][0].contains("words"));
}

// A TPROXY install (`remora-init install --mode nftables --ipv6 on --inbound-interception-mode
// TPROXY`, as nft 1.0.6 lists it): the mangle chains, the tproxy statement and the drop after it.
TEST(DumpNftTest, TproxyRulesReadAsTheIptablesDumpSaysThem) {
  auto r =
      parseNftRuleset(readFixture("remora_tproxy_nft.json"), readFixture("remora_tproxy_nft.txt"));
  ASSERT_TRUE(r.ok()) << r.error().message;
  NftDump nft = buildNftDump(*r);
  ASSERT_EQ(nft.tables.size(), 1u);
  const auto& remora = nft.tables[0];
  InterceptOptions tproxy;
  tproxy.inbound_mode = InboundMode::kTproxy;
  // nat: REMORA_IN_REDIRECT, REMORA_OUTPUT, REMORA_REDIRECT; mangle: the drop of INVALID and
  // the four TPROXY chains.
  expectThePlansWords(remora, tproxy, {Family::kIpv4, Family::kIpv6}, 8);
  EXPECT_EQ(wordsOf(remora, {"mangle_output", "REMORA_TPROXY_v6", "REMORA_TP_OUTPUT_v4"}),
            R"(mangle_output
  #1 IPv4: all TCP leaving the pod enters REMORA_TP_OUTPUT_v4
  #2 IPv6: all TCP leaving the pod enters REMORA_TP_OUTPUT_v6
REMORA_TPROXY_v6
  #1 TPROXY to local port 15006, destination kept, mark 0x539/0xffffffff (the proxy's transparent inbound listener)
  #2 no proxy socket took it: dropped (iptables' TPROXY drops such a packet itself; nft's tproxy lets it go on)
REMORA_TP_OUTPUT_v4
  #1 mark 0x539 (the proxy's connection to the app): saved on the connection
  #2 connection mark 0x539: restored on the packet, so the app's replies return to the proxy
)");
  const auto* inbound = chainNamed(remora, "REMORA_TP_INBOUND_v4");
  ASSERT_NE(inbound, nullptr);
  ASSERT_EQ(inbound->rules.size(), 8u);
  EXPECT_EQ(
      inbound->rules[6].words,
      "conntrack state RELATED,ESTABLISHED: deliver to the proxy's socket (REMORA_DIVERT_v4)");
  EXPECT_EQ(inbound->rules[7].words,
            "everything else: hand to the proxy's transparent listener (REMORA_TPROXY_v4)");
}

TEST(DumpNftTest, KubeProxyAloneIsPlacedAgainstIptablesNat) {
  auto r = parseNftRuleset(readFixture("kube_proxy_nft.json"), readFixture("kube_proxy_nft.txt"));
  ASSERT_TRUE(r.ok());
  NftDump nft = buildNftDump(*r);
  EXPECT_FALSE(nft.installed);
  ASSERT_EQ(nft.tables.size(), 1u);
  EXPECT_EQ(chainNamed(nft.tables[0], "filter-output")->message,
            "runs before iptables' nat table (priority -100)");
  EXPECT_EQ(chainNamed(nft.tables[0], "filter-input")->message, "");
  EXPECT_TRUE(renderNftDump(nft).starts_with(
      "nftables: Remora's table inet remora is not installed\n  Other tables on the same hooks"));
}

TEST(DumpNftTest, CountersCommentsAndUnreadRulesets) {
  auto r = parseNftRuleset(R"({"nftables":[
    {"table":{"family":"inet","name":"remora"}},
    {"table":{"family":"inet","name":"other"}},
    {"chain":{"family":"inet","table":"remora","name":"nat_output","type":"nat","hook":"output",
              "prio":-100,"policy":"accept"}},
    {"chain":{"family":"inet","table":"other","name":"fwd","type":"filter","hook":"forward",
              "prio":0,"policy":"drop"}},
    {"rule":{"family":"inet","table":"remora","chain":"nat_output","handle":4,"comment":"hi",
             "expr":[{"counter":{"packets":3,"bytes":180}},{"accept":null}]}}]})");
  ASSERT_TRUE(r.ok());
  NftDump nft = buildNftDump(*r);
  ASSERT_EQ(nft.tables.size(), 1u);  // "other" hooks only forward, which Remora does not use
  const auto& rule = nft.tables[0].chains[0].rules[0];
  EXPECT_EQ(rule.counters, (Counters{3, 180}));
  EXPECT_EQ(rule.comment, "hi");
  // Not a translation of a planned rule (no meta nfproto in a base chain): said so.
  EXPECT_EQ(rule.words, "(not one of Remora's planned rules: no family (meta nfproto))");
  EXPECT_NE(renderNftDump(nft).find("#1 (not one of Remora's planned rules: no family (meta "
                                    "nfproto))  [3 packets, 180 bytes]\n         (handle 4)\n"),
            std::string::npos)
      << renderNftDump(nft);
  auto j = nftDumpToJson(nft);
  EXPECT_EQ(j["tables"][0]["chains"][0]["rules"][0]["packets"], 3);
  EXPECT_EQ(j["tables"][0]["chains"][0]["rules"][0]["comment"], "hi");
  EXPECT_EQ(j["tables"][0]["chains"][0]["hook"], "output");

  NftDump unread = nftDumpUnread("Operation not permitted");
  EXPECT_EQ(renderNftDump(unread), "nftables: not read: Operation not permitted\n");
  EXPECT_EQ(nftDumpToJson(unread)["error"], "Operation not permitted");
  auto empty = buildNftDump(NftRuleset{});
  EXPECT_EQ(empty.notes, (std::vector<std::string>{"no native nftables tables"}));
}

TEST(DumpNftTest, TheReportSaysWhichModeIsInstalled) {
  // nftables mode only: a note, and the nftables section follows the iptables families.
  DumpReport nft_only = buildDump({fromFixture("kube_proxy_seed.save")});
  attachNftDump(nft_only, remoraAndKubeProxyNft());
  ASSERT_EQ(nft_only.notes.size(), 1u);
  EXPECT_EQ(nft_only.notes[0],
            "Remora is installed in nftables mode (table inet remora, below); the iptables nat "
            "tables hold none of its chains");
  EXPECT_TRUE(nft_only.warnings.empty());
  const std::string text = renderDump(nft_only);
  EXPECT_LT(text.find("IPv4 (iptables-nft)"), text.find("\nnftables: Remora's interception"));
  auto j = dumpToJson(nft_only);
  EXPECT_EQ(j["nftables"]["installed"], true);
  EXPECT_EQ(j["nftables"]["tables"][1]["name"], "kube-proxy");
  // Both modes: a warning, since the kernel runs both.
  DumpReport both = buildDump({fromFixture("remora_install_nft.save")});
  attachNftDump(both, remoraAndKubeProxyNft());
  ASSERT_EQ(both.warnings.size(), 1u);
  EXPECT_EQ(both.warnings[0],
            "Remora is installed twice: in iptables-nft and in nftables (table inet remora); the "
            "kernel runs both");
  // Not attached (the pure buildDump): no nftables key.
  EXPECT_FALSE(
      dumpToJson(buildDump({fromFixture("remora_install_nft.save")})).contains("nftables"));
}

}  // namespace
}  // namespace remora::intercept
