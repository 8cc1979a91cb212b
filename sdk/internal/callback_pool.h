// The threads that run a remote client's callback subscriptions: each
// subscription is a serial executor over them (one turn of at most its
// callback_batch_limit messages at a time, then it yields), as the broker's
// dispatcher runs in-process callbacks. A stuck callback holds one thread:
// the pool's size bounds how many stuck callbacks the others survive.
// Thread-safe.
#ifndef HERALD_SDK_INTERNAL_CALLBACK_POOL_H_
#define HERALD_SDK_INTERNAL_CALLBACK_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace herald::internal {

class CallbackPool : public std::enable_shared_from_this<CallbackPool> {
 public:
  // REQUIRES: threads > 0.
  static std::shared_ptr<CallbackPool> Start(size_t threads);
  ~CallbackPool();

  CallbackPool(const CallbackPool&) = delete;
  CallbackPool& operator=(const CallbackPool&) = delete;

  // Runs `task` on a pool thread; dropped once Stop() began.
  void Submit(std::function<void()> task) ABSL_LOCKS_EXCLUDED(mu_);
  // Drops the tasks not yet started, waits for the running ones and joins
  // the threads, except the calling one if it is a pool thread (it ends
  // when its task returns). Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  CallbackPool() = default;
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

}  // namespace herald::internal

#endif  // HERALD_SDK_INTERNAL_CALLBACK_POOL_H_
