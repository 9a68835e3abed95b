// Protocol sniffing (proxy/sniffer.h) against a fake ring: the verdicts, the bytes handed on,
// the timeout and its race with a read, and the counters.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "proxy/sniffer.h"
#include "proxy/tls_connection.h"
#include "proxy_fakes.h"
#include "tls/tls_context.h"
#include "tls_test_certs.h"

namespace remora::proxy {
namespace {

using testing::FakeRing;
using testing::RecordedOp;

class SnifferTest : public ::testing::Test {
 protected:
  SnifferTest()
      : sniffer_(
            ring_, stats_, [this](Sniffed s) { verdict_ = std::move(s); },
            [this](security::MtlsMode mode) { return serverStream(mode); },
            [this](const SniffClosed& c) {
              // The fd is still open when the close is reported.
              EXPECT_EQ(c.fd, fd_);
              closed_.push_back(c);
            }) {}
  ~SnifferTest() override {
    if (verdict_ && verdict_->fd >= 0) ::close(verdict_->fd);
  }

  void start(security::MtlsMode mtls = security::MtlsMode::kDisable) {
    fd_ = ::eventfd(0, 0);
    ASSERT_GE(fd_, 0);
    sniffer_.start(fd_, 3, dst_, std::chrono::milliseconds(100), mtls);
  }
  // The sniffer's server streams (a workload "bill"), as terminateTls makes them: under
  // PERMISSIVE the ClientHello decides first (decidePermissiveTls, a TCP or unnamed port).
  std::unique_ptr<tls::TlsStream> serverStream(security::MtlsMode mode) {
    if (!server_ctx_) return nullptr;
    tls::StreamOptions o;
    if (mode == security::MtlsMode::kPermissive) {
      o.terminate_if = [](const std::vector<std::string>& offered) {
        return decidePermissiveTls(offered, /*http_port=*/false) == PermissiveTls::kMesh;
      };
    }
    auto s = tls::TlsStream::create(server_ctx_, tls::Role::kServer, std::move(o));
    return s.ok() ? std::move(*s) : nullptr;
  }
  // A meshed client ("front") offering `alpn`, its ClientHello sent to the sniffer; then the
  // handshake runs over the fake ring until the sniffer's sends are answered.
  void tlsClient(std::vector<std::string> alpn, std::string_view request = {}) {
    server_ctx_ = context(ca_.issue("spiffe://cluster.local/ns/istio-demo/sa/bill"));
    tls::StreamOptions o;
    o.alpn = std::move(alpn);
    auto c = tls::TlsStream::create(context(ca_.issue(kFrontId)), tls::Role::kClient, o);
    ASSERT_TRUE(c.ok());
    client_ = std::move(*c);
    if (!request.empty()) {
      ASSERT_TRUE(client_->send({request.data(), request.size()}).ok());
    }
    ASSERT_TRUE(client_->start().ok());
    std::string hello;
    client_->takeCiphertext(hello);
    clientSends(hello);
    // ServerHello .. Finished: one send; the client answers with its Finished (and the request).
    RecordedOp flight = last(RecordedOp::kSend);
    std::string plain;
    ASSERT_TRUE(client_->receive(flight.data, plain).ok());
    ASSERT_TRUE(client_->established());
    complete(flight.user_data, static_cast<int32_t>(flight.data.size()));
    std::string finished;
    client_->takeCiphertext(finished);
    clientSends(finished);
    // The session tickets go out before any verdict is handed on.
    const size_t sends = count(RecordedOp::kSend);
    ASSERT_EQ(sends, 2u);
    RecordedOp tickets = last(RecordedOp::kSend);
    ASSERT_TRUE(client_->receive(tickets.data, plain).ok());
    EXPECT_FALSE(verdict_.has_value()) << "a verdict before the handshake's bytes were sent";
    complete(tickets.user_data, static_cast<int32_t>(tickets.data.size()));
  }
  static std::shared_ptr<const tls::TlsContext> context(const tls::Credentials& c) {
    auto ctx = tls::TlsContext::create(c, "cluster.local");
    EXPECT_TRUE(ctx.ok());
    return ctx.ok() ? *ctx : nullptr;
  }
  static constexpr const char* kFrontId = "spiffe://cluster.local/ns/istio-demo/sa/front";
  // The last operation of `kind` recorded.
  RecordedOp last(RecordedOp::Kind kind) {
    auto it = std::find_if(ring_.ops.rbegin(), ring_.ops.rend(),
                           [&](const RecordedOp& op) { return op.kind == kind; });
    EXPECT_NE(it, ring_.ops.rend());
    return it != ring_.ops.rend() ? *it : RecordedOp{kind, -1, 0};
  }
  void complete(uint64_t user_data, int32_t res) {
    loop::Completion c;
    c.user_data = user_data;
    c.res = res;
    sniffer_.onCompletion(c);
  }
  // The client sends `bytes`: the pending read completes with them.
  void clientSends(std::string_view bytes) {
    RecordedOp read = last(RecordedOp::kRead);
    ASSERT_GE(read.into.size(), bytes.size());
    std::memcpy(read.into.data(), bytes.data(), bytes.size());
    complete(read.user_data, static_cast<int32_t>(bytes.size()));
  }
  size_t count(RecordedOp::Kind kind) const {
    return static_cast<size_t>(std::count_if(
        ring_.ops.begin(), ring_.ops.end(), [&](const RecordedOp& op) { return op.kind == kind; }));
  }

  FakeRing ring_;
  WorkerStats stats_;
  tls::testing::TestCa ca_{"sniffer-ca"};
  std::shared_ptr<const tls::TlsContext> server_ctx_;
  std::unique_ptr<tls::TlsStream> client_;
  std::optional<Sniffed> verdict_;
  std::vector<SniffClosed> closed_;  // what the sniffer reported closing before a verdict
  Sniffer sniffer_;
  int fd_ = -1;
  SocketAddress dst_{IpAddress::v4(0x0a010001), 7777};
};

TEST_F(SnifferTest, ARequestLineInPiecesIsHttp) {
  start();
  EXPECT_EQ(last(RecordedOp::kTimeout).timeout, std::chrono::milliseconds(100));
  clientSends("GET /a HT");
  EXPECT_FALSE(verdict_.has_value());
  EXPECT_EQ(count(RecordedOp::kRead), 2u);  // reads on
  clientSends("TP/1.1\r\nHost: x\r\n");
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kHttp);
  EXPECT_EQ(verdict_->bytes, "GET /a HTTP/1.1\r\nHost: x\r\n");
  EXPECT_EQ(verdict_->fd, fd_);
  EXPECT_EQ(verdict_->listener, 3u);
  EXPECT_EQ(verdict_->original_dst, dst_);
  // The timer is cancelled; its completion later changes nothing.
  const RecordedOp timer = ring_.ops[0];
  ASSERT_EQ(timer.kind, RecordedOp::kTimeout);
  EXPECT_EQ(last(RecordedOp::kCancel).target, timer.user_data);
  complete(timer.user_data, -ECANCELED);
  complete(last(RecordedOp::kCancel).user_data, 0);
  EXPECT_EQ(stats_.counters().sniff_http.get(), 1u);
  EXPECT_EQ(sniffer_.inUse(), 0u);
}

TEST_F(SnifferTest, TlsIsTcpAtTheFirstByte) {
  start();
  clientSends(std::string_view("\x16\x03\x01\x02\x00", 5));
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kTcp);
  EXPECT_EQ(verdict_->bytes.size(), 5u);
  EXPECT_EQ(stats_.counters().sniff_tcp.get(), 1u);
}

TEST_F(SnifferTest, AClientClosingIsTcpWithWhatItSent) {
  start();
  clientSends("GET / HTT");
  complete(last(RecordedOp::kRead).user_data, 0);
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kTcp);
  EXPECT_EQ(verdict_->bytes, "GET / HTT");
}

TEST_F(SnifferTest, SilenceUntilTheTimeoutIsRelayedAsTcp) {
  start();
  const RecordedOp timer = last(RecordedOp::kTimeout);
  const RecordedOp read = last(RecordedOp::kRead);
  complete(timer.user_data, -ETIME);
  // The read is cancelled; the verdict waits for its completion.
  EXPECT_EQ(last(RecordedOp::kCancel).target, read.user_data);
  EXPECT_FALSE(verdict_.has_value());
  complete(read.user_data, -ECANCELED);
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kTimeout);
  EXPECT_TRUE(verdict_->bytes.empty());
  EXPECT_EQ(stats_.counters().sniff_timeout.get(), 1u);
}

TEST_F(SnifferTest, BytesRacingTheTimeoutAreKept) {
  start();
  complete(last(RecordedOp::kTimeout).user_data, -ETIME);
  // The read completed with bytes before the cancel reached it: a request line is still HTTP.
  clientSends("GET / HTTP/1.1\r\n");
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kHttp);
  EXPECT_EQ(verdict_->bytes, "GET / HTTP/1.1\r\n");
}

TEST_F(SnifferTest, AnIncompleteLineAtTheTimeoutIsRelayedWithItsBytes) {
  start();
  clientSends("GET /");
  complete(last(RecordedOp::kTimeout).user_data, -ETIME);
  complete(last(RecordedOp::kRead).user_data, -ECANCELED);
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kTimeout);
  EXPECT_EQ(verdict_->bytes, "GET /");
}

TEST_F(SnifferTest, AbortAllClosesWhatIsBeingSniffed) {
  start();
  sniffer_.abortAll();
  EXPECT_FALSE(verdict_.has_value());
  EXPECT_EQ(last(RecordedOp::kClose).fd, fd_);
  ASSERT_EQ(closed_.size(), 1u);
  EXPECT_STREQ(closed_[0].outcome, "aborted");
  ::close(fd_);  // the fake ring closes nothing
}

TEST(MeshAlpn, TheFirstOfIstiosProtocolsOfferedDecides) {
  EXPECT_EQ(meshAlpnVerdict({"istio-http/1.1", "istio", "http/1.1"}), AlpnVerdict::kHttp);
  EXPECT_EQ(meshAlpnVerdict({"istio-http/1.0", "istio", "http/1.0"}), AlpnVerdict::kHttp);
  EXPECT_EQ(meshAlpnVerdict({"istio-peer-exchange", "istio"}), AlpnVerdict::kTcp);
  EXPECT_EQ(meshAlpnVerdict({"istio"}), AlpnVerdict::kTcp);
  // HTTP/2 is not spoken by the L7 path: relayed, as declared http2 ports are.
  EXPECT_EQ(meshAlpnVerdict({"istio-h2", "istio", "h2"}), AlpnVerdict::kTcp);
  EXPECT_EQ(meshAlpnVerdict({"h2", "http/1.1"}), AlpnVerdict::kUnknown);
  EXPECT_EQ(meshAlpnVerdict({"http/1.1", "istio-http/1.1"}), AlpnVerdict::kHttp);
  EXPECT_EQ(meshAlpnVerdict({}), AlpnVerdict::kUnknown);
  // What Remora's own clients offer.
  EXPECT_EQ(meshAlpnVerdict(kMeshHttpAlpn), AlpnVerdict::kHttp);
  EXPECT_EQ(meshAlpnVerdict(kMeshTcpAlpn), AlpnVerdict::kTcp);
}

TEST_F(SnifferTest, PermissiveTlsWithAnIstioHttpAlpnIsHttpOverTheStream) {
  const uint64_t tls_before = tls::counters().permissive_tls.load();
  start(security::MtlsMode::kPermissive);
  tlsClient(kMeshHttpAlpn);
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kHttp);
  EXPECT_EQ(verdict_->transport, Sniffed::Transport::kTls);
  ASSERT_TRUE(verdict_->tls);
  EXPECT_TRUE(verdict_->tls->established());
  EXPECT_EQ(verdict_->tls->peerIdentity(), kFrontId);
  EXPECT_TRUE(verdict_->bytes.empty());  // decided by the ALPN, before any request
  EXPECT_EQ(tls::counters().permissive_tls.load(), tls_before + 1);
  EXPECT_EQ(stats_.counters().sniff_http.get(), 1u);
  // The stream carries on: a request the client sends now is decrypted by the new owner.
  ASSERT_TRUE(client_->send(std::string_view("GET / HTTP/1.1\r\n")).ok());
  std::string wire, plain;
  client_->takeCiphertext(wire);
  ASSERT_TRUE(verdict_->tls->receive(wire, plain).ok());
  EXPECT_EQ(plain, "GET / HTTP/1.1\r\n");
}

TEST_F(SnifferTest, StrictTlsWithTheTcpAlpnIsTcpWithoutWaiting) {
  start(security::MtlsMode::kStrict);
  tlsClient(kMeshTcpAlpn);
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kTcp);
  EXPECT_EQ(verdict_->transport, Sniffed::Transport::kTls);
  ASSERT_TRUE(verdict_->tls);
  EXPECT_EQ(stats_.counters().sniff_tcp.get(), 1u);
}

TEST_F(SnifferTest, StrictTlsWithoutAnIstioAlpnIsTcpAsIstiosStrictChainsTakeIt) {
  start(security::MtlsMode::kStrict);
  // The request rides with the client's Finished; it is not looked at.
  tlsClient({}, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kTcp);
  EXPECT_EQ(verdict_->transport, Sniffed::Transport::kTls);
  ASSERT_TRUE(verdict_->tls);
  EXPECT_EQ(verdict_->tls->peerIdentity(), kFrontId);
}

TEST_F(SnifferTest, PermissiveTlsWithoutAnIstioAlpnIsPassedToTheAppAsItCame) {
  server_ctx_ = context(ca_.issue("spiffe://cluster.local/ns/istio-demo/sa/bill"));
  const uint64_t passed = tls::counters().permissive_passthrough.load();
  const uint64_t mesh = tls::counters().permissive_tls.load();
  start(security::MtlsMode::kPermissive);
  // A client outside the mesh speaking its own TLS to the app (no certificate, h2 / http/1.1).
  auto ext = tls::clientContextFor("", "", "", false);
  ASSERT_TRUE(ext.ok());
  tls::StreamOptions o;
  o.alpn = {"h2", "http/1.1"};
  auto c = tls::TlsStream::create(*ext, tls::Role::kClient, o);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->start().ok());
  std::string hello;
  (*c)->takeCiphertext(hello);
  // In three segments: the record header alone, then two halves of the rest.
  clientSends(std::string_view(hello).substr(0, 5));
  EXPECT_FALSE(verdict_.has_value());
  const size_t half = 5 + (hello.size() - 5) / 2;
  clientSends(std::string_view(hello).substr(5, half - 5));
  EXPECT_FALSE(verdict_.has_value());
  clientSends(std::string_view(hello).substr(half));
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kTcp);
  EXPECT_EQ(verdict_->transport, Sniffed::Transport::kTlsPassedThrough);
  EXPECT_FALSE(verdict_->tls);
  EXPECT_EQ(verdict_->bytes, hello);
  EXPECT_EQ(count(RecordedOp::kSend), 0u) << "the sniffer answered a client that is not the mesh's";
  EXPECT_EQ(tls::counters().permissive_passthrough.load(), passed + 1);
  EXPECT_EQ(tls::counters().permissive_tls.load(), mesh);
}

TEST(PermissiveTls, AnIstioAlpnIsTheMeshsTlsOtherTlsPassesOrIsRefusedOnHttpPorts) {
  for (const char* p :
       {"istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"}) {
    EXPECT_TRUE(offersIstioAlpn({"h2", p})) << p;
    EXPECT_EQ(decidePermissiveTls({p}, false), PermissiveTls::kMesh) << p;
    EXPECT_EQ(decidePermissiveTls({p}, true), PermissiveTls::kMesh) << p;
  }
  for (const std::vector<std::string>& offer : {std::vector<std::string>{},
                                                {"h2", "http/1.1"},
                                                {"http/1.1"},
                                                {"istio-http/2"},
                                                {"Istio"},
                                                {"istiox"},
                                                {"istio-http"}}) {
    EXPECT_FALSE(offersIstioAlpn(offer));
    EXPECT_EQ(decidePermissiveTls(offer, false), PermissiveTls::kPassThrough);
    EXPECT_EQ(decidePermissiveTls(offer, true), PermissiveTls::kRefuse);
  }
  // What Remora's own clients offer is the mesh's.
  EXPECT_TRUE(offersIstioAlpn(kMeshHttpAlpn));
  EXPECT_TRUE(offersIstioAlpn(kMeshTcpAlpn));
}

TEST_F(SnifferTest, StrictRefusesAPlaintextClientAtItsFirstByte) {
  const uint64_t refused = tls::counters().plaintext_refused.load();
  start(security::MtlsMode::kStrict);
  clientSends("GET / HTTP/1.1\r\n");
  EXPECT_FALSE(verdict_.has_value());
  EXPECT_EQ(last(RecordedOp::kClose).fd, fd_);
  EXPECT_EQ(tls::counters().plaintext_refused.load(), refused + 1);
  EXPECT_EQ(stats_.counters().resets_sent.get(), 1u);
  // Reported for its access-log line, as the L4 path names a STRICT port's plaintext.
  ASSERT_EQ(closed_.size(), 1u);
  EXPECT_STREQ(closed_[0].outcome, "tls_handshake_failed");
  EXPECT_EQ(closed_[0].received_bytes, 16u);
  EXPECT_EQ(closed_[0].listener, 3u);
  EXPECT_EQ(closed_[0].original_dst, dst_);
  ::close(fd_);  // the fake ring closes nothing
}

TEST_F(SnifferTest, PermissivePlaintextIsSniffedAsBeforeAndSaysSo) {
  const uint64_t plain = tls::counters().permissive_plaintext.load();
  start(security::MtlsMode::kPermissive);
  clientSends("GET / HTTP/1.1\r\n");
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kHttp);
  EXPECT_EQ(verdict_->transport, Sniffed::Transport::kPlaintext);
  EXPECT_FALSE(verdict_->tls);
  EXPECT_EQ(tls::counters().permissive_plaintext.load(), plain + 1);
}

TEST_F(SnifferTest, PermissiveSilenceIsPlaintextForTheApp) {
  start(security::MtlsMode::kPermissive);
  complete(last(RecordedOp::kTimeout).user_data, -ETIME);
  complete(last(RecordedOp::kRead).user_data, -ECANCELED);
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kTimeout);
  EXPECT_EQ(verdict_->transport, Sniffed::Transport::kPlaintext);
}

TEST_F(SnifferTest, AHandshakeThatStallsIsResetAfterItsBound) {
  server_ctx_ = context(ca_.issue("spiffe://cluster.local/ns/istio-demo/sa/bill"));
  start(security::MtlsMode::kStrict);
  clientSends(std::string_view("\x16\x03\x01\x00\x05", 5));  // a hello that never ends
  complete(ring_.ops[0].user_data, -ETIME);
  ASSERT_EQ(count(RecordedOp::kTimeout), 2u);
  const RecordedOp bound = last(RecordedOp::kTimeout);
  EXPECT_GT(bound.timeout, std::chrono::milliseconds(5000));
  EXPECT_FALSE(verdict_.has_value());
  EXPECT_TRUE(closed_.empty());
  complete(bound.user_data, -ETIME);
  EXPECT_FALSE(verdict_.has_value());
  EXPECT_EQ(last(RecordedOp::kClose).fd, fd_);
  ASSERT_EQ(closed_.size(), 1u);
  EXPECT_STREQ(closed_[0].outcome, "tls_handshake_timeout");
  EXPECT_EQ(closed_[0].received_bytes, 5u);
  ::close(fd_);
}

}  // namespace
}  // namespace remora::proxy
