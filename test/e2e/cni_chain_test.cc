// remora-cni in a real chain, the way the reference plugins test theirs: the reference bridge
// and host-local plugins run first (inside the test world's isolated node namespace, so the
// bridge they make never touches the machine's network), then remora-cni with their result as
// prevResult. Assertions are made inside the pod's own namespace: iptables-save, and a real TCP
// connection to a service VIP that only interception can answer.
// CniEbpfE2e runs the same chain with "mode": "ebpf": the programs attach to a cgroup v2
// directory the test creates (never the machine's root cgroup), which the test process joins
// first, so every process it starts (the plugins, probes, clients) is in it.
#include <bpf/bpf.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "e2e_util.h"
#include "netns_world.h"

namespace remora::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

constexpr const char* kSubnet = "10.245.7.0/24";
// Inside the pod network's own subnet and owned by nobody: without interception a connection
// to it fails locally (ARP for it gets no answer).
constexpr const char* kVip = "10.245.7.200:9999";

std::string pluginDir() {
  const char* env = std::getenv("REMORA_CNI_PLUGIN_DIR");
  if (env != nullptr) return env;
  for (const char* dir : {"/usr/lib/cni", "/opt/cni/bin"}) {
    if (fs::exists(fs::path(dir) / "bridge")) return dir;
  }
  return "/usr/lib/cni";
}

struct PluginRun {
  int exit_code = -1;
  std::string out;
  std::string err;
  json result() const { return json::parse(out, nullptr, false); }
};

class CniChainE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!runningAsRoot()) GTEST_SKIP() << "e2e tests need root (network namespaces, iptables)";
    plugins_ = pluginDir();
    for (const char* p : {"bridge", "host-local", "loopback"}) {
      if (!fs::exists(fs::path(plugins_) / p)) {
        GTEST_SKIP() << "reference CNI plugin '" << p << "' not found in " << plugins_
                     << " (install containernetworking-plugins)";
      }
    }
    world_ = std::make_unique<NetnsWorld>();
    char tmpl[] = "/tmp/remora-cni-e2e-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
    prefix_ = fmt::format("rcni{}", ::getpid() % 100000);
    network_ = prefix_;
  }

  void TearDown() override {
    for (const auto& ns : pods_) (void)runCommand({"ip", "netns", "delete", ns});
    world_.reset();  // the node namespace, with the bridge the plugin made in it
    if (!tmp_.empty()) fs::remove_all(tmp_);
  }

  // A pod namespace with only its loopback up, as runtimes leave it before the pod network's
  // chain runs (containerd and CRI-O through the reference loopback plugin, as here).
  Pod newPod(const std::string& name) {
    Pod pod{name, fmt::format("{}-{}", prefix_, name), "", ""};
    auto made = runCommand({"ip", "netns", "add", pod.netns});
    EXPECT_TRUE(made && made->exit_code == 0);
    pods_.push_back(pod.netns);
    json lo_list = {{"cniVersion", "1.0.0"}, {"name", "lo"}};
    auto lo = exec("ADD", lo_list, json{{"type", "loopback"}}, &pod, "lo-" + name, json());
    EXPECT_EQ(lo.exit_code, 0) << lo.out << lo.err;
    return pod;
  }

  static std::string netnsPath(const Pod& pod) { return "/var/run/netns/" + pod.netns; }

  json remoraEntry() const {
    return json{{"type", "remora-cni"},
                {"stateDir", tmp_ + "/state"},
                {"logFile", tmp_ + "/remora-cni.log"},
                {"logLevel", "debug"},
                {"excludeNamespaces", {"kube-system"}}};
  }

  json conflist(json remora) const {
    json bridge = {{"type", "bridge"},
                   {"bridge", prefix_ + "br"},
                   {"isGateway", true},
                   {"ipMasq", false},
                   {"ipam",
                    {{"type", "host-local"},
                     {"subnet", kSubnet},
                     {"dataDir", tmp_ + "/ipam"},
                     {"routes", json::array({json{{"dst", "0.0.0.0/0"}}})}}}};
    return json{{"cniVersion", "1.0.0"}, {"name", network_}, {"plugins", {bridge, remora}}};
  }

  // Runs one plugin as libcni would: inside the node namespace, CNI_* in the environment, the
  // network's cniVersion and name merged into the plugin's entry, plus prevResult if given.
  PluginRun exec(const std::string& command, const json& list, const json& plugin, const Pod* pod,
                 const std::string& container_id, const json& prev,
                 const std::string& cni_args = "") {
    json config = plugin;
    config["cniVersion"] = list["cniVersion"];
    config["name"] = list["name"];
    if (!prev.is_null()) config["prevResult"] = prev;
    std::string type = plugin["type"];
    std::string binary = type == "remora-cni" ? binaryPath("remora-cni") : plugins_ + "/" + type;
    std::vector<std::string> argv = {"nsenter",
                                     "--net=/var/run/netns/" + world_->nodeNetns(),
                                     "env",
                                     "CNI_COMMAND=" + command,
                                     "CNI_CONTAINERID=" + container_id,
                                     "CNI_NETNS=" + (pod ? netnsPath(*pod) : std::string()),
                                     "CNI_IFNAME=eth0",
                                     "CNI_PATH=" + plugins_,
                                     "CNI_ARGS=" + cni_args,
                                     binary};
    auto out = runCommand(argv, config.dump());
    EXPECT_TRUE(out.ok()) << (out ? "" : out.error().message);
    if (!out) return {};
    return PluginRun{out->exit_code, out->out, out->err};
  }

  // ADD through the whole chain; returns every plugin's run, last one last.
  std::vector<PluginRun> addChain(const json& list, const Pod& pod, const std::string& id,
                                  const std::string& cni_args = "") {
    std::vector<PluginRun> runs;
    json prev;
    for (const auto& plugin : list["plugins"]) {
      runs.push_back(exec("ADD", list, plugin, &pod, id, prev, cni_args));
      EXPECT_EQ(runs.back().exit_code, 0)
          << plugin["type"] << ": " << runs.back().out << runs.back().err;
      if (runs.back().exit_code != 0) break;
      prev = runs.back().result();
    }
    return runs;
  }

  // DEL in reverse order, with the chain's final result as prevResult.
  std::vector<PluginRun> delChain(const json& list, const Pod* pod, const std::string& id,
                                  const json& result, const std::string& cni_args = "") {
    std::vector<PluginRun> runs;
    for (auto it = list["plugins"].rbegin(); it != list["plugins"].rend(); ++it) {
      runs.push_back(exec("DEL", list, *it, pod, id, result, cni_args));
    }
    return runs;
  }

  std::string natRules(const Pod& pod, const std::string& save = "iptables-save") {
    auto out = world_->exec(pod, {save, "-t", "nat"});
    return out ? out->out : "";
  }

  static bool hasRemora(const std::string& rules) {
    return rules.find("REMORA_") != std::string::npos;
  }

  std::unique_ptr<NetnsWorld> world_;
  std::string plugins_;
  std::string tmp_;
  std::string prefix_;
  std::string network_;
  std::vector<std::string> pods_;
};

TEST_F(CniChainE2e, AddInstallsRulesAndPrintsPrevResultUnchanged) {
  Pod pod = newPod("app");
  json list = conflist(remoraEntry());
  auto runs = addChain(list, pod, "c-add");
  ASSERT_EQ(runs.size(), 2u);
  json bridge = runs[0].result();
  json remora = runs[1].result();
  ASSERT_FALSE(remora.is_discarded()) << runs[1].out;
  EXPECT_EQ(remora, bridge);
  EXPECT_EQ(runs[1].out, bridge.dump() + "\n");
  EXPECT_TRUE(runs[1].err.empty()) << runs[1].err;

  std::string rules = natRules(pod);
  for (const char* chain :
       {"REMORA_OUTPUT", "REMORA_REDIRECT", "REMORA_INBOUND", "REMORA_IN_REDIRECT"}) {
    EXPECT_NE(rules.find(chain), std::string::npos) << chain << " missing:\n" << rules;
  }
  EXPECT_NE(rules.find("-A OUTPUT -p tcp -j REMORA_OUTPUT"), std::string::npos) << rules;
  EXPECT_NE(rules.find("--to-ports 15001"), std::string::npos) << rules;
  // The pod has no IPv6 address, so it got no IPv6 rules.
  EXPECT_FALSE(hasRemora(natRules(pod, "ip6tables-save")));
}

TEST_F(CniChainE2e, ConnectionToAServiceVipIsCaptured) {
  Pod pod = newPod("client");
  auto runs = addChain(conflist(remoraEntry()), pod, "c-vip");
  ASSERT_EQ(runs.size(), 2u);
  ASSERT_EQ(runs[1].exit_code, 0);
  // The "proxy": uid 1337, so its own traffic is never captured.
  auto proxy = world_->serveProbe(pod, "0.0.0.0:15001", "captured-by-remora", false, 1337);
  auto out = world_->exec(pod, {probePath(), "connect", kVip, "--timeout-ms", "3000"});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->exit_code, 0) << out->out << out->err;
  EXPECT_NE(out->out.find("captured-by-remora"), std::string::npos) << out->out;
  EXPECT_NE(out->out.find(std::string("orig=") + kVip), std::string::npos) << out->out;
}

TEST_F(CniChainE2e, CheckPassesThenFailsClearlyWhenRulesAreTampered) {
  Pod pod = newPod("checked");
  json list = conflist(remoraEntry());
  auto runs = addChain(list, pod, "c-check");
  ASSERT_EQ(runs.size(), 2u);
  json result = runs[1].result();
  for (const auto& plugin : list["plugins"]) {
    auto check = exec("CHECK", list, plugin, &pod, "c-check", result);
    EXPECT_EQ(check.exit_code, 0) << plugin["type"] << ": " << check.out;
    EXPECT_TRUE(check.out.empty());
  }
  auto flushed = world_->exec(pod, {"iptables", "-t", "nat", "-F", "REMORA_REDIRECT"});
  ASSERT_TRUE(flushed && flushed->exit_code == 0);
  auto check = exec("CHECK", list, list["plugins"][1], &pod, "c-check", result);
  EXPECT_NE(check.exit_code, 0);
  json err = check.result();
  ASSERT_FALSE(err.is_discarded()) << check.out;
  EXPECT_EQ(err["code"], 102);
  EXPECT_EQ(err["msg"], "interception rules are missing or modified");
  EXPECT_NE(err["details"].get<std::string>().find("REMORA_REDIRECT"), std::string::npos)
      << err.dump();
}

TEST_F(CniChainE2e, DelRemovesOnlyRemorasRulesAndIsIdempotent) {
  Pod pod = newPod("deleted");
  json list = conflist(remoraEntry());
  auto runs = addChain(list, pod, "c-del");
  ASSERT_EQ(runs.size(), 2u);
  json result = runs[1].result();
  // Someone else's nat rule in the same namespace must survive.
  auto foreign = world_->exec(pod, {"iptables", "-t", "nat", "-A", "OUTPUT", "-d", "192.0.2.10/32",
                                    "-p", "tcp", "-j", "RETURN"});
  ASSERT_TRUE(foreign && foreign->exit_code == 0);

  auto del = exec("DEL", list, list["plugins"][1], &pod, "c-del", result);
  EXPECT_EQ(del.exit_code, 0) << del.out;
  EXPECT_TRUE(del.out.empty()) << del.out;
  std::string rules = natRules(pod);
  EXPECT_FALSE(hasRemora(rules)) << rules;
  EXPECT_NE(rules.find("192.0.2.10/32"), std::string::npos) << rules;

  // Again, and without prevResult: still success.
  EXPECT_EQ(exec("DEL", list, list["plugins"][1], &pod, "c-del", json()).exit_code, 0);
  // The rest of the chain, then a DEL after the namespace is gone.
  for (auto& r : delChain(list, &pod, "c-del", result)) EXPECT_EQ(r.exit_code, 0) << r.out;
  ASSERT_TRUE(runCommand({"ip", "netns", "delete", pod.netns}).ok());
  auto gone = exec("DEL", list, list["plugins"][1], &pod, "c-del", result);
  EXPECT_EQ(gone.exit_code, 0) << gone.out;
  EXPECT_TRUE(fs::is_empty(tmp_ + "/state/" + network_));
}

TEST_F(CniChainE2e, ExcludedNamespaceAndOptOutGetNothing) {
  Pod system = newPod("system");
  auto runs = addChain(conflist(remoraEntry()), system, "c-sys",
                       "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns");
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[1].result(), runs[0].result());
  EXPECT_FALSE(hasRemora(natRules(system)));

  Pod opted = newPod("optout");
  auto out = addChain(conflist(remoraEntry()), opted, "c-opt",
                      "IgnoreUnknown=1;K8S_POD_NAMESPACE=istio-demo;REMORA_INJECT=false");
  ASSERT_EQ(out.size(), 2u);
  EXPECT_FALSE(hasRemora(natRules(opted)));
}

TEST_F(CniChainE2e, ErrorsAreCniErrorJson) {
  Pod pod = newPod("errors");
  json list = conflist(remoraEntry());
  json prev = {{"cniVersion", "1.0.0"}, {"interfaces", json::array()}, {"ips", json::array()}};

  // A namespace that does not exist.
  Pod ghost{"ghost", prefix_ + "-no-such-ns", "", ""};
  auto missing = exec("ADD", list, list["plugins"][1], &ghost, "c-err", prev);
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_EQ(missing.result()["code"], 100) << missing.out;

  // A bad option value.
  json bad_entry = remoraEntry();
  bad_entry["proxy-uid"] = "nobody";
  auto bad = exec("ADD", list, bad_entry, &pod, "c-err", prev);
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_EQ(bad.result()["code"], 7) << bad.out;

  // An unknown version.
  json old = list;
  old["cniVersion"] = "0.1.0";
  auto version = exec("ADD", old, list["plugins"][1], &pod, "c-err", prev);
  EXPECT_EQ(version.result()["code"], 1) << version.out;

  // Malformed stdin.
  auto junk = runCommand({"env", "CNI_COMMAND=ADD", "CNI_CONTAINERID=x", "CNI_IFNAME=eth0",
                          "CNI_NETNS=" + netnsPath(pod), binaryPath("remora-cni")},
                         "{\"cniVersion\": ");
  ASSERT_TRUE(junk.ok());
  EXPECT_NE(junk->exit_code, 0);
  EXPECT_EQ(json::parse(junk->out)["code"], 6) << junk->out;
  EXPECT_FALSE(hasRemora(natRules(pod)));
}

TEST_F(CniChainE2e, GcRemovesStaleAttachmentsOnly) {
  Pod keep = newPod("keep");
  Pod stale = newPod("stale");
  json list = conflist(remoraEntry());
  ASSERT_EQ(addChain(list, keep, "c-keep").size(), 2u);
  ASSERT_EQ(addChain(list, stale, "c-stale").size(), 2u);
  ASSERT_TRUE(hasRemora(natRules(stale)));
  // GC and STATUS arrived with spec 1.1.0 (Debian's reference plugins stop at 1.0.0, so the
  // chain above was added as 1.0.0).
  list["cniVersion"] = "1.1.0";

  json gc_entry = remoraEntry();
  gc_entry["cni.dev/valid-attachments"] =
      json::array({json{{"containerID", "c-keep"}, {"ifname", "eth0"}}});
  auto gc = exec("GC", list, gc_entry, nullptr, "", json());
  EXPECT_EQ(gc.exit_code, 0) << gc.out;
  EXPECT_TRUE(hasRemora(natRules(keep)));
  EXPECT_FALSE(hasRemora(natRules(stale)));

  auto status = exec("STATUS", list, remoraEntry(), nullptr, "", json());
  EXPECT_EQ(status.exit_code, 0) << status.out;
}

TEST_F(CniChainE2e, OwnNamespaceIsRefusedAndGetsNoRules) {
  // remora-cni used to accept CNI_NETNS naming the namespace it runs in (on a node, the host's)
  // and install its rules there. It runs here in the world's node namespace, so even that bug
  // would only touch a namespace of this test's own.
  Pod pod = newPod("own");
  json list = conflist(remoraEntry());
  auto runs = addChain(list, pod, "c-own");
  ASSERT_EQ(runs.size(), 2u);
  json config = remoraEntry();
  config["cniVersion"] = "1.0.0";
  config["name"] = network_;
  config["prevResult"] = runs.front().result();
  Pod node{"node", world_->nodeNetns(), "", ""};
  for (const char* own : {"/proc/self/ns/net", "/proc/thread-self/ns/net"}) {
    for (const char* command : {"ADD", "CHECK", "DEL"}) {
      auto out =
          runCommand({"nsenter", "--net=/var/run/netns/" + world_->nodeNetns(), "env",
                      std::string("CNI_COMMAND=") + command, "CNI_CONTAINERID=c-own",
                      std::string("CNI_NETNS=") + own, "CNI_IFNAME=eth0", binaryPath("remora-cni")},
                     config.dump());
      ASSERT_TRUE(out.ok());
      if (std::string(command) == "DEL") {
        EXPECT_EQ(out->exit_code, 0) << own << " " << out->out;
        EXPECT_EQ(out->out, "");
        continue;
      }
      EXPECT_EQ(out->exit_code, 1) << command << " " << own << ": " << out->out;
      json error = json::parse(out->out, nullptr, false);
      EXPECT_EQ(error["code"], 4) << out->out;
      EXPECT_EQ(error["msg"],
                fmt::format("CNI_NETNS '{}' is remora-cni's own network namespace", own));
    }
  }
  EXPECT_FALSE(hasRemora(natRules(node)));
  EXPECT_FALSE(hasRemora(natRules(node, "ip6tables-save")));
  // The pod's own namespace is untouched by all of that.
  EXPECT_TRUE(hasRemora(natRules(pod)));
}

TEST_F(CniChainE2e, PathologicalStdinGetsErrorJsonNotACrash) {
  Pod pod = newPod("deep");
  auto run = [&](const std::string& input) {
    auto out = runCommand({"env", "CNI_COMMAND=ADD", "CNI_CONTAINERID=x", "CNI_IFNAME=eth0",
                           "CNI_NETNS=" + netnsPath(pod), binaryPath("remora-cni")},
                          input);
    EXPECT_TRUE(out.ok());
    return out ? *out : CommandOutput{};
  };
  // prevResult nested 50,000 deep used to die with SIGSEGV and print nothing.
  std::string deep =
      R"({"cniVersion":"1.0.0","name":"n","type":"remora-cni","prevResult":{"ips":)" +
      std::string(50000, '[') + std::string(50000, ']') + "}}";
  auto nested = run(deep);
  EXPECT_EQ(nested.exit_code, 1);
  EXPECT_EQ(json::parse(nested.out, nullptr, false)["code"], 6) << nested.out << nested.err;
  // Invalid UTF-8 in CNI_ARGS was an internal error (199).
  auto utf8 = runCommand(
      {"env", "CNI_COMMAND=ADD", "CNI_CONTAINERID=x", "CNI_IFNAME=eth0",
       "CNI_NETNS=" + netnsPath(pod), "CNI_ARGS=K8S_POD_NAME=\xff", binaryPath("remora-cni")},
      json{{"cniVersion", "1.0.0"},
           {"name", "n"},
           {"type", "remora-cni"},
           {"stateDir", tmp_ + "/state"},
           {"prevResult", json::object()}}
          .dump());
  ASSERT_TRUE(utf8.ok());
  EXPECT_EQ(json::parse(utf8->out, nullptr, false)["code"], 4) << utf8->out;
  // More than 4 MiB: read no further, answer with code 6.
  auto big = run(std::string((size_t{8} << 20), ' '));
  EXPECT_EQ(json::parse(big.out, nullptr, false)["code"], 6) << big.out;
  EXPECT_FALSE(hasRemora(natRules(pod)));
}

// ---- "mode": "ebpf" ---------------------------------------------------------------------------

class CniEbpfE2e : public CniChainE2e {
 protected:
  void SetUp() override {
    CniChainE2e::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    if (::access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
      GTEST_SKIP() << "kernel has no BTF (/sys/kernel/btf/vmlinux): eBPF mode cannot load";
    }
    for (const char* root : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
      struct statfs fs {};
      if (::statfs(root, &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC) root_ = root;
      if (!root_.empty()) break;
    }
    if (root_.empty()) GTEST_SKIP() << "no cgroup v2 hierarchy to attach to";
    // Where this process was ("0::/x/y" in /proc/self/cgroup), to go back there afterwards.
    std::ifstream self("/proc/self/cgroup");
    for (std::string line; std::getline(self, line);) {
      if (line.rfind("0::", 0) == 0) home_ = root_ + line.substr(3);
    }
    const std::string id = std::to_string(::getpid());
    cgroup_ = root_ + "/remora-cni-ebpf-test-" + id;
    pin_dir_ = "/sys/fs/bpf/remora-cni-test-" + id;
    ASSERT_EQ(::mkdir(cgroup_.c_str(), 0755), 0) << cgroup_ << ": " << std::strerror(errno);
    ASSERT_TRUE(joinCgroup(cgroup_));
  }

  void TearDown() override {
    servers_.clear();
    CniChainE2e::TearDown();
    std::error_code ec;
    fs::remove_all(pin_dir_, ec);  // whatever a failed test left: unpinning detaches
    if (!home_.empty()) joinCgroup(home_);
    if (!cgroup_.empty()) ::rmdir(cgroup_.c_str());
  }

  static bool joinCgroup(const std::string& dir) {
    std::ofstream procs(dir + "/cgroup.procs");
    procs << ::getpid() << std::flush;
    return static_cast<bool>(procs);
  }

  json ebpfEntry() const {
    json entry = remoraEntry();
    entry["mode"] = "ebpf";
    entry["cgroup"] = cgroup_;
    entry["bpf-pin-dir"] = pin_dir_;
    return entry;
  }

  // remora-init dump --mode ebpf --json in the pod's netns (nsenter keeps /sys/fs/bpf visible).
  json dump(const Pod& pod) {
    auto out = runCommand({"nsenter", "--net=" + netnsPath(pod), binaryPath("remora-init"), "dump",
                           "--mode", "ebpf", "--json", "--bpf-pin-dir", pin_dir_});
    EXPECT_TRUE(out && out->exit_code == 0) << (out ? out->err : out.error().message);
    return out ? json::parse(out->out, nullptr, false) : json();
  }

  // What the server at the other end said, or "FAILED".
  std::string connect(const Pod& pod, const std::string& target) {
    auto out = world_->exec(pod, {probePath(), "connect", target, "--timeout-ms", "1500"});
    return out && out->exit_code == 0 ? out->out : "FAILED";
  }

  size_t skLookupPins() const {
    size_t n = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(pin_dir_, ec)) {
      n += e.path().filename().string().rfind("link_sk_lookup_", 0) == 0;
    }
    return n;
  }

  // Programs attached to the test's cgroup, of the four attach types eBPF mode uses.
  uint32_t cgroupPrograms() const {
    int cg = ::open(cgroup_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    EXPECT_GE(cg, 0);
    uint32_t total = 0;
    for (auto type : {BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT, BPF_CGROUP_GETSOCKOPT,
                      BPF_CGROUP_SOCK_OPS}) {
      __u32 count = 0;
      EXPECT_EQ(bpf_prog_query(cg, type, 0, nullptr, nullptr, &count), 0);
      total += count;
    }
    ::close(cg);
    return total;
  }

  // ADD through the whole chain: remora-cni must print the bridge's result back. That result,
  // or null when a plugin failed.
  json addPod(const json& list, const Pod& pod, const std::string& id) {
    auto runs = addChain(list, pod, id);
    if (runs.size() != 2 || runs[1].exit_code != 0) return json();
    EXPECT_EQ(runs[1].result(), runs[0].result());
    return runs[0].result();
  }

  static std::string podIp(const json& result) {
    std::string address = result["ips"][0]["address"];
    return address.substr(0, address.find('/'));
  }

  std::string root_, home_, cgroup_, pin_dir_;
  std::vector<std::unique_ptr<Process>> servers_;
};

TEST_F(CniEbpfE2e, AddSteersBothWaysCheckVerifiesDelRemovesExactlyThatPod) {
  Pod pod = newPod("app");
  json list = conflist(ebpfEntry());
  const json result = addPod(list, pod, "e-app");
  ASSERT_FALSE(result.is_null());
  const std::string ip = podIp(result);
  // ADD again: idempotent.
  auto again = exec("ADD", list, list["plugins"][1], &pod, "e-app", result);
  ASSERT_EQ(again.exit_code, 0) << again.out;
  EXPECT_EQ(cgroupPrograms(), 4u);
  json j = dump(pod);
  ASSERT_EQ(j["netns"].size(), 1u) << j.dump();
  EXPECT_TRUE(j["netns"][0]["current"].get<bool>());
  EXPECT_EQ(j["programs"].size(), 5u) << j.dump();  // 4 on the cgroup, sk_lookup on the pod
  EXPECT_EQ(skLookupPins(), 1u);

  // The "proxy" (uid 1337) listens after ADD, as in a pod: its 15006 listener joins the sockhash.
  servers_.push_back(world_->serveProbe(pod, "0.0.0.0:15001", "proxy", false, 1337));
  servers_.push_back(world_->serveProbe(pod, "0.0.0.0:15006", "inbound", false, 1337));
  EXPECT_NE(connect(pod, kVip).find(std::string("proxy orig=") + kVip + " local=127.0.0.1:15001"),
            std::string::npos);
  // Inbound from the node (the bridge's gateway address) to the pod's port 8080, where nothing
  // listens: sk_lookup hands it to the proxy's listener with no NAT.
  Pod node{"node", world_->nodeNetns(), "", ""};
  std::string inbound = connect(node, ip + ":8080");
  EXPECT_NE(inbound.find("inbound orig=none local=" + ip + ":8080"), std::string::npos) << inbound;
  EXPECT_FALSE(hasRemora(natRules(pod)));
  j = dump(pod);
  EXPECT_GE(j["counters"]["redirected"].get<uint64_t>(), 1u) << j.dump();
  EXPECT_GE(j["counters"]["inbound_steered"].get<uint64_t>(), 1u) << j.dump();

  for (const auto& plugin : list["plugins"]) {
    auto check = exec("CHECK", list, plugin, &pod, "e-app", result);
    EXPECT_EQ(check.exit_code, 0) << plugin["type"] << ": " << check.out;
  }
  // Someone unpins the pod's sk_lookup link: CHECK says so; ADD puts it back.
  const uint64_t cookie = j["netns"][0]["cookie"];
  const std::string link = pin_dir_ + "/link_sk_lookup_" + std::to_string(cookie);
  ASSERT_TRUE(fs::remove(link)) << link;
  auto check = exec("CHECK", list, list["plugins"][1], &pod, "e-app", result);
  EXPECT_EQ(check.result()["code"], 102) << check.out;
  EXPECT_NE(check.out.find("link_sk_lookup_"), std::string::npos) << check.out;
  ASSERT_EQ(exec("ADD", list, list["plugins"][1], &pod, "e-app", result).exit_code, 0);
  EXPECT_TRUE(fs::exists(link));

  // A second pod, then DEL of the first: only the first's entry and link go.
  Pod other = newPod("other");
  ASSERT_FALSE(addPod(list, other, "e-other").is_null());
  ASSERT_EQ(dump(pod)["netns"].size(), 2u);
  auto del = exec("DEL", list, list["plugins"][1], &pod, "e-app", result);
  EXPECT_EQ(del.exit_code, 0) << del.out;
  EXPECT_TRUE(del.out.empty()) << del.out;
  j = dump(other);
  ASSERT_EQ(j["netns"].size(), 1u) << j.dump();
  EXPECT_TRUE(j["netns"][0]["current"].get<bool>()) << j.dump();
  EXPECT_FALSE(fs::exists(link));
  EXPECT_EQ(skLookupPins(), 1u);
  for (const auto& a : j["inbound_addrs"]) EXPECT_NE(a["address"], ip) << j.dump();
  EXPECT_EQ(connect(pod, kVip), "FAILED");
  EXPECT_EQ(connect(node, ip + ":8080"), "FAILED");
  // A repeated DEL, and a DEL of a pod remora-cni never saw, succeed.
  EXPECT_EQ(exec("DEL", list, list["plugins"][1], &pod, "e-app", result).exit_code, 0);
  EXPECT_EQ(exec("DEL", list, list["plugins"][1], &pod, "e-never", json()).exit_code, 0);
  EXPECT_EQ(cgroupPrograms(), 4u);
  // The last pod's DEL detaches the node's programs and removes every pin.
  EXPECT_EQ(exec("DEL", list, list["plugins"][1], &other, "e-other", json()).exit_code, 0);
  EXPECT_FALSE(fs::exists(pin_dir_));
  // The kernel releases an unpinned link's last reference from a deferred work item.
  for (int i = 0; i < 100 && cgroupPrograms() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  EXPECT_EQ(cgroupPrograms(), 0u);
  EXPECT_TRUE(fs::is_empty(tmp_ + "/state/" + network_));
}

// The runtime removed the netns before DEL (a crashed runtime, a node reboot): DEL must still
// succeed and unregister exactly that pod, by the netns cookie recorded at ADD, so that the last
// pod's DEL can detach the node's programs.
TEST_F(CniEbpfE2e, DelAfterTheNetnsIsGoneUnregistersThatPodByCookie) {
  json list = conflist(ebpfEntry());
  Pod gone = newPod("gone");
  const json result = addPod(list, gone, "e-gone");
  ASSERT_FALSE(result.is_null());
  const std::string ip = podIp(result);
  Pod other = newPod("stays");
  ASSERT_FALSE(addPod(list, other, "e-stays").is_null());
  ASSERT_EQ(dump(other)["netns"].size(), 2u);
  ASSERT_EQ(skLookupPins(), 2u);
  ASSERT_EQ(runCommand({"ip", "netns", "delete", gone.netns})->exit_code, 0);
  ASSERT_FALSE(fs::exists(netnsPath(gone)));
  auto del = exec("DEL", list, list["plugins"][1], &gone, "e-gone", result);
  EXPECT_EQ(del.exit_code, 0) << del.out;
  json j = dump(other);
  ASSERT_EQ(j["netns"].size(), 1u) << j.dump();
  EXPECT_TRUE(j["netns"][0]["current"].get<bool>()) << j.dump();
  EXPECT_EQ(skLookupPins(), 1u);
  for (const auto& a : j["inbound_addrs"]) EXPECT_NE(a["address"], ip) << j.dump();
  // The last pod's netns goes too, and its DEL comes without CNI_NETNS: the programs detach.
  ASSERT_EQ(runCommand({"ip", "netns", "delete", other.netns})->exit_code, 0);
  EXPECT_EQ(exec("DEL", list, list["plugins"][1], nullptr, "e-stays", json()).exit_code, 0);
  EXPECT_FALSE(fs::exists(pin_dir_));
  for (int i = 0; i < 100 && cgroupPrograms() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  EXPECT_EQ(cgroupPrograms(), 0u);
  EXPECT_TRUE(fs::is_empty(tmp_ + "/state/" + network_));
}

TEST_F(CniEbpfE2e, ACgroupThatIsNotCgroupV2IsNamedAndNothingIsLeft) {
  Pod pod = newPod("badcg");
  json entry = ebpfEntry();
  entry["cgroup"] = "/proc";
  json list = conflist(entry);
  json prev = exec("ADD", list, list["plugins"][0], &pod, "e-bad", json()).result();
  auto add = exec("ADD", list, entry, &pod, "e-bad", prev);
  EXPECT_EQ(add.exit_code, 1);
  EXPECT_EQ(add.result()["code"], 101) << add.out;
  EXPECT_NE(add.out.find("/proc is not a cgroup v2 directory"), std::string::npos) << add.out;
  EXPECT_FALSE(fs::exists(pin_dir_));
  EXPECT_TRUE(fs::is_empty(tmp_ + "/state/" + network_));
  // STATUS (spec 1.1.0) says the same before any ADD, and passes with the test's own cgroup.
  json v11 = list;
  v11["cniVersion"] = "1.1.0";
  auto status = exec("STATUS", v11, entry, nullptr, "", json());
  EXPECT_EQ(status.result()["code"], 50) << status.out;
  EXPECT_NE(status.out.find("/proc is not a cgroup v2 directory"), std::string::npos) << status.out;
  EXPECT_EQ(exec("STATUS", v11, ebpfEntry(), nullptr, "", json()).exit_code, 0);
  // A key eBPF mode cannot apply is refused before anything is touched, and named.
  entry = ebpfEntry();
  entry["exclude-interfaces"] = "eth1";
  add = exec("ADD", list, entry, &pod, "e-bad", prev);
  EXPECT_EQ(add.result()["code"], 7) << add.out;
  EXPECT_NE(add.out.find("--exclude-interfaces"), std::string::npos) << add.out;
  EXPECT_FALSE(fs::exists(pin_dir_));
  EXPECT_EQ(cgroupPrograms(), 0u);
}

// remora-cni install-node --mode ebpf: the node's programs attached and pinned once, the node
// hold registered, the entry chained with "mode": "ebpf"; idempotent; a pod's ADD and DEL leave
// the programs attached; uninstall-node --mode ebpf detaches and unpins. The relay's pins in
// <pin dir>/relay (remora-init relay install) survive eBPF mode's uninstall, and the relay's
// uninstall leaves eBPF mode's pins.
TEST_F(CniEbpfE2e, InstallNodeAttachesOnceAndUninstallNodeDetaches) {
  const std::string scratch = makeScratchDir("remora-cni-node");
  ASSERT_FALSE(scratch.empty());
  const std::string bin_dir = scratch + "/bin", conf_dir = scratch + "/net.d";
  fs::create_directories(bin_dir);
  fs::create_directories(conf_dir);
  json primary = conflist(remoraEntry());
  primary["plugins"].erase(1);  // the node's own chain, without remora-cni
  std::ofstream(conf_dir + "/10-bridge.conflist") << primary.dump(2);
  const std::string relay_dir = pin_dir_ + "/relay";
  auto node = [&](const std::string& verb) {
    auto out =
        runCommand({binaryPath("remora-cni"), verb, "--bin-dir", bin_dir, "--conf-dir", conf_dir,
                    "--mode", "ebpf", "--cgroup", cgroup_, "--bpf-pin-dir", pin_dir_},
                   {}, std::chrono::milliseconds(20000));
    EXPECT_TRUE(out.ok());
    return out ? *out : CommandOutput{};
  };
  auto relay = [&](const std::string& verb) {
    auto out = runCommand({binaryPath("remora-init"), "relay", verb, "--pin-dir", relay_dir}, {},
                          std::chrono::milliseconds(20000));
    EXPECT_TRUE(out && out->exit_code == 0) << (out ? out->out + out->err : "");
  };
  // Detaching follows the last link's unpin once its references drop: poll for it.
  auto detached = [&] {
    for (int i = 0; i < 100 && cgroupPrograms() != 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
    }
    return cgroupPrograms();
  };
  auto installed = node("install-node");
  ASSERT_EQ(installed.exit_code, 0) << installed.out << installed.err;
  EXPECT_EQ(cgroupPrograms(), 4u);
  EXPECT_TRUE(fs::exists(pin_dir_ + "/map_netns"));
  Pod pod = newPod("app");
  json j = dump(pod);
  EXPECT_TRUE(j["node_hold"].get<bool>()) << j.dump();
  EXPECT_EQ(j["netns"].size(), 0u) << j.dump();
  // The chained entry says eBPF mode, with the node's cgroup and pin dir.
  json written = json::parse(std::ifstream(conf_dir + "/10-bridge.conflist"), nullptr, false);
  ASSERT_EQ(written["plugins"].size(), 2u) << written.dump();
  EXPECT_EQ(written["plugins"][1]["mode"], "ebpf");
  EXPECT_EQ(written["plugins"][1]["cgroup"], cgroup_);
  EXPECT_EQ(written["plugins"][1]["bpf-pin-dir"], pin_dir_);
  // Idempotent: nothing attached twice.
  auto again = node("install-node");
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_NE((again.out + again.err).find("node hold is registered already"), std::string::npos)
      << again.out << again.err;
  EXPECT_EQ(cgroupPrograms(), 4u);

  // A pod's ADD and DEL through that entry: the last DEL leaves the programs attached.
  json list = conflist(written["plugins"][1]);
  ASSERT_FALSE(addPod(list, pod, "n-app").is_null());
  EXPECT_EQ(dump(pod)["netns"].size(), 1u);
  auto del = exec("DEL", list, list["plugins"][1], &pod, "n-app", json());
  ASSERT_EQ(del.exit_code, 0) << del.out;
  EXPECT_EQ(cgroupPrograms(), 4u);
  EXPECT_TRUE(fs::exists(pin_dir_ + "/map_netns"));

  // The relay pins inside the eBPF pin dir: eBPF mode's uninstall keeps them (and the dir).
  relay("install");
  ASSERT_TRUE(fs::exists(relay_dir + "/socks"));
  auto removed = node("uninstall-node");
  ASSERT_EQ(removed.exit_code, 0) << removed.out << removed.err;
  EXPECT_EQ(detached(), 0u);
  EXPECT_FALSE(fs::exists(pin_dir_ + "/map_netns"));
  EXPECT_TRUE(fs::exists(relay_dir + "/socks")) << removed.out << removed.err;
  written = json::parse(std::ifstream(conf_dir + "/10-bridge.conflist"), nullptr, false);
  EXPECT_EQ(written["plugins"].size(), 1u) << written.dump();
  // Reversible and repeatable: uninstall again succeeds.
  EXPECT_EQ(node("uninstall-node").exit_code, 0);

  // And the other way round: eBPF mode installed beside the relay, the relay's uninstall keeps
  // eBPF mode's pins.
  ASSERT_EQ(node("install-node").exit_code, 0);
  relay("uninstall");
  EXPECT_FALSE(fs::exists(relay_dir));
  EXPECT_TRUE(fs::exists(pin_dir_ + "/map_netns"));
  EXPECT_EQ(cgroupPrograms(), 4u);
  ASSERT_EQ(node("uninstall-node").exit_code, 0);
  EXPECT_FALSE(fs::exists(pin_dir_));
  EXPECT_EQ(detached(), 0u);
  fs::remove_all(scratch);
}

}  // namespace
}  // namespace remora::test
