#pragma once

#include <unistd.h>

#include <cstdint>
#include <string>

namespace remora::intercept::ebpf {

// What the eBPF mode pins under its pin dir (docs/EBPF.md). Links keep the programs attached
// while pinned; maps are pinned so later installs, dump and uninstall can reach them.
inline constexpr const char* kNetnsMap = "map_netns";
inline constexpr const char* kOrigByCookieMap = "map_orig_by_cookie";
inline constexpr const char* kOrigByTupleMap = "map_orig_by_tuple";
inline constexpr const char* kCountersMap = "map_counters";
inline constexpr const char* kInboundAddrsMap = "map_inbound_addrs";
inline constexpr const char* kListenersMap = "map_listeners";
// The fast path's sockhash (sk_msg is attached to it) and its slow-socket set.
inline constexpr const char* kPairsMap = "map_pairs";
inline constexpr const char* kPairsSlowMap = "map_pairs_slow";
// Which build's programs are attached (struct remora_meta).
inline constexpr const char* kMetaMap = "map_meta";
// In pinning order: the netns map last (ebpf_applier.cc).
inline constexpr const char* kMapPins[] = {kOrigByCookieMap, kOrigByTupleMap, kCountersMap,
                                           kInboundAddrsMap, kListenersMap,   kPairsMap,
                                           kPairsSlowMap,    kMetaMap,        kNetnsMap};
// The sk_lookup program, pinned so later installs can attach it to their netns.
inline constexpr const char* kSkLookupProg = "prog_sk_lookup";
// One sk_lookup link per meshed netns with inbound capture: link_sk_lookup_<netns cookie>.
inline constexpr const char* kSkLookupLinkPrefix = "link_sk_lookup_";
inline constexpr const char* kLinkPins[] = {"link_connect4", "link_connect6", "link_getsockopt",
                                            "link_sockops"};
// The node hold's key in map_netns (remora-cni install-node --mode ebpf): netns cookies start at
// 1, so no netns matches it, and it keeps the map non-empty, which keeps the programs attached.
inline constexpr uint64_t kNodeHoldCookie = 0;
inline std::string pinPath(const std::string& dir, const std::string& name) {
  return dir + "/" + name;
}

// A file descriptor closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_;
};

// Counter names, indexed by enum remora_counter.
inline constexpr const char* kCounterNames[] = {
    "redirected",       "bypassed_uid",      "bypassed_gid",    "excluded_port",
    "excluded_cidr",    "not_included",      "loopback",        "ipv6_off",
    "tuple_recorded",   "orig_dst_answered", "orig_dst_missed", "inbound_steered",
    "inbound_excluded", "inbound_no_proxy",  "listener_added",  "orig_dst_deleted",
    "pair_added",       "msg_redirected",    "msg_bytes",       "msg_slow",
    "pair_released",    "msg_to_app"};

}  // namespace remora::intercept::ebpf
