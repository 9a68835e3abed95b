// The writing half of the codec: request and response heads for the proxy's two sides, chunks,
// and the replies the proxy makes itself.
#include <array>
#include <charconv>
#include <string_view>
#include <vector>

#include "http/chars.h"
#include "http/codec.h"

namespace remora::http {

using detail::isSafeValue;
using detail::isToken;
using detail::trimOws;

namespace {

void appendField(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append("\r\n");
}

void appendNumber(std::string& out, uint64_t n, int base = 10) {
  std::array<char, 24> buf{};
  auto r = std::to_chars(buf.data(), buf.data() + buf.size(), n, base);
  out.append(buf.data(), r.ptr);
}

// Fields that describe one connection, not the message (RFC 9110 7.6.1), and so are not
// forwarded: the proxy's connections have their own.
bool isHopByHop(std::string_view name) {
  static constexpr std::array<std::string_view, 5> kNames = {"connection", "keep-alive",
                                                             "proxy-connection", "te", "upgrade"};
  for (std::string_view h : kNames) {
    if (equalsIgnoreCase(name, h)) return true;
  }
  return false;
}

// Fields a Connection header may not make the proxy drop: removing them would change how the
// message is framed or routed upstream ("Connection: content-length" is a known attack).
bool isProtected(std::string_view name) {
  return equalsIgnoreCase(name, "content-length") || equalsIgnoreCase(name, "transfer-encoding") ||
         equalsIgnoreCase(name, "host");
}

// The field names the Connection fields of a head list (RFC 9110 7.6.1), gathered once per head
// so that each forwarded field is checked against a short list instead of every field again.
// Protected names are left out: they are never dropped.
class ConnectionOptions {
 public:
  explicit ConnectionOptions(const MessageHead& head) {
    for (size_t i = 0; i < head.headerCount(); ++i) {
      HeaderField f = head.header(i);
      if (!equalsIgnoreCase(f.name, "connection")) continue;
      std::string_view v = f.value;
      while (!v.empty()) {
        size_t comma = v.find(',');
        std::string_view token = trimOws(v.substr(0, comma));
        if (!token.empty() && !isProtected(token)) add(token);
        if (comma == std::string_view::npos) break;
        v.remove_prefix(comma + 1);
      }
    }
  }
  bool names(std::string_view name) const {
    for (size_t i = 0; i < inline_count_; ++i) {
      if (equalsIgnoreCase(inline_[i], name)) return true;
    }
    for (std::string_view t : more_) {
      if (equalsIgnoreCase(t, name)) return true;
    }
    return false;
  }

 private:
  void add(std::string_view token) {
    if (inline_count_ < inline_.size()) {
      inline_[inline_count_++] = token;
    } else {
      more_.push_back(token);
    }
  }
  std::array<std::string_view, 8> inline_{};
  size_t inline_count_ = 0;
  std::vector<std::string_view> more_;  // a Connection field with more than 8 options
};

bool editedAway(const HeaderEdits* edits, std::string_view name) {
  if (edits == nullptr) return false;
  for (const std::string& r : edits->remove) {
    if (equalsIgnoreCase(r, name)) return true;
  }
  for (const auto& [n, v] : edits->set) {
    if (equalsIgnoreCase(n, name)) return true;
  }
  return false;
}

// A config edit or an extra field is written only if it cannot inject a line or a field.
void appendChecked(std::string& out, std::string_view name, std::string_view value) {
  if (isToken(name) && isSafeValue(value)) appendField(out, name, value);
}

void appendEditsAndExtra(std::string& out, const HeaderEdits* edits,
                         const std::vector<HeaderField>& extra) {
  if (edits != nullptr) {
    for (const auto& [n, v] : edits->set) appendChecked(out, n, v);
    for (const auto& [n, v] : edits->add) appendChecked(out, n, v);
  }
  for (const HeaderField& f : extra) appendChecked(out, f.name, f.value);
}

// The fields of `head` that go on to the next hop: everything but the hop-by-hop ones, the
// names `skip` says the caller writes itself, and a Content-Length the caller rewrites once.
template <typename Skip>
void appendForwardedFields(std::string& out, const MessageHead& head, bool keep_upgrade,
                           const HeaderEdits* edits, Skip&& skip) {
  const ConnectionOptions connection_options(head);
  for (size_t i = 0; i < head.headerCount(); ++i) {
    HeaderField f = head.header(i);
    if (keep_upgrade && equalsIgnoreCase(f.name, "upgrade")) {
      appendField(out, f.name, f.value);
      continue;
    }
    if (isHopByHop(f.name) || connection_options.names(f.name)) continue;
    if (head.framing() == Framing::kContentLength && equalsIgnoreCase(f.name, "content-length")) {
      continue;
    }
    if (skip(f.name) || editedAway(edits, f.name)) continue;
    appendField(out, f.name, f.value);
  }
}

void appendContentLength(std::string& out, uint64_t n) {
  out.append("content-length: ");
  appendNumber(out, n);
  out.append("\r\n");
}

}  // namespace

void writeRequestHead(const MessageHead& request, const RequestHeadOptions& options,
                      std::string& out) {
  std::string_view target = options.target.empty() ? request.target() : options.target;
  std::string_view authority = options.authority.empty() ? request.authority() : options.authority;
  if (!isSafeValue(target) || target.find(' ') != std::string_view::npos) target = request.target();
  if (!isSafeValue(authority)) authority = request.authority();
  out.append(request.method());
  out.push_back(' ');
  out.append(target);
  out.append(" HTTP/1.1\r\n");
  appendField(out, "host", authority);
  bool keep_upgrade = request.upgrade() && !request.isConnect();
  appendForwardedFields(out, request, keep_upgrade, options.edits, [&](std::string_view name) {
    return equalsIgnoreCase(name, "host") ||
           (!options.request_id.empty() && equalsIgnoreCase(name, "x-request-id"));
  });
  appendEditsAndExtra(out, options.edits, options.extra);
  if (!options.request_id.empty()) appendChecked(out, "x-request-id", options.request_id);
  if (keep_upgrade) out.append("connection: upgrade\r\n");
  if (request.framing() == Framing::kContentLength) {
    appendContentLength(out, request.contentLength());
  }
  out.append("\r\n");
}

void writeResponseHead(const MessageHead& response, const ResponseHeadOptions& options,
                       std::string& out) {
  out.append("HTTP/1.1 ");
  appendNumber(out, static_cast<uint64_t>(response.status()));
  out.push_back(' ');
  out.append(response.reason().empty() ? reasonPhrase(response.status()) : response.reason());
  out.append("\r\n");
  bool tunnel = response.framing() == Framing::kTunnel && response.status() == 101;
  appendForwardedFields(out, response, tunnel, options.edits,
                        [](std::string_view) { return false; });
  appendEditsAndExtra(out, options.edits, options.extra);
  if (tunnel) {
    out.append("connection: upgrade\r\n");
  } else if (options.close || response.framing() == Framing::kUntilClose) {
    out.append("connection: close\r\n");
  } else if (options.keep_alive_http10) {
    out.append("connection: keep-alive\r\n");
  }
  if (response.framing() == Framing::kContentLength) {
    appendContentLength(out, response.contentLength());
  }
  out.append("\r\n");
}

void writeChunk(std::string_view data, std::string& out) {
  if (data.empty()) return;  // an empty chunk would end the body
  appendNumber(out, data.size(), 16);
  out.append("\r\n");
  out.append(data);
  out.append("\r\n");
}

void writeLastChunk(std::string& out) { out.append("0\r\n\r\n"); }

namespace {

struct StatusText {
  int status;
  std::string_view reason;
  std::string_view body;  // for the statuses the proxy answers itself
};

constexpr StatusText kStatusTexts[] = {
    {100, "Continue", ""},
    {101, "Switching Protocols", ""},
    {200, "OK", ""},
    {201, "Created", ""},
    {202, "Accepted", ""},
    {204, "No Content", ""},
    {301, "Moved Permanently", ""},
    {302, "Found", ""},
    {303, "See Other", ""},
    {304, "Not Modified", ""},
    {307, "Temporary Redirect", ""},
    {308, "Permanent Redirect", ""},
    {400, "Bad Request", "bad request\n"},
    {401, "Unauthorized", ""},
    {403, "Forbidden", "access denied\n"},
    {404, "Not Found", "no route for this request\n"},
    {405, "Method Not Allowed", ""},
    {408, "Request Timeout", "request timeout\n"},
    {413, "Content Too Large", "request body too large\n"},
    {414, "URI Too Long", "request URI too long\n"},
    {429, "Too Many Requests", ""},
    {431, "Request Header Fields Too Large", "request header fields too large\n"},
    {500, "Internal Server Error", "internal error\n"},
    {501, "Not Implemented", ""},
    {502, "Bad Gateway", "upstream sent an invalid response or reset the connection\n"},
    {503, "Service Unavailable", "no upstream available\n"},
    {504, "Gateway Timeout", "upstream request timeout\n"},
    {505, "HTTP Version Not Supported", "HTTP version not supported\n"},
};

const StatusText* statusText(int status) {
  for (const StatusText& t : kStatusTexts) {
    if (t.status == status) return &t;
  }
  return nullptr;
}

}  // namespace

std::string_view reasonPhrase(int status) {
  const StatusText* t = statusText(status);
  return t != nullptr ? t->reason : "";
}

std::string_view defaultBody(int status) {
  const StatusText* t = statusText(status);
  return t != nullptr ? t->body : "";
}

void writeLocalReply(const LocalReply& reply, std::string& out) {
  // 1xx, 204 and 304 carry no body and no Content-Length worth stating.
  bool bodiless = reply.status < 200 || reply.status == 204 || reply.status == 304;
  std::string_view body = reply.body.empty() ? defaultBody(reply.status) : reply.body;
  out.append("HTTP/1.1 ");
  appendNumber(out, static_cast<uint64_t>(reply.status));
  out.push_back(' ');
  out.append(reasonPhrase(reply.status));
  out.append("\r\n");
  if (!bodiless) {
    if (!body.empty()) out.append("content-type: text/plain\r\n");
    appendContentLength(out, body.size());
  }
  for (const HeaderField& f : reply.extra) appendChecked(out, f.name, f.value);
  if (reply.close) out.append("connection: close\r\n");
  out.append("\r\n");
  if (!bodiless && !reply.head_request) out.append(body);
}

void writeErrorReply(ParseError e, std::string& out) {
  std::string body(describe(e));
  body.push_back('\n');
  LocalReply reply;
  reply.status = httpStatus(e);
  reply.body = body;
  reply.close = true;
  writeLocalReply(reply, out);
}

}  // namespace remora::http
