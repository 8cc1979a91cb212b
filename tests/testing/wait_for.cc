#include "tests/testing/wait_for.h"

#include <algorithm>

namespace herald::testing {
namespace internal_wait {

void PauseBeforeNextPoll(absl::Duration& interval) {
  // Polling needs a pause between looks; this is the one place tests pause,
  // and it never stands in for the condition itself.
  absl::SleepFor(interval);
  interval = std::min(interval * 2, absl::Milliseconds(10));
}

}  // namespace internal_wait

::testing::AssertionResult WaitFor(absl::FunctionRef<bool()> predicate,
                                   absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration interval = absl::Microseconds(50);
  while (true) {
    const bool last_chance = absl::Now() >= deadline;
    if (predicate()) return ::testing::AssertionSuccess();
    if (last_chance) {
      return ::testing::AssertionFailure()
             << "condition still false after waiting " << timeout;
    }
    internal_wait::PauseBeforeNextPoll(interval);
  }
}

}  // namespace herald::testing
