#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "plugin/error.h"

namespace remora::cni {

// CNI_ARGS as an ordered list of KEY=VALUE pairs ("IgnoreUnknown=1;K8S_POD_NAMESPACE=x").
struct CniArgs {
  std::vector<std::pair<std::string, std::string>> pairs;

  // The value of the last pair named `key`, or empty.
  std::string get(std::string_view key) const;
  bool has(std::string_view key) const;
};

// Parses CNI_ARGS. Empty segments (a trailing ';') are skipped; a segment without '=' or with
// an empty key, or text that is not valid UTF-8, is an invalid environment (code 4).
CniResult<CniArgs> parseCniArgs(std::string_view text);

// Whether `text` is well-formed UTF-8 (no overlong forms, surrogates or values past U+10FFFF).
bool validUtf8(std::string_view text);

// The Kubernetes identity the kubelet's runtime passes in CNI_ARGS; empty when absent.
struct PodIdentity {
  std::string namespace_name;      // K8S_POD_NAMESPACE
  std::string name;                // K8S_POD_NAME
  std::string infra_container_id;  // K8S_POD_INFRA_CONTAINER_ID
  std::string uid;                 // K8S_POD_UID
};

PodIdentity podIdentity(const CniArgs& args);

}  // namespace remora::cni
