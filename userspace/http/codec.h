#pragma once

// HTTP/1.1 codec for remora-proxy's L7 path (issue 10): an incremental parser for requests and
// responses, fed byte spans as they arrive from recv (split anywhere), and the serializers the
// proxy writes requests, responses and local replies with. No I/O, no allocation per body byte,
// no exceptions. The rules and limits are in docs/HTTP.md.
//
// Parsing model: feed() consumes bytes and stops at each event (head complete, a span of body
// data, message complete, error), returning how many bytes it consumed. The caller feeds the
// rest of its buffer again, so pipelined requests come out one at a time and the caller can
// route each before resuming. Every input byte is consumed by exactly one step. Steps may
// consume nothing (kMessageComplete right after a bodiless kHead): after kHead and kBody, call
// feed() again even when no input is left, until it returns kNeedMore or kMessageComplete.
//
// Zero copy: the head (start line and fields, bounded by Limits) is copied once into the
// MessageHead; body data is handed out as views into the bytes passed to feed().
//
// Raw pass-through of a body: the bytes consumed by the steps after kHead, up to and including
// kMessageComplete, are the body exactly as it came (chunk-size lines, extensions, trailers);
// a proxy that forwards them unchanged keeps the sender's framing. kBody data is the de-chunked
// payload for a proxy that re-frames (writeChunk / writeLastChunk).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace remora::http {

// Defaults follow Envoy's where Envoy has one (60 KiB of headers, 100 fields).
struct Limits {
  size_t max_start_line = 8 * 1024;     // request line or status line, CRLF excluded
  size_t max_headers = 100;             // header fields (trailer fields count separately)
  size_t max_header_bytes = 60 * 1024;  // the whole head with CRLFs, start line included
  size_t max_chunk_line = 4 * 1024;     // a chunk-size line with its extensions
};

// Why a message was refused. Each maps to one status (httpStatus) and one short name for
// metrics, logs and the response-flag detail (errorName).
enum class ParseError : uint8_t {
  kNone = 0,
  // 414 / 431: limits.
  kRequestLineTooLong,  // 414 (a status line too long is kBadStatusLine)
  kHeadersTooLarge,     // 431: head larger than max_header_bytes
  kTooManyHeaders,      // 431: more than max_headers fields
  // 505: an HTTP version other than 1.0 and 1.1 (HTTP/2.0 text, HTTP/1.2, HTTP/3).
  kUnsupportedVersion,
  // 400: syntax.
  kBadRequestLine,     // method, target or version malformed (HTTP/0.9's "GET /" included)
  kBadStatusLine,      // response side
  kBareCr,             // CR not followed by LF in a head, chunk line or trailer
  kBareLf,             // LF not preceded by CR there
  kNulByte,            // NUL anywhere in the head
  kInvalidHeaderName,  // empty name or a byte outside tchar
  kWhitespaceBeforeColon,
  kObsFold,             // a field line starting with SP or HTAB (RFC 9112 5.2)
  kInvalidHeaderValue,  // a control byte other than HTAB in a value
  kMissingColon,
  // 400: framing (request smuggling defences, RFC 9112 6.1-6.3).
  kContentLengthWithTransferEncoding,
  kInvalidContentLength,      // not 1*DIGIT, or beyond 2^63
  kConflictingContentLength,  // several values (fields or a list) that differ
  kBadTransferEncoding,       // final coding not exactly "chunked", a coding we do not decode,
                              // several TE fields, or TE in an HTTP/1.0 message
  kMissingHost,               // HTTP/1.1 request without Host (RFC 9112 3.2)
  kConflictingHost,           // several Host fields
  kInvalidChunkSize,          // not 1*HEXDIG, or overflows 64 bits
  kInvalidChunkExtension,     // bad bytes or a chunk line longer than max_chunk_line
  kMissingChunkEnd,           // chunk data not followed by CRLF
  kTruncated,                 // the peer closed in the middle of a message
  kAfterTunnel,               // bytes fed after a 101 / CONNECT 2xx: the connection is a tunnel
};

int httpStatus(ParseError e);              // 400, 414, 431 or 505
std::string_view errorName(ParseError e);  // "obs_fold", "cl_te", ... stable, for metrics
std::string_view describe(ParseError e);   // a sentence for logs and the 400 body

// How the body of a message is delimited (RFC 9112 6.3).
enum class Framing : uint8_t {
  kNone,           // no body: no CL/TE on a request, HEAD / 1xx / 204 / 304 responses
  kContentLength,  // exactly contentLength() bytes
  kChunked,        // chunked transfer coding
  kUntilClose,     // a response without CL/TE: the body ends when the server closes
  kTunnel,         // 101 Switching Protocols or 2xx to CONNECT: bytes after the head are opaque
};

struct HeaderField {
  std::string_view name;   // as sent (case kept); compare with equalsIgnoreCase
  std::string_view value;  // leading and trailing SP/HTAB removed
};

// The start line and fields of one message. Views stay valid while the MessageHead lives and is
// not reset, i.e. until the parser that owns it starts the next message.
class MessageHead {
 public:
  bool isRequest() const { return is_request_; }
  // Requests.
  std::string_view method() const { return view(method_); }  // case-sensitive token
  std::string_view target() const { return view(target_); }  // request-target as sent
  // The target's path (absolute-form: after the authority), "*" for OPTIONS *, "/" when empty.
  std::string_view path() const { return path_.len != 0 ? view(path_) : "/"; }
  std::string_view query() const { return view(query_); }  // after '?', may be empty
  // Host, or the authority of an absolute-form target (which then wins, RFC 9112 3.2.2).
  std::string_view authority() const { return view(authority_); }
  bool isHead() const { return method() == "HEAD"; }
  bool isConnect() const { return method() == "CONNECT"; }
  // Responses.
  int status() const { return status_; }
  std::string_view reason() const { return view(reason_); }
  // Both: 0 for HTTP/1.0, 1 for HTTP/1.1.
  int versionMinor() const { return version_minor_; }

  size_t headerCount() const { return fields_.size(); }
  HeaderField header(size_t i) const { return {view(fields_[i].name), view(fields_[i].value)}; }
  // The first field with this name (case-insensitive), if any.
  std::optional<std::string_view> get(std::string_view name) const;
  bool has(std::string_view name) const { return get(name).has_value(); }

  // The connection may carry another message after this one (version default and the
  // Connection field's close / keep-alive tokens).
  bool keepAlive() const { return keep_alive_; }
  // Request: Connection names "upgrade" and an Upgrade field is present (or CONNECT): the
  // caller forwards it and tunnels if the answer is 101 (or 2xx to CONNECT).
  // Response: 101, or 2xx to CONNECT; framing() is then kTunnel.
  bool upgrade() const { return upgrade_; }
  bool expectContinue() const { return expect_continue_; }  // "Expect: 100-continue"
  Framing framing() const { return framing_; }
  uint64_t contentLength() const { return content_length_; }  // kContentLength only
  size_t headBytes() const { return raw_.size(); }            // wire size of the head
  std::string_view raw() const { return raw_; }               // the head as received

 private:
  friend class Parser;
  struct Span {
    uint32_t off = 0;
    uint32_t len = 0;
  };
  struct Field {
    Span name;
    Span value;
  };
  std::string_view view(Span s) const { return std::string_view(raw_).substr(s.off, s.len); }
  void clear();

  std::string raw_;
  std::vector<Field> fields_;
  Span method_, target_, path_, query_, authority_, reason_;
  uint64_t content_length_ = 0;
  int status_ = 0;
  int version_minor_ = 1;
  Framing framing_ = Framing::kNone;
  bool is_request_ = true;
  bool keep_alive_ = true;
  bool upgrade_ = false;
  bool expect_continue_ = false;
};

enum class Event : uint8_t {
  kNeedMore,         // every byte given was consumed; feed more
  kHead,             // head() is complete
  kBody,             // Step::body holds body data (de-chunked), a view into the fed bytes
  kMessageComplete,  // the message ended; the next feed starts the next message
  kError,            // error() says why; the parser stays failed
};

struct Step {
  Event event = Event::kNeedMore;
  size_t consumed = 0;    // bytes of the input this step used
  std::string_view body;  // kBody only
};

class Parser {
 public:
  enum class Kind : uint8_t { kRequest, kResponse };
  explicit Parser(Kind kind, Limits limits = {});

  // Consumes a prefix of `bytes` up to the next event. Call again with the rest.
  Step feed(std::string_view bytes);
  // The peer closed its side. Completes a kUntilClose body (kMessageComplete), fails a
  // half-received message (kError, kTruncated), and returns kNeedMore between messages.
  Step finish();

  // Response parsers: the method of the request the next response answers (HEAD: no body;
  // CONNECT: 2xx is a tunnel). Holds across 1xx responses until the final response completes,
  // then falls back to "GET". Call it before feeding that response's first byte.
  void respondingTo(std::string_view method);

  const MessageHead& head() const { return head_; }
  ParseError error() const { return error_; }
  // Between messages: no byte of the next message has been consumed yet.
  bool idle() const;
  // Body bytes (de-chunked) of the current message so far.
  uint64_t bodyBytes() const { return body_bytes_; }

 private:
  enum class State : uint8_t {
    kStartLine,
    kFieldLine,
    kBodyLength,  // also kNone / kTunnel framing, with nothing remaining
    kChunkSize,
    kChunkData,
    kChunkDataEnd,
    kTrailer,
    kUntilClose,
    kMessageDone,
    kTunnel,
    kFailed,
  };
  // What the fields of the head being parsed said, for finishHead.
  struct HeadFlags {
    MessageHead::Span host_value;
    bool content_length = false;
    bool transfer_encoding = false;
    bool chunked = false;  // Transfer-Encoding's final coding is chunked
    bool host = false;
    bool target_authority = false;  // absolute-form or CONNECT target
    bool conn_close = false;
    bool conn_keep_alive = false;
    bool conn_upgrade = false;
    bool upgrade_field = false;
    bool expect_continue = false;
  };
  Step fail(ParseError e, size_t consumed);
  void startMessage();
  void messageDone();
  MessageHead::Span spanOf(std::string_view part) const;  // part lies in head_.raw_
  ParseError parseRequestLine(std::string_view line);
  ParseError parseStatusLine(std::string_view line);
  ParseError parseFieldLine(std::string_view line, bool trailer);
  ParseError noteField(std::string_view name, std::string_view value, std::string_view untrimmed);
  ParseError finishHead();
  ParseError parseChunkLine(std::string_view line);

  Kind kind_;
  Limits limits_;
  State state_ = State::kStartLine;
  ParseError error_ = ParseError::kNone;
  MessageHead head_;
  HeadFlags flags_;
  std::string line_;       // a chunk or trailer line split across feeds
  size_t line_start_ = 0;  // offset in head_.raw_ of the head line being read
  size_t skipped_ = 0;     // empty lines before the start line
  size_t trailer_count_ = 0;
  size_t trailer_bytes_ = 0;
  uint64_t remaining_ = 0;  // body or chunk bytes left
  uint64_t body_bytes_ = 0;
  int chunk_end_ = 0;  // bytes of the CRLF after chunk data seen
  bool responding_to_head_ = false;
  bool responding_to_connect_ = false;
};

// Case-insensitive ASCII comparison for field names and tokens. Inline: the parser and the
// serializers call it for every field against several names, and most calls end at the size
// check.
inline bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const char x = (a[i] >= 'A' && a[i] <= 'Z') ? static_cast<char>(a[i] + 32) : a[i];
    const char y = (b[i] >= 'A' && b[i] <= 'Z') ? static_cast<char>(b[i] + 32) : b[i];
    if (x != y) return false;
  }
  return true;
}

// Heuristic for unnamed ports: do the first bytes look like an HTTP/1.x request line? kNeedMore
// until a verdict is possible (at most one line; the caller bounds the wait).
enum class Sniff : uint8_t { kHttp, kNotHttp, kNeedMore };
Sniff sniffRequest(std::string_view first_bytes);

// Header edits in Istio's shape (VirtualService headers.request / headers.response).
struct HeaderEdits {
  std::vector<std::pair<std::string, std::string>> set;  // replaces every field of that name
  std::vector<std::pair<std::string, std::string>> add;  // appended
  std::vector<std::string> remove;                       // names, case-insensitive
  bool empty() const { return set.empty() && add.empty() && remove.empty(); }
};

struct RequestHeadOptions {
  std::string_view target;      // non-empty: replaces the request-target (rewrite.uri)
  std::string_view authority;   // non-empty: replaces Host (rewrite.authority)
  std::string_view request_id;  // non-empty: x-request-id is set to it (replacing any)
  const HeaderEdits* edits = nullptr;
  // Extra fields appended after the edits (x-forwarded-proto, x-envoy-attempt-count...).
  std::vector<HeaderField> extra;
};

// Writes the head of `request` for the upstream: "METHOD target HTTP/1.1", the fields with the
// edits applied, Host set to the authority. Hop-by-hop fields (Connection, the fields it names,
// Keep-Alive, Proxy-Connection, TE, Upgrade) are dropped, since the upstream connection is the
// proxy's own; an upgrade request keeps "Connection: upgrade" and its Upgrade field.
// Content-Length / Transfer-Encoding are kept: the body is forwarded with the same framing.
void writeRequestHead(const MessageHead& request, const RequestHeadOptions& options,
                      std::string& out);

struct ResponseHeadOptions {
  const HeaderEdits* edits = nullptr;
  std::vector<HeaderField> extra;
  bool close = false;  // the proxy closes the downstream connection after it: "connection: close"
  // The client spoke HTTP/1.0 and asked for keep-alive: "connection: keep-alive", without which
  // it would expect the close (ignored with close, or when the body runs to the close).
  bool keep_alive_http10 = false;
};

// Writes the head of `response` for the client: "HTTP/1.1 status reason", the fields with the
// edits applied, hop-by-hop fields dropped as for requests (a 101 keeps its Upgrade and
// Connection). A kUntilClose body forces close.
void writeResponseHead(const MessageHead& response, const ResponseHeadOptions& options,
                       std::string& out);

// One chunk of a chunked body (nothing for empty data), and the last chunk with no trailers.
void writeChunk(std::string_view data, std::string& out);
void writeLastChunk(std::string& out);

// A response the proxy makes itself (directResponse, faults, errors): status line,
// content-type text/plain, content-length, the extra fields, "connection: close" when close.
struct LocalReply {
  int status = 503;
  std::string_view body;  // empty: the default body for the status ("no healthy upstream"...)
  bool close = false;
  bool head_request = false;       // answering HEAD: content-length but no body bytes
  std::vector<HeaderField> extra;  // e.g. {"x-envoy-overloaded", "true"}, {"location", ...}
};
void writeLocalReply(const LocalReply& reply, std::string& out);

// The reason phrase for a status code ("" for codes it does not know).
std::string_view reasonPhrase(int status);
// A small default body for the statuses the proxy answers itself (400, 403, 404, 408, 413, 414,
// 431, 500, 502, 503, 504, 505); "" for others.
std::string_view defaultBody(int status);
// The local reply for a refused request: its status, its reason as body, connection: close.
void writeErrorReply(ParseError e, std::string& out);

}  // namespace remora::http
