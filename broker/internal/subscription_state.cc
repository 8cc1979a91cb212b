#include "broker/internal/subscription_state.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "broker/internal/dispatcher.h"
#include "broker/internal/spin.h"
#include "broker/internal/thread_identity.h"
#include "broker/util/check.h"
#include "broker/util/status_macros.h"

namespace herald::internal {
namespace {

// Wakes a parked consumer when the caller's stop token is triggered.
struct StopWake {
  absl::Mutex* mu;
  absl::CondVar* cv;
  uint64_t* epoch;
  void operator()() const {
    absl::MutexLock lock(mu);
    ++*epoch;
    cv->SignalAll();
  }
};

v1::OverflowPolicy ToProto(OverflowPolicy policy) {
  switch (policy) {
    case OverflowPolicy::kDropNewest:
      return v1::OVERFLOW_POLICY_DROP_NEWEST;
    case OverflowPolicy::kDropOldest:
      return v1::OVERFLOW_POLICY_DROP_OLDEST;
    case OverflowPolicy::kBlock:
      return v1::OVERFLOW_POLICY_BLOCK;
  }
  return v1::OVERFLOW_POLICY_UNSPECIFIED;
}

}  // namespace

void FillDropCounts(const DropCounts& counts, v1::DropCounts* out) {
  out->set_queue_full(counts[static_cast<size_t>(DropReason::kQueueFull)]);
  out->set_evicted_oldest(
      counts[static_cast<size_t>(DropReason::kEvictedOldest)]);
  out->set_block_timeout(
      counts[static_cast<size_t>(DropReason::kBlockTimeout)]);
  out->set_closed(counts[static_cast<size_t>(DropReason::kClosed)]);
  out->set_shutdown(counts[static_cast<size_t>(DropReason::kShutdown)]);
  out->set_group_full(counts[static_cast<size_t>(DropReason::kGroupFull)]);
}

SubscriptionState::SubscriptionState(uint64_t id, std::string pattern,
                                     std::string group, std::string name,
                                     OverflowPolicy policy, size_t capacity,
                                     absl::Duration block_timeout,
                                     size_t batch_limit, Callback callback,
                                     Notifier notifier, Dispatcher* dispatcher)
    : id_(id),
      pattern_(std::move(pattern)),
      group_(std::move(group)),
      name_(std::move(name)),
      policy_(policy),
      capacity_(capacity),
      block_timeout_(block_timeout),
      batch_limit_(batch_limit),
      callback_(std::move(callback)),
      notifier_(std::move(notifier)),
      dispatcher_(dispatcher) {
  HERALD_CHECK(capacity_ > 0);
  if (policy_ == OverflowPolicy::kDropNewest) {
    ring_ = std::make_unique<MpscRing<Message*>>(capacity_);
  } else {
    absl::MutexLock lock(&queue_mu_);
    buffer_.resize(capacity_);
  }
}

SubscriptionState::~SubscriptionState() {
  absl::MutexLock lock(&consumer_mu_);
  DiscardLocked();
}

PushOutcome SubscriptionState::PushSlow(Message* m) {
  // Matched is not counted here: it is admitted + rejected (see Matched()),
  // so a push that is taken writes no counter of its own.
  // Acquire: pairs with the release in MarkClosing()/End().
  if (closing_.load(std::memory_order_acquire)) {
    Reject(DropReason::kClosed);
    return {.reason = DropReason::kClosed};
  }
  if (ended_.load(std::memory_order_acquire)) {
    Reject(DropReason::kShutdown);
    return {.reason = DropReason::kShutdown};
  }
  PushOutcome out;
  switch (policy_) {
    case OverflowPolicy::kDropNewest: {
      uint64_t position;
      if (!ring_->TryPush(m, &position)) {
        Reject(DropReason::kQueueFull);
        return {.reason = DropReason::kQueueFull};
      }
      break;
    }
    case OverflowPolicy::kDropOldest: {
      absl::MutexLock lock(&queue_mu_);
      if (size_ == capacity_) {
        out.evicted = TakeFrontLocked().message;
        CountDrop(DropReason::kEvictedOldest);
      }
      AdmitLocked(m);
      break;
    }
    case OverflowPolicy::kBlock: {
      // A publisher that may wait defers instead (PushOrDefer()), and waits
      // with no pin held (WaitForRoom()); here a full queue drops at once.
      absl::MutexLock lock(&queue_mu_);
      if (size_ == capacity_) {
        Reject(DropReason::kBlockTimeout);
        return {.reason = DropReason::kBlockTimeout};
      }
      AdmitLocked(m);
      break;
    }
  }
  out.taken = true;
  AfterPush();
  return out;
}

void SubscriptionState::AdmitLocked(Message* m) {
  buffer_[(head_ + size_) % capacity_] = {m, ++admitted_};
  ++size_;
  if (size_ > high_water_.load(std::memory_order_relaxed)) {
    // Relaxed: written under queue_mu_ only; a statistic.
    high_water_.store(size_, std::memory_order_relaxed);
  }
}

PushOutcome SubscriptionState::PushOrDeferSlow(Message* m) {
  PushOutcome out;
  {
    // Admit, defer or reject in one critical section: a check for room
    // followed by a separate push could lose the room to another publisher
    // and drop a message that should have waited.
    absl::MutexLock lock(&queue_mu_);
    // Acquire: pairs with the release in MarkClosing()/End(). Read under
    // queue_mu_, which DropDeferred() takes after setting them: a deferral
    // made here is seen and counted there.
    const bool closing = closing_.load(std::memory_order_acquire);
    const bool ended = ended_.load(std::memory_order_acquire);
    if (closing || ended) {
      out.reason = closing ? DropReason::kClosed : DropReason::kShutdown;
      Reject(out.reason);
      return out;
    }
    if (size_ == capacity_) {
      ++blocked_publishers_;
      ++deferred_;
      out.deferred = true;
      return out;
    }
    AdmitLocked(m);
  }
  out.taken = true;
  AfterPush();
  return out;
}

PushOutcome SubscriptionState::SettleDeferred(Message* m, bool give_up) {
  PushOutcome out;
  {
    absl::MutexLock lock(&queue_mu_);
    out = SettleDeferredLocked(m, give_up);
  }
  if (out.taken) AfterPush();
  return out;
}

void SubscriptionState::WaitForRoom(absl::Time deadline) {
  EnsureThreadIdentity();
  absl::MutexLock lock(&queue_mu_);
  // Acquire: pairs with the release in MarkClosing()/End(), which then take
  // queue_mu_ to wake us.
  while (deferred_ > 0 && size_ == capacity_ &&
         !closing_.load(std::memory_order_acquire) &&
         !ended_.load(std::memory_order_acquire)) {
    if (not_full_.WaitWithDeadline(&queue_mu_, deadline)) break;
  }
}

PushOutcome SubscriptionState::SettleDeferredLocked(Message* m, bool give_up) {
  PushOutcome out;
  if (deferred_ == 0) {
    // Counted already, when the subscription closed or ended.
    out.reason = deferred_drop_reason_;
    return out;
  }
  const bool closing = closing_.load(std::memory_order_acquire);
  const bool ended = ended_.load(std::memory_order_acquire);
  if (!closing && !ended && size_ == capacity_ && !give_up) {
    out.deferred = true;
    return out;
  }
  --deferred_;
  --blocked_publishers_;
  if (closing || ended || size_ == capacity_) {
    out.reason = closing ? DropReason::kClosed
                 : ended ? DropReason::kShutdown
                         : DropReason::kBlockTimeout;
    Reject(out.reason);
    return out;
  }
  AdmitLocked(m);
  out.taken = true;
  return out;
}

bool SubscriptionState::HasDeferred() const {
  absl::MutexLock lock(&queue_mu_);
  return deferred_ > 0;
}

void SubscriptionState::DropDeferred(DropReason reason) {
  absl::MutexLock lock(&queue_mu_);
  if (deferred_ == 0) return;
  deferred_drop_reason_ = reason;
  blocked_publishers_ -= deferred_;
  Reject(reason, static_cast<uint64_t>(deferred_));
  deferred_ = 0;
}

bool SubscriptionState::Offer(Message* m) {
  // Acquire: pairs with the release in MarkClosing()/End(). A member that is
  // closing is skipped, not offered the message.
  if (closing_.load(std::memory_order_acquire) ||
      ended_.load(std::memory_order_acquire)) {
    return false;
  }
  if (ring_ != nullptr) {
    uint64_t position;
    if (!ring_->TryPush(m, &position)) return false;
  } else {
    absl::MutexLock lock(&queue_mu_);
    if (size_ == capacity_) return false;
    AdmitLocked(m);
  }
  // A member's matched counts the messages given to it: admitted ones.
  AfterPush();
  return true;
}

void SubscriptionState::AfterPushToExecutor() {
  if (notifier_) {
    // Seq_cst: the same Dekker pair as for callbacks, with Rearm().
    if (!scheduled_.load(std::memory_order_seq_cst) &&
        !scheduled_.exchange(true, std::memory_order_seq_cst)) {
      notifier_();
    }
    return;
  }
  // Seq_cst: with the ring's seq_cst slot store, forms a Dekker pair with
  // RunTurn()'s seq_cst store of false followed by its emptiness check, so
  // either this publisher schedules a turn or the executor sees the message.
  if (!scheduled_.load(std::memory_order_seq_cst) &&
      !scheduled_.exchange(true, std::memory_order_seq_cst)) {
    dispatcher_->Submit(shared_from_this());
  }
}

void SubscriptionState::WakeConsumer() {
  absl::MutexLock lock(&consumer_mu_);
  ++wake_epoch_;
  consumer_cv_.SignalAll();
}

uint64_t SubscriptionState::DroppedTotal() const {
  uint64_t sum = 0;
  // Relaxed: statistics.
  for (const auto& d : dropped_) sum += d.load(std::memory_order_relaxed);
  return sum;
}

bool SubscriptionState::HasMessageLocked() const {
  if (ring_ != nullptr) return ring_->HasMessage();
  absl::MutexLock lock(&queue_mu_);
  return size_ > 0;
}

void SubscriptionState::NoteDepthLocked(uint64_t position) {
  // The depth just before the first pop of a receive call. The queue only
  // shrinks by pops, so that is the deepest point since the previous call.
  // A consumer that keeps up finds the next slot empty: the depth was 1 (a
  // push whose slot is not yet written does not count), known without
  // reading the producers' enqueue position, whose cache line that read
  // would take from them on almost every push.
  const uint64_t depth =
      ring_->IsReady(position + 1) ? ring_->Admitted() - position : 1;
  if (depth > high_water_.load(std::memory_order_relaxed)) {
    // Relaxed: single writer (the consumer); a statistic.
    high_water_.store(depth, std::memory_order_relaxed);
  }
}

uint64_t SubscriptionState::TakeMissedLocked() {
  // Drops are looked at on the first pop of a receive call only: publishers
  // write the drop counters on every drop, so reading them on every pop
  // would take their cache line from the publishers once per message just
  // when the queue overflows. A drop during the call is reported on the
  // next call's first delivery.
  const uint64_t dropped = DroppedTotal();
  const uint64_t missed = dropped - dropped_seen_;
  dropped_seen_ = dropped;
  return missed;
}

void SubscriptionState::CountDeliveredLocked(uint64_t n) {
  // Relaxed: single writer (the consumer, under consumer_mu_).
  delivered_.store(delivered_.load(std::memory_order_relaxed) + n,
                   std::memory_order_relaxed);
}

SubscriptionState::LockedEntry SubscriptionState::TakeFrontLocked() {
  const LockedEntry e = buffer_[head_];
  head_ = (head_ + 1) % capacity_;
  --size_;
  return e;
}

bool SubscriptionState::PopLocked(Delivery* out, bool first_of_call) {
  Message* m;
  uint64_t sequence;
  if (ring_ != nullptr) {
    uint64_t position;
    if (!ring_->TryPop(&m, &position)) return false;
    sequence = position + 1;
    if (first_of_call) NoteDepthLocked(position);
  } else {
    absl::MutexLock lock(&queue_mu_);
    if (size_ == 0) return false;
    const LockedEntry e = TakeFrontLocked();
    m = e.message;
    sequence = e.sequence;
    if (blocked_publishers_ > 0) not_full_.Signal();
  }
  CountDeliveredLocked(1);
  *out = Delivery(MessageRef::Adopt(m), sequence,
                  first_of_call ? TakeMissedLocked() : 0);
  return true;
}

size_t SubscriptionState::PopBatchLocked(size_t max_messages,
                                         std::vector<Delivery>* out) {
  // As PopLocked() in a loop, with the per-call work done once: the depth,
  // the drops and the delivered count; for a locked queue, one lock and at
  // most one wake-up of the blocked publishers. Written out, not shared with
  // PopLocked() through a callback: GCC then stopped inlining the vector's
  // emplace_back, and a delivery cost 50-75 instructions instead of 43
  // (bench/inproc_cost.sh).
  size_t n = 0;
  if (ring_ != nullptr) {
    Message* m;
    uint64_t position;
    if (!ring_->TryPop(&m, &position)) return 0;
    NoteDepthLocked(position);
    out->emplace_back(MessageRef::Adopt(m), position + 1, TakeMissedLocked());
    n = 1;
    while (n < max_messages && ring_->TryPop(&m, &position)) {
      out->emplace_back(MessageRef::Adopt(m), position + 1, 0);
      ++n;
    }
  } else {
    absl::MutexLock lock(&queue_mu_);
    if (size_ == 0) return 0;
    const uint64_t missed = TakeMissedLocked();
    for (; n < max_messages && size_ > 0; ++n) {
      const LockedEntry e = TakeFrontLocked();
      out->emplace_back(MessageRef::Adopt(e.message), e.sequence,
                        n == 0 ? missed : 0);
    }
    if (blocked_publishers_ > 0) not_full_.SignalAll();
  }
  CountDeliveredLocked(n);
  return n;
}

absl::Status SubscriptionState::EndedStatusLocked() const {
  if (ended_by_broker_ && !owner_closed_.load(std::memory_order_relaxed)) {
    return absl::OutOfRangeError(absl::StrCat(
        "subscription ", id_, " to \"", pattern_, "\" ended by the broker"));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("subscription ", id_, " to \"", pattern_, "\" is closed"));
}

bool SubscriptionState::WaitLocked(absl::Time deadline,
                                   const std::stop_token& stop) {
  EnsureThreadIdentity();
  const uint64_t key = wake_epoch_;
  while (wake_epoch_ == key && !stop.stop_requested()) {
    if (consumer_cv_.WaitWithDeadline(&consumer_mu_, deadline)) return false;
  }
  return true;
}

absl::StatusOr<Delivery> SubscriptionState::Receive(
    Deadline deadline, const std::stop_token& stop) {
  Delivery out;
  HERALD_RETURN_IF_ERROR(
      ReceiveInto(deadline, stop, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return PopLocked(&out, /*first_of_call=*/true);
      }));
  return out;
}

absl::Status SubscriptionState::ReceiveBatch(size_t max_messages,
                                             Deadline deadline,
                                             std::vector<Delivery>* out,
                                             const std::stop_token& stop) {
  out->clear();
  if (max_messages == 0) {
    return absl::InvalidArgumentError("receive batch: max_messages is 0");
  }
  return ReceiveInto(deadline, stop, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (out->capacity() == 0) out->reserve(std::min<size_t>(max_messages, 64));
    return PopBatchLocked(max_messages, out) > 0;
  });
}

bool SubscriptionState::TakeQueued(size_t max_messages,
                                   std::vector<Delivery>* out) {
  out->clear();
  absl::MutexLock lock(&consumer_mu_);
  // As ReceiveInto(): what is queued is taken even while closing.
  if (frozen_) return false;
  if (max_messages == 0 || PopBatchLocked(max_messages, out) == 0) {
    return !closing_.load(std::memory_order_acquire);
  }
  return true;
}

absl::Status SubscriptionState::ReceiveInto(Deadline deadline,
                                            const std::stop_token& stop,
                                            absl::FunctionRef<bool()> take) {
  if (callback_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "subscription ", id_, " delivers to a callback; it cannot Receive"));
  }
  // Withdraws this consumer's announcement on every way out. Only a call
  // that announced finds it set, so one that finds messages writes nothing
  // to the cache line every publisher reads. Relaxed: only publishers that
  // might wake us read it, and a stale true costs one needless wake-up at
  // most.
  struct Unpark {
    std::atomic<bool>* parked;
    ~Unpark() {
      if (parked->load(std::memory_order_relaxed)) {
        parked->store(false, std::memory_order_relaxed);
      }
    }
  } unpark{&parked_};
  // Registered only before the first wait, outside consumer_mu_ (its
  // destructor waits for a running StopWake, which takes consumer_mu_, and
  // its constructor runs StopWake at once if stop was already requested): a
  // call that finds messages queued does not touch the stop state at all.
  std::optional<std::stop_callback<StopWake>> on_stop;
  const bool infinite = deadline.infinite();
  bool spun = false;
  while (true) {
    {
      absl::MutexLock lock(&consumer_mu_);
      while (true) {
        if (!frozen_ && take()) return absl::OkStatus();
        if (frozen_) return EndedStatusLocked();
        if (closing_.load(std::memory_order_acquire)) {
          return absl::FailedPreconditionError(absl::StrCat(
              "subscription ", id_, " to \"", pattern_, "\" is closing"));
        }
        if (stop.stop_requested()) {
          return absl::CancelledError("receive: stop requested");
        }
        // The first look at the clock: a call that finds a message reads
        // none (and a timeout starts here).
        if (!infinite && deadline.Passed()) {
          return absl::DeadlineExceededError(
              "receive: no message before the deadline");
        }
        // Spin briefly before the first wait (see spin.h): a message that
        // is about to arrive costs no wake-up.
        if (!spun) {
          spun = true;
          if (SpinUntil(kSpinsBeforePark,
                        [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
                          return HasMessageLocked();
                        })) {
            continue;
          }
        }
        // Announce, then check the queue again before waiting (event count).
        // The publisher that wakes us clears the flag, so it is announced
        // afresh before each wait. Relaxed load: only this consumer sets it.
        if (!parked_.load(std::memory_order_relaxed)) {
          // Seq_cst: ordered before the re-check of the queue.
          parked_.store(true, std::memory_order_seq_cst);
          continue;
        }
        // The first wait needs the stop callback: leave the lock to make it.
        if (stop.stop_possible() && !on_stop.has_value()) break;
        WaitLocked(deadline.Get(), stop);
      }
    }
    // With consumer_mu_ released; then everything is checked again.
    on_stop.emplace(stop, StopWake{&consumer_mu_, &consumer_cv_, &wake_epoch_});
  }
}

bool SubscriptionState::RunTurn() {
  for (size_t n = 0; n < batch_limit_; ++n) {
    Delivery d;
    {
      absl::MutexLock lock(&consumer_mu_);
      // Ended (Shutdown() past its drain): what is left is dropped by End(),
      // not handed to the callback while Shutdown() ends the others.
      if (frozen_ || closing_.load(std::memory_order_acquire) ||
          ended_.load(std::memory_order_acquire)) {
        return false;
      }
      if (!PopLocked(&d, /*first_of_call=*/n == 0)) break;
      callback_running_ = true;
      callback_thread_ = std::this_thread::get_id();
    }
    try {
      callback_(d);
    } catch (...) {
      // Exceptions never cross Herald's API; a throwing callback loses
      // nothing else (the message was delivered to it).
    }
    absl::MutexLock lock(&consumer_mu_);
    callback_running_ = false;
    consumer_cv_.SignalAll();
    if (n + 1 == batch_limit_) return true;  // Yield to other subscriptions.
  }
  // Seq_cst: see AfterPush().
  scheduled_.store(false, std::memory_order_seq_cst);
  bool more;
  {
    absl::MutexLock lock(&consumer_mu_);
    if (frozen_ || closing_.load(std::memory_order_acquire)) return false;
    more = HasMessageLocked();
  }
  return more && !scheduled_.exchange(true, std::memory_order_seq_cst);
}

bool SubscriptionState::Rearm() {
  // Seq_cst: see AfterPush().
  scheduled_.store(false, std::memory_order_seq_cst);
  bool more;
  {
    absl::MutexLock lock(&consumer_mu_);
    if (frozen_) return false;
    more = HasMessageLocked();
  }
  return more && !scheduled_.exchange(true, std::memory_order_seq_cst);
}

void SubscriptionState::MarkClosing() {
  // Release: pairs with the acquire loads in Push()/Offer().
  closing_.store(true, std::memory_order_release);
  {
    absl::MutexLock lock(&queue_mu_);
    not_full_.SignalAll();
  }
  absl::MutexLock lock(&consumer_mu_);
  ++wake_epoch_;
  consumer_cv_.SignalAll();
}

uint64_t SubscriptionState::DiscardLocked() {
  uint64_t n = 0;
  if (ring_ != nullptr) {
    Message* m;
    uint64_t position;
    while (ring_->TryPop(&m, &position)) {
      m->Unref();
      ++n;
    }
  } else {
    absl::MutexLock lock(&queue_mu_);
    while (size_ > 0) {
      TakeFrontLocked().message->Unref();
      ++n;
    }
  }
  return n;
}

SubscriptionTotals SubscriptionState::FinishClose() {
  absl::MutexLock lock(&consumer_mu_);
  // Wait out a running callback, unless this is that callback closing its own
  // subscription (it then stops when the callback returns).
  EnsureThreadIdentity();
  while (callback_running_ && callback_thread_ != std::this_thread::get_id()) {
    consumer_cv_.Wait(&consumer_mu_);
  }
  // Release: pairs with the acquire in owner_closed().
  owner_closed_.store(true, std::memory_order_release);
  if (frozen_) return final_totals_;
  DropDeferred(DropReason::kClosed);
  // Relaxed: read back under consumer_mu_ by snapshots.
  abandoned_.store(DiscardLocked(), std::memory_order_relaxed);
  final_totals_ = Totals();
  frozen_ = true;
  ++wake_epoch_;
  consumer_cv_.SignalAll();
  return final_totals_;
}

void SubscriptionState::MarkEnded() {
  // Release: pairs with the acquire loads in Push()/Offer().
  ended_.store(true, std::memory_order_release);
  absl::MutexLock lock(&queue_mu_);
  not_full_.SignalAll();
}

SubscriptionTotals SubscriptionState::End() {
  MarkEnded();
  absl::MutexLock lock(&consumer_mu_);
  EnsureThreadIdentity();
  while (callback_running_ && callback_thread_ != std::this_thread::get_id()) {
    consumer_cv_.Wait(&consumer_mu_);
  }
  if (frozen_) return final_totals_;
  DropDeferred(DropReason::kShutdown);
  const uint64_t left = DiscardLocked();
  dropped_[static_cast<size_t>(DropReason::kShutdown)].fetch_add(
      left, std::memory_order_relaxed);
  final_totals_ = Totals();
  frozen_ = true;
  ended_by_broker_ = true;
  ++wake_epoch_;
  consumer_cv_.SignalAll();
  return final_totals_;
}

size_t SubscriptionState::Depth() const {
  if (ring_ != nullptr) return ring_->Size();
  absl::MutexLock lock(&queue_mu_);
  return size_;
}

uint64_t SubscriptionState::Matched() const {
  // Relaxed: statistics.
  if (ring_ != nullptr) {
    return ring_->Admitted() + rejected_.load(std::memory_order_relaxed);
  }
  // A kBlock publisher waiting for room has matched already; it stops
  // waiting by being admitted or rejected under this mutex, so the sum is
  // consistent.
  absl::MutexLock lock(&queue_mu_);
  return admitted_ + static_cast<uint64_t>(blocked_publishers_) +
         rejected_.load(std::memory_order_relaxed);
}

SubscriptionTotals SubscriptionState::Totals() const {
  SubscriptionTotals t;
  // Relaxed throughout: a statistics snapshot (see the class comment).
  // Matched is read last, so that it runs ahead of the other terms, not
  // behind them.
  t.delivered = delivered_.load(std::memory_order_relaxed);
  for (size_t i = 0; i < kDropReasonCount; ++i) {
    t.dropped_by_reason[i] = dropped_[i].load(std::memory_order_relaxed);
  }
  t.queued = Depth();
  t.abandoned = abandoned_.load(std::memory_order_relaxed);
  t.high_water =
      std::max<uint64_t>(high_water_.load(std::memory_order_relaxed), t.queued);
  t.matched = Matched();
  return t;
}

void SubscriptionState::FillStats(v1::SubscriptionStats* out) const {
  const SubscriptionTotals t = Totals();
  out->set_id(id_);
  out->set_pattern(pattern_);
  out->set_queue_group(group_);
  out->set_name(name_);
  out->set_overflow(ToProto(policy_));
  out->set_capacity(capacity_);
  out->set_matched(t.matched);
  out->set_delivered(t.delivered);
  FillDropCounts(t.dropped_by_reason, out->mutable_dropped());
  out->set_queued(t.queued);
  out->set_abandoned(t.abandoned);
  out->set_high_water(t.high_water);
  out->set_callback(is_callback());
  out->set_closed(closing());
}

}  // namespace herald::internal
