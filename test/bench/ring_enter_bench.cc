// Issue 12 item 3: what a registered ring fd (io_uring_register_ring_fd) saves per
// io_uring_enter. Two rings on this thread, one registered and one not, take turns in blocks of
// enters, each enter submitting one cancel that finds nothing and reaping its completion. A
// second thread stays alive throughout, so the fd table is shared as in the proxy (that is what
// makes the plain fd lookup take a reference). Prints ns per enter of each, the median of the
// blocks, and the ratio; the machine's load moves both alike since they alternate.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "loop/uring_ring.h"

namespace {

using remora::loop::Completion;
using remora::loop::CompletionHandler;
using remora::loop::RingOptions;
using remora::loop::UringRing;

class Count : public CompletionHandler {
 public:
  void onCompletion(const Completion& /*c*/) override { ++seen; }
  long seen = 0;
};

// ns per enter over `n` enters.
double block(UringRing& ring, int n) {
  Count count;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    ring.cancel(12345, 1);
    (void)ring.submitAndDispatch(count, std::chrono::milliseconds(-1));
  }
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / n;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int blocks = argc > 1 ? std::atoi(argv[1]) : 21;
  constexpr int kEnters = 20000;
  RingOptions options;
  options.buffer_count = 0;
  auto registered = UringRing::create(options);
  options.register_ring_fd = false;
  auto plain = UringRing::create(options);
  if (!registered || !plain) {
    fmt::print(stderr, "io_uring unavailable\n");
    return 1;
  }
  if (!(*registered)->ringFdRegistered()) {
    fmt::print(stderr, "this kernel cannot register a ring fd; nothing to compare\n");
    return 1;
  }
  std::atomic<bool> stop{false};
  std::thread other([&] {
    while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  });
  std::vector<double> with, without;
  for (int b = 0; b < blocks; ++b) {
    // Alternating which goes first, so a drift in the load favours neither.
    if (b % 2 == 0) {
      with.push_back(block(**registered, kEnters));
      without.push_back(block(**plain, kEnters));
    } else {
      without.push_back(block(**plain, kEnters));
      with.push_back(block(**registered, kEnters));
    }
  }
  stop = true;
  other.join();
  const double w = median(with);
  const double wo = median(without);
  fmt::print(
      "io_uring_enter, {} blocks of {} (one cancel each; measured under contention): "
      "registered ring fd {:.0f} ns, plain fd {:.0f} ns, registered/plain {:.3f}x\n",
      blocks, kEnters, w, wo, w / wo);
  return 0;
}
