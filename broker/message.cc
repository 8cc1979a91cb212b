#include "broker/message.h"

#include <cstring>
#include <new>

#include "broker/util/check.h"

namespace herald {

HeadersView::Entry HeadersView::operator[](size_t i) const {
  HERALD_DCHECK(i < count_);
  const internal::HeaderEntry& raw = entries_[i];
  return {absl::string_view(base_ + raw.key_offset, raw.key_size),
          absl::string_view(base_ + raw.value_offset, raw.value_size)};
}

bool HeadersView::Find(absl::string_view key, absl::string_view* value) const {
  for (size_t i = 0; i < count_; ++i) {
    const Entry e = (*this)[i];
    if (e.key == key) {
      *value = e.value;
      return true;
    }
  }
  return false;
}

size_t Message::ByteSize(absl::string_view topic, absl::string_view payload,
                         const Headers& headers) {
  size_t size = topic.size() + payload.size();
  for (const Header& h : headers) size += h.key.size() + h.value.size();
  return size;
}

Message* Message::Create(absl::string_view topic, absl::string_view payload,
                         const Headers& headers, absl::Time publish_time,
                         uint32_t initial_refs) {
  HERALD_DCHECK(initial_refs > 0);
  size_t header_bytes = 0;
  for (const Header& h : headers) header_bytes += h.key.size() + h.value.size();
  const size_t total = sizeof(Message) + headers.size() * sizeof(HeaderEntry) +
                       topic.size() + payload.size() + header_bytes;
  void* memory = ::operator new(total);
  Message* m = new (memory) Message();
  m->refs_.store(initial_refs, std::memory_order_relaxed);
  m->topic_size_ = static_cast<uint32_t>(topic.size());
  m->header_count_ = static_cast<uint32_t>(headers.size());
  m->header_bytes_ = static_cast<uint32_t>(header_bytes);
  m->payload_size_ = payload.size();
  m->publish_time_unix_ns_ = absl::ToUnixNanos(publish_time);

  auto* entries = reinterpret_cast<HeaderEntry*>(m + 1);
  char* bytes = reinterpret_cast<char*>(entries + headers.size());
  if (!topic.empty()) std::memcpy(bytes, topic.data(), topic.size());
  if (!payload.empty()) {
    std::memcpy(bytes + topic.size(), payload.data(), payload.size());
  }
  // Header offsets are relative to the start of the header bytes.
  char* header_base = bytes + topic.size() + payload.size();
  uint32_t offset = 0;
  for (size_t i = 0; i < headers.size(); ++i) {
    const Header& h = headers[i];
    entries[i].key_offset = offset;
    entries[i].key_size = static_cast<uint32_t>(h.key.size());
    if (!h.key.empty())
      std::memcpy(header_base + offset, h.key.data(), h.key.size());
    offset += static_cast<uint32_t>(h.key.size());
    entries[i].value_offset = offset;
    entries[i].value_size = static_cast<uint32_t>(h.value.size());
    if (!h.value.empty()) {
      std::memcpy(header_base + offset, h.value.data(), h.value.size());
    }
    offset += static_cast<uint32_t>(h.value.size());
  }
  return m;
}

HeadersView Message::headers() const {
  return HeadersView(header_entries(), bytes() + topic_size_ + payload_size_,
                     header_count_);
}

void Message::Destroy() {
  this->~Message();
  ::operator delete(static_cast<void*>(this));
}

}  // namespace herald
