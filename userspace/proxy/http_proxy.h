#pragma once

// The L7 data path of one worker (issue 10): client connections to an HTTP ServicePort are
// parsed request by request; each request is routed on its own (VirtualService http[] matches,
// per-request exact weights, faults, timeouts, retries) and sent on a pooled keep-alive upstream
// connection. Runs on the worker's thread and ring; its operations carry HttpOp values in the op
// byte of user_data (the worker hands every completion with such an op to onCompletion).
//
// Sessions (client connections) and upstream connections live in two slot tables, so a pooled
// upstream connection outlives the session that opened it. Requests are handled one at a time
// per session, which answers pipelined requests in order. A request body is buffered whole while
// it fits the buffer limit (--buffer-limit, ProxyConfig bufferLimitBytes; 1 MiB), so every retry
// and the mirror can resend it; a larger body streams upstream with backpressure in both
// directions, and such a request is not retried once its first bytes went upstream.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/ip_address.h"
#include "loop/ring.h"
#include "loop/slot_table.h"
#include "loop/user_data.h"
#include "proxy/http_mirror.h"
#include "proxy/http_pool.h"
#include "proxy/socket_ops.h"
#include "proxy/stats.h"
#include "routing/http_route.h"
#include "routing/route_table.h"
#include "security/path_normalization.h"
#include "tls/tls_stream.h"

namespace remora::http {
class MessageHead;
}  // namespace remora::http

namespace remora::tls {
class IdentityStore;
}  // namespace remora::tls

namespace remora::proxy {

enum class ListenerKind : uint8_t;

// Op bytes of the L7 path; the worker's own ops stay below kFirst.
enum class HttpOp : uint8_t {
  kFirst = 64,
  kClientRead = kFirst,
  kClientSend,
  kClientShut,
  kClientClose,
  kUpstreamConnect,
  kUpstreamRead,
  kUpstreamSend,
  kUpstreamShut,
  kUpstreamClose,
  kTimer,
  // The cancel of a multishot receive that backpressure stopped (its own completion).
  kClientPause,
  kUpstreamPause,
  kLast = kUpstreamPause,
};

struct HttpProxySettings {
  std::chrono::milliseconds connect_timeout{1000};
  // A kept-alive client connection with no request in progress closes after this (0: never).
  std::chrono::milliseconds client_idle_timeout{std::chrono::hours(1)};
  // Per connection and direction: the request body buffered before it streams, the bytes
  // queued toward an upstream or a client before reading the other side pauses.
  size_t buffer_limit = size_t{1} << 20;
  IpAddress inbound_source_v4 = IpAddress::v4(0x7f000006);
  IpAddress inbound_source_v6 = *IpAddress::parse("::6");
  // TPROXY inbound: connections to the app are bound to the client's own address
  // (SocketOps::transparentUpstreamSocket) and pooled per client address (ClusterPool keys).
  bool inbound_transparent = false;
  bool access_log = false;
  // Mirroring: copies in flight per worker (over it a copy is dropped), and how long a copy
  // may take when its route sets no timeout.
  uint32_t mirror_max_in_flight = HttpMirror::kDefaultMaxInFlight;
  std::chrono::milliseconds mirror_timeout{10000};
  // Istio's meshConfig pathNormalization, applied to each request's path once, on both
  // listeners (docs/HTTP.md, "Path normalization").
  security::PathNormalization path_normalization = security::PathNormalization::kBase;
};

class HttpProxy {
 public:
  static constexpr size_t kReadSize = 16384;
  // Client bytes read ahead of the request being served (pipelining) before reading pauses.
  static constexpr size_t kMaxReadAhead = 64 * 1024;
  // Lingering close (nginx's lingering_close, Envoy's delayed close): a client still sending a
  // body the response did not wait for is read and the bytes dropped after the response, once
  // the write side is shut, until it closes, for at most this long and this many bytes. Closing
  // with its bytes unread would reset the connection, and a reset can take the response with
  // it (the client, busy sending, sees the reset first).
  static constexpr std::chrono::milliseconds kLingerTime{5000};
  static constexpr uint64_t kLingerBytes = 64ULL * 1024 * 1024;

  using LogSink = std::function<bool(std::string)>;

  HttpProxy(loop::Ring& ring, SocketOps& sockets, WorkerStats& stats);
  ~HttpProxy();
  HttpProxy(const HttpProxy&) = delete;
  HttpProxy& operator=(const HttpProxy&) = delete;

  // The router (owned by the worker, outliving this) and settings for requests from now on.
  void configure(routing::Router* router, const HttpProxySettings& settings);
  void setAccessLog(LogSink sink) { access_log_ = std::move(sink); }
  // mTLS (http_tls.cc): the workload identity (nullptr: none) and the worker's client session
  // cache, shared with the L4 path.
  void setTls(std::shared_ptr<tls::IdentityStore> identity, tls::SessionCache* sessions) {
    identity_ = std::move(identity);
    session_cache_ = sessions;
  }

  // Takes over an accepted client connection (the fd is this object's from now on).
  // `first_bytes`: what was read from it already (protocol sniffing), parsed first; with
  // `client_tls` (the sniffer's established server stream) they are its decrypted bytes, and
  // the session carries on over that stream.
  void adopt(int fd, ListenerKind kind, const SocketAddress& peer,
             const SocketAddress& original_dst, std::string_view first_bytes = {},
             std::unique_ptr<tls::TlsStream> client_tls = nullptr);

  void onCompletion(const loop::Completion& c);
  // Called by the worker once per batch with the batch's time.
  void afterBatch(std::chrono::steady_clock::time_point now);
  // Periodic sweep: idle pooled connections, idle client connections.
  void onTick(std::chrono::steady_clock::time_point now);
  // Drain: idle pooled connections and kept-alive clients between requests close now, the
  // others after their current response; nothing goes back to a pool any more.
  void drain();
  // Resets every session and upstream connection (drain deadline, shutdown).
  void abortAll();

  size_t activeSessions() const { return active_sessions_; }
  bool quiescent() const { return sessions_.inUse() == 0 && upstreams_.inUse() == 0; }

  static bool owns(uint8_t op) {
    return (op >= static_cast<uint8_t>(HttpOp::kFirst) &&
            op <= static_cast<uint8_t>(HttpOp::kLast)) ||
           HttpMirror::owns(op);
  }
  const HttpMirror& mirror() const { return mirror_; }

 private:
  struct Session;
  struct Upstream;
  struct Request;
  // One socket's I/O: a read buffer of its own and a two-stage send queue (the string being
  // sent stays untouched until its send completes; new bytes go to `pending`).
  struct Pipe {
    int fd = -1;
    std::unique_ptr<char[]> rbuf;
    // A read is armed: a multishot receive into the ring's provided buffers (armed until its
    // final completion), or a one-shot read into rbuf.
    bool reading = false;
    bool multishot = false;
    // Backpressure cancelled the multishot receive; its final completion is still to come.
    bool pause_sent = false;
    // The provided buffers ran out (-ENOBUFS): the next read goes into rbuf.
    bool next_read_oneshot = false;
    bool eof = false;
    bool failed = false;
    std::string sending;
    size_t sent = 0;
    bool send_in_flight = false;
    std::string pending;
    bool shut_sent = false;
    // mTLS (http_tls.cc): the TLS side of this socket, if any; queueSend encrypts through it
    // and received bytes are decrypted before the HTTP code sees them.
    std::unique_ptr<tls::TlsStream> tls;
    bool detect_tls = false;  // PERMISSIVE: the first byte decides
    bool tls_identified = false;
    // The peer's SPIFFE identity, read once when its handshake completes ("" for plaintext);
    // authorization and request metrics use it for every request of the connection.
    std::string peer_principal;
    std::string peer_namespace;
    bool close_notify = false;
    size_t queued() const { return (sending.size() - sent) + pending.size(); }
  };
  enum class TimerKind : uint8_t { kDelay, kRequest, kTry, kCount };
  struct TimerEntry {
    std::chrono::steady_clock::time_point when;
    uint32_t slot;
    uint32_t generation;
    TimerKind kind;
    uint64_t seq;
    bool operator>(const TimerEntry& o) const { return when > o.when; }
  };

  // Session flow.
  void readClient(uint32_t slot);
  bool clientReadWanted(const Session& s) const;
  bool upstreamReadWanted(uint32_t up, bool* client_full) const;
  // Arms the read of one socket; see Pipe::reading.
  void armRead(Pipe& p, uint64_t user_data);
  // The bytes a read completion carries (in a provided buffer, or in rbuf).
  std::string_view received(const Pipe& p, const loop::Completion& c);
  // What every read completion does first, client and upstream alike: kDone (the socket is
  // closing), kReadAgain (a paused receive's final completion, or the provided buffers ran out:
  // the caller re-arms), or kProceed with the completion's result.
  enum class ReadStart : uint8_t { kDone, kReadAgain, kProceed };
  ReadStart startRead(Pipe& p, bool closing, const loop::Completion& c);
  // After a read completion: cancels a multishot receive that backpressure says to stop.
  void pauseClientRead(uint32_t slot);
  void pauseUpstreamRead(uint32_t up);
  void onClientRead(uint32_t slot, const loop::Completion& c);
  void onClientSend(uint32_t slot, const loop::Completion& c);
  void nextRequest(uint32_t slot);
  void handleRequest(uint32_t slot);
  void startStreaming(uint32_t slot);
  void pumpRequestBody(uint32_t slot);
  void beginRequest(Session& s);
  // The request-target to forward: the normalized path and the client's query (the client's
  // target when normalization changed nothing).
  static std::string requestTarget(const Session& s);
  // The access log's path: Envoy's :path after normalization (before any rewrite), with the
  // client's query; the path as sent when the mode is NONE or normalization refused it.
  static std::string loggedPath(const Session& s);
  static std::string redirectLocation(const routing::HttpRoute& route,
                                      const http::MessageHead& request, std::string_view target);
  std::optional<routing::RouteDecision> pickFirst(uint32_t slot);
  void releaseDecision(Session& s);
  // Mirroring (http_mirror.h): sends the drawn copy of the current request, once per request.
  void sendMirror(Session& s);
  // The request head for the upstream (route and destination edits, rewrites); with `shadow`,
  // the mirror's, whose authority ends in "-shadow".
  void writeUpstreamHead(const Session& s, bool shadow, std::string& out) const;
  ClusterPool& poolFor(const routing::RouteDecision& d);
  size_t endpointCount(const Session& s) const;
  void proceed(uint32_t slot);
  void startAttempt(uint32_t slot);
  void sendOnUpstream(uint32_t slot, uint32_t up);
  void localReply(uint32_t slot, int status, std::string_view body, std::string_view flags,
                  const std::vector<std::pair<std::string, std::string>>& extra_headers = {});
  void finishRequest(uint32_t slot);
  void closeSession(uint32_t slot, bool reset);
  // Shuts the client's write side and drops what it still sends (see kLingerTime).
  void startLinger(uint32_t slot);
  // Closes cleanly once every queued byte reached the client.
  void closeWhenFlushed(uint32_t slot);
  void maybeFreeSession(uint32_t slot);
  // A failed attempt: retry when the policy allows, else answer with `status` and `flags`.
  void attemptFailed(uint32_t slot, const char* reason, int status, const char* flags);
  void onTimer(uint32_t slot, TimerKind kind);
  void setTimer(uint32_t slot, TimerKind kind, std::chrono::milliseconds after);
  void clearTimer(uint32_t slot, TimerKind kind);
  void fireTimers();

  // Upstream flow.
  std::optional<uint32_t> openUpstream(uint32_t slot, const SocketAddress& endpoint,
                                       ClusterPool* pool);
  void onUpstreamConnect(uint32_t up, const loop::Completion& c);
  void onUpstreamRead(uint32_t up, const loop::Completion& c);
  void onUpstreamSend(uint32_t up, const loop::Completion& c);
  void readUpstream(uint32_t up);
  void processResponse(uint32_t slot, uint32_t up);
  void responseDone(uint32_t slot, uint32_t up, bool reusable);
  void releaseUpstream(uint32_t up, bool reusable);
  void closeUpstream(uint32_t up, bool reset);
  void maybeFreeUpstream(uint32_t up);
  void servePending(ClusterPool& pool);
  // TPROXY: the address a connection of this session to `endpoint` is bound to (the client's,
  // when of the endpoint's family); nullopt: the shared inbound_source / no binding, pooled
  // with every other session's.
  std::optional<IpAddress> upstreamSource(const Session& s, const SocketAddress& endpoint) const;
  // A TPROXY session from `source` ended: with none left from that address, its idle
  // connections close (only a request from that address could use them).
  void sourceSessionClosed(const IpAddress& source);

  // Tunnel (after a 101).
  void startTunnel(uint32_t slot, uint32_t up);
  void pumpTunnel(uint32_t slot);

  // Pipes.
  void queueSend(Pipe& p, std::string_view data);
  void flush(Pipe& p, uint64_t user_data);
  bool flushClient(uint32_t slot);
  bool flushUpstream(uint32_t up);

  // mTLS and AuthorizationPolicy (http_tls.cc, docs/TLS.md).
  enum class TlsIn : uint8_t { kPlain, kFailed };
  // Inbound: PeerAuthentication's mode for a new session's client pipe; false: close it.
  bool secureSession(Pipe& client, ListenerKind kind, const SocketAddress& original_dst);
  // A sniffed inbound client: its TLS stream (established, the peer identified) or, for
  // plaintext first bytes, PERMISSIVE's detection settled. False: refused (STRICT plaintext).
  bool secureSniffed(Pipe& client, bool first_bytes, std::unique_ptr<tls::TlsStream> client_tls);
  // An inbound client's TLS session is established: its peer's principal and namespace are
  // recorded for the policies, and the session is counted.
  static void identifyClient(Pipe& client);
  // Outbound: originates TLS on a new upstream connection to `endpoint` when mTLS applies.
  void secureUpstream(Pipe& io, ListenerKind kind, const routing::RouteTable* table,
                      const routing::ServicePort* port, const SocketAddress& endpoint);
  // After the TCP connect: the ClientHello goes first. False when the stream failed.
  static bool tlsConnected(Pipe& io);
  // Received bytes of a pipe through its TLS stream (or its PERMISSIVE detection): `bytes`
  // becomes the plaintext (maybe empty); handshake bytes to answer are queued on the pipe.
  TlsIn tlsReceive(Pipe& p, std::string_view& bytes, bool inbound_client);
  // Plaintext to send on a TLS pipe: encrypted (held until the handshake is done) and queued.
  static void tlsSend(Pipe& p, std::string_view data);
  // close_notify before a clean close of a TLS pipe.
  static void tlsCloseNotify(Pipe& p);
  // The per-request AuthorizationPolicy check of an inbound session (`table` the request's,
  // `path` the request's path normalized once by handleRequest, as security::evaluate()
  // expects); false: denied, to be answered 403.
  static bool requestAllowed(const routing::RouteTable* table, ListenerKind kind,
                             const http::MessageHead& head, std::string_view path,
                             const SocketAddress& peer, const SocketAddress& original_dst,
                             const Pipe& client);

  Session* session(uint32_t slot, uint32_t generation);
  const Session* session(uint32_t slot, uint32_t generation) const;
  void recordRequest(const Session& s);
  void logRequest(const Session& s);

  // Outlier ejections as the Router's picks see them.
  struct Health final : routing::EndpointHealth {
    explicit Health(HttpProxy* o) : owner(o) {}
    bool ejected(const routing::ServicePort& port, uint32_t subset_index,
                 uint32_t endpoint_index) const override;
    HttpProxy* owner;
  };

  loop::Ring& ring_;
  SocketOps& sockets_;
  WorkerStats& stats_;
  routing::Router* router_ = nullptr;
  HttpProxySettings settings_;
  LogSink access_log_;
  std::shared_ptr<tls::IdentityStore> identity_;
  tls::SessionCache* session_cache_ = nullptr;
  std::string tls_plain_;  // scratch: the plaintext of the receive being handled
  // Client and upstream reads are multishot receives (armRead); REMORA_URING_AB=l7-oneshot
  // turns them back into one-shot reads, for the benchmarks' A/B runs.
  bool multishot_reads_ = !loop::uringAbSwitch("l7-oneshot");
  std::chrono::steady_clock::time_point now_;

  loop::SlotTable<std::unique_ptr<Session>> sessions_;
  loop::SlotTable<std::unique_ptr<Upstream>> upstreams_;
  size_t active_sessions_ = 0;
  Pools pools_;
  // TPROXY: open sessions per client address (the idle connections bound to an address are
  // kept only while this is above zero).
  std::map<IpAddress, uint32_t> source_sessions_;
  HttpMirror mirror_;

  Health health_{this};
  bool draining_ = false;
  uint64_t request_counter_ = 0;
  // The metric series of the last request recorded, with their labels (recordRequest).
  // WorkerStats never removes a series, so the pointers stay valid.
  struct RecordedSeries {
    std::string service;
    std::string subset;
    uint16_t code = 0;
    std::string flags;
    std::string principal;
    Counter* requests = nullptr;
    DurationHistogram* durations = nullptr;
  };
  RecordedSeries last_series_;
  // Scratch of handleRequest: the request's fields as the route matcher takes them.
  std::vector<routing::HeaderField> match_fields_;

  std::priority_queue<TimerEntry, std::vector<TimerEntry>, std::greater<>> timers_;
  std::multiset<std::chrono::steady_clock::time_point> armed_;  // engine timers in the ring
  uint64_t timer_seq_ = 0;
};

}  // namespace remora::proxy
