// The worker's side of the kernel relay (kernel_relay.h, docs/PROXY.md "Kernel relay"): handing
// a connected pair to the kernel, then watching both sockets for FIN and RST until it closes.
// Kept apart from worker.cc, which only calls in at connect, completion, tick and close.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <thread>

#include "proxy/worker.h"

namespace remora::proxy {
namespace {

constexpr std::chrono::milliseconds kFirstDrainWait{1};
constexpr std::chrono::milliseconds kMaxDrainWait{50};

// Whether a TCP socket is still ESTABLISHED (a sockhash only takes established sockets).
bool established(int fd) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return false;
  return info.tcpi_state == TCP_ESTABLISHED;
}

int socketError(int fd) {
  int error = 0;
  socklen_t len = sizeof(error);
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) return errno;
  return error;
}

}  // namespace

bool Worker::kernelRelayEligible(const Connection& conn) {
  // TLS (origination, termination or the authorization that waits for the handshake) needs the
  // bytes in user space.
  if (conn.tls) return false;
  // Pure L4 only: a port Istio serves as HTTP (or gRPC, TLS...) stays in user space, where the
  // L7 engine reads it.
  // "auto" (no protocol declared) is L4 too while it has no per-request routes to sniff for.
  return !(
      conn.decision.kind == routing::RouteDecision::Kind::kService &&
      conn.decision.service != nullptr && conn.decision.service->protocol != "TCP" &&
      !(conn.decision.service->protocol == "auto" && conn.decision.service->http_routes.empty()));
}

bool Worker::handToKernel(uint32_t slot) {
  Connection& conn = slots_[slot];
  if (!settings_.kernel_relay || !kernelRelayEligible(conn)) return false;
  if (settings_.relay_adaptive) {
    // --relay auto: the io_uring relay starts; maybeHandOver decides once the pair has shown
    // what it is, so a short connection never pays the hand-over.
    conn.adaptive = true;
    return false;
  }
  // At connect only with nothing queued here (bytes the sniffer read wait in user space).
  if (conn.request.queued() > 0) return false;
  return enterKernelRelay(slot);
}

bool Worker::enterKernelRelay(uint32_t slot) {
  Connection& conn = slots_[slot];
  const std::shared_ptr<const RelayMaps>& maps = settings_.kernel_relay;
  // Nothing is queued in user space and no receive is armed (at connect none was yet; mid-stream
  // finishHandOver saw each cancelled): whatever either side already sent waits in its socket
  // for the kernel (attach's SO_RCVLOWAT nudge).
  // Backpressure: a direction may hold the buffer limit in the kernel's redirect queue, as the
  // io_uring relay may in its own queue, before the pair leaves the kernel path.
  const auto limit = static_cast<uint32_t>(std::min<size_t>(settings_.buffer_limit, UINT32_MAX));
  auto pair = maps->attach(conn.client_fd, conn.upstream_fd, limit, RelayOwner{index_, slot});
  if (!pair) {
    // A client that sent a few bytes and its FIN before the handover (a tiny upload) has left
    // ESTABLISHED, so the sockhash refuses it: not a failure, the io_uring relay carries it.
    // Mid-stream, a FIN or RST that arrived since the last receive is the same case.
    if (!established(conn.client_fd) || !established(conn.upstream_fd)) return false;
    stats_.counters().relay_attach_failures.inc();
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true)) {
      spdlog::warn(
          "kernel relay: handing a connection over failed ({}); it and any other that "
          "fails stay in the io_uring relay (remora_relay_attach_failures_total)",
          pair.error().message);
    }
    return false;
  }
  conn.relay = *pair;
  conn.relay_maps = maps;
  conn.relay_drain_wait = std::chrono::milliseconds(0);
  conn.relay_seen_bytes = 0;
  // Every byte received so far was sent on (nothing is queued): request_bytes went upstream,
  // response_bytes to the client.
  conn.relay_user_written[0] = conn.request_bytes;
  conn.relay_user_written[1] = conn.response_bytes;
  conn.state = State::kKernel;
  stats_.counters().relay_kernel.inc();
  armRelayPoll(slot, true);
  armRelayPoll(slot, false);
  return true;
}

void Worker::noteReceive(uint32_t slot, bool from_client, const loop::Completion& c) {
  Connection& conn = slots_[slot];
  conn.handover.onReceive(from_client, static_cast<size_t>(c.res),
                          ring_.buffer(c.bufferId()).size());
}

bool Worker::idleForHandOver(const Connection& conn) {
  for (const Direction* d : {&conn.request, &conn.response}) {
    // A FIN seen (or sent) stays with the io_uring relay, which already acts on it.
    if (d->queued() > 0 || d->send_in_flight || d->eof || d->shut_sent || d->paused || d->starved) {
      return false;
    }
  }
  return conn.state == State::kRelaying;
}

void Worker::maybeHandOver(uint32_t slot) {
  Connection& conn = slots_[slot];
  if (!conn.adaptive || conn.handover_pending || !conn.handover.ready()) return;
  // A reload to --relay uring: the pair stays where it is.
  if (!settings_.kernel_relay || !settings_.relay_adaptive) return;
  if (!idleForHandOver(conn)) return;
  // A one-shot receive may be armed on each side: it must be gone, and seen gone, before the
  // sockets go into the sockhash, or it would take bytes the kernel should redirect.
  conn.handover_pending = true;
  conn.handover_raced = false;
  bool armed = false;
  for (bool from_client : {true, false}) {
    if (!(from_client ? conn.request : conn.response).recv_armed) continue;
    ring_.cancel(target(from_client ? Op::kRecvClient : Op::kRecvUpstream, slot),
                 track(Op::kHandoverCancel, slot));
    armed = true;
  }
  if (!armed) finishHandOver(slot);
}

void Worker::onHandoverRecv(uint32_t slot, const loop::Completion& c) {
  Connection& conn = slots_[slot];
  // Bytes (or a FIN, or an error) won the race against the cancel: onRecv relayed them as
  // usual; the hand-over waits for the next idle point.
  if (c.res != -ECANCELED) conn.handover_raced = true;
  if (conn.request.recv_armed || conn.response.recv_armed) return;  // the other one first
  finishHandOver(slot);
}

void Worker::finishHandOver(uint32_t slot) {
  Connection& conn = slots_[slot];
  conn.handover_pending = false;
  if (conn.state != State::kRelaying) return;  // closed or reset meanwhile
  if (conn.handover_raced || !idleForHandOver(conn)) {
    stats_.counters().relay_handover_races.inc();
    conn.handover.onRaced();
  } else {
    // Test hook (REMORA_URING_AB=handover-delay): bytes sent now reach the sockets' receive
    // queues with no receive armed, as in the narrow window of a real race, so a test can check
    // that attach's SO_RCVLOWAT nudge moves them.
    static const bool delay = loop::uringAbSwitch("handover-delay");
    if (delay) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (enterKernelRelay(slot)) {
      stats_.counters().relay_handovers.inc();
      return;
    }
    conn.adaptive = false;  // refused (a FIN or RST arrived, or a full map): stays here
  }
  maybeArmRecv(slot, true);
  maybeArmRecv(slot, false);
}

void Worker::countKeptInUserSpace(const Connection& conn) {
  if (!conn.adaptive || conn.relay_maps) return;
  if (conn.handover.bulk()) {
    stats_.counters().relay_kept_bulk.inc();
  } else if (conn.handover.gaveUp()) {
    stats_.counters().relay_kept_raced.inc();
  } else {
    stats_.counters().relay_kept_short.inc();
  }
}

void Worker::armRelayPoll(uint32_t slot, bool client_side) {
  Connection& conn = slots_[slot];
  // POLLERR and POLLHUP always count; POLLRDHUP until that side's FIN was seen. Never POLLIN:
  // the kernel wakes a relayed socket's readers after every redirected skb (docs/PROXY.md,
  // "Kernel relay"), so it would cost a wake-up and a re-arm per request, for nothing. A reader
  // that falls behind is reported through the ring buffer instead (pauseKernelRelay).
  const Direction& from = client_side ? conn.request : conn.response;
  const uint32_t events = from.eof ? 0 : POLLRDHUP;
  ring_.poll(client_side ? conn.client_fd : conn.upstream_fd, events,
             track(client_side ? Op::kRelayPollClient : Op::kRelayPollUpstream, slot));
  conn.relay_poll[client_side ? 0 : 1] = true;
}

void Worker::onRelayPoll(uint32_t slot, bool client_side, const loop::Completion& c) {
  Connection& conn = slots_[slot];
  conn.relay_poll[client_side ? 0 : 1] = false;
  if (conn.state != State::kKernel || c.res == -ECANCELED) return;
  const int fd = client_side ? conn.client_fd : conn.upstream_fd;
  const uint32_t events = c.res < 0 ? POLLERR : static_cast<uint32_t>(c.res);
  if ((events & POLLERR) != 0 || socketError(fd) != 0) {
    // A reset (or another error) on one side: the other side is reset too, as the io_uring
    // relay does. Bytes the kernel still held for the failed side are lost with it.
    (client_side ? stats_.counters().resets_from_client : stats_.counters().resets_from_upstream)
        .inc();
    closeConnection(slot, client_side ? "client_reset" : "upstream_reset", /*reset=*/true);
    return;
  }
  Direction& from = client_side ? conn.request : conn.response;
  const bool was_eof = from.eof;
  if ((events & (POLLRDHUP | POLLHUP)) != 0 && !from.eof) {
    from.eof = true;
    conn.last_activity = now_;
    if (conn.half_closed == std::chrono::steady_clock::time_point{}) conn.half_closed = now_;
  }
  relayProgress(slot);
  if (conn.state != State::kKernel) return;
  // After HUP the socket has nothing more to say; after a FIN, io_uring reports RDHUP again at
  // once (it always watches for it), so the socket is not watched again: a reset after its FIN
  // shows when the other direction ends or the timeouts fire.
  if ((events & POLLHUP) != 0 || was_eof || from.eof) return;
  armRelayPoll(slot, client_side);
}

void Worker::relayProgress(uint32_t slot) {
  Connection& conn = slots_[slot];
  if (conn.state != State::kKernel) return;  // a drain timer that outlived the relay
  bool waiting = false;
  for (bool from_client : {true, false}) {
    Direction& d = from_client ? conn.request : conn.response;
    if (!d.eof || d.shut_sent) continue;
    const int to_fd = from_client ? conn.upstream_fd : conn.client_fd;
    const uint64_t cookie = from_client ? conn.relay.client_cookie : conn.relay.upstream_cookie;
    // The FIN must not overtake bytes the kernel redirected but has not yet queued on the peer.
    // TCP's count includes what the io_uring relay wrote before a mid-stream hand-over.
    const uint64_t before = conn.relay_user_written[from_client ? 0 : 1];
    if (tcpBytesWritten(to_fd, /*connected=*/from_client) <
        before + conn.relay_maps->redirected(cookie)) {
      waiting = true;
      continue;
    }
    ::shutdown(to_fd, SHUT_WR);
    d.shut_sent = true;
    d.shut_done = true;
  }
  if (conn.request.shut_sent && conn.response.shut_sent) {
    closeConnection(slot, "ok");
    return;
  }
  if (waiting) armRelayDrain(slot);
}

void Worker::armRelayDrain(uint32_t slot) {
  Connection& conn = slots_[slot];
  if (conn.relay_drain_armed) return;
  conn.relay_drain_wait = std::clamp(conn.relay_drain_wait * 2, kFirstDrainWait, kMaxDrainWait);
  ring_.timeout(conn.relay_drain_wait, track(Op::kRelayDrain, slot));
  conn.relay_drain_armed = true;
}

void Worker::armRelayEvents() {
  if (relay_events_ == settings_.kernel_relay || !settings_.kernel_relay) return;
  // The maps are opened once per process, so this runs once per worker.
  relay_events_ = settings_.kernel_relay;
  if (index_ == 0) armRelayEvent(/*ring=*/true);
  armRelayEvent(/*ring=*/false);
}

void Worker::armRelayEvent(bool ring) {
  if (ring) {
    ring_.poll(relay_events_->ringFd(), POLLIN, tag(Op::kRelayRing, 0, 0));
  } else {
    ring_.read(relay_events_->wakeFd(index_),
               {reinterpret_cast<char*>(&relay_wake_value_), sizeof(relay_wake_value_)},
               tag(Op::kRelayWake, 0, 0));
  }
}

void Worker::onRelayEvents(bool ring, const loop::Completion& c) {
  if (!relay_events_) return;
  if (ring) {
    // Every worker's records go to its mailbox, this one's included.
    if (c.res >= 0) relay_events_->drainRing();
  } else {
    for (const RelayEvent& event : relay_events_->takeEvents(index_)) {
      pauseKernelRelay(event.slot, event.cookie);
    }
  }
  armRelayEvent(ring);
}

void Worker::pauseKernelRelay(uint32_t slot, uint64_t cookie) {
  if (slot >= slots_.size()) return;
  Connection& conn = slots_[slot];
  // The pair may have closed since (the slot is another connection's now, or free).
  if (conn.state != State::kKernel ||
      (conn.relay.client_cookie != cookie && conn.relay.upstream_cookie != cookie)) {
    return;
  }
  // A high SO_RCVLOWAT first, taken under each socket's lock: a data-ready that runs the
  // verdict while the socket leaves the sockhash finds the program gone and drops the skb
  // (sk_psock_verdict_recv). With the mark, TCP calls data-ready only under memory pressure or
  // a nearly closed window, and the check in releaseHeld resets the pair if it happened.
  for (int fd : {conn.client_fd, conn.upstream_fd}) {
    ::setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &kRelayHoldBytes, sizeof(kRelayHoldBytes));
  }
  if (!conn.relay_maps->stopVerdicts(conn.relay)) {
    spdlog::warn("kernel relay: a pair whose reader fell behind could not leave the sockhash ({})",
                 std::strerror(errno));
  }
  cancelRelayPolls(slot);
  stats_.counters().relay_backpressure_pauses.inc();
  conn.relay_paused = true;
  conn.adaptive = false;
  conn.state = State::kRelaying;
  conn.last_activity = now_;
  conn.relay_drain_wait = std::chrono::milliseconds(0);
  for (Direction* d : {&conn.request, &conn.response}) {
    if (d->shut_sent) continue;  // that direction is over
    d->eof = false;              // its FIN, if one came, is read again after its bytes
    d->kernel_held = true;
  }
  SPDLOG_DEBUG("kernel relay: a reader fell behind; slot {} goes to the io_uring relay", slot);
  // Not at once: a verdict already running when the sockets left the sockhash may still be
  // counting its skb, which releaseHeld's check would read as lost. The drain timer's first
  // wait (1 ms) lets it finish.
  armRelayDrain(slot);
}

void Worker::releaseHeld(uint32_t slot) {
  Connection& conn = slots_[slot];
  if (conn.state != State::kRelaying || !conn.relay_paused) return;  // closed meanwhile
  // No poll watches a held socket: a reset while its reader stalls shows here.
  for (bool client_side : {true, false}) {
    if (socketError(client_side ? conn.client_fd : conn.upstream_fd) == 0) continue;
    (client_side ? stats_.counters().resets_from_client : stats_.counters().resets_from_upstream)
        .inc();
    closeConnection(slot, client_side ? "client_reset" : "upstream_reset", /*reset=*/true);
    return;
  }
  const RelayMaps& maps = *conn.relay_maps;
  bool waiting = false;
  for (bool from_client : {true, false}) {
    Direction& d = from_client ? conn.request : conn.response;
    if (!d.kernel_held) continue;
    const int from_fd = from_client ? conn.client_fd : conn.upstream_fd;
    const int to_fd = from_client ? conn.upstream_fd : conn.client_fd;
    const uint64_t redirected =
        maps.redirected(from_client ? conn.relay.client_cookie : conn.relay.upstream_cookie);
    // What the io_uring relay read and wrote this way before the hand-over to the kernel.
    const uint64_t before = conn.relay_user_written[from_client ? 0 : 1];
    // The io_uring relay may write here only after every redirected byte did.
    if (tcpBytesWritten(to_fd, /*connected=*/from_client) < before + redirected) {
      waiting = true;
      continue;
    }
    // Everything the sending socket's TCP let go of was redirected (or read before the
    // hand-over): otherwise bytes were dropped while the verdict was being stopped, and
    // relaying on would leave a hole in the stream.
    const int64_t consumed = tcpBytesConsumed(from_fd);
    if (consumed < 0) {  // bytes were still arriving: count again at the next tick
      waiting = true;
      continue;
    }
    if (consumed != static_cast<int64_t>(before + redirected)) {
      stats_.counters().relay_pause_losses.inc();
      spdlog::warn(
          "kernel relay: bytes were lost while a pair left the kernel path (the {} socket let go "
          "of {} bytes, {} were relayed); the connection is reset",
          from_client ? "client" : "upstream", consumed, before + redirected);
      closeConnection(slot, from_client ? "client_reset" : "upstream_reset", /*reset=*/true);
      return;
    }
    const int one = 1;
    ::setsockopt(from_fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
    d.kernel_held = false;
    maybeArmRecv(slot, from_client);
  }
  if (waiting) armRelayDrain(slot);
}

void Worker::cancelRelayPolls(uint32_t slot) {
  Connection& conn = slots_[slot];
  for (bool client_side : {true, false}) {
    if (!conn.relay_poll[client_side ? 0 : 1]) continue;
    // A pending poll holds the file: without the cancel, a reset close would not reset.
    ring_.cancel(target(client_side ? Op::kRelayPollClient : Op::kRelayPollUpstream, slot),
                 track(Op::kTeardown, slot));
    conn.relay_poll[client_side ? 0 : 1] = false;
  }
}

void Worker::countKernelBytes(Connection& conn, const RelayBytes& bytes) {
  conn.request_bytes += bytes.from_client;
  conn.response_bytes += bytes.from_upstream;
  if (conn.counters != nullptr) {
    conn.counters->received_bytes.add(bytes.from_client);
    conn.counters->sent_bytes.add(bytes.from_upstream);
  }
}

void Worker::finishKernelRelay(uint32_t slot) {
  Connection& conn = slots_[slot];
  cancelRelayPolls(slot);
  // The sockets close next (closeConnection): release leaves their sockhash entries to the
  // close. The benchmark switch `relay-detach` deletes them here, as before.
  static const bool full_detach = loop::uringAbSwitch("relay-detach");
  const RelayBytes bytes =
      full_detach ? conn.relay_maps->detach(conn.relay) : conn.relay_maps->release(conn.relay);
  // Only a relayed or a paused pair has maps: either way the kernel's bytes are counted once,
  // here.
  countKernelBytes(conn, bytes);
  conn.relay_maps.reset();
  conn.relay = RelayPair{};
  // closeConnection goes on from the relaying state (a paused pair is in it already).
  conn.state = State::kRelaying;
}

bool Worker::kernelRelayMoved(uint32_t slot) {
  Connection& conn = slots_[slot];
  const uint64_t now = conn.relay_maps->redirected(conn.relay.client_cookie) +
                       conn.relay_maps->redirected(conn.relay.upstream_cookie);
  const bool moved = now != conn.relay_seen_bytes;
  conn.relay_seen_bytes = now;
  return moved;
}

}  // namespace remora::proxy
