#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.h"
#include "common/result.h"
#include "remora_abi.h"

namespace remora::intercept {

// What `remora-init dump --mode ebpf` reads from the pins (read-only).
struct EbpfLinkInfo {
  std::string pin;
  uint32_t link_id = 0;
  uint32_t prog_id = 0;
  std::string prog_name;
  std::string attach;  // "cgroup/connect4", ...
  uint64_t cgroup_id = 0;
  uint32_t netns_ino = 0;  // sk_lookup links: the netns they steer in
};
struct EbpfNetnsEntry {
  uint64_t cookie = 0;
  bool current = false;  // the netns dump runs in
  remora_netns_settings settings{};
};
struct EbpfOrigDstEntry {
  SocketAddress app;       // the app's end, as the proxy sees its peer
  SocketAddress original;  // where the app connected
  uint64_t netns_cookie = 0;
  uint32_t uid = 0;
};
struct EbpfDump {
  std::string pin_dir;
  std::vector<EbpfLinkInfo> links;
  std::vector<uint32_t> map_ids;
  std::vector<EbpfNetnsEntry> netns;
  // remora-cni install-node --mode ebpf's entry (cookie 0) is in map_netns: the programs stay
  // attached with no netns meshed. Not counted in `netns`.
  bool node_hold = false;
  std::vector<EbpfOrigDstEntry> orig_dst;  // live entries, up to kMaxDumpedOrigDst
  size_t pending_connects = 0;             // rewritten, not yet established
  // Inbound: pod addresses sk_lookup knows (address, netns cookie) and the proxy listeners the
  // sockhash holds (netns cookie, family).
  std::vector<std::pair<IpAddress, uint64_t>> inbound_addrs;
  std::vector<std::pair<uint64_t, Family>> listeners;
  // The fast path: sockets in its sockhash now (two per live app<->proxy connection; the kernel
  // drops a socket when it closes), and sockets sent to loopback TCP because their peer was not
  // there yet.
  size_t fast_path_sockets = 0;
  size_t fast_path_slow = 0;
  std::vector<std::pair<std::string, uint64_t>> counters;
  // map_meta's record of the attached programs' build (0: none, a build before map_meta).
  uint64_t build = 0;
  std::vector<std::string> notes;
};

Result<EbpfDump> dumpEbpf(const std::string& pin_dir);
std::string renderEbpfDump(const EbpfDump& dump);
nlohmann::json ebpfDumpToJson(const EbpfDump& dump);

// `dump --trace IP:PORT --uid N --mode ebpf`: the connect program's own decision function run
// against the calling netns's registered settings.
struct EbpfTrace {
  SocketAddress destination;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t netns_cookie = 0;
  bool meshed = false;
  std::string verdict;  // "redirect", "bypass_uid", ... or "not_meshed"
  std::optional<SocketAddress> rewritten_to;
  std::string explanation;
};
Result<EbpfTrace> traceEbpf(const std::string& pin_dir, const SocketAddress& destination,
                            uint32_t uid, std::optional<uint32_t> gid);
std::string renderEbpfTrace(const EbpfTrace& trace);
nlohmann::json ebpfTraceToJson(const EbpfTrace& trace);

}  // namespace remora::intercept
