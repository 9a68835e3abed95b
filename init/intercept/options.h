#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_address.h"
#include "common/port_range.h"
#include "common/result.h"

namespace remora::intercept {

enum class Ipv6Mode { kAuto, kOn, kOff };
enum class IptablesBackend { kAuto, kLegacy, kNft };
// Which mechanism installs the plan (--mode). The eBPF applier adds its value here and in
// parseInterceptMode/toString (options.cc), the only two places that spell the modes.
enum class InterceptMode { kIptables, kNftables, kAuto, kEbpf };
// How inbound TCP reaches the proxy's inbound port (--inbound-interception-mode, Istio's -m):
// REDIRECT (nat; the app sees the proxy's 127.0.0.6) or TPROXY (mangle TPROXY with a policy
// route; the proxy keeps the original destination and connects to the app from the client's
// own address, so the app sees the real client). docs/INTERCEPTION.md, "TPROXY inbound".
enum class InboundMode { kRedirect, kTproxy };

// TPROXY mode's packet mark and routing table (Istio's 1337 and 133): packets with the mark are
// routed by `ip rule fwmark 0x539 lookup 133` to `local default dev lo table 133`, so they are
// delivered to a local socket whatever their destination address.
inline constexpr uint32_t kTproxyMark = 1337;
inline constexpr uint32_t kTproxyRouteTable = 133;

// Ports the proxy itself serves on; inbound traffic to them is never captured (DESIGN.md).
// 15008 is the HBONE tunnel port, which Istio also never captures inbound.
inline constexpr uint16_t kAlwaysExcludedInboundPorts[] = {15000, 15001, 15006, 15008,
                                                           15020, 15021, 15090};

// How long remora-init and remora-cni wait for each child process (iptables-save, -restore, ip)
// before killing it and rolling back.
inline constexpr std::chrono::milliseconds kDefaultCommandTimeout{10000};

// What to intercept. Defaults are Istio's, so users recognise them. Shared by remora-init's
// flags and remora-cni's JSON config, which use the same names.
struct InterceptOptions {
  // Processes running as any of these UIDs or GIDs are the proxy: their traffic is never captured
  // (Istio accepts lists too: --proxy-uid 3,4).
  std::vector<uint32_t> proxy_uids = {1337};
  std::vector<uint32_t> proxy_gids = {1337};
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
  // Destination ports captured whatever the destination address (the include CIDR list does not
  // apply to them; excluded CIDRs and the proxy's own traffic still win).
  std::vector<PortRange> include_outbound_ports;
  // Owner groups (numeric GIDs; names are resolved when the option is parsed). When `include`
  // is non-empty, only sockets of those groups are captured outbound; `exclude`d groups never are.
  std::vector<uint32_t> include_outbound_owner_groups;
  std::vector<uint32_t> exclude_outbound_owner_groups;
  std::vector<std::string> exclude_interfaces;
  // Interfaces of KubeVirt VMs: TCP arriving on them is the VM's outbound traffic, captured to the
  // outbound port in PREROUTING.
  std::vector<std::string> kube_virt_interfaces;
  // Drop conntrack-INVALID TCP in mangle PREROUTING: an out-of-window packet of a redirected
  // connection would otherwise skip the reverse NAT and reach the socket as is, which answers RST.
  bool drop_invalid = true;
  // eBPF mode: carry app<->proxy bytes with sockops + sk_msg instead of loopback TCP. Off by
  // default: a peer that writes and closes at once can leave the reader with EOF and no data
  // (docs/EBPF.md, "The fast path").
  bool ebpf_fast_path = false;
  InterceptMode mode = InterceptMode::kIptables;
  InboundMode inbound_mode = InboundMode::kRedirect;
  Ipv6Mode ipv6 = Ipv6Mode::kAuto;
  IptablesBackend backend = IptablesBackend::kAuto;
  // Not part of the rules: the applier's deadline for each tool it runs (--command-timeout).
  std::chrono::milliseconds command_timeout = kDefaultCommandTimeout;

  bool operator==(const InterceptOptions&) const = default;
};

const char* toString(Ipv6Mode mode);
const char* toString(IptablesBackend backend);
const char* toString(InterceptMode mode);
const char* toString(InboundMode mode);  // "REDIRECT" or "TPROXY"
// "REDIRECT" or "TPROXY" (any case); the error lists the accepted values.
Result<InboundMode> parseInboundMode(std::string_view text);
// "iptables", "nftables" or "auto"; the error lists the accepted values.
Result<InterceptMode> parseInterceptMode(std::string_view text);

}  // namespace remora::intercept
