#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"
#include "routing/route_table.h"

namespace remora::config {

// Builds a RouteTable from multi-document YAML (or a `kind: List`) of Service, Pod,
// EndpointSlice, VirtualService, DestinationRule and the optional remora.dev ProxyConfig.
// Errors name the document (index and kind/name), the field path and the line. `base` supplies
// defaults for settings the ProxyConfig does not set (flags are applied by the caller after).
Result<std::shared_ptr<const routing::RouteTable>> loadRouteTable(
    std::string_view yaml_text, uint64_t generation, const routing::ProxySettings& base = {});

// Reads the file (following symlinks, as a ConfigMap volume's ..data swap needs) and loads it.
Result<std::shared_ptr<const routing::RouteTable>> loadRouteTableFile(
    const std::string& path, uint64_t generation, const routing::ProxySettings& base = {});

}  // namespace remora::config
