#pragma once

#include <chrono>
#include <string_view>

#include "common/result.h"
#include "proxy/proxy.h"

namespace remora::proxy {

// "250ms", "5s", "1m"; a bare number is seconds.
Result<std::chrono::milliseconds> parseDuration(std::string_view text);
// ALLOW_ANY or REGISTRY_ONLY (Istio's outboundTrafficPolicy.mode spelling).
Result<routing::OutboundPolicy> parseOutboundPolicy(std::string_view text);

// remora-proxy's command line: parses flags, sets up logging and runs the proxy.
int proxyMain(int argc, char** argv, TableLoader loader, RouterFactory routers);

}  // namespace remora::proxy
