#pragma once

// The L7 (HTTP/1.1) part of the route model: what a VirtualService's http[] routes and a
// DestinationRule's trafficPolicy become once the config library has checked them, and the pure
// request-matching logic over it. Immutable once built, like the rest of the RouteTable; the
// per-worker state (weighted-pick counters, fault and mirror counters) lives in the Router.
//
// Semantics follow Istio's translation to Envoy (docs/CONFIG.md, "HTTP routes"): the first
// route whose match holds wins, matches are an OR of ANDs, regexes are RE2 full matches.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace re2 {
class RE2;
}

namespace remora::routing {

struct ServicePort;

// Sorted by key, like config::Labels.
using LabelList = std::vector<std::pair<std::string, std::string>>;

// Istio's StringMatch (exact / prefix / regex), plus "present" for a header or query parameter
// given as `{}`. A regex is an RE2 full match of the whole value, as Envoy's safe_regex is.
struct StringMatch {
  enum class Kind : uint8_t { kExact, kPrefix, kRegex, kPresent };
  Kind kind = Kind::kPresent;
  std::string value;                      // the text for kExact/kPrefix, the pattern for kRegex
  std::shared_ptr<const re2::RE2> regex;  // compiled, for kRegex (shared: ServicePort copies)
  bool ignore_case = false;               // ASCII case folding for kExact/kPrefix

  bool matches(std::string_view text) const;
  // Compiles `pattern` into a kRegex match; the error names RE2's reason.
  static Result<StringMatch> makeRegex(std::string_view pattern);
};

struct HeaderMatch {
  std::string name;  // lower case; header names compare case-insensitively
  StringMatch value;
  // From withoutHeaders: the condition holds when `value` does not. As in Envoy's invert_match,
  // an absent header satisfies an inverted kPresent only; an inverted exact/prefix/regex on an
  // absent header does not hold.
  bool invert = false;
};

struct QueryParamMatch {
  std::string name;   // case-sensitive, as Envoy compares query parameter names
  StringMatch value;  // kExact or kRegex (Istio accepts only those); kPresent for `{}`
};

// One entry of a route's match list: every condition set here must hold (AND).
struct HttpMatch {
  std::string name;
  std::optional<StringMatch> uri;  // against the path without the query string
  std::optional<StringMatch> scheme;
  std::optional<StringMatch> method;
  std::optional<StringMatch> authority;  // Host / :authority
  std::vector<HeaderMatch> headers;      // headers and withoutHeaders
  std::vector<QueryParamMatch> query_params;
  uint16_t port = 0;             // 0: any port
  LabelList source_labels;       // subset of the client workload's labels; empty: any
  std::string source_namespace;  // the client workload's namespace; empty: any
  // The client is the proxy's own workload, so the table builder holds source_labels and
  // source_namespace against it once per table, as istiod does per proxy, and records the
  // outcome here: matches() then never looks at them per request. kUnchecked (tables built in
  // code) checks them against RequestView::source_labels / source_namespace.
  enum class Source : uint8_t { kUnchecked, kHolds, kNever };
  Source source = Source::kUnchecked;
  bool ignore_uri_case = false;
  int line = 0;  // in the config file, for dumps; 0 when built in code
};

// Header manipulation (Istio's Headers.HeaderOperations). Names are lower case.
struct HeaderOps {
  std::vector<std::pair<std::string, std::string>> set;  // replace (or add when absent)
  std::vector<std::pair<std::string, std::string>> add;  // append another value
  std::vector<std::string> remove;
  bool empty() const { return set.empty() && add.empty() && remove.empty(); }
};

struct HeaderOpsPair {
  HeaderOps request;
  HeaderOps response;
};

// Where a request (or its mirror) goes: one of the ServicePort's subsets. A destination on
// another Service (or another port) is a subset of this ServicePort too, holding that port's
// endpoints and its DestinationRule's settings, as the L4 route does.
struct HttpDestination {
  std::string host;           // as written in the VirtualService, for dumps
  std::string subset_name;    // as written; the subset's own name may be "host/subset"
  uint32_t subset_index = 0;  // into ServicePort::subsets
};

struct HttpRouteDestination {
  HttpDestination destination;
  uint32_t weight = 0;
  HeaderOpsPair headers;  // per-destination, applied after the route's own
};

// An exact percentage in parts per million (Istio's Percent.value × 10^4).
struct Percentage {
  static constexpr uint32_t kMillion = 1'000'000;
  uint32_t per_million = 0;
  bool operator==(const Percentage&) const = default;
};

// Deterministic sampling: call i (0-based) hits when ⌊(i+1)·p⌋ > ⌊i·p⌋. Over any window of N
// consecutive calls the hit count is ⌊N·p⌋ or ⌈N·p⌉, spread evenly; never random.
class ExactPercentage {
 public:
  ExactPercentage() = default;
  explicit ExactPercentage(Percentage p)
      : per_million_(p.per_million < Percentage::kMillion ? p.per_million : Percentage::kMillion) {}
  bool next() {
    accumulator_ += per_million_;
    if (accumulator_ < Percentage::kMillion) return false;
    accumulator_ -= Percentage::kMillion;
    return true;
  }

 private:
  uint32_t per_million_ = 0;
  uint32_t accumulator_ = 0;
};

// retryOn conditions (Envoy's x-envoy-retry-on names).
enum RetryOn : uint32_t {
  kRetryOn5xx = 1U << 0,
  kRetryOnGatewayError = 1U << 1,  // 502, 503, 504
  kRetryOnConnectFailure = 1U << 2,
  kRetryOnReset = 1U << 3,  // the upstream reset (or closed) before the response began
  kRetryOnRetriableStatusCodes = 1U << 4,
  kRetryOnRefusedStream = 1U << 5,  // HTTP/2 only: never true on HTTP/1.1 upstreams
  kRetryOnRetriable4xx = 1U << 6,   // 409
};

struct RetryPolicy {
  uint32_t attempts = 0;                         // retries after the first try; 0: none
  std::chrono::milliseconds per_try_timeout{0};  // 0: the route timeout bounds each try
  uint32_t retry_on = 0;                         // RetryOn bits
  std::vector<uint16_t> retriable_status_codes;
  // Istio's default when a route sets no retries: 2 attempts on connect-failure,
  // refused-stream and retriable-status-codes (503).
  static RetryPolicy istioDefault();
};

struct HttpRewrite {
  std::string uri;  // replaces the matched prefix (prefix match) or the whole path
  std::string authority;
  std::shared_ptr<const re2::RE2> uri_regex;  // uriRegexRewrite.match, when set
  std::string uri_regex_rewrite;              // its rewrite, with \1-style groups
};

struct HttpRedirect {
  std::string uri;        // empty: keep the path
  std::string authority;  // empty: keep the host
  std::string scheme;     // empty: keep
  uint16_t port = 0;      // 0: per derive_from_request_port, else the scheme's default
  bool derive_from_request_port = false;
  uint16_t code = 301;
};

struct HttpDirectResponse {
  uint16_t status = 200;
  std::string body;
};

struct HttpFault {
  // delay: hold the request this long before routing it
  std::optional<std::chrono::milliseconds> delay;
  Percentage delay_percentage;
  // abort: answer with this status instead of routing
  std::optional<uint16_t> abort_status;
  Percentage abort_percentage;
};

// One of a route's mirrors (VirtualService `mirror` + `mirrorPercentage`, or one entry of
// `mirrors[]`): each is drawn on its own, exactly, so a request may be copied to several.
struct HttpMirrorPolicy {
  HttpDestination destination;
  Percentage percentage{Percentage::kMillion};
};

struct HttpRoute {
  std::string name;
  std::string field;  // "spec.http[2]", for dumps and findings
  int line = 0;
  std::vector<HttpMatch> matches;                  // OR; empty: every request
  std::vector<HttpRouteDestination> destinations;  // weighted; empty with redirect/direct
  HeaderOpsPair headers;
  std::optional<HttpRewrite> rewrite;
  std::optional<HttpRedirect> redirect;
  std::optional<HttpDirectResponse> direct_response;
  std::vector<HttpMirrorPolicy> mirrors;  // in the order written
  std::chrono::milliseconds timeout{0};   // 0: none (Istio's default for HTTP routes)
  RetryPolicy retries = RetryPolicy::istioDefault();
  HttpFault fault;
};

// DestinationRule trafficPolicy.connectionPool. Defaults are Istio's (circuit breakers at
// 2^32-1, i.e. off).
struct ConnectionPoolSettings {
  static constexpr uint32_t kUnlimited = UINT32_MAX;
  // Limits count per subset (Envoy's cluster), across the proxy's workers.
  uint32_t max_connections = kUnlimited;
  std::chrono::milliseconds connect_timeout{10000};
  // tcp.tcpKeepalive; nullopt: the proxy's own keepalive setting.
  struct Keepalive {
    uint32_t probes = 0;  // 0: the kernel's default
    std::chrono::milliseconds time{0};
    std::chrono::milliseconds interval{0};
    bool operator==(const Keepalive&) const = default;
  };
  std::optional<Keepalive> tcp_keepalive;
  uint32_t http1_max_pending_requests = kUnlimited;
  uint32_t max_requests_per_connection = 0;  // 0: unlimited
  std::chrono::milliseconds idle_timeout{std::chrono::hours(1)};
  uint32_t max_retries = kUnlimited;  // outstanding retries across the cluster
  bool operator==(const ConnectionPoolSettings&) const = default;
};

// DestinationRule trafficPolicy.outlierDetection. `enabled` is false when no outlierDetection
// applies to the subset; the other defaults are Istio's for a present but partial block.
struct OutlierDetectionSettings {
  bool enabled = false;
  uint32_t consecutive_5xx_errors = 5;      // 0: off
  uint32_t consecutive_gateway_errors = 0;  // 0: off
  std::chrono::milliseconds interval{10000};
  std::chrono::milliseconds base_ejection_time{30000};
  uint32_t max_ejection_percent = 10;
  bool operator==(const OutlierDetectionSettings&) const = default;
};

// One header as the parser saw it.
struct HeaderField {
  std::string_view name;
  std::string_view value;
};

// What matching needs from a request. Views into the caller's buffers; nothing is copied.
struct RequestView {
  std::string_view method;
  std::string_view path;   // without the query string
  std::string_view query;  // after '?', without it; empty when none
  std::string_view authority;
  std::string_view scheme = "http";
  std::span<const HeaderField> headers;
  const LabelList* source_labels = nullptr;  // the client workload's labels, sorted by key
  std::string_view source_namespace;         // the client workload's namespace
  uint16_t port = 0;                         // the destination port the client dialled

  // Splits a request-target ("/a/b?x=1") into path and query.
  void setTarget(std::string_view target);
  // The first value of a header, by case-insensitive name; nullopt when absent.
  std::optional<std::string_view> header(std::string_view name) const;
};

// The route a request takes and which of its match entries held (nullptr when the route has
// no match list). `route` is nullptr when no route matched: the request gets a 404, as Envoy's
// route table answers when nothing matches.
struct HttpRouteMatch {
  const HttpRoute* route = nullptr;
  const HttpMatch* match = nullptr;
};

// First match wins, in ServicePort::http_routes order.
HttpRouteMatch matchHttpRoute(const ServicePort& port, const RequestView& request);
bool matches(const HttpMatch& match, const RequestView& request);

// The path after rewrite.uri / uriRegexRewrite (query string not included): a prefix match's
// prefix is replaced, otherwise the whole path (a route without a uri match counts as prefix
// "/", as in Envoy).
std::string rewritePath(const HttpRewrite& rewrite, const HttpMatch* matched,
                        std::string_view path);

// Sets rewrite.uri_regex from uriRegexRewrite: `pattern` (RE2, applied to every match in the
// path) and `replacement` (\1-style groups). Fails on a bad pattern or a group it lacks.
Result<void> setUriRegexRewrite(HttpRewrite& rewrite, std::string_view pattern,
                                std::string_view replacement);

// "5xx,gateway-error,503" → RetryOn bits and codes; unknown names are returned in `unknown`.
struct ParsedRetryOn {
  uint32_t bits = 0;
  std::vector<uint16_t> codes;
  std::vector<std::string> unknown;  // not applied (gRPC conditions, misspellings)
};
ParsedRetryOn parseRetryOn(std::string_view text);

}  // namespace remora::routing
