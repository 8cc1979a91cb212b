// A TCP relay on 127.0.0.1 for tests that need a connection to break while
// both ends live: clients connect to port(), each connection is relayed to
// the target port, and Cut() resets every relayed connection at once (what
// was in flight is lost, as with a real network failure). New connections
// are accepted and relayed again afterwards. Thread-safe.
#ifndef HERALD_TESTS_TESTING_TCP_RELAY_H_
#define HERALD_TESTS_TESTING_TCP_RELAY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace herald::testing {

class TcpRelay {
 public:
  // Listens on an OS-chosen port of 127.0.0.1 and relays to `target_port`.
  static absl::StatusOr<std::unique_ptr<TcpRelay>> Start(int target_port);
  ~TcpRelay();

  TcpRelay(const TcpRelay&) = delete;
  TcpRelay& operator=(const TcpRelay&) = delete;

  int port() const { return port_; }
  // Resets every connection relayed so far; returns how many it reset
  // once the relay thread has done it.
  int Cut();
  // While held, nothing is relayed from the target back to the clients: it
  // waits in the kernel's buffers, and a Cut() meanwhile loses it (a reply
  // lost with a broken connection).
  void HoldReplies(bool hold) { hold_replies_.store(hold); }
  // Connections relayed so far.
  int accepted() const { return accepted_.load(); }

 private:
  TcpRelay(int listen_fd, int port, int target_port);
  void Loop();

  const int listen_fd_;
  const int port_;
  const int target_port_;
  std::atomic<bool> stop_{false};
  std::atomic<int> cut_requests_{0};
  std::atomic<int> accepted_{0};
  std::atomic<bool> hold_replies_{false};
  absl::Mutex mu_;
  int cuts_done_ ABSL_GUARDED_BY(mu_) = 0;
  int last_cut_size_ ABSL_GUARDED_BY(mu_) = 0;
  absl::CondVar cut_done_;
  // Relay thread only: (client fd, target fd) pairs.
  std::vector<std::pair<int, int>> pairs_;
  std::thread thread_;
};

}  // namespace herald::testing

#endif  // HERALD_TESTS_TESTING_TCP_RELAY_H_
