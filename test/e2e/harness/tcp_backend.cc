#include "tcp_backend.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "netns_world.h"

namespace remora::test {

TcpBackend::TcpBackend(const std::string& netns_path, uint16_t port, int backlog, Serve serve)
    : serve_(std::move(serve)) {
  listen_fd_ = tcpSocketIn(netns_path);
  if (listen_fd_ < 0) return;
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  ok_ = ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0 &&
        ::listen(listen_fd_, backlog) == 0;
  if (ok_) acceptor_ = std::thread([this] { acceptLoop(); });
}

TcpBackend::~TcpBackend() {
  stop_ = true;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
  }
  if (acceptor_.joinable()) acceptor_.join();
  for (auto& t : threads_) t.join();
  for (int fd : fds_) ::close(fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

void TcpBackend::release(int fd) {
  std::lock_guard<std::mutex> lock(mu_);
  fds_.erase(std::remove(fds_.begin(), fds_.end(), fd), fds_.end());
  ::close(fd);
}

void TcpBackend::acceptLoop() {
  while (!stop_) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (stop_) return;
      continue;
    }
    ++accepted_;
    std::lock_guard<std::mutex> lock(mu_);
    fds_.push_back(fd);
    threads_.emplace_back([this, fd] { serve_(fd); });
  }
}

}  // namespace remora::test
