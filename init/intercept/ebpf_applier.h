#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "intercept/applier.h"
#include "remora_abi.h"

namespace remora::intercept {

inline constexpr const char* kDefaultBpfPinDir = "/sys/fs/bpf/remora";

// Where the eBPF mode attaches and pins (remora-init --cgroup, --bpf-pin-dir).
struct EbpfConfig {
  std::string cgroup;  // cgroup v2 directory to attach to; empty: the cgroup v2 root
  std::string pin_dir = kDefaultBpfPinDir;
};

// The settings entry `options` register for a netns (pure). Errors name an option eBPF mode
// cannot apply (exclude-interfaces) or a list longer than the ABI's fixed arrays.
// This binary's build of the BPF programs (a hash of the embedded object). The install that
// attaches or upgrades them records it in map_meta; an install of another build upgrades them.
uint64_t interceptObjectHash();

Result<remora_netns_settings> netnsSettings(const InterceptOptions& options, bool ipv6);
// One line per setting, as dump and --dry-run print them.
std::string describeSettings(const remora_netns_settings& settings);

// The calling thread's network namespace cookie (SO_NETNS_COOKIE, Linux >= 5.14).
Result<uint64_t> currentNetnsCookie();
// /sys/fs/cgroup when it is cgroup v2, else /sys/fs/cgroup/unified on hybrid hosts.
Result<std::string> defaultCgroupRoot();

// What eBPF mode needs from the node before anything is loaded: kernel BTF, and cgroup v2 at
// config.cgroup (or a detected cgroup v2 root). The error names the missing piece.
Result<void> probeEbpf(const EbpfConfig& config);

// The eBPF applier: the first install in a node loads and attaches the programs to the cgroup
// and pins links and maps under the pin dir; every install registers the calling thread's netns
// (an update of one map entry), uninstall unregisters it, and the last uninstall unpins and so
// detaches everything. A node-wide lock (flock on the pin dir) serialises them.
std::unique_ptr<Applier> makeEbpfApplier(EbpfConfig config);
// What the applier's uninstall does for the netns with this cookie, from any netns: the netns
// may be gone (a CNI DEL after the runtime removed it). Cookies are never reused, so this cannot
// touch another netns's entry.
Result<ApplyReport> uninstallEbpfNetns(const EbpfConfig& config, uint64_t netns_cookie);

// remora-cni install-node --mode ebpf: attaches and pins the programs once for the node (unless
// they are already) and registers the node hold, a map_netns entry under cookie 0 (no netns has
// it), so the last pod's DEL leaves them attached. Idempotent; a failure leaves nothing new.
Result<ApplyReport> installEbpfNode(const EbpfConfig& config);
// uninstall-node --mode ebpf: removes the node hold; with no pod meshed either, detaches and
// unpins everything (else the last pod's DEL does).
Result<ApplyReport> uninstallEbpfNode(const EbpfConfig& config);

}  // namespace remora::intercept
