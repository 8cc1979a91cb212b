// Options and result types of the broker core: overflow policies, drop
// reasons, BrokerOptions, SubscriptionOptions, PublishResult and
// SubscriptionTotals.
//
// Every option documents its meaning, its default and its valid range; a bad
// value is refused with kInvalidArgument by Broker::Create() or Subscribe(),
// never clamped.
#ifndef HERALD_BROKER_OPTIONS_H_
#define HERALD_BROKER_OPTIONS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace herald {

// What a subscription's queue does with a new message when it is full.
enum class OverflowPolicy {
  // Drop the new message (counted kQueueFull). Lock-free. The default.
  kDropNewest,
  // Evict the oldest queued message to make room (counted kEvictedOldest).
  // Capacity 1 gives a latest-value subscription.
  kDropOldest,
  // Make that publisher wait for room, up to the subscription's
  // block_timeout; a timeout drops the message (counted kBlockTimeout).
  kBlock,
};

// Why a message matched by a subscription was not delivered to it.
enum class DropReason {
  kQueueFull = 0,      // kDropNewest queue full.
  kEvictedOldest = 1,  // kDropOldest evicted it for a newer message.
  kBlockTimeout = 2,   // kBlock queue stayed full past block_timeout.
  kClosed = 3,         // The subscription was closing.
  kShutdown = 4,       // The broker shut down before it was delivered.
  kGroupFull = 5,      // Every member of the queue group was full (counted
                       // on the group, not on a member).
};
inline constexpr size_t kDropReasonCount = 6;

// "queue_full", "evicted_oldest", ...: the names used in stats and logs.
absl::string_view DropReasonName(DropReason reason);
// "drop-newest", "drop-oldest", "block".
absl::string_view OverflowPolicyName(OverflowPolicy policy);

// Counts per drop reason, indexed by DropReason.
using DropCounts = std::array<uint64_t, kDropReasonCount>;

struct SubscriptionOptions {
  // Maximum messages held for this subscriber. Default (unset): the broker's
  // default_queue_capacity. Must be in [1, max_queue_capacity].
  std::optional<size_t> queue_capacity;
  // What happens when the queue is full. Default (unset): the broker's
  // default_overflow (itself kDropNewest by default).
  std::optional<OverflowPolicy> overflow;
  // kBlock only: the longest one publisher waits for room in this queue.
  // Default: 100ms. Must be in (0, max_block_timeout].
  absl::Duration block_timeout = absl::Milliseconds(100);
  // Queue group: subscriptions with the same pattern and group name split the
  // messages, each going to exactly one member whose queue has room. Default:
  // empty (no group). In a group, a full member is skipped rather than
  // evicting or blocking, whatever its overflow policy.
  std::string queue_group;
  // Callback subscriptions: the most messages one turn on the dispatcher pool
  // delivers before yielding to other subscriptions. Default: 64. Must be > 0.
  size_t callback_batch_limit = 64;
  // A label shown in stats. Default: empty.
  std::string name;
};

struct BrokerOptions {
  // Registry shards, each with its own mutex. Default: 16. Must be in
  // [1, 4096].
  size_t shard_count = 16;
  // Threads running callback subscriptions. A stuck callback holds one: the
  // pool size bounds how many stuck callbacks the others survive. Default: 2.
  // Must be in [1, 256].
  size_t dispatcher_threads = 2;
  // Queue capacity of a subscription that does not set one. Default: 1024.
  // Must be in [1, max_queue_capacity].
  size_t default_queue_capacity = 1024;
  // Overflow policy of a subscription that does not set one.
  // Default: kDropNewest.
  OverflowPolicy default_overflow = OverflowPolicy::kDropNewest;
  // The largest queue capacity a subscription may ask for. Default: 1 << 20.
  // Must be in [1, 1 << 30].
  size_t max_queue_capacity = size_t{1} << 20;
  // The largest message accepted, counting topic, payload and headers.
  // Default: 1 MiB. Must be in [1, 1 << 30].
  size_t max_message_bytes = size_t{1} << 20;
  // The most topic entries (topics with a subscription or a handle) the
  // registry holds; past it, Topic() and exact Subscribe() return
  // kResourceExhausted. Default: 100000. Must be > 0.
  size_t max_topics = 100000;
  // The largest block_timeout a kBlock subscription may set. Default: 10s.
  // Must be > 0.
  absl::Duration max_block_timeout = absl::Seconds(10);
};

// What one Publish() did. For every matched target (a subscription, or a
// queue group counted once): taken + dropped() == matched.
struct PublishResult {
  // Subscriptions and queue groups whose pattern matched the topic.
  uint32_t matched = 0;
  // How many of them queued the message.
  uint32_t taken = 0;
  // How many dropped this message, by reason (never kEvictedOldest).
  std::array<uint32_t, kDropReasonCount> dropped_by_reason{};
  // Older messages evicted from kDropOldest queues to make room for this one
  // (each counted kEvictedOldest on its subscription).
  uint32_t evicted = 0;

  uint32_t dropped() const {
    uint32_t sum = 0;
    for (uint32_t n : dropped_by_reason) sum += n;
    return sum;
  }
  uint32_t dropped(DropReason reason) const {
    return dropped_by_reason[static_cast<size_t>(reason)];
  }
};

// A subscription's counters. Once it is closed or ended they are final and
// matched == delivered + dropped() + queued + abandoned holds exactly.
struct SubscriptionTotals {
  // Messages offered to this subscription (its pattern matched; in a queue
  // group, the messages given to this member).
  uint64_t matched = 0;
  // Messages handed to the application.
  uint64_t delivered = 0;
  // Messages dropped, by reason (DropReason index).
  DropCounts dropped_by_reason{};
  // Messages still queued (0 once closed or ended).
  uint64_t queued = 0;
  // Messages still queued when the application closed the subscription.
  uint64_t abandoned = 0;
  // The deepest the queue has been.
  uint64_t high_water = 0;

  uint64_t dropped() const {
    uint64_t sum = 0;
    for (uint64_t n : dropped_by_reason) sum += n;
    return sum;
  }
  uint64_t dropped(DropReason reason) const {
    return dropped_by_reason[static_cast<size_t>(reason)];
  }
};

}  // namespace herald

#endif  // HERALD_BROKER_OPTIONS_H_
