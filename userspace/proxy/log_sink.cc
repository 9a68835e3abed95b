#include "proxy/log_sink.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

namespace remora::proxy {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(100);

int64_t nowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::shared_ptr<QueuedLogSink>& installedSink() {
  static std::shared_ptr<QueuedLogSink> sink;
  return sink;
}

}  // namespace

QueuedLogSink::QueuedLogSink(int fd, size_t capacity) : fd_(fd), capacity_(capacity) {
  // A pipe's description is shared with whoever else writes to it, so its flags stay as they
  // are; a description of our own can be non-blocking. Anything else (file, tty, socket) is
  // written after poll() says it takes bytes, at most PIPE_BUF at a time.
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode)) {
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    own_fd_ = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (own_fd_ >= 0) fd_ = own_fd_;
  }
  pending_.reserve(capacity_ + access_capacity_);
  // The writer takes no signal: the proxy reads SIGTERM/SIGHUP through a signalfd, which works
  // only while every thread blocks them, and this thread is made before the control thread
  // blocks them.
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  writer_ = std::thread([this] { run(); });
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

QueuedLogSink::~QueuedLogSink() {
  stop(std::chrono::milliseconds(500));
  if (own_fd_ >= 0) ::close(own_fd_);
}

void QueuedLogSink::stop(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (!stopping_) {
      stopping_ = true;
      deadline_ns_.store(nowNs() + std::chrono::nanoseconds(grace).count(),
                         std::memory_order_relaxed);
    }
  }
  wake_.notify_one();
  if (writer_.joinable()) writer_.join();
}

void QueuedLogSink::sink_it_(const spdlog::details::log_msg& msg) {
  spdlog::memory_buf_t formatted;
  formatter_->format(msg, formatted);
  std::string line(formatted.data(), formatted.size());
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (stopping_ || pending_.size() - pending_access_ >= capacity_) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    pending_.push_back({std::move(line)});
  }
  wake_.notify_one();
}

bool QueuedLogSink::pushAccess(std::string line) {
  const auto at = spdlog::log_clock::now();
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (stopping_ || pending_access_ >= access_capacity_) return false;
    pending_.push_back({std::move(line), at, true});
    ++pending_access_;
  }
  wake_.notify_one();
  return true;
}

void QueuedLogSink::setAccessCapacity(size_t n) {
  std::lock_guard<std::mutex> lock(queue_mu_);
  access_capacity_ = n;
  pending_.reserve(capacity_ + access_capacity_);
}

void QueuedLogSink::formatAccess(const Entry& entry, std::string& scratch,
                                 spdlog::memory_buf_t& out) {
  scratch.assign("access ");
  scratch.append(entry.text);
  const spdlog::details::log_msg msg(entry.at, spdlog::source_loc{}, logger_name_,
                                     spdlog::level::info, scratch);
  out.clear();
  std::lock_guard<std::mutex> lock(mutex_);
  formatter_->format(msg, out);
}

bool QueuedLogSink::expired() const {
  const int64_t deadline = deadline_ns_.load(std::memory_order_relaxed);
  return deadline != 0 && nowNs() >= deadline;
}

bool QueuedLogSink::writeLine(std::string_view line) {
  size_t done = 0;
  while (done < line.size()) {
    if (expired()) return false;
    pollfd p{fd_, POLLOUT, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(kPollInterval.count()));
    if (ready < 0 && errno != EINTR) return false;
    if (ready <= 0) continue;
    if ((p.revents & (POLLERR | POLLNVAL)) != 0) return false;
    const size_t chunk = std::min<size_t>(line.size() - done, PIPE_BUF);
    const ssize_t n = ::write(fd_, line.data() + done, chunk);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return false;  // EPIPE and the like: the line is lost
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

void QueuedLogSink::run() {
  std::vector<Entry> batch;
  std::string scratch;
  spdlog::memory_buf_t formatted;
  std::unique_lock<std::mutex> lock(queue_mu_);
  batch.reserve(pending_.capacity());
  while (true) {
    wake_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
    if (pending_.empty()) return;  // stopping, and everything written
    batch.swap(pending_);
    pending_access_ = 0;
    lock.unlock();
    for (const Entry& entry : batch) {
      std::string_view line = entry.text;
      if (entry.access) {
        formatAccess(entry, scratch, formatted);
        line = std::string_view(formatted.data(), formatted.size());
      }
      if (!writeLine(line)) dropped_.fetch_add(1, std::memory_order_relaxed);
    }
    batch.clear();
    lock.lock();
    if (expired()) {
      dropped_.fetch_add(pending_.size(), std::memory_order_relaxed);
      pending_.clear();
      pending_access_ = 0;
      return;
    }
  }
}

uint64_t droppedLogLines() {
  const auto& sink = installedSink();
  return sink ? sink->dropped() : 0;
}

void installQueuedLogger(const std::string& name, const std::string& pattern,
                         size_t access_capacity) {
  auto sink = std::make_shared<QueuedLogSink>(STDOUT_FILENO, 8192);
  sink->setAccessCapacity(access_capacity);
  sink->setLoggerName(name);
  installedSink() = sink;
  auto logger = std::make_shared<spdlog::logger>(name, sink);
  logger->set_pattern(pattern);
  spdlog::set_default_logger(logger);
}

bool pushAccessLine(std::string line) {
  if (const auto& sink = installedSink()) return sink->pushAccess(std::move(line));
  spdlog::info("access {}", line);
  return true;
}

void stopQueuedLogger(std::chrono::milliseconds grace) {
  if (auto& sink = installedSink()) sink->stop(grace);
}

}  // namespace remora::proxy
