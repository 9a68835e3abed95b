#include "intercept/relay_command.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cerrno>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "intercept/ebpf_pins.h"
#include "intercept/ebpf_skeleton.h"
#include "intercept/pinned_build.h"
#include "relay.skel.h"
#include "remora_abi.h"

namespace remora::intercept {
namespace {

static_assert(sizeof(remora_relay_meta) == sizeof(uint64_t));

using RelaySkeleton =
    BpfSkeleton<relay_bpf, relay_bpf__open_opts, relay_bpf__load, relay_bpf__destroy>;
using ebpf::Fd;

// The pin names remora-proxy opens (userspace/proxy/kernel_relay.h).
constexpr const char* kSocksPin = "socks";
constexpr const char* kPeersPin = "peers";
constexpr const char* kCountersPin = "counters";
constexpr const char* kTargetsPin = "targets";
constexpr const char* kEventsPin = "events";
constexpr const char* kProgPin = "prog_verdict";
constexpr std::array<const char*, 5> kProxyMapPins{kSocksPin, kPeersPin, kCountersPin, kTargetsPin,
                                                   kEventsPin};
// Which build's program is attached (struct remora_relay_meta); remora-init's alone.
constexpr const char* kMetaPin = "meta";
// An upgrade pins the new program here and renames it over kProgPin (bpffs refuses a '.').
constexpr const char* kProgStagingPin = "prog_verdict_new";
// Every map, in skeletonMaps' order.
constexpr std::array<const char*, 6> kMapPins{kSocksPin, kPeersPin,   kCountersPin,
                                              kMetaPin,  kTargetsPin, kEventsPin};

std::string pinOf(const std::string& dir, const char* name) { return dir + "/" + name; }

std::vector<bpf_map*> skeletonMaps(const relay_bpf* skel) {
  return {skel->maps.relay_socks, skel->maps.relay_peers,   skel->maps.relay_counters,
          skel->maps.relay_meta,  skel->maps.relay_targets, skel->maps.relay_events};
}

std::vector<std::string> mapPins(const std::string& dir) {
  std::vector<std::string> pins;
  pins.reserve(kMapPins.size());
  for (const char* name : kMapPins) pins.push_back(pinOf(dir, name));
  return pins;
}

Result<void> libbpfCall(int rc, const std::string& what) {
  if (rc == 0) return {};
  errno = -rc;
  return errnoError(what);
}

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
  for (const char* name : kProxyMapPins) {
    const std::string path = pinOf(dir, name);
    if (::chown(path.c_str(), uid, gid) != 0 || ::chmod(path.c_str(), 0600) != 0) {
      return errnoError(fmt::format("handing {} to uid {}", path, uid));
    }
  }
  return {};
}

// The programs attached to the sockhash as its stream verdict (BPF_PROG_QUERY on a sockmap,
// Linux 5.19). One at most: attaching replaces.
Result<std::vector<uint32_t>> attachedVerdicts(int socks_fd) {
  std::array<uint32_t, 4> ids{};
  uint32_t count = ids.size();
  uint32_t flags = 0;
  if (auto r = libbpfCall(
          bpf_prog_query(socks_fd, BPF_SK_SKB_STREAM_VERDICT, 0, &flags, ids.data(), &count),
          "querying the program attached to the relay's sockhash");
      !r) {
    return r.error();
  }
  return std::vector<uint32_t>(ids.begin(), ids.begin() + std::min<size_t>(count, ids.size()));
}

uint32_t progId(int prog_fd) {
  bpf_prog_info info{};
  __u32 len = sizeof(info);
  return bpf_obj_get_info_by_fd(prog_fd, &info, &len) == 0 ? info.id : 0;
}

// The program attached to the sockhash (a new fd, to put it back), -1 when none is: through its
// pin when the pin names it (opening a pin needs no CAP_SYS_ADMIN, unlike
// BPF_PROG_GET_FD_BY_ID, which the install otherwise needs).
int oldProgram(const std::string& dir, const std::vector<uint32_t>& attached) {
  if (attached.empty()) return -1;
  const int pinned = bpf_obj_get(pinOf(dir, kProgPin).c_str());
  if (pinned >= 0 && progId(pinned) == attached.front()) return pinned;
  if (pinned >= 0) ::close(pinned);
  return bpf_prog_get_fd_by_id(attached.front());
}

// Pins of another build (the pod's pin dir survived and a new init container runs): this
// build's program is loaded onto the pinned maps, so the proxy's map fds, the relayed pairs'
// entries and the counters stay, and attached to the sockhash in the old one's place. The
// kernel swaps the sockhash's program in one exchange (BPF_PROG_ATTACH of a sockmap takes no
// BPF_F_REPLACE; attaching replaces): sockets inserted from then on run the new program, while a
// socket already in the map keeps the program it was inserted with until it leaves the map. The
// new program is pinned beside the old one and renamed over it last; a failure before that puts
// the old program back on the sockhash and the old record back, so it leaves the old program
// attached and the old pins.
Result<void> upgradeRelay(const std::string& dir, RelayInstallReport& report) {
  RelaySkeleton skel;
  if (auto r = skel.open(); !r) return r.error();
  const std::vector<bpf_map*> maps = skeletonMaps(skel.get());
  const std::vector<std::string> pins = mapPins(dir);
  auto unpinned = reusePinnedMaps(maps, pins);
  if (!unpinned) {
    return makeError(fmt::format(
        "the kernel relay pinned in {} is another Remora build's, whose maps this build cannot "
        "use: {}; remove it (remora-init relay uninstall) while no proxy uses it, then install",
        dir, unpinned.error().message));
  }
  if (auto r = skel.load(); !r) return r.error();
  const int socks = bpf_map__fd(skel->maps.relay_socks);
  const int prog = bpf_program__fd(skel->progs.remora_relay_verdict);
  auto old_ids = attachedVerdicts(socks);
  if (!old_ids) return old_ids.error();
  Fd old_prog(oldProgram(dir, *old_ids));
  if (!old_ids->empty() && !old_prog.valid()) {
    return errnoError(fmt::format("opening the relay's verdict program {}", old_ids->front()));
  }

  // Each step records how to undo itself; a failure undoes them all, last first.
  std::vector<std::function<void()>> undo;
  auto fail = [&undo](Error error) -> Result<void> {
    for (auto it = undo.rbegin(); it != undo.rend(); ++it) (*it)();
    return error;
  };
  const std::string staging = pinOf(dir, kProgStagingPin);
  ::unlink(staging.c_str());  // a failed upgrade's, if it could not remove it
  if (auto r = libbpfCall(bpf_program__pin(skel->progs.remora_relay_verdict, staging.c_str()),
                          "pinning " + staging);
      !r) {
    return fail(r.error());
  }
  undo.emplace_back([staging] { ::unlink(staging.c_str()); });
  for (size_t i : *unpinned) {
    const std::string& path = pins[i];
    if (auto r = libbpfCall(bpf_map__pin(maps[i], path.c_str()), "pinning " + path); !r) {
      return fail(r.error());
    }
    undo.emplace_back([path] { ::unlink(path.c_str()); });
  }
  if (auto r = libbpfCall(bpf_prog_attach(prog, socks, BPF_SK_SKB_STREAM_VERDICT, 0),
                          "attaching this build's verdict program to the relay's sockhash");
      !r) {
    return fail(r.error());
  }
  undo.emplace_back([&old_prog, socks, prog] {
    if (old_prog.valid()) {
      bpf_prog_attach(old_prog.get(), socks, BPF_SK_SKB_STREAM_VERDICT, 0);
    } else {
      bpf_prog_detach2(prog, socks, BPF_SK_SKB_STREAM_VERDICT);
    }
  });
  const int meta = bpf_map__fd(skel->maps.relay_meta);
  if (auto r = writeObjectHash(meta, relayObjectHash(), pinOf(dir, kMetaPin)); !r) {
    return fail(r.error());
  }
  undo.emplace_back([meta, old = report.old_build] { (void)writeObjectHash(meta, old, kMetaPin); });
  const std::string prog_pin = pinOf(dir, kProgPin);
  if (::rename(staging.c_str(), prog_pin.c_str()) != 0) {
    return fail(errnoError(fmt::format("renaming {} to {}", staging, prog_pin)));
  }
  report.upgraded = true;
  report.old_prog_id = old_ids->empty() ? 0 : old_ids->front();
  report.prog_id = progId(prog);
  return {};
}

// A first install: load, record the build, attach, pin. All or nothing.
Result<void> freshInstall(const std::string& dir, RelayInstallReport& report) {
  RelaySkeleton skel;
  if (auto r = skel.open(); !r) return r.error();
  if (auto r = skel.load(); !r) return r.error();
  if (auto r = writeObjectHash(bpf_map__fd(skel->maps.relay_meta), relayObjectHash(),
                               pinOf(dir, kMetaPin));
      !r) {
    return r.error();
  }
  // Attached to the map, not to a link: the program stays with the sockhash for as long as the
  // map lives, which the pin decides.
  if (auto r = libbpfCall(
          bpf_prog_attach(bpf_program__fd(skel->progs.remora_relay_verdict),
                          bpf_map__fd(skel->maps.relay_socks), BPF_SK_SKB_STREAM_VERDICT, 0),
          "attaching the relay verdict program to its sockhash");
      !r) {
    return r.error();
  }
  const std::vector<bpf_map*> maps = skeletonMaps(skel.get());
  const std::vector<std::string> pins = mapPins(dir);
  for (size_t i = 0; i < maps.size(); ++i) {
    if (auto r = libbpfCall(bpf_map__pin(maps[i], pins[i].c_str()), "pinning " + pins[i]); !r) {
      return r.error();
    }
  }
  const std::string path = pinOf(dir, kProgPin);
  if (auto r = libbpfCall(bpf_program__pin(skel->progs.remora_relay_verdict, path.c_str()),
                          "pinning " + path);
      !r) {
    return r.error();
  }
  report.prog_id = progId(bpf_program__fd(skel->progs.remora_relay_verdict));
  return {};
}

std::string describeBuild(uint64_t build) {
  if (build == 0) {
    return "none recorded (a build before the record: the next `remora-init relay install` "
           "replaces its program)";
  }
  return fmt::format("{:016x} ({})", build,
                     build == relayObjectHash()
                         ? "this binary's"
                         : "not this binary's: its next `remora-init relay install` replaces the "
                           "program in place");
}

std::string idList(const std::vector<uint32_t>& ids) {
  if (ids.empty()) return "none";
  std::string out;
  for (uint32_t id : ids) out += (out.empty() ? "" : ", ") + std::to_string(id);
  return out;
}

}  // namespace

uint64_t relayObjectHash() { return objectHash(relay_bpf__elf_bytes); }

Result<RelayInstallReport> installRelay(const std::string& pin_dir, uint32_t uid, uint32_t gid) {
  RelayInstallReport report;
  report.pin_dir = pin_dir;
  if (auto r = makeDirs(pin_dir); !r) return r.error();
  // Two installs at once (a restarted init container, the node agent) take turns.
  auto lock = lockPinDir(pin_dir);
  if (!lock) return lock.error();
  if (::access(pinOf(pin_dir, kSocksPin).c_str(), F_OK) == 0) {
    report.already_installed = true;
    report.old_build = pinnedObjectHash(pinOf(pin_dir, kMetaPin));
    if (report.old_build != relayObjectHash()) {
      if (auto r = upgradeRelay(pin_dir, report); !r) return r.error();
    }
    if (auto r = handToProxy(pin_dir, uid, gid); !r) return r.error();
    return report;
  }
  auto installed = freshInstall(pin_dir, report);
  if (installed) installed = handToProxy(pin_dir, uid, gid);
  if (!installed) {
    (void)uninstallRelay(pin_dir);  // all or nothing
    return installed.error();
  }
  return report;
}

Result<void> uninstallRelay(const std::string& pin_dir) {
  Result<void> result;
  for (const char* name : {kSocksPin, kPeersPin, kCountersPin, kMetaPin, kTargetsPin, kEventsPin,
                           kProgPin, kProgStagingPin}) {
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

Result<RelayStatus> relayStatus(const std::string& pin_dir) {
  RelayStatus status;
  const std::string socks_pin = pinOf(pin_dir, kSocksPin);
  Fd socks(bpf_obj_get(socks_pin.c_str()));
  if (!socks.valid()) {
    if (errno == ENOENT) return status;
    return errnoError("opening " + socks_pin);
  }
  status.installed = true;
  status.build = pinnedObjectHash(pinOf(pin_dir, kMetaPin));
  auto attached = attachedVerdicts(socks.get());
  if (!attached) return attached.error();
  status.attached = *attached;
  Fd prog(bpf_obj_get(pinOf(pin_dir, kProgPin).c_str()));
  if (prog.valid()) status.pinned_prog_id = progId(prog.get());
  return status;
}

int runRelayCommand(const std::vector<std::string>& args) {
  CLI::App app{
      "remora-init relay: load and pin the proxy's kernel relay (sockmap), show it, or remove it"};
  app.require_subcommand(1, 1);
  std::string pin_dir = "/sys/fs/bpf/remora/relay";
  uint32_t uid = 1337;
  uint32_t gid = 1337;
  bool json = false;
  auto* install = app.add_subcommand(
      "install", "load, attach and pin for the proxy's uid (another build's: replace its program)");
  auto* uninstall = app.add_subcommand("uninstall", "remove the pins");
  auto* status = app.add_subcommand(
      "status", "show the attached program and its build (exit 1 when nothing is pinned)");
  for (auto* cmd : {install, uninstall, status}) {
    cmd->add_option("--pin-dir", pin_dir, "where the maps are pinned (/sys/fs/bpf/remora/relay)")
        ->envname("REMORA_RELAY_PIN_DIR");
  }
  install->add_option("--proxy-uid", uid, "uid that owns the pinned maps (1337)")
      ->envname("REMORA_PROXY_UID");
  install->add_option("--proxy-gid", gid, "gid that owns the pinned maps (1337)")
      ->envname("REMORA_PROXY_GID");
  status->add_flag("--json", json, "print JSON");
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
    if (report->upgraded) {
      std::cout << fmt::format(
          "kernel relay in {} upgraded from build {:016x} to {:016x} for uid {}: verdict program "
          "{} replaced by {} on the same maps (sockets already relayed keep program {} until "
          "they close)\n",
          pin_dir, report->old_build, relayObjectHash(), uid, report->old_prog_id, report->prog_id,
          report->old_prog_id);
    } else {
      std::cout << fmt::format("kernel relay {} in {} for uid {}\n",
                               report->already_installed ? "already installed" : "installed",
                               pin_dir, uid);
    }
    return 0;
  }
  if (status->parsed()) {
    auto s = relayStatus(pin_dir);
    if (!s) {
      std::cerr << "remora-init relay status: " << s.error().message << "\n";
      return 1;
    }
    if (json) {
      nlohmann::json j{{"pin_dir", pin_dir},
                       {"installed", s->installed},
                       {"build", fmt::format("{:016x}", s->build)},
                       {"this_build", fmt::format("{:016x}", relayObjectHash())},
                       {"build_is_this_binary", s->build == relayObjectHash()},
                       {"attached_prog_ids", s->attached},
                       {"pinned_prog_id", s->pinned_prog_id}};
      std::cout << j.dump(2) << "\n";
    } else if (!s->installed) {
      std::cout << fmt::format("no kernel relay pinned in {}\n", pin_dir);
    } else {
      std::cout << fmt::format(
          "kernel relay pinned in {}\nbuild: {}\nverdict program: {} attached to the sockhash, "
          "{} pinned\n",
          pin_dir, describeBuild(s->build), idList(s->attached),
          s->pinned_prog_id ? std::to_string(s->pinned_prog_id) : "none");
    }
    return s->installed ? 0 : 1;
  }
  if (auto r = uninstallRelay(pin_dir); !r) {
    std::cerr << "remora-init relay uninstall: " << r.error().message << "\n";
    return 1;
  }
  std::cout << fmt::format("kernel relay removed from {}\n", pin_dir);
  return 0;
}

}  // namespace remora::intercept
