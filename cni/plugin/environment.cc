#include "plugin/environment.h"

#include <fmt/format.h>

#include <cctype>
#include <vector>

#include "plugin/cni_args.h"

namespace remora::cni {
namespace {

std::string lookup(const std::map<std::string, std::string>& vars, const char* name) {
  auto it = vars.find(name);
  return it == vars.end() ? std::string() : it->second;
}

bool alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

}  // namespace

const char* toString(Command command) {
  switch (command) {
    case Command::kAdd:
      return "ADD";
    case Command::kDel:
      return "DEL";
    case Command::kCheck:
      return "CHECK";
    case Command::kVersion:
      return "VERSION";
    case Command::kStatus:
      return "STATUS";
    case Command::kGc:
      return "GC";
  }
  return "?";
}

bool validContainerId(const std::string& id) {
  if (id.empty() || !alnum(id[0])) return false;
  for (char c : id) {
    if (!alnum(c) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

bool validInterfaceName(const std::string& name) {
  if (name.empty() || name.size() > 15 || name == "." || name == "..") return false;
  for (char c : name) {
    if (c == '/' || c == ':' || std::isspace(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

CniResult<Environment> parseEnvironment(const std::map<std::string, std::string>& vars) {
  Environment env;
  std::string command = lookup(vars, "CNI_COMMAND");
  static const std::pair<const char*, Command> kCommands[] = {
      {"ADD", Command::kAdd},         {"DEL", Command::kDel},       {"CHECK", Command::kCheck},
      {"VERSION", Command::kVersion}, {"STATUS", Command::kStatus}, {"GC", Command::kGc}};
  bool known = false;
  for (const auto& [name, value] : kCommands) {
    if (command == name) {
      env.command = value;
      known = true;
    }
  }
  if (!known) {
    return CniError{ErrorCode::kInvalidEnvironment,
                    command.empty() ? "CNI_COMMAND is not set"
                                    : fmt::format("CNI_COMMAND '{}' is not a CNI command", command),
                    "CNI_COMMAND must be one of ADD, DEL, CHECK, VERSION, STATUS, GC"};
  }
  env.container_id = lookup(vars, "CNI_CONTAINERID");
  env.netns = lookup(vars, "CNI_NETNS");
  env.ifname = lookup(vars, "CNI_IFNAME");
  env.args = lookup(vars, "CNI_ARGS");
  env.path = lookup(vars, "CNI_PATH");

  bool attachment = env.command == Command::kAdd || env.command == Command::kDel ||
                    env.command == Command::kCheck;
  if (!attachment) return env;

  std::vector<std::string> missing;
  std::vector<std::string> invalid;
  if (env.container_id.empty()) {
    missing.emplace_back("CNI_CONTAINERID");
  } else if (!validContainerId(env.container_id)) {
    invalid.push_back(fmt::format("CNI_CONTAINERID '{}'", env.container_id));
  }
  if (env.netns.empty() && env.command != Command::kDel) {
    missing.emplace_back("CNI_NETNS");
  } else if (!validUtf8(env.netns)) {
    // The path is recorded in the attachment's state file, which is JSON.
    invalid.emplace_back("CNI_NETNS (not valid UTF-8)");
  }
  if (env.ifname.empty()) {
    missing.emplace_back("CNI_IFNAME");
  } else if (!validInterfaceName(env.ifname)) {
    invalid.push_back(fmt::format("CNI_IFNAME '{}'", env.ifname));
  }
  if (missing.empty() && invalid.empty()) return env;

  std::string msg;
  if (!missing.empty()) {
    msg = fmt::format("{} needs {} set", toString(env.command), fmt::join(missing, ", "));
  }
  if (!invalid.empty()) {
    if (!msg.empty()) msg += "; ";
    msg += fmt::format("invalid {}", fmt::join(invalid, ", "));
  }
  std::string details;
  if (!invalid.empty()) {
    details =
        "a container ID starts with a letter or digit and holds only letters, digits, '_', '.' "
        "and '-'; an interface name has 1-15 bytes without '/', ':' or whitespace";
  }
  return CniError{ErrorCode::kInvalidEnvironment, msg, details};
}

}  // namespace remora::cni
