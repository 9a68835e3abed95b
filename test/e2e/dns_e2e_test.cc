// remora_dns against a real DNS server: Debian's dnsmasq, run by the test inside a network
// namespace of its own (loopback only), with the resolver's queries made from that namespace.
// Checks A/AAAA answers, the TTL read back, NXDOMAIN, a server that never answers, the hard
// deadline, and a changed record picked up by DnsCache after the TTL.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/netns.h"
#include "common/subprocess.h"
#include "dns/dns_cache.h"
#include "dns/resolver.h"

namespace remora::dns {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

constexpr int kServerPort = 5300;
constexpr int kChangePort = 5301;
constexpr int kSilentPort = 5302;  // a bound UDP socket that never reads
constexpr int kUnusedPort = 5303;  // nothing listens

IpAddress ip(const char* text) { return IpAddress::parse(text).value(); }

std::string server(int port) { return "127.0.0.1:" + std::to_string(port); }

// A namespace with only `lo` up, named after this process; deleted on destruction.
class TestNetns {
 public:
  TestNetns() : name_("remora-dns-" + std::to_string(::getpid())) {
    auto add = runCommand({"ip", "netns", "add", name_});
    ok_ = add.ok() && add->exit_code == 0;
    if (!ok_) {
      error_ = add.ok() ? add->err : add.error().message;
      return;
    }
    auto up = runCommand({"ip", "netns", "exec", name_, "ip", "link", "set", "lo", "up"});
    ok_ = up.ok() && up->exit_code == 0;
    if (!ok_) error_ = up.ok() ? up->err : up.error().message;
  }
  ~TestNetns() { (void)runCommand({"ip", "netns", "del", name_}); }
  TestNetns(const TestNetns&) = delete;
  TestNetns& operator=(const TestNetns&) = delete;

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  const std::string& name() const { return name_; }
  std::string path() const { return "/var/run/netns/" + name_; }

 private:
  std::string name_;
  bool ok_ = false;
  std::string error_;
};

// One dnsmasq started by this test inside the namespace; killed by its PID and reaped on
// destruction. `ip netns exec` execs dnsmasq in place, so the child's PID is dnsmasq's.
class Dnsmasq {
 public:
  Dnsmasq(const TestNetns& netns, int port, const std::vector<std::string>& records)
      : log_path_("/tmp/remora-dns-" + std::to_string(::getpid()) + "-" + std::to_string(port) +
                  ".log") {
    std::vector<std::string> args = {"ip",
                                     "netns",
                                     "exec",
                                     netns.name(),
                                     "dnsmasq",
                                     "--keep-in-foreground",
                                     "--log-facility=-",
                                     "--conf-file=/dev/null",
                                     "--pid-file=",
                                     "--no-resolv",
                                     "--no-hosts",
                                     "--bind-interfaces",
                                     "--listen-address=127.0.0.1",
                                     "--port=" + std::to_string(port),
                                     "--local=/remora.test/",
                                     "--local-ttl=30"};
    args.insert(args.end(), records.begin(), records.end());
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, STDOUT_FILENO);
        ::dup2(fd, STDERR_FILENO);
      }
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~Dnsmasq() {
    stop();
    ::unlink(log_path_.c_str());
  }
  Dnsmasq(const Dnsmasq&) = delete;
  Dnsmasq& operator=(const Dnsmasq&) = delete;

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 50; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  std::string log() const {
    std::ifstream in(log_path_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
};

// Runs fn on a thread inside the namespace (c-ares opens its sockets on the calling thread).
Result<Resolved> resolveIn(const TestNetns& netns, Resolver& resolver, std::string_view host,
                           AddressFamilies families = AddressFamilies::kBoth) {
  Result<Resolved> out = makeError("not run");
  auto ran = runInNetns(netns.path(), [&]() -> Result<void> {
    out = resolver.resolve(host, families);
    return {};
  });
  if (!ran) return ran.error();
  return out;
}

std::unique_ptr<Resolver> makeResolver(int port, milliseconds timeout = milliseconds(1000),
                                       int tries = 2, milliseconds deadline = seconds(10)) {
  ResolverOptions options;
  options.nameservers = {server(port)};
  options.timeout = timeout;
  options.tries = tries;
  options.deadline = deadline;
  auto resolver = Resolver::create(options);
  EXPECT_TRUE(resolver.ok()) << resolver.error().message;
  return resolver.ok() ? std::move(resolver.value()) : nullptr;
}

// Waits until dnsmasq answers `host`.
bool waitUntilServing(const TestNetns& netns, int port, const std::string& host) {
  auto resolver = makeResolver(port, milliseconds(200), 1, milliseconds(500));
  if (!resolver) return false;
  auto until = SteadyClock::now() + seconds(10);
  while (SteadyClock::now() < until) {
    if (resolveIn(netns, *resolver, host).ok()) return true;
    std::this_thread::sleep_for(milliseconds(100));
  }
  return false;
}

class DnsE2e : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0 || !programInPath("dnsmasq") || !programInPath("ip")) return;
    netns_ = new TestNetns();
    if (!netns_->ok()) return;
    server_ = new Dnsmasq(
        *netns_, kServerPort,
        {"--host-record=web.remora.test,10.1.2.3,fd00:dead::3,42",
         "--host-record=web.remora.test,10.1.2.4", "--host-record=v4only.remora.test,10.1.2.5,77",
         "--cname=alias.remora.test,web.remora.test,7"});
    ready_ = waitUntilServing(*netns_, kServerPort, "web.remora.test");
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete netns_;
    netns_ = nullptr;
  }
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces)";
    if (!programInPath("dnsmasq")) GTEST_SKIP() << "dnsmasq not installed (scripts/setup.sh)";
    ASSERT_NE(netns_, nullptr);
    ASSERT_TRUE(netns_->ok()) << netns_->error();
    ASSERT_TRUE(ready_) << "dnsmasq did not answer; its log:\n" << server_->log();
  }

  static TestNetns* netns_;
  static Dnsmasq* server_;
  static bool ready_;
};

TestNetns* DnsE2e::netns_ = nullptr;
Dnsmasq* DnsE2e::server_ = nullptr;
bool DnsE2e::ready_ = false;

TEST_F(DnsE2e, ResolvesAAndAaaaWithTheRecordTtl) {
  auto resolver = makeResolver(kServerPort);
  ASSERT_NE(resolver, nullptr);

  auto both = resolveIn(*netns_, *resolver, "web.remora.test");
  ASSERT_TRUE(both.ok()) << both.error().message;
  EXPECT_EQ(both->addresses,
            (std::vector<IpAddress>{ip("10.1.2.3"), ip("10.1.2.4"), ip("fd00:dead::3")}));
  // 10.1.2.4's record has no TTL of its own, so it carries --local-ttl=30: the minimum.
  EXPECT_EQ(both->ttl, seconds(30));

  auto v6 = resolveIn(*netns_, *resolver, "web.remora.test", AddressFamilies::kIpv6);
  ASSERT_TRUE(v6.ok()) << v6.error().message;
  EXPECT_EQ(v6->addresses, std::vector<IpAddress>{ip("fd00:dead::3")});
  EXPECT_EQ(v6->ttl, seconds(42));

  auto v4 = resolveIn(*netns_, *resolver, "v4only.remora.test", AddressFamilies::kIpv4);
  ASSERT_TRUE(v4.ok()) << v4.error().message;
  EXPECT_EQ(v4->addresses, std::vector<IpAddress>{ip("10.1.2.5")});
  EXPECT_EQ(v4->ttl, seconds(77));

  // A name with only an A record still resolves when both families are asked.
  auto v4_both = resolveIn(*netns_, *resolver, "v4only.remora.test");
  ASSERT_TRUE(v4_both.ok()) << v4_both.error().message;
  EXPECT_EQ(v4_both->addresses, std::vector<IpAddress>{ip("10.1.2.5")});
}

TEST_F(DnsE2e, TheTtlOfACnameChainIsItsSmallest) {
  auto resolver = makeResolver(kServerPort);
  ASSERT_NE(resolver, nullptr);
  auto alias = resolveIn(*netns_, *resolver, "alias.remora.test", AddressFamilies::kIpv6);
  ASSERT_TRUE(alias.ok()) << alias.error().message;
  EXPECT_EQ(alias->addresses, std::vector<IpAddress>{ip("fd00:dead::3")});
  EXPECT_EQ(alias->ttl, seconds(7));
}

TEST_F(DnsE2e, NxdomainIsAClearError) {
  auto resolver = makeResolver(kServerPort);
  ASSERT_NE(resolver, nullptr);
  auto started = SteadyClock::now();
  auto missing = resolveIn(*netns_, *resolver, "nothere.remora.test");
  ASSERT_FALSE(missing.ok());
  const std::string& message = missing.error().message;
  EXPECT_NE(message.find("nothere.remora.test"), std::string::npos) << message;
  EXPECT_NE(message.find("NXDOMAIN"), std::string::npos) << message;
  EXPECT_NE(message.find(server(kServerPort)), std::string::npos) << message;
  EXPECT_LT(SteadyClock::now() - started, seconds(2));  // an answer, not a timeout
}

TEST_F(DnsE2e, AServerThatNeverAnswersTimesOut) {
  // A UDP socket bound in the namespace that nobody reads: queries vanish without an error.
  int silent = -1;
  auto bound = runInNetns(netns_->path(), [&]() -> Result<void> {
    silent = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(kSilentPort);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(silent, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return errnoError("bind silent socket");
    }
    return {};
  });
  ASSERT_TRUE(bound.ok()) << bound.error().message;

  // Per-try timeouts: 2 tries (300 ms, then 600 ms) end well inside the 10 s deadline.
  auto resolver = makeResolver(kSilentPort, milliseconds(300), 2, seconds(10));
  ASSERT_NE(resolver, nullptr);
  auto started = SteadyClock::now();
  auto result = resolveIn(*netns_, *resolver, "web.remora.test");
  auto took = SteadyClock::now() - started;
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().message.find("timeout"), std::string::npos) << result.error().message;
  EXPECT_NE(result.error().message.find("web.remora.test"), std::string::npos);
  EXPECT_GE(took, milliseconds(250));
  EXPECT_LT(took, seconds(5));
  std::cout << "silent server, 2 tries x 300 ms: failed after "
            << std::chrono::duration_cast<milliseconds>(took).count() << " ms\n";

  // The hard deadline cuts c-ares' own retries short: 3 tries of 2 s, deadline 700 ms.
  auto bounded = makeResolver(kSilentPort, milliseconds(2000), 3, milliseconds(700));
  ASSERT_NE(bounded, nullptr);
  started = SteadyClock::now();
  auto cut = resolveIn(*netns_, *bounded, "web.remora.test");
  took = SteadyClock::now() - started;
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.error().message.find("700 ms deadline"), std::string::npos) << cut.error().message;
  EXPECT_GE(took, milliseconds(650));
  EXPECT_LT(took, milliseconds(2500));
  std::cout << "silent server, 700 ms deadline: failed after "
            << std::chrono::duration_cast<milliseconds>(took).count() << " ms\n";
  ::close(silent);
}

TEST_F(DnsE2e, AnUnusedPortFailsWithinTheDeadline) {
  auto resolver = makeResolver(kUnusedPort, milliseconds(500), 2, seconds(5));
  ASSERT_NE(resolver, nullptr);
  auto started = SteadyClock::now();
  auto result = resolveIn(*netns_, *resolver, "web.remora.test");
  auto took = SteadyClock::now() - started;
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().message.find("web.remora.test"), std::string::npos);
  EXPECT_NE(result.error().message.find(server(kUnusedPort)), std::string::npos)
      << result.error().message;
  EXPECT_LT(took, seconds(5) + milliseconds(500));
  std::cout << "unused port: " << result.error().message << " after "
            << std::chrono::duration_cast<milliseconds>(took).count() << " ms\n";
}

TEST_F(DnsE2e, GivenNameserversTheHostsFileIsNotRead) {
  // A name from this machine's /etc/hosts other than localhost (which c-ares answers itself).
  std::ifstream hosts("/etc/hosts");
  std::string line;
  std::string name;
  while (name.empty() && std::getline(hosts, line)) {
    std::istringstream fields(line.substr(0, line.find('#')));
    std::string address;
    std::string candidate;
    fields >> address;
    while (fields >> candidate) {
      if (candidate.rfind("localhost", 0) != 0 && candidate.rfind("ip6-", 0) != 0) {
        name = candidate;
        break;
      }
    }
  }
  if (name.empty()) GTEST_SKIP() << "/etc/hosts names only localhost";
  auto resolver = makeResolver(kServerPort);
  ASSERT_NE(resolver, nullptr);
  auto result = resolveIn(*netns_, *resolver, name);
  ASSERT_FALSE(result.ok()) << name << " was answered from /etc/hosts";
  // dnsmasq refuses names outside its --local domain.
  EXPECT_NE(result.error().message.find("REFUSED"), std::string::npos) << result.error().message;
  EXPECT_NE(result.error().message.find(name), std::string::npos) << result.error().message;
}

TEST_F(DnsE2e, DnsCachePicksUpAChangedRecordAfterTheTtl) {
  auto first = std::make_unique<Dnsmasq>(
      *netns_, kChangePort,
      std::vector<std::string>{"--host-record=moving.remora.test,10.9.0.1,2"});
  ASSERT_TRUE(waitUntilServing(*netns_, kChangePort, "moving.remora.test")) << first->log();

  auto resolver = makeResolver(kChangePort);
  ASSERT_NE(resolver, nullptr);
  DnsCacheOptions options;
  options.min_refresh = seconds(1);
  DnsCache cache([&](std::string_view host) { return resolveIn(*netns_, *resolver, host); },
                 options);

  auto before = cache.lookup("moving.remora.test");
  ASSERT_TRUE(before.ok()) << before.error().message;
  EXPECT_EQ(before->resolved.addresses, std::vector<IpAddress>{ip("10.9.0.1")});
  EXPECT_EQ(before->resolved.ttl, seconds(2));
  ASSERT_TRUE(cache.nextRefresh().has_value());
  EXPECT_LE(*cache.nextRefresh() - SteadyClock::now(), seconds(2));

  // The record changes: a new server on the same port with a new address.
  first->stop();
  auto second = std::make_unique<Dnsmasq>(
      *netns_, kChangePort,
      std::vector<std::string>{"--host-record=moving.remora.test,10.9.0.2,2"});
  auto direct = makeResolver(kChangePort, milliseconds(200), 1, milliseconds(500));
  ASSERT_NE(direct, nullptr);
  bool changed = false;
  for (int i = 0; i < 100 && !changed; ++i) {
    auto now = resolveIn(*netns_, *direct, "moving.remora.test");
    changed = now.ok() && now->addresses == std::vector<IpAddress>{ip("10.9.0.2")};
    if (!changed) std::this_thread::sleep_for(milliseconds(100));
  }
  ASSERT_TRUE(changed) << second->log();

  // Until the TTL has passed the cache still serves the old answer (if restarting took
  // longer than the TTL, the refresh is already due and this step is skipped).
  if (SteadyClock::now() < *cache.nextRefresh()) {
    auto cached = cache.lookup("moving.remora.test");
    ASSERT_TRUE(cached.ok());
    EXPECT_EQ(cached->resolved.addresses, std::vector<IpAddress>{ip("10.9.0.1")});
  }
  std::this_thread::sleep_until(*cache.nextRefresh() + milliseconds(50));
  EXPECT_EQ(cache.dueHosts(), std::vector<std::string>{"moving.remora.test"});
  auto after = cache.lookup("moving.remora.test");
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_FALSE(after->stale);
  EXPECT_EQ(after->resolved.addresses, std::vector<IpAddress>{ip("10.9.0.2")});

  // The server goes away: the last good answer is served stale, with the reason.
  second->stop();
  std::this_thread::sleep_until(*cache.nextRefresh() + milliseconds(50));
  auto stale = cache.lookup("moving.remora.test");
  ASSERT_TRUE(stale.ok()) << stale.error().message;
  EXPECT_TRUE(stale->stale);
  EXPECT_EQ(stale->resolved.addresses, std::vector<IpAddress>{ip("10.9.0.2")});
  EXPECT_NE(stale->stale_error.find("moving.remora.test"), std::string::npos);
}

}  // namespace
}  // namespace remora::dns
