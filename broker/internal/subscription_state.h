// SubscriptionState: the broker's side of one subscription — its bounded
// queue (per overflow policy), its counters, consumer parking, and, for
// callback subscriptions, its serial executor on the dispatcher pool.
//
// Design notes: docs/design/queue.md (queues, parking, accounting) and
// docs/design/dispatcher.md (callbacks).
//
// Thread safety: Push()/Offer() from any publisher thread; the consumer side
// (Receive*, RunTurn) is serialized by consumer_mu_; Close()/End() from any
// thread.
//
// Invariants: every push either queues the message or counts one drop reason;
// every pop counts one delivery (or, at close, one abandoned message, at
// shutdown one kShutdown drop). Hence, when nothing is in flight:
//   matched == delivered + dropped (all reasons) + queued + abandoned.
#ifndef HERALD_BROKER_INTERNAL_SUBSCRIPTION_STATE_H_
#define HERALD_BROKER_INTERNAL_SUBSCRIPTION_STATE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "broker/delivery.h"
#include "broker/internal/deadline.h"
#include "broker/internal/mpsc_ring.h"
#include "broker/message.h"
#include "broker/options.h"
#include "schemas/stats.pb.h"

namespace herald::internal {

class Dispatcher;

// A counter written by many threads, alone on its cache line.
struct alignas(kCacheLineSize) PaddedCounter {
  std::atomic<uint64_t> value{0};
};

// Copies per-reason counts into the stats proto.
void FillDropCounts(const DropCounts& counts, v1::DropCounts* out);

// What Push() did with a message.
// 16 bytes, so that it is returned in registers.
struct PushOutcome {
  Message* evicted = nullptr;  // kDropOldest: an old message the caller unrefs.
  DropReason reason = DropReason::kQueueFull;  // When !taken && !deferred.
  bool taken = false;
  // PushOrDefer()/SettleDeferred(): neither taken nor dropped yet; the
  // caller keeps its reference and settles it later.
  bool deferred = false;
};
static_assert(sizeof(PushOutcome) <= 16);

class SubscriptionState
    : public std::enable_shared_from_this<SubscriptionState> {
 public:
  using Callback = std::function<void(const Delivery&)>;
  // Called on a publisher's thread when a message arrives and the
  // subscription is not already marked ready (see Rearm()). Must not block.
  using Notifier = std::function<void()>;

  // REQUIRES: capacity > 0 (validated by the broker); at most one of
  // `callback` and `notifier` set.
  SubscriptionState(uint64_t id, std::string pattern, std::string group,
                    std::string name, OverflowPolicy policy, size_t capacity,
                    absl::Duration block_timeout, size_t batch_limit,
                    Callback callback, Notifier notifier,
                    Dispatcher* dispatcher);
  ~SubscriptionState();

  uint64_t id() const { return id_; }
  const std::string& pattern() const { return pattern_; }
  const std::string& group() const { return group_; }
  OverflowPolicy policy() const { return policy_; }
  absl::Duration block_timeout() const { return block_timeout_; }
  bool is_callback() const { return static_cast<bool>(callback_); }

  // Publisher side. Consumes one reference to `m` when taken. Counts matched
  // and, when not taken, the drop. Never waits: a full kBlock queue drops at
  // once (kBlockTimeout); a publisher that may wait uses PushOrDefer().
  ABSL_ATTRIBUTE_ALWAYS_INLINE PushOutcome Push(Message* m) {
    // The common case inline, for the fan-out loop: a drop-newest ring with
    // room, neither closing nor ended.
    // Acquire: pairs with the release in MarkClosing()/End().
    if (ring_ != nullptr && !closing_.load(std::memory_order_acquire) &&
        !ended_.load(std::memory_order_acquire)) {
      uint64_t position;
      if (ring_->TryPush(m, &position)) {
        AfterPush();
        PushOutcome out;
        out.taken = true;
        return out;
      }
    }
    return PushSlow(m);
  }
  // A full kBlock queue defers the push instead of dropping it. The deferred
  // push counts as matched at once (like a waiting publisher); the caller
  // keeps its reference to `m` and settles it later with SettleDeferred():
  // a publisher that must not wait (the network server) polls; an
  // application's publisher waits with WaitForRoom(), unpinned, between
  // tries. Other policies, or room in the queue: as Push(m).
  ABSL_ATTRIBUTE_ALWAYS_INLINE PushOutcome PushOrDefer(Message* m) {
    return policy_ == OverflowPolicy::kBlock ? PushOrDeferSlow(m) : Push(m);
  }
  // Settles a deferred push of `m`: taken if there is room now (consuming
  // the caller's reference), dropped if the subscription is closing or
  // ended, or with `give_up` (kBlockTimeout); otherwise still deferred.
  // Once the subscription has closed or ended, its deferred pushes are
  // already counted as dropped: then this returns a drop and counts nothing.
  // On a drop the caller keeps its reference.
  PushOutcome SettleDeferred(Message* m, bool give_up);
  // Waits, with no lock or pin held, until a deferred push may be settled:
  // there is room, the subscription is closing or ended (or has counted its
  // deferred pushes), or `deadline` passes. The caller then settles it with
  // SettleDeferred() while pinned, so that a Close() that waits for pinned
  // publishers also waits for the AfterPush() of a push it admits.
  void WaitForRoom(absl::Time deadline);
  // True while a deferred push is unsettled.
  bool HasDeferred() const;

  // Queue-group side: queues `m` only if there is room right now (never
  // evicts or blocks), counting matched only when taken. Consumes one
  // reference when it returns true.
  bool Offer(Message* m);

  // Consumer side (pull subscriptions).
  absl::StatusOr<Delivery> Receive(Deadline deadline,
                                   const std::stop_token& stop);
  // Replaces `*out`'s contents (empty on an error), keeping its capacity.
  absl::Status ReceiveBatch(size_t max_messages, Deadline deadline,
                            std::vector<Delivery>* out,
                            const std::stop_token& stop);

  // Non-blocking, for the network server's drain: replaces `*out`'s
  // contents with up to `max_messages` queued messages. Returns false once
  // nothing more will come (ended or closing); an empty `*out` with true
  // means the queue is empty right now. Builds no status, so an empty poll
  // allocates nothing. REQUIRES: a pull subscription.
  bool TakeQueued(size_t max_messages, std::vector<Delivery>* out);

  // Callback subscriptions: delivers up to the batch limit on the calling
  // dispatcher thread. Returns true if it should be scheduled again.
  bool RunTurn();

  // Notifier subscriptions (the network server): after draining, clears the
  // "ready" mark so that the next push notifies again. Returns true if a
  // message arrived meanwhile (the subscription is still marked ready and
  // the caller should drain it again).
  bool Rearm();

  // First step of closing: publishers from now on count kClosed, and blocked
  // publishers and consumers wake up.
  void MarkClosing();
  // Last step of closing, once no publisher can reach this subscription:
  // waits out a running callback (unless called from inside it), counts what
  // is left in the queue as abandoned and freezes the totals. Idempotent: a
  // later call returns the same totals.
  SubscriptionTotals FinishClose();
  // First step of ending at broker shutdown: publishers from now on count
  // kShutdown, and publishers waiting for room stop waiting. Shutdown()
  // marks every subscription before it ends any, so that a callback that
  // waits for room in one subscription does not hold up the end of another.
  void MarkEnded();
  // Ends the subscription at broker shutdown (marking it first, if not yet):
  // what is left in the queue is dropped (kShutdown), receivers get
  // kOutOfRange, totals freeze.
  SubscriptionTotals End();

  bool closing() const { return closing_.load(std::memory_order_acquire); }
  // True once FinishClose() ran: the application closed it.
  bool owner_closed() const {
    return owner_closed_.load(std::memory_order_acquire);
  }
  // Messages currently queued.
  size_t Depth() const;
  // A live snapshot of the counters (see the accounting note above).
  SubscriptionTotals Totals() const;
  void FillStats(v1::SubscriptionStats* out) const;

 private:
  struct LockedEntry {
    Message* message;
    uint64_t sequence;
  };

  // Takes the oldest message. `first_of_call`: the first pop of a receive
  // call, which records the queue's depth in the high-water mark and
  // reports the drops since the previous report as missed (see the .cc).
  bool PopLocked(Delivery* out, bool first_of_call)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(consumer_mu_);
  // Appends up to `max_messages` (> 0) queued messages to `*out`, as one
  // receive call: returns how many.
  size_t PopBatchLocked(size_t max_messages, std::vector<Delivery>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(consumer_mu_);
  // Removes the oldest entry of the locked queue. REQUIRES: size_ > 0.
  LockedEntry TakeFrontLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  // Records the queue's depth before the pop of `position` in the
  // high-water mark. REQUIRES: the ring.
  void NoteDepthLocked(uint64_t position)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(consumer_mu_);
  // The drops since the previous report (a delivery's missed()).
  uint64_t TakeMissedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(consumer_mu_);
  void CountDeliveredLocked(uint64_t n)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(consumer_mu_);
  // Waits until `take` (called under consumer_mu_, and only while the
  // subscription is not frozen) takes at least one message and returns
  // true, or the deadline, `stop`, closing or the end comes first.
  absl::Status ReceiveInto(Deadline deadline, const std::stop_token& stop,
                           absl::FunctionRef<bool()> take);
  bool HasMessageLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(consumer_mu_);
  // Wakes a parked consumer or schedules the callback executor.
  void AfterPush() {
    if (!notifier_ && !callback_) {
      // Seq_cst: the event count's Dekker pair with the consumer's seq_cst
      // store of parked_ before its last emptiness check (see
      // ReceiveInto()). The first publisher to see it clears it, so a parked
      // consumer is woken once, not by every publish until it runs.
      if (parked_.load(std::memory_order_seq_cst) &&
          parked_.exchange(false, std::memory_order_seq_cst)) {
        WakeConsumer();
      }
      return;
    }
    AfterPushToExecutor();
  }
  // PushOrDefer() for kBlock.
  PushOutcome PushOrDeferSlow(Message* m);
  // Push() past its inline fast path: every policy and outcome.
  PushOutcome PushSlow(Message* m);
  void WakeConsumer();
  // AfterPush() for a callback or notifier subscription.
  void AfterPushToExecutor();
  void CountDrop(DropReason reason) {
    // Relaxed: statistics; the accounting identity is read once quiescent.
    dropped_[static_cast<size_t>(reason)].fetch_add(1,
                                                    std::memory_order_relaxed);
  }
  // A push that is not admitted: counted as matched and as dropped.
  void Reject(DropReason reason, uint64_t n = 1) {
    // Relaxed: statistics; the accounting identity is read once quiescent.
    dropped_[static_cast<size_t>(reason)].fetch_add(n,
                                                    std::memory_order_relaxed);
    rejected_.fetch_add(n, std::memory_order_relaxed);
  }
  // Counts every deferred push still unsettled as dropped for `reason`:
  // before the totals freeze (close, end).
  void DropDeferred(DropReason reason) ABSL_LOCKS_EXCLUDED(queue_mu_);
  // SettleDeferred() under queue_mu_; the caller runs AfterPush() once
  // unlocked if the push was taken.
  PushOutcome SettleDeferredLocked(Message* m, bool give_up)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  // Admits `m` at the tail of the locked queue. REQUIRES: room.
  void AdmitLocked(Message* m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  // Messages admitted to the queue plus pushes rejected: every push (or, for
  // a queue-group member, every message given to it), counted without a
  // write of its own on the push that is taken.
  uint64_t Matched() const;
  uint64_t DroppedTotal() const;
  // Empties the queue, returning how many messages it held.
  uint64_t DiscardLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(consumer_mu_);
  // Waits until something may have changed, `deadline` passes or `stop` is
  // requested. Returns false on timeout.
  bool WaitLocked(absl::Time deadline, const std::stop_token& stop)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(consumer_mu_);
  absl::Status EndedStatusLocked() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(consumer_mu_);

  const uint64_t id_;
  const std::string pattern_;
  const std::string group_;
  const std::string name_;
  const OverflowPolicy policy_;
  const size_t capacity_;
  const absl::Duration block_timeout_;
  const size_t batch_limit_;
  const Callback callback_;
  const Notifier notifier_;
  Dispatcher* const dispatcher_;

  // kDropNewest: the lock-free ring.
  std::unique_ptr<MpscRing<Message*>> ring_;

  // kDropOldest and kBlock: a ring buffer under queue_mu_.
  mutable absl::Mutex queue_mu_ ABSL_ACQUIRED_AFTER(consumer_mu_);
  absl::CondVar not_full_;  // kBlock publishers wait here.
  std::vector<LockedEntry> buffer_ ABSL_GUARDED_BY(queue_mu_);
  size_t head_ ABSL_GUARDED_BY(queue_mu_) = 0;
  size_t size_ ABSL_GUARDED_BY(queue_mu_) = 0;
  uint64_t admitted_ ABSL_GUARDED_BY(queue_mu_) = 0;
  int blocked_publishers_ ABSL_GUARDED_BY(queue_mu_) = 0;
  // Of blocked_publishers_, the deferred pushes (PushOrDefer()).
  int deferred_ ABSL_GUARDED_BY(queue_mu_) = 0;
  // The reason DropDeferred() counted the deferred pushes under, for their
  // publishers' results.
  DropReason deferred_drop_reason_ ABSL_GUARDED_BY(queue_mu_) =
      DropReason::kClosed;

  // Written by publishers.
  alignas(kCacheLineSize) std::atomic<uint64_t> rejected_{0};
  std::array<std::atomic<uint64_t>, kDropReasonCount> dropped_{};
  std::atomic<bool> closing_{false};
  std::atomic<bool> ended_{false};
  std::atomic<bool> owner_closed_{false};

  // Consumer side. consumer_mu_ serializes every pop (the ring has one
  // consumer) and is the event count's mutex for parking.
  alignas(kCacheLineSize) mutable absl::Mutex consumer_mu_;
  absl::CondVar consumer_cv_;
  uint64_t wake_epoch_ ABSL_GUARDED_BY(consumer_mu_) = 0;
  bool frozen_ ABSL_GUARDED_BY(consumer_mu_) = false;
  bool ended_by_broker_ ABSL_GUARDED_BY(consumer_mu_) = false;
  bool callback_running_ ABSL_GUARDED_BY(consumer_mu_) = false;
  std::thread::id callback_thread_ ABSL_GUARDED_BY(consumer_mu_);
  uint64_t dropped_seen_ ABSL_GUARDED_BY(consumer_mu_) = 0;
  SubscriptionTotals final_totals_ ABSL_GUARDED_BY(consumer_mu_);
  // Single writer (the consumer, under consumer_mu_); read by snapshots.
  alignas(kCacheLineSize) std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> abandoned_{0};
  std::atomic<uint64_t> high_water_{0};

  // Pull: a consumer announced it is about to park (event count); cleared
  // by the publisher that wakes it.
  alignas(kCacheLineSize) std::atomic<bool> parked_{false};
  // Callback: an executor turn is scheduled or running. Notifier: marked
  // ready (notified and not yet re-armed).
  std::atomic<bool> scheduled_{false};
};

}  // namespace herald::internal

#endif  // HERALD_BROKER_INTERNAL_SUBSCRIPTION_STATE_H_
