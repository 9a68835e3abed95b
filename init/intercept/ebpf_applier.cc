// The eBPF applier (docs/EBPF.md): cgroup connect4/6 + sockops + getsockopt, attached once per
// node and shared by every meshed netns through the pinned settings map.
#include "intercept/ebpf_applier.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <ifaddrs.h>
#include <linux/magic.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "intercept/backend.h"
#include "intercept/ebpf_pins.h"
#include "intercept/ebpf_skeleton.h"
#include "intercept/mode.h"
#include "intercept/pinned_build.h"
#include "remora_intercept.skel.h"

namespace remora::intercept {

static_assert(sizeof(remora_port_range) == 4);
static_assert(sizeof(remora_cidr) == 20);
static_assert(sizeof(remora_netns_settings) == 40 + 4 * 16 * 3 + 20 * 16 * 2);
static_assert(sizeof(remora_orig_dst) == 32);
static_assert(sizeof(remora_tuple_key) == 32);
static_assert(sizeof(remora_addr_key) == 20);
static_assert(sizeof(remora_listener_key) == 16);
static_assert(sizeof(remora_pair_key) == 48);
static_assert(std::size(ebpf::kCounterNames) == REMORA_C_MAX);

namespace {

#ifndef SO_NETNS_COOKIE
constexpr int SO_NETNS_COOKIE = 71;  // Linux 5.14
#endif

using InterceptSkeleton = BpfSkeleton<remora_intercept_bpf, &remora_intercept_bpf__open_opts,
                                      &remora_intercept_bpf__load, &remora_intercept_bpf__destroy>;

using ebpf::Fd;

std::string kernelRelease() {
  utsname u{};
  return ::uname(&u) == 0 ? u.release : "unknown";
}

// The skeleton's maps, in kMapPins' order.
std::array<bpf_map*, std::size(ebpf::kMapPins)> skeletonMaps(const remora_intercept_bpf* skel) {
  return {
      skel->maps.remora_orig_by_cookie, skel->maps.remora_orig_by_tuple, skel->maps.remora_counters,
      skel->maps.remora_inbound_addrs,  skel->maps.remora_listeners,     skel->maps.remora_pairs,
      skel->maps.remora_pairs_slow,     skel->maps.remora_meta,          skel->maps.remora_netns};
}

// The build recorded in the pin dir's map_meta; 0 when there is none (a build before map_meta).
uint64_t pinnedInterceptHash(const std::string& pin_dir) {
  return pinnedObjectHash(ebpf::pinPath(pin_dir, ebpf::kMetaMap));
}

Result<void> writeObjectHash(int meta_fd) {
  static_assert(sizeof(remora_meta) == sizeof(uint64_t));
  return intercept::writeObjectHash(meta_fd, interceptObjectHash(), "map_meta");
}

// The program a pinned link runs now (a new fd), for putting it back.
Result<std::shared_ptr<Fd>> linkProgram(int link_fd, const std::string& path) {
  bpf_link_info info{};
  __u32 len = sizeof(info);
  if (bpf_obj_get_info_by_fd(link_fd, &info, &len) != 0) return errnoError("reading " + path);
  auto prog = std::make_shared<Fd>(bpf_prog_get_fd_by_id(info.prog_id));
  if (!prog->valid()) {
    return errnoError(fmt::format("opening program {} of {}", info.prog_id, path));
  }
  return prog;
}

Result<void> copyPorts(const std::vector<PortRange>& ports, remora_port_range* out, __u32& n,
                       const char* what) {
  if (ports.size() > REMORA_MAX_PORT_RANGES) {
    return makeError(fmt::format("--{}: eBPF mode holds at most {} port ranges, got {}", what,
                                 REMORA_MAX_PORT_RANGES, ports.size()));
  }
  n = static_cast<__u32>(ports.size());
  for (size_t i = 0; i < ports.size(); ++i) out[i] = {ports[i].first, ports[i].last};
  return {};
}

Result<void> copyCidrs(const std::vector<Cidr>& cidrs, remora_cidr* out, __u32& n,
                       const char* what) {
  if (cidrs.size() > REMORA_MAX_CIDRS) {
    return makeError(fmt::format("--{}: eBPF mode holds at most {} CIDRs, got {}", what,
                                 REMORA_MAX_CIDRS, cidrs.size()));
  }
  n = static_cast<__u32>(cidrs.size());
  for (size_t i = 0; i < cidrs.size(); ++i) {
    remora_cidr c{};
    std::memcpy(c.addr, cidrs[i].address.bytes.data(), cidrs[i].address.size());
    c.family = cidrs[i].address.family == Family::kIpv4 ? REMORA_AF_INET : REMORA_AF_INET6;
    c.prefix_len = static_cast<__u8>(cidrs[i].prefix);
    out[i] = c;
  }
  return {};
}

std::string portsText(const remora_port_range* ranges, __u32 n) {
  std::vector<std::string> parts;
  for (__u32 i = 0; i < n && i < REMORA_MAX_PORT_RANGES; ++i) {
    parts.push_back(ranges[i].first == ranges[i].last
                        ? std::to_string(ranges[i].first)
                        : fmt::format("{}-{}", ranges[i].first, ranges[i].last));
  }
  return parts.empty() ? "-" : fmt::format("{}", fmt::join(parts, ","));
}

std::string cidrsText(const remora_cidr* cidrs, __u32 n) {
  std::vector<std::string> parts;
  for (__u32 i = 0; i < n && i < REMORA_MAX_CIDRS; ++i) {
    Cidr c;
    c.address.family = cidrs[i].family == REMORA_AF_INET ? Family::kIpv4 : Family::kIpv6;
    std::memcpy(c.address.bytes.data(), cidrs[i].addr, c.address.size());
    c.prefix = cidrs[i].prefix_len;
    parts.push_back(c.toString());
  }
  return parts.empty() ? "-" : fmt::format("{}", fmt::join(parts, ","));
}

// Mounts bpffs at /sys/fs/bpf when the pin dir lives there and nothing is mounted yet.
Result<void> ensureBpffs(const std::string& pin_dir) {
  const std::string parent = std::filesystem::path(pin_dir).parent_path().string();
  struct statfs fs {};
  if (::statfs(parent.c_str(), &fs) == 0 && fs.f_type == BPF_FS_MAGIC) return {};
  if (parent != "/sys/fs/bpf") {
    return makeError(
        fmt::format("{} is not on a BPF filesystem (bpffs); mount one there or "
                    "choose a pin dir under /sys/fs/bpf",
                    parent));
  }
  if (::mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0) {
    return errnoError("mounting bpffs at /sys/fs/bpf (needs CAP_SYS_ADMIN)");
  }
  return {};
}

Result<void> probeKernel(const std::string& cgroup) {
  if (::access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
    return makeError(fmt::format(
        "kernel BTF is missing (/sys/kernel/btf/vmlinux): eBPF mode needs a kernel built with "
        "CONFIG_DEBUG_INFO_BTF (kernel {})",
        kernelRelease()));
  }
  struct statfs fs {};
  if (::statfs(cgroup.c_str(), &fs) != 0) return errnoError("cgroup " + cgroup);
  if (fs.f_type != CGROUP2_SUPER_MAGIC) {
    return makeError(
        fmt::format("{} is not a cgroup v2 directory: eBPF mode attaches to cgroup v2", cgroup));
  }
  return {};
}

Result<uint64_t> cgroupId(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return errnoError("cgroup " + path);
  return static_cast<uint64_t>(st.st_ino);  // a cgroup v2 directory's inode is its id
}

// The cgroup the pinned connect4 link is attached to, or 0 when unknown.
uint64_t attachedCgroupId(const std::string& pin_dir) {
  Fd link(bpf_obj_get(ebpf::pinPath(pin_dir, ebpf::kLinkPins[0]).c_str()));
  if (!link.valid()) return 0;
  bpf_link_info info{};
  __u32 len = sizeof(info);
  if (bpf_obj_get_info_by_fd(link.get(), &info, &len) != 0) return 0;
  return info.cgroup.cgroup_id;
}

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// REMORA_EBPF_FORCE_HYBRID pretends sk_lookup is unavailable, so the hybrid fallback can be
// tested (and chosen) on a kernel that has it.
bool forceHybrid() {
  const char* v = std::getenv("REMORA_EBPF_FORCE_HYBRID");
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

// Whether the kernel has the sk_lookup program type (Linux >= 5.9).
bool skLookupSupported() {
  return !forceHybrid() && libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_LOOKUP, nullptr) == 1;
}

// The hybrid fallback's rules: iptables mode's inbound capture only (outbound stays eBPF's).
InterceptOptions inboundOnly(const InterceptOptions& o) {
  InterceptOptions in = o;
  in.mode = InterceptMode::kIptables;
  in.include_all_outbound = false;
  in.include_outbound_cidrs.clear();
  in.include_outbound_ports.clear();
  return in;
}

// The registered settings of the netns with this cookie, if any.
std::optional<remora_netns_settings> registeredSettings(const std::string& pin_dir,
                                                        uint64_t cookie) {
  Fd map(bpf_obj_get(ebpf::pinPath(pin_dir, ebpf::kNetnsMap).c_str()));
  remora_netns_settings have{};
  if (!map.valid() || bpf_map_lookup_elem(map.get(), &cookie, &have) != 0) return std::nullopt;
  return have;
}

// The netns's own addresses (not loopback): sk_lookup finds the netns by them.
Result<std::vector<remora_addr_key>> podAddresses(bool ipv6) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return errnoError("listing the netns's addresses");
  std::vector<remora_addr_key> keys;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || (i->ifa_flags & IFF_LOOPBACK)) continue;
    auto sa = SocketAddress::fromSockaddr(i->ifa_addr);
    if (!sa || (sa->ip.family == Family::kIpv6 && !ipv6)) continue;
    remora_addr_key key{};
    key.family = sa->ip.family == Family::kIpv4 ? REMORA_AF_INET : REMORA_AF_INET6;
    std::memcpy(key.addr, sa->ip.bytes.data(), sa->ip.size());
    keys.push_back(key);
  }
  ::freeifaddrs(list);
  return keys;
}

class EbpfApplier : public Applier {
 public:
  explicit EbpfApplier(EbpfConfig config) : config_(std::move(config)) {}

  std::string name() const override { return "ebpf"; }

  Result<ApplyReport> install(const InterceptOptions& options) override {
    if (options.inbound_mode == InboundMode::kTproxy) {
      return makeError(
          "--inbound-interception-mode TPROXY needs --mode iptables or nftables: eBPF mode steers "
          "inbound with sk_lookup, which already keeps the client's address");
    }
    auto settings = netnsSettings(options, wantIpv6(options));
    if (!settings) return settings.error();
    auto cookie = currentNetnsCookie();
    if (!cookie) return cookie.error();
    ApplyReport report;
    report.backend = name();
    report.changed = true;
    auto attached = ensureAttached(report);
    if (!attached) return attached.error();
    auto registered = registerNetns(*cookie, *settings, options, report);
    if (!registered) {
      // The first install undoes its attach too: nothing new is left behind.
      undoAttach(*attached);
      return registered.error();
    }
    return report;
  }

  // remora-cni install-node --mode ebpf: the programs attached and pinned (if they are not yet),
  // and the node hold registered, so they stay attached while no pod is meshed.
  Result<ApplyReport> installNode() {
    ApplyReport report;
    report.backend = name();
    auto attached = ensureAttached(report);
    if (!attached) return attached.error();
    report.changed = attached->first || attached->upgraded;
    Fd map(bpf_obj_get(pin(ebpf::kNetnsMap).c_str()));
    if (!map.valid()) {
      undoAttach(*attached);
      return errnoError("opening " + pin(ebpf::kNetnsMap));
    }
    const uint64_t key = ebpf::kNodeHoldCookie;
    remora_netns_settings hold{};
    if (bpf_map_lookup_elem(map.get(), &key, &hold) == 0) {
      report.lines.emplace_back("ebpf: the node hold is registered already");
      return report;
    }
    hold = remora_netns_settings{};
    if (bpf_map_update_elem(map.get(), &key, &hold, BPF_NOEXIST) != 0) {
      auto error = errnoError("registering the node hold in " + pin(ebpf::kNetnsMap));
      undoAttach(*attached);
      return error;
    }
    report.changed = true;
    report.lines.emplace_back(
        "ebpf: registered the node hold (netns cookie 0): the programs stay attached while no "
        "pod is meshed");
    return report;
  }

  Result<std::string> dryRun(const InterceptOptions& options) override {
    auto settings = netnsSettings(options, wantIpv6(options));
    if (!settings) return settings.error();
    auto cgroup = cgroupPath();
    if (!cgroup) return cgroup.error();
    return fmt::format("# eBPF mode: programs attached to {}, pinned in {}\n{}", *cgroup,
                       config_.pin_dir, describeSettings(*settings));
  }

  Result<ApplyReport> uninstall() override {
    auto cookie = currentNetnsCookie();
    if (!cookie) return cookie.error();
    std::vector<std::string> hybrid_lines;
    auto have = registeredSettings(config_.pin_dir, *cookie);
    if (have && (have->flags & REMORA_F_INBOUND_HYBRID)) {
      // The hybrid's inbound rules live in this netns; remove them while it is here.
      auto removed = uninstallAll(kDefaultCommandTimeout);
      if (!removed) return removed.error();
      hybrid_lines = removed->lines;
    }
    auto report = uninstallCookie(*cookie);
    if (report)
      report->lines.insert(report->lines.begin(), hybrid_lines.begin(), hybrid_lines.end());
    return report;
  }

  // Unregisters the netns with this cookie (it need not exist any more: nothing here enters it),
  // and after the last one detaches and unpins everything.
  Result<ApplyReport> uninstallCookie(uint64_t cookie) {
    ApplyReport report;
    report.backend = name();
    const std::string netns_pin = ebpf::pinPath(config_.pin_dir, ebpf::kNetnsMap);
    if (!exists(config_.pin_dir)) {
      report.lines.push_back("ebpf: nothing installed (no " + config_.pin_dir + ")");
      return report;
    }
    auto lock = lockPinDir();
    if (!lock) return lock.error();
    bool empty = true;
    if (exists(netns_pin)) {
      Fd map(bpf_obj_get(netns_pin.c_str()));
      if (!map.valid()) return errnoError("opening " + netns_pin);
      if (auto r = unregisterNetns(map.get(), cookie, report); !r) return r.error();
      uint64_t key = 0;
      empty = bpf_map_get_next_key(map.get(), nullptr, &key) != 0;
    }
    if (!empty) {
      report.lines.emplace_back("ebpf: other meshed netns remain; programs stay attached");
      return report;
    }
    // The last meshed netns is gone: unpinning the links detaches the programs, and the maps go
    // with the last reference.
    removeAllPins(&report);
    report.changed = true;
    if (::rmdir(config_.pin_dir.c_str()) == 0 || errno == ENOENT) {
      report.lines.push_back("ebpf: detached the programs and removed " + config_.pin_dir);
    } else if (errno == ENOTEMPTY) {
      // A directory in it is someone else's: the proxy's kernel relay pins in <pin dir>/relay by
      // default (remora-init relay install). Its pins stay, and so does the directory.
      report.lines.push_back(fmt::format("ebpf: detached the programs; kept {}: it holds {}",
                                         config_.pin_dir, otherEntries()));
    } else {
      return errnoError("removing " + config_.pin_dir);
    }
    return report;
  }

  Result<void> check(const InterceptOptions& options) override {
    auto settings = netnsSettings(options, wantIpv6(options));
    if (!settings) return settings.error();
    for (const char* link : ebpf::kLinkPins) {
      if (!exists(ebpf::pinPath(config_.pin_dir, link))) {
        return makeError(fmt::format("{} is not pinned: the programs are not attached",
                                     ebpf::pinPath(config_.pin_dir, link)));
      }
    }
    auto cookie = currentNetnsCookie();
    if (!cookie) return cookie.error();
    Fd map(bpf_obj_get(ebpf::pinPath(config_.pin_dir, ebpf::kNetnsMap).c_str()));
    if (!map.valid()) return errnoError("opening the pinned netns map");
    remora_netns_settings have{};
    if (bpf_map_lookup_elem(map.get(), &*cookie, &have) != 0) {
      return makeError(fmt::format("netns cookie {} is not registered", *cookie));
    }
    if ((settings->flags & REMORA_F_INBOUND) && (have.flags & REMORA_F_INBOUND_HYBRID)) {
      settings->flags |= REMORA_F_INBOUND_HYBRID;
      if (auto rules = makeIptablesApplier(options.command_timeout)->check(inboundOnly(options));
          !rules) {
        return makeError("the hybrid's inbound iptables rules: " + rules.error().message);
      }
    } else if ((settings->flags & REMORA_F_INBOUND) && !exists(skLookupPin(*cookie))) {
      return makeError(fmt::format("{} is not pinned: inbound is not steered in this netns",
                                   skLookupPin(*cookie)));
    }
    if (std::memcmp(&have, &*settings, sizeof(have)) != 0) {
      return makeError(fmt::format("netns cookie {} is registered with other settings:\n{}",
                                   *cookie, describeSettings(have)));
    }
    return {};
  }

 private:
  static bool wantIpv6(const InterceptOptions& options) {
    return options.ipv6 == Ipv6Mode::kOn || (options.ipv6 == Ipv6Mode::kAuto && ipv6Enabled());
  }

  struct Attached {
    std::shared_ptr<Fd> lock;  // the pin dir's flock, held until the caller is done
    bool first = false;        // this call attached and pinned the programs
    bool created_dir = false;  // this call created the pin dir
    bool upgraded = false;     // this call replaced another build's programs
  };

  // The node half of an install: probes, bpffs, the pin dir and its lock, then the programs
  // attached to the cgroup and pinned, unless they are already (then to the same cgroup). On
  // failure nothing new is left.
  Result<Attached> ensureAttached(ApplyReport& report) {
    auto cgroup = cgroupPath();
    if (!cgroup) return cgroup.error();
    if (auto probed = probeKernel(*cgroup); !probed) return probed.error();
    if (auto fs = ensureBpffs(config_.pin_dir); !fs) return fs.error();
    Attached a;
    if (::mkdir(config_.pin_dir.c_str(), 0700) == 0) {
      a.created_dir = true;
    } else if (errno != EEXIST) {
      return errnoError("creating " + config_.pin_dir);
    }
    auto lock = lockPinDir();
    if (!lock) {
      if (a.created_dir) ::rmdir(config_.pin_dir.c_str());
      return lock.error();
    }
    a.lock = *lock;
    a.first = !exists(ebpf::pinPath(config_.pin_dir, ebpf::kNetnsMap));
    if (a.first) {
      auto attached = attachAndPin(*cgroup);
      if (!attached) {
        if (a.created_dir) ::rmdir(config_.pin_dir.c_str());
        return attached.error();
      }
      report.lines.push_back(
          fmt::format("ebpf: attached connect4, connect6, sockops, getsockopt to {}; pinned in {}",
                      *cgroup, config_.pin_dir));
      return a;
    }
    auto want = cgroupId(*cgroup);
    if (!want) return want.error();
    uint64_t have = attachedCgroupId(config_.pin_dir);
    if (have != 0 && have != *want) {
      return makeError(fmt::format(
          "the programs pinned in {} are attached to cgroup id {}, not {} (id {}); use that "
          "cgroup or uninstall every meshed netns first",
          config_.pin_dir, have, *cgroup, *want));
    }
    if (pinnedInterceptHash(config_.pin_dir) != interceptObjectHash()) {
      auto upgraded = upgrade(report);
      if (!upgraded) return upgraded.error();
      a.upgraded = true;
      return a;
    }
    report.lines.push_back(fmt::format("ebpf: programs already attached to {} (pinned in {})",
                                       *cgroup, config_.pin_dir));
    return a;
  }

  // Programs pinned by another build of Remora (a node agent upgraded while pods stay meshed)
  // are replaced in place: this build's programs are loaded onto the pinned maps, so every
  // meshed netns stays registered and every record is kept, and each pinned link is switched to
  // its new program atomically (BPF_LINK_UPDATE). A pinned map of another shape cannot be
  // reused: the upgrade is refused with the map named, and nothing changes. A failure part way
  // puts the old programs back.
  Result<void> upgrade(ApplyReport& report) {
    const uint64_t old_hash = pinnedInterceptHash(config_.pin_dir);
    InterceptSkeleton skel;
    if (auto r = skel.open(); !r) return r.error();
    // sk_lookup where it was (a hybrid node stays one).
    const bool sk_lookup = exists(pin(ebpf::kSkLookupProg));
    if (!sk_lookup) bpf_program__set_autoload(skel->progs.remora_sk_lookup, false);
    const auto maps = skeletonMaps(skel.get());
    std::vector<std::string> pins;
    for (const char* name : ebpf::kMapPins) pins.push_back(pin(name));
    // Maps this build has and the pinned build had not.
    auto unpinned = reusePinnedMaps({maps.begin(), maps.end()}, pins);
    if (!unpinned) {
      return makeError(fmt::format(
          "the programs pinned in {} are another Remora build's, whose maps this build cannot "
          "use: {}; uninstall every meshed netns (and remora-cni uninstall-node) to upgrade",
          config_.pin_dir, unpinned.error().message));
    }
    if (auto r = skel.load(); !r) return r.error();

    // Each step records how to undo itself; a failure undoes them all, last first.
    std::vector<std::function<void()>> undo;
    auto fail = [&undo](Error error) -> Result<void> {
      for (auto it = undo.rbegin(); it != undo.rend(); ++it) (*it)();
      return error;
    };
    for (size_t i : *unpinned) {
      const std::string path = pin(ebpf::kMapPins[i]);
      if (bpf_map__pin(maps[i], path.c_str()) != 0) return fail(errnoError("pinning " + path));
      undo.emplace_back([path] { ::unlink(path.c_str()); });
    }
    // The new sk_lookup program is pinned beside the old one and renamed over it at the end.
    const std::string sk_lookup_pin = pin(ebpf::kSkLookupProg);
    const std::string sk_lookup_new = sk_lookup_pin + "_new";
    if (sk_lookup) {
      ::unlink(sk_lookup_new.c_str());
      if (bpf_program__pin(skel->progs.remora_sk_lookup, sk_lookup_new.c_str()) != 0) {
        return fail(errnoError("pinning " + sk_lookup_new));
      }
      undo.emplace_back([sk_lookup_new] { ::unlink(sk_lookup_new.c_str()); });
    }
    // Every pinned link: the four on the cgroup, and sk_lookup's one per meshed netns.
    std::vector<std::pair<std::string, const bpf_program*>> links;
    links.reserve(std::size(ebpf::kLinkPins));
    const bpf_program* cgroup_progs[] = {skel->progs.remora_connect4, skel->progs.remora_connect6,
                                         skel->progs.remora_sockopt, skel->progs.remora_sockops};
    static_assert(std::size(cgroup_progs) == std::size(ebpf::kLinkPins));
    for (size_t i = 0; i < std::size(cgroup_progs); ++i) {
      links.emplace_back(pin(ebpf::kLinkPins[i]), cgroup_progs[i]);
    }
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(config_.pin_dir, ec)) {
      if (entry.path().filename().string().rfind(ebpf::kSkLookupLinkPrefix, 0) == 0) {
        links.emplace_back(entry.path().string(), skel->progs.remora_sk_lookup);
      }
    }
    for (const auto& [path, prog] : links) {
      auto link = std::make_shared<Fd>(bpf_obj_get(path.c_str()));
      if (!link->valid()) return fail(errnoError("opening " + path));
      auto old_prog = linkProgram(link->get(), path);
      if (!old_prog) return fail(old_prog.error());
      if (bpf_link_update(link->get(), bpf_program__fd(prog), nullptr) != 0) {
        return fail(errnoError("switching " + path + " to this build's program"));
      }
      undo.emplace_back(
          [link, old = *old_prog] { bpf_link_update(link->get(), old->get(), nullptr); });
    }
    // sk_msg is attached to the fast path's sockhash itself: attaching replaces the old one.
    if (bpf_prog_attach(bpf_program__fd(skel->progs.remora_msg),
                        bpf_map__fd(skel->maps.remora_pairs), BPF_SK_MSG_VERDICT, 0) != 0) {
      return fail(errnoError("attaching sk_msg to the fast path's sockhash"));
    }
    if (auto r = writeObjectHash(bpf_map__fd(skel->maps.remora_meta)); !r) return fail(r.error());
    if (sk_lookup && ::rename(sk_lookup_new.c_str(), sk_lookup_pin.c_str()) != 0) {
      return fail(errnoError("renaming " + sk_lookup_new + " to " + sk_lookup_pin));
    }
    report.lines.push_back(fmt::format(
        "ebpf: upgraded the programs pinned in {} from build {:016x} to {:016x}: {} links "
        "switched, {} maps kept{}",
        config_.pin_dir, old_hash, interceptObjectHash(), links.size(),
        maps.size() - unpinned->size(),
        unpinned->empty() ? "" : fmt::format(", {} new", unpinned->size())));
    return {};
  }

  // Undoes what ensureAttached did for a caller that failed after it.
  void undoAttach(const Attached& a) const {
    if (a.first) removeAllPins(nullptr);
    if (a.created_dir) ::rmdir(config_.pin_dir.c_str());
  }

  Result<std::string> cgroupPath() const {
    if (!config_.cgroup.empty()) return config_.cgroup;
    return defaultCgroupRoot();
  }

  Result<std::shared_ptr<Fd>> lockPinDir() const { return intercept::lockPinDir(config_.pin_dir); }

  std::string skLookupPin(uint64_t cookie) const {
    return ebpf::pinPath(config_.pin_dir, ebpf::kSkLookupLinkPrefix + std::to_string(cookie));
  }

  std::string pin(const char* name) const { return ebpf::pinPath(config_.pin_dir, name); }

  // Every pin in the pin dir is eBPF mode's: unpinning a link detaches its program. A directory
  // (the kernel relay's, "relay") is not, and stays with what it holds.
  void removeAllPins(ApplyReport* report) const {
    std::error_code ec;
    std::vector<std::string> paths;
    for (const auto& entry : std::filesystem::directory_iterator(config_.pin_dir, ec)) {
      if (!entry.is_directory(ec)) paths.push_back(entry.path().string());
    }
    // Links first, so no program runs against a half-removed set of maps.
    std::stable_partition(paths.begin(), paths.end(), [](const std::string& p) {
      return p.find("/link_") != std::string::npos;
    });
    for (const auto& path : paths) {
      if (::unlink(path.c_str()) == 0 && report) report->lines.push_back("ebpf: unpinned " + path);
    }
  }

  // The names left in the pin dir after removeAllPins, for the report.
  std::string otherEntries() const {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(config_.pin_dir, ec)) {
      names.push_back(entry.path().filename().string() + (entry.is_directory(ec) ? "/" : ""));
    }
    std::sort(names.begin(), names.end());
    return fmt::format("{}", fmt::join(names, ", "));
  }

  // Attaches the pinned sk_lookup program to the calling thread's netns and pins the link; the
  // error says why sk_lookup cannot be used here.
  Result<void> attachSkLookup(const std::string& link_pin) const {
    if (forceHybrid()) return makeError("REMORA_EBPF_FORCE_HYBRID is set");
    Fd prog(bpf_obj_get(pin(ebpf::kSkLookupProg).c_str()));
    if (!prog.valid()) {
      return makeError(
          fmt::format("the kernel has no sk_lookup (Linux >= 5.9; kernel {})", kernelRelease()));
    }
    Fd netns(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!netns.valid()) return errnoError("opening /proc/thread-self/ns/net");
    Fd link(bpf_link_create(prog.get(), netns.get(), BPF_SK_LOOKUP, nullptr));
    if (!link.valid()) {
      return errnoError(
          fmt::format("attaching sk_lookup to this netns (kernel {})", kernelRelease()));
    }
    if (bpf_obj_pin(link.get(), link_pin.c_str()) != 0) return errnoError("pinning " + link_pin);
    return {};
  }

  // Registers the calling thread's netns: its sk_lookup link and pod addresses when inbound is
  // captured (or, where sk_lookup cannot be used, iptables mode's inbound rules: the hybrid),
  // then its settings (what the connect programs look up). Undoes its own steps on failure.
  Result<void> registerNetns(uint64_t cookie, remora_netns_settings settings,
                             const InterceptOptions& options, ApplyReport& report) {
    std::vector<std::string> new_pins;
    std::vector<remora_addr_key> new_addrs;
    bool new_rules = false;
    Fd addrs(bpf_obj_get(pin(ebpf::kInboundAddrsMap).c_str()));
    if (!addrs.valid()) return errnoError("opening " + pin(ebpf::kInboundAddrsMap));
    auto undo = [&](Error error) {
      for (const auto& path : new_pins) ::unlink(path.c_str());
      for (const auto& key : new_addrs) bpf_map_delete_elem(addrs.get(), &key);
      if (new_rules) (void)uninstallAll(options.command_timeout);
      return error;
    };
    const auto before = registeredSettings(config_.pin_dir, cookie);
    const bool was_hybrid = before && (before->flags & REMORA_F_INBOUND_HYBRID);
    const std::string link_pin = skLookupPin(cookie);
    std::string no_sk_lookup;
    if ((settings.flags & REMORA_F_INBOUND) && !exists(link_pin)) {
      if (auto linked = attachSkLookup(link_pin); linked) {
        new_pins.push_back(link_pin);
      } else {
        no_sk_lookup = linked.error().message;
      }
    }
    if ((settings.flags & REMORA_F_INBOUND) && !no_sk_lookup.empty()) {
      settings.flags |= REMORA_F_INBOUND_HYBRID;
      auto rules = makeIptablesApplier(options.command_timeout)->install(inboundOnly(options));
      if (!rules)
        return undo(Error{rules.error().code, "hybrid inbound rules: " + rules.error().message});
      new_rules = !was_hybrid;
      report.lines.push_back(fmt::format(
          "ebpf: sk_lookup cannot be used here ({}); inbound is captured by iptables rules to port "
          "{} instead (hybrid, {})",
          no_sk_lookup, settings.inbound_port, rules->backend));
    } else if (was_hybrid) {
      // The netns was a hybrid and no longer is: its inbound rules go.
      auto removed = uninstallAll(options.command_timeout);
      if (!removed) return undo(removed.error());
      report.lines.emplace_back("ebpf: removed the hybrid's inbound iptables rules");
    }
    if ((settings.flags & REMORA_F_INBOUND) && !(settings.flags & REMORA_F_INBOUND_HYBRID)) {
      auto pod = podAddresses((settings.flags & REMORA_F_IPV6) != 0);
      if (!pod) return undo(pod.error());
      for (const auto& key : *pod) {
        uint64_t have = 0;
        if (bpf_map_lookup_elem(addrs.get(), &key, &have) != 0) new_addrs.push_back(key);
        if (bpf_map_update_elem(addrs.get(), &key, &cookie, BPF_ANY) != 0) {
          return undo(errnoError("registering the pod's addresses"));
        }
      }
      report.lines.push_back(
          fmt::format("ebpf: sk_lookup steers inbound to {} pod address(es) to port {} ({})",
                      pod->size(), settings.inbound_port, link_pin));
    } else if (::unlink(link_pin.c_str()) == 0) {
      report.lines.push_back("ebpf: inbound capture off: unpinned " + link_pin);
    }
    Fd map(bpf_obj_get(pin(ebpf::kNetnsMap).c_str()));
    if (!map.valid()) return undo(errnoError("opening " + pin(ebpf::kNetnsMap)));
    if (bpf_map_update_elem(map.get(), &cookie, &settings, BPF_ANY) != 0) {
      return undo(errnoError("registering the netns in " + pin(ebpf::kNetnsMap)));
    }
    report.lines.push_back(fmt::format("ebpf: registered netns cookie {}", cookie));
    return {};
  }

  Result<void> unregisterNetns(int netns_map, uint64_t cookie, ApplyReport& report) {
    if (bpf_map_delete_elem(netns_map, &cookie) == 0) {
      report.changed = true;
      report.lines.push_back(fmt::format("ebpf: unregistered netns cookie {}", cookie));
    } else if (errno != ENOENT) {
      return errnoError("unregistering the netns");
    } else {
      report.lines.push_back(fmt::format("ebpf: netns cookie {} was not registered", cookie));
    }
    if (::unlink(skLookupPin(cookie).c_str()) == 0) {
      report.lines.push_back("ebpf: unpinned " + skLookupPin(cookie));
    }
    Fd addrs(bpf_obj_get(pin(ebpf::kInboundAddrsMap).c_str()));
    if (!addrs.valid()) return {};
    std::vector<remora_addr_key> mine;
    remora_addr_key key{};
    remora_addr_key* prev = nullptr;
    while (bpf_map_get_next_key(addrs.get(), prev, &key) == 0) {
      uint64_t owner = 0;
      if (bpf_map_lookup_elem(addrs.get(), &key, &owner) == 0 && owner == cookie) {
        mine.push_back(key);
      }
      prev = &key;
    }
    for (const auto& k : mine) bpf_map_delete_elem(addrs.get(), &k);
    return {};
  }

  // First install on the node: load, attach, register, pin. Any failure unpins what was pinned
  // and the skeleton's destruction detaches what was attached, so nothing new is left behind.
  Result<void> attachAndPin(const std::string& cgroup) {
    Fd cg(::open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cg.valid()) return errnoError("opening cgroup " + cgroup);
    InterceptSkeleton skel;
    if (auto r = skel.open(); !r) return r.error();
    // Without sk_lookup the rest still loads; every netns then takes the hybrid fallback.
    const bool sk_lookup = skLookupSupported();
    if (!sk_lookup) bpf_program__set_autoload(skel->progs.remora_sk_lookup, false);
    if (auto r = skel.load(); !r) {
      return makeError(fmt::format(
          "{} (kernel {}; eBPF mode needs Linux >= 5.15 and CAP_BPF + CAP_NET_ADMIN, or root)",
          r.error().message, kernelRelease()));
    }
    struct Attach {
      bpf_program* prog;
      bpf_link** link;
    };
    const Attach attaches[] = {{skel->progs.remora_connect4, &skel->links.remora_connect4},
                               {skel->progs.remora_connect6, &skel->links.remora_connect6},
                               {skel->progs.remora_sockopt, &skel->links.remora_sockopt},
                               {skel->progs.remora_sockops, &skel->links.remora_sockops}};
    static_assert(std::size(attaches) == std::size(ebpf::kLinkPins));
    for (const auto& a : attaches) {
      *a.link = bpf_program__attach_cgroup(a.prog, cg.get());
      if (*a.link == nullptr) {
        return errnoError(fmt::format("attaching {} to {}", bpf_program__name(a.prog), cgroup));
      }
    }
    // Links first and the netns map last: the netns map's pin is what tells the next install
    // that everything is attached.
    std::vector<std::string> pinned;
    auto rollback = [&](Error error) {
      for (const auto& path : pinned) ::unlink(path.c_str());
      return error;
    };
    for (size_t i = 0; i < std::size(attaches); ++i) {
      std::string path = ebpf::pinPath(config_.pin_dir, ebpf::kLinkPins[i]);
      if (bpf_link__pin(*attaches[i].link, path.c_str()) != 0) {
        return rollback(errnoError("pinning " + path));
      }
      pinned.push_back(path);
    }
    if (sk_lookup) {
      if (bpf_program__pin(skel->progs.remora_sk_lookup, pin(ebpf::kSkLookupProg).c_str()) != 0) {
        return rollback(errnoError("pinning " + pin(ebpf::kSkLookupProg)));
      }
      pinned.push_back(pin(ebpf::kSkLookupProg));
    }
    // sk_msg is attached to the fast path's sockhash, and stays attached while the map lives.
    if (bpf_prog_attach(bpf_program__fd(skel->progs.remora_msg),
                        bpf_map__fd(skel->maps.remora_pairs), BPF_SK_MSG_VERDICT, 0) != 0) {
      return rollback(errnoError("attaching sk_msg to the fast path's sockhash"));
    }
    if (auto r = writeObjectHash(bpf_map__fd(skel->maps.remora_meta)); !r) {
      return rollback(r.error());
    }
    const auto maps = skeletonMaps(skel.get());
    for (size_t i = 0; i < maps.size(); ++i) {
      std::string path = ebpf::pinPath(config_.pin_dir, ebpf::kMapPins[i]);
      if (bpf_map__pin(maps[i], path.c_str()) != 0) {
        return rollback(errnoError("pinning " + path));
      }
      pinned.push_back(path);
    }
    return {};
  }

  EbpfConfig config_;
};

}  // namespace

uint64_t interceptObjectHash() { return objectHash(remora_intercept_bpf__elf_bytes); }

Result<remora_netns_settings> netnsSettings(const InterceptOptions& o, bool ipv6) {
  if (!o.exclude_interfaces.empty()) {
    return makeError(
        "--exclude-interfaces cannot be applied in eBPF mode (a connect hook does not know the "
        "outgoing interface); use --exclude-outbound-cidrs, or iptables mode");
  }
  // Options the connect hook does not implement yet are refused, never dropped silently.
  if (o.proxy_uids.size() != 1 || o.proxy_gids.size() != 1) {
    return makeError(
        "eBPF mode takes one --proxy-uid and one --proxy-gid (lists need iptables "
        "or nftables mode)");
  }
  if (!o.include_outbound_ports.empty() || !o.include_outbound_owner_groups.empty() ||
      !o.exclude_outbound_owner_groups.empty() || !o.kube_virt_interfaces.empty()) {
    return makeError(
        "--include-outbound-ports, --include/exclude-outbound-owner-groups and "
        "--kube-virt-interfaces are not applied in eBPF mode yet; use iptables or nftables mode");
  }
  remora_netns_settings s{};
  s.proxy_uid = o.proxy_uids.front();
  s.proxy_gid = o.proxy_gids.front();
  s.outbound_port = o.outbound_port;
  s.inbound_port = o.inbound_port;
  if (o.include_all_outbound) s.flags |= REMORA_F_INCLUDE_ALL_OUTBOUND;
  if (ipv6) s.flags |= REMORA_F_IPV6;
  if (o.include_all_inbound) s.flags |= REMORA_F_INCLUDE_ALL_INBOUND;
  if (o.include_all_inbound || !o.include_inbound_ports.empty()) s.flags |= REMORA_F_INBOUND;
  if (o.ebpf_fast_path) s.flags |= REMORA_F_FAST_PATH;
  if (auto r = copyPorts(mergePortRanges(o.exclude_outbound_ports), s.exclude_outbound_ports,
                         s.n_exclude_outbound_ports, "exclude-outbound-ports");
      !r) {
    return r.error();
  }
  if (auto r = copyCidrs(o.include_outbound_cidrs, s.include_cidrs, s.n_include_cidrs,
                         "include-outbound-cidrs");
      !r) {
    return r.error();
  }
  if (auto r = copyCidrs(o.exclude_outbound_cidrs, s.exclude_cidrs, s.n_exclude_cidrs,
                         "exclude-outbound-cidrs");
      !r) {
    return r.error();
  }
  if (auto r = copyPorts(mergePortRanges(o.include_inbound_ports), s.include_inbound_ports,
                         s.n_include_inbound_ports, "include-inbound-ports");
      !r) {
    return r.error();
  }
  std::vector<PortRange> inbound_excluded = o.exclude_inbound_ports;
  for (uint16_t p : kAlwaysExcludedInboundPorts) inbound_excluded.push_back({p, p});
  if (auto r = copyPorts(mergePortRanges(inbound_excluded), s.exclude_inbound_ports,
                         s.n_exclude_inbound_ports, "exclude-inbound-ports");
      !r) {
    return r.error();
  }
  return s;
}

std::string describeSettings(const remora_netns_settings& s) {
  std::string text;
  text += fmt::format("  proxy uid {} gid {}, outbound port {}, inbound port {}\n", s.proxy_uid,
                      s.proxy_gid, s.outbound_port, s.inbound_port);
  text += fmt::format("  ipv6 {}\n", (s.flags & REMORA_F_IPV6) ? "on" : "off");
  text += fmt::format("  exclude outbound ports {}\n",
                      portsText(s.exclude_outbound_ports, s.n_exclude_outbound_ports));
  text += fmt::format("  include outbound cidrs {}\n",
                      (s.flags & REMORA_F_INCLUDE_ALL_OUTBOUND)
                          ? std::string("*")
                          : cidrsText(s.include_cidrs, s.n_include_cidrs));
  text +=
      fmt::format("  exclude outbound cidrs {}\n", cidrsText(s.exclude_cidrs, s.n_exclude_cidrs));
  text += fmt::format("  inbound {}: include ports {}, exclude ports {}\n",
                      !(s.flags & REMORA_F_INBOUND)         ? "off"
                      : (s.flags & REMORA_F_INBOUND_HYBRID) ? "on (iptables rules: hybrid)"
                                                            : "on (sk_lookup)",
                      (s.flags & REMORA_F_INCLUDE_ALL_INBOUND)
                          ? std::string("*")
                          : portsText(s.include_inbound_ports, s.n_include_inbound_ports),
                      portsText(s.exclude_inbound_ports, s.n_exclude_inbound_ports));
  text += fmt::format("  fast path (sockops + sk_msg) {}\n",
                      (s.flags & REMORA_F_FAST_PATH) ? "on" : "off");
  return text;
}

Result<uint64_t> currentNetnsCookie() {
  // Any socket carries its netns; a unix one works even where IPv4 or IPv6 is off.
  Fd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return errnoError("socket for SO_NETNS_COOKIE");
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (::getsockopt(sock.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0) {
    return errnoError(
        fmt::format("SO_NETNS_COOKIE (needs Linux >= 5.14; kernel {})", kernelRelease()));
  }
  return cookie;
}

Result<std::string> defaultCgroupRoot() {
  for (const char* path : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
    struct statfs fs {};
    if (::statfs(path, &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC) return std::string(path);
  }
  return makeError(
      "no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified: eBPF mode attaches "
      "to cgroup v2 (pass --cgroup PATH)");
}

Result<void> probeEbpf(const EbpfConfig& config) {
  auto cgroup = config.cgroup.empty() ? defaultCgroupRoot() : Result<std::string>(config.cgroup);
  if (!cgroup) return cgroup.error();
  return probeKernel(*cgroup);
}

std::unique_ptr<Applier> makeEbpfApplier(EbpfConfig config) {
  return std::make_unique<EbpfApplier>(std::move(config));
}

Result<ApplyReport> uninstallEbpfNetns(const EbpfConfig& config, uint64_t netns_cookie) {
  return EbpfApplier(config).uninstallCookie(netns_cookie);
}

Result<ApplyReport> installEbpfNode(const EbpfConfig& config) {
  return EbpfApplier(config).installNode();
}

Result<ApplyReport> uninstallEbpfNode(const EbpfConfig& config) {
  return EbpfApplier(config).uninstallCookie(ebpf::kNodeHoldCookie);
}

}  // namespace remora::intercept
