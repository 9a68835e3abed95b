#pragma once

#include <string>

namespace remora::intercept::ebpf {

// What the eBPF mode pins under its pin dir (docs/EBPF.md). Links keep the programs attached
// while pinned; maps are pinned so later installs, dump and uninstall can reach them.
inline constexpr const char* kNetnsMap = "map_netns";
inline constexpr const char* kOrigByCookieMap = "map_orig_by_cookie";
inline constexpr const char* kOrigByTupleMap = "map_orig_by_tuple";
inline constexpr const char* kCountersMap = "map_counters";
// In pinning order: the netns map last (ebpf_applier.cc).
inline constexpr const char* kMapPins[] = {kOrigByCookieMap, kOrigByTupleMap, kCountersMap,
                                           kNetnsMap};
inline constexpr const char* kLinkPins[] = {"link_connect4", "link_connect6", "link_getsockopt",
                                            "link_sockops"};
inline std::string pinPath(const std::string& dir, const char* name) { return dir + "/" + name; }

// Counter names, indexed by enum remora_counter.
inline constexpr const char* kCounterNames[] = {
    "redirected",      "bypassed_uid",    "bypassed_gid",    "excluded_port",  "excluded_cidr",
    "not_included",    "loopback",        "ipv6_off",        "tuple_recorded", "orig_dst_answered",
    "orig_dst_missed", "inbound_steered", "inbound_excluded"};

}  // namespace remora::intercept::ebpf
