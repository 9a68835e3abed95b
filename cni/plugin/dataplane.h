#pragma once

#include <memory>
#include <string>

#include "intercept/applier.h"
#include "intercept/ebpf_applier.h"
#include "intercept/options.h"
#include "plugin/error.h"

namespace remora::cni {

// What the plugin does to a pod's network namespace. The real one enters the namespace and
// drives the interception library; tests of the CNI protocol substitute a fake.
// Errors carry CNI codes: kNetnsUnavailable when the namespace cannot be opened or entered,
// otherwise kInstallFailed, kUninstallFailed or kRulesNotIntact.
// `ebpf` (the node's cgroup and pin dir, from the conflist entry) is used only when
// options.mode is kEbpf.
class Dataplane {
 public:
  virtual ~Dataplane() = default;
  virtual CniResult<intercept::ApplyReport> install(const std::string& netns,
                                                    const intercept::InterceptOptions& options,
                                                    const intercept::EbpfConfig& ebpf) = 0;
  // Removes only Remora's state; succeeds when there is none. Only options.mode (eBPF or not)
  // and options.command_timeout (every tool is killed after it) are used.
  virtual CniResult<intercept::ApplyReport> uninstall(const std::string& netns,
                                                      const intercept::InterceptOptions& options,
                                                      const intercept::EbpfConfig& ebpf) = 0;
  virtual CniResult<void> check(const std::string& netns,
                                const intercept::InterceptOptions& options,
                                const intercept::EbpfConfig& ebpf) = 0;
  // eBPF mode: the cookie of the namespace at `netns` (kNetnsUnavailable when it is gone), and
  // the unregistration of the namespace with that cookie, which works without the namespace
  // (DEL and GC after the runtime removed it).
  virtual CniResult<uint64_t> netnsCookie(const std::string& netns) = 0;
  virtual CniResult<intercept::ApplyReport> uninstallEbpfCookie(
      uint64_t cookie, const intercept::EbpfConfig& ebpf) = 0;
  // Whether ADD could work on this node now, code 50 if not: the iptables tools are installed,
  // or in eBPF mode, the kernel has BTF and the cgroup is cgroup v2.
  virtual CniResult<void> status(const intercept::InterceptOptions& options,
                                 const intercept::EbpfConfig& ebpf) = 0;
};

// Enters the namespace on a dedicated thread (runInNetns) and applies the same planner and
// backends remora-init uses (iptables, nftables, or the eBPF applier, which attaches the
// programs to the node's cgroup on the first ADD and registers the pod's netns). No remora-init
// process is involved.
std::unique_ptr<Dataplane> makeNetnsDataplane();

}  // namespace remora::cni
