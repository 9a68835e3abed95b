#pragma once

// remora_dns: name resolution for ServiceEntry `resolution: DNS` and WorkloadEntry hostnames.
//
// Contract
// - Resolver wraps one c-ares channel. resolve() blocks the calling thread until the answer,
//   an error, or ResolverOptions::deadline, whichever comes first; it drives c-ares' own sockets
//   with poll() and starts no thread. Call it from a control thread, never from a data-path
//   worker. Calls on one Resolver are serialized by a mutex (c-ares 1.18 channels are not
//   thread-safe), so concurrent callers wait for each other.
// - A and AAAA are asked together (AddressFamilies::kBoth) or alone. The answer's addresses are
//   sorted (IPv4 first) and deduplicated, so two answers with the same records compare equal.
//   Resolved::ttl is the smallest TTL of every record in the answer, CNAMEs included.
// - An IP literal ("10.0.0.1", "fd00::1") resolves to itself without a query, with kLiteralTtl.
// - Failures are Results whose message names the host, the DNS outcome (NXDOMAIN, NODATA,
//   SERVFAIL, REFUSED, timeout, connection refused...) and the name servers asked. With c-ares
//   1.18 (Debian 12), a REFUSED or SERVFAIL reply and an ICMP "port unreachable" give the same
//   status, and the message says so.
// - ResolverOptions::nameservers replaces the system's servers (for tests, or a mesh-wide DNS);
//   with it set, /etc/hosts and resolv.conf search domains are not used either, so the name is
//   asked exactly as given. Left empty, /etc/resolv.conf (servers, search, ndots) and the
//   hosts file apply as for any program on the machine.
// - DnsCache (dns_cache.h) adds TTL-bounded caching, stale answers on failed refreshes and the
//   refresh schedule on top of any resolve function, usually Resolver::resolve.

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_address.h"
#include "common/result.h"

struct ares_channeldata;  // c-ares' channel; ares.h stays out of this header

namespace remora::dns {

// What a name resolved to.
struct Resolved {
  std::vector<IpAddress> addresses;  // sorted, IPv4 first, no duplicates; never empty
  std::chrono::seconds ttl{0};       // smallest TTL of the answer's records
  bool operator==(const Resolved&) const = default;
};

// The TTL given to an IP literal, which needs no refresh (DnsCache clamps it to max_refresh).
inline constexpr std::chrono::seconds kLiteralTtl = std::chrono::hours(24);

enum class AddressFamilies { kBoth, kIpv4, kIpv6 };

struct ResolverOptions {
  // "ip:port" strings ("127.0.0.1:5353", "[::1]:53"); empty: the system's /etc/resolv.conf.
  std::vector<std::string> nameservers;
  // How long the first try waits for an answer before the next; c-ares doubles it on each
  // later round (2 tries of 300 ms give up after about 900 ms), and `deadline` caps the total.
  std::chrono::milliseconds timeout{2000};
  // Tries per server.
  int tries = 2;
  // Hard bound on one resolve() call, whatever the servers do.
  std::chrono::milliseconds deadline{10000};
};

class Resolver {
 public:
  // Fails on a malformed nameserver, a non-positive timeout/tries/deadline, or when c-ares
  // cannot set up its channel (for example an unreadable resolv.conf).
  static Result<std::unique_ptr<Resolver>> create(ResolverOptions options = {});
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Resolves `host` (A and/or AAAA). Blocks up to options.deadline; see the contract above.
  Result<Resolved> resolve(std::string_view host,
                           AddressFamilies families = AddressFamilies::kBoth);

  const ResolverOptions& options() const { return options_; }

 private:
  Resolver(ares_channeldata* channel, ResolverOptions options);

  ares_channeldata* channel_;
  ResolverOptions options_;
  std::string servers_text_;  // for error messages
  std::mutex mutex_;
};

}  // namespace remora::dns
