#pragma once

// The proxy's log lines never make a thread wait for stdout. Every thread that logs (the control
// thread at SIGTERM, the workers, the access-log writer) only formats its line and appends it to
// a bounded queue; one writer thread writes the queue to the descriptor. A full queue drops the
// line and counts it. A reader that stops reading (a full stdout pipe) therefore stalls only the
// writer thread, and at exit the writer gets a bounded time to finish before what is left is
// dropped: the proxy still drains and exits on SIGTERM.

#include <spdlog/sinks/base_sink.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace remora::proxy {

class QueuedLogSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // Writes to `fd` (not owned; a pipe gets a non-blocking description of its own).
  QueuedLogSink(int fd, size_t capacity);
  ~QueuedLogSink() override;
  QueuedLogSink(const QueuedLogSink&) = delete;
  QueuedLogSink& operator=(const QueuedLogSink&) = delete;

  // Gives the writer up to `grace` to write what is queued, then stops it; lines queued or
  // logged after that are dropped (and counted). Idempotent.
  void stop(std::chrono::milliseconds grace);
  // Lines dropped so far: queue full, or logged after stop().
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}  // the writer writes as soon as the descriptor takes bytes

 private:
  void run();
  // Past the deadline stop() set: the writer gives up on what is left.
  bool expired() const;
  // Writes `line` whole unless the stop deadline passes first; false then.
  bool writeLine(const std::string& line);

  int fd_;
  int own_fd_ = -1;  // the non-blocking reopening of a pipe, or -1
  const size_t capacity_;
  std::atomic<uint64_t> dropped_{0};
  std::mutex queue_mu_;
  std::condition_variable wake_;
  std::vector<std::string> pending_;
  bool stopping_ = false;
  std::atomic<int64_t> deadline_ns_{0};  // steady clock; 0 until stop()
  std::thread writer_;
};

// Lines the proxy's log sink dropped so far (0 before installQueuedLogger()).
uint64_t droppedLogLines();
// Makes a logger named `name` writing through a QueuedLogSink to stdout the default logger.
void installQueuedLogger(const std::string& name, const std::string& pattern);
// Stops the default logger's writer after at most `grace` (call once, before exiting).
void stopQueuedLogger(std::chrono::milliseconds grace);

}  // namespace remora::proxy
