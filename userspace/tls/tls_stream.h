#pragma once

// One connection's TLS over memory BIOs: the io_uring data path hands it the bytes it received
// from the network and the plaintext it wants to send, and takes back the ciphertext to send and
// the plaintext to relay. It never touches a socket, so it never blocks, and it works the same
// over an in-memory pipe (the unit tests) as over a ring.
//
// kTLS seam: once the handshake is done, a kernel with TLS_TX/TLS_RX could take over the record
// layer (SSL_OP_ENABLE_KTLS needs the socket BIO); this kernel has no kTLS, so records stay in
// user space. ktlsCandidate() says where that switch would go (docs/TLS.md).

#include <openssl/ssl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "tls/tls_context.h"

namespace remora::tls {

enum class Role { kClient, kServer };

enum class Failure : uint8_t {
  kNone,
  kHandshake,       // protocol error, version mismatch, peer sent an alert we do not single out
  kPeerIdentity,    // the peer's SPIFFE ID is missing, outside the trust domain, or unexpected
  kCertExpired,     // the peer's certificate expired (or the peer says ours did)
  kUnknownCa,       // the peer's chain does not verify against our roots (or the peer's)
  kSubjectAltName,  // SIMPLE / MUTUAL: the server's certificate has none of the names wanted
  kConfig,          // SIMPLE / MUTUAL: the DestinationRule's files could not be used
};
const char* toString(Failure failure);

// Client sessions for resumption, keyed by upstream; per worker (not thread-safe), bounded.
class SessionCache {
 public:
  static constexpr size_t kMaxEntries = 4096;
  SessionCache() = default;
  ~SessionCache();
  SessionCache(const SessionCache&) = delete;
  SessionCache& operator=(const SessionCache&) = delete;
  // A session for `key` made under context `generation`, or nullptr. Not owned by the caller.
  SSL_SESSION* find(const std::string& key, uint64_t generation) const;
  // Takes ownership of one reference of `session`.
  void store(const std::string& key, uint64_t generation, SSL_SESSION* session);
  size_t size() const { return entries_.size(); }

 private:
  void clear();
  std::unordered_map<std::string, std::pair<uint64_t, SSL_SESSION*>> entries_;
};

struct StreamOptions {
  // The exact SPIFFE ID the peer must present; empty: any ID of the context's trust domain.
  std::string expected_peer;
  // Client only: where resumable sessions live, and under which key (the upstream address).
  SessionCache* session_cache = nullptr;
  std::string session_key;
  // Client toward a server outside the mesh (a context whose mesh() is false): the SNI to send,
  // and the names one of which must be a SAN of the server's certificate (none: any), unless
  // the context does not verify (insecureSkipVerify).
  std::string sni = {};
  std::vector<std::string> subject_alt_names = {};
  // Non-empty: the stream cannot be used (the DestinationRule's files failed to load); start()
  // fails with kConfig and this message, so the connection is closed, never sent in plaintext.
  std::string setup_error = {};
  // Client: the ALPN protocols offered, in order (none: no ALPN extension). Sidecars say what
  // they carry this way ("istio-http/1.1", "istio"), as Istio's do (docs/TLS.md).
  std::vector<std::string> alpn = {};
  // Server: decides from the ClientHello's ALPN offer (in the client's order, empty: none)
  // whether this stream terminates the client's TLS. Unset: it always does. False: the stream
  // passes (passedThrough()) and gives back every byte it was handed (takeReceived()), so the
  // caller can relay the client's own TLS to the app untouched (PERMISSIVE, docs/TLS.md).
  std::function<bool(const std::vector<std::string>& offered)> terminate_if = {};
};

// The most a server stream with `terminate_if` keeps of a client's bytes while it waits for the
// whole ClientHello (Envoy's TLS inspector bounds its look the same way); more fails the stream.
inline constexpr size_t kMaxClientHelloBytes = 65536;

// Whether one of `wanted` names a SAN of `cert` (DNS, URI, IP or email, exactly; a DNS SAN
// "*.example.com" covers one label); the SANs seen, for the error, into `seen`.
bool matchSubjectAltNames(X509* cert, const std::vector<std::string>& wanted, std::string& seen);

class TlsStream {
 public:
  static Result<std::unique_ptr<TlsStream>> create(std::shared_ptr<const TlsContext> context,
                                                   Role role, StreamOptions options = {});
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  // Client: queues the ClientHello. Server: nothing (it waits for the hello).
  Result<void> start();
  // Bytes received from the network. Plaintext that came out of them is appended to `plain`.
  // An error ends the stream: failure() says why, and pending ciphertext (an alert) may still
  // be sent before closing.
  Result<void> receive(std::span<const char> bytes, std::string& plain);
  // Plaintext to send. Held until the handshake completes, then encrypted.
  Result<void> send(std::span<const char> plain);
  // Queues close_notify (after anything still held).
  void close();
  // Moves the ciphertext waiting to go to the network into `out` (appended).
  void takeCiphertext(std::string& out);
  bool hasCiphertext() const;

  // Server with `terminate_if`: the ClientHello said this TLS is not ours; nothing was sent.
  bool passedThrough() const { return passed_through_; }
  // After passedThrough(): every byte receive() was handed, in order (moved out).
  std::string takeReceived() { return std::move(received_); }
  bool established() const { return established_; }
  bool resumed() const { return resumed_; }
  // The peer sent close_notify: no more plaintext will come.
  bool peerClosed() const { return peer_closed_; }
  Failure failure() const { return failure_; }
  const std::string& error() const { return error_; }
  // The peer's SPIFFE ID once established (always set then: a stream without one fails).
  const std::string& peerIdentity() const { return peer_identity_; }
  // Server: the ALPN protocols the client offered, in its order (empty: none). No protocol is
  // selected: the offer only tells the server what the client carries.
  const std::vector<std::string>& offeredAlpn() const { return offered_alpn_; }
  const TlsContext& context() const { return *context_; }
  // True where the record layer could be handed to kernel TLS; always false here (no kTLS).
  bool ktlsCandidate() const { return false; }

 private:
  TlsStream() = default;
  Result<void> advance(std::string& plain);
  Result<void> fail(Failure failure, std::string message);
  Result<void> classify(int ret);
  Result<void> checkPeer();
  Result<void> flushHeld();
  static int exIndex();

 public:
  // SSL_CTX's new-session callback (installed once per context): hands the session to the
  // stream's cache.
  static int onNewSession(SSL* ssl, SSL_SESSION* session);
  // SSL_CTX's ALPN callback (server side): records the client's offer, selects nothing.
  static int onAlpn(SSL* ssl, const unsigned char** out, unsigned char* out_length,
                    const unsigned char* in, unsigned int in_length, void* arg);
  // SSL_CTX's ClientHello callback (server side): `terminate_if` decides on the ALPN offer.
  static int onClientHello(SSL* ssl, int* alert, void* arg);

 private:
  std::shared_ptr<const TlsContext> context_;  // keeps this connection's SSL_CTX alive
  SSL* ssl_ = nullptr;
  BIO* network_in_ = nullptr;   // owned by ssl_
  BIO* network_out_ = nullptr;  // owned by ssl_
  Role role_ = Role::kClient;
  StreamOptions options_;
  std::string held_;  // plaintext sent before the handshake completed
  bool close_requested_ = false;
  bool established_ = false;
  bool resumed_ = false;
  bool peer_closed_ = false;
  Failure failure_ = Failure::kNone;
  std::string error_;
  std::string peer_identity_;
  std::vector<std::string> offered_alpn_;
  // `terminate_if`: the client's bytes are kept until the ClientHello is decided on.
  bool hello_decided_ = false;
  bool passed_through_ = false;
  std::string received_;
};

}  // namespace remora::tls
