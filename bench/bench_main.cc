#include "bench/bench_main.h"

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "benchmark/benchmark.h"

namespace herald::bench {
namespace {

std::string& RatioCounter() {
  static std::string* const name = new std::string("items_per_second");
  return *name;
}

struct Result {
  double counter = 0;        // RatioCounter(), when present.
  bool has_counter = false;  //
  double real_time = 0;      // per iteration, in the run's time unit.
};

struct SplitName {
  std::string subject;   // "Herald", "Ring", ...
  std::string scenario;  // "1x1/payload:64/..."
};

// "BM_Herald_Fanout/subscribers:4" -> {"Herald", "Fanout/subscribers:4"}.
bool Split(absl::string_view name, SplitName* out) {
  if (!absl::ConsumePrefix(&name, "BM_")) return false;
  const size_t underscore = name.find('_');
  if (underscore == name.npos) return false;
  out->subject = std::string(name.substr(0, underscore));
  out->scenario = std::string(name.substr(underscore + 1));
  return true;
}

// Prints the usual console table, keeps every result, and prints the
// herald/baseline ratios at the end.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      const bool aggregate = run.run_type == Run::RT_Aggregate;
      if (aggregate && run.aggregate_name != "median") continue;
      std::string name = run.run_name.str();
      SplitName split;
      if (!Split(name, &split)) continue;
      Result result;
      result.real_time = run.GetAdjustedRealTime();
      const auto it = run.counters.find(RatioCounter());
      if (it != run.counters.end()) {
        result.has_counter = true;
        result.counter = it->second.value;
      }
      // A median replaces the individual repetitions.
      auto& slot = results_[split.scenario][split.subject];
      if (aggregate || !slot.second) slot = {result, aggregate};
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    bool header = false;
    for (const auto& [scenario, subjects] : results_) {
      const auto herald = subjects.find("Herald");
      if (herald == subjects.end()) continue;
      for (const auto& [subject, entry] : subjects) {
        if (subject == "Herald") continue;
        const Result& h = herald->second.first;
        const Result& b = entry.first;
        double ratio;
        const char* basis;
        if (h.has_counter && b.has_counter && b.counter > 0) {
          ratio = h.counter / b.counter;
          basis = "counter";
        } else if (h.real_time > 0) {
          ratio = b.real_time / h.real_time;
          basis = "time";
        } else {
          continue;
        }
        if (!header) {
          std::printf(
              "\nherald/baseline ratios (> 1.00 means Herald is better; "
              "counter %s, else time per iteration):\n",
              RatioCounter().c_str());
          header = true;
        }
        std::printf("%s\n", absl::StrFormat("  %-48s herald/%-8s = %6.2f  (%s)",
                                            scenario, subject, ratio, basis)
                                .c_str());
      }
    }
    std::fflush(stdout);
  }

 private:
  // scenario -> subject -> (result, is_median)
  std::map<std::string, std::map<std::string, std::pair<Result, bool>>>
      results_;
};

}  // namespace

void SetRatioCounter(const std::string& counter_name) {
  RatioCounter() = counter_name;
}

}  // namespace herald::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  herald::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
