// pipeline: processing stages connected by topics.
//
//   source --raw--> parse --parsed--> enrich --enriched--> sink
//
// A source publishes temperature records ("17,21.5") on `raw`; one in 50 is
// malformed. The parse stage rejects the malformed ones and publishes the rest
// on `parsed`; the (slow) enrich stage adds Fahrenheit and publishes JSON on
// `enriched`; the sink checks that the records still arrive in order. Each
// stage is a thread with a pull subscription. `parsed` uses kBlock, so a slow
// enrich stage holds the parse stage back instead of losing records in the
// middle of the pipeline: the loss moves to the front door (`raw`, counted
// queue_full).
//
// After --duration the pipeline drains in order (source, parse, enrich, sink)
// and the example checks, for every stage, that what entered == what left +
// what was rejected + what was dropped, exactly; it exits 1 otherwise.
#include <array>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
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
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/broker.h"
#include "examples/common/accounting.h"

ABSL_FLAG(absl::Duration, duration, absl::Seconds(3),
          "How long the source publishes before the pipeline drains.");
ABSL_FLAG(int, rate, 2000, "Records per second published on `raw`.");
ABSL_FLAG(absl::Duration, enrich_work, absl::Milliseconds(1),
          "Simulated work per record of the enrich stage.");

namespace {

using ::herald::examples::Checks;
using ::herald::examples::Failures;
using ::herald::examples::Verdict;

using herald::DropReason;

// PublishResults summed over one stage's publishes.
struct PublishTally {
  uint64_t published = 0;
  uint64_t matched = 0;
  uint64_t taken = 0;
  herald::DropCounts dropped{};

  void Add(const herald::PublishResult& r) {
    ++published;
    matched += r.matched;
    taken += r.taken;
    for (size_t i = 0; i < dropped.size(); ++i) {
      dropped[i] += r.dropped_by_reason[i];
    }
  }
};

// What a stage makes of one record: the payload and headers to publish on its
// output topic, or kInvalidArgument to reject the record.
struct Output {
  std::string payload;
  herald::Headers headers;
};
struct Stage;
using Transform =
    std::function<absl::StatusOr<Output>(Stage&, const herald::Delivery&)>;

// One stage. The counters are written by the stage's thread only and read by
// main() after joining it.
struct Stage {
  bool is_sink() const { return out_topic.empty(); }

  std::string name;
  std::string in_topic;
  std::string out_topic;  // Empty for the sink.
  herald::Subscription in;
  herald::TopicHandle out;  // Empty for the sink.
  Transform transform;
  absl::Duration work;  // Simulated work per record.

  uint64_t received = 0;
  uint64_t rejected = 0;
  uint64_t forwarded = 0;  // Publishes on `out` that returned OK.
  PublishTally out_tally;
  std::string first_rejection;
  int64_t last_id = -1;  // Sink: the order check.
  uint64_t out_of_order = 0;
  herald::SubscriptionTotals totals;  // From Close(), after the drain.
};

// [START stage]
// Processes one record: transform it, then publish the result downstream
// (the sink has no `out`). A rejected record is the stage's decision, counted
// here; a full downstream queue is the broker's, counted in the
// PublishResult. Returns false on a broker error.
bool Process(Stage& stage, const herald::Delivery& record, Failures& failures) {
  ++stage.received;
  if (stage.work > absl::ZeroDuration()) absl::SleepFor(stage.work);
  absl::StatusOr<Output> output = stage.transform(stage, record);
  if (!output.ok()) {
    ++stage.rejected;
    if (stage.first_rejection.empty()) {
      stage.first_rejection = output.status().ToString();
    }
    return true;
  }
  if (!stage.is_sink()) {
    absl::StatusOr<herald::PublishResult> result =
        stage.out.Publish(output->payload, output->headers);
    if (!result.ok()) {
      failures.Add(
          absl::StrCat(stage.name, ": publish to \"", stage.out.name(), "\""),
          result.status());
      return false;
    }
    stage.out_tally.Add(*result);
    ++stage.forwarded;
  }
  return true;
}

// A stage's thread. `upstream_done` is requested once nothing more can arrive
// on the stage's input: Receive() then returns kCancelled when the queue is
// empty, and the stage takes whatever is left with TryReceive() and ends.
void RunStage(std::stop_token upstream_done, Stage& stage, Failures& failures) {
  while (true) {
    absl::StatusOr<herald::Delivery> record =
        stage.in.Receive(absl::InfiniteFuture(), upstream_done);
    if (absl::IsCancelled(record.status())) break;
    if (!record.ok()) {
      failures.Add(absl::StrCat(stage.name, ": receive"), record.status());
      return;
    }
    if (!Process(stage, *record, failures)) return;
  }
  while (true) {
    absl::StatusOr<herald::Delivery> record = stage.in.TryReceive();
    if (absl::IsDeadlineExceeded(record.status())) return;  // Drained.
    if (!record.ok()) {
      failures.Add(absl::StrCat(stage.name, ": drain"), record.status());
      return;
    }
    if (!Process(stage, *record, failures)) return;
  }
}
// [END stage]

// parse: "17,21.5" -> payload "21.5" with header id=17.
absl::StatusOr<Output> Parse(Stage&, const herald::Delivery& d) {
  const std::vector<absl::string_view> fields =
      absl::StrSplit(d.payload(), ',');
  int64_t id;
  double celsius;
  if (fields.size() != 2 || !absl::SimpleAtoi(fields[0], &id) ||
      !absl::SimpleAtod(fields[1], &celsius)) {
    return absl::InvalidArgumentError(
        absl::StrCat("record \"", d.payload(), "\": not <id>,<celsius>"));
  }
  return Output{absl::StrCat(celsius), {{"id", absl::StrCat(id)}}};
}

// enrich: adds Fahrenheit, publishes JSON.
absl::StatusOr<Output> Enrich(Stage&, const herald::Delivery& d) {
  absl::string_view id;
  double celsius;
  if (!d.headers().Find("id", &id) ||
      !absl::SimpleAtod(d.payload(), &celsius)) {
    return absl::InvalidArgumentError(
        absl::StrCat("parsed record \"", d.payload(), "\": no id or value"));
  }
  return Output{absl::StrFormat(R"({"id":%s,"celsius":%.1f,"fahrenheit":%.1f})",
                                id, celsius, celsius * 9 / 5 + 32),
                {{"id", std::string(id)}}};
}

// sink: checks that the ids arrive in increasing order (records travel one
// path, through FIFO queues).
absl::StatusOr<Output> Sink(Stage& sink, const herald::Delivery& d) {
  absl::string_view id_text;
  int64_t id;
  if (!d.headers().Find("id", &id_text) || !absl::SimpleAtoi(id_text, &id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("enriched record \"", d.payload(), "\": no id"));
  }
  if (id <= sink.last_id) ++sink.out_of_order;
  sink.last_id = id;
  return Output{};
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

  absl::StatusOr<std::unique_ptr<herald::Broker>> created =
      herald::Broker::Create();
  if (!created.ok()) {
    absl::FPrintF(stderr, "error: create broker: %s\n",
                  created.status().ToString());
    return 1;
  }
  std::unique_ptr<herald::Broker> broker = *std::move(created);

  // [START topology]
  // raw: a shallow drop-newest queue, the pipeline's front door.
  herald::SubscriptionOptions raw_options;
  raw_options.queue_capacity = 256;
  raw_options.overflow = herald::OverflowPolicy::kDropNewest;
  // parsed: kBlock, so a slow enrich stage holds the parse stage back.
  herald::SubscriptionOptions parsed_options;
  parsed_options.queue_capacity = 64;
  parsed_options.overflow = herald::OverflowPolicy::kBlock;
  parsed_options.block_timeout = absl::Milliseconds(100);
  // enriched: the sink is fast.
  herald::SubscriptionOptions enriched_options;
  enriched_options.queue_capacity = 1024;

  struct StageSpec {
    std::string name;
    std::string in_topic;
    herald::SubscriptionOptions options;
    std::string out_topic;  // Empty for the sink.
    Transform transform;
    absl::Duration work;
  };
  const std::vector<StageSpec> specs = {
      {"parse", "raw", raw_options, "parsed", Parse, absl::ZeroDuration()},
      {"enrich", "parsed", parsed_options, "enriched", Enrich,
       absl::GetFlag(FLAGS_enrich_work)},
      {"sink", "enriched", enriched_options, "", Sink, absl::ZeroDuration()},
  };
  std::vector<std::unique_ptr<Stage>> stages;
  for (const StageSpec& spec : specs) {
    auto stage = std::make_unique<Stage>();
    stage->name = spec.name;
    stage->in_topic = spec.in_topic;
    stage->out_topic = spec.out_topic;
    stage->transform = spec.transform;
    stage->work = spec.work;
    herald::SubscriptionOptions options = spec.options;
    options.name = spec.name;
    absl::StatusOr<herald::Subscription> in =
        broker->Subscribe(spec.in_topic, options);
    if (!in.ok()) {
      absl::FPrintF(stderr, "error: %s: subscribe to \"%s\": %s\n", spec.name,
                    spec.in_topic, in.status().ToString());
      return 1;
    }
    stage->in = *std::move(in);
    if (!spec.out_topic.empty()) {
      // A TopicHandle publishes repeatedly without the topic lookup.
      absl::StatusOr<herald::TopicHandle> out = broker->Topic(spec.out_topic);
      if (!out.ok()) {
        absl::FPrintF(stderr, "error: %s: topic \"%s\": %s\n", spec.name,
                      spec.out_topic, out.status().ToString());
        return 1;
      }
      stage->out = *std::move(out);
    }
    stages.push_back(std::move(stage));
  }
  absl::StatusOr<herald::TopicHandle> raw = broker->Topic("raw");
  if (!raw.ok()) {
    absl::FPrintF(stderr, "error: topic \"raw\": %s\n",
                  raw.status().ToString());
    return 1;
  }
  // [END topology]
  absl::PrintF(
      "pipeline: raw -> parse -> parsed -> enrich -> enriched -> "
      "sink, %d records/s for %s, enrich %s per record\n",
      rate, absl::FormatDuration(duration),
      absl::FormatDuration(absl::GetFlag(FLAGS_enrich_work)));

  Failures failures;
  std::vector<std::jthread> threads;
  for (auto& stage : stages) {
    threads.emplace_back(RunStage, std::ref(*stage), std::ref(failures));
  }
  PublishTally source;
  std::jthread source_thread([&](std::stop_token stop) {
    const absl::Duration period = absl::Seconds(1) / rate;
    const absl::Time start = absl::Now();
    for (int64_t id = 0; !stop.stop_requested(); ++id) {
      const std::string record =
          id % 50 == 49 ? absl::StrCat(id, ",n/a")
                        : absl::StrCat(id, ",", 15 + id % 200 / 10.0);
      absl::StatusOr<herald::PublishResult> result = raw->Publish(record);
      if (!result.ok()) {
        failures.Add("source: publish to \"raw\"", result.status());
        return;
      }
      source.Add(*result);
      // Pacing to the rate (not synchronization).
      const absl::Duration ahead = start + (id + 1) * period - absl::Now();
      if (ahead > absl::ZeroDuration()) absl::SleepFor(ahead);
    }
  });

  // The run itself (not synchronization): the source publishes meanwhile.
  absl::SleepFor(duration);

  // [START drain]
  // Drain in order: once a stage's upstream has ended, nothing more can reach
  // its input, so it takes what is queued and ends; then the next one.
  source_thread.request_stop();
  source_thread.join();
  for (std::jthread& t : threads) {
    t.request_stop();
    t.join();
  }
  for (auto& stage : stages) {
    absl::StatusOr<herald::SubscriptionTotals> totals = stage->in.Close();
    if (!totals.ok()) {
      failures.Add(absl::StrCat(stage->name, ": close"), totals.status());
      continue;
    }
    stage->totals = *totals;
  }
  // [END drain]
  const herald::v1::BrokerStats stats = broker->Shutdown(absl::ZeroDuration());

  absl::PrintF("\nsource published %d records on \"raw\"\n\n",
               source.published);
  absl::PrintF("%-7s %-9s %8s %8s %-16s %9s %8s %9s  %s\n", "stage", "in",
               "entered", "dropped", "(reasons)", "processed", "rejected",
               "forwarded", "out");
  for (const auto& stage : stages) {
    const herald::SubscriptionTotals& t = stage->totals;
    std::string reasons;
    for (size_t i = 0; i < t.dropped_by_reason.size(); ++i) {
      if (t.dropped_by_reason[i] == 0) continue;
      absl::StrAppend(&reasons, reasons.empty() ? "" : " ",
                      herald::DropReasonName(static_cast<DropReason>(i)), " ",
                      t.dropped_by_reason[i]);
    }
    absl::PrintF("%-7s %-9s %8d %8d %-16s %9d %8d %9s  %s\n", stage->name,
                 stage->in_topic, t.matched, t.dropped(), reasons,
                 stage->received, stage->rejected,
                 stage->is_sink() ? "-" : absl::StrCat(stage->forwarded),
                 stage->is_sink() ? "-" : stage->out_topic);
  }
  for (const auto& stage : stages) {
    if (!stage->first_rejection.empty()) {
      absl::PrintF("%s rejected %d records, the first: %s\n", stage->name,
                   stage->rejected, stage->first_rejection);
    }
  }

  // [START accounting]
  // Per stage: entered == processed + dropped + abandoned (from the input's
  // final totals); processed == rejected + forwarded; and every forwarded
  // record entered the next stage, its publish-time drops being the next
  // stage's drops. End to end: every record the source published arrived at
  // the sink, or was rejected or dropped somewhere with a reason.
  Checks checks;
  uint64_t publishes = source.published;
  for (const auto& stage : stages) publishes += stage->forwarded;
  checks.Equal("publishes counted by the broker", stats.published(), publishes);
  uint64_t upstream_forwarded = source.published;
  const PublishTally* upstream_tally = &source;
  uint64_t lost = 0;
  for (const auto& stage : stages) {
    const herald::SubscriptionTotals& t = stage->totals;
    const std::string& n = stage->name;
    checks.Equal(n + ": entered == upstream's forwarded", t.matched,
                 upstream_forwarded);
    checks.Equal(n + ": upstream's PublishResult.matched == entered",
                 upstream_tally->matched, t.matched);
    for (DropReason reason : {DropReason::kQueueFull, DropReason::kBlockTimeout,
                              DropReason::kClosed}) {
      checks.Equal(absl::StrCat(n, ": upstream's PublishResult drops == ",
                                herald::DropReasonName(reason)),
                   upstream_tally->dropped[static_cast<size_t>(reason)],
                   t.dropped(reason));
    }
    checks.Equal(n + ": entered == processed + dropped + abandoned", t.matched,
                 stage->received + t.dropped() + t.abandoned);
    checks.Equal(n + ": delivered == processed", t.delivered, stage->received);
    if (!stage->is_sink()) {
      checks.Equal(n + ": processed == rejected + forwarded", stage->received,
                   stage->rejected + stage->forwarded);
    }
    checks.Equal(n + ": nothing left behind at the drain", t.abandoned, 0);
    lost += stage->rejected + t.dropped() + t.abandoned;
    upstream_forwarded = stage->forwarded;
    upstream_tally = &stage->out_tally;
  }
  const Stage& sink_stage = *stages.back();
  checks.Equal("sink: records out of order", sink_stage.out_of_order, 0);
  checks.Equal("end to end: published == arrived + rejected + dropped",
               source.published,
               sink_stage.received - sink_stage.rejected + lost);
  // [END accounting]
  absl::PrintF(
      "\nend to end: %d published = %d arrived in order + %d "
      "rejected or dropped\n",
      source.published, sink_stage.received - sink_stage.rejected, lost);

  return Verdict(failures, checks);
}
