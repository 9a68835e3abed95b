#include "intercept/options.h"

#include <fmt/format.h>

namespace remora::intercept {

const char* toString(Ipv6Mode mode) {
  switch (mode) {
    case Ipv6Mode::kAuto:
      return "auto";
    case Ipv6Mode::kOn:
      return "on";
    case Ipv6Mode::kOff:
      return "off";
  }
  return "?";
}

const char* toString(IptablesBackend backend) {
  switch (backend) {
    case IptablesBackend::kAuto:
      return "auto";
    case IptablesBackend::kLegacy:
      return "legacy";
    case IptablesBackend::kNft:
      return "nft";
  }
  return "?";
}

const char* toString(InterceptMode mode) {
  switch (mode) {
    case InterceptMode::kIptables:
      return "iptables";
    case InterceptMode::kNftables:
      return "nftables";
    case InterceptMode::kAuto:
      return "auto";
    case InterceptMode::kEbpf:
      return "ebpf";
  }
  return "?";
}

Result<InterceptMode> parseInterceptMode(std::string_view text) {
  for (auto mode : {InterceptMode::kIptables, InterceptMode::kNftables, InterceptMode::kAuto,
                    InterceptMode::kEbpf}) {
    if (text == toString(mode)) return mode;
  }
  return makeError(
      fmt::format("invalid --mode '{}': must be iptables, nftables, auto or ebpf", text));
}

}  // namespace remora::intercept
