#pragma once

// The access log's way out of the data path: workers hand finished lines to a bounded queue, and
// one writer thread prints them. A worker never waits for stdout; when the writer falls behind
// and the queue is full, the line is dropped (and the caller counts it).

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace remora::proxy {

class AccessLogQueue {
 public:
  // `write` runs on the writer thread, one call per line.
  AccessLogQueue(size_t capacity, std::function<void(const std::string&)> write);
  // Writes what is queued, then joins the writer.
  ~AccessLogQueue();
  AccessLogQueue(const AccessLogQueue&) = delete;
  AccessLogQueue& operator=(const AccessLogQueue&) = delete;

  // Any thread; never blocks on the writer (the lock is held only to append or to swap).
  // False when the queue is full and the line was dropped.
  bool push(std::string line);

 private:
  void run();

  const size_t capacity_;
  std::function<void(const std::string&)> write_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<std::string> pending_;
  bool writer_waiting_ = false;
  bool stop_ = false;
  std::thread writer_;
};

}  // namespace remora::proxy
