// libFuzzer target: the server side of a sidecar's TLS as a PERMISSIVE port meets it
// (remora::tls::TlsStream with `terminate_if`): a client's first bytes, whatever they are, go
// through OpenSSL's ClientHello parsing, the ClientHello callback's reading of the ALPN
// extension and the decision on it, with the client's bytes kept until the hello is decided.
// It checks that
//  - a stream that passes the connection through gives back exactly the bytes it was handed,
//    in order, so the app's own TLS reaches it untouched;
//  - the offer the decision saw is well-formed: names of 1 to 255 bytes;
//  - feeding the bytes whole and in pieces ends the same way (passed through or not).
//
// Input: the first byte is the piece size of the second feed (1 + the byte); the rest is what
// the client sends.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../unit/tls_test_certs.h"
#include "tls/tls_context.h"
#include "tls/tls_stream.h"

namespace rtls = remora::tls;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

std::shared_ptr<const rtls::TlsContext> serverContext() {
  static const std::shared_ptr<const rtls::TlsContext> kContext = [] {
    rtls::testing::TestCa ca("fuzz-ca");
    auto context = rtls::TlsContext::create(ca.issue("spiffe://cluster.local/ns/fuzz/sa/server"),
                                            "cluster.local");
    check(context.ok());
    return *context;
  }();
  return kContext;
}

struct Outcome {
  bool passed = false;
  bool failed = false;
};

// Feeds `bytes` in pieces of `piece` bytes to a new PERMISSIVE server stream.
Outcome feed(std::string_view bytes, size_t piece) {
  rtls::StreamOptions options;
  options.terminate_if = [](const std::vector<std::string>& offered) {
    for (const std::string& name : offered) check(!name.empty() && name.size() <= 255);
    // Istio's mesh ALPN means mesh mTLS (the proxy's own rule lives in the sniffer; any
    // decision exercises the same paths).
    for (const std::string& name : offered) {
      if (name.rfind("istio", 0) == 0) return true;
    }
    return false;
  };
  auto stream = rtls::TlsStream::create(serverContext(), rtls::Role::kServer, options);
  check(stream.ok());
  check((*stream)->start().ok());
  Outcome out;
  std::string plain;
  size_t handed = 0;
  for (size_t at = 0; at < bytes.size() && !out.passed && !out.failed; at += piece) {
    std::string_view chunk = bytes.substr(at, piece);
    handed += chunk.size();
    auto r = (*stream)->receive(std::span<const char>(chunk.data(), chunk.size()), plain);
    out.failed = !r.ok();
    out.passed = (*stream)->passedThrough();
    std::string ciphertext;
    (*stream)->takeCiphertext(ciphertext);
    // Nothing goes back to a client whose connection is passed through.
    if (out.passed) check(ciphertext.empty());
  }
  if (out.passed) {
    // Every byte handed so far, in order: the app gets the client's stream untouched.
    check((*stream)->takeReceived() == bytes.substr(0, handed));
  }
  return out;
}

}  // namespace

// NOLINTNEXTLINE(readability-identifier-naming): libFuzzer's entry point
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t piece = 1 + data[0];
  std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  const Outcome whole = feed(bytes, bytes.size() + 1);
  const Outcome pieces = feed(bytes, piece);
  // A decision depends on the whole hello, never on how it was split into reads.
  check(whole.passed == pieces.passed);
  return 0;
}
