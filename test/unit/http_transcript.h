#pragma once

// Test helper shared by http_codec_test and the fuzz target: drives a remora::http::Parser over
// an input cut into pieces and records what came out (a Transcript), so that different cuts can
// be compared; and runs Debian's libhttp-parser over the same bytes as a second opinion.

#include <http_parser.h>

#include <algorithm>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/codec.h"

namespace remora::http::testing {

struct Message {
  std::string method, target, path, query, authority, reason;
  int status = 0;
  int version_minor = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  Framing framing = Framing::kNone;
  uint64_t content_length = 0;
  bool keep_alive = false;
  bool upgrade = false;
  bool expect_continue = false;
  std::string head_raw;
  std::string body;      // de-chunked
  std::string raw_body;  // the bytes consumed after the head, framing included
  bool complete = false;
  bool operator==(const Message&) const = default;
};

struct Transcript {
  std::vector<Message> messages;
  ParseError error = ParseError::kNone;
  std::string tunnel;  // bytes after a message that made the connection a tunnel
  bool operator==(const Transcript&) const = default;
};

inline Message capture(const MessageHead& h) {
  Message m;
  m.method = h.method();
  m.target = h.target();
  m.path = h.path();
  m.query = h.query();
  m.authority = h.authority();
  m.reason = h.reason();
  m.status = h.status();
  m.version_minor = h.versionMinor();
  for (size_t i = 0; i < h.headerCount(); ++i) {
    m.headers.emplace_back(h.header(i).name, h.header(i).value);
  }
  m.framing = h.framing();
  m.content_length = h.contentLength();
  m.keep_alive = h.keepAlive();
  m.upgrade = h.upgrade();
  m.expect_continue = h.expectContinue();
  m.head_raw = h.raw();
  return m;
}

// Feeds `input` in the pieces `cut` yields (sizes, each >= 1), then finish() if `close`.
// `methods` are the request methods the responses answer, in order (response parsers).
inline Transcript run(Parser::Kind kind, std::string_view input,
                      const std::function<size_t(size_t offset)>& cut, bool close = true,
                      const std::vector<std::string>& methods = {}, Limits limits = {}) {
  Parser p(kind, limits);
  Transcript t;
  size_t next_method = 0;
  auto answerNext = [&] {
    p.respondingTo(next_method < methods.size() ? methods[next_method] : "GET");
  };
  answerNext();
  bool in_message = false;
  bool tunnel = false;
  auto handle = [&](const Step& s, std::string_view consumed) {
    if (in_message) t.messages.back().raw_body.append(consumed);
    switch (s.event) {
      case Event::kHead:
        t.messages.push_back(capture(p.head()));
        in_message = true;
        break;
      case Event::kBody:
        t.messages.back().body.append(s.body);
        break;
      case Event::kMessageComplete:
        t.messages.back().complete = true;
        in_message = false;
        if (t.messages.back().framing == Framing::kTunnel) tunnel = true;
        if (t.messages.back().status >= 200 || t.messages.back().status == 101 ||
            kind == Parser::Kind::kRequest) {
          ++next_method;
          answerNext();
        }
        break;
      case Event::kError:
        t.error = p.error();
        break;
      case Event::kNeedMore:
        break;
    }
  };
  size_t offset = 0;
  while (offset < input.size() && t.error == ParseError::kNone) {
    size_t len = std::min(std::max<size_t>(cut(offset), 1), input.size() - offset);
    std::string_view piece = input.substr(offset, len);
    offset += len;
    while (t.error == ParseError::kNone) {
      if (tunnel) {
        t.tunnel.append(piece);
        break;
      }
      Step s = p.feed(piece);
      handle(s, piece.substr(0, s.consumed));
      piece.remove_prefix(s.consumed);
      if (s.event == Event::kNeedMore) break;
    }
  }
  if (close && t.error == ParseError::kNone && !tunnel) {
    Step s = p.finish();
    handle(s, {});
    if (s.event == Event::kMessageComplete) handle(p.finish(), {});
  }
  // Where in a refused message the parser noticed depends on the cuts; what it refused does not.
  if (t.error != ParseError::kNone && !t.messages.empty() && !t.messages.back().complete) {
    t.messages.back().raw_body.clear();
  }
  return t;
}

inline Transcript runWhole(Parser::Kind kind, std::string_view input, bool close = true,
                           const std::vector<std::string>& methods = {}) {
  return run(
      kind, input, [&](size_t) { return input.size(); }, close, methods);
}

// Debian's libhttp-parser over the same request bytes: the body of each message, or nullopt
// when it refuses them. Used as a second opinion: whatever remora::http accepts, it must frame
// the same way.
struct HttpParserOpinion {
  bool ok = false;
  std::vector<std::string> bodies;  // one per complete message
};

// Several Content-Length fields, or a list in one: RFC 9110 8.6 lets a recipient accept identical
// values (remora::http does); libhttp-parser refuses them, so comparisons skip such messages.
inline bool hasContentLengthList(const Message& m) {
  int fields = 0;
  for (const auto& [name, value] : m.headers) {
    if (equalsIgnoreCase(name, "content-length")) {
      ++fields;
      if (value.find(',') != std::string::npos) return true;
    }
  }
  return fields > 1;
}

// `response`: parse as responses (to GET), and signal the close at the end, which completes a
// close-delimited body.
inline HttpParserOpinion httpParserOpinion(std::string_view input, bool response = false) {
  struct State {
    std::vector<std::string> bodies;
    std::string current;
  } state;
  http_parser parser{};
  http_parser_settings settings{};
  http_parser_init(&parser, response ? HTTP_RESPONSE : HTTP_REQUEST);
  http_parser_settings_init(&settings);
  parser.data = &state;
  settings.on_body = [](http_parser* hp, const char* at, size_t len) {
    static_cast<State*>(hp->data)->current.append(at, len);
    return 0;
  };
  settings.on_message_complete = [](http_parser* hp) {
    auto* s = static_cast<State*>(hp->data);
    s->bodies.push_back(std::move(s->current));
    s->current.clear();
    return 0;
  };
  size_t n = http_parser_execute(&parser, &settings, input.data(), input.size());
  HttpParserOpinion o;
  o.ok = n == input.size() && HTTP_PARSER_ERRNO(&parser) == HPE_OK;
  if (o.ok && response && parser.upgrade == 0) {
    http_parser_execute(&parser, &settings, nullptr, 0);
    o.ok = HTTP_PARSER_ERRNO(&parser) == HPE_OK;
  }
  o.bodies = std::move(state.bodies);
  return o;
}

}  // namespace remora::http::testing
