// L7 routing model (issue 10): request matching, ExactPercentage, the router's per-request
// weighted picks, and VirtualService http[] / DestinationRule trafficPolicy parsing, checked on
// the Istio samples in test/fixtures and on small inline configs.

#include "routing/http_route.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "config/loader.h"
#include "config_test_support.h"
#include "routing/route_table.h"
#include "routing/static_route_table.h"

namespace remora::routing {
namespace {

SocketAddress addr(const char* text) { return *SocketAddress::parse(text); }

StringMatch exact(std::string v) {
  StringMatch m;
  m.kind = StringMatch::Kind::kExact;
  m.value = std::move(v);
  return m;
}

StringMatch prefix(std::string v) {
  StringMatch m;
  m.kind = StringMatch::Kind::kPrefix;
  m.value = std::move(v);
  return m;
}

StringMatch regex(const std::string& pattern) {
  auto m = StringMatch::makeRegex(pattern);
  EXPECT_TRUE(m.ok()) << pattern;
  return m.ok() ? *m : StringMatch{};
}

// A request built from parts; `headers` owns the views' text.
struct Request {
  std::vector<std::pair<std::string, std::string>> header_text;
  std::vector<HeaderField> fields;
  RequestView view;

  Request(std::string_view method, std::string_view target,
          std::vector<std::pair<std::string, std::string>> headers = {}, uint16_t port = 80)
      : header_text(std::move(headers)) {
    for (const auto& [n, v] : header_text) fields.push_back({n, v});
    view.method = method;
    view.setTarget(target);
    view.headers = fields;
    view.port = port;
    if (auto host = view.header("host")) view.authority = *host;
  }
};

// ---- StringMatch and RequestView ----

TEST(StringMatch, ExactPrefixRegexPresent) {
  EXPECT_TRUE(exact("/a").matches("/a"));
  EXPECT_FALSE(exact("/a").matches("/a/"));
  EXPECT_FALSE(exact("/a").matches("/A"));
  EXPECT_TRUE(prefix("/api").matches("/api/v1"));
  EXPECT_TRUE(prefix("/api").matches("/api"));
  EXPECT_FALSE(prefix("/api").matches("/ap"));
  EXPECT_TRUE(prefix("").matches("anything"));
  // RE2 full match, as Envoy's safe_regex: a partial match does not count.
  EXPECT_TRUE(regex("/v[0-9]+/.*").matches("/v12/users"));
  EXPECT_FALSE(regex("v[0-9]+").matches("/v12/users"));
  EXPECT_TRUE(regex(".*jason.*").matches("x-jason-y"));
  EXPECT_TRUE(StringMatch{}.matches(""));  // present
  StringMatch folded = prefix("/API");
  folded.ignore_case = true;
  EXPECT_TRUE(folded.matches("/api/x"));
  EXPECT_FALSE(folded.matches("/apx"));
}

TEST(StringMatch, BadRegexIsAnError) {
  auto bad = StringMatch::makeRegex("(unclosed");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("missing )"), std::string::npos) << bad.error().message;
  // Backreferences are not RE2: refused, not silently different.
  EXPECT_FALSE(StringMatch::makeRegex("(a)\\1").ok());
}

TEST(RequestView, TargetSplitAndCaseInsensitiveHeaders) {
  Request r("GET", "/a/b?x=1&y#frag", {{"End-User", "jason"}, {"Host", "reviews:9080"}});
  EXPECT_EQ(r.view.path, "/a/b");
  EXPECT_EQ(r.view.query, "x=1&y");
  EXPECT_EQ(r.view.header("end-user"), "jason");
  EXPECT_EQ(r.view.header("END-USER"), "jason");
  EXPECT_EQ(r.view.header("missing"), std::nullopt);
  EXPECT_EQ(r.view.authority, "reviews:9080");
  Request bare("GET", "/");
  EXPECT_EQ(bare.view.query, "");
}

// ---- matches() ----

TEST(HttpMatch, UriMethodAuthorityScheme) {
  HttpMatch m;
  m.uri = prefix("/productpage");
  m.method = exact("GET");
  EXPECT_TRUE(matches(m, Request("GET", "/productpage?u=normal").view));
  EXPECT_FALSE(matches(m, Request("POST", "/productpage").view));
  EXPECT_FALSE(matches(m, Request("GET", "/login").view));
  // The query string is not part of the path.
  HttpMatch e;
  e.uri = exact("/login");
  EXPECT_TRUE(matches(e, Request("GET", "/login?next=/").view));
  HttpMatch a;
  a.authority = prefix("reviews");
  EXPECT_TRUE(matches(a, Request("GET", "/", {{"host", "reviews:9080"}}).view));
  EXPECT_FALSE(matches(a, Request("GET", "/", {{"host", "ratings"}}).view));
  HttpMatch s;
  s.scheme = exact("https");
  EXPECT_FALSE(matches(s, Request("GET", "/").view));
}

TEST(HttpMatch, IgnoreUriCaseFoldsExactAndPrefix) {
  HttpMatch m;
  m.uri = exact("/Login");
  m.uri->ignore_case = true;
  EXPECT_TRUE(matches(m, Request("GET", "/LOGIN").view));
  EXPECT_FALSE(matches(m, Request("GET", "/logout").view));
}

TEST(HttpMatch, HeadersExactPrefixRegexPresentAbsent) {
  auto with = [](HeaderMatch h) {
    HttpMatch m;
    m.headers.push_back(std::move(h));
    return m;
  };
  HttpMatch jason = with({"end-user", exact("jason"), false});
  EXPECT_TRUE(matches(jason, Request("GET", "/", {{"end-user", "jason"}}).view));
  EXPECT_TRUE(matches(jason, Request("GET", "/", {{"End-User", "jason"}}).view));
  EXPECT_FALSE(matches(jason, Request("GET", "/", {{"end-user", "Jason"}}).view));
  EXPECT_FALSE(matches(jason, Request("GET", "/").view));
  HttpMatch pre = with({"user-agent", prefix("curl/"), false});
  EXPECT_TRUE(matches(pre, Request("GET", "/", {{"user-agent", "curl/8.1"}}).view));
  HttpMatch re = with({"cookie", regex("^(.*?;)?(user=jason)(;.*)?$"), false});
  EXPECT_TRUE(matches(re, Request("GET", "/", {{"cookie", "a=1; user=jason"}}).view) ==
              false);  // the space before user: no match, as in Envoy
  EXPECT_TRUE(matches(re, Request("GET", "/", {{"cookie", "a=1;user=jason;b=2"}}).view));
  HttpMatch present = with({"x-canary", StringMatch{}, false});
  EXPECT_TRUE(matches(present, Request("GET", "/", {{"x-canary", ""}}).view));
  EXPECT_FALSE(matches(present, Request("GET", "/").view));
}

TEST(HttpMatch, WithoutHeadersFollowsEnvoyInvertMatch) {
  HttpMatch not_jason;
  not_jason.headers.push_back({"end-user", exact("jason"), true});
  EXPECT_FALSE(matches(not_jason, Request("GET", "/", {{"end-user", "jason"}}).view));
  EXPECT_TRUE(matches(not_jason, Request("GET", "/", {{"end-user", "bob"}}).view));
  // An absent header does not satisfy an inverted value match ...
  EXPECT_FALSE(matches(not_jason, Request("GET", "/").view));
  // ... but satisfies an inverted presence match.
  HttpMatch absent;
  absent.headers.push_back({"x-debug", StringMatch{}, true});
  EXPECT_TRUE(matches(absent, Request("GET", "/").view));
  EXPECT_FALSE(matches(absent, Request("GET", "/", {{"x-debug", "1"}}).view));
}

TEST(HttpMatch, RepeatedHeadersAreJoinedWithCommas) {
  HttpMatch m;
  m.headers.push_back({"x-tag", exact("a,b"), false});
  EXPECT_TRUE(matches(m, Request("GET", "/", {{"x-tag", "a"}, {"X-Tag", "b"}}).view));
  EXPECT_FALSE(matches(m, Request("GET", "/", {{"x-tag", "a"}}).view));
}

TEST(HttpMatch, QueryParams) {
  HttpMatch m;
  m.query_params.push_back({"version", exact("v2")});
  EXPECT_TRUE(matches(m, Request("GET", "/?a=1&version=v2").view));
  EXPECT_FALSE(matches(m, Request("GET", "/?version=v22").view));
  EXPECT_FALSE(matches(m, Request("GET", "/?Version=v2").view));  // names are case-sensitive
  EXPECT_FALSE(matches(m, Request("GET", "/").view));
  // The first value counts, and values are percent-decoded.
  EXPECT_TRUE(matches(m, Request("GET", "/?version=v%32&version=v3").view));
  HttpMatch flag;
  flag.query_params.push_back({"debug", exact("")});
  EXPECT_TRUE(matches(flag, Request("GET", "/?debug").view));
  EXPECT_TRUE(matches(flag, Request("GET", "/?debug=").view));
  HttpMatch re;
  re.query_params.push_back({"id", regex("[0-9]+")});
  EXPECT_TRUE(matches(re, Request("GET", "/?id=123").view));
  EXPECT_FALSE(matches(re, Request("GET", "/?id=12a").view));
  HttpMatch present;
  present.query_params.push_back({"x", StringMatch{}});
  EXPECT_TRUE(matches(present, Request("GET", "/?x=anything").view));
  EXPECT_FALSE(matches(present, Request("GET", "/?y=1").view));
}

TEST(HttpMatch, PortAndSourceLabels) {
  HttpMatch m;
  m.port = 9080;
  EXPECT_TRUE(matches(m, Request("GET", "/", {}, 9080).view));
  EXPECT_FALSE(matches(m, Request("GET", "/", {}, 9999).view));
  HttpMatch s;
  s.source_labels = {{"app", "productpage"}};
  Request r("GET", "/");
  EXPECT_FALSE(matches(s, r.view));  // the proxy's labels are unknown: never holds
  LabelList mine = {{"app", "productpage"}, {"version", "v1"}};
  r.view.source_labels = &mine;
  EXPECT_TRUE(matches(s, r.view));
  LabelList other = {{"app", "reviews"}};
  r.view.source_labels = &other;
  EXPECT_FALSE(matches(s, r.view));
}

TEST(HttpMatch, SourceConditionsDecidedWhenBuiltAreNotCheckedPerRequest) {
  HttpMatch m;
  m.source_labels = {{"app", "productpage"}};
  m.source_namespace = "bookinfo";
  Request r("GET", "/");
  EXPECT_FALSE(matches(m, r.view));  // unchecked: the request view carries no identity
  LabelList mine = {{"app", "productpage"}};
  r.view.source_labels = &mine;
  EXPECT_FALSE(matches(m, r.view));
  r.view.source_namespace = "bookinfo";
  EXPECT_TRUE(matches(m, r.view));
  Request bare("GET", "/");
  m.source = HttpMatch::Source::kHolds;
  EXPECT_TRUE(matches(m, bare.view));
  m.source = HttpMatch::Source::kNever;
  EXPECT_FALSE(matches(m, r.view));
}

TEST(HttpMatch, ConditionsAreAndedEntriesAreOredFirstRouteWins) {
  ServicePort port;
  HttpRoute jason;
  jason.name = "jason";
  HttpMatch both;
  both.uri = prefix("/reviews");
  both.headers.push_back({"end-user", exact("jason"), false});
  HttpMatch admin;
  admin.headers.push_back({"x-admin", StringMatch{}, false});
  jason.matches = {both, admin};
  HttpRoute all;
  all.name = "all";
  port.http_routes = {jason, all};
  auto pick = [&](const Request& r) {
    HttpRouteMatch m = matchHttpRoute(port, r.view);
    return m.route == nullptr ? std::string("none") : m.route->name;
  };
  EXPECT_EQ(pick(Request("GET", "/reviews/1", {{"end-user", "jason"}})), "jason");
  EXPECT_EQ(pick(Request("GET", "/ratings", {{"end-user", "jason"}})), "all");  // AND
  EXPECT_EQ(pick(Request("GET", "/ratings", {{"x-admin", "1"}})), "jason");     // OR
  EXPECT_EQ(pick(Request("GET", "/reviews/1")), "all");
  HttpRouteMatch m = matchHttpRoute(port, Request("GET", "/", {{"x-admin", "1"}}).view);
  EXPECT_EQ(m.match, &port.http_routes[0].matches[1]);
  EXPECT_EQ(matchHttpRoute(port, Request("GET", "/").view).match, nullptr);  // catch-all
  port.http_routes.pop_back();
  EXPECT_EQ(pick(Request("GET", "/")), "none");
}

// ---- rewrite, retryOn ----

TEST(Rewrite, PrefixExactNoneAndRegex) {
  HttpRewrite r;
  r.uri = "/v2/";
  HttpMatch p;
  p.uri = prefix("/api/");
  EXPECT_EQ(rewritePath(r, &p, "/api/users"), "/v2/users");
  HttpMatch e;
  e.uri = exact("/old");
  r.uri = "/new";
  EXPECT_EQ(rewritePath(r, &e, "/old"), "/new");
  EXPECT_EQ(rewritePath(r, nullptr, "/x/y"), "/newx/y");  // implicit prefix "/", as Envoy
  HttpRewrite re;
  ASSERT_TRUE(setUriRegexRewrite(re, "^/service/([^/]+)(/.*)$", "\\2/instance/\\1").ok());
  EXPECT_EQ(rewritePath(re, nullptr, "/service/foo/v1/api"), "/v1/api/instance/foo");
  HttpRewrite bad;
  EXPECT_FALSE(setUriRegexRewrite(bad, "^/(a)$", "\\2").ok());  // no group 2
  EXPECT_EQ(rewritePath(HttpRewrite{}, nullptr, "/same"), "/same");
}

TEST(RetryOn, NamesCodesAndUnknown) {
  ParsedRetryOn p = parseRetryOn("5xx, gateway-error,connect-failure,reset,503,429,bogus");
  EXPECT_EQ(p.bits, kRetryOn5xx | kRetryOnGatewayError | kRetryOnConnectFailure | kRetryOnReset |
                        kRetryOnRetriableStatusCodes);
  EXPECT_EQ(p.codes, (std::vector<uint16_t>{503, 429}));
  EXPECT_EQ(p.unknown, std::vector<std::string>{"bogus"});
  EXPECT_EQ(parseRetryOn("refused-stream,retriable-status-codes").bits,
            kRetryOnRefusedStream | kRetryOnRetriableStatusCodes);
  RetryPolicy d = RetryPolicy::istioDefault();
  EXPECT_EQ(d.attempts, 2u);
  EXPECT_EQ(d.retriable_status_codes, std::vector<uint16_t>{503});
}

// ---- ExactPercentage ----

// Every window of every length up to `max_window` holds ⌊N·p⌋ or ⌈N·p⌉ hits.
void expectExactWindows(uint32_t per_million, int calls, int max_window) {
  ExactPercentage p(Percentage{per_million});
  std::vector<int> prefix_hits(calls + 1, 0);
  for (int i = 0; i < calls; ++i) prefix_hits[i + 1] = prefix_hits[i] + (p.next() ? 1 : 0);
  for (int n = 1; n <= max_window; ++n) {
    uint64_t scaled = uint64_t{per_million} * static_cast<uint64_t>(n);
    auto lo = static_cast<int>(scaled / Percentage::kMillion);
    int hi = lo + (scaled % Percentage::kMillion != 0 ? 1 : 0);
    for (int start = 0; start + n <= calls; ++start) {
      int hits = prefix_hits[start + n] - prefix_hits[start];
      ASSERT_TRUE(hits == lo || hits == hi)
          << per_million << " ppm, window " << n << " at " << start << ": " << hits;
    }
  }
}

TEST(ExactPercentage, EveryWindowIsExact) {
  for (uint32_t ppm :
       {0U, 1U, 50'000U, 100'000U, 123'456U, 333'333U, 500'000U, 900'000U, 999'999U, 1'000'000U}) {
    expectExactWindows(ppm, 1200, 250);
  }
}

TEST(ExactPercentage, TenPercentIsOneInEveryTen) {
  ExactPercentage p(Percentage{100'000});
  std::string pattern;
  for (int i = 0; i < 30; ++i) pattern += p.next() ? 'X' : '.';
  EXPECT_EQ(pattern, ".........X.........X.........X");
}

// ---- Router: per-request picks ----

struct SubsetDef {
  std::string name;
  std::vector<std::string> endpoints;
};

// A ServicePort 10.96.0.1:80 with the given subsets and one http route over them.
std::shared_ptr<const RouteTable> routedTable(const std::vector<SubsetDef>& subsets,
                                              std::vector<HttpRoute> routes) {
  ServicePortEntry entry;
  entry.port.service = "svc.default";
  entry.port.port = 80;
  entry.port.protocol = "HTTP";
  entry.cluster_ips.push_back(*IpAddress::parse("10.96.0.1"));
  for (uint32_t s = 0; s < subsets.size(); ++s) {
    Subset subset;
    subset.name = subsets[s].name;
    for (const auto& e : subsets[s].endpoints) subset.endpoints.append({addr(e.c_str()), ""});
    entry.port.subsets.push_back(std::move(subset));
  }
  entry.port.route.push_back({0, 100});
  entry.port.http_routes = std::move(routes);
  auto table = StaticRouteTable::create({}, 1, {std::move(entry)});
  EXPECT_TRUE(table.ok());
  return *table;
}

HttpRoute weighted(const std::vector<uint32_t>& weights) {
  HttpRoute route;
  for (uint32_t i = 0; i < weights.size(); ++i) {
    HttpRouteDestination d;
    d.destination.subset_index = i;
    d.weight = weights[i];
    route.destinations.push_back(d);
  }
  return route;
}

TEST(RouterRequest, NinetyTenIsExactInEveryHundredRequests) {
  auto table = routedTable({{"v1", {"10.1.0.1:80", "10.1.0.2:80"}}, {"v2", {"10.1.0.3:80"}}},
                           {weighted({90, 10})});
  const ServicePort& port = *table->find(addr("10.96.0.1:80"));
  auto router = makeRouter(table, 1);
  std::vector<uint32_t> picks;
  for (int i = 0; i < 500; ++i) {
    HttpRouteDecision d = router->routeRequest(port, port.http_routes[0]);
    ASSERT_EQ(d.upstream.kind, RouteDecision::Kind::kService);
    ASSERT_NE(d.destination, nullptr);
    EXPECT_EQ(d.upstream.subset_index, d.destination->destination.subset_index);
    picks.push_back(d.upstream.subset_index);
    router->release(d.upstream);
  }
  for (size_t start = 0; start + 100 <= picks.size(); ++start) {
    auto v2 = std::count(picks.begin() + static_cast<long>(start),
                         picks.begin() + static_cast<long>(start + 100), 1U);
    ASSERT_EQ(v2, 10) << "window at " << start;
  }
  // Round-robin inside v1: both endpoints alike.
  std::map<std::string, int> per_endpoint;
  for (int i = 0; i < 100; ++i) {
    auto d = router->routeRequest(port, port.http_routes[0]);
    ++per_endpoint[d.upstream.upstream.toString()];
  }
  EXPECT_EQ(per_endpoint["10.1.0.1:80"], per_endpoint["10.1.0.2:80"]);
}

TEST(RouterRequest, SmoothInterleavingAndZeroWeights) {
  auto table = routedTable({{"a", {"10.1.0.1:80"}}, {"b", {"10.1.0.2:80"}}, {"c", {"10.1.0.3:80"}}},
                           {weighted({1, 1, 0}), weighted({5, 1, 1})});
  const ServicePort& port = *table->find(addr("10.96.0.1:80"));
  auto router = makeRouter(table, 1);
  std::string seq;
  for (int i = 0; i < 6; ++i) {
    seq += static_cast<char>('a' +
                             router->routeRequest(port, port.http_routes[0]).upstream.subset_index);
  }
  EXPECT_EQ(seq, "ababab");
  // nginx's smooth order for 5/1/1: a a b a c a a.
  seq.clear();
  for (int i = 0; i < 7; ++i) {
    seq += static_cast<char>('a' +
                             router->routeRequest(port, port.http_routes[1]).upstream.subset_index);
  }
  EXPECT_EQ(seq, "aabacaa");
}

TEST(RouterRequest, EmptySubsetShareGoesToTheOthersAndNoneLeftIsRefused) {
  auto table = routedTable({{"v1", {"10.1.0.1:80"}}, {"v2", {}}}, {weighted({50, 50})});
  const ServicePort& port = *table->find(addr("10.96.0.1:80"));
  auto router = makeRouter(table, 1);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(router->routeRequest(port, port.http_routes[0]).upstream.subset_index, 0U);
  }
  auto empty = routedTable({{"v1", {}}}, {weighted({100})});
  const ServicePort& none = *empty->find(addr("10.96.0.1:80"));
  auto r2 = makeRouter(empty, 1);
  HttpRouteDecision d = r2->routeRequest(none, none.http_routes[0]);
  EXPECT_EQ(d.upstream.kind, RouteDecision::Kind::kRefused);
}

struct EjectSet final : EndpointHealth {
  std::vector<std::pair<uint32_t, uint32_t>> ejected_endpoints;
  bool ejected(const ServicePort&, uint32_t subset, uint32_t endpoint) const override {
    return std::find(ejected_endpoints.begin(), ejected_endpoints.end(),
                     std::make_pair(subset, endpoint)) != ejected_endpoints.end();
  }
};

TEST(RouterRequest, EjectedAndTriedEndpointsAreSkipped) {
  auto table =
      routedTable({{"v1", {"10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80"}}}, {weighted({100})});
  const ServicePort& port = *table->find(addr("10.96.0.1:80"));
  auto router = makeRouter(table, 1);
  EjectSet health;
  health.ejected_endpoints = {{0, 1}};
  for (int i = 0; i < 6; ++i) {
    auto d = router->routeRequest(port, port.http_routes[0], &health);
    ASSERT_EQ(d.upstream.kind, RouteDecision::Kind::kService);
    EXPECT_NE(d.upstream.endpoint_index, 1U);
  }
  std::vector<SocketAddress> tried = {addr("10.1.0.1:80")};
  auto retry = router->pickSubsetEndpoint(port, 0, tried, &health);
  ASSERT_TRUE(retry);
  EXPECT_EQ(retry->upstream, addr("10.1.0.3:80"));
  tried.push_back(addr("10.1.0.3:80"));
  EXPECT_FALSE(router->pickSubsetEndpoint(port, 0, tried, &health));
  EXPECT_FALSE(router->pickSubsetEndpoint(port, 7, {}, nullptr));  // no such subset
  health.ejected_endpoints = {{0, 0}, {0, 1}, {0, 2}};
  EXPECT_EQ(router->routeRequest(port, port.http_routes[0], &health).upstream.kind,
            RouteDecision::Kind::kRefused);
}

TEST(RouterRequest, FaultsAndMirrorAreDrawnExactly) {
  HttpRoute route = weighted({100});
  route.fault.delay = std::chrono::milliseconds(7000);
  route.fault.delay_percentage = {100'000};  // 10%
  route.fault.abort_status = 500;
  route.fault.abort_percentage = {50'000};                                    // 5%
  route.mirrors.push_back({HttpDestination{"svc", "shadow", 1}, {250'000}});  // 25%
  auto table = routedTable({{"v1", {"10.1.0.1:80"}}, {"shadow", {"10.1.0.9:80"}}}, {route});
  const ServicePort& port = *table->find(addr("10.96.0.1:80"));
  auto router = makeRouter(table, 1);
  int delays = 0;
  int aborts = 0;
  int mirrors = 0;
  std::vector<bool> aborted;
  for (int i = 0; i < 1000; ++i) {
    HttpRouteDecision d = router->routeRequest(port, port.http_routes[0]);
    delays += d.delay ? 1 : 0;
    aborts += d.abort ? 1 : 0;
    aborted.push_back(d.abort);
    ASSERT_LE(d.mirrors.size(), 1U);
    for (const RouteDecision& m : d.mirrors) {
      ++mirrors;
      EXPECT_EQ(m.upstream, addr("10.1.0.9:80"));
      router->release(m);
    }
    if (d.abort) {
      EXPECT_EQ(d.destination, nullptr);
      EXPECT_TRUE(d.mirrors.empty());
      continue;
    }
    EXPECT_EQ(d.upstream.upstream, addr("10.1.0.1:80"));
  }
  EXPECT_EQ(delays, 100);
  EXPECT_EQ(aborts, 50);
  // An aborted request reaches no upstream and is not mirrored: 25% of the other 950.
  EXPECT_EQ(mirrors, 237);
  for (size_t start = 0; start + 20 <= aborted.size(); ++start) {
    ASSERT_EQ(std::count(aborted.begin() + static_cast<long>(start),
                         aborted.begin() + static_cast<long>(start + 20), true),
              1);
  }
}

TEST(RouterRequest, EachMirrorIsDrawnExactlyOnItsOwn) {
  HttpRoute route = weighted({100});
  route.mirrors.push_back({HttpDestination{"svc", "shadow", 1}, {250'000}});  // 25%
  route.mirrors.push_back({HttpDestination{"svc", "dark", 2}, {100'000}});    // 10%
  auto table = routedTable(
      {{"v1", {"10.1.0.1:80"}}, {"shadow", {"10.1.0.9:80"}}, {"dark", {"10.1.0.8:80"}}}, {route});
  const ServicePort& port = *table->find(addr("10.96.0.1:80"));
  auto router = makeRouter(table, 1);
  std::vector<int> per_window_shadow;
  int shadow = 0;
  int dark = 0;
  int both = 0;
  for (int i = 0; i < 1000; ++i) {
    HttpRouteDecision d = router->routeRequest(port, port.http_routes[0]);
    bool s = false;
    bool k = false;
    for (const RouteDecision& m : d.mirrors) {
      if (m.upstream == addr("10.1.0.9:80")) s = true;
      if (m.upstream == addr("10.1.0.8:80")) k = true;
      router->release(m);
    }
    ASSERT_EQ(d.mirrors.size(), (s ? 1U : 0U) + (k ? 1U : 0U));
    shadow += s ? 1 : 0;
    dark += k ? 1 : 0;
    both += s && k ? 1 : 0;
    if (i % 20 == 19) per_window_shadow.push_back(shadow);
    EXPECT_EQ(d.upstream.upstream, addr("10.1.0.1:80"));
  }
  EXPECT_EQ(shadow, 250);
  EXPECT_EQ(dark, 100);
  EXPECT_GT(both, 0);  // independent draws: some requests go to both
  // Exact over every window, not only the total: 5 of each 20 requests.
  for (size_t w = 0; w < per_window_shadow.size(); ++w) {
    EXPECT_EQ(per_window_shadow[w], static_cast<int>(5 * (w + 1)));
  }
}

TEST(RouterRequest, CountersStartAfreshWithANewTable) {
  auto table = routedTable({{"a", {"10.1.0.1:80"}}, {"b", {"10.1.0.2:80"}}}, {weighted({1, 1})});
  auto router = makeRouter(table, 1);
  const ServicePort& port = *table->find(addr("10.96.0.1:80"));
  EXPECT_EQ(router->routeRequest(port, port.http_routes[0]).upstream.subset_index, 0U);
  auto next = routedTable({{"a", {"10.1.0.1:80"}}, {"b", {"10.1.0.2:80"}}}, {weighted({1, 1})});
  router->setTable(next);
  const ServicePort& port2 = *next->find(addr("10.96.0.1:80"));
  EXPECT_EQ(router->routeRequest(port2, port2.http_routes[0]).upstream.subset_index, 0U);
}

}  // namespace
}  // namespace remora::routing

// ---- Config: the Istio samples and the parser's findings ----

namespace remora::config {
namespace {

using routing::HttpRoute;
using routing::LabelList;
using routing::Percentage;
using routing::RouteDecision;
using routing::RouteTable;
using routing::ServicePort;
using routing::StringMatch;

using testing::addr;
using testing::fixture;

std::shared_ptr<const RouteTable> load(const std::string& text) { return testing::mustLoad(text); }

std::string all(const RouteTable& table) { return testing::allFindings(table); }

const Finding* findFinding(const RouteTable& table, Severity severity,
                           const std::vector<std::string>& parts) {
  for (const auto& f : table.findings()) {
    if (f.severity != severity) continue;
    if (std::all_of(parts.begin(), parts.end(),
                    [&](const std::string& p) { return f.text.find(p) != std::string::npos; })) {
      return &f;
    }
  }
  ADD_FAILURE() << "no " << toString(severity) << " finding with "
                << fmt::format("{}", fmt::join(parts, " + ")) << " in:\n"
                << all(table);
  return nullptr;
}

std::string subsetOf(const ServicePort& port, uint32_t index) { return port.subsets[index].name; }

// The subset a request goes to through the router (or "404" / "redirect" / ...).
std::string route(routing::Router& router, const ServicePort& port, const std::string& target,
                  std::vector<std::pair<std::string, std::string>> headers = {}) {
  std::vector<routing::HeaderField> fields;
  for (const auto& [n, v] : headers) fields.push_back({n, v});
  routing::RequestView view;
  view.method = "GET";
  view.setTarget(target);
  view.headers = fields;
  view.port = port.port;
  routing::HttpRouteMatch m = routing::matchHttpRoute(port, view);
  if (m.route == nullptr) return "404";
  if (m.route->redirect) return "redirect";
  if (m.route->direct_response) return fmt::format("direct {}", m.route->direct_response->status);
  routing::HttpRouteDecision d = router.routeRequest(port, *m.route);
  if (d.abort) return fmt::format("abort {}", *m.route->fault.abort_status);
  if (d.upstream.kind != RouteDecision::Kind::kService) return "503";
  router.release(d.upstream);
  return subsetOf(port, d.upstream.subset_index) + (d.delay ? " delayed" : "");
}

// The head of a VirtualService bookinfo/reviews; spec.http's entries follow (line 7 on).
const std::string kReviewsHttp = R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
)";

// The number of lines of `text` before `tail`, which ends it: line k of `tail` is line
// linesBefore + k of `text`.
int linesBefore(const std::string& text, const std::string& tail) {
  return static_cast<int>(std::count(text.begin(), text.end(), '\n') -
                          std::count(tail.begin(), tail.end(), '\n'));
}

std::string bookinfoWith(const std::string& more) {
  return fixture("bookinfo/bookinfo.yaml") + "---\n" + more;
}

TEST(IstioSamples, JasonGoesToV2OthersSplitEightyTwentyWithAnExactAbort) {
  auto table = load(bookinfoWith(fixture("bookinfo/routing.yaml")));
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.1.122.241:9080"));
  ASSERT_NE(port, nullptr);
  ASSERT_EQ(port->http_routes.size(), 2U);
  const HttpRoute& jason = port->http_routes[0];
  ASSERT_EQ(jason.matches.size(), 1U);
  ASSERT_EQ(jason.matches[0].headers.size(), 1U);
  EXPECT_EQ(jason.matches[0].headers[0].name, "end-user");
  EXPECT_EQ(jason.matches[0].headers[0].value.kind, StringMatch::Kind::kExact);
  EXPECT_EQ(jason.matches[0].headers[0].value.value, "jason");
  ASSERT_EQ(jason.destinations.size(), 1U);
  EXPECT_EQ(subsetOf(*port, jason.destinations[0].destination.subset_index), "v2");
  EXPECT_EQ(jason.destinations[0].weight, 100U);
  EXPECT_GT(jason.line, 0);
  const HttpRoute& rest = port->http_routes[1];
  EXPECT_TRUE(rest.matches.empty());
  ASSERT_EQ(rest.destinations.size(), 2U);
  EXPECT_EQ(subsetOf(*port, rest.destinations[0].destination.subset_index), "v1");
  EXPECT_EQ(rest.destinations[0].weight, 80U);
  EXPECT_EQ(rest.destinations[1].weight, 20U);
  ASSERT_TRUE(rest.fault.abort_status);
  EXPECT_EQ(*rest.fault.abort_status, 500);
  EXPECT_EQ(rest.fault.abort_percentage, Percentage{100'000});
  EXPECT_FALSE(rest.fault.delay);
  EXPECT_EQ(rest.retries.attempts, 2U);  // Istio's default policy

  auto router = routing::makeRouter(table, 1);
  std::map<std::string, int> jason_counts;
  std::map<std::string, int> other_counts;
  for (int i = 0; i < 100; ++i) {
    ++jason_counts[route(*router, *port, "/reviews/1", {{"End-User", "jason"}})];
    ++other_counts[route(*router, *port, "/reviews/1", {{"end-user", "bob"}})];
  }
  EXPECT_EQ(jason_counts, (std::map<std::string, int>{{"v2", 100}}));
  // 10 of 100 aborted exactly; the other 90 split 80/20 per request, as exactly as 90 allow.
  EXPECT_EQ(other_counts["abort 500"], 10);
  EXPECT_EQ(other_counts["v1"] + other_counts["v2"], 90);
  EXPECT_EQ(other_counts["v1"], 72);
}

TEST(IstioSamples, SeedNinetyTenIsExactPerRequest) {
  auto table = load(fixture("seed/seed.yaml") + fixture("seed/istio-90-10.yaml"));
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.1.122.241:9999"));
  ASSERT_NE(port, nullptr);
  ASSERT_EQ(port->http_routes.size(), 1U);
  auto router = routing::makeRouter(table, 1);
  std::vector<std::string> picks;
  for (int i = 0; i < 300; ++i) picks.push_back(route(*router, *port, "/"));
  for (size_t start = 0; start + 100 <= picks.size(); ++start) {
    ASSERT_EQ(std::count(picks.begin() + static_cast<long>(start),
                         picks.begin() + static_cast<long>(start + 100), "v2"),
              10);
  }
}

constexpr const char* kRatingsDelay = R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      delay:
        percentage:
          value: 100.0
        fixedDelay: 7s
    route:
    - destination:
        host: ratings
  - route:
    - destination:
        host: ratings
)";

TEST(IstioSamples, DelayForJasonOnly) {
  auto table = load(bookinfoWith(kRatingsDelay));
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.1.0.20:9080"));
  ASSERT_NE(port, nullptr);
  ASSERT_EQ(port->http_routes.size(), 2U);
  ASSERT_TRUE(port->http_routes[0].fault.delay);
  EXPECT_EQ(*port->http_routes[0].fault.delay, std::chrono::seconds(7));
  EXPECT_EQ(port->http_routes[0].fault.delay_percentage, Percentage{Percentage::kMillion});
  auto router = routing::makeRouter(table, 1);
  EXPECT_EQ(route(*router, *port, "/ratings/0", {{"end-user", "jason"}}), " delayed");
  EXPECT_EQ(route(*router, *port, "/ratings/0", {{"end-user", "alice"}}), "");
}

TEST(HttpConfig, EveryRouteFieldReachesTheModel) {
  auto table = load(bookinfoWith(kReviewsHttp + R"(  - name: old-api
    match:
    - uri: {prefix: /api/v1/}
      method: {regex: "GET|HEAD"}
      queryParams: {debug: {}}
      withoutHeaders: {x-skip: {}}
      ignoreUriCase: true
    rewrite: {uri: /v1/, authority: reviews-internal}
    headers:
      request:
        set: {X-Route: old-api}
        add: {x-trace: "1"}
        remove: [Cookie]
      response:
        set: {cache-control: no-store}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 3
      headers: {request: {set: {x-subset: v1}}}
    - destination: {host: reviews, subset: v3}
      weight: 1
    timeout: 2.5s
    retries: {attempts: 4, perTryTimeout: 500ms, retryOn: "gateway-error,reset,429"}
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 12.5}
    fault:
      abort: {httpStatus: 503, percentage: {value: 0.1}}
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: example.org, redirectCode: 308, scheme: https, port: 8443}
  - match: [{uri: {regex: "/health(z)?"}}]
    directResponse: {status: 200, body: {bytes: b2sK}}
  - match: [{uri: {prefix: /x}, port: 1234}]
    route: [{destination: {host: reviews, subset: v3}}]
  - route: [{destination: {host: reviews, subset: v1}}]
    retries: {attempts: 0}
)"));
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.1.122.241:9080"));
  ASSERT_NE(port, nullptr);
  // The port-1234 route is not on port 9080.
  ASSERT_EQ(port->http_routes.size(), 4U) << all(*table);
  const HttpRoute& r = port->http_routes[0];
  EXPECT_EQ(r.name, "old-api");
  ASSERT_EQ(r.matches.size(), 1U);
  const auto& m = r.matches[0];
  EXPECT_TRUE(m.uri && m.uri->kind == StringMatch::Kind::kPrefix && m.uri->ignore_case);
  EXPECT_TRUE(m.method && m.method->kind == StringMatch::Kind::kRegex);
  ASSERT_EQ(m.query_params.size(), 1U);
  EXPECT_EQ(m.query_params[0].value.kind, StringMatch::Kind::kPresent);
  ASSERT_EQ(m.headers.size(), 1U);
  EXPECT_TRUE(m.headers[0].invert);
  ASSERT_TRUE(r.rewrite);
  EXPECT_EQ(r.rewrite->uri, "/v1/");
  EXPECT_EQ(r.rewrite->authority, "reviews-internal");
  EXPECT_EQ(routing::rewritePath(*r.rewrite, &m, "/API/V1/books"), "/v1/books");
  EXPECT_EQ(r.headers.request.set,
            (std::vector<std::pair<std::string, std::string>>{{"x-route", "old-api"}}));
  EXPECT_EQ(r.headers.request.add.size(), 1U);
  EXPECT_EQ(r.headers.request.remove, std::vector<std::string>{"cookie"});
  EXPECT_EQ(r.headers.response.set.size(), 1U);
  ASSERT_EQ(r.destinations.size(), 2U);
  EXPECT_EQ(r.destinations[0].headers.request.set.size(), 1U);
  EXPECT_EQ(subsetOf(*port, r.destinations[1].destination.subset_index), "v3");
  EXPECT_EQ(r.timeout, std::chrono::milliseconds(2500));
  EXPECT_EQ(r.retries.attempts, 4U);
  EXPECT_EQ(r.retries.per_try_timeout, std::chrono::milliseconds(500));
  EXPECT_EQ(r.retries.retry_on, routing::kRetryOnGatewayError | routing::kRetryOnReset |
                                    routing::kRetryOnRetriableStatusCodes);
  EXPECT_EQ(r.retries.retriable_status_codes, std::vector<uint16_t>{429});
  ASSERT_EQ(r.mirrors.size(), 1U);
  EXPECT_EQ(subsetOf(*port, r.mirrors[0].destination.subset_index), "v2");
  EXPECT_EQ(r.mirrors[0].percentage, Percentage{125'000});
  EXPECT_EQ(r.fault.abort_percentage, Percentage{1'000});
  const HttpRoute& redirect = port->http_routes[1];
  ASSERT_TRUE(redirect.redirect);
  EXPECT_EQ(redirect.redirect->code, 308);
  EXPECT_EQ(redirect.redirect->port, 8443);
  EXPECT_EQ(redirect.redirect->scheme, "https");
  EXPECT_TRUE(redirect.destinations.empty());
  const HttpRoute& direct = port->http_routes[2];
  ASSERT_TRUE(direct.direct_response);
  EXPECT_EQ(direct.direct_response->body, "ok\n");
  EXPECT_EQ(port->http_routes[3].retries.attempts, 0U);

  auto router = routing::makeRouter(table, 1);
  EXPECT_EQ(route(*router, *port, "/healthz"), "direct 200");
  EXPECT_EQ(route(*router, *port, "/health"), "direct 200");
  EXPECT_EQ(route(*router, *port, "/healthy"), "v1");
  EXPECT_EQ(route(*router, *port, "/old"), "redirect");
  EXPECT_EQ(route(*router, *port, "/api/v1/x?debug"), "v1");  // 3:1, the first pick is v1
  EXPECT_EQ(route(*router, *port, "/api/v1/x?debug", {{"x-skip", "1"}}), "v1");  // last route
  // No finding about any of it: every field used here is applied.
  for (const auto& f : table->findings()) {
    if (f.severity == Severity::kInfo) continue;
    EXPECT_EQ(f.text.find("VirtualService bookinfo/reviews"), std::string::npos) << f.text;
  }
  // /config_dump shows the routes.
  std::string dump = table->toJson().dump();
  EXPECT_NE(dump.find("\"httpRoutes\""), std::string::npos);
  EXPECT_NE(dump.find("\"old-api\""), std::string::npos);
}

TEST(HttpConfig, AnInvalidValueRejectsItsRouteAloneWithALocatedError) {
  std::string vs = kReviewsHttp + R"(  - match: [{headers: {end-user: {regex: "(jason"}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /a}}]
    fault: {abort: {httpStatus: 700, percentage: {value: 1}}}
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /b}}]
    fault: {delay: {fixedDelay: 1s, percentage: {value: 150}}}
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /c}}]
    retries: {attempts: 2, retryOn: "5xx,bogus"}
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /d}}]
    redirect: {uri: /e, redirectCode: 305}
  - match: [{uri: {prefix: /f, exact: /f}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
)";
  std::string text = bookinfoWith(vs);
  auto table = load(text);
  ASSERT_TRUE(table);
  const int vs_first = linesBefore(text, vs);
  const Finding* re = findFinding(
      *table, Severity::kError,
      {"(VirtualService bookinfo/reviews)", "spec.http[0].match[0].headers.end-user.regex",
       "invalid RE2 regex '(jason'", "missing )", "this route is left out"});
  ASSERT_NE(re, nullptr);
  EXPECT_EQ(re->line, vs_first + 7);
  EXPECT_EQ(re->field, "spec.http[0].match[0].headers.end-user.regex");
  findFinding(*table, Severity::kError,
              {"spec.http[1].fault.abort.httpStatus", "must be in 200..599, got 700"});
  findFinding(*table, Severity::kError,
              {"spec.http[2].fault.delay.percentage.value", "must be a number in 0..100"});
  findFinding(*table, Severity::kError, {"spec.http[3].retries.retryOn", "'bogus'"});
  findFinding(*table, Severity::kError, {"spec.http[4].redirect.redirectCode", "305"});
  findFinding(*table, Severity::kError,
              {"spec.http[5].match[0].uri.prefix", "only one of exact, prefix or regex"});
  // The others stay: only the catch-all is left, and it serves.
  const ServicePort* port = table->find(addr("10.1.122.241:9080"));
  ASSERT_NE(port, nullptr);
  ASSERT_EQ(port->http_routes.size(), 1U);
  EXPECT_EQ(subsetOf(*port, port->http_routes[0].destinations[0].destination.subset_index), "v1");
}

TEST(HttpConfig, UnappliedFieldsAreReported) {
  auto table = load(bookinfoWith(kReviewsHttp + R"(  - match: [{sourceLabels: {app: productpage}}]
    corsPolicy: {allowOrigins: [{exact: "https://example.com"}]}
    fault: {delay: {fixedDelay: 1s}}
    route: [{destination: {host: reviews, subset: v2}}]
    mirrors:
    - destination: {host: reviews, subset: v1}
    - destination: {host: reviews, subset: v3}
  - match: [{gateways: [istio-system/ingress], uri: {prefix: /}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - route: [{destination: {host: reviews, subset: v1}}]
)"));
  ASSERT_TRUE(table);
  findFinding(*table, Severity::kWarning, {"spec.http[0].corsPolicy", "CORS"});
  findFinding(*table, Severity::kWarning, {"spec.http[0].match[0].sourceLabels", "never holds"});
  findFinding(*table, Severity::kWarning, {"spec.http[0].fault.delay", "applies to no request"});
  for (const auto& f : table->findings()) EXPECT_EQ(f.field.find("mirrors"), std::string::npos);
  const ServicePort* port = table->find(addr("10.1.122.241:9080"));
  ASSERT_NE(port, nullptr);
  // The gateway-only route is not a sidecar route.
  ASSERT_EQ(port->http_routes.size(), 2U);
  EXPECT_EQ(port->http_routes[0].fault.delay_percentage, Percentage{0});
  ASSERT_EQ(port->http_routes[0].mirrors.size(), 2U);
  EXPECT_EQ(subsetOf(*port, port->http_routes[0].mirrors[0].destination.subset_index), "v1");
  EXPECT_EQ(subsetOf(*port, port->http_routes[0].mirrors[1].destination.subset_index), "v3");
  auto router = routing::makeRouter(table, 1);
  EXPECT_EQ(route(*router, *port, "/"), "v1");  // sourceLabels cannot hold
}

// Match entries on the client's identity: the client is the proxy's own workload, so they are
// held against it when the table is built, on HTTP ports per request and on TCP ports per
// connection.
const std::string kBySource = kReviewsHttp + R"(  - name: by-labels
    match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: by-namespace
    match: [{sourceNamespace: frontend, port: 9080}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: rest
    route: [{destination: {host: reviews, subset: v1}}]
  tcp:
  - match: [{sourceLabels: {app: productpage}, port: 9999}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
)";

routing::ProxySettings workload(std::string ns, LabelList labels) {
  routing::ProxySettings base;
  base.workload.namespace_name = std::move(ns);
  base.workload.labels = std::move(labels);
  base.workload.labels_known = true;
  return base;
}

// The http route a request on 9080 takes, and the subset a connection on 9999 goes to.
std::pair<std::string, std::string> sourceRouted(const routing::ProxySettings& base) {
  auto table = testing::mustLoad(bookinfoWith(kBySource), base);
  if (!table) return {"no table", ""};
  const ServicePort* http = table->find(addr("10.1.122.241:9080"));
  const ServicePort* tcp = table->find(addr("10.1.122.241:9999"));
  if (http == nullptr || tcp == nullptr) return {"no port", ""};
  auto router = routing::makeRouter(table, 1);
  RouteDecision d = router->route(addr("10.1.122.241:9999"));
  std::string tcp_subset = d.kind == RouteDecision::Kind::kService ? subsetOf(*tcp, d.subset_index)
                                                                   : std::string("passthrough");
  routing::RequestView view;
  view.method = "GET";
  view.setTarget("/");
  view.port = 9080;
  const routing::HttpRouteMatch m = routing::matchHttpRoute(*http, view);
  return {m.route == nullptr ? std::string("404") : m.route->name, tcp_subset};
}

TEST(HttpConfig, SourceLabelsAndNamespaceHoldAgainstTheProxysOwnWorkload) {
  using Routed = std::pair<std::string, std::string>;
  EXPECT_EQ(sourceRouted(workload("bookinfo", {{"app", "productpage"}, {"version", "v1"}})),
            Routed("by-labels", "v2"));
  EXPECT_EQ(sourceRouted(workload("frontend", {{"app", "web"}})), Routed("by-namespace", "v1"));
  EXPECT_EQ(sourceRouted(workload("bookinfo", {{"app", "web"}})), Routed("rest", "v1"));
  // Without an identity neither holds, and the findings say why.
  EXPECT_EQ(sourceRouted({}), Routed("rest", "v1"));
  auto table = load(bookinfoWith(kBySource));
  ASSERT_TRUE(table);
  findFinding(*table, Severity::kWarning,
              {"spec.http[0].match[0].sourceLabels", "does not know its workload's labels"});
  findFinding(*table, Severity::kWarning,
              {"spec.http[1].match[0].sourceNamespace", "does not know its workload's namespace"});
  findFinding(*table, Severity::kWarning, {"spec.tcp[0].match[0].sourceLabels", "never holds"});
  // Nothing says they are not applied any more.
  EXPECT_EQ(all(*table).find("not applied yet"), std::string::npos) << all(*table);
  // With an identity that does not match: an info finding, and the dump shows the outcome.
  table = testing::mustLoad(bookinfoWith(kBySource), workload("bookinfo", {{"app", "web"}}));
  ASSERT_TRUE(table);
  findFinding(*table, Severity::kInfo,
              {"spec.http[0].match[0].sourceLabels", "does not hold for this proxy's workload",
               "namespace bookinfo, labels app=web"});
  const nlohmann::json dump = table->toJson();
  bool seen = false;
  for (const auto& s : dump["services"]) {
    for (const auto& r : s.value("httpRoutes", nlohmann::json::array())) {
      for (const auto& m : r.value("match", nlohmann::json::array())) {
        if (!m.contains("sourceLabels")) continue;
        seen = true;
        EXPECT_EQ(m["sourceHolds"], false) << m;
      }
    }
  }
  EXPECT_TRUE(seen) << dump.dump(1);
}

TEST(HttpConfig, EveryMirrorsEntryIsAppliedWithItsPercentage) {
  const std::string vs = kReviewsHttp + R"(  - match: [{uri: {prefix: /two}}]
    route: [{destination: {host: reviews, subset: v1}}]
    mirrors:
    - destination: {host: reviews, subset: v2}
      percentage: {value: 25}
    - destination: {host: reviews, subset: v3}
      percentage: {value: 12.5}
      mirrorTimeout: 3s
    - destination: {host: reviews, subset: v1}
    mirrorPercentage: {value: 50}
  - match: [{uri: {prefix: /both}}]
    route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: reviews, subset: v2}
    mirrors: [{destination: {host: reviews, subset: v3}}]
  - route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: reviews, subset: v3}
    mirrorPercentage: {value: 5}
)";
  std::string text = bookinfoWith(vs);
  auto table = load(text);
  ASSERT_TRUE(table);
  const int vs_first = linesBefore(text, vs);
  // An unknown key in an entry is reported at its own line.
  const Finding* unknown =
      findFinding(*table, Severity::kWarning, {"spec.http[0].mirrors[1].mirrorTimeout"});
  ASSERT_NE(unknown, nullptr);
  EXPECT_EQ(unknown->line, vs_first + 14);
  findFinding(*table, Severity::kWarning,
              {"spec.http[0].mirrorPercentage", "no effect with mirrors[]"});
  // Istio rejects both forms together; so does Remora, for that route alone.
  findFinding(*table, Severity::kError,
              {"spec.http[1].mirrors", "cannot be set together with mirror"});
  const ServicePort* port = table->find(addr("10.1.122.241:9080"));
  ASSERT_NE(port, nullptr);
  ASSERT_EQ(port->http_routes.size(), 2U) << all(*table);
  const HttpRoute& two = port->http_routes[0];
  ASSERT_EQ(two.mirrors.size(), 3U);
  EXPECT_EQ(subsetOf(*port, two.mirrors[0].destination.subset_index), "v2");
  EXPECT_EQ(two.mirrors[0].percentage, Percentage{250'000});
  EXPECT_EQ(subsetOf(*port, two.mirrors[1].destination.subset_index), "v3");
  EXPECT_EQ(two.mirrors[1].percentage, Percentage{125'000});
  EXPECT_EQ(subsetOf(*port, two.mirrors[2].destination.subset_index), "v1");
  EXPECT_EQ(two.mirrors[2].percentage, Percentage{Percentage::kMillion});  // absent: 100%
  const HttpRoute& one = port->http_routes[1];
  ASSERT_EQ(one.mirrors.size(), 1U);
  EXPECT_EQ(subsetOf(*port, one.mirrors[0].destination.subset_index), "v3");
  EXPECT_EQ(one.mirrors[0].percentage, Percentage{50'000});
  for (const auto& f : table->findings()) {
    EXPECT_EQ(f.text.find("partly"), std::string::npos) << f.text;
  }
}

TEST(HttpConfig, SniffedPortTakesHttpPerRequestAndTcpPerConnection) {
  // The seed's bill-service with its port renamed "web": no protocol declared, so sniffed.
  std::string seed = fixture("seed/seed.yaml");
  size_t at = seed.find("name: http\n    port: 9999");
  ASSERT_NE(at, std::string::npos);
  seed.replace(at, 10, "name: web");
  auto table = load(seed + R"(---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bill, namespace: istio-demo}
spec:
  host: bill-service
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bill, namespace: istio-demo}
spec:
  hosts: [bill-service]
  http:
  - route: [{destination: {host: bill-service, subset: v2}}]
  tcp:
  - route: [{destination: {host: bill-service, subset: v1}}]
)");
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.1.122.241:9999"));
  ASSERT_NE(port, nullptr);
  ASSERT_EQ(port->protocol, "auto");
  ASSERT_EQ(port->route.size(), 1U);
  EXPECT_EQ(subsetOf(*port, port->route[0].subset_index), "v1");
  ASSERT_EQ(port->http_routes.size(), 1U);
  EXPECT_EQ(subsetOf(*port, port->http_routes[0].destinations[0].destination.subset_index), "v2");
  findFinding(*table, Severity::kInfo, {"declares no protocol", "sniffed", "spec.tcp to the rest"});
}

TEST(HttpConfig, HttpTwoPortsStayPerConnection) {
  std::string text =
      bookinfoWith(kReviewsHttp + R"(  - route: [{destination: {host: reviews, subset: v2}}]
)");
  // The same Service with its port named grpc.
  size_t at = text.find("- name: http\n      port: 9080");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 12, "- name: grpc");
  auto table = load(text);
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.1.122.241:9080"));
  ASSERT_NE(port, nullptr);
  EXPECT_EQ(port->protocol, "GRPC");
  EXPECT_TRUE(port->http_routes.empty());
  findFinding(*table, Severity::kWarning, {"applied per connection", "GRPC is not parsed"});
}

// ---- DestinationRule trafficPolicy ----

TEST(TrafficPolicy, PoolAndOutlierMergedAsIstioDoes) {
  // The seed's bill-service (port 9999, pods v1 and v2); "v1b" selects the v1 pod too.
  auto table = load(fixture("seed/seed.yaml") + R"(---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bill, namespace: istio-demo}
spec:
  hosts: [bill-service]
  http:
  - route:
    - {destination: {host: bill-service, subset: v1}, weight: 1}
    - {destination: {host: bill-service, subset: v2}, weight: 1}
    - {destination: {host: bill-service, subset: v1b}, weight: 1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bill, namespace: istio-demo}
spec:
  host: bill-service
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 250ms
        tcpKeepalive: {time: 60s, interval: 5s, probes: 3}
      http:
        http1MaxPendingRequests: 10
        maxRequestsPerConnection: 5
        maxRetries: 0
        idleTimeout: 30s
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 15s
      maxEjectionPercent: 50
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool: {http: {http1MaxPendingRequests: 1}}
  - name: v1b
    labels: {version: v1}
    trafficPolicy:
      outlierDetection: {consecutiveGatewayErrors: 2, consecutive5xxErrors: 0}
      portLevelSettings:
      - port: {number: 9999}
        loadBalancer: {simple: LEAST_REQUEST}
)");
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.1.122.241:9999"));
  ASSERT_NE(port, nullptr);
  auto subset = [&](const std::string& name) -> const routing::Subset& {
    for (const auto& s : port->subsets) {
      if (s.name == name) return s;
    }
    ADD_FAILURE() << "no subset " << name;
    return port->subsets[0];
  };
  const routing::Subset& v1 = subset("v1");
  EXPECT_EQ(v1.policy, routing::LbPolicy::kRandom);
  EXPECT_EQ(v1.connection_pool.max_connections, 100U);
  EXPECT_EQ(v1.connection_pool.connect_timeout, std::chrono::milliseconds(250));
  ASSERT_TRUE(v1.connection_pool.tcp_keepalive);
  EXPECT_EQ(v1.connection_pool.tcp_keepalive->probes, 3U);
  EXPECT_EQ(v1.connection_pool.tcp_keepalive->time, std::chrono::seconds(60));
  EXPECT_EQ(v1.connection_pool.http1_max_pending_requests, 10U);
  EXPECT_EQ(v1.connection_pool.max_requests_per_connection, 5U);
  // Istio: 0 means the default (no limit).
  EXPECT_EQ(v1.connection_pool.max_retries, routing::ConnectionPoolSettings::kUnlimited);
  EXPECT_EQ(v1.connection_pool.idle_timeout, std::chrono::seconds(30));
  EXPECT_TRUE(v1.outlier_detection.enabled);
  EXPECT_EQ(v1.outlier_detection.consecutive_5xx_errors, 3U);
  EXPECT_EQ(v1.outlier_detection.consecutive_gateway_errors, 0U);
  EXPECT_EQ(v1.outlier_detection.interval, std::chrono::seconds(1));
  EXPECT_EQ(v1.outlier_detection.base_ejection_time, std::chrono::seconds(15));
  EXPECT_EQ(v1.outlier_detection.max_ejection_percent, 50U);
  // A subset's block replaces the top one whole (not field by field).
  const routing::Subset& v2 = subset("v2");
  EXPECT_EQ(v2.connection_pool.http1_max_pending_requests, 1U);
  EXPECT_EQ(v2.connection_pool.max_connections, routing::ConnectionPoolSettings::kUnlimited);
  EXPECT_EQ(v2.outlier_detection.consecutive_5xx_errors, 3U);  // inherited block
  EXPECT_EQ(v2.policy, routing::LbPolicy::kRandom);
  // A matching portLevelSettings entry replaces every block, the unset ones with defaults.
  const routing::Subset& v3 = subset("v1b");
  EXPECT_EQ(v3.policy, routing::LbPolicy::kLeastRequest);
  EXPECT_FALSE(v3.outlier_detection.enabled);
  EXPECT_EQ(v3.connection_pool, routing::ConnectionPoolSettings{});
  std::string dump = table->toJson().dump();
  EXPECT_NE(dump.find("\"connectionPool\""), std::string::npos);
  EXPECT_NE(dump.find("\"outlierDetection\""), std::string::npos);
  // Nothing here is unapplied.
  EXPECT_EQ(all(*table).find("DestinationRule istio-demo/bill"), std::string::npos) << all(*table);
}

TEST(TrafficPolicy, TopLevelPortSettingsAndBadValues) {
  std::string dr = R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: bookinfo}
spec:
  host: ratings
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 7}}
    portLevelSettings:
    - port: {number: 9080}
      outlierDetection: {consecutiveErrors: 4}
)";
  auto table = load(bookinfoWith(dr));
  ASSERT_TRUE(table);
  const ServicePort* port = table->find(addr("10.1.0.20:9080"));
  ASSERT_NE(port, nullptr);
  const routing::Subset& all_endpoints = port->subsets[0];
  // Port 9080's entry replaces the top level's connectionPool with the default.
  EXPECT_EQ(all_endpoints.connection_pool.max_connections,
            routing::ConnectionPoolSettings::kUnlimited);
  // The deprecated consecutiveErrors counts gateway errors only.
  EXPECT_TRUE(all_endpoints.outlier_detection.enabled);
  EXPECT_EQ(all_endpoints.outlier_detection.consecutive_gateway_errors, 4U);
  EXPECT_EQ(all_endpoints.outlier_detection.consecutive_5xx_errors, 0U);

  for (const auto& [bad, what] : std::vector<std::pair<std::string, std::string>>{
           {"connectionPool: {tcp: {connectTimeout: soon}}", "is not a duration"},
           {"connectionPool: {http: {http1MaxPendingRequests: -1}}", "must be in 0..4294967295"},
           {"outlierDetection: {maxEjectionPercent: 101}", "must be in 0..100, got 101"},
           {"outlierDetection: {interval: 0s}", "greater than zero"},
       }) {
    std::string text = R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: bookinfo}
spec:
  host: ratings
  trafficPolicy:
    )" + bad + "\n";
    auto t = load(bookinfoWith(text));
    ASSERT_TRUE(t);
    findFinding(*t, Severity::kError,
                {"DestinationRule bookinfo/ratings", "spec.trafficPolicy", what});
  }
}

}  // namespace
}  // namespace remora::config
