#pragma once

// Parsing of the security kinds and the DestinationRule TLS fields (document_parser.cc calls
// these), and the SecurityTable built from a whole file (table_builder.cc attaches it).

#include <yaml-cpp/yaml.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "config/documents.h"
#include "config/table_builder.h"
#include "security/security_policy.h"

namespace remora::config {

// Builds the parser's error for `field` at `line` (relative), naming document and object.
using ErrorFn = std::function<Error(std::string_view field, int line, std::string_view what)>;

// `spec` may be undefined (an empty policy). Fields Remora does not apply become notes of `out`.
Result<void> parsePeerAuthentication(const YAML::Node& spec, int line, Object& out,
                                     const ErrorFn& error);
Result<void> parseAuthorizationPolicy(const YAML::Node& spec, int line, Object& out,
                                      const ErrorFn& error);
// spec.trafficPolicy's tls.mode and portLevelSettings[].tls.mode; `subsets` only for notes.
Result<DestinationTls> readDestinationTls(const YAML::Node& spec, int line, Object& out,
                                          const ErrorFn& error);

// Workloads (Pods: namespace, labels, serviceAccountName, the tlsMode label), policies and
// DestinationRule TLS modes of every document; nullptr when none of them asks for anything.
// `policy_applies` says whether a DestinationRule's trafficPolicy (hence its tls) applies to this
// proxy (the table builder's choice among a host's rules); unset: every rule's does.
std::shared_ptr<const security::SecurityTable> buildSecurityTable(
    const std::vector<PlacedDocument>& documents,
    const std::function<bool(const Object&)>& policy_applies = {});

}  // namespace remora::config
