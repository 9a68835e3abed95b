#pragma once

// One worker: the connection state machine of every connection accepted on this worker's
// listeners, driven by the completions of its ring. Single-threaded; everything here runs on
// the worker's thread (the Ring and the Router are not thread-safe either).

#include <sys/uio.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/ip_address.h"
#include "loop/ring.h"
#include "loop/user_data.h"
#include "proxy/socket_ops.h"
#include "proxy/stats.h"
#include "routing/route_table.h"

namespace remora::proxy {

enum class ListenerKind : uint8_t { kOutbound, kInbound };

// The settings a worker applies to new connections; swapped with each configuration.
struct WorkerSettings {
  routing::OutboundPolicy outbound_policy = routing::OutboundPolicy::kAllowAny;
  std::chrono::milliseconds connect_timeout{1000};
  int max_connect_attempts = 3;
  IpAddress inbound_source_v4 = IpAddress::v4(0x7f000006);  // 127.0.0.6
  IpAddress inbound_source_v6 = *IpAddress::parse("::6");
  bool access_log = false;
};

using RouterFactory =
    std::function<std::unique_ptr<routing::Router>(std::shared_ptr<const routing::RouteTable>)>;
// Receives one formatted access-log line per finished connection.
using AccessLogSink = std::function<void(const std::string&)>;

// The op byte of every user_data this worker tags.
enum class Op : uint8_t {
  kIgnore = 0,
  kAccept,         // slot = listener index
  kAcceptRearm,    // timer before re-arming a failed accept
  kListenerClose,  // teardown steps of a listener
  kControl,        // read on the control eventfd
  kConnect,
  kRecvClient,    // client -> upstream direction
  kRecvUpstream,  // upstream -> client direction
  kSendUpstream,
  kSendClient,
  kShutUpstream,  // SHUT_WR toward upstream after the client's EOF
  kShutClient,
  kCancelRecv,   // cancel of a multishot recv to apply backpressure
  kCloseFailed,  // close of an upstream socket whose connect failed
  kTeardown,     // cancel -> shutdown -> close of a connection's sockets
};

class Worker final : public loop::CompletionHandler {
 public:
  // Chunks queued toward one side before its source stops receiving (backpressure), so no
  // single connection can hoard the buffer ring: with the default 64 KiB buffers, 512 KiB per
  // direction. Eight measured better than four for bulk relay (iperf3) and no worse than sixteen.
  static constexpr size_t kMaxQueuedChunks = 8;
  // Chunks one send gathers (sendmsg): bulk data leaves in large writes, one completion each,
  // instead of one send per received buffer. Above kMaxQueuedChunks because completions already
  // posted when the receive is cancelled can still add to the queue.
  static constexpr size_t kMaxGather = 16;

  // `stats` must outlive the worker; `router_factory` is called on the first table.
  Worker(loop::Ring& ring, SocketOps& sockets, WorkerStats& stats, RouterFactory router_factory,
         WorkerSettings settings);
  ~Worker() override;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Takes ownership of a listening socket and arms a multishot accept on it.
  void addListener(int fd, ListenerKind kind, Family family);
  // Arms a read on an eventfd; `on_wake` runs on this thread each time it is written.
  void watchControl(int eventfd, std::function<void()> on_wake);
  // A new table and settings for new connections; open connections keep their own.
  void setTable(std::shared_ptr<const routing::RouteTable> table, const WorkerSettings& settings);
  // Drain: stops accepting (cancel -> shutdown -> close of every listener).
  void stopAccepting();
  // Tears down every open connection (drain timeout or shutdown).
  void abortAll();
  void setAccessLog(AccessLogSink sink) { access_log_ = std::move(sink); }

  size_t activeConnections() const { return active_; }
  // No connection slot in use and no listener left.
  bool quiescent() const { return active_ == 0 && slots_in_use_ == 0 && listeners_open_ == 0; }

  void onCompletion(const loop::Completion& completion) override;
  void afterBatch() override;

 private:
  struct Chunk {
    uint16_t buffer = 0;
    uint32_t offset = 0;
    uint32_t length = 0;
  };
  // Data read from one side and written to the other.
  struct Direction {
    std::vector<Chunk> queue;
    size_t head = 0;
    bool recv_armed = false;
    bool recv_cancelling = false;
    bool starved = false;  // waiting for provided buffers after -ENOBUFS
    bool eof = false;
    bool send_in_flight = false;
    uint32_t chunks_in_flight = 0;  // queue[head, head + chunks_in_flight) are being sent
    bool shut_sent = false;
    bool shut_done = false;
    size_t queued() const { return queue.size() - head; }
    // The gathered send in flight; read by the kernel until its completion.
    std::array<iovec, kMaxGather> iov{};
    msghdr message{};
  };
  enum class State : uint8_t { kFree, kConnecting, kRelaying, kClosing };
  struct Connection {
    uint32_t generation = 1;
    State state = State::kFree;
    ListenerKind kind = ListenerKind::kOutbound;
    Family family = Family::kIpv4;
    int client_fd = -1;
    int upstream_fd = -1;
    uint32_t inflight = 0;
    SocketAddress peer;
    SocketAddress original_dst;
    routing::RouteDecision decision;
    std::shared_ptr<const routing::RouteTable> table;  // keeps decision.service alive
    sockaddr_storage upstream_sa{};
    socklen_t upstream_sa_len = 0;
    std::vector<SocketAddress> tried;
    EndpointCounters* counters = nullptr;
    bool counted_open = false;
    Direction request;   // client -> upstream
    Direction response;  // upstream -> client
    uint64_t request_bytes = 0;
    uint64_t response_bytes = 0;
    std::chrono::steady_clock::time_point started;
    const char* outcome = "ok";
  };
  struct Listener {
    int fd = -1;
    ListenerKind kind = ListenerKind::kOutbound;
    Family family = Family::kIpv4;
    bool open = false;
    bool accept_armed = false;
  };

  uint64_t tag(Op op, uint32_t slot, uint32_t generation) const;
  uint64_t tag(Op op,
               uint32_t slot);  // for a connection slot: uses its generation, counts inflight

  void onAccept(uint32_t listener, const loop::Completion& c);
  void armAccept(uint32_t listener);
  void startConnection(uint32_t listener, int fd);
  bool routeOutbound(uint32_t slot);
  void connectUpstream(uint32_t slot);
  void onConnect(uint32_t slot, const loop::Completion& c);
  void onRecv(uint32_t slot, bool from_client, const loop::Completion& c);
  void onSend(uint32_t slot, bool to_client, const loop::Completion& c);
  void onShutdown(uint32_t slot, bool client_side, const loop::Completion& c);
  void pump(uint32_t slot, bool from_client);
  void maybeArmRecv(uint32_t slot, bool from_client);
  // Closes the connection: every socket goes through cancel -> shutdown -> close.
  void closeConnection(uint32_t slot, const char* outcome);
  void maybeFree(uint32_t slot);
  uint32_t allocateSlot();
  EndpointCounters* countersFor(const Connection& conn);
  void logAccess(const Connection& conn);

  loop::Ring& ring_;
  SocketOps& sockets_;
  WorkerStats& stats_;
  RouterFactory router_factory_;
  WorkerSettings settings_;
  std::unique_ptr<routing::Router> router_;
  std::shared_ptr<const routing::RouteTable> table_;
  AccessLogSink access_log_;

  std::vector<Listener> listeners_;
  size_t listeners_open_ = 0;
  bool accepting_ = true;
  std::deque<Connection> slots_;  // a deque: references stay valid as it grows
  std::vector<uint32_t> free_slots_;
  size_t slots_in_use_ = 0;
  size_t active_ = 0;  // accepted connections not yet closed
  struct Starved {
    uint32_t slot;
    uint32_t generation;
    bool from_client;
  };
  std::vector<Starved> starved_;  // directions waiting for provided buffers

  struct CacheKey {
    const void* service;
    uint32_t subset;
    uint32_t endpoint;
    bool operator==(const CacheKey&) const = default;
  };
  struct CacheKeyHash {
    size_t operator()(const CacheKey& k) const {
      return std::hash<const void*>()(k.service) ^ (size_t{k.subset} << 20) ^ k.endpoint;
    }
  };
  // Counters by decision, so the data path does not build label strings per connection.
  // Cleared with each table, whose ServicePort addresses it holds.
  std::unordered_map<CacheKey, EndpointCounters*, CacheKeyHash> counters_cache_;

  int control_fd_ = -1;
  uint64_t control_value_ = 0;
  std::function<void()> on_control_;
};

}  // namespace remora::proxy
