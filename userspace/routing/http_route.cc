// Request matching for VirtualService http[] routes: pure functions over a RequestView, no
// allocation on the common path (a repeated header or an encoded query value is the exception).

#include "routing/http_route.h"

#include <re2/re2.h>

#include <algorithm>

#include "common/hex.h"
#include "routing/route_table.h"

namespace remora::routing {
namespace {

char lowerAscii(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lowerAscii(a[i]) != lowerAscii(b[i])) return false;
  }
  return true;
}

bool fullMatch(const re2::RE2& re, std::string_view text) {
  return re2::RE2::FullMatch(re2::StringPiece(text.data(), text.size()), re);
}

// %XX decoding; a malformed escape stays as written. Returns `text` itself when it holds no
// escape, else a view of `buffer`.
std::string_view percentDecode(std::string_view text, std::string& buffer) {
  if (text.find('%') == std::string_view::npos) return text;
  buffer.clear();
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      int hi = hexDigitValue(text[i + 1]);
      int lo = hexDigitValue(text[i + 2]);
      if (hi >= 0 && lo >= 0) {
        buffer.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    buffer.push_back(text[i]);
  }
  return buffer;
}

// The first value of query parameter `name` (names compare after decoding, as Envoy's
// parseAndDecodeQueryString does); nullopt when absent. "?a" has a present, empty value.
std::optional<std::string_view> queryParam(std::string_view query, std::string_view name,
                                           std::string& name_buffer, std::string& value_buffer) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::string_view key = pair.substr(0, eq);
    if (percentDecode(key, name_buffer) != name) continue;
    std::string_view value =
        eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    return percentDecode(value, value_buffer);
  }
  return std::nullopt;
}

bool labelsContain(const LabelList& wanted, const LabelList* labels) {
  if (wanted.empty()) return true;
  if (labels == nullptr) return false;
  // Both sorted by key: a merge.
  auto it = labels->begin();
  for (const auto& [key, value] : wanted) {
    while (it != labels->end() && it->first < key) ++it;
    if (it == labels->end() || it->first != key || it->second != value) return false;
  }
  return true;
}

// Envoy's header matching: repeated headers are joined with ',' before matching; an absent
// header satisfies only an inverted presence check.
bool headerHolds(const HeaderMatch& hm, const RequestView& request) {
  std::optional<std::string_view> first;
  std::string joined;
  bool repeated = false;
  for (const HeaderField& h : request.headers) {
    if (!equalsIgnoreCase(h.name, hm.name)) continue;
    if (!first) {
      first = h.value;
      continue;
    }
    if (!repeated) {
      joined.assign(*first);
      repeated = true;
    }
    joined.push_back(',');
    joined.append(h.value);
  }
  if (!first) return hm.invert && hm.value.kind == StringMatch::Kind::kPresent;
  bool holds = hm.value.matches(repeated ? std::string_view(joined) : *first);
  return holds != hm.invert;
}

}  // namespace

bool StringMatch::matches(std::string_view text) const {
  switch (kind) {
    case Kind::kPresent:
      return true;
    case Kind::kExact:
      return ignore_case ? equalsIgnoreCase(text, value) : text == value;
    case Kind::kPrefix:
      if (text.size() < value.size()) return false;
      return ignore_case ? equalsIgnoreCase(text.substr(0, value.size()), value)
                         : text.substr(0, value.size()) == value;
    case Kind::kRegex:
      return regex != nullptr && fullMatch(*regex, text);
  }
  return false;
}

Result<StringMatch> StringMatch::makeRegex(std::string_view pattern) {
  re2::RE2::Options options;
  options.set_log_errors(false);
  auto re = std::make_shared<re2::RE2>(re2::StringPiece(pattern.data(), pattern.size()), options);
  if (!re->ok())
    return makeError("invalid RE2 regex '" + std::string(pattern) + "': " + re->error());
  StringMatch m;
  m.kind = Kind::kRegex;
  m.value = std::string(pattern);
  m.regex = std::move(re);
  return m;
}

Result<void> setUriRegexRewrite(HttpRewrite& rewrite, std::string_view pattern,
                                std::string_view replacement) {
  auto compiled = StringMatch::makeRegex(pattern);
  if (!compiled) return compiled.error();
  std::string why;
  re2::StringPiece with(replacement.data(), replacement.size());
  if (!compiled->regex->CheckRewriteString(with, &why)) {
    return makeError("invalid rewrite '" + std::string(replacement) + "': " + why);
  }
  rewrite.uri_regex = compiled->regex;
  rewrite.uri_regex_rewrite = std::string(replacement);
  return {};
}

RetryPolicy RetryPolicy::istioDefault() {
  RetryPolicy p;
  p.attempts = 2;
  p.retry_on = kRetryOnConnectFailure | kRetryOnRefusedStream | kRetryOnRetriableStatusCodes;
  p.retriable_status_codes = {503};
  return p;
}

void RequestView::setTarget(std::string_view target) {
  size_t q = target.find('?');
  path = target.substr(0, q);
  query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
  // A fragment never belongs to the path or the query (clients should not send one).
  if (size_t hash = query.find('#'); hash != std::string_view::npos) query = query.substr(0, hash);
  if (size_t hash = path.find('#'); hash != std::string_view::npos) path = path.substr(0, hash);
}

std::optional<std::string_view> RequestView::header(std::string_view name) const {
  for (const HeaderField& h : headers) {
    if (equalsIgnoreCase(h.name, name)) return h.value;
  }
  return std::nullopt;
}

bool matches(const HttpMatch& match, const RequestView& request) {
  switch (match.source) {
    case HttpMatch::Source::kNever:
      return false;
    case HttpMatch::Source::kHolds:
      break;
    case HttpMatch::Source::kUnchecked:
      if (!labelsContain(match.source_labels, request.source_labels)) return false;
      if (!match.source_namespace.empty() && match.source_namespace != request.source_namespace) {
        return false;
      }
      break;
  }
  if (match.port != 0 && match.port != request.port) return false;
  if (match.method && !match.method->matches(request.method)) return false;
  if (match.uri && !match.uri->matches(request.path)) return false;
  if (match.scheme && !match.scheme->matches(request.scheme)) return false;
  if (match.authority && !match.authority->matches(request.authority)) return false;
  for (const HeaderMatch& hm : match.headers) {
    if (!headerHolds(hm, request)) return false;
  }
  if (!match.query_params.empty()) {
    std::string name_buffer;
    std::string value_buffer;
    for (const QueryParamMatch& qm : match.query_params) {
      auto value = queryParam(request.query, qm.name, name_buffer, value_buffer);
      if (!value || !qm.value.matches(*value)) return false;
    }
  }
  return true;
}

HttpRouteMatch matchHttpRoute(const ServicePort& port, const RequestView& request) {
  for (const HttpRoute& route : port.http_routes) {
    if (route.matches.empty()) return {&route, nullptr};
    for (const HttpMatch& m : route.matches) {
      if (matches(m, request)) return {&route, &m};
    }
  }
  return {};
}

std::string rewritePath(const HttpRewrite& rewrite, const HttpMatch* matched,
                        std::string_view path) {
  if (rewrite.uri_regex != nullptr) {
    std::string out(path);
    re2::RE2::GlobalReplace(&out, *rewrite.uri_regex, rewrite.uri_regex_rewrite);
    return out;
  }
  if (rewrite.uri.empty()) return std::string(path);
  const StringMatch* uri = matched != nullptr && matched->uri ? &*matched->uri : nullptr;
  size_t replaced = 1;  // no uri match: Envoy's implicit prefix "/"
  if (uri != nullptr) {
    replaced = uri->kind == StringMatch::Kind::kPrefix ? uri->value.size() : path.size();
  }
  if (uri == nullptr && (path.empty() || path[0] != '/')) replaced = 0;
  replaced = std::min(replaced, path.size());
  std::string out = rewrite.uri;
  out.append(path.substr(replaced));
  return out;
}

ParsedRetryOn parseRetryOn(std::string_view text) {
  static constexpr std::pair<std::string_view, uint32_t> kNames[] = {
      {"5xx", kRetryOn5xx},
      {"gateway-error", kRetryOnGatewayError},
      {"connect-failure", kRetryOnConnectFailure},
      {"reset", kRetryOnReset},
      {"retriable-status-codes", kRetryOnRetriableStatusCodes},
      {"refused-stream", kRetryOnRefusedStream},
      {"retriable-4xx", kRetryOnRetriable4xx},
  };
  ParsedRetryOn out;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.empty()) continue;
    auto named = std::find_if(std::begin(kNames), std::end(kNames),
                              [&](const auto& n) { return n.first == item; });
    if (named != std::end(kNames)) {
      out.bits |= named->second;
      continue;
    }
    // Istio accepts bare status codes in retryOn and adds retriable-status-codes for them.
    uint32_t code = 0;
    bool digits = item.size() == 3;
    for (char c : item) {
      digits = digits && c >= '0' && c <= '9';
      code = code * 10 + static_cast<uint32_t>(c - '0');
    }
    if (digits && code >= 100 && code <= 599) {
      out.bits |= kRetryOnRetriableStatusCodes;
      if (std::find(out.codes.begin(), out.codes.end(), code) == out.codes.end()) {
        out.codes.push_back(static_cast<uint16_t>(code));
      }
      continue;
    }
    out.unknown.emplace_back(item);
  }
  return out;
}

}  // namespace remora::routing
