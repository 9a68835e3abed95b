// The liburing Ring against the real kernel (no privileges needed), and the messages that
// explain why io_uring is unavailable.
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "loop/uring_ring.h"
#include "loop/user_data.h"
#include "proxy/socket_ops.h"

namespace remora::loop {
namespace {

TEST(ExplainSetupFailureTest, NamesTheSysctlWhenIoUringIsDisabled) {
  IoUringEnvironment env;
  env.disabled_sysctl = 2;
  std::string m = explainSetupFailure(EPERM, env);
  EXPECT_NE(m.find("kernel.io_uring_disabled=2"), std::string::npos) << m;
  EXPECT_NE(m.find("Fix:"), std::string::npos) << m;
}

TEST(ExplainSetupFailureTest, NamesTheGroupWhenRestrictedToOne) {
  IoUringEnvironment env;
  env.disabled_sysctl = 1;
  env.allowed_group = 1337;
  std::string m = explainSetupFailure(EPERM, env);
  EXPECT_NE(m.find("kernel.io_uring_group (1337)"), std::string::npos) << m;
  env.in_allowed_group = true;
  env.seccomp_mode = 2;
  EXPECT_NE(explainSetupFailure(EPERM, env).find("seccomp"), std::string::npos);
}

TEST(ExplainSetupFailureTest, BlamesSeccompAndPointsAtTheProfile) {
  IoUringEnvironment env;
  env.disabled_sysctl = 0;
  env.seccomp_mode = 2;
  for (int err : {EPERM, ENOSYS}) {
    std::string m = explainSetupFailure(err, env);
    EXPECT_NE(m.find("seccomp"), std::string::npos) << m;
    EXPECT_NE(m.find("io_uring_setup, io_uring_enter and io_uring_register"), std::string::npos);
    EXPECT_NE(m.find("docs/PROXY.md"), std::string::npos);
  }
  env.seccomp_mode = 0;
  EXPECT_NE(explainSetupFailure(ENOSYS, env).find("CONFIG_IO_URING"), std::string::npos);
  EXPECT_NE(explainSetupFailure(ENOMEM, env).find("memlock"), std::string::npos);
}

TEST(ChooseSetupFlagsTest, FallsBackOnlyOnEinvalAndSaysSo) {
  std::vector<unsigned> tried;
  auto no_defer = chooseSetupFlags([&](unsigned flags) {
    tried.push_back(flags);
    return (flags & IORING_SETUP_DEFER_TASKRUN) != 0 ? -EINVAL : 0;
  });
  EXPECT_EQ(no_defer.rc, 0);
  EXPECT_EQ(tried.size(), 2u);
  EXPECT_NE(no_defer.flags & IORING_SETUP_SINGLE_ISSUER, 0u);
  EXPECT_EQ(no_defer.flags & IORING_SETUP_DEFER_TASKRUN, 0u);
  EXPECT_NE(no_defer.fallback_note.find("DEFER_TASKRUN"), std::string::npos);

  auto preferred = chooseSetupFlags([](unsigned) { return 0; });
  EXPECT_TRUE(preferred.fallback_note.empty());
  EXPECT_NE(preferred.flags & IORING_SETUP_DEFER_TASKRUN, 0u);

  tried.clear();
  auto refused = chooseSetupFlags([&](unsigned flags) {
    tried.push_back(flags);
    return -EPERM;
  });
  EXPECT_EQ(refused.rc, -EPERM);
  EXPECT_EQ(tried.size(), 1u);  // EPERM is not about flags: no retry
}

// A child process installs a seccomp filter that refuses io_uring_setup with EPERM, the way a
// container runtime's default profile does, and checks what UringRing::create says.
TEST(UringRingTest, SeccompRefusalIsDetectedAndExplained) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(10);
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) _exit(11);
    auto ring = UringRing::create(RingOptions{});
    if (ring) _exit(12);
    const std::string& m = ring.error().message;
    if (ring.error().code != EPERM) _exit(13);
    if (m.find("seccomp") == std::string::npos || m.find("Fix:") == std::string::npos) _exit(14);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10/11: no seccomp, 12: ring created, 13: errno, 14: text";
}

class Collect : public CompletionHandler {
 public:
  void onCompletion(const Completion& c) override {
    if (c.user_data != kIgnoredUserData) got.push_back(c);  // linked timeouts report too
  }
  std::vector<Completion> got;
};

TEST(UringRingTest, MultishotAcceptAndRecvIntoProvidedBuffersThenTeardown) {
  RingOptions opts;
  opts.buffer_count = 4;
  opts.buffer_size = 4096;
  auto ring = UringRing::create(opts);
  if (!ring) GTEST_SKIP() << "io_uring unavailable here: " << ring.error().message;
  if (!(*ring)->fallbackNote().empty()) std::printf("note: %s\n", (*ring)->fallbackNote().c_str());
  auto listener = proxy::openListener(SocketAddress{IpAddress::v4(0x7f000001), 0});
  ASSERT_TRUE(listener) << listener.error().message;
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(*listener, reinterpret_cast<sockaddr*>(&ss), &len);
  (*ring)->acceptMultishot(*listener, UserData{1, 0, 0}.encode());
  int client = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&ss), len), 0);

  Collect c;
  ASSERT_TRUE((*ring)->submitAndDispatch(c, std::chrono::milliseconds(2000)));
  ASSERT_EQ(c.got.size(), 1u);
  EXPECT_TRUE(c.got[0].more());
  int accepted = c.got[0].res;
  ASSERT_GE(accepted, 0);

  (*ring)->recvMultishot(accepted, UserData{2, 5, 9}.encode(), 0, BufferGroup::kRelay);
  ASSERT_EQ(write(client, "hello", 5), 5);
  c.got.clear();
  ASSERT_TRUE((*ring)->submitAndDispatch(c, std::chrono::milliseconds(2000)));
  ASSERT_EQ(c.got.size(), 1u);
  EXPECT_EQ(UserData::decode(c.got[0].user_data), (UserData{2, 5, 9}));
  ASSERT_EQ(c.got[0].res, 5);
  ASSERT_TRUE(c.got[0].hasBuffer());
  EXPECT_TRUE(c.got[0].more());
  EXPECT_EQ(std::string((*ring)->buffer(c.got[0].bufferId()).data(), 5), "hello");
  EXPECT_EQ((*ring)->buffersAvailable(), 3u);
  (*ring)->recycleBuffer(c.got[0].bufferId());
  EXPECT_EQ((*ring)->buffersAvailable(), 4u);

  // cancel -> shutdown -> close: the recv ends with -ECANCELED, then one completion per step.
  (*ring)->teardown(accepted, UserData{3, 5, 9}.encode());
  c.got.clear();
  for (int i = 0; i < 5 && c.got.size() < 4; ++i) {
    ASSERT_TRUE((*ring)->submitAndDispatch(c, std::chrono::milliseconds(1000)));
  }
  std::map<uint8_t, int> by_op;
  for (const auto& x : c.got) by_op[UserData::decode(x.user_data).op]++;
  EXPECT_EQ(by_op[2], 1);
  EXPECT_EQ(by_op[3], 3);
  char buf[8];
  EXPECT_EQ(read(client, buf, sizeof(buf)), 0);  // the peer saw the shutdown
  close(client);
  close(*listener);
}

// The L7 path's group: a multishot recv into the small pool gets a buffer id past the relay
// pool's, whose memory holds the bytes; recycling it leaves the relay pool untouched.
TEST(UringRingTest, AMultishotRecvIntoTheSmallGroupUsesItsOwnBuffers) {
  RingOptions opts;
  opts.buffer_count = 4;
  opts.buffer_size = 4096;
  opts.small_buffer_count = 2;
  opts.small_buffer_size = 1024;
  auto ring = UringRing::create(opts);
  if (!ring) GTEST_SKIP() << "io_uring unavailable here: " << ring.error().message;
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  (*ring)->recvMultishot(sv[0], UserData{2, 1, 1}.encode(), 0, BufferGroup::kSmall);
  Collect c;
  for (const char* text : {"first", "second", "third"}) {
    ASSERT_EQ(write(sv[1], text, std::strlen(text)), static_cast<ssize_t>(std::strlen(text)));
    c.got.clear();
    ASSERT_TRUE((*ring)->submitAndDispatch(c, std::chrono::milliseconds(2000)));
    ASSERT_EQ(c.got.size(), 1u);
    ASSERT_TRUE(c.got[0].hasBuffer());
    EXPECT_TRUE(c.got[0].more());
    EXPECT_GE(c.got[0].bufferId(), 4u);
    EXPECT_LT(c.got[0].bufferId(), 6u);
    EXPECT_EQ((*ring)->buffer(c.got[0].bufferId()).size(), 1024u);
    EXPECT_EQ(
        std::string((*ring)->buffer(c.got[0].bufferId()).data(), static_cast<size_t>(c.got[0].res)),
        text);
    EXPECT_EQ((*ring)->buffersAvailable(), 4u);  // the relay pool's
    (*ring)->recycleBuffer(c.got[0].bufferId());
  }
  close(sv[1]);
  c.got.clear();
  ASSERT_TRUE((*ring)->submitAndDispatch(c, std::chrono::milliseconds(2000)));
  ASSERT_EQ(c.got.size(), 1u);
  EXPECT_EQ(c.got[0].res, 0);  // EOF ends it
  EXPECT_FALSE(c.got[0].more());
  close(sv[0]);
}

// The worker's path: a one-shot recv into a provided buffer, then shutdown -> close, whose
// shutdown ends the pending recv (res 0) without any cancel.
TEST(UringRingTest, OneShotRecvThenShutdownAndCloseWakesThePendingRecv) {
  RingOptions opts;
  opts.buffer_count = 4;
  opts.buffer_size = 4096;
  auto ring = UringRing::create(opts);
  if (!ring) GTEST_SKIP() << "io_uring unavailable here: " << ring.error().message;
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ASSERT_EQ(write(sv[1], "hi", 2), 2);
  (*ring)->recv(sv[0], UserData{2, 1, 1}.encode());
  Collect c;
  ASSERT_TRUE((*ring)->submitAndDispatch(c, std::chrono::milliseconds(2000)));
  ASSERT_EQ(c.got.size(), 1u);
  EXPECT_FALSE(c.got[0].more());  // one-shot
  ASSERT_EQ(c.got[0].res, 2);
  ASSERT_TRUE(c.got[0].hasBuffer());
  (*ring)->recycleBuffer(c.got[0].bufferId());

  (*ring)->recv(sv[0], UserData{2, 1, 2}.encode());  // nothing to read: stays pending
  (*ring)->shutdownAndClose(sv[0], UserData{3, 1, 2}.encode());
  c.got.clear();
  for (int i = 0; i < 5 && c.got.size() < 3; ++i) {
    ASSERT_TRUE((*ring)->submitAndDispatch(c, std::chrono::milliseconds(1000)));
  }
  std::map<uint8_t, int> by_op;
  for (const auto& x : c.got) {
    by_op[UserData::decode(x.user_data).op]++;
    if (UserData::decode(x.user_data).op == 2) {
      EXPECT_EQ(x.res, 0);
    }
  }
  EXPECT_EQ(by_op[2], 1);
  EXPECT_EQ(by_op[3], 2);
  char buf[4];
  EXPECT_EQ(read(sv[1], buf, sizeof(buf)), 0);
  close(sv[1]);
}

// Issue 12: every ring registers its fd with its thread, and works through it.
TEST(UringRingTest, RegistersItsRingFdAndWorksThroughIt) {
  {
    // Probe: a kernel before 5.18 refuses the registration; only then is this skipped.
    io_uring probe{};
    if (io_uring_queue_init(4, &probe, 0) != 0) GTEST_SKIP() << "io_uring unavailable here";
    const int rc = io_uring_register_ring_fd(&probe);
    io_uring_queue_exit(&probe);
    if (rc != 1) GTEST_SKIP() << "this kernel cannot register a ring fd: " << std::strerror(-rc);
  }
  RingOptions opts;
  opts.buffer_count = 4;
  opts.buffer_size = 4096;
  auto ring = UringRing::create(opts);
  ASSERT_TRUE(ring) << ring.error().message;
  EXPECT_TRUE((*ring)->ringFdRegistered());
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  (*ring)->send(sv[1], {"ping", 4}, UserData{5, 1, 1}.encode());
  (*ring)->recv(sv[0], UserData{2, 1, 1}.encode());
  Collect c;
  for (int i = 0; i < 5 && c.got.size() < 2; ++i) {
    ASSERT_TRUE((*ring)->submitAndDispatch(c, std::chrono::milliseconds(1000)));
  }
  ASSERT_EQ(c.got.size(), 2u);
  for (const auto& x : c.got) EXPECT_EQ(x.res, 4);
  opts.register_ring_fd = false;
  auto plain = UringRing::create(opts);
  ASSERT_TRUE(plain);
  EXPECT_FALSE((*plain)->ringFdRegistered());
  close(sv[0]);
  close(sv[1]);
}

TEST(UringRingTest, ConnectTimesOutThroughTheLinkedTimeout) {
  auto ring = UringRing::create(RingOptions{64, 256, 0, 0});
  if (!ring) GTEST_SKIP() << "io_uring unavailable here: " << ring.error().message;
  // A listener whose backlog is full never completes a new handshake: the connect hangs.
  auto listener = proxy::openListener(SocketAddress{IpAddress::v4(0x7f000001), 0}, 0);
  ASSERT_TRUE(listener);
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(*listener, reinterpret_cast<sockaddr*>(&ss), &len);
  std::vector<int> fillers;
  for (int i = 0; i < 4; ++i) {
    int f = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    connect(f, reinterpret_cast<sockaddr*>(&ss), len);
    fillers.push_back(f);
  }
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  (*ring)->connect(fd, reinterpret_cast<sockaddr*>(&ss), len, std::chrono::milliseconds(200),
                   UserData{4, 1, 1}.encode());
  Collect c;
  auto start = std::chrono::steady_clock::now();
  while (c.got.empty() && std::chrono::steady_clock::now() - start < std::chrono::seconds(3)) {
    ASSERT_TRUE((*ring)->submitAndDispatch(c, std::chrono::milliseconds(500)));
  }
  ASSERT_FALSE(c.got.empty());
  if (c.got[0].res == 0) GTEST_SKIP() << "the kernel completed the handshake anyway";
  EXPECT_EQ(c.got[0].res, -ECANCELED);
  for (int f : fillers) close(f);
  close(fd);
  close(*listener);
}

}  // namespace
}  // namespace remora::loop
