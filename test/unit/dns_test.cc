// DnsCache's refresh schedule (TTL clamp, stale answers, nextRefresh) with an injected clock
// and a scripted resolve function, and the parts of Resolver that need no server.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "dns/dns_cache.h"
#include "dns/resolver.h"

namespace remora::dns {
namespace {

using std::chrono::seconds;
using Clock = DnsCache::Clock;

IpAddress ip(const char* text) { return IpAddress::parse(text).value(); }

// A resolve function that answers from a script, one entry per call, and counts calls.
struct ScriptedResolver {
  std::deque<Result<Resolved>> script;
  std::vector<std::string> asked;

  void add(Result<Resolved> next) { script.push_back(std::move(next)); }

  DnsCache::ResolveFn fn() {
    return [this](std::string_view host) -> Result<Resolved> {
      asked.emplace_back(host);
      if (script.empty()) return makeError("script exhausted");
      Result<Resolved> next = script.front();
      script.pop_front();
      return next;
    };
  }
};

class DnsCacheTest : public ::testing::Test {
 protected:
  Clock::time_point now_ = Clock::time_point{} + std::chrono::hours(1);
  ScriptedResolver resolver_;
  DnsCache::NowFn clock() {
    return [this] { return now_; };
  }
  void advance(seconds by) { now_ += by; }
};

TEST_F(DnsCacheTest, ServesTheCachedAnswerUntilTheTtlThenAsksAgain) {
  resolver_.add(Resolved{{ip("10.0.0.1")}, seconds(30)});
  resolver_.add(Resolved{{ip("10.0.0.2")}, seconds(30)});
  DnsCache cache(resolver_.fn(), {}, clock());

  auto first = cache.lookup("api.example.com");
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(first->resolved.addresses, std::vector<IpAddress>{ip("10.0.0.1")});
  EXPECT_FALSE(first->stale);
  EXPECT_EQ(first->refresh_at, now_ + seconds(30));

  advance(seconds(29));
  auto cached = cache.lookup("api.example.com");
  ASSERT_TRUE(cached.ok());
  EXPECT_EQ(cached->resolved.addresses, std::vector<IpAddress>{ip("10.0.0.1")});
  EXPECT_EQ(resolver_.asked.size(), 1U);

  advance(seconds(1));
  auto refreshed = cache.lookup("api.example.com");
  ASSERT_TRUE(refreshed.ok());
  EXPECT_EQ(refreshed->resolved.addresses, std::vector<IpAddress>{ip("10.0.0.2")});
  EXPECT_EQ(resolver_.asked.size(), 2U);
}

TEST_F(DnsCacheTest, ClampsTheTtlToTheRefreshBounds) {
  resolver_.add(Resolved{{ip("10.0.0.1")}, seconds(0)});
  resolver_.add(Resolved{{ip("10.0.0.2")}, seconds(86400)});
  DnsCache cache(resolver_.fn(), {}, clock());

  auto low = cache.lookup("low");
  ASSERT_TRUE(low.ok());
  EXPECT_EQ(low->refresh_at, now_ + seconds(5));  // default min_refresh
  EXPECT_EQ(low->resolved.ttl, seconds(0));       // the record's own TTL is kept
  auto high = cache.lookup("high");
  ASSERT_TRUE(high.ok());
  EXPECT_EQ(high->refresh_at, now_ + seconds(300));  // default max_refresh
}

TEST_F(DnsCacheTest, RefreshBoundsAreSettable) {
  resolver_.add(Resolved{{ip("10.0.0.1")}, seconds(1)});
  resolver_.add(Resolved{{ip("10.0.0.2")}, seconds(1000)});
  resolver_.add(Resolved{{ip("10.0.0.3")}, seconds(45)});
  DnsCacheOptions options;
  options.min_refresh = seconds(20);
  options.max_refresh = seconds(60);
  DnsCache cache(resolver_.fn(), options, clock());

  EXPECT_EQ(cache.lookup("a")->refresh_at, now_ + seconds(20));
  EXPECT_EQ(cache.lookup("b")->refresh_at, now_ + seconds(60));
  EXPECT_EQ(cache.lookup("c")->refresh_at, now_ + seconds(45));
}

TEST_F(DnsCacheTest, ServesTheLastGoodAnswerStaleWhileRefreshesFailUpToTheBound) {
  resolver_.add(Resolved{{ip("10.0.0.1")}, seconds(60)});
  DnsCacheOptions options;
  options.max_stale = seconds(120);
  DnsCache cache(resolver_.fn(), options, clock());
  ASSERT_TRUE(cache.lookup("db").ok());
  const Clock::time_point expired_at = now_ + seconds(60);

  advance(seconds(60));
  resolver_.add(makeError("resolving 'db': SERVFAIL"));
  auto stale = cache.lookup("db");
  ASSERT_TRUE(stale.ok()) << stale.error().message;
  EXPECT_TRUE(stale->stale);
  EXPECT_EQ(stale->stale_error, "resolving 'db': SERVFAIL");
  EXPECT_EQ(stale->resolved.addresses, std::vector<IpAddress>{ip("10.0.0.1")});
  // A failed refresh is retried after min_refresh, not on every lookup.
  EXPECT_EQ(stale->refresh_at, now_ + seconds(5));
  EXPECT_EQ(cache.nextRefresh(), now_ + seconds(5));
  advance(seconds(4));
  ASSERT_TRUE(cache.lookup("db").ok());
  EXPECT_EQ(resolver_.asked.size(), 2U);

  // Still failing at exactly the bound: stale is still served.
  now_ = expired_at + seconds(120);
  resolver_.add(makeError("resolving 'db': timeout"));
  auto at_bound = cache.lookup("db");
  ASSERT_TRUE(at_bound.ok());
  EXPECT_TRUE(at_bound->stale);
  EXPECT_EQ(at_bound->stale_error, "resolving 'db': timeout");

  // Past the bound the host fails, and says why.
  advance(seconds(5));
  resolver_.add(makeError("resolving 'db': timeout"));
  auto past = cache.lookup("db");
  ASSERT_FALSE(past.ok());
  EXPECT_NE(past.error().message.find("resolving 'db': timeout"), std::string::npos);
  EXPECT_NE(past.error().message.find("expired 125 s ago, past the 120 s bound"), std::string::npos)
      << past.error().message;
  // Within the retry interval the same failure is returned without asking again.
  advance(seconds(1));
  auto remembered = cache.lookup("db");
  ASSERT_FALSE(remembered.ok());
  EXPECT_NE(remembered.error().message.find("expired 126 s ago"), std::string::npos);
  EXPECT_EQ(resolver_.asked.size(), 4U);

  // A later success serves fresh answers again.
  advance(seconds(4));
  resolver_.add(Resolved{{ip("10.0.0.9")}, seconds(60)});
  auto back = cache.lookup("db");
  ASSERT_TRUE(back.ok());
  EXPECT_FALSE(back->stale);
  EXPECT_EQ(back->resolved.addresses, std::vector<IpAddress>{ip("10.0.0.9")});
}

TEST_F(DnsCacheTest, ARecoveredRefreshIsNoLongerStale) {
  resolver_.add(Resolved{{ip("10.0.0.1")}, seconds(10)});
  resolver_.add(makeError("resolving 'x': REFUSED"));
  resolver_.add(Resolved{{ip("10.0.0.1")}, seconds(10)});
  DnsCache cache(resolver_.fn(), {}, clock());
  ASSERT_TRUE(cache.lookup("x").ok());
  advance(seconds(10));
  EXPECT_TRUE(cache.lookup("x")->stale);
  advance(seconds(5));
  auto fresh = cache.lookup("x");
  ASSERT_TRUE(fresh.ok());
  EXPECT_FALSE(fresh->stale);
  EXPECT_TRUE(fresh->stale_error.empty());
  EXPECT_EQ(fresh->refresh_at, now_ + seconds(10));
}

TEST_F(DnsCacheTest, AHostThatNeverResolvedFailsAndIsRetriedAfterMinRefresh) {
  resolver_.add(makeError("resolving 'nope': NXDOMAIN"));
  resolver_.add(Resolved{{ip("10.0.0.1")}, seconds(30)});
  DnsCache cache(resolver_.fn(), {}, clock());

  auto failed = cache.lookup("nope");
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().message, "resolving 'nope': NXDOMAIN");
  EXPECT_EQ(cache.nextRefresh(), now_ + seconds(5));

  advance(seconds(4));
  EXPECT_FALSE(cache.lookup("nope").ok());
  EXPECT_EQ(resolver_.asked.size(), 1U);  // the failure was remembered

  advance(seconds(1));
  EXPECT_EQ(cache.dueHosts(), std::vector<std::string>{"nope"});
  auto later = cache.lookup("nope");
  ASSERT_TRUE(later.ok());
  EXPECT_EQ(resolver_.asked.size(), 2U);
}

TEST_F(DnsCacheTest, NextRefreshIsTheEarliestEntryAndDueHostsFollowIt) {
  DnsCache cache(resolver_.fn(), {}, clock());
  EXPECT_FALSE(cache.nextRefresh().has_value());
  EXPECT_TRUE(cache.dueHosts().empty());

  resolver_.add(Resolved{{ip("10.0.0.1")}, seconds(100)});
  resolver_.add(Resolved{{ip("10.0.0.2")}, seconds(40)});
  resolver_.add(Resolved{{ip("10.0.0.3")}, seconds(70)});
  ASSERT_TRUE(cache.lookup("a").ok());
  ASSERT_TRUE(cache.lookup("b").ok());
  ASSERT_TRUE(cache.lookup("c").ok());
  EXPECT_EQ(cache.nextRefresh(), now_ + seconds(40));

  advance(seconds(39));
  EXPECT_TRUE(cache.dueHosts().empty());
  advance(seconds(1));
  EXPECT_EQ(cache.dueHosts(), std::vector<std::string>{"b"});

  resolver_.add(Resolved{{ip("10.0.0.2")}, seconds(40)});
  ASSERT_TRUE(cache.lookup("b").ok());
  // b now refreshes at +80, so c (+70) is next.
  EXPECT_EQ(cache.nextRefresh(), now_ - seconds(40) + seconds(70));

  cache.retainOnly({"a"});
  EXPECT_EQ(cache.size(), 1U);
  EXPECT_EQ(cache.nextRefresh(), now_ - seconds(40) + seconds(100));
}

TEST_F(DnsCacheTest, ConcurrentLookupsAreSafe) {
  std::atomic<int> calls{0};
  DnsCache cache(
      [&](std::string_view host) -> Result<Resolved> {
        ++calls;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (host == "bad") return makeError("resolving 'bad': NXDOMAIN");
        return Resolved{{ip("10.0.0.1")}, seconds(0)};
      },
      {}, [] { return Clock::now(); });
  std::vector<std::thread> threads;
  threads.reserve(4);
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const std::string host = fmt::format("h{}", (i + t) % 7);
        auto answer = cache.lookup(i % 10 == 0 ? "bad" : host);
        if (i % 10 == 0 ? answer.ok() : !answer.ok()) ++wrong;
        (void)cache.nextRefresh();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(cache.size(), 8U);
  // Each host is resolved about once (two threads may race on a first lookup), not per call.
  EXPECT_LE(calls.load(), 8 * 4);
}

// Resolver without a server: literals need no query, bad options are refused.
ResolverOptions unreachable() {
  ResolverOptions options;
  options.nameservers = {"127.0.0.1:1"};
  options.deadline = std::chrono::milliseconds(1);
  return options;
}

TEST(Resolver, AnIpLiteralResolvesToItselfWithoutAQuery) {
  auto resolver = Resolver::create(unreachable());
  ASSERT_TRUE(resolver.ok()) << resolver.error().message;
  auto v4 = (*resolver)->resolve("192.0.2.7");
  ASSERT_TRUE(v4.ok()) << v4.error().message;
  EXPECT_EQ(v4->addresses, std::vector<IpAddress>{ip("192.0.2.7")});
  EXPECT_EQ(v4->ttl, kLiteralTtl);
  auto v6 = (*resolver)->resolve("2001:db8::7", AddressFamilies::kIpv6);
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->addresses, std::vector<IpAddress>{ip("2001:db8::7")});

  auto mismatch = (*resolver)->resolve("2001:db8::7", AddressFamilies::kIpv4);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.error().message.find("2001:db8::7"), std::string::npos);
}

TEST(Resolver, RejectsBadOptionsAndNames) {
  ResolverOptions bad_server;
  bad_server.nameservers = {"dns.example.com:53"};
  auto a = Resolver::create(bad_server);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.error().message.find("dns.example.com:53"), std::string::npos);

  ResolverOptions bad_tries;
  bad_tries.tries = 0;
  EXPECT_FALSE(Resolver::create(bad_tries).ok());

  auto resolver = Resolver::create(unreachable());
  ASSERT_TRUE(resolver.ok());
  EXPECT_FALSE((*resolver)->resolve("").ok());
}

}  // namespace
}  // namespace remora::dns
