// TopicIndex: a hash table of topic entries that publishers read without a
// lock, for one registry shard.
//
// Open addressing with linear probing over a power-of-two array of atomic
// entry pointers. Readers (publishers) probe with acquire loads and no lock;
// writers are serialized by the caller (the shard's mutex). An entry never
// moves within a table: an erase leaves a tombstone, and growing (or
// clearing tombstones) builds a new table, publishes it with a release store
// and retires the old one. Readers still probing a retired table, or holding
// an erased entry, are protected by the registry's grace periods: the caller
// frees what TakeRetired() returns, and erased entries, only after every
// reader pinned at the time has left (docs/design/registry.md).
//
// Entry must have `const uint64_t hash` and `const std::string name`.
//
// Thread safety: Find() from any thread (inside a grace period); everything
// else under the caller's writer lock.
#ifndef HERALD_BROKER_INTERNAL_TOPIC_INDEX_H_
#define HERALD_BROKER_INTERNAL_TOPIC_INDEX_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "broker/util/check.h"

namespace herald::internal {

template <typename Entry>
class TopicIndex {
 public:
  // A table: one generation of the slot array.
  struct Table {
    explicit Table(size_t capacity)
        : mask(capacity - 1), slots(new std::atomic<Entry*>[capacity]) {
      for (size_t i = 0; i < capacity; ++i) {
        slots[i].store(nullptr, std::memory_order_relaxed);
      }
    }
    const size_t mask;  // capacity - 1
    const std::unique_ptr<std::atomic<Entry*>[]> slots;
    size_t live = 0;        // Writer only.
    size_t tombstones = 0;  // Writer only.
  };

  TopicIndex() : table_(new Table(kMinCapacity)) {}
  ~TopicIndex() { delete table_.load(std::memory_order_relaxed); }

  TopicIndex(const TopicIndex&) = delete;
  TopicIndex& operator=(const TopicIndex&) = delete;

  // Any thread, inside a grace period. The entry named `name` (whose hash is
  // `hash`), or null.
  Entry* Find(uint64_t hash, absl::string_view name) const {
    // Acquire: pairs with the release store of a new table, so its slots'
    // initial contents are visible.
    const Table* t = table_.load(std::memory_order_acquire);
    for (size_t i = hash & t->mask;; i = (i + 1) & t->mask) {
      // Acquire: pairs with the release store in Insert(), so the entry's
      // fields are visible.
      Entry* e = t->slots[i].load(std::memory_order_acquire);
      if (e == nullptr) return nullptr;
      if (e != Tombstone() && e->hash == hash && e->name == name) return e;
    }
  }

  // Writer. REQUIRES: no entry with e->name is present.
  void Insert(Entry* e) {
    Table* t = table_.load(std::memory_order_relaxed);
    // At most half the slots in use (live or tombstone), so probes stay
    // short and always end at an empty slot.
    if (2 * (t->live + t->tombstones + 1) > t->mask + 1) {
      t = Rebuild(t->live + 1);
    }
    size_t i = e->hash & t->mask;
    while (true) {
      Entry* s = t->slots[i].load(std::memory_order_relaxed);
      if (s == nullptr) break;
      if (s == Tombstone()) {
        --t->tombstones;  // Reused.
        break;
      }
      i = (i + 1) & t->mask;
    }
    ++t->live;
    // Release: publishes the entry's fields to Find().
    t->slots[i].store(e, std::memory_order_release);
  }

  // Writer. REQUIRES: `e` is present. The caller frees it after a grace
  // period.
  void Erase(Entry* e) {
    Table* t = table_.load(std::memory_order_relaxed);
    for (size_t i = e->hash & t->mask;; i = (i + 1) & t->mask) {
      Entry* s = t->slots[i].load(std::memory_order_relaxed);
      HERALD_CHECK(s != nullptr);
      if (s == e) {
        // Relaxed: a reader that still sees `e` may use it until the grace
        // period ends; one that sees the tombstone probes on.
        t->slots[i].store(Tombstone(), std::memory_order_relaxed);
        --t->live;
        ++t->tombstones;
        return;
      }
    }
  }

  // Writer. Calls f(Entry*) for every entry.
  template <typename F>
  void ForEach(F f) const {
    const Table* t = table_.load(std::memory_order_relaxed);
    for (size_t i = 0; i <= t->mask; ++i) {
      Entry* e = t->slots[i].load(std::memory_order_relaxed);
      if (e != nullptr && e != Tombstone()) f(e);
    }
  }

  // Writer.
  size_t size() const { return table_.load(std::memory_order_relaxed)->live; }
  size_t capacity() const {
    return table_.load(std::memory_order_relaxed)->mask + 1;
  }

  // Writer. Tables replaced so far: free them after a grace period.
  std::vector<std::unique_ptr<Table>> TakeRetired() {
    return std::exchange(retired_, {});
  }

 private:
  static constexpr size_t kMinCapacity = 16;

  static Entry* Tombstone() {
    // Never dereferenced: only compared.
    static char marker;
    return reinterpret_cast<Entry*>(&marker);
  }

  // Builds a table for `live` entries at a load of at most 1/4, copies the
  // live entries, publishes it and retires the old one.
  Table* Rebuild(size_t live) {
    size_t capacity = kMinCapacity;
    while (capacity < 4 * live) capacity *= 2;
    Table* old = table_.load(std::memory_order_relaxed);
    auto next = std::make_unique<Table>(capacity);
    for (size_t i = 0; i <= old->mask; ++i) {
      Entry* e = old->slots[i].load(std::memory_order_relaxed);
      if (e == nullptr || e == Tombstone()) continue;
      size_t j = e->hash & next->mask;
      while (next->slots[j].load(std::memory_order_relaxed) != nullptr) {
        j = (j + 1) & next->mask;
      }
      next->slots[j].store(e, std::memory_order_relaxed);
      ++next->live;
    }
    Table* t = next.release();
    // Release: publishes the new table's slots to Find().
    table_.store(t, std::memory_order_release);
    retired_.emplace_back(old);
    return t;
  }

  std::atomic<Table*> table_;
  std::vector<std::unique_ptr<Table>> retired_;  // Writer only.
};

}  // namespace herald::internal

#endif  // HERALD_BROKER_INTERNAL_TOPIC_INDEX_H_
