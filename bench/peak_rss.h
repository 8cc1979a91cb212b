// The process's peak resident set size, for benchmarks that report it per
// run.
#ifndef HERALD_BENCH_PEAK_RSS_H_
#define HERALD_BENCH_PEAK_RSS_H_

namespace herald::bench {

// Resets the process's RSS high-water mark to the current RSS (Linux >= 4.0),
// after returning freed heap to the system, so that earlier runs do not
// count.
void ResetPeakRss();

// The process's peak RSS since the last ResetPeakRss(), in MiB: VmHWM, or
// getrusage's ru_maxrss (the peak since the process started) without /proc.
double PeakRssMiB();

}  // namespace herald::bench

#endif  // HERALD_BENCH_PEAK_RSS_H_
