#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/ip_address.h"
#include "common/port_range.h"

namespace remora::intercept {

enum class Ipv6Mode { kAuto, kOn, kOff };
enum class IptablesBackend { kAuto, kLegacy, kNft };

// Ports the proxy itself serves on; inbound traffic to them is never captured (DESIGN.md).
inline constexpr uint16_t kAlwaysExcludedInboundPorts[] = {15000, 15001, 15006,
                                                           15020, 15021, 15090};

// How long remora-init and remora-cni wait for each child process (iptables-save, -restore, ip)
// before killing it and rolling back.
inline constexpr std::chrono::milliseconds kDefaultCommandTimeout{10000};

// What to intercept. Defaults are Istio's, so users recognise them. Shared by remora-init's
// flags and remora-cni's JSON config, which use the same names.
struct InterceptOptions {
  uint32_t proxy_uid = 1337;
  uint32_t proxy_gid = 1337;
  uint16_t outbound_port = 15001;
  uint16_t inbound_port = 15006;
  // "*" (all) when include_all_outbound; otherwise only these destinations are captured.
  bool include_all_outbound = true;
  std::vector<Cidr> include_outbound_cidrs;
  std::vector<Cidr> exclude_outbound_cidrs;
  // "*" (all) when include_all_inbound; an empty list with include_all_inbound false disables
  // inbound capture.
  bool include_all_inbound = true;
  std::vector<PortRange> include_inbound_ports;
  std::vector<PortRange> exclude_inbound_ports;
  std::vector<PortRange> exclude_outbound_ports;
  std::vector<std::string> exclude_interfaces;
  Ipv6Mode ipv6 = Ipv6Mode::kAuto;
  IptablesBackend backend = IptablesBackend::kAuto;
  // Not part of the rules: the applier's deadline for each tool it runs (--command-timeout).
  std::chrono::milliseconds command_timeout = kDefaultCommandTimeout;

  bool operator==(const InterceptOptions&) const = default;
};

const char* toString(Ipv6Mode mode);
const char* toString(IptablesBackend backend);

}  // namespace remora::intercept
