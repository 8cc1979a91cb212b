#include "broker/internal/registry.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "broker/topic.h"
#include "broker/util/check.h"

namespace herald::internal {
namespace {

// Queue groups are per (pattern, group name), like NATS queue groups.
std::string GroupKey(const SubscriptionState& s) {
  return absl::StrCat(s.pattern(), absl::string_view("\0", 1), s.group());
}

}  // namespace

// ---------------------------------------------------------------- GroupState

GroupState::GroupState(std::string pattern, std::string name)
    : pattern_(std::move(pattern)),
      name_(std::move(name)),
      members_(new MemberList()) {}

GroupState::~GroupState() { delete members_.load(std::memory_order_relaxed); }

bool GroupState::Offer(Message* m) {
  // Relaxed: statistics.
  matched_.value.fetch_add(1, std::memory_order_relaxed);
  // Acquire: pairs with the release in Add/RemoveMember(); the list is kept
  // alive by the caller's pin.
  const MemberList& members = *members_.load(std::memory_order_acquire);
  const size_t n = members.size();
  if (n > 0) {
    // Relaxed: only spreads the load; any start is correct.
    const uint64_t start = next_.value.fetch_add(1, std::memory_order_relaxed);
    for (size_t i = 0; i < n; ++i) {
      if (members[(start + i) % n]->Offer(m)) {
        taken_.value.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
    }
  }
  group_full_.value.fetch_add(1, std::memory_order_relaxed);
  return false;
}

std::unique_ptr<const GroupState::MemberList> GroupState::AddMember(
    SubscriptionState* s) {
  const MemberList* old = members_.load(std::memory_order_relaxed);
  auto next = std::make_unique<MemberList>(*old);
  next->push_back(s);
  // Release: publishes the new list's contents to Offer().
  members_.store(next.release(), std::memory_order_release);
  return std::unique_ptr<const MemberList>(old);
}

std::unique_ptr<const GroupState::MemberList> GroupState::RemoveMember(
    SubscriptionState* s) {
  const MemberList* old = members_.load(std::memory_order_relaxed);
  auto next = std::make_unique<MemberList>(*old);
  next->erase(std::remove(next->begin(), next->end(), s), next->end());
  members_.store(next.release(), std::memory_order_release);
  return std::unique_ptr<const MemberList>(old);
}

size_t GroupState::member_count() const {
  return members_.load(std::memory_order_acquire)->size();
}

void GroupState::FillStats(v1::GroupStats* out) const {
  out->set_pattern(pattern_);
  out->set_queue_group(name_);
  // Relaxed: a statistics snapshot.
  out->set_matched(matched_.value.load(std::memory_order_relaxed));
  DropCounts drops{};
  drops[static_cast<size_t>(DropReason::kGroupFull)] =
      group_full_.value.load(std::memory_order_relaxed);
  FillDropCounts(drops, out->mutable_dropped());
  out->set_members(member_count());
  out->set_taken(taken_.value.load(std::memory_order_relaxed));
}

// ------------------------------------------------------------------ Registry

Registry::Registry(size_t shard_count, size_t max_topics)
    : max_topics_(max_topics) {
  HERALD_CHECK(shard_count > 0);
  shards_.reserve(shard_count);
  for (size_t i = 0; i < shard_count; ++i) {
    shards_.push_back(std::make_unique<Shard>());
  }
}

Registry::~Registry() {
  for (auto& shard : shards_) {
    absl::MutexLock lock(&shard->mu);
    shard->index.ForEach([](TopicEntry* entry) { delete entry; });
  }
}

uint64_t Registry::HashTopic(absl::string_view topic) {
  return absl::Hash<absl::string_view>()(topic);
}

void Registry::Synchronize(Shard& shard) {
  // Index tables retired before the flip below are unreachable by the
  // publishers that pin after it; freed once the older ones have left.
  std::vector<std::unique_ptr<TopicIndex<TopicEntry>::Table>> tables;
  {
    absl::MutexLock lock(&shard.mu);
    tables = shard.index.TakeRetired();
  }
  absl::MutexLock lock(&shard.grace_mu);
  // Relaxed load: only writers (serialized by grace_mu) change gen.
  const uint32_t g = shard.gen.load(std::memory_order_relaxed);
  shard.gen.store(g + 1, std::memory_order_seq_cst);
  // Publishers stay pinned for one publish (at most a kBlock timeout): spin
  // briefly, then back off.
  absl::Duration pause = absl::Microseconds(20);
  for (int spins = 0; shard.readers[g & 1].load(std::memory_order_seq_cst) != 0;
       ++spins) {
    if (spins < 64) {
      std::this_thread::yield();
    } else {
      absl::SleepFor(pause);
      pause = std::min(pause * 2, absl::Milliseconds(1));
    }
  }
}

void Registry::SynchronizeAll() {
  for (auto& shard : shards_) Synchronize(*shard);
}

void Registry::EvictLocked(Shard& shard, TopicEntry* entry, Retired* retired) {
  shard.index.Erase(entry);
  topic_count_.fetch_sub(1, std::memory_order_relaxed);
  // Relaxed: statistics. Pinned publishers may still count into the entry;
  // Reclaim() adds those after the grace period.
  entry->folded_published =
      entry->published.value.load(std::memory_order_relaxed);
  entry->folded_unmatched = entry->unmatched.load(std::memory_order_relaxed);
  shard.published.fetch_add(entry->folded_published, std::memory_order_relaxed);
  shard.published_unmatched.fetch_add(entry->folded_unmatched,
                                      std::memory_order_relaxed);
  retired->entries.emplace_back(entry);
}

void Registry::Reclaim(const Retired& r) {
  for (const auto& entry : r.entries) {
    Shard& shard = *shards_[ShardOf(entry->hash)];
    // Relaxed: statistics; no publisher can reach the entry any more.
    shard.published.fetch_add(
        entry->published.value.load(std::memory_order_relaxed) -
            entry->folded_published,
        std::memory_order_relaxed);
    shard.published_unmatched.fetch_add(
        entry->unmatched.load(std::memory_order_relaxed) -
            entry->folded_unmatched,
        std::memory_order_relaxed);
  }
}

std::unique_ptr<MatchList> Registry::ComputeLocked(
    absl::string_view topic) const {
  auto list = std::make_unique<MatchList>();
  auto add = [&](const Target& t) {
    if (t.subscription != nullptr) {
      list->subscriptions.push_back(t.subscription);
    } else {
      list->groups.push_back(t.group);
    }
  };
  if (auto it = exact_.find(topic); it != exact_.end()) {
    for (const Target& t : it->second) add(t);
  }
  for (const Target& t : wildcards_) {
    if (PatternMatches(t.pattern(), topic)) add(t);
  }
  return list;
}

const MatchList* Registry::LookupMiss(size_t shard_index, uint64_t hash,
                                      absl::string_view topic,
                                      TopicEntry** entry,
                                      std::unique_ptr<MatchList>* uncached) {
  Shard& shard = *shards_[shard_index];
  // No entry: only wildcard subscriptions can match. Acquire: pairs with the
  // release increment in InsertTargetLocked().
  if (wildcard_count_.load(std::memory_order_acquire) == 0) return nullptr;
  absl::ReaderMutexLock writers(&writers_mu_);
  std::unique_ptr<MatchList> list = ComputeLocked(topic);
  if (list->empty()) return nullptr;
  absl::MutexLock lock(&shard.mu);
  if (TopicEntry* e = shard.index.Find(hash, topic); e != nullptr) {
    *entry = e;  // Another publisher cached it first.
    // Acquire: pairs with the release store in ReplaceListLocked().
    return e->list.load(std::memory_order_acquire);
  }
  if (AtMaxTopics()) {
    *uncached = std::move(list);
    return uncached->get();
  }
  *entry = NewEntryLocked(shard, topic, hash, std::move(list));
  return (*entry)->list.load(std::memory_order_relaxed);
}

bool Registry::AtMaxTopics() const {
  // Relaxed: entries are created under writers_mu_ (shared) and a shard
  // mutex; the bound may be passed by at most one entry per shard in a race.
  return topic_count_.load(std::memory_order_relaxed) >= max_topics_;
}

absl::Status Registry::MaxTopicsError(absl::string_view topic) const {
  return absl::ResourceExhaustedError(
      absl::StrCat("topic \"", topic, "\": the broker already holds ",
                   max_topics_, " topics (max_topics)"));
}

TopicEntry* Registry::NewEntryLocked(Shard& shard, absl::string_view topic,
                                     uint64_t hash,
                                     std::unique_ptr<MatchList> list) {
  topic_count_.fetch_add(1, std::memory_order_relaxed);
  auto* entry = new TopicEntry(std::string(topic), hash);
  // Release: the list's contents are visible to publishers that load it.
  entry->list.store(list.release(), std::memory_order_release);
  shard.index.Insert(entry);
  return entry;
}

std::vector<TopicEntry*> Registry::MatchingLocked(
    const Shard& shard, absl::string_view pattern) const {
  std::vector<TopicEntry*> matching;
  shard.index.ForEach([&](TopicEntry* entry) {
    if (PatternMatches(pattern, entry->name)) matching.push_back(entry);
  });
  return matching;
}

void Registry::ReplaceListLocked(Shard& shard, TopicEntry* entry,
                                 std::unique_ptr<MatchList> list,
                                 Retired* retired) {
  const MatchList* old = entry->list.load(std::memory_order_relaxed);
  if (old != nullptr) retired->lists.emplace_back(old);
  if (list->empty() && entry->handles == 0) {
    entry->list.store(nullptr, std::memory_order_release);
    EvictLocked(shard, entry, retired);
    return;
  }
  // Release: the list's contents are visible to publishers that load it.
  entry->list.store(list.release(), std::memory_order_release);
}

absl::Status Registry::InsertTargetLocked(const Target& t, Retired* retired) {
  const std::string& pattern = t.pattern();
  if (!HasWildcard(pattern)) {
    const uint64_t hash = HashTopic(pattern);
    Shard& shard = *shards_[ShardOf(hash)];
    absl::MutexLock lock(&shard.mu);
    TopicEntry* entry = shard.index.Find(hash, pattern);
    if (entry == nullptr && AtMaxTopics()) return MaxTopicsError(pattern);
    exact_[pattern].push_back(t);
    if (entry == nullptr) {
      NewEntryLocked(shard, pattern, hash, ComputeLocked(pattern));
    } else {
      ReplaceListLocked(shard, entry, ComputeLocked(pattern), retired);
    }
    return absl::OkStatus();
  }
  wildcards_.push_back(t);
  // Release: pairs with the acquire in LookupMiss().
  wildcard_count_.fetch_add(1, std::memory_order_release);
  for (auto& shard : shards_) {
    absl::MutexLock lock(&shard->mu);
    for (TopicEntry* entry : MatchingLocked(*shard, pattern)) {
      const MatchList* old = entry->list.load(std::memory_order_relaxed);
      auto next = old != nullptr ? std::make_unique<MatchList>(*old)
                                 : std::make_unique<MatchList>();
      if (t.subscription != nullptr) {
        next->subscriptions.push_back(t.subscription);
      } else {
        next->groups.push_back(t.group);
      }
      ReplaceListLocked(*shard, entry, std::move(next), retired);
    }
  }
  return absl::OkStatus();
}

void Registry::RemoveTargetLocked(const Target& t, Retired* retired) {
  const std::string& pattern = t.pattern();
  auto without = [&](const MatchList* old) {
    auto next = std::make_unique<MatchList>();
    if (old == nullptr) return next;
    for (SubscriptionState* s : old->subscriptions) {
      if (s != t.subscription) next->subscriptions.push_back(s);
    }
    for (GroupState* g : old->groups) {
      if (g != t.group) next->groups.push_back(g);
    }
    return next;
  };
  if (!HasWildcard(pattern)) {
    auto it = exact_.find(pattern);
    if (it != exact_.end()) {
      auto& targets = it->second;
      targets.erase(std::remove(targets.begin(), targets.end(), t),
                    targets.end());
      if (targets.empty()) exact_.erase(it);
    }
    const uint64_t hash = HashTopic(pattern);
    Shard& shard = *shards_[ShardOf(hash)];
    absl::MutexLock lock(&shard.mu);
    if (TopicEntry* entry = shard.index.Find(hash, pattern); entry != nullptr) {
      ReplaceListLocked(shard, entry,
                        without(entry->list.load(std::memory_order_relaxed)),
                        retired);
    }
    return;
  }
  wildcards_.erase(std::remove(wildcards_.begin(), wildcards_.end(), t),
                   wildcards_.end());
  wildcard_count_.fetch_sub(1, std::memory_order_release);
  for (auto& shard : shards_) {
    absl::MutexLock lock(&shard->mu);
    for (TopicEntry* entry : MatchingLocked(*shard, pattern)) {
      ReplaceListLocked(*shard, entry,
                        without(entry->list.load(std::memory_order_relaxed)),
                        retired);
    }
  }
}

absl::Status Registry::Add(SubscriptionState* s) {
  Retired retired;
  absl::Status status;
  {
    absl::MutexLock lock(&writers_mu_);
    if (s->group().empty()) {
      status = InsertTargetLocked(Target{s, nullptr}, &retired);
    } else {
      const std::string key = GroupKey(*s);
      auto it = groups_.find(key);
      if (it != groups_.end()) {
        retired.members.push_back(it->second->AddMember(s));
      } else {
        auto group = std::make_unique<GroupState>(s->pattern(), s->group());
        status = InsertTargetLocked(Target{nullptr, group.get()}, &retired);
        if (status.ok()) {
          retired.members.push_back(group->AddMember(s));
          groups_.emplace(key, std::move(group));
        }
      }
    }
  }
  SynchronizeAll();
  Reclaim(retired);
  return status;
}

void Registry::Remove(absl::Span<SubscriptionState* const> subs) {
  // Nothing to remove: no grace period to wait for.
  if (subs.empty()) return;
  Retired retired;
  {
    absl::MutexLock lock(&writers_mu_);
    for (SubscriptionState* s : subs) {
      if (s->group().empty()) {
        RemoveTargetLocked(Target{s, nullptr}, &retired);
        continue;
      }
      const std::string key = GroupKey(*s);
      auto it = groups_.find(key);
      if (it == groups_.end()) continue;
      GroupState* group = it->second.get();
      retired.members.push_back(group->RemoveMember(s));
      if (group->member_count() == 0) {
        RemoveTargetLocked(Target{nullptr, group}, &retired);
        retired.groups.push_back(std::move(it->second));
        groups_.erase(it);
      }
    }
  }
  // After this, no publisher holds a list (or member list) naming any of
  // `subs`, and the counters of a removed group are final.
  SynchronizeAll();
  Reclaim(retired);
  for (const auto& group : retired.groups) {
    // Relaxed: statistics.
    closed_groups_matched_.fetch_add(group->matched(),
                                     std::memory_order_relaxed);
    closed_groups_taken_.fetch_add(group->taken(), std::memory_order_relaxed);
    closed_groups_full_.fetch_add(group->group_full(),
                                  std::memory_order_relaxed);
  }
}

absl::StatusOr<TopicEntry*> Registry::AcquireTopic(absl::string_view topic) {
  absl::ReaderMutexLock writers(&writers_mu_);
  const uint64_t hash = HashTopic(topic);
  Shard& shard = *shards_[ShardOf(hash)];
  absl::MutexLock lock(&shard.mu);
  if (TopicEntry* entry = shard.index.Find(hash, topic); entry != nullptr) {
    ++entry->handles;
    return entry;
  }
  if (AtMaxTopics()) return MaxTopicsError(topic);
  TopicEntry* entry = NewEntryLocked(shard, topic, hash, ComputeLocked(topic));
  entry->handles = 1;
  return entry;
}

void Registry::ReleaseTopic(TopicEntry* entry) {
  Retired retired;
  const size_t shard_index = ShardOf(entry->hash);
  {
    absl::ReaderMutexLock writers(&writers_mu_);
    Shard& shard = *shards_[shard_index];
    absl::MutexLock lock(&shard.mu);
    HERALD_CHECK(entry->handles > 0);
    if (--entry->handles > 0) return;
    const MatchList* list = entry->list.load(std::memory_order_relaxed);
    if (list != nullptr && !list->empty()) return;
    entry->list.store(nullptr, std::memory_order_release);
    if (list != nullptr) retired.lists.emplace_back(list);
    EvictLocked(shard, entry, &retired);
  }
  Synchronize(*shards_[shard_index]);
  Reclaim(retired);
}

void Registry::FillStats(v1::BrokerStats* out) const {
  uint64_t published = 0;
  uint64_t unmatched = 0;
  for (const auto& shard : shards_) {
    // Relaxed: statistics. Under the shard's mutex, so that an entry's
    // counts are in the sum exactly once (evictions fold them into the
    // shard's counters under it).
    absl::MutexLock lock(&shard->mu);
    published += shard->published.load(std::memory_order_relaxed);
    unmatched += shard->published_unmatched.load(std::memory_order_relaxed);
    shard->index.ForEach([&](const TopicEntry* entry) {
      const uint64_t entry_published =
          entry->published.value.load(std::memory_order_relaxed);
      published += entry_published;
      unmatched += entry->unmatched.load(std::memory_order_relaxed);
      v1::TopicStats* t = out->add_topic_entries();
      t->set_name(entry->name);
      t->set_published(entry_published);
      const MatchList* list = entry->list.load(std::memory_order_acquire);
      t->set_subscriptions(list != nullptr ? list->size() : 0);
      t->set_handles(entry->handles);
    });
  }
  // By name: the order of shards and slots follows a per-process hash seed.
  std::sort(out->mutable_topic_entries()->begin(),
            out->mutable_topic_entries()->end(),
            [](const v1::TopicStats& a, const v1::TopicStats& b) {
              return a.name() < b.name();
            });
  out->set_published(published);
  out->set_published_unmatched(unmatched);
  out->set_topics(topic_count_.load(std::memory_order_relaxed));
  out->set_closed_groups_matched(
      closed_groups_matched_.load(std::memory_order_relaxed));
  out->set_closed_groups_taken(
      closed_groups_taken_.load(std::memory_order_relaxed));
  out->mutable_closed_dropped()->set_group_full(
      closed_groups_full_.load(std::memory_order_relaxed));
  absl::ReaderMutexLock writers(&writers_mu_);
  for (const auto& [key, group] : groups_) group->FillStats(out->add_groups());
}

}  // namespace herald::internal
