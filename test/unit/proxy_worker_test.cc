// The connection state machine, driven by a fake ring: the test plays the kernel's completions.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/logger.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "proxy/log_sink.h"
#include "proxy/worker.h"
#include "proxy_fakes.h"

namespace remora::proxy {
namespace {

using loop::Completion;
using loop::UserData;
using testing::FakeRing;
using testing::FakeRouter;
using testing::FakeSockets;
using testing::FakeTable;
using testing::RecordedOp;

constexpr int kListenFd = 100;
constexpr int kClientFd = 200;
const char* kVip = "10.1.122.241:9999";

Completion done(uint64_t ud, int res, bool more = false) {
  return {ud, res, more ? uint32_t{IORING_CQE_F_MORE} : 0u};
}

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    table_ = std::make_shared<FakeTable>();
    table_->addService(kVip, "bill-service.istio-demo", {"10.244.1.168:80", "10.244.2.74:80"});
    worker_ = std::make_unique<Worker>(
        ring_, sockets_, stats_,
        [this](std::shared_ptr<const routing::RouteTable> t) {
          auto r = std::make_unique<FakeRouter>(std::move(t));
          router_ = r.get();
          return r;
        },
        settings_);
    worker_->setTable(table_, settings_);
    worker_->addListener(kListenFd, ListenerKind::kOutbound, Family::kIpv4);
  }

  // Accepts a client whose original destination is `dst`; returns the accept op's tag.
  void accept(int fd, const std::string& dst) {
    sockets_.original[fd] = *SocketAddress::parse(dst);
    auto acc = ring_.last(RecordedOp::kAccept, kListenFd);
    ASSERT_TRUE(acc);
    worker_->onCompletion(done(acc->user_data, fd, true));
  }

  // Accept + connect success; returns the upstream fd.
  int establish(int client_fd, const std::string& dst = kVip) {
    accept(client_fd, dst);
    auto c = ring_.last(RecordedOp::kConnect);
    EXPECT_TRUE(c);
    worker_->onCompletion(done(c->user_data, 0));
    return c->fd;
  }

  void completeAll(RecordedOp::Kind kind, int fd, int res) {
    for (const auto& op : std::vector<RecordedOp>(ring_.ops)) {
      if (op.kind == kind && op.fd == fd) worker_->onCompletion(done(op.user_data, res));
    }
  }

  // Plays the completions of every close, cancel and shutdown+close recorded since the last
  // call (a shutdown+close completes twice), as the kernel would.
  void finishCloses() {
    std::vector<RecordedOp> ops(ring_.ops.begin() + static_cast<long>(closes_done_),
                                ring_.ops.end());
    closes_done_ = ring_.ops.size();
    for (const auto& op : ops) {
      if (op.kind == RecordedOp::kClose || op.kind == RecordedOp::kCancel) {
        worker_->onCompletion(done(op.user_data, 0));
      } else if (op.kind == RecordedOp::kShutdownClose) {
        worker_->onCompletion(done(op.user_data, 0));
        worker_->onCompletion(done(op.user_data, 0));
      }
    }
  }

  // The pending sweep timer's completion, after `wait`.
  void tickAfter(std::chrono::milliseconds wait) {
    std::this_thread::sleep_for(wait);
    for (auto it = ring_.ops.rbegin(); it != ring_.ops.rend(); ++it) {
      if (it->kind == RecordedOp::kTimeout &&
          UserData::decode(it->user_data).op == static_cast<uint8_t>(Op::kTick)) {
        uint64_t ud = it->user_data;
        worker_->onCompletion(done(ud, -ETIME));
        return;
      }
    }
    ADD_FAILURE() << "no sweep timer armed";
  }

  EndpointCounters& endpoint(const std::string& service, const std::string& subset,
                             const std::string& ep) {
    return stats_.endpoint(EndpointKey{service, subset, ep});
  }

  FakeRing ring_;
  FakeSockets sockets_;
  WorkerStats stats_;
  WorkerSettings settings_;
  std::shared_ptr<FakeTable> table_;
  FakeRouter* router_ = nullptr;
  std::unique_ptr<Worker> worker_;
  size_t closes_done_ = 0;
};

TEST_F(WorkerTest, RelaysBothWaysAndClosesAfterBothHalfCloses) {
  int up = establish(kClientFd);
  auto connect = *ring_.last(RecordedOp::kConnect);
  EXPECT_EQ(connect.address.toString(), "10.244.1.168:80");
  EXPECT_EQ(connect.timeout, settings_.connect_timeout);
  auto client_recv = ring_.last(RecordedOp::kRecv, kClientFd);
  auto up_recv = ring_.last(RecordedOp::kRecv, up);
  ASSERT_TRUE(client_recv && up_recv);

  worker_->onCompletion(ring_.recvCompletion(client_recv->user_data, "GET / HTTP/1.1\r\n\r\n"));
  auto s1 = ring_.last(RecordedOp::kSend, up);
  ASSERT_TRUE(s1);
  EXPECT_EQ(s1->data, "GET / HTTP/1.1\r\n\r\n");
  worker_->onCompletion(done(s1->user_data, static_cast<int>(s1->data.size())));
  EXPECT_EQ(ring_.recycled, 1u);

  worker_->onCompletion(ring_.recvCompletion(up_recv->user_data, "this is bill-service-v1"));
  auto s2 = ring_.last(RecordedOp::kSend, kClientFd);
  ASSERT_TRUE(s2);
  // A short send: the rest goes out from the same buffer.
  worker_->onCompletion(done(s2->user_data, 5));
  auto s3 = ring_.last(RecordedOp::kSend, kClientFd);
  EXPECT_EQ(s3->data, "is bill-service-v1");
  worker_->onCompletion(done(s3->user_data, static_cast<int>(s3->data.size())));

  // Upstream EOF: half-close toward the client (shutdown(SHUT_WR) called directly, not
  // through the ring, which would run it on an io-wq thread), keep the other direction open.
  worker_->onCompletion(done(up_recv->user_data, 0));
  EXPECT_EQ(sockets_.shut_writes, std::vector<int>{kClientFd});
  EXPECT_EQ(ring_.count(RecordedOp::kShutdown), 0u);
  EXPECT_EQ(ring_.count(RecordedOp::kShutdownClose), 0u);
  EXPECT_FALSE(ring_.last(RecordedOp::kClose, kClientFd));
  EXPECT_EQ(worker_->activeConnections(), 1u);

  worker_->onCompletion(done(client_recv->user_data, 0));
  EXPECT_EQ(sockets_.shut_writes, (std::vector<int>{kClientFd, up}));
  // A clean close of both sockets with nothing pending on them: one close each, no shutdown
  // (no receive left to wake), no cancel, no reset; the slot is freed when both completed.
  EXPECT_TRUE(ring_.last(RecordedOp::kClose, kClientFd));
  EXPECT_TRUE(ring_.last(RecordedOp::kClose, up));
  EXPECT_EQ(ring_.count(RecordedOp::kShutdownClose), 0u);
  EXPECT_EQ(ring_.count(RecordedOp::kCancel), 0u);
  EXPECT_TRUE(sockets_.resets.empty());
  EXPECT_EQ(ring_.count(RecordedOp::kTeardown), 0u);
  EXPECT_EQ(worker_->activeConnections(), 0u);
  finishCloses();
  worker_->stopAccepting();
  finishCloses();
  EXPECT_TRUE(worker_->quiescent());

  auto& ep = endpoint("bill-service.istio-demo", "v1", "10.244.1.168:80");
  EXPECT_EQ(ep.opened.get(), 1u);
  EXPECT_EQ(ep.closed.get(), 1u);
  EXPECT_EQ(ep.received_bytes.get(), 18u);
  EXPECT_EQ(ep.sent_bytes.get(), 23u);
  EXPECT_EQ(router_->released, 1);
  EXPECT_EQ(ring_.recycled, 2u);
}

TEST_F(WorkerTest, TheUpstreamSocketGetsItsKeepaliveAtTheFirstSweepItIsOpenFor) {
  // A connection that ends before the next sweep never makes the four keepalive setsockopt
  // calls; one still open at a sweep gets them then, once.
  int up = establish(kClientFd);
  EXPECT_EQ(sockets_.without_keepalive, std::vector<int>{up});
  EXPECT_TRUE(sockets_.kept_alive.empty());
  tickAfter(std::chrono::milliseconds(0));
  EXPECT_EQ(sockets_.kept_alive, std::vector<int>{up});
  tickAfter(std::chrono::milliseconds(0));
  EXPECT_EQ(sockets_.kept_alive, std::vector<int>{up});
}

TEST_F(WorkerTest, ConnectFailureRetriesAnotherEndpoint) {
  accept(kClientFd, kVip);
  auto first = *ring_.last(RecordedOp::kConnect);
  worker_->onCompletion(done(first.user_data, -ECONNREFUSED));
  EXPECT_TRUE(ring_.last(RecordedOp::kClose, first.fd));  // the failed socket is closed
  auto second = *ring_.last(RecordedOp::kConnect);
  EXPECT_NE(second.fd, first.fd);
  EXPECT_NE(second.address, first.address);
  worker_->onCompletion(done(second.user_data, 0));
  EXPECT_TRUE(ring_.last(RecordedOp::kRecv, second.fd));
  EXPECT_EQ(
      endpoint("bill-service.istio-demo", "v1", first.address.toString()).connect_failures.get(),
      1u);
  EXPECT_EQ(endpoint("bill-service.istio-demo", "v1", second.address.toString()).opened.get(), 1u);
}

TEST_F(WorkerTest, GivesUpAfterEveryEndpointFailedOrTimedOut) {
  accept(kClientFd, kVip);
  worker_->onCompletion(done(ring_.last(RecordedOp::kConnect)->user_data, -ECONNREFUSED));
  // -ECANCELED: the linked timeout fired.
  worker_->onCompletion(done(ring_.last(RecordedOp::kConnect)->user_data, -ECANCELED));
  EXPECT_EQ(ring_.count(RecordedOp::kConnect), 2u);
  EXPECT_TRUE(ring_.last(RecordedOp::kShutdownClose, kClientFd));
  EXPECT_EQ(stats_.counters().refused_no_upstream.get(), 1u);
  EXPECT_EQ(worker_->activeConnections(), 0u);
}

TEST_F(WorkerTest, RetriesStopAtMaxConnectAttempts) {
  settings_.max_connect_attempts = 1;
  worker_->setTable(table_, settings_);
  accept(kClientFd, kVip);
  worker_->onCompletion(done(ring_.last(RecordedOp::kConnect)->user_data, -EHOSTUNREACH));
  EXPECT_EQ(ring_.count(RecordedOp::kConnect), 1u);
  EXPECT_TRUE(ring_.last(RecordedOp::kShutdownClose, kClientFd));
}

TEST_F(WorkerTest, UnknownDestinationPassesThroughToTheOriginalAddress) {
  accept(kClientFd, "10.244.3.3:8080");
  auto c = ring_.last(RecordedOp::kConnect);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->address.toString(), "10.244.3.3:8080");
  EXPECT_EQ(stats_.counters().passthrough.get(), 1u);
  worker_->onCompletion(done(c->user_data, 0));
  EXPECT_EQ(endpoint(kPassthroughCluster, "", "").opened.get(), 1u);
}

TEST_F(WorkerTest, RegistryOnlyRefusesUnknownDestinations) {
  settings_.outbound_policy = routing::OutboundPolicy::kRegistryOnly;
  worker_->setTable(table_, settings_);
  accept(kClientFd, "10.244.3.3:8080");
  EXPECT_EQ(ring_.count(RecordedOp::kConnect), 0u);
  EXPECT_TRUE(ring_.last(RecordedOp::kShutdownClose, kClientFd));
  EXPECT_EQ(stats_.counters().refused_registry.get(), 1u);
  // Known services still route.
  accept(kClientFd + 1, kVip);
  EXPECT_EQ(ring_.count(RecordedOp::kConnect), 1u);
}

TEST_F(WorkerTest, ConnectionsNotRedirectedAreRefusedInsteadOfLooping) {
  sockets_.local[kClientFd] = *SocketAddress::parse("127.0.0.1:15001");
  accept(kClientFd, "127.0.0.1:15001");
  EXPECT_EQ(ring_.count(RecordedOp::kConnect), 0u);
  EXPECT_EQ(stats_.counters().no_original_dst.get(), 1u);
  sockets_.original.clear();
  auto acc = ring_.last(RecordedOp::kAccept, kListenFd);
  worker_->onCompletion(done(acc->user_data, kClientFd + 1, true));  // ENOENT from getsockopt
  EXPECT_EQ(stats_.counters().no_original_dst.get(), 2u);
}

// Issue 12: the loop check asks for the connection's local address (getsockname) only when the
// original destination is on the listener's port; the usual connection costs no syscall there.
TEST_F(WorkerTest, TheLoopCheckCallsGetsocknameOnlyForADestinationOnTheListenersPort) {
  const size_t calls = sockets_.local_calls;  // addListener read the listener's port
  establish(kClientFd);                       // to 10.1.122.241:9999
  EXPECT_EQ(sockets_.local_calls, calls);
  EXPECT_EQ(stats_.counters().no_original_dst.get(), 0u);
  // Someone elsewhere dialled 10.244.9.9:15001 and was redirected here: the port alone cannot
  // tell, the local address does (10.244.0.5:15001, not the original destination).
  accept(kClientFd + 1, "10.244.9.9:15001");
  EXPECT_EQ(sockets_.local_calls, calls + 1);
  auto c = ring_.last(RecordedOp::kConnect);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->address.toString(), "10.244.9.9:15001");
  EXPECT_EQ(stats_.counters().no_original_dst.get(), 0u);
}

// Nothing about local addresses is cached: an address the pod gains after the first connection
// is the local address of the next one, and that connection is refused as a loop.
TEST_F(WorkerTest, TheLoopCheckSeesALocalAddressAddedSinceTheLastConnection) {
  accept(kClientFd, "10.244.0.77:15001");
  EXPECT_EQ(stats_.counters().no_original_dst.get(), 0u);
  sockets_.local[kClientFd + 1] = *SocketAddress::parse("10.244.0.77:15001");
  accept(kClientFd + 1, "10.244.0.77:15001");
  EXPECT_EQ(stats_.counters().no_original_dst.get(), 1u);
}

TEST(WasRedirectedTest, AsksForTheLocalAddressOnlyWhenThePortsMatch) {
  int asked = 0;
  auto local = [&](const char* text) {
    return [&asked, text] {
      ++asked;
      return std::optional<SocketAddress>(*SocketAddress::parse(text));
    };
  };
  // eBPF sk_lookup or TPROXY: no NAT, the destination is the local address on the app's port.
  EXPECT_TRUE(
      wasRedirected(*SocketAddress::parse("10.244.0.5:8080"), 15006, local("10.244.0.5:8080")));
  EXPECT_EQ(asked, 0);
  EXPECT_FALSE(
      wasRedirected(*SocketAddress::parse("10.244.0.5:15006"), 15006, local("10.244.0.5:15006")));
  EXPECT_EQ(asked, 1);
  // The listener's port unknown: the addresses decide.
  EXPECT_TRUE(
      wasRedirected(*SocketAddress::parse("10.244.0.5:8080"), 0, local("10.244.0.5:15006")));
  EXPECT_FALSE(
      wasRedirected(*SocketAddress::parse("10.244.0.5:8080"), 0, local("10.244.0.5:8080")));
  // No local address (getsockname failed): redirected, as before.
  EXPECT_TRUE(wasRedirected(*SocketAddress::parse("10.244.0.5:15006"), 15006,
                            [] { return std::optional<SocketAddress>(); }));
  EXPECT_EQ(asked, 3);
}

TEST_F(WorkerTest, InboundConnectsToTheOriginalDestinationFrom127_0_0_6) {
  worker_->addListener(101, ListenerKind::kInbound, Family::kIpv4);
  sockets_.original[kClientFd] = *SocketAddress::parse("10.244.0.5:8080");
  worker_->onCompletion(done(ring_.last(RecordedOp::kAccept, 101)->user_data, kClientFd, true));
  auto c = ring_.last(RecordedOp::kConnect);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->address.toString(), "10.244.0.5:8080");
  ASSERT_EQ(sockets_.sources.size(), 1u);
  EXPECT_EQ(sockets_.sources[0]->toString(), "127.0.0.6");
  worker_->onCompletion(done(c->user_data, 0));
  EXPECT_EQ(endpoint(kInboundCluster, "", "10.244.0.5:8080").opened.get(), 1u);
}

TEST_F(WorkerTest, LateCompletionForAReusedSlotIsDetectedAndItsBufferReturned) {
  int up = establish(kClientFd);
  auto old_recv = *ring_.last(RecordedOp::kRecv, kClientFd);
  worker_->onCompletion(done(old_recv.user_data, -ECONNRESET));  // abort
  finishCloses();
  worker_->onCompletion(done(ring_.last(RecordedOp::kRecv, up)->user_data, -ECANCELED));
  // The slot is reused by the next connection with a new generation.
  establish(kClientFd + 1);
  auto new_recv = *ring_.last(RecordedOp::kRecv, kClientFd + 1);
  EXPECT_EQ(UserData::decode(new_recv.user_data).slot, UserData::decode(old_recv.user_data).slot);
  EXPECT_NE(new_recv.user_data, old_recv.user_data);
  size_t recycled = ring_.recycled;
  size_t sends = ring_.count(RecordedOp::kSend);
  worker_->onCompletion(ring_.recvCompletion(old_recv.user_data, "stale"));
  EXPECT_EQ(ring_.recycled, recycled + 1);
  EXPECT_EQ(ring_.count(RecordedOp::kSend), sends);
  EXPECT_EQ(stats_.counters().stale_completions.get(), 1u);
}

TEST_F(WorkerTest, NoBuffersMeansReplenishAndRearm) {
  int up = establish(kClientFd);
  (void)up;
  auto recv = *ring_.last(RecordedOp::kRecv, kClientFd);
  ring_.drainBuffers();
  worker_->onCompletion(done(recv.user_data, -ENOBUFS));
  worker_->afterBatch();
  EXPECT_EQ(ring_.count(RecordedOp::kRecv, kClientFd), 1u);  // nothing to re-arm with yet
  ring_.addBuffer(0);
  worker_->afterBatch();
  EXPECT_EQ(ring_.count(RecordedOp::kRecv, kClientFd), 2u);
  EXPECT_EQ(stats_.counters().buffer_exhausted.get(), 1u);
}

TEST_F(WorkerTest, ByteLimitPausesTheReceiveAtTheHighWatermarkAndResumesAtTheLowOne) {
  settings_.buffer_limit = 8;
  worker_->setTable(table_, settings_);
  int up = establish(kClientFd);
  auto recv = *ring_.last(RecordedOp::kRecv, kClientFd);
  worker_->onCompletion(ring_.recvCompletion(recv.user_data, "abcd"));
  EXPECT_EQ(ring_.count(RecordedOp::kSend, up), 1u);
  EXPECT_EQ(ring_.count(RecordedOp::kRecv, kClientFd), 2u);  // one-shot: armed again
  worker_->onCompletion(ring_.recvCompletion(ring_.last(RecordedOp::kRecv, kClientFd)->user_data,
                                             "efgh", /*more=*/false));
  // 8 bytes queued: the high watermark. No receive armed, and no cancel needed for that.
  EXPECT_EQ(ring_.count(RecordedOp::kRecv, kClientFd), 2u);
  EXPECT_EQ(ring_.count(RecordedOp::kCancel), 0u);
  EXPECT_EQ(stats_.counters().watermark_pauses.get(), 1u);
  // 4 bytes leave: down to the low watermark (half), so reading resumes.
  worker_->onCompletion(done(ring_.last(RecordedOp::kSend, up)->user_data, 4));
  EXPECT_EQ(ring_.count(RecordedOp::kRecv, kClientFd), 3u);
  EXPECT_EQ(ring_.last(RecordedOp::kSend, up)->data, "efgh");
}

TEST_F(WorkerTest, ADirectionBorrowsFewProvidedBuffersAndCopiesTheRest) {
  int up = establish(kClientFd);
  auto recv = *ring_.last(RecordedOp::kRecv, kClientFd);
  worker_->onCompletion(ring_.recvCompletion(recv.user_data, "c0"));
  // The upstream does not read: its send stays in flight while more arrives.
  for (int i = 1; i < 10; ++i) {
    worker_->onCompletion(ring_.recvCompletion(recv.user_data, "c" + std::to_string(i)));
  }
  // Four chunks keep their provided buffers; the other six were copied and handed back at once.
  EXPECT_EQ(ring_.recycled, 6u);
  EXPECT_EQ(ring_.buffersAvailable(), 32u - Worker::kMaxBorrowedChunks);
  EXPECT_EQ(stats_.counters().copied_bytes.get(), 12u);
  worker_->onCompletion(done(ring_.last(RecordedOp::kSend, up)->user_data, 2));
  EXPECT_EQ(ring_.last(RecordedOp::kSend, up)->data, "c1c2c3c4c5c6c7c8c9");
  worker_->onCompletion(done(ring_.last(RecordedOp::kSend, up)->user_data, 18));
  EXPECT_EQ(ring_.buffersAvailable(), 32u);
}

TEST_F(WorkerTest, UpstreamResetIsPassedOnAsAResetAfterItsBytesAreSent) {
  int up = establish(kClientFd);
  auto up_recv = *ring_.last(RecordedOp::kRecv, up);
  worker_->onCompletion(ring_.recvCompletion(up_recv.user_data, "hello"));
  auto send = *ring_.last(RecordedOp::kSend, kClientFd);
  worker_->onCompletion(done(ring_.last(RecordedOp::kRecv, up)->user_data, -ECONNRESET));
  // The upstream socket goes at once; the client still gets "hello" first.
  EXPECT_EQ(sockets_.resets, std::vector<int>{up});
  EXPECT_FALSE(ring_.last(RecordedOp::kClose, kClientFd));
  worker_->onCompletion(done(send.user_data, 5));
  // Then an RST, never a FIN: SO_LINGER {1,0}, its receive cancelled by user_data, close.
  EXPECT_EQ(sockets_.resets, (std::vector<int>{up, kClientFd}));
  EXPECT_TRUE(ring_.last(RecordedOp::kClose, kClientFd));
  EXPECT_FALSE(ring_.last(RecordedOp::kShutdownClose, kClientFd));
  EXPECT_FALSE(ring_.last(RecordedOp::kShutdown, kClientFd));
  auto cancel = ring_.last(RecordedOp::kCancel);
  ASSERT_TRUE(cancel);
  EXPECT_EQ(cancel->target, ring_.last(RecordedOp::kRecv, kClientFd)->user_data);
  EXPECT_EQ(ring_.count(RecordedOp::kTeardown), 0u);  // no cancel-by-fd scan
  EXPECT_EQ(stats_.counters().resets_from_upstream.get(), 1u);
}

TEST_F(WorkerTest, IdleAndHalfCloseTimeoutsCloseAndCountByCause) {
  settings_.idle_timeout = std::chrono::milliseconds(1);
  settings_.half_close_timeout = std::chrono::milliseconds(0);
  worker_->setTable(table_, settings_);
  establish(kClientFd);
  worker_->afterBatch();
  tickAfter(std::chrono::milliseconds(5));
  EXPECT_EQ(worker_->activeConnections(), 0u);
  EXPECT_EQ(stats_.counters().timeout_idle.get(), 1u);
  EXPECT_TRUE(ring_.last(RecordedOp::kShutdownClose, kClientFd));  // nothing unsent: clean

  settings_.idle_timeout = std::chrono::milliseconds(0);
  settings_.half_close_timeout = std::chrono::milliseconds(1);
  worker_->setTable(table_, settings_);
  int up = establish(kClientFd + 1);
  worker_->afterBatch();
  tickAfter(std::chrono::milliseconds(5));
  EXPECT_EQ(worker_->activeConnections(), 1u);  // not half-closed: no timeout applies
  worker_->onCompletion(done(ring_.last(RecordedOp::kRecv, up)->user_data, 0));  // upstream FIN
  worker_->afterBatch();
  tickAfter(std::chrono::milliseconds(5));
  EXPECT_EQ(worker_->activeConnections(), 0u);
  EXPECT_EQ(stats_.counters().timeout_half_close.get(), 1u);
}

TEST_F(WorkerTest, MaxConnectionsPausesAcceptingAndResumesBelowIt) {
  settings_.max_connections = 1;
  worker_->setTable(table_, settings_);
  auto accept_op = *ring_.last(RecordedOp::kAccept, kListenFd);
  establish(kClientFd);
  auto cancel = ring_.last(RecordedOp::kCancel);
  ASSERT_TRUE(cancel);
  EXPECT_EQ(cancel->target, accept_op.user_data);
  EXPECT_TRUE(worker_->acceptPaused());
  EXPECT_EQ(stats_.counters().accept_paused.get(), 1u);
  worker_->onCompletion(done(accept_op.user_data, -ECANCELED));
  EXPECT_EQ(ring_.count(RecordedOp::kAccept, kListenFd), 1u);  // paused, not failing
  EXPECT_EQ(stats_.counters().accept_errors.get(), 0u);
  worker_->abortAll();
  EXPECT_FALSE(worker_->acceptPaused());
  EXPECT_EQ(ring_.count(RecordedOp::kAccept, kListenFd), 2u);
}

TEST_F(WorkerTest, QueuedChunksLeaveInOneGatheredSendAndAShortSendResumesInPlace) {
  int up = establish(kClientFd);
  auto recv = *ring_.last(RecordedOp::kRecv, kClientFd);
  worker_->onCompletion(ring_.recvCompletion(recv.user_data, "aaa"));
  auto first = *ring_.last(RecordedOp::kSend, up);
  EXPECT_EQ(first.data, "aaa");
  EXPECT_EQ(ring_.gathered_sends, 0u);  // a single chunk is a plain send
  // Three more arrive while the first send is in flight.
  worker_->onCompletion(ring_.recvCompletion(recv.user_data, "bbb"));
  worker_->onCompletion(ring_.recvCompletion(recv.user_data, "ccc"));
  worker_->onCompletion(ring_.recvCompletion(recv.user_data, "ddd"));
  EXPECT_EQ(ring_.count(RecordedOp::kSend, up), 1u);
  size_t recycled = ring_.recycled;
  worker_->onCompletion(done(first.user_data, 3));
  EXPECT_EQ(ring_.recycled, recycled + 1);
  auto gathered = *ring_.last(RecordedOp::kSend, up);
  EXPECT_EQ(gathered.data, "bbbcccddd");
  EXPECT_EQ(ring_.gathered_sends, 1u);
  // Short: "bbb" and half of "ccc" went out; "bbb" goes back, the rest is sent from its buffers.
  worker_->onCompletion(done(gathered.user_data, 4));
  EXPECT_EQ(ring_.recycled, recycled + 2);
  auto rest = *ring_.last(RecordedOp::kSend, up);
  EXPECT_EQ(rest.data, "ccddd");
  // The upstream fails with the rest in flight: those buffers go back when it completes.
  worker_->onCompletion(done(ring_.last(RecordedOp::kRecv, up)->user_data, -ECONNRESET));
  EXPECT_EQ(ring_.recycled, recycled + 2);
  worker_->onCompletion(done(rest.user_data, -ECANCELED));
  EXPECT_EQ(ring_.recycled, recycled + 4);
  EXPECT_EQ(endpoint("bill-service.istio-demo", "v1", "10.244.1.168:80").received_bytes.get(), 12u);
}

TEST_F(WorkerTest, OpenConnectionsKeepTheirUpstreamAcrossATableSwap) {
  int up = establish(kClientFd);
  auto next = std::make_shared<FakeTable>(2);
  next->addService(kVip, "bill-service.istio-demo", {"10.244.9.9:80"});
  worker_->setTable(next, settings_);
  // The old connection keeps relaying to its upstream.
  auto recv = *ring_.last(RecordedOp::kRecv, kClientFd);
  worker_->onCompletion(ring_.recvCompletion(recv.user_data, "more"));
  EXPECT_TRUE(ring_.last(RecordedOp::kSend, up));
  // New connections use the new table.
  accept(kClientFd + 1, kVip);
  EXPECT_EQ(ring_.last(RecordedOp::kConnect)->address.toString(), "10.244.9.9:80");
}

TEST_F(WorkerTest, DrainClosesListenersAndAbortResetsConnections) {
  int up = establish(kClientFd);
  worker_->stopAccepting();
  // Cancel by user_data, then close; not quiescent until both completed, so the worker cannot
  // exit with the listener's close still unsubmitted (the socket would stay in LISTEN).
  EXPECT_TRUE(ring_.last(RecordedOp::kClose, kListenFd));
  EXPECT_EQ(ring_.last(RecordedOp::kCancel)->target,
            ring_.last(RecordedOp::kAccept, kListenFd)->user_data);
  EXPECT_EQ(worker_->activeConnections(), 1u);
  worker_->abortAll();
  EXPECT_EQ(worker_->activeConnections(), 0u);
  // The drain deadline resets: never a clean FIN on a cut connection.
  EXPECT_EQ(sockets_.resets, (std::vector<int>{kClientFd, up}));
  EXPECT_TRUE(ring_.last(RecordedOp::kClose, kClientFd));
  EXPECT_FALSE(ring_.last(RecordedOp::kShutdownClose, kClientFd));
}

TEST_F(WorkerTest, AnIdleWorkerIsQuiescentOnlyOnceItsListenersAreClosed) {
  worker_->stopAccepting();
  EXPECT_FALSE(worker_->quiescent());
  finishCloses();
  EXPECT_TRUE(worker_->quiescent());
}

TEST_F(WorkerTest, AccessLogLineNamesTheRouteAndFollowsTheSetting) {
  std::vector<std::string> lines;
  worker_->setAccessLog([&](const std::string& l) {
    lines.push_back(l);
    return true;
  });
  establish(kClientFd);
  worker_->abortAll();
  EXPECT_TRUE(lines.empty());  // access_log off in the settings
  settings_.access_log = true;
  worker_->setTable(table_, settings_);
  establish(kClientFd + 1);
  worker_->abortAll();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("original_dst=10.1.122.241:9999"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("service=bill-service.istio-demo subset=v1"), std::string::npos)
      << lines[0];
  EXPECT_NE(lines[0].find("outcome=aborted"), std::string::npos);
}

TEST_F(WorkerTest, AFullAccessLogQueueDropsAndCounts) {
  worker_->setAccessLog([](const std::string&) { return false; });
  settings_.access_log = true;
  worker_->setTable(table_, settings_);
  establish(kClientFd);
  worker_->abortAll();
  EXPECT_EQ(stats_.counters().access_log_dropped.get(), 1u);
}

// The log writer is stuck (a full stdout pipe): access lines are still taken without waiting, up
// to their own bound, then refused (the worker counts those as dropped); the proxy's own lines
// have their bound beside it. Once the pipe drains, every accepted line comes out in order, access
// lines formatted with the logger's pattern.
TEST(QueuedLogSinkTest, AccessLinesNeverWaitAndHaveTheirOwnBound) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  const int pipe_size = ::fcntl(fds[1], F_GETPIPE_SZ);
  ASSERT_GT(pipe_size, 0);
  const std::string filler(static_cast<size_t>(pipe_size), 'x');
  ASSERT_EQ(::write(fds[1], filler.data(), filler.size()), pipe_size);  // nothing more fits
  std::vector<std::string> accepted;
  std::thread reader;  // reads to EOF: every description of the pipe's write end closed
  {
    auto sink = std::make_shared<QueuedLogSink>(fds[1], 4);
    sink->setAccessCapacity(2);
    sink->setLoggerName("test");
    spdlog::logger logger("test", sink);
    logger.set_pattern("[%n] [%l] %v");
    // The writer takes what is queued once and then waits on the full pipe, so of ten lines at
    // most 2 + 2 are taken: those it took, and two waiting.
    for (int i = 0; i < 10; ++i) {
      const std::string line = "a" + std::to_string(i);
      if (sink->pushAccess(line)) accepted.push_back(line);
    }
    logger.info("own line");  // the access lines' bound leaves the proxy's lines room
    EXPECT_EQ(sink->dropped(), 0u);
    EXPECT_GE(accepted.size(), 2u);
    EXPECT_LE(accepted.size(), 4u) << "the access lines' bound of 2 did not hold";
    reader = std::thread([&] {
      std::string all;
      char buf[4096];
      ssize_t n = 0;
      while ((n = ::read(fds[0], buf, sizeof buf)) > 0) all.append(buf, static_cast<size_t>(n));
      std::string expected = filler;
      for (const std::string& line : accepted) expected += "[test] [info] access " + line + "\n";
      expected += "[test] [info] own line\n";
      EXPECT_EQ(all, expected);
    });
    sink->stop(std::chrono::seconds(10));
    ::close(fds[1]);
  }  // the sink closes its own description of the pipe
  reader.join();
  ::close(fds[0]);
}

TEST(UserDataTest, RoundTripsOpSlotAndGeneration) {
  UserData ud{7, 0xabcdef, 0xdeadbeef};
  EXPECT_EQ(UserData::decode(ud.encode()), ud);
  EXPECT_NE(ud.encode(), loop::kIgnoredUserData);
}

}  // namespace
}  // namespace remora::proxy
