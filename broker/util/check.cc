#include "broker/util/check.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace herald::internal {

void CheckFailed(const char* condition, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: HERALD_CHECK failed: %s\n", file, line,
               condition);
  std::fflush(stderr);
  std::abort();
}

void CheckOkFailed(const char* expression, const absl::Status& status,
                   const char* file, int line) {
  const std::string text = status.ToString();
  std::fprintf(stderr, "%s:%d: HERALD_CHECK_OK failed: %s is %s\n", file, line,
               expression, text.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace herald::internal
