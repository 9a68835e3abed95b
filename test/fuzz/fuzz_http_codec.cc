// libFuzzer target: the L7 HTTP/1.1 codec (remora::http). For the bytes one side of a
// connection sends, it checks that
//  - the parser ends the same way fed whole and fed in pieces (same messages, same error);
//  - whatever it accepts libhttp-parser frames the same way (same bodies, message by message)
//    where that parser accepts it too: no message boundary a mainstream parser would draw
//    differently, the request-smuggling property (responses: answers to GET, then the close);
//  - every head it accepts, once written by the serializer, parses back to the same request
//    (method, path, query, authority, framing) or response (status, framing).
//
// Input: the first byte picks the side (bit 7: response) and the piece size of the second feed
// (1 + low 6 bits); the rest is the byte stream.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "../unit/http_transcript.h"
#include "http/codec.h"

namespace rh = remora::http;
namespace rt = remora::http::testing;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

bool hasField(const rt::Message& m, std::string_view name) {
  for (const auto& [n, v] : m.headers) {
    if (rh::equalsIgnoreCase(n, name)) return true;
  }
  return false;
}

// libhttp-parser 2.9.4 takes any field name that starts with "Transfer-Encoding"
// ("Transfer-Encodingx: 1") for Transfer-Encoding; the codec reads the name whole.
bool hasTransferEncodingLookalike(const rt::Message& m) {
  constexpr std::string_view kTe = "transfer-encoding";
  for (const auto& [n, v] : m.headers) {
    if (n.size() > kTe.size() &&
        rh::equalsIgnoreCase(std::string_view(n).substr(0, kTe.size()), kTe)) {
      return true;
    }
  }
  return false;
}

// The messages libhttp-parser also accepts are framed the same way.
void compareWithHttpParser(std::string_view bytes, const rt::Transcript& t, bool response) {
  rt::HttpParserOpinion o = rt::httpParserOpinion(bytes, response);
  if (!o.ok) return;
  size_t n = 0;
  for (const rt::Message& m : t.messages) {
    if (!m.complete || m.upgrade || rt::hasContentLengthList(m) ||
        hasTransferEncodingLookalike(m)) {
      break;
    }
    // libhttp-parser reads a body announced by Content-Length or Transfer-Encoding on a 1xx,
    // 204 or 304; RFC 9110 15.2, 15.3.5 and 15.4.5 say they have none, as the codec does.
    if (response && m.framing == rh::Framing::kNone && m.status != 0 &&
        (m.content_length > 0 || hasField(m, "transfer-encoding"))) {
      break;
    }
    if (n >= o.bodies.size()) break;
    check(o.bodies[n] == m.body);
    ++n;
  }
}

// Writes each accepted head and parses it again.
void roundTrip(rh::Parser::Kind kind, std::string_view bytes) {
  rh::Parser p(kind);
  std::string_view rest = bytes;
  for (int guard = 0; guard < 10000; ++guard) {
    rh::Step s = p.feed(rest);
    rest.remove_prefix(s.consumed);
    if (s.event == rh::Event::kError) return;
    if (s.event == rh::Event::kNeedMore && rest.empty()) return;
    if (s.event != rh::Event::kHead) continue;
    const rh::MessageHead& h = p.head();
    std::string out;
    if (kind == rh::Parser::Kind::kRequest) {
      rh::writeRequestHead(h, {}, out);
    } else {
      rh::writeResponseHead(h, {}, out);
    }
    // The writer may add a `connection` line (an upgrade, a close): the re-parse allows for it,
    // so a head right at the field-count limit still round-trips.
    rh::Limits room;
    room.max_headers += 2;
    room.max_header_bytes += 64;
    rh::Parser again(kind, room);
    rh::Step s2 = again.feed(out);
    check(s2.event == rh::Event::kHead && s2.consumed == out.size());
    const rh::MessageHead& g = again.head();
    check(g.framing() == h.framing() && g.upgrade() == h.upgrade());
    if (kind == rh::Parser::Kind::kRequest) {
      check(g.method() == h.method() && g.path() == h.path() && g.query() == h.query() &&
            g.authority() == h.authority() && g.contentLength() == h.contentLength());
    } else {
      check(g.status() == h.status());
    }
  }
}

}  // namespace

// NOLINTNEXTLINE(readability-identifier-naming): libFuzzer's entry point
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  auto kind = (data[0] & 0x80) != 0 ? rh::Parser::Kind::kResponse : rh::Parser::Kind::kRequest;
  size_t piece = 1 + (data[0] & 0x3f);
  std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);

  rt::Transcript whole = rt::runWhole(kind, bytes);
  rt::Transcript pieces = rt::run(kind, bytes, [&](size_t) { return piece; });
  check(whole == pieces);
  check(rh::errorName(whole.error) != "unknown");
  compareWithHttpParser(bytes, whole, kind == rh::Parser::Kind::kResponse);
  roundTrip(kind, bytes);
  return 0;
}
