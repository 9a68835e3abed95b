// Flag parsing helpers, settings precedence and the config watcher's event filter.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "proxy/cli.h"
#include "proxy/proxy.h"

namespace remora::proxy {
namespace {

using std::chrono::milliseconds;

TEST(CliTest, ParsesDurations) {
  EXPECT_EQ(*parseDuration("250ms"), milliseconds(250));
  EXPECT_EQ(*parseDuration("5s"), milliseconds(5000));
  EXPECT_EQ(*parseDuration("5"), milliseconds(5000));
  EXPECT_EQ(*parseDuration("2m"), milliseconds(120000));
  EXPECT_FALSE(parseDuration("soon"));
  EXPECT_EQ(*parseDuration("1h"), milliseconds(3600000));
  EXPECT_FALSE(parseDuration("5d"));
  EXPECT_FALSE(parseDuration(""));
}

TEST(CliTest, ParsesByteSizes) {
  EXPECT_EQ(*parseByteSize("4096"), 4096u);
  EXPECT_EQ(*parseByteSize("64Ki"), 65536u);
  EXPECT_EQ(*parseByteSize("1Mi"), 1048576u);
  EXPECT_FALSE(parseByteSize("1MB"));
  EXPECT_FALSE(parseByteSize("lots"));
}

// `remora-proxy ready` against a server on 127.0.0.1 answering each connection with `status`.
int probeAgainst(const std::string& status) {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sa);
  EXPECT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&sa), len), 0);
  EXPECT_EQ(::listen(listener, 1), 0);
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&sa), &len);
  std::thread server([&] {
    int c = ::accept(listener, nullptr, nullptr);
    char buf[256];
    EXPECT_GT(::recv(c, buf, sizeof(buf), 0), 0);
    std::string reply = "HTTP/1.1 " + status + "\r\nContent-Length: 0\r\n\r\n";
    EXPECT_GT(::send(c, reply.data(), reply.size(), 0), 0);
    ::close(c);
  });
  int rc = readyProbe(SocketAddress{*IpAddress::parse("127.0.0.1"), ntohs(sa.sin_port)},
                      milliseconds(2000));
  server.join();
  ::close(listener);
  return rc;
}

TEST(CliTest, ReadyProbeExitsZeroOnlyFor200) {
  EXPECT_EQ(probeAgainst("200 OK"), 0);
  EXPECT_EQ(probeAgainst("503 Service Unavailable"), 1);
}

TEST(CliTest, ParsesOutboundPolicy) {
  EXPECT_EQ(*parseOutboundPolicy("REGISTRY_ONLY"), routing::OutboundPolicy::kRegistryOnly);
  EXPECT_EQ(*parseOutboundPolicy("ALLOW_ANY"), routing::OutboundPolicy::kAllowAny);
  EXPECT_FALSE(parseOutboundPolicy("registry"));
}

TEST(SettingsTest, FlagsOverrideTheProxyConfigWhichOverridesDefaults) {
  routing::ProxySettings from_config;
  from_config.outbound_policy = routing::OutboundPolicy::kRegistryOnly;
  from_config.drain_timeout = milliseconds(9000);
  from_config.outbound_listen = *SocketAddress::parse("0.0.0.0:16001");
  SettingOverrides flags;
  flags.drain_timeout = milliseconds(100);
  flags.inbound_source = *IpAddress::parse("127.0.0.7");
  auto s = effectiveSettings(from_config, flags);
  EXPECT_EQ(s.outbound_policy, routing::OutboundPolicy::kRegistryOnly);  // from the config
  EXPECT_EQ(s.outbound_listen.port, 16001);
  EXPECT_EQ(s.drain_timeout, milliseconds(100));            // the flag wins
  EXPECT_EQ(s.admin_listen.toString(), "127.0.0.1:15000");  // default
  auto w = workerSettings(s);
  EXPECT_EQ(w.inbound_source_v4.toString(), "127.0.0.7");
  EXPECT_EQ(w.inbound_source_v6.toString(), "::6");
  EXPECT_EQ(w.outbound_policy, routing::OutboundPolicy::kRegistryOnly);
}

TEST(SettingsTest, DataPathSettingsHaveTheirDefaultsAndFlagsOverrideThem) {
  routing::ProxySettings from_config;
  auto w = workerSettings(effectiveSettings(from_config, {}));
  EXPECT_EQ(w.buffer_limit, size_t{1} << 20);
  EXPECT_EQ(w.idle_timeout, std::chrono::hours(1));
  EXPECT_EQ(w.half_close_timeout, std::chrono::minutes(1));
  EXPECT_EQ(w.max_connection_duration, milliseconds(0));
  EXPECT_EQ(w.max_connections, 0u);
  SettingOverrides flags;
  flags.buffer_limit_bytes = 65536;
  flags.idle_timeout = milliseconds(0);
  flags.max_connections = 100;
  flags.max_connection_duration = milliseconds(60000);
  w = workerSettings(effectiveSettings(from_config, flags));
  EXPECT_EQ(w.buffer_limit, 65536u);
  EXPECT_EQ(w.idle_timeout, milliseconds(0));
  EXPECT_EQ(w.max_connections, 100u);
  EXPECT_EQ(w.max_connection_duration, milliseconds(60000));
  EXPECT_EQ(effectiveSettings(from_config, {}).inbound_drain_grace, std::chrono::seconds(2));
}

TEST(SettingsTest, ProtocolDetectionTimeoutFlagWinsOverTheProxyConfig) {
  routing::ProxySettings from_config;
  EXPECT_EQ(workerSettings(effectiveSettings(from_config, {})).protocol_detection_timeout,
            milliseconds(100));
  from_config.protocol_detection_timeout = milliseconds(250);  // spec.protocolDetectionTimeout
  EXPECT_EQ(workerSettings(effectiveSettings(from_config, {})).protocol_detection_timeout,
            milliseconds(250));
  SettingOverrides flags;
  flags.protocol_detection_timeout = milliseconds(40);
  EXPECT_EQ(workerSettings(effectiveSettings(from_config, flags)).protocol_detection_timeout,
            milliseconds(40));
}

TEST(SettingsTest, PathNormalizationFlagWinsOverTheProxyConfig) {
  using security::PathNormalization;
  routing::ProxySettings from_config;
  EXPECT_EQ(workerSettings(effectiveSettings(from_config, {})).path_normalization,
            PathNormalization::kBase);
  // spec.pathNormalization.normalization
  from_config.path_normalization = PathNormalization::kMergeSlashes;
  EXPECT_EQ(workerSettings(effectiveSettings(from_config, {})).path_normalization,
            PathNormalization::kMergeSlashes);
  SettingOverrides flags;
  flags.path_normalization = PathNormalization::kNone;  // --path-normalization NONE
  EXPECT_EQ(workerSettings(effectiveSettings(from_config, flags)).path_normalization,
            PathNormalization::kNone);
}

TEST(SettingsTest, TlsDirAndTrustDomainFlagsWinOverTheProxyConfig) {
  routing::ProxySettings from_config;
  EXPECT_EQ(effectiveSettings(from_config, {}).tls_dir, "");
  EXPECT_EQ(effectiveSettings(from_config, {}).trust_domain, "cluster.local");
  from_config.tls_dir = "/etc/certs";
  from_config.trust_domain = "mesh.example";
  auto s = effectiveSettings(from_config, {});
  EXPECT_EQ(s.tls_dir, "/etc/certs");  // from the config
  EXPECT_EQ(s.trust_domain, "mesh.example");
  SettingOverrides flags;
  flags.tls_dir = "/var/run/secrets/remora";
  flags.trust_domain = "flag.example";
  s = effectiveSettings(from_config, flags);
  EXPECT_EQ(s.tls_dir, "/var/run/secrets/remora");  // the flag wins
  EXPECT_EQ(s.trust_domain, "flag.example");
}

// --pod-labels-file is read before the proxy starts: a missing or malformed file exits 64
// (usage), never a proxy that routes as if its pod had no labels.
TEST(CliTest, ABadPodLabelsFileIsRefusedAtStart) {
  char name[] = "/tmp/remora-cli-labels-XXXXXX";
  const int fd = mkstemp(name);
  ASSERT_GE(fd, 0);
  const std::string bad = "app=\"front\"\nversion=v1\n";
  ASSERT_EQ(::write(fd, bad.data(), bad.size()), static_cast<ssize_t>(bad.size()));
  ::close(fd);
  bool started = false;
  auto run = [&](const char* file) {
    std::vector<std::string> args = {"remora-proxy", "--pod-labels-file", file};
    std::vector<char*> argv;
    argv.reserve(args.size());
    for (auto& a : args) argv.push_back(a.data());
    return proxyMain(
        static_cast<int>(argv.size()), argv.data(),
        [&](std::string_view, uint64_t,
            const routing::ProxySettings&) -> Result<std::shared_ptr<const routing::RouteTable>> {
          started = true;
          return makeError("not reached");
        },
        [&](const std::shared_ptr<const routing::RouteTable>&) -> std::unique_ptr<routing::Router> {
          started = true;
          return nullptr;
        });
  };
  EXPECT_EQ(run(name), 64);
  EXPECT_FALSE(started);
  ::unlink(name);
}

TEST(ConfigWatchTest, ReactsToTheFileAndToConfigMapDataSwaps) {
  EXPECT_TRUE(isConfigEvent("mesh.yaml", "mesh.yaml"));
  EXPECT_TRUE(isConfigEvent("..data", "mesh.yaml"));
  EXPECT_FALSE(isConfigEvent("..data_tmp", "mesh.yaml"));
  EXPECT_FALSE(isConfigEvent(".mesh.yaml.swp", "mesh.yaml"));
  EXPECT_FALSE(isConfigEvent("", "mesh.yaml"));
}

}  // namespace
}  // namespace remora::proxy
