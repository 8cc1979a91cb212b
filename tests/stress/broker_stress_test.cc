// Stress: 8 publisher threads x 16 subscriptions of mixed policies (some
// deliberately slow, two callbacks) plus subscribe/close churn, checked
// against the test's own ground truth:
// - every subscription: the messages the test received == totals.delivered,
//   and matched == delivered + dropped + abandoned (+ queued == 0);
// - a subscription that lived through the run matched exactly the messages
//   published to topics its pattern matches (the test's own matcher);
// - a churned one matched between the messages surely published while it was
//   subscribed and those possibly published then;
// - the sum of PublishResult.matched == the sum of every totals.matched;
// - delivered payload ids are, per publisher, strictly increasing (so unique
//   and in publish order) within each subscription.
// Message counts come from HERALD_STRESS_SCALE (smaller under sanitizers).
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "broker/broker.h"
#include "gtest/gtest.h"
#include "tests/testing/env.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/wait_for.h"

namespace herald {
namespace {

using ::herald::testing::IsOk;
using ::herald::testing::ScaledCount;

constexpr int kPublishers = 8;
constexpr int kTopicsPerLevel = 4;
constexpr int kTopics = kTopicsPerLevel * kTopicsPerLevel;

std::string TopicName(int i) {
  return absl::StrCat("t.", i / kTopicsPerLevel, ".", i % kTopicsPerLevel);
}

// The test's own matcher, independent of broker/topic.cc.
bool ReferenceMatches(const std::string& pattern, const std::string& topic) {
  const std::vector<std::string> p = absl::StrSplit(pattern, '.');
  const std::vector<std::string> t = absl::StrSplit(topic, '.');
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == ">") return t.size() > i;
    if (i >= t.size() || (p[i] != "*" && p[i] != t[i])) return false;
  }
  return p.size() == t.size();
}

// Per-topic publish counters: started before Publish(), finished after.
struct PublishClock {
  std::array<std::atomic<uint64_t>, kTopics> started{};
  std::array<std::atomic<uint64_t>, kTopics> finished{};

  struct Snapshot {
    std::array<uint64_t, kTopics> started;
    std::array<uint64_t, kTopics> finished;
  };
  Snapshot Take() const {
    Snapshot s;
    for (int i = 0; i < kTopics; ++i) {
      s.started[i] = started[i].load(std::memory_order_seq_cst);
      s.finished[i] = finished[i].load(std::memory_order_seq_cst);
    }
    return s;
  }
};

// Checks what one subscription received: per publisher, ids increase.
class Receiver {
 public:
  void Take(const Delivery& d) {
    const std::vector<absl::string_view> parts =
        absl::StrSplit(d.payload(), ':');
    int publisher = -1;
    uint64_t id = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &publisher) ||
        !absl::SimpleAtoi(parts[1], &id) || publisher < 0 ||
        publisher >= kPublishers) {
      bad_payloads_.fetch_add(1);
      return;
    }
    // Single consumer per Receiver, so plain fields suffice for the order
    // check; the counters are atomics for the main thread's reads.
    if (seen_any_[publisher] && id <= last_id_[publisher]) {
      out_of_order_.fetch_add(1);
    }
    seen_any_[publisher] = true;
    last_id_[publisher] = id;
    received_.fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t received() const { return received_.load(); }
  uint64_t out_of_order() const { return out_of_order_.load(); }
  uint64_t bad_payloads() const { return bad_payloads_.load(); }

 private:
  std::array<uint64_t, kPublishers> last_id_{};
  std::array<bool, kPublishers> seen_any_{};
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t> out_of_order_{0};
  std::atomic<uint64_t> bad_payloads_{0};
};

void SpinFor(absl::Duration d) {
  const absl::Time until = absl::Now() + d;
  while (absl::Now() < until) {
  }
}

struct StableSpec {
  const char* pattern;
  OverflowPolicy policy;
  size_t capacity;
  bool slow;
  bool callback;
};

// 16 subscriptions alive for the whole run.
const StableSpec kStable[] = {
    {"t.0.0", OverflowPolicy::kDropNewest, 1024, false, false},
    {"t.1.2", OverflowPolicy::kDropNewest, 1024, false, false},
    {"t.*.0", OverflowPolicy::kDropNewest, 4096, false, false},
    {"t.2.*", OverflowPolicy::kDropNewest, 16, true, false},
    {"t.>", OverflowPolicy::kDropNewest, 65536, false, false},
    {">", OverflowPolicy::kDropNewest, 64, true, false},
    {"t.*.*", OverflowPolicy::kDropNewest, 8192, false, false},
    {"t.3.>", OverflowPolicy::kDropNewest, 2048, false, false},
    {"t.0.*", OverflowPolicy::kDropOldest, 16, true, false},
    {"t.*.3", OverflowPolicy::kDropOldest, 1, false, false},
    {"t.1.>", OverflowPolicy::kDropOldest, 4096, false, false},
    {"t.2.2", OverflowPolicy::kDropOldest, 256, false, false},
    {"t.*.1", OverflowPolicy::kBlock, 4096, false, false},
    {"t.3.3", OverflowPolicy::kBlock, 512, false, false},
    {"t.>", OverflowPolicy::kDropNewest, 1024, false, true},
    {"t.1.*", OverflowPolicy::kDropOldest, 32, true, true},
};

struct ChurnRecord {
  std::string pattern;
  PublishClock::Snapshot subscribe_began, subscribe_returned, close_began,
      close_returned;
  SubscriptionTotals totals;
  uint64_t received = 0;
  uint64_t out_of_order = 0;
  uint64_t bad_payloads = 0;
};

uint64_t SumMatching(const std::string& pattern,
                     const std::array<uint64_t, kTopics>& counts) {
  uint64_t sum = 0;
  for (int i = 0; i < kTopics; ++i) {
    if (ReferenceMatches(pattern, TopicName(i))) sum += counts[i];
  }
  return sum;
}

TEST(BrokerStressTest, AccountingIsExactUnderConcurrencyAndChurn) {
  const uint64_t total_publishes = ScaledCount(1'000'000, 2000);
  const uint64_t per_publisher = total_publishes / kPublishers;
  std::printf(
      "stress: %d publishers x %zu stable subscriptions, %llu "
      "publishes each\n",
      kPublishers, std::size(kStable),
      static_cast<unsigned long long>(per_publisher));

  BrokerOptions options;
  options.max_block_timeout = absl::Seconds(1);
  auto broker_or = Broker::Create(options);
  ASSERT_THAT(broker_or, IsOk());
  std::unique_ptr<Broker> broker = std::move(broker_or).value();

  // Stable subscriptions and their consumers.
  constexpr size_t kStableCount = std::size(kStable);
  std::vector<Subscription> stable(kStableCount);
  std::vector<std::unique_ptr<Receiver>> receivers;
  std::vector<std::jthread> consumers;
  for (size_t i = 0; i < kStableCount; ++i) {
    receivers.push_back(std::make_unique<Receiver>());
  }
  for (size_t i = 0; i < kStableCount; ++i) {
    const StableSpec& spec = kStable[i];
    SubscriptionOptions o;
    o.queue_capacity = spec.capacity;
    o.overflow = spec.policy;
    o.block_timeout = absl::Milliseconds(1);
    o.name = absl::StrCat("stable-", i);
    Receiver* r = receivers[i].get();
    absl::StatusOr<Subscription> sub;
    if (spec.callback) {
      const bool slow = spec.slow;
      sub = broker->Subscribe(spec.pattern, o, [r, slow](const Delivery& d) {
        if (slow) SpinFor(absl::Microseconds(20));
        r->Take(d);
      });
    } else {
      sub = broker->Subscribe(spec.pattern, o);
    }
    ASSERT_THAT(sub, IsOk()) << spec.pattern;
    stable[i] = std::move(*sub);
  }
  for (size_t i = 0; i < kStableCount; ++i) {
    if (kStable[i].callback) continue;
    consumers.emplace_back([&, i](std::stop_token stop) {
      Subscription& sub = stable[i];
      const bool slow = kStable[i].slow;
      while (true) {
        auto batch = sub.ReceiveBatch(64, absl::InfiniteFuture(), stop);
        if (!batch.ok()) return;  // kCancelled: the test is done.
        for (const Delivery& d : *batch) {
          if (slow) SpinFor(absl::Microseconds(20));
          receivers[i]->Take(d);
        }
      }
    });
  }

  PublishClock clock;
  std::atomic<bool> publishing{true};
  std::atomic<uint64_t> result_matched{0};
  std::atomic<uint64_t> publish_errors{0};

  // Churn: subscribe with a random pattern and policy, consume a little,
  // close, and keep the record.
  std::vector<ChurnRecord> churned;
  std::thread churner([&] {
    std::mt19937 rng(20261124);  // Fixed seed: the run is reproducible.
    const char* patterns[] = {"t.0.1", "t.*.2", "t.3.*", "t.>",
                              ">",     "t.2.>", "t.1.1", "t.*.*"};
    const OverflowPolicy policies[] = {OverflowPolicy::kDropNewest,
                                       OverflowPolicy::kDropOldest,
                                       OverflowPolicy::kBlock};
    while (publishing.load()) {
      ChurnRecord rec;
      rec.pattern = patterns[rng() % std::size(patterns)];
      SubscriptionOptions o;
      o.queue_capacity = 1 + rng() % 64;
      o.overflow = policies[rng() % std::size(policies)];
      o.block_timeout = absl::Microseconds(200);
      rec.subscribe_began = clock.Take();
      auto sub = broker->Subscribe(rec.pattern, o);
      rec.subscribe_returned = clock.Take();
      if (!sub.ok()) {
        ADD_FAILURE() << sub.status();
        return;
      }
      Receiver r;
      std::jthread consumer([&](std::stop_token stop) {
        while (true) {
          auto d = sub->Receive(absl::InfiniteFuture(), stop);
          if (!d.ok()) return;  // Closed (kFailedPrecondition) or stopped.
          r.Take(*d);
        }
      });
      // Let the subscription live for a while, measured in publishes.
      const uint64_t until = clock.started[0].load() + 20 + rng() % 200;
      while (publishing.load() && clock.started[0].load() < until) {
        std::this_thread::yield();
      }
      rec.close_began = clock.Take();
      auto totals = sub->Close();  // Wakes the consumer.
      rec.close_returned = clock.Take();
      consumer.request_stop();
      consumer.join();
      if (!totals.ok()) {
        ADD_FAILURE() << totals.status();
        return;
      }
      rec.totals = *totals;
      rec.received = r.received();
      rec.out_of_order = r.out_of_order();
      rec.bad_payloads = r.bad_payloads();
      churned.push_back(std::move(rec));
    }
  });

  std::vector<std::thread> publishers;
  for (int p = 0; p < kPublishers; ++p) {
    publishers.emplace_back([&, p] {
      std::mt19937 rng(1000 + p);
      uint64_t matched = 0;
      // A topic handle for one topic per publisher, names for the rest.
      auto handle = broker->Topic(TopicName(p));
      if (!handle.ok()) {
        publish_errors.fetch_add(1);
        return;
      }
      for (uint64_t i = 0; i < per_publisher; ++i) {
        const int topic = static_cast<int>(rng() % kTopics);
        const std::string payload = absl::StrCat(p, ":", i);
        clock.started[topic].fetch_add(1, std::memory_order_seq_cst);
        absl::StatusOr<PublishResult> r =
            topic == p ? handle->Publish(payload)
                       : broker->Publish(TopicName(topic), payload);
        clock.finished[topic].fetch_add(1, std::memory_order_seq_cst);
        if (!r.ok()) {
          publish_errors.fetch_add(1);
          continue;
        }
        matched += r->matched;
        if (r->taken + r->dropped() != r->matched) publish_errors.fetch_add(1);
      }
      result_matched.fetch_add(matched);
    });
  }
  for (auto& t : publishers) t.join();
  publishing.store(false);
  churner.join();

  // Let the stable consumers drain what is queued, then stop and close.
  for (size_t i = 0; i < kStableCount; ++i) {
    EXPECT_TRUE(herald::testing::WaitFor(
        [&] { return stable[i].Totals()->queued == 0; }, absl::Seconds(120)))
        << kStable[i].pattern;
  }
  for (auto& c : consumers) c.request_stop();
  for (auto& c : consumers) c.join();

  const PublishClock::Snapshot end = clock.Take();
  uint64_t totals_matched = 0;
  for (size_t i = 0; i < kStableCount; ++i) {
    auto t = stable[i].Close();
    ASSERT_THAT(t, IsOk());
    const std::string pattern = kStable[i].pattern;
    SCOPED_TRACE(absl::StrCat("stable subscription ", i, " ", pattern));
    EXPECT_EQ(t->delivered, receivers[i]->received());
    EXPECT_EQ(t->matched, t->delivered + t->dropped() + t->abandoned);
    EXPECT_EQ(t->queued, 0u);
    EXPECT_EQ(t->matched, SumMatching(pattern, end.finished));
    EXPECT_EQ(receivers[i]->out_of_order(), 0u);
    EXPECT_EQ(receivers[i]->bad_payloads(), 0u);
    EXPECT_EQ(t->dropped(DropReason::kClosed), 0u);
    EXPECT_EQ(t->dropped(DropReason::kShutdown), 0u);
    totals_matched += t->matched;
  }

  EXPECT_GT(churned.size(), 0u);
  for (const ChurnRecord& rec : churned) {
    SCOPED_TRACE(absl::StrCat("churned subscription to ", rec.pattern));
    const SubscriptionTotals& t = rec.totals;
    EXPECT_EQ(t.delivered, rec.received);
    EXPECT_EQ(t.matched, t.delivered + t.dropped() + t.abandoned);
    EXPECT_EQ(rec.out_of_order, 0u);
    EXPECT_EQ(rec.bad_payloads, 0u);
    // Surely matched: started after Subscribe returned and finished before
    // Close began. Possibly matched: finished after Subscribe began and
    // started before Close returned.
    const uint64_t finished_before_close =
        SumMatching(rec.pattern, rec.close_began.finished);
    const uint64_t started_before_subscribed =
        SumMatching(rec.pattern, rec.subscribe_returned.started);
    const uint64_t lower =
        finished_before_close > started_before_subscribed
            ? finished_before_close - started_before_subscribed
            : 0;
    const uint64_t upper =
        SumMatching(rec.pattern, rec.close_returned.started) -
        SumMatching(rec.pattern, rec.subscribe_began.finished);
    EXPECT_GE(t.matched, lower);
    EXPECT_LE(t.matched, upper);
    totals_matched += t.matched;
  }

  EXPECT_EQ(publish_errors.load(), 0u);
  EXPECT_EQ(result_matched.load(), totals_matched);
  const v1::BrokerStats stats = broker->Shutdown(absl::ZeroDuration());
  EXPECT_EQ(stats.published(), per_publisher * kPublishers);
  EXPECT_EQ(stats.subscriptions_active(), 0u);
  std::printf("stress: %zu churned subscriptions, %llu matched in total\n",
              churned.size(), static_cast<unsigned long long>(totals_matched));
}

}  // namespace
}  // namespace herald
