// Herald's Google Benchmark harness: a main() that runs the benchmarks and
// then prints, for every Herald case, its ratio to each same-run baseline.
//
// Naming: `BM_<Subject>_<Scenario>[/args]`. `Subject` is `Herald` for our
// code and anything else (`Ring`, `Naive`, `Split`, ...) for a baseline. A
// Herald case is paired with every baseline of the same scenario and args.
// The ratio compares the counter named by SetRatioCounter() (default
// "items_per_second", higher is better) or, where a run lacks it, the real time
// per iteration (lower is better). With --benchmark_repetitions, the medians
// are compared.
#ifndef HERALD_BENCH_BENCH_MAIN_H_
#define HERALD_BENCH_BENCH_MAIN_H_

#include <string>

namespace herald::bench {

// Chooses the counter ratios are computed from (higher is better). Call
// before main() runs the benchmarks, e.g. from a static initializer.
void SetRatioCounter(const std::string& counter_name);

}  // namespace herald::bench

#endif  // HERALD_BENCH_BENCH_MAIN_H_
