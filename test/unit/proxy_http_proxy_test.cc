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
  void read(int fd, const std::string& bytes) {
    auto op = take(RecordedOp::kRead, fd);
    ASSERT_TRUE(op.has_value()) << "no read on fd " << fd;
    ASSERT_LE(bytes.size(), op->into.size());
    std::memcpy(op->into.data(), bytes.data(), bytes.size());
    http_.onCompletion({op->user_data, static_cast<int32_t>(bytes.size()), 0});
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

INSTANTIATE_TEST_SUITE_P(Modes, HttpProxyInboundTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Tproxy" : "Redirect";
                         });

}  // namespace
}  // namespace remora::proxy
