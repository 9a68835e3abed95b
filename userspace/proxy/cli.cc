#include "proxy/cli.h"

#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <charconv>

namespace remora::proxy {

Result<std::chrono::milliseconds> parseDuration(std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data()) {
    return makeError(fmt::format("'{}' is not a duration (use 500ms, 5s or 1m)", text));
  }
  std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
  if (unit == "ms") return std::chrono::milliseconds(value);
  if (unit.empty() || unit == "s") return std::chrono::milliseconds(value * 1000);
  if (unit == "m") return std::chrono::milliseconds(value * 60000);
  return makeError(fmt::format("'{}': unknown duration unit '{}' (use ms, s or m)", text, unit));
}

Result<routing::OutboundPolicy> parseOutboundPolicy(std::string_view text) {
  if (text == "ALLOW_ANY") return routing::OutboundPolicy::kAllowAny;
  if (text == "REGISTRY_ONLY") return routing::OutboundPolicy::kRegistryOnly;
  return makeError(fmt::format("'{}': expected ALLOW_ANY or REGISTRY_ONLY", text));
}

int proxyMain(int argc, char** argv, TableLoader loader, RouterFactory routers) {
  CLI::App app{"remora-proxy: io_uring transparent proxy with exact weighted routing"};
  ProxyOptions options;
  std::string outbound, inbound, admin, source, policy, connect_timeout, drain_timeout;
  std::string log_level = "info";
  int attempts = 0;
  bool access_log = false;
  bool no_ipv6 = false;
  app.add_option("-c,--config", options.config_path,
                 "YAML with Services, Pods, EndpointSlices, VirtualServices, DestinationRules "
                 "and an optional ProxyConfig; watched and reloaded on change and on SIGHUP");
  app.add_option("--concurrency", options.concurrency, "worker threads, one io_uring each")
      ->check(CLI::Range(1u, 256u));
  app.add_option("--outbound-listen", outbound, "outbound capture listener (0.0.0.0:15001)");
  app.add_option("--inbound-listen", inbound, "inbound capture listener (0.0.0.0:15006)");
  app.add_option("--admin-listen", admin, "admin endpoint (127.0.0.1:15000)");
  app.add_option("--inbound-source", source,
                 "source address toward the local app on inbound (127.0.0.6)");
  app.add_option("--outbound-traffic-policy", policy, "ALLOW_ANY (default) or REGISTRY_ONLY");
  app.add_option("--connect-timeout", connect_timeout, "upstream connect timeout (1s)");
  app.add_option("--drain-timeout", drain_timeout, "how long SIGTERM waits for connections (5s)");
  app.add_option("--max-connect-attempts", attempts,
                 "upstream connect attempts per connection, retries included (3)")
      ->check(CLI::Range(1, 100));
  app.add_flag("--access-log", access_log, "log one line per connection");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off");
  app.add_flag("--no-ipv6", no_ipv6, "do not add [::] listeners beside 0.0.0.0 ones");
  app.add_option("--ring-entries", options.ring.sq_entries, "submission queue entries per worker");
  app.add_option("--buffer-count", options.ring.buffer_count,
                 "provided receive buffers per worker (power of two)");
  app.add_option("--buffer-size", options.ring.buffer_size, "bytes per receive buffer");
  app.set_version_flag("--version", "remora-proxy 0.1.0");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  auto logger = spdlog::stdout_logger_mt("remora");
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
  spdlog::set_default_logger(logger);
  spdlog::level::level_enum level = spdlog::level::from_str(log_level);
  if (level == spdlog::level::off && log_level != "off") {
    spdlog::critical("--log-level: unknown level '{}'", log_level);
    return 64;
  }
  spdlog::set_level(level);
  spdlog::flush_on(spdlog::level::trace);

  auto fail = [](const std::string& flag, const Error& e) {
    spdlog::critical("{}: {}", flag, e.message);
    return 64;
  };
  SettingOverrides& o = options.overrides;
  for (auto [flag, text, target] : {std::tuple{"--outbound-listen", &outbound, &o.outbound_listen},
                                    std::tuple{"--inbound-listen", &inbound, &o.inbound_listen},
                                    std::tuple{"--admin-listen", &admin, &o.admin_listen}}) {
    if (text->empty()) continue;
    auto a = SocketAddress::parse(*text);
    if (!a) return fail(flag, a.error());
    *target = *a;
  }
  if (!source.empty()) {
    auto ip = IpAddress::parse(source);
    if (!ip) return fail("--inbound-source", ip.error());
    o.inbound_source = *ip;
  }
  if (!policy.empty()) {
    auto p = parseOutboundPolicy(policy);
    if (!p) return fail("--outbound-traffic-policy", p.error());
    o.outbound_policy = *p;
  }
  for (auto [flag, text, target] :
       {std::tuple{"--connect-timeout", &connect_timeout, &o.connect_timeout},
        std::tuple{"--drain-timeout", &drain_timeout, &o.drain_timeout}}) {
    if (text->empty()) continue;
    auto d = parseDuration(*text);
    if (!d) return fail(flag, d.error());
    *target = *d;
  }
  if (attempts > 0) o.max_connect_attempts = attempts;
  if (access_log) o.access_log = true;
  options.ipv6 = !no_ipv6;
  return runProxy(options, std::move(loader), std::move(routers));
}

}  // namespace remora::proxy
