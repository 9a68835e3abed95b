#pragma once

// Istio's meshConfig pathNormalization.normalization, as a value the settings carry. Header-only,
// so the routing library's ProxySettings can hold one without linking the security library;
// the normalization itself is security::normalizePath (security_policy.h).

#include <cstdint>
#include <optional>
#include <string_view>

namespace remora::security {

// What each mode makes Istio set on every sidecar HTTP connection manager (inbound and outbound;
// path_with_escaped_slashes_action is KEEP_UNCHANGED unless said otherwise):
//   kNone                   normalize_path: false (the path is matched and forwarded as sent)
//   kBase                   normalize_path: true (RFC 3986 plus '\' to '/'); Istio's default
//   kMergeSlashes           kBase plus merge_slashes: true
//   kDecodeAndMergeSlashes  kMergeSlashes plus path_with_escaped_slashes_action:
//                           UNESCAPE_AND_FORWARD (%2F %2f become '/', %5C %5c '\', first)
enum class PathNormalization : uint8_t { kNone, kBase, kMergeSlashes, kDecodeAndMergeSlashes };

constexpr const char* toString(PathNormalization mode) {
  switch (mode) {
    case PathNormalization::kNone:
      return "NONE";
    case PathNormalization::kBase:
      return "BASE";
    case PathNormalization::kMergeSlashes:
      return "MERGE_SLASHES";
    case PathNormalization::kDecodeAndMergeSlashes:
      return "DECODE_AND_MERGE_SLASHES";
  }
  return "BASE";
}

// The meshConfig names, exactly as Istio spells them. DEFAULT is meshConfig's unset value,
// which Istio treats as BASE. nullopt for anything else.
constexpr std::optional<PathNormalization> parsePathNormalization(std::string_view name) {
  if (name == "NONE") return PathNormalization::kNone;
  if (name == "BASE" || name == "DEFAULT") return PathNormalization::kBase;
  if (name == "MERGE_SLASHES") return PathNormalization::kMergeSlashes;
  if (name == "DECODE_AND_MERGE_SLASHES") return PathNormalization::kDecodeAndMergeSlashes;
  return std::nullopt;
}

// For error messages: the accepted names.
constexpr const char* kPathNormalizationNames =
    "NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES";

}  // namespace remora::security
