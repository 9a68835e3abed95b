#pragma once

// `remora-init relay install | uninstall | status`: the privileged half of the proxy's kernel
// relay (docs/PROXY.md, "Kernel relay"). install loads bpf/relay.bpf.c from the embedded
// skeleton, attaches its verdict program to the sockhash and pins the maps, owned by the proxy's
// uid with mode 0600, so remora-proxy opens them without capabilities. The pinned meta map
// records which build's program is attached; an install of another build replaces it in place.

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace remora::intercept {

struct RelayInstallReport {
  bool already_installed = false;
  bool upgraded = false;     // another build's verdict program was replaced by this build's
  uint64_t old_build = 0;    // the build recorded before (0: none, a build before the record)
  uint32_t old_prog_id = 0;  // the program the sockhash had before an upgrade
  uint32_t prog_id = 0;      // the program attached by this call (0: none was loaded)
  std::string pin_dir;
};

// Idempotent for this build: pins already in place are handed to uid:gid again and left as they
// are. Pins of another build get this build's program on the same maps (docs/PROXY.md, "Kernel
// relay"); a pinned map of another shape is refused, naming it, and nothing changes.
Result<RelayInstallReport> installRelay(const std::string& pin_dir, uint32_t uid, uint32_t gid);
// Removes the pins (the maps and program go once no proxy holds them) and the pin dir.
Result<void> uninstallRelay(const std::string& pin_dir);

// This binary's build of the relay program (a hash of the embedded object).
uint64_t relayObjectHash();

// What `relay status` shows.
struct RelayStatus {
  bool installed = false;          // the sockhash is pinned
  uint64_t build = 0;              // the record's build (0: none)
  std::vector<uint32_t> attached;  // programs attached to the sockhash as its stream verdict
  uint32_t pinned_prog_id = 0;     // the pinned program (0: none)
};
Result<RelayStatus> relayStatus(const std::string& pin_dir);

// args[0] is "relay". Returns the exit code.
int runRelayCommand(const std::vector<std::string>& args);

}  // namespace remora::intercept
