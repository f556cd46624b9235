// Internal to src/net: the definition of TlsContext (includes Asio's SSL support and so
// OpenSSL). Include only from the .cc files that run TLS connections.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <utility>  // before Asio (Boost 1.74 + GCC 12)

#include "net/tls_context.h"

namespace joule::net {

class TlsContext {
 public:
  explicit TlsContext(
      boost::asio::ssl::context::method method = boost::asio::ssl::context::tls_server)
      : ssl(method) {}
  boost::asio::ssl::context ssl;
};

}  // namespace joule::net
