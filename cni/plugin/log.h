#pragma once

#include <spdlog/logger.h>

#include <memory>
#include <string>

namespace remora::cni {

// A log file above this size is moved to "<file>.1" when a plugin opens it.
inline constexpr uint64_t kMaxLogBytes = 10 * 1024 * 1024;

// The plugin's logger. Stdout is the CNI protocol, so nothing is ever logged there: with a
// file, lines are appended to it (concurrent invocations share it through O_APPEND); without
// one, or when it cannot be opened, warnings and errors go to stderr, and the failure to open
// is itself logged there once.
std::shared_ptr<spdlog::logger> openPluginLog(const std::string& file, const std::string& level);

// Warnings and errors to stderr, for what happens before the config names a file.
std::shared_ptr<spdlog::logger> stderrLog();

}  // namespace remora::cni
