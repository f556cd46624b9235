#include "net/accept_loop.h"

#include <boost/asio/post.hpp>
#include <chrono>
#include <utility>

#include "net/tcp_listen.h"

namespace joule::net {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {
constexpr std::chrono::milliseconds kAcceptRetryDelay{50};
}  // namespace

AcceptLoop::AcceptLoop(asio::io_context& io, std::vector<asio::io_context*> connection_contexts)
    : io_(io),
      targets_(std::move(connection_contexts)),
      strand_(asio::make_strand(io)),
      acceptor_(strand_),
      retry_timer_(strand_) {}

Status AcceptLoop::Start(std::string_view listen, uint16_t* port, std::shared_ptr<void> keep,
                         std::function<void(Socket)> on_accepted) {
  JOULE_RETURN_IF_ERROR(OpenListeningAcceptor(acceptor_, listen, port));
  on_accepted_ = std::move(on_accepted);
  accepting_.store(true, std::memory_order_release);
  asio::post(strand_, [this, keep = std::move(keep)]() mutable { AcceptNext(std::move(keep)); });
  return Status::Ok();
}

bool AcceptLoop::Stop(std::shared_ptr<void> keep) {
  if (!accepting_.exchange(false, std::memory_order_acq_rel)) return false;
  asio::post(strand_, [this, keep = std::move(keep)] {
    error_code ignored;
    acceptor_.close(ignored);
    retry_timer_.cancel();
  });
  return true;
}

void AcceptLoop::AcceptNext(std::shared_ptr<void> keep) {
  if (!accepting()) return;
  auto on_accept = [this, keep = std::move(keep)](error_code ec, Socket socket) mutable {
    if (!accepting()) {
      error_code ignored;
      socket.close(ignored);
      return;
    }
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      // E.g. out of file descriptors: retry soon rather than spin.
      retry_timer_.expires_after(kAcceptRetryDelay);
      retry_timer_.async_wait([this, keep = std::move(keep)](error_code timer_ec) mutable {
        if (!timer_ec) AcceptNext(std::move(keep));
      });
      return;
    }
    on_accepted_(std::move(socket));
    AcceptNext(std::move(keep));
  };
  if (targets_.empty()) {
    acceptor_.async_accept(asio::make_strand(io_), std::move(on_accept));
  } else {
    // A context run by one thread serializes the connection's handlers by itself; its
    // plain executor also fits in an any_io_executor without a heap allocation per copy
    // (a strand does not: ~16 allocations per HTTP request).
    asio::io_context& target = *targets_[next_target_++ % targets_.size()];
    acceptor_.async_accept(target.get_executor(), std::move(on_accept));
  }
}

}  // namespace joule::net
