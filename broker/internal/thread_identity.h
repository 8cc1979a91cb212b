// Works around an Abseil 20220623 ThreadSanitizer annotation bug.
//
// CondVar::WaitCommon (absl/synchronization/mutex.cc) reports the mutex as
// released to TSAN (ABSL_TSAN_MUTEX_PRE_UNLOCK) *before* it creates the
// calling thread's Abseil identity on that thread's first wait. The identity's
// memory is mmap'ed then, after the release TSAN recorded, so the thread that
// later wakes the waiter (writing to that identity) has no happens-before edge
// with the mmap, and TSAN reports a data race inside absl::Mutex. Creating the
// identity before the first wait puts the mmap before the release and removes
// the false report; it is a thread-local lookup once the identity exists.
//
// Call EnsureThreadIdentity() on any thread before it waits on an
// absl::CondVar. Thread-safe.
#ifndef HERALD_BROKER_INTERNAL_THREAD_IDENTITY_H_
#define HERALD_BROKER_INTERNAL_THREAD_IDENTITY_H_

#include "absl/synchronization/internal/create_thread_identity.h"

namespace herald::internal {

inline void EnsureThreadIdentity() {
  absl::synchronization_internal::GetOrCreateCurrentThreadIdentity();
}

}  // namespace herald::internal

#endif  // HERALD_BROKER_INTERNAL_THREAD_IDENTITY_H_
