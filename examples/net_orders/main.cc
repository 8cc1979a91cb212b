// net_orders: the orders demo (examples/orders) spread over processes.
//
//   heraldd (child process, OS-chosen port)
//     ^ tcp                     ^ tcp
//   storefront eu, us          fulfillment, ledger, dashboard
//   (--role=publisher)         (--role=service)
//
// One command starts it all: this binary, as the coordinator, starts heraldd
// (a data dependency, //tools/heraldd), then re-executes itself once per
// service and per storefront, each a separate process talking to heraldd
// through the SDK over tcp. After --duration it stops the storefronts (each
// flushes and reports what it published), then the services (each drains,
// closes its subscriptions and reports their final totals), then SIGTERMs
// heraldd, and prints the per-service table. It checks that every message
// each service's patterns matched was received or dropped with a reason, and
// that heraldd counted exactly the messages published; it exits 1 if not.
//
// A child stops when its stdin, a pipe from the coordinator, says so or ends:
// no child outlives a coordinator that dies.
//
//   bazel run //examples/net_orders -- --duration=5s --rate=2000
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "examples/common/accounting.h"
#include "examples/net_orders/child_process.h"
#include "sdk/client.h"

ABSL_FLAG(std::string, role, "coordinator",
          "coordinator (starts everything), publisher or service.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(3),
          "How long the storefronts publish.");
ABSL_FLAG(int, rate, 1000,
          "Events per second per storefront; each event is three messages.");
ABSL_FLAG(absl::Duration, slow_work, absl::Milliseconds(1),
          "Simulated work per message of the (slow) dashboard service.");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(1),
          "How long a stopping service may take to drain its subscriptions.");
ABSL_FLAG(std::string, connect, "",
          "Publisher and service: heraldd's SDK endpoint (set by the "
          "coordinator).");
ABSL_FLAG(std::string, region, "eu", "Publisher: the storefront's region.");
ABSL_FLAG(std::string, service, "", "Service: which one.");

namespace {

using ::herald::examples::Checks;
using ::herald::examples::Failures;
using ::herald::examples::Verdict;

using herald::examples::ChildProcess;
using herald::examples::FieldNumber;
using herald::examples::FieldValue;

// Generous: sanitizer builds on a loaded 2-core machine are slow, and a
// passing run returns as soon as what it waits for happens.
constexpr absl::Duration kStepTimeout = absl::Seconds(60);

constexpr std::array<absl::string_view, 6> kReasonNames = {
    "queue_full", "evicted_oldest", "block_timeout",
    "closed",     "shutdown",       "group_full"};

// [START services]
// The three services of examples/orders, with the same options. Every event
// publishes one message that each pattern below matches, so each
// subscription's `matched` must equal the number of events.
struct ServiceSpec {
  std::string name;
  std::vector<std::string> patterns;
  herald::SubscriptionOptions options;
  bool slow;  // Does --slow_work per message.
};

std::vector<ServiceSpec> Services() {
  herald::SubscriptionOptions fulfillment;
  fulfillment.queue_capacity = 4096;
  fulfillment.overflow = herald::OverflowPolicy::kDropNewest;
  herald::SubscriptionOptions ledger;
  ledger.queue_capacity = 256;
  ledger.overflow = herald::OverflowPolicy::kBlock;
  ledger.block_timeout = absl::Milliseconds(50);
  herald::SubscriptionOptions dashboard;
  dashboard.queue_capacity = 8;
  dashboard.overflow = herald::OverflowPolicy::kDropOldest;
  return {
      {"fulfillment",
       {"orders.*.created", "payments.*.captured"},
       fulfillment,
       false},
      {"ledger", {"payments.>", "notifications.>"}, ledger, false},
      {"dashboard", {"orders.>", "notifications.*"}, dashboard, true},
  };
}
// [END services]

// Waits for the coordinator: returns the stdin lines until end of file.
std::vector<std::string> ReadStdinUntilEnd() {
  std::vector<std::string> lines;
  std::string buffer;
  char chunk[256];
  while (true) {
    const ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buffer.append(chunk, static_cast<size_t>(n));
  }
  for (absl::string_view line :
       absl::StrSplit(buffer, '\n', absl::SkipEmpty())) {
    lines.emplace_back(line);
  }
  return lines;
}

// One line on stdout, flushed at once: the coordinator reads it.
template <typename... Args>
void Report(const absl::FormatSpec<Args...>& format, const Args&... args) {
  std::fputs(absl::StrCat(absl::StrFormat(format, args...), "\n").c_str(),
             stdout);
  std::fflush(stdout);
}

absl::StatusOr<std::unique_ptr<herald::Client>> ConnectToDaemon(
    absl::string_view name) {
  herald::ClientOptions options;
  options.name = std::string(name);
  const std::string url = absl::GetFlag(FLAGS_connect);
  absl::StatusOr<std::unique_ptr<herald::Client>> client =
      herald::Client::Connect(url, options);
  if (!client.ok()) {
    return absl::Status(
        client.status().code(),
        absl::StrCat("connect to \"", url, "\": ", client.status().message()));
  }
  return client;
}

// ---------------------------------------------------------------- publisher

// [START publish]
// A storefront process: `rate` times a second an order is created, paid and
// the customer notified, until the coordinator closes our stdin. Then it
// flushes (the broker has processed every message) and reports
// `publisher region=.. events=.. published=.. acked=.. dropped=..`.
int RunPublisher() {
  const std::string region = absl::GetFlag(FLAGS_region);
  const int rate = absl::GetFlag(FLAGS_rate);
  absl::StatusOr<std::unique_ptr<herald::Client>> client =
      ConnectToDaemon(absl::StrCat("storefront-", region));
  if (!client.ok()) {
    absl::FPrintF(stderr, "error: storefront %s: %s\n", region,
                  client.status().ToString());
    return 1;
  }
  herald::PublisherOptions options;
  options.buffer_wait = absl::Seconds(5);  // Wait for room, do not refuse.
  absl::StatusOr<herald::Publisher> publisher =
      (*client)->CreatePublisher(options);
  if (!publisher.ok()) {
    absl::FPrintF(stderr, "error: storefront %s: create publisher: %s\n",
                  region, publisher.status().ToString());
    return 1;
  }
  Report("ready");
  Failures failures;
  uint64_t events = 0;
  std::jthread storefront([&](std::stop_token stop) {
    static constexpr std::array<absl::string_view, 3> kChannels = {
        "email", "sms", "push"};
    const herald::Headers headers = {{"content-type", "application/json"}};
    const absl::Duration period = absl::Seconds(1) / rate;
    const absl::Time start = absl::Now();
    for (int64_t event = 0; !stop.stop_requested(); ++event) {
      const std::string order = absl::StrCat(region, "-", event);
      const std::pair<std::string, std::string> messages[] = {
          {absl::StrCat("orders.", region, ".created"),
           absl::StrFormat(R"({"order":"%s","cents":%d})", order,
                           100 + event % 900)},
          {absl::StrCat("payments.", region, ".captured"),
           absl::StrFormat(R"({"order":"%s","method":"card"})", order)},
          {absl::StrCat("notifications.", kChannels[event % kChannels.size()]),
           absl::StrFormat(R"({"order":"%s","text":"thank you"})", order)},
      };
      for (const auto& [topic, payload] : messages) {
        if (absl::Status s = publisher->Publish(topic, payload, headers);
            !s.ok()) {
          failures.Add(absl::StrCat("storefront ", region, ": publish to \"",
                                    topic, "\""),
                       s);
          return;
        }
      }
      ++events;
      // Pacing to the rate (not synchronization).
      const absl::Duration ahead = start + (event + 1) * period - absl::Now();
      if (ahead > absl::ZeroDuration()) absl::SleepFor(ahead);
    }
  });
  ReadStdinUntilEnd();  // Until the coordinator says stop.
  storefront.request_stop();
  storefront.join();
  if (absl::Status s = (*client)->Flush(absl::Now() + kStepTimeout); !s.ok()) {
    failures.Add(absl::StrCat("storefront ", region, ": flush"), s);
  }
  if (absl::Status s = (*client)->Close(absl::Now() + kStepTimeout); !s.ok()) {
    failures.Add(absl::StrCat("storefront ", region, ": close"), s);
  }
  const herald::ClientStats stats = (*client)->Stats();
  Report("publisher region=%s events=%d published=%d acked=%d dropped=%d",
         region, events, stats.published, stats.publish_acked,
         stats.publish_dropped());
  return failures.count() > 0 ? 1 : 0;
}
// [END publish]

// ------------------------------------------------------------------ service

// One subscription of a service process and what its consumer counted.
// Written by the consumer thread, read by RunService() after joining it.
struct Stream {
  std::string pattern;
  herald::Subscriber subscriber;
  uint64_t received = 0;
  uint64_t missed = 0;  // Sum of Received::missed().
};

// [START receive]
// A consumer: takes messages until the coordinator says stop (`drain`),
// then drains until everything the broker matched for it (`expected`, one
// per event) was received or reported missed, or --drain_timeout passes.
void Consume(std::stop_token drain, Stream& stream, const uint64_t& expected,
             absl::Duration work, Failures& failures) {
  std::optional<absl::Time> drain_deadline;
  while (true) {
    if (drain.stop_requested() && !drain_deadline) {
      drain_deadline = absl::Now() + absl::GetFlag(FLAGS_drain_timeout);
    }
    if (drain_deadline && stream.received + stream.missed >= expected) return;
    absl::StatusOr<herald::Received> m =
        drain_deadline
            ? stream.subscriber.Receive(*drain_deadline)
            : stream.subscriber.Receive(absl::InfiniteFuture(), drain);
    if (absl::IsCancelled(m.status())) continue;       // Drain now.
    if (absl::IsDeadlineExceeded(m.status())) return;  // Drain over.
    if (!m.ok()) {
      failures.Add(absl::StrCat("receive on \"", stream.pattern, "\""),
                   m.status());
      return;
    }
    ++stream.received;
    stream.missed += m->missed();  // Dropped since the last delivery.
    if (work > absl::ZeroDuration()) absl::SleepFor(work);  // Slow service.
  }
}
// [END receive]

int RunService() {
  const std::string name = absl::GetFlag(FLAGS_service);
  std::optional<ServiceSpec> spec;
  for (ServiceSpec& s : Services()) {
    if (s.name == name) spec = std::move(s);
  }
  if (!spec) {
    absl::FPrintF(stderr, "error: unknown --service \"%s\"\n", name);
    return 1;
  }
  absl::StatusOr<std::unique_ptr<herald::Client>> client =
      ConnectToDaemon(name);
  if (!client.ok()) {
    absl::FPrintF(stderr, "error: %s: %s\n", name, client.status().ToString());
    return 1;
  }
  std::vector<std::unique_ptr<Stream>> streams;
  for (const std::string& pattern : spec->patterns) {
    // Live when Subscribe() returns: the broker acknowledged it.
    absl::StatusOr<herald::Subscriber> sub =
        (*client)->Subscribe(pattern, spec->options);
    if (!sub.ok()) {
      absl::FPrintF(stderr, "error: %s: subscribe to \"%s\": %s\n", name,
                    pattern, sub.status().ToString());
      return 1;
    }
    streams.push_back(std::make_unique<Stream>());
    streams.back()->pattern = pattern;
    streams.back()->subscriber = *std::move(sub);
  }
  Report("ready");

  Failures failures;
  uint64_t expected = 0;  // Set before the drain is requested.
  const absl::Duration work =
      spec->slow ? absl::GetFlag(FLAGS_slow_work) : absl::ZeroDuration();
  std::vector<std::jthread> consumers;
  for (auto& stream : streams) {
    consumers.emplace_back(Consume, std::ref(*stream), std::cref(expected),
                           work, std::ref(failures));
  }
  // The coordinator writes "stop <events>" and closes our stdin.
  for (const std::string& line : ReadStdinUntilEnd()) {
    absl::string_view rest = line;
    if (absl::ConsumePrefix(&rest, "stop ") &&
        !absl::SimpleAtoi(rest, &expected)) {
      failures.Add(name, absl::InvalidArgumentError(
                             absl::StrCat("bad stop line \"", line, "\"")));
    }
  }
  for (std::jthread& t : consumers) t.request_stop();
  for (std::jthread& t : consumers) t.join();

  // [START report]
  // Final totals from the broker: matched == delivered + dropped + abandoned.
  for (auto& stream : streams) {
    absl::StatusOr<herald::SubscriptionTotals> t = stream->subscriber.Close();
    if (!t.ok()) {
      failures.Add(absl::StrCat(name, ": close \"", stream->pattern, "\""),
                   t.status());
      continue;
    }
    std::string line = absl::StrFormat(
        "stream service=%s pattern=%s received=%d missed=%d matched=%d "
        "delivered=%d abandoned=%d",
        name, stream->pattern, stream->received, stream->missed, t->matched,
        t->delivered, t->abandoned);
    for (size_t i = 0; i < kReasonNames.size(); ++i) {
      absl::StrAppend(&line, " ", kReasonNames[i], "=",
                      t->dropped_by_reason[i]);
    }
    Report("%s", line);
  }
  // [END report]
  if (absl::Status s = (*client)->Close(absl::Now() + kStepTimeout); !s.ok()) {
    failures.Add(absl::StrCat(name, ": close client"), s);
  }
  return failures.count() > 0 ? 1 : 0;
}

// -------------------------------------------------------------- coordinator

// A child's one report line with `prefix`, from what Wait() read.
std::vector<std::string> LinesStartingWith(const ChildProcess& child,
                                           absl::string_view prefix) {
  std::vector<std::string> out;
  for (const std::string& line : child.lines()) {
    if (absl::StartsWith(line, prefix)) out.push_back(line);
  }
  return out;
}

int RunCoordinator() {
  signal(SIGPIPE, SIG_IGN);  // A child that died: its stdin write fails.
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  const int rate = absl::GetFlag(FLAGS_rate);
  if (duration <= absl::ZeroDuration() || rate <= 0) {
    absl::FPrintF(stderr, "error: --duration and --rate must be > 0\n");
    return 1;
  }
  Failures failures;
  Checks checks;

  // [START start]
  // heraldd on an OS-chosen port, read back from its log.
  std::string endpoint;
  absl::StatusOr<ChildProcess> daemon =
      herald::examples::StartHeraldd({}, absl::Now() + kStepTimeout, &endpoint);
  if (!daemon.ok()) {
    absl::FPrintF(stderr, "error: start heraldd: %s\n",
                  daemon.status().ToString());
    return 1;
  }
  // The services, then the storefronts: this binary again, in other roles.
  // Each says "ready" once connected (services: subscribed).
  const std::string self = herald::examples::SelfPath();
  const std::vector<std::string> common = {
      absl::StrCat("--connect=", endpoint), absl::StrCat("--rate=", rate),
      absl::StrCat("--slow_work=",
                   absl::FormatDuration(absl::GetFlag(FLAGS_slow_work))),
      absl::StrCat("--drain_timeout=",
                   absl::FormatDuration(absl::GetFlag(FLAGS_drain_timeout)))};
  herald::examples::ChildOptions child_options;
  child_options.stdin_pipe = true;
  auto start =
      [&](std::vector<std::string> role_flags) -> absl::StatusOr<ChildProcess> {
    std::vector<std::string> argv = {self};
    argv.insert(argv.end(), role_flags.begin(), role_flags.end());
    argv.insert(argv.end(), common.begin(), common.end());
    return herald::examples::StartReady(argv, child_options,
                                        absl::Now() + kStepTimeout);
  };
  const std::vector<ServiceSpec> services = Services();
  std::vector<ChildProcess> service_processes;
  for (const ServiceSpec& s : services) {
    absl::StatusOr<ChildProcess> child =
        start({"--role=service", absl::StrCat("--service=", s.name)});
    if (!child.ok()) {
      absl::FPrintF(stderr, "error: start service %s: %s\n", s.name,
                    child.status().ToString());
      return 1;
    }
    service_processes.push_back(*std::move(child));
  }
  const std::array<std::string, 2> regions = {"eu", "us"};
  std::vector<ChildProcess> storefronts;
  for (const std::string& region : regions) {
    absl::StatusOr<ChildProcess> child =
        start({"--role=publisher", absl::StrCat("--region=", region)});
    if (!child.ok()) {
      absl::FPrintF(stderr, "error: start storefront %s: %s\n", region,
                    child.status().ToString());
      return 1;
    }
    storefronts.push_back(*std::move(child));
  }
  // [END start]
  absl::PrintF(
      "net_orders: heraldd (pid %d) at %s; 2 storefront and 3 service "
      "processes; %d events/s per storefront for %s\n",
      static_cast<int>(daemon->pid()), endpoint, rate,
      absl::FormatDuration(duration));

  // The run itself (not synchronization): the storefronts publish meanwhile.
  absl::SleepFor(duration);

  // [START stop]
  // Stop the storefronts; each flushes, so once it has exited the broker has
  // processed everything it published. Then the services: "stop <events>"
  // lets each drain until it has seen every message it matched.
  uint64_t events = 0;
  uint64_t acked = 0;
  for (ChildProcess& p : storefronts) {
    p.CloseStdin();
    absl::StatusOr<int> code = p.Wait(absl::Now() + kStepTimeout);
    const std::vector<std::string> report = LinesStartingWith(p, "publisher ");
    if (!code.ok() || *code != 0 || report.size() != 1) {
      failures.Add("storefront", absl::InternalError(absl::StrCat(
                                     "exit ",
                                     code.ok() ? absl::StrCat(*code)
                                               : code.status().ToString(),
                                     ", ", report.size(), " report lines")));
      continue;
    }
    events += FieldNumber(report[0], "events").value_or(0);
    acked += FieldNumber(report[0], "acked").value_or(0);
    checks.Equal(absl::StrCat(*FieldValue(report[0], "region"),
                              ": messages acked == 3 x events"),
                 FieldNumber(report[0], "acked").value_or(0),
                 3 * FieldNumber(report[0], "events").value_or(0));
  }
  std::vector<std::string> stream_lines;
  for (ChildProcess& p : service_processes) {
    if (absl::Status s = p.WriteStdin(absl::StrCat("stop ", events, "\n"));
        !s.ok()) {
      failures.Add("stop service", s);
    }
    p.CloseStdin();
  }
  for (ChildProcess& p : service_processes) {
    absl::StatusOr<int> code = p.Wait(absl::Now() + kStepTimeout);
    if (!code.ok() || *code != 0) {
      failures.Add("service", code.ok() ? absl::InternalError(
                                              absl::StrCat("exit code ", *code))
                                        : code.status());
    }
    for (std::string& line : LinesStartingWith(p, "stream ")) {
      stream_lines.push_back(std::move(line));
    }
  }
  // Last, heraldd: SIGTERM, exit 0, and its final stats line.
  const absl::StatusOr<uint64_t> daemon_published =
      herald::examples::StopHeraldd(*daemon, absl::Now() + kStepTimeout);
  if (!daemon_published.ok()) {
    failures.Add("stop heraldd", daemon_published.status());
  }
  // [END stop]

  absl::PrintF("\n%d events: %d messages published and acknowledged\n\n",
               events, acked);
  absl::PrintF("%-12s %-20s %9s %8s %10s %14s %13s %6s %8s %9s %7s\n",
               "service", "pattern", "received", "matched", "queue_full",
               "evicted_oldest", "block_timeout", "closed", "shutdown",
               "abandoned", "missed");
  // [START accounting]
  // Per stream (service x pattern), from the service's final totals: every
  // pattern matched one message per event, each received, dropped with a
  // reason, or abandoned at close.
  checks.Equal("stream reports", stream_lines.size(), 6);
  for (const std::string& line : stream_lines) {
    auto n = [&line](absl::string_view key) {
      return FieldNumber(line, key).value_or(0);
    };
    const std::string service = FieldValue(line, "service").value_or("?");
    const std::string pattern = FieldValue(line, "pattern").value_or("?");
    uint64_t dropped = 0;
    for (absl::string_view reason : kReasonNames) dropped += n(reason);
    const std::string what = absl::StrCat(service, " \"", pattern, "\"");
    checks.Equal(absl::StrCat(what, ": matched == events"), n("matched"),
                 events);
    checks.Equal(absl::StrCat(what,
                              ": matched == delivered + dropped + "
                              "abandoned"),
                 n("matched"), n("delivered") + dropped + n("abandoned"));
    checks.Equal(absl::StrCat(what, ": delivered == received"), n("delivered"),
                 n("received"));
    checks.AtMost(absl::StrCat(what, ": missed <= dropped"), n("missed"),
                  dropped);
    absl::PrintF("%-12s %-20s %9d %8d %10d %14d %13d %6d %8d %9d %7d\n",
                 service, pattern, n("received"), n("matched"), n("queue_full"),
                 n("evicted_oldest"), n("block_timeout"), n("closed"),
                 n("shutdown"), n("abandoned"), n("missed"));
  }
  // heraldd's own count, from its final stats line.
  checks.Equal("heraldd's final published == messages acked",
               daemon_published.value_or(0), acked);
  // [END accounting]

  return Verdict(failures, checks,
                 "heraldd counted every message published, and each service "
                 "received or dropped with a reason every message it matched");
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string role = absl::GetFlag(FLAGS_role);
  if (role == "coordinator") return RunCoordinator();
  if (role == "publisher") return RunPublisher();
  if (role == "service") return RunService();
  absl::FPrintF(stderr,
                "error: --role must be coordinator, publisher or service\n");
  return 1;
}
