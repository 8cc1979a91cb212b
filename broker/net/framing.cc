#include "broker/net/framing.h"

#include "absl/base/config.h"
#include "absl/strings/str_cat.h"

#ifdef ABSL_HAVE_THREAD_SANITIZER
#include <sanitizer/tsan_interface.h>
#endif

namespace herald::net {
namespace {

// ZeroMQ passes a zero-copy frame to its own I/O thread, which calls the free
// function when the frame has been sent. That hand-off goes through libzmq,
// which is not instrumented, so ThreadSanitizer cannot see it and reports
// the free function's first touch of the message (allocated and written by
// the thread that built the frame) as a race. These annotations state the
// hand-off that libzmq's own queue performs: everything the building thread
// did before creating the frame happens before the free function runs.
void HandOffToZmq(const void* message) {
#ifdef ABSL_HAVE_THREAD_SANITIZER
  __tsan_release(const_cast<void*>(message));
#else
  (void)message;
#endif
}

void TakeBackFromZmq(const void* message) {
#ifdef ABSL_HAVE_THREAD_SANITIZER
  __tsan_acquire(const_cast<void*>(message));
#else
  (void)message;
#endif
}

}  // namespace

std::string MagicFrame(uint8_t version) {
  std::string frame(kMagic);
  frame.push_back(static_cast<char>(version));
  return frame;
}

absl::Status CheckMagic(absl::string_view frame) {
  if (frame.size() != kMagic.size() + 1 ||
      frame.substr(0, kMagic.size()) != kMagic) {
    return absl::InvalidArgumentError("frame 0: not the Herald magic");
  }
  const auto version = static_cast<uint8_t>(frame.back());
  if (version != kWireVersion) {
    return absl::UnimplementedError(absl::StrCat("frame 0: protocol version ",
                                                 version,
                                                 " is not supported (this side "
                                                 "speaks ",
                                                 kWireVersion, ")"));
  }
  return absl::OkStatus();
}

zmq::message_t PayloadFrame(const MessageRef& message) {
  MessageRef ref = message;  // One reference for ZeroMQ.
  Message* raw = ref.Release();
  const absl::string_view payload = raw->payload();
  HandOffToZmq(raw);
  return zmq::message_t(
      const_cast<char*>(payload.data()), payload.size(),
      [](void* /*data*/, void* hint) {
        TakeBackFromZmq(hint);
        static_cast<Message*>(hint)->Unref();
      },
      raw);
}

}  // namespace herald::net
