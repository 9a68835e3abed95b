#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "common/ip_address.h"
#include "common/result.h"

namespace remora::proxy {

// The few socket calls the worker makes outside the ring (none of them blocks). An interface so
// the connection state machine can be unit-tested without sockets.
class SocketOps {
 public:
  virtual ~SocketOps() = default;
  // SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST of an accepted socket.
  virtual Result<SocketAddress> originalDestination(int fd, Family family) = 0;
  virtual std::optional<SocketAddress> localAddress(int fd) = 0;
  virtual std::optional<SocketAddress> peerAddress(int fd) = 0;
  // A TCP socket to connect upstream with, bound to `source` (port 0) when given. The caller
  // owns the fd.
  virtual Result<int> upstreamSocket(Family family, const std::optional<IpAddress>& source) = 0;
  // As upstreamSocket, without TCP keepalive: the L4 relay gives it (keepAlive) to connections
  // still open at its next timeout sweep (at most 1 s on), so one that ends sooner makes four
  // setsockopt calls fewer. The idle time is minutes: a probe comes at most a sweep later. The
  // default (for fakes) is upstreamSocket.
  virtual Result<int> upstreamSocketWithoutKeepalive(Family family,
                                                     const std::optional<IpAddress>& source) {
    return upstreamSocket(family, source);
  }
  // The configured TCP keepalive (setKeepalive) on `fd`; nothing when it is off.
  virtual void keepAlive(int fd) { (void)fd; }
  // TPROXY inbound: a TCP socket bound to the client's address `client` (IP_TRANSPARENT, port
  // left to connect) and marked `mark` (SO_MARK), so the app sees the client and its replies are
  // routed back here by the connmark rules. Needs CAP_NET_ADMIN. The default (for fakes) is an
  // ordinary socket bound to `client`.
  virtual Result<int> transparentUpstreamSocket(const IpAddress& client, uint32_t mark) {
    (void)mark;
    return upstreamSocket(client.family, client);
  }
  // SO_LINGER {1, 0}: the socket's close sends an RST instead of a FIN.
  virtual void setResetOnClose(int fd) = 0;
  // shutdown(SHUT_WR): the FIN after the last relayed byte. A direct call, not an io_uring
  // operation: the kernel always runs IORING_OP_SHUTDOWN on an io-wq thread (it is forced
  // async), a thread wake-up per direction of every connection. Errors (the peer reset
  // meanwhile) are ignored: the close that follows reports nothing either.
  virtual void shutdownWrite(int fd) = 0;
};

class SystemSocketOps final : public SocketOps {
 public:
  // `keepalive`: TCP keepalive idle time on upstream sockets (zero: off).
  explicit SystemSocketOps(std::chrono::seconds keepalive = std::chrono::seconds(0))
      : keepalive_(keepalive) {}
  Result<SocketAddress> originalDestination(int fd, Family family) override;
  std::optional<SocketAddress> localAddress(int fd) override;
  std::optional<SocketAddress> peerAddress(int fd) override;
  Result<int> upstreamSocket(Family family, const std::optional<IpAddress>& source) override {
    return makeUpstreamSocket(family, source, true);
  }
  Result<int> upstreamSocketWithoutKeepalive(Family family,
                                             const std::optional<IpAddress>& source) override {
    return makeUpstreamSocket(family, source, false);
  }
  void keepAlive(int fd) override;
  Result<int> transparentUpstreamSocket(const IpAddress& client, uint32_t mark) override;
  void setResetOnClose(int fd) override;
  void shutdownWrite(int fd) override;

 private:
  Result<int> makeUpstreamSocket(Family family, const std::optional<IpAddress>& source,
                                 bool keepalive);
  std::chrono::seconds keepalive_;
};

// The loop check: whether a connection accepted on a listener bound to port `listener_port`
// (0: unknown) was redirected there, or dialled at the listener itself (relaying it would loop
// into the proxy). `original` is its SO_ORIGINAL_DST. Not redirected means the original
// destination is the connection's local address on the listener's port; eBPF mode's sk_lookup
// and TPROXY steer inbound without NAT, so there the original destination is the local address
// on the app's port, which counts as redirected. `local_address` (getsockname) is called only
// when the original destination is on the listener's port: nothing is cached, so a pod address
// added or removed at any time is seen as it is.
bool wasRedirected(const SocketAddress& original, uint16_t listener_port,
                   const std::function<std::optional<SocketAddress>()>& local_address);

// SO_KEEPALIVE with TCP_KEEPIDLE = idle, TCP_KEEPINTVL = idle / 10 (at least 1 s) and
// TCP_KEEPCNT = 5: a vanished peer is noticed within 1.5 x idle. On a listener, accepted
// sockets inherit it. Zero idle: nothing is set.
void setKeepalive(int fd, std::chrono::seconds idle);

// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns "soft -> hard" for the log, or
// the reason it could not.
std::string raiseFileLimit();

// TPROXY mode's mark (init's kTproxyMark, Istio's 1337): the proxy's connections to the app
// carry it, and remora-init's rules and policy route key on it.
inline constexpr uint32_t kTproxyMark = 1337;

// A listening TCP socket with SO_REUSEPORT (one per worker) and, for IPv6, IPV6_V6ONLY so the
// IPv4 and IPv6 listeners can share the port. `transparent`: IP_TRANSPARENT, so TPROXY can hand
// it connections for any destination; without CAP_NET_ADMIN the error says so.
Result<int> openListener(const SocketAddress& at, int backlog = 4096, bool transparent = false);

// The error for a TPROXY socket option refused for want of CAP_NET_ADMIN (EPERM), naming what.
Error transparentError(int err, const std::string& what);

}  // namespace remora::proxy
