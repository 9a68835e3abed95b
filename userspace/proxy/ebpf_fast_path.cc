#include "proxy/ebpf_fast_path.h"

#include <bpf/bpf.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "remora_abi.h"

namespace remora::proxy {

namespace {

#ifndef SO_NETNS_COOKIE
constexpr int SO_NETNS_COOKIE = 71;  // Linux 5.14
#endif

// Closes a file descriptor on scope exit.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

Result<bool> ebpfFastPathOn(const std::string& pin_dir) {
  const std::string path = pin_dir + "/map_netns";
  if (::access(path.c_str(), F_OK) != 0) return false;  // not eBPF mode on this node
  struct bpf_obj_get_opts opts {};
  opts.sz = sizeof(opts);
  opts.file_flags = BPF_F_RDONLY;
  FdCloser map{bpf_obj_get_opts(path.c_str(), &opts)};
  if (map.fd < 0) return errnoError("opening " + path);
  FdCloser sock{::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  if (sock.fd < 0) return errnoError("socket for SO_NETNS_COOKIE");
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (::getsockopt(sock.fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0) {
    return errnoError("SO_NETNS_COOKIE");
  }
  remora_netns_settings settings{};
  if (bpf_map_lookup_elem(map.fd, &cookie, &settings) != 0) {
    if (errno == ENOENT) return false;  // this netns is not meshed in eBPF mode
    return errnoError(fmt::format("looking up netns cookie {} in {}", cookie, path));
  }
  return (settings.flags & REMORA_F_FAST_PATH) != 0;
}

}  // namespace remora::proxy
