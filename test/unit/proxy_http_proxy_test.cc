// The L7 engine (proxy/http_proxy.h) on a recorded ring, with no kernel: which socket each
// upstream connection to the local app gets, and which pooled connection each request takes.
// Under TPROXY (--inbound-interception-mode TPROXY) the app must see every client's own
// address, over HTTP too, so a connection bound to one client's address may never carry
// another client's request; REDIRECT keeps one shared pool from 127.0.0.6.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "proxy/http_proxy.h"
#include "proxy/stats.h"
#include "proxy/worker.h"
#include "proxy_fakes.h"

namespace remora::proxy {
namespace {

using testing::FakeRing;
using testing::FakeSockets;
using testing::RecordedOp;

constexpr const char* kApp = "10.244.0.10:8080";
constexpr const char* kRequest = "GET / HTTP/1.1\r\nHost: app\r\n\r\n";
constexpr const char* kResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

class HttpProxyInboundTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    HttpProxySettings settings;
    settings.inbound_transparent = GetParam();
    http_.configure(nullptr, settings);
  }

  bool transparent() const { return GetParam(); }

  // A client connection from `peer` to the app's port, as the worker hands it over.
  void adopt(int fd, const char* peer) {
    http_.adopt(fd, ListenerKind::kInbound, *SocketAddress::parse(peer),
                *SocketAddress::parse(kApp));
  }

  // Removes and returns the last op of `kind` on fd (any fd: -1), so a completed operation is
  // never completed twice.
  std::optional<RecordedOp> take(RecordedOp::Kind kind, int fd = -1) {
    for (auto it = ring_.ops.rbegin(); it != ring_.ops.rend(); ++it) {
      if (it->kind == kind && (fd == -1 || it->fd == fd)) {
        RecordedOp op = *it;
        ring_.ops.erase(std::next(it).base());
        return op;
      }
    }
    return std::nullopt;
  }

  // The kernel's answer to the read armed on fd: `bytes`, or the peer's close when empty.
  // A multishot receive stays armed while it delivers bytes; the close ends it.
  void read(int fd, const std::string& bytes) {
    auto it = std::find_if(ring_.ops.rbegin(), ring_.ops.rend(), [&](const RecordedOp& op) {
      return op.fd == fd && (op.kind == RecordedOp::kRead || op.kind == RecordedOp::kRecvMultishot);
    });
    ASSERT_NE(it, ring_.ops.rend()) << "no read on fd " << fd;
    const RecordedOp op = *it;
    if (op.kind == RecordedOp::kRecvMultishot) {
      if (bytes.empty()) {
        ring_.ops.erase(std::next(it).base());
        http_.onCompletion({op.user_data, 0, 0});
        return;
      }
      ASSERT_LE(bytes.size(), op.max_bytes);
      http_.onCompletion(ring_.recvCompletion(op.user_data, bytes, /*more=*/true));
      return;
    }
    ring_.ops.erase(std::next(it).base());
    ASSERT_LE(bytes.size(), op.into.size());
    std::memcpy(op.into.data(), bytes.data(), bytes.size());
    http_.onCompletion({op.user_data, static_cast<int32_t>(bytes.size()), 0});
  }

  // Completes the last send on fd in full and returns what it carried.
  std::string sent(int fd) {
    auto op = take(RecordedOp::kSend, fd);
    if (!op) return "";
    http_.onCompletion({op->user_data, static_cast<int32_t>(op->data.size()), 0});
    return op->data;
  }

  // One request on client fd `client`; returns the upstream fd that carried it (the connect
  // is completed when a new connection was opened).
  int exchange(int client) {
    read(client, kRequest);
    if (auto connect = take(RecordedOp::kConnect)) {
      EXPECT_EQ(connect->address.toString(), kApp);
      http_.onCompletion({connect->user_data, 0, 0});
    }
    auto upstream_send = ring_.last(RecordedOp::kSend);
    EXPECT_TRUE(upstream_send.has_value());
    if (!upstream_send) return -1;
    const int up = upstream_send->fd;
    EXPECT_NE(up, client);
    EXPECT_NE(sent(up).find("GET / HTTP/1.1"), std::string::npos);
    read(up, kResponse);
    EXPECT_NE(sent(client).find("200 OK"), std::string::npos);
    return up;
  }

  FakeRing ring_;
  FakeSockets sockets_;
  WorkerStats stats_;
  HttpProxy http_{ring_, sockets_, stats_};
};

TEST_P(HttpProxyInboundTest, EachClientAddressGetsConnectionsOfItsOwn) {
  adopt(10, "10.244.0.20:40000");
  const int a = exchange(10);
  adopt(11, "10.244.0.30:40001");
  // Client A's connection is idle in the pool now.
  const int b = exchange(11);
  const int a_again = exchange(10);
  const int b_again = exchange(11);
  // Each kept-alive client keeps reusing its own connection.
  EXPECT_EQ(a_again, a);
  EXPECT_EQ(b_again, b);
  if (!transparent()) {
    // REDIRECT: one shared pool from 127.0.0.6; B's first request took A's idle connection.
    EXPECT_EQ(b, a);
    EXPECT_TRUE(sockets_.transparent.empty());
    ASSERT_EQ(sockets_.sources.size(), 1u);
    EXPECT_EQ(sockets_.sources[0]->toString(), "127.0.0.6");
    return;
  }
  // TPROXY: B never gets the connection bound to A's address, and each connection is bound
  // to its client's address with the mark the policy route keys on.
  EXPECT_NE(b, a);
  EXPECT_TRUE(sockets_.sources.empty());
  ASSERT_EQ(sockets_.transparent.size(), 2u);
  EXPECT_EQ(sockets_.transparent[0].first.toString(), "10.244.0.20");
  EXPECT_EQ(sockets_.transparent[1].first.toString(), "10.244.0.30");
  EXPECT_EQ(sockets_.transparent[0].second, kTproxyMark);
  EXPECT_EQ(sockets_.transparent[1].second, kTproxyMark);
}

TEST_P(HttpProxyInboundTest, AClientsNextConnectionFromTheSameAddressReusesItsPooledOne) {
  adopt(10, "10.244.0.20:40000");
  adopt(11, "10.244.0.20:40002");  // the same client, a second connection
  const int first = exchange(10);
  EXPECT_EQ(exchange(11), first);
  const size_t sockets = sockets_.transparent.size() + sockets_.sources.size();
  EXPECT_EQ(sockets, 1u);
}

TEST_P(HttpProxyInboundTest, AClientsIdleConnectionsCloseWithItsLastConnection) {
  adopt(10, "10.244.0.20:40000");
  adopt(11, "10.244.0.20:40002");
  const int up = exchange(10);
  read(10, "");  // the first connection closes: the second one may still use `up`
  EXPECT_EQ(ring_.count(RecordedOp::kShutdownClose, up), 0u);
  EXPECT_EQ(exchange(11), up);
  read(11, "");
  // REDIRECT keeps the shared pool's idle connection for the next client; TPROXY closes
  // the one bound to an address with no connection left, so many clients cannot pile up idle
  // connections.
  EXPECT_EQ(ring_.count(RecordedOp::kShutdownClose, up), transparent() ? 1u : 0u);
}

// The armed multishot receive on fd, if any.
std::optional<RecordedOp> multishot(const FakeRing& ring, int fd) {
  return ring.last(RecordedOp::kRecvMultishot, fd);
}

// Client and upstream reads are multishot receives, armed once for the whole keep-alive
// connection (the socket's poll is not re-armed per request), and every provided buffer goes
// back in the completion that brought it: the L7 path copies what it keeps.
TEST_P(HttpProxyInboundTest, PipelinedRequestsOnOneMultishotReceiveAreAnsweredInOrder) {
  adopt(10, "10.244.0.20:40000");
  ASSERT_TRUE(multishot(ring_, 10).has_value());
  EXPECT_EQ(ring_.count(RecordedOp::kRead), 0u);
  EXPECT_EQ(multishot(ring_, 10)->max_bytes, HttpProxy::kReadSize);
  EXPECT_EQ(multishot(ring_, 10)->group, loop::BufferGroup::kSmall);
  read(10,
       "GET /1 HTTP/1.1\r\nHost: app\r\n\r\nGET /2 HTTP/1.1\r\nHost: app\r\n\r\n"
       "GET /3 HTTP/1.1\r\nHost: a");
  read(10, "pp\r\n\r\n");
  auto connect = take(RecordedOp::kConnect);
  ASSERT_TRUE(connect.has_value());
  http_.onCompletion({connect->user_data, 0, 0});
  const int up = ring_.last(RecordedOp::kSend)->fd;
  for (const char* path : {"GET /1 ", "GET /2 ", "GET /3 "}) {
    const std::string request = sent(up);
    EXPECT_EQ(request.rfind(path, 0), 0u) << request;
    read(up, kResponse);
    EXPECT_NE(sent(10).find("200 OK"), std::string::npos);
  }
  // One receive per socket for all of it, and no buffer kept.
  EXPECT_EQ(ring_.count(RecordedOp::kRecvMultishot, 10), 1u);
  EXPECT_EQ(ring_.count(RecordedOp::kRecvMultishot, up), 1u);
  EXPECT_EQ(ring_.count(RecordedOp::kCancel), 0u);
  EXPECT_EQ(ring_.buffersAvailable(), 32u);
  EXPECT_EQ(ring_.recycled, 5u);
}

// A client pipelining past the read-ahead while its requests wait: the multishot receive is
// cancelled (by its user_data), bytes it already delivered are kept, no buffer is held, and
// reading resumes with a new receive once the requests have been answered.
TEST_P(HttpProxyInboundTest, AClientPipeliningPastTheReadAheadIsPausedAndHoldsNoBuffer) {
  adopt(10, "10.244.0.20:40000");
  const std::string big =
      "GET / HTTP/1.1\r\nHost: app\r\nx-pad: " + std::string(4000, 'a') + "\r\n\r\n";
  const auto client_read = multishot(ring_, 10)->user_data;
  size_t requests = 0;
  while (ring_.count(RecordedOp::kCancel) == 0) {
    ASSERT_LT(requests, 100u) << "reading never paused";
    read(10, big);
    ++requests;
  }
  const auto cancel = ring_.last(RecordedOp::kCancel);
  EXPECT_EQ(cancel->target, client_read);
  EXPECT_GE(requests * big.size(), HttpProxy::kMaxReadAhead);
  // Bytes the kernel had already delivered before the cancel landed are still taken.
  read(10, big);
  ++requests;
  EXPECT_EQ(ring_.count(RecordedOp::kCancel), 1u);
  EXPECT_EQ(ring_.buffersAvailable(), 32u);
  // The receive ends; nothing is re-armed while the read-ahead is full.
  auto armed = take(RecordedOp::kRecvMultishot, 10);
  http_.onCompletion({armed->user_data, -ECANCELED, 0});
  EXPECT_FALSE(multishot(ring_, 10).has_value());
  EXPECT_EQ(ring_.count(RecordedOp::kShutdownClose, 10) + ring_.count(RecordedOp::kClose, 10), 0u)
      << "the pause closed the client";
  // Every request is answered, in turn; reading resumes once the read-ahead has room.
  auto connect = take(RecordedOp::kConnect);
  ASSERT_TRUE(connect.has_value());
  http_.onCompletion({connect->user_data, 0, 0});
  const int up = ring_.last(RecordedOp::kSend)->fd;
  for (size_t i = 0; i < requests; ++i) {
    ASSERT_NE(sent(up).find("x-pad"), std::string::npos) << "request " << i;
    read(up, kResponse);
    ASSERT_NE(sent(10).find("200 OK"), std::string::npos) << "response " << i;
  }
  EXPECT_TRUE(multishot(ring_, 10).has_value());
  EXPECT_EQ(ring_.buffersAvailable(), 32u);
}

// When the provided buffers run out, a receive ends with -ENOBUFS; the next read goes into the
// connection's own buffer (it needs none from the pool), and the one after is multishot again.
TEST_P(HttpProxyInboundTest, AReadFallsBackToItsOwnBufferWhenTheProvidedBuffersRunOut) {
  adopt(10, "10.244.0.20:40000");
  auto armed = take(RecordedOp::kRecvMultishot, 10);
  ASSERT_TRUE(armed.has_value());
  http_.onCompletion({armed->user_data, -ENOBUFS, 0});
  EXPECT_EQ(stats_.counters().buffer_exhausted.get(), 1u);
  ASSERT_EQ(ring_.count(RecordedOp::kRead, 10), 1u);
  EXPECT_FALSE(multishot(ring_, 10).has_value());
  exchange(10);  // the request comes through the one-shot read
  EXPECT_TRUE(multishot(ring_, 10).has_value());
}

// A receive completing after its session was reset still gives its buffer back.
TEST_P(HttpProxyInboundTest, AReceiveCompletingAfterAResetGivesItsBufferBack) {
  adopt(10, "10.244.0.20:40000");
  const auto armed = multishot(ring_, 10);
  http_.abortAll();
  EXPECT_EQ(ring_.last(RecordedOp::kCancel)->target, armed->user_data);
  http_.onCompletion(ring_.recvCompletion(armed->user_data, "late", /*more=*/true));
  http_.onCompletion({armed->user_data, -ECANCELED, 0});
  EXPECT_EQ(ring_.buffersAvailable(), 32u);
}

INSTANTIATE_TEST_SUITE_P(Modes, HttpProxyInboundTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Tproxy" : "Redirect";
                         });

}  // namespace
}  // namespace remora::proxy
