// Works around an Abseil 20220623 ThreadSanitizer annotation bug.
//
// A thread's Abseil identity (its wait semaphore) is created lazily, the
// first time the thread blocks in absl::Mutex or absl::CondVar, and it is
// created *inside* the region Abseil annotates for TSAN as mutex-internal:
// CondVar::WaitCommon announces the unlock (ABSL_TSAN_MUTEX_PRE_UNLOCK) before
// it creates the identity, and Mutex::LockSlowWithDeadline creates it between
// its pre-lock and post-lock annotations. The thread that later wakes this one
// writes to that identity (Waiter::Post) with no happens-before edge TSAN can
// see to its creation, and TSAN reports a data race inside absl::Mutex (seen
// in our tests: mmap / Waiter::Waiter vs Waiter::Post). Creating the identity
// first, outside those regions, removes the false report; once it exists this
// is a thread-local lookup.
//
// Creating the identity earlier is not enough on its own: its initialization
// (Waiter::Waiter) is still a write TSAN sees with no edge to the thread that
// later posts to it through Abseil's internal (annotated, so invisible) wait
// queue. So, in TSAN builds only, EnsureThreadIdentity() creates the calling
// thread's identity up front with the writes of that one creation hidden from
// TSAN (ABSL_ANNOTATE_IGNORE_WRITES_BEGIN/END). Nothing of Herald's own memory
// is hidden: only Abseil's per-thread semaphore, which Abseil itself hands
// between threads. In other builds it does nothing.
//
// Herald calls it at every public entry point that may block on an
// absl::Mutex, and at the start of its own threads. Thread-safe.
#ifndef HERALD_BROKER_INTERNAL_THREAD_IDENTITY_H_
#define HERALD_BROKER_INTERNAL_THREAD_IDENTITY_H_

#include "absl/base/config.h"
#include "absl/base/dynamic_annotations.h"
#include "absl/base/internal/thread_identity.h"
#include "absl/synchronization/internal/create_thread_identity.h"

namespace herald::internal {

inline void EnsureThreadIdentity() {
#ifdef ABSL_HAVE_THREAD_SANITIZER
  if (absl::base_internal::CurrentThreadIdentityIfPresent() == nullptr) {
    ABSL_ANNOTATE_IGNORE_WRITES_BEGIN();
    absl::synchronization_internal::GetOrCreateCurrentThreadIdentity();
    ABSL_ANNOTATE_IGNORE_WRITES_END();
  }
#endif
}

}  // namespace herald::internal

#endif  // HERALD_BROKER_INTERNAL_THREAD_IDENTITY_H_
