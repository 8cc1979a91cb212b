// A minimal Herald subscriber process for fault tests, speaking the protocol
// with a raw DEALER (no SDK): connects to argv[1], says hello, subscribes to
// argv[2], prints "ready" on stdout once the subscription is acknowledged,
// then consumes until killed. It sends no heartbeats of its own beyond what
// the test needs: the point is to be killed with SIGKILL.
#include <cstdio>
#include <string>

#include "broker/net/framing.h"
#include "schemas/protocol.pb.h"
#include "zmq.hpp"
#include "zmq_addon.hpp"

namespace {

void Send(zmq::socket_t& s, const herald::v1::Envelope& env) {
  const std::string magic = herald::net::MagicFrame();
  const std::string body = env.SerializeAsString();
  (void)s.send(zmq::buffer(magic), zmq::send_flags::sndmore);
  (void)s.send(zmq::buffer(body), zmq::send_flags::none);
}

bool Await(zmq::socket_t& s, herald::v1::Envelope::BodyCase body) {
  for (int i = 0; i < 1000; ++i) {
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(s, std::back_inserter(frames))) return false;
    herald::v1::Envelope env;
    if (frames.size() >= 2 && env.ParseFromString(frames[1].to_string()) &&
        env.body_case() == body) {
      return true;
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: raw_subscriber ENDPOINT PATTERN\n");
    return 2;
  }
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::rcvtimeo, 30000);
  socket.connect(argv[1]);
  herald::v1::Envelope hello;
  hello.set_request_id(1);
  hello.mutable_hello()->set_session_id("raw-subscriber-1");
  hello.mutable_hello()->set_protocol_version(1);
  Send(socket, hello);
  if (!Await(socket, herald::v1::Envelope::kWelcome)) return 1;
  herald::v1::Envelope sub;
  sub.set_request_id(2);
  sub.mutable_subscribe()->set_sid(1);
  sub.mutable_subscribe()->set_pattern(argv[2]);
  sub.mutable_subscribe()->set_initial_credit(10);
  Send(socket, sub);
  if (!Await(socket, herald::v1::Envelope::kAck)) return 1;
  std::printf("ready\n");
  std::fflush(stdout);
  socket.set(zmq::sockopt::rcvtimeo, -1);
  while (true) {
    zmq::message_t m;
    if (!socket.recv(m)) return 0;
  }
}
