#pragma once

#include <liburing.h>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "loop/ring.h"
#include "loop/user_data.h"

namespace remora::loop {

struct RingOptions {
  unsigned sq_entries = 256;
  unsigned cq_entries = 8192;  // large: multishot ops post many completions per submission
  // Provided buffers (a power of two; 0: a control ring without a buffer group). 64 KiB each:
  // bulk relay then costs a quarter of the recv completions (and of the ACKs each recv sends)
  // that 16 KiB buffers did, about 30 % less proxy CPU per byte; same 16 MiB address space,
  // touched only as the kernel fills buffers.
  unsigned buffer_count = 256;
  unsigned buffer_size = 65536;
  // BufferGroup::kSmall (a power of two; 0: none): receives whose bytes are copied out in the
  // completion that brought them (the L7 path). A pool this small is cycled through quickly, so
  // the kernel's copy lands in memory still in the cache; in the 16 MiB relay pool each small
  // receive went to a buffer untouched for hundreds of receives, which doubled the copy's cost
  // (docs/HTTP.md, "Per-request cost").
  unsigned small_buffer_count = 64;
  unsigned small_buffer_size = 16384;
  // Registers the ring's fd with the creating thread (io_uring_register_ring_fd, Linux 5.18):
  // every io_uring_enter then names the ring by its slot in the thread's table and skips the
  // fd lookup and its reference count, an atomic on the shared file of a multi-threaded
  // process. Where the kernel refuses, the ring works as before.
  bool register_ring_fd = true;
};

// What the host says about io_uring, read from /proc; the input to explainSetupFailure.
struct IoUringEnvironment {
  std::optional<int> disabled_sysctl;  // kernel.io_uring_disabled, absent on older kernels
  std::optional<long> allowed_group;   // kernel.io_uring_group
  int seccomp_mode = 0;                // /proc/self/status "Seccomp:" (2 = filter)
  bool in_allowed_group = false;
};
IoUringEnvironment readIoUringEnvironment();

// The message a failed io_uring_setup deserves: the cause, as far as the environment tells it,
// and the fix. `err` is the positive errno.
std::string explainSetupFailure(int err, const IoUringEnvironment& env);

// The setup flags a ring ends up with: the preferred SINGLE_ISSUER|DEFER_TASKRUN first, then
// plainer sets, moving on only when the kernel answers EINVAL (an unknown flag). `try_setup`
// returns 0 or a negative errno; rc is the last one.
struct SetupChoice {
  int rc = 0;
  unsigned flags = 0;
  std::string fallback_note;  // empty when the preferred flags were accepted
};
SetupChoice chooseSetupFlags(const std::function<int(unsigned flags)>& try_setup);

// The liburing implementation of Ring. Create it on the thread that will drive it: with
// SINGLE_ISSUER the creating task is the only one allowed to submit.
class UringRing final : public Ring {
 public:
  // Fails with explainSetupFailure's message when io_uring cannot be set up at all. When the
  // kernel refuses SINGLE_ISSUER|DEFER_TASKRUN, falls back to plainer flags and says so in
  // fallbackNote().
  static Result<std::unique_ptr<UringRing>> create(const RingOptions& options);
  ~UringRing() override;
  UringRing(const UringRing&) = delete;
  UringRing& operator=(const UringRing&) = delete;

  // Empty when the preferred setup flags were accepted.
  const std::string& fallbackNote() const { return fallback_note_; }
  int ringFd() const { return ring_.ring_fd; }
  // Whether io_uring_enter goes through the registered ring fd (RingOptions::register_ring_fd).
  bool ringFdRegistered() const { return ring_fd_registered_; }

  void acceptMultishot(int listen_fd, uint64_t user_data) override;
  void recvMultishot(int fd, uint64_t user_data, uint32_t max_bytes, BufferGroup group) override;
  void recv(int fd, uint64_t user_data) override;
  void read(int fd, std::span<char> into, uint64_t user_data) override;
  void send(int fd, std::span<const char> data, uint64_t user_data) override;
  void sendMessage(int fd, const msghdr* message, uint64_t user_data) override;
  void connect(int fd, const sockaddr* address, socklen_t length, std::chrono::milliseconds timeout,
               uint64_t user_data) override;
  void timeout(std::chrono::milliseconds after, uint64_t user_data) override;
  void cancel(uint64_t target, uint64_t user_data) override;
  void shutdown(int fd, int how, uint64_t user_data) override;
  void teardown(int fd, uint64_t user_data) override;
  void shutdownAndClose(int fd, uint64_t user_data) override;
  void poll(int fd, uint32_t events, uint64_t user_data) override;
  void close(int fd, uint64_t user_data) override;
  std::span<char> buffer(uint16_t id) override;
  void recycleBuffer(uint16_t id) override;
  size_t buffersAvailable() const override { return relay_.available + relay_.pending; }
  Result<int> submitAndDispatch(CompletionHandler& handler,
                                std::chrono::milliseconds max_wait) override;
  // io_uring_submit calls that failed while the SQ was full (their SQEs waited in backlog_).
  uint64_t submitFailures() const { return submit_failures_; }

 private:
  UringRing() = default;
  // One provided-buffer group: its ring, its memory, and the range of buffer ids it owns (ids
  // are unique across groups, so a completion's id alone says where the bytes are).
  struct Pool {
    uint16_t group = 0;
    uint16_t first_id = 0;
    unsigned count = 0;
    unsigned size = 0;
    io_uring_buf_ring* ring = nullptr;
    size_t ring_bytes = 0;
    char* memory = nullptr;
    size_t memory_bytes = 0;
    unsigned pending = 0;  // recycled, published with the next submit
    size_t available = 0;
  };
  Result<void> setupPool(Pool& pool, unsigned count, unsigned size);
  Pool& poolOf(uint16_t id) { return id >= small_.first_id && small_.count > 0 ? small_ : relay_; }
  void publish(Pool& pool);
  // An SQE, submitting what is queued first when the SQ is full; `needed` consecutive SQEs
  // are guaranteed to be available (for linked chains). When that submit fails, the SQEs come
  // from backlog_ instead and enter the SQ, chains whole, before the next submit.
  io_uring_sqe* sqe(unsigned needed = 1);
  // Moves backlog_ into the SQ as far as it fits; false when some of it is still waiting.
  bool flushBacklog();
  __kernel_timespec* stash(std::chrono::milliseconds duration);

  io_uring ring_{};
  bool ring_ready_ = false;
  bool ring_fd_registered_ = false;
  std::string fallback_note_;
  Pool relay_;
  Pool small_;
  // Timespecs the kernel reads when it consumes the SQE; kept until the next submit.
  std::vector<std::unique_ptr<__kernel_timespec>> timespecs_;
  // SQEs prepared while the SQ was full and could not be submitted; a deque so pointers handed
  // out stay valid while more are added.
  std::deque<io_uring_sqe> backlog_;
  uint64_t submit_failures_ = 0;
};

}  // namespace remora::loop
