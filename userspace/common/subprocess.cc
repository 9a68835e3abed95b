#include "common/subprocess.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <sstream>

extern char** environ;

namespace remora {
namespace {

struct Pipe {
  int fds[2] = {-1, -1};
  ~Pipe() {
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
  }
  void closeEnd(int i) {
    if (fds[i] >= 0) ::close(fds[i]);
    fds[i] = -1;
  }
};

}  // namespace

bool programInPath(const std::string& program) {
  if (program.find('/') != std::string::npos) return ::access(program.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    dir += '/';
    dir += program;
    if (::access(dir.c_str(), X_OK) == 0) return true;
  }
  return false;
}

Result<CommandOutput> runCommand(const std::vector<std::string>& argv, const std::string& input) {
  return runCommand(argv, input, std::nullopt);
}

std::string formatTimeout(std::chrono::milliseconds timeout) {
  auto ms = timeout.count();
  if (ms % 1000 == 0) return fmt::format("{} s", ms / 1000);
  if (ms < 1000) return fmt::format("{} ms", ms);
  return fmt::format("{:g} s", static_cast<double>(ms) / 1000.0);
}

Result<CommandOutput> runCommand(const std::vector<std::string>& argv, const std::string& input,
                                 std::optional<std::chrono::milliseconds> timeout) {
  if (argv.empty()) return makeError("runCommand: empty argv");
  if (!programInPath(argv[0])) {
    return Error{ENOENT, fmt::format("'{}' was not found in PATH", argv[0])};
  }
  Pipe in, out, err;
  if (::pipe2(in.fds, O_CLOEXEC) != 0 || ::pipe2(out.fds, O_CLOEXEC) != 0 ||
      ::pipe2(err.fds, O_CLOEXEC) != 0) {
    return errnoError("pipe2");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in.fds[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out.fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err.fds[1], 2);
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // With a deadline the child leads a process group of its own, so that killing it also kills
  // whatever it started (a shell wrapper's children would otherwise hold the pipes open).
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  if (timeout) {
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
  }
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    errno = rc;
    return errnoError(fmt::format("cannot run '{}'", argv[0]));
  }
  in.closeEnd(0);
  out.closeEnd(1);
  err.closeEnd(1);

  // A child that exits before reading all its input (iptables-restore failing on line 1) must
  // give EPIPE here, not kill the caller: block SIGPIPE on this thread while writing and
  // swallow the one the write raised.
  sigset_t pipe_set;
  sigset_t old_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
  bool got_epipe = false;

  using Clock = std::chrono::steady_clock;
  const auto deadline = timeout ? Clock::now() + *timeout : Clock::time_point::max();
  bool timed_out = false;

  CommandOutput result;
  size_t written = 0;
  if (input.empty()) in.closeEnd(1);
  std::array<char, 65536> buf{};
  while (out.fds[0] >= 0 || err.fds[0] >= 0 || in.fds[1] >= 0) {
    std::array<pollfd, 3> pfds{};
    pfds[0] = {in.fds[1], POLLOUT, 0};
    pfds[1] = {out.fds[0], POLLIN, 0};
    pfds[2] = {err.fds[0], POLLIN, 0};
    int wait_ms = -1;
    if (timeout) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        timed_out = true;
        break;
      }
      wait_ms = static_cast<int>(std::min<int64_t>(left, 60000));
    }
    int ready = ::poll(pfds.data(), pfds.size(), wait_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      Error error = errnoError("poll");
      pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
      return error;
    }
    if (pfds[0].revents) {
      ssize_t n = ::write(in.fds[1], input.data() + written, input.size() - written);
      if (n > 0) written += static_cast<size_t>(n);
      if (n < 0 && errno == EPIPE) got_epipe = true;
      if (n < 0 || written == input.size()) in.closeEnd(1);
    }
    for (int i = 1; i <= 2; ++i) {
      if (!pfds[i].revents) continue;
      Pipe& p = i == 1 ? out : err;
      ssize_t n = ::read(p.fds[0], buf.data(), buf.size());
      if (n > 0) {
        (i == 1 ? result.out : result.err).append(buf.data(), static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        p.closeEnd(0);
      }
    }
  }
  if (got_epipe) {
    timespec zero{};
    sigtimedwait(&pipe_set, nullptr, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
  if (timed_out) {
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return errnoError("waitpid");
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (timed_out) {
    return Error{ETIMEDOUT, fmt::format("{} did not finish within {} and was killed", argv[0],
                                        formatTimeout(*timeout))};
  }
  return result;
}

}  // namespace remora
