// Dispatcher: the thread pool that runs callback subscriptions.
//
// Each callback subscription is a serial executor: at most one turn of it is
// queued or running at a time (SubscriptionState::scheduled_), so its
// callbacks never run concurrently and see messages in order. A turn delivers
// up to the subscription's batch limit, then goes to the back of the queue.
// Design notes: docs/design/dispatcher.md.
//
// Thread-safe.
#ifndef HERALD_BROKER_INTERNAL_DISPATCHER_H_
#define HERALD_BROKER_INTERNAL_DISPATCHER_H_

#include <cstddef>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace herald::internal {

class SubscriptionState;

class Dispatcher {
 public:
  // Starts `threads` worker threads. REQUIRES: threads > 0.
  explicit Dispatcher(size_t threads);
  // Stops and joins the threads (see Stop()).
  ~Dispatcher();

  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  // Queues one turn of `s`. Never blocks on a running callback.
  void Submit(std::shared_ptr<SubscriptionState> s);

  // Lets the running turns finish (waiting for their callbacks, however long
  // they take), drops queued turns and joins every thread. Idempotent. Must
  // not be called from a dispatcher thread.
  void Stop();

  size_t thread_count() const { return threads_.size(); }

 private:
  void Loop();

  absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<std::shared_ptr<SubscriptionState>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
  absl::Mutex join_mu_;  // Serializes Stop().
};

}  // namespace herald::internal

#endif  // HERALD_BROKER_INTERNAL_DISPATCHER_H_
