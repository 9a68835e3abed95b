#include "proxy/http_proxy.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

#include "http/codec.h"
#include "proxy/tls_connection.h"
#include "proxy/worker.h"
#include "routing/http_route.h"
#include "security/security_policy.h"

namespace remora::proxy {
namespace {

using loop::Completion;
using loop::UserData;
using routing::RouteDecision;

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

uint8_t opByte(HttpOp op) { return static_cast<uint8_t>(op); }

bool isClientOp(HttpOp op) {
  return op == HttpOp::kClientRead || op == HttpOp::kClientSend || op == HttpOp::kClientShut ||
         op == HttpOp::kClientClose || op == HttpOp::kClientPause;
}

// Which retryOn condition a failed attempt meets.
uint32_t retryBitFor(std::string_view reason) {
  if (reason == "connect-failure") return routing::kRetryOnConnectFailure;
  if (reason == "reset") return routing::kRetryOnReset;
  // A per-try timeout answers 504: a gateway error (and a 5xx).
  if (reason == "per-try-timeout") return routing::kRetryOn5xx | routing::kRetryOnGatewayError;
  return 0;
}

bool retriableStatus(const routing::RetryPolicy& policy, int status) {
  if ((policy.retry_on & routing::kRetryOn5xx) != 0 && status >= 500 && status <= 599) return true;
  if ((policy.retry_on & routing::kRetryOnGatewayError) != 0 &&
      (status == 502 || status == 503 || status == 504)) {
    return true;
  }
  if ((policy.retry_on & routing::kRetryOnRetriable4xx) != 0 && status == 409) return true;
  if ((policy.retry_on & routing::kRetryOnRetriableStatusCodes) != 0) {
    return std::find(policy.retriable_status_codes.begin(), policy.retriable_status_codes.end(),
                     static_cast<uint16_t>(status)) != policy.retriable_status_codes.end();
  }
  return false;
}

// The generated x-request-id: UUID-shaped, the version and variant nibbles fixed (4, 8), from a
// per-worker counter `a` and the clock `b`. Written by hand rather than with fmt::format: it is
// made for nearly every request.
void writeRequestId(uint64_t a, uint64_t b, std::string& out) {
  static constexpr std::string_view kHex = "0123456789abcdef";
  std::array<char, 36> buf{};
  size_t at = 0;
  auto hex = [&](uint64_t v, int digits) {
    for (int i = digits - 1; i >= 0; --i) buf[at++] = kHex[(v >> (4 * i)) & 0xf];
  };
  hex(b >> 32, 8);
  buf[at++] = '-';
  hex(b >> 16, 4);
  buf[at++] = '-';
  buf[at++] = '4';
  hex(b, 3);
  buf[at++] = '-';
  buf[at++] = '8';
  hex(a >> 48, 3);
  buf[at++] = '-';
  hex(a, 12);
  out.assign(buf.data(), at);
}

// Drops the parsed prefix of a session's read-ahead: all of it when everything was parsed, else
// once it is longer than a read (so the copy stays rare).
void compactReadAhead(std::string& in, size_t& off) {
  if (off == in.size()) {
    in.clear();
    off = 0;
  } else if (off > HttpProxy::kReadSize) {
    in.erase(0, off);
    off = 0;
  }
}

http::HeaderEdits toEdits(const routing::HeaderOps& a, const routing::HeaderOps* b) {
  http::HeaderEdits e;
  e.set = a.set;
  e.add = a.add;
  e.remove = a.remove;
  if (b != nullptr) {
    e.set.insert(e.set.end(), b->set.begin(), b->set.end());
    e.add.insert(e.add.end(), b->add.begin(), b->add.end());
    e.remove.insert(e.remove.end(), b->remove.begin(), b->remove.end());
  }
  return e;
}

// `path` with the request's query, if it has one: the target forwarded or logged.
std::string withQuery(std::string path, const http::MessageHead& h) {
  if (!h.query().empty()) path.append("?").append(h.query());
  return path;
}

}  // namespace

// One client connection.
struct HttpProxy::Session {
  enum class Stage : uint8_t {
    kIdle,
    kBody,
    kDelay,
    kQueued,
    kUpstream,
    kTunnel,
    kLinger,  // the response is out, the write side shut; the client's bytes are dropped
    kClosing
  };
  Pipe client;
  ListenerKind kind = ListenerKind::kOutbound;
  SocketAddress peer;
  SocketAddress original_dst;
  // TPROXY inbound: the client's address, which this session's upstream connections are bound
  // to and pooled under (counted in source_sessions_ while the session is open).
  std::optional<IpAddress> client_source;
  http::Parser parser{http::Parser::Kind::kRequest};
  std::string in;
  size_t in_off = 0;
  Stage stage = Stage::kIdle;
  bool close_after = false;    // close once the current response is out
  bool close_pending = false;  // close as soon as the client queue is empty
  // A response ended before the request body did: the close lingers (kLingerTime).
  bool linger = false;
  Clock::time_point linger_until{};
  uint64_t linger_bytes = 0;
  Clock::time_point last_activity;

  // The request in progress.
  Clock::time_point started;
  // The request body, raw as the client framed it: the whole of it while it fits the buffer
  // limit (every retry and the mirror resend it); beyond, the request streams (`streaming`):
  // it is routed with the first part, the rest goes upstream as it arrives, and once a byte of
  // it went upstream there is no retry and no mirror.
  std::string body;
  bool streaming = false;
  bool body_done = true;  // the parser saw the request's end
  std::shared_ptr<const routing::RouteTable> table;
  const routing::ServicePort* port = nullptr;
  const routing::HttpRoute* route = nullptr;
  const routing::HttpMatch* match = nullptr;
  const routing::HttpRouteDestination* destination = nullptr;
  routing::RetryPolicy retries;
  RouteDecision decision;
  bool have_decision = false;
  std::vector<RouteDecision> mirrors;  // drawn by the route, sent when the request proceeds
  ClusterPool* pool = nullptr;
  std::string service_name;
  std::string subset_name;
  std::string request_id;
  // The path after Istio's path normalization (settings' mode) when it differs from the
  // client's ("" when the client's is normal, or the mode is NONE), computed once per request on
  // both listeners: authorization, route matching, rewrites, redirects, the head sent upstream
  // (and to mirrors) and the access log all use it, as Envoy's connection manager rewrites
  // :path before its filters, router and access log (docs/HTTP.md).
  std::string normalized_path;
  std::string upstream_head;
  uint32_t retries_left = 0;
  uint32_t attempts = 0;
  bool race_retry_used = false;
  bool force_fresh = false;
  bool abort_drawn = false;
  bool delay_drawn = false;
  std::vector<SocketAddress> tried;
  std::optional<uint32_t> up;
  bool response_started = false;
  bool upstream_paused = false;  // the client queue is above the limit
  int status = 0;
  std::string flags;
  std::array<uint64_t, static_cast<size_t>(TimerKind::kCount)> timer_seq{};
  uint64_t request_bytes = 0;
  uint64_t response_bytes = 0;

  // The current request's path, normalized, without the query.
  std::string_view path() const {
    return normalized_path.empty() ? parser.head().path() : std::string_view(normalized_path);
  }
};

// One upstream connection: bound to a session while it carries a request, else idle in its
// cluster pool.
struct HttpProxy::Upstream {
  enum class State : uint8_t { kConnecting, kBusy, kIdle, kTunnel, kClosing };
  Pipe io;
  SocketAddress endpoint;
  // The client address this connection is bound to (TPROXY inbound); its pool key with
  // `endpoint`. nullopt: the shared source.
  std::optional<IpAddress> source;
  ClusterPool* pool = nullptr;
  EndpointCounters* counters = nullptr;
  State state = State::kConnecting;
  uint32_t owner = 0;
  uint32_t owner_generation = 0;
  uint32_t requests = 0;
  bool reused = false;     // the current request is not the connection's first
  bool got_bytes = false;  // a byte of the current response arrived
  Clock::time_point idle_since;
  http::Parser parser{http::Parser::Kind::kResponse};
  std::string in;
  sockaddr_storage sa{};
  socklen_t sa_len = 0;
};

HttpProxy::HttpProxy(loop::Ring& ring, SocketOps& sockets, WorkerStats& stats)
    : ring_(ring),
      sockets_(sockets),
      stats_(stats),
      now_(Clock::now()),
      mirror_(ring, sockets, stats) {}

HttpProxy::~HttpProxy() {
  for (size_t i = 0; i < sessions_.size(); ++i) {
    auto slot = static_cast<uint32_t>(i);
    if (sessions_.inUse(slot) && sessions_[slot] && sessions_[slot]->client.fd >= 0) {
      ::close(sessions_[slot]->client.fd);
    }
  }
  for (size_t i = 0; i < upstreams_.size(); ++i) {
    auto slot = static_cast<uint32_t>(i);
    if (upstreams_.inUse(slot) && upstreams_[slot] && upstreams_[slot]->io.fd >= 0) {
      ::close(upstreams_[slot]->io.fd);
    }
  }
}

void HttpProxy::configure(routing::Router* router, const HttpProxySettings& settings) {
  router_ = router;
  settings_ = settings;
  mirror_.setMaxInFlight(settings.mirror_max_in_flight);
}

HttpProxy::Session* HttpProxy::session(uint32_t slot, uint32_t generation) {
  return const_cast<Session*>(std::as_const(*this).session(slot, generation));
}

const HttpProxy::Session* HttpProxy::session(uint32_t slot, uint32_t generation) const {
  if (!sessions_.inUse(slot) || sessions_.generation(slot) != generation ||
      sessions_.released(slot)) {
    return nullptr;
  }
  return sessions_[slot].get();
}

// ---------------------------------------------------------------------------------------------
// Pipes

void HttpProxy::queueSend(Pipe& p, std::string_view data) {
  if (p.tls) {
    tlsSend(p, data);
    return;
  }
  p.pending.append(data);
}

void HttpProxy::flush(Pipe& p, uint64_t user_data) {
  p.send_in_flight = true;
  ring_.send(p.fd, {p.sending.data() + p.sent, p.sending.size() - p.sent}, user_data);
}

bool HttpProxy::flushClient(uint32_t slot) {
  Session& s = *sessions_[slot];
  Pipe& p = s.client;
  if (p.send_in_flight || p.fd < 0 || p.failed) return false;
  if (p.sent >= p.sending.size()) {
    if (p.pending.empty()) return true;
    p.sending.swap(p.pending);
    p.pending.clear();
    p.sent = 0;
  }
  flush(p, sessions_.track(opByte(HttpOp::kClientSend), slot));
  return false;
}

bool HttpProxy::flushUpstream(uint32_t up) {
  Upstream& u = *upstreams_[up];
  Pipe& p = u.io;
  if (p.send_in_flight || p.fd < 0 || p.failed || u.state == Upstream::State::kConnecting) {
    return false;
  }
  if (p.sent >= p.sending.size()) {
    if (p.pending.empty()) return true;
    p.sending.swap(p.pending);
    p.pending.clear();
    p.sent = 0;
  }
  flush(p, upstreams_.track(opByte(HttpOp::kUpstreamSend), up));
  return false;
}

// ---------------------------------------------------------------------------------------------
// Sessions

void HttpProxy::adopt(int fd, ListenerKind kind, const SocketAddress& peer,
                      const SocketAddress& original_dst, std::string_view first_bytes,
                      std::unique_ptr<tls::TlsStream> client_tls) {
  auto slot = sessions_.acquire();
  if (!slot) {
    ::close(fd);
    stats_.counters().accept_errors.inc();
    return;
  }
  auto& ptr = sessions_[*slot];
  if (!ptr) ptr = std::make_unique<Session>();
  Session& s = *ptr;
  auto rbuf = std::move(s.client.rbuf);
  std::string in = std::move(s.in);
  s = Session{};
  s.client.rbuf = rbuf ? std::move(rbuf) : std::make_unique<char[]>(kReadSize);
  s.in = std::move(in);
  s.in.clear();
  s.client.fd = fd;
  s.kind = kind;
  s.peer = peer;
  s.original_dst = original_dst;
  s.last_activity = now_;
  s.close_after = draining_;
  if (kind == ListenerKind::kInbound && settings_.inbound_transparent && peer.port != 0) {
    s.client_source = peer.ip;
    ++source_sessions_[peer.ip];
  }
  ++active_sessions_;
  stats_.counters().http_sessions.inc();
  if ((!client_tls && !secureSession(s.client, kind, original_dst)) ||
      !secureSniffed(s.client, !first_bytes.empty(), std::move(client_tls))) {
    closeSession(*slot, true);
    return;
  }
  if (!first_bytes.empty()) {
    // Sniffed: the bytes already read (decrypted over TLS) start the first request.
    s.in.assign(first_bytes);
    nextRequest(*slot);  // reads on when it needs more
    return;
  }
  readClient(*slot);
}

bool HttpProxy::clientReadWanted(const Session& s) const {
  if (s.client.eof || s.client.failed || s.client.fd < 0 || s.stage == Session::Stage::kClosing) {
    return false;
  }
  if (s.stage != Session::Stage::kTunnel && s.in.size() - s.in_off >= kMaxReadAhead) return false;
  return !(s.stage == Session::Stage::kTunnel && s.up &&
           upstreams_[*s.up]->io.queued() >= settings_.buffer_limit);
}

void HttpProxy::readClient(uint32_t slot) {
  Session& s = *sessions_[slot];
  if (s.client.reading || !clientReadWanted(s)) return;
  armRead(s.client, sessions_.track(opByte(HttpOp::kClientRead), slot));
}

// A multishot receive stays armed across requests: the socket's poll is armed once per
// connection, not once per read that finds the socket empty (docs/HTTP.md, "Per-request cost").
// Its bytes are copied out (into the session's or upstream's own buffers) and the provided
// buffer goes back in the same completion, so the L7 path never holds one past a completion and
// no set of slow L7 connections can take the pool from the others.
void HttpProxy::armRead(Pipe& p, uint64_t user_data) {
  p.reading = true;
  p.pause_sent = false;
  if (multishot_reads_ && !p.next_read_oneshot) {
    p.multishot = true;
    ring_.recvMultishot(p.fd, user_data, static_cast<uint32_t>(kReadSize),
                        loop::BufferGroup::kSmall);
    return;
  }
  // The pool ran dry (or multishot is off): this read needs no provided buffer.
  p.next_read_oneshot = false;
  p.multishot = false;
  ring_.read(p.fd, {p.rbuf.get(), kReadSize}, user_data);
}

std::string_view HttpProxy::received(const Pipe& p, const Completion& c) {
  if (c.res <= 0) return {};
  const char* at = c.hasBuffer() ? ring_.buffer(c.bufferId()).data() : p.rbuf.get();
  return {at, static_cast<size_t>(c.res)};
}

void HttpProxy::pauseClientRead(uint32_t slot) {
  Session& s = *sessions_[slot];
  Pipe& p = s.client;
  if (!p.reading || !p.multishot || p.pause_sent || p.fd < 0 ||
      s.stage == Session::Stage::kClosing || clientReadWanted(s)) {
    return;
  }
  p.pause_sent = true;
  ring_.cancel(sessions_.userData(opByte(HttpOp::kClientRead), slot),
               sessions_.track(opByte(HttpOp::kClientPause), slot));
}

void HttpProxy::pauseUpstreamRead(uint32_t up) {
  Upstream& u = *upstreams_[up];
  Pipe& p = u.io;
  bool client_full = false;
  if (!p.reading || !p.multishot || p.pause_sent || p.fd < 0 ||
      u.state == Upstream::State::kClosing || upstreamReadWanted(up, &client_full)) {
    return;
  }
  if (client_full) {
    Session* s = session(u.owner, u.owner_generation);
    if (s != nullptr) s->upstream_paused = true;
  }
  p.pause_sent = true;
  ring_.cancel(upstreams_.userData(opByte(HttpOp::kUpstreamRead), up),
               upstreams_.track(opByte(HttpOp::kUpstreamPause), up));
}

HttpProxy::ReadStart HttpProxy::startRead(Pipe& p, bool closing, const Completion& c) {
  if (!c.more()) p.reading = false;
  if (closing) return ReadStart::kDone;
  // Paused: reads on if the reason went away meanwhile.
  if (!c.more() && p.pause_sent && c.res == -ECANCELED) return ReadStart::kReadAgain;
  if (c.res == -ENOBUFS) {
    stats_.counters().buffer_exhausted.inc();
    p.next_read_oneshot = true;
    return ReadStart::kReadAgain;
  }
  return ReadStart::kProceed;
}

void HttpProxy::onClientRead(uint32_t slot, const Completion& c) {
  Session& s = *sessions_[slot];
  switch (startRead(s.client, s.stage == Session::Stage::kClosing, c)) {
    case ReadStart::kDone:
      return;
    case ReadStart::kReadAgain:
      readClient(slot);
      return;
    case ReadStart::kProceed:
      break;
  }
  if (s.stage == Session::Stage::kLinger) {
    if (c.res == -EINTR || c.res == -EAGAIN) {
      readClient(slot);
      return;
    }
    if (c.res > 0) {
      s.linger_bytes += static_cast<uint64_t>(c.res);
      if (s.linger_bytes <= kLingerBytes && now_ < s.linger_until) {
        readClient(slot);
        return;
      }
    }
    // The client closed (clean), or failed, or went past the bounds (reset).
    closeSession(slot, c.res != 0);
    return;
  }
  if (c.res > 0) {
    s.last_activity = now_;
    s.request_bytes += static_cast<uint64_t>(c.res);
    std::string_view data = received(s.client, c);
    if (s.client.tls || s.client.detect_tls) {
      if (tlsReceive(s.client, data, s.kind == ListenerKind::kInbound) == TlsIn::kFailed) {
        closeSession(slot, true);
        return;
      }
      flushClient(slot);  // handshake answers
      if (data.empty()) {
        readClient(slot);
        return;
      }
    }
    if (s.stage == Session::Stage::kTunnel) {
      Upstream& u = *upstreams_[*s.up];
      queueSend(u.io, data);
      flushUpstream(*s.up);
      readClient(slot);
      return;
    }
    s.in.append(data);
    if (s.stage == Session::Stage::kIdle || s.stage == Session::Stage::kBody) {
      nextRequest(slot);
    } else if (s.streaming && !s.body_done) {
      pumpRequestBody(slot);
    } else {
      readClient(slot);
    }
    return;
  }
  if (c.res == 0) {
    s.client.eof = true;
    if (s.stage == Session::Stage::kTunnel) {
      pumpTunnel(slot);
      return;
    }
    // Requests already received are still answered (a client may half-close after sending
    // them); nextRequest closes once it runs out of complete requests.
    if (s.stage == Session::Stage::kIdle || s.stage == Session::Stage::kBody) nextRequest(slot);
    if (s.streaming && !s.body_done) pumpRequestBody(slot);
    return;
  }
  if (c.res == -EINTR || c.res == -EAGAIN) {
    readClient(slot);
    return;
  }
  s.client.failed = true;
  stats_.counters().resets_from_client.inc();
  closeSession(slot, true);
}

void HttpProxy::onClientSend(uint32_t slot, const Completion& c) {
  Session& s = *sessions_[slot];
  Pipe& p = s.client;
  p.send_in_flight = false;
  if (s.stage == Session::Stage::kClosing) return;
  if (c.res <= 0) {
    p.failed = true;
    stats_.counters().resets_from_client.inc();
    closeSession(slot, true);
    return;
  }
  p.sent += static_cast<size_t>(c.res);
  s.response_bytes += static_cast<uint64_t>(c.res);
  s.last_activity = now_;
  const bool empty = flushClient(slot);
  if (empty && s.close_pending) {
    closeSession(slot, false);
    return;
  }
  if (s.upstream_paused && p.queued() <= settings_.buffer_limit / 2 && s.up) {
    s.upstream_paused = false;
    readUpstream(*s.up);
  }
  if (s.stage == Session::Stage::kTunnel) pumpTunnel(slot);
}

// Parses what the client sent until a request is complete (then routes it), more bytes are
// needed, or the request is refused.
void HttpProxy::nextRequest(uint32_t slot) {
  Session& s = *sessions_[slot];
  // Once a close is due nothing more is parsed (the rest of a refused body included).
  while (!s.close_pending &&
         (s.stage == Session::Stage::kIdle || s.stage == Session::Stage::kBody)) {
    std::string_view rest(s.in.data() + s.in_off, s.in.size() - s.in_off);
    http::Step step = s.parser.feed(rest);
    const std::string_view raw = rest.substr(0, step.consumed);
    s.in_off += step.consumed;
    switch (step.event) {
      case http::Event::kNeedMore:
        if (s.stage == Session::Stage::kBody) {
          s.body.append(raw);
          if (s.body.size() > settings_.buffer_limit) {
            startStreaming(slot);
            continue;
          }
        }
        if (s.client.eof) {
          // Closed between requests, or in the middle of one: nothing (more) to answer.
          closeWhenFlushed(slot);
          return;
        }
        break;
      case http::Event::kHead: {
        s.stage = Session::Stage::kBody;
        s.started = now_;
        s.body.clear();
        s.streaming = false;
        s.body_done = false;
        const http::MessageHead& h = s.parser.head();
        if (!h.keepAlive()) s.close_after = true;
        if (h.expectContinue() && h.framing() != http::Framing::kNone) {
          // The body is read here before any upstream sees the request.
          queueSend(s.client, kContinue);
          flushClient(slot);
        }
        continue;
      }
      case http::Event::kBody:
        s.body.append(raw);
        if (s.body.size() > settings_.buffer_limit) startStreaming(slot);
        continue;
      case http::Event::kMessageComplete:
        s.body.append(raw);
        s.body_done = true;
        handleRequest(slot);
        continue;
      case http::Event::kError: {
        // The codec's verdict (400/414/431/505), then close: nothing after a bad message on
        // this connection can be trusted to be framed as the proxy thinks.
        stats_.counters().http_bad_requests.inc();
        if (s.stage == Session::Stage::kIdle) s.started = now_;
        beginRequest(s);
        std::string out;
        http::writeErrorReply(s.parser.error(), out);
        queueSend(s.client, out);
        s.status = http::httpStatus(s.parser.error());
        s.close_after = true;
        s.in.clear();
        s.in_off = 0;
        flushClient(slot);
        finishRequest(slot);
        return;
      }
    }
    // kNeedMore: compact and read on.
    compactReadAhead(s.in, s.in_off);
    readClient(slot);
    return;
  }
  readClient(slot);  // keep watching the client (its close, pipelined bytes)
}

// The body outgrew the buffer limit: route the request now and stream the rest of its body.
void HttpProxy::startStreaming(uint32_t slot) {
  Session& s = *sessions_[slot];
  s.streaming = true;
  stats_.counters().http_streamed_requests.inc();
  handleRequest(slot);
}

// Moves the client's body bytes of a streaming request to its upstream connection while that
// connection's queue is under the buffer limit (backpressure: the client is not read while the
// read-ahead is full, and the read-ahead is not parsed while the upstream queue is full).
void HttpProxy::pumpRequestBody(uint32_t slot) {
  Session& s = *sessions_[slot];
  if (!s.streaming || s.body_done || s.stage != Session::Stage::kUpstream || !s.up) return;
  const uint32_t up = *s.up;
  Upstream& u = *upstreams_[up];
  if (u.state != Upstream::State::kBusy) return;  // connecting: the body waits in s.body
  while (!s.body_done && u.io.queued() < settings_.buffer_limit && s.in_off < s.in.size()) {
    std::string_view rest(s.in.data() + s.in_off, s.in.size() - s.in_off);
    http::Step step = s.parser.feed(rest);
    s.in_off += step.consumed;
    if (step.event == http::Event::kError) {
      // Bad framing in the middle of a body whose start went upstream: both sides are reset.
      stats_.counters().http_bad_requests.inc();
      closeSession(slot, true);
      return;
    }
    queueSend(u.io, rest.substr(0, step.consumed));
    if (step.event == http::Event::kMessageComplete) s.body_done = true;
  }
  compactReadAhead(s.in, s.in_off);
  flushUpstream(up);
  if (!s.body_done && s.client.eof && s.in_off == s.in.size()) {
    closeSession(slot, true);  // the client closed in the middle of the body
    return;
  }
  readClient(slot);
}

void HttpProxy::handleRequest(uint32_t slot) {
  Session& s = *sessions_[slot];
  const http::MessageHead& h = s.parser.head();
  beginRequest(s);
  s.stage = Session::Stage::kUpstream;
  s.table = router_ != nullptr ? router_->table() : nullptr;
  // Istio's path normalization (meshConfig pathNormalization), once per request, inbound and
  // outbound alike: Istio builds every sidecar HTTP connection manager with the mode's
  // normalize_path / merge_slashes / escaped-slashes settings (docs/HTTP.md).
  const security::PathNormalization mode = settings_.path_normalization;
  if (security::needsNormalization(h.path(), mode)) {
    std::optional<std::string> normalized = security::normalizePath(h.path(), mode);
    if (!normalized) {
      // Envoy's answer to a path that fails normalization (path_normalization_failed); the
      // connection stays usable.
      localReply(slot, 400, {}, "-");
      return;
    }
    if (*normalized != h.path()) s.normalized_path = std::move(*normalized);
  }
  if (!requestAllowed(s.table.get(), s.kind, h, s.path(), s.peer, s.original_dst, s.client)) {
    // Envoy's RBAC filter answer; the connection stays usable for the next request.
    localReply(slot, 403, "RBAC: access denied", "-");
    return;
  }
  if (s.kind == ListenerKind::kOutbound && s.table) {
    s.port = s.table->find(s.original_dst);
  }
  if (!h.has("x-request-id")) {
    // Unique per worker and request; not a secret, only a correlation id.
    const uint64_t a = ++request_counter_ ^ (reinterpret_cast<uintptr_t>(this) << 16);
    const auto b = static_cast<uint64_t>(now_.time_since_epoch().count());
    writeRequestId(a, b, s.request_id);
  }
  if (s.port != nullptr) {
    s.service_name = s.port->service;
    // Reused across requests: no allocation once it has grown to the usual field count.
    std::vector<routing::HeaderField>& fields = match_fields_;
    fields.clear();
    for (size_t i = 0; i < h.headerCount(); ++i) {
      const http::HeaderField f = h.header(i);
      fields.push_back({f.name, f.value});
    }
    routing::RequestView view;
    view.method = h.method();
    view.path = s.path();
    view.query = h.query();
    view.authority = h.authority();
    view.headers = fields;
    view.port = s.original_dst.port;
    if (!s.port->http_routes.empty()) {
      const routing::HttpRouteMatch m = routing::matchHttpRoute(*s.port, view);
      if (m.route == nullptr) {
        localReply(slot, 404, {}, "NR");
        return;
      }
      s.route = m.route;
      s.match = m.match;
      s.retries = m.route->retries;
      const routing::HttpRoute& r = *m.route;
      if (r.direct_response) {
        localReply(slot, r.direct_response->status, r.direct_response->body, "-");
        return;
      }
      if (r.redirect) {
        localReply(slot, r.redirect->code, "", "-",
                   {{"location", redirectLocation(r, h, requestTarget(s))}});
        return;
      }
    }
  }
  std::optional<RouteDecision> first = pickFirst(slot);
  if (first) {
    s.decision = *first;
    s.have_decision = true;
  }
  if (s.abort_drawn && !s.delay_drawn) {
    localReply(slot, *s.route->fault.abort_status, "fault filter abort", "FI");
    return;
  }
  if (s.delay_drawn) {
    s.flags = "DI";
    s.stage = Session::Stage::kDelay;
    setTimer(slot, TimerKind::kDelay, *s.route->fault.delay);
    return;
  }
  proceed(slot);
}

void HttpProxy::beginRequest(Session& s) {
  s.port = nullptr;
  s.route = nullptr;
  s.match = nullptr;
  s.destination = nullptr;
  s.have_decision = false;
  s.pool = nullptr;
  s.tried.clear();
  s.attempts = 0;
  s.race_retry_used = false;
  s.force_fresh = false;
  s.response_started = false;
  s.upstream_paused = false;
  s.status = 0;
  s.flags = "-";
  s.upstream_head.clear();
  s.request_id.clear();
  s.normalized_path.clear();
  s.retries = routing::RetryPolicy::istioDefault();
  s.service_name = s.kind == ListenerKind::kInbound ? kInboundCluster : kPassthroughCluster;
  s.subset_name.clear();
  s.abort_drawn = false;
  s.delay_drawn = false;
}

std::string HttpProxy::requestTarget(const Session& s) {
  const http::MessageHead& h = s.parser.head();
  if (s.normalized_path.empty()) return std::string(h.target());
  return withQuery(s.normalized_path, h);
}

std::string HttpProxy::redirectLocation(const routing::HttpRoute& r, const http::MessageHead& h,
                                        std::string_view target) {
  const routing::HttpRedirect& rd = *r.redirect;
  std::string authority(rd.authority.empty() ? h.authority() : rd.authority);
  if (rd.port != 0) {
    const size_t colon = authority.rfind(':');
    if (colon != std::string::npos && authority.find(']', colon) == std::string::npos) {
      authority.resize(colon);
    }
    authority += ":" + std::to_string(rd.port);
  }
  return fmt::format("{}://{}{}", rd.scheme.empty() ? "http" : rd.scheme, authority,
                     rd.uri.empty() ? target : std::string_view(rd.uri));
}

void HttpProxy::proceed(uint32_t slot) {
  Session& s = *sessions_[slot];
  s.stage = Session::Stage::kUpstream;
  if (s.route != nullptr && s.route->timeout.count() > 0) {
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(now_ - s.started);
    setTimer(slot, TimerKind::kRequest,
             std::max(std::chrono::milliseconds(1), s.route->timeout - elapsed));
  }
  s.retries_left = s.retries.attempts;
  sendMirror(s);
  startAttempt(slot);
}

// Picks where this attempt goes and takes (or opens, or waits for) a pooled connection there.
void HttpProxy::startAttempt(uint32_t slot) {
  Session& s = *sessions_[slot];
  s.stage = Session::Stage::kUpstream;
  s.response_started = false;
  SocketAddress endpoint = s.original_dst;
  const bool fresh = s.force_fresh;
  s.force_fresh = false;
  if (s.port != nullptr && router_ != nullptr) {
    if (!s.have_decision) {
      localReply(slot, 503, {}, "UH");
      return;
    }
    if (s.attempts > 0 && !fresh) {
      // A retry goes to another endpoint when there is one, the same one otherwise.
      std::optional<RouteDecision> next;
      if (s.route != nullptr && !s.route->destinations.empty()) {
        next = router_->pickSubsetEndpoint(*s.port, s.decision.subset_index, s.tried, &health_);
      }
      // None left in the subset: another subset, as the L4 path falls back (Envoy would answer
      // 503 here).
      if (!next) next = router_->retry(s.decision, s.tried);
      if (next && next->kind == RouteDecision::Kind::kService) {
        releaseDecision(s);
        s.decision = *next;
        s.have_decision = true;
      }
    }
    if (s.decision.kind != RouteDecision::Kind::kService) {
      localReply(slot, 503, {}, "UH");
      return;
    }
    endpoint = s.decision.upstream;
  }
  ClusterPool& pool = s.port != nullptr ? poolFor(s.decision) : pools_.get(s.service_name, "");
  s.pool = &pool;
  s.subset_name = pool.subset();
  if (!fresh) s.tried.push_back(endpoint);
  ++s.attempts;
  const std::optional<IpAddress> source = upstreamSource(s, endpoint);
  std::optional<uint32_t> up;
  if (!fresh) up = pool.takeIdle(endpoint, source);
  if (up) {
    stats_.counters().http_pool_reused.inc();
    upstreams_[*up]->reused = true;
    sendOnUpstream(slot, *up);
    return;
  }
  if (!pool.canOpen() && source) {
    // TPROXY: idle connections bound to other clients count toward the cap but can never
    // carry this request; one of them closes to make room (a waiter queued earlier gets the
    // room first, through servePending).
    if (auto victim = pool.takeIdleToEvict(source)) closeUpstream(*victim, false);
  }
  if (pool.canOpen()) {
    if (auto opened = openUpstream(slot, endpoint, &pool)) {
      s.up = opened;
    } else {
      attemptFailed(slot, "connect-failure", 503, "UF");
    }
    return;
  }
  if (pool.enqueue(Waiter{slot, sessions_.generation(slot)})) {
    s.stage = Session::Stage::kQueued;
    return;
  }
  // Envoy's circuit-breaker answer: 503, flag UO, x-envoy-overloaded.
  localReply(slot, 503,
             "upstream connect error or disconnect/reset before headers. reset reason: overflow",
             "UO", {{"x-envoy-overloaded", "true"}});
}

// The first pick of a request: the route's weighted destination (with its fault draws), or the
// port's own weights when no VirtualService http route applies.
std::optional<RouteDecision> HttpProxy::pickFirst(uint32_t slot) {
  Session& s = *sessions_[slot];
  if (router_ == nullptr || s.port == nullptr) return std::nullopt;
  if (s.route != nullptr && !s.route->destinations.empty()) {
    routing::HttpRouteDecision hd = router_->routeRequest(*s.port, *s.route, &health_);
    s.destination = hd.destination;
    s.abort_drawn = hd.abort && s.route->fault.abort_status.has_value();
    s.delay_drawn = hd.delay && s.route->fault.delay.has_value();
    s.mirrors = std::move(hd.mirrors);
    return hd.upstream;
  }
  RouteDecision d = router_->route(s.original_dst);
  // Step over ejected endpoints while another one is left.
  if (d.kind == RouteDecision::Kind::kService) {
    ClusterPool& pool = poolFor(d);
    std::vector<SocketAddress> skip;
    while (pool.ejected(d.upstream, now_) && skip.size() < 64) {
      skip.push_back(d.upstream);
      auto other = router_->retry(d, skip);
      if (!other) break;
      router_->release(d);
      d = *other;
    }
  }
  return d;
}

void HttpProxy::releaseDecision(Session& s) {
  const bool current = router_ != nullptr && s.table == router_->table();
  if (s.have_decision && current) router_->release(s.decision);
  s.have_decision = false;
  if (current) {
    for (const RouteDecision& m : s.mirrors) router_->release(m);
  }
  s.mirrors.clear();
}

// Each mirror drawn gets its own copy, fire and forget: none waits for another or for the
// main response.
void HttpProxy::sendMirror(Session& s) {
  if (s.mirrors.empty()) return;
  const bool current = router_ != nullptr && s.table == router_->table();
  std::string head;
  for (const RouteDecision& m : s.mirrors) {
    if (current) router_->release(m);
    if (m.service == nullptr || m.subset_index >= m.service->subsets.size()) continue;
    const routing::Subset& sub = m.service->subsets[m.subset_index];
    if (s.streaming) {
      // A body larger than the buffer limit is not copied: counted, as Envoy skips it.
      stats_.mirrors(EndpointKey{m.service->service, sub.name, "too_large"}).inc();
      continue;
    }
    if (head.empty()) writeUpstreamHead(s, /*shadow=*/true, head);
    MirrorCopy copy;
    copy.endpoint = m.upstream;
    copy.service = m.service->service;
    copy.subset = sub.name;
    copy.method = std::string(s.parser.head().method());
    copy.request.reserve(head.size() + s.body.size());
    copy.request = head;
    copy.request += s.body;
    copy.connect_timeout = sub.connection_pool.connect_timeout;
    copy.limits = sub.connection_pool;
    copy.timeout = s.route != nullptr && s.route->timeout.count() > 0 ? s.route->timeout
                                                                      : settings_.mirror_timeout;
    mirror_.send(std::move(copy), now_);
  }
  s.mirrors.clear();
}

ClusterPool& HttpProxy::poolFor(const RouteDecision& d) {
  std::string subset;
  const routing::Subset* sub = nullptr;
  if (d.service != nullptr && d.subset_index < d.service->subsets.size()) {
    sub = &d.service->subsets[d.subset_index];
    subset = sub->name;
  }
  ClusterPool& pool =
      pools_.get(d.service != nullptr ? d.service->service : kPassthroughCluster, subset);
  if (sub != nullptr) {
    pool.limits = sub->connection_pool;
    pool.outlier = sub->outlier_detection;
  }
  return pool;
}

bool HttpProxy::Health::ejected(const routing::ServicePort& port, uint32_t subset_index,
                                uint32_t endpoint_index) const {
  if (subset_index >= port.subsets.size()) return false;
  const routing::Subset& sub = port.subsets[subset_index];
  if (endpoint_index >= sub.endpoints.size()) return false;
  return owner->pools_.get(port.service, sub.name)
      .ejected(sub.endpoints[endpoint_index].address, owner->now_);
}

std::optional<uint32_t> HttpProxy::openUpstream(uint32_t slot, const SocketAddress& endpoint,
                                                ClusterPool* pool) {
  Session& s = *sessions_[slot];
  std::optional<IpAddress> source;
  if (s.kind == ListenerKind::kInbound) {
    source = endpoint.ip.family == Family::kIpv6 ? settings_.inbound_source_v6
                                                 : settings_.inbound_source_v4;
  }
  // TPROXY inbound: from the client's own address, as the L4 path (Worker::connectUpstream).
  const std::optional<IpAddress> client = upstreamSource(s, endpoint);
  auto fd = client ? sockets_.transparentUpstreamSocket(*client, kTproxyMark)
                   : sockets_.upstreamSocket(endpoint.ip.family, source);
  if (!fd) {
    spdlog::warn("upstream socket for {}: {}", endpoint.toString(), fd.error().message);
    return std::nullopt;
  }
  auto up = upstreams_.acquire();
  if (!up) {
    ::close(*fd);
    return std::nullopt;
  }
  auto& ptr = upstreams_[*up];
  if (!ptr) ptr = std::make_unique<Upstream>();
  Upstream& u = *ptr;
  auto rbuf = std::move(u.io.rbuf);
  u = Upstream{};
  u.io.rbuf = rbuf ? std::move(rbuf) : std::make_unique<char[]>(kReadSize);
  u.io.fd = *fd;
  u.endpoint = endpoint;
  u.source = client;
  u.pool = pool;
  u.state = Upstream::State::kConnecting;
  u.owner = slot;
  u.owner_generation = sessions_.generation(slot);
  u.counters = &stats_.endpoint(EndpointKey{pool->service(), pool->subset(), endpoint.toString()});
  pool->bindCounters(endpoint, u.counters);
  pool->opened();
  u.sa_len = endpoint.toSockaddr(u.sa);
  secureUpstream(u.io, s.kind, s.table.get(),
                 s.have_decision && s.decision.service != nullptr ? s.decision.service : s.port,
                 endpoint);
  // A DestinationRule's connectTimeout (Istio's default 10 s) for a Service, the proxy's own
  // --connect-timeout for a passthrough destination.
  const auto timeout = s.port != nullptr ? pool->limits.connect_timeout : settings_.connect_timeout;
  ring_.connect(u.io.fd, reinterpret_cast<const sockaddr*>(&u.sa), u.sa_len, timeout,
                upstreams_.track(opByte(HttpOp::kUpstreamConnect), *up));
  return up;
}

void HttpProxy::onUpstreamConnect(uint32_t up, const Completion& c) {
  Upstream& u = *upstreams_[up];
  if (u.state != Upstream::State::kConnecting) return;
  Session* s = session(u.owner, u.owner_generation);
  const bool wanted = s != nullptr && s->stage == Session::Stage::kUpstream && s->up == up;
  if (c.res == 0 && tlsConnected(u.io)) {
    u.state = Upstream::State::kBusy;
    u.counters->opened.inc();
    if (wanted) {
      sendOnUpstream(u.owner, up);
    } else {
      releaseUpstream(up, true);
    }
    return;
  }
  u.counters->connect_failures.inc();
  SPDLOG_DEBUG("http connect {}: {}", u.endpoint.toString(),
               c.res == -ECANCELED ? "timed out" : std::strerror(-c.res));
  const uint32_t owner = u.owner;
  closeUpstream(up, false);
  if (wanted) {
    s->up.reset();
    if (s->pool != nullptr) {
      s->pool->record(u.endpoint, ClusterPool::Result::kGatewayError, endpointCount(*s), now_);
    }
    attemptFailed(owner, "connect-failure", 503, "UF");
  }
}

size_t HttpProxy::endpointCount(const Session& s) const {
  if (!s.have_decision || s.decision.service == nullptr ||
      s.decision.subset_index >= s.decision.service->subsets.size()) {
    return 1;
  }
  return s.decision.service->subsets[s.decision.subset_index].endpoints.size();
}

void HttpProxy::sendOnUpstream(uint32_t slot, uint32_t up) {
  Session& s = *sessions_[slot];
  Upstream& u = *upstreams_[up];
  s.up = up;
  s.stage = Session::Stage::kUpstream;
  u.state = Upstream::State::kBusy;
  u.owner = slot;
  u.owner_generation = sessions_.generation(slot);
  ++u.requests;
  u.got_bytes = false;
  u.in.clear();
  u.counters->requests.inc();
  const http::MessageHead& h = s.parser.head();
  u.parser.respondingTo(h.method());
  if (s.upstream_head.empty()) writeUpstreamHead(s, /*shadow=*/false, s.upstream_head);
  if (s.retries.per_try_timeout.count() > 0) {
    setTimer(slot, TimerKind::kTry, s.retries.per_try_timeout);
  }
  queueSend(u.io, s.upstream_head);
  queueSend(u.io, s.body);
  if (s.streaming) {
    // Part of a body larger than the buffer went upstream: no retry from here on.
    s.retries_left = 0;
    s.race_retry_used = true;
    std::string().swap(s.body);
  }
  flushUpstream(up);
  readUpstream(up);
  pumpRequestBody(slot);
}

void HttpProxy::writeUpstreamHead(const Session& s, bool shadow, std::string& out) const {
  const http::MessageHead& h = s.parser.head();
  http::HeaderEdits edits;
  std::string path;
  std::string authority;
  if (s.route != nullptr) {
    edits = toEdits(s.route->headers.request,
                    s.destination != nullptr ? &s.destination->headers.request : nullptr);
    if (s.route->rewrite) {
      if (!s.route->rewrite->uri.empty() || s.route->rewrite->uri_regex) {
        path = withQuery(routing::rewritePath(*s.route->rewrite, s.match, s.path()), h);
      }
      authority = s.route->rewrite->authority;
    }
  }
  if (path.empty() && !s.normalized_path.empty()) path = requestTarget(s);
  if (shadow) authority = shadowAuthority(authority.empty() ? h.authority() : authority);
  http::RequestHeadOptions options;
  options.target = path;
  options.authority = authority;
  options.request_id = s.request_id;
  options.edits = edits.empty() ? nullptr : &edits;
  http::writeRequestHead(h, options, out);
}

bool HttpProxy::upstreamReadWanted(uint32_t up, bool* client_full) const {
  const Upstream& u = *upstreams_[up];
  if (u.io.eof || u.io.failed || u.io.fd < 0 || u.state == Upstream::State::kConnecting ||
      u.state == Upstream::State::kClosing) {
    return false;
  }
  if (u.state == Upstream::State::kBusy || u.state == Upstream::State::kTunnel) {
    const Session* s = session(u.owner, u.owner_generation);
    if (s != nullptr && s->client.queued() >= settings_.buffer_limit) {
      *client_full = true;
      return false;
    }
  }
  return true;
}

void HttpProxy::readUpstream(uint32_t up) {
  Upstream& u = *upstreams_[up];
  if (u.io.reading) return;
  bool client_full = false;
  if (!upstreamReadWanted(up, &client_full)) {
    if (client_full) session(u.owner, u.owner_generation)->upstream_paused = true;
    return;
  }
  armRead(u.io, upstreams_.track(opByte(HttpOp::kUpstreamRead), up));
}

void HttpProxy::onUpstreamSend(uint32_t up, const Completion& c) {
  Upstream& u = *upstreams_[up];
  u.io.send_in_flight = false;
  if (u.state == Upstream::State::kClosing) return;
  if (c.res <= 0) {
    u.io.failed = true;
    // The read side reports the failure to the session (reset, or the response that came).
    if (!u.io.reading) {
      Completion fake;
      fake.res = c.res == 0 ? -EPIPE : c.res;
      onUpstreamRead(up, fake);
    }
    return;
  }
  u.io.sent += static_cast<size_t>(c.res);
  flushUpstream(up);
  if (u.state == Upstream::State::kBusy) {
    Session* s = session(u.owner, u.owner_generation);
    if (s != nullptr && s->up == up && s->streaming && !s->body_done) pumpRequestBody(u.owner);
    return;
  }
  if (u.state == Upstream::State::kTunnel) {
    Session* s = session(u.owner, u.owner_generation);
    if (s != nullptr) {
      readClient(u.owner);
      pumpTunnel(u.owner);
    }
  }
}

void HttpProxy::onUpstreamRead(uint32_t up, const Completion& c) {
  Upstream& u = *upstreams_[up];
  switch (startRead(u.io, u.state == Upstream::State::kClosing, c)) {
    case ReadStart::kDone:
      return;
    case ReadStart::kReadAgain:
      readUpstream(up);
      return;
    case ReadStart::kProceed:
      break;
  }
  int res = c.res;
  std::string_view data;
  if (res > 0) {
    data = received(u.io, c);
    if (u.io.tls) {
      if (tlsReceive(u.io, data, false) == TlsIn::kFailed) {
        res = -ECONNRESET;  // a failed handshake or a bad record: as good as a reset
      } else {
        flushUpstream(up);   // the handshake's end and the request held until then
        if (data.empty()) {  // handshake or session tickets only
          readUpstream(up);
          return;
        }
      }
    }
  }
  // The TLS handshake has not completed (a failure, or the peer closing during it).
  const bool tls_handshake = u.io.tls && !u.io.tls->established();
  if (u.state == Upstream::State::kIdle) {
    // An idle pooled connection: the server closed it (or sent bytes nobody asked for).
    u.pool->removeIdle(u.endpoint, up, u.source);
    closeUpstream(up, res > 0);
    return;
  }
  Session* s = session(u.owner, u.owner_generation);
  const uint32_t slot = u.owner;
  if (s == nullptr || s->up != up) {
    closeUpstream(up, true);
    return;
  }
  if (u.state == Upstream::State::kTunnel) {
    if (res > 0) {
      queueSend(s->client, data);
      flushClient(slot);
      readUpstream(up);
    } else {
      u.io.eof = true;
      pumpTunnel(slot);
    }
    return;
  }
  if (res > 0) {
    u.got_bytes = true;
    u.in.append(data);
    processResponse(slot, up);
    return;
  }
  if (res == -EINTR || res == -EAGAIN) {
    readUpstream(up);
    return;
  }
  // EOF or an error.
  if (res == 0 && u.parser.head().framing() == http::Framing::kUntilClose && s->response_started) {
    http::Step step = u.parser.finish();
    if (step.event == http::Event::kMessageComplete) {
      responseDone(slot, up, false);
      return;
    }
  }
  u.io.eof = true;
  if (!s->response_started) {
    const bool race = u.reused && !u.got_bytes && !s->race_retry_used;
    closeUpstream(up, true);
    s->up.reset();
    clearTimer(slot, TimerKind::kTry);
    if (race) {
      // Istio's 503 race: the kept-alive connection was closed by the server as we reused it.
      s->race_retry_used = true;
      s->force_fresh = true;
      --s->attempts;
      stats_.counters().http_reset_race_retry.inc();
      startAttempt(slot);
      return;
    }
    if (s->pool != nullptr) {
      s->pool->record(u.endpoint, ClusterPool::Result::kGatewayError, endpointCount(*s), now_);
    }
    if (tls_handshake) {
      // The TLS handshake failed (or the peer closed during it): Envoy's upstream connection
      // failure (UF), retried as a connect-failure.
      u.counters->connect_failures.inc();
      attemptFailed(slot, "connect-failure", 503, "UF");
      return;
    }
    stats_.counters().resets_from_upstream.inc();
    attemptFailed(slot, "reset", 503, "UC");
    return;
  }
  // Cut in the middle of a response the client is already receiving: it must see a reset.
  stats_.counters().resets_from_upstream.inc();
  closeUpstream(up, true);
  s->up.reset();
  closeSession(slot, true);
}

// Feeds the upstream's bytes to the response parser: the head goes to the client rewritten, the
// body as it came.
void HttpProxy::processResponse(uint32_t slot, uint32_t up) {
  Session& s = *sessions_[slot];
  Upstream& u = *upstreams_[up];
  size_t off = 0;
  while (true) {
    std::string_view rest(u.in.data() + off, u.in.size() - off);
    http::Step step = u.parser.feed(rest);
    const std::string_view raw = rest.substr(0, step.consumed);
    off += step.consumed;
    switch (step.event) {
      case http::Event::kNeedMore:
        if (s.response_started) queueSend(s.client, raw);
        break;
      case http::Event::kHead: {
        const http::MessageHead& h = u.parser.head();
        if (h.status() >= 100 && h.status() < 200 && h.status() != 101) {
          continue;  // interim: the proxy answered Expect itself, and 103 is advisory
        }
        const int status = h.status();
        if (s.pool != nullptr) {
          const auto result = (status == 502 || status == 503 || status == 504)
                                  ? ClusterPool::Result::kGatewayError
                              : status >= 500 ? ClusterPool::Result::k5xx
                                              : ClusterPool::Result::kSuccess;
          s.pool->record(u.endpoint, result, endpointCount(s), now_);
        }
        if (s.retries_left > 0 && retriableStatus(s.retries, status)) {
          // Discard this answer and try elsewhere; the connection carries its rest, so it goes.
          clearTimer(slot, TimerKind::kTry);
          closeUpstream(up, true);
          s.up.reset();
          --s.retries_left;
          stats_.counters().http_retries.inc();
          startAttempt(slot);
          return;
        }
        s.status = status;
        s.response_started = true;
        clearTimer(slot, TimerKind::kTry);
        if (h.framing() == http::Framing::kUntilClose) s.close_after = true;
        http::HeaderEdits edits;
        if (s.route != nullptr) {
          edits = toEdits(s.route->headers.response,
                          s.destination != nullptr ? &s.destination->headers.response : nullptr);
        }
        http::ResponseHeadOptions options;
        options.edits = edits.empty() ? nullptr : &edits;
        options.close = s.close_after && !h.upgrade();
        if (s.client.tls) {
          std::string head;
          http::writeResponseHead(h, options, head);
          queueSend(s.client, head);
        } else {
          // Plaintext: written straight into the send queue (what queueSend would copy it to).
          http::writeResponseHead(h, options, s.client.pending);
        }
        if (h.upgrade() && h.framing() == http::Framing::kTunnel) {
          u.in.erase(0, off);
          startTunnel(slot, up);
          return;
        }
        continue;
      }
      case http::Event::kBody:
        queueSend(s.client, raw);
        continue;
      case http::Event::kMessageComplete: {
        if (!s.response_started) continue;  // the end of an interim response
        queueSend(s.client, raw);
        const bool leftover = off < u.in.size();
        u.in.clear();
        flushClient(slot);
        responseDone(slot, up, !leftover && u.parser.head().keepAlive());
        return;
      }
      case http::Event::kError:
        u.in.clear();
        closeUpstream(up, true);
        s.up.reset();
        if (!s.response_started) {
          clearTimer(slot, TimerKind::kTry);
          localReply(slot, 502, "upstream sent an invalid response", "UPE");
        } else {
          closeSession(slot, true);
        }
        return;
    }
    break;
  }
  u.in.erase(0, off);
  flushClient(slot);
  readUpstream(up);
}

void HttpProxy::responseDone(uint32_t slot, uint32_t up, bool reusable) {
  Session& s = *sessions_[slot];
  Upstream& u = *upstreams_[up];
  s.up.reset();
  if (!s.body_done) {
    // Answered before the whole body arrived: neither connection is framed any more.
    reusable = false;
    s.close_after = true;
    s.linger = true;
  }
  releaseUpstream(up, reusable && u.pool->reusable(u.requests));
  finishRequest(slot);
}

// A connection done with its request: back to the pool (a waiter takes it first), or closed.
void HttpProxy::releaseUpstream(uint32_t up, bool reusable) {
  Upstream& u = *upstreams_[up];
  if (!reusable || draining_ || u.io.failed || u.io.eof || u.io.send_in_flight) {
    // The response is complete: a clean close (a reset only for a failed socket).
    closeUpstream(up, u.io.failed);
    return;
  }
  u.state = Upstream::State::kIdle;
  u.idle_since = now_;
  u.got_bytes = false;
  ClusterPool& pool = *u.pool;
  while (auto w = pool.dequeue()) {
    Session* s = session(w->slot, w->generation);
    if (s == nullptr || s->stage != Session::Stage::kQueued) continue;
    if (upstreamSource(*s, u.endpoint) != u.source) {
      // TPROXY: bound to another client's address, so not this waiter's to take; closing it
      // makes room for a connection of the waiter's own (servePending opens it).
      pool.requeueFront(*w);
      closeUpstream(up, false);
      return;
    }
    // The waiter takes this connection, wherever its pick would have gone.
    s->tried.back() = u.endpoint;
    stats_.counters().http_pool_reused.inc();
    u.reused = true;
    sendOnUpstream(w->slot, up);
    return;
  }
  if (u.source && !source_sessions_.contains(*u.source)) {
    // Its client has no connection open any more (it closed while this one was connecting).
    closeUpstream(up, false);
    return;
  }
  pool.putIdle(u.endpoint, up, u.source);
  readUpstream(up);  // notices the server closing it
}

std::optional<IpAddress> HttpProxy::upstreamSource(const Session& s,
                                                   const SocketAddress& endpoint) const {
  // A client of the other family (only a dual-stack listener could bring one) keeps the
  // passthrough source, as the L4 path does.
  if (!s.client_source || s.client_source->family != endpoint.ip.family) return std::nullopt;
  return s.client_source;
}

void HttpProxy::servePending(ClusterPool& pool) {
  while (pool.canOpen()) {
    auto w = pool.dequeue();
    if (!w) return;
    Session* s = session(w->slot, w->generation);
    if (s == nullptr || s->stage != Session::Stage::kQueued) continue;
    s->tried.pop_back();
    --s->attempts;
    startAttempt(w->slot);
  }
}

void HttpProxy::closeUpstream(uint32_t up, bool reset) {
  Upstream& u = *upstreams_[up];
  if (u.state == Upstream::State::kClosing) return;
  const bool was_connected = u.state != Upstream::State::kConnecting;
  if (u.state == Upstream::State::kIdle) u.pool->removeIdle(u.endpoint, up, u.source);
  u.state = Upstream::State::kClosing;
  if (was_connected && u.counters != nullptr) u.counters->closed.inc();
  if (u.io.fd >= 0) {
    if (reset || !was_connected || u.io.send_in_flight) {
      sockets_.setResetOnClose(u.io.fd);
      if (u.io.reading) {
        ring_.cancel(upstreams_.userData(opByte(HttpOp::kUpstreamRead), up),
                     upstreams_.track(opByte(HttpOp::kUpstreamClose), up));
      }
      if (u.io.send_in_flight) {
        ring_.cancel(upstreams_.userData(opByte(HttpOp::kUpstreamSend), up),
                     upstreams_.track(opByte(HttpOp::kUpstreamClose), up));
      }
      if (!was_connected) {
        ring_.cancel(upstreams_.userData(opByte(HttpOp::kUpstreamConnect), up),
                     upstreams_.track(opByte(HttpOp::kUpstreamClose), up));
      }
      ring_.close(u.io.fd, upstreams_.track(opByte(HttpOp::kUpstreamClose), up));
    } else {
      ring_.shutdownAndClose(u.io.fd, upstreams_.track(opByte(HttpOp::kUpstreamClose), up, 2));
    }
    u.io.fd = -1;
  }
  ClusterPool& pool = *u.pool;
  pool.closed();
  upstreams_.release(up);
  servePending(pool);
}

// ---------------------------------------------------------------------------------------------
// Answers and endings

void HttpProxy::localReply(uint32_t slot, int status, std::string_view body, std::string_view flags,
                           const std::vector<std::pair<std::string, std::string>>& extra_headers) {
  Session& s = *sessions_[slot];
  if (s.up) {
    closeUpstream(*s.up, true);
    s.up.reset();
  }
  if (s.stage == Session::Stage::kQueued && s.pool != nullptr) {
    s.pool->forget(Waiter{slot, sessions_.generation(slot)});
  }
  if (!s.body_done) {
    s.close_after = true;  // the rest of the body is not read
    s.linger = true;
  }
  http::LocalReply reply;
  reply.status = status;
  reply.body = body;
  reply.close = s.close_after;
  reply.head_request = s.parser.head().isHead();
  for (const auto& [name, value] : extra_headers) reply.extra.push_back({name, value});
  std::string out;
  http::writeLocalReply(reply, out);
  queueSend(s.client, out);
  s.status = status;
  s.flags = std::string(flags);
  s.response_started = true;
  flushClient(slot);
  finishRequest(slot);
}

void HttpProxy::finishRequest(uint32_t slot) {
  Session& s = *sessions_[slot];
  for (size_t k = 0; k < s.timer_seq.size(); ++k) clearTimer(slot, static_cast<TimerKind>(k));
  recordRequest(s);
  releaseDecision(s);
  s.stage = Session::Stage::kIdle;
  s.table.reset();
  s.route = nullptr;
  s.match = nullptr;
  s.destination = nullptr;
  s.port = nullptr;
  s.have_decision = false;
  s.body.clear();
  if (s.streaming) std::string().swap(s.body);
  s.streaming = false;
  if (s.close_after) {
    closeWhenFlushed(slot);
    return;
  }
  nextRequest(slot);
}

void HttpProxy::closeWhenFlushed(uint32_t slot) {
  Session& s = *sessions_[slot];
  if (s.stage != Session::Stage::kClosing) tlsCloseNotify(s.client);
  s.close_pending = true;
  if (s.stage != Session::Stage::kClosing && flushClient(slot) && !s.client.send_in_flight) {
    closeSession(slot, false);
  }
}

void HttpProxy::attemptFailed(uint32_t slot, const char* reason, int status, const char* flags) {
  Session& s = *sessions_[slot];
  clearTimer(slot, TimerKind::kTry);
  if (s.retries_left > 0 && (s.retries.retry_on & retryBitFor(reason)) != 0) {
    --s.retries_left;
    stats_.counters().http_retries.inc();
    startAttempt(slot);
    return;
  }
  std::string f = flags;
  if (s.attempts > 1 && s.retries.attempts > 0) f += ",URX";
  localReply(slot, status, {}, f);
}

void HttpProxy::closeSession(uint32_t slot, bool reset) {
  Session& s = *sessions_[slot];
  if (s.stage == Session::Stage::kClosing) return;
  Pipe& p = s.client;
  if (!reset && s.linger && s.stage != Session::Stage::kLinger && !s.up && p.fd >= 0 && !p.eof &&
      !p.failed && !p.send_in_flight && p.queued() == 0) {
    startLinger(slot);
    return;
  }
  if (s.stage == Session::Stage::kQueued && s.pool != nullptr) {
    s.pool->forget(Waiter{slot, sessions_.generation(slot)});
  }
  if (s.stage == Session::Stage::kDelay || s.stage == Session::Stage::kQueued ||
      (s.stage == Session::Stage::kUpstream && !s.response_started)) {
    s.flags = "DC";  // the client went away before its answer
    s.status = 0;
    recordRequest(s);
  }
  releaseDecision(s);
  s.stage = Session::Stage::kClosing;
  for (size_t k = 0; k < s.timer_seq.size(); ++k) clearTimer(slot, static_cast<TimerKind>(k));
  if (s.up) {
    Upstream& u = *upstreams_[*s.up];
    // A tunnel's upstream ends the way the client did; a request cut short is reset.
    const bool clean = !reset && u.state == Upstream::State::kTunnel;
    closeUpstream(*s.up, !clean);
    s.up.reset();
  }
  if (p.fd >= 0) {
    if (reset || p.send_in_flight || p.queued() > 0) {
      sockets_.setResetOnClose(p.fd);
      if (p.reading) {
        ring_.cancel(sessions_.userData(opByte(HttpOp::kClientRead), slot),
                     sessions_.track(opByte(HttpOp::kClientClose), slot));
      }
      if (p.send_in_flight) {
        ring_.cancel(sessions_.userData(opByte(HttpOp::kClientSend), slot),
                     sessions_.track(opByte(HttpOp::kClientClose), slot));
      }
      ring_.close(p.fd, sessions_.track(opByte(HttpOp::kClientClose), slot));
    } else {
      ring_.shutdownAndClose(p.fd, sessions_.track(opByte(HttpOp::kClientClose), slot, 2));
    }
    p.fd = -1;
  }
  s.table.reset();
  --active_sessions_;
  stats_.counters().closed.inc();
  const std::optional<IpAddress> source = s.client_source;
  sessions_.release(slot);
  if (source) sourceSessionClosed(*source);
}

void HttpProxy::sourceSessionClosed(const IpAddress& source) {
  auto it = source_sessions_.find(source);
  if (it == source_sessions_.end() || --it->second > 0) return;
  source_sessions_.erase(it);
  // Pools outlive tables and are few (one per cluster); closing may open a waiter's
  // connection, which never adds a pool while this walks them (map nodes stay put anyway).
  pools_.forEach([&](ClusterPool& pool) {
    for (const uint32_t up : pool.takeAllIdleFrom(source)) closeUpstream(up, false);
  });
}

void HttpProxy::startLinger(uint32_t slot) {
  Session& s = *sessions_[slot];
  releaseDecision(s);
  for (size_t k = 0; k < s.timer_seq.size(); ++k) clearTimer(slot, static_cast<TimerKind>(k));
  s.stage = Session::Stage::kLinger;
  s.linger_until = now_ + kLingerTime;
  s.linger_bytes = s.in.size() - s.in_off;
  s.in.clear();
  s.in_off = 0;
  stats_.counters().http_lingering_closes.inc();
  // The client sees the end of the response (FIN) while it may still send.
  ring_.shutdown(s.client.fd, SHUT_WR, sessions_.track(opByte(HttpOp::kClientShut), slot));
  readClient(slot);
}

// ---------------------------------------------------------------------------------------------
// Tunnel

void HttpProxy::startTunnel(uint32_t slot, uint32_t up) {
  Session& s = *sessions_[slot];
  Upstream& u = *upstreams_[up];
  clearTimer(slot, TimerKind::kRequest);
  s.stage = Session::Stage::kTunnel;
  u.state = Upstream::State::kTunnel;
  recordRequest(s);
  releaseDecision(s);
  if (!u.in.empty()) {
    queueSend(s.client, u.in);
    u.in.clear();
  }
  if (s.in_off < s.in.size()) {
    queueSend(u.io, std::string_view(s.in).substr(s.in_off));
  }
  s.in.clear();
  s.in_off = 0;
  flushClient(slot);
  flushUpstream(up);
  readClient(slot);
  readUpstream(up);
}

void HttpProxy::recordRequest(const Session& s) {
  const auto ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - s.started).count());
  // Inbound under a security configuration: the peer's principal, "unknown" for plaintext, as
  // the inbound remora_tcp_* series carry it (docs/TLS.md).
  std::string_view principal;
  if (s.kind == ListenerKind::kInbound && s.table && s.table->security) {
    principal = s.client.peer_principal.empty() ? std::string_view("unknown")
                                                : std::string_view(s.client.peer_principal);
  }
  const std::string_view flags = s.flags.empty() ? std::string_view("-") : s.flags;
  const auto code = static_cast<uint16_t>(s.status);
  // Consecutive requests nearly always share their labels: the series of the last one are
  // reused without building the keys (their strings) and looking them up again.
  RecordedSeries& last = last_series_;
  if (last.requests == nullptr || last.code != code || last.service != s.service_name ||
      last.subset != s.subset_name || last.flags != flags || last.principal != principal) {
    last.service = s.service_name;
    last.subset = s.subset_name;
    last.code = code;
    last.flags = flags;
    last.principal = principal;
    last.requests = &stats_.requests(RequestKey{s.service_name, s.subset_name, code,
                                                std::string(flags), std::string(principal)});
    last.durations =
        &stats_.durations(EndpointKey{s.service_name, s.subset_name, "", std::string(principal)});
  }
  last.requests->inc();
  last.durations->observe(ms);
  if (access_log_ && settings_.access_log) logRequest(s);
}

// Ends the tunnel once a side has closed and what it sent has been written to the other.
void HttpProxy::pumpTunnel(uint32_t slot) {
  Session& s = *sessions_[slot];
  if (s.stage != Session::Stage::kTunnel || !s.up) return;
  const uint32_t up = *s.up;
  Upstream& u = *upstreams_[up];
  if (s.client.eof && !u.io.shut_sent && u.io.queued() == 0 && !u.io.send_in_flight) {
    u.io.shut_sent = true;
    ring_.shutdown(u.io.fd, SHUT_WR, upstreams_.track(opByte(HttpOp::kUpstreamShut), up));
  }
  if (u.io.eof && !s.client.shut_sent && s.client.queued() == 0 && !s.client.send_in_flight) {
    s.client.shut_sent = true;
    ring_.shutdown(s.client.fd, SHUT_WR, sessions_.track(opByte(HttpOp::kClientShut), slot));
  }
  if (s.client.eof && u.io.eof && s.client.queued() == 0 && u.io.queued() == 0) {
    closeSession(slot, false);
  }
}

// ---------------------------------------------------------------------------------------------
// Timers: one heap for the worker, one ring timeout armed per distinct earliest deadline.

void HttpProxy::setTimer(uint32_t slot, TimerKind kind, std::chrono::milliseconds after) {
  Session& s = *sessions_[slot];
  const uint64_t seq = ++timer_seq_;
  s.timer_seq[static_cast<size_t>(kind)] = seq;
  const auto when = now_ + after;
  timers_.push(TimerEntry{when, slot, sessions_.generation(slot), kind, seq});
  if (armed_.empty() || when < *armed_.begin()) {
    armed_.insert(when);
    ring_.timeout(std::max(std::chrono::milliseconds(1), after),
                  UserData{opByte(HttpOp::kTimer), 0, 0}.encode());
  }
}

void HttpProxy::clearTimer(uint32_t slot, TimerKind kind) {
  sessions_[slot]->timer_seq[static_cast<size_t>(kind)] = 0;
}

void HttpProxy::fireTimers() {
  now_ = Clock::now();
  while (!armed_.empty() && *armed_.begin() <= now_) armed_.erase(armed_.begin());
  while (!timers_.empty() && timers_.top().when <= now_) {
    TimerEntry e = timers_.top();
    timers_.pop();
    Session* s = session(e.slot, e.generation);
    if (s == nullptr || s->timer_seq[static_cast<size_t>(e.kind)] != e.seq) continue;
    s->timer_seq[static_cast<size_t>(e.kind)] = 0;
    onTimer(e.slot, e.kind);
  }
  // Drop cancelled entries from the top so they do not keep a timer armed.
  while (!timers_.empty()) {
    const TimerEntry& e = timers_.top();
    Session* s = session(e.slot, e.generation);
    if (s != nullptr && s->timer_seq[static_cast<size_t>(e.kind)] == e.seq) break;
    timers_.pop();
  }
  if (!timers_.empty() && (armed_.empty() || timers_.top().when < *armed_.begin())) {
    const auto when = timers_.top().when;
    armed_.insert(when);
    const auto after = std::chrono::duration_cast<std::chrono::milliseconds>(when - now_) +
                       std::chrono::milliseconds(1);
    ring_.timeout(after, UserData{opByte(HttpOp::kTimer), 0, 0}.encode());
  }
}

void HttpProxy::onTimer(uint32_t slot, TimerKind kind) {
  Session& s = *sessions_[slot];
  switch (kind) {
    case TimerKind::kDelay:
      if (s.stage != Session::Stage::kDelay) return;
      if (s.abort_drawn) {
        localReply(slot, *s.route->fault.abort_status, "fault filter abort", "DI,FI");
        return;
      }
      proceed(slot);
      return;
    case TimerKind::kRequest:
      if (s.stage != Session::Stage::kUpstream && s.stage != Session::Stage::kQueued &&
          s.stage != Session::Stage::kDelay) {
        return;
      }
      if (s.response_started) {
        closeSession(slot, true);  // too late for a 504: the client sees the cut
        return;
      }
      localReply(slot, 504, "upstream request timeout", "UT");
      return;
    case TimerKind::kTry:
      if (s.stage != Session::Stage::kUpstream || s.response_started || !s.up) return;
      closeUpstream(*s.up, true);
      s.up.reset();
      if (s.pool != nullptr && s.have_decision) {
        s.pool->record(s.decision.upstream, ClusterPool::Result::kGatewayError, endpointCount(s),
                       now_);
      }
      attemptFailed(slot, "per-try-timeout", 504, "UT");
      return;
    case TimerKind::kCount:
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch, sweeps, teardown

void HttpProxy::onCompletion(const Completion& c) {
  const UserData ud = UserData::decode(c.user_data);
  if (HttpMirror::owns(ud.op)) {
    mirror_.onCompletion(c);
    return;
  }
  const auto op = static_cast<HttpOp>(ud.op);
  if (op == HttpOp::kTimer) {
    fireTimers();
    return;
  }
  // A receive's provided buffer goes back once its completion is handled, whatever became of
  // the session or upstream: the L7 path copies what it keeps.
  struct Recycle {
    loop::Ring& ring;
    const Completion& c;
    ~Recycle() {
      if (c.hasBuffer()) ring.recycleBuffer(c.bufferId());
    }
  } recycle{ring_, c};
  if (isClientOp(op)) {
    auto slot = sessions_.resolve(ud, !c.more());
    if (!slot) {
      stats_.counters().stale_completions.inc();
      return;
    }
    switch (op) {
      case HttpOp::kClientRead:
        onClientRead(*slot, c);
        if (!sessions_.released(*slot)) pauseClientRead(*slot);
        break;
      case HttpOp::kClientSend:
        onClientSend(*slot, c);
        break;
      case HttpOp::kClientShut:
        pumpTunnel(*slot);
        break;
      default:
        break;
    }
    sessions_.settle(*slot);
    return;
  }
  auto up = upstreams_.resolve(ud, !c.more());
  if (!up) {
    stats_.counters().stale_completions.inc();
    return;
  }
  switch (op) {
    case HttpOp::kUpstreamConnect:
      onUpstreamConnect(*up, c);
      break;
    case HttpOp::kUpstreamRead:
      onUpstreamRead(*up, c);
      if (!upstreams_.released(*up)) pauseUpstreamRead(*up);
      break;
    case HttpOp::kUpstreamSend:
      onUpstreamSend(*up, c);
      break;
    case HttpOp::kUpstreamShut: {
      Upstream& u = *upstreams_[*up];
      if (u.state == Upstream::State::kTunnel && session(u.owner, u.owner_generation) != nullptr) {
        pumpTunnel(u.owner);
      }
      break;
    }
    default:
      break;
  }
  upstreams_.settle(*up);
}

void HttpProxy::afterBatch(Clock::time_point now) { now_ = now; }

void HttpProxy::onTick(Clock::time_point now) {
  now_ = now;
  mirror_.onTick(now);
  pools_.forEach([now](ClusterPool& pool) { pool.sweep(now); });
  for (size_t i = 0; i < upstreams_.size(); ++i) {
    const auto up = static_cast<uint32_t>(i);
    if (!upstreams_.inUse(up) || upstreams_.released(up)) continue;
    Upstream& u = *upstreams_[up];
    if (u.state == Upstream::State::kIdle && u.pool->idleExpired(u.idle_since, now)) {
      closeUpstream(up, false);
    }
  }
  for (size_t i = 0; i < sessions_.size(); ++i) {
    const auto slot = static_cast<uint32_t>(i);
    if (!sessions_.inUse(slot) || sessions_.released(slot)) continue;
    Session& s = *sessions_[slot];
    if (s.stage == Session::Stage::kLinger) {
      if (now >= s.linger_until) closeSession(slot, true);
      continue;
    }
    if (settings_.client_idle_timeout.count() <= 0) continue;
    if ((s.stage == Session::Stage::kIdle || s.stage == Session::Stage::kTunnel) &&
        now - s.last_activity >= settings_.client_idle_timeout) {
      stats_.counters().timeout_idle.inc();
      closeSession(slot, s.stage == Session::Stage::kTunnel);
    }
  }
}

void HttpProxy::drain() {
  draining_ = true;
  for (size_t i = 0; i < upstreams_.size(); ++i) {
    const auto up = static_cast<uint32_t>(i);
    if (upstreams_.inUse(up) && !upstreams_.released(up) &&
        upstreams_[up]->state == Upstream::State::kIdle) {
      closeUpstream(up, false);
    }
  }
  for (size_t i = 0; i < sessions_.size(); ++i) {
    const auto slot = static_cast<uint32_t>(i);
    if (!sessions_.inUse(slot) || sessions_.released(slot)) continue;
    Session& s = *sessions_[slot];
    // Kept-alive clients between requests go now; the others after their current response
    // (which says connection: close).
    s.close_after = true;
    if (s.stage == Session::Stage::kIdle && s.parser.idle() && s.in_off == s.in.size()) {
      closeWhenFlushed(slot);
    }
  }
}

void HttpProxy::abortAll() {
  for (size_t i = 0; i < sessions_.size(); ++i) {
    const auto slot = static_cast<uint32_t>(i);
    if (sessions_.inUse(slot) && !sessions_.released(slot)) closeSession(slot, true);
  }
  for (size_t i = 0; i < upstreams_.size(); ++i) {
    const auto up = static_cast<uint32_t>(i);
    if (upstreams_.inUse(up) && !upstreams_.released(up)) closeUpstream(up, true);
  }
  mirror_.abortAll();
}

std::string HttpProxy::loggedPath(const Session& s) {
  return withQuery(std::string(s.path()), s.parser.head());
}

void HttpProxy::logRequest(const Session& s) {
  const http::MessageHead& h = s.parser.head();
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - s.started).count();
  if (!access_log_(fmt::format(
          "http {} downstream={} original_dst={} method={} path={} authority={} status={} "
          "flags={} service={} subset={} upstream={} attempts={} request_id={} duration_ms={}",
          s.kind == ListenerKind::kInbound ? "inbound" : "outbound", s.peer.toString(),
          s.original_dst.toString(), h.method(), loggedPath(s), h.authority(), s.status,
          s.flags.empty() ? "-" : s.flags, s.service_name,
          s.subset_name.empty() ? "-" : s.subset_name,
          s.tried.empty() ? "-" : s.tried.back().toString(), s.attempts,
          s.request_id.empty() ? h.get("x-request-id").value_or("-") : s.request_id, ms))) {
    stats_.counters().access_log_dropped.inc();
  }
}

}  // namespace remora::proxy
