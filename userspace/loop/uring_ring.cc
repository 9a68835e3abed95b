#include "loop/uring_ring.h"

#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace remora::loop {
namespace {

std::optional<long> readLongFile(const char* path) {
  std::ifstream in(path);
  long value = 0;
  if (!(in >> value)) return std::nullopt;
  return value;
}

__kernel_timespec toTimespec(std::chrono::milliseconds d) {
  __kernel_timespec ts{};
  ts.tv_sec = d.count() / 1000;
  ts.tv_nsec = (d.count() % 1000) * 1000000;
  return ts;
}

}  // namespace

bool uringAbSwitch(std::string_view name) {
  static const std::string switches = [] {
    const char* env = std::getenv("REMORA_URING_AB");
    return env == nullptr ? std::string() : std::string(env);
  }();
  // A comma-separated list; `name` must be one whole item.
  std::string_view rest = switches;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    if (rest.substr(0, comma) == name) return true;
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return false;
}

bool Completion::more() const { return (flags & IORING_CQE_F_MORE) != 0; }
bool Completion::hasBuffer() const { return (flags & IORING_CQE_F_BUFFER) != 0; }
uint16_t Completion::bufferId() const {
  return static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
}

IoUringEnvironment readIoUringEnvironment() {
  IoUringEnvironment env;
  if (auto v = readLongFile("/proc/sys/kernel/io_uring_disabled")) {
    env.disabled_sysctl = static_cast<int>(*v);
  }
  env.allowed_group = readLongFile("/proc/sys/kernel/io_uring_group");
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Seccomp:", 0) == 0) {
      std::istringstream value(line.substr(8));
      value >> env.seccomp_mode;  // 0 (none) when the field is unreadable
    }
  }
  if (env.allowed_group && *env.allowed_group >= 0) {
    gid_t groups[256];
    int n = getgroups(256, groups);
    env.in_allowed_group = getegid() == static_cast<gid_t>(*env.allowed_group);
    for (int i = 0; i < n; ++i) {
      if (groups[i] == static_cast<gid_t>(*env.allowed_group)) env.in_allowed_group = true;
    }
  }
  return env;
}

std::string explainSetupFailure(int err, const IoUringEnvironment& env) {
  const std::string head = fmt::format("io_uring is unavailable: io_uring_setup failed: {} ({})",
                                       std::strerror(err), err);
  const std::string seccomp_fix =
      "Fix: give the proxy container a seccomp profile that allows io_uring_setup, "
      "io_uring_enter and io_uring_register (docs/PROXY.md has one; in Kubernetes set "
      "securityContext.seccompProfile to that Localhost profile, or to Unconfined).";
  if (err == EPERM || err == EACCES) {
    if (env.disabled_sysctl && *env.disabled_sysctl == 2) {
      return head +
             ". Cause: the host disables io_uring for everyone (kernel.io_uring_disabled=2). "
             "Fix: on the node, sysctl -w kernel.io_uring_disabled=0 (or 1 together with "
             "kernel.io_uring_group set to the proxy's group).";
    }
    if (env.disabled_sysctl && *env.disabled_sysctl == 1 && !env.in_allowed_group) {
      return head + fmt::format(
                        ". Cause: kernel.io_uring_disabled=1 allows io_uring only to "
                        "CAP_SYS_ADMIN or to members of kernel.io_uring_group ({}). Fix: run "
                        "the proxy with that group as a supplementary group (pod "
                        "securityContext.supplementalGroups), or set "
                        "kernel.io_uring_disabled=0 on the node.",
                        env.allowed_group ? std::to_string(*env.allowed_group) : "unset");
    }
    if (env.seccomp_mode == 2) {
      return head +
             ". Cause: a seccomp filter (the container runtime's default profile) "
             "refuses the io_uring syscalls. " +
             seccomp_fix;
    }
    return head +
           ". Cause: the kernel or a security module (seccomp, SELinux, AppArmor) "
           "refused io_uring. " +
           seccomp_fix;
  }
  if (err == ENOSYS) {
    if (env.seccomp_mode == 2) {
      return head + ". Cause: a seccomp filter answers ENOSYS for the io_uring syscalls. " +
             seccomp_fix;
    }
    return head +
           ". Cause: this kernel was built without io_uring (CONFIG_IO_URING). "
           "Fix: run on a Linux >= 6.1 kernel with io_uring enabled.";
  }
  if (err == ENOMEM) {
    return head +
           ". Cause: not enough lockable memory for the ring. Fix: raise the "
           "memlock limit (ulimit -l) or lower --ring-entries / --buffer-count.";
  }
  if (err == EINVAL) {
    return head +
           ". Cause: the kernel rejected every set of setup flags tried (it is older "
           "than 5.19). Fix: run on a Linux >= 6.1 kernel.";
  }
  return head + ". Fix: check the kernel version (>= 6.1) and the container's seccomp profile.";
}

SetupChoice chooseSetupFlags(const std::function<int(unsigned flags)>& try_setup) {
  struct Attempt {
    unsigned flags;
    const char* name;
  };
  static constexpr Attempt kAttempts[] = {
      {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
       "SINGLE_ISSUER|DEFER_TASKRUN"},
      {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
       "SINGLE_ISSUER|COOP_TASKRUN"},
      {IORING_SETUP_SUBMIT_ALL, "SUBMIT_ALL"},
      {0, "no optional flags"},
  };
  SetupChoice choice;
  for (const Attempt& attempt : kAttempts) {
    choice.flags = attempt.flags;
    choice.rc = try_setup(attempt.flags);
    if (choice.rc == 0) {
      if (&attempt != &kAttempts[0]) {
        choice.fallback_note =
            fmt::format("the kernel refused io_uring setup flags {}; running with {}",
                        kAttempts[0].name, attempt.name);
      }
      return choice;
    }
    if (choice.rc != -EINVAL) return choice;  // only "unknown flag" is worth another try
  }
  return choice;
}

Result<std::unique_ptr<UringRing>> UringRing::create(const RingOptions& options) {
  std::unique_ptr<UringRing> ring(new UringRing());
  SetupChoice choice = chooseSetupFlags([&](unsigned flags) {
    io_uring_params params{};
    params.flags = flags | IORING_SETUP_CQSIZE;
    params.cq_entries = options.cq_entries;
    return io_uring_queue_init_params(options.sq_entries, &ring->ring_, &params);
  });
  if (choice.rc != 0) {
    return Error{-choice.rc, explainSetupFailure(-choice.rc, readIoUringEnvironment())};
  }
  ring->fallback_note_ = std::move(choice.fallback_note);
  ring->ring_ready_ = true;
  // 1 on success; a kernel before 5.18 (EINVAL) or a thread with all 16 slots taken (EBUSY)
  // leaves the ring on its plain fd, which works the same.
  if (options.register_ring_fd && !uringAbSwitch("ring-fd-off")) {
    ring->ring_fd_registered_ = io_uring_register_ring_fd(&ring->ring_) == 1;
  }
  if (options.buffer_count > 0) {
    ring->relay_.group = 0;
    ring->relay_.first_id = 0;
    if (auto r = ring->setupPool(ring->relay_, options.buffer_count, options.buffer_size); !r) {
      return r.error();
    }
    if (options.small_buffer_count > 0) {
      ring->small_.group = 1;
      ring->small_.first_id = static_cast<uint16_t>(options.buffer_count);
      if (options.buffer_count + options.small_buffer_count > 65536) {
        return makeError("buffer count plus small buffer count must be <= 65536");
      }
      auto r = ring->setupPool(ring->small_, options.small_buffer_count, options.small_buffer_size);
      if (!r) return r.error();
    }
  }
  return ring;
}

Result<void> UringRing::setupPool(Pool& pool, unsigned count, unsigned size) {
  if ((count & (count - 1)) != 0 || count > 32768) {
    return makeError(fmt::format("buffer count {} must be a power of two <= 32768", count));
  }
  pool.count = count;
  pool.size = size;
  pool.ring_bytes = sizeof(io_uring_buf) * count;
  void* br =
      mmap(nullptr, pool.ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (br == MAP_FAILED) return errnoError("mmap buffer ring");
  pool.ring = static_cast<io_uring_buf_ring*>(br);
  // The buffers themselves are touched only when the kernel fills them, so idle memory stays
  // small however many are configured.
  pool.memory_bytes = size_t{count} * size;
  void* mem = mmap(nullptr, pool.memory_bytes, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) return errnoError("mmap provided buffers");
  pool.memory = static_cast<char*>(mem);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(pool.ring);
  reg.ring_entries = count;
  reg.bgid = pool.group;
  int rc = io_uring_register_buf_ring(&ring_, &reg, 0);
  if (rc != 0) {
    pool.ring_bytes = 0;
    munmap(pool.ring, sizeof(io_uring_buf) * count);
    pool.ring = nullptr;
    return Error{-rc, fmt::format("io_uring_register_buf_ring: {} (kernel >= 5.19 needed)",
                                  std::strerror(-rc))};
  }
  io_uring_buf_ring_init(pool.ring);
  for (unsigned i = 0; i < count; ++i) recycleBuffer(static_cast<uint16_t>(pool.first_id + i));
  publish(pool);
  return {};
}

void UringRing::publish(Pool& pool) {
  if (pool.pending == 0) return;
  io_uring_buf_ring_advance(pool.ring, static_cast<int>(pool.pending));
  pool.available += pool.pending;
  pool.pending = 0;
}

UringRing::~UringRing() {
  if (ring_ready_) {
    for (Pool* pool : {&relay_, &small_}) {
      if (pool->ring != nullptr) io_uring_unregister_buf_ring(&ring_, pool->group);
    }
    // Frees the thread's slot (io_uring_queue_exit does not in every liburing version).
    if (ring_fd_registered_) io_uring_unregister_ring_fd(&ring_);
    io_uring_queue_exit(&ring_);
  }
  for (Pool* pool : {&relay_, &small_}) {
    if (pool->ring != nullptr) munmap(pool->ring, pool->ring_bytes);
    if (pool->memory != nullptr) munmap(pool->memory, pool->memory_bytes);
  }
}

io_uring_sqe* UringRing::sqe(unsigned needed) {
  if (backlog_.empty() && io_uring_sq_space_left(&ring_) < needed) {
    int rc = io_uring_submit(&ring_);
    if (rc < 0) {
      // EBUSY (completions overflowing) or ENOMEM: nothing was consumed. Keep the SQEs to come
      // in the backlog; the next submitAndDispatch reaps completions and flushes it.
      ++submit_failures_;
      if (submit_failures_ == 1) {
        fmt::print(stderr, "io_uring_submit: {}; queueing operations until the next wait\n",
                   std::strerror(-rc));
      }
    }
    // Submitted SQEs have been read by the kernel, timespecs included (a failure read none of
    // them, but those SQEs stay queued and their timespecs are still needed).
    if (rc >= 0) timespecs_.clear();
  }
  if (!backlog_.empty() || io_uring_sq_space_left(&ring_) < needed) {
    backlog_.emplace_back();
    return &backlog_.back();
  }
  return io_uring_get_sqe(&ring_);
}

bool UringRing::flushBacklog() {
  while (!backlog_.empty()) {
    // A linked chain enters the SQ whole: links never cross a submission.
    size_t chain = 1;
    while (chain < backlog_.size() &&
           (backlog_[chain - 1].flags & (IOSQE_IO_LINK | IOSQE_IO_HARDLINK)) != 0) {
      ++chain;
    }
    if (io_uring_sq_space_left(&ring_) < chain) {
      int rc = io_uring_submit(&ring_);
      if (rc < 0 || io_uring_sq_space_left(&ring_) < chain) return false;
    }
    for (size_t i = 0; i < chain; ++i) {
      *io_uring_get_sqe(&ring_) = backlog_.front();
      backlog_.pop_front();
    }
  }
  return true;
}

__kernel_timespec* UringRing::stash(std::chrono::milliseconds duration) {
  timespecs_.push_back(std::make_unique<__kernel_timespec>(toTimespec(duration)));
  return timespecs_.back().get();
}

void UringRing::acceptMultishot(int listen_fd, uint64_t user_data) {
  io_uring_sqe* s = sqe();
  io_uring_prep_multishot_accept(s, listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(s, user_data);
}

void UringRing::recvMultishot(int fd, uint64_t user_data, uint32_t max_bytes, BufferGroup group) {
  io_uring_sqe* s = sqe();
  io_uring_prep_recv_multishot(s, fd, nullptr, max_bytes, 0);
  s->flags |= IOSQE_BUFFER_SELECT;
  s->buf_group = group == BufferGroup::kSmall && small_.count > 0 ? small_.group : relay_.group;
  io_uring_sqe_set_data64(s, user_data);
}

void UringRing::recv(int fd, uint64_t user_data) {
  io_uring_sqe* s = sqe();
  io_uring_prep_recv(s, fd, nullptr, relay_.size, 0);
  s->flags |= IOSQE_BUFFER_SELECT;
  s->buf_group = relay_.group;
  io_uring_sqe_set_data64(s, user_data);
}

void UringRing::read(int fd, std::span<char> into, uint64_t user_data) {
  io_uring_sqe* s = sqe();
  io_uring_prep_read(s, fd, into.data(), static_cast<unsigned>(into.size()), 0);
  io_uring_sqe_set_data64(s, user_data);
}

void UringRing::send(int fd, std::span<const char> data, uint64_t user_data) {
  io_uring_sqe* s = sqe();
  io_uring_prep_send(s, fd, data.data(), data.size(), MSG_NOSIGNAL);
  io_uring_sqe_set_data64(s, user_data);
}

void UringRing::sendMessage(int fd, const msghdr* message, uint64_t user_data) {
  io_uring_sqe* s = sqe();
  io_uring_prep_sendmsg(s, fd, message, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(s, user_data);
}

void UringRing::connect(int fd, const sockaddr* address, socklen_t length,
                        std::chrono::milliseconds timeout, uint64_t user_data) {
  io_uring_sqe* s = sqe(2);
  io_uring_prep_connect(s, fd, address, length);
  io_uring_sqe_set_data64(s, user_data);
  s->flags |= IOSQE_IO_LINK;
  io_uring_sqe* t = sqe();
  io_uring_prep_link_timeout(t, stash(timeout), 0);
  io_uring_sqe_set_data64(t, kIgnoredUserData);
}

void UringRing::timeout(std::chrono::milliseconds after, uint64_t user_data) {
  io_uring_sqe* s = sqe();
  io_uring_prep_timeout(s, stash(after), 0, 0);
  io_uring_sqe_set_data64(s, user_data);
}

void UringRing::cancel(uint64_t target, uint64_t user_data) {
  io_uring_sqe* s = sqe();
  io_uring_prep_cancel64(s, target, 0);
  io_uring_sqe_set_data64(s, user_data);
}

void UringRing::poll(int fd, uint32_t events, uint64_t user_data) {
  io_uring_sqe* s = sqe();
  io_uring_prep_poll_add(s, fd, events);
  io_uring_sqe_set_data64(s, user_data);
}

void UringRing::shutdown(int fd, int how, uint64_t user_data) {
  io_uring_sqe* s = sqe();
  io_uring_prep_shutdown(s, fd, how);
  io_uring_sqe_set_data64(s, user_data);
}

void UringRing::teardown(int fd, uint64_t user_data) {
  io_uring_sqe* s = sqe(3);
  io_uring_prep_cancel_fd(s, fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(s, user_data);
  s->flags |= IOSQE_IO_HARDLINK;
  s = sqe();
  io_uring_prep_shutdown(s, fd, SHUT_RDWR);
  io_uring_sqe_set_data64(s, user_data);
  s->flags |= IOSQE_IO_HARDLINK;
  s = sqe();
  io_uring_prep_close(s, fd);
  io_uring_sqe_set_data64(s, user_data);
}

void UringRing::shutdownAndClose(int fd, uint64_t user_data) {
  io_uring_sqe* s = sqe(2);
  io_uring_prep_shutdown(s, fd, SHUT_RDWR);
  io_uring_sqe_set_data64(s, user_data);
  s->flags |= IOSQE_IO_HARDLINK;
  s = sqe();
  io_uring_prep_close(s, fd);
  io_uring_sqe_set_data64(s, user_data);
}

void UringRing::close(int fd, uint64_t user_data) {
  io_uring_sqe* s = sqe();
  io_uring_prep_close(s, fd);
  io_uring_sqe_set_data64(s, user_data);
}

std::span<char> UringRing::buffer(uint16_t id) {
  Pool& pool = poolOf(id);
  return {pool.memory + size_t{static_cast<uint16_t>(id - pool.first_id)} * pool.size, pool.size};
}

void UringRing::recycleBuffer(uint16_t id) {
  Pool& pool = poolOf(id);
  const size_t index = static_cast<uint16_t>(id - pool.first_id);
  io_uring_buf_ring_add(pool.ring, pool.memory + index * pool.size, pool.size, id,
                        io_uring_buf_ring_mask(pool.count), static_cast<int>(pool.pending));
  ++pool.pending;
}

Result<int> UringRing::submitAndDispatch(CompletionHandler& handler,
                                         std::chrono::milliseconds max_wait) {
  publish(relay_);
  if (small_.ring != nullptr) publish(small_);
  // What could not be submitted earlier goes first; if it still does not fit, do not wait
  // long: reap completions, which is what frees the kernel to take more.
  if (!flushBacklog()) max_wait = std::chrono::milliseconds(1);
  io_uring_cqe* first = nullptr;
  __kernel_timespec ts = toTimespec(max_wait);
  int rc = io_uring_submit_and_wait_timeout(&ring_, &first, 1, max_wait.count() < 0 ? nullptr : &ts,
                                            nullptr);
  if ((rc >= 0 || rc == -ETIME) && backlog_.empty()) timespecs_.clear();
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY) {
    return Error{-rc, fmt::format("io_uring_submit_and_wait: {}", std::strerror(-rc))};
  }
  unsigned head = 0;
  unsigned count = 0;
  io_uring_cqe* cqe = nullptr;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    ++count;
    Completion c{cqe->user_data, cqe->res, cqe->flags};
    if (c.hasBuffer()) --poolOf(c.bufferId()).available;
    handler.onCompletion(c);
  }
  io_uring_cq_advance(&ring_, count);
  handler.afterBatch();
  return static_cast<int>(count);
}

}  // namespace remora::loop
