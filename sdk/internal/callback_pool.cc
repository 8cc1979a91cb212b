#include "sdk/internal/callback_pool.h"

#include <utility>

#include "broker/internal/thread_identity.h"
#include "broker/internal/thread_name.h"

namespace herald::internal {

std::shared_ptr<CallbackPool> CallbackPool::Start(size_t threads) {
  std::shared_ptr<CallbackPool> pool(new CallbackPool());
  absl::MutexLock lock(&pool->mu_);
  for (size_t i = 0; i < threads; ++i) {
    // Each thread keeps the pool alive: one may outlive Stop() (detached).
    pool->threads_.emplace_back([self = pool] { self->Loop(); });
  }
  return pool;
}

CallbackPool::~CallbackPool() {
  // Every thread holds a reference, so by now they have all returned (the
  // last one may be this destructor's caller, detached).
}

void CallbackPool::Submit(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  tasks_.push_back(std::move(task));
}

void CallbackPool::Stop() {
  EnsureThreadIdentity();
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    tasks_.clear();
    threads.swap(threads_);
  }
  for (std::thread& t : threads) {
    if (t.get_id() == std::this_thread::get_id()) {
      t.detach();  // Stopped from inside a callback: it ends after it.
    } else {
      t.join();
    }
  }
}

void CallbackPool::Loop() {
  EnsureThreadIdentity();
  NameThisThread("herald-callback");
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !tasks_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace herald::internal
