// The kernel relay (docs/PROXY.md, "Kernel relay") end to end, in the test's own netns world:
// remora-init pins the relay for uid 1337, remora-proxy runs as uid 1337 without capabilities
// with --relay kernel, and connections from the front pod to a backend pod (an in-process server
// whose first byte picks its behaviour) are relayed by the kernel. Skipped, with the reason, only
// when this kernel cannot load the relay.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <vector>

#include "e2e_util.h"
#include "netns_world.h"
#include "tcp_backend.h"

namespace remora::test {
namespace {

// The proxy and this test are built together, so this says whether the proxy's memory carries
// AddressSanitizer's shadow and quarantine.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
constexpr bool kAddressSanitizer = __has_feature(address_sanitizer);
#else
constexpr bool kAddressSanitizer = false;
#endif

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char* kBackendIp = "10.244.3.3";
constexpr uint16_t kBackendPort = 8080;
constexpr uint32_t kProxyUid = 1337;
constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kOtherBuild = 0x0123456789abcdefULL;

// The byte at offset i of every generated stream: a position-dependent pattern, so a lost,
// duplicated or reordered block shows at its offset.
char patternAt(uint64_t i) { return static_cast<char>((i * 131 + (i >> 16)) & 0xff); }

void fillPattern(uint64_t offset, char* out, size_t n) {
  for (size_t k = 0; k < n; ++k) out[k] = patternAt(offset + k);
}

// The first offset in [offset, offset + n) that breaks the pattern, or -1.
int64_t checkPattern(uint64_t offset, const char* in, size_t n) {
  for (size_t k = 0; k < n; ++k) {
    if (in[k] != patternAt(offset + k)) return static_cast<int64_t>(offset + k);
  }
  return -1;
}

// For a wrong byte at stream offset `at`: which stream offset the bytes that arrived there
// came from (a duplicated block reads as a negative shift, a lost one as a positive shift).
std::string describeShift(uint64_t at, const char* got, size_t n) {
  const size_t probe = std::min<size_t>(n, 64);
  if (probe < 16) return "too few bytes to tell where they came from";
  constexpr int64_t kReach = int64_t{8} << 20;
  for (int64_t shift = -kReach; shift <= kReach; ++shift) {
    const int64_t from = static_cast<int64_t>(at) + shift;
    if (from < 0 || shift == 0) continue;
    if (checkPattern(static_cast<uint64_t>(from), got, probe) < 0) {
      return fmt::format("the bytes there are stream offset {} (shift {:+})", from, shift);
    }
  }
  return "the bytes there are from no offset within 8 MiB";
}

bool writeU64(int fd, uint64_t v) { return sendAll(fd, {reinterpret_cast<const char*>(&v), 8}); }

bool readExact(int fd, char* into, size_t size) {
  while (size > 0) {
    ssize_t n = ::recv(fd, into, size, 0);
    if (n <= 0) return false;
    into += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// Sends `size` pattern bytes (stream offsets from `from`).
bool sendPattern(int fd, uint64_t size, uint64_t from = 0) {
  std::vector<char> block(1 << 20);
  for (uint64_t off = 0; off < size;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(block.size(), size - off));
    fillPattern(from + off, block.data(), n);
    if (!sendAll(fd, {block.data(), n})) return false;
    off += n;
  }
  return true;
}

// Reads exactly `size` pattern bytes (stream offsets from `from`); an error text, empty when
// all arrived intact.
std::string receivePattern(int fd, uint64_t size, uint64_t from = 0) {
  std::vector<char> block(1 << 20);
  for (uint64_t off = from; off < from + size;) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(block.size(), from + size - off));
    ssize_t n = ::recv(fd, block.data(), want, 0);
    if (n <= 0)
      return fmt::format("stream ended at {} of {} ({})", off, from + size, std::strerror(errno));
    if (int64_t bad = checkPattern(off, block.data(), static_cast<size_t>(n)); bad >= 0) {
      return fmt::format(
          "byte {} is wrong ({})", bad,
          describeShift(static_cast<uint64_t>(bad),
                        block.data() + (static_cast<uint64_t>(bad) - off),
                        static_cast<size_t>(n) - (static_cast<uint64_t>(bad) - off)));
    }
    off += static_cast<uint64_t>(n);
  }
  return {};
}

// The backend. First byte:
//   'U' upload: 8-byte size, that many pattern bytes, then EOF; answers "OK" or "BAD", then FIN;
//   'D' download: 8-byte size; sends that many pattern bytes, FIN, then counts what still comes
//       until the client's FIN (late_bytes);
//   'R' sends "hello", then resets; 'W' waits for the client's reset (last_errno);
//   'S' streams the pattern until the connection fails (streamed, last_errno);
//   'E' echo until EOF, then FIN (last_errno: a failed read's or send's errno);
//   'Q' requests: each 8-byte size asks for that many pattern bytes (offsets from 0);
//       kResetRequest resets the connection (last_errno: a failed read's errno);
//       kStreamRequest streams the pattern from offset 0 as 'S' does.
constexpr uint64_t kResetRequest = ~uint64_t{0};
constexpr uint64_t kStreamRequest = ~uint64_t{1};

class Backend {
 public:
  explicit Backend(const std::string& netns_path)
      : server_(netns_path, kBackendPort, 64, [this](int fd) { serve(fd); }) {}
  bool ok() const { return server_.ok(); }
  std::atomic<int64_t> late_bytes{-1};
  std::atomic<int> last_errno{0};
  std::atomic<uint64_t> streamed{0};

 private:
  void serve(int fd) {
    char mode = 0;
    if (::recv(fd, &mode, 1, 0) != 1) return;
    uint64_t size = 0;
    char buf[65536];
    switch (mode) {
      case 'U': {
        if (!readExact(fd, reinterpret_cast<char*>(&size), 8)) return;
        std::string error = receivePattern(fd, size);
        const bool eof = error.empty() && ::recv(fd, buf, 1, 0) == 0;
        sendAll(fd, eof ? "OK" : "BAD");
        ::shutdown(fd, SHUT_WR);
        break;
      }
      case 'D': {
        if (!readExact(fd, reinterpret_cast<char*>(&size), 8) || !sendPattern(fd, size)) return;
        ::shutdown(fd, SHUT_WR);
        int64_t late = 0;
        ssize_t n = 0;
        while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) late += n;
        late_bytes = n == 0 ? late : -2;
        break;
      }
      case 'R': {
        sendAll(fd, "hello");
        std::this_thread::sleep_for(milliseconds(100));
        linger l{1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        server_.release(fd);  // close() with a zero linger: RST
        break;
      }
      case 'W': {
        ssize_t n = 0;
        while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) {
        }
        last_errno = n < 0 ? errno : 0;
        break;
      }
      case 'S':
        stream(fd);
        break;
      case 'E': {
        ssize_t n = 0;
        while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) {
          if (!sendAll(fd, {buf, static_cast<size_t>(n)})) {
            n = -1;  // errno: the failed send's
            break;
          }
        }
        if (n < 0) last_errno = errno;
        ::shutdown(fd, SHUT_WR);
        break;
      }
      case 'Q': {
        for (;;) {
          ssize_t n = ::recv(fd, &size, 8, MSG_WAITALL);
          if (n != 8) {
            last_errno = n < 0 ? errno : 0;
            break;
          }
          if (size == kResetRequest) {
            linger l{1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
            server_.release(fd);  // close() with a zero linger: RST
            return;
          }
          if (size == kStreamRequest) return stream(fd);
          if (!sendPattern(fd, size)) break;
        }
        ::shutdown(fd, SHUT_WR);
        break;
      }
      default:
        break;
    }
  }
  // The pattern from offset 0 until the connection fails, counted in `streamed`.
  void stream(int fd) {
    std::vector<char> block(1 << 16);
    for (uint64_t off = 0; !server_.stopping(); off += block.size()) {
      fillPattern(off, block.data(), block.size());
      if (!sendAll(fd, {block.data(), block.size()})) {
        last_errno = errno;
        break;
      }
      streamed += block.size();
    }
  }
  // Last: its destructor stops and joins the threads that use the members above.
  TcpBackend server_;
};

class KernelRelay : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "e2e tests need root (network namespaces, BPF)";
    world_ = std::make_unique<NetnsWorld>();
    front_ = *world_->addPod("front", "10.244.0.10");
    server_ = *world_->addPod("server", kBackendIp);
    dir_ = makeScratchDir("remora-relay-e2e");
    ASSERT_FALSE(dir_.empty());
    config_ = dir_ + "/mesh.yaml";
    replaceFile(config_, seedConfig());
    ASSERT_TRUE(installCapture(*world_, front_));
    // A bpffs of the test's own: `ip netns exec` (how the proxy is started) mounts a fresh /sys,
    // which hides /sys/fs/bpf, and a private instance keeps the test's pins apart anyway.
    pin_root_ = dir_ + "/bpffs";
    ASSERT_EQ(::mkdir(pin_root_.c_str(), 0755), 0);
    ASSERT_EQ(::mount("bpf", pin_root_.c_str(), "bpf", 0, "mode=0755"), 0) << std::strerror(errno);
    bpffs_mounted_ = true;
    pin_dir_ = pin_root_ + "/relay";
    auto relay = world_->exec(front_, {binaryPath("remora-init"), "relay", "install", "--pin-dir",
                                       pin_dir_, "--proxy-uid", "1337", "--proxy-gid", "1337"});
    ASSERT_TRUE(relay.ok()) << relay.error().message;
    if (relay->exit_code != 0) {
      // A kernel without sockhash or sk_skb verdict support refuses the load with EINVAL or
      // EOPNOTSUPP: that alone skips; any other failure fails the test.
      const std::string why = relay->err + relay->out;
      if (why.find("Invalid argument") != std::string::npos ||
          why.find("not supported") != std::string::npos) {
        GTEST_SKIP() << "this kernel cannot load the relay: " << why;
      }
      FAIL() << "remora-init relay install: " << why;
    }
    backend_ = std::make_unique<Backend>(world_->netnsPath(server_));
    ASSERT_TRUE(backend_->ok());
  }

  void TearDown() override {
    for (int fd : fds_) ::close(fd);
    proxy_.reset();
    backend_.reset();
    if (world_ && !pin_dir_.empty()) {
      (void)world_->exec(front_,
                         {binaryPath("remora-init"), "relay", "uninstall", "--pin-dir", pin_dir_});
    }
    if (bpffs_mounted_) ::umount2(pin_root_.c_str(), MNT_DETACH);
    world_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  void startProxy(const std::string& relay, const std::string& pin_dir = {},
                  const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {binaryPath("remora-proxy"),
                                     "--config",
                                     config_,
                                     "--log-level",
                                     "info",
                                     "--no-ipv6",
                                     "--relay-pin-dir",
                                     pin_dir.empty() ? pin_dir_ : pin_dir};
    // An empty `relay`: the default.
    if (!relay.empty()) argv.insert(argv.end(), {"--relay", relay});
    argv.insert(argv.end(), extra.begin(), extra.end());
    proxy_ = world_->spawn(front_, argv, kProxyUid, kProxyUid);
    ASSERT_TRUE(proxy_->waitForLine("remora-proxy started", 10000)) << proxy_->output();
  }

  std::string admin(const std::string& path) {
    auto out = world_->exec(front_, {"curl", "-sS", "-m", "3", "http://127.0.0.1:15000" + path});
    return out && out->exit_code == 0 ? out->out : "FAILED";
  }

  // A metric's value from /stats/prometheus (the first line that starts with `name`).
  double metric(const std::string& name) { return metricValue(admin("/stats/prometheus"), name); }

  // The sum of every series of a per-endpoint metric.
  double metricSum(const std::string& name) {
    double sum = 0;
    std::istringstream stats(admin("/stats/prometheus"));
    for (std::string line; std::getline(stats, line);) {
      if (line.rfind(name + "{", 0) == 0) sum += std::stod(line.substr(line.rfind(' ') + 1));
    }
    return sum;
  }

  bool closedAll() {
    return waitFor([&] { return metric("remora_downstream_connections_active") == 0; });
  }

  // A connection from the front pod (captured by the outbound rules) to the backend, mode sent.
  int dial(char mode) {
    int fd = tcpSocketIn(world_->netnsPath(front_));
    if (fd < 0) return -1;
    fds_.push_back(fd);
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(kBackendPort);
    inet_pton(AF_INET, kBackendIp, &sa.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return -1;
    return sendAll(fd, {&mode, 1}) ? fd : -1;
  }

  // Uploads `size` pattern bytes, half-closes, and returns the backend's verdict. With
  // `after_handover`, the half-close waits (up to 5 s) until the proxy has handed the connection
  // to the kernel: a FIN that arrives first leaves the client's socket in CLOSE_WAIT, which the
  // sockhash refuses, so the io_uring relay carries that connection instead (a race a CI run
  // lost on a loaded machine).
  std::string upload(uint64_t size, bool after_handover = false) {
    const double handed = after_handover ? metric("remora_relay_kernel_connections_total") : 0;
    int fd = dial('U');
    if (fd < 0 || !writeU64(fd, size) || !sendPattern(fd, size)) return "send failed";
    if (after_handover) {
      (void)waitFor([&] { return metric("remora_relay_kernel_connections_total") > handed; });
    }
    ::shutdown(fd, SHUT_WR);
    char reply[8] = {};
    ssize_t n = ::recv(fd, reply, sizeof(reply), MSG_WAITALL);
    return std::string(reply, n > 0 ? static_cast<size_t>(n) : 0);
  }

  // `remora-init relay ARGS --pin-dir PIN_DIR`, run in the front pod like SetUp's install.
  CommandOutput relay(std::vector<std::string> args) {
    args.insert(args.begin(), {binaryPath("remora-init"), "relay"});
    args.insert(args.end(), {"--pin-dir", pin_dir_});
    auto out = world_->exec(front_, args);
    if (!out) return CommandOutput{-1, "", out.error().message};
    return *out;
  }

  CommandOutput relayInstall() {
    return relay({"install", "--proxy-uid", "1337", "--proxy-gid", "1337"});
  }

  nlohmann::json relayStatus() {
    auto out = relay({"status", "--json"});
    EXPECT_EQ(out.exit_code, 0) << out.err;
    return nlohmann::json::parse(out.out, nullptr, /*allow_exceptions=*/false);
  }

  // The single program attached to the sockhash (0 when it is not exactly one).
  uint32_t attachedProg() {
    auto status = relayStatus();
    const auto& ids = status["attached_prog_ids"];
    return ids.is_array() && ids.size() == 1 ? ids[0].get<uint32_t>() : 0;
  }

  // Makes the pinned relay look like another build's. The install decides on the record alone
  // (struct remora_relay_meta), so a record of another hash is exactly what a new init container
  // finds in a pod whose pin dir (hostPath) outlived the Remora version that made it; that the
  // program behind it is byte-identical to this build's changes nothing in what the install
  // does, and the test tells the programs apart by id.
  void recordOtherBuild(uint64_t build = kOtherBuild) {
    const int meta = bpf_obj_get((pin_dir_ + "/meta").c_str());
    ASSERT_GE(meta, 0) << "meta: " << std::strerror(errno);
    const uint32_t key = 0;
    EXPECT_EQ(bpf_map_update_elem(meta, &key, &build, BPF_ANY), 0) << std::strerror(errno);
    ::close(meta);
  }

  // Resets the client's connection (SO_LINGER {1,0}, close) and expects the backend's end of
  // it to see the reset.
  void resetAndExpectTheBackendReset(int fd) {
    linger l{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    ::close(fd);
    fds_.erase(std::remove(fds_.begin(), fds_.end(), fd), fds_.end());
    EXPECT_TRUE(waitFor([&] { return backend_->last_errno.load() != 0; }));
    EXPECT_EQ(backend_->last_errno.load(), ECONNRESET);
  }

  void stallTheReaderAndResume(int fd);

  long proxyRssKiB() {
    std::istringstream in(readWholeFile(fmt::format("/proc/{}/status", proxy_->pid())));
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    }
    return -1;
  }

  std::unique_ptr<NetnsWorld> world_;
  Pod front_, server_;
  std::string dir_, config_, pin_root_, pin_dir_;
  bool bpffs_mounted_ = false;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Process> proxy_;
  std::vector<int> fds_;
};

#ifndef REMORA_RELAY_BENCH
// Sends `text` (up to 64 bytes) to an echoing backend and reads it back.
bool roundTrip(int fd, const std::string& text) {
  char buf[64] = {};
  return sendAll(fd, text) && readExact(fd, buf, text.size()) &&
         std::string(buf, text.size()) == text;
}

TEST_F(KernelRelay, SmallUploadArrivesIntactAndTheReplyFollowsTheClientsHalfClose) {
  startProxy("kernel");
  EXPECT_NE(proxy_->output().find("relay: kernel"), std::string::npos) << proxy_->output();
  EXPECT_EQ(upload(1000, /*after_handover=*/true), "OK");
  EXPECT_EQ(upload(1, /*after_handover=*/true), "OK");
  EXPECT_GE(metric("remora_relay_kernel_connections_total"), 2);
  EXPECT_EQ(metric("remora_relay_attach_failures_total"), 0);
  // The bytes the kernel carried are counted at close, from the program's counters.
  EXPECT_TRUE(waitFor([&] {
    return admin("/stats/prometheus").find("remora_tcp_received_bytes_total") !=
               std::string::npos &&
           metric("remora_downstream_connections_active") == 0;
  }));
  const std::string stats = admin("/stats/prometheus");
  EXPECT_NE(stats.find("remora_relay_mode{mode=\"kernel\"} 1"), std::string::npos) << stats;
  const std::string dump = admin("/config_dump");
  EXPECT_NE(dump.find("\"in_use\": \"kernel\""), std::string::npos) << dump;
}

// At close the proxy takes a pair's peers entries out (with their byte counts) and leaves the
// sockhash entries to the sockets' close, which unlinks them (issue 12: 2 bpf calls per
// connection instead of 6): nothing of a closed connection may stay in either map.
TEST_F(KernelRelay, ClosedConnectionsLeaveNothingInTheRelaysMaps) {
  startProxy("kernel");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(upload(1000, /*after_handover=*/true), "OK");
  EXPECT_GE(metric("remora_relay_kernel_connections_total"), 5);
  ASSERT_TRUE(waitFor([&] { return metric("remora_downstream_connections_active") == 0; }));
  auto entries = [&](const std::string& map) {
    auto dump =
        world_->exec(front_, {"bpftool", "-j", "map", "dump", "pinned", pin_dir_ + "/" + map});
    if (!dump.ok()) return dump.error().message;
    return dump->exit_code == 0 ? dump->out : dump->err + dump->out;
  };
  // The sockets' release may trail the close's completion by a moment.
  EXPECT_TRUE(waitFor([&] { return entries("socks").find("[]") == 0; })) << entries("socks");
  EXPECT_TRUE(waitFor([&] { return entries("targets").find("[]") == 0; })) << entries("targets");
  EXPECT_EQ(entries("peers").find("[]"), 0u) << entries("peers");
  // The kernel's bytes were counted from the entries taken out (every endpoint's series).
  double received = 0;
  std::istringstream stats(admin("/stats/prometheus"));
  for (std::string line; std::getline(stats, line);) {
    if (line.rfind("remora_tcp_received_bytes_total{", 0) == 0) {
      received += std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  EXPECT_GE(received, 5 * 1000);
}

TEST_F(KernelRelay, OneGibDownloadArrivesIntactAndTheClientCanStillSendAfterTheServersFin) {
  startProxy("kernel");
  int fd = dial('D');
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(writeU64(fd, kGiB));
  auto t0 = Clock::now();
  EXPECT_EQ(receivePattern(fd, kGiB), "");
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("1 GiB download through the kernel relay: %.2f s, %.0f MiB/s (machine shared)\n",
              seconds, 1024 / seconds);
  char c = 0;
  EXPECT_EQ(::recv(fd, &c, 1, 0), 0) << "the server's FIN must reach the client after the data";
  // Half-close from the server: the client's direction stays open.
  ASSERT_TRUE(sendAll(fd, "late"));
  ::shutdown(fd, SHUT_WR);
  EXPECT_TRUE(waitFor([&] { return backend_->late_bytes.load() >= 0; }));
  EXPECT_EQ(backend_->late_bytes.load(), 4);
}

TEST_F(KernelRelay, OneGibUploadArrivesIntact) {
  startProxy("kernel");
  auto t0 = Clock::now();
  EXPECT_EQ(upload(kGiB), "OK");
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("1 GiB upload through the kernel relay: %.2f s (machine shared)\n", seconds);
}

TEST_F(KernelRelay, UpstreamResetReachesTheClientAsConnectionReset) {
  startProxy("kernel");
  int fd = dial('R');
  ASSERT_GE(fd, 0);
  char buf[5];
  ASSERT_TRUE(readExact(fd, buf, 5));
  EXPECT_EQ(std::string(buf, 5), "hello");
  errno = 0;
  EXPECT_EQ(::recv(fd, buf, 1, 0), -1);
  EXPECT_EQ(errno, ECONNRESET) << std::strerror(errno);
  EXPECT_TRUE(waitFor([&] { return metric("remora_downstream_connections_active") == 0; }));
}

TEST_F(KernelRelay, ClientResetReachesTheUpstreamAsConnectionReset) {
  startProxy("kernel");
  int fd = dial('W');
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(sendAll(fd, "some"));
  std::this_thread::sleep_for(milliseconds(100));
  resetAndExpectTheBackendReset(fd);
}

// A client that stops reading an endless stream. The sockmap itself never pushes back on the
// sender (a redirected skb leaves the receiving socket's queue at once, and the peer's redirect
// queue has no bound): the backend streamed 506 MiB in 1.5 s before the redirect-queue limit
// took the pair off the kernel path. With it, TCP's window closes: what the backend can write is
// the limit plus the socket buffers on the way. The proxy's own memory stays flat, and the
// stream resumes intact once the client reads again.
// `fd` receives the backend's endless pattern stream from offset 0.
void KernelRelay::stallTheReaderAndResume(int fd) {
  ASSERT_EQ(receivePattern(fd, 1 << 20), "");
  const long rss_before = proxyRssKiB();
  std::this_thread::sleep_for(milliseconds(1000));
  const uint64_t streamed_1s = backend_->streamed.load();
  std::this_thread::sleep_for(milliseconds(500));
  const uint64_t streamed = backend_->streamed.load();
  const long rss_after = proxyRssKiB();
  std::printf(
      "slow reader: backend streamed %.1f MiB (%.1f MiB at 1 s) while the client read 1 MiB; "
      "proxy RSS %ld -> %ld KiB; pauses %.0f\n",
      static_cast<double>(streamed) / (1 << 20), static_cast<double>(streamed_1s) / (1 << 20),
      rss_before, rss_after, metric("remora_relay_backpressure_pauses_total"));
  // Bounded, and no longer growing: the limit (1 MiB) plus what the sockets on the way hold
  // (send and receive buffers of four sockets, autotuned up to tcp_wmem/tcp_rmem's maxima).
  EXPECT_LT(streamed, uint64_t{64} << 20);
  EXPECT_LT(streamed - streamed_1s, uint64_t{8} << 20) << "the sender was not held back";
  EXPECT_EQ(metric("remora_relay_backpressure_pauses_total"), 1);
  EXPECT_EQ(metric("remora_relay_pause_losses_total"), 0);
  // Back in user space the proxy holds what its io_uring relay holds: at most the buffer limit
  // (1 MiB) per direction, in buffers of its 16 MiB pool (256 x 64 KiB), which become resident
  // as they are first used. Not under AddressSanitizer (CI's asan_quick), whose quarantine
  // keeps freed memory resident (24 MiB grew there once): RSS is not the proxy's there.
  if (kAddressSanitizer) {
    std::printf("proxy RSS bound not checked: built with AddressSanitizer\n");
  } else {
    EXPECT_LT(rss_after - rss_before, 20 * 1024);
  }
  // Reading on from offset 1 MiB: nothing was lost or reordered while the reader stalled.
  std::vector<char> block(1 << 20);
  for (uint64_t off = 1 << 20; off < (uint64_t{64} << 20); off += block.size()) {
    ASSERT_TRUE(readExact(fd, block.data(), block.size())) << "at " << off;
    ASSERT_EQ(checkPattern(off, block.data(), block.size()), -1) << "at " << off;
  }
}

TEST_F(KernelRelay, SlowReaderHoldsTheSenderBackAndTheStreamResumesIntact) {
  startProxy("kernel");
  int fd = dial('S');
  ASSERT_GE(fd, 0);
  stallTheReaderAndResume(fd);
}

// A client that writes to an echo backend without reading: the echoes fill the client's socket,
// the backend stops reading, and both directions back up. The pair is paused; then the client
// resets, and the backend must see the reset. (Here the request direction has drained into the
// upstream socket's send buffer and is back in the io_uring relay, whose receive sees the
// reset. Where both directions are still held, no receive or poll watches either socket and
// releaseHeld's SO_ERROR check passes the reset on; no test reaches that state reliably.)
TEST_F(KernelRelay, ClientResetWhileItsPairIsPausedAndBackedUpReachesTheBackend) {
  startProxy("kernel");
  int fd = dial('E');
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
  std::vector<char> block(1 << 16, 'x');
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  auto full_since = std::chrono::steady_clock::now();
  // Write until the client's socket has stayed full for half a second.
  while (std::chrono::steady_clock::now() < deadline) {
    if (::send(fd, block.data(), block.size(), MSG_NOSIGNAL) > 0) {
      full_since = std::chrono::steady_clock::now();
      continue;
    }
    ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
    if (std::chrono::steady_clock::now() - full_since > milliseconds(500)) break;
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_EQ(metric("remora_relay_backpressure_pauses_total"), 1);
  resetAndExpectTheBackendReset(fd);
  EXPECT_TRUE(closedAll());
}

// With two workers, worker 0 alone reads the relay's ring buffer: a pair the other worker relays
// gets its record through that worker's mailbox. SO_REUSEPORT spreads the connections (all on
// one worker once in 128 runs).
TEST_F(KernelRelay, SlowReadersOnEveryWorkerAreHeldBack) {
  startProxy("kernel", {}, {"--concurrency", "2"});
  constexpr int kStreams = 8;
  constexpr uint64_t kFirst = 256 << 10;
  std::vector<int> streams;
  for (int i = 0; i < kStreams; ++i) {
    int fd = dial('S');
    ASSERT_GE(fd, 0);
    ASSERT_EQ(receivePattern(fd, kFirst), "") << "stream " << i;
    streams.push_back(fd);
  }
  EXPECT_TRUE(
      waitFor([&] { return metric("remora_relay_backpressure_pauses_total") == kStreams; }, 10000))
      << metric("remora_relay_backpressure_pauses_total");
  // The sockets' buffers may still be autotuning upwards for a while; then nothing moves. Held
  // back, 8 streams grew by up to 13.2 MiB in the first half second after the pauses; not held
  // back (worker 1's records dropped), by 347 MiB.
  std::this_thread::sleep_for(milliseconds(1000));
  const uint64_t streamed = backend_->streamed.load();
  std::this_thread::sleep_for(milliseconds(500));
  EXPECT_LT(backend_->streamed.load() - streamed, uint64_t{2 * kStreams} << 20)
      << "a sender was not held back";
  EXPECT_EQ(metric("remora_relay_pause_losses_total"), 0);
  std::vector<char> block(1 << 20);
  for (int fd : streams) {
    for (uint64_t off = kFirst; off < (uint64_t{8} << 20); off += block.size()) {
      ASSERT_TRUE(readExact(fd, block.data(), block.size())) << "at " << off;
      ASSERT_EQ(checkPattern(off, block.data(), block.size()), -1) << "at " << off;
    }
  }
}

TEST_F(KernelRelay, ReloadWhileRelayedConnectionsAreOpenKeepsThemAndTheNextOnes) {
  startProxy("kernel");
  std::vector<int> open;
  for (int i = 0; i < 5; ++i) {
    int fd = dial('E');
    ASSERT_GE(fd, 0);
    open.push_back(fd);
  }
  for (int fd : open) EXPECT_TRUE(roundTrip(fd, "before"));
  std::ofstream(config_, std::ios::app) << "\n# touched by the reload test\n";
  ASSERT_TRUE(proxy_->waitForLine("config generation 2", 10000)) << proxy_->output();
  for (int fd : open) EXPECT_TRUE(roundTrip(fd, "after-reload"));
  int fresh = dial('E');
  ASSERT_GE(fresh, 0);
  EXPECT_TRUE(roundTrip(fresh, "new"));
  EXPECT_GE(metric("remora_relay_kernel_connections_total"), 6);
  for (int fd : open) {
    ::shutdown(fd, SHUT_WR);
    char c = 0;
    EXPECT_EQ(::recv(fd, &c, 1, 0), 0);
  }
}

// Voluntary context switches of every thread of a process: how often it went to sleep, so how
// often something woke it.
long voluntarySwitches(pid_t pid) {
  long total = 0;
  for (const auto& task : fs::directory_iterator(fmt::format("/proc/{}/task", pid))) {
    std::istringstream in(readWholeFile(task.path().string() + "/status"));
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0) total += std::stol(line.substr(24));
    }
  }
  return total;
}

TEST_F(KernelRelay, RelayedExchangesDoNotWakeTheProxy) {
  startProxy("kernel");
  int fd = dial('E');
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(roundTrip(fd, "first"));
  ASSERT_TRUE(waitFor([&] { return metric("remora_relay_kernel_connections_total") >= 1; }));
  // Once the pair is the kernel's, an exchange is the program's work alone: the proxy only
  // watches for FIN and RST. Its worker used to wake at every redirected skb (its poll asked
  // for POLLIN, which the kernel signals after each redirect), so 2,000 round trips cost it
  // about 2,000 wake-ups. Left: the timeout sweep (1 s) and the admin thread's own timers.
  constexpr int kExchanges = 2000;
  const long before = voluntarySwitches(proxy_->pid());
  for (int i = 0; i < kExchanges; ++i) {
    ASSERT_TRUE(roundTrip(fd, fmt::format("exchange {}", i))) << "exchange " << i;
  }
  const long woken = voluntarySwitches(proxy_->pid()) - before;
  std::printf("%d relayed exchanges woke the proxy %ld times\n", kExchanges, woken);
  EXPECT_LT(woken, kExchanges / 10);
}

// The default is auto. A relay that is not installed (no pins) is the usual case, said at info
// level; the io_uring relay carries everything.
TEST_F(KernelRelay, AutoFallsBackToUringWhenThePinsAreMissingAndSaysSo) {
  startProxy("", pin_root_ + "/missing");
  EXPECT_NE(proxy_->output().find("[info] relay: io_uring (no kernel relay installed: opening"),
            std::string::npos)
      << proxy_->output();
  EXPECT_EQ(proxy_->output().find("[warning]"), std::string::npos) << proxy_->output();
  EXPECT_EQ(upload(100000), "OK");
  EXPECT_EQ(metric("remora_relay_fallbacks_total"), 1);
  EXPECT_EQ(metric("remora_relay_kernel_connections_total"), 0);
  const auto dump = nlohmann::json::parse(admin("/config_dump"), nullptr, false);
  ASSERT_TRUE(dump.is_object());
  EXPECT_EQ(dump["relay"]["mode"], "auto") << dump["relay"].dump();
  EXPECT_EQ(dump["relay"]["in_use"], "uring") << dump["relay"].dump();
}

// Pins that are there but refuse the proxy (owned by root, mode 0600) are a fault: a warning.
TEST_F(KernelRelay, AutoWarnsWhenThePinsRefuseTheProxy) {
  const std::string socks = pin_dir_ + "/socks";
  ASSERT_EQ(::chown(socks.c_str(), 0, 0), 0) << std::strerror(errno);
  startProxy("");
  EXPECT_NE(proxy_->output().find("[warning] relay: io_uring; the kernel relay is unavailable"),
            std::string::npos)
      << proxy_->output();
  EXPECT_EQ(metric("remora_relay_fallbacks_total"), 1);
}

// --relay auto (docs/PROXY.md, "Adaptive hand-over"): a pair starts in the io_uring relay and
// goes to the kernel once it has completed HandoverRule::kExchanges exchanges with no receive
// filling a buffer.
constexpr int kHandoverExchanges = 3;  // HandoverRule::kExchanges

// One exchange on an echo connection: `size` bytes of the client's stream (offsets from
// `offset`) go out and must come back unchanged.
bool echoExchange(int fd, uint64_t offset, size_t size) {
  std::vector<char> out(size);
  fillPattern(offset, out.data(), size);
  return sendAll(fd, {out.data(), size}) && receivePattern(fd, size, offset).empty();
}

// One request on a 'Q' connection: `size` pattern bytes come back.
bool request(int fd, uint64_t size) {
  return writeU64(fd, size) && receivePattern(fd, size).empty();
}

// With the relay installed, the default (auto) uses it: a request/response pair is handed over.
TEST_F(KernelRelay, DefaultRelayIsAutoAndUsesTheInstalledKernelRelay) {
  startProxy("");
  EXPECT_NE(proxy_->output().find("relay: kernel"), std::string::npos) << proxy_->output();
  int fd = dial('Q');
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(request(fd, 1000)) << "request " << i;
  EXPECT_TRUE(waitFor([&] { return metric("remora_relay_handovers_total") == 1; }))
      << admin("/stats/prometheus");
}

TEST_F(KernelRelay, AutoKeepsOneRequestConnectionsInTheIoUringRelay) {
  startProxy("auto");
  EXPECT_NE(proxy_->output().find("relay: kernel"), std::string::npos) << proxy_->output();
  for (int i = 0; i < 3; ++i) {
    int fd = dial('E');
    ASSERT_GE(fd, 0);
    EXPECT_TRUE(echoExchange(fd, 0, 100));
    ::shutdown(fd, SHUT_WR);
    char c = 0;
    EXPECT_EQ(::recv(fd, &c, 1, 0), 0);
  }
  EXPECT_EQ(upload(1000), "OK");  // a request, a response, the close
  ASSERT_TRUE(closedAll());
  EXPECT_EQ(metric("remora_relay_kernel_connections_total"), 0);
  EXPECT_EQ(metric("remora_relay_handovers_total"), 0);
  EXPECT_EQ(metric("remora_relay_kept_in_user_space_total{reason=\"short\"}"), 4);
  const auto dump = nlohmann::json::parse(admin("/config_dump"), nullptr, false);
  ASSERT_TRUE(dump.is_object());
  EXPECT_EQ(dump["relay"]["in_use"], "kernel") << dump["relay"].dump();
  EXPECT_EQ(dump["relay"]["handover"]["exchanges"], kHandoverExchanges) << dump["relay"].dump();
  EXPECT_EQ(dump["relay"]["handover"]["kept_short"], 4) << dump["relay"].dump();
  EXPECT_EQ(dump["relay"]["handover"]["handed_over"], 0) << dump["relay"].dump();
}

TEST_F(KernelRelay, AutoHandsOverAfterSeveralExchangesAndCountsEveryByte) {
  startProxy("auto", {}, {"--access-log"});
  int fd = dial('E');
  ASSERT_GE(fd, 0);
  uint64_t sent = 0;
  // One segment each way per exchange (a bigger one could be echoed in pieces, each piece a
  // turn of its own, and count as more exchanges than the test makes).
  for (int i = 0; i + 1 < kHandoverExchanges; ++i, sent += 1000) {
    ASSERT_TRUE(echoExchange(fd, sent, 1000)) << "exchange " << i;
  }
  EXPECT_EQ(metric("remora_relay_handovers_total"), 0) << "handed over before its exchanges";
  ASSERT_TRUE(echoExchange(fd, sent, 1000));
  sent += 1000;
  ASSERT_TRUE(waitFor([&] { return metric("remora_relay_handovers_total") == 1; }))
      << admin("/stats/prometheus");
  EXPECT_EQ(metric("remora_relay_kernel_connections_total"), 1);
  EXPECT_EQ(metric("remora_relay_attach_failures_total"), 0);
  // The kernel carries the next exchanges, intact both ways (the echo returns what arrived).
  for (size_t size : {1, 7, 100, 1500, 20000, 60000, 3, 64000}) {
    ASSERT_TRUE(echoExchange(fd, sent, size)) << "at " << sent;
    sent += size;
  }
  // The backend echoes what is left and answers the client's FIN with its own.
  ::shutdown(fd, SHUT_WR);
  char c = 0;
  EXPECT_EQ(::recv(fd, &c, 1, 0), 0);
  ASSERT_TRUE(closedAll());
  // User space's bytes before the hand-over plus the kernel's after: the mode byte and `sent`
  // from the client, `sent` back.
  const std::string line = fmt::format("received_bytes={} sent_bytes={} ", sent + 1, sent);
  EXPECT_TRUE(proxy_->waitForLine(line, 5000)) << line << "\n" << proxy_->output();
  EXPECT_EQ(metricSum("remora_tcp_received_bytes_total"), static_cast<double>(sent + 1));
  EXPECT_EQ(metricSum("remora_tcp_sent_bytes_total"), static_cast<double>(sent));
  EXPECT_EQ(metric("remora_relay_kept_in_user_space_total{reason=\"short\"}"), 0);
}

// The hand-over while the client never pauses: numbered records (their stream offsets) keep
// going out, up to a window unanswered, so bytes arrive while the receives are cancelled and
// the sockets go into the sockhash. Every byte must come back once and in order: the echo
// backend returns what reached it, so a loss, duplicate or reorder either way shows.
TEST_F(KernelRelay, AutoHandOverLosesNothingWhileTheClientKeepsWriting) {
  startProxy("auto");
  int fd = dial('E');
  ASSERT_GE(fd, 0);
  constexpr uint64_t kRecord = 64;
  constexpr uint64_t kWindow = 8;  // records unanswered: 512 B, no receive fills a buffer
  std::mutex mu;
  std::condition_variable cv;
  uint64_t echoed = 0;
  bool stop = false, reader_done = false;
  std::atomic<uint64_t> last{~uint64_t{0}};  // the record count, once the writer stops
  std::string writer_error, reader_error;
  std::thread writer([&] {
    std::vector<char> record(kRecord);
    for (uint64_t seq = 0;; ++seq) {
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return reader_done || seq - echoed < kWindow; });
        if (reader_done) return;
        if (stop) last = seq + 1;  // this one is the last
      }
      fillPattern(seq * kRecord, record.data(), kRecord);
      if (!sendAll(fd, {record.data(), kRecord})) {
        writer_error = fmt::format("send of record {} failed: {}", seq, std::strerror(errno));
        return;
      }
      if (last.load() != ~uint64_t{0}) return;
    }
  });
  std::thread reader([&] {
    for (uint64_t seq = 0; seq < last.load(); ++seq) {
      reader_error = receivePattern(fd, kRecord, seq * kRecord);
      if (!reader_error.empty()) break;
      std::lock_guard<std::mutex> lock(mu);
      echoed = seq + 1;
      cv.notify_all();
    }
    std::lock_guard<std::mutex> lock(mu);
    reader_done = true;
    cv.notify_all();
  });
  auto echoedNow = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return echoed;
  };
  const bool handed = waitFor([&] { return metric("remora_relay_handovers_total") >= 1; }, 10000);
  // Some more after the hand-over, then the writer stops after its next record.
  const uint64_t at_handover = echoedNow();
  (void)waitFor([&] { return echoedNow() >= at_handover + 2000; }, 10000);
  {
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
  }
  writer.join();
  reader.join();
  EXPECT_TRUE(handed) << "never handed over; " << admin("/stats/prometheus");
  EXPECT_EQ(writer_error, "");
  EXPECT_EQ(reader_error, "");
  EXPECT_EQ(echoedNow(), last.load());
  EXPECT_GT(echoedNow(), at_handover + 1000) << "the stream stalled after the hand-over";
  std::printf("records echoed: %lu (%lu at the hand-over); hand-overs put off by a race: %.0f\n",
              static_cast<unsigned long>(echoedNow()), static_cast<unsigned long>(at_handover),
              metric("remora_relay_handover_races_total"));
  ::shutdown(fd, SHUT_WR);
  char c = 0;
  EXPECT_EQ(::recv(fd, &c, 1, 0), 0);
  ASSERT_TRUE(closedAll());
  EXPECT_EQ(metricSum("remora_tcp_received_bytes_total"), static_cast<double>(last * kRecord + 1));
}

// Bytes that reach a socket after its receive was cancelled and before it is in the sockhash
// wait in its receive queue with nothing to wake them: attach's SO_RCVLOWAT nudge must send
// them on. The test hook `handover-delay` holds the worker 200 ms right before the insertion,
// so the client's next request, sent as soon as the last user-space echo arrived, lands there.
TEST_F(KernelRelay, AutoHandOverCarriesBytesThatArrivedBeforeTheInsertion) {
  ::setenv("REMORA_URING_AB", "handover-delay", 1);
  startProxy("auto");
  ::unsetenv("REMORA_URING_AB");
  int fd = dial('E');
  ASSERT_GE(fd, 0);
  timeval tv{3, 0};  // a stuck request fails in 3 s
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  uint64_t sent = 0;
  // The hand-over starts after the third exchange; the fourth request follows at once. Should
  // it win the race with the cancel, the next idle point tries again, so a few more follow.
  for (int i = 0; i < kHandoverExchanges + 6; ++i, sent += 100) {
    ASSERT_TRUE(echoExchange(fd, sent, 100))
        << "exchange " << i << "; races " << metric("remora_relay_handover_races_total");
  }
  EXPECT_EQ(metric("remora_relay_handovers_total"), 1);
  ::shutdown(fd, SHUT_WR);
  char c = 0;
  EXPECT_EQ(::recv(fd, &c, 1, 0), 0);
}

TEST_F(KernelRelay, AutoKeepsABulkTransferInTheIoUringRelay) {
  startProxy("auto");
  int fd = dial('Q');
  ASSERT_GE(fd, 0);
  constexpr uint64_t kBulk = uint64_t{256} << 20;
  auto t0 = Clock::now();
  ASSERT_TRUE(writeU64(fd, kBulk));
  EXPECT_EQ(receivePattern(fd, kBulk), "");
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("256 MiB download through --relay auto: %.2f s, %.0f MiB/s (machine shared)\n",
              seconds, 256 / seconds);
  // Small requests after it would reach the exchanges, but the pair has shown it is bulk.
  for (int i = 0; i < kHandoverExchanges + 3; ++i) ASSERT_TRUE(request(fd, 100)) << i;
  ::shutdown(fd, SHUT_WR);
  char c = 0;
  EXPECT_EQ(::recv(fd, &c, 1, 0), 0);
  ASSERT_TRUE(closedAll());
  EXPECT_EQ(metric("remora_relay_kernel_connections_total"), 0);
  EXPECT_EQ(metric("remora_relay_kept_in_user_space_total{reason=\"bulk\"}"), 1);
  EXPECT_EQ(metricSum("remora_tcp_sent_bytes_total"),
            static_cast<double>(kBulk + (kHandoverExchanges + 3) * 100));
}

// Half-close after a mid-stream hand-over: the client's FIN reaches the backend only after every
// byte before it (the FIN check counts the bytes the io_uring relay wrote before the kernel
// took over), and the backend's answer and FIN come back.
TEST_F(KernelRelay, AutoHandedOverPairHalfClosesAfterItsBytes) {
  startProxy("auto");
  int fd = dial('E');
  ASSERT_GE(fd, 0);
  uint64_t sent = 0;
  // At least 180 KB relayed in user space first: a FIN check that forgot them would shut the
  // other side down while that much of the tail was still in the kernel's redirect queue.
  // An echo this big comes back in pieces, and a piece that arrives while the receives are
  // cancelled puts the hand-over off to the next exchange: exchange until it happened.
  for (int i = 0; i < kHandoverExchanges || metric("remora_relay_handovers_total") < 1;
       ++i, sent += 60000) {
    ASSERT_LT(i, 20) << "never handed over: " << admin("/stats/prometheus");
    ASSERT_TRUE(echoExchange(fd, sent, 60000));
  }
  ASSERT_TRUE(waitFor([&] { return metric("remora_relay_handovers_total") == 1; }));
  // 8 MiB and the FIN right behind it, read back on another thread.
  constexpr uint64_t kTail = uint64_t{8} << 20;
  std::string echoed;
  std::thread reader([&] { echoed = receivePattern(fd, kTail, sent); });
  const bool wrote = sendPattern(fd, kTail, sent);
  ::shutdown(fd, SHUT_WR);
  reader.join();
  EXPECT_TRUE(wrote);
  EXPECT_EQ(echoed, "");
  char c = 0;
  EXPECT_EQ(::recv(fd, &c, 1, 0), 0) << "the backend's FIN follows its echo";
  ASSERT_TRUE(closedAll());
}

// The reset tests' start: `--relay auto`, one request/response connection handed over after
// its exchanges, and one more request through the kernel. -1 when any step failed.
class KernelRelayAuto : public KernelRelay {
 protected:
  int handedOverPair() {
    startProxy("auto");
    int fd = dial('Q');
    if (fd < 0) return -1;
    for (int i = 0; i < kHandoverExchanges; ++i) {
      if (!request(fd, 1000)) return -1;
    }
    if (!waitFor([&] { return metric("remora_relay_handovers_total") == 1; })) return -1;
    return request(fd, 1000) ? fd : -1;
  }
};

TEST_F(KernelRelayAuto, HandedOverPairPassesTheUpstreamsResetOn) {
  const int fd = handedOverPair();
  ASSERT_GE(fd, 0) << (proxy_ ? proxy_->output() : "no proxy");
  ASSERT_TRUE(writeU64(fd, kResetRequest));
  char c = 0;
  errno = 0;
  EXPECT_EQ(::recv(fd, &c, 1, 0), -1);
  EXPECT_EQ(errno, ECONNRESET) << std::strerror(errno);
  ASSERT_TRUE(closedAll());
  EXPECT_EQ(metric("remora_relay_handovers_total"), 1);
}

TEST_F(KernelRelayAuto, HandedOverPairPassesTheClientsResetOn) {
  const int fd = handedOverPair();
  ASSERT_GE(fd, 0) << (proxy_ ? proxy_->output() : "no proxy");
  resetAndExpectTheBackendReset(fd);
  ASSERT_TRUE(closedAll());
}

// `auto` hands a request/response pair to the kernel; when it then streams to a reader that
// stalls, the pair is held back the same way.
TEST_F(KernelRelayAuto, HandedOverPairHoldsASlowReadersSenderBack) {
  int fd = handedOverPair();
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(writeU64(fd, kStreamRequest));
  stallTheReaderAndResume(fd);
}

// The id of the BPF object pinned at `path` (0 when it cannot be read).
uint32_t pinnedMapId(const std::string& path) {
  const int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return 0;
  bpf_map_info info{};
  __u32 len = sizeof(info);
  const bool ok = bpf_obj_get_info_by_fd(fd, &info, &len) == 0;
  ::close(fd);
  return ok ? info.id : 0;
}

// Whether the kernel has freed program `id` (it is freed through RCU: poll for it).
bool progFreed(uint32_t id) {
  const int fd = bpf_prog_get_fd_by_id(id);
  if (fd >= 0) ::close(fd);
  return fd < 0 && errno == ENOENT;
}

// issue 11 for the relay: a pod's pin dir outlived the Remora version that pinned it, and the new
// version's init container runs `relay install` while the proxy still relays connections. The
// install swaps the verdict program on the same maps; the connections relayed at that moment
// keep flowing (their sockets keep the program they were inserted with, which the kernel keeps
// alive for them), later ones get the new program, and the old one is freed with the last of
// the old sockets.
TEST_F(KernelRelay, AnotherBuildsVerdictProgramIsReplacedWhileRelayedConnectionsKeepFlowing) {
  startProxy("kernel");
  std::vector<int> old_conns;
  for (int i = 0; i < 3; ++i) {
    int fd = dial('E');
    ASSERT_GE(fd, 0);
    old_conns.push_back(fd);
    EXPECT_TRUE(roundTrip(fd, "before"));
  }
  ASSERT_TRUE(waitFor([&] { return metric("remora_relay_kernel_connections_total") >= 3; }));
  auto before = relayStatus();
  ASSERT_EQ(before["build_is_this_binary"], true) << before.dump();
  const uint32_t old_prog = attachedProg();
  ASSERT_NE(old_prog, 0u) << before.dump();
  EXPECT_EQ(before["pinned_prog_id"], old_prog);
  const uint32_t socks_id = pinnedMapId(pin_dir_ + "/socks");

  recordOtherBuild();
  ASSERT_EQ(relayStatus()["build_is_this_binary"], false);
  auto out = relayInstall();
  ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
  EXPECT_NE(out.out.find(fmt::format("upgraded from build {:016x}", kOtherBuild)),
            std::string::npos)
      << out.out;
  auto after = relayStatus();
  EXPECT_EQ(after["build_is_this_binary"], true) << after.dump();
  const uint32_t new_prog = attachedProg();
  EXPECT_NE(new_prog, 0u) << after.dump();
  EXPECT_NE(new_prog, old_prog) << "the sockhash still has the old build's program";
  EXPECT_EQ(after["pinned_prog_id"], new_prog) << "the pin still names the old program";
  EXPECT_FALSE(fs::exists(pin_dir_ + "/prog_verdict_new"));
  EXPECT_EQ(pinnedMapId(pin_dir_ + "/socks"), socks_id) << "the maps are kept";

  // The connections relayed during the upgrade keep flowing, and a new one is relayed too.
  for (int fd : old_conns) EXPECT_TRUE(roundTrip(fd, "after-upgrade"));
  const double handed = metric("remora_relay_kernel_connections_total");
  int fresh = dial('E');
  ASSERT_GE(fresh, 0);
  EXPECT_TRUE(roundTrip(fresh, "new"));
  EXPECT_TRUE(waitFor([&] { return metric("remora_relay_kernel_connections_total") > handed; }));
  // The old program lives on in the old connections' sockets only: closed, it is freed, while
  // the new connection (inserted after the swap, so running the new one) keeps flowing.
  EXPECT_FALSE(progFreed(old_prog)) << "relayed sockets hold the program they were inserted with";
  for (int fd : old_conns) {
    ::shutdown(fd, SHUT_WR);
    char c = 0;
    EXPECT_EQ(::recv(fd, &c, 1, 0), 0);
  }
  EXPECT_TRUE(waitFor([&] { return progFreed(old_prog); })) << "old program " << old_prog;
  EXPECT_TRUE(roundTrip(fresh, "still"));

  // A build before the record had no meta pin: it is upgraded the same way, and recorded.
  ASSERT_EQ(::unlink((pin_dir_ + "/meta").c_str()), 0);
  out = relayInstall();
  ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
  EXPECT_NE(out.out.find("upgraded from build 0000000000000000"), std::string::npos) << out.out;
  EXPECT_EQ(relayStatus()["build_is_this_binary"], true);
  EXPECT_NE(attachedProg(), new_prog);
  EXPECT_TRUE(roundTrip(fresh, "again"));
  EXPECT_EQ(metric("remora_relay_attach_failures_total"), 0);
}

TEST_F(KernelRelay, AnotherBuildsMapOfAnotherShapeIsRefusedAndNothingChanges) {
  const uint32_t prog = attachedProg();
  ASSERT_NE(prog, 0u);
  recordOtherBuild();
  // The other build's peers map holds 16-byte values in 64 entries.
  const std::string peers = pin_dir_ + "/peers";
  ASSERT_EQ(::unlink(peers.c_str()), 0);
  const int other = bpf_map_create(BPF_MAP_TYPE_HASH, "other", 8, 16, 64, nullptr);
  ASSERT_GE(other, 0) << std::strerror(errno);
  ASSERT_EQ(bpf_obj_pin(other, peers.c_str()), 0) << std::strerror(errno);
  ::close(other);
  const uint32_t other_id = pinnedMapId(peers);

  auto out = relayInstall();
  EXPECT_NE(out.exit_code, 0) << out.out;
  EXPECT_NE(out.err.find(peers + " has type 1, key 8 B, value 16 B, 64 entries"), std::string::npos)
      << out.err;
  EXPECT_NE(out.err.find("this build's has type 1, key 8 B, value 40 B, 65536 entries"),
            std::string::npos)
      << out.err;
  auto after = relayStatus();
  EXPECT_EQ(attachedProg(), prog) << after.dump();
  EXPECT_EQ(after["pinned_prog_id"], prog);
  EXPECT_EQ(after["build"], fmt::format("{:016x}", kOtherBuild));
  EXPECT_EQ(pinnedMapId(peers), other_id);
  EXPECT_FALSE(fs::exists(pin_dir_ + "/prog_verdict_new"));
}

// A failure after the new program is attached (its pin cannot be renamed over `prog_verdict`,
// here a non-empty directory in its place) puts the old program back on the sockhash and the
// old record back, and removes the staging pin.
TEST_F(KernelRelay, AnUpgradeThatFailsPartWayPutsTheOldProgramBack) {
  const uint32_t prog = attachedProg();
  ASSERT_NE(prog, 0u);
  const std::string prog_pin = pin_dir_ + "/prog_verdict";
  ASSERT_EQ(::unlink(prog_pin.c_str()), 0);
  ASSERT_EQ(::mkdir(prog_pin.c_str(), 0700), 0) << std::strerror(errno);
  ASSERT_EQ(::mkdir((prog_pin + "/in-the-way").c_str(), 0700), 0) << std::strerror(errno);
  recordOtherBuild();

  auto out = relayInstall();
  EXPECT_NE(out.exit_code, 0) << out.out;
  EXPECT_NE(out.err.find("renaming " + pin_dir_ + "/prog_verdict_new"), std::string::npos)
      << out.err;
  auto after = relayStatus();
  EXPECT_EQ(attachedProg(), prog) << after.dump();
  EXPECT_EQ(after["build"], fmt::format("{:016x}", kOtherBuild));
  EXPECT_FALSE(fs::exists(pin_dir_ + "/prog_verdict_new"));
  EXPECT_EQ(::rmdir((prog_pin + "/in-the-way").c_str()), 0);
  EXPECT_EQ(::rmdir(prog_pin.c_str()), 0);
}

TEST_F(KernelRelay, SameBuildInstalledAgainChangesNothingButTheOwnerAndMode) {
  auto before = relayStatus();
  ASSERT_EQ(before["build_is_this_binary"], true) << before.dump();
  const uint32_t prog = attachedProg();
  ASSERT_NE(prog, 0u);
  std::map<std::string, uint32_t> ids;
  for (const char* pin : {"socks", "peers", "counters", "meta", "targets", "events"}) {
    ids[pin] = pinnedMapId(pin_dir_ + "/" + pin);
    EXPECT_NE(ids[pin], 0u) << pin;
  }
  // Owner and mode are applied again (someone loosened them).
  const std::string socks = pin_dir_ + "/socks";
  ASSERT_EQ(::chmod(socks.c_str(), 0644), 0);
  ASSERT_EQ(::chown(socks.c_str(), 0, 0), 0);

  auto out = relayInstall();
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_NE(out.out.find("already installed"), std::string::npos) << out.out;
  EXPECT_EQ(out.out.find("upgraded"), std::string::npos) << out.out;
  auto after = relayStatus();
  EXPECT_EQ(attachedProg(), prog) << after.dump();
  EXPECT_EQ(after["pinned_prog_id"], prog);
  EXPECT_EQ(after["build"], before["build"]);
  for (const auto& [pin, id] : ids) EXPECT_EQ(pinnedMapId(pin_dir_ + "/" + pin), id) << pin;
  struct stat st {};
  ASSERT_EQ(::stat(socks.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_uid, kProxyUid);
  // The text form says the same.
  auto text = relay({"status"});
  EXPECT_NE(text.out.find("(this binary's)"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(fmt::format("verdict program: {} attached", prog)), std::string::npos)
      << text.out;
}

#else  // REMORA_RELAY_BENCH: the same world, measuring instead of checking (label bench).

// The machine's busy time (every CPU, softirq included), in s.
double machineBusy() {
  std::istringstream in(readWholeFile("/proc/stat"));
  std::string cpu;
  double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0;
  in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq;
  return (user + nice + system + irq + softirq) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// 64 B round trips on every connection, a thread each, until stopped.
class PingPong {
 public:
  explicit PingPong(const std::vector<int>& conns) {
    for (int fd : conns) {
      threads_.emplace_back([this, fd] {
        char buf[64] = {};
        while (!stop_ && sendAll(fd, {buf, sizeof(buf)}) && readExact(fd, buf, sizeof(buf))) {
          ++round_trips_;
        }
      });
    }
  }
  ~PingPong() { stop(); }
  PingPong(const PingPong&) = delete;
  PingPong& operator=(const PingPong&) = delete;
  void stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  uint64_t roundTrips() const { return round_trips_.load(); }

 private:
  std::atomic<uint64_t> round_trips_{0};
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

struct RelayFigures {
  double round_trips_per_s = 0;
  double proxy_cpu_us_per_rt = 0;
  double machine_cpu_us_per_rt = 0;
  double bulk_mib_per_s = 0;
};

TEST_F(KernelRelay, UringVersusKernelSideBySide) {
  constexpr int kConnections = 8;
  constexpr auto kRun = std::chrono::seconds(3);
  constexpr uint64_t kBulk = uint64_t{512} << 20;
  std::map<std::string, RelayFigures> figures;
  for (const std::string mode : {"uring", "kernel", "auto"}) {
    startProxy(mode);
    RelayFigures& f = figures[mode];
    std::vector<int> conns;
    for (int i = 0; i < kConnections; ++i) conns.push_back(dial('E'));
    ASSERT_TRUE(std::all_of(conns.begin(), conns.end(), [](int fd) { return fd >= 0; }));
    const double proxy0 = cpuSeconds(proxy_->pid()), busy0 = machineBusy();
    auto t0 = Clock::now();
    PingPong ping_pong(conns);
    std::this_thread::sleep_for(kRun);
    ping_pong.stop();
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    const double n = static_cast<double>(ping_pong.roundTrips());
    f.round_trips_per_s = n / seconds;
    f.proxy_cpu_us_per_rt = (cpuSeconds(proxy_->pid()) - proxy0) * 1e6 / n;
    f.machine_cpu_us_per_rt = (machineBusy() - busy0) * 1e6 / n;
    int fd = dial('D');
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(writeU64(fd, kBulk));
    std::vector<char> block(1 << 20);
    uint64_t got = 0;
    auto b0 = Clock::now();
    for (ssize_t r = 0; got < kBulk && (r = ::recv(fd, block.data(), block.size(), 0)) > 0;) {
      got += static_cast<uint64_t>(r);
    }
    ASSERT_EQ(got, kBulk);
    f.bulk_mib_per_s = 512 / std::chrono::duration<double>(Clock::now() - b0).count();
    for (int c : conns) ::shutdown(c, SHUT_RDWR);
    proxy_.reset();
  }
  const RelayFigures& u = figures["uring"];
  const RelayFigures& k = figures["kernel"];
  std::printf(
      "relay comparison (8 ping-pong connections of 64 B for 3 s, then one 512 MiB download; "
      "client, backend and proxy share the machine; measured under contention)\n"
      "  %-28s %12s %12s %8s\n  %-28s %12.0f %12.0f %7.2fx\n  %-28s %12.1f %12.1f %7.2fx\n"
      "  %-28s %12.1f %12.1f %7.2fx\n  %-28s %12.0f %12.0f %7.2fx\n",
      "", "uring", "kernel", "k/u", "round trips/s", u.round_trips_per_s, k.round_trips_per_s,
      k.round_trips_per_s / u.round_trips_per_s, "proxy CPU us per round trip",
      u.proxy_cpu_us_per_rt, k.proxy_cpu_us_per_rt, k.proxy_cpu_us_per_rt / u.proxy_cpu_us_per_rt,
      "machine CPU us per round trip", u.machine_cpu_us_per_rt, k.machine_cpu_us_per_rt,
      k.machine_cpu_us_per_rt / u.machine_cpu_us_per_rt, "bulk MiB/s", u.bulk_mib_per_s,
      k.bulk_mib_per_s, k.bulk_mib_per_s / u.bulk_mib_per_s);
  // --relay auto: the ping-pong pairs go to the kernel after 3 exchanges, the download stays in
  // the io_uring relay (its receives fill buffers).
  const RelayFigures& a = figures["auto"];
  std::printf(
      "  auto: round trips/s %.0f (%.2fx uring), proxy CPU %.1f us and machine CPU %.1f us per "
      "round trip, bulk %.0f MiB/s (%.2fx uring)\n",
      a.round_trips_per_s, a.round_trips_per_s / u.round_trips_per_s, a.proxy_cpu_us_per_rt,
      a.machine_cpu_us_per_rt, a.bulk_mib_per_s, a.bulk_mib_per_s / u.bulk_mib_per_s);
}

// Counts the proxy's syscalls and io_uring completions with `perf stat -p` (tracepoints: a count,
// not a time, so the machine's load does not move it) while it runs.
class PerfCount {
 public:
  explicit PerfCount(pid_t pid) : out_(fmt::format("/tmp/remora-perf-{}.csv", ::getpid())) {
    const std::string target = std::to_string(pid);
    child_ = ::fork();
    if (child_ == 0) {
      ::execlp("perf", "perf", "stat", "-x", ",", "-o", out_.c_str(), "-e",
               "raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,"
               "syscalls:sys_enter_getsockname,io_uring:io_uring_submit_req",
               "-p", target.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Counting starts once perf holds its counters (it can take a second on a loaded machine).
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!attached() && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(20));
    std::this_thread::sleep_for(milliseconds(50));
  }
  bool attached() const {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(fmt::format("/proc/{}/fd", child_), ec)) {
      if (fs::read_symlink(e.path(), ec).string().find("perf_event") != std::string::npos) {
        return true;
      }
    }
    return false;
  }
  // Stops perf; `event` -> count.
  std::map<std::string, double> stop() {
    ::kill(child_, SIGINT);
    int status = 0;
    ::waitpid(child_, &status, 0);
    std::map<std::string, double> counts;
    std::istringstream in(readWholeFile(out_));
    std::string line;
    while (std::getline(in, line)) {
      std::vector<std::string> f;
      std::istringstream fields(line);
      for (std::string x; std::getline(fields, x, ',');) f.push_back(x);
      if (f.size() > 2 && !f[0].empty() && std::isdigit(static_cast<unsigned char>(f[0][0]))) {
        counts[f[2]] = std::stod(f[0]);
      }
    }
    ::unlink(out_.c_str());
    return counts;
  }

 private:
  std::string out_;
  pid_t child_ = -1;
};

struct PathFigures {
  double rt_per_s = 0, syscalls_per_rt = 0, enters_per_rt = 0, cpu_us_per_rt = 0;
  double conns_per_s = 0, syscalls_per_conn = 0, getsockname_per_conn = 0, cpu_us_per_conn = 0;
  double bulk_mib_per_s = 0, syscalls_per_mib = 0, sqes_per_mib = 0, cpu_us_per_mib = 0;
  double slow_mib_per_s = 0, slow_syscalls_per_mib = 0, slow_sqes_per_mib = 0;
  double slow_cpu_us_per_mib = 0;
};

// Issue 12 item 3 (docs/PROXY.md, "io_uring path"): the io_uring relay with each change
// switched off in turn through REMORA_URING_AB, in one world, twice in alternating order.
// Per variant: 8 ping-pong connections of 64 B for 2 s, then new connections one at a time
// (connect, 64 B echo, close) for 1.5 s, then a 128 MiB download read fast and a 32 MiB one read
// slowly. REMORA_BENCH_ROUNDS sets the number of rounds (2).
// Ratios are to the first variant (put "" first in REMORA_BENCH_VARIANTS).
TEST_F(KernelRelay, UringPathSwitchesSideBySide) {
  // Churn leaves TIME_WAIT sockets in the front pod: let connects reuse them.
  ASSERT_TRUE(world_->exec(front_, {"sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"}).ok());
  // REMORA_BENCH_VARIANTS (a ;-separated list, "" = all on) narrows the comparison.
  std::vector<std::string> variants = {"", "ring-fd-off", "getsockname"};
  if (const char* only = std::getenv("REMORA_BENCH_VARIANTS")) {
    variants.clear();
    std::istringstream list(only);
    for (std::string v; std::getline(list, v, ';');) variants.push_back(v);
  }
  std::map<std::string, std::vector<PathFigures> > runs;
  std::vector<std::string> order = variants;
  const int rounds = std::getenv("REMORA_BENCH_ROUNDS") != nullptr
                         ? std::max(1, std::atoi(std::getenv("REMORA_BENCH_ROUNDS")))
                         : 2;
  for (int round = 0; round < rounds; ++round) {
    for (const std::string& v : order) {
      ::setenv("REMORA_URING_AB", v.c_str(), 1);
      startProxy("uring");
      ::unsetenv("REMORA_URING_AB");
      PathFigures f;
      const pid_t pid = proxy_->pid();
      // Ping-pong.
      std::vector<int> conns;
      for (int i = 0; i < 8; ++i) conns.push_back(dial('E'));
      ASSERT_TRUE(std::all_of(conns.begin(), conns.end(), [](int fd) { return fd >= 0; }));
      PingPong ping_pong(conns);
      {
        PerfCount perf(pid);
        const uint64_t n0 = ping_pong.roundTrips();
        const double cpu0 = cpuSeconds(pid);
        const auto t0 = Clock::now();
        std::this_thread::sleep_for(std::chrono::seconds(2));
        const double n = static_cast<double>(ping_pong.roundTrips() - n0);
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        const double cpu = cpuSeconds(pid) - cpu0;
        auto counts = perf.stop();
        f.rt_per_s = n / secs;
        f.cpu_us_per_rt = cpu * 1e6 / n;
        f.syscalls_per_rt = counts["raw_syscalls:sys_enter"] / n;
        f.enters_per_rt = counts["syscalls:sys_enter_io_uring_enter"] / n;
      }
      ping_pong.stop();
      for (int c : conns) ::shutdown(c, SHUT_RDWR);
      // Churn: one new connection per echo.
      {
        PerfCount perf(pid);
        uint64_t made = 0;
        const double cpu0 = cpuSeconds(pid);
        const auto t0 = Clock::now();
        while (Clock::now() - t0 < milliseconds(1500)) {
          int fd = dial('E');
          char buf[64] = {};
          const bool ok =
              fd >= 0 && sendAll(fd, {buf, sizeof(buf)}) && readExact(fd, buf, sizeof(buf));
          if (fd >= 0) {
            ::close(fd);
            fds_.pop_back();
          }
          ASSERT_TRUE(ok);
          ++made;
        }
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        const double cpu = cpuSeconds(pid) - cpu0;
        auto counts = perf.stop();
        const auto m = static_cast<double>(made);
        f.conns_per_s = m / secs;
        f.syscalls_per_conn = counts["raw_syscalls:sys_enter"] / m;
        f.getsockname_per_conn = counts["syscalls:sys_enter_getsockname"] / m;
        f.cpu_us_per_conn = cpu * 1e6 / m;
      }
      // Bulk: a fast reader (1 MiB reads), then a slow one (64 KiB receive buffer, 16 KiB reads),
      // whose socket fills, so the proxy's sends to it find no room for all they carry.
      for (const bool slow : {false, true}) {
        const uint64_t mib = slow ? 32 : 128;
        int fd = dial('D');
        ASSERT_GE(fd, 0);
        if (slow) {
          int small = 65536;
          setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
        }
        PerfCount perf(pid);
        const double cpu0 = cpuSeconds(pid);
        ASSERT_TRUE(writeU64(fd, mib << 20));
        std::vector<char> block(slow ? 16384 : 1 << 20);
        uint64_t got = 0;
        const auto b0 = Clock::now();
        for (ssize_t r = 0;
             got < (mib << 20) && (r = ::recv(fd, block.data(), block.size(), 0)) > 0;) {
          got += static_cast<uint64_t>(r);
        }
        const double secs = std::chrono::duration<double>(Clock::now() - b0).count();
        const double cpu = cpuSeconds(pid) - cpu0;
        auto counts = perf.stop();
        ASSERT_EQ(got, mib << 20);
        const auto m = static_cast<double>(mib);
        (slow ? f.slow_mib_per_s : f.bulk_mib_per_s) = m / secs;
        (slow ? f.slow_syscalls_per_mib : f.syscalls_per_mib) =
            counts["raw_syscalls:sys_enter"] / m;
        (slow ? f.slow_sqes_per_mib : f.sqes_per_mib) = counts["io_uring:io_uring_submit_req"] / m;
        (slow ? f.slow_cpu_us_per_mib : f.cpu_us_per_mib) = cpu * 1e6 / m;
      }
      runs[v].push_back(f);
      proxy_.reset();
    }
    std::reverse(order.begin(), order.end());
  }
  auto mean = [&](const std::string& v, double PathFigures::*field) {
    double sum = 0;
    for (const auto& f : runs[v]) sum += f.*field;
    return sum / static_cast<double>(runs[v].size());
  };
  std::printf(
      "io_uring path switches (REMORA_URING_AB; mean of %d runs each, alternating order; "
      "client, backend and proxy share the machine; measured under contention)\n  %-26s",
      rounds, "");
  for (const auto& v : variants) std::printf(" %18s", v.empty() ? "all on" : v.c_str());
  std::printf("\n");
  const std::pair<const char*, double PathFigures::*> rows[] = {
      {"round trips/s", &PathFigures::rt_per_s},
      {"syscalls per round trip", &PathFigures::syscalls_per_rt},
      {"io_uring_enter per rt", &PathFigures::enters_per_rt},
      {"proxy CPU us/round trip", &PathFigures::cpu_us_per_rt},
      {"connections/s", &PathFigures::conns_per_s},
      {"syscalls per connection", &PathFigures::syscalls_per_conn},
      {"getsockname per conn", &PathFigures::getsockname_per_conn},
      {"proxy CPU us/connection", &PathFigures::cpu_us_per_conn},
      {"bulk MiB/s", &PathFigures::bulk_mib_per_s},
      {"syscalls per MiB", &PathFigures::syscalls_per_mib},
      {"SQEs per MiB", &PathFigures::sqes_per_mib},
      {"proxy CPU us/MiB", &PathFigures::cpu_us_per_mib},
      {"slow reader MiB/s", &PathFigures::slow_mib_per_s},
      {"slow: syscalls per MiB", &PathFigures::slow_syscalls_per_mib},
      {"slow: SQEs per MiB", &PathFigures::slow_sqes_per_mib},
      {"slow: proxy CPU us/MiB", &PathFigures::slow_cpu_us_per_mib},
  };
  for (const auto& [name, field] : rows) {
    const double base = mean(variants.front(), field);
    std::printf("  %-26s", name);
    for (const auto& v : variants) {
      const double x = mean(v, field);
      std::printf(" %10.2f (%4.2fx)", x, base > 0 ? x / base : 0.0);
    }
    std::printf("\n");
  }
}

#endif  // REMORA_RELAY_BENCH

}  // namespace
}  // namespace remora::test
