#include "sdk/received.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "schemas/protocol.pb.h"
#include "sdk/internal/handles.h"

namespace herald {

// ------------------------------------------------------------ ReceivedHeaders

size_t ReceivedHeaders::size() const {
  if (remote_ != nullptr) return static_cast<size_t>(remote_->headers_size());
  return local_.size();
}

HeadersView::Entry ReceivedHeaders::operator[](size_t i) const {
  if (remote_ != nullptr) {
    const v1::Header& h = remote_->headers(static_cast<int>(i));
    return {h.key(), h.value()};
  }
  return local_[i];
}

bool ReceivedHeaders::Find(absl::string_view key,
                           absl::string_view* value) const {
  if (remote_ == nullptr) return local_.Find(key, value);
  for (const v1::Header& h : remote_->headers()) {
    if (h.key() == key) {
      *value = h.value();
      return true;
    }
  }
  return false;
}

// ------------------------------------------------------------------ Received

absl::string_view Received::topic() const {
  if (entry_ != nullptr) return entry_->topic();
  return local_.topic();
}

absl::string_view Received::payload() const {
  if (entry_ != nullptr) return payload_;
  return local_.payload();
}

ReceivedHeaders Received::headers() const {
  ReceivedHeaders h;
  if (entry_ != nullptr) {
    h.remote_ = entry_;
  } else {
    h.local_ = local_.headers();
  }
  return h;
}

absl::Time Received::publish_time() const {
  if (entry_ != nullptr) {
    return absl::FromUnixNanos(
        static_cast<int64_t>(entry_->publish_time_unix_ns()));
  }
  return local_.publish_time();
}

absl::string_view Received::proto_type() const {
  absl::string_view type;
  if (!headers().Find(kProtoTypeHeader, &type)) return {};
  return type;
}

absl::Status Received::ParseProto(google::protobuf::Message* message) const {
  const std::string& want = message->GetDescriptor()->full_name();
  absl::string_view type;
  if (!headers().Find(kProtoTypeHeader, &type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("message on \"", topic(), "\": no ", kProtoTypeHeader,
                     " header (expected \"", want, "\")"));
  }
  if (type != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("message on \"", topic(), "\": type \"", type,
                     "\" is not the expected \"", want, "\""));
  }
  const absl::string_view bytes = payload();
  if (!message->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("message on \"", topic(), "\": ", bytes.size(),
                     " payload bytes do not parse as \"", want, "\""));
  }
  return absl::OkStatus();
}

// ----------------------------------------------------------------- Publisher

absl::Status Publisher::Publish(absl::string_view topic,
                                absl::string_view payload,
                                const Headers& headers) {
  if (impl_ == nullptr) {
    return absl::FailedPreconditionError(
        "publisher is empty (default-constructed or moved from)");
  }
  return impl_->Publish(topic, payload, headers, {});
}

absl::Status Publisher::PublishProto(absl::string_view topic,
                                     const google::protobuf::Message& message,
                                     const Headers& headers) {
  if (impl_ == nullptr) {
    return absl::FailedPreconditionError(
        "publisher is empty (default-constructed or moved from)");
  }
  std::string bytes;
  if (!message.SerializeToString(&bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("publish to \"", topic, "\": a \"",
                     message.GetDescriptor()->full_name(),
                     "\" does not serialize (missing required fields?)"));
  }
  return impl_->Publish(topic, bytes, headers,
                        message.GetDescriptor()->full_name());
}

// ---------------------------------------------------------------- Subscriber

Subscriber::Subscriber() = default;
Subscriber::Subscriber(std::unique_ptr<internal::SubscriberImpl> impl)
    : impl_(std::move(impl)) {}
Subscriber::Subscriber(Subscriber&& other) noexcept = default;
Subscriber& Subscriber::operator=(Subscriber&& other) noexcept = default;
Subscriber::~Subscriber() = default;

uint64_t Subscriber::id() const { return impl_ ? impl_->id() : 0; }

const std::string& Subscriber::pattern() const {
  static const std::string* const kEmpty = new std::string();
  return impl_ ? impl_->pattern() : *kEmpty;
}

absl::StatusOr<Received> Subscriber::Receive(absl::Time deadline,
                                             std::stop_token stop) {
  if (impl_ == nullptr) {
    return absl::FailedPreconditionError(
        "subscriber is empty (default-constructed or moved from)");
  }
  return impl_->Receive(internal::Deadline::At(deadline), std::move(stop));
}

absl::StatusOr<Received> Subscriber::Receive(absl::Duration timeout,
                                             std::stop_token stop) {
  if (impl_ == nullptr) {
    return absl::FailedPreconditionError(
        "subscriber is empty (default-constructed or moved from)");
  }
  return impl_->Receive(internal::Deadline::After(timeout), std::move(stop));
}

absl::StatusOr<Received> Subscriber::TryReceive() {
  return Receive(absl::InfinitePast());
}

absl::StatusOr<SubscriptionTotals> Subscriber::Close() {
  if (impl_ == nullptr) {
    return absl::FailedPreconditionError(
        "subscriber is empty (default-constructed or moved from)");
  }
  return impl_->Close();
}

void Subscriber::NoteDecodeError() {
  if (impl_ != nullptr) impl_->NoteDecodeError();
}

}  // namespace herald
