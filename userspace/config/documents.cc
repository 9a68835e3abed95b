#include "config/documents.h"

#include <fmt/format.h>

namespace remora::config {

bool labelsMatch(const Labels& selector, const Labels& labels) {
  auto it = labels.begin();
  for (const auto& [key, value] : selector) {
    while (it != labels.end() && it->first < key) ++it;
    if (it == labels.end() || it->first != key || it->second != value) return false;
  }
  return true;
}

const char* toString(Kind kind) {
  switch (kind) {
    case Kind::kService:
      return "Service";
    case Kind::kPod:
      return "Pod";
    case Kind::kEndpointSlice:
      return "EndpointSlice";
    case Kind::kVirtualService:
      return "VirtualService";
    case Kind::kDestinationRule:
      return "DestinationRule";
    case Kind::kNamespace:
      return "Namespace";
    case Kind::kProxyConfig:
      return "ProxyConfig";
    case Kind::kEndpoints:
      return "Endpoints";
    case Kind::kServiceEntry:
      return "ServiceEntry";
    case Kind::kWorkloadEntry:
      return "WorkloadEntry";
    case Kind::kPeerAuthentication:
      return "PeerAuthentication";
    case Kind::kAuthorizationPolicy:
      return "AuthorizationPolicy";
  }
  return "?";
}

std::string describeError(const Placement& placement, int item, std::string_view kind,
                          std::string_view namespace_name, std::string_view name,
                          std::string_view field, int relative_line, std::string_view what) {
  std::string out = fmt::format("document {}", placement.index);
  if (item >= 0) out += fmt::format(" item {}", item);
  if (!kind.empty() || !name.empty()) {
    out += fmt::format(" ({}", kind.empty() ? "object" : kind);
    if (!name.empty()) {
      out += namespace_name.empty() ? fmt::format(" {}", name)
                                    : fmt::format(" {}/{}", namespace_name, name);
    }
    out += ")";
  }
  if (!field.empty()) out += fmt::format(", {}", field);
  out += fmt::format(", line {}: {}", placement.first_line + relative_line + 1, what);
  return out;
}

}  // namespace remora::config
