// remora-init's command line: CLI11 parsing into InitCommand, and running it.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <fstream>
#include <initializer_list>
#include <iostream>
#include <map>
#include <string_view>

#include "intercept/applier.h"
#include "intercept/cli.h"
#include "intercept/ebpf_applier.h"
#include "intercept/mode.h"
#include "intercept/relay_command.h"

namespace remora::intercept {
namespace {

constexpr int kCapNetAdmin = 12;

// Root, or at least CAP_NET_ADMIN in the effective set (an init container may run as non-root
// with the capability added).
bool hasNetAdmin() {
  if (::geteuid() == 0) return true;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      uint64_t caps = std::stoull(line.substr(7), nullptr, 16);
      return (caps >> kCapNetAdmin) & 1;
    }
  }
  return false;
}

void addInterceptOptions(CLI::App& cmd, std::map<std::string, std::string>& values) {
  for (const auto& spec : optionSpecs()) {
    std::string help = spec.help;
    if (!spec.default_text.empty()) help += fmt::format(" (default {})", spec.default_text);
    cmd.add_option("--" + spec.flag, values[spec.flag], help)->envname(spec.env);
  }
}

// eBPF mode's flags on install, uninstall and dump alike.
void addEbpfOptions(CLI::App& cmd, InitCommand& command) {
  cmd.add_option("--cgroup", command.cgroup,
                 "ebpf mode: cgroup v2 directory the programs attach to (default: the cgroup v2 "
                 "root, /sys/fs/cgroup or /sys/fs/cgroup/unified)")
      ->envname("REMORA_CGROUP");
  cmd.add_option("--bpf-pin-dir", command.bpf_pin_dir,
                 "ebpf mode: where links and maps are pinned (default /sys/fs/bpf/remora)")
      ->envname("REMORA_BPF_PIN_DIR");
}

// The options of optionSpecs() named in `flags`, for uninstall and dump, which take only a few.
void addSomeInterceptOptions(CLI::App& cmd, std::map<std::string, std::string>& values,
                             std::initializer_list<std::string_view> flags,
                             std::string_view mode_help) {
  for (const auto& spec : optionSpecs()) {
    if (std::find(flags.begin(), flags.end(), spec.flag) == flags.end()) continue;
    std::string help = spec.flag == "mode" ? std::string(mode_help) : spec.help;
    cmd.add_option("--" + spec.flag, values[spec.flag],
                   fmt::format("{} (default {})", help, spec.default_text))
        ->envname(spec.env);
  }
}

}  // namespace

Result<InitCommand> parseInitCommand(const std::vector<std::string>& args) {
  CLI::App app{
      "remora-init: installs, removes and explains Remora's traffic interception in the "
      "current network namespace"};
  app.require_subcommand(1, 1);
  InitCommand command;
  std::map<std::string, std::string> install_values;
  std::map<std::string, std::string> uninstall_values;
  std::map<std::string, std::string> dump_values;
  std::string trace_uid;
  std::string trace_gid;
  std::string trace_source;
  std::string trace_in_interface;

  auto* install = app.add_subcommand("install", "install the redirect rules (idempotent, atomic)");
  addInterceptOptions(*install, install_values);
  install->add_flag("--dry-run", command.dry_run, "print the exact iptables-restore input only")
      ->envname("REMORA_DRY_RUN");
  addEbpfOptions(*install, command);

  auto* uninstall = app.add_subcommand("uninstall", "remove exactly Remora's chains and jumps");
  addSomeInterceptOptions(*uninstall, uninstall_values, {"command-timeout", "mode"},
                          "interception mode: ebpf unregisters this netns; any other removes the "
                          "iptables and nftables installs whatever their mode");
  addEbpfOptions(*uninstall, command);

  auto* dump = app.add_subcommand("dump", "show what is installed, or trace a connection");
  dump->add_flag("--json", command.json, "machine-readable output");
  dump->add_option("--trace", command.trace,
                   "trace a TCP connection to IP:PORT through nat, then filter (OUTPUT, or "
                   "PREROUTING then INPUT/FORWARD with --source)");
  dump->add_option("--uid", trace_uid, "uid of the traced connection's owner (default 0)");
  dump->add_option("--gid", trace_gid, "gid of the traced connection's owner");
  dump->add_option("--source", trace_source,
                   "trace a connection arriving from this address (a pod or an external "
                   "client) through PREROUTING instead of one this netns opens");
  dump->add_option("--in-interface", trace_in_interface,
                   "with --source: the interface it arrives on (default: the route back to the "
                   "source)");
  addSomeInterceptOptions(*dump, dump_values, {"iptables-backend", "mode"},
                          "interception mode: ebpf shows the programs and maps; any other the "
                          "rules");
  addEbpfOptions(*dump, command);

  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 wants them reversed
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    command.help = app.help("", CLI::AppFormatMode::All);
    return command;
  } catch (const CLI::ParseError& e) {
    std::string msg = e.what();
    if (app.get_subcommands().empty() && !args.empty() && args[0].rfind('-', 0) != 0) {
      msg = fmt::format("unknown command '{}' (expected install, uninstall or dump)", args[0]);
    }
    return makeError(msg);
  }

  std::map<std::string, std::string>* values = nullptr;
  if (install->parsed()) {
    command.verb = InitVerb::kInstall;
    values = &install_values;
  } else if (uninstall->parsed()) {
    command.verb = InitVerb::kUninstall;
    values = &uninstall_values;
  } else {
    command.verb = InitVerb::kDump;
    values = &dump_values;
  }
  if (values) {
    CLI::App* cmd = install->parsed() ? install : uninstall->parsed() ? uninstall : dump;
    for (const auto& spec : optionSpecs()) {
      if (!values->contains(spec.flag)) continue;
      bool given = cmd->count("--" + spec.flag) > 0 || std::getenv(spec.env.c_str()) != nullptr;
      if (!given) continue;
      auto set = setOption(command.options, spec.flag, values->at(spec.flag));
      if (!set) return set.error();
    }
  }
  if (!trace_uid.empty() || !trace_gid.empty()) {
    InterceptOptions ids;
    if (!trace_uid.empty()) {
      auto set = setOption(ids, "proxy-uid", trace_uid);
      if (!set || ids.proxy_uids.size() != 1) {
        return makeError(fmt::format("invalid --uid '{}'", trace_uid));
      }
      command.trace_uid = ids.proxy_uids.front();
    }
    if (!trace_gid.empty()) {
      auto set = setOption(ids, "proxy-gid", trace_gid);
      if (!set || ids.proxy_gids.size() != 1) {
        return makeError(fmt::format("invalid --gid '{}'", trace_gid));
      }
      command.trace_gid = ids.proxy_gids.front();
    }
    if (command.trace.empty()) return makeError("--uid and --gid need --trace IP:PORT");
  }
  if (!command.trace.empty()) {
    auto dst = SocketAddress::parse(command.trace);
    if (!dst) return makeError(fmt::format("invalid --trace: {}", dst.error().message));
  }
  if (!trace_source.empty()) {
    if (command.trace.empty()) return makeError("--source needs --trace IP:PORT");
    auto src = IpAddress::parse(trace_source);
    if (!src) return makeError(fmt::format("invalid --source '{}'", trace_source));
    if (src->family != SocketAddress::parse(command.trace)->ip.family) {
      return makeError("--source and --trace must be of the same address family");
    }
    if (!trace_uid.empty() || !trace_gid.empty()) {
      return makeError(
          "--uid and --gid describe a connection this netns opens; a packet arriving from "
          "--source has no local owner");
    }
    command.trace_source = *src;
  }
  if (!trace_in_interface.empty()) {
    if (trace_source.empty()) return makeError("--in-interface needs --source IP");
    command.trace_in_interface = trace_in_interface;
  }
  return command;
}

int runInit(const std::vector<std::string>& args) {
  if (!args.empty() && args[0] == "relay") return runRelayCommand(args);
  auto command = parseInitCommand(args);
  if (!command) {
    std::cerr << "remora-init: " << command.error().message << "\n"
              << "Run 'remora-init --help' for usage.\n";
    return 2;
  }
  if (!command->help.empty()) {
    std::cout << command->help;
    return 0;
  }
  if (!hasNetAdmin()) {
    std::cerr << "remora-init: must run as root or with CAP_NET_ADMIN (in Kubernetes: an init "
                 "container with securityContext.capabilities.add [NET_ADMIN, NET_RAW])\n";
    return 1;
  }
  switch (command->verb) {
    case InitVerb::kInstall: {
      auto mode = resolveMode(command->options.mode);
      if (!mode) {
        std::cerr << "remora-init: " << mode.error().message << "\n";
        return 1;
      }
      auto applier =
          makeApplier(mode->mode, command->options.command_timeout, command->ebpfConfig());
      if (command->dry_run) {
        auto text = applier->dryRun(command->options);
        if (!text) {
          std::cerr << "remora-init: " << text.error().message << "\n";
          return 1;
        }
        std::cout << *text;
        return 0;
      }
      auto report = applier->install(command->options);
      if (!report) {
        std::cerr << "remora-init: install failed: " << report.error().message << "\n";
        return 1;
      }
      std::cout << "mode " << toString(mode->mode) << " (" << mode->reason << ")\n";
      for (const auto& line : report->lines) std::cout << line << "\n";
      return 0;
    }
    case InitVerb::kUninstall: {
      auto report = command->options.mode == InterceptMode::kEbpf
                        ? makeApplier(InterceptMode::kEbpf, command->options.command_timeout,
                                      command->ebpfConfig())
                              ->uninstall()
                        : uninstallAll(command->options.command_timeout);
      if (!report) {
        std::cerr << "remora-init: uninstall failed: " << report.error().message << "\n";
        return 1;
      }
      for (const auto& line : report->lines) std::cout << line << "\n";
      return 0;
    }
    case InitVerb::kDump:
      return runDumpCommand(*command);
  }
  return 1;
}

}  // namespace remora::intercept
