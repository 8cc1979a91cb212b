#include "broker/internal/dispatcher.h"

#include <utility>

#include "broker/internal/subscription_state.h"
#include "broker/internal/thread_identity.h"
#include "broker/internal/thread_name.h"
#include "broker/util/check.h"

namespace herald::internal {

Dispatcher::Dispatcher(size_t threads) {
  HERALD_CHECK(threads > 0);
  threads_.reserve(threads);
  for (size_t i = 0; i < threads; ++i)
    threads_.emplace_back([this] { Loop(); });
}

Dispatcher::~Dispatcher() { Stop(); }

void Dispatcher::Submit(std::shared_ptr<SubscriptionState> s) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  queue_.push_back(std::move(s));
  cv_.Signal();
}

void Dispatcher::Stop() {
  absl::MutexLock join_lock(&join_mu_);
  std::deque<std::shared_ptr<SubscriptionState>> dropped;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    dropped.swap(queue_);
    cv_.SignalAll();
  }
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void Dispatcher::Loop() {
  EnsureThreadIdentity();
  NameThisThread("herald-dispatch");
  while (true) {
    std::shared_ptr<SubscriptionState> s;
    {
      absl::MutexLock lock(&mu_);
      while (queue_.empty() && !stopping_) cv_.Wait(&mu_);
      if (stopping_) return;
      s = std::move(queue_.front());
      queue_.pop_front();
    }
    if (s->RunTurn()) Submit(std::move(s));
  }
}

}  // namespace herald::internal
