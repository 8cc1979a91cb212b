// Topic matching: Herald's allocation-free PatternMatches against the obvious
// implementation (split both strings into token vectors, then compare).
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "benchmark/benchmark.h"
#include "broker/topic.h"

namespace {

struct Case {
  const char* pattern;
  const char* topic;
};

constexpr Case kCases[] = {
    {"orders.eu.created", "orders.eu.created"},
    {"orders.*.created", "orders.eu.created"},
    {"orders.>", "orders.eu.created.v2"},
    {"a.b.c.d.e.f.*", "a.b.c.d.e.f.g"},
};

bool SplitMatches(absl::string_view pattern, absl::string_view topic) {
  const std::vector<absl::string_view> p = absl::StrSplit(pattern, '.');
  const std::vector<absl::string_view> t = absl::StrSplit(topic, '.');
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == ">") return t.size() > i;
    if (i >= t.size()) return false;
    if (p[i] != "*" && p[i] != t[i]) return false;
  }
  return p.size() == t.size();
}

template <bool (*Match)(absl::string_view, absl::string_view)>
void RunMatch(benchmark::State& state) {
  const Case& c = kCases[state.range(0)];
  for (auto _ : state) {
    benchmark::DoNotOptimize(Match(c.pattern, c.topic));
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(c.pattern);
}

void BM_Herald_Match(benchmark::State& state) {
  RunMatch<herald::PatternMatches>(state);
}
void BM_Split_Match(benchmark::State& state) { RunMatch<SplitMatches>(state); }

BENCHMARK(BM_Herald_Match)->ArgName("case")->DenseRange(0, 3);
BENCHMARK(BM_Split_Match)->ArgName("case")->DenseRange(0, 3);

}  // namespace
