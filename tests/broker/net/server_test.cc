// The server, driven by raw ZeroMQ sockets speaking docs/protocol.md (no SDK
// code): sessions, publish/ack/errors, subscribe/deliver within credit,
// limits, bad input, expiry, and the plain PUB/SUB endpoints.
#include "broker/net/server.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "broker/broker.h"
#include "broker/net/framing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/wait_for.h"
#include "zmq.hpp"
#include "zmq_addon.hpp"

namespace herald::net {
namespace {

using ::herald::testing::IsOk;
using ::herald::testing::StatusIs;
using ::herald::testing::WaitFor;
using ::testing::HasSubstr;

constexpr auto kReplyTimeout = std::chrono::seconds(30);

// A DEALER speaking the Herald protocol, for tests.
class RawClient {
 public:
  // `small_receive`: the client holds little that it has not read (RCVHWM
  // 1, a small kernel buffer), so that the server's pipe fills.
  RawClient(zmq::context_t& context, const std::string& endpoint,
            bool small_receive = false)
      : socket_(context, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    if (small_receive) {
      socket_.set(zmq::sockopt::rcvhwm, 1);
      socket_.set(zmq::sockopt::rcvbuf, 4096);
    }
    socket_.connect(endpoint);
  }

  void SendFrames(std::vector<std::string> frames) {
    for (size_t i = 0; i < frames.size(); ++i) {
      (void)socket_.send(zmq::buffer(frames[i]), i + 1 < frames.size()
                                                     ? zmq::send_flags::sndmore
                                                     : zmq::send_flags::none);
    }
  }

  void Send(const v1::Envelope& env, std::vector<std::string> payloads = {}) {
    std::vector<std::string> frames = {MagicFrame(), env.SerializeAsString()};
    for (auto& p : payloads) frames.push_back(std::move(p));
    SendFrames(std::move(frames));
  }

  // The next message: envelope and payload frames; nullopt on timeout.
  struct Reply {
    v1::Envelope env;
    std::vector<std::string> payloads;
  };
  std::optional<Reply> Receive(
      std::chrono::milliseconds timeout = kReplyTimeout) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) == 0) return std::nullopt;
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(socket_, std::back_inserter(frames))) {
      return std::nullopt;
    }
    Reply r;
    if (frames.size() < 2 || !CheckMagic(frames[0].to_string()).ok() ||
        !r.env.ParseFromString(frames[1].to_string())) {
      ADD_FAILURE() << "malformed reply from the server";
      return std::nullopt;
    }
    for (size_t i = 2; i < frames.size(); ++i) {
      r.payloads.push_back(frames[i].to_string());
    }
    return r;
  }

  // Receives until a message with `body` arrives (skipping others).
  std::optional<Reply> ReceiveBody(v1::Envelope::BodyCase body) {
    for (int i = 0; i < 1000; ++i) {
      auto r = Receive();
      if (!r) return std::nullopt;
      if (r->env.body_case() == body) return r;
    }
    return std::nullopt;
  }

  v1::Welcome Hello(const std::string& session_id = "session-0123456",
                    const std::vector<v1::ResumeState>& resume = {}) {
    v1::Envelope env;
    env.set_request_id(NextId());
    env.mutable_hello()->set_session_id(session_id);
    env.mutable_hello()->set_protocol_version(kProtocolVersion);
    for (const v1::ResumeState& r : resume) {
      *env.mutable_hello()->add_resume() = r;
    }
    Send(env);
    auto r = ReceiveBody(v1::Envelope::kWelcome);
    EXPECT_TRUE(r.has_value());
    return r ? r->env.welcome() : v1::Welcome();
  }

  // Subscribes and waits for the Ack (or returns the Error).
  v1::Envelope Subscribe(uint64_t sid, const std::string& pattern,
                         uint64_t credit, uint64_t capacity = 0) {
    v1::Envelope env;
    env.set_request_id(NextId());
    v1::Subscribe* s = env.mutable_subscribe();
    s->set_sid(sid);
    s->set_pattern(pattern);
    s->set_initial_credit(credit);
    s->set_capacity(capacity);
    Send(env);
    auto r = Receive();
    EXPECT_TRUE(r.has_value());
    return r ? r->env : v1::Envelope();
  }

  void Publish(uint64_t batch, const std::vector<std::string>& topics,
               const std::vector<std::string>& payloads, uint64_t request_id) {
    v1::Envelope env;
    env.set_request_id(request_id);
    env.mutable_publish()->set_batch_sequence(batch);
    for (const auto& t : topics) {
      env.mutable_publish()->add_entries()->set_topic(t);
    }
    Send(env, payloads);
  }

  void Credit(uint64_t sid, uint64_t n) {
    v1::Envelope env;
    env.mutable_credit()->set_sid(sid);
    env.mutable_credit()->set_messages(n);
    Send(env);
  }

  // A Ping: a heartbeat (answered at once) or a round trip (answered in
  // order).
  void SendPing(uint64_t request_id, bool heartbeat = false) {
    v1::Envelope env;
    env.set_request_id(request_id);
    env.mutable_ping()->set_heartbeat(heartbeat);
    Send(env);
  }

  // Round trip: everything sent before is processed when it returns.
  bool Flush() {
    const uint64_t id = NextId();
    SendPing(id);
    auto r = ReceiveBody(v1::Envelope::kPong);
    return r && r->env.request_id() == id;
  }

  // The next message with `body` (skipping others, or not with `next`)
  // answers `request_id`.
  void ExpectReply(v1::Envelope::BodyCase body, uint64_t request_id,
                   bool next = false) {
    auto r = next ? Receive() : ReceiveBody(body);
    ASSERT_TRUE(r.has_value()) << "no reply to request " << request_id;
    EXPECT_EQ(r->env.body_case(), body);
    EXPECT_EQ(r->env.request_id(), request_id);
  }

  // Receives Deliver messages until `n` entries came (skipping others);
  // fewer on timeout.
  std::vector<v1::DeliverEntry> ReceiveEntries(size_t n) {
    std::vector<v1::DeliverEntry> entries;
    while (entries.size() < n) {
      auto r = ReceiveBody(v1::Envelope::kDeliver);
      if (!r) break;
      for (const v1::DeliverEntry& e : r->env.deliver().entries()) {
        entries.push_back(e);
      }
    }
    return entries;
  }

  uint64_t NextId() { return ++request_id_; }

 private:
  zmq::socket_t socket_;
  uint64_t request_id_ = 0;
};

// Receives `want.size()` deliveries from `sub`, expecting these payloads in
// order.
void ExpectDeliveries(Subscription& sub,
                      std::initializer_list<absl::string_view> want) {
  for (absl::string_view payload : want) {
    absl::StatusOr<Delivery> d = sub.Receive(absl::Now() + absl::Seconds(30));
    ASSERT_THAT(d, IsOk());
    EXPECT_EQ(d->payload(), payload);
  }
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer({}); }

  void StartServer(ServerOptions options, BrokerOptions broker_options = {}) {
    server_.reset();
    broker_.reset();
    auto broker = Broker::Create(broker_options);
    ASSERT_THAT(broker, IsOk());
    broker_ = std::move(*broker);
    options.sdk_endpoint = "tcp://127.0.0.1:*";
    options.publish_endpoint = "tcp://127.0.0.1:*";
    options.subscribe_endpoint = "tcp://127.0.0.1:*";
    auto server = Server::Start(broker_.get(), options);
    ASSERT_THAT(server, IsOk());
    server_ = std::move(*server);
  }

  std::unique_ptr<RawClient> Connect(bool small_receive = false) {
    return std::make_unique<RawClient>(context_, server_->sdk_endpoint(),
                                       small_receive);
  }

  // A plain SUB on the subscribe endpoint, subscribed to `prefix`, whose
  // receives time out after 10 ms.
  zmq::socket_t PlainSub(const std::string& prefix) {
    zmq::socket_t sub(context_, zmq::socket_type::sub);
    sub.set(zmq::sockopt::linger, 0);
    sub.set(zmq::sockopt::subscribe, prefix);
    sub.set(zmq::sockopt::rcvtimeo, 10);
    sub.connect(server_->subscribe_endpoint());
    return sub;
  }

  // Publishes to `topic` in-process until the plain SUB `sub` receives a
  // message (the slow joiner: its subscription has reached the server);
  // false if none came in 3,000 tries.
  bool PublishUntilReceived(zmq::socket_t& sub, const std::string& topic) {
    for (int i = 0; i < 3000; ++i) {
      if (!broker_->Publish(topic, "warm-up").ok()) return false;
      std::vector<zmq::message_t> frames;
      if (zmq::recv_multipart(sub, std::back_inserter(frames))) return true;
    }
    return false;
  }

  // Restarts the server with a plain feed that closes as soon as no SUB
  // subscribes to anything.
  void StartServerWithoutFeedLinger() {
    ServerOptions options;
    options.plain_feed_linger = absl::ZeroDuration();
    StartServer(options);
  }

  // A plain SUB on "stall." that holds few messages (RCVHWM 10, a small
  // kernel buffer), for tests that stop reading from it.
  zmq::socket_t StallingSub() {
    zmq::socket_t sub(context_, zmq::socket_type::sub);
    sub.set(zmq::sockopt::linger, 0);
    sub.set(zmq::sockopt::rcvhwm, 10);
    sub.set(zmq::sockopt::rcvbuf, 64 * 1024);
    sub.set(zmq::sockopt::rcvtimeo, 10);
    sub.set(zmq::sockopt::subscribe, "stall.");
    sub.connect(server_->subscribe_endpoint());
    return sub;
  }

  // With a SUB that stopped reading: publishes messages of 16 KiB to
  // "stall.big" in steps of `step`, each once the server has taken the last
  // step from the feed, until a step stays queued (the SUB's pipes, ZeroMQ's
  // high-water mark and then the kernel's buffers, are full). Adds the
  // messages published to `*published`; false if no stall came.
  bool PublishUntilThePlainFeedStalls(int step, uint64_t* published) {
    const std::string big(16 * 1024, 'x');
    for (int round = 0; round < 400; ++round) {
      for (int i = 0; i < step; ++i) {
        if (!broker_->Publish("stall.big", big).ok()) return false;
        ++*published;
      }
      const bool taken = WaitFor(
          [&] {
            const std::optional<v1::SubscriptionStats> feed = PlainFeed();
            return feed.has_value() && feed->queued() == 0;
          },
          absl::Seconds(1));
      if (!taken) return true;
    }
    return false;
  }

  // The broker's stats of the subscribe endpoint's feed subscription, if
  // it is open.
  std::optional<v1::SubscriptionStats> PlainFeed() {
    const v1::BrokerStats stats = broker_->Stats();
    for (const v1::SubscriptionStats& s : stats.subscriptions()) {
      if (s.name() == "plain subscribe endpoint") return s;
    }
    return std::nullopt;
  }

  // An in-process kBlock subscription to "blk.t" with room for one message.
  absl::StatusOr<Subscription> BlockQueueOfOne(absl::Duration block_timeout) {
    SubscriptionOptions options;
    options.overflow = OverflowPolicy::kBlock;
    options.queue_capacity = 1;
    options.block_timeout = block_timeout;
    return broker_->Subscribe("blk.t", options);
  }

  // A client of session `session_id` whose batch (request 5) of "a" then
  // "b" to "blk.t" is blocked: "a" filled BlockQueueOfOne()'s queue and "b"
  // waits for room.
  std::unique_ptr<RawClient> BlockedPublisher(
      const std::string& session_id = "session-0123456") {
    auto client = Connect();
    client->Hello(session_id);
    client->Publish(1, {"blk.t", "blk.t"}, {"a", "b"}, /*request_id=*/5);
    EXPECT_TRUE(
        WaitFor([&] { return server_->Stats().publishes_deferred() == 1; }));
    return client;
  }

  // The broker's stats of the subscription to `pattern` (the remote one).
  v1::SubscriptionStats SubscriptionStatsFor(const std::string& pattern) {
    const v1::BrokerStats stats = broker_->Stats();
    for (const v1::SubscriptionStats& s : stats.subscriptions()) {
      if (s.pattern() == pattern) return s;
    }
    return v1::SubscriptionStats();
  }

  zmq::context_t context_{1};
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<Server> server_;
};

TEST(ServerStartTest, RefusesBadOptionsWithAClearError) {
  absl::StatusOr<std::unique_ptr<Broker>> broker = Broker::Create();
  ASSERT_THAT(broker, IsOk());
  auto with = [](auto change) {
    ServerOptions o;
    o.sdk_endpoint = "tcp://127.0.0.1:*";
    o.publish_endpoint = "tcp://127.0.0.1:*";
    o.subscribe_endpoint = "tcp://127.0.0.1:*";
    change(o);
    return o;
  };
  struct Case {
    ServerOptions options;
    absl::StatusCode code;
    std::string says;
  };
  const Case cases[] = {
      {with([](ServerOptions& o) {
         o.sdk_endpoint = o.publish_endpoint = o.subscribe_endpoint = "";
       }),
       absl::StatusCode::kInvalidArgument, "every endpoint is empty"},
      {with([](ServerOptions& o) { o.max_clients = 0; }),
       absl::StatusCode::kInvalidArgument, "must be > 0"},
      {with([](ServerOptions& o) { o.max_credit = 0; }),
       absl::StatusCode::kInvalidArgument, "must be > 0"},
      {with([](ServerOptions& o) { o.plain_queue_capacity = 0; }),
       absl::StatusCode::kInvalidArgument, "must be > 0"},
      {with([](ServerOptions& o) { o.max_held_bytes_per_client = 0; }),
       absl::StatusCode::kInvalidArgument, "max_held_bytes_per_client"},
      {with([](ServerOptions& o) { o.session_ttl = absl::ZeroDuration(); }),
       absl::StatusCode::kInvalidArgument, "session_ttl"},
      {with([](ServerOptions& o) {
         o.plain_feed_linger = -absl::Milliseconds(1);
       }),
       absl::StatusCode::kInvalidArgument, "plain_feed_linger"},
      {with([&](ServerOptions& o) {
         o.plain_queue_capacity = (*broker)->options().max_queue_capacity;
       }),
       absl::StatusCode::kOk, ""},
      {with([&](ServerOptions& o) {
         o.plain_queue_capacity = (*broker)->options().max_queue_capacity + 1;
       }),
       absl::StatusCode::kInvalidArgument, "max_queue_capacity"},
      {with([](ServerOptions& o) { o.subscribe_endpoint = "nonsense"; }),
       absl::StatusCode::kUnavailable, "subscribe"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(Server::Start(broker->get(), c.options),
                StatusIs(c.code, HasSubstr(c.says)))
        << c.says;
  }
  EXPECT_THAT(Server::Start(nullptr, with([](ServerOptions&) {})),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Without the subscribe endpoint there is no feed to size.
  EXPECT_THAT(Server::Start(broker->get(), with([&](ServerOptions& o) {
                              o.subscribe_endpoint = "";
                              o.plain_queue_capacity =
                                  (*broker)->options().max_queue_capacity + 1;
                            })),
              IsOk());
}

TEST_F(ServerTest, BindsOsChosenPortsAndReportsThem) {
  EXPECT_THAT(server_->sdk_endpoint(), HasSubstr("tcp://127.0.0.1:"));
  EXPECT_NE(server_->sdk_endpoint(), "tcp://127.0.0.1:*");
  EXPECT_NE(server_->sdk_endpoint(), server_->publish_endpoint());
  EXPECT_NE(server_->epoch(), 0u);
}

TEST_F(ServerTest, HelloGetsWelcomeWithEpochAndLimits) {
  auto client = Connect();
  const v1::Welcome w = client->Hello();
  EXPECT_EQ(w.broker_epoch(), server_->epoch());
  EXPECT_EQ(w.max_message_bytes(), broker_->options().max_message_bytes);
  EXPECT_EQ(w.max_credit(), ServerOptions().max_credit);
  EXPECT_FALSE(w.resumed());
  EXPECT_EQ(server_->Stats().sessions_active(), 1u);
  // The same session again on the same connection: resumed.
  const v1::Welcome again = client->Hello();
  EXPECT_TRUE(again.resumed());
  EXPECT_FALSE(again.resume_applied());  // The same connection: nothing lost.
}

TEST_F(ServerTest, PublishAndDeliverWithinCredit) {
  auto sub = Connect();
  auto pub = Connect();
  sub->Hello("subscriber-00001");
  pub->Hello("publisher-000001");
  constexpr uint64_t kSid = 7;
  const v1::Envelope ack = sub->Subscribe(kSid, "orders.>", /*credit=*/3);
  ASSERT_EQ(ack.body_case(), v1::Envelope::kAck);
  EXPECT_EQ(ack.ack().sid(), kSid);
  EXPECT_EQ(ack.ack().broker_epoch(), server_->epoch());

  std::vector<std::string> topics, payloads;
  for (int i = 0; i < 5; ++i) {
    topics.push_back("orders.eu");
    payloads.push_back(absl::StrCat("order-", i));
  }
  const uint64_t before_ns =
      static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  pub->Publish(/*batch=*/1, topics, payloads, /*request_id=*/99);
  auto acked = pub->ReceiveBody(v1::Envelope::kAck);
  ASSERT_TRUE(acked.has_value());
  EXPECT_EQ(acked->env.request_id(), 99u);
  EXPECT_EQ(acked->env.ack().acked_batch_sequence(), 1u);

  // Exactly three arrive (the credit), in order, with their sequence numbers.
  std::vector<std::string> got;
  while (got.size() < 3) {
    auto d = sub->ReceiveBody(v1::Envelope::kDeliver);
    ASSERT_TRUE(d.has_value());
    ASSERT_EQ(d->payloads.size(),
              static_cast<size_t>(d->env.deliver().entries_size()));
    for (int i = 0; i < d->env.deliver().entries_size(); ++i) {
      const v1::DeliverEntry& e = d->env.deliver().entries(i);
      EXPECT_EQ(e.sid(), kSid);
      EXPECT_EQ(e.topic(), "orders.eu");
      EXPECT_EQ(e.sequence(), got.size() + 1);
      // Stamped when the batch entered the broker.
      EXPECT_GE(e.publish_time_unix_ns(), before_ns);
      EXPECT_LE(e.publish_time_unix_ns(),
                static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())));
      got.push_back(d->payloads[i]);
    }
  }
  EXPECT_EQ(got.size(), 3u);
  EXPECT_FALSE(sub->Receive(std::chrono::milliseconds(50)).has_value());
  // More credit releases the rest.
  sub->Credit(kSid, 10);
  while (got.size() < 5) {
    auto d = sub->ReceiveBody(v1::Envelope::kDeliver);
    ASSERT_TRUE(d.has_value());
    for (auto& p : d->payloads) got.push_back(p);
  }
  EXPECT_THAT(got, ::testing::ElementsAre("order-0", "order-1", "order-2",
                                          "order-3", "order-4"));
}

// A message fanned out to several remote subscriptions in one drain pass
// goes out as copies of one shared ZeroMQ frame (see DrainReady()): each
// subscription still gets every payload whole and in order, and each copy
// lives on its own after the others are sent (ASan checks the frees).
TEST_F(ServerTest, AMessageFannedOutToSeveralRemoteSubscriptionsReachesEach) {
  auto sub_a = Connect();
  auto sub_b = Connect();
  auto pub = Connect();
  sub_a->Hello("subscriber-0000a");
  sub_b->Hello("subscriber-0000b");
  pub->Hello("publisher-000001");
  // Three subscriptions: two on one connection, one on another.
  ASSERT_EQ(sub_a->Subscribe(1, "fan.>", 1000).body_case(), v1::Envelope::kAck);
  ASSERT_EQ(sub_a->Subscribe(2, "fan.*", 1000).body_case(), v1::Envelope::kAck);
  ASSERT_EQ(sub_b->Subscribe(3, "fan.>", 1000).body_case(), v1::Envelope::kAck);

  std::vector<std::string> topics, payloads;
  // More messages than one drain pass takes (256), so that the pass's
  // direct-mapped frame cache also sees messages evict one another.
  for (int i = 0; i < 400; ++i) {
    topics.push_back("fan.t");
    // Sizes on both sides of ZeroMQ's inline-message limit (33 bytes).
    payloads.push_back(std::string(static_cast<size_t>(1 + (i * 97) % 700),
                                   static_cast<char>('a' + i % 26)));
  }
  pub->Publish(/*batch=*/1, topics, payloads, /*request_id=*/7);
  ASSERT_TRUE(pub->ReceiveBody(v1::Envelope::kAck).has_value());

  auto collect = [&](RawClient& client,
                     std::map<uint64_t, std::vector<std::string>>* by_sid,
                     size_t want) {
    size_t got = 0;
    while (got < want) {
      auto d = client.ReceiveBody(v1::Envelope::kDeliver);
      ASSERT_TRUE(d.has_value()) << "after " << got << " of " << want;
      ASSERT_EQ(d->payloads.size(),
                static_cast<size_t>(d->env.deliver().entries_size()));
      for (int i = 0; i < d->env.deliver().entries_size(); ++i) {
        (*by_sid)[d->env.deliver().entries(i).sid()].push_back(d->payloads[i]);
        ++got;
      }
    }
  };
  std::map<uint64_t, std::vector<std::string>> a, b;
  ASSERT_NO_FATAL_FAILURE(collect(*sub_a, &a, 2 * payloads.size()));
  ASSERT_NO_FATAL_FAILURE(collect(*sub_b, &b, payloads.size()));
  EXPECT_EQ(a[1], payloads);
  EXPECT_EQ(a[2], payloads);
  EXPECT_EQ(b[3], payloads);
  // The I/O thread counts a Deliver after sending it: wait, don't race it.
  EXPECT_TRUE(WaitFor([&] {
    return server_->Stats().delivered() == 3 * payloads.size();
  })) << server_->Stats().delivered();
}

// Batches that ask no Ack (request id 0) get none, and the next Ack, or a
// Pong, reports the session's publish progress over all of them.
TEST_F(ServerTest, AcksAndPongsReportTheSessionsPublishProgress) {
  auto pub = Connect();
  pub->Hello("publisher-000001");
  pub->Publish(/*batch=*/1, {"p.t", "p.t"}, {"a", "b"}, /*request_id=*/0);
  pub->Publish(/*batch=*/2, {"p.t"}, {"c"}, /*request_id=*/0);
  pub->Publish(/*batch=*/3, {"p.t", "p.t", "p.t"}, {"d", "e", "f"},
               /*request_id=*/41);
  auto acked = pub->ReceiveBody(v1::Envelope::kAck);
  ASSERT_TRUE(acked.has_value());
  EXPECT_EQ(acked->env.request_id(), 41u);  // The first Ack is batch 3's.
  EXPECT_EQ(acked->env.ack().acked_batch_sequence(), 3u);
  EXPECT_EQ(acked->env.ack().batches_processed(), 3u);
  EXPECT_EQ(acked->env.ack().entries_processed(), 6u);

  pub->Publish(/*batch=*/4, {"p.t"}, {"g"}, /*request_id=*/0);
  pub->SendPing(/*request_id=*/42);
  auto pong = pub->ReceiveBody(v1::Envelope::kPong);
  ASSERT_TRUE(pong.has_value());
  EXPECT_EQ(pong->env.request_id(), 42u);
  EXPECT_EQ(pong->env.pong().acked_batch_sequence(), 4u);
  EXPECT_EQ(pong->env.pong().batches_processed(), 4u);
  EXPECT_EQ(pong->env.pong().entries_processed(), 7u);
}

TEST_F(ServerTest, SlowRemoteSubscriberDropsAreCountedExactly) {
  constexpr uint64_t kCapacity = 10;
  constexpr uint64_t kCredit = 4;
  constexpr int kPublished = 50;
  auto sub = Connect();
  sub->Hello();
  ASSERT_EQ(sub->Subscribe(1, "t", kCredit, kCapacity).body_case(),
            v1::Envelope::kAck);
  for (int i = 0; i < kPublished; ++i) {
    ASSERT_THAT(broker_->Publish("t", absl::StrCat(i)), IsOk());
  }
  // The credit's worth went out; the queue holds its capacity; the rest
  // were dropped as queue_full, and every message is accounted for.
  uint64_t received = 0;
  while (received < kCredit) {
    auto d = sub->ReceiveBody(v1::Envelope::kDeliver);
    ASSERT_TRUE(d.has_value());
    received += d->payloads.size();
  }
  ASSERT_TRUE(WaitFor(
      [&] { return SubscriptionStatsFor("t").delivered() == kCredit; }));
  const v1::SubscriptionStats remote = SubscriptionStatsFor("t");
  // Ground truth: the test published kPublished and received kCredit. How
  // many were queued when the I/O thread took its kCredit depends on timing;
  // the rest of the queue's overflow must be counted as queue_full.
  EXPECT_EQ(remote.matched(), static_cast<uint64_t>(kPublished));
  EXPECT_EQ(remote.delivered(), received);
  EXPECT_LE(remote.queued(), kCapacity);
  EXPECT_GE(remote.dropped().queue_full(), kPublished - kCredit - kCapacity);
  EXPECT_EQ(
      remote.matched(),
      remote.delivered() + remote.dropped().queue_full() + remote.queued());
  EXPECT_EQ(received, kCredit);
  const uint64_t queued = remote.queued();

  // Unsubscribe returns the final totals, queued now abandoned.
  v1::Envelope unsub;
  unsub.set_request_id(5);
  unsub.mutable_unsubscribe()->set_sid(1);
  sub->Send(unsub);
  auto ack = sub->ReceiveBody(v1::Envelope::kAck);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->env.ack().totals().abandoned(), queued);
  EXPECT_EQ(ack->env.ack().totals().matched(),
            static_cast<uint64_t>(kPublished));
}

TEST_F(ServerTest, RefusedEntriesGetTheirOwnErrorAndTheRestArePublished) {
  auto in_process = broker_->Subscribe(">");
  ASSERT_THAT(in_process, IsOk());
  auto pub = Connect();
  pub->Hello();
  pub->Publish(4, {"good.one", "bad..topic", "good.two"}, {"1", "2", "3"}, 8);
  auto error = pub->ReceiveBody(v1::Envelope::kError);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->env.error().status_code(),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(error->env.error().batch_sequence(), 4u);
  EXPECT_EQ(error->env.error().entry_index(), 1u);
  EXPECT_THAT(error->env.error().message(), HasSubstr("empty token"));
  auto ack = pub->ReceiveBody(v1::Envelope::kAck);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->env.ack().acked_batch_sequence(), 4u);
  EXPECT_THAT(in_process->TryReceive(), IsOk());
  EXPECT_THAT(in_process->TryReceive(), IsOk());
  EXPECT_THAT(in_process->TryReceive(),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(server_->Stats().publish_refused(), 1u);
  EXPECT_EQ(server_->Stats().publish_accepted(), 2u);
}

TEST_F(ServerTest, OversizedPayloadBelowTheHardCapGetsAnError) {
  BrokerOptions b;
  b.max_message_bytes = 1000;
  StartServer({}, b);
  auto pub = Connect();
  pub->Hello();
  pub->Publish(1, {"t"}, {std::string(5000, 'x')}, 1);
  auto error = pub->ReceiveBody(v1::Envelope::kError);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->env.error().status_code(),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(error->env.error().message(), HasSubstr("max_message_bytes"));
  EXPECT_EQ(server_->Stats().oversized(), 1u);
  // Topic + payload just over the limit is refused by the broker itself.
  pub->Publish(2, {"t"}, {std::string(1000, 'x')}, 2);
  error = pub->ReceiveBody(v1::Envelope::kError);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->env.error().entry_index(), 0u);
  // The session still works.
  EXPECT_TRUE(pub->Flush());
}

TEST_F(ServerTest, OversizedFrameBeyondTheHardCapDropsOnlyThatConnection) {
  BrokerOptions b;
  b.max_message_bytes = 1000;
  StartServer({}, b);
  auto bad = Connect();
  auto good = Connect();
  bad->Hello("bad-session-0001");
  good->Hello("good-session-001");
  bad->Publish(1, {"t"}, {std::string(3 << 20, 'x')}, 1);  // Over 1000 + 1MiB.
  ASSERT_TRUE(WaitFor([&] { return server_->Stats().disconnects() >= 1; }));
  EXPECT_TRUE(good->Flush());
}

TEST_F(ServerTest, ASessionResumedOnANewConnectionGetsItsCreditAndLossBack) {
  constexpr char kSession[] = "resume-session-1";
  auto first = Connect();
  first->Hello(kSession);
  ASSERT_EQ(first->Subscribe(1, "r.t", /*credit=*/4).body_case(),
            v1::Envelope::kAck);
  for (int i = 0; i < 10; ++i) {
    ASSERT_THAT(broker_->Publish("r.t", absl::StrCat(i)), IsOk());
  }
  // The whole credit goes out: 4 entries, sequences 1 to 4.
  const std::vector<v1::DeliverEntry> before = first->ReceiveEntries(4);
  ASSERT_EQ(before.size(), 4u);
  ASSERT_TRUE(WaitFor([&] { return server_->Stats().delivered() == 4; }));
  first.reset();  // The connection breaks.

  // The same client on a new connection says it received only 2 of them
  // (the other 2 were in transit) and returned no credit.
  auto second = Connect();
  v1::ResumeState state;
  state.set_sid(1);
  state.set_received(2);
  state.set_returned(0);
  EXPECT_TRUE(second->Hello(kSession, {state}).resumed());

  // Credit is 4 - 2 in flight = 2 again, and the next delivery reports the
  // 2 lost ones as missed. Without the resume state the credit would stay
  // at 0 for good and the loss would be silent.
  const std::vector<v1::DeliverEntry> after = second->ReceiveEntries(2);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].sequence(), 5u);
  EXPECT_EQ(after[0].missed(), 2u);
  EXPECT_EQ(after[1].sequence(), 6u);
  EXPECT_EQ(after[1].missed(), 0u);
  EXPECT_EQ(server_->Stats().deliveries_lost(), 2u);
  // Exactly 2: nothing more comes until credit is returned.
  ASSERT_TRUE(second->Flush());
  EXPECT_EQ(server_->Stats().delivered(), 6u);

  second->Credit(1, 4);
  const std::vector<v1::DeliverEntry> rest = second->ReceiveEntries(4);
  ASSERT_EQ(rest.size(), 4u);
  EXPECT_EQ(rest.back().sequence(), 10u);
}

// A Deliver the ROUTER cannot route (the connection is gone: EHOSTUNREACH)
// is counted lost at once, not only if the client comes back: the core
// counts those messages delivered, and a session that then expires would
// otherwise leave them counted nowhere.
TEST_F(ServerTest, ADeliverToAConnectionFoundGoneIsCountedLostAtOnce) {
  constexpr char kSession[] = "vanished-sess-01";
  auto first = Connect();
  first->Hello(kSession);
  ASSERT_EQ(first->Subscribe(1, "gone.t", /*credit=*/8).body_case(),
            v1::Envelope::kAck);
  first.reset();  // The connection breaks; the session stays.
  ASSERT_TRUE(WaitFor([&] { return server_->Stats().disconnects() >= 1; }));
  // Published until a send finds the connection gone and detaches the
  // session (ZeroMQ may still take the first sends into the dying pipe).
  int published = 0;
  ASSERT_TRUE(WaitFor([&] {
    if (published < 8) {
      EXPECT_THAT(broker_->Publish("gone.t", absl::StrCat(published)), IsOk());
      ++published;
    }
    return server_->Stats().sessions_detached() == 1;
  }));
  const v1::ServerStats server = server_->Stats();
  EXPECT_GE(server.deliveries_lost(), 1u);
  EXPECT_GE(server.send_failures(), 1u);
  // Every message the core handed over went out or is counted lost.
  std::optional<v1::SubscriptionStats> core;
  const v1::BrokerStats broker = broker_->Stats();
  for (const v1::SubscriptionStats& s : broker.subscriptions()) {
    if (s.pattern() == "gone.t") core = s;
  }
  ASSERT_TRUE(core.has_value());
  EXPECT_EQ(core->delivered(), server.delivered() + server.deliveries_lost());
  EXPECT_EQ(core->matched(), static_cast<uint64_t>(published));

  // Resumed, saying it received everything that went out: the lost ones are
  // reported missed on the next delivery, and counted once.
  auto second = Connect();
  v1::ResumeState state;
  state.set_sid(1);
  state.set_received(server.delivered());
  const v1::Welcome moved = second->Hello(kSession, {state});
  EXPECT_TRUE(moved.resumed());
  EXPECT_TRUE(moved.resume_applied());  // A new connection.
  ASSERT_THAT(broker_->Publish("gone.t", "after"), IsOk());
  const uint64_t queued = core->queued() + 1;
  const std::vector<v1::DeliverEntry> after = second->ReceiveEntries(queued);
  ASSERT_EQ(after.size(), queued);
  EXPECT_EQ(after[0].missed(), server.deliveries_lost());
  EXPECT_EQ(server_->Stats().deliveries_lost(), server.deliveries_lost());
}

// A Deliver lost with a broken connection reported drops in its `missed`:
// the resume reports them again, with the lost deliveries, so that every
// message is accounted for.
TEST_F(ServerTest, AResumeReportsTheDropsALostDeliverCarried) {
  constexpr char kSession[] = "lost-missed-ses1";
  auto first = Connect();
  first->Hello(kSession);
  ASSERT_EQ(
      first->Subscribe(1, "lm.t", /*credit=*/1, /*capacity=*/1).body_case(),
      v1::Envelope::kAck);
  // Sequences are admission numbers: a drop takes none.
  ASSERT_THAT(broker_->Publish("lm.t", "a"), IsOk());  // Sequence 1, sent.
  ASSERT_EQ(first->ReceiveEntries(1).size(), 1u);
  ASSERT_THAT(broker_->Publish("lm.t", "b"), IsOk());  // 2: queued, no credit.
  ASSERT_THAT(broker_->Publish("lm.t", "c"), IsOk());  // Dropped: full.
  first->Credit(1, 1);                                 // b goes out.
  ASSERT_TRUE(WaitFor([&] { return server_->Stats().delivered() == 2; }));
  ASSERT_THAT(broker_->Publish("lm.t", "d"), IsOk());  // 3, missed 1.
  first->Credit(1, 1);                                 // d goes out.
  ASSERT_TRUE(WaitFor([&] { return server_->Stats().delivered() == 3; }));
  first.reset();  // b and d are lost with the connection, unread.

  auto second = Connect();
  v1::ResumeState state;
  state.set_sid(1);
  state.set_received(1);
  state.set_returned(2);
  state.set_missed_received(0);
  ASSERT_TRUE(second->Hello(kSession, {state}).resumed());
  ASSERT_THAT(broker_->Publish("lm.t", "e"), IsOk());  // 4.
  const std::vector<v1::DeliverEntry> after = second->ReceiveEntries(1);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].sequence(), 4u);
  // b and d lost, and c's drop, which d reported.
  EXPECT_EQ(after[0].missed(), 3u);
  EXPECT_EQ(server_->Stats().deliveries_lost(), 2u);
}

// A client that returns credit for what it has not read can fill its pipe
// (ZeroMQ refuses the send: EAGAIN). The Deliver is kept and goes out when
// the client reads again: nothing is lost.
// Publishes 1 KiB messages to `topic`, which `client` subscribes to as sid
// 1 without reading, returning credit for every message the server sends,
// until ZeroMQ refuses a Deliver (its pipe is full). Sets how many were
// published and how much credit was returned.
void FillPipe(Broker& broker, Server& server, RawClient& client,
              const std::string& topic, uint64_t* published,
              uint64_t* credited) {
  const std::string payload(1024, 'x');
  ASSERT_TRUE(WaitFor([&] {
    for (int i = 0; i < 256 && *published < 200000; ++i) {
      EXPECT_THAT(broker.Publish(topic, payload), IsOk());
      ++*published;
      const uint64_t sent = server.Stats().delivered();
      if (sent > *credited) {
        client.Credit(1, sent - *credited);
        *credited = sent;
      }
    }
    return server.Stats().send_failures() > 0;
  })) << "published "
      << *published;
  ::testing::Test::RecordProperty("published_until_refused",
                                  static_cast<int>(*published));
}

TEST_F(ServerTest, ADeliverAFullPipeRefusesGoesOutLaterAndNothingIsLost) {
  ServerOptions o;
  o.max_credit = 8;
  o.max_subscriptions_per_client = 1;  // A send high-water mark of 1000.
  StartServer(o);
  auto client = Connect(/*small_receive=*/true);
  client->Hello();
  ASSERT_EQ(
      client->Subscribe(1, "full.t", /*credit=*/8, size_t{1} << 18).body_case(),
      v1::Envelope::kAck);
  uint64_t published = 0;
  uint64_t credited = 0;  // Credit returned for what the server sent.
  FillPipe(*broker_, *server_, *client, "full.t", &published, &credited);
  if (HasFatalFailure()) return;

  // The client reads everything, in order, returning credit only for what it
  // reads beyond what it already returned.
  uint64_t received = 0;
  uint64_t missed = 0;
  while (received < published) {
    auto d = client->ReceiveBody(v1::Envelope::kDeliver);
    ASSERT_TRUE(d.has_value())
        << "received " << received << " of " << published;
    for (const v1::DeliverEntry& e : d->env.deliver().entries()) {
      missed += e.missed();
      ++received;
      ASSERT_EQ(e.sequence(), received + missed);
    }
    if (received > credited) {
      client->Credit(1, received - credited);
      credited = received;
    }
  }
  EXPECT_EQ(received, published);
  EXPECT_EQ(missed, 0u);
  // The server counts a send once ZeroMQ took it: maybe after it arrived.
  EXPECT_TRUE(
      WaitFor([&] { return server_->Stats().delivered() == published; }));
  const v1::ServerStats server = server_->Stats();
  EXPECT_EQ(server.deliveries_lost(), 0u);
  EXPECT_GE(server.send_failures(), 1u);
}

// The connection breaks with the pipe full: what was on it is lost, and
// reported missed by the first delivery on the resumed session's new
// connection, whether that is the Deliver the full pipe refused or one
// made after it.
TEST_F(ServerTest, AResumeAfterAFullPipeReportsWhatTheOldConnectionLost) {
  ServerOptions o;
  o.max_credit = 8;
  o.max_subscriptions_per_client = 1;
  StartServer(o);
  constexpr char kSession[] = "full-pipe-sess-1";
  auto first = Connect(/*small_receive=*/true);
  first->Hello(kSession);
  ASSERT_EQ(
      first->Subscribe(1, "full.r", /*credit=*/8, size_t{1} << 18).body_case(),
      v1::Envelope::kAck);
  uint64_t published = 0;
  uint64_t credited = 0;
  FillPipe(*broker_, *server_, *first, "full.r", &published, &credited);
  if (HasFatalFailure()) return;
  first.reset();  // Nothing of it was read.

  auto second = Connect();
  v1::ResumeState state;
  state.set_sid(1);
  state.set_received(0);
  state.set_returned(credited);
  EXPECT_TRUE(second->Hello(kSession, {state}).resumed());
  uint64_t received = 0;
  uint64_t missed = 0;
  uint64_t returned = 0;  // On the new connection.
  while (received + missed < published) {
    auto d = second->ReceiveBody(v1::Envelope::kDeliver);
    ASSERT_TRUE(d.has_value()) << "received " << received << ", missed "
                               << missed << " of " << published;
    for (const v1::DeliverEntry& e : d->env.deliver().entries()) {
      missed += e.missed();
      ++received;
      ASSERT_EQ(e.sequence(), received + missed);
    }
    second->Credit(1, received - returned);
    returned = received;
  }
  EXPECT_EQ(received + missed, published);
  EXPECT_GT(missed, 0u);
  const v1::ServerStats server = server_->Stats();
  EXPECT_EQ(server.deliveries_lost(), missed);
  // `delivered` counts what was handed to ZeroMQ, lost on the wire or not
  // (counted once ZeroMQ took it: maybe after it arrived).
  EXPECT_TRUE(
      WaitFor([&] { return server_->Stats().delivered() >= received; }));
}

// DESIGN.md: kBlock toward a remote publisher withholds that session's
// publish credit; the I/O thread never waits. The batch's Ack, and what the
// session sends after it, wait until the queue has room.
TEST_F(ServerTest, ARemotePublishToAFullBlockQueueWaitsForRoom) {
  absl::StatusOr<Subscription> sub =
      BlockQueueOfOne(absl::Seconds(10));  // Not reached here.
  ASSERT_THAT(sub, IsOk());
  auto client = Connect();
  client->Hello();
  client->Publish(1, {"blk.t", "blk.t", "blk.t"}, {"a", "b", "c"},
                  /*request_id=*/5);
  ASSERT_TRUE(
      WaitFor([&] { return server_->Stats().publishes_deferred() == 1; }));
  client->SendPing(6);  // Sent after the blocked batch: answered after it.

  // The consumer makes room one message at a time; nothing is dropped.
  ExpectDeliveries(*sub, {"a", "b", "c"});
  client->ExpectReply(v1::Envelope::kAck, 5, /*next=*/true);
  client->ExpectReply(v1::Envelope::kPong, 6, /*next=*/true);
  absl::StatusOr<SubscriptionTotals> totals = sub->Totals();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->matched, 3u);
  EXPECT_EQ(totals->delivered, 3u);
  EXPECT_EQ(totals->dropped(DropReason::kBlockTimeout), 0u);
  EXPECT_GE(server_->Stats().publishes_deferred(), 1u);
}

TEST_F(ServerTest, AHeartbeatIsAnsweredAtOnceWhileThePublishIsBlocked) {
  absl::StatusOr<Subscription> sub = BlockQueueOfOne(absl::Seconds(10));
  ASSERT_THAT(sub, IsOk());
  auto client = BlockedPublisher();
  client->SendPing(6);                      // Held: answered after the batch.
  client->SendPing(7, /*heartbeat=*/true);  // Answered at once.
  client->ExpectReply(v1::Envelope::kPong, 7, /*next=*/true);
  // Still blocked: nothing was taken beyond the first message.
  absl::StatusOr<SubscriptionTotals> totals = sub->Totals();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->queued, 1u);

  ExpectDeliveries(*sub, {"a", "b"});
  client->ExpectReply(v1::Envelope::kAck, 5, /*next=*/true);
  client->ExpectReply(v1::Envelope::kPong, 6, /*next=*/true);
}

TEST_F(ServerTest, ARemotePublishToAFullBlockQueueGivesUpAfterItsTimeout) {
  absl::StatusOr<Subscription> sub = BlockQueueOfOne(absl::Milliseconds(20));
  ASSERT_THAT(sub, IsOk());
  auto client = Connect();
  client->Hello();
  client->Publish(1, {"blk.t", "blk.t"}, {"a", "b"}, /*request_id=*/5);
  // Nobody consumes: the second waits its block_timeout, then is dropped,
  // counted, and the batch is acknowledged.
  client->ExpectReply(v1::Envelope::kAck, 5);
  absl::StatusOr<SubscriptionTotals> totals = sub->Totals();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->matched, 2u);
  EXPECT_EQ(totals->queued, 1u);
  EXPECT_EQ(totals->dropped(DropReason::kBlockTimeout), 1u);
  absl::StatusOr<Delivery> d = sub->Receive(absl::Now());
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->payload(), "a");
}

// The publisher's connection breaks while its push waits, and it resumes
// the session from a new one: the batch finishes there, and its Ack and what
// waited behind it go to the new connection.
TEST_F(ServerTest, ABlockedPublishMovesWithItsSessionToANewConnection) {
  absl::StatusOr<Subscription> sub = BlockQueueOfOne(absl::Seconds(10));
  ASSERT_THAT(sub, IsOk());
  constexpr char kSession[] = "blocked-session1";
  auto first = BlockedPublisher(kSession);
  first->SendPing(6);  // Held behind the batch.
  // Hello 3 frames, Publish 5, Ping 3: the Ping has been read and held.
  ASSERT_TRUE(
      WaitFor([&] { return server_->Stats().frames_received() >= 11; }));
  first.reset();

  auto second = Connect();
  EXPECT_TRUE(second->Hello(kSession).resumed());
  ExpectDeliveries(*sub, {"a", "b"});
  second->ExpectReply(v1::Envelope::kAck, 5);
  second->ExpectReply(v1::Envelope::kPong, 6);
}

// The publisher's session ends while its push waits: the push gives up,
// counted, and the subscription's identity holds.
TEST_F(ServerTest, ABlockedPublishersGoodbyeSettlesItsPush) {
  absl::StatusOr<Subscription> sub = BlockQueueOfOne(absl::Seconds(10));
  ASSERT_THAT(sub, IsOk());
  auto client = BlockedPublisher();
  v1::Envelope bye;
  bye.mutable_goodbye();
  client->Send(bye);
  ASSERT_TRUE(WaitFor([&] { return server_->Stats().sessions_closed() == 1; }));
  absl::StatusOr<SubscriptionTotals> totals = sub->Totals();
  ASSERT_THAT(totals, IsOk());
  EXPECT_EQ(totals->matched, 2u);
  EXPECT_EQ(totals->queued, 1u);
  EXPECT_EQ(totals->dropped(DropReason::kBlockTimeout), 1u);
}

// A Publish refused as a whole before it was processed: which batch, with
// `code`, and no Ack will settle it.
void ExpectRefusedUnprocessed(const v1::Error& error, absl::StatusCode code,
                              uint64_t batch) {
  EXPECT_EQ(error.status_code(), static_cast<int>(code));
  EXPECT_EQ(error.batch_sequence(), batch);
  EXPECT_TRUE(error.whole_batch());
  EXPECT_TRUE(error.unprocessed());
}

TEST_F(ServerTest, APublishRefusedWhileStoppingCountsEachEntry) {
  auto pub = Connect();
  pub->Hello();
  server_->StopIntake();
  pub->Publish(1, {"s.a", "s.b", "s.c"}, {"1", "2", "3"}, /*request_id=*/9);
  auto error = pub->ReceiveBody(v1::Envelope::kError);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->env.request_id(), 9u);
  ExpectRefusedUnprocessed(error->env.error(), absl::StatusCode::kUnavailable,
                           /*batch=*/1);
  // Per entry, as a refusal by the broker counts.
  EXPECT_EQ(server_->Stats().publish_refused(), 3u);
  EXPECT_EQ(server_->Stats().publish_accepted(), 0u);
}

// Past the messages a session may have waiting behind a blocked publish, a
// Publish is refused at once, saying which batch (even with no Ack asked),
// and counted per entry; a heartbeat is still answered.
TEST_F(ServerTest, APublishPastTheHeldLimitIsRefusedUnprocessed) {
  absl::StatusOr<Subscription> sub = BlockQueueOfOne(absl::Seconds(10));
  ASSERT_THAT(sub, IsOk());
  auto client = BlockedPublisher();
  constexpr int kHeldLimit = 1024;  // kMaxHeldMessages in server.cc.
  for (int i = 0; i < kHeldLimit; ++i) client->SendPing(100 + i);
  client->Publish(2, {"blk.t", "blk.t"}, {"c", "d"}, /*request_id=*/0);
  auto error = client->ReceiveBody(v1::Envelope::kError);
  ASSERT_TRUE(error.has_value());
  ExpectRefusedUnprocessed(error->env.error(),
                           absl::StatusCode::kResourceExhausted, /*batch=*/2);
  EXPECT_EQ(server_->Stats().publish_refused(), 2u);
  // Counted as refused for the held limit: nothing about it was malformed.
  EXPECT_EQ(server_->Stats().held_full(), 1u);
  EXPECT_EQ(server_->Stats().malformed(), 0u);
  // A round-trip Ping is refused too, with no batch; a heartbeat is not.
  client->SendPing(9);
  auto ping_error = client->ReceiveBody(v1::Envelope::kError);
  ASSERT_TRUE(ping_error.has_value());
  EXPECT_EQ(ping_error->env.request_id(), 9u);
  EXPECT_EQ(ping_error->env.error().batch_sequence(), 0u);
  EXPECT_EQ(server_->Stats().held_full(), 2u);
  client->SendPing(10, /*heartbeat=*/true);
  client->ExpectReply(v1::Envelope::kPong, 10);
  // An Unsubscribe is done at once, not refused (the client would forget a
  // subscription the server kept): here it finds no such sid.
  v1::Envelope unsub;
  unsub.set_request_id(11);
  unsub.mutable_unsubscribe()->set_sid(42);
  client->Send(unsub);
  auto unsub_error = client->ReceiveBody(v1::Envelope::kError);
  ASSERT_TRUE(unsub_error.has_value());
  EXPECT_EQ(unsub_error->env.request_id(), 11u);
  EXPECT_EQ(unsub_error->env.error().status_code(),
            static_cast<int>(absl::StatusCode::kNotFound));
}

// Credit returned past max_credit, by any amount (even one that would wrap
// a sum), is refused with the subscription's sid and counted malformed;
// the subscription keeps max_credit.
TEST_F(ServerTest, CreditPastMaxCreditIsRefusedAndCapped) {
  ServerOptions options;
  options.max_credit = 4;
  StartServer(options);
  auto sub = Connect();
  sub->Hello("subscriber-00001");
  ASSERT_EQ(sub->Subscribe(1, "cap.>", /*credit=*/4).body_case(),
            v1::Envelope::kAck);
  for (const uint64_t returned : {uint64_t{1}, ~uint64_t{0}}) {
    sub->Credit(1, returned);
    auto error = sub->ReceiveBody(v1::Envelope::kError);
    ASSERT_TRUE(error.has_value()) << returned;
    EXPECT_EQ(error->env.error().status_code(),
              static_cast<int>(absl::StatusCode::kInvalidArgument));
    EXPECT_EQ(error->env.error().sid(), 1u);
    EXPECT_THAT(error->env.error().message(), HasSubstr("max_credit (4)"));
  }
  EXPECT_EQ(server_->Stats().malformed(), 2u);
  for (int i = 0; i < 6; ++i) {
    ASSERT_THAT(broker_->Publish("cap.x", absl::StrCat(i)), IsOk());
  }
  EXPECT_EQ(sub->ReceiveEntries(4).size(), 4u);
  EXPECT_FALSE(sub->Receive(std::chrono::milliseconds(50)).has_value());
}

// The held messages are bounded in bytes too: a Publish that would take
// them past max_held_bytes_per_client is refused unprocessed, a smaller
// message still fits, and the bytes come back as the held messages are
// served (a second block holds as much again).
TEST_F(ServerTest, APublishPastTheHeldBytesIsRefusedAndTheRestServedInOrder) {
  ServerOptions options;
  options.max_held_bytes_per_client = 10'000;
  StartServer(options);
  absl::StatusOr<Subscription> sub = BlockQueueOfOne(absl::Seconds(10));
  ASSERT_THAT(sub, IsOk());
  auto client = BlockedPublisher();
  const std::string p2(4000, '2'), p3(4000, '3'), p4(4000, '4');
  client->Publish(2, {"blk.t"}, {p2}, /*request_id=*/0);
  client->Publish(3, {"blk.t"}, {p3}, /*request_id=*/0);
  client->Publish(4, {"blk.t"}, {p4}, /*request_id=*/0);
  auto error = client->ReceiveBody(v1::Envelope::kError);
  ASSERT_TRUE(error.has_value());
  ExpectRefusedUnprocessed(error->env.error(),
                           absl::StatusCode::kResourceExhausted, /*batch=*/4);
  EXPECT_THAT(error->env.error().message(),
              HasSubstr("max_held_bytes_per_client (10000)"));
  EXPECT_EQ(server_->Stats().held_full(), 1u);
  EXPECT_EQ(server_->Stats().publish_refused(), 1u);
  // Under the budget, a small message is held, not refused.
  client->SendPing(9);
  // "b" gets in when "a" is taken, then the held batches in order, then the
  // Ping.
  ExpectDeliveries(*sub, {"a", "b", p2, p3});
  client->ExpectReply(v1::Envelope::kAck, 5);
  client->ExpectReply(v1::Envelope::kPong, 9);
  EXPECT_EQ(server_->Stats().held_full(), 1u);

  // Blocked again: the same bytes fit again. (How many of the pushes above
  // waited depends on how fast the queue was read.)
  const uint64_t deferred = server_->Stats().publishes_deferred();
  client->Publish(6, {"blk.t", "blk.t"}, {"x", "y"}, /*request_id=*/7);
  ASSERT_TRUE(WaitFor(
      [&] { return server_->Stats().publishes_deferred() == deferred + 1; }));
  client->Publish(8, {"blk.t"}, {p2}, /*request_id=*/0);
  client->Publish(9, {"blk.t"}, {p3}, /*request_id=*/0);
  client->SendPing(10);
  ExpectDeliveries(*sub, {"x", "y", p2, p3});
  client->ExpectReply(v1::Envelope::kAck, 7);
  client->ExpectReply(v1::Envelope::kPong, 10);
  EXPECT_EQ(server_->Stats().held_full(), 1u);
  EXPECT_EQ(server_->Stats().publish_refused(), 1u);
}

TEST_F(ServerTest, RequestsWithoutSessionAreRefused) {
  auto client = Connect();
  client->Publish(1, {"t"}, {"x"}, 1);
  auto error = client->ReceiveBody(v1::Envelope::kError);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->env.error().status_code(),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_TRUE(error->env.error().no_session());
  EXPECT_EQ(server_->Stats().no_session(), 1u);
}

TEST_F(ServerTest, ForeignPeersAndBadFramesAreCountedAndAnswered) {
  auto client = Connect();
  client->Hello();
  // Foreign magic: dropped without a reply.
  client->SendFrames({"GET / HTTP/1.1", "x"});
  // Our magic, another version: kUnimplemented.
  client->SendFrames({MagicFrame(9), "x"});
  auto error = client->ReceiveBody(v1::Envelope::kError);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->env.error().status_code(),
            static_cast<int>(absl::StatusCode::kUnimplemented));
  // Not an envelope: kInvalidArgument.
  client->SendFrames({MagicFrame(), std::string("\xff\xff\xff", 3)});
  error = client->ReceiveBody(v1::Envelope::kError);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->env.error().status_code(),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  // An envelope with no command: kUnimplemented.
  client->SendFrames({MagicFrame(), v1::Envelope().SerializeAsString()});
  error = client->ReceiveBody(v1::Envelope::kError);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->env.error().status_code(),
            static_cast<int>(absl::StatusCode::kUnimplemented));
  // Entries and payload frames that do not match: kInvalidArgument for the
  // whole batch (not for an entry), then the Ack that settles it.
  client->Publish(7, {"a", "b"}, {"only one"}, /*request_id=*/99);
  error = client->ReceiveBody(v1::Envelope::kError);
  ASSERT_TRUE(error.has_value());
  EXPECT_THAT(error->env.error().message(), HasSubstr("payload frames"));
  EXPECT_TRUE(error->env.error().whole_batch());
  EXPECT_EQ(error->env.error().batch_sequence(), 7u);
  auto ack = client->ReceiveBody(v1::Envelope::kAck);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->env.request_id(), 99u);
  EXPECT_EQ(ack->env.ack().acked_batch_sequence(), 7u);
  EXPECT_TRUE(client->Flush());
  EXPECT_EQ(broker_->Stats().published(), 0u);
  const v1::ServerStats s = server_->Stats();
  EXPECT_EQ(s.bad_magic(), 1u);
  EXPECT_EQ(s.unsupported_version(), 1u);
  EXPECT_EQ(s.malformed(), 2u);
  EXPECT_EQ(s.unknown_command(), 1u);
}

TEST_F(ServerTest, RandomAndTruncatedFramesLeaveTheServerServingOthers) {
  const uint32_t seed = 20261124;
  std::printf("fuzz seed %u\n", seed);
  std::mt19937 rng(seed);
  auto fuzzer = Connect();
  auto good = Connect();
  good->Hello("good-session-001");
  ASSERT_EQ(good->Subscribe(1, ">", 100).body_case(), v1::Envelope::kAck);
  v1::Envelope valid;
  valid.set_request_id(1);
  valid.mutable_publish()->set_batch_sequence(1);
  valid.mutable_publish()->add_entries()->set_topic("a.b");
  const std::string valid_body = valid.SerializeAsString();
  for (int i = 0; i < 300; ++i) {
    std::vector<std::string> frames;
    const int n = static_cast<int>(rng() % 5);
    for (int f = 0; f < n; ++f) {
      std::string frame;
      switch (rng() % 4) {
        case 0:
          frame = MagicFrame();
          break;
        case 1:
          frame = valid_body.substr(0, rng() % (valid_body.size() + 1));
          break;
        case 2: {
          frame = valid_body;
          frame[rng() % frame.size()] = static_cast<char>(rng());
          break;
        }
        default:
          frame.resize(rng() % 64);
          for (char& c : frame) c = static_cast<char>(rng());
      }
      frames.push_back(frame);
    }
    if (frames.empty()) frames.push_back("");
    fuzzer->SendFrames(frames);
    if (i == 100)
      fuzzer->Hello("fuzzer-session01");  // Fuzz with a session too.
  }
  // The good client is still served.
  ASSERT_THAT(broker_->Publish("after.fuzz", "ok"), IsOk());
  std::optional<RawClient::Reply> d;
  while ((d = good->ReceiveBody(v1::Envelope::kDeliver))) {
    bool found = false;
    for (const auto& e : d->env.deliver().entries()) {
      if (e.topic() == "after.fuzz") found = true;
    }
    if (found) break;
  }
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(good->Flush());
}

TEST_F(ServerTest, LimitsOnClientsAndSubscriptions) {
  ServerOptions o;
  o.max_clients = 1;
  o.max_subscriptions_per_client = 2;
  StartServer(o);
  auto first = Connect();
  first->Hello("first-session-01");
  auto second = Connect();
  v1::Envelope hello;
  hello.set_request_id(1);
  hello.mutable_hello()->set_session_id("second-session-1");
  hello.mutable_hello()->set_protocol_version(kProtocolVersion);
  second->Send(hello);
  auto error = second->ReceiveBody(v1::Envelope::kError);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->env.error().status_code(),
            static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(server_->Stats().clients_refused(), 1u);

  EXPECT_EQ(first->Subscribe(1, "a", 10).body_case(), v1::Envelope::kAck);
  EXPECT_EQ(first->Subscribe(2, "b", 10).body_case(), v1::Envelope::kAck);
  v1::Envelope third = first->Subscribe(3, "c", 10);
  ASSERT_EQ(third.body_case(), v1::Envelope::kError);
  EXPECT_EQ(third.error().status_code(),
            static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(third.error().sid(), 3u);
  // A sid in use by a different subscription is refused.
  v1::Envelope taken = first->Subscribe(1, "b", 10);
  ASSERT_EQ(taken.body_case(), v1::Envelope::kError);
  EXPECT_EQ(taken.error().status_code(),
            static_cast<int>(absl::StatusCode::kAlreadyExists));
  EXPECT_EQ(taken.error().sid(), 1u);
  EXPECT_EQ(first->Subscribe(1, "a", 11).error().status_code(),
            static_cast<int>(absl::StatusCode::kAlreadyExists));
}

// A session's queues together hold at most max_queue_capacity_per_client
// messages: one client cannot make the server allocate without bound.
TEST_F(ServerTest, ASessionsQueueCapacityIsBounded) {
  ServerOptions o;
  o.max_queue_capacity_per_client = 100;
  StartServer(o);
  auto client = Connect();
  client->Hello();
  ASSERT_EQ(client->Subscribe(1, "q.a", 10, 60).body_case(),
            v1::Envelope::kAck);
  v1::Envelope over = client->Subscribe(2, "q.b", 10, 50);
  ASSERT_EQ(over.body_case(), v1::Envelope::kError);
  EXPECT_EQ(over.error().status_code(),
            static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(over.error().message(),
              HasSubstr("max_queue_capacity_per_client"));
  EXPECT_EQ(over.error().sid(), 2u);
  // The broker's default capacity (1024) counts when none is asked for.
  EXPECT_EQ(client->Subscribe(2, "q.b", 10).error().status_code(),
            static_cast<int>(absl::StatusCode::kResourceExhausted));
  ASSERT_EQ(client->Subscribe(2, "q.b", 10, 40).body_case(),
            v1::Envelope::kAck);  // 100 in all: at the limit.
  EXPECT_EQ(server_->Stats().subscriptions_refused(), 2u);
  // Another session has its own budget.
  auto other = Connect();
  other->Hello("other-session-01");
  EXPECT_EQ(other->Subscribe(1, "q.c", 10, 100).body_case(),
            v1::Envelope::kAck);
  // An unsubscribe gives its capacity back.
  v1::Envelope unsub;
  unsub.set_request_id(50);
  unsub.mutable_unsubscribe()->set_sid(1);
  client->Send(unsub);
  client->ExpectReply(v1::Envelope::kAck, 50);
  EXPECT_EQ(client->Subscribe(3, "q.d", 10, 60).body_case(),
            v1::Envelope::kAck);
  EXPECT_EQ(client->Subscribe(4, "q.e", 10, 1).body_case(),
            v1::Envelope::kError);
}

TEST_F(ServerTest, TheSameSubscribeAgainIsAcknowledgedAndChangesNothing) {
  auto client = Connect();
  client->Hello();
  ASSERT_EQ(client->Subscribe(1, "same.t", 2).body_case(), v1::Envelope::kAck);
  // A client that lost the first Ack with its connection sends it again.
  v1::Envelope again = client->Subscribe(1, "same.t", 2);
  ASSERT_EQ(again.body_case(), v1::Envelope::kAck);
  EXPECT_EQ(again.ack().sid(), 1u);
  EXPECT_EQ(server_->Stats().remote_subscriptions(), 1u);
  EXPECT_EQ(server_->Stats().subscriptions_refused(), 0u);
  EXPECT_EQ(broker_->Stats().subscriptions_active(), 1u);
  // The credit is still the first Subscribe's 2, not 2 more.
  for (int i = 0; i < 3; ++i) {
    ASSERT_THAT(broker_->Publish("same.t", absl::StrCat(i)), IsOk());
  }
  EXPECT_EQ(client->ReceiveEntries(2).size(), 2u);
  // Nothing more comes until credit is returned: the third stays queued.
  client->SendPing(77);
  client->ExpectReply(v1::Envelope::kPong, 77, /*next=*/true);
  const v1::BrokerStats stats = broker_->Stats();
  ASSERT_EQ(stats.subscriptions_size(), 1);
  EXPECT_EQ(stats.subscriptions(0).queued(), 1u);
  EXPECT_EQ(server_->Stats().delivered(), 2u);
}

TEST_F(ServerTest, SilentSessionsExpireAndFreeTheirSubscriptions) {
  ServerOptions o;
  o.session_ttl = absl::Milliseconds(200);
  StartServer(o);
  auto client = Connect();
  client->Hello();
  ASSERT_EQ(client->Subscribe(1, "t", 10, 5).body_case(), v1::Envelope::kAck);
  ASSERT_THAT(broker_->Publish("t", "x"), IsOk());
  ASSERT_TRUE(
      WaitFor([&] { return server_->Stats().sessions_expired() == 1; }));
  EXPECT_EQ(server_->Stats().sessions_active(), 0u);
  const v1::BrokerStats stats = broker_->Stats();
  EXPECT_EQ(stats.subscriptions_closed(), 1u);
  EXPECT_EQ(stats.closed_matched(), 1u);
}

TEST_F(ServerTest, StatsRequestReturnsBrokerAndServerStats) {
  auto client = Connect();
  client->Hello();
  v1::Envelope req;
  req.set_request_id(42);
  req.mutable_stats_request();
  client->Send(req);
  auto reply = client->ReceiveBody(v1::Envelope::kStatsReply);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->env.request_id(), 42u);
  EXPECT_EQ(reply->env.stats_reply().server().sessions_active(), 1u);
}

TEST_F(ServerTest, PlainPubIntoXsubReachesSubscribers) {
  auto sub = broker_->Subscribe("plain.>");
  ASSERT_THAT(sub, IsOk());
  zmq::socket_t pub(context_, zmq::socket_type::pub);
  pub.set(zmq::sockopt::linger, 0);
  pub.connect(server_->publish_endpoint());
  // Slow joiner: publish until the first message arrives.
  absl::StatusOr<Delivery> d;
  for (int i = 0; i < 3000; ++i) {
    (void)pub.send(zmq::str_buffer("plain.topic"), zmq::send_flags::sndmore);
    (void)pub.send(zmq::str_buffer("hello"), zmq::send_flags::none);
    d = sub->Receive(absl::Milliseconds(10));
    if (d.ok()) break;
  }
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->topic(), "plain.topic");
  EXPECT_EQ(d->payload(), "hello");
  // Wrong frame counts and invalid topics are refused and counted.
  const uint64_t refused_before = server_->Stats().plain_refused();
  (void)pub.send(zmq::str_buffer("only.one.frame"), zmq::send_flags::none);
  (void)pub.send(zmq::str_buffer("bad..topic"), zmq::send_flags::sndmore);
  (void)pub.send(zmq::str_buffer("x"), zmq::send_flags::none);
  EXPECT_TRUE(WaitFor(
      [&] { return server_->Stats().plain_refused() == refused_before + 2; }));
}

TEST_F(ServerTest, PlainSubFromXpubReceivesByPrefix) {
  zmq::socket_t sub = PlainSub("orders.");
  std::vector<zmq::message_t> frames;
  for (int i = 0; i < 3000 && frames.empty(); ++i) {
    ASSERT_THAT(broker_->Publish("payments.x", "not for it"), IsOk());
    ASSERT_THAT(broker_->Publish("orders.eu", "for it"), IsOk());
    (void)zmq::recv_multipart(sub, std::back_inserter(frames));
  }
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].to_string(), "orders.eu");
  EXPECT_EQ(frames[1].to_string(), "for it");
}

// With no plain SUB the subscribe endpoint wants nothing: a publish no one
// else wants is unmatched and not counted as sent. The feed subscription
// opens with the first SUB's subscription and closes when the last SUB
// leaves, and a new SUB opens a new one.
TEST_F(ServerTest, ThePlainFeedIsOpenExactlyWhileSomeSubSubscribes) {
  StartServerWithoutFeedLinger();
  absl::StatusOr<PublishResult> r = broker_->Publish("orders.eu", "nobody");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->matched, 0u);
  EXPECT_EQ(broker_->Stats().published_unmatched(), 1u);
  EXPECT_FALSE(PlainFeed().has_value());
  EXPECT_EQ(server_->Stats().plain_prefixes(), 0u);
  std::optional<v1::SubscriptionStats> feed;
  {
    zmq::socket_t first = PlainSub("orders.");
    zmq::socket_t second = PlainSub("orders.");
    ASSERT_TRUE(PublishUntilReceived(first, "orders.eu"));
    ASSERT_TRUE(PublishUntilReceived(second, "orders.eu"));
    feed = PlainFeed();
    ASSERT_TRUE(feed.has_value());
    EXPECT_EQ(feed->pattern(), ">");
    EXPECT_EQ(server_->Stats().plain_prefixes(), 1u);
    r = broker_->Publish("payments.eu", "no SUB wants it, the feed does");
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->matched, 1u);
  }  // Both SUBs leave.
  EXPECT_TRUE(WaitFor([&] {
    return server_->Stats().plain_prefixes() == 0 && !PlainFeed().has_value();
  }));
  const uint64_t unmatched = broker_->Stats().published_unmatched();
  r = broker_->Publish("orders.eu", "nobody again");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->matched, 0u);
  EXPECT_EQ(broker_->Stats().published_unmatched(), unmatched + 1);
  // Every message the closed feed gave the server went to the XPUB (the
  // feed is the only subscription this broker ever closed).
  EXPECT_TRUE(WaitFor([&] {
    return server_->Stats().plain_delivered() ==
           broker_->Stats().closed_delivered();
  }));

  zmq::socket_t third = PlainSub("orders.");
  ASSERT_TRUE(PublishUntilReceived(third, "orders.eu"));
  const std::optional<v1::SubscriptionStats> reopened = PlainFeed();
  ASSERT_TRUE(reopened.has_value());
  EXPECT_NE(reopened->id(), feed->id());
}

// The XPUB reports a prefix's unsubscribe only when no SUB keeps it: the
// feed stays open while one SUB still subscribes to anything.
TEST_F(ServerTest, ThePlainFeedStaysOpenWhileAnyPrefixIsSubscribed) {
  StartServerWithoutFeedLinger();
  zmq::socket_t sub = PlainSub("orders.");
  zmq::socket_t other = PlainSub("orders.");
  sub.set(zmq::sockopt::subscribe, "payments.");
  ASSERT_TRUE(PublishUntilReceived(sub, "payments.x"));
  ASSERT_TRUE(PublishUntilReceived(other, "orders.x"));
  ASSERT_TRUE(WaitFor([&] { return server_->Stats().plain_prefixes() == 2; }));
  const std::optional<v1::SubscriptionStats> feed = PlainFeed();
  ASSERT_TRUE(feed.has_value());

  // "orders." stays (the other SUB has it); "payments." goes.
  sub.set(zmq::sockopt::unsubscribe, "orders.");
  sub.set(zmq::sockopt::unsubscribe, "payments.");
  ASSERT_TRUE(WaitFor([&] { return server_->Stats().plain_prefixes() == 1; }));
  std::optional<v1::SubscriptionStats> now = PlainFeed();
  ASSERT_TRUE(now.has_value());
  EXPECT_EQ(now->id(), feed->id());
  ASSERT_TRUE(PublishUntilReceived(other, "orders.x"));

  other.close();
  EXPECT_TRUE(WaitFor([&] {
    return server_->Stats().plain_prefixes() == 0 && !PlainFeed().has_value();
  }));
}

// The feed is made with the broker's limits in mind: a broker whose
// max_block_timeout is under SubscriptionOptions' default still feeds the
// plain SUBs.
TEST_F(ServerTest, ThePlainFeedOpensUnderTheBrokersTightestLimits) {
  BrokerOptions broker_options;
  broker_options.max_block_timeout = absl::Milliseconds(1);
  StartServer({}, broker_options);
  zmq::socket_t sub = PlainSub("orders.");
  EXPECT_TRUE(PublishUntilReceived(sub, "orders.eu"));
}

// Opening and closing the feed touches every topic: it stays open for
// plain_feed_linger after the last SUB goes, and a SUB that comes back
// meanwhile finds the same feed.
TEST_F(ServerTest, ThePlainFeedOutlivesItsLastSubForTheLinger) {
  ServerOptions options;
  options.plain_feed_linger = absl::InfiniteDuration();
  StartServer(options);
  std::optional<v1::SubscriptionStats> feed;
  {
    zmq::socket_t sub = PlainSub("orders.");
    ASSERT_TRUE(PublishUntilReceived(sub, "orders.eu"));
    feed = PlainFeed();
    ASSERT_TRUE(feed.has_value());
  }
  ASSERT_TRUE(WaitFor([&] { return server_->Stats().plain_prefixes() == 0; }));
  std::optional<v1::SubscriptionStats> now = PlainFeed();
  ASSERT_TRUE(now.has_value());
  EXPECT_EQ(now->id(), feed->id());

  zmq::socket_t back = PlainSub("payments.");
  ASSERT_TRUE(PublishUntilReceived(back, "payments.eu"));
  now = PlainFeed();
  ASSERT_TRUE(now.has_value());
  EXPECT_EQ(now->id(), feed->id());
}

// Nanoseconds the thread named `name` in this process has spent on a CPU
// (/proc/self/task/*/schedstat); -1 if there is no such thread.
int64_t ThreadCpuNanos(absl::string_view name) {
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string thread_name;
    std::getline(comm, thread_name);
    if (thread_name != name) continue;
    std::ifstream schedstat(task.path() / "schedstat");
    int64_t on_cpu = -1;
    schedstat >> on_cpu;
    return on_cpu;
  }
  return -1;
}

// A plain SUB that stops reading fills its pipe; the server holds the head
// message back (XPUB_NODROP), counts what its feed queue cannot take, and
// retries on a timer. XPUB reports POLLOUT even with a full pipe, so a
// server that waited for POLLOUT spun a core here. Once the SUB reads again,
// everything not counted as dropped arrives.
TEST_F(ServerTest, AStalledPlainSubscriberCostsNoSpinAndLosesNothingUncounted) {
  ServerOptions options;
  options.plain_queue_capacity = 64;
  StartServer(options);
  zmq::socket_t sub = StallingSub();
  // Slow joiner: publish until the first message arrives. The ones before
  // it found no feed subscription (none opens before the SUB's
  // subscription reaches the server): unmatched.
  uint64_t published = 0;
  uint64_t received = 0;
  uint64_t before_join = 0;
  std::vector<zmq::message_t> frames;
  for (int i = 0; i < 3000 && received == 0; ++i) {
    ASSERT_THAT(broker_->Publish("stall.warm", absl::StrCat(i)), IsOk());
    ++published;
    frames.clear();
    if (zmq::recv_multipart(sub, std::back_inserter(frames))) {
      ++received;
      ASSERT_EQ(frames.size(), 2u);
      ASSERT_TRUE(absl::SimpleAtoi(frames[1].to_string(), &before_join));
    }
  }
  ASSERT_EQ(received, 1u);

  auto feed = [&] {
    std::optional<v1::SubscriptionStats> s = PlainFeed();
    if (!s.has_value()) ADD_FAILURE() << "no plain feed subscription";
    return s.value_or(v1::SubscriptionStats());
  };
  // The SUB stops reading; steps of half the feed's queue.
  ASSERT_TRUE(PublishUntilThePlainFeedStalls(32, &published));
  // More than the feed's queue holds: the rest are counted as dropped.
  const std::string big(16 * 1024, 'x');
  for (int i = 0; i < 100; ++i) {
    ASSERT_THAT(broker_->Publish("stall.big", big), IsOk());
    ++published;
  }
  auto feed_dropped = [&] { return feed().dropped().queue_full(); };
  ASSERT_GT(feed_dropped(), 0u);

  // Stalled: the server thread must sleep, not spin. Over a second, a
  // spinning thread takes 300 ms or more of CPU even on a loaded machine;
  // this one is woken about 60 times and takes a few ms.
  const int64_t cpu_before = ThreadCpuNanos("herald-server");
  ASSERT_GE(cpu_before, 0);
  EXPECT_FALSE(WaitFor(
      [&] {
        return ThreadCpuNanos("herald-server") - cpu_before >
               absl::ToInt64Nanoseconds(absl::Milliseconds(150));
      },
      absl::Seconds(1)))
      << "the server thread used "
      << (ThreadCpuNanos("herald-server") - cpu_before) / 1000000
      << " ms of CPU in a second with nothing it could send";

  // Reading again: every message not counted as dropped arrives.
  const uint64_t dropped = feed_dropped();  // Final: publishing is over.
  const uint64_t expected = published - before_join - dropped;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (received < expected && absl::Now() < deadline) {
    frames.clear();
    if (!zmq::recv_multipart(sub, std::back_inserter(frames))) continue;
    ASSERT_EQ(frames.size(), 2u);
    ++received;
  }
  EXPECT_EQ(received, expected) << dropped << " dropped of " << published;
  EXPECT_TRUE(
      WaitFor([&] { return server_->Stats().plain_delivered() == expected; }));
  EXPECT_EQ(feed_dropped(), dropped);
  EXPECT_EQ(feed().matched(), published - before_join);
  EXPECT_EQ(broker_->Stats().published_unmatched(), before_join);
}

// Stop() closes the feed with messages taken from it that the XPUB refuses
// (the SUB stopped reading): the broker counts them delivered, and the
// server counts them abandoned, so none goes uncounted.
TEST_F(ServerTest, StopCountsPlainMessagesTheXpubWouldNotTake) {
  ServerOptions options;
  options.plain_queue_capacity = 64;
  StartServer(options);
  zmq::socket_t sub = StallingSub();
  ASSERT_TRUE(PublishUntilReceived(sub, "stall.warm"));
  uint64_t published = 0;
  ASSERT_TRUE(PublishUntilThePlainFeedStalls(32, &published));

  server_->Stop(absl::Now() + absl::Seconds(1));
  const v1::ServerStats s = server_->Stats();
  const v1::BrokerStats b = broker_->Stats();
  EXPECT_GT(s.plain_abandoned(), 0u);
  // The feed was the broker's only subscription, closed by Stop().
  EXPECT_EQ(b.closed_delivered(), s.plain_delivered() + s.plain_abandoned());
  EXPECT_GT(b.closed_abandoned(), 0u);  // Still in its queue: the broker's.
  EXPECT_EQ(s.plain_prefixes(), 0u);
}

// A message published over the SDK endpoint reaches a plain SUB too, as
// one published in-process does.
TEST_F(ServerTest, PlainSubReceivesWhatAnSdkClientPublishes) {
  zmq::socket_t sub = PlainSub("orders.");
  auto pub = Connect();
  pub->Hello("publisher-000001");
  std::vector<zmq::message_t> frames;
  // Slow joiner: publish until the SUB's subscription has reached the
  // server and a message arrives.
  for (uint64_t batch = 1; batch <= 3000 && frames.empty(); ++batch) {
    pub->Publish(batch, {"payments.x", "orders.eu"},
                 {"not for it", "from the sdk"}, /*request_id=*/0);
    (void)zmq::recv_multipart(sub, std::back_inserter(frames));
  }
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].to_string(), "orders.eu");
  EXPECT_EQ(frames[1].to_string(), "from the sdk");
  EXPECT_GE(server_->Stats().publish_accepted(), 2u);
}

TEST_F(ServerTest, StopSendsGoodbyeAndClosesRemoteSubscriptions) {
  auto client = Connect();
  client->Hello();
  ASSERT_EQ(client->Subscribe(1, "t", 10).body_case(), v1::Envelope::kAck);
  server_->Stop(absl::Now() + absl::Seconds(5));
  auto bye = client->ReceiveBody(v1::Envelope::kGoodbye);
  ASSERT_TRUE(bye.has_value());
  EXPECT_EQ(broker_->Stats().subscriptions_active(), 0u);
}

}  // namespace
}  // namespace herald::net
