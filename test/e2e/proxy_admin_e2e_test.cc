// remora-proxy's admin endpoint and config reloads, end to end (issue #9): the proxy runs as uid
// 1337 in the front pod of a NetnsWorld, with remora-init's rules; the test talks to it from
// threads that entered the pod's network namespace (sockets stay in the namespace they were
// made in), so nothing leaves the world.
#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <thread>

#include "e2e_util.h"
#include "netns_world.h"

namespace remora::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* kVip = "10.1.122.241";
constexpr uint16_t kVipPort = 9999;
constexpr uint16_t kAdminPort = 15000;
constexpr const char* kV1Reply = "this is bill-service-v1";
constexpr const char* kV2Reply = "hello, this is bill-service-v2";
constexpr uint32_t kProxyUid = 1337;

// Runs `fn` on a thread that entered the namespace at `netns_path`, and returns its result.
template <typename Fn>
auto inNetns(const std::string& netns_path, Fn fn) {
  decltype(fn()) out{};
  std::thread t([&] {
    int ns = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
      ADD_FAILURE() << "setns " << netns_path << ": " << std::strerror(errno);
      if (ns >= 0) ::close(ns);
      return;
    }
    ::close(ns);
    out = fn();
  });
  t.join();
  return out;
}

void setTimeouts(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// A blocking IPv4 connection in the calling thread's namespace, or -1.
int connectTo(const char* ip, uint16_t port, int timeout_ms = 3000) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  setTimeouts(fd, timeout_ms);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  ::inet_pton(AF_INET, ip, &sa.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Everything until EOF, an error or the socket's receive timeout.
std::string readAll(int fd) {
  std::string out;
  char buf[4096];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

// One request on a fresh connection; "FAILED" when it cannot connect.
std::string exchange(const char* ip, uint16_t port, std::string_view request) {
  int fd = connectTo(ip, port);
  if (fd < 0) return "FAILED";
  sendAll(fd, request);
  std::string out = readAll(fd);
  ::close(fd);
  return out;
}

size_t openFds(pid_t pid) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator(fmt::format("/proc/{}/fd", pid), ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

class ProxyAdminE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "e2e tests need root (network namespaces, iptables)";
    world_ = std::make_unique<NetnsWorld>();
    front_ = *world_->addPod("front-tomcat", kFrontIp);
    v1_ = *world_->addPod("bill-service-v1", kBillV1);
    v2_ = *world_->addPod("bill-service-v2", kBillV2);
    dir_ = makeScratchDir("remora-proxy-admin-e2e");
    ASSERT_FALSE(dir_.empty());
    config_ = dir_ + "/mesh.yaml";
    ASSERT_TRUE(installCapture(*world_, front_));
    servers_.push_back(world_->serveProbe(v1_, "0.0.0.0:80", kV1Reply, true));
    servers_.push_back(world_->serveProbe(v2_, "0.0.0.0:80", kV2Reply, true));
  }

  void TearDown() override {
    proxy_.reset();
    servers_.clear();
    world_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  void writeConfig(const std::string& text) { replaceFile(config_, text); }

  // `nofile`: start it under that descriptor limit (prlimit execs it, so the pid stays).
  void startProxy(std::vector<std::string> extra = {}, bool wait_ready = true, int nofile = 0) {
    std::vector<std::string> argv = {binaryPath("remora-proxy"), "--config", config_};
    if (nofile > 0) {
      argv.insert(argv.begin(), {"prlimit", fmt::format("--nofile={}:{}", nofile, nofile), "--"});
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    proxy_ = world_->spawn(front_, argv, kProxyUid, kProxyUid);
    ASSERT_TRUE(proxy_->waitForLine("remora-proxy started", 10000)) << proxy_->output();
    if (wait_ready) {
      ASSERT_TRUE(waitFor([&] {
        return admin("GET /ready HTTP/1.1\r\n\r\n").find("LIVE") != std::string::npos;
      })) << proxy_->output();
    }
  }

  std::string path() const { return world_->netnsPath(front_); }

  // One raw request to the admin endpoint, from inside the front pod.
  std::string admin(const std::string& request) {
    return inNetns(path(), [&] { return exchange("127.0.0.1", kAdminPort, request); });
  }
  std::string get(const std::string& target) {
    return admin(fmt::format("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", target));
  }

  // One HTTP request to the Service VIP, as the app would make it (captured, uid 0).
  std::string requestVip() {
    return inNetns(path(), [] { return exchange(kVip, kVipPort, "GET / HTTP/1.0\r\n\r\n"); });
  }

  int generation() {
    std::smatch m;
    std::string dump = get("/config_dump");
    if (std::regex_search(dump, m, std::regex("\"generation\": ([0-9]+)"))) return std::stoi(m[1]);
    return -1;
  }

  bool proxyAlive() {
    auto code = proxy_->stop(0, 100);  // signal 0: only reaps an exited process
    if (code) ADD_FAILURE() << "the proxy exited with " << *code << "\n" << proxy_->output();
    return !code.has_value();
  }

  std::unique_ptr<NetnsWorld> world_;
  Pod front_, v1_, v2_;
  std::string dir_, config_;
  std::vector<std::unique_ptr<Process>> servers_;
  std::unique_ptr<Process> proxy_;
};

// Reproduced: 3-4 overlapping connections made the accept path grow a std::vector<AdminConn>
// while the kernel still had reads pending into the old elements' buffers (SIGSEGV/SIGABRT).
TEST_F(ProxyAdminE2e, FiftyOverlappingAdminConnectionsAreAllAnswered) {
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy();
  for (int round = 0; round < 3; ++round) {
    auto answers = inNetns(path(), [] {
      std::vector<int> fds;
      for (int i = 0; i < 50; ++i) fds.push_back(connectTo("127.0.0.1", kAdminPort));
      // Every connection is accepted and has its read armed before any request arrives.
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      for (int fd : fds) {
        if (fd >= 0) sendAll(fd, "GET /ready HTTP/1.1\r\nHost: x\r\n\r\n");
      }
      std::vector<std::string> out;
      for (int fd : fds) {
        out.push_back(fd >= 0 ? readAll(fd) : "FAILED");
        if (fd >= 0) ::close(fd);
      }
      return out;
    });
    ASSERT_EQ(answers.size(), 50u);
    size_t good = 0;
    std::string first_bad;
    for (const std::string& a : answers) {
      if (a.rfind("HTTP/1.1 200 OK\r\n", 0) == 0 && a.find("LIVE") != std::string::npos) {
        ++good;
      } else if (first_bad.empty()) {
        first_bad = a.empty() ? "(nothing)" : a;
      }
    }
    EXPECT_EQ(good, 50u) << "round " << round << ", first bad answer: " << first_bad;
    ASSERT_TRUE(proxyAlive());
  }
}

// Reproduced: GET /config_dump aborted the proxy (exit 134, nlohmann type_error.316) when the
// rejected config's error text, or an accepted name, held a byte that is not UTF-8.
TEST_F(ProxyAdminE2e, ConfigDumpReplacesInvalidUtf8InsteadOfAborting) {
  // The byte reaches the dump through the file's name (config_path, and the error text of the
  // rejected empty file) and, once accepted, through a Service port name.
  config_ = dir_ + "/mesh-\xff.yaml";
  { std::ofstream empty(config_); }
  chmod(config_.c_str(), 0644);
  startProxy({}, /*wait_ready=*/false);
  std::string dump = get("/config_dump");
  EXPECT_EQ(dump.rfind("HTTP/1.1 200 OK", 0), 0u) << dump;
  EXPECT_NE(dump.find("\"ok\": false"), std::string::npos) << dump;
  EXPECT_NE(dump.find("mesh-\xef\xbf\xbd.yaml"), std::string::npos) << dump;  // U+FFFD
  ASSERT_TRUE(proxyAlive());

  std::string text = seedConfig("istio-90-10.yaml");
  auto at = text.find("  - name: http\n    port: 9999");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, std::string("  - name: http\n").size(), "  - name: http-\xff\n");
  writeConfig(text);
  ASSERT_TRUE(waitFor([&] { return generation() >= 1; })) << proxy_->output();
  dump = get("/config_dump");
  EXPECT_EQ(dump.rfind("HTTP/1.1 200 OK", 0), 0u) << dump;
  ASSERT_TRUE(proxyAlive());
}

// Reproduced: under `prlimit --nofile=48` with 40 idle admin connections the control thread
// re-armed accept at once on EMFILE and used a whole core.
TEST_F(ProxyAdminE2e, AcceptErrorsBackOffAndServiceResumes) {
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy({}, true, /*nofile=*/48);
  const pid_t pid = proxy_->pid();
  ASSERT_LT(openFds(pid), 40u);
  // 40 idle connections: the first take every descriptor left, the rest wait in the backlog.
  std::vector<int> idle = inNetns(path(), [] {
    std::vector<int> fds;
    for (int i = 0; i < 40; ++i) fds.push_back(connectTo("127.0.0.1", kAdminPort));
    return fds;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const double before = cpuSeconds(pid);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const double used = cpuSeconds(pid) - before;
  EXPECT_LT(used, 0.15) << "CPU seconds over 3 s while out of descriptors";
  for (int fd : idle) {
    if (fd >= 0) ::close(fd);
  }
  EXPECT_TRUE(waitFor([&] { return get("/ready").find("LIVE") != std::string::npos; }, 10000))
      << proxy_->output();
  EXPECT_NE(requestVip().find("bill-service"), std::string::npos);
  ASSERT_TRUE(proxyAlive());
}

// Reproduced: with a 1,024 descriptor limit, 1,141 idle admin connections stopped the outbound
// listener. The admin server's connection cap keeps its share of descriptors small.
TEST_F(ProxyAdminE2e, IdleAdminConnectionsDoNotStarveTheDataPath) {
  writeConfig(seedConfig("istio-90-10.yaml"));
  const size_t limit_fds = 200;
  startProxy({}, true, static_cast<int>(limit_fds));
  const pid_t pid = proxy_->pid();
  ASSERT_LT(openFds(pid), 50u);
  std::vector<int> idle = inNetns(path(), [] {
    std::vector<int> fds;
    for (int i = 0; i < 250; ++i) fds.push_back(connectTo("127.0.0.1", kAdminPort, 500));
    return fds;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_LT(openFds(pid), limit_fds - 20) << "the admin server holds too many descriptors";
  int ok = 0;
  for (int i = 0; i < 10; ++i) ok += requestVip().find("bill-service") != std::string::npos;
  EXPECT_EQ(ok, 10);
  for (int fd : idle) {
    if (fd >= 0) ::close(fd);
  }
  EXPECT_TRUE(waitFor([&] { return get("/ready").find("LIVE") != std::string::npos; }, 10000));
  ASSERT_TRUE(proxyAlive());
}

// Reproduced: an unfinished request held its admin connection forever, and so did a POST that
// announced a huge body. The body limit answers 413 at once; the read timeout ends the rest.
TEST_F(ProxyAdminE2e, UnfinishedRequestsAndHugeBodiesDoNotHoldConnections) {
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy();
  std::string huge = admin("POST /drain HTTP/1.1\r\nContent-Length: 1000000000\r\n\r\nx");
  EXPECT_EQ(huge.rfind("HTTP/1.1 413", 0), 0u) << huge;
  auto waited = inNetns(path(), [] {
    int fd = connectTo("127.0.0.1", kAdminPort, 30000);
    auto start = std::chrono::steady_clock::now();
    sendAll(fd, "GET /ready HTTP/1.1\r\n");  // and never the rest
    std::string out = readAll(fd);
    ::close(fd);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  });
  EXPECT_LT(waited, 20.0) << "an unfinished request held its connection";
  EXPECT_GT(waited, 1.0);
  EXPECT_NE(get("/ready").find("LIVE"), std::string::npos) << "the POST drained the proxy";
}

// Split of a config at the Service document: the first part is valid on its own (a namespace
// and pods) but routes nothing, which is what a reader sees in the middle of an in-place write.
std::pair<std::string, std::string> splitBeforeService(const std::string& text) {
  auto at = text.find("apiVersion: v1\nkind: Service\n");
  return {text.substr(0, at), text.substr(at)};
}

// Rewrites the file in place, not atomically: truncate and write the first part, close, pause,
// then append the rest. `between` runs in the pause.
void writeInPlace(const std::string& path, const std::string& text,
                  const std::function<void()>& between = {}) {
  auto [first, rest] = splitBeforeService(text);
  {
    std::ofstream out(path, std::ios::trunc);
    out << first;
  }
  if (between) between();
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  std::ofstream out(path, std::ios::app);
  out << rest;
}

// Reproduced: SIGHUP during a non-atomic write loaded the first half of the file.
TEST_F(ProxyAdminE2e, SighupDuringANonAtomicWriteLoadsOnlyTheWholeFile) {
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy();
  ASSERT_EQ(generation(), 1);
  writeInPlace(config_, seedConfig("istio-50-50.yaml"), [&] { ::kill(proxy_->pid(), SIGHUP); });
  ASSERT_TRUE(waitFor([&] { return generation() >= 2; })) << proxy_->output();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  // One reload, of the whole file: never a generation without the Service.
  EXPECT_EQ(generation(), 2) << proxy_->output();
  EXPECT_NE(get("/config_dump").find("10.1.122.241"), std::string::npos);
  EXPECT_NE(requestVip().find("bill-service"), std::string::npos);
}

// Reproduced: an empty file was accepted and passed everything through.
TEST_F(ProxyAdminE2e, AnEmptyConfigIsRefusedUnlessAllowed) {
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy();
  { std::ofstream truncate(config_, std::ios::trunc); }
  ASSERT_TRUE(waitFor([&] {
    return get("/stats/prometheus").find("remora_config_reload_failures_total 1") !=
           std::string::npos;
  })) << proxy_->output();
  EXPECT_EQ(generation(), 1);
  EXPECT_NE(get("/config_dump").find("allow-empty-config"), std::string::npos);
  EXPECT_NE(requestVip().find("bill-service"), std::string::npos);
  proxy_.reset();

  startProxy({"--allow-empty-config"}, /*wait_ready=*/false);
  EXPECT_TRUE(waitFor([&] { return get("/ready").find("LIVE") != std::string::npos; }))
      << proxy_->output();
}

// Issue #9's reload figure: the config rewritten 50 times in place (not atomically) while new
// connections flow continuously; none may fail.
TEST_F(ProxyAdminE2e, ConfigRewrittenFiftyTimesInPlaceWhileConnectionsFlow) {
  writeConfig(seedConfig("istio-90-10.yaml"));
  startProxy();
  std::atomic<bool> stop{false};
  std::atomic<int> total{0};
  std::atomic<int> failed{0};
  std::string first_failure;
  std::thread load([&] {
    inNetns(path(), [&] {
      while (!stop.load()) {
        std::string reply = exchange(kVip, kVipPort, "GET / HTTP/1.0\r\n\r\n");
        ++total;
        if (reply.find("bill-service") == std::string::npos) {
          if (failed++ == 0) first_failure = reply;
        }
      }
      return 0;
    });
  });
  for (int i = 0; i < 50; ++i) {
    writeInPlace(config_, seedConfig(i % 2 == 0 ? "istio-50-50.yaml" : "istio-90-10.yaml"), [&] {
      if (i % 5 == 0) ::kill(proxy_->pid(), SIGHUP);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  stop = true;
  load.join();
  const int reloaded = generation() - 1;
  std::printf("[ figures  ] 50 in-place rewrites: %d connections, %d failed, %d reloads\n",
              total.load(), failed.load(), reloaded);
  EXPECT_EQ(failed.load(), 0) << "first failure: " << first_failure << proxy_->output();
  EXPECT_GT(total.load(), 200);
  EXPECT_GE(reloaded, 25) << proxy_->output();
  EXPECT_NE(get("/stats/prometheus").find("remora_tcp_passthrough_total 0"), std::string::npos);
  ASSERT_TRUE(proxyAlive());
}

}  // namespace
}  // namespace remora::test
