#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace remora {

// An inclusive range of TCP ports; a single port has first == last.
struct PortRange {
  uint16_t first = 0;
  uint16_t last = 0;

  bool contains(uint16_t port) const { return port >= first && port <= last; }
  // "80" or "8000:8080" (iptables' form).
  std::string toString() const;
  bool operator==(const PortRange&) const = default;
};

// Parses a comma-separated list of ports and ranges ("80,8000-8080,9090:9091"). Ranges accept
// '-' or ':'. Empty input yields an empty list. Ranges are sorted and merged.
Result<std::vector<PortRange>> parsePortList(std::string_view text);

// Sorts ranges and merges overlapping or adjacent ones ({80}, {81:90} -> {80:90}).
std::vector<PortRange> mergePortRanges(std::vector<PortRange> ranges);

// Parses one port in 1..65535; `what` names the value in the error message.
Result<uint16_t> parsePort(std::string_view text, std::string_view what);

}  // namespace remora
