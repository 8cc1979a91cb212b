// Brief spinning before a consumer parks.
//
// A consumer that finds its queue empty and parks at once makes the next
// publish pay for a wake-up (a lock, a signal, a futex call) and itself pay
// for a context switch. When the publisher is only slightly slower than the
// consumer this repeats for every message and both sides settle into that
// slow rhythm. Spinning for about a microsecond first lets the next message
// arrive while the consumer is still awake, as absl::Mutex and Go's runtime
// do before they block.
#ifndef HERALD_BROKER_INTERNAL_SPIN_H_
#define HERALD_BROKER_INTERNAL_SPIN_H_

namespace herald::internal {

// Pauses before a consumer parks: on the order of a microsecond.
inline constexpr int kSpinsBeforePark = 128;

// Tells the CPU this is a spin-wait loop.
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#else
  asm volatile("" ::: "memory");
#endif
}

// Pauses between two looks at the queue while spinning. Each look reads a
// cache line the publisher is about to write, and takes it from the
// publisher's core: looking after every pause made each publish pay for
// several such transfers.
inline constexpr int kPausesPerLook = 8;

// Spins up to `spins` pauses until `ready()`, looking every
// kPausesPerLook pauses; returns its last value.
template <typename Ready>
bool SpinUntil(int spins, Ready ready) {
  for (int i = 0; i < spins; i += kPausesPerLook) {
    if (ready()) return true;
    for (int p = 0; p < kPausesPerLook; ++p) CpuRelax();
  }
  return ready();
}

}  // namespace herald::internal

#endif  // HERALD_BROKER_INTERNAL_SPIN_H_
