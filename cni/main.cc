// remora-cni: the chained CNI plugin (when CNI_COMMAND is set, as a runtime runs it) and the
// node installer a DaemonSet runs (install-node, uninstall-node).
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "intercept/ebpf_applier.h"
#include "intercept/options.h"
#include "node/installer.h"
#include "plugin/bounded_json.h"
#include "plugin/dataplane.h"
#include "plugin/plugin.h"
#include "plugin/version.h"

extern char** environ;

namespace {

int runAsPlugin() {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    size_t eq = kv.find('=');
    if (eq != std::string_view::npos && kv.substr(0, 4) == "CNI_") {
      env.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
    }
  }
  // Runtimes pass their own PATH, which may lack the sbin directories iptables lives in.
  std::string path = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
  if (path.find("/usr/sbin") == std::string::npos) {
    path += std::string(path.empty() ? "" : ":") + "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin";
    ::setenv("PATH", path.c_str(), 1);
  }
  // One byte past the limit is enough for runPlugin to refuse it with a CNI error.
  std::string input;
  const size_t limit = remora::cni::JsonLimits{}.max_bytes + 1;
  std::array<char, 65536> buf{};
  while (input.size() < limit) {
    ssize_t n = ::read(STDIN_FILENO, buf.data(), std::min(buf.size(), limit - input.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    input.append(buf.data(), static_cast<size_t>(n));
  }
  auto dataplane = remora::cni::makeNetnsDataplane();
  auto out = remora::cni::runPlugin(env, input, *dataplane);
  std::cout << out.stdout_text << std::flush;
  return out.exit_code;
}

void printReport(const remora::cni::NodeReport& report) {
  for (const auto& line : report.lines) spdlog::info("{}", line);
  if (!report.changed) spdlog::info("nothing to change");
}

// install-node / uninstall-node --mode ebpf: where the node's programs attach and pin.
struct NodeEbpf {
  std::string mode;  // --mode; empty: the entry's "mode", else iptables
  remora::intercept::EbpfConfig config;
};

// The mode install-node installs for: --mode, else the entry's "mode". In eBPF mode the entry
// gets "mode": "ebpf" and the flags' cgroup and pin dir, so every pod's ADD uses the same ones;
// a flag that contradicts the entry is an error naming both.
remora::Result<bool> settleEbpfEntry(NodeEbpf& node, nlohmann::ordered_json& entry) {
  std::string mode = node.mode;
  if (entry.contains("mode") && entry["mode"].is_string()) {
    const std::string in_entry = entry["mode"];
    if (mode.empty()) mode = in_entry;
    if (mode != in_entry) {
      return remora::makeError(fmt::format(
          "--mode {} contradicts the entry's \"mode\": \"{}\" (--plugin-config)", mode, in_entry));
    }
  }
  if (mode.empty()) return false;
  auto parsed = remora::intercept::parseInterceptMode(mode);
  if (!parsed) return parsed.error();
  if (*parsed != remora::intercept::InterceptMode::kEbpf) return false;
  entry["mode"] = "ebpf";
  struct Key {
    const char* name;
    std::string* value;
  };
  for (Key key : {Key{"cgroup", &node.config.cgroup}, Key{"bpf-pin-dir", &node.config.pin_dir}}) {
    if (entry.contains(key.name) && entry[key.name].is_string()) {
      const std::string in_entry = entry[key.name];
      if (key.value->empty()) *key.value = in_entry;
      if (*key.value != in_entry) {
        return remora::makeError(fmt::format("--{} {} contradicts the entry's \"{}\": \"{}\"",
                                             key.name, *key.value, key.name, in_entry));
      }
    } else if (!key.value->empty()) {
      entry[key.name] = *key.value;
    }
  }
  if (node.config.pin_dir.empty()) node.config.pin_dir = remora::intercept::kDefaultBpfPinDir;
  return true;
}

// installEbpfNode or uninstallEbpfNode, logged under `what`; false on failure.
bool ebpfNodeStep(bool install, const remora::intercept::EbpfConfig& config, const char* what) {
  auto report = install ? remora::intercept::installEbpfNode(config)
                        : remora::intercept::uninstallEbpfNode(config);
  if (!report) {
    spdlog::error("{}: eBPF: {}", what, report.error().message);
    return false;
  }
  for (const auto& line : report->lines) spdlog::info("{}", line);
  return true;
}

int runNodeCommand(int argc, char** argv) {
  CLI::App app{
      "remora-cni: chained CNI plugin and node installer.\n"
      "Runtimes run it with CNI_COMMAND set; a DaemonSet runs install-node."};
  app.require_subcommand(1);
  remora::cni::NodeLayout layout;
  std::string entry_file;
  bool watch = false;
  bool uninstall_on_exit = false;
  int resync_seconds = 30;
  NodeEbpf node;
  node.config.pin_dir.clear();  // empty: the entry's, else the default

  auto* install = app.add_subcommand("install-node",
                                     "copy the plugin into the CNI bin dir and chain it into the "
                                     "node's primary network config");
  auto* uninstall = app.add_subcommand("uninstall-node",
                                       "remove the entry from the network configs and the binary");
  auto* version = app.add_subcommand("version", "print the CNI spec versions supported");
  for (auto* sub : {install, uninstall}) {
    sub->add_option("--bin-dir", layout.bin_dir, "CNI plugin directory")
        ->envname("REMORA_CNI_BIN_DIR")
        ->capture_default_str();
    sub->add_option("--conf-dir", layout.conf_dir, "CNI network config directory")
        ->envname("REMORA_CNI_CONF_DIR")
        ->capture_default_str();
    sub->add_option("--mode", node.mode,
                    "interception mode of the entry; ebpf also attaches the node's programs "
                    "(install-node) or releases them (uninstall-node); default: the entry's")
        ->envname("REMORA_MODE");
    sub->add_option("--cgroup", node.config.cgroup,
                    "--mode ebpf: cgroup v2 directory the programs attach to (default: the "
                    "cgroup v2 root)")
        ->envname("REMORA_CGROUP");
    sub->add_option("--bpf-pin-dir", node.config.pin_dir,
                    "--mode ebpf: where the programs' links and maps are pinned (default: " +
                        std::string(remora::intercept::kDefaultBpfPinDir) + ")")
        ->envname("REMORA_BPF_PIN_DIR");
  }
  install->add_option("--binary", layout.binary, "plugin binary to copy")->capture_default_str();
  install
      ->add_option("--plugin-config", entry_file,
                   "JSON file with remora-cni's conflist entry (options by remora-init flag name)")
      ->envname("REMORA_CNI_PLUGIN_CONFIG")
      ->check(CLI::ExistingFile);
  install->add_flag("--watch", watch, "keep running and re-chain when the config is rewritten")
      ->envname("REMORA_CNI_WATCH");
  install->add_option("--resync-seconds", resync_seconds, "with --watch: periodic re-check")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  install->add_flag("--uninstall-on-exit", uninstall_on_exit,
                    "with --watch: remove the entry and binary on SIGTERM/SIGINT");
  CLI11_PARSE(app, argc, argv);

  if (version->parsed()) {
    std::cout << remora::cni::versionResultJson(remora::cni::kLatestVersion) << "\n";
    return 0;
  }
  if (uninstall->parsed()) {
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    auto ebpf = settleEbpfEntry(node, entry);
    if (!ebpf) {
      spdlog::error("uninstall-node: {}", ebpf.error().message);
      return 1;
    }
    auto report = remora::cni::uninstallNode(layout);
    if (!report) {
      spdlog::error("uninstall-node: {}", report.error().message);
      return 1;
    }
    printReport(*report);
    if (*ebpf && !ebpfNodeStep(false, node.config, "uninstall-node")) return 1;
    return 0;
  }

  if (!entry_file.empty()) {
    auto entry = remora::cni::readEntryFile(entry_file);
    if (!entry) {
      spdlog::error("install-node: {}", entry.error().message);
      return 1;
    }
    layout.entry = std::move(*entry);
  }
  // Block the stop signals before anything else, so none is lost between install and watch.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  if (watch) ::sigprocmask(SIG_BLOCK, &stop, nullptr);

  auto ebpf = settleEbpfEntry(node, layout.entry);
  if (!ebpf) {
    spdlog::error("install-node: {}", ebpf.error().message);
    return 1;
  }
  // The node's programs first: a pod ADD through the new entry finds them attached.
  if (*ebpf && !ebpfNodeStep(true, node.config, "install-node")) return 1;
  auto report = remora::cni::installNode(layout);
  if (!report && !(watch && report.error().code == ENOENT)) {
    spdlog::error("install-node: {}", report.error().message);
    return 1;
  }
  if (report) {
    printReport(*report);
  } else {
    spdlog::warn("install-node: {}; waiting for one", report.error().message);
  }
  if (!watch) return 0;

  int sfd = ::signalfd(-1, &stop, SFD_CLOEXEC);
  if (sfd < 0) {
    spdlog::error("install-node: signalfd failed");
    return 1;
  }
  spdlog::info("watching {} for changes", layout.conf_dir);
  auto watched = remora::cni::watchConfDir(
      layout, sfd,
      [](const remora::Result<remora::cni::NodeReport>& r) {
        if (r) {
          printReport(*r);
        } else {
          spdlog::warn("re-chaining failed (will retry): {}", r.error().message);
        }
      },
      resync_seconds * 1000);
  ::close(sfd);
  if (!watched) {
    spdlog::error("install-node --watch: {}", watched.error().message);
    return 1;
  }
  spdlog::info("stopping");
  if (uninstall_on_exit) {
    auto removed = remora::cni::uninstallNode(layout);
    if (!removed) {
      spdlog::error("uninstall on exit: {}", removed.error().message);
      return 1;
    }
    printReport(*removed);
    if (*ebpf && !ebpfNodeStep(false, node.config, "uninstall on exit")) return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (std::getenv("CNI_COMMAND") != nullptr) return runAsPlugin();
    return runNodeCommand(argc, argv);
  } catch (const std::exception& e) {
    // runPlugin answers every failure itself; this is only reachable from the node commands.
    std::cerr << "remora-cni: " << e.what() << "\n";
    return 1;
  }
}
