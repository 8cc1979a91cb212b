#include "sdk/client.h"

#include <memory>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "broker/util/status_macros.h"
#include "sdk/internal/in_process_client.h"
#include "sdk/internal/remote_client.h"

namespace herald {

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(absl::string_view url,
                                                        ClientOptions options,
                                                        Broker* broker) {
  HERALD_RETURN_IF_ERROR(ValidateClientOptions(options));
  if (absl::StartsWith(url, "inproc:")) {
    if (broker == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("connect to \"", url, "\": inproc: needs the broker"));
    }
    return std::unique_ptr<Client>(
        new internal::InProcessClient(broker, std::move(options)));
  }
  if (absl::StartsWith(url, "tcp://") || absl::StartsWith(url, "ipc://")) {
    if (broker != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "connect to \"", url, "\": a broker is given only with inproc:"));
    }
    return internal::RemoteClient::Connect(url, std::move(options));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("connect to \"", url,
                   "\": the scheme is not one of inproc:, tcp://, ipc://"));
}

absl::StatusOr<v1::BrokerStats> Client::BrokerStats(absl::Time deadline) {
  HERALD_ASSIGN_OR_RETURN(v1::StatsReply reply, BrokerAndServerStats(deadline));
  return std::move(*reply.mutable_broker());
}

}  // namespace herald
