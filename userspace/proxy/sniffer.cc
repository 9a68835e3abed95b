#include "proxy/sniffer.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "http/codec.h"
#include "loop/user_data.h"
#include "proxy/tls_connection.h"

namespace remora::proxy {
namespace {

uint8_t opByte(SniffOp op) { return static_cast<uint8_t>(op); }

bool mtlsPossible(security::MtlsMode mode) {
  return mode == security::MtlsMode::kStrict || mode == security::MtlsMode::kPermissive;
}

}  // namespace

AlpnVerdict meshAlpnVerdict(const std::vector<std::string>& offered) {
  for (const std::string& p : offered) {
    if (p == "istio-http/1.0" || p == "istio-http/1.1") return AlpnVerdict::kHttp;
    if (p == "istio" || p == "istio-peer-exchange" || p == "istio-h2") return AlpnVerdict::kTcp;
  }
  return AlpnVerdict::kUnknown;
}

struct Sniffer::Pending {
  int fd = -1;
  uint32_t listener = 0;
  SocketAddress original_dst;
  std::string bytes;  // plaintext (decrypted once TLS is established)
  std::unique_ptr<char[]> rbuf;
  bool reading = false;
  bool timer_armed = false;
  bool timed_out = false;
  bool done = false;
  security::MtlsMode mtls = security::MtlsMode::kDisable;
  Sniffed::Transport transport = Sniffed::Transport::kUndecided;
  std::chrono::steady_clock::time_point started;
  size_t received = 0;  // bytes read from the client, ciphertext included
  // When the wait ends: the first bytes' detection timeout, or the handshake's (ClientHello
  // included). The timer re-arms itself until then.
  std::chrono::steady_clock::time_point deadline;
  std::chrono::steady_clock::time_point armed_until;  // the deadline the timer in flight is for
  std::unique_ptr<tls::TlsStream> stream;
  bool handshake_done = false;
  std::string out;      // ciphertext for the client, not yet sent
  std::string sending;  // the ciphertext of the send in flight
  bool writing = false;
  bool finishing = false;  // decided, waiting for `sending` and `out` to go
  Sniffed::Verdict verdict = Sniffed::Verdict::kTcp;
};

Sniffer::Sniffer(loop::Ring& ring, WorkerStats& stats, Done done, MakeServerStream make_server,
                 Closed closed)
    : ring_(ring),
      stats_(stats),
      done_(std::move(done)),
      make_server_(std::move(make_server)),
      closed_(std::move(closed)) {}

Sniffer::~Sniffer() {
  for (size_t i = 0; i < pending_.size(); ++i) {
    const auto slot = static_cast<uint32_t>(i);
    if (pending_.inUse(slot) && pending_[slot] && pending_[slot]->fd >= 0) {
      ::close(pending_[slot]->fd);
    }
  }
}

void Sniffer::start(int fd, uint32_t listener, const SocketAddress& original_dst,
                    std::chrono::milliseconds timeout, security::MtlsMode mtls) {
  auto slot = pending_.acquire();
  if (!slot) {
    ::close(fd);
    stats_.counters().accept_errors.inc();
    return;
  }
  auto& ptr = pending_[*slot];
  if (!ptr) ptr = std::make_unique<Pending>();
  Pending& p = *ptr;
  auto rbuf = std::move(p.rbuf);
  p = Pending{};
  p.rbuf = rbuf ? std::move(rbuf) : std::make_unique<char[]>(kMaxBytes);
  p.fd = fd;
  p.listener = listener;
  p.original_dst = original_dst;
  p.mtls = mtls;
  p.started = std::chrono::steady_clock::now();
  p.deadline = p.started + timeout;
  p.armed_until = p.deadline;
  p.timer_armed = true;
  ring_.timeout(timeout, pending_.track(opByte(SniffOp::kTimer), *slot));
  read(*slot);
}

void Sniffer::read(uint32_t slot) {
  Pending& p = *pending_[slot];
  p.reading = true;
  // Over TLS the read buffer holds ciphertext and the plaintext grows elsewhere.
  const size_t room = p.stream ? kMaxBytes : kMaxBytes - p.bytes.size();
  ring_.read(p.fd, {p.rbuf.get(), room}, pending_.track(opByte(SniffOp::kRead), slot));
}

void Sniffer::onCompletion(const loop::Completion& c) {
  const loop::UserData ud = loop::UserData::decode(c.user_data);
  auto slot = pending_.resolve(ud, !c.more());
  if (!slot) {
    stats_.counters().stale_completions.inc();
    return;
  }
  switch (static_cast<SniffOp>(ud.op)) {
    case SniffOp::kRead:
      onRead(*slot, c);
      break;
    case SniffOp::kTimer:
      onTimer(*slot, c);
      break;
    case SniffOp::kWrite:
      onWrite(*slot, c);
      break;
    case SniffOp::kCancel:
      break;
  }
  pending_.settle(*slot);
}

void Sniffer::onRead(uint32_t slot, const loop::Completion& c) {
  Pending& p = *pending_[slot];
  p.reading = false;
  if (p.done) return;
  if (c.res > 0) {
    p.received += static_cast<size_t>(c.res);
    const std::string_view got(p.rbuf.get(), static_cast<size_t>(c.res));
    if (p.transport == Sniffed::Transport::kUndecided && mtlsPossible(p.mtls) &&
        !decideTransport(slot, got.front())) {
      return;
    }
    if (p.stream) {
      onTlsBytes(slot, got);
      return;
    }
    p.bytes.append(got);
    sniffBytes(slot);
    return;
  }
  if ((c.res == -EINTR || c.res == -EAGAIN) && !p.timed_out) {
    read(slot);
    return;
  }
  if (p.stream && !p.handshake_done) {
    // Gone (or cancelled) before the handshake was done: the app never hears of it.
    closeNow(slot, /*reset=*/true, "tls_handshake_incomplete");
    return;
  }
  if (p.transport == Sniffed::Transport::kUndecided && p.mtls == security::MtlsMode::kPermissive) {
    // Closed or silent before a first byte: plaintext as far as PERMISSIVE can tell, and the
    // app may speak first.
    p.transport = Sniffed::Transport::kPlaintext;
    tls::TlsCounters::inc(tls::counters().permissive_plaintext);
  }
  // The timeout's cancel (-ECANCELED), the client's close or an error: the L4 relay sees the
  // rest (the close or the error again) itself.
  decide(slot, p.timed_out ? Sniffed::Verdict::kTimeout : Sniffed::Verdict::kTcp);
}

bool Sniffer::decideTransport(uint32_t slot, char first) {
  Pending& p = *pending_[slot];
  const bool is_tls = p.mtls == security::MtlsMode::kPermissive ? permissiveDetectsTls(first)
                                                                : first == kTlsHandshakeRecord;
  if (!is_tls) {
    if (p.mtls == security::MtlsMode::kStrict) {
      // As the L4 path counts a plaintext client of a STRICT port.
      tls::TlsCounters::inc(tls::counters().plaintext_refused);
      tls::TlsCounters::inc(tls::counters().failed_handshake);
      closeNow(slot, /*reset=*/true, "tls_handshake_failed");
      return false;
    }
    p.transport = Sniffed::Transport::kPlaintext;
    return true;
  }
  p.transport = Sniffed::Transport::kTls;
  p.stream = make_server_ ? make_server_(p.mtls) : nullptr;
  if (!p.stream) {
    closeNow(slot, /*reset=*/true, "tls_no_identity");
    return false;
  }
  p.deadline = std::chrono::steady_clock::now() + kHandshakeTimeout;
  return true;
}

void Sniffer::onTlsBytes(uint32_t slot, std::string_view bytes) {
  Pending& p = *pending_[slot];
  const Result<void> r = p.stream->receive({bytes.data(), bytes.size()}, p.bytes);
  p.stream->takeCiphertext(p.out);
  if (!r) {
    if (tlsLogAllowed()) spdlog::warn("inbound {} (sniffing)", r.error().message);
    closeNow(slot, /*reset=*/true, tlsOutcome(p.stream->failure()));
    return;
  }
  if (p.stream->passedThrough()) {
    // PERMISSIVE, no Istio ALPN: the client's own TLS, relayed to the app untouched at L4.
    p.bytes = p.stream->takeReceived();
    p.stream.reset();
    p.transport = Sniffed::Transport::kTlsPassedThrough;
    decide(slot, Sniffed::Verdict::kTcp);
    return;
  }
  flushTls(slot);
  if (!p.stream->established()) {
    read(slot);
    return;
  }
  // Decided by the ALPN as soon as the handshake is done, as Istio's filter chains are.
  p.handshake_done = true;
  decide(slot, meshAlpnVerdict(p.stream->offeredAlpn()) == AlpnVerdict::kHttp
                   ? Sniffed::Verdict::kHttp
                   : Sniffed::Verdict::kTcp);
}

void Sniffer::sniffBytes(uint32_t slot) {
  Pending& p = *pending_[slot];
  switch (http::sniffRequest(p.bytes)) {
    case http::Sniff::kHttp:
      decide(slot, Sniffed::Verdict::kHttp);
      return;
    case http::Sniff::kNotHttp:
      decide(slot, Sniffed::Verdict::kTcp);
      return;
    case http::Sniff::kNeedMore:
      break;
  }
  if (p.timed_out) {
    decide(slot, Sniffed::Verdict::kTimeout);
  } else if (p.bytes.size() >= kMaxBytes) {
    decide(slot, Sniffed::Verdict::kTcp);
  } else {
    read(slot);
  }
}

void Sniffer::flushTls(uint32_t slot) {
  Pending& p = *pending_[slot];
  if (p.writing || p.out.empty()) return;
  p.sending.swap(p.out);
  p.out.clear();
  p.writing = true;
  ring_.send(p.fd, {p.sending.data(), p.sending.size()},
             pending_.track(opByte(SniffOp::kWrite), slot));
}

void Sniffer::onWrite(uint32_t slot, const loop::Completion& c) {
  Pending& p = *pending_[slot];
  p.writing = false;
  if (p.done) return;
  if (c.res < 0) {
    if (c.res == -EINTR || c.res == -EAGAIN) {
      p.out.insert(0, p.sending);
    } else {
      closeNow(slot, /*reset=*/true, "tls_handshake_incomplete");  // the client is gone
      return;
    }
  } else if (static_cast<size_t>(c.res) < p.sending.size()) {
    p.out.insert(0, p.sending.substr(static_cast<size_t>(c.res)));
  }
  p.sending.clear();
  flushTls(slot);
  if (p.finishing && !p.writing) finish(slot, p.verdict);
}

void Sniffer::onTimer(uint32_t slot, const loop::Completion& /*c*/) {
  Pending& p = *pending_[slot];
  p.timer_armed = false;
  if (p.done || p.finishing) return;
  if (p.deadline > p.armed_until) {
    // A TLS handshake moved the deadline: wait on (rounded up, so the timer never spins).
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(p.deadline - std::chrono::steady_clock::now());
    if (left.count() > 0) {
      p.armed_until = p.deadline;
      p.timer_armed = true;
      ring_.timeout(left, pending_.track(opByte(SniffOp::kTimer), slot));
      return;
    }
  }
  if (p.stream && !p.handshake_done) {
    if (tlsLogAllowed()) spdlog::warn("inbound TLS handshake not done in time (sniffing)");
    tls::TlsCounters::inc(tls::counters().failed_handshake);
    closeNow(slot, /*reset=*/true, "tls_handshake_timeout");
    return;
  }
  // Stop waiting; the read's completion (cancelled, or bytes that raced in) decides.
  p.timed_out = true;
  if (p.reading) {
    ring_.cancel(pending_.userData(opByte(SniffOp::kRead), slot),
                 pending_.track(opByte(SniffOp::kCancel), slot));
  } else {
    decide(slot, Sniffed::Verdict::kTimeout);
  }
}

void Sniffer::decide(uint32_t slot, Sniffed::Verdict verdict) {
  Pending& p = *pending_[slot];
  if (p.writing || !p.out.empty()) {
    // The handshake's last bytes (or session tickets) go out before anyone else sends.
    p.finishing = true;
    p.verdict = verdict;
    flushTls(slot);
    return;
  }
  finish(slot, verdict);
}

void Sniffer::finish(uint32_t slot, Sniffed::Verdict verdict) {
  Pending& p = *pending_[slot];
  p.done = true;
  if (p.timer_armed) {
    ring_.cancel(pending_.userData(opByte(SniffOp::kTimer), slot),
                 pending_.track(opByte(SniffOp::kCancel), slot));
  }
  switch (verdict) {
    case Sniffed::Verdict::kHttp:
      stats_.counters().sniff_http.inc();
      break;
    case Sniffed::Verdict::kTcp:
      stats_.counters().sniff_tcp.inc();
      break;
    case Sniffed::Verdict::kTimeout:
      stats_.counters().sniff_timeout.inc();
      break;
  }
  Sniffed out;
  out.verdict = verdict;
  out.fd = p.fd;
  out.listener = p.listener;
  out.original_dst = p.original_dst;
  out.bytes = std::move(p.bytes);
  out.transport = p.transport;
  out.tls = std::move(p.stream);
  p.fd = -1;
  pending_.release(slot);
  done_(std::move(out));
}

void Sniffer::closeNow(uint32_t slot, bool reset, const char* outcome) {
  Pending& p = *pending_[slot];
  p.done = true;
  if (closed_ && p.fd >= 0) {
    closed_(SniffClosed{p.fd, p.listener, p.original_dst, outcome, p.received, p.started});
  }
  p.stream.reset();
  if (p.timer_armed) {
    ring_.cancel(pending_.userData(opByte(SniffOp::kTimer), slot),
                 pending_.track(opByte(SniffOp::kCancel), slot));
  }
  if (p.fd >= 0) {
    if (reset) {
      // SO_LINGER {1, 0}: the close sends an RST, as the L4 path's refusals do.
      const linger l{1, 0};
      (void)::setsockopt(p.fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
      stats_.counters().resets_sent.inc();
    }
    // The pending read and send end with the close (cancelled first).
    if (p.reading) {
      ring_.cancel(pending_.userData(opByte(SniffOp::kRead), slot),
                   pending_.track(opByte(SniffOp::kCancel), slot));
    }
    if (p.writing) {
      ring_.cancel(pending_.userData(opByte(SniffOp::kWrite), slot),
                   pending_.track(opByte(SniffOp::kCancel), slot));
    }
    ring_.close(p.fd, pending_.track(opByte(SniffOp::kCancel), slot));
    p.fd = -1;
    stats_.counters().closed.inc();
  }
  pending_.release(slot);
}

void Sniffer::abortAll() {
  for (size_t i = 0; i < pending_.size(); ++i) {
    const auto slot = static_cast<uint32_t>(i);
    if (!pending_.inUse(slot) || pending_.released(slot)) continue;
    closeNow(slot, /*reset=*/false, "aborted");
  }
}

}  // namespace remora::proxy
