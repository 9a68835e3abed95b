#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace remora::test {

// An in-process TCP server inside a pod's namespace: it listens on 0.0.0.0:port (the socket is
// made in the netns by tcpSocketIn), accepts on a thread of its own and serves each connection
// on a thread running `serve(fd)`. The destructor stops it: it shuts the listener and every
// connection still open down (so blocked serve calls return), joins every thread and closes what
// is left. State that `serve` touches must outlive the TcpBackend.
class TcpBackend {
 public:
  using Serve = std::function<void(int fd)>;
  TcpBackend(const std::string& netns_path, uint16_t port, int backlog, Serve serve);
  ~TcpBackend();
  TcpBackend(const TcpBackend&) = delete;
  TcpBackend& operator=(const TcpBackend&) = delete;

  // Whether it listens.
  bool ok() const { return ok_; }
  // Connections accepted so far.
  size_t accepted() const { return accepted_.load(); }
  // True once the destructor began: endless serve loops check it.
  bool stopping() const { return stop_.load(); }
  // Closes fd now and forgets it (with a zero SO_LINGER set first, the close sends an RST).
  void release(int fd);

 private:
  void acceptLoop();

  Serve serve_;
  int listen_fd_ = -1;
  bool ok_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> accepted_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
};

}  // namespace remora::test
