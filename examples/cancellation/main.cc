// cancellation: how Herald's blocking calls end, and the status each returns.
//
//   1. Receive() with a timeout on an empty queue     -> kDeadlineExceeded
//   2. Receive() woken by a std::stop_source           -> kCancelled
//   3. Publish() to a full kBlock queue                -> OK, and the
//      PublishResult counts a block_timeout drop
//   4. Receive() after Shutdown() drained the queue    -> kOutOfRange
//   5. Calls after Shutdown(), or on a closed handle   -> kFailedPrecondition
//
// Each step prints its outcome; the example exits 1 if any status code or
// count is not the expected one. Every timeout is a tenth of --duration.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/broker.h"

ABSL_FLAG(absl::Duration, duration, absl::Seconds(1),
          "Time budget of the run; each timeout shown is a tenth of it.");

namespace {

using herald::DropReason;

// Prints each outcome and counts the unexpected ones. Thread-compatible.
class Outcomes {
 public:
  // `got` must have the code `want`.
  void Expect(absl::string_view step, const absl::Status& got,
              absl::StatusCode want) {
    Print(step, got.code() == want,
          got.ok() ? "OK"
                   : absl::StrCat(absl::StatusCodeToString(got.code()), ": ",
                                  got.message()),
          absl::StatusCodeToString(want));
  }
  // A count that must be `want`.
  void ExpectCount(absl::string_view step, uint64_t got, uint64_t want) {
    Print(step, got == want, absl::StrCat(got), absl::StrCat(want));
  }
  // A condition that must hold.
  void ExpectTrue(absl::string_view step, bool got) {
    Print(step, got, got ? "true" : "false", "true");
  }
  int count() const { return count_; }
  int unexpected() const { return unexpected_; }

 private:
  void Print(absl::string_view step, bool ok, absl::string_view got,
             absl::string_view want) {
    ++count_;
    if (ok) {
      absl::PrintF("  %-46s -> %s\n", step, got);
      return;
    }
    ++unexpected_;
    absl::PrintF("  %-46s -> %s   UNEXPECTED, want %s\n", step, got, want);
  }

  int count_ = 0;
  int unexpected_ = 0;
};

// Subscribes or exits: setup failures end the example at once.
herald::Subscription MustSubscribe(herald::Broker& broker,
                                   absl::string_view pattern,
                                   herald::SubscriptionOptions options = {}) {
  absl::StatusOr<herald::Subscription> sub = broker.Subscribe(pattern, options);
  if (!sub.ok()) {
    absl::FPrintF(stderr, "error: subscribe to \"%s\": %s\n", pattern,
                  sub.status().ToString());
    std::exit(1);
  }
  return *std::move(sub);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  if (duration <= absl::ZeroDuration()) {
    absl::FPrintF(stderr, "error: --duration must be > 0\n");
    return 1;
  }
  const absl::Duration timeout = duration / 10;

  absl::StatusOr<std::unique_ptr<herald::Broker>> created =
      herald::Broker::Create();
  if (!created.ok()) {
    absl::FPrintF(stderr, "error: create broker: %s\n",
                  created.status().ToString());
    return 1;
  }
  std::unique_ptr<herald::Broker> broker = *std::move(created);
  Outcomes outcomes;

  absl::PrintF("1. deadlines (timeout %s)\n", absl::FormatDuration(timeout));
  herald::Subscription idle = MustSubscribe(*broker, "idle");
  // [START deadline]
  // Nothing is published on "idle": each call ends at its deadline. A timeout
  // <= 0 polls once; it is not an error.
  absl::Time start = absl::Now();
  absl::StatusOr<herald::Delivery> d = idle.Receive(timeout);
  const absl::Duration waited = absl::Now() - start;
  outcomes.Expect("Receive(timeout) on an empty queue", d.status(),
                  absl::StatusCode::kDeadlineExceeded);
  outcomes.Expect("TryReceive() on an empty queue", idle.TryReceive().status(),
                  absl::StatusCode::kDeadlineExceeded);
  outcomes.Expect("Receive(-timeout) polls once",
                  idle.Receive(-timeout).status(),
                  absl::StatusCode::kDeadlineExceeded);
  // [END deadline]
  absl::PrintF(
      "  (the first Receive() waited %s)\n",
      absl::FormatDuration(absl::Trunc(waited, absl::Milliseconds(1))));

  absl::PrintF("\n2. stop tokens\n");
  herald::Subscription events = MustSubscribe(*broker, "events");
  // [START stop_token]
  // A consumer blocked without a deadline is woken by its stop token.
  std::stop_source cancel;
  absl::Notification receiving;
  absl::Status consumer_status;
  std::thread consumer([&] {
    receiving.Notify();
    consumer_status =
        events.Receive(absl::InfiniteFuture(), cancel.get_token()).status();
  });
  receiving.WaitForNotification();
  cancel.request_stop();  // Wakes the Receive(), wherever it is.
  consumer.join();
  outcomes.Expect("Receive(forever, stop) after request_stop()",
                  consumer_status, absl::StatusCode::kCancelled);
  // [END stop_token]
  // A stop request does not lose a message that is already queued: the
  // message comes first, then kCancelled.
  absl::StatusOr<herald::PublishResult> published =
      broker->Publish("events", "queued before the stop");
  if (!published.ok()) {
    absl::FPrintF(stderr, "error: publish to \"events\": %s\n",
                  published.status().ToString());
    return 1;
  }
  outcomes.Expect(
      "stopped Receive() with a message queued",
      events.Receive(absl::InfiniteFuture(), cancel.get_token()).status(),
      absl::StatusCode::kOk);
  outcomes.Expect(
      "stopped Receive() on the now empty queue",
      events.Receive(absl::InfiniteFuture(), cancel.get_token()).status(),
      absl::StatusCode::kCancelled);

  absl::PrintF("\n3. kBlock publisher timeout (block_timeout %s)\n",
               absl::FormatDuration(timeout));
  // [START block]
  // A kBlock queue of 2 that nobody reads: the third Publish() waits
  // block_timeout for room, then drops the message for that subscription.
  // Publish() itself succeeds: the drop is in its PublishResult.
  herald::SubscriptionOptions blocking;
  blocking.queue_capacity = 2;
  blocking.overflow = herald::OverflowPolicy::kBlock;
  blocking.block_timeout = timeout;
  herald::Subscription alerts = MustSubscribe(*broker, "alerts", blocking);
  std::vector<herald::PublishResult> results;
  for (int i = 0; i < 3; ++i) {
    start = absl::Now();
    absl::StatusOr<herald::PublishResult> r =
        broker->Publish("alerts", absl::StrCat("alert ", i));
    outcomes.Expect(absl::StrCat("Publish() #", i + 1, " status"), r.status(),
                    absl::StatusCode::kOk);
    if (!r.ok()) return 1;
    results.push_back(*r);
  }
  const absl::Duration blocked = absl::Now() - start;
  outcomes.ExpectCount("Publish() #3: matched", results[2].matched, 1);
  outcomes.ExpectCount("Publish() #3: taken", results[2].taken, 0);
  outcomes.ExpectCount("Publish() #3: dropped block_timeout",
                       results[2].dropped(DropReason::kBlockTimeout), 1);
  // [END block]
  absl::PrintF(
      "  (Publish() #3 was held back %s)\n",
      absl::FormatDuration(absl::Trunc(blocked, absl::Milliseconds(1))));
  absl::StatusOr<herald::Delivery> first = alerts.TryReceive();
  outcomes.Expect("TryReceive() the first alert", first.status(),
                  absl::StatusCode::kOk);
  if (first.ok()) {
    // missed() counts the drops since the previous delivery, whatever their
    // position: here, the third alert.
    outcomes.ExpectCount("  its missed()", first->missed(), 1);
  }
  // With a consumer making room, a blocked publisher proceeds and nothing is
  // dropped: the block_timeout is generous here, the consumer does not wait.
  herald::SubscriptionOptions roomy = blocking;
  roomy.queue_capacity = 1;
  roomy.block_timeout = absl::Seconds(10);
  herald::Subscription jobs = MustSubscribe(*broker, "jobs", roomy);
  absl::StatusOr<herald::PublishResult> job1 = broker->Publish("jobs", "1");
  uint64_t consumed = 0;
  absl::Status jobs_consumer_status;
  std::thread jobs_consumer([&] {
    for (int i = 0; i < 2; ++i) {
      absl::StatusOr<herald::Delivery> job = jobs.Receive(absl::Seconds(10));
      if (!job.ok()) {
        jobs_consumer_status = job.status();
        return;
      }
      ++consumed;
    }
  });
  absl::StatusOr<herald::PublishResult> job2 = broker->Publish("jobs", "2");
  jobs_consumer.join();
  outcomes.Expect("Publish() to a full queue being drained", job2.status(),
                  absl::StatusCode::kOk);
  outcomes.ExpectCount("  taken once the consumer made room",
                       job1.ok() && job2.ok() ? job1->taken + job2->taken : 0,
                       2);
  outcomes.Expect("  consumer's Receive() status", jobs_consumer_status,
                  absl::StatusCode::kOk);
  outcomes.ExpectCount("  messages consumed", consumed, 2);

  absl::PrintF("\n4. end of stream after Shutdown() (drain %s)\n",
               absl::FormatDuration(timeout));
  herald::Subscription orders = MustSubscribe(*broker, "orders");
  herald::Subscription audit = MustSubscribe(*broker, "orders");  // Unread.
  // [START end_of_stream]
  // A consumer reads until the stream ends. Shutdown() lets it drain the
  // queue, then ends every subscription: its blocked Receive() returns
  // kOutOfRange. What nobody read ("audit") is dropped, reason shutdown.
  uint64_t orders_received = 0;
  absl::Status end_of_stream;
  std::thread orders_consumer([&] {
    while (true) {
      absl::StatusOr<herald::Delivery> order =
          orders.Receive(absl::InfiniteFuture());
      if (!order.ok()) {
        end_of_stream = order.status();
        return;
      }
      ++orders_received;
    }
  });
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<herald::PublishResult> r =
        broker->Publish("orders", absl::StrCat("order ", i));
    outcomes.Expect(absl::StrCat("Publish() order ", i + 1), r.status(),
                    absl::StatusCode::kOk);
  }
  const herald::v1::BrokerStats stats = broker->Shutdown(timeout);
  orders_consumer.join();
  outcomes.Expect("consumer's Receive() after Shutdown()", end_of_stream,
                  absl::StatusCode::kOutOfRange);
  outcomes.ExpectCount("  orders it received first", orders_received, 3);
  outcomes.Expect("Receive() on the unread subscription",
                  audit.Receive(timeout).status(),
                  absl::StatusCode::kOutOfRange);
  absl::StatusOr<herald::SubscriptionTotals> audit_totals = audit.Close();
  outcomes.Expect("Close() the unread subscription", audit_totals.status(),
                  absl::StatusCode::kOk);
  if (audit_totals.ok()) {
    outcomes.ExpectCount("  its queued orders dropped, reason shutdown",
                         audit_totals->dropped(DropReason::kShutdown), 3);
  }
  // [END end_of_stream]
  outcomes.ExpectTrue("broker stats: shut_down", stats.shut_down());

  absl::PrintF("\n5. after Shutdown() and Close()\n");
  // [START after]
  outcomes.Expect("Publish() after Shutdown()",
                  broker->Publish("orders", "late").status(),
                  absl::StatusCode::kFailedPrecondition);
  outcomes.Expect("Subscribe() after Shutdown()",
                  broker->Subscribe("orders").status(),
                  absl::StatusCode::kFailedPrecondition);
  outcomes.Expect("Receive() on a closed handle",
                  audit.Receive(timeout).status(),
                  absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<herald::SubscriptionTotals> again = audit.Close();
  outcomes.ExpectTrue("second Close() returns the same totals",
                      again.ok() && audit_totals.ok() &&
                          again->matched == audit_totals->matched &&
                          again->dropped(DropReason::kShutdown) ==
                              audit_totals->dropped(DropReason::kShutdown));
  herald::Subscription moved_to = std::move(orders);
  outcomes.Expect("Close() on a moved-from handle", orders.Close().status(),
                  absl::StatusCode::kFailedPrecondition);
  // [END after]

  // Every subscription's final totals add up.
  for (herald::Subscription* sub :
       {&idle, &events, &alerts, &jobs, &moved_to}) {
    absl::StatusOr<herald::SubscriptionTotals> t = sub->Close();
    if (!t.ok()) {
      outcomes.Expect("Close() a subscription", t.status(),
                      absl::StatusCode::kOk);
      continue;
    }
    outcomes.ExpectCount("totals: matched == delivered + dropped + abandoned",
                         t->matched,
                         t->delivered + t->dropped() + t->abandoned);
  }

  if (outcomes.unexpected() > 0) {
    absl::PrintF("\nFAILED: %d of %d outcomes unexpected\n",
                 outcomes.unexpected(), outcomes.count());
    return 1;
  }
  absl::PrintF("\nOK: all %d outcomes as expected\n", outcomes.count());
  return 0;
}
