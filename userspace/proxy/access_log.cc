#include "proxy/access_log.h"

namespace remora::proxy {

AccessLogQueue::AccessLogQueue(size_t capacity, std::function<void(const std::string&)> write)
    : capacity_(capacity), write_(std::move(write)) {
  pending_.reserve(capacity_);
  writer_ = std::thread([this] { run(); });
}

AccessLogQueue::~AccessLogQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_one();
  writer_.join();
}

bool AccessLogQueue::push(std::string line) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_.size() >= capacity_) return false;
    pending_.push_back(std::move(line));
    wake = writer_waiting_;
  }
  if (wake) wake_.notify_one();
  return true;
}

void AccessLogQueue::run() {
  std::vector<std::string> batch;
  batch.reserve(capacity_);
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    writer_waiting_ = true;
    wake_.wait(lock, [this] { return stop_ || !pending_.empty(); });
    writer_waiting_ = false;
    if (pending_.empty() && stop_) return;
    batch.swap(pending_);
    lock.unlock();
    for (const std::string& line : batch) write_(line);
    batch.clear();
    lock.lock();
  }
}

}  // namespace remora::proxy
