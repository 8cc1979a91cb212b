// Publish/subscribe over TCP loopback: Herald (a Broker with its net::Server,
// reached through SDK clients) against plain ZeroMQ PUB->SUB with no broker
// (`ZmqDirect`) and a ZeroMQ XSUB/XPUB zmq_proxy broker (`ZmqProxy`, the same
// hop count as Herald: publisher -> broker -> subscriber).
//
// Everything runs in this process, on threads, each role with its own ZeroMQ
// context as if it were its own process: the publisher, each subscriber, and
// the broker (Herald's server, or the proxy thread). Every message travels
// over tcp://127.0.0.1.
//
// Scenarios (bench/README.md has the details):
//   Throughput/subscribers:S/payload:P  1 publisher -> S subscribers, each
//       getting every message; the publisher sends as fast as it can. The
//       ratio counter is delivered_per_s.
//   Latency20k/subscribers:1/payload:64  a paced publisher at 20,000 msg/s
//       for `latency_seconds` (default 10); latency is taken from each
//       message's *scheduled* send time (no coordinated omission). The
//       reported time per iteration is the p99, so the harness's time-based
//       ratio (baseline time / Herald time) is the p99 ratio, > 1 when
//       Herald's p99 is lower.
//
// Settings come through Google Benchmark's own context flag, so that the
// harness accepts them:
//   --benchmark_context=latency_seconds=0.05,quiet_ms=50
// latency_seconds: duration of each latency run (default 10).
// quiet_ms: a subscriber that has not got every message stops this long
// after the publisher is done and nothing arrived (default 200); the time of
// its last message, not of the quiet period, ends the measured interval.
#include <sys/prctl.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/bench_main.h"
#include "bench/peak_rss.h"
#include "benchmark/benchmark.h"
#include "broker/broker.h"
#include "broker/net/server.h"
#include "broker/options.h"
#include "schemas/stats.pb.h"
#include "sdk/client.h"

namespace {

const bool kRatioCounterSet = [] {
  herald::bench::SetRatioCounter("delivered_per_s");
  return true;
}();

constexpr absl::string_view kDataTopic = "bench.net";
constexpr absl::string_view kWarmTopic = "bench.warm";  // ZeroMQ warm-up.
constexpr absl::string_view kZmqPrefix = "bench.";      // SUB filter.
constexpr int kLatencyRate = 20000;                     // messages/s.
constexpr int kReceivePollMs = 20;

// ------------------------------------------------------------ settings

double ContextValue(const char* key, double fallback) {
  const std::map<std::string, std::string>* context =
      benchmark::internal::GetGlobalContext();
  if (context == nullptr) return fallback;
  const auto it = context->find(key);
  double value;
  if (it == context->end() || !absl::SimpleAtod(it->second, &value) ||
      !(value > 0)) {
    return fallback;
  }
  return value;
}

double LatencySeconds() { return ContextValue("latency_seconds", 10); }
int64_t QuietNs() {
  return static_cast<int64_t>(ContextValue("quiet_ms", 200) * 1e6);
}

// ------------------------------------------------------------ helpers

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void SleepUntilNs(int64_t t) {
  const int64_t remaining = t - NowNs();
  if (remaining > 0) {
    std::this_thread::sleep_for(std::chrono::nanoseconds(remaining));
  }
}

// Nearest-rank percentile of sorted `values`; 0 if empty.
int64_t Percentile(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(q * sorted.size()));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

std::string ZmqError(absl::string_view what) {
  return absl::StrCat(what, ": ", zmq_strerror(zmq_errno()));
}

// ------------------------------------------------------------ one run

struct Workload {
  int subscribers = 1;
  size_t payload = 64;
  uint64_t count = 1;       // Messages to publish.
  int64_t interval_ns = 0;  // 0: as fast as possible; else paced.
  int64_t quiet_ns = 200000000;
};

// Shared by the publisher and the subscriber threads of one run.
struct RunControl {
  const Workload* workload = nullptr;
  // 0 while publishing; then when the publisher finished (and, for Herald,
  // its Flush returned).
  std::atomic<int64_t> publish_done_ns{0};
};

// One subscriber's results: written by its thread, read after the join.
struct SubState {
  std::atomic<bool> ready{false};     // ZeroMQ: a warm-up message arrived.
  uint64_t received = 0;              // Data messages.
  int64_t last_ns = 0;                // Receive time of the last one.
  std::vector<int64_t> latencies_ns;  // Paced runs only.
  std::string error;
};

struct RunResult {
  std::string error;  // Non-empty: the run failed.
  uint64_t published = 0;
  uint64_t delivered = 0;  // Over all subscribers.
  double seconds = 0;      // First send to the last receive.
  // Herald only: the broker's drops over the run's subscriptions, and the
  // messages the subscriber clients received, and of those read by the
  // receiving thread itself (ClientStats::received_inline).
  uint64_t broker_dropped = 0;
  uint64_t client_received = 0;
  uint64_t client_received_inline = 0;
  std::vector<int64_t> latencies_ns;  // Sorted; paced runs only.
  std::vector<int64_t> send_lag_ns;   // Sorted; paced runs only.
};

void OnData(const RunControl& control, SubState* s, const char* data,
            size_t size, int64_t now) {
  ++s->received;
  s->last_ns = now;
  if (control.workload->interval_ns > 0 && size >= sizeof(int64_t)) {
    int64_t scheduled;
    std::memcpy(&scheduled, data, sizeof(scheduled));
    s->latencies_ns.push_back(now - scheduled);
  }
}

// True when a subscriber has everything, or the publisher is done and
// nothing came for the quiet period.
bool ShouldStop(const RunControl& control, const SubState& s, int64_t now) {
  if (s.received >= control.workload->count) return true;
  const int64_t done = control.publish_done_ns.load(std::memory_order_acquire);
  if (done == 0) return false;
  return now - std::max(done, s.last_ns) > control.workload->quiet_ns;
}

// Publishes workload.count messages through `send(payload)` (false: stop,
// it set the error), as fast as it can or paced; each message carries its
// scheduled send time in its first 8 bytes. Returns the start time.
template <typename Send>
int64_t PublishAll(const Workload& w, Send&& send, RunResult* result) {
  std::string payload(std::max<size_t>(w.payload, sizeof(int64_t)), 'x');
  if (w.interval_ns > 0) {
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);  // Wake on time.
    result->send_lag_ns.reserve(w.count);
  }
  const int64_t start = NowNs();
  for (uint64_t i = 0; i < w.count; ++i) {
    int64_t stamp = static_cast<int64_t>(i);
    if (w.interval_ns > 0) {
      stamp = start + static_cast<int64_t>(i) * w.interval_ns;
      SleepUntilNs(stamp);
      result->send_lag_ns.push_back(NowNs() - stamp);
    }
    std::memcpy(payload.data(), &stamp, sizeof(stamp));
    if (!send(absl::string_view(payload))) break;
    ++result->published;
  }
  return start;
}

// Fills `result` from the joined subscribers; `start` is the first send.
void Collect(int64_t start, std::vector<std::unique_ptr<SubState>>& subs,
             RunResult* result) {
  int64_t end = start;
  for (auto& s : subs) {
    if (result->error.empty() && !s->error.empty()) result->error = s->error;
    result->delivered += s->received;
    end = std::max(end, s->last_ns);
    result->latencies_ns.insert(result->latencies_ns.end(),
                                s->latencies_ns.begin(), s->latencies_ns.end());
  }
  result->seconds = static_cast<double>(end - start) * 1e-9;
  std::sort(result->latencies_ns.begin(), result->latencies_ns.end());
  std::sort(result->send_lag_ns.begin(), result->send_lag_ns.end());
}

// ------------------------------------------------------------ Herald

RunResult RunHerald(const Workload& w) {
  RunResult result;
  absl::StatusOr<std::unique_ptr<herald::Broker>> broker =
      herald::Broker::Create();
  if (!broker.ok()) {
    result.error = broker.status().ToString();
    return result;
  }
  herald::net::ServerOptions server_options;
  server_options.sdk_endpoint = "tcp://127.0.0.1:*";
  server_options.publish_endpoint = "";
  server_options.subscribe_endpoint = "";
  absl::StatusOr<std::unique_ptr<herald::net::Server>> server =
      herald::net::Server::Start(broker->get(), server_options);
  if (!server.ok()) {
    result.error = server.status().ToString();
    return result;
  }
  const std::string endpoint = (*server)->sdk_endpoint();

  // Subscribers first: Subscribe() returns once the subscription is live.
  std::vector<std::unique_ptr<herald::Client>> sub_clients;
  std::vector<herald::Subscriber> subscribers;
  for (int i = 0; i < w.subscribers; ++i) {
    absl::StatusOr<std::unique_ptr<herald::Client>> client =
        herald::Client::Connect(endpoint);
    if (!client.ok()) {
      result.error = client.status().ToString();
      return result;
    }
    absl::StatusOr<herald::Subscriber> sub =
        (*client)->Subscribe(kDataTopic, herald::SubscriptionOptions{});
    if (!sub.ok()) {
      result.error = sub.status().ToString();
      return result;
    }
    sub_clients.push_back(*std::move(client));
    subscribers.push_back(*std::move(sub));
  }
  absl::StatusOr<std::unique_ptr<herald::Client>> pub_client =
      herald::Client::Connect(endpoint);
  if (!pub_client.ok()) {
    result.error = pub_client.status().ToString();
    return result;
  }
  herald::PublisherOptions publisher_options;
  publisher_options.buffer_wait = absl::Seconds(30);  // Back-pressure.
  absl::StatusOr<herald::Publisher> publisher =
      (*pub_client)->CreatePublisher(publisher_options);
  if (!publisher.ok()) {
    result.error = publisher.status().ToString();
    return result;
  }

  RunControl control;
  control.workload = &w;
  std::vector<std::unique_ptr<SubState>> states;
  std::vector<std::thread> threads;
  for (int i = 0; i < w.subscribers; ++i) {
    states.push_back(std::make_unique<SubState>());
    if (w.interval_ns > 0) states.back()->latencies_ns.reserve(w.count);
    threads.emplace_back(
        [&control, s = states.back().get(), sub = &subscribers[i]] {
          for (;;) {
            absl::StatusOr<herald::Received> m =
                sub->Receive(absl::Milliseconds(kReceivePollMs));
            const int64_t now = NowNs();
            if (m.ok()) {
              const absl::string_view p = m->payload();
              OnData(control, s, p.data(), p.size(), now);
            } else if (!absl::IsDeadlineExceeded(m.status())) {
              s->error = m.status().ToString();
              break;
            }
            if (ShouldStop(control, *s, now)) break;
          }
        });
  }

  const int64_t start = PublishAll(
      w,
      [&](absl::string_view payload) {
        const absl::Status status = publisher->Publish(kDataTopic, payload);
        if (!status.ok()) result.error = status.ToString();
        return status.ok();
      },
      &result);
  const absl::Status flushed =
      (*pub_client)->Flush(absl::Now() + absl::Seconds(60));
  if (!flushed.ok() && result.error.empty()) result.error = flushed.ToString();
  control.publish_done_ns.store(NowNs(), std::memory_order_release);
  for (std::thread& t : threads) t.join();
  Collect(start, states, &result);

  const herald::v1::BrokerStats stats = (*broker)->Stats();
  for (const herald::v1::SubscriptionStats& s : stats.subscriptions()) {
    const herald::v1::DropCounts& d = s.dropped();
    result.broker_dropped += d.queue_full() + d.evicted_oldest() +
                             d.block_timeout() + d.closed() + d.shutdown() +
                             d.group_full();
  }
  for (const auto& client : sub_clients) {
    const herald::ClientStats c = client->Stats();
    result.client_received += c.received;
    result.client_received_inline += c.received_inline;
  }

  // Teardown, not timed.
  subscribers.clear();
  for (auto& client : sub_clients) {
    client->Close(absl::Now() + absl::Seconds(1)).IgnoreError();
  }
  (*pub_client)->Close(absl::Now() + absl::Seconds(1)).IgnoreError();
  (*server)->Stop(absl::Now() + absl::Seconds(1));
  (*broker)->Shutdown(absl::ZeroDuration());
  return result;
}

// ------------------------------------------------------------ ZeroMQ

void SetInt(void* socket, int option, int value) {
  zmq_setsockopt(socket, option, &value, sizeof(value));
}

std::string LastEndpoint(void* socket) {
  char buffer[256];
  size_t size = sizeof(buffer);
  if (zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, buffer, &size) != 0) return "";
  return std::string(buffer, strnlen(buffer, size));
}

// A zmq_proxy(XSUB, XPUB) broker on its own thread and context, stopped with
// TERMINATE on zmq_proxy_steerable's control socket. The proxy's sockets
// live on its thread only.
class ZmqProxy {
 public:
  ZmqProxy() : context_(zmq_ctx_new()) {
    static std::atomic<int> next_id{0};
    control_endpoint_ =
        absl::StrCat("inproc://net-bench-proxy-", next_id.fetch_add(1));
  }
  ~ZmqProxy() {
    Stop();
    zmq_ctx_term(context_);
  }

  // Starts the thread and waits until its endpoints are bound.
  bool Start(std::string* error) {
    thread_ = std::thread([this] { Run(); });
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](ZmqProxy* p) { return p->bound_ || !p->error_.empty(); }, this));
    *error = error_;
    return error_.empty();
  }

  void Stop() {
    if (!thread_.joinable()) return;
    bool bound;
    {
      absl::MutexLock lock(&mu_);
      bound = bound_;
    }
    void* control = zmq_socket(context_, ZMQ_PAIR);
    SetInt(control, ZMQ_LINGER, 1000);
    // Without a bound proxy the thread has already returned.
    if (bound && zmq_connect(control, control_endpoint_.c_str()) == 0) {
      zmq_send(control, "TERMINATE", 9, 0);
    }
    thread_.join();
    zmq_close(control);
  }

  std::string xsub_endpoint() {
    absl::MutexLock lock(&mu_);
    return xsub_endpoint_;
  }
  std::string xpub_endpoint() {
    absl::MutexLock lock(&mu_);
    return xpub_endpoint_;
  }

 private:
  void Run() {
    void* xsub = zmq_socket(context_, ZMQ_XSUB);
    void* xpub = zmq_socket(context_, ZMQ_XPUB);
    void* control = zmq_socket(context_, ZMQ_PAIR);
    for (void* s : {xsub, xpub, control}) SetInt(s, ZMQ_LINGER, 0);
    std::string error;
    if (zmq_bind(xsub, "tcp://127.0.0.1:*") != 0) {
      error = ZmqError("proxy: bind xsub");
    } else if (zmq_bind(xpub, "tcp://127.0.0.1:*") != 0) {
      error = ZmqError("proxy: bind xpub");
    } else if (zmq_bind(control, control_endpoint_.c_str()) != 0) {
      error = ZmqError("proxy: bind control");
    }
    {
      absl::MutexLock lock(&mu_);
      xsub_endpoint_ = LastEndpoint(xsub);
      xpub_endpoint_ = LastEndpoint(xpub);
      error_ = error;
      bound_ = error.empty();
    }
    if (error.empty()) zmq_proxy_steerable(xsub, xpub, nullptr, control);
    for (void* s : {xsub, xpub, control}) zmq_close(s);
  }

  void* const context_;
  std::string control_endpoint_;
  std::thread thread_;
  absl::Mutex mu_;
  bool bound_ = false;
  std::string error_;
  std::string xsub_endpoint_;
  std::string xpub_endpoint_;
};

// One ZeroMQ SUB, as its own process would be: its own context and socket,
// made, used and closed on this thread.
void ZmqSubscriber(std::string endpoint, const RunControl& control,
                   SubState* s) {
  void* context = zmq_ctx_new();
  void* socket = zmq_socket(context, ZMQ_SUB);
  SetInt(socket, ZMQ_LINGER, 0);
  SetInt(socket, ZMQ_RCVTIMEO, kReceivePollMs);
  zmq_setsockopt(socket, ZMQ_SUBSCRIBE, kZmqPrefix.data(), kZmqPrefix.size());
  if (zmq_connect(socket, endpoint.c_str()) != 0) {
    s->error = ZmqError("sub: connect");
  }
  zmq_msg_t topic;
  zmq_msg_t body;
  zmq_msg_init(&topic);
  zmq_msg_init(&body);
  while (s->error.empty()) {
    int64_t now;
    if (zmq_msg_recv(&topic, socket, 0) >= 0) {
      if (!zmq_msg_more(&topic) || zmq_msg_recv(&body, socket, 0) < 0) {
        s->error = "sub: expected [topic][payload]";
        break;
      }
      now = NowNs();
      const absl::string_view t(static_cast<const char*>(zmq_msg_data(&topic)),
                                zmq_msg_size(&topic));
      if (t == kWarmTopic) {
        s->ready.store(true, std::memory_order_release);
      } else {
        OnData(control, s, static_cast<const char*>(zmq_msg_data(&body)),
               zmq_msg_size(&body), now);
      }
    } else if (zmq_errno() == EAGAIN) {
      now = NowNs();
    } else {
      s->error = ZmqError("sub: recv");
      break;
    }
    if (ShouldStop(control, *s, now)) break;
  }
  zmq_msg_close(&topic);
  zmq_msg_close(&body);
  zmq_close(socket);
  zmq_ctx_term(context);
}

bool ZmqSend(void* socket, absl::string_view topic, absl::string_view payload,
             std::string* error) {
  if (zmq_send(socket, topic.data(), topic.size(), ZMQ_SNDMORE) < 0 ||
      zmq_send(socket, payload.data(), payload.size(), 0) < 0) {
    *error = ZmqError("pub: send");
    return false;
  }
  return true;
}

RunResult RunZmq(const Workload& w, bool with_proxy) {
  RunResult result;
  std::unique_ptr<ZmqProxy> proxy;
  std::string sub_endpoint;
  void* context = zmq_ctx_new();
  void* pub = zmq_socket(context, ZMQ_PUB);
  SetInt(pub, ZMQ_LINGER, 0);
  if (with_proxy) {
    proxy = std::make_unique<ZmqProxy>();
    if (!proxy->Start(&result.error)) {
    } else if (zmq_connect(pub, proxy->xsub_endpoint().c_str()) != 0) {
      result.error = ZmqError("pub: connect");
    }
    sub_endpoint = proxy->xpub_endpoint();
  } else if (zmq_bind(pub, "tcp://127.0.0.1:*") != 0) {
    result.error = ZmqError("pub: bind");
  } else {
    sub_endpoint = LastEndpoint(pub);
  }

  RunControl control;
  control.workload = &w;
  std::vector<std::unique_ptr<SubState>> states;
  std::vector<std::thread> threads;
  if (result.error.empty()) {
    for (int i = 0; i < w.subscribers; ++i) {
      states.push_back(std::make_unique<SubState>());
      if (w.interval_ns > 0) states.back()->latencies_ns.reserve(w.count);
      threads.emplace_back(ZmqSubscriber, sub_endpoint, std::cref(control),
                           states.back().get());
    }
    // Slow joiners: send warm-ups until every SUB has one, so that every
    // subscription has reached the publisher (through the proxy).
    const int64_t deadline = NowNs() + 10'000'000'000;
    std::string warm(sizeof(int64_t), 'w');
    for (;;) {
      bool all = true;
      for (auto& s : states) {
        all = all &&
              (s->ready.load(std::memory_order_acquire) || !s->error.empty());
      }
      if (all) break;
      if (NowNs() > deadline) {
        result.error = "subscribers did not join within 10s";
        break;
      }
      if (!ZmqSend(pub, kWarmTopic, warm, &result.error)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  int64_t start = NowNs();
  if (result.error.empty()) {
    start = PublishAll(
        w,
        [&](absl::string_view payload) {
          return ZmqSend(pub, kDataTopic, payload, &result.error);
        },
        &result);
  }
  control.publish_done_ns.store(NowNs(), std::memory_order_release);
  for (std::thread& t : threads) t.join();
  Collect(start, states, &result);

  zmq_close(pub);
  zmq_ctx_term(context);
  proxy.reset();
  return result;
}

// ------------------------------------------------------------ benchmarks

enum class Subject { kHerald, kZmqDirect, kZmqProxy };

RunResult RunSubject(Subject subject, const Workload& w) {
  switch (subject) {
    case Subject::kHerald:
      return RunHerald(w);
    case Subject::kZmqDirect:
      return RunZmq(w, /*with_proxy=*/false);
    case Subject::kZmqProxy:
      return RunZmq(w, /*with_proxy=*/true);
  }
  RunResult unknown;
  unknown.error = "unknown subject";
  return unknown;
}

void SetCommonCounters(benchmark::State& state, const Workload& w,
                       const RunResult& r, Subject subject) {
  const double pairs = static_cast<double>(r.published) * w.subscribers;
  state.counters["drop_pct"] =
      pairs > 0 ? 100.0 * (1.0 - static_cast<double>(r.delivered) / pairs) : 0;
  if (subject == Subject::kHerald) {
    state.counters["broker_drop_pct"] =
        pairs > 0 ? 100.0 * static_cast<double>(r.broker_dropped) / pairs : 0;
    state.counters["inline_pct"] =
        r.client_received > 0
            ? 100.0 * static_cast<double>(r.client_received_inline) /
                  static_cast<double>(r.client_received)
            : 0;
  }
  state.counters["peak_rss_mb"] = herald::bench::PeakRssMiB();
}

// One iteration is one message published (and delivered to every
// subscriber); the run publishes max_iterations of them, timed by hand from
// the first send to the last receive.
void Throughput(benchmark::State& state, Subject subject) {
  Workload w;
  w.subscribers = static_cast<int>(state.range(0));
  w.payload = static_cast<size_t>(state.range(1));
  w.count = static_cast<uint64_t>(state.max_iterations);
  w.quiet_ns = QuietNs();
  herald::bench::ResetPeakRss();
  RunResult r;
  while (state.KeepRunningBatch(state.max_iterations)) {
    r = RunSubject(subject, w);
    if (!r.error.empty()) break;
    state.SetIterationTime(std::max(r.seconds, 1e-9));
  }
  if (!r.error.empty()) {
    state.SkipWithError(r.error.c_str());
    return;
  }
  state.counters["delivered_per_s"] =
      r.seconds > 0 ? static_cast<double>(r.delivered) / r.seconds : 0;
  state.counters["published_per_s"] =
      r.seconds > 0 ? static_cast<double>(r.published) / r.seconds : 0;
  SetCommonCounters(state, w, r, subject);
}

// One iteration: a paced run; its time is the p99 latency.
void Latency(benchmark::State& state, Subject subject) {
  Workload w;
  w.subscribers = static_cast<int>(state.range(0));
  w.payload = static_cast<size_t>(state.range(1));
  w.interval_ns = 1'000'000'000 / kLatencyRate;
  w.count = std::max<uint64_t>(
      1, static_cast<uint64_t>(LatencySeconds() * kLatencyRate));
  w.quiet_ns = QuietNs();
  herald::bench::ResetPeakRss();
  RunResult r;
  for (auto _ : state) {
    r = RunSubject(subject, w);
    if (!r.error.empty()) break;
    state.SetIterationTime(std::max(
        static_cast<double>(Percentile(r.latencies_ns, 0.99)) * 1e-9, 1e-9));
  }
  if (!r.error.empty()) {
    state.SkipWithError(r.error.c_str());
    return;
  }
  const auto us = [](int64_t ns) { return static_cast<double>(ns) * 1e-3; };
  state.counters["p50_us"] = us(Percentile(r.latencies_ns, 0.50));
  state.counters["p99_us"] = us(Percentile(r.latencies_ns, 0.99));
  state.counters["p999_us"] = us(Percentile(r.latencies_ns, 0.999));
  state.counters["max_us"] =
      r.latencies_ns.empty() ? 0 : us(r.latencies_ns.back());
  state.counters["send_lag_p99_us"] = us(Percentile(r.send_lag_ns, 0.99));
  state.counters["sent"] = static_cast<double>(r.published);
  SetCommonCounters(state, w, r, subject);
}

void BM_Herald_Throughput(benchmark::State& state) {
  Throughput(state, Subject::kHerald);
}
void BM_ZmqDirect_Throughput(benchmark::State& state) {
  Throughput(state, Subject::kZmqDirect);
}
void BM_ZmqProxy_Throughput(benchmark::State& state) {
  Throughput(state, Subject::kZmqProxy);
}
void BM_Herald_Latency20k(benchmark::State& state) {
  Latency(state, Subject::kHerald);
}
void BM_ZmqDirect_Latency20k(benchmark::State& state) {
  Latency(state, Subject::kZmqDirect);
}
void BM_ZmqProxy_Latency20k(benchmark::State& state) {
  Latency(state, Subject::kZmqProxy);
}

void ThroughputArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"subscribers", "payload"});
  for (int subscribers : {1, 4}) {
    for (int payload : {64, 1024}) b->Args({subscribers, payload});
  }
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

void LatencyArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"subscribers", "payload"})->Args({1, 64});
  b->Iterations(1)->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_Herald_Throughput)->Apply(ThroughputArgs);
BENCHMARK(BM_ZmqDirect_Throughput)->Apply(ThroughputArgs);
BENCHMARK(BM_ZmqProxy_Throughput)->Apply(ThroughputArgs);
BENCHMARK(BM_Herald_Latency20k)->Apply(LatencyArgs);
BENCHMARK(BM_ZmqDirect_Latency20k)->Apply(LatencyArgs);
BENCHMARK(BM_ZmqProxy_Latency20k)->Apply(LatencyArgs);

}  // namespace
