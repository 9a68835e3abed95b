#include "proxy/kernel_relay.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "remora_abi.h"

namespace remora::proxy {
namespace {

static_assert(sizeof(remora_relay_peer) == 40, "bpf/remora_abi.h: struct remora_relay_peer");
static_assert(sizeof(remora_relay_event) == 16, "bpf/remora_abi.h: struct remora_relay_event");

// Closes the fds it holds when it goes out of scope (the probe's sockets).
class FdSet {
 public:
  FdSet() { fds_.fill(-1); }
  ~FdSet() {
    for (int fd : fds_) {
      if (fd >= 0) ::close(fd);
    }
  }
  FdSet(const FdSet&) = delete;
  FdSet& operator=(const FdSet&) = delete;
  int& operator[](size_t i) { return fds_[i]; }

 private:
  std::array<int, 6> fds_{};
};

Result<uint64_t> socketCookie(int fd) {
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0) {
    return errnoError("getsockopt(SO_COOKIE)");
  }
  return cookie;
}

// A connected loopback pair (client end, accepted end) for the probe.
Result<void> loopbackPair(int& client, int& accepted) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return errnoError("probe socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(address);
  const bool listening =
      ::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      ::listen(listener, 1) == 0 &&
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &len) == 0;
  if (!listening) {
    auto error = errnoError("probe listener on 127.0.0.1");
    ::close(listener);
    return error;
  }
  client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (client < 0 ||
      ::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    auto error = errnoError("probe connect on 127.0.0.1");
    ::close(listener);
    return error;
  }
  accepted = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(listener);
  if (accepted < 0) return errnoError("probe accept");
  return {};
}

}  // namespace

Result<RelayMode> parseRelayMode(std::string_view text) {
  if (text == "auto") return RelayMode::kAuto;
  if (text == "kernel") return RelayMode::kKernel;
  if (text == "uring") return RelayMode::kUring;
  return makeError(fmt::format("'{}': expected auto, kernel or uring", text));
}

const char* relayModeName(RelayMode mode) {
  switch (mode) {
    case RelayMode::kAuto:
      return "auto";
    case RelayMode::kKernel:
      return "kernel";
    case RelayMode::kUring:
      return "uring";
  }
  return "auto";
}

Result<std::shared_ptr<RelayMaps>> RelayMaps::open(const std::string& pin_dir, unsigned workers) {
  std::shared_ptr<RelayMaps> maps(new RelayMaps());
  const std::array<std::pair<const char*, int*>, 5> pins{{{kRelaySocksPin, &maps->socks_},
                                                          {kRelayPeersPin, &maps->peers_},
                                                          {kRelayCountersPin, &maps->counters_},
                                                          {kRelayTargetsPin, &maps->targets_},
                                                          {kRelayEventsPin, &maps->events_}}};
  for (const auto& [name, fd] : pins) {
    const std::string path = pin_dir + "/" + name;
    *fd = bpf_obj_get(path.c_str());
    if (*fd < 0) {
      return errnoError(
          fmt::format("opening the pinned map {} (remora-init relay install "
                      "pins it for the proxy's uid)",
                      path));
    }
  }
  maps->ring_ = ring_buffer__new(
      maps->events_,
      [](void* ctx, void* data, size_t size) {
        if (size < sizeof(remora_relay_event)) return 0;
        remora_relay_event record{};
        std::memcpy(&record, data, sizeof(record));
        const auto* self = static_cast<const RelayMaps*>(ctx);
        if (record.owner >= self->mailboxes_.size()) return 0;  // not a worker of this proxy
        Mailbox& box = *self->mailboxes_[record.owner];
        {
          std::lock_guard<std::mutex> lock(box.mu);
          box.events.push_back(RelayEvent{record.cookie, record.slot});
        }
        const uint64_t one = 1;
        (void)!::write(box.wake_fd, &one, sizeof(one));
        return 0;
      },
      maps.get(), nullptr);
  if (maps->ring_ == nullptr) {
    return errnoError(
        fmt::format("reading the relay's ring buffer {}/{}", pin_dir, kRelayEventsPin));
  }
  for (unsigned i = 0; i < workers; ++i) {
    auto box = std::make_unique<Mailbox>();
    box->wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (box->wake_fd < 0) return errnoError("eventfd for the relay's events");
    maps->mailboxes_.push_back(std::move(box));
  }
  // Prove the whole path on loopback: insertion as this uid, the attached verdict program, the
  // redirect. 0,1: client -> proxy; 2,3: proxy -> backend; the proxy's ends are 1 and 2.
  FdSet s;
  if (auto r = loopbackPair(s[0], s[1]); !r) return r.error();
  if (auto r = loopbackPair(s[2], s[3]); !r) return r.error();
  auto pair = maps->attach(s[1], s[2], 0, RelayOwner{});
  if (!pair) return pair.error();
  const char kByte = 'r';
  char got = 0;
  pollfd pfd{s[3], POLLIN, 0};
  const bool carried = ::send(s[0], &kByte, 1, MSG_NOSIGNAL) == 1 && ::poll(&pfd, 1, 1000) == 1 &&
                       ::recv(s[3], &got, 1, MSG_DONTWAIT) == 1 && got == kByte;
  maps->detach(*pair);
  if (!carried) {
    return makeError(
        fmt::format("the relay in {} did not carry a probe byte on loopback (is the "
                    "verdict program attached to its sockhash?)",
                    pin_dir));
  }
  return maps;
}

RelayMaps::~RelayMaps() {
  if (ring_ != nullptr) ring_buffer__free(ring_);
  for (const auto& box : mailboxes_) ::close(box->wake_fd);
  for (int fd : {socks_, peers_, counters_, targets_, events_}) {
    if (fd >= 0) ::close(fd);
  }
}

int RelayMaps::wakeFd(unsigned worker) const {
  return worker < mailboxes_.size() ? mailboxes_[worker]->wake_fd : -1;
}

void RelayMaps::drainRing() const {
  std::lock_guard<std::mutex> lock(ring_mu_);
  (void)ring_buffer__consume(ring_);
}

std::vector<RelayEvent> RelayMaps::takeEvents(unsigned worker) const {
  std::vector<RelayEvent> events;
  if (worker >= mailboxes_.size()) return events;
  Mailbox& box = *mailboxes_[worker];
  uint64_t count = 0;
  (void)!::read(box.wake_fd, &count, sizeof(count));
  std::lock_guard<std::mutex> lock(box.mu);
  events.swap(box.events);
  return events;
}

Result<RelayPair> RelayMaps::attach(int client_fd, int upstream_fd, uint32_t limit,
                                    RelayOwner owner) const {
  auto client = socketCookie(client_fd);
  if (!client) return client.error();
  auto upstream = socketCookie(upstream_fd);
  if (!upstream) return upstream.error();
  RelayPair pair{*client, *upstream};
  remora_relay_peer to_upstream{};
  to_upstream.peer_cookie = pair.upstream_cookie;
  to_upstream.limit = limit;
  to_upstream.owner = owner.worker;
  to_upstream.slot = owner.slot;
  remora_relay_peer to_client = to_upstream;
  to_client.peer_cookie = pair.client_cookie;
  if (bpf_map_update_elem(peers_, &pair.client_cookie, &to_upstream, BPF_NOEXIST) != 0) {
    return errnoError("relay peers map update");
  }
  if (bpf_map_update_elem(peers_, &pair.upstream_cookie, &to_client, BPF_NOEXIST) != 0) {
    auto error = errnoError("relay peers map update");
    bpf_map_delete_elem(peers_, &pair.client_cookie);
    return error;
  }
  // The peers entries come first, so no byte is passed to the proxy in between.
  const uint64_t client_value = static_cast<uint64_t>(client_fd);
  const uint64_t upstream_value = static_cast<uint64_t>(upstream_fd);
  // Until the client's socket is in the sockhash too, a byte the upstream sends would be
  // redirected to a peer that is not there: the redirect fails and the byte is dropped (a
  // server that speaks first at connect, or a response while --relay auto hands a pair over
  // mid-stream). A high SO_RCVLOWAT keeps the upstream's data-ready, which runs the verdict,
  // from firing until the nudge below (tcp_data_ready; only memory pressure or a window under
  // one MSS would run it earlier). Bytes arriving at the client's socket before its insertion
  // wait in its queue for the same nudge.
  const int one = 1;
  if (::setsockopt(upstream_fd, SOL_SOCKET, SO_RCVLOWAT, &kRelayHoldBytes,
                   sizeof(kRelayHoldBytes)) != 0) {
    auto error = errnoError("setsockopt(SO_RCVLOWAT) before the relay insertion");
    detach(pair);
    return error;
  }
  // The targets first: a socket there has no program, so nothing changes for it yet.
  if (bpf_map_update_elem(targets_, &pair.upstream_cookie, &upstream_value, BPF_NOEXIST) != 0 ||
      bpf_map_update_elem(targets_, &pair.client_cookie, &client_value, BPF_NOEXIST) != 0 ||
      bpf_map_update_elem(socks_, &pair.upstream_cookie, &upstream_value, BPF_NOEXIST) != 0 ||
      bpf_map_update_elem(socks_, &pair.client_cookie, &client_value, BPF_NOEXIST) != 0) {
    auto error = errnoError("relay sockhash update");
    detach(pair);
    // The io_uring relay goes on with this socket: its readiness must not wait for the mark.
    ::setsockopt(upstream_fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
    return error;
  }
  // Bytes that arrived before the insertion wait in the receive queue until the next
  // data-ready; setting SO_RCVLOWAT runs it now (tcp_set_rcvlowat), so they go out in order.
  for (int fd : {client_fd, upstream_fd}) {
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one)) != 0) {
      auto error = errnoError("setsockopt(SO_RCVLOWAT) after the relay insertion");
      detach(pair);
      return error;
    }
  }
  return pair;
}

bool RelayMaps::stopVerdicts(const RelayPair& pair) const {
  bool ok = true;
  for (uint64_t cookie : {pair.client_cookie, pair.upstream_cookie}) {
    if (bpf_map_delete_elem(socks_, &cookie) != 0 && errno != ENOENT) ok = false;
  }
  return ok;
}

uint64_t RelayMaps::redirected(uint64_t cookie) const {
  remora_relay_peer peer{};
  if (bpf_map_lookup_elem(peers_, &cookie, &peer) != 0) return 0;
  return peer.bytes;
}

RelayBytes RelayMaps::detach(const RelayPair& pair) const {
  RelayBytes bytes{redirected(pair.client_cookie), redirected(pair.upstream_cookie)};
  for (uint64_t cookie : {pair.client_cookie, pair.upstream_cookie}) {
    bpf_map_delete_elem(socks_, &cookie);
    bpf_map_delete_elem(targets_, &cookie);
    bpf_map_delete_elem(peers_, &cookie);
  }
  return bytes;
}

RelayBytes RelayMaps::release(const RelayPair& pair) const {
  auto take = [this](uint64_t cookie) -> uint64_t {
    remora_relay_peer peer{};
    if (bpf_map_lookup_and_delete_elem(peers_, &cookie, &peer) == 0) return peer.bytes;
    // A kernel without lookup-and-delete on hash maps (before 5.14): two calls.
    if (errno != ENOENT && bpf_map_lookup_elem(peers_, &cookie, &peer) == 0) {
      bpf_map_delete_elem(peers_, &cookie);
      return peer.bytes;
    }
    return 0;
  };
  // Without its peers entry a socket's bytes stay with it (the program passes them) until the
  // close, exactly as after detach. The sockets leave both sockhashes at their close.
  const uint64_t from_client = take(pair.client_cookie);
  const uint64_t from_upstream = take(pair.upstream_cookie);
  return RelayBytes{from_client, from_upstream};
}

uint64_t tcpBytesWritten(int fd, bool connected) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  int outq = 0;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
      ::ioctl(fd, SIOCOUTQ, &outq) != 0) {
    return 0;
  }
  const uint64_t acked = info.tcpi_bytes_acked - (connected && info.tcpi_bytes_acked > 0 ? 1 : 0);
  return acked + static_cast<uint64_t>(outq);
}

int64_t tcpBytesConsumed(int fd) {
  // Bytes still arriving change the count between the calls below: bytes_received is read
  // before and after, and the answer stands only if it did not move.
  auto received = [fd]() -> int64_t {
    tcp_info info{};
    socklen_t len = sizeof(info);
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -1;
    return static_cast<int64_t>(info.tcpi_bytes_received);
  };
  const int64_t before = received();
  // What waits in the receive queue. Not SIOCINQ: on a socket in a sockmap it counts the
  // sockmap's own queue (tcp_bpf_ioctl). A peek with MSG_TRUNC counts TCP's queue and copies
  // nothing (tcp_recvmsg); an empty queue answers EAGAIN, or 0 after a FIN.
  const ssize_t queued = ::recv(fd, nullptr, INT32_MAX, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
  if (queued < 0 && errno != EAGAIN) return -1;
  // bytes_received counts the FIN's sequence number too, once it arrived: then the socket's
  // receive side is shut (POLLRDHUP), whatever its state now (after TIME_WAIT the socket itself
  // reads TCP_CLOSE).
  pollfd pfd{fd, POLLRDHUP, 0};
  const bool fin = ::poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLRDHUP) != 0;
  if (before < 0 || received() != before) return -1;
  return before - std::max<ssize_t>(queued, 0) - (fin ? 1 : 0);
}

}  // namespace remora::proxy
