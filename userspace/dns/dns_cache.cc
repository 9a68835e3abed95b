#include "dns/dns_cache.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <utility>

namespace remora::dns {

DnsCache::DnsCache(ResolveFn resolve, DnsCacheOptions options, NowFn now)
    : resolve_(std::move(resolve)), options_(options), now_(std::move(now)) {
  options_.min_refresh = std::max(options_.min_refresh, std::chrono::seconds(1));
  options_.max_refresh = std::max(options_.max_refresh, options_.min_refresh);
  options_.max_stale = std::max(options_.max_stale, std::chrono::seconds(0));
}

std::chrono::seconds DnsCache::clampTtl(std::chrono::seconds ttl) const {
  return std::clamp(ttl, options_.min_refresh, options_.max_refresh);
}

Result<CachedAnswer> DnsCache::lookup(std::string_view host) {
  // The answer an entry gives as it stands.
  auto fromEntry = [this](const Entry& entry, Clock::time_point now) -> Result<CachedAnswer> {
    if (entry.error.empty()) return CachedAnswer{*entry.good, false, {}, entry.refresh_at};
    if (!entry.good) return makeError(entry.error);
    if (now <= entry.good_until + options_.max_stale) {
      return CachedAnswer{*entry.good, true, entry.error, entry.refresh_at};
    }
    return makeError(fmt::format(
        "{}; the last good answer expired {} s ago, past the {} s bound for serving stale answers",
        entry.error,
        std::chrono::duration_cast<std::chrono::seconds>(now - entry.good_until).count(),
        options_.max_stale.count()));
  };

  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(host);
    Clock::time_point now = now_();
    if (it != entries_.end() && now < it->second.refresh_at) return fromEntry(it->second, now);
  }

  Result<Resolved> resolved = resolve_(host);

  std::lock_guard lock(mutex_);
  Clock::time_point now = now_();
  Entry& entry = entries_[std::string(host)];
  if (resolved.ok()) {
    entry.good = std::move(resolved.value());
    entry.good_until = now + clampTtl(entry.good->ttl);
    entry.refresh_at = entry.good_until;
    entry.error.clear();
    return fromEntry(entry, now);
  }
  entry.refresh_at = now + options_.min_refresh;
  entry.error = resolved.error().message;
  return fromEntry(entry, now);
}

std::optional<DnsCache::Clock::time_point> DnsCache::nextRefresh() const {
  std::lock_guard lock(mutex_);
  std::optional<Clock::time_point> next;
  for (const auto& [host, entry] : entries_) {
    if (!next || entry.refresh_at < *next) next = entry.refresh_at;
  }
  return next;
}

std::vector<std::string> DnsCache::dueHosts() const {
  std::lock_guard lock(mutex_);
  Clock::time_point now = now_();
  std::vector<std::string> due;
  for (const auto& [host, entry] : entries_) {
    if (entry.refresh_at <= now) due.push_back(host);
  }
  return due;
}

void DnsCache::retainOnly(const std::vector<std::string>& hosts) {
  std::set<std::string, std::less<>> keep(hosts.begin(), hosts.end());
  std::lock_guard lock(mutex_);
  for (auto it = entries_.begin(); it != entries_.end();) {
    it = keep.count(it->first) != 0 ? std::next(it) : entries_.erase(it);
  }
}

size_t DnsCache::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

}  // namespace remora::dns
