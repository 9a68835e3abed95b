#pragma once

// `remora-init relay install | uninstall`: the privileged half of the proxy's kernel relay
// (docs/PROXY.md, "Kernel relay"). install loads bpf/relay.bpf.c from the embedded skeleton,
// attaches its verdict program to the sockhash and pins the maps, owned by the proxy's uid with
// mode 0600, so remora-proxy opens them without capabilities.

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace remora::intercept {

struct RelayInstallReport {
  bool already_installed = false;
  std::string pin_dir;
};

// Idempotent: pins already in place are handed to uid:gid again and left as they are.
Result<RelayInstallReport> installRelay(const std::string& pin_dir, uint32_t uid, uint32_t gid);
// Removes the pins (the maps and program go once no proxy holds them) and the pin dir.
Result<void> uninstallRelay(const std::string& pin_dir);

// args[0] is "relay". Returns the exit code.
int runRelayCommand(const std::vector<std::string>& args);

}  // namespace remora::intercept
