// In-process publish/subscribe: Herald's Broker against two baselines, on the
// same workloads in the same run (see bench/README.md):
//
//   Herald  Broker::Publish(topic, payload) by name (topic lookup, exact
//           accounting, drop-newest queues of 65,536), subscribers pulling
//           with Subscription::ReceiveBatch into a reused vector.
//   Ring    the reference: the same MpscRing per subscriber, the same
//           refcounted herald::Message made once per publish and shared by the
//           subscribers, the same consumer parking (an event count on an
//           absl::Mutex/CondVar), but no topic lookup, counters or policies.
//   Naive   the Go-tutorial broker translated literally: publishers send to a
//           central mutex+condvar queue, one router thread looks up the topic
//           and try-pushes to per-subscriber mutex+condvar std::deque queues,
//           dropping when one is full.
//
// Scenarios PubPSubS: P publisher threads and S subscriber threads, one topic,
// payload 64 B or 1 KiB. One benchmark iteration is one message per publisher:
// a run publishes `max_iterations` messages from each publisher (so the count
// scales with --benchmark_min_time) and is timed manually from the start
// signal to the last subscriber having drained its queue. Setup and teardown
// (broker, threads) are outside the timed region.
//
// Counters: delivered_per_s (the ratio counter), published_per_s, drop_pct
// (drops / (publishes x subscribers)), p50_ns / p99_ns (publish-to-receive
// latency, every 64th delivery), allocs_per_publish (operator new calls on the
// publishing side, router included, per publish), allocs_per_delivery (on the
// subscriber threads, per delivery), peak_rss_mb (the process's peak RSS
// during the run: VmHWM, reset before each run).
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <latch>
#include <memory>
#include <mutex>
#include <new>
#include <shared_mutex>
#include <stop_token>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/bench_main.h"
#include "bench/peak_rss.h"
#include "benchmark/benchmark.h"
#include "broker/broker.h"
#include "broker/internal/mpsc_ring.h"
#include "broker/internal/spin.h"
#include "broker/message.h"

// ------------------------------------------------------ allocation counting
//
// Every operator new in the binary counts one allocation in a thread-local
// counter; each benchmark thread reads its own counter before and after its
// work. Thread-local, so counting adds no shared cache line to the measured
// code.
namespace {
constinit thread_local uint64_t t_allocations = 0;

void* CountedAlloc(std::size_t size) {
  ++t_allocations;
  return std::malloc(size == 0 ? 1 : size);
}

void* CountedAlignedAlloc(std::size_t size, std::align_val_t align) {
  ++t_allocations;
  const std::size_t a = static_cast<std::size_t>(align);
  void* p = nullptr;
  if (posix_memalign(&p, a < sizeof(void*) ? sizeof(void*) : a,
                     size == 0 ? 1 : size) != 0) {
    return nullptr;
  }
  return p;
}

// Not inlined: GCC's -Wmismatched-new-delete would otherwise see free() on a
// pointer from operator new once a delete expression is inlined.
ABSL_ATTRIBUTE_NOINLINE void CountedFree(void* p) noexcept { std::free(p); }
}  // namespace

void* operator new(std::size_t size) {
  if (void* p = CountedAlloc(size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
  if (void* p = CountedAlloc(size)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return CountedAlloc(size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return CountedAlloc(size);
}
void* operator new(std::size_t size, std::align_val_t align) {
  if (void* p = CountedAlignedAlloc(size, align)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size, std::align_val_t align) {
  if (void* p = CountedAlignedAlloc(size, align)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, std::align_val_t align,
                   const std::nothrow_t&) noexcept {
  return CountedAlignedAlloc(size, align);
}
void* operator new[](std::size_t size, std::align_val_t align,
                     const std::nothrow_t&) noexcept {
  return CountedAlignedAlloc(size, align);
}
void operator delete(void* p) noexcept { CountedFree(p); }
void operator delete[](void* p) noexcept { CountedFree(p); }
void operator delete(void* p, std::size_t) noexcept { CountedFree(p); }
void operator delete[](void* p, std::size_t) noexcept { CountedFree(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept {
  CountedFree(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  CountedFree(p);
}
void operator delete(void* p, std::align_val_t) noexcept { CountedFree(p); }
void operator delete[](void* p, std::align_val_t) noexcept { CountedFree(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  CountedFree(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  CountedFree(p);
}
void operator delete(void* p, std::align_val_t,
                     const std::nothrow_t&) noexcept {
  CountedFree(p);
}
void operator delete[](void* p, std::align_val_t,
                       const std::nothrow_t&) noexcept {
  CountedFree(p);
}

namespace {

using herald::Message;
using herald::internal::MpscRing;

constexpr char kTopic[] = "bench.inproc";
constexpr size_t kQueueCapacity = 65536;
// The most messages one receive call takes (Herald and Ring).
constexpr size_t kReceiveBatch = 256;
// One latency sample per this many deliveries, per subscriber.
constexpr uint64_t kSampleEvery = 64;

const bool kRatioCounterSet = [] {
  herald::bench::SetRatioCounter("delivered_per_s");
  return true;
}();

// ------------------------------------------------------------ the harness

struct Workload {
  int publishers;
  int subscribers;
  size_t payload_size;
  int64_t per_publisher;  // Messages each publisher publishes.
};

struct PublisherStats {
  uint64_t published = 0;
  uint64_t taken = 0;    // Publish x subscriber pairs queued.
  uint64_t dropped = 0;  // Publish x subscriber pairs dropped.
  uint64_t errors = 0;
  uint64_t allocations = 0;
};

struct SubscriberStats {
  uint64_t delivered = 0;
  uint64_t allocations = 0;
  std::vector<int64_t> latencies_ns;  // Reserved before the run.
  absl::Time end;                     // When it had drained everything.
  std::string error;
};

// What a subscriber does with each message: read it, sample the latency.
inline void Consume(absl::string_view payload, int64_t publish_unix_ns,
                    SubscriberStats* s) {
  benchmark::DoNotOptimize(payload.front());
  benchmark::DoNotOptimize(payload.back());
  if (++s->delivered % kSampleEvery == 0 &&
      s->latencies_ns.size() < s->latencies_ns.capacity()) {
    s->latencies_ns.push_back(absl::GetCurrentTimeNanos() - publish_unix_ns);
  }
}

// Makes Abseil create the calling thread's synchronization identity now.
// Abseil creates it lazily, inside an absl::Mutex slow path whose
// synchronization ThreadSanitizer is told to ignore; when another thread then
// wakes this one (a publisher contending for a subscription's consumer mutex,
// woken by the consumer), ThreadSanitizer reports a false data race on the
// identity's futex word (abseil/abseil-cpp#217, google/sanitizers#953).
// Creating it before the start latch orders it before every wake-up.
void CreateAbslThreadIdentity() {
  absl::Mutex mu;
  absl::CondVar cv;
  absl::MutexLock lock(&mu);
  cv.WaitWithTimeout(&mu, absl::ZeroDuration());
}

struct RunResult {
  double seconds = 0;
  uint64_t published = 0;
  uint64_t taken = 0;
  uint64_t dropped = 0;
  uint64_t delivered = 0;
  uint64_t publish_allocations = 0;
  uint64_t delivery_allocations = 0;
  std::vector<int64_t> latencies_ns;
  double peak_rss_mib = 0;
  std::string error;
};

// A subject implements:
//   explicit Subject(const Workload&);       // setup, untimed
//   void Publish(int publisher, const Workload&, absl::string_view payload,
//                PublisherStats*);           // publishes per_publisher
//   void Receive(int subscriber, SubscriberStats*);  // until drained + done
//   void PublishersDone();                   // every publisher returned
//   uint64_t RouterAllocations();            // publish-side threads of its own
//   void Finish(RunResult*);                 // after the run: checks, teardown
template <typename Subject>
RunResult RunOnce(const Workload& w) {
  RunResult result;
  herald::bench::ResetPeakRss();
  Subject subject(w);
  std::vector<PublisherStats> pubs(w.publishers);
  std::vector<SubscriberStats> subs(w.subscribers);
  const uint64_t offered =
      static_cast<uint64_t>(w.per_publisher) * w.publishers;
  for (SubscriberStats& s : subs) {
    s.latencies_ns.reserve(offered / kSampleEvery + 1);
  }
  // Every thread makes its Abseil thread identity, then all start together.
  // Start gates are std::latch, not absl::Notification: see
  // CreateAbslThreadIdentity().
  std::latch ready(w.publishers + w.subscribers);
  std::latch go(1);
  std::vector<std::thread> threads;
  for (int i = 0; i < w.subscribers; ++i) {
    threads.emplace_back([&, i] {
      SubscriberStats& s = subs[i];
      CreateAbslThreadIdentity();
      ready.count_down();
      go.wait();
      const uint64_t before = t_allocations;
      subject.Receive(i, &s);
      s.allocations = t_allocations - before;
      s.end = absl::Now();
    });
  }
  for (int i = 0; i < w.publishers; ++i) {
    threads.emplace_back([&, i] {
      const std::string payload(w.payload_size, 'x');
      CreateAbslThreadIdentity();
      ready.count_down();
      go.wait();
      const uint64_t before = t_allocations;
      subject.Publish(i, w, payload, &pubs[i]);
      pubs[i].allocations = t_allocations - before;
    });
  }
  ready.wait();
  const absl::Time start = absl::Now();
  go.count_down();
  for (int i = 0; i < w.publishers; ++i) threads[w.subscribers + i].join();
  subject.PublishersDone();
  for (int i = 0; i < w.subscribers; ++i) threads[i].join();
  result.peak_rss_mib = herald::bench::PeakRssMiB();

  absl::Time end = start;
  for (const PublisherStats& p : pubs) {
    result.published += p.published;
    result.taken += p.taken;
    result.dropped += p.dropped;
    result.publish_allocations += p.allocations;
    if (p.errors > 0 && result.error.empty()) {
      result.error = absl::StrCat(p.errors, " publish errors");
    }
  }
  result.publish_allocations += subject.RouterAllocations();
  for (SubscriberStats& s : subs) {
    result.delivered += s.delivered;
    result.delivery_allocations += s.allocations;
    end = std::max(end, s.end);
    result.latencies_ns.insert(result.latencies_ns.end(),
                               s.latencies_ns.begin(), s.latencies_ns.end());
    if (!s.error.empty() && result.error.empty()) result.error = s.error;
  }
  result.seconds = absl::ToDoubleSeconds(end - start);
  subject.Finish(&result);
  if (result.error.empty() && result.delivered != result.taken) {
    result.error = absl::StrCat("delivered ", result.delivered, " != taken ",
                                result.taken);
  }
  return result;
}

int64_t Percentile(std::vector<int64_t>* v, double p) {
  if (v->empty()) return 0;
  const size_t k = std::min(
      v->size() - 1, static_cast<size_t>(p * static_cast<double>(v->size())));
  std::nth_element(v->begin(), v->begin() + k, v->end());
  return (*v)[k];
}

template <typename Subject>
void RunScenario(benchmark::State& state, int publishers, int subscribers) {
  const Workload w{publishers, subscribers, static_cast<size_t>(state.range(0)),
                   state.max_iterations};
  RunResult r;
  while (state.KeepRunningBatch(state.max_iterations)) {
    r = RunOnce<Subject>(w);
    state.SetIterationTime(std::max(r.seconds, 1e-9));
  }
  if (!r.error.empty()) {
    state.SkipWithError(r.error.c_str());
    return;
  }
  const double seconds = std::max(r.seconds, 1e-9);
  const double pairs = static_cast<double>(r.taken + r.dropped);
  state.counters["delivered_per_s"] =
      static_cast<double>(r.delivered) / seconds;
  state.counters["published_per_s"] =
      static_cast<double>(r.published) / seconds;
  state.counters["drop_pct"] =
      pairs > 0 ? 100.0 * static_cast<double>(r.dropped) / pairs : 0;
  state.counters["p50_ns"] =
      static_cast<double>(Percentile(&r.latencies_ns, 0.50));
  state.counters["p99_ns"] =
      static_cast<double>(Percentile(&r.latencies_ns, 0.99));
  state.counters["allocs_per_publish"] =
      r.published > 0 ? static_cast<double>(r.publish_allocations) /
                            static_cast<double>(r.published)
                      : 0;
  state.counters["allocs_per_delivery"] =
      r.delivered > 0 ? static_cast<double>(r.delivery_allocations) /
                            static_cast<double>(r.delivered)
                      : 0;
  state.counters["peak_rss_mb"] = r.peak_rss_mib;
}

// ------------------------------------------------------------ Herald

class HeraldSubject {
 public:
  explicit HeraldSubject(const Workload& w) : stops_(w.subscribers) {
    absl::StatusOr<std::unique_ptr<herald::Broker>> broker =
        herald::Broker::Create();
    Check(broker.status());
    broker_ = std::move(*broker);
    herald::SubscriptionOptions options;
    options.queue_capacity = kQueueCapacity;
    options.overflow = herald::OverflowPolicy::kDropNewest;
    for (int i = 0; i < w.subscribers; ++i) {
      absl::StatusOr<herald::Subscription> sub =
          broker_->Subscribe(kTopic, options);
      Check(sub.status());
      subs_.push_back(std::move(*sub));
    }
  }

  void Publish(int, const Workload& w, absl::string_view payload,
               PublisherStats* s) {
    for (int64_t i = 0; i < w.per_publisher; ++i) {
      const absl::StatusOr<herald::PublishResult> r =
          broker_->Publish(kTopic, payload);
      ++s->published;
      if (!r.ok()) {
        ++s->errors;
        continue;
      }
      s->taken += r->taken;
      s->dropped += r->dropped();
    }
  }

  void Receive(int i, SubscriberStats* s) {
    herald::Subscription& sub = subs_[i];
    const std::stop_token stop = stops_[i].get_token();
    std::vector<herald::Delivery> batch;  // Reused: no allocation per call.
    while (true) {
      const absl::Status status =
          sub.ReceiveBatch(kReceiveBatch, absl::InfiniteFuture(), &batch, stop);
      if (!status.ok()) {
        // kCancelled: stop was requested and the queue is drained.
        if (!absl::IsCancelled(status)) s->error = status.ToString();
        return;
      }
      for (const herald::Delivery& d : batch) {
        Consume(d.payload(), d.message()->publish_time_unix_ns(), s);
      }
    }
  }

  void PublishersDone() {
    for (std::stop_source& stop : stops_) stop.request_stop();
  }

  uint64_t RouterAllocations() const { return 0; }

  // Checks Herald's own accounting against what the threads saw.
  void Finish(RunResult* r) {
    uint64_t delivered = 0;
    for (herald::Subscription& sub : subs_) {
      const absl::StatusOr<herald::SubscriptionTotals> t = sub.Close();
      if (!t.ok()) {
        r->error = t.status().ToString();
        continue;
      }
      delivered += t->delivered;
      if (t->matched != t->delivered + t->dropped() + t->abandoned &&
          r->error.empty()) {
        r->error = "subscription totals do not add up";
      }
    }
    if (delivered != r->delivered && r->error.empty()) {
      r->error = absl::StrCat("Herald counted ", delivered,
                              " deliveries, subscribers saw ", r->delivered);
    }
    broker_->Shutdown(absl::ZeroDuration());
  }

 private:
  static void Check(const absl::Status& s) {
    if (!s.ok()) {
      std::fprintf(stderr, "inproc_bench: %s\n", s.ToString().c_str());
      std::abort();
    }
  }

  std::unique_ptr<herald::Broker> broker_;
  std::vector<herald::Subscription> subs_;
  std::vector<std::stop_source> stops_;
};

// ------------------------------------------------------------ Ring

// One subscriber's queue: an MpscRing plus the event count SubscriptionState
// uses to park its consumer (waiters_ announced seq_cst before the last
// emptiness check; publishers check waiters_ after the ring's seq_cst store).
class RingQueue {
 public:
  RingQueue() : ring_(kQueueCapacity) {}

  // Any publisher. Consumes one reference to `m` when it returns true.
  bool Push(Message* m) {
    uint64_t position;
    if (!ring_.TryPush(m, &position)) return false;
    if (waiters_.load(std::memory_order_seq_cst) != 0) {
      absl::MutexLock lock(&mu_);
      ++wake_epoch_;
      cv_.SignalAll();
    }
    return true;
  }

  // The consumer. Takes up to `max` messages once at least one is there;
  // returns 0 once Finish() was called and the ring is drained.
  size_t PopBatch(Message** out, size_t max) {
    absl::MutexLock lock(&mu_);
    bool announced = false;
    bool spun = false;
    while (true) {
      size_t n = 0;
      uint64_t position;
      while (n < max && ring_.TryPop(&out[n], &position)) ++n;
      if (n > 0 || finished_) {
        if (announced) waiters_.fetch_sub(1, std::memory_order_relaxed);
        return n;
      }
      // The same brief spin as Herald's consumer before it parks.
      if (!spun) {
        spun = true;
        if (herald::internal::SpinUntil(
                herald::internal::kSpinsBeforePark,
                [this] { return ring_.HasMessage(); })) {
          continue;
        }
      }
      if (!announced) {
        waiters_.fetch_add(1, std::memory_order_seq_cst);
        announced = true;
        continue;
      }
      const uint64_t key = wake_epoch_;
      while (wake_epoch_ == key) cv_.Wait(&mu_);
    }
  }

  void Finish() {
    absl::MutexLock lock(&mu_);
    finished_ = true;
    ++wake_epoch_;
    cv_.SignalAll();
  }

 private:
  MpscRing<Message*> ring_;
  absl::Mutex mu_;
  absl::CondVar cv_;
  uint64_t wake_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  alignas(herald::internal::kCacheLineSize) std::atomic<uint32_t> waiters_{0};
};

class RingSubject {
 public:
  explicit RingSubject(const Workload& w) {
    for (int i = 0; i < w.subscribers; ++i) {
      queues_.push_back(std::make_unique<RingQueue>());
    }
  }

  void Publish(int, const Workload& w, absl::string_view payload,
               PublisherStats* s) {
    const uint32_t targets = static_cast<uint32_t>(queues_.size());
    for (int64_t i = 0; i < w.per_publisher; ++i) {
      Message* m =
          Message::Create(kTopic, payload, kNoHeaders, absl::Now(), targets);
      uint32_t unused = 0;
      for (const std::unique_ptr<RingQueue>& q : queues_) {
        if (!q->Push(m)) ++unused;
      }
      if (unused > 0) m->Unref(unused);
      ++s->published;
      s->taken += targets - unused;
      s->dropped += unused;
    }
  }

  void Receive(int i, SubscriberStats* s) {
    RingQueue& q = *queues_[i];
    Message* batch[kReceiveBatch];
    while (const size_t n = q.PopBatch(batch, kReceiveBatch)) {
      for (size_t j = 0; j < n; ++j) {
        Consume(batch[j]->payload(), batch[j]->publish_time_unix_ns(), s);
        batch[j]->Unref();
      }
    }
  }

  void PublishersDone() {
    for (const std::unique_ptr<RingQueue>& q : queues_) q->Finish();
  }

  uint64_t RouterAllocations() const { return 0; }
  void Finish(RunResult*) {}

 private:
  static inline const herald::Headers kNoHeaders;
  std::vector<std::unique_ptr<RingQueue>> queues_;
};

// ------------------------------------------------------------ Naive

// A Go channel translated literally: a bounded mutex + condvar std::deque.
template <typename T>
class Channel {
 public:
  explicit Channel(size_t capacity) : capacity_(capacity) {}

  // `ch <- v`: blocks while full.
  void Send(T v) {
    std::unique_lock<std::mutex> lock(mu_);
    not_full_.wait(lock, [&] { return items_.size() < capacity_; });
    items_.push_back(std::move(v));
    not_empty_.notify_one();
  }
  // `select { case ch <- v: default: }`: false (dropped) when full.
  bool TrySend(T v) {
    std::lock_guard<std::mutex> lock(mu_);
    if (items_.size() >= capacity_) return false;
    items_.push_back(std::move(v));
    not_empty_.notify_one();
    return true;
  }
  // `v, ok := <-ch`: false once closed and empty.
  bool Receive(T* v) {
    std::unique_lock<std::mutex> lock(mu_);
    not_empty_.wait(lock, [&] { return !items_.empty() || closed_; });
    if (items_.empty()) return false;
    *v = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return true;
  }
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    not_empty_.notify_all();
  }

 private:
  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::deque<T> items_;
  bool closed_ = false;
};

struct NaiveMessage {
  std::string topic;
  std::string payload;
  int64_t publish_unix_ns;
};
using NaiveMessagePtr = std::shared_ptr<const NaiveMessage>;

class NaiveSubject {
 public:
  explicit NaiveSubject(const Workload& w) : publish_ch_(kQueueCapacity) {
    for (int i = 0; i < w.subscribers; ++i) {
      queues_.push_back(
          std::make_unique<Channel<NaiveMessagePtr>>(kQueueCapacity));
      std::unique_lock<std::shared_mutex> lock(subscribers_mu_);
      subscribers_[kTopic].push_back(queues_.back().get());
    }
    router_ = std::thread([this] { Route(); });
  }

  void Publish(int, const Workload& w, absl::string_view payload,
               PublisherStats* s) {
    for (int64_t i = 0; i < w.per_publisher; ++i) {
      publish_ch_.Send(std::make_shared<const NaiveMessage>(
          NaiveMessage{std::string(kTopic), std::string(payload),
                       absl::GetCurrentTimeNanos()}));
      ++s->published;
    }
  }

  void Receive(int i, SubscriberStats* s) {
    NaiveMessagePtr m;
    while (queues_[i]->Receive(&m)) {
      Consume(m->payload, m->publish_unix_ns, s);
      m.reset();
    }
  }

  // Closes the publish channel; the router drains it, then closes the
  // subscriber channels.
  void PublishersDone() {
    publish_ch_.Close();
    router_.join();
  }

  uint64_t RouterAllocations() const { return router_allocations_; }

  void Finish(RunResult* r) {
    r->taken = taken_;
    r->dropped = dropped_;
  }

 private:
  void Route() {
    const uint64_t before = t_allocations;
    NaiveMessagePtr m;
    while (publish_ch_.Receive(&m)) {
      std::shared_lock<std::shared_mutex> lock(subscribers_mu_);
      const auto it = subscribers_.find(m->topic);
      if (it == subscribers_.end()) continue;
      for (Channel<NaiveMessagePtr>* q : it->second) {
        if (q->TrySend(m)) {
          ++taken_;
        } else {
          ++dropped_;
        }
      }
    }
    router_allocations_ = t_allocations - before;
    for (const auto& q : queues_) q->Close();
  }

  Channel<NaiveMessagePtr> publish_ch_;
  std::shared_mutex subscribers_mu_;
  std::unordered_map<std::string, std::vector<Channel<NaiveMessagePtr>*>>
      subscribers_;
  std::vector<std::unique_ptr<Channel<NaiveMessagePtr>>> queues_;
  std::thread router_;
  // Written by the router thread, read after it is joined.
  uint64_t taken_ = 0;
  uint64_t dropped_ = 0;
  uint64_t router_allocations_ = 0;
};

// ------------------------------------------------------------ registration

#define HERALD_INPROC_SCENARIO(Scenario, publishers, subscribers) \
  void BM_Herald_##Scenario(benchmark::State& state) {            \
    RunScenario<HeraldSubject>(state, publishers, subscribers);   \
  }                                                               \
  void BM_Ring_##Scenario(benchmark::State& state) {              \
    RunScenario<RingSubject>(state, publishers, subscribers);     \
  }                                                               \
  void BM_Naive_##Scenario(benchmark::State& state) {             \
    RunScenario<NaiveSubject>(state, publishers, subscribers);    \
  }                                                               \
  BENCHMARK(BM_Herald_##Scenario)                                 \
      ->ArgName("payload")                                        \
      ->Arg(64)                                                   \
      ->Arg(1024)                                                 \
      ->UseManualTime();                                          \
  BENCHMARK(BM_Ring_##Scenario)                                   \
      ->ArgName("payload")                                        \
      ->Arg(64)                                                   \
      ->Arg(1024)                                                 \
      ->UseManualTime();                                          \
  BENCHMARK(BM_Naive_##Scenario)                                  \
      ->ArgName("payload")                                        \
      ->Arg(64)                                                   \
      ->Arg(1024)                                                 \
      ->UseManualTime()

HERALD_INPROC_SCENARIO(Pub1Sub1, 1, 1);
HERALD_INPROC_SCENARIO(Pub1Sub4, 1, 4);
HERALD_INPROC_SCENARIO(Pub4Sub1, 4, 1);

}  // namespace
