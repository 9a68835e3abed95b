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

bool validUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    auto c = static_cast<unsigned char>(text[i]);
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > text.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
      return false;
    }
    i += len;
  }
  return true;
}

CniResult<CniArgs> parseCniArgs(std::string_view text) {
  if (!validUtf8(text)) {
    return CniError{ErrorCode::kInvalidEnvironment, "CNI_ARGS is not valid UTF-8",
                    "CNI_ARGS holds KEY=VALUE pairs separated by ';', in UTF-8"};
  }
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
