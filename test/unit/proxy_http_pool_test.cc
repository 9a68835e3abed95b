// The pure parts of the L7 upstream pools (proxy/http_pool.h): the DestinationRule
// connectionPool limits and outlier detection with its interval sweeps; and the mirror
// (proxy/http_mirror.h): its shadow authority, and its cap on a recorded ring.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "proxy/http_mirror.h"
#include "proxy/http_pool.h"
#include "proxy/stats.h"
#include "proxy_fakes.h"

namespace remora::proxy {
namespace {

using std::chrono::milliseconds;

SocketAddress ep(uint8_t last) { return SocketAddress{IpAddress::v4(0x0a000000U | last), 80}; }

TEST(ClusterPool, MaxConnectionsBoundsOpenAndOpeningConnections) {
  ClusterPool pool("svc", "v1");
  pool.limits.max_connections = 2;
  EXPECT_TRUE(pool.canOpen());
  pool.opened();
  EXPECT_TRUE(pool.canOpen());
  pool.opened();
  EXPECT_FALSE(pool.canOpen());
  EXPECT_EQ(pool.connections(), 2u);
  pool.closed();
  EXPECT_TRUE(pool.canOpen());
  pool.closed();
  pool.closed();  // never below zero
  EXPECT_EQ(pool.connections(), 0u);
}

TEST(ClusterPool, PendingRequestsOverflowBeyondHttp1MaxPendingRequests) {
  ClusterPool pool("svc", "");
  pool.limits.http1_max_pending_requests = 2;
  EXPECT_TRUE(pool.enqueue({1, 1}));
  EXPECT_TRUE(pool.enqueue({2, 1}));
  // The third waiter overflows: the engine answers it 503 UO.
  EXPECT_FALSE(pool.enqueue({3, 1}));
  EXPECT_EQ(pool.pending(), 2u);
  // A waiter that went away frees its place; the others keep their order.
  pool.forget({1, 1});
  EXPECT_TRUE(pool.enqueue({4, 1}));
  EXPECT_EQ(pool.dequeue(), (Waiter{2, 1}));
  EXPECT_EQ(pool.dequeue(), (Waiter{4, 1}));
  EXPECT_FALSE(pool.dequeue().has_value());
}

TEST(ClusterPool, ZeroPendingRequestsRefusesEveryWaiter) {
  ClusterPool pool("svc", "");
  pool.limits.http1_max_pending_requests = 0;
  EXPECT_FALSE(pool.enqueue({1, 1}));
}

TEST(ClusterPool, MaxRequestsPerConnection) {
  ClusterPool pool("svc", "");
  EXPECT_TRUE(pool.reusable(1000000));  // 0: unlimited
  pool.limits.max_requests_per_connection = 3;
  EXPECT_TRUE(pool.reusable(1));
  EXPECT_TRUE(pool.reusable(2));
  EXPECT_FALSE(pool.reusable(3));
  pool.limits.max_requests_per_connection = 1;
  EXPECT_FALSE(pool.reusable(1));
}

TEST(ClusterPool, IdleTimeout) {
  ClusterPool pool("svc", "");
  const Clock::time_point t0{std::chrono::seconds(100)};
  pool.limits.idle_timeout = milliseconds(500);
  EXPECT_FALSE(pool.idleExpired(t0, t0 + milliseconds(499)));
  EXPECT_TRUE(pool.idleExpired(t0, t0 + milliseconds(500)));
  pool.limits.idle_timeout = milliseconds(0);
  EXPECT_FALSE(pool.idleExpired(t0, t0 + std::chrono::hours(100)));
}

TEST(ClusterPool, IdleConnectionsPerEndpointMostRecentFirst) {
  ClusterPool pool("svc", "");
  pool.putIdle(ep(1), 10);
  pool.putIdle(ep(1), 11);
  pool.putIdle(ep(2), 20);
  EXPECT_EQ(pool.takeIdle(ep(1)), 11u);
  pool.removeIdle(ep(1), 10);
  EXPECT_FALSE(pool.takeIdle(ep(1)).has_value());
  EXPECT_FALSE(pool.takeAnyIdle({ep(1), ep(3)}).has_value());
  EXPECT_EQ(pool.takeAnyIdle({ep(1), ep(2)}), 20u);
}

IpAddress client(uint8_t last) { return IpAddress::v4(0x0af40000U | last); }

// TPROXY: the idle lists are keyed by (endpoint, client address); the shared source (nullopt,
// REDIRECT and outbound) is a key of its own, so REDIRECT keeps one pool per endpoint.
TEST(ClusterPool, IdleConnectionsAreKeyedByEndpointAndSourceAddress) {
  ClusterPool pool("svc", "");
  pool.putIdle(ep(1), 10, client(20));
  pool.putIdle(ep(1), 11, client(30));
  pool.putIdle(ep(1), 12);
  pool.putIdle(ep(2), 13, client(20));
  EXPECT_EQ(pool.idleKeys(), 4u);
  // Another client's connection, or a shared one, never serves this client; nor the reverse.
  EXPECT_FALSE(pool.takeIdle(ep(1), client(40)).has_value());
  EXPECT_EQ(pool.takeIdle(ep(1), client(30)), 11u);
  EXPECT_FALSE(pool.takeIdle(ep(1), client(30)).has_value());
  EXPECT_EQ(pool.takeIdle(ep(1)), 12u);
  EXPECT_FALSE(pool.takeIdle(ep(1)).has_value());
  EXPECT_EQ(pool.takeIdle(ep(1), client(20)), 10u);
  EXPECT_EQ(pool.takeAnyIdle({ep(1), ep(2)}, client(20)), 13u);
  // Emptied keys are dropped: nothing is left behind per client.
  EXPECT_EQ(pool.idleKeys(), 0u);
  EXPECT_EQ(pool.idleConnections(), 0u);
  pool.putIdle(ep(1), 14, client(20));
  pool.removeIdle(ep(1), 14, client(30));  // not under that key: nothing changes
  EXPECT_EQ(pool.idleConnections(), 1u);
  pool.removeIdle(ep(1), 14, client(20));
  EXPECT_EQ(pool.idleKeys(), 0u);
}

TEST(ClusterPool, IPv6ClientsAreKeysOfTheirOwn) {
  ClusterPool pool("svc", "");
  const SocketAddress app6 = *SocketAddress::parse("[fd00:244::10]:8080");
  const IpAddress a = *IpAddress::parse("fd00:244::20");
  const IpAddress b = *IpAddress::parse("fd00:244::30");
  pool.putIdle(app6, 1, a);
  EXPECT_FALSE(pool.takeIdle(app6, b).has_value());
  EXPECT_FALSE(pool.takeIdle(app6).has_value());
  EXPECT_EQ(pool.takeIdle(app6, a), 1u);
}

TEST(ClusterPool, ALeavingClientsIdleConnectionsAreTakenTogether) {
  ClusterPool pool("svc", "");
  pool.putIdle(ep(1), 10, client(20));
  pool.putIdle(ep(2), 11, client(20));
  pool.putIdle(ep(1), 12, client(30));
  pool.putIdle(ep(1), 13);
  auto gone = pool.takeAllIdleFrom(client(20));
  std::sort(gone.begin(), gone.end());
  EXPECT_EQ(gone, (std::vector<uint32_t>{10, 11}));
  EXPECT_TRUE(pool.takeAllIdleFrom(client(20)).empty());
  EXPECT_EQ(pool.idleKeys(), 2u);
  EXPECT_EQ(pool.takeIdle(ep(1), client(30)), 12u);
  EXPECT_EQ(pool.takeIdle(ep(1)), 13u);
}

// At the cap, an idle connection of another client makes room; the shared pool's connections
// and the asking client's own are never evicted (its own would have been taken instead).
TEST(ClusterPool, EvictionTakesOnlyAnotherClientsIdleConnection) {
  ClusterPool pool("svc", "");
  pool.putIdle(ep(1), 10);
  pool.putIdle(ep(2), 11, client(20));
  EXPECT_FALSE(pool.takeIdleToEvict(client(20)).has_value());
  pool.putIdle(ep(1), 12, client(30));
  pool.putIdle(ep(1), 13, client(30));
  // The longest idle of that client's list goes first.
  EXPECT_EQ(pool.takeIdleToEvict(client(20)), 12u);
  EXPECT_EQ(pool.takeIdleToEvict(client(20)), 13u);
  EXPECT_FALSE(pool.takeIdleToEvict(client(20)).has_value());
  EXPECT_EQ(pool.takeIdleToEvict(client(40)), 11u);
  EXPECT_FALSE(pool.takeIdleToEvict(std::nullopt).has_value());
  EXPECT_EQ(pool.takeIdle(ep(1)), 10u);
}

TEST(ClusterPool, ARequeuedWaiterKeepsItsTurn) {
  ClusterPool pool("svc", "");
  EXPECT_TRUE(pool.enqueue({1, 1}));
  EXPECT_TRUE(pool.enqueue({2, 1}));
  auto w = pool.dequeue();
  ASSERT_TRUE(w.has_value());
  pool.requeueFront(*w);
  EXPECT_EQ(pool.dequeue(), (Waiter{1, 1}));
  EXPECT_EQ(pool.dequeue(), (Waiter{2, 1}));
}

ClusterPool outlierPool() {
  ClusterPool pool("svc", "");
  pool.outlier.enabled = true;
  pool.outlier.consecutive_5xx_errors = 2;
  pool.outlier.interval = milliseconds(1000);
  pool.outlier.base_ejection_time = milliseconds(2000);
  pool.outlier.max_ejection_percent = 100;
  return pool;
}

TEST(ClusterPoolOutlier, ConsecutiveErrorsEjectAtOnce) {
  ClusterPool pool = outlierPool();
  const Clock::time_point t0{std::chrono::seconds(100)};
  EXPECT_FALSE(pool.record(ep(1), ClusterPool::Result::k5xx, 2, t0));
  EXPECT_FALSE(pool.record(ep(1), ClusterPool::Result::kSuccess, 2, t0));  // resets the run
  EXPECT_FALSE(pool.record(ep(1), ClusterPool::Result::k5xx, 2, t0));
  EXPECT_TRUE(pool.record(ep(1), ClusterPool::Result::kGatewayError, 2, t0));
  EXPECT_TRUE(pool.ejected(ep(1), t0));
  EXPECT_FALSE(pool.ejected(ep(2), t0));
}

TEST(ClusterPoolOutlier, MaxEjectionPercentKeepsTheLastEndpoints) {
  ClusterPool pool = outlierPool();
  pool.outlier.max_ejection_percent = 50;
  const Clock::time_point t0{std::chrono::seconds(100)};
  for (int i = 0; i < 2; ++i) pool.record(ep(1), ClusterPool::Result::k5xx, 2, t0);
  EXPECT_TRUE(pool.ejected(ep(1), t0));
  // 1 of 2 ejected is 50 %: no more.
  for (int i = 0; i < 2; ++i) pool.record(ep(2), ClusterPool::Result::k5xx, 2, t0);
  EXPECT_FALSE(pool.ejected(ep(2), t0));
}

TEST(ClusterPoolOutlier, AnEjectionEndsAtTheFirstIntervalSweepAfterItsTime) {
  ClusterPool pool = outlierPool();
  const Clock::time_point t0{std::chrono::seconds(100)};
  pool.sweep(t0);  // the interval timer starts: boundaries at t0 + 1 s, + 2 s, ...
  const Clock::time_point te = t0 + milliseconds(300);
  pool.record(ep(1), ClusterPool::Result::k5xx, 2, te);
  ASSERT_TRUE(pool.record(ep(1), ClusterPool::Result::k5xx, 2, te));
  // Its time is over at te + 2 s = t0 + 2.3 s, but the sweep that sees it runs at t0 + 3 s.
  EXPECT_TRUE(pool.ejected(ep(1), t0 + milliseconds(2300)));
  EXPECT_TRUE(pool.ejected(ep(1), t0 + milliseconds(2999)));
  EXPECT_FALSE(pool.ejected(ep(1), t0 + milliseconds(3000)));
  EXPECT_TRUE(pool.ejectedEndpoints(t0 + milliseconds(3000)).empty());
}

TEST(ClusterPoolOutlier, TheEjectionCountDecaysOneStepPerHealthyInterval) {
  ClusterPool pool = outlierPool();
  const Clock::time_point t0{std::chrono::seconds(100)};
  pool.sweep(t0);
  auto eject = [&](Clock::time_point at) {
    pool.record(ep(1), ClusterPool::Result::k5xx, 2, at);
    return pool.record(ep(1), ClusterPool::Result::k5xx, 2, at);
  };
  // First ejection: 2 s, back at the t0 + 2 s sweep.
  ASSERT_TRUE(eject(t0));
  EXPECT_TRUE(pool.ejected(ep(1), t0 + milliseconds(1999)));
  EXPECT_FALSE(pool.ejected(ep(1), t0 + milliseconds(2000)));
  // Ejected again at 2.1 s: the second ejection lasts 2 × 2 s, until 6.1 s, so the 7 s sweep
  // ends it.
  ASSERT_TRUE(eject(t0 + milliseconds(2100)));
  EXPECT_TRUE(pool.ejected(ep(1), t0 + milliseconds(6000)));
  EXPECT_TRUE(pool.ejected(ep(1), t0 + milliseconds(6999)));
  EXPECT_FALSE(pool.ejected(ep(1), t0 + milliseconds(7000)));
  // Healthy through the sweeps at 8 s and 9 s: the count drops from 2 to 0, so the next
  // ejection lasts the base time again (until 11.5 s, back at the 12 s sweep, not 16 s).
  pool.sweep(t0 + milliseconds(9500));
  ASSERT_TRUE(eject(t0 + milliseconds(9500)));
  EXPECT_TRUE(pool.ejected(ep(1), t0 + milliseconds(11999)));
  EXPECT_FALSE(pool.ejected(ep(1), t0 + milliseconds(12000)));
}

TEST(ClusterPoolOutlier, DisabledRecordsNothing) {
  ClusterPool pool("svc", "");
  const Clock::time_point t0{std::chrono::seconds(100)};
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(pool.record(ep(1), ClusterPool::Result::k5xx, 1, t0));
  EXPECT_FALSE(pool.ejected(ep(1), t0));
}

TEST(ClusterPoolOutlier, CountersFollowEjections) {
  ClusterPool pool = outlierPool();
  EndpointCounters counters;
  pool.bindCounters(ep(1), &counters);
  const Clock::time_point t0{std::chrono::seconds(100)};
  pool.sweep(t0);
  pool.record(ep(1), ClusterPool::Result::k5xx, 2, t0);
  pool.record(ep(1), ClusterPool::Result::k5xx, 2, t0);
  EXPECT_EQ(counters.ejections.get(), 1u);
  EXPECT_EQ(counters.ejected.get(), 1u);
  pool.sweep(t0 + milliseconds(2000));
  EXPECT_EQ(counters.ejected.get(), 0u);
}

TEST(ShadowAuthority, AppendsShadowToTheHostBeforeAnyPort) {
  EXPECT_EQ(shadowAuthority("reviews"), "reviews-shadow");
  EXPECT_EQ(shadowAuthority("reviews:9080"), "reviews-shadow:9080");
  EXPECT_EQ(shadowAuthority("10.0.0.1:80"), "10.0.0.1-shadow:80");
  EXPECT_EQ(shadowAuthority("[::1]:80"), "[::1]-shadow:80");
  EXPECT_EQ(shadowAuthority("[::1]"), "[::1]-shadow");
  EXPECT_EQ(shadowAuthority(""), "-shadow");
}

// A copy sent on a kept-alive connection that closes before any response byte is sent again on
// a fresh connection, but only within the per-worker cap: the old connection, still closing,
// counts against it, as it does for a new copy (HttpMirror::send). With the cap at 1 the retry
// is refused and counted as failed; it used to open a second socket.
TEST(HttpMirror, ARetryOnAFreshConnectionStaysWithinTheCap) {
  testing::FakeRing ring;
  testing::FakeSockets sockets;
  WorkerStats stats;
  HttpMirror mirror(ring, sockets, stats);
  mirror.setMaxInFlight(1);
  const auto now = std::chrono::steady_clock::now();
  const std::string request = "GET / HTTP/1.1\r\nHost: svc-shadow\r\n\r\n";
  const std::string response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  auto copy = [&] {
    MirrorCopy c;
    c.endpoint = ep(7);
    c.service = "svc";
    c.subset = "v1";
    c.method = "GET";
    c.request = request;
    return c;
  };
  // Completes the last recorded op of `kind` with `res`, copying `bytes` into a read's buffer.
  auto complete = [&](testing::RecordedOp::Kind kind, int32_t res, const std::string& bytes = "") {
    auto it = std::find_if(ring.ops.rbegin(), ring.ops.rend(),
                           [&](const testing::RecordedOp& op) { return op.kind == kind; });
    ASSERT_NE(it, ring.ops.rend()) << "no op of kind " << kind;
    testing::RecordedOp op = *it;
    ring.ops.erase(std::next(it).base());
    if (!bytes.empty()) std::memcpy(op.into.data(), bytes.data(), bytes.size());
    mirror.onCompletion({op.user_data, res, 0});
  };
  auto count = [&](const char* result) { return stats.mirrors({"svc", "v1", result}).get(); };
  auto connects = [&] {
    return std::count_if(ring.ops.begin(), ring.ops.end(), [](const testing::RecordedOp& op) {
      return op.kind == testing::RecordedOp::kConnect;
    });
  };

  mirror.send(copy(), now);
  ASSERT_EQ(connects(), 1);
  complete(testing::RecordedOp::kConnect, 0);
  complete(testing::RecordedOp::kSend, static_cast<int32_t>(request.size()));
  complete(testing::RecordedOp::kRead, static_cast<int32_t>(response.size()), response);
  ASSERT_EQ(count("ok"), 1u);
  ASSERT_EQ(mirror.idleConnections(), 1u);

  mirror.send(copy(), now);  // takes the kept-alive connection
  EXPECT_EQ(connects(), 0);
  complete(testing::RecordedOp::kSend, static_cast<int32_t>(request.size()));
  complete(testing::RecordedOp::kRead, 0);  // the shadow closed it: no response byte

  EXPECT_EQ(connects(), 0) << "the retry opened a second connection past the cap of 1";
  EXPECT_EQ(sockets.next_fd - testing::FakeSockets{}.next_fd, 1);
  EXPECT_EQ(count("failed"), 1u);
  EXPECT_EQ(stats.counters().http_reset_race_retry.get(), 0u);
  EXPECT_EQ(mirror.inFlight(), 0u);
}

}  // namespace
}  // namespace remora::proxy
