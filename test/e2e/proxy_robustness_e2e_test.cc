// remora-proxy's data path under hostile or careless peers (issue #9), in the test's own netns
// world: slow readers, resets, timeouts, SIGTERM with transfers in flight, descriptor exhaustion
// and the drain faults. Clients and servers run in this process: sockets are created on a
// thread that entered the pod's netns (setns changes only that thread) and used from anywhere.
#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

#include "e2e_util.h"
#include "netns_world.h"
#include "tcp_backend.h"

namespace remora::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char* kServerIp = "10.244.3.3";
constexpr const char* kClientIp = "10.244.0.20";
constexpr uint16_t kServerPort = 8080;
constexpr uint32_t kProxyUid = 1337;
constexpr size_t kBulkBytes = 4u << 20;

sockaddr_in addressOf(const char* ip, uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, ip, &sa.sin_addr);
  return sa;
}

void setTimeouts(int fd, milliseconds t) {
  timeval tv{static_cast<time_t>(t.count() / 1000),
             static_cast<suseconds_t>(t.count() % 1000 * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// Connects from inside the pod; -1 with errno on failure.
int connectFrom(const std::string& netns_path, const char* ip, uint16_t port,
                milliseconds timeout = milliseconds(3000), int rcvbuf = 0) {
  int fd = tcpSocketIn(netns_path);
  if (fd < 0) return -1;
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  setTimeouts(fd, timeout);
  sockaddr_in sa = addressOf(ip, port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

// Reads until EOF or error. Returns the byte count; `err` gets 0 on a clean EOF, else errno.
size_t readToEnd(int fd, int* err, std::string* keep = nullptr) {
  size_t total = 0;
  char buf[65536];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n == 0) {
      *err = 0;
      return total;
    }
    if (n < 0) {
      *err = errno;
      return total;
    }
    total += static_cast<size_t>(n);
    if (keep != nullptr) keep->append(buf, static_cast<size_t>(n));
  }
}

// The backend: a server in a pod whose first byte picks the behaviour.
//   'E' echo; 'S' stream without end; 'B' kBulkBytes then FIN; 'R' "hello" then RST;
//   'H' hold: read to EOF, never write or close until the server stops.
class Backend {
 public:
  explicit Backend(const std::string& netns_path)
      : server_(netns_path, kServerPort, 1024, [this](int fd) { serve(fd); }) {}
  bool ok() const { return server_.ok(); }
  size_t accepted() const { return server_.accepted(); }

 private:
  void serve(int fd) {
    char mode = 0;
    if (::recv(fd, &mode, 1, 0) != 1) return;
    std::string block(65536, 'x');
    char buf[65536];
    switch (mode) {
      case 'E':
        while (true) {
          ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
          if (n <= 0) break;
          if (!sendAll(fd, {buf, static_cast<size_t>(n)})) break;
        }
        ::shutdown(fd, SHUT_WR);
        break;
      case 'S':
        while (!server_.stopping() && sendAll(fd, block)) {
        }
        break;
      case 'B':
        for (size_t sent = 0; sent < kBulkBytes; sent += block.size()) {
          if (!sendAll(fd, block)) return;
        }
        ::shutdown(fd, SHUT_WR);
        while (::recv(fd, buf, sizeof(buf), 0) > 0) {
        }
        break;
      case 'R': {
        sendAll(fd, "hello");
        std::this_thread::sleep_for(milliseconds(200));
        linger l{1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        server_.release(fd);  // close() with a zero linger: RST
        break;
      }
      case 'H':
        while (::recv(fd, buf, sizeof(buf), 0) > 0) {
        }
        while (!server_.stopping()) std::this_thread::sleep_for(milliseconds(20));
        break;
      default:
        break;
    }
  }

  // Last: its destructor stops and joins the threads that use the members above.
  TcpBackend server_;
};

class ProxyRobustness : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "e2e tests need root (network namespaces, iptables)";
    world_ = std::make_unique<NetnsWorld>();
    front_ = *world_->addPod("front", "10.244.0.10");
    server_ = *world_->addPod("server", kServerIp);
    dir_ = makeScratchDir("remora-robust-e2e");
    ASSERT_FALSE(dir_.empty());
    config_ = dir_ + "/mesh.yaml";
    replaceFile(config_, seedConfig());
    ASSERT_TRUE(installCapture(*world_, front_));
    backend_ = std::make_unique<Backend>(world_->netnsPath(server_));
    ASSERT_TRUE(backend_->ok());
  }

  void TearDown() override {
    for (int fd : fds_) ::close(fd);
    proxy_.reset();
    backend_.reset();
    world_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  void startProxy(std::vector<std::string> extra = {}, std::vector<std::string> prefix = {}) {
    std::vector<std::string> argv = prefix;
    argv.insert(argv.end(), {binaryPath("remora-proxy"), "--config", config_, "--log-level", "info",
                             "--no-ipv6"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    proxy_ = world_->spawn(front_, argv, kProxyUid, kProxyUid);
    ASSERT_TRUE(proxy_->waitForLine("remora-proxy started", 10000)) << proxy_->output();
  }

  std::string admin(const std::string& path, const std::string& method = "GET") {
    auto out = world_->exec(
        front_, {"curl", "-sS", "-m", "3", "-X", method, "http://127.0.0.1:15000" + path});
    return out && out->exit_code == 0 ? out->out : "FAILED";
  }

  // A connection from the front pod (captured by the outbound rules) to the backend.
  int app(char mode, milliseconds timeout = milliseconds(3000), int rcvbuf = 0) {
    int fd = connectFrom(world_->netnsPath(front_), kServerIp, kServerPort, timeout, rcvbuf);
    if (fd >= 0) {
      fds_.push_back(fd);
      if (!sendAll(fd, std::string(1, mode))) return -1;
    }
    return fd;
  }

  void closeFd(int fd) {
    ::close(fd);
    fds_.erase(std::remove(fds_.begin(), fds_.end(), fd), fds_.end());
  }

  // One echo round trip of `size` bytes; its duration, or nullopt on failure.
  std::optional<milliseconds> echo(int fd, size_t size) {
    std::string msg(size, 'p');
    auto t0 = Clock::now();
    if (!sendAll(fd, msg)) return std::nullopt;
    size_t got = 0;
    char buf[4096];
    while (got < size) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) return std::nullopt;
      got += static_cast<size_t>(n);
    }
    return std::chrono::duration_cast<milliseconds>(Clock::now() - t0);
  }

  std::unique_ptr<NetnsWorld> world_;
  Pod front_, server_;
  std::string dir_, config_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Process> proxy_;
  std::vector<int> fds_;
};

// 40 clients that never read their endless downloads, and one echo client on the same (single)
// worker: the echo client's round trips stay fast.
TEST_F(ProxyRobustness, FortySlowReadersDoNotStallAnotherConnectionOnTheSameWorker) {
  startProxy({"--concurrency", "1"});
  // 200 round trips of 100 bytes; their p99 in ms, or -1 when the connection stalled.
  auto p99 = [&](const char* label) {
    int fd = app('E');
    if (fd < 0) return -1.0;
    std::vector<double> ms;
    for (int i = 0; i < 200; ++i) {
      auto t = echo(fd, 100);
      if (!t) {
        std::cout << label << ": stalled after " << ms.size() << " round trips\n";
        return -1.0;
      }
      ms.push_back(static_cast<double>(t->count()));
    }
    closeFd(fd);
    std::sort(ms.begin(), ms.end());
    double p = ms[ms.size() * 99 / 100];
    std::cout << "echo p99 " << label << ": " << p << " ms (median " << ms[ms.size() / 2]
              << " ms)\n";
    return p;
  };
  double alone = p99("without slow readers");
  for (int i = 0; i < 40; ++i) ASSERT_GE(app('S', milliseconds(3000), 4096), 0);
  // Let the slow downloads fill every buffer they can.
  std::this_thread::sleep_for(milliseconds(1500));
  double with = p99("with 40 slow readers");
  RecordProperty("p99_ms_alone", std::to_string(alone));
  RecordProperty("p99_ms_with_slow_readers", std::to_string(with));
  ASSERT_GE(with, 0) << admin("/stats/prometheus");
  EXPECT_LT(with, 50.0);
}

// A backend that sends "hello" and then resets: the client gets the bytes, then ECONNRESET.
TEST_F(ProxyRobustness, UpstreamResetReachesTheClientAsConnectionReset) {
  startProxy();
  int fd = app('R');
  ASSERT_GE(fd, 0);
  int err = -1;
  std::string got;
  readToEnd(fd, &err, &got);
  EXPECT_EQ(got, "hello");
  EXPECT_EQ(err, ECONNRESET) << "a clean EOF hid the upstream reset (" << std::strerror(err) << ")";
}

TEST_F(ProxyRobustness, IdleTimeoutClosesASilentConnection) {
  startProxy({"--idle-timeout", "1s"});
  int fd = app('E', milliseconds(6000));
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(echo(fd, 10));
  auto t0 = Clock::now();
  int err = -1;
  readToEnd(fd, &err);
  auto waited = std::chrono::duration_cast<milliseconds>(Clock::now() - t0);
  EXPECT_NE(err, EAGAIN) << "still open after " << waited.count() << " ms";
  EXPECT_GE(waited.count(), 700);
  EXPECT_NE(admin("/stats/prometheus").find("remora_tcp_timeouts_total{cause=\"idle\"} 1"),
            std::string::npos)
      << admin("/stats/prometheus");
}

// The client half-closes; the backend keeps its side open and silent. After the half-close
// timeout the proxy closes the other direction too.
TEST_F(ProxyRobustness, HalfCloseTimeoutClosesTheOtherDirection) {
  startProxy({"--half-close-timeout", "1s"});
  int fd = app('H', milliseconds(6000));
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::shutdown(fd, SHUT_WR), 0);
  auto t0 = Clock::now();
  int err = -1;
  readToEnd(fd, &err);
  auto waited = std::chrono::duration_cast<milliseconds>(Clock::now() - t0);
  EXPECT_NE(err, EAGAIN) << "still open after " << waited.count() << " ms";
  EXPECT_NE(admin("/stats/prometheus").find("remora_tcp_timeouts_total{cause=\"half_close\"} 1"),
            std::string::npos)
      << admin("/stats/prometheus");
}

// SIGTERM while 50 downloads are in flight: every one completes, and the app's new outbound
// connections made during the drain still go through.
TEST_F(ProxyRobustness, SigtermCompletesFiftyTransfersAndKeepsOutboundOpenDuringTheDrain) {
  startProxy({"--drain-timeout", "30s", "--inbound-drain-grace", "200ms"});
  std::vector<int> fds;
  for (int i = 0; i < 50; ++i) {
    int fd = app('B', milliseconds(20000), 16384);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
  }
  std::atomic<int> complete{0};
  std::vector<std::thread> readers;
  for (int fd : fds) {
    readers.emplace_back([fd, &complete] {
      size_t total = 0;
      char buf[16384];
      while (true) {
        ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) {
          if (n == 0 && total == kBulkBytes) ++complete;
          return;
        }
        total += static_cast<size_t>(n);
        std::this_thread::sleep_for(milliseconds(5));  // ~3 MB/s each: about 1.5 s per transfer
      }
    });
  }
  std::this_thread::sleep_for(milliseconds(300));
  ::kill(proxy_->pid(), SIGTERM);
  std::this_thread::sleep_for(milliseconds(500));  // past the inbound grace
  int during = 0;
  for (int i = 0; i < 5; ++i) {
    int fd = app('E');
    if (fd >= 0 && echo(fd, 10)) ++during;
  }
  for (auto& t : readers) t.join();
  EXPECT_EQ(complete.load(), 50);
  EXPECT_EQ(during, 5) << "outbound connects during the drain failed";
  for (int fd : fds_) ::close(fd);
  fds_.clear();
  EXPECT_EQ(proxy_->stop(0, 10000).value_or(-1), 0) << proxy_->output();
}

// prlimit leaves the proxy a few descriptors. Idle connections use them up; more wait in both
// listeners' backlogs. The proxy must not spin while starved, and must serve once they go.
TEST_F(ProxyRobustness, DescriptorExhaustionOnBothListenersDoesNotSpinAndServiceResumes) {
  auto client = *world_->addPod("client", kClientIp);
  startProxy({"--max-connect-attempts", "1"}, {"prlimit", "--nofile=64:64"});
  // Echo connections: once the client closes, the backend closes too and the proxy frees both
  // descriptors.
  std::vector<int> idle;
  for (int i = 0; i < 40; ++i) {
    int fd = app('E', milliseconds(1000));
    if (fd >= 0) idle.push_back(fd);
  }
  // Waiting in the backlogs: outbound (captured) and inbound (to the front pod's port 9000).
  for (int i = 0; i < 4; ++i) {
    app('E', milliseconds(500));
    int fd = connectFrom(world_->netnsPath(client), "10.244.0.10", 9000, milliseconds(500));
    if (fd >= 0) fds_.push_back(fd);
  }
  std::this_thread::sleep_for(milliseconds(500));
  double before = cpuSeconds(proxy_->pid());
  std::this_thread::sleep_for(milliseconds(3000));
  double used = cpuSeconds(proxy_->pid()) - before;
  EXPECT_LT(used, 0.15) << "the proxy used " << used << " s of CPU in 3 s while starved";
  for (int fd : idle) closeFd(fd);
  EXPECT_TRUE(waitFor(
      [&] {
        int fd = app('E', milliseconds(1000));
        return fd >= 0 && echo(fd, 10).has_value();
      },
      10000))
      << proxy_->output();
}

// Nobody reads the proxy's stdout while the access log fills the pipe (a stuck log collector):
// SIGTERM still drains and exits promptly. It used to hang: the access-log writer blocked in
// write() holding the console sink's lock, and the control thread waited for that lock to log
// "SIGTERM: draining".
TEST_F(ProxyRobustness, SigtermExitsPromptlyWhileStdoutIsFull) {
  startProxy({"--access-log", "--drain-timeout", "2s"});
  // The harness gives the pipe 1 MiB; one page fills with a few dozen access-log lines (about
  // 150 bytes each).
  ASSERT_GE(::fcntl(proxy_->stdoutFd(), F_SETPIPE_SZ, 4096), 0) << std::strerror(errno);
  int served = 0;
  for (int i = 0; i < 300; ++i) {
    int fd = app('E', milliseconds(1000));
    if (fd >= 0 && echo(fd, 1)) ++served;
    if (fd >= 0) closeFd(fd);
  }
  EXPECT_EQ(served, 300);
  auto t0 = Clock::now();
  std::optional<int> code = proxy_->stop(SIGTERM, 5000, /*keep_reading=*/false);
  auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - t0);
  ASSERT_TRUE(code.has_value()) << "still running 5 s after SIGTERM with its stdout full";
  EXPECT_EQ(*code, 0);
  EXPECT_LT(took.count(), 3000);
}

// POST /drain on a proxy with no connection: the listeners really close, so a new connection
// is refused at once instead of hanging in a backlog nobody accepts from.
TEST_F(ProxyRobustness, DrainOnAnIdleProxyRefusesNewConnections) {
  startProxy();
  int fd = app('E');
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(echo(fd, 10));
  closeFd(fd);
  ASSERT_NE(admin("/drain", "POST"), "FAILED");
  std::this_thread::sleep_for(milliseconds(300));
  int refused = connectFrom(world_->netnsPath(front_), kServerIp, kServerPort, milliseconds(2000));
  int err = errno;
  if (refused >= 0) {
    fds_.push_back(refused);
    sendAll(refused, "E");
    std::optional<milliseconds> t = echo(refused, 10);
    FAIL() << "connected after /drain; the echo " << (t ? "worked" : "hung or failed");
  }
  EXPECT_EQ(err, ECONNREFUSED) << std::strerror(err);
}

// Connections still open at the drain deadline are reset, so no client takes a cut transfer
// for a complete one.
TEST_F(ProxyRobustness, DrainDeadlineResetsTheConnectionsStillOpen) {
  startProxy({"--drain-timeout", "1s"});
  int fd = app('S', milliseconds(10000), 4096);
  ASSERT_GE(fd, 0);
  ::kill(proxy_->pid(), SIGTERM);
  // Read slowly past the deadline.
  size_t total = 0;
  int err = 0;
  char buf[4096];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n == 0) break;
    if (n < 0) {
      err = errno;
      break;
    }
    total += static_cast<size_t>(n);
    std::this_thread::sleep_for(milliseconds(2));
  }
  EXPECT_EQ(err, ECONNRESET) << "after " << total << " bytes the client saw "
                             << (err == 0 ? "a clean EOF" : std::strerror(err));
  EXPECT_EQ(proxy_->stop(0, 10000).value_or(-1), 0) << proxy_->output();
}

}  // namespace
}  // namespace remora::test
