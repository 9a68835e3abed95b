#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "intercept/ebpf_applier.h"
#include "intercept/options.h"
#include "plugin/cni_args.h"
#include "plugin/environment.h"
#include "plugin/error.h"
#include "plugin/version.h"

namespace remora::cni {

inline constexpr std::string_view kDefaultStateDir = "/var/lib/cni/remora";
// Pod annotations reach the plugin through this runtimeConfig key when its conflist entry
// declares the capability (containerd and CRI-O both pass it).
inline constexpr std::string_view kPodAnnotationsKey = "io.kubernetes.cri.pod-annotations";
// Per-pod opt-out: pod annotation `remora.dev/inject: "false"` or CNI_ARGS REMORA_INJECT=false.
inline constexpr std::string_view kInjectAnnotation = "remora.dev/inject";
inline constexpr std::string_view kInjectArg = "REMORA_INJECT";
// Annotations named kAnnotationPrefix + an option's flag name override that option per pod.
inline constexpr std::string_view kAnnotationPrefix = "remora.dev/";

// One attachment the runtime still considers valid (GC's cni.dev/valid-attachments).
struct Attachment {
  std::string container_id;
  std::string ifname;
  bool operator==(const Attachment&) const = default;
};

// remora-cni's entry in a conflist, as the runtime passes it on stdin.
struct PluginConfig {
  std::string cni_version;  // as given; echoed in results and errors
  SpecVersion version;
  std::string name;  // the network's name
  std::string type;
  // Interception options, set from keys named like remora-init's flags ("proxy-uid": 1337).
  intercept::InterceptOptions options;
  // "mode": "ebpf" only: the node's cgroup v2 directory the programs attach to ("cgroup"; empty:
  // the cgroup v2 root) and their pin dir ("bpf-pin-dir"), remora-init's --cgroup and
  // --bpf-pin-dir. Node-wide, so pods cannot override them.
  intercept::EbpfConfig ebpf;
  std::vector<std::string> include_namespaces;  // empty: every namespace not excluded
  std::vector<std::string> exclude_namespaces;
  std::string log_file;            // empty: warnings and errors go to stderr
  std::string log_level = "info";  // trace, debug, info, warn, error, off
  std::string state_dir = std::string(kDefaultStateDir);
  // Kept in the order received, so ADD prints prevResult back as it came.
  std::optional<nlohmann::ordered_json> prev_result;
  nlohmann::ordered_json runtime_config = nlohmann::ordered_json::object();
  std::optional<std::vector<Attachment>> valid_attachments;  // GC only
};

// Parses JSON text once within the default JsonLimits (bounded_json.h): linear time, at most
// 4 MiB and 64 levels; on failure the error is the parser's own message, with its position, or
// the limit exceeded.
Result<nlohmann::ordered_json> parseJsonText(std::string_view text);

// Parses the stdin config for `command`. Errors: 6 when stdin is not a JSON object (or a field
// has the wrong JSON type), 1 for an unsupported cniVersion or a command the version predates,
// 2 for an unknown option key (message names key and value), 7 for missing or invalid values.
// VERSION accepts empty stdin.
CniResult<PluginConfig> parseConfig(std::string_view text, Command command);

// The JSON value of an option key as remora-init would take it on its command line: strings
// as they are, integers in decimal, booleans as true/false, arrays joined with ','.
std::optional<std::string> optionValueText(const nlohmann::ordered_json& value);

// Whether this pod gets interception, and with which options (config plus per-pod overrides).
struct MeshDecision {
  bool meshed = true;
  std::string reason;  // why not, for the log
  intercept::InterceptOptions options;
};

// Applies excludeNamespaces/includeNamespaces to K8S_POD_NAMESPACE, then the per-pod opt-out
// and overrides from CNI_ARGS (REMORA_INJECT, REMORA_<OPTION>, code 4 on a bad value) and from
// pod annotations in runtimeConfig (remora.dev/inject, remora.dev/<flag>, code 7).
CniResult<MeshDecision> decideMesh(const PluginConfig& config, const CniArgs& args);

// With "ipv6": "auto", a pod whose prevResult lists addresses, none of them IPv6, gets no
// IPv6 rules: it has no IPv6 address to capture for, and skipping them halves ADD's work.
// Otherwise the options are returned as they are.
intercept::InterceptOptions optionsForPod(intercept::InterceptOptions options,
                                          const std::optional<nlohmann::ordered_json>& prev_result);

}  // namespace remora::cni
