// Frame helpers shared by Herald's server and SDK (docs/protocol.md):
// frame 0 is the magic "HRLD" plus the protocol version byte; payload frames
// are sent zero-copy from the broker's shared message.
//
// Thread-safe (pure functions).
#ifndef HERALD_BROKER_NET_FRAMING_H_
#define HERALD_BROKER_NET_FRAMING_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "broker/message.h"
#include "zmq.hpp"

namespace herald::net {

inline constexpr absl::string_view kMagic = "HRLD";
inline constexpr uint8_t kWireVersion = 1;

// The 5-byte frame 0 for `version`.
std::string MagicFrame(uint8_t version = kWireVersion);

// OK for our magic and version; kInvalidArgument for anything that is not
// our magic (a foreign peer); kUnimplemented for our magic with another
// version.
absl::Status CheckMagic(absl::string_view frame);

// A ZeroMQ frame pointing at `message`'s payload, holding a reference to the
// message until ZeroMQ releases the frame (no copy).
zmq::message_t PayloadFrame(const MessageRef& message);

}  // namespace herald::net

#endif  // HERALD_BROKER_NET_FRAMING_H_
