#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "intercept/options.h"

namespace remora::intercept {

// What one install, uninstall or check did, for the caller to print.
struct ApplyReport {
  std::string backend;             // e.g. "iptables-nft"
  std::vector<std::string> lines;  // human-readable, one per action
  bool changed = false;
};

// Installs, removes and verifies interception in the calling thread's network namespace.
// One implementation per mechanism (iptables today; nftables and eBPF later).
class Applier {
 public:
  virtual ~Applier() = default;
  virtual std::string name() const = 0;
  // Atomic and idempotent: afterwards exactly `options`' rules are in force, or on error the
  // namespace is as it was before the call.
  virtual Result<ApplyReport> install(const InterceptOptions& options) = 0;
  // The exact input install would feed to the kernel tools, without touching anything.
  virtual Result<std::string> dryRun(const InterceptOptions& options) = 0;
  // Removes exactly Remora's state; succeeds when there is nothing to remove.
  virtual Result<ApplyReport> uninstall() = 0;
  // Succeeds when the installed state equals what `options` plans; the error says what differs.
  virtual Result<void> check(const InterceptOptions& options) = 0;
};

// Every iptables tool the applier runs is killed after `command_timeout` (and install rolls
// back); InterceptOptions::command_timeout is what remora-init and remora-cni pass here.
std::unique_ptr<Applier> makeIptablesApplier(
    std::chrono::milliseconds command_timeout = kDefaultCommandTimeout);

}  // namespace remora::intercept
