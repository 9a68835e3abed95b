// remora-probe: the TCP/HTTP server and client that end-to-end tests run inside pods.
//   remora-probe serve --listen IP:PORT [--reply TEXT] [--http] [--echo]
//     Prints "ready" once listening. Answers each connection with
//     "TEXT orig=ORIGINAL_DST local=LOCAL peer=PEER" (raw) or an HTTP 200 whose body is TEXT.
//     --echo (raw): first reads until the client's EOF, then appends " echo=BYTES" to the line.
//     The original destination comes from SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST ("none" when
//     the connection was not redirected).
//   remora-probe connect IP:PORT [--timeout-ms N] [--send TEXT] [--bind SOURCE_IP]
//     Connects, sends TEXT if given, prints everything received until EOF; exit 1 on failure.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/ip_address.h"
#include "common/original_dst.h"

namespace {

using remora::SocketAddress;

std::string arg(const std::vector<std::string>& args, const std::string& name,
                const std::string& fallback = {}) {
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == name) return args[i + 1];
  }
  return fallback;
}

bool has(const std::vector<std::string>& args, const std::string& name) {
  for (const auto& a : args) {
    if (a == name) return true;
  }
  return false;
}

std::string addressOf(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                : getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0) return "none";
  auto sa = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss));
  return sa ? sa->toString() : "none";
}

std::string originalDst(int fd, bool v6) {
  auto dst = remora::originalDestination(fd, v6 ? remora::Family::kIpv6 : remora::Family::kIpv4);
  // conntrack answers for any tracked connection; only a rewritten destination counts.
  if (!dst || dst->toString() == addressOf(fd, false)) return "none";
  return dst->toString();
}

void serveOne(int fd, bool v6, bool http, bool echo, const std::string& reply) {
  std::string line = reply + " orig=" + originalDst(fd, v6) + " local=" + addressOf(fd, false) +
                     " peer=" + addressOf(fd, true);
  if (echo && !http) {
    std::string got;
    char buf[4096];
    ssize_t n = 0;
    while ((n = read(fd, buf, sizeof(buf))) > 0) got.append(buf, static_cast<size_t>(n));
    line += " echo=" + got;
  }
  std::string out = line + "\n";
  if (http) {
    std::string request;
    char buf[4096];
    while (request.find("\r\n\r\n") == std::string::npos) {
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
    }
    std::string body = reply + "\n";
    out = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
          std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  }
  if (write(fd, out.data(), out.size()) < 0) perror("write");
  shutdown(fd, SHUT_WR);
  char drain[256];
  while (read(fd, drain, sizeof(drain)) > 0) {
  }
  close(fd);
  // stdout is non-blocking while serving (see serve()): a test that floods the server does not
  // read the lines, and a blocked write would park every serving thread, until the machine
  // runs out of PIDs. A line that does not fit the pipe is dropped.
  std::string text = line + "\n";
  if (::write(STDOUT_FILENO, text.data(), text.size()) < 0 && errno != EAGAIN) perror("stdout");
}

int serve(const std::vector<std::string>& args) {
  auto listen_at = SocketAddress::parse(arg(args, "--listen"));
  if (!listen_at) {
    std::fprintf(stderr, "serve: --listen: %s\n", listen_at.error().message.c_str());
    return 2;
  }
  bool v6 = listen_at->ip.family == remora::Family::kIpv6;
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (v6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  sockaddr_storage ss{};
  socklen_t len = listen_at->toSockaddr(ss);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(fd, 128) != 0) {
    std::perror("serve: bind/listen");
    return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  fcntl(STDOUT_FILENO, F_SETFL, fcntl(STDOUT_FILENO, F_GETFL) | O_NONBLOCK);
  std::string reply = arg(args, "--reply", "hello");
  bool http = has(args, "--http");
  bool echo = has(args, "--echo");
  while (true) {
    int c = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    // Under a connection flood the thread limit can be hit for a moment (EAGAIN); serve that
    // one connection inline rather than dying, which would fail the test for the harness's
    // sake, not the proxy's.
    try {
      std::thread(serveOne, c, v6, http, echo, reply).detach();
    } catch (const std::system_error& e) {
      std::fprintf(stderr, "serve: no thread (%s); serving inline\n", e.what());
      serveOne(c, v6, http, echo, reply);
    }
  }
}

int connectTo(const std::vector<std::string>& args) {
  auto target = SocketAddress::parse(args.size() > 1 ? args[1] : "");
  if (!target) {
    std::fprintf(stderr, "connect: %s\n", target.error().message.c_str());
    return 2;
  }
  int timeout_ms = std::stoi(arg(args, "--timeout-ms", "3000"));
  int fd = socket(target->ip.family == remora::Family::kIpv6 ? AF_INET6 : AF_INET,
                  SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string bind_ip = arg(args, "--bind");
  if (!bind_ip.empty()) {
    auto ip = remora::IpAddress::parse(bind_ip);
    if (!ip) {
      std::fprintf(stderr, "connect: --bind: %s\n", ip.error().message.c_str());
      return 2;
    }
    sockaddr_storage bs{};
    socklen_t blen = remora::SocketAddress{*ip, 0}.toSockaddr(bs);
    if (bind(fd, reinterpret_cast<sockaddr*>(&bs), blen) != 0) {
      std::perror("connect: bind");
      return 1;
    }
  }
  sockaddr_storage ss{};
  socklen_t len = target->toSockaddr(ss);
  if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    std::fprintf(stderr, "connect %s: %s\n", target->toString().c_str(), std::strerror(errno));
    return 1;
  }
  std::string send_text = arg(args, "--send");
  if (!send_text.empty() && write(fd, send_text.data(), send_text.size()) < 0) return 1;
  shutdown(fd, SHUT_WR);
  char buf[4096];
  std::string got;
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      std::fprintf(stderr, "read: %s\n", std::strerror(errno));
      return 1;
    }
    if (n == 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  std::fwrite(got.data(), 1, got.size(), stdout);
  return got.empty() ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  // A client (or a proxy denying it) may reset before the reply is written: that write must
  // fail with EPIPE on its own thread, not end the whole server with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  if (!args.empty() && args[0] == "serve") return serve(args);
  if (!args.empty() && args[0] == "connect") return connectTo(args);
  std::fprintf(stderr,
               "usage: remora-probe serve --listen IP:PORT [--reply TEXT] [--http]\n"
               "       remora-probe connect IP:PORT [--timeout-ms N] [--send TEXT]\n");
  return 2;
}
