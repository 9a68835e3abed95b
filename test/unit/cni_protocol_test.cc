// The CNI protocol pieces of remora-cni: environment, CNI_ARGS, versions, error JSON, the
// plugin config (options by remora-init flag name, prevResult, runtimeConfig) and which pods
// are meshed.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "plugin/cni_args.h"
#include "plugin/config.h"
#include "plugin/environment.h"
#include "plugin/error.h"
#include "plugin/version.h"

namespace remora::cni {
namespace {

using nlohmann::json;

std::map<std::string, std::string> addEnv() {
  return {{"CNI_COMMAND", "ADD"},
          {"CNI_CONTAINERID", "c0ffee"},
          {"CNI_NETNS", "/var/run/netns/x"},
          {"CNI_IFNAME", "eth0"},
          {"CNI_PATH", "/opt/cni/bin"}};
}

bool mentions(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

TEST(CniEnvironment, AddNeedsContainerNetnsAndIfname) {
  auto ok = parseEnvironment(addEnv());
  ASSERT_TRUE(ok.ok()) << ok.error().msg;
  EXPECT_EQ(ok->command, Command::kAdd);
  EXPECT_EQ(ok->container_id, "c0ffee");
  EXPECT_EQ(ok->netns, "/var/run/netns/x");

  auto env = addEnv();
  env.erase("CNI_NETNS");
  env.erase("CNI_IFNAME");
  auto missing = parseEnvironment(env);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kInvalidEnvironment);
  EXPECT_TRUE(mentions(missing.error().msg, "CNI_NETNS")) << missing.error().msg;
  EXPECT_TRUE(mentions(missing.error().msg, "CNI_IFNAME")) << missing.error().msg;
  EXPECT_FALSE(mentions(missing.error().msg, "CNI_CONTAINERID"));
}

TEST(CniEnvironment, DelNeedsNoNetns) {
  auto env = addEnv();
  env["CNI_COMMAND"] = "DEL";
  env.erase("CNI_NETNS");
  auto del = parseEnvironment(env);
  ASSERT_TRUE(del.ok()) << del.error().msg;
  EXPECT_TRUE(del->netns.empty());
  env.erase("CNI_CONTAINERID");
  auto bad = parseEnvironment(env);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(mentions(bad.error().msg, "CNI_CONTAINERID"));
}

TEST(CniEnvironment, VersionStatusGcNeedOnlyTheCommand) {
  for (const char* c : {"VERSION", "STATUS", "GC"}) {
    EXPECT_TRUE(parseEnvironment({{"CNI_COMMAND", c}}).ok()) << c;
  }
}

TEST(CniEnvironment, UnknownOrMissingCommandIsCode4) {
  auto none = parseEnvironment({});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ErrorCode::kInvalidEnvironment);
  EXPECT_TRUE(mentions(none.error().msg, "CNI_COMMAND"));
  auto odd = parseEnvironment({{"CNI_COMMAND", "add"}});
  ASSERT_FALSE(odd.ok());
  EXPECT_TRUE(mentions(odd.error().msg, "'add'"));
}

TEST(CniEnvironment, RejectsIdsThatCouldEscapeTheStateDir) {
  for (const char* id : {"../etc", "a/b", "-x", ".hidden", "a b"}) {
    auto env = addEnv();
    env["CNI_CONTAINERID"] = id;
    auto r = parseEnvironment(env);
    ASSERT_FALSE(r.ok()) << id;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidEnvironment);
    EXPECT_TRUE(mentions(r.error().msg, "CNI_CONTAINERID")) << r.error().msg;
  }
  for (const char* ifname : {"..", "eth0:1", "a/b", "sixteen-chars-xx", "e th"}) {
    auto env = addEnv();
    env["CNI_IFNAME"] = ifname;
    EXPECT_FALSE(parseEnvironment(env).ok()) << ifname;
  }
  EXPECT_TRUE(validContainerId("3f6940ab5ab4_x.y-z"));
  EXPECT_TRUE(validInterfaceName("eth0"));
}

TEST(CniArgs, ParsesTheKubeletsForm) {
  auto args = parseCniArgs(
      "IgnoreUnknown=1;K8S_POD_NAMESPACE=istio-demo;K8S_POD_NAME=front-tomcat;"
      "K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1;");
  ASSERT_TRUE(args.ok()) << args.error().msg;
  EXPECT_EQ(args->pairs.size(), 5u);
  PodIdentity pod = podIdentity(*args);
  EXPECT_EQ(pod.namespace_name, "istio-demo");
  EXPECT_EQ(pod.name, "front-tomcat");
  EXPECT_EQ(pod.infra_container_id, "abc123");
  EXPECT_EQ(pod.uid, "u-1");
  EXPECT_TRUE(args->has("IgnoreUnknown"));
  EXPECT_EQ(args->get("missing"), "");
}

TEST(CniArgs, EmptyAndValuesWithEquals) {
  auto empty = parseCniArgs("");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->pairs.empty());
  auto eq = parseCniArgs("A=b=c;;B=");
  ASSERT_TRUE(eq.ok());
  EXPECT_EQ(eq->get("A"), "b=c");
  EXPECT_TRUE(eq->has("B"));
  EXPECT_EQ(eq->get("B"), "");
}

TEST(CniArgs, MalformedPairIsCode4) {
  for (const char* bad : {"novalue", "A=1;=2", "A=1;junk"}) {
    auto r = parseCniArgs(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidEnvironment);
    EXPECT_TRUE(mentions(r.error().msg, "CNI_ARGS"));
  }
}

TEST(CniVersion, SupportedMalformedAndUnknown) {
  for (auto v : kSupportedVersions) EXPECT_TRUE(requireSupportedVersion(v).ok()) << v;
  auto unknown = requireSupportedVersion("0.2.0");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::kIncompatibleVersion);
  EXPECT_TRUE(mentions(unknown.error().details, "1.0.0"));
  auto future = requireSupportedVersion("2.0.0");
  ASSERT_FALSE(future.ok());
  EXPECT_EQ(future.error().code, ErrorCode::kIncompatibleVersion);
  for (const char* bad : {"", "1.0", "1.0.0.0", "v1.0.0", "1.x.0", "1..0"}) {
    auto r = requireSupportedVersion(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kDecodeFailure) << bad;
  }
  EXPECT_LT(*parseSpecVersion("0.4.0"), *parseSpecVersion("1.0.0"));
  EXPECT_LT(*parseSpecVersion("1.0.0"), *parseSpecVersion("1.1.0"));
}

TEST(CniVersion, VersionResult) {
  json j = json::parse(versionResultJson("1.0.0"));
  EXPECT_EQ(j["cniVersion"], "1.0.0");
  EXPECT_EQ(j["supportedVersions"].size(), kSupportedVersions.size());
}

TEST(CniError, JsonHasTheSpecsFields) {
  json j = json::parse(
      errorJson(CniError{ErrorCode::kInvalidConfig, "bad thing", "more about it"}, "1.1.0"));
  EXPECT_EQ(j["cniVersion"], "1.1.0");
  EXPECT_EQ(j["code"], 7);
  EXPECT_EQ(j["msg"], "bad thing");
  EXPECT_EQ(j["details"], "more about it");
  json bare = json::parse(errorJson(CniError{ErrorCode::kNetnsUnavailable, "x"}, "0.4.0"));
  EXPECT_EQ(bare["code"], 100);
  EXPECT_FALSE(bare.contains("details"));
}

std::string conf(const std::string& extra = "", const std::string& version = "1.0.0") {
  return R"({"cniVersion":")" + version + R"(","name":"k8s-pod-network","type":"remora-cni")" +
         (extra.empty() ? "" : "," + extra) + "}";
}

TEST(CniConfig, OptionsUseRemoraInitsFlagNames) {
  auto c = parseConfig(conf(R"("proxy-uid":2102,"proxy-gid":"2103",)"
                            R"("exclude-outbound-cidrs":["10.96.0.1/32","fd00::/8"],)"
                            R"("exclude-inbound-ports":"8080,9000-9010","ipv6":"off",)"
                            R"("iptables-backend":"nft","outbound-port":4140)"),
                       Command::kAdd);
  ASSERT_TRUE(c.ok()) << c.error().msg << " " << c.error().details;
  EXPECT_EQ(c->options.proxy_uids, std::vector<uint32_t>{2102});
  EXPECT_EQ(c->options.proxy_gids, std::vector<uint32_t>{2103});
  EXPECT_EQ(c->options.outbound_port, 4140);
  ASSERT_EQ(c->options.exclude_outbound_cidrs.size(), 2u);
  EXPECT_EQ(c->options.exclude_outbound_cidrs[0].toString(), "10.96.0.1/32");
  EXPECT_EQ(c->options.exclude_inbound_ports.size(), 2u);
  EXPECT_EQ(c->options.ipv6, intercept::Ipv6Mode::kOff);
  EXPECT_EQ(c->options.backend, intercept::IptablesBackend::kNft);
  EXPECT_EQ(c->name, "k8s-pod-network");
  EXPECT_EQ(c->state_dir, kDefaultStateDir);
}

TEST(CniConfig, DefaultsAreRemoraInits) {
  auto c = parseConfig(conf(), Command::kAdd);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->options, intercept::InterceptOptions{});
  EXPECT_FALSE(c->prev_result.has_value());
}

TEST(CniConfig, BadOptionValueIsCode7NamingTheKey) {
  auto c = parseConfig(conf(R"("proxy-uid":"nobody")"), Command::kAdd);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, ErrorCode::kInvalidConfig);
  EXPECT_TRUE(mentions(c.error().msg, "proxy-uid")) << c.error().msg;
  EXPECT_TRUE(mentions(c.error().details, "proxy-uid"));

  auto port = parseConfig(conf(R"("outbound-port":70000)"), Command::kAdd);
  ASSERT_FALSE(port.ok());
  EXPECT_EQ(port.error().code, ErrorCode::kInvalidConfig);

  auto shape = parseConfig(conf(R"("exclude-outbound-cidrs":{"a":1})"), Command::kAdd);
  ASSERT_FALSE(shape.ok());
  EXPECT_EQ(shape.error().code, ErrorCode::kInvalidConfig);
}

TEST(CniConfig, UnknownFlagLikeKeyIsCode2WithKeyAndValue) {
  auto c = parseConfig(conf(R"("proxy-uuid":1337)"), Command::kAdd);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, ErrorCode::kUnsupportedField);
  EXPECT_TRUE(mentions(c.error().msg, "proxy-uuid"));
  EXPECT_TRUE(mentions(c.error().msg, "1337"));
  // Keys runtimes and conventions add are not options and pass.
  auto fine = parseConfig(conf(R"("capabilities":{"io.kubernetes.cri.pod-annotations":true},)"
                               R"("cni.dev/valid-attachments":[],"args":{"cni":{}},"mtu":1500)"),
                          Command::kAdd);
  EXPECT_TRUE(fine.ok()) << fine.error().msg;
}

TEST(CniConfig, MalformedStdinIsCode6) {
  for (const char* bad : {"{", "not json", "[1,2]", "\"s\"", "{\"cniVersion\":1.0}"}) {
    auto c = parseConfig(bad, Command::kAdd);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.error().code, ErrorCode::kDecodeFailure) << bad;
  }
  auto empty = parseConfig("", Command::kAdd);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().code, ErrorCode::kDecodeFailure);
}

TEST(CniConfig, VersionRules) {
  auto unknown = parseConfig(conf("", "0.2.0"), Command::kAdd);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::kIncompatibleVersion);
  auto missing = parseConfig(R"({"name":"n","type":"remora-cni"})", Command::kAdd);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kInvalidConfig);
  // STATUS and GC arrived in 1.1.0, CHECK in 0.4.0.
  auto status = parseConfig(conf("", "1.0.0"), Command::kStatus);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code, ErrorCode::kIncompatibleVersion);
  EXPECT_TRUE(parseConfig(conf("", "1.1.0"), Command::kStatus).ok());
  auto check = parseConfig(conf(R"("prevResult":{})", "0.3.1"), Command::kCheck);
  ASSERT_FALSE(check.ok());
  EXPECT_EQ(check.error().code, ErrorCode::kIncompatibleVersion);
  EXPECT_TRUE(parseConfig(conf("", "0.3.1"), Command::kAdd).ok());
  EXPECT_TRUE(parseConfig(conf("", "0.4.0"), Command::kAdd).ok());
  // VERSION needs no name or type, and not even stdin.
  auto version = parseConfig(R"({"cniVersion":"0.4.0"})", Command::kVersion);
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(version->cni_version, "0.4.0");
  auto blank = parseConfig("", Command::kVersion);
  ASSERT_TRUE(blank.ok());
  EXPECT_EQ(blank->cni_version, kLatestVersion);
}

TEST(CniConfig, NetworkNameMustBeSafeForAPath) {
  auto c =
      parseConfig(R"({"cniVersion":"1.0.0","name":"../x","type":"remora-cni"})", Command::kAdd);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, ErrorCode::kInvalidConfig);
}

TEST(CniConfig, PrevResultKeepsItsOrder) {
  std::string prev =
      R"({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],)"
      R"("ips":[{"interface":0,"address":"10.89.0.2/24","gateway":"10.89.0.1"}],"dns":{}})";
  auto c = parseConfig(conf(R"("prevResult":)" + prev), Command::kAdd);
  ASSERT_TRUE(c.ok()) << c.error().msg;
  ASSERT_TRUE(c->prev_result.has_value());
  EXPECT_EQ(c->prev_result->dump(), prev);
  auto bad = parseConfig(conf(R"("prevResult":[1])"), Command::kAdd);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kDecodeFailure);
}

TEST(CniConfig, PluginSettings) {
  auto c = parseConfig(conf(R"("excludeNamespaces":["kube-system"],"includeNamespaces":["a","b"],)"
                            R"("logFile":"/var/log/remora-cni.log","logLevel":"debug",)"
                            R"("stateDir":"/run/remora-cni")"),
                       Command::kAdd);
  ASSERT_TRUE(c.ok()) << c.error().msg;
  EXPECT_EQ(c->exclude_namespaces, std::vector<std::string>{"kube-system"});
  EXPECT_EQ(c->include_namespaces.size(), 2u);
  EXPECT_EQ(c->log_file, "/var/log/remora-cni.log");
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->state_dir, "/run/remora-cni");
  for (const char* bad :
       {R"("logFile":"relative.log")", R"("logLevel":"loud")", R"("stateDir":"tmp")"}) {
    auto r = parseConfig(conf(bad), Command::kAdd);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidConfig) << bad;
  }
  auto shape = parseConfig(conf(R"("excludeNamespaces":"kube-system")"), Command::kAdd);
  ASSERT_FALSE(shape.ok());
  EXPECT_EQ(shape.error().code, ErrorCode::kDecodeFailure);
}

TEST(CniConfig, GcAttachments) {
  auto gc = parseConfig(conf(R"("cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},)"
                             R"({"containerID":"b","ifname":"net1"}])",
                             "1.1.0"),
                        Command::kGc);
  ASSERT_TRUE(gc.ok()) << gc.error().msg;
  ASSERT_TRUE(gc->valid_attachments.has_value());
  EXPECT_EQ(gc->valid_attachments->size(), 2u);
  EXPECT_EQ((*gc->valid_attachments)[1], (Attachment{"b", "net1"}));
  // The draft spelling libcni also sends.
  auto draft = parseConfig(conf(R"("cni.dev/attachments":[])", "1.1.0"), Command::kGc);
  ASSERT_TRUE(draft.ok());
  EXPECT_TRUE(draft->valid_attachments->empty());
  auto none = parseConfig(conf("", "1.1.0"), Command::kGc);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ErrorCode::kInvalidConfig);
}

TEST(CniConfig, OptionValueText) {
  EXPECT_EQ(optionValueText(nlohmann::ordered_json(1337)), "1337");
  EXPECT_EQ(optionValueText(nlohmann::ordered_json(true)), "true");
  EXPECT_EQ(optionValueText(nlohmann::ordered_json::parse(R"(["a",2])")), "a,2");
  EXPECT_FALSE(optionValueText(nlohmann::ordered_json(1.5)).has_value());
  EXPECT_FALSE(optionValueText(nlohmann::ordered_json(nullptr)).has_value());
}

PluginConfig configFrom(const std::string& extra) {
  auto c = parseConfig(conf(extra), Command::kAdd);
  EXPECT_TRUE(c.ok()) << c.error().msg;
  return c.ok() ? *c : PluginConfig{};
}

CniArgs argsFor(const std::string& ns, const std::string& extra = "") {
  auto a = parseCniArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=" + ns + ";K8S_POD_NAME=p" + extra);
  EXPECT_TRUE(a.ok());
  return *a;
}

TEST(CniMesh, NamespacesIncludeAndExclude) {
  auto config = configFrom(R"("excludeNamespaces":["kube-system"])");
  EXPECT_FALSE(decideMesh(config, argsFor("kube-system"))->meshed);
  EXPECT_TRUE(mentions(decideMesh(config, argsFor("kube-system"))->reason, "excludeNamespaces"));
  EXPECT_TRUE(decideMesh(config, argsFor("istio-demo"))->meshed);

  auto only = configFrom(R"("includeNamespaces":["istio-demo"],"excludeNamespaces":["x"])");
  EXPECT_TRUE(decideMesh(only, argsFor("istio-demo"))->meshed);
  EXPECT_FALSE(decideMesh(only, argsFor("default"))->meshed);
  EXPECT_FALSE(decideMesh(only, CniArgs{})->meshed);
  // With neither list every pod is meshed, even without a namespace (podman).
  EXPECT_TRUE(decideMesh(configFrom(""), CniArgs{})->meshed);
}

TEST(CniMesh, PerPodOptOutThroughCniArgs) {
  auto config = configFrom("");
  auto out = decideMesh(config, argsFor("istio-demo", ";REMORA_INJECT=false"));
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE(out->meshed);
  EXPECT_TRUE(mentions(out->reason, "REMORA_INJECT"));
  EXPECT_TRUE(decideMesh(config, argsFor("istio-demo", ";REMORA_INJECT=true"))->meshed);
  auto bad = decideMesh(config, argsFor("istio-demo", ";REMORA_INJECT=maybe"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidEnvironment);
}

TEST(CniMesh, PerPodOverridesThroughCniArgs) {
  auto config = configFrom(R"("proxy-uid":1337)");
  auto d = decideMesh(config, argsFor("ns", ";REMORA_EXCLUDE_OUTBOUND_PORTS=22"));
  ASSERT_TRUE(d.ok()) << d.error().msg;
  ASSERT_EQ(d->options.exclude_outbound_ports.size(), 1u);
  EXPECT_EQ(d->options.exclude_outbound_ports[0].first, 22);
  auto bad = decideMesh(config, argsFor("ns", ";REMORA_PROXY_UID=x"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidEnvironment);
}

TEST(CniMesh, PerPodOptOutAndOverridesThroughAnnotations) {
  auto out = configFrom(R"("runtimeConfig":{"io.kubernetes.cri.pod-annotations":)"
                        R"({"remora.dev/inject":"false"}})");
  auto d = decideMesh(out, argsFor("ns"));
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->meshed);
  EXPECT_TRUE(mentions(d->reason, "annotation"));

  auto tuned = configFrom(R"("runtimeConfig":{"io.kubernetes.cri.pod-annotations":)"
                          R"({"remora.dev/exclude-outbound-cidrs":"10.0.0.0/8",)"
                          R"("remora.dev/unrelated":"x","other.io/a":"b"}})");
  auto t = decideMesh(tuned, argsFor("ns"));
  ASSERT_TRUE(t.ok()) << t.error().msg;
  EXPECT_TRUE(t->meshed);
  ASSERT_EQ(t->options.exclude_outbound_cidrs.size(), 1u);

  auto bad = configFrom(R"("runtimeConfig":{"io.kubernetes.cri.pod-annotations":)"
                        R"({"remora.dev/proxy-uid":"root"}})");
  auto b = decideMesh(bad, argsFor("ns"));
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code, ErrorCode::kInvalidConfig);
}

TEST(CniMesh, Ipv6RulesOnlyForPodsWithAnIpv6Address) {
  using intercept::Ipv6Mode;
  auto prev = [](const std::string& ips) {
    return std::optional<nlohmann::ordered_json>(
        nlohmann::ordered_json::parse(R"({"cniVersion":"1.0.0","ips":[)" + ips + "]}"));
  };
  intercept::InterceptOptions automatic;
  EXPECT_EQ(optionsForPod(automatic, prev(R"({"address":"10.89.0.2/24"})")).ipv6, Ipv6Mode::kOff);
  EXPECT_EQ(optionsForPod(automatic, prev(R"({"address":"10.89.0.2/24"},)"
                                          R"({"address":"fd00::2/64"})"))
                .ipv6,
            Ipv6Mode::kAuto);
  // Nothing to go by: leave it to remora-init's own detection.
  EXPECT_EQ(optionsForPod(automatic, prev("")).ipv6, Ipv6Mode::kAuto);
  EXPECT_EQ(optionsForPod(automatic, std::nullopt).ipv6, Ipv6Mode::kAuto);
  // An explicit choice always stands.
  intercept::InterceptOptions on;
  on.ipv6 = Ipv6Mode::kOn;
  EXPECT_EQ(optionsForPod(on, prev(R"({"address":"10.89.0.2/24"})")).ipv6, Ipv6Mode::kOn);
}

}  // namespace
}  // namespace remora::cni
