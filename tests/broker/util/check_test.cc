#include "broker/util/check.h"

#include "gtest/gtest.h"

namespace herald {
namespace {

// Death tests fork; "threadsafe" re-executes the binary, which is what
// ThreadSanitizer needs.
class CheckDeathTest : public ::testing::Test {
 protected:
  CheckDeathTest() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(CheckDeathTest, CheckAbortsWithConditionAndLocation) {
  const int x = 1;
  EXPECT_DEATH(HERALD_CHECK(x == 2),
               "check_test.cc:[0-9]+: HERALD_CHECK failed: x == 2");
}

TEST_F(CheckDeathTest, CheckOkAbortsWithTheStatus) {
  EXPECT_DEATH(HERALD_CHECK_OK(absl::DataLossError("torn")),
               "HERALD_CHECK_OK failed: .*DATA_LOSS: torn");
}

TEST(CheckTest, PassingChecksDoNothing) {
  int evaluations = 0;
  HERALD_CHECK(++evaluations == 1);
  HERALD_CHECK_OK(absl::OkStatus());
  EXPECT_EQ(evaluations, 1);
}

#ifdef NDEBUG
TEST(CheckTest, DcheckIsNotEvaluatedInOptimizedBuilds) {
  int evaluations = 0;
  HERALD_DCHECK(++evaluations == 100);
  EXPECT_EQ(evaluations, 0);
}
#else
TEST_F(CheckDeathTest, DcheckAbortsInDebugBuilds) {
  EXPECT_DEATH(HERALD_DCHECK(1 + 1 == 3), "HERALD_CHECK failed: 1 \\+ 1 == 3");
}
#endif

}  // namespace
}  // namespace herald
