// The worker's mTLS and AuthorizationPolicy steps (declared in worker.h). TLS runs over the same
// io_uring receives and sends as plaintext: received bytes of the TLS side go through the
// connection's TlsStream (memory BIOs), and everything bound for the TLS side is encrypted when
// it is queued, so the relay, its watermarks and its teardown stay unchanged.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <map>
#include <mutex>

#include "proxy/worker.h"
#include "tls/spiffe.h"

namespace remora::proxy {
namespace {

struct InboundKey {
  std::string principal;
  bool tls;
  bool operator<(const InboundKey& o) const {
    return std::tie(principal, tls) < std::tie(o.principal, o.tls);
  }
};
struct Registry {
  std::mutex mutex;
  std::map<InboundKey, uint64_t> inbound;
  std::atomic<uint64_t> authz_denied{0};
  std::atomic<uint64_t> authz_allowed{0};
  std::atomic<uint64_t> no_identity{0};
};
Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

const char* tlsOutcome(tls::Failure failure) {
  switch (failure) {
    case tls::Failure::kPeerIdentity:
      return "tls_peer_identity";
    case tls::Failure::kCertExpired:
      return "tls_cert_expired";
    case tls::Failure::kUnknownCa:
      return "tls_unknown_ca";
    case tls::Failure::kSubjectAltName:
      return "tls_subject_alt_name";
    case tls::Failure::kConfig:
      return "tls_config";
    default:
      return "tls_handshake_failed";
  }
}

// At most one line per second per thread: a peer failing every handshake must not flood the log.
bool tlsLogAllowed() {
  thread_local std::chrono::steady_clock::time_point last;
  const auto now = std::chrono::steady_clock::now();
  if (now - last < std::chrono::seconds(1)) return false;
  last = now;
  return true;
}

namespace {

// DestinationRule SIMPLE / MUTUAL: TLS with the rule's files toward a server outside the mesh.
// Files that cannot be used give a stream whose start() fails (logged, counted as
// reason="config"), so the connection is closed rather than sent in plaintext.
std::unique_ptr<tls::TlsStream> originateExternalTls(const security::ClientTlsSettings& s,
                                                     const SocketAddress& endpoint,
                                                     tls::SessionCache* sessions) {
  const bool mutual = s.mode == security::TlsMode::kMutual;
  tls::StreamOptions options{"", sessions, endpoint.toString()};
  options.sni = s.sni;
  options.subject_alt_names = s.subject_alt_names;
  // The session key names the settings too: a session made with one SNI is not offered under
  // another.
  options.session_key += "|" + s.sni + (mutual ? "|m" : "|s");
  auto ctx = tls::clientContextFor(mutual ? s.client_certificate : "", mutual ? s.private_key : "",
                                   s.ca_certificates, !s.insecure_skip_verify);
  if (!ctx) {
    // Any context carries the failure: an unverifying one without files always builds.
    options.setup_error = fmt::format("TLS toward {}: DestinationRule files: {}",
                                      endpoint.toString(), ctx.error().message);
    ctx = tls::clientContextFor("", "", "", false);
    if (!ctx) return nullptr;
  }
  auto stream = tls::TlsStream::create(std::move(*ctx), tls::Role::kClient, std::move(options));
  if (!stream) {
    spdlog::error("TLS: {}", stream.error().message);
    return nullptr;
  }
  return std::move(*stream);
}

}  // namespace

std::unique_ptr<tls::TlsStream> originateTls(const security::SecurityTable& security,
                                             const tls::IdentityStore* identity,
                                             const std::string& service, uint16_t service_port,
                                             const SocketAddress& endpoint,
                                             tls::SessionCache* sessions,
                                             const std::vector<std::string>& alpn) {
  auto o = security.outbound(service, service_port, endpoint.ip);
  if (!o.tls) return nullptr;
  if (o.settings != nullptr &&
      (o.mode == security::TlsMode::kSimple || o.mode == security::TlsMode::kMutual)) {
    return originateExternalTls(*o.settings, endpoint, sessions);
  }
  auto ctx = identity != nullptr ? identity->current() : nullptr;
  if (!ctx) {
    registry().no_identity.fetch_add(1, std::memory_order_relaxed);
    if (tlsLogAllowed()) {
      spdlog::warn(
          "mTLS wanted toward {} but this proxy has no certificate (--tls-dir): sent "
          "plaintext",
          endpoint.toString());
    }
    return nullptr;
  }
  // The table names pods in the default trust domain; the proxy's own (--trust-domain) rules.
  const std::string table_prefix = "spiffe://" + security.trust_domain + "/";
  if (ctx->trustDomain() != security.trust_domain && o.expected_peer.rfind(table_prefix, 0) == 0) {
    o.expected_peer =
        "spiffe://" + ctx->trustDomain() + "/" + o.expected_peer.substr(table_prefix.size());
  }
  tls::StreamOptions options{o.expected_peer, sessions, endpoint.toString()};
  options.alpn = alpn;
  auto stream = tls::TlsStream::create(std::move(ctx), tls::Role::kClient, std::move(options));
  if (!stream) {
    spdlog::error("TLS: {}", stream.error().message);
    return nullptr;
  }
  return std::move(*stream);
}

std::unique_ptr<tls::TlsStream> terminateTls(const tls::IdentityStore* identity,
                                             security::MtlsMode mode, bool http_port) {
  auto ctx = identity != nullptr ? identity->current() : nullptr;
  if (!ctx) {
    registry().no_identity.fetch_add(1, std::memory_order_relaxed);
    if (tlsLogAllowed()) spdlog::warn("mTLS inbound but no certificate (--tls-dir)");
    return nullptr;
  }
  tls::StreamOptions options;
  if (mode == security::MtlsMode::kPermissive) {
    options.terminate_if = [http_port](const std::vector<std::string>& offered) {
      return decidePermissiveTls(offered, http_port) == PermissiveTls::kMesh;
    };
  }
  auto stream = tls::TlsStream::create(std::move(ctx), tls::Role::kServer, std::move(options));
  if (!stream) {
    spdlog::error("TLS: {}", stream.error().message);
    return nullptr;
  }
  return std::move(*stream);
}

void identifyPeer(const std::string& peer_identity, security::ConnectionAttributes& a) {
  if (auto id = tls::parseSpiffeId(peer_identity)) {
    a.principal = id->principal();
    a.source_namespace = id->namespace_name;
  }
}

security::AuthzDecision authorize(const security::SecurityTable* security,
                                  const security::ConnectionAttributes& a) {
  auto policies = security != nullptr ? security->policiesFor(a.destination_ip)
                                      : std::vector<const security::AuthorizationPolicyRule*>{};
  security::AuthzDecision d = security::evaluate(policies, a);
  security::count(d);
  (d.allowed ? registry().authz_allowed : registry().authz_denied)
      .fetch_add(1, std::memory_order_relaxed);
  return d;
}

std::string sourcePrincipalLabel(const TlsConnection* t) {
  if (t == nullptr || !t->terminate) return "";
  security::ConnectionAttributes a;
  identifyPeer(t->peer_identity, a);
  return a.principal.empty() ? "unknown" : a.principal;
}

bool permissiveDetectsTls(char first) {
  const bool is_tls = first == kTlsHandshakeRecord;
  if (!is_tls) tls::TlsCounters::inc(tls::counters().permissive_plaintext);
  return is_tls;
}

bool offersIstioAlpn(const std::vector<std::string>& offered) {
  for (const std::string& p : offered) {
    if (p == "istio" || p == "istio-peer-exchange" || p == "istio-http/1.0" ||
        p == "istio-http/1.1" || p == "istio-h2") {
      return true;
    }
  }
  return false;
}

PermissiveTls decidePermissiveTls(const std::vector<std::string>& offered, bool http_port) {
  tls::TlsCounters& c = tls::counters();
  if (offersIstioAlpn(offered)) {
    tls::TlsCounters::inc(c.permissive_tls);
    return PermissiveTls::kMesh;
  }
  if (http_port) {
    tls::TlsCounters::inc(c.permissive_refused);
    return PermissiveTls::kRefuse;
  }
  tls::TlsCounters::inc(c.permissive_passthrough);
  return PermissiveTls::kPassThrough;
}

void countInbound(const std::string& source_principal, bool tls) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  ++r.inbound[InboundKey{source_principal.empty() ? "unknown" : source_principal, tls}];
}

std::string renderTlsPrometheus() {
  const tls::TlsCounters& c = tls::counters();
  auto v = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  std::string out;
  out += "# TYPE remora_tls_handshakes_total counter\n";
  out += fmt::format("remora_tls_handshakes_total{{side=\"client\"}} {}\n", v(c.handshakes_client));
  out += fmt::format("remora_tls_handshakes_total{{side=\"server\"}} {}\n", v(c.handshakes_server));
  out += fmt::format("# TYPE remora_tls_resumed_total counter\nremora_tls_resumed_total {}\n",
                     v(c.resumed));
  out += "# TYPE remora_tls_handshake_failures_total counter\n";
  for (auto [reason, value] : {std::pair{"handshake", v(c.failed_handshake)},
                               std::pair{"peer_identity", v(c.failed_peer_identity)},
                               std::pair{"cert_expired", v(c.failed_cert_expired)},
                               std::pair{"unknown_ca", v(c.failed_unknown_ca)},
                               std::pair{"subject_alt_name", v(c.failed_subject_alt_name)},
                               std::pair{"config", v(c.failed_config)},
                               std::pair{"plaintext_refused", v(c.plaintext_refused)}}) {
    out += fmt::format("remora_tls_handshake_failures_total{{reason=\"{}\"}} {}\n", reason, value);
  }
  out += "# TYPE remora_tls_credential_events_total counter\n";
  for (auto [event, value] : {std::pair{"load_error", v(c.load_errors)},
                              std::pair{"own_cert_expired", v(c.own_cert_expired)},
                              std::pair{"rotation", v(c.rotations)}}) {
    out += fmt::format("remora_tls_credential_events_total{{event=\"{}\"}} {}\n", event, value);
  }
  Registry& r = registry();
  out += "# TYPE remora_tls_permissive_total counter\n";
  out += fmt::format("remora_tls_permissive_total{{detected=\"tls\"}} {}\n", v(c.permissive_tls));
  out += fmt::format("remora_tls_permissive_total{{detected=\"plaintext\"}} {}\n",
                     v(c.permissive_plaintext));
  out += fmt::format("remora_tls_permissive_total{{detected=\"tls_passthrough\"}} {}\n",
                     v(c.permissive_passthrough));
  out += fmt::format("remora_tls_permissive_total{{detected=\"tls_refused\"}} {}\n",
                     v(c.permissive_refused));
  out += fmt::format("# TYPE remora_tls_originated_total counter\nremora_tls_originated_total {}\n",
                     v(c.originated));
  out +=
      fmt::format("# TYPE remora_tls_no_identity_total counter\nremora_tls_no_identity_total {}\n",
                  v(r.no_identity));
  out += "# TYPE remora_inbound_connections_total counter\n";
  {
    std::lock_guard lock(r.mutex);
    for (const auto& [key, n] : r.inbound) {
      out += fmt::format(
          "remora_inbound_connections_total{{source_principal=\"{}\",connection_security_policy="
          "\"{}\"}} {}\n",
          key.principal, key.tls ? "mutual_tls" : "none", n);
    }
  }
  out += "# TYPE remora_authz_decisions_total counter\n";
  out += fmt::format("remora_authz_decisions_total{{decision=\"allow\"}} {}\n", v(r.authz_allowed));
  out += fmt::format("remora_authz_decisions_total{{decision=\"deny\"}} {}\n", v(r.authz_denied));
  out += "# TYPE remora_authz_policy_total counter\n";
  for (const auto& [name, pc] : security::allPolicyCounters()) {
    for (auto [action, value] :
         {std::pair{"allow", v(pc->allowed)}, std::pair{"deny", v(pc->denied)},
          std::pair{"audit", v(pc->audited)}}) {
      out += fmt::format("remora_authz_policy_total{{policy=\"{}\",result=\"{}\"}} {}\n", name,
                         action, value);
    }
  }
  return out;
}

void Worker::tlsQueue(Direction& d, const std::string& bytes) {
  if (bytes.empty()) return;
  Chunk ch;
  ch.length = static_cast<uint32_t>(bytes.size());
  ch.owned = std::make_unique<char[]>(bytes.size());
  std::memcpy(ch.owned.get(), bytes.data(), bytes.size());
  d.queued_bytes += bytes.size();
  d.queue.push_back(std::move(ch));
}

bool Worker::authorizeInbound(uint32_t slot, const std::string& peer_identity) {
  Connection& conn = slots_[slot];
  TlsConnection& t = *conn.tls;
  security::ConnectionAttributes a;
  a.source_ip = a.remote_ip = conn.peer.ip;
  a.destination_ip = conn.original_dst.ip;
  a.destination_port = conn.original_dst.port;
  identifyPeer(peer_identity, a);
  countInbound(a.principal, !peer_identity.empty());
  const security::AuthzDecision d = authorize(conn.table ? conn.table->security.get() : nullptr, a);
  if (!d.allowed) {
    SPDLOG_DEBUG("inbound {} from {} ({}): {}", conn.original_dst.toString(), conn.peer.toString(),
                 a.principal.empty() ? "no identity" : a.principal, d.reason);
    // Closed at once: a TCP connection has no 403 to send.
    closeConnection(slot, "authz_denied", /*reset=*/true);
    return false;
  }
  t.authorized = true;
  if (t.connect_deferred) {
    // Now the app sees a connection (connectUpstream may close the slot on a socket error).
    t.connect_deferred = false;
    conn.state = State::kConnecting;
    connectUpstream(slot);
    return conn.state == State::kConnecting;
  }
  return true;
}

bool Worker::secureInbound(uint32_t slot, Sniffed* sniffed) {
  Connection& conn = slots_[slot];
  conn.tls.reset();
  if (!table_ || !table_->security) return true;  // no security documents: plaintext, no policy
  conn.table = table_;                            // keeps the policies alive until the decision
  if (auto peer = sockets_.peerAddress(conn.client_fd)) conn.peer = *peer;
  auto t = std::make_unique<TlsConnection>();
  t->terminate = true;
  t->mode = table_->security->inboundMode(conn.original_dst.ip, conn.original_dst.port);
  conn.tls = std::move(t);
  if (sniffed != nullptr && sniffed->tls) {
    // The sniffer did the handshake (and counted the detection): authorize the peer now.
    conn.tls->stream = std::move(sniffed->tls);
    conn.tls->peer_identity = conn.tls->stream->peerIdentity();
    return authorizeInbound(slot, conn.tls->peer_identity);
  }
  if (sniffed != nullptr && (sniffed->transport == Sniffed::Transport::kPlaintext ||
                             sniffed->transport == Sniffed::Transport::kTlsPassedThrough)) {
    if (conn.tls->mode == security::MtlsMode::kStrict) {
      // A reload made the port STRICT while the sniffer took the client for plaintext (or for
      // TLS that is not the mesh's).
      tls::TlsCounters::inc(tls::counters().plaintext_refused);
      closeConnection(slot, "tls_handshake_failed", /*reset=*/true);
      return false;
    }
    // PERMISSIVE decided (and counted) by the sniffer; passed-through TLS relays as plaintext.
    return authorizeInbound(slot, "");
  }
  switch (conn.tls->mode) {
    case security::MtlsMode::kStrict: {
      conn.tls->stream = terminateTls(identity_.get());
      if (!conn.tls->stream) {
        closeConnection(slot, "tls_no_identity", /*reset=*/true);
        return false;
      }
      break;
    }
    case security::MtlsMode::kPermissive:
      conn.tls->detecting = true;
      conn.tls->detect_deadline = now_ + kDetectTimeout;
      break;
    default:  // DISABLE: plaintext, decided now, before the app sees a connection
      return authorizeInbound(slot, "");
  }
  // The handshake (or PERMISSIVE's look at the first byte) and the authorization come first:
  // the client side relays alone until authorizeInbound opens the connection to the app.
  conn.tls->connect_deferred = true;
  conn.state = State::kRelaying;
  maybeArmRecv(slot, true);
  return false;
}

void Worker::secureOutbound(uint32_t slot) {
  Connection& conn = slots_[slot];
  conn.tls.reset();
  const auto& table = conn.table ? conn.table : table_;
  if (!table || !table->security) return;
  std::string service;
  uint16_t port = conn.original_dst.port;
  // Mesh mTLS always offers an Istio ALPN, as Istio's client sidecars do: a PERMISSIVE server
  // passes TLS without one to its app untouched. HTTP where the sniffer found HTTP/1.x (an `auto`
  // port relayed at L4: no http routes, or a pod address), TCP otherwise: a port declaring a
  // non-HTTP protocol, a sniffed connection that was not HTTP, or an address of no Service.
  const std::vector<std::string>& alpn = conn.sniffed_http ? kMeshHttpAlpn : kMeshTcpAlpn;
  if (conn.decision.kind == routing::RouteDecision::Kind::kService &&
      conn.decision.service != nullptr) {
    const routing::ServicePort& sp = *conn.decision.service;
    service = sp.service;
    port = sp.port;
  }
  auto stream = originateTls(*table->security, identity_.get(), service, port,
                             conn.decision.upstream, &session_cache_, alpn);
  if (!stream) return;
  conn.tls = std::make_unique<TlsConnection>();
  conn.tls->stream = std::move(stream);
}

void Worker::tlsConnected(uint32_t slot) {
  Connection& conn = slots_[slot];
  TlsConnection& t = *conn.tls;
  if (t.terminate) {
    // The app is connected after the authorization (what the client sent meanwhile was counted
    // in onConnect); the handshake's last bytes (session tickets) go out.
    pump(slot, true);  // also the half-close of a client that already ended
    pump(slot, false);
    return;
  }
  if (!t.stream) {
    pump(slot, true);
    return;
  }
  tls::TlsCounters::inc(tls::counters().originated);
  // What the sniffer read from the app (all the request queue holds before the connect) is
  // plaintext: it goes into the stream, sent once the handshake is done, never ahead of it.
  Direction& d = conn.request;
  for (size_t i = d.head; i < d.queue.size(); ++i) {
    Chunk& ch = d.queue[i];
    (void)t.stream->send({chunkData(ch), ch.length});  // held: cannot fail before the start
    releaseChunk(d, ch);
  }
  d.queue.clear();
  d.head = 0;
  d.queued_bytes = 0;
  if (auto started = t.stream->start(); !started) {
    if (tlsLogAllowed()) spdlog::error("outbound {}", started.error().message);
    closeConnection(slot, tlsOutcome(t.stream->failure()), /*reset=*/true);
    return;
  }
  std::string hello;
  t.stream->takeCiphertext(hello);
  tlsQueue(conn.request, hello);
  pump(slot, true);
}

bool Worker::tlsHoldsReceive(const Connection& conn, bool from_client) const {
  return conn.tls && (conn.tls->detecting || conn.tls->connect_deferred) && !from_client;
}

bool Worker::tlsReceive(uint32_t slot, bool from_client, const loop::Completion& c) {
  Connection& conn = slots_[slot];
  TlsConnection& t = *conn.tls;
  if (t.detecting && from_client) {
    t.detecting = false;
    if (!permissiveDetectsTls(ring_.buffer(c.bufferId()).data()[0])) {
      const auto n = static_cast<size_t>(c.res);
      const bool deferred = t.connect_deferred;
      if (deferred) {
        // These bytes wait in the request queue for the connection to the app.
        tlsQueue(conn.request, std::string(ring_.buffer(c.bufferId()).data(), n));
        ring_.recycleBuffer(c.bufferId());
        conn.request_bytes += n;
        conn.uncounted_received += n;
        conn.last_activity = now_;
      }
      if (!authorizeInbound(slot, "")) {
        if (!deferred) ring_.recycleBuffer(c.bufferId());
        return true;
      }
      if (deferred) return true;  // onConnect sends them and arms both receives
      maybeArmRecv(slot, false);  // the app's bytes flow again
      return false;
    }
    t.stream = terminateTls(identity_.get(), t.mode);
    if (!t.stream) {
      ring_.recycleBuffer(c.bufferId());
      closeConnection(slot, "tls_no_identity", /*reset=*/true);
      return true;
    }
    maybeArmRecv(slot, false);
  }
  if (!t.stream) return false;
  const auto n = static_cast<size_t>(c.res);
  const bool from_tls_side = from_client == t.terminate;
  Direction& d = from_client ? conn.request : conn.response;
  Direction& to_tls = t.terminate ? conn.response : conn.request;
  std::span<const char> bytes(ring_.buffer(c.bufferId()).data(), n);
  std::string plain;
  if (from_tls_side && t.terminate && t.mode == security::MtlsMode::kStrict &&
      !t.stream->established() && conn.request_bytes == 0 && n > 0 &&
      bytes[0] != kTlsHandshakeRecord) {
    tls::TlsCounters::inc(tls::counters().plaintext_refused);
  }
  Result<void> r = from_tls_side ? t.stream->receive(bytes, plain) : t.stream->send(bytes);
  ring_.recycleBuffer(c.bufferId());
  conn.last_activity = now_;
  if (from_client) {
    conn.request_bytes += n;
    if (conn.counters != nullptr) {
      conn.counters->received_bytes.add(n);
    } else {
      conn.uncounted_received += n;
    }
  }
  if (r && from_tls_side && t.stream->passedThrough()) {
    // PERMISSIVE, a ClientHello without an Istio ALPN: the client's own TLS, for the app. What
    // the stream read goes first, as it came, and the rest relays as plaintext.
    tlsQueue(conn.request, t.stream->takeReceived());
    t.stream.reset();
    const bool deferred = t.connect_deferred;
    if (!authorizeInbound(slot, "")) return true;
    if (!deferred) {  // (PERMISSIVE always defers; kept whole should that change)
      pump(slot, false);
      maybeArmRecv(slot, true);
      maybeArmRecv(slot, false);
    }
    return true;  // onConnect sends the bytes and arms both receives
  }
  if (!r) {
    if (tlsLogAllowed()) {
      spdlog::warn("{} {} ({})", conn.kind == ListenerKind::kInbound ? "inbound" : "outbound",
                   r.error().message,
                   conn.kind == ListenerKind::kInbound ? conn.peer.toString()
                                                       : conn.decision.upstream.toString());
    }
    closeConnection(slot, tlsOutcome(t.stream->failure()), /*reset=*/true);
    return true;
  }
  if (t.stream->established() && t.peer_identity.empty()) {
    t.peer_identity = t.stream->peerIdentity();
    if (t.terminate && !authorizeInbound(slot, t.peer_identity)) return true;
  }
  tlsQueue(d, plain);
  std::string wire;
  t.stream->takeCiphertext(wire);
  tlsQueue(to_tls, wire);
  if (d.queued_bytes >= settings_.buffer_limit) {
    d.paused = true;
    stats_.counters().watermark_pauses.inc();
  }
  pump(slot, true);
  pump(slot, false);
  maybeArmRecv(slot, from_client);
  return true;
}

void Worker::tlsEndOfFile(uint32_t slot, bool from_client) {
  Connection& conn = slots_[slot];
  TlsConnection& t = *conn.tls;
  if (t.detecting && from_client) {
    // Closed before saying anything: plaintext as far as PERMISSIVE can tell.
    t.detecting = false;
    tls::TlsCounters::inc(tls::counters().permissive_plaintext);
    if (authorizeInbound(slot, "")) maybeArmRecv(slot, false);
    return;
  }
  if (t.connect_deferred && from_client) {
    // Gone before the handshake and the authorization were done: the app never hears of it.
    closeConnection(slot, "tls_handshake_incomplete", /*reset=*/true);
    return;
  }
  if (!t.stream || t.close_notify || from_client == t.terminate) return;
  // The plaintext side is done: close_notify goes out before the TCP half-close.
  t.close_notify = true;
  t.stream->close();
  std::string wire;
  t.stream->takeCiphertext(wire);
  tlsQueue(t.terminate ? conn.response : conn.request, wire);
}

void Worker::tlsTick(uint32_t slot) {
  Connection& conn = slots_[slot];
  TlsConnection& t = *conn.tls;
  if (!t.detecting || conn.state != State::kRelaying || now_ < t.detect_deadline) return;
  // The client said nothing in time: the app may speak first, so this is plaintext.
  t.detecting = false;
  tls::TlsCounters::inc(tls::counters().permissive_plaintext);
  if (authorizeInbound(slot, "")) maybeArmRecv(slot, false);
}

}  // namespace remora::proxy
