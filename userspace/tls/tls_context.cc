#include "tls/tls_context.h"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "tls/spiffe.h"
#include "tls/tls_stream.h"

namespace remora::tls {
namespace {

std::atomic<uint64_t> next_generation{1};

// The first OpenSSL error queued, as text; clears the queue.
std::string sslError() {
  const unsigned long code = ERR_get_error();  // NOLINT(google-runtime-int): OpenSSL's type
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

Result<std::string> readFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return errnoError(fmt::format("read {}", path.string()));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

BioPtr memoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

std::chrono::system_clock::time_point notAfterOf(X509* cert) {
  const ASN1_TIME* t = X509_get0_notAfter(cert);
  tm parsed{};
  if (ASN1_TIME_to_tm(t, &parsed) != 1) return {};
  return std::chrono::system_clock::from_time_t(timegm(&parsed));
}

std::string filesFingerprint(std::initializer_list<const std::string*> paths) {
  std::string out;
  for (const std::string* path : paths) {
    struct stat st {};
    if (path->empty() || ::stat(path->c_str(), &st) != 0) {
      out += "-;";
      continue;
    }
    out +=
        fmt::format("{}:{}:{}.{};", st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  }
  return out;
}

// Adds every certificate of `pem` to the context's trust store; how many were added.
int addRoots(SSL_CTX* ctx, const std::string& pem) {
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  BioPtr roots = memoryBio(pem);
  int added = 0;
  while (X509* root = PEM_read_bio_X509(roots.get(), nullptr, nullptr, nullptr)) {
    if (X509_STORE_add_cert(store, root) == 1) ++added;
    X509_free(root);
  }
  ERR_clear_error();
  return added;
}

}  // namespace

std::string spiffeUriOf(X509* cert) {
  std::string found;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return found;
  for (int i = 0; i < sk_GENERAL_NAME_num(names) && found.empty(); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type != GEN_URI) continue;
    const ASN1_IA5STRING* uri = name->d.uniformResourceIdentifier;
    std::string text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                     static_cast<size_t>(ASN1_STRING_length(uri)));
    if (parseSpiffeId(text)) found = text;
  }
  GENERAL_NAMES_free(names);
  return found;
}

TlsCounters& counters() {
  static TlsCounters instance;
  return instance;
}

Result<Credentials> readCredentials(const std::filesystem::path& dir) {
  Credentials c;
  for (auto [name, into] : {std::pair{kCertChainFile, &c.cert_chain}, std::pair{kKeyFile, &c.key},
                            std::pair{kRootCertFile, &c.roots}}) {
    auto text = readFile(dir / name);
    if (!text) return text.error();
    *into = std::move(*text);
  }
  return c;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

Result<std::shared_ptr<const TlsContext>> TlsContext::create(const Credentials& credentials,
                                                             std::string trust_domain) {
  std::shared_ptr<TlsContext> self(new TlsContext());
  self->trust_domain_ = std::move(trust_domain);
  self->generation_ = next_generation.fetch_add(1);
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (ctx == nullptr) return makeError("SSL_CTX_new: " + sslError());
  self->ctx_ = ctx;
  // Only TLS 1.3 between sidecars.
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

  X509* leaf = nullptr;
  auto used = self->useChain(credentials.cert_chain, credentials.key, &leaf);
  if (leaf != nullptr) {
    self->identity_ = spiffeUriOf(leaf);
    self->not_after_ = notAfterOf(leaf);
    X509_free(leaf);
  }
  if (!used) return used.error();
  if (self->identity_.empty()) {
    return makeError("cert-chain.pem: the leaf certificate has no spiffe:// URI SAN");
  }
  if (auto id = parseSpiffeId(self->identity_); id && id->trust_domain != self->trust_domain_) {
    return makeError(fmt::format("cert-chain.pem: identity {} is outside trust domain {}",
                                 self->identity_, self->trust_domain_));
  }
  if (self->not_after_ <= std::chrono::system_clock::now()) {
    TlsCounters::inc(counters().own_cert_expired);
    return makeError(
        fmt::format("cert-chain.pem: certificate of {} expired at {:%FT%TZ}", self->identity_,
                    fmt::gmtime(std::chrono::system_clock::to_time_t(self->not_after_))));
  }

  if (addRoots(ctx, credentials.roots) == 0) return makeError("root-cert.pem: no certificate");

  // Mutual: both sides present a certificate that chains to the roots.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  // Resumption with client certificates needs a session id context on the server side.
  static constexpr unsigned char kSessionContext[] = "remora-mtls";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof(kSessionContext) - 1);
  // Client side: sessions go to the caller's per-worker cache (TlsStream's callback).
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, &TlsStream::onNewSession);
  // Server side: the client's ALPN offer says what it carries (HTTP or TCP, Istio's names).
  SSL_CTX_set_alpn_select_cb(ctx, &TlsStream::onAlpn, nullptr);
  // Server side, PERMISSIVE: the ClientHello decides whether the TLS is the mesh's at all.
  SSL_CTX_set_client_hello_cb(ctx, &TlsStream::onClientHello, nullptr);
  return std::shared_ptr<const TlsContext>(std::move(self));
}

// The chain (leaf first, the rest as intermediates) and its key into ctx_; the leaf (a reference
// the caller frees) into `leaf_out`.
Result<void> TlsContext::useChain(const std::string& pem, const std::string& key_pem,
                                  X509** leaf_out) {
  BioPtr chain = memoryBio(pem);
  X509* leaf = PEM_read_bio_X509(chain.get(), nullptr, nullptr, nullptr);
  if (leaf == nullptr) return makeError("cert-chain.pem: no certificate: " + sslError());
  if (SSL_CTX_use_certificate(ctx_, leaf) != 1) {
    X509_free(leaf);
    return makeError("cert-chain.pem: " + sslError());
  }
  *leaf_out = leaf;
  while (X509* extra = PEM_read_bio_X509(chain.get(), nullptr, nullptr, nullptr)) {
    if (SSL_CTX_add_extra_chain_cert(ctx_, extra) != 1) {
      X509_free(extra);
      return makeError("cert-chain.pem: " + sslError());
    }
  }
  ERR_clear_error();  // the loop ends on "no start line"
  BioPtr key_bio = memoryBio(key_pem);
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr);
  if (key == nullptr) return makeError("key.pem: no private key: " + sslError());
  const int used = SSL_CTX_use_PrivateKey(ctx_, key);
  EVP_PKEY_free(key);
  if (used != 1) {
    return makeError("key.pem does not match the leaf of cert-chain.pem or is unusable: " +
                     sslError());
  }
  if (SSL_CTX_check_private_key(ctx_) != 1) {
    return makeError("key.pem does not match the leaf of cert-chain.pem");
  }
  return {};
}

Result<std::shared_ptr<const TlsContext>> TlsContext::createClient(const ClientCredentials& c) {
  std::shared_ptr<TlsContext> self(new TlsContext());
  self->mesh_ = false;
  self->generation_ = next_generation.fetch_add(1);
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return makeError("SSL_CTX_new: " + sslError());
  self->ctx_ = ctx;
  // A server outside the mesh may speak TLS 1.2; only sidecars are held to 1.3.
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (!c.cert_chain.empty()) {
    X509* leaf = nullptr;
    auto used = self->useChain(c.cert_chain, c.key, &leaf);
    if (leaf != nullptr) {
      self->not_after_ = notAfterOf(leaf);
      X509_free(leaf);
    }
    if (!used) return used.error();
  }
  if (c.verify) {
    if (c.roots.empty()) {
      if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        return makeError("the system trust store: " + sslError());
      }
    } else {
      if (addRoots(ctx, c.roots) == 0) return makeError("caCertificates: no certificate");
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, &TlsStream::onNewSession);
  return std::shared_ptr<const TlsContext>(std::move(self));
}

namespace {

struct ClientContextEntry {
  std::shared_ptr<const TlsContext> context;
  std::string error;
  std::string fingerprint;
  std::chrono::steady_clock::time_point checked;
};

}  // namespace

Result<std::shared_ptr<const TlsContext>> clientContextFor(const std::string& cert_file,
                                                           const std::string& key_file,
                                                           const std::string& ca_file,
                                                           bool verify) {
  static std::mutex mutex;
  static std::map<std::string, ClientContextEntry> entries;
  const std::string key =
      fmt::format("{}\n{}\n{}\n{}", cert_file, key_file, ca_file, verify ? "verify" : "skip");
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex);
  ClientContextEntry& e = entries[key];
  if (e.checked.time_since_epoch().count() != 0 && now - e.checked < std::chrono::seconds(1)) {
    if (e.context) return e.context;
    return makeError(e.error);
  }
  e.checked = now;
  const std::string print = filesFingerprint({&cert_file, &key_file, &ca_file});
  if (print == e.fingerprint && e.context) return e.context;
  e.fingerprint = print;
  auto built = [&]() -> Result<std::shared_ptr<const TlsContext>> {
    ClientCredentials c;
    c.verify = verify;
    for (auto [path, into] : {std::pair{&cert_file, &c.cert_chain}, std::pair{&key_file, &c.key},
                              std::pair{&ca_file, &c.roots}}) {
      if (path->empty() || (into == &c.roots && !verify)) continue;
      auto text = readFile(*path);
      if (!text) return text.error();
      *into = std::move(*text);
    }
    auto ctx = TlsContext::createClient(c);
    if (!ctx) {
      return makeError(fmt::format("{} / {} / {}: {}", cert_file.empty() ? "-" : cert_file,
                                   key_file.empty() ? "-" : key_file,
                                   ca_file.empty() ? "system roots" : ca_file,
                                   ctx.error().message));
    }
    return ctx;
  }();
  if (!built) {
    // A set that worked before stays in use while the files are being replaced.
    TlsCounters::inc(counters().load_errors);
    e.error = built.error().message;
    spdlog::error("DestinationRule TLS files: {}{}", e.error,
                  e.context ? " (the previous context stays in use)" : "");
    if (e.context) return e.context;
    return makeError(e.error);
  }
  e.context = std::move(*built);
  e.error.clear();
  return e.context;
}

IdentityStore::IdentityStore(std::filesystem::path dir, std::string trust_domain)
    : dir_(std::move(dir)), trust_domain_(std::move(trust_domain)) {}

IdentityStore::~IdentityStore() {
  stop_ = true;
  if (stop_fd_ >= 0) {
    const uint64_t one = 1;
    (void)::write(stop_fd_, &one, sizeof(one));
  }
  if (watcher_.joinable()) watcher_.join();
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

std::string IdentityStore::fingerprint() const {
  const std::string chain = (dir_ / kCertChainFile).string();
  const std::string key = (dir_ / kKeyFile).string();
  const std::string roots = (dir_ / kRootCertFile).string();
  return filesFingerprint({&chain, &key, &roots});
}

Result<void> IdentityStore::reload() {
  const std::string print = fingerprint();
  auto loaded = [&]() -> Result<std::shared_ptr<const TlsContext>> {
    auto creds = readCredentials(dir_);
    if (!creds) return creds.error();
    return TlsContext::create(*creds, trust_domain_);
  }();
  std::lock_guard lock(mutex_);
  last_fingerprint_ = print;
  if (!loaded) {
    TlsCounters::inc(counters().load_errors);
    last_error_ = fmt::format("TLS credentials in {}: {}", dir_.string(), loaded.error().message);
    spdlog::error("{}{}", last_error_, current_ ? " (the previous certificate stays in use)" : "");
    return makeError(last_error_);
  }
  if (current_) TlsCounters::inc(counters().rotations);
  current_ = std::move(*loaded);
  last_error_.clear();
  spdlog::info("TLS identity {} loaded from {} (valid until {:%FT%TZ})", current_->identity(),
               dir_.string(),
               fmt::gmtime(std::chrono::system_clock::to_time_t(current_->notAfter())));
  return {};
}

bool IdentityStore::reloadIfChanged() {
  {
    std::lock_guard lock(mutex_);
    if (fingerprint() == last_fingerprint_) return false;
  }
  return reload().ok();
}

bool IdentityStore::watch(std::chrono::milliseconds interval) {
  if (watcher_.joinable()) return stop_fd_ >= 0;
  const int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  stop_fd_ = fd < 0 ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  // IN_MOVED_TO / IN_CREATE: a rename into place or the `..data` symlink swap; IN_CLOSE_WRITE /
  // IN_MODIFY: a file rewritten in place; IN_ATTRIB: a touch or a chmod; IN_DELETE: a file gone.
  constexpr uint32_t kMask =
      IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_MODIFY | IN_ATTRIB | IN_DELETE;
  if (fd < 0 || stop_fd_ < 0 || inotify_add_watch(fd, dir_.c_str(), kMask) < 0) {
    spdlog::warn("cannot watch {} with inotify ({}); polling it every {} ms", dir_.string(),
                 std::strerror(errno), interval.count());
    if (fd >= 0) ::close(fd);
    if (stop_fd_ >= 0) ::close(stop_fd_);
    stop_fd_ = -1;
    watcher_ = std::thread([this, interval] { watchPolling(interval); });
    return false;
  }
  watcher_ = std::thread([this, fd] {
    watchInotify(fd);
    ::close(fd);
  });
  return true;
}

void IdentityStore::watchInotify(int inotify_fd) {
  // After the first event, events keep coming while the writer writes the other files; the
  // reload waits until the directory has been quiet this long.
  constexpr int kSettleMs = 50;
  std::array<pollfd, 2> fds{pollfd{inotify_fd, POLLIN, 0}, pollfd{stop_fd_, POLLIN, 0}};
  alignas(inotify_event) std::array<char, 4096> buf{};
  bool pending = false;
  while (!stop_) {
    const int n = ::poll(fds.data(), fds.size(), pending ? kSettleMs : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("watching {}: poll: {}", dir_.string(), std::strerror(errno));
      return;
    }
    if (stop_ || (fds[1].revents & POLLIN) != 0) return;
    if (n == 0) {  // quiet for kSettleMs after an event
      pending = false;
      watch_events_.fetch_add(1);
      reloadIfChanged();
      continue;
    }
    if ((fds[0].revents & POLLIN) != 0) {
      // The names do not matter: the fingerprint decides whether anything we read changed.
      while (::read(inotify_fd, buf.data(), buf.size()) > 0) {
      }
      pending = true;
    }
  }
}

void IdentityStore::watchPolling(std::chrono::milliseconds interval) {
  while (!stop_) {
    // Short naps so destruction never waits a whole interval.
    for (auto slept = std::chrono::milliseconds(0); slept < interval && !stop_;
         slept += std::chrono::milliseconds(20)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!stop_) reloadIfChanged();
  }
}

std::shared_ptr<const TlsContext> IdentityStore::current() const {
  std::lock_guard lock(mutex_);
  return current_;
}

std::string IdentityStore::lastError() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

}  // namespace remora::tls
