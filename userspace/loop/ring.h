#pragma once

// The small interface between the proxy and io_uring. The proxy queues operations and handles
// completions through one dispatch point; the liburing implementation (uring_ring.h) and the
// unit tests' fake ring both sit behind it.

#include <sys/socket.h>
#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "common/result.h"

namespace remora::loop {

// REMORA_URING_AB: a comma-separated list of switches the benchmarks use to turn io_uring path
// changes off, one at a time, in the same build (docs/PROXY.md, "io_uring path (issue 12 item
// 3)"): `ring-fd-off`, `getsockname`; `l7-oneshot` (the L7 path's one-shot reads) and
// `buffer-stagger-off` (provided buffers exactly 64 KiB apart), docs/HTTP.md "Per-request
// cost". Not a user setting; read once per process.
bool uringAbSwitch(std::string_view name);

// The provided-buffer group a receive takes from: the relay's large buffers (kRelay, the
// default), or a small pool for receives copied out at once (kSmall). Buffer ids are unique
// across groups.
enum class BufferGroup : uint8_t { kRelay, kSmall };

struct Completion {
  uint64_t user_data = 0;
  int32_t res = 0;
  uint32_t flags = 0;

  // A multishot operation stays armed after this completion.
  bool more() const;
  // The completion carries a provided buffer that must go back through Ring::recycleBuffer.
  bool hasBuffer() const;
  uint16_t bufferId() const;
};

// Receives every completion of one ring, in order, on the ring's own thread.
class CompletionHandler {
 public:
  virtual ~CompletionHandler() = default;
  virtual void onCompletion(const Completion& completion) = 0;
  // Called once after each batch of completions, before the next submit-and-wait.
  virtual void afterBatch() {}
};

// One ring, owned and driven by a single thread. Every queueing call is non-blocking and
// takes effect at the next wait(); pointers passed in must stay valid until the operation's
// final completion (for `connect` and `timeout` only until the next wait()).
class Ring {
 public:
  virtual ~Ring() = default;

  // Multishot accept: one completion per connection (res = new fd), more() while armed.
  virtual void acceptMultishot(int listen_fd, uint64_t user_data) = 0;
  // Multishot recv into the provided buffers of `group`: res = bytes (0 = EOF), -ENOBUFS when
  // the buffers ran out (the operation ends; recycle buffers and re-arm). `max_bytes` bounds
  // each completion (0: a whole buffer).
  virtual void recvMultishot(int fd, uint64_t user_data, uint32_t max_bytes, BufferGroup group) = 0;
  // One-shot recv into one provided buffer: res = bytes (0 = EOF), -ENOBUFS when none is free.
  virtual void recv(int fd, uint64_t user_data) = 0;
  // One-shot read or recv into caller memory.
  virtual void read(int fd, std::span<char> into, uint64_t user_data) = 0;
  virtual void send(int fd, std::span<const char> data, uint64_t user_data) = 0;
  // One send gathering several buffers (sendmsg); res = bytes sent, possibly fewer than the
  // total. `message` and the iovecs it points at must stay valid until the completion.
  virtual void sendMessage(int fd, const msghdr* message, uint64_t user_data) = 0;
  // Connect with a linked timeout: res = -ECANCELED when the timeout fired first.
  virtual void connect(int fd, const sockaddr* address, socklen_t length,
                       std::chrono::milliseconds timeout, uint64_t user_data) = 0;
  // res = -ETIME when it fires, -ECANCELED when cancelled.
  virtual void timeout(std::chrono::milliseconds after, uint64_t user_data) = 0;
  // Cancels the operation tagged `target` (res of this op: 0, -ENOENT or -EALREADY).
  virtual void cancel(uint64_t target, uint64_t user_data) = 0;
  virtual void shutdown(int fd, int how, uint64_t user_data) = 0;
  // The explicit teardown of a socket as three hard-linked steps, each with its own completion
  // tagged user_data: cancel every operation on fd, shutdown(SHUT_RDWR), close.
  virtual void teardown(int fd, uint64_t user_data) = 0;
  // shutdown(SHUT_RDWR) then close, hard-linked, two completions tagged user_data. The shutdown
  // wakes whatever waits on the socket, so nothing needs cancelling (and no ring-wide scan).
  virtual void shutdownAndClose(int fd, uint64_t user_data) = 0;
  virtual void close(int fd, uint64_t user_data) = 0;
  // One-shot poll: res = the ready events among `events` (POLLERR and POLLHUP always count), or
  // -ECANCELED. A ring without poll support (a test fake) never completes it.
  virtual void poll(int /*fd*/, uint32_t /*events*/, uint64_t /*user_data*/) {}

  // Provided buffers (one group per ring).
  virtual std::span<char> buffer(uint16_t id) = 0;
  // Hands a buffer back to the kernel; published with the next wait().
  virtual void recycleBuffer(uint16_t id) = 0;
  // Buffers of the kRelay group the kernel can still fill.
  virtual size_t buffersAvailable() const = 0;

  // Submits everything queued and waits for at least one completion or `max_wait` (negative:
  // no limit), in one call; then dispatches the whole batch to `handler` and advances the CQ
  // once. Returns the number of completions handled.
  virtual Result<int> submitAndDispatch(CompletionHandler& handler,
                                        std::chrono::milliseconds max_wait) = 0;
};

}  // namespace remora::loop
