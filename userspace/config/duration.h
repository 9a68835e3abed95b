#pragma once

#include <chrono>
#include <string_view>

#include "common/result.h"

namespace remora::config {

// Parses a positive duration the way Kubernetes and Istio write them: one or more
// number+unit pairs with units h, m, s, ms, us (or µs) and ns, decimals allowed ("1s",
// "250ms", "1.5s", "1m30s"). A unit is required. Sub-millisecond remainders round up, so a
// nonzero duration never becomes zero.
Result<std::chrono::milliseconds> parseDuration(std::string_view text);

}  // namespace remora::config
