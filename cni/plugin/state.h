#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace remora::cni {

// What remora-cni remembers about one attachment it meshed, keyed by the spec's
// (network name, CNI_CONTAINERID, CNI_IFNAME). It lets DEL find the netns when the runtime
// gives none, and GC find attachments the runtime no longer knows.
struct AttachmentState {
  std::string container_id;
  std::string ifname;
  std::string netns;  // CNI_NETNS at ADD
  // The netns's identity at ADD: a path such as /proc/PID/ns/net can later name another
  // namespace, and rules must never be removed from a namespace that is not this pod's.
  uint64_t netns_dev = 0;
  uint64_t netns_ino = 0;
  // eBPF mode: the netns cookie registered at ADD (0 otherwise), so that DEL and GC can
  // unregister it after the namespace is gone.
  uint64_t netns_cookie = 0;
  std::string pod_namespace;
  std::string pod_name;

  bool operator==(const AttachmentState&) const = default;
};

// The identity (st_dev, st_ino) of the namespace file at `path`, or nullopt when it is gone.
std::optional<std::pair<uint64_t, uint64_t>> netnsIdentity(const std::string& path);

// One JSON file per attachment under <dir>/<network>/. Writes are atomic (temp file + rename).
// Different attachments never share a file, so concurrent invocations for different
// containers need no lock; the runtime never runs two for the same container at once.
class StateStore {
 public:
  StateStore(std::string dir, std::string network);

  Result<void> save(const AttachmentState& state);
  // nullopt when there is no record; an unreadable record is an error.
  Result<std::optional<AttachmentState>> load(const std::string& container_id,
                                              const std::string& ifname) const;
  // Succeeds when there is no record.
  Result<void> remove(const std::string& container_id, const std::string& ifname);
  // Every readable record of this network; the paths of unreadable ones go to `unreadable`.
  Result<std::vector<AttachmentState>> list(std::vector<std::string>* unreadable = nullptr) const;
  // Removes a record file `list` reported as unreadable (only files in this network's dir).
  Result<void> discard(const std::string& path);
  // Creates the directory if needed and checks it is writable.
  Result<void> ensureWritable();

  const std::string& networkDir() const { return network_dir_; }

 private:
  std::string pathFor(const std::string& container_id, const std::string& ifname) const;

  std::string network_dir_;
};

}  // namespace remora::cni
