#include "broker/internal/topic_index.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace herald::internal {
namespace {

struct Entry {
  Entry(std::string n, uint64_t h) : name(std::move(n)), hash(h) {}
  const std::string name;
  const uint64_t hash;
};

// Entries with chosen hashes, owned by the test.
class Entries {
 public:
  Entry* Make(std::string name, uint64_t hash) {
    owned_.push_back(std::make_unique<Entry>(std::move(name), hash));
    return owned_.back().get();
  }

 private:
  std::vector<std::unique_ptr<Entry>> owned_;
};

TEST(TopicIndexTest, FindsInsertedEntriesByHashAndName) {
  Entries entries;
  TopicIndex<Entry> index;
  Entry* a = entries.Make("a", 1);
  Entry* b = entries.Make("b", 2);
  index.Insert(a);
  index.Insert(b);
  EXPECT_EQ(index.Find(1, "a"), a);
  EXPECT_EQ(index.Find(2, "b"), b);
  EXPECT_EQ(index.Find(1, "b"), nullptr);  // Same hash, other name.
  EXPECT_EQ(index.Find(3, "c"), nullptr);
  EXPECT_EQ(index.size(), 2u);
}

TEST(TopicIndexTest, CollidingHashesProbePastTombstones) {
  Entries entries;
  TopicIndex<Entry> index;
  // Every entry lands on the same home slot.
  Entry* a = entries.Make("a", 7);
  Entry* b = entries.Make("b", 7);
  Entry* c = entries.Make("c", 7);
  index.Insert(a);
  index.Insert(b);
  index.Insert(c);
  index.Erase(b);  // A tombstone between a and c.
  EXPECT_EQ(index.Find(7, "a"), a);
  EXPECT_EQ(index.Find(7, "b"), nullptr);
  EXPECT_EQ(index.Find(7, "c"), c);
  // The tombstone is reused, and c stays reachable.
  Entry* d = entries.Make("d", 7);
  index.Insert(d);
  EXPECT_EQ(index.Find(7, "d"), d);
  EXPECT_EQ(index.Find(7, "c"), c);
  EXPECT_EQ(index.size(), 3u);
}

TEST(TopicIndexTest, GrowsAndRetiresOldTablesForTheCaller) {
  Entries entries;
  TopicIndex<Entry> index;
  const size_t initial = index.capacity();
  constexpr int kCount = 1000;
  for (int i = 0; i < kCount; ++i) {
    index.Insert(entries.Make(absl::StrCat("t", i), i * 0x9E3779B97F4A7C15u));
  }
  EXPECT_EQ(index.size(), static_cast<size_t>(kCount));
  EXPECT_GE(index.capacity(), 2u * kCount);
  EXPECT_GT(index.capacity(), initial);
  EXPECT_FALSE(index.TakeRetired().empty());
  EXPECT_TRUE(index.TakeRetired().empty());  // Taken once.
  for (int i = 0; i < kCount; ++i) {
    Entry* e = index.Find(i * 0x9E3779B97F4A7C15u, absl::StrCat("t", i));
    ASSERT_NE(e, nullptr) << i;
    EXPECT_EQ(e->name, absl::StrCat("t", i));
  }
  size_t seen = 0;
  index.ForEach([&](Entry*) { ++seen; });
  EXPECT_EQ(seen, static_cast<size_t>(kCount));
}

TEST(TopicIndexTest, ChurnDoesNotFillTheTableWithTombstones) {
  Entries entries;
  TopicIndex<Entry> index;
  Entry* keep = entries.Make("keep", 3);
  index.Insert(keep);
  for (int i = 0; i < 10000; ++i) {
    Entry* e = entries.Make(absl::StrCat("churn", i), 3 + i);
    index.Insert(e);
    index.Erase(e);
  }
  EXPECT_EQ(index.size(), 1u);
  EXPECT_LE(index.capacity(), 64u);  // Rebuilt small, not grown.
  EXPECT_EQ(index.Find(3, "keep"), keep);
}

// Readers probe while a writer inserts, erases and grows the table: every
// permanent entry is found every time. Old tables are kept (not freed) until
// the readers are done, as the registry's grace periods would.
TEST(TopicIndexTest, ReadersFindPermanentEntriesDuringWrites) {
  constexpr int kPermanent = 64;
  constexpr int kTransient = 4000;
  Entries entries;
  TopicIndex<Entry> index;
  std::vector<Entry*> permanent;
  for (int i = 0; i < kPermanent; ++i) {
    permanent.push_back(entries.Make(absl::StrCat("p", i), 1000003u * i));
    index.Insert(permanent.back());
  }
  std::vector<Entry*> transient;
  for (int i = 0; i < kTransient; ++i) {
    transient.push_back(entries.Make(absl::StrCat("x", i), 7919u * i + 1));
  }
  std::atomic<bool> done{false};
  std::atomic<uint64_t> misses{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      while (!done.load(std::memory_order_acquire)) {
        for (Entry* p : permanent) {
          if (index.Find(p->hash, p->name) != p) {
            misses.fetch_add(1, std::memory_order_relaxed);
          }
        }
      }
    });
  }
  std::vector<std::unique_ptr<TopicIndex<Entry>::Table>> retired;
  for (int i = 0; i < kTransient; ++i) {
    index.Insert(transient[i]);
    if (i % 3 == 0) index.Erase(transient[i]);
    for (auto& t : index.TakeRetired()) retired.push_back(std::move(t));
  }
  done.store(true, std::memory_order_release);
  for (auto& t : readers) t.join();
  EXPECT_EQ(misses.load(), 0u);
  EXPECT_FALSE(retired.empty());
}

}  // namespace
}  // namespace herald::internal
