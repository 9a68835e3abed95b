// loop::SlotTable: the one slot/generation/in-flight bookkeeping the admin server uses and the
// worker can adopt.
#include "loop/slot_table.h"

#include <gtest/gtest.h>

#include <array>

namespace remora::loop {
namespace {

struct Value {
  std::array<char, 64> buf{};
  int fd = -1;
};

TEST(SlotTableTest, EntriesNeverMoveWhileTheTableGrows) {
  SlotTable<Value> table;
  auto first = table.acquire();
  ASSERT_TRUE(first);
  char* pending_read = table[*first].buf.data();  // as if the kernel had a read pending into it
  for (int i = 0; i < 10000; ++i) ASSERT_TRUE(table.acquire());
  EXPECT_EQ(table[*first].buf.data(), pending_read);
  EXPECT_EQ(table.inUse(), 10001u);
}

TEST(SlotTableTest, AReleasedSlotIsFreedOnlyAfterItsLastCompletion) {
  SlotTable<Value> table;
  uint32_t slot = *table.acquire();
  const uint64_t read = table.track(1, slot);
  const uint64_t teardown = table.track(2, slot, 3);
  EXPECT_EQ(table.inflight(slot), 4u);
  EXPECT_FALSE(table.release(slot));  // four completions to come
  EXPECT_TRUE(table.inUse(slot));
  for (uint64_t ud : {read, teardown, teardown}) {
    ASSERT_EQ(table.resolve(UserData::decode(ud), true), slot);
    EXPECT_FALSE(table.settle(slot));
  }
  ASSERT_EQ(table.resolve(UserData::decode(teardown), true), slot);
  EXPECT_TRUE(table.settle(slot));
  EXPECT_FALSE(table.inUse(slot));
  EXPECT_EQ(table.inUse(), 0u);
}

TEST(SlotTableTest, ALateCompletionForAReusedSlotIsRecognised) {
  SlotTable<Value> table;
  uint32_t slot = *table.acquire();
  const uint64_t old = table.track(1, slot);
  ASSERT_EQ(table.resolve(UserData::decode(old), true), slot);
  ASSERT_TRUE(table.release(slot));
  uint32_t again = *table.acquire();
  ASSERT_EQ(again, slot);  // the free list hands the same slot back
  table.track(1, again);
  EXPECT_FALSE(table.resolve(UserData::decode(old), true));
  EXPECT_EQ(table.inflight(again), 1u) << "the stale completion must not count for the new one";
  EXPECT_NE(table.userData(1, again), old);
}

TEST(SlotTableTest, MultishotCompletionsCountOnlyWhenFinal) {
  SlotTable<Value> table;
  uint32_t slot = *table.acquire();
  const uint64_t recv = table.track(3, slot);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(table.resolve(UserData::decode(recv), false));
  EXPECT_EQ(table.inflight(slot), 1u);
  ASSERT_TRUE(table.resolve(UserData::decode(recv), true));
  EXPECT_EQ(table.inflight(slot), 0u);
  // userData() names the op for a cancel without counting it.
  EXPECT_EQ(table.userData(3, slot), recv);
  EXPECT_EQ(table.inflight(slot), 0u);
}

TEST(SlotTableTest, CapacityBoundsSlotsInUse) {
  SlotTable<Value> table(2);
  uint32_t a = *table.acquire();
  ASSERT_TRUE(table.acquire());
  EXPECT_FALSE(table.acquire());
  ASSERT_TRUE(table.release(a));
  EXPECT_TRUE(table.acquire());
  EXPECT_EQ(table.size(), 2u);
}

TEST(SlotTableTest, OutOfRangeOrFreeSlotsResolveToNothing) {
  SlotTable<Value> table;
  EXPECT_FALSE(table.resolve(UserData{1, 7, 1}, true));
  uint32_t slot = *table.acquire();
  ASSERT_TRUE(table.release(slot));
  EXPECT_FALSE(table.resolve(UserData{1, slot, table.generation(slot)}, true));
}

}  // namespace
}  // namespace remora::loop
