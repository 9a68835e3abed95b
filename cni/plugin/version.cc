#include "plugin/version.h"

#include <fmt/format.h>

#include <charconv>
#include <nlohmann/json.hpp>

namespace remora::cni {
namespace {

bool parseNumber(std::string_view text, int& out) {
  if (text.empty() || text.size() > 6) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

std::string supportedList() {
  std::string out;
  for (auto v : kSupportedVersions) {
    if (!out.empty()) out += ", ";
    out += v;
  }
  return out;
}

}  // namespace

CniResult<SpecVersion> parseSpecVersion(std::string_view text) {
  SpecVersion v;
  size_t dot1 = text.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : text.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || !parseNumber(text.substr(0, dot1), v.major) ||
      !parseNumber(text.substr(dot1 + 1, dot2 - dot1 - 1), v.minor) ||
      !parseNumber(text.substr(dot2 + 1), v.patch)) {
    return CniError{ErrorCode::kDecodeFailure, fmt::format("invalid cniVersion '{}'", text),
                    "a CNI version has the form MAJOR.MINOR.PATCH, for example 1.0.0"};
  }
  return v;
}

CniResult<SpecVersion> requireSupportedVersion(std::string_view text) {
  auto parsed = parseSpecVersion(text);
  if (!parsed) return parsed;
  for (auto v : kSupportedVersions) {
    if (v == text) return parsed;
  }
  return CniError{ErrorCode::kIncompatibleVersion, fmt::format("incompatible CNI version {}", text),
                  fmt::format("remora-cni supports {}", supportedList())};
}

std::string versionResultJson(std::string_view cni_version) {
  nlohmann::ordered_json j;
  j["cniVersion"] = std::string(cni_version);
  j["supportedVersions"] = nlohmann::ordered_json::array();
  for (auto v : kSupportedVersions) j["supportedVersions"].push_back(std::string(v));
  return j.dump();
}

}  // namespace remora::cni
