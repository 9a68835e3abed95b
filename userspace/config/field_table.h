#pragma once

// Every field of every kind the proxy reads, in one table: applied as Istio/Kubernetes
// document it, applied in part (the table builder reports what it does otherwise), not applied
// yet (a warning saying what Remora does instead), or ignored by design (silent). A key that is
// in no table is a warning with a "did you mean" suggestion: an unknown field is a typo until
// shown otherwise. When a later change implements a field, its row moves to kApplied and the
// warning goes away.

#include <yaml-cpp/yaml.h>

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/finding.h"

namespace remora::config {

enum class Support {
  kApplied,     // works as documented; checked further down
  kPartly,      // applied where it can be; the table builder reports the rest
  kNotApplied,  // accepted and reported with `note`
  kIgnored,     // by design (status, bookkeeping metadata): silent, not looked into
};

// `path` is the field path with "[]" for list items and "*" for any key of a free-form
// mapping ("spec.http[].match[].headers.*.exact"). A kNotApplied row whose value equals
// `silent_value` (the API's default, which `kubectl get -o yaml` prints) is not reported.
struct FieldRule {
  std::string_view path;
  Support support;
  std::string_view note = {};
  std::string_view silent_value = {};
};

// The rows for a kind ("VirtualService"); empty for a kind the proxy does not read.
std::span<const FieldRule> fieldTable(std::string_view kind);

// Whether `path` (with "[]" and "*" as in FieldRule) is a row of `kind`'s table.
bool isKnownField(std::string_view kind, std::string_view path);

// A finding about one field, with a line relative to the checked node's document.
struct FieldNote {
  Severity severity = Severity::kWarning;
  std::string field;  // with indices: "spec.http[0].fault"
  int line = 0;
  std::string message;
};

// Walks one object against its kind's table: unknown keys (with a suggestion), fields not
// applied, and duplicate keys in a mapping (an error, as the API server rejects them).
std::vector<FieldNote> checkFields(std::string_view kind, const YAML::Node& object);

// The closest of `candidates` to `word` (edit distance, transpositions count once), or ""
// when none is close enough to be a likely typo.
std::string suggest(std::string_view word, std::span<const std::string_view> candidates);

}  // namespace remora::config
