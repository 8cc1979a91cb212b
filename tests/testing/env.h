// Test sizing from the environment, so sanitizer runs can use fewer messages.
#ifndef HERALD_TESTS_TESTING_ENV_H_
#define HERALD_TESTS_TESTING_ENV_H_

#include <cstdint>
#include <cstdlib>
#include <string>

namespace herald::testing {

// `count` scaled by HERALD_STRESS_SCALE (a positive number, default 1; the
// tsan and asan configs set it lower), at least `minimum`.
inline uint64_t ScaledCount(uint64_t count, uint64_t minimum = 1) {
  double scale = 1.0;
  if (const char* env = std::getenv("HERALD_STRESS_SCALE"); env != nullptr) {
    const double parsed = std::strtod(env, nullptr);
    if (parsed > 0) scale = parsed;
  }
  const auto scaled = static_cast<uint64_t>(static_cast<double>(count) * scale);
  return scaled < minimum ? minimum : scaled;
}

}  // namespace herald::testing

#endif  // HERALD_TESTS_TESTING_ENV_H_
