// PeerAuthentication resolution and AuthorizationPolicy evaluation at L4, as pure functions.

#include "security/security_policy.h"

#include <gtest/gtest.h>

#include <array>
#include <cctype>
#include <cstdio>

namespace remora::security {
namespace {

IpAddress ip(const char* text) { return *IpAddress::parse(text); }
Cidr cidr(const char* text) { return *Cidr::parse(text); }

ConnectionAttributes from(const std::string& principal, const char* source = "10.0.0.5",
                          uint16_t port = 80) {
  ConnectionAttributes a;
  a.source_ip = a.remote_ip = ip(source);
  a.destination_ip = ip("10.0.1.1");
  a.destination_port = port;
  a.principal = principal;
  const std::string marker = "/ns/";
  if (auto at = principal.find(marker); at != std::string::npos) {
    const auto start = at + marker.size();
    a.source_namespace = principal.substr(start, principal.find('/', start) - start);
  }
  return a;
}

AuthorizationPolicyRule policy(const char* name, Action action, std::vector<Rule> rules) {
  AuthorizationPolicyRule p;
  p.namespace_name = "demo";
  p.name = name;
  p.action = action;
  p.rules = std::move(rules);
  p.counters = policyCounters("demo", name);
  return p;
}

Rule principals(std::vector<std::string> list) {
  Rule r;
  r.from.push_back(Source{});
  r.from.back().principals = std::move(list);
  return r;
}

bool allowed(const std::vector<const AuthorizationPolicyRule*>& ps, const ConnectionAttributes& a) {
  return evaluate(ps, a).allowed;
}

constexpr const char* kSleep = "cluster.local/ns/demo/sa/sleep";
constexpr const char* kOther = "cluster.local/ns/other/sa/curl";

TEST(MatchValue, IstioStringForms) {
  EXPECT_TRUE(matchValue("abc", "abc"));
  EXPECT_FALSE(matchValue("abc", "abcd"));
  EXPECT_TRUE(matchValue("cluster.local/ns/demo/*", kSleep));
  EXPECT_TRUE(matchValue("*/sa/sleep", kSleep));
  EXPECT_FALSE(matchValue("*/sa/other", kSleep));
  EXPECT_TRUE(matchValue("*", "x"));
  EXPECT_FALSE(matchValue("*", ""));  // "*" means "any authenticated" for principals
}

TEST(Authz, NoPolicyAllows) { EXPECT_TRUE(allowed({}, from(""))); }

TEST(Authz, EmptyAllowPolicyDeniesAll) {
  auto allow_nothing = policy("allow-nothing", Action::kAllow, {});
  auto d = evaluate({&allow_nothing}, from(kSleep));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, "denied: no ALLOW policy matched");
}

TEST(Authz, AllowRuleWithNothingAllowsAll) {
  auto allow_all = policy("allow-all", Action::kAllow, {Rule{}});
  EXPECT_TRUE(allowed({&allow_all}, from("")));
}

TEST(Authz, AllowByPrincipal) {
  auto p = policy("allow-sleep", Action::kAllow, {principals({kSleep})});
  EXPECT_TRUE(allowed({&p}, from(kSleep)));
  EXPECT_FALSE(allowed({&p}, from(kOther)));
  EXPECT_FALSE(allowed({&p}, from("")));  // plaintext: no principal
}

TEST(Authz, DenyComesFirst) {
  auto allow = policy("allow-all", Action::kAllow, {Rule{}});
  Rule other_ns;
  other_ns.from.push_back(Source{});
  other_ns.from.back().namespaces = {"other"};
  auto deny = policy("deny-other", Action::kDeny, {other_ns});
  auto d = evaluate({&allow, &deny}, from(kOther));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.policy, &deny);
  EXPECT_EQ(d.reason, "denied by DENY policy demo/deny-other");
  EXPECT_TRUE(allowed({&allow, &deny}, from(kSleep)));
}

TEST(Authz, NotPrincipalsAndNotNamespaces) {
  Rule r;
  r.from.push_back(Source{});
  r.from.back().not_principals = {kSleep};
  auto deny = policy("deny-not-sleep", Action::kDeny, {r});
  EXPECT_TRUE(allowed({&deny}, from(kSleep)));
  EXPECT_FALSE(allowed({&deny}, from(kOther)));
  Rule n;
  n.from.push_back(Source{});
  n.from.back().not_namespaces = {"demo"};
  auto allow = policy("allow-not-demo", Action::kAllow, {n});
  EXPECT_FALSE(allowed({&allow}, from(kSleep)));
  EXPECT_TRUE(allowed({&allow}, from(kOther)));
}

TEST(Authz, IpBlocksAndRemoteIpBlocks) {
  Rule r;
  r.from.push_back(Source{});
  r.from.back().ip_blocks = {cidr("10.0.0.0/24")};
  r.from.back().not_ip_blocks = {cidr("10.0.0.9")};
  auto allow = policy("allow-subnet", Action::kAllow, {r});
  EXPECT_TRUE(allowed({&allow}, from("", "10.0.0.5")));
  EXPECT_FALSE(allowed({&allow}, from("", "10.0.0.9")));
  EXPECT_FALSE(allowed({&allow}, from("", "10.0.2.5")));
  Rule remote;
  remote.from.push_back(Source{});
  remote.from.back().remote_ip_blocks = {cidr("192.168.0.0/16")};
  auto deny = policy("deny-remote", Action::kDeny, {remote});
  EXPECT_FALSE(allowed({&deny}, from("", "192.168.3.4")));
  EXPECT_TRUE(allowed({&deny}, from("", "10.0.0.5")));
}

TEST(Authz, PortsInOperation) {
  Rule r;
  r.to.push_back(Operation{});
  r.to.back().ports = {8080};
  auto allow = policy("allow-8080", Action::kAllow, {r});
  EXPECT_TRUE(allowed({&allow}, from(kSleep, "10.0.0.5", 8080)));
  EXPECT_FALSE(allowed({&allow}, from(kSleep, "10.0.0.5", 80)));
  Rule not_port;
  not_port.to.push_back(Operation{});
  not_port.to.back().not_ports = {22};
  auto deny = policy("deny-not-22", Action::kDeny, {not_port});
  EXPECT_TRUE(allowed({&deny}, from(kSleep, "10.0.0.5", 22)));
  EXPECT_FALSE(allowed({&deny}, from(kSleep, "10.0.0.5", 80)));
}

TEST(Authz, FromAndToAreAndedEntriesOred) {
  Rule r = principals({kSleep});
  r.from.push_back(Source{});
  r.from.back().namespaces = {"other"};
  r.to.push_back(Operation{});
  r.to.back().ports = {80};
  auto allow = policy("allow", Action::kAllow, {r});
  EXPECT_TRUE(allowed({&allow}, from(kSleep)));
  EXPECT_TRUE(allowed({&allow}, from(kOther)));
  EXPECT_FALSE(allowed({&allow}, from(kOther, "10.0.0.5", 81)));
  EXPECT_FALSE(allowed({&allow}, from("cluster.local/ns/third/sa/x")));
}

TEST(Authz, WhenConditionsAtL4) {
  Rule r;
  r.when.push_back(Condition{"source.namespace", {"demo"}, {}, false});
  r.when.push_back(Condition{"destination.port", {"80", "443"}, {}, false});
  r.when.push_back(Condition{"source.ip", {"10.0.0.0/8"}, {"10.0.0.7"}, false});
  auto allow = policy("allow-when", Action::kAllow, {r});
  EXPECT_TRUE(allowed({&allow}, from(kSleep)));
  EXPECT_FALSE(allowed({&allow}, from(kOther)));
  EXPECT_FALSE(allowed({&allow}, from(kSleep, "10.0.0.7")));
  EXPECT_FALSE(allowed({&allow}, from(kSleep, "10.0.0.5", 8080)));
  Rule unknown;
  unknown.when.push_back(Condition{"experimental.envoy.filters.x", {"y"}, {}, false});
  auto allow_unknown = policy("allow-unknown", Action::kAllow, {unknown});
  EXPECT_FALSE(allowed({&allow_unknown}, from(kSleep)));
}

TEST(Authz, HttpOnlyFieldsAtL4FollowIstio) {
  // ALLOW with methods: never matches a TCP connection.
  Rule http = principals({kSleep});
  http.to.push_back(Operation{});
  http.to.back().l7 = true;
  auto allow = policy("allow-get", Action::kAllow, {http});
  EXPECT_FALSE(allowed({&allow}, from(kSleep)));
  // DENY with methods: the HTTP part is dropped, the rest still denies.
  auto deny = policy("deny-get", Action::kDeny, {http});
  EXPECT_FALSE(allowed({&deny}, from(kSleep)));
  EXPECT_TRUE(allowed({&deny}, from(kOther)));
}

// One HTTP request from `principal`, as the L7 path builds it; `path` is handed to evaluate() as
// given (the caller normalizes it first: norm()).
struct Req {
  std::string path;
  RequestAttributes r;
  ConnectionAttributes a;
  Req(const std::string& principal, std::string_view method, std::string path_,
      std::string_view host = "bill.demo:8080",
      std::vector<std::pair<std::string_view, std::string_view>> headers = {})
      : path(std::move(path_)), a(from(principal)) {
    r.method = method;
    r.path = path;
    r.host = host;
    r.headers = std::move(headers);
    a.request = &r;
  }
};

Rule operation(std::vector<std::string> methods, std::vector<std::string> paths) {
  Rule r;
  r.to.push_back(Operation{});
  r.to.back().methods = std::move(methods);
  r.to.back().paths = std::move(paths);
  r.to.back().l7 = true;
  return r;
}

TEST(AuthzHttp, PathFormsFollowIstio) {
  // Exact, prefix "/x/*", suffix "*x", presence "*".
  auto exact = policy("p-exact", Action::kAllow, {operation({}, {"/status"})});
  EXPECT_TRUE(allowed({&exact}, Req(kSleep, "GET", "/status").a));
  EXPECT_FALSE(allowed({&exact}, Req(kSleep, "GET", "/status/x").a));
  auto prefix = policy("p-prefix", Action::kAllow, {operation({}, {"/public/*"})});
  EXPECT_TRUE(allowed({&prefix}, Req(kSleep, "GET", "/public/x").a));
  EXPECT_TRUE(allowed({&prefix}, Req(kSleep, "GET", "/public/").a));
  EXPECT_FALSE(allowed({&prefix}, Req(kSleep, "GET", "/public").a));
  EXPECT_FALSE(allowed({&prefix}, Req(kSleep, "GET", "/private").a));
  auto suffix = policy("p-suffix", Action::kAllow, {operation({}, {"*.png"})});
  EXPECT_TRUE(allowed({&suffix}, Req(kSleep, "GET", "/img/a.png").a));
  EXPECT_FALSE(allowed({&suffix}, Req(kSleep, "GET", "/img/a.png.txt").a));
  auto any = policy("p-any", Action::kAllow, {operation({}, {"*"})});
  EXPECT_TRUE(allowed({&any}, Req(kSleep, "GET", "/").a));
  // notPaths.
  Rule not_admin;
  not_admin.to.push_back(Operation{});
  not_admin.to.back().not_paths = {"/admin/*"};
  not_admin.to.back().l7 = true;
  auto deny_admin_only = policy("p-not", Action::kAllow, {not_admin});
  EXPECT_TRUE(allowed({&deny_admin_only}, Req(kSleep, "GET", "/x").a));
  EXPECT_FALSE(allowed({&deny_admin_only}, Req(kSleep, "GET", "/admin/users").a));
}

TEST(AuthzHttp, MethodsAndPrincipalTogether) {
  Rule r = operation({"GET"}, {"/public/*"});
  r.from.push_back(Source{});
  r.from.back().principals = {kSleep};
  auto allow = policy("allow-public-get", Action::kAllow, {r});
  const uint64_t allowed_before = allow.counters->allowed.load();
  auto d = evaluate({&allow}, Req(kSleep, "GET", "/public/x").a);
  EXPECT_TRUE(d.allowed);
  count(d);
  EXPECT_EQ(allow.counters->allowed.load(), allowed_before + 1);
  EXPECT_FALSE(allowed({&allow}, Req(kSleep, "POST", "/public/x").a));
  EXPECT_FALSE(allowed({&allow}, Req(kSleep, "GET", "/private").a));
  EXPECT_FALSE(allowed({&allow}, Req(kOther, "GET", "/public/x").a));
  // The same rule on a TCP connection never matches (Istio's rule for HTTP fields at L4).
  EXPECT_FALSE(allowed({&allow}, from(kSleep)));
  // notMethods in a DENY policy.
  Rule writes;
  writes.to.push_back(Operation{});
  writes.to.back().not_methods = {"GET", "HEAD"};
  writes.to.back().l7 = true;
  auto deny = policy("deny-writes", Action::kDeny, {writes});
  EXPECT_TRUE(allowed({&deny}, Req(kSleep, "GET", "/x").a));
  EXPECT_FALSE(allowed({&deny}, Req(kSleep, "DELETE", "/x").a));
}

// The proxy's half of evaluate()'s contract: the path normalized once, before evaluation (a path
// that fails is answered 400 and never evaluated).
std::string norm(std::string_view raw) { return normalizePath(raw).value_or("<refused: 400>"); }

TEST(AuthzHttp, PathsAreNormalizedAsIstioBaseDoes) {
  EXPECT_EQ(normalizePath("/a/../b"), "/b");
  EXPECT_EQ(normalizePath("/public/./data/abc/../xyz"), "/public/data/xyz");
  EXPECT_EQ(normalizePath("/some\\data"), "/some/data");
  EXPECT_EQ(normalizePath("/%61%62%63/%2E%2e/x%2d%5F%7e"), "/x-_~");
  EXPECT_EQ(normalizePath("/some%2fdata%5C"), "/some%2fdata%5C");  // slashes stay encoded
  EXPECT_EQ(normalizePath("/a/b/..?q=/../x"), "/a/");
  EXPECT_EQ(normalizePath("/../../x"), "/x");
  EXPECT_EQ(normalizePath("/a/."), "/a/");
  EXPECT_EQ(normalizePath("/a//b"), "/a//b");  // MERGE_SLASHES is not the default
  EXPECT_EQ(normalizePath("/%zz%4"), "/%zz%4");
  EXPECT_EQ(normalizePath("/x%00y"), std::nullopt);  // the proxy answers 400
  // A DENY on /admin/* catches the dot-segment and encoded forms of the same path once the
  // caller normalized them.
  auto deny = policy("deny-admin", Action::kDeny, {operation({}, {"/admin/*"})});
  EXPECT_FALSE(allowed({&deny}, Req(kSleep, "GET", norm("/public/../admin/x")).a));
  EXPECT_FALSE(allowed({&deny}, Req(kSleep, "GET", norm("/%61dmin/x")).a));
  EXPECT_FALSE(allowed({&deny}, Req(kSleep, "GET", norm("/public\\..\\admin/x")).a));
  EXPECT_TRUE(allowed({&deny}, Req(kSleep, "GET", norm("/public/admin/x")).a));
}

TEST(AuthzHttp, NormalizationIsIdempotentAndSkippedOnlyWhereItChangesNothing) {
  for (const char* raw : {"/a/../b", "/%61%62%63/%2E%2e/x%2d", "/some\\data", "/a/b/..?q=/../x",
                          "/a/.", "/%2525/x", "/x/%2E%2E/y"}) {
    const std::string once = norm(raw);
    EXPECT_EQ(norm(once), once) << raw;
    EXPECT_TRUE(needsNormalization(raw)) << raw;
  }
  // needsNormalization false: normalizePath would return the path unchanged.
  for (const char* plain :
       {"/", "/a/b", "/a//b", "/a/", "/.well-known/x", "/a..b/...", "/a/b.", "*", "/x-y_z~"}) {
    EXPECT_FALSE(needsNormalization(plain)) << plain;
    EXPECT_EQ(normalizePath(plain), plain) << plain;
  }
  for (const char* dotted : {"/.", "/..", "/a/./b", "/a/../b", "/a/.."}) {
    EXPECT_TRUE(needsNormalization(dotted)) << dotted;
  }
}

// Istio's four meshConfig pathNormalization modes, with the expectations of Istio's own
// normalization integration test (tests/integration/security/normalization_test.go): what the
// backend receives for each path the client sends.
struct ModeCase {
  const char* in;
  const char* none;
  const char* base;
  const char* merge;
  const char* decode;
};
constexpr ModeCase kModeCases[] = {
    {"/", "/", "/", "/", "/"},
    {"/app/", "/app/", "/app/", "/app/", "/app/"},
    {"/app/../admin", "/app/../admin", "/admin", "/admin", "/admin"},
    {"/app//", "/app//", "/app//", "/app/", "/app/"},
    {"/app/%2f", "/app/%2f", "/app/%2f", "/app/%2f", "/app/"},
    {"/app%2f/", "/app%2f/", "/app%2f/", "/app%2f/", "/app/"},
    {"/xyz%30..//abc", "/xyz%30..//abc", "/xyz0..//abc", "/xyz0../abc", "/xyz0../abc"},
    {"/app/%2E./admin", "/app/%2E./admin", "/admin", "/admin", "/admin"},
    {"/app\\admin", "/app\\admin", "/app/admin", "/app/admin", "/app/admin"},
    {"/app/\\/\\/\\admin", "/app/\\/\\/\\admin", "/app//////admin", "/app/admin", "/app/admin"},
    {"/%2Fapp%5cadmin%5Cabc", "/%2Fapp%5cadmin%5Cabc", "/%2Fapp%5cadmin%5Cabc",
     "/%2Fapp%5cadmin%5Cabc", "/app/admin/abc"},
    {"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\\abc", "/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\\abc",
     "/%5Capp%2f%5c%2F..%2fadmin%5c/abc", "/%5Capp%2f%5c%2F..%2fadmin%5c/abc", "/app/admin/abc"},
    {"/app//../admin", "/app//../admin", "/app/admin", "/app/admin", "/app/admin"},
    {"/app//../../admin", "/app//../../admin", "/admin", "/admin", "/admin"},
    {"/%c0%2e%c0%2e/admin", "/%c0%2e%c0%2e/admin", "/%c0.%c0./admin", "/%c0.%c0./admin",
     "/%c0.%c0./admin"},
    {"/%c0%2fadmin", "/%c0%2fadmin", "/%c0%2fadmin", "/%c0%2fadmin", "/%c0/admin"},
    {"/%252e%252e%252fadmin", "/%252e%252e%252fadmin", "/%252e%252e%252fadmin",
     "/%252e%252e%252fadmin", "/%252e%252e%252fadmin"},
    {"/..;/admin", "/..;/admin", "/..;/admin", "/..;/admin", "/..;/admin"},
};

TEST(PathNormalization, EachModeGivesWhatIstioForwards) {
  for (const ModeCase& c : kModeCases) {
    EXPECT_EQ(normalizePath(c.in, PathNormalization::kNone), c.none) << c.in;
    EXPECT_EQ(normalizePath(c.in, PathNormalization::kBase), c.base) << c.in;
    EXPECT_EQ(normalizePath(c.in, PathNormalization::kMergeSlashes), c.merge) << c.in;
    EXPECT_EQ(normalizePath(c.in, PathNormalization::kDecodeAndMergeSlashes), c.decode) << c.in;
  }
}

// Istio's PercentEncoded case: under DECODE_AND_MERGE_SLASHES, /admin%XX reaches the app with
// the unreserved characters, '/' and '\' (as '/') decoded, every other escape as sent.
std::string adminEscaped(int byte, bool upper) {
  std::array<char, 16> text{};
  std::snprintf(text.data(), text.size(), upper ? "/admin%%%02X" : "/admin%%%02x", byte);
  return text.data();
}

TEST(PathNormalization, DecodeAndMergeSlashesDecodesUnreservedAndSlashesOnly) {
  for (int i = 1; i <= 0xff; ++i) {
    const std::string in = adminEscaped(i, false);
    const char c = static_cast<char>(i);
    std::string want = in;
    if (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '.' || c == '_' ||
        c == '~') {
      want = std::string("/admin") + c;
    } else if (c == '/' || c == '\\') {
      want = "/admin/";
    }
    EXPECT_EQ(normalizePath(in, PathNormalization::kDecodeAndMergeSlashes), want) << in;
    // Upper-case hex digits too.
    const std::string upper = adminEscaped(i, true);
    if (want == in) want = upper;
    EXPECT_EQ(normalizePath(upper, PathNormalization::kDecodeAndMergeSlashes), want) << upper;
  }
  EXPECT_EQ(normalizePath("/admin%00", PathNormalization::kDecodeAndMergeSlashes), std::nullopt);
}

TEST(PathNormalization, MergeSlashesFollowsEnvoy) {
  constexpr auto kMerge = PathNormalization::kMergeSlashes;
  constexpr auto kDecode = PathNormalization::kDecodeAndMergeSlashes;
  EXPECT_EQ(normalizePath("/a//b///c////", kMerge), "/a/b/c/");
  EXPECT_EQ(normalizePath("/a/b", kMerge), "/a/b");
  // Merged after the dot segments are removed: "/a//.." drops the empty segment only.
  EXPECT_EQ(normalizePath("/a//..", kMerge), "/a/");
  EXPECT_EQ(normalizePath("/a/.//./b", kMerge), "/a/b");
  // Envoy keeps the leading and the trailing slash of a path of slashes only.
  EXPECT_EQ(normalizePath("//", kMerge), "//");
  EXPECT_EQ(normalizePath("/////", kMerge), "//");
  // Decoded slashes are merged too; %252F is not a slash (one decode only).
  EXPECT_EQ(normalizePath("/a%2F%2f%5C%5cb", kDecode), "/a/b");
  EXPECT_EQ(normalizePath("/a%252Fb", kDecode), "/a%252Fb");
  EXPECT_EQ(normalizePath("/a%2F..%2Fb", kDecode), "/b");
  EXPECT_EQ(normalizePath("/a%2F%00", kDecode), std::nullopt);
}

TEST(PathNormalization, TheQueryIsCutAndNeverNormalized) {
  for (auto mode : {PathNormalization::kNone, PathNormalization::kBase,
                    PathNormalization::kMergeSlashes, PathNormalization::kDecodeAndMergeSlashes}) {
    // The proxy appends the client's query to the result untouched.
    const char* want = mode == PathNormalization::kNone   ? "/a//./b"
                       : mode == PathNormalization::kBase ? "/a//b"
                                                          : "/a/b";
    EXPECT_EQ(normalizePath("/a//./b?x=//y/../%2F%00", mode), want) << toString(mode);
  }
  // NONE never refuses: %00 is forwarded as sent, as Envoy does without normalize_path.
  EXPECT_EQ(normalizePath("/x%00y", PathNormalization::kNone), "/x%00y");
}

TEST(PathNormalization, ModesAreParsedByTheirMeshConfigNames) {
  EXPECT_EQ(parsePathNormalization("NONE"), PathNormalization::kNone);
  EXPECT_EQ(parsePathNormalization("BASE"), PathNormalization::kBase);
  EXPECT_EQ(parsePathNormalization("DEFAULT"), PathNormalization::kBase);
  EXPECT_EQ(parsePathNormalization("MERGE_SLASHES"), PathNormalization::kMergeSlashes);
  EXPECT_EQ(parsePathNormalization("DECODE_AND_MERGE_SLASHES"),
            PathNormalization::kDecodeAndMergeSlashes);
  for (const char* bad : {"", "base", "MERGE", "DECODE_AND_MERGE_SLASHES ", "UNESCAPE"}) {
    EXPECT_EQ(parsePathNormalization(bad), std::nullopt) << bad;
  }
  for (auto mode : {PathNormalization::kNone, PathNormalization::kBase,
                    PathNormalization::kMergeSlashes, PathNormalization::kDecodeAndMergeSlashes}) {
    EXPECT_EQ(parsePathNormalization(toString(mode)), mode);
  }
}

// The proxy skips normalizePath where needsNormalization is false; for each mode that must mean
// the path would come back unchanged, and the cases each mode changes must count.
TEST(PathNormalization, ThePreCheckSkipsOnlyWhatTheModeLeavesUnchanged) {
  constexpr PathNormalization kModes[] = {PathNormalization::kNone, PathNormalization::kBase,
                                          PathNormalization::kMergeSlashes,
                                          PathNormalization::kDecodeAndMergeSlashes};
  for (auto mode : kModes) {
    for (const ModeCase& c : kModeCases) {
      if (!needsNormalization(c.in, mode)) {
        EXPECT_EQ(normalizePath(c.in, mode), c.in) << c.in << " " << toString(mode);
      }
    }
  }
  for (const char* raw : {"/a/../b", "/x%2e", "/a\\b", "/a/.", "/a%2Fb"}) {
    EXPECT_FALSE(needsNormalization(raw, PathNormalization::kNone)) << raw;
    EXPECT_TRUE(needsNormalization(raw, PathNormalization::kBase)) << raw;
  }
  for (const char* doubled : {"/a//b", "//", "/a//"}) {
    EXPECT_FALSE(needsNormalization(doubled, PathNormalization::kBase)) << doubled;
    EXPECT_TRUE(needsNormalization(doubled, PathNormalization::kMergeSlashes)) << doubled;
    EXPECT_TRUE(needsNormalization(doubled, PathNormalization::kDecodeAndMergeSlashes)) << doubled;
  }
  for (const char* escaped : {"/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5cb"}) {
    EXPECT_TRUE(needsNormalization(escaped, PathNormalization::kDecodeAndMergeSlashes)) << escaped;
    EXPECT_NE(normalizePath(escaped, PathNormalization::kDecodeAndMergeSlashes), escaped);
  }
}

// Normalizing twice gives what normalizing once gave, in every mode, except where the one decode
// Envoy does turns an invalid escape and an encoded digit into a new escape ("%%32%65" is
// "%2e"): Envoy forwards that as is, and so does Remora.
TEST(PathNormalization, EveryModeIsIdempotentButForEscapesItsDecodeMakes) {
  for (auto mode : {PathNormalization::kNone, PathNormalization::kBase,
                    PathNormalization::kMergeSlashes, PathNormalization::kDecodeAndMergeSlashes}) {
    for (const ModeCase& c : kModeCases) {
      const auto once = normalizePath(c.in, mode);
      ASSERT_TRUE(once) << c.in;
      EXPECT_EQ(normalizePath(*once, mode), once) << c.in << " " << toString(mode);
    }
  }
  EXPECT_EQ(normalizePath("/%%32%65"), "/%2e");
  EXPECT_EQ(normalizePath("/%2%46", PathNormalization::kDecodeAndMergeSlashes), "/%2F");
}

// What a DENY on /admin/* catches depends on the mode the proxy normalized with (the reason
// Istio points at MERGE_SLASHES and DECODE_AND_MERGE_SLASHES for CVE-2021-31920).
TEST(PathNormalization, ADenyOnAdminCatchesWhatEachModeMergesAndDecodes) {
  auto deny = policy("deny-admin", Action::kDeny, {operation({}, {"/admin/*"})});
  auto denied = [&](const char* raw, PathNormalization mode) {
    const std::string path = normalizePath(raw, mode).value_or("<refused: 400>");
    return !allowed({&deny}, Req(kSleep, "GET", path).a);
  };
  for (auto mode : {PathNormalization::kNone, PathNormalization::kBase,
                    PathNormalization::kMergeSlashes, PathNormalization::kDecodeAndMergeSlashes}) {
    EXPECT_TRUE(denied("/admin/x", mode)) << toString(mode);
  }
  EXPECT_FALSE(denied("/public/../admin/x", PathNormalization::kNone));
  EXPECT_TRUE(denied("/public/../admin/x", PathNormalization::kBase));
  EXPECT_FALSE(denied("//admin//x", PathNormalization::kBase));
  EXPECT_TRUE(denied("//admin//x", PathNormalization::kMergeSlashes));
  EXPECT_FALSE(denied("/admin%2Fx", PathNormalization::kMergeSlashes));
  EXPECT_TRUE(denied("/admin%2Fx", PathNormalization::kDecodeAndMergeSlashes));
  EXPECT_TRUE(denied("/public%2F..%5Cadmin%5cx", PathNormalization::kDecodeAndMergeSlashes));
}

// evaluate() takes the path as the proxy normalized it and never normalizes it again: given a
// raw path it matches the raw text. (It used to normalize its input a second time, so the
// dot-segment form below was denied here as well as in the proxy.)
TEST(AuthzHttp, EvaluateMatchesThePathAsGivenWithoutNormalizingAgain) {
  auto deny = policy("deny-admin-raw", Action::kDeny, {operation({}, {"/admin/*"})});
  EXPECT_FALSE(allowed({&deny}, Req(kSleep, "GET", norm("/public/../admin/x")).a));
  EXPECT_TRUE(allowed({&deny}, Req(kSleep, "GET", "/public/../admin/x").a));
  EXPECT_TRUE(allowed({&deny}, Req(kSleep, "GET", "/%61dmin/x").a));
  // %00 is the caller's to refuse (400) before evaluation; evaluate() does not look for it.
  EXPECT_TRUE(allowed({&deny}, Req(kSleep, "GET", "/x%00").a));
  auto exact = policy("allow-exact", Action::kAllow, {operation({}, {"/a/b"})});
  EXPECT_TRUE(allowed({&exact}, Req(kSleep, "GET", "/a/b").a));
  EXPECT_FALSE(allowed({&exact}, Req(kSleep, "GET", "/a/./b").a));
}

TEST(AuthzHttp, PathTemplates) {
  EXPECT_TRUE(matchPath("/users/{*}/orders", "/users/7/orders"));
  EXPECT_FALSE(matchPath("/users/{*}/orders", "/users/7/8/orders"));
  EXPECT_FALSE(matchPath("/users/{*}/orders", "/users//orders"));
  EXPECT_TRUE(matchPath("/files/{**}", "/files/a"));
  EXPECT_TRUE(matchPath("/files/{**}", "/files/a/b/c"));
  EXPECT_FALSE(matchPath("/files/{**}", "/files"));
  EXPECT_FALSE(matchPath("/files/{**}", "/other/a"));
  EXPECT_TRUE(matchPath("/{*}/x/{**}", "/a/x/b/c"));
  EXPECT_TRUE(matchPath("/plain*", "/plain/x"));  // not a template: Istio's prefix form
  auto allow = policy("allow-orders", Action::kAllow, {operation({"GET"}, {"/users/{*}/orders"})});
  EXPECT_TRUE(allowed({&allow}, Req(kSleep, "GET", norm("/users/42/orders?x=1")).a));
  EXPECT_FALSE(allowed({&allow}, Req(kSleep, "GET", "/users/42/orders/9").a));
}

TEST(AuthzHttp, HostsAreCaseInsensitiveWithAnyPort) {
  Rule r;
  r.to.push_back(Operation{});
  r.to.back().hosts = {"bill.demo", "*.example.com"};
  r.to.back().l7 = true;
  auto allow = policy("allow-hosts", Action::kAllow, {r});
  EXPECT_TRUE(allowed({&allow}, Req(kSleep, "GET", "/", "bill.demo").a));
  EXPECT_TRUE(allowed({&allow}, Req(kSleep, "GET", "/", "Bill.Demo:8080").a));
  EXPECT_TRUE(allowed({&allow}, Req(kSleep, "GET", "/", "api.EXAMPLE.com").a));
  EXPECT_FALSE(allowed({&allow}, Req(kSleep, "GET", "/", "bill.other").a));
  Rule nr;
  nr.to.push_back(Operation{});
  nr.to.back().not_hosts = {"bill.demo"};
  nr.to.back().l7 = true;
  auto deny = policy("deny-not-bill", Action::kDeny, {nr});
  EXPECT_TRUE(allowed({&deny}, Req(kSleep, "GET", "/", "bill.demo:80").a));
  EXPECT_FALSE(allowed({&deny}, Req(kSleep, "GET", "/", "front.demo").a));
}

TEST(AuthzHttp, WhenRequestHeaders) {
  Rule r;
  r.when.push_back(Condition{"request.headers[X-User]", {"jason", "admin-*"}, {}, true});
  auto allow = policy("allow-user", Action::kAllow, {r});
  EXPECT_TRUE(allowed({&allow}, Req(kSleep, "GET", "/", "h", {{"x-user", "jason"}}).a));
  EXPECT_TRUE(allowed({&allow}, Req(kSleep, "GET", "/", "h", {{"X-USER", "admin-1"}}).a));
  EXPECT_FALSE(allowed({&allow}, Req(kSleep, "GET", "/", "h", {{"x-user", "bob"}}).a));
  EXPECT_FALSE(allowed({&allow}, Req(kSleep, "GET", "/", "h").a));  // absent: no match
  // notValues: an absent header does not match them either.
  Rule nv;
  nv.when.push_back(Condition{"request.headers[x-user]", {}, {"bob"}, true});
  auto allow_not_bob = policy("allow-not-bob", Action::kAllow, {nv});
  EXPECT_TRUE(allowed({&allow_not_bob}, Req(kSleep, "GET", "/", "h", {{"x-user", "ann"}}).a));
  EXPECT_TRUE(allowed({&allow_not_bob}, Req(kSleep, "GET", "/", "h").a));
  EXPECT_FALSE(allowed({&allow_not_bob}, Req(kSleep, "GET", "/", "h", {{"x-user", "bob"}}).a));
  // JWT keys: no request has a request principal or claims.
  Rule jwt;
  jwt.when.push_back(Condition{"request.auth.claims[iss]", {"x"}, {}, true});
  auto allow_jwt = policy("allow-jwt", Action::kAllow, {jwt});
  EXPECT_FALSE(allowed({&allow_jwt}, Req(kSleep, "GET", "/").a));
  Rule rp;
  rp.from.push_back(Source{});
  rp.from.back().request_principals = {"*"};
  rp.from.back().l7 = true;
  auto allow_rp = policy("allow-rp", Action::kAllow, {rp});
  EXPECT_FALSE(allowed({&allow_rp}, Req(kSleep, "GET", "/").a));
  // An unknown key at L7 keeps the TCP treatment: ALLOW never matches, DENY drops it.
  Rule unknown;
  unknown.when.push_back(Condition{"request.bogus", {"x"}, {}, true});
  auto allow_unknown = policy("allow-unknown-l7", Action::kAllow, {unknown});
  EXPECT_FALSE(allowed({&allow_unknown}, Req(kSleep, "GET", "/").a));
  auto deny_unknown = policy("deny-unknown-l7", Action::kDeny, {unknown});
  EXPECT_FALSE(allowed({&deny_unknown}, Req(kSleep, "GET", "/").a));
  // L4 keys still apply per request.
  Rule l4;
  l4.when.push_back(Condition{"source.namespace", {"demo"}, {}, false});
  auto allow_ns = policy("allow-ns-l7", Action::kAllow, {l4});
  EXPECT_TRUE(allowed({&allow_ns}, Req(kSleep, "GET", "/").a));
  EXPECT_FALSE(allowed({&allow_ns}, Req(kOther, "GET", "/").a));
}

TEST(Authz, AuditNeverDecidesAndIsCounted) {
  auto audit = policy("audit-all", Action::kAudit, {Rule{}});
  auto allow = policy("allow-sleep", Action::kAllow, {principals({kSleep})});
  const uint64_t audited = audit.counters->audited.load();
  const uint64_t allowed_before = allow.counters->allowed.load();
  const uint64_t denied_before = allow.counters->denied.load();
  auto d = evaluate({&audit, &allow}, from(kSleep));
  EXPECT_TRUE(d.allowed);
  ASSERT_EQ(d.audited.size(), 1U);
  count(d);
  EXPECT_EQ(audit.counters->audited.load(), audited + 1);
  EXPECT_EQ(allow.counters->allowed.load(), allowed_before + 1);
  auto denied = evaluate({&audit, &allow}, from(kOther));
  EXPECT_FALSE(denied.allowed);
  count(denied);  // no policy decided it: only the audit counter moves
  EXPECT_EQ(allow.counters->denied.load(), denied_before);
  EXPECT_EQ(audit.counters->audited.load(), audited + 2);
  // The audit policy alone allows: it is no ALLOW policy.
  EXPECT_TRUE(allowed({&audit}, from(kOther)));
}

TEST(PeerAuthentication, WorkloadThenNamespaceThenMesh) {
  std::vector<PeerAuthenticationRule> rules;
  EXPECT_EQ(resolveMtls(rules, "istio-system", "demo", {}, 80), MtlsMode::kPermissive);
  rules.push_back({"istio-system", "default", "", std::nullopt, MtlsMode::kStrict, {}});
  EXPECT_EQ(resolveMtls(rules, "istio-system", "demo", {}, 80), MtlsMode::kStrict);
  rules.push_back({"demo", "ns", "", std::nullopt, MtlsMode::kPermissive, {}});
  EXPECT_EQ(resolveMtls(rules, "istio-system", "demo", {}, 80), MtlsMode::kPermissive);
  EXPECT_EQ(resolveMtls(rules, "istio-system", "prod", {}, 80), MtlsMode::kStrict);
  Labels app{{"app", "bill"}};
  rules.push_back({"demo",
                   "bill",
                   "",
                   Labels{{"app", "bill"}},
                   MtlsMode::kUnset,
                   {{9000, MtlsMode::kDisable}}});
  // UNSET at workload level inherits the namespace's; the port level wins on its port.
  EXPECT_EQ(resolveMtls(rules, "istio-system", "demo", app, 80), MtlsMode::kPermissive);
  EXPECT_EQ(resolveMtls(rules, "istio-system", "demo", app, 9000), MtlsMode::kDisable);
  EXPECT_EQ(resolveMtls(rules, "istio-system", "demo", {{"app", "x"}}, 9000),
            MtlsMode::kPermissive);
  // Port-level on a namespace-wide policy is ignored, as in Istio.
  rules[1].port_modes[80] = MtlsMode::kDisable;
  EXPECT_EQ(resolveMtls(rules, "istio-system", "demo", {}, 80), MtlsMode::kPermissive);
  // Two namespace policies: the oldest wins.
  rules.push_back({"demo", "newer", "2030-01-01T00:00:00Z", std::nullopt, MtlsMode::kStrict, {}});
  rules[1].created = "2020-01-01T00:00:00Z";
  EXPECT_EQ(resolveMtls(rules, "istio-system", "demo", {}, 80), MtlsMode::kPermissive);
}

TEST(SecurityTable, PoliciesForAWorkload) {
  SecurityTable t;
  t.workloads["10.0.1.1"] = Workload{"demo", "bill", {{"app", "bill"}}, "", true};
  t.authorization_policies.push_back(policy("ns-wide", Action::kAllow, {}));
  auto selected = policy("bill-only", Action::kDeny, {});
  selected.selector = Labels{{"app", "bill"}};
  t.authorization_policies.push_back(selected);
  auto elsewhere = policy("other-app", Action::kDeny, {});
  elsewhere.selector = Labels{{"app", "x"}};
  t.authorization_policies.push_back(elsewhere);
  auto mesh = policy("mesh", Action::kAudit, {});
  mesh.namespace_name = "istio-system";
  t.authorization_policies.push_back(mesh);
  auto other_ns = policy("other-ns", Action::kAllow, {});
  other_ns.namespace_name = "other";
  t.authorization_policies.push_back(other_ns);
  auto ps = t.policiesFor(ip("10.0.1.1"));
  ASSERT_EQ(ps.size(), 3U);
  EXPECT_EQ(ps[0]->name, "ns-wide");
  EXPECT_EQ(ps[1]->name, "bill-only");
  EXPECT_EQ(ps[2]->name, "mesh");
  EXPECT_EQ(t.policiesFor(ip("10.9.9.9")).size(), 1U);  // an unknown pod: mesh-wide only
}

TEST(SecurityTable, AutoMtlsAndDestinationRuleModes) {
  SecurityTable t;
  t.workloads["10.0.1.1"] =
      Workload{"demo", "bill", {}, "spiffe://cluster.local/ns/demo/sa/bill", true};
  t.workloads["10.0.1.2"] =
      Workload{"demo", "legacy", {}, "spiffe://cluster.local/ns/demo/sa/x", false};
  auto meshed = t.outbound("bill.demo", 80, ip("10.0.1.1"));
  EXPECT_TRUE(meshed.tls);
  EXPECT_EQ(meshed.expected_peer, "spiffe://cluster.local/ns/demo/sa/bill");
  EXPECT_FALSE(t.outbound("bill.demo", 80, ip("10.0.1.2")).tls);
  EXPECT_FALSE(t.outbound("", 80, ip("10.9.9.9")).tls);
  t.destination_tls[{"bill.demo", 0}].mode = TlsMode::kDisable;
  EXPECT_FALSE(t.outbound("bill.demo", 80, ip("10.0.1.1")).tls);
  t.destination_tls[{"bill.demo", 8443}].mode = TlsMode::kIstioMutual;
  EXPECT_TRUE(t.outbound("bill.demo", 8443, ip("10.0.1.2")).tls);
  EXPECT_FALSE(t.outbound("bill.demo", 80, ip("10.0.1.2")).tls);
  // SIMPLE and MUTUAL originate toward any endpoint with the rule's settings, no SPIFFE peer.
  t.destination_tls[{"bill.demo", 9443}].mode = TlsMode::kSimple;
  t.destination_tls[{"bill.demo", 9443}].sni = "bill.example";
  auto simple = t.outbound("bill.demo", 9443, ip("10.0.1.2"));
  EXPECT_TRUE(simple.tls);
  EXPECT_EQ(simple.mode, TlsMode::kSimple);
  ASSERT_NE(simple.settings, nullptr);
  EXPECT_EQ(simple.settings->sni, "bill.example");
  EXPECT_EQ(simple.expected_peer, "");
  t.destination_tls[{"bill.demo", 9444}].mode = TlsMode::kMutual;
  auto mutual = t.outbound("bill.demo", 9444, ip("10.0.1.1"));
  EXPECT_TRUE(mutual.tls);
  EXPECT_EQ(mutual.expected_peer, "") << "MUTUAL's server is not checked as a SPIFFE peer";
}

}  // namespace
}  // namespace remora::security
