// remora-cni's commands end to end through runPlugin, with a fake dataplane that records what
// would have been done to the pod's namespace. The "namespaces" are plain files in a temp dir:
// the plugin only stats them; the fake never enters them.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "plugin/plugin.h"
#include "plugin/state.h"

namespace remora::cni {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class FakeDataplane : public Dataplane {
 public:
  CniResult<intercept::ApplyReport> install(const std::string& netns,
                                            const intercept::InterceptOptions& options,
                                            const intercept::EbpfConfig& ebpf) override {
    installs.push_back(netns);
    last_options = options;
    last_ebpf = ebpf;
    if (install_error) return *install_error;
    installed.insert(netns);
    return intercept::ApplyReport{"fake", {"installed"}, true};
  }
  CniResult<intercept::ApplyReport> uninstall(const std::string& netns,
                                              const intercept::InterceptOptions&,
                                              const intercept::EbpfConfig&) override {
    uninstalls.push_back(netns);
    if (!fs::exists(netns)) {
      return CniError{ErrorCode::kNetnsUnavailable, "cannot enter network namespace", netns};
    }
    bool had = installed.erase(netns) > 0;
    return intercept::ApplyReport{"fake", {}, had};
  }
  CniResult<void> check(const std::string& netns, const intercept::InterceptOptions& options,
                        const intercept::EbpfConfig&) override {
    checks.push_back(netns);
    if (!installed.count(netns) || options != last_options) {
      return CniError{ErrorCode::kRulesNotIntact, "interception rules are missing or modified",
                      "chain REMORA_OUTPUT is missing"};
    }
    return {};
  }
  CniResult<uint64_t> netnsCookie(const std::string& netns) override {
    if (!fs::exists(netns)) {
      return CniError{ErrorCode::kNetnsUnavailable, "cannot enter network namespace", netns};
    }
    return std::hash<std::string>()(netns) | 1;
  }
  CniResult<intercept::ApplyReport> uninstallEbpfCookie(uint64_t cookie,
                                                        const intercept::EbpfConfig&) override {
    cookie_uninstalls.push_back(cookie);
    return intercept::ApplyReport{"fake", {}, true};
  }
  CniResult<void> status(const intercept::InterceptOptions&,
                         const intercept::EbpfConfig&) override {
    if (status_error) return *status_error;
    return {};
  }

  std::vector<std::string> installs, uninstalls, checks;
  std::vector<uint64_t> cookie_uninstalls;
  std::set<std::string> installed;
  intercept::InterceptOptions last_options;
  intercept::EbpfConfig last_ebpf;
  std::optional<CniError> install_error;
  std::optional<CniError> status_error;
};

constexpr const char* kPrevResult =
    R"({"cniVersion":"1.0.0","interfaces":[{"name":"cni-podman1","mac":"ba:9e:06:94:3a:ff"},)"
    R"({"name":"eth0","mac":"5a:9d:22:5f:d7:7a","sandbox":"/run/netns/x"}],)"
    R"("ips":[{"interface":1,"address":"10.89.77.2/24","gateway":"10.89.77.1"}],"dns":{}})";

class CniPluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/remora-cni-unit-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    netns_ = makeNetns("pod1");
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string makeNetns(const std::string& name) {
    std::string path = dir_ + "/ns-" + name;
    std::ofstream(path) << "";
    return path;
  }

  std::string config(const std::string& extra = "", const std::string& version = "1.0.0",
                     bool with_prev = true) {
    std::string c = R"({"cniVersion":")" + version +
                    R"(","name":"podnet","type":"remora-cni","stateDir":")" + dir_ +
                    R"(/state","logFile":")" + dir_ + R"(/cni.log","logLevel":"debug")";
    if (with_prev) c += std::string(R"(,"prevResult":)") + kPrevResult;
    if (!extra.empty()) c += "," + extra;
    return c + "}";
  }

  std::map<std::string, std::string> env(const std::string& command, const std::string& id = "c1",
                                         const std::optional<std::string>& netns = std::nullopt,
                                         const std::string& args = "") {
    std::map<std::string, std::string> e = {{"CNI_COMMAND", command},
                                            {"CNI_CONTAINERID", id},
                                            {"CNI_NETNS", netns.value_or(netns_)},
                                            {"CNI_IFNAME", "eth0"},
                                            {"CNI_PATH", "/opt/cni/bin"}};
    if (!args.empty()) e["CNI_ARGS"] = args;
    return e;
  }

  PluginOutput run(const std::map<std::string, std::string>& e, const std::string& stdin_text) {
    return runPlugin(e, stdin_text, dataplane_);
  }

  static json errorOf(const PluginOutput& out) {
    EXPECT_NE(out.exit_code, 0);
    json j = json::parse(out.stdout_text, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << out.stdout_text;
    EXPECT_TRUE(j.contains("cniVersion") && j.contains("code") && j.contains("msg"))
        << out.stdout_text;
    return j;
  }

  StateStore state() const { return StateStore(dir_ + "/state", "podnet"); }

  std::string logText() const {
    std::ifstream in(dir_ + "/cni.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::string dir_;
  std::string netns_;
  FakeDataplane dataplane_;
};

TEST_F(CniPluginTest, AddInstallsAndPrintsPrevResultUnchanged) {
  auto out = run(env("ADD"), config(R"("proxy-uid":2102)"));
  ASSERT_EQ(out.exit_code, 0) << out.stdout_text;
  EXPECT_EQ(out.stdout_text, std::string(kPrevResult) + "\n");
  ASSERT_EQ(dataplane_.installs, std::vector<std::string>{netns_});
  EXPECT_EQ(dataplane_.last_options.proxy_uids, std::vector<uint32_t>{2102});
  auto record = state().load("c1", "eth0");
  ASSERT_TRUE(record.ok());
  ASSERT_TRUE(record->has_value());
  EXPECT_EQ((*record)->netns, netns_);
  EXPECT_NE((*record)->netns_ino, 0u);
}

TEST_F(CniPluginTest, EbpfModePassesTheNodesCgroupAndPinDir) {
  auto out = run(env("ADD"), config(R"("mode":"ebpf","cgroup":"/sys/fs/cgroup/unified/k8s",)"
                                    R"("bpf-pin-dir":"/sys/fs/bpf/remora-node")"));
  ASSERT_EQ(out.exit_code, 0) << out.stdout_text;
  EXPECT_EQ(dataplane_.last_options.mode, intercept::InterceptMode::kEbpf);
  EXPECT_EQ(dataplane_.last_ebpf.cgroup, "/sys/fs/cgroup/unified/k8s");
  EXPECT_EQ(dataplane_.last_ebpf.pin_dir, "/sys/fs/bpf/remora-node");
  // Without the keys: the cgroup v2 root (detected at ADD) and the default pin dir.
  ASSERT_EQ(run(env("ADD", "c2"), config(R"("mode":"ebpf")")).exit_code, 0);
  EXPECT_EQ(dataplane_.last_ebpf.cgroup, "");
  EXPECT_EQ(dataplane_.last_ebpf.pin_dir, intercept::kDefaultBpfPinDir);
}

TEST_F(CniPluginTest, BadEbpfConfigIsAnErrorNamingTheField) {
  struct Case {
    std::string extra;
    int code;
    std::string needle;
  };
  const Case cases[] = {
      {R"("mode":"ebpf","cgroup":"sys/fs/cgroup")", 7,
       "cgroup 'sys/fs/cgroup' must be an absolute"},
      {R"("mode":"ebpf","bpf-pin-dir":"")", 7, "bpf-pin-dir '' must be an absolute path"},
      {R"("mode":"ebpf","cgroup":42)", 6, "cgroup must be a string"},
      {R"("cgroup":"/sys/fs/cgroup")", 7, "cgroup applies only with \"mode\": \"ebpf\""},
      {R"("mode":"nftables","bpf-pin-dir":"/sys/fs/bpf/x")", 7, "bpf-pin-dir applies only"},
      {R"("mode":"ebpf","exclude-interfaces":"eth1")", 7, "--exclude-interfaces"},
      {R"("mode":"ebpf","proxy-uid":"1337,1338")", 7, "one --proxy-uid"},
      {R"("mode":"bpf")", 7, "invalid --mode 'bpf'"},
  };
  for (const auto& c : cases) {
    json e = errorOf(run(env("ADD"), config(c.extra)));
    EXPECT_EQ(e["code"], c.code) << c.extra << ": " << e.dump();
    EXPECT_NE(e["msg"].get<std::string>().find(c.needle), std::string::npos)
        << c.extra << ": " << e.dump();
  }
  EXPECT_TRUE(dataplane_.installs.empty());
}

TEST_F(CniPluginTest, PodsCannotSwitchIntoOrOutOfEbpfMode) {
  json e = errorOf(run(env("ADD", "c1", std::nullopt, "REMORA_MODE=ebpf"), config()));
  EXPECT_EQ(e["code"], 4) << e.dump();
  EXPECT_NE(e["msg"].get<std::string>().find("chosen per node"), std::string::npos) << e.dump();
  e = errorOf(run(env("ADD"),
                  config(R"("mode":"ebpf","runtimeConfig":{"io.kubernetes.cri.pod-annotations":)"
                         R"({"remora.dev/mode":"iptables"}})")));
  EXPECT_EQ(e["code"], 7) << e.dump();
  EXPECT_TRUE(dataplane_.installs.empty());
  // Between the rule modes a pod may still choose.
  EXPECT_EQ(run(env("ADD", "c1", std::nullopt, "REMORA_MODE=nftables"), config()).exit_code, 0);
}

TEST_F(CniPluginTest, AddRecordsThePodIdentity) {
  auto out = run(env("ADD", "c1", std::nullopt,
                     "IgnoreUnknown=1;K8S_POD_NAMESPACE=istio-demo;K8S_POD_NAME=front-tomcat"),
                 config());
  ASSERT_EQ(out.exit_code, 0) << out.stdout_text;
  auto record = state().load("c1", "eth0");
  ASSERT_TRUE(record.ok() && record->has_value());
  EXPECT_EQ((*record)->pod_namespace, "istio-demo");
  EXPECT_EQ((*record)->pod_name, "front-tomcat");
}

TEST_F(CniPluginTest, LogsGoToTheFileNeverStdout) {
  auto out = run(env("ADD"), config());
  ASSERT_EQ(out.exit_code, 0);
  EXPECT_TRUE(json::accept(out.stdout_text));
  std::string log = logText();
  EXPECT_NE(log.find("interception installed"), std::string::npos) << log;
  EXPECT_NE(log.find("container=c1"), std::string::npos) << log;
}

TEST_F(CniPluginTest, AddWithoutPrevResultIsAnError) {
  auto out = run(env("ADD"), config("", "1.0.0", /*with_prev=*/false));
  json e = errorOf(out);
  EXPECT_EQ(e["code"], 7);
  EXPECT_NE(e["msg"].get<std::string>().find("prevResult"), std::string::npos);
  EXPECT_TRUE(dataplane_.installs.empty());
}

TEST_F(CniPluginTest, UnmeshedPodGetsPrevResultAndNothingInstalled) {
  auto excluded = run(env("ADD", "c1", std::nullopt, "K8S_POD_NAMESPACE=kube-system"),
                      config(R"("excludeNamespaces":["kube-system"])"));
  ASSERT_EQ(excluded.exit_code, 0) << excluded.stdout_text;
  EXPECT_EQ(excluded.stdout_text, std::string(kPrevResult) + "\n");

  auto opted_out =
      run(env("ADD", "c2", std::nullopt, "K8S_POD_NAMESPACE=a;REMORA_INJECT=false"), config());
  ASSERT_EQ(opted_out.exit_code, 0);

  auto annotated =
      run(env("ADD", "c3"), config(R"("runtimeConfig":{"io.kubernetes.cri.pod-annotations":)"
                                   R"({"remora.dev/inject":"false"}})"));
  ASSERT_EQ(annotated.exit_code, 0);
  EXPECT_EQ(annotated.stdout_text, std::string(kPrevResult) + "\n");

  EXPECT_TRUE(dataplane_.installs.empty());
  auto records = state().list();
  ASSERT_TRUE(records.ok());
  EXPECT_TRUE(records->empty());
  EXPECT_NE(logText().find("not meshed"), std::string::npos);
}

TEST_F(CniPluginTest, AddIntoANonexistentNetnsFails) {
  auto out = run(env("ADD", "c1", dir_ + "/no-such-netns"), config());
  json e = errorOf(out);
  EXPECT_EQ(e["code"], 100);
  EXPECT_NE(e["msg"].get<std::string>().find("no-such-netns"), std::string::npos);
  EXPECT_TRUE(dataplane_.installs.empty());
}

TEST_F(CniPluginTest, FailedInstallLeavesNoRecord) {
  dataplane_.install_error =
      CniError{ErrorCode::kInstallFailed, "installing interception rules failed",
               "iptables-restore: line 3 failed"};
  auto out = run(env("ADD"), config());
  json e = errorOf(out);
  EXPECT_EQ(e["code"], 101);
  EXPECT_EQ(e["details"], "iptables-restore: line 3 failed");
  EXPECT_EQ(e["cniVersion"], "1.0.0");
  EXPECT_FALSE(state().load("c1", "eth0")->has_value());
}

TEST_F(CniPluginTest, ProtocolErrorsAreCniErrorJson) {
  // Malformed stdin: code 6.
  EXPECT_EQ(errorOf(run(env("ADD"), "{not json"))["code"], 6);
  // Unknown version: code 1, reported in the newest version since the given one is unusable.
  json v = errorOf(run(env("ADD"), config("", "0.2.0")));
  EXPECT_EQ(v["code"], 1);
  EXPECT_EQ(v["cniVersion"], "1.1.0");
  // Bad option value: code 7, in the config's version.
  json o = errorOf(run(env("ADD"), config(R"("inbound-port":"http")", "0.4.0")));
  EXPECT_EQ(o["code"], 7);
  EXPECT_EQ(o["cniVersion"], "0.4.0");
  // Missing environment: code 4, naming the variable.
  auto e = env("ADD");
  e.erase("CNI_NETNS");
  json m = errorOf(run(e, config()));
  EXPECT_EQ(m["code"], 4);
  EXPECT_NE(m["msg"].get<std::string>().find("CNI_NETNS"), std::string::npos);
  // Malformed CNI_ARGS: code 4.
  EXPECT_EQ(errorOf(run(env("ADD", "c1", std::nullopt, "garbage"), config()))["code"], 4);
  EXPECT_TRUE(dataplane_.installs.empty());
}

TEST_F(CniPluginTest, DelRemovesRulesAndRecordAndIsIdempotent) {
  ASSERT_EQ(run(env("ADD"), config()).exit_code, 0);
  auto del = run(env("DEL"), config());
  ASSERT_EQ(del.exit_code, 0) << del.stdout_text;
  EXPECT_EQ(del.stdout_text, "");
  EXPECT_EQ(dataplane_.uninstalls, std::vector<std::string>{netns_});
  EXPECT_TRUE(dataplane_.installed.empty());
  EXPECT_FALSE(state().load("c1", "eth0")->has_value());
  // Again: nothing left, still success.
  auto again = run(env("DEL"), config());
  EXPECT_EQ(again.exit_code, 0) << again.stdout_text;
}

TEST_F(CniPluginTest, DelToleratesMissingNetnsAndPrevResult) {
  ASSERT_EQ(run(env("ADD"), config()).exit_code, 0);
  std::filesystem::remove(netns_);
  auto del = run(env("DEL"), config("", "1.0.0", /*with_prev=*/false));
  EXPECT_EQ(del.exit_code, 0) << del.stdout_text;
  EXPECT_FALSE(state().load("c1", "eth0")->has_value());
  // No ADD ever happened for this one.
  auto never = run(env("DEL", "c9", dir_ + "/gone"), config("", "1.0.0", false));
  EXPECT_EQ(never.exit_code, 0) << never.stdout_text;
}

TEST_F(CniPluginTest, EbpfDelAfterTheNetnsIsGoneUnregistersTheRecordedCookie) {
  const std::string ebpf = R"("mode":"ebpf")";
  ASSERT_EQ(run(env("ADD"), config(ebpf)).exit_code, 0);
  auto record = state().load("c1", "eth0");
  ASSERT_TRUE(record && record->has_value());
  const uint64_t cookie = (*record)->netns_cookie;
  EXPECT_NE(cookie, 0u);
  std::filesystem::remove(netns_);
  auto del = run(env("DEL"), config(ebpf, "1.0.0", false));
  EXPECT_EQ(del.exit_code, 0) << del.stdout_text;
  EXPECT_EQ(dataplane_.cookie_uninstalls, std::vector<uint64_t>{cookie});
  EXPECT_TRUE(dataplane_.uninstalls.empty());
  EXPECT_FALSE(state().load("c1", "eth0")->has_value());
  // GC does the same for a stale attachment.
  netns_ = makeNetns("pod2");
  ASSERT_EQ(run(env("ADD", "c2"), config(ebpf)).exit_code, 0);
  const uint64_t second = (*state().load("c2", "eth0"))->netns_cookie;
  std::filesystem::remove(netns_);
  auto gc =
      run(env("GC", "c2"), config(ebpf + R"(,"cni.dev/valid-attachments":[])", "1.1.0", false));
  EXPECT_EQ(gc.exit_code, 0) << gc.stdout_text;
  EXPECT_EQ(dataplane_.cookie_uninstalls, (std::vector<uint64_t>{cookie, second}));
}

TEST_F(CniPluginTest, DelWithoutNetnsUsesTheRecordedOne) {
  ASSERT_EQ(run(env("ADD"), config()).exit_code, 0);
  auto e = env("DEL");
  e.erase("CNI_NETNS");
  ASSERT_EQ(run(e, config()).exit_code, 0);
  EXPECT_EQ(dataplane_.uninstalls, std::vector<std::string>{netns_});
  EXPECT_TRUE(dataplane_.installed.empty());
}

TEST_F(CniPluginTest, DelNeverTouchesANamespaceThatReplacedTheRecordedOne) {
  ASSERT_EQ(run(env("ADD"), config()).exit_code, 0);
  // The path now names another namespace (a new inode), as /proc/PID/ns/net can after reuse.
  // The new file exists before the old one goes, so the filesystem cannot hand out the same inode.
  std::ofstream(netns_ + ".new") << "";
  std::filesystem::rename(netns_ + ".new", netns_);
  auto e = env("DEL");
  e.erase("CNI_NETNS");
  ASSERT_EQ(run(e, config()).exit_code, 0);
  EXPECT_TRUE(dataplane_.uninstalls.empty());
  EXPECT_FALSE(state().load("c1", "eth0")->has_value());
}

TEST_F(CniPluginTest, CheckVerifiesTheRules) {
  ASSERT_EQ(run(env("ADD"), config()).exit_code, 0);
  auto ok = run(env("CHECK"), config());
  EXPECT_EQ(ok.exit_code, 0) << ok.stdout_text;
  EXPECT_EQ(ok.stdout_text, "");
  // Someone flushed the rules.
  dataplane_.installed.clear();
  json e = errorOf(run(env("CHECK"), config()));
  EXPECT_EQ(e["code"], 102);
  EXPECT_EQ(e["msg"], "interception rules are missing or modified");
  EXPECT_EQ(e["details"], "chain REMORA_OUTPUT is missing");
}

TEST_F(CniPluginTest, CheckNeedsPrevResultAndSkipsUnmeshedPods) {
  EXPECT_EQ(errorOf(run(env("CHECK"), config("", "1.0.0", false)))["code"], 7);
  auto skipped = run(env("CHECK", "c1", std::nullopt, "K8S_POD_NAMESPACE=kube-system"),
                     config(R"("excludeNamespaces":["kube-system"])"));
  EXPECT_EQ(skipped.exit_code, 0) << skipped.stdout_text;
  EXPECT_TRUE(dataplane_.checks.empty());
}

TEST_F(CniPluginTest, GcRemovesOnlyStaleAttachments) {
  std::string other = makeNetns("pod2");
  ASSERT_EQ(run(env("ADD", "keep"), config()).exit_code, 0);
  ASSERT_EQ(run(env("ADD", "stale", other), config()).exit_code, 0);
  auto gc = run({{"CNI_COMMAND", "GC"}, {"CNI_PATH", "/opt/cni/bin"}},
                config(R"("cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}])",
                       "1.1.0", false));
  ASSERT_EQ(gc.exit_code, 0) << gc.stdout_text;
  EXPECT_EQ(gc.stdout_text, "");
  EXPECT_EQ(dataplane_.uninstalls, std::vector<std::string>{other});
  EXPECT_TRUE(state().load("keep", "eth0")->has_value());
  EXPECT_FALSE(state().load("stale", "eth0")->has_value());
  EXPECT_TRUE(dataplane_.installed.count(netns_));
}

TEST_F(CniPluginTest, GcDropsUnreadableRecords) {
  ASSERT_EQ(run(env("ADD", "keep"), config()).exit_code, 0);
  std::string junk = dir_ + "/state/podnet/junk:eth0.json";
  std::ofstream(junk) << "{not json";
  auto gc = run({{"CNI_COMMAND", "GC"}},
                config(R"("cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}])",
                       "1.1.0", false));
  EXPECT_EQ(gc.exit_code, 0) << gc.stdout_text;
  EXPECT_FALSE(fs::exists(junk));
  EXPECT_TRUE(state().load("keep", "eth0")->has_value());
}

TEST_F(CniPluginTest, StatusAndVersion) {
  auto status = run({{"CNI_COMMAND", "STATUS"}}, config("", "1.1.0", false));
  EXPECT_EQ(status.exit_code, 0) << status.stdout_text;
  EXPECT_EQ(status.stdout_text, "");
  dataplane_.status_error = CniError{ErrorCode::kStatusNotAvailable, "iptables is not installed"};
  EXPECT_EQ(errorOf(run({{"CNI_COMMAND", "STATUS"}}, config("", "1.1.0", false)))["code"], 50);
  EXPECT_EQ(errorOf(run({{"CNI_COMMAND", "STATUS"}}, config("", "1.0.0", false)))["code"], 1);

  auto version = run({{"CNI_COMMAND", "VERSION"}}, R"({"cniVersion":"0.4.0"})");
  ASSERT_EQ(version.exit_code, 0);
  json v = json::parse(version.stdout_text);
  EXPECT_EQ(v["cniVersion"], "0.4.0");
  EXPECT_NE(std::find(v["supportedVersions"].begin(), v["supportedVersions"].end(), "1.1.0"),
            v["supportedVersions"].end());
  EXPECT_EQ(run({{"CNI_COMMAND", "VERSION"}}, "").exit_code, 0);
}

// ---- hostile input (issue #15): every case answers with a CNI error JSON, never a crash ----

TEST_F(CniPluginTest, OwnNetnsIsRefusedForAddAndCheckAndLeftAloneByDel) {
  // On a node the plugin runs in the host's namespace: rules there would capture the node.
  for (const char* own : {"/proc/self/ns/net", "/proc/thread-self/ns/net"}) {
    json add = errorOf(run(env("ADD", "c1", std::string(own)), config()));
    EXPECT_EQ(add["code"], 4) << own;
    EXPECT_EQ(add["msg"], fmt::format("CNI_NETNS '{}' is remora-cni's own network namespace", own));
    json check = errorOf(run(env("CHECK", "c1", std::string(own)), config()));
    EXPECT_EQ(check["code"], 4) << own;
    auto del = run(env("DEL", "c1", std::string(own)), config());
    EXPECT_EQ(del.exit_code, 0) << del.stdout_text;
    EXPECT_EQ(del.stdout_text, "");
  }
  EXPECT_TRUE(dataplane_.installs.empty());
  EXPECT_TRUE(dataplane_.checks.empty());
  EXPECT_TRUE(dataplane_.uninstalls.empty());
  EXPECT_FALSE(state().load("c1", "eth0")->has_value());
}

std::string nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST_F(CniPluginTest, DeepNestingIsCode6NotACrash) {
  // 50,000 levels in prevResult used to overflow the stack (SIGSEGV, no output at all).
  auto deep = run(env("ADD"), config(R"("x":)" + nested(50000)));
  json e = errorOf(deep);
  EXPECT_EQ(e["code"], 6);
  EXPECT_NE(e["details"].get<std::string>().find("nested deeper than 64 levels"), std::string::npos)
      << e.dump();
  std::string prev = std::string(R"({"cniVersion":"1.0.0","name":"n","type":"remora-cni",)") +
                     R"("prevResult":{"ips":)" + nested(50000) + "}}";
  EXPECT_EQ(errorOf(run(env("ADD"), prev))["code"], 6);
  // 64 levels in all is fine (the root object is level 1).
  auto ok = run(env("ADD"), config(R"("x":)" + nested(63)));
  EXPECT_EQ(ok.exit_code, 0) << ok.stdout_text;
}

TEST_F(CniPluginTest, OversizedStdinIsCode6) {
  std::string big = config(R"("pad":")" + std::string(size_t{4} << 20, 'a') + "\"");
  json e = errorOf(run(env("ADD"), big));
  EXPECT_EQ(e["code"], 6);
  EXPECT_NE(e["details"].get<std::string>().find("more than the limit of 4194304 bytes"),
            std::string::npos)
      << e["details"];
  EXPECT_TRUE(dataplane_.installs.empty());
}

TEST_F(CniPluginTest, InvalidUtf8InCniArgsIsCode4) {
  json e = errorOf(run(env("ADD", "c1", std::nullopt, "K8S_POD_NAME=\xff\xfe"), config()));
  EXPECT_EQ(e["code"], 4);
  EXPECT_EQ(e["msg"], "CNI_ARGS is not valid UTF-8");
  json n = errorOf(run(env("ADD", "c1", netns_ + "\xc3"), config()));
  EXPECT_EQ(n["code"], 4);
  EXPECT_TRUE(dataplane_.installs.empty());
}

TEST_F(CniPluginTest, PrevResultMustFollowTheResultSchema) {
  auto codeFor = [&](const std::string& prev) {
    std::string c = std::string(R"({"cniVersion":"1.0.0","name":"podnet","type":"remora-cni",)") +
                    R"("stateDir":")" + dir_ + R"(/state","prevResult":)" + prev + "}";
    auto out = run(env("ADD"), c);
    if (out.exit_code == 0) return std::pair<int, std::string>{0, ""};
    json e = errorOf(out);
    return std::pair<int, std::string>{e["code"].get<int>(), e["msg"].get<std::string>()};
  };
  // Wrong JSON types: 6.
  EXPECT_EQ(codeFor(R"({"ips":"x"})"),
            (std::pair<int, std::string>{6, "prevResult.ips must be a list"}));
  EXPECT_EQ(codeFor(R"({"ips":["x"]})").first, 6);
  EXPECT_EQ(codeFor(R"({"ips":[{"address":7}]})").first, 6);
  EXPECT_EQ(codeFor(R"({"interfaces":{}})").first, 6);
  EXPECT_EQ(codeFor(R"({"interfaces":[{"name":1}]})").first, 6);
  EXPECT_EQ(codeFor(R"({"routes":[{"dst":"0.0.0.0/0","mtu":-1}]})").first, 6);
  EXPECT_EQ(codeFor(R"({"dns":{"nameservers":"10.0.0.10"}})").first, 6);
  // Values that are not addresses, or point nowhere: 7.
  EXPECT_EQ(codeFor(R"({"ips":[{"address":"10.0.0.300/24"}]})"),
            (std::pair<int, std::string>{
                7,
                "prevResult.ips[0].address '10.0.0.300/24' is not an address with a prefix "
                "length"}));
  EXPECT_EQ(codeFor(R"({"ips":[{"address":"10.0.0.2"}]})").first, 7);
  EXPECT_EQ(codeFor(R"({"ips":[{"address":"10.0.0.2/24","gateway":"nope"}]})").first, 7);
  EXPECT_EQ(codeFor(R"({"ips":[{}]})").first, 7);
  EXPECT_EQ(
      codeFor(R"({"interfaces":[{"name":"eth0"}],"ips":[{"address":"10.0.0.2/24","interface":1}]})")
          .first,
      7);
  EXPECT_EQ(codeFor(R"({"routes":[{"dst":"default"}]})").first, 7);
  EXPECT_EQ(codeFor(R"({"routes":[{"dst":"0.0.0.0/0","gw":"fe80::1%eth0"}]})").first, 7);
  EXPECT_TRUE(dataplane_.installs.empty());
  // Well-formed results of both families pass.
  EXPECT_EQ(codeFor(kPrevResult).first, 0);
  EXPECT_EQ(codeFor(R"({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mtu":1500}],)"
                    R"("ips":[{"address":"fd00::2/64","gateway":"fd00::1","interface":0}],)"
                    R"("routes":[{"dst":"::/0"},{"dst":"0.0.0.0/0","gw":"10.0.0.1"}],)"
                    R"("dns":{"nameservers":["10.0.0.10"],"search":["a.svc"]}})")
                .first,
            0);
  // DEL cleans up whatever prevResult says.
  std::string bad = std::string(R"({"cniVersion":"1.0.0","name":"podnet","type":"remora-cni",)") +
                    R"("stateDir":")" + dir_ + R"(/state","prevResult":{"ips":"x"}})";
  EXPECT_EQ(run(env("DEL"), bad).exit_code, 0);
}

}  // namespace
}  // namespace remora::cni
