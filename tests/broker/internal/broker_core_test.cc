// BrokerCore behaviour that only Herald's own layers (the network server)
// reach: deferred pushes settled by a publisher that polls.
#include "broker/internal/broker_core.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "broker/broker.h"
#include "broker/internal/subscription_state.h"
#include "broker/internal/thread_identity.h"
#include "broker/subscription.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace herald::internal {
namespace {

using ::herald::testing::IsOk;

// A push that a polling publisher settles runs the subscription's notifier
// (a server's, for its remote subscriptions). Close() must wait for it: a
// server frees itself once its subscriptions are closed, so a notifier that
// runs after Close() returned would call into freed memory.
TEST(BrokerCoreTest, CloseWaitsForTheNotifierOfASettledDeferredPush) {
  // Every thread here blocks on Abseil primitives another one wakes, some
  // through BrokerCore (not a public entry point that ensures it): without
  // this, TSAN reports Abseil's lazily made identity (see the header).
  EnsureThreadIdentity();
  auto broker = Broker::Create();
  ASSERT_THAT(broker, IsOk());
  BrokerCore& core = CoreOf(**broker);
  SubscriptionOptions options;
  options.queue_capacity = 1;
  options.overflow = OverflowPolicy::kBlock;
  options.block_timeout = absl::Seconds(10);
  std::atomic<int> notifications{0};
  absl::Notification in_notifier;
  absl::Notification close_returned;
  std::atomic<bool> closed_during_notifier{false};
  auto sub = core.Subscribe("t", options, nullptr, [&] {
    if (notifications.fetch_add(1) != 1) return;  // Only the settled push.
    in_notifier.Notify();
    // A correct Close() is still waiting for this notifier, so this wait
    // times out; one that did not wait has returned by now.
    closed_during_notifier =
        close_returned.WaitForNotificationWithTimeout(absl::Seconds(1));
  });
  ASSERT_THAT(sub, IsOk());
  ASSERT_THAT(core.PublishFromNetwork("t", "first", {}), IsOk());
  std::vector<DeferredPush> deferred;
  auto second = core.PublishFromNetwork("t", "second", {}, &deferred);
  ASSERT_THAT(second, IsOk());
  ASSERT_EQ(deferred.size(), 1u);
  // Drained as the server drains: room for the deferred push, and re-armed
  // so that the next push notifies again.
  SubscriptionState* state = StateOf(*sub);
  std::vector<Delivery> taken;
  ASSERT_TRUE(state->TakeQueued(1, &taken));
  ASSERT_EQ(taken.size(), 1u);
  EXPECT_FALSE(state->Rearm());

  std::thread settler([&] {
    EnsureThreadIdentity();  // The notifier waits on this thread.
    const PushOutcome out = core.SettleDeferred(deferred[0], false);
    EXPECT_TRUE(out.taken);
  });
  in_notifier.WaitForNotification();
  std::thread closer([&] {
    EnsureThreadIdentity();
    auto totals = sub->Close();
    close_returned.Notify();
    ASSERT_THAT(totals, IsOk());
    EXPECT_EQ(totals->matched, 2u);
    EXPECT_EQ(totals->delivered, 1u);
    EXPECT_EQ(totals->abandoned, 1u);  // The settled push, never taken.
  });
  settler.join();
  closer.join();
  EXPECT_FALSE(closed_during_notifier)
      << "Close() returned while a settled push's notifier was running";
  EXPECT_FALSE(deferred[0].message) << "the queue took the message";
}

}  // namespace
}  // namespace herald::internal
