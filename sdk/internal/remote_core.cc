#include "sdk/internal/remote_core.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iterator>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "broker/internal/thread_identity.h"
#include "broker/internal/thread_name.h"
#include "broker/net/framing.h"
#include "broker/topic.h"
#include "broker/util/check.h"
#include "broker/util/stat_counter.h"
#include "broker/util/status_macros.h"
#include "sdk/internal/checks.h"
#include "sdk/internal/handles.h"
#include "zmq_addon.hpp"

namespace herald::internal {
namespace {

// Messages in flight below which more than one batch may await its Ack
// (see SendBatches()).
constexpr uint64_t kPipelinedMessages = 64;
// How long batches sent without asking an Ack may stay unsettled once the
// publisher is idle, before a Ping settles them (see SendBatches()).
constexpr absl::Duration kSettleDelay = absl::Milliseconds(2);
// A Flush Ping, settle Ping or stats request that the broker refused
// because the session's messages wait behind a blocked publish (held full)
// is asked again after this long.
constexpr absl::Duration kRequestRetryDelay = absl::Milliseconds(10);
// The most messages SendHello() handles before it builds the resume state.
constexpr int kHelloDrainLimit = 1 << 16;

// Credit window of a subscription that sets no queue_capacity (then the
// broker's default capacity applies, which the client does not know).
constexpr uint64_t kDefaultCreditWindow = 1024;
// The longest pause between Hellos while (re)connecting.
constexpr absl::Duration kMaxHelloInterval = absl::Seconds(1);
// Incoming messages handled per loop turn before the rest of the work.
constexpr int kReceiveBudget = 256;
// How long the socket may go unwatched after a receive call that led it
// returned (see LeadReceive() and Loop()).
constexpr absl::Duration kUnwatchedPoll = absl::Milliseconds(20);
// How long the Goodbye may take to leave at Close() (ZMQ_LINGER), at most.
constexpr absl::Duration kGoodbyeLinger = absl::Milliseconds(100);
// Used when the broker announces no session time-to-live.
constexpr absl::Duration kFallbackTtl = absl::Seconds(10);

std::string RandomSessionId() {
  absl::BitGen gen;
  std::string id(16, '\0');
  for (char& c : id) c = static_cast<char>(absl::Uniform<uint8_t>(gen));
  return id;
}

zmq::message_t Frame(absl::string_view bytes) {
  return zmq::message_t(bytes.data(), bytes.size());
}

absl::string_view View(const zmq::message_t& m) {
  return absl::string_view(static_cast<const char*>(m.data()), m.size());
}

v1::OverflowPolicy ToProto(const std::optional<OverflowPolicy>& p) {
  if (!p.has_value()) return v1::OVERFLOW_POLICY_UNSPECIFIED;
  switch (*p) {
    case OverflowPolicy::kDropNewest:
      return v1::OVERFLOW_POLICY_DROP_NEWEST;
    case OverflowPolicy::kDropOldest:
      return v1::OVERFLOW_POLICY_DROP_OLDEST;
    case OverflowPolicy::kBlock:
      return v1::OVERFLOW_POLICY_BLOCK;
  }
  return v1::OVERFLOW_POLICY_UNSPECIFIED;
}

absl::Status StatusFromError(const v1::Error& e) {
  const int32_t code = e.status_code();
  // A code outside absl's range is still an error: call it unknown.
  const auto status_code = (code <= 0 || code > 16)
                               ? absl::StatusCode::kUnknown
                               : static_cast<absl::StatusCode>(code);
  return absl::Status(status_code, e.message());
}

// True on a client's I/O thread (set by Loop()).
thread_local bool on_io_thread = false;
// The client whose callback this thread runs right now (RunCallbackTurn()).
thread_local const RemoteCore* in_callback_of = nullptr;

// Reads one message into `frames` (cleared first) without waiting: false if
// none is there, or on error.
bool ReadMessage(zmq::socket_t& socket, std::vector<zmq::message_t>& frames) {
  frames.clear();
  try {
    return zmq::recv_multipart(socket, std::back_inserter(frames),
                               zmq::recv_flags::dontwait)
        .has_value();
  } catch (const zmq::error_t&) {
    return false;
  }
}

absl::Status ClientClosed(absl::string_view what) {
  return absl::FailedPreconditionError(
      absl::StrCat(what, ": the client is closed"));
}

}  // namespace

RemoteCore::RemoteCore(std::string url, ClientOptions options)
    : url_(std::move(url)),
      options_(std::move(options)),
      session_id_(RandomSessionId()) {}

RemoteCore::~RemoteCore() {
  // Close() joined the I/O thread (RemoteClient always calls it).
  HERALD_CHECK(!thread_.joinable());
  if (wake_fd_ >= 0) close(wake_fd_);
  if (leader_fd_ >= 0) close(leader_fd_);
}

absl::Status RemoteCore::Start(absl::Time deadline) {
  EnsureThreadIdentity();
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  leader_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0 || leader_fd_ < 0) {
    return absl::UnavailableError(
        absl::StrCat("client: eventfd: ", std::strerror(errno)));
  }
  thread_ = std::thread([this] { Loop(); });
  absl::MutexLock lock(&mu_);
  auto answered = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return ever_connected_ || !connect_error_.ok() || io_exited_;
  };
  mu_.AwaitWithDeadline(absl::Condition(&answered), deadline);
  if (ever_connected_) return absl::OkStatus();
  if (!connect_error_.ok()) return connect_error_;
  return absl::UnavailableError(absl::StrCat(
      "connect to \"", url_, "\": no Welcome from the broker within ",
      absl::FormatDuration(options_.connect_timeout)));
}

// ------------------------------------------------------------ API threads

bool RemoteCore::PushCommandLocked(Command command) {
  commands_.push_back(command);
  if (wake_pending_) return false;
  wake_pending_ = true;
  return true;
}

void RemoteCore::Wake() {
  const uint64_t one = 1;
  // A saturated counter (EAGAIN) still leaves the fd readable: nothing lost.
  [[maybe_unused]] const ssize_t n = write(wake_fd_, &one, sizeof(one));
}

bool RemoteCore::closing() const {
  EnsureThreadIdentity();
  absl::MutexLock lock(&mu_);
  return close_started_;
}

void RemoteCore::CountRefusalLocked(PublishRefusal reason) {
  ++stats_.publish_refused[static_cast<size_t>(reason)];
}

absl::Status RemoteCore::Publish(absl::string_view topic,
                                 absl::string_view payload,
                                 const Headers& headers,
                                 absl::string_view type_name,
                                 absl::Duration wait) {
  EnsureThreadIdentity();
  size_t bytes = Message::ByteSize(topic, payload, headers);
  if (!type_name.empty()) bytes += kProtoTypeHeader.size() + type_name.size();
  absl::Status invalid = CheckPublishInput(topic, headers);
  if (invalid.ok()) {
    // Relaxed: a limit from the last Welcome; a stale one is checked again
    // by the broker.
    invalid = CheckMessageSize(
        topic, bytes, max_message_bytes_.load(std::memory_order_relaxed));
  }
  if (!invalid.ok()) {
    absl::MutexLock lock(&mu_);
    CountRefusalLocked(PublishRefusal::kInvalid);
    return invalid;
  }
  // Build the entry outside the lock: one copy of the payload, into the
  // frame ZeroMQ will send.
  OutboxEntry e;
  e.topic.assign(topic.data(), topic.size());
  if (!headers.empty() || !type_name.empty()) {
    e.headers.reserve(headers.size() + (type_name.empty() ? 0 : 1));
    e.headers = headers;
    if (!type_name.empty()) {
      e.headers.push_back(
          {std::string(kProtoTypeHeader), std::string(type_name)});
    }
  }
  e.payload = Frame(payload);
  e.bytes = bytes;

  bool send_now = false;
  {
    absl::MutexLock lock(&mu_);
    auto has_room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return close_started_ || outbox_.size() < options_.publish_buffer;
    };
    if (!has_room() && wait > absl::ZeroDuration()) {
      mu_.AwaitWithTimeout(absl::Condition(&has_room), wait);
    }
    if (close_started_) {
      CountRefusalLocked(PublishRefusal::kClosed);
      return ClientClosed(absl::StrCat("publish to \"", topic, "\""));
    }
    if (outbox_.size() >= options_.publish_buffer) {
      if (wait > absl::ZeroDuration()) {
        CountRefusalLocked(PublishRefusal::kBufferTimeout);
        return absl::DeadlineExceededError(
            absl::StrCat("publish to \"", topic, "\": the publish buffer (",
                         options_.publish_buffer, " messages) stayed full for ",
                         absl::FormatDuration(wait)));
      }
      CountRefusalLocked(PublishRefusal::kBufferFull);
      return absl::ResourceExhaustedError(
          absl::StrCat("publish to \"", topic, "\": the publish buffer (",
                       options_.publish_buffer, " messages) is full"));
    }
    outbox_.push_back(std::move(e));
    ++accepted_total_;
    ++stats_.published;
    stats_.publish_buffer_high_water =
        std::max<uint64_t>(stats_.publish_buffer_high_water, outbox_.size());
    // Send now only if the I/O thread would: while a batch awaits its Ack,
    // messages coalesce without a system call each.
    send_now = io_wants_publish_ && !wake_pending_;
  }
  if (send_now) SendInlineOrWake();
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<RemoteSub>> RemoteCore::Subscribe(
    absl::string_view pattern, const SubscriptionOptions& options,
    bool callback) {
  EnsureThreadIdentity();
  HERALD_RETURN_IF_ERROR(ValidatePattern(pattern));
  if (options.queue_capacity.has_value() && *options.queue_capacity == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "subscribe to \"", pattern, "\": queue_capacity 0 must be > 0"));
  }
  if (options.block_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "subscribe to \"", pattern, "\": block_timeout ",
        absl::FormatDuration(options.block_timeout), " must be > 0"));
  }
  if (options.callback_batch_limit == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "subscribe to \"", pattern, "\": callback_batch_limit is 0"));
  }
  v1::Subscribe request;
  request.set_pattern(std::string(pattern));
  request.set_capacity(options.queue_capacity.value_or(0));
  request.set_overflow(ToProto(options.overflow));
  request.set_queue_group(options.queue_group);
  request.set_name(options.name);
  // Whole milliseconds on the wire, rounded up so that a short timeout is
  // never 0 (the broker's default).
  request.set_block_timeout_ms(static_cast<uint32_t>(std::min<int64_t>(
      absl::ToInt64Milliseconds(options.block_timeout + absl::Milliseconds(1) -
                                absl::Nanoseconds(1)),
      UINT32_MAX)));

  const absl::Time deadline = absl::Now() + options_.request_timeout;
  std::shared_ptr<RemoteSub> sub;
  uint64_t sid;
  absl::MutexLock lock(&mu_);
  if (close_started_) {
    return ClientClosed(absl::StrCat("subscribe to \"", pattern, "\""));
  }
  sid = ++next_sid_;
  const uint64_t max_credit = std::max<uint64_t>(1, welcome_.max_credit());
  const uint64_t window = std::clamp<uint64_t>(
      options.queue_capacity.value_or(kDefaultCreditWindow), 1, max_credit);
  request.set_sid(sid);
  sub = std::make_shared<RemoteSub>(sid, window, std::move(request), callback,
                                    options.callback_batch_limit);
  SubEntry& entry = subs_[sid];
  entry.sub = sub;
  entry.waiter = true;
  // Under the lock (the wait below keeps it): one non-blocking write.
  if (PushCommandLocked({.kind = Command::Kind::kSubscribe, .sid = sid})) {
    Wake();
  }
  auto answered = [this, sid]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = subs_.find(sid);
    return it == subs_.end() || it->second.state != SubState::kPending ||
           phase_ == Phase::kClosed;
  };
  mu_.AwaitWithDeadline(absl::Condition(&answered), deadline);
  auto it = subs_.find(sid);
  if (it == subs_.end() || phase_ == Phase::kClosed ||
      it->second.state == SubState::kClosed) {
    if (it != subs_.end()) subs_.erase(it);
    return ClientClosed(absl::StrCat("subscribe to \"", pattern, "\""));
  }
  SubEntry& e = it->second;
  switch (e.state) {
    case SubState::kLive:
      e.waiter = false;
      return sub;
    case SubState::kFailed: {
      absl::Status error = e.error;
      subs_.erase(it);
      return error;
    }
    default:
      // No answer in time: if the Subscribe reaches the broker later, the
      // I/O thread closes what it makes.
      e.waiter = false;
      e.state = SubState::kCancelled;
      return absl::UnavailableError(absl::StrCat(
          "subscribe to \"", pattern, "\": no answer from the broker within ",
          absl::FormatDuration(options_.request_timeout)));
  }
}

absl::StatusOr<v1::SubscriptionStats> RemoteCore::Unsubscribe(uint64_t sid,
                                                              bool wait) {
  EnsureThreadIdentity();
  const absl::Time deadline = absl::Now() + options_.request_timeout;
  absl::MutexLock lock(&mu_);
  auto it = subs_.find(sid);
  if (it == subs_.end() && phase_ == Phase::kClosed) {
    return ClientClosed(absl::StrCat("close subscription ", sid));
  }
  if (it == subs_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("close subscription ", sid, ": not open"));
  }
  SubEntry& e = it->second;
  if (phase_ == Phase::kClosed || e.state == SubState::kClosed) {
    subs_.erase(it);
    return ClientClosed(absl::StrCat("close subscription ", sid));
  }
  if (e.state == SubState::kFailed) {
    absl::Status error = e.error;
    subs_.erase(it);
    return absl::UnavailableError(
        absl::StrCat("close subscription ", sid,
                     ": the broker ended it earlier: ", error.message()));
  }
  if (e.state == SubState::kLive || e.state == SubState::kPending) {
    e.state = SubState::kClosing;
    if (PushCommandLocked({.kind = Command::Kind::kUnsubscribe, .sid = sid})) {
      Wake();
    }
  }
  if (!wait) {
    e.waiter = false;
    return absl::DeadlineExceededError("not waiting");
  }
  e.waiter = true;
  auto answered = [this, sid]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = subs_.find(sid);
    return it == subs_.end() || it->second.state == SubState::kClosed ||
           phase_ == Phase::kClosed;
  };
  mu_.AwaitWithDeadline(absl::Condition(&answered), deadline);
  it = subs_.find(sid);
  if (it == subs_.end()) {
    return absl::UnavailableError(
        absl::StrCat("close subscription ", sid, ": no totals"));
  }
  SubEntry& done = it->second;
  if (done.state == SubState::kClosed && done.totals.has_value()) {
    v1::SubscriptionStats totals = *done.totals;
    subs_.erase(it);
    return totals;
  }
  if (phase_ == Phase::kClosed) {
    subs_.erase(it);
    return ClientClosed(absl::StrCat("close subscription ", sid));
  }
  if (done.state == SubState::kClosed) {
    subs_.erase(it);
    return absl::UnavailableError(
        absl::StrCat("close subscription ", sid,
                     ": the broker lost it before sending its totals"));
  }
  done.waiter = false;  // The I/O thread erases it when the Ack comes.
  return absl::UnavailableError(absl::StrCat(
      "close subscription ", sid, ": no answer from the broker within ",
      absl::FormatDuration(options_.request_timeout)));
}

void RemoteCore::ReturnCredit(uint64_t sid, uint64_t incarnation,
                              uint64_t messages) {
  EnsureThreadIdentity();
  absl::MutexLock lock(&mu_);
  if (close_started_) return;
  if (PushCommandLocked({.kind = Command::Kind::kCredit,
                         .sid = sid,
                         .incarnation = incarnation,
                         .messages = messages})) {
    Wake();
  }
}

absl::Status RemoteCore::Flush(absl::Time deadline) {
  EnsureThreadIdentity();
  {
    absl::MutexLock lock(&mu_);
    if (close_started_) return ClientClosed("flush");
  }
  return WaitFlushed(deadline);
}

absl::Status RemoteCore::WaitFlushed(absl::Time deadline) {
  auto waiter = std::make_shared<FlushWaiter>();
  absl::MutexLock lock(&mu_);
  if (phase_ == Phase::kClosed) return ClientClosed("flush");
  waiter->target = accepted_total_;
  flushes_.push_back(waiter);
  if (PushCommandLocked({.kind = Command::Kind::kWake})) Wake();
  auto done = [this, &waiter]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return waiter->done || phase_ == Phase::kClosed;
  };
  mu_.AwaitWithDeadline(absl::Condition(&done), deadline);
  flushes_.erase(std::find(flushes_.begin(), flushes_.end(), waiter));
  if (waiter->done) return absl::OkStatus();
  if (phase_ == Phase::kClosed) return ClientClosed("flush");
  return absl::DeadlineExceededError(
      absl::StrCat("flush: the broker had not processed everything by the "
                   "deadline (",
                   outbox_.size() + stats_.publish_in_flight,
                   " messages still buffered or unacknowledged)"));
}

std::shared_ptr<CallbackPool> RemoteCore::callback_pool() {
  absl::MutexLock lock(&mu_);
  if (close_started_) return nullptr;
  if (callback_pool_ == nullptr) {
    callback_pool_ = CallbackPool::Start(options_.callback_threads);
  }
  return callback_pool_;
}

void RemoteCore::ScheduleCallbacks(const std::shared_ptr<RemoteSub>& sub,
                                   const std::shared_ptr<CallbackPool>& pool) {
  pool->Submit([core = weak_from_this(), sub] {
    if (std::shared_ptr<RemoteCore> c = core.lock()) c->RunCallbackTurn(sub);
  });
}

Received RemoteCore::TakeFrontLocked(RemoteSub& sub) {
  Received r = std::move(sub.buffer.front());
  sub.buffer.pop_front();
  if (sub.buffered_earlier > 0) {
    --sub.buffered_earlier;
  } else {
    ++sub.app_delivered;
  }
  Bump(counters_.delivered);
  Drop(counters_.buffered, 1);
  return r;
}

void RemoteCore::RunCallbackTurn(const std::shared_ptr<RemoteSub>& sub) {
  for (size_t n = 0; n < sub->batch_limit; ++n) {
    std::optional<Received> r;
    // Set before the first turn is queued and never changed after: called
    // outside the lock through this pointer.
    const std::function<void(const Received&)>* callback;
    {
      absl::MutexLock lock(&sub->mu);
      if (sub->closed || sub->buffer.empty()) {
        sub->scheduled = false;
        return;
      }
      r.emplace(TakeFrontLocked(*sub));
      sub->running_in = std::this_thread::get_id();
      callback = &sub->callback_fn;
    }
    in_callback_of = this;
    try {
      (*callback)(*r);
    } catch (...) {
      // Exceptions never cross Herald's API; the message was delivered.
    }
    in_callback_of = nullptr;
    r.reset();
    RemoteSub::CreditReturn credit;
    {
      absl::MutexLock lock(&sub->mu);
      sub->running_in = std::thread::id();
      credit = sub->ConsumeLocked(1);
    }
    if (credit.give > 0)
      ReturnCredit(sub->sid, credit.incarnation, credit.give);
  }
  // The batch limit: yield to the other subscriptions, then go on.
  std::shared_ptr<CallbackPool> pool;
  {
    absl::MutexLock lock(&sub->mu);
    if (sub->closed || sub->buffer.empty()) {
      sub->scheduled = false;
      return;
    }
    pool = sub->pool;
  }
  ScheduleCallbacks(sub, pool);
}

absl::Status RemoteCore::Close(absl::Time deadline) {
  EnsureThreadIdentity();
  bool connected;
  {
    absl::MutexLock lock(&mu_);
    if (close_started_) {
      if (in_callback_of != this) {
        mu_.Await(absl::Condition(&close_done_));
        return close_status_;
      }
      // In one of this client's callbacks, which the first Close() waits
      // for when it stops the callback pool: wait only until nothing more
      // is sent or received (the I/O thread exited; a callback runs only
      // in a client that started one).
      auto io_done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return close_done_ || io_exited_;
      };
      mu_.Await(absl::Condition(&io_done));
      return close_done_ ? close_status_ : absl::OkStatus();
    }
    close_started_ = true;
    connected = ever_connected_ && phase_ != Phase::kClosed;
  }
  // Refused from here on: publishes and subscribes. Flush what was accepted.
  absl::Status flushed = absl::OkStatus();
  if (connected) flushed = WaitFlushed(deadline);
  {
    absl::MutexLock lock(&mu_);
    // No thread when Start() failed before making it.
    if (thread_.joinable() && !io_exited_) {
      if (PushCommandLocked(
              {.kind = Command::Kind::kClose, .deadline = deadline})) {
        Wake();
      }
      mu_.Await(absl::Condition(&io_exited_));
    }
  }
  if (thread_.joinable()) thread_.join();
  // Every subscription is closed now: no turn starts a callback any more.
  // Running ones are waited for (unless this is one of them).
  std::shared_ptr<CallbackPool> pool;
  {
    absl::MutexLock lock(&mu_);
    pool = std::move(callback_pool_);
  }
  if (pool != nullptr) pool->Stop();
  absl::MutexLock lock(&mu_);
  if (flushed.code() == absl::StatusCode::kFailedPrecondition) {
    flushed = absl::OkStatus();  // The I/O thread had already stopped.
  }
  close_status_ = flushed;
  close_done_ = true;
  return flushed;
}

ClientStats RemoteCore::Stats() const {
  EnsureThreadIdentity();
  ClientStats s;
  {
    absl::MutexLock lock(&mu_);
    s = stats_;
    s.publish_buffered = outbox_.size();
    for (const auto& [sid, e] : subs_) {
      if (e.state == SubState::kLive ||
          (e.state == SubState::kPending && e.was_live)) {
        ++s.subscriptions_active;
      }
    }
    s.connected = phase_ == Phase::kEstablished && !draining_;
    s.broker_epoch = epoch_;
  }
  const ReceiveCounters& c = counters_;
  s.received = Read(c.received);
  s.delivered = Read(c.delivered);
  s.receive_buffered = Read(c.buffered);
  s.abandoned = Read(c.abandoned);
  s.discarded = Read(c.discarded);
  s.credit_returned = Read(c.credit_returned);
  s.gaps = Read(c.gaps);
  s.decode_errors = Read(c.decode_errors);
  s.received_inline = Read(c.received_inline);
  return s;
}

absl::StatusOr<v1::StatsReply> RemoteCore::BrokerAndServerStats(
    absl::Time deadline) {
  EnsureThreadIdentity();
  auto waiter = std::make_shared<StatsWaiter>();
  absl::MutexLock lock(&mu_);
  if (close_started_) return ClientClosed("broker stats");
  stats_waiters_.push_back(waiter);
  if (PushCommandLocked({.kind = Command::Kind::kWake})) Wake();
  auto done = [this, &waiter]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return waiter->done || phase_ == Phase::kClosed;
  };
  mu_.AwaitWithDeadline(absl::Condition(&done), deadline);
  stats_waiters_.erase(
      std::find(stats_waiters_.begin(), stats_waiters_.end(), waiter));
  if (waiter->done) return std::move(waiter->stats);
  if (phase_ == Phase::kClosed) return ClientClosed("broker stats");
  return absl::DeadlineExceededError(
      "broker stats: no answer from the broker by the deadline");
}

// ------------------------------------------------------------- I/O thread

absl::Duration RemoteCore::Heartbeat() const {
  if (options_.heartbeat > absl::ZeroDuration()) return options_.heartbeat;
  return Liveness() / 3;
}

absl::Duration RemoteCore::Liveness() const {
  if (options_.liveness_timeout > absl::ZeroDuration()) {
    return options_.liveness_timeout;
  }
  absl::Duration ttl;
  {
    absl::MutexLock lock(&mu_);
    ttl = absl::Milliseconds(welcome_.session_ttl_ms());
  }
  return ttl > absl::ZeroDuration() ? ttl : kFallbackTtl;
}

void RemoteCore::SendInlineOrWake() {
  // Not on the I/O thread (a callback it runs may publish): it holds
  // io_mu_ and sends after its turn.
  if (!on_io_thread && !io_waits_for_lock_.load(std::memory_order_relaxed) &&
      io_mu_.TryLock()) {
    bool sent = false;
    bool wake = false;
    if (socket_ != nullptr && !exit_ && blocked_.empty() &&
        !pending_batch_.has_value()) {
      bool ready;
      {
        absl::MutexLock lock(&mu_);
        ready = phase_ == Phase::kEstablished && !draining_ && !close_started_;
      }
      if (ready) {
        SendBatches();
        sent = true;
        // Sending may have taken the edge of ZMQ_FD that an arrived message
        // raised, and the I/O thread sleeps on that edge: wake it if there is
        // something to read. A batch that did not fit waits for POLLOUT,
        // which the I/O thread watches.
        wake = pending_batch_.has_value() || SocketReady(*socket_, false);
      }
    }
    io_mu_.Unlock();
    if (sent) {
      if (wake) Wake();
      return;
    }
  }
  bool wake = false;
  {
    absl::MutexLock lock(&mu_);
    if (!wake_pending_) {
      wake_pending_ = true;
      wake = true;
    }
  }
  if (wake) Wake();
}

void RemoteSub::WakeWaiterLocked() {
  if (wake_fd < 0) return;
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = write(wake_fd, &one, sizeof(one));
}

void RemoteCore::LeadReceive(RemoteSub& sub, absl::Time deadline,
                             absl::FunctionRef<bool()> ready) {
  if (on_io_thread || sub.callback) return;
  {
    absl::MutexLock lock(&mu_);
    if (receive_led_ || phase_ != Phase::kEstablished || draining_ ||
        close_started_) {
      return;
    }
    receive_led_ = true;
  }
  // From here the I/O thread stops watching the socket once it next sleeps
  // (see Loop()), so every way out below leaves it watched by someone:
  // this thread checked the socket under io_mu_ last (a message arriving
  // later raises ZMQ_FD again, and the I/O thread looks at least every
  // kUnwatchedPoll), or it wakes the I/O thread.
  bool wake_io = false;
  bool awaited = false;
  std::vector<zmq::message_t> frames;
  while (true) {
    // TryLock only (see io_mu_): busy, the I/O thread is in its turn and
    // reads the socket itself before it sleeps. Nor while it waits for the
    // lock: this loop would keep taking it first.
    if (io_waits_for_lock_.load(std::memory_order_relaxed) ||
        !io_mu_.TryLock()) {
      wake_io = true;
      break;
    }
    bool leading;
    {
      absl::MutexLock lock(&mu_);
      leading = phase_ == Phase::kEstablished && !draining_;
    }
    // Not while a send waits for room: reading would take the ZMQ_FD edge
    // that tells the I/O thread there is room. Nor while it has yet to
    // handle what this thread handed over, which came first.
    leading = leading && socket_ != nullptr && !exit_ && !draining_for_hello_ &&
              blocked_.empty() && !pending_batch_.has_value() &&
              handed_over_.empty();
    bool more = false;
    if (leading) {
      int taken = 0;
      for (; taken < kReceiveBudget && ReadMessage(*socket_, frames); ++taken) {
        // Anything but a Deliver is the I/O thread's to handle (an Ack
        // frees the publish window, a Goodbye ends the session, an Error
        // reaches on_error...): handed over, and this call leads no more.
        HandleIncoming(frames, /*deliveries_only=*/true);
        if (!handed_over_.empty()) break;
      }
      frames.clear();
      // Answers the I/O thread waits for should not wait for its next look.
      if (!unacked_.empty() || !requests_.empty()) awaited = true;
      // Re-arms the edge; true if a message is there. Asked even when the
      // last recv found nothing: libzmq may not have processed the pipe's
      // activation yet, which asking does (sleeping on the fd then would
      // wait for the I/O thread's next look: measured, a p99 of 17 ms).
      more = SocketReady(*socket_, false);
    }
    const bool handed_over = !handed_over_.empty();
    // Read under io_mu_: once it is let go, the I/O thread may close the
    // socket and the fd number be reused (-1 then, which poll() skips).
    const int socket_fd = socket_fd_.load(std::memory_order_acquire);
    io_mu_.Unlock();
    if (!leading || handed_over) {
      wake_io = true;
      break;
    }
    const absl::Time now = absl::Now();
    {
      absl::MutexLock lock(&sub.mu);
      if (ready() || now >= deadline) {
        // Left unread (the budget ran out): the I/O thread reads it.
        if (more) wake_io = true;
        break;
      }
      if (more) continue;
      sub.wake_fd = leader_fd_;
    }
    pollfd fds[2] = {{socket_fd, POLLIN, 0}, {leader_fd_, POLLIN, 0}};
    const int timeout_ms = static_cast<int>(
        std::clamp<int64_t>(absl::ToInt64Milliseconds(absl::Ceil(
                                deadline - now, absl::Milliseconds(1))),
                            0, 1000));
    ::poll(fds, 2, timeout_ms);
    {
      absl::MutexLock lock(&sub.mu);
      sub.wake_fd = -1;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t value;
      [[maybe_unused]] const ssize_t n =
          read(leader_fd_, &value, sizeof(value));
    }
  }
  {
    absl::MutexLock lock(&mu_);
    receive_led_ = false;
    // Another subscription or a Subscribe, Unsubscribe or Flush waiting
    // for an answer should not wait for the I/O thread's next look.
    if (awaited || subs_.size() > 1 || !flushes_.empty() ||
        !stats_waiters_.empty() || !commands_.empty()) {
      wake_io = true;
    }
  }
  if (wake_io) Wake();
}

bool RemoteCore::SocketReady(zmq::socket_t& socket, bool want_out) {
  try {
    const int events = socket.get(zmq::sockopt::events);
    return (events & ZMQ_POLLIN) != 0 ||
           (want_out && (events & ZMQ_POLLOUT) != 0);
  } catch (const zmq::error_t&) {
    return true;
  }
}

bool RemoteCore::AckAwaited() const {
  for (const SentBatch& b : unacked_) {
    if (b.request_id != 0) return true;
  }
  return false;
}

void RemoteCore::MaybeArmSettlePing() {
  if (publish_progress_ && !unacked_.empty() && !AckAwaited() &&
      settle_ping_id_ == 0 && settle_ping_at_ == absl::InfiniteFuture()) {
    settle_ping_at_ = absl::Now() + kSettleDelay;
  }
}

void RemoteCore::SendSettlePing() {
  settle_ping_at_ = absl::InfiniteFuture();
  v1::Envelope ping;
  settle_ping_id_ = NextRequestId(
      {.kind = Request::Kind::kIgnore,
       .covers = unacked_.empty() ? 0 : unacked_.back().sequence});
  ping.set_request_id(settle_ping_id_);
  ping.mutable_ping();
  SendControl(ping);
}

uint64_t RemoteCore::NextRequestId(Request request) {
  const uint64_t id = ++next_request_id_;
  requests_[id] = request;
  return id;
}

void RemoteCore::ReportError(const absl::Status& status) {
  if (options_.on_error) options_.on_error(status);
}

bool RemoteCore::TrySend(Parts& parts) {
  try {
    for (size_t i = 0; i < parts.size(); ++i) {
      const bool last = i + 1 == parts.size();
      zmq::send_flags flags =
          last ? zmq::send_flags::none : zmq::send_flags::sndmore;
      if (i == 0) {
        flags = flags | zmq::send_flags::dontwait;
        if (!socket_->send(parts[i], flags)) return false;
      } else {
        // Once the first frame is accepted, ZeroMQ takes the whole message.
        (void)socket_->send(parts[i], flags);
      }
    }
  } catch (const zmq::error_t& e) {
    // Nothing a DEALER send should raise; say so, and drop the message.
    ReportError(absl::InternalError(
        absl::StrCat("client: send to \"", url_, "\": ", e.what())));
  }
  return true;
}

bool RemoteCore::FlushBlocked() {
  while (!blocked_.empty()) {
    if (!TrySend(blocked_.front().parts)) return false;
    blocked_.pop_front();
  }
  return true;
}

void RemoteCore::SendControl(const v1::Envelope& env) {
  Parts parts;
  parts.push_back(Frame(net::MagicFrame()));
  parts.push_back(Frame(env.SerializeAsString()));
  if (blocked_.empty() && TrySend(parts)) return;
  blocked_.push_back({.parts = std::move(parts), .credit = env.has_credit()});
}

void RemoteCore::SendHello() {
  // What the socket already holds is handled first, Delivers of a
  // connection that is gone among them: the resume state below must count
  // them, or the broker would count them lost though they arrived. (Not
  // when this Hello comes from handling a message of that drain.)
  if (draining_for_hello_) return;  // The draining call sends the Hello.
  if (socket_ != nullptr) {
    draining_for_hello_ = true;
    std::vector<zmq::message_t> frames;
    for (int i = 0; i < kHelloDrainLimit && ReadMessage(*socket_, frames);
         ++i) {
      HandleIncoming(frames);
    }
    draining_for_hello_ = false;
    // The drain may have handled the Welcome to an earlier Hello.
    absl::MutexLock lock(&mu_);
    if (phase_ != Phase::kConnecting) return;
  }
  v1::Envelope env;
  env.set_request_id(NextRequestId({.kind = Request::Kind::kHello}));
  v1::Hello* hello = env.mutable_hello();
  hello->set_session_id(session_id_);
  hello->set_protocol_version(net::kWireVersion);  // As frame 0.
  hello->set_client_name(options_.name);
  hello->set_heartbeat_interval_ms(
      static_cast<uint32_t>(absl::ToInt64Milliseconds(options_.heartbeat)));
  {
    // If the server still has this session, on another connection, it
    // learns from these what that connection lost (docs/protocol.md).
    absl::MutexLock lock(&mu_);
    for (const auto& [sid, e] : subs_) {
      if (e.sub == nullptr) continue;
      v1::ResumeState* r = hello->add_resume();
      r->set_sid(sid);
      r->set_received(e.sub->io_received);
      r->set_missed_received(e.sub->io_missed_received);
      r->set_returned(e.sub->io_returned);
    }
  }
  // Straight to the socket, ahead of anything blocked: Hello opens the
  // session the rest belongs to. If it would block (no connection yet), the
  // next retry sends it.
  Parts parts;
  parts.push_back(Frame(net::MagicFrame()));
  parts.push_back(Frame(env.SerializeAsString()));
  TrySend(parts);
  const absl::Time now = absl::Now();
  next_hello_ = now + hello_backoff_;
  hello_backoff_ = std::min(hello_backoff_ * 2, kMaxHelloInterval);
}

void RemoteCore::SendSubscribe(uint64_t sid,
                               const std::shared_ptr<RemoteSub>& sub,
                               uint64_t request_id, bool gap, uint64_t epoch,
                               bool fresh) {
  uint64_t grant;
  {
    absl::MutexLock lock(&sub->mu);
    if (fresh) {
      const auto buffered = static_cast<int64_t>(sub->buffer.size());
      const auto window = static_cast<int64_t>(sub->window);
      grant = static_cast<uint64_t>(std::max<int64_t>(1, window - buffered));
      sub->unreturned = window - buffered - static_cast<int64_t>(grant);
      sub->granted = grant;
      ++sub->incarnation;
      sub->io_received = 0;
      sub->io_returned = 0;
      sub->io_missed_received = 0;
      sub->epoch = epoch;
      // What is buffered now came before this incarnation.
      sub->app_delivered = 0;
      sub->buffered_earlier = sub->buffer.size();
    } else {
      grant = sub->granted;  // The same request again: the same accounting.
    }
    if (gap) sub->gap_pending = true;
  }
  if (gap) Bump(counters_.gaps);
  v1::Envelope env;
  env.set_request_id(request_id);
  *env.mutable_subscribe() = sub->request;
  env.mutable_subscribe()->set_sid(sid);
  env.mutable_subscribe()->set_initial_credit(grant);
  SendControl(env);
}

void RemoteCore::SendCredit(RemoteSub& sub, uint64_t messages) {
  v1::Envelope credit;
  credit.mutable_credit()->set_sid(sub.sid);
  credit.mutable_credit()->set_messages(messages);
  SendControl(credit);
  sub.io_returned += messages;
  Bump(counters_.credit_returned, messages);
}

void RemoteCore::SendUnsubscribe(uint64_t sid, uint64_t request_id) {
  v1::Envelope env;
  env.set_request_id(request_id);
  env.mutable_unsubscribe()->set_sid(sid);
  SendControl(env);
}

void RemoteCore::Loop() {
  EnsureThreadIdentity();
  NameThisThread("herald-client");
  on_io_thread = true;
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  // Connection events, read on this thread from an inproc PAIR: a completed
  // handshake sends Hello at once, a lost connection ends the session
  // without waiting for the liveness timeout (a Goodbye may not get out).
  zmq::socket_t monitor(context, zmq::socket_type::pair);
  // Held for every turn, let go of only while waiting in poll().
  io_mu_.Lock();
  socket_ = &socket;
  try {
    socket.set(zmq::sockopt::linger, 0);
    monitor.set(zmq::sockopt::linger, 0);
    // Not ZMQ_IMMEDIATE: with it, libzmq 4.3.4 terminates the socket's
    // pipe without delay when the connection drops, and a Deliver being
    // read at that moment aborts the process in fq.cpp (`!_more`, libzmq
    // issues #2163 and #3663; seen in RemoteClientTest's broken-connection
    // test). Without it the pipe outlives the connection: what is sent
    // while there is none waits in it (up to the high-water mark) and goes
    // out, ahead of the next Hello, on the next connection, where the
    // server refuses it as sessionless (Error.no_session) unless it is the
    // Hello. Nothing is processed twice and nothing is counted wrong:
    // batches refused that way are counted lost at the next Welcome.
    socket.set(zmq::sockopt::immediate, 0);
    const std::string monitor_endpoint = absl::StrCat(
        "inproc://herald-sdk-monitor-", reinterpret_cast<uintptr_t>(this));
    if (zmq_socket_monitor(
            socket.handle(), monitor_endpoint.c_str(),
            ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED) != 0) {
      throw zmq::error_t();
    }
    monitor.connect(monitor_endpoint);
    socket.connect(url_);
  } catch (const zmq::error_t& e) {
    absl::MutexLock lock(&mu_);
    connect_error_ = e.num() == EINVAL
                         ? absl::InvalidArgumentError(absl::StrCat(
                               "connect to \"", url_, "\": ", e.what()))
                         : absl::UnavailableError(absl::StrCat(
                               "connect to \"", url_, "\": ", e.what()));
    exit_ = true;
  }
  hello_backoff_ = options_.reconnect_interval;
  if (!exit_) SendHello();

  // Plain poll() on the sockets' ZMQ_FDs, not zmq_poll(): a publishing
  // thread may send on the socket (under io_mu_) while this one waits, and
  // zmq_poll() would touch the socket unlocked.
  pollfd fds[3] = {{-1, POLLIN, 0}, {wake_fd_, POLLIN, 0}, {-1, POLLIN, 0}};
  int socket_fd = -1;
  if (!exit_) {
    try {
      socket_fd = socket.get(zmq::sockopt::fd);
      socket_fd_.store(socket_fd, std::memory_order_release);
      fds[2].fd = monitor.get(zmq::sockopt::fd);
    } catch (const zmq::error_t& e) {
      absl::MutexLock lock(&mu_);
      connect_error_ = absl::UnavailableError(
          absl::StrCat("connect to \"", url_, "\": ", e.what()));
      exit_ = true;
    }
  }
  while (!exit_) {
    bool established;
    bool draining;
    bool led;
    {
      absl::MutexLock lock(&mu_);
      established = phase_ == Phase::kEstablished;
      draining = draining_;
      led = receive_led_;
    }
    // What waits for POLLOUT. A pending batch does not while the broker is
    // draining: DoWork() does not send batches then, and waiting for a
    // POLLOUT that comes every turn would spin until the connection drops.
    const bool blocked =
        !blocked_.empty() || (pending_batch_.has_value() && !draining);
    const absl::Time now = absl::Now();
    absl::Time next =
        established
            ? std::min({next_ping_, last_rx_ + Liveness(), settle_ping_at_})
            : next_hello_;
    if (requests_retry_at_ > now) next = std::min(next, requests_retry_at_);
    int timeout_ms = static_cast<int>(std::clamp<int64_t>(
        absl::ToInt64Milliseconds(next - now) + 1, 0, 1000));
    // A receive call leading the socket watches it (LeadReceive()): this
    // thread does not, so a message wakes one thread, not two that race for
    // io_mu_. It looks at least every kUnwatchedPoll, for the time after
    // that call returns.
    // (Not while it waits for room to send: that too comes on ZMQ_FD.)
    led = led && !(established && blocked);
    fds[0].fd = led ? -1 : socket_fd;
    if (led) {
      timeout_ms =
          std::min(timeout_ms,
                   static_cast<int>(absl::ToInt64Milliseconds(kUnwatchedPoll)));
    }
    // ZMQ_FD is edge-triggered: sleep on it only once the sockets say there
    // is nothing to do (asking also re-arms the edge). A thread that sends
    // meanwhile checks again and wakes this one (SendInlineOrWake()).
    const bool ready = SocketReady(socket, established && blocked) ||
                       SocketReady(monitor, false);
    fds[1].revents = 0;
    int polled = 0;
    io_mu_.Unlock();
    if (!ready) polled = ::poll(fds, 3, timeout_ms);
    const int poll_errno = errno;
    io_waits_for_lock_.store(true, std::memory_order_relaxed);
    io_mu_.Lock();
    io_waits_for_lock_.store(false, std::memory_order_relaxed);
    if (polled < 0) {
      if (poll_errno != EINTR) {
        ReportError(absl::InternalError(
            absl::StrCat("client: poll: ", std::strerror(poll_errno))));
      }
      continue;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t value;
      [[maybe_unused]] const ssize_t n = read(wake_fd_, &value, sizeof(value));
    }
    // Messages first: a Goodbye queued on a connection is read before the
    // event saying that connection dropped. What a leading receive call read
    // and left to this thread came first.
    while (!handed_over_.empty()) {
      std::vector<zmq::message_t> frames = std::move(handed_over_.front());
      handed_over_.pop_front();
      HandleIncoming(frames);
    }
    for (int i = 0; i < kReceiveBudget && ReadMessage(socket, incoming_); ++i) {
      HandleIncoming(incoming_);
    }
    incoming_.clear();  // Holds no frame between turns.
    std::vector<zmq::message_t> event;
    for (int i = 0; i < kReceiveBudget && ReadMessage(monitor, event); ++i) {
      uint16_t id = 0;
      if (!event.empty() && event[0].size() >= sizeof(id)) {
        std::memcpy(&id, event[0].data(), sizeof(id));
      }
      OnConnectionEvent(id);
    }
    // Timers.
    const absl::Time after = absl::Now();
    {
      absl::MutexLock lock(&mu_);
      established = phase_ == Phase::kEstablished;
    }
    if (established) {
      if (after - last_rx_ > Liveness()) {
        LoseSession("no answer from the broker within the liveness timeout");
      } else if (after >= next_ping_) {
        v1::Envelope ping;
        ping.set_request_id(NextRequestId({.kind = Request::Kind::kHeartbeat}));
        ping.mutable_ping()->set_heartbeat(true);
        SendControl(ping);
        next_ping_ = after + Heartbeat();
        absl::MutexLock lock(&mu_);
        ++stats_.pings_sent;
      }
      if (after >= settle_ping_at_ && after - last_rx_ <= Liveness()) {
        settle_ping_at_ = absl::InfiniteFuture();
        if (!unacked_.empty() && !AckAwaited() && settle_ping_id_ == 0) {
          SendSettlePing();
        }
      }
    } else if (after >= next_hello_) {
      SendHello();
    }
    DoWork();
  }
  // Let a Goodbye leave, briefly; then close the socket and the context on
  // this thread (the one that made them).
  const absl::Duration linger = std::clamp(
      close_deadline_ - absl::Now(), absl::ZeroDuration(), kGoodbyeLinger);
  socket_ = nullptr;  // From here no publishing thread reaches the socket.
  socket_fd_.store(-1, std::memory_order_release);
  io_mu_.Unlock();
  try {
    socket.set(zmq::sockopt::linger,
               static_cast<int>(absl::ToInt64Milliseconds(linger)));
  } catch (const zmq::error_t&) {
    // Closing with the linger set at creation (0) is fine too.
  }
  zmq_socket_monitor(socket.handle(), nullptr, 0);
  monitor.close();
  socket.close();
  context.close();
  absl::MutexLock lock(&mu_);
  io_exited_ = true;
}

void RemoteCore::OnConnectionEvent(uint16_t event) {
  bool established;
  {
    absl::MutexLock lock(&mu_);
    established = phase_ == Phase::kEstablished;
  }
  if (event == ZMQ_EVENT_DISCONNECTED) {
    if (established) LoseSession("the connection dropped");
  } else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED && !established) {
    // Established already: the Hello that opened the session went out on
    // this connection (the event is read after its Welcome).
    hello_backoff_ = options_.reconnect_interval;
    SendHello();
  }
}

void RemoteCore::HandleIncoming(std::vector<zmq::message_t>& frames,
                                bool deliveries_only) {
  auto protocol_error = [this] {
    absl::MutexLock lock(&mu_);
    ++stats_.protocol_errors;
  };
  if (frames.size() < 2 || !net::CheckMagic(View(frames[0])).ok()) {
    protocol_error();
    return;
  }
  // Parsed onto the batch's arena: a Deliver's entries stay there, shared
  // by their Received values, with no allocation per entry.
  auto batch = std::make_shared<RemoteBatch>();
  v1::Envelope& env = batch->envelope;
  if (!env.ParseFromArray(frames[1].data(),
                          static_cast<int>(frames[1].size()))) {
    protocol_error();
    return;
  }
  last_rx_ = absl::Now();
  if (env.body_case() != v1::Envelope::kDeliver && frames.size() > 2) {
    protocol_error();
    return;
  }
  if (deliveries_only && env.body_case() != v1::Envelope::kDeliver) {
    handed_over_.push_back(std::move(frames));
    return;
  }
  switch (env.body_case()) {
    case v1::Envelope::kWelcome:
      OnWelcome(env);
      break;
    case v1::Envelope::kAck:
      OnAck(env);
      break;
    case v1::Envelope::kError:
      OnError(env);
      break;
    case v1::Envelope::kDeliver:
      batch->payloads.reserve(frames.size() - 2);
      for (size_t i = 2; i < frames.size(); ++i) {
        batch->payloads.push_back(std::move(frames[i]));
      }
      OnDeliver(std::move(batch));
      break;
    case v1::Envelope::kPong:
      OnPong(env);
      break;
    case v1::Envelope::kStatsReply:
      OnStatsReply(env);
      break;
    case v1::Envelope::kGoodbye:
      OnGoodbye(env.goodbye());
      break;
    case v1::Envelope::kPing: {
      v1::Envelope pong;
      pong.set_request_id(env.request_id());
      pong.mutable_pong();
      SendControl(pong);
      break;
    }
    default:
      protocol_error();
      break;
  }
}

void RemoteCore::OnWelcome(const v1::Envelope& env) {
  auto req = requests_.find(env.request_id());
  if (req == requests_.end() || req->second.kind != Request::Kind::kHello) {
    return;  // An answer to an earlier Hello of a session already set up.
  }
  // Every Hello of this attempt is answered now.
  absl::erase_if(requests_, [](const auto& r) {
    return r.second.kind == Request::Kind::kHello;
  });
  const v1::Welcome& w = env.welcome();
  const absl::Time now = absl::Now();
  last_rx_ = now;

  struct Action {
    // kResend: the Subscribe sent before the connection dropped, again.
    enum class Kind { kSubscribe, kUnsubscribe, kResend };
    Kind kind;
    uint64_t sid;
    std::shared_ptr<RemoteSub> sub;
    uint64_t request_id;
  };
  std::vector<Action> actions;
  bool lost;
  uint64_t epoch;
  const uint64_t first_fresh_request = next_request_id_ + 1;
  {
    absl::MutexLock lock(&mu_);
    if (phase_ != Phase::kConnecting) return;
    ++session_serial_;
    lost = ever_connected_ && (!w.resumed() || w.broker_epoch() != epoch_);
    ++stats_.sessions;
    if (ever_connected_) ++stats_.reconnects;
    ever_connected_ = true;
    phase_ = Phase::kEstablished;
    welcome_ = w;
    epoch_ = w.broker_epoch();
    publish_progress_ = w.publish_progress();
    epoch = epoch_;
    // Relaxed: read by Publish() as a hint; the broker checks again.
    max_message_bytes_.store(w.max_message_bytes(), std::memory_order_relaxed);
    if (lost) {
      for (const SentBatch& b : unacked_) {
        ++stats_.batches_lost;
        stats_.publish_dropped_by_reason[static_cast<size_t>(
            PublishDrop::kLost)] += b.messages - b.refused;
        stats_.publish_in_flight -= b.messages;
      }
    }
    for (const std::shared_ptr<FlushWaiter>& f : flushes_) f->ping_id = 0;
    for (const std::shared_ptr<StatsWaiter>& s : stats_waiters_) {
      s->request_id = 0;
    }
    std::vector<uint64_t> erase;
    for (auto& [sid, e] : subs_) {
      switch (e.state) {
        case SubState::kPending:
          if (lost || e.sent_in_session == 0) {
            // Lost with the broker, or never sent: make it (again).
            e.sent_in_session = session_serial_;
            actions.push_back(
                {Action::Kind::kSubscribe, sid, e.sub,
                 NextRequestId({Request::Kind::kSubscribe, sid})});
          } else {
            // Sent before the connection dropped, in the session that is
            // resumed: it may or may not have arrived. Send it again, the
            // same request: the server acknowledges a repeat of the
            // Subscribe that made a live subscription (docs/protocol.md),
            // so the Ack comes either way.
            e.sent_in_session = session_serial_;
            actions.push_back(
                {Action::Kind::kResend, sid, e.sub,
                 NextRequestId({Request::Kind::kSubscribe, sid})});
          }
          break;
        case SubState::kLive:
          if (lost) {
            e.state = SubState::kPending;
            e.sent_in_session = session_serial_;
            actions.push_back(
                {Action::Kind::kSubscribe, sid, e.sub,
                 NextRequestId({Request::Kind::kSubscribe, sid})});
          }
          break;
        case SubState::kClosing:
          if (lost) {
            e.state = SubState::kClosed;  // The broker has none: no totals.
            if (!e.waiter) erase.push_back(sid);
          } else {
            e.sent_in_session = session_serial_;
            actions.push_back(
                {Action::Kind::kUnsubscribe, sid, nullptr,
                 NextRequestId({Request::Kind::kUnsubscribe, sid})});
          }
          break;
        case SubState::kCancelled:
          if (!lost && e.sent_in_session != 0) {
            actions.push_back({Action::Kind::kUnsubscribe, sid, nullptr,
                               NextRequestId({Request::Kind::kIgnore, sid})});
          }
          erase.push_back(sid);
          break;
        case SubState::kFailed:
        case SubState::kClosed:
          break;
      }
    }
    for (uint64_t sid : erase) subs_.erase(sid);
  }
  absl::flat_hash_set<uint64_t> fresh_requests;
  for (uint64_t id = first_fresh_request; id <= next_request_id_; ++id) {
    fresh_requests.insert(id);
  }
  if (lost) {
    unacked_.clear();
    settled_batches_processed_ = 0;
    settled_entries_processed_ = 0;
    settle_ping_id_ = 0;
    settle_ping_at_ = absl::InfiniteFuture();
    // Requests of the dead session: their answers will never come. (Those
    // just made for this session are kept.)
    absl::erase_if(requests_, [&kept = fresh_requests](const auto& r) {
      return !kept.contains(r.first);
    });
    blocked_.clear();
    held_credits_.clear();
  } else {
    // The Hello reported the credit of a Credit still blocked (it is in
    // io_returned) and the broker, on this new connection, took it back:
    // sending it now would return it twice.
    if (w.resume_applied()) {
      std::erase_if(blocked_, [](const Blocked& b) { return b.credit; });
    }
    for (const Command& c : held_credits_) {
      std::shared_ptr<RemoteSub> sub;
      {
        absl::MutexLock lock(&mu_);
        auto it = subs_.find(c.sid);
        if (it != subs_.end()) sub = it->second.sub;
      }
      if (sub != nullptr) SendCredit(*sub, c.messages);
    }
    held_credits_.clear();
  }
  for (const Action& a : actions) {
    switch (a.kind) {
      case Action::Kind::kSubscribe: {
        bool gap = false;
        if (lost) {
          absl::MutexLock lock(&mu_);
          auto it = subs_.find(a.sid);
          gap = it != subs_.end() && it->second.was_live;
        }
        SendSubscribe(a.sid, a.sub, a.request_id, gap, epoch, /*fresh=*/true);
        break;
      }
      case Action::Kind::kResend:
        SendSubscribe(a.sid, a.sub, a.request_id, false, epoch,
                      /*fresh=*/false);
        break;
      case Action::Kind::kUnsubscribe:
        SendUnsubscribe(a.sid, a.request_id);
        break;
    }
  }
  next_ping_ = now + Heartbeat();
  hello_backoff_ = options_.reconnect_interval;
  if (!lost && publish_progress_ && !unacked_.empty()) {
    // Resumed: an Ack awaited may have been lost with the connection, and
    // with it the window. This Pong settles every batch sent so far.
    SendSettlePing();
  }
}

void RemoteCore::OnGoodbye(const v1::Goodbye& goodbye) {
  {
    absl::MutexLock lock(&mu_);
    if (phase_ != Phase::kEstablished || draining_) return;
    // The broker is stopping: it refuses Hello, Publish and Subscribe from
    // now on but keeps delivering within credit while it drains, so the
    // session stays up (credit still flows back) until the connection drops;
    // then the client says Hello again, to whatever broker answers.
    draining_ = true;
    io_wants_publish_ = false;
  }
  ReportError(absl::UnavailableError(absl::StrCat(
      "client: the broker at \"", url_, "\" is stopping (", goodbye.reason(),
      "); deliveries drain, then the client reconnects")));
}

void RemoteCore::LoseSession(absl::string_view why) {
  {
    absl::MutexLock lock(&mu_);
    if (phase_ != Phase::kEstablished) return;
    phase_ = Phase::kConnecting;
    draining_ = false;
    for (const std::shared_ptr<FlushWaiter>& f : flushes_) f->ping_id = 0;
    for (const std::shared_ptr<StatsWaiter>& s : stats_waiters_) {
      s->request_id = 0;
    }
  }
  ReportError(absl::UnavailableError(absl::StrCat(
      "client: session with \"", url_, "\" lost (", why, "); reconnecting")));
  // If the next Welcome resumes the session, answers to batches, subscribes
  // and unsubscribes sent before may still come; the rest is sent again.
  absl::erase_if(requests_, [](const auto& r) {
    return r.second.kind != Request::Kind::kBatch &&
           r.second.kind != Request::Kind::kSubscribe &&
           r.second.kind != Request::Kind::kUnsubscribe;
  });
  // The settle Ping went with them: its Pong would be ignored, and a stale
  // id would keep MaybeArmSettlePing() from arming one again. A resumed
  // Welcome sends a new one if batches are unsettled.
  settle_ping_id_ = 0;
  settle_ping_at_ = absl::InfiniteFuture();
  hello_backoff_ = options_.reconnect_interval;
  SendHello();
}

void RemoteCore::OnAck(const v1::Envelope& env) {
  auto req = requests_.find(env.request_id());
  if (req == requests_.end()) return;  // Stale: a session ago.
  const Request request = req->second;
  const v1::Ack& ack = env.ack();
  switch (request.kind) {
    case Request::Kind::kBatch:
      SettleBatches(ack.acked_batch_sequence(), ack.batches_processed(),
                    ack.entries_processed());
      break;
    case Request::Kind::kSubscribe: {
      requests_.erase(req);
      bool cancelled = false;
      {
        absl::MutexLock lock(&mu_);
        auto it = subs_.find(request.sid);
        if (it == subs_.end()) break;
        SubEntry& e = it->second;
        if (e.state == SubState::kPending) {
          e.state = SubState::kLive;
          e.was_live = true;
        } else if (e.state == SubState::kCancelled) {
          cancelled = true;
          subs_.erase(it);
        }
      }
      if (cancelled) {
        SendUnsubscribe(request.sid,
                        NextRequestId({Request::Kind::kIgnore, request.sid}));
      }
      break;
    }
    case Request::Kind::kUnsubscribe: {
      requests_.erase(req);
      absl::MutexLock lock(&mu_);
      auto it = subs_.find(request.sid);
      if (it == subs_.end()) break;
      it->second.state = SubState::kClosed;
      it->second.totals = ack.totals();
      if (!it->second.waiter) subs_.erase(it);
      break;
    }
    default:
      requests_.erase(req);
      break;
  }
}

void RemoteCore::OnError(const v1::Envelope& env) {
  const v1::Error& error = env.error();
  const absl::Status status = StatusFromError(error);
  {
    absl::MutexLock lock(&mu_);
    ++stats_.errors_received;
  }
  if (env.request_id() != 0 && env.request_id() == settle_ping_id_) {
    settle_ping_id_ = 0;  // Refused: no Pong will come; a later one may go.
    if (!error.no_session() && publish_progress_ && !unacked_.empty()) {
      settle_ping_at_ = absl::Now() + kRequestRetryDelay;
    }
  }
  if (error.no_session()) {
    // The broker no longer knows this session (it expired while we were
    // silent): nothing of the request was done. A new session re-makes the
    // subscriptions and re-sends what was pending; its Welcome counts the
    // unacknowledged batches lost.
    LoseSession("the broker has no session for this client");
    return;
  }
  if (error.unprocessed() && error.batch_sequence() != 0) {
    // A batch refused as a whole before it was processed (the session's
    // held messages were full, or the server is stopping), with or without
    // an Ack asked: no Ack will come. Its messages count refused; a Pong
    // settles it.
    requests_.erase(env.request_id());
    if (RefuseUnprocessed([&](const SentBatch& b) {
          return b.sequence == error.batch_sequence();
        })) {
      ReportError(absl::Status(
          status.code(),
          absl::StrCat("publish batch ", error.batch_sequence(),
                       " refused by the broker: ", status.message())));
      MaybeArmSettlePing();
    }
    return;
  }
  auto req = requests_.find(env.request_id());
  // A refusal in a batch sent without asking an Ack: request id 0.
  const bool unasked_batch =
      env.request_id() == 0 && error.batch_sequence() != 0;
  // An answer to a request of a session ago, or to a Hello already
  // answered (Hellos repeat while connecting, and each gets an answer).
  if (req == requests_.end() && !unasked_batch) return;
  const Request request =
      unasked_batch ? Request{.kind = Request::Kind::kBatch} : req->second;
  switch (request.kind) {
    case Request::Kind::kBatch: {
      if (error.batch_sequence() == 0) {
        // The request refused as a whole before it was processed (the
        // session's held messages were full, or the server is stopping):
        // no Ack will come. Its messages count refused; a Pong settles it.
        requests_.erase(env.request_id());
        RefuseUnprocessed([&](const SentBatch& b) {
          return b.request_id == env.request_id();
        });
        ReportError(status);
        MaybeArmSettlePing();
        return;
      }
      bool found = false;
      {
        absl::MutexLock lock(&mu_);
        for (SentBatch& b : unacked_) {
          if (b.sequence != error.batch_sequence()) continue;
          // The whole batch, or one entry of it; never more than the batch
          // had left (a server repeating a refusal cannot make the counts
          // wrap).
          const uint64_t refused =
              error.whole_batch()
                  ? b.messages - b.refused
                  : std::min<uint64_t>(1, b.messages - b.refused);
          b.refused += refused;
          stats_.publish_dropped_by_reason[static_cast<size_t>(
              PublishDrop::kBrokerRefused)] += refused;
          found = true;
          break;
        }
      }
      if (found) {
        ReportError(absl::Status(
            status.code(),
            error.whole_batch()
                ? absl::StrCat("publish batch ", error.batch_sequence(),
                               " refused by the broker: ", status.message())
                : absl::StrCat("publish batch ", error.batch_sequence(),
                               " entry ", error.entry_index(),
                               " refused by the broker: ", status.message())));
      }
      return;
    }
    case Request::Kind::kHello: {
      requests_.erase(req);
      bool first;
      {
        absl::MutexLock lock(&mu_);
        first = !ever_connected_;
        if (first) connect_error_ = status;
      }
      ReportError(status);
      return;  // Hello is retried on its timer (first: Start() gives up).
    }
    case Request::Kind::kSubscribe: {
      requests_.erase(req);
      std::shared_ptr<RemoteSub> ended;
      {
        absl::MutexLock lock(&mu_);
        auto it = subs_.find(request.sid);
        if (it == subs_.end()) return;
        SubEntry& e = it->second;
        // Live already (a copy of its Subscribe was refused): no change.
        if (e.state == SubState::kPending) {
          e.state = SubState::kFailed;
          e.error = status;
          if (e.was_live) ended = e.sub;  // A re-subscribe: no one waits.
        } else if (e.state == SubState::kCancelled) {
          subs_.erase(it);
        }
      }
      if (ended != nullptr) {
        {
          absl::MutexLock lock(&ended->mu);
          ended->ended = absl::OutOfRangeError(absl::StrCat(
              "subscription ", request.sid,
              ": the broker would not make it again after a restart: ",
              status.message()));
          ended->WakeWaiterLocked();
        }
        ReportError(status);
      }
      return;
    }
    case Request::Kind::kUnsubscribe: {
      requests_.erase(req);
      absl::MutexLock lock(&mu_);
      auto it = subs_.find(request.sid);
      if (it == subs_.end()) return;
      it->second.state = SubState::kClosed;  // No totals.
      if (!it->second.waiter) subs_.erase(it);
      return;
    }
    case Request::Kind::kFlushPing:
    case Request::Kind::kStats:
      if (status.code() == absl::StatusCode::kResourceExhausted) {
        // Refused behind a publish blocked by a full kBlock queue (the
        // session's held messages are full): asked again shortly.
        requests_.erase(req);
        {
          absl::MutexLock lock(&mu_);
          for (const std::shared_ptr<FlushWaiter>& f : flushes_) {
            if (f->ping_id == env.request_id()) f->ping_id = 0;
          }
          for (const std::shared_ptr<StatsWaiter>& s : stats_waiters_) {
            if (s->request_id == env.request_id()) s->request_id = 0;
          }
        }
        requests_retry_at_ = absl::Now() + kRequestRetryDelay;
        return;
      }
      [[fallthrough]];
    case Request::Kind::kHeartbeat:
      // Otherwise only a missing session (above) makes the broker refuse
      // these; a server that does not mark it is treated the same way.
      requests_.erase(req);
      LoseSession(
          absl::StrCat("the broker refused a request: ", status.message()));
      return;
    case Request::Kind::kIgnore:
      requests_.erase(req);
      return;
  }
}

bool RemoteCore::RefuseUnprocessed(
    absl::FunctionRef<bool(const SentBatch&)> which) {
  absl::MutexLock lock(&mu_);
  for (SentBatch& b : unacked_) {
    if (!which(b)) continue;
    stats_.publish_dropped_by_reason[static_cast<size_t>(
        PublishDrop::kBrokerRefused)] += b.messages - b.refused;
    b.refused = b.messages;
    b.refused_unprocessed = true;
    b.request_id = 0;
    return true;
  }
  return false;
}

void RemoteCore::OnDeliver(std::shared_ptr<RemoteBatch> batch) {
  const v1::Deliver& deliver = batch->envelope.deliver();
  const int entries = deliver.entries_size();
  if (static_cast<size_t>(entries) != batch->payloads.size()) {
    absl::MutexLock lock(&mu_);
    ++stats_.protocol_errors;
    return;
  }
  // One run of equal sids at a time (the server sends one subscription per
  // Deliver): its subscription is looked up once and its buffer filled
  // under one lock, so a waiting receiver wakes once per run.
  uint64_t discarded = 0;
  for (int begin = 0; begin < entries;) {
    const uint64_t sid = deliver.entries(begin).sid();
    int end = begin + 1;
    while (end < entries && deliver.entries(end).sid() == sid) ++end;
    std::shared_ptr<RemoteSub> sub;
    {
      absl::MutexLock lock(&mu_);
      auto it = subs_.find(sid);
      if (it != subs_.end() && (it->second.state == SubState::kLive ||
                                it->second.state == SubState::kPending)) {
        sub = it->second.sub;
      }
    }
    std::shared_ptr<CallbackPool> schedule;
    if (sub == nullptr) {
      discarded += static_cast<uint64_t>(end - begin);
    } else {
      sub->io_received += static_cast<uint64_t>(end - begin);
      for (int i = begin; i < end; ++i) {
        sub->io_missed_received += deliver.entries(i).missed();
      }
      absl::MutexLock lock(&sub->mu);
      if (sub->closed) {
        discarded += static_cast<uint64_t>(end - begin);
      } else {
        // Counted before they are buffered: a receiver may take them the
        // moment the lock is let go, and the counts it then reads (or the
        // buffered gauge its take lowers) must include them.
        const auto n = static_cast<uint64_t>(end - begin);
        Bump(counters_.received, n);
        Bump(counters_.buffered, n);
        if (!on_io_thread) Bump(counters_.received_inline, n);
        for (int i = begin; i < end; ++i) {
          const bool gap = sub->gap_pending;
          sub->gap_pending = false;
          sub->buffer.push_back(
              ReceivedAccess::FromRemote(batch, i, gap, sub->epoch));
        }
        sub->WakeWaiterLocked();
        if (sub->callback_fn && !sub->scheduled) {
          sub->scheduled = true;
          schedule = sub->pool;
        }
      }
    }
    // A callback subscription's turn, queued outside its lock.
    if (schedule != nullptr) ScheduleCallbacks(sub, schedule);
    begin = end;
  }
  if (discarded > 0) Bump(counters_.discarded, discarded);
}

void RemoteCore::SettleBatches(uint64_t acked_sequence, uint64_t batches,
                               uint64_t entries) {
  if (!publish_progress_) {
    // A server without publish progress: every batch asks its own Ack, so
    // one still unacknowledged below an acknowledged batch never arrived.
    absl::MutexLock lock(&mu_);
    while (!unacked_.empty() && unacked_.front().sequence <= acked_sequence) {
      const SentBatch& b = unacked_.front();
      if (b.sequence == acked_sequence || b.refused_unprocessed) {
        ++stats_.batches_acked;
        stats_.publish_acked += b.messages - b.refused;
      } else {
        ++stats_.batches_lost;
        stats_.publish_dropped_by_reason[static_cast<size_t>(
            PublishDrop::kLost)] += b.messages - b.refused;
      }
      stats_.publish_in_flight -= b.messages;
      if (b.request_id != 0) requests_.erase(b.request_id);
      unacked_.pop_front();
    }
    return;
  }
  // Progress older than the last settled (a Pong answered before an Ack
  // already handled) settles nothing more.
  if (batches < settled_batches_processed_ ||
      entries < settled_entries_processed_) {
    return;
  }
  uint64_t settled_batches = 0;   // Expected in the progress.
  uint64_t settled_messages = 0;  // Expected in the progress.
  uint64_t settled_refused = 0;
  uint64_t refused_unprocessed = 0;  // Batches answered, not processed.
  uint64_t in_flight = 0;
  while (!unacked_.empty() && unacked_.front().sequence <= acked_sequence) {
    const SentBatch& b = unacked_.front();
    in_flight += b.messages;
    if (b.refused_unprocessed) {
      ++refused_unprocessed;  // Its messages were counted refused.
    } else {
      ++settled_batches;
      settled_messages += b.messages;
      settled_refused += b.refused;
    }
    if (b.request_id != 0) requests_.erase(b.request_id);
    unacked_.pop_front();
  }
  // A session's batches reach the broker in order, and its progress counts
  // every one it processed: of the settled batches, those it did not count
  // never arrived (ZeroMQ dropped them with a broken connection). A lost
  // batch had no Error, so the refusals belong to processed ones.
  const uint64_t processed_batches =
      std::min(settled_batches, batches - settled_batches_processed_);
  const uint64_t processed_messages =
      std::min(settled_messages, entries - settled_entries_processed_);
  settled_batches_processed_ = batches;
  settled_entries_processed_ = entries;
  if (settled_batches + refused_unprocessed == 0) return;
  absl::MutexLock lock(&mu_);
  stats_.batches_acked += processed_batches + refused_unprocessed;
  stats_.batches_lost += settled_batches - processed_batches;
  stats_.publish_acked +=
      processed_messages - std::min(processed_messages, settled_refused);
  stats_.publish_dropped_by_reason[static_cast<size_t>(PublishDrop::kLost)] +=
      settled_messages - processed_messages;
  stats_.publish_in_flight -= in_flight;
}

void RemoteCore::OnPong(const v1::Envelope& env) {
  auto req = requests_.find(env.request_id());
  // Stale (a session ago): its progress is another session's.
  if (req == requests_.end()) return;
  const Request request = req->second;
  requests_.erase(req);
  if (publish_progress_) {
    // A Ping answered in order comes after every batch sent before it (a
    // heartbeat's covers nothing): those not in the progress were lost.
    const v1::Pong& pong = env.pong();
    SettleBatches(std::max(pong.acked_batch_sequence(), request.covers),
                  pong.batches_processed(), pong.entries_processed());
  }
  if (env.request_id() == settle_ping_id_) {
    settle_ping_id_ = 0;
    MaybeArmSettlePing();
  }
  if (request.kind != Request::Kind::kFlushPing) return;
  absl::MutexLock lock(&mu_);
  for (const std::shared_ptr<FlushWaiter>& f : flushes_) {
    if (f->ping_id == env.request_id()) f->done = true;
  }
}

void RemoteCore::OnStatsReply(v1::Envelope& env) {
  auto req = requests_.find(env.request_id());
  if (req == requests_.end()) return;
  requests_.erase(req);
  absl::MutexLock lock(&mu_);
  for (const std::shared_ptr<StatsWaiter>& s : stats_waiters_) {
    if (s->request_id == env.request_id()) {
      s->stats = env.stats_reply();  // Broker and server.
      s->done = true;
      break;
    }
  }
}

void RemoteCore::DoWork() {
  std::vector<Command> commands;
  bool established;
  bool draining;
  {
    absl::MutexLock lock(&mu_);
    commands.swap(commands_);
    wake_pending_ = false;
    established = phase_ == Phase::kEstablished;
    draining = draining_;
  }
  for (const Command& c : commands) {
    switch (c.kind) {
      case Command::Kind::kSubscribe:
      case Command::Kind::kUnsubscribe: {
        if (!established) break;  // The next Welcome sends it.
        if (draining && c.kind == Command::Kind::kSubscribe) {
          break;  // The stopping broker would refuse it; the next one won't.
        }
        std::shared_ptr<RemoteSub> sub;
        uint64_t request_id = 0;
        {
          absl::MutexLock lock(&mu_);
          auto it = subs_.find(c.sid);
          if (it == subs_.end()) break;
          SubEntry& e = it->second;
          if (e.sent_in_session == session_serial_ &&
              c.kind == Command::Kind::kSubscribe) {
            break;  // The Welcome sent it already.
          }
          if (c.kind == Command::Kind::kSubscribe) {
            if (e.state != SubState::kPending) break;
            sub = e.sub;
            request_id = NextRequestId({Request::Kind::kSubscribe, c.sid});
          } else {
            if (e.state != SubState::kClosing) break;
            request_id = NextRequestId({Request::Kind::kUnsubscribe, c.sid});
          }
          e.sent_in_session = session_serial_;
        }
        if (sub != nullptr) {
          uint64_t epoch;
          {
            absl::MutexLock lock(&mu_);
            epoch = epoch_;
          }
          SendSubscribe(c.sid, sub, request_id, false, epoch, /*fresh=*/true);
        } else {
          SendUnsubscribe(c.sid, request_id);
        }
        break;
      }
      case Command::Kind::kCredit: {
        std::shared_ptr<RemoteSub> sub;
        {
          absl::MutexLock lock(&mu_);
          auto it = subs_.find(c.sid);
          if (it == subs_.end() || (it->second.state != SubState::kLive &&
                                    it->second.state != SubState::kPending)) {
            break;
          }
          sub = it->second.sub;
        }
        {
          absl::MutexLock lock(&sub->mu);
          if (sub->incarnation != c.incarnation || sub->closed) break;
        }
        if (!established) {
          held_credits_.push_back(c);
          break;
        }
        SendCredit(*sub, c.messages);
        break;
      }
      case Command::Kind::kWake:
        break;
      case Command::Kind::kClose:
        Shutdown(c.deadline);
        return;
    }
  }
  if (!established) {
    absl::MutexLock lock(&mu_);
    io_wants_publish_ = false;
    return;
  }
  if (!FlushBlocked()) {
    absl::MutexLock lock(&mu_);
    io_wants_publish_ = false;
    return;
  }
  if (draining) {
    // The stopping broker would refuse publishes (kUnavailable): they wait
    // in the buffer for the next session.
    absl::MutexLock lock(&mu_);
    io_wants_publish_ = false;
  } else {
    SendBatches();
  }
  // Flush pings (after the batches they cover) and stats requests.
  std::vector<uint64_t> pings;
  std::vector<uint64_t> stats;
  if (absl::Now() >= requests_retry_at_) {
    absl::MutexLock lock(&mu_);
    for (const std::shared_ptr<FlushWaiter>& f : flushes_) {
      if (f->done || f->ping_id != 0 || sent_total_ < f->target) continue;
      // Sent after the batches it covers: its Pong settles them all.
      f->ping_id = NextRequestId(
          {.kind = Request::Kind::kFlushPing,
           .covers = unacked_.empty() ? 0 : unacked_.back().sequence});
      pings.push_back(f->ping_id);
    }
    for (const std::shared_ptr<StatsWaiter>& s : stats_waiters_) {
      if (s->done || s->request_id != 0) continue;
      s->request_id = NextRequestId({.kind = Request::Kind::kStats});
      stats.push_back(s->request_id);
    }
  }
  for (uint64_t id : pings) {
    v1::Envelope ping;
    ping.set_request_id(id);
    ping.mutable_ping();
    SendControl(ping);
  }
  for (uint64_t id : stats) {
    v1::Envelope request;
    request.set_request_id(id);
    request.mutable_stats_request();
    SendControl(request);
  }
}

void RemoteCore::SendBatches() {
  // io_wants_publish_ is set true only in the critical section that finds
  // the outbox empty, so a Publish() right after it wakes this thread; it
  // is false whenever this thread will look again without being woken (an
  // Ack or the socket's POLLOUT brings it back).
  auto stop_wanting = [this] {
    absl::MutexLock lock(&mu_);
    io_wants_publish_ = false;
  };
  while (true) {
    if (pending_batch_.has_value()) {
      if (!TrySend(pending_batch_->parts)) {
        stop_wanting();
        return;
      }
      const SentBatch info = pending_batch_->info;
      pending_batch_.reset();
      if (info.request_id != 0) {
        requests_[info.request_id] = {.kind = Request::Kind::kBatch};
      }
      unacked_.push_back(info);
      sent_total_ += info.messages;
      absl::MutexLock lock(&mu_);
      ++stats_.batches_sent;
      if (!on_io_thread) ++stats_.batches_sent_inline;
      continue;
    }
    // Adaptive: while little is in flight (a light load), batches go out
    // as soon as they are taken, up to max_unacked_batches, so a message
    // does not wait for the previous batch's round trip. Once
    // kPipelinedMessages or more are in flight (a heavy load), only one
    // batch is: the rest coalesce into the next, which keeps batches large
    // and the broker's per-batch work low.
    uint64_t in_flight = 0;
    for (const SentBatch& b : unacked_) in_flight += b.messages;
    if (unacked_.size() >= options_.max_unacked_batches ||
        (!unacked_.empty() && in_flight >= kPipelinedMessages)) {
      MaybeArmSettlePing();  // A window closed by a refused batch.
      stop_wanting();
      return;
    }
    // Take a batch: up to max_batch_messages, and max_message_bytes in all
    // (at least one message), so the envelope stays within the server's
    // frame limits.
    std::vector<OutboxEntry>& taken = taken_;
    taken.clear();
    {
      absl::MutexLock lock(&mu_);
      const size_t max_messages =
          std::max<size_t>(1, welcome_.max_batch_messages());
      const uint64_t max_bytes = welcome_.max_message_bytes();
      uint64_t bytes = 0;
      while (!outbox_.empty() && taken.size() < max_messages) {
        if (!taken.empty() && bytes + outbox_.front().bytes > max_bytes) break;
        bytes += outbox_.front().bytes;
        taken.push_back(std::move(outbox_.front()));
        outbox_.pop_front();
      }
      // In flight from here: out of the buffer, into the next batch.
      stats_.publish_in_flight += taken.size();
      if (taken.empty()) io_wants_publish_ = true;
    }
    if (taken.empty()) {
      // Idle: batches sent without asking an Ack and none awaited are
      // settled by a Ping's Pong shortly, unless a batch asks first.
      MaybeArmSettlePing();
      return;
    }
    // An Ack is asked for only while none is awaited: one per round trip
    // under a light load, instead of one per batch (each costs the broker a
    // send and this client a wake-up). The batches in between are settled
    // by the next Ack or Pong, whose publish progress tells exactly which
    // were processed. Under a heavy load only one batch is in flight, so
    // each asks.
    // A batch after which no other may be sent asks too, so that a closed
    // window always awaits an Ack that reopens it.
    const bool closes_window =
        unacked_.size() + 1 >= options_.max_unacked_batches ||
        in_flight + taken.size() >= kPipelinedMessages;
    const uint64_t sequence = ++batch_sequence_;
    const uint64_t request_id =
        publish_progress_ && AckAwaited() && !closes_window
            ? 0
            : ++next_request_id_;
    // The Publish and its entries are reused (Clear() keeps the entries and
    // their strings' capacity), lent to the envelope only to serialize it:
    // clearing an envelope's body would free them.
    v1::Publish& publish = publish_;
    publish.Clear();
    publish.set_batch_sequence(sequence);
    PendingBatch batch;
    batch.parts.reserve(taken.size() + 2);
    batch.parts.push_back(Frame(net::MagicFrame()));
    batch.parts.emplace_back();  // The envelope, below.
    for (OutboxEntry& e : taken) {
      v1::PublishEntry* entry = publish.add_entries();
      entry->set_topic(e.topic);
      for (const Header& h : e.headers) {
        v1::Header* out = entry->add_headers();
        out->set_key(h.key);
        out->set_value(h.value);
      }
      batch.parts.push_back(std::move(e.payload));
    }
    v1::Envelope env;
    env.set_request_id(request_id);
    env.set_allocated_publish(&publish);
    {
      // Taken back on every way out, before `env` would free it.
      absl::Cleanup take_back = [&env] { (void)env.release_publish(); };
      batch.parts[1] = Frame(env.SerializeAsString());
    }
    batch.info = {.sequence = sequence,
                  .request_id = request_id,
                  .messages = taken.size()};
    pending_batch_ = std::move(batch);
  }
}

void RemoteCore::Shutdown(absl::Time deadline) {
  close_deadline_ = deadline;  // For the linger after the loop.
  bool established;
  {
    absl::MutexLock lock(&mu_);
    established = phase_ == Phase::kEstablished;
  }
  if (established) {
    v1::Envelope bye;
    bye.mutable_goodbye()->set_reason("client closing");
    Parts parts;
    parts.push_back(Frame(net::MagicFrame()));
    parts.push_back(Frame(bye.SerializeAsString()));
    TrySend(parts);  // Best effort: the session expires otherwise.
  }
  std::vector<std::shared_ptr<RemoteSub>> subs;
  {
    absl::MutexLock lock(&mu_);
    auto drop = [this](PublishDrop reason,
                       uint64_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      stats_.publish_dropped_by_reason[static_cast<size_t>(reason)] += n;
    };
    drop(PublishDrop::kUnsentAtClose, outbox_.size());
    outbox_.clear();
    if (pending_batch_.has_value()) {
      drop(PublishDrop::kUnsentAtClose, pending_batch_->info.messages);
      stats_.publish_in_flight -= pending_batch_->info.messages;
      pending_batch_.reset();
    }
    for (const SentBatch& b : unacked_) {
      drop(PublishDrop::kUnackedAtClose, b.messages - b.refused);
      stats_.publish_in_flight -= b.messages;
    }
    unacked_.clear();
    phase_ = Phase::kClosed;
    for (auto& [sid, e] : subs_) {
      e.state = SubState::kClosed;
      subs.push_back(e.sub);
    }
    // Entries nobody waits for: the handles' later calls find none and say
    // the client is closed.
    absl::erase_if(subs_, [](const auto& s) { return !s.second.waiter; });
  }
  for (const std::shared_ptr<RemoteSub>& sub : subs) {
    absl::MutexLock lock(&sub->mu);
    if (sub->closed) continue;
    sub->closed = true;
    sub->WakeWaiterLocked();
    Bump(counters_.abandoned, sub->buffer.size());
    Drop(counters_.buffered, sub->buffer.size());
    sub->buffer.clear();
  }
  blocked_.clear();
  requests_.clear();
  exit_ = true;
}

}  // namespace herald::internal
