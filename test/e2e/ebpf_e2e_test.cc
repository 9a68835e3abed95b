// remora-init --mode ebpf against the real kernel: programs attached to a cgroup v2 directory
// the test creates (never the machine's root cgroup), pins in a pin dir of its own, pods from
// NetnsWorld, real TCP through remora-probe. The test process moves itself into its cgroup first,
// so every process it starts (probes, clients) is in it; remora-init runs under nsenter --net,
// which (unlike `ip netns exec`) keeps /sys/fs/bpf and /sys/fs/cgroup visible.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>

#include "common/netns.h"
#include "common/original_dst.h"
#include "common/subprocess.h"
#include "e2e_util.h"
#include "netns_world.h"

namespace remora::test {
namespace {

constexpr const char* kVip = "10.1.122.241:9999";
constexpr const char* kVip6 = "[fd00:1::241]:9999";

// A TCP listener on 127.0.0.1:`port` (SO_REUSEADDR, backlog 4) in the calling thread's netns,
// or -1 with errno set.
int listenOnLoopback(uint16_t port) {
  int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) return -1;
  int one = 1;
  ::setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(l, 4) != 0) {
    const int err = errno;
    ::close(l);
    errno = err;
    return -1;
  }
  return l;
}

// A TCP connection to kVip from the calling thread's netns, or -1 with errno set.
int connectToVip() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(9999);
  ::inet_pton(AF_INET, "10.1.122.241", &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    const int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

bool writeFile(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  f.flush();
  return static_cast<bool>(f);
}

std::string cgroup2Root() {
  for (const char* path : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
    struct statfs fs {};
    if (::statfs(path, &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC) return path;
  }
  return {};
}

// This process's cgroup v2 path relative to the hierarchy root ("/" or "/x/y").
std::string ownCgroup() {
  std::smatch m;
  std::string text = readWholeFile("/proc/self/cgroup");
  if (std::regex_search(text, m, std::regex("(^|\n)0::([^\n]*)"))) return m[2];
  return "/";
}

class EbpfE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "e2e tests need root (BPF, cgroups, namespaces)";
    if (::access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
      GTEST_SKIP() << "kernel has no BTF (/sys/kernel/btf/vmlinux): eBPF mode cannot load";
    }
    root_ = cgroup2Root();
    if (root_.empty()) GTEST_SKIP() << "no cgroup v2 hierarchy to attach to";
    const std::string id = std::to_string(::getpid());
    cgroup_ = root_ + "/remora-ebpf-test-" + id;
    pin_dir_ = "/sys/fs/bpf/remora-test-" + id;
    ASSERT_EQ(::mkdir(cgroup_.c_str(), 0755), 0) << cgroup_ << ": " << std::strerror(errno);
    home_cgroup_ = root_ + ownCgroup();
    ASSERT_TRUE(writeFile(cgroup_ + "/cgroup.procs", std::to_string(::getpid())));
    world_ = std::make_unique<NetnsWorld>();
    front_ = *world_->addPod("front-tomcat", kFrontIp, kFrontIp6);
    v1_ = *world_->addPod("bill-service-v1", kBillV1);
    servers_.push_back(world_->serveProbe(front_, "0.0.0.0:15001", "proxy"));
    servers_.push_back(world_->serveProbe(front_, "[::]:15001", "proxy6"));
    servers_.push_back(world_->serveProbe(v1_, "0.0.0.0:80", "bill-v1"));
    servers_.push_back(world_->serveProbe(v1_, "0.0.0.0:8080", "bill-v1-8080"));
  }

  void TearDown() override {
    servers_.clear();
    world_.reset();
    // Whatever a failed test left pinned: unpinning detaches.
    std::error_code ec;
    std::filesystem::remove_all(pin_dir_, ec);
    if (!home_cgroup_.empty())
      writeFile(home_cgroup_ + "/cgroup.procs", std::to_string(::getpid()));
    if (!cgroup_.empty()) ::rmdir(cgroup_.c_str());
  }

  // remora-init in the pod's netns, with this test's cgroup and pin dir.
  CommandOutput init(const Pod& pod, std::vector<std::string> args) {
    std::vector<std::string> argv = {"nsenter", "--net=" + world_->netnsPath(pod),
                                     binaryPath("remora-init")};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--mode", "ebpf", "--bpf-pin-dir", pin_dir_});
    if (args[0] == "install") argv.insert(argv.end(), {"--cgroup", cgroup_});
    auto out = runCommand(argv, {}, std::chrono::milliseconds(20000));
    EXPECT_TRUE(out.ok());
    return out ? *out : CommandOutput{};
  }

  void install(const Pod& pod, std::vector<std::string> extra = {}) {
    extra.insert(extra.begin(), "install");
    auto out = init(pod, extra);
    ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
  }

  nlohmann::json dump(const Pod& pod) {
    auto out = init(pod, {"dump", "--json"});
    EXPECT_EQ(out.exit_code, 0) << out.err;
    return nlohmann::json::parse(out.out, nullptr, false);
  }

  void seedScenario(bool fast_path);

  // What the server at the other end said, or "FAILED".
  std::string connect(const Pod& pod, const std::string& target, uint32_t uid = 0) {
    std::vector<std::string> argv = {probePath(), "connect", target, "--timeout-ms", "1500"};
    auto out = uid ? world_->execAs(pod, uid, uid, argv) : world_->exec(pod, argv);
    if (!out || out->exit_code != 0) return "FAILED";
    return out->out;
  }

  std::string root_, cgroup_, home_cgroup_, pin_dir_;
  std::unique_ptr<NetnsWorld> world_;
  Pod front_, v1_;
  std::vector<std::unique_ptr<Process>> servers_;
};

// Polls until the kernel has freed the object with this id (freeing is deferred through RCU).
template <typename GetFd>
bool gone(GetFd get_fd, uint32_t id) {
  for (int i = 0; i < 100; ++i) {
    int fd = get_fd(id);
    if (fd < 0 && errno == ENOENT) return true;
    if (fd >= 0) ::close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  return false;
}

TEST_F(EbpfE2e, OutboundV4LandsInProxyWithOriginalDstAndNoRule) {
  install(front_);
  std::string reply = connect(front_, kVip);
  EXPECT_NE(reply.find("proxy orig=10.1.122.241:9999 local=127.0.0.1:15001"), std::string::npos)
      << reply;
  // No NAT rule anywhere in the pod: the connect itself was rewritten.
  auto nft = world_->exec(front_, {"nft", "list", "ruleset"});
  ASSERT_TRUE(nft.ok());
  EXPECT_EQ(nft->out.find_first_not_of(" \n"), std::string::npos) << nft->out;
  auto save = world_->exec(front_, {"iptables-save"});
  ASSERT_TRUE(save.ok());
  EXPECT_EQ(save->out.find("\n-A "), std::string::npos) << save->out;
  auto j = dump(front_);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["programs"].size(), 5u);  // 4 on the cgroup, sk_lookup on the netns
  EXPECT_EQ(j["netns"].size(), 1u);
  EXPECT_TRUE(j["netns"][0]["current"].get<bool>());
  EXPECT_GE(j["counters"]["redirected"].get<uint64_t>(), 1u);
  EXPECT_GE(j["counters"]["orig_dst_answered"].get<uint64_t>(), 1u);
  // The connection is closed: its record is gone (the live one shows in the fast path's test).
  EXPECT_GE(j["counters"]["orig_dst_deleted"].get<uint64_t>(), 1u) << j.dump();
}

TEST_F(EbpfE2e, OutboundV6LandsInProxyWithOriginalDst) {
  install(front_, {"--ipv6", "on"});
  std::string reply = connect(front_, kVip6);
  EXPECT_NE(reply.find("proxy6 orig=[fd00:1::241]:9999 local=[::1]:15001"), std::string::npos)
      << reply;
}

TEST_F(EbpfE2e, ProxyUidAndExclusionsBypass) {
  install(front_, {"--exclude-outbound-ports", "8080", "--exclude-outbound-cidrs",
                   std::string(kBillV1) + "/32", "--proxy-uid", "1337", "--proxy-gid", "1337"});
  // The excluded CIDR and port reach the backend directly; anything else is captured.
  EXPECT_NE(connect(front_, std::string(kBillV1) + ":80").find("bill-v1 orig=none"),
            std::string::npos);
  EXPECT_NE(connect(front_, std::string(kBillV1) + ":8080").find("bill-v1-8080"),
            std::string::npos);
  EXPECT_NE(connect(front_, "10.244.1.169:8080").find("FAILED"), std::string::npos)
      << "port 8080 is excluded: the connect goes to the (absent) address itself";
  EXPECT_NE(connect(front_, kVip).find("proxy orig=10.1.122.241:9999"), std::string::npos);
  // The proxy's uid is never captured: its connect to the VIP fails (nothing serves it).
  EXPECT_EQ(connect(front_, kVip, 1337), "FAILED");
  auto j = dump(front_);
  EXPECT_GE(j["counters"]["bypassed_uid"].get<uint64_t>(), 1u);
  EXPECT_GE(j["counters"]["excluded_cidr"].get<uint64_t>(), 1u);
  EXPECT_GE(j["counters"]["excluded_port"].get<uint64_t>(), 2u);
  // dump --trace runs the program's decision function against the live settings.
  auto t = init(front_, {"dump", "--json", "--trace", kVip, "--uid", "1337"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(nlohmann::json::parse(t.out)["verdict"], "bypass_uid") << t.out;
  t = init(front_, {"dump", "--json", "--trace", kVip, "--uid", "1000", "--gid", "1000"});
  auto tj = nlohmann::json::parse(t.out);
  EXPECT_EQ(tj["verdict"], "redirect") << t.out;
  EXPECT_EQ(tj["rewritten_to"], "127.0.0.1:15001");
  t = init(front_, {"dump", "--trace", std::string(kBillV1) + ":80", "--uid", "1000"});
  EXPECT_NE(t.out.find("excluded CIDR"), std::string::npos) << t.out;
}

TEST_F(EbpfE2e, InboundSteeredBySkLookupWithoutNat) {
  install(front_, {"--exclude-inbound-ports", "8081"});
  // The proxy listens after install, as in a pod: sockops puts its listener in the sockhash.
  servers_.push_back(world_->serveProbe(front_, "0.0.0.0:15006", "inbound"));
  servers_.push_back(world_->serveProbe(front_, "0.0.0.0:8080", "app"));
  servers_.push_back(world_->serveProbe(front_, "0.0.0.0:8081", "app-8081"));
  // No NAT: the proxy's getsockname() is the pod IP and the app port.
  std::string reply = connect(v1_, std::string(kFrontIp) + ":8080");
  EXPECT_NE(reply.find("inbound orig=none local=10.244.0.10:8080 peer=10.244.1.168:"),
            std::string::npos)
      << reply;
  EXPECT_NE(connect(v1_, std::string(kFrontIp) + ":8081").find("app-8081"), std::string::npos);
  // A port nothing listens on still reaches the proxy.
  EXPECT_NE(connect(v1_, std::string(kFrontIp) + ":7777").find("local=10.244.0.10:7777"),
            std::string::npos);
  auto j = dump(front_);
  EXPECT_GE(j["counters"]["inbound_steered"].get<uint64_t>(), 2u);
  EXPECT_GE(j["counters"]["inbound_excluded"].get<uint64_t>(), 1u);
  EXPECT_EQ(j["listeners"].size(), 1u) << j.dump();
  bool pod_ip = false;
  for (const auto& a : j["inbound_addrs"]) pod_ip |= a["address"] == kFrontIp;
  EXPECT_TRUE(pod_ip) << j.dump();
  auto nft = world_->exec(front_, {"nft", "list", "ruleset"});
  ASSERT_TRUE(nft.ok());
  EXPECT_EQ(nft->out.find_first_not_of(" \n"), std::string::npos) << nft->out;
  // Uninstall stops the steering: 8080 reaches the app itself.
  ASSERT_EQ(init(front_, {"uninstall"}).exit_code, 0);
  EXPECT_NE(connect(v1_, std::string(kFrontIp) + ":8080").find("app orig=none"), std::string::npos);
}

// The seed scenario with the real remora-proxy (uid 1337, unchanged outbound code): 90/10 exact
// through connect4 + getsockopt, and inbound through sk_lookup to the proxy's passthrough.
// `fast_path` registers the netns with --ebpf-fast-path (the proxy then takes the io_uring relay).
void EbpfE2e::seedScenario(bool fast_path) {
  servers_.clear();  // the probes on 15001 make way for the proxy
  Pod v2 = *world_->addPod("bill-service-v2", kBillV2);
  servers_.push_back(world_->serveProbe(v1_, "0.0.0.0:80", "this is bill-service-v1", true));
  servers_.push_back(world_->serveProbe(v2, "0.0.0.0:80", "hello, this is bill-service-v2", true));
  servers_.push_back(world_->serveProbe(front_, "0.0.0.0:8080", "front-app"));
  const std::string hosts_dir = "/etc/netns/" + front_.netns;
  std::filesystem::create_directories(hosts_dir);
  std::ofstream(hosts_dir + "/hosts") << "127.0.0.1 localhost\n10.1.122.241 bill-service\n";
  const std::string dir = makeScratchDir("remora-ebpf-e2e");
  ASSERT_FALSE(dir.empty());
  std::ofstream(dir + "/mesh.yaml") << seedConfig("istio-90-10.yaml");
  ::chmod((dir + "/mesh.yaml").c_str(), 0644);
  if (fast_path) {
    install(front_, {"--ebpf-fast-path", "true"});
  } else {
    install(front_);
  }
  auto proxy = world_->spawn(front_, {binaryPath("remora-proxy"), "--config", dir + "/mesh.yaml"},
                             1337, 1337);
  bool started = proxy->waitForLine("remora-proxy started", 10000);
  std::string out;
  std::string inbound;
  if (started) {
    auto r = world_->exec(front_, {"bash", "-c",
                                   "for i in $(seq 20); do curl -sS -m 3 "
                                   "http://bill-service:9999/; done"});
    out = r ? r->out + r->err : "FAILED";
    inbound = connect(v1_, std::string(kFrontIp) + ":8080");
  }
  auto j = dump(front_);
  const std::string proxy_log = proxy->output();
  proxy.reset();
  std::filesystem::remove_all(hosts_dir);
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(started) << proxy_log;
  auto count = [&](const std::string& needle) {
    size_t n = 0;
    for (size_t at = out.find(needle); at != std::string::npos; at = out.find(needle, at + 1)) ++n;
    return n;
  };
  // Exact over every window: 18 and 2 of 20.
  EXPECT_EQ(count("this is bill-service-v1"), 18u) << out;
  EXPECT_EQ(count("hello, this is bill-service-v2"), 2u) << out;
  // The app saw the proxy's passthrough (from 127.0.0.6) on its own port.
  EXPECT_NE(inbound.find("front-app orig=none local=10.244.0.10:8080 peer=127.0.0.6:"),
            std::string::npos)
      << inbound;
  EXPECT_GE(j["counters"]["orig_dst_answered"].get<uint64_t>(), 21u) << j.dump();
  EXPECT_GE(j["counters"]["inbound_steered"].get<uint64_t>(), 1u);
  if (fast_path) {
    // Each curl's request went into the proxy's socket through sk_msg (or TCP, when the proxy's
    // end was not in the sockhash yet), and so did the inbound app's reply; the proxy's 20
    // responses took TCP.
    const auto& c = j["counters"];
    EXPECT_GE(c["msg_redirected"].get<uint64_t>() + c["msg_slow"].get<uint64_t>(), 21u) << c;
    EXPECT_GE(c["msg_redirected"].get<uint64_t>(), 1u) << c;
    EXPECT_GE(c["msg_to_app"].get<uint64_t>(), 20u) << c;
  } else {
    EXPECT_EQ(j["counters"]["pair_added"].get<uint64_t>(), 0u);
  }
}

TEST_F(EbpfE2e, SeedScenarioThroughTheRealProxy) { seedScenario(false); }

TEST_F(EbpfE2e, SeedScenarioThroughTheRealProxyWithTheFastPath) { seedScenario(true); }

// The original-destination records live as long as the connection: sockops deletes them when
// the app's socket reaches TCP_CLOSE, so after many short connections the maps are empty again.
TEST_F(EbpfE2e, OrigDstRecordsAreDeletedWhenConnectionsClose) {
  install(front_);
  constexpr int kConnections = 30;
  for (int i = 0; i < kConnections; ++i) {
    std::string reply = connect(front_, kVip);
    ASSERT_NE(reply.find("proxy orig=10.1.122.241:9999"), std::string::npos)
        << "connection " << i << ": " << reply << "\n"
        << dump(front_).dump();
  }
  auto j = dump(front_);
  for (int i = 0; i < 100; ++i) {
    if (j["orig_dst"].empty() && j["pending_connects"] == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    j = dump(front_);
  }
  EXPECT_TRUE(j["orig_dst"].empty()) << j["orig_dst"].size() << " live: " << j.dump();
  EXPECT_EQ(j["pending_connects"], 0u) << j.dump();
  EXPECT_GE(j["counters"]["orig_dst_deleted"].get<uint64_t>(), uint64_t{kConnections});
  EXPECT_GE(j["counters"]["orig_dst_answered"].get<uint64_t>(), uint64_t{kConnections});

  // An app that writes and closes before the proxy's accept: its orphaned socket closes as soon as
  // its FIN is acked, yet the proxy still reads the original destination, and that read deletes
  // the record.
  servers_.clear();
  const std::string ns = world_->netnsPath(front_);
  int listener = -1;
  ASSERT_TRUE(runInNetns(ns, [&]() -> Result<void> {
    listener = listenOnLoopback(15001);
    if (listener < 0) return errnoError("listen 15001");
    int c = connectToVip();
    if (c < 0) return errnoError("connect");
    (void)::send(c, "bye", 3, MSG_NOSIGNAL);
    ::close(c);
    return {};
  }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  int accepted = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(accepted, 0);
  auto orig = originalDestination(accepted, Family::kIpv4);
  ASSERT_TRUE(orig.ok()) << orig.error().message;
  EXPECT_EQ(orig->toString(), "10.1.122.241:9999");
  ::close(accepted);
  ::close(listener);
  j = dump(front_);
  EXPECT_TRUE(j["orig_dst"].empty()) << j.dump();
}

// Writes all of `data` to `fd`; false on error.
bool writeAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// Reads until EOF (or `limit` bytes); nullopt on error.
std::optional<std::string> readToEof(int fd, size_t limit = size_t{64} << 20) {
  std::string got;
  char buf[65536];
  while (got.size() < limit) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// readToEof as an event-driven app reads: waits in poll() for POLLIN, then reads without
// blocking; an EAGAIN goes back to poll(). nullopt on error, or when nothing comes for 10 s.
std::optional<std::string> pollToEof(int fd) {
  std::string got;
  char buf[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, 10000);
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) errno = ETIMEDOUT;
    if (ready <= 0) return std::nullopt;
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) return got;
    got.append(buf, static_cast<size_t>(n));
  }
}

// sockops + sk_msg: the app's connection to the proxy (here an echo server on the outbound port,
// in the test process) has both sockets in the fast path's sockhash while it lives; sk_msg
// carries every byte the app sends straight into the proxy's socket, and the proxy's replies take
// loopback TCP (docs/EBPF.md, "The fast path"): a small exchange, then 4 MiB each way, read while
// written, with the app's half-close from its writing thread while its reading thread waits in
// poll(), as an event-driven app does (a thread blocked in recv at that moment can get EAGAIN:
// DISABLED_FastPathReaderBlockedBeforeItsOwnHalfCloseGetsTheReply). The counters prove the app's
// bytes did not cross loopback TCP; the app's socket leaves the sockhash at its FIN, and the
// sockhash is empty after close. With a blocking reader and before the close fix it failed in 18
// of 30 runs on 2026-12-01: the app's recv after its half-close ended in EAGAIN.
TEST_F(EbpfE2e, FastPathCarriesAppProxyBytesBothWaysAndForgetsClosedSockets) {
  install(front_, {"--outbound-port", "15101", "--ebpf-fast-path", "true"});
  const std::string ns = world_->netnsPath(front_);
  std::promise<void> listening, accepted;
  std::string echoed_error;
  std::thread echo([&] {
    auto r = runInNetns(ns, [&]() -> Result<void> {
      int l = listenOnLoopback(15101);
      if (l < 0) {
        listening.set_value();
        return errnoError("echo listen");
      }
      listening.set_value();
      int c = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
      ::close(l);
      accepted.set_value();
      if (c < 0) return errnoError("echo accept");
      char buf[65536];
      for (;;) {
        ssize_t n = ::recv(c, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (!writeAll(c, buf, static_cast<size_t>(n))) break;
      }
      ::shutdown(c, SHUT_WR);  // the app's half-close, passed on after the last echoed byte
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      ::close(c);
      return {};
    });
    if (!r) echoed_error = r.error().message;
  });
  listening.get_future().wait();
  int fd = -1;
  ASSERT_TRUE(runInNetns(ns, [&]() -> Result<void> {
    fd = connectToVip();
    if (fd < 0) return errnoError("connect");
    return {};
  }));
  accepted.get_future().wait();
  // Small, both ways.
  ASSERT_TRUE(writeAll(fd, "hello", 5));
  char small[5] = {};
  size_t got_small = 0;
  while (got_small < 5) {
    ssize_t n = ::recv(fd, small + got_small, 5 - got_small, 0);
    ASSERT_GT(n, 0);
    got_small += static_cast<size_t>(n);
  }
  EXPECT_EQ(std::string(small, 5), "hello");
  auto j = dump(front_);
  EXPECT_EQ(j["fast_path"]["sockets"], 2u) << j.dump();
  // The open connection's original destination is live in dump.
  bool found = false;
  for (const auto& e : j["orig_dst"]) found |= e["original"] == "10.1.122.241:9999";
  EXPECT_TRUE(found) << j.dump();
  EXPECT_TRUE(j["netns"][0]["fast_path"].get<bool>());
  // 4 MiB each way, written and read at once, then the app's half-close.
  std::string payload(size_t{4} << 20, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>((i * 7919) >> 3);
  std::thread writer([&] {
    EXPECT_TRUE(writeAll(fd, payload.data(), payload.size()));
    ::shutdown(fd, SHUT_WR);
  });
  auto echoed = pollToEof(fd);
  const int read_errno = errno;
  writer.join();
  if (!echoed) {
    // The echo may be blocked on the socket nobody reads now: a reset ends it.
    linger reset{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  }
  ::close(fd);
  echo.join();
  EXPECT_TRUE(echoed_error.empty()) << echoed_error;
  ASSERT_TRUE(echoed.has_value()) << "the app's read failed: " << std::strerror(read_errno);
  EXPECT_EQ(echoed->size(), payload.size());
  EXPECT_TRUE(*echoed == payload) << "the echoed stream differs";
  j = dump(front_);
  const uint64_t carried = payload.size() + 5;  // the app's bytes; the echo's took loopback TCP
  EXPECT_GE(j["counters"]["msg_bytes"].get<uint64_t>(), carried) << j.dump();
  EXPECT_GE(j["counters"]["msg_to_app"].get<uint64_t>(), uint64_t{1}) << j.dump();
  EXPECT_EQ(j["counters"]["msg_slow"].get<uint64_t>(), 0u) << j.dump();
  EXPECT_EQ(j["counters"]["pair_released"].get<uint64_t>(), 1u) << j.dump();
  for (int i = 0; i < 100 && j["fast_path"]["sockets"] != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    j = dump(front_);
  }
  EXPECT_EQ(j["fast_path"]["sockets"], 0u) << j.dump();
  // Off (the default): no socket joins the sockhash.
  install(front_, {"--outbound-port", "15101"});
  j = dump(front_);
  EXPECT_FALSE(j["netns"][0]["fast_path"].get<bool>());
  const uint64_t added = j["counters"]["pair_added"];
  servers_.push_back(world_->serveProbe(front_, "127.0.0.1:15101", "proxy-slow"));
  EXPECT_NE(connect(front_, kVip).find("proxy-slow orig=10.1.122.241:9999"), std::string::npos);
  EXPECT_EQ(dump(front_)["counters"]["pair_added"], added);
}

// remora-probe's client connects, sends a word, half-closes at once and reads (blocking, with
// SO_RCVTIMEO); the probe server (on the outbound port, in the proxy's place) writes one short
// line and closes. Every connection must get its line. Before the close fix (docs/EBPF.md,
// "Close") 1 to 6 of 60 failed on 6.18, their read ending in EAGAIN long before the timeout (the
// ACK of the app's FIN woke tcp_bpf_recvmsg with nothing queued); with the fast path off, none.
TEST_F(EbpfE2e, FastPathKeepsAShortReplyFollowedByClose) {
  install(front_, {"--outbound-port", "15101", "--ebpf-fast-path", "true", "--ipv6", "on"});
  servers_.push_back(world_->serveProbe(front_, "127.0.0.1:15101", "fast"));
  servers_.push_back(world_->serveProbe(front_, "[::1]:15101", "fast6"));
  // 60 over IPv4, then 20 over IPv6 (the v6 pair keys and the app's end found by ::1).
  constexpr int kConnections = 60;
  constexpr int kConnections6 = 20;
  std::vector<std::string> lost;
  for (int i = 0; i < kConnections + kConnections6; ++i) {
    const bool v6 = i >= kConnections;
    auto out = world_->exec(front_, {probePath(), "connect", v6 ? kVip6 : kVip, "--send", "ping",
                                     "--timeout-ms", "1500"});
    std::string said = out ? out->out + out->err : out.error().message;
    if (said.find(v6 ? "fast6 orig=[fd00:1::241]:9999" : "fast orig=10.1.122.241:9999") ==
        std::string::npos) {
      lost.push_back(std::to_string(i) + ": \"" + said + "\"");
    }
  }
  auto j = dump(front_);
  std::string first_lost;
  for (size_t i = 0; i < lost.size() && i < 5; ++i) first_lost += lost[i] + "; ";
  EXPECT_TRUE(lost.empty()) << lost.size() << " of " << kConnections + kConnections6
                            << " connections lost their reply: " << first_lost << "\n"
                            << j["counters"].dump();
  // Each app sent once: through the fast path, or through TCP when the proxy's end was not in the
  // sockhash yet (ordering); every reply took TCP.
  const auto& c = j["counters"];
  const uint64_t all = kConnections + kConnections6;
  EXPECT_GE(c["msg_redirected"].get<uint64_t>(), uint64_t{1}) << c.dump();
  EXPECT_EQ(c["msg_redirected"].get<uint64_t>() + c["msg_slow"].get<uint64_t>(), all) << c.dump();
  EXPECT_EQ(c["msg_to_app"].get<uint64_t>(), all) << c.dump();
  EXPECT_EQ(c["pair_added"].get<uint64_t>(), 2 * all) << c.dump();
}

// The fast path's remaining limit at close (docs/EBPF.md, "What is still wrong"), registered
// disabled: with the fast path on it failed 5 of 5 runs before the close fix and 10 of 10 after
// it; with the fast path off it passes. The app's reading thread is already blocked in recv, with
// nothing queued, when its writing thread half-closes; the proxy (here the test's server on the
// outbound port) reads to EOF and replies only once the app's FIN has been acknowledged on its own
// (the app's socket is in FIN_WAIT2, as when the proxy waits for a slow upstream). That ACK wakes
// the blocked reader, and the app socket's recvmsg (tcp_bpf_recvmsg, the kernel's for a socket with
// a psock) returns EAGAIN to a blocking reader woken with nothing queued. The close fix cannot
// reach a reader that entered recv before the half-close. Run it with
// --gtest_also_run_disabled_tests.
TEST_F(EbpfE2e, DISABLED_FastPathReaderBlockedBeforeItsOwnHalfCloseGetsTheReply) {
  const std::string ns = world_->netnsPath(front_);
  // The reply the app's reader got before EOF, or what went wrong.
  auto exchange = [&]() -> std::string {
    std::promise<void> listening;
    std::atomic<int> listen_fd{-1};
    std::atomic<int> app_fd{-1};
    std::string server_error;
    std::thread server([&] {
      auto r = runInNetns(ns, [&]() -> Result<void> {
        int l = listenOnLoopback(15101);
        const bool ok = l >= 0;
        listen_fd = l;
        listening.set_value();
        if (!ok) return errnoError("listen");
        int c = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
        ::close(l);
        if (c < 0) return errnoError("accept");
        if (!readToEof(c)) return errnoError("server read");
        // Wait for the app's FIN to be acknowledged on its own (no reply has been sent yet).
        tcp_info info{};
        for (int i = 0; i < 500; ++i) {
          socklen_t len = sizeof(info);
          ::getsockopt(app_fd.load(), IPPROTO_TCP, TCP_INFO, &info, &len);
          if (info.tcpi_state == TCP_FIN_WAIT2) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (info.tcpi_state != TCP_FIN_WAIT2)
          return makeError("the app's FIN was never acknowledged");
        bool wrote = writeAll(c, "reply", 5);
        ::close(c);
        if (!wrote) return errnoError("server write");
        return {};
      });
      if (!r) server_error = r.error().message;
    });
    listening.get_future().wait();
    int fd = -1;
    auto connected = runInNetns(ns, [&]() -> Result<void> {
      fd = connectToVip();
      if (fd < 0) return errnoError("connect");
      return {};
    });
    if (!connected) {
      ::shutdown(listen_fd.load(), SHUT_RDWR);  // ends the server's accept
      server.join();
      return connected.error().message;
    }
    app_fd = fd;
    std::atomic<pid_t> reader_tid{0};
    std::optional<std::string> got;
    std::string read_error;
    std::thread reader([&] {
      reader_tid = static_cast<pid_t>(::syscall(SYS_gettid));
      got = readToEof(fd);
      if (!got) read_error = std::strerror(errno);
    });
    // Half-close only once the reader is blocked in recv.
    while (reader_tid.load() == 0) std::this_thread::yield();
    const std::string wchan = "/proc/self/task/" + std::to_string(reader_tid.load()) + "/wchan";
    for (int i = 0; i < 500 && readWholeFile(wchan) != "wait_woken"; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    EXPECT_EQ(readWholeFile(wchan), "wait_woken");
    EXPECT_TRUE(writeAll(fd, "hello", 5));
    ::shutdown(fd, SHUT_WR);
    reader.join();
    server.join();
    ::close(fd);
    if (!server_error.empty()) return "server: " + server_error;
    return got ? *got : "read: " + read_error;
  };
  install(front_, {"--outbound-port", "15101", "--ebpf-fast-path", "true"});
  EXPECT_EQ(exchange(), "reply") << "with the fast path on";
  install(front_, {"--outbound-port", "15101"});
  EXPECT_EQ(exchange(), "reply") << "with the fast path off";
}

// The fast path and the proxy's kernel relay exclude each other: where the netns is registered
// with --ebpf-fast-path, remora-proxy --relay kernel refuses to start naming both, and --relay
// auto takes the io_uring relay and says why in its log and /config_dump.
TEST_F(EbpfE2e, FastPathAndKernelRelayAreRefusedTogether) {
  servers_.clear();  // the probes on 15001 make way for the proxy
  const std::string dir = makeScratchDir("remora-ebpf-relay");
  ASSERT_FALSE(dir.empty());
  std::ofstream(dir + "/mesh.yaml") << seedConfig("istio-90-10.yaml");
  install(front_, {"--ebpf-fast-path", "true"});
  // nsenter, not `ip netns exec`, which remounts /sys and hides the pins.
  const std::string proxy = binaryPath("remora-proxy") + " --config " + dir +
                            "/mesh.yaml --bpf-pin-dir " + pin_dir_ + " --relay";
  auto inPod = [&](const std::string& script) {
    auto out = runCommand({"nsenter", "--net=" + world_->netnsPath(front_), "bash", "-c", script},
                          {}, std::chrono::milliseconds(20000));
    EXPECT_TRUE(out.ok());
    return out ? *out : CommandOutput{};
  };
  auto refused = inPod(proxy + " kernel 2>&1");
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_NE(refused.out.find("--ebpf-fast-path"), std::string::npos) << refused.out;
  EXPECT_NE(refused.out.find("--relay kernel"), std::string::npos) << refused.out;
  const std::string run_auto = proxy + " auto >" + dir +
                               "/log 2>&1 & for i in $(seq 50); do sleep 0.1; curl -sf -m 2 "
                               "http://127.0.0.1:15000/config_dump && break; done; kill $!; "
                               "wait; cat " +
                               dir + "/log >&2";
  auto fell_back = inPod(run_auto);
  EXPECT_NE(fell_back.err.find("relay: io_uring; the kernel relay is unavailable: the eBPF fast "
                               "path (remora-init --ebpf-fast-path) is on"),
            std::string::npos)
      << fell_back.err;
  auto j = nlohmann::json::parse(fell_back.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << fell_back.out << fell_back.err;
  EXPECT_EQ(j["relay"]["in_use"], "uring") << j["relay"].dump();
  EXPECT_NE(j["relay"]["kernel_unavailable"].get<std::string>().find("--ebpf-fast-path"),
            std::string::npos)
      << j["relay"].dump();
  // Without the fast path the check stands aside (auto still falls back here: no relay pins).
  install(front_);
  auto plain = inPod(run_auto);
  EXPECT_EQ(plain.err.find("--ebpf-fast-path"), std::string::npos) << plain.err;
  EXPECT_NE(plain.err.find("remora-proxy started"), std::string::npos) << plain.err;
  std::filesystem::remove_all(dir);
}

// Where sk_lookup cannot be used (forced here: REMORA_EBPF_FORCE_HYBRID pretends the probe
// failed), install takes iptables mode's inbound rules instead of failing: outbound stays eBPF's
// (no REMORA_REDIRECT jump), inbound is REDIRECTed to 15006 (the proxy reads SO_ORIGINAL_DST from
// conntrack), dump says "iptables (hybrid)", and uninstall removes the rules too.
TEST_F(EbpfE2e, HybridFallbackTakesIptablesInboundWhereSkLookupIsUnavailable) {
  const std::vector<std::string> base = {"nsenter", "--net=" + world_->netnsPath(front_), "env",
                                         "REMORA_EBPF_FORCE_HYBRID=1", binaryPath("remora-init")};
  auto run = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = base;
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--mode", "ebpf", "--bpf-pin-dir", pin_dir_});
    auto out = runCommand(argv, {}, std::chrono::milliseconds(20000));
    return out ? *out : CommandOutput{};
  };
  auto out = run({"install", "--cgroup", cgroup_});
  ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
  EXPECT_NE((out.out + out.err).find("hybrid"), std::string::npos) << out.out << out.err;
  servers_.push_back(world_->serveProbe(front_, "0.0.0.0:15006", "inbound"));
  servers_.push_back(world_->serveProbe(front_, "0.0.0.0:8080", "app"));
  // Inbound through the REDIRECT: the original destination is the pod IP and app port.
  std::string reply = connect(v1_, std::string(kFrontIp) + ":8080");
  EXPECT_NE(reply.find("inbound orig=10.244.0.10:8080 local=10.244.0.10:15006"), std::string::npos)
      << reply;
  // Outbound is still the connect hook's.
  EXPECT_NE(connect(front_, kVip).find("proxy orig=10.1.122.241:9999 local=127.0.0.1:15001"),
            std::string::npos);
  auto save = world_->exec(front_, {"iptables-save", "-t", "nat"});
  ASSERT_TRUE(save.ok());
  EXPECT_NE(save->out.find("-A PREROUTING -p tcp -j REMORA_INBOUND"), std::string::npos)
      << save->out;
  EXPECT_EQ(save->out.find("-j REMORA_REDIRECT"), std::string::npos) << save->out;
  auto j = dump(front_);
  ASSERT_EQ(j["netns"].size(), 1u) << j.dump();
  EXPECT_EQ(j["netns"][0]["inbound"], "iptables (hybrid)") << j.dump();
  EXPECT_EQ(j["programs"].size(), 4u) << j.dump();  // no sk_lookup link
  EXPECT_EQ(j["counters"]["inbound_steered"], 0u);
  auto text = init(front_, {"dump"});
  EXPECT_NE(text.out.find("iptables rules: hybrid"), std::string::npos) << text.out;
  // Uninstall removes the hybrid's rules with the registration.
  out = run({"uninstall"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  save = world_->exec(front_, {"iptables-save", "-t", "nat"});
  ASSERT_TRUE(save.ok());
  EXPECT_EQ(save->out.find("REMORA_"), std::string::npos) << save->out;
  EXPECT_FALSE(std::filesystem::exists(pin_dir_));
  EXPECT_NE(connect(v1_, std::string(kFrontIp) + ":8080").find("app orig=none"), std::string::npos);
}

TEST_F(EbpfE2e, UnmeshedNetnsIsUntouched) {
  install(front_);
  // Same cgroup, same programs, but v1's netns is not registered.
  servers_.push_back(world_->serveProbe(v1_, "0.0.0.0:15001", "v1-local-15001"));
  EXPECT_NE(connect(v1_, std::string(kBillV1) + ":80").find("bill-v1 orig=none"),
            std::string::npos);
  EXPECT_EQ(connect(v1_, kVip), "FAILED");
  auto t = init(v1_, {"dump", "--json", "--trace", kVip});
  EXPECT_EQ(nlohmann::json::parse(t.out)["verdict"], "not_meshed") << t.out;
}

TEST_F(EbpfE2e, UninstallIsRefcountedAndLeavesNothing) {
  install(front_);
  install(v1_);
  auto j = dump(front_);
  ASSERT_EQ(j["netns"].size(), 2u);
  std::vector<uint32_t> progs, links, maps;
  for (const auto& p : j["programs"]) {
    progs.push_back(p["prog_id"]);
    links.push_back(p["link_id"]);
  }
  for (const auto& m : j["map_ids"]) maps.push_back(m);
  ASSERT_EQ(progs.size(), 6u);  // 4 on the cgroup, sk_lookup on each netns
  ASSERT_EQ(maps.size(), 9u);   // ebpf_pins.h's kMapPins
  // One meshed netns left: everything stays attached and it is still captured.
  auto out = init(v1_, {"uninstall"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_TRUE(std::filesystem::exists(pin_dir_ + "/link_connect4"));
  EXPECT_NE(connect(front_, kVip).find("proxy orig=10.1.122.241:9999"), std::string::npos);
  out = init(front_, {"uninstall"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_FALSE(std::filesystem::exists(pin_dir_));
  for (uint32_t id : progs) EXPECT_TRUE(gone(bpf_prog_get_fd_by_id, id)) << "prog " << id;
  for (uint32_t id : links) EXPECT_TRUE(gone(bpf_link_get_fd_by_id, id)) << "link " << id;
  for (uint32_t id : maps) EXPECT_TRUE(gone(bpf_map_get_fd_by_id, id)) << "map " << id;
  EXPECT_EQ(connect(front_, kVip), "FAILED");
  // A second uninstall has nothing to do and says so.
  out = init(front_, {"uninstall"});
  EXPECT_EQ(out.exit_code, 0) << out.err;
}

// Makes the attached programs look like another build's: map_meta records a build that is not
// this binary's (what a node agent upgraded under meshed pods finds).
void recordOtherBuild(const std::string& pin_dir) {
  int meta = bpf_obj_get((pin_dir + "/map_meta").c_str());
  ASSERT_GE(meta, 0) << "map_meta: " << std::strerror(errno);
  const uint32_t key = 0;
  const uint64_t other_build = 0x0123456789abcdefULL;
  EXPECT_EQ(bpf_map_update_elem(meta, &key, &other_build, BPF_ANY), 0);
  ::close(meta);
}

std::set<uint32_t> progIds(const nlohmann::json& dump) {
  std::set<uint32_t> ids;
  for (const auto& p : dump["programs"]) ids.insert(p["prog_id"].get<uint32_t>());
  return ids;
}

TEST_F(EbpfE2e, AnotherBuildsProgramsAreUpgradedInPlace) {
  install(front_);
  auto before = dump(front_);
  ASSERT_EQ(before["build_is_this_binary"], true) << before.dump();
  recordOtherBuild(pin_dir_);
  ASSERT_EQ(dump(front_)["build_is_this_binary"], false);
  std::set<uint32_t> links;
  for (const auto& p : before["programs"]) links.insert(p["link_id"].get<uint32_t>());

  // The next install (another pod) switches every link to this build's programs.
  auto out = init(v1_, {"install"});
  ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
  EXPECT_NE(out.out.find("upgraded the programs pinned in " + pin_dir_), std::string::npos)
      << out.out;
  auto after = dump(front_);
  EXPECT_EQ(after["build_is_this_binary"], true) << after.dump();
  ASSERT_EQ(after["netns"].size(), 2u) << "the meshed netns stays registered";
  std::set<uint32_t> new_progs = progIds(after);
  for (uint32_t id : progIds(before)) {
    EXPECT_EQ(new_progs.count(id), 0u) << "link still runs old program " << id;
    EXPECT_TRUE(gone(bpf_prog_get_fd_by_id, id)) << "old program " << id << " not freed";
  }
  for (const auto& p : after["programs"]) {
    if (p["attach"] == "sk_lookup" && links.count(p["link_id"].get<uint32_t>()) == 0) continue;
    EXPECT_EQ(links.count(p["link_id"].get<uint32_t>()), 1u) << "a link was replaced: " << p;
  }
  // Both netns are captured by the new programs, the first one's records and settings kept.
  EXPECT_NE(connect(front_, kVip).find("proxy orig=10.1.122.241:9999"), std::string::npos);
  servers_.push_back(world_->serveProbe(v1_, "0.0.0.0:15001", "v1-proxy"));
  EXPECT_NE(connect(v1_, kVip).find("v1-proxy orig=10.1.122.241:9999"), std::string::npos);
  // The same build again: nothing to upgrade.
  out = init(front_, {"install"});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_EQ(out.out.find("upgraded"), std::string::npos) << out.out;
  EXPECT_EQ(progIds(dump(front_)), new_progs);
}

TEST_F(EbpfE2e, AnotherBuildsMapOfAnotherShapeIsRefusedAndNothingChanges) {
  install(front_);
  auto before = dump(front_);
  recordOtherBuild(pin_dir_);
  // The other build's map_pairs_slow holds 2-byte values.
  const std::string slow = pin_dir_ + "/map_pairs_slow";
  ASSERT_EQ(::unlink(slow.c_str()), 0);
  int other = bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "other", 48, 2, 64, nullptr);
  ASSERT_GE(other, 0) << std::strerror(errno);
  ASSERT_EQ(bpf_obj_pin(other, slow.c_str()), 0);
  ::close(other);
  auto out = init(v1_, {"install"});
  EXPECT_NE(out.exit_code, 0);
  EXPECT_NE(out.err.find("map_pairs_slow has type"), std::string::npos) << out.err;
  EXPECT_NE(out.err.find("uninstall every meshed netns"), std::string::npos) << out.err;
  auto after = dump(front_);
  EXPECT_EQ(progIds(after), progIds(before));
  EXPECT_EQ(after["netns"].size(), 1u);
  EXPECT_EQ(after["build_is_this_binary"], false);
  EXPECT_FALSE(std::filesystem::exists(pin_dir_ + "/prog_sk_lookup_new"));
  EXPECT_NE(connect(front_, kVip).find("proxy orig=10.1.122.241:9999"), std::string::npos);
}

TEST_F(EbpfE2e, FailedInstallLeavesNothingAttachedOrPinned) {
  // Something else already holds one of the pin names: install must fail after attaching and
  // pinning part of its state, and undo exactly that part.
  ASSERT_EQ(::mkdir(pin_dir_.c_str(), 0700), 0);
  int squatter = bpf_map_create(BPF_MAP_TYPE_ARRAY, "squatter", 4, 4, 1, nullptr);
  ASSERT_GE(squatter, 0);
  ASSERT_EQ(bpf_obj_pin(squatter, (pin_dir_ + "/link_sockops").c_str()), 0);
  ::close(squatter);
  auto out = init(front_, {"install"});
  EXPECT_NE(out.exit_code, 0);
  EXPECT_NE(out.err.find("link_sockops"), std::string::npos) << out.err;
  for (const char* pin :
       {"link_connect4", "link_connect6", "link_getsockopt", "prog_sk_lookup", "map_netns"}) {
    EXPECT_FALSE(std::filesystem::exists(pin_dir_ + "/" + pin)) << pin;
  }
  EXPECT_TRUE(std::filesystem::exists(pin_dir_ + "/link_sockops"));
  int cg = ::open(cgroup_.c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(cg, 0);
  for (auto type : {BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT, BPF_CGROUP_GETSOCKOPT,
                    BPF_CGROUP_SOCK_OPS}) {
    __u32 count = 0;
    ASSERT_EQ(bpf_prog_query(cg, type, 0, nullptr, nullptr, &count), 0);
    EXPECT_EQ(count, 0u) << "attach type " << type;
  }
  ::close(cg);
  EXPECT_EQ(connect(front_, kVip), "FAILED");
  // A directory that is not cgroup v2 is named in the error, and nothing is created.
  std::filesystem::remove_all(pin_dir_);
  auto bad =
      runCommand({"nsenter", "--net=" + world_->netnsPath(front_), binaryPath("remora-init"),
                  "install", "--mode", "ebpf", "--bpf-pin-dir", pin_dir_, "--cgroup", "/proc"});
  ASSERT_TRUE(bad.ok());
  EXPECT_NE(bad->exit_code, 0);
  EXPECT_NE(bad->err.find("not a cgroup v2 directory"), std::string::npos) << bad->err;
  EXPECT_FALSE(std::filesystem::exists(pin_dir_));
}

}  // namespace
}  // namespace remora::test
