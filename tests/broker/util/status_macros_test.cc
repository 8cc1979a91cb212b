#include "broker/util/status_macros.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace herald {
namespace {

using ::herald::testing::IsOk;
using ::herald::testing::IsOkAndHolds;
using ::herald::testing::StatusIs;
using ::testing::Pointee;

absl::Status ReturnIfError(absl::Status input, int* reached) {
  HERALD_RETURN_IF_ERROR(input);
  ++*reached;
  return absl::OkStatus();
}

TEST(StatusMacrosTest, ReturnIfErrorReturnsTheError) {
  int reached = 0;
  EXPECT_THAT(ReturnIfError(absl::NotFoundError("gone"), &reached),
              StatusIs(absl::StatusCode::kNotFound, "gone"));
  EXPECT_EQ(reached, 0);
}

TEST(StatusMacrosTest, ReturnIfErrorContinuesOnOk) {
  int reached = 0;
  EXPECT_THAT(ReturnIfError(absl::OkStatus(), &reached), IsOk());
  EXPECT_EQ(reached, 1);
}

TEST(StatusMacrosTest, ReturnIfErrorEvaluatesOnceAndBindsInUnbracedIfElse) {
  int calls = 0;
  auto fail_once = [&] {
    ++calls;
    return absl::InternalError("x");
  };
  auto f = [&](bool check) -> absl::Status {
    if (check)
      HERALD_RETURN_IF_ERROR(fail_once());
    else
      return absl::AbortedError("else branch");
    return absl::OkStatus();
  };
  EXPECT_THAT(f(true), StatusIs(absl::StatusCode::kInternal));
  EXPECT_EQ(calls, 1);
  EXPECT_THAT(f(false), StatusIs(absl::StatusCode::kAborted));
  EXPECT_EQ(calls, 1);
}

absl::StatusOr<std::unique_ptr<int>> MakeInt(bool ok, int value) {
  if (!ok) return absl::OutOfRangeError("no int");
  return std::make_unique<int>(value);
}

absl::StatusOr<int> AddOne(bool ok) {
  HERALD_ASSIGN_OR_RETURN(std::unique_ptr<int> p, MakeInt(ok, 41));
  return *p + 1;
}

TEST(StatusMacrosTest, AssignOrReturnUnwrapsMoveOnlyValues) {
  EXPECT_THAT(AddOne(true), IsOkAndHolds(42));
}

TEST(StatusMacrosTest, AssignOrReturnPropagatesTheError) {
  EXPECT_THAT(AddOne(false), StatusIs(absl::StatusCode::kOutOfRange, "no int"));
}

TEST(StatusMacrosTest, AssignOrReturnAssignsToExistingVariableTwiceInScope) {
  auto f = []() -> absl::StatusOr<int> {
    std::unique_ptr<int> p;
    HERALD_ASSIGN_OR_RETURN(p, MakeInt(true, 1));
    HERALD_ASSIGN_OR_RETURN(auto q, MakeInt(true, 2));
    return *p + *q;
  };
  EXPECT_THAT(f(), IsOkAndHolds(3));
  EXPECT_THAT(MakeInt(true, 5), IsOkAndHolds(Pointee(5)));
}

}  // namespace
}  // namespace herald
