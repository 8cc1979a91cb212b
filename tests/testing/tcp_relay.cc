#include "tests/testing/tcp_relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <tuple>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "broker/internal/thread_identity.h"

namespace herald::testing {
namespace {

sockaddr_in Loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// Closes with a reset: unsent data is dropped, as when a network fails.
void Reset(int fd) {
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  close(fd);
}

// Writes all of `n` bytes; false if the peer is gone.
bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpRelay>> TcpRelay::Start(int target_port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError("relay: socket() failed");
  sockaddr_in a = Loopback(0);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      listen(fd, 16) != 0) {
    close(fd);
    return absl::InternalError(
        absl::StrCat("relay: bind/listen failed: ", std::strerror(errno)));
  }
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return std::unique_ptr<TcpRelay>(
      new TcpRelay(fd, ntohs(a.sin_port), target_port));
}

TcpRelay::TcpRelay(int listen_fd, int port, int target_port)
    : listen_fd_(listen_fd), port_(port), target_port_(target_port) {
  thread_ = std::thread([this] { Loop(); });
}

TcpRelay::~TcpRelay() {
  stop_.store(true);
  thread_.join();
  for (auto [a, b] : pairs_) {
    close(a);
    close(b);
  }
  close(listen_fd_);
}

int TcpRelay::Cut() {
  internal::EnsureThreadIdentity();
  const int ticket = cut_requests_.fetch_add(1) + 1;
  // The relay thread looks at least every 10ms.
  absl::MutexLock lock(&mu_);
  while (cuts_done_ < ticket) cut_done_.Wait(&mu_);
  return last_cut_size_;
}

void TcpRelay::Loop() {
  internal::EnsureThreadIdentity();  // It takes mu_ (see the header).
  char buffer[64 * 1024];
  int cuts = 0;
  while (!stop_.load()) {
    if (const int requested = cut_requests_.load(); requested > cuts) {
      for (auto [a, b] : pairs_) {
        Reset(a);
        Reset(b);
      }
      absl::MutexLock lock(&mu_);
      last_cut_size_ = static_cast<int>(pairs_.size());
      pairs_.clear();
      cuts = requested;
      cuts_done_ = cuts;
      cut_done_.SignalAll();
    }
    const bool hold = hold_replies_.load();
    std::vector<pollfd> fds;
    fds.push_back({listen_fd_, POLLIN, 0});
    for (auto [a, b] : pairs_) {
      fds.push_back({a, POLLIN, 0});
      fds.push_back({b, static_cast<short>(hold ? 0 : POLLIN), 0});
    }
    if (poll(fds.data(), fds.size(), 10) <= 0) continue;
    const size_t polled = pairs_.size();  // A pair accepted below waits.
    if (fds[0].revents & POLLIN) {
      const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client >= 0) {
        const int target = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in t = Loopback(target_port_);
        if (target >= 0 &&
            connect(target, reinterpret_cast<sockaddr*>(&t), sizeof(t)) == 0) {
          pairs_.emplace_back(client, target);
          accepted_.fetch_add(1);
        } else {
          if (target >= 0) close(target);
          close(client);
        }
      }
    }
    // Relay what is readable; a pair whose side closed is closed whole.
    std::vector<std::pair<int, int>> kept(pairs_.begin() + polled,
                                          pairs_.end());
    for (size_t i = 0; i < polled; ++i) {
      const auto [a, b] = pairs_[i];
      bool alive = true;
      const pollfd& pa = fds[1 + 2 * i];
      const pollfd& pb = fds[2 + 2 * i];
      // Held: the target's side is not read, not even its hang-up.
      const short pb_events = hold ? 0 : pb.revents;
      for (const auto& [from, to, ev] :
           {std::tuple{a, b, pa.revents}, std::tuple{b, a, pb_events}}) {
        if (!alive || (ev & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        const ssize_t n = recv(from, buffer, sizeof(buffer), 0);
        if (n <= 0 || !WriteAll(to, buffer, static_cast<size_t>(n))) {
          alive = false;
        }
      }
      if (alive) {
        kept.emplace_back(a, b);
      } else {
        close(a);
        close(b);
      }
    }
    pairs_ = std::move(kept);
  }
}

}  // namespace herald::testing
