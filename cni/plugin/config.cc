#include "plugin/config.h"

#include <fmt/format.h>

#include <algorithm>

#include "intercept/cli.h"
#include "plugin/bounded_json.h"

namespace remora::cni {
namespace {

using json = nlohmann::ordered_json;

CniError invalid(std::string msg, std::string details = {}) {
  return CniError{ErrorCode::kInvalidConfig, std::move(msg), std::move(details)};
}

CniError decodeError(std::string msg, std::string details = {}) {
  return CniError{ErrorCode::kDecodeFailure, std::move(msg), std::move(details)};
}

// Network names become state directory names, so they follow the spec's character set.
bool validNetworkName(const std::string& name) {
  if (name.empty() || name.size() > 253 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

const intercept::OptionSpec* findOption(std::string_view flag) {
  for (const auto& spec : intercept::optionSpecs()) {
    if (spec.flag == flag) return &spec;
  }
  return nullptr;
}

const intercept::OptionSpec* findOptionByEnv(std::string_view env) {
  for (const auto& spec : intercept::optionSpecs()) {
    if (spec.env == env) return &spec;
  }
  return nullptr;
}

// A key that looks like a remora-init flag ("proxy-uid"), as opposed to the camelCase and
// domain-qualified keys that runtimes and the spec add.
bool looksLikeFlag(const std::string& key) {
  return key.find('-') != std::string::npos && key.find('/') == std::string::npos &&
         key.find('.') == std::string::npos;
}

CniResult<std::vector<std::string>> stringList(const json& j, const char* key) {
  std::vector<std::string> out;
  if (!j.is_array()) return decodeError(fmt::format("{} must be a list of strings", key));
  for (const auto& item : j) {
    if (!item.is_string()) return decodeError(fmt::format("{} must be a list of strings", key));
    out.push_back(item.get<std::string>());
  }
  return out;
}

CniResult<std::string> stringField(const json& j, const char* key) {
  if (!j.is_string()) return decodeError(fmt::format("{} must be a string", key));
  return j.get<std::string>();
}

CniResult<std::vector<Attachment>> attachments(const json& j, const char* key) {
  std::vector<Attachment> out;
  if (!j.is_array()) return decodeError(fmt::format("{} must be a list", key));
  for (const auto& item : j) {
    if (!item.is_object() || !item.contains("containerID") || !item["containerID"].is_string()) {
      return decodeError(fmt::format("{}: every entry needs a string containerID", key));
    }
    Attachment a{item["containerID"].get<std::string>(), ""};
    if (item.contains("ifname")) {
      if (!item["ifname"].is_string())
        return decodeError(fmt::format("{}: ifname must be a string", key));
      a.ifname = item["ifname"].get<std::string>();
    }
    out.push_back(std::move(a));
  }
  return out;
}

// "false"/"true" and the usual spellings; nullopt when it is none of them.
std::optional<bool> parseSwitch(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "true" || lower == "1" || lower == "yes" || lower == "on" || lower == "enabled") {
    return true;
  }
  if (lower == "false" || lower == "0" || lower == "no" || lower == "off" || lower == "disabled") {
    return false;
  }
  return std::nullopt;
}

// ---- prevResult against the spec's result schema -----------------------------------------
// Wrong JSON types are decode failures (6); values that do not make sense are invalid (7).

bool isUnsigned(const json& j) {
  return j.is_number_unsigned() || (j.is_number_integer() && j.get<int64_t>() >= 0);
}

CniResult<void> optionalString(const json& object, const char* key, const std::string& where) {
  auto it = object.find(key);
  if (it != object.end() && !it->is_string()) {
    return decodeError(fmt::format("{}.{} must be a string", where, key));
  }
  return {};
}

CniResult<void> optionalUnsigned(const json& object, const char* key, const std::string& where) {
  auto it = object.find(key);
  if (it != object.end() && !isUnsigned(*it)) {
    return decodeError(fmt::format("{}.{} must be a non-negative integer", where, key));
  }
  return {};
}

CniResult<void> checkStringList(const json& object, const char* key, const std::string& where) {
  auto it = object.find(key);
  if (it == object.end()) return {};
  if (!it->is_array())
    return decodeError(fmt::format("{}.{} must be a list of strings", where, key));
  for (const auto& item : *it) {
    if (!item.is_string()) {
      return decodeError(fmt::format("{}.{} must be a list of strings", where, key));
    }
  }
  return {};
}

// A required CIDR ("10.0.0.2/24") or an optional plain address, as the spec's fields hold them.
CniResult<void> addressField(const json& object, const char* key, const std::string& where,
                             bool cidr, bool required) {
  auto it = object.find(key);
  if (it == object.end()) {
    if (required) return invalid(fmt::format("{} has no {}", where, key));
    return {};
  }
  if (!it->is_string()) return decodeError(fmt::format("{}.{} must be a string", where, key));
  std::string text = it->get<std::string>();
  bool ok = cidr ? text.find('/') != std::string::npos && Cidr::parse(text).ok()
                 : IpAddress::parse(text).ok();
  if (!ok) {
    return invalid(fmt::format("{}.{} '{}' is not {}", where, key, text,
                               cidr ? "an address with a prefix length" : "an IP address"));
  }
  return {};
}

// Each entry of the list `key` must be an object; `check` validates one entry.
template <typename Fn>
CniResult<void> eachObject(const json& result, const char* key, Fn&& check) {
  auto it = result.find(key);
  if (it == result.end() || it->is_null()) return {};
  std::string list = fmt::format("prevResult.{}", key);
  if (!it->is_array()) return decodeError(fmt::format("{} must be a list", list));
  for (size_t i = 0; i < it->size(); ++i) {
    std::string where = fmt::format("{}[{}]", list, i);
    if (!(*it)[i].is_object()) return decodeError(fmt::format("{} must be an object", where));
    if (auto ok = check((*it)[i], where); !ok) return ok;
  }
  return {};
}

CniResult<void> validatePrevResult(const json& result) {
  if (auto ok = optionalString(result, "cniVersion", "prevResult"); !ok) return ok;
  size_t interfaces = 0;
  auto ifs = eachObject(result, "interfaces", [&](const json& i, const std::string& where) {
    ++interfaces;
    auto name = i.find("name");
    if (name == i.end()) return CniResult<void>(invalid(fmt::format("{} has no name", where)));
    if (!name->is_string())
      return CniResult<void>(decodeError(fmt::format("{}.name must be a string", where)));
    for (const char* key : {"mac", "sandbox", "socketPath", "pciID"}) {
      if (auto ok = optionalString(i, key, where); !ok) return ok;
    }
    return optionalUnsigned(i, "mtu", where);
  });
  if (!ifs) return ifs;
  auto ips = eachObject(result, "ips", [&](const json& ip, const std::string& where) {
    if (auto ok = addressField(ip, "address", where, /*cidr=*/true, /*required=*/true); !ok)
      return ok;
    if (auto ok = addressField(ip, "gateway", where, false, false); !ok) return ok;
    if (auto ok = optionalString(ip, "version", where); !ok) return ok;
    auto index = ip.find("interface");
    if (index == ip.end()) return CniResult<void>();
    if (!isUnsigned(*index)) {
      return CniResult<void>(
          decodeError(fmt::format("{}.interface must be a non-negative integer", where)));
    }
    if (index->get<uint64_t>() >= interfaces) {
      return CniResult<void>(invalid(
          fmt::format("{}.interface {} names no entry of prevResult.interfaces ({} entries)", where,
                      index->get<uint64_t>(), interfaces)));
    }
    return CniResult<void>();
  });
  if (!ips) return ips;
  auto routes = eachObject(result, "routes", [&](const json& r, const std::string& where) {
    if (auto ok = addressField(r, "dst", where, /*cidr=*/true, /*required=*/true); !ok) return ok;
    if (auto ok = addressField(r, "gw", where, false, false); !ok) return ok;
    for (const char* key : {"mtu", "advmss", "priority", "table", "scope"}) {
      if (auto ok = optionalUnsigned(r, key, where); !ok) return ok;
    }
    return CniResult<void>();
  });
  if (!routes) return routes;
  auto dns = result.find("dns");
  if (dns != result.end() && !dns->is_null()) {
    if (!dns->is_object()) return decodeError("prevResult.dns must be an object");
    if (auto ok = optionalString(*dns, "domain", "prevResult.dns"); !ok) return ok;
    for (const char* key : {"nameservers", "search", "options"}) {
      if (auto ok = checkStringList(*dns, key, "prevResult.dns"); !ok) return ok;
    }
  }
  return {};
}

constexpr const char* kCgroupKey = "cgroup";
constexpr const char* kPinDirKey = "bpf-pin-dir";

// eBPF mode's node-wide keys. Each needs "mode": "ebpf" (a key Remora would not apply is an
// error, never ignored) and an absolute path; the options must be ones eBPF mode applies, so a
// bad entry fails on every ADD with the option named rather than after attaching anything.
CniResult<intercept::EbpfConfig> parseEbpfConfig(const json& root,
                                                 const intercept::InterceptOptions& options) {
  intercept::EbpfConfig ebpf;
  const bool on = options.mode == intercept::InterceptMode::kEbpf;
  for (const char* key : {kCgroupKey, kPinDirKey}) {
    auto it = root.find(key);
    if (it == root.end()) continue;
    auto path = stringField(*it, key);
    if (!path) return path.error();
    if (!on) {
      return invalid(fmt::format("{} applies only with \"mode\": \"ebpf\" (mode is {})", key,
                                 intercept::toString(options.mode)),
                     fmt::format("remora-cni's conflist entry, key \"{}\": {}", key, it->dump()));
    }
    if (path->empty() || (*path)[0] != '/') {
      return invalid(fmt::format("{} '{}' must be an absolute path", key, *path));
    }
    (std::string(key) == kCgroupKey ? ebpf.cgroup : ebpf.pin_dir) = *path;
  }
  if (on) {
    auto settings = intercept::netnsSettings(options, options.ipv6 != intercept::Ipv6Mode::kOff);
    if (!settings) {
      return invalid(settings.error().message,
                     "remora-cni's conflist entry has \"mode\": \"ebpf\"");
    }
  }
  return ebpf;
}

// eBPF mode is the node's (its programs sit on the node's cgroup, and DEL unregisters with the
// config's mode), so a pod may not switch into or out of it.
bool crossesEbpf(intercept::InterceptMode node, intercept::InterceptMode pod) {
  return node != pod &&
         (node == intercept::InterceptMode::kEbpf || pod == intercept::InterceptMode::kEbpf);
}

bool contains(const std::vector<std::string>& list, const std::string& value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

}  // namespace

std::optional<std::string> optionValueText(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_boolean()) return value.get<bool>() ? "true" : "false";
  if (value.is_number_unsigned()) return std::to_string(value.get<uint64_t>());
  if (value.is_number_integer()) return std::to_string(value.get<int64_t>());
  if (value.is_array()) {
    std::string out;
    for (const auto& item : value) {
      if (!(item.is_string() || item.is_number_integer())) return std::nullopt;
      auto text = optionValueText(item);
      if (!text) return std::nullopt;
      if (!out.empty()) out += ",";
      out += *text;
    }
    return out;
  }
  return std::nullopt;
}

Result<json> parseJsonText(std::string_view text) { return parseBoundedJson(text); }

CniResult<PluginConfig> parseConfig(std::string_view text, Command command) {
  PluginConfig config;
  bool blank = text.find_first_not_of(" \t\r\n") == std::string_view::npos;
  if (blank && command == Command::kVersion) {
    config.cni_version = std::string(kLatestVersion);
    config.version = *parseSpecVersion(kLatestVersion);
    return config;
  }
  if (blank) return decodeError("no network configuration on stdin");

  auto parsed = parseJsonText(text);
  if (!parsed) {
    return decodeError("cannot decode the network configuration on stdin", parsed.error().message);
  }
  json root = std::move(parsed).value();
  if (!root.is_object()) return decodeError("the network configuration must be a JSON object");

  if (!root.contains("cniVersion")) return invalid("the network configuration has no cniVersion");
  auto version_text = stringField(root["cniVersion"], "cniVersion");
  if (!version_text) return version_text.error();
  config.cni_version = *version_text;
  auto version = requireSupportedVersion(config.cni_version);
  if (!version) return version.error();
  config.version = *version;
  if (command == Command::kVersion) return config;

  if (command == Command::kCheck && config.version < SpecVersion{0, 4, 0}) {
    return CniError{ErrorCode::kIncompatibleVersion,
                    fmt::format("CHECK needs cniVersion 0.4.0 or later, the config says {}",
                                config.cni_version)};
  }
  if ((command == Command::kStatus || command == Command::kGc) &&
      config.version < SpecVersion{1, 1, 0}) {
    return CniError{ErrorCode::kIncompatibleVersion,
                    fmt::format("{} needs cniVersion 1.1.0 or later, the config says {}",
                                toString(command), config.cni_version)};
  }

  if (!root.contains("name")) return invalid("the network configuration has no name");
  auto name = stringField(root["name"], "name");
  if (!name) return name.error();
  if (!validNetworkName(*name)) {
    return invalid(fmt::format("invalid network name '{}'", *name),
                   "a network name holds only letters, digits, '_', '.' and '-'");
  }
  config.name = *name;
  if (root.contains("type")) {
    auto type = stringField(root["type"], "type");
    if (!type) return type.error();
    config.type = *type;
  }

  for (const auto& [key, value] : root.items()) {
    if (key == kCgroupKey || key == kPinDirKey) continue;  // parseEbpfConfig
    if (const auto* spec = findOption(key)) {
      auto value_text = optionValueText(value);
      if (!value_text) {
        return invalid(fmt::format("{}: unsupported JSON value {}", key, value.dump()),
                       "use a string, an integer, a boolean or a list of them");
      }
      auto set = intercept::setOption(config.options, spec->flag, *value_text);
      if (!set) {
        return invalid(
            set.error().message,
            fmt::format("remora-cni's conflist entry, key \"{}\": {}", key, value.dump()));
      }
    } else if (looksLikeFlag(key)) {
      return CniError{ErrorCode::kUnsupportedField,
                      fmt::format("unsupported field \"{}\": {}", key, value.dump()),
                      "option keys are remora-init's flag names, for example \"proxy-uid\""};
    }
  }

  auto ebpf = parseEbpfConfig(root, config.options);
  if (!ebpf) return ebpf.error();
  config.ebpf = std::move(*ebpf);

  if (root.contains("includeNamespaces")) {
    auto list = stringList(root["includeNamespaces"], "includeNamespaces");
    if (!list) return list.error();
    config.include_namespaces = std::move(*list);
  }
  if (root.contains("excludeNamespaces")) {
    auto list = stringList(root["excludeNamespaces"], "excludeNamespaces");
    if (!list) return list.error();
    config.exclude_namespaces = std::move(*list);
  }
  if (root.contains("logFile")) {
    auto file = stringField(root["logFile"], "logFile");
    if (!file) return file.error();
    if (!file->empty() && (*file)[0] != '/') {
      return invalid(fmt::format("logFile '{}' must be an absolute path", *file));
    }
    config.log_file = *file;
  }
  if (root.contains("logLevel")) {
    auto level = stringField(root["logLevel"], "logLevel");
    if (!level) return level.error();
    static const char* kLevels[] = {"trace", "debug", "info", "warn", "error", "off"};
    if (std::none_of(std::begin(kLevels), std::end(kLevels),
                     [&](const char* l) { return *level == l; })) {
      return invalid(fmt::format("invalid logLevel '{}'", *level),
                     "one of trace, debug, info, warn, error, off");
    }
    config.log_level = *level;
  }
  if (root.contains("stateDir")) {
    auto dir = stringField(root["stateDir"], "stateDir");
    if (!dir) return dir.error();
    if (dir->empty() || (*dir)[0] != '/') {
      return invalid(fmt::format("stateDir '{}' must be an absolute path", *dir));
    }
    config.state_dir = *dir;
  }
  if (root.contains("runtimeConfig")) {
    if (!root["runtimeConfig"].is_object()) return decodeError("runtimeConfig must be an object");
    config.runtime_config = root["runtimeConfig"];
  }
  if (root.contains("prevResult") && !root["prevResult"].is_null()) {
    if (!root["prevResult"].is_object()) return decodeError("prevResult must be an object");
    // ADD prints it back and both ADD and CHECK read its addresses; DEL must clean up whatever
    // the runtime sends, so only those two insist on a well-formed result.
    if (command == Command::kAdd || command == Command::kCheck) {
      if (auto valid = validatePrevResult(root["prevResult"]); !valid) return valid.error();
    }
    config.prev_result = root["prevResult"];
  }
  // libcni sends both spellings, because a spec draft named the field cni.dev/attachments.
  for (const char* key : {"cni.dev/valid-attachments", "cni.dev/attachments"}) {
    if (!root.contains(key) || config.valid_attachments) continue;
    auto list = attachments(root[key], key);
    if (!list) return list.error();
    config.valid_attachments = std::move(*list);
  }
  if (command == Command::kGc && !config.valid_attachments) {
    return invalid("GC needs cni.dev/valid-attachments",
                   "without the list every attachment would look stale");
  }
  return config;
}

CniResult<MeshDecision> decideMesh(const PluginConfig& config, const CniArgs& args) {
  MeshDecision decision;
  decision.options = config.options;
  std::string ns = podIdentity(args).namespace_name;
  if (contains(config.exclude_namespaces, ns)) {
    decision.meshed = false;
    decision.reason = fmt::format("namespace '{}' is in excludeNamespaces", ns);
    return decision;
  }
  if (!config.include_namespaces.empty() && !contains(config.include_namespaces, ns)) {
    decision.meshed = false;
    decision.reason = ns.empty() ? "no K8S_POD_NAMESPACE and includeNamespaces is set"
                                 : fmt::format("namespace '{}' is not in includeNamespaces", ns);
    return decision;
  }

  // Per-pod settings from CNI_ARGS.
  for (const auto& [key, value] : args.pairs) {
    if (key == kInjectArg) {
      auto on = parseSwitch(value);
      if (!on) {
        return CniError{ErrorCode::kInvalidEnvironment,
                        fmt::format("CNI_ARGS: {}='{}' is not true or false", key, value)};
      }
      if (!*on) {
        decision.meshed = false;
        decision.reason = fmt::format("opted out by CNI_ARGS {}={}", key, value);
        return decision;
      }
    } else if (const auto* spec = findOptionByEnv(key)) {
      auto set = intercept::setOption(decision.options, spec->flag, value);
      if (!set) {
        return CniError{ErrorCode::kInvalidEnvironment,
                        fmt::format("CNI_ARGS {}: {}", key, set.error().message)};
      }
      if (crossesEbpf(config.options.mode, decision.options.mode)) {
        return CniError{ErrorCode::kInvalidEnvironment,
                        fmt::format("CNI_ARGS {}={}: the node's mode is {}; eBPF mode is chosen "
                                    "per node, in the conflist entry",
                                    key, value, intercept::toString(config.options.mode))};
      }
    }
  }

  // Per-pod settings from pod annotations, when the runtime passes them.
  auto annotations = config.runtime_config.find(std::string(kPodAnnotationsKey));
  if (annotations == config.runtime_config.end() || !annotations->is_object()) return decision;
  for (const auto& [key, value] : annotations->items()) {
    if (key.rfind(kAnnotationPrefix, 0) != 0 || !value.is_string()) continue;
    std::string text = value.get<std::string>();
    if (key == kInjectAnnotation) {
      auto on = parseSwitch(text);
      if (!on)
        return invalid(fmt::format("pod annotation {}='{}' is not true or false", key, text));
      if (!*on) {
        decision.meshed = false;
        decision.reason = fmt::format("opted out by pod annotation {}={}", key, text);
        return decision;
      }
      continue;
    }
    std::string flag = key.substr(kAnnotationPrefix.size());
    if (findOption(flag) == nullptr) continue;
    auto set = intercept::setOption(decision.options, flag, text);
    if (!set) return invalid(fmt::format("pod annotation {}: {}", key, set.error().message));
    if (crossesEbpf(config.options.mode, decision.options.mode)) {
      return invalid(
          fmt::format("pod annotation {}='{}': the node's mode is {}; eBPF mode is "
                      "chosen per node, in the conflist entry",
                      key, text, intercept::toString(config.options.mode)));
    }
  }
  return decision;
}

intercept::InterceptOptions optionsForPod(intercept::InterceptOptions options,
                                          const std::optional<json>& prev_result) {
  if (options.ipv6 != intercept::Ipv6Mode::kAuto || !prev_result) return options;
  auto ips = prev_result->find("ips");
  if (ips == prev_result->end() || !ips->is_array() || ips->empty()) return options;
  for (const auto& ip : *ips) {
    if (!ip.is_object() || !ip.contains("address") || !ip["address"].is_string()) return options;
    if (ip["address"].get<std::string>().find(':') != std::string::npos) return options;
  }
  options.ipv6 = intercept::Ipv6Mode::kOff;
  return options;
}

}  // namespace remora::cni
