#pragma once

// Request mirroring of the L7 path (VirtualService `mirror` / `mirrors`, `mirrorPercentage`):
// a copy of a routed request goes to the mirror destination's endpoint, fire and forget. The
// copy's response is read and discarded; nothing about it (slowness, failure, silence) reaches
// the client or the main request. Copies reuse kept-alive connections to their endpoint, pooled
// per cluster (service|subset) with the ClusterPool the main route uses: its connectionPool
// limits apply (tcp.maxConnections, http.maxRequestsPerConnection, idleTimeout). A connection
// goes back to the pool once its response has ended cleanly and may carry another request; it
// is closed after a deadline, on any error, or when the response says close. An idle one keeps
// a read armed, so an upstream's close is seen at once and the connection leaves the pool. A copy
// sent on a kept-alive connection that ends (closed, reset) before any byte of its response came
// is the main route's 503 race (the shadow closed the idle connection as it was reused): it is
// sent once more on a fresh connection, counted in remora_http_reset_race_retries_total, and
// only that second attempt's outcome is counted.
//
// Bounded per worker: at most `max_in_flight` copies at once, a connection still closing counted
// as one; a copy over the cap is dropped and counted, and so is a retry of the race above
// (as failed). Idle pooled connections are bounded by the same number. Outcomes are counted in
// remora_mirror_requests_total{destination_service, destination_subset,result} with result ok (a
// response came), failed (connect failure, reset, invalid response), timeout (no complete response
// before the deadline) or dropped.
//
// Runs on the worker's thread and ring, with op bytes of its own (MirrorOp), which the HttpProxy
// hands over.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/ip_address.h"
#include "loop/ring.h"
#include "loop/slot_table.h"
#include "proxy/http_pool.h"
#include "proxy/socket_ops.h"
#include "proxy/stats.h"

namespace remora::proxy {

enum class MirrorOp : uint8_t {
  kFirst = 112,
  kConnect = kFirst,
  kSend,
  kRead,
  kClose,
  kLast = kClose,
};

// The Host / :authority a mirrored request carries: "-shadow" appended to the host, before any
// port, as Envoy does ("reviews:9080" → "reviews-shadow:9080").
std::string shadowAuthority(std::string_view authority);

// One copy to send: the head already written for the mirror (shadow authority) and the body as
// the client framed it.
struct MirrorCopy {
  SocketAddress endpoint;
  std::string service;
  std::string subset;
  std::string method;   // so the response parser knows a HEAD answer has no body
  std::string request;  // head then body
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds timeout{10000};  // the whole exchange
  routing::ConnectionPoolSettings limits;    // the mirror subset's connectionPool
};

class HttpMirror {
 public:
  static constexpr uint32_t kDefaultMaxInFlight = 64;
  static constexpr size_t kReadSize = 16384;
  using Clock = std::chrono::steady_clock;

  HttpMirror(loop::Ring& ring, SocketOps& sockets, WorkerStats& stats);
  ~HttpMirror();
  HttpMirror(const HttpMirror&) = delete;
  HttpMirror& operator=(const HttpMirror&) = delete;

  static bool owns(uint8_t op) {
    return op >= static_cast<uint8_t>(MirrorOp::kFirst) &&
           op <= static_cast<uint8_t>(MirrorOp::kLast);
  }

  void setMaxInFlight(uint32_t n) { max_in_flight_ = n; }
  // Starts a copy, or drops it (counted) over the cap or when no socket can be had.
  void send(MirrorCopy copy, Clock::time_point now);
  void onCompletion(const loop::Completion& c);
  // Ends the copies past their deadline (result timeout).
  void onTick(Clock::time_point now);
  // Resets every copy in flight (drain deadline, shutdown); nothing is counted for them.
  void abortAll();
  // Copies started and not yet ended.
  size_t inFlight() const { return active_; }
  // Kept-alive connections waiting in the pools.
  size_t idleConnections() const { return idle_; }

 private:
  struct Copy;
  void onConnect(uint32_t slot, const loop::Completion& c);
  void onSend(uint32_t slot, const loop::Completion& c);
  void onRead(uint32_t slot, const loop::Completion& c);
  void readMore(uint32_t slot);
  // Connects a new connection for `copy`, due by `deadline`; when none can be had, the copy is
  // counted as `refused` (dropped for a new copy, failed for a retried one).
  void open(MirrorCopy copy, Clock::time_point deadline, const char* refused);
  // The race above: true when the copy in `slot` was sent again on a fresh connection (its old
  // connection is then closed, nothing counted).
  bool retryFresh(uint32_t slot);
  void end(uint32_t slot, const char* result, bool reset);
  // The response ended cleanly: back to the pool when the connection may carry another.
  void finished(uint32_t slot);
  void closeIdle(uint32_t slot);
  void count(const std::string& service, const std::string& subset, const char* result);
  // No new connection may be opened. Slots still closing count too (idle ones do not): the cap
  // bounds sockets as well as copies.
  bool atCap() const { return copies_.inUse() - idle_ >= max_in_flight_; }

  loop::Ring& ring_;
  SocketOps& sockets_;
  WorkerStats& stats_;
  uint32_t max_in_flight_ = kDefaultMaxInFlight;
  size_t active_ = 0;
  size_t idle_ = 0;
  Clock::time_point now_{};
  Pools pools_;
  loop::SlotTable<std::unique_ptr<Copy>> copies_;
};

}  // namespace remora::proxy
