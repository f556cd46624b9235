#include "net/accept_loop.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cerrno>
#include <chrono>
#include <optional>
#include <utility>

#include "net/tcp_listen.h"

namespace joule::net {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {
constexpr std::chrono::milliseconds kAcceptRetryDelay{50};
constexpr int kMaxShedPerAttempt = 64;

int OpenReserve() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }
}  // namespace

AcceptLoop::AcceptLoop(asio::io_context& io, std::vector<asio::io_context*> connection_contexts)
    : io_(io),
      targets_(std::move(connection_contexts)),
      strand_(asio::make_strand(io)),
      acceptor_(strand_),
      retry_timer_(strand_) {}

AcceptLoop::~AcceptLoop() {
  if (reserve_fd_ >= 0) ::close(reserve_fd_);
}

void AcceptLoop::SetShedResponse(std::string response, std::function<void()> on_shed) {
  shed_response_ = std::move(response);
  on_shed_ = std::move(on_shed);
}

Status AcceptLoop::Start(std::string_view listen, uint16_t* port, std::shared_ptr<void> keep,
                         std::function<void(Socket)> on_accepted) {
  JOULE_RETURN_IF_ERROR(OpenListeningAcceptor(acceptor_, listen, port));
  on_accepted_ = std::move(on_accepted);
  reserve_fd_ = OpenReserve();
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

std::optional<AcceptLoop::Socket> AcceptLoop::MoveTo(asio::io_context& target, Socket& socket) {
  error_code ec;
  const auto protocol = acceptor_.local_endpoint(ec).protocol();
  if (ec) {
    socket.close(ec);
    return std::nullopt;
  }
  const Socket::native_handle_type fd = socket.release(ec);
  if (ec) {
    socket.close(ec);
    return std::nullopt;
  }
  Socket moved(target.get_executor());
  moved.assign(protocol, fd, ec);
  if (ec) {
    ::close(fd);
    return std::nullopt;
  }
  return moved;
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
      if (ec == asio::error::no_descriptors || ec.value() == ENFILE) Shed();
      // E.g. out of file descriptors: retry soon rather than spin.
      retry_timer_.expires_after(kAcceptRetryDelay);
      retry_timer_.async_wait([this, keep = std::move(keep)](error_code timer_ec) mutable {
        if (!timer_ec) AcceptNext(std::move(keep));
      });
      return;
    }
    if (!targets_.empty()) {
      // A context run by one thread serializes the connection's handlers by itself; its
      // plain executor also fits in an any_io_executor without a heap allocation per copy
      // (a strand does not: ~16 allocations per HTTP request). The socket is accepted on
      // `io_` and only then moved there, so the pending accept never holds a socket of a
      // connection context: at shutdown those contexts are destroyed before `io_`, which
      // then destroyed the pending accept's socket in a freed context (found by ASan).
      asio::io_context& target = *targets_[next_target_++ % targets_.size()];
      if (std::optional<Socket> moved = MoveTo(target, socket)) on_accepted_(std::move(*moved));
      AcceptNext(std::move(keep));
      return;
    }
    on_accepted_(std::move(socket));
    AcceptNext(std::move(keep));
  };
  if (targets_.empty()) {
    acceptor_.async_accept(asio::make_strand(io_), std::move(on_accept));
  } else {
    acceptor_.async_accept(io_.get_executor(), std::move(on_accept));
  }
}

void AcceptLoop::Shed() {
  if (reserve_fd_ < 0) reserve_fd_ = OpenReserve();  // a descriptor may have freed up
  if (reserve_fd_ < 0) return;
  ::close(reserve_fd_);
  reserve_fd_ = -1;
  error_code ec;
  acceptor_.native_non_blocking(true, ec);  // accept4 below must not wait
  if (!ec) {
    for (int i = 0; i < kMaxShedPerAttempt; ++i) {
      const int fd =
          ::accept4(acceptor_.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) break;  // none waiting (EAGAIN), or out of descriptors again
      if (!shed_response_.empty()) {
        [[maybe_unused]] const ssize_t sent =
            ::send(fd, shed_response_.data(), shed_response_.size(), MSG_NOSIGNAL);
      }
      ::close(fd);
      if (on_shed_) on_shed_();
    }
  }
  reserve_fd_ = OpenReserve();
}

}  // namespace joule::net
