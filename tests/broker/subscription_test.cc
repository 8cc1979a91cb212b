// Subscription behaviour per overflow policy, and every drop reason provoked
// an exact number of times.
#include "broker/subscription.h"

#include <atomic>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "broker/broker.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/wait_for.h"

namespace herald {
namespace {

using ::herald::testing::IsOk;
using ::herald::testing::StatusIs;
using ::herald::testing::WaitFor;

std::unique_ptr<Broker> MakeBroker(BrokerOptions options = {}) {
  auto broker = Broker::Create(options);
  EXPECT_THAT(broker, IsOk());
  return std::move(broker).value();
}

SubscriptionOptions Options(size_t capacity, OverflowPolicy policy,
                            absl::Duration block_timeout = absl::Seconds(1)) {
  SubscriptionOptions o;
  o.queue_capacity = capacity;
  o.overflow = policy;
  o.block_timeout = block_timeout;
  return o;
}

// Asserts that `reason` was counted `n` times and every other reason 0.
void ExpectOnlyDrops(const SubscriptionTotals& t, DropReason reason,
                     uint64_t n) {
  for (size_t i = 0; i < kDropReasonCount; ++i) {
    const auto r = static_cast<DropReason>(i);
    EXPECT_EQ(t.dropped(r), r == reason ? n : 0u)
        << "reason " << DropReasonName(r);
  }
}

class PolicyTest : public ::testing::TestWithParam<OverflowPolicy> {};

TEST_P(PolicyTest, DeliversInPublishOrderWithIncreasingSequence) {
  constexpr int kMessages = 50;
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t", Options(kMessages, GetParam()));
  ASSERT_THAT(sub, IsOk());
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_THAT(broker->Publish("t", std::to_string(i)), IsOk());
  }
  for (int i = 0; i < kMessages; ++i) {
    auto d = sub->TryReceive();
    ASSERT_THAT(d, IsOk());
    EXPECT_EQ(d->payload(), std::to_string(i));
    EXPECT_EQ(d->sequence(), static_cast<uint64_t>(i + 1));
    EXPECT_EQ(d->missed(), 0u);
  }
  EXPECT_THAT(sub->TryReceive(), StatusIs(absl::StatusCode::kDeadlineExceeded));
}

// Batches across the queue's wrap-around (7 slots, not a power of two), in
// order, each with its sequence, counted as delivered once each.
TEST_P(PolicyTest, BatchesKeepOrderAndSequenceAcrossTheWrapAround) {
  constexpr size_t kCapacity = 7;
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t", Options(kCapacity, GetParam()));
  ASSERT_THAT(sub, IsOk());
  std::vector<Delivery> batch;
  int published = 0;
  uint64_t next_sequence = 1;
  for (const size_t queued : {5, 6, 7, 3}) {
    for (size_t i = 0; i < queued; ++i) {
      ASSERT_THAT(broker->Publish("t", std::to_string(published++)), IsOk());
    }
    size_t received = 0;
    while (received < queued) {
      ASSERT_THAT(sub->ReceiveBatch(4, absl::Now(), &batch), IsOk());
      ASSERT_LE(batch.size(), 4u);
      for (const Delivery& d : batch) {
        EXPECT_EQ(d.sequence(), next_sequence);
        EXPECT_EQ(d.payload(), std::to_string(next_sequence - 1));
        EXPECT_EQ(d.missed(), 0u);
        ++next_sequence;
      }
      received += batch.size();
    }
    EXPECT_EQ(received, queued);
  }
  auto totals = sub->Totals();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->delivered, static_cast<uint64_t>(published));
  EXPECT_EQ(totals->matched, static_cast<uint64_t>(published));
  EXPECT_EQ(totals->queued, 0u);
  EXPECT_EQ(totals->high_water, kCapacity);
}

TEST_P(PolicyTest, CapacityIsExact) {
  constexpr size_t kCapacity = 7;  // Not a power of two.
  auto broker = MakeBroker();
  auto sub = broker->Subscribe(
      "t", Options(kCapacity, GetParam(), absl::Milliseconds(1)));
  ASSERT_THAT(sub, IsOk());
  for (size_t i = 0; i < kCapacity; ++i) {
    auto r = broker->Publish("t", "x");
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->taken, 1u) << "message " << i;
  }
  auto r = broker->Publish("t", "one too many");
  ASSERT_THAT(r, IsOk());
  auto totals = sub->Totals();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->queued, kCapacity);
  EXPECT_EQ(totals->high_water, kCapacity);
  EXPECT_EQ(totals->dropped(), 1u);
}

TEST_P(PolicyTest, HighWaterIsTheDeepestQueueSeenByAReceive) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t", Options(16, GetParam(), absl::Seconds(1)));
  ASSERT_THAT(sub, IsOk());
  // A consumer that keeps up: the queue never holds more than one.
  for (int i = 0; i < 3; ++i) {
    ASSERT_THAT(broker->Publish("t", "x"), IsOk());
    ASSERT_THAT(sub->TryReceive(), IsOk());
  }
  auto totals = sub->Totals();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->high_water, 1u);
  for (int i = 0; i < 5; ++i) ASSERT_THAT(broker->Publish("t", "x"), IsOk());
  ASSERT_THAT(sub->TryReceive(), IsOk());
  totals = sub->Totals();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->high_water, 5u);
  EXPECT_EQ(totals->queued, 4u);
}

TEST_P(PolicyTest, ABatchReportsTheDropsBeforeItOnItsFirstDelivery) {
  auto broker = MakeBroker();
  auto sub =
      broker->Subscribe("t", Options(2, GetParam(), absl::Milliseconds(1)));
  ASSERT_THAT(sub, IsOk());
  std::vector<Delivery> batch;
  uint64_t missed_total = 0;
  for (const int published : {5, 3}) {
    for (int i = 0; i < published; ++i) {
      ASSERT_THAT(broker->Publish("t", "x"), IsOk());
    }
    ASSERT_THAT(sub->ReceiveBatch(10, absl::Now(), &batch), IsOk());
    ASSERT_EQ(batch.size(), 2u);
    EXPECT_EQ(batch[0].missed(), static_cast<uint64_t>(published - 2));
    EXPECT_EQ(batch[1].missed(), 0u);
    missed_total += batch[0].missed();
  }
  auto totals = sub->Totals();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->dropped(), missed_total);
}

TEST_P(PolicyTest, AccountingIdentityHoldsAfterClose) {
  constexpr size_t kCapacity = 5;
  constexpr int kPublished = 12;
  constexpr int kReceived = 3;
  auto broker = MakeBroker();
  auto sub = broker->Subscribe(
      "a.>", Options(kCapacity, GetParam(), absl::Milliseconds(1)));
  ASSERT_THAT(sub, IsOk());
  uint64_t matched = 0;
  for (int i = 0; i < kPublished; ++i) {
    auto r = broker->Publish("a.b", "x");
    ASSERT_THAT(r, IsOk());
    matched += r->matched;
  }
  for (int i = 0; i < kReceived; ++i) ASSERT_THAT(sub->TryReceive(), IsOk());
  auto t = sub->Close();
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->matched, matched);
  EXPECT_EQ(t->delivered, static_cast<uint64_t>(kReceived));
  EXPECT_EQ(t->queued, 0u);
  EXPECT_EQ(t->matched, t->delivered + t->dropped() + t->abandoned);
  EXPECT_EQ(t->abandoned, kCapacity - kReceived);
}

INSTANTIATE_TEST_SUITE_P(AllPolicies, PolicyTest,
                         ::testing::Values(OverflowPolicy::kDropNewest,
                                           OverflowPolicy::kDropOldest,
                                           OverflowPolicy::kBlock),
                         [](const auto& info) {
                           switch (info.param) {
                             case OverflowPolicy::kDropNewest:
                               return std::string("DropNewest");
                             case OverflowPolicy::kDropOldest:
                               return std::string("DropOldest");
                             case OverflowPolicy::kBlock:
                               return std::string("Block");
                           }
                           return std::string("Unknown");
                         });

constexpr uint64_t kDrops = 5;

TEST(DropReasonTest, QueueFullCountsExactlyNAndMissedReportsThem) {
  constexpr size_t kCapacity = 3;
  auto broker = MakeBroker();
  auto sub =
      broker->Subscribe("t", Options(kCapacity, OverflowPolicy::kDropNewest));
  ASSERT_THAT(sub, IsOk());
  for (uint64_t i = 0; i < kCapacity + kDrops; ++i) {
    ASSERT_THAT(broker->Publish("t", std::to_string(i)), IsOk());
  }
  auto d = sub->TryReceive();
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->payload(), "0");  // The newest were dropped.
  EXPECT_EQ(d->missed(), kDrops);
  auto next = sub->TryReceive();
  ASSERT_THAT(next, IsOk());
  EXPECT_EQ(next->missed(), 0u);  // Reported once.
  auto t = sub->Totals();
  ASSERT_THAT(t, IsOk());
  ExpectOnlyDrops(*t, DropReason::kQueueFull, kDrops);
}

TEST(DropReasonTest, EvictedOldestCountsExactlyNAndKeepsTheNewest) {
  constexpr size_t kCapacity = 3;
  auto broker = MakeBroker();
  auto sub =
      broker->Subscribe("t", Options(kCapacity, OverflowPolicy::kDropOldest));
  ASSERT_THAT(sub, IsOk());
  uint32_t evicted = 0;
  for (uint64_t i = 0; i < kCapacity + kDrops; ++i) {
    auto r = broker->Publish("t", std::to_string(i));
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->taken, 1u);
    evicted += r->evicted;
  }
  EXPECT_EQ(evicted, kDrops);
  auto d = sub->TryReceive();
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->payload(), std::to_string(kDrops));  // Oldest kept message.
  EXPECT_EQ(d->sequence(), kDrops + 1);             // Evicted ones had numbers.
  EXPECT_EQ(d->missed(), kDrops);
  auto t = sub->Totals();
  ASSERT_THAT(t, IsOk());
  ExpectOnlyDrops(*t, DropReason::kEvictedOldest, kDrops);
}

TEST(DropReasonTest, LatestValueSubscriptionKeepsOnlyTheLastMessage) {
  auto broker = MakeBroker();
  auto sub =
      broker->Subscribe("price", Options(1, OverflowPolicy::kDropOldest));
  ASSERT_THAT(sub, IsOk());
  for (int i = 0; i < 10; ++i) {
    ASSERT_THAT(broker->Publish("price", std::to_string(i)), IsOk());
  }
  auto d = sub->TryReceive();
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->payload(), "9");
  EXPECT_EQ(d->missed(), 9u);
}

TEST(DropReasonTest, BlockTimeoutCountsExactlyNAndPublishStillSucceeds) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe(
      "t", Options(1, OverflowPolicy::kBlock, absl::Milliseconds(1)));
  ASSERT_THAT(sub, IsOk());
  ASSERT_THAT(broker->Publish("t", "kept"), IsOk());
  for (uint64_t i = 0; i < kDrops; ++i) {
    auto r = broker->Publish("t", "late");
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->dropped(DropReason::kBlockTimeout), 1u);
  }
  auto d = sub->TryReceive();
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->payload(), "kept");
  EXPECT_EQ(d->missed(), kDrops);
  auto t = sub->Totals();
  ASSERT_THAT(t, IsOk());
  ExpectOnlyDrops(*t, DropReason::kBlockTimeout, kDrops);
}

TEST(DropReasonTest, BlockedPublisherProceedsWhenTheConsumerMakesRoom) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe(
      "t", Options(1, OverflowPolicy::kBlock, absl::Seconds(10)));
  ASSERT_THAT(sub, IsOk());
  ASSERT_THAT(broker->Publish("t", "first"), IsOk());
  absl::StatusOr<PublishResult> second;
  std::thread publisher([&] { second = broker->Publish("t", "second"); });
  // The publisher is blocked until this receive makes room.
  ASSERT_TRUE(
      WaitFor([&] { return broker->Stats().subscriptions(0).matched() == 2; }));
  auto d = sub->Receive(absl::Seconds(30));
  publisher.join();
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->payload(), "first");
  ASSERT_THAT(second, IsOk());
  EXPECT_EQ(second->taken, 1u);
  auto d2 = sub->TryReceive();
  ASSERT_THAT(d2, IsOk());
  EXPECT_EQ(d2->payload(), "second");
}

// One batch receive that frees several slots lets every publisher waiting
// for one in, each before its block_timeout.
TEST(DropReasonTest, ABatchReceiveLetsInEveryBlockedPublisher) {
  constexpr int kWaiting = 3;
  BrokerOptions options;
  options.max_block_timeout = absl::Hours(1);
  auto broker = MakeBroker(options);
  auto sub = broker->Subscribe(
      "t", Options(kWaiting, OverflowPolicy::kBlock, absl::Hours(1)));
  ASSERT_THAT(sub, IsOk());
  for (int i = 0; i < kWaiting; ++i) {
    ASSERT_THAT(broker->Publish("t", absl::StrCat("queued ", i)), IsOk());
  }
  std::vector<absl::StatusOr<PublishResult>> results(kWaiting);
  std::vector<std::thread> publishers;
  for (int i = 0; i < kWaiting; ++i) {
    publishers.emplace_back([&, i] {
      results[i] = broker->Publish("t", absl::StrCat("waiting ", i));
    });
  }
  ASSERT_TRUE(WaitFor([&] {
    auto t = sub->Totals();
    return t.ok() && t->matched == 2 * kWaiting;
  }));
  std::vector<Delivery> batch;
  ASSERT_THAT(sub->ReceiveBatch(kWaiting, absl::Now(), &batch), IsOk());
  ASSERT_EQ(batch.size(), static_cast<size_t>(kWaiting));
  for (int i = 0; i < kWaiting; ++i) {
    EXPECT_EQ(batch[i].payload(), absl::StrCat("queued ", i));
    EXPECT_EQ(batch[i].sequence(), static_cast<uint64_t>(i + 1));
  }
  // Every waiting publisher gets in, long before its hour-long timeout.
  absl::Notification joined;
  std::thread joiner([&] {
    for (std::thread& t : publishers) t.join();
    joined.Notify();
  });
  const bool prompt = joined.WaitForNotificationWithTimeout(absl::Seconds(30));
  EXPECT_TRUE(prompt) << "a publisher was not woken by the batch";
  if (!prompt) {
    ASSERT_THAT(sub->Close(), IsOk());  // Ends the waits.
  }
  joiner.join();
  for (const auto& r : results) {
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->taken, 1u);
  }
  ASSERT_THAT(sub->ReceiveBatch(10, absl::Now(), &batch), IsOk());
  EXPECT_EQ(batch.size(), static_cast<size_t>(kWaiting));
  auto totals = sub->Totals();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->delivered, 2u * kWaiting);
  EXPECT_EQ(totals->dropped(), 0u);
}

// A publisher waiting on a full kBlock queue holds no registry pin: the
// other targets of its message have it at once, and subscribing or closing
// (which wait for every pinned publisher) does not wait for it.
TEST(DropReasonTest, BlockedPublisherHoldsUpNeitherOtherTargetsNorSubscribe) {
  BrokerOptions options;
  options.max_block_timeout = absl::Hours(1);
  auto broker = MakeBroker(options);
  auto blocking = broker->Subscribe(
      "t", Options(1, OverflowPolicy::kBlock, absl::Hours(1)));
  ASSERT_THAT(blocking, IsOk());
  auto other = broker->Subscribe("t", Options(4, OverflowPolicy::kDropNewest));
  ASSERT_THAT(other, IsOk());
  ASSERT_THAT(broker->Publish("t", "first"), IsOk());
  ASSERT_THAT(other->TryReceive(), IsOk());
  absl::StatusOr<PublishResult> second;
  std::thread publisher([&] { second = broker->Publish("t", "second"); });
  auto got = other->Receive(absl::Seconds(30));
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->payload(), "second");
  ASSERT_TRUE(WaitFor([&] {
    auto t = blocking->Totals();
    return t.ok() && t->matched == 2;
  }));
  // Subscribe and close on another thread, bounded by a deadline far below
  // the publisher's hour-long block_timeout.
  absl::Notification done;
  std::thread churn([&] {
    for (int i = 0; i < 3; ++i) {
      auto s = broker->Subscribe(absl::StrCat("churn.", i),
                                 Options(1, OverflowPolicy::kDropNewest));
      if (s.ok()) s->Close().IgnoreError();
    }
    done.Notify();
  });
  const bool prompt = done.WaitForNotificationWithTimeout(absl::Seconds(30));
  EXPECT_TRUE(prompt) << "subscribe/close waited for the blocked publisher";
  // Make room: the publisher's push is taken.
  auto first = blocking->Receive(absl::Seconds(30));
  publisher.join();
  churn.join();
  ASSERT_THAT(first, IsOk());
  EXPECT_EQ(first->payload(), "first");
  ASSERT_THAT(second, IsOk());
  EXPECT_EQ(second->matched, 2u);
  EXPECT_EQ(second->taken, 2u);
  auto d = blocking->TryReceive();
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->payload(), "second");
}

// Publishers racing for the last free slot of a kBlock queue: the ones that
// lose it wait for the next one, none drops (the block_timeout is far
// longer than the run).
TEST(DropReasonTest, PublishersRacingForRoomInABlockQueueNeverDrop) {
  constexpr int kPublishers = 4;
  constexpr int kEach = 2000;
  auto broker = MakeBroker();
  auto sub = broker->Subscribe(
      "t", Options(1, OverflowPolicy::kBlock, absl::Seconds(10)));
  ASSERT_THAT(sub, IsOk());
  std::atomic<uint64_t> dropped{0};
  std::vector<std::thread> publishers;
  for (int p = 0; p < kPublishers; ++p) {
    publishers.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        auto r = broker->Publish("t", "x");
        if (!r.ok() || r->taken != 1) dropped.fetch_add(1);
      }
    });
  }
  int received = 0;
  while (received < kPublishers * kEach) {
    auto d = sub->Receive(absl::Seconds(30));
    if (!d.ok()) break;
    ++received;
  }
  for (auto& t : publishers) t.join();
  EXPECT_EQ(received, kPublishers * kEach);
  EXPECT_EQ(dropped.load(), 0u);
  auto t = sub->Close();
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->dropped(), 0u);
  EXPECT_EQ(t->delivered, static_cast<uint64_t>(kPublishers * kEach));
}

TEST(DropReasonTest, ShutdownEndsAWaitingPublisherWithAShutdownDrop) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe(
      "t", Options(1, OverflowPolicy::kBlock, absl::Seconds(10)));
  ASSERT_THAT(sub, IsOk());
  ASSERT_THAT(broker->Publish("t", "fills the queue"), IsOk());
  absl::StatusOr<PublishResult> blocked;
  std::thread publisher([&] { blocked = broker->Publish("t", "x"); });
  ASSERT_TRUE(
      WaitFor([&] { return broker->Stats().subscriptions(0).matched() == 2; }));
  const v1::BrokerStats stats = broker->Shutdown(absl::ZeroDuration());
  publisher.join();
  ASSERT_THAT(blocked, IsOk());
  EXPECT_EQ(blocked->dropped(DropReason::kShutdown), 1u);
  EXPECT_EQ(blocked->taken, 0u);
  ASSERT_EQ(stats.subscriptions_size(), 1);
  // The queued message and the waiting push, both counted at the end.
  EXPECT_EQ(stats.subscriptions(0).dropped().shutdown(), 2u);
  EXPECT_EQ(stats.subscriptions(0).matched(), 2u);
}

TEST(DropReasonTest, ClosedCountsPublishersThatLostTheRaceToClose) {
  constexpr int kBlocked = 3;
  auto broker = MakeBroker();
  auto sub = broker->Subscribe(
      "t", Options(1, OverflowPolicy::kBlock, absl::Seconds(10)));
  ASSERT_THAT(sub, IsOk());
  ASSERT_THAT(broker->Publish("t", "fills the queue"), IsOk());
  std::vector<absl::StatusOr<PublishResult>> results(kBlocked);
  std::vector<std::thread> publishers;
  for (int i = 0; i < kBlocked; ++i) {
    publishers.emplace_back([&, i] { results[i] = broker->Publish("t", "x"); });
  }
  // Every publisher is inside its push (matched counted, blocked on room).
  ASSERT_TRUE(WaitFor([&] {
    return broker->Stats().subscriptions(0).matched() == 1 + kBlocked;
  }));
  auto t = sub->Close();  // Wakes them: each counts kClosed.
  for (auto& p : publishers) p.join();
  ASSERT_THAT(t, IsOk());
  ExpectOnlyDrops(*t, DropReason::kClosed, kBlocked);
  EXPECT_EQ(t->abandoned, 1u);
  EXPECT_EQ(t->matched, t->delivered + t->dropped() + t->abandoned);
  for (const auto& r : results) {
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->dropped(DropReason::kClosed), 1u);
  }
}

TEST(DropReasonTest, ShutdownDropsWhatIsStillQueuedAtTheDeadline) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t", Options(16, OverflowPolicy::kDropNewest));
  ASSERT_THAT(sub, IsOk());
  for (uint64_t i = 0; i < kDrops; ++i) {
    ASSERT_THAT(broker->Publish("t", "x"), IsOk());
  }
  const v1::BrokerStats stats = broker->Shutdown(absl::ZeroDuration());
  ASSERT_EQ(stats.subscriptions_size(), 1);
  EXPECT_EQ(stats.subscriptions(0).dropped().shutdown(), kDrops);
  EXPECT_EQ(stats.subscriptions(0).queued(), 0u);
  auto t = sub->Close();
  ASSERT_THAT(t, IsOk());
  ExpectOnlyDrops(*t, DropReason::kShutdown, kDrops);
  EXPECT_EQ(t->abandoned, 0u);
}

TEST(DropReasonTest, GroupFullCountsOnTheGroupWhenEveryMemberIsFull) {
  auto broker = MakeBroker();
  SubscriptionOptions o = Options(1, OverflowPolicy::kDropNewest);
  o.queue_group = "workers";
  auto a = broker->Subscribe("jobs", o);
  auto b = broker->Subscribe("jobs", o);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  for (uint64_t i = 0; i < 2 + kDrops; ++i) {
    auto r = broker->Publish("jobs", "j");
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->matched, 1u);  // The group counts once.
    EXPECT_EQ(r->dropped(DropReason::kGroupFull), i < 2 ? 0u : 1u);
  }
  const v1::BrokerStats stats = broker->Stats();
  ASSERT_EQ(stats.groups_size(), 1);
  EXPECT_EQ(stats.groups(0).matched(), 2 + kDrops);
  EXPECT_EQ(stats.groups(0).dropped().group_full(), kDrops);
  EXPECT_EQ(stats.groups(0).members(), 2u);
  EXPECT_EQ(stats.groups(0).taken(), 2u);
  auto ta = a->Close();
  auto tb = b->Close();
  ASSERT_THAT(ta, IsOk());
  ASSERT_THAT(tb, IsOk());
  // Each member was given exactly one message and dropped none itself.
  EXPECT_EQ(ta->matched, 1u);
  EXPECT_EQ(tb->matched, 1u);
  EXPECT_EQ(ta->dropped() + tb->dropped(), 0u);
  // The group is gone with its last member; its counts are not.
  const v1::BrokerStats after = broker->Stats();
  EXPECT_EQ(after.groups_size(), 0);
  EXPECT_EQ(after.closed_groups_matched(), 2 + kDrops);
  EXPECT_EQ(after.closed_groups_taken(), 2u);
  EXPECT_EQ(after.closed_dropped().group_full(), kDrops);
  EXPECT_EQ(after.closed_matched(), 2u);  // The members' own totals.
}

TEST(SubscriptionTest, ReceiveTimesOutWithDeadlineExceeded) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t");
  ASSERT_THAT(sub, IsOk());
  // The timeout is waited out in full: it starts when the call finds the
  // queue empty, not before the call was made.
  const absl::Time start = absl::Now();
  EXPECT_THAT(sub->Receive(absl::Milliseconds(5)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(5));
  // A timeout <= 0 polls once rather than failing.
  EXPECT_THAT(sub->Receive(absl::Milliseconds(-5)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  ASSERT_THAT(broker->Publish("t", "x"), IsOk());
  EXPECT_THAT(sub->Receive(absl::ZeroDuration()), IsOk());
  // An infinite timeout returns a queued message at once.
  ASSERT_THAT(broker->Publish("t", "y"), IsOk());
  auto d = sub->Receive(absl::InfiniteDuration());
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->payload(), "y");
}

TEST(SubscriptionTest, AlreadyStoppedTokenCancelsAtOnce) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t");
  ASSERT_THAT(sub, IsOk());
  std::stop_source stop;
  stop.request_stop();
  EXPECT_THAT(sub->Receive(absl::InfiniteFuture(), stop.get_token()),
              StatusIs(absl::StatusCode::kCancelled));
  EXPECT_THAT(sub->Receive(absl::InfiniteDuration(), stop.get_token()),
              StatusIs(absl::StatusCode::kCancelled));
}

TEST(SubscriptionTest, BlockedReceiveEndsWithOutOfRangeAtShutdown) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t");
  ASSERT_THAT(sub, IsOk());
  absl::StatusOr<Delivery> result;
  std::thread receiver([&] { result = sub->Receive(absl::InfiniteFuture()); });
  broker->Shutdown(absl::Seconds(1));
  receiver.join();
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kOutOfRange));
}

TEST(SubscriptionTest, ShutdownLetsSubscribersDrainBeforeTheDeadline) {
  constexpr int kMessages = 20;
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t");
  ASSERT_THAT(sub, IsOk());
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_THAT(broker->Publish("t", "x"), IsOk());
  }
  int received = 0;
  absl::Status end;
  std::thread consumer([&] {
    while (true) {
      auto d = sub->Receive(absl::InfiniteFuture());
      if (!d.ok()) {
        end = d.status();
        return;
      }
      ++received;
    }
  });
  const v1::BrokerStats stats = broker->Shutdown(absl::Seconds(60));
  consumer.join();
  EXPECT_EQ(received, kMessages);
  EXPECT_THAT(end, StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(stats.subscriptions(0).delivered(), kMessages);
  EXPECT_EQ(stats.subscriptions(0).dropped().shutdown(), 0u);
}

TEST(SubscriptionTest, CloseWakesABlockedReceive) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t");
  ASSERT_THAT(sub, IsOk());
  absl::StatusOr<Delivery> result;
  std::thread receiver([&] { result = sub->Receive(absl::InfiniteFuture()); });
  // Whether the receiver has parked yet or not, Close() ends its Receive.
  auto t = sub->Close();
  receiver.join();
  ASSERT_THAT(t, IsOk());
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(SubscriptionTest, CallsOnClosedOrMovedFromHandlesFailWithPrecondition) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t");
  ASSERT_THAT(sub, IsOk());
  ASSERT_THAT(broker->Publish("t", "x"), IsOk());
  Subscription moved = std::move(*sub);
  EXPECT_FALSE(sub->valid());
  EXPECT_EQ(sub->id(), 0u);
  EXPECT_THAT(sub->TryReceive(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(sub->Close(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(sub->Totals(), StatusIs(absl::StatusCode::kFailedPrecondition));

  auto first = moved.Close();
  ASSERT_THAT(first, IsOk());
  EXPECT_EQ(first->abandoned, 1u);
  auto second = moved.Close();  // The same frozen totals again.
  ASSERT_THAT(second, IsOk());
  EXPECT_EQ(second->matched, first->matched);
  EXPECT_EQ(second->abandoned, first->abandoned);
  EXPECT_THAT(moved.TryReceive(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(moved.ReceiveBatch(4, absl::Now()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  // Messages published after the close reach nobody.
  auto r = broker->Publish("t", "y");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->matched, 0u);
}

TEST(SubscriptionTest, ReceiveBatchReturnsUpToMaxInOrder) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t");
  ASSERT_THAT(sub, IsOk());
  for (int i = 0; i < 5; ++i) {
    ASSERT_THAT(broker->Publish("t", std::to_string(i)), IsOk());
  }
  EXPECT_THAT(sub->ReceiveBatch(0, absl::Now()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  auto batch = sub->ReceiveBatch(3, absl::Now());
  ASSERT_THAT(batch, IsOk());
  ASSERT_EQ(batch->size(), 3u);
  EXPECT_EQ((*batch)[0].payload(), "0");
  EXPECT_EQ((*batch)[2].payload(), "2");
  auto rest = sub->ReceiveBatch(10, absl::Now());
  ASSERT_THAT(rest, IsOk());
  EXPECT_EQ(rest->size(), 2u);
}

TEST(SubscriptionTest, ReceiveBatchIntoAVectorReplacesItsContents) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t");
  ASSERT_THAT(sub, IsOk());
  for (int i = 0; i < 5; ++i) {
    ASSERT_THAT(broker->Publish("t", std::to_string(i)), IsOk());
  }
  std::vector<Delivery> batch;
  ASSERT_THAT(sub->ReceiveBatch(3, absl::Now(), &batch), IsOk());
  ASSERT_EQ(batch.size(), 3u);
  EXPECT_EQ(batch[0].payload(), "0");
  EXPECT_EQ(batch[2].payload(), "2");
  const size_t capacity = batch.capacity();
  ASSERT_THAT(sub->ReceiveBatch(10, absl::Now(), &batch), IsOk());
  ASSERT_EQ(batch.size(), 2u);  // Replaced, not appended.
  EXPECT_EQ(batch[0].payload(), "3");
  EXPECT_EQ(batch[0].sequence(), 4u);
  EXPECT_GE(batch.capacity(), capacity);  // Kept for reuse.
  // An error leaves it empty.
  EXPECT_THAT(sub->ReceiveBatch(10, absl::Now(), &batch),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_TRUE(batch.empty());
  EXPECT_THAT(sub->ReceiveBatch(0, absl::Now(), &batch),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(SubscriptionTest, ReceiveBatchIntoAVectorWaitsAndIsCancelled) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t");
  ASSERT_THAT(sub, IsOk());
  std::stop_source stop;
  std::vector<Delivery> batch;
  // A publish from another thread ends the wait (with a stop token that is
  // never triggered).
  std::thread publisher(
      [&] { ASSERT_THAT(broker->Publish("t", "woken"), IsOk()); });
  ASSERT_THAT(sub->ReceiveBatch(8, absl::Now() + absl::Seconds(30), &batch,
                                stop.get_token()),
              IsOk());
  publisher.join();
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].payload(), "woken");
  // Then cancelled, while waiting or before.
  std::thread canceller([&] { stop.request_stop(); });
  EXPECT_THAT(
      sub->ReceiveBatch(8, absl::InfiniteFuture(), &batch, stop.get_token()),
      StatusIs(absl::StatusCode::kCancelled));
  canceller.join();
  EXPECT_TRUE(batch.empty());
}

TEST(SubscriptionTest, DeliveryOutlivesItsSubscriptionAndBroker) {
  Delivery kept;
  {
    auto broker = MakeBroker();
    auto sub = broker->Subscribe("t");
    ASSERT_THAT(sub, IsOk());
    ASSERT_THAT(broker->Publish("t", "still here", {{"k", "v"}}), IsOk());
    auto d = sub->TryReceive();
    ASSERT_THAT(d, IsOk());
    kept = std::move(*d);
  }
  EXPECT_EQ(kept.payload(), "still here");
  EXPECT_EQ(kept.topic(), "t");
  EXPECT_EQ(kept.headers()[0].value, "v");
}

TEST(SubscriptionTest, HandleOutlivingTheBrokerReportsEndAndCloses) {
  std::optional<Subscription> sub;
  {
    auto broker = MakeBroker();
    auto s = broker->Subscribe("t");
    ASSERT_THAT(s, IsOk());
    ASSERT_THAT(broker->Publish("t", "x"), IsOk());
    sub.emplace(std::move(*s));
  }
  EXPECT_THAT(sub->Receive(absl::Seconds(1)),
              StatusIs(absl::StatusCode::kOutOfRange));
  auto t = sub->Close();
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->dropped(DropReason::kShutdown), 1u);
}

TEST(SubscriptionTest, CallbackSubscriptionCannotReceive) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t", {}, [](const Delivery&) {});
  ASSERT_THAT(sub, IsOk());
  EXPECT_THAT(sub->TryReceive(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(SubscriptionTest, HandleDestroyedInsideItsOwnCallbackClosesAfterIt) {
  auto broker = MakeBroker();
  std::optional<Subscription> sub;
  absl::Notification closed_inside;
  std::atomic<int> calls{0};
  absl::Mutex mu;  // Guards `sub` between this thread and the callback.
  absl::MutexLock setup(&mu);
  auto s = broker->Subscribe("t", {}, [&](const Delivery&) {
    calls.fetch_add(1);
    absl::MutexLock lock(&mu);
    sub.reset();  // Destroys the handle from inside its own callback.
    closed_inside.Notify();
  });
  ASSERT_THAT(s, IsOk());
  sub.emplace(std::move(*s));
  mu.Unlock();
  ASSERT_THAT(broker->Publish("t", "1"), IsOk());
  ASSERT_TRUE(closed_inside.WaitForNotificationWithTimeout(absl::Seconds(30)));
  auto r = broker->Publish("t", "2");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->matched, 0u);  // Closed: no longer registered.
  EXPECT_EQ(calls.load(), 1);
  mu.Lock();
}

TEST(SubscriptionTest, DestroyingAHandleWaitsForItsRunningCallback) {
  auto broker = MakeBroker();
  absl::Notification entered;
  absl::Notification release;
  std::atomic<bool> finished{false};
  auto sub = broker->Subscribe("t", {}, [&](const Delivery&) {
    entered.Notify();
    release.WaitForNotification();
    finished.store(true);
  });
  ASSERT_THAT(sub, IsOk());
  ASSERT_THAT(broker->Publish("t", "x"), IsOk());
  ASSERT_TRUE(entered.WaitForNotificationWithTimeout(absl::Seconds(30)));
  std::thread closer([&] {
    auto t = sub->Close();
    EXPECT_TRUE(finished.load());  // Close returned after the callback.
    ASSERT_THAT(t, IsOk());
    EXPECT_EQ(t->delivered, 1u);
  });
  release.Notify();
  closer.join();
}

}  // namespace
}  // namespace herald
