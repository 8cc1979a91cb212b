// heraldd in its own process, with publisher and subscriber processes: the
// `herald` CLI (`herald sub`, two `herald pub`) talking to heraldd over tcp.
// The subscriber process must receive exactly what was published, in order
// per publisher, and heraldd, SIGTERMed, must exit 0 with a final stats line
// that counts exactly the messages published. Every wait has a deadline and
// reads the children's output lines; nothing sleeps to synchronize.
#include <signal.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "examples/net_orders/child_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/env.h"

namespace herald {
namespace {

using ::herald::examples::ChildOptions;
using ::herald::examples::ChildProcess;
using ::herald::examples::FieldNumber;
using ::herald::examples::RunfilePath;
using ::testing::ElementsAreArray;

// Generous: sanitizer builds on a loaded 2-core machine are slow, and a
// passing test returns as soon as what it waits for happens.
constexpr absl::Duration kTimeout = absl::Seconds(60);

std::string TempPath(absl::string_view name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
}

// Writes the lines "0" .. "n-1" to `path`: one message per line for
// `herald pub` reading stdin.
void WriteNumbers(const std::string& path, uint64_t n) {
  std::ofstream out(path);
  for (uint64_t i = 0; i < n; ++i) out << i << "\n";
}

std::string Output(const ChildProcess& p) {
  return absl::StrJoin(p.lines(), "\n");
}

TEST(HeralddProcessesTest, SubscriberProcessReceivesExactlyWhatPublishersSent) {
  const uint64_t n = testing::ScaledCount(2000, 50);  // Per publisher.
  const std::vector<std::string> topics = {"it.a", "it.b"};
  const std::string herald = RunfilePath("tools/herald/herald");

  std::string endpoint;
  absl::StatusOr<ChildProcess> daemon =
      examples::StartHeraldd({}, absl::Now() + kTimeout, &endpoint);
  ASSERT_TRUE(daemon.ok()) << daemon.status();

  // The subscriber process; its queue holds everything, so nothing may be
  // dropped. It is subscribed once it says so (on stderr, merged).
  ChildOptions merged;
  merged.merge_stderr = true;
  absl::StatusOr<ChildProcess> sub = ChildProcess::Start(
      {herald, "sub", "it.>", absl::StrCat("--url=", endpoint),
       absl::StrCat("--count=", topics.size() * n),
       absl::StrCat("--capacity=", topics.size() * n)},
      merged);
  ASSERT_TRUE(sub.ok()) << sub.status();
  absl::StatusOr<std::string> subscribed =
      sub->ReadLineStartingWith("subscribed to", absl::Now() + kTimeout);
  ASSERT_TRUE(subscribed.ok()) << subscribed.status() << "\n" << Output(*sub);

  // Two publisher processes at once, each publishing 0 .. n-1 (its stdin)
  // on its own topic.
  std::vector<ChildProcess> publishers;
  for (const std::string& topic : topics) {
    ChildOptions options = merged;
    options.stdin_file = TempPath(absl::StrCat("numbers_", topic));
    WriteNumbers(options.stdin_file, n);
    absl::StatusOr<ChildProcess> pub = ChildProcess::Start(
        {herald, "pub", topic, absl::StrCat("--url=", endpoint)}, options);
    ASSERT_TRUE(pub.ok()) << pub.status();
    publishers.push_back(*std::move(pub));
  }
  for (ChildProcess& pub : publishers) {
    absl::StatusOr<int> code = pub.Wait(absl::Now() + kTimeout);
    ASSERT_TRUE(code.ok()) << code.status() << "\n" << Output(pub);
    EXPECT_EQ(*code, 0) << Output(pub);
  }

  // The subscriber exits by itself after 2n messages: exactly what was sent,
  // in order per publisher.
  absl::StatusOr<int> sub_code = sub->Wait(absl::Now() + kTimeout);
  ASSERT_TRUE(sub_code.ok()) << sub_code.status() << "\n" << Output(*sub);
  EXPECT_EQ(*sub_code, 0) << Output(*sub);
  std::map<std::string, std::vector<uint64_t>> received;
  uint64_t other_lines = 0;
  for (const std::string& line : sub->lines()) {
    bool matched = false;
    for (const std::string& topic : topics) {
      absl::string_view rest = line;
      uint64_t value = 0;
      if (absl::ConsumePrefix(&rest, absl::StrCat("[", topic, "] ")) &&
          absl::SimpleAtoi(rest, &value)) {
        received[topic].push_back(value);
        matched = true;
      }
    }
    if (!matched && absl::StartsWith(line, "[")) ++other_lines;
  }
  std::vector<uint64_t> expected(n);
  for (uint64_t i = 0; i < n; ++i) expected[i] = i;
  for (const std::string& topic : topics) {
    EXPECT_THAT(received[topic], ElementsAreArray(expected)) << topic;
  }
  EXPECT_EQ(other_lines, 0) << Output(*sub);

  // heraldd: SIGTERM, exit 0, and a final stats line with the exact count.
  ASSERT_TRUE(daemon->Signal(SIGTERM).ok());
  absl::StatusOr<int> daemon_code = daemon->Wait(absl::Now() + kTimeout);
  ASSERT_TRUE(daemon_code.ok()) << daemon_code.status();
  EXPECT_EQ(*daemon_code, 0) << Output(*daemon);
  std::optional<uint64_t> published;
  for (const std::string& line : daemon->lines()) {
    if (absl::StartsWith(line, "heraldd: stopped")) {
      published = FieldNumber(line, "published");
    }
  }
  ASSERT_TRUE(published.has_value()) << Output(*daemon);
  EXPECT_EQ(*published, topics.size() * n) << Output(*daemon);
}

}  // namespace
}  // namespace herald
