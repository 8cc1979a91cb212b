// herald::Client with one test body for both implementations: every TEST_P
// runs against an in-process client ("inproc:") and a remote one over TCP to
// a net::Server on the same broker.
#include "sdk/client.h"

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/broker.h"
#include "broker/net/server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "schemas/protocol.pb.h"
#include "schemas/stats.pb.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/wait_for.h"

namespace herald {
namespace {

using ::herald::testing::IsOk;
using ::herald::testing::StatusIs;
using ::herald::testing::WaitFor;
using ::testing::HasSubstr;

constexpr size_t kMaxMessageBytes = 1024;
constexpr absl::Duration kWait = absl::Seconds(30);

enum class Transport { kInProcess, kTcp };

std::string TransportName(const ::testing::TestParamInfo<Transport>& info) {
  return info.param == Transport::kInProcess ? "InProcess" : "Tcp";
}

// The broker's stats of the one open subscription whose pattern is
// `pattern` (the server's remote subscriptions included).
const v1::SubscriptionStats* FindSubscription(const v1::BrokerStats& stats,
                                              absl::string_view pattern) {
  for (const v1::SubscriptionStats& s : stats.subscriptions()) {
    if (s.pattern() == pattern) return &s;
  }
  return nullptr;
}

SubscriptionOptions Capacity(size_t capacity) {
  SubscriptionOptions options;
  options.queue_capacity = capacity;
  return options;
}

uint64_t DroppedTotal(const v1::DropCounts& d) {
  return d.queue_full() + d.evicted_oldest() + d.block_timeout() + d.closed() +
         d.shutdown() + d.group_full();
}

class ClientTest : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override {
    BrokerOptions broker_options;
    broker_options.max_message_bytes = kMaxMessageBytes;
    auto broker = Broker::Create(broker_options);
    ASSERT_THAT(broker, IsOk());
    broker_ = *std::move(broker);
    if (remote()) {
      net::ServerOptions options;
      options.sdk_endpoint = "tcp://127.0.0.1:*";
      options.publish_endpoint = "";
      options.subscribe_endpoint = "";
      auto server = net::Server::Start(broker_.get(), options);
      ASSERT_THAT(server, IsOk());
      server_ = *std::move(server);
    }
    client_ = Connect();
    ASSERT_NE(client_, nullptr);
  }

  void TearDown() override {
    client_.reset();
    server_.reset();
    broker_.reset();
  }

  bool remote() const { return GetParam() == Transport::kTcp; }

  std::unique_ptr<Client> Connect(ClientOptions options = {}) {
    absl::StatusOr<std::unique_ptr<Client>> client =
        remote() ? Client::Connect(server_->sdk_endpoint(), options)
                 : Client::Connect("inproc:", options, broker_.get());
    EXPECT_THAT(client, IsOk());
    return client.ok() ? *std::move(client) : nullptr;
  }

  Publisher MakePublisher() {
    absl::StatusOr<Publisher> p = client_->CreatePublisher({});
    EXPECT_THAT(p, IsOk());
    return p.ok() ? *std::move(p) : Publisher();
  }

  Subscriber MakeSubscriber(absl::string_view pattern,
                            SubscriptionOptions options = {}) {
    absl::StatusOr<Subscriber> s = client_->Subscribe(pattern, options);
    EXPECT_THAT(s, IsOk());
    return s.ok() ? *std::move(s) : Subscriber();
  }

  absl::Status Flush() { return client_->Flush(absl::Now() + kWait); }

  std::unique_ptr<Broker> broker_;
  std::unique_ptr<net::Server> server_;
  std::unique_ptr<Client> client_;
};

TEST_P(ClientTest, PublishReachesExactAndWildcardSubscribers) {
  Subscriber exact = MakeSubscriber("orders.eu.created");
  Subscriber star = MakeSubscriber("orders.*.created");
  Subscriber tail = MakeSubscriber("orders.>");
  Subscriber other = MakeSubscriber("payments.>");
  Publisher publisher = MakePublisher();

  const absl::Time before = absl::Now();
  ASSERT_THAT(publisher.Publish("orders.eu.created", "order-1",
                                {{"content-type", "text/plain"}}),
              IsOk());
  ASSERT_THAT(Flush(), IsOk());

  for (Subscriber* s : {&exact, &star, &tail}) {
    absl::StatusOr<Received> r = s->Receive(kWait);
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->topic(), "orders.eu.created");
    EXPECT_EQ(r->payload(), "order-1");
    ASSERT_EQ(r->headers().size(), 1u);
    EXPECT_EQ(r->headers()[0].key, "content-type");
    EXPECT_EQ(r->headers()[0].value, "text/plain");
    absl::string_view value;
    EXPECT_TRUE(r->headers().Find("content-type", &value));
    EXPECT_EQ(value, "text/plain");
    EXPECT_EQ(r->sequence(), 1u);
    EXPECT_EQ(r->missed(), 0u);
    EXPECT_FALSE(r->gap());
    // Stamped when it entered the broker: after the call began, before it
    // was received.
    EXPECT_GE(r->publish_time(),
              absl::FromUnixNanos(absl::ToUnixNanos(before)));
    EXPECT_LE(r->publish_time(), absl::Now());
  }
  // Flush() returned: the broker processed the publish, so nothing more is
  // on its way to `other`.
  EXPECT_THAT(other.TryReceive(),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST_P(ClientTest, SubscribeIsLiveWhenItReturns) {
  Subscriber sub = MakeSubscriber("live.t");
  // Straight into the broker, not through the client: no ordering help.
  ASSERT_THAT(broker_->Publish("live.t", "x"), IsOk());
  absl::StatusOr<Received> r = sub.Receive(kWait);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->payload(), "x");
}

TEST_P(ClientTest, TheSubscriptionNameReachesTheBrokersStats) {
  SubscriptionOptions options;
  options.name = "audit-trail";
  Subscriber named = MakeSubscriber("named.t", options);
  Subscriber unnamed = MakeSubscriber("unnamed.t");

  const v1::BrokerStats stats = broker_->Stats();
  ASSERT_EQ(stats.subscriptions_size(), 2);
  absl::flat_hash_map<std::string, std::string> name_of;
  for (const v1::SubscriptionStats& s : stats.subscriptions()) {
    name_of[s.pattern()] = s.name();
  }
  EXPECT_EQ(name_of["named.t"], "audit-trail");
  // Remote, an unnamed subscription is named after the client and its sid.
  EXPECT_EQ(name_of["unnamed.t"],
            remote() ? absl::StrCat("remote sid ", unnamed.id()) : "");
}

TEST_P(ClientTest, MessagesArriveInPublishOrder) {
  constexpr int kMessages = 500;
  Subscriber sub = MakeSubscriber("seq", Capacity(kMessages));
  Publisher publisher = MakePublisher();
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_THAT(publisher.Publish("seq", std::to_string(i)), IsOk());
  }
  for (int i = 0; i < kMessages; ++i) {
    absl::StatusOr<Received> r = sub.Receive(kWait);
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->payload(), std::to_string(i));
    EXPECT_EQ(r->sequence(), static_cast<uint64_t>(i + 1));
    EXPECT_EQ(r->missed(), 0u);
  }
}

TEST_P(ClientTest, FlushMakesEveryPublishCountedByTheBroker) {
  constexpr uint64_t kMessages = 100;
  Publisher publisher = MakePublisher();
  for (uint64_t i = 0; i < kMessages; ++i) {
    ASSERT_THAT(publisher.Publish("flush.t", "x"), IsOk());
  }
  ASSERT_THAT(Flush(), IsOk());

  EXPECT_EQ(broker_->Stats().published(), kMessages);
  absl::StatusOr<v1::BrokerStats> via_client =
      client_->BrokerStats(absl::Now() + kWait);
  ASSERT_THAT(via_client, IsOk());
  EXPECT_EQ(via_client->published(), kMessages);
  // Remote, the reply also carries the server's counters.
  absl::StatusOr<v1::StatsReply> both =
      client_->BrokerAndServerStats(absl::Now() + kWait);
  ASSERT_THAT(both, IsOk());
  EXPECT_EQ(both->broker().published(), kMessages);
  EXPECT_EQ(both->has_server(), remote());
  if (remote()) {
    EXPECT_EQ(both->server().sessions_active(), 1u);
    EXPECT_EQ(both->server().publish_accepted(), kMessages);
  }

  const ClientStats stats = client_->Stats();
  EXPECT_EQ(stats.published, kMessages);
  EXPECT_EQ(stats.publish_acked, kMessages);
  EXPECT_EQ(stats.publish_buffered, 0u);
  EXPECT_EQ(stats.publish_in_flight, 0u);
  EXPECT_EQ(stats.publish_dropped(), 0u);
  EXPECT_TRUE(stats.connected);
  if (remote()) {
    // Adaptive batching: at least one batch, at most one per message, all
    // acknowledged.
    EXPECT_GE(stats.batches_sent, 1u);
    EXPECT_LE(stats.batches_sent, kMessages);
    EXPECT_EQ(stats.batches_acked, stats.batches_sent);
    EXPECT_EQ(stats.batches_lost, 0u);
    EXPECT_EQ(stats.sessions, 1u);
    EXPECT_EQ(stats.broker_epoch, server_->epoch());
  }
}

TEST_P(ClientTest, PublishRefusesBadInputWithInvalidArgument) {
  Publisher publisher = MakePublisher();
  struct Case {
    std::string topic;
    std::string payload;
    Headers headers;
  };
  const std::vector<Case> cases = {
      {"", "x", {}},
      {"a..b", "x", {}},
      {"orders.*", "x", {}},
      {"orders.>", "x", {}},
      {"t", std::string(kMaxMessageBytes, 'x'), {}},
      {"t", "x", {{"", "empty key"}}},
      {"t", "x", {{"herald-type", "spoofed"}}},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(publisher.Publish(c.topic, c.payload, c.headers),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << "topic \"" << c.topic << "\"";
  }
  ASSERT_THAT(Flush(), IsOk());
  const ClientStats stats = client_->Stats();
  EXPECT_EQ(stats.refused(PublishRefusal::kInvalid), cases.size());
  EXPECT_EQ(stats.published, 0u);
  EXPECT_EQ(broker_->Stats().published(), 0u);
}

TEST_P(ClientTest, SubscribeRefusesBadPatternsAndOptions) {
  for (absl::string_view pattern : {"", "a..b", "foo*bar", "a.>.b"}) {
    EXPECT_THAT(client_->Subscribe(pattern, {}),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << "pattern \"" << pattern << "\"";
  }
  EXPECT_THAT(client_->Subscribe("t", Capacity(0)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client_->Subscribe("t", Capacity(size_t{1} << 40)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client_->Subscribe("t", {}, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(client_->Stats().subscriptions_active, 0u);
}

TEST_P(ClientTest, ReceiveTimesOutAndPollsWithANonPositiveTimeout) {
  Subscriber sub = MakeSubscriber("quiet");
  // The timeout is waited out in full: it starts when the call finds
  // nothing buffered.
  const absl::Time start = absl::Now();
  EXPECT_THAT(sub.Receive(absl::Milliseconds(20)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));
  EXPECT_THAT(sub.Receive(absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(sub.Receive(absl::InfinitePast()),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST_P(ClientTest, ReceiveReturnsCancelledWhenTheStopTokenIsRequested) {
  Subscriber sub = MakeSubscriber("quiet");
  std::stop_source already;
  already.request_stop();
  EXPECT_THAT(sub.Receive(kWait, already.get_token()),
              StatusIs(absl::StatusCode::kCancelled));

  // Stopped from another thread while (or before) it waits.
  std::stop_source source;
  absl::StatusOr<Received> result;
  std::thread receiver([&] {
    result = sub.Receive(absl::InfiniteFuture(), source.get_token());
  });
  source.request_stop();
  receiver.join();
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kCancelled));
}

TEST_P(ClientTest, ABufferedMessageIsReturnedEvenWhenStopWasRequested) {
  Subscriber sub = MakeSubscriber("t");
  ASSERT_THAT(broker_->Publish("t", "x"), IsOk());
  ASSERT_TRUE(WaitFor([&] {
    // In-process the broker's queue holds it; remote, the client's buffer.
    return !remote() || client_->Stats().receive_buffered == 1;
  }));
  std::stop_source stopped;
  stopped.request_stop();
  absl::StatusOr<Received> r =
      sub.Receive(absl::InfinitePast(), stopped.get_token());
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->payload(), "x");
}

TEST_P(ClientTest, CallbackSubscriptionSeesEveryMessageInOrder) {
  constexpr int kMessages = 200;
  absl::Mutex mu;
  std::vector<std::string> seen;
  absl::StatusOr<Subscriber> sub =
      client_->Subscribe("cb.>", {}, [&](const Received& r) {
        absl::MutexLock lock(&mu);
        seen.emplace_back(r.payload());
      });
  ASSERT_THAT(sub, IsOk());
  EXPECT_THAT(sub->Receive(absl::Milliseconds(1)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  Publisher publisher = MakePublisher();
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_THAT(publisher.Publish("cb.x", std::to_string(i)), IsOk());
  }
  {
    absl::MutexLock lock(&mu);
    auto all = [&] { return seen.size() == kMessages; };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all), kWait));
    for (int i = 0; i < kMessages; ++i) {
      EXPECT_EQ(seen[i], std::to_string(i));
    }
  }
  ASSERT_THAT(sub->Close(), IsOk());
  EXPECT_EQ(client_->Stats().delivered, static_cast<uint64_t>(kMessages));
}

TEST_P(ClientTest, CreditFlowsBackAsTheApplicationConsumes) {
  // Remote, a window of 4 messages: if credit were not returned, the fifth
  // message would never leave the broker's queue.
  constexpr uint64_t kMessages = 100;
  Subscriber sub = MakeSubscriber("credit", Capacity(4));
  Publisher publisher = MakePublisher();
  for (uint64_t i = 0; i < kMessages; ++i) {
    ASSERT_THAT(publisher.Publish("credit", std::to_string(i)), IsOk());
    absl::StatusOr<Received> r = sub.Receive(kWait);
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->payload(), std::to_string(i));
    EXPECT_EQ(r->missed(), 0u);
  }
  EXPECT_EQ(client_->Stats().delivered, kMessages);
  if (remote()) {
    // Returned every half window (2 messages), by the I/O thread.
    EXPECT_TRUE(
        WaitFor([&] { return client_->Stats().credit_returned == kMessages; }));
  }
}

TEST_P(ClientTest, CloseWakesABlockedReceiver) {
  Subscriber sub = MakeSubscriber("quiet");
  absl::StatusOr<Received> result;
  std::thread receiver([&] { result = sub.Receive(absl::Now() + kWait); });
  // Whether Close() comes before or during the wait, the receiver returns.
  absl::StatusOr<SubscriptionTotals> totals = sub.Close();
  receiver.join();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->matched, 0u);
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_P(ClientTest, ACallbackMayDestroyItsOwnSubscriber) {
  absl::Mutex mu;
  std::optional<Subscriber> holder;
  bool destroyed = false;
  absl::StatusOr<Subscriber> sub =
      client_->Subscribe("self", {}, [&](const Received&) {
        std::optional<Subscriber> own;
        {
          absl::MutexLock lock(&mu);
          if (!holder.has_value()) return;  // Destroyed already.
          own = std::move(holder);
          holder.reset();
        }
        own.reset();  // Closes the subscription from inside its callback.
        absl::MutexLock lock(&mu);
        destroyed = true;
      });
  ASSERT_THAT(sub, IsOk());
  {
    absl::MutexLock lock(&mu);
    holder = *std::move(sub);
  }
  ASSERT_THAT(broker_->Publish("self", "x"), IsOk());
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(&destroyed), kWait));
}

TEST_P(ClientTest, ClosingFromTheCallbackAndAnotherThreadAtOnceDoesNotHang) {
  absl::Notification in_callback;
  absl::Notification handle_ready;
  absl::Notification callback_done;
  Subscriber* handle = nullptr;
  absl::StatusOr<SubscriptionTotals> from_callback;
  absl::StatusOr<Subscriber> sub =
      client_->Subscribe("both", {}, [&](const Received&) {
        if (in_callback.HasBeenNotified()) return;
        handle_ready.WaitForNotification();
        in_callback.Notify();
        // Whichever close starts first, neither waits for the other here.
        from_callback = handle->Close();
        callback_done.Notify();
      });
  ASSERT_THAT(sub, IsOk());
  handle = &*sub;
  handle_ready.Notify();
  ASSERT_THAT(broker_->Publish("both", "x"), IsOk());
  ASSERT_TRUE(in_callback.WaitForNotificationWithTimeout(kWait));
  absl::StatusOr<SubscriptionTotals> from_test = sub->Close();
  ASSERT_THAT(from_test, IsOk());
  EXPECT_EQ(from_test->matched, 1u);
  ASSERT_TRUE(callback_done.WaitForNotificationWithTimeout(kWait));
  if (!from_callback.ok()) {
    EXPECT_THAT(from_callback, StatusIs(absl::StatusCode::kFailedPrecondition));
  }
}

TEST_P(ClientTest, ClosingTheClientFromACallbackWhileAnotherCloseRuns) {
  // The first Close() waits for running callbacks; a Close() from inside
  // one must not wait for the first in turn.
  Publisher publisher = MakePublisher();
  absl::Notification in_callback;
  absl::Notification callback_done;
  absl::Status from_callback;
  absl::StatusOr<Subscriber> sub =
      client_->Subscribe("closing", {}, [&](const Received&) {
        if (in_callback.HasBeenNotified()) return;
        in_callback.Notify();
        // Publishes are refused once the other Close() began.
        EXPECT_TRUE(WaitFor([&] {
          return publisher.Publish("closing.probe", "x").code() ==
                 absl::StatusCode::kFailedPrecondition;
        }));
        from_callback = client_->Close(absl::Now() + kWait);
        callback_done.Notify();
      });
  ASSERT_THAT(sub, IsOk());
  ASSERT_THAT(publisher.Publish("closing", "x"), IsOk());
  ASSERT_TRUE(in_callback.WaitForNotificationWithTimeout(kWait));
  absl::Status from_test;
  absl::Notification test_done;
  std::thread closer([&] {
    from_test = client_->Close(absl::Now() + kWait);
    test_done.Notify();
  });
  const bool both_returned =
      callback_done.WaitForNotificationWithTimeout(kWait) &&
      test_done.WaitForNotificationWithTimeout(kWait);
  // A hang would leave `closer` running: end the test binary rather than
  // hang it.
  if (!both_returned) {
    ADD_FAILURE() << "Close() hung";
    std::abort();
  }
  closer.join();
  EXPECT_THAT(from_test, IsOk());
  EXPECT_THAT(from_callback, IsOk());
  EXPECT_THAT(sub->Receive(absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_P(ClientTest, TypedProtoRoundTripChecksTheTypeName) {
  Subscriber sub = MakeSubscriber("typed.>");
  Publisher publisher = MakePublisher();
  v1::Header sent;
  sent.set_key("answer");
  sent.set_value("42");
  ASSERT_THAT(publisher.PublishProto("typed.header", sent, {{"k", "v"}}),
              IsOk());

  absl::StatusOr<ProtoReceived<v1::Header>> got =
      sub.ReceiveProto<v1::Header>(kWait);
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->message.key(), "answer");
  EXPECT_EQ(got->message.value(), "42");
  EXPECT_EQ(got->received.proto_type(), "herald.v1.Header");
  absl::string_view value;
  EXPECT_TRUE(got->received.headers().Find("k", &value));
  EXPECT_EQ(value, "v");

  // Another type than the one asked for.
  v1::DropCounts counts;
  counts.set_queue_full(3);
  ASSERT_THAT(publisher.PublishProto("typed.counts", counts), IsOk());
  EXPECT_THAT(sub.ReceiveProto<v1::Header>(kWait),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("herald.v1.DropCounts")));
  // No type at all.
  ASSERT_THAT(publisher.Publish("typed.raw", "not a proto"), IsOk());
  EXPECT_THAT(sub.ReceiveProto<v1::Header>(kWait),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("no herald-type header")));
  // ParseProto() on a plain Received.
  ASSERT_THAT(publisher.PublishProto("typed.counts", counts), IsOk());
  absl::StatusOr<Received> raw = sub.Receive(kWait);
  ASSERT_THAT(raw, IsOk());
  v1::DropCounts decoded;
  ASSERT_THAT(raw->ParseProto(&decoded), IsOk());
  EXPECT_EQ(decoded.queue_full(), 3u);

  EXPECT_EQ(client_->Stats().decode_errors, 2u);
}

TEST_P(ClientTest, SlowSubscriberDropsAreCountedExactly) {
  constexpr uint64_t kCapacity = 8;
  constexpr uint64_t kMessages = 100;
  Subscriber sub = MakeSubscriber("slow", Capacity(kCapacity));
  Publisher publisher = MakePublisher();
  for (uint64_t i = 0; i < kMessages; ++i) {
    ASSERT_THAT(publisher.Publish("slow", std::to_string(i)), IsOk());
  }
  ASSERT_THAT(Flush(), IsOk());
  // Remote, the client took its credit window (min(capacity, max_credit))
  // of messages; the rest waited in the broker's queue or were dropped.
  const uint64_t window = remote() ? kCapacity : 0;
  ASSERT_TRUE(
      WaitFor([&] { return client_->Stats().receive_buffered == window; }));
  const v1::BrokerStats stats = broker_->Stats();
  const v1::SubscriptionStats* s = FindSubscription(stats, "slow");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->matched(), kMessages);
  EXPECT_EQ(s->delivered(), window);
  EXPECT_LE(s->queued(), kCapacity);
  EXPECT_EQ(s->dropped().queue_full(), DroppedTotal(s->dropped()));
  EXPECT_EQ(s->matched(),
            s->delivered() + DroppedTotal(s->dropped()) + s->queued());
  const uint64_t dropped = DroppedTotal(s->dropped());

  // Take everything: the missed counts add up to the drops.
  uint64_t received = 0;
  uint64_t missed = 0;
  while (received < kMessages - dropped) {
    absl::StatusOr<Received> r = sub.Receive(kWait);
    ASSERT_THAT(r, IsOk());
    ++received;
    missed += r->missed();
  }
  EXPECT_THAT(sub.Receive(absl::Milliseconds(20)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(missed, dropped);

  absl::StatusOr<SubscriptionTotals> totals = sub.Close();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->matched, kMessages);
  EXPECT_EQ(totals->delivered, received);
  EXPECT_EQ(totals->dropped(DropReason::kQueueFull), dropped);
  EXPECT_EQ(totals->abandoned, 0u);
  EXPECT_EQ(totals->matched,
            totals->delivered + totals->dropped() + totals->abandoned);

  const ClientStats client = client_->Stats();
  EXPECT_EQ(client.delivered, received);
  EXPECT_EQ(client.received,
            client.delivered + client.receive_buffered + client.abandoned);
}

TEST_P(ClientTest, CloseOfASubscriberCountsWhatItLeftAsAbandoned) {
  constexpr uint64_t kMessages = 5;
  Subscriber sub = MakeSubscriber("left");
  for (uint64_t i = 0; i < kMessages; ++i) {
    ASSERT_THAT(broker_->Publish("left", "x"), IsOk());
  }
  ASSERT_THAT(sub.Receive(kWait), IsOk());
  // Remote: wait until the rest reached the client's buffer.
  ASSERT_TRUE(WaitFor([&] {
    return !remote() || client_->Stats().receive_buffered == kMessages - 1;
  }));
  absl::StatusOr<SubscriptionTotals> totals = sub.Close();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->matched, kMessages);
  EXPECT_EQ(totals->delivered, 1u);
  EXPECT_EQ(totals->abandoned, kMessages - 1);
  EXPECT_EQ(totals->dropped(), 0u);
  // A second Close() returns the same totals; receiving is refused.
  absl::StatusOr<SubscriptionTotals> again = sub.Close();
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->abandoned, totals->abandoned);
  EXPECT_THAT(sub.Receive(absl::Milliseconds(1)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(client_->Stats().abandoned, remote() ? kMessages - 1 : 0u);
}

TEST_P(ClientTest, CloseRefusesEveryLaterCall) {
  Subscriber sub = MakeSubscriber("t");
  Publisher publisher = MakePublisher();
  ASSERT_THAT(publisher.Publish("t", "before"), IsOk());
  ASSERT_THAT(client_->Close(absl::Now() + kWait), IsOk());
  // The publish before Close() reached the broker.
  EXPECT_EQ(broker_->Stats().published(), 1u);

  EXPECT_THAT(publisher.Publish("t", "after"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(client_->Subscribe("t", {}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(client_->CreatePublisher({}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(client_->Flush(absl::Now() + kWait),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(client_->BrokerStats(absl::Now() + kWait),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(sub.Receive(absl::Milliseconds(1)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(client_->Close(absl::Now()), IsOk());  // Same result again.

  const ClientStats stats = client_->Stats();
  EXPECT_EQ(stats.refused(PublishRefusal::kClosed), 1u);
  EXPECT_EQ(stats.published, 1u);
  EXPECT_EQ(stats.publish_acked, 1u);
  EXPECT_FALSE(stats.connected);
}

TEST_P(ClientTest, HandlesAndMessagesOutliveTheClient) {
  Subscriber sub = MakeSubscriber("t");
  Publisher publisher = MakePublisher();
  ASSERT_THAT(publisher.Publish("t", std::string(200, 'p')), IsOk());
  absl::StatusOr<Received> kept = sub.Receive(kWait);
  ASSERT_THAT(kept, IsOk());

  client_.reset();
  EXPECT_THAT(publisher.Publish("t", "x"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(sub.Receive(absl::Milliseconds(1)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(sub.Close(), StatusIs(absl::StatusCode::kFailedPrecondition));
  server_.reset();
  broker_.reset();
  // The message is still readable (it holds the broker's message or the
  // ZeroMQ frame).
  EXPECT_EQ(kept->topic(), "t");
  EXPECT_EQ(kept->payload(), std::string(200, 'p'));
}

TEST_P(ClientTest, EmptyHandlesRefuseEveryCall) {
  Publisher publisher;
  Subscriber subscriber;
  EXPECT_FALSE(publisher.valid());
  EXPECT_FALSE(subscriber.valid());
  EXPECT_THAT(publisher.Publish("t", "x"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(subscriber.TryReceive(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(subscriber.Close(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  Subscriber moved_from = MakeSubscriber("t");
  Subscriber moved_to = std::move(moved_from);
  EXPECT_TRUE(moved_to.valid());
  EXPECT_EQ(moved_to.pattern(), "t");
  EXPECT_THAT(moved_from.TryReceive(),  // NOLINT(bugprone-use-after-move)
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_P(ClientTest, ConcurrentPublishersAndReceiversKeepEveryCountExact) {
  constexpr int kPublishers = 3;
  const auto per_publisher = static_cast<int>(200 * (remote() ? 1 : 2));
  Subscriber sub =
      MakeSubscriber("race.>", Capacity(kPublishers * per_publisher));
  std::vector<std::thread> threads;
  for (int p = 0; p < kPublishers; ++p) {
    threads.emplace_back([&, p] {
      absl::StatusOr<Publisher> publisher =
          client_->CreatePublisher({.buffer_wait = kWait});
      ASSERT_THAT(publisher, IsOk());
      for (int i = 0; i < per_publisher; ++i) {
        ASSERT_THAT(publisher->Publish(absl::StrCat("race.", p), "x"), IsOk());
      }
    });
  }
  int received = 0;
  while (received < kPublishers * per_publisher) {
    absl::StatusOr<Received> r = sub.Receive(kWait);
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->missed(), 0u);
    ++received;
  }
  for (std::thread& t : threads) t.join();
  ASSERT_THAT(Flush(), IsOk());
  const ClientStats stats = client_->Stats();
  EXPECT_EQ(stats.published,
            static_cast<uint64_t>(kPublishers * per_publisher));
  EXPECT_EQ(stats.publish_acked, stats.published);
  EXPECT_EQ(stats.delivered, static_cast<uint64_t>(received));
}

INSTANTIATE_TEST_SUITE_P(Transports, ClientTest,
                         ::testing::Values(Transport::kInProcess,
                                           Transport::kTcp),
                         TransportName);

TEST(ClientConnectTest, RefusesUnknownSchemesAndMisplacedBrokers) {
  auto broker = Broker::Create();
  ASSERT_THAT(broker, IsOk());
  EXPECT_THAT(Client::Connect("udp://127.0.0.1:1"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Client::Connect("inproc:"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("needs the broker")));
  EXPECT_THAT(Client::Connect("tcp://127.0.0.1:1", {}, broker->get()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ClientOptions no_buffer;
  no_buffer.publish_buffer = 0;
  EXPECT_THAT(Client::Connect("inproc:", no_buffer, broker->get()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Client::Connect("tcp://", {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ClientConnectTest, UnreachableBrokerIsUnavailableAfterTheTimeout) {
  // Nothing listens on a Unix socket path in a directory that does not exist.
  ClientOptions options;
  options.connect_timeout = absl::Milliseconds(200);
  EXPECT_THAT(Client::Connect("ipc:///nonexistent-herald-dir/sdk", options),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST(ClientConnectTest, InvalidOptionsAreRefused) {
  PublisherOptions publisher;
  publisher.buffer_wait = absl::Milliseconds(-1);
  auto broker = Broker::Create();
  ASSERT_THAT(broker, IsOk());
  auto client = Client::Connect("inproc:", {}, broker->get());
  ASSERT_THAT(client, IsOk());
  EXPECT_THAT((*client)->CreatePublisher(publisher),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ClientOptions options;
  options.reconnect_interval = absl::ZeroDuration();
  EXPECT_THAT(Client::Connect("tcp://127.0.0.1:1", options),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace herald
