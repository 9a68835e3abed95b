#include "tls/tls_stream.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>

#include "tls/spiffe.h"

namespace remora::tls {
namespace {

std::string queuedErrors() {
  std::string text;
  while (const unsigned long code = ERR_get_error()) {  // NOLINT(google-runtime-int)
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    if (!text.empty()) text += "; ";
    text += buf;
  }
  return text.empty() ? "connection closed during the handshake" : text;
}

// "*.example.com" covers "a.example.com", not "example.com" nor "a.b.example.com".
bool dnsMatches(const std::string& san, const std::string& name) {
  if (san.size() > 2 && san[0] == '*' && san[1] == '.') {
    const size_t dot = name.find('.');
    return dot != std::string::npos && dot > 0 && name.compare(dot, std::string::npos, san, 1) == 0;
  }
  return san == name;
}

}  // namespace

bool matchSubjectAltNames(X509* cert, const std::vector<std::string>& wanted, std::string& seen) {
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return false;
  bool found = false;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    std::string text;
    bool dns = false;
    if (name->type == GEN_DNS || name->type == GEN_URI || name->type == GEN_EMAIL) {
      const ASN1_IA5STRING* v = name->d.ia5;
      text.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                  static_cast<size_t>(ASN1_STRING_length(v)));
      dns = name->type == GEN_DNS;
    } else if (name->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* v = name->d.iPAddress;
      char buf[INET6_ADDRSTRLEN] = {};
      const int length = ASN1_STRING_length(v);
      if (length != 4 && length != 16) continue;
      const int family = length == 4 ? AF_INET : AF_INET6;
      if (inet_ntop(family, ASN1_STRING_get0_data(v), buf, sizeof(buf)) == nullptr) continue;
      text = buf;
    } else {
      continue;
    }
    if (!seen.empty()) seen += ", ";
    seen += text;
    for (const auto& w : wanted) found = found || (dns ? dnsMatches(text, w) : text == w);
  }
  GENERAL_NAMES_free(names);
  return found;
}

const char* toString(Failure failure) {
  switch (failure) {
    case Failure::kNone:
      return "none";
    case Failure::kHandshake:
      return "handshake";
    case Failure::kPeerIdentity:
      return "peer_identity";
    case Failure::kCertExpired:
      return "cert_expired";
    case Failure::kUnknownCa:
      return "unknown_ca";
    case Failure::kSubjectAltName:
      return "subject_alt_name";
    case Failure::kConfig:
      return "config";
  }
  return "?";
}

SessionCache::~SessionCache() { clear(); }

void SessionCache::clear() {
  for (auto& [key, entry] : entries_) SSL_SESSION_free(entry.second);
  entries_.clear();
}

SSL_SESSION* SessionCache::find(const std::string& key, uint64_t generation) const {
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.first != generation) return nullptr;
  return it->second.second;
}

void SessionCache::store(const std::string& key, uint64_t generation, SSL_SESSION* session) {
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    SSL_SESSION_free(it->second.second);
    it->second = {generation, session};
    return;
  }
  if (entries_.size() >= kMaxEntries) clear();  // bounded; a full cache starts over
  entries_.emplace(key, std::pair{generation, session});
}

int TlsStream::exIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int TlsStream::onAlpn(SSL* ssl, const unsigned char** /*out*/, unsigned char* /*out_length*/,
                      const unsigned char* in, unsigned int in_length, void* /*arg*/) {
  auto* self = static_cast<TlsStream*>(SSL_get_ex_data(ssl, exIndex()));
  if (self == nullptr) return SSL_TLSEXT_ERR_NOACK;
  self->offered_alpn_.clear();
  // OpenSSL has checked the list's framing before calling.
  for (unsigned int i = 0; i < in_length;) {
    const unsigned int n = in[i++];
    if (n == 0 || i + n > in_length) break;
    self->offered_alpn_.emplace_back(reinterpret_cast<const char*>(in + i), n);
    i += n;
  }
  // Nothing selected: Istio's inbound matches the offer too, and a client that offered
  // "istio-peer-exchange" must not be told its metadata exchange was accepted.
  return SSL_TLSEXT_ERR_NOACK;
}

namespace {

// The ALPN extension's body: a 2-byte list length, then 1-byte-length names. Malformed framing
// gives what was read before it (OpenSSL refuses such a hello later anyway).
std::vector<std::string> parseAlpnExtension(const unsigned char* data, size_t length) {
  std::vector<std::string> names;
  if (length < 2) return names;
  const size_t list = (static_cast<size_t>(data[0]) << 8) | data[1];
  const size_t end = std::min(length, list + 2);
  for (size_t i = 2; i < end;) {
    const size_t n = data[i++];
    if (n == 0 || i + n > end) break;
    names.emplace_back(reinterpret_cast<const char*>(data + i), n);
    i += n;
  }
  return names;
}

}  // namespace

int TlsStream::onClientHello(SSL* ssl, int* /*alert*/, void* /*arg*/) {
  auto* self = static_cast<TlsStream*>(SSL_get_ex_data(ssl, exIndex()));
  if (self == nullptr || !self->options_.terminate_if || self->hello_decided_) {
    return SSL_CLIENT_HELLO_SUCCESS;
  }
  self->hello_decided_ = true;
  const unsigned char* data = nullptr;
  size_t length = 0;
  std::vector<std::string> offered;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &data,
                                &length) == 1) {
    offered = parseAlpnExtension(data, length);
  }
  if (self->options_.terminate_if(offered)) {
    self->received_.clear();
    self->received_.shrink_to_fit();
    return SSL_CLIENT_HELLO_SUCCESS;
  }
  // Not ours: the handshake stops here, before OpenSSL has written anything.
  self->passed_through_ = true;
  return SSL_CLIENT_HELLO_RETRY;
}

int TlsStream::onNewSession(SSL* ssl, SSL_SESSION* session) {
  auto* self = static_cast<TlsStream*>(SSL_get_ex_data(ssl, exIndex()));
  if (self == nullptr || self->options_.session_cache == nullptr) return 0;
  self->options_.session_cache->store(self->options_.session_key, self->context_->generation(),
                                      session);
  return 1;  // we keep the reference
}

Result<std::unique_ptr<TlsStream>> TlsStream::create(std::shared_ptr<const TlsContext> context,
                                                     Role role, StreamOptions options) {
  std::unique_ptr<TlsStream> s(new TlsStream());
  s->context_ = std::move(context);
  s->role_ = role;
  s->options_ = std::move(options);
  SSL_CTX* ctx = s->context_->native();
  s->ssl_ = SSL_new(ctx);
  if (s->ssl_ == nullptr) return makeError("SSL_new: " + queuedErrors());
  s->network_in_ = BIO_new(BIO_s_mem());
  s->network_out_ = BIO_new(BIO_s_mem());
  if (s->network_in_ == nullptr || s->network_out_ == nullptr) {
    BIO_free(s->network_in_);
    BIO_free(s->network_out_);
    s->network_in_ = s->network_out_ = nullptr;
    return makeError("BIO_new: out of memory");
  }
  // An empty input BIO means "retry later", not end of file.
  BIO_set_mem_eof_return(s->network_in_, -1);
  SSL_set_bio(s->ssl_, s->network_in_, s->network_out_);
  SSL_set_ex_data(s->ssl_, exIndex(), s.get());
  if (role == Role::kClient) {
    SSL_set_connect_state(s->ssl_);
    if (!s->options_.sni.empty() &&
        SSL_set_tlsext_host_name(s->ssl_, s->options_.sni.c_str()) != 1) {
      return makeError(fmt::format("TLS: SNI '{}': {}", s->options_.sni, queuedErrors()));
    }
    if (!s->options_.alpn.empty()) {
      std::string wire;  // length-prefixed protocol names
      for (const std::string& name : s->options_.alpn) {
        if (name.empty() || name.size() > 255) {
          return makeError(fmt::format("TLS: ALPN protocol '{}': 1 to 255 bytes", name));
        }
        wire += static_cast<char>(name.size());
        wire += name;
      }
      // The one OpenSSL call that returns 0 on success.
      if (SSL_set_alpn_protos(s->ssl_, reinterpret_cast<const unsigned char*>(wire.data()),
                              static_cast<unsigned int>(wire.size())) != 0) {
        return makeError("TLS: ALPN: " + queuedErrors());
      }
    }
    if (s->options_.session_cache != nullptr) {
      if (SSL_SESSION* cached =
              s->options_.session_cache->find(s->options_.session_key, s->context_->generation())) {
        SSL_set_session(s->ssl_, cached);
      }
    }
  } else {
    SSL_set_accept_state(s->ssl_);
  }
  return s;
}

TlsStream::~TlsStream() { SSL_free(ssl_); }

Result<void> TlsStream::fail(Failure failure, std::string message) {
  if (failure_ == Failure::kNone) {
    failure_ = failure;
    error_ = std::move(message);
    TlsCounters& c = counters();
    switch (failure) {
      case Failure::kPeerIdentity:
        TlsCounters::inc(c.failed_peer_identity);
        break;
      case Failure::kCertExpired:
        TlsCounters::inc(c.failed_cert_expired);
        break;
      case Failure::kUnknownCa:
        TlsCounters::inc(c.failed_unknown_ca);
        break;
      case Failure::kSubjectAltName:
        TlsCounters::inc(c.failed_subject_alt_name);
        break;
      case Failure::kConfig:
        TlsCounters::inc(c.failed_config);
        break;
      default:
        TlsCounters::inc(c.failed_handshake);
        break;
    }
  }
  return makeError(error_);
}

Result<void> TlsStream::classify(int ret) {
  const int err = SSL_get_error(ssl_, ret);
  if (err == SSL_ERROR_WANT_CLIENT_HELLO_CB && passed_through_) return {};
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return {};
  if (err == SSL_ERROR_ZERO_RETURN) {
    peer_closed_ = true;
    return {};
  }
  // Our own verification result first: it names the peer's certificate problem exactly.
  const long verify = SSL_get_verify_result(ssl_);  // NOLINT(google-runtime-int)
  const std::string what = queuedErrors();
  const char* side = role_ == Role::kClient ? "upstream" : "downstream";
  if (verify == X509_V_ERR_CERT_HAS_EXPIRED) {
    return fail(Failure::kCertExpired, fmt::format("TLS: the {} peer's certificate expired", side));
  }
  if (verify != X509_V_OK) {
    return fail(Failure::kUnknownCa,
                fmt::format("TLS: the {} peer's certificate does not verify: {}", side,
                            X509_verify_cert_error_string(verify)));
  }
  // Then what the peer told us in its alert.
  if (what.find("certificate expired") != std::string::npos) {
    return fail(
        Failure::kCertExpired,
        fmt::format("TLS: the {} peer refused our certificate as expired ({})", side, what));
  }
  if (what.find("unknown ca") != std::string::npos) {
    return fail(Failure::kUnknownCa,
                fmt::format("TLS: the {} peer does not trust our CA ({})", side, what));
  }
  return fail(Failure::kHandshake, fmt::format("TLS with the {} peer failed: {}", side, what));
}

Result<void> TlsStream::checkPeer() {
  X509* cert = SSL_get0_peer_certificate(ssl_);
  if (!context_->mesh()) {
    // A server outside the mesh: OpenSSL verified its chain (unless insecureSkipVerify); the
    // names are the DestinationRule's subjectAltNames.
    if (options_.subject_alt_names.empty() ||
        SSL_CTX_get_verify_mode(context_->native()) == SSL_VERIFY_NONE) {
      return {};
    }
    std::string seen;
    if (cert == nullptr || !matchSubjectAltNames(cert, options_.subject_alt_names, seen)) {
      std::string wanted;
      for (const auto& n : options_.subject_alt_names) wanted += (wanted.empty() ? "" : ", ") + n;
      return fail(Failure::kSubjectAltName,
                  fmt::format("TLS: the upstream certificate's SANs [{}] match none of the "
                              "DestinationRule's subjectAltNames [{}]",
                              seen, wanted));
    }
    return {};
  }
  const std::string uri = cert != nullptr ? spiffeUriOf(cert) : std::string();
  auto id = parseSpiffeId(uri);
  if (!id) {
    return fail(Failure::kPeerIdentity, "TLS: the peer's certificate has no spiffe:// identity");
  }
  if (id->trust_domain != context_->trustDomain()) {
    return fail(Failure::kPeerIdentity,
                fmt::format("TLS: peer identity {} is outside trust domain {}", uri,
                            context_->trustDomain()));
  }
  if (!options_.expected_peer.empty() && uri != options_.expected_peer) {
    return fail(Failure::kPeerIdentity, fmt::format("TLS: peer identity {} is not the expected {}",
                                                    uri, options_.expected_peer));
  }
  peer_identity_ = uri;
  return {};
}

Result<void> TlsStream::flushHeld() {
  if (!established_) return {};
  if (!held_.empty()) {
    size_t written = 0;
    const int ret = SSL_write_ex(ssl_, held_.data(), held_.size(), &written);
    if (ret != 1) return classify(ret);
    held_.erase(0, written);
  }
  if (close_requested_ && held_.empty()) SSL_shutdown(ssl_);
  return {};
}

Result<void> TlsStream::start() {
  if (!options_.setup_error.empty()) return fail(Failure::kConfig, options_.setup_error);
  if (role_ != Role::kClient) return {};
  const int ret = SSL_do_handshake(ssl_);
  if (ret != 1) return classify(ret);
  return {};
}

Result<void> TlsStream::advance(std::string& plain) {
  if (failure_ != Failure::kNone) return makeError(error_);
  if (!established_) {
    const int ret = SSL_do_handshake(ssl_);
    if (ret != 1) return classify(ret);
    if (auto checked = checkPeer(); !checked) return checked;
    established_ = true;
    resumed_ = SSL_session_reused(ssl_) == 1;
    TlsCounters& c = counters();
    TlsCounters::inc(role_ == Role::kClient ? c.handshakes_client : c.handshakes_server);
    if (resumed_ && role_ == Role::kClient) TlsCounters::inc(c.resumed);
    if (auto flushed = flushHeld(); !flushed) return flushed;
  }
  char buf[16384];
  while (!peer_closed_) {
    size_t got = 0;
    const int ret = SSL_read_ex(ssl_, buf, sizeof(buf), &got);
    if (ret != 1) return classify(ret);
    plain.append(buf, got);
  }
  return {};
}

Result<void> TlsStream::receive(std::span<const char> bytes, std::string& plain) {
  if (failure_ != Failure::kNone) return makeError(error_);
  if (passed_through_) {
    received_.append(bytes.data(), bytes.size());  // the caller relays them as they are
    return {};
  }
  if (options_.terminate_if && !hello_decided_) {
    if (received_.size() + bytes.size() > kMaxClientHelloBytes) {
      return fail(Failure::kHandshake,
                  fmt::format("TLS: no complete ClientHello in the client's first {} bytes",
                              kMaxClientHelloBytes));
    }
    received_.append(bytes.data(), bytes.size());
  }
  if (!bytes.empty() && BIO_write(network_in_, bytes.data(), static_cast<int>(bytes.size())) !=
                            static_cast<int>(bytes.size())) {
    return fail(Failure::kHandshake, "TLS: out of memory buffering received bytes");
  }
  return advance(plain);
}

Result<void> TlsStream::send(std::span<const char> plain) {
  if (failure_ != Failure::kNone) return makeError(error_);
  held_.append(plain.data(), plain.size());
  return flushHeld();
}

void TlsStream::close() {
  close_requested_ = true;
  if (failure_ == Failure::kNone) (void)flushHeld();
}

void TlsStream::takeCiphertext(std::string& out) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(network_out_, &data);  // NOLINT(google-runtime-int)
  if (n <= 0) return;
  out.append(data, static_cast<size_t>(n));
  (void)BIO_reset(network_out_);
}

bool TlsStream::hasCiphertext() const { return BIO_ctrl_pending(network_out_) > 0; }

}  // namespace remora::tls
