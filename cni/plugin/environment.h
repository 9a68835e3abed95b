#pragma once

#include <map>
#include <string>

#include "plugin/error.h"

namespace remora::cni {

enum class Command { kAdd, kDel, kCheck, kVersion, kStatus, kGc };

const char* toString(Command command);

// The CNI_* variables of one invocation, validated for its command.
struct Environment {
  Command command = Command::kVersion;
  std::string container_id;  // CNI_CONTAINERID
  std::string netns;         // CNI_NETNS; empty when the runtime gave none (allowed on DEL)
  std::string ifname;        // CNI_IFNAME
  std::string args;          // CNI_ARGS, unparsed
  std::string path;          // CNI_PATH
};

// Reads the CNI_* variables from `vars` (name -> value). Errors with code 4 and names every
// missing or invalid variable: ADD and CHECK need CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME;
// DEL needs CNI_CONTAINERID and CNI_IFNAME. The container ID and interface name are checked
// against the spec's rules, because remora-cni uses them in state file names.
CniResult<Environment> parseEnvironment(const std::map<std::string, std::string>& vars);

// The spec's rules: a container ID starts with an alphanumeric character followed by
// alphanumerics, '_', '.' or '-'; an interface name is 1-15 bytes, not "." or "..", without
// '/', ':' or whitespace.
bool validContainerId(const std::string& id);
bool validInterfaceName(const std::string& name);

}  // namespace remora::cni
