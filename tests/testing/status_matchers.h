// GoogleMock matchers for absl::Status and absl::StatusOr<T>, with the names
// and meaning of newer Abseil's absl/status/status_matchers.h, so that an
// Abseil upgrade is a rename:
//
//   EXPECT_THAT(Validate(x), IsOk());
//   EXPECT_THAT(Subscribe(""), StatusIs(absl::StatusCode::kInvalidArgument));
//   EXPECT_THAT(Subscribe(""), StatusIs(absl::StatusCode::kInvalidArgument,
//                                       HasSubstr("empty")));
//   EXPECT_THAT(Parse("7"), IsOkAndHolds(7));
//
// Each works on both absl::Status and absl::StatusOr<T>.
#ifndef HERALD_TESTS_TESTING_STATUS_MATCHERS_H_
#define HERALD_TESTS_TESTING_STATUS_MATCHERS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"

namespace herald::testing {
namespace internal_status {

inline const absl::Status& GetStatus(const absl::Status& status) {
  return status;
}

template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

}  // namespace internal_status

// Matches an OK absl::Status or absl::StatusOr<T>.
MATCHER(IsOk, negation ? "is not OK" : "is OK") {
  const absl::Status& status = internal_status::GetStatus(arg);
  *result_listener << "whose status is " << status;
  return status.ok();
}

// Matches a Status or StatusOr whose code is `code`.
MATCHER_P(StatusIs, code,
          absl::StrCat(negation ? "does not have" : "has", " status code ",
                       absl::StatusCodeToString(code))) {
  const absl::Status& status = internal_status::GetStatus(arg);
  *result_listener << "whose status is " << status;
  return status.code() == code;
}

// Matches a Status or StatusOr whose code is `code` and whose message matches
// `message_matcher` (a string or a matcher such as HasSubstr("...")).
MATCHER_P2(StatusIs, code, message_matcher,
           absl::StrCat(negation ? "does not have" : "has", " status code ",
                        absl::StatusCodeToString(code), " and a message that ",
                        ::testing::DescribeMatcher<std::string>(message_matcher,
                                                                negation))) {
  const absl::Status& status = internal_status::GetStatus(arg);
  *result_listener << "whose status is " << status;
  if (status.code() != code) return false;
  return ::testing::ExplainMatchResult(
      message_matcher, std::string(status.message()), result_listener);
}

// Matches an OK StatusOr<T> whose value matches `value_matcher`.
MATCHER_P(
    IsOkAndHolds, value_matcher,
    absl::StrCat(
        negation ? "is not OK or holds a value that "
                 : "is OK and holds a value that ",
        ::testing::DescribeMatcher<typename std::decay_t<arg_type>::value_type>(
            value_matcher, negation))) {
  if (!arg.ok()) {
    *result_listener << "whose status is " << arg.status();
    return false;
  }
  return ::testing::ExplainMatchResult(value_matcher, *arg, result_listener);
}

}  // namespace herald::testing

#endif  // HERALD_TESTS_TESTING_STATUS_MATCHERS_H_
