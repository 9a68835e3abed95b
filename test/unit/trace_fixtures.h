#pragma once

// Packets shared by the trace tests (trace_test, trace_nft_test).

#include <string>

#include "intercept/trace.h"

namespace remora::intercept::fixtures {

// A packet arriving through PREROUTING from `src` on interface `in`.
inline TracePacket arriving(const std::string& dst, const std::string& src, const std::string& in) {
  TracePacket p;
  p.destination = *SocketAddress::parse(dst);
  p.origin = TraceOrigin::kArriving;
  p.source = *IpAddress::parse(src);
  p.in_interface = in;
  return p;
}

}  // namespace remora::intercept::fixtures
