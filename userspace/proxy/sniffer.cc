#include "proxy/sniffer.h"

#include <unistd.h>

#include <cerrno>

#include "http/codec.h"
#include "loop/user_data.h"

namespace remora::proxy {
namespace {

uint8_t opByte(SniffOp op) { return static_cast<uint8_t>(op); }

}  // namespace

struct Sniffer::Pending {
  int fd = -1;
  uint32_t listener = 0;
  SocketAddress original_dst;
  std::string bytes;
  std::unique_ptr<char[]> rbuf;
  bool reading = false;
  bool timer_armed = false;
  bool timed_out = false;
  bool done = false;
};

Sniffer::Sniffer(loop::Ring& ring, WorkerStats& stats, Done done)
    : ring_(ring), stats_(stats), done_(std::move(done)) {}

Sniffer::~Sniffer() {
  for (size_t i = 0; i < pending_.size(); ++i) {
    const auto slot = static_cast<uint32_t>(i);
    if (pending_.inUse(slot) && pending_[slot] && pending_[slot]->fd >= 0) {
      ::close(pending_[slot]->fd);
    }
  }
}

void Sniffer::start(int fd, uint32_t listener, const SocketAddress& original_dst,
                    std::chrono::milliseconds timeout) {
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
  p.timer_armed = true;
  ring_.timeout(timeout, pending_.track(opByte(SniffOp::kTimer), *slot));
  read(*slot);
}

void Sniffer::read(uint32_t slot) {
  Pending& p = *pending_[slot];
  p.reading = true;
  ring_.read(p.fd, {p.rbuf.get(), kMaxBytes - p.bytes.size()},
             pending_.track(opByte(SniffOp::kRead), slot));
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
    p.bytes.append(p.rbuf.get(), static_cast<size_t>(c.res));
    switch (http::sniffRequest(p.bytes)) {
      case http::Sniff::kHttp:
        finish(slot, Sniffed::Verdict::kHttp);
        return;
      case http::Sniff::kNotHttp:
        finish(slot, Sniffed::Verdict::kTcp);
        return;
      case http::Sniff::kNeedMore:
        break;
    }
    if (p.timed_out) {
      finish(slot, Sniffed::Verdict::kTimeout);
    } else if (p.bytes.size() >= kMaxBytes) {
      finish(slot, Sniffed::Verdict::kTcp);
    } else {
      read(slot);
    }
    return;
  }
  if ((c.res == -EINTR || c.res == -EAGAIN) && !p.timed_out) {
    read(slot);
    return;
  }
  // The timeout's cancel (-ECANCELED), the client's close or an error: the L4 relay sees the
  // rest (the close or the error again) itself.
  finish(slot, p.timed_out ? Sniffed::Verdict::kTimeout : Sniffed::Verdict::kTcp);
}

void Sniffer::onTimer(uint32_t slot, const loop::Completion& /*c*/) {
  Pending& p = *pending_[slot];
  p.timer_armed = false;
  if (p.done) return;
  // Stop waiting; the read's completion (cancelled, or bytes that raced in) decides.
  p.timed_out = true;
  if (p.reading) {
    ring_.cancel(pending_.userData(opByte(SniffOp::kRead), slot),
                 pending_.track(opByte(SniffOp::kCancel), slot));
  } else {
    finish(slot, Sniffed::Verdict::kTimeout);
  }
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
  p.fd = -1;
  pending_.release(slot);
  done_(std::move(out));
}

void Sniffer::abortAll() {
  for (size_t i = 0; i < pending_.size(); ++i) {
    const auto slot = static_cast<uint32_t>(i);
    if (!pending_.inUse(slot) || pending_.released(slot)) continue;
    Pending& p = *pending_[slot];
    p.done = true;
    if (p.timer_armed) {
      ring_.cancel(pending_.userData(opByte(SniffOp::kTimer), slot),
                   pending_.track(opByte(SniffOp::kCancel), slot));
    }
    if (p.fd >= 0) {
      // The pending read ends with the close (cancelled first).
      if (p.reading) {
        ring_.cancel(pending_.userData(opByte(SniffOp::kRead), slot),
                     pending_.track(opByte(SniffOp::kCancel), slot));
      }
      ring_.close(p.fd, pending_.track(opByte(SniffOp::kCancel), slot));
      p.fd = -1;
      stats_.counters().closed.inc();
    }
    pending_.release(slot);
  }
}

}  // namespace remora::proxy
