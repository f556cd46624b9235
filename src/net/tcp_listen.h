// Opening a listening TCP acceptor from a "host:port" setting — shared by the HTTP
// server and the MQTT listener. Internal to src/net (it includes Asio); call it from the
// .cc files that already use Asio.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <string_view>
#include <utility>

#include "common/status.h"

namespace joule::net {

// Opens, binds (SO_REUSEADDR) and listens on `listen` ("host:port"; an empty host = all
// addresses, "localhost" = 127.0.0.1, port 0 = any free port). On success *port is the
// bound port; on failure the acceptor is closed and the Status names the address.
Status OpenListeningAcceptor(boost::asio::ip::tcp::acceptor& acceptor, std::string_view listen,
                             uint16_t* port);

}  // namespace joule::net
