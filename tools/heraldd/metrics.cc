#include "tools/heraldd/metrics.h"

#include <sys/socket.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "broker/internal/thread_identity.h"
#include "broker/util/json.h"
#include "httplib.h"

namespace herald {
namespace {

// ------------------------------------------------------- exposition format

// One label of a sample. The value is escaped when the sample is written.
struct Label {
  absl::string_view name;
  absl::string_view value;
};

// The exposition format escapes backslash and line feed in HELP text, and
// also the double quote in label values.
void AppendEscaped(absl::string_view text, bool escape_quote,
                   std::string* out) {
  for (const char c : text) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else if (c == '"' && escape_quote) {
      out->append("\\\"");
    } else {
      out->push_back(c);
    }
  }
}

// Writes families one after the other: Family() starts one, Sample() adds to
// the family last started, so a family's samples are always contiguous.
class Exposition {
 public:
  void Family(absl::string_view name, absl::string_view type,
              absl::string_view help) {
    name_ = name;
    absl::StrAppend(&out_, "# HELP ", name, " ");
    AppendEscaped(help, /*escape_quote=*/false, &out_);
    absl::StrAppend(&out_, "\n# TYPE ", name, " ", type, "\n");
  }

  // A sample of the current family; `extra` labels follow `labels`.
  void Sample(const std::vector<Label>& labels, uint64_t value,
              std::initializer_list<Label> extra = {}) {
    out_.append(name_.data(), name_.size());
    bool first = true;
    auto append_label = [&](const Label& label) {
      out_.push_back(first ? '{' : ',');
      first = false;
      absl::StrAppend(&out_, label.name, "=\"");
      AppendEscaped(label.value, /*escape_quote=*/true, &out_);
      out_.push_back('"');
    };
    for (const Label& label : labels) append_label(label);
    for (const Label& label : extra) append_label(label);
    if (!first) out_.push_back('}');
    absl::StrAppend(&out_, " ", value, "\n");
  }

  void Sample(uint64_t value) { Sample({}, value); }

  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
  absl::string_view name_;
};

constexpr absl::string_view kCounter = "counter";
constexpr absl::string_view kGauge = "gauge";

// The drop reasons in DropCounts' field order, with the names used in labels
// (the same as DropReasonName() in broker/options.h).
struct DropField {
  absl::string_view name;
  uint64_t (v1::DropCounts::*get)() const;
};
constexpr DropField kDropFields[] = {
    {"queue_full", &v1::DropCounts::queue_full},
    {"evicted_oldest", &v1::DropCounts::evicted_oldest},
    {"block_timeout", &v1::DropCounts::block_timeout},
    {"closed", &v1::DropCounts::closed},
    {"shutdown", &v1::DropCounts::shutdown},
    {"group_full", &v1::DropCounts::group_full},
};

void AddDrops(const v1::DropCounts& from, v1::DropCounts* to) {
  to->set_queue_full(to->queue_full() + from.queue_full());
  to->set_evicted_oldest(to->evicted_oldest() + from.evicted_oldest());
  to->set_block_timeout(to->block_timeout() + from.block_timeout());
  to->set_closed(to->closed() + from.closed());
  to->set_shutdown(to->shutdown() + from.shutdown());
  to->set_group_full(to->group_full() + from.group_full());
}

uint64_t SumDrops(const v1::DropCounts& drops) {
  uint64_t sum = 0;
  for (const DropField& f : kDropFields) sum += (drops.*f.get)();
  return sum;
}

absl::string_view OverflowName(v1::OverflowPolicy policy) {
  switch (policy) {
    case v1::OVERFLOW_POLICY_DROP_NEWEST:
      return "drop-newest";
    case v1::OVERFLOW_POLICY_DROP_OLDEST:
      return "drop-oldest";
    case v1::OVERFLOW_POLICY_BLOCK:
      return "block";
    default:
      return "unspecified";
  }
}

void WriteBroker(const v1::BrokerStats& b, Exposition& e) {
  const BrokerTotals t = SumTotals(b);

  e.Family(
      "herald_published_total", kCounter,
      "Publishes accepted by the broker, whether or not anything matched.");
  e.Sample(b.published());
  e.Family("herald_published_unmatched_total", kCounter,
           "Publishes that matched no subscription.");
  e.Sample(b.published_unmatched());
  e.Family("herald_publish_refused_total", kCounter,
           "Publishes refused before matching, by reason.");
  e.Sample({{"reason", "invalid"}}, b.refused_invalid());
  e.Sample({{"reason", "too_large"}}, b.refused_too_large());
  e.Sample({{"reason", "shutdown"}}, b.refused_shutdown());
  e.Family("herald_subscribe_refused_total", kCounter,
           "Subscribe calls refused (bad pattern or options, limits, "
           "shutdown).");
  e.Sample(b.subscribe_refused());
  e.Family("herald_subscriptions", kGauge, "Subscriptions open now.");
  e.Sample(b.subscriptions_active());
  e.Family("herald_subscriptions_closed_total", kCounter,
           "Subscriptions closed or ended.");
  e.Sample(b.subscriptions_closed());
  e.Family("herald_topics", kGauge,
           "Topic entries in the registry (topics with a subscription or a "
           "handle).");
  e.Sample(b.topics());
  e.Family("herald_shut_down", kGauge,
           "1 once the broker began shutting down.");
  e.Sample(b.shut_down() ? 1 : 0);

  // Whole-broker totals: open subscriptions plus the closed ones.
  e.Family("herald_matched_total", kCounter,
           "Messages offered to subscriptions (open and closed ones).");
  e.Sample(t.matched);
  e.Family("herald_delivered_total", kCounter,
           "Messages handed to subscribers (open and closed subscriptions).");
  e.Sample(t.delivered);
  e.Family("herald_dropped_total", kCounter,
           "Messages dropped, by reason (open and closed subscriptions and "
           "queue groups).");
  for (const DropField& f : kDropFields) {
    e.Sample({{"reason", f.name}}, (t.dropped.*f.get)());
  }
  e.Family("herald_queued", kGauge,
           "Messages waiting in the queues of open subscriptions.");
  e.Sample(t.queued);
  e.Family("herald_abandoned_total", kCounter,
           "Messages still queued when their subscription was closed.");
  e.Sample(t.abandoned);

  // Per subscription. Label values outlive the vector (they point into `b`).
  std::vector<std::vector<Label>> sub_labels;
  sub_labels.reserve(b.subscriptions_size());
  std::vector<std::string> ids;
  ids.reserve(b.subscriptions_size());
  for (const v1::SubscriptionStats& s : b.subscriptions()) {
    ids.push_back(absl::StrCat(s.id()));
  }
  for (int i = 0; i < b.subscriptions_size(); ++i) {
    const v1::SubscriptionStats& s = b.subscriptions(i);
    sub_labels.push_back({{"id", ids[i]},
                          {"pattern", s.pattern()},
                          {"queue_group", s.queue_group()},
                          {"name", s.name()}});
  }
  auto each_sub = [&](auto&& fn) {
    for (int i = 0; i < b.subscriptions_size(); ++i) {
      fn(sub_labels[i], b.subscriptions(i));
    }
  };
  e.Family("herald_subscription_info", kGauge,
           "Always 1: a subscription's overflow policy and kind.");
  each_sub([&](const auto& labels, const v1::SubscriptionStats& s) {
    e.Sample(labels, 1,
             {{"overflow", OverflowName(s.overflow())},
              {"callback", s.callback() ? "true" : "false"}});
  });
  e.Family("herald_subscription_capacity", kGauge,
           "Queue capacity of the subscription, in messages.");
  each_sub([&](const auto& labels, const v1::SubscriptionStats& s) {
    e.Sample(labels, s.capacity());
  });
  e.Family("herald_subscription_matched_total", kCounter,
           "Messages offered to the subscription.");
  each_sub([&](const auto& labels, const v1::SubscriptionStats& s) {
    e.Sample(labels, s.matched());
  });
  e.Family("herald_subscription_delivered_total", kCounter,
           "Messages handed to the subscriber.");
  each_sub([&](const auto& labels, const v1::SubscriptionStats& s) {
    e.Sample(labels, s.delivered());
  });
  e.Family("herald_subscription_dropped_total", kCounter,
           "Messages dropped for the subscription, by reason.");
  each_sub([&](const auto& labels, const v1::SubscriptionStats& s) {
    for (const DropField& f : kDropFields) {
      e.Sample(labels, (s.dropped().*f.get)(), {{"reason", f.name}});
    }
  });
  e.Family("herald_subscription_queued", kGauge,
           "Messages waiting in the subscription's queue.");
  each_sub([&](const auto& labels, const v1::SubscriptionStats& s) {
    e.Sample(labels, s.queued());
  });
  e.Family("herald_subscription_high_water", kGauge,
           "The deepest the subscription's queue has been.");
  each_sub([&](const auto& labels, const v1::SubscriptionStats& s) {
    e.Sample(labels, s.high_water());
  });
  e.Family("herald_subscription_abandoned_total", kCounter,
           "Messages still queued when the subscription was closed.");
  each_sub([&](const auto& labels, const v1::SubscriptionStats& s) {
    e.Sample(labels, s.abandoned());
  });

  // Per topic.
  e.Family("herald_topic_published_total", kCounter, "Publishes to the topic.");
  for (const v1::TopicStats& t : b.topic_entries()) {
    e.Sample({{"topic", t.name()}}, t.published());
  }
  e.Family("herald_topic_subscriptions", kGauge,
           "Subscriptions whose pattern matches the topic.");
  for (const v1::TopicStats& t : b.topic_entries()) {
    e.Sample({{"topic", t.name()}}, t.subscriptions());
  }
  e.Family("herald_topic_handles", kGauge, "Topic handles held on the topic.");
  for (const v1::TopicStats& t : b.topic_entries()) {
    e.Sample({{"topic", t.name()}}, t.handles());
  }

  // Per queue group.
  auto group_labels = [](const v1::GroupStats& g) {
    return std::vector<Label>{{"pattern", g.pattern()},
                              {"queue_group", g.queue_group()}};
  };
  e.Family("herald_group_members", kGauge, "Members of the queue group.");
  for (const v1::GroupStats& g : b.groups()) {
    e.Sample(group_labels(g), g.members());
  }
  e.Family("herald_group_matched_total", kCounter,
           "Messages offered to the queue group.");
  for (const v1::GroupStats& g : b.groups()) {
    e.Sample(group_labels(g), g.matched());
  }
  e.Family("herald_group_taken_total", kCounter,
           "Messages the queue group gave to a member.");
  for (const v1::GroupStats& g : b.groups()) {
    e.Sample(group_labels(g), g.taken());
  }
  e.Family("herald_group_dropped_total", kCounter,
           "Messages dropped by the queue group because every member was "
           "full.");
  for (const v1::GroupStats& g : b.groups()) {
    e.Sample(group_labels(g), g.dropped().group_full(),
             {{"reason", "group_full"}});
  }
}

void WriteServer(const v1::ServerStats& s, Exposition& e) {
  struct Scalar {
    absl::string_view name;
    absl::string_view type;
    absl::string_view help;
    uint64_t value;
  };
  const Scalar before_refusals[] = {
      {"herald_server_sessions", kGauge,
       "SDK client sessions open now (connected clients).",
       s.sessions_active()},
      {"herald_server_sessions_opened_total", kCounter,
       "SDK sessions opened (Hello answered with Welcome).",
       s.sessions_opened()},
      {"herald_server_sessions_expired_total", kCounter,
       "SDK sessions expired after session_ttl without traffic.",
       s.sessions_expired()},
      {"herald_server_sessions_closed_total", kCounter,
       "SDK sessions closed otherwise: the client's Goodbye, a new session "
       "on the same connection, or the server stopping.",
       s.sessions_closed()},
      {"herald_server_frames_received_total", kCounter,
       "Messages received on the SDK endpoint.", s.frames_received()},
      {"herald_server_frames_sent_total", kCounter,
       "Messages sent on the SDK endpoint.", s.frames_sent()},
  };
  for (const Scalar& m : before_refusals) {
    e.Family(m.name, m.type, m.help);
    e.Sample(m.value);
  }
  e.Family("herald_server_input_refused_total", kCounter,
           "SDK input refused before it reached the broker, by reason.");
  e.Sample({{"reason", "bad_magic"}}, s.bad_magic());
  e.Sample({{"reason", "unsupported_version"}}, s.unsupported_version());
  e.Sample({{"reason", "malformed"}}, s.malformed());
  e.Sample({{"reason", "unknown_command"}}, s.unknown_command());
  e.Sample({{"reason", "oversized"}}, s.oversized());
  e.Sample({{"reason", "no_session"}}, s.no_session());
  e.Sample({{"reason", "held_full"}}, s.held_full());
  const Scalar after_refusals[] = {
      {"herald_server_clients_refused_total", kCounter,
       "Hellos refused because max_clients sessions were open.",
       s.clients_refused()},
      {"herald_server_subscriptions_refused_total", kCounter,
       "SDK subscribes refused (bad options, limits).",
       s.subscriptions_refused()},
      {"herald_server_publish_accepted_total", kCounter,
       "SDK publish entries the broker accepted.", s.publish_accepted()},
      {"herald_server_publish_refused_total", kCounter,
       "SDK publish entries the broker refused.", s.publish_refused()},
      {"herald_server_delivered_total", kCounter,
       "Messages sent to SDK subscribers.", s.delivered()},
      {"herald_server_disconnects_total", kCounter,
       "Connections that ended, as the socket monitor reports them (peers "
       "leaving, or libzmq dropping one over ZMQ_MAXMSGSIZE).",
       s.disconnects()},
      {"herald_server_send_failures_total", kCounter,
       "Sends that failed although within credit.", s.send_failures()},
      {"herald_server_remote_subscriptions", kGauge,
       "SDK subscriptions open now (each a broker subscription, listed with "
       "the herald_subscription_ families).",
       s.remote_subscriptions()},
      {"herald_server_sessions_detached_total", kCounter,
       "SDK sessions whose connection a send found gone; each waits for its "
       "client to resume it from a new connection, or expires.",
       s.sessions_detached()},
      {"herald_server_publishes_deferred_total", kCounter,
       "Network publishes that found a kBlock queue full and waited for room "
       "(their session held behind them) instead of dropping at once.",
       s.publishes_deferred()},
      {"herald_server_deliveries_lost_total", kCounter,
       "Deliveries sent on a connection that broke before they arrived, as "
       "told by the client resuming its session (reported to the subscriber "
       "as missed).",
       s.deliveries_lost()},
      {"herald_server_plain_published_total", kCounter,
       "Messages published through the plain (XSUB) endpoint.",
       s.plain_published()},
      {"herald_server_plain_refused_total", kCounter,
       "Messages refused on the plain (XSUB) endpoint.", s.plain_refused()},
      {"herald_server_plain_delivered_total", kCounter,
       "Messages sent on the plain (XPUB) endpoint.", s.plain_delivered()},
      {"herald_server_plain_prefixes", kGauge,
       "Distinct topic prefixes the plain (XPUB) endpoint's SUBs subscribe "
       "to now.",
       s.plain_prefixes()},
      {"herald_server_plain_abandoned_total", kCounter,
       "Messages the plain (XPUB) endpoint had taken from its feed but could "
       "not send when the server stopped (a SUB's pipe was full).",
       s.plain_abandoned()},
  };
  for (const Scalar& m : after_refusals) {
    e.Family(m.name, m.type, m.help);
    e.Sample(m.value);
  }
}

// ----------------------------------------------------------------- address

constexpr absl::string_view kAnyHost = "0.0.0.0";

struct HostPort {
  std::string host;  // Without brackets.
  int port = 0;
};

absl::StatusOr<HostPort> ParseAddress(absl::string_view address) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address \"", address, "\": ", why));
  };
  absl::string_view host;
  absl::string_view port;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    if (close == absl::string_view::npos) return bad("unclosed '['");
    host = address.substr(1, close - 1);
    absl::string_view rest = address.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      return bad("expected host:port");
    }
    port = rest.substr(1);
    if (host.empty()) return bad("empty host");
  } else {
    const size_t colon = address.rfind(':');
    if (colon == absl::string_view::npos) return bad("expected host:port");
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.find(':') != absl::string_view::npos) {
      return bad("an IPv6 host goes in brackets, [::1]:port");
    }
    // ":port", as Prometheus exporters take it: every IPv4 interface.
    if (host.empty()) host = kAnyHost;
  }
  int port_number = 0;
  if (port.empty() ||
      port.find_first_not_of("0123456789") != absl::string_view::npos ||
      !absl::SimpleAtoi(port, &port_number) || port_number > 65535) {
    return bad("port must be a number in [0, 65535]");
  }
  return HostPort{std::string(host), port_number};
}

}  // namespace

// ----------------------------------------------------------------- renders

BrokerTotals SumTotals(const v1::BrokerStats& broker) {
  BrokerTotals t;
  t.published = broker.published();
  t.refused = broker.refused_invalid() + broker.refused_too_large() +
              broker.refused_shutdown();
  t.matched = broker.closed_matched();
  t.delivered = broker.closed_delivered();
  t.abandoned = broker.closed_abandoned();
  AddDrops(broker.closed_dropped(), &t.dropped);
  for (const v1::SubscriptionStats& s : broker.subscriptions()) {
    t.matched += s.matched();
    t.delivered += s.delivered();
    t.queued += s.queued();
    t.abandoned += s.abandoned();
    AddDrops(s.dropped(), &t.dropped);
  }
  // A group's own drops (every member full) are not on any member.
  for (const v1::GroupStats& g : broker.groups()) {
    AddDrops(g.dropped(), &t.dropped);
  }
  t.dropped_total = SumDrops(t.dropped);
  return t;
}

std::string PrometheusText(const v1::BrokerStats& broker,
                           const v1::ServerStats* server) {
  Exposition e;
  WriteBroker(broker, e);
  if (server != nullptr) WriteServer(*server, e);
  return e.Take();
}

absl::StatusOr<std::string> StatszJson(const v1::BrokerStats& broker,
                                       const v1::ServerStats* server) {
  v1::StatsReply reply;
  *reply.mutable_broker() = broker;
  if (server != nullptr) *reply.mutable_server() = *server;
  return util::ProtoToJson(reply);
}

std::string SummaryLine(const v1::BrokerStats& broker,
                        const v1::ServerStats* server) {
  const BrokerTotals t = SumTotals(broker);
  std::vector<std::string> drops;
  for (const DropField& f : kDropFields) {
    drops.push_back(absl::StrCat(f.name, "=", (t.dropped.*f.get)()));
  }
  std::string line = absl::StrCat(
      "published=", t.published, " refused=", t.refused,
      " delivered=", t.delivered, " dropped=", t.dropped_total, " (",
      absl::StrJoin(drops, " "), ") abandoned=", t.abandoned);
  if (server != nullptr) {
    absl::StrAppend(&line, " sessions_opened=", server->sessions_opened(),
                    " sessions_expired=", server->sessions_expired(),
                    " sessions_closed=", server->sessions_closed(),
                    " sdk_published=", server->publish_accepted(),
                    " plain_published=", server->plain_published());
  }
  return line;
}

// ----------------------------------------------------------- MetricsServer

MetricsServer::MetricsServer(std::string host, Sources sources)
    : host_(std::move(host)),
      sources_(std::move(sources)),
      http_(std::make_unique<httplib::Server>()) {}

MetricsServer::~MetricsServer() { Stop(); }

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    absl::string_view address, Sources sources) {
  // Every thread of ours that blocks on an absl::Mutex makes its Abseil
  // identity first (a TSAN false report otherwise: see the header).
  internal::EnsureThreadIdentity();
  if (!sources.broker) {
    return absl::InvalidArgumentError("metrics server: no broker stats source");
  }
  absl::StatusOr<HostPort> parsed = ParseAddress(address);
  if (!parsed.ok()) return parsed.status();

  std::unique_ptr<MetricsServer> self(
      new MetricsServer(parsed->host, std::move(sources)));
  httplib::Server& http = *self->http_;
  // Two request threads instead of httplib's default of at least eight.
  http.new_task_queue = [] { return new httplib::ThreadPool(2); };
  // Short timeouts bound Stop(): a request in progress or an idle keep-alive
  // connection holds a request thread for at most about a second.
  http.set_read_timeout(1, 0);
  http.set_write_timeout(1, 0);
  http.set_keep_alive_timeout(1);
  // httplib's default sets SO_REUSEPORT, which lets a second server bind a
  // port already in use; SO_REUSEADDR alone makes that a bind error.
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });

  MetricsServer* server = self.get();
  http.Get("/metrics",
           [server](const httplib::Request&, httplib::Response& res) {
             std::optional<v1::ServerStats> net;
             const v1::BrokerStats broker = server->Snapshot(&net);
             res.set_content(PrometheusText(broker, net ? &*net : nullptr),
                             std::string(kPrometheusContentType));
           });
  http.Get("/statsz",
           [server](const httplib::Request&, httplib::Response& res) {
             std::optional<v1::ServerStats> net;
             const v1::BrokerStats broker = server->Snapshot(&net);
             absl::StatusOr<std::string> json =
                 StatszJson(broker, net ? &*net : nullptr);
             if (!json.ok()) {
               res.status = 500;
               res.set_content(json.status().ToString(), "text/plain");
               return;
             }
             res.set_content(*json, "application/json");
           });

  const std::string& host = self->host_;
  if (parsed->port == 0) {
    self->port_ = http.bind_to_any_port(host);
    if (self->port_ < 0) {
      return absl::UnavailableError(absl::StrCat(
          "metrics address \"", address, "\": cannot bind ", host, ":0"));
    }
  } else {
    if (!http.bind_to_port(host, parsed->port)) {
      return absl::UnavailableError(absl::StrCat(
          "metrics address \"", address,
          "\": cannot bind (in use, not a local address, or no permission)"));
    }
    self->port_ = parsed->port;
  }
  self->listener_ = std::thread([server] {
    internal::EnsureThreadIdentity();
    // The result is not needed: false means the listening socket failed,
    // and Stop() joins this thread either way.
    server->http_->listen_after_bind();
    server->listen_done_.Notify();
  });
  return self;
}

v1::BrokerStats MetricsServer::Snapshot(
    std::optional<v1::ServerStats>* server) const {
  // On an httplib request thread, which may block in the sources.
  internal::EnsureThreadIdentity();
  if (sources_.server) *server = sources_.server();
  return sources_.broker();
}

std::string MetricsServer::url() const {
  if (host_.find(':') != std::string::npos) {
    return absl::StrCat("http://[", host_, "]:", port_);
  }
  return absl::StrCat("http://", host_, ":", port_);
}

void MetricsServer::Stop() {
  internal::EnsureThreadIdentity();
  absl::MutexLock lock(&stop_mu_);
  if (stopped_) return;
  stopped_ = true;
  if (!listener_.joinable()) return;  // Start() failed before the thread.
  // httplib::Server::stop() acts only once listen_after_bind() has marked the
  // server running (just after the thread starts), so it is sent then, once.
  // listen_after_bind() returns after its request threads are joined.
  bool stop_sent = false;
  while (true) {
    if (!stop_sent && http_->is_running()) {
      http_->stop();
      stop_sent = true;
    }
    if (listen_done_.WaitForNotificationWithTimeout(
            stop_sent ? absl::Seconds(1) : absl::Milliseconds(1))) {
      break;
    }
  }
  listener_.join();
}

}  // namespace herald
