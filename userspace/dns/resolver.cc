#include "dns/resolver.h"

#include <ares.h>
#include <fmt/format.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

namespace remora::dns {
namespace {

// ares_library_init is reference counted; the library stays initialized while any channel
// exists. On Linux it does no real work, but c-ares documents it as required.
class LibraryInit {
 public:
  LibraryInit() : status_(ares_library_init(ARES_LIB_INIT_ALL)) {}
  ~LibraryInit() {
    if (status_ == ARES_SUCCESS) ares_library_cleanup();
  }
  LibraryInit(const LibraryInit&) = delete;
  LibraryInit& operator=(const LibraryInit&) = delete;
  int status() const { return status_; }

 private:
  int status_;
};

int libraryStatus() {
  static LibraryInit init;
  return init.status();
}

// The DNS outcome behind a c-ares status, in the words an operator knows.
std::string describeStatus(int status) {
  const char* what = nullptr;
  switch (status) {
    case ARES_ENOTFOUND:
      what = "NXDOMAIN";
      break;
    case ARES_ENODATA:
      what = "NODATA";
      break;
    case ARES_ESERVFAIL:
      what = "SERVFAIL";
      break;
    case ARES_EREFUSED:
      what = "REFUSED";
      break;
    case ARES_ETIMEOUT:
      what = "timeout";
      break;
    case ARES_ECONNREFUSED:
      // c-ares 1.18 also ends here when every server replied REFUSED or SERVFAIL.
      what = "no server gave an answer (connection refused, or a REFUSED/SERVFAIL reply)";
      break;
    case ARES_EFORMERR:
      what = "FORMERR";
      break;
    case ARES_ENOTIMP:
      what = "NOTIMP";
      break;
    case ARES_EBADRESP:
      what = "bad response";
      break;
    default:
      break;
  }
  if (what == nullptr) return ares_strerror(status);
  return fmt::format("{} ({})", what, ares_strerror(status));
}

struct Pending {
  bool done = false;
  int status = ARES_SUCCESS;
  ares_addrinfo* result = nullptr;
};

void onAddrinfo(void* arg, int status, int /*timeouts*/, ares_addrinfo* result) {
  auto* pending = static_cast<Pending*>(arg);
  pending->done = true;
  pending->status = status;
  pending->result = result;
}

Result<Resolved> literal(const IpAddress& ip, std::string_view host, AddressFamilies families) {
  bool wanted = families == AddressFamilies::kBoth ||
                (families == AddressFamilies::kIpv4) == (ip.family == Family::kIpv4);
  if (!wanted) {
    return makeError(fmt::format("resolving '{}': it is an IPv{} address, but only IPv{} was asked",
                                 host, ip.family == Family::kIpv4 ? 4 : 6,
                                 ip.family == Family::kIpv4 ? 6 : 4));
  }
  return Resolved{{ip}, kLiteralTtl};
}

Result<Resolved> collect(const ares_addrinfo* info, std::string_view host) {
  Resolved out;
  int min_ttl = std::numeric_limits<int>::max();
  for (const ares_addrinfo_node* node = info->nodes; node != nullptr; node = node->ai_next) {
    IpAddress ip;
    if (node->ai_family == AF_INET && node->ai_addr != nullptr) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(node->ai_addr);
      ip.family = Family::kIpv4;
      std::memcpy(ip.bytes.data(), &sin->sin_addr, 4);
    } else if (node->ai_family == AF_INET6 && node->ai_addr != nullptr) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(node->ai_addr);
      ip.family = Family::kIpv6;
      std::memcpy(ip.bytes.data(), &sin6->sin6_addr, 16);
    } else {
      continue;
    }
    out.addresses.push_back(ip);
    min_ttl = std::min(min_ttl, node->ai_ttl);
  }
  if (out.addresses.empty()) {
    return makeError(fmt::format("resolving '{}': the answer holds no address", host));
  }
  for (const ares_addrinfo_cname* cname = info->cnames; cname != nullptr; cname = cname->next) {
    min_ttl = std::min(min_ttl, cname->ttl);
  }
  std::sort(out.addresses.begin(), out.addresses.end());  // IPv4 first
  out.addresses.erase(std::unique(out.addresses.begin(), out.addresses.end()), out.addresses.end());
  out.ttl = std::chrono::seconds(std::max(min_ttl, 0));
  return out;
}

// The channel's servers as "ip:port,..." (those from resolv.conf when none were given).
std::string serversText(ares_channel channel) {
  ares_addr_port_node* servers = nullptr;
  if (ares_get_servers_ports(channel, &servers) != ARES_SUCCESS) return "the system's servers";
  std::string text;
  for (const ares_addr_port_node* node = servers; node != nullptr; node = node->next) {
    SocketAddress address;
    address.port = static_cast<uint16_t>(node->udp_port != 0 ? node->udp_port : 53);
    if (node->family == AF_INET) {
      address.ip.family = Family::kIpv4;
      std::memcpy(address.ip.bytes.data(), &node->addr.addr4, 4);
    } else if (node->family == AF_INET6) {
      address.ip.family = Family::kIpv6;
      std::memcpy(address.ip.bytes.data(), &node->addr.addr6, 16);
    } else {
      continue;
    }
    if (!text.empty()) text += ',';
    text += address.toString();
  }
  ares_free_data(servers);
  return text.empty() ? "no servers" : text;
}

}  // namespace

Result<std::unique_ptr<Resolver>> Resolver::create(ResolverOptions options) {
  if (options.timeout.count() <= 0 || options.tries <= 0 || options.deadline.count() <= 0) {
    return makeError("DNS resolver: timeout, tries and deadline must be positive");
  }
  if (options.timeout.count() > std::numeric_limits<int>::max()) {
    return makeError("DNS resolver: timeout too large");
  }
  std::string csv;
  for (const std::string& server : options.nameservers) {
    auto parsed = SocketAddress::parse(server);
    if (!parsed) {
      return makeError(fmt::format("DNS resolver: nameserver '{}' is not ip:port: {}", server,
                                   parsed.error().message));
    }
    if (!csv.empty()) csv += ',';
    csv += parsed->toString();
  }
  if (int status = libraryStatus(); status != ARES_SUCCESS) {
    return makeError(fmt::format("DNS resolver: c-ares init failed: {}", ares_strerror(status)));
  }

  ares_options opts{};
  int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
  opts.timeout = static_cast<int>(options.timeout.count());
  opts.tries = options.tries;
  // ares_options::lookups is a non-const char*; c-ares copies the string.
  char lookups[] = "b";
  if (!options.nameservers.empty()) {
    // Ask the given servers only, for the name as given: no hosts file, no search suffixes.
    mask |= ARES_OPT_LOOKUPS | ARES_OPT_DOMAINS;
    opts.lookups = lookups;
    opts.domains = nullptr;
    opts.ndomains = 0;
  }
  ares_channel channel = nullptr;
  if (int status = ares_init_options(&channel, &opts, mask); status != ARES_SUCCESS) {
    return makeError(
        fmt::format("DNS resolver: cannot set up a c-ares channel: {}", ares_strerror(status)));
  }
  if (!csv.empty()) {
    if (int status = ares_set_servers_ports_csv(channel, csv.c_str()); status != ARES_SUCCESS) {
      ares_destroy(channel);
      return makeError(fmt::format("DNS resolver: c-ares rejected nameservers '{}': {}", csv,
                                   ares_strerror(status)));
    }
  }
  auto resolver = std::unique_ptr<Resolver>(new Resolver(channel, std::move(options)));
  if (csv.empty()) {
    resolver->servers_text_ = serversText(channel);
  } else {
    resolver->servers_text_ = csv;
  }
  return resolver;
}

Resolver::Resolver(ares_channeldata* channel, ResolverOptions options)
    : channel_(channel), options_(std::move(options)) {}

Resolver::~Resolver() { ares_destroy(channel_); }

Result<Resolved> Resolver::resolve(std::string_view host, AddressFamilies families) {
  if (host.empty()) return makeError("resolving '': the host name is empty");
  if (auto ip = IpAddress::parse(host); ip) return literal(*ip, host, families);

  std::lock_guard lock(mutex_);
  std::string name(host);
  if (name.find('\0') != std::string::npos) {
    return makeError("resolving a host name that holds a NUL character");
  }
  ares_addrinfo_hints hints{};
  hints.ai_flags = ARES_AI_NOSORT;  // RFC 6724 sorting connects UDP sockets; we sort ourselves
  hints.ai_family = families == AddressFamilies::kIpv4   ? AF_INET
                    : families == AddressFamilies::kIpv6 ? AF_INET6
                                                         : AF_UNSPEC;
  Pending pending;
  ares_getaddrinfo(channel_, name.c_str(), nullptr, &hints, onAddrinfo, &pending);

  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + options_.deadline;
  bool deadline_hit = false;
  while (!pending.done) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      deadline_hit = true;
      ares_cancel(channel_);  // runs onAddrinfo with ARES_ECANCELLED
      break;
    }
    ares_socket_t socks[ARES_GETSOCK_MAXNUM];
    int bits = ares_getsock(channel_, socks, ARES_GETSOCK_MAXNUM);
    pollfd fds[ARES_GETSOCK_MAXNUM];
    nfds_t count = 0;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
      short events = 0;
      if (ARES_GETSOCK_READABLE(bits, i)) events |= POLLIN;
      if (ARES_GETSOCK_WRITABLE(bits, i)) events |= POLLOUT;
      if (events == 0) continue;
      fds[count++] = pollfd{socks[i], events, 0};
    }
    timeval max_wait{static_cast<time_t>(left.count() / 1000),
                     static_cast<suseconds_t>((left.count() % 1000) * 1000)};
    timeval storage{};
    const timeval* wait = ares_timeout(channel_, &max_wait, &storage);
    // Round up, so a timer due in 0.4 ms is not polled with 0 in a busy loop.
    int wait_ms = static_cast<int>(wait->tv_sec * 1000 + (wait->tv_usec + 999) / 1000);
    int ready = ::poll(fds, count, wait_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      Error error = errnoError(fmt::format("resolving '{}': poll", host));
      ares_cancel(channel_);
      return error;
    }
    if (ready == 0) {
      ares_process_fd(channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // timeouts and retries
      continue;
    }
    for (nfds_t i = 0; i < count; ++i) {
      if (fds[i].revents == 0) continue;
      ares_socket_t readable =
          (fds[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0 ? fds[i].fd : ARES_SOCKET_BAD;
      ares_socket_t writable = (fds[i].revents & POLLOUT) != 0 ? fds[i].fd : ARES_SOCKET_BAD;
      ares_process_fd(channel_, readable, writable);
    }
  }

  if (deadline_hit) {
    if (pending.result != nullptr) ares_freeaddrinfo(pending.result);
    return makeError(
        fmt::format("resolving '{}': timeout (no answer within the {} ms deadline) "
                    "from {}",
                    host, options_.deadline.count(), servers_text_));
  }
  if (pending.status != ARES_SUCCESS) {
    if (pending.result != nullptr) ares_freeaddrinfo(pending.result);
    return makeError(fmt::format("resolving '{}': {} from {}", host, describeStatus(pending.status),
                                 servers_text_));
  }
  Result<Resolved> out = collect(pending.result, host);
  ares_freeaddrinfo(pending.result);
  return out;
}

}  // namespace remora::dns
