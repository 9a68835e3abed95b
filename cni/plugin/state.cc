#include "plugin/state.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace remora::cni {
namespace {

using nlohmann::json;

constexpr std::string_view kSuffix = ".json";

Result<void> makeDirs(const std::string& path) {
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    partial = path.substr(0, pos);
    if (partial.empty()) continue;
    if (::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) {
      return errnoError(fmt::format("cannot create directory '{}'", partial));
    }
  }
  return {};
}

Result<std::string> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return errnoError(fmt::format("cannot read '{}'", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Result<AttachmentState> decode(const std::string& path, const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return makeError(fmt::format("'{}' is not JSON", path));
  AttachmentState s;
  try {
    s.container_id = j.at("containerID").get<std::string>();
    s.ifname = j.at("ifname").get<std::string>();
    s.netns = j.value("netns", "");
    s.netns_dev = j.value("netnsDev", uint64_t{0});
    s.netns_ino = j.value("netnsIno", uint64_t{0});
    s.netns_cookie = j.value("netnsCookie", uint64_t{0});
    s.pod_namespace = j.value("podNamespace", "");
    s.pod_name = j.value("podName", "");
  } catch (const json::exception& e) {
    return makeError(fmt::format("'{}': {}", path, e.what()));
  }
  return s;
}

}  // namespace

std::optional<std::pair<uint64_t, uint64_t>> netnsIdentity(const std::string& path) {
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0) return std::nullopt;
  return std::make_pair(static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino));
}

StateStore::StateStore(std::string dir, std::string network)
    : network_dir_(std::move(dir) + "/" + std::move(network)) {}

std::string StateStore::pathFor(const std::string& container_id, const std::string& ifname) const {
  // ':' can appear in neither a container ID nor an interface name, so the key is unambiguous.
  return fmt::format("{}/{}:{}{}", network_dir_, container_id, ifname, kSuffix);
}

Result<void> StateStore::ensureWritable() {
  if (auto made = makeDirs(network_dir_); !made) return made;
  if (::access(network_dir_.c_str(), W_OK) != 0) {
    return errnoError(fmt::format("state directory '{}' is not writable", network_dir_));
  }
  return {};
}

Result<void> StateStore::save(const AttachmentState& state) {
  if (auto made = makeDirs(network_dir_); !made) return made;
  json j = {{"containerID", state.container_id},
            {"ifname", state.ifname},
            {"netns", state.netns},
            {"netnsDev", state.netns_dev},
            {"netnsIno", state.netns_ino},
            {"netnsCookie", state.netns_cookie},
            {"podNamespace", state.pod_namespace},
            {"podName", state.pod_name}};
  std::string path = pathFor(state.container_id, state.ifname);
  std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  std::string text = j.dump() + "\n";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errnoError(fmt::format("cannot create '{}'", tmp));
  bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  int saved = errno;
  ::close(fd);
  if (!written) {
    ::unlink(tmp.c_str());
    errno = saved;
    return errnoError(fmt::format("cannot write '{}'", tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto err = errnoError(fmt::format("cannot rename '{}' to '{}'", tmp, path));
    ::unlink(tmp.c_str());
    return err;
  }
  return {};
}

Result<std::optional<AttachmentState>> StateStore::load(const std::string& container_id,
                                                        const std::string& ifname) const {
  std::string path = pathFor(container_id, ifname);
  if (::access(path.c_str(), F_OK) != 0) {
    if (errno == ENOENT) return std::optional<AttachmentState>();
    return errnoError(fmt::format("cannot access '{}'", path));
  }
  auto text = readFile(path);
  if (!text) return text.error();
  auto state = decode(path, *text);
  if (!state) return state.error();
  return std::optional<AttachmentState>(std::move(*state));
}

Result<void> StateStore::remove(const std::string& container_id, const std::string& ifname) {
  std::string path = pathFor(container_id, ifname);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return errnoError(fmt::format("cannot remove '{}'", path));
  }
  return {};
}

Result<void> StateStore::discard(const std::string& path) {
  if (path.rfind(network_dir_ + "/", 0) != 0 || path.find("/..") != std::string::npos) {
    return makeError(fmt::format("'{}' is not a record of '{}'", path, network_dir_));
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return errnoError(fmt::format("cannot remove '{}'", path));
  }
  return {};
}

Result<std::vector<AttachmentState>> StateStore::list(std::vector<std::string>* unreadable) const {
  std::vector<AttachmentState> out;
  DIR* dir = ::opendir(network_dir_.c_str());
  if (dir == nullptr) {
    if (errno == ENOENT) return out;
    return errnoError(fmt::format("cannot list '{}'", network_dir_));
  }
  while (dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name.size() <= kSuffix.size() ||
        name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0) {
      continue;
    }
    std::string path = network_dir_ + "/" + name;
    auto text = readFile(path);
    auto state = text ? decode(path, *text) : Result<AttachmentState>(text.error());
    if (state) {
      out.push_back(std::move(*state));
    } else if (unreadable != nullptr) {
      unreadable->push_back(path);
    }
  }
  ::closedir(dir);
  return out;
}

}  // namespace remora::cni
