#pragma once

// The proxy's own workload (WorkloadIdentity): its pod's labels as the Kubernetes
// downward API writes them into a volume file, one `key="value"` line per label, sorted by key,
// each value quoted the way Go's %q quotes it (the kubelet's fieldpath.FormatMap).

#include <string>
#include <string_view>

#include "common/result.h"
#include "routing/route_table.h"

namespace remora::routing {

// Parses a downward API labels file's text. Errors name `path` and the 1-based line: a line
// with no '=', an empty key, a value that is not one double-quoted string, a bad escape, or a
// key given twice. Blank lines are skipped (the kubelet writes none; an editor may add one).
Result<LabelList> parseDownwardApiLabels(std::string_view text, std::string_view path);

// Reads `path` (following symlinks, as a downward API volume's ..data swap needs) and parses it.
Result<LabelList> readLabelsFile(const std::string& path);

// "app=front-tomcat,version=v1", or "{}" when there are none.
std::string labelsText(const LabelList& labels);

}  // namespace remora::routing
