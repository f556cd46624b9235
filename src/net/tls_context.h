// TLS settings: server side, shared by the HTTP server and the MQTT listener (a PEM
// certificate chain and private key), and client side, for the MQTT bridge's mqtts://
// connection to its broker. TLS 1.2 or newer only (docs/SECURITY.md).
//
// The type is opaque here so that OpenSSL and Asio's SSL headers stay inside the .cc files
// of src/net that speak TLS (tls_context_impl.h). Thread-safety: immutable once loaded; one
// context serves every connection of both listeners.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"

namespace joule::net {

class TlsContext;

// Loads `cert_file` (PEM: the server certificate, then any intermediates) and `key_file`
// (PEM private key) and checks that they match. InvalidArgument names the file and the
// OpenSSL reason on failure.
Result<std::shared_ptr<TlsContext>> LoadServerTlsContext(const std::string& cert_file,
                                                         const std::string& key_file);

// Client side (TLS 1.2+, the server's certificate chain is verified; the host name is
// checked per connection by the caller). `ca_file` empty: the system's trusted CAs
// (OpenSSL's default paths, /etc/ssl/certs on Debian); else only the PEM CAs in it.
// `cert_file` and `key_file` (PEM): a client certificate for mutual TLS; both or neither.
// InvalidArgument names the file and the OpenSSL reason on failure.
Result<std::shared_ptr<TlsContext>> LoadClientTlsContext(const std::string& ca_file,
                                                         const std::string& cert_file,
                                                         const std::string& key_file);

}  // namespace joule::net
