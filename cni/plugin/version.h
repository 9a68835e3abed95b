#pragma once

#include <array>
#include <string>
#include <string_view>
#include <tuple>

#include "plugin/error.h"

namespace remora::cni {

// CNI spec versions remora-cni speaks: every version with chaining (prevResult), because the
// primary CNI decides the conflist's version (flannel and calico still write 0.3.1). CHECK needs
// 0.4.0 and STATUS and GC need 1.1.0, as the spec introduced them.
inline constexpr std::array<std::string_view, 5> kSupportedVersions = {"0.3.0", "0.3.1", "0.4.0",
                                                                       "1.0.0", "1.1.0"};
inline constexpr std::string_view kLatestVersion = "1.1.0";

// A parsed "MAJOR.MINOR.PATCH".
struct SpecVersion {
  int major = 0;
  int minor = 0;
  int patch = 0;

  bool operator==(const SpecVersion&) const = default;
  bool operator<(const SpecVersion& o) const {
    return std::tie(major, minor, patch) < std::tie(o.major, o.minor, o.patch);
  }
};

// Parses a version string; a malformed one is a decode failure (code 6).
CniResult<SpecVersion> parseSpecVersion(std::string_view text);

// Checks that `text` is a version remora-cni supports: code 6 when it is malformed, code 1 when
// it is well-formed but not supported.
CniResult<SpecVersion> requireSupportedVersion(std::string_view text);

// VERSION's result: {"cniVersion": cni_version, "supportedVersions": [...]}.
std::string versionResultJson(std::string_view cni_version);

}  // namespace remora::cni
