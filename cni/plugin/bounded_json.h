#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string_view>

#include "common/result.h"

namespace remora::cni {

// Limits on JSON that remora-cni reads from a runtime (stdin) or a node (conflists). Real
// configs are a few KiB and a handful of levels deep; the limits only stop hostile or broken
// input before it costs memory, time or stack.
struct JsonLimits {
  size_t max_bytes = size_t{4} << 20;  // 4 MiB
  size_t max_depth = 64;               // nested objects and arrays, the root counting as 1
};

// Parses `text` into an ordered_json (object keys in document order, a repeated key keeping
// its first position and its last value, as nlohmann::ordered_json::parse does) in time linear
// in the input: a large object is indexed while it is built, where ordered_json's own
// insertion searches the keys linearly and makes parsing quadratic. Errors: the text is longer
// than max_bytes, nests deeper than max_depth, or is not JSON (the parser's message, with its
// position). Never throws.
Result<nlohmann::ordered_json> parseBoundedJson(std::string_view text,
                                                const JsonLimits& limits = {});

}  // namespace remora::cni
