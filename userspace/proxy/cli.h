#pragma once

#include <chrono>
#include <string_view>

#include "common/result.h"
#include "proxy/proxy.h"

namespace remora::proxy {

// "250ms", "5s", "1m", "1h"; a bare number is seconds.
Result<std::chrono::milliseconds> parseDuration(std::string_view text);
// "1048576", "64Ki", "1Mi", "1Gi" (binary units).
Result<uint64_t> parseByteSize(std::string_view text);
// ALLOW_ANY or REGISTRY_ONLY (Istio's outboundTrafficPolicy.mode spelling).
Result<routing::OutboundPolicy> parseOutboundPolicy(std::string_view text);

// 0 when GET /ready on the admin endpoint answers 200 within `timeout`, else 1 (`remora-proxy
// ready`, the startup probe of deploy/sidecar).
int readyProbe(const SocketAddress& admin, std::chrono::milliseconds timeout);

// remora-proxy's command line: parses flags, sets up logging and runs the proxy.
int proxyMain(int argc, char** argv, TableLoader loader, RouterFactory routers);

}  // namespace remora::proxy
