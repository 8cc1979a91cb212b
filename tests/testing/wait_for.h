// Waiting on a condition with a deadline, for concurrent and network tests.
//
// Tests never sleep to synchronise: they wait for the condition they need,
// and fail with a message if it does not come in time.
//
//   ASSERT_TRUE(WaitFor([&] { return sub.queued() == 3; }));
//   ASSERT_TRUE(WaitForValue([&] { return ThreadCount(); }, Le(baseline)));
//
// Both poll (with a short, growing pause between polls) and return a
// ::testing::AssertionResult, so a failure says what was waited for; the
// value-form reports the last value it saw.
#ifndef HERALD_TESTS_TESTING_WAIT_FOR_H_
#define HERALD_TESTS_TESTING_WAIT_FOR_H_

#include <optional>
#include <sstream>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace herald::testing {

// How long tests wait for a condition unless they say otherwise. Generous:
// sanitizer builds on a loaded 2-core machine are slow, and a passing test
// returns as soon as its condition holds.
inline constexpr absl::Duration kDefaultWaitTimeout = absl::Seconds(30);

namespace internal_wait {

// Pauses before the next poll: a doubling interval from 50us to 10ms.
void PauseBeforeNextPoll(absl::Duration& interval);

}  // namespace internal_wait

// Polls `predicate` until it returns true or `timeout` passes. The predicate
// is always called at least once, and once more after the deadline.
::testing::AssertionResult WaitFor(
    absl::FunctionRef<bool()> predicate,
    absl::Duration timeout = kDefaultWaitTimeout);

// Polls `value()` until the value matches `matcher` or `timeout` passes. On
// failure the message gives the matcher's description and the last value.
template <typename ValueFn, typename MatcherT>
::testing::AssertionResult WaitForValue(
    ValueFn&& value, MatcherT&& matcher,
    absl::Duration timeout = kDefaultWaitTimeout) {
  using Value = std::decay_t<decltype(value())>;
  const ::testing::Matcher<const Value&> m =
      ::testing::SafeMatcherCast<const Value&>(std::forward<MatcherT>(matcher));
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration interval = absl::Microseconds(50);
  while (true) {
    const bool last_chance = absl::Now() >= deadline;
    Value v = value();
    if (m.Matches(v)) return ::testing::AssertionSuccess();
    if (last_chance) {
      std::ostringstream description;
      m.DescribeTo(&description);
      return ::testing::AssertionFailure()
             << "waited " << timeout << " for a value that "
             << description.str() << "; the last value seen was "
             << ::testing::PrintToString(v);
    }
    internal_wait::PauseBeforeNextPoll(interval);
  }
}

}  // namespace herald::testing

#endif  // HERALD_TESTS_TESTING_WAIT_FOR_H_
