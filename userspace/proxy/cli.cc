#include "proxy/cli.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdio>

#include "proxy/log_sink.h"
#include "routing/workload_identity.h"
#include "security/path_normalization.h"
#include "security/security_policy.h"

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
  if (unit == "h") return std::chrono::milliseconds(value * 3600000);
  return makeError(fmt::format("'{}': unknown duration unit '{}' (use ms, s, m or h)", text, unit));
}

Result<uint64_t> parseByteSize(std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data()) {
    return makeError(fmt::format("'{}' is not a size (use 1048576, 64Ki or 1Mi)", text));
  }
  std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
  if (unit.empty()) return value;
  if (unit == "Ki" || unit == "K" || unit == "KiB") return value << 10;
  if (unit == "Mi" || unit == "M" || unit == "MiB") return value << 20;
  if (unit == "Gi" || unit == "G" || unit == "GiB") return value << 30;
  return makeError(fmt::format("'{}': unknown size unit '{}' (use Ki, Mi or Gi)", text, unit));
}

Result<routing::OutboundPolicy> parseOutboundPolicy(std::string_view text) {
  if (text == "ALLOW_ANY") return routing::OutboundPolicy::kAllowAny;
  if (text == "REGISTRY_ONLY") return routing::OutboundPolicy::kRegistryOnly;
  return makeError(fmt::format("'{}': expected ALLOW_ANY or REGISTRY_ONLY", text));
}

int readyProbe(const SocketAddress& admin, std::chrono::milliseconds timeout) {
  sockaddr_storage ss{};
  socklen_t len = admin.toSockaddr(ss);
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 1;
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  std::string reply;
  static constexpr std::string_view kRequest = "GET /ready HTTP/1.0\r\n\r\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0 &&
      ::send(fd, kRequest.data(), kRequest.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(kRequest.size())) {
    char buf[256];
    ssize_t n = 0;
    while (reply.size() < 64 && (n = ::recv(fd, buf, sizeof(buf), 0)) > 0) {
      reply.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return reply.rfind("HTTP/1.1 200", 0) == 0 || reply.rfind("HTTP/1.0 200", 0) == 0 ? 0 : 1;
}

int proxyMain(int argc, char** argv, TableLoader loader, RouterFactory routers) {
  if (argc > 1 && std::string_view(argv[1]) == "ready") {
    // The exec startupProbe of a native sidecar: the kubelet's httpGet would dial the pod IP,
    // and the admin endpoint listens on 127.0.0.1 only.
    CLI::App probe{"remora-proxy ready: exit 0 when the proxy's /ready answers 200"};
    std::string at = "127.0.0.1:15000";
    probe.add_option("--admin-listen", at, "the proxy's admin endpoint (127.0.0.1:15000)");
    try {
      probe.parse(argc - 1, argv + 1);
    } catch (const CLI::ParseError& e) {
      return probe.exit(e);
    }
    auto address = SocketAddress::parse(at);
    if (!address) {
      std::fprintf(stderr, "--admin-listen: %s\n", address.error().message.c_str());
      return 64;
    }
    return readyProbe(*address, std::chrono::milliseconds(2000));
  }
  CLI::App app{"remora-proxy: io_uring transparent proxy with exact weighted routing"};
  ProxyOptions options;
  std::string outbound, inbound, admin, source, policy, connect_timeout, drain_timeout;
  std::string buffer_limit, idle_timeout, half_close_timeout, max_duration, keepalive,
      inbound_grace;
  uint32_t max_connections = 0;
  bool max_connections_set = false;
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
  std::string interception;
  app.add_option("--inbound-interception-mode", interception,
                 "REDIRECT (default: the app sees --inbound-source) or TPROXY (transparent inbound "
                 "listener; the app sees the real client; needs CAP_NET_ADMIN and remora-init "
                 "--inbound-interception-mode TPROXY)");
  app.add_option("--connect-timeout", connect_timeout, "upstream connect timeout (1s)");
  app.add_option("--drain-timeout", drain_timeout, "how long SIGTERM waits for connections (5s)");
  app.add_option("--max-connect-attempts", attempts,
                 "upstream connect attempts per connection, retries included (3)")
      ->check(CLI::Range(1, 100));
  app.add_flag("--access-log", access_log, "log one line per connection");
  app.add_option("--buffer-limit", buffer_limit,
                 "bytes queued per connection and direction before reading pauses; resumes at "
                 "half (1Mi)");
  app.add_option("--idle-timeout", idle_timeout,
                 "close a connection with no bytes either way for this long; 0 disables (1h)");
  app.add_option("--half-close-timeout", half_close_timeout,
                 "close a half-closed connection idle for this long; 0 disables (1m)");
  app.add_option("--max-connection-duration", max_duration,
                 "close any connection this old; 0 disables (0)");
  app.add_option("--max-connections", max_connections,
                 "open connections per worker before accepting pauses; 0: no limit (0)")
      ->each([&](const std::string&) { max_connections_set = true; });
  app.add_option("--tcp-keepalive", keepalive,
                 "TCP keepalive idle time on both sides; 0 disables (5m)");
  app.add_option("--inbound-drain-grace", inbound_grace,
                 "after SIGTERM, how long inbound keeps accepting (2s)");
  std::string detection_timeout;
  app.add_option("--protocol-detection-timeout", detection_timeout,
                 "how long a connection to a port with no declared protocol waits for an "
                 "HTTP/1.x request line before it is relayed as TCP (100ms)");
  std::string path_normalization;
  app.add_option("--path-normalization", path_normalization,
                 "how each HTTP request's path is normalized before authorization, routing and "
                 "forwarding, as Istio's meshConfig pathNormalization: NONE, BASE (default), "
                 "MERGE_SLASHES or DECODE_AND_MERGE_SLASHES");
  app.add_option("--access-log-queue", options.access_log_queue,
                 "access-log lines waiting for the writer before new ones are dropped (8192)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 24));
  std::string relay;
  app.add_option(
         "--relay", relay,
         "byte relay of pure L4 routes: kernel (sockmap, pinned by remora-init relay "
         "install; every pair at connect), uring (user space) or auto: where the kernel relay "
         "works here, a pair starts in user space and goes to the kernel after 3 exchanges "
         "with no receive filling a buffer (short and bulk connections stay in user space); "
         "else uring (default auto)")
      ->envname("REMORA_RELAY");
  app.add_option("--relay-pin-dir", options.relay_pin_dir,
                 "where remora-init pinned the kernel relay's maps (/sys/fs/bpf/remora/relay)")
      ->envname("REMORA_RELAY_PIN_DIR");
  app.add_option("--bpf-pin-dir", options.bpf_pin_dir,
                 "where remora-init's eBPF mode pinned its maps (/sys/fs/bpf/remora): --relay "
                 "kernel is refused, and auto takes uring, where its fast path is on")
      ->envname("REMORA_BPF_PIN_DIR");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off");
  app.add_flag("--no-ipv6", no_ipv6, "do not add [::] listeners beside 0.0.0.0 ones");
  app.add_flag("--allow-empty-config", options.allow_empty_config,
               "load a config file with no YAML document (refused by default: it would pass "
               "every connection through)");
  app.add_option("--ring-entries", options.ring.sq_entries, "submission queue entries per worker");
  app.add_option("--buffer-count", options.ring.buffer_count,
                 "provided receive buffers per worker (power of two)");
  app.add_option("--buffer-size", options.ring.buffer_size, "bytes per receive buffer");
  std::string tls_dir;
  std::string trust_domain;
  app.add_option("--tls-dir", tls_dir,
                 "mTLS credentials: cert-chain.pem, key.pem, root-cert.pem (watched; rotation "
                 "swaps them for new handshakes); over ProxyConfig spec.tlsDir");
  app.add_option("--trust-domain", trust_domain,
                 "SPIFFE trust domain of the mesh (cluster.local); over ProxyConfig "
                 "spec.trustDomain");
  routing::WorkloadIdentity& workload = options.overrides.workload;
  app.add_option("--pod-namespace", workload.namespace_name,
                 "the namespace of the pod the proxy serves, for VirtualService sourceNamespace "
                 "and DestinationRule workloadSelector; over ProxyConfig spec.podNamespace")
      ->envname("POD_NAMESPACE");
  app.add_option("--pod-name", workload.name,
                 "the pod's name; without --pod-labels-file, the labels of the config's Pod of "
                 "that name serve; over ProxyConfig spec.podName")
      ->envname("POD_NAME");
  app.add_option("--pod-labels-file", workload.labels_file,
                 "the pod's labels as a downward API volume writes them (key=\"value\" lines), "
                 "for VirtualService sourceLabels and DestinationRule workloadSelector; read again "
                 "at every reload and when it changes; over ProxyConfig spec.podLabelsFile")
      ->envname("REMORA_POD_LABELS_FILE");
  app.set_version_flag("--version", "remora-proxy 0.1.0");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  // Through a bounded queue: no thread of the proxy ever waits for stdout (log_sink.h).
  installQueuedLogger("remora", "[%Y-%m-%d %H:%M:%S.%e] [%l] %v", options.access_log_queue);
  spdlog::level::level_enum level = spdlog::level::from_str(log_level);
  if (level == spdlog::level::off && log_level != "off") {
    spdlog::critical("--log-level: unknown level '{}'", log_level);
    return 64;
  }
  spdlog::set_level(level);
  spdlog::flush_on(spdlog::level::trace);

  auto fail = [](const std::string& flag, const Error& e) {
    spdlog::critical("{}: {}", flag, e.message);
    // The writer thread prints it: let it, before the process exits.
    stopQueuedLogger(std::chrono::milliseconds(500));
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
  if (interception == "REDIRECT" || interception == "TPROXY") {
    o.inbound_transparent = interception == "TPROXY";
  } else if (!interception.empty()) {
    return fail("--inbound-interception-mode",
                makeError(fmt::format("'{}' is not REDIRECT or TPROXY", interception)));
  }
  if (!policy.empty()) {
    auto p = parseOutboundPolicy(policy);
    if (!p) return fail("--outbound-traffic-policy", p.error());
    o.outbound_policy = *p;
  }
  for (auto [flag, text, target] :
       {std::tuple{"--connect-timeout", &connect_timeout, &o.connect_timeout},
        std::tuple{"--drain-timeout", &drain_timeout, &o.drain_timeout},
        std::tuple{"--idle-timeout", &idle_timeout, &o.idle_timeout},
        std::tuple{"--half-close-timeout", &half_close_timeout, &o.half_close_timeout},
        std::tuple{"--max-connection-duration", &max_duration, &o.max_connection_duration},
        std::tuple{"--tcp-keepalive", &keepalive, &o.tcp_keepalive},
        std::tuple{"--inbound-drain-grace", &inbound_grace, &o.inbound_drain_grace}}) {
    if (text->empty()) continue;
    auto d = parseDuration(*text);
    if (!d) return fail(flag, d.error());
    *target = *d;
  }
  if (attempts > 0) o.max_connect_attempts = attempts;
  if (!buffer_limit.empty()) {
    auto b = parseByteSize(buffer_limit);
    if (!b) return fail("--buffer-limit", b.error());
    o.buffer_limit_bytes = *b;
  }
  if (max_connections_set) o.max_connections = max_connections;
  if (!detection_timeout.empty()) {
    auto d = parseDuration(detection_timeout);
    if (!d) return fail("--protocol-detection-timeout", d.error());
    if (d->count() <= 0) {
      return fail("--protocol-detection-timeout", Error{0, "must be more than 0"});
    }
    o.protocol_detection_timeout = *d;
  }
  if (!path_normalization.empty()) {
    auto mode = security::parsePathNormalization(path_normalization);
    if (!mode) {
      return fail("--path-normalization",
                  makeError(fmt::format("'{}' is not {} (or DEFAULT, which is BASE)",
                                        path_normalization, security::kPathNormalizationNames)));
    }
    o.path_normalization = mode;
  }
  if (!relay.empty()) {
    auto mode = parseRelayMode(relay);
    if (!mode) return fail("--relay", mode.error());
    o.relay = relay;
  }
  if (access_log) o.access_log = true;
  options.ipv6 = !no_ipv6;
  // The identity itself is made at start (proxy.cc, startIdentity) from these over the
  // ProxyConfig's spec.tlsDir / spec.trustDomain.
  if (!tls_dir.empty()) o.tls_dir = tls_dir;
  if (!trust_domain.empty()) {
    if (auto valid = security::checkTrustDomain(trust_domain); !valid) {
      return fail("--trust-domain", valid.error());
    }
    o.trust_domain = trust_domain;
  }
  // A labels file that cannot be read now is a deployment mistake: refuse to start rather than
  // route as if the pod had no labels. On a reload, a bad file keeps the last table serving.
  if (!workload.labels_file.empty()) {
    if (auto labels = routing::readLabelsFile(workload.labels_file); !labels) {
      return fail("--pod-labels-file", labels.error());
    }
  }
  const int code = runProxy(options, std::move(loader), std::move(routers));
  // What stdout has not taken within half a second is dropped: the exit does not wait on it.
  stopQueuedLogger(std::chrono::milliseconds(500));
  return code;
}

}  // namespace remora::proxy
