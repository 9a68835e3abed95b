// AdminServer on a real io_uring ring and real loopback sockets (no privileges needed): the
// overlapping connections that corrupted the heap (issue #9), the connection cap, the read and
// write timeouts. Run it under ASan too (the sanitizer CI job runs every unit test).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "loop/uring_ring.h"
#include "proxy/admin.h"
#include "proxy/socket_ops.h"

namespace remora::proxy {
namespace {

using namespace std::chrono_literals;

// An AdminServer driven by its own thread and ring, like the proxy's control thread.
class Served {
 public:
  explicit Served(AdminLimits limits, std::string big_body = {}) {
    std::promise<std::string> started;
    auto result = started.get_future();
    thread_ = std::thread([this, limits, big = std::move(big_body), &started]() mutable {
      run(limits, std::move(big), started);
    });
    error_ = result.get();
  }
  ~Served() {
    stop_ = true;
    thread_.join();
  }

  // Empty when the server runs; otherwise why it could not (io_uring unavailable).
  const std::string& error() const { return error_; }
  uint16_t port() const { return port_; }
  AdminCounters counters() {
    std::lock_guard<std::mutex> lock(mu_);
    return counters_;
  }
  size_t active() {
    std::lock_guard<std::mutex> lock(mu_);
    return active_;
  }

 private:
  struct Forward final : loop::CompletionHandler {
    AdminServer* server = nullptr;
    void onCompletion(const loop::Completion& c) override {
      if (AdminServer::owns(c.user_data)) server->onCompletion(c);
    }
  };

  void run(AdminLimits limits, std::string big, std::promise<std::string>& started) {
    auto ring = loop::UringRing::create(loop::RingOptions{64, 1024, 0, 0});
    if (!ring) {
      started.set_value("io_uring unavailable here: " + ring.error().message);
      return;
    }
    auto listener = openListener(SocketAddress{IpAddress::v4(0x7f000001), 0},
                                 static_cast<int>(limits.max_connections));
    if (!listener) {
      started.set_value(listener.error().message);
      return;
    }
    sockaddr_in sa{};
    socklen_t len = sizeof(sa);
    ::getsockname(*listener, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    AdminHooks hooks;
    hooks.ready = [] { return true; };
    hooks.prometheus = [big] { return big.empty() ? std::string("remora_workers 1\n") : big; };
    hooks.config_dump = [] { return nlohmann::json{{"generation", 1}}; };
    hooks.clusters = [] { return std::string(); };
    hooks.drain = [] {};
    hooks.quit = [] {};
    auto server = std::make_unique<AdminServer>(**ring, hooks, limits);
    server->start(*listener);
    Forward forward;
    forward.server = server.get();
    started.set_value("");
    while (!stop_) {
      auto r = (*ring)->submitAndDispatch(forward, 20ms);
      std::lock_guard<std::mutex> lock(mu_);
      counters_ = server->counters();
      active_ = server->activeConnections();
      if (!r) break;
    }
    ring->reset();  // the ring first: the connections' buffers go with the server
    server.reset();
  }

  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::string error_;
  uint16_t port_ = 0;
  std::mutex mu_;
  AdminCounters counters_;
  size_t active_ = 0;
};

int connectTo(uint16_t port, int timeout_ms = 5000, int rcvbuf = 0) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (rcvbuf > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string readAll(int fd) {
  std::string out;
  char buf[4096];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

bool sendText(int fd, const std::string& text) {
  return ::send(fd, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size());
}

constexpr const char* kReady = "GET /ready HTTP/1.1\r\nHost: x\r\n\r\n";

bool answeredLive(const std::string& reply) {
  return reply.rfind("HTTP/1.1 200 OK\r\n", 0) == 0 && reply.find("LIVE") != std::string::npos;
}

// Reproduced (in the proxy, before AdminServer): every accept could grow the std::vector the
// connections lived in, while the kernel had reads pending into the old elements' buffers.
TEST(AdminServerTest, FiftyOverlappingConnectionsAreAllAnswered) {
  Served s(AdminLimits{});
  if (!s.error().empty()) GTEST_SKIP() << s.error();
  for (int round = 0; round < 3; ++round) {
    // The last round's connections are closed by the client; wait until the server has seen
    // every close too, or they would count among this round's 50 (a CI run under ASan saw 64:
    // the server's connection limit, with accepts paused).
    for (int i = 0; i < 300 && s.active() != 0; ++i) std::this_thread::sleep_for(10ms);
    ASSERT_EQ(s.active(), 0u) << "round " << round;
    std::vector<int> fds;
    for (int i = 0; i < 50; ++i) fds.push_back(connectTo(s.port()));
    // Let every connection be accepted, with its read pending, before any request comes.
    for (int i = 0; i < 100 && s.active() < 50; ++i) std::this_thread::sleep_for(10ms);
    EXPECT_EQ(s.active(), 50u);
    for (int fd : fds) ASSERT_TRUE(fd >= 0 && sendText(fd, kReady));
    int live = 0;
    for (int fd : fds) {
      live += answeredLive(readAll(fd));
      ::close(fd);
    }
    EXPECT_EQ(live, 50) << "round " << round;
  }
  EXPECT_EQ(s.counters().accepted, 150u);
}

TEST(AdminServerTest, TheCapPausesAcceptAndConnectionsWaitingInTheBacklogAreServedLater) {
  AdminLimits limits;
  limits.max_connections = 4;
  Served s(limits);
  if (!s.error().empty()) GTEST_SKIP() << s.error();
  std::vector<int> fds;
  for (int i = 0; i < 4; ++i) fds.push_back(connectTo(s.port()));
  for (int i = 0; i < 100 && s.active() < 4; ++i) std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(100ms);  // the cancel of the accept lands
  EXPECT_GE(s.counters().accept_pauses, 1u);
  // These complete their handshake in the kernel and wait in the listen backlog (as long as the
  // cap: AdminLimits asks for that).
  for (int i = 0; i < 4; ++i) fds.push_back(connectTo(s.port()));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(s.active(), 4u);
  EXPECT_EQ(s.counters().accepted, 4u);
  // Requests sent by all: the first four are answered, then the others as slots free.
  for (int fd : fds) ASSERT_TRUE(fd >= 0 && sendText(fd, kReady));
  int live = 0;
  for (int fd : fds) {
    live += answeredLive(readAll(fd));
    ::close(fd);
  }
  EXPECT_EQ(live, 8);
  EXPECT_EQ(s.counters().accepted, 8u);
  EXPECT_EQ(s.counters().rejected, 0u);
}

TEST(AdminServerTest, ABurstPastTheCapNeverOpensMoreThanTheCap) {
  AdminLimits limits;
  limits.max_connections = 4;
  Served s(limits);
  if (!s.error().empty()) GTEST_SKIP() << s.error();
  // A multishot accept may take a whole burst before the pause lands: four are served, up to
  // four more wait unread for a slot, the rest are closed.
  std::vector<int> fds;
  for (int i = 0; i < 9; ++i) fds.push_back(connectTo(s.port()));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(s.active(), 4u);
  for (int fd : fds) sendText(fd, kReady);
  int live = 0;
  for (int fd : fds) {
    live += answeredLive(readAll(fd));
    ::close(fd);
  }
  const AdminCounters c = s.counters();
  EXPECT_EQ(static_cast<uint64_t>(live) + c.rejected, 9u);
  EXPECT_GE(live, 8);
}

TEST(AdminServerTest, AnUnfinishedRequestIsClosedAtTheReadTimeout) {
  AdminLimits limits;
  limits.read_timeout = 300ms;
  Served s(limits);
  if (!s.error().empty()) GTEST_SKIP() << s.error();
  // A slow client that keeps sending: the timeout runs from accept, not from the last byte.
  int fd = connectTo(s.port());
  ASSERT_GE(fd, 0);
  const auto start = std::chrono::steady_clock::now();
  bool closed = !sendText(fd, "GET /ready HTTP/1.1\r\nX");
  for (int i = 0; i < 40 && !closed; ++i) {
    closed = !sendText(fd, "X");  // a header name that never ends
    char c;
    closed = closed || ::recv(fd, &c, 1, MSG_DONTWAIT) == 0;
    std::this_thread::sleep_for(50ms);
  }
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(closed);
  EXPECT_LT(waited, 1500ms);
  ::close(fd);
  EXPECT_EQ(s.counters().timeouts, 1u);
  EXPECT_TRUE(answeredLive([&] {
    int ok = connectTo(s.port());
    sendText(ok, kReady);
    std::string r = readAll(ok);
    ::close(ok);
    return r;
  }()));
}

TEST(AdminServerTest, AClientThatDoesNotReadItsAnswerIsClosedAtTheWriteTimeout) {
  AdminLimits limits;
  limits.write_timeout = 300ms;
  Served s(limits, std::string(32 << 20, 'm'));
  if (!s.error().empty()) GTEST_SKIP() << s.error();
  int fd = connectTo(s.port(), 5000, 4096);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(sendText(fd, "GET /stats/prometheus HTTP/1.1\r\n\r\n"));
  for (int i = 0; i < 200 && s.counters().timeouts == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(s.counters().timeouts, 1u);
  for (int i = 0; i < 200 && s.active() > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(s.active(), 0u);
  ::close(fd);
}

TEST(AdminServerTest, AHugeContentLengthIsRefusedAtOnce) {
  Served s(AdminLimits{});
  if (!s.error().empty()) GTEST_SKIP() << s.error();
  int fd = connectTo(s.port(), 2000);
  ASSERT_TRUE(sendText(fd, "POST /drain HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"));
  std::string reply = readAll(fd);
  ::close(fd);
  EXPECT_EQ(reply.rfind("HTTP/1.1 413 Payload Too Large\r\n", 0), 0u) << reply;
  EXPECT_EQ(s.counters().bad_requests, 1u);
}

}  // namespace
}  // namespace remora::proxy
