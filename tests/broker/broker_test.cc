#include "broker/broker.h"

#include <atomic>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/wait_for.h"

namespace herald {
namespace {

using ::herald::testing::IsOk;
using ::herald::testing::IsOkAndHolds;
using ::herald::testing::StatusIs;
using ::herald::testing::WaitFor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<Broker> MakeBroker(BrokerOptions options = {}) {
  auto broker = Broker::Create(options);
  EXPECT_THAT(broker, IsOk());
  return std::move(broker).value();
}

SubscriptionOptions Capacity(
    size_t n, OverflowPolicy policy = OverflowPolicy::kDropNewest) {
  SubscriptionOptions o;
  o.queue_capacity = n;
  o.overflow = policy;
  return o;
}

TEST(BrokerTest, PublishReachesExactAndWildcardSubscribers) {
  auto broker = MakeBroker();
  auto exact = broker->Subscribe("orders.eu.created");
  auto star = broker->Subscribe("orders.*.created");
  auto tail = broker->Subscribe("orders.>");
  auto other = broker->Subscribe("payments.>");
  ASSERT_THAT(exact, IsOk());
  ASSERT_THAT(star, IsOk());
  ASSERT_THAT(tail, IsOk());
  ASSERT_THAT(other, IsOk());

  auto result = broker->Publish("orders.eu.created", "order-1",
                                {{"content-type", "text/plain"}});
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(result->matched, 3u);
  EXPECT_EQ(result->taken, 3u);
  EXPECT_EQ(result->dropped(), 0u);

  for (Subscription* s : {&*exact, &*star, &*tail}) {
    auto d = s->TryReceive();
    ASSERT_THAT(d, IsOk());
    EXPECT_EQ(d->topic(), "orders.eu.created");
    EXPECT_EQ(d->payload(), "order-1");
    ASSERT_EQ(d->headers().size(), 1u);
    EXPECT_EQ(d->headers()[0].key, "content-type");
    EXPECT_EQ(d->headers()[0].value, "text/plain");
    EXPECT_EQ(d->sequence(), 1u);
    EXPECT_EQ(d->missed(), 0u);
  }
  EXPECT_THAT(other->TryReceive(),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST(BrokerTest, PublishWithoutSubscribersMatchesNothing) {
  auto broker = MakeBroker();
  auto result = broker->Publish("nobody.listens", "x");
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(result->matched, 0u);
  const v1::BrokerStats stats = broker->Stats();
  EXPECT_EQ(stats.published(), 1u);
  EXPECT_EQ(stats.published_unmatched(), 1u);
}

TEST(BrokerTest, DropNewestCountsEachDropAndReportsMissed) {
  constexpr size_t kCapacity = 4;
  constexpr int kExtra = 3;
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t", Capacity(kCapacity));
  ASSERT_THAT(sub, IsOk());
  for (size_t i = 0; i < kCapacity + kExtra; ++i) {
    auto r = broker->Publish("t", std::to_string(i));
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->dropped(DropReason::kQueueFull), i < kCapacity ? 0u : 1u);
  }
  auto first = sub->TryReceive();
  ASSERT_THAT(first, IsOk());
  EXPECT_EQ(first->payload(), "0");
  EXPECT_EQ(first->missed(), static_cast<uint64_t>(kExtra));
  auto totals = sub->Totals();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->dropped(DropReason::kQueueFull),
            static_cast<uint64_t>(kExtra));
  EXPECT_EQ(totals->dropped(), static_cast<uint64_t>(kExtra));
  auto closed = sub->Close();
  ASSERT_THAT(closed, IsOk());
  EXPECT_EQ(closed->matched, kCapacity + kExtra);
  EXPECT_EQ(closed->delivered, 1u);
  EXPECT_EQ(closed->abandoned, kCapacity - 1);
  EXPECT_EQ(closed->high_water, kCapacity);
}

TEST(BrokerTest, ReceiveWaitsForAMessageFromAnotherThread) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t");
  ASSERT_THAT(sub, IsOk());
  std::thread publisher([&] { broker->Publish("t", "late").IgnoreError(); });
  auto d = sub->Receive(absl::Seconds(30));
  publisher.join();
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->payload(), "late");
}

TEST(BrokerTest, ReceiveIsCancelledByStopToken) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t");
  ASSERT_THAT(sub, IsOk());
  std::stop_source stop;
  absl::Notification started;
  absl::StatusOr<Delivery> result;
  std::thread receiver([&] {
    started.Notify();
    result = sub->Receive(absl::InfiniteFuture(), stop.get_token());
  });
  started.WaitForNotification();
  stop.request_stop();
  receiver.join();
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kCancelled));
}

TEST(BrokerTest, CallbackSubscriptionSeesMessagesInOrder) {
  constexpr int kMessages = 100;
  auto broker = MakeBroker();
  absl::Mutex mu;
  std::vector<std::string> seen;
  auto sub =
      broker->Subscribe("t", Capacity(kMessages), [&](const Delivery& d) {
        absl::MutexLock lock(&mu);
        seen.emplace_back(d.payload());
      });
  ASSERT_THAT(sub, IsOk());
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_THAT(broker->Publish("t", std::to_string(i)), IsOk());
  }
  ASSERT_TRUE(WaitFor([&] {
    absl::MutexLock lock(&mu);
    return seen.size() == kMessages;
  }));
  absl::MutexLock lock(&mu);
  for (int i = 0; i < kMessages; ++i) EXPECT_EQ(seen[i], std::to_string(i));
}

TEST(BrokerTest, ShutdownEndsStreamsWithOutOfRange) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t");
  ASSERT_THAT(sub, IsOk());
  ASSERT_THAT(broker->Publish("t", "a"), IsOk());
  const v1::BrokerStats stats = broker->Shutdown(absl::ZeroDuration());
  EXPECT_TRUE(stats.shut_down());
  EXPECT_THAT(sub->Receive(absl::Seconds(1)),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(broker->Publish("t", "b"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(broker->Subscribe("t"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  auto totals = sub->Close();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->matched, 1u);
  EXPECT_EQ(totals->dropped(DropReason::kShutdown), 1u);
}

TEST(BrokerTest, StatsJsonPrintsZeroCountsAndFieldNames) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("t");
  ASSERT_THAT(sub, IsOk());
  auto json = StatsToJson(broker->Stats());
  ASSERT_THAT(json, IsOk());
  EXPECT_THAT(*json, HasSubstr("\"published\":\"0\""));
  EXPECT_THAT(*json, HasSubstr("\"queue_full\":\"0\""));
  EXPECT_THAT(*json, HasSubstr("\"subscriptions_active\":\"1\""));
}

}  // namespace
}  // namespace herald
