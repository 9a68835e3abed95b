#pragma once

// Protocol sniffing for Service ports that declare no protocol (no `http-*`-style port name and
// no appProtocol: "auto" in the route table), as Istio's protocol detection does: the proxy
// waits a bounded time for the client's first bytes. An HTTP/1.x request line sends the
// connection to the L7 path; anything else, the client closing, or the timeout (a server-first
// protocol such as MySQL, where the client waits for the server) sends it to the L4 relay. Either
// way the bytes already read go first.
//
// Runs on the worker's thread and ring, with op bytes of its own (SniffOp). The verdicts are
// counted in remora_protocol_sniff_total{result="http|tcp|timeout"}.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/ip_address.h"
#include "loop/ring.h"
#include "loop/slot_table.h"
#include "proxy/stats.h"

namespace remora::proxy {

enum class SniffOp : uint8_t {
  kFirst = 120,
  kRead = kFirst,
  kTimer,
  kCancel,
  kLast = kCancel,
};

struct Sniffed {
  enum class Verdict : uint8_t { kHttp, kTcp, kTimeout };
  Verdict verdict = Verdict::kTcp;
  int fd = -1;  // the caller's from now on
  uint32_t listener = 0;
  SocketAddress original_dst;
  std::string bytes;  // read from the client, to be handled before anything read later
};

class Sniffer {
 public:
  // A request line longer than this is not waited for: the connection goes to the L4 relay.
  static constexpr size_t kMaxBytes = 16384;
  static constexpr std::chrono::milliseconds kDefaultTimeout{100};
  using Done = std::function<void(Sniffed)>;

  Sniffer(loop::Ring& ring, WorkerStats& stats, Done done);
  ~Sniffer();
  Sniffer(const Sniffer&) = delete;
  Sniffer& operator=(const Sniffer&) = delete;

  static bool owns(uint8_t op) {
    return op >= static_cast<uint8_t>(SniffOp::kFirst) &&
           op <= static_cast<uint8_t>(SniffOp::kLast);
  }

  // Takes over an accepted connection until its verdict (handed to `done`).
  void start(int fd, uint32_t listener, const SocketAddress& original_dst,
             std::chrono::milliseconds timeout);
  void onCompletion(const loop::Completion& c);
  // Closes every connection still being sniffed (drain deadline, shutdown).
  void abortAll();
  // Connections being sniffed, or whose operations have not all completed.
  size_t inUse() const { return pending_.inUse(); }

 private:
  struct Pending;
  void onRead(uint32_t slot, const loop::Completion& c);
  void onTimer(uint32_t slot, const loop::Completion& c);
  void read(uint32_t slot);
  void finish(uint32_t slot, Sniffed::Verdict verdict);

  loop::Ring& ring_;
  WorkerStats& stats_;
  Done done_;
  loop::SlotTable<std::unique_ptr<Pending>> pending_;
};

}  // namespace remora::proxy
