#include "broker/message.h"

#include <string>

#include "absl/time/clock.h"
#include "broker/delivery.h"
#include "gtest/gtest.h"

namespace herald {
namespace {

TEST(MessageTest, HoldsCopiesOfTopicPayloadAndHeadersInOrder) {
  std::string topic = "orders.eu";
  std::string payload(1000, 'p');
  Headers headers = {{"a", "1"}, {"b", ""}, {"a", "3"}};
  const absl::Time now = absl::Now();
  MessageRef m =
      MessageRef::Adopt(Message::Create(topic, payload, headers, now, 1));
  topic.assign("changed");
  payload.assign("changed");
  headers.clear();
  EXPECT_EQ(m->topic(), "orders.eu");
  EXPECT_EQ(m->payload(), std::string(1000, 'p'));
  ASSERT_EQ(m->headers().size(), 3u);
  EXPECT_EQ(m->headers()[0].key, "a");
  EXPECT_EQ(m->headers()[1].key, "b");
  EXPECT_EQ(m->headers()[1].value, "");
  EXPECT_EQ(m->headers()[2].value, "3");
  absl::string_view value;
  ASSERT_TRUE(m->headers().Find("a", &value));
  EXPECT_EQ(value, "1");  // The first of duplicates.
  EXPECT_FALSE(m->headers().Find("missing", &value));
  EXPECT_EQ(m->publish_time(), absl::FromUnixNanos(absl::ToUnixNanos(now)));
}

TEST(MessageTest, EmptyPayloadAndNoHeaders) {
  MessageRef m =
      MessageRef::Adopt(Message::Create("t", "", {}, absl::Now(), 1));
  EXPECT_EQ(m->payload(), "");
  EXPECT_TRUE(m->headers().empty());
}

TEST(MessageTest, ByteSizeCountsTopicPayloadAndHeaders) {
  EXPECT_EQ(Message::ByteSize("abc", "12345", {{"kk", "vvv"}}), 3u + 5 + 2 + 3);
}

TEST(MessageTest, ReferencesAreSharedAndTheLastOneFrees) {
  // Two references made at creation, as for two subscribers; ASAN reports a
  // leak or a double free if the count is wrong.
  Message* raw = Message::Create("t", "x", {}, absl::Now(), 2);
  MessageRef a = MessageRef::Adopt(raw);
  {
    MessageRef b = MessageRef::Adopt(raw);
    MessageRef c = b;  // A third reference, dropped at scope end.
    EXPECT_EQ(c->payload(), "x");
  }
  Delivery d(a, 7, 2);
  EXPECT_EQ(d.payload(), "x");
  EXPECT_EQ(d.sequence(), 7u);
  EXPECT_EQ(d.missed(), 2u);
}

}  // namespace
}  // namespace herald
