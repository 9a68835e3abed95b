#pragma once

// The proxy process: worker threads (one ring each, see worker.h) and the control thread, which
// owns the admin endpoint, the config watcher (inotify and signals through its own ring), reloads
// and the drain. main.cc parses flags into ProxyOptions and calls runProxy.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/ip_address.h"
#include "common/result.h"
#include "loop/uring_ring.h"
#include "proxy/worker.h"
#include "routing/route_table.h"
#include "security/path_normalization.h"

namespace remora::proxy {

// Settings given on the command line; each one set overrides the ProxyConfig document.
struct SettingOverrides {
  std::optional<SocketAddress> outbound_listen;
  std::optional<SocketAddress> inbound_listen;
  std::optional<SocketAddress> admin_listen;
  std::optional<IpAddress> inbound_source;
  std::optional<bool> inbound_transparent;  // --inbound-interception-mode TPROXY
  std::optional<routing::OutboundPolicy> outbound_policy;
  std::optional<std::chrono::milliseconds> connect_timeout;
  std::optional<std::chrono::milliseconds> drain_timeout;
  std::optional<int> max_connect_attempts;
  std::optional<bool> access_log;
  std::optional<uint64_t> buffer_limit_bytes;
  std::optional<std::chrono::milliseconds> idle_timeout;
  std::optional<std::chrono::milliseconds> half_close_timeout;
  std::optional<std::chrono::milliseconds> max_connection_duration;
  std::optional<uint32_t> max_connections;
  std::optional<std::chrono::milliseconds> tcp_keepalive;
  std::optional<std::chrono::milliseconds> inbound_drain_grace;
  std::optional<std::string> relay;
  std::optional<std::chrono::milliseconds> protocol_detection_timeout;
  std::optional<security::PathNormalization> path_normalization;
  std::optional<std::string> tls_dir;
  std::optional<std::string> trust_domain;
  // --pod-namespace, --pod-name, --pod-labels-file (empty: not given). Passed to every load as
  // the base the ProxyConfig's spec.pod* fill in; the loader reads the labels file each time.
  routing::WorkloadIdentity workload;
};

struct ProxyOptions {
  std::string config_path;  // empty: no configuration, every destination passes through
  unsigned concurrency = 1;
  bool ipv6 = true;  // also listen on [::] when the outbound/inbound address is 0.0.0.0
  SettingOverrides overrides;
  loop::RingOptions ring;
  // Load a config file with no YAML document in it (refused by default: see isEmptyConfig).
  bool allow_empty_config = false;
  size_t access_log_queue = 8192;  // lines waiting for the writer before new ones are dropped
  std::string relay_pin_dir = "/sys/fs/bpf/remora/relay";  // kernel relay pins (kernel_relay.h)
  // eBPF mode's pins (remora-init --bpf-pin-dir): the kernel relay is refused where its fast
  // path is on (ebpf_fast_path.h).
  std::string bpf_pin_dir = "/sys/fs/bpf/remora";
  // mTLS: the workload identity from --tls-dir (nullptr without it), watched for rotation.
  std::shared_ptr<tls::IdentityStore> identity;
};

// Flags over the ProxyConfig's settings (which already sit over the defaults).
routing::ProxySettings effectiveSettings(const routing::ProxySettings& from_config,
                                         const SettingOverrides& overrides);
WorkerSettings workerSettings(const routing::ProxySettings& settings);

// Whether an inotify event on `name` in the config file's directory concerns the config: the
// file itself, or the `..data` symlink a Kubernetes ConfigMap volume swaps atomically.
bool isConfigEvent(std::string_view name, std::string_view config_basename);

// Whether YAML text holds no document at all: only blank lines, comments and document markers.
// Such a file is refused unless ProxyOptions::allow_empty_config, because it is far more often a
// file caught between truncation and write than a wish to pass everything through.
bool isEmptyConfig(std::string_view text);

// One read of the config file: its text, or why it could not be read.
struct ConfigRead {
  bool ok = false;
  std::string text;
  std::string error;
  bool operator==(const ConfigRead&) const = default;
};
ConfigRead readConfigFile(const std::string& path);
// Reads the file until two reads `interval` apart agree (at most `max_reads` reads); the last
// read when they never did. For the first load, before the control ring runs.
ConfigRead readSettled(const std::string& path, std::chrono::milliseconds interval, int max_reads);
// How long the config file must stay unchanged between the two reads a reload compares.
inline constexpr std::chrono::milliseconds kSettleDelay{100};

// Builds a table from YAML text (config::loadRouteTable in production).
using TableLoader = std::function<Result<std::shared_ptr<const routing::RouteTable>>(
    std::string_view yaml, uint64_t generation, const routing::ProxySettings& base)>;

// Runs until SIGTERM/SIGINT (or POST /quitquitquit) and the drain that follows. Returns the
// process exit code: 0 after a drain, 1 when a listener cannot be opened, 2 when io_uring is
// unavailable (the message names the cause and the fix).
int runProxy(const ProxyOptions& options, TableLoader loader, RouterFactory routers);

}  // namespace remora::proxy
