#include "broker/broker.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
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
#include "broker/internal/broker_core.h"
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

// The network server closes a session's subscriptions together, sharing
// one grace period: each ends as its own Close() would have ended it.
TEST(BrokerTest, ClosingTogetherEndsEachAsCloseDoes) {
  auto broker = MakeBroker();
  SubscriptionOptions in_group;
  in_group.queue_group = "g";
  auto exact = broker->Subscribe("t.a", {});
  auto wildcard = broker->Subscribe("t.*", {});
  auto member = broker->Subscribe("t.a", in_group);
  auto stays = broker->Subscribe("t.a", in_group);
  ASSERT_THAT(exact, IsOk());
  ASSERT_THAT(wildcard, IsOk());
  ASSERT_THAT(member, IsOk());
  ASSERT_THAT(stays, IsOk());
  ASSERT_THAT(broker->Publish("t.a", "1"),
              IsOkAndHolds(::testing::Field(&PublishResult::matched, 3u)));

  Subscription* const together[] = {&*exact, &*wildcard, &*member};
  internal::CoreOf(*broker).CloseTogether(together);

  EXPECT_FALSE(exact->valid());
  EXPECT_FALSE(wildcard->valid());
  EXPECT_FALSE(member->valid());
  EXPECT_TRUE(stays->valid());
  // A later Close() returns the frozen totals: the one message each held
  // counts as abandoned (the group gave it to one of its two members).
  absl::StatusOr<SubscriptionTotals> t = exact->Close();
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->matched, 1u);
  EXPECT_EQ(t->abandoned, 1u);
  t = wildcard->Close();
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->abandoned, 1u);
  absl::StatusOr<SubscriptionTotals> m = member->Close();
  absl::StatusOr<SubscriptionTotals> s = stays->Totals();
  ASSERT_THAT(m, IsOk());
  ASSERT_THAT(s, IsOk());
  EXPECT_EQ(m->matched + s->matched, 1u);

  // Nothing reaches the closed ones any more; the group's last member
  // takes everything.
  ASSERT_THAT(broker->Publish("t.a", "2"),
              IsOkAndHolds(::testing::Field(&PublishResult::matched, 1u)));
  EXPECT_EQ(stays->Totals()->matched, s->matched + 1);
  const v1::BrokerStats stats = broker->Stats();
  EXPECT_EQ(stats.subscriptions_active(), 1u);
  EXPECT_EQ(stats.subscriptions_closed(), 3u);
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

// Callbacks waiting for room in full kBlock queues do not hold up
// Shutdown(). Ending a callback's subscription waits for the running
// callback, so every subscription is marked ended (which ends such waits)
// before any end waits. Eight forwarders each wait on their own queue, so
// that, in whatever order Shutdown() reaches them, some forwarder comes
// before its queue.
TEST(BrokerTest, ShutdownIsNotHeldUpByCallbacksWaitingForRoom) {
  constexpr int kForwarders = 8;
  BrokerOptions options;
  options.max_block_timeout = absl::Hours(1);
  options.dispatcher_threads = kForwarders;
  auto broker = MakeBroker(options);
  SubscriptionOptions full = Capacity(1, OverflowPolicy::kBlock);
  full.block_timeout = absl::Hours(1);
  absl::Mutex mu;
  std::vector<PublishResult> forwarded;  // Guarded by mu.
  std::vector<Subscription> subs;        // Forwarder i, then its queue, ...
  for (int i = 0; i < kForwarders; ++i) {
    const std::string out = absl::StrCat("out.", i);
    auto forwarder = broker->Subscribe(
        absl::StrCat("in.", i), {}, [&, out](const Delivery& d) {
          auto r = broker->Publish(out, d.payload());
          absl::MutexLock lock(&mu);
          if (r.ok()) forwarded.push_back(*r);
        });
    ASSERT_THAT(forwarder, IsOk());
    subs.push_back(std::move(*forwarder));
    auto queue = broker->Subscribe(out, full);
    ASSERT_THAT(queue, IsOk());
    subs.push_back(std::move(*queue));
    ASSERT_THAT(broker->Publish(out, "fills the queue"), IsOk());
    ASSERT_THAT(broker->Publish(absl::StrCat("in.", i), "forward me"), IsOk());
  }
  // Every forwarder waits: its push into the full queue has matched.
  ASSERT_TRUE(WaitFor([&] {
    for (int i = 0; i < kForwarders; ++i) {
      auto t = subs[2 * i + 1].Totals();
      if (!t.ok() || t->matched != 2) return false;
    }
    return true;
  }));
  absl::Notification shut_down;
  std::thread shutdown([&] {
    broker->Shutdown(absl::ZeroDuration());
    shut_down.Notify();
  });
  const bool prompt =
      shut_down.WaitForNotificationWithTimeout(absl::Seconds(30));
  EXPECT_TRUE(prompt) << "Shutdown() waited for a callback's block_timeout";
  if (!prompt) {
    // Ends the waits, and the test.
    for (int i = 0; i < kForwarders; ++i) subs[2 * i + 1].Close().IgnoreError();
  }
  shutdown.join();
  {
    absl::MutexLock lock(&mu);
    ASSERT_EQ(forwarded.size(), static_cast<size_t>(kForwarders));
    for (const PublishResult& r : forwarded) {
      EXPECT_EQ(r.matched, 1u);
      EXPECT_EQ(r.dropped(DropReason::kShutdown), 1u);
    }
  }
  for (int i = 0; i < kForwarders; ++i) {
    auto totals = subs[2 * i + 1].Close();
    ASSERT_THAT(totals, IsOk());
    EXPECT_EQ(totals->matched, 2u);
    EXPECT_EQ(totals->dropped(DropReason::kShutdown), 2u);
  }
}

// Past its drain, Shutdown() hands a callback nothing more: a callback that
// returns once its subscription is marked ended is not given the messages
// still queued; they are dropped (kShutdown) and counted.
TEST(BrokerTest, ShutdownHandsACallbackNothingMoreOnceItsSubscriptionEnds) {
  BrokerOptions options;
  options.max_block_timeout = absl::Hours(1);
  auto broker = MakeBroker(options);
  SubscriptionOptions queue = Capacity(2, OverflowPolicy::kBlock);
  queue.block_timeout = absl::Hours(1);
  absl::Notification started;
  absl::Notification release;
  std::atomic<int> calls{0};
  auto sub = broker->Subscribe("t", queue, [&](const Delivery&) {
    if (calls.fetch_add(1) == 0) {
      started.Notify();
      release.WaitForNotification();
    }
  });
  ASSERT_THAT(sub, IsOk());
  ASSERT_THAT(broker->Publish("t", "1"), IsOk());
  started.WaitForNotification();
  ASSERT_THAT(broker->Publish("t", "2"), IsOk());
  ASSERT_THAT(broker->Publish("t", "3"), IsOk());
  // A fourth waits for room; Shutdown() marking the subscription ended ends
  // its wait, so its return shows the mark was made.
  absl::StatusOr<PublishResult> fourth;
  std::thread publisher([&] { fourth = broker->Publish("t", "4"); });
  ASSERT_TRUE(WaitFor([&] {
    auto t = sub->Totals();
    return t.ok() && t->matched == 4;
  }));
  std::thread shutdown([&] { broker->Shutdown(absl::ZeroDuration()); });
  publisher.join();
  release.Notify();
  shutdown.join();
  ASSERT_THAT(fourth, IsOk());
  EXPECT_EQ(fourth->dropped(DropReason::kShutdown), 1u);
  EXPECT_EQ(calls.load(), 1);
  auto totals = sub->Close();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->matched, 4u);
  EXPECT_EQ(totals->delivered, 1u);
  EXPECT_EQ(totals->dropped(DropReason::kShutdown), 3u);
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

// ---------------------------------------------------------------- bad input

struct BadOptionCase {
  const char* name;
  BrokerOptions options;
};

std::vector<BadOptionCase> BadBrokerOptions() {
  std::vector<BadOptionCase> cases;
  auto add = [&](const char* name, auto mutate) {
    BrokerOptions o;
    mutate(o);
    cases.push_back({name, o});
  };
  add("shard_count", [](BrokerOptions& o) { o.shard_count = 0; });
  add("shard_count", [](BrokerOptions& o) { o.shard_count = 5000; });
  add("dispatcher_threads", [](BrokerOptions& o) { o.dispatcher_threads = 0; });
  add("max_queue_capacity", [](BrokerOptions& o) { o.max_queue_capacity = 0; });
  add("default_queue_capacity",
      [](BrokerOptions& o) { o.default_queue_capacity = 0; });
  add("default_queue_capacity", [](BrokerOptions& o) {
    o.max_queue_capacity = 8;
    o.default_queue_capacity = 9;
  });
  add("max_message_bytes", [](BrokerOptions& o) { o.max_message_bytes = 0; });
  add("max_topics", [](BrokerOptions& o) { o.max_topics = 0; });
  add("max_block_timeout",
      [](BrokerOptions& o) { o.max_block_timeout = absl::ZeroDuration(); });
  return cases;
}

TEST(BrokerOptionsTest, OutOfRangeOptionsAreRefusedByName) {
  for (const BadOptionCase& c : BadBrokerOptions()) {
    EXPECT_THAT(Broker::Create(c.options),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.name)))
        << c.name;
  }
  EXPECT_THAT(Broker::Create(BrokerOptions{}), IsOk());
}

TEST(BrokerTest, BadPublishesAreRefusedCountedAndDisturbNothing) {
  BrokerOptions options;
  options.max_message_bytes = 64;
  auto broker = MakeBroker(options);
  auto sub = broker->Subscribe(">");
  ASSERT_THAT(sub, IsOk());
  const std::string topic = "t";
  // topic + payload == max is fine; one byte more is not.
  EXPECT_THAT(broker->Publish(topic, std::string(63, 'x')), IsOk());
  EXPECT_THAT(broker->Publish(topic, std::string(64, 'x')),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("over max_message_bytes")));
  EXPECT_THAT(broker->Publish(topic, "x", {{"k", std::string(62, 'v')}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(broker->Publish("a..b", "x"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(broker->Publish("a.*", "x"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(broker->Publish("", "x"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      broker->Publish(topic, "x", {{"herald-type", "x"}}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reserved")));
  EXPECT_THAT(broker->Publish(topic, "x", {{"", "x"}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("empty header key")));
  const v1::BrokerStats stats = broker->Stats();
  EXPECT_EQ(stats.refused_too_large(), 2u);
  EXPECT_EQ(stats.refused_invalid(), 5u);
  EXPECT_EQ(stats.published(), 1u);
  // The subscriber saw exactly the one good message.
  auto d = sub->TryReceive();
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->payload().size(), 63u);
  EXPECT_THAT(sub->TryReceive(), StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST(BrokerTest, BadSubscribesAreRefusedWithInvalidArgument) {
  BrokerOptions options;
  options.max_queue_capacity = 100;
  options.default_queue_capacity = 10;
  auto broker = MakeBroker(options);
  auto with = [](auto mutate) {
    SubscriptionOptions o;
    mutate(o);
    return o;
  };
  struct Case {
    const char* pattern;
    SubscriptionOptions options;
    const char* error;
  };
  const Case cases[] = {
      {"a..b", {}, "empty token"},
      {"a.>.b", {}, "not the last token"},
      {"foo*", {}, "mixes a wildcard"},
      {"t", with([](auto& o) { o.queue_capacity = 0; }), "queue_capacity 0"},
      {"t", with([](auto& o) { o.queue_capacity = 101; }),
       "queue_capacity 101"},
      {"t", with([](auto& o) { o.block_timeout = absl::ZeroDuration(); }),
       "block_timeout"},
      {"t", with([](auto& o) { o.block_timeout = absl::Minutes(1); }),
       "block_timeout"},
      {"t", with([](auto& o) { o.callback_batch_limit = 0; }),
       "callback_batch_limit"},
      {"t", with([](auto& o) { o.queue_group = "a b"; }), "queue group"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(
        broker->Subscribe(c.pattern, c.options),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.error)))
        << c.pattern << " " << c.error;
  }
  EXPECT_THAT(broker->Subscribe("t", {}, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("callback is empty")));
  EXPECT_EQ(broker->Stats().subscribe_refused(), std::size(cases));
  EXPECT_EQ(broker->Stats().subscriptions_active(), 0u);
}

// ------------------------------------------------------- topics and handles

TEST(BrokerTest, TopicHandlePublishesLikeTheName) {
  auto broker = MakeBroker();
  auto sub = broker->Subscribe("orders.*");
  ASSERT_THAT(sub, IsOk());
  auto handle = broker->Topic("orders.eu");
  ASSERT_THAT(handle, IsOk());
  EXPECT_EQ(handle->name(), "orders.eu");
  auto r = handle->Publish("via handle", {{"k", "v"}});
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->matched, 1u);
  auto d = sub->TryReceive();
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->topic(), "orders.eu");
  EXPECT_EQ(d->payload(), "via handle");
  // A subscription made after the handle also receives through it.
  auto late = broker->Subscribe("orders.eu");
  ASSERT_THAT(late, IsOk());
  r = handle->Publish("second");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->matched, 2u);

  TopicHandle moved = std::move(*handle);
  EXPECT_THAT(handle->Publish("x"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(broker->Topic("orders.*"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  broker->Shutdown(absl::ZeroDuration());
  EXPECT_THAT(moved.Publish("x"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(broker->Topic("orders.us"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(BrokerTest, IdleTopicEntriesAreEvicted) {
  auto broker = MakeBroker();
  {
    auto exact = broker->Subscribe("a.b");
    ASSERT_THAT(exact, IsOk());
    EXPECT_EQ(broker->Stats().topics(), 1u);
  }
  EXPECT_EQ(broker->Stats().topics(), 0u);
  {
    auto wildcard = broker->Subscribe("a.>");
    ASSERT_THAT(wildcard, IsOk());
    ASSERT_THAT(broker->Publish("a.x", "1"), IsOk());  // Caches the match.
    ASSERT_THAT(broker->Publish("a.y", "2"), IsOk());
    ASSERT_THAT(broker->Publish("b.y", "3"), IsOk());  // Matches nothing.
    EXPECT_EQ(broker->Stats().topics(), 2u);
  }
  EXPECT_EQ(broker->Stats().topics(), 0u);
  {
    auto handle = broker->Topic("c");
    ASSERT_THAT(handle, IsOk());
    EXPECT_EQ(broker->Stats().topics(), 1u);
  }
  EXPECT_EQ(broker->Stats().topics(), 0u);
}

TEST(BrokerTest, PublishCountsSurviveTheEvictionOfTheirTopicEntry) {
  auto broker = MakeBroker();
  {
    auto sub = broker->Subscribe("kept.count");
    ASSERT_THAT(sub, IsOk());
    for (int i = 0; i < 5; ++i) {
      ASSERT_THAT(broker->Publish("kept.count", "x"), IsOk());
    }
    auto handle = broker->Topic("idle.handle");
    ASSERT_THAT(handle, IsOk());
    ASSERT_THAT(handle->Publish("nobody"), IsOk());  // Unmatched, via entry.
    const v1::BrokerStats stats = broker->Stats();
    EXPECT_EQ(stats.published(), 6u);
    EXPECT_EQ(stats.published_unmatched(), 1u);
    ASSERT_EQ(stats.topic_entries_size(), 2);
    EXPECT_EQ(stats.topic_entries(0).name(), "idle.handle");
    EXPECT_EQ(stats.topic_entries(0).published(), 1u);
    EXPECT_EQ(stats.topic_entries(1).name(), "kept.count");
    EXPECT_EQ(stats.topic_entries(1).published(), 5u);
  }
  // Both entries are evicted; their counts stay in the broker's totals.
  ASSERT_THAT(broker->Publish("no.entry", "x"), IsOk());
  const v1::BrokerStats stats = broker->Stats();
  EXPECT_EQ(stats.topics(), 0u);
  EXPECT_EQ(stats.published(), 7u);
  EXPECT_EQ(stats.published_unmatched(), 2u);
}

TEST(BrokerTest, ThousandsOfTopicsAreEachFoundAgain) {
  constexpr int kTopics = 3000;
  auto broker = MakeBroker();
  std::vector<Subscription> subs;
  for (int i = 0; i < kTopics; ++i) {
    auto sub = broker->Subscribe(absl::StrCat("many.t", i));
    ASSERT_THAT(sub, IsOk());
    subs.push_back(std::move(*sub));
  }
  for (int i = 0; i < kTopics; i += 7) {
    auto r = broker->Publish(absl::StrCat("many.t", i), "x");
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->matched, 1u) << i;
    auto d = subs[i].TryReceive();
    ASSERT_THAT(d, IsOk()) << i;
    EXPECT_EQ(d->topic(), absl::StrCat("many.t", i));
  }
  // Closing every other one leaves the rest reachable.
  for (int i = 0; i < kTopics; i += 2) ASSERT_THAT(subs[i].Close(), IsOk());
  EXPECT_EQ(broker->Stats().topics(), static_cast<uint64_t>(kTopics / 2));
  for (int i = 0; i < kTopics; i += 5) {
    auto r = broker->Publish(absl::StrCat("many.t", i), "x");
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->matched, i % 2 == 0 ? 0u : 1u) << i;
  }
}

TEST(BrokerTest, MaxTopicsBoundsEntriesButNotPublishing) {
  BrokerOptions options;
  options.max_topics = 2;
  auto broker = MakeBroker(options);
  auto a = broker->Subscribe("a");
  auto b = broker->Subscribe("b");
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_THAT(
      broker->Subscribe("c"),
      StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("max_topics")));
  EXPECT_THAT(broker->Topic("d"),
              StatusIs(absl::StatusCode::kResourceExhausted));
  // A wildcard needs no entry of its own; its matches are computed uncached.
  auto all = broker->Subscribe(">");
  ASSERT_THAT(all, IsOk());
  auto r = broker->Publish("e", "x");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->matched, 1u);
  EXPECT_EQ(broker->Stats().topics(), 2u);
}

// ------------------------------------------------- semantics under threads

TEST(BrokerTest, SubscribeIsLiveWhenItReturns) {
  auto broker = MakeBroker();
  std::atomic<bool> stop{false};
  std::thread publisher([&] {
    while (!stop.load()) broker->Publish("noise", "x").IgnoreError();
  });
  for (int i = 0; i < 50; ++i) {
    auto sub = broker->Subscribe(absl::StrCat("live.", i));
    ASSERT_THAT(sub, IsOk());
    auto r = broker->Publish(absl::StrCat("live.", i), "x");
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->matched, 1u);
  }
  stop.store(true);
  publisher.join();
}

TEST(BrokerTest, OnePublisherThreadIsSeenInOrderAcrossTopics) {
  constexpr int kMessages = 300;
  auto broker = MakeBroker();
  auto sub = broker->Subscribe(">", Capacity(kMessages));
  ASSERT_THAT(sub, IsOk());
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_THAT(broker->Publish(absl::StrCat("topic.", i % 7), absl::StrCat(i)),
                IsOk());
  }
  for (int i = 0; i < kMessages; ++i) {
    auto d = sub->TryReceive();
    ASSERT_THAT(d, IsOk());
    EXPECT_EQ(d->payload(), absl::StrCat(i));
  }
}

TEST(BrokerTest, ClosingWhilePublishersPublishKeepsTotalsExact) {
  constexpr int kPublishers = 4;
  auto broker = MakeBroker();
  SubscriptionOptions o = Capacity(64);
  auto sub = broker->Subscribe("hot", o);
  ASSERT_THAT(sub, IsOk());
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> matched{0};
  std::atomic<uint64_t> publishes{0};
  std::vector<std::thread> publishers;
  for (int p = 0; p < kPublishers; ++p) {
    publishers.emplace_back([&] {
      while (!stop.load()) {
        auto r = broker->Publish("hot", "x");
        if (r.ok()) matched.fetch_add(r->matched);
        publishes.fetch_add(1);
      }
    });
  }
  ASSERT_TRUE(WaitFor([&] { return publishes.load() > 1000; }));
  for (int i = 0; i < 10; ++i) ASSERT_THAT(sub->TryReceive(), IsOk());
  auto t = sub->Close();
  stop.store(true);
  for (auto& p : publishers) p.join();
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->matched, matched.load());
  EXPECT_EQ(t->matched, t->delivered + t->dropped() + t->abandoned);
  EXPECT_EQ(t->delivered, 10u);
}

TEST(BrokerTest, QueueGroupDeliversEachMessageToExactlyOneMember) {
  constexpr int kMembers = 3;
  constexpr int kPublishers = 3;
  constexpr int kPerPublisher = 3000;
  auto broker = MakeBroker();
  SubscriptionOptions o = Capacity(8);
  o.queue_group = "workers";
  std::vector<Subscription> members;
  for (int i = 0; i < kMembers; ++i) {
    auto m = broker->Subscribe("jobs.*", o);
    ASSERT_THAT(m, IsOk());
    members.push_back(std::move(*m));
  }
  // Another group and a plain subscription on the same subject each get
  // their own copy.
  auto plain =
      broker->Subscribe("jobs.*", Capacity(kPublishers * kPerPublisher));
  ASSERT_THAT(plain, IsOk());

  absl::Mutex mu;
  std::vector<std::string> received;  // Guarded by mu.
  std::vector<uint64_t> received_by(kMembers, 0);
  std::vector<std::jthread> consumers;
  for (int i = 0; i < kMembers; ++i) {
    consumers.emplace_back([&, i](std::stop_token stop) {
      while (true) {
        auto batch = members[i].ReceiveBatch(16, absl::InfiniteFuture(), stop);
        if (!batch.ok()) return;
        absl::MutexLock lock(&mu);
        for (const Delivery& d : *batch) received.emplace_back(d.payload());
        received_by[i] += batch->size();
      }
    });
  }
  std::atomic<uint64_t> group_drops{0};
  std::vector<std::thread> publishers;
  for (int p = 0; p < kPublishers; ++p) {
    publishers.emplace_back([&, p] {
      for (int i = 0; i < kPerPublisher; ++i) {
        auto r =
            broker->Publish(absl::StrCat("jobs.", p), absl::StrCat(p, ":", i));
        if (r.ok()) group_drops.fetch_add(r->dropped(DropReason::kGroupFull));
      }
    });
  }
  for (auto& t : publishers) t.join();
  ASSERT_TRUE(WaitFor([&] {
    for (auto& m : members) {
      if (m.Totals()->queued != 0) return false;
    }
    return true;
  }));
  const v1::BrokerStats stats = broker->Stats();
  for (auto& c : consumers) c.request_stop();
  for (auto& c : consumers) c.join();

  ASSERT_EQ(stats.groups_size(), 1);
  const v1::GroupStats& group = stats.groups(0);
  EXPECT_EQ(group.matched(),
            static_cast<uint64_t>(kPublishers * kPerPublisher));
  EXPECT_EQ(group.dropped().group_full(), group_drops.load());
  uint64_t members_matched = 0;
  uint64_t members_delivered = 0;
  for (int i = 0; i < kMembers; ++i) {
    auto t = members[i].Close();
    ASSERT_THAT(t, IsOk());
    EXPECT_EQ(t->matched, t->delivered + t->dropped() + t->abandoned);
    EXPECT_EQ(t->delivered, received_by[i]);
    members_matched += t->matched;
    members_delivered += t->delivered;
  }
  EXPECT_EQ(members_matched + group.dropped().group_full(), group.matched());
  absl::MutexLock lock(&mu);
  EXPECT_EQ(received.size(), members_delivered);
  std::sort(received.begin(), received.end());
  EXPECT_EQ(std::adjacent_find(received.begin(), received.end()),
            received.end())
      << "a message was delivered to two members";
  auto plain_totals = plain->Totals();
  ASSERT_THAT(plain_totals, IsOk());
  EXPECT_EQ(plain_totals->matched,
            static_cast<uint64_t>(kPublishers * kPerPublisher));
}

// --------------------------------------------------------------- lifetimes

int ThreadCount() {
  int n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/task", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

TEST(BrokerTest, ShutdownJoinsEveryThreadItStarted) {
  const int before = ThreadCount();
  BrokerOptions options;
  options.dispatcher_threads = 4;
  auto broker = MakeBroker(options);
  EXPECT_EQ(ThreadCount(), before + 4);
  auto sub = broker->Subscribe("t", {}, [](const Delivery&) {});
  ASSERT_THAT(sub, IsOk());
  ASSERT_THAT(broker->Publish("t", "x"), IsOk());
  const v1::BrokerStats first = broker->Shutdown(absl::Seconds(5));
  EXPECT_TRUE(
      herald::testing::WaitForValue([] { return ThreadCount(); }, before));
  // A second shutdown returns the same final stats.
  const v1::BrokerStats second = broker->Shutdown(absl::Seconds(5));
  EXPECT_EQ(first.SerializeAsString(), second.SerializeAsString());
  broker.reset();
  EXPECT_TRUE(
      herald::testing::WaitForValue([] { return ThreadCount(); }, before));
}

TEST(BrokerTest, DestroyingTheBrokerShutsItDown) {
  const int before = ThreadCount();
  std::optional<Subscription> sub;
  {
    auto broker = MakeBroker();
    auto s = broker->Subscribe("t");
    ASSERT_THAT(s, IsOk());
    sub.emplace(std::move(*s));
  }
  EXPECT_TRUE(
      herald::testing::WaitForValue([] { return ThreadCount(); }, before));
  EXPECT_THAT(sub->Receive(absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kOutOfRange));
}

}  // namespace
}  // namespace herald
