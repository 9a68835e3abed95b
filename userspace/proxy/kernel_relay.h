#pragma once

// The kernel relay for pure L4 routes (docs/PROXY.md, "Kernel relay"): once a worker has
// connected the upstream of a TCP route, the socket pair goes into the sockhash that
// bpf/relay.bpf.c's verdict program serves, and the kernel moves the bytes from each socket to
// the other's egress. The proxy keeps the sockets: it watches them for FIN and RST and closes
// them. remora-init (`remora-init relay install`) loads the program and pins its maps for the
// proxy's uid; the proxy, without capabilities, opens the pins.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

struct ring_buffer;  // libbpf's ring buffer reader (bpf/libbpf.h)

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
inline constexpr const char* kRelayTargetsPin = "targets";
inline constexpr const char* kRelayEventsPin = "events";
inline constexpr const char* kRelayProgPin = "prog_verdict";

// SO_RCVLOWAT that keeps a relayed socket's data-ready, which runs the verdict program, from
// firing (tcp_data_ready): while a pair goes into the sockhash and while it leaves it.
inline constexpr int kRelayHoldBytes = 256 << 10;

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

// A pair whose reader fell behind (struct remora_relay_event): the worker's connection slot and
// the cookie of the socket whose bytes wait.
struct RelayEvent {
  uint64_t cookie = 0;
  uint32_t slot = 0;
};

// Who relays a pair: the program names the worker and slot in its events.
struct RelayOwner {
  uint32_t worker = 0;
  uint32_t slot = 0;
};

// The relay's pinned maps, opened once and shared by every worker (bpf(2) map calls are
// thread-safe, and so are the event mailboxes). Each call is a few syscalls; none blocks.
class RelayMaps {
 public:
  // Opens the pins under `pin_dir` (BPF_OBJ_GET: needs read and write permission on them) and
  // proves the relay works in this process: a loopback socket pair is inserted and removed.
  // `workers` (at least 1): how many workers get events. The error says which step failed, for the
  // log line of the fallback.
  static Result<std::shared_ptr<RelayMaps>> open(const std::string& pin_dir, unsigned workers);
  ~RelayMaps();
  RelayMaps(const RelayMaps&) = delete;
  RelayMaps& operator=(const RelayMaps&) = delete;

  // Hands a connected pair to the kernel: peers entries, then both sockets into both
  // sockhashes, then each socket is nudged so bytes that arrived before the insertion go out
  // too. On error nothing of the pair stays in the maps and the caller relays it itself.
  // `limit`: bytes a direction may hold in the kernel's redirect queue (the peer reads slower
  // than the sender sends) before the program reports the pair to `owner` (0: never).
  Result<RelayPair> attach(int client_fd, int upstream_fd, uint32_t limit, RelayOwner owner) const;
  // Takes both sockets out of the verdict's sockhash: from then on each socket keeps what it
  // receives in its own receive queue (TCP's window closes when nobody reads it), while the
  // bytes already redirected to it still go out (it stays in the targets sockhash). False when
  // a removal failed for another reason than the socket being gone already.
  bool stopVerdicts(const RelayPair& pair) const;
  // Removes the pair from the maps (closing the sockets would drop them from the sockhashes,
  // not from the peers map) and returns what the kernel carried.
  RelayBytes detach(const RelayPair& pair) const;
  // detach for a pair whose sockets close next: the peers entries leave with their counts in
  // one lookup-and-delete each, and the sockhash entries are left to the close (the kernel
  // unlinks a closing socket from every sockmap): 2 bpf calls instead of 6 per connection.
  RelayBytes release(const RelayPair& pair) const;
  // Bytes redirected so far from the socket with this cookie.
  uint64_t redirected(uint64_t cookie) const;

  // Backpressure events (relay.bpf.c, "Backpressure"). One worker polls ringFd() for POLLIN
  // and calls drainRing(), which moves each record to the mailbox of the worker that relays
  // the pair and makes that worker's wakeFd() readable; that worker takes them with
  // takeEvents().
  int ringFd() const { return events_; }
  int wakeFd(unsigned worker) const;
  void drainRing() const;
  std::vector<RelayEvent> takeEvents(unsigned worker) const;

 private:
  struct Mailbox {
    std::mutex mu;
    std::vector<RelayEvent> events;
    int wake_fd = -1;  // an eventfd
  };
  RelayMaps() = default;
  int socks_ = -1;
  int peers_ = -1;
  int counters_ = -1;
  int targets_ = -1;
  int events_ = -1;
  mutable std::mutex ring_mu_;
  ::ring_buffer* ring_ = nullptr;  // libbpf's reader of events_
  std::vector<std::unique_ptr<Mailbox>> mailboxes_;
};

// `--relay auto` (docs/PROXY.md, "Kernel relay", "Adaptive hand-over"): whether a pair the
// io_uring relay carries has shown that it is a long-lived request/response connection, which
// the kernel relay serves best, and not a short or a bulk one, which it serves worse. Fed with
// every receive that brought bytes; pure, so the rule is tested on its own.
class HandoverRule {
 public:
  // Exchanges (bytes one way, then bytes the other way) before the hand-over. Three, because a
  // connection with one or two requests (or a TLS 1.3 handshake and one request through the L4
  // relay) would pay the hand-over's syscalls (about 30: map updates, TCP_INFO at the FINs)
  // for one exchange or none in the kernel; one that reached a third is a pooled or kept-alive
  // connection, where every further exchange is cheaper in the kernel.
  static constexpr uint32_t kExchanges = 3;
  // Hand-overs abandoned because a receive brought bytes while it was being cancelled, before
  // the pair stays in user space for good (a pair that keeps racing rarely pauses). After each,
  // the next try waits for one more exchange: a response arriving in pieces offers an idle
  // point between pieces, and those would use the tries up within one exchange.
  static constexpr uint32_t kMaxTries = 8;

  // A receive of `bytes` (> 0) from one side into a provided buffer of `buffer_size` bytes.
  void onReceive(bool from_client, size_t bytes, size_t buffer_size) {
    // A full buffer: the sender had more than a buffer waiting, i.e. a bulk transfer, which the
    // io_uring relay carries 3.6x faster. It also means the socket may still hold the rest of
    // a partly read skb, which the sockmap would deliver again from its start (tcp_read_skb
    // does not look at copied_seq); a receive that did not fill its buffer emptied the queue.
    if (bytes >= buffer_size) bulk_ = true;
    const int8_t side = from_client ? 1 : 0;
    if (last_side_ >= 0 && side != last_side_) ++turns_;
    last_side_ = side;
  }
  // A hand-over was abandoned (the race above).
  void onRaced() {
    ++tries_;
    ready_turns_ = turns_ + 2;
  }
  // Turns of the conversation completed: client then upstream is one, and so on.
  uint32_t exchanges() const { return (turns_ + 1) / 2; }
  bool bulk() const { return bulk_; }
  // This pair will never be handed over.
  bool gaveUp() const { return bulk_ || tries_ >= kMaxTries; }
  // Hand over now (at a point where nothing is queued or being sent).
  bool ready() const { return !gaveUp() && exchanges() >= kExchanges && turns_ >= ready_turns_; }

 private:
  uint32_t turns_ = 0;     // changes of direction between receives that brought bytes
  int8_t last_side_ = -1;  // the side of the last one: 1 client, 0 upstream, -1 none yet
  bool bulk_ = false;
  uint32_t tries_ = 0;
  uint32_t ready_turns_ = 0;  // after a race: the turns that complete one more exchange
};

// Bytes the kernel has accepted for sending on a TCP socket: acknowledged plus still queued
// (TCP_INFO bytes_acked + SIOCOUTQ). Compared with RelayMaps::redirected to know that every
// redirected byte reached the peer's socket before it is shut down. `connected` is true for a
// socket this process connected: its bytes_acked counts the SYN too.
uint64_t tcpBytesWritten(int fd, bool connected);
// Data bytes a TCP socket has let go of: delivered in order, minus what still waits in its
// receive queue (TCP_INFO bytes_received - a MSG_PEEK of the queue, less the FIN's sequence
// number). For a relayed socket: what the io_uring relay read plus what the verdict program
// took. Meant for a socket nobody reads meanwhile. -1 when the kernel does not say, or when
// bytes arrived while it was counting (ask again later).
int64_t tcpBytesConsumed(int fd);

}  // namespace remora::proxy
