#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "intercept/applier.h"
#include "intercept/ebpf_applier.h"
#include "intercept/options.h"

namespace remora::intercept {

// Every interception option by its flag name (without "--"), with its REMORA_* environment form,
// so remora-init's flags, its environment and remora-cni's JSON keys share one table.
struct OptionSpec {
  std::string flag;  // "proxy-uid"
  std::string env;   // "REMORA_PROXY_UID"
  std::string help;
  std::string default_text;
};
const std::vector<OptionSpec>& optionSpecs();

// Sets one option from its textual value. Errors name the option and what is wrong with the
// value; `options` is unchanged on error.
Result<void> setOption(InterceptOptions& options, std::string_view flag, std::string_view value);

}  // namespace remora::intercept

namespace remora::intercept {

enum class InitVerb { kInstall, kUninstall, kDump };

// A parsed remora-init command line.
struct InitCommand {
  InitVerb verb = InitVerb::kInstall;
  // options.mode is the interception mode (--mode / REMORA_MODE) of install, uninstall and dump
  // alike, parsed by parseInterceptMode.
  InterceptOptions options;
  bool dry_run = false;
  bool json = false;
  std::string trace;  // "IP:PORT" for dump --trace, else empty
  uint32_t trace_uid = 0;
  std::optional<uint32_t> trace_gid;
  std::optional<IpAddress> trace_source;          // --source: trace an arriving packet
  std::optional<std::string> trace_in_interface;  // --in-interface, with --source
  std::string help;                               // set when --help was asked; print it and exit 0
  // eBPF mode's own flags (ebpfConfig() turns them into the applier's config):
  std::string cgroup;       // --cgroup: cgroup v2 dir to attach to (default: the v2 root)
  std::string bpf_pin_dir;  // --bpf-pin-dir (default /sys/fs/bpf/remora)
  EbpfConfig ebpfConfig() const {
    EbpfConfig config;
    config.cgroup = cgroup;
    if (!bpf_pin_dir.empty()) config.pin_dir = bpf_pin_dir;
    return config;
  }
};

// Parses remora-init's arguments (argv[0] excluded). Flags not given fall back to their REMORA_*
// environment variables. Errors name the flag and the problem.
Result<InitCommand> parseInitCommand(const std::vector<std::string>& args);

// Runs remora-init: parses, checks privileges, executes, prints. Returns the exit code.
int runInit(const std::vector<std::string>& args);

}  // namespace remora::intercept

namespace remora::intercept {
// Runs `remora-init dump` (and --trace) for a parsed command; returns the exit code.
int runDumpCommand(const InitCommand& command);
}  // namespace remora::intercept
