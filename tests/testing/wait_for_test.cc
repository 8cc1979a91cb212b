#include "tests/testing/wait_for.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace herald::testing {
namespace {

using ::testing::Ge;
using ::testing::HasSubstr;

TEST(WaitForTest, ReturnsOnceAnotherThreadMakesTheConditionTrue) {
  std::atomic<int> value{0};
  std::thread writer([&] {
    for (int i = 1; i <= 100; ++i) value.store(i, std::memory_order_release);
  });
  EXPECT_TRUE(
      WaitFor([&] { return value.load(std::memory_order_acquire) == 100; }));
  writer.join();
}

TEST(WaitForTest, FailsAfterTheTimeoutWhenTheConditionStaysFalse) {
  int calls = 0;
  const ::testing::AssertionResult result = WaitFor(
      [&] {
        ++calls;
        return false;
      },
      absl::Milliseconds(20));
  EXPECT_FALSE(result);
  EXPECT_GE(calls, 2);  // At least the first look and the one at the deadline.
  EXPECT_THAT(result.message(), HasSubstr("condition still false"));
}

TEST(WaitForValueTest, ReportsTheLastValueSeen) {
  const ::testing::AssertionResult result =
      WaitForValue([] { return 41; }, Ge(42), absl::Milliseconds(10));
  EXPECT_FALSE(result);
  EXPECT_THAT(result.message(), HasSubstr("the last value seen was 41"));
  EXPECT_THAT(result.message(), HasSubstr(">= 42"));
}

TEST(WaitForValueTest, SucceedsWhenTheValueArrives) {
  absl::Notification done;
  std::atomic<int> value{0};
  std::thread writer([&] {
    value.store(7, std::memory_order_release);
    done.Notify();
  });
  EXPECT_TRUE(
      WaitForValue([&] { return value.load(std::memory_order_acquire); }, 7));
  writer.join();
}

}  // namespace
}  // namespace herald::testing
