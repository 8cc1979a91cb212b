// What only the remote client has: the publish buffer, sessions, reconnects
// after a broker restart (with the gap reported), and session expiry. The
// behaviour shared with the in-process client is in client_test.cc.
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/broker.h"
#include "broker/net/framing.h"
#include "broker/net/server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sdk/client.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tcp_relay.h"
#include "tests/testing/wait_for.h"
#include "zmq.hpp"
#include "zmq_addon.hpp"

namespace herald {
namespace {

using ::herald::testing::IsOk;
using ::herald::testing::StatusIs;
using ::herald::testing::WaitFor;

constexpr absl::Duration kWait = absl::Seconds(30);

// A short directory under /tmp for Unix sockets (Bazel's TEST_TMPDIR is
// longer than the 107-byte socket path limit), removed at the end.
class ShortTempDir {
 public:
  ShortTempDir() {
    char pattern[] = "/tmp/herald-sdk-XXXXXX";
    if (mkdtemp(pattern) != nullptr) path_ = pattern;
  }
  ~ShortTempDir() {
    if (path_.empty()) return;
    unlink((path_ + "/sdk").c_str());
    rmdir(path_.c_str());
  }
  const std::string& path() const { return path_; }
  // An ipc:// endpoint in it.
  std::string ipc_endpoint() const {
    return absl::StrCat("ipc://", path_, "/sdk");
  }

 private:
  std::string path_;
};

// A broker and its server on one endpoint, made and stopped together.
struct BrokerAndServer {
  absl::Status Start(const std::string& endpoint,
                     net::ServerOptions options = {}) {
    auto b = Broker::Create();
    if (!b.ok()) return b.status();
    broker = *std::move(b);
    options.sdk_endpoint = endpoint;
    options.publish_endpoint = "";
    options.subscribe_endpoint = "";
    auto s = net::Server::Start(broker.get(), options);
    if (!s.ok()) return s.status();
    server = *std::move(s);
    return absl::OkStatus();
  }
  void Stop() {
    server.reset();  // Stop(): Goodbye to every session.
    broker.reset();
  }
  std::unique_ptr<Broker> broker;
  std::unique_ptr<net::Server> server;
};

TEST(RemoteClientTest, ReconnectsAfterABrokerRestartAndReportsTheGap) {
  ShortTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string endpoint = dir.ipc_endpoint();
  BrokerAndServer first;
  ASSERT_THAT(first.Start(endpoint), IsOk());
  const uint64_t first_epoch = first.server->epoch();

  ClientOptions options;
  options.reconnect_interval = absl::Milliseconds(10);
  // What the client went through, for the failure messages.
  absl::Mutex mu;
  std::string events;
  options.on_error = [&](const absl::Status& s) {
    absl::MutexLock lock(&mu);
    absl::StrAppend(&events, absl::FormatTime(absl::Now()), " ", s.ToString(),
                    "\n");
  };
  auto history = [&] {
    absl::MutexLock lock(&mu);
    return events;
  };
  auto client = Client::Connect(endpoint, options);
  ASSERT_THAT(client, IsOk());
  auto sub = (*client)->Subscribe("restart.>", {});
  ASSERT_THAT(sub, IsOk());
  auto publisher = (*client)->CreatePublisher({});
  ASSERT_THAT(publisher, IsOk());
  ASSERT_THAT(publisher->Publish("restart.a", "before"), IsOk());
  absl::StatusOr<Received> before = sub->Receive(kWait);
  ASSERT_THAT(before, IsOk());
  EXPECT_FALSE(before->gap());
  EXPECT_EQ(before->epoch(), first_epoch);

  // A receiver waits through the restart: no kUnavailable, just the next
  // message, marked as the first after a gap.
  absl::StatusOr<Received> after;
  std::thread receiver([&] { after = sub->Receive(absl::Now() + kWait); });

  first.Stop();
  ASSERT_TRUE(WaitFor([&] { return !(*client)->Stats().connected; }));
  BrokerAndServer second;
  ASSERT_THAT(second.Start(endpoint), IsOk());
  ASSERT_NE(second.server->epoch(), first_epoch);

  // The SDK makes the subscription again by itself. (The broker's stats may
  // list a subscription a moment before a publish can match it; Flush()'s
  // round trip comes after the Subscribe, so it is live once it returns.)
  ASSERT_THAT((*client)->Flush(absl::Now() + kWait), IsOk()) << history();
  ASSERT_EQ(second.broker->Stats().subscriptions_active(), 1u);
  ASSERT_THAT(second.broker->Publish("restart.b", "after"), IsOk());
  receiver.join();
  ASSERT_THAT(after, IsOk())
      << "client: " << (*client)->Stats().DebugString()
      << "\nserver: " << second.server->Stats().ShortDebugString()
      << "\nbroker: " << second.broker->Stats().ShortDebugString()
      << "\nevents:\n"
      << history();
  EXPECT_EQ(after->payload(), "after");
  EXPECT_TRUE(after->gap());
  EXPECT_EQ(after->epoch(), second.server->epoch());
  EXPECT_EQ(after->sequence(), 1u);

  // Only the first message after the gap carries it.
  ASSERT_THAT(publisher->Publish("restart.c", "next"), IsOk());
  absl::StatusOr<Received> next = sub->Receive(kWait);
  ASSERT_THAT(next, IsOk());
  EXPECT_FALSE(next->gap());

  const ClientStats stats = (*client)->Stats();
  EXPECT_EQ(stats.sessions, 2u);
  EXPECT_EQ(stats.reconnects, 1u);
  EXPECT_EQ(stats.gaps, 1u);
  EXPECT_EQ(stats.broker_epoch, second.server->epoch());
  EXPECT_EQ(stats.subscriptions_active, 1u);
  EXPECT_TRUE(stats.connected);

  // The totals are the new broker's incarnation's (the first broker's died
  // with it): two taken, two left in the client's buffer.
  ASSERT_THAT(second.broker->Publish("restart.d", "left 1"), IsOk());
  ASSERT_THAT(second.broker->Publish("restart.d", "left 2"), IsOk());
  ASSERT_TRUE(
      WaitFor([&] { return (*client)->Stats().receive_buffered == 2; }));
  absl::StatusOr<SubscriptionTotals> totals = sub->Close();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->matched, 4u);
  EXPECT_EQ(totals->delivered, 2u);
  EXPECT_EQ(totals->abandoned, 2u);
  EXPECT_EQ(totals->matched,
            totals->delivered + totals->dropped() + totals->abandoned);
  client->reset();
  second.Stop();
}

// Messages of the first broker still buffered when the subscription is made
// again count in neither incarnation's totals: Close() returns the new
// broker's, exact.
TEST(RemoteClientTest, TotalsAfterARestartCountOnlyTheNewIncarnation) {
  ShortTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string endpoint = dir.ipc_endpoint();
  BrokerAndServer first;
  ASSERT_THAT(first.Start(endpoint), IsOk());
  ClientOptions options;
  options.reconnect_interval = absl::Milliseconds(10);
  auto client = Client::Connect(endpoint, options);
  ASSERT_THAT(client, IsOk());
  auto sub = (*client)->Subscribe("inc.>", {});
  ASSERT_THAT(sub, IsOk());
  ASSERT_THAT(first.broker->Publish("inc.a", "old 1"), IsOk());
  ASSERT_THAT(first.broker->Publish("inc.a", "old 2"), IsOk());
  ASSERT_TRUE(
      WaitFor([&] { return (*client)->Stats().receive_buffered == 2; }));

  first.Stop();
  ASSERT_TRUE(WaitFor([&] { return !(*client)->Stats().connected; }));
  BrokerAndServer second;
  ASSERT_THAT(second.Start(endpoint), IsOk());
  ASSERT_THAT((*client)->Flush(absl::Now() + kWait), IsOk());
  ASSERT_THAT(second.broker->Publish("inc.b", "new"), IsOk());
  ASSERT_TRUE(
      WaitFor([&] { return (*client)->Stats().receive_buffered == 3; }));
  for (const char* payload : {"old 1", "old 2"}) {
    absl::StatusOr<Received> r = sub->Receive(kWait);
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->payload(), payload);
  }
  absl::StatusOr<SubscriptionTotals> totals = sub->Close();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->matched, 1u);
  EXPECT_EQ(totals->delivered, 0u);
  EXPECT_EQ(totals->abandoned, 1u);
  client->reset();
  second.Stop();
}

TEST(RemoteClientTest, AfterGoodbyeDeliveriesDrainAndPublishesWaitForTheNext) {
  ShortTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string endpoint = dir.ipc_endpoint();
  BrokerAndServer first;
  ASSERT_THAT(first.Start(endpoint), IsOk());
  ClientOptions options;
  options.reconnect_interval = absl::Milliseconds(10);
  auto client = Client::Connect(endpoint, options);
  ASSERT_THAT(client, IsOk());
  // A window of 4: draining 12 messages needs credit to keep flowing back.
  SubscriptionOptions blocking;
  blocking.queue_capacity = 4;
  blocking.overflow = OverflowPolicy::kBlock;
  blocking.block_timeout = absl::Seconds(10);
  auto sub = (*client)->Subscribe("drain", blocking);
  ASSERT_THAT(sub, IsOk());

  first.server->StopIntake();  // Goodbye.
  ASSERT_TRUE(WaitFor([&] { return !(*client)->Stats().connected; }));

  constexpr int kMessages = 12;
  std::thread producer([&] {
    for (int i = 0; i < kMessages; ++i) {
      auto r = first.broker->Publish("drain", std::to_string(i));
      ASSERT_THAT(r, IsOk());
      EXPECT_EQ(r->dropped(), 0u);
    }
  });
  for (int i = 0; i < kMessages; ++i) {
    absl::StatusOr<Received> r = sub->Receive(kWait);
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->payload(), std::to_string(i));
    EXPECT_EQ(r->missed(), 0u);
  }
  producer.join();

  // The stopping broker would refuse a publish: it waits in the buffer.
  auto publisher = (*client)->CreatePublisher({});
  ASSERT_THAT(publisher, IsOk());
  ASSERT_THAT(publisher->Publish("drain", "held"), IsOk());
  EXPECT_EQ((*client)->Stats().publish_buffered, 1u);
  EXPECT_EQ(first.server->Stats().publish_refused(), 0u);

  first.Stop();
  BrokerAndServer second;
  ASSERT_THAT(second.Start(endpoint), IsOk());
  // The subscription is made again before the held publish goes out.
  absl::StatusOr<Received> held = sub->Receive(kWait);
  ASSERT_THAT(held, IsOk());
  EXPECT_EQ(held->payload(), "held");
  EXPECT_TRUE(held->gap());
  ASSERT_THAT((*client)->Flush(absl::Now() + kWait), IsOk());
  const ClientStats stats = (*client)->Stats();
  EXPECT_EQ(stats.publish_acked, 1u);
  EXPECT_EQ(stats.reconnects, 1u);
  client->reset();
  second.Stop();
}

// A publish waiting behind a full kBlock queue for longer than the client's
// liveness timeout: the server answers heartbeats meanwhile, so the client
// keeps its session, and the publish is taken once there is room.
TEST(RemoteClientTest, ASessionBlockedLongerThanTheLivenessTimeoutStaysUp) {
  BrokerAndServer broker;
  ASSERT_THAT(broker.Start("tcp://127.0.0.1:*"), IsOk());
  SubscriptionOptions blocking;
  blocking.queue_capacity = 1;
  blocking.overflow = OverflowPolicy::kBlock;
  blocking.block_timeout = absl::Seconds(10);
  auto sub = broker.broker->Subscribe("blk", blocking);
  ASSERT_THAT(sub, IsOk());
  ClientOptions options;
  options.heartbeat = absl::Milliseconds(50);
  options.liveness_timeout = absl::Milliseconds(500);
  auto client = Client::Connect(broker.server->sdk_endpoint(), options);
  ASSERT_THAT(client, IsOk());
  auto publisher = (*client)->CreatePublisher({});
  ASSERT_THAT(publisher, IsOk());
  ASSERT_THAT(publisher->Publish("blk", "a"), IsOk());
  ASSERT_THAT(publisher->Publish("blk", "b"), IsOk());
  ASSERT_TRUE(WaitFor(
      [&] { return broker.server->Stats().publishes_deferred() >= 1; }));
  // Heartbeats spanning several liveness timeouts, all while blocked.
  const uint64_t pings = (*client)->Stats().pings_sent;
  ASSERT_TRUE(
      WaitFor([&] { return (*client)->Stats().pings_sent >= pings + 30; }));
  EXPECT_EQ(broker.server->Stats().publishes_deferred(), 1u);
  EXPECT_EQ((*client)->Stats().reconnects, 0u);
  for (const char* want : {"a", "b"}) {
    absl::StatusOr<Delivery> d = sub->Receive(absl::Now() + kWait);
    ASSERT_THAT(d, IsOk());
    EXPECT_EQ(d->payload(), want);
  }
  ASSERT_THAT((*client)->Flush(absl::Now() + kWait), IsOk());
  const ClientStats stats = (*client)->Stats();
  EXPECT_EQ(stats.publish_acked, 2u);
  EXPECT_EQ(stats.reconnects, 0u);
  EXPECT_EQ(stats.sessions, 1u);
  client->reset();
  broker.Stop();
}

// A broker whose sessions live 1 s, and a client that pings far less often
// than that: the server expires the session of a connected client, and the
// next request it refuses tells the client.
void StartWithSilentClient(BrokerAndServer& broker,
                           absl::StatusOr<std::unique_ptr<Client>>& client) {
  net::ServerOptions server_options;
  server_options.session_ttl = absl::Seconds(1);
  ASSERT_THAT(broker.Start("tcp://127.0.0.1:*", server_options), IsOk());
  ClientOptions options;
  options.heartbeat = absl::Seconds(60);
  options.liveness_timeout = absl::Seconds(60);
  client = Client::Connect(broker.server->sdk_endpoint(), options);
  ASSERT_THAT(client, IsOk());
}

TEST(RemoteClientTest, AnExpiredSessionIsMadeAgainWithAGap) {
  BrokerAndServer broker;
  absl::StatusOr<std::unique_ptr<Client>> client;
  ASSERT_NO_FATAL_FAILURE(StartWithSilentClient(broker, client));
  auto sub = (*client)->Subscribe("expiry", {});
  ASSERT_THAT(sub, IsOk());
  ASSERT_TRUE(
      WaitFor([&] { return broker.server->Stats().sessions_expired() == 1; }));

  // Flush's ping finds no session: the client says Hello again, re-makes the
  // subscription, and the flush completes in the new session.
  ASSERT_THAT((*client)->Flush(absl::Now() + kWait), IsOk());
  ASSERT_THAT(broker.broker->Publish("expiry", "x"), IsOk());
  absl::StatusOr<Received> r = sub->Receive(kWait);
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->gap());
  EXPECT_EQ(r->epoch(), broker.server->epoch());
  const ClientStats stats = (*client)->Stats();
  EXPECT_EQ(stats.reconnects, 1u);
  EXPECT_EQ(stats.gaps, 1u);
  client->reset();
  broker.Stop();
}

TEST(RemoteClientTest, ARequestRefusedForNoSessionIsMadeInANewSession) {
  BrokerAndServer broker;
  absl::StatusOr<std::unique_ptr<Client>> client;
  ASSERT_NO_FATAL_FAILURE(StartWithSilentClient(broker, client));
  ASSERT_TRUE(
      WaitFor([&] { return broker.server->Stats().sessions_expired() == 1; }));

  // The Subscribe reaches a server with no session for this client: it is
  // refused with the no-session marker, not as a refusal of the
  // subscription. The client makes a new session and subscribes in it.
  auto sub = (*client)->Subscribe("after.expiry", {});
  ASSERT_THAT(sub, IsOk());
  EXPECT_EQ(broker.server->Stats().no_session(), 1u);
  ASSERT_THAT(broker.broker->Publish("after.expiry", "x"), IsOk());
  absl::StatusOr<Received> r = sub->Receive(kWait);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->payload(), "x");
  EXPECT_EQ((*client)->Stats().reconnects, 1u);
  client->reset();
  broker.Stop();
}

TEST(RemoteClientTest, APublishRefusedForNoSessionIsCountedLost) {
  BrokerAndServer broker;
  absl::StatusOr<std::unique_ptr<Client>> client;
  ASSERT_NO_FATAL_FAILURE(StartWithSilentClient(broker, client));
  auto publisher = (*client)->CreatePublisher({});
  ASSERT_THAT(publisher, IsOk());
  ASSERT_TRUE(
      WaitFor([&] { return broker.server->Stats().sessions_expired() == 1; }));

  // The batch finds no session: the broker published nothing of it, and the
  // client counts it lost once its new session begins.
  ASSERT_THAT(publisher->Publish("lost.t", "x"), IsOk());
  ASSERT_THAT((*client)->Flush(absl::Now() + kWait), IsOk());
  const ClientStats stats = (*client)->Stats();
  EXPECT_EQ(stats.published, 1u);
  EXPECT_EQ(stats.publish_acked, 0u);
  EXPECT_EQ(stats.batches_lost, 1u);
  EXPECT_EQ(
      stats.publish_dropped_by_reason[static_cast<size_t>(PublishDrop::kLost)],
      1u);
  EXPECT_EQ(broker.broker->Stats().published(), 0u);
  EXPECT_EQ(stats.reconnects, 1u);
  client->reset();
  broker.Stop();
}

TEST(RemoteClientTest, AFullPublishBufferRefusesOrTimesOutAndCloseCountsIt) {
  ShortTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string endpoint = dir.ipc_endpoint();
  BrokerAndServer broker;
  ASSERT_THAT(broker.Start(endpoint), IsOk());
  constexpr size_t kBuffer = 2;
  ClientOptions options;
  options.publish_buffer = kBuffer;
  auto client = Client::Connect(endpoint, options);
  ASSERT_THAT(client, IsOk());
  // With the broker gone, nothing leaves the buffer.
  broker.Stop();
  ASSERT_TRUE(WaitFor([&] { return !(*client)->Stats().connected; }));

  auto nonblocking = (*client)->CreatePublisher({});
  ASSERT_THAT(nonblocking, IsOk());
  auto waiting =
      (*client)->CreatePublisher({.buffer_wait = absl::Milliseconds(20)});
  ASSERT_THAT(waiting, IsOk());
  for (size_t i = 0; i < kBuffer; ++i) {
    ASSERT_THAT(nonblocking->Publish("t", "x"), IsOk());
  }
  EXPECT_THAT(nonblocking->Publish("t", "x"),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(waiting->Publish("t", "x"),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT((*client)->Flush(absl::Now() + absl::Milliseconds(20)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));

  ClientStats stats = (*client)->Stats();
  EXPECT_EQ(stats.published, kBuffer);
  EXPECT_EQ(stats.publish_buffered, kBuffer);
  EXPECT_EQ(stats.publish_buffer_high_water, kBuffer);
  EXPECT_EQ(stats.refused(PublishRefusal::kBufferFull), 1u);
  EXPECT_EQ(stats.refused(PublishRefusal::kBufferTimeout), 1u);

  // Close() cannot flush: what is left counts as dropped.
  EXPECT_THAT((*client)->Close(absl::Now() + absl::Milliseconds(20)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  stats = (*client)->Stats();
  EXPECT_EQ(stats.publish_dropped(PublishDrop::kUnsentAtClose), kBuffer);
  EXPECT_EQ(stats.publish_buffered, 0u);
  EXPECT_EQ(stats.published, stats.publish_acked + stats.publish_buffered +
                                 stats.publish_in_flight +
                                 stats.publish_dropped());
}

TEST(RemoteClientTest, BrokerRefusalsReachTheErrorCallbackAndCounters) {
  BrokerAndServer broker;
  ASSERT_THAT(broker.Start("tcp://127.0.0.1:*"), IsOk());
  absl::Mutex mu;
  std::vector<absl::Status> errors;
  ClientOptions options;
  options.on_error = [&](const absl::Status& s) {
    absl::MutexLock lock(&mu);
    errors.push_back(s);
  };
  auto client = Client::Connect(broker.server->sdk_endpoint(), options);
  ASSERT_THAT(client, IsOk());
  auto publisher = (*client)->CreatePublisher({});
  ASSERT_THAT(publisher, IsOk());
  // Valid locally; the broker refuses once it shuts down.
  broker.broker->Shutdown(absl::Now());
  ASSERT_THAT(publisher->Publish("t", "x"), IsOk());
  ASSERT_THAT((*client)->Flush(absl::Now() + kWait), IsOk());
  const ClientStats stats = (*client)->Stats();
  EXPECT_EQ(stats.publish_dropped(PublishDrop::kBrokerRefused), 1u);
  EXPECT_EQ(stats.publish_acked, 0u);
  EXPECT_EQ(stats.batches_acked, 1u);
  absl::MutexLock lock(&mu);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].code(), absl::StatusCode::kFailedPrecondition);
  client->reset();
  broker.Stop();
}

// The connection breaks while deliveries are in flight, both processes
// alive: the client resumes its session from a new connection, and every
// message published is either received or reported missed (as the server's
// deliveries_lost), with the credit window intact so that the rest arrives.
TEST(RemoteClientTest, ABrokenConnectionResumesAndReportsWhatItLost) {
  BrokerAndServer broker;
  ASSERT_THAT(broker.Start("tcp://127.0.0.1:*"), IsOk());
  const std::string& endpoint = broker.server->sdk_endpoint();
  const int port = std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
  auto relay = testing::TcpRelay::Start(port);
  ASSERT_THAT(relay, IsOk());
  auto client =
      Client::Connect(absl::StrCat("tcp://127.0.0.1:", (*relay)->port()));
  ASSERT_THAT(client, IsOk());
  SubscriptionOptions options;
  constexpr uint64_t kMessages = 20000;
  options.queue_capacity = kMessages;  // No drop in the broker's queue.
  auto sub = (*client)->Subscribe("cut.t", options);
  ASSERT_THAT(sub, IsOk());
  for (uint64_t i = 0; i < kMessages; ++i) {
    ASSERT_THAT(broker.broker->Publish("cut.t", absl::StrCat(i)), IsOk());
  }

  uint64_t received = 0;
  uint64_t missed = 0;
  uint64_t last_sequence = 0;
  bool cut = false;
  while (received + missed < kMessages) {
    if (!cut && received >= kMessages / 4) {
      ASSERT_EQ((*relay)->Cut(), 1);  // Mid-stream: the window is in flight.
      cut = true;
    }
    absl::StatusOr<Received> r = sub->Receive(kWait);
    ASSERT_THAT(r, IsOk()) << "received " << received << ", missed " << missed;
    // Sequences run on, except for what was reported missed.
    ASSERT_EQ(r->sequence(), last_sequence + 1 + r->missed());
    EXPECT_FALSE(r->gap());  // Resumed, not made again.
    last_sequence = r->sequence();
    missed += r->missed();
    ++received;
  }
  EXPECT_EQ(received + missed, kMessages);
  RecordProperty("missed", static_cast<int>(missed));
  const v1::ServerStats server = broker.server->Stats();
  EXPECT_EQ(server.deliveries_lost(), missed);
  EXPECT_EQ(server.sessions_opened(), 1u);  // One session, resumed.
  EXPECT_GE((*relay)->accepted(), 2);
  EXPECT_GE((*client)->Stats().reconnects, 1u);
  client->reset();
  broker.Stop();
}

TEST(RemoteClientTest, ASubscribeWhoseAckWasLostWithTheConnectionIsLive) {
  BrokerAndServer broker;
  ASSERT_THAT(broker.Start("tcp://127.0.0.1:*"), IsOk());
  const std::string& endpoint = broker.server->sdk_endpoint();
  const int port = std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
  auto relay = testing::TcpRelay::Start(port);
  ASSERT_THAT(relay, IsOk());
  auto client =
      Client::Connect(absl::StrCat("tcp://127.0.0.1:", (*relay)->port()));
  ASSERT_THAT(client, IsOk());

  // The broker makes the subscription, and its Ack is lost with the
  // connection: the client resends the Subscribe in the resumed session.
  (*relay)->HoldReplies(true);
  std::optional<absl::StatusOr<Subscriber>> sub;
  std::thread subscriber(
      [&] { sub.emplace((*client)->Subscribe("lost.ack", {})); });
  ASSERT_TRUE(WaitFor(
      [&] { return broker.server->Stats().remote_subscriptions() == 1; }));
  ASSERT_EQ((*relay)->Cut(), 1);
  (*relay)->HoldReplies(false);
  subscriber.join();
  ASSERT_TRUE(sub.has_value());
  ASSERT_THAT(*sub, IsOk());

  const v1::ServerStats server = broker.server->Stats();
  EXPECT_EQ(server.sessions_opened(), 1u);  // One session, resumed.
  EXPECT_EQ(server.remote_subscriptions(), 1u);
  EXPECT_EQ(server.subscriptions_refused(), 0u);
  EXPECT_GE((*relay)->accepted(), 2);
  // It is the broker's subscription, and it delivers.
  ASSERT_THAT(broker.broker->Publish("lost.ack", "after"), IsOk());
  absl::StatusOr<Received> r = (*sub)->Receive(kWait);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->payload(), "after");
  EXPECT_EQ(r->sequence(), 1u);
  EXPECT_FALSE(r->gap());
  EXPECT_EQ(broker.broker->Stats().subscriptions_active(), 1u);
  client->reset();
  broker.Stop();
}

// A scripted broker on a raw ROUTER: it welcomes every Hello, answers every
// Ping, and hands each Publish to `on_publish`, which may answer through
// `reply`.
// A scripted broker's publish progress (Ack and Pong fields): the batches
// and entries it chose to count as processed, and the last such batch.
struct Progress {
  uint64_t last_batch = 0;
  uint64_t batches = 0;
  uint64_t entries = 0;
  void Count(const v1::Envelope& publish) {
    last_batch = publish.publish().batch_sequence();
    ++batches;
    entries += static_cast<uint64_t>(publish.publish().entries_size());
  }
};

class ScriptedBroker {
 public:
  using Reply = std::function<void(const v1::Envelope&)>;
  // Called for each Publish; counts what it processes in `progress` (read
  // by the Pongs).
  using OnPublish = std::function<void(const v1::Envelope&, const Reply&,
                                       Progress* progress)>;

  // Called for each round-trip Ping (not a heartbeat); returns true if it
  // answered it itself.
  using OnPing = std::function<bool(const v1::Envelope&, const Reply&)>;

  // `publish_progress`: the Welcome says the Acks and Pongs carry publish
  // progress (false: an older server, whose client asks every Ack).
  explicit ScriptedBroker(OnPublish on_publish, bool publish_progress = true,
                          OnPing on_ping = nullptr)
      : router_(context_, zmq::socket_type::router),
        on_publish_(std::move(on_publish)),
        on_ping_(std::move(on_ping)),
        publish_progress_(publish_progress) {
    router_.set(zmq::sockopt::linger, 0);
    router_.bind("tcp://127.0.0.1:*");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this] { Loop(); });
  }
  ~ScriptedBroker() {
    done_.store(true);
    thread_.join();
  }

  const std::string& endpoint() const { return endpoint_; }

 private:
  void Loop() {
    while (!done_.load()) {
      zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(20));
      if ((item.revents & ZMQ_POLLIN) == 0) continue;
      std::vector<zmq::message_t> frames;
      (void)zmq::recv_multipart(router_, std::back_inserter(frames));
      if (frames.size() < 3) continue;
      v1::Envelope in;
      if (!in.ParseFromArray(frames[2].data(), frames[2].size())) continue;
      const std::string id = frames[0].to_string();
      const Reply reply = [&](const v1::Envelope& env) {
        router_.send(zmq::buffer(id), zmq::send_flags::sndmore);
        router_.send(zmq::buffer(net::MagicFrame()), zmq::send_flags::sndmore);
        router_.send(zmq::buffer(env.SerializeAsString()));
      };
      if (in.has_hello()) {
        v1::Envelope welcome;
        welcome.set_request_id(in.request_id());
        v1::Welcome* w = welcome.mutable_welcome();
        w->set_broker_epoch(1);
        w->set_max_message_bytes(1 << 20);
        w->set_max_subscriptions(16);
        w->set_max_batch_messages(64);
        w->set_max_credit(1024);
        w->set_publish_progress(publish_progress_);
        reply(welcome);
      } else if (in.has_publish()) {
        on_publish_(in, reply, &progress_);
      } else if (in.has_ping()) {
        if (!in.ping().heartbeat() && on_ping_ != nullptr &&
            on_ping_(in, reply)) {
          continue;
        }
        v1::Envelope pong;
        pong.set_request_id(in.request_id());
        pong.mutable_pong();  // Empty from a server without progress.
        if (publish_progress_) {
          pong.mutable_pong()->set_acked_batch_sequence(progress_.last_batch);
          pong.mutable_pong()->set_batches_processed(progress_.batches);
          pong.mutable_pong()->set_entries_processed(progress_.entries);
        }
        reply(pong);
      }
    }
  }

  zmq::context_t context_;
  zmq::socket_t router_;
  std::string endpoint_;
  const OnPublish on_publish_;
  const OnPing on_ping_;
  const bool publish_progress_;
  Progress progress_;  // Confined to the broker's thread.
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// A client of `broker` with no linger, and a publisher of it.
struct ScriptedClient {
  std::unique_ptr<Client> client;
  std::optional<Publisher> publisher;
};
void ConnectPublisher(const ScriptedBroker& broker, ClientOptions options,
                      ScriptedClient* out) {
  options.linger = absl::ZeroDuration();
  auto client = Client::Connect(broker.endpoint(), options);
  ASSERT_THAT(client, IsOk());
  out->client = *std::move(client);
  auto publisher = out->client->CreatePublisher({});
  ASSERT_THAT(publisher, IsOk());
  out->publisher.emplace(*std::move(publisher));
}

// The batches a ScriptedBroker has seen: counted on its thread, read by the
// test's.
class BatchCount {
 public:
  // Counts one more batch; returns how many have been seen.
  int Next() { return seen_.fetch_add(1) + 1; }
  int seen() const { return seen_.load(); }

 private:
  std::atomic<int> seen_{0};
};

// Publishes "m<i>" for i in [first, last], each once the broker has seen
// i - 1 batches, so that each message is a batch of its own.
void PublishOneBatchEach(Publisher& publisher, const BatchCount& batches,
                         int first, int last) {
  for (int i = first; i <= last; ++i) {
    ASSERT_THAT(publisher.Publish("t", absl::StrCat("m", i)), IsOk());
    ASSERT_TRUE(WaitFor([&] { return batches.seen() == i; }));
  }
}

// The Ack of `publish` (which `progress` has counted).
v1::Envelope AckOf(const v1::Envelope& publish, const Progress& progress) {
  v1::Envelope ack;
  ack.set_request_id(publish.request_id());
  ack.mutable_ack()->set_acked_batch_sequence(
      publish.publish().batch_sequence());
  ack.mutable_ack()->set_batches_processed(progress.batches);
  ack.mutable_ack()->set_entries_processed(progress.entries);
  return ack;
}

// The broker acknowledges only the third of three publish batches, as if
// ZeroMQ had lost the first two with a broken connection. The cumulative Ack
// must not count them as processed.
TEST(RemoteClientTest, BatchesSkippedByALaterAckAreCountedLost) {
  BatchCount batches;
  ScriptedBroker broker([&](const v1::Envelope& in,
                            const ScriptedBroker::Reply& reply,
                            Progress* progress) {
    const int seen = batches.Next();
    if (seen == 3) {
      // The third batch asks its Ack (it closes the window of 3).
      EXPECT_NE(in.request_id(), 0u);
      progress->Count(in);
      reply(AckOf(in, *progress));
    }
  });

  ClientOptions options;
  options.max_unacked_batches = 3;
  ScriptedClient c;
  ASSERT_NO_FATAL_FAILURE(ConnectPublisher(broker, options, &c));
  auto& client = c.client;
  auto& publisher = c.publisher;
  ASSERT_NO_FATAL_FAILURE(PublishOneBatchEach(*publisher, batches, 1, 3));
  ASSERT_TRUE(WaitFor([&] { return client->Stats().batches_lost == 2; }));
  const ClientStats stats = client->Stats();
  EXPECT_EQ(stats.batches_sent, 3u);
  EXPECT_EQ(stats.batches_acked, 1u);
  EXPECT_EQ(stats.publish_acked, 1u);
  EXPECT_EQ(stats.publish_dropped(PublishDrop::kLost), 2u);
  EXPECT_EQ(stats.publish_in_flight, 0u);
  EXPECT_EQ(stats.published, stats.publish_acked + stats.publish_buffered +
                                 stats.publish_in_flight +
                                 stats.publish_dropped());
  client.reset();
}

// Under a light load a client asks an Ack only while none is awaited; the
// batches sent meanwhile are settled by the next Ack's publish progress,
// which also tells exactly how many of them never arrived. Here the broker
// holds batch 1's Ack until batch 4, "loses" batch 2 and acknowledges 5.
TEST(RemoteClientTest, BatchesSentWithoutAskingAnAckAreSettledByTheNextOne) {
  BatchCount batches;
  v1::Envelope first;  // Broker thread only.
  ScriptedBroker broker([&](const v1::Envelope& in,
                            const ScriptedBroker::Reply& reply,
                            Progress* progress) {
    const int seen = batches.Next();
    const bool asks = in.request_id() != 0;
    // Batches 1 and 5 ask (no Ack awaited when sent); 2 to 4 do not.
    EXPECT_EQ(asks, seen == 1 || seen == 5) << "batch " << seen;
    if (seen != 2) progress->Count(in);  // Batch 2 is "lost".
    if (seen == 1) first = in;
    if (seen == 4) reply(AckOf(first, Progress{1, 1, 1}));
    if (seen == 5) reply(AckOf(in, *progress));
  });
  ScriptedClient c;
  ASSERT_NO_FATAL_FAILURE(ConnectPublisher(broker, {}, &c));
  auto& client = c.client;
  auto& publisher = c.publisher;
  ASSERT_NO_FATAL_FAILURE(PublishOneBatchEach(*publisher, batches, 1, 4));
  // Batch 1's Ack settles batch 1 alone.
  ASSERT_TRUE(WaitFor([&] { return client->Stats().batches_acked == 1; }));
  ASSERT_THAT(publisher->Publish("t", "m5"), IsOk());
  ASSERT_TRUE(WaitFor([&] { return client->Stats().batches_lost == 1; }));
  const ClientStats stats = client->Stats();
  EXPECT_EQ(stats.batches_sent, 5u);
  EXPECT_EQ(stats.batches_acked, 4u);
  EXPECT_EQ(stats.publish_acked, 4u);
  EXPECT_EQ(stats.publish_dropped(PublishDrop::kLost), 1u);
  EXPECT_EQ(stats.publish_in_flight, 0u);
  client.reset();
}

// A server without publish progress (an older one): every batch asks its
// Ack, even one sent while another Ack is awaited, and each Ack settles its
// own batch. The broker holds batch 1's Ack until batch 2 is in.
TEST(RemoteClientTest, AServerWithoutPublishProgressGetsAnAckAskedPerBatch) {
  BatchCount batches;
  v1::Envelope first;  // Broker thread only.
  auto ack_of = [](const v1::Envelope& in) {
    v1::Envelope ack;  // No progress fields.
    ack.set_request_id(in.request_id());
    ack.mutable_ack()->set_acked_batch_sequence(in.publish().batch_sequence());
    return ack;
  };
  ScriptedBroker broker(
      [&](const v1::Envelope& in, const ScriptedBroker::Reply& reply,
          Progress*) {
        const int seen = batches.Next();
        EXPECT_NE(in.request_id(), 0u) << "batch " << seen;
        if (seen == 1) {
          first = in;
          return;
        }
        if (seen == 2) reply(ack_of(first));
        reply(ack_of(in));
      },
      /*publish_progress=*/false);
  ScriptedClient c;
  ASSERT_NO_FATAL_FAILURE(ConnectPublisher(broker, {}, &c));
  ASSERT_NO_FATAL_FAILURE(PublishOneBatchEach(*c.publisher, batches, 1, 3));
  ASSERT_THAT(c.client->Flush(absl::Now() + kWait), IsOk());
  const ClientStats stats = c.client->Stats();
  EXPECT_EQ(stats.batches_sent, 3u);
  EXPECT_EQ(stats.batches_acked, 3u);
  EXPECT_EQ(stats.publish_acked, 3u);
  EXPECT_EQ(stats.batches_lost, 0u);
  EXPECT_EQ(stats.publish_in_flight, 0u);
  c.client.reset();
}

// A batch refused as a whole before it was processed (an Error with no
// batch sequence: the session's held messages were full) gets no Ack: its
// messages count refused, not lost, and a Pong settles it.
TEST(RemoteClientTest, ABatchRefusedUnprocessedIsSettledAsRefused) {
  ScriptedBroker broker([](const v1::Envelope& in,
                           const ScriptedBroker::Reply& reply, Progress*) {
    v1::Envelope error;  // Not counted in the progress: not processed.
    error.set_request_id(in.request_id());
    error.mutable_error()->set_status_code(
        static_cast<int>(absl::StatusCode::kResourceExhausted));
    reply(error);
  });
  ScriptedClient c;
  ASSERT_NO_FATAL_FAILURE(ConnectPublisher(broker, {}, &c));
  ASSERT_THAT(c.publisher->Publish("t", "m"), IsOk());
  ASSERT_TRUE(WaitFor([&] { return c.client->Stats().batches_acked == 1; }));
  const ClientStats stats = c.client->Stats();
  EXPECT_EQ(stats.publish_dropped(PublishDrop::kBrokerRefused), 1u);
  EXPECT_EQ(stats.publish_dropped(PublishDrop::kLost), 0u);
  EXPECT_EQ(stats.publish_acked, 0u);
  EXPECT_EQ(stats.publish_in_flight, 0u);
  c.client.reset();
}

// A batch refused before it was processed, whether it asked an Ack or not,
// is told by its batch sequence: its messages count refused, not lost.
TEST(RemoteClientTest, BatchesRefusedUnprocessedWithoutAnAckAreRefusedNotLost) {
  ScriptedBroker broker([](const v1::Envelope& in,
                           const ScriptedBroker::Reply& reply, Progress*) {
    v1::Envelope error;  // Not counted in the progress: not processed.
    v1::Error* e = error.mutable_error();
    e->set_status_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
    e->set_batch_sequence(in.publish().batch_sequence());
    e->set_whole_batch(true);
    e->set_unprocessed(true);
    reply(error);  // Request id 0, even for a batch that asked an Ack.
  });
  ScriptedClient c;
  ASSERT_NO_FATAL_FAILURE(ConnectPublisher(broker, {}, &c));
  constexpr uint64_t kMessages = 200;
  for (uint64_t i = 0; i < kMessages; ++i) {
    ASSERT_THAT(c.publisher->Publish("t", absl::StrCat(i)), IsOk());
  }
  ASSERT_TRUE(WaitFor([&] {
    const ClientStats s = c.client->Stats();
    return s.publish_in_flight == 0 && s.publish_buffered == 0;
  }));
  const ClientStats stats = c.client->Stats();
  EXPECT_EQ(stats.publish_dropped(PublishDrop::kBrokerRefused), kMessages);
  EXPECT_EQ(stats.publish_dropped(PublishDrop::kLost), 0u);
  EXPECT_EQ(stats.batches_lost, 0u);
  EXPECT_EQ(stats.publish_acked, 0u);
  EXPECT_EQ(stats.sessions, 1u);
  c.client.reset();
}

// A Flush whose Ping the broker refuses for now (messages held behind a
// blocked publish) asks again: the session is not given up.
TEST(RemoteClientTest, AFlushPingRefusedBehindABlockedPublishIsAskedAgain) {
  std::atomic<int> refused{0};
  ScriptedBroker broker(
      [](const v1::Envelope& in, const ScriptedBroker::Reply& reply,
         Progress* progress) {
        progress->Count(in);
        if (in.request_id() == 0) return;
        v1::Envelope ack;
        ack.set_request_id(in.request_id());
        ack.mutable_ack()->set_acked_batch_sequence(progress->last_batch);
        ack.mutable_ack()->set_batches_processed(progress->batches);
        ack.mutable_ack()->set_entries_processed(progress->entries);
        reply(ack);
      },
      /*publish_progress=*/true,
      [&](const v1::Envelope& in, const ScriptedBroker::Reply& reply) {
        if (refused.load() >= 3) return false;
        refused.fetch_add(1);
        v1::Envelope error;
        error.set_request_id(in.request_id());
        error.mutable_error()->set_status_code(
            static_cast<int>(absl::StatusCode::kResourceExhausted));
        reply(error);
        return true;
      });
  ScriptedClient c;
  ASSERT_NO_FATAL_FAILURE(ConnectPublisher(broker, {}, &c));
  ASSERT_THAT(c.publisher->Publish("t", "m"), IsOk());
  ASSERT_THAT(c.client->Flush(absl::Now() + kWait), IsOk());
  EXPECT_EQ(refused.load(), 3);
  const ClientStats stats = c.client->Stats();
  EXPECT_EQ(stats.sessions, 1u);
  EXPECT_EQ(stats.reconnects, 0u);
  EXPECT_EQ(stats.publish_acked, 1u);
  EXPECT_EQ(stats.publish_dropped(PublishDrop::kLost), 0u);
  c.client.reset();
}

// With a real broker, a stream of batches, most of which ask no Ack, is
// settled by a Flush: nothing is left unaccounted.
TEST(RemoteClientTest, ALightStreamIsSettledExactly) {
  BrokerAndServer server;
  ASSERT_THAT(server.Start("tcp://127.0.0.1:*"), IsOk());
  auto client = Client::Connect(server.server->sdk_endpoint());
  ASSERT_THAT(client, IsOk());
  auto sub = (*client)->Subscribe("light.t", {});
  ASSERT_THAT(sub, IsOk());
  auto publisher = (*client)->CreatePublisher({});
  ASSERT_THAT(publisher, IsOk());
  constexpr int kMessages = 500;
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_THAT(publisher->Publish("light.t", absl::StrCat(i)), IsOk());
  }
  ASSERT_THAT((*client)->Flush(absl::Now() + kWait), IsOk());
  const ClientStats stats = (*client)->Stats();
  EXPECT_EQ(stats.publish_acked, static_cast<uint64_t>(kMessages));
  EXPECT_EQ(stats.batches_acked, stats.batches_sent);
  EXPECT_EQ(stats.batches_lost, 0u);
  EXPECT_EQ(stats.publish_in_flight, 0u);
  for (int i = 0; i < kMessages; ++i) {
    absl::StatusOr<Received> m = sub->Receive(kWait);
    ASSERT_THAT(m, IsOk());
    EXPECT_EQ(m->payload(), absl::StrCat(i));
  }
}

// Callback subscriptions are serial executors over the client's pool: many
// subscriptions share callback_threads threads, each sees its messages in
// order, one at a time.
TEST(RemoteClientTest, CallbackSubscriptionsShareTheClientsPool) {
  BrokerAndServer broker;
  ASSERT_THAT(broker.Start("tcp://127.0.0.1:*"), IsOk());
  ClientOptions options;
  options.callback_threads = 2;
  auto client = Client::Connect(broker.server->sdk_endpoint(), options);
  ASSERT_THAT(client, IsOk());

  constexpr int kSubscriptions = 8;
  constexpr int kMessages = 200;
  struct Seen {
    absl::Mutex mu;
    std::vector<int> payloads ABSL_GUARDED_BY(mu);
    std::atomic<int> running{0};
    std::atomic<bool> overlapped{false};
  };
  std::vector<std::unique_ptr<Seen>> seen;
  absl::Mutex threads_mu;
  absl::flat_hash_set<std::thread::id> threads;  // Guarded by threads_mu.
  std::vector<Subscriber> subs;
  for (int s = 0; s < kSubscriptions; ++s) {
    seen.push_back(std::make_unique<Seen>());
    Seen* mine = seen.back().get();
    SubscriptionOptions so;
    so.callback_batch_limit = 16;  // Turns yield to the others.
    auto sub = (*client)->Subscribe(
        absl::StrCat("cb.", s), so, [&, mine](const Received& r) {
          if (mine->running.fetch_add(1) != 0) mine->overlapped.store(true);
          {
            absl::MutexLock lock(&threads_mu);
            threads.insert(std::this_thread::get_id());
          }
          {
            absl::MutexLock lock(&mine->mu);
            mine->payloads.push_back(std::stoi(std::string(r.payload())));
          }
          mine->running.fetch_sub(1);
        });
    ASSERT_THAT(sub, IsOk());
    subs.push_back(*std::move(sub));
  }
  for (int i = 0; i < kMessages; ++i) {
    for (int s = 0; s < kSubscriptions; ++s) {
      ASSERT_THAT(
          broker.broker->Publish(absl::StrCat("cb.", s), absl::StrCat(i)),
          IsOk());
    }
  }
  ASSERT_TRUE(WaitFor([&] {
    for (const auto& m : seen) {
      absl::MutexLock lock(&m->mu);
      if (m->payloads.size() < kMessages) return false;
    }
    return true;
  }));
  for (const auto& m : seen) {
    EXPECT_FALSE(m->overlapped.load());
    absl::MutexLock lock(&m->mu);
    ASSERT_EQ(m->payloads.size(), static_cast<size_t>(kMessages));
    for (int i = 0; i < kMessages; ++i) EXPECT_EQ(m->payloads[i], i);
  }
  {
    absl::MutexLock lock(&threads_mu);
    EXPECT_LE(threads.size(), 2u);
  }
  for (Subscriber& sub : subs) {
    absl::StatusOr<SubscriptionTotals> t = sub.Close();
    ASSERT_THAT(t, IsOk());
    EXPECT_EQ(t->delivered, static_cast<uint64_t>(kMessages));
  }
  client->reset();
  broker.Stop();
}

// An Error answering no request the client knows (one of a session ago, or
// of a Hello already answered) is counted and otherwise ignored.
TEST(RemoteClientTest, AnErrorForAnUnknownRequestIsIgnored) {
  ScriptedBroker broker([](const v1::Envelope& in,
                           const ScriptedBroker::Reply& reply,
                           Progress* progress) {
    v1::Envelope stray;
    stray.set_request_id(in.request_id() + 1000);
    stray.mutable_error()->set_status_code(
        static_cast<int>(absl::StatusCode::kUnavailable));
    reply(stray);
    progress->Count(in);
    reply(AckOf(in, *progress));
  });
  ScriptedClient c;
  ASSERT_NO_FATAL_FAILURE(ConnectPublisher(broker, {}, &c));
  auto& client = c.client;
  auto& publisher = c.publisher;
  ASSERT_THAT(publisher->Publish("t", "m"), IsOk());
  ASSERT_THAT(client->Flush(absl::Now() + kWait), IsOk());
  const ClientStats stats = client->Stats();
  EXPECT_EQ(stats.errors_received, 1u);
  EXPECT_EQ(stats.publish_acked, 1u);
  EXPECT_TRUE(stats.connected);
  client.reset();
}

// The broker refuses every batch as a whole, then settles it with its Ack:
// every message counts refused, whatever the batches held, none acked.
TEST(RemoteClientTest, AWholeBatchRefusalCountsEveryMessageOfIt) {
  ScriptedBroker broker([](const v1::Envelope& in,
                           const ScriptedBroker::Reply& reply,
                           Progress* progress) {
    v1::Envelope error;
    error.set_request_id(in.request_id());
    error.mutable_error()->set_status_code(
        static_cast<int>(absl::StatusCode::kInvalidArgument));
    error.mutable_error()->set_batch_sequence(in.publish().batch_sequence());
    error.mutable_error()->set_whole_batch(true);
    reply(error);  // With the batch's request id, 0 if it asked no Ack.
    progress->Count(in);
    if (in.request_id() != 0) reply(AckOf(in, *progress));
  });
  ScriptedClient c;
  ASSERT_NO_FATAL_FAILURE(ConnectPublisher(broker, {}, &c));
  auto& client = c.client;
  auto& publisher = c.publisher;
  constexpr uint64_t kMessages = 50;  // Batched as the I/O thread goes.
  for (uint64_t i = 0; i < kMessages; ++i) {
    ASSERT_THAT(publisher->Publish("t", absl::StrCat("m", i)), IsOk());
  }
  ASSERT_THAT(client->Flush(absl::Now() + kWait), IsOk());
  const ClientStats stats = client->Stats();
  EXPECT_EQ(stats.publish_dropped(PublishDrop::kBrokerRefused), kMessages);
  EXPECT_EQ(stats.publish_acked, 0u);
  EXPECT_EQ(stats.publish_dropped(PublishDrop::kLost), 0u);
  EXPECT_EQ(stats.batches_acked, stats.batches_sent);
  client.reset();
}

// A server that refuses more entries than a batch has (a bug, or hostile)
// cannot make the client's counts exceed what it published.
TEST(RemoteClientTest, RefusalsBeyondABatchsSizeCountNoMore) {
  ScriptedBroker broker([](const v1::Envelope& in,
                           const ScriptedBroker::Reply& reply,
                           Progress* progress) {
    for (int i = 0; i < 3 * in.publish().entries_size(); ++i) {
      v1::Envelope error;
      error.mutable_error()->set_status_code(
          static_cast<int>(absl::StatusCode::kInvalidArgument));
      error.mutable_error()->set_batch_sequence(in.publish().batch_sequence());
      error.mutable_error()->set_entry_index(0);
      reply(error);
    }
    progress->Count(in);
    if (in.request_id() != 0) reply(AckOf(in, *progress));
  });
  ScriptedClient c;
  ASSERT_NO_FATAL_FAILURE(ConnectPublisher(broker, {}, &c));
  constexpr uint64_t kMessages = 20;
  for (uint64_t i = 0; i < kMessages; ++i) {
    ASSERT_THAT(c.publisher->Publish("t", absl::StrCat("m", i)), IsOk());
  }
  ASSERT_THAT(c.client->Flush(absl::Now() + kWait), IsOk());
  const ClientStats stats = c.client->Stats();
  EXPECT_EQ(stats.publish_dropped(PublishDrop::kBrokerRefused), kMessages);
  EXPECT_EQ(stats.publish_acked, 0u);
  EXPECT_EQ(stats.publish_in_flight, 0u);
  EXPECT_EQ(stats.publish_dropped(PublishDrop::kLost), 0u);
  c.client.reset();
}

// A publishing thread that finds the I/O thread idle sends its batch itself
// (no wake-up). The I/O thread sleeps on the socket's edge-triggered ZMQ_FD
// meanwhile, and a send on another thread can take the edge raised by an
// arriving message, so it must still see every Ack and Deliver: here they
// come back to the same client. A lost edge would leave a message waiting
// for the I/O thread's poll timeout (up to 1 s), past kPrompt.
TEST(RemoteClientTest, APublisherSendsInlineAndTheIOThreadMissesNothing) {
  constexpr absl::Duration kPrompt = absl::Milliseconds(700);
  BrokerAndServer server;
  ASSERT_THAT(server.Start("tcp://127.0.0.1:*"), IsOk());
  ClientOptions options;
  options.heartbeat = absl::Seconds(30);  // No ping to wake the I/O thread.
  auto client = Client::Connect(server.server->sdk_endpoint(), options);
  ASSERT_THAT(client, IsOk());
  auto sub = (*client)->Subscribe("inline.t", {});
  ASSERT_THAT(sub, IsOk());
  auto publisher = (*client)->CreatePublisher({});
  ASSERT_THAT(publisher, IsOk());

  // Round trips: each message is published alone, mostly with the I/O
  // thread asleep, until one went inline (the I/O thread may still be in
  // its turn when a publish comes, so not every one does).
  constexpr int kMinRoundTrips = 20;
  const absl::Time deadline = absl::Now() + kWait;
  int round_trips = 0;
  while (
      round_trips < kMinRoundTrips ||
      ((*client)->Stats().batches_sent_inline == 0 && absl::Now() < deadline)) {
    const std::string payload = absl::StrCat("rt", round_trips);
    ASSERT_THAT(publisher->Publish("inline.t", payload), IsOk());
    absl::StatusOr<Received> m = sub->Receive(kPrompt);
    ASSERT_THAT(m, IsOk()) << "round trip " << round_trips;
    EXPECT_EQ(m->payload(), payload);
    ++round_trips;
  }
  EXPECT_GE((*client)->Stats().batches_sent_inline, 1u);

  // Streaming: a publisher thread keeps sending (inline or not) while
  // Delivers and Acks arrive; it stays at most kWindow ahead of the
  // receiver, so the subscription's queue never fills.
  constexpr int kStream = 3000;
  constexpr int kWindow = 64;
  absl::Mutex mu;
  int received = 0;
  std::thread sender([&] {
    for (int i = 0; i < kStream; ++i) {
      {
        absl::MutexLock lock(&mu);
        auto within_window = [&] { return received >= i - kWindow; };
        mu.Await(absl::Condition(&within_window));
      }
      if (!publisher->Publish("inline.t", absl::StrCat("s", i)).ok()) return;
    }
  });
  for (int i = 0; i < kStream; ++i) {
    absl::StatusOr<Received> m = sub->Receive(kPrompt);
    ASSERT_THAT(m, IsOk()) << "message " << i;
    ASSERT_EQ(m->payload(), absl::StrCat("s", i));
    EXPECT_EQ(m->missed(), 0u);
    absl::MutexLock lock(&mu);
    ++received;
  }
  sender.join();
  ASSERT_THAT((*client)->Flush(absl::Now() + kPrompt), IsOk());
  const ClientStats stats = (*client)->Stats();
  EXPECT_EQ(stats.publish_acked, static_cast<uint64_t>(round_trips + kStream));
  EXPECT_EQ(stats.batches_acked, stats.batches_sent);
  EXPECT_LE(stats.batches_sent_inline, stats.batches_sent);
}

// A thread waiting in Receive() reads the socket itself while the I/O thread
// is idle (one thread hop less), and the I/O thread then leaves the socket
// to it. Whatever that thread reads for others must still reach them: the
// messages of a callback subscription and the Acks and Pong of a publisher
// on the same client, while the receiver waits for a message that comes
// only at the end.
TEST(RemoteClientTest, AReceiverReadsTheSocketItselfAndHoldsUpNothingElse) {
  constexpr absl::Duration kPrompt = absl::Milliseconds(700);
  BrokerAndServer server;
  ASSERT_THAT(server.Start("tcp://127.0.0.1:*"), IsOk());
  ClientOptions options;
  options.heartbeat = absl::Seconds(30);  // No ping to wake the I/O thread.
  auto client = Client::Connect(server.server->sdk_endpoint(), options);
  ASSERT_THAT(client, IsOk());
  auto other = Client::Connect(server.server->sdk_endpoint(), options);
  ASSERT_THAT(other, IsOk());
  auto pull = (*client)->Subscribe("lead.a", {});
  ASSERT_THAT(pull, IsOk());
  absl::Mutex mu;
  std::vector<std::string> pushed;
  auto push = (*client)->Subscribe("lead.b", {}, [&](const Received& r) {
    absl::MutexLock lock(&mu);
    pushed.emplace_back(r.payload());
  });
  ASSERT_THAT(push, IsOk());
  auto own = (*client)->CreatePublisher({});
  ASSERT_THAT(own, IsOk());
  auto remote = (*other)->CreatePublisher({});
  ASSERT_THAT(remote, IsOk());

  // Round trips from the other client, until one was read inline (the I/O
  // thread may be in its turn when a Receive() begins, so not every one is).
  constexpr int kMinRoundTrips = 20;
  const absl::Time deadline = absl::Now() + kWait;
  int round_trips = 0;
  while (round_trips < kMinRoundTrips ||
         ((*client)->Stats().received_inline == 0 && absl::Now() < deadline)) {
    const std::string payload = absl::StrCat("a", round_trips);
    ASSERT_THAT(remote->Publish("lead.a", payload), IsOk());
    absl::StatusOr<Received> m = pull->Receive(kPrompt);
    ASSERT_THAT(m, IsOk()) << "round trip " << round_trips;
    EXPECT_EQ(m->payload(), payload);
    ++round_trips;
  }
  EXPECT_GE((*client)->Stats().received_inline, 1u);

  // The receiver waits; meanwhile this client publishes to its own callback
  // subscription and flushes (Acks, Pong), and all of it comes through.
  absl::StatusOr<Received> last;
  std::thread receiver([&] { last = pull->Receive(absl::Now() + kWait); });
  constexpr int kPushed = 500;
  for (int i = 0; i < kPushed; ++i) {
    ASSERT_THAT(own->Publish("lead.b", absl::StrCat("b", i)), IsOk());
  }
  EXPECT_THAT((*client)->Flush(absl::Now() + kWait), IsOk());
  {
    absl::MutexLock lock(&mu);
    auto all = [&] { return pushed.size() >= kPushed; };
    EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all), kWait));
    ASSERT_EQ(pushed.size(), static_cast<size_t>(kPushed));
    for (int i = 0; i < kPushed; ++i) {
      ASSERT_EQ(pushed[i], absl::StrCat("b", i));
    }
  }
  ASSERT_THAT(remote->Publish("lead.a", "last"), IsOk());
  receiver.join();
  ASSERT_THAT(last, IsOk());
  EXPECT_EQ(last->payload(), "last");
  const ClientStats stats = (*client)->Stats();
  EXPECT_EQ(stats.publish_acked, static_cast<uint64_t>(kPushed));
  EXPECT_EQ(stats.received, static_cast<uint64_t>(round_trips + 1 + kPushed));
  EXPECT_LE(stats.received_inline, stats.received);
  EXPECT_EQ(stats.protocol_errors, 0u);
}

// A receiver leading the socket sleeps in poll(), not on its mutex: a stop
// request and a Close() must wake it there. Each round makes the receiver
// take a message and wait again before the stop (or the close) comes; a
// missed wake-up would leave it asleep until its poll's 1 s backstop, past
// kPrompt.
TEST(RemoteClientTest, StopAndCloseWakeAReceiverLeadingTheSocket) {
  constexpr absl::Duration kPrompt = absl::Milliseconds(700);
  BrokerAndServer server;
  ASSERT_THAT(server.Start("tcp://127.0.0.1:*"), IsOk());
  ClientOptions options;
  options.heartbeat = absl::Seconds(30);
  auto client = Client::Connect(server.server->sdk_endpoint(), options);
  ASSERT_THAT(client, IsOk());
  auto publisher = (*client)->CreatePublisher({});
  ASSERT_THAT(publisher, IsOk());
  constexpr int kRounds = 10;
  for (int round = 0; round < kRounds; ++round) {
    const std::string topic = absl::StrCat("wake.", round);
    auto sub = (*client)->Subscribe(topic, {});
    ASSERT_THAT(sub, IsOk());
    const bool by_close = round % 2 == 1;
    std::stop_source stop;
    std::atomic<bool> got_first{false};
    absl::StatusOr<Received> result;
    std::thread receiver([&] {
      absl::StatusOr<Received> first = sub->Receive(absl::Now() + kWait);
      got_first.store(first.ok());
      result = sub->Receive(absl::InfiniteFuture(), stop.get_token());
    });
    ASSERT_THAT(publisher->Publish(topic, "first"), IsOk());
    ASSERT_TRUE(WaitFor([&] { return got_first.load(); }));
    const absl::Time asked = absl::Now();
    if (by_close) {
      EXPECT_THAT(sub->Close(), IsOk());
    } else {
      stop.request_stop();
    }
    receiver.join();
    const absl::Duration took = absl::Now() - asked;
    EXPECT_LT(took, kPrompt) << "round " << round;
    EXPECT_THAT(result,
                StatusIs(by_close ? absl::StatusCode::kFailedPrecondition
                                  : absl::StatusCode::kCancelled))
        << "round " << round;
  }
}

// A receive call leading the socket handles only Delivers: an Error it reads
// is handed to the I/O thread, so on_error runs there (ClientOptions says
// it runs on the I/O thread or in Publish()), never on the thread blocked
// in Receive(), which may hold a lock on_error takes.
TEST(RemoteClientTest, AReceiverLeadingTheSocketLeavesErrorsToTheIOThread) {
  BrokerAndServer broker;
  ASSERT_THAT(broker.Start("tcp://127.0.0.1:*"), IsOk());
  absl::Mutex mu;
  std::vector<std::thread::id> error_threads;
  ClientOptions options;
  options.heartbeat = absl::Seconds(30);
  options.on_error = [&](const absl::Status&) {
    absl::MutexLock lock(&mu);
    error_threads.push_back(std::this_thread::get_id());
  };
  auto client = Client::Connect(broker.server->sdk_endpoint(), options);
  ASSERT_THAT(client, IsOk());
  auto sub = (*client)->Subscribe("err.a", {});
  ASSERT_THAT(sub, IsOk());
  auto publisher = (*client)->CreatePublisher({});
  ASSERT_THAT(publisher, IsOk());
  // The receiver leads (round trips until one was read inline), then waits
  // for a message that never comes while the broker refuses a publish.
  const absl::Time deadline = absl::Now() + kWait;
  int round_trips = 0;
  while ((*client)->Stats().received_inline == 0 && absl::Now() < deadline) {
    ASSERT_THAT(publisher->Publish("err.a", "x"), IsOk());
    ASSERT_THAT(sub->Receive(kWait), IsOk()) << "round trip " << round_trips;
    ++round_trips;
  }
  ASSERT_GE((*client)->Stats().received_inline, 1u);
  std::stop_source stop;
  absl::StatusOr<Received> waited;
  std::thread receiver(
      [&] { waited = sub->Receive(absl::InfiniteFuture(), stop.get_token()); });
  const std::thread::id receiver_id = receiver.get_id();
  broker.broker->Shutdown(absl::Now());
  constexpr int kRefused = 20;
  for (int i = 0; i < kRefused; ++i) {
    ASSERT_THAT(publisher->Publish("err.a", "refused"), IsOk());
    ASSERT_THAT((*client)->Flush(absl::Now() + kWait), IsOk());
  }
  stop.request_stop();
  receiver.join();
  EXPECT_THAT(waited, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ((*client)->Stats().publish_dropped(PublishDrop::kBrokerRefused),
            static_cast<uint64_t>(kRefused));
  absl::MutexLock lock(&mu);
  ASSERT_EQ(error_threads.size(), static_cast<size_t>(kRefused));
  for (const std::thread::id& id : error_threads) {
    EXPECT_NE(id, receiver_id);
  }
}

}  // namespace
}  // namespace herald
