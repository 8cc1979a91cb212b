#include "bench/peak_rss.h"

#include <malloc.h>
#include <sys/resource.h>

#include <cstdio>

namespace herald::bench {

void ResetPeakRss() {
  malloc_trim(0);
  if (FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

double PeakRssMiB() {
  long kib = -1;
  if (FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    while (std::fgets(line, sizeof(line), f) != nullptr) {
      if (std::sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
    }
    std::fclose(f);
  }
  if (kib < 0) {
    struct rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) == 0) kib = usage.ru_maxrss;
  }
  return kib >= 0 ? static_cast<double>(kib) / 1024.0 : 0;
}

}  // namespace herald::bench
