#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/result.h"

namespace remora::cni {

// Where a node keeps its CNI plugins and network configs, and what to put there.
struct NodeLayout {
  std::string bin_dir = "/opt/cni/bin";
  std::string conf_dir = "/etc/cni/net.d";
  // The plugin binary to copy into bin_dir (install only); /proc/self/exe by default.
  std::string binary = "/proc/self/exe";
  // remora-cni's entry in the conflist; "type" is always remora-cni.
  nlohmann::ordered_json entry = nlohmann::ordered_json{{"type", "remora-cni"}};
};

// The directory under conf_dir where the original bytes of every file remora-cni edited are
// kept, under their original names, so uninstall can restore them exactly. libcni skips
// directories, so nothing in it is ever loaded as a network.
inline constexpr std::string_view kBackupDirName = "remora-cni.d";

struct NodeReport {
  std::string conf_file;           // the primary network config, as written
  bool changed = false;            // whether anything on disk changed
  std::vector<std::string> lines;  // what was done, one line per action
};

// Checks an entry before it is installed: it must be a JSON object whose type (if given) is
// remora-cni, and it must parse as remora-cni's config under `cni_version`, so a bad option
// value fails here instead of on every pod's ADD. Fills in the type.
Result<nlohmann::ordered_json> validateEntry(const nlohmann::ordered_json& entry,
                                             const std::string& cni_version = "1.0.0");

// Reads remora-cni's conflist entry from a JSON file (install-node --plugin-config): a regular
// file within the JSON limits, never a FIFO that would block.
Result<nlohmann::ordered_json> readEntryFile(const std::string& path);

// Copies the binary (temp file + rename) and chains the entry into the primary network config
// (the first .conf/.conflist/.json in lexical order, the file the kubelet's runtime uses).
// A single .conf is wrapped into a .conflist; an old remora-cni entry is replaced, never
// duplicated; every write is atomic. Entries left in files that are no longer primary are
// removed. Idempotent: a second run changes nothing.
Result<NodeReport> installNode(const NodeLayout& layout);

// The config part of installNode alone (what --watch repeats).
Result<NodeReport> reconcileConfig(const NodeLayout& layout);

// Removes remora-cni's entry from every config in conf_dir and the binary from bin_dir. A file
// nobody else changed since remora-cni edited it gets its original bytes back (a wrapped
// .conf returns as the .conf); otherwise only the entry is removed. Idempotent.
Result<NodeReport> uninstallNode(const NodeLayout& layout);

// Runs reconcileConfig whenever conf_dir changes (inotify), also every `resync_ms`, until
// `stop_fd` is readable. Failures (no config yet, a half-written file) are reported and retried
// at the next change or resync. `on_report` sees every reconcile that changed something or failed.
Result<void> watchConfDir(const NodeLayout& layout, int stop_fd,
                          const std::function<void(const Result<NodeReport>&)>& on_report,
                          int resync_ms = 30000);

}  // namespace remora::cni
