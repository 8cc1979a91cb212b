// A bounded, lock-free, multi-producer single-consumer ring of pointers with
// an exact capacity (not rounded to a power of two).
//
// The algorithm is Dmitry Vyukov's bounded MPMC queue, specialised to one
// consumer: every slot carries a sequence number that says whose turn it is.
// Design notes: docs/design/queue.md.
//
// Thread safety: TryPush() from any producer thread; TryPop() and
// HasMessage() only from the single consumer (callers serialize them, e.g.
// under a consumer mutex); Size() from any thread (exact when quiescent).
//
// Invariants, for a slot at index i = pos % capacity (sequences are doubled,
// so that "free" and "full" differ even at capacity 1, where Vyukov's plain
// pos / pos + 1 encoding would make them equal):
//   sequence == 2 * pos                 free for the producer of `pos`
//   sequence == 2 * pos + 1             holds the message at `pos`
//   sequence == 2 * (pos + capacity)    released by the consumer for the
//                                       producer of the next lap
#ifndef HERALD_BROKER_INTERNAL_MPSC_RING_H_
#define HERALD_BROKER_INTERNAL_MPSC_RING_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "broker/util/check.h"

namespace herald::internal {

inline constexpr size_t kCacheLineSize = 64;

template <typename T>
class MpscRing {
 public:
  // REQUIRES: capacity > 0.
  explicit MpscRing(size_t capacity)
      : capacity_(capacity),
        mask_((capacity & (capacity - 1)) == 0 ? capacity - 1 : 0),
        slots_(new Slot[capacity]) {
    HERALD_CHECK(capacity > 0);
    for (size_t i = 0; i < capacity; ++i) {
      slots_[i].sequence.store(2 * i, std::memory_order_relaxed);
    }
  }

  MpscRing(const MpscRing&) = delete;
  MpscRing& operator=(const MpscRing&) = delete;

  size_t capacity() const { return capacity_; }

  // Any producer. Stores `value` and returns true, setting `*position` to its
  // 0-based admission position, or returns false when the ring is full.
  bool TryPush(T value, uint64_t* position) {
    // Relaxed: only a starting guess; the CAS below decides.
    uint64_t pos = enqueue_pos_.load(std::memory_order_relaxed);
    Slot* slot;
    while (true) {
      slot = &slots_[Index(pos)];
      // Acquire: pairs with the consumer's release in TryPop(), so its read
      // of the old value happens before our write of the new one.
      const uint64_t seq = slot->sequence.load(std::memory_order_acquire);
      const int64_t diff = static_cast<int64_t>(seq - 2 * pos);
      if (diff == 0) {
        // Relaxed: the slot's sequence, not enqueue_pos_, publishes data.
        if (enqueue_pos_.compare_exchange_weak(pos, pos + 1,
                                               std::memory_order_relaxed)) {
          break;
        }
      } else if (diff < 0) {
        return false;  // Still holds the message from the previous lap: full.
      } else {
        pos = enqueue_pos_.load(std::memory_order_relaxed);
      }
    }
    slot->value = value;
    // Seq_cst: releases the value to the consumer, and is ordered before the
    // producer's later seq_cst load of the consumer's "waiting" flag (the
    // Dekker pattern of the event count: see SubscriptionState::AfterPush).
    slot->sequence.store(2 * pos + 1, std::memory_order_seq_cst);
    *position = pos;
    return true;
  }

  // The single consumer. Takes the oldest message and returns true, setting
  // `*position` to its admission position, or returns false if none is ready.
  bool TryPop(T* value, uint64_t* position) {
    // Relaxed: only the consumer writes dequeue_pos_.
    const uint64_t pos = dequeue_pos_.load(std::memory_order_relaxed);
    Slot& slot = slots_[Index(pos)];
    // Seq_cst (acquire at least): pairs with the producer's store, so the
    // value is visible; seq_cst orders it after the consumer's announcement
    // that it is about to wait.
    if (slot.sequence.load(std::memory_order_seq_cst) != 2 * pos + 1) {
      return false;
    }
    *value = slot.value;
    *position = pos;
    // Release: our read of the value happens before the next producer's write.
    slot.sequence.store(2 * (pos + capacity_), std::memory_order_release);
    // Release: Size() readers see a consistent count after the slot is free.
    dequeue_pos_.store(pos + 1, std::memory_order_release);
    return true;
  }

  // The single consumer: true if TryPop() would succeed now.
  bool HasMessage() const {
    const uint64_t pos = dequeue_pos_.load(std::memory_order_relaxed);
    // Seq_cst: see TryPop().
    return slots_[Index(pos)].sequence.load(std::memory_order_seq_cst) ==
           2 * pos + 1;
  }

  // The single consumer: true if the message at `position` (at or after the
  // next one to pop, within one lap) is written and not yet popped. Reads
  // only that slot, so unlike Admitted() it takes no cache line from the
  // producers.
  bool IsReady(uint64_t position) const {
    // Acquire: a statistic's guess, but it pairs with the producer's store.
    return slots_[Index(position)].sequence.load(std::memory_order_acquire) ==
           2 * position + 1;
  }

  // Any thread: messages admitted and not yet popped (including a push whose
  // position is taken but whose value is still being written).
  size_t Size() const {
    // Acquire on both: a consistent-enough pair for statistics; exact when no
    // push or pop is in flight.
    const uint64_t dequeued = dequeue_pos_.load(std::memory_order_acquire);
    const uint64_t enqueued = enqueue_pos_.load(std::memory_order_acquire);
    return enqueued > dequeued ? static_cast<size_t>(enqueued - dequeued) : 0;
  }

  // Any thread: pushes admitted so far (including one whose value is still
  // being written); exact when no push is in flight.
  uint64_t Admitted() const {
    // Relaxed: a statistic; it never publishes data.
    return enqueue_pos_.load(std::memory_order_relaxed);
  }

 private:
  struct Slot {
    std::atomic<uint64_t> sequence{0};
    T value{};
  };

  size_t Index(uint64_t pos) const {
    return mask_ != 0 || capacity_ == 1 ? static_cast<size_t>(pos & mask_)
                                        : static_cast<size_t>(pos % capacity_);
  }

  const size_t capacity_;
  const uint64_t mask_;  // capacity - 1 when capacity is a power of two.
  const std::unique_ptr<Slot[]> slots_;
  // Written by producers.
  alignas(kCacheLineSize) std::atomic<uint64_t> enqueue_pos_{0};
  // Written by the consumer only.
  alignas(kCacheLineSize) std::atomic<uint64_t> dequeue_pos_{0};
};

}  // namespace herald::internal

#endif  // HERALD_BROKER_INTERNAL_MPSC_RING_H_
