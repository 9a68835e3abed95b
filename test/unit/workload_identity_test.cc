// The proxy's own workload (routing::WorkloadIdentity): the downward API labels file parser,
// where the labels come from (file, else the config's Pod), and DestinationRule workloadSelector
// with istiod's merge and precedence.

#include "routing/workload_identity.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "config/loader.h"
#include "config_test_support.h"
#include "routing/route_table.h"
#include "security/security_policy.h"

namespace remora::config {
namespace {

using routing::LabelList;
using routing::LbPolicy;
using routing::parseDownwardApiLabels;
using testing::addr;
using testing::allFindings;
using testing::mustLoad;

std::string parseError(std::string_view text) {
  auto r = parseDownwardApiLabels(text, "/etc/podinfo/labels");
  return r ? std::string("ok") : r.error().message;
}

TEST(DownwardApiLabels, ParsesTheKubeletsFormat) {
  // As the kubelet writes it: sorted, %q-quoted, no newline after the last line.
  auto labels = parseDownwardApiLabels(
      "app=\"front-tomcat\"\npod-template-hash=\"5d8b7f4c9\"\nversion=\"v1\"", "f");
  ASSERT_TRUE(labels) << labels.error().message;
  EXPECT_EQ(
      *labels,
      (LabelList{{"app", "front-tomcat"}, {"pod-template-hash", "5d8b7f4c9"}, {"version", "v1"}}));
  // Unsorted, blank lines, CRLF and a trailing newline are taken too; the result is sorted.
  labels = parseDownwardApiLabels("b=\"2\"\r\n\n  \na=\"1\"\n", "f");
  ASSERT_TRUE(labels) << labels.error().message;
  EXPECT_EQ(*labels, (LabelList{{"a", "1"}, {"b", "2"}}));
  // Empty file, empty value, a key with a prefix.
  labels = parseDownwardApiLabels("", "f");
  ASSERT_TRUE(labels);
  EXPECT_TRUE(labels->empty());
  labels = parseDownwardApiLabels("example.com/role=\"\"", "f");
  ASSERT_TRUE(labels);
  EXPECT_EQ(*labels, (LabelList{{"example.com/role", ""}}));
}

TEST(DownwardApiLabels, DecodesGoEscapes) {
  auto labels = parseDownwardApiLabels(
      R"(a="q\"b\\s"
b="\a\b\f\n\r\t\v"
c="\x41\101\u00e9\U0001F600"
d="caf)"
      "\xc3\xa9"
      R"(")",
      "f");
  ASSERT_TRUE(labels) << labels.error().message;
  ASSERT_EQ(labels->size(), 4U);
  EXPECT_EQ((*labels)[0].second, "q\"b\\s");
  EXPECT_EQ((*labels)[1].second, "\a\b\f\n\r\t\v");
  EXPECT_EQ((*labels)[2].second, "AA\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ((*labels)[3].second, "caf\xc3\xa9");
}

TEST(DownwardApiLabels, BadLinesNameTheFileAndLine) {
  auto expectError = [](std::string_view text, const std::string& want) {
    const std::string e = parseError(text);
    EXPECT_NE(e.find("/etc/podinfo/labels line 2: "), std::string::npos) << text << " -> " << e;
    EXPECT_NE(e.find(want), std::string::npos) << text << " -> " << e;
  };
  expectError("a=\"1\"\nno-equals-sign", "expected key=\"value\"");
  expectError("a=\"1\"\n=\"x\"", "the label key is empty");
  expectError("a=\"1\"\nb=unquoted", "one double-quoted string");
  expectError("a=\"1\"\nb=\"unterminated", "one double-quoted string");
  expectError("a=\"1\"\nb=\"x\" trailing", "one double-quoted string");
  expectError("a=\"1\"\nb=\"in\"side\"", "unescaped '\"'");
  expectError("a=\"1\"\nb=\"\\q\"", "unknown escape '\\q'");
  expectError("a=\"1\"\nb=\"\\x4\"", "needs 2 hex digits");
  expectError("a=\"1\"\nb=\"\\400\"", "over 255");
  expectError("a=\"1\"\nb=\"\\uD800\"", "not a Unicode code point");
  expectError("a=\"1\"\nb=\"x\\\"", "lone '\\'");
  expectError("a=\"1\"\na=\"2\"", "label 'a' is given twice");
  expectError("a=\"1\"\nb c=\"2\"", "no blank or quote");
}

TEST(DownwardApiLabels, AMissingFileIsAnErrorNamingIt) {
  auto labels = routing::readLabelsFile("/nonexistent/remora/labels");
  ASSERT_FALSE(labels);
  EXPECT_NE(labels.error().message.find("/nonexistent/remora/labels"), std::string::npos)
      << labels.error().message;
}

// A scratch file, removed at the end of the test.
class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    char name[] = "/tmp/remora-labels-XXXXXX";
    const int fd = mkstemp(name);
    EXPECT_GE(fd, 0);
    if (fd >= 0) close(fd);
    path_ = name;
    write(text);
  }
  ~TempFile() { unlink(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  void write(const std::string& text) const { std::ofstream(path_, std::ios::trunc) << text; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Service bill (demo, 10.1.0.10:80 TCP) with two ready pods, the client pod front, and the
// DestinationRules given.
std::string world(const std::string& rules) {
  return R"(apiVersion: v1
kind: Service
metadata: {name: bill, namespace: demo}
spec:
  clusterIP: 10.1.0.10
  selector: {app: bill}
  ports: [{name: tcp-main, port: 80, targetPort: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: bill-v1, namespace: demo, labels: {app: bill, version: v1}}
status:
  podIP: 10.244.1.1
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: bill-v2, namespace: demo, labels: {app: bill, version: v2}}
status:
  podIP: 10.244.1.2
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: front, namespace: demo, labels: {app: front, tier: web}}
status:
  podIP: 10.244.2.1
  conditions: [{type: Ready, status: "True"}]
)" + rules;
}

// A DestinationRule for bill with a top-level load balancer, created at `created`, with an
// optional workloadSelector.
std::string rule(const std::string& name, const std::string& lb, const std::string& created,
                 const std::string& selector = "", const std::string& ns = "demo") {
  std::string out = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n";
  out += "metadata: {name: " + name + ", namespace: " + ns + ", creationTimestamp: \"" + created +
         "\"}\nspec:\n  host: bill.demo.svc.cluster.local\n";
  if (!selector.empty()) out += "  workloadSelector:\n    matchLabels: " + selector + "\n";
  out += "  trafficPolicy:\n    loadBalancer: {simple: " + lb + "}\n";
  return out;
}

routing::ProxySettings frontIn(const std::string& ns, LabelList labels) {
  routing::ProxySettings base;
  base.workload.namespace_name = ns;
  base.workload.labels = std::move(labels);
  base.workload.labels_known = true;
  return base;
}

// The load balancer the proxy uses for bill: which rule's trafficPolicy applies.
LbPolicy policyFor(const routing::RouteTable& table) {
  const routing::ServicePort* port = table.find(addr("10.1.0.10:80"));
  EXPECT_NE(port, nullptr);
  return port == nullptr || port->subsets.empty() ? LbPolicy::kRoundRobin : port->subsets[0].policy;
}

const LabelList kFront = {{"app", "front"}, {"tier", "web"}};
constexpr const char* kOld = "2026-01-01T00:00:00Z";
constexpr const char* kNew = "2026-02-01T00:00:00Z";

TEST(WorkloadSelector, ASelectingRuleWinsOverOneWithoutWhicheverIsOlder) {
  for (bool selector_older : {false, true}) {
    SCOPED_TRACE(selector_older ? "selector rule older" : "selector rule newer");
    const std::string text =
        world(rule("all", "RANDOM", selector_older ? kNew : kOld) +
              rule("front-only", "LEAST_REQUEST", selector_older ? kOld : kNew, "{app: front}"));
    auto table = mustLoad(text, frontIn("demo", kFront));
    ASSERT_TRUE(table);
    EXPECT_EQ(policyFor(*table), LbPolicy::kLeastRequest) << allFindings(*table);
    EXPECT_EQ(allFindings(*table).find("workloadSelector"), std::string::npos)
        << allFindings(*table);
  }
}

TEST(WorkloadSelector, ARuleThatDoesNotSelectThisWorkloadDoesNotApply) {
  const std::string text =
      world(rule("all", "RANDOM", kOld) + rule("others", "LEAST_REQUEST", kNew, "{app: other}"));
  auto table = mustLoad(text, frontIn("demo", kFront));
  ASSERT_TRUE(table);
  EXPECT_EQ(policyFor(*table), LbPolicy::kRandom);
  const std::string f = allFindings(*table);
  EXPECT_NE(f.find("info: "), std::string::npos) << f;
  EXPECT_NE(f.find("spec.workloadSelector"), std::string::npos) << f;
  EXPECT_NE(f.find("does not select this proxy's workload"), std::string::npos) << f;
  // Every label of the selector must be the workload's: one of two is not enough.
  table = mustLoad(world(rule("all", "RANDOM", kOld) +
                         rule("both", "LEAST_REQUEST", kNew, "{app: front, tier: db}")),
                   frontIn("demo", kFront));
  ASSERT_TRUE(table);
  EXPECT_EQ(policyFor(*table), LbPolicy::kRandom);
}

TEST(WorkloadSelector, SelectsOnlyInItsOwnNamespace) {
  const std::string text = world(rule("all", "RANDOM", kOld) +
                                 rule("elsewhere", "LEAST_REQUEST", kOld, "{app: front}", "other"));
  auto table = mustLoad(text, frontIn("demo", kFront));
  ASSERT_TRUE(table);
  EXPECT_EQ(policyFor(*table), LbPolicy::kRandom);
  EXPECT_NE(allFindings(*table).find("of its own namespace (other) only"), std::string::npos)
      << allFindings(*table);
  // The same workload in namespace other is selected.
  table = mustLoad(text, frontIn("other", kFront));
  ASSERT_TRUE(table);
  EXPECT_EQ(policyFor(*table), LbPolicy::kLeastRequest);
}

TEST(WorkloadSelector, WithoutAnIdentityOnlyRulesWithoutASelectorApplyAndItIsAWarning) {
  const std::string text = world(rule("all", "RANDOM", kOld) +
                                 rule("front-only", "LEAST_REQUEST", kNew, "{app: front}"));
  auto table = mustLoad(text);
  ASSERT_TRUE(table);
  EXPECT_EQ(policyFor(*table), LbPolicy::kRandom);
  const std::string f = allFindings(*table);
  EXPECT_NE(f.find("warning: "), std::string::npos) << f;
  EXPECT_NE(f.find("the proxy does not know its workload's namespace"), std::string::npos) << f;
  // A selector rule alone applies to nobody then: the defaults serve.
  table = mustLoad(world(rule("front-only", "LEAST_REQUEST", kNew, "{app: front}")));
  ASSERT_TRUE(table);
  EXPECT_EQ(policyFor(*table), LbPolicy::kRoundRobin);
}

TEST(WorkloadSelector, TheFirstSelectingRuleWinsAndSameSelectorsMerge) {
  // Two selecting rules with different selectors: the older one applies.
  auto table = mustLoad(world(rule("by-tier", "LEAST_REQUEST", kNew, "{tier: web}") +
                              rule("by-app", "RANDOM", kOld, "{app: front}")),
                        frontIn("demo", kFront));
  ASSERT_TRUE(table);
  EXPECT_EQ(policyFor(*table), LbPolicy::kRandom);
  EXPECT_NE(allFindings(*table).find("wins (istiod takes the first)"), std::string::npos)
      << allFindings(*table);
  // The same selector twice: one merged rule, the older trafficPolicy wins.
  table = mustLoad(world(rule("a", "LEAST_REQUEST", kNew, "{app: front}") +
                         rule("b", "RANDOM", kOld, "{app: front}")),
                   frontIn("demo", kFront));
  ASSERT_TRUE(table);
  EXPECT_EQ(policyFor(*table), LbPolicy::kRandom);
  EXPECT_NE(allFindings(*table).find("only the oldest one's traffic policy applies"),
            std::string::npos)
      << allFindings(*table);
}

TEST(WorkloadSelector, TheLabelsCanComeFromTheConfigsPod) {
  const std::string text =
      world(rule("all", "RANDOM", kOld) + rule("front-only", "LEAST_REQUEST", kNew, "{tier: web}"));
  routing::ProxySettings base;
  base.workload.namespace_name = "demo";
  base.workload.name = "front";
  auto table = mustLoad(text, base);
  ASSERT_TRUE(table);
  EXPECT_EQ(policyFor(*table), LbPolicy::kLeastRequest);
  EXPECT_TRUE(table->settings().workload.labels_known);
  EXPECT_EQ(table->settings().workload.labels, kFront);
  EXPECT_EQ(table->settings().workload.labels_source.rfind("Pod demo/front", 0), 0U)
      << table->settings().workload.labels_source;
  // A labels file wins over the Pod document.
  TempFile file("app=\"front\"\ntier=\"db\"");
  base.workload.labels_file = file.path();
  table = mustLoad(text, base);
  ASSERT_TRUE(table);
  EXPECT_EQ(policyFor(*table), LbPolicy::kRandom);
  EXPECT_EQ(table->settings().workload.labels_source, "file " + file.path());
}

// The tls of a host's rules follows the same choice: only the applying rule's trafficPolicy.
TEST(WorkloadSelector, OnlyTheApplyingRulesTlsIsUsed) {
  auto tlsRule = [](const std::string& name, const std::string& mode, const std::string& created,
                    const std::string& selector) {
    std::string out = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n";
    out += "metadata: {name: " + name + ", namespace: demo, creationTimestamp: \"" + created +
           "\"}\nspec:\n  host: bill\n";
    if (!selector.empty()) out += "  workloadSelector:\n    matchLabels: " + selector + "\n";
    out += "  trafficPolicy:\n    tls: {mode: " + mode + "}\n";
    return out;
  };
  const std::string text = world(tlsRule("all", "DISABLE", kOld, "") +
                                 tlsRule("front-only", "ISTIO_MUTUAL", kNew, "{app: front}"));
  auto modeFor = [](const routing::RouteTable& table) {
    if (table.security == nullptr) return security::TlsMode::kUnset;
    auto it = table.security->destination_tls.find({"bill.demo", 0});
    return it == table.security->destination_tls.end() ? security::TlsMode::kUnset
                                                       : it->second.mode;
  };
  auto table = mustLoad(text, frontIn("demo", kFront));
  ASSERT_TRUE(table);
  EXPECT_EQ(modeFor(*table), security::TlsMode::kIstioMutual);
  table = mustLoad(text, frontIn("demo", {{"app", "other"}}));
  ASSERT_TRUE(table);
  EXPECT_EQ(modeFor(*table), security::TlsMode::kDisable);
}

TEST(WorkloadIdentity, TheLabelsFileIsReadAtEveryLoadAndABadOneFailsTheLoad) {
  const std::string text =
      world(rule("all", "RANDOM", kOld) + rule("front-only", "LEAST_REQUEST", kNew, "{tier: web}"));
  TempFile file("app=\"front\"\ntier=\"web\"\n");
  routing::ProxySettings base;
  base.workload.namespace_name = "demo";
  base.workload.labels_file = file.path();
  Loader loader;
  auto table = mustLoad(text, base, &loader);
  ASSERT_TRUE(table);
  EXPECT_EQ(policyFor(*table), LbPolicy::kLeastRequest);
  file.write("app=\"front\"\ntier=\"db\"\n");
  table = mustLoad(text, base, &loader);
  ASSERT_TRUE(table);
  EXPECT_EQ(policyFor(*table), LbPolicy::kRandom);
  file.write("app=\"front\"\ntier=db\n");
  auto bad = loader.load(text, 3, base);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find(file.path() + " line 2: "), std::string::npos)
      << bad.error().message;
  // The dump says who the proxy is.
  file.write("app=\"front\"\n");
  table = mustLoad(text, base, &loader);
  ASSERT_TRUE(table);
  const nlohmann::json w = table->toJson()["settings"]["workload"];
  EXPECT_EQ(w["namespace"], "demo");
  EXPECT_EQ(w["labels"], nlohmann::json::parse(R"({"app": "front"})"));
  EXPECT_EQ(w["labelsFrom"], "file " + file.path());
}

TEST(WorkloadIdentity, ProxyConfigNamesTheWorkloadUnderTheFlags) {
  const std::string pc = R"(---
apiVersion: remora.dev/v1alpha1
kind: ProxyConfig
metadata: {name: proxy}
spec:
  podNamespace: demo
  podName: front
)";
  const std::string text = world(rule("front-only", "LEAST_REQUEST", kNew, "{app: front}") + pc);
  auto table = mustLoad(text);
  ASSERT_TRUE(table);
  EXPECT_EQ(policyFor(*table), LbPolicy::kLeastRequest) << allFindings(*table);
  // A flag's namespace wins over the document's.
  routing::ProxySettings base;
  base.workload.namespace_name = "other";
  table = mustLoad(text, base);
  ASSERT_TRUE(table);
  EXPECT_EQ(table->settings().workload.namespace_name, "other");
  EXPECT_EQ(policyFor(*table), LbPolicy::kRoundRobin);
}

}  // namespace
}  // namespace remora::config
