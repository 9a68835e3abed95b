#include "http/codec.h"

#include <cstring>
#include <iterator>

#include "http/chars.h"

namespace remora::http {

using detail::isOws;
using detail::isTchar;
using detail::isToken;
using detail::trimOws;

namespace {

constexpr uint64_t kMaxContentLength = uint64_t{1} << 62;  // well within off_t and our counters

// Every line parser refuses NUL and CR; once it has, this names the refusal after them, so
// that each gets its own error whatever the line's syntax around it. (Looking for them only on
// the error path keeps two memchr per line off the hot path.)
ParseError lineError(ParseError err, std::string_view line) {
  if (std::memchr(line.data(), '\0', line.size()) != nullptr) return ParseError::kNulByte;
  if (std::memchr(line.data(), '\r', line.size()) != nullptr) return ParseError::kBareCr;
  return err;
}

// "HTTP/x.y" exactly. Returns the minor version (0 or 1), -1 for malformed, -2 for a
// well-formed version other than 1.0 and 1.1.
int parseVersion(std::string_view v) {
  if (v.size() != 8 || v.substr(0, 5) != "HTTP/" || v[6] != '.') return -1;
  char major = v[5];
  char minor = v[7];
  if (major < '0' || major > '9' || minor < '0' || minor > '9') return -1;
  if (major != '1' || minor > '1') return -2;
  return minor - '0';
}

bool isDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Visits the comma-separated elements of a field value, each trimmed of OWS. Stops early when
// fn returns false; returns false then.
template <typename Fn>
bool forEachElement(std::string_view value, Fn&& fn) {
  while (true) {
    size_t comma = value.find(',');
    if (!fn(trimOws(value.substr(0, comma)))) return false;
    if (comma == std::string_view::npos) return true;
    value.remove_prefix(comma + 1);
  }
}

// Bytes outside kAuthorityChar in Host would let a client steer authority matching with
// something the upstream reads differently.
bool isValidAuthority(std::string_view s) {
  for (char c : s) {
    if (!detail::kAuthorityChar[static_cast<uint8_t>(c)]) return false;
  }
  return true;
}

}  // namespace

int httpStatus(ParseError e) {
  switch (e) {
    case ParseError::kRequestLineTooLong:
      return 414;
    case ParseError::kHeadersTooLarge:
    case ParseError::kTooManyHeaders:
      return 431;
    case ParseError::kUnsupportedVersion:
      return 505;
    default:
      return 400;
  }
}

namespace {

struct ErrorText {
  std::string_view name;
  std::string_view sentence;
};

// Indexed by ParseError, in its order.
constexpr ErrorText kErrorTexts[] = {
    {"none", "no error"},                                                    // kNone
    {"request_line_too_long", "the request line is longer than the limit"},  // kRequestLineTooLong
    {"headers_too_large", "the request head is larger than the limit"},      // kHeadersTooLarge
    {"too_many_headers", "the message has more header fields than the limit"},  // kTooManyHeaders
    {"unsupported_version", "only HTTP/1.0 and HTTP/1.1 are accepted"},  // kUnsupportedVersion
    {"bad_request_line",
     "malformed request line (method SP request-target SP HTTP/1.x)"},  // kBadRequestLine
    {"bad_status_line", "malformed status line"},                       // kBadStatusLine
    {"bare_cr", "a CR not followed by LF"},                             // kBareCr
    {"bare_lf", "a line ends in LF without CR"},                        // kBareLf
    {"nul_byte", "a NUL byte in the message head"},                     // kNulByte
    {"invalid_header_name",
     "a header field name with a byte outside token characters"},  // kInvalidHeaderName
    {"whitespace_before_colon",
     "whitespace between a header field name and its colon"},  // kWhitespaceBeforeColon
    {"obs_fold", "obsolete line folding (a field line starting with whitespace)"},  // kObsFold
    {"invalid_header_value", "a control byte in a header field value"},  // kInvalidHeaderValue
    {"missing_colon", "a header field line without a colon"},            // kMissingColon
    {"cl_te", "both Content-Length and Transfer-Encoding"},  // kContentLengthWithTransferEncoding
    {"invalid_content_length",
     "a Content-Length that is not a decimal number"},  // kInvalidContentLength
    {"conflicting_content_length",
     "several differing Content-Length values"},  // kConflictingContentLength
    {"bad_transfer_encoding",
     "a Transfer-Encoding whose final coding is not exactly chunked"},  // kBadTransferEncoding
    {"missing_host", "an HTTP/1.1 request without Host"},               // kMissingHost
    {"conflicting_host", "several Host fields, or a malformed one"},    // kConflictingHost
    {"invalid_chunk_size", "a malformed or too large chunk size"},      // kInvalidChunkSize
    {"invalid_chunk_extension",
     "a malformed or too long chunk extension"},                        // kInvalidChunkExtension
    {"missing_chunk_end", "chunk data not followed by CRLF"},           // kMissingChunkEnd
    {"truncated", "the connection closed in the middle of a message"},  // kTruncated
    {"after_tunnel", "bytes after the connection became a tunnel"},     // kAfterTunnel
};
static_assert(std::size(kErrorTexts) == static_cast<size_t>(ParseError::kAfterTunnel) + 1,
              "one row per ParseError");

const ErrorText& errorText(ParseError e) {
  auto i = static_cast<size_t>(e);
  return kErrorTexts[i < std::size(kErrorTexts) ? i : 0];
}

}  // namespace

std::string_view errorName(ParseError e) { return errorText(e).name; }
std::string_view describe(ParseError e) { return errorText(e).sentence; }

// ---------------------------------------------------------------------------------------------
// MessageHead

std::optional<std::string_view> MessageHead::get(std::string_view name) const {
  for (const Field& f : fields_) {
    if (equalsIgnoreCase(view(f.name), name)) return view(f.value);
  }
  return std::nullopt;
}

void MessageHead::clear() {
  raw_.clear();
  fields_.clear();
  method_ = target_ = path_ = query_ = authority_ = reason_ = Span{};
  content_length_ = 0;
  status_ = 0;
  version_minor_ = 1;
  framing_ = Framing::kNone;
  keep_alive_ = true;
  upgrade_ = false;
  expect_continue_ = false;
}

// ---------------------------------------------------------------------------------------------
// Parser

Parser::Parser(Kind kind, Limits limits) : kind_(kind), limits_(limits) {
  head_.is_request_ = kind == Kind::kRequest;
}

void Parser::respondingTo(std::string_view method) {
  responding_to_head_ = method == "HEAD";
  responding_to_connect_ = method == "CONNECT";
}

Step Parser::fail(ParseError e, size_t consumed) {
  error_ = e;
  state_ = State::kFailed;
  return Step{Event::kError, consumed, {}};
}

void Parser::startMessage() {
  head_.clear();
  head_.is_request_ = kind_ == Kind::kRequest;
  flags_ = HeadFlags{};
  line_.clear();
  line_start_ = 0;
  skipped_ = 0;
  trailer_count_ = 0;
  trailer_bytes_ = 0;
  remaining_ = 0;
  body_bytes_ = 0;
  chunk_end_ = 0;
  state_ = State::kStartLine;
}

bool Parser::idle() const {
  return state_ == State::kMessageDone ||
         (state_ == State::kStartLine && head_.raw_.empty() && skipped_ == 0);
}

Step Parser::feed(std::string_view bytes) {
  size_t pos = 0;
  const size_t n = bytes.size();
  if (state_ == State::kMessageDone && n > 0) startMessage();
  while (true) {
    switch (state_) {
      case State::kFailed:
        return Step{Event::kError, 0, {}};
      case State::kMessageDone:
        return Step{Event::kNeedMore, 0, {}};
      case State::kTunnel:
        if (n == 0) return Step{Event::kNeedMore, 0, {}};
        return fail(ParseError::kAfterTunnel, 0);
      case State::kStartLine:
      case State::kFieldLine: {
        if (pos == n) return Step{Event::kNeedMore, pos, {}};
        std::string& raw = head_.raw_;
        std::string_view rest = bytes.substr(pos);
        const void* lf = std::memchr(rest.data(), '\n', rest.size());
        size_t take = lf != nullptr ? static_cast<const char*>(lf) - rest.data() + 1 : rest.size();
        if (state_ == State::kStartLine) {
          // Line bytes without the LF; one more for the CR before it.
          size_t line_len = raw.size() - line_start_ + take - (lf != nullptr ? 1 : 0);
          if (line_len > limits_.max_start_line + 1) {
            return fail(kind_ == Kind::kRequest ? ParseError::kRequestLineTooLong
                                                : ParseError::kBadStatusLine,
                        pos);
          }
        }
        if (skipped_ + raw.size() + take > limits_.max_header_bytes) {
          return fail(ParseError::kHeadersTooLarge, pos);
        }
        raw.append(rest.substr(0, take));
        pos += take;
        if (lf == nullptr) return Step{Event::kNeedMore, pos, {}};
        std::string_view line(raw.data() + line_start_, raw.size() - line_start_ - 1);
        if (line.empty() || line.back() != '\r') return fail(ParseError::kBareLf, pos);
        line.remove_suffix(1);
        line_start_ = raw.size();
        ParseError err = ParseError::kNone;
        if (state_ == State::kStartLine) {
          if (line.empty()) {
            // RFC 9112 2.2: an empty line before the start line is ignored (clients send an
            // extra CRLF after a POST body); it still counts toward the head limit.
            skipped_ += raw.size();
            raw.clear();
            line_start_ = 0;
            continue;
          }
          err = kind_ == Kind::kRequest ? parseRequestLine(line) : parseStatusLine(line);
          if (err != ParseError::kNone) return fail(lineError(err, line), pos);
          state_ = State::kFieldLine;
          continue;
        }
        if (line.empty()) {
          err = finishHead();
          if (err != ParseError::kNone) return fail(err, pos);
          return Step{Event::kHead, pos, {}};
        }
        if (head_.fields_.size() >= limits_.max_headers) {
          return fail(ParseError::kTooManyHeaders, pos);
        }
        err = parseFieldLine(line, false);
        if (err != ParseError::kNone) return fail(lineError(err, line), pos);
        continue;
      }
      case State::kBodyLength: {
        if (remaining_ == 0) {
          state_ = head_.framing_ == Framing::kTunnel ? State::kTunnel : State::kMessageDone;
          messageDone();
          return Step{Event::kMessageComplete, pos, {}};
        }
        if (pos == n) return Step{Event::kNeedMore, pos, {}};
        size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, n - pos));
        remaining_ -= take;
        body_bytes_ += take;
        return Step{Event::kBody, pos + take, bytes.substr(pos, take)};
      }
      case State::kUntilClose: {
        if (pos == n) return Step{Event::kNeedMore, pos, {}};
        body_bytes_ += n - pos;
        return Step{Event::kBody, n, bytes.substr(pos)};
      }
      case State::kChunkData: {
        if (pos == n) return Step{Event::kNeedMore, pos, {}};
        size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, n - pos));
        remaining_ -= take;
        body_bytes_ += take;
        if (remaining_ == 0) state_ = State::kChunkDataEnd;
        return Step{Event::kBody, pos + take, bytes.substr(pos, take)};
      }
      case State::kChunkDataEnd: {
        // Exactly CRLF after the data: anything else is where smuggling hides.
        while (pos < n && chunk_end_ < 2) {
          char c = bytes[pos++];
          if (chunk_end_ == 0 && c != '\r') {
            return fail(c == '\n' ? ParseError::kBareLf : ParseError::kMissingChunkEnd, pos);
          }
          if (chunk_end_ == 1 && c != '\n') return fail(ParseError::kBareCr, pos);
          ++chunk_end_;
        }
        if (chunk_end_ < 2) return Step{Event::kNeedMore, pos, {}};
        chunk_end_ = 0;
        state_ = State::kChunkSize;
        continue;
      }
      case State::kChunkSize:
      case State::kTrailer: {
        if (pos == n) return Step{Event::kNeedMore, pos, {}};
        std::string_view rest = bytes.substr(pos);
        const void* lf = std::memchr(rest.data(), '\n', rest.size());
        size_t take = lf != nullptr ? static_cast<const char*>(lf) - rest.data() + 1 : rest.size();
        if (state_ == State::kChunkSize) {
          if (line_.size() + take > limits_.max_chunk_line + 2) {
            return fail(ParseError::kInvalidChunkExtension, pos);
          }
        } else if (trailer_bytes_ + line_.size() + take > limits_.max_header_bytes) {
          return fail(ParseError::kHeadersTooLarge, pos);
        }
        // Zero copy for a line that arrived whole; lines split across reads are assembled.
        std::string_view line;
        if (line_.empty() && lf != nullptr) {
          line = rest.substr(0, take);
        } else {
          line_.append(rest.substr(0, take));
          line = line_;
        }
        pos += take;
        if (lf == nullptr) return Step{Event::kNeedMore, pos, {}};
        line.remove_suffix(1);
        if (line.empty() || line.back() != '\r') return fail(ParseError::kBareLf, pos);
        line.remove_suffix(1);
        ParseError err = ParseError::kNone;
        if (state_ == State::kChunkSize) {
          err = parseChunkLine(line);  // moves to kChunkData or kTrailer
          if (err != ParseError::kNone) return fail(lineError(err, line), pos);
        } else {
          trailer_bytes_ += line.size() + 2;
          if (line.empty()) {
            line_.clear();
            state_ = State::kMessageDone;
            messageDone();
            return Step{Event::kMessageComplete, pos, {}};
          }
          if (++trailer_count_ > limits_.max_headers) {
            return fail(ParseError::kTooManyHeaders, pos);
          }
          err = parseFieldLine(line, true);
          if (err != ParseError::kNone) return fail(lineError(err, line), pos);
        }
        line_.clear();
        continue;
      }
    }
  }
}

Step Parser::finish() {
  switch (state_) {
    case State::kFailed:
      return Step{Event::kError, 0, {}};
    case State::kMessageDone:
    case State::kTunnel:
      return Step{Event::kNeedMore, 0, {}};
    case State::kUntilClose:
      state_ = State::kMessageDone;
      messageDone();
      return Step{Event::kMessageComplete, 0, {}};
    case State::kBodyLength:
      if (remaining_ == 0) return feed({});
      return fail(ParseError::kTruncated, 0);
    case State::kStartLine:
      // Nothing, or only empty lines (RFC 9112 2.2), since the last message: a clean close.
      if (head_.raw_.empty()) return Step{Event::kNeedMore, 0, {}};
      return fail(ParseError::kTruncated, 0);
    default:
      return fail(ParseError::kTruncated, 0);
  }
}

void Parser::messageDone() {
  // A 1xx other than 101 is followed by the final response to the same request.
  if (kind_ == Kind::kResponse && (head_.status_ >= 200 || head_.status_ == 101)) {
    responding_to_head_ = false;
    responding_to_connect_ = false;
  }
}

MessageHead::Span Parser::spanOf(std::string_view part) const {
  return MessageHead::Span{static_cast<uint32_t>(part.data() - head_.raw_.data()),
                           static_cast<uint32_t>(part.size())};
}

ParseError Parser::parseRequestLine(std::string_view line) {
  size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return ParseError::kBadRequestLine;
  size_t sp2 = line.find(' ', sp1 + 1);
  // No version: HTTP/0.9's "GET /path", refused.
  if (sp2 == std::string_view::npos) return ParseError::kBadRequestLine;
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!isToken(method) || target.empty()) return ParseError::kBadRequestLine;
  for (char c : target) {
    auto u = static_cast<uint8_t>(c);
    // '#': a fragment never belongs in a request-target (RFC 9112 3.2). Refused as Envoy does
    // by default: kept, it would take part in route and policy matches on the path.
    if (u <= 0x20 || u == 0x7f || c == '#') return ParseError::kBadRequestLine;
  }
  int minor = parseVersion(version);
  if (minor == -1) return ParseError::kBadRequestLine;
  if (minor == -2) return ParseError::kUnsupportedVersion;
  head_.version_minor_ = minor;
  head_.method_ = spanOf(method);
  head_.target_ = spanOf(target);

  std::string_view path = target;
  if (method == "CONNECT") {
    // authority-form: host:port, nothing else.
    if (target.find_first_of("/?#@") != std::string_view::npos || !isValidAuthority(target)) {
      return ParseError::kBadRequestLine;
    }
    flags_.target_authority = true;
    head_.authority_ = spanOf(target);
    head_.path_ = MessageHead::Span{};
    return ParseError::kNone;
  }
  if (target == "*") {
    if (method != "OPTIONS") return ParseError::kBadRequestLine;
  } else if (target.front() != '/') {
    // absolute-form: scheme "://" authority [path-abempty] ["?" query]
    size_t sep = target.find("://");
    if (sep == std::string_view::npos || sep == 0) return ParseError::kBadRequestLine;
    for (char c : target.substr(0, sep)) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '+' || c == '-' || c == '.';
      if (!ok) return ParseError::kBadRequestLine;
    }
    std::string_view rest = target.substr(sep + 3);
    size_t end = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, end);
    if (authority.empty() || !isValidAuthority(authority) ||
        authority.find('@') != std::string_view::npos) {
      return ParseError::kBadRequestLine;
    }
    flags_.target_authority = true;
    head_.authority_ = spanOf(authority);
    path = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  }
  size_t q = path.find('?');
  if (q != std::string_view::npos) {
    head_.query_ = spanOf(path.substr(q + 1));
    path = path.substr(0, q);
  }
  head_.path_ = path.empty() ? MessageHead::Span{} : spanOf(path);
  return ParseError::kNone;
}

ParseError Parser::parseStatusLine(std::string_view line) {
  // HTTP-version SP 3DIGIT SP [reason]; a missing last SP is tolerated (old servers).
  if (line.size() < 12 || line[8] != ' ') return ParseError::kBadStatusLine;
  int minor = parseVersion(line.substr(0, 8));
  if (minor == -1) return ParseError::kBadStatusLine;
  if (minor == -2) return ParseError::kUnsupportedVersion;
  std::string_view code = line.substr(9, 3);
  if (!isDigits(code) || code[0] == '0') return ParseError::kBadStatusLine;
  std::string_view reason;
  if (line.size() > 12) {
    if (line[12] != ' ') return ParseError::kBadStatusLine;
    reason = line.substr(13);
    for (char c : reason) {
      auto u = static_cast<uint8_t>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) return ParseError::kBadStatusLine;
    }
  }
  head_.version_minor_ = minor;
  head_.status_ = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
  head_.reason_ = reason.empty() ? MessageHead::Span{} : spanOf(reason);
  return ParseError::kNone;
}

ParseError Parser::parseFieldLine(std::string_view line, bool trailer) {
  if (isOws(line.front())) return ParseError::kObsFold;
  size_t i = 0;
  while (i < line.size() && isTchar(line[i])) ++i;
  if (i == line.size()) return ParseError::kMissingColon;
  if (line[i] != ':') {
    size_t j = i;
    while (j < line.size() && isOws(line[j])) ++j;
    if (j > i && j < line.size() && line[j] == ':') return ParseError::kWhitespaceBeforeColon;
    return line.find(':') == std::string_view::npos && j == line.size()
               ? ParseError::kMissingColon
               : ParseError::kInvalidHeaderName;
  }
  if (i == 0) return ParseError::kInvalidHeaderName;
  std::string_view name = line.substr(0, i);
  std::string_view untrimmed = line.substr(i + 1);
  for (char c : untrimmed) {
    auto u = static_cast<uint8_t>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return ParseError::kInvalidHeaderValue;
  }
  std::string_view value = trimOws(untrimmed);
  if (trailer) {
    // Framing fields in trailers would be read by nobody the same way (RFC 9110 6.5.1).
    if (equalsIgnoreCase(name, "content-length") || equalsIgnoreCase(name, "transfer-encoding") ||
        equalsIgnoreCase(name, "host")) {
      return ParseError::kInvalidHeaderName;
    }
    return ParseError::kNone;
  }
  head_.fields_.push_back(
      MessageHead::Field{spanOf(name), value.empty() ? MessageHead::Span{} : spanOf(value)});
  return noteField(name, value, untrimmed);
}

ParseError Parser::noteField(std::string_view name, std::string_view value,
                             std::string_view untrimmed) {
  switch (name.size()) {
    case 14:
      if (equalsIgnoreCase(name, "content-length")) {
        // Trailing whitespace is legal OWS, but not every upstream trims it: refused here.
        if (!untrimmed.empty() && isOws(untrimmed.back())) return ParseError::kInvalidContentLength;
        ParseError err = ParseError::kNone;
        forEachElement(value, [&](std::string_view v) {
          if (!isDigits(v) || v.size() > 18) {
            err = ParseError::kInvalidContentLength;
            return false;
          }
          uint64_t n = 0;
          for (char c : v) n = n * 10 + static_cast<uint64_t>(c - '0');
          if (n > kMaxContentLength) {
            err = ParseError::kInvalidContentLength;
            return false;
          }
          if (flags_.content_length && n != head_.content_length_) {
            err = ParseError::kConflictingContentLength;
            return false;
          }
          flags_.content_length = true;
          head_.content_length_ = n;
          return true;
        });
        return err;
      }
      break;
    case 17:
      if (equalsIgnoreCase(name, "transfer-encoding")) {
        if (flags_.transfer_encoding) return ParseError::kBadTransferEncoding;
        if (!untrimmed.empty() && isOws(untrimmed.back())) return ParseError::kBadTransferEncoding;
        flags_.transfer_encoding = true;
        bool ok = true;
        bool last_chunked = false;
        forEachElement(value, [&](std::string_view coding) {
          // chunked must be the final coding and appear once (RFC 9112 6.1); codings with
          // parameters are not accepted.
          if (!isToken(coding) || last_chunked) {
            ok = false;
            return false;
          }
          last_chunked = equalsIgnoreCase(coding, "chunked");
          return true;
        });
        if (!ok) return ParseError::kBadTransferEncoding;
        flags_.chunked = last_chunked;
        if (!last_chunked && kind_ == Kind::kRequest) return ParseError::kBadTransferEncoding;
        return ParseError::kNone;
      }
      break;
    case 4:
      if (kind_ == Kind::kRequest && equalsIgnoreCase(name, "host")) {
        if (flags_.host || !isValidAuthority(value)) return ParseError::kConflictingHost;
        flags_.host = true;
        flags_.host_value = value.empty() ? MessageHead::Span{} : spanOf(value);
        return ParseError::kNone;
      }
      break;
    case 10:
      if (equalsIgnoreCase(name, "connection")) {
        forEachElement(value, [&](std::string_view token) {
          if (equalsIgnoreCase(token, "close")) flags_.conn_close = true;
          if (equalsIgnoreCase(token, "keep-alive")) flags_.conn_keep_alive = true;
          if (equalsIgnoreCase(token, "upgrade")) flags_.conn_upgrade = true;
          return true;
        });
      }
      break;
    case 7:
      if (equalsIgnoreCase(name, "upgrade")) flags_.upgrade_field = true;
      break;
    case 6:
      if (equalsIgnoreCase(name, "expect") && equalsIgnoreCase(value, "100-continue")) {
        flags_.expect_continue = true;
      }
      break;
    default:
      break;
  }
  return ParseError::kNone;
}

ParseError Parser::finishHead() {
  MessageHead& h = head_;
  if (flags_.transfer_encoding && flags_.content_length) {
    return ParseError::kContentLengthWithTransferEncoding;
  }
  // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
  if (flags_.transfer_encoding && h.version_minor_ == 0) return ParseError::kBadTransferEncoding;
  h.keep_alive_ =
      h.version_minor_ == 1 ? !flags_.conn_close : (flags_.conn_keep_alive && !flags_.conn_close);
  if (kind_ == Kind::kRequest) {
    if (h.version_minor_ == 1 && !flags_.host) return ParseError::kMissingHost;
    if (!flags_.target_authority) h.authority_ = flags_.host_value;
    h.upgrade_ =
        (flags_.conn_upgrade && flags_.upgrade_field && h.version_minor_ == 1) || h.isConnect();
    h.expect_continue_ = flags_.expect_continue && h.version_minor_ == 1;
    if (flags_.transfer_encoding) {
      h.framing_ = Framing::kChunked;
    } else if (flags_.content_length) {
      h.framing_ = Framing::kContentLength;
    } else {
      h.framing_ = Framing::kNone;
    }
  } else {
    int s = h.status_;
    bool success_connect = responding_to_connect_ && s >= 200 && s < 300;
    if (s == 101 || success_connect) {
      h.framing_ = Framing::kTunnel;
      h.upgrade_ = true;
    } else if ((s >= 100 && s < 200) || s == 204 || s == 304 || responding_to_head_) {
      h.framing_ = Framing::kNone;
    } else if (flags_.transfer_encoding) {
      h.framing_ = flags_.chunked ? Framing::kChunked : Framing::kUntilClose;
    } else if (flags_.content_length) {
      h.framing_ = Framing::kContentLength;
    } else {
      h.framing_ = Framing::kUntilClose;
    }
    if (h.framing_ == Framing::kUntilClose) h.keep_alive_ = false;
  }
  switch (h.framing_) {
    case Framing::kContentLength:
      remaining_ = h.content_length_;
      state_ = State::kBodyLength;
      break;
    case Framing::kChunked:
      state_ = State::kChunkSize;
      break;
    case Framing::kUntilClose:
      state_ = State::kUntilClose;
      break;
    case Framing::kNone:
    case Framing::kTunnel:
      remaining_ = 0;
      state_ = State::kBodyLength;
      break;
  }
  return ParseError::kNone;
}

ParseError Parser::parseChunkLine(std::string_view line) {
  size_t i = 0;
  uint64_t size = 0;
  while (i < line.size()) {
    char c = line[i];
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    if (digit < 0) break;
    if (size > (kMaxContentLength >> 4)) return ParseError::kInvalidChunkSize;
    size = (size << 4) | static_cast<uint64_t>(digit);
    ++i;
  }
  if (i == 0) return ParseError::kInvalidChunkSize;
  std::string_view ext = line.substr(i);
  if (!ext.empty()) {
    // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ); the values are not used,
    // so the check is on shape: starts with ';' after BWS, then visible bytes, SP and HTAB.
    std::string_view t = trimOws(ext);
    if (t.empty() || t.front() != ';') return ParseError::kInvalidChunkExtension;
    for (char c : ext) {
      auto u = static_cast<uint8_t>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) return ParseError::kInvalidChunkExtension;
    }
  }
  if (size == 0) {
    state_ = State::kTrailer;
    return ParseError::kNone;
  }
  remaining_ = size;
  state_ = State::kChunkData;
  return ParseError::kNone;
}

// ---------------------------------------------------------------------------------------------
// Sniffing

Sniff sniffRequest(std::string_view b) {
  constexpr size_t kMaxMethod = 20;
  constexpr size_t kMaxLine = 8 * 1024;
  size_t i = 0;
  while (i < b.size() && b[i] >= 'A' && b[i] <= 'Z') ++i;
  if (i == b.size()) return i <= kMaxMethod ? Sniff::kNeedMore : Sniff::kNotHttp;
  if (i == 0 || i > kMaxMethod || b[i] != ' ') return Sniff::kNotHttp;
  size_t target_start = ++i;
  while (i < b.size()) {
    auto u = static_cast<uint8_t>(b[i]);
    if (u == ' ') break;
    if (u < 0x21 || u == 0x7f) return Sniff::kNotHttp;
    ++i;
  }
  if (i == b.size()) return i <= kMaxLine ? Sniff::kNeedMore : Sniff::kNotHttp;
  if (i == target_start) return Sniff::kNotHttp;
  std::string_view version = b.substr(i + 1);
  std::string_view want = "HTTP/1.";
  size_t cmp = std::min(version.size(), want.size());
  if (version.substr(0, cmp) != want.substr(0, cmp)) return Sniff::kNotHttp;
  if (version.size() <= want.size()) return Sniff::kNeedMore;
  return (version[7] == '0' || version[7] == '1') ? Sniff::kHttp : Sniff::kNotHttp;
}

}  // namespace remora::http
