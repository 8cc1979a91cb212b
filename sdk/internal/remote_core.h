// RemoteCore: the shared state and the I/O thread of a RemoteClient (see
// sdk/internal/remote_client.h for the design), and RemoteSub, the client
// side of one remote subscription.
//
// Locks, in order: RemoteCore::io_mu_ (the socket and the protocol state;
// held by the I/O thread for its whole turn, only tried by other threads),
// RemoteCore::mu_, RemoteSub::mu. mu_ and RemoteSub::mu are held only
// briefly and never across a socket call or a user callback.
//
// Internal to sdk/.
#ifndef HERALD_SDK_INTERNAL_REMOTE_CORE_H_
#define HERALD_SDK_INTERNAL_REMOTE_CORE_H_

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "broker/message.h"
#include "broker/options.h"
#include "schemas/protocol.pb.h"
#include "sdk/internal/callback_pool.h"
#include "sdk/options.h"
#include "sdk/received.h"
#include "sdk/stats.h"
#include "zmq.hpp"

namespace herald::internal {

// The client side of one remote subscription: the messages received and not
// yet consumed, and the credit owed back. Shared by the core's registry, the
// I/O thread (which fills it) and the Subscriber (which drains it).
//
// Credit: the client grants `window` messages. With B messages buffered, O
// credit outstanding at the broker and U consumed but not yet returned,
// B + O + U == window always holds, so B <= window. Re-subscribing after a
// gap grants max(1, window - B) and books any excess as a negative U (a
// debt repaid before credit is returned again), so B may reach window + 1
// once.
//
// Thread-safe (every field below is guarded by `mu`).
struct RemoteSub {
  RemoteSub(uint64_t sid, uint64_t window, v1::Subscribe request, bool callback,
            size_t batch_limit)
      : sid(sid),
        window(window),
        request(std::move(request)),
        callback(callback),
        batch_limit(batch_limit) {}

  const uint64_t sid;
  const uint64_t window;
  // The Subscribe to send (initial_credit is filled in at each send).
  const v1::Subscribe request;
  // A callback subscription (Receive() is refused).
  const bool callback;
  // Callback subscriptions: the most messages one turn delivers.
  const size_t batch_limit;

  absl::Mutex mu;
  std::deque<Received> buffer ABSL_GUARDED_BY(mu);
  // Closed by the application or by Client::Close(): receive calls return
  // kFailedPrecondition; messages arriving later are discarded.
  bool closed ABSL_GUARDED_BY(mu) = false;
  // Not OK once the broker ended the subscription (refused to re-make it):
  // receive calls return kOutOfRange once the buffer is drained.
  absl::Status ended ABSL_GUARDED_BY(mu);
  // The next message pushed carries gap() and this epoch.
  bool gap_pending ABSL_GUARDED_BY(mu) = false;
  // The broker epoch of the current incarnation.
  uint64_t epoch ABSL_GUARDED_BY(mu) = 0;
  // Bumped at each (re-)subscribe; a credit return of an older incarnation
  // is not sent.
  uint64_t incarnation ABSL_GUARDED_BY(mu) = 0;
  // The initial credit of the current incarnation.
  uint64_t granted ABSL_GUARDED_BY(mu) = 0;
  // Consumed and not yet returned (negative: a debt, see above).
  int64_t unreturned ABSL_GUARDED_BY(mu) = 0;
  // Messages of the current incarnation handed to the application (its
  // broker's totals know nothing of an earlier one's), and how many of the
  // buffered messages, at the front, are of earlier incarnations.
  uint64_t app_delivered ABSL_GUARDED_BY(mu) = 0;
  uint64_t buffered_earlier ABSL_GUARDED_BY(mu) = 0;

  // Callback subscriptions, a serial executor over the client's
  // CallbackPool: the function and pool (set once the Subscriber exists),
  // whether a turn is queued or running, and the thread running the
  // callback right now (none: default id).
  std::function<void(const Received&)> callback_fn ABSL_GUARDED_BY(mu);

  // Credit to send back after consuming: none while `give` is 0.
  struct CreditReturn {
    uint64_t give = 0;
    uint64_t incarnation = 0;
  };
  // Counts `n` messages consumed; every half window, what was consumed goes
  // back as credit.
  CreditReturn ConsumeLocked(uint64_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    CreditReturn r;
    if (closed) return r;
    unreturned += static_cast<int64_t>(n);
    const auto threshold =
        static_cast<int64_t>(std::max<uint64_t>(1, window / 2));
    if (unreturned >= threshold) {
      r.give = static_cast<uint64_t>(unreturned);
      r.incarnation = incarnation;
      unreturned = 0;
    }
    return r;
  }
  std::shared_ptr<CallbackPool> pool ABSL_GUARDED_BY(mu);
  bool scheduled ABSL_GUARDED_BY(mu) = false;
  std::thread::id running_in ABSL_GUARDED_BY(mu);

  // While a receive call leading the socket (RemoteCore::LeadReceive())
  // sleeps in poll(): the eventfd to write when what it waits for changes
  // (a message buffered, closed, ended, its stop token); -1 otherwise.
  int wake_fd ABSL_GUARDED_BY(mu) = -1;
  // Wakes that receive call, if one sleeps. Whoever changes what Pop()'s
  // wait condition reads calls it.
  void WakeWaiterLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  // Guarded by the core's io_mu_: this incarnation's Deliver entries
  // received and credit sent, for Hello.resume (a session resumed on a new
  // connection).
  uint64_t io_received = 0;
  uint64_t io_returned = 0;
  uint64_t io_missed_received = 0;  // Their entries' `missed`, summed.
};

// Counters of the receive side, bumped without the core's lock.
struct ReceiveCounters {
  std::atomic<uint64_t> received{0};
  std::atomic<uint64_t> delivered{0};
  std::atomic<uint64_t> buffered{0};
  std::atomic<uint64_t> abandoned{0};
  std::atomic<uint64_t> discarded{0};
  std::atomic<uint64_t> credit_returned{0};
  std::atomic<uint64_t> gaps{0};
  std::atomic<uint64_t> decode_errors{0};
  std::atomic<uint64_t> received_inline{0};
};

// Thread-safe: the public methods may be called from any thread; the private
// I/O methods run on the I/O thread only.
class RemoteCore : public std::enable_shared_from_this<RemoteCore> {
 public:
  // REQUIRES: ValidateClientOptions(options).ok().
  RemoteCore(std::string url, ClientOptions options);
  // REQUIRES: Close() returned (the I/O thread is joined).
  ~RemoteCore();

  RemoteCore(const RemoteCore&) = delete;
  RemoteCore& operator=(const RemoteCore&) = delete;

  // Starts the I/O thread and waits for the first Welcome until `deadline`.
  // kUnavailable if none came, kInvalidArgument for an endpoint ZeroMQ
  // refuses, or the broker's Error answering Hello. On error the caller
  // still calls Close().
  absl::Status Start(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

  // As Publisher::Publish(); `wait` is PublisherOptions::buffer_wait.
  absl::Status Publish(absl::string_view topic, absl::string_view payload,
                       const Headers& headers, absl::string_view type_name,
                       absl::Duration wait) ABSL_LOCKS_EXCLUDED(mu_);

  // Subscribes and waits for the broker's Ack (Client::Subscribe()).
  absl::StatusOr<std::shared_ptr<RemoteSub>> Subscribe(
      absl::string_view pattern, const SubscriptionOptions& options,
      bool callback) ABSL_LOCKS_EXCLUDED(mu_);
  // Asks the broker to close `sid`. With `wait`, waits up to
  // request_timeout for its final totals: kUnavailable if they did not come
  // (or the broker lost the subscription), kFailedPrecondition once the
  // client is closed. Without, returns kDeadlineExceeded at once.
  absl::StatusOr<v1::SubscriptionStats> Unsubscribe(uint64_t sid, bool wait)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Returns `messages` of credit for incarnation `incarnation` of `sid`.
  void ReturnCredit(uint64_t sid, uint64_t incarnation, uint64_t messages)
      ABSL_LOCKS_EXCLUDED(mu_);

  absl::Status Flush(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Close(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);
  ClientStats Stats() const ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<v1::StatsReply> BrokerAndServerStats(absl::Time deadline)
      ABSL_LOCKS_EXCLUDED(mu_);
  // True once Close() began.
  bool closing() const ABSL_LOCKS_EXCLUDED(mu_);

  const ClientOptions& options() const { return options_; }
  ReceiveCounters& counters() { return counters_; }
  // A receive call's wait for `sub` (pull, its buffer empty), in place of
  // waiting for the I/O thread to fill the buffer: if no other call leads
  // and the session is established, the calling thread reads the socket
  // itself (one thread hop less per message) and sleeps on its ZMQ_FD while
  // it waits, until `ready` (evaluated with sub.mu held) or `deadline`.
  // Returns early, without waiting, if it cannot lead; the caller then waits
  // as before. The I/O thread stops watching the socket while a call leads
  // (see Loop()).
  void LeadReceive(RemoteSub& sub, absl::Time deadline,
                   absl::FunctionRef<bool()> ready)
      ABSL_LOCKS_EXCLUDED(io_mu_, mu_, sub.mu);
  // Takes the oldest buffered message of `sub` for the application
  // (Receive() or a callback), counting it delivered. REQUIRES: sub.mu held,
  // and a message buffered.
  Received TakeFrontLocked(RemoteSub& sub)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(sub.mu);

  // The pool running this client's callback subscriptions, started at the
  // first one; null once Close() began.
  std::shared_ptr<CallbackPool> callback_pool() ABSL_LOCKS_EXCLUDED(mu_);
  // Queues a turn of `sub`'s callbacks (see RunCallbackTurn()).
  void ScheduleCallbacks(const std::shared_ptr<RemoteSub>& sub,
                         const std::shared_ptr<CallbackPool>& pool);
  // One turn of a callback subscription on a pool thread: up to its batch
  // limit, then it queues itself again if more is buffered.
  void RunCallbackTurn(const std::shared_ptr<RemoteSub>& sub);

 private:
  enum class Phase { kConnecting, kEstablished, kClosed };
  enum class SubState {
    kPending,    // Subscribe to send or sent; no Ack yet.
    kLive,       // Acknowledged.
    kFailed,     // Refused; `error` says why.
    kCancelled,  // Subscribe() gave up waiting; close it if it comes alive.
    kClosing,    // Unsubscribe to send or sent.
    kClosed,     // Unsubscribed (`totals` if the broker sent them), or the
                 // client closed.
  };
  struct SubEntry {
    std::shared_ptr<RemoteSub> sub;
    SubState state = SubState::kPending;
    absl::Status error;
    // Acknowledged in some session: losing it is a gap.
    bool was_live = false;
    // A waiter (Subscribe() or a waiting Unsubscribe()) will erase it.
    bool waiter = false;
    // The session (session_serial_) its last Subscribe/Unsubscribe went out
    // in, so a command and a Welcome do not both send it.
    uint64_t sent_in_session = 0;
    std::optional<v1::SubscriptionStats> totals;
  };
  struct OutboxEntry {
    std::string topic;
    Headers headers;  // With the type header of a typed publish.
    zmq::message_t payload;
    size_t bytes = 0;
  };
  struct FlushWaiter {
    uint64_t target = 0;  // accepted_total_ when Flush() was called
    uint64_t ping_id = 0;
    bool done = false;
  };
  struct StatsWaiter {
    uint64_t request_id = 0;
    bool done = false;
    v1::StatsReply stats;
  };
  struct Command {
    enum class Kind { kSubscribe, kUnsubscribe, kCredit, kWake, kClose };
    Kind kind = Kind::kWake;
    uint64_t sid = 0;
    uint64_t incarnation = 0;
    uint64_t messages = 0;
    absl::Time deadline = absl::InfinitePast();
  };
  // What a request id was for (I/O thread only).
  struct Request {
    enum class Kind {
      kHello,
      kBatch,
      kSubscribe,
      kUnsubscribe,
      kHeartbeat,
      kFlushPing,
      kStats,
      kIgnore,
    };
    Kind kind = Kind::kIgnore;
    uint64_t sid = 0;
    // A Ping answered in order (not a heartbeat): the last batch sent
    // before it, which its Pong settles (see OnPong()).
    uint64_t covers = 0;
  };
  struct SentBatch {
    uint64_t sequence = 0;
    uint64_t request_id = 0;  // 0: no Ack asked for (see SendBatches()).
    // Refused as a whole without being processed (an Error with no batch
    // sequence): answered, not lost, and not in the broker's progress.
    bool refused_unprocessed = false;
    uint64_t messages = 0;
    uint64_t refused = 0;
  };
  struct PendingBatch {
    SentBatch info;
    std::vector<zmq::message_t> parts;
  };
  using Parts = std::vector<zmq::message_t>;

  // Queues `command` and wakes the I/O thread. Returns true if the eventfd
  // must be written (after unlocking).
  bool PushCommandLocked(Command command) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Wake();
  // Publish()'s way to get a message going once the I/O thread would send
  // now: sends the batch on the calling thread if the I/O state is free (no
  // wake-up of the I/O thread, one thread hop less), else wakes the I/O
  // thread.
  void SendInlineOrWake() ABSL_LOCKS_EXCLUDED(io_mu_, mu_);
  // True if `socket` has a message to read (or room to write, with
  // `want_out`): ZMQ_FD is edge-triggered, so whoever touches the socket
  // checks this before anyone sleeps on the fd. True on error, so that the
  // caller looks.
  static bool SocketReady(zmq::socket_t& socket, bool want_out);
  absl::Status WaitFlushed(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);
  void CountRefusalLocked(PublishRefusal reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- I/O thread.
  void Loop();
  // A socket monitor event (ZMQ_EVENT_*).
  void OnConnectionEvent(uint16_t event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  // Handles one message read from the socket. With `deliveries_only` (a
  // receive call leading the socket), anything but a Deliver is moved to
  // handed_over_ for the I/O thread instead.
  void HandleIncoming(std::vector<zmq::message_t>& frames,
                      bool deliveries_only = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  void OnWelcome(const v1::Envelope& env) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  void OnAck(const v1::Envelope& env) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  void OnError(const v1::Envelope& env) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  void OnDeliver(std::shared_ptr<RemoteBatch> batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  // The first unacknowledged batch `which` accepts was refused before it
  // was processed: its messages count refused, and a Pong settles it.
  // Returns false if there is none.
  bool RefuseUnprocessed(absl::FunctionRef<bool(const SentBatch&)> which)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  void OnPong(const v1::Envelope& env) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  // Settles the unacknowledged batches up to `acked_sequence` from an Ack's
  // or a Pong's publish progress: of those batches, the ones the broker did
  // not process (`batches` and `entries` processed in the session so far)
  // were lost with a broken connection.
  void SettleBatches(uint64_t acked_sequence, uint64_t batches,
                     uint64_t entries) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  void OnStatsReply(v1::Envelope& env) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  void OnGoodbye(const v1::Goodbye& goodbye)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  // The session is gone (Goodbye, silence, an Error to a Ping): say Hello
  // again.
  void LoseSession(absl::string_view why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  void SendHello() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  // Sends `sub`'s Subscribe. `fresh`: a new incarnation (grant computed
  // from the buffer, credit accounting reset); otherwise the last one again.
  void SendSubscribe(uint64_t sid, const std::shared_ptr<RemoteSub>& sub,
                     uint64_t request_id, bool gap, uint64_t epoch, bool fresh)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  // Sends `messages` of credit for `sub` (I/O thread).
  void SendCredit(RemoteSub& sub, uint64_t messages)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  void SendUnsubscribe(uint64_t sid, uint64_t request_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  void DoWork() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  void SendBatches() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  void Shutdown(absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  // Sends now, or queues behind earlier blocked messages.
  void SendControl(const v1::Envelope& env)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  // One multipart message: false if ZeroMQ would block (nothing was sent).
  bool TrySend(Parts& parts) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  // Retries blocked control messages in order; true if none remain.
  bool FlushBlocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  uint64_t NextRequestId(Request request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  // True while a sent batch that asked an Ack has not had it.
  bool AckAwaited() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  // Batches are unsettled with no Ack and no settle Ping awaited: a Ping
  // is due in kSettleDelay (settle_ping_at_), unless a batch asks first.
  void MaybeArmSettlePing() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  // A Ping whose Pong settles every batch sent so far (see OnPong()).
  void SendSettlePing() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_mu_);
  void ReportError(const absl::Status& status);
  absl::Duration Heartbeat() const;
  absl::Duration Liveness() const;

  const std::string url_;
  const ClientOptions options_;
  const std::string session_id_;
  int wake_fd_ = -1;
  // Wakes a receive call leading the socket (RemoteSub::wake_fd).
  int leader_fd_ = -1;
  // The socket's ZMQ_FD while the I/O thread's socket is open (-1 before
  // and after): a leading receive call sleeps on it.
  std::atomic<int> socket_fd_{-1};
  std::thread thread_;
  ReceiveCounters counters_;
  // Read by Publish() without the lock; set from each Welcome.
  std::atomic<uint64_t> max_message_bytes_{0};

  // Taken (blocking) only by the I/O thread; other threads only TryLock()
  // it, so no thread ever waits for one that waits for it.
  absl::Mutex io_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  // True while the I/O thread waits in io_mu_.Lock(). TryLock() takes a
  // free mutex ahead of a waiting Lock(), so a thread that took it in a
  // loop could keep the I/O thread out for as long as messages kept coming
  // (its credit returns, requests and heartbeats with it): other threads
  // leave io_mu_ to it while this is set.
  std::atomic<bool> io_waits_for_lock_{false};
  mutable absl::Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kConnecting;
  bool ever_connected_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status connect_error_ ABSL_GUARDED_BY(mu_);
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  v1::Welcome welcome_ ABSL_GUARDED_BY(mu_);
  // The broker said Goodbye: the session drains (see OnGoodbye()).
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool close_started_ ABSL_GUARDED_BY(mu_) = false;
  bool close_done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status close_status_ ABSL_GUARDED_BY(mu_);
  bool io_exited_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_pending_ ABSL_GUARDED_BY(mu_) = false;
  // A receive call leads the socket (LeadReceive()).
  bool receive_led_ ABSL_GUARDED_BY(mu_) = false;
  // The I/O thread would send a batch now if the outbox had messages.
  bool io_wants_publish_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<OutboxEntry> outbox_ ABSL_GUARDED_BY(mu_);
  uint64_t accepted_total_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Command> commands_ ABSL_GUARDED_BY(mu_);
  uint64_t next_sid_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, SubEntry> subs_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<FlushWaiter>> flushes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<StatsWaiter>> stats_waiters_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<CallbackPool> callback_pool_ ABSL_GUARDED_BY(mu_);
  // Publishing and session counters (the receive side is in counters_).
  ClientStats stats_ ABSL_GUARDED_BY(mu_);

  // ---- The I/O state: the socket and the session's protocol state. The
  // I/O thread holds io_mu_ for its whole turn and lets go of it only to
  // wait in poll(); a publishing thread that finds it free sends its batch
  // itself (see SendInlineOrWake()).
  zmq::socket_t* socket_ ABSL_GUARDED_BY(io_mu_) = nullptr;
  bool exit_ ABSL_GUARDED_BY(io_mu_) = false;
  absl::Time close_deadline_ ABSL_GUARDED_BY(io_mu_) = absl::InfinitePast();
  uint64_t next_request_id_ ABSL_GUARDED_BY(io_mu_) = 0;
  absl::flat_hash_map<uint64_t, Request> requests_ ABSL_GUARDED_BY(io_mu_);
  uint64_t session_serial_ ABSL_GUARDED_BY(io_mu_) = 0;
  absl::Time last_rx_ ABSL_GUARDED_BY(io_mu_);
  // The frames of the message being read, reused: its capacity stays, so a
  // Deliver of many payload frames does not regrow it each time.
  std::vector<zmq::message_t> incoming_ ABSL_GUARDED_BY(io_mu_);
  // Messages a leading receive call read that only this thread handles
  // (all but Deliver), in arrival order: handled at the start of its next
  // turn, before the socket is read again (see LeadReceive()).
  std::deque<std::vector<zmq::message_t>> handed_over_ ABSL_GUARDED_BY(io_mu_);
  absl::Time next_ping_ ABSL_GUARDED_BY(io_mu_);
  absl::Time next_hello_ ABSL_GUARDED_BY(io_mu_);
  absl::Duration hello_backoff_ ABSL_GUARDED_BY(io_mu_);
  uint64_t batch_sequence_ ABSL_GUARDED_BY(io_mu_) = 0;
  uint64_t sent_total_ ABSL_GUARDED_BY(io_mu_) = 0;
  std::deque<SentBatch> unacked_ ABSL_GUARDED_BY(io_mu_);
  // The session's publish progress at the last settlement (see
  // SettleBatches()); zero in a new session.
  uint64_t settled_batches_processed_ ABSL_GUARDED_BY(io_mu_) = 0;
  uint64_t settled_entries_processed_ ABSL_GUARDED_BY(io_mu_) = 0;
  // When a Ping settles batches sent without asking an Ack (see
  // SendBatches()); InfiniteFuture: none due.
  absl::Time settle_ping_at_ ABSL_GUARDED_BY(io_mu_) = absl::InfiniteFuture();
  // Flush Pings and stats requests wait until then (the broker refused one
  // behind a blocked publish: see OnError()).
  absl::Time requests_retry_at_ ABSL_GUARDED_BY(io_mu_) = absl::InfinitePast();
  // SendHello() is handling what the socket holds (see there).
  bool draining_for_hello_ ABSL_GUARDED_BY(io_mu_) = false;
  // The settle Ping awaiting its Pong (0: none): no other is sent meanwhile.
  uint64_t settle_ping_id_ ABSL_GUARDED_BY(io_mu_) = 0;
  // The session's server reports publish progress (Welcome); without it
  // every batch asks an Ack and an Ack settles only its own batch.
  bool publish_progress_ ABSL_GUARDED_BY(io_mu_) = false;
  std::optional<PendingBatch> pending_batch_ ABSL_GUARDED_BY(io_mu_);
  // SendBatches()' scratch, reused: the messages taken from the outbox, and
  // the Publish (see there).
  std::vector<OutboxEntry> taken_ ABSL_GUARDED_BY(io_mu_);
  v1::Publish publish_ ABSL_GUARDED_BY(io_mu_);
  // Control messages ZeroMQ would not take yet, in order. A Credit among
  // them is already in its subscription's io_returned, which a Hello
  // resuming the session reports: that resume drops it (see OnWelcome()).
  struct Blocked {
    Parts parts;
    bool credit = false;
  };
  std::deque<Blocked> blocked_ ABSL_GUARDED_BY(io_mu_);
  // Credit returned while no session was established: sent if the next
  // Welcome resumes the session, dropped if it does not.
  std::vector<Command> held_credits_ ABSL_GUARDED_BY(io_mu_);
};

}  // namespace herald::internal

#endif  // HERALD_SDK_INTERNAL_REMOTE_CORE_H_
