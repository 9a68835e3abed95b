#include "config/duration.h"

#include <fmt/format.h>

#include <cstdint>

namespace remora::config {
namespace {

struct Unit {
  std::string_view suffix;
  int64_t nanos;
};

// Longest suffixes first, so "ms" is not read as "m" followed by garbage.
constexpr Unit kUnits[] = {
    {"ms", 1'000'000},        {"us", 1'000},         {"\xC2\xB5s", 1'000}, {"ns", 1},
    {"h", 3'600'000'000'000}, {"m", 60'000'000'000}, {"s", 1'000'000'000},
};

// Beyond this the millisecond count no longer fits the settings' types comfortably.
constexpr int64_t kMaxNanos = int64_t{365} * 24 * 3'600'000'000'000;

}  // namespace

Result<std::chrono::milliseconds> parseDuration(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return makeError(
        fmt::format("'{}' is not a duration ({}); write e.g. 1s, 250ms or 1m30s", text, why));
  };
  if (text.empty()) return bad("empty");
  long double total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t digits_start = i;
    long double value = 0;
    bool any_digit = false;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      value = value * 10 + (text[i] - '0');
      ++i;
      any_digit = true;
    }
    if (i < text.size() && text[i] == '.') {
      ++i;
      long double scale = 0.1L;
      while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
        value += (text[i] - '0') * scale;
        scale /= 10;
        ++i;
        any_digit = true;
      }
    }
    if (!any_digit) {
      return bad(i == digits_start && i < text.size() && text[i] == '-' ? "negative"
                                                                        : "number expected");
    }
    const Unit* unit = nullptr;
    for (const Unit& u : kUnits) {
      if (text.substr(i, u.suffix.size()) == u.suffix) {
        unit = &u;
        break;
      }
    }
    if (unit == nullptr) return bad("unit expected: h, m, s, ms, us or ns");
    i += unit->suffix.size();
    total += value * static_cast<long double>(unit->nanos);
    if (total > static_cast<long double>(kMaxNanos)) return bad("longer than a year");
  }
  auto nanos = static_cast<int64_t>(total);
  if (nanos <= 0) return bad("must be greater than zero");
  return std::chrono::milliseconds((nanos + 999'999) / 1'000'000);
}

}  // namespace remora::config
