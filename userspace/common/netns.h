#pragma once

#include <functional>
#include <string>

#include "common/result.h"

namespace remora {

// Runs `fn` in the network namespace at `netns_path` (for example /var/run/netns/x or
// /proc/PID/ns/net) on a dedicated thread, so the caller's thread never changes namespace
// (setns affects only the calling thread). Blocks until fn returns.
Result<void> runInNetns(const std::string& netns_path, const std::function<Result<void>()>& fn);

}  // namespace remora
