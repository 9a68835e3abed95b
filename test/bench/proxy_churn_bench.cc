// Connection churn through one proxy worker with few and with many idle connections open
// (issue #9: closing a connection must cost the same however many others are open).
//
//   proxy_churn_bench [--idle 10,9000,10,9000] [--seconds 3]
//
// Everything runs on 127.0.0.1. A child process runs one real Worker on a real io_uring (the
// proxy's own code; only the original destination is fixed, since nothing redirects here); the
// parent runs an echo backend and the clients. For each idle count, the parent opens that many
// connections through the proxy and leaves them open, then for --seconds runs a loop of
// connect, 1-byte echo, close, and prints the rate. Two processes, because 9,000 proxied
// connections take 4 descriptors each.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "loop/uring_ring.h"
#include "proxy/socket_ops.h"
#include "proxy/stats.h"
#include "proxy/worker.h"

namespace {

using remora::SocketAddress;
using namespace remora::proxy;
using Clock = std::chrono::steady_clock;

// The worker's sockets, with the original destination fixed to the backend.
class BenchSockets final : public SocketOps {
 public:
  explicit BenchSockets(SocketAddress backend) : backend_(backend) {}
  remora::Result<SocketAddress> originalDestination(int, remora::Family) override {
    return backend_;
  }
  std::optional<SocketAddress> localAddress(int fd) override { return system_.localAddress(fd); }
  std::optional<SocketAddress> peerAddress(int fd) override { return system_.peerAddress(fd); }
  remora::Result<int> upstreamSocket(remora::Family family,
                                     const std::optional<remora::IpAddress>& source) override {
    return system_.upstreamSocket(family, source);
  }
  void setResetOnClose(int fd) override { system_.setResetOnClose(fd); }
  void shutdownWrite(int fd) override { system_.shutdownWrite(fd); }

 private:
  SocketAddress backend_;
  SystemSocketOps system_;
};

void raiseLimit() {
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);
}

uint16_t portOf(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof(sa);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  return ntohs(sa.sin_port);
}

int listenLoopback() {
  auto fd = openListener(SocketAddress{*remora::IpAddress::parse("127.0.0.1"), 0}, 4096);
  if (!fd) {
    std::fprintf(stderr, "listen: %s\n", fd.error().message.c_str());
    std::exit(1);
  }
  return *fd;
}

// The child: one worker relaying everything accepted on `listen_fd` to the backend.
[[noreturn]] void runProxy(int listen_fd, uint16_t backend_port, int stop_fd) {
  raiseLimit();
  remora::loop::RingOptions options;
  auto ring = remora::loop::UringRing::create(options);
  if (!ring) {
    std::fprintf(stderr, "%s\n", ring.error().message.c_str());
    std::_Exit(2);
  }
  BenchSockets sockets(SocketAddress{*remora::IpAddress::parse("127.0.0.1"), backend_port});
  WorkerStats stats;
  WorkerSettings settings;
  Worker worker(
      **ring, sockets, stats, [](auto) { return nullptr; }, settings);
  worker.addListener(listen_fd, ListenerKind::kOutbound, remora::Family::kIpv4);
  bool stop = false;
  worker.watchControl(stop_fd, [&] { stop = true; });
  while (!stop) {
    auto r = (*ring)->submitAndDispatch(worker, std::chrono::milliseconds(-1));
    if (!r) {
      std::fprintf(stderr, "worker: %s\n", r.error().message.c_str());
      std::_Exit(1);
    }
  }
  std::_Exit(0);
}

// Echo backend on an epoll loop of its own.
class Backend {
 public:
  Backend() : listen_fd_(listenLoopback()), epoll_fd_(epoll_create1(EPOLL_CLOEXEC)) {
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    add(listen_fd_);
    add(stop_fd_);
    thread_ = std::thread([this] { run(); });
  }
  ~Backend() {
    uint64_t one = 1;
    if (write(stop_fd_, &one, sizeof(one)) < 0) std::perror("backend stop");
    thread_.join();
  }
  uint16_t port() const { return portOf(listen_fd_); }
  size_t open() const { return open_.load(); }

 private:
  void add(int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
  void run() {
    std::vector<epoll_event> events(256);
    char buf[4096];
    while (true) {
      int n = epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), -1);
      for (int i = 0; i < n; ++i) {
        int fd = events[i].data.fd;
        if (fd == stop_fd_) return;
        if (fd == listen_fd_) {
          int c = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
          if (c >= 0) {
            ++open_;
            add(c);
          }
          continue;
        }
        ssize_t got = read(fd, buf, sizeof(buf));
        if (got > 0) {
          if (write(fd, buf, static_cast<size_t>(got)) < 0) std::perror("backend write");
        } else if (got == 0 || errno != EAGAIN) {
          close(fd);
          --open_;
        }
      }
    }
  }
  int listen_fd_;
  int epoll_fd_;
  int stop_fd_ = -1;
  std::atomic<size_t> open_{0};
  std::thread thread_;
};

int connectTo(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// One churn round: connect, echo one byte, close. False on any failure.
bool churnOnce(uint16_t port) {
  int fd = connectTo(port);
  if (fd < 0) return false;
  char c = 'x';
  bool ok = write(fd, &c, 1) == 1 && read(fd, &c, 1) == 1;
  close(fd);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<size_t> idle_counts = {10, 9000, 10, 9000};
  double seconds = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--idle") {
      idle_counts.clear();
      std::stringstream ss(argv[i + 1]);
      std::string item;
      while (std::getline(ss, item, ',')) idle_counts.push_back(std::stoul(item));
    } else if (flag == "--seconds") {
      seconds = std::stod(argv[i + 1]);
    }
  }
  raiseLimit();
  signal(SIGPIPE, SIG_IGN);
  Backend backend;
  int proxy_listen = listenLoopback();
  const uint16_t proxy_port = portOf(proxy_listen);
  int stop_fd = eventfd(0, EFD_CLOEXEC);
  pid_t child = fork();
  if (child == 0) runProxy(proxy_listen, backend.port(), stop_fd);
  close(proxy_listen);

  std::vector<int> idle;
  std::vector<double> rates;
  int status = 0;
  for (size_t want : idle_counts) {
    while (idle.size() > want) {
      close(idle.back());
      idle.pop_back();
    }
    while (idle.size() < want) {
      int fd = connectTo(proxy_port);
      if (fd < 0) {
        std::fprintf(stderr, "idle connection %zu: %s\n", idle.size(), std::strerror(errno));
        status = 1;
        break;
      }
      idle.push_back(fd);
    }
    // Every idle connection relayed (its upstream accepted) before measuring.
    auto deadline = Clock::now() + std::chrono::seconds(30);
    while (backend.open() != idle.size() && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    for (int i = 0; i < 200; ++i) churnOnce(proxy_port);  // warm up
    size_t done = 0, failed = 0;
    auto start = Clock::now();
    auto end = start + std::chrono::duration<double>(seconds);
    while (Clock::now() < end) {
      if (churnOnce(proxy_port)) {
        ++done;
      } else {
        ++failed;
      }
    }
    double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    double rate = static_cast<double>(done) / elapsed;
    rates.push_back(rate);
    std::printf("idle=%zu churn=%.0f conn/s (%zu in %.2f s, %zu failed)\n", idle.size(), rate, done,
                elapsed, failed);
    if (failed > 0) status = 1;
  }
  // Mean rate per idle count; the list may repeat counts (10,9000,10,9000) to average out a
  // noisy machine.
  size_t lo = *std::min_element(idle_counts.begin(), idle_counts.end());
  size_t hi = *std::max_element(idle_counts.begin(), idle_counts.end());
  double sum_lo = 0, sum_hi = 0;
  int n_lo = 0, n_hi = 0;
  for (size_t i = 0; i < rates.size() && i < idle_counts.size(); ++i) {
    if (idle_counts[i] == lo) sum_lo += rates[i], ++n_lo;
    if (idle_counts[i] == hi) sum_hi += rates[i], ++n_hi;
  }
  if (lo != hi && n_lo > 0 && n_hi > 0) {
    std::printf("mean churn: %.0f conn/s with %zu idle, %.0f conn/s with %zu idle (%.1f %%)\n",
                sum_lo / n_lo, lo, sum_hi / n_hi, hi, 100.0 * (sum_hi / n_hi) / (sum_lo / n_lo));
  }
  for (int fd : idle) close(fd);
  uint64_t one = 1;
  if (write(stop_fd, &one, sizeof(one)) < 0) std::perror("stop");
  waitpid(child, nullptr, 0);
  return status;
}
