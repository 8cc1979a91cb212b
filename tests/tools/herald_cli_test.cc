// The `herald` command line tool, run in-process (herald::cli::Run) against
// an in-process Broker served by a net::Server on an OS-chosen port: pub and
// sub round trips, stats (table and JSON) with exact counts, a small bench,
// and the error contract (one line, exit 2 for bad usage, exit 1 for an
// unreachable broker). Also the formatting helpers of tools/herald/format.h.
#include <cstdint>
#include <memory>
#include <sstream>
#include <stop_token>
#include <streambuf>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/broker.h"
#include "broker/internal/thread_identity.h"
#include "broker/net/server.h"
#include "broker/options.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "schemas/protocol.pb.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/wait_for.h"
#include "tools/herald/commands.h"
#include "tools/herald/format.h"

namespace herald {
namespace {

using ::herald::testing::IsOk;
using ::herald::testing::WaitFor;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;

// A command that cannot connect must give up within this (its connect
// timeout is far shorter; the rest is slack for sanitizer builds).
constexpr absl::Duration kUnreachableBound = absl::Seconds(10);
constexpr char kShortConnectTimeout[] = "200ms";

// An ostream whose contents another thread may read while a command writes.
// Hold() makes writers wait until Release(), as a stalled terminal would.
class LockedStringBuf : public std::streambuf {
 public:
  std::string contents() const {
    absl::MutexLock lock(&mu_);
    return text_;
  }
  void Hold() {
    absl::MutexLock lock(&mu_);
    held_ = true;
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    held_ = false;
  }

 protected:
  int_type overflow(int_type ch) override {
    if (traits_type::eq_int_type(ch, traits_type::eof())) {
      return traits_type::not_eof(ch);
    }
    absl::MutexLock lock(&mu_);
    WaitWhileHeldLocked();
    text_.push_back(traits_type::to_char_type(ch));
    return ch;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    absl::MutexLock lock(&mu_);
    WaitWhileHeldLocked();
    text_.append(s, static_cast<size_t>(n));
    return n;
  }

 private:
  void WaitWhileHeldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto released = [this]()
                        ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !held_; };
    mu_.Await(absl::Condition(&released));
  }

  mutable absl::Mutex mu_;
  std::string text_ ABSL_GUARDED_BY(mu_);
  bool held_ ABSL_GUARDED_BY(mu_) = false;
};

// One command's streams, readable while it runs.
class Captured {
 public:
  Captured() : out_(&out_buf_), err_(&err_buf_) {}
  cli::Io io(std::stop_token stop = {}) {
    cli::Io io;
    io.out = &out_;
    io.err = &err_;
    io.read_line = cli::LinesOf(in_);
    io.stop = std::move(stop);
    return io;
  }
  void set_input(const std::string& text) { in_.str(text); }
  void HoldOutput() { out_buf_.Hold(); }
  void ReleaseOutput() { out_buf_.Release(); }
  std::string out() const { return out_buf_.contents(); }
  std::string err() const { return err_buf_.contents(); }

 private:
  LockedStringBuf out_buf_;
  LockedStringBuf err_buf_;
  std::ostream out_;
  std::ostream err_;
  std::istringstream in_;
};

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

// One line on stderr: "herald: ...\n".
MATCHER(IsOneErrorLine, "is one line starting \"herald: \"") {
  return absl::StartsWith(arg, "herald: ") && absl::EndsWith(arg, "\n") &&
         arg.find('\n') == arg.size() - 1;
}

class HeraldCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto broker = Broker::Create();
    ASSERT_THAT(broker.status(), IsOk());
    broker_ = *std::move(broker);
    net::ServerOptions options;
    options.sdk_endpoint = "tcp://127.0.0.1:*";
    options.publish_endpoint = "";
    options.subscribe_endpoint = "";
    auto server = net::Server::Start(broker_.get(), options);
    ASSERT_THAT(server.status(), IsOk());
    server_ = *std::move(server);
    url_ = server_->sdk_endpoint();
  }
  void TearDown() override {
    server_.reset();
    broker_.reset();
  }

  // Runs `herald ARGS --url URL` to completion.
  int Run(std::vector<std::string> args, Captured& captured,
          std::stop_token stop = {}) {
    args.push_back("--url");
    args.push_back(url_);
    return cli::Run(args, captured.io(std::move(stop)));
  }

  std::unique_ptr<Broker> broker_;
  std::unique_ptr<net::Server> server_;
  std::string url_;
};

// Runs `herald ARGS --url URL` on a thread of its own. The destructor stops
// it (as SIGINT would), releases held output and joins, so a failed ASSERT
// does not leave the thread running.
class Background {
 public:
  Background(std::vector<std::string> args, const std::string& url,
             bool hold_output = false) {
    if (hold_output) captured_.HoldOutput();
    args.push_back("--url");
    args.push_back(url);
    thread_ = std::thread([this, args = std::move(args)] {
      internal::EnsureThreadIdentity();
      code_ = cli::Run(args, captured_.io(stop_.get_token()));
    });
  }
  ~Background() {
    stop_.request_stop();
    captured_.ReleaseOutput();
    if (thread_.joinable()) thread_.join();
  }

  Captured& captured() { return captured_; }
  // Waits until `herald sub` says its subscription is live.
  ::testing::AssertionResult WaitUntilSubscribed() {
    return WaitFor(
        [&] { return absl::StrContains(captured_.err(), "subscribed to"); });
  }
  // Requests a stop (what SIGINT does in main.cc).
  void Stop() { stop_.request_stop(); }
  // Joins the command and returns its exit code.
  int Join() {
    thread_.join();
    return code_;
  }

 private:
  Captured captured_;
  std::stop_source stop_;
  int code_ = -1;
  std::thread thread_;
};

TEST_F(HeraldCliTest, PubThenSubRoundTripPrintsEachMessageEscaped) {
  constexpr char kExpectedSubOut[] =
      "[orders.eu.created] hello world\n"
      "[orders.eu.created] hello world\n"
      "[orders.us.created] line\\x01\\tend\\\\\n"
      "[orders.us.created] second\n";
  Background sub({"sub", "orders.*.created", "--count", "4"}, url_);
  ASSERT_TRUE(sub.WaitUntilSubscribed());

  Captured pub1;
  EXPECT_EQ(
      Run({"pub", "orders.eu.created", "hello world", "--count", "2"}, pub1),
      cli::kExitOk);
  EXPECT_EQ(pub1.out(),
            "published 2 messages to \"orders.eu.created\": 2 accepted by the "
            "broker, 0 refused, 0 dropped\n");
  EXPECT_THAT(pub1.err(), IsEmpty());

  Captured pub2;  // No MESSAGE: the input's lines.
  pub2.set_input("line\x01\tend\\\nsecond\n");
  EXPECT_EQ(Run({"pub", "orders.us.created"}, pub2), cli::kExitOk);
  EXPECT_EQ(pub2.out(),
            "published 2 messages to \"orders.us.created\": 2 accepted by the "
            "broker, 0 refused, 0 dropped\n");

  // --count 4: it ends by itself.
  EXPECT_EQ(sub.Join(), cli::kExitOk);
  EXPECT_EQ(sub.captured().out(), kExpectedSubOut);
  EXPECT_THAT(sub.captured().err(),
              HasSubstr("received 4 messages on \"orders.*.created\" (missed "
                        "0, gaps 0); subscription totals: matched 4, "
                        "delivered 4, dropped 0, abandoned 0"));
}

TEST_F(HeraldCliTest, SubUntilStoppedPrintsSummaryAndExitsZero) {
  Background sub({"sub", "alerts.>"}, url_);
  ASSERT_TRUE(sub.WaitUntilSubscribed());
  Captured pub;
  ASSERT_EQ(Run({"pub", "alerts.disk", "full"}, pub), cli::kExitOk);
  ASSERT_TRUE(
      WaitFor([&] { return sub.captured().out() == "[alerts.disk] full\n"; }));

  sub.Stop();
  EXPECT_EQ(sub.Join(), cli::kExitOk);
  EXPECT_THAT(sub.captured().err(),
              HasSubstr("received 1 message on \"alerts.>\""));
  EXPECT_EQ(broker_->Stats().subscriptions_active(), 0u);
}

TEST_F(HeraldCliTest, SubReportsMissedMessagesAndTotalsAfterDrops) {
  // The subscriber's output is held, so it stops consuming after its first
  // message; with a capacity-2 drop-newest queue (and so a credit window of
  // 2) most of kBurst messages are dropped, and reported as missed on the
  // next delivery.
  constexpr uint64_t kBurst = 11;
  Background sub({"sub", "m.x", "--capacity", "2", "--policy", "drop-newest"},
                 url_,
                 /*hold_output=*/true);
  ASSERT_TRUE(sub.WaitUntilSubscribed());
  for (uint64_t i = 0; i < kBurst; ++i) {
    ASSERT_THAT(broker_->Publish("m.x", absl::StrCat("p", i)).status(), IsOk());
  }
  // Drops happen inside Publish(): final now.
  const v1::BrokerStats after_burst = broker_->Stats();
  ASSERT_EQ(after_burst.subscriptions_size(), 1);
  const uint64_t dropped = after_burst.subscriptions(0).dropped().queue_full();
  ASSERT_GT(dropped, 0u) << after_burst.DebugString();
  const uint64_t kept = kBurst - dropped;

  sub.captured().ReleaseOutput();
  ASSERT_TRUE(WaitFor([&] {
    const v1::BrokerStats s = broker_->Stats();
    return Lines(sub.captured().out()).size() == kept &&
           s.subscriptions_size() == 1 && s.subscriptions(0).queued() == 0;
  })) << sub.captured().out();
  // The queue has room again: this one is delivered, carrying the count of
  // the drops since the previous delivery.
  ASSERT_THAT(broker_->Publish("m.x", "end").status(), IsOk());
  ASSERT_TRUE(WaitFor([&] {
    return absl::EndsWith(sub.captured().out(), "[m.x] end\n");
  })) << sub.captured().out();
  sub.Stop();

  EXPECT_EQ(sub.Join(), cli::kExitOk);
  EXPECT_EQ(Lines(sub.captured().out()).front(), "[m.x] p0");
  EXPECT_THAT(sub.captured().err(),
              HasSubstr("herald: sub: the broker dropped"));
  EXPECT_THAT(sub.captured().err(),
              HasSubstr(absl::StrCat(
                  "received ", kept + 1, " messages on \"m.x\" (missed ",
                  dropped, ", gaps 0); subscription totals: matched ",
                  kBurst + 1, ", delivered ", kept + 1, ", dropped ", dropped,
                  " (queue_full=", dropped, "), abandoned 0")));
}

TEST_F(HeraldCliTest, ValuesTheBrokerRefusesAreUsageErrors) {
  // Over max_message_bytes (1 MiB by default): the SDK checks it against
  // the broker's Welcome before sending.
  Captured pub;
  EXPECT_EQ(Run({"pub", "big", "--size", "2000000"}, pub), cli::kExitUsage);
  EXPECT_THAT(pub.err(), IsOneErrorLine());
  EXPECT_THAT(pub.err(), HasSubstr("max_message_bytes"));
  // Over max_queue_capacity (1 << 20 by default).
  Captured sub;
  EXPECT_EQ(Run({"sub", "t", "--capacity", "2000000"}, sub), cli::kExitUsage);
  EXPECT_THAT(sub.err(), IsOneErrorLine());
  EXPECT_EQ(broker_->Stats().subscriptions_active(), 0u);
}

TEST_F(HeraldCliTest, StatsTableShowsExactCounts) {
  SubscriptionOptions options;
  options.queue_capacity = 2;
  auto sub = broker_->Subscribe("s.a", options);
  ASSERT_THAT(sub.status(), IsOk());
  constexpr int kPublished = 5;
  for (int i = 0; i < kPublished; ++i) {
    ASSERT_THAT(broker_->Publish("s.a", "x").status(), IsOk());
  }
  ASSERT_THAT(broker_->Publish("s.none", "x").status(), IsOk());

  Captured stats;
  ASSERT_EQ(Run({"stats"}, stats), cli::kExitOk) << stats.err();

  const std::vector<std::string> lines = Lines(stats.out());
  EXPECT_THAT(lines, Contains("published: 6 (unmatched: 1)"));
  EXPECT_THAT(lines,
              Contains("refused: 0 (invalid: 0, too_large: 0, shutdown: 0)"));
  EXPECT_THAT(lines, Contains("subscriptions: 1 active, 0 closed, 0 refused"));
  // The server's part: the stats command's own session is the only one.
  EXPECT_THAT(lines,
              Contains("sessions: 1 active (1 opened, 0 expired, 0 closed, "
                       "0 detached, 0 refused)"));
  EXPECT_THAT(lines, Contains("plain endpoints: published: 0, refused: 0, "
                              "delivered: 0, abandoned at stop: 0, "
                              "SUB prefixes: 0"));
  EXPECT_THAT(lines, Contains(MatchesRegex(
                         "ID +PATTERN +GROUP +POLICY +CAPACITY +MATCHED +"
                         "DELIVERED +DROPPED +QUEUED +HIGH_WATER +"
                         "DROP_REASONS")));
  // matched 5, delivered 0, dropped 3 (queue full), queued 2, high water 2.
  EXPECT_THAT(lines,
              Contains(MatchesRegex(" *[0-9]+  s\\.a +- +drop-newest +2 +5 +0 +"
                                    "3 +2 +2 +queue_full=3")));
  EXPECT_THAT(stats.err(), IsEmpty());
}

TEST_F(HeraldCliTest, StatsJsonPrintsEveryFieldWithProtoNames) {
  SubscriptionOptions options;
  options.queue_capacity = 2;
  auto sub = broker_->Subscribe("s.a", options);
  ASSERT_THAT(sub.status(), IsOk());
  for (int i = 0; i < 3; ++i) {
    ASSERT_THAT(broker_->Publish("s.a", "x").status(), IsOk());
  }

  Captured stats;
  ASSERT_EQ(Run({"stats", "--json"}, stats), cli::kExitOk) << stats.err();

  const std::string json = stats.out();
  // Zero counts are printed, under proto field names, 64-bit as strings.
  EXPECT_THAT(json, AllOf(HasSubstr("\"published\":\"3\""),
                          HasSubstr("\"published_unmatched\":\"0\""),
                          HasSubstr("\"refused_invalid\":\"0\""),
                          HasSubstr("\"queue_full\":\"1\""),
                          HasSubstr("\"evicted_oldest\":\"0\"")));
  v1::StatsReply reply;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &reply).ok());
  EXPECT_EQ(reply.broker().published(), 3u);
  ASSERT_EQ(reply.broker().subscriptions_size(), 1);
  const v1::SubscriptionStats& s = reply.broker().subscriptions(0);
  EXPECT_EQ(s.pattern(), "s.a");
  EXPECT_EQ(s.matched(), 3u);
  EXPECT_EQ(s.queued(), 2u);
  EXPECT_EQ(s.dropped().queue_full(), 1u);
  ASSERT_TRUE(reply.has_server());
  EXPECT_EQ(reply.server().sessions_active(), 1u);
  EXPECT_EQ(reply.server().sessions_opened(), 1u);
}

TEST_F(HeraldCliTest, BenchSmallRunCompletesAndPrintsTable) {
  Captured bench;
  ASSERT_EQ(Run({"bench", "--pub", "1", "--sub", "2", "--msgs", "200", "--size",
                 "16"},
                bench),
            cli::kExitOk)
      << bench.err();

  const std::vector<std::string> lines = Lines(bench.out());
  EXPECT_THAT(lines, Contains(MatchesRegex(
                         " +MSGS +MSGS/S +MB/S +DROPPED +MISSED +P50 +P99 +"
                         "P99\\.9")));
  // 200 < the default capacity: nothing dropped, every message received.
  EXPECT_THAT(lines, Contains(MatchesRegex("pub 1 +200 +.*")));
  EXPECT_THAT(lines, Contains(MatchesRegex("sub 1 +200 +[0-9,]+ +[0-9.]+ +0 +"
                                           "0 +[0-9.]+[a-z]+ .*")));
  EXPECT_THAT(lines, Contains(MatchesRegex("sub 2 +200 +.*")));
  EXPECT_THAT(lines, Contains(MatchesRegex("sub all +400 +.*")));
  EXPECT_THAT(lines, Contains("subscriber drops (broker): none"));
  EXPECT_THAT(lines, Contains("accounting: matched == delivered + dropped + "
                              "queued + abandoned for every subscription: ok"));
  // The bench's subscriptions are closed again.
  EXPECT_EQ(broker_->Stats().subscriptions_active(), 0u);
}

TEST_F(HeraldCliTest, BenchPrintsProgressLinesOnLongerRuns) {
  // 100 messages at 200 a second: about half a second, ten 50ms intervals.
  Captured bench;
  ASSERT_EQ(Run({"bench", "--pub", "1", "--sub", "1", "--msgs", "100", "--rate",
                 "200", "--progress-interval", "50ms"},
                bench),
            cli::kExitOk)
      << bench.err();
  EXPECT_THAT(Lines(bench.err()),
              Contains(MatchesRegex("bench [0-9.]+s: published [0-9,]+/100 "
                                    "\\([0-9,]+/s\\), received [0-9,]+/100, "
                                    "missed 0")));
}

struct BadUsageCase {
  std::vector<std::string> args;
  const char* message;  // A part of the one error line.
};

class HeraldCliBadUsageTest : public ::testing::TestWithParam<BadUsageCase> {};

TEST_P(HeraldCliBadUsageTest, PrintsOneLineAndExitsTwo) {
  Captured captured;
  const int code = cli::Run(GetParam().args, captured.io());
  EXPECT_EQ(code, cli::kExitUsage);
  EXPECT_THAT(captured.err(), IsOneErrorLine());
  EXPECT_THAT(captured.err(), HasSubstr(GetParam().message));
  EXPECT_THAT(captured.out(), IsEmpty());
}

INSTANTIATE_TEST_SUITE_P(
    Flags, HeraldCliBadUsageTest,
    ::testing::Values(
        BadUsageCase{{}, "no command"},
        BadUsageCase{{"frob"}, "unknown command \"frob\""},
        BadUsageCase{{"pub"}, "expected TOPIC [MESSAGE]"},
        BadUsageCase{{"pub", "t", "m", "extra"}, "expected TOPIC [MESSAGE]"},
        BadUsageCase{{"pub", "a..b", "m"}, "topic \"a..b\""},
        BadUsageCase{{"pub", "a.*", "m"}, "topic \"a.*\""},
        BadUsageCase{{"pub", "t", "m", "--count", "x"},
                     "--count \"x\": not a whole number"},
        BadUsageCase{{"pub", "t", "m", "--count", "-1"},
                     "--count \"-1\": not a whole number"},
        BadUsageCase{{"pub", "t", "m", "--nope=1"},
                     "unknown flag \"--nope=1\""},
        BadUsageCase{{"pub", "t", "m", "--count=-1"},
                     "--count \"-1\": not a whole number"},
        BadUsageCase{{"pub", "t", "m", "--count", "0"}, "--count \"0\""},
        BadUsageCase{{"pub", "t", "m", "--rate=-5"}, "--rate \"-5\": must be"},
        BadUsageCase{{"pub", "t", "m", "--rate", "fast"},
                     "--rate \"fast\": not a number"},
        BadUsageCase{{"pub", "t", "m", "--size", "3"}, "not both"},
        BadUsageCase{{"pub", "t", "--size", "2000000000"}, "--size"},
        BadUsageCase{{"pub", "t", "m", "--timeout", "soon"},
                     "--timeout \"soon\": not a duration"},
        BadUsageCase{{"pub", "t", "m", "--count"}, "--count needs a value"},
        BadUsageCase{{"sub"}, "expected PATTERN"},
        BadUsageCase{{"sub", "a.>.b"}, "pattern \"a.>.b\""},
        BadUsageCase{{"sub", "p", "--policy", "sideways"},
                     "--policy \"sideways\": not one of drop-newest, "
                     "drop-oldest, block"},
        BadUsageCase{{"sub", "p", "--capacity", "0"},
                     "--capacity \"0\": must be at least 1"},
        BadUsageCase{{"sub", "p", "--block-timeout", "0s"},
                     "--block-timeout \"0s\": must be positive"},
        BadUsageCase{{"sub", "p", "--bogus"}, "unknown flag \"--bogus\""},
        BadUsageCase{{"stats", "--json=maybe"},
                     "--json \"maybe\": not one of true, false"},
        BadUsageCase{{"stats", "extra"}, "unexpected argument \"extra\""},
        BadUsageCase{{"stats", "--url", "http://x"}, "--url \"http://x\""},
        BadUsageCase{{"stats", "--connect-timeout", "-1s"},
                     "--connect-timeout \"-1s\""},
        BadUsageCase{{"bench", "--pub", "0"}, "--pub \"0\": must be in"},
        BadUsageCase{{"bench", "--msgs", "0"}, "--msgs \"0\": must be at"},
        BadUsageCase{{"bench", "--size", "abc"},
                     "--size \"abc\": not a whole number"},
        BadUsageCase{{"bench", "--topic", "a.>"}, "topic \"a.>\""},
        BadUsageCase{{"--url"}, "no command"},
        BadUsageCase{{"--url", "tcp://127.0.0.1:1"}, "no command"},
        BadUsageCase{{"--count", "3", "pub", "t"},
                     "\"--count\" before the command"},
        BadUsageCase{{"--url=http://x", "stats"}, "--url \"http://x\""},
        BadUsageCase{{"help", "frob"}, "unknown command \"frob\""}));

TEST(HeraldCliUnreachableTest, EachCommandFailsWithOneLineWithinItsTimeout) {
  // A port that was just free: a server bound it, then stopped.
  std::string url;
  {
    auto broker = Broker::Create();
    ASSERT_THAT(broker.status(), IsOk());
    net::ServerOptions options;
    options.sdk_endpoint = "tcp://127.0.0.1:*";
    options.publish_endpoint = "";
    options.subscribe_endpoint = "";
    auto server = net::Server::Start(broker->get(), options);
    ASSERT_THAT(server.status(), IsOk());
    url = (*server)->sdk_endpoint();
  }
  const std::vector<std::vector<std::string>> commands = {
      {"pub", "t", "m"}, {"sub", "t"}, {"stats"}, {"bench", "--msgs", "1"}};
  for (int before = 0; before < 2; ++before) {
    for (std::vector<std::string> args : commands) {
      SCOPED_TRACE(absl::StrCat(args[0], before ? ", flags first" : ""));
      const std::vector<std::string> flags = {"--url", url, "--connect-timeout",
                                              kShortConnectTimeout};
      // As `nats` allows, the common flags may come before the command.
      args.insert(before ? args.begin() : args.end(), flags.begin(),
                  flags.end());
      Captured captured;
      const absl::Time start = absl::Now();
      const int code = cli::Run(args, captured.io());
      EXPECT_LT(absl::Now() - start, kUnreachableBound);
      EXPECT_EQ(code, cli::kExitFailure);
      EXPECT_THAT(captured.err(), IsOneErrorLine());
      EXPECT_THAT(captured.err(), HasSubstr(url));
    }
  }
}

TEST(HeraldCliHelpTest, HelpPrintsUsageAndExitsZero) {
  for (const char* command : {"pub", "sub", "stats", "bench"}) {
    Captured captured;
    EXPECT_EQ(cli::Run({command, "--help"}, captured.io()), cli::kExitOk);
    EXPECT_THAT(captured.out(),
                HasSubstr(absl::StrCat("usage: herald ", command)));
    EXPECT_THAT(captured.out(), HasSubstr("--url="));
  }
  Captured captured;
  EXPECT_EQ(cli::Run({"help"}, captured.io()), cli::kExitOk);
  EXPECT_THAT(captured.out(), HasSubstr("commands:"));
  // `herald help pub` is `herald pub --help`.
  Captured pub_help;
  EXPECT_EQ(cli::Run({"help", "pub"}, pub_help.io()), cli::kExitOk);
  EXPECT_THAT(pub_help.out(), HasSubstr("usage: herald pub"));
  EXPECT_THAT(pub_help.out(), HasSubstr("--count="));
}

TEST(FormatTest, EscapeBytesEscapesEverythingNotPrintableAscii) {
  struct Case {
    std::string in;
    std::string out;
  };
  const Case cases[] = {
      {"plain text {\"a\": 1}", "plain text {\"a\": 1}"},
      {"", ""},
      {"a\nb\rc\td", "a\\nb\\rc\\td"},
      {"back\\slash", "back\\\\slash"},
      {std::string("nul\0x", 5), "nul\\x00x"},
      {"\x1b[31mred", "\\x1b[31mred"},
      {"\x7f\x80\xff", "\\x7f\\x80\\xff"},
      {"caf\xc3\xa9", "caf\\xc3\\xa9"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(cli::EscapeBytes(c.in), c.out) << c.in;
  }
}

TEST(FormatTest, GroupDigitsPutsACommaEveryThreeDigits) {
  EXPECT_EQ(cli::GroupDigits(0), "0");
  EXPECT_EQ(cli::GroupDigits(999), "999");
  EXPECT_EQ(cli::GroupDigits(1000), "1,000");
  EXPECT_EQ(cli::GroupDigits(70913), "70,913");
  EXPECT_EQ(cli::GroupDigits(1234567), "1,234,567");
}

TEST(FormatTest, ShortDurationKeepsThreeSignificantDigits) {
  EXPECT_EQ(cli::ShortDuration(absl::Nanoseconds(812)), "812ns");
  EXPECT_EQ(cli::ShortDuration(absl::Nanoseconds(45300)), "45.3us");
  EXPECT_EQ(cli::ShortDuration(absl::Microseconds(1200)), "1.20ms");
  EXPECT_EQ(cli::ShortDuration(absl::Milliseconds(2500)), "2.50s");
}

TEST(FormatTest, TableAlignsNumbersRightAndTextLeft) {
  cli::Table table({"NAME", "GROUP", "COUNT"});
  table.AddRow({"a", "-", "5"});
  table.AddRow({"long", "-", "1,000"});
  table.AddRow({"dash", "-", "-"});
  EXPECT_EQ(table.Render(),
            "NAME  GROUP  COUNT\n"
            "a     -          5\n"
            "long  -      1,000\n"
            "dash  -          -\n");
}

}  // namespace
}  // namespace herald
