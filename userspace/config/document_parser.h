#pragma once

#include <memory>
#include <string_view>

#include "common/result.h"
#include "config/documents.h"

namespace remora::config {

// Parses and validates one YAML document on its own: syntax, kinds and apiVersions, required
// fields, field types, IPs, ports, durations, policy names and VirtualService weights. What
// needs other documents (selectors, subsets, hosts) is checked by the table builder.
// `placement` only words the errors. Safe to call from several threads at once.
Result<std::shared_ptr<const DocumentModel>> parseDocument(std::string_view text,
                                                           const Placement& placement);

}  // namespace remora::config
