#pragma once

// Per-worker counters, written without locks by their worker and read by the admin thread when
// it renders /stats/prometheus and /clusters. Each counter has a single writer, so an update is a
// relaxed load + store (no lock prefix); readers see a value at most one update old.

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace remora::proxy {

class Counter {
 public:
  void add(uint64_t n) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void inc() { add(1); }
  // For a gauge with a single writer.
  void set(uint64_t v) { value_.store(v, std::memory_order_relaxed); }
  uint64_t get() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// Labels of the Istio-like metrics.
struct EndpointKey {
  std::string service;   // destination_service: "name.namespace", PassthroughCluster, ...
  std::string subset;    // destination_subset
  std::string endpoint;  // destination_endpoint: "ip:port"
  // Inbound connections under a security configuration (docs/TLS.md): the peer's principal,
  // "unknown" for plaintext; "" renders no source_principal label.
  std::string source_principal = {};
  bool operator==(const EndpointKey&) const = default;
  bool operator<(const EndpointKey& o) const {
    return std::tie(service, subset, endpoint, source_principal) <
           std::tie(o.service, o.subset, o.endpoint, o.source_principal);
  }
};

inline constexpr const char* kPassthroughCluster = "PassthroughCluster";
inline constexpr const char* kInboundCluster = "InboundPassthroughCluster";
inline constexpr const char* kBlackHoleCluster = "BlackHoleCluster";

struct EndpointCounters {
  Counter opened;  // upstream connected, relaying started
  Counter closed;
  Counter sent_bytes;        // to the downstream client (the response direction)
  Counter received_bytes;    // from the downstream client (the request direction)
  Counter connect_failures;  // connect errors and timeouts to this endpoint
  // L7 (http_proxy.h): requests sent to this endpoint, outlier ejections, and whether the
  // endpoint is ejected now (a 0/1 gauge of this worker).
  Counter requests;
  Counter ejections;
  Counter ejected;
};

// Labels of remora_requests_total.
struct RequestKey {
  std::string service;
  std::string subset;
  uint16_t code = 0;
  std::string flags;  // Envoy's response flags ("UO", "UT", "UF,URX"), "-" when none
  // Inbound requests under a security configuration: as EndpointKey::source_principal.
  std::string source_principal = {};
  bool operator<(const RequestKey& o) const {
    return std::tie(service, subset, code, flags, source_principal) <
           std::tie(o.service, o.subset, o.code, o.flags, o.source_principal);
  }
};

// remora_request_duration_milliseconds, per destination_service and destination_subset.
inline constexpr std::array<uint64_t, 12> kDurationBucketsMs = {1,   5,   10,   25,   50,   100,
                                                                250, 500, 1000, 2500, 5000, 10000};
struct DurationHistogram {
  std::array<Counter, kDurationBucketsMs.size()> buckets;  // non-cumulative; +Inf = count
  Counter count;
  Counter sum_ms;
  void observe(uint64_t ms) {
    for (size_t i = 0; i < kDurationBucketsMs.size(); ++i) {
      if (ms <= kDurationBucketsMs[i]) {
        buckets[i].inc();
        break;
      }
    }
    count.inc();
    sum_ms.add(ms);
  }
};

// Worker-wide counters without destination labels.
struct WorkerCounters {
  Counter accepted;
  Counter passthrough;          // connections to an unknown destination, passed through
  Counter refused_registry;     // refused by REGISTRY_ONLY
  Counter refused_no_upstream;  // every connect attempt failed
  Counter no_original_dst;      // accepted without a recoverable original destination
  Counter accept_errors;
  Counter buffer_exhausted;   // -ENOBUFS on recv: re-armed once buffers came back
  Counter stale_completions;  // completions for a slot that was reused since
  // Data path (issue #9).
  Counter closed;                // accepted connections closed (active = accepted - closed)
  Counter copied_bytes;          // received bytes copied out of the shared buffer pool
  Counter watermark_pauses;      // a direction reached its byte limit and stopped reading
  Counter timeout_idle;          // closed by the idle timeout
  Counter timeout_half_close;    // closed by the half-close timeout
  Counter timeout_max_duration;  // closed at the maximum connection duration
  Counter resets_from_client;    // the client reset (or a send to it failed): upstream reset
  Counter resets_from_upstream;  // the upstream reset: client reset
  Counter resets_sent;           // reset by the proxy itself (drain deadline, unsent data)
  Counter accept_paused;         // times accepting paused at max_connections
  Counter access_log_dropped;    // access-log lines dropped on a full queue

  // Kernel relay (kernel_relay.h).
  Counter relay_kernel;           // connections handed to the kernel relay
  Counter relay_attach_failures;  // hand-overs the kernel refused: relayed in user space
  // --relay auto (HandoverRule): pairs handed to the kernel mid-stream, hand-overs abandoned
  // because a receive brought bytes while it was cancelled, and, at close, pairs that stayed in
  // user space: closed before the rule said yes (short), a receive filled a buffer (bulk), or
  // out of tries (raced).
  Counter relay_handovers;
  Counter relay_handover_races;
  Counter relay_kept_short;
  Counter relay_kept_bulk;
  Counter relay_kept_raced;
  // Kernel relay backpressure (relay.bpf.c): pairs taken off the kernel path because a reader
  // fell behind, and those reset instead because the kernel had lost bytes while the verdict
  // was being stopped.
  Counter relay_backpressure_pauses;
  Counter relay_pause_losses;
  // L7 (http_proxy.h).
  Counter http_sessions;          // client connections handled as HTTP
  Counter http_bad_requests;      // answered 400/431 (and closed) by the codec's verdict
  Counter http_pool_reused;       // requests sent on a kept-alive upstream connection
  Counter http_reset_race_retry;  // reused connection reset before any byte: retried once
  Counter http_retries;           // retry attempts (retries policy)
  Counter http_lingering_closes;  // closes that read and dropped a body the response outran
  // Request bodies over the buffer limit, streamed upstream (never retried).
  Counter http_streamed_requests;
  // Protocol sniffing of ports with no declared protocol (sniffer.h): the verdicts.
  Counter sniff_http;
  Counter sniff_tcp;
  Counter sniff_timeout;
};

// Entries the owner thread appends and any thread may read: a published list (append at head,
// never removed until destruction) plus the owner's index.
template <typename Key, typename Value>
class PublishedMap {
 public:
  PublishedMap() = default;
  ~PublishedMap() {
    Node* n = head_.load(std::memory_order_acquire);
    while (n != nullptr) {
      Node* next = n->next;
      delete n;
      n = next;
    }
  }
  PublishedMap(const PublishedMap&) = delete;
  PublishedMap& operator=(const PublishedMap&) = delete;

  // Owner thread only. The returned reference lives as long as this object.
  Value& get(const Key& key) {
    auto it = index_.find(key);
    if (it != index_.end()) return it->second->value;
    auto* node = new Node{key, {}, head_.load(std::memory_order_relaxed)};
    head_.store(node, std::memory_order_release);
    index_.emplace(key, node);
    return node->value;
  }
  // Any thread: visits every entry published so far.
  template <typename Fn>
  void forEach(Fn&& fn) const {
    for (const Node* n = head_.load(std::memory_order_acquire); n != nullptr; n = n->next) {
      fn(n->key, n->value);
    }
  }

 private:
  struct Node {
    Key key;
    Value value;
    Node* next = nullptr;
  };
  std::atomic<Node*> head_{nullptr};
  std::map<Key, Node*> index_;
};

class WorkerStats {
 public:
  WorkerStats() = default;
  ~WorkerStats() = default;
  WorkerStats(const WorkerStats&) = delete;
  WorkerStats& operator=(const WorkerStats&) = delete;

  // Owner thread only. The returned reference lives as long as this object.
  EndpointCounters& endpoint(const EndpointKey& key) { return endpoints_.get(key); }
  Counter& requests(const RequestKey& key) { return requests_.get(key); }
  // Keyed by {service, subset, ""}.
  DurationHistogram& durations(const EndpointKey& key) { return durations_.get(key); }
  // Mirrored request copies, keyed by {service, subset, result} (http_mirror.h).
  Counter& mirrors(const EndpointKey& key) { return mirrors_.get(key); }
  WorkerCounters& counters() { return counters_; }
  const WorkerCounters& counters() const { return counters_; }

  // Any thread: visits every endpoint entry published so far.
  template <typename Fn>
  void forEach(Fn&& fn) const {
    endpoints_.forEach(fn);
  }
  template <typename Fn>
  void forEachRequest(Fn&& fn) const {
    requests_.forEach(fn);
  }
  template <typename Fn>
  void forEachDuration(Fn&& fn) const {
    durations_.forEach(fn);
  }
  template <typename Fn>
  void forEachMirror(Fn&& fn) const {
    mirrors_.forEach(fn);
  }

 private:
  PublishedMap<EndpointKey, EndpointCounters> endpoints_;
  PublishedMap<RequestKey, Counter> requests_;
  PublishedMap<EndpointKey, DurationHistogram> durations_;
  PublishedMap<EndpointKey, Counter> mirrors_;
  WorkerCounters counters_;
};

// Process-wide values the admin side owns.
struct ProcessSample {
  uint64_t config_generation = 0;
  uint64_t config_reloads = 0;
  uint64_t config_reload_failures = 0;
  bool config_last_reload_ok = true;
  uint64_t config_findings[3] = {0, 0, 0};  // by remora::Severity: info, warning, error
  bool draining = false;
  bool ready = false;
  uint64_t io_uring_setup_fallbacks = 0;
  unsigned workers = 0;
  // The relay in force (kernel_relay.h): "kernel" or "uring", and how often `auto` fell back.
  std::string relay = "uring";
  uint64_t relay_fallbacks = 0;
};

// Sums of the per-worker counters.
struct EndpointTotals {
  uint64_t opened = 0, closed = 0, sent_bytes = 0, received_bytes = 0, connect_failures = 0;
  uint64_t requests = 0, ejections = 0, ejected = 0;  // ejected: workers ejecting it now
};
struct DurationTotals {
  std::array<uint64_t, kDurationBucketsMs.size()> buckets{};
  uint64_t count = 0, sum_ms = 0;
};
struct WorkerTotals {
  uint64_t accepted = 0, passthrough = 0, refused_registry = 0, refused_no_upstream = 0,
           no_original_dst = 0, accept_errors = 0, buffer_exhausted = 0, stale_completions = 0;
  uint64_t closed = 0, copied_bytes = 0, watermark_pauses = 0, timeout_idle = 0,
           timeout_half_close = 0, timeout_max_duration = 0, resets_from_client = 0,
           resets_from_upstream = 0, resets_sent = 0, accept_paused = 0, access_log_dropped = 0;
  uint64_t relay_kernel = 0, relay_attach_failures = 0;
  uint64_t relay_handovers = 0, relay_handover_races = 0, relay_kept_short = 0, relay_kept_bulk = 0,
           relay_kept_raced = 0;
  uint64_t relay_backpressure_pauses = 0, relay_pause_losses = 0;
  uint64_t http_sessions = 0, http_bad_requests = 0, http_pool_reused = 0,
           http_reset_race_retry = 0, http_retries = 0, http_streamed_requests = 0,
           http_lingering_closes = 0;
  uint64_t sniff_http = 0, sniff_tcp = 0, sniff_timeout = 0;
};
struct StatsSnapshot {
  std::map<EndpointKey, EndpointTotals> endpoints;
  std::map<RequestKey, uint64_t> requests;
  std::map<EndpointKey, DurationTotals> durations;
  std::map<EndpointKey, uint64_t> mirrors;  // endpoint: the result
  WorkerTotals workers;
  ProcessSample process;
};

StatsSnapshot aggregate(const std::vector<const WorkerStats*>& workers,
                        const ProcessSample& process);

// The Prometheus text exposition format (version 0.0.4).
std::string renderPrometheus(const StatsSnapshot& snapshot);

}  // namespace remora::proxy
