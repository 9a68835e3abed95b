#pragma once

// The per-connection mTLS and authorization state the worker keeps (tls_worker.cc), and the
// metrics they feed. Only connections that TLS or authorization concern carry one.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "security/security_policy.h"
#include "tls/tls_context.h"
#include "tls/tls_stream.h"

namespace remora::proxy {

struct TlsConnection {
  // The TLS side: the client socket (inbound termination) or the upstream socket (origination).
  bool terminate = false;
  std::unique_ptr<tls::TlsStream> stream;  // nullptr: plaintext (or not decided yet)
  // PERMISSIVE: the first bytes from the client decide between TLS and plaintext; the app's
  // bytes wait meanwhile.
  bool detecting = false;
  std::chrono::steady_clock::time_point detect_deadline;
  bool authorized = false;  // inbound: the AuthorizationPolicies allowed it
  bool close_notify = false;
  std::string peer_identity;  // the peer's SPIFFE ID once the handshake is done
  security::MtlsMode mode = security::MtlsMode::kUnset;
};

// How long PERMISSIVE waits for a client's first bytes before treating it as plaintext (the app
// may speak first). The worker's sweep checks it, so the wait ends within one tick of this.
inline constexpr std::chrono::milliseconds kDetectTimeout{200};

// Inbound connections by peer identity (source_principal, "unknown" for plaintext) and the mode
// they were served in. Any thread.
void countInbound(const std::string& source_principal, bool tls);
// remora_tls_* and remora_authz_* metrics in the Prometheus text format.
std::string renderTlsPrometheus();

}  // namespace remora::proxy
