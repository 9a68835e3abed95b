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
    auto report = remora::cni::uninstallNode(layout);
    if (!report) {
      spdlog::error("uninstall-node: {}", report.error().message);
      return 1;
    }
    printReport(*report);
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
