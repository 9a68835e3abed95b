#pragma once

// Protocol sniffing for Service ports that declare no protocol (no `http-*`-style port name and
// no appProtocol: "auto" in the route table), as Istio's protocol detection does: the proxy
// waits a bounded time for the client's first bytes. An HTTP/1.x request line sends the
// connection to the L7 path; anything else, the client closing, or the timeout (a server-first
// protocol such as MySQL, where the client waits for the server) sends it to the L4 relay. Either
// way the bytes already read go first.
//
// Inbound, where PeerAuthentication may bring mTLS (PERMISSIVE, STRICT), the first byte decides
// the transport first: a TLS handshake record is answered here (the handshake, bounded by
// kHandshakeTimeout). Under PERMISSIVE the ClientHello decides first (decidePermissiveTls): a
// client offering none of Istio's ALPNs is not the mesh's, and what it sent is relayed to the
// app as it is (Transport::kTlsPassedThrough, verdict TCP). A terminated stream's verdict is its
// ALPN's (meshAlpnVerdict): HTTP for Istio's HTTP protocols, else TCP, as Istio's inbound filter
// chains take it (STRICT terminates any TLS; one without an Istio HTTP ALPN is TCP). PERMISSIVE
// takes plaintext as above; STRICT refuses it. The established stream goes with the verdict, so
// the L7 or L4 path carries on over it.
//
// Runs on the worker's thread and ring, with op bytes of its own (SniffOp). The verdicts are
// counted in remora_protocol_sniff_total{result="http|tcp|timeout"}, TLS or not.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_address.h"
#include "loop/ring.h"
#include "loop/slot_table.h"
#include "proxy/stats.h"
#include "security/security_policy.h"
#include "tls/tls_stream.h"

namespace remora::proxy {

enum class SniffOp : uint8_t {
  kFirst = 120,
  kRead = kFirst,
  kTimer,
  kCancel,
  kWrite,
  kLast = kWrite,
};

// What an mTLS client's ALPN offer says it carries, as Istio's inbound filter chains read it:
// the first of Istio's protocols it offers decides ("istio-http/1.0", "istio-http/1.1": HTTP;
// "istio", "istio-peer-exchange", and "istio-h2", which Remora's L7 path does not speak: TCP);
// none of them: unknown (carried as TCP, as Istio's STRICT chains do).
enum class AlpnVerdict : uint8_t { kHttp, kTcp, kUnknown };
AlpnVerdict meshAlpnVerdict(const std::vector<std::string>& offered);

struct Sniffed {
  enum class Verdict : uint8_t { kHttp, kTcp, kTimeout };
  // Ports where mTLS may apply: how the client's transport was decided. kUndecided: not such a
  // port, or STRICT with a client that said nothing (the L4 path waits for its handshake).
  // kTlsPassedThrough: PERMISSIVE TLS whose ClientHello offered no Istio ALPN; `bytes` are the
  // client's own TLS, for the app as they are.
  enum class Transport : uint8_t { kUndecided, kPlaintext, kTls, kTlsPassedThrough };
  Verdict verdict = Verdict::kTcp;
  Transport transport = Transport::kUndecided;
  int fd = -1;  // the caller's from now on
  uint32_t listener = 0;
  SocketAddress original_dst;
  // Read from the client (decrypted for kTls), to be handled before anything read later.
  std::string bytes;
  std::unique_ptr<tls::TlsStream> tls;  // kTls: the established server stream, nothing unsent
};

// A connection the sniffer closed before any verdict (a failed or unfinished TLS handshake, a
// STRICT port's plaintext, a drain): what its access-log line needs. `fd` is still open.
struct SniffClosed {
  int fd = -1;
  uint32_t listener = 0;
  SocketAddress original_dst;
  const char* outcome = "";   // as the L4 path names the same ends: "tls_handshake_failed", ...
  size_t received_bytes = 0;  // read from the client, ciphertext included
  std::chrono::steady_clock::time_point started;
};

class Sniffer {
 public:
  // A request line longer than this is not waited for: the connection goes to the L4 relay.
  static constexpr size_t kMaxBytes = 16384;
  static constexpr std::chrono::milliseconds kDefaultTimeout{100};
  // A TLS client's handshake must be done by then (Envoy's transport socket connect timeout
  // is of this order); the connection is reset otherwise.
  static constexpr std::chrono::milliseconds kHandshakeTimeout{10000};
  using Done = std::function<void(Sniffed)>;
  // A server stream with the current certificate for a port in `mode` (terminateTls), nullptr
  // with none (counted by the maker).
  using MakeServerStream = std::function<std::unique_ptr<tls::TlsStream>(security::MtlsMode)>;
  using Closed = std::function<void(const SniffClosed&)>;

  Sniffer(loop::Ring& ring, WorkerStats& stats, Done done, MakeServerStream make_server = {},
          Closed closed = {});
  ~Sniffer();
  Sniffer(const Sniffer&) = delete;
  Sniffer& operator=(const Sniffer&) = delete;

  static bool owns(uint8_t op) {
    return op >= static_cast<uint8_t>(SniffOp::kFirst) &&
           op <= static_cast<uint8_t>(SniffOp::kLast);
  }

  // Takes over an accepted connection until its verdict (handed to `done`). `mtls`: the
  // port's PeerAuthentication mode (kStrict / kPermissive: the client may speak TLS).
  void start(int fd, uint32_t listener, const SocketAddress& original_dst,
             std::chrono::milliseconds timeout,
             security::MtlsMode mtls = security::MtlsMode::kDisable);
  void onCompletion(const loop::Completion& c);
  // Closes every connection still being sniffed (drain deadline, shutdown).
  void abortAll();
  // Connections being sniffed, or whose operations have not all completed.
  size_t inUse() const { return pending_.inUse(); }

 private:
  struct Pending;
  void onRead(uint32_t slot, const loop::Completion& c);
  void onTimer(uint32_t slot, const loop::Completion& c);
  void onWrite(uint32_t slot, const loop::Completion& c);
  void read(uint32_t slot);
  // The first bytes on a port where mTLS may apply: false when the connection was refused.
  bool decideTransport(uint32_t slot, char first);
  void onTlsBytes(uint32_t slot, std::string_view bytes);
  void sniffBytes(uint32_t slot);
  void flushTls(uint32_t slot);
  // The verdict, once the handshake's last bytes are sent.
  void decide(uint32_t slot, Sniffed::Verdict verdict);
  void finish(uint32_t slot, Sniffed::Verdict verdict);
  // Closes the connection now (reset: with an RST), reported to `closed_` with `outcome`; no
  // verdict.
  void closeNow(uint32_t slot, bool reset, const char* outcome);

  loop::Ring& ring_;
  WorkerStats& stats_;
  Done done_;
  MakeServerStream make_server_;
  Closed closed_;
  loop::SlotTable<std::unique_ptr<Pending>> pending_;
};

}  // namespace remora::proxy
