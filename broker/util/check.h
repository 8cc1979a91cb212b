// Invariant checks for Herald's own code.
//
// HERALD_CHECK(cond) is always on: when `cond` is false it prints the
// condition and file:line to stderr and aborts. Use it for states the program
// cannot recover from. HERALD_DCHECK(cond) does the same in debug builds and
// compiles to nothing (without evaluating `cond`) when NDEBUG is defined.
//
// These are for internal invariants only. Anything that input, a peer, the
// network or the OS can cause is an error path returning absl::Status, with a
// counter and a test (docs/errors.md). Abseil 20220623 has no absl/log and
// ABSL_RAW_CHECK is internal, hence these.
#ifndef HERALD_BROKER_UTIL_CHECK_H_
#define HERALD_BROKER_UTIL_CHECK_H_

#include "absl/base/optimization.h"
#include "absl/status/status.h"

namespace herald::internal {

// Prints "file:line: HERALD_CHECK failed: condition" to stderr and aborts.
[[noreturn]] void CheckFailed(const char* condition, const char* file,
                              int line);

// As CheckFailed, followed by the status that was not OK.
[[noreturn]] void CheckOkFailed(const char* expression,
                                const absl::Status& status, const char* file,
                                int line);

}  // namespace herald::internal

#define HERALD_CHECK(cond)    \
  (ABSL_PREDICT_TRUE(cond)    \
       ? static_cast<void>(0) \
       : ::herald::internal::CheckFailed(#cond, __FILE__, __LINE__))

// Aborts, printing the status, unless `expr` (an absl::Status) is OK.
#define HERALD_CHECK_OK(expr)                                                  \
  do {                                                                         \
    if (const ::absl::Status herald_check_status_ = (expr);                    \
        ABSL_PREDICT_FALSE(!herald_check_status_.ok())) {                      \
      ::herald::internal::CheckOkFailed(#expr, herald_check_status_, __FILE__, \
                                        __LINE__);                             \
    }                                                                          \
  } while (false)

#ifdef NDEBUG
// Not evaluated, but still compiled, so it cannot rot.
#define HERALD_DCHECK(cond) \
  (false ? static_cast<void>(cond) : static_cast<void>(0))
#else
#define HERALD_DCHECK(cond) HERALD_CHECK(cond)
#endif

#endif  // HERALD_BROKER_UTIL_CHECK_H_
