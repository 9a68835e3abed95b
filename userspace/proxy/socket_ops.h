#pragma once

#include <chrono>
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
  // SO_LINGER {1, 0}: the socket's close sends an RST instead of a FIN.
  virtual void setResetOnClose(int fd) = 0;
};

class SystemSocketOps final : public SocketOps {
 public:
  // `keepalive`: TCP keepalive idle time on upstream sockets (zero: off).
  explicit SystemSocketOps(std::chrono::seconds keepalive = std::chrono::seconds(0))
      : keepalive_(keepalive) {}
  Result<SocketAddress> originalDestination(int fd, Family family) override;
  std::optional<SocketAddress> localAddress(int fd) override;
  std::optional<SocketAddress> peerAddress(int fd) override;
  Result<int> upstreamSocket(Family family, const std::optional<IpAddress>& source) override;
  void setResetOnClose(int fd) override;

 private:
  std::chrono::seconds keepalive_;
};

// SO_KEEPALIVE with TCP_KEEPIDLE = idle, TCP_KEEPINTVL = idle / 10 (at least 1 s) and
// TCP_KEEPCNT = 5: a vanished peer is noticed within 1.5 x idle. On a listener, accepted
// sockets inherit it. Zero idle: nothing is set.
void setKeepalive(int fd, std::chrono::seconds idle);

// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns "soft -> hard" for the log, or
// the reason it could not.
std::string raiseFileLimit();

// A listening TCP socket with SO_REUSEPORT (one per worker) and, for IPv6, IPV6_V6ONLY so the
// IPv4 and IPv6 listeners can share the port.
Result<int> openListener(const SocketAddress& at, int backlog = 4096);

}  // namespace remora::proxy
