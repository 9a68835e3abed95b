// remora::http codec: the RFC 9112 conformance table (each smuggling defence and each framing
// case), split invariance (whole, byte by byte, random cuts), pipelining, the serializers and
// local replies, the sniffer, and libhttp-parser as a second opinion on accepted requests.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <string>

#include "http/codec.h"
#include "http_transcript.h"

namespace remora::http {
namespace {

using testing::Message;
using testing::run;
using testing::runWhole;
using testing::Transcript;
using Kind = Parser::Kind;

std::string rep(char c, size_t n) { return std::string(n, c); }

// ---------------------------------------------------------------------------------------------
// Conformance table: requests.

struct Case {
  const char* name;
  std::string input;
  ParseError error;  // kNone: accepted
};

std::vector<Case> requestCases() {
  const std::string post = "POST /p HTTP/1.1\r\nHost: a\r\n";
  const std::string chunked_post = post + "Transfer-Encoding: chunked\r\n\r\n";
  std::string many_headers = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 100; ++i) many_headers += "X-" + std::to_string(i) + ": v\r\n";
  std::string hundred_headers = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 99; ++i) hundred_headers += "X-" + std::to_string(i) + ": v\r\n";
  hundred_headers += "Host: a\r\n\r\n";
  return {
      // Accepted.
      {"simple get", "GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com\r\n\r\n", ParseError::kNone},
      {"content-length body", post + "Content-Length: 5\r\n\r\nhello", ParseError::kNone},
      {"content-length zero", post + "Content-Length: 0\r\n\r\n", ParseError::kNone},
      {"chunked", chunked_post + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", ParseError::kNone},
      {"chunked upper hex, ext, trailer",
       chunked_post + "A;name=\"v\" ; x\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
       ParseError::kNone},
      {"chunked, case-insensitive coding",
       post + "transfer-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", ParseError::kNone},
      {"gzip then chunked", post + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
       ParseError::kNone},
      {"identical content-length list", post + "Content-Length: 3, 3\r\n\r\nabc",
       ParseError::kNone},
      {"identical content-length fields",
       post + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", ParseError::kNone},
      {"http/1.0 without host", "GET / HTTP/1.0\r\n\r\n", ParseError::kNone},
      {"absolute-form", "GET http://svc.ns:8080/x?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
       ParseError::kNone},
      {"connect", "CONNECT svc:443 HTTP/1.1\r\nHost: svc:443\r\n\r\n", ParseError::kNone},
      {"options *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", ParseError::kNone},
      {"leading empty line", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", ParseError::kNone},
      {"expect 100-continue", post + "Expect: 100-Continue\r\nContent-Length: 1\r\n\r\nx",
       ParseError::kNone},
      {"websocket upgrade",
       "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: "
       "websocket\r\n\r\n",
       ParseError::kNone},
      {"obs-text and tab in value", "GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\tok\r\n\r\n",
       ParseError::kNone},
      {"empty value, no space", "GET / HTTP/1.1\r\nHost:a\r\nX-Empty:\r\n\r\n", ParseError::kNone},
      {"100 fields", hundred_headers, ParseError::kNone},
      // A longer name is another field (libhttp-parser 2.9.4 takes it for Transfer-Encoding).
      {"transfer-encoding lookalike", post + "Transfer-Encodingx: 1\r\nContent-Length: 2\r\n\r\nhi",
       ParseError::kNone},
      // CL / TE (RFC 9112 6.1, 6.3).
      {"cl then te", post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       ParseError::kContentLengthWithTransferEncoding},
      {"te then cl", post + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
       ParseError::kContentLengthWithTransferEncoding},
      {"differing cl list", post + "Content-Length: 3, 4\r\n\r\nabcd",
       ParseError::kConflictingContentLength},
      {"differing cl fields", post + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
       ParseError::kConflictingContentLength},
      {"negative cl", post + "Content-Length: -1\r\n\r\n", ParseError::kInvalidContentLength},
      {"plus cl", post + "Content-Length: +5\r\n\r\nhello", ParseError::kInvalidContentLength},
      {"hex cl", post + "Content-Length: 0x5\r\n\r\nhello", ParseError::kInvalidContentLength},
      {"cl with inner space", post + "Content-Length: 5 5\r\n\r\n",
       ParseError::kInvalidContentLength},
      {"empty cl", post + "Content-Length:\r\n\r\n", ParseError::kInvalidContentLength},
      {"empty cl list element", post + "Content-Length: 5,\r\n\r\n",
       ParseError::kInvalidContentLength},
      {"cl trailing space", post + "Content-Length: 5 \r\n\r\nhello",
       ParseError::kInvalidContentLength},
      {"cl overflow", post + "Content-Length: 99999999999999999999\r\n\r\n",
       ParseError::kInvalidContentLength},
      {"te trailing space", post + "Transfer-Encoding: chunked \r\n\r\n0\r\n\r\n",
       ParseError::kBadTransferEncoding},
      {"te trailing tab", post + "Transfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n",
       ParseError::kBadTransferEncoding},
      {"te xchunked", post + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
       ParseError::kBadTransferEncoding},
      {"te chunked, identity", post + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
       ParseError::kBadTransferEncoding},
      {"te identity", post + "Transfer-Encoding: identity\r\n\r\n",
       ParseError::kBadTransferEncoding},
      {"te chunked twice", post + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
       ParseError::kBadTransferEncoding},
      {"te with parameter", post + "Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n",
       ParseError::kBadTransferEncoding},
      {"te empty element", post + "Transfer-Encoding: , chunked\r\n\r\n0\r\n\r\n",
       ParseError::kBadTransferEncoding},
      {"te vertical tab",
       post + "Transfer-Encoding: \x0b"
              "chunked\r\n\r\n0\r\n\r\n",
       ParseError::kInvalidHeaderValue},
      {"duplicate te fields",
       post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       ParseError::kBadTransferEncoding},
      {"te space before colon", post + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
       ParseError::kWhitespaceBeforeColon},
      {"te tab before colon", post + "Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
       ParseError::kWhitespaceBeforeColon},
      {"te in http/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       ParseError::kBadTransferEncoding},
      // Field syntax.
      {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", ParseError::kObsFold},
      {"obs-fold tab", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", ParseError::kObsFold},
      {"first field folded", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", ParseError::kObsFold},
      {"name with (", "GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n",
       ParseError::kInvalidHeaderName},
      {"name with DEL", "GET / HTTP/1.1\r\nHost: a\r\nX\x7f: 1\r\n\r\n",
       ParseError::kInvalidHeaderName},
      {"name with utf-8", "GET / HTTP/1.1\r\nHost: a\r\n\xc3\xa9: 1\r\n\r\n",
       ParseError::kInvalidHeaderName},
      {"name with inner space", "GET / HTTP/1.1\r\nHost: a\r\nX Y: 1\r\n\r\n",
       ParseError::kInvalidHeaderName},
      {"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", ParseError::kInvalidHeaderName},
      {"no colon", "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", ParseError::kMissingColon},
      {"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
       ParseError::kWhitespaceBeforeColon},
      {"control byte in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n",
       ParseError::kInvalidHeaderValue},
      {"DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fz\r\n\r\n",
       ParseError::kInvalidHeaderValue},
      // Line endings and NUL.
      {"bare cr in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", ParseError::kBareCr},
      {"bare cr ends field", "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", ParseError::kBareCr},
      {"bare cr in request line", "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", ParseError::kBareCr},
      {"cr cr lf ends head", "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", ParseError::kBareCr},
      {"bare lf request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", ParseError::kBareLf},
      {"bare lf field", "GET / HTTP/1.1\r\nHost: a\n\r\n", ParseError::kBareLf},
      {"bare lf ends head", "GET / HTTP/1.1\r\nHost: a\r\n\n", ParseError::kBareLf},
      {"nul in value", std::string("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 34),
       ParseError::kNulByte},
      {"nul in target", std::string("GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n", 31),
       ParseError::kNulByte},
      // Chunks.
      {"chunk size not hex", chunked_post + "zz\r\nhello\r\n0\r\n\r\n",
       ParseError::kInvalidChunkSize},
      {"chunk size empty", chunked_post + "\r\nhello\r\n0\r\n\r\n", ParseError::kInvalidChunkSize},
      {"chunk size negative", chunked_post + "-5\r\nhello\r\n0\r\n\r\n",
       ParseError::kInvalidChunkSize},
      {"chunk size 0x", chunked_post + "0x5\r\nhello\r\n0\r\n\r\n",
       ParseError::kInvalidChunkExtension},
      {"chunk size overflow", chunked_post + "10000000000000000\r\nx\r\n0\r\n\r\n",
       ParseError::kInvalidChunkSize},
      {"chunk sizes in every hex digit",
       chunked_post + "F\r\n" + rep('a', 15) + "\r\nf\r\n" + rep('b', 15) + "\r\n1aB\r\n" +
           rep('c', 0x1ab) + "\r\n9\r\n" + rep('d', 9) + "\r\n0\r\n\r\n",
       ParseError::kNone},
      {"chunk size with leading zeros", chunked_post + "0000005\r\nhello\r\n0\r\n\r\n",
       ParseError::kNone},
      {"chunk ext without ;", chunked_post + "5 a\r\nhello\r\n0\r\n\r\n",
       ParseError::kInvalidChunkExtension},
      {"chunk ext control byte", chunked_post + "5;a\x01\r\nhello\r\n0\r\n\r\n",
       ParseError::kInvalidChunkExtension},
      {"chunk ext too long", chunked_post + "5;" + rep('a', 5000) + "\r\nhello\r\n0\r\n\r\n",
       ParseError::kInvalidChunkExtension},
      {"bare cr in chunk line", chunked_post + "5\rXhello\r\n0\r\n\r\n", ParseError::kBareCr},
      {"bare lf in chunk line", chunked_post + "5\nhello\r\n0\r\n\r\n", ParseError::kBareLf},
      {"chunk data too long", chunked_post + "5\r\nhelloXX\r\n0\r\n\r\n",
       ParseError::kMissingChunkEnd},
      {"chunk data bare lf", chunked_post + "5\r\nhello\n0\r\n\r\n", ParseError::kBareLf},
      {"chunk data cr then x", chunked_post + "5\r\nhello\rX0\r\n\r\n", ParseError::kBareCr},
      {"trailer obs-fold", chunked_post + "0\r\nX: a\r\n b\r\n\r\n", ParseError::kObsFold},
      {"trailer content-length", chunked_post + "0\r\nContent-Length: 5\r\n\r\n",
       ParseError::kInvalidHeaderName},
      {"trailer bare lf", chunked_post + "0\r\nX: a\n\r\n", ParseError::kBareLf},
      // Request line and version.
      {"http/0.9", "GET /\r\n", ParseError::kBadRequestLine},
      {"http/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", ParseError::kUnsupportedVersion},
      {"http/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", ParseError::kUnsupportedVersion},
      {"http/0.9 with version text", "GET / HTTP/0.9\r\n\r\n", ParseError::kUnsupportedVersion},
      {"lowercase version", "GET / http/1.1\r\nHost: a\r\n\r\n", ParseError::kBadRequestLine},
      {"version with trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
       ParseError::kBadRequestLine},
      {"double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", ParseError::kBadRequestLine},
      {"bad method char", "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", ParseError::kBadRequestLine},
      {"relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", ParseError::kBadRequestLine},
      {"userinfo in absolute-form", "GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n",
       ParseError::kBadRequestLine},
      {"connect with path", "CONNECT h:1/x HTTP/1.1\r\nHost: h\r\n\r\n",
       ParseError::kBadRequestLine},
      {"tab in target", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", ParseError::kBadRequestLine},
      // A fragment is never part of a request-target (RFC 9112 3.2); Envoy refuses it by
      // default, since a route or policy matched on a path with "#..." could be bypassed.
      {"fragment in path", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", ParseError::kBadRequestLine},
      {"fragment after query", "GET /a?x=1#b HTTP/1.1\r\nHost: a\r\n\r\n",
       ParseError::kBadRequestLine},
      {"fragment in absolute-form", "GET http://h/a#b HTTP/1.1\r\nHost: h\r\n\r\n",
       ParseError::kBadRequestLine},
      {"fragment after authority", "GET http://h#b HTTP/1.1\r\nHost: h\r\n\r\n",
       ParseError::kBadRequestLine},
      // Host.
      {"missing host", "GET / HTTP/1.1\r\n\r\n", ParseError::kMissingHost},
      {"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", ParseError::kConflictingHost},
      {"host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", ParseError::kConflictingHost},
      {"host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", ParseError::kConflictingHost},
      // Limits.
      {"request line at limit", "GET /" + rep('a', 8192 - 14) + " HTTP/1.1\r\nHost: a\r\n\r\n",
       ParseError::kNone},
      {"request line over limit", "GET /" + rep('a', 8192 - 13) + " HTTP/1.1\r\nHost: a\r\n\r\n",
       ParseError::kRequestLineTooLong},
      {"101 fields", many_headers + "\r\n", ParseError::kTooManyHeaders},
      {"head over 60 KiB", "GET / HTTP/1.1\r\nHost: a\r\nX: " + rep('v', 61 * 1024) + "\r\n\r\n",
       ParseError::kHeadersTooLarge},
      {"endless empty lines",
       [] {
         std::string s;
         for (int i = 0; i < 40000; ++i) s += "\r\n";
         return s;
       }(),
       ParseError::kHeadersTooLarge},
  };
}

TEST(HttpCodecConformance, RequestTable) {
  for (const Case& c : requestCases()) {
    Transcript t = runWhole(Kind::kRequest, c.input, false);
    EXPECT_EQ(errorName(t.error), errorName(c.error)) << c.name;
    if (c.error == ParseError::kNone) {
      ASSERT_EQ(t.messages.size(), 1u) << c.name;
      EXPECT_TRUE(t.messages[0].complete) << c.name;
    }
  }
}

// The same transcript whatever the cuts: whole, byte by byte, and random pieces.
TEST(HttpCodecConformance, SplitAnywhere) {
  std::mt19937 rng(42);
  for (const Case& c : requestCases()) {
    Transcript whole = runWhole(Kind::kRequest, c.input);
    Transcript bytes = run(Kind::kRequest, c.input, [](size_t) { return 1; });
    EXPECT_EQ(whole, bytes) << c.name << " byte by byte";
    for (int round = 0; round < 5; ++round) {
      Transcript random = run(Kind::kRequest, c.input, [&](size_t) { return 1 + rng() % 13; });
      EXPECT_EQ(whole, random) << c.name << " random cuts, round " << round;
    }
  }
}

// What remora::http accepts, Debian's libhttp-parser (lenient as built) accepts too, with the
// same body: the strict codec never frames a message differently from a mainstream parser.
TEST(HttpCodecConformance, LibHttpParserAgreesOnAcceptedRequests) {
  for (const Case& c : requestCases()) {
    if (c.error != ParseError::kNone) continue;
    Transcript t = runWhole(Kind::kRequest, c.input, false);
    ASSERT_EQ(t.messages.size(), 1u) << c.name;
    if (t.messages[0].upgrade) continue;  // libhttp-parser stops at an upgrade
    if (std::string_view(c.name) == "transfer-encoding lookalike") continue;  // its bug
    if (testing::hasContentLengthList(t.messages[0])) {
      continue;  // it refuses a repeated Content-Length, which RFC 9110 8.6 allows if identical
    }
    testing::HttpParserOpinion o = testing::httpParserOpinion(c.input);
    EXPECT_TRUE(o.ok) << c.name;
    ASSERT_EQ(o.bodies.size(), 1u) << c.name;
    EXPECT_EQ(o.bodies[0], t.messages[0].body) << c.name;
  }
}

TEST(HttpCodecConformance, LimitsAreConfigurable) {
  Limits small;
  small.max_start_line = 20;
  small.max_headers = 2;
  small.max_header_bytes = 80;
  small.max_chunk_line = 8;
  auto error = [&](const std::string& in) {
    return errorName(run(
                         Kind::kRequest, in, [&](size_t) { return in.size(); }, false, {}, small)
                         .error);
  };
  EXPECT_EQ(error("GET /012345 HTTP/1.1\r\nHost: a\r\n\r\n"), "none");  // 20 bytes
  EXPECT_EQ(error("GET /0123456 HTTP/1.1\r\nHost: a\r\n\r\n"), "request_line_too_long");
  EXPECT_EQ(error("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n"), "none");
  EXPECT_EQ(error("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nY: 2\r\n\r\n"), "too_many_headers");
  EXPECT_EQ(error("GET / HTTP/1.1\r\nHost: a\r\nX: " + rep('v', 60) + "\r\n\r\n"),
            "headers_too_large");
  const std::string chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  EXPECT_EQ(error(chunked + "1;abcde\r\nx\r\n0\r\n\r\n"), "none");  // 7 bytes
  EXPECT_EQ(error(chunked + "1;abcdefgh\r\nx\r\n0\r\n\r\n"), "invalid_chunk_extension");
}

TEST(HttpCodecHead, RequestFields) {
  Transcript t = runWhole(Kind::kRequest,
                          "GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com:8080\r\nX-A:  v1 \r\n\r\n");
  ASSERT_EQ(t.messages.size(), 1u);
  const Message& m = t.messages[0];
  EXPECT_EQ(m.method, "GET");
  EXPECT_EQ(m.target, "/a/b?x=1&y");
  EXPECT_EQ(m.path, "/a/b");
  EXPECT_EQ(m.query, "x=1&y");
  EXPECT_EQ(m.authority, "example.com:8080");
  EXPECT_EQ(m.version_minor, 1);
  ASSERT_EQ(m.headers.size(), 2u);
  EXPECT_EQ(m.headers[1], std::make_pair(std::string("X-A"), std::string("v1")));
  EXPECT_TRUE(m.keep_alive);
  EXPECT_FALSE(m.upgrade);
  EXPECT_EQ(m.framing, Framing::kNone);
}

TEST(HttpCodecHead, TargetForms) {
  Transcript abs =
      runWhole(Kind::kRequest, "GET http://svc.ns:8080 HTTP/1.1\r\nHost: other\r\n\r\n");
  EXPECT_EQ(abs.messages.at(0).authority, "svc.ns:8080");
  EXPECT_EQ(abs.messages.at(0).path, "/");
  Transcript abs_q = runWhole(Kind::kRequest, "GET http://h/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n");
  EXPECT_EQ(abs_q.messages.at(0).path, "/p");
  EXPECT_EQ(abs_q.messages.at(0).query, "q=1");
  Transcript connect = runWhole(Kind::kRequest, "CONNECT svc:443 HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(connect.messages.at(0).authority, "svc:443");
  EXPECT_TRUE(connect.messages.at(0).upgrade);
  Transcript star = runWhole(Kind::kRequest, "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(star.messages.at(0).path, "*");
}

TEST(HttpCodecHead, KeepAliveAndFlags) {
  auto first = [](const std::string& s) { return runWhole(Kind::kRequest, s).messages.at(0); };
  EXPECT_FALSE(first("GET / HTTP/1.0\r\n\r\n").keep_alive);
  EXPECT_TRUE(first("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
  EXPECT_FALSE(first("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
  EXPECT_TRUE(first("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
                    "Upgrade: websocket\r\n\r\n")
                  .upgrade);
  EXPECT_FALSE(first("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").upgrade);
  EXPECT_TRUE(first("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1"
                    "\r\n\r\nx")
                  .expect_continue);
  EXPECT_FALSE(first("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx")
                   .expect_continue);
}

TEST(HttpCodecBody, ChunkedDecodedAndRaw) {
  std::string body = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
  std::string input = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body;
  Transcript t = runWhole(Kind::kRequest, input);
  ASSERT_EQ(t.messages.size(), 1u);
  EXPECT_EQ(t.messages[0].framing, Framing::kChunked);
  EXPECT_EQ(t.messages[0].body, "hello world");
  EXPECT_EQ(t.messages[0].raw_body, body);  // pass-through keeps the framing byte for byte
}

TEST(HttpCodecBody, TruncatedBodyOnClose) {
  Transcript t =
      runWhole(Kind::kRequest, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel");
  EXPECT_EQ(t.error, ParseError::kTruncated);
  Transcript head = runWhole(Kind::kRequest, "GET / HTTP/1.1\r\nHost:");
  EXPECT_EQ(head.error, ParseError::kTruncated);
  Transcript idle = runWhole(Kind::kRequest, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(idle.error, ParseError::kNone);
  // The extra CRLF some clients send after a body, then the close: not an error.
  Transcript crlf =
      runWhole(Kind::kRequest, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx\r\n");
  EXPECT_EQ(crlf.error, ParseError::kNone);
  EXPECT_EQ(crlf.messages.size(), 1u);
}

TEST(HttpCodecBody, BodySpansAreViewsIntoInput) {
  std::string input = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
  Parser p(Kind::kRequest);
  Step s = p.feed(input);
  ASSERT_EQ(s.event, Event::kHead);
  s = p.feed(std::string_view(input).substr(s.consumed));
  ASSERT_EQ(s.event, Event::kBody);
  EXPECT_EQ(s.body, "hello");
  EXPECT_EQ(s.body.data(), input.data() + input.size() - 5);
}

// ---------------------------------------------------------------------------------------------
// Pipelining: the parser stops at each message end.

TEST(HttpCodecPipelining, StopsAtEachMessage) {
  std::string a = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
  std::string b = "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
  std::string c =
      "POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n";
  std::string all = a + b + c;
  Parser p(Kind::kRequest);
  std::string_view rest = all;
  std::vector<std::string> paths;
  std::vector<size_t> ends;
  size_t offset = 0;
  while (!rest.empty()) {
    Step s = p.feed(rest);
    ASSERT_NE(s.event, Event::kError) << errorName(p.error());
    rest.remove_prefix(s.consumed);
    offset += s.consumed;
    if (s.event == Event::kHead) paths.emplace_back(p.head().path());
    if (s.event == Event::kMessageComplete) ends.push_back(offset);
  }
  // The last message's kMessageComplete may need one more call.
  Step s = p.feed(rest);
  if (s.event == Event::kMessageComplete) ends.push_back(offset);
  EXPECT_EQ(paths, (std::vector<std::string>{"/1", "/2", "/3"}));
  EXPECT_EQ(ends, (std::vector<size_t>{a.size(), a.size() + b.size(), all.size()}));
  EXPECT_TRUE(p.idle());

  std::mt19937 rng(7);
  Transcript whole = runWhole(Kind::kRequest, all);
  ASSERT_EQ(whole.messages.size(), 3u);
  EXPECT_EQ(whole.messages[1].body, "abc");
  EXPECT_EQ(whole.messages[2].body, "z");
  EXPECT_EQ(whole, run(Kind::kRequest, all, [](size_t) { return 1; }));
  EXPECT_EQ(whole, run(Kind::kRequest, all, [&](size_t) { return 1 + rng() % 20; }));
}

TEST(HttpCodecPipelining, ErrorInSecondRequestKeepsTheFirst) {
  std::string all = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost : a\r\n\r\n";
  Transcript t = runWhole(Kind::kRequest, all);
  ASSERT_EQ(t.messages.size(), 1u);
  EXPECT_TRUE(t.messages[0].complete);
  EXPECT_EQ(t.error, ParseError::kWhitespaceBeforeColon);
}

// ---------------------------------------------------------------------------------------------
// Responses: framing.

struct ResponseCase {
  const char* name;
  std::string input;
  std::vector<std::string> methods;
  std::vector<std::string> bodies;  // one per complete message
  ParseError error;
  std::string tunnel;
};

std::vector<ResponseCase> responseCases() {
  return {
      {"content-length",
       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
       {},
       {"hi"},
       ParseError::kNone,
       ""},
      {"chunked",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
       {},
       {"hi"},
       ParseError::kNone,
       ""},
      {"until close", "HTTP/1.1 200 OK\r\n\r\nall of it", {}, {"all of it"}, ParseError::kNone, ""},
      {"te not chunked: until close",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz",
       {},
       {"zz"},
       ParseError::kNone,
       ""},
      {"head response has no body",
       "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
       {"HEAD", "GET"},
       {"", "x"},
       ParseError::kNone,
       ""},
      {"204 has no body",
       "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
       {},
       {""},
       ParseError::kNone,
       ""},
      {"304 has no body", "HTTP/1.1 304 Not Modified\r\n\r\n", {}, {""}, ParseError::kNone, ""},
      {"1xx has no body, even announced",
       "HTTP/1.1 100 Continue\r\nContent-Length: 2\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: "
       "2\r\n\r\nok",
       {},
       {"", "ok"},
       ParseError::kNone,
       ""},
      {"100 then final",
       "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
       {},
       {"", "ok"},
       ParseError::kNone,
       ""},
      {"100 then final to HEAD",
       "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
       {"HEAD"},
       {"", ""},
       ParseError::kNone,
       ""},
      {"101 then tunnel",
       "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
       "\x81\x02hi",
       {},
       {""},
       ParseError::kNone,
       "\x81\x02hi"},
      {"connect 200 then tunnel",
       "HTTP/1.1 200 Connection established\r\n\r\nTLS...",
       {"CONNECT"},
       {""},
       ParseError::kNone,
       "TLS..."},
      {"no reason phrase",
       "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
       {},
       {""},
       ParseError::kNone,
       ""},
      {"http/1.0 response",
       "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
       {},
       {"x"},
       ParseError::kNone,
       ""},
      {"cl+te response",
       "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
       {},
       {},
       ParseError::kContentLengthWithTransferEncoding,
       ""},
      {"four digit status", "HTTP/1.1 2000 OK\r\n\r\n", {}, {}, ParseError::kBadStatusLine, ""},
      {"status 099", "HTTP/1.1 099 X\r\n\r\n", {}, {}, ParseError::kBadStatusLine, ""},
      {"http/2 status line",
       "HTTP/2.0 200 OK\r\n\r\n",
       {},
       {},
       ParseError::kUnsupportedVersion,
       ""},
      {"truncated chunked",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nh",
       {},
       {},
       ParseError::kTruncated,
       ""},
  };
}

TEST(HttpCodecResponses, FramingTable) {
  std::mt19937 rng(3);
  for (const ResponseCase& c : responseCases()) {
    Transcript t = runWhole(Kind::kResponse, c.input, true, c.methods);
    EXPECT_EQ(errorName(t.error), errorName(c.error)) << c.name;
    std::vector<std::string> bodies;
    for (const Message& m : t.messages) {
      if (m.complete) bodies.push_back(m.body);
    }
    EXPECT_EQ(bodies, c.bodies) << c.name;
    EXPECT_EQ(t.tunnel, c.tunnel) << c.name;
    EXPECT_EQ(t, run(
                     Kind::kResponse, c.input, [](size_t) { return 1; }, true, c.methods))
        << c.name;
    EXPECT_EQ(t,
              run(
                  Kind::kResponse, c.input, [&](size_t) { return 1 + rng() % 7; }, true, c.methods))
        << c.name;
  }
}

TEST(HttpCodecResponses, TunnelRefusesMoreHttp) {
  Parser p(Kind::kResponse);
  std::string r = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
  Step s = p.feed(r);
  ASSERT_EQ(s.event, Event::kHead);
  EXPECT_EQ(p.head().framing(), Framing::kTunnel);
  EXPECT_TRUE(p.head().upgrade());
  EXPECT_EQ(p.feed({}).event, Event::kMessageComplete);
  EXPECT_EQ(p.feed("x").event, Event::kError);
  EXPECT_EQ(p.error(), ParseError::kAfterTunnel);
}

// ---------------------------------------------------------------------------------------------
// Serializers.

MessageHead parseHead(const std::string& input, Parser& p) {
  Step s = p.feed(input);
  EXPECT_EQ(s.event, Event::kHead) << errorName(p.error());
  return p.head();
}

TEST(HttpCodecSerializer, RequestHeadEditsAndHopByHop) {
  Parser p(Kind::kRequest);
  std::string in =
      "POST /old?q=1 HTTP/1.0\r\nHost: a.example\r\nConnection: keep-alive, X-Hop, "
      "Content-Length\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nTE: trailers\r\nX-Keep: k\r\n"
      "X-Remove: r\r\nX-Set: old\r\nx-request-id: client\r\nContent-Length: 3, 3\r\n\r\nabc";
  MessageHead h = parseHead(in, p);
  HeaderEdits edits;
  edits.set = {{"x-set", "new"}};
  edits.add = {{"x-added", "1"}, {"bad name", "x"}, {"x-inject", "a\r\nx: y"}};
  edits.remove = {"X-REMOVE"};
  RequestHeadOptions o;
  o.target = "/new?q=1";
  o.authority = "svc.ns.svc.cluster.local";
  o.request_id = "rid-1";
  o.edits = &edits;
  o.extra = {{"x-forwarded-proto", "http"}};
  std::string out;
  writeRequestHead(h, o, out);
  EXPECT_EQ(out,
            "POST /new?q=1 HTTP/1.1\r\n"
            "host: svc.ns.svc.cluster.local\r\n"
            "X-Keep: k\r\n"
            "x-set: new\r\n"
            "x-added: 1\r\n"
            "x-forwarded-proto: http\r\n"
            "x-request-id: rid-1\r\n"
            "content-length: 3\r\n\r\n");
  // What it writes parses back.
  Transcript again = runWhole(Kind::kRequest, out + "abc");
  ASSERT_EQ(again.messages.size(), 1u);
  EXPECT_EQ(again.messages[0].body, "abc");
}

TEST(HttpCodecSerializer, UpgradeKeepsUpgradeFields) {
  Parser p(Kind::kRequest);
  MessageHead h = parseHead(
      "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: "
      "websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
      p);
  std::string out;
  writeRequestHead(h, {}, out);
  EXPECT_EQ(out,
            "GET /ws HTTP/1.1\r\nhost: a\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n"
            "connection: upgrade\r\n\r\n");
  Parser r(Kind::kResponse);
  MessageHead resp = parseHead(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
      "upgrade\r\n\r\n",
      r);
  std::string rout;
  writeResponseHead(resp, {}, rout);
  EXPECT_EQ(
      rout,
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nconnection: upgrade\r\n\r\n");
}

TEST(HttpCodecSerializer, ChunkedRequestKeepsTransferEncoding) {
  Parser p(Kind::kRequest);
  MessageHead h = parseHead("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", p);
  std::string out;
  writeRequestHead(h, {}, out);
  EXPECT_EQ(out, "POST / HTTP/1.1\r\nhost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
  writeChunk("hello", out);
  writeChunk("", out);
  writeChunk(std::string(300, 'x'), out);
  writeLastChunk(out);
  Transcript t = runWhole(Kind::kRequest, out);
  ASSERT_EQ(t.messages.size(), 1u);
  EXPECT_EQ(t.messages[0].body, "hello" + std::string(300, 'x'));
}

TEST(HttpCodecSerializer, ResponseHead) {
  Parser p(Kind::kResponse);
  MessageHead h = parseHead(
      "HTTP/1.1 200 Fine\r\nServer: up\r\nConnection: keep-alive\r\n"
      "Content-Length: 2\r\n\r\n",
      p);
  HeaderEdits edits;
  edits.set = {{"server", "remora"}};
  ResponseHeadOptions o;
  o.edits = &edits;
  o.close = true;
  std::string out;
  writeResponseHead(h, o, out);
  EXPECT_EQ(
      out, "HTTP/1.1 200 Fine\r\nserver: remora\r\nconnection: close\r\ncontent-length: 2\r\n\r\n");
  Parser c(Kind::kResponse);
  MessageHead until_close = parseHead("HTTP/1.0 200 OK\r\n\r\n", c);
  std::string out2;
  writeResponseHead(until_close, {}, out2);
  EXPECT_EQ(out2, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
  // An HTTP/1.0 client kept alive is told so; a close wins over it.
  Parser k(Kind::kResponse);
  MessageHead kept = parseHead("HTTP/1.1 204 No Content\r\n\r\n", k);
  ResponseHeadOptions ka;
  ka.keep_alive_http10 = true;
  std::string out3;
  writeResponseHead(kept, ka, out3);
  EXPECT_EQ(out3, "HTTP/1.1 204 No Content\r\nconnection: keep-alive\r\n\r\n");
  ka.close = true;
  out3.clear();
  writeResponseHead(kept, ka, out3);
  EXPECT_EQ(out3, "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
}

TEST(HttpCodecSerializer, LocalReplies) {
  for (int status : {400, 403, 404, 431, 500, 502, 503, 504}) {
    LocalReply r;
    r.status = status;
    r.close = status == 400 || status == 431;
    std::string out;
    writeLocalReply(r, out);
    Transcript t = runWhole(Kind::kResponse, out, false);
    ASSERT_EQ(t.messages.size(), 1u) << status;
    EXPECT_EQ(t.messages[0].status, status);
    EXPECT_EQ(t.messages[0].body, defaultBody(status));
    EXPECT_FALSE(t.messages[0].body.empty());
    EXPECT_EQ(t.messages[0].keep_alive, !r.close) << status;
  }
  LocalReply overflow;
  overflow.status = 503;
  overflow.extra = {{"x-envoy-overloaded", "true"}};
  overflow.head_request = true;
  std::string out;
  writeLocalReply(overflow, out);
  EXPECT_EQ(out,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 22\r\n"
            "x-envoy-overloaded: true\r\n\r\n");
}

TEST(HttpCodecSerializer, ErrorRepliesMatchTheirStatus) {
  for (int e = 1; e <= static_cast<int>(ParseError::kAfterTunnel); ++e) {
    auto err = static_cast<ParseError>(e);
    std::string out;
    writeErrorReply(err, out);
    Transcript t = runWhole(Kind::kResponse, out, false);
    ASSERT_EQ(t.messages.size(), 1u) << errorName(err);
    EXPECT_EQ(t.messages[0].status, httpStatus(err));
    EXPECT_FALSE(t.messages[0].keep_alive);
    EXPECT_NE(errorName(err), "unknown");
  }
  // The name table follows the enum's order.
  EXPECT_EQ(errorName(ParseError::kNone), "none");
  EXPECT_EQ(errorName(ParseError::kObsFold), "obs_fold");
  EXPECT_EQ(errorName(ParseError::kContentLengthWithTransferEncoding), "cl_te");
  EXPECT_EQ(errorName(ParseError::kAfterTunnel), "after_tunnel");
  std::set<std::string_view> names;
  for (int e = 0; e <= static_cast<int>(ParseError::kAfterTunnel); ++e) {
    names.insert(errorName(static_cast<ParseError>(e)));
  }
  EXPECT_EQ(names.size(), static_cast<size_t>(ParseError::kAfterTunnel) + 1);
  EXPECT_EQ(httpStatus(ParseError::kRequestLineTooLong), 414);
  EXPECT_EQ(httpStatus(ParseError::kTooManyHeaders), 431);
  EXPECT_EQ(httpStatus(ParseError::kHeadersTooLarge), 431);
  EXPECT_EQ(httpStatus(ParseError::kObsFold), 400);
  EXPECT_EQ(httpStatus(ParseError::kUnsupportedVersion), 505);
}

TEST(HttpCodecSniff, RequestLines) {
  EXPECT_EQ(sniffRequest("GET / HTTP/1.1\r\n"), Sniff::kHttp);
  EXPECT_EQ(sniffRequest("POST /x HTTP/1.0"), Sniff::kHttp);
  EXPECT_EQ(sniffRequest("GE"), Sniff::kNeedMore);
  EXPECT_EQ(sniffRequest("GET /abc"), Sniff::kNeedMore);
  EXPECT_EQ(sniffRequest("GET /abc HTTP/"), Sniff::kNeedMore);
  EXPECT_EQ(sniffRequest(""), Sniff::kNeedMore);
  EXPECT_EQ(sniffRequest("\x16\x03\x01\x02"), Sniff::kNotHttp);  // TLS ClientHello
  EXPECT_EQ(sniffRequest("SSH-2.0-OpenSSH"), Sniff::kNotHttp);
  EXPECT_EQ(sniffRequest("GET / HTTP/2.0"), Sniff::kNotHttp);
  EXPECT_EQ(sniffRequest("PRI * HTTP/2.0\r\n"), Sniff::kNotHttp);
  EXPECT_EQ(sniffRequest("get / HTTP/1.1"), Sniff::kNotHttp);
}

}  // namespace
}  // namespace remora::http
