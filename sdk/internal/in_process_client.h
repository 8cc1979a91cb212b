// InProcessClient: herald::Client over a Broker in this process ("inproc:").
//
// Publishes go straight into the broker on the caller's thread; subscribers
// wrap herald::Subscription, and a Received wraps the broker's Delivery (no
// copy). There is no buffer, no session and no I/O thread.
//
// Internal to sdk/: made by Client::Connect().
#ifndef HERALD_SDK_INTERNAL_IN_PROCESS_CLIENT_H_
#define HERALD_SDK_INTERNAL_IN_PROCESS_CLIENT_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "broker/broker.h"
#include "sdk/client.h"

namespace herald::internal {

// Thread-safe.
class InProcessClient final : public Client {
 public:
  // REQUIRES: `broker` non-null, outliving the client and its handles;
  // ValidateClientOptions(options).ok().
  InProcessClient(Broker* broker, ClientOptions options);
  // Closes the client.
  ~InProcessClient() override;

  // herald::Client
  absl::StatusOr<Publisher> CreatePublisher(PublisherOptions options) override;
  absl::StatusOr<Subscriber> Subscribe(absl::string_view pattern,
                                       SubscriptionOptions options) override;
  absl::StatusOr<Subscriber> Subscribe(absl::string_view pattern,
                                       SubscriptionOptions options,
                                       Callback callback) override;
  absl::Status Flush(absl::Time deadline) override;
  absl::Status Close(absl::Time deadline) override;
  ClientStats Stats() const override;
  absl::StatusOr<v1::StatsReply> BrokerAndServerStats(
      absl::Time deadline) override;

  // What the client shares with its handles (defined in the .cc).
  struct Shared;

 private:
  absl::StatusOr<Subscriber> DoSubscribe(absl::string_view pattern,
                                         const SubscriptionOptions& options,
                                         Callback callback);

  const std::shared_ptr<Shared> shared_;
};

}  // namespace herald::internal

#endif  // HERALD_SDK_INTERNAL_IN_PROCESS_CLIENT_H_
