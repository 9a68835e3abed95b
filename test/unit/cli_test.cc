#include "intercept/cli.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>

namespace remora::intercept {
namespace {

Result<InitCommand> parse(const std::vector<std::string>& args) { return parseInitCommand(args); }

std::string errorOf(const std::vector<std::string>& args) {
  auto r = parse(args);
  return r ? "" : r.error().message;
}

TEST(Cli, DefaultsAreIstios) {
  auto c = parse({"install"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->verb, InitVerb::kInstall);
  EXPECT_EQ(c->options, InterceptOptions{});
  EXPECT_EQ(c->options.proxy_uids, std::vector<uint32_t>{1337});
  EXPECT_EQ(c->options.outbound_port, 15001);
  EXPECT_EQ(c->options.inbound_port, 15006);
  EXPECT_FALSE(c->dry_run);
}

TEST(Cli, EveryFlag) {
  auto c = parse({"install",
                  "--proxy-uid",
                  "2102",
                  "--proxy-gid=2103",
                  "--outbound-port",
                  "4140",
                  "--inbound-port",
                  "4143",
                  "--include-outbound-cidrs",
                  "10.0.0.0/8",
                  "--exclude-outbound-cidrs",
                  "10.1.0.0/16,fd00::/8",
                  "--include-inbound-ports",
                  "80,8000-8080",
                  "--exclude-inbound-ports",
                  "8001",
                  "--exclude-outbound-ports",
                  "22",
                  "--exclude-interfaces",
                  "eth1",
                  "--ipv6",
                  "off",
                  "--iptables-backend",
                  "legacy",
                  "--dry-run"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  const auto& o = c->options;
  EXPECT_EQ(o.proxy_uids, std::vector<uint32_t>{2102});
  EXPECT_EQ(o.proxy_gids, std::vector<uint32_t>{2103});
  EXPECT_EQ(o.outbound_port, 4140);
  EXPECT_EQ(o.inbound_port, 4143);
  EXPECT_FALSE(o.include_all_outbound);
  ASSERT_EQ(o.include_outbound_cidrs.size(), 1u);
  EXPECT_EQ(o.exclude_outbound_cidrs.size(), 2u);
  EXPECT_FALSE(o.include_all_inbound);
  EXPECT_EQ(o.include_inbound_ports.size(), 2u);
  EXPECT_EQ(o.exclude_inbound_ports[0], (PortRange{8001, 8001}));
  EXPECT_EQ(o.exclude_outbound_ports[0], (PortRange{22, 22}));
  EXPECT_EQ(o.exclude_interfaces, std::vector<std::string>{"eth1"});
  EXPECT_EQ(o.ipv6, Ipv6Mode::kOff);
  EXPECT_EQ(o.backend, IptablesBackend::kLegacy);
  EXPECT_TRUE(c->dry_run);
}

TEST(Cli, EnvironmentFormsAndFlagsWin) {
  ::setenv("REMORA_PROXY_UID", "4242", 1);
  ::setenv("REMORA_EXCLUDE_OUTBOUND_PORTS", "22,25", 1);
  ::setenv("REMORA_INBOUND_PORT", "9000", 1);
  auto c = parse({"install", "--inbound-port", "9001"});
  ::unsetenv("REMORA_PROXY_UID");
  ::unsetenv("REMORA_EXCLUDE_OUTBOUND_PORTS");
  ::unsetenv("REMORA_INBOUND_PORT");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->options.proxy_uids, std::vector<uint32_t>{4242});
  EXPECT_EQ(c->options.exclude_outbound_ports.size(), 2u);
  EXPECT_EQ(c->options.inbound_port, 9001);
}

TEST(Cli, BadEnvironmentValueIsAnError) {
  ::setenv("REMORA_EXCLUDE_OUTBOUND_CIDRS", "10.0.0.0/40", 1);
  auto err = errorOf({"install"});
  ::unsetenv("REMORA_EXCLUDE_OUTBOUND_CIDRS");
  EXPECT_NE(err.find("10.0.0.0/40"), std::string::npos) << err;
}

TEST(Cli, BadInputNamesTheProblem) {
  EXPECT_NE(errorOf({"install", "--exclude-outbound-cidrs", "10.0.0.0/33"}).find("10.0.0.0/33"),
            std::string::npos);
  EXPECT_NE(errorOf({"install", "--include-outbound-cidrs", "300.1.1.1/8"}).find("300.1.1.1"),
            std::string::npos);
  EXPECT_NE(errorOf({"install", "--outbound-port", "70000"}).find("outbound-port"),
            std::string::npos);
  EXPECT_NE(errorOf({"install", "--exclude-inbound-ports", "90-80"}).find("90-80"),
            std::string::npos);
  EXPECT_NE(errorOf({"install", "--proxy-uid", "-1"}).find("proxy-uid"), std::string::npos);
  EXPECT_NE(errorOf({"install", "--proxy-uid", "abc"}).find("proxy-uid"), std::string::npos);
  EXPECT_NE(errorOf({"install", "--ipv6", "maybe"}).find("--ipv6"), std::string::npos);
  EXPECT_NE(errorOf({"install", "--iptables-backend", "ebpf"}).find("iptables-backend"),
            std::string::npos);
  EXPECT_NE(errorOf({"install", "--exclude-interfaces", "bad/name"}).find("bad/name"),
            std::string::npos);
  EXPECT_NE(errorOf({"install", "--no-such-flag"}).find("--no-such-flag"), std::string::npos);
  EXPECT_NE(errorOf({"frobnicate"}).find("frobnicate"), std::string::npos);
  EXPECT_FALSE(errorOf({}).empty());
}

TEST(Cli, DumpAndTrace) {
  auto c = parse({"dump", "--json"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->verb, InitVerb::kDump);
  EXPECT_TRUE(c->json);
  auto t = parse({"dump", "--trace", "10.1.122.241:9999", "--uid", "1337", "--gid", "7"});
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(t->trace, "10.1.122.241:9999");
  EXPECT_EQ(t->trace_uid, 1337u);
  EXPECT_EQ(t->trace_gid, 7u);
  EXPECT_NE(errorOf({"dump", "--trace", "10.1.122.241"}).find("--trace"), std::string::npos);
  EXPECT_NE(errorOf({"dump", "--uid", "5"}).find("--trace"), std::string::npos);
}

TEST(Cli, TraceFromASource) {
  auto t = parse(
      {"dump", "--trace", "198.51.100.7:443", "--source", "203.0.113.9", "--in-interface", "eth0"});
  ASSERT_TRUE(t.ok()) << t.error().message;
  ASSERT_TRUE(t->trace_source.has_value());
  EXPECT_EQ(t->trace_source->toString(), "203.0.113.9");
  EXPECT_EQ(t->trace_in_interface.value_or(""), "eth0");
  auto plain = parse({"dump", "--trace", "198.51.100.7:443"});
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->trace_source.has_value());
  EXPECT_NE(errorOf({"dump", "--source", "203.0.113.9"}).find("--trace"), std::string::npos);
  EXPECT_NE(errorOf({"dump", "--trace", "1.2.3.4:80", "--source", "x"}).find("--source"),
            std::string::npos);
  EXPECT_NE(errorOf({"dump", "--trace", "1.2.3.4:80", "--source", "fd00::1"}).find("family"),
            std::string::npos);
  EXPECT_NE(errorOf({"dump", "--trace", "1.2.3.4:80", "--source", "10.0.0.1", "--uid", "5"})
                .find("no local owner"),
            std::string::npos);
  EXPECT_NE(errorOf({"dump", "--trace", "1.2.3.4:80", "--in-interface", "eth0"}).find("--source"),
            std::string::npos);
}

TEST(Cli, UninstallAndHelp) {
  EXPECT_EQ(parse({"uninstall"})->verb, InitVerb::kUninstall);
  auto h = parse({"--help"});
  ASSERT_TRUE(h.ok());
  EXPECT_NE(h->help.find("install"), std::string::npos);
  auto ih = parse({"install", "--help"});
  ASSERT_TRUE(ih.ok());
  EXPECT_NE(ih->help.find("--exclude-outbound-cidrs"), std::string::npos);
  EXPECT_NE(ih->help.find("REMORA_EXCLUDE_OUTBOUND_CIDRS"), std::string::npos);
}

TEST(Cli, SetOptionLeavesOptionsUntouchedOnError) {
  InterceptOptions o;
  ASSERT_TRUE(setOption(o, "exclude-outbound-cidrs", "10.0.0.0/8").ok());
  EXPECT_FALSE(setOption(o, "exclude-outbound-cidrs", "10.0.0.0/8,bogus").ok());
  ASSERT_EQ(o.exclude_outbound_cidrs.size(), 1u);
  EXPECT_FALSE(setOption(o, "no-such-option", "1").ok());
}

TEST(Cli, CommandTimeoutFlagEnvironmentAndBounds) {
  EXPECT_EQ(parse({"install"})->options.command_timeout, std::chrono::seconds(10));
  EXPECT_EQ(parse({"install", "--command-timeout", "3"})->options.command_timeout,
            std::chrono::seconds(3));
  EXPECT_EQ(parse({"install", "--command-timeout", "0.25"})->options.command_timeout,
            std::chrono::milliseconds(250));
  EXPECT_EQ(parse({"uninstall", "--command-timeout", "2"})->options.command_timeout,
            std::chrono::seconds(2));
  ::setenv("REMORA_COMMAND_TIMEOUT", "7", 1);
  auto from_env = parse({"install"});
  auto uninstall_env = parse({"uninstall"});
  auto flag_wins = parse({"install", "--command-timeout", "1"});
  ::unsetenv("REMORA_COMMAND_TIMEOUT");
  EXPECT_EQ(from_env->options.command_timeout, std::chrono::seconds(7));
  EXPECT_EQ(uninstall_env->options.command_timeout, std::chrono::seconds(7));
  EXPECT_EQ(flag_wins->options.command_timeout, std::chrono::seconds(1));
  for (const char* bad : {"0", "-1", "x", "3601", "1.", ".", "0.0001", "1e3", ""}) {
    EXPECT_NE(errorOf({"install", "--command-timeout", bad}).find("invalid --command-timeout"),
              std::string::npos)
        << bad;
  }
}

}  // namespace
}  // namespace remora::intercept
