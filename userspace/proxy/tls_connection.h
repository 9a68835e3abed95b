#pragma once

// The per-connection mTLS and authorization state the worker keeps (tls_worker.cc), and the
// metrics they feed. Only connections that TLS or authorization concern carry one.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/ip_address.h"
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
  // Inbound STRICT / PERMISSIVE: the connection to the app waits for the authorization, so a
  // denied client never opens one. Until then only the client side is read and written.
  bool connect_deferred = false;
  bool close_notify = false;
  std::string peer_identity;  // the peer's SPIFFE ID once the handshake is done
  security::MtlsMode mode = security::MtlsMode::kUnset;
};

// How long PERMISSIVE waits for a client's first bytes before treating it as plaintext (the app
// may speak first). The worker's sweep checks it, so the wait ends within one tick of this.
inline constexpr std::chrono::milliseconds kDetectTimeout{200};

// The decisions and counters the L4 hooks (tls_worker.cc) and the L7 path (http_tls.cc) share.

// The first byte of a TLS handshake record (a ClientHello): PERMISSIVE's detection.
inline constexpr char kTlsHandshakeRecord = 0x16;
// PERMISSIVE's detection on a client's first byte: true for TLS, whose ClientHello then decides
// (terminateTls). Plaintext is counted here, in remora_tls_permissive_total{detected="plaintext"}.
bool permissiveDetectsTls(char first);

// Istio's mesh mTLS ALPNs ("istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1",
// "istio-h2"): whether `offered` holds one. Istio's PERMISSIVE inbound filter chains terminate
// TLS only for these; other TLS is not the mesh's.
bool offersIstioAlpn(const std::vector<std::string>& offered);

// Where an inbound PERMISSIVE connection's TLS goes, decided once from its ClientHello as Istio's
// filter chains decide (docs/TLS.md, "Inbound: PeerAuthentication").
enum class PermissiveTls : uint8_t {
  kMesh,         // an Istio ALPN: terminated as mesh mTLS (detected="tls")
  kPassThrough,  // none, on a TCP or unnamed port: the client's own TLS goes to the app as it is,
                 // relayed at L4 (detected="tls_passthrough")
  kRefuse,       // none, on an HTTP port: Istio has no filter chain for it, the connection is
                 // closed (detected="tls_refused")
};
// The decision for a ClientHello offering `offered` on a port that is (`http_port`) or is not
// declared HTTP; counted in remora_tls_permissive_total{detected}.
PermissiveTls decidePermissiveTls(const std::vector<std::string>& offered, bool http_port);

// Outbound: the client stream for a connection to `endpoint` of `service` ("name.namespace",
// may be empty) on `service_port`, as DestinationRule tls and auto mTLS decide, expecting the
// endpoint pod's SPIFFE ID (in the proxy's own trust domain); nullptr: plaintext (no mTLS wanted,
// or wanted with no certificate loaded: counted and logged).
// `alpn`: what mesh mTLS offers (kMeshHttpAlpn, kMeshTcpAlpn; none when the carried protocol
// is unknown); SIMPLE / MUTUAL toward servers outside the mesh offer none.
std::unique_ptr<tls::TlsStream> originateTls(const security::SecurityTable& security,
                                             const tls::IdentityStore* identity,
                                             const std::string& service, uint16_t service_port,
                                             const SocketAddress& endpoint,
                                             tls::SessionCache* sessions,
                                             const std::vector<std::string>& alpn = {});
// The ALPN Istio's client sidecars offer over mesh mTLS, which the server side's filter chains
// match (sniffer.h, meshAlpnVerdict): HTTP/1.1, as Istio's ALPN filter sets it, and TCP
// without Istio's metadata exchange (Remora does not speak it, so it never offers
// "istio-peer-exchange").
inline const std::vector<std::string> kMeshHttpAlpn{"istio-http/1.1", "istio", "http/1.1"};
inline const std::vector<std::string> kMeshTcpAlpn{"istio"};
// Inbound: a server stream with the current certificate; nullptr with none (counted, logged).
// `mode` kPermissive: the ClientHello decides first (decidePermissiveTls); a stream whose client
// is not the mesh's reports passedThrough() and hands back the bytes it read (takeReceived()):
// the caller relays them (kPassThrough) or closes (kRefuse, on an `http_port`). Any other mode
// terminates every TLS client (STRICT: as Istio's STRICT chains match any TLS).
std::unique_ptr<tls::TlsStream> terminateTls(const tls::IdentityStore* identity,
                                             security::MtlsMode mode = security::MtlsMode::kStrict,
                                             bool http_port = false);
// The peer's principal and namespace from its SPIFFE ID ("" for plaintext) into `a`.
void identifyPeer(const std::string& peer_identity, security::ConnectionAttributes& a);
// Evaluates the policies selecting `a.destination_ip` and counts the decision (per policy and in
// remora_authz_decisions_total).
security::AuthzDecision authorize(const security::SecurityTable* security,
                                  const security::ConnectionAttributes& a);
// The metric outcome of a failed TLS stream ("tls_peer_identity", ...).
const char* tlsOutcome(tls::Failure failure);
// At most one log line per second per thread for TLS trouble.
bool tlsLogAllowed();

// The source_principal label of an inbound connection's remora_tcp_* series: "" (no label) when
// no security configuration applies, "unknown" for plaintext, else the peer's principal
// ("cluster.local/ns/x/sa/y", as in remora_inbound_connections_total).
std::string sourcePrincipalLabel(const TlsConnection* t);

// Inbound connections by peer identity (source_principal, "unknown" for plaintext) and the mode
// they were served in. Any thread.
void countInbound(const std::string& source_principal, bool tls);
// remora_tls_* and remora_authz_* metrics in the Prometheus text format.
std::string renderTlsPrometheus();

}  // namespace remora::proxy
