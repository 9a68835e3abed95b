#pragma once

// One workload identity as OpenSSL sees it: an SSL_CTX holding the certificate chain, the key
// and the trust bundle, TLS 1.3 only, mutual verification. Every connection of every worker
// shares the current context of its identity; rotation builds a new one and swaps the pointer,
// so new handshakes use the new certificate while open connections keep the SSL (and through
// it the SSL_CTX) they started with.

#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/result.h"

namespace remora::tls {

// Process-wide TLS counters (any thread; relaxed atomics). Rendered as remora_tls_* metrics.
struct TlsCounters {
  std::atomic<uint64_t> handshakes_client{0};
  std::atomic<uint64_t> handshakes_server{0};
  std::atomic<uint64_t> resumed{0};               // client handshakes that resumed a session
  std::atomic<uint64_t> failed_handshake{0};      // any other handshake or protocol failure
  std::atomic<uint64_t> failed_peer_identity{0};  // peer SPIFFE ID missing or not the one expected
  std::atomic<uint64_t> failed_cert_expired{0};   // the peer's certificate (or ours, seen by it)
  std::atomic<uint64_t> failed_unknown_ca{0};     // the peer's chain does not lead to our roots
  std::atomic<uint64_t> load_errors{0};           // credential files unreadable or inconsistent
  std::atomic<uint64_t> own_cert_expired{0};      // our own certificate is expired at load
  std::atomic<uint64_t> rotations{0};             // new credentials swapped in
  std::atomic<uint64_t> plaintext_refused{0};     // STRICT inbound got a non-TLS client
  std::atomic<uint64_t> permissive_plaintext{0};  // PERMISSIVE inbound served plaintext
  std::atomic<uint64_t> permissive_tls{0};        // PERMISSIVE inbound served TLS
  // PERMISSIVE TLS offering no Istio ALPN: relayed to the app as it is / refused (HTTP ports).
  std::atomic<uint64_t> permissive_passthrough{0};
  std::atomic<uint64_t> permissive_refused{0};
  std::atomic<uint64_t> originated{0};               // outbound connections we wrapped in TLS
  std::atomic<uint64_t> failed_subject_alt_name{0};  // SIMPLE/MUTUAL: no SAN the rule names
  std::atomic<uint64_t> failed_config{0};            // SIMPLE/MUTUAL: the rule's files unusable
  static void inc(std::atomic<uint64_t>& c) { c.fetch_add(1, std::memory_order_relaxed); }
};
TlsCounters& counters();

// The PEM texts of one identity, in the layout Kubernetes certificate tooling mounts.
struct Credentials {
  std::string cert_chain;  // cert-chain.pem: leaf first
  std::string key;         // key.pem
  std::string roots;       // root-cert.pem: the trust bundle
};

inline constexpr const char* kCertChainFile = "cert-chain.pem";
inline constexpr const char* kKeyFile = "key.pem";
inline constexpr const char* kRootCertFile = "root-cert.pem";

Result<Credentials> readCredentials(const std::filesystem::path& dir);

// The first well-formed spiffe:// URI SAN of `cert`, or "".
std::string spiffeUriOf(X509* cert);

// The files of a DestinationRule's SIMPLE or MUTUAL origination, read: TLS toward a server that
// is not a mesh sidecar.
struct ClientCredentials {
  std::string cert_chain;  // MUTUAL: presented to the server (leaf first); "" for SIMPLE
  std::string key;
  std::string roots;   // the server's chain must lead here; "": the system's trust store
  bool verify = true;  // false: insecureSkipVerify
};

class TlsContext {
 public:
  // Refuses a key that does not match the leaf, a leaf without a spiffe:// URI SAN, roots that
  // do not parse, and an expired leaf (counted in own_cert_expired).
  static Result<std::shared_ptr<const TlsContext>> create(const Credentials& credentials,
                                                          std::string trust_domain);
  // A client context for DestinationRule SIMPLE / MUTUAL: TLS 1.2 or 1.3 (the server is not a
  // sidecar), no SPIFFE identity on either side (mesh() is false).
  static Result<std::shared_ptr<const TlsContext>> createClient(const ClientCredentials& c);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  SSL_CTX* native() const { return ctx_; }
  // Our own SPIFFE ID (the leaf's URI SAN) and the trust domain peers must belong to.
  const std::string& identity() const { return identity_; }
  const std::string& trustDomain() const { return trust_domain_; }
  std::chrono::system_clock::time_point notAfter() const { return not_after_; }
  // Distinguishes contexts for the client session caches: a rotation starts afresh.
  uint64_t generation() const { return generation_; }
  // True for the workload identity (SPIFFE peers); false for a SIMPLE / MUTUAL client context.
  bool mesh() const { return mesh_; }

 private:
  TlsContext() = default;
  Result<void> useChain(const std::string& pem, const std::string& key_pem, X509** leaf_out);
  bool mesh_ = true;
  SSL_CTX* ctx_ = nullptr;
  std::string identity_;
  std::string trust_domain_;
  std::chrono::system_clock::time_point not_after_;
  uint64_t generation_ = 0;
};

// The client context of a DestinationRule SIMPLE / MUTUAL origination with these files (paths;
// cert_file "" for SIMPLE, ca_file "" for the system's trust store), shared by every thread:
// built at first use, rebuilt when one of the files changes (looked at once a second at most).
// An unreadable or inconsistent set is an error naming the file; a later call tries again.
Result<std::shared_ptr<const TlsContext>> clientContextFor(const std::string& cert_file,
                                                           const std::string& key_file,
                                                           const std::string& ca_file, bool verify);

// The current context of the workload identity read from a directory, reloaded when one of
// its files changes. current() may be called from any thread.
//
// watch() follows the directory with inotify, not the files: a kubelet projected volume (or
// any atomic writer) swaps a `..data` symlink or renames files into place, which a watch on
// the old inodes would never see. Any event in the directory starts a short settling wait
// (the three files are written one after another), then a reload when the files' inode, size
// or mtime changed. A broken or half-written set keeps the previous context. Without inotify
// (init or add_watch failing) it falls back to polling every `interval`.
class IdentityStore {
 public:
  IdentityStore(std::filesystem::path dir, std::string trust_domain);
  ~IdentityStore();
  IdentityStore(const IdentityStore&) = delete;
  IdentityStore& operator=(const IdentityStore&) = delete;

  // Loads the files now; an error leaves the previous context (if any) in place.
  Result<void> reload();
  // Reloads when a file's mtime, size or inode changed since the last attempt; true when a new
  // context was swapped in.
  bool reloadIfChanged();
  // Watches the directory on a thread of its own until destruction (see above); `interval` is
  // the polling period of the fallback. True when inotify is in use.
  bool watch(std::chrono::milliseconds interval);
  // Times a reload was tried because of a directory event (for tests and the log).
  uint64_t watchEvents() const { return watch_events_.load(); }
  std::shared_ptr<const TlsContext> current() const;
  const std::filesystem::path& dir() const { return dir_; }
  const std::string& trustDomain() const { return trust_domain_; }
  std::string lastError() const;

 private:
  std::string fingerprint() const;

  std::filesystem::path dir_;
  std::string trust_domain_;
  mutable std::mutex mutex_;
  std::shared_ptr<const TlsContext> current_;
  std::string last_fingerprint_;
  std::string last_error_;
  void watchInotify(int inotify_fd);
  void watchPolling(std::chrono::milliseconds interval);

  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> watch_events_{0};
  int stop_fd_ = -1;  // eventfd: wakes the inotify watcher for destruction
  std::thread watcher_;
};

}  // namespace remora::tls
