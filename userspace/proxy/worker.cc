#include "proxy/worker.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace remora::proxy {
namespace {

using loop::Completion;
using loop::UserData;
using routing::RouteDecision;

constexpr std::chrono::milliseconds kAcceptRetryDelay{100};

}  // namespace

Worker::Worker(loop::Ring& ring, SocketOps& sockets, WorkerStats& stats,
               RouterFactory router_factory, WorkerSettings settings)
    : ring_(ring),
      sockets_(sockets),
      stats_(stats),
      router_factory_(std::move(router_factory)),
      settings_(std::move(settings)),
      http_(ring, sockets, stats),
      sniffer_(
          ring, stats, [this](Sniffed sniffed) { onSniffed(std::move(sniffed)); },
          [this](security::MtlsMode mode) { return terminateTls(identity_.get(), mode); },
          [this](const SniffClosed& closed) { onSniffClosed(closed); }) {
  // A quarter of the pool is never lent out to queues: copies are cheap, a frozen worker is not.
  buffer_reserve_ = std::max<size_t>(1, ring_.buffersAvailable() / 4);
  now_ = std::chrono::steady_clock::now();
  armTick();
}

Worker::~Worker() {
  for (auto& l : listeners_) {
    if (l.open) ::close(l.fd);
  }
  for (uint32_t slot = 0; slot < slots_.size(); ++slot) {
    const Connection& c = slots_[slot];
    if (c.client_fd >= 0) ::close(c.client_fd);
    if (c.upstream_fd >= 0) ::close(c.upstream_fd);
  }
}

void Worker::armTick() {
  // The sweep runs at a quarter of the shortest timeout (between 50 ms and 1 s), so a timeout
  // fires at most 25 % late; its cost is one pass over this worker's slots.
  auto shortest = std::chrono::milliseconds(1000);
  for (auto t :
       {settings_.idle_timeout, settings_.half_close_timeout, settings_.max_connection_duration}) {
    if (t.count() > 0) shortest = std::min(shortest, t / 4);
  }
  tick_ = std::max(std::chrono::milliseconds(50), shortest);
  if (tick_armed_) return;
  ring_.timeout(tick_, tag(Op::kTick, 0, 0));
  tick_armed_ = true;
}

uint64_t Worker::tag(Op op, uint32_t slot, uint32_t generation) const {
  return UserData{static_cast<uint8_t>(op), slot, generation}.encode();
}

void Worker::addListener(int fd, ListenerKind kind, Family family) {
  auto bound = sockets_.localAddress(fd);
  listeners_.push_back(Listener{fd, kind, family, true, false, bound ? bound->port : uint16_t{0}});
  ++listeners_open_;
  if (accepting_) armAccept(static_cast<uint32_t>(listeners_.size() - 1));
}

void Worker::armAccept(uint32_t index) {
  Listener& l = listeners_[index];
  if (!l.open || l.accept_armed || !accepting_ || accept_paused_) return;
  ring_.acceptMultishot(l.fd, tag(Op::kAccept, index, 0));
  l.accept_armed = true;
}

void Worker::watchControl(int eventfd, std::function<void()> on_wake) {
  control_fd_ = eventfd;
  on_control_ = std::move(on_wake);
  ring_.read(control_fd_, {reinterpret_cast<char*>(&control_value_), sizeof(control_value_)},
             tag(Op::kControl, 0, 0));
}

void Worker::setTable(std::shared_ptr<const routing::RouteTable> table,
                      const WorkerSettings& settings) {
  settings_ = settings;
  armTick();
  armRelayEvents();
  if (accept_paused_ && (settings_.max_connections == 0 || active_ < settings_.max_connections)) {
    resumeAccepting();
  }
  counters_cache_.clear();
  table_ = std::move(table);
  if (table_) {
    if (router_) {
      router_->setTable(table_);
    } else {
      router_ = router_factory_(table_);
    }
  }
  http_.configure(router_.get(), httpSettings());
}

HttpProxySettings Worker::httpSettings() const {
  HttpProxySettings h;
  h.connect_timeout = settings_.connect_timeout;
  h.client_idle_timeout = settings_.idle_timeout;
  h.buffer_limit = settings_.buffer_limit;
  h.inbound_source_v4 = settings_.inbound_source_v4;
  h.inbound_source_v6 = settings_.inbound_source_v6;
  h.inbound_transparent = settings_.inbound_transparent;
  h.access_log = settings_.access_log;
  h.path_normalization = settings_.path_normalization;
  return h;
}

void Worker::stopAccepting() {
  stopAccepting(ListenerKind::kOutbound);
  stopAccepting(ListenerKind::kInbound);
  accepting_ = false;
  http_.drain();
}

void Worker::stopAccepting(ListenerKind kind) {
  for (uint32_t i = 0; i < listeners_.size(); ++i) {
    Listener& l = listeners_[i];
    if (!l.open || l.kind != kind) continue;
    // Cancel by user_data (a hash lookup), then close; quiescent() waits for both completions,
    // so the worker never exits with the close still unsubmitted and the socket in LISTEN.
    ring_.cancel(tag(Op::kAccept, i, 0), tag(Op::kListenerClose, i, 0));
    ring_.close(l.fd, tag(Op::kListenerClose, i, 0));
    listener_ops_ += 2;
    l.open = false;
    --listeners_open_;
  }
}

void Worker::abortAll() {
  http_.abortAll();
  sniffer_.abortAll();
  for (uint32_t slot = 0; slot < slots_.size(); ++slot) {
    State s = slots_[slot].state;
    if (s == State::kConnecting || s == State::kRelaying || s == State::kFlushing ||
        s == State::kKernel) {
      closeConnection(slot, "aborted", /*reset=*/true);
    }
  }
}

void Worker::pauseAccepting() {
  accept_paused_ = true;
  stats_.counters().accept_paused.inc();
  for (uint32_t i = 0; i < listeners_.size(); ++i) {
    if (listeners_[i].open && listeners_[i].accept_armed) {
      ring_.cancel(tag(Op::kAccept, i, 0), tag(Op::kAcceptCancel, i, 0));
    }
  }
}

void Worker::resumeAccepting() {
  accept_paused_ = false;
  for (uint32_t i = 0; i < listeners_.size(); ++i) armAccept(i);
}

void Worker::onTick() {
  tick_armed_ = false;
  now_ = std::chrono::steady_clock::now();
  const WorkerSettings& s = settings_;
  // A kernel-relayed pair is asked whether bytes moved once it has looked quiet for half of
  // the shortest quiet timeout: a few map lookups per pair and period, not per tick.
  auto kernel_check = std::chrono::steady_clock::duration::max();
  for (auto t : {s.idle_timeout, s.half_close_timeout}) {
    if (t.count() > 0)
      kernel_check = std::min<std::chrono::steady_clock::duration>(kernel_check, t / 2);
  }
  for (uint32_t slot = 0; slot < slots_.size(); ++slot) {
    Connection& conn = slots_[slot];
    if (conn.state == State::kFlushing) {
      if (now_ >= conn.flush_deadline) closeConnection(slot, conn.outcome, /*reset=*/true);
      continue;
    }
    if (conn.state != State::kRelaying && conn.state != State::kKernel) continue;
    if (conn.keepalive_pending) {
      // A connection that lived to a sweep gets its keepalive (connectUpstream).
      sockets_.keepAlive(conn.upstream_fd);
      conn.keepalive_pending = false;
    }
    if (conn.tls) tlsTick(slot);
    auto quiet = now_ - conn.last_activity;
    // The kernel moves a relayed pair's bytes unseen: ask it, once the pair looks quiet.
    if (conn.state == State::kKernel && quiet >= kernel_check && kernelRelayMoved(slot)) {
      conn.last_activity = now_;
      quiet = {};
    }
    if (s.max_connection_duration.count() > 0 && now_ - conn.started >= s.max_connection_duration) {
      stats_.counters().timeout_max_duration.inc();
      closeConnection(slot, "max_duration");
    } else if (s.half_close_timeout.count() > 0 &&
               conn.half_closed != std::chrono::steady_clock::time_point{} &&
               quiet >= s.half_close_timeout) {
      stats_.counters().timeout_half_close.inc();
      closeConnection(slot, "half_close_timeout");
    } else if (s.idle_timeout.count() > 0 && quiet >= s.idle_timeout) {
      stats_.counters().timeout_idle.inc();
      closeConnection(slot, "idle_timeout");
    }
  }
  http_.onTick(now_);
  armTick();
}

// The one dispatch point for this worker's completions.
void Worker::onCompletion(const Completion& c) {
  if (c.user_data == loop::kIgnoredUserData) return;
  const UserData ud = UserData::decode(c.user_data);
  if (HttpProxy::owns(ud.op)) {
    http_.onCompletion(c);
    return;
  }
  if (Sniffer::owns(ud.op)) {
    sniffer_.onCompletion(c);
    return;
  }
  const Op op = static_cast<Op>(ud.op);
  switch (op) {
    case Op::kAccept:
      onAccept(ud.slot, c);
      return;
    case Op::kAcceptRearm:
      if (ud.slot < listeners_.size()) armAccept(ud.slot);
      return;
    case Op::kListenerClose:
      if (listener_ops_ > 0) --listener_ops_;
      return;
    case Op::kTick:
      onTick();
      return;
    case Op::kAcceptCancel:
    case Op::kIgnore:
      return;
    case Op::kRelayRing:
    case Op::kRelayWake:
      onRelayEvents(op == Op::kRelayRing, c);
      return;
    case Op::kControl:
      if (on_control_) on_control_();
      if (control_fd_ >= 0) {
        ring_.read(control_fd_, {reinterpret_cast<char*>(&control_value_), sizeof(control_value_)},
                   tag(Op::kControl, 0, 0));
      }
      return;
    default:
      break;
  }
  const auto resolved = slots_.resolve(ud, /*final=*/!c.more());
  if (!resolved) {
    // A late completion for a slot reused since: its buffer still has to go back.
    if (c.hasBuffer()) ring_.recycleBuffer(c.bufferId());
    stats_.counters().stale_completions.inc();
    return;
  }
  const uint32_t slot = *resolved;
  Connection& conn = slots_[slot];
  switch (op) {
    case Op::kConnect:
      onConnect(slot, c);
      break;
    case Op::kRecvClient:
    case Op::kRecvUpstream:
      onRecv(slot, op == Op::kRecvClient, c);
      // --relay auto: a receive cancelled for the hand-over to the kernel (or one that won
      // the race with its cancel and was relayed above).
      if (conn.handover_pending) onHandoverRecv(slot, c);
      break;
    case Op::kSendUpstream:
      onSend(slot, false, c);
      break;
    case Op::kSendClient:
      onSend(slot, true, c);
      break;
    case Op::kShutUpstream:
      onShutdown(slot, false, c);
      break;
    case Op::kRelayPollClient:
    case Op::kRelayPollUpstream:
      onRelayPoll(slot, op == Op::kRelayPollClient, c);
      break;
    case Op::kRelayDrain:
      conn.relay_drain_armed = false;
      if (conn.relay_paused) {
        releaseHeld(slot);
      } else {
        relayProgress(slot);
      }
      break;
    case Op::kShutClient:
      onShutdown(slot, true, c);
      break;
    default:  // kCancelRecv, kCloseFailed, kTeardown, kHandoverCancel: only the in-flight count
      break;
  }
  maybeFree(slot);
}

void Worker::afterBatch() {
  now_ = std::chrono::steady_clock::now();
  http_.afterBatch(now_);
  if (accept_paused_ && activeConnections() < settings_.max_connections) resumeAccepting();
  if (starved_.empty() || ring_.buffersAvailable() == 0) return;
  std::vector<Starved> waiting;
  waiting.swap(starved_);
  for (const Starved& s : waiting) {
    if (!slots_.inUse(s.slot) || slots_.generation(s.slot) != s.generation) continue;
    Connection& conn = slots_[s.slot];
    (s.from_client ? conn.request : conn.response).starved = false;
    maybeArmRecv(s.slot, s.from_client);
  }
}

void Worker::onAccept(uint32_t index, const Completion& c) {
  if (index >= listeners_.size()) return;
  Listener& l = listeners_[index];
  if (!c.more()) l.accept_armed = false;
  if (c.res >= 0) {
    // Even while draining: the client is already connected and waiting.
    startConnection(index, c.res);
  } else if (c.res != -ECANCELED) {
    stats_.counters().accept_errors.inc();
    SPDLOG_DEBUG("accept: {}", std::strerror(-c.res));
  }
  if (!l.accept_armed && accepting_ && l.open && !accept_paused_) {
    if (c.res >= 0 || c.res == -ECANCELED) {
      armAccept(index);
    } else {
      // EMFILE and friends: retry a little later rather than spin.
      ring_.timeout(kAcceptRetryDelay, tag(Op::kAcceptRearm, index, 0));
    }
  }
}

void Worker::startConnection(uint32_t listener, int fd) {
  stats_.counters().accepted.inc();
  const Listener& l = listeners_[listener];
  auto original = sockets_.originalDestination(fd, l.family);
  const bool redirected =
      original && wasRedirected(*original, l.port, [&] { return sockets_.localAddress(fd); });
  if (redirected && startHttp(l, fd, *original)) return;
  if (redirected && startSniff(listener, fd, *original)) return;
  startTcp(listener, fd, redirected ? std::optional<SocketAddress>(*original) : std::nullopt);
}

void Worker::startTcp(uint32_t listener, int fd, const std::optional<SocketAddress>& original,
                      std::string first_bytes, Sniffed* sniffed) {
  const Listener& l = listeners_[listener];
  const bool redirected = original.has_value();
  const auto acquired = slots_.acquire();
  if (!acquired) {
    ::close(fd);  // 16M open connections on one worker: nothing sensible left to do
    stats_.counters().accept_errors.inc();
    return;
  }
  const uint32_t slot = *acquired;
  Connection& conn = slots_[slot];
  conn.state = State::kConnecting;
  conn.kind = l.kind;
  conn.family = l.family;
  conn.client_fd = fd;
  conn.upstream_fd = -1;
  conn.decision = RouteDecision{};
  conn.table.reset();
  conn.tried.clear();
  conn.counters = nullptr;
  conn.counted_open = false;
  for (Direction* d : {&conn.request, &conn.response}) {
    d->queue.clear();
    *d = Direction{std::move(d->queue)};
  }
  conn.request_bytes = 0;
  conn.uncounted_received = 0;
  conn.response_bytes = 0;
  conn.started = now_;
  conn.last_activity = now_;
  conn.half_closed = {};
  conn.outcome = "ok";
  conn.tls.reset();
  conn.sniffed_http = sniffed != nullptr && sniffed->verdict == Sniffed::Verdict::kHttp;
  conn.keepalive_pending = false;
  conn.adaptive = false;
  conn.handover = HandoverRule{};
  conn.handover_pending = false;
  conn.handover_raced = false;
  conn.relay_user_written[0] = conn.relay_user_written[1] = 0;
  conn.relay_paused = false;
  ++active_;
  if (settings_.max_connections > 0 && activeConnections() >= settings_.max_connections &&
      !accept_paused_) {
    pauseAccepting();
  }
  conn.peer = SocketAddress{};
  // The access log names the client; TPROXY inbound connects to the app from its address.
  if ((access_log_ && settings_.access_log) ||
      (l.kind == ListenerKind::kInbound && settings_.inbound_transparent)) {
    if (auto peer = sockets_.peerAddress(fd)) conn.peer = *peer;
  }

  // Not redirected (someone dialled the proxy port itself): relaying would loop into ourselves.
  if (!redirected) {
    stats_.counters().no_original_dst.inc();
    closeConnection(slot, "no_original_dst");
    return;
  }
  conn.original_dst = *original;
  if (!first_bytes.empty()) {
    // What the sniffer read goes upstream before anything read from now on.
    Chunk ch;
    ch.length = static_cast<uint32_t>(first_bytes.size());
    ch.owned = std::make_unique<char[]>(first_bytes.size());
    std::memcpy(ch.owned.get(), first_bytes.data(), first_bytes.size());
    conn.request.queued_bytes += ch.length;
    conn.request_bytes += ch.length;
    conn.uncounted_received += ch.length;
    conn.request.queue.push_back(std::move(ch));
  }
  if (conn.kind == ListenerKind::kInbound) {
    conn.decision.kind = RouteDecision::Kind::kPassthrough;
    conn.decision.upstream = conn.original_dst;
    if (!secureInbound(slot, sniffed)) return;
  } else if (!routeOutbound(slot)) {
    return;
  }
  connectUpstream(slot);
}

bool Worker::startHttp(const Listener& l, int fd, const SocketAddress& original_dst) {
  if (!table_ || !router_) return false;
  const routing::RouteMatch match = table_->match(original_dst);
  // HTTP/1.1 ports only (h2 and gRPC stay L4), and not a pod address dialled directly: Istio
  // sends those to the pod as they are.
  if (match.service == nullptr || match.service->protocol != "HTTP") return false;
  if (l.kind == ListenerKind::kOutbound && match.endpoint) return false;
  if (l.kind == ListenerKind::kInbound && !match.endpoint) return false;
  // mTLS and AuthorizationPolicy apply on the L7 path too (http_tls.cc): the session needs
  // the peer's address for the policies' source.ip.
  http_.adopt(fd, l.kind, peerIfNeeded(fd, l.kind), original_dst);
  if (settings_.max_connections > 0 && activeConnections() >= settings_.max_connections &&
      !accept_paused_) {
    pauseAccepting();
  }
  return true;
}

SocketAddress Worker::peerIfNeeded(int fd, ListenerKind kind) {
  SocketAddress peer;
  // TPROXY inbound: the L7 path binds its connections to the app to the client's address.
  if (settings_.access_log || (table_ && table_->security) ||
      (kind == ListenerKind::kInbound && settings_.inbound_transparent)) {
    if (auto p = sockets_.peerAddress(fd)) peer = *p;
  }
  return peer;
}

bool Worker::startSniff(uint32_t listener, int fd, const SocketAddress& original_dst) {
  const Listener& l = listeners_[listener];
  if (!table_ || !router_) return false;
  const routing::RouteMatch match = table_->match(original_dst);
  if (match.service == nullptr || match.service->protocol != "auto") return false;
  security::MtlsMode mtls = security::MtlsMode::kDisable;
  if (l.kind == ListenerKind::kOutbound) {
    // Ports with per-request routes go to the L7 path when they carry HTTP; without them the L7
    // path would change nothing, and Istio's per-connection routing is what the L4 relay does.
    // Where mTLS may be originated every `auto` port is sniffed all the same, so its ALPN says
    // HTTP or TCP as an Istio client's does (a PERMISSIVE server passes TLS without an Istio
    // ALPN to its app untouched).
    if (!sniffsForL7(match) && !table_->security) return false;
  } else {
    // Inbound, toward the local app: the L7 path adds request metrics, timeouts and
    // authorization per request. Where mTLS may apply the sniffer terminates a client's TLS
    // first and decides on the decrypted stream (docs/HTTP.md, "sniffed").
    if (!match.endpoint) return false;
    if (table_->security) mtls = table_->security->inboundMode(original_dst.ip, original_dst.port);
  }
  sniffer_.start(fd, listener, original_dst, settings_.protocol_detection_timeout, mtls);
  return true;
}

bool Worker::sniffsForL7(const routing::RouteMatch& match) {
  return !match.endpoint && match.service != nullptr && !match.service->http_routes.empty();
}

void Worker::onSniffed(Sniffed sniffed) {
  const ListenerKind kind = listeners_[sniffed.listener].kind;
  if (sniffed.verdict == Sniffed::Verdict::kHttp &&
      (kind == ListenerKind::kInbound ||
       (table_ && sniffsForL7(table_->match(sniffed.original_dst))))) {
    // Over TLS the session carries on over the sniffer's stream (its handshake done).
    http_.adopt(sniffed.fd, kind, peerIfNeeded(sniffed.fd, kind), sniffed.original_dst,
                sniffed.bytes, std::move(sniffed.tls));
    return;
  }
  std::string bytes = std::move(sniffed.bytes);
  startTcp(sniffed.listener, sniffed.fd, sniffed.original_dst, std::move(bytes), &sniffed);
}

bool Worker::routeOutbound(uint32_t slot) {
  Connection& conn = slots_[slot];
  RouteDecision d;
  if (router_) d = router_->route(conn.original_dst);
  if (d.kind == RouteDecision::Kind::kService && d.service != nullptr) {
    conn.decision = d;
    conn.table = table_;
    return true;
  }
  if (d.kind == RouteDecision::Kind::kRefused && d.service != nullptr) {
    // A known Service with no endpoint to take it: close, never pass it on to the ClusterIP.
    stats_.counters().refused_no_upstream.inc();
    conn.decision = RouteDecision{};
    conn.decision.kind = RouteDecision::Kind::kRefused;
    closeConnection(slot, "no_healthy_upstream");
    return false;
  }
  // Unknown destination: the effective policy (flags over ProxyConfig) decides.
  if (settings_.outbound_policy == routing::OutboundPolicy::kRegistryOnly) {
    conn.decision.kind = RouteDecision::Kind::kRefused;
    stats_.counters().refused_registry.inc();
    closeConnection(slot, "refused_registry_only");
    return false;
  }
  stats_.counters().passthrough.inc();
  conn.decision = RouteDecision{};
  conn.decision.kind = RouteDecision::Kind::kPassthrough;
  conn.decision.upstream = conn.original_dst;
  return true;
}

void Worker::connectUpstream(uint32_t slot) {
  Connection& conn = slots_[slot];
  const SocketAddress& upstream = conn.decision.upstream;
  conn.tried.push_back(upstream);
  if (conn.kind == ListenerKind::kOutbound) secureOutbound(slot);
  std::optional<IpAddress> source;
  if (conn.kind == ListenerKind::kInbound) {
    source = upstream.ip.family == Family::kIpv6 ? settings_.inbound_source_v6
                                                 : settings_.inbound_source_v4;
  }
  // TPROXY inbound: the app sees the client itself (a client of the other family, which only a
  // dual-stack listener could bring, keeps the passthrough source).
  const bool transparent = conn.kind == ListenerKind::kInbound && settings_.inbound_transparent &&
                           conn.peer.port != 0 && conn.peer.ip.family == upstream.ip.family;
  // Keepalive only for a connection still open at the next sweep (onTick): most end sooner.
  // The benchmark switch `keepalive-at-connect` sets it on every socket, as before.
  static const bool keepalive_at_connect = loop::uringAbSwitch("keepalive-at-connect");
  conn.keepalive_pending = !transparent && !keepalive_at_connect;
  Result<int> fd = transparent ? sockets_.transparentUpstreamSocket(conn.peer.ip, kTproxyMark)
                   : conn.keepalive_pending
                       ? sockets_.upstreamSocketWithoutKeepalive(upstream.ip.family, source)
                       : sockets_.upstreamSocket(upstream.ip.family, source);
  if (!fd) {
    spdlog::warn("upstream socket for {}: {}", upstream.toString(), fd.error().message);
    closeConnection(slot, "upstream_socket_error");
    return;
  }
  conn.upstream_fd = *fd;
  conn.upstream_sa_len = upstream.toSockaddr(conn.upstream_sa);
  ring_.connect(conn.upstream_fd, reinterpret_cast<const sockaddr*>(&conn.upstream_sa),
                conn.upstream_sa_len, settings_.connect_timeout, track(Op::kConnect, slot));
}

void Worker::onConnect(uint32_t slot, const Completion& c) {
  Connection& conn = slots_[slot];
  if (conn.state != State::kConnecting) return;  // torn down while connecting
  EndpointCounters* counters = countersFor(conn);
  if (c.res == 0) {
    conn.state = State::kRelaying;
    conn.last_activity = now_;
    conn.counters = counters;
    counters->opened.inc();
    conn.counted_open = true;
    counters->received_bytes.add(conn.uncounted_received);
    conn.uncounted_received = 0;
    if (handToKernel(slot)) return;
    maybeArmRecv(slot, true);
    maybeArmRecv(slot, false);
    // The sniffed bytes; over originated TLS they go inside it (tlsConnected).
    if (conn.tls) {
      tlsConnected(slot);
    } else if (conn.request.queued() > 0) {
      pump(slot, true);
    }
    return;
  }
  counters->connect_failures.inc();
  const bool timed_out = c.res == -ECANCELED;
  SPDLOG_DEBUG("connect {}: {}", conn.decision.upstream.toString(),
               timed_out ? "timed out" : std::strerror(-c.res));
  ring_.close(conn.upstream_fd, track(Op::kCloseFailed, slot));
  conn.upstream_fd = -1;
  if (conn.decision.kind == RouteDecision::Kind::kService) {
    // Retry only against the table that made the decision, within the attempt bound.
    if (router_ && conn.table == table_ &&
        static_cast<int>(conn.tried.size()) < settings_.max_connect_attempts) {
      if (auto next = router_->retry(conn.decision, conn.tried)) {
        router_->release(conn.decision);
        conn.decision = *next;
        connectUpstream(slot);
        return;
      }
    }
    stats_.counters().refused_no_upstream.inc();
  }
  closeConnection(slot, timed_out ? "connect_timeout" : "connect_failed");
}

void Worker::maybeArmRecv(uint32_t slot, bool from_client) {
  Connection& conn = slots_[slot];
  Direction& d = from_client ? conn.request : conn.response;
  if (conn.state != State::kRelaying || d.recv_armed || d.eof || d.starved || d.paused) return;
  if (tlsHoldsReceive(conn, from_client) || conn.handover_pending || d.kernel_held) return;
  // One-shot: each receive is a decision, so a direction never holds more than its limit plus
  // one buffer, and backpressure needs no cancel.
  ring_.recv(from_client ? conn.client_fd : conn.upstream_fd,
             track(from_client ? Op::kRecvClient : Op::kRecvUpstream, slot));
  d.recv_armed = true;
}

const char* Worker::chunkData(const Chunk& ch) {
  return (ch.borrowed ? ring_.buffer(ch.buffer).data() : ch.owned.get()) + ch.offset;
}

void Worker::takeChunk(Direction& d, const Completion& c) {
  Chunk ch;
  ch.length = static_cast<uint32_t>(c.res);
  if (d.borrowed < kMaxBorrowedChunks && ring_.buffersAvailable() >= buffer_reserve_) {
    ch.buffer = c.bufferId();
    ch.borrowed = true;
    ++d.borrowed;
  } else {
    // Copy out and give the buffer straight back: the shared pool stays available to every
    // connection of the worker, however many of them have slow readers.
    ch.owned = std::make_unique<char[]>(ch.length);
    std::memcpy(ch.owned.get(), ring_.buffer(c.bufferId()).data(), ch.length);
    ring_.recycleBuffer(c.bufferId());
    stats_.counters().copied_bytes.add(ch.length);
  }
  d.queued_bytes += ch.length;
  d.queue.push_back(std::move(ch));
}

void Worker::releaseChunk(Direction& d, Chunk& ch) {
  if (ch.borrowed) {
    ring_.recycleBuffer(ch.buffer);
    ch.borrowed = false;
    --d.borrowed;
  }
  ch.owned.reset();
}

// Drops every chunk not being sent; those in flight go back when their send completes.
void Worker::dropQueue(Direction& d) {
  const size_t keep = d.send_in_flight ? std::min<size_t>(d.chunks_in_flight, d.queued()) : 0;
  for (size_t i = d.head + keep; i < d.queue.size(); ++i) {
    d.queued_bytes -= d.queue[i].length;
    releaseChunk(d, d.queue[i]);
  }
  d.queue.resize(d.head + keep);
}

void Worker::onRecv(uint32_t slot, bool from_client, const Completion& c) {
  Connection& conn = slots_[slot];
  Direction& d = from_client ? conn.request : conn.response;
  d.recv_armed = false;
  if (c.res > 0 && c.hasBuffer()) {
    if (conn.state != State::kRelaying) {
      ring_.recycleBuffer(c.bufferId());
      return;
    }
    if (conn.tls && tlsReceive(slot, from_client, c)) return;
    if (conn.adaptive) noteReceive(slot, from_client, c);
    takeChunk(d, c);
    conn.last_activity = now_;
    if (from_client) {
      conn.request_bytes += static_cast<uint64_t>(c.res);
      conn.counters->received_bytes.add(static_cast<uint64_t>(c.res));
    }
    // High watermark: stop reading this side until the other side took half of it.
    if (d.queued_bytes >= settings_.buffer_limit) {
      d.paused = true;
      stats_.counters().watermark_pauses.inc();
    }
    pump(slot, from_client);
    maybeArmRecv(slot, from_client);
    return;
  }
  if (c.hasBuffer()) ring_.recycleBuffer(c.bufferId());
  if (conn.state != State::kRelaying) return;
  if (c.res == 0) {
    d.eof = true;
    conn.last_activity = now_;
    if (conn.half_closed == std::chrono::steady_clock::time_point{}) conn.half_closed = now_;
    if (conn.tls) tlsEndOfFile(slot, from_client);
    pump(slot, from_client);  // half-close the other side once the queue is flushed
  } else if (c.res == -ENOBUFS) {
    // Replenish and re-arm: afterBatch re-arms once buffers have come back.
    stats_.counters().buffer_exhausted.inc();
    d.starved = true;
    starved_.push_back(Starved{slot, slots_.generation(slot), from_client});
  } else if (c.res == -ECANCELED || c.res == -EINTR || c.res == -EAGAIN) {
    maybeArmRecv(slot, from_client);
  } else {
    onPeerReset(slot, from_client);
  }
}

void Worker::pump(uint32_t slot, bool from_client) {
  Connection& conn = slots_[slot];
  // While flushing, only the direction away from the side that reset still moves.
  if (conn.state != State::kRelaying &&
      !(conn.state == State::kFlushing && from_client == conn.reset_by_client)) {
    return;
  }
  Direction& d = from_client ? conn.request : conn.response;
  const int to_fd = from_client ? conn.upstream_fd : conn.client_fd;
  if (d.send_in_flight) return;
  if (d.queued() > 0) {
    const uint64_t ud = track(from_client ? Op::kSendUpstream : Op::kSendClient, slot);
    const size_t n = std::min(d.queued(), kMaxGather);
    if (n == 1) {
      const Chunk& ch = d.queue[d.head];
      ring_.send(to_fd, {chunkData(ch), ch.length}, ud);
    } else {
      for (size_t i = 0; i < n; ++i) {
        const Chunk& ch = d.queue[d.head + i];
        d.iov[i] = iovec{const_cast<char*>(chunkData(ch)), ch.length};
      }
      d.message = msghdr{};
      d.message.msg_iov = d.iov.data();
      d.message.msg_iovlen = n;
      ring_.sendMessage(to_fd, &d.message, ud);
    }
    d.chunks_in_flight = static_cast<uint32_t>(n);
    d.send_in_flight = true;
  } else if (conn.state == State::kFlushing) {
    // Everything the resetting side sent is out: now the other side learns of the reset.
    closeConnection(slot, conn.outcome, /*reset=*/true);
  } else if (d.eof && !d.shut_sent) {
    d.shut_sent = true;
    // The benchmark switch `shutdown-sqe` sends it through the ring, as before issue 12's
    // per-connection work (io_uring punts every shutdown to an io-wq thread).
    static const bool through_ring = loop::uringAbSwitch("shutdown-sqe");
    if (through_ring) {
      ring_.shutdown(to_fd, SHUT_WR,
                     track(from_client ? Op::kShutUpstream : Op::kShutClient, slot));
      return;
    }
    sockets_.shutdownWrite(to_fd);
    onShutdown(slot, /*client_side=*/!from_client, loop::Completion{});
  }
}

void Worker::onSend(uint32_t slot, bool to_client, const Completion& c) {
  Connection& conn = slots_[slot];
  Direction& d = to_client ? conn.response : conn.request;
  d.send_in_flight = false;
  const size_t in_flight = std::min<size_t>(d.chunks_in_flight, d.queued());
  d.chunks_in_flight = 0;
  if (in_flight == 0) return;  // cannot happen: a send always has its chunks queued
  const bool live = conn.state == State::kRelaying ||
                    (conn.state == State::kFlushing && to_client != conn.reset_by_client);
  if (!live || c.res <= 0) {
    for (size_t i = 0; i < in_flight; ++i) {
      d.queued_bytes -= d.queue[d.head].length;
      releaseChunk(d, d.queue[d.head]);
      ++d.head;
    }
    if (live) {
      if (conn.state == State::kFlushing) {
        closeConnection(slot, conn.outcome, /*reset=*/true);
      } else {
        onPeerReset(slot, to_client);  // the side we wrote to is gone
      }
    }
    return;
  }
  const auto sent = static_cast<uint32_t>(c.res);
  conn.last_activity = now_;
  if (to_client) {
    conn.response_bytes += sent;
    // No counters yet while an inbound handshake waits for the authorization (tls_worker.cc).
    if (conn.counters != nullptr) conn.counters->sent_bytes.add(sent);
  }
  // A short send leaves the rest in place; it goes out from the same buffers.
  uint32_t left = sent;
  d.queued_bytes -= std::min<size_t>(sent, d.queued_bytes);
  for (size_t i = 0; i < in_flight && left > 0; ++i) {
    Chunk& ch = d.queue[d.head];
    const uint32_t part = std::min(left, ch.length);
    ch.offset += part;
    ch.length -= part;
    left -= part;
    if (ch.length != 0) break;
    releaseChunk(d, ch);
    ++d.head;
  }
  if (d.head == d.queue.size()) {
    d.queue.clear();
    d.head = 0;
  }
  // Low watermark: resume reading the source once half of the limit has gone out.
  if (d.paused && d.queued_bytes <= settings_.buffer_limit / 2) d.paused = false;
  pump(slot, !to_client);
  // --relay auto: an idle point. Before the receive is armed, so that a hand-over does not
  // first arm a receive and then cancel it.
  if (conn.adaptive) maybeHandOver(slot);
  maybeArmRecv(slot, !to_client);
}

void Worker::onPeerReset(uint32_t slot, bool client_side) {
  Connection& conn = slots_[slot];
  if (conn.state != State::kRelaying) return;
  (client_side ? stats_.counters().resets_from_client : stats_.counters().resets_from_upstream)
      .inc();
  conn.outcome = client_side ? "client_reset" : "upstream_reset";
  // The failed side is done with: reset its socket now, and forget what was meant for it.
  closeSocket(slot, client_side, /*reset=*/true);
  dropQueue(client_side ? conn.response : conn.request);
  Direction& onward = client_side ? conn.request : conn.response;
  conn.state = State::kFlushing;
  conn.reset_by_client = client_side;
  conn.flush_deadline = now_ + kResetFlushLimit;
  // Bytes it sent before the reset still reach the other side; then that side is reset.
  pump(slot, client_side);
  (void)onward;
}

void Worker::onShutdown(uint32_t slot, bool client_side, const Completion& /*c*/) {
  Connection& conn = slots_[slot];
  // SHUT_WR toward the client ends the response direction, toward upstream the request one.
  (client_side ? conn.response : conn.request).shut_done = true;
  if (conn.state == State::kRelaying && conn.request.shut_done && conn.response.shut_done) {
    closeConnection(slot, "ok");
  }
}

void Worker::closeSocket(uint32_t slot, bool client_side, bool reset) {
  Connection& conn = slots_[slot];
  int& fd = client_side ? conn.client_fd : conn.upstream_fd;
  if (fd < 0) return;
  const Direction& in = client_side ? conn.request : conn.response;
  const Direction& out = client_side ? conn.response : conn.request;
  if (!reset) {
    // Nothing of the io_uring relay pending on the socket (the usual end: both sides' FINs
    // relayed): a close alone. Otherwise shutdown first, which wakes a pending receive (it
    // completes with 0) before the close; io_uring runs that shutdown on an io-wq thread.
    // The benchmark switch `teardown-shutdown` always shuts down first, as before.
    static const bool always_shutdown = loop::uringAbSwitch("teardown-shutdown");
    if (conn.state == State::kRelaying && !in.recv_armed && !out.send_in_flight &&
        !always_shutdown) {
      ring_.close(fd, track(Op::kTeardown, slot));
    } else {
      ring_.shutdownAndClose(fd, track(Op::kTeardown, slot, 2));  // two completions, one tag
    }
    fd = -1;
    return;
  }
  sockets_.setResetOnClose(fd);
  // Cancel by user_data: a hash lookup per operation, whatever else the ring holds.
  if (in.recv_armed) {
    ring_.cancel(target(client_side ? Op::kRecvClient : Op::kRecvUpstream, slot),
                 track(Op::kTeardown, slot));
  }
  if (out.send_in_flight) {
    ring_.cancel(target(client_side ? Op::kSendClient : Op::kSendUpstream, slot),
                 track(Op::kTeardown, slot));
  }
  if (!client_side && conn.state == State::kConnecting) {
    ring_.cancel(target(Op::kConnect, slot), track(Op::kTeardown, slot));
  }
  ring_.close(fd, track(Op::kTeardown, slot));
  fd = -1;
}

void Worker::closeConnection(uint32_t slot, const char* outcome, bool reset) {
  Connection& conn = slots_[slot];
  if (conn.state == State::kClosing || conn.state == State::kFree) return;
  countKeptInUserSpace(conn);
  if (conn.relay_maps) finishKernelRelay(slot);  // also a pair handed back to user space
  // A clean close must never pass for the end of data that did not make it.
  if (conn.request.queued() > 0 || conn.response.queued() > 0) reset = true;
  if (reset && conn.state != State::kFlushing && conn.state != State::kConnecting) {
    stats_.counters().resets_sent.inc();
  }
  for (Direction* d : {&conn.request, &conn.response}) dropQueue(*d);
  closeSocket(slot, true, reset);
  closeSocket(slot, false, reset);
  conn.state = State::kClosing;
  conn.outcome = outcome;
  if (conn.counted_open) conn.counters->closed.inc();
  if (conn.decision.kind == RouteDecision::Kind::kService && router_ && conn.table == table_) {
    router_->release(conn.decision);
  }
  if (access_log_ && settings_.access_log) logAccess(conn);
  stats_.counters().closed.inc();
  --active_;
  if (accept_paused_ && active_ < settings_.max_connections) resumeAccepting();
}

void Worker::maybeFree(uint32_t slot) {
  Connection& conn = slots_[slot];
  if (conn.state != State::kClosing || !slots_.release(slot)) return;
  conn.state = State::kFree;
  conn.table.reset();
  conn.tls.reset();
  conn.decision = RouteDecision{};
}

EndpointCounters* Worker::countersFor(const Connection& conn) {
  if (conn.kind == ListenerKind::kInbound) {
    return &stats_.endpoint(EndpointKey{kInboundCluster, "", conn.original_dst.toString(),
                                        sourcePrincipalLabel(conn.tls.get())});
  }
  const RouteDecision& d = conn.decision;
  if (d.kind != RouteDecision::Kind::kService || d.service == nullptr) {
    return &stats_.endpoint(EndpointKey{kPassthroughCluster, "", ""});
  }
  const CacheKey key{d.service, d.subset_index, d.endpoint_index};
  if (conn.table == table_) {
    auto it = counters_cache_.find(key);
    if (it != counters_cache_.end()) return it->second;
  }
  std::string subset;
  if (d.subset_index < d.service->subsets.size()) subset = d.service->subsets[d.subset_index].name;
  EndpointCounters* counters =
      &stats_.endpoint(EndpointKey{d.service->service, subset, d.upstream.toString()});
  if (conn.table == table_) counters_cache_.emplace(key, counters);
  return counters;
}

void Worker::logAccess(const Connection& conn) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - conn.started)
                      .count();
  std::string service = conn.kind == ListenerKind::kInbound ? kInboundCluster : kPassthroughCluster;
  std::string subset;
  if (conn.decision.kind == RouteDecision::Kind::kService && conn.decision.service != nullptr) {
    service = conn.decision.service->service;
    if (conn.decision.subset_index < conn.decision.service->subsets.size()) {
      subset = conn.decision.service->subsets[conn.decision.subset_index].name;
    }
  } else if (conn.decision.kind == RouteDecision::Kind::kRefused) {
    service = kBlackHoleCluster;
  }
  pushAccess(AccessLine{conn.kind, conn.peer, conn.original_dst, service,
                        subset.empty() ? "-" : subset,
                        conn.tried.empty() ? "-" : conn.tried.back().toString(), conn.outcome,
                        conn.request_bytes, conn.response_bytes, ms, conn.tried.size()});
}

void Worker::pushAccess(const AccessLine& l) {
  if (!access_log_(fmt::format(
          "{} downstream={} original_dst={} service={} subset={} upstream={} outcome={} "
          "received_bytes={} sent_bytes={} duration_ms={} attempts={}",
          l.kind == ListenerKind::kInbound ? "inbound" : "outbound", l.peer.toString(),
          l.original_dst.toString(), l.service, l.subset, l.upstream, l.outcome, l.received_bytes,
          l.sent_bytes, l.duration_ms, l.attempts))) {
    stats_.counters().access_log_dropped.inc();
  }
}

void Worker::onSniffClosed(const SniffClosed& c) {
  if (!access_log_ || !settings_.access_log) return;
  const ListenerKind kind = listeners_[c.listener].kind;
  SocketAddress peer;
  if (auto p = sockets_.peerAddress(c.fd)) peer = *p;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - c.started)
                      .count();
  // No route was chosen: inbound the app's cluster, outbound none, as Envoy logs "-".
  pushAccess(AccessLine{kind, peer, c.original_dst,
                        kind == ListenerKind::kInbound ? kInboundCluster : "-", "-", "-", c.outcome,
                        c.received_bytes, 0, ms, 0});
}

}  // namespace remora::proxy
