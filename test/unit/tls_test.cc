// The TLS engine over in-memory pipes: handshake, SPIFFE checks, wrong CA, expired
// certificates, resumption and rotation, with no socket involved.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "tls/spiffe.h"
#include "tls/tls_context.h"
#include "tls/tls_stream.h"
#include "tls_test_certs.h"

namespace remora::tls {
namespace {

using testing::TestCa;

constexpr const char* kClientId = "spiffe://cluster.local/ns/front/sa/tomcat";
constexpr const char* kServerId = "spiffe://cluster.local/ns/istio-demo/sa/bill";

std::shared_ptr<const TlsContext> context(const Credentials& c,
                                          const std::string& td = "cluster.local") {
  auto ctx = TlsContext::create(c, td);
  EXPECT_TRUE(ctx.ok()) << (ctx.ok() ? "" : ctx.error().message);
  return ctx.ok() ? *ctx : nullptr;
}

// Moves ciphertext between the two streams until neither has anything to say.
struct Pipe {
  std::unique_ptr<TlsStream> client;
  std::unique_ptr<TlsStream> server;
  std::string client_plain, server_plain;
  bool client_ok = true, server_ok = true;

  void run() {
    for (int i = 0; i < 20; ++i) {
      std::string to_server, to_client;
      client->takeCiphertext(to_server);
      server->takeCiphertext(to_client);
      if (to_server.empty() && to_client.empty()) return;
      if (!to_server.empty() && server_ok)
        server_ok = server->receive(to_server, server_plain).ok();
      if (!to_client.empty() && client_ok)
        client_ok = client->receive(to_client, client_plain).ok();
    }
  }
};

Pipe connect(std::shared_ptr<const TlsContext> c, std::shared_ptr<const TlsContext> s,
             StreamOptions client_options = {}) {
  Pipe p;
  auto cs = TlsStream::create(std::move(c), Role::kClient, std::move(client_options));
  auto ss = TlsStream::create(std::move(s), Role::kServer);
  EXPECT_TRUE(cs.ok() && ss.ok());
  p.client = std::move(*cs);
  p.server = std::move(*ss);
  EXPECT_TRUE(p.client->start().ok());
  p.run();
  return p;
}

TEST(Spiffe, BuildsAndParsesIstioIds) {
  EXPECT_EQ(makeSpiffeId("cluster.local", "istio-demo", "bill"),
            "spiffe://cluster.local/ns/istio-demo/sa/bill");
  EXPECT_EQ(makeSpiffeId("td", "ns", ""), "spiffe://td/ns/ns/sa/default");
  auto id = parseSpiffeId("spiffe://cluster.local/ns/a/sa/b");
  ASSERT_TRUE(id);
  EXPECT_EQ(id->trust_domain, "cluster.local");
  EXPECT_EQ(id->namespace_name, "a");
  EXPECT_EQ(id->service_account, "b");
  EXPECT_EQ(id->principal(), "cluster.local/ns/a/sa/b");
  auto other = parseSpiffeId("spiffe://td/workload/x");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->namespace_name, "");
  EXPECT_FALSE(parseSpiffeId("https://cluster.local/ns/a/sa/b"));
  EXPECT_FALSE(parseSpiffeId("spiffe:///ns/a/sa/b"));
}

TEST(TlsContext, RefusesBadCredentials) {
  TestCa ca("test-ca");
  Credentials good = ca.issue(kClientId);
  EXPECT_TRUE(TlsContext::create(good, "cluster.local").ok());
  auto no_san = TlsContext::create(ca.issue(""), "cluster.local");
  ASSERT_FALSE(no_san.ok());
  EXPECT_NE(no_san.error().message.find("spiffe"), std::string::npos);
  Credentials mismatched = good;
  mismatched.key = ca.issue(kClientId).key;
  auto bad_key = TlsContext::create(mismatched, "cluster.local");
  ASSERT_FALSE(bad_key.ok());
  EXPECT_NE(bad_key.error().message.find("does not match"), std::string::npos);
  auto other_td = TlsContext::create(good, "example.org");
  EXPECT_FALSE(other_td.ok());
  const uint64_t expired_before = counters().own_cert_expired.load();
  auto expired = TlsContext::create(ca.issue(kClientId, -7200, -3600), "cluster.local");
  ASSERT_FALSE(expired.ok());
  EXPECT_NE(expired.error().message.find("expired"), std::string::npos);
  EXPECT_EQ(counters().own_cert_expired.load(), expired_before + 1);
  Credentials no_roots = good;
  no_roots.roots = "";
  EXPECT_FALSE(TlsContext::create(no_roots, "cluster.local").ok());
}

TEST(TlsStream, MutualHandshakeCarriesDataBothWays) {
  TestCa ca("test-ca");
  auto c = context(ca.issue(kClientId));
  auto s = context(ca.issue(kServerId));
  const uint64_t before = counters().handshakes_server.load();
  // Data sent before the handshake is held, then goes out encrypted.
  auto cs = TlsStream::create(c, Role::kClient, {kServerId, nullptr, ""});
  auto ss = TlsStream::create(s, Role::kServer);
  ASSERT_TRUE(cs.ok() && ss.ok());
  Pipe p;
  p.client = std::move(*cs);
  p.server = std::move(*ss);
  ASSERT_TRUE(p.client->send(std::string_view("GET / marker-123")).ok());
  ASSERT_TRUE(p.client->start().ok());
  std::string first;
  p.client->takeCiphertext(first);
  EXPECT_EQ(first[0], 0x16);  // a handshake record: what PERMISSIVE detection looks for
  EXPECT_EQ(first.find("marker-123"), std::string::npos);
  ASSERT_TRUE(p.server->receive(first, p.server_plain).ok());
  p.run();
  ASSERT_TRUE(p.client_ok && p.server_ok);
  EXPECT_TRUE(p.client->established());
  EXPECT_TRUE(p.server->established());
  EXPECT_EQ(p.server_plain, "GET / marker-123");
  EXPECT_EQ(p.server->peerIdentity(), kClientId);
  EXPECT_EQ(p.client->peerIdentity(), kServerId);
  ASSERT_TRUE(p.server->send(std::string_view("200 ok")).ok());
  p.run();
  EXPECT_EQ(p.client_plain, "200 ok");
  EXPECT_EQ(counters().handshakes_server.load(), before + 1);
  // close_notify ends the plaintext stream.
  p.client->close();
  p.run();
  EXPECT_TRUE(p.server->peerClosed());
}

TEST(TlsStream, TheServerSeesTheClientsAlpnOfferAndSelectsNothing) {
  TestCa ca("test-ca");
  auto c = context(ca.issue(kClientId));
  auto s = context(ca.issue(kServerId));
  StreamOptions offer{kServerId, nullptr, ""};
  offer.alpn = {"istio-http/1.1", "istio", "http/1.1"};
  Pipe p = connect(c, s, offer);
  ASSERT_TRUE(p.client_ok && p.server_ok);
  ASSERT_TRUE(p.server->established());
  EXPECT_EQ(p.server->offeredAlpn(), offer.alpn);
  // Without an offer there is nothing to see.
  Pipe none = connect(c, s, {kServerId, nullptr, ""});
  ASSERT_TRUE(none.server->established());
  EXPECT_TRUE(none.server->offeredAlpn().empty());
  // A name ALPN cannot carry is refused when the stream is made, never sent cut short.
  StreamOptions bad{kServerId, nullptr, ""};
  bad.alpn = {""};
  EXPECT_FALSE(TlsStream::create(c, Role::kClient, bad).ok());
}

// PERMISSIVE's ClientHello decision (StreamOptions::terminate_if): a server stream that waits for
// the whole hello, however it is split, and either terminates or hands every byte back untouched.
struct HelloDecision {
  std::vector<std::vector<std::string>> seen;  // what terminate_if was shown, per call
  std::unique_ptr<TlsStream> server;
  std::string plain;
};
HelloDecision decidingServer(const std::shared_ptr<const TlsContext>& s) {
  HelloDecision d;
  StreamOptions o;
  auto* seen = &d.seen;
  o.terminate_if = [seen](const std::vector<std::string>& offered) {
    seen->push_back(offered);
    for (const auto& p : offered) {
      if (p.rfind("istio", 0) == 0) return true;
    }
    return false;
  };
  auto ss = TlsStream::create(s, Role::kServer, std::move(o));
  EXPECT_TRUE(ss.ok());
  d.server = std::move(*ss);
  return d;
}
// The ClientHello of a client outside the mesh (no certificate, no SPIFFE check, TLS 1.2 allowed)
// offering `alpn`.
std::string foreignHello(const std::vector<std::string>& alpn) {
  auto ctx = clientContextFor("", "", "", false);
  EXPECT_TRUE(ctx.ok());
  StreamOptions o;
  o.sni = "app.example.com";
  o.alpn = alpn;
  auto c = TlsStream::create(*ctx, Role::kClient, o);
  EXPECT_TRUE(c.ok());
  EXPECT_TRUE((*c)->start().ok());
  std::string hello;
  (*c)->takeCiphertext(hello);
  return hello;
}

TEST(TlsStream, AHelloWithoutAnIstioAlpnSplitByteByByteIsHandedBackAsItCame) {
  TestCa ca("test-ca");
  auto s = context(ca.issue(kServerId));
  for (const std::vector<std::string>& alpn :
       {std::vector<std::string>{"h2", "http/1.1"}, std::vector<std::string>{}}) {
    const std::string hello = foreignHello(alpn);
    ASSERT_GT(hello.size(), 100u);
    HelloDecision d = decidingServer(s);
    // One byte per receive, as the worst TCP segmentation would bring it: no decision, no
    // failure and nothing sent until the last byte.
    for (size_t i = 0; i + 1 < hello.size(); ++i) {
      ASSERT_TRUE(d.server->receive(std::string_view(hello).substr(i, 1), d.plain).ok()) << i;
      ASSERT_FALSE(d.server->passedThrough()) << i;
    }
    EXPECT_TRUE(d.seen.empty());
    ASSERT_TRUE(d.server->receive(std::string_view(hello).substr(hello.size() - 1), d.plain).ok());
    EXPECT_TRUE(d.server->passedThrough());
    ASSERT_EQ(d.seen.size(), 1u);
    EXPECT_EQ(d.seen[0], alpn);
    EXPECT_FALSE(d.server->hasCiphertext()) << "nothing may reach a client that is not ours";
    EXPECT_EQ(d.server->takeReceived(), hello);
    // What follows is handed back too, never parsed.
    ASSERT_TRUE(d.server->receive(std::string_view("\x17\x03\x03\x00\x01x", 6), d.plain).ok());
    EXPECT_EQ(d.server->takeReceived(), std::string("\x17\x03\x03\x00\x01x", 6));
    EXPECT_TRUE(d.plain.empty());
    EXPECT_FALSE(d.server->established());
  }
}

TEST(TlsStream, AHelloWithAnIstioAlpnIsTerminatedAndNothingIsKept) {
  TestCa ca("test-ca");
  auto c = context(ca.issue(kClientId));
  HelloDecision d = decidingServer(context(ca.issue(kServerId)));
  StreamOptions offer{kServerId, nullptr, ""};
  offer.alpn = {"istio-peer-exchange", "istio"};
  auto cs = TlsStream::create(c, Role::kClient, offer);
  ASSERT_TRUE(cs.ok());
  Pipe p;
  p.client = std::move(*cs);
  p.server = std::move(d.server);
  ASSERT_TRUE(p.client->start().ok());
  p.run();
  ASSERT_TRUE(p.client_ok && p.server_ok);
  EXPECT_TRUE(p.server->established());
  EXPECT_FALSE(p.server->passedThrough());
  EXPECT_EQ(p.server->peerIdentity(), kClientId);
  ASSERT_EQ(d.seen.size(), 1u);
  EXPECT_EQ(d.seen[0], offer.alpn);
  EXPECT_TRUE(p.server->takeReceived().empty());
}

TEST(TlsStream, ATruncatedHelloWaitsAndGarbageOrAnOversizedHelloFails) {
  TestCa ca("test-ca");
  auto s = context(ca.issue(kServerId));
  const std::string hello = foreignHello({"http/1.1"});
  {
    HelloDecision d = decidingServer(s);
    ASSERT_TRUE(
        d.server->receive(std::string_view(hello).substr(0, hello.size() / 2), d.plain).ok());
    EXPECT_FALSE(d.server->passedThrough());
    EXPECT_EQ(d.server->failure(), Failure::kNone);
    EXPECT_TRUE(d.seen.empty());
  }
  {
    // A handshake record holding no ClientHello: a failed handshake, never passed on.
    HelloDecision d = decidingServer(s);
    EXPECT_FALSE(
        d.server->receive(std::string_view("\x16\x03\x01\x00\x05hello", 10), d.plain).ok());
    EXPECT_FALSE(d.server->passedThrough());
    EXPECT_EQ(d.server->failure(), Failure::kHandshake);
    EXPECT_TRUE(d.seen.empty());
  }
  {
    // A ClientHello claiming 100,000 bytes (OpenSSL would wait for up to 131,396): the stream
    // stops keeping bytes at kMaxClientHelloBytes.
    HelloDecision d = decidingServer(s);
    std::string body;
    body += '\x01';                          // ClientHello
    body += std::string("\x01\x86\xa0", 3);  // 100,000
    body += std::string("\x03\x03", 2);
    body.append(100000 - 2, '\0');
    bool failed = false;
    size_t fed = 0;
    for (size_t off = 0; off < body.size() && !failed; off += 16000) {
      const std::string chunk = body.substr(off, 16000);
      std::string record("\x16\x03\x01", 3);
      record += static_cast<char>(chunk.size() >> 8);
      record += static_cast<char>(chunk.size() & 0xff);
      record += chunk;
      fed += record.size();
      failed = !d.server->receive(record, d.plain).ok();
    }
    EXPECT_TRUE(failed);
    EXPECT_GT(fed, kMaxClientHelloBytes);
    EXPECT_LE(fed, kMaxClientHelloBytes + 16005);
    EXPECT_NE(d.server->error().find("ClientHello"), std::string::npos) << d.server->error();
    EXPECT_FALSE(d.server->passedThrough());
  }
}

TEST(TlsStream, LargeTransferSurvivesSplitRecords) {
  TestCa ca("test-ca");
  auto p = connect(context(ca.issue(kClientId)), context(ca.issue(kServerId)));
  std::string big(300000, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  ASSERT_TRUE(p.client->send(big).ok());
  std::string wire;
  p.client->takeCiphertext(wire);
  // Feed it one odd-sized piece at a time, as recvs would.
  for (size_t off = 0; off < wire.size(); off += 1000) {
    ASSERT_TRUE(p.server->receive(std::string_view(wire).substr(off, 1000), p.server_plain).ok());
  }
  EXPECT_EQ(p.server_plain, big);
}

TEST(TlsStream, UnexpectedPeerIdentityFails) {
  TestCa ca("test-ca");
  const uint64_t before = counters().failed_peer_identity.load();
  auto p = connect(context(ca.issue(kClientId)), context(ca.issue(kServerId)),
                   {"spiffe://cluster.local/ns/istio-demo/sa/other", nullptr, ""});
  EXPECT_FALSE(p.client_ok);
  EXPECT_EQ(p.client->failure(), Failure::kPeerIdentity);
  EXPECT_NE(p.client->error().find("not the expected"), std::string::npos);
  EXPECT_EQ(counters().failed_peer_identity.load(), before + 1);
}

TEST(TlsStream, PeerOutsideTrustDomainFails) {
  TestCa ca("test-ca");
  Credentials foreign = ca.issue("spiffe://example.org/ns/a/sa/b");
  auto p = connect(context(ca.issue(kClientId)), context(foreign, "example.org"));
  EXPECT_FALSE(p.client_ok);
  EXPECT_EQ(p.client->failure(), Failure::kPeerIdentity);
}

TEST(TlsStream, WrongCaIsRejected) {
  TestCa ca("test-ca");
  TestCa rogue("rogue-ca");
  const uint64_t before = counters().failed_unknown_ca.load();
  Credentials impostor = rogue.issue(kServerId);
  impostor.roots = ca.pem();  // it trusts our CA, but its own leaf is from another
  auto p = connect(context(ca.issue(kClientId)), context(impostor));
  EXPECT_FALSE(p.client_ok);
  EXPECT_FALSE(p.client->established());
  EXPECT_EQ(p.client->failure(), Failure::kUnknownCa);
  EXPECT_NE(p.client->error().find("does not verify"), std::string::npos);
  EXPECT_GE(counters().failed_unknown_ca.load(), before + 1);
}

// DestinationRule SIMPLE / MUTUAL: a client context made from the rule's files, TLS 1.2+, no
// SPIFFE check; the subjectAltNames decide. The server here is a mesh context (it requires a
// client certificate), which is what tells MUTUAL from SIMPLE.
std::shared_ptr<const TlsContext> clientContext(const ClientCredentials& c) {
  auto ctx = TlsContext::createClient(c);
  EXPECT_TRUE(ctx.ok()) << (ctx.ok() ? "" : ctx.error().message);
  return ctx.ok() ? *ctx : nullptr;
}

StreamOptions sans(std::vector<std::string> names) {
  StreamOptions o;
  o.sni = "bill.example.com";
  o.subject_alt_names = std::move(names);
  return o;
}

TEST(TlsStream, MutualOriginationPresentsTheRuleCertificateAndChecksSans) {
  TestCa ca("test-ca");
  const Credentials own = ca.issue(kClientId);
  auto client = clientContext({own.cert_chain, own.key, ca.pem(), true});
  ASSERT_TRUE(client);
  EXPECT_FALSE(client->mesh());
  auto p = connect(client, context(ca.issue(kServerId)), sans({"x", kServerId}));
  ASSERT_TRUE(p.client_ok && p.server_ok) << p.client->error() << p.server->error();
  EXPECT_TRUE(p.client->established());
  EXPECT_EQ(p.server->peerIdentity(), kClientId);
  ASSERT_TRUE(p.client->send(std::string_view("hello")).ok());
  p.run();
  EXPECT_EQ(p.server_plain, "hello");
}

TEST(TlsStream, OriginationWithAWrongSubjectAltNameFails) {
  TestCa ca("test-ca");
  const Credentials own = ca.issue(kClientId);
  const uint64_t before = counters().failed_subject_alt_name.load();
  auto p = connect(clientContext({own.cert_chain, own.key, ca.pem(), true}),
                   context(ca.issue(kServerId)), sans({"other.example.com"}));
  EXPECT_FALSE(p.client_ok);
  EXPECT_EQ(p.client->failure(), Failure::kSubjectAltName);
  EXPECT_NE(p.client->error().find("SANs [" + std::string(kServerId) +
                                   "] match none of the DestinationRule's subjectAltNames "
                                   "[other.example.com]"),
            std::string::npos)
      << p.client->error();
  EXPECT_EQ(counters().failed_subject_alt_name.load(), before + 1);
}

TEST(TlsStream, SimpleOriginationToAServerRequiringACertificateFails) {
  TestCa ca("test-ca");
  auto p = connect(clientContext({"", "", ca.pem(), true}), context(ca.issue(kServerId)), sans({}));
  EXPECT_FALSE(p.server_ok);
  EXPECT_FALSE(p.client_ok) << "the client must see the server's alert";
}

TEST(TlsStream, InsecureSkipVerifyAcceptsAnyChainAndIgnoresSans) {
  TestCa ca("test-ca");
  TestCa rogue("rogue-ca");
  const Credentials own = ca.issue(kClientId);
  auto p = connect(clientContext({own.cert_chain, own.key, rogue.pem(), false}),
                   context(ca.issue(kServerId)), sans({"nothing-matches"}));
  EXPECT_TRUE(p.client_ok && p.server_ok) << p.client->error();
  EXPECT_TRUE(p.client->established());
  // The same with verification: the chain does not lead to the rule's roots.
  auto q = connect(clientContext({own.cert_chain, own.key, rogue.pem(), true}),
                   context(ca.issue(kServerId)), sans({}));
  EXPECT_EQ(q.client->failure(), Failure::kUnknownCa);
}

TEST(TlsStream, SetupErrorFailsTheStartNeverPlaintext) {
  auto ctx = clientContextFor("", "", "", false);
  ASSERT_TRUE(ctx.ok());
  StreamOptions o;
  o.setup_error = "DestinationRule files: /x/key.pem: no such file";
  const uint64_t before = counters().failed_config.load();
  auto s = TlsStream::create(*ctx, Role::kClient, o);
  ASSERT_TRUE(s.ok());
  auto started = (*s)->start();
  EXPECT_FALSE(started.ok());
  EXPECT_EQ((*s)->failure(), Failure::kConfig);
  EXPECT_EQ(counters().failed_config.load(), before + 1);
  // A missing file is an error naming it.
  auto missing = clientContextFor("/nonexistent/c.pem", "/nonexistent/k.pem", "", true);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("/nonexistent/c.pem"), std::string::npos)
      << missing.error().message;
}

TEST(TlsStream, ExpiredPeerCertificateIsAClearError) {
  TestCa ca("test-ca");
  // Valid when loaded, expired at the handshake: the way a missed rotation looks.
  auto server = context(ca.issue(kServerId, -60, 1));
  ASSERT_TRUE(server);
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  const uint64_t before = counters().failed_cert_expired.load();
  auto p = connect(context(ca.issue(kClientId)), server);
  EXPECT_FALSE(p.client_ok);
  EXPECT_EQ(p.client->failure(), Failure::kCertExpired);
  EXPECT_NE(p.client->error().find("expired"), std::string::npos);
  EXPECT_GE(counters().failed_cert_expired.load(), before + 1);
}

TEST(TlsStream, PlaintextClientFailsTheServerHandshake) {
  TestCa ca("test-ca");
  auto ss = TlsStream::create(context(ca.issue(kServerId)), Role::kServer);
  ASSERT_TRUE(ss.ok());
  std::string plain;
  EXPECT_FALSE((*ss)->receive(std::string_view("GET / HTTP/1.1\r\n\r\n"), plain).ok());
  EXPECT_EQ((*ss)->failure(), Failure::kHandshake);
  EXPECT_TRUE(plain.empty());
}

TEST(TlsStream, ClientResumesWithItsSessionCache) {
  TestCa ca("test-ca");
  auto c = context(ca.issue(kClientId));
  auto s = context(ca.issue(kServerId));
  SessionCache cache;
  auto first = connect(c, s, {kServerId, &cache, "10.0.0.1:80"});
  ASSERT_TRUE(first.client_ok && first.server_ok);
  EXPECT_FALSE(first.client->resumed());
  // TLS 1.3 tickets arrive after the handshake, with the server's first flight.
  ASSERT_TRUE(first.server->send(std::string_view("hi")).ok());
  first.run();
  EXPECT_EQ(cache.size(), 1U);
  const uint64_t resumed = counters().resumed.load();
  auto second = connect(c, s, {kServerId, &cache, "10.0.0.1:80"});
  ASSERT_TRUE(second.client_ok && second.server_ok);
  EXPECT_TRUE(second.client->resumed());
  EXPECT_EQ(second.client->peerIdentity(), kServerId);
  EXPECT_EQ(counters().resumed.load(), resumed + 1);
}

TEST(IdentityStore, RotationSwapsForNewHandshakesOnly) {
  TestCa ca("test-ca");
  const auto dir =
      std::filesystem::temp_directory_path() / ("remora-tls-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&dir](const Credentials& c) {
    for (auto [name, text] : {std::pair{kCertChainFile, &c.cert_chain}, std::pair{kKeyFile, &c.key},
                              std::pair{kRootCertFile, &c.roots}}) {
      const auto tmp = dir / (std::string(name) + ".tmp");
      std::ofstream(tmp) << *text;
      std::filesystem::rename(tmp, dir / name);  // as kubelet's atomic writer swaps them
    }
  };
  write(ca.issue(kServerId));
  IdentityStore store(dir, "cluster.local");
  ASSERT_TRUE(store.reload().ok());
  auto old_ctx = store.current();
  auto client = context(ca.issue(kClientId));
  auto open = connect(client, old_ctx);
  ASSERT_TRUE(open.client_ok && open.server_ok);

  EXPECT_FALSE(store.reloadIfChanged());
  const uint64_t rotations = counters().rotations.load();
  write(ca.issue("spiffe://cluster.local/ns/istio-demo/sa/bill-v2"));
  EXPECT_TRUE(store.reloadIfChanged());
  EXPECT_EQ(counters().rotations.load(), rotations + 1);
  EXPECT_EQ(store.current()->identity(), "spiffe://cluster.local/ns/istio-demo/sa/bill-v2");
  // The open connection keeps working on its old context.
  ASSERT_TRUE(open.client->send(std::string_view("still here")).ok());
  open.run();
  EXPECT_EQ(open.server_plain, "still here");
  auto fresh = connect(client, store.current());
  ASSERT_TRUE(fresh.client_ok && fresh.server_ok);
  EXPECT_EQ(fresh.client->peerIdentity(), "spiffe://cluster.local/ns/istio-demo/sa/bill-v2");

  // Broken files: a clear error, the previous context stays.
  std::ofstream(dir / kKeyFile) << "garbage";
  EXPECT_FALSE(store.reloadIfChanged());
  EXPECT_NE(store.lastError().find("key.pem"), std::string::npos);
  EXPECT_EQ(store.current()->identity(), "spiffe://cluster.local/ns/istio-demo/sa/bill-v2");
  std::filesystem::remove_all(dir);
}

// The watcher follows the directory with inotify: a kubelet projected volume's `..data`
// symlink swap reaches new handshakes long before the fallback polling period (one minute
// here) would; a broken set swapped in the same way keeps the previous context.
TEST(IdentityStore, WatchFollowsAKubeletDataSymlinkSwapAndKeepsTheOldContextOnABadSet) {
  namespace fs = std::filesystem;
  TestCa ca("test-ca");
  const auto dir = fs::temp_directory_path() / ("remora-tls-watch-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  int version = 0;
  // Writes a timestamped directory and swaps `..data` to it by rename, as kubelet's
  // AtomicWriter does; the visible names are symlinks through `..data`.
  auto publish = [&](const std::string& chain, const std::string& key, const std::string& roots) {
    const std::string ts = "..v" + std::to_string(++version);
    fs::create_directories(dir / ts);
    std::ofstream(dir / ts / kCertChainFile) << chain;
    std::ofstream(dir / ts / kKeyFile) << key;
    std::ofstream(dir / ts / kRootCertFile) << roots;
    fs::create_directory_symlink(ts, dir / "..data_tmp");
    fs::rename(dir / "..data_tmp", dir / "..data");
    for (const char* name : {kCertChainFile, kKeyFile, kRootCertFile}) {
      if (!fs::is_symlink(dir / name)) fs::create_symlink(fs::path("..data") / name, dir / name);
    }
  };
  auto waitFor = [](auto pred) {
    for (int i = 0; i < 300 && !pred(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
  };
  const Credentials first = ca.issue(kServerId);
  publish(first.cert_chain, first.key, first.roots);
  {
    IdentityStore store(dir, "cluster.local");
    ASSERT_TRUE(store.reload().ok());
    ASSERT_TRUE(store.watch(std::chrono::minutes(1))) << "inotify unavailable";
    const std::string next_id = "spiffe://cluster.local/ns/istio-demo/sa/bill-v3";
    const Credentials next = ca.issue(next_id);
    publish(next.cert_chain, next.key, next.roots);
    EXPECT_TRUE(waitFor([&] { return store.current()->identity() == next_id; }))
        << "the ..data swap was not seen within 3 s";

    const uint64_t events = store.watchEvents();
    publish(next.cert_chain, "not a key", next.roots);
    EXPECT_TRUE(waitFor([&] { return !store.lastError().empty(); }));
    EXPECT_GT(store.watchEvents(), events);
    EXPECT_NE(store.lastError().find("key.pem"), std::string::npos) << store.lastError();
    EXPECT_EQ(store.current()->identity(), next_id);  // the old context stays
  }  // destruction stops the watcher at once (no hang on a blocking poll)
  fs::remove_all(dir);
}

}  // namespace
}  // namespace remora::tls
