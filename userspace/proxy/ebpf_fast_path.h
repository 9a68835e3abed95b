#pragma once

#include <string>

#include "common/result.h"

namespace remora::proxy {

// Where remora-init's eBPF mode pins its maps (init/intercept/ebpf_applier.h, --bpf-pin-dir).
inline constexpr const char* kDefaultEbpfPinDir = "/sys/fs/bpf/remora";

// Whether eBPF mode's sk_msg fast path (remora-init --ebpf-fast-path) is on in the calling
// thread's network namespace: its netns cookie's entry in <pin_dir>/map_netns has
// REMORA_F_FAST_PATH. False when there is no such map (not eBPF mode) or no entry (not meshed).
// An error when the map is there but cannot be read (permissions), so the caller can say it
// could not tell.
Result<bool> ebpfFastPathOn(const std::string& pin_dir);

// Why the kernel relay cannot run beside the fast path, for the log and /config_dump.
inline constexpr const char* kFastPathExcludesKernelRelay =
    "the eBPF fast path (remora-init --ebpf-fast-path) is on in this pod's netns, and it cannot "
    "be combined with --relay kernel: sk_msg puts the app's bytes straight into the proxy's "
    "socket, past the relay's sk_skb verdict program";

}  // namespace remora::proxy
