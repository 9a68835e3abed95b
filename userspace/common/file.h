#pragma once

#include <cstddef>
#include <limits>
#include <string>

#include "common/result.h"

namespace remora {

// The whole of the file at `path`; an error names the path and the failed call. A file longer
// than `limit` bytes is refused ("PATH: longer than LIMIT bytes") without reading on.
Result<std::string> readFile(const std::string& path,
                             size_t limit = std::numeric_limits<size_t>::max());

}  // namespace remora
