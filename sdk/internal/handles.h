// The SDK's internal seam under Publisher and Subscriber: each handle holds
// an implementation made by its client, InProcessClient or RemoteClient.
// Also the pieces a Received is built from.
//
// Internal to sdk/: may change at will.
#ifndef HERALD_SDK_INTERNAL_HANDLES_H_
#define HERALD_SDK_INTERNAL_HANDLES_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "broker/delivery.h"
#include "broker/internal/deadline.h"
#include "broker/message.h"
#include "broker/options.h"
#include "google/protobuf/arena.h"
#include "schemas/protocol.pb.h"
#include "sdk/publisher.h"
#include "sdk/received.h"
#include "sdk/subscriber.h"
#include "zmq.hpp"

namespace herald::internal {

// Thread-safe: Publish() may be called from any number of threads.
class PublisherImpl {
 public:
  virtual ~PublisherImpl() = default;
  // Publishes one message. A non-empty `type_name` is added as the
  // kProtoTypeHeader header (the user's `headers` may not use the reserved
  // prefix). Errors as Publisher::Publish().
  virtual absl::Status Publish(absl::string_view topic,
                               absl::string_view payload,
                               const Headers& headers,
                               absl::string_view type_name) = 0;
};

// Thread safety as Subscriber's: Receive() for one consumer at a time;
// Close() and the accessors from any thread.
class SubscriberImpl {
 public:
  // Closes without waiting for the broker.
  virtual ~SubscriberImpl() = default;
  virtual absl::StatusOr<Received> Receive(Deadline deadline,
                                           std::stop_token stop) = 0;
  virtual absl::StatusOr<SubscriptionTotals> Close() = 0;
  virtual uint64_t id() const = 0;
  virtual const std::string& pattern() const = 0;
  // Counts a message ReceiveProto() could not decode.
  virtual void NoteDecodeError() = 0;
};

// A subscriber's close, run once: later and concurrent callers get its
// result. Its lock is never held while the close runs, so a callback may
// close its own subscription while another thread is closing it.
// Thread-safe.
class CloseOnce {
 public:
  using Result = absl::StatusOr<SubscriptionTotals>;

  // Runs `close` if no call began it yet. Otherwise waits for the result of
  // the one that did, unless `in_own_callback` (that close may be waiting
  // for this very callback to return): then kFailedPrecondition at once.
  Result Run(absl::FunctionRef<Result()> close, bool in_own_callback)
      ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      if (started_) {
        if (!done_ && in_own_callback) {
          return absl::FailedPreconditionError(
              "close subscription: another thread is closing it");
        }
        mu_.Await(absl::Condition(&done_));
        return *result_;
      }
      started_ = true;
    }
    Result result = close();
    absl::MutexLock lock(&mu_);
    result_ = result;
    done_ = true;
    return result;
  }

  // Marks the close as begun; false if it already was. For a destructor,
  // which closes without waiting for the totals.
  bool Begin() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (started_) return false;
    started_ = true;
    return true;
  }

 private:
  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<Result> result_ ABSL_GUARDED_BY(mu_);
};

// Makes Publisher and Subscriber handles (their constructors are private).
struct HandleAccess {
  static Publisher MakePublisher(std::shared_ptr<PublisherImpl> impl) {
    return Publisher(std::move(impl));
  }
  static Subscriber MakeSubscriber(std::unique_ptr<SubscriberImpl> impl) {
    return Subscriber(std::move(impl));
  }
};

// One message from the broker: its envelope and payload frames, shared by
// the Received of a Deliver's entries. Immutable once built. The envelope
// lives on the batch's arena, whose first block is part of the batch: a
// Deliver of small entries parses with no allocation of its own.
struct RemoteBatch {
  RemoteBatch() = default;
  RemoteBatch(const RemoteBatch&) = delete;
  RemoteBatch& operator=(const RemoteBatch&) = delete;

  static google::protobuf::ArenaOptions FirstBlock(char* block, size_t size) {
    google::protobuf::ArenaOptions o;
    o.initial_block = block;
    o.initial_block_size = size;
    o.max_block_size = 64 * 1024;
    return o;
  }

  // About 64 small entries' worth (the server sends up to 64 per Deliver).
  alignas(16) char first_block[8192];
  google::protobuf::Arena arena{FirstBlock(first_block, sizeof(first_block))};
  v1::Envelope& envelope =
      *google::protobuf::Arena::CreateMessage<v1::Envelope>(&arena);
  std::vector<zmq::message_t> payloads;
};

// Builds Received values (its constructors are private).
struct ReceivedAccess {
  static Received FromDelivery(Delivery delivery) {
    Received r;
    r.sequence_ = delivery.sequence();
    r.missed_ = delivery.missed();
    r.local_ = std::move(delivery);
    return r;
  }
  // REQUIRES: index < batch->envelope.deliver().entries_size() and
  // batch->payloads.size().
  static Received FromRemote(std::shared_ptr<const RemoteBatch> batch,
                             int index, bool gap, uint64_t epoch) {
    Received r;
    const v1::DeliverEntry& entry = batch->envelope.deliver().entries(index);
    const zmq::message_t& frame = batch->payloads[static_cast<size_t>(index)];
    r.entry_ = &entry;
    r.payload_ =
        absl::string_view(static_cast<const char*>(frame.data()), frame.size());
    r.sequence_ = entry.sequence();
    r.missed_ = entry.missed();
    r.gap_ = gap;
    r.epoch_ = epoch;
    r.batch_ = std::move(batch);
    return r;
  }
};

}  // namespace herald::internal

#endif  // HERALD_SDK_INTERNAL_HANDLES_H_
