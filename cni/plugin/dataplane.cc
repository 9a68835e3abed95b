#include "plugin/dataplane.h"

#include <fmt/format.h>

#include <chrono>
#include <optional>

#include "common/netns.h"
#include "common/subprocess.h"
#include "intercept/mode.h"

namespace remora::cni {
namespace {

// Runs `fn` with a fresh applier inside `netns`. `fn`'s own failure is returned as is; failing
// to enter the namespace becomes kNetnsUnavailable.
// The applier is the one of options.mode, resolved inside the netns ("auto" looks at its tables);
// in eBPF mode it works on the node's programs in `ebpf`'s cgroup and pin dir.
template <typename T, typename Fn>
CniResult<T> inNetns(const std::string& netns, const intercept::InterceptOptions& options,
                     const intercept::EbpfConfig& ebpf, Fn&& fn) {
  std::optional<CniResult<T>> out;
  auto entered = runInNetns(netns, [&]() -> Result<void> {
    auto mode = intercept::resolveMode(options.mode);
    if (!mode) {
      out.emplace(CniError{ErrorCode::kInstallFailed, "choosing the interception mode failed",
                           mode.error().message});
      return {};
    }
    auto applier = intercept::makeApplier(mode->mode, options.command_timeout, ebpf);
    out.emplace(fn(*applier));
    return {};
  });
  if (!entered) {
    return CniError{ErrorCode::kNetnsUnavailable,
                    fmt::format("cannot enter network namespace '{}'", netns),
                    entered.error().message};
  }
  return std::move(*out);
}

class NetnsDataplane : public Dataplane {
 public:
  CniResult<intercept::ApplyReport> install(const std::string& netns,
                                            const intercept::InterceptOptions& options,
                                            const intercept::EbpfConfig& ebpf) override {
    return inNetns<intercept::ApplyReport>(
        netns, options, ebpf,
        [&](intercept::Applier& applier) -> CniResult<intercept::ApplyReport> {
          auto report = applier.install(options);
          if (!report) {
            return CniError{ErrorCode::kInstallFailed, "installing interception rules failed",
                            report.error().message};
          }
          return std::move(*report);
        });
  }

  CniResult<intercept::ApplyReport> uninstall(const std::string& netns,
                                              const intercept::InterceptOptions& options,
                                              const intercept::EbpfConfig& ebpf) override {
    return inNetns<intercept::ApplyReport>(
        netns, options, ebpf,
        [&](intercept::Applier& applier) -> CniResult<intercept::ApplyReport> {
          // eBPF mode unregisters this netns (and detaches the node's programs after the last
          // one). Otherwise, whatever rule mode installed it: each removal is exact.
          auto report = options.mode == intercept::InterceptMode::kEbpf
                            ? applier.uninstall()
                            : intercept::uninstallAll(options.command_timeout);
          if (!report) {
            return CniError{ErrorCode::kUninstallFailed, "removing interception rules failed",
                            report.error().message};
          }
          return std::move(*report);
        });
  }

  CniResult<void> check(const std::string& netns, const intercept::InterceptOptions& options,
                        const intercept::EbpfConfig& ebpf) override {
    return inNetns<void>(netns, options, ebpf, [&](intercept::Applier& applier) -> CniResult<void> {
      auto checked = applier.check(options);
      if (!checked) {
        return CniError{ErrorCode::kRulesNotIntact, "interception rules are missing or modified",
                        checked.error().message};
      }
      return {};
    });
  }

  CniResult<uint64_t> netnsCookie(const std::string& netns) override {
    std::optional<Result<uint64_t>> cookie;
    auto entered = runInNetns(netns, [&]() -> Result<void> {
      cookie.emplace(intercept::currentNetnsCookie());
      return {};
    });
    if (!entered) {
      return CniError{ErrorCode::kNetnsUnavailable,
                      fmt::format("cannot enter network namespace '{}'", netns),
                      entered.error().message};
    }
    if (!*cookie) {
      return CniError{ErrorCode::kInstallFailed, "cannot read the namespace's cookie",
                      cookie->error().message};
    }
    return **cookie;
  }

  CniResult<intercept::ApplyReport> uninstallEbpfCookie(
      uint64_t cookie, const intercept::EbpfConfig& ebpf) override {
    auto report = intercept::uninstallEbpfNetns(ebpf, cookie);
    if (!report) {
      return CniError{ErrorCode::kUninstallFailed, "removing interception failed",
                      report.error().message};
    }
    return std::move(*report);
  }

  CniResult<void> status(const intercept::InterceptOptions& options,
                         const intercept::EbpfConfig& ebpf) override {
    if (options.mode == intercept::InterceptMode::kEbpf) {
      auto probed = intercept::probeEbpf(ebpf);
      if (!probed) {
        return CniError{ErrorCode::kStatusNotAvailable, "eBPF mode cannot work on this node",
                        probed.error().message};
      }
      return {};
    }
    // Either backend will do; detection picks one per namespace at ADD time.
    for (const char* tool : {"iptables-nft-restore", "iptables-legacy-restore"}) {
      if (programInPath(tool)) return {};
    }
    return CniError{ErrorCode::kStatusNotAvailable, "iptables is not installed on this node",
                    "remora-cni needs iptables-nft-restore or iptables-legacy-restore in PATH"};
  }
};

}  // namespace

std::unique_ptr<Dataplane> makeNetnsDataplane() { return std::make_unique<NetnsDataplane>(); }

}  // namespace remora::cni
