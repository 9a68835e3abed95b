// Conflist editing and the node installer, on temp directories: choosing the primary config
// the way the kubelet's runtime does, wrapping a .conf, idempotent upsert, byte-exact uninstall,
// and --watch re-chaining after the primary CNI rewrites its file.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "node/conflist.h"
#include "node/installer.h"

namespace remora::cni {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

// podman 4's CNI backend writes its conflists like this: three-space indent, no final newline.
constexpr const char* kPodmanConflist = R"({
   "cniVersion": "0.4.0",
   "name": "rcx",
   "plugins": [
      {
         "type": "bridge",
         "bridge": "cni-podman1",
         "isGateway": false,
         "ipam": {
            "type": "host-local",
            "ranges": [
               [
                  {
                     "subnet": "10.89.77.0/24"
                  }
               ]
            ]
         }
      },
      {
         "type": "portmap",
         "capabilities": {
            "portMappings": true
         }
      }
   ]
})";

constexpr const char* kFlannelConf =
    "{\n\t\"cniVersion\": \"0.3.1\",\n\t\"name\": \"cbr0\",\n\t\"type\": \"flannel\",\n"
    "\t\"delegate\": {\"hairpinMode\": true}\n}\n";

std::string readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeAll(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

TEST(Conflist, PrimaryIsTheFirstConfigInLexicalOrder) {
  auto order =
      networkConfigOrder({"99-loopback.conf", "10-calico.conflist", "README", ".10-hidden.conflist",
                          "05-x.json", "remora-cni.d", "10-calico.conflist.bak", "00-a.conflist"});
  EXPECT_EQ(order, (std::vector<std::string>{"00-a.conflist", "05-x.json", "10-calico.conflist",
                                             "99-loopback.conf"}));
  EXPECT_FALSE(isNetworkConfigName(".x.conflist.remora-tmp.1"));
  EXPECT_EQ(conflistNameFor("10-flannel.conf"), "10-flannel.conflist");
  EXPECT_EQ(conflistNameFor("10-x.json"), "10-x.conflist");
  EXPECT_EQ(conflistNameFor("10-x.conflist"), "10-x.conflist");
}

TEST(Conflist, SingleConfIsWrapped) {
  auto parsed = parseNetworkConfig("10-flannel.conf", kFlannelConf);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_TRUE(parsed->from_single_conf);
  EXPECT_EQ(parsed->doc["cniVersion"], "0.3.1");
  EXPECT_EQ(parsed->doc["name"], "cbr0");
  ASSERT_EQ(parsed->doc["plugins"].size(), 1u);
  EXPECT_EQ(parsed->doc["plugins"][0]["type"], "flannel");
  EXPECT_FALSE(parsed->doc["plugins"][0].contains("cniVersion"));
  EXPECT_FALSE(parseNetworkConfig("x.conf", R"({"name":"n"})").ok());
  EXPECT_FALSE(parseNetworkConfig("x.conflist", R"({"name":"n"})").ok());
  EXPECT_FALSE(parseNetworkConfig("x.conflist", "{").ok());
}

TEST(Conflist, UpsertAppendsReplacesAndNeverDuplicates) {
  json doc = parseNetworkConfig("a.conflist", kPodmanConflist)->doc;
  json entry = {{"type", "remora-cni"}, {"proxy-uid", 1337}};
  EXPECT_FALSE(hasRemoraEntry(doc));
  EXPECT_TRUE(upsertRemoraEntry(doc, entry));
  EXPECT_EQ(doc["plugins"].size(), 3u);
  EXPECT_EQ(doc["plugins"][2], entry);
  EXPECT_FALSE(upsertRemoraEntry(doc, entry));  // idempotent

  // An old entry is replaced where it stands; duplicates go.
  json newer = {{"type", "remora-cni"}, {"proxy-uid", 2102}};
  doc["plugins"].insert(doc["plugins"].begin(), entry);
  EXPECT_TRUE(upsertRemoraEntry(doc, newer));
  ASSERT_EQ(doc["plugins"].size(), 3u);
  EXPECT_EQ(doc["plugins"][0], newer);
  EXPECT_EQ(doc["plugins"][1]["type"], "bridge");

  EXPECT_EQ(removeRemoraEntries(doc), 1u);
  EXPECT_EQ(doc, parseNetworkConfig("a.conflist", kPodmanConflist)->doc);
}

TEST(Conflist, RenderKeepsTheFilesStyle) {
  json doc = parseNetworkConfig("a.conflist", kPodmanConflist)->doc;
  EXPECT_EQ(renderLike(doc, kPodmanConflist), kPodmanConflist);
  json tabs = json::parse(R"({"a":[1]})");
  EXPECT_EQ(renderLike(tabs, "{\n\t\"x\": 1\n}\n"), "{\n\t\"a\": [\n\t\t1\n\t]\n}\n");
  EXPECT_EQ(renderLike(tabs, R"({"x":1})"), R"({"a":[1]})");
  EXPECT_EQ(renderLike(tabs, "{\n  \"x\": 1\n}\n"), "{\n  \"a\": [\n    1\n  ]\n}\n");
}

class NodeInstallerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/remora-cni-node-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    layout_.conf_dir = root_ + "/net.d";
    layout_.bin_dir = root_ + "/bin";
    layout_.binary = root_ + "/remora-cni-build";
    fs::create_directories(layout_.conf_dir);
    fs::create_directories(layout_.bin_dir);
    writeAll(layout_.binary, "#!/bin/sh\necho fake plugin\n");
    layout_.entry = json{{"type", "remora-cni"}, {"excludeNamespaces", {"kube-system"}}};
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string conf(const std::string& name) const { return layout_.conf_dir + "/" + name; }

  std::vector<std::string> confNames() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(layout_.conf_dir)) {
      names.push_back(e.path().filename());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string root_;
  NodeLayout layout_;
};

TEST_F(NodeInstallerTest, InstallChainsAndUninstallRestoresBytes) {
  writeAll(conf("87-podman.conflist"), kPodmanConflist);
  ::chmod(conf("87-podman.conflist").c_str(), 0640);
  auto installed = installNode(layout_);
  ASSERT_TRUE(installed.ok()) << installed.error().message;
  EXPECT_TRUE(installed->changed);
  EXPECT_EQ(installed->conf_file, conf("87-podman.conflist"));

  json doc = json::parse(readAll(conf("87-podman.conflist")));
  ASSERT_EQ(doc["plugins"].size(), 3u);
  EXPECT_EQ(doc["plugins"][2], layout_.entry);
  EXPECT_EQ(readAll(layout_.bin_dir + "/remora-cni"), readAll(layout_.binary));
  EXPECT_EQ(fs::status(layout_.bin_dir + "/remora-cni").permissions() & fs::perms::owner_exec,
            fs::perms::owner_exec);
  EXPECT_EQ(fs::status(conf("87-podman.conflist")).permissions(),
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
  // Only the config and the backup directory; no temp files left behind.
  EXPECT_EQ(confNames(), (std::vector<std::string>{"87-podman.conflist", "remora-cni.d"}));

  std::string after_first = readAll(conf("87-podman.conflist"));
  auto again = installNode(layout_);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->changed);
  EXPECT_EQ(readAll(conf("87-podman.conflist")), after_first);

  auto removed = uninstallNode(layout_);
  ASSERT_TRUE(removed.ok()) << removed.error().message;
  EXPECT_EQ(readAll(conf("87-podman.conflist")), kPodmanConflist);
  EXPECT_FALSE(fs::exists(layout_.bin_dir + "/remora-cni"));
  EXPECT_EQ(confNames(), std::vector<std::string>{"87-podman.conflist"});
  auto twice = uninstallNode(layout_);
  ASSERT_TRUE(twice.ok());
  EXPECT_FALSE(twice->changed);
}

TEST_F(NodeInstallerTest, PicksTheLexicallyFirstConfig) {
  writeAll(conf("20-second.conflist"), kPodmanConflist);
  writeAll(conf("10-first.conflist"), kPodmanConflist);
  ASSERT_TRUE(installNode(layout_).ok());
  EXPECT_TRUE(hasRemoraEntry(json::parse(readAll(conf("10-first.conflist")))));
  EXPECT_EQ(readAll(conf("20-second.conflist")), kPodmanConflist);
}

TEST_F(NodeInstallerTest, WrapsASingleConfAndRestoresIt) {
  writeAll(conf("10-flannel.conf"), kFlannelConf);
  auto installed = installNode(layout_);
  ASSERT_TRUE(installed.ok()) << installed.error().message;
  EXPECT_EQ(installed->conf_file, conf("10-flannel.conflist"));
  EXPECT_EQ(confNames(), (std::vector<std::string>{"10-flannel.conflist", "remora-cni.d"}));
  json doc = json::parse(readAll(conf("10-flannel.conflist")));
  EXPECT_EQ(doc["cniVersion"], "0.3.1");
  ASSERT_EQ(doc["plugins"].size(), 2u);
  EXPECT_EQ(doc["plugins"][0]["type"], "flannel");
  EXPECT_EQ(doc["plugins"][1]["type"], "remora-cni");

  ASSERT_TRUE(uninstallNode(layout_).ok());
  EXPECT_EQ(confNames(), std::vector<std::string>{"10-flannel.conf"});
  EXPECT_EQ(readAll(conf("10-flannel.conf")), kFlannelConf);
}

TEST_F(NodeInstallerTest, NeverOverwritesSomeoneElsesConflistWhenWrapping) {
  writeAll(conf("10-x.conf"), kFlannelConf);
  writeAll(conf("10-x.conflist"), kPodmanConflist);
  auto refused = installNode(layout_);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("10-x.conflist"), std::string::npos);
  EXPECT_EQ(readAll(conf("10-x.conf")), kFlannelConf);
  EXPECT_EQ(readAll(conf("10-x.conflist")), kPodmanConflist);
}

TEST_F(NodeInstallerTest, ReWrapsAfterThePrimaryRewritesItsConf) {
  writeAll(conf("10-flannel.conf"), kFlannelConf);
  ASSERT_TRUE(installNode(layout_).ok());
  // flannel writes its .conf again; it sorts before our .conflist, so it is primary again.
  writeAll(conf("10-flannel.conf"), kFlannelConf);
  auto again = reconcileConfig(layout_);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(confNames(), (std::vector<std::string>{"10-flannel.conflist", "remora-cni.d"}));
  ASSERT_TRUE(uninstallNode(layout_).ok());
  EXPECT_EQ(confNames(), std::vector<std::string>{"10-flannel.conf"});
  EXPECT_EQ(readAll(conf("10-flannel.conf")), kFlannelConf);
}

TEST_F(NodeInstallerTest, ReplacesAnOldEntry) {
  writeAll(conf("10-net.conflist"), kPodmanConflist);
  ASSERT_TRUE(installNode(layout_).ok());
  layout_.entry = json{{"type", "remora-cni"}, {"proxy-uid", 2102}};
  auto updated = installNode(layout_);
  ASSERT_TRUE(updated.ok()) << updated.error().message;
  EXPECT_TRUE(updated->changed);
  json doc = json::parse(readAll(conf("10-net.conflist")));
  ASSERT_EQ(doc["plugins"].size(), 3u);
  EXPECT_EQ(doc["plugins"][2]["proxy-uid"], 2102);
  // The original bytes are still the podman ones, not the first install's.
  ASSERT_TRUE(uninstallNode(layout_).ok());
  EXPECT_EQ(readAll(conf("10-net.conflist")), kPodmanConflist);
}

TEST_F(NodeInstallerTest, RejectsABadEntryBeforeTouchingAnything) {
  writeAll(conf("10-net.conflist"), kPodmanConflist);
  layout_.entry = json{{"type", "remora-cni"}, {"proxy-uid", "root"}};
  auto bad = installNode(layout_);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("proxy-uid"), std::string::npos) << bad.error().message;
  EXPECT_EQ(readAll(conf("10-net.conflist")), kPodmanConflist);
  layout_.entry = json{{"type", "something-else"}};
  EXPECT_FALSE(installNode(layout_).ok());
}

TEST_F(NodeInstallerTest, RefusesAConfigVersionWithoutChaining) {
  writeAll(conf("10-old.conf"), R"({"cniVersion":"0.2.0","name":"old","type":"bridge"})");
  auto old = installNode(layout_);
  ASSERT_FALSE(old.ok());
  EXPECT_NE(old.error().message.find("0.2.0"), std::string::npos) << old.error().message;
  EXPECT_EQ(confNames(), std::vector<std::string>{"10-old.conf"});
}

TEST_F(NodeInstallerTest, NoConfigYetIsENOENT) {
  auto none = reconcileConfig(layout_);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ENOENT);
}

TEST_F(NodeInstallerTest, MovesWithThePrimary) {
  writeAll(conf("20-net.conflist"), kPodmanConflist);
  ASSERT_TRUE(installNode(layout_).ok());
  writeAll(conf("10-new.conflist"), kPodmanConflist);
  auto moved = reconcileConfig(layout_);
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  EXPECT_TRUE(hasRemoraEntry(json::parse(readAll(conf("10-new.conflist")))));
  EXPECT_EQ(readAll(conf("20-net.conflist")), kPodmanConflist);
}

TEST_F(NodeInstallerTest, UninstallKeepsOtherPeoplesLaterChanges) {
  writeAll(conf("10-net.conflist"), kPodmanConflist);
  ASSERT_TRUE(installNode(layout_).ok());
  json doc = json::parse(readAll(conf("10-net.conflist")));
  doc["plugins"].push_back(json{{"type", "bandwidth"}});
  writeAll(conf("10-net.conflist"), doc.dump(3));
  ASSERT_TRUE(uninstallNode(layout_).ok());
  json left = json::parse(readAll(conf("10-net.conflist")));
  EXPECT_FALSE(hasRemoraEntry(left));
  ASSERT_EQ(left["plugins"].size(), 3u);
  EXPECT_EQ(left["plugins"][2]["type"], "bandwidth");
}

TEST_F(NodeInstallerTest, WatchReChainsAfterThePrimaryRewritesItsFile) {
  writeAll(conf("10-net.conflist"), kPodmanConflist);
  int stop[2];
  ASSERT_EQ(::pipe(stop), 0);
  std::atomic<int> reports{0};
  Result<void> watched;
  std::thread watcher([&] {
    watched = watchConfDir(
        layout_, stop[0], [&](const Result<NodeReport>&) { ++reports; }, 60000);
  });
  auto waitFor = [&](auto pred) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!pred() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
  };
  auto chained = [&] {
    return hasRemoraEntry(json::parse(readAll(conf("10-net.conflist")), nullptr, false));
  };
  EXPECT_TRUE(waitFor(chained));
  // The primary CNI rewrites its config (in place, as many do), dropping the entry.
  writeAll(conf("10-net.conflist"), kPodmanConflist);
  EXPECT_TRUE(waitFor(chained));
  // And again through rename, the other common way.
  writeAll(root_ + "/staged", kPodmanConflist);
  fs::rename(root_ + "/staged", conf("10-net.conflist"));
  EXPECT_TRUE(waitFor(chained));
  json doc = json::parse(readAll(conf("10-net.conflist")));
  EXPECT_EQ(doc["plugins"].size(), 3u);

  ASSERT_EQ(::write(stop[1], "x", 1), 1);
  watcher.join();
  ::close(stop[0]);
  ::close(stop[1]);
  EXPECT_TRUE(watched.ok()) << watched.error().message;
  EXPECT_GE(reports.load(), 3);
  // Uninstall still gives back the primary CNI's latest bytes.
  ASSERT_TRUE(uninstallNode(layout_).ok());
  EXPECT_EQ(readAll(conf("10-net.conflist")), kPodmanConflist);
}

// ---- install-node touches only its own entry (issue #15) --------------------------------

// Another plugin's numbers in spellings a re-serialiser would change.
constexpr const char* kForeignNumbers = R"({
  "cniVersion": "1.0.0",
  "name": "odd",
  "plugins": [
    {
      "type": "bridge",
      "big": 12345678901234567890123,
      "exp": 1e2,
      "frac": 1.50,
      "neg": -0,
      "esc": "caf\u00e9 \/",
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/24"}]]}
    }
  ]
}
)";

TEST(Conflist, ChainingEditsOnlyTheEntryText) {
  auto chained = chainIntoText("a.conflist", kForeignNumbers, json{{"type", "remora-cni"}});
  ASSERT_TRUE(chained.ok()) << chained.error().message;
  // Every byte of the bridge entry is there as it was, and the entry follows in the file's style.
  std::string text = kForeignNumbers;
  std::string bridge = text.substr(text.find("    {"), text.find("\n  ]") - text.find("    {"));
  EXPECT_NE(chained->find(bridge), std::string::npos) << *chained;
  EXPECT_EQ(*chained, text.substr(0, text.find("\n  ]")) +
                          ",\n    {\n      \"type\": \"remora-cni\"\n    }\n  ]\n}\n");
  // Taking the entry out again gives the original bytes.
  auto unchained = unchainFromText("a.conflist", *chained);
  ASSERT_TRUE(unchained.ok()) << unchained.error().message;
  EXPECT_EQ(*unchained, kForeignNumbers);
  // Replacing an entry touches nothing else either.
  auto replaced =
      chainIntoText("a.conflist", *chained, json{{"type", "remora-cni"}, {"proxy-uid", 7}});
  ASSERT_TRUE(replaced.ok());
  EXPECT_NE(replaced->find(bridge), std::string::npos);
  EXPECT_NE(replaced->find("\"proxy-uid\": 7"), std::string::npos) << *replaced;
  // One-line files stay on one line.
  auto line = chainIntoText(
      "b.conflist", R"({"cniVersion":"1.0.0","name":"x","plugins":[{"type":"ptp","n":1e2}]})",
      json{{"type", "remora-cni"}});
  ASSERT_TRUE(line.ok());
  EXPECT_EQ(
      *line,
      R"({"cniVersion":"1.0.0","name":"x","plugins":[{"type":"ptp","n":1e2},{"type":"remora-cni"}]})");
}

TEST(Conflist, WrappingKeepsTheSingleConfigsBytes) {
  std::string conf =
      "{\n  \"cniVersion\": \"0.4.0\",\n  \"name\": \"n\",\n  \"type\": \"ptp\",\n  \"mtu\": "
      "1.5e3\n}\n";
  auto wrapped = chainIntoText("10-x.conf", conf, json{{"type", "remora-cni"}});
  ASSERT_TRUE(wrapped.ok()) << wrapped.error().message;
  EXPECT_NE(wrapped->find("\"mtu\": 1.5e3"), std::string::npos) << *wrapped;
  auto back = parseNetworkConfig("10-x.conflist", *wrapped);
  ASSERT_TRUE(back.ok()) << *wrapped;
  EXPECT_EQ(back->doc["plugins"].size(), 2u);
}

TEST(Conflist, EmptyPluginsIsRefused) {
  auto parsed =
      parseNetworkConfig("a.conflist", R"({"cniVersion":"1.0.0","name":"x","plugins":[]})");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message.find("the \"plugins\" list is empty"), std::string::npos);
}

TEST(Conflist, DeepOrHugeConflistsAreErrorsNotCrashes) {
  std::string deep = R"({"cniVersion":"1.0.0","name":"x","plugins":[{"type":"a","x":)" +
                     std::string(100000, '[') + std::string(100000, ']') + "}]}";
  auto parsed = parseNetworkConfig("a.conflist", deep);
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message.find("nested deeper than 64 levels"), std::string::npos);
}

TEST_F(NodeInstallerTest, ForeignNumbersRoundTripThroughInstallAndUninstall) {
  writeAll(conf("10-odd.conflist"), kForeignNumbers);
  ASSERT_TRUE(installNode(layout_).ok());
  std::string installed = readAll(conf("10-odd.conflist"));
  EXPECT_NE(installed.find("\"big\": 12345678901234567890123,"), std::string::npos) << installed;
  EXPECT_NE(installed.find("\"exp\": 1e2,"), std::string::npos) << installed;
  // Someone else changes the file afterwards: uninstall then only takes the entry out, and the
  // numbers still come through byte for byte.
  std::string edited = installed;
  edited.replace(edited.find("\"name\": \"odd\""), 13, "\"name\": \"odd2\"");
  writeAll(conf("10-odd.conflist"), edited);
  ASSERT_TRUE(uninstallNode(layout_).ok());
  std::string expected = kForeignNumbers;
  expected.replace(expected.find("\"name\": \"odd\""), 13, "\"name\": \"odd2\"");
  EXPECT_EQ(readAll(conf("10-odd.conflist")), expected);
}

TEST_F(NodeInstallerTest, SymlinkedPrimaryIsEditedInPlaceAndStaysALink) {
  fs::create_directories(root_ + "/real");
  writeAll(root_ + "/real/87-podman.conflist", kPodmanConflist);
  fs::create_symlink("../real/87-podman.conflist", conf("87-podman.conflist"));
  auto installed = installNode(layout_);
  ASSERT_TRUE(installed.ok()) << installed.error().message;
  EXPECT_TRUE(fs::is_symlink(conf("87-podman.conflist")));
  EXPECT_TRUE(hasRemoraEntry(json::parse(readAll(root_ + "/real/87-podman.conflist"))));
  ASSERT_TRUE(uninstallNode(layout_).ok());
  EXPECT_TRUE(fs::is_symlink(conf("87-podman.conflist")));
  EXPECT_EQ(fs::read_symlink(conf("87-podman.conflist")), "../real/87-podman.conflist");
  EXPECT_EQ(readAll(root_ + "/real/87-podman.conflist"), kPodmanConflist);
}

TEST_F(NodeInstallerTest, SymlinkedSingleConfComesBackAsTheLink) {
  fs::create_directories(root_ + "/real");
  writeAll(root_ + "/real/10-flannel.conf", kFlannelConf);
  fs::create_symlink(root_ + "/real/10-flannel.conf", conf("10-flannel.conf"));
  ASSERT_TRUE(installNode(layout_).ok());
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(conf("10-flannel.conflist"))));
  ASSERT_TRUE(uninstallNode(layout_).ok());
  EXPECT_EQ(confNames(), std::vector<std::string>{"10-flannel.conf"});
  EXPECT_TRUE(fs::is_symlink(conf("10-flannel.conf")));
  EXPECT_EQ(readAll(root_ + "/real/10-flannel.conf"), kFlannelConf);
}

TEST_F(NodeInstallerTest, FifoPrimaryIsAnErrorNotAHang) {
  ASSERT_EQ(::mkfifo(conf("05-fifo.conflist").c_str(), 0644), 0);
  writeAll(conf("10-podman.conflist"), kPodmanConflist);
  auto started = std::chrono::steady_clock::now();
  auto installed = installNode(layout_);
  ASSERT_FALSE(installed.ok());
  EXPECT_EQ(installed.error().message, "'" + conf("05-fifo.conflist") + "' is not a regular file");
  auto removed = uninstallNode(layout_);
  EXPECT_TRUE(removed.ok()) << removed.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  EXPECT_EQ(readAll(conf("10-podman.conflist")), kPodmanConflist);
}

TEST_F(NodeInstallerTest, EmptyPluginsPrimaryIsNotChained) {
  std::string empty = R"({"cniVersion":"1.0.0","name":"x","plugins":[]})";
  writeAll(conf("10-empty.conflist"), empty);
  auto installed = installNode(layout_);
  ASSERT_FALSE(installed.ok());
  EXPECT_NE(installed.error().message.find("is empty"), std::string::npos);
  EXPECT_EQ(readAll(conf("10-empty.conflist")), empty);
}

}  // namespace
}  // namespace remora::cni
