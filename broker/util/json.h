// Protobuf to JSON, printed the one way Herald prints its stats everywhere
// (Broker's StatsToJson(), `herald stats --json`, heraldd's /statsz).
#ifndef HERALD_BROKER_UTIL_JSON_H_
#define HERALD_BROKER_UTIL_JSON_H_

#include <string>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"

namespace herald::util {

// Every field (a zero count too), under its proto field name, 64-bit
// integers as strings (proto3 JSON). kInternal if printing fails.
absl::StatusOr<std::string> ProtoToJson(const google::protobuf::Message& m);

}  // namespace herald::util

#endif  // HERALD_BROKER_UTIL_JSON_H_
