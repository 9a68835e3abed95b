#pragma once

#include <map>
#include <string>
#include <string_view>

#include "plugin/dataplane.h"

namespace remora::cni {

// What the plugin process prints on stdout and exits with.
struct PluginOutput {
  int exit_code = 0;
  std::string stdout_text;
};

// One CNI invocation: CNI_* variables and the config on stdin in, the result or an error JSON
// out. Never writes to stdout itself and never throws; the log goes where the config says.
//   ADD    installs interception in CNI_NETNS for a meshed pod; prints prevResult unchanged.
//   DEL    idempotent: a missing netns, missing rules or missing prevResult is success.
//   CHECK  verifies the rules are present and intact.
//   GC     removes what remora-cni made for attachments not in cni.dev/valid-attachments.
//   STATUS reports whether ADD can work on this node.
//   VERSION prints the supported spec versions.
PluginOutput runPlugin(const std::map<std::string, std::string>& env, std::string_view stdin_text,
                       Dataplane& dataplane);

}  // namespace remora::cni
