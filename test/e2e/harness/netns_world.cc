#include "netns_world.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace remora::test {
namespace {

void mustRun(const std::vector<std::string>& argv) {
  auto r = runCommand(argv);
  if (!r || r->exit_code != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    throw std::runtime_error(
        fmt::format("netns world: '{}' failed: {}", cmd, r ? r->err : r.error().message));
  }
}

std::vector<std::string> inNetns(const std::string& ns, std::vector<std::string> argv) {
  argv.insert(argv.begin(), {"ip", "netns", "exec", ns});
  return argv;
}

}  // namespace

Process::~Process() {
  if (!reaped_) stop(SIGKILL, 2000);
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
}

void Process::drain() {
  char buf[4096];
  while (true) {
    ssize_t n = ::read(stdout_fd_, buf, sizeof(buf));
    if (n <= 0) return;
    output_.append(buf, static_cast<size_t>(n));
  }
}

bool Process::waitForLine(const std::string& marker, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (output_.find(marker) == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) return false;
    pollfd pfd{stdout_fd_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left)) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(stdout_fd_, buf, sizeof(buf));
    if (n == 0) return output_.find(marker) != std::string::npos;  // EOF: process exited
    if (n > 0) output_.append(buf, static_cast<size_t>(n));
  }
  return true;
}

std::optional<int> Process::stop(int signal, int timeout_ms, bool keep_reading) {
  // pid_ <= 0 would signal a process group or every process (kill(-1, ...)).
  if (reaped_ || pid_ <= 0) return std::nullopt;
  ::kill(pid_, signal);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      drain();
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    // Keep reading: a process that logs while it shuts down must not block on a full pipe.
    if (keep_reading) drain();
    ::usleep(10000);
  }
  if (signal != SIGKILL) return std::nullopt;
  ::waitpid(pid_, nullptr, 0);
  reaped_ = true;
  return std::nullopt;
}

NetnsWorld::NetnsWorld() {
  prefix_ = fmt::format("rm{}", ::getpid() % 100000);
  node_ = prefix_ + "-node";
  mustRun({"ip", "netns", "add", node_});
  namespaces_.push_back(node_);
  mustRun(inNetns(node_, {"ip", "link", "set", "lo", "up"}));
  mustRun(inNetns(node_, {"ip", "link", "add", "br0", "type", "bridge"}));
  mustRun(inNetns(node_, {"ip", "addr", "add", "10.244.0.1/16", "dev", "br0"}));
  mustRun(inNetns(node_, {"ip", "addr", "add", "fd00:244::1/64", "dev", "br0", "nodad"}));
  mustRun(inNetns(node_, {"ip", "link", "set", "br0", "up"}));
}

NetnsWorld::~NetnsWorld() {
  // Pods first (their veth ends vanish with them), then the node.
  for (auto it = namespaces_.rbegin(); it != namespaces_.rend(); ++it) {
    (void)runCommand({"ip", "netns", "delete", *it});
  }
}

Result<Pod> NetnsWorld::addPod(const std::string& name, const std::string& ipv4,
                               const std::string& ipv6) {
  int index = next_index_++;
  Pod pod{name, fmt::format("{}-p{}", prefix_, index), ipv4, ipv6};
  std::string host_if = fmt::format("{}h{}", prefix_, index);
  std::string peer_if = fmt::format("{}c{}", prefix_, index);
  try {
    mustRun({"ip", "netns", "add", pod.netns});
    namespaces_.push_back(pod.netns);
    mustRun(inNetns(pod.netns, {"sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0"}));
    mustRun(inNetns(pod.netns, {"ip", "link", "set", "lo", "up"}));
    mustRun(inNetns(node_, {"ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if,
                            "netns", pod.netns}));
    mustRun(inNetns(node_, {"ip", "link", "set", host_if, "master", "br0", "up"}));
    mustRun(inNetns(pod.netns, {"ip", "link", "set", peer_if, "name", "eth0"}));
    mustRun(inNetns(pod.netns, {"ip", "addr", "add", ipv4 + "/16", "dev", "eth0"}));
    if (!ipv6.empty()) {
      mustRun(inNetns(pod.netns, {"ip", "addr", "add", ipv6 + "/64", "dev", "eth0", "nodad"}));
    }
    mustRun(inNetns(pod.netns, {"ip", "link", "set", "eth0", "up"}));
    mustRun(inNetns(pod.netns, {"ip", "route", "add", "default", "via", "10.244.0.1"}));
    if (!ipv6.empty()) {
      mustRun(inNetns(pod.netns, {"ip", "-6", "route", "add", "default", "via", "fd00:244::1"}));
    }
  } catch (const std::exception& e) {
    return makeError(e.what());
  }
  return pod;
}

Result<CommandOutput> NetnsWorld::exec(const Pod& pod, const std::vector<std::string>& argv,
                                       const std::string& input) {
  return runCommand(inNetns(pod.netns, argv), input);
}

Result<CommandOutput> NetnsWorld::execAs(const Pod& pod, uint32_t uid, uint32_t gid,
                                         const std::vector<std::string>& argv) {
  std::vector<std::string> full = {"setpriv", fmt::format("--reuid={}", uid),
                                   fmt::format("--regid={}", gid), "--clear-groups"};
  full.insert(full.end(), argv.begin(), argv.end());
  return exec(pod, full);
}

std::unique_ptr<Process> NetnsWorld::spawn(const Pod& pod, const std::vector<std::string>& argv,
                                           std::optional<uint32_t> uid,
                                           std::optional<uint32_t> gid) {
  std::vector<std::string> full = {"ip", "netns", "exec", pod.netns};
  if (uid) {
    full.insert(full.end(), {"setpriv", fmt::format("--reuid={}", *uid),
                             fmt::format("--regid={}", gid.value_or(*uid)), "--clear-groups"});
  }
  full.insert(full.end(), argv.begin(), argv.end());
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return nullptr;
  // 1 MiB of room: a test reads stdout only when it looks for a line, and a process logging
  // every request (--access-log) must not stall on a full pipe in between.
  ::fcntl(fds[0], F_SETPIPE_SZ, 1 << 20);
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return nullptr;
  }
  if (pid == 0) {
    ::dup2(fds[1], 1);
    std::vector<char*> args;
    for (auto& a : full) args.push_back(a.data());
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
  return std::make_unique<Process>(pid, fds[0]);
}

std::unique_ptr<Process> NetnsWorld::serveProbe(const Pod& pod, const std::string& listen,
                                                const std::string& reply, bool http,
                                                std::optional<uint32_t> uid) {
  std::vector<std::string> argv = {probePath(), "serve", "--listen", listen, "--reply", reply};
  if (http) argv.push_back("--http");
  auto p = spawn(pod, argv, uid, uid);
  EXPECT_TRUE(p && p->waitForLine("ready")) << "remora-probe '" << reply << "' did not start";
  return p;
}

std::string binaryPath(const std::string& name) { return std::string(REMORA_BIN_DIR) + "/" + name; }
std::string probePath() { return REMORA_PROBE_PATH; }
bool runningAsRoot() { return ::geteuid() == 0; }

int tcpSocketIn(const std::string& netns_path) {
  int fd = -1;
  std::thread worker([&] {
    int ns = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) return;
    if (::setns(ns, CLONE_NEWNET) == 0) fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ::close(ns);
  });
  worker.join();
  return fd;
}

std::string readWholeFile(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace remora::test
