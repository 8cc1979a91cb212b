// Registry: which subscriptions and queue groups each topic's messages go to.
//
// Topic entries live in N shards, each a flat_hash_map under its own mutex.
// An entry holds the list of targets (subscriptions and queue groups, exact
// and wildcard) that match its topic, rebuilt copy-on-write by subscribe and
// unsubscribe, so a publish reads it without waiting on writers. Old lists,
// evicted entries and removed groups are freed after a grace period: each
// shard counts the publishers inside it in two parity counters (a
// sleepable-RCU scheme), and a writer flips the parity and waits for the old
// parity to drain. Design notes: docs/design/registry.md.
//
// Lock order (also in docs/design/registry.md):
//   writers_mu_  ->  Shard::mu  ;  Shard::grace_mu is taken alone.
// A publisher pinned in a shard may take writers_mu_ (shared) and Shard::mu;
// writers never wait for a grace period while holding either.
//
// Thread-safe.
#ifndef HERALD_BROKER_INTERNAL_REGISTRY_H_
#define HERALD_BROKER_INTERNAL_REGISTRY_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "broker/internal/subscription_state.h"
#include "broker/internal/topic_index.h"
#include "schemas/stats.pb.h"

namespace herald::internal {

// A queue group: each message offered to it goes to exactly one member with
// room. Thread-safe: Offer() from publishers; membership changes under the
// registry's writers_mu_.
class GroupState {
 public:
  using MemberList = std::vector<SubscriptionState*>;

  GroupState(std::string pattern, std::string name);
  ~GroupState();

  const std::string& pattern() const { return pattern_; }
  const std::string& name() const { return name_; }

  // Publisher side. REQUIRES: pinned in a shard. Gives `m` (one reference,
  // consumed when it returns true) to the next member with room, round robin;
  // counts a kGroupFull drop when every member is full.
  bool Offer(Message* m);

  // Writer side (under writers_mu_). The old member list is returned for
  // freeing after a grace period.
  std::unique_ptr<const MemberList> AddMember(SubscriptionState* s);
  std::unique_ptr<const MemberList> RemoveMember(SubscriptionState* s);
  size_t member_count() const;

  void FillStats(v1::GroupStats* out) const;
  // Relaxed reads of the counters (final once the group is unreachable).
  uint64_t matched() const {
    return matched_.value.load(std::memory_order_relaxed);
  }
  uint64_t taken() const {
    return taken_.value.load(std::memory_order_relaxed);
  }
  uint64_t group_full() const {
    return group_full_.value.load(std::memory_order_relaxed);
  }

 private:
  const std::string pattern_;
  const std::string name_;
  std::atomic<const MemberList*> members_;
  // matched == taken + group_full once no Offer() is in flight.
  PaddedCounter matched_;
  PaddedCounter taken_;
  PaddedCounter group_full_;
  PaddedCounter next_;
};

// The targets of one topic.
struct MatchList {
  std::vector<SubscriptionState*> subscriptions;
  std::vector<GroupState*> groups;
  size_t size() const { return subscriptions.size() + groups.size(); }
  bool empty() const { return size() == 0; }
};

// One topic with a subscription (or a cached wildcard match) or a handle.
struct TopicEntry {
  TopicEntry(std::string n, uint64_t h) : name(std::move(n)), hash(h) {}
  ~TopicEntry() { delete list.load(std::memory_order_relaxed); }

  const std::string name;
  const uint64_t hash;  // Registry::HashTopic(name)
  std::atomic<const MatchList*> list{nullptr};
  // Publishes that found the list empty (a handle's topic with no
  // subscriber). Relaxed: statistics.
  std::atomic<uint64_t> unmatched{0};
  // Live TopicHandles; guarded by the shard's mutex.
  uint64_t handles = 0;
  // What the shard's counters already hold of `published` and `unmatched`
  // (set when the entry is evicted); guarded by the shard's mutex.
  uint64_t folded_published = 0;
  uint64_t folded_unmatched = 0;
  // Every publish to the topic. On its own cache line: the one counter each
  // publish writes.
  PaddedCounter published;
};

class Registry {
 public:
  Registry(size_t shard_count, size_t max_topics);
  ~Registry();

  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // One hash per publish: it picks the shard (high bits) and the slot in
  // the shard's index (low bits).
  static uint64_t HashTopic(absl::string_view topic);
  size_t ShardOf(uint64_t hash) const {
    // The high 32 bits scaled to [0, shards) by a multiply, not a division
    // (Lemire's "fastrange").
    return static_cast<size_t>(((hash >> 32) * shards_.size()) >> 32);
  }

  // Publisher side: Pin() before Find()/LookupMiss()/using an entry's list,
  // Unpin() after the last use of anything read through them.
  inline uint32_t Pin(size_t shard);
  inline void Unpin(size_t shard, uint32_t pin);

  // REQUIRES: pinned in `shard` == ShardOf(hash). The topic's entry, or
  // null; lock-free.
  TopicEntry* Find(size_t shard, uint64_t hash, absl::string_view topic) const {
    return shards_[shard]->index.Find(hash, topic);
  }
  // REQUIRES: pinned in `shard`; Find() returned null; `topic` is valid.
  // Returns the topic's targets, or null if nothing matches: only wildcard
  // subscriptions can. The list is cached in a new entry, set in `*entry`;
  // past max_topics it is returned in `*uncached` instead, for the caller to
  // free after use.
  const MatchList* LookupMiss(size_t shard, uint64_t hash,
                              absl::string_view topic, TopicEntry** entry,
                              std::unique_ptr<MatchList>* uncached);
  // Counts one accepted publish (in `entry`, or in `shard` when null) and
  // whether it matched.
  void CountPublish(size_t shard, TopicEntry* entry, bool matched) {
    // Relaxed: statistics.
    if (entry != nullptr) {
      entry->published.value.fetch_add(1, std::memory_order_relaxed);
      if (!matched) entry->unmatched.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    Shard& s = *shards_[shard];
    s.published.fetch_add(1, std::memory_order_relaxed);
    if (!matched) s.published_unmatched.fetch_add(1, std::memory_order_relaxed);
  }

  // Writer side. They may wait for a grace period: never call while pinned.
  // Adds a subscription (or queue-group member). Returns kResourceExhausted
  // when an exact pattern needs a new topic entry past max_topics.
  absl::Status Add(SubscriptionState* s);
  // Removes them; on return no publisher can reach any of them. One grace
  // period serves them all.
  void Remove(absl::Span<SubscriptionState* const> subs);
  // A topic handle's entry: created if needed (kResourceExhausted past
  // max_topics), pinned against eviction until ReleaseTopic().
  absl::StatusOr<TopicEntry*> AcquireTopic(absl::string_view topic);
  void ReleaseTopic(TopicEntry* entry);
  // Waits until every publisher pinned anywhere now has unpinned.
  void SynchronizeAll();

  // Also adds the removed groups' group_full drops to closed_dropped.
  void FillStats(v1::BrokerStats* out) const;

 private:
  struct Shard {
    absl::Mutex mu ABSL_ACQUIRED_AFTER(writers_mu_);
    // The shard's topic entries, which it owns. Written under `mu`; read
    // lock-free by pinned publishers (Find()).
    TopicIndex<TopicEntry> index;
    // Grace periods: publishers inside the shard, by parity of `gen`.
    alignas(kCacheLineSize) std::atomic<uint32_t> gen{0};
    std::atomic<uint64_t> readers[2] = {0, 0};
    // Publishes without an entry, plus those of evicted entries.
    alignas(kCacheLineSize) std::atomic<uint64_t> published{0};
    std::atomic<uint64_t> published_unmatched{0};
    absl::Mutex grace_mu;
  };

  // Objects unlinked by a writer, freed after a grace period (see
  // Reclaim()).
  struct Retired {
    std::vector<std::unique_ptr<const MatchList>> lists;
    std::vector<std::unique_ptr<TopicEntry>> entries;
    std::vector<std::unique_ptr<const GroupState::MemberList>> members;
    std::vector<std::unique_ptr<GroupState>> groups;
  };

  // A target: exactly one of the two is set.
  struct Target {
    SubscriptionState* subscription = nullptr;
    GroupState* group = nullptr;
    const std::string& pattern() const {
      return subscription != nullptr ? subscription->pattern()
                                     : group->pattern();
    }
    bool operator==(const Target& o) const {
      return subscription == o.subscription && group == o.group;
    }
  };

  void Synchronize(Shard& shard);
  // After a grace period: adds what evicted entries counted since their
  // eviction to their shards' counters. The objects are freed with `r`.
  void Reclaim(const Retired& r);
  // Unlinks `entry` from `shard` into `retired`, folding its counters into
  // the shard's.
  void EvictLocked(Shard& shard, TopicEntry* entry, Retired* retired)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // True when a new entry would pass max_topics.
  bool AtMaxTopics() const;
  absl::Status MaxTopicsError(absl::string_view topic) const;
  // Makes `topic`'s entry with `list` and inserts it in `shard`.
  TopicEntry* NewEntryLocked(Shard& shard, absl::string_view topic,
                             uint64_t hash, std::unique_ptr<MatchList> list)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // The entries of `shard` that `pattern` matches; collected first, since
  // replacing their lists may evict them from the index being walked.
  std::vector<TopicEntry*> MatchingLocked(const Shard& shard,
                                          absl::string_view pattern) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // The targets matching `topic`, from the master lists.
  std::unique_ptr<MatchList> ComputeLocked(absl::string_view topic) const
      ABSL_SHARED_LOCKS_REQUIRED(writers_mu_);
  absl::Status InsertTargetLocked(const Target& t, Retired* retired)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(writers_mu_);
  void RemoveTargetLocked(const Target& t, Retired* retired)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(writers_mu_);
  // Replaces `entry`'s list with `list` (retiring the old one), evicting the
  // entry if the list is empty and no handle pins it.
  void ReplaceListLocked(Shard& shard, TopicEntry* entry,
                         std::unique_ptr<MatchList> list, Retired* retired)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(writers_mu_, shard.mu);

  const size_t max_topics_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<size_t> topic_count_{0};

  mutable absl::Mutex writers_mu_;
  // Exact patterns -> targets; wildcard targets.
  absl::flat_hash_map<std::string, std::vector<Target>> exact_
      ABSL_GUARDED_BY(writers_mu_);
  std::vector<Target> wildcards_ ABSL_GUARDED_BY(writers_mu_);
  // Queue groups by pattern + '\0' + group name.
  absl::flat_hash_map<std::string, std::unique_ptr<GroupState>> groups_
      ABSL_GUARDED_BY(writers_mu_);
  // Read without writers_mu_ by publishers: 0 means no wildcard target.
  std::atomic<size_t> wildcard_count_{0};
  // Counters of queue groups already removed (their last member closed).
  std::atomic<uint64_t> closed_groups_matched_{0};
  std::atomic<uint64_t> closed_groups_taken_{0};
  std::atomic<uint64_t> closed_groups_full_{0};
};

// Inline: two per publish.
uint32_t Registry::Pin(size_t shard_index) {
  Shard& shard = *shards_[shard_index];
  while (true) {
    // Seq_cst on all three: the reader's increment must be ordered before its
    // re-check of gen, and a writer's flip before its read of the counter.
    const uint32_t g = shard.gen.load(std::memory_order_seq_cst);
    shard.readers[g & 1].fetch_add(1, std::memory_order_seq_cst);
    if (shard.gen.load(std::memory_order_seq_cst) == g) return g;
    // Release: nothing was read under this pin; just undo it.
    shard.readers[g & 1].fetch_sub(1, std::memory_order_release);
  }
}

void Registry::Unpin(size_t shard_index, uint32_t pin) {
  // Release: every read made under the pin happens before a writer that sees
  // the count drop frees what was read.
  shards_[shard_index]->readers[pin & 1].fetch_sub(1,
                                                   std::memory_order_release);
}

}  // namespace herald::internal

#endif  // HERALD_BROKER_INTERNAL_REGISTRY_H_
