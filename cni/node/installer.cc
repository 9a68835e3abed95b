#include "node/installer.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <climits>
#include <cstdint>
#include <optional>
#include <utility>

#include "node/conflist.h"
#include "plugin/bounded_json.h"
#include "plugin/config.h"

namespace remora::cni {
namespace {

using json = nlohmann::ordered_json;

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

std::string join(const std::string& dir, const std::string& name) { return dir + "/" + name; }

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// Network configs are read within the JSON size limit; the plugin binary is not.
constexpr size_t kConfigReadLimit = JsonLimits{}.max_bytes;
constexpr size_t kNoReadLimit = SIZE_MAX;

// Reads a regular file (a symbolic link is followed). O_NONBLOCK and the fstat check make a FIFO
// or device an error at once, never a read that blocks; more than `limit` bytes is an error.
Result<std::string> readFile(const std::string& path, size_t limit = kConfigReadLimit) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.fd < 0) return errnoError(fmt::format("cannot open '{}'", path));
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) return errnoError(fmt::format("cannot stat '{}'", path));
  if (!S_ISREG(st.st_mode)) {
    return Error{EINVAL, fmt::format("'{}' is not a regular file", path)};
  }
  std::string out;
  std::array<char, 65536> buf{};
  while (true) {
    ssize_t n = ::read(fd.fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errnoError(fmt::format("cannot read '{}'", path));
    if (n == 0) break;
    out.append(buf.data(), static_cast<size_t>(n));
    if (out.size() > limit) {
      return Error{EFBIG, fmt::format("'{}' is larger than {} bytes", path, limit)};
    }
  }
  return out;
}

// Where a write to dir/name must go so that a symbolic link stays a link: the regular file it
// resolves to, else dir/name itself.
Result<std::pair<std::string, std::string>> writeTarget(const std::string& dir,
                                                        const std::string& name) {
  std::string path = dir + "/" + name;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return std::pair{dir, name};
  std::array<char, PATH_MAX> resolved{};
  if (::realpath(path.c_str(), resolved.data()) == nullptr) {
    return errnoError(fmt::format("cannot resolve the symbolic link '{}'", path));
  }
  if (::stat(resolved.data(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Error{EINVAL, fmt::format("'{}' does not lead to a regular file", path)};
  }
  std::string target = resolved.data();
  size_t slash = target.rfind('/');
  return std::pair{slash == 0 ? std::string("/") : target.substr(0, slash),
                   target.substr(slash + 1)};
}

Result<std::vector<std::string>> listDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return errnoError(fmt::format("cannot list '{}'", dir));
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    names.push_back(std::move(name));
  }
  ::closedir(d);
  return names;
}

Result<void> ensureDir(const std::string& dir, mode_t mode) {
  if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) {
    return errnoError(fmt::format("cannot create directory '{}'", dir));
  }
  return {};
}

// Writes `bytes` to dir/name through a hidden temp file in the same directory and rename(2),
// so a reader (libcni, the kubelet) sees the old or the new file, never a partial one. The temp
// name is hidden and has no config extension, so libcni never loads it.
Result<void> atomicWrite(const std::string& dir, const std::string& name, std::string_view bytes,
                         mode_t mode) {
  std::string tmp = join(dir, fmt::format(".{}.remora-tmp.{}", name, ::getpid()));
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
    if (fd.fd < 0) return errnoError(fmt::format("cannot create '{}'", tmp));
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::write(fd.fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        auto err = errnoError(fmt::format("cannot write '{}'", tmp));
        ::unlink(tmp.c_str());
        return err;
      }
      done += static_cast<size_t>(n);
    }
    // The umask must not change the mode the file had.
    if (::fchmod(fd.fd, mode) != 0 || ::fsync(fd.fd) != 0) {
      auto err = errnoError(fmt::format("cannot finish '{}'", tmp));
      ::unlink(tmp.c_str());
      return err;
    }
  }
  if (::rename(tmp.c_str(), join(dir, name).c_str()) != 0) {
    auto err = errnoError(fmt::format("cannot rename '{}' to '{}'", tmp, join(dir, name)));
    ::unlink(tmp.c_str());
    return err;
  }
  // Make the rename itself durable.
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.fd < 0 || ::fsync(dfd.fd) != 0) {
    return errnoError(fmt::format("cannot sync directory '{}'", dir));
  }
  return {};
}

// atomicWrite for a network config, through a symbolic link to the file it names.
Result<void> writeConfig(const std::string& dir, const std::string& name, std::string_view bytes,
                         mode_t mode) {
  auto target = writeTarget(dir, name);
  if (!target) return target.error();
  return atomicWrite(target->first, target->second, bytes, mode);
}

bool isSymlink(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

// Replaces dir/name with a symbolic link holding `link_text` (temp link + rename).
Result<void> atomicSymlink(const std::string& dir, const std::string& name,
                           const std::string& link_text) {
  std::string tmp = join(dir, fmt::format(".{}.remora-tmp.{}", name, ::getpid()));
  ::unlink(tmp.c_str());
  if (::symlink(link_text.c_str(), tmp.c_str()) != 0) {
    return errnoError(fmt::format("cannot create the link '{}'", tmp));
  }
  if (::rename(tmp.c_str(), join(dir, name).c_str()) != 0) {
    auto err = errnoError(fmt::format("cannot rename '{}' to '{}'", tmp, join(dir, name)));
    ::unlink(tmp.c_str());
    return err;
  }
  return {};
}

Result<std::string> readLink(const std::string& path) {
  std::array<char, PATH_MAX> buf{};
  ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size() - 1);
  if (n < 0) return errnoError(fmt::format("cannot read the link '{}'", path));
  return std::string(buf.data(), static_cast<size_t>(n));
}

mode_t modeOf(const std::string& path, mode_t fallback) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return fallback;
  return st.st_mode & 07777;
}

Result<void> removeFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return errnoError(fmt::format("cannot remove '{}'", path));
  }
  return {};
}

std::string backupDir(const NodeLayout& layout) {
  return join(layout.conf_dir, std::string(kBackupDirName));
}

// Restores or cleans one config file that holds a remora-cni entry. When the backup of its
// original still matches it minus the entry, the original bytes (and name) come back;
// otherwise only the entry is dropped.
Result<void> removeFromFile(const NodeLayout& layout, const std::string& name,
                            const std::string& text, NodeReport& report) {
  auto parsed = parseNetworkConfig(name, text);
  if (!parsed) return parsed.error();
  json stripped = parsed->doc;
  removeRemoraEntries(stripped);
  auto unchained = unchainFromText(name, text);
  if (!unchained) return unchained.error();

  // The original is kept under its own name: "x.conflist", or "x.conf"/"x.json" if wrapped.
  std::string original_name;
  std::string original_bytes;
  std::optional<std::string> original_link;  // a wrapped .conf that was a symbolic link
  auto backups = listDir(backupDir(layout));
  if (backups) {
    for (const auto& b : *backups) {
      if (!isNetworkConfigName(b) || conflistNameFor(b) != conflistNameFor(name)) continue;
      std::string backup = join(backupDir(layout), b);
      std::optional<std::string> link;
      if (isSymlink(backup)) {
        auto text_of_link = readLink(backup);
        if (text_of_link) link = *text_of_link;
      }
      // A link's text is relative to the conf dir it came from, not to the backup dir.
      std::string source = backup;
      if (link) source = (*link)[0] == '/' ? *link : join(layout.conf_dir, *link);
      auto bytes = readFile(source);
      if (bytes) {
        auto original = parseNetworkConfig(b, *bytes);
        if (original && original->doc == stripped) {
          original_name = b;
          original_bytes = std::move(*bytes);
          original_link = link;
        }
      }
      if (auto gone = removeFile(backup); !gone) return gone;
    }
  }

  mode_t mode = modeOf(join(layout.conf_dir, name), 0644);
  if (original_link) {
    if (auto w = atomicSymlink(layout.conf_dir, original_name, *original_link); !w) return w;
    if (original_name != name) {
      if (auto gone = removeFile(join(layout.conf_dir, name)); !gone) return gone;
    }
    report.lines.push_back(
        fmt::format("restored {} as the link to {}", original_name, *original_link));
  } else if (!original_name.empty()) {
    if (auto w = writeConfig(layout.conf_dir, original_name, original_bytes, mode); !w) return w;
    if (original_name != name) {
      if (auto gone = removeFile(join(layout.conf_dir, name)); !gone) return gone;
    }
    report.lines.push_back(fmt::format("restored {} to its original content", original_name));
  } else {
    if (auto w = writeConfig(layout.conf_dir, name, *unchained, mode); !w) return w;
    report.lines.push_back(fmt::format("removed the remora-cni entry from {}", name));
  }
  report.changed = true;
  return {};
}

}  // namespace

Result<json> readEntryFile(const std::string& path) {
  auto text = readFile(path);
  if (!text) return text.error();
  auto entry = parseJsonText(*text);
  if (!entry)
    return makeError(fmt::format("{} is not valid JSON: {}", path, entry.error().message));
  return std::move(*entry);
}

Result<json> validateEntry(const json& entry, const std::string& cni_version) {
  if (!entry.is_object()) return makeError("the remora-cni entry must be a JSON object");
  json checked = entry;
  if (checked.contains("type") &&
      (!checked["type"].is_string() || checked["type"].get<std::string>() != kPluginType)) {
    return makeError(fmt::format("the entry's type must be \"{}\"", kPluginType));
  }
  checked["type"] = std::string(kPluginType);
  json probe = checked;
  probe["cniVersion"] = cni_version;
  probe["name"] = "remora-validate";
  auto parsed = parseConfig(probe.dump(), Command::kDel);
  if (!parsed) {
    return makeError(fmt::format("invalid remora-cni entry: {}{}{}", parsed.error().msg,
                                 parsed.error().details.empty() ? "" : ": ",
                                 parsed.error().details));
  }
  return checked;
}

Result<NodeReport> reconcileConfig(const NodeLayout& layout) {
  NodeReport report;
  auto names = listDir(layout.conf_dir);
  if (!names) return names.error();
  auto order = networkConfigOrder(*names);
  if (order.empty()) {
    return Error{ENOENT, fmt::format("no network config (.conf, .conflist, .json) in '{}' yet",
                                     layout.conf_dir)};
  }
  const std::string& primary = order.front();
  auto text = readFile(join(layout.conf_dir, primary));
  if (!text) return text.error();
  auto parsed = parseNetworkConfig(primary, *text);
  if (!parsed) return parsed.error();

  std::string version = parsed->doc.value("cniVersion", "");
  auto entry = validateEntry(layout.entry, version);
  if (!entry)
    return makeError(
        fmt::format("{} (cniVersion '{}'): {}", primary, version, entry.error().message));

  std::string target = parsed->from_single_conf ? conflistNameFor(primary) : primary;
  report.conf_file = join(layout.conf_dir, target);
  if (target != primary) {
    // Wrapping writes x.conflist; one that is not an earlier wrap of ours is someone else's.
    auto existing = readFile(join(layout.conf_dir, target));
    if (existing) {
      auto other = parseNetworkConfig(target, *existing);
      if (!other || !hasRemoraEntry(other->doc)) {
        return makeError(
            fmt::format("cannot wrap {} into {}: that file exists and is not "
                        "remora-cni's",
                        primary, target));
      }
    }
  }
  bool had_entry = hasRemoraEntry(parsed->doc);
  json updated = parsed->doc;
  bool changed = upsertRemoraEntry(updated, *entry);
  if (changed || parsed->from_single_conf) {
    auto edited = chainIntoText(primary, *text, *entry);
    if (!edited) return edited.error();
    mode_t mode = modeOf(join(layout.conf_dir, primary), 0644);
    std::string primary_path = join(layout.conf_dir, primary);
    if (!had_entry) {
      // This content is the primary CNI's own: keep its bytes for uninstall. A link that
      // wrapping replaces is kept as the link itself, so uninstall puts the link back.
      if (auto made = ensureDir(backupDir(layout), 0700); !made) return made.error();
      if (target != primary && isSymlink(primary_path)) {
        auto link = readLink(primary_path);
        if (!link) return link.error();
        if (auto saved = atomicSymlink(backupDir(layout), primary, *link); !saved) {
          return saved.error();
        }
      } else if (auto saved = atomicWrite(backupDir(layout), primary, *text, 0600); !saved) {
        return saved.error();
      }
    }
    // In place through a link; a wrap writes a new conflist next to the .conf it replaces.
    auto written = target == primary ? writeConfig(layout.conf_dir, target, *edited, mode)
                                     : atomicWrite(layout.conf_dir, target, *edited, mode);
    if (!written) return written.error();
    if (target != primary) {
      if (auto gone = removeFile(join(layout.conf_dir, primary)); !gone) return gone.error();
      report.lines.push_back(fmt::format("wrapped {} into {}", primary, target));
    }
    report.lines.push_back(
        fmt::format("{} remora-cni in {}", had_entry ? "updated" : "chained", target));
    report.changed = true;
  }

  // An entry in a file that is no longer primary does nothing but confuse; take it out.
  for (size_t i = 1; i < order.size(); ++i) {
    const std::string& other = order[i];
    if (other == target) continue;
    auto other_text = readFile(join(layout.conf_dir, other));
    if (!other_text) continue;
    auto other_parsed = parseNetworkConfig(other, *other_text);
    if (!other_parsed || !hasRemoraEntry(other_parsed->doc)) continue;
    if (auto cleaned = removeFromFile(layout, other, *other_text, report); !cleaned) {
      return cleaned.error();
    }
  }
  return report;
}

Result<NodeReport> installNode(const NodeLayout& layout) {
  NodeReport report;
  auto binary = readFile(layout.binary, kNoReadLimit);
  if (!binary) return binary.error();
  std::string dest = join(layout.bin_dir, std::string(kPluginType));
  auto current = readFile(dest, kNoReadLimit);
  if (!current || *current != *binary) {
    if (auto w = atomicWrite(layout.bin_dir, std::string(kPluginType), *binary, 0755); !w) {
      return w.error();
    }
    report.lines.push_back(fmt::format("copied {} to {}", layout.binary, dest));
    report.changed = true;
  }
  auto config = reconcileConfig(layout);
  if (!config) return config.error();
  report.conf_file = config->conf_file;
  report.changed = report.changed || config->changed;
  report.lines.insert(report.lines.end(), config->lines.begin(), config->lines.end());
  return report;
}

Result<NodeReport> uninstallNode(const NodeLayout& layout) {
  NodeReport report;
  auto names = listDir(layout.conf_dir);
  if (!names) return names.error();
  for (const auto& name : networkConfigOrder(*names)) {
    auto text = readFile(join(layout.conf_dir, name));
    // Only a regular file can hold remora-cni's entry: a FIFO or device is none of its business.
    if (!text && text.error().code == EINVAL) continue;
    if (!text) return text.error();
    auto parsed = parseNetworkConfig(name, *text);
    if (!parsed || !hasRemoraEntry(parsed->doc)) continue;
    if (report.conf_file.empty()) report.conf_file = join(layout.conf_dir, name);
    if (auto cleaned = removeFromFile(layout, name, *text, report); !cleaned) {
      return cleaned.error();
    }
  }
  // Backups whose file no longer carries the entry are stale.
  if (auto backups = listDir(backupDir(layout))) {
    for (const auto& b : *backups) {
      if (auto gone = removeFile(join(backupDir(layout), b)); !gone) return gone.error();
    }
    if (::rmdir(backupDir(layout).c_str()) != 0 && errno != ENOENT) {
      return errnoError(fmt::format("cannot remove '{}'", backupDir(layout)));
    }
  }
  std::string binary = join(layout.bin_dir, std::string(kPluginType));
  if (exists(binary)) {
    if (auto gone = removeFile(binary); !gone) return gone.error();
    report.lines.push_back(fmt::format("removed {}", binary));
    report.changed = true;
  }
  return report;
}

Result<void> watchConfDir(const NodeLayout& layout, int stop_fd,
                          const std::function<void(const Result<NodeReport>&)>& on_report,
                          int resync_ms) {
  Fd in(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (in.fd < 0) return errnoError("inotify_init1");
  uint32_t mask = IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE;
  if (::inotify_add_watch(in.fd, layout.conf_dir.c_str(), mask) < 0) {
    return errnoError(fmt::format("cannot watch '{}'", layout.conf_dir));
  }
  auto reconcile = [&] {
    auto result = reconcileConfig(layout);
    if (!result || result->changed) on_report(result);
    return result.ok();
  };
  bool healthy = reconcile();
  while (true) {
    // After a failure (say a half-written file), retry soon rather than at the next resync.
    int timeout = healthy ? resync_ms : std::min(resync_ms, 1000);
    std::array<pollfd, 2> fds{{{stop_fd, POLLIN, 0}, {in.fd, POLLIN, 0}}};
    int n = ::poll(fds.data(), fds.size(), timeout);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errnoError("poll");
    if (fds[0].revents != 0) return {};
    if (fds[1].revents != 0) {
      // Drain everything queued: one reconcile covers any number of events (and overflow).
      alignas(inotify_event) std::array<char, 8192> buf{};
      while (::read(in.fd, buf.data(), buf.size()) > 0) {
      }
    }
    healthy = reconcile();
  }
}

}  // namespace remora::cni
