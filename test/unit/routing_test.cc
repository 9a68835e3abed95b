#include <fmt/format.h>
#include <gtest/gtest.h>

#include <map>
#include <numeric>
#include <random>

#include "routing/route_table.h"
#include "routing/static_route_table.h"

namespace remora::routing {
namespace {

SocketAddress addr(const char* text) { return *SocketAddress::parse(text); }

struct SubsetDef {
  std::string name;
  std::vector<std::string> endpoints;
  uint32_t weight = 0;
  LbPolicy policy = LbPolicy::kRoundRobin;
};

// One ServicePort on 10.96.0.1:80 (and each endpoint's own address) with the given subsets.
ServicePortEntry makeEntry(const std::vector<SubsetDef>& defs, const char* vip = "10.96.0.1",
                           uint16_t port = 80, const char* service = "svc.default") {
  ServicePortEntry entry;
  entry.port.service = service;
  entry.port.port = port;
  entry.cluster_ips.push_back(*IpAddress::parse(vip));
  for (uint32_t i = 0; i < defs.size(); ++i) {
    Subset subset;
    subset.name = defs[i].name;
    subset.policy = defs[i].policy;
    for (const auto& e : defs[i].endpoints) {
      subset.endpoints.append({addr(e.c_str()), "default/" + e});
      entry.endpoints.append({addr(e.c_str()), "default/" + e});
    }
    entry.port.subsets.push_back(std::move(subset));
    entry.port.route.push_back({i, defs[i].weight});
  }
  return entry;
}

std::shared_ptr<const RouteTable> makeTable(std::vector<ServicePortEntry> entries,
                                            ProxySettings settings = {}) {
  auto table = StaticRouteTable::create(settings, 1, std::move(entries));
  EXPECT_TRUE(table.ok()) << table.error().message;
  return *table;
}

// Subsets named s0..sN-1, one endpoint each (10.1.0.i:80), with the given weights.
std::shared_ptr<const RouteTable> weightedTable(const std::vector<uint32_t>& weights) {
  std::vector<SubsetDef> defs(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    defs[i] = {fmt::format("s{}", i), {fmt::format("10.1.0.{}:80", i + 1)}, weights[i]};
  }
  return makeTable({makeEntry(defs)});
}

std::vector<uint32_t> pickSubsets(Router& router, size_t n, const char* dst = "10.96.0.1:80") {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < n; ++i) {
    RouteDecision d = router.route(addr(dst));
    EXPECT_EQ(d.kind, RouteDecision::Kind::kService);
    out.push_back(d.subset_index);
  }
  return out;
}

// n endpoints 10.1.1.1:80, 10.1.1.2:80, ...
std::vector<std::string> manyEndpoints(int n) {
  std::vector<std::string> out(n);
  for (int i = 0; i < n; ++i) out[i] = "10.1.1." + std::to_string(i + 1) + ":80";
  return out;
}

// Every window of Σw consecutive picks holds each subset exactly its weight.
void expectExactWindows(const std::vector<uint32_t>& weights) {
  uint32_t total = std::accumulate(weights.begin(), weights.end(), 0u);
  auto router = makeRouter(weightedTable(weights), 1);
  auto picks = pickSubsets(*router, size_t{total} * 3);
  std::vector<int64_t> counts(weights.size(), 0);
  for (size_t i = 0; i < picks.size(); ++i) {
    ++counts[picks[i]];
    if (i >= total) --counts[picks[i - total]];
    if (i + 1 >= total) {
      for (size_t s = 0; s < weights.size(); ++s) {
        ASSERT_EQ(counts[s], weights[s])
            << "weights " << ::testing::PrintToString(weights) << " window ending at " << i;
      }
    }
  }
}

TEST(SmoothWeightedRoundRobin, ExactInEveryWindow) {
  for (const auto& weights : std::vector<std::vector<uint32_t>>{{90, 10},
                                                                {50, 50},
                                                                {1, 1, 1},
                                                                {5, 1, 1},
                                                                {33, 33, 34},
                                                                {100},
                                                                {1, 99},
                                                                {99, 1},
                                                                {10, 20, 30, 40},
                                                                {7, 0, 3}}) {
    expectExactWindows(weights);
  }
}

TEST(SmoothWeightedRoundRobin, ExactForRandomWeightSets) {
  std::mt19937 rng(42);
  for (int round = 0; round < 200; ++round) {
    size_t n = 1 + rng() % 8;
    std::vector<uint32_t> weights(n);
    for (auto& w : weights) w = 1 + rng() % 100;
    expectExactWindows(weights);
  }
}

TEST(SmoothWeightedRoundRobin, FiveOneOneInterleaves) {
  auto router = makeRouter(weightedTable({5, 1, 1}), 1);
  EXPECT_EQ(pickSubsets(*router, 7), (std::vector<uint32_t>{0, 0, 1, 0, 2, 0, 0}));
}

TEST(SmoothWeightedRoundRobin, NinetyTenSpreadsTheMinority) {
  auto router = makeRouter(weightedTable({90, 10}), 1);
  auto picks = pickSubsets(*router, 200);
  // The ten v2 picks of each hundred come one per ten, never in a burst: the complaint
  // "90/10 came out 50/50 on 10 requests" cannot happen.
  std::vector<size_t> positions;
  for (size_t i = 0; i < picks.size(); ++i) {
    if (picks[i] == 1) positions.push_back(i);
  }
  ASSERT_EQ(positions.size(), 20u);
  for (size_t i = 1; i < positions.size(); ++i) EXPECT_EQ(positions[i] - positions[i - 1], 10u);
  for (size_t start = 0; start + 10 <= picks.size(); ++start) {
    EXPECT_EQ(std::count(picks.begin() + start, picks.begin() + start + 10, 1u), 1) << start;
  }
}

TEST(SmoothWeightedRoundRobin, ZeroWeightIsNeverPicked) {
  auto router = makeRouter(weightedTable({0, 3}), 1);
  for (uint32_t s : pickSubsets(*router, 30)) EXPECT_EQ(s, 1u);
}

TEST(Router, EmptySubsetGivesItsShareToTheOthers) {
  auto table = makeTable(
      {makeEntry({{"v1", {}, 50}, {"v2", {"10.1.0.2:80"}, 25}, {"v3", {"10.1.0.3:80"}, 25}})});
  auto router = makeRouter(table, 1);
  auto picks = pickSubsets(*router, 10);
  EXPECT_EQ(std::count(picks.begin(), picks.end(), 1u), 5);
  EXPECT_EQ(std::count(picks.begin(), picks.end(), 2u), 5);
}

TEST(Router, ServiceWithoutEndpointsIsRefused) {
  auto table = makeTable({makeEntry({{"v1", {}, 90}, {"v2", {}, 10}})});
  auto router = makeRouter(table, 1);
  RouteDecision d = router->route(addr("10.96.0.1:80"));
  EXPECT_EQ(d.kind, RouteDecision::Kind::kRefused);
  EXPECT_EQ(d.service, table->find(addr("10.96.0.1:80")));
}

TEST(Router, RoundRobinIsEven) {
  auto table = makeTable({makeEntry({{"", {"10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80"}, 100}})});
  auto router = makeRouter(table, 1);
  std::map<std::string, int> counts;
  std::vector<std::string> first;
  for (int i = 0; i < 300; ++i) {
    RouteDecision d = router->route(addr("10.96.0.1:80"));
    ASSERT_EQ(d.kind, RouteDecision::Kind::kService);
    EXPECT_EQ(d.upstream, d.service->subsets[d.subset_index].endpoints[d.endpoint_index].address);
    ++counts[d.upstream.toString()];
    if (i < 6) first.push_back(d.upstream.toString());
  }
  EXPECT_EQ(counts, (std::map<std::string, int>{
                        {"10.1.0.1:80", 100}, {"10.1.0.2:80", 100}, {"10.1.0.3:80", 100}}));
  EXPECT_EQ(first, (std::vector<std::string>{"10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80",
                                             "10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80"}));
}

TEST(Router, RandomSpreadsAndIsReproducibleWithASeed) {
  auto table = makeTable(
      {makeEntry({{"", {"10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80"}, 100, LbPolicy::kRandom}})});
  auto a = makeRouter(table, 7);
  auto b = makeRouter(table, 7);
  std::vector<int> counts(3, 0);
  for (int i = 0; i < 3000; ++i) {
    RouteDecision da = a->route(addr("10.96.0.1:80"));
    RouteDecision db = b->route(addr("10.96.0.1:80"));
    ASSERT_EQ(da.endpoint_index, db.endpoint_index);
    ++counts[da.endpoint_index];
  }
  for (int c : counts) EXPECT_NEAR(c, 1000, 150);
}

TEST(Router, LeastRequestFollowsReleases) {
  auto table = makeTable({makeEntry(
      {{"", {"10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80"}, 100, LbPolicy::kLeastRequest}})});
  auto router = makeRouter(table, 1);
  // Ties go round-robin.
  std::vector<RouteDecision> open(3);
  for (auto& d : open) d = router->route(addr("10.96.0.1:80"));
  EXPECT_EQ(open[0].endpoint_index, 0u);
  EXPECT_EQ(open[1].endpoint_index, 1u);
  EXPECT_EQ(open[2].endpoint_index, 2u);
  // Endpoint 1 finishes: it alone has the fewest active connections.
  router->release(open[1]);
  EXPECT_EQ(router->route(addr("10.96.0.1:80")).endpoint_index, 1u);
  router->release(open[2]);
  router->release(open[0]);
  // Now 0 and 2 are idle and 1 has one: 2 comes next in round-robin order after 1, then 0.
  EXPECT_EQ(router->route(addr("10.96.0.1:80")).endpoint_index, 2u);
  EXPECT_EQ(router->route(addr("10.96.0.1:80")).endpoint_index, 0u);
}

TEST(Router, LeastRequestOnLargeSubsetsAvoidsBusyEndpoints) {
  auto table = makeTable({makeEntry({{"", manyEndpoints(40), 100, LbPolicy::kLeastRequest}})});
  auto router = makeRouter(table, 3);
  std::vector<int> active(40, 0);
  for (int i = 0; i < 4000; ++i) ++active[router->route(addr("10.96.0.1:80")).endpoint_index];
  auto [lo, hi] = std::minmax_element(active.begin(), active.end());
  // Two random choices keep the spread within a few connections of the mean (100).
  EXPECT_LE(*hi - *lo, 10);
}

TEST(Router, RetrySkipsTriedEndpointsThenOtherSubsets) {
  auto table = makeTable(
      {makeEntry({{"v1", {"10.1.0.1:80", "10.1.0.2:80"}, 90}, {"v2", {"10.2.0.1:80"}, 10}})});
  auto router = makeRouter(table, 1);
  RouteDecision first = router->route(addr("10.96.0.1:80"));
  ASSERT_EQ(first.subset_index, 0u);
  std::vector<SocketAddress> tried{first.upstream};
  auto second = router->retry(first, tried);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->subset_index, 0u);
  EXPECT_NE(second->upstream, first.upstream);
  tried.push_back(second->upstream);
  auto third = router->retry(*second, tried);
  ASSERT_TRUE(third);
  EXPECT_EQ(third->subset_index, 1u);
  EXPECT_EQ(third->upstream, addr("10.2.0.1:80"));
  tried.push_back(third->upstream);
  EXPECT_FALSE(router->retry(*third, tried));
}

TEST(Router, RetryExcludesTheFailedEndpointEvenWhenNotListed) {
  auto table = makeTable({makeEntry({{"", {"10.1.0.1:80", "10.1.0.2:80"}, 100}})});
  auto router = makeRouter(table, 1);
  RouteDecision first = router->route(addr("10.96.0.1:80"));
  auto next = router->retry(first, {});
  ASSERT_TRUE(next);
  EXPECT_NE(next->upstream, first.upstream);
}

TEST(Router, RetryCountsTheNewAttemptAndTheCallerReleasesTheFailedOne) {
  auto table =
      makeTable({makeEntry({{"", {"10.1.0.1:80", "10.1.0.2:80"}, 100, LbPolicy::kLeastRequest}})});
  auto router = makeRouter(table, 1);
  RouteDecision first = router->route(addr("10.96.0.1:80"));  // endpoint 0
  auto second = router->retry(first, std::vector<SocketAddress>{first.upstream});
  ASSERT_TRUE(second);
  EXPECT_EQ(second->endpoint_index, 1u);
  router->release(first);
  // The failed attempt no longer counts and the retried one does: endpoint 0 is least loaded,
  // then the two tie and round-robin moves on.
  EXPECT_EQ(router->route(addr("10.96.0.1:80")).endpoint_index, 0u);
  EXPECT_EQ(router->route(addr("10.96.0.1:80")).endpoint_index, 1u);
}

TEST(Router, UnknownDestinationPassesThroughOrIsRefused) {
  auto table = makeTable({makeEntry({{"", {"10.1.0.1:80"}, 100}})});
  auto router = makeRouter(table, 1);
  RouteDecision d = router->route(addr("93.184.216.34:443"));
  EXPECT_EQ(d.kind, RouteDecision::Kind::kPassthrough);
  EXPECT_EQ(d.upstream, addr("93.184.216.34:443"));
  EXPECT_EQ(d.service, nullptr);
  EXPECT_FALSE(router->retry(d, {}));
  // The same VIP on another port is not the service either.
  EXPECT_EQ(router->route(addr("10.96.0.1:81")).kind, RouteDecision::Kind::kPassthrough);

  ProxySettings strict;
  strict.outbound_policy = OutboundPolicy::kRegistryOnly;
  router->setTable(makeTable({makeEntry({{"", {"10.1.0.1:80"}, 100}})}, strict));
  EXPECT_EQ(router->route(addr("93.184.216.34:443")).kind, RouteDecision::Kind::kRefused);
  EXPECT_EQ(router->route(addr("10.96.0.1:80")).kind, RouteDecision::Kind::kService);
}

TEST(Router, WithoutATableEverythingPassesThrough) {
  auto router = makeRouter(nullptr, 1);
  EXPECT_EQ(router->route(addr("10.96.0.1:80")).kind, RouteDecision::Kind::kPassthrough);
}

TEST(Router, PodAddressKeepsThePodTheClientChose) {
  auto table = makeTable(
      {makeEntry({{"v1", {"10.1.0.1:80", "10.1.0.2:80"}, 90}, {"v2", {"10.2.0.1:80"}, 10}})});
  auto router = makeRouter(table, 1);
  EXPECT_EQ(table->find(addr("10.2.0.1:80")), table->find(addr("10.96.0.1:80")));
  for (int i = 0; i < 5; ++i) {
    RouteDecision d = router->route(addr("10.2.0.1:80"));
    EXPECT_EQ(d.kind, RouteDecision::Kind::kService);
    EXPECT_TRUE(d.pinned);
    EXPECT_EQ(d.upstream, addr("10.2.0.1:80"));
    EXPECT_EQ(d.subset_index, 1u);
    EXPECT_EQ(d.endpoint_index, 0u);
    EXPECT_FALSE(router->retry(d, std::vector<SocketAddress>{d.upstream}));
    router->release(d);
  }
  // The pod's other ports are not the service.
  EXPECT_EQ(router->route(addr("10.2.0.1:8080")).kind, RouteDecision::Kind::kPassthrough);
}

TEST(Router, PodOutsideEveryRoutedSubsetPassesThrough) {
  ServicePortEntry entry = makeEntry({{"v1", {"10.1.0.1:80"}, 100}});
  entry.endpoints.append({addr("10.3.0.1:80"), "default/v3"});  // a v3 pod
  auto table = makeTable({entry});
  ProxySettings strict;
  strict.outbound_policy = OutboundPolicy::kRegistryOnly;
  auto router = makeRouter(makeTable({entry}, strict), 1);
  EXPECT_NE(table->find(addr("10.3.0.1:80")), nullptr);
  RouteDecision d = router->route(addr("10.3.0.1:80"));
  EXPECT_EQ(d.kind, RouteDecision::Kind::kPassthrough);
  EXPECT_EQ(d.upstream, addr("10.3.0.1:80"));
}

TEST(Router, SetTableRestartsTheCycle) {
  auto table = weightedTable({5, 1, 1});
  auto router = makeRouter(table, 1);
  pickSubsets(*router, 3);  // mid-cycle
  router->setTable(table);
  EXPECT_EQ(router->table(), table);
  EXPECT_EQ(pickSubsets(*router, 7), (std::vector<uint32_t>{0, 0, 1, 0, 2, 0, 0}));
}

TEST(Router, ReleaseOfADecisionFromAnOldTableIsHarmless) {
  auto old_table =
      makeTable({makeEntry({{"", {"10.1.0.1:80", "10.1.0.2:80"}, 100, LbPolicy::kLeastRequest}})});
  auto router = makeRouter(old_table, 1);
  RouteDecision old = router->route(addr("10.96.0.1:80"));
  auto new_table = makeTable({makeEntry({{"", {"10.1.0.1:80"}, 100, LbPolicy::kLeastRequest}})});
  router->setTable(new_table);
  router->release(old);
  RouteDecision d = router->route(addr("10.96.0.1:80"));
  EXPECT_EQ(d.upstream, addr("10.1.0.1:80"));
  // A retry of the old decision still works on the old table, which the caller keeps alive.
  auto retried = router->retry(old, std::vector<SocketAddress>{old.upstream});
  ASSERT_TRUE(retried);
  EXPECT_EQ(retried->service, old.service);
}

TEST(Router, KeepsStatePerServicePort) {
  auto table = makeTable({makeEntry({{"a", {"10.1.0.1:80"}, 1}, {"b", {"10.1.0.2:80"}, 1}},
                                    "10.96.0.1", 80, "one.default"),
                          makeEntry({{"a", {"10.2.0.1:80"}, 1}, {"b", {"10.2.0.2:80"}, 1}},
                                    "10.96.0.2", 80, "two.default")});
  auto router = makeRouter(table, 1);
  EXPECT_EQ(pickSubsets(*router, 1, "10.96.0.1:80")[0], 0u);
  // A different service starts its own cycle rather than continuing the first one's.
  EXPECT_EQ(pickSubsets(*router, 1, "10.96.0.2:80")[0], 0u);
  EXPECT_EQ(pickSubsets(*router, 1, "10.96.0.1:80")[0], 1u);
}

TEST(StaticRouteTable, ServiceAddressBeatsPodAddressAndClashesFail) {
  ServicePortEntry a = makeEntry({{"", {"10.1.0.1:80"}, 100}}, "10.96.0.1", 80, "a.default");
  ServicePortEntry b = makeEntry({{"", {"10.2.0.1:80"}, 100}}, "10.1.0.1", 80, "b.default");
  auto table = makeTable({a, b});
  EXPECT_EQ(table->find(addr("10.1.0.1:80"))->service, "b.default");
  EXPECT_FALSE(table->match(addr("10.1.0.1:80")).endpoint);

  ServicePortEntry c = makeEntry({{"", {"10.3.0.1:80"}, 100}}, "10.96.0.1", 80, "c.default");
  auto clash = StaticRouteTable::create({}, 1, {a, c});
  ASSERT_FALSE(clash.ok());
  EXPECT_NE(clash.error().message.find("10.96.0.1:80"), std::string::npos);
}

TEST(StaticRouteTable, FirstServiceKeepsASharedPod) {
  ServicePortEntry a = makeEntry({{"", {"10.1.0.1:80"}, 100}}, "10.96.0.1", 80, "a.default");
  ServicePortEntry b = makeEntry({{"", {"10.1.0.1:80"}, 100}}, "10.96.0.2", 80, "b.default");
  EXPECT_EQ(makeTable({a, b})->find(addr("10.1.0.1:80"))->service, "a.default");
  EXPECT_EQ(makeTable({b, a})->find(addr("10.1.0.1:80"))->service, "b.default");
}

TEST(StaticRouteTable, IndexesBothFamilies) {
  ServicePortEntry entry = makeEntry({{"", {"10.1.0.1:80"}, 100}});
  entry.cluster_ips.push_back(*IpAddress::parse("fd00:96::1"));
  entry.endpoints.addOtherIp(*IpAddress::parse("fd00:244::5"));  // 10.1.0.1's
  auto table = makeTable({entry});
  EXPECT_NE(table->find(addr("[fd00:96::1]:80")), nullptr);
  RouteMatch m = table->match(addr("[fd00:244::5]:80"));
  EXPECT_TRUE(m.endpoint);
  EXPECT_EQ(m.subset_index, 0u);
  EXPECT_EQ(table->find(addr("[fd00:96::2]:80")), nullptr);
}

TEST(StaticRouteTable, LargeSubsetsIndexPodsByMap) {
  auto table = makeTable({makeEntry({{"", manyEndpoints(100), 100}})});
  RouteMatch m = table->match(addr("10.1.1.77:80"));
  EXPECT_TRUE(m.endpoint);
  EXPECT_EQ(m.endpoint_index, 76u);
}

TEST(StaticRouteTable, DumpsServicesAndSettings) {
  auto table = makeTable({makeEntry({{"v1", {"10.1.0.1:80"}, 90}, {"v2", {"10.2.0.1:80"}, 10}})});
  nlohmann::json j = table->toJson();
  EXPECT_EQ(j["generation"], 1);
  EXPECT_EQ(j["settings"]["outboundListen"], "0.0.0.0:15001");
  EXPECT_EQ(j["settings"]["outboundTrafficPolicy"], "ALLOW_ANY");
  ASSERT_EQ(j["services"].size(), 1u);
  const auto& s = j["services"][0];
  EXPECT_EQ(s["service"], "svc.default");
  EXPECT_EQ(s["clusterIPs"], nlohmann::json::array({"10.96.0.1"}));
  EXPECT_EQ(s["route"][1], (nlohmann::json{{"subset", "v2"}, {"weight", 10}}));
  EXPECT_EQ(s["subsets"][0]["policy"], "ROUND_ROBIN");
  EXPECT_EQ(s["subsets"][0]["endpoints"][0]["address"], "10.1.0.1:80");
}

}  // namespace
}  // namespace remora::routing
