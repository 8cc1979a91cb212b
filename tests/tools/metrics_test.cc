#include "tools/heraldd/metrics.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/broker.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/testing/status_matchers.h"

namespace herald {
namespace {

using ::herald::testing::IsOk;
using ::herald::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// The lines of an exposition, without the empty last one.
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

// True if `text` has `line` as one whole line.
::testing::AssertionResult HasLine(const std::string& text,
                                   const std::string& line) {
  for (const std::string& l : Lines(text)) {
    if (l == line) return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "no line \"" << line << "\" in:\n"
                                       << text;
}

// A snapshot with one subscription, one topic and one queue group, each
// counter a distinct value so a mix-up shows.
v1::BrokerStats SampleBrokerStats() {
  v1::BrokerStats b;
  b.set_published(5);
  b.set_published_unmatched(1);
  b.set_refused_invalid(2);
  b.set_refused_too_large(3);
  b.set_refused_shutdown(4);
  b.set_subscribe_refused(6);
  b.set_subscriptions_active(1);
  b.set_subscriptions_closed(7);
  b.set_topics(1);
  v1::SubscriptionStats* s = b.add_subscriptions();
  s->set_id(3);
  s->set_pattern("orders.>");
  s->set_name("audit");
  s->set_overflow(v1::OVERFLOW_POLICY_DROP_NEWEST);
  s->set_capacity(2);
  s->set_matched(5);
  s->set_delivered(0);
  s->mutable_dropped()->set_queue_full(3);
  s->set_queued(2);
  s->set_high_water(2);
  v1::TopicStats* t = b.add_topic_entries();
  t->set_name("orders.eu");
  t->set_published(5);
  t->set_subscriptions(1);
  v1::GroupStats* g = b.add_groups();
  g->set_pattern("jobs");
  g->set_queue_group("workers");
  g->set_matched(11);
  g->set_taken(9);
  g->set_members(2);
  g->mutable_dropped()->set_group_full(2);
  b.set_closed_matched(100);
  b.set_closed_delivered(90);
  b.mutable_closed_dropped()->set_queue_full(4);
  b.mutable_closed_dropped()->set_shutdown(1);
  b.set_closed_abandoned(5);
  return b;
}

constexpr absl::string_view kSubLabels =
    R"(id="3",pattern="orders.>",queue_group="",name="audit")";

TEST(PrometheusTextTest, WritesExactBrokerCounters) {
  const std::string text = PrometheusText(SampleBrokerStats(), nullptr);

  EXPECT_TRUE(HasLine(text, "herald_published_total 5"));
  EXPECT_TRUE(HasLine(text, "herald_published_unmatched_total 1"));
  EXPECT_TRUE(
      HasLine(text, R"(herald_publish_refused_total{reason="invalid"} 2)"));
  EXPECT_TRUE(
      HasLine(text, R"(herald_publish_refused_total{reason="too_large"} 3)"));
  EXPECT_TRUE(
      HasLine(text, R"(herald_publish_refused_total{reason="shutdown"} 4)"));
  EXPECT_TRUE(HasLine(text, "herald_subscribe_refused_total 6"));
  EXPECT_TRUE(HasLine(text, "herald_subscriptions 1"));
  EXPECT_TRUE(HasLine(text, "herald_subscriptions_closed_total 7"));
  EXPECT_TRUE(HasLine(text, "herald_topics 1"));
  EXPECT_TRUE(HasLine(text, "herald_shut_down 0"));
}

TEST(PrometheusTextTest, WritesExactSubscriptionTopicAndGroupCounters) {
  const std::string text = PrometheusText(SampleBrokerStats(), nullptr);
  const std::string labels(kSubLabels);

  EXPECT_TRUE(HasLine(
      text, absl::StrCat("herald_subscription_matched_total{", labels, "} 5")));
  EXPECT_TRUE(HasLine(text, absl::StrCat("herald_subscription_delivered_total{",
                                         labels, "} 0")));
  EXPECT_TRUE(
      HasLine(text, absl::StrCat("herald_subscription_dropped_total{", labels,
                                 R"(,reason="queue_full"} 3)")));
  EXPECT_TRUE(HasLine(text, absl::StrCat("herald_subscription_dropped_total{",
                                         labels, R"(,reason="shutdown"} 0)")));
  EXPECT_TRUE(HasLine(
      text, absl::StrCat("herald_subscription_queued{", labels, "} 2")));
  EXPECT_TRUE(HasLine(
      text, absl::StrCat("herald_subscription_high_water{", labels, "} 2")));
  EXPECT_TRUE(HasLine(
      text, absl::StrCat("herald_subscription_capacity{", labels, "} 2")));
  EXPECT_TRUE(HasLine(
      text, absl::StrCat("herald_subscription_info{", labels,
                         R"(,overflow="drop-newest",callback="false"} 1)")));
  EXPECT_TRUE(
      HasLine(text, R"(herald_topic_published_total{topic="orders.eu"} 5)"));
  EXPECT_TRUE(
      HasLine(text, R"(herald_topic_subscriptions{topic="orders.eu"} 1)"));
  EXPECT_TRUE(HasLine(
      text,
      R"(herald_group_matched_total{pattern="jobs",queue_group="workers"} 11)"));
  EXPECT_TRUE(HasLine(
      text,
      R"(herald_group_taken_total{pattern="jobs",queue_group="workers"} 9)"));
  EXPECT_TRUE(HasLine(
      text,
      R"(herald_group_dropped_total{pattern="jobs",queue_group="workers",reason="group_full"} 2)"));
  EXPECT_TRUE(HasLine(
      text, R"(herald_group_members{pattern="jobs",queue_group="workers"} 2)"));
}

TEST(PrometheusTextTest, WholeBrokerTotalsAddOpenClosedAndGroups) {
  const std::string text = PrometheusText(SampleBrokerStats(), nullptr);

  EXPECT_TRUE(HasLine(text, "herald_matched_total 105"));
  EXPECT_TRUE(HasLine(text, "herald_delivered_total 90"));
  EXPECT_TRUE(HasLine(text, R"(herald_dropped_total{reason="queue_full"} 7)"));
  EXPECT_TRUE(HasLine(text, R"(herald_dropped_total{reason="shutdown"} 1)"));
  EXPECT_TRUE(HasLine(text, R"(herald_dropped_total{reason="group_full"} 2)"));
  EXPECT_TRUE(
      HasLine(text, R"(herald_dropped_total{reason="evicted_oldest"} 0)"));
  EXPECT_TRUE(HasLine(text, "herald_queued 2"));
  EXPECT_TRUE(HasLine(text, "herald_abandoned_total 5"));
}

TEST(PrometheusTextTest, EscapesBackslashQuoteAndNewlineInLabelValues) {
  v1::BrokerStats b;
  v1::SubscriptionStats* s = b.add_subscriptions();
  s->set_id(1);
  s->set_pattern("a.>");
  s->set_name("back\\slash \"quoted\"\nnext");

  const std::string text = PrometheusText(b, nullptr);

  EXPECT_TRUE(HasLine(
      text,
      R"(herald_subscription_queued{id="1",pattern="a.>",queue_group="",name="back\\slash \"quoted\"\nnext"} 0)"));
}

// Checks the exposition format's structure: every family is one HELP line,
// then one TYPE line (counter or gauge; a counter's name ends in _total),
// then only samples of that family, each `name[{labels}] integer`.
TEST(PrometheusTextTest, EveryFamilyHasHelpThenTypeThenItsOwnSamples) {
  v1::ServerStats server;
  server.set_sessions_active(1);
  const std::string text = PrometheusText(SampleBrokerStats(), &server);

  std::vector<std::string> seen;
  std::string family;
  bool expect_type = false;
  for (const std::string& line : Lines(text)) {
    ASSERT_FALSE(line.empty());
    if (absl::StartsWith(line, "# HELP ")) {
      ASSERT_FALSE(expect_type) << line;
      std::vector<std::string> parts =
          absl::StrSplit(line, absl::MaxSplits(' ', 3));
      ASSERT_EQ(parts.size(), 4u) << line;
      family = parts[2];
      EXPECT_THAT(seen, Not(::testing::Contains(family))) << "twice: " << line;
      seen.push_back(family);
      expect_type = true;
      continue;
    }
    if (absl::StartsWith(line, "# TYPE ")) {
      ASSERT_TRUE(expect_type) << line;
      const std::vector<std::string> parts = absl::StrSplit(line, ' ');
      ASSERT_EQ(parts.size(), 4u) << line;
      EXPECT_EQ(parts[2], family);
      EXPECT_THAT(parts[3], ::testing::AnyOf("counter", "gauge")) << line;
      EXPECT_EQ(parts[3] == "counter", absl::EndsWith(family, "_total"))
          << line;
      expect_type = false;
      continue;
    }
    ASSERT_FALSE(expect_type) << line;
    ASSERT_FALSE(absl::StartsWith(line, "#")) << line;
    const size_t name_end = line.find_first_of("{ ");
    ASSERT_NE(name_end, std::string::npos) << line;
    EXPECT_EQ(line.substr(0, name_end), family) << line;
    const size_t space = line.rfind(' ');
    uint64_t value = 0;
    EXPECT_TRUE(absl::SimpleAtoi(line.substr(space + 1), &value)) << line;
  }
  EXPECT_FALSE(expect_type);
  EXPECT_THAT(seen, ::testing::Contains("herald_server_sessions"));
}

TEST(PrometheusTextTest, WritesServerCountersOnlyWithServerStats) {
  v1::ServerStats server;
  server.set_sessions_active(2);
  server.set_sessions_opened(3);
  server.set_sessions_expired(1);
  server.set_bad_magic(4);
  server.set_no_session(5);
  server.set_plain_published(6);
  server.set_remote_subscriptions(7);
  server.set_sessions_detached(8);
  server.set_deliveries_lost(9);
  server.set_plain_prefixes(10);
  server.set_plain_abandoned(11);
  server.set_held_full(12);

  const std::string with = PrometheusText(v1::BrokerStats(), server);
  const std::string without = PrometheusText(v1::BrokerStats(), nullptr);

  EXPECT_TRUE(HasLine(with, "herald_server_sessions 2"));
  EXPECT_TRUE(HasLine(with, "herald_server_sessions_opened_total 3"));
  EXPECT_TRUE(HasLine(with, "herald_server_sessions_expired_total 1"));
  EXPECT_TRUE(HasLine(
      with, R"(herald_server_input_refused_total{reason="bad_magic"} 4)"));
  EXPECT_TRUE(HasLine(
      with, R"(herald_server_input_refused_total{reason="no_session"} 5)"));
  EXPECT_TRUE(HasLine(with, "herald_server_plain_published_total 6"));
  // Open now: a gauge (it goes down as subscriptions close).
  EXPECT_TRUE(HasLine(with, "herald_server_remote_subscriptions 7"));
  EXPECT_TRUE(HasLine(with, "# TYPE herald_server_remote_subscriptions gauge"));
  EXPECT_TRUE(HasLine(with, "herald_server_sessions_detached_total 8"));
  EXPECT_TRUE(HasLine(with, "herald_server_deliveries_lost_total 9"));
  EXPECT_TRUE(HasLine(with, "herald_server_plain_prefixes 10"));
  EXPECT_TRUE(HasLine(with, "# TYPE herald_server_plain_prefixes gauge"));
  EXPECT_TRUE(HasLine(with, "herald_server_plain_abandoned_total 11"));
  EXPECT_TRUE(HasLine(
      with, R"(herald_server_input_refused_total{reason="held_full"} 12)"));
  EXPECT_THAT(without, Not(HasSubstr("herald_server_")));
  EXPECT_THAT(without, HasSubstr("herald_published_total 0\n"));
}

TEST(StatszJsonTest, PrintsEveryFieldWithProtoNamesAndStringCounters) {
  v1::ServerStats server;
  server.set_sessions_opened(2);

  const absl::StatusOr<std::string> json =
      StatszJson(SampleBrokerStats(), &server);

  ASSERT_THAT(json, IsOk());
  EXPECT_THAT(*json, StartsWith(R"({"broker":{)"));
  EXPECT_THAT(*json, HasSubstr(R"("published":"5")"));
  EXPECT_THAT(*json, HasSubstr(R"("queue_full":"3")"));
  EXPECT_THAT(*json, HasSubstr(R"("high_water":"2")"));
  EXPECT_THAT(*json, HasSubstr(R"("server":{)"));
  EXPECT_THAT(*json, HasSubstr(R"("sessions_opened":"2")"));
  EXPECT_THAT(*json, HasSubstr(R"("sessions_active":"0")"));
}

TEST(StatszJsonTest, LeavesServerOutWithoutServerStats) {
  const absl::StatusOr<std::string> json =
      StatszJson(v1::BrokerStats(), nullptr);

  ASSERT_THAT(json, IsOk());
  EXPECT_THAT(*json, HasSubstr(R"("published":"0")"));
  EXPECT_THAT(*json, Not(HasSubstr("server")));
}

TEST(SummaryLineTest, GivesPublishedDeliveredDropsAndSessions) {
  v1::ServerStats server;
  server.set_sessions_opened(2);
  server.set_sessions_expired(1);

  EXPECT_EQ(SummaryLine(SampleBrokerStats(), &server),
            "published=5 refused=9 delivered=90 dropped=10 (queue_full=7 "
            "evicted_oldest=0 block_timeout=0 closed=0 shutdown=1 "
            "group_full=2) abandoned=5 sessions_opened=2 sessions_expired=1 "
            "sessions_closed=0 sdk_published=0 plain_published=0");
}

// ----------------------------------------------------------- MetricsServer

constexpr size_t kCapacity = 2;
constexpr int kPublishes = 5;
constexpr uint64_t kQueueFullDrops = kPublishes - kCapacity;

// An HTTP client with timeouts generous enough for sanitizer builds.
std::unique_ptr<httplib::Client> ClientFor(const MetricsServer& server) {
  auto client = std::make_unique<httplib::Client>(server.host(), server.port());
  client->set_connection_timeout(10, 0);
  client->set_read_timeout(30, 0);
  client->set_write_timeout(30, 0);
  return client;
}

class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Broker>> broker = Broker::Create();
    ASSERT_THAT(broker, IsOk());
    broker_ = *std::move(broker);
  }

  MetricsServer::Sources BrokerOnly() {
    MetricsServer::Sources sources;
    sources.broker = [b = broker_.get()] { return b->Stats(); };
    return sources;
  }

  std::unique_ptr<Broker> broker_;
};

TEST_F(MetricsServerTest, ServesExactDropCountsInMetricsAndStatsz) {
  SubscriptionOptions options;
  options.queue_capacity = kCapacity;
  options.name = "audit";
  absl::StatusOr<Subscription> sub = broker_->Subscribe("orders.>", options);
  ASSERT_THAT(sub, IsOk());
  for (int i = 0; i < kPublishes; ++i) {
    ASSERT_THAT(broker_->Publish("orders.eu.created", absl::StrCat("m", i)),
                IsOk());
  }
  v1::ServerStats server_stats;
  server_stats.set_sessions_active(4);
  MetricsServer::Sources sources = BrokerOnly();
  sources.server = [server_stats] { return server_stats; };
  absl::StatusOr<std::unique_ptr<MetricsServer>> metrics =
      MetricsServer::Start("127.0.0.1:0", sources);
  ASSERT_THAT(metrics, IsOk());
  ASSERT_GT((*metrics)->port(), 0);
  std::unique_ptr<httplib::Client> client = ClientFor(**metrics);

  const httplib::Result text = client->Get("/metrics");
  const httplib::Result json = client->Get("/statsz");

  ASSERT_TRUE(text) << httplib::to_string(text.error());
  EXPECT_EQ(text->status, 200);
  EXPECT_EQ(text->get_header_value("Content-Type"), kPrometheusContentType);
  const std::string labels =
      absl::StrCat(R"(id=")", sub->id(),
                   R"(",pattern="orders.>",queue_group="",name="audit")");
  EXPECT_TRUE(
      HasLine(text->body, absl::StrCat("herald_published_total ", kPublishes)));
  EXPECT_TRUE(HasLine(
      text->body, absl::StrCat("herald_subscription_dropped_total{", labels,
                               R"(,reason="queue_full"} )", kQueueFullDrops)));
  EXPECT_TRUE(
      HasLine(text->body, absl::StrCat("herald_subscription_matched_total{",
                                       labels, "} ", kPublishes)));
  EXPECT_TRUE(HasLine(text->body, absl::StrCat("herald_subscription_queued{",
                                               labels, "} ", kCapacity)));
  EXPECT_TRUE(
      HasLine(text->body, absl::StrCat("herald_subscription_high_water{",
                                       labels, "} ", kCapacity)));
  EXPECT_TRUE(HasLine(
      text->body, absl::StrCat(R"(herald_dropped_total{reason="queue_full"} )",
                               kQueueFullDrops)));
  EXPECT_TRUE(HasLine(text->body, "herald_server_sessions 4"));

  ASSERT_TRUE(json) << httplib::to_string(json.error());
  EXPECT_EQ(json->status, 200);
  EXPECT_EQ(json->get_header_value("Content-Type"), "application/json");
  EXPECT_THAT(json->body, HasSubstr(absl::StrCat(R"("queue_full":")",
                                                 kQueueFullDrops, R"(")")));
  EXPECT_THAT(json->body,
              HasSubstr(absl::StrCat(R"("published":")", kPublishes, R"(")")));
  v1::StatsReply reply;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(json->body, &reply).ok());
  EXPECT_EQ(reply.broker().published(), static_cast<uint64_t>(kPublishes));
  ASSERT_EQ(reply.broker().subscriptions_size(), 1);
  EXPECT_EQ(reply.broker().subscriptions(0).dropped().queue_full(),
            kQueueFullDrops);
  EXPECT_EQ(reply.broker().subscriptions(0).queued(), kCapacity);
  EXPECT_EQ(reply.server().sessions_active(), 4u);
}

TEST_F(MetricsServerTest, UnknownPathIsNotFound) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> metrics =
      MetricsServer::Start("127.0.0.1:0", BrokerOnly());
  ASSERT_THAT(metrics, IsOk());

  const httplib::Result result = ClientFor(**metrics)->Get("/nope");

  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(result->status, 404);
}

TEST_F(MetricsServerTest, ReportsBoundHostPortAndUrl) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> metrics =
      MetricsServer::Start("127.0.0.1:0", BrokerOnly());
  ASSERT_THAT(metrics, IsOk());

  EXPECT_EQ((*metrics)->host(), "127.0.0.1");
  EXPECT_EQ((*metrics)->url(),
            absl::StrCat("http://127.0.0.1:", (*metrics)->port()));
}

// ":port" listens on every IPv4 interface, as a Prometheus exporter's
// address does.
TEST_F(MetricsServerTest, AnAddressWithoutHostListensOnEveryInterface) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> metrics =
      MetricsServer::Start(":0", BrokerOnly());
  ASSERT_THAT(metrics, IsOk());
  EXPECT_EQ((*metrics)->host(), "0.0.0.0");
  EXPECT_GT((*metrics)->port(), 0);

  httplib::Client client("127.0.0.1", (*metrics)->port());
  const httplib::Result result = client.Get("/metrics");
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(result->status, 200);
}

TEST_F(MetricsServerTest, RefusesMalformedAddresses) {
  struct Case {
    absl::string_view address;
  };
  const Case cases[] = {
      {""},
      {"127.0.0.1"},
      {"127.0.0.1:"},
      {":"},
      {"127.0.0.1:65536"},
      {"127.0.0.1:x"},
      {"127.0.0.1:-1"},
      {"::1:9464"},
      {"[::1"},
      {"[::1]9464"},
      {"[]:9464"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(MetricsServer::Start(c.address, BrokerOnly()),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << c.address;
  }
}

TEST_F(MetricsServerTest, RefusesMissingBrokerSource) {
  EXPECT_THAT(MetricsServer::Start("127.0.0.1:0", MetricsServer::Sources()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(MetricsServerTest, PortInUseIsUnavailable) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> first =
      MetricsServer::Start("127.0.0.1:0", BrokerOnly());
  ASSERT_THAT(first, IsOk());

  EXPECT_THAT(MetricsServer::Start(absl::StrCat("127.0.0.1:", (*first)->port()),
                                   BrokerOnly()),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(MetricsServerTest, StopRightAfterStartJoinsEveryTime) {
  constexpr int kRounds = 20;
  for (int i = 0; i < kRounds; ++i) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> metrics =
        MetricsServer::Start("127.0.0.1:0", BrokerOnly());
    ASSERT_THAT(metrics, IsOk());
    (*metrics)->Stop();
    (*metrics)->Stop();  // Idempotent.
  }
}

TEST_F(MetricsServerTest, StopWithAnIdleKeepAliveConnectionOpenReturns) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> metrics =
      MetricsServer::Start("127.0.0.1:0", BrokerOnly());
  ASSERT_THAT(metrics, IsOk());
  std::unique_ptr<httplib::Client> client = ClientFor(**metrics);
  client->set_keep_alive(true);
  const httplib::Result result = client->Get("/metrics");
  ASSERT_TRUE(result) << httplib::to_string(result.error());

  // The connection stays open; Stop() must not wait for the client to go.
  (*metrics)->Stop();

  const httplib::Result after = client->Get("/metrics");
  EXPECT_FALSE(after);
}

// Scrapes race publishes and subscription churn (run under TSAN in CI).
TEST_F(MetricsServerTest, ConcurrentScrapesWhilePublishingAndChurning) {
  constexpr int kScrapers = 2;
  constexpr int kScrapesEach = 10;
  constexpr int kMessages = 2000;
  absl::StatusOr<std::unique_ptr<MetricsServer>> metrics =
      MetricsServer::Start("127.0.0.1:0", BrokerOnly());
  ASSERT_THAT(metrics, IsOk());
  std::thread publisher([&] {
    for (int i = 0; i < kMessages; ++i) {
      if (i % 100 == 0) {
        absl::StatusOr<Subscription> sub = broker_->Subscribe("churn.>");
        EXPECT_THAT(sub, IsOk());
      }
      EXPECT_THAT(broker_->Publish("churn.x", "payload"), IsOk());
    }
  });
  std::vector<std::thread> scrapers;
  std::atomic<int> ok{0};
  for (int s = 0; s < kScrapers; ++s) {
    scrapers.emplace_back([&] {
      std::unique_ptr<httplib::Client> client = ClientFor(**metrics);
      for (int i = 0; i < kScrapesEach; ++i) {
        const httplib::Result r =
            client->Get(i % 2 == 0 ? "/metrics" : "/statsz");
        if (r && r->status == 200) ok.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (std::thread& t : scrapers) t.join();
  publisher.join();

  EXPECT_EQ(ok.load(), kScrapers * kScrapesEach);
  const httplib::Result last = ClientFor(**metrics)->Get("/metrics");
  ASSERT_TRUE(last) << httplib::to_string(last.error());
  EXPECT_TRUE(
      HasLine(last->body, absl::StrCat("herald_published_total ", kMessages)));
}

}  // namespace
}  // namespace herald
