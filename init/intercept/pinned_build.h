#pragma once

// What an install needs to upgrade BPF programs pinned by another build of Remora in place
// (docs/EBPF.md "Upgrading the programs", docs/PROXY.md "Kernel relay"): which build is pinned,
// and whether the pinned maps fit this build's programs. Shared by the eBPF interception mode
// and the proxy's kernel relay.

#include <bpf/libbpf.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "intercept/ebpf_pins.h"

namespace remora::intercept {

// A build's identity: FNV-1a of the BPF object embedded in the binary, given its skeleton's
// NAME__elf_bytes function.
uint64_t objectHash(const void* (*elf_bytes)(size_t* size));

// The build recorded in a pinned one-entry array whose value begins with the __u64 object hash
// (struct remora_meta, struct remora_relay_meta); 0 when there is none (a build before it).
uint64_t pinnedObjectHash(const std::string& meta_pin);
// Records `hash` in such an array. `what` names it in the error.
Result<void> writeObjectHash(int meta_fd, uint64_t hash, const std::string& what);

// Whether a pinned map has the shape (type, key and value size, entries, flags) this build
// declares for `map`, so its programs can use it. The difference, both shapes named, otherwise.
Result<void> sameShape(int fd, const bpf_map* map, const std::string& path);

// Points each map of an opened, not yet loaded object at the map pinned at the same index of
// `pins`, once its shape is checked, so the load reuses it. Returns the indices with no pin (a
// map the pinned build did not have): the load creates them and the caller pins them. Changes
// nothing in the pin dir; a map of another shape fails with sameShape's message.
Result<std::vector<size_t>> reusePinnedMaps(const std::vector<bpf_map*>& maps,
                                            const std::vector<std::string>& pins);

// An exclusive flock on a pin dir (bpffs holds only BPF objects, so the directory itself is the
// lock), held until the returned fd closes.
Result<std::shared_ptr<ebpf::Fd>> lockPinDir(const std::string& dir);

}  // namespace remora::intercept
