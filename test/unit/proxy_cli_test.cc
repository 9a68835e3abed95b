// Flag parsing helpers, settings precedence and the config watcher's event filter.
#include <gtest/gtest.h>

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
  EXPECT_FALSE(parseDuration("5h"));
  EXPECT_FALSE(parseDuration(""));
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

TEST(ConfigWatchTest, ReactsToTheFileAndToConfigMapDataSwaps) {
  EXPECT_TRUE(isConfigEvent("mesh.yaml", "mesh.yaml"));
  EXPECT_TRUE(isConfigEvent("..data", "mesh.yaml"));
  EXPECT_FALSE(isConfigEvent("..data_tmp", "mesh.yaml"));
  EXPECT_FALSE(isConfigEvent(".mesh.yaml.swp", "mesh.yaml"));
  EXPECT_FALSE(isConfigEvent("", "mesh.yaml"));
}

}  // namespace
}  // namespace remora::proxy
