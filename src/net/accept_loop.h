// AcceptLoop: the accept loop the HTTP server and the MQTT listener share, next to
// OpenListeningAcceptor (tcp_listen.h). Internal to src/net (it includes Asio).
//
// Runs on its own strand: accepts a connection (on a new strand of its own, or on `io` and
// then moved to the next of the single-threaded connection contexts, so that no pending
// accept holds a socket of a context that may be destroyed first), hands it to
// the owner's callback, accepts the next one. An accept error other than cancellation
// (e.g. out of file descriptors) retries after 50 ms rather than spinning. Out of file
// descriptors (EMFILE, ENFILE), the clients waiting in the listen backlog would wait
// unanswered until one frees up; so the loop keeps one descriptor in reserve (/dev/null),
// and then closes it, accepts the waiting clients one by one (up to 64 per attempt), sends
// each the owner's shed response (HTTP: a canned 503) and closes it, and takes the reserve
// again (the "spare descriptor" trick of libuv and others). After Stop(), nothing more is
// accepted, and a socket accepted in the race is closed.
//
// Lifetime: the loop is a member of its owner; every pending operation holds `keep` (the
// owner's shared_ptr), so the owner and the loop outlive them. The callback must not hold
// the owner strongly (it is stored in the loop).
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace joule::net {

class AcceptLoop {
 public:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;
  using Socket = boost::asio::ip::tcp::socket;

  // Accepted connections go to `connection_contexts` in turn, on the context's own
  // executor: each of them must be run by exactly one thread. Empty: every connection on
  // a new strand of `io` (which any number of threads may run).
  explicit AcceptLoop(boost::asio::io_context& io,
                      std::vector<boost::asio::io_context*> connection_contexts = {});
  ~AcceptLoop();
  AcceptLoop(const AcceptLoop&) = delete;
  AcceptLoop& operator=(const AcceptLoop&) = delete;

  // Before Start: what a client accepted only to be shed (out of descriptors) is sent
  // before the close (best effort, non-blocking; empty: nothing), and `on_shed` (may be
  // empty) runs on the loop's strand for each.
  void SetShedResponse(std::string response, std::function<void()> on_shed);

  // Opens `listen` (OpenListeningAcceptor; *port = the bound port) and starts accepting.
  // `on_accepted` runs on the loop's strand for every accepted socket.
  Status Start(std::string_view listen, uint16_t* port, std::shared_ptr<void> keep,
               std::function<void(Socket)> on_accepted);
  // Any thread. Stops accepting; closes the listening socket and cancels a pending retry
  // (on the strand). False when it was not accepting (already stopped, or never started).
  bool Stop(std::shared_ptr<void> keep);
  bool accepting() const { return accepting_.load(std::memory_order_acquire); }
  // For the owner's timers that belong with the acceptor (e.g. a shutdown timer).
  Strand& strand() { return strand_; }

 private:
  void AcceptNext(std::shared_ptr<void> keep);
  // An accepted socket (on io_) as a socket of `target`; nullopt (closed) if that fails.
  std::optional<Socket> MoveTo(boost::asio::io_context& target, Socket& socket);
  // Out of descriptors: sheds waiting clients with the reserve descriptor (on strand_).
  void Shed();

  boost::asio::io_context& io_;
  const std::vector<boost::asio::io_context*> targets_;
  size_t next_target_ = 0;  // only touched on strand_
  Strand strand_;
  boost::asio::ip::tcp::acceptor acceptor_;  // only touched on strand_ after Start
  boost::asio::steady_timer retry_timer_;
  std::function<void(Socket)> on_accepted_;
  std::string shed_response_;
  std::function<void()> on_shed_;
  int reserve_fd_ = -1;  // /dev/null, kept for Shed; only touched on strand_ after Start
  std::atomic<bool> accepting_{false};
};

}  // namespace joule::net
