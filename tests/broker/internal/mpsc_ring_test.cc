#include "broker/internal/mpsc_ring.h"

#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace herald::internal {
namespace {

class MpscRingCapacityTest : public ::testing::TestWithParam<size_t> {};

TEST_P(MpscRingCapacityTest, HoldsExactlyCapacityAndPopsInOrder) {
  const size_t capacity = GetParam();
  MpscRing<uint64_t> ring(capacity);
  uint64_t position;
  for (int lap = 0; lap < 3; ++lap) {
    for (size_t i = 0; i < capacity; ++i) {
      ASSERT_TRUE(ring.TryPush(lap * 1000 + i, &position)) << "push " << i;
      EXPECT_EQ(position, lap * capacity + i);
    }
    EXPECT_FALSE(ring.TryPush(999999, &position)) << "one past capacity";
    EXPECT_EQ(ring.Size(), capacity);
    for (size_t i = 0; i < capacity; ++i) {
      uint64_t value;
      ASSERT_TRUE(ring.HasMessage());
      ASSERT_TRUE(ring.IsReady(lap * capacity + i));
      ASSERT_TRUE(ring.TryPop(&value, &position));
      EXPECT_EQ(value, lap * 1000 + i);
      EXPECT_EQ(position, lap * capacity + i);
      // The next position is ready while the lap has messages left.
      EXPECT_EQ(ring.IsReady(position + 1), i + 1 < capacity) << "pop " << i;
    }
    uint64_t value;
    EXPECT_FALSE(ring.HasMessage());
    EXPECT_FALSE(ring.TryPop(&value, &position));
    EXPECT_EQ(ring.Size(), 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Capacities, MpscRingCapacityTest,
                         ::testing::Values(1, 2, 3, 7, 8, 1000));

TEST(MpscRingTest, ConcurrentProducersLoseNothingAndKeepPerProducerOrder) {
  constexpr int kProducers = 4;
  constexpr uint64_t kPerProducer = 20000;
  MpscRing<uint64_t> ring(64);
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      uint64_t position;
      for (uint64_t i = 0; i < kPerProducer; ++i) {
        // Retry on full: this test checks that nothing is lost or reordered.
        while (!ring.TryPush((static_cast<uint64_t>(p) << 32) | i, &position)) {
          std::this_thread::yield();
        }
      }
    });
  }
  std::vector<uint64_t> next(kProducers, 0);
  uint64_t received = 0;
  uint64_t last_position = 0;
  while (received < kProducers * kPerProducer) {
    uint64_t value;
    uint64_t position;
    if (!ring.TryPop(&value, &position)) {
      std::this_thread::yield();
      continue;
    }
    if (received > 0) {
      ASSERT_EQ(position, last_position + 1);
    }
    last_position = position;
    const int p = static_cast<int>(value >> 32);
    ASSERT_LT(p, kProducers);
    ASSERT_EQ(value & 0xffffffff, next[p]) << "producer " << p;
    ++next[p];
    ++received;
  }
  for (auto& t : producers) t.join();
  EXPECT_EQ(ring.Size(), 0u);
}

}  // namespace
}  // namespace herald::internal
