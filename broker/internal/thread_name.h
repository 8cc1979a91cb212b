// Names the calling thread, for `top -H`, `perf --sort comm`, gdb and core
// dumps: every thread Herald starts is named "herald-<role>".
#ifndef HERALD_BROKER_INTERNAL_THREAD_NAME_H_
#define HERALD_BROKER_INTERNAL_THREAD_NAME_H_

#include <pthread.h>

namespace herald::internal {

// `name` is cut to the kernel's 15 characters. Best effort: a failure
// changes nothing else.
inline void NameThisThread(const char* name) {
  char buffer[16] = {};
  for (int i = 0; i < 15 && name[i] != '\0'; ++i) buffer[i] = name[i];
  [[maybe_unused]] const int rc = pthread_setname_np(pthread_self(), buffer);
}

}  // namespace herald::internal

#endif  // HERALD_BROKER_INTERNAL_THREAD_NAME_H_
