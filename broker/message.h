// Message: an immutable, reference-counted published message.
//
// Topic, payload and headers live in one allocation made per publish and
// shared by every subscriber that receives the message (zero-copy fan-out).
// Applications see messages through Delivery (broker/delivery.h); MessageRef
// is the owning pointer used inside the broker.
#ifndef HERALD_BROKER_MESSAGE_H_
#define HERALD_BROKER_MESSAGE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace herald {

// One header of a message. Keys starting "herald-" are reserved for Herald.
struct Header {
  std::string key;
  std::string value;
};

// The headers given to Publish(): an ordered list, duplicates allowed.
using Headers = std::vector<Header>;

// Key prefix reserved for Herald's own headers.
inline constexpr absl::string_view kReservedHeaderPrefix = "herald-";

namespace internal {
// Where one header's key and value sit, relative to the header bytes.
struct HeaderEntry {
  uint32_t key_offset;
  uint32_t key_size;
  uint32_t value_offset;
  uint32_t value_size;
};
}  // namespace internal

// A read-only view of a message's headers, valid while the message lives.
// Thread-compatible.
class HeadersView {
 public:
  struct Entry {
    absl::string_view key;
    absl::string_view value;
  };

  HeadersView() = default;

  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  // REQUIRES: i < size().
  Entry operator[](size_t i) const;
  // Sets `*value` to the value of the first header named `key` and returns
  // true, or returns false if there is none.
  bool Find(absl::string_view key, absl::string_view* value) const;

 private:
  friend class Message;
  HeadersView(const internal::HeaderEntry* entries, const char* base,
              size_t count)
      : entries_(entries), base_(base), count_(count) {}

  const internal::HeaderEntry* entries_ = nullptr;
  const char* base_ = nullptr;
  size_t count_ = 0;
};

// Thread-safe: immutable after creation; the reference count is atomic.
class Message {
 public:
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;

  // The bytes a message counts against max_message_bytes: topic, payload, and
  // every header key and value.
  static size_t ByteSize(absl::string_view topic, absl::string_view payload,
                         const Headers& headers);

  // Makes a message holding copies of its inputs, in one allocation, with
  // `initial_refs` references (> 0) owned by the caller.
  static Message* Create(absl::string_view topic, absl::string_view payload,
                         const Headers& headers, absl::Time publish_time,
                         uint32_t initial_refs);

  absl::string_view topic() const {
    return absl::string_view(bytes(), topic_size_);
  }
  absl::string_view payload() const {
    return absl::string_view(bytes() + topic_size_, payload_size_);
  }
  HeadersView headers() const;
  absl::Time publish_time() const {
    return absl::FromUnixNanos(publish_time_unix_ns_);
  }
  int64_t publish_time_unix_ns() const { return publish_time_unix_ns_; }

  // Adds `n` references.
  void Ref(uint32_t n = 1) {
    // Relaxed: a new reference is made from an existing one, which keeps the
    // message alive; nothing is published by the increment.
    refs_.fetch_add(n, std::memory_order_relaxed);
  }
  // Drops `n` references, freeing the message when none remain.
  void Unref(uint32_t n = 1) {
    // Acq_rel: the release orders this owner's reads before the free; the
    // acquire (taken by the last owner) sees every other owner's release.
    if (refs_.fetch_sub(n, std::memory_order_acq_rel) == n) Destroy();
  }

 private:
  using HeaderEntry = internal::HeaderEntry;

  Message() = default;
  ~Message() = default;
  void Destroy();

  const HeaderEntry* header_entries() const {
    return reinterpret_cast<const HeaderEntry*>(this + 1);
  }
  const char* bytes() const {
    return reinterpret_cast<const char*>(header_entries() + header_count_);
  }

  std::atomic<uint32_t> refs_{0};
  uint32_t topic_size_ = 0;
  uint32_t header_count_ = 0;
  uint32_t header_bytes_ = 0;
  uint64_t payload_size_ = 0;
  int64_t publish_time_unix_ns_ = 0;
  // Followed in the same allocation by: HeaderEntry[header_count_], then the
  // topic bytes, the payload bytes, and the header keys and values.
};

// An owning, copyable pointer to a Message (one reference per copy).
// Thread-compatible.
class MessageRef {
 public:
  MessageRef() = default;
  // Adopts one reference the caller already owns.
  static MessageRef Adopt(Message* m) { return MessageRef(m); }

  MessageRef(const MessageRef& other) : m_(other.m_) {
    if (m_ != nullptr) m_->Ref();
  }
  MessageRef(MessageRef&& other) noexcept
      : m_(std::exchange(other.m_, nullptr)) {}
  MessageRef& operator=(MessageRef other) noexcept {
    std::swap(m_, other.m_);
    return *this;
  }
  ~MessageRef() {
    if (m_ != nullptr) m_->Unref();
  }

  const Message* get() const { return m_; }
  const Message* operator->() const { return m_; }
  const Message& operator*() const { return *m_; }
  explicit operator bool() const { return m_ != nullptr; }
  // Gives up ownership of the reference without dropping it.
  Message* Release() { return std::exchange(m_, nullptr); }

 private:
  explicit MessageRef(Message* m) : m_(m) {}
  Message* m_ = nullptr;
};

}  // namespace herald

#endif  // HERALD_BROKER_MESSAGE_H_
