#include "broker/topic.h"

#include <ostream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace herald {
namespace {

using ::herald::testing::IsOk;
using ::herald::testing::StatusIs;
using ::testing::HasSubstr;

// One input checked both as a publish topic and as a subscription pattern.
// An empty error means valid; otherwise a fragment of the expected message.
struct ValidityCase {
  std::string input;
  std::string topic_error;
  std::string pattern_error;
};

void PrintTo(const ValidityCase& c, std::ostream* os) {
  *os << ::testing::PrintToString(c.input);
}

constexpr char kOk[] = "";
constexpr char kWildcard[] = "wildcards are for subscription patterns only";

// Seeded with NATS's subject edge cases (server/sublist_test.go,
// TestSublistValidLiteralSubjects / TestSublistValidSubjects), adjusted for
// Herald's stricter rule that `*` and `>` are whole tokens or errors.
const ValidityCase kValidityCases[] = {
    {"foo", kOk, kOk},
    {"foo.bar", kOk, kOk},
    {"orders.eu.created", kOk, kOk},
    {"a.b.c.d.e.f.g.h", kOk, kOk},
    {"foo-bar_baz.qux:1", kOk, kOk},
    {"caf\xc3\xa9.cr\xc3\xa8me", kOk, kOk},  // UTF-8 is fine.
    {"*", kWildcard, kOk},
    {">", kWildcard, kOk},
    {"foo.*", kWildcard, kOk},
    {"foo.>", kWildcard, kOk},
    {"*.bar", kWildcard, kOk},
    {"*.*.>", kWildcard, kOk},
    {"foo.*.bar", kWildcard, kOk},
    {"", "topic is empty", "pattern is empty"},
    {".", "empty token at byte 0", "empty token at byte 0"},
    {".foo", "empty token at byte 0", "empty token at byte 0"},
    {"foo.", "empty token at byte 4", "empty token at byte 4"},
    {"foo..bar", "empty token at byte 4", "empty token at byte 4"},
    {"foo.>.bar", kWildcard, "\">\" at byte 4 is not the last token"},
    {">.bar", kWildcard, "not the last token"},
    {"foo.>.>", kWildcard, "not the last token"},
    {"foo*", "mixes a wildcard", "mixes a wildcard"},
    {"foo*bar", "mixes a wildcard", "mixes a wildcard"},
    {"foo.*bar", "token \"*bar\" at byte 4 mixes", "mixes a wildcard"},
    {"foo.b*r.baz", "mixes a wildcard", "mixes a wildcard"},
    {"foo>", "mixes a wildcard", "mixes a wildcard"},
    {"foo.>>", "mixes a wildcard", "mixes a wildcard"},
    {"**", "mixes a wildcard", "mixes a wildcard"},
    {"foo bar", "space at byte 3", "space at byte 3"},
    {"foo.\tbar", "control byte 0x09 at byte 4", "control byte 0x09 at byte 4"},
    {"foo\nbar", "control byte 0x0a", "control byte 0x0a"},
    {std::string("foo\0bar", 7), "control byte 0x00 at byte 3",
     "control byte 0x00 at byte 3"},
    {"foo\x7f", "control byte 0x7f", "control byte 0x7f"},
    {std::string(kMaxTopicLength, 'a'), kOk, kOk},
    {std::string(kMaxTopicLength + 1, 'a'), "513 bytes is over the limit",
     "513 bytes is over the limit"},
};

void ExpectValidity(const absl::Status& status, const std::string& error) {
  if (error.empty()) {
    EXPECT_THAT(status, IsOk());
  } else {
    EXPECT_THAT(status,
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(error)));
  }
}

class TopicValidityTest : public ::testing::TestWithParam<ValidityCase> {};

TEST_P(TopicValidityTest, ValidateTopicAcceptsOnlyLiteralTopics) {
  ExpectValidity(ValidateTopic(GetParam().input), GetParam().topic_error);
}

TEST_P(TopicValidityTest, ValidatePatternAcceptsWholeTokenWildcards) {
  ExpectValidity(ValidatePattern(GetParam().input), GetParam().pattern_error);
}

INSTANTIATE_TEST_SUITE_P(NatsEdgeCases, TopicValidityTest,
                         ::testing::ValuesIn(kValidityCases));

TEST(TopicTest, ErrorMessageQuotesTheTopicAndEscapesControlBytes) {
  EXPECT_THAT(ValidateTopic("a..b"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "topic \"a..b\": empty token at byte 2"));
  EXPECT_THAT(ValidatePattern("a\nb"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "pattern \"a\\x0ab\": control byte 0x0a at byte 1"));
}

TEST(TopicTest, ErrorMessageForLongTopicIsShortened) {
  const std::string long_topic(10000, 'x');
  const absl::Status status = ValidateTopic(long_topic);
  ASSERT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_LT(status.message().size(), 200u);
  EXPECT_THAT(std::string(status.message()), HasSubstr("10000 bytes"));
}

struct MatchCase {
  const char* pattern;
  const char* topic;
  bool matches;
};

// From NATS's TestSublistMatchLiterals and wildcard tests.
const MatchCase kMatchCases[] = {
    {"foo", "foo", true},
    {"foo", "bar", false},
    {"foo", "foo.bar", false},
    {"foo.bar", "foo", false},
    {"foo.bar", "foo.bar", true},
    {"foo.bar", "foo.baz", false},
    {"*", "foo", true},
    {"*", "foo.bar", false},
    {">", "foo", true},
    {">", "foo.bar.baz", true},
    {"foo.*", "foo.bar", true},
    {"foo.*", "foo", false},
    {"foo.*", "foo.bar.baz", false},
    {"foo.>", "foo.bar", true},
    {"foo.>", "foo.bar.baz", true},
    {"foo.>", "foo", false},
    {"foo.>", "food.bar", false},
    {"*.bar", "foo.bar", true},
    {"*.bar", "foo.baz", false},
    {"*.*", "foo.bar", true},
    {"*.*", "foo", false},
    {"*.*.>", "a.b.c", true},
    {"*.*.>", "a.b", false},
    {"foo.*.baz", "foo.bar.baz", true},
    {"foo.*.baz", "foo.bar.qux", false},
    {"foo.*.>", "foo.bar.baz.qux", true},
    {"orders.*.created", "orders.eu.created", true},
    {"orders.*.created", "orders.eu.west.created", false},
    {"fo", "foo", false},
    {"foo", "fo", false},
    {"foo.ba", "foo.bar", false},
};

class PatternMatchesTest : public ::testing::TestWithParam<MatchCase> {};

TEST_P(PatternMatchesTest, MatchesPerNatsSemantics) {
  const MatchCase& c = GetParam();
  EXPECT_EQ(PatternMatches(c.pattern, c.topic), c.matches)
      << "pattern " << c.pattern << " topic " << c.topic;
}

INSTANTIATE_TEST_SUITE_P(NatsEdgeCases, PatternMatchesTest,
                         ::testing::ValuesIn(kMatchCases));

TEST(TopicTest, HasWildcardFindsOnlyWholeTokenWildcards) {
  EXPECT_FALSE(HasWildcard("foo.bar"));
  EXPECT_TRUE(HasWildcard("foo.*"));
  EXPECT_TRUE(HasWildcard("*.foo"));
  EXPECT_TRUE(HasWildcard(">"));
  EXPECT_TRUE(HasWildcard("a.*.b"));
}

}  // namespace
}  // namespace herald
