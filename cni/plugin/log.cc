#include "plugin/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <sys/stat.h>

#include <cstdio>

namespace remora::cni {
namespace {

constexpr const char* kPattern = "%Y-%m-%dT%H:%M:%S.%e%z remora-cni[%P] %l: %v";

std::shared_ptr<spdlog::logger> makeStderr(spdlog::level::level_enum level) {
  auto logger = std::make_shared<spdlog::logger>("remora-cni",
                                                 std::make_shared<spdlog::sinks::stderr_sink_st>());
  logger->set_pattern(kPattern);
  logger->set_level(std::max(level, spdlog::level::warn));
  return logger;
}

}  // namespace

std::shared_ptr<spdlog::logger> stderrLog() { return makeStderr(spdlog::level::warn); }

std::shared_ptr<spdlog::logger> openPluginLog(const std::string& file, const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  if (file.empty()) return makeStderr(lvl);
  struct stat st {};
  if (::stat(file.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) > kMaxLogBytes) {
    // Two plugins may race here; rename is atomic, so at worst one generation is lost.
    std::rename(file.c_str(), (file + ".1").c_str());
  }
  try {
    auto logger = std::make_shared<spdlog::logger>(
        "remora-cni", std::make_shared<spdlog::sinks::basic_file_sink_st>(file));
    logger->set_pattern(kPattern);
    logger->set_level(lvl);
    logger->flush_on(spdlog::level::trace);
    return logger;
  } catch (const spdlog::spdlog_ex& e) {
    auto logger = makeStderr(lvl);
    logger->warn("cannot open log file '{}' ({}); logging warnings to stderr", file, e.what());
    return logger;
  }
}

}  // namespace remora::cni
