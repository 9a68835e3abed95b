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
#include "loop/slot_table.h"
#include "loop/user_data.h"
#include "proxy/http_proxy.h"
#include "proxy/kernel_relay.h"
#include "proxy/sniffer.h"
#include "proxy/socket_ops.h"
#include "proxy/stats.h"
#include "proxy/tls_connection.h"
#include "routing/route_table.h"
#include "security/path_normalization.h"

namespace remora::proxy {

enum class ListenerKind : uint8_t { kOutbound, kInbound };

// The settings a worker applies to new connections; swapped with each configuration.
struct WorkerSettings {
  routing::OutboundPolicy outbound_policy = routing::OutboundPolicy::kAllowAny;
  std::chrono::milliseconds connect_timeout{1000};
  int max_connect_attempts = 3;
  IpAddress inbound_source_v4 = IpAddress::v4(0x7f000006);  // 127.0.0.6
  IpAddress inbound_source_v6 = *IpAddress::parse("::6");
  // TPROXY inbound: connect to the app from the client's address (SocketOps::
  // transparentUpstreamSocket) instead of inbound_source.
  bool inbound_transparent = false;
  bool access_log = false;
  // Bytes queued per connection and direction before the source stops being read (the high
  // watermark); reading resumes at half of it (the low watermark).
  size_t buffer_limit = size_t{1} << 20;
  // Zero disables each of these.
  std::chrono::milliseconds idle_timeout{std::chrono::hours(1)};
  std::chrono::milliseconds half_close_timeout{std::chrono::minutes(1)};
  std::chrono::milliseconds max_connection_duration{0};
  // Open connections on this worker before accepting pauses (0: no limit).
  size_t max_connections = 0;
  // The kernel relay (kernel_relay.h) for connected TCP routes; null: the io_uring relay.
  std::shared_ptr<const RelayMaps> kernel_relay;
  // --relay auto: a pair starts in the io_uring relay and goes to the kernel relay once
  // HandoverRule says so; otherwise (--relay kernel) at connect.
  bool relay_adaptive = false;
  // How long a connection to a port with no declared protocol waits for the client's first
  // bytes before it is relayed as TCP (Istio's protocolDetectionTimeout).
  std::chrono::milliseconds protocol_detection_timeout = Sniffer::kDefaultTimeout;
  // Istio's meshConfig pathNormalization, for the L7 path's requests.
  security::PathNormalization path_normalization = security::PathNormalization::kBase;
};

using RouterFactory =
    std::function<std::unique_ptr<routing::Router>(std::shared_ptr<const routing::RouteTable>)>;
// Receives one formatted access-log line per finished connection; false when the line was
// dropped (a full queue). Must not block.
using AccessLogSink = std::function<bool(std::string)>;

// The op byte of every user_data this worker tags. Values from HttpOp::kFirst (64) up belong to
// the L7 path (http_proxy.h), which the worker hands those completions to.
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
  kCancelRecv,    // unused since receives are one-shot; kept so op numbers stay stable
  kCloseFailed,   // close of an upstream socket whose connect failed
  kTeardown,      // shutdown -> close, or cancel + close (reset), of a connection's sockets
  kTick,          // the timeout sweep timer
  kAcceptCancel,  // cancel of a multishot accept (connection limit, drain)

  // Kernel relay (worker_kernel_relay.cc).
  kRelayPollClient,    // FIN/RST watch on the client socket
  kRelayPollUpstream,  // FIN/RST watch on the upstream socket
  kRelayDrain,         // timer while a FIN waits for redirected bytes to go out
  kHandoverCancel,     // --relay auto: cancel of a receive before the hand-over to the kernel
  kRelayRing,          // worker 0: poll on the relay's ring buffer of backpressure events
  kRelayWake,          // read on this worker's eventfd for those events
};

class Worker final : public loop::CompletionHandler {
 public:
  // Received chunks one direction may keep in the ring's provided buffers (zero copy). Data
  // beyond this, or arriving while the pool is low, is copied into the connection's own memory
  // and its buffer goes straight back, so no set of connections can hold the shared pool.
  static constexpr size_t kMaxBorrowedChunks = 4;
  // Chunks one send gathers (sendmsg): bulk data leaves in large writes, one completion each.
  static constexpr size_t kMaxGather = 16;
  // How long a reset waits for the bytes already received from the resetting side to be sent
  // on to the other side before that side is reset too.
  static constexpr std::chrono::milliseconds kResetFlushLimit{2000};

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
  // Which of the proxy's workers this is (0 reads the kernel relay's events for all of them).
  void setIndex(unsigned index) { index_ = index; }
  // A new table and settings for new connections; open connections keep their own.
  void setTable(std::shared_ptr<const routing::RouteTable> table, const WorkerSettings& settings);
  // Drain: stops accepting on every listener (or on those of one kind): cancel the accept,
  // close the socket. quiescent() stays false until those closes completed.
  void stopAccepting();
  void stopAccepting(ListenerKind kind);
  // Resets every open connection (drain deadline or shutdown): the peers see ECONNRESET, not a
  // clean end of a cut transfer.
  void abortAll();
  void setAccessLog(AccessLogSink sink) {
    access_log_ = sink;
    http_.setAccessLog(std::move(sink));
  }
  // The workload identity for mTLS (nullptr: no --tls-dir, every connection stays plaintext).
  void setIdentity(std::shared_ptr<tls::IdentityStore> identity) {
    identity_ = std::move(identity);
    http_.setTls(identity_, &session_cache_);
  }

  // L4 connections and HTTP sessions.
  size_t activeConnections() const { return active_ + http_.activeSessions(); }
  // No connection slot in use and no listener left.
  bool quiescent() const {
    return active_ == 0 && slots_.inUse() == 0 && listeners_open_ == 0 && listener_ops_ == 0 &&
           http_.quiescent() && sniffer_.inUse() == 0;
  }
  bool acceptPaused() const { return accept_paused_; }

  void onCompletion(const loop::Completion& completion) override;
  void afterBatch() override;

 private:
  // Bytes received from one side, waiting to be written to the other: either in a provided
  // buffer of the ring (borrowed) or copied into memory of its own.
  struct Chunk {
    uint16_t buffer = 0;
    bool borrowed = false;
    uint32_t offset = 0;
    uint32_t length = 0;
    std::unique_ptr<char[]> owned;
  };
  // Data read from one side and written to the other.
  struct Direction {
    std::vector<Chunk> queue;
    size_t head = 0;
    size_t queued_bytes = 0;  // unsent bytes in the queue
    size_t borrowed = 0;      // chunks of the queue in provided buffers
    bool recv_armed = false;
    bool paused = false;   // above the high watermark; resumes at the low one
    bool starved = false;  // waiting for provided buffers after -ENOBUFS
    bool eof = false;
    bool send_in_flight = false;
    uint32_t chunks_in_flight = 0;  // queue[head, head + chunks_in_flight) are being sent
    bool shut_sent = false;
    bool shut_done = false;
    // Kernel relay backpressure: bytes the kernel redirected this way are still being written
    // to the receiving side, so nothing is read from the sending side yet.
    bool kernel_held = false;
    size_t queued() const { return queue.size() - head; }
    // The gathered send in flight; read by the kernel until its completion.
    std::array<iovec, kMaxGather> iov{};
    msghdr message{};
  };
  // kFlushing: one side reset; the bytes it sent are still being written to the other side,
  // which is reset once they are out (or after kResetFlushLimit).
  // kKernel: the kernel relays the bytes (worker_kernel_relay.cc); the worker watches for FIN/RST.
  enum class State : uint8_t { kFree, kConnecting, kRelaying, kFlushing, kClosing, kKernel };
  // The slot, generation and in-flight bookkeeping is slots_' (loop::SlotTable).
  struct Connection {
    State state = State::kFree;
    ListenerKind kind = ListenerKind::kOutbound;
    Family family = Family::kIpv4;
    int client_fd = -1;
    int upstream_fd = -1;
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
    // Client bytes read before the route had counters (the sniffer's first bytes, a TLS
    // handshake before the app's connect); onConnect counts them.
    uint64_t uncounted_received = 0;
    uint64_t response_bytes = 0;
    std::chrono::steady_clock::time_point started;
    std::chrono::steady_clock::time_point last_activity;
    std::chrono::steady_clock::time_point half_closed;     // first EOF; epoch while none
    std::chrono::steady_clock::time_point flush_deadline;  // kFlushing
    bool reset_by_client = false;                          // kFlushing: which side reset
    const char* outcome = "ok";
    // kKernel: the pair in the relay's maps, the relay it was handed to, and what is watched.
    RelayPair relay;
    std::shared_ptr<const RelayMaps> relay_maps;
    bool relay_poll[2] = {false, false};  // [0] client, [1] upstream
    bool relay_drain_armed = false;
    std::chrono::milliseconds relay_drain_wait{0};
    uint64_t relay_seen_bytes = 0;  // both directions' redirected bytes at the last idle check
    // Bytes the io_uring relay wrote to the upstream [0] and to the client [1] before the pair
    // went to the kernel (--relay auto hands it over mid-stream): TCP's counters include them.
    uint64_t relay_user_written[2] = {0, 0};
    // The pair left the kernel path because a reader fell behind (relay_paused): its maps
    // entries stay until the close, which counts the kernel's bytes.
    bool relay_paused = false;
    // --relay auto: the pair may go to the kernel later (worker_kernel_relay.cc, maybeHandOver).
    bool adaptive = false;
    bool handover_pending = false;  // its receives are being cancelled for the hand-over
    bool handover_raced = false;    // one of them brought bytes instead: not this time
    HandoverRule handover;
    std::unique_ptr<TlsConnection> tls;  // mTLS and authorization state (tls_worker.cc)
    // The upstream socket was made without TCP keepalive: the next sweep gives it.
    bool keepalive_pending = false;
    // Outbound: the sniffer found HTTP/1.x but the L4 relay carries it (no http routes, or a
    // pod address dialled): mesh mTLS says so in its ALPN (secureOutbound).
    bool sniffed_http = false;
  };
  struct Listener {
    int fd = -1;
    ListenerKind kind = ListenerKind::kOutbound;
    Family family = Family::kIpv4;
    bool open = false;
    bool accept_armed = false;
    uint16_t port = 0;  // the port it listens on; 0 when unknown
  };

  // The user_data of a listener, control or timer operation (not a connection's).
  uint64_t tag(Op op, uint32_t slot, uint32_t generation) const;
  // The user_data of a new operation on connection `slot`, counted in flight until its
  // `completions` final completions (loop::SlotTable::track).
  uint64_t track(Op op, uint32_t slot, uint32_t completions = 1) {
    return slots_.track(static_cast<uint8_t>(op), slot, completions);
  }
  // The user_data an operation on connection `slot` carries, counting nothing: a cancel target.
  uint64_t target(Op op, uint32_t slot) const {
    return slots_.userData(static_cast<uint8_t>(op), slot);
  }

  void onAccept(uint32_t listener, const loop::Completion& c);
  void armAccept(uint32_t listener);
  void startConnection(uint32_t listener, int fd);
  // Hands an accepted connection to the L7 path when its destination is an HTTP port.
  bool startHttp(const Listener& l, int fd, const SocketAddress& original_dst);
  // The client's address for the L7 path, looked up only when something reads it: the access
  // log, the source.ip of mTLS and authorization policies, or TPROXY inbound (the connection
  // to the app is bound to it). Unset otherwise.
  SocketAddress peerIfNeeded(int fd, ListenerKind kind);
  // The L4 relay of an accepted connection; `first_bytes` (read by the sniffer) go upstream
  // first; `sniffed`: the sniffer's verdict, whose transport (and TLS stream) secureInbound
  // takes over.
  void startTcp(uint32_t listener, int fd, const std::optional<SocketAddress>& original,
                std::string first_bytes = {}, Sniffed* sniffed = nullptr);
  // Protocol sniffing (sniffer.h) of a connection to a port with no declared protocol: outbound
  // with per-request routes, inbound toward a pod's port (over mTLS too); false when it does
  // not apply.
  bool startSniff(uint32_t listener, int fd, const SocketAddress& original_dst);
  void onSniffed(Sniffed sniffed);
  // Outbound: a sniffed HTTP connection to `match` takes the L7 path (per-request routes).
  static bool sniffsForL7(const routing::RouteMatch& match);
  HttpProxySettings httpSettings() const;
  bool routeOutbound(uint32_t slot);
  void connectUpstream(uint32_t slot);
  void onConnect(uint32_t slot, const loop::Completion& c);
  void onRecv(uint32_t slot, bool from_client, const loop::Completion& c);
  void onSend(uint32_t slot, bool to_client, const loop::Completion& c);
  void onShutdown(uint32_t slot, bool client_side, const loop::Completion& c);
  void pump(uint32_t slot, bool from_client);
  void maybeArmRecv(uint32_t slot, bool from_client);
  // Closes the connection: every socket goes through cancel -> shutdown -> close.
  // Closes the connection. A clean close (shutdown -> close) only when nothing is left unsent;
  // otherwise, or when `reset`, every socket gets SO_LINGER {1,0}: its pending operations are
  // cancelled by user_data and the close sends an RST.
  void closeConnection(uint32_t slot, const char* outcome, bool reset = false);
  // The side `client_side` reset or failed: flush what it sent to the other side, then reset.
  void onPeerReset(uint32_t slot, bool client_side);
  void closeSocket(uint32_t slot, bool client_side, bool reset);
  void takeChunk(Direction& d, const loop::Completion& c);
  void releaseChunk(Direction& d, Chunk& ch);
  void dropQueue(Direction& d);
  const char* chunkData(const Chunk& ch);
  void onTick();
  void armTick();
  void pauseAccepting();
  void resumeAccepting();
  void maybeFree(uint32_t slot);
  EndpointCounters* countersFor(const Connection& conn);
  void logAccess(const Connection& conn);
  // One access-log line (pushed to the log sink's queue; counted when dropped).
  struct AccessLine {
    ListenerKind kind;
    const SocketAddress& peer;
    const SocketAddress& original_dst;
    std::string_view service;
    std::string_view subset;
    std::string upstream;
    std::string_view outcome;
    uint64_t received_bytes;
    uint64_t sent_bytes;
    int64_t duration_ms;
    size_t attempts;
  };
  void pushAccess(const AccessLine& line);
  // A connection the sniffer closed before a verdict: its access-log line.
  void onSniffClosed(const SniffClosed& closed);
  // Kernel relay (worker_kernel_relay.cc). handToKernel, at connect: true when the pair went to
  // the kernel (--relay kernel); under --relay auto it only marks the pair for maybeHandOver.
  bool handToKernel(uint32_t slot);
  // A pure L4 pair the kernel relay may carry (no TLS, no L7 port).
  static bool kernelRelayEligible(const Connection& conn);
  // Puts the pair into the relay's maps; false (the io_uring relay keeps it) when refused.
  bool enterKernelRelay(uint32_t slot);
  // --relay auto: a receive that brought bytes, for the hand-over rule.
  void noteReceive(uint32_t slot, bool from_client, const loop::Completion& c);
  // --relay auto, at an idle point (a send completed): when HandoverRule says so, cancels the
  // armed receives; onHandoverRecv takes their completions and finishHandOver hands over.
  void maybeHandOver(uint32_t slot);
  void onHandoverRecv(uint32_t slot, const loop::Completion& c);
  void finishHandOver(uint32_t slot);
  // Nothing queued or being sent either way, no FIN seen: the kernel can take over here.
  static bool idleForHandOver(const Connection& conn);
  // At close: why a pair --relay auto could have handed over stayed in user space.
  void countKeptInUserSpace(const Connection& conn);
  void armRelayPoll(uint32_t slot, bool client_side);
  void onRelayPoll(uint32_t slot, bool client_side, const loop::Completion& c);
  // Shuts the write side of a socket whose peer sent FIN once every redirected byte reached
  // it; closes the connection when both directions are done.
  void relayProgress(uint32_t slot);
  // Before the sockets close: cancels the watches, takes the pair out of the maps, counts bytes.
  void finishKernelRelay(uint32_t slot);
  // Backpressure (relay.bpf.c, docs/PROXY.md "Backpressure"): the program reports a pair whose
  // reader fell behind; pauseKernelRelay stops both sockets' verdicts and hands the pair to the
  // io_uring relay with both directions held; releaseHeld lets each direction go once the
  // bytes the kernel redirected that way reached the receiving socket.
  void armRelayEvents();
  void armRelayEvent(bool ring);  // the ring buffer's poll (worker 0), or the mailbox's read
  void onRelayEvents(bool ring, const loop::Completion& c);
  void pauseKernelRelay(uint32_t slot, uint64_t cookie);
  void releaseHeld(uint32_t slot);
  void armRelayDrain(uint32_t slot);
  void cancelRelayPolls(uint32_t slot);
  static void countKernelBytes(Connection& conn, const RelayBytes& bytes);
  // The idle check of a kernel-relayed connection: true when bytes moved since the last one.
  bool kernelRelayMoved(uint32_t slot);

  // mTLS and AuthorizationPolicy (tls_worker.cc, docs/TLS.md).
  // Inbound, at accept: the PeerAuthentication mode and, for plaintext, the authorization.
  // False when the connection was closed, or when the connect to the app waits for the
  // handshake and the authorization (STRICT, PERMISSIVE: authorizeInbound connects).
  // `sniffed`: the transport the sniffer decided (its TLS handshake done), or nullptr.
  bool secureInbound(uint32_t slot, Sniffed* sniffed = nullptr);
  // Outbound, before each connect attempt: originate TLS or not toward the chosen endpoint.
  void secureOutbound(uint32_t slot);
  // After the upstream connect: a client stream sends its ClientHello; an inbound one flushes
  // what waited for the app.
  void tlsConnected(uint32_t slot);
  // Received bytes of a connection with TLS state; false when TLS is not involved and the plain
  // relay takes them.
  bool tlsReceive(uint32_t slot, bool from_client, const loop::Completion& c);
  // End of file from one side: close_notify toward the TLS side.
  void tlsEndOfFile(uint32_t slot, bool from_client);
  // PERMISSIVE detection deadline.
  void tlsTick(uint32_t slot);
  // While PERMISSIVE detection runs, the app's bytes wait (they may have to be encrypted).
  bool tlsHoldsReceive(const Connection& conn, bool from_client) const;
  void tlsQueue(Direction& d, const std::string& bytes);
  bool authorizeInbound(uint32_t slot, const std::string& peer_identity);

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
  size_t listener_ops_ = 0;  // cancel and close completions of listeners still to come
  bool accepting_ = true;
  bool accept_paused_ = false;  // at max_connections
  size_t buffer_reserve_ = 0;   // provided buffers kept free for everyone: no borrowing below
  std::chrono::steady_clock::time_point now_;  // refreshed once per batch
  std::chrono::milliseconds tick_{1000};
  bool tick_armed_ = false;
  // Entries never move: references stay valid as it grows.
  loop::SlotTable<Connection> slots_;
  size_t active_ = 0;  // accepted connections not yet closed
  struct Starved {
    uint32_t slot;
    uint32_t generation;
    bool from_client;
  };
  std::vector<Starved> starved_;  // directions waiting for provided buffers
  HttpProxy http_;
  Sniffer sniffer_;

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

  std::shared_ptr<tls::IdentityStore> identity_;
  tls::SessionCache session_cache_;

  int control_fd_ = -1;
  uint64_t control_value_ = 0;
  std::function<void()> on_control_;

  // This worker's number among the proxy's (the kernel relay's events name it), and the maps
  // whose events it watches (armRelayEvents, once they are in use).
  unsigned index_ = 0;
  std::shared_ptr<const RelayMaps> relay_events_;
  uint64_t relay_wake_value_ = 0;
};

}  // namespace remora::proxy
