#include "proxy/worker.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

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
      settings_(settings) {}

Worker::~Worker() {
  for (auto& l : listeners_) {
    if (l.open) ::close(l.fd);
  }
  for (auto& c : slots_) {
    if (c.client_fd >= 0) ::close(c.client_fd);
    if (c.upstream_fd >= 0) ::close(c.upstream_fd);
  }
}

uint64_t Worker::tag(Op op, uint32_t slot, uint32_t generation) const {
  return UserData{static_cast<uint8_t>(op), slot, generation}.encode();
}

uint64_t Worker::tag(Op op, uint32_t slot) {
  Connection& conn = slots_[slot];
  ++conn.inflight;
  return tag(op, slot, conn.generation);
}

void Worker::addListener(int fd, ListenerKind kind, Family family) {
  listeners_.push_back(Listener{fd, kind, family, true, false});
  ++listeners_open_;
  if (accepting_) armAccept(static_cast<uint32_t>(listeners_.size() - 1));
}

void Worker::armAccept(uint32_t index) {
  Listener& l = listeners_[index];
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
  counters_cache_.clear();
  table_ = std::move(table);
  if (!table_) return;
  if (router_) {
    router_->setTable(table_);
  } else {
    router_ = router_factory_(table_);
  }
}

void Worker::stopAccepting() {
  accepting_ = false;
  for (uint32_t i = 0; i < listeners_.size(); ++i) {
    Listener& l = listeners_[i];
    if (!l.open) continue;
    ring_.teardown(l.fd, tag(Op::kListenerClose, i, 0));
    l.open = false;
    --listeners_open_;
  }
}

void Worker::abortAll() {
  for (uint32_t slot = 0; slot < slots_.size(); ++slot) {
    State s = slots_[slot].state;
    if (s == State::kConnecting || s == State::kRelaying) closeConnection(slot, "aborted");
  }
}

// The one dispatch point for this worker's completions.
void Worker::onCompletion(const Completion& c) {
  if (c.user_data == loop::kIgnoredUserData) return;
  const UserData ud = UserData::decode(c.user_data);
  const Op op = static_cast<Op>(ud.op);
  switch (op) {
    case Op::kAccept:
      onAccept(ud.slot, c);
      return;
    case Op::kAcceptRearm:
      if (accepting_ && ud.slot < listeners_.size() && listeners_[ud.slot].open &&
          !listeners_[ud.slot].accept_armed) {
        armAccept(ud.slot);
      }
      return;
    case Op::kListenerClose:
    case Op::kIgnore:
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
  if (ud.slot >= slots_.size() || slots_[ud.slot].generation != ud.generation ||
      slots_[ud.slot].state == State::kFree) {
    // A late completion for a slot reused since: its buffer still has to go back.
    if (c.hasBuffer()) ring_.recycleBuffer(c.bufferId());
    stats_.counters().stale_completions.inc();
    return;
  }
  const uint32_t slot = ud.slot;
  Connection& conn = slots_[slot];
  if (!c.more() && conn.inflight > 0) --conn.inflight;
  switch (op) {
    case Op::kConnect:
      onConnect(slot, c);
      break;
    case Op::kRecvClient:
      onRecv(slot, true, c);
      break;
    case Op::kRecvUpstream:
      onRecv(slot, false, c);
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
    case Op::kShutClient:
      onShutdown(slot, true, c);
      break;
    default:  // kCancelRecv, kCloseFailed, kTeardown: only the in-flight count matters
      break;
  }
  maybeFree(slot);
}

void Worker::afterBatch() {
  if (starved_.empty() || ring_.buffersAvailable() == 0) return;
  std::vector<Starved> waiting;
  waiting.swap(starved_);
  for (const Starved& s : waiting) {
    if (s.slot >= slots_.size() || slots_[s.slot].generation != s.generation) continue;
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
  if (!l.accept_armed && accepting_ && l.open) {
    if (c.res >= 0) {
      armAccept(index);
    } else {
      // EMFILE and friends: retry a little later rather than spin.
      ring_.timeout(kAcceptRetryDelay, tag(Op::kAcceptRearm, index, 0));
    }
  }
}

uint32_t Worker::allocateSlot() {
  uint32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slots_.emplace_back();
    slot = static_cast<uint32_t>(slots_.size() - 1);
  }
  ++slots_in_use_;
  return slot;
}

void Worker::startConnection(uint32_t listener, int fd) {
  stats_.counters().accepted.inc();
  if (slots_.size() >= UserData::kMaxSlots && free_slots_.empty()) {
    ::close(fd);  // 16M open connections on one worker: nothing sensible left to do
    stats_.counters().accept_errors.inc();
    return;
  }
  const Listener& l = listeners_[listener];
  const uint32_t slot = allocateSlot();
  Connection& conn = slots_[slot];
  conn.state = State::kConnecting;
  conn.kind = l.kind;
  conn.family = l.family;
  conn.client_fd = fd;
  conn.upstream_fd = -1;
  conn.inflight = 0;
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
  conn.response_bytes = 0;
  conn.started = std::chrono::steady_clock::now();
  conn.outcome = "ok";
  ++active_;
  if (access_log_) {
    if (auto peer = sockets_.peerAddress(fd)) conn.peer = *peer;
  }

  auto original = sockets_.originalDestination(fd, l.family);
  auto local = sockets_.localAddress(fd);
  // Not redirected (someone dialled the proxy port itself): relaying would loop into ourselves.
  if (!original || (local && *local == *original)) {
    stats_.counters().no_original_dst.inc();
    closeConnection(slot, "no_original_dst");
    return;
  }
  conn.original_dst = *original;
  if (conn.kind == ListenerKind::kInbound) {
    conn.decision.kind = RouteDecision::Kind::kPassthrough;
    conn.decision.upstream = conn.original_dst;
  } else if (!routeOutbound(slot)) {
    return;
  }
  connectUpstream(slot);
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
  std::optional<IpAddress> source;
  if (conn.kind == ListenerKind::kInbound) {
    source = upstream.ip.family == Family::kIpv6 ? settings_.inbound_source_v6
                                                 : settings_.inbound_source_v4;
  }
  auto fd = sockets_.upstreamSocket(upstream.ip.family, source);
  if (!fd) {
    spdlog::warn("upstream socket for {}: {}", upstream.toString(), fd.error().message);
    closeConnection(slot, "upstream_socket_error");
    return;
  }
  conn.upstream_fd = *fd;
  conn.upstream_sa_len = upstream.toSockaddr(conn.upstream_sa);
  ring_.connect(conn.upstream_fd, reinterpret_cast<const sockaddr*>(&conn.upstream_sa),
                conn.upstream_sa_len, settings_.connect_timeout, tag(Op::kConnect, slot));
}

void Worker::onConnect(uint32_t slot, const Completion& c) {
  Connection& conn = slots_[slot];
  if (conn.state != State::kConnecting) return;  // torn down while connecting
  EndpointCounters* counters = countersFor(conn);
  if (c.res == 0) {
    conn.state = State::kRelaying;
    conn.counters = counters;
    counters->opened.inc();
    conn.counted_open = true;
    maybeArmRecv(slot, true);
    maybeArmRecv(slot, false);
    return;
  }
  counters->connect_failures.inc();
  const bool timed_out = c.res == -ECANCELED;
  SPDLOG_DEBUG("connect {}: {}", conn.decision.upstream.toString(),
               timed_out ? "timed out" : std::strerror(-c.res));
  ring_.close(conn.upstream_fd, tag(Op::kCloseFailed, slot));
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
  if (conn.state != State::kRelaying || d.recv_armed || d.eof || d.starved ||
      d.queued() >= Worker::kMaxQueuedChunks) {
    return;
  }
  ring_.recvMultishot(from_client ? conn.client_fd : conn.upstream_fd,
                      tag(from_client ? Op::kRecvClient : Op::kRecvUpstream, slot));
  d.recv_armed = true;
}

void Worker::onRecv(uint32_t slot, bool from_client, const Completion& c) {
  Connection& conn = slots_[slot];
  Direction& d = from_client ? conn.request : conn.response;
  if (!c.more()) {
    d.recv_armed = false;
    d.recv_cancelling = false;
  }
  if (c.res > 0 && c.hasBuffer()) {
    if (conn.state != State::kRelaying) {
      ring_.recycleBuffer(c.bufferId());
      return;
    }
    d.queue.push_back(Chunk{c.bufferId(), 0, static_cast<uint32_t>(c.res)});
    if (from_client) {
      conn.request_bytes += static_cast<uint64_t>(c.res);
      conn.counters->received_bytes.add(static_cast<uint64_t>(c.res));
    }
    pump(slot, from_client);
    if (d.recv_armed && !d.recv_cancelling && d.queued() >= Worker::kMaxQueuedChunks) {
      // Backpressure: the other side is slower; stop reading until the queue drains.
      ring_.cancel(tag(from_client ? Op::kRecvClient : Op::kRecvUpstream, slot, conn.generation),
                   tag(Op::kCancelRecv, slot));
      d.recv_cancelling = true;
    } else {
      maybeArmRecv(slot, from_client);
    }
    return;
  }
  if (c.hasBuffer()) ring_.recycleBuffer(c.bufferId());
  if (conn.state != State::kRelaying) return;
  if (c.res == 0) {
    d.eof = true;
    pump(slot, from_client);  // half-close the other side once the queue is flushed
  } else if (c.res == -ENOBUFS) {
    // Replenish and re-arm: afterBatch re-arms once buffers have come back.
    stats_.counters().buffer_exhausted.inc();
    d.starved = true;
    starved_.push_back(Starved{slot, conn.generation, from_client});
  } else if (c.res == -ECANCELED) {
    maybeArmRecv(slot, from_client);
  } else {
    closeConnection(slot, from_client ? "client_reset" : "upstream_reset");
  }
}

void Worker::pump(uint32_t slot, bool from_client) {
  Connection& conn = slots_[slot];
  if (conn.state != State::kRelaying) return;
  Direction& d = from_client ? conn.request : conn.response;
  const int to_fd = from_client ? conn.upstream_fd : conn.client_fd;
  if (d.send_in_flight) return;
  if (d.queued() > 0) {
    const uint64_t ud = tag(from_client ? Op::kSendUpstream : Op::kSendClient, slot);
    const size_t n = std::min(d.queued(), kMaxGather);
    if (n == 1) {
      const Chunk& ch = d.queue[d.head];
      ring_.send(to_fd, ring_.buffer(ch.buffer).subspan(ch.offset, ch.length), ud);
    } else {
      for (size_t i = 0; i < n; ++i) {
        const Chunk& ch = d.queue[d.head + i];
        d.iov[i] = iovec{ring_.buffer(ch.buffer).data() + ch.offset, ch.length};
      }
      d.message = msghdr{};
      d.message.msg_iov = d.iov.data();
      d.message.msg_iovlen = n;
      ring_.sendMessage(to_fd, &d.message, ud);
    }
    d.chunks_in_flight = static_cast<uint32_t>(n);
    d.send_in_flight = true;
  } else if (d.eof && !d.shut_sent) {
    ring_.shutdown(to_fd, SHUT_WR, tag(from_client ? Op::kShutUpstream : Op::kShutClient, slot));
    d.shut_sent = true;
  }
}

void Worker::onSend(uint32_t slot, bool to_client, const Completion& c) {
  Connection& conn = slots_[slot];
  Direction& d = to_client ? conn.response : conn.request;
  d.send_in_flight = false;
  const size_t in_flight = std::min<size_t>(d.chunks_in_flight, d.queued());
  d.chunks_in_flight = 0;
  if (in_flight == 0) return;  // cannot happen: a send always has its chunks queued
  if (conn.state != State::kRelaying || c.res <= 0) {
    for (size_t i = 0; i < in_flight; ++i) ring_.recycleBuffer(d.queue[d.head + i].buffer);
    d.head += in_flight;
    if (conn.state == State::kRelaying) {
      closeConnection(slot, to_client ? "client_reset" : "upstream_reset");
    }
    return;
  }
  const auto sent = static_cast<uint32_t>(c.res);
  if (to_client) {
    conn.response_bytes += sent;
    conn.counters->sent_bytes.add(sent);
  }
  // A short send leaves the rest in place; it goes out from the same buffers.
  uint32_t left = sent;
  for (size_t i = 0; i < in_flight && left > 0; ++i) {
    Chunk& ch = d.queue[d.head];
    const uint32_t part = std::min(left, ch.length);
    ch.offset += part;
    ch.length -= part;
    left -= part;
    if (ch.length != 0) break;
    ring_.recycleBuffer(ch.buffer);
    ++d.head;
  }
  if (d.head == d.queue.size()) {
    d.queue.clear();
    d.head = 0;
  }
  pump(slot, !to_client);
  maybeArmRecv(slot, !to_client);
}

void Worker::onShutdown(uint32_t slot, bool client_side, const Completion& /*c*/) {
  Connection& conn = slots_[slot];
  // SHUT_WR toward the client ends the response direction, toward upstream the request one.
  (client_side ? conn.response : conn.request).shut_done = true;
  if (conn.state == State::kRelaying && conn.request.shut_done && conn.response.shut_done) {
    closeConnection(slot, "ok");
  }
}

void Worker::closeConnection(uint32_t slot, const char* outcome) {
  Connection& conn = slots_[slot];
  if (conn.state == State::kClosing || conn.state == State::kFree) return;
  conn.state = State::kClosing;
  conn.outcome = outcome;
  for (Direction* d : {&conn.request, &conn.response}) {
    // Chunks being sent go back when their send completes; the rest go back now.
    const size_t keep = d->send_in_flight ? std::min<size_t>(d->chunks_in_flight, d->queued()) : 0;
    for (size_t i = d->head + keep; i < d->queue.size(); ++i) {
      ring_.recycleBuffer(d->queue[i].buffer);
    }
    d->queue.resize(d->head + keep);
  }
  for (int* fd : {&conn.client_fd, &conn.upstream_fd}) {
    if (*fd < 0) continue;
    ring_.teardown(*fd, tag(Op::kTeardown, slot));
    conn.inflight += 2;  // teardown completes three times: cancel, shutdown, close
    *fd = -1;
  }
  if (conn.counted_open) conn.counters->closed.inc();
  if (conn.decision.kind == RouteDecision::Kind::kService && router_ && conn.table == table_) {
    router_->release(conn.decision);
  }
  if (access_log_) logAccess(conn);
  --active_;
}

void Worker::maybeFree(uint32_t slot) {
  Connection& conn = slots_[slot];
  if (conn.state != State::kClosing || conn.inflight != 0) return;
  conn.state = State::kFree;
  ++conn.generation;
  conn.table.reset();
  conn.decision = RouteDecision{};
  free_slots_.push_back(slot);
  --slots_in_use_;
}

EndpointCounters* Worker::countersFor(const Connection& conn) {
  if (conn.kind == ListenerKind::kInbound) {
    return &stats_.endpoint(EndpointKey{kInboundCluster, "", conn.original_dst.toString()});
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
  access_log_(fmt::format(
      "{} downstream={} original_dst={} service={} subset={} upstream={} outcome={} "
      "received_bytes={} sent_bytes={} duration_ms={} attempts={}",
      conn.kind == ListenerKind::kInbound ? "inbound" : "outbound", conn.peer.toString(),
      conn.original_dst.toString(), service, subset.empty() ? "-" : subset,
      conn.tried.empty() ? "-" : conn.tried.back().toString(), conn.outcome, conn.request_bytes,
      conn.response_bytes, ms, conn.tried.size()));
}

}  // namespace remora::proxy
