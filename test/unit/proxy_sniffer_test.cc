// Protocol sniffing (proxy/sniffer.h) against a fake ring: the verdicts, the bytes handed on,
// the timeout and its race with a read, and the counters.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "proxy/sniffer.h"
#include "proxy_fakes.h"

namespace remora::proxy {
namespace {

using testing::FakeRing;
using testing::RecordedOp;

class SnifferTest : public ::testing::Test {
 protected:
  SnifferTest() : sniffer_(ring_, stats_, [this](Sniffed s) { verdict_ = std::move(s); }) {}
  ~SnifferTest() override {
    if (verdict_ && verdict_->fd >= 0) ::close(verdict_->fd);
  }

  void start() {
    fd_ = ::eventfd(0, 0);
    ASSERT_GE(fd_, 0);
    sniffer_.start(fd_, 3, dst_, std::chrono::milliseconds(100));
  }
  // The last operation of `kind` recorded.
  RecordedOp last(RecordedOp::Kind kind) {
    auto it = std::find_if(ring_.ops.rbegin(), ring_.ops.rend(),
                           [&](const RecordedOp& op) { return op.kind == kind; });
    EXPECT_NE(it, ring_.ops.rend());
    return it != ring_.ops.rend() ? *it : RecordedOp{kind, -1, 0};
  }
  void complete(uint64_t user_data, int32_t res) {
    loop::Completion c;
    c.user_data = user_data;
    c.res = res;
    sniffer_.onCompletion(c);
  }
  // The client sends `bytes`: the pending read completes with them.
  void clientSends(std::string_view bytes) {
    RecordedOp read = last(RecordedOp::kRead);
    ASSERT_GE(read.into.size(), bytes.size());
    std::memcpy(read.into.data(), bytes.data(), bytes.size());
    complete(read.user_data, static_cast<int32_t>(bytes.size()));
  }
  size_t count(RecordedOp::Kind kind) const {
    return static_cast<size_t>(std::count_if(
        ring_.ops.begin(), ring_.ops.end(), [&](const RecordedOp& op) { return op.kind == kind; }));
  }

  FakeRing ring_;
  WorkerStats stats_;
  std::optional<Sniffed> verdict_;
  Sniffer sniffer_;
  int fd_ = -1;
  SocketAddress dst_{IpAddress::v4(0x0a010001), 7777};
};

TEST_F(SnifferTest, ARequestLineInPiecesIsHttp) {
  start();
  EXPECT_EQ(last(RecordedOp::kTimeout).timeout, std::chrono::milliseconds(100));
  clientSends("GET /a HT");
  EXPECT_FALSE(verdict_.has_value());
  EXPECT_EQ(count(RecordedOp::kRead), 2u);  // reads on
  clientSends("TP/1.1\r\nHost: x\r\n");
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kHttp);
  EXPECT_EQ(verdict_->bytes, "GET /a HTTP/1.1\r\nHost: x\r\n");
  EXPECT_EQ(verdict_->fd, fd_);
  EXPECT_EQ(verdict_->listener, 3u);
  EXPECT_EQ(verdict_->original_dst, dst_);
  // The timer is cancelled; its completion later changes nothing.
  const RecordedOp timer = ring_.ops[0];
  ASSERT_EQ(timer.kind, RecordedOp::kTimeout);
  EXPECT_EQ(last(RecordedOp::kCancel).target, timer.user_data);
  complete(timer.user_data, -ECANCELED);
  complete(last(RecordedOp::kCancel).user_data, 0);
  EXPECT_EQ(stats_.counters().sniff_http.get(), 1u);
  EXPECT_EQ(sniffer_.inUse(), 0u);
}

TEST_F(SnifferTest, TlsIsTcpAtTheFirstByte) {
  start();
  clientSends(std::string_view("\x16\x03\x01\x02\x00", 5));
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kTcp);
  EXPECT_EQ(verdict_->bytes.size(), 5u);
  EXPECT_EQ(stats_.counters().sniff_tcp.get(), 1u);
}

TEST_F(SnifferTest, AClientClosingIsTcpWithWhatItSent) {
  start();
  clientSends("GET / HTT");
  complete(last(RecordedOp::kRead).user_data, 0);
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kTcp);
  EXPECT_EQ(verdict_->bytes, "GET / HTT");
}

TEST_F(SnifferTest, SilenceUntilTheTimeoutIsRelayedAsTcp) {
  start();
  const RecordedOp timer = last(RecordedOp::kTimeout);
  const RecordedOp read = last(RecordedOp::kRead);
  complete(timer.user_data, -ETIME);
  // The read is cancelled; the verdict waits for its completion.
  EXPECT_EQ(last(RecordedOp::kCancel).target, read.user_data);
  EXPECT_FALSE(verdict_.has_value());
  complete(read.user_data, -ECANCELED);
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kTimeout);
  EXPECT_TRUE(verdict_->bytes.empty());
  EXPECT_EQ(stats_.counters().sniff_timeout.get(), 1u);
}

TEST_F(SnifferTest, BytesRacingTheTimeoutAreKept) {
  start();
  complete(last(RecordedOp::kTimeout).user_data, -ETIME);
  // The read completed with bytes before the cancel reached it: a request line is still HTTP.
  clientSends("GET / HTTP/1.1\r\n");
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kHttp);
  EXPECT_EQ(verdict_->bytes, "GET / HTTP/1.1\r\n");
}

TEST_F(SnifferTest, AnIncompleteLineAtTheTimeoutIsRelayedWithItsBytes) {
  start();
  clientSends("GET /");
  complete(last(RecordedOp::kTimeout).user_data, -ETIME);
  complete(last(RecordedOp::kRead).user_data, -ECANCELED);
  ASSERT_TRUE(verdict_.has_value());
  EXPECT_EQ(verdict_->verdict, Sniffed::Verdict::kTimeout);
  EXPECT_EQ(verdict_->bytes, "GET /");
}

TEST_F(SnifferTest, AbortAllClosesWhatIsBeingSniffed) {
  start();
  sniffer_.abortAll();
  EXPECT_FALSE(verdict_.has_value());
  EXPECT_EQ(last(RecordedOp::kClose).fd, fd_);
  ::close(fd_);  // the fake ring closes nothing
}

}  // namespace
}  // namespace remora::proxy
