// Metrics for heraldd: the Prometheus text exposition of Herald's stats, the
// JSON form served at /statsz, the one-line summary heraldd prints when it
// stops, and MetricsServer, the small HTTP server (Debian's cpp-httplib) that
// serves them.
//
//   MetricsServer::Sources sources;
//   sources.broker = [&] { return broker->Stats(); };
//   sources.server = [&] { return server->Stats(); };
//   auto metrics = MetricsServer::Start("127.0.0.1:0", sources).value();
//   // GET http://127.0.0.1:<metrics->port()>/metrics
//   metrics->Stop();
//
// Metric names and their meaning are listed in docs/operations.md.
#ifndef HERALD_TOOLS_HERALDD_METRICS_H_
#define HERALD_TOOLS_HERALDD_METRICS_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "schemas/protocol.pb.h"
#include "schemas/stats.pb.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace herald {

// The content type of PrometheusText(): text format version 0.0.4.
inline constexpr absl::string_view kPrometheusContentType =
    "text/plain; version=0.0.4; charset=utf-8";

// Renders `broker` (and `server`, when non-null) in the Prometheus text
// exposition format 0.0.4: each metric family is one `# HELP` line, one
// `# TYPE` line and its samples, families in a fixed order (a family with no
// samples still has its HELP and TYPE lines). Counters end in `_total`. Label
// values are escaped as the format requires (backslash, double quote,
// newline). Never fails.
std::string PrometheusText(const v1::BrokerStats& broker,
                           const v1::ServerStats* server);
inline std::string PrometheusText(const v1::BrokerStats& broker,
                                  const v1::ServerStats& server) {
  return PrometheusText(broker, &server);
}

// Prints `broker` (and `server`, when non-null) as the JSON of a
// herald.v1.StatsReply, `{"broker": {...}, "server": {...}}`, with the same
// options as herald::StatsToJson(): every field (a zero count too), proto
// field names, 64-bit counters as strings. Returns kInternal if printing
// fails.
absl::StatusOr<std::string> StatszJson(const v1::BrokerStats& broker,
                                       const v1::ServerStats* server);

// Totals over the whole broker life: live subscriptions plus the closed ones
// (and the queue groups' own drops). A live snapshot may differ by the
// operations in flight.
struct BrokerTotals {
  uint64_t published = 0;
  uint64_t refused = 0;  // Publishes refused before matching, any reason.
  uint64_t matched = 0;
  uint64_t delivered = 0;
  uint64_t queued = 0;
  uint64_t abandoned = 0;
  v1::DropCounts dropped;  // By reason.
  uint64_t dropped_total = 0;
};
BrokerTotals SumTotals(const v1::BrokerStats& broker);

// One line (no newline) for heraldd's exit: publishes, deliveries, drops by
// reason and sessions, e.g.
//   published=5 refused=0 delivered=2 dropped=3 (queue_full=3 ...)
//   sessions_opened=0 sessions_expired=0 sessions_closed=0
std::string SummaryLine(const v1::BrokerStats& broker,
                        const v1::ServerStats* server);

// Serves GET /metrics (PrometheusText(), content type
// kPrometheusContentType) and GET /statsz (StatszJson(), application/json)
// over HTTP on one listening socket, with its own threads (one accepting,
// two handling requests). Every other path is 404; /statsz failing to print
// is 500.
//
// Thread-safe. The stats sources are called on the server's threads, possibly
// concurrently with each other and with anything else; they must stay
// callable until Stop() returns.
class MetricsServer {
 public:
  struct Sources {
    // Required.
    std::function<v1::BrokerStats()> broker;
    // Optional: without it the server families and "server" are left out.
    std::function<v1::ServerStats()> server;
  };

  // Binds `address` ("host:port", host an IPv4 address, a name, or `[v6]`;
  // port 0 lets the OS choose: see port()) and starts serving. The socket
  // does not set SO_REUSEPORT, so a port already in use is an error. Returns
  // kInvalidArgument for a malformed address or a missing broker source,
  // kUnavailable if the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      absl::string_view address, Sources sources);

  // Stop().
  ~MetricsServer();

  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The bound port (the OS's choice for port 0) and host.
  int port() const { return port_; }
  const std::string& host() const { return host_; }
  // "http://host:port", with an IPv6 host in brackets.
  std::string url() const;

  // Closes the listening socket, lets requests in progress finish (each is
  // bounded by 1s read and write timeouts) and joins every thread the server
  // started. Idempotent; blocks until done.
  void Stop() ABSL_LOCKS_EXCLUDED(stop_mu_);

 private:
  MetricsServer(std::string host, Sources sources);
  // Calls the sources: the server's (if any) into `*server`, then the
  // broker's, returned.
  v1::BrokerStats Snapshot(std::optional<v1::ServerStats>* server) const;

  const std::string host_;
  const Sources sources_;
  int port_ = 0;
  std::unique_ptr<httplib::Server> http_;
  // Runs httplib::Server::listen_after_bind(); notifies listen_done_ when it
  // returns.
  std::thread listener_;
  absl::Notification listen_done_;
  absl::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;
};

}  // namespace herald

#endif  // HERALD_TOOLS_HERALDD_METRICS_H_
