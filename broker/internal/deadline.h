// Deadline: when a receive call gives up waiting. Either a point in time
// (Receive(absl::Time)) or a timeout (Receive(absl::Duration)). A timeout
// starts when the call first finds nothing to take, not when it is made, so
// a call that finds a message at once reads no clock: receiving in a loop
// with a timeout costs no clock read per message. (The two starts differ
// by the time it takes to look at the queue.)
//
// Thread-compatible: one receive call's own value.
#ifndef HERALD_BROKER_INTERNAL_DEADLINE_H_
#define HERALD_BROKER_INTERNAL_DEADLINE_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace herald::internal {

class Deadline {
 public:
  static Deadline At(absl::Time at) { return Deadline(at, false, {}); }
  static Deadline After(absl::Duration timeout) {
    return Deadline(absl::InfinitePast(), true, timeout);
  }

  // Never passes.
  bool infinite() const {
    return pending_ ? timeout_ == absl::InfiniteDuration()
                    : at_ == absl::InfiniteFuture();
  }
  // A timeout not started yet (then timeout() is it), or a point in time.
  bool pending() const { return pending_; }
  absl::Duration timeout() const { return timeout_; }
  // The point in time; a pending timeout starts now.
  absl::Time Get() {
    if (pending_) {
      if (timeout_ == absl::InfiniteDuration()) {
        at_ = absl::InfiniteFuture();
        pending_ = false;
      } else {
        Start(absl::Now());
      }
    }
    return at_;
  }
  // Whether it has passed; a pending timeout starts now (one clock read).
  bool Passed() {
    const absl::Time now = absl::Now();
    if (pending_) Start(now);
    return now >= at_;
  }

 private:
  Deadline(absl::Time at, bool pending, absl::Duration timeout)
      : at_(at), pending_(pending), timeout_(timeout) {}
  void Start(absl::Time now) {
    at_ = now + timeout_;
    pending_ = false;
  }

  absl::Time at_;
  bool pending_;
  absl::Duration timeout_;
};

}  // namespace herald::internal

#endif  // HERALD_BROKER_INTERNAL_DEADLINE_H_
