// kill -9 of a subscriber process: the server frees its session and its
// subscription within the session TTL, and keeps serving others.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "broker/broker.h"
#include "broker/net/server.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/wait_for.h"

namespace herald {
namespace {

using ::herald::testing::IsOk;
using ::herald::testing::WaitFor;

// The raw_subscriber binary, from the test's runfiles.
std::string SubscriberPath() {
  const char* dir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (dir == nullptr || workspace == nullptr)
    return "tests/fault/raw_subscriber";
  return std::string(dir) + "/" + workspace + "/tests/fault/raw_subscriber";
}

TEST(KilledSubscriberTest, SessionIsFreedWithinTheTtl) {
  auto broker = Broker::Create();
  ASSERT_THAT(broker, IsOk());
  net::ServerOptions options;
  options.sdk_endpoint = "tcp://127.0.0.1:*";
  options.publish_endpoint = "";
  options.subscribe_endpoint = "";
  options.session_ttl = absl::Milliseconds(500);
  auto server = net::Server::Start(broker->get(), options);
  ASSERT_THAT(server, IsOk());

  int out[2];
  ASSERT_EQ(pipe(out), 0);
  const std::string path = SubscriberPath();
  const std::string endpoint = (*server)->sdk_endpoint();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    execl(path.c_str(), path.c_str(), endpoint.c_str(), "orders.>",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  char ready[6] = {};
  ASSERT_EQ(read(out[0], ready, 5), 5) << "the subscriber did not start";
  close(out[0]);
  ASSERT_EQ(std::string(ready), "ready");
  EXPECT_EQ((*server)->Stats().sessions_active(), 1u);
  EXPECT_EQ((*broker)->Stats().subscriptions_active(), 1u);
  ASSERT_THAT((*broker)->Publish("orders.eu", "before the kill"), IsOk());
  // Let the server send it before the kill: a send to the dead peer would
  // end the session through EHOSTUNREACH (sessions_closed) instead of the
  // TTL this test is about.
  ASSERT_TRUE(WaitFor([&] { return (*server)->Stats().delivered() == 1; },
                      absl::Seconds(30)));

  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status));

  // Freed within the TTL (the deadline allows for a slow sanitizer run).
  const absl::Time killed = absl::Now();
  ASSERT_TRUE(
      WaitFor([&] { return (*server)->Stats().sessions_expired() == 1; },
              absl::Seconds(30)));
  const absl::Duration freed_after = absl::Now() - killed;
  std::printf("session freed %s after the kill (ttl 500ms)\n",
              absl::FormatDuration(freed_after).c_str());
  // The TTL did it: at most the TTL after the child's last ping, plus the
  // server's sweep interval (100 ms) and poll timeout (50 ms). The margin
  // covers a loaded sanitizer run; a session left to some other timeout
  // (the 30 s above) fails here.
  EXPECT_LT(freed_after, options.session_ttl + absl::Seconds(2));
  EXPECT_EQ((*server)->Stats().sessions_active(), 0u);
  const v1::BrokerStats stats = (*broker)->Stats();
  EXPECT_EQ(stats.subscriptions_active(), 0u);
  EXPECT_EQ(stats.subscriptions_closed(), 1u);
  EXPECT_EQ(stats.closed_matched(), 1u);
  // Every matched message is accounted for in the closed totals.
  EXPECT_EQ(stats.closed_matched(), stats.closed_delivered() +
                                        stats.closed_abandoned() +
                                        stats.closed_dropped().queue_full() +
                                        stats.closed_dropped().closed());
}

}  // namespace
}  // namespace herald
