#include "intercept/options.h"

#include <fmt/format.h>

#include <cctype>
#include <string>

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

const char* toString(InboundMode mode) {
  return mode == InboundMode::kTproxy ? "TPROXY" : "REDIRECT";
}

Result<InboundMode> parseInboundMode(std::string_view text) {
  std::string upper(text);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (auto mode : {InboundMode::kRedirect, InboundMode::kTproxy}) {
    if (upper == toString(mode)) return mode;
  }
  return makeError(
      fmt::format("invalid --inbound-interception-mode '{}': must be REDIRECT or TPROXY", text));
}

}  // namespace remora::intercept
