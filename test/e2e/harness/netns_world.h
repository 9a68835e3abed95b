#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/subprocess.h"

namespace remora::test {

// A process a test started inside a pod; killed (by its own PID) and reaped on destruction.
class Process {
 public:
  Process(pid_t pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // The read end of its stdout pipe (a test may shrink it with F_SETPIPE_SZ).
  int stdoutFd() const { return stdout_fd_; }
  // Reads stdout until a line containing `marker` shows up or the timeout passes.
  bool waitForLine(const std::string& marker, int timeout_ms = 5000);
  // Everything read from stdout so far.
  const std::string& output() const { return output_; }
  // Sends `signal` and waits up to timeout_ms; returns the exit code (128+sig when signalled),
  // or nullopt when it did not exit in time. Reads stdout meanwhile unless `keep_reading` is
  // false (a test of a process whose stdout nobody reads).
  std::optional<int> stop(int signal, int timeout_ms = 5000, bool keep_reading = true);
  // Reads whatever stdout has now without blocking.
  void drain();

 private:
  pid_t pid_;
  int stdout_fd_;
  std::string output_;
  bool reaped_ = false;
};

// The seed scenario's pod addresses (DESIGN.md).
inline constexpr const char* kFrontIp = "10.244.0.10";
inline constexpr const char* kFrontIp6 = "fd00:244::10";
inline constexpr const char* kBillV1 = "10.244.1.168";
inline constexpr const char* kBillV2 = "10.244.2.74";

struct Pod {
  std::string name;   // the name the test gave
  std::string netns;  // "ip netns" name
  std::string ipv4;   // address without prefix
  std::string ipv6;   // address without prefix
};

// DESIGN.md's isolated world: a "node" namespace holding a bridge, and one namespace per pod on
// it (IPv4 10.244.0.0/16 and IPv6 fd00:244::/64). The node has no link to the root namespace, so
// nothing can leave the machine. Pods route everything else to the node, which has no route
// onwards: uncaptured traffic to a service VIP fails locally. All names carry this process's PID,
// so parallel tests never collide; the destructor removes exactly what was made.
class NetnsWorld {
 public:
  NetnsWorld();
  ~NetnsWorld();
  NetnsWorld(const NetnsWorld&) = delete;
  NetnsWorld& operator=(const NetnsWorld&) = delete;

  // Adds a pod with the given addresses ("10.244.1.168"; ipv6 may be empty).
  Result<Pod> addPod(const std::string& name, const std::string& ipv4,
                     const std::string& ipv6 = {});
  // Runs argv inside the pod's netns and waits for it.
  Result<CommandOutput> exec(const Pod& pod, const std::vector<std::string>& argv,
                             const std::string& input = {});
  // Same, as the given uid/gid (setpriv).
  Result<CommandOutput> execAs(const Pod& pod, uint32_t uid, uint32_t gid,
                               const std::vector<std::string>& argv);
  // Starts argv in the background inside the pod's netns, optionally as uid/gid.
  std::unique_ptr<Process> spawn(const Pod& pod, const std::vector<std::string>& argv,
                                 std::optional<uint32_t> uid = std::nullopt,
                                 std::optional<uint32_t> gid = std::nullopt);
  // Starts `remora-probe serve --listen LISTEN --reply REPLY [--http]` in the pod (as uid/gid
  // when given) and waits until it listens; a probe that did not start fails the calling test.
  std::unique_ptr<Process> serveProbe(const Pod& pod, const std::string& listen,
                                      const std::string& reply, bool http = false,
                                      std::optional<uint32_t> uid = std::nullopt);
  const std::string& nodeNetns() const { return node_; }
  std::string netnsPath(const Pod& pod) const { return "/var/run/netns/" + pod.netns; }

 private:
  std::string prefix_;
  std::string node_;
  std::vector<std::string> namespaces_;
  int next_index_ = 0;
};

// Full paths of the built binaries.
std::string binaryPath(const std::string& name);  // e.g. "remora-init"
std::string probePath();

// Whether the test runs as root (e2e tests skip with a printed reason otherwise).
bool runningAsRoot();

// A TCP socket made inside the namespace at `netns_path` (on a thread of its own, since setns
// changes only the calling thread); -1 on failure. Usable from any thread afterwards.
int tcpSocketIn(const std::string& netns_path);
// The whole file as text ("" when it cannot be read).
std::string readWholeFile(const std::string& path);

}  // namespace remora::test
