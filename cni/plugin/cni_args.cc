#include "plugin/cni_args.h"

#include <fmt/format.h>

namespace remora::cni {

std::string CniArgs::get(std::string_view key) const {
  for (auto it = pairs.rbegin(); it != pairs.rend(); ++it) {
    if (it->first == key) return it->second;
  }
  return {};
}

bool CniArgs::has(std::string_view key) const {
  for (const auto& [k, v] : pairs) {
    if (k == key) return true;
  }
  return false;
}

CniResult<CniArgs> parseCniArgs(std::string_view text) {
  CniArgs args;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(';', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view segment = text.substr(start, end - start);
    start = end + 1;
    if (segment.empty()) continue;
    size_t eq = segment.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return CniError{ErrorCode::kInvalidEnvironment,
                      fmt::format("CNI_ARGS: '{}' is not KEY=VALUE", segment),
                      "CNI_ARGS holds KEY=VALUE pairs separated by ';'"};
    }
    args.pairs.emplace_back(std::string(segment.substr(0, eq)),
                            std::string(segment.substr(eq + 1)));
  }
  return args;
}

PodIdentity podIdentity(const CniArgs& args) {
  return PodIdentity{args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME"),
                     args.get("K8S_POD_INFRA_CONTAINER_ID"), args.get("K8S_POD_UID")};
}

}  // namespace remora::cni
