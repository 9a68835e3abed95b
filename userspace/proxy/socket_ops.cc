#include "proxy/socket_ops.h"

#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/original_dst.h"
#include "loop/ring.h"

namespace remora::proxy {
namespace {

std::optional<SocketAddress> nameOf(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                : getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0) return std::nullopt;
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss));
}

}  // namespace

bool wasRedirected(const SocketAddress& original, uint16_t listener_port,
                   const std::function<std::optional<SocketAddress>()>& local_address) {
  // Not redirected needs local == original on the listener's port: a destination on any other
  // port is redirected whatever the local address is, so getsockname is needed only for a
  // destination on the listener's port (someone dialled 15001 or 15006 directly, or an
  // upstream listens on that port). The benchmark switch `getsockname` asks every time, as
  // before issue 12.
  static const bool always_ask = loop::uringAbSwitch("getsockname");
  if (listener_port != 0 && original.port != listener_port && !always_ask) return true;
  const auto local = local_address();
  return !(local && *local == original && (listener_port == 0 || local->port == listener_port));
}

Result<SocketAddress> SystemSocketOps::originalDestination(int fd, Family family) {
  return remora::originalDestination(fd, family);
}

std::optional<SocketAddress> SystemSocketOps::localAddress(int fd) { return nameOf(fd, false); }
std::optional<SocketAddress> SystemSocketOps::peerAddress(int fd) { return nameOf(fd, true); }

Result<int> SystemSocketOps::makeUpstreamSocket(Family family,
                                                const std::optional<IpAddress>& source,
                                                bool keepalive) {
  int domain = family == Family::kIpv6 ? AF_INET6 : AF_INET;
  int fd = socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errnoError("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (keepalive) setKeepalive(fd, keepalive_);
  if (source) {
    // ::6 is usually not configured on lo; freebind lets the bind succeed regardless (no
    // capability needed), and the kernel answers from it because the destination is local.
    if (family == Family::kIpv6) setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one));
    // Keep the ephemeral port unassigned until connect, so 4-tuples can share it.
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    sockaddr_storage ss{};
    socklen_t len = SocketAddress{*source, 0}.toSockaddr(ss);
    if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
      Error e = errnoError(fmt::format("bind upstream source {}", source->toString()));
      ::close(fd);
      return e;
    }
  }
  return fd;
}

void SystemSocketOps::setResetOnClose(int fd) {
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

void SystemSocketOps::shutdownWrite(int fd) { ::shutdown(fd, SHUT_WR); }

void SystemSocketOps::keepAlive(int fd) { setKeepalive(fd, keepalive_); }

void setKeepalive(int fd, std::chrono::seconds idle) {
  if (idle.count() <= 0) return;
  int one = 1;
  int idle_s = static_cast<int>(idle.count());
  int interval = std::max(1, idle_s / 10);
  int count = 5;
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof(idle_s));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
}

std::string raiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
    return fmt::format("getrlimit: {}", std::strerror(errno));
  const rlim_t before = lim.rlim_cur;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
      return fmt::format("{} (raising to {} failed: {})", before, lim.rlim_max,
                         std::strerror(errno));
    }
  }
  return fmt::format("{} -> {}", before, lim.rlim_cur);
}

Error transparentError(int err, const std::string& what) {
  if (err == EPERM) {
    return makeError(fmt::format(
        "{}: IP_TRANSPARENT needs CAP_NET_ADMIN (--inbound-interception-mode TPROXY; grant the "
        "proxy CAP_NET_ADMIN or use REDIRECT, see docs/INTERCEPTION.md)",
        what));
  }
  errno = err;
  return errnoError(what);
}

// IP_TRANSPARENT (IPV6_TRANSPARENT) on `fd`; 0 or the errno.
static int setTransparent(int fd, Family family) {
  int one = 1;
  int rc = family == Family::kIpv6
               ? setsockopt(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, &one, sizeof(one))
               : setsockopt(fd, IPPROTO_IP, IP_TRANSPARENT, &one, sizeof(one));
  return rc == 0 ? 0 : errno;
}

Result<int> SystemSocketOps::transparentUpstreamSocket(const IpAddress& client, uint32_t mark) {
  int domain = client.family == Family::kIpv6 ? AF_INET6 : AF_INET;
  int fd = socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errnoError("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setKeepalive(fd, keepalive_);
  auto fail = [&](Error e) {
    ::close(fd);
    return e;
  };
  if (int err = setTransparent(fd, client.family); err != 0) {
    return fail(transparentError(err, "upstream socket toward the app"));
  }
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
    return fail(transparentError(errno, "SO_MARK on the upstream socket toward the app"));
  }
  setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
  sockaddr_storage ss{};
  socklen_t len = SocketAddress{client, 0}.toSockaddr(ss);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    return fail(errnoError(fmt::format("bind upstream source {} (the client)", client.toString())));
  }
  return fd;
}

Result<int> openListener(const SocketAddress& at, int backlog, bool transparent) {
  bool v6 = at.ip.family == Family::kIpv6;
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errnoError("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (v6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (transparent) {
    if (int err = setTransparent(fd, at.ip.family); err != 0) {
      ::close(fd);
      return transparentError(err, fmt::format("inbound listener {}", at.toString()));
    }
  }
  sockaddr_storage ss{};
  socklen_t len = at.toSockaddr(ss);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(fd, backlog) != 0) {
    Error e = errnoError(fmt::format("listen on {}", at.toString()));
    ::close(fd);
    return e;
  }
  return fd;
}

}  // namespace remora::proxy
