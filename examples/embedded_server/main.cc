// embedded_server: an application that owns its broker and serves it.
//
//   this process                                     another client (SDK)
//   ┌──────────────────────────────────────────┐
//   │ app ── Broker::Publish ─> app.local.<n> ─┼─ net::Server ─tcp─>
//   "app.local.>" │ app <─ Subscription "app.remote.>" <─────┼─ net::Server
//   <─tcp─ app.remote.events └──────────────────────────────────────────┘
//
// The application publishes to and subscribes on its in-process Broker
// directly, with no network in between, and a herald::net::Server makes the
// same broker reachable over ZeroMQ (--sdk_endpoint, OS-chosen port by
// default). A remote SDK client (here in the same process, for one command;
// it could be anywhere) subscribes to what the application publishes and
// publishes back. After --duration both sides stop, wait until each has
// received what the other published, and the example checks that every
// message is accounted for (received + dropped == published, both ways); it
// exits 1 if not.
//
//   bazel run //examples/embedded_server -- --duration=2s --rate=2000
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/broker.h"
#include "broker/net/server.h"
#include "examples/common/accounting.h"
#include "sdk/client.h"

ABSL_FLAG(absl::Duration, duration, absl::Seconds(2),
          "How long both sides publish.");
ABSL_FLAG(int, rate, 1000, "Messages per second on each side.");
ABSL_FLAG(std::string, sdk_endpoint, "tcp://127.0.0.1:*",
          "Where the application serves its broker to SDK clients; port * "
          "lets the OS choose.");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10),
          "How long each side may take to receive what the other published.");

namespace {

using ::herald::examples::Checks;
using ::herald::examples::Failures;
using ::herald::examples::Verdict;

// Polls `done` until it holds or `deadline` passes; returns whether it held.
bool PollUntil(absl::FunctionRef<bool()> done, absl::Time deadline) {
  while (!done()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

// Paces a loop to `rate` iterations per second (not synchronization).
void Pace(absl::Time start, int64_t i, int rate) {
  const absl::Duration ahead =
      start + (i + 1) * (absl::Seconds(1) / rate) - absl::Now();
  if (ahead > absl::ZeroDuration()) absl::SleepFor(ahead);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  const int rate = absl::GetFlag(FLAGS_rate);
  if (duration <= absl::ZeroDuration() || rate <= 0) {
    absl::FPrintF(stderr, "error: --duration and --rate must be > 0\n");
    return 1;
  }

  // [START serve]
  // The application's own broker, served over ZeroMQ to SDK clients only
  // (the plain PUB/SUB endpoints are off).
  absl::StatusOr<std::unique_ptr<herald::Broker>> created =
      herald::Broker::Create();
  if (!created.ok()) {
    absl::FPrintF(stderr, "error: create broker: %s\n",
                  created.status().ToString());
    return 1;
  }
  std::unique_ptr<herald::Broker> broker = *std::move(created);
  herald::net::ServerOptions server_options;
  server_options.sdk_endpoint = absl::GetFlag(FLAGS_sdk_endpoint);
  server_options.publish_endpoint = "";
  server_options.subscribe_endpoint = "";
  absl::StatusOr<std::unique_ptr<herald::net::Server>> server =
      herald::net::Server::Start(broker.get(), server_options);
  if (!server.ok()) {
    absl::FPrintF(stderr, "error: serve the broker: %s\n",
                  server.status().ToString());
    return 1;
  }
  const std::string endpoint = (*server)->sdk_endpoint();
  // [END serve]

  // [START local]
  // The application itself: a direct subscription, no network involved. A
  // deep queue, so that what the remote side publishes is not dropped.
  herald::SubscriptionOptions local_options;
  local_options.queue_capacity = 65536;
  local_options.name = "app";
  absl::StatusOr<herald::Subscription> local =
      broker->Subscribe("app.remote.>", local_options);
  if (!local.ok()) {
    absl::FPrintF(stderr, "error: app: subscribe to \"app.remote.>\": %s\n",
                  local.status().ToString());
    return 1;
  }
  // [END local]

  // [START remote]
  // A remote client, through the server: the same SDK any other process
  // would use with this endpoint.
  absl::StatusOr<std::unique_ptr<herald::Client>> client =
      herald::Client::Connect(endpoint);
  if (!client.ok()) {
    absl::FPrintF(stderr, "error: connect to %s: %s\n", endpoint,
                  client.status().ToString());
    return 1;
  }
  herald::SubscriptionOptions remote_options;
  remote_options.queue_capacity = 65536;
  absl::StatusOr<herald::Subscriber> remote =
      (*client)->Subscribe("app.local.>", remote_options);
  if (!remote.ok()) {
    absl::FPrintF(stderr, "error: remote: subscribe to \"app.local.>\": %s\n",
                  remote.status().ToString());
    return 1;
  }
  herald::PublisherOptions publisher_options;
  publisher_options.buffer_wait = absl::Seconds(1);  // Wait, do not refuse.
  absl::StatusOr<herald::Publisher> remote_publisher =
      (*client)->CreatePublisher(publisher_options);
  if (!remote_publisher.ok()) {
    absl::FPrintF(stderr, "error: remote: create publisher: %s\n",
                  remote_publisher.status().ToString());
    return 1;
  }
  // [END remote]

  absl::PrintF(
      "embedded_server: broker served at %s; %d messages/s each way for %s\n",
      endpoint, rate, absl::FormatDuration(duration));

  Failures failures;
  // Received counts, written by the consumer threads, read by main().
  std::atomic<uint64_t> app_received{0};
  std::atomic<uint64_t> remote_received{0};
  uint64_t app_bad = 0;     // Written by the app consumer thread only.
  uint64_t remote_bad = 0;  // Written by the remote consumer thread only.

  // [START receive]
  // Both sides receive until told to stop. The application gets
  // herald::Delivery from its Subscription, the remote client
  // herald::Received from its Subscriber: the same message either way.
  std::jthread app_consumer([&](std::stop_token stop) {
    while (true) {
      absl::StatusOr<herald::Delivery> d =
          local->Receive(absl::InfiniteFuture(), stop);
      if (absl::IsCancelled(d.status())) return;
      if (!d.ok()) {
        failures.Add("app: receive", d.status());
        return;
      }
      if (d->topic() != "app.remote.events") ++app_bad;
      app_received.fetch_add(1, std::memory_order_relaxed);
    }
  });
  std::jthread remote_consumer([&](std::stop_token stop) {
    while (true) {
      absl::StatusOr<herald::Received> r =
          remote->Receive(absl::InfiniteFuture(), stop);
      if (absl::IsCancelled(r.status())) return;
      if (!r.ok()) {
        failures.Add("remote: receive", r.status());
        return;
      }
      if (!absl::StartsWith(r->topic(), "app.local.")) ++remote_bad;
      remote_received.fetch_add(1, std::memory_order_relaxed);
    }
  });
  // [END receive]

  // [START publish]
  // The application publishes into its broker (a PublishResult at once);
  // the remote client into its publish buffer (the broker's answer comes
  // with Flush()).
  uint64_t app_published = 0;
  uint64_t app_taken = 0;
  std::jthread app_publisher([&](std::stop_token stop) {
    const absl::Time start = absl::Now();
    for (int64_t i = 0; !stop.stop_requested(); ++i) {
      const std::string topic = absl::StrCat("app.local.", i % 4);
      absl::StatusOr<herald::PublishResult> result =
          broker->Publish(topic, absl::StrCat(i));
      if (!result.ok()) {
        failures.Add(absl::StrCat("app: publish to \"", topic, "\""),
                     result.status());
        return;
      }
      ++app_published;
      app_taken += result->taken;
      Pace(start, i, rate);
    }
  });
  uint64_t remote_published = 0;
  std::jthread remote_publishing([&](std::stop_token stop) {
    const absl::Time start = absl::Now();
    for (int64_t i = 0; !stop.stop_requested(); ++i) {
      absl::Status status =
          remote_publisher->Publish("app.remote.events", absl::StrCat(i));
      if (!status.ok()) {
        failures.Add("remote: publish to \"app.remote.events\"", status);
        return;
      }
      ++remote_published;
      Pace(start, i, rate);
    }
  });
  // [END publish]

  // The run itself (not synchronization): both sides publish meanwhile.
  absl::SleepFor(duration);

  // [START drain]
  // Stop publishing; Flush() returns once the broker has processed every
  // remote publish. Then each side waits (with a deadline) until it has
  // received all the other side published, and stops.
  app_publisher.request_stop();
  remote_publishing.request_stop();
  app_publisher.join();
  remote_publishing.join();
  const absl::Time drain_deadline =
      absl::Now() + absl::GetFlag(FLAGS_drain_timeout);
  if (absl::Status s = (*client)->Flush(drain_deadline); !s.ok()) {
    failures.Add("remote: flush", s);
  }
  const herald::ClientStats client_stats = (*client)->Stats();
  if (!PollUntil(
          [&] {
            return app_received.load() >= client_stats.publish_acked &&
                   remote_received.load() >= app_published;
          },
          drain_deadline)) {
    absl::FPrintF(stderr, "warning: not everything arrived within %s\n",
                  absl::FormatDuration(absl::GetFlag(FLAGS_drain_timeout)));
  }
  app_consumer.request_stop();
  remote_consumer.request_stop();
  app_consumer.join();
  remote_consumer.join();
  // [END drain]

  // [START shutdown]
  // Close the subscriptions (their final totals), then the remote client,
  // then stop in DESIGN.md's order: intake, broker, server.
  absl::StatusOr<herald::SubscriptionTotals> app_totals = local->Close();
  if (!app_totals.ok()) failures.Add("app: close", app_totals.status());
  absl::StatusOr<herald::SubscriptionTotals> remote_totals = remote->Close();
  if (!remote_totals.ok())
    failures.Add("remote: close", remote_totals.status());
  if (absl::Status s = (*client)->Close(absl::Now() + absl::Seconds(5));
      !s.ok()) {
    failures.Add("remote: close client", s);
  }
  const herald::ClientStats final_client = (*client)->Stats();
  (*server)->StopIntake();
  const herald::v1::BrokerStats stats =
      broker->Shutdown(absl::Now() + absl::Seconds(1));
  (*server)->Stop(absl::Now() + absl::Seconds(1));
  const herald::v1::ServerStats server_stats = (*server)->Stats();
  // [END shutdown]

  const herald::SubscriptionTotals a =
      app_totals.ok() ? *app_totals : herald::SubscriptionTotals{};
  const herald::SubscriptionTotals r =
      remote_totals.ok() ? *remote_totals : herald::SubscriptionTotals{};
  absl::PrintF("\n%-28s %9s %9s %9s %9s %9s\n", "direction", "published",
               "matched", "received", "dropped", "abandoned");
  absl::PrintF("%-28s %9d %9d %9d %9d %9d\n", "app -> remote client",
               app_published, r.matched, remote_received.load(), r.dropped(),
               r.abandoned);
  absl::PrintF("%-28s %9d %9d %9d %9d %9d\n", "remote client -> app",
               final_client.published, a.matched, app_received.load(),
               a.dropped(), a.abandoned);
  absl::PrintF(
      "\nbroker: %d published; server: %d sessions opened, %d SDK publishes "
      "accepted\n",
      stats.published(), server_stats.sessions_opened(),
      server_stats.publish_accepted());

  // [START accounting]
  Checks checks;
  // What the application published reached the remote subscriber: each
  // publish was taken by it, and received or dropped with a reason.
  checks.Equal("app: sum of PublishResult.taken == app publishes", app_taken,
               app_published);
  checks.Equal("remote subscriber: matched == app publishes", r.matched,
               app_published);
  checks.Equal("remote subscriber: matched == delivered + dropped + abandoned",
               r.matched, r.delivered + r.dropped() + r.abandoned);
  checks.Equal("remote subscriber: delivered == received", r.delivered,
               remote_received.load());
  // What the remote client published reached the application.
  checks.Equal("remote client: published == acknowledged by the broker",
               final_client.publish_acked, remote_published);
  checks.Equal("remote client: nothing dropped", final_client.publish_dropped(),
               0);
  checks.Equal("app subscription: matched == remote publishes", a.matched,
               remote_published);
  checks.Equal("app subscription: matched == delivered + dropped + abandoned",
               a.matched, a.delivered + a.dropped() + a.abandoned);
  checks.Equal("app subscription: delivered == received", a.delivered,
               app_received.load());
  checks.Equal("broker: publishes == app + remote", stats.published(),
               app_published + remote_published);
  checks.Equal("messages on unexpected topics", app_bad + remote_bad, 0);
  // [END accounting]

  return Verdict(
      failures, checks,
      "both sides received what the other published, or counted it dropped");
}
