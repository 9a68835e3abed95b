// libFuzzer target: per-request route matching (routing::matchHttpRoute and the Router's
// per-request pick) and what builds its input: RE2 compiles of regexes, string matches and
// rewrites, from the VirtualService parser or directly.
//
// Input: a route part, a line "===", then a request.
// - A route part holding "kind:" is YAML: it is appended to a fixed Service reviews
//   (10.1.122.241:9080, pods v1 and v2, a DestinationRule with subsets v1 and v2) and loaded
//   with config::Loader; the port's http routes are then matched.
// - Otherwise each line is a directive: "route" starts a route (and its first match entry),
//   "or" another match entry, "<what> <kind> <text>" adds a condition (what: uri, method,
//   authority, scheme, header:<name>, without:<name>, query:<name>; kind: exact, prefix,
//   regex, present, iexact, iprefix), "port <n>", "rewrite <pattern> <replacement>" and
//   "retry <retryOn>".
// - The request: "<method> <target>" on its first line, then "name: value" headers.
// Checks: matchHttpRoute picks the first route one of whose entries matches() the request (or
// the first route with none); the router's pick stays inside the port's subsets; in each
// pathNormalization mode (NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES) the request
// path's normalization is skipped (needsNormalization) only where it changes nothing, leaves no
// backslash, dot segment or (merging modes) doubled slash, and is idempotent unless its one
// decode made a new escape the mode decodes ("%%32%65" is "%2e", as in Envoy).
#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/loader.h"
#include "routing/http_route.h"
#include "routing/route_table.h"
#include "routing/static_route_table.h"
#include "security/security_policy.h"

namespace rr = remora::routing;

namespace {

constexpr std::string_view kWorld = R"(apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  clusterIP: 10.1.122.241
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: bookinfo, labels: {app: reviews, version: v1}}
status: {podIP: 10.244.1.10, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: bookinfo, labels: {app: reviews, version: v2}}
status: {podIP: 10.244.1.11, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
)";

std::vector<std::string_view> lines(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    out.push_back(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
  }
  return out;
}

std::pair<std::string_view, std::string_view> split(std::string_view s) {
  size_t sp = s.find(' ');
  if (sp == std::string_view::npos) return {s, {}};
  return {s.substr(0, sp), s.substr(sp + 1)};
}

std::optional<rr::StringMatch> stringMatch(std::string_view kind, std::string_view text) {
  rr::StringMatch m;
  if (kind == "regex") {
    auto re = rr::StringMatch::makeRegex(text);
    if (!re) return std::nullopt;
    return *re;
  }
  if (kind == "present") return m;
  bool fold = !kind.empty() && kind[0] == 'i';
  if (fold) kind.remove_prefix(1);
  if (kind != "exact" && kind != "prefix") return std::nullopt;
  m.kind = kind == "exact" ? rr::StringMatch::Kind::kExact : rr::StringMatch::Kind::kPrefix;
  m.value = std::string(text);
  m.ignore_case = fold;
  return m;
}

// Builds routes from directives into `port` (one subset, "all").
void buildDirect(std::string_view text, rr::ServicePort& port) {
  for (std::string_view line : lines(text)) {
    auto [word, rest] = split(line);
    if (word == "route") {
      port.http_routes.emplace_back();
      port.http_routes.back().matches.emplace_back();
      port.http_routes.back().destinations.push_back({{"reviews", "", 0}, 1, {}});
      continue;
    }
    if (port.http_routes.empty()) continue;
    rr::HttpRoute& route = port.http_routes.back();
    if (word == "or") {
      route.matches.emplace_back();
      continue;
    }
    if (word == "rewrite") {
      auto [pattern, replacement] = split(rest);
      rr::HttpRewrite rewrite;
      if (rr::setUriRegexRewrite(rewrite, pattern, replacement)) route.rewrite = rewrite;
      continue;
    }
    if (word == "retry") {
      rr::ParsedRetryOn parsed = rr::parseRetryOn(rest);
      route.retries.retry_on = parsed.bits;
      continue;
    }
    rr::HttpMatch& m = route.matches.back();
    if (word == "port") {
      m.port = static_cast<uint16_t>(std::strtoul(std::string(rest).c_str(), nullptr, 10));
      continue;
    }
    auto [kind, value] = split(rest);
    auto sm = stringMatch(kind, value);
    if (!sm) continue;
    if (word == "uri") m.uri = *sm;
    if (word == "method") m.method = *sm;
    if (word == "authority") m.authority = *sm;
    if (word == "scheme") m.scheme = *sm;
    for (std::string_view prefix : {"header:", "without:", "query:"}) {
      if (word.substr(0, prefix.size()) != prefix) continue;
      std::string name(word.substr(prefix.size()));
      if (prefix == "query:") {
        m.query_params.push_back({name, *sm});
      } else {
        m.headers.push_back({name, *sm, prefix == "without:"});
      }
    }
  }
}

int hexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Whether `path` holds an escape that `mode` would decode (or refuse, %00): only the one decode
// of an invalid escape next to an encoded hex digit can leave one in a normalized path.
bool holdsDecodableEscape(std::string_view path, remora::security::PathNormalization mode) {
  for (size_t i = 0; i + 2 < path.size(); ++i) {
    if (path[i] != '%') continue;
    const int hi = hexDigit(path[i + 1]);
    const int lo = hexDigit(path[i + 2]);
    if (hi < 0 || lo < 0) continue;
    const char c = static_cast<char>(hi * 16 + lo);
    if (c == 0 || std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '.' ||
        c == '_' || c == '~') {
      return true;
    }
    if (mode == remora::security::PathNormalization::kDecodeAndMergeSlashes &&
        (c == '/' || c == '\\')) {
      return true;
    }
  }
  return false;
}

bool hasDotSegment(std::string_view path) {
  size_t at = 0;
  while (at < path.size()) {
    const size_t next = std::min(path.find('/', at + 1), path.size());
    const std::string_view segment = path.substr(at + 1, next - at - 1);
    if (segment == "." || segment == "..") return true;
    at = next;
  }
  return false;
}

// The proxy normalizes each request's path once, in the configured mode, and skips the work
// where needsNormalization says it would change nothing.
void checkNormalization(std::string_view path) {
  using remora::security::PathNormalization;
  for (PathNormalization mode :
       {PathNormalization::kNone, PathNormalization::kBase, PathNormalization::kMergeSlashes,
        PathNormalization::kDecodeAndMergeSlashes}) {
    const std::optional<std::string> normalized = remora::security::normalizePath(path, mode);
    if (!remora::security::needsNormalization(path, mode) && (!normalized || *normalized != path)) {
      std::abort();
    }
    if (!normalized) {
      if (mode == PathNormalization::kNone) std::abort();  // NONE never refuses
      continue;
    }
    const std::string& out = *normalized;
    if (out.find('?') != std::string::npos) std::abort();  // the query is cut
    if (mode == PathNormalization::kNone) {
      if (out != path.substr(0, std::min(path.find('?'), path.size()))) std::abort();
      continue;
    }
    if (out.find('\\') != std::string::npos) std::abort();
    if (!out.empty() && out[0] == '/' && hasDotSegment(out)) std::abort();
    if (mode != PathNormalization::kBase && out != "//" && out.find("//") != std::string::npos) {
      std::abort();
    }
    if (!holdsDecodableEscape(out, mode) && remora::security::normalizePath(out, mode) != out) {
      std::abort();
    }
  }
}

void check(const rr::RouteTable& table, const rr::ServicePort& port, std::string_view request) {
  std::vector<std::string_view> ls = lines(request);
  std::vector<rr::HeaderField> headers;
  rr::RequestView view;
  view.port = port.port;
  view.method = "GET";
  if (!ls.empty()) {
    auto [method, target] = split(ls[0]);
    view.method = method;
    view.setTarget(target);
  }
  for (size_t i = 1; i < ls.size(); ++i) {
    size_t colon = ls[i].find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view value = ls[i].substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    headers.push_back({ls[i].substr(0, colon), value});
  }
  view.headers = headers;
  if (auto host = view.header("host")) view.authority = *host;

  checkNormalization(view.path);

  rr::HttpRouteMatch got = rr::matchHttpRoute(port, view);
  const rr::HttpRoute* expected = nullptr;
  for (const auto& route : port.http_routes) {
    bool any = route.matches.empty();
    for (const auto& m : route.matches) any = any || rr::matches(m, view);
    if (any) {
      expected = &route;
      break;
    }
  }
  if (got.route != expected) std::abort();
  if (got.route == nullptr) return;
  if (got.route->rewrite) (void)rr::rewritePath(*got.route->rewrite, got.match, view.path);

  auto router = rr::makeRouter(std::shared_ptr<const rr::RouteTable>(&table, [](auto*) {}), 1);
  rr::HttpRouteDecision d = router->routeRequest(port, *got.route);
  if (d.upstream.kind == rr::RouteDecision::Kind::kService &&
      d.upstream.subset_index >= port.subsets.size()) {
    std::abort();
  }
  if (d.destination != nullptr && d.destination->destination.subset_index >= port.subsets.size()) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t sep = input.find("\n===\n");
  std::string_view routes = input.substr(0, sep);
  std::string_view request = sep == std::string_view::npos ? "GET /" : input.substr(sep + 5);

  if (routes.find("kind:") != std::string_view::npos) {
    remora::config::Loader loader;
    auto table = loader.load(std::string(kWorld) + std::string(routes), 1);
    if (!table) return 0;
    const rr::ServicePort* port =
        (*table)->find(*remora::SocketAddress::parse("10.1.122.241:9080"));
    if (port == nullptr) std::abort();  // the fixed Service always loads
    check(**table, *port, request);
    return 0;
  }

  rr::ServicePortEntry entry;
  entry.port.service = "reviews.bookinfo";
  entry.port.port = 9080;
  entry.port.protocol = "HTTP";
  entry.cluster_ips.push_back(*remora::IpAddress::parse("10.1.122.241"));
  rr::Subset all;
  all.endpoints.append({*remora::SocketAddress::parse("10.244.1.10:80"), ""});
  entry.port.subsets.push_back(all);
  entry.port.route.push_back({0, 100});
  buildDirect(routes, entry.port);
  auto table = rr::StaticRouteTable::create({}, 1, {std::move(entry)});
  if (!table) std::abort();
  check(**table, (*table)->entries()[0].port, request);
  return 0;
}
