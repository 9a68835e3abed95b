#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "common/result.h"

namespace remora::cni {

// The CNI spec's well-known error codes (0-99) and Remora's own (100 and up).
enum class ErrorCode : uint32_t {
  kIncompatibleVersion = 1,
  kUnsupportedField = 2,
  kUnknownContainer = 3,
  kInvalidEnvironment = 4,
  kIoFailure = 5,
  kDecodeFailure = 6,
  kInvalidConfig = 7,
  kTryAgainLater = 11,
  kStatusNotAvailable = 50,
  kStatusLimitedConnectivity = 51,
  // CNI_NETNS could not be opened or entered.
  kNetnsUnavailable = 100,
  // Installing the interception rules failed; the netns is left as it was.
  kInstallFailed = 101,
  // CHECK found the rules missing or different from the configuration.
  kRulesNotIntact = 102,
  // Removing the interception rules failed.
  kUninstallFailed = 103,
  // GC could not clean up every stale attachment; details lists them.
  kGcIncomplete = 104,
  // An unexpected exception: a bug in remora-cni; details holds its text.
  kInternalError = 199,
};

// A CNI error result: printed as {cniVersion, code, msg, details} on stdout.
struct CniError {
  CniError() = default;
  CniError(ErrorCode c, std::string m, std::string d = {})
      : code(c), msg(std::move(m)), details(std::move(d)) {}

  ErrorCode code = ErrorCode::kInvalidConfig;
  std::string msg;
  std::string details;
};

// The error result JSON for `version` (the config's cniVersion when it was readable).
std::string errorJson(const CniError& error, std::string_view cni_version);

// A value or a CniError: remora::Result for failures that must reach the runtime with a CNI
// code.
template <typename T>
using CniResult = Result<T, CniError>;

}  // namespace remora::cni
