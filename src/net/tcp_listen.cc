#include "net/tcp_listen.h"

#include <string>

#include "net/url.h"

namespace joule::net {

Status OpenListeningAcceptor(boost::asio::ip::tcp::acceptor& acceptor, std::string_view listen,
                             uint16_t* port) {
  namespace asio = boost::asio;
  using tcp = asio::ip::tcp;
  JOULE_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(listen));
  boost::system::error_code ec;
  asio::ip::address address;
  if (hp.host.empty()) {
    address = asio::ip::address_v6::any();
  } else if (hp.host == "localhost") {
    address = asio::ip::address_v4::loopback();
  } else {
    address = asio::ip::make_address(hp.host, ec);
    if (ec) {
      return Status::InvalidArgument("bad listen address '" + std::string(listen) +
                                     "': " + ec.message());
    }
  }
  tcp::endpoint endpoint(address, hp.port);
  auto fail = [&](const char* what) {
    boost::system::error_code ignored;
    acceptor.close(ignored);
    return Status::IoError(std::string(what) + " " + std::string(listen) + ": " + ec.message());
  };
  acceptor.open(endpoint.protocol(), ec);
  if (ec) return fail("cannot open a socket for");
  acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) return fail("cannot set SO_REUSEADDR for");
  acceptor.bind(endpoint, ec);
  if (ec) return fail("cannot bind");
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail("cannot listen on");
  *port = acceptor.local_endpoint(ec).port();
  if (ec) return fail("cannot read the bound port of");
  return Status::Ok();
}

}  // namespace joule::net
