#pragma once

// The kernel relay for pure L4 routes (docs/PROXY.md, "Kernel relay"): once a worker has
// connected the upstream of a TCP route, the socket pair goes into the sockhash that
// bpf/relay.bpf.c's verdict program serves, and the kernel moves the bytes from each socket to
// the other's egress. The proxy keeps the sockets: it watches them for FIN and RST and closes
// them. remora-init (`remora-init relay install`) loads the program and pins its maps for the
// proxy's uid; the proxy, without capabilities, opens the pins.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace remora::proxy {

// --relay / ProxyConfig spec.relay.
enum class RelayMode : uint8_t { kAuto, kKernel, kUring };
Result<RelayMode> parseRelayMode(std::string_view text);
const char* relayModeName(RelayMode mode);

inline constexpr const char* kDefaultRelayPinDir = "/sys/fs/bpf/remora/relay";
// The pins remora-init leaves in the relay pin dir.
inline constexpr const char* kRelaySocksPin = "socks";
inline constexpr const char* kRelayPeersPin = "peers";
inline constexpr const char* kRelayCountersPin = "counters";
inline constexpr const char* kRelayProgPin = "prog_verdict";

// Socket cookies of one relayed pair (the map keys).
struct RelayPair {
  uint64_t client_cookie = 0;
  uint64_t upstream_cookie = 0;
};

// Bytes the kernel redirected for one pair, read when it leaves the maps.
struct RelayBytes {
  uint64_t from_client = 0;
  uint64_t from_upstream = 0;
};

// The relay's pinned maps, opened once and shared by every worker (bpf(2) map calls are
// thread-safe). Each call is a few syscalls; none blocks.
class RelayMaps {
 public:
  // Opens the pins under `pin_dir` (BPF_OBJ_GET: needs read and write permission on them) and
  // proves the relay works in this process: a loopback socket pair is inserted and removed.
  // The error says which step failed, for the log line of the fallback.
  static Result<std::shared_ptr<RelayMaps>> open(const std::string& pin_dir);
  ~RelayMaps();
  RelayMaps(const RelayMaps&) = delete;
  RelayMaps& operator=(const RelayMaps&) = delete;

  // Hands a connected pair to the kernel: peers entries, then both sockets into the sockhash,
  // then each socket is nudged so bytes that arrived before the insertion go out too. On error
  // nothing of the pair stays in the maps and the caller relays it itself.
  // `limit`: bytes a direction may hold in the kernel's redirect queue (the peer reads slower
  // than the sender sends) before the pair leaves the kernel path (see passed()).
  Result<RelayPair> attach(int client_fd, int upstream_fd, uint32_t limit) const;
  // Removes the pair from the maps (closing the sockets would drop them from the sockhash, not
  // from the peers map) and returns what the kernel carried.
  RelayBytes detach(const RelayPair& pair) const;
  // detach for a pair whose sockets close next: the peers entries leave with their counts in
  // one lookup-and-delete each, and the sockhash entries are left to the close (the kernel
  // unlinks a closing socket from every sockmap): 2 bpf calls instead of 6 per connection.
  RelayBytes release(const RelayPair& pair) const;
  // Bytes redirected so far from the socket with this cookie.
  uint64_t redirected(uint64_t cookie) const;
  // True once the program has taken the pair off the kernel path (a redirect queue passed its
  // limit): from then on both sockets keep what they receive, charged to their receive buffers
  // so TCP pushes back, and the proxy relays the pair itself once the redirected bytes are out.
  bool passed(uint64_t cookie) const;

 private:
  RelayMaps(int socks, int peers, int counters)
      : socks_(socks), peers_(peers), counters_(counters) {}
  int socks_ = -1;
  int peers_ = -1;
  int counters_ = -1;
};

// Bytes the kernel has accepted for sending on a TCP socket: acknowledged plus still queued
// (TCP_INFO bytes_acked + SIOCOUTQ). Compared with RelayMaps::redirected to know that every
// redirected byte reached the peer's socket before it is shut down. `connected` is true for a
// socket this process connected: its bytes_acked counts the SYN too.
uint64_t tcpBytesWritten(int fd, bool connected);

}  // namespace remora::proxy
