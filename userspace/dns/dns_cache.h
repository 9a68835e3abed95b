#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "dns/resolver.h"

namespace remora::dns {

struct DnsCacheOptions {
  // A record's TTL is clamped to [min_refresh, max_refresh] to decide when to ask again.
  std::chrono::seconds min_refresh{5};
  std::chrono::seconds max_refresh{300};
  // How long after its refresh time a last good answer may still be served while refreshes
  // fail. Past this bound the host fails.
  std::chrono::seconds max_stale{600};
};

// What lookup() returns.
struct CachedAnswer {
  Resolved resolved;
  // True when the last refresh failed and this is the last good answer; stale_error then says
  // why the refresh failed.
  bool stale = false;
  std::string stale_error;
  // When this host will be asked again (the clamped TTL, or min_refresh after a failure).
  std::chrono::steady_clock::time_point refresh_at;
};

// A TTL-bounded cache of resolved names, in front of any resolve function (usually
// Resolver::resolve). Thread-safe: one mutex guards the entries, and it is not held while
// resolving, so a slow name does not block lookups of cached ones.
//
// A failure is remembered as well: a host that has never resolved fails again without a query
// until min_refresh has passed, so repeated config loads do not hammer a broken server.
class DnsCache {
 public:
  using Clock = std::chrono::steady_clock;
  using ResolveFn = std::function<Result<Resolved>(std::string_view host)>;
  using NowFn = std::function<Clock::time_point()>;

  explicit DnsCache(ResolveFn resolve, DnsCacheOptions options = {}, NowFn now = &Clock::now);

  // The cached answer while fresh; otherwise resolves (outside the lock) and caches the result.
  // On a failed refresh, serves the last good answer marked stale for up to max_stale; past
  // that, or with no good answer ever, returns the resolve error.
  Result<CachedAnswer> lookup(std::string_view host);

  // The earliest refresh time of all entries (nullopt when empty): when the control thread
  // should call refreshDue() and rebuild tables whose answers changed.
  std::optional<Clock::time_point> nextRefresh() const;

  // Hosts whose refresh time has passed; call lookup() on each to refresh them.
  std::vector<std::string> dueHosts() const;

  // Drops hosts no longer named by any config, so they stop being refreshed.
  void retainOnly(const std::vector<std::string>& hosts);

  size_t size() const;

 private:
  struct Entry {
    std::optional<Resolved> good;  // last good answer
    Clock::time_point good_until;  // refresh time of the good answer
    std::string error;             // last failure, empty when the last resolve succeeded
    Clock::time_point refresh_at;  // when to ask again
  };

  std::chrono::seconds clampTtl(std::chrono::seconds ttl) const;

  ResolveFn resolve_;
  DnsCacheOptions options_;
  NowFn now_;
  mutable std::mutex mutex_;
  std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace remora::dns
