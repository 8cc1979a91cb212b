// Failures and Checks: how every Herald example reports errors and checks
// its own accounting, so that an example run as a test exits non-zero when
// its totals do not add up.
#ifndef HERALD_EXAMPLES_COMMON_ACCOUNTING_H_
#define HERALD_EXAMPLES_COMMON_ACCOUNTING_H_

#include <cstdint>
#include <cstdio>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace herald::examples {

// Errors seen on any thread. Each is printed when it happens; main() exits 1
// if there was any. Thread-safe.
class Failures {
 public:
  void Add(absl::string_view where, const absl::Status& status) {
    absl::FPrintF(stderr, "error: %s: %s\n", where, status.ToString());
    absl::MutexLock lock(&mu_);
    ++count_;
  }
  int count() const {
    absl::MutexLock lock(&mu_);
    return count_;
  }

 private:
  mutable absl::Mutex mu_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

// The accounting checks; a failed one prints what did not add up.
// Thread-compatible.
class Checks {
 public:
  void Equal(absl::string_view what, uint64_t got, uint64_t want) {
    ++count_;
    if (got == want) return;
    ++failed_;
    absl::FPrintF(stderr, "accounting MISMATCH: %s: %d != %d\n", what, got,
                  want);
  }
  void AtMost(absl::string_view what, uint64_t got, uint64_t bound) {
    ++count_;
    if (got <= bound) return;
    ++failed_;
    absl::FPrintF(stderr, "accounting MISMATCH: %s: %d > %d\n", what, got,
                  bound);
  }
  int count() const { return count_; }
  int failed() const { return failed_; }

 private:
  int count_ = 0;
  int failed_ = 0;
};

// Prints the verdict and returns main()'s exit code: 1 if a check failed or
// an error was seen, else 0. `detail` says what an OK run has shown.
inline int Verdict(const Failures& failures, const Checks& checks,
                   absl::string_view detail = "") {
  const int errors = failures.count();
  if (errors > 0 || checks.failed() > 0) {
    absl::PrintF("\naccounting FAILED: %d of %d checks failed, %d errors\n",
                 checks.failed(), checks.count(), errors);
    return 1;
  }
  absl::PrintF("\naccounting OK: %d checks%s%s\n", checks.count(),
               detail.empty() ? "" : "; ", detail);
  return 0;
}

}  // namespace herald::examples

#endif  // HERALD_EXAMPLES_COMMON_ACCOUNTING_H_
