#pragma once

// The proxy's log lines never make a thread wait for stdout. Every thread that logs (the control
// thread at SIGTERM, the workers) only formats its line and appends it to a bounded queue; one
// writer thread writes the queue to the descriptor. A full queue drops the line and counts it. A
// reader that stops reading (a full stdout pipe) therefore stalls only the writer thread, and at
// exit the writer gets a bounded time to finish before what is left is dropped: the proxy still
// drains and exits on SIGTERM.
//
// The access log shares the queue and the writer, with a bound of its own so a burst of access
// lines never crowds out the proxy's own messages: a worker hands over its line unformatted
// (pushAccess, a lock and an append), and the writer formats it with the logger's pattern.

#include <spdlog/details/log_msg.h>
#include <spdlog/sinks/base_sink.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
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
  // Lines dropped so far: queue full, or logged after stop(). Not the access lines pushAccess
  // refused (their caller counts those).
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

  // Queues an access-log line, logged at info as "access <line>" with the time of this call.
  // Never waits for the writer. False (the line dropped) when `access_capacity` access lines
  // are already waiting, or after stop().
  bool pushAccess(std::string line);
  void setAccessCapacity(size_t n);
  // The logger name the writer gives access lines (the pattern's %n).
  void setLoggerName(std::string name) { logger_name_ = std::move(name); }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}  // the writer writes as soon as the descriptor takes bytes

 private:
  void run();
  // Past the deadline stop() set: the writer gives up on what is left.
  bool expired() const;
  // Writes `line` whole unless the stop deadline passes first; false then.
  bool writeLine(std::string_view line);

  // A queued line: formatted already, or an access line the writer formats.
  struct Entry {
    std::string text;
    spdlog::log_clock::time_point at{};  // access lines: when they were pushed
    bool access = false;
  };
  // An access entry with the pattern applied (under base_sink's mutex, which guards the
  // formatter), into `out`.
  void formatAccess(const Entry& entry, std::string& scratch, spdlog::memory_buf_t& out);

  int fd_;
  int own_fd_ = -1;  // the non-blocking reopening of a pipe, or -1
  const size_t capacity_;
  size_t access_capacity_ = 8192;
  std::string logger_name_;
  std::atomic<uint64_t> dropped_{0};
  std::mutex queue_mu_;
  std::condition_variable wake_;
  std::vector<Entry> pending_;
  size_t pending_access_ = 0;  // access entries in pending_
  bool stopping_ = false;
  std::atomic<int64_t> deadline_ns_{0};  // steady clock; 0 until stop()
  std::thread writer_;
};

// Lines the proxy's log sink dropped so far (0 before installQueuedLogger()).
uint64_t droppedLogLines();
// Makes a logger named `name` writing through a QueuedLogSink to stdout the default logger;
// at most `access_capacity` access lines wait in it (--access-log-queue).
void installQueuedLogger(const std::string& name, const std::string& pattern,
                         size_t access_capacity);
// Hands an access-log line to the installed sink (QueuedLogSink::pushAccess); without one (a
// program that never installed it) logs it at once. False when the line was dropped.
bool pushAccessLine(std::string line);
// Stops the default logger's writer after at most `grace` (call once, before exiting).
void stopQueuedLogger(std::chrono::milliseconds grace);

}  // namespace remora::proxy
