// HandoverRule (proxy/kernel_relay.h): when `--relay auto` hands a pair from the io_uring relay to
// the kernel relay. Pure; the e2e side is test/e2e/kernel_relay_e2e_test.cc (KernelRelay.Auto*).
#include <gtest/gtest.h>

#include "proxy/kernel_relay.h"

namespace remora::proxy {
namespace {

constexpr size_t kBuffer = 65536;

// `n` request/response exchanges of `bytes` each way.
void exchange(HandoverRule& rule, uint32_t n, size_t bytes = 100) {
  for (uint32_t i = 0; i < n; ++i) {
    rule.onReceive(/*from_client=*/true, bytes, kBuffer);
    rule.onReceive(/*from_client=*/false, bytes, kBuffer);
  }
}

TEST(RelayHandoverRule, ShortConnectionsAreNeverReady) {
  HandoverRule rule;
  EXPECT_FALSE(rule.ready());
  exchange(rule, 1);
  EXPECT_EQ(rule.exchanges(), 1u);
  EXPECT_FALSE(rule.ready());
  exchange(rule, HandoverRule::kExchanges - 2);
  EXPECT_FALSE(rule.ready());
  // Half of the next exchange (the request) is not one more.
  rule.onReceive(true, 100, kBuffer);
  EXPECT_EQ(rule.exchanges(), HandoverRule::kExchanges - 1);
  EXPECT_FALSE(rule.ready());
}

TEST(RelayHandoverRule, ReadyAfterTheExchangesAndStaysReady) {
  HandoverRule rule;
  exchange(rule, HandoverRule::kExchanges);
  EXPECT_EQ(rule.exchanges(), HandoverRule::kExchanges);
  EXPECT_TRUE(rule.ready());
  exchange(rule, 5);
  EXPECT_TRUE(rule.ready());
}

TEST(RelayHandoverRule, SeveralReceivesOneWayAreOneTurn) {
  HandoverRule rule;
  // A request that arrives in pieces, then a response in pieces: one exchange.
  for (int i = 0; i < 10; ++i) rule.onReceive(true, 1000, kBuffer);
  for (int i = 0; i < 10; ++i) rule.onReceive(false, 1000, kBuffer);
  EXPECT_EQ(rule.exchanges(), 1u);
  // Server-first protocols (a greeting) count the same way.
  HandoverRule greeting;
  greeting.onReceive(false, 50, kBuffer);
  exchange(greeting, HandoverRule::kExchanges - 1);
  EXPECT_FALSE(greeting.ready());
  greeting.onReceive(true, 50, kBuffer);
  EXPECT_TRUE(greeting.ready());
}

TEST(RelayHandoverRule, AFullBufferMeansBulkForGood) {
  HandoverRule rule;
  exchange(rule, 1);
  rule.onReceive(false, kBuffer, kBuffer);  // a response bigger than a buffer
  EXPECT_TRUE(rule.bulk());
  exchange(rule, 20);
  EXPECT_FALSE(rule.ready());
  EXPECT_TRUE(rule.gaveUp());
  // One byte short of a full buffer is not bulk.
  HandoverRule almost;
  exchange(almost, HandoverRule::kExchanges, kBuffer - 1);
  EXPECT_FALSE(almost.bulk());
  EXPECT_TRUE(almost.ready());
}

TEST(RelayHandoverRule, AfterARaceTheNextTryWaitsForOneMoreExchange) {
  HandoverRule rule;
  exchange(rule, HandoverRule::kExchanges);
  ASSERT_TRUE(rule.ready());
  rule.onRaced();
  EXPECT_FALSE(rule.ready());
  // More pieces of the same response: still the same exchange.
  rule.onReceive(false, 1000, kBuffer);
  EXPECT_FALSE(rule.ready());
  rule.onReceive(true, 100, kBuffer);  // the next request
  EXPECT_FALSE(rule.ready());
  rule.onReceive(false, 100, kBuffer);  // and its response
  EXPECT_TRUE(rule.ready());
}

TEST(RelayHandoverRule, GivesUpAfterTheTries) {
  HandoverRule rule;
  exchange(rule, HandoverRule::kExchanges);
  for (uint32_t i = 0; i + 1 < HandoverRule::kMaxTries; ++i) {
    rule.onRaced();
    exchange(rule, 1);
    EXPECT_TRUE(rule.ready()) << "after " << i + 1 << " races";
  }
  rule.onRaced();
  exchange(rule, 1);
  EXPECT_FALSE(rule.ready());
  EXPECT_TRUE(rule.gaveUp());
  EXPECT_FALSE(rule.bulk());
}

}  // namespace
}  // namespace remora::proxy
