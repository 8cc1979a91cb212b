// Runs the heraldd binary as a child process: it logs its OS-chosen
// endpoints, serves metrics whose counters match what a client did over the
// SDK protocol, sends Goodbye and exits 0 with a final stats line on SIGTERM
// or SIGINT, exits 2 on a bad flag and 1 when it cannot bind.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "schemas/protocol.pb.h"
#include "zmq.hpp"
#include "zmq_addon.hpp"

extern char** environ;

namespace herald {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Generous: sanitizer builds on a loaded 2-core machine are slow, and a
// passing test returns as soon as what it waits for happens.
constexpr absl::Duration kTimeout = absl::Seconds(60);

std::string HeralddPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  return absl::StrCat(srcdir != nullptr ? srcdir : ".", "/",
                      workspace != nullptr ? workspace : "herald",
                      "/tools/heraldd/heraldd");
}

std::string TempPath(absl::string_view name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
}

// A heraldd child process: stdout through a pipe (read line by line, with a
// deadline), stderr to a file. The destructor kills and reaps it if a test
// failed before it exited.
class Daemon {
 public:
  explicit Daemon(const std::vector<std::string>& flags) {
    static int counter = 0;
    stderr_path_ = TempPath(absl::StrCat("heraldd_stderr_", ++counter));
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) {
      ADD_FAILURE() << "pipe2: " << errno;
      return;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO,
                                     stderr_path_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const std::string path = HeralddPath();
    std::vector<std::string> args = {path};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid_, path.c_str(), &actions, nullptr,
                               argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    stdout_fd_ = out[0];
    if (rc != 0) {
      ADD_FAILURE() << "posix_spawn " << path << ": " << rc;
      pid_ = -1;
    }
  }

  ~Daemon() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    if (stdout_fd_ >= 0) close(stdout_fd_);
  }

  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  bool started() const { return pid_ > 0; }

  // The next line of stdout (without the newline), or nullopt at end of file
  // or when `deadline` passes.
  std::optional<std::string> ReadLine(absl::Time deadline) {
    while (true) {
      const size_t newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        lines_.push_back(line);
        return line;
      }
      if (eof_) return std::nullopt;
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return std::nullopt;
      pollfd p{stdout_fd_, POLLIN, 0};
      const int n = poll(&p, 1,
                         static_cast<int>(absl::ToInt64Milliseconds(
                             left + absl::Milliseconds(1))));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) continue;  // Timed out: the deadline check returns.
      char chunk[4096];
      const ssize_t got = read(stdout_fd_, chunk, sizeof(chunk));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        eof_ = true;
        continue;
      }
      buffer_.append(chunk, static_cast<size_t>(got));
    }
  }

  // Reads stdout until the line starting with `prefix`; returns it.
  std::optional<std::string> ReadUntil(absl::string_view prefix,
                                       absl::Time deadline) {
    while (std::optional<std::string> line = ReadLine(deadline)) {
      if (absl::StartsWith(*line, prefix)) return line;
    }
    return std::nullopt;
  }

  void Signal(int sig) { ASSERT_EQ(kill(pid_, sig), 0); }

  // Reads stdout to its end, then reaps the process. Returns its exit code
  // (128 + the signal if a signal ended it), or nullopt if stdout stays open
  // past `deadline`.
  std::optional<int> Wait(absl::Time deadline) {
    while (ReadLine(deadline)) {
    }
    if (!eof_) return std::nullopt;
    int status = 0;
    if (waitpid(pid_, &status, 0) != pid_) return std::nullopt;
    pid_ = -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return std::nullopt;
  }

  // Every stdout line read so far.
  const std::vector<std::string>& lines() const { return lines_; }

  std::string Stderr() const {
    std::ifstream in(stderr_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string stderr_path_;
  std::string buffer_;
  bool eof_ = false;
  std::vector<std::string> lines_;
};

// The logged endpoints of a daemon that started.
struct Endpoints {
  std::string sdk;
  std::string publish;
  std::string subscribe;
  std::string metrics_host;
  int metrics_port = 0;
};

// Reads the start-up lines up to "heraldd: ready" and parses the endpoints.
std::optional<Endpoints> ReadEndpoints(Daemon& daemon) {
  const absl::Time deadline = absl::Now() + kTimeout;
  Endpoints e;
  while (std::optional<std::string> line = daemon.ReadLine(deadline)) {
    absl::string_view rest = *line;
    if (absl::ConsumePrefix(&rest, "heraldd: sdk_endpoint ")) {
      e.sdk = std::string(rest);
    } else if (absl::ConsumePrefix(&rest, "heraldd: publish_endpoint ")) {
      e.publish = std::string(rest);
    } else if (absl::ConsumePrefix(&rest, "heraldd: subscribe_endpoint ")) {
      e.subscribe = std::string(rest);
    } else if (absl::ConsumePrefix(&rest, "heraldd: metrics_addr http://")) {
      const std::vector<std::string> parts =
          absl::StrSplit(rest, absl::ByAnyChar(": "));
      if (parts.size() < 2 || !absl::SimpleAtoi(parts[1], &e.metrics_port)) {
        return std::nullopt;
      }
      e.metrics_host = parts[0];
    } else if (absl::StartsWith(rest, "heraldd: ready")) {
      return e;
    }
  }
  return std::nullopt;
}

const std::vector<std::string> kOsChosenEndpoints = {
    "--sdk_endpoint=tcp://127.0.0.1:*",
    "--publish_endpoint=tcp://127.0.0.1:*",
    "--subscribe_endpoint=tcp://127.0.0.1:*",
};

std::vector<std::string> With(std::vector<std::string> flags,
                              const std::vector<std::string>& more) {
  flags.insert(flags.end(), more.begin(), more.end());
  return flags;
}

// True if `text` has a line that starts with `prefix`, contains every one of
// `parts` and ends with " value".
::testing::AssertionResult HasSample(const std::string& text,
                                     absl::string_view prefix,
                                     const std::vector<std::string>& parts,
                                     uint64_t value) {
  const std::string suffix = absl::StrCat(" ", value);
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, prefix) || !absl::EndsWith(line, suffix)) {
      continue;
    }
    bool all = true;
    for (const std::string& part : parts) all &= absl::StrContains(line, part);
    if (all) return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "no sample " << prefix << "... " << value << " in:\n"
         << text;
}

// ------------------------------------------------------ SDK protocol client

// A DEALER speaking docs/protocol.md directly.
class RawClient {
 public:
  explicit RawClient(const std::string& endpoint)
      : socket_(context_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::rcvtimeo,
                static_cast<int>(absl::ToInt64Milliseconds(kTimeout)));
    socket_.connect(endpoint);
  }

  void Send(const v1::Envelope& env,
            const std::vector<std::string>& payloads = {}) {
    std::vector<zmq::message_t> frames;
    frames.emplace_back(std::string("HRLD\x01", 5));
    frames.emplace_back(env.SerializeAsString());
    for (const std::string& p : payloads) frames.emplace_back(p);
    ASSERT_TRUE(zmq::send_multipart(socket_, frames).has_value());
  }

  // Receives until an envelope with `body` arrives (others are kept in
  // received()); nullopt after kTimeout.
  std::optional<v1::Envelope> Expect(v1::Envelope::BodyCase body) {
    const absl::Time deadline = absl::Now() + kTimeout;
    while (absl::Now() < deadline) {
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(socket_, std::back_inserter(frames))) {
        return std::nullopt;  // rcvtimeo passed.
      }
      if (frames.size() < 2) continue;
      v1::Envelope env;
      if (!env.ParseFromArray(frames[1].data(),
                              static_cast<int>(frames[1].size()))) {
        continue;
      }
      received_.push_back(env);
      if (env.body_case() == body) return env;
    }
    return std::nullopt;
  }

  const std::vector<v1::Envelope>& received() const { return received_; }

 private:
  zmq::context_t context_;
  zmq::socket_t socket_;
  std::vector<v1::Envelope> received_;
};

v1::Envelope Hello(uint64_t request_id) {
  v1::Envelope env;
  env.set_request_id(request_id);
  env.mutable_hello()->set_session_id(std::string(16, 'h'));
  env.mutable_hello()->set_protocol_version(1);
  env.mutable_hello()->set_client_name("heraldd_test");
  env.mutable_hello()->set_heartbeat_interval_ms(1000);
  return env;
}

v1::Envelope PublishBatch(uint64_t request_id, uint64_t batch, int entries,
                          const std::string& topic) {
  v1::Envelope env;
  env.set_request_id(request_id);
  env.mutable_publish()->set_batch_sequence(batch);
  for (int i = 0; i < entries; ++i) {
    env.mutable_publish()->add_entries()->set_topic(topic);
  }
  return env;
}

// ------------------------------------------------------------------- tests

TEST(HeralddTest, LogsEndpointsServesExactCountersAndStopsOnSigterm) {
  // No subscribe endpoint: its feed subscription would take every message
  // too, at its own pace, and blur the exact totals below.
  Daemon daemon({"--sdk_endpoint=tcp://127.0.0.1:*",
                 "--publish_endpoint=tcp://127.0.0.1:*",
                 "--subscribe_endpoint=", "--metrics_addr=127.0.0.1:0",
                 "--session_ttl=300s"});
  ASSERT_TRUE(daemon.started());
  const std::optional<Endpoints> endpoints = ReadEndpoints(daemon);
  ASSERT_TRUE(endpoints) << daemon.Stderr();
  EXPECT_THAT(endpoints->sdk, StartsWith("tcp://127.0.0.1:"));
  EXPECT_EQ(endpoints->subscribe, "off");
  ASSERT_EQ(endpoints->metrics_host, "127.0.0.1");
  ASSERT_GT(endpoints->metrics_port, 0);

  // A session with one subscription (capacity 1, credit 1): the first
  // message is delivered, using up the credit; of the next five, one waits in
  // the queue and four are dropped, queue_full.
  constexpr int kBatch = 5;
  constexpr int kPublished = 1 + kBatch;
  constexpr uint64_t kQueueFull = kBatch - 1;
  RawClient client(endpoints->sdk);
  client.Send(Hello(1));
  ASSERT_TRUE(client.Expect(v1::Envelope::kWelcome));
  v1::Envelope subscribe;
  subscribe.set_request_id(2);
  subscribe.mutable_subscribe()->set_sid(7);
  subscribe.mutable_subscribe()->set_pattern("orders.>");
  subscribe.mutable_subscribe()->set_capacity(1);
  subscribe.mutable_subscribe()->set_overflow(v1::OVERFLOW_POLICY_DROP_NEWEST);
  subscribe.mutable_subscribe()->set_initial_credit(1);
  client.Send(subscribe);
  const std::optional<v1::Envelope> subscribed =
      client.Expect(v1::Envelope::kAck);
  ASSERT_TRUE(subscribed);
  ASSERT_EQ(subscribed->ack().sid(), 7u);
  client.Send(PublishBatch(3, 1, 1, "orders.eu"), {"first"});
  ASSERT_TRUE(client.Expect(v1::Envelope::kDeliver));
  client.Send(PublishBatch(4, 2, kBatch, "orders.eu"),
              std::vector<std::string>(kBatch, "more"));
  std::optional<v1::Envelope> acked;
  while ((acked = client.Expect(v1::Envelope::kAck)) &&
         acked->ack().acked_batch_sequence() < 2) {
  }
  ASSERT_TRUE(acked);

  httplib::Client http(endpoints->metrics_host, endpoints->metrics_port);
  http.set_read_timeout(60, 0);
  const httplib::Result metrics = http.Get("/metrics");
  const httplib::Result statsz = http.Get("/statsz");

  ASSERT_TRUE(metrics) << httplib::to_string(metrics.error());
  EXPECT_TRUE(
      HasSample(metrics->body, "herald_published_total", {}, kPublished));
  EXPECT_TRUE(HasSample(metrics->body, "herald_subscription_dropped_total{",
                        {R"(pattern="orders.>")", R"(reason="queue_full")"},
                        kQueueFull));
  EXPECT_TRUE(HasSample(metrics->body, "herald_subscription_queued{",
                        {R"(pattern="orders.>")"}, 1));
  EXPECT_TRUE(HasSample(metrics->body, "herald_server_sessions", {}, 1));
  EXPECT_TRUE(
      HasSample(metrics->body, "herald_server_sessions_opened_total", {}, 1));
  EXPECT_TRUE(HasSample(metrics->body, "herald_server_publish_accepted_total",
                        {}, kPublished));
  ASSERT_TRUE(statsz) << httplib::to_string(statsz.error());
  EXPECT_THAT(statsz->body,
              HasSubstr(absl::StrCat(R"("queue_full":")", kQueueFull, "\"")));
  EXPECT_THAT(statsz->body,
              HasSubstr(absl::StrCat(R"("published":")", kPublished, "\"")));
  EXPECT_THAT(statsz->body, HasSubstr(R"("sessions_opened":"1")"));

  daemon.Signal(SIGTERM);

  EXPECT_TRUE(client.Expect(v1::Envelope::kGoodbye));
  EXPECT_EQ(daemon.Wait(absl::Now() + kTimeout), 0) << daemon.Stderr();
  EXPECT_THAT(daemon.lines(),
              Contains(StartsWith("heraldd: SIGTERM received: stopping")));
  ASSERT_FALSE(daemon.lines().empty());
  const std::string& last = daemon.lines().back();
  EXPECT_THAT(last, StartsWith("heraldd: stopped in "));
  EXPECT_THAT(last, HasSubstr(absl::StrCat("published=", kPublished, " ")));
  EXPECT_THAT(last, HasSubstr(absl::StrCat("queue_full=", kQueueFull, " ")));
  EXPECT_THAT(last, HasSubstr("sessions_opened=1 "));
  // The one delivered before the credit ran out; the one still queued gets
  // the drain period (no credit comes), then is dropped as shutdown.
  EXPECT_THAT(last, HasSubstr(" delivered=1 "));
  EXPECT_THAT(last, HasSubstr(" shutdown=1 "));
  EXPECT_THAT(last, HasSubstr(" abandoned=0 "));
  // Server::Stop() closed the session after its Goodbye.
  EXPECT_THAT(last, HasSubstr(" sessions_closed=1 "));
  EXPECT_EQ(daemon.Stderr(), "");
}

TEST(HeralddTest, LogsOsChosenPortsAndStopsOnSigintWithMetricsOff) {
  Daemon daemon(kOsChosenEndpoints);
  ASSERT_TRUE(daemon.started());
  const std::optional<Endpoints> endpoints = ReadEndpoints(daemon);
  ASSERT_TRUE(endpoints) << daemon.Stderr();
  for (const std::string& e :
       {endpoints->sdk, endpoints->publish, endpoints->subscribe}) {
    EXPECT_THAT(e, StartsWith("tcp://127.0.0.1:"));
    EXPECT_FALSE(absl::EndsWith(e, "*")) << e;  // The bound port is logged.
  }
  EXPECT_THAT(daemon.lines(), Contains("heraldd: metrics_addr off"));

  daemon.Signal(SIGINT);

  EXPECT_EQ(daemon.Wait(absl::Now() + kTimeout), 0) << daemon.Stderr();
  EXPECT_THAT(daemon.lines(),
              Contains(StartsWith("heraldd: SIGINT received: stopping")));
  EXPECT_THAT(daemon.lines().back(), StartsWith("heraldd: stopped in "));
  EXPECT_THAT(daemon.lines().back(), HasSubstr("published=0 "));
}

TEST(HeralddTest, EmptyEndpointsAreNotServed) {
  Daemon daemon({"--sdk_endpoint=tcp://127.0.0.1:*",
                 "--publish_endpoint=", "--subscribe_endpoint="});
  ASSERT_TRUE(daemon.started());
  const std::optional<Endpoints> endpoints = ReadEndpoints(daemon);
  ASSERT_TRUE(endpoints) << daemon.Stderr();
  EXPECT_EQ(endpoints->publish, "off");
  EXPECT_EQ(endpoints->subscribe, "off");

  daemon.Signal(SIGTERM);

  EXPECT_EQ(daemon.Wait(absl::Now() + kTimeout), 0) << daemon.Stderr();
}

TEST(HeralddTest, BadFlagValuesExitTwoWithOneLine) {
  struct Case {
    std::vector<std::string> flags;
    absl::string_view message;
  };
  const std::vector<Case> cases = {
      {{"--overflow=sideways"}, "--overflow"},
      {{"--queue_capacity=abc"}, "queue_capacity"},
      {{"--queue_capacity", "-1"}, "queue_capacity"},
      {{"--queue_capacity=0"}, "cannot start the broker"},
      {{"--max_clients=0"}, "cannot start the server"},
      {{"--session_ttl=soon"}, "session_ttl"},
      {{"--stop_timeout=0s"}, "--stop_timeout"},
      {{"--drain_timeout=-1s"}, "--drain_timeout"},
      {{"--metrics_addr=nonsense"}, "metrics"},
      {{"--no_such_flag=1"}, "unknown flag --no_such_flag"},
      {{"--queue_capacity"}, "needs a value"},
      {{"positional"}, "unexpected argument"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrJoin(c.flags, " "));
    Daemon daemon(With(kOsChosenEndpoints, c.flags));
    ASSERT_TRUE(daemon.started());

    EXPECT_EQ(daemon.Wait(absl::Now() + kTimeout), 2);
    const std::string err = daemon.Stderr();
    EXPECT_THAT(err, StartsWith("heraldd: "));
    EXPECT_THAT(err, HasSubstr(c.message));
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_THAT(daemon.lines(), ::testing::IsEmpty());
  }
}

// A TCP port held by the test for as long as it lives (listening, so that
// nothing else can bind it).
class HeldPort {
 public:
  HeldPort() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (fd_ < 0 ||
        bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(fd_, 1) != 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot hold a port: " << errno;
      return;
    }
    port_ = ntohs(addr.sin_port);
  }
  ~HeldPort() {
    if (fd_ >= 0) close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(HeralddTest, EndpointInUseExitsOneWithOneLine) {
  HeldPort held;
  ASSERT_GT(held.port(), 0);
  const std::vector<std::vector<std::string>> cases = {
      {absl::StrCat("--sdk_endpoint=tcp://127.0.0.1:", held.port()),
       "--publish_endpoint=tcp://127.0.0.1:*",
       "--subscribe_endpoint=tcp://127.0.0.1:*"},
      With(kOsChosenEndpoints,
           {absl::StrCat("--metrics_addr=127.0.0.1:", held.port())}),
  };
  for (const std::vector<std::string>& flags : cases) {
    SCOPED_TRACE(absl::StrJoin(flags, " "));
    Daemon daemon(flags);
    ASSERT_TRUE(daemon.started());

    EXPECT_EQ(daemon.Wait(absl::Now() + kTimeout), 1);
    const std::string err = daemon.Stderr();
    EXPECT_THAT(err, StartsWith("heraldd: cannot start the "));
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  }
}

}  // namespace
}  // namespace herald
