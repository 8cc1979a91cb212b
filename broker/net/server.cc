#include "broker/net/server.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "broker/internal/broker_core.h"
#include "broker/internal/subscription_state.h"
#include "broker/internal/thread_identity.h"
#include "broker/internal/thread_name.h"
#include "broker/net/framing.h"
#include "broker/topic.h"
#include "broker/util/check.h"
#include "broker/util/stat_counter.h"
#include "broker/util/status_macros.h"
#include "google/protobuf/arena.h"
#include "zmq.hpp"
#include "zmq_addon.hpp"

namespace herald::net {
namespace {

using internal::Bump;
using internal::Drop;
using internal::Read;

// The Error fields of a Publish refused as a whole before it was processed
// (docs/protocol.md): a client that asked no Ack for it can tell which.
v1::Error UnprocessedBatch(const v1::Publish& publish) {
  v1::Error e;
  e.set_batch_sequence(publish.batch_sequence());
  e.set_whole_batch(true);
  e.set_unprocessed(true);
  return e;
}

// Messages one subscription may send per loop turn, so that one busy
// subscription does not starve the others or the socket's input.
constexpr size_t kDeliverBatch = 64;
constexpr size_t kTurnBudget = 256;
// A plain message that a full SUB pipe refused is tried again after
// kPlainRetryMin, then after twice as long each time, up to kPlainRetryMax.
// A Deliver that a full client pipe refused (EAGAIN) is kept and retried
// the same way.
constexpr absl::Duration kPlainRetryMin = absl::Milliseconds(1);
constexpr absl::Duration kPlainRetryMax = absl::Milliseconds(16);
// How many incoming messages are handled per socket per loop turn.
constexpr int kReceiveBudget = 256;
// Frames read from the SDK endpoint per loop turn (a Publish carries one per
// entry): about one subscription's turn. Under overload the loop then
// shares its time between intake and delivery instead of taking in what it
// cannot deliver (to be dropped at full queues); the rest waits in ZeroMQ
// and TCP, which slows the publishers down.
constexpr size_t kIntakeFrameBudget = kTurnBudget + 3;
// Messages a session may send behind a Publish blocked by a full kBlock
// queue before further ones are refused (the SDK sends far fewer: one
// window of batches, plus control messages).
constexpr size_t kMaxHeldMessages = 1024;
// Frames ZeroMQ may hold per message sent: routing id, magic, envelope,
// payload. The ROUTER's send high-water mark is set from the credit cap so
// that it never binds (docs/protocol.md).
constexpr size_t kFramesPerDelivery = 4;
// Slack above max_message_bytes before libzmq drops a connection
// (ZMQ_MAXMSGSIZE): frames in between get an Error reply.
constexpr int64_t kHardCapSlack = int64_t{1} << 20;
// The plain subscribe endpoint's key in the ready set (sessions use >= 1).
constexpr uint64_t kPlainFeedKey = 0;
// The arena a received envelope is parsed onto keeps this first block
// across resets: room for a Publish of a few hundred entries.
constexpr size_t kInArenaBlockBytes = 64 * 1024;

google::protobuf::ArenaOptions InArenaOptions(
    std::array<char, kInArenaBlockBytes>& block) {
  google::protobuf::ArenaOptions options;
  options.initial_block = block.data();
  options.initial_block_size = block.size();
  options.max_block_size = kInArenaBlockBytes;
  return options;
}

// The plain subscribe endpoint's feed subscription.
SubscriptionOptions PlainFeedOptions(const ServerOptions& o,
                                     const BrokerOptions& broker) {
  SubscriptionOptions feed;
  feed.queue_capacity = o.plain_queue_capacity;
  feed.overflow = OverflowPolicy::kDropNewest;
  // Unused by kDropNewest, but checked against the broker's limit.
  feed.block_timeout = std::min(feed.block_timeout, broker.max_block_timeout);
  feed.name = "plain subscribe endpoint";
  return feed;
}

absl::Status ValidateOptions(const ServerOptions& o) {
  if (o.sdk_endpoint.empty() && o.publish_endpoint.empty() &&
      o.subscribe_endpoint.empty()) {
    return absl::InvalidArgumentError("server: every endpoint is empty");
  }
  if (o.max_clients == 0 || o.max_subscriptions_per_client == 0 ||
      o.max_queue_capacity_per_client == 0 || o.max_batch_messages == 0 ||
      o.max_credit == 0 || o.plain_queue_capacity == 0 ||
      o.max_held_bytes_per_client == 0) {
    return absl::InvalidArgumentError(
        "server: max_clients, max_subscriptions_per_client, "
        "max_queue_capacity_per_client, max_batch_messages, max_credit, "
        "plain_queue_capacity and max_held_bytes_per_client must be > 0");
  }
  if (o.session_ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("server: session_ttl must be > 0");
  }
  if (o.plain_feed_linger < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("server: plain_feed_linger must be >= 0");
  }
  return absl::OkStatus();
}

OverflowPolicy FromProto(v1::OverflowPolicy p, OverflowPolicy fallback) {
  switch (p) {
    case v1::OVERFLOW_POLICY_DROP_NEWEST:
      return OverflowPolicy::kDropNewest;
    case v1::OVERFLOW_POLICY_DROP_OLDEST:
      return OverflowPolicy::kDropOldest;
    case v1::OVERFLOW_POLICY_BLOCK:
      return OverflowPolicy::kBlock;
    default:
      return fallback;
  }
}

void FillTotals(const SubscriptionTotals& t, v1::SubscriptionStats* out) {
  out->set_matched(t.matched);
  out->set_delivered(t.delivered);
  internal::FillDropCounts(t.dropped_by_reason, out->mutable_dropped());
  out->set_queued(t.queued);
  out->set_abandoned(t.abandoned);
  out->set_high_water(t.high_water);
}

// Counters read by Stats() from any thread, written by the I/O thread.
struct Counters {
  std::atomic<uint64_t> sessions_active{0};
  std::atomic<uint64_t> sessions_opened{0};
  std::atomic<uint64_t> sessions_expired{0};
  std::atomic<uint64_t> sessions_closed{0};
  std::atomic<uint64_t> frames_received{0};
  std::atomic<uint64_t> frames_sent{0};
  std::atomic<uint64_t> bad_magic{0};
  std::atomic<uint64_t> unsupported_version{0};
  std::atomic<uint64_t> malformed{0};
  std::atomic<uint64_t> unknown_command{0};
  std::atomic<uint64_t> oversized{0};
  std::atomic<uint64_t> no_session{0};
  std::atomic<uint64_t> clients_refused{0};
  std::atomic<uint64_t> subscriptions_refused{0};
  std::atomic<uint64_t> publish_refused{0};
  std::atomic<uint64_t> publish_accepted{0};
  std::atomic<uint64_t> delivered{0};
  std::atomic<uint64_t> disconnects{0};
  std::atomic<uint64_t> plain_published{0};
  std::atomic<uint64_t> plain_refused{0};
  std::atomic<uint64_t> plain_delivered{0};
  std::atomic<uint64_t> send_failures{0};
  std::atomic<uint64_t> remote_subscriptions{0};
  std::atomic<uint64_t> plain_prefixes{0};
  std::atomic<uint64_t> plain_abandoned{0};
  std::atomic<uint64_t> deliveries_lost{0};
  std::atomic<uint64_t> sessions_detached{0};
  std::atomic<uint64_t> publishes_deferred{0};
  std::atomic<uint64_t> held_full{0};
};

// The bytes a message held behind a blocked publish counts against
// max_held_bytes_per_client: its frames after the routing id (which a
// resume rewrites).
size_t HeldBytes(const std::vector<zmq::message_t>& frames) {
  size_t bytes = 0;
  for (size_t i = 1; i < frames.size(); ++i) bytes += frames[i].size();
  return bytes;
}

absl::string_view View(const zmq::message_t& m) {
  return absl::string_view(static_cast<const char*>(m.data()), m.size());
}

}  // namespace

class Server::Impl {
 public:
  Impl(Broker* broker, ServerOptions options, uint64_t epoch)
      : broker_(broker),
        core_(internal::CoreOf(*broker)),
        options_(std::move(options)),
        epoch_(epoch),
        context_(1) {}

  ~Impl() {
    Stop(absl::Now());
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  absl::Status Bind(std::string* sdk, std::string* pub, std::string* sub);
  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }
  void StopIntake() {
    // Release: pairs with the acquire in Loop().
    intake_stopped_.store(true, std::memory_order_release);
    Wake();
  }
  void Stop(absl::Time deadline);
  v1::ServerStats Stats() const;

 private:
  struct RemoteSub {
    uint64_t key = 0;
    uint64_t sid = 0;
    Subscription subscription;
    uint64_t credit = 0;
    // Flow-control totals since the Subscribe, for a resume on a new
    // connection (ResumeOnNewConnection()).
    uint64_t initial_credit = 0;
    uint64_t sent = 0;
    uint64_t returned = 0;
    // The `missed` counts of the entries sent, summed (ResumeState's
    // missed_received).
    uint64_t missed_sent = 0;
    // Lost with a broken connection; added to the next entry's `missed`.
    uint64_t lost_pending = 0;
    // The Subscribe that made it, serialized: the same request again (a
    // client resending it after its Ack was lost with a connection) is
    // acknowledged again.
    std::string request;
    // A Deliver that ZeroMQ refused for a full pipe (EAGAIN): its messages
    // are taken from the core queue and booked as sent (credit, `sent`), so
    // it goes out before anything else of this subscription, when the pipe
    // has room (the key waits in `stalled_` meanwhile). Lost only if the
    // session or the subscription ends first.
    struct Unsent {
      std::string body;  // The serialized envelope.
      std::vector<zmq::message_t> payloads;
      uint64_t messages = 0;
      uint64_t missed = 0;  // The drops its entries report.
    };
    std::optional<Unsent> unsent;
    absl::Duration retry_backoff = absl::ZeroDuration();
    // Its queue's capacity, in the session's queue_capacity.
    size_t capacity = 0;
  };
  struct BlockedPublish {
    v1::Envelope env;
    std::vector<zmq::message_t> frames;
    int next_entry = 0;
    std::vector<internal::DeferredPush> deferred;
  };
  struct Session {
    std::string routing_id;
    std::string session_id;
    std::string client_name;  // From Hello.
    absl::Time last_seen;
    // Its connection is gone (a send found no peer): nothing is sent to it
    // until the client resumes it from a new connection (Hello), or it
    // expires. Its subscriptions keep queueing meanwhile.
    bool detached = false;
    // A Publish waiting for full kBlock queues (PublishEntries()), and what
    // the session sent after it, held in order (Credit and Goodbye are not
    // held).
    std::unique_ptr<BlockedPublish> blocked;
    std::deque<std::vector<zmq::message_t>> held;
    // Their frames' bytes after the routing id (max_held_bytes_per_client).
    size_t held_bytes = 0;
    absl::flat_hash_map<uint64_t, std::unique_ptr<RemoteSub>> subs;
    // The sum of its subscriptions' queue capacities
    // (max_queue_capacity_per_client).
    size_t queue_capacity = 0;
    // The last Publish batch processed, and how many batches and entries
    // were (the Ack's and Pong's publish progress).
    uint64_t last_batch = 0;
    uint64_t batches_processed = 0;
    uint64_t entries_processed = 0;
  };

  void Loop();
  void Wake();
  // The SDK endpoint.
  void HandleSdk(std::vector<zmq::message_t>& frames);
  void HandleHello(const std::string& routing_id, const v1::Envelope& env);
  void HandlePublish(Session& s, const v1::Envelope& env,
                     std::vector<zmq::message_t>& frames);
  // Publishes entries `first`.. of a Publish, then acknowledges it, unless
  // a push is deferred: then the session is blocked (see Session::blocked).
  void PublishEntries(Session& s, const v1::Envelope& env,
                      std::vector<zmq::message_t>& frames, int first);
  // Settles blocked sessions' deferred pushes and resumes what they held.
  void ServeBlocked();
  // Settles a Publish batch: Ack{acked_batch_sequence} if asked for.
  void SendBatchAck(Session& s, const v1::Envelope& env,
                    const v1::Publish& publish);
  void HandleSubscribe(Session& s, const v1::Envelope& env);
  void HandleUnsubscribe(Session& s, const v1::Envelope& env);
  void HandleCredit(Session& s, const v1::Envelope& env);
  // A session moved to a new connection: what the old one lost in transit
  // is counted and reported, and each subscription's credit is set again
  // from the client's counts.
  void ResumeOnNewConnection(Session& s, const v1::Hello& hello);
  void SendError(const std::string& routing_id, uint64_t request_id,
                 const absl::Status& status, v1::Error extra = {});
  // Sends envelope + payload frames; false if the peer is gone (the caller
  // ends the session) or the send failed (counted).
  // `*failed` (if given) says whether the message was not handed to ZeroMQ.
  bool Send(const std::string& routing_id, const v1::Envelope& env,
            std::vector<zmq::message_t>* payloads = nullptr,
            bool* failed = nullptr);
  // Send() of deliver_ and payloads_.
  bool SendDeliver(const std::string& routing_id, bool* failed);
  // Send()'s frames after the routing id and magic: `body` (a serialized
  // envelope) and `payloads`.
  bool SendFrames(const std::string& routing_id, absl::string_view body,
                  std::vector<zmq::message_t>* payloads, bool* failed);
  // `rs`'s unsent Deliver goes out: true if it did (or there was none).
  // Otherwise it is kept for a retry (EAGAIN: `rs` waits in stalled_), or
  // counted lost and the session detached (the peer is gone).
  bool SendUnsent(Session& s, RemoteSub& rs);
  // A Deliver of `n` messages reporting `missed` drops found `rs`'s peer
  // gone: rolled back, counted lost, and the session detached.
  void LoseToGonePeer(Session& s, RemoteSub& rs, uint64_t n, uint64_t missed);
  // `rs` is closing with a Deliver unsent: its messages are lost.
  void DropUnsent(RemoteSub& rs);
  // Puts the stalled subscriptions whose retry time came back in ready_;
  // returns the time of the next retry (InfiniteFuture: none).
  absl::Time RetryStalled();
  void CloseSession(const std::string& routing_id, bool expired);
  // Closes the sessions, and `also` (if given) in the same grace period.
  void CloseSessions(const std::vector<std::string>& routing_ids, bool expired,
                     Subscription* also = nullptr);
  // The session's peer is gone: see Session::detached.
  void Detach(const std::string& routing_id);
  void ExpireSessions();
  // Deliveries.
  void TakeReady();
  void DrainReady();
  // The payload frame of `message` for a Deliver: a copy of the pass's
  // shared frame (see frame_slots_), or its own.
  zmq::message_t PayloadFrameFor(const MessageRef& message);
  // Empties the drain pass's shared frames.
  void ForgetSharedFrames();
  // Returns true if `rs` should stay in the ready set.
  bool DrainSub(Session& s, RemoteSub& rs);
  // The plain endpoints.
  void HandlePlainPublish();
  // Reads the SUBs' subscription messages from the XPUB (which applies
  // them itself): the feed subscription opens when the first prefix comes
  // and MaybeClosePlainFeed() closes it plain_feed_linger after the last
  // one went.
  void HandlePlainSubscriptions();
  void MaybeClosePlainFeed();
  void FeedPlainSubscribers();
  void Shutdown();
  void SendGoodbyes();
  void NotifyReady(uint64_t key);
  bool plain_blocked() const { return plain_backoff_ > absl::ZeroDuration(); }

  Broker* const broker_;
  internal::BrokerCore& core_;
  const ServerOptions options_;
  const uint64_t epoch_;
  zmq::context_t context_;
  std::unique_ptr<zmq::socket_t> router_;
  std::unique_ptr<zmq::socket_t> xsub_;
  std::unique_ptr<zmq::socket_t> xpub_;
  std::unique_ptr<zmq::socket_t> monitor_;
  int wake_fd_ = -1;
  std::thread thread_;
  absl::Mutex stop_mu_;  // Serializes Stop().
  std::atomic<bool> stopping_{false};
  std::atomic<bool> intake_stopped_{false};
  mutable Counters counters_;

  // Keys of subscriptions that received messages, from publisher threads.
  absl::Mutex ready_mu_;
  std::vector<uint64_t> ready_incoming_ ABSL_GUARDED_BY(ready_mu_);

  // Everything below is confined to the I/O thread.
  absl::flat_hash_map<std::string, std::unique_ptr<Session>> sessions_;
  // key -> (routing id, sid) of remote subscriptions.
  absl::flat_hash_map<uint64_t, std::pair<std::string, uint64_t>> keys_;
  absl::flat_hash_set<uint64_t> ready_;
  // Subscriptions with an unsent Deliver (RemoteSub::unsent), by key, out of
  // ready_ until their retry time.
  absl::flat_hash_map<uint64_t, absl::Time> stalled_;
  // Sessions with a blocked Publish (Session::blocked).
  absl::flat_hash_set<std::string> blocked_sessions_;
  // ServeBlocked() is handing a held message to HandleSdk().
  bool replaying_held_ = false;
  uint64_t next_key_ = kPlainFeedKey + 1;
  bool goodbye_sent_ = false;
  absl::Time linger_until_ = absl::InfiniteFuture();
  absl::Time next_sweep_ = absl::InfinitePast();
  // The prefixes the plain SUBs subscribe to. The XPUB reports a prefix
  // when its first SUB subscribes and when its last one unsubscribes or
  // leaves, so this set holds the prefixes some SUB has.
  absl::flat_hash_set<std::string> plain_prefixes_;
  // The plain subscribe endpoint: its core subscription, open while
  // plain_prefixes_ is not empty and for plain_feed_linger after (so that
  // with no SUB a publish nobody else wants is unmatched), when it closes
  // (InfiniteFuture: not due), and what is popped from it but not yet sent
  // (XPUB_NODROP back-pressure).
  Subscription plain_feed_;
  absl::Time plain_feed_close_at_ = absl::InfiniteFuture();
  std::deque<Delivery> plain_pending_;
  // Nonzero while the XPUB refuses plain_pending_'s head (a SUB's pipe is
  // full): it is tried again at plain_retry_at_, and the backoff doubles up
  // to kPlainRetryMax while the pipe stays full. XPUB reports POLLOUT even
  // then, so waiting for POLLOUT would spin.
  absl::Duration plain_backoff_ = absl::ZeroDuration();
  absl::Time plain_retry_at_ = absl::InfinitePast();
  // Scratch reused by every call on the I/O thread, so that the hot paths
  // allocate nothing of their own once warm: the deliveries popped from a
  // core subscription, the Deliver (a cleared repeated field keeps its
  // entries and their strings for the next message) and the envelope it is
  // lent to for serializing (clearing an envelope's body would free the
  // Deliver: see SendDeliver()), its payload frames, the serialized
  // envelope, the received frames, and the ready keys of one drain pass.
  std::vector<Delivery> batch_;
  v1::Deliver deliver_;
  v1::Envelope deliver_env_;
  std::vector<zmq::message_t> payloads_;
  // One drain pass's payload frames by message, when more than one
  // subscription is ready: every subscription after the first sends a copy
  // (zmq_msg_copy shares the frame's refcounted content), so a message
  // fanned out to N remote subscribers costs one ZeroMQ content allocation,
  // freed once, instead of N. A direct-mapped cache by message address: no
  // allocation or rehash per pass (a hash map cleared at the end of every
  // pass gave back its table each time). A message whose slot was taken by
  // another one only gets a frame of its own. Each cached frame holds a
  // reference to its message, so no address is reused within a pass.
  // Emptied at the end of the pass (`frame_slots_used_`).
  struct SharedFrame {
    const Message* message = nullptr;
    zmq::message_t frame;
  };
  static constexpr size_t kFrameSlots = 1024;  // A power of two.
  std::vector<SharedFrame> frame_slots_ = std::vector<SharedFrame>(kFrameSlots);
  std::vector<uint32_t> frame_slots_used_;
  bool share_frames_ = false;
  std::string body_;
  std::vector<zmq::message_t> frames_;
  std::vector<uint64_t> ready_keys_;
  // A received envelope is parsed onto this arena, reset before each parse:
  // its entries, their string objects and the repeated fields' arrays land
  // in the retained first block (about 500 short entries' worth; a larger
  // batch adds blocks for that parse), not one allocation each. A string
  // longer than 15 bytes still puts its characters on the heap. (A reused
  // heap envelope would not do: parsing clears it first, which frees the
  // previous body and its entries.)
  alignas(16) std::array<char, kInArenaBlockBytes> in_block_;
  google::protobuf::Arena in_arena_{InArenaOptions(in_block_)};
};

absl::Status Server::Impl::Bind(std::string* sdk, std::string* pub,
                                std::string* sub) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    return absl::UnavailableError(
        absl::StrCat("server: eventfd: ", std::strerror(errno)));
  }
  const int64_t hard_cap =
      static_cast<int64_t>(broker_->options().max_message_bytes) +
      kHardCapSlack;
  const int linger =
      static_cast<int>(absl::ToInt64Milliseconds(options_.linger));
  auto bind = [&](zmq::socket_t& socket, const std::string& endpoint,
                  const char* what, std::string* bound) -> absl::Status {
    try {
      socket.set(zmq::sockopt::linger, linger);
      socket.bind(endpoint);
      *bound = socket.get(zmq::sockopt::last_endpoint);
    } catch (const zmq::error_t& e) {
      return absl::UnavailableError(absl::StrCat("server: cannot bind the ",
                                                 what, " endpoint \"", endpoint,
                                                 "\": ", e.what()));
    }
    return absl::OkStatus();
  };
  try {
    if (!options_.sdk_endpoint.empty()) {
      router_ =
          std::make_unique<zmq::socket_t>(context_, zmq::socket_type::router);
      router_->set(zmq::sockopt::router_mandatory, 1);
      router_->set(zmq::sockopt::maxmsgsize, hard_cap);
      const size_t hwm = std::max<size_t>(
          1000, options_.max_credit * options_.max_subscriptions_per_client *
                    kFramesPerDelivery * 2);
      router_->set(zmq::sockopt::sndhwm,
                   static_cast<int>(std::min<size_t>(hwm, 1 << 30)));
      router_->set(zmq::sockopt::rcvhwm, 100000);
      HERALD_RETURN_IF_ERROR(bind(*router_, options_.sdk_endpoint, "sdk", sdk));
      // Connections libzmq drops (a frame over ZMQ_MAXMSGSIZE among them)
      // are counted through the socket monitor.
      const std::string monitor_endpoint = absl::StrCat(
          "inproc://herald-monitor-", reinterpret_cast<uintptr_t>(this));
      if (zmq_socket_monitor(router_->handle(), monitor_endpoint.c_str(),
                             ZMQ_EVENT_DISCONNECTED) != 0) {
        return absl::UnavailableError(absl::StrCat("server: socket monitor: ",
                                                   zmq_strerror(zmq_errno())));
      }
      // cppzmq's monitor_t blocks in its own loop; a PAIR read by the I/O
      // thread takes the events instead.
      monitor_ =
          std::make_unique<zmq::socket_t>(context_, zmq::socket_type::pair);
      monitor_->set(zmq::sockopt::linger, 0);
      monitor_->connect(monitor_endpoint);
    }
    if (!options_.publish_endpoint.empty()) {
      xsub_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::xsub);
      xsub_->set(zmq::sockopt::maxmsgsize, hard_cap);
      HERALD_RETURN_IF_ERROR(
          bind(*xsub_, options_.publish_endpoint, "publish", pub));
      // Subscribe to everything upstream; XSUB resends it to every PUB that
      // connects later.
      const char subscribe_all = 1;
      (void)xsub_->send(zmq::const_buffer(&subscribe_all, 1),
                        zmq::send_flags::none);
    }
    if (!options_.subscribe_endpoint.empty()) {
      xpub_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::xpub);
      xpub_->set(zmq::sockopt::xpub_nodrop, 1);
      HERALD_RETURN_IF_ERROR(
          bind(*xpub_, options_.subscribe_endpoint, "subscribe", sub));
      // The feed subscription follows the SUBs' subscriptions (see
      // HandlePlainSubscriptions()).
    }
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("server: ", e.what()));
  }
  return absl::OkStatus();
}

// The server whose I/O thread this is, if any: set by Loop().
thread_local const void* serving_server = nullptr;

void Server::Impl::NotifyReady(uint64_t key) {
  if (serving_server == this) {
    // A publish made by this server's own I/O thread (from the network):
    // the ready set is its own, so no lock and no wake-up system call.
    ready_.insert(key);
    return;
  }
  bool wake;
  {
    absl::MutexLock lock(&ready_mu_);
    wake = ready_incoming_.empty();
    ready_incoming_.push_back(key);
  }
  if (wake) Wake();
}

void Server::Impl::Wake() {
  const uint64_t one = 1;
  // The counter saturating (EAGAIN) still leaves it readable: nothing lost.
  [[maybe_unused]] const ssize_t n = write(wake_fd_, &one, sizeof(one));
}

void Server::Impl::Stop(absl::Time deadline) {
  absl::MutexLock lock(&stop_mu_);
  if (!thread_.joinable()) return;
  // Read by the I/O thread after it sees stopping_ (release/acquire below).
  linger_until_ = deadline;
  StopIntake();
  // Release: pairs with the acquire in Loop(); publishes linger_until_.
  stopping_.store(true, std::memory_order_release);
  Wake();
  thread_.join();
}

void Server::Impl::Loop() {
  internal::EnsureThreadIdentity();
  internal::NameThisThread("herald-server");
  serving_server = this;
  std::vector<zmq::pollitem_t> items;
  const int router_index = router_ ? static_cast<int>(items.size()) : -1;
  if (router_) items.push_back({router_->handle(), 0, ZMQ_POLLIN, 0});
  const int xsub_index = xsub_ ? static_cast<int>(items.size()) : -1;
  if (xsub_) items.push_back({xsub_->handle(), 0, ZMQ_POLLIN, 0});
  const int xpub_index = xpub_ ? static_cast<int>(items.size()) : -1;
  if (xpub_) items.push_back({xpub_->handle(), 0, ZMQ_POLLIN, 0});
  const int monitor_index = monitor_ ? static_cast<int>(items.size()) : -1;
  if (monitor_) items.push_back({monitor_->handle(), 0, ZMQ_POLLIN, 0});
  const int wake_index = static_cast<int>(items.size());
  items.push_back({nullptr, wake_fd_, ZMQ_POLLIN, 0});

  while (!stopping_.load(std::memory_order_acquire)) {
    // Stalled subscriptions whose retry time came are ready again (and so
    // make this turn busy).
    absl::Time retry_at = RetryStalled();
    // A plain feed held back by a full SUB pipe is not work to do now: it
    // waits for its retry time.
    const size_t waiting =
        plain_blocked() && ready_.contains(kPlainFeedKey) ? 1 : 0;
    const bool busy = ready_.size() > waiting;
    // A blocked publish is retried every millisecond (ZeroMQ's poll
    // resolution) until its queue has room or its block_timeout passes.
    int idle_ms = blocked_sessions_.empty() ? 50 : 1;
    if (plain_blocked()) retry_at = std::min(retry_at, plain_retry_at_);
    if (retry_at != absl::InfiniteFuture()) {
      const int64_t until_retry = absl::ToInt64Milliseconds(
          absl::Ceil(retry_at - absl::Now(), absl::Milliseconds(1)));
      idle_ms = static_cast<int>(
          std::clamp<int64_t>(until_retry, 0, static_cast<int64_t>(idle_ms)));
    }
    try {
      zmq::poll(items.data(), items.size(),
                std::chrono::milliseconds(busy ? 0 : idle_ms));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      break;  // The context is gone: nothing more can be served.
    }
    if (items[wake_index].revents & ZMQ_POLLIN) {
      uint64_t value;
      [[maybe_unused]] const ssize_t n = read(wake_fd_, &value, sizeof(value));
    }
    TakeReady();
    if (router_index >= 0) {
      size_t frames_taken = 0;
      for (int i = 0; i < kReceiveBudget && frames_taken < kIntakeFrameBudget;
           ++i) {
        frames_.clear();
        zmq::recv_result_t got;
        try {
          got = zmq::recv_multipart(*router_, std::back_inserter(frames_),
                                    zmq::recv_flags::dontwait);
        } catch (const zmq::error_t&) {
          break;
        }
        if (!got) break;
        Bump(counters_.frames_received, frames_.size());
        frames_taken += frames_.size();
        HandleSdk(frames_);
      }
      frames_.clear();  // Releases the last message's frames now.
    }
    if (xsub_index >= 0) HandlePlainPublish();
    if (xpub_index >= 0) HandlePlainSubscriptions();
    if (monitor_index >= 0) {
      for (int i = 0; i < kReceiveBudget; ++i) {
        zmq::message_t event;
        if (!monitor_->recv(event, zmq::recv_flags::dontwait)) break;
        zmq::message_t address;
        if (event.more()) {
          [[maybe_unused]] auto r = monitor_->recv(address);
        }
        Bump(counters_.disconnects);
      }
    }
    if (!goodbye_sent_ && intake_stopped_.load(std::memory_order_acquire)) {
      SendGoodbyes();
    }
    ServeBlocked();
    DrainReady();
    if (xpub_index >= 0) {
      FeedPlainSubscribers();
      MaybeClosePlainFeed();
    }
    ExpireSessions();
  }
  Shutdown();
}

void Server::Impl::TakeReady() {
  std::vector<uint64_t> incoming;
  {
    absl::MutexLock lock(&ready_mu_);
    incoming.swap(ready_incoming_);
  }
  for (uint64_t key : incoming) ready_.insert(key);
}

// ----------------------------------------------------------- SDK endpoint

bool Server::Impl::Send(const std::string& routing_id, const v1::Envelope& env,
                        std::vector<zmq::message_t>* payloads, bool* failed) {
  if (failed != nullptr) *failed = true;  // Until ZeroMQ takes the message.
  if (!env.SerializeToString(&body_)) {
    Bump(counters_.send_failures);
    return true;
  }
  return SendFrames(routing_id, body_, payloads, failed);
}

bool Server::Impl::SendFrames(const std::string& routing_id,
                              absl::string_view body,
                              std::vector<zmq::message_t>* payloads,
                              bool* failed) {
  if (failed != nullptr) *failed = true;  // Until ZeroMQ takes the message.
  const std::string magic = MagicFrame();
  try {
    const bool has_payloads = payloads != nullptr && !payloads->empty();
    auto sent =
        router_->send(zmq::buffer(routing_id),
                      zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    if (!sent) {
      Bump(counters_.send_failures);
      return true;
    }
    // Once the first frame is accepted, ZeroMQ takes the rest of the message.
    if (failed != nullptr) *failed = false;
    (void)router_->send(zmq::buffer(magic), zmq::send_flags::sndmore);
    (void)router_->send(
        zmq::buffer(body.data(), body.size()),
        has_payloads ? zmq::send_flags::sndmore : zmq::send_flags::none);
    size_t frames = 3;
    if (has_payloads) {
      for (size_t i = 0; i < payloads->size(); ++i) {
        (void)router_->send((*payloads)[i], i + 1 < payloads->size()
                                                ? zmq::send_flags::sndmore
                                                : zmq::send_flags::none);
      }
      frames += payloads->size();
    }
    Bump(counters_.frames_sent, frames);
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return false;  // The peer is gone.
    Bump(counters_.send_failures);
  }
  return true;
}

bool Server::Impl::SendDeliver(const std::string& routing_id, bool* failed) {
  // Lent to the envelope only while it is serialized (and taken back on
  // every way out): an envelope that owns its body frees it when cleared,
  // and with it every entry.
  deliver_env_.set_allocated_deliver(&deliver_);
  absl::Cleanup take_back = [this] { (void)deliver_env_.release_deliver(); };
  return Send(routing_id, deliver_env_, &payloads_, failed);
}

void Server::Impl::SendError(const std::string& routing_id, uint64_t request_id,
                             const absl::Status& status, v1::Error extra) {
  v1::Envelope env;
  env.set_request_id(request_id);
  v1::Error* error = env.mutable_error();
  *error = std::move(extra);
  error->set_status_code(static_cast<int32_t>(status.code()));
  error->set_message(std::string(status.message()));
  Send(routing_id, env);
}

void Server::Impl::HandleSdk(std::vector<zmq::message_t>& frames) {
  if (frames.empty()) return;
  const std::string routing_id = frames[0].to_string();
  if (frames.size() < 3) {
    // Too short to be ours; if frame 1 carries our magic, say why.
    if (frames.size() == 2 && CheckMagic(View(frames[1])).ok()) {
      Bump(counters_.malformed);
      SendError(
          routing_id, 0,
          absl::InvalidArgumentError("frame: no envelope after the magic"));
    } else {
      Bump(counters_.bad_magic);
    }
    return;
  }
  if (absl::Status magic = CheckMagic(View(frames[1])); !magic.ok()) {
    if (magic.code() == absl::StatusCode::kUnimplemented) {
      Bump(counters_.unsupported_version);
      SendError(routing_id, 0, magic);
    } else {
      Bump(counters_.bad_magic);  // A foreign peer: no reply.
    }
    return;
  }
  const uint64_t hard_limit = broker_->options().max_message_bytes;
  for (size_t i = 3; i < frames.size(); ++i) {
    if (frames[i].size() > hard_limit) {
      Bump(counters_.oversized);
      SendError(routing_id, 0,
                absl::InvalidArgumentError(absl::StrCat(
                    "frame ", i - 1, ": ", frames[i].size(),
                    " bytes is over max_message_bytes (", hard_limit, ")")));
      return;
    }
  }
  // Parsed onto the reset arena (see in_arena_): the previous message's
  // envelope is gone from here on.
  in_arena_.Reset();
  v1::Envelope& env =
      *google::protobuf::Arena::CreateMessage<v1::Envelope>(&in_arena_);
  if (!env.ParseFromArray(frames[2].data(),
                          static_cast<int>(frames[2].size()))) {
    Bump(counters_.malformed);
    SendError(routing_id, 0,
              absl::InvalidArgumentError("frame 1: not a herald.v1.Envelope"));
    return;
  }
  if (env.body_case() == v1::Envelope::BODY_NOT_SET) {
    Bump(counters_.unknown_command);
    SendError(routing_id, env.request_id(),
              absl::UnimplementedError("envelope: unknown or missing command"));
    return;
  }
  const bool intake_stopped = intake_stopped_.load(std::memory_order_acquire);
  if (env.body_case() == v1::Envelope::kHello) {
    if (intake_stopped) {
      SendError(routing_id, env.request_id(),
                absl::UnavailableError("hello: the server is stopping"));
      return;
    }
    HandleHello(routing_id, env);
    return;
  }
  auto it = sessions_.find(routing_id);
  if (it == sessions_.end()) {
    Bump(counters_.no_session);
    v1::Error marker;
    marker.set_no_session(true);
    SendError(routing_id, env.request_id(),
              absl::FailedPreconditionError("no session: send hello first"),
              std::move(marker));
    return;
  }
  Session& session = *it->second;
  session.last_seen = absl::Now();
  const bool behind_block =
      session.blocked != nullptr || (!session.held.empty() && !replaying_held_);
  // Only behind a blocked publish: what this message would hold.
  const size_t bytes = behind_block ? HeldBytes(frames) : 0;
  const bool held_full =
      behind_block &&
      (session.held.size() >= kMaxHeldMessages ||
       bytes > options_.max_held_bytes_per_client - session.held_bytes);
  if (behind_block && env.body_case() != v1::Envelope::kCredit &&
      env.body_case() != v1::Envelope::kGoodbye &&
      !(env.body_case() == v1::Envelope::kPing && env.ping().heartbeat()) &&
      !(held_full && env.body_case() == v1::Envelope::kUnsubscribe)) {
    // Behind a blocked Publish: in order, after it (ServeBlocked()). Credit
    // is not held: deliveries that make room may need it; nor is a
    // heartbeat, which keeps the client from giving the session up; nor,
    // once the held messages are full, an Unsubscribe: refused, it would
    // leave the subscription, which the client forgets, to the end of the
    // session, so it is done at once, ahead of them.
    if (held_full) {
      Bump(counters_.held_full);
      v1::Error where;
      if (env.body_case() == v1::Envelope::kPublish) {
        // Per entry, as HandlePublish() counts refusals.
        Bump(counters_.publish_refused,
             std::max<uint64_t>(1, env.publish().entries_size()));
        where = UnprocessedBatch(env.publish());
      }
      SendError(
          routing_id, env.request_id(),
          absl::ResourceExhaustedError(
              session.held.size() >= kMaxHeldMessages
                  ? absl::StrCat("session: ", kMaxHeldMessages,
                                 " messages already wait behind a publish "
                                 "blocked by a full kBlock queue")
                  : absl::StrCat(
                        "session: ", session.held_bytes,
                        " bytes wait behind "
                        "a publish blocked by a full kBlock queue; ",
                        bytes,
                        " more would be over max_held_bytes_per_client (",
                        options_.max_held_bytes_per_client, ")")),
          std::move(where));
      return;
    }
    session.held_bytes += bytes;
    session.held.push_back(std::move(frames));
    return;
  }
  const size_t payload_frames = frames.size() - 3;
  if (env.body_case() != v1::Envelope::kPublish && payload_frames != 0) {
    Bump(counters_.malformed);
    SendError(routing_id, env.request_id(),
              absl::InvalidArgumentError(absl::StrCat(
                  "envelope: ", payload_frames,
                  " payload frames with a command that carries none")));
    return;
  }
  if (intake_stopped && (env.body_case() == v1::Envelope::kPublish ||
                         env.body_case() == v1::Envelope::kSubscribe)) {
    v1::Error where;
    if (env.body_case() == v1::Envelope::kPublish) {
      // Per entry, as HandlePublish() counts refusals.
      Bump(counters_.publish_refused,
           std::max<uint64_t>(1, env.publish().entries_size()));
      where = UnprocessedBatch(env.publish());
    } else {
      Bump(counters_.subscriptions_refused);
      where.set_sid(env.subscribe().sid());
    }
    SendError(routing_id, env.request_id(),
              absl::UnavailableError("the server is stopping"),
              std::move(where));
    return;
  }
  switch (env.body_case()) {
    case v1::Envelope::kPublish:
      HandlePublish(session, env, frames);
      break;
    case v1::Envelope::kSubscribe:
      HandleSubscribe(session, env);
      break;
    case v1::Envelope::kUnsubscribe:
      HandleUnsubscribe(session, env);
      break;
    case v1::Envelope::kCredit:
      HandleCredit(session, env);
      break;
    case v1::Envelope::kPing: {
      v1::Envelope pong;
      pong.set_request_id(env.request_id());
      v1::Pong* p = pong.mutable_pong();
      p->set_acked_batch_sequence(session.last_batch);
      p->set_batches_processed(session.batches_processed);
      p->set_entries_processed(session.entries_processed);
      if (!Send(routing_id, pong)) Detach(routing_id);
      break;
    }
    case v1::Envelope::kStatsRequest: {
      v1::Envelope reply;
      reply.set_request_id(env.request_id());
      *reply.mutable_stats_reply()->mutable_broker() = broker_->Stats();
      *reply.mutable_stats_reply()->mutable_server() = Stats();
      if (!Send(routing_id, reply)) Detach(routing_id);
      break;
    }
    case v1::Envelope::kGoodbye:
      CloseSession(routing_id, false);
      break;
    case v1::Envelope::kPong:
      break;  // An answer to nothing we asked: liveness only.
    default:
      // Server-to-client commands (Welcome, Ack, Error, Deliver, ...).
      Bump(counters_.unknown_command);
      SendError(routing_id, env.request_id(),
                absl::UnimplementedError(absl::StrCat(
                    "envelope: command ", static_cast<int>(env.body_case()),
                    " is not for the server")));
      break;
  }
}

void Server::Impl::HandleHello(const std::string& routing_id,
                               const v1::Envelope& env) {
  const v1::Hello& hello = env.hello();
  if (hello.protocol_version() != kProtocolVersion) {
    Bump(counters_.unsupported_version);
    SendError(
        routing_id, env.request_id(),
        absl::UnimplementedError(absl::StrCat(
            "hello: protocol version ", hello.protocol_version(),
            " is not supported (this server speaks ", kProtocolVersion, ")")));
    return;
  }
  bool resumed = false;
  bool resume_applied = false;
  auto it = sessions_.find(routing_id);
  if (it != sessions_.end()) {
    resumed = it->second->session_id == hello.session_id();
    if (!resumed) CloseSession(routing_id, false);
  } else if (!hello.session_id().empty()) {
    // The same client on a new connection: move its session over.
    for (auto& [rid, s] : sessions_) {
      if (s->session_id != hello.session_id()) continue;
      std::unique_ptr<Session> moved = std::move(s);
      const std::string old_routing_id = rid;
      sessions_.erase(old_routing_id);
      moved->routing_id = routing_id;
      for (auto& [sid, rs] : moved->subs) keys_[rs->key].first = routing_id;
      // What waits behind a blocked publish moves with the session.
      for (std::vector<zmq::message_t>& held : moved->held) {
        held[0] = zmq::message_t(routing_id.data(), routing_id.size());
      }
      if (blocked_sessions_.erase(old_routing_id) > 0) {
        blocked_sessions_.insert(routing_id);
      }
      ResumeOnNewConnection(*moved, hello);
      resume_applied = true;
      sessions_.emplace(routing_id, std::move(moved));
      resumed = true;
      break;
    }
  }
  if (!resumed && sessions_.find(routing_id) == sessions_.end()) {
    if (sessions_.size() >= options_.max_clients) {
      Bump(counters_.clients_refused);
      SendError(routing_id, env.request_id(),
                absl::ResourceExhaustedError(absl::StrCat(
                    "hello: the server already has ", options_.max_clients,
                    " clients (max_clients)")));
      return;
    }
    auto session = std::make_unique<Session>();
    session->routing_id = routing_id;
    session->session_id = hello.session_id();
    session->client_name = hello.client_name();
    sessions_.emplace(routing_id, std::move(session));
    Bump(counters_.sessions_opened);
    counters_.sessions_active.store(sessions_.size(),
                                    std::memory_order_relaxed);
  }
  Session& session = *sessions_[routing_id];
  session.last_seen = absl::Now();
  if (session.detached) {
    // Reachable again: what queued meanwhile goes out within credit.
    session.detached = false;
    for (auto& [sid, rs] : session.subs) {
      stalled_.erase(rs->key);
      rs->retry_backoff = absl::ZeroDuration();
      ready_.insert(rs->key);
    }
  }
  v1::Envelope reply;
  reply.set_request_id(env.request_id());
  v1::Welcome* w = reply.mutable_welcome();
  w->set_broker_epoch(epoch_);
  w->set_max_message_bytes(broker_->options().max_message_bytes);
  w->set_max_subscriptions(
      static_cast<uint32_t>(options_.max_subscriptions_per_client));
  w->set_session_ttl_ms(
      static_cast<uint32_t>(absl::ToInt64Milliseconds(options_.session_ttl)));
  w->set_max_batch_messages(static_cast<uint32_t>(options_.max_batch_messages));
  w->set_max_credit(options_.max_credit);
  w->set_resumed(resumed);
  w->set_publish_progress(true);
  w->set_resume_applied(resume_applied);
  if (!Send(routing_id, reply)) Detach(routing_id);
}

void Server::Impl::HandlePublish(Session& s, const v1::Envelope& env,
                                 std::vector<zmq::message_t>& frames) {
  const v1::Publish& publish = env.publish();
  const size_t payloads = frames.size() - 3;
  v1::Error where;
  where.set_batch_sequence(publish.batch_sequence());
  // Refuses the whole batch, then settles it with the usual Ack.
  auto refuse_batch = [&](const absl::Status& status) {
    Bump(counters_.malformed);
    v1::Error whole = where;
    whole.set_whole_batch(true);
    SendError(s.routing_id, env.request_id(), status, std::move(whole));
    SendBatchAck(s, env, publish);
  };
  if (static_cast<size_t>(publish.entries_size()) != payloads) {
    refuse_batch(absl::InvalidArgumentError(
        absl::StrCat("publish: ", publish.entries_size(), " entries but ",
                     payloads, " payload frames")));
    return;
  }
  if (payloads > options_.max_batch_messages) {
    refuse_batch(absl::InvalidArgumentError(absl::StrCat(
        "publish: ", payloads, " entries is over max_batch_messages (",
        options_.max_batch_messages, ")")));
    return;
  }
  PublishEntries(s, env, frames, /*first=*/0);
}

void Server::Impl::PublishEntries(Session& s, const v1::Envelope& env,
                                  std::vector<zmq::message_t>& frames,
                                  int first) {
  const v1::Publish& publish = env.publish();
  Headers headers;
  std::vector<internal::DeferredPush> deferred;
  // The entries enter the broker together: one clock read stamps them all
  // (their publish_time; a batch resumed after a block is stamped anew).
  const absl::Time entered = absl::Now();
  for (int i = first; i < publish.entries_size(); ++i) {
    const v1::PublishEntry& entry = publish.entries(i);
    headers.clear();
    for (const v1::Header& h : entry.headers()) {
      headers.push_back({h.key(), h.value()});
    }
    const zmq::message_t& payload = frames[3 + i];
    absl::StatusOr<PublishResult> r = core_.PublishFromNetwork(
        entry.topic(), View(payload), headers, &deferred, entered);
    if (!r.ok()) {
      Bump(counters_.publish_refused);
      v1::Error e;
      e.set_batch_sequence(publish.batch_sequence());
      e.set_entry_index(static_cast<uint32_t>(i));
      SendError(s.routing_id, env.request_id(), r.status(), e);
      continue;
    }
    Bump(counters_.publish_accepted);
    if (!deferred.empty()) {
      // A full kBlock queue: the rest of the batch, its Ack and whatever
      // this session sends next wait until the push settles (ServeBlocked()).
      // The client gets no Ack meanwhile, so it sends no more batches than
      // its window: back-pressure without the I/O thread waiting.
      auto b = std::make_unique<BlockedPublish>();
      b->env = env;
      b->frames = std::move(frames);
      b->next_entry = i + 1;
      b->deferred = std::move(deferred);
      s.blocked = std::move(b);
      blocked_sessions_.insert(s.routing_id);
      Bump(counters_.publishes_deferred);
      return;
    }
  }
  SendBatchAck(s, env, publish);
}

void Server::Impl::ServeBlocked() {
  if (blocked_sessions_.empty()) return;
  const absl::Time now = absl::Now();
  std::vector<std::string> ids(blocked_sessions_.begin(),
                               blocked_sessions_.end());
  for (const std::string& rid : ids) {
    auto it = sessions_.find(rid);
    if (it == sessions_.end() || it->second->blocked == nullptr) {
      blocked_sessions_.erase(rid);
      continue;
    }
    Session& session = *it->second;
    BlockedPublish& b = *session.blocked;
    std::erase_if(b.deferred, [this, now](internal::DeferredPush& d) {
      return !core_.SettleDeferred(d, /*give_up=*/now >= d.deadline).deferred;
    });
    if (!b.deferred.empty()) continue;
    // Settled: the rest of the batch, then what the session sent since, in
    // order, until something blocks again.
    std::unique_ptr<BlockedPublish> done = std::move(session.blocked);
    blocked_sessions_.erase(rid);
    PublishEntries(session, done->env, done->frames, done->next_entry);
    while (true) {
      // Looked up again each time: a handler may end the session.
      auto again = sessions_.find(rid);
      if (again == sessions_.end()) break;
      Session& s = *again->second;
      if (s.blocked != nullptr || s.held.empty()) break;
      std::vector<zmq::message_t> frames = std::move(s.held.front());
      s.held.pop_front();
      s.held_bytes -= HeldBytes(frames);
      replaying_held_ = true;
      HandleSdk(frames);
      replaying_held_ = false;
    }
  }
}

void Server::Impl::SendBatchAck(Session& s, const v1::Envelope& env,
                                const v1::Publish& publish) {
  s.last_batch = std::max(s.last_batch, publish.batch_sequence());
  ++s.batches_processed;
  s.entries_processed += static_cast<uint64_t>(publish.entries_size());
  if (env.request_id() == 0) return;
  v1::Envelope ack;
  ack.set_request_id(env.request_id());
  ack.mutable_ack()->set_acked_batch_sequence(s.last_batch);
  ack.mutable_ack()->set_broker_epoch(epoch_);
  ack.mutable_ack()->set_batches_processed(s.batches_processed);
  ack.mutable_ack()->set_entries_processed(s.entries_processed);
  if (!Send(s.routing_id, ack)) Detach(s.routing_id);
}

void Server::Impl::HandleSubscribe(Session& s, const v1::Envelope& env) {
  const v1::Subscribe& req = env.subscribe();
  v1::Error where;
  where.set_sid(req.sid());
  auto refuse = [&](const absl::Status& status) {
    Bump(counters_.subscriptions_refused);
    SendError(s.routing_id, env.request_id(), status, where);
  };
  if (auto it = s.subs.find(req.sid()); it != s.subs.end()) {
    // The same Subscribe again: a client that lost the Ack with a broken
    // connection cannot know whether the first one arrived, so it resends
    // it. It is the same subscription: acknowledged again, nothing changes
    // (its credit was set again by the resume).
    if (it->second->request == req.SerializeAsString()) {
      v1::Envelope ack;
      ack.set_request_id(env.request_id());
      ack.mutable_ack()->set_sid(req.sid());
      ack.mutable_ack()->set_broker_epoch(epoch_);
      if (!Send(s.routing_id, ack)) Detach(s.routing_id);
      return;
    }
    refuse(absl::AlreadyExistsError(
        absl::StrCat("subscribe: sid ", req.sid(),
                     " is already in use by a different subscription")));
    return;
  }
  if (s.subs.size() >= options_.max_subscriptions_per_client) {
    refuse(absl::ResourceExhaustedError(
        absl::StrCat("subscribe: the session already has ",
                     options_.max_subscriptions_per_client,
                     " subscriptions (max_subscriptions_per_client)")));
    return;
  }
  if (req.initial_credit() == 0 || req.initial_credit() > options_.max_credit) {
    refuse(absl::InvalidArgumentError(absl::StrCat(
        "subscribe: initial_credit ", req.initial_credit(), " must be in [1, ",
        options_.max_credit, "] (max_credit)")));
    return;
  }
  // The core checks the capacity against max_queue_capacity; the session's
  // total is checked here.
  const size_t capacity = req.capacity() != 0
                              ? req.capacity()
                              : broker_->options().default_queue_capacity;
  if (capacity <= broker_->options().max_queue_capacity &&
      s.queue_capacity + capacity > options_.max_queue_capacity_per_client) {
    refuse(absl::ResourceExhaustedError(
        absl::StrCat("subscribe: a queue of ", capacity,
                     " messages would take the session's queues to ",
                     s.queue_capacity + capacity, " messages, over ",
                     options_.max_queue_capacity_per_client,
                     " (max_queue_capacity_per_client)")));
    return;
  }
  SubscriptionOptions o;
  if (req.capacity() != 0) o.queue_capacity = req.capacity();
  o.overflow = FromProto(req.overflow(), broker_->options().default_overflow);
  if (req.block_timeout_ms() != 0) {
    o.block_timeout = absl::Milliseconds(req.block_timeout_ms());
  }
  o.queue_group = req.queue_group();
  o.name = !req.name().empty()
               ? req.name()
               : absl::StrCat(s.client_name.empty() ? "remote" : s.client_name,
                              " sid ", req.sid());
  const uint64_t key = next_key_++;
  absl::StatusOr<Subscription> sub = core_.Subscribe(
      req.pattern(), o, nullptr, [this, key] { NotifyReady(key); });
  if (!sub.ok()) {
    refuse(sub.status());
    return;
  }
  auto rs = std::make_unique<RemoteSub>();
  rs->key = key;
  rs->sid = req.sid();
  rs->subscription = std::move(*sub);
  rs->credit = req.initial_credit();
  rs->initial_credit = req.initial_credit();
  rs->request = req.SerializeAsString();
  rs->capacity = capacity;
  s.queue_capacity += capacity;
  keys_[key] = {s.routing_id, req.sid()};
  s.subs.emplace(req.sid(), std::move(rs));
  Bump(counters_.remote_subscriptions);
  v1::Envelope ack;
  ack.set_request_id(env.request_id());
  ack.mutable_ack()->set_sid(req.sid());
  ack.mutable_ack()->set_broker_epoch(epoch_);
  if (!Send(s.routing_id, ack)) Detach(s.routing_id);
}

void Server::Impl::HandleUnsubscribe(Session& s, const v1::Envelope& env) {
  const uint64_t sid = env.unsubscribe().sid();
  auto it = s.subs.find(sid);
  if (it == s.subs.end()) {
    v1::Error where;
    where.set_sid(sid);
    SendError(s.routing_id, env.request_id(),
              absl::NotFoundError(absl::StrCat("unsubscribe: no sid ", sid)),
              where);
    return;
  }
  absl::StatusOr<SubscriptionTotals> totals = it->second->subscription.Close();
  DropUnsent(*it->second);
  s.queue_capacity -= it->second->capacity;
  Drop(counters_.remote_subscriptions);
  keys_.erase(it->second->key);
  ready_.erase(it->second->key);
  s.subs.erase(it);
  v1::Envelope ack;
  ack.set_request_id(env.request_id());
  ack.mutable_ack()->set_sid(sid);
  ack.mutable_ack()->set_broker_epoch(epoch_);
  if (totals.ok()) FillTotals(*totals, ack.mutable_ack()->mutable_totals());
  if (!Send(s.routing_id, ack)) Detach(s.routing_id);
}

void Server::Impl::HandleCredit(Session& s, const v1::Envelope& env) {
  const v1::Credit& credit = env.credit();
  auto it = s.subs.find(credit.sid());
  if (it == s.subs.end()) {
    v1::Error where;
    where.set_sid(credit.sid());
    SendError(
        s.routing_id, env.request_id(),
        absl::NotFoundError(absl::StrCat("credit: no sid ", credit.sid())),
        where);
    return;
  }
  RemoteSub& rs = *it->second;
  rs.returned += credit.messages();
  // rs.credit <= max_credit always; compared so that no sum can wrap.
  if (credit.messages() > options_.max_credit - rs.credit) {
    v1::Error where;
    where.set_sid(credit.sid());
    Bump(counters_.malformed);
    SendError(
        s.routing_id, env.request_id(),
        absl::InvalidArgumentError(absl::StrCat(
            "credit: ", credit.messages(), " returned on top of ", rs.credit,
            " held is over max_credit (", options_.max_credit, ")")),
        where);
    rs.credit = options_.max_credit;
  } else {
    rs.credit += credit.messages();
  }
  ready_.insert(rs.key);  // Messages may be waiting for this credit.
}

void Server::Impl::ResumeOnNewConnection(Session& s, const v1::Hello& hello) {
  for (const v1::ResumeState& r : hello.resume()) {
    auto it = s.subs.find(r.sid());
    if (it == s.subs.end()) continue;  // Closed meanwhile: nothing to fix.
    RemoteSub& rs = *it->second;
    // The old connection's pipes are gone with it, so nothing more of it
    // arrives: what was sent and not received is lost, and credit sent back
    // but lost is the client's again. A Credit still queued from the old
    // connection carries the old routing id and finds no session. An unsent
    // Deliver never left: it goes out on the new connection.
    const uint64_t unsent = rs.unsent ? rs.unsent->messages : 0;
    const uint64_t on_wire = rs.sent - unsent;
    if (on_wire > r.received()) {
      const uint64_t lost = on_wire - r.received();
      rs.lost_pending += lost;
      Bump(counters_.deliveries_lost, lost);
    }
    rs.sent = std::min(on_wire, r.received()) + unsent;
    // The drops those lost Delivers reported are reported again.
    const uint64_t unsent_missed = rs.unsent ? rs.unsent->missed : 0;
    const uint64_t missed_on_wire = rs.missed_sent - unsent_missed;
    // (A client that does not send missed_received is not told again.)
    const uint64_t missed_received =
        r.has_missed_received() ? r.missed_received() : missed_on_wire;
    if (missed_on_wire > missed_received) {
      rs.lost_pending += missed_on_wire - missed_received;
    }
    rs.missed_sent = std::min(missed_on_wire, missed_received) + unsent_missed;
    if (rs.unsent && rs.lost_pending > 0) {
      // The lost ones came before the unsent Deliver: it reports them.
      v1::Envelope env;
      if (env.ParseFromString(rs.unsent->body) &&
          env.deliver().entries_size() > 0) {
        v1::DeliverEntry* first = env.mutable_deliver()->mutable_entries(0);
        first->set_missed(first->missed() + rs.lost_pending);
        rs.unsent->missed += rs.lost_pending;
        rs.missed_sent += rs.lost_pending;
        rs.lost_pending = 0;
        rs.unsent->body = env.SerializeAsString();
      }
    }
    rs.returned = std::max(rs.returned, r.returned());
    const uint64_t granted = rs.initial_credit + rs.returned;
    rs.credit = granted > rs.sent
                    ? std::min(granted - rs.sent, options_.max_credit)
                    : 0;
    // A new connection, a new pipe: an unsent Deliver is tried at once.
    stalled_.erase(rs.key);
    rs.retry_backoff = absl::ZeroDuration();
    ready_.insert(rs.key);  // Messages may be waiting for this credit.
  }
}

void Server::Impl::CloseSession(const std::string& routing_id, bool expired) {
  CloseSessions({routing_id}, expired);
}

void Server::Impl::CloseSessions(const std::vector<std::string>& routing_ids,
                                 bool expired, Subscription* also) {
  if (routing_ids.empty() && also == nullptr) return;
  // Their subscriptions close together: one grace period for them all, so
  // that closing many sessions (Stop()) is not one grace period each.
  std::vector<Subscription*> subscriptions;
  if (also != nullptr) subscriptions.push_back(also);
  for (const std::string& rid : routing_ids) {
    auto it = sessions_.find(rid);
    if (it == sessions_.end()) continue;
    for (auto& [sid, rs] : it->second->subs) {
      subscriptions.push_back(&rs->subscription);
    }
  }
  // The totals stay in the broker's stats (closed_*).
  core_.CloseTogether(subscriptions);
  for (const std::string& rid : routing_ids) {
    auto it = sessions_.find(rid);
    if (it == sessions_.end() || it->second->blocked == nullptr) continue;
    // The publisher is gone: its deferred pushes give up (kBlockTimeout),
    // unless there is room now.
    for (internal::DeferredPush& d : it->second->blocked->deferred) {
      core_.SettleDeferred(d, /*give_up=*/true);
    }
    blocked_sessions_.erase(rid);
  }
  for (const std::string& rid : routing_ids) {
    auto it = sessions_.find(rid);
    if (it == sessions_.end()) continue;
    for (auto& [sid, rs] : it->second->subs) {
      DropUnsent(*rs);
      Drop(counters_.remote_subscriptions);
      keys_.erase(rs->key);
      ready_.erase(rs->key);
    }
    sessions_.erase(it);
    Bump(expired ? counters_.sessions_expired : counters_.sessions_closed);
  }
  counters_.sessions_active.store(sessions_.size(), std::memory_order_relaxed);
}

void Server::Impl::Detach(const std::string& routing_id) {
  auto it = sessions_.find(routing_id);
  if (it == sessions_.end() || it->second->detached) return;
  it->second->detached = true;
  for (auto& [sid, rs] : it->second->subs) ready_.erase(rs->key);
  Bump(counters_.sessions_detached);
}

void Server::Impl::ExpireSessions() {
  const absl::Time now = absl::Now();
  if (now < next_sweep_) return;
  next_sweep_ =
      now + std::min(options_.session_ttl / 4, absl::Milliseconds(100));
  std::vector<std::string> expired;
  for (const auto& [rid, s] : sessions_) {
    if (now - s->last_seen > options_.session_ttl) expired.push_back(rid);
  }
  if (!expired.empty()) CloseSessions(expired, /*expired=*/true);
}

// ------------------------------------------------------------ deliveries

zmq::message_t Server::Impl::PayloadFrameFor(const MessageRef& message) {
  if (!share_frames_) return PayloadFrame(message);
  // Fibonacci hashing of the address: messages are allocated close together.
  const uint64_t address =
      static_cast<uint64_t>(reinterpret_cast<uintptr_t>(message.get()));
  const uint32_t index = static_cast<uint32_t>(
      (address * 0x9E3779B97F4A7C15ull) >> (64 - 10));  // log2(kFrameSlots)
  static_assert(kFrameSlots == 1u << 10);
  SharedFrame& slot = frame_slots_[index];
  if (slot.message != message.get()) {
    if (slot.message == nullptr) frame_slots_used_.push_back(index);
    slot.message = message.get();
    slot.frame = PayloadFrame(message);  // Releases the slot's old frame.
  }
  zmq::message_t copy;
  copy.copy(slot.frame);
  return copy;
}

void Server::Impl::ForgetSharedFrames() {
  for (uint32_t index : frame_slots_used_) {
    frame_slots_[index].message = nullptr;
    frame_slots_[index].frame.rebuild();  // Drops its reference.
  }
  frame_slots_used_.clear();
}

void Server::Impl::DrainReady() {
  ready_keys_.assign(ready_.begin(), ready_.end());
  share_frames_ = ready_keys_.size() > 1;
  // The shared frames go when the pass ends; ZeroMQ frees each content
  // once its last copy is sent.
  absl::Cleanup forget_frames = [this] { ForgetSharedFrames(); };
  for (uint64_t key : ready_keys_) {
    if (key == kPlainFeedKey) continue;  // FeedPlainSubscribers() does it.
    auto k = keys_.find(key);
    if (k == keys_.end()) {
      ready_.erase(key);
      continue;
    }
    auto s = sessions_.find(k->second.first);
    if (s == sessions_.end()) {
      ready_.erase(key);
      continue;
    }
    auto rs = s->second->subs.find(k->second.second);
    if (rs == s->second->subs.end() || s->second->detached ||
        stalled_.contains(key)) {
      ready_.erase(key);  // A stalled one comes back at its retry time.
      continue;
    }
    if (!DrainSub(*s->second, *rs->second)) ready_.erase(key);
  }
}

absl::Time Server::Impl::RetryStalled() {
  absl::Time next = absl::InfiniteFuture();
  if (stalled_.empty()) return next;
  const absl::Time now = absl::Now();
  for (auto it = stalled_.begin(); it != stalled_.end();) {
    if (it->second <= now) {
      ready_.insert(it->first);
      stalled_.erase(it++);
    } else {
      next = std::min(next, it->second);
      ++it;
    }
  }
  return next;
}

bool Server::Impl::SendUnsent(Session& s, RemoteSub& rs) {
  if (!rs.unsent) return true;
  RemoteSub::Unsent& u = *rs.unsent;
  bool failed = false;
  const bool reachable = SendFrames(s.routing_id, u.body, &u.payloads, &failed);
  if (reachable && !failed) {
    Bump(counters_.delivered, u.messages);
    rs.unsent.reset();
    rs.retry_backoff = absl::ZeroDuration();
    return true;
  }
  if (!reachable) {
    const uint64_t messages = u.messages;
    const uint64_t missed = u.missed;
    rs.unsent.reset();
    rs.retry_backoff = absl::ZeroDuration();
    LoseToGonePeer(s, rs, messages, missed);
    return false;
  }
  rs.retry_backoff =
      std::clamp(2 * rs.retry_backoff, kPlainRetryMin, kPlainRetryMax);
  stalled_[rs.key] = absl::Now() + rs.retry_backoff;
  return false;
}

void Server::Impl::LoseToGonePeer(Session& s, RemoteSub& rs, uint64_t n,
                                  uint64_t missed) {
  // Nothing went out: the peer is gone (EHOSTUNREACH). Taken from the core
  // queue, so lost here: counted now, whether or not the session is ever
  // resumed, and reported missed on this subscription's next delivery, with
  // the drops the Deliver carried. Their credit is the client's again.
  rs.credit += n;
  rs.sent -= n;
  rs.missed_sent -= missed;
  rs.lost_pending += n + missed;
  Bump(counters_.deliveries_lost, n);
  Bump(counters_.send_failures);
  Detach(s.routing_id);
}

void Server::Impl::DropUnsent(RemoteSub& rs) {
  stalled_.erase(rs.key);
  if (!rs.unsent) return;
  // Taken from the core queue (which counts them delivered) and never sent.
  Bump(counters_.deliveries_lost, rs.unsent->messages);
  rs.unsent.reset();
}

bool Server::Impl::DrainSub(Session& s, RemoteSub& rs) {
  // What a full pipe refused goes first, in order.
  if (!SendUnsent(s, rs)) return false;
  size_t budget = kTurnBudget;
  while (budget > 0) {
    // Out of credit: leave the ready set, or the loop would spin on it.
    // The subscription stays marked ready in the core (no Rearm), so no
    // publisher notifies it again; HandleCredit() puts it back.
    if (rs.credit == 0) return false;
    const size_t want = std::min({rs.credit, kDeliverBatch, budget});
    internal::SubscriptionState* state = internal::StateOf(rs.subscription);
    if (state == nullptr || !state->TakeQueued(want, &batch_)) {
      return false;  // Ended (broker shutdown) or closed.
    }
    if (batch_.empty()) {
      // Empty: re-arm, unless a message arrived meanwhile.
      if (!state->Rearm()) return false;
      continue;
    }
    // The Deliver and its entries are reused: Clear() keeps the entries and
    // their strings' capacity for add_entries().
    deliver_.Clear();
    payloads_.clear();
    // The drops this Deliver reports: kept if it does not go out.
    uint64_t missed = 0;
    for (const Delivery& d : batch_) {
      v1::DeliverEntry* e = deliver_.add_entries();
      e->set_sid(rs.sid);
      e->set_sequence(d.sequence());
      e->set_missed(d.missed() + rs.lost_pending);
      missed += e->missed();
      rs.lost_pending = 0;
      e->mutable_topic()->assign(d.topic().data(), d.topic().size());
      for (size_t h = 0; h < d.headers().size(); ++h) {
        v1::Header* header = e->add_headers();
        const HeadersView::Entry in = d.headers()[h];
        header->mutable_key()->assign(in.key.data(), in.key.size());
        header->mutable_value()->assign(in.value.data(), in.value.size());
      }
      e->set_publish_time_unix_ns(
          static_cast<uint64_t>(d.message()->publish_time_unix_ns()));
      payloads_.push_back(PayloadFrameFor(d.message()));
    }
    // The payload frames hold their own references: the batch holds none
    // past this point, and keeps its capacity.
    const size_t n = batch_.size();
    batch_.clear();
    rs.credit -= n;
    rs.sent += n;
    rs.missed_sent += missed;
    budget -= n;
    bool failed = false;
    const bool reachable = SendDeliver(s.routing_id, &failed);
    if (!reachable) {
      LoseToGonePeer(s, rs, n, missed);
      return false;
    }
    if (failed) {
      // ZeroMQ refused it (counted in send_failures): the client's pipe is
      // full, which a client that returns credit for what it has not read
      // can make happen. Kept, and tried again after a backoff (see
      // SendUnsent()); nothing else of this subscription goes before it.
      rs.unsent = RemoteSub::Unsent{
          .body = body_,
          .payloads = std::move(payloads_),
          .messages = n,
          .missed = missed,
      };
      rs.retry_backoff = kPlainRetryMin;
      stalled_[rs.key] = absl::Now() + rs.retry_backoff;
      return false;
    }
    Bump(counters_.delivered, n);
  }
  return true;
}

// -------------------------------------------------------- plain endpoints

void Server::Impl::HandlePlainPublish() {
  for (int i = 0; i < kReceiveBudget; ++i) {
    std::vector<zmq::message_t> frames;
    zmq::recv_result_t got;
    try {
      got = zmq::recv_multipart(*xsub_, std::back_inserter(frames),
                                zmq::recv_flags::dontwait);
    } catch (const zmq::error_t&) {
      break;
    }
    if (!got) break;
    Bump(counters_.frames_received, frames.size());
    if (frames.size() != 2 || intake_stopped_.load(std::memory_order_acquire)) {
      Bump(counters_.plain_refused);
      continue;
    }
    absl::StatusOr<PublishResult> r =
        core_.PublishFromNetwork(View(frames[0]), View(frames[1]), {});
    Bump(r.ok() ? counters_.plain_published : counters_.plain_refused);
  }
}

void Server::Impl::HandlePlainSubscriptions() {
  bool changed = false;
  for (int i = 0; i < kReceiveBudget; ++i) {
    zmq::message_t m;
    try {
      if (!xpub_->recv(m, zmq::recv_flags::dontwait)) break;
    } catch (const zmq::error_t&) {
      break;
    }
    // [1][prefix] subscribes, [0][prefix] unsubscribes; anything else a
    // peer sends is not ours to act on.
    const absl::string_view data = View(m);
    if (data.empty() || m.more() || (data[0] != 0 && data[0] != 1)) continue;
    const std::string prefix(data.substr(1));
    if (data[0] == 1) {
      changed |= plain_prefixes_.insert(prefix).second;
    } else {
      changed |= plain_prefixes_.erase(prefix) > 0;
    }
  }
  if (!changed) return;
  if (plain_prefixes_.empty()) {
    // The last SUB is gone: the feed closes unless one comes back soon.
    plain_feed_close_at_ = absl::Now() + options_.plain_feed_linger;
  } else {
    plain_feed_close_at_ = absl::InfiniteFuture();
    // Once intake stopped no new subscription opens, as for SDK clients.
    if (!plain_feed_.valid() &&
        !intake_stopped_.load(std::memory_order_acquire)) {
      absl::StatusOr<Subscription> s =
          core_.Subscribe(">", PlainFeedOptions(options_, broker_->options()),
                          nullptr, [this] { NotifyReady(kPlainFeedKey); });
      // Start() checked the options: refused only once the broker shuts
      // down, and then there is nothing to feed.
      if (s.ok()) plain_feed_ = std::move(*s);
    }
  }
  counters_.plain_prefixes.store(plain_prefixes_.size(),
                                 std::memory_order_relaxed);
}

void Server::Impl::MaybeClosePlainFeed() {
  if (!plain_feed_.valid() || absl::Now() < plain_feed_close_at_) return;
  // What the feed still queues counts as abandoned in its totals, which
  // stay in the broker's stats; what was already taken from it goes out
  // (the XPUB discards it).
  plain_feed_close_at_ = absl::InfiniteFuture();
  (void)plain_feed_.Close();
  plain_feed_ = Subscription();
  ready_.erase(kPlainFeedKey);
}

void Server::Impl::FeedPlainSubscribers() {
  if (plain_blocked() && absl::Now() < plain_retry_at_) return;
  size_t budget = kTurnBudget;
  while (budget > 0) {
    if (plain_pending_.empty()) {
      if (!ready_.contains(kPlainFeedKey)) return;
      internal::SubscriptionState* state = internal::StateOf(plain_feed_);
      if (state == nullptr || !state->TakeQueued(kDeliverBatch, &batch_)) {
        ready_.erase(kPlainFeedKey);
        return;
      }
      if (batch_.empty()) {
        if (!state->Rearm()) {
          ready_.erase(kPlainFeedKey);
          return;
        }
        continue;
      }
      for (Delivery& d : batch_) plain_pending_.push_back(std::move(d));
      batch_.clear();
    }
    // XPUB_NODROP: a full pipe makes the send fail with EAGAIN; the message
    // stays pending (head-of-line) and the core queue absorbs the rest.
    const Delivery& d = plain_pending_.front();
    try {
      zmq::message_t topic(d.topic().data(), d.topic().size());
      if (!xpub_->send(topic,
                       zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
        plain_backoff_ =
            std::clamp(2 * plain_backoff_, kPlainRetryMin, kPlainRetryMax);
        plain_retry_at_ = absl::Now() + plain_backoff_;
        return;
      }
      plain_backoff_ = absl::ZeroDuration();
      (void)xpub_->send(PayloadFrame(d.message()), zmq::send_flags::none);
      Bump(counters_.plain_delivered);
      Bump(counters_.frames_sent, 2);
    } catch (const zmq::error_t&) {
      Bump(counters_.send_failures);  // Lost: counted here, not delivered.
    }
    plain_pending_.pop_front();
    --budget;
  }
}

void Server::Impl::SendGoodbyes() {
  goodbye_sent_ = true;
  std::vector<std::string> gone;
  for (const auto& [rid, s] : sessions_) {
    v1::Envelope bye;
    bye.mutable_goodbye()->set_reason("server stopping");
    if (!Send(rid, bye)) gone.push_back(rid);
  }
  CloseSessions(gone, /*expired=*/false);
}

void Server::Impl::Shutdown() {
  if (!goodbye_sent_) SendGoodbyes();
  std::vector<std::string> routing_ids;
  for (const auto& [rid, s] : sessions_) routing_ids.push_back(rid);
  // Closing a remote subscription keeps its totals in the broker's stats;
  // the plain subscribers' feed closes with them.
  CloseSessions(routing_ids, /*expired=*/false,
                plain_feed_.valid() ? &plain_feed_ : nullptr);
  // Taken from the feed, so the broker counts them delivered: what the
  // XPUB will not take now (a SUB's pipe is full) is counted here.
  if (xpub_) {
    plain_backoff_ = absl::ZeroDuration();
    FeedPlainSubscribers();
  }
  Bump(counters_.plain_abandoned, plain_pending_.size());
  plain_pending_.clear();
  counters_.plain_prefixes.store(0, std::memory_order_relaxed);
  // Unsent messages may go out for the configured linger, within the
  // caller's deadline.
  const absl::Duration left =
      std::max(absl::ZeroDuration(), linger_until_ - absl::Now());
  const int linger = static_cast<int>(
      absl::ToInt64Milliseconds(std::min(options_.linger, left)));
  if (monitor_) {
    zmq_socket_monitor(router_->handle(), nullptr, 0);
    monitor_->close();
  }
  if (router_) {
    router_->set(zmq::sockopt::linger, linger);
    router_->close();
  }
  if (xsub_) xsub_->close();
  if (xpub_) {
    xpub_->set(zmq::sockopt::linger, linger);
    xpub_->close();
  }
}

v1::ServerStats Server::Impl::Stats() const {
  v1::ServerStats out;
  const Counters& c = counters_;
  out.set_sessions_active(Read(c.sessions_active));
  out.set_sessions_opened(Read(c.sessions_opened));
  out.set_sessions_expired(Read(c.sessions_expired));
  out.set_sessions_closed(Read(c.sessions_closed));
  out.set_frames_received(Read(c.frames_received));
  out.set_frames_sent(Read(c.frames_sent));
  out.set_bad_magic(Read(c.bad_magic));
  out.set_unsupported_version(Read(c.unsupported_version));
  out.set_malformed(Read(c.malformed));
  out.set_unknown_command(Read(c.unknown_command));
  out.set_oversized(Read(c.oversized));
  out.set_no_session(Read(c.no_session));
  out.set_clients_refused(Read(c.clients_refused));
  out.set_subscriptions_refused(Read(c.subscriptions_refused));
  out.set_publish_refused(Read(c.publish_refused));
  out.set_publish_accepted(Read(c.publish_accepted));
  out.set_delivered(Read(c.delivered));
  out.set_disconnects(Read(c.disconnects));
  out.set_plain_published(Read(c.plain_published));
  out.set_plain_refused(Read(c.plain_refused));
  out.set_plain_delivered(Read(c.plain_delivered));
  out.set_send_failures(Read(c.send_failures));
  out.set_remote_subscriptions(Read(c.remote_subscriptions));
  out.set_plain_prefixes(Read(c.plain_prefixes));
  out.set_plain_abandoned(Read(c.plain_abandoned));
  out.set_deliveries_lost(Read(c.deliveries_lost));
  out.set_sessions_detached(Read(c.sessions_detached));
  out.set_publishes_deferred(Read(c.publishes_deferred));
  out.set_held_full(Read(c.held_full));
  return out;
}

// ------------------------------------------------------------------ Server

absl::StatusOr<std::unique_ptr<Server>> Server::Start(Broker* broker,
                                                      ServerOptions options) {
  internal::EnsureThreadIdentity();
  if (broker == nullptr) {
    return absl::InvalidArgumentError("server: the broker is null");
  }
  HERALD_RETURN_IF_ERROR(ValidateOptions(options));
  // The feed opens later, when a SUB subscribes: refuse now what the broker
  // would refuse then.
  if (!options.subscribe_endpoint.empty()) {
    const absl::Status feed = internal::CoreOf(*broker).CheckSubscribe(
        ">", PlainFeedOptions(options, broker->options()), false);
    if (!feed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "server: the plain subscribe endpoint's feed (plain_queue_capacity ",
          options.plain_queue_capacity, "): ", feed.message()));
    }
  }
  // A fresh random epoch per server start: a client that sees it change
  // knows its subscriptions are gone.
  absl::BitGen gen;
  uint64_t epoch = absl::Uniform<uint64_t>(gen);
  if (epoch == 0) epoch = 1;
  auto impl = std::make_unique<Impl>(broker, std::move(options), epoch);
  std::string sdk, pub, sub;
  HERALD_RETURN_IF_ERROR(impl->Bind(&sdk, &pub, &sub));
  impl->Start();
  std::unique_ptr<Server> server(new Server(std::move(impl)));
  server->sdk_endpoint_ = std::move(sdk);
  server->publish_endpoint_ = std::move(pub);
  server->subscribe_endpoint_ = std::move(sub);
  server->epoch_ = epoch;
  return server;
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { Stop(absl::Now()); }

void Server::StopIntake() { impl_->StopIntake(); }

void Server::Stop(absl::Time deadline) {
  internal::EnsureThreadIdentity();
  impl_->Stop(deadline);
}

v1::ServerStats Server::Stats() const { return impl_->Stats(); }

}  // namespace herald::net
