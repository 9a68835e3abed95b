#include "intercept/pinned_build.h"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>

#include <cerrno>
#include <cstring>

namespace remora::intercept {

using ebpf::Fd;

uint64_t objectHash(const void* (*elf_bytes)(size_t* size)) {
  size_t size = 0;
  const auto* p = static_cast<const unsigned char*>(elf_bytes(&size));
  uint64_t hash = 14695981039346656037ULL;  // FNV-1a
  for (size_t i = 0; i < size; ++i) hash = (hash ^ p[i]) * 1099511628211ULL;
  return hash;
}

uint64_t pinnedObjectHash(const std::string& meta_pin) {
  Fd map(bpf_obj_get(meta_pin.c_str()));
  if (!map.valid()) return 0;
  bpf_map_info info{};
  __u32 len = sizeof(info);
  if (bpf_obj_get_info_by_fd(map.get(), &info, &len) != 0 || info.value_size < sizeof(uint64_t)) {
    return 0;
  }
  // Read whole: a later build may append fields after the hash.
  std::vector<unsigned char> value(info.value_size);
  const uint32_t key = 0;
  if (bpf_map_lookup_elem(map.get(), &key, value.data()) != 0) return 0;
  uint64_t hash = 0;
  std::memcpy(&hash, value.data(), sizeof(hash));
  return hash;
}

Result<void> writeObjectHash(int meta_fd, uint64_t hash, const std::string& what) {
  const uint32_t key = 0;
  if (bpf_map_update_elem(meta_fd, &key, &hash, BPF_ANY) != 0) {
    return errnoError("recording the programs' build in " + what);
  }
  return {};
}

Result<void> sameShape(int fd, const bpf_map* map, const std::string& path) {
  bpf_map_info info{};
  __u32 len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return errnoError("reading " + path);
  if (info.type == bpf_map__type(map) && info.key_size == bpf_map__key_size(map) &&
      info.value_size == bpf_map__value_size(map) &&
      info.max_entries == bpf_map__max_entries(map) && info.map_flags == bpf_map__map_flags(map)) {
    return {};
  }
  return makeError(fmt::format(
      "{} has type {}, key {} B, value {} B, {} entries, flags {:#x}; this build's has type {}, "
      "key {} B, value {} B, {} entries, flags {:#x}",
      path, info.type, info.key_size, info.value_size, info.max_entries, info.map_flags,
      static_cast<int>(bpf_map__type(map)), bpf_map__key_size(map), bpf_map__value_size(map),
      bpf_map__max_entries(map), bpf_map__map_flags(map)));
}

Result<std::vector<size_t>> reusePinnedMaps(const std::vector<bpf_map*>& maps,
                                            const std::vector<std::string>& pins) {
  std::vector<size_t> unpinned;
  for (size_t i = 0; i < maps.size() && i < pins.size(); ++i) {
    Fd fd(bpf_obj_get(pins[i].c_str()));
    if (!fd.valid()) {
      if (errno != ENOENT) return errnoError("opening " + pins[i]);
      unpinned.push_back(i);
      continue;
    }
    if (auto same = sameShape(fd.get(), maps[i], pins[i]); !same) return same.error();
    // libbpf keeps a dup of the fd.
    if (bpf_map__reuse_fd(maps[i], fd.get()) != 0) return errnoError("reusing " + pins[i]);
  }
  return unpinned;
}

Result<std::shared_ptr<Fd>> lockPinDir(const std::string& dir) {
  auto fd = std::make_shared<Fd>(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd->valid()) return errnoError("opening " + dir);
  if (::flock(fd->get(), LOCK_EX) != 0) return errnoError("locking " + dir);
  return fd;
}

}  // namespace remora::intercept
