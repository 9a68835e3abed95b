#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "../unit/iptables_fixtures.h"
#include "common/netns.h"
#include "common/subprocess.h"
#include "intercept/backend.h"
#include "intercept/dump.h"
#include "intercept/nftables_applier.h"
#include "intercept/plan.h"
#include "intercept/trace.h"

namespace remora::intercept {
namespace {

using fixtures::readFixture;

// A network namespace named after this process, removed (by that name) however the test ends.
// It gets lo, a veth pair whose both ends stay inside it, the seed client's address and a
// default route, so `ip route get` answers as in a pod; nothing can leave it.
class ScratchNetns {
 public:
  explicit ScratchNetns(const char* prefix = "rmtrace")
      : name_(fmt::format("{}{}", prefix, ::getpid())) {}
  ~ScratchNetns() {
    if (created_) (void)runCommand({"ip", "netns", "del", name_});
  }
  ScratchNetns(const ScratchNetns&) = delete;
  ScratchNetns& operator=(const ScratchNetns&) = delete;

  // Returns an empty string on success, else what failed.
  std::string create() {
    auto add = runCommand({"ip", "netns", "add", name_});
    if (!add || add->exit_code != 0) return "ip netns add failed: " + (add ? add->err : "");
    created_ = true;
    for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
             {"ip", "link", "set", "lo", "up"},
             {"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"},
             {"ip", "link", "set", "eth0", "up"},
             {"ip", "link", "set", "peer0", "up"},
             {"ip", "addr", "add", "10.244.0.5/24", "dev", "eth0"},
             {"ip", "route", "add", "default", "dev", "eth0"}}) {
      auto r = exec(argv);
      if (!r || r->exit_code != 0) {
        return fmt::format("'{}' failed: {}", fmt::join(argv, " "), r ? r->err : r.error().message);
      }
    }
    return {};
  }

  Result<CommandOutput> exec(std::vector<std::string> argv, const std::string& input = {}) {
    argv.insert(argv.begin(), {"ip", "netns", "exec", name_});
    return runCommand(argv, input);
  }

  std::string path() const { return "/var/run/netns/" + name_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  bool created_ = false;
};

struct BackendCase {
  IptablesBackend backend;
  const char* restore;
  const char* name;
};

class TraceE2eTest : public ::testing::TestWithParam<BackendCase> {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: creates a network namespace";
    if (!programInPath(GetParam().restore)) {
      GTEST_SKIP() << GetParam().restore << " is not installed";
    }
    std::string failed = ns_.create();
    if (!failed.empty()) GTEST_SKIP() << "cannot build the test netns: " << failed;
  }

  ScratchNetns ns_;
};

TEST_P(TraceE2eTest, KubeProxyServiceSplitsFiftyFifty) {
  auto loaded = ns_.exec({GetParam().restore}, readFixture("kube_proxy_seed.save"));
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  if (loaded->exit_code != 0) {
    GTEST_SKIP() << GetParam().restore << " cannot load the nat table here: " << loaded->err;
  }

  // Both the explicit backend and auto-detection, which must pick the backend holding the rules.
  for (IptablesBackend requested : {GetParam().backend, IptablesBackend::kAuto}) {
    Result<TraceReport> report = makeError("not run");
    auto ran = runInNetns(ns_.path(), [&]() -> Result<void> {
      report = traceCurrentNetns(
          TraceRequest{*SocketAddress::parse("10.1.122.241:9999"), 0, 0, requested, {}, {}});
      return {};
    });
    ASSERT_TRUE(ran.ok()) << ran.error().message;
    ASSERT_TRUE(report.ok()) << report.error().message;
    EXPECT_EQ(report->backend, GetParam().name);
    ASSERT_TRUE(report->packet.source.has_value()) << renderTrace(*report);
    EXPECT_EQ(report->packet.source->toString(), "10.244.0.5");
    EXPECT_EQ(report->packet.out_interface.value_or(""), "eth0");

    const auto& outcomes = report->result.outcomes;
    ASSERT_EQ(outcomes.size(), 2u) << renderTrace(*report);
    EXPECT_EQ(outcomes[0].kind, OutcomeKind::kDnat);
    EXPECT_EQ(outcomes[0].destination->toString(), "10.244.1.168:80");
    EXPECT_DOUBLE_EQ(outcomes[0].probability, 0.5);
    EXPECT_EQ(outcomes[1].kind, OutcomeKind::kDnat);
    EXPECT_EQ(outcomes[1].destination->toString(), "10.244.2.74:80");
    EXPECT_DOUBLE_EQ(outcomes[1].probability, 0.5);
    const std::string text = renderTrace(*report);
    EXPECT_NE(text.find("→ DNAT 10.244.1.168:80 via KUBE-SEP-2OWQ4WZBKQXM6JKW, 50.00%"),
              std::string::npos)
        << text;

    // The node port on the pod's own address: addrtype LOCAL read from the kernel.
    Result<TraceReport> nodeport = makeError("not run");
    ASSERT_TRUE(runInNetns(ns_.path(), [&]() -> Result<void> {
                  nodeport = traceCurrentNetns(TraceRequest{
                      *SocketAddress::parse("10.244.0.5:30999"), 0, 0, requested, {}, {}});
                  return {};
                }).ok());
    ASSERT_TRUE(nodeport.ok()) << nodeport.error().message;
    ASSERT_EQ(nodeport->result.outcomes.size(), 2u) << renderTrace(*nodeport);
    EXPECT_EQ(nodeport->result.outcomes[0].mark, 0x4000u);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Backends, TraceE2eTest,
    ::testing::Values(BackendCase{IptablesBackend::kNft, "iptables-nft-restore", "iptables-nft"},
                      BackendCase{IptablesBackend::kLegacy, "iptables-legacy-restore",
                                  "iptables-legacy"}),
    [](const auto& info) {
      return std::string(info.param.backend == IptablesBackend::kNft ? "nft" : "legacy");
    });

// Remora installed with nft while kube-proxy-style rules sit in legacy: dump follows detection
// (legacy holds rules) and warns that Remora's chains live in the other backend.
TEST(DumpE2eTest, WarnsAboutRemoraChainsInTheOtherBackend) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: creates a network namespace";
  for (const char* tool : {"iptables-nft-restore", "iptables-legacy-restore"}) {
    if (!programInPath(tool)) GTEST_SKIP() << tool << " is not installed";
  }
  ScratchNetns ns;
  std::string failed = ns.create();
  if (!failed.empty()) GTEST_SKIP() << "cannot build the test netns: " << failed;
  auto legacy = ns.exec({"iptables-legacy-restore"}, readFixture("kube_proxy_seed.save"));
  ASSERT_TRUE(legacy.ok());
  if (legacy->exit_code != 0)
    GTEST_SKIP() << "iptables-legacy cannot load nat here: " << legacy->err;
  auto remora = ns.exec({"iptables-nft-restore", "--noflush"},
                        renderRestore(planFamily(InterceptOptions{}, Family::kIpv4), {}));
  ASSERT_TRUE(remora.ok());
  ASSERT_EQ(remora->exit_code, 0) << remora->err;

  Result<DumpReport> report = makeError("not run");
  ASSERT_TRUE(runInNetns(ns.path(), [&]() -> Result<void> {
                report = dumpCurrentNetns(IptablesBackend::kAuto);
                return {};
              }).ok());
  ASSERT_TRUE(report.ok()) << report.error().message;
  ASSERT_FALSE(report->families.empty());
  const auto& v4 = report->families[0];
  EXPECT_EQ(v4.backend, "iptables-legacy");
  EXPECT_FALSE(v4.installed);
  ASSERT_EQ(report->warnings.size(), 1u) << renderDump(*report);
  EXPECT_NE(report->warnings[0].find("mixed backends: Remora's chains also exist in iptables-nft"),
            std::string::npos)
      << report->warnings[0];

  // Asked for nft explicitly, the same netns shows Remora installed.
  Result<DumpReport> nft = makeError("not run");
  ASSERT_TRUE(runInNetns(ns.path(), [&]() -> Result<void> {
                nft = dumpCurrentNetns(IptablesBackend::kNft);
                return {};
              }).ok());
  ASSERT_TRUE(nft.ok()) << nft.error().message;
  EXPECT_TRUE(nft->families[0].installed);
  EXPECT_NE(renderDump(*nft).find("#1 all TCP leaving the pod enters REMORA_OUTPUT  [0 packets"),
            std::string::npos)
      << renderDump(*nft);
}

}  // namespace
}  // namespace remora::intercept

namespace remora::intercept {
namespace {

// kube-proxy's node rules (test/fixtures/kube_proxy_node.save) loaded into a netns, then a REAL
// TCP connection for each traced case: the trace's verdict must be what the kernel does.

// The fixture without its nfacct matches: the test netns has no nfacct objects for them to
// name, and the match only counts (the trace passes it through either way).
std::string nodeRulesWithoutNfacct() {
  return std::regex_replace(readFixture("kube_proxy_node.save"),
                            std::regex(" -m nfacct --nfacct-name [^ ]+"), "");
}

struct ConnectResult {
  bool timed_out = false;
  int error = 0;  // SO_ERROR once the connect finished; 0 when it connected
  double seconds = 0;
};

// One non-blocking IPv4 connect from the calling thread's netns, bounded by `bound`.
ConnectResult connectOnce(const SocketAddress& to, std::chrono::milliseconds bound) {
  ConnectResult r;
  auto start = std::chrono::steady_clock::now();
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    r.error = errno;
    return r;
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(to.port);
  ::inet_pton(AF_INET, to.ip.toString().c_str(), &sa.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    if (errno != EINPROGRESS) {
      r.error = errno;
    } else {
      pollfd p{fd, POLLOUT, 0};
      int n = ::poll(&p, 1, static_cast<int>(bound.count()));
      if (n == 0) {
        r.timed_out = true;
      } else {
        socklen_t len = sizeof r.error;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &r.error, &len);
      }
    }
  }
  ::close(fd);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

Result<TraceReport> traceIn(const std::string& netns, const TraceRequest& request) {
  Result<TraceReport> report = makeError("not run");
  auto ran = runInNetns(netns, [&]() -> Result<void> {
    report = traceCurrentNetns(request);
    return {};
  });
  if (!ran) return ran.error();
  return report;
}

ConnectResult connectIn(const std::string& netns, const std::string& to) {
  ConnectResult r;
  auto ran = runInNetns(netns, [&]() -> Result<void> {
    r = connectOnce(*SocketAddress::parse(to), std::chrono::milliseconds(1000));
    return {};
  });
  EXPECT_TRUE(ran.ok());
  return r;
}

// The one outcome the trace gives must be what the connection met.
void expectAgreement(const TraceReport& report, const ConnectResult& real, OutcomeKind kind,
                     const std::string& chain) {
  const std::string text = renderTrace(report);
  ASSERT_EQ(report.result.outcomes.size(), 1u) << text;
  const auto& o = report.result.outcomes[0];
  EXPECT_EQ(o.kind, kind) << text;
  EXPECT_EQ(o.table, "filter") << text;
  EXPECT_EQ(o.chain, chain) << text;
  if (kind == OutcomeKind::kReject) {
    EXPECT_FALSE(real.timed_out) << text;
    EXPECT_EQ(real.error, ECONNREFUSED) << std::strerror(real.error) << "\n" << text;
    EXPECT_LT(real.seconds, 0.5) << text;
    EXPECT_NE(text.find("connect() fails at once with ECONNREFUSED"), std::string::npos) << text;
  } else {
    EXPECT_TRUE(real.timed_out) << "connect ended with " << std::strerror(real.error) << "\n"
                                << text;
    EXPECT_NE(text.find("connect() times out"), std::string::npos) << text;
  }
}

// A client at 192.0.2.200 in a netns of its own, whose only link is peer0, the other end of the
// node netns's eth0 (which has no link out either). Its default route goes through 10.244.0.5.
struct ClientNetns {
  ScratchNetns ns{"rmtracecl"};
  bool added = false;
  ClientNetns() = default;
  ClientNetns(const ClientNetns&) = delete;
  ClientNetns& operator=(const ClientNetns&) = delete;
  ~ClientNetns() {
    if (added) (void)runCommand({"ip", "netns", "del", ns.name()});
  }

  // Returns an empty string on success, else what failed.
  std::string attach(ScratchNetns& node) {
    auto add = runCommand({"ip", "netns", "add", ns.name()});
    if (!add || add->exit_code != 0) return "ip netns add failed: " + (add ? add->err : "");
    added = true;
    const std::vector<std::pair<ScratchNetns*, std::vector<std::string>>> steps = {
        {&node, {"ip", "link", "set", "peer0", "netns", ns.name()}},
        {&node, {"ip", "route", "add", "192.0.2.200/32", "dev", "eth0"}},
        {&ns, {"ip", "link", "set", "lo", "up"}},
        {&ns, {"ip", "link", "set", "peer0", "up"}},
        {&ns, {"ip", "addr", "add", "192.0.2.200/32", "dev", "peer0"}},
        {&ns, {"ip", "route", "add", "10.244.0.5/32", "dev", "peer0"}},
        {&ns, {"ip", "route", "add", "default", "via", "10.244.0.5", "dev", "peer0"}}};
    for (const auto& [where, argv] : steps) {
      auto r = where->exec(argv);
      if (!r || r->exit_code != 0) {
        return fmt::format("'{}' failed: {}", fmt::join(argv, " "), r ? r->err : r.error().message);
      }
    }
    return {};
  }
};

class TraceKubeE2eTest : public ::testing::TestWithParam<BackendCase> {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: creates network namespaces";
    if (!programInPath(GetParam().restore)) {
      GTEST_SKIP() << GetParam().restore << " is not installed";
    }
    std::string failed = node_.create();
    if (!failed.empty()) GTEST_SKIP() << "cannot build the test netns: " << failed;
    auto loaded = node_.exec({GetParam().restore}, nodeRulesWithoutNfacct());
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
    if (loaded->exit_code != 0) {
      GTEST_SKIP() << GetParam().restore << " cannot load kube-proxy's rules here (a missing "
                   << "match or target in this kernel?): " << loaded->err;
    }
  }

  TraceRequest request(const std::string& to) const {
    TraceRequest r;
    r.destination = *SocketAddress::parse(to);
    r.backend = GetParam().backend;
    return r;
  }

  ScratchNetns node_;
};

// A socket of the netns itself: nat OUTPUT, then filter OUTPUT.
TEST_P(TraceKubeE2eTest, LocalConnectionsMeetTheVerdictTheTraceGives) {
  // No endpoints: filter KUBE-SERVICES rejects.
  auto cart = traceIn(node_.path(), request("10.96.60.6:80"));
  ASSERT_TRUE(cart.ok()) << cart.error().message;
  expectAgreement(*cart, connectIn(node_.path(), "10.96.60.6:80"), OutcomeKind::kReject,
                  "KUBE-SERVICES");
  // The LoadBalancer IP from 10.244.0.5, outside loadBalancerSourceRanges: dropped.
  auto api = traceIn(node_.path(), request("198.51.100.7:443"));
  ASSERT_TRUE(api.ok()) << api.error().message;
  expectAgreement(*api, connectIn(node_.path(), "198.51.100.7:443"), OutcomeKind::kDrop,
                  "KUBE-PROXY-FIREWALL");
}

// A client in a netns of its own, routed through the node netns that holds the rules: nat
// PREROUTING, then filter FORWARD, traced with --source.
TEST_P(TraceKubeE2eTest, ForwardedConnectionsMeetTheVerdictTheTraceGives) {
  ClientNetns client;
  ASSERT_EQ(client.attach(node_), "");
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {"sysctl", "-qw", "net.ipv4.ip_forward=1"},
           // Service addresses route to a second veth pair, both ends in the node netns:
           // forwarded out of the interface they came in on, they would draw an ICMP redirect
           // first, which uses up the per-host ICMP rate limit and swallows REJECT's error.
           // Nothing answers on kube1, so whatever is forwarded there goes nowhere.
           {"ip", "link", "add", "kube0", "type", "veth", "peer", "name", "kube1"},
           {"ip", "link", "set", "kube0", "up"},
           {"ip", "link", "set", "kube1", "up"},
           {"ip", "route", "add", "10.96.0.0/12", "dev", "kube0"},
           {"ip", "route", "add", "198.51.100.0/24", "dev", "kube0"}}) {
    auto r = node_.exec(argv);
    ASSERT_TRUE(r.ok() && r->exit_code == 0)
        << fmt::format("{}", fmt::join(argv, " ")) << ": " << (r ? r->err : r.error().message);
  }

  auto from_client = [&](const std::string& to) {
    TraceRequest r = request(to);
    r.source = *IpAddress::parse("192.0.2.200");
    return traceIn(node_.path(), r);
  };
  auto cart = from_client("10.96.60.6:80");
  ASSERT_TRUE(cart.ok()) << cart.error().message;
  EXPECT_EQ(cart->packet.in_interface.value_or(""), "eth0");  // the route back to the client
  EXPECT_NE(renderTrace(*cart).find("then the filter table:\n  FORWARD #1"), std::string::npos)
      << renderTrace(*cart);
  expectAgreement(*cart, connectIn(client.ns.path(), "10.96.60.6:80"), OutcomeKind::kReject,
                  "KUBE-SERVICES");
  auto api = from_client("198.51.100.7:443");
  ASSERT_TRUE(api.ok()) << api.error().message;
  expectAgreement(*api, connectIn(client.ns.path(), "198.51.100.7:443"), OutcomeKind::kDrop,
                  "KUBE-PROXY-FIREWALL");
}

// A REDIRECT in nat PREROUTING: the kernel sends the connection to the receiving interface's
// primary address (10.244.0.5, not the 10.244.0.9 the client dialled, and not 127.0.0.1), so a
// filter INPUT rule rejecting port 15006 on 127.0.0.1 or on 10.244.0.9 does not see it. The trace
// must name the address the listener's accepted socket reports.
TEST_P(TraceKubeE2eTest, RedirectInPreroutingLandsOnTheReceivingInterfacesPrimaryAddress) {
  ClientNetns client;
  ASSERT_EQ(client.attach(node_), "");
  auto secondary = node_.exec({"ip", "addr", "add", "10.244.0.9/24", "dev", "eth0"});
  ASSERT_TRUE(secondary.ok() && secondary->exit_code == 0) << (secondary ? secondary->err : "");
  auto loaded =
      node_.exec({GetParam().restore},
                 "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                 ":POSTROUTING ACCEPT [0:0]\n"
                 "-A PREROUTING -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 15006\nCOMMIT\n"
                 "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                 "-A INPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 15006 -j REJECT\n"
                 "-A INPUT -d 10.244.0.9/32 -p tcp -m tcp --dport 15006 -j REJECT\nCOMMIT\n");
  ASSERT_TRUE(loaded.ok() && loaded->exit_code == 0) << (loaded ? loaded->err : "");

  int listener = -1;
  ASSERT_TRUE(runInNetns(node_.path(), [&]() -> Result<void> {
                listener = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                sockaddr_in any{};
                any.sin_family = AF_INET;
                any.sin_port = htons(15006);
                if (listener < 0 ||
                    ::bind(listener, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0 ||
                    ::listen(listener, 4) != 0) {
                  return makeError(fmt::format("listener: {}", std::strerror(errno)));
                }
                return {};
              }).ok());
  struct Close {
    int fd;
    ~Close() {
      if (fd >= 0) ::close(fd);
    }
  } close_listener{listener};

  TraceRequest r = request("10.244.0.9:8080");
  r.source = *IpAddress::parse("192.0.2.200");
  auto report = traceIn(node_.path(), r);
  ASSERT_TRUE(report.ok()) << report.error().message;
  const std::string text = renderTrace(*report);
  ASSERT_EQ(report->result.outcomes.size(), 1u) << text;
  const auto& o = report->result.outcomes[0];
  EXPECT_EQ(o.kind, OutcomeKind::kRedirect) << text;
  EXPECT_EQ(o.accepted_by, "filter INPUT: accepted (policy ACCEPT)") << text;
  ASSERT_TRUE(o.destination.has_value()) << text;

  auto real = connectIn(client.ns.path(), "10.244.0.9:8080");
  EXPECT_FALSE(real.timed_out) << text;
  EXPECT_EQ(real.error, 0) << std::strerror(real.error) << "\n" << text;
  pollfd p{listener, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 1000), 1) << "nothing reached the listener on 15006\n" << text;
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  int accepted = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(accepted, 0) << std::strerror(errno);
  ASSERT_EQ(::getsockname(accepted, reinterpret_cast<sockaddr*>(&local), &len), 0);
  ::close(accepted);
  auto landed = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&local));
  ASSERT_TRUE(landed.has_value());
  EXPECT_EQ(landed->toString(), "10.244.0.5:15006");
  EXPECT_EQ(o.destination->toString(), landed->toString()) << text;
  EXPECT_NE(text.find("REDIRECT to local port 15006 on 10.244.0.5"), std::string::npos) << text;
}

// A listening socket in a netns, closed with the test.
class Listener {
 public:
  Listener(const std::string& netns, uint16_t port) {
    auto made = runInNetns(netns, [&]() -> Result<void> {
      fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      const int one = 1;
      ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in any{};
      any.sin_family = AF_INET;
      any.sin_port = htons(port);
      if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0 ||
          ::listen(fd_, 64) != 0) {
        return makeError(fmt::format("listener: {}", std::strerror(errno)));
      }
      return {};
    });
    EXPECT_TRUE(made.ok()) << made.error().message;
  }
  ~Listener() {
    if (fd_ >= 0) ::close(fd_);
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // The local address of the next accepted connection ("" when none came within a second).
  std::string acceptedOn() const {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 1000) != 1) return "";
    int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return "";
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    ::getsockname(c, reinterpret_cast<sockaddr*>(&local), &len);
    ::close(c);
    auto sa = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&local));
    return sa ? sa->toString() : "";
  }

 private:
  int fd_ = -1;
};

// kube-proxy's nftables mode (test/fixtures/kube_proxy_nft.nft, table ip kube-proxy) loaded into a
// netns with no iptables rules: dump --trace walks its base chains, and real connections meet
// what it says: the no-endpoint map rejects, the source-range firewall drops, and the numgen map
// spreads a Service over its two endpoints (here the netns's own addresses, so the accepted
// socket shows which one).
TEST(TraceNftE2eTest, KubeProxyNftablesModeMeetsTheVerdictTheTraceGives) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: creates a network namespace";
  if (!programInPath("nft")) GTEST_SKIP() << "nft is not installed";
  ScratchNetns ns;
  std::string failed = ns.create();
  if (!failed.empty()) GTEST_SKIP() << "cannot build the test netns: " << failed;
  auto extra = ns.exec({"ip", "addr", "add", "10.244.0.6/24", "dev", "eth0"});
  ASSERT_TRUE(extra.ok() && extra->exit_code == 0) << (extra ? extra->err : "");
  auto loaded = ns.exec({"nft", "-f", std::string(REMORA_FIXTURES_DIR) + "/kube_proxy_nft.nft"});
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  if (loaded->exit_code != 0) GTEST_SKIP() << "nft cannot load the fixture here: " << loaded->err;
  TraceRequest request;
  request.backend = IptablesBackend::kNft;

  request.destination = *SocketAddress::parse("10.96.60.6:80");
  auto cart = traceIn(ns.path(), request);
  ASSERT_TRUE(cart.ok()) << cart.error().message;
  EXPECT_EQ(renderTrace(*cart).find("NOT WALKED"), std::string::npos) << renderTrace(*cart);
  EXPECT_NE(renderTrace(*cart).find("and nftables ip kube-proxy"), std::string::npos)
      << renderTrace(*cart);
  auto real = connectIn(ns.path(), "10.96.60.6:80");
  ASSERT_EQ(cart->result.outcomes.size(), 1u) << renderTrace(*cart);
  EXPECT_EQ(cart->result.outcomes[0].kind, OutcomeKind::kReject) << renderTrace(*cart);
  EXPECT_EQ(real.error, ECONNREFUSED) << std::strerror(real.error);
  EXPECT_FALSE(real.timed_out);

  request.destination = *SocketAddress::parse("198.51.100.7:443");
  auto api = traceIn(ns.path(), request);
  ASSERT_TRUE(api.ok()) << api.error().message;
  ASSERT_EQ(api->result.outcomes.size(), 1u) << renderTrace(*api);
  EXPECT_EQ(api->result.outcomes[0].kind, OutcomeKind::kDrop) << renderTrace(*api);
  EXPECT_TRUE(connectIn(ns.path(), "198.51.100.7:443").timed_out);

  Listener listener(ns.path(), 8080);
  request.destination = *SocketAddress::parse("10.96.0.20:80");
  auto local = traceIn(ns.path(), request);
  ASSERT_TRUE(local.ok()) << local.error().message;
  const std::string text = renderTrace(*local);
  ASSERT_EQ(local->result.outcomes.size(), 2u) << text;
  std::set<std::string> traced;
  for (const auto& o : local->result.outcomes) {
    EXPECT_EQ(o.kind, OutcomeKind::kDnat) << text;
    EXPECT_DOUBLE_EQ(o.probability, 0.5) << text;
    if (o.destination) traced.insert(o.destination->toString());
  }
  EXPECT_EQ(traced, (std::set<std::string>{"10.244.0.5:8080", "10.244.0.6:8080"})) << text;
  std::set<std::string> landed;
  for (int i = 0; i < 24; ++i) {
    auto c = connectIn(ns.path(), "10.96.0.20:80");
    ASSERT_EQ(c.error, 0) << std::strerror(c.error) << "\n" << text;
    landed.insert(listener.acceptedOn());
  }
  // 24 connections all on one endpoint would happen with probability 2^-23.
  EXPECT_EQ(landed, traced) << text;
}

// Remora's own nftables mode: the inet remora table is walked, so the app's connection is
// traced to the outbound listener and lands there, and the proxy's own (uid 1337) is not.
TEST(TraceNftE2eTest, RemorasNftablesModeIsWalked) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: creates a network namespace";
  ScratchNetns ns;
  std::string failed = ns.create();
  if (!failed.empty()) GTEST_SKIP() << "cannot build the test netns: " << failed;
  auto installed = runInNetns(ns.path(), [&]() -> Result<void> {
    auto r = makeNftablesApplier()->install(InterceptOptions{});
    if (!r) return r.error();
    return {};
  });
  if (!installed)
    GTEST_SKIP() << "cannot install the inet remora table: " << installed.error().message;
  Listener listener(ns.path(), 15001);
  TraceRequest request;
  request.destination = *SocketAddress::parse("10.1.2.3:80");
  request.backend = IptablesBackend::kNft;
  auto app = traceIn(ns.path(), request);
  ASSERT_TRUE(app.ok()) << app.error().message;
  const std::string text = renderTrace(*app);
  ASSERT_EQ(app->result.outcomes.size(), 1u) << text;
  EXPECT_EQ(app->result.outcomes[0].kind, OutcomeKind::kRedirect) << text;
  EXPECT_EQ(app->result.outcomes[0].table, "inet remora") << text;
  EXPECT_NE(text.find("(captured by the proxy's outbound listener)"), std::string::npos) << text;
  auto real = connectIn(ns.path(), "10.1.2.3:80");
  EXPECT_EQ(real.error, 0) << std::strerror(real.error);
  EXPECT_EQ(listener.acceptedOn(), app->result.outcomes[0].destination->toString()) << text;

  request.uid = 1337;
  request.gid = 1337;
  auto proxy = traceIn(ns.path(), request);
  ASSERT_TRUE(proxy.ok()) << proxy.error().message;
  ASSERT_EQ(proxy->result.outcomes.size(), 1u) << renderTrace(*proxy);
  EXPECT_EQ(proxy->result.outcomes[0].kind, OutcomeKind::kUnchanged) << renderTrace(*proxy);
}

// dump (without --trace) in nftables mode: Remora's inet remora table is listed rule by rule with
// kube-proxy's nftables base chains placed against it, in the human and the JSON output.
TEST(DumpE2eTest, NftablesModeInstallIsListed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: creates a network namespace";
  if (!programInPath("nft")) GTEST_SKIP() << "nft is not installed";
  ScratchNetns ns;
  std::string failed = ns.create();
  if (!failed.empty()) GTEST_SKIP() << "cannot build the test netns: " << failed;
  auto loaded = ns.exec({"nft", "-f", std::string(REMORA_FIXTURES_DIR) + "/kube_proxy_nft.nft"});
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  if (loaded->exit_code != 0) GTEST_SKIP() << "nft cannot load the fixture here: " << loaded->err;
  Result<DumpReport> report = makeError("not run");
  auto ran = runInNetns(ns.path(), [&]() -> Result<void> {
    auto r = makeNftablesApplier()->install(InterceptOptions{});
    if (!r) return r.error();
    report = dumpCurrentNetns(IptablesBackend::kAuto);
    return {};
  });
  if (!ran) GTEST_SKIP() << "cannot install the inet remora table: " << ran.error().message;
  ASSERT_TRUE(report.ok()) << report.error().message;
  const std::string text = renderDump(*report);
  ASSERT_TRUE(report->nftables.has_value()) << text;
  EXPECT_TRUE(report->nftables->installed) << text;
  EXPECT_FALSE(report->families.empty() || report->families[0].installed) << text;
  EXPECT_NE(text.find("Note: Remora is installed in nftables mode"), std::string::npos) << text;
  EXPECT_NE(text.find("nftables: Remora's interception is installed (table inet remora)"),
            std::string::npos)
      << text;
  // Each of Remora's rules in the iptables dump's words, then as nft lists it.
  for (const char* rule : {
           "  inet remora nat_output (nat hook output priority -100, policy accept)\n"
           "      #1 IPv4: all TCP leaving the pod enters REMORA_OUTPUT_v4\n"
           "         meta nfproto ipv4 meta l4proto tcp jump REMORA_OUTPUT_v4\n",
           "  inet remora REMORA_REDIRECT_v4\n"
           "      #1 redirect to local port 15001 (the proxy's outbound listener)\n"
           "         meta l4proto tcp redirect to :15001\n",
           "      #4 proxy's own traffic (uid 1337): not captured\n"
           "         meta skuid 1337 return\n",
           "      #3 app traffic on loopback (not uid 1337): not captured\n"
           "         oifname \"lo\" meta skuid != 1337 return\n",
           "      #2 proxy to a local non-loopback address (uid 1337): back through the inbound "
           "redirect\n"
           "         oifname \"lo\" ip daddr != 127.0.0.1 meta skuid 1337 jump "
           "REMORA_IN_REDIRECT_v4\n",
           "      #8 to 127.0.0.1/32: not captured\n",
           "      #9 everything else: redirect to the proxy (REMORA_REDIRECT_v4)\n",
           "      #6 everything else: redirect to the proxy (REMORA_IN_REDIRECT_v4)\n",
           "  inet remora REMORA_IN_REDIRECT_v4\n"
           "      #1 redirect to local port 15006 (the proxy's inbound listener)\n"
           "         meta l4proto tcp redirect to :15006\n",
       }) {
    EXPECT_NE(text.find(rule), std::string::npos) << rule << "\n---\n" << text;
  }
  EXPECT_EQ(text.find("not one of Remora's planned rules"), std::string::npos) << text;
  // kube-proxy's rules keep their nft text.
  EXPECT_NE(text.find("    ip kube-proxy nat-output (nat hook output priority -100"),
            std::string::npos)
      << text;
  auto j = dumpToJson(*report);
  ASSERT_TRUE(j.contains("nftables")) << j.dump(2);
  EXPECT_EQ(j["nftables"]["tables"][0]["name"], "remora");
  EXPECT_EQ(j["nftables"]["tables"][1]["name"], "kube-proxy");
  for (const auto& c : j["nftables"]["tables"][0]["chains"]) {
    for (const auto& r : c["rules"]) {
      EXPECT_TRUE(r.contains("words") && r["words"].is_string() && !r["words"].empty()) << r;
    }
    if (c["name"] == "REMORA_OUTPUT_v4") {
      ASSERT_GE(c["rules"].size(), 4u) << c;
      EXPECT_EQ(c["rules"][3]["words"], "proxy's own traffic (uid 1337): not captured");
    }
  }
  for (const auto& c : j["nftables"]["tables"][1]["chains"]) {
    for (const auto& r : c["rules"]) EXPECT_FALSE(r.contains("words")) << r;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Backends, TraceKubeE2eTest,
    ::testing::Values(BackendCase{IptablesBackend::kNft, "iptables-nft-restore", "iptables-nft"},
                      BackendCase{IptablesBackend::kLegacy, "iptables-legacy-restore",
                                  "iptables-legacy"}),
    [](const auto& info) {
      return std::string(info.param.backend == IptablesBackend::kNft ? "nft" : "legacy");
    });

}  // namespace
}  // namespace remora::intercept
