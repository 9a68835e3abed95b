#include "common/netns.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <unistd.h>

#include <thread>

namespace remora {

Result<void> runInNetns(const std::string& netns_path, const std::function<Result<void>()>& fn) {
  int fd = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errnoError(fmt::format("cannot open network namespace '{}'", netns_path));
  Result<void> result;
  // The thread ends after fn, so its namespace never leaks into other work.
  std::thread worker([&] {
    if (::setns(fd, CLONE_NEWNET) != 0) {
      result = errnoError(fmt::format("setns into '{}'", netns_path));
      return;
    }
    result = fn();
  });
  worker.join();
  ::close(fd);
  return result;
}

}  // namespace remora
