#include "intercept/options.h"

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

}  // namespace remora::intercept
