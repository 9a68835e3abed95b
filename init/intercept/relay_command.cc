#include "intercept/relay_command.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <cerrno>
#include <iostream>

#include "intercept/ebpf_skeleton.h"
#include "relay.skel.h"

namespace remora::intercept {
namespace {

using RelaySkeleton =
    BpfSkeleton<relay_bpf, relay_bpf__open_opts, relay_bpf__load, relay_bpf__destroy>;

// The pin names remora-proxy opens (userspace/proxy/kernel_relay.h).
constexpr const char* kSocksPin = "socks";
constexpr const char* kPeersPin = "peers";
constexpr const char* kCountersPin = "counters";
constexpr const char* kProgPin = "prog_verdict";
constexpr std::array<const char*, 3> kMapPins{kSocksPin, kPeersPin, kCountersPin};

std::string pinOf(const std::string& dir, const char* name) { return dir + "/" + name; }

Result<void> makeDirs(const std::string& dir) {
  for (size_t pos = 1; pos != std::string::npos;) {
    pos = dir.find('/', pos + 1);
    const std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) {
      return errnoError(fmt::format("mkdir {}", part));
    }
  }
  return {};
}

// The maps belong to the proxy's uid, read-write for it alone: BPF_OBJ_GET checks these
// permissions, and nothing else stands between an unprivileged process and the map.
Result<void> handToProxy(const std::string& dir, uint32_t uid, uint32_t gid) {
  for (const char* name : kMapPins) {
    const std::string path = pinOf(dir, name);
    if (::chown(path.c_str(), uid, gid) != 0 || ::chmod(path.c_str(), 0600) != 0) {
      return errnoError(fmt::format("handing {} to uid {}", path, uid));
    }
  }
  return {};
}

}  // namespace

Result<RelayInstallReport> installRelay(const std::string& pin_dir, uint32_t uid, uint32_t gid) {
  RelayInstallReport report{false, pin_dir};
  if (::access(pinOf(pin_dir, kSocksPin).c_str(), F_OK) == 0) {
    if (auto r = handToProxy(pin_dir, uid, gid); !r) return r.error();
    report.already_installed = true;
    return report;
  }
  if (auto r = makeDirs(pin_dir); !r) return r.error();
  RelaySkeleton skel;
  if (auto r = skel.open(); !r) return r.error();
  if (auto r = skel.load(); !r) return r.error();
  const int socks = bpf_map__fd(skel->maps.relay_socks);
  // Attached to the map, not to a link: the program stays with the sockhash for as long as the
  // map lives, which the pin decides.
  if (int rc = bpf_prog_attach(bpf_program__fd(skel->progs.remora_relay_verdict), socks,
                               BPF_SK_SKB_STREAM_VERDICT, 0);
      rc != 0) {
    errno = -rc;
    return errnoError("attaching the relay verdict program to its sockhash");
  }
  const std::array<bpf_map*, 3> maps{skel->maps.relay_socks, skel->maps.relay_peers,
                                     skel->maps.relay_counters};
  Result<void> pinned;
  for (size_t i = 0; i < maps.size() && pinned; ++i) {
    const std::string path = pinOf(pin_dir, kMapPins[i]);
    if (int rc = bpf_map__pin(maps[i], path.c_str()); rc != 0) {
      errno = -rc;
      pinned = errnoError(fmt::format("pinning {}", path));
    }
  }
  if (pinned) {
    const std::string path = pinOf(pin_dir, kProgPin);
    if (int rc = bpf_program__pin(skel->progs.remora_relay_verdict, path.c_str()); rc != 0) {
      errno = -rc;
      pinned = errnoError(fmt::format("pinning {}", path));
    }
  }
  if (pinned) pinned = handToProxy(pin_dir, uid, gid);
  if (!pinned) {
    (void)uninstallRelay(pin_dir);  // all or nothing
    return pinned.error();
  }
  return report;
}

Result<void> uninstallRelay(const std::string& pin_dir) {
  Result<void> result;
  for (const char* name : {kSocksPin, kPeersPin, kCountersPin, kProgPin}) {
    const std::string path = pinOf(pin_dir, name);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT && result) {
      result = errnoError(fmt::format("unlink {}", path));
    }
  }
  if (::rmdir(pin_dir.c_str()) != 0 && errno != ENOENT && result) {
    result = errnoError(fmt::format("rmdir {}", pin_dir));
  }
  return result;
}

int runRelayCommand(const std::vector<std::string>& args) {
  CLI::App app{"remora-init relay: load and pin the proxy's kernel relay (sockmap), or remove it"};
  app.require_subcommand(1, 1);
  std::string pin_dir = "/sys/fs/bpf/remora/relay";
  uint32_t uid = 1337;
  uint32_t gid = 1337;
  auto* install = app.add_subcommand("install", "load, attach and pin for the proxy's uid");
  auto* uninstall = app.add_subcommand("uninstall", "remove the pins");
  for (auto* cmd : {install, uninstall}) {
    cmd->add_option("--pin-dir", pin_dir, "where the maps are pinned (/sys/fs/bpf/remora/relay)")
        ->envname("REMORA_RELAY_PIN_DIR");
  }
  install->add_option("--proxy-uid", uid, "uid that owns the pinned maps (1337)")
      ->envname("REMORA_PROXY_UID");
  install->add_option("--proxy-gid", gid, "gid that owns the pinned maps (1337)")
      ->envname("REMORA_PROXY_GID");
  std::vector<std::string> reversed(args.rbegin(), args.rend() - 1);  // CLI11 wants them reversed
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (install->parsed()) {
    auto report = installRelay(pin_dir, uid, gid);
    if (!report) {
      std::cerr << "remora-init relay install: " << report.error().message << "\n";
      return 1;
    }
    std::cout << fmt::format("kernel relay {} in {} for uid {}\n",
                             report->already_installed ? "already installed" : "installed", pin_dir,
                             uid);
    return 0;
  }
  if (auto r = uninstallRelay(pin_dir); !r) {
    std::cerr << "remora-init relay uninstall: " << r.error().message << "\n";
    return 1;
  }
  std::cout << fmt::format("kernel relay removed from {}\n", pin_dir);
  return 0;
}

}  // namespace remora::intercept
