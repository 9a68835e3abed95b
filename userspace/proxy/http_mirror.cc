#include "proxy/http_mirror.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "http/codec.h"
#include "loop/user_data.h"

namespace remora::proxy {
namespace {

uint8_t opByte(MirrorOp op) { return static_cast<uint8_t>(op); }

}  // namespace

std::string shadowAuthority(std::string_view authority) {
  // A port is the digits after the last colon, unless that colon is inside an IPv6 literal.
  size_t host_end = authority.size();
  const size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']', colon) == std::string_view::npos &&
      (authority.front() == '[' || authority.find(':') == colon)) {
    host_end = colon;
  }
  std::string out(authority.substr(0, host_end));
  out += "-shadow";
  out += authority.substr(host_end);
  return out;
}

struct HttpMirror::Copy {
  int fd = -1;
  std::string service;
  std::string subset;
  std::string out;
  size_t sent = 0;
  std::unique_ptr<char[]> rbuf;
  http::Parser parser{http::Parser::Kind::kResponse};
  Clock::time_point deadline;
  sockaddr_storage sa{};
  socklen_t sa_len = 0;
  bool connected = false;
  bool ended = false;
  // Pooling: the connection's endpoint and cluster pool, the requests it carried, and whether
  // it waits in the pool (no copy on it, a read armed).
  SocketAddress endpoint;
  ClusterPool* pool = nullptr;
  uint32_t requests = 0;
  bool idle = false;
  Clock::time_point idle_since{};
  // The race retry: the copy went on a kept-alive connection, whether a byte of its response
  // came, and what a fresh attempt needs.
  bool reused = false;
  bool got_bytes = false;
  std::string method;
  std::chrono::milliseconds connect_timeout{1000};
};

HttpMirror::HttpMirror(loop::Ring& ring, SocketOps& sockets, WorkerStats& stats)
    : ring_(ring), sockets_(sockets), stats_(stats) {}

HttpMirror::~HttpMirror() {
  for (size_t i = 0; i < copies_.size(); ++i) {
    const auto slot = static_cast<uint32_t>(i);
    if (copies_.inUse(slot) && copies_[slot] && copies_[slot]->fd >= 0) ::close(copies_[slot]->fd);
  }
}

void HttpMirror::count(const std::string& service, const std::string& subset, const char* result) {
  stats_.mirrors(EndpointKey{service, subset, result}).inc();
}

void HttpMirror::send(MirrorCopy copy, Clock::time_point now) {
  now_ = now;
  if (atCap()) {
    count(copy.service, copy.subset, "dropped");
    return;
  }
  ClusterPool& pool = pools_.get(copy.service, copy.subset);
  pool.limits = copy.limits;
  if (auto idle = pool.takeIdle(copy.endpoint)) {
    // A kept-alive connection: its read is already armed and takes the response.
    const uint32_t slot = *idle;
    Copy& c = *copies_[slot];
    --idle_;
    c.idle = false;
    c.service = std::move(copy.service);
    c.subset = std::move(copy.subset);
    c.out = std::move(copy.request);
    c.sent = 0;
    c.parser = http::Parser(http::Parser::Kind::kResponse);
    c.parser.respondingTo(copy.method);
    c.deadline = now + copy.timeout;
    c.reused = true;
    c.got_bytes = false;
    c.method = std::move(copy.method);
    c.connect_timeout = copy.connect_timeout;
    ++c.requests;
    ++active_;
    ring_.send(c.fd, {c.out.data(), c.out.size()}, copies_.track(opByte(MirrorOp::kSend), slot));
    return;
  }
  const Clock::time_point deadline = now + copy.timeout;
  open(std::move(copy), deadline, "dropped");
}

void HttpMirror::open(MirrorCopy copy, Clock::time_point deadline, const char* refused) {
  ClusterPool& pool = pools_.get(copy.service, copy.subset);
  if (!pool.canOpen()) {
    count(copy.service, copy.subset, refused);
    return;
  }
  auto fd = sockets_.upstreamSocket(copy.endpoint.ip.family, std::nullopt);
  if (!fd) {
    spdlog::warn("mirror socket for {}: {}", copy.endpoint.toString(), fd.error().message);
    count(copy.service, copy.subset, refused);
    return;
  }
  auto slot = copies_.acquire();
  if (!slot) {
    ::close(*fd);
    count(copy.service, copy.subset, refused);
    return;
  }
  auto& ptr = copies_[*slot];
  if (!ptr) ptr = std::make_unique<Copy>();
  Copy& c = *ptr;
  auto rbuf = std::move(c.rbuf);
  c = Copy{};
  c.rbuf = rbuf ? std::move(rbuf) : std::make_unique<char[]>(kReadSize);
  c.fd = *fd;
  c.service = std::move(copy.service);
  c.subset = std::move(copy.subset);
  c.out = std::move(copy.request);
  c.parser.respondingTo(copy.method);
  c.method = std::move(copy.method);
  c.connect_timeout = copy.connect_timeout;
  c.deadline = deadline;
  c.sa_len = copy.endpoint.toSockaddr(c.sa);
  c.endpoint = copy.endpoint;
  c.pool = &pool;
  c.requests = 1;
  pool.opened();
  ++active_;
  ring_.connect(c.fd, reinterpret_cast<const sockaddr*>(&c.sa), c.sa_len, copy.connect_timeout,
                copies_.track(opByte(MirrorOp::kConnect), *slot));
}

void HttpMirror::onCompletion(const loop::Completion& c) {
  const loop::UserData ud = loop::UserData::decode(c.user_data);
  auto slot = copies_.resolve(ud, !c.more());
  if (!slot) {
    stats_.counters().stale_completions.inc();
    return;
  }
  switch (static_cast<MirrorOp>(ud.op)) {
    case MirrorOp::kConnect:
      onConnect(*slot, c);
      break;
    case MirrorOp::kSend:
      onSend(*slot, c);
      break;
    case MirrorOp::kRead:
      onRead(*slot, c);
      break;
    case MirrorOp::kClose:
      break;
  }
  copies_.settle(*slot);
}

void HttpMirror::onConnect(uint32_t slot, const loop::Completion& c) {
  Copy& m = *copies_[slot];
  if (m.ended) return;
  if (c.res != 0) {
    SPDLOG_DEBUG("mirror connect: {}", c.res == -ECANCELED ? "timed out" : std::strerror(-c.res));
    end(slot, "failed", false);
    return;
  }
  m.connected = true;
  ring_.send(m.fd, {m.out.data(), m.out.size()}, copies_.track(opByte(MirrorOp::kSend), slot));
  readMore(slot);  // the server may answer (and close) before the body is all sent
}

void HttpMirror::onSend(uint32_t slot, const loop::Completion& c) {
  Copy& m = *copies_[slot];
  if (m.ended) return;
  if (c.res <= 0) {
    if (!retryFresh(slot)) end(slot, "failed", true);
    return;
  }
  m.sent += static_cast<size_t>(c.res);
  if (m.sent < m.out.size()) {
    ring_.send(m.fd, {m.out.data() + m.sent, m.out.size() - m.sent},
               copies_.track(opByte(MirrorOp::kSend), slot));
  }
}

void HttpMirror::readMore(uint32_t slot) {
  Copy& m = *copies_[slot];
  ring_.read(m.fd, {m.rbuf.get(), kReadSize}, copies_.track(opByte(MirrorOp::kRead), slot));
}

// The response is parsed only to know where it ends; its bytes are dropped.
void HttpMirror::onRead(uint32_t slot, const loop::Completion& c) {
  Copy& m = *copies_[slot];
  if (m.ended) return;
  if (m.idle) {
    // Nothing is expected on an idle connection: a close, an error or stray bytes end it.
    closeIdle(slot);
    return;
  }
  if (c.res == -EINTR || c.res == -EAGAIN) {
    readMore(slot);
    return;
  }
  if (c.res <= 0) {
    const bool complete = c.res == 0 && m.parser.finish().event == http::Event::kMessageComplete;
    if (!complete && retryFresh(slot)) return;
    end(slot, complete ? "ok" : "failed", c.res < 0);
    return;
  }
  m.got_bytes = true;
  std::string_view rest(m.rbuf.get(), static_cast<size_t>(c.res));
  while (true) {
    const http::Step step = m.parser.feed(rest);
    rest.remove_prefix(step.consumed);
    switch (step.event) {
      case http::Event::kNeedMore:
        readMore(slot);
        return;
      case http::Event::kHead:
      case http::Event::kBody:
        continue;
      case http::Event::kMessageComplete:
        // An interim 1xx ends its own message; the final response follows on the same parser.
        if (m.parser.head().status() >= 200 || m.parser.head().status() == 101) {
          if (rest.empty() && m.parser.head().status() != 101) {
            finished(slot);
          } else {
            end(slot, "ok", false);
          }
          return;
        }
        continue;
      case http::Event::kError:
        end(slot, "failed", true);
        return;
    }
  }
}

bool HttpMirror::retryFresh(uint32_t slot) {
  Copy& m = *copies_[slot];
  if (!m.reused || m.got_bytes || m.pool == nullptr) return false;
  // The old connection keeps its slot until its close completes, so the new one would be one
  // past the cap.
  if (atCap()) return false;
  MirrorCopy copy;
  copy.endpoint = m.endpoint;
  copy.service = m.service;
  copy.subset = m.subset;
  copy.method = m.method;
  copy.request = m.out;  // copied: a send still in flight may read the old buffer
  copy.connect_timeout = m.connect_timeout;
  const Clock::time_point deadline = m.deadline;
  stats_.counters().http_reset_race_retry.inc();
  SPDLOG_DEBUG(
      "mirror copy to {}: kept-alive connection closed before any response byte, "
      "sent again on a fresh one",
      m.endpoint.toString());
  end(slot, nullptr, true);
  open(std::move(copy), deadline, "failed");
  return true;
}

void HttpMirror::finished(uint32_t slot) {
  Copy& m = *copies_[slot];
  const bool keep = m.pool != nullptr && m.sent == m.out.size() && m.parser.head().keepAlive() &&
                    m.pool->reusable(m.requests) && idle_ < max_in_flight_;
  if (!keep) {
    end(slot, "ok", false);
    return;
  }
  count(m.service, m.subset, "ok");
  --active_;
  ++idle_;
  m.idle = true;
  m.idle_since = now_;
  std::string().swap(m.out);
  m.pool->putIdle(m.endpoint, slot);
  readMore(slot);
}

void HttpMirror::closeIdle(uint32_t slot) {
  Copy& m = *copies_[slot];
  m.pool->removeIdle(m.endpoint, slot);
  m.idle = false;
  --idle_;
  ++active_;  // end() counts it down again
  end(slot, nullptr, false);
}

void HttpMirror::end(uint32_t slot, const char* result, bool reset) {
  Copy& m = *copies_[slot];
  if (m.ended) return;
  m.ended = true;
  --active_;
  if (result != nullptr) count(m.service, m.subset, result);
  if (m.pool != nullptr) {
    m.pool->closed();
    m.pool = nullptr;
  }
  if (m.fd >= 0) {
    // Pending reads and sends end with the close: shutdown wakes them.
    if (reset || !m.connected || m.sent < m.out.size()) sockets_.setResetOnClose(m.fd);
    if (m.connected) {
      ring_.shutdownAndClose(m.fd, copies_.track(opByte(MirrorOp::kClose), slot, 2));
    } else {
      ring_.cancel(copies_.userData(opByte(MirrorOp::kConnect), slot),
                   copies_.track(opByte(MirrorOp::kClose), slot));
      ring_.close(m.fd, copies_.track(opByte(MirrorOp::kClose), slot));
    }
    m.fd = -1;
  }
  copies_.release(slot);
}

void HttpMirror::onTick(Clock::time_point now) {
  now_ = now;
  for (size_t i = 0; i < copies_.size(); ++i) {
    const auto slot = static_cast<uint32_t>(i);
    if (!copies_.inUse(slot) || copies_.released(slot)) continue;
    Copy& m = *copies_[slot];
    if (m.idle) {
      if (m.pool->idleExpired(m.idle_since, now)) closeIdle(slot);
    } else if (now >= m.deadline) {
      end(slot, "timeout", true);
    }
  }
}

void HttpMirror::abortAll() {
  for (size_t i = 0; i < copies_.size(); ++i) {
    const auto slot = static_cast<uint32_t>(i);
    if (!copies_.inUse(slot) || copies_.released(slot)) continue;
    if (copies_[slot]->idle) {
      closeIdle(slot);
    } else {
      end(slot, nullptr, true);
    }
  }
}

}  // namespace remora::proxy
