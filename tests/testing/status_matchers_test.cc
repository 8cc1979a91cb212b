#include "tests/testing/status_matchers.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace herald::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(StatusMatchersTest, IsOkMatchesOnlyOk) {
  EXPECT_THAT(absl::OkStatus(), IsOk());
  EXPECT_THAT(absl::CancelledError(), Not(IsOk()));
  EXPECT_THAT(absl::StatusOr<int>(3), IsOk());
  EXPECT_THAT(absl::StatusOr<int>(absl::UnknownError("u")), Not(IsOk()));
}

TEST(StatusMatchersTest, StatusIsChecksCodeAndMessage) {
  const absl::Status status = absl::InvalidArgumentError("topic is empty");
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(status, Not(StatusIs(absl::StatusCode::kInternal)));
  EXPECT_THAT(status,
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(status, Not(StatusIs(absl::StatusCode::kInvalidArgument,
                                   HasSubstr("full"))));
  EXPECT_THAT(absl::StatusOr<std::string>(status),
              StatusIs(absl::StatusCode::kInvalidArgument, "topic is empty"));
}

TEST(StatusMatchersTest, IsOkAndHoldsChecksTheValue) {
  EXPECT_THAT(absl::StatusOr<int>(7), IsOkAndHolds(7));
  EXPECT_THAT(absl::StatusOr<int>(7), Not(IsOkAndHolds(8)));
  EXPECT_THAT(absl::StatusOr<int>(absl::NotFoundError("n")),
              Not(IsOkAndHolds(7)));
}

TEST(StatusMatchersTest, FailureExplainsTheActualStatus) {
  ::testing::StringMatchResultListener listener;
  const auto matcher = ::testing::SafeMatcherCast<const absl::Status&>(
      StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(matcher.MatchAndExplain(absl::AbortedError("busy"), &listener));
  EXPECT_THAT(listener.str(), HasSubstr("ABORTED: busy"));
}

}  // namespace
}  // namespace herald::testing
