#include "intercept/cli.h"

#include <fmt/format.h>
#include <grp.h>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace remora::intercept {
namespace {

std::vector<std::string> splitList(std::string_view text) {
  std::vector<std::string> items;
  size_t start = 0;
  while (start < text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    std::string item(text.substr(start, comma - start));
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (!item.empty()) items.push_back(item);
    start = comma + 1;
  }
  return items;
}

Result<uint32_t> parseId(std::string_view flag, std::string_view value) {
  uint32_t id = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), id);
  // 4294967295 is (uid_t)-1, "no id", and cannot own a socket.
  if (value.empty() || ec != std::errc() || end != value.data() + value.size() ||
      id == 4294967295u) {
    return makeError(
        fmt::format("invalid --{} '{}': must be a numeric id in 0..4294967294", flag, value));
  }
  return id;
}

Result<std::vector<Cidr>> parseCidrs(std::string_view flag, std::string_view value) {
  std::vector<Cidr> cidrs;
  for (const auto& item : splitList(value)) {
    auto cidr = Cidr::parse(item);
    if (!cidr) return makeError(fmt::format("invalid --{}: {}", flag, cidr.error().message));
    cidrs.push_back(*cidr);
  }
  return cidrs;
}

// Istio's own examples end lists with a comma ("6000,7000,"); an empty item elsewhere ("80,,81")
// stays an error, as it is more likely a typo.
std::string_view withoutTrailingCommas(std::string_view value) {
  while (!value.empty() && (value.back() == ',' || value.back() == ' ')) value.remove_suffix(1);
  return value;
}

// One or more ids ("1337", "3,4", "3,4,").
Result<std::vector<uint32_t>> parseIds(std::string_view flag, std::string_view value) {
  std::vector<uint32_t> ids;
  for (const auto& item : splitList(value)) {
    auto id = parseId(flag, item);
    if (!id) return id.error();
    if (std::find(ids.begin(), ids.end(), *id) == ids.end()) ids.push_back(*id);
  }
  if (ids.empty()) {
    return makeError(fmt::format("invalid --{} '{}': needs at least one numeric id", flag, value));
  }
  return ids;
}

// Groups by GID or by name; names are resolved here (as iptables would when it loads the rule),
// so the plan holds the GIDs iptables-save prints back.
Result<std::vector<uint32_t>> parseGroups(std::string_view flag, std::string_view value) {
  std::vector<uint32_t> gids;
  for (const auto& item : splitList(value)) {
    uint32_t gid = 0;
    if (std::isdigit(static_cast<unsigned char>(item.front()))) {
      auto id = parseId(flag, item);
      if (!id) return id.error();
      gid = *id;
    } else {
      group entry{};
      group* found = nullptr;
      std::vector<char> buffer(16384);
      if (getgrnam_r(item.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 ||
          found == nullptr) {
        return makeError(fmt::format("invalid --{}: no group named '{}'", flag, item));
      }
      gid = found->gr_gid;
    }
    if (std::find(gids.begin(), gids.end(), gid) == gids.end()) gids.push_back(gid);
  }
  return gids;
}

Result<std::vector<PortRange>> parsePorts(std::string_view flag, std::string_view value) {
  auto ports = parsePortList(withoutTrailingCommas(value));
  if (!ports) return makeError(fmt::format("invalid --{}: {}", flag, ports.error().message));
  return ports;
}

// Seconds, with up to three decimals ("10", "0.5"), in (0, 3600].
Result<std::chrono::milliseconds> parseTimeout(std::string_view value) {
  auto bad = [&] {
    return makeError(fmt::format(
        "invalid --command-timeout '{}': must be seconds in 0.001..3600 (e.g. 10 or 0.5)", value));
  };
  size_t dot = value.find('.');
  std::string_view whole = value.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? "" : value.substr(dot + 1);
  if (whole.empty() && frac.empty()) return bad();
  if (frac.size() > 3 || (dot != std::string_view::npos && frac.empty())) return bad();
  uint64_t seconds = 0;
  if (!whole.empty()) {
    auto [end, ec] = std::from_chars(whole.data(), whole.data() + whole.size(), seconds);
    if (ec != std::errc() || end != whole.data() + whole.size() || seconds > 3600) return bad();
  }
  uint64_t millis = 0;
  for (size_t i = 0; i < 3; ++i) {
    char c = i < frac.size() ? frac[i] : '0';
    if (c < '0' || c > '9') return bad();
    millis = millis * 10 + static_cast<uint64_t>(c - '0');
  }
  uint64_t total = seconds * 1000 + millis;
  if (total == 0 || total > 3600 * 1000) return bad();
  return std::chrono::milliseconds(total);
}

bool validInterfaceName(std::string_view name) {
  // Linux allows up to 15 bytes; iptables adds a trailing '+' wildcard.
  if (name.empty() || name.size() > 15) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
              c == '@' || (c == '+' && i == name.size() - 1);
    if (!ok) return false;
  }
  return true;
}

Result<std::vector<std::string>> parseInterfaces(std::string_view flag, std::string_view value) {
  auto names = splitList(value);
  for (const auto& name : names) {
    if (!validInterfaceName(name)) {
      return makeError(fmt::format("invalid --{}: '{}' is not an interface name", flag, name));
    }
  }
  return names;
}

}  // namespace

const std::vector<OptionSpec>& optionSpecs() {
  static const std::vector<OptionSpec> specs = {
      {"mode", "REMORA_MODE",
       "interception mechanism: iptables, nftables (one 'inet remora' table), auto (nftables "
       "when the netns has kube-proxy's nftables table or no iptables rules), or ebpf (cgroup "
       "connect4/6 + getsockopt, sk_lookup inbound; no rules)",
       "iptables"},
      {"inbound-interception-mode", "REMORA_INBOUND_INTERCEPTION_MODE",
       "how inbound TCP reaches the proxy: REDIRECT (nat; the app sees 127.0.0.6) or TPROXY "
       "(mangle TPROXY + fwmark 0x539 policy route to table 133; the app sees the real client, "
       "the proxy needs CAP_NET_ADMIN and --inbound-interception-mode TPROXY too)",
       "REDIRECT"},
      {"proxy-uid", "REMORA_PROXY_UID",
       "UID(s) the proxy runs as (comma-separated); their traffic is never captured", "1337"},
      {"proxy-gid", "REMORA_PROXY_GID",
       "GID(s) the proxy runs as (comma-separated); their traffic is never captured", "1337"},
      {"outbound-port", "REMORA_OUTBOUND_PORT", "proxy port outbound TCP is redirected to",
       "15001"},
      {"inbound-port", "REMORA_INBOUND_PORT", "proxy port inbound TCP is redirected to", "15006"},
      {"include-outbound-cidrs", "REMORA_INCLUDE_OUTBOUND_CIDRS",
       "destinations captured: '*' for all, or a comma-separated CIDR list", "*"},
      {"exclude-outbound-cidrs", "REMORA_EXCLUDE_OUTBOUND_CIDRS",
       "destinations never captured (comma-separated CIDRs)", ""},
      {"include-inbound-ports", "REMORA_INCLUDE_INBOUND_PORTS",
       "inbound ports captured: '*' for all, or ports and ranges (80,8000-8080); empty for none",
       "*"},
      {"exclude-inbound-ports", "REMORA_EXCLUDE_INBOUND_PORTS",
       "inbound ports never captured, besides 15000,15001,15006,15008,15020,15021,15090", ""},
      {"exclude-outbound-ports", "REMORA_EXCLUDE_OUTBOUND_PORTS",
       "outbound destination ports never captured (ports and ranges)", ""},
      {"include-outbound-ports", "REMORA_INCLUDE_OUTBOUND_PORTS",
       "outbound destination ports captured whatever the destination address", ""},
      {"include-outbound-owner-groups", "REMORA_INCLUDE_OUTBOUND_OWNER_GROUPS",
       "capture outbound only from sockets of these groups (names or GIDs)", ""},
      {"exclude-outbound-owner-groups", "REMORA_EXCLUDE_OUTBOUND_OWNER_GROUPS",
       "never capture outbound from sockets of these groups (names or GIDs)", ""},
      {"exclude-interfaces", "REMORA_EXCLUDE_INTERFACES",
       "interfaces whose traffic is never captured (comma-separated)", ""},
      {"kube-virt-interfaces", "REMORA_KUBE_VIRT_INTERFACES",
       "KubeVirt VM interfaces: TCP arriving on them is captured as outbound", ""},
      {"drop-invalid", "REMORA_DROP_INVALID",
       "drop conntrack-INVALID TCP in mangle PREROUTING (true or false)", "true"},
      {"ebpf-fast-path", "REMORA_EBPF_FAST_PATH",
       "ebpf mode: app<->proxy bytes go socket to socket (sockops + sk_msg) instead of through "
       "loopback TCP (true or false; experimental, see docs/EBPF.md; not with the proxy's "
       "--relay kernel)",
       "false"},
      {"ipv6", "REMORA_IPV6", "IPv6 rules: auto (when the netns has IPv6), on or off", "auto"},
      {"iptables-backend", "REMORA_IPTABLES_BACKEND",
       "auto (legacy if the netns already has legacy rules, else nft), legacy or nft", "auto"},
      {"command-timeout", "REMORA_COMMAND_TIMEOUT",
       "seconds each iptables tool may take before it is killed and the install rolled back", "10"},
  };
  return specs;
}

Result<void> setOption(InterceptOptions& options, std::string_view flag, std::string_view value) {
  InterceptOptions o = options;  // work on a copy so a bad value changes nothing
  if (flag == "mode") {
    auto mode = parseInterceptMode(value);
    if (!mode) return mode.error();
    o.mode = *mode;
  } else if (flag == "inbound-interception-mode") {
    auto mode = parseInboundMode(value);
    if (!mode) return mode.error();
    o.inbound_mode = *mode;
  } else if (flag == "proxy-uid" || flag == "proxy-gid") {
    auto ids = parseIds(flag, value);
    if (!ids) return ids.error();
    (flag == "proxy-uid" ? o.proxy_uids : o.proxy_gids) = *ids;
  } else if (flag == "outbound-port" || flag == "inbound-port") {
    auto port = parsePort(value, fmt::format("--{}", flag));
    if (!port) return port.error();
    (flag == "outbound-port" ? o.outbound_port : o.inbound_port) = *port;
  } else if (flag == "include-outbound-cidrs") {
    o.include_all_outbound = value == "*";
    o.include_outbound_cidrs.clear();
    if (!o.include_all_outbound) {
      auto cidrs = parseCidrs(flag, value);
      if (!cidrs) return cidrs.error();
      o.include_outbound_cidrs = *cidrs;
    }
  } else if (flag == "exclude-outbound-cidrs") {
    auto cidrs = parseCidrs(flag, value);
    if (!cidrs) return cidrs.error();
    o.exclude_outbound_cidrs = *cidrs;
  } else if (flag == "include-inbound-ports") {
    o.include_all_inbound = value == "*";
    o.include_inbound_ports.clear();
    if (!o.include_all_inbound) {
      auto ports = parsePorts(flag, value);
      if (!ports) return ports.error();
      o.include_inbound_ports = *ports;
    }
  } else if (flag == "exclude-inbound-ports" || flag == "exclude-outbound-ports" ||
             flag == "include-outbound-ports") {
    auto ports = parsePorts(flag, value);
    if (!ports) return ports.error();
    (flag == "exclude-inbound-ports"    ? o.exclude_inbound_ports
     : flag == "exclude-outbound-ports" ? o.exclude_outbound_ports
                                        : o.include_outbound_ports) = *ports;
  } else if (flag == "include-outbound-owner-groups" || flag == "exclude-outbound-owner-groups") {
    auto gids = parseGroups(flag, value);
    if (!gids) return gids.error();
    (flag == "include-outbound-owner-groups" ? o.include_outbound_owner_groups
                                             : o.exclude_outbound_owner_groups) = *gids;
  } else if (flag == "exclude-interfaces" || flag == "kube-virt-interfaces") {
    auto names = parseInterfaces(flag, value);
    if (!names) return names.error();
    (flag == "exclude-interfaces" ? o.exclude_interfaces : o.kube_virt_interfaces) = *names;
  } else if (flag == "drop-invalid" || flag == "ebpf-fast-path") {
    bool& field = flag == "drop-invalid" ? o.drop_invalid : o.ebpf_fast_path;
    if (value == "true" || value == "on" || value == "1") {
      field = true;
    } else if (value == "false" || value == "off" || value == "0") {
      field = false;
    } else {
      return makeError(fmt::format("invalid --{} '{}': must be true or false", flag, value));
    }
  } else if (flag == "ipv6") {
    if (value == "auto") {
      o.ipv6 = Ipv6Mode::kAuto;
    } else if (value == "on" || value == "true") {
      o.ipv6 = Ipv6Mode::kOn;
    } else if (value == "off" || value == "false") {
      o.ipv6 = Ipv6Mode::kOff;
    } else {
      return makeError(fmt::format("invalid --ipv6 '{}': must be auto, on or off", value));
    }
  } else if (flag == "iptables-backend") {
    if (value == "auto") {
      o.backend = IptablesBackend::kAuto;
    } else if (value == "legacy") {
      o.backend = IptablesBackend::kLegacy;
    } else if (value == "nft") {
      o.backend = IptablesBackend::kNft;
    } else {
      return makeError(
          fmt::format("invalid --iptables-backend '{}': must be auto, legacy or nft", value));
    }
  } else if (flag == "command-timeout") {
    auto timeout = parseTimeout(value);
    if (!timeout) return timeout.error();
    o.command_timeout = *timeout;
  } else {
    return makeError(fmt::format("unknown option '{}'", flag));
  }
  options = std::move(o);
  return {};
}

}  // namespace remora::intercept
