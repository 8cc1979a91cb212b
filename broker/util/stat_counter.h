// Statistics counters: std::atomic<uint64_t> values bumped with relaxed
// ordering. A statistic publishes no data, so its readers need no ordering
// with its writers: a read is a live snapshot, exact once the writers are
// quiescent.
#ifndef HERALD_BROKER_UTIL_STAT_COUNTER_H_
#define HERALD_BROKER_UTIL_STAT_COUNTER_H_

#include <atomic>
#include <cstdint>

namespace herald::internal {

inline void Bump(std::atomic<uint64_t>& counter, uint64_t n = 1) {
  counter.fetch_add(n, std::memory_order_relaxed);
}

inline void Drop(std::atomic<uint64_t>& counter, uint64_t n = 1) {
  counter.fetch_sub(n, std::memory_order_relaxed);
}

inline uint64_t Read(const std::atomic<uint64_t>& counter) {
  return counter.load(std::memory_order_relaxed);
}

}  // namespace herald::internal

#endif  // HERALD_BROKER_UTIL_STAT_COUNTER_H_
