// mTLS and AuthorizationPolicy on the L7 path (docs/TLS.md, "HTTP ports"). The HttpProxy's pipes
// carry an optional TlsStream: queueSend encrypts through it, received bytes are decrypted before
// the HTTP code sees them, so routing, pools, retries and tunnels stay unchanged. The decisions
// (which mode, which expected peer, the policies) are the L4 path's, from tls_connection.h.

#include <spdlog/spdlog.h>

#include "http/codec.h"
#include "proxy/http_proxy.h"
#include "proxy/tls_connection.h"
#include "proxy/worker.h"

namespace remora::proxy {

bool HttpProxy::secureSession(Pipe& client, ListenerKind kind, const SocketAddress& original_dst) {
  if (kind != ListenerKind::kInbound || router_ == nullptr) return true;
  const auto table = router_->table();
  if (!table || !table->security) return true;
  switch (table->security->inboundMode(original_dst.ip, original_dst.port)) {
    case security::MtlsMode::kStrict:
      client.tls = terminateTls(identity_.get());
      return client.tls != nullptr;
    case security::MtlsMode::kPermissive:
      // HTTP speaks first, so the wait for the first byte is the client's idle timeout.
      client.detect_tls = true;
      return true;
    default:  // DISABLE
      client.tls_identified = true;
      countInbound("", false);
      return true;
  }
}

void HttpProxy::identifyClient(Pipe& client) {
  client.tls_identified = true;
  security::ConnectionAttributes a;
  identifyPeer(client.tls->peerIdentity(), a);
  client.peer_principal = a.principal;
  client.peer_namespace = a.source_namespace;
  countInbound(a.principal, true);
}

bool HttpProxy::secureSniffed(Pipe& client, bool first_bytes,
                              std::unique_ptr<tls::TlsStream> client_tls) {
  if (client_tls) {
    client.tls = std::move(client_tls);
    identifyClient(client);
    return true;
  }
  if (!first_bytes) return true;
  if (client.tls) {
    // A reload made the port STRICT while the sniffer took the client for plaintext.
    tls::TlsCounters::inc(tls::counters().plaintext_refused);
    return false;
  }
  if (client.detect_tls) {
    // PERMISSIVE: the sniffer saw (and counted) plaintext; later bytes are not looked at again.
    client.detect_tls = false;
    client.tls_identified = true;
    countInbound("", false);
  }
  return true;
}

void HttpProxy::secureUpstream(Pipe& io, ListenerKind kind, const routing::RouteTable* table,
                               const routing::ServicePort* port, const SocketAddress& endpoint) {
  if (kind != ListenerKind::kOutbound || table == nullptr || !table->security || port == nullptr) {
    return;
  }
  // HTTP/1.1 over mesh mTLS says so in its ALPN, as Istio's sidecars do: the server takes the
  // connection to its HTTP path without sniffing.
  io.tls = originateTls(*table->security, identity_.get(), port->service, port->port, endpoint,
                        session_cache_, kMeshHttpAlpn);
}

bool HttpProxy::tlsConnected(Pipe& io) {
  if (!io.tls) return true;
  tls::TlsCounters::inc(tls::counters().originated);
  if (auto started = io.tls->start(); !started) {
    if (tlsLogAllowed()) spdlog::error("http outbound {}", started.error().message);
    return false;
  }
  io.tls->takeCiphertext(io.pending);
  return true;
}

HttpProxy::TlsIn HttpProxy::tlsReceive(Pipe& p, std::string_view& bytes, bool inbound_client) {
  if (p.detect_tls) {
    p.detect_tls = false;
    if (!permissiveDetectsTls(bytes.front())) {
      p.tls_identified = true;
      countInbound("", false);
      return TlsIn::kPlain;
    }
    p.tls = terminateTls(identity_.get(), security::MtlsMode::kPermissive, /*http_port=*/true);
    if (!p.tls) return TlsIn::kFailed;
  }
  if (!p.tls) return TlsIn::kPlain;
  const bool first_plaintext =
      inbound_client && !p.tls->established() && bytes.front() != kTlsHandshakeRecord;
  tls_plain_.clear();
  Result<void> r = p.tls->receive(bytes, tls_plain_);
  if (r && p.tls->passedThrough()) {
    // PERMISSIVE TLS offering no Istio ALPN on an HTTP port: Istio has no filter chain for it
    // and closes the connection (counted detected="tls_refused"); nothing was sent.
    SPDLOG_DEBUG("http inbound: TLS without an Istio ALPN on an HTTP port: closed");
    return TlsIn::kFailed;
  }
  p.tls->takeCiphertext(p.pending);  // handshake answers, or the alert of a failure
  if (!r) {
    if (first_plaintext) tls::TlsCounters::inc(tls::counters().plaintext_refused);
    if (tlsLogAllowed()) {
      spdlog::warn("http {} {}", inbound_client ? "inbound" : "outbound", r.error().message);
    }
    return TlsIn::kFailed;
  }
  if (inbound_client && p.tls->established() && !p.tls_identified) identifyClient(p);
  bytes = tls_plain_;
  return TlsIn::kPlain;
}

void HttpProxy::tlsSend(Pipe& p, std::string_view data) {
  if (data.empty()) return;
  if (auto sent = p.tls->send({data.data(), data.size()}); !sent) {
    // The stream failed: its receive side reports it and the pipe closes.
    SPDLOG_DEBUG("http TLS send: {}", sent.error().message);
    return;
  }
  p.tls->takeCiphertext(p.pending);
}

void HttpProxy::tlsCloseNotify(Pipe& p) {
  if (!p.tls || p.close_notify || !p.tls->established()) return;
  p.close_notify = true;
  p.tls->close();
  p.tls->takeCiphertext(p.pending);
}

bool HttpProxy::requestAllowed(const routing::RouteTable* table, ListenerKind kind,
                               const http::MessageHead& h, std::string_view path,
                               const SocketAddress& peer, const SocketAddress& original_dst,
                               const Pipe& client) {
  const security::SecurityTable* sec = table != nullptr ? table->security.get() : nullptr;
  if (kind != ListenerKind::kInbound || sec == nullptr) return true;
  security::RequestAttributes request;
  request.host = h.authority();
  request.method = h.method();
  request.path = path;  // normalized once by handleRequest (evaluate()'s contract)
  request.headers.reserve(h.headerCount());
  for (size_t i = 0; i < h.headerCount(); ++i) {
    const http::HeaderField f = h.header(i);
    request.headers.emplace_back(f.name, f.value);
  }
  security::ConnectionAttributes a;
  a.source_ip = a.remote_ip = peer.ip;
  a.destination_ip = original_dst.ip;
  a.destination_port = original_dst.port;
  a.request = &request;
  a.principal = client.peer_principal;
  a.source_namespace = client.peer_namespace;
  const security::AuthzDecision d = authorize(sec, a);
  if (!d.allowed) {
    SPDLOG_DEBUG("inbound {} {} from {} ({}): {}", h.method(), path, peer.toString(),
                 a.principal.empty() ? "no identity" : a.principal, d.reason);
  }
  return d.allowed;
}

}  // namespace remora::proxy
