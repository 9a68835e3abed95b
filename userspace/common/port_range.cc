#include "common/port_range.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <utility>

namespace remora {

std::string PortRange::toString() const {
  if (first == last) return std::to_string(first);
  return fmt::format("{}:{}", first, last);
}

Result<uint16_t> parsePort(std::string_view text, std::string_view what) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value == 0 ||
      value > 65535) {
    return makeError(fmt::format("invalid {} '{}': must be a port in 1..65535", what, text));
  }
  return static_cast<uint16_t>(value);
}

std::vector<PortRange> mergePortRanges(std::vector<PortRange> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const PortRange& a, const PortRange& b) { return a.first < b.first; });
  std::vector<PortRange> merged;
  for (const auto& r : ranges) {
    if (!merged.empty() && r.first <= merged.back().last + 1u) {
      merged.back().last = std::max(merged.back().last, r.last);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

Result<std::vector<PortRange>> parsePortList(std::string_view text) {
  std::vector<PortRange> ranges;
  size_t start = 0;
  while (start <= text.size() && !text.empty()) {
    size_t comma = text.find(',', start);
    std::string_view item = text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.empty()) return makeError(fmt::format("invalid port list '{}': empty item", text));
    size_t dash = item.find_first_of("-:");
    if (dash == std::string_view::npos) {
      auto port = parsePort(item, "port");
      if (!port) return port.error();
      ranges.push_back({*port, *port});
    } else {
      auto first = parsePort(item.substr(0, dash), "port range start");
      if (!first) return first.error();
      auto last = parsePort(item.substr(dash + 1), "port range end");
      if (!last) return last.error();
      if (*first > *last) {
        return makeError(fmt::format("invalid port range '{}': start is after end", item));
      }
      ranges.push_back({*first, *last});
    }
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return mergePortRanges(std::move(ranges));
}

}  // namespace remora
