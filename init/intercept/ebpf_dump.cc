// remora-init dump and dump --trace in eBPF mode: reads the pinned links and maps.
#include "intercept/ebpf_dump.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "intercept/ebpf_applier.h"
#include "intercept/ebpf_pins.h"
#include "remora_decide.h"

namespace remora::intercept {
namespace {

constexpr size_t kMaxDumpedOrigDst = 1000;

const char* attachName(uint32_t type) {
  switch (type) {
    case BPF_CGROUP_INET4_CONNECT:
      return "cgroup/connect4";
    case BPF_CGROUP_INET6_CONNECT:
      return "cgroup/connect6";
    case BPF_CGROUP_GETSOCKOPT:
      return "cgroup/getsockopt";
    case BPF_CGROUP_SOCK_OPS:
      return "sockops";
    case BPF_SK_LOOKUP:
      return "sk_lookup";
    default:
      return "other";
  }
}

SocketAddress toAddress(uint8_t family, const uint32_t* addr, uint16_t port) {
  SocketAddress sa;
  sa.ip.family = family == REMORA_AF_INET ? Family::kIpv4 : Family::kIpv6;
  std::memcpy(sa.ip.bytes.data(), addr, sa.ip.size());
  sa.port = port;
  return sa;
}

const char* verdictName(remora_verdict v) {
  switch (v) {
    case REMORA_V_REDIRECT:
      return "redirect";
    case REMORA_V_BYPASS_UID:
      return "bypass_uid";
    case REMORA_V_BYPASS_GID:
      return "bypass_gid";
    case REMORA_V_EXCLUDED_PORT:
      return "excluded_port";
    case REMORA_V_EXCLUDED_CIDR:
      return "excluded_cidr";
    case REMORA_V_NOT_INCLUDED:
      return "not_included";
    case REMORA_V_LOOPBACK:
      return "loopback";
    case REMORA_V_IPV6_OFF:
      return "ipv6_off";
  }
  return "unknown";
}

const char* verdictText(remora_verdict v) {
  switch (v) {
    case REMORA_V_REDIRECT:
      return "rewritten to the proxy's outbound listener";
    case REMORA_V_BYPASS_UID:
      return "left alone: the caller is the proxy's uid";
    case REMORA_V_BYPASS_GID:
      return "left alone: the caller is the proxy's gid";
    case REMORA_V_EXCLUDED_PORT:
      return "left alone: the destination port is excluded";
    case REMORA_V_EXCLUDED_CIDR:
      return "left alone: the destination is in an excluded CIDR";
    case REMORA_V_NOT_INCLUDED:
      return "left alone: the destination is outside the included CIDRs";
    case REMORA_V_LOOPBACK:
      return "left alone: the destination is loopback";
    case REMORA_V_IPV6_OFF:
      return "left alone: the netns is meshed without IPv6";
  }
  return "";
}

Result<EbpfLinkInfo> readLink(const std::string& path) {
  EbpfLinkInfo info;
  info.pin = path;
  ebpf::Fd link(bpf_obj_get(path.c_str()));
  if (!link.valid()) return errnoError(path + " is missing");
  bpf_link_info li{};
  __u32 len = sizeof(li);
  if (bpf_obj_get_info_by_fd(link.get(), &li, &len) != 0) return errnoError("link info " + path);
  info.link_id = li.id;
  info.prog_id = li.prog_id;
  if (li.type == BPF_LINK_TYPE_NETNS) {
    info.attach = attachName(li.netns.attach_type);
    info.netns_ino = li.netns.netns_ino;
  } else {
    info.attach = attachName(li.cgroup.attach_type);
    info.cgroup_id = li.cgroup.cgroup_id;
  }
  ebpf::Fd prog(bpf_prog_get_fd_by_id(li.prog_id));
  if (prog.valid()) {
    bpf_prog_info pi{};
    __u32 plen = sizeof(pi);
    if (bpf_obj_get_info_by_fd(prog.get(), &pi, &plen) == 0) info.prog_name = pi.name;
  }
  return info;
}

}  // namespace

Result<EbpfDump> dumpEbpf(const std::string& pin_dir) {
  EbpfDump dump;
  dump.pin_dir = pin_dir;
  if (::access(pin_dir.c_str(), F_OK) != 0) {
    dump.notes.push_back("nothing is attached: " + pin_dir + " does not exist");
    return dump;
  }
  std::vector<std::string> link_pins;
  for (const char* pin : ebpf::kLinkPins) link_pins.push_back(ebpf::pinPath(pin_dir, pin));
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(pin_dir, ec)) {
    if (entry.path().filename().string().rfind(ebpf::kSkLookupLinkPrefix, 0) == 0) {
      link_pins.push_back(entry.path().string());
    }
  }
  for (const auto& path : link_pins) {
    auto info = readLink(path);
    if (!info) {
      dump.notes.push_back(info.error().message);
      continue;
    }
    dump.links.push_back(*info);
  }
  auto cookie = currentNetnsCookie();
  for (const char* pin : ebpf::kMapPins) {
    std::string path = ebpf::pinPath(pin_dir, pin);
    ebpf::Fd map(bpf_obj_get(path.c_str()));
    if (!map.valid()) {
      dump.notes.push_back(fmt::format("{} is missing: {}", path, std::strerror(errno)));
      continue;
    }
    bpf_map_info mi{};
    __u32 len = sizeof(mi);
    if (bpf_obj_get_info_by_fd(map.get(), &mi, &len) == 0) dump.map_ids.push_back(mi.id);
    if (std::strcmp(pin, ebpf::kNetnsMap) == 0) {
      uint64_t key = 0;
      uint64_t* prev = nullptr;
      while (bpf_map_get_next_key(map.get(), prev, &key) == 0) {
        prev = &key;
        if (key == ebpf::kNodeHoldCookie) {
          dump.node_hold = true;
          continue;
        }
        EbpfNetnsEntry entry;
        entry.cookie = key;
        entry.current = cookie && *cookie == key;
        if (bpf_map_lookup_elem(map.get(), &key, &entry.settings) == 0) dump.netns.push_back(entry);
      }
    } else if (std::strcmp(pin, ebpf::kMetaMap) == 0) {
      const uint32_t key = 0;
      remora_meta meta{};
      if (bpf_map_lookup_elem(map.get(), &key, &meta) == 0) dump.build = meta.object_hash;
    } else if (std::strcmp(pin, ebpf::kOrigByTupleMap) == 0) {
      remora_tuple_key key{};
      remora_tuple_key* prev = nullptr;
      while (bpf_map_get_next_key(map.get(), prev, &key) == 0 &&
             dump.orig_dst.size() < kMaxDumpedOrigDst) {
        remora_orig_dst value{};
        if (bpf_map_lookup_elem(map.get(), &key, &value) == 0) {
          dump.orig_dst.push_back({toAddress(key.family, key.addr, key.port),
                                   toAddress(value.family, value.addr, value.port),
                                   key.netns_cookie, value.uid});
        }
        prev = &key;
      }
    } else if (std::strcmp(pin, ebpf::kOrigByCookieMap) == 0) {
      uint64_t key = 0;
      uint64_t* prev = nullptr;
      while (bpf_map_get_next_key(map.get(), prev, &key) == 0) {
        ++dump.pending_connects;
        prev = &key;
      }
    } else if (std::strcmp(pin, ebpf::kInboundAddrsMap) == 0) {
      remora_addr_key key{};
      remora_addr_key* prev = nullptr;
      while (bpf_map_get_next_key(map.get(), prev, &key) == 0) {
        uint64_t owner = 0;
        if (bpf_map_lookup_elem(map.get(), &key, &owner) == 0) {
          dump.inbound_addrs.emplace_back(toAddress(key.family, key.addr, 0).ip, owner);
        }
        prev = &key;
      }
    } else if (std::strcmp(pin, ebpf::kListenersMap) == 0) {
      remora_listener_key key{};
      remora_listener_key* prev = nullptr;
      while (bpf_map_get_next_key(map.get(), prev, &key) == 0) {
        dump.listeners.emplace_back(key.netns_cookie,
                                    key.family == REMORA_AF_INET ? Family::kIpv4 : Family::kIpv6);
        prev = &key;
      }
    } else if (std::strcmp(pin, ebpf::kPairsMap) == 0 ||
               std::strcmp(pin, ebpf::kPairsSlowMap) == 0) {
      size_t& n =
          std::strcmp(pin, ebpf::kPairsMap) == 0 ? dump.fast_path_sockets : dump.fast_path_slow;
      remora_pair_key key{};
      remora_pair_key* prev = nullptr;
      while (bpf_map_get_next_key(map.get(), prev, &key) == 0) {
        ++n;
        prev = &key;
      }
    } else if (std::strcmp(pin, ebpf::kCountersMap) == 0) {
      int cpus = libbpf_num_possible_cpus();
      if (cpus <= 0) return makeError("cannot count the possible CPUs");
      std::vector<uint64_t> values(static_cast<size_t>(cpus));
      for (uint32_t i = 0; i < REMORA_C_MAX; ++i) {
        uint64_t total = 0;
        if (bpf_map_lookup_elem(map.get(), &i, values.data()) == 0) {
          for (uint64_t v : values) total += v;
        }
        dump.counters.emplace_back(ebpf::kCounterNames[i], total);
      }
    }
  }
  return dump;
}

std::string renderEbpfDump(const EbpfDump& dump) {
  std::string out = fmt::format("eBPF mode, pins in {}\n", dump.pin_dir);
  out += "programs:\n";
  for (const auto& l : dump.links) {
    out += fmt::format("  {:<18} prog {} (id {}) link {} {}\n", l.attach, l.prog_name, l.prog_id,
                       l.link_id,
                       l.netns_ino ? fmt::format("netns inode {}", l.netns_ino)
                                   : fmt::format("cgroup id {}", l.cgroup_id));
  }
  if (!dump.links.empty()) {
    const bool ours = dump.build == interceptObjectHash();
    out += fmt::format(
        "build: {:016x} ({})\n", dump.build,
        ours ? "this binary's"
             : "not this binary's: its next install or install-node upgrades them in place");
  }
  if (dump.node_hold) out += "node hold: yes (remora-cni install-node --mode ebpf)\n";
  out += fmt::format("meshed netns: {}\n", dump.netns.size());
  for (const auto& n : dump.netns) {
    out += fmt::format("  netns cookie {}{}\n{}", n.cookie, n.current ? " (this netns)" : "",
                       describeSettings(n.settings));
  }
  out += fmt::format("original destinations: {} live, {} connects not yet established\n",
                     dump.orig_dst.size(), dump.pending_connects);
  for (const auto& o : dump.orig_dst) {
    out += fmt::format("  {} -> {} (uid {}, netns {})\n", o.app.toString(), o.original.toString(),
                       o.uid, o.netns_cookie);
  }
  out +=
      fmt::format("inbound (sk_lookup): {} pod address(es), {} proxy listener(s) in the sockhash\n",
                  dump.inbound_addrs.size(), dump.listeners.size());
  for (const auto& [ip, owner] : dump.inbound_addrs) {
    out += fmt::format("  address {} -> netns {}\n", ip.toString(), owner);
  }
  for (const auto& [owner, family] : dump.listeners) {
    out +=
        fmt::format("  listener netns {} {}\n", owner, family == Family::kIpv4 ? "ipv4" : "ipv6");
  }
  size_t fast = 0;
  for (const auto& n : dump.netns) fast += (n.settings.flags & REMORA_F_FAST_PATH) != 0;
  out += fmt::format(
      "fast path (sockops + sk_msg): {} of {} meshed netns; {} socket(s) in the sockhash, {} "
      "sent through loopback TCP\n",
      fast, dump.netns.size(), dump.fast_path_sockets, dump.fast_path_slow);
  out += "counters:\n";
  for (const auto& [name, value] : dump.counters) out += fmt::format("  {:<18} {}\n", name, value);
  for (const auto& note : dump.notes) out += "note: " + note + "\n";
  return out;
}

nlohmann::json ebpfDumpToJson(const EbpfDump& dump) {
  nlohmann::json j;
  j["mode"] = "ebpf";
  j["pin_dir"] = dump.pin_dir;
  j["programs"] = nlohmann::json::array();
  for (const auto& l : dump.links) {
    j["programs"].push_back({{"attach", l.attach},
                             {"prog", l.prog_name},
                             {"prog_id", l.prog_id},
                             {"link_id", l.link_id},
                             {"pin", l.pin},
                             {"cgroup_id", l.cgroup_id},
                             {"netns_ino", l.netns_ino}});
  }
  j["build"] = fmt::format("{:016x}", dump.build);
  j["build_is_this_binary"] = dump.build == interceptObjectHash();
  j["map_ids"] = dump.map_ids;
  j["node_hold"] = dump.node_hold;
  j["netns"] = nlohmann::json::array();
  for (const auto& n : dump.netns) {
    const auto& s = n.settings;
    j["netns"].push_back({{"cookie", n.cookie},
                          {"current", n.current},
                          {"proxy_uid", s.proxy_uid},
                          {"proxy_gid", s.proxy_gid},
                          {"outbound_port", s.outbound_port},
                          {"inbound_port", s.inbound_port},
                          {"ipv6", (s.flags & REMORA_F_IPV6) != 0},
                          {"fast_path", (s.flags & REMORA_F_FAST_PATH) != 0},
                          {"inbound", !(s.flags & REMORA_F_INBOUND)         ? "off"
                                      : (s.flags & REMORA_F_INBOUND_HYBRID) ? "iptables (hybrid)"
                                                                            : "sk_lookup"},
                          {"settings", describeSettings(s)}});
  }
  j["orig_dst"] = nlohmann::json::array();
  for (const auto& o : dump.orig_dst) {
    j["orig_dst"].push_back({{"app", o.app.toString()},
                             {"original", o.original.toString()},
                             {"uid", o.uid},
                             {"netns", o.netns_cookie}});
  }
  j["pending_connects"] = dump.pending_connects;
  j["inbound_addrs"] = nlohmann::json::array();
  for (const auto& [ip, owner] : dump.inbound_addrs) {
    j["inbound_addrs"].push_back({{"address", ip.toString()}, {"netns", owner}});
  }
  j["listeners"] = nlohmann::json::array();
  for (const auto& [owner, family] : dump.listeners) {
    j["listeners"].push_back(
        {{"netns", owner}, {"family", family == Family::kIpv4 ? "ipv4" : "ipv6"}});
  }
  j["fast_path"] = {{"sockets", dump.fast_path_sockets}, {"slow", dump.fast_path_slow}};
  j["counters"] = nlohmann::json::object();
  for (const auto& [name, value] : dump.counters) j["counters"][name] = value;
  j["notes"] = dump.notes;
  return j;
}

Result<EbpfTrace> traceEbpf(const std::string& pin_dir, const SocketAddress& destination,
                            uint32_t uid, std::optional<uint32_t> gid) {
  EbpfTrace trace;
  trace.destination = destination;
  trace.uid = uid;
  trace.gid = gid.value_or(uid);
  auto cookie = currentNetnsCookie();
  if (!cookie) return cookie.error();
  trace.netns_cookie = *cookie;
  std::string path = ebpf::pinPath(pin_dir, ebpf::kNetnsMap);
  ebpf::Fd map(bpf_obj_get(path.c_str()));
  remora_netns_settings s{};
  if (!map.valid() || bpf_map_lookup_elem(map.get(), &trace.netns_cookie, &s) != 0) {
    trace.verdict = "not_meshed";
    trace.explanation = !map.valid() ? "left alone: no eBPF programs are attached (" + path + ")"
                                     : "left alone: this netns is not registered";
    return trace;
  }
  trace.meshed = true;
  uint32_t addr[4] = {};
  std::memcpy(addr, destination.ip.bytes.data(), destination.ip.size());
  uint8_t family = destination.ip.family == Family::kIpv4 ? REMORA_AF_INET : REMORA_AF_INET6;
  remora_verdict v =
      remora_decide_outbound(&s, family, addr, destination.port, trace.uid, trace.gid);
  trace.verdict = verdictName(v);
  trace.explanation = verdictText(v);
  if (v == REMORA_V_REDIRECT) {
    auto to =
        SocketAddress::parse(family == REMORA_AF_INET ? fmt::format("127.0.0.1:{}", s.outbound_port)
                                                      : fmt::format("[::1]:{}", s.outbound_port));
    if (to) trace.rewritten_to = *to;
  }
  return trace;
}

std::string renderEbpfTrace(const EbpfTrace& t) {
  std::string out = fmt::format("trace (eBPF): TCP connect to {} by uid {} gid {} in netns {}\n",
                                t.destination.toString(), t.uid, t.gid, t.netns_cookie);
  out += fmt::format("  cgroup/connect{}: {}\n", t.destination.ip.family == Family::kIpv4 ? 4 : 6,
                     t.explanation);
  if (t.rewritten_to) {
    out += fmt::format("  => {} ; the proxy's getsockopt(SO_ORIGINAL_DST) returns {}\n",
                       t.rewritten_to->toString(), t.destination.toString());
  } else {
    out += fmt::format("  => {} directly\n", t.destination.toString());
  }
  return out;
}

nlohmann::json ebpfTraceToJson(const EbpfTrace& t) {
  nlohmann::json j{{"mode", "ebpf"},
                   {"destination", t.destination.toString()},
                   {"uid", t.uid},
                   {"gid", t.gid},
                   {"netns", t.netns_cookie},
                   {"meshed", t.meshed},
                   {"verdict", t.verdict},
                   {"explanation", t.explanation}};
  if (t.rewritten_to) j["rewritten_to"] = t.rewritten_to->toString();
  return j;
}

}  // namespace remora::intercept
