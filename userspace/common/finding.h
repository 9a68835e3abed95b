#pragma once

// A finding about the configuration: something Remora rejected (error), applies differently
// from Istio or not yet (warning), or only wants to mention (info). Every finding names the
// document, the object, the field path and the line, so a user can go straight to it.

#include <string>
#include <string_view>

namespace remora {

enum class Severity { kInfo, kWarning, kError };

inline const char* toString(Severity severity) {
  switch (severity) {
    case Severity::kInfo:
      return "info";
    case Severity::kWarning:
      return "warning";
    case Severity::kError:
      return "error";
  }
  return "?";
}

struct Finding {
  Severity severity = Severity::kWarning;
  std::string kind;  // "VirtualService", empty when the object is unknown (a YAML error)
  std::string namespace_name;
  std::string name;
  std::string field;  // "spec.http[0].match", may be empty
  int line = 0;       // 1-based line in the file, 0 when unknown
  std::string text;   // "document 3 (VirtualService ns/vs), spec.http[0].match, line 14: ..."

  bool operator==(const Finding&) const = default;
};

}  // namespace remora
