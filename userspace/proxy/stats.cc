#include "proxy/stats.h"

#include <fmt/format.h>

#include "proxy/log_sink.h"

namespace remora::proxy {
namespace {

std::string escapeLabel(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// ",source_principal=\"...\"", or nothing where the series has no principal.
std::string principalLabel(const std::string& principal) {
  if (principal.empty()) return "";
  return fmt::format(",source_principal=\"{}\"", escapeLabel(principal));
}

std::string labels(const EndpointKey& key) {
  const std::string principal = principalLabel(key.source_principal);
  return fmt::format(
      "{{destination_service=\"{}\",destination_subset=\"{}\",destination_endpoint=\"{}\"{}}}",
      escapeLabel(key.service), escapeLabel(key.subset), escapeLabel(key.endpoint), principal);
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

template <typename Get>
void perEndpoint(std::string& out, const StatsSnapshot& s, const char* name, const char* type,
                 const char* help, Get get) {
  header(out, name, type, help);
  for (const auto& [key, totals] : s.endpoints) {
    fmt::format_to(std::back_inserter(out), "{}{} {}\n", name, labels(key), get(totals));
  }
}

void single(std::string& out, const char* name, const char* type, const char* help,
            uint64_t value) {
  header(out, name, type, help);
  fmt::format_to(std::back_inserter(out), "{} {}\n", name, value);
}

void renderHttp(std::string& out, const StatsSnapshot& s) {
  header(out, "remora_requests_total", "counter",
         "HTTP requests answered, by destination and response (L7 ports).");
  for (const auto& [key, n] : s.requests) {
    fmt::format_to(std::back_inserter(out),
                   "remora_requests_total{{destination_service=\"{}\",destination_subset=\"{}\","
                   "response_code=\"{}\",response_flags=\"{}\"{}}} {}\n",
                   escapeLabel(key.service), escapeLabel(key.subset), key.code,
                   escapeLabel(key.flags), principalLabel(key.source_principal), n);
  }
  header(out, "remora_request_duration_milliseconds", "histogram",
         "HTTP request duration, from the request's first byte to the response's last.");
  for (const auto& [key, t] : s.durations) {
    const std::string l = fmt::format("destination_service=\"{}\",destination_subset=\"{}\"{}",
                                      escapeLabel(key.service), escapeLabel(key.subset),
                                      principalLabel(key.source_principal));
    uint64_t cumulative = 0;
    for (size_t i = 0; i < t.buckets.size(); ++i) {
      cumulative += t.buckets[i];
      fmt::format_to(std::back_inserter(out),
                     "remora_request_duration_milliseconds_bucket{{{},le=\"{}\"}} {}\n", l,
                     kDurationBucketsMs[i], cumulative);
    }
    fmt::format_to(std::back_inserter(out),
                   "remora_request_duration_milliseconds_bucket{{{0},le=\"+Inf\"}} {1}\n"
                   "remora_request_duration_milliseconds_sum{{{0}}} {2}\n"
                   "remora_request_duration_milliseconds_count{{{0}}} {1}\n",
                   l, t.count, t.sum_ms);
  }
  perEndpoint(out, s, "remora_outlier_ejections_total", "counter",
              "Times an endpoint was ejected by outlier detection (DestinationRule).",
              [](const EndpointTotals& t) { return t.ejections; });
  perEndpoint(out, s, "remora_outlier_ejected", "gauge",
              "Workers that hold the endpoint ejected now.",
              [](const EndpointTotals& t) { return t.ejected; });
  single(out, "remora_http_sessions_total", "counter", "Client connections handled as HTTP.",
         s.workers.http_sessions);
  single(out, "remora_http_bad_requests_total", "counter",
         "Requests refused by the HTTP codec (400/431) and their connections closed.",
         s.workers.http_bad_requests);
  single(out, "remora_http_lingering_closes_total", "counter",
         "Client connections whose close lingered: the response went before the request body "
         "ended, and the rest of the body was read and dropped before closing.",
         s.workers.http_lingering_closes);
  single(out, "remora_http_upstream_reused_total", "counter",
         "Requests sent on a kept-alive pooled upstream connection.", s.workers.http_pool_reused);
  single(out, "remora_http_reset_race_retries_total", "counter",
         "Requests retried on a fresh connection after a reused one reset before any byte.",
         s.workers.http_reset_race_retry);
  single(out, "remora_http_retries_total", "counter", "Retry attempts (VirtualService retries).",
         s.workers.http_retries);
  single(out, "remora_http_streamed_requests_total", "counter",
         "Requests whose body outgrew the buffer limit and streamed upstream (never retried).",
         s.workers.http_streamed_requests);
  header(out, "remora_protocol_sniff_total", "counter",
         "Connections to ports with no declared protocol, by what sniffing their first bytes "
         "found: http (L7 path), tcp (L4 relay), timeout (no byte in time: L4 relay).");
  fmt::format_to(std::back_inserter(out),
                 "remora_protocol_sniff_total{{result=\"http\"}} {}\n"
                 "remora_protocol_sniff_total{{result=\"tcp\"}} {}\n"
                 "remora_protocol_sniff_total{{result=\"timeout\"}} {}\n",
                 s.workers.sniff_http, s.workers.sniff_tcp, s.workers.sniff_timeout);
  header(out, "remora_mirror_requests_total", "counter",
         "Mirrored request copies (VirtualService mirror), by outcome: ok, failed, timeout, "
         "dropped (over the per-worker cap).");
  for (const auto& [key, n] : s.mirrors) {
    fmt::format_to(std::back_inserter(out),
                   "remora_mirror_requests_total{{destination_service=\"{}\",destination_subset="
                   "\"{}\",result=\"{}\"}} {}\n",
                   escapeLabel(key.service), escapeLabel(key.subset), escapeLabel(key.endpoint), n);
  }
}

}  // namespace

StatsSnapshot aggregate(const std::vector<const WorkerStats*>& workers,
                        const ProcessSample& process) {
  StatsSnapshot s;
  s.process = process;
  for (const WorkerStats* w : workers) {
    w->forEach([&](const EndpointKey& key, const EndpointCounters& c) {
      auto& t = s.endpoints[key];
      t.opened += c.opened.get();
      t.closed += c.closed.get();
      t.sent_bytes += c.sent_bytes.get();
      t.received_bytes += c.received_bytes.get();
      t.connect_failures += c.connect_failures.get();
      t.requests += c.requests.get();
      t.ejections += c.ejections.get();
      t.ejected += c.ejected.get();
    });
    w->forEachRequest([&](const RequestKey& key, const Counter& c) { s.requests[key] += c.get(); });
    w->forEachMirror([&](const EndpointKey& key, const Counter& c) { s.mirrors[key] += c.get(); });
    w->forEachDuration([&](const EndpointKey& key, const DurationHistogram& h) {
      auto& t = s.durations[key];
      for (size_t i = 0; i < t.buckets.size(); ++i) t.buckets[i] += h.buckets[i].get();
      t.count += h.count.get();
      t.sum_ms += h.sum_ms.get();
    });
    const WorkerCounters& c = w->counters();
    s.workers.accepted += c.accepted.get();
    s.workers.passthrough += c.passthrough.get();
    s.workers.refused_registry += c.refused_registry.get();
    s.workers.refused_no_upstream += c.refused_no_upstream.get();
    s.workers.no_original_dst += c.no_original_dst.get();
    s.workers.accept_errors += c.accept_errors.get();
    s.workers.buffer_exhausted += c.buffer_exhausted.get();
    s.workers.stale_completions += c.stale_completions.get();
    s.workers.closed += c.closed.get();
    s.workers.copied_bytes += c.copied_bytes.get();
    s.workers.watermark_pauses += c.watermark_pauses.get();
    s.workers.timeout_idle += c.timeout_idle.get();
    s.workers.timeout_half_close += c.timeout_half_close.get();
    s.workers.timeout_max_duration += c.timeout_max_duration.get();
    s.workers.resets_from_client += c.resets_from_client.get();
    s.workers.resets_from_upstream += c.resets_from_upstream.get();
    s.workers.resets_sent += c.resets_sent.get();
    s.workers.accept_paused += c.accept_paused.get();
    s.workers.access_log_dropped += c.access_log_dropped.get();
    s.workers.relay_kernel += c.relay_kernel.get();
    s.workers.relay_attach_failures += c.relay_attach_failures.get();
    s.workers.relay_handovers += c.relay_handovers.get();
    s.workers.relay_handover_races += c.relay_handover_races.get();
    s.workers.relay_kept_short += c.relay_kept_short.get();
    s.workers.relay_kept_bulk += c.relay_kept_bulk.get();
    s.workers.relay_kept_raced += c.relay_kept_raced.get();
    s.workers.relay_backpressure_pauses += c.relay_backpressure_pauses.get();
    s.workers.relay_pause_losses += c.relay_pause_losses.get();
    s.workers.http_sessions += c.http_sessions.get();
    s.workers.http_bad_requests += c.http_bad_requests.get();
    s.workers.http_pool_reused += c.http_pool_reused.get();
    s.workers.http_reset_race_retry += c.http_reset_race_retry.get();
    s.workers.http_retries += c.http_retries.get();
    s.workers.http_lingering_closes += c.http_lingering_closes.get();
    s.workers.http_streamed_requests += c.http_streamed_requests.get();
    s.workers.sniff_http += c.sniff_http.get();
    s.workers.sniff_tcp += c.sniff_tcp.get();
    s.workers.sniff_timeout += c.sniff_timeout.get();
  }
  return s;
}

std::string renderPrometheus(const StatsSnapshot& s) {
  std::string out;
  perEndpoint(out, s, "remora_tcp_connections_opened_total", "counter",
              "TCP connections relayed to an upstream.",
              [](const EndpointTotals& t) { return t.opened; });
  perEndpoint(out, s, "remora_tcp_connections_closed_total", "counter",
              "Relayed TCP connections that have closed.",
              [](const EndpointTotals& t) { return t.closed; });
  perEndpoint(out, s, "remora_tcp_active_connections", "gauge", "Relayed TCP connections open now.",
              [](const EndpointTotals& t) { return t.opened - std::min(t.opened, t.closed); });
  perEndpoint(out, s, "remora_tcp_sent_bytes_total", "counter",
              "Bytes sent to the downstream client (response direction).",
              [](const EndpointTotals& t) { return t.sent_bytes; });
  perEndpoint(out, s, "remora_tcp_received_bytes_total", "counter",
              "Bytes received from the downstream client (request direction).",
              [](const EndpointTotals& t) { return t.received_bytes; });
  perEndpoint(out, s, "remora_tcp_connect_failures_total", "counter",
              "Upstream connect attempts that failed or timed out.",
              [](const EndpointTotals& t) { return t.connect_failures; });
  renderHttp(out, s);
  single(out, "remora_tcp_accepted_total", "counter", "Downstream connections accepted.",
         s.workers.accepted);
  single(out, "remora_tcp_passthrough_total", "counter",
         "Connections to a destination no Service matches, passed to the original address.",
         s.workers.passthrough);
  header(out, "remora_tcp_refused_total", "counter",
         "Downstream connections closed without an upstream, by reason.");
  fmt::format_to(std::back_inserter(out),
                 "remora_tcp_refused_total{{reason=\"registry_only\"}} {}\n"
                 "remora_tcp_refused_total{{reason=\"no_upstream\"}} {}\n"
                 "remora_tcp_refused_total{{reason=\"no_original_dst\"}} {}\n",
                 s.workers.refused_registry, s.workers.refused_no_upstream,
                 s.workers.no_original_dst);
  single(out, "remora_accept_errors_total", "counter", "Failed accepts.", s.workers.accept_errors);
  single(out, "remora_recv_buffer_exhausted_total", "counter",
         "Times a receive found the provided-buffer ring empty (ENOBUFS) and was re-armed.",
         s.workers.buffer_exhausted);
  single(out, "remora_stale_completions_total", "counter",
         "Completions that arrived for a connection slot already reused.",
         s.workers.stale_completions);
  single(out, "remora_downstream_connections_active", "gauge",
         "Accepted connections not yet closed (outbound and inbound).",
         s.workers.accepted - std::min(s.workers.accepted, s.workers.closed));
  single(out, "remora_recv_copied_bytes_total", "counter",
         "Received bytes copied out of the shared buffer pool so it stays free for everyone.",
         s.workers.copied_bytes);
  single(out, "remora_buffer_watermark_pauses_total", "counter",
         "Times a direction reached its byte limit and stopped reading until half was sent.",
         s.workers.watermark_pauses);
  header(out, "remora_tcp_timeouts_total", "counter", "Connections closed by a timeout, by cause.");
  fmt::format_to(std::back_inserter(out),
                 "remora_tcp_timeouts_total{{cause=\"idle\"}} {}\n"
                 "remora_tcp_timeouts_total{{cause=\"half_close\"}} {}\n"
                 "remora_tcp_timeouts_total{{cause=\"max_duration\"}} {}\n",
                 s.workers.timeout_idle, s.workers.timeout_half_close,
                 s.workers.timeout_max_duration);
  header(out, "remora_tcp_resets_total", "counter",
         "Connections ended by a reset, by the side it came from (proxy: drain deadline, or "
         "data left unsent).");
  fmt::format_to(std::back_inserter(out),
                 "remora_tcp_resets_total{{from=\"client\"}} {}\n"
                 "remora_tcp_resets_total{{from=\"upstream\"}} {}\n"
                 "remora_tcp_resets_total{{from=\"proxy\"}} {}\n",
                 s.workers.resets_from_client, s.workers.resets_from_upstream,
                 s.workers.resets_sent);
  single(out, "remora_accept_paused_total", "counter",
         "Times a worker stopped accepting at --max-connections (resumed below it).",
         s.workers.accept_paused);
  single(out, "remora_access_log_dropped_total", "counter",
         "Access-log lines dropped because the writer's queue was full.",
         s.workers.access_log_dropped);
  single(out, "remora_log_lines_dropped_total", "counter",
         "Log lines dropped because stdout did not take them (queue full, or at exit).",
         droppedLogLines());
  single(out, "remora_config_generation", "gauge", "Generation of the configuration in force.",
         s.process.config_generation);
  single(out, "remora_config_reloads_total", "counter", "Successful configuration loads.",
         s.process.config_reloads);
  single(out, "remora_config_reload_failures_total", "counter",
         "Configuration loads rejected (the last good configuration kept serving).",
         s.process.config_reload_failures);
  header(out, "remora_config_findings", "gauge",
         "Findings of the configuration in force (remora-proxy check): rejected objects, fields "
         "not applied as Istio would, notes.");
  for (auto [severity, label] : {std::pair{2, "error"}, {1, "warning"}, {0, "info"}}) {
    fmt::format_to(std::back_inserter(out), "remora_config_findings{{severity=\"{}\"}} {}\n", label,
                   s.process.config_findings[severity]);
  }
  single(out, "remora_config_last_reload_success", "gauge",
         "1 when the last configuration load succeeded.", s.process.config_last_reload_ok ? 1 : 0);
  single(out, "remora_server_ready", "gauge", "1 when /ready answers 200.",
         s.process.ready ? 1 : 0);
  single(out, "remora_server_draining", "gauge", "1 while draining.", s.process.draining ? 1 : 0);
  single(out, "remora_io_uring_setup_fallbacks_total", "counter",
         "Rings created with fallback setup flags because the kernel refused the preferred ones.",
         s.process.io_uring_setup_fallbacks);
  single(out, "remora_workers", "gauge", "Worker threads (one io_uring each).", s.process.workers);
  header(out, "remora_relay_mode", "gauge",
         "The byte relay new L4 connections get: kernel (sockmap) or uring (user space).");
  fmt::format_to(
      std::back_inserter(out),
      "remora_relay_mode{{mode=\"kernel\"}} {}\nremora_relay_mode{{mode=\"uring\"}} {}\n",
      s.process.relay == "kernel" ? 1 : 0, s.process.relay == "kernel" ? 0 : 1);
  single(out, "remora_relay_fallbacks_total", "counter",
         "Times --relay auto found the kernel relay unavailable and used the io_uring relay.",
         s.process.relay_fallbacks);
  single(out, "remora_relay_kernel_connections_total", "counter",
         "Connections whose bytes the kernel relayed (sockmap).", s.workers.relay_kernel);
  single(out, "remora_relay_attach_failures_total", "counter",
         "Connections the kernel relay refused, relayed in user space instead.",
         s.workers.relay_attach_failures);
  single(out, "remora_relay_handovers_total", "counter",
         "--relay auto: connections handed to the kernel relay after a few exchanges in user "
         "space.",
         s.workers.relay_handovers);
  single(out, "remora_relay_handover_races_total", "counter",
         "--relay auto: hand-overs put off because bytes arrived while the receives were "
         "cancelled.",
         s.workers.relay_handover_races);
  header(out, "remora_relay_kept_in_user_space_total", "counter",
         "--relay auto: closed connections the kernel relay could have carried that stayed in "
         "the io_uring relay: short (closed before enough exchanges), bulk (a receive filled a "
         "buffer), raced (out of hand-over tries).");
  fmt::format_to(std::back_inserter(out),
                 "remora_relay_kept_in_user_space_total{{reason=\"short\"}} {}\n"
                 "remora_relay_kept_in_user_space_total{{reason=\"bulk\"}} {}\n"
                 "remora_relay_kept_in_user_space_total{{reason=\"raced\"}} {}\n",
                 s.workers.relay_kept_short, s.workers.relay_kept_bulk, s.workers.relay_kept_raced);
  single(out, "remora_relay_backpressure_pauses_total", "counter",
         "Kernel-relayed connections taken back to the io_uring relay because a reader fell "
         "behind (the redirect queue passed the buffer limit), so TCP could push back.",
         s.workers.relay_backpressure_pauses);
  single(out, "remora_relay_pause_losses_total", "counter",
         "Of those, connections reset because the kernel dropped bytes while the verdict was "
         "being stopped.",
         s.workers.relay_pause_losses);
  return out;
}

}  // namespace remora::proxy
